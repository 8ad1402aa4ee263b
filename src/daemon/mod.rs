//! `certkeeper run`: the long-running daemon. A pass at start, then a pass on each tick of
//! `renewal.schedule` (delayed by a random part of `renewal.jitter`), and also at the first
//! moment a certificate becomes due or leaves the backoff of a failure: the daemon sleeps
//! until the earliest of those and wakes for nothing else (see [`crate::schedule`]). Passes
//! are the same code as `certkeeper renew` and never overlap; the state_dir lock keeps a
//! timer-started `renew` out while a pass runs (it waits, then finds nothing to do).
//!
//! Signals: SIGHUP re-reads the config after the pass in flight; a config that does not
//! load is logged with its problems and refused, and the old one keeps running, schedule
//! included; a good one is taken and a pass runs at once. SIGTERM and SIGINT stop the pass
//! in flight safely (see [`Options::stop`]) and the daemon exits 0. A second SIGTERM/SIGINT
//! while stopping exits at once with 1; the store's recovery finishes or undoes what was
//! interrupted on the next start. `run --once` is `renew`.
//!
//! With a certificate that has `verify.tls_connect`, the daemon also probes what is served
//! every `probe_interval` (the first probe right after the first pass): one more wake-up per
//! interval, none without such a certificate. The findings go to `/metrics`, and a served
//! leaf that is not the live one for longer than `drift_after` raises `drift` (see
//! [`crate::probe`]). A probe round never overlaps a pass.
//!
//! tokio-cron-scheduler is not used to fire the passes: its scheduler loop wakes every
//! 500 ms to look at its jobs (120 wake-ups a minute while nothing is due), and it does not
//! know about backoffs and due times. The daemon sleeps on one timer instead, with the cron
//! expression parsed exactly as tokio-cron-scheduler parses it.

mod fleet;
mod http;
mod notify;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics;
use crate::pass::{self, Options};
use crate::probe;
use crate::schedule;
use crate::text::rfc3339;

pub use http::{CONTENT_TYPE, HEADER_TIMEOUT};
pub use notify::Notifier;

/// How the daemon runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The config file, re-read on SIGHUP.
    pub config_path: PathBuf,
    /// Serve `/metrics` here.
    pub metrics_listen: Option<SocketAddr>,
}

