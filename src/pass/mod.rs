//! One renewal pass, the same for `certkeeper renew` and each run of the daemon: recover
//! interrupted swaps, find what is due (a live certificate that `check` calls CRITICAL is
//! due now), get new material (issued-but-not-deployed material first, then the issuers in
//! order), check it, and hand it to the deploy pipeline (`crate::deploy`), which stages,
//! reloads, verifies, and commits or rolls back. Due certificates are issued in parallel up
//! to `renewal.concurrency`; one failure never stops the others.
//!
//! This file wires the stages, each in a file of its own: `plan` (the record and live pair,
//! read once, and whether and why the certificate is due), `obtain` (kept material, then
//! the issuers; each result checked into a `Ready`), `tasks` (plan and obtain for every
//! certificate at once), `batch` (the hand-over to the deploy pipeline), `record` (the
//! record, the log line, the alerts raised) and `notify` (the alert events and their
//! delivery). `kept` holds what a pass reads once from the state directory, `pending` the
//! material kept between passes, `outcome` what happened to one certificate.

mod batch;
mod check;
mod failure;
mod fleet;
mod hold;
mod kept;
mod notify;
mod obtain;
mod outcome;
mod pending;
mod plan;
mod record;
mod start;
mod tasks;
pub(crate) mod trust;

pub use failure::Failure;
pub use notify::{EXPIRING_WITHIN, deliver};
pub use outcome::{Outcome, unserved_message};

use std::collections::BTreeMap;
use std::sync::Arc;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::alert;
use crate::config::{Certificate, Config};
use crate::inventory::Trust;
use crate::issuer::Issuers;
use crate::state;
use crate::store::{self, StateDir, Store};

use batch::Batch;
use check::Ready;
use kept::Kept;
use pending::keep_now;
use record::Recorder;
use start::{lock_waiting, pair_specs, recover};
use tasks::{Shared, join_all, spawn_all};

/// What to do in a pass.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Renew the selected certificates even when not due, ignoring the retry backoff.
    pub force: bool,
    /// Do everything up to the swap and change nothing on disk.
    pub dry_run: bool,
    /// Swap new pairs in without reload or verification (a first issuance by hand, before
    /// the service runs); the next pass reloads and verifies them.
    pub no_reload: bool,
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

/// Runs one pass, delivers its alerts (within [`alert::ONE_SHOT_BUDGET`]) and returns what
/// it did.
pub async fn run(config: Arc<Config>, opts: &Options) -> Result<Pass, Error> {
    let done = pass(config.clone(), opts).await?;
    deliver(&config, &done.events, alert::ONE_SHOT_BUDGET, done.started).await;
    Ok(done)
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
    /// What the pass knows of each selected certificate when it ends, so that what comes
    /// after it (the daemon's next wake-up, the metrics) need not read it back from disk.
    pub known: BTreeMap<String, Known>,
}

impl Pass {
    /// A pass stopped before it took the lock: nothing done.
    fn stopped(started: OffsetDateTime, selected: &[Certificate]) -> Pass {
        Pass {
            started,
            outcomes: selected
                .iter()
                .map(|c| (c.name.clone(), Outcome::Stopped))
                .collect(),
            events: Vec::new(),
            known: BTreeMap::new(),
        }
    }
}

/// What a pass knows of one certificate when it ends.
#[derive(Clone, Debug, Default)]
pub struct Known {
    /// Its record, as the pass left it.
    pub record: state::CertState,
    /// When a pass last found it not due (unix seconds): this one, or an earlier one.
    pub not_due_at: Option<i64>,
    /// The live leaf's notAfter, when there is a live leaf: the one the deploy wrote, or
    /// the one the plan read.
    pub not_after: Option<OffsetDateTime>,
    /// Whether the pass read (or wrote) the live leaf: when not (its recovery failed), it
    /// does not know `not_after`.
    pub leaf_known: bool,
    /// When it next needs a pass: when it becomes due, or its backoff ends.
    pub next: Option<OffsetDateTime>,
}

