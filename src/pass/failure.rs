//! Why a certificate's renewal failed, typed from the layer that failed (an issuer, the
//! check of new material, the key, the store, the deploy) until it is shown: the CLI line,
//! the log line, the record, the alert and the metric label each render it, once, where
//! they show it.

use std::sync::Arc;

use time::OffsetDateTime;

use crate::deploy;
use crate::issuer::IssueError;
use crate::keys;
use crate::material::Rejected;
use crate::state::CauseKind;
use crate::store;
use crate::text::rfc3339;

/// Why a renewal failed with nothing changed on disk (a refusal after the swap is a
/// rollback, with a [`deploy::Failure`]).
#[non_exhaustive]
#[derive(Clone, Debug)]
pub enum Failure {
    /// Every issuer of the certificate failed, in the order tried.
    Issuers(Vec<(String, IssueError)>),
    /// An issuer gave material that its check refused.
    Material {
        /// The issuer.
        issuer: String,
        /// What is wrong with it.
        rejected: Rejected,
    },
    /// The new key could not be made.
    Key(Arc<keys::Error>),
    /// `owner` or `group` names no account.
    Spec(Arc<deploy::SpecError>),
    /// What sits where the certificate's files go is not certkeeper's to replace.
    Targets(Arc<store::Error>),
    /// An interrupted swap of this certificate could not be recovered.
    Recovery(Arc<store::Error>),
    /// The live leaf is dated later than any issuer dates a new one: anything ordered now
    /// would be older material.
    LiveTooNew {
        /// The live leaf's notBefore.
        not_before: OffsetDateTime,
        /// This pass's clock.
        now: OffsetDateTime,
    },
    /// The deploy could not swap the material in; `kept` says whether it is kept for the
    /// next pass.
    Deploy {
        /// Why.
        failure: deploy::Failure,
        /// Whether the material is kept in `pending/`.
        kept: bool,
    },
    /// The fleet's part failed: the fleet key, sealing or opening a key, publishing a
    /// generation. One line, never a key.
    Fleet(String),
    /// The certificate's task ended abnormally (a bug).
    Internal(String),
}

impl Failure {
    /// The kind alerts, metrics and backoff see: for issuers, a CA's rate limit when one
    /// holds every issuer back, else the first issuer's (the one preferred). A `Retry-After`
    /// alone (on a 503) does not make a failure a rate limit.
    pub fn kind(&self) -> CauseKind {
        match self {
            Failure::Issuers(tried) => {
                match tried
                    .iter()
                    .any(|(_, e)| e.kind() == CauseKind::RateLimited)
                {
                    true => CauseKind::RateLimited,
                    false => tried.first().map_or(CauseKind::Config, |(_, e)| e.kind()),
                }
            }
            Failure::Material { .. } => CauseKind::Material,
            Failure::Key(_)
            | Failure::LiveTooNew { .. }
            | Failure::Fleet(_)
            | Failure::Internal(_) => CauseKind::Local,
            Failure::Spec(_) => CauseKind::Config,
            Failure::Targets(_) | Failure::Recovery(_) => CauseKind::Deploy,
            Failure::Deploy { failure, .. } => failure.kind(),
        }
    }

    /// When the CA asked to be asked again: the latest `Retry-After` a CA sent (a rate
    /// limit, a 503; before it, every issuer of the list would be tried again in vain).
    pub fn retry_after(&self) -> Option<OffsetDateTime> {
        match self {
            Failure::Issuers(tried) => tried
                .iter()
                .filter_map(|(_, e)| e.retry_after().map(OffsetDateTime::from))
                .max(),
            _ => None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Issuers(tried) => {
                for (i, (issuer, e)) in tried.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "issuer {issuer}: {e}")?;
                }
                Ok(())
            }
            Failure::Material { issuer, rejected } => write!(f, "issuer {issuer}: {rejected}"),
            Failure::Key(e) => write!(f, "{e}"),
            Failure::Spec(e) => write!(f, "{e}"),
            Failure::Targets(e) => write!(f, "{e}"),
            Failure::Recovery(e) => write!(f, "recovery: {e}"),
            Failure::LiveTooNew { not_before, now } => write!(
                f,
                "the live certificate's notBefore {} is later than now ({}); a certificate ordered now would be older material, which a deploy never puts over the live pair. Check this host's clock, or restore older material explicitly with `certkeeper rollback`",
                rfc3339(*not_before),
                rfc3339(*now)
            ),
            Failure::Deploy {
                failure,
                kept: true,
            } => write!(
                f,
                "{failure} (the new material is kept and deployed on the next pass)"
            ),
            Failure::Deploy {
                failure,
                kept: false,
            } => write!(
                f,
                "{failure} (the new material could not be kept; the next pass orders again)"
            ),
            Failure::Fleet(e) => write!(f, "fleet: {e}"),
            Failure::Internal(e) => write!(f, "internal error, please report it: {e}"),
        }
    }
}