/// How long the daemon keeps retrying an alert in the background.
pub const ALERT_BUDGET: Duration = Duration::from_secs(300);
/// How long a stopping daemon waits for alerts still being delivered.
pub const STOP_ALERT_BUDGET: Duration = Duration::from_secs(10);
/// Margin after a certificate's due time or backoff end, so that the pass that wakes for it
/// is never a hair early.
const WAKE_MARGIN: time::Duration = time::Duration::seconds(1);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `--metrics-listen` could not be bound.
    #[error("--metrics-listen {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A signal handler could not be installed.
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Runs the daemon until SIGTERM or SIGINT stops it; `Ok` is a clean stop (exit 0).
pub async fn run(config: Config, settings: Settings) -> Result<(), StartError> {
    let mut config = Arc::new(config);
    let mut hup = signal(SignalKind::hangup()).map_err(StartError::Signals)?;
    let mut term = signal(SignalKind::terminate()).map_err(StartError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(StartError::Signals)?;
    let notifier = Notifier::from_env();
    let watchdog = notify::watchdog_interval();

    let (shown_tx, shown_rx) = watch::channel(http::Shown {
        config: config.clone(),
        last: None,
        served: Arc::default(),
    });
    let mut background = JoinSet::new();
    if let Some(addr) = settings.metrics_listen {
        let listener = http::bind(addr)
            .await
            .map_err(|source| StartError::Listen { addr, source })?;
        tracing::info!(%addr, "Serving /metrics.");
        background.spawn(http::serve(listener, shown_rx));
    }

    let stop = CancellationToken::new();
    notifier.ready("Running the first pass");
    tracing::info!(
        certificates = config.certificates.len(),
        schedule = %config.renewal.schedule,
        "certkeeper daemon started."
    );
    let mut ticker = watchdog.map(|every| {
        let mut t = tokio::time::interval(every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut alerts = JoinSet::new();
    let mut run_now = true;
    // Only these certificates in the next pass (news from the fleet); all when `None`.
    let mut focus: Option<BTreeSet<String>> = None;
    let mut watches = fleet::Watches::start(&config);
    let mut reload_pending = false;
    let mut wake: Option<OffsetDateTime> = None;
    // When each certificate next needs a pass, as the last pass that had it said.
    let mut moments: BTreeMap<String, OffsetDateTime> = BTreeMap::new();
    let mut last = String::from("No pass yet");
    let mut tracker = probe::Tracker::default();
    // The system's roots, read once, the first time a served chain needs them.
    let system = Arc::new(crate::x509::TrustStore::system_on_demand());
    let mut next_probe = probe::any(&config).then(tokio::time::Instant::now);

    loop {
        if run_now && !stop.is_cancelled() {
            run_now = false;
            notifier.status("Renewal pass running");
            let started = Instant::now();
            let focused = focus.take();
            let opts = Options {
                stop: stop.clone(),
                names: focused.iter().flatten().cloned().collect(),
                ..Options::default()
            };
            let pass = pass::pass(config.clone(), &opts);
            tokio::pin!(pass);
            let result = loop {
                tokio::select! {
                    r = &mut pass => break r,
                    _ = term.recv() => stopping(&stop, &notifier, "SIGTERM"),
                    _ = int.recv() => stopping(&stop, &notifier, "SIGINT"),
                    _ = hup.recv() => {
                        tracing::info!("SIGHUP: the config is re-read when the pass in flight ends.");
                        reload_pending = true;
                    }
                    _ = tick(&mut ticker) => notifier.watchdog(),
                }
            };
            let finished = OffsetDateTime::now_utc();
            let (outcomes, known, failure) = match result {
                Ok(done) => {
                    if !done.events.is_empty() {
                        if stop.is_cancelled() {
                            pass::deliver(&config, &done.events, STOP_ALERT_BUDGET, done.started)
                                .await;
                        } else {
                            let (config, events, at) = (config.clone(), done.events, done.started);
                            alerts.spawn(async move {
                                pass::deliver(&config, &events, ALERT_BUDGET, at).await
                            });
                        }
                    }
                    (done.outcomes, done.known, None)
                }
                Err(e) => {
                    tracing::error!("The pass could not run: {e}");
                    let failure = Some(format!("the pass could not run: {e}"));
                    (Vec::new(), BTreeMap::new(), failure)
                }
            };
            let pass_metrics = metrics::Pass::of(&outcomes, started.elapsed(), finished);
            let summary = failure.unwrap_or_else(|| summarize(&pass_metrics.outcomes));
            shown_tx.send_modify(|s| s.last = Some(pass_metrics));
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "Pass done: {summary}."
            );
            match &focused {
                Some(names) => moments.retain(|name, _| !names.contains(name)),
                None => moments.clear(),
            }
            moments.extend(wake_moments(&known));
            wake = None;
            last = format!("Last pass {}: {summary}", rfc3339(finished));
            if stop.is_cancelled() {
                break;
            }
        }
        if reload_pending {
            reload_pending = false;
            if let Some(new) = reload(&settings.config_path, &notifier) {
                config = Arc::new(new);
                shown_tx.send_modify(|s| s.config = config.clone());
                watches = fleet::Watches::start(&config);
                next_probe = probe::any(&config)
                    .then(|| next_probe.unwrap_or_else(tokio::time::Instant::now));
                run_now = true;
                focus = None;
                continue;
            }
        }
        if stop.is_cancelled() {
            break;
        }
        let wake_at = match wake {
            Some(w) => w,
            None => {
                let now = OffsetDateTime::now_utc();
                let next_pass =
                    config.renewal.schedule.next_after(now).map(|t| {
                        schedule::jittered(t, config.renewal.jitter, schedule::random_pick())
                    });
                let w = schedule::next_wake(now, next_pass, moments.values().copied())
                    .unwrap_or_else(|| {
                        tracing::warn!(schedule = %config.renewal.schedule, "The schedule never fires again and nothing is due; waiting for a signal.");
                        // Far enough to mean "never" without overflowing the timer.
                        now + time::Duration::days(365 * 100)
                    });
                tracing::info!(next = %rfc3339(w), "Next pass.");
                notifier.status(&format!("{last}; next pass {}", rfc3339(w)));
                w
            }
        };
        wake = Some(wake_at);
        let sleep = sleep_until(wake_at);
        tokio::select! {
            _ = sleep => {
                run_now = true;
                focus = None;
            }
            names = fleet::Watches::next(&mut watches) => {
                // News from the fleet: a pass for those certificates now (a pass of all,
                // when one was due anyway, is not narrowed).
                run_now = true;
                focus = Some(names);
                wake = None;
            }
            _ = term.recv() => stopping(&stop, &notifier, "SIGTERM"),
            _ = int.recv() => stopping(&stop, &notifier, "SIGINT"),
            _ = hup.recv() => reload_pending = true,
            _ = tick(&mut ticker) => notifier.watchdog(),
            Some(_) = alerts.join_next() => {}
            _ = at_instant(next_probe) => {
                let trust = crate::inventory::Trust::with_system(&config, system.clone());
                let findings = match &trust {
                    Err(e) => {
                        tracing::error!("Cannot judge the served chains: {}: {}", e.key, e.message);
                        None
                    }
                    Ok(trust) => {
                        let measuring = probe::measure(&config, trust, &[]);
                        tokio::pin!(measuring);
                        loop {
                            tokio::select! {
                                f = &mut measuring => break Some(f),
                                _ = term.recv() => { stopping(&stop, &notifier, "SIGTERM"); break None }
                                _ = int.recv() => { stopping(&stop, &notifier, "SIGINT"); break None }
                                _ = hup.recv() => reload_pending = true,
                                _ = tick(&mut ticker) => notifier.watchdog(),
                            }
                        }
                    }
                };
                if let Some(findings) = findings {
                    let horizon = crate::state::Horizon::of(&config);
                    let alerted = crate::state::load_alerted(&config.state_dir, &horizon);
                    let events = tracker.update(&config, findings, &alerted, OffsetDateTime::now_utc());
                    let served = Arc::new(tracker.findings().to_vec());
                    shown_tx.send_modify(|s| s.served = served);
                    if !events.is_empty() {
                        let config = config.clone();
                        alerts.spawn(async move { probe::deliver(&config, &events, ALERT_BUDGET).await });
                    }
                }
                next_probe = Some(tokio::time::Instant::now() + config.probe.interval);
            }
        }
    }

    // Alerts still being delivered get a bounded time; the listener just ends.
    let deadline = tokio::time::Instant::now() + STOP_ALERT_BUDGET;
    while !alerts.is_empty() {
        let next = tokio::select! {
            n = alerts.join_next() => n,
            _ = tokio::time::sleep_until(deadline) => None,
            _ = term.recv() => None,
            _ = int.recv() => None,
        };
        if next.is_none() {
            break;
        }
    }
    alerts.abort_all();
    background.abort_all();
    tracing::info!("certkeeper daemon stopped.");
    Ok(())
}

/// Handles SIGTERM/SIGINT: the first asks the pass to stop, a second exits at once.
fn stopping(stop: &CancellationToken, notifier: &Notifier, signal: &str) {
    if stop.is_cancelled() {
        tracing::warn!(
            "{signal} again while stopping: exiting now; the next start recovers whatever was interrupted."
        );
        std::process::exit(1);
    }
    tracing::info!("{signal}: stopping after the step in flight.");
    notifier.stopping();
    stop.cancel();
}

/// Re-reads the config; `None` (and the problems logged) when it is refused.
fn reload(path: &Path, notifier: &Notifier) -> Option<Config> {
    notifier.reloading();
    match Config::load(path).map_err(|e| e.lines()) {
        Ok(config) => {
            for w in &config.warnings {
                tracing::warn!("{w}");
            }
            tracing::info!(
                certificates = config.certificates.len(),
                schedule = %config.renewal.schedule,
                "Config reloaded; running a pass with it now."
            );
            notifier.ready("Config reloaded");
            Some(config)
        }
        Err(problems) => {
            for p in &problems {
                tracing::error!("{p}");
            }
            tracing::error!(
                problems = problems.len(),
                "Refused the new config; the old one keeps running, schedule included."
            );
            notifier.ready(&format!(
                "Refused the new config ({} problem{}); running the old one",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            ));
            None
        }
    }
}

/// The moments after a pass at which a certificate's state changes without any pass: when a
/// not-due one becomes due, when a failed one's backoff ends, and when a renewed one will be
/// due. The pass says each (`Known::next`); nothing is read back from disk.
fn wake_moments(known: &BTreeMap<String, pass::Known>) -> BTreeMap<String, OffsetDateTime> {
    known
        .iter()
        .filter_map(|(name, k)| k.next.map(|m| (name.clone(), m + WAKE_MARGIN)))
        .collect()
}

/// "2 renewed, 5 not due", from a pass's counts.
fn summarize(counts: &[(&'static str, usize)]) -> String {
    if counts.is_empty() {
        return "no certificates".to_owned();
    }
    counts
        .iter()
        .map(|(w, n)| format!("{n} {}", w.replace('_', " ")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sleeps until a wall-clock moment (on the monotonic clock, measured from now).
async fn sleep_until(at: OffsetDateTime) {
    let left = at - OffsetDateTime::now_utc();
    let left = Duration::try_from(left).unwrap_or(Duration::ZERO);
    tokio::time::sleep(left).await
}

/// Sleeps until `at`, or forever without it.
async fn at_instant(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The watchdog's next tick, or never without a watchdog.
async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pass::Outcome;

    #[test]
    fn summaries_count_outcomes_in_a_stable_order() {
        let t = OffsetDateTime::UNIX_EPOCH;
        let outcomes = vec![
            ("a".to_owned(), Outcome::NotDue { renew_after: t }),
            (
                "b".to_owned(),
                Outcome::Failed {
                    error: crate::pass::Failure::Internal("x".into()),
                },
            ),
            ("c".to_owned(), Outcome::NotDue { renew_after: t }),
        ];
        let pass = metrics::Pass::of(&outcomes, Duration::ZERO, t);
        assert_eq!(summarize(&pass.outcomes), "1 failed, 2 not due");
        assert_eq!(summarize(&[]), "no certificates");
    }
}
