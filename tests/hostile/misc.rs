//! Hostile input, round two: misc.
