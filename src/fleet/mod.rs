//! Fleet mode: one issuance of a shared certificate for many hosts, coordinated through
//! etcd, with a canary host before the rest.
//!
//! This module owns what the hosts of a fleet share: the sealing of private keys with the
//! fleet's key ([`seal`]), the connection to the fleet's etcd from the validated config
//! ([`connect`], through the `certkeeper_fleet` client crate) and the read-only view the
//! operator's commands show ([`view`]); the election of an issuer, the generations published
//! in etcd and the canary verdict come with it. It is an `obtain` source and a `deploy` gate
//! for the pass, nothing else, and uses only `config`, `text` and `fsutil` below it.

pub mod connect;
pub mod seal;
pub mod view;

pub use connect::{ConnectError, Timeouts, connect};
pub use seal::{SealError, SealKey};