/// Runs one pass and returns what it did; the caller delivers the alerts (see [`deliver`]).
pub async fn pass(config: Arc<Config>, opts: &Options) -> Result<Pass, Error> {
    let now = OffsetDateTime::now_utc();
    let selected: Vec<Certificate> = config
        .certificates
        .iter()
        .filter(|c| opts.names.is_empty() || opts.names.contains(&c.name))
        .cloned()
        .collect();
    let (specs, mut unrecoverable) = pair_specs(&selected);
    // A dry run writes nothing: no state_dir is created, no lock taken, no recovery run.
    let store = if opts.dry_run {
        None
    } else {
        Some(Store::open(&config.state_dir)?)
    };
    let locked = match &store {
        Some(store) => {
            let Some(locked) = lock_waiting(store, &opts.stop).await? else {
                return Ok(Pass::stopped(now, &selected));
            };
            recover(&locked, &config, &specs, &mut unrecoverable);
            trust::advance(&config, store.state_dir(), now).await;
            Some(locked)
        }
        None => None,
    };

    // Where this pass writes; a dry run's refuses every write.
    let state_dir = match &store {
        Some(store) => store.state_dir().clone(),
        None => StateDir::read_only(&config.state_dir),
    };
    // Each selected certificate's record is read here once, under the lock.
    let kept = Arc::new(Kept::load(
        &state_dir,
        &state::Horizon::new(now, config.renewal.retry_max),
        selected.iter().map(|c| c.name.as_str()),
    ));
    let mut record = Recorder::new(&config, &kept, opts, now);
    // The fleet's etcd, connected once for the pass, when a selected certificate is shared.
    let link = fleet::Link::open(&config, &selected, opts).await;
    let shared = Shared::new(&config, &state_dir, &kept, now, link.clone());
    let (mut tasks, task_names) = spawn_all(&selected, unrecoverable, &shared, &mut record);
    let mut joined = join_all(&mut tasks, &task_names, &opts.stop, &mut record).await;
    if joined.stopping {
        stop_ready(&mut joined, &mut record).await;
    }
    // Deploys wait until every certificate is issued, so that those sharing a reload
    // command are reloaded once.
    let mut batch = Batch::of(
        joined,
        locked.is_some(),
        &specs,
        &shared.issuers,
        &mut record,
    )
    .await;
    // In config order, so that reload commands see the names as configured.
    batch
        .items
        .sort_by_key(|i| selected.iter().position(|c| c.name == i.cert.name));
    if let Some(locked) = &locked {
        batch.deploy(locked, &mut record, link.as_deref()).await;
        trust::bundles(&config, &state_dir, now).await;
    }
    record.fleet(link.as_deref(), &selected);
    if !opts.dry_run {
        kept.save();
    }
    if let Some(locked) = &locked {
        kept.save_alerted(locked);
    }
    // The lock is released first: alerts never hold up another pass. Nothing under
    // state_dir is written after this but under the lock again (see `remember_alerts`).
    drop(locked);
    Ok(record.into_pass(&selected))
}

/// Where one certificate's way before the swap ends: with an outcome, or with checked
/// material for the deploy.
enum Step {
    Done(Outcome),
    Deploy(Box<Ready>),
    /// The live pair went live unserved (see `state::CertState::unserved`): reload and
    /// verify it again, with its group.
    Reload(Box<crate::x509::Cert>),
}

/// One certificate's way before the swap: where it ends, and the live leaf's notAfter
/// (`None` when nothing is live).
struct Prepared {
    step: Step,
    live: Option<OffsetDateTime>,
}

