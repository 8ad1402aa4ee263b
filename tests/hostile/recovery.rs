//! Hostile input, round two: recovery.
