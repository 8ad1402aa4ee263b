//! The daemon's watches on the fleet's etcd: one on each shared certificate's `current`
//! key, so that a new generation or a verdict starts a pass for that certificate at once
//! instead of at the next tick of `renewal.schedule`. The watches wake the daemon for news
//! only: with nothing published, nothing wakes it (but once when they start, to catch up with
//! what was published while they started). They resume from the last revision seen
//! after a broken link; a daemon that cannot reach etcd at start tries again, less and less
//! often (from `lease_ttl` up to [`CONNECT_PAUSE_MAX`]).

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::config::{self, Config};
use crate::fleet::{Timeouts, connect};

/// The longest pause between two attempts to connect the watches.
const CONNECT_PAUSE_MAX: Duration = Duration::from_secs(300);

/// The running watches of one config; dropping them ends them.
pub(super) struct Watches {
    rx: mpsc::Receiver<String>,
    task: JoinHandle<()>,
}

impl Drop for Watches {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watches {
    /// Starts watching each shared certificate of `config`; `None` without a `fleet:`
    /// section or a shared certificate.
    pub(super) fn start(config: &Config) -> Option<Watches> {
        let section = config.fleet.clone()?;
        let shared: Vec<String> = config
            .certificates
            .iter()
            .filter(|c| c.fleet)
            .map(|c| c.name.clone())
            .collect();
        if shared.is_empty() {
            return None;
        }
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(watch_all(section, shared, tx));
        Some(Watches { rx, task })
    }

    /// Waits for news of some certificates and returns their names (all the news there
    /// is, so that one pass takes it all); never returns without watches.
    pub(super) async fn next(watches: &mut Option<Watches>) -> BTreeSet<String> {
        let Some(w) = watches else {
            return std::future::pending().await;
        };
        let Some(first) = w.rx.recv().await else {
            return std::future::pending().await;
        };
        let mut names = BTreeSet::from([first]);
        while let Ok(more) = w.rx.try_recv() {
            names.insert(more);
        }
        names
    }
}

/// Connects (again and again until it can) and forwards the name of each certificate whose
/// `current` key changes to `tx`.
async fn watch_all(section: config::Fleet, shared: Vec<String>, tx: mpsc::Sender<String>) {
    let mut pause = section.lease_ttl;
    let fleet = loop {
        match connect(&section, Timeouts::WATCH).await {
            Ok(fleet) => break fleet,
            Err(e) => {
                tracing::warn!(
                    "Fleet {}: cannot watch etcd for new generations ({e}); trying again in {}s",
                    section.name,
                    pause.as_secs()
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(CONNECT_PAUSE_MAX);
            }
        }
    };
    // Dropped with this task: each watch ends with it.
    let mut watches = JoinSet::new();
    let mut watched = Vec::new();
    for name in shared {
        let mut watch = match fleet.watch_current(&name, None) {
            Ok(watch) => watch,
            Err(e) => {
                tracing::warn!(cert = %name, "Fleet: cannot watch etcd for new generations: {e}");
                continue;
            }
        };
        watched.push(name.clone());
        let tx = tx.clone();
        watches.spawn(async move {
            while let Some(news) = watch.next().await {
                match news {
                    Ok((g, _)) => tracing::info!(
                        cert = %name,
                        serial = g.serial,
                        "Fleet: generation {} changed in etcd ({}); a pass for it now.",
                        g.serial,
                        verdict_word(&g.verdict)
                    ),
                    Err(e) => tracing::warn!(
                        cert = %name,
                        "Fleet: unreadable news from etcd ({}); a pass for it now.",
                        crate::fleet::connect::brief(&e)
                    ),
                }
                if tx.send(name.clone()).await.is_err() {
                    return;
                }
            }
        });
    }
    tracing::info!("Fleet {}: watching etcd for new generations.", section.name);
    // The watches start from now, while the first pass (or the pass after a reload) runs
    // beside them: what was published between that pass's read and now would wait for the
    // schedule. One pass for the watched certificates catches up with it.
    for name in watched {
        if tx.send(name).await.is_err() {
            return;
        }
    }
    while watches.join_next().await.is_some() {}
    // Keeps the connection until every watch ended.
    drop(fleet);
}

/// A verdict in one word, for the log.
fn verdict_word(v: &certkeeper_fleet::Verdict) -> &'static str {
    match v {
        certkeeper_fleet::Verdict::Pending => "pending",
        certkeeper_fleet::Verdict::Good { .. } => "good",
        certkeeper_fleet::Verdict::Bad { .. } => "bad",
    }
}
