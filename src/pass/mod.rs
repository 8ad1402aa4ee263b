//! One renewal pass, the same for `certkeeper renew` and each run of the daemon: recover
//! interrupted swaps, find what is due (a live certificate that `check` calls CRITICAL is
//! due now), get new material (issued-but-not-deployed material first, then the issuers in
//! order), check it, and hand it to the deploy pipeline (`crate::deploy`), which stages,
//! reloads, verifies, and commits or rolls back. Due certificates are issued in parallel up
//! to `renewal.concurrency`; one failure never stops the others.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::alert;
use crate::config::{Certificate, Config, EventKind};
use crate::deploy::{self, pair_spec};
use crate::inventory::{self, Trust};
use crate::issuer::Issuers;
use crate::keys;
use crate::material::{ISSUER_BACKDATE, check_new};
use crate::schedule;
use crate::state::{self, Cause, CauseKind, CertState};
use crate::store::{self, Durable, StateDir, Store};
use crate::text::rfc3339;
use crate::x509::{Cert, leaf_of_file};

/// What to do in a pass.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Renew the selected certificates even when not due, ignoring the retry backoff.
    pub force: bool,
    /// Do everything up to the swap and change nothing on disk.
    pub dry_run: bool,
    /// Only these certificates (all when empty).
    pub names: Vec<String>,
    /// Asks the pass to stop early (the daemon's SIGTERM); never fires for `renew`.
    ///
    /// A pass that sees it stops waiting for issuers (their challenge records are removed, see
    /// [`crate::acme::dns01::Published`]), deploys nothing it has not started, and lets a
    /// deploy in flight finish: a group of certificates that is staged is always reloaded,
    /// verified and committed or reverted, so a stop never leaves a half swap or an
    /// unverified pair behind.
    pub stop: CancellationToken,
}

/// What happened to one certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
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
        cause: Cause,
        /// What the way back did worth knowing.
        note: Option<String>,
    },
    /// New material was refused and the previous pair could not be put back and served:
    /// someone must act.
    RollbackFailed {
        /// Where the material came from.
        source: String,
        /// Why it was refused.
        cause: Cause,
        /// What went wrong on the way back, and what is live now.
        rollback: String,
    },
    /// Dry run: new material was obtained and checked, nothing was written.
    WouldRenew {
        /// The new leaf's notAfter (RFC 3339).
        not_after: String,
        /// The issuer that gave it.
        source: String,
    },
    /// The renewal failed; nothing changed on disk for this certificate.
    Failed {
        /// Why, with the issuers' errors.
        error: Cause,
        /// When the CA asked to be asked again (a `rateLimited` answer's `Retry-After`): the
        /// next attempt waits until then instead of the usual backoff.
        retry_after: Option<OffsetDateTime>,
    },
}

impl Outcome {
    /// Whether this makes the pass exit 1: a failure, a rollback (automatic or failed), or
    /// a certificate still waiting out the backoff of an earlier failure.
    pub fn failed(&self) -> bool {
        matches!(
            self,
            Outcome::Failed { .. }
                | Outcome::RolledBack { .. }
                | Outcome::RollbackFailed { .. }
                | Outcome::Backoff { .. }
        )
    }

    /// The outcome as one word, for metrics: `not_due`, `backoff`, `renewed`,
    /// `would_renew`, `rolled_back`, `rollback_failed`, `failed` or `stopped`.
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
            Outcome::Failed { .. } => "failed",
        }
    }

    /// The pass's outcome of a deploy; `kept` says whether the new material is kept for the
    /// next pass (it is not when keeping it failed), so that a failure says so truly.
    fn from_deploy(source: String, outcome: deploy::Outcome, kept: bool) -> Outcome {
        match outcome {
            deploy::Outcome::Renewed(done) => Outcome::Renewed { source, done },
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
            deploy::Outcome::Failed { error, .. } => Outcome::Failed {
                error: Cause::new(
                    error.kind,
                    if kept {
                        format!("{error} (the new material is kept and deployed on the next pass)")
                    } else {
                        format!(
                            "{error} (the new material could not be kept; the next pass orders again)"
                        )
                    },
                ),
                retry_after: None,
            },
        }
    }
}

/// Why a pass could not run at all.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store (state_dir, lock) is unusable.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Runs one pass, delivers its alerts (within [`alert::ONE_SHOT_BUDGET`]) and returns each
/// selected certificate's outcome, in config order.
pub async fn run(config: Arc<Config>, opts: &Options) -> Result<Vec<(String, Outcome)>, Error> {
    let done = pass(config.clone(), opts).await?;
    deliver(&config, &done.events, alert::ONE_SHOT_BUDGET, done.started).await;
    Ok(done.outcomes)
}

