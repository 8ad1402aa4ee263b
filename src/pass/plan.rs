//! Plan: what a certificate's record and live pair say, and whether it is due now and why
//! (a backoff not run out, a broken live certificate, the CA's renewal window, a changed
//! profile, or the configured time before expiry).

use time::OffsetDateTime;

use super::Failure;
use super::kept::Kept;
use super::{Options, Outcome};
use crate::config::{Certificate, Config};
use crate::inventory::{self, Trust};
use crate::issuer::Issuers;
use crate::material::ISSUER_BACKDATE;
use crate::schedule;
use crate::state::CertState;
use crate::text::rfc3339;
use crate::x509::{Cert, leaf_of_file};

/// What a pass knows of one certificate before it decides: its record and its live pair.
pub(super) struct Live {
    /// The certificate's record, with the renewal-information answer the pass kept.
    pub(super) saved: CertState,
    /// What `check` would say of the live pair; not looked at for a forced renewal.
    pub(super) inspected: Option<inventory::Entry>,
    /// The live leaf, when there is one.
    pub(super) leaf: Option<Cert>,
}

/// Where the plan of a certificate ends before it is judged due or not.
pub(super) enum Early {
    /// The backoff of an earlier failure has not run out; with the live leaf's notAfter.
    Backoff {
        until: OffsetDateTime,
        live: Option<OffsetDateTime>,
    },
    /// The live pair went live unserved: it is reloaded and verified again, backoff or not
    /// (that costs no order).
    Unserved(Box<Cert>),
}

/// Reads what the pass knows of `cert`; `Err` when its plan ends early ([`Early`]).
pub(super) fn look(
    config: &Config,
    kept: &Kept,
    cert: &Certificate,
    trust: Option<&Trust>,
    opts: &Options,
    now: OffsetDateTime,
) -> Result<Live, Early> {
    let mut saved = kept.state(&cert.name);
    saved.ari = kept.ari(&cert.name);
    if !opts.force
        && !opts.no_reload
        && let Some(unserved) = &saved.unserved
        && let Ok(leaf) = leaf_of_file(&cert.fullchain)
        && leaf.fingerprint == *unserved
    {
        return Err(Early::Unserved(Box::new(leaf)));
    }
    if !opts.force
        && let Some(until) = schedule::retry_at(&saved, now)
    {
        let live = leaf_of_file(&cert.fullchain).ok().map(|l| l.not_after);
        return Err(Early::Backoff { until, live });
    }
    // What `check` would say of the live pair (a forced renewal needs only its leaf); the
    // live files are read once for both.
    let (inspected, leaf) = match trust.filter(|_| !opts.force) {
        Some(t) => {
            let (entry, leaf) =
                inventory::inspect_managed_leaf(config, cert, t, Some(saved.clone()), now);
            (Some(entry), leaf)
        }
        None => (None, None),
    };
    let leaf = leaf.or_else(|| leaf_of_file(&cert.fullchain).ok());
    Ok(Live {
        saved,
        inspected,
        leaf,
    })
}

/// `NotDue` when `cert` is not due now; `None` when it is (a broken live certificate, the
/// CA's renewal window, a changed profile, the time before expiry, or no live certificate).
pub(super) async fn not_due(
    config: &Config,
    kept: &Kept,
    cert: &Certificate,
    issuers: &Issuers,
    live: &mut Live,
    now: OffsetDateTime,
) -> Option<Outcome> {
    let broken = live
        .inspected
        .take()
        .filter(|e| e.status == inventory::Status::Critical);
    match (&live.leaf, broken) {
        (_, Some(entry)) => {
            tracing::info!(cert = %cert.name, "Due now: the live certificate is broken: {}", entry.problems.join("; "));
        }
        (Some(_), None) if let Some(ca) = issuers.retiring_anchor(cert) => {
            tracing::info!(cert = %cert.name, "Due now: its chain ends at the old root of local CA {ca}, which is being rotated out.");
        }
        (Some(leaf), None) => {
            let saved = &mut live.saved;
            if issuers.refresh_ari(cert, leaf, saved, now).await {
                kept.set_ari(&cert.name, saved.ari.clone());
            }
            let due = schedule::decide(
                leaf,
                Some(&*saved),
                cert.profile.as_deref(),
                config.renewal.before_expiry,
                now,
            );
            match due.source {
                schedule::DueSource::ProfileChanged => {
                    tracing::info!(cert = %cert.name, profile = cert.profile.as_deref().unwrap_or("none"), "Due now: the configured profile is not the one the live certificate was ordered with.");
                }
                schedule::DueSource::Ari if due.now => {
                    tracing::info!(cert = %cert.name, at = %rfc3339(due.at), "Due: inside the CA's renewal window.");
                }
                _ => {}
            }
            if !due.now {
                return Some(Outcome::NotDue {
                    renew_after: due.at,
                });
            }
        }
        // No live certificate yet: due.
        (None, None) => {}
    }
    None
}

/// A failure when the live leaf is dated later than issuers date back: known before
/// ordering, since every issuer dates a new certificate now or earlier, anything ordered
/// now would be older material (see `check_new`).
pub(super) fn too_new(live: Option<&Cert>, now: OffsetDateTime) -> Option<Outcome> {
    let leaf = live.filter(|leaf| leaf.not_before > now + ISSUER_BACKDATE)?;
    Some(Outcome::Failed {
        error: Failure::LiveTooNew {
            not_before: leaf.not_before,
            now,
        },
    })
}
