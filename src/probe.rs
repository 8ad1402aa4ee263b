//! The standing measurement of what clients are served: for every certificate with
//! `verify.tls_connect`, one TLS connection that records the handshake time, the chain as
//! sent (bytes, length, complete to a trusted root), the served leaf's notAfter and whether
//! it is the live leaf. The daemon probes every `probe_interval` and serves the findings on
//! `/metrics`; `check --probe` probes once.
//!
//! Drift: when the served leaf has not been the live one for longer than
//! `drift_after` (someone put another certificate in place, or a reload never
//! happened), [`Tracker`] raises `drift`, once per `alert_repeat`, and `drift_resolved` when
//! the live leaf is served again. When a mismatch was first seen is kept in the daemon's
//! memory: a restarted daemon starts the clock again at its first probe. That a `drift` was
//! delivered is kept in the alert memory (`state_dir/alerted.json`), so a restart neither
//! repeats it within `alert_repeat` nor loses its `drift_resolved`.
//!
//! A probe that fails (nothing listening, a handshake error) is reported as such; it says
//! nothing about drift, whose clock neither starts nor stops on it.

use std::collections::BTreeMap;
use std::time::Duration;

use time::OffsetDateTime;

use crate::alert;
use crate::config::{Certificate, Config, EventKind};
use crate::deploy::verify::probe_timed;
use crate::inventory::{ServedReport, Trust};
use crate::state;
use crate::store::{self, Store};
use crate::text::{escape_control, rfc3339, seconds, short_fingerprint};
use crate::x509::{TrustStore, examine_chain, leaf_of_file};

/// One probe of one certificate.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// The certificate's name.
    pub name: String,
    /// When the probe started.
    pub at: OffsetDateTime,
    /// What it found.
    pub report: ServedReport,
    /// The served leaf's notAfter, when a leaf was served.
    pub not_after: Option<OffsetDateTime>,
}

impl Finding {
    /// Whether a chain was served (the probe did not fail).
    pub fn served(&self) -> bool {
        self.report.error.is_none()
    }
}

/// Whether some certificate of `config` has a `verify.tls_connect` to probe.
pub fn any(config: &Config) -> bool {
    config.certificates.iter().any(|c| target(c).is_some())
}

/// Probes every certificate of `config` with a `verify.tls_connect` (only those in `names`
/// when it is not empty), all at once, each within its `verify.timeout`; the findings in
/// config order. Chains are judged against the roots `trust` has for each certificate's
/// issuers, with nothing fetched.
pub async fn measure(config: &Config, trust: &Trust, names: &[String]) -> Vec<Finding> {
    let jobs = config
        .certificates
        .iter()
        .filter(|c| names.is_empty() || names.contains(&c.name))
        .filter_map(|c| {
            target(c).map(|(connect, server_name, timeout)| {
                measure_one(
                    c,
                    connect,
                    server_name,
                    timeout,
                    trust.for_issuers(&c.issuers),
                )
            })
        });
    futures_util::future::join_all(jobs).await
}

/// Where a certificate is probed: `verify.tls_connect`, the SNI name and the time limit.
fn target(cert: &Certificate) -> Option<(&str, &str, Duration)> {
    let v = cert.verify.as_ref()?;
    let connect = v.tls_connect.as_deref()?;
    Some((connect, v.server_name.as_str(), v.timeout))
}