/// What one pass did: each selected certificate's outcome in config order, and the alerts
/// it raised, not yet delivered.
#[derive(Debug)]
pub struct Pass {
    /// When the pass started (its clock for every decision).
    pub started: OffsetDateTime,
    /// Each selected certificate's outcome, in config order.
    pub outcomes: Vec<(String, Outcome)>,
    /// The events to alert, each with whether it is a recovery.
    pub events: Vec<(alert::Event, bool)>,
}

/// Delivers a pass's alerts within `budget`, and notes which failures reached a channel so
/// that they alert again only after `alert_repeat`.
pub async fn deliver(
    config: &Config,
    events: &[(alert::Event, bool)],
    budget: std::time::Duration,
    now: OffsetDateTime,
) {
    if events.is_empty() {
        return;
    }
    let alerts = alert::Alerts::new(config);
    let reports = alerts.deliver(events, budget).await;
    remember_alerts(config, events, &reports, now, budget).await;
}

/// Waits for the state_dir lock without blocking the runtime, so that a stop request is
/// seen while another process's pass holds it.
async fn lock_waiting<'a>(
    store: &'a Store,
    stop: &CancellationToken,
) -> Result<Option<store::Locked<'a>>, store::Error> {
    let mut told = false;
    loop {
        match store.try_lock() {
            Ok(l) => return Ok(Some(l)),
            Err(store::Error::Locked { .. }) => {}
            Err(e) => return Err(e),
        }
        if !told {
            tracing::info!("Waiting for another certkeeper pass to finish.");
            told = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(LOCK_POLL) => {}
            _ = stop.cancelled() => return Ok(None),
        }
    }
}

