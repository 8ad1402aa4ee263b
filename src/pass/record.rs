//! Records and logs each certificate's outcome, and collects the alerts it raises.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::kept::Kept;
use super::notify::alert_events;
use super::{Known, Options, Outcome, Pass, unserved_message};
use crate::alert;
use crate::config::{Certificate, Config};
use crate::schedule;
use crate::state::{self, CertState};
use crate::store::StateDir;
use crate::text::rfc3339;
use crate::x509::Cert;

/// What records, logs and alerts each certificate's outcome in one pass, and holds the
/// outcomes and the alerts raised.
pub(super) struct Recorder<'a> {
    pub(super) config: &'a Config,
    pub(super) kept: &'a Kept,
    pub(super) opts: &'a Options,
    pub(super) now: OffsetDateTime,
    events: Vec<(alert::Event, bool)>,
    outcomes: BTreeMap<String, Outcome>,
    /// The leaf each renewed certificate serves now.
    renewed: BTreeMap<String, Cert>,
    /// What is known of each certificate once its outcome is recorded.
    known: BTreeMap<String, Known>,
}

impl<'a> Recorder<'a> {
    pub(super) fn new(
        config: &'a Config,
        kept: &'a Kept,
        opts: &'a Options,
        now: OffsetDateTime,
    ) -> Recorder<'a> {
        Recorder {
            config,
            kept,
            opts,
            now,
            events: Vec::new(),
            outcomes: BTreeMap::new(),
            renewed: BTreeMap::new(),
            known: BTreeMap::new(),
        }
    }

    /// Notes the notAfter of the leaf the plan found live for `name` (`None`: none).
    pub(super) fn live(&mut self, name: &str, not_after: Option<OffsetDateTime>) {
        let known = self.known.entry(name.to_owned()).or_default();
        known.not_after = not_after;
        known.leaf_known = true;
    }

    /// Records and logs `name`'s outcome, and holds it with the alerts it raises.
    pub(super) fn done(&mut self, name: String, outcome: Outcome) {
        let mut events = std::mem::take(&mut self.events);
        let record = finish(self, &name, &outcome, &mut events);
        self.events = events;
        let renewed = self.renewed.get(&name);
        let known = self.known.entry(name.clone()).or_default();
        if let Some(leaf) = renewed {
            known.not_after = Some(leaf.not_after);
            known.leaf_known = true;
        }
        known.next = match &outcome {
            Outcome::NotDue { renew_after } => Some(*renew_after),
            Outcome::Backoff { until } => Some(*until),
            // The hold ends by itself then (a release in between is the operator's pass).
            Outcome::Held { ends, .. } => Some(*ends),
            Outcome::Failed { .. }
            | Outcome::Unserved { .. }
            | Outcome::RolledBack { .. }
            | Outcome::RollbackFailed { .. } => schedule::retry_at(&record, self.now),
            // Due again by `before_expiry`; the pass then applies the CA's window, if any.
            Outcome::Renewed { .. } => renewed.map(|leaf| {
                schedule::due(leaf, None, self.config.renewal.before_expiry, self.now).at
            }),
            Outcome::FleetWait { next, .. } => *next,
            Outcome::WouldRenew { .. } | Outcome::WouldOrder { .. } | Outcome::Stopped => None,
        };
        known.record = record;
        self.outcomes.insert(name, outcome);
    }

    /// Adds the fleet's events, when the pass asked the fleet's etcd: its health (see
    /// `notify::fleet_events`) and the generations this host's judgement marked bad (see
    /// `notify::generation_bad`); a dry run raises none.
    pub(super) fn fleet(&mut self, link: Option<&super::fleet::Link>, selected: &[Certificate]) {
        let Some(link) = link else { return };
        if self.opts.dry_run {
            return;
        }
        for marked in link.marked() {
            self.events
                .extend(super::notify::generation_bad(self.config, &marked));
        }
        let Some(health) = link.health() else { return };
        let events = super::notify::fleet_events(
            self.config,
            self.kept,
            selected,
            link.name(),
            health,
            self.now,
        );
        self.events.extend(events);
    }

    /// Notes the leaf `name` serves now that its deploy renewed it.
    pub(super) fn renewed(&mut self, name: &str, leaf: Cert) {
        self.renewed.insert(name.to_owned(), leaf);
    }

    /// What the pass did: each of `selected`'s outcomes in config order, and the alerts.
    pub(super) fn into_pass(mut self, selected: &[Certificate]) -> Pass {
        Pass {
            started: self.now,
            outcomes: selected
                .iter()
                .filter_map(|c| self.outcomes.remove(&c.name).map(|o| (c.name.clone(), o)))
                .collect(),
            events: self.events,
            known: {
                let not_due = self.kept.record.lock().map(|r| r.not_due.clone());
                let mut known = self.known;
                for (name, k) in known.iter_mut() {
                    k.not_due_at = not_due.as_ref().ok().and_then(|n| n.get(name).copied());
                }
                known
            },
        }
    }
}