async fn measure_one(
    cert: &Certificate,
    connect: &str,
    server_name: &str,
    timeout: Duration,
    trust: &TrustStore,
) -> Finding {
    let at = OffsetDateTime::now_utc();
    let mut report = ServedReport {
        connect: connect.to_owned(),
        server_name: server_name.to_owned(),
        ..ServedReport::default()
    };
    let mut not_after = None;
    match probe_timed(connect, server_name, timeout).await {
        Err(e) => report.error = Some(e.detail()),
        Ok((chain, handshake)) => {
            let (_, problems) = examine_chain(&chain, trust, OffsetDateTime::now_utc());
            report.handshake_seconds = Some(handshake.as_secs_f64());
            report.chain_length = Some(chain.len());
            report.chain_bytes = Some(chain.iter().map(|c| c.der.len()).sum());
            report.complete = Some(problems.is_empty());
            report.chain_problems = problems
                .iter()
                .map(|p| escape_control(&p.to_string()))
                .collect();
            if let Some(leaf) = chain.first() {
                not_after = Some(leaf.not_after);
                report.not_after = Some(rfc3339(leaf.not_after));
                report.fingerprint = Some(leaf.fingerprint.clone());
                // Read at each probe: the live files change with every deploy.
                report.matches_live = leaf_of_file(&cert.fullchain)
                    .ok()
                    .map(|live| live.fingerprint == leaf.fingerprint);
            }
        }
    }
    Finding {
        name: cert.name.clone(),
        at,
        report,
        not_after,
    }
}

/// What the daemon keeps between probes: the last findings, and since when each drifting
/// certificate's served leaf has not been the live one.
#[derive(Debug, Default)]
pub struct Tracker {
    last: Vec<Finding>,
    drifting: BTreeMap<String, Drifting>,
}

/// One certificate whose served leaf is not the live one.
#[derive(Clone, Copy, Debug)]
struct Drifting {
    /// The first probe that saw it.
    since: OffsetDateTime,
    /// When this daemon last raised `drift` for it (unix seconds).
    raised: Option<i64>,
}

impl Tracker {
    /// The last probe's findings, in config order.
    pub fn findings(&self) -> &[Finding] {
        &self.last
    }

    /// Takes one round of findings (made at `now`, under `config`), given the alert memory
    /// `alerted`, and returns the events it raises: `drift` for a certificate whose served
    /// leaf has not been the live one for longer than `drift_after` (once per
    /// `alert_repeat`), `drift_resolved` when one that raised `drift` serves the live leaf
    /// again. Without alert channels, the drift is only logged.
    pub fn update(
        &mut self,
        config: &Config,
        findings: Vec<Finding>,
        alerted: &state::Alerted,
        now: OffsetDateTime,
    ) -> Vec<(alert::Event, bool)> {
        self.drifting
            .retain(|name, _| config.certificate(name).is_some());
        let mut events = Vec::new();
        for f in &findings {
            let Some(cert) = config.certificate(&f.name) else {
                continue;
            };
            let remembered = alerted.get(&f.name);
            match f.report.matches_live {
                Some(false) => {
                    if let Some(e) = self.drifted(config, cert, f, remembered, now) {
                        events.push((e, false));
                    }
                }
                Some(true) => {
                    let was = self.drifting.remove(&f.name);
                    let raised = was.is_some_and(|d| d.raised.is_some())
                        || remembered.is_some_and(|m| m.contains_key(EventKind::Drift.as_str()));
                    if was.is_some() || raised {
                        tracing::info!(cert = %f.name, "The service serves the live certificate again.");
                    }
                    if raised && !config.alerts.is_empty() {
                        let message = format!(
                            "{} at {} serves the live certificate again (sha256 {}…)",
                            f.report.server_name,
                            f.report.connect,
                            short_fingerprint(f.report.fingerprint.as_deref().unwrap_or_default())
                        );
                        let mut e = alert::Event::drift(cert, &message, true);
                        e.not_after = f.report.not_after.clone();
                        events.push((e, false));
                    }
                }
                // The probe failed or the live leaf cannot be read: nothing to say of drift.
                None => {}
            }
            if let Some(why) = &f.report.error {
                tracing::warn!(cert = %f.name, connect = %f.report.connect, "The probe of the served certificate failed: {why}");
            }
        }
        self.last = findings;
        events
    }

