//! Everything before the swap, for one certificate: kept material first, then the issuers
//! in order, each result checked.

use time::OffsetDateTime;

use super::kept::Kept;
use super::pending::{self, keep_now};
use super::plan;
use super::{Options, Outcome};
use crate::config::{Certificate, Config};
use crate::inventory::Trust;
use crate::issuer::Issuers;
use crate::keys;
use crate::material::check_new;
use crate::state::{Cause, CauseKind};
use crate::store::{self, StateDir};
use crate::x509::Cert;

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

/// Everything before the swap, for one certificate: plan, then obtain (kept material first,
/// due or not, then the issuers in order), each result checked.
pub(super) async fn prepare(
    config: &Config,
    kept: &Kept,
    cert: &Certificate,
    issuers: &Issuers,
    trust: Option<&Trust>,
    opts: &Options,
    now: OffsetDateTime,
) -> Step {
    let mut live = match plan::look(config, kept, cert, trust, opts, now) {
        Ok(live) => live,
        Err(until) => return Step::Done(Outcome::Backoff { until }),
    };
    let live_not_before = live.leaf.as_ref().map(|l| l.not_before);

    // Material issued by an earlier pass that could not be deployed (or was rolled back)
    // goes first, due or not: it was ordered because the certificate was due then.
    if let Some(step) = take_kept(kept, cert, issuers, live_not_before, opts, now).await {
        return step;
    }

    if !opts.force
        && let Some(outcome) = plan::not_due(config, kept, cert, issuers, &mut live, now).await
    {
        return Step::Done(outcome);
    }
    if let Some(step) = refused(&kept.state_dir, cert) {
        return step;
    }
    if let Some(outcome) = plan::too_new(live.leaf.as_ref(), now) {
        return Step::Done(outcome);
    }
    issue(kept, cert, issuers, live_not_before, opts, now).await
}

/// What sits where this certificate's files go is looked at before anything is written
/// for it (a deploy of kept material, an issuance): a device, FIFO or socket there fails
/// it then, with nothing issued or written. A certificate that is not due writes nothing
/// and is not looked at (`config check` reports such paths for every certificate).
fn refused(state_dir: &StateDir, cert: &Certificate) -> Option<Step> {
    let spec = cert.live_spec();
    store::check_targets(state_dir, &spec, &cert.issuers)
        .err()
        .map(|e| {
            Step::Done(Outcome::Failed {
                error: Cause::new(CauseKind::Deploy, e.to_string()),
                retry_after: None,
            })
        })
}

/// The material kept in `pending/` for `cert`, checked, ready to deploy; `None` when there
/// is none or it is discarded (then the issuers are asked).
async fn take_kept(
    kept: &Kept,
    cert: &Certificate,
    issuers: &Issuers,
    live_not_before: Option<OffsetDateTime>,
    opts: &Options,
    now: OffsetDateTime,
) -> Option<Step> {
    let state_dir = &kept.state_dir;
    let (fullchain, privkey) = kept
        .pending
        .contains(&cert.name)
        .then(|| pending::load(state_dir.path(), &cert.name))
        .flatten()?;
    let origin = Origin {
        name: "pending",
        staging: false,
    };
    match checked(
        issuers,
        cert,
        fullchain,
        privkey,
        live_not_before,
        now,
        origin,
    )
    .await
    {
        Ok(mut ready) => {
            if let Some(step) = refused(state_dir, cert) {
                return Some(step);
            }
            ready.kept = true;
            Some(Step::Deploy(ready))
        }
        Err(rejected) => {
            tracing::warn!(cert = %cert.name, "Discarding undeployed material from an earlier pass: {rejected}");
            if !opts.dry_run {
                pending::remove(state_dir, &cert.name);
            }
            None
        }
    }
}

/// The key the new certificate gets: the live one when `reuse_key` says so and it reads,
/// a new one otherwise.
fn new_key(cert: &Certificate) -> Result<rcgen::KeyPair, Cause> {
    let live_key = if cert.reuse_key {
        crate::fsutil::read_regular_text(&cert.privkey, crate::fsutil::MAX_FILE).ok()
    } else {
        None
    };
    keys::for_renewal(cert.key, cert.reuse_key, live_key.as_deref())
        .map_err(|e| Cause::new(CauseKind::Local, e.to_string()))
}

/// Orders from `cert`'s issuers in order until one gives material, and checks it.
async fn issue(
    kept: &Kept,
    cert: &Certificate,
    issuers: &Issuers,
    live_not_before: Option<OffsetDateTime>,
    opts: &Options,
    now: OffsetDateTime,
) -> Step {
    let state_dir = &kept.state_dir;
    let key = match new_key(cert) {
        Ok(k) => k,
        Err(error) => {
            return Step::Done(Outcome::Failed {
                error,
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
    let mut failures = Failures::default();
    for issuer in &cert.issuers {
        let fullchain = match issuers.issue(issuer, cert, &key, now).await {
            Ok(f) => f.into_bytes(),
            Err(e) => {
                tracing::warn!(cert = %cert.name, issuer = %issuer, "Issuer failed: {e}");
                failures.add(issuer, &e);
                continue;
            }
        };
        // Material from a CA is kept before the deploy (a crash must not cost another order);
        // a local CA's only when the deploy does not take it (issuing again costs nothing).
        let kept_now = !opts.dry_run
            && !issuers.issues_freely(issuer)
            && keep_now(state_dir, &cert.name, &fullchain, &privkey);
        let origin = Origin {
            name: issuer,
            staging: opts.dry_run && issuers.orders_from_staging(issuer),
        };
        return match checked(
            issuers,
            cert,
            fullchain,
            privkey,
            live_not_before,
            now,
            origin,
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
    Step::Done(failures.outcome())
}

/// What the issuers that failed said, in order.
#[derive(Default)]
struct Failures {
    errors: Vec<String>,
    kinds: Vec<CauseKind>,
    retry_after: Option<OffsetDateTime>,
}

impl Failures {
    fn add(&mut self, issuer: &str, e: &crate::issuer::IssueError) {
        self.errors.push(format!("issuer {issuer}: {e}"));
        self.kinds.push(e.kind());
        // The latest time a rate-limiting CA named: before it, every issuer of the
        // list would be tried again in vain.
        if let Some(at) = e.retry_after().map(OffsetDateTime::from) {
            self.retry_after = Some(self.retry_after.map_or(at, |r| r.max(at)));
        }
    }

    /// The failure of the whole.
    fn outcome(self) -> Outcome {
        // The kind of the whole: a CA's rate limit when one holds every issuer back, else
        // the first issuer's (the one preferred).
        let kind = match self.retry_after {
            Some(_) => CauseKind::RateLimited,
            None => self.kinds.first().copied().unwrap_or(CauseKind::Config),
        };
        Outcome::Failed {
            error: Cause::new(kind, self.errors.join("; ")),
            retry_after: self.retry_after,
        }
    }
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
