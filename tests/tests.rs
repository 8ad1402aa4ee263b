//! Integration tests: one binary (see STYLE.md §8), a module per area.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod acme;
mod acme_fake;
mod alert_client;
mod alerts;
mod ca_retry_after;
mod ca_rotation;
mod certbot;
mod check;
mod config;
mod daemon;
mod day_one_checks;
mod deploy;
mod files;
mod fleet_alerts;
mod fleet_bad;
mod fleet_canary;
mod fleet_catchup;
mod fleet_config;
mod fleet_daemon;
mod fleet_pass;
mod fleet_recipe;
mod fleet_served;
mod fleet_status;
mod fuzz;
mod hold;
mod hostile;
mod layers;
mod logs;
mod metrics;
mod persist;
mod probe;
mod providers;
mod recipes;
mod renew;
mod renew_acme;
mod snapshots;
mod store;
mod systemd_boot;
mod units;
mod util;
