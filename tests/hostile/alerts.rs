//! Hostile input, round two: alerts.