/// How often a pass looks whether another process's pass has released the lock.
const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Runs one pass and returns what it did; the caller delivers the alerts (see [`deliver`]).
pub async fn pass(config: Arc<Config>, opts: &Options) -> Result<Pass, Error> {
    let now = OffsetDateTime::now_utc();
    let selected: Vec<Certificate> = config
        .certificates
        .iter()
        .filter(|c| opts.names.is_empty() || opts.names.contains(&c.name))
        .cloned()
        .collect();
    let mut specs = BTreeMap::new();
    let mut unrecoverable: BTreeMap<String, Cause> = BTreeMap::new();
    // An owner or group that does not resolve fails its own certificate; the others go on.
    for cert in &selected {
        match pair_spec(cert) {
            Ok(spec) => {
                specs.insert(cert.name.clone(), spec);
            }
            Err(e) => {
                unrecoverable.insert(
                    cert.name.clone(),
                    Cause::new(CauseKind::Config, e.to_string()),
                );
            }
        }
    }
    // A dry run writes nothing: no state_dir is created, no lock taken, no recovery run.
    let store = if opts.dry_run {
        None
    } else {
        Some(Store::open(&config.state_dir)?)
    };
    let locked = match &store {
        Some(store) => {
            let Some(locked) = lock_waiting(store, &opts.stop).await? else {
                return Ok(Pass {
                    started: now,
                    outcomes: selected
                        .iter()
                        .map(|c| (c.name.clone(), Outcome::Stopped))
                        .collect(),
                    events: Vec::new(),
                });
            };
            // Over every configured certificate, a clean recovery puts the `clean` marker
            // back at the end of the pass.
            let recovered = if specs.len() == config.certificates.len() {
                locked.recover_all(specs.values())
            } else {
                specs.values().map(|s| (s, locked.recover(s))).collect()
            };
            for (spec, recovered) in recovered {
                match recovered {
                    Ok(r) if r.is_clean() => {}
                    Ok(r) => {
                        if let Some(undone) = &r.undone {
                            tracing::warn!(cert = %spec.name, "Recovered an interrupted deploy: {undone}.");
                        }
                        for w in &r.warnings {
                            tracing::warn!(cert = %spec.name, "{w}");
                        }
                        if !r.removed.is_empty() || !r.completed.is_empty() {
                            tracing::warn!(cert = %spec.name, removed = r.removed.len(), completed = r.completed.len(), "Recovered an interrupted swap.");
                        }
                    }
                    // Reported as this certificate's failure; the others go on.
                    Err(e) => {
                        unrecoverable.insert(
                            spec.name.clone(),
                            Cause::new(CauseKind::Deploy, format!("recovery: {e}")),
                        );
                    }
                }
            }
            Some(locked)
        }
        None => None,
    };

    // Where this pass writes; a dry run's refuses every write.
    let state_dir = match &store {
        Some(store) => store.state_dir().clone(),
        None => StateDir::read_only(&config.state_dir),
    };
    let kept = Arc::new(Kept::load(
        &state_dir,
        &state::Horizon::new(now, config.renewal.retry_max),
    ));
    let record = Recorder {
        config: &config,
        kept: &kept,
        opts,
        now,
    };
    let mut events: Vec<(alert::Event, bool)> = Vec::new();
    // The platform's roots, read once for the issuers and for judging live chains, and only
    // when a chain needs them.
    let system = Arc::new(crate::x509::TrustStore::system_on_demand());
    let issuers = Arc::new(Issuers::new(
        config.clone(),
        state_dir.clone(),
        system.clone(),
        now,
    ));
    // What `check` would call CRITICAL is due now; without the roots that judges chains,
    // only the dates decide.
    let trust = match Trust::with_system(&config, system) {
        Ok(t) => Some(Arc::new(t)),
        Err(e) => {
            tracing::warn!("Broken live certificates are judged by their dates only: {e}");
            None
        }
    };
    let limit = Arc::new(Semaphore::new(config.renewal.concurrency));
    let mut tasks = JoinSet::new();
    let mut task_names = std::collections::HashMap::new();
    let mut outcomes: BTreeMap<String, Outcome> = BTreeMap::new();
    for cert in selected.iter().cloned() {
        if let Some(error) = unrecoverable.remove(&cert.name) {
            let outcome = Outcome::Failed {
                error,
                retry_after: None,
            };
            record.done(cert.name.clone(), outcome, &mut events, &mut outcomes);
            continue;
        }
        let (config, issuers, limit, opts, trust, kept) = (
            config.clone(),
            issuers.clone(),
            limit.clone(),
            opts.clone(),
            trust.clone(),
            kept.clone(),
        );
        let task_name = cert.name.clone();
        // Every log line of this certificate's work carries its name.
        let span = tracing::info_span!("certificate", cert = %cert.name);
        let handle = tasks.spawn(
            async move {
                let name = cert.name.clone();
                // The semaphore is never closed, so acquiring only waits.
                let _permit = limit.acquire_owned().await;
                let step = prepare(
                    &config,
                    &kept,
                    &cert,
                    &issuers,
                    trust.as_deref(),
                    &opts,
                    now,
                )
                .await;
                (name, step)
            }
            .instrument(span),
        );
        task_names.insert(handle.id(), task_name);
    }
    let mut ready: Vec<(String, Box<Ready>)> = Vec::new();
    let mut stopping = false;
    loop {
        let joined = tokio::select! {
            joined = tasks.join_next_with_id() => joined,
            _ = opts.stop.cancelled(), if !stopping => {
                // Issuing stops here: dropping an order removes its challenge records
                // (`Published`'s drop), which `dns01::settle` waits for below. What is
                // ready is not deployed; it was kept and the next pass deploys it.
                tracing::info!("Stopping: abandoning the orders in flight.");
                stopping = true;
                tasks.abort_all();
                continue;
            }
        };
        let Some(joined) = joined else { break };
        let (name, step) = match joined {
            Err(e) if e.is_cancelled() => match task_names.get(&e.id()) {
                Some(name) => (name.clone(), Step::Done(Outcome::Stopped)),
                None => continue,
            },
            Ok((_, done)) => done,
            // A panic is a bug, but it still counts as this certificate's failure.
            Err(e) => match task_names.get(&e.id()) {
                Some(name) => (
                    name.clone(),
                    Step::Done(Outcome::Failed {
                        error: Cause::new(
                            CauseKind::Local,
                            format!("internal error, please report it: {e}"),
                        ),
                        retry_after: None,
                    }),
                ),
                None => continue,
            },
        };
        match step {
            Step::Done(outcome) => {
                record.done(name, outcome, &mut events, &mut outcomes);
            }
            Step::Deploy(r) => ready.push((name, r)),
        }
    }

    if stopping {
        crate::acme::dns01::settle(CLEANUP_BOUND).await;
        for (name, r) in ready.drain(..) {
            if !r.kept && !opts.dry_run {
                keep_now(&state_dir, &name, &r.fullchain, &r.privkey);
            }
            record.done(name, Outcome::Stopped, &mut events, &mut outcomes);
        }
    }
    // Deploys wait until every certificate is issued, so that those sharing a reload
    // command are reloaded once.
    let mut sources = BTreeMap::new();
    let mut items = Vec::new();
    // Material not kept yet, kept when its deploy does not take it.
    let mut unkept: BTreeMap<String, (Vec<u8>, Vec<u8>)> = BTreeMap::new();
    for (name, r) in ready {
        match (&locked, specs.get(&name), config.certificate(&name)) {
            (Some(_), Some(spec), Some(cert)) => {
                sources.insert(name.clone(), r.source.clone());
                if !r.kept {
                    unkept.insert(name.clone(), (r.fullchain.clone(), r.privkey.clone()));
                }
                items.push(deploy::Item {
                    cert: cert.clone(),
                    spec: spec.clone(),
                    fullchain: r.fullchain,
                    privkey: r.privkey,
                    leaf: r.leaf,
                    trust: Arc::new(issuers.trust_for(cert).await),
                });
            }
            _ => {
                let outcome = Outcome::WouldRenew {
                    not_after: rfc3339(r.leaf.not_after),
                    source: r.source.clone(),
                };
                record.done(name, outcome, &mut events, &mut outcomes);
            }
        }
    }
    // In config order, so that reload commands see the names as configured.
    items.sort_by_key(|i| selected.iter().position(|c| c.name == i.cert.name));
    if let Some(locked) = &locked {
        for (name, done) in deploy::deploy_all(locked, items, &opts.stop).await {
            let source = sources.remove(&name).unwrap_or_default();
            let renewed = matches!(done, deploy::Outcome::Renewed(_));
            let still_kept = match unkept.remove(&name) {
                Some(_) if renewed => false,
                Some((fullchain, privkey)) => keep_now(&state_dir, &name, &fullchain, &privkey),
                None => pending::exists(&config.state_dir, &name),
            };
            if renewed && still_kept {
                pending::remove(&state_dir, &name);
            }
            let outcome = Outcome::from_deploy(source, done, still_kept);
            record.done(name, outcome, &mut events, &mut outcomes);
        }
        // Groups not started because of a stop.
        for name in sources.into_keys() {
            if let Some((fullchain, privkey)) = unkept.remove(&name) {
                keep_now(&state_dir, &name, &fullchain, &privkey);
            }
            record.done(name, Outcome::Stopped, &mut events, &mut outcomes);
        }
    }
    if !opts.dry_run {
        kept.save();
    }
    if let Some(locked) = &locked {
        kept.save_alerted(locked);
    }
    // The lock is released first: alerts never hold up another pass. Nothing under
    // state_dir is written after this but under the lock again (see `remember_alerts`).
    drop(locked);
    Ok(Pass {
        started: now,
        outcomes: selected
            .iter()
            .filter_map(|c| outcomes.remove(&c.name).map(|o| (c.name.clone(), o)))
            .collect(),
        events,
    })
}

