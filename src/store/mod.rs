//! The on-disk store: live pairs, their manifests, snapshots and the state_dir lock.
//!
//! Everything that writes under a certificate's live paths or under `state_dir` lives here.
//! `check` and `verify` only read through [`manifest::read_live`].

pub mod manifest;
