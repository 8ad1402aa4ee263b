//! Check: new material (kept from an earlier pass, or just issued) is judged before anything
//! is written: it covers every domain, its key matches, its chain reaches a root its issuers
//! chain to, its dates are sane and it is not older than the live pair. What sits where the
//! certificate's files go is looked at too.

use std::sync::Arc;

use time::OffsetDateTime;

use super::Failure;
use super::obtain::Obtained;
use crate::config::Certificate;
use crate::issuer::Issuers;
use crate::material::{Rejected, check_new};
use crate::store::{self, StateDir};
use crate::x509::Cert;

/// Checked material ready to be swapped in.
pub(super) struct Ready {
    pub(super) fullchain: Vec<u8>,
    pub(super) privkey: Vec<u8>,
    pub(super) leaf: Cert,
    /// Where it is from (see `Obtained::source`).
    pub(super) source: String,
    /// The issuer's name (empty when unknown).
    pub(super) issuer: String,
    /// Whether the material is kept in `pending/` already (see `pending`).
    pub(super) kept: bool,
    /// For a certificate shared by the fleet: the generation this material is, whose
    /// result the host reports after the deploy.
    pub(super) fleet: Option<u64>,
    /// For a shared certificate going back: the bad generation this host leaves.
    pub(super) reverting: Option<u64>,
}

/// `obtained` checked against the roots `cert`'s issuers chain to; `live_not_before` is the
/// live leaf's notBefore (new material dated earlier is older material and refused).
pub(super) async fn material(
    issuers: &Issuers,
    cert: &Certificate,
    obtained: Obtained,
    live_not_before: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<Box<Ready>, Rejected> {
    let mut trust = issuers.trust_for(cert).await;
    if obtained.staging {
        // A staging CA's roots are not trusted anywhere: the chain it sent is checked whole
        // and signed link by link up to its last certificate, which stands in for the root.
        if let Ok((chain, _)) = crate::x509::read_certificates(&obtained.fullchain)
            && let Some(top) = chain.into_iter().next_back()
        {
            trust.add(top);
        }
    }
    let leaf = check_new(
        &obtained.fullchain,
        &obtained.privkey,
        &cert.domains,
        &trust,
        live_not_before,
        now,
    )?;
    Ok(Box::new(Ready {
        fullchain: obtained.fullchain,
        privkey: obtained.privkey,
        leaf,
        source: obtained.source,
        issuer: obtained.issuer,
        kept: obtained.kept,
        fleet: None,
        reverting: None,
    }))
}

/// What sits where this certificate's files go is looked at before anything is written
/// for it (a deploy of kept material, an issuance): a device, FIFO or socket there fails
/// it then, with nothing issued or written. A certificate that is not due writes nothing
/// and is not looked at (`config check` reports such paths for every certificate).
pub(super) fn targets(state_dir: &StateDir, cert: &Certificate) -> Result<(), Failure> {
    let spec = cert.live_spec();
    store::check_targets(state_dir, &spec, &cert.issuers).map_err(|e| Failure::Targets(Arc::new(e)))
}
