//! What happened to one certificate in a pass.

use time::OffsetDateTime;

use super::Failure;
use crate::deploy;

/// What happened to one certificate.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Not due; renews from `renew_after`.
    NotDue {
        /// When it becomes due.
        renew_after: OffsetDateTime,
    },
    /// A previous failure's backoff has not run out.
    Backoff {
        /// When the next attempt is allowed.
        until: OffsetDateTime,
    },
    /// Dry run: the certificate is due, and its issuer has no `staging_directory`, so
    /// nothing was ordered (a dry run never spends a production CA's rate limits).
    WouldOrder {
        /// The issuer it would order from.
        issuer: String,
        /// The names it would order.
        domains: Vec<String>,
    },
    /// The pass was asked to stop before this certificate was done; nothing changed on disk
    /// for it (material already issued is kept and deployed by the next pass).
    Stopped,
    /// New material is live, reloaded, and served.
    Renewed {
        /// Where the material came from (an issuer name, or `pending`).
        source: String,
        /// What the deploy did.
        done: deploy::Renewed,
    },
    /// New material was swapped in but refused (reload or verify failed); the previous
    /// pair is live and served again. The material is kept for the next pass.
    RolledBack {
        /// Where the material came from.
        source: String,
        /// Why it was refused.
        cause: deploy::Failure,
        /// What the way back did worth knowing.
        note: Option<String>,
    },
    /// New material was refused and the previous pair could not be put back and served:
    /// someone must act.
    RollbackFailed {
        /// Where the material came from.
        source: String,
        /// Why it was refused.
        cause: deploy::Failure,
        /// What went wrong on the way back, and what is live now.
        rollback: String,
    },
    /// Nothing whole was live before, so the new pair stays live although its reload or
    /// verification failed (there is nothing better to go back to); the next pass reloads
    /// and verifies it again, without ordering. A failure: exit 1, alerted.
    Unserved {
        /// Where the material came from.
        source: String,
        /// Why it is not known to be served.
        cause: deploy::Failure,
        /// What the deploy did.
        done: deploy::Renewed,
    },
    /// Dry run: new material was obtained and checked, nothing was written.
    WouldRenew {
        /// The new leaf's notAfter (RFC 3339).
        not_after: String,
        /// The issuer that gave it.
        source: String,
    },
    /// Held on the pair a `rollback --hold` restored: nothing deployed, nothing ordered
    /// (material kept in `pending/` stays there for after `certkeeper release`). Not a
    /// failure.
    Held {
        /// When the hold was set.
        since: OffsetDateTime,
        /// When it ends by itself: the live leaf is then within half of `before_expiry` of
        /// its notAfter.
        ends: OffsetDateTime,
    },
    /// A certificate shared by the fleet that this host leaves as it is now: another host
    /// leads the issuance, the generation waits for its canary, this host serves the
    /// current one, or etcd has no quorum. Nothing ordered, nothing changed. Not a failure.
    FleetWait {
        /// Why, on one line.
        why: String,
        /// When it next needs a pass without any news from the fleet's watch: within
        /// `lease_ttl` while something is pending (another host leads, the generation waits
        /// for its canary hosts, etcd has no quorum), when the served pair becomes due when
        /// this host is up to date; `None` when nothing but news can change it.
        next: Option<OffsetDateTime>,
    },
    /// The renewal failed; nothing changed on disk for this certificate.
    Failed {
        /// Why, with the issuers' errors. When the CA asked to be asked again (a
        /// `rateLimited` answer's `Retry-After`, [`Failure::retry_after`]), the next
        /// attempt waits until then instead of the usual backoff.
        error: Failure,
    },
}

/// What an `Unserved` outcome says, the same on the CLI line, in the log, the record and
/// the alert.
pub fn unserved_message(source: &str, cause: &deploy::Failure) -> String {
    format!(
        "the new certificate from {source} is live and stays in place (nothing was live before, so there is nothing to go back to), but it is not known to be served: {cause}; the next pass reloads and verifies it again without ordering"
    )
}

impl Outcome {
    /// Whether this makes the pass exit 1: a failure, a rollback (automatic or failed), or
    /// a certificate still waiting out the backoff of an earlier failure.
    pub fn failed(&self) -> bool {
        matches!(
            self,
            Outcome::Failed { .. }
                | Outcome::Unserved { .. }
                | Outcome::RolledBack { .. }
                | Outcome::RollbackFailed { .. }
                | Outcome::Backoff { .. }
        )
    }

    /// The outcome as one word, for metrics: `not_due`, `backoff`, `renewed`,
    /// `would_renew`, `rolled_back`, `rollback_failed`, `failed`, `stopped`, `held` or
    /// `fleet_wait`.
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::NotDue { .. } => "not_due",
            Outcome::Stopped => "stopped",
            Outcome::Backoff { .. } => "backoff",
            Outcome::Renewed { .. } => "renewed",
            Outcome::WouldRenew { .. } => "would_renew",
            Outcome::WouldOrder { .. } => "would_order",
            Outcome::RolledBack { .. } => "rolled_back",
            Outcome::RollbackFailed { .. } => "rollback_failed",
            Outcome::Failed { .. } | Outcome::Unserved { .. } => "failed",
            Outcome::Held { .. } => "held",
            Outcome::FleetWait { .. } => "fleet_wait",
        }
    }

    /// The pass's outcome of a deploy; `kept` says whether the new material is kept for the
    /// next pass (it is not when keeping it failed), so that a failure says so truly.
    pub(super) fn from_deploy(source: String, outcome: deploy::Outcome, kept: bool) -> Outcome {
        match outcome {
            deploy::Outcome::Renewed(done) => Outcome::Renewed { source, done },
            deploy::Outcome::Unserved { cause, done } => Outcome::Unserved {
                source,
                cause,
                done,
            },
            deploy::Outcome::RolledBack { cause, note } => Outcome::RolledBack {
                source,
                cause,
                note,
            },
            deploy::Outcome::RollbackFailed { cause, rollback } => Outcome::RollbackFailed {
                source,
                cause,
                rollback,
            },
            deploy::Outcome::Failed { error } => Outcome::Failed {
                error: Failure::Deploy {
                    failure: error,
                    kept,
                },
            },
        }
    }
}