/// How long a stopping pass waits for the challenge records of abandoned orders to be
/// removed.
const CLEANUP_BOUND: std::time::Duration = std::time::Duration::from_secs(30);

/// Notes, per certificate, the failure events that reached at least one channel, so that
/// they alert again only after `alert_repeat`. Delivery ends after the pass released the
/// lock: the memory is written under the lock taken again (waiting for another pass within
/// `wait`), read and changed under it, and never written otherwise.
async fn remember_alerts(
    config: &Config,
    events: &[(alert::Event, bool)],
    reports: &[alert::Report],
    now: OffsetDateTime,
    wait: std::time::Duration,
) {
    let delivered: Vec<&alert::Event> = events
        .iter()
        .map(|(event, _)| event)
        .filter(|event| event.kind() != EventKind::Renewed)
        .filter(|event| {
            reports.iter().any(|r| {
                r.certificate == event.certificate && r.event == event.event && r.result.is_ok()
            })
        })
        .collect();
    if delivered.is_empty() {
        return;
    }
    let remembered = async {
        let store = Store::open(&config.state_dir)?;
        let Some(locked) = lock_within(&store, wait).await? else {
            return Ok(false);
        };
        let horizon = state::Horizon::of(config);
        let mut alerted = state::load_alerted(&config.state_dir, &horizon);
        for event in delivered {
            alert::remember(
                alerted.entry(event.certificate.clone()).or_default(),
                event.kind(),
                event.cause_kind,
                now.unix_timestamp(),
            );
        }
        state::save_alerted(&locked, &alerted).map(|()| true)
    };
    match remembered.await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            "The alerts sent are not remembered: another certkeeper pass held the state directory for {}s; they may be sent again",
            wait.as_secs()
        ),
        Err(e) => tracing::warn!("Cannot remember the alerts sent in the state directory: {e}"),
    }
}

