//! One renewal pass, the same for `certkeeper renew` and each run of the daemon: recover
//! interrupted swaps, find what is due (a live certificate that `check` calls CRITICAL is
//! due now), get new material (issued-but-not-deployed material first, then the issuers in
//! order), check it, and hand it to the deploy pipeline (`crate::deploy`), which stages,
//! reloads, verifies, and commits or rolls back. Due certificates are issued in parallel up
//! to `renewal.concurrency`; one failure never stops the others.

mod kept;
mod notify;
mod obtain;
mod outcome;
mod pending;
mod plan;
mod record;

pub use notify::{EXPIRING_WITHIN, deliver};
pub use outcome::Outcome;

use kept::Kept;
use obtain::{Ready, Step, prepare};
use pending::keep_now;
use record::Recorder;

use std::collections::BTreeMap;
use std::sync::Arc;

use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::alert;
use crate::config::{Certificate, Config};
use crate::deploy::{self, pair_spec};
use crate::inventory::Trust;
use crate::issuer::Issuers;
use crate::state::{self, Cause, CauseKind};
use crate::store::{self, StateDir, Store};
use crate::text::rfc3339;

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
