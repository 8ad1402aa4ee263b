//! Plan and obtain for every selected certificate at once, each in a task of its own, up
//! to `renewal.concurrency`; one failure (or panic) never stops the others.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Failure;
use super::Outcome;
use super::check::Ready;
use super::kept::Kept;
use super::record::Recorder;
use super::{Prepared, Step, prepare};
use crate::config::{Certificate, Config};
use crate::inventory::Trust;
use crate::issuer::Issuers;
use crate::store::StateDir;
use crate::x509::Cert;

/// What every certificate's task shares.
#[derive(Clone)]
pub(super) struct Shared {
    config: Arc<Config>,
    kept: Arc<Kept>,
    pub(super) issuers: Arc<Issuers>,
    /// The roots that judge live chains; `None` when they cannot be read.
    trust: Option<Arc<Trust>>,
    /// At most `renewal.concurrency` certificates are planned and obtained at once.
    limit: Arc<Semaphore>,
    now: OffsetDateTime,
    /// The fleet's etcd and key, when a selected certificate is shared.
    fleet: Option<Arc<super::fleet::Link>>,
}

impl Shared {
    pub(super) fn new(
        config: &Arc<Config>,
        state_dir: &StateDir,
        kept: &Arc<Kept>,
        now: OffsetDateTime,
        fleet: Option<Arc<super::fleet::Link>>,
    ) -> Shared {
        // The platform's roots, read once for the issuers and for judging live chains, and
        // only when a chain needs them.
        let system = Arc::new(crate::x509::TrustStore::system_on_demand());
        let issuers = Arc::new(Issuers::new(
            config.clone(),
            state_dir.clone(),
            system.clone(),
            now,
        ));
        // What `check` would call CRITICAL is due now; without the roots that judges chains,
        // only the dates decide.
        let trust = match Trust::with_system(config, system) {
            Ok(t) => Some(Arc::new(t)),
            Err(e) => {
                tracing::warn!("Broken live certificates are judged by their dates only: {e}");
                None
            }
        };
        Shared {
            config: config.clone(),
            kept: kept.clone(),
            issuers,
            trust,
            limit: Arc::new(Semaphore::new(config.renewal.concurrency)),
            now,
            fleet,
        }
    }
}

/// The tasks of a pass, each giving its certificate's name and step.
pub(super) type Tasks = JoinSet<(String, Prepared)>;

/// Starts each selected certificate's plan and obtain in a task of its own; one that failed
/// already (its pair spec, its recovery) is recorded instead. Returns the tasks and the
/// certificate each one is for.
pub(super) fn spawn_all(
    selected: &[Certificate],
    mut unrecoverable: BTreeMap<String, Failure>,
    shared: &Shared,
    record: &mut Recorder<'_>,
) -> (Tasks, HashMap<tokio::task::Id, String>) {
    let mut tasks = JoinSet::new();
    let mut task_names = HashMap::new();
    for cert in selected.iter().cloned() {
        if let Some(error) = unrecoverable.remove(&cert.name) {
            let outcome = Outcome::Failed { error };
            record.done(cert.name.clone(), outcome);
            continue;
        }
        let (s, opts) = (shared.clone(), record.opts.clone());
        let task_name = cert.name.clone();
        // Every log line of this certificate's work carries its name.
        let span = tracing::info_span!("certificate", cert = %cert.name);
        let handle = tasks.spawn(
            async move {
                let name = cert.name.clone();
                // The semaphore is never closed, so acquiring only waits.
                let _permit = s.limit.acquire_owned().await;
                let trust = s.trust.as_deref();
                // Boxed: each task's future stays small, so spawning a thousand of them
                // moves little memory (measured: about 3% of a no-op pass's CPU).
                let prepared = Box::pin(prepare(
                    &s.config,
                    &s.kept,
                    &cert,
                    &s.issuers,
                    trust,
                    s.fleet.as_deref(),
                    &opts,
                    s.now,
                ))
                .await;
                (name, prepared)
            }
            .instrument(span),
        );
        task_names.insert(handle.id(), task_name);
    }
    (tasks, task_names)
}

/// What the tasks left for the deploy.
pub(super) struct Joined {
    /// The material ready to deploy, by certificate.
    pub(super) ready: Vec<(String, Box<Ready>)>,
    /// The live leaves to reload and verify again (see `Step::Reload`).
    pub(super) retries: Vec<(String, Box<Cert>)>,
    /// Whether the pass was asked to stop meanwhile.
    pub(super) stopping: bool,
}

/// Waits for every task: each outcome is recorded as it comes, and what is left for the
/// deploy is returned.
pub(super) async fn join_all(
    tasks: &mut Tasks,
    task_names: &HashMap<tokio::task::Id, String>,
    stop: &CancellationToken,
    record: &mut Recorder<'_>,
) -> Joined {
    let mut ready: Vec<(String, Box<Ready>)> = Vec::new();
    let mut retries = Vec::new();
    let mut stopping = false;
    loop {
        let joined = tokio::select! {
            joined = tasks.join_next_with_id() => joined,
            _ = stop.cancelled(), if !stopping => {
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
            Ok((_, (name, prepared))) => {
                record.live(&name, prepared.live);
                (name, prepared.step)
            }
            // A panic is a bug, but it still counts as this certificate's failure.
            Err(e) => match task_names.get(&e.id()) {
                Some(name) => (
                    name.clone(),
                    Step::Done(Outcome::Failed {
                        error: Failure::Internal(e.to_string()),
                    }),
                ),
                None => continue,
            },
        };
        match step {
            Step::Done(outcome) => record.done(name, outcome),
            Step::Deploy(r) => ready.push((name, r)),
            Step::Reload(leaf) => retries.push((name, leaf)),
        }
    }
    Joined {
        ready,
        retries,
        stopping,
    }
}
