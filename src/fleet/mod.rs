//! Fleet mode: one issuance of a shared certificate for many hosts, coordinated through
//! etcd, with a canary host before the rest.
//!
//! This module owns what the hosts of a fleet share: the sealing of private keys with the
//! fleet's key ([`seal`]); the election of an issuer, the generations published in etcd
//! and the canary verdict come with it. It is an `obtain` source and a `deploy` gate for
//! the pass, nothing else, and uses only `config`, `text` and `fsutil` below it.

pub mod seal;

pub use seal::{SealError, SealKey};