/// One certificate's way to the deploy, the stages before the swap: plan (is it due, and
/// why), obtain (kept material first, due or not, then the issuers in order) and check.
#[allow(clippy::too_many_arguments)] // the stages' shared inputs, each borrowed once
async fn prepare(
    config: &Config,
    kept: &Kept,
    cert: &Certificate,
    issuers: &Issuers,
    trust: Option<&Trust>,
    link: Option<&fleet::Link>,
    opts: &Options,
    now: OffsetDateTime,
) -> Prepared {
    // A hold (`rollback --hold`) comes before everything: no deploy, no order, forced or not.
    if let Some((outcome, live)) = hold::held(config, kept, cert, opts, now) {
        return Prepared {
            step: Step::Done(outcome),
            live,
        };
    }
    let mut live = match plan::look(config, kept, cert, trust, opts, now) {
        Ok(live) => live,
        Err(plan::Early::Backoff { until, live }) => {
            return Prepared {
                step: Step::Done(Outcome::Backoff { until }),
                live,
            };
        }
        Err(plan::Early::Unserved(leaf)) => {
            return Prepared {
                live: Some(leaf.not_after),
                step: Step::Reload(leaf),
            };
        }
    };
    let step = match (cert.fleet && config.fleet.is_some(), link) {
        (true, Some(link)) => {
            fleet::prepare(link, config, kept, cert, issuers, opts, now, &mut live).await
        }
        // A dry run does not ask the fleet (asking may elect this host).
        (true, None) => Step::Done(Outcome::FleetWait {
            why: "a dry run does not ask the fleet's etcd".into(),
            next: None,
        }),
        (false, _) => obtain_checked(config, kept, cert, issuers, opts, now, &mut live).await,
    };
    Prepared {
        step,
        live: live.leaf.as_ref().map(|l| l.not_after),
    }
}

/// Obtain and check, after the plan.
async fn obtain_checked(
    config: &Config,
    kept: &Kept,
    cert: &Certificate,
    issuers: &Issuers,
    opts: &Options,
    now: OffsetDateTime,
    live: &mut plan::Live,
) -> Step {
    let live_not_before = live.leaf.as_ref().map(|l| l.not_before);
    let failed = |error| Step::Done(Outcome::Failed { error });

    // Material issued by an earlier pass that could not be deployed (or was rolled back)
    // goes first, due or not: it was ordered because the certificate was due then.
    if let Some(obtained) = obtain::kept_material(kept, cert) {
        match check::material(issuers, cert, obtained, live_not_before, now).await {
            Ok(ready) => {
                return match check::targets(&kept.state_dir, cert) {
                    Ok(()) => Step::Deploy(ready),
                    Err(e) => failed(e),
                };
            }
            Err(rejected) => obtain::discard_kept(kept, cert, opts, &rejected),
        }
    }
    if !opts.force
        && let Some(outcome) = plan::not_due(config, kept, cert, issuers, live, now).await
    {
        return Step::Done(outcome);
    }
    if let Err(e) = check::targets(&kept.state_dir, cert) {
        return failed(e);
    }
    if let Some(outcome) = plan::too_new(live.leaf.as_ref(), now) {
        return Step::Done(outcome);
    }
    let obtained = match obtain::issue(kept, cert, issuers, opts, now, None).await {
        Ok(obtained) => obtained,
        Err(outcome) => return Step::Done(outcome),
    };
    let (source, was_kept) = (obtained.source.clone(), obtained.kept);
    match check::material(issuers, cert, obtained, live_not_before, now).await {
        Ok(ready) => Step::Deploy(ready),
        Err(rejected) => Step::Done(obtain::refused(kept, cert, source, was_kept, rejected)),
    }
}

/// After a stop: waits for the challenge records of abandoned orders to be removed, keeps
/// the material that is ready (the next pass deploys it), and records it stopped, with the
/// retries not run.
async fn stop_ready(joined: &mut tasks::Joined, record: &mut Recorder<'_>) {
    crate::acme::dns01::settle(CLEANUP_BOUND).await;
    for (name, _) in joined.retries.drain(..) {
        record.done(name, Outcome::Stopped);
    }
    for (name, r) in joined.ready.drain(..) {
        // A generation from the fleet's etcd stays there: only an issuer's material is kept.
        let from_fleet = r.fleet.is_some() && r.issuer.is_empty();
        if !r.kept && !from_fleet && !record.opts.dry_run {
            keep_now(
                &record.kept.state_dir,
                &name,
                &r.issuer,
                &r.fullchain,
                &r.privkey,
            );
        }
        record.done(name, Outcome::Stopped);
    }
}

/// How long a stopping pass waits for the challenge records of abandoned orders to be
/// removed.
const CLEANUP_BOUND: std::time::Duration = std::time::Duration::from_secs(30);
