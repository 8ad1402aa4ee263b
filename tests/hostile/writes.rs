//! Hostile input, round two: writes.
