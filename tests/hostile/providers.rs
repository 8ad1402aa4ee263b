//! Hostile input, round two: providers.