    /// Notes a served leaf that is not the live one; `drift` when it has lasted longer than
    /// `drift_after` and is due.
    fn drifted(
        &mut self,
        config: &Config,
        cert: &Certificate,
        f: &Finding,
        remembered: Option<&BTreeMap<String, i64>>,
        now: OffsetDateTime,
    ) -> Option<alert::Event> {
        let d = self.drifting.entry(f.name.clone()).or_insert_with(|| {
            tracing::warn!(cert = %f.name, connect = %f.report.connect, "The served leaf is not the live one; `drift` alerts if it lasts longer than drift_after.");
            Drifting {
                since: now,
                raised: None,
            }
        });
        let lasted = now - d.since;
        if lasted <= config.probe.drift_after {
            return None;
        }
        let mut memory = remembered.cloned().unwrap_or_default();
        if let Some(t) = d.raised {
            let kept = memory
                .entry(EventKind::Drift.as_str().to_owned())
                .or_insert(t);
            *kept = (*kept).max(t);
        }
        let t = now.unix_timestamp();
        if !alert::due(&memory, EventKind::Drift, None, t, config.alert_repeat) {
            return None;
        }
        d.raised = Some(t);
        let live = leaf_of_file(&cert.fullchain).ok();
        let message = format!(
            "{} at {} has served leaf sha256 {}… notAfter {} for {}, not the live one sha256 {}… notAfter {}: another certificate is in place, or the service was not reloaded",
            f.report.server_name,
            f.report.connect,
            short_fingerprint(f.report.fingerprint.as_deref().unwrap_or_default()),
            f.report.not_after.as_deref().unwrap_or("-"),
            seconds(Duration::try_from(lasted).unwrap_or_default()),
            short_fingerprint(live.as_ref().map_or("-", |l| l.fingerprint.as_str())),
            live.as_ref()
                .map_or_else(|| "-".to_owned(), |l| rfc3339(l.not_after)),
        );
        tracing::warn!(cert = %f.name, "Drift: {message}.");
        if config.alerts.is_empty() {
            return None;
        }
        let mut e = alert::Event::drift(cert, &message, false);
        e.not_after = live.map(|l| rfc3339(l.not_after));
        Some(e)
    }
}

