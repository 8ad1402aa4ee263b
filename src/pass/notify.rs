//! The alerts a pass raises, their delivery, and the memory of what was delivered.

use time::OffsetDateTime;

use super::Outcome;
use super::start::LOCK_POLL;
use crate::alert;
use crate::config::{Certificate, Config, EventKind};
use crate::state::{self, CauseKind, CertState};
use crate::store::{self, Store};
use crate::text::rfc3339;
use crate::x509::{Cert, leaf_of_file};

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
        // A bad generation alerts once by nature (one host writes the verdict): it is not a
        // failure of this host's certificate to repeat, nor one a renewal recovers from.
        .filter(|event| {
            !matches!(
                event.kind(),
                EventKind::Renewed | EventKind::FleetGenerationBad
            ) && !event.is_fleet_recovery()
        })
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
pub(super) fn alert_events(
    config: &Config,
    name: &str,
    outcome: &Outcome,
    before: &CertState,
    now: OffsetDateTime,
) -> Vec<(alert::Event, bool)> {
    let Some(cert) = config.certificate(name) else {
        return Vec::new();
    };
    // The live leaf matters only when the attempt failed (a failure, a rollback or a
    // backoff) or the certificate is held on a restored pair: a renewal's event carries the
    // new notAfter, and the others raise none.
    let held = matches!(outcome, Outcome::Held { .. });
    let live = if outcome.failed() || held {
        leaf_of_file(&cert.fullchain).ok()
    } else {
        None
    };
    let live_not_after = live.as_ref().map(|l| rfc3339(l.not_after));
    let t = now.unix_timestamp();
    let due = |kind, cause| alert::due(&before.alerted, kind, cause, t, config.alert_repeat);
    let mut out = Vec::new();
    out.extend(
        own_event(cert, outcome, before, &due).map(|(mut e, recovery)| {
            if e.not_after.is_none() {
                e.not_after = live_not_after.clone();
            }
            (e, recovery)
        }),
    );
    if (outcome.failed() || held)
        && let Some(leaf) = &live
        && leaf.not_after - now < EXPIRING_WITHIN
        && due(EventKind::Expiring, None)
    {
        let mut e = expiring(cert, outcome, before, leaf, now);
        e.not_after = live_not_after;
        out.push((e, false));
    }
    out
}