/// Takes the state_dir lock, waiting up to `wait` for another holder; `None` when it is
/// still held then.
async fn lock_within(
    store: &Store,
    wait: std::time::Duration,
) -> Result<Option<store::Locked<'_>>, store::Error> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match store.try_lock() {
            Ok(l) => return Ok(Some(l)),
            Err(store::Error::Locked { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(LOCK_POLL).await;
            }
            Err(store::Error::Locked { .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// The events one outcome raises, deduplicated against what was alerted before: its own
/// (`renewed` always, a recovery when failures came before; a failure once per
/// `alert_repeat`), and `expiring` when the live certificate expires within
/// [`EXPIRING_WITHIN`] and the attempt failed.
fn alert_events(
    config: &Config,
    name: &str,
    outcome: &Outcome,
    before: &CertState,
    now: OffsetDateTime,
) -> Vec<(alert::Event, bool)> {
    let Some(cert) = config.certificate(name) else {
        return Vec::new();
    };
    let live = leaf_of_file(&cert.fullchain).ok();
    let live_not_after = live.as_ref().map(|l| rfc3339(l.not_after));
    let t = now.unix_timestamp();
    let due = |kind, cause| alert::due(&before.alerted, kind, cause, t, config.alert_repeat);
    let mut out = Vec::new();
    let mut failed = true;
    let main = match outcome {
        Outcome::Renewed { source, done } => {
            failed = false;
            let mut e = alert::Event::new(
                EventKind::Renewed,
                cert,
                &format!(
                    "renewed from {source}; the new certificate is live and served{}",
                    if before.consecutive_failures > 0 {
                        format!(
                            " (after {} failed attempt{})",
                            before.consecutive_failures,
                            if before.consecutive_failures == 1 { "" } else { "s" }
                        )
                    } else {
                        String::new()
                    }
                ),
            );
            e.not_after = Some(done.not_after.clone());
            e.snapshot = done.snapshot.clone();
            let recovery = before.consecutive_failures > 0 || !before.alerted.is_empty();
            Some((e, recovery))
        }
        Outcome::Failed { error, .. } => Some((EventKind::Failed, error.to_string(), error.kind))
            .filter(|(k, _, c)| due(*k, Some(*c)))
            .map(|(k, m, c)| (alert::Event::new(k, cert, &m).with_cause(Some(c)), false)),
        Outcome::RolledBack { source, cause, .. } => Some((
            EventKind::RolledBack,
            format!("the new certificate from {source} was refused and the previous pair is served again: {cause}"),
            cause.kind,
        ))
        .filter(|(k, _, c)| due(*k, Some(*c)))
        .map(|(k, m, c)| (alert::Event::new(k, cert, &m).with_cause(Some(c)), false)),
        Outcome::RollbackFailed {
            source,
            cause,
            rollback,
        } => Some((
            EventKind::RollbackFailed,
            format!("the new certificate from {source} was refused, and {rollback}: {cause}"),
            cause.kind,
        ))
        .filter(|(k, _, c)| due(*k, Some(*c)))
        .map(|(k, m, c)| (alert::Event::new(k, cert, &m).with_cause(Some(c)), false)),
        Outcome::Backoff { .. } => None,
        Outcome::NotDue { .. }
        | Outcome::WouldRenew { .. }
        | Outcome::WouldOrder { .. }
        | Outcome::Stopped => {
            failed = false;
            None
        }
    };
    out.extend(main.map(|(mut e, recovery)| {
        if e.not_after.is_none() {
            e.not_after = live_not_after.clone();
        }
        (e, recovery)
    }));
    if failed
        && let Some(leaf) = &live
        && leaf.not_after - now < EXPIRING_WITHIN
        && due(EventKind::Expiring, None)
    {
        let left = leaf.not_after - now;
        let when = if left.is_negative() {
            format!("expired {}h ago", (-left).whole_hours())
        } else {
            format!("expires in {}h", left.whole_hours())
        };
        let (last, last_kind) = match outcome {
            Outcome::Failed { error, .. } => (error.to_string(), Some(error.kind)),
            Outcome::RolledBack { cause, .. } | Outcome::RollbackFailed { cause, .. } => {
                (cause.to_string(), Some(cause.kind))
            }
            _ => (
                before.last_error.clone().unwrap_or_default(),
                before.last_cause,
            ),
        };
        let mut e = alert::Event::new(
            EventKind::Expiring,
            cert,
            &format!(
                "the live certificate {when} (notAfter {}) and its last renewal failed: {last}",
                rfc3339(leaf.not_after)
            ),
        )
        .with_cause(last_kind);
        e.not_after = live_not_after;
        out.push((e, false));
    }
    out
}

/// How close to its notAfter a certificate whose renewal failed raises `expiring`.
pub const EXPIRING_WITHIN: time::Duration = time::Duration::days(7);

/// Checked material ready to be swapped in.
struct Ready {
    fullchain: Vec<u8>,
    privkey: Vec<u8>,
    leaf: Cert,
    source: String,
    /// Whether the material is kept in `pending/` already (see [`pending`]).
    kept: bool,
}

enum Step {
    Done(Outcome),
    Deploy(Box<Ready>),
}

/// Everything before the swap, for one certificate.
async fn prepare(
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

/// What records, logs and alerts each certificate's outcome in one pass.
struct Recorder<'a> {
    config: &'a Config,
    kept: &'a Kept,
    opts: &'a Options,
    now: OffsetDateTime,
}

impl Recorder<'_> {
    /// Records and logs `name`'s outcome, adds the alerts it raises to `events`, and the
    /// outcome to `outcomes`.
    fn done(
        &self,
        name: String,
        outcome: Outcome,
        events: &mut Vec<(alert::Event, bool)>,
        outcomes: &mut BTreeMap<String, Outcome>,
    ) {
        finish(self, &name, &outcome, events);
        outcomes.insert(name, outcome);
    }
}

/// Records and logs one certificate's outcome, and adds the alerts it raises to `events`.
fn finish(
    recorder: &Recorder<'_>,
    name: &str,
    outcome: &Outcome,
    events: &mut Vec<(alert::Event, bool)>,
) {
    let Recorder {
        config,
        kept,
        opts,
        now,
    } = *recorder;
    let state_dir = &kept.state_dir;
    kept.outcome(name, outcome, now);
    // Nothing happened to a certificate that was not due (or not tried): its record stays
    // as it is, and it raises no alert.
    let quiet = matches!(
        outcome,
        Outcome::NotDue { .. }
            | Outcome::WouldRenew { .. }
            | Outcome::WouldOrder { .. }
            | Outcome::Stopped
    );
    if !opts.dry_run && !quiet {
        let horizon = state::Horizon::new(now, config.renewal.retry_max);
        let mut before = state::load(state_dir.path(), name, &horizon);
        // What delivery remembered since (see `state::Alerted`), the later time of each.
        for (event, t) in kept.alerted(name) {
            let at = before.alerted.entry(event).or_insert(t);
            *at = (*at).max(t);
        }
        record(state_dir, name, outcome, config, now, before.clone());
        if !config.alerts.is_empty() {
            events.extend(alert_events(config, name, outcome, &before, now));
        }
    }
    log(name, outcome);
}

/// What a pass reads once and shares among its certificates: the kept renewal-information
/// answers and pass record (caches, written back once at the end when they changed), and
/// the names with material kept in `pending/`.
struct Kept {
    /// Where the pass writes.
    state_dir: StateDir,
    aris: std::sync::Mutex<state::Aris>,
    record: std::sync::Mutex<state::PassRecord>,
    /// The alert memory; a renewal clears its certificate's entry.
    alerted: std::sync::Mutex<state::Alerted>,
    /// Whether the answers changed: they are written back only then.
    aris_changed: std::sync::atomic::AtomicBool,
    /// Whether the pass record changed: it is written back only then.
    record_changed: std::sync::atomic::AtomicBool,
    /// Whether the alert memory changed: it is written back only then.
    alerted_changed: std::sync::atomic::AtomicBool,
    pending: std::collections::BTreeSet<String>,
}

impl Kept {
    fn load(state_dir: &StateDir, horizon: &state::Horizon) -> Kept {
        let pending = std::fs::read_dir(state_dir.join(&["pending"]))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        Kept {
            state_dir: state_dir.clone(),
            aris: std::sync::Mutex::new(state::load_aris(state_dir.path(), horizon)),
            record: std::sync::Mutex::new(state::load_pass(state_dir.path(), horizon)),
            alerted: std::sync::Mutex::new(state::load_alerted(state_dir.path(), horizon)),
            aris_changed: Default::default(),
            record_changed: Default::default(),
            alerted_changed: Default::default(),
            pending,
        }
    }

    fn ari(&self, name: &str) -> Option<state::KeptAri> {
        self.aris.lock().ok()?.get(name).cloned()
    }

    fn set_ari(&self, name: &str, ari: Option<state::KeptAri>) {
        if let Ok(mut aris) = self.aris.lock() {
            match ari {
                Some(a) => aris.insert(name.to_owned(), a),
                None => aris.remove(name),
            };
            self.aris_changed
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// When each failure event of `name` was last delivered, as the alert memory says.
    fn alerted(&self, name: &str) -> BTreeMap<String, i64> {
        self.alerted
            .lock()
            .ok()
            .and_then(|a| a.get(name).cloned())
            .unwrap_or_default()
    }

    /// Writes the alert memory back when a renewal cleared a part of it, under the lock.
    fn save_alerted(&self, locked: &store::Locked<'_>) {
        if !self
            .alerted_changed
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        if let Ok(alerted) = self.alerted.lock()
            && let Err(e) = state::save_alerted(locked, &alerted)
        {
            tracing::warn!("Cannot keep the alert memory in the state directory: {e}");
        }
    }

    /// Notes what the pass did with `name`: found it not due at `now`, or something else.
    fn outcome(&self, name: &str, outcome: &Outcome, now: OffsetDateTime) {
        // A renewal ends the failures: they alert afresh next time.
        if matches!(outcome, Outcome::Renewed { .. })
            && let Ok(mut alerted) = self.alerted.lock()
            && alerted.remove(name).is_some()
        {
            self.alerted_changed
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        if matches!(outcome, Outcome::Renewed { .. }) && self.ari(name).is_some() {
            // The answer was about the leaf that is gone.
            self.set_ari(name, None);
        }
        let Ok(mut record) = self.record.lock() else {
            return;
        };
        let changed = match outcome {
            Outcome::NotDue { .. } => {
                record.not_due.insert(name.to_owned(), now.unix_timestamp())
                    != Some(now.unix_timestamp())
            }
            _ => record.not_due.remove(name).is_some(),
        };
        if changed {
            self.record_changed
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Writes the caches back when they changed.
    fn save(&self) {
        let changed =
            |flag: &std::sync::atomic::AtomicBool| flag.load(std::sync::atomic::Ordering::SeqCst);
        let mut saved = Ok(());
        if changed(&self.aris_changed)
            && let Ok(aris) = self.aris.lock()
        {
            saved = state::save_aris(&self.state_dir, &aris);
        }
        if changed(&self.record_changed)
            && let Ok(record) = self.record.lock()
        {
            saved = saved.and(state::save_pass(&self.state_dir, &record));
        }
        if let Err(e) = saved {
            tracing::warn!("Cannot keep the pass record in the state directory: {e}");
        }
    }
}

fn record(
    state_dir: &StateDir,
    name: &str,
    outcome: &Outcome,
    config: &Config,
    now: OffsetDateTime,
    mut s: CertState,
) {
    let t = now.unix_timestamp();
    let (initial, max) = (config.renewal.retry_initial, config.renewal.retry_max);
    match outcome {
        Outcome::Renewed { done, .. } => {
            s.succeeded(t, "renewed");
            s.issued = config.certificate(name).map(|cert| state::IssuedWith {
                fingerprint: done.fingerprint.clone(),
                profile: cert.profile.clone(),
            });
        }
        Outcome::Failed { error, retry_after } => {
            s.failed(t, "failed", &error.message, initial, max);
            s.last_cause = Some(error.kind);
            // A rate-limiting CA said when: that time, not the usual ladder.
            // A CA asking for longer than the cap is asked again after it.
            if let Some(at) = retry_after {
                let cap = crate::state::next_attempt_cap(max).as_secs() as i64;
                s.next_attempt = Some(at.unix_timestamp().clamp(t, t.saturating_add(cap)));
            }
        }
        Outcome::RolledBack { cause, .. } => {
            s.failed(t, "rolled_back", &cause.message, initial, max);
            s.last_cause = Some(cause.kind);
        }
        Outcome::RollbackFailed {
            cause, rollback, ..
        } => {
            s.failed(
                t,
                "rollback_failed",
                &format!("{cause}; rollback failed: {rollback}"),
                initial,
                max,
            );
            s.last_cause = Some(cause.kind);
        }
        Outcome::NotDue { .. }
        | Outcome::Backoff { .. }
        | Outcome::WouldRenew { .. }
        | Outcome::WouldOrder { .. }
        | Outcome::Stopped => return,
    }
    if let Err(e) = state::save(state_dir, name, &s) {
        tracing::warn!(cert = %name, "Cannot record the outcome in the state directory: {e}");
    }
}

fn log(name: &str, outcome: &Outcome) {
    match outcome {
        Outcome::Renewed { source, done } => {
            for w in &done.warnings {
                tracing::warn!(cert = %name, "{w}");
            }
            tracing::info!(cert = %name, not_after = %done.not_after, snapshot = done.snapshot.as_deref().unwrap_or("-"), %source, "Renewed certificate.")
        }
        Outcome::RolledBack { cause, note, .. } => {
            tracing::warn!(cert = %name, "Rolled back: the previous pair is live and served again. {cause}{}",
                note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default())
        }
        Outcome::RollbackFailed {
            cause, rollback, ..
        } => {
            tracing::error!(cert = %name,
                "ROLLBACK FAILED, act now: {rollback}. It started with: {cause}. Check the service and its files; `certkeeper verify {name}` shows what is live, `certkeeper snapshots {name}` what can be restored with `certkeeper rollback {name} --to ID`.")
        }
        Outcome::Failed { error, .. } => tracing::error!(cert = %name, "Renewal failed: {error}"),
        Outcome::NotDue { renew_after } => {
            tracing::debug!(cert = %name, renew_after = %rfc3339(*renew_after), "Not due.")
        }
        Outcome::Backoff { until } => {
            tracing::warn!(cert = %name, until = %rfc3339(*until), "Waiting for the retry backoff after a failure.")
        }
        Outcome::Stopped => {
            tracing::info!(cert = %name, "Stopped before it was done; the next pass takes it up.")
        }
        Outcome::WouldRenew { not_after, source } => {
            tracing::info!(cert = %name, %not_after, %source, "Dry run: would renew.")
        }
        Outcome::WouldOrder { issuer, .. } => {
            tracing::info!(cert = %name, %issuer, "Dry run: would order; the issuer has no staging_directory.")
        }
    }
}

/// Keeps material the deploy did not take; whether it is kept.
fn keep_now(state_dir: &StateDir, name: &str, fullchain: &[u8], privkey: &[u8]) -> bool {
    match pending::save(state_dir, name, fullchain, privkey) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(cert = %name, "Cannot keep the new material for a later pass: {e}");
            false
        }
    }
}

/// Issued material kept under `state_dir/pending/<name>/` until it is live: a CA's before
/// its deploy, a local CA's when its deploy does not take it.
mod pending {
    use super::*;

    fn dir(state_dir: &Path, name: &str) -> PathBuf {
        state_dir.join("pending").join(name)
    }

    /// Whether a pair is kept for `name`.
    pub fn exists(state_dir: &Path, name: &str) -> bool {
        let d = dir(state_dir, name);
        d.join("fullchain.pem").is_file() && d.join("privkey.pem").is_file()
    }

    /// The kept fullchain and key, when both are there.
    pub fn load(state_dir: &Path, name: &str) -> Option<(Vec<u8>, Vec<u8>)> {
        let d = dir(state_dir, name);
        Some((
            crate::fsutil::read_regular(&d.join("fullchain.pem"), crate::fsutil::MAX_FILE).ok()?,
            crate::fsutil::read_regular(&d.join("privkey.pem"), crate::fsutil::MAX_FILE).ok()?,
        ))
    }

    /// Keeps a pair whole (key 0600), replacing the one kept before in one step: a crash at
    /// any point leaves one whole pair.
    pub fn save(
        state_dir: &StateDir,
        name: &str,
        fullchain: &[u8],
        privkey: &[u8],
    ) -> Result<(), crate::store::Error> {
        let files: [(&str, &[u8], u32); 2] = [
            ("fullchain.pem", fullchain, 0o644),
            ("privkey.pem", privkey, 0o600),
        ];
        state_dir.write_dir(&["pending"], name, &files, true, Durable::AtSync)
    }

    /// Drops the kept pair.
    pub fn remove(state_dir: &StateDir, name: &str) {
        if let Err(e) = state_dir.remove(&["pending"], name) {
            tracing::warn!(cert = %name, "Cannot drop the kept material: {e}");
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::fs;

        #[test]
        fn a_kept_pair_is_replaced_whole() {
            let root = tempfile::tempdir().unwrap();
            let state = StateDir::open(root.path()).unwrap();
            save(&state, "www", b"chain-1", b"key-1").unwrap();
            save(&state, "www", b"chain-2", b"key-2").unwrap();
            assert_eq!(
                load(root.path(), "www").unwrap(),
                (b"chain-2".to_vec(), b"key-2".to_vec())
            );
            let names: Vec<String> = fs::read_dir(root.path().join("pending"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(names, ["www"]);
            assert!(exists(root.path(), "www"));
            remove(&state, "www");
            assert!(!exists(root.path(), "www"));
        }
    }
}
