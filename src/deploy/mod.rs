//! Deploying a certificate: how a configured certificate maps onto the store's pair, and
//! what happens around a swap: the pipeline (stage → reload → verify → commit, or revert →
//! reload → verify) in [`pipeline`], the reload command in [`reload`], and the check of what
//! the service serves in [`verify`].

mod failure;
mod pipeline;
pub mod reload;
pub mod verify;

pub use failure::Failure;
pub use pipeline::{
    Item, Outcome, Reloader, Renewed, Retry, check_target, deploy_all, judge_served,
    reload_and_check,
};

use crate::accounts;
use crate::config;
use crate::store::PairSpec;

/// The store's description of a configured certificate's live pair. Fails when `owner` or
/// `group` names an account that does not exist.
pub fn pair_spec(cert: &config::Certificate) -> Result<PairSpec, SpecError> {
    let mut spec: PairSpec = cert.live_spec();
    spec.mode = cert.mode;
    spec.keep_snapshots = cert.keep_snapshots;
    let fail = |field: &'static str| {
        move |source| SpecError {
            certificate: cert.name.clone(),
            field,
            source,
        }
    };
    spec.owner = cert
        .owner
        .as_deref()
        .map(accounts::uid)
        .transpose()
        .map_err(fail("owner"))?;
    spec.group = cert
        .group
        .as_deref()
        .map(accounts::gid)
        .transpose()
        .map_err(fail("group"))?;
    Ok(spec)
}

/// Why a configured certificate has no pair in the store: its `owner` or `group` names an
/// account that does not exist.
#[derive(Debug, thiserror::Error)]
#[error("certificates {certificate}: {field}: {source}")]
pub struct SpecError {
    /// The certificate's name.
    pub certificate: String,
    /// `owner` or `group`.
    pub field: &'static str,
    /// Why the account was not found.
    pub source: accounts::Error,
}