/// The event of the outcome itself, with whether it is a recovery: `renewed` always, a
/// failure only when due again (see `alert_repeat`); `None` when it raises none.
fn own_event(
    cert: &Certificate,
    outcome: &Outcome,
    before: &CertState,
    due: &dyn Fn(EventKind, Option<CauseKind>) -> bool,
) -> Option<(alert::Event, bool)> {
    match outcome {
        Outcome::Renewed { source, done } => {
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
        Outcome::Failed { error, .. } => Some((EventKind::Failed, error.to_string(), error.kind()))
            .filter(|(k, _, c)| due(*k, Some(*c)))
            .map(|(k, m, c)| (alert::Event::new(k, cert, &m).with_cause(Some(c)), false)),
        Outcome::Unserved {
            source,
            cause,
            done,
        } => Some((
            EventKind::Failed,
            super::unserved_message(source, cause),
            cause.kind(),
        ))
        .filter(|(k, _, c)| due(*k, Some(*c)))
        .map(|(k, m, c)| {
            let mut e = alert::Event::new(k, cert, &m).with_cause(Some(c));
            e.not_after = Some(done.not_after.clone());
            (e, false)
        }),
        Outcome::RolledBack { source, cause, .. } => Some((
            EventKind::RolledBack,
            format!("the new certificate from {source} was refused and the previous pair is served again: {cause}"),
            cause.kind(),
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
            cause.kind(),
        ))
        .filter(|(k, _, c)| due(*k, Some(*c)))
        .map(|(k, m, c)| (alert::Event::new(k, cert, &m).with_cause(Some(c)), false)),
        Outcome::Backoff { .. } | Outcome::Held { .. } => None,
        Outcome::NotDue { .. }
        | Outcome::WouldRenew { .. }
        | Outcome::WouldOrder { .. }
        | Outcome::Stopped
        | Outcome::FleetWait { .. } => None,
    }
}

/// The fleet's event of a pass that asked its etcd: `fleet_degraded` when a request found
/// it unreachable or without a quorum (once per `alert_repeat`, remembered under the fleet's
/// subject like a certificate's failures), and `fleet_recovered` when it answered again
/// after a `fleet_degraded` was delivered (which clears that memory).
pub(super) fn fleet_events(
    config: &Config,
    kept: &super::kept::Kept,
    selected: &[Certificate],
    fleet: &str,
    health: Result<(), String>,
    now: OffsetDateTime,
) -> Vec<(alert::Event, bool)> {
    let subject = alert::fleet_subject(fleet);
    let before = kept.alerted(&subject);
    let domains = || {
        selected
            .iter()
            .filter(|c| c.fleet)
            .flat_map(|c| c.domains.iter().cloned())
            .collect::<Vec<_>>()
    };
    let t = now.unix_timestamp();
    match health {
        Err(why) => {
            tracing::warn!(
                "Fleet {fleet}: etcd cannot be reached or has no quorum; every host keeps what it serves and renewals of shared certificates wait: {why}"
            );
            let due = alert::due(
                &before,
                EventKind::FleetDegraded,
                None,
                t,
                config.alert_repeat,
            );
            if !due || config.alerts.is_empty() {
                return Vec::new();
            }
            let message = format!(
                "the fleet's etcd cannot be reached or has no quorum: {why}; this host keeps serving what it has and renewals of its shared certificates wait"
            );
            vec![(
                alert::Event::fleet(fleet, domains(), &message, false),
                false,
            )]
        }
        Ok(()) => {
            if !before.contains_key(EventKind::FleetDegraded.as_str()) {
                return Vec::new();
            }
            kept.forget_alerted(&subject);
            tracing::info!("Fleet {fleet}: etcd answers again.");
            if config.alerts.is_empty() {
                return Vec::new();
            }
            let message = "the fleet's etcd answers again: shared certificates are renewed and deployed as the fleet decides";
            vec![(alert::Event::fleet(fleet, domains(), message, true), false)]
        }
    }
}

/// `fleet_generation_bad`: this host's judgement marked a generation bad. The message names
/// the certificate, the generation and every host that failed it first, then each one's
/// reason (shortened to [`MAX_REASON`] characters), so that a long reason cannot push a host
/// out of the message.
pub(super) fn generation_bad(
    config: &Config,
    marked: &super::fleet::Marked,
) -> Option<(alert::Event, bool)> {
    let cert = config.certificate(&marked.cert)?;
    let message = generation_bad_message(marked);
    let event = alert::Event::new(EventKind::FleetGenerationBad, cert, &message);
    Some((event, false))
}

/// What a `fleet_generation_bad` alert says (see [`generation_bad`]).
fn generation_bad_message(marked: &super::fleet::Marked) -> String {
    let hosts: Vec<&str> = marked.failed.iter().map(|(h, _)| h.as_str()).collect();
    if hosts.is_empty() {
        format!(
            "fleet generation {} of {} is marked bad: {}; every host that took it goes back to the generation before",
            marked.serial, marked.cert, marked.why
        )
    } else {
        let reasons: Vec<String> = marked
            .failed
            .iter()
            .map(|(host, why)| {
                let why = why.as_deref().unwrap_or("no reason given");
                let short: String = why.chars().take(MAX_REASON).collect();
                let cut = if short.len() < why.len() { "…" } else { "" };
                format!("{host}: {short}{cut}")
            })
            .collect();
        format!(
            "fleet generation {} of {} is marked bad: it failed on {} ({}); every host that took it goes back to the generation before",
            marked.serial,
            marked.cert,
            hosts.join(", "),
            reasons.join("; ")
        )
    }
}

/// The longest reason of one host in a `fleet_generation_bad` message, in characters.
const MAX_REASON: usize = 120;

/// `expiring`: the live `leaf` is close to its notAfter (or past it) and the last renewal
/// failed, or the certificate is held on a restored pair.
fn expiring(
    cert: &Certificate,
    outcome: &Outcome,
    before: &CertState,
    leaf: &Cert,
    now: OffsetDateTime,
) -> alert::Event {
    let left = leaf.not_after - now;
    let when = if left.is_negative() {
        format!("expired {}h ago", (-left).whole_hours())
    } else {
        format!("expires in {}h", left.whole_hours())
    };
    if let Outcome::Held { since, ends } = outcome {
        return alert::Event::new(
            EventKind::Expiring,
            cert,
            &format!(
                "the live certificate {when} (notAfter {}) and is held on the pair restored by `certkeeper rollback --hold` since {}: nothing is deployed until `certkeeper release {}`, or until the hold ends by itself at {}",
                rfc3339(leaf.not_after),
                rfc3339(*since),
                cert.name,
                rfc3339(*ends),
            ),
        );
    }
    let (last, last_kind) = match outcome {
        Outcome::Failed { error, .. } => (error.to_string(), Some(error.kind())),
        Outcome::RolledBack { cause, .. } | Outcome::RollbackFailed { cause, .. } => {
            (cause.to_string(), Some(cause.kind()))
        }
        _ => (
            before.last_error.clone().unwrap_or_default(),
            before.last_cause,
        ),
    };
    alert::Event::new(
        EventKind::Expiring,
        cert,
        &format!(
            "the live certificate {when} (notAfter {}) and its last renewal failed: {last}",
            rfc3339(leaf.not_after)
        ),
    )
    .with_cause(last_kind)
}

/// How close to its notAfter a certificate whose renewal failed raises `expiring`.
pub const EXPIRING_WITHIN: time::Duration = time::Duration::days(7);

#[cfg(test)]
mod tests {
    use super::super::fleet::Marked;
    use super::*;

    #[test]
    fn a_bad_generation_names_every_failing_host_before_their_reasons() {
        let long = "x".repeat(400);
        let marked = Marked {
            cert: "www".into(),
            serial: 7,
            failed: vec![
                ("web1".into(), Some(long.clone())),
                ("web2".into(), None),
                ("web3".into(), Some("reload failed".into())),
            ],
            why: String::new(),
        };
        let message = alert::one_line(&generation_bad_message(&marked));
        assert!(
            message.starts_with(&format!(
                "fleet generation 7 of www is marked bad: it failed on web1, web2, web3 (web1: {}…; web2: no reason given; web3: reload failed)",
                "x".repeat(MAX_REASON)
            )),
            "{message}"
        );
        assert!(message.chars().count() <= alert::MAX_MESSAGE + 1);

        // Without the hosts' results: the verdict's own words.
        let marked = Marked {
            failed: Vec::new(),
            why: "failed on web1 (reload failed)".into(),
            ..marked
        };
        assert_eq!(
            generation_bad_message(&marked),
            "fleet generation 7 of www is marked bad: failed on web1 (reload failed); every host that took it goes back to the generation before"
        );
    }
}
