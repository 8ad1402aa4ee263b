//! Everything before the swap, for one certificate: kept material first, then the issuers
//! in order, each result checked.

use time::OffsetDateTime;

use super::kept::Kept;
use super::pending::{self, keep_now};
use super::{Options, Outcome};
use crate::config::{Certificate, Config};
use crate::inventory::{self, Trust};
use crate::issuer::Issuers;
use crate::keys;
use crate::material::{ISSUER_BACKDATE, check_new};
use crate::schedule;
use crate::state::{self, Cause, CauseKind};
use crate::store;
use crate::text::rfc3339;
use crate::x509::{Cert, leaf_of_file};

/// Checked material ready to be swapped in.
pub(super) struct Ready {
    pub(super) fullchain: Vec<u8>,
    pub(super) privkey: Vec<u8>,
    pub(super) leaf: Cert,
    pub(super) source: String,
    /// Whether the material is kept in `pending/` already (see [`pending`]).
    pub(super) kept: bool,
}

pub(super) enum Step {
    Done(Outcome),
    Deploy(Box<Ready>),
}

/// Everything before the swap, for one certificate.
pub(super) async fn prepare(
    config: &Config,
    kept: &Kept,
    cert: &Certificate,
    issuers: &Issuers,
    trust: Option<&Trust>,
    opts: &Options,
    now: OffsetDateTime,
) -> Step {
    let state_dir = &kept.state_dir;
    // What sits where this certificate's files go is looked at before anything is written
    // for it (a deploy of kept material, an issuance): a device, FIFO or socket there fails
    // it then, with nothing issued or written. A certificate that is not due writes nothing
    // and is not looked at (`config check` reports such paths for every certificate).
    let refused = || {
        let spec = store::PairSpec::new(&cert.name, &cert.fullchain, &cert.privkey);
        store::check_targets(state_dir, &spec, &cert.issuers)
            .err()
            .map(|e| {
                Step::Done(Outcome::Failed {
                    error: Cause::new(CauseKind::Deploy, e.to_string()),
                    retry_after: None,
                })
            })
    };
    let horizon = state::Horizon::new(now, config.renewal.retry_max);
    let mut saved = state::load(state_dir.path(), &cert.name, &horizon);
    saved.ari = kept.ari(&cert.name);
    if !opts.force
        && let Some(until) = schedule::retry_at(&saved, now)
    {
        return Step::Done(Outcome::Backoff { until });
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
    let live_leaf = leaf.or_else(|| leaf_of_file(&cert.fullchain).ok());
    let live_not_before = live_leaf.as_ref().map(|l| l.not_before);

    // Material issued by an earlier pass that could not be deployed (or was rolled back)
    // goes first, due or not: it was ordered because the certificate was due then.
    if let Some((fullchain, privkey)) = kept
        .pending
        .contains(&cert.name)
        .then(|| pending::load(state_dir.path(), &cert.name))
        .flatten()
    {
        match checked(
            issuers,
            cert,
            fullchain,
            privkey,
            live_not_before,
            now,
            Origin {
                name: "pending",
                staging: false,
            },
        )
        .await
        {
            Ok(mut ready) => {
                if let Some(step) = refused() {
                    return step;
                }
                ready.kept = true;
                return Step::Deploy(ready);
            }
            Err(rejected) => {
                tracing::warn!(cert = %cert.name, "Discarding undeployed material from an earlier pass: {rejected}");
                if !opts.dry_run {
                    pending::remove(state_dir, &cert.name);
                }
            }
        }
    }

    if !opts.force {
        let broken = inspected.filter(|e| e.status == inventory::Status::Critical);
        match (&live_leaf, broken) {
            (_, Some(entry)) => {
                tracing::info!(cert = %cert.name, "Due now: the live certificate is broken: {}", entry.problems.join("; "));
            }
            (Some(leaf), None) => {
                if issuers.refresh_ari(cert, leaf, &mut saved, now).await {
                    kept.set_ari(&cert.name, saved.ari.clone());
                }
                let due = schedule::decide(
                    leaf,
                    Some(&saved),
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
                    return Step::Done(Outcome::NotDue {
                        renew_after: due.at,
                    });
                }
            }
            // No live certificate yet: due.
            (None, None) => {}
        }
    }
    if let Some(step) = refused() {
        return step;
    }

    // Known before ordering: every issuer dates a new certificate now or earlier, so a live
    // leaf dated further in the future than issuers date back would make anything ordered
    // now older material (see `check_new`).
    if let Some(leaf) = &live_leaf
        && leaf.not_before > now + ISSUER_BACKDATE
    {
        return Step::Done(Outcome::Failed {
            error: Cause::new(
                CauseKind::Local,
                format!(
                    "the live certificate's notBefore {} is later than now ({}); a certificate ordered now would be older material, which a deploy never puts over the live pair. Check this host's clock, or restore older material explicitly with `certkeeper rollback`",
                    rfc3339(leaf.not_before),
                    rfc3339(now)
                ),
            ),
            retry_after: None,
        });
    }

    let live_key = if cert.reuse_key {
        crate::fsutil::read_regular_text(&cert.privkey, crate::fsutil::MAX_FILE).ok()
    } else {
        None
    };
    let key = match keys::for_renewal(cert.key, cert.reuse_key, live_key.as_deref()) {
        Ok(k) => k,
        Err(e) => {
            return Step::Done(Outcome::Failed {
                error: Cause::new(CauseKind::Local, e.to_string()),
                retry_after: None,
            });
        }
    };
    // A dry run orders only from a staging CA: without one, it stops here and says what it
    // would order.
    if opts.dry_run
        && let Some(first) = cert.issuers.first()
        && issuers.needs_staging(first)
    {
        return Step::Done(Outcome::WouldOrder {
            issuer: first.clone(),
            domains: cert.domains.clone(),
        });
    }
    let privkey = crate::x509::pem::write("PRIVATE KEY", &key.serialize_der()).into_bytes();
    let mut errors = Vec::new();
    let mut kinds = Vec::new();
    let mut retry_after: Option<OffsetDateTime> = None;
    for issuer in &cert.issuers {
        let issued = issuers.issue(issuer, cert, &key, now).await;
        let fullchain = match issued {
            Ok(f) => f.into_bytes(),
            Err(e) => {
                tracing::warn!(cert = %cert.name, issuer = %issuer, "Issuer failed: {e}");
                errors.push(format!("issuer {issuer}: {e}"));
                kinds.push(e.kind());
                // The latest time a rate-limiting CA named: before it, every issuer of the
                // list would be tried again in vain.
                if let Some(at) = e.retry_after().map(OffsetDateTime::from) {
                    retry_after = Some(retry_after.map_or(at, |r| r.max(at)));
                }
                continue;
            }
        };
        // Material from a CA is kept before the deploy (a crash must not cost another order);
        // a local CA's only when the deploy does not take it (issuing again costs nothing).
        let kept_now = !opts.dry_run
            && !issuers.issues_freely(issuer)
            && keep_now(state_dir, &cert.name, &fullchain, &privkey);
        return match checked(
            issuers,
            cert,
            fullchain,
            privkey,
            live_not_before,
            now,
            Origin {
                name: issuer,
                staging: opts.dry_run && issuers.orders_from_staging(issuer),
            },
        )
        .await
        {
            Ok(mut ready) => {
                ready.kept = kept_now;
                Step::Deploy(ready)
            }
            Err(rejected) => {
                if kept_now {
                    pending::remove(state_dir, &cert.name);
                }
                Step::Done(Outcome::Failed {
                    error: Cause::new(CauseKind::Material, format!("issuer {issuer}: {rejected}")),
                    retry_after: None,
                })
            }
        };
    }
    // The kind of the whole: a CA's rate limit when one holds every issuer back, else the
    // first issuer's (the one preferred).
    let kind = match retry_after {
        Some(_) => CauseKind::RateLimited,
        None => kinds.first().copied().unwrap_or(CauseKind::Config),
    };
    Step::Done(Outcome::Failed {
        error: Cause::new(kind, errors.join("; ")),
        retry_after,
    })
}

/// Where new material comes from: an issuer's name (or `pending`), and whether it is a
/// staging CA's.
#[derive(Clone, Copy)]
struct Origin<'a> {
    name: &'a str,
    staging: bool,
}

/// New material checked against the roots `cert`'s issuers chain to, ready to swap in.
async fn checked(
    issuers: &Issuers,
    cert: &Certificate,
    fullchain: Vec<u8>,
    privkey: Vec<u8>,
    live_not_before: Option<OffsetDateTime>,
    now: OffsetDateTime,
    origin: Origin<'_>,
) -> Result<Box<Ready>, crate::material::Rejected> {
    let Origin {
        name: source,
        staging,
    } = origin;
    let mut trust = issuers.trust_for(cert).await;
    if staging {
        // A staging CA's roots are not trusted anywhere: the chain it sent is checked whole
        // and signed link by link up to its last certificate, which stands in for the root.
        if let Ok((chain, _)) = crate::x509::read_certificates(&fullchain)
            && let Some(top) = chain.into_iter().next_back()
        {
            trust.add(top);
        }
    }
    let leaf = check_new(
        &fullchain,
        &privkey,
        &cert.domains,
        &trust,
        live_not_before,
        now,
    )?;
    Ok(Box::new(Ready {
        fullchain,
        privkey,
        leaf,
        source: source.to_owned(),
        kept: false,
    }))
}