/// Delivers the events of one round within `budget`, then notes in the alert memory, under
/// the state_dir lock (waited for within `budget`), the `drift` that reached a channel and
/// the `drift_resolved` that ends one.
pub async fn deliver(config: &Config, events: &[(alert::Event, bool)], budget: Duration) {
    if events.is_empty() {
        return;
    }
    let reports = alert::Alerts::new(config).deliver(events, budget).await;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let changes: Vec<(&str, bool)> = events
        .iter()
        .map(|(e, _)| e)
        .filter(|e| {
            e.is_drift_resolved()
                || reports.iter().any(|r| {
                    r.certificate == e.certificate && r.event == e.event && r.result.is_ok()
                })
        })
        .map(|e| (e.certificate.as_str(), e.is_drift_resolved()))
        .collect();
    if changes.is_empty() {
        return;
    }
    let remembered = async {
        let store = Store::open(&config.state_dir)?;
        let deadline = tokio::time::Instant::now() + budget;
        let locked = loop {
            match store.try_lock() {
                Ok(l) => break l,
                Err(store::Error::Locked { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(LOCK_POLL).await;
                }
                Err(e) => return Err(e),
            }
        };
        let mut alerted = state::load_alerted(&config.state_dir, &state::Horizon::of(config));
        for (name, resolved) in changes {
            let memory = alerted.entry(name.to_owned()).or_default();
            if resolved {
                memory.remove(EventKind::Drift.as_str());
            } else {
                alert::remember(memory, EventKind::Drift, None, now);
            }
        }
        alerted.retain(|_, m| !m.is_empty());
        state::save_alerted(&locked, &alerted)
    };
    if let Err(e) = remembered.await {
        tracing::warn!("Cannot note the drift alerts in the state directory: {e}");
    }
}

/// How often the alert memory's lock is tried while another pass holds it.
const LOCK_POLL: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path, alerts: bool) -> Config {
        let mut yaml = String::from(
            "state_dir: state\n\
             issuers:\n  internal:\n    type: local-ca\n\
             probe_interval: 1s\ndrift_after: 3s\n\
             certificates:\n  - name: web\n    domains: [web.test]\n    issuer: internal\n    \
             fullchain: live/fullchain.pem\n    privkey: live/privkey.pem\n    \
             verify: { tls_connect: \"127.0.0.1:9\", server_name: web.test }\n",
        );
        if alerts {
            yaml.push_str("alerts:\n  - type: webhook\n    url: https://hooks.test/x\n");
        }
        Config::from_yaml(&yaml, &dir.join("config.yaml")).unwrap()
    }

    fn finding(matches_live: Option<bool>) -> Finding {
        Finding {
            name: "web".into(),
            at: OffsetDateTime::UNIX_EPOCH,
            report: ServedReport {
                connect: "127.0.0.1:9".into(),
                server_name: "web.test".into(),
                fingerprint: Some("ab".repeat(32)),
                matches_live,
                ..ServedReport::default()
            },
            not_after: None,
        }
    }

    /// The events of one round at `t` seconds, as their names.
    fn round(
        tracker: &mut Tracker,
        config: &Config,
        matches_live: Option<bool>,
        alerted: &state::Alerted,
        t: i64,
    ) -> Vec<&'static str> {
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_000_000 + t);
        tracker
            .update(config, vec![finding(matches_live)], alerted, now)
            .into_iter()
            .map(|(e, _)| e.event)
            .collect()
    }

    #[test]
    fn drift_alerts_once_after_drift_after_and_resolves_once() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), true);
        let none = state::Alerted::new();
        let mut t = Tracker::default();
        assert!(round(&mut t, &config, Some(true), &none, 0).is_empty());
        assert!(round(&mut t, &config, Some(false), &none, 1).is_empty());
        // A failed probe neither starts nor stops the clock.
        assert!(round(&mut t, &config, None, &none, 2).is_empty());
        assert!(
            round(&mut t, &config, Some(false), &none, 4).is_empty(),
            "3s is not longer than drift_after"
        );
        assert_eq!(round(&mut t, &config, Some(false), &none, 5), ["drift"]);
        assert!(
            round(&mut t, &config, Some(false), &none, 6).is_empty(),
            "once per alert_repeat"
        );
        assert!(round(&mut t, &config, Some(false), &none, 600).is_empty());
        assert_eq!(
            round(&mut t, &config, Some(true), &none, 601),
            ["drift_resolved"]
        );
        assert!(round(&mut t, &config, Some(true), &none, 602).is_empty());
        // A mismatch that ends before drift_after raises nothing, and its clock starts anew.
        assert!(round(&mut t, &config, Some(false), &none, 700).is_empty());
        assert!(round(&mut t, &config, Some(true), &none, 702).is_empty());
        assert!(round(&mut t, &config, Some(false), &none, 703).is_empty());
        assert!(round(&mut t, &config, Some(false), &none, 706).is_empty());
        assert_eq!(round(&mut t, &config, Some(false), &none, 707), ["drift"]);
        assert_eq!(t.findings().len(), 1);
    }

    #[test]
    fn the_alert_memory_carries_drift_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), true);
        let now = 1_000_000;
        let mut alerted = state::Alerted::new();
        alert::remember(
            alerted.entry("web".into()).or_default(),
            EventKind::Drift,
            None,
            now,
        );
        // A new daemon: the drift delivered before is not repeated within alert_repeat...
        let mut t = Tracker::default();
        assert!(round(&mut t, &config, Some(false), &alerted, 0).is_empty());
        assert!(round(&mut t, &config, Some(false), &alerted, 10).is_empty());
        // ...and its end is told.
        assert_eq!(
            round(&mut t, &config, Some(true), &alerted, 11),
            ["drift_resolved"]
        );
        let mut fresh = Tracker::default();
        assert_eq!(
            round(&mut fresh, &config, Some(true), &alerted, 12),
            ["drift_resolved"]
        );
    }

    #[test]
    fn without_channels_drift_is_only_logged() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), false);
        let none = state::Alerted::new();
        let mut t = Tracker::default();
        for s in 0..10 {
            assert!(round(&mut t, &config, Some(false), &none, s).is_empty());
        }
        assert!(round(&mut t, &config, Some(true), &none, 11).is_empty());
    }
}
