//! certkeeper: a certificate lifecycle manager.
//!
//! It finds certificates that are due, gets new ones, proves the new material is sound,
//! swaps it in atomically while keeping snapshots of what was live, and puts the old pair
//! back when anything goes wrong. `main.rs` only parses arguments and maps the outcome of
//! [`cli::run`] to an exit code.

pub use certkeeper_base::{fsutil, perms, text};
pub use certkeeper_store as store;
pub use certkeeper_x509 as x509;

pub mod accounts;
pub mod acme;
pub mod alert;
pub mod certbot;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod deploy;
pub mod fleet;
pub mod hold;
pub mod inventory;
pub mod issuer;
pub mod keys;
pub mod material;
pub mod metrics;
pub mod pass;
pub mod probe;
pub mod schedule;
pub mod state;