/// Records and logs one certificate's outcome, and adds the alerts it raises to `events`;
/// returns its record as the pass leaves it.
fn finish(
    recorder: &Recorder<'_>,
    name: &str,
    outcome: &Outcome,
    events: &mut Vec<(alert::Event, bool)>,
) -> CertState {
    let (config, kept, opts, now) = (recorder.config, recorder.kept, recorder.opts, recorder.now);
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
            | Outcome::FleetWait { .. }
    );
    if !opts.dry_run && !quiet {
        let mut before = kept.state(name);
        // What delivery remembered since (see `state::Alerted`), the later time of each.
        for (event, t) in kept.alerted(name) {
            let at = before.alerted.entry(event).or_insert(t);
            *at = (*at).max(t);
        }
        let after = record(state_dir, name, outcome, config, now, before.clone());
        if !config.alerts.is_empty() {
            let mut raised = alert_events(config, name, outcome, &before, now);
            // A hold that ended in this pass says so in what the pass did next.
            if let Some(why) = kept.hold_ended(name) {
                for (e, _) in raised.iter_mut() {
                    e.message = format!("{}; {}", crate::text::escape_line(&why), e.message);
                }
            }
            events.extend(raised);
        }
        log(name, outcome);
        return after;
    }
    log(name, outcome);
    kept.state(name)
}

fn record(
    state_dir: &StateDir,
    name: &str,
    outcome: &Outcome,
    config: &Config,
    now: OffsetDateTime,
    mut s: CertState,
) -> CertState {
    let t = now.unix_timestamp();
    let (initial, max) = (config.renewal.retry_initial, config.renewal.retry_max);
    match outcome {
        Outcome::Renewed { done, .. } => {
            s.succeeded(t, "renewed");
            s.issued = config.certificate(name).map(|cert| state::IssuedWith {
                fingerprint: done.fingerprint.clone(),
                profile: cert.profile.clone(),
            });
            // Swapped in without reload or verification: the next pass does both, when
            // there is anything to do.
            let checked = config
                .certificate(name)
                .is_some_and(|c| c.reload.is_some() || c.verify.is_some());
            s.unserved = (done.unverified && checked).then(|| done.fingerprint.clone());
        }
        Outcome::Unserved {
            source,
            cause,
            done,
        } => {
            s.failed(t, "failed", &unserved_message(source, cause), initial, max);
            s.last_cause = Some(cause.kind());
            s.issued = config.certificate(name).map(|cert| state::IssuedWith {
                fingerprint: done.fingerprint.clone(),
                profile: cert.profile.clone(),
            });
            s.unserved = Some(done.fingerprint.clone());
        }
        Outcome::Failed { error } => {
            s.failed(t, "failed", &error.to_string(), initial, max);
            s.last_cause = Some(error.kind());
            // A rate-limiting CA said when: that time, not the usual ladder.
            // A CA asking for longer than the cap is asked again after it.
            if let Some(at) = error.retry_after() {
                let cap = crate::state::next_attempt_cap(max).as_secs() as i64;
                s.next_attempt = Some(at.unix_timestamp().clamp(t, t.saturating_add(cap)));
            }
        }
        Outcome::RolledBack { cause, .. } => {
            s.failed(t, "rolled_back", &cause.to_string(), initial, max);
            s.last_cause = Some(cause.kind());
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
            s.last_cause = Some(cause.kind());
        }
        Outcome::NotDue { .. }
        | Outcome::Backoff { .. }
        | Outcome::Held { .. }
        | Outcome::WouldRenew { .. }
        | Outcome::WouldOrder { .. }
        | Outcome::Stopped
        | Outcome::FleetWait { .. } => return s,
    }
    if let Err(e) = state::save(state_dir, name, &s) {
        tracing::warn!(cert = %name, "Cannot record the outcome in the state directory: {e}");
    }
    s
}

pub(super) fn log(name: &str, outcome: &Outcome) {
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
        Outcome::Unserved { source, cause, .. } => {
            tracing::error!(cert = %name, "Renewal failed: {}", unserved_message(source, cause))
        }
        Outcome::NotDue { renew_after } => {
            tracing::debug!(cert = %name, renew_after = %rfc3339(*renew_after), "Not due.")
        }
        Outcome::Backoff { until } => {
            tracing::warn!(cert = %name, until = %rfc3339(*until), "Waiting for the retry backoff after a failure.")
        }
        Outcome::FleetWait { why, .. } => {
            tracing::info!(cert = %name, "Fleet: nothing to do here now: {why}")
        }
        Outcome::Stopped => {
            tracing::info!(cert = %name, "Stopped before it was done; the next pass takes it up.")
        }
        Outcome::Held { since, ends } => {
            tracing::info!(cert = %name, since = %rfc3339(*since), ends = %rfc3339(*ends), "Held on the restored pair: nothing deployed or ordered until `certkeeper release {name}`.")
        }
        Outcome::WouldRenew { not_after, source } => {
            tracing::info!(cert = %name, %not_after, %source, "Dry run: would renew.")
        }
        Outcome::WouldOrder { issuer, .. } => {
            tracing::info!(cert = %name, %issuer, "Dry run: would order; the issuer has no staging_directory.")
        }
    }
}
