//! What a pass reads once from the state directory and shares among its certificates.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::Outcome;
use crate::state;
use crate::store::{self, StateDir};

/// What a pass reads once and shares among its certificates: each selected certificate's
/// record (read once, under the lock; `record` writes it once), the kept
/// renewal-information answers and pass record (caches, written back once at the end when
/// they changed), and the names with material kept in `pending/`.
pub(super) struct Kept {
    /// Where the pass writes.
    pub(super) state_dir: StateDir,
    pub(super) aris: std::sync::Mutex<state::Aris>,
    pub(super) record: std::sync::Mutex<state::PassRecord>,
    /// The alert memory; a renewal clears its certificate's entry.
    pub(super) alerted: std::sync::Mutex<state::Alerted>,
    /// Whether the answers changed: they are written back only then.
    pub(super) aris_changed: std::sync::atomic::AtomicBool,
    /// Whether the pass record changed: it is written back only then.
    pub(super) record_changed: std::sync::atomic::AtomicBool,
    /// Whether the alert memory changed: it is written back only then.
    pub(super) alerted_changed: std::sync::atomic::AtomicBool,
    pub(super) pending: std::collections::BTreeSet<String>,
    /// Each selected certificate's record as the pass found it.
    states: BTreeMap<String, state::CertState>,
    /// The holds this pass ended, with why (see `hold::held`).
    holds_ended: std::sync::Mutex<BTreeMap<String, String>>,
    horizon: state::Horizon,
}

impl Kept {
    pub(super) fn load<'n>(
        state_dir: &StateDir,
        horizon: &state::Horizon,
        names: impl IntoIterator<Item = &'n str>,
    ) -> Kept {
        let states = names
            .into_iter()
            .map(|n| (n.to_owned(), state::load(state_dir.path(), n, horizon)))
            .collect();
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
            states,
            holds_ended: Default::default(),
            horizon: *horizon,
        }
    }

    /// `name`'s record as the pass found it (read from disk only for a name not selected),
    /// without a hold this pass ended.
    pub(super) fn state(&self, name: &str) -> state::CertState {
        let mut s = match self.states.get(name) {
            Some(s) => s.clone(),
            None => state::load(self.state_dir.path(), name, &self.horizon),
        };
        if s.hold.is_some() && self.hold_ended(name).is_some() {
            s.hold = None;
        }
        s
    }

    /// `name`'s hold, when its record has one that this pass did not end (without copying
    /// the record: every certificate is asked).
    pub(super) fn hold(&self, name: &str) -> Option<state::Hold> {
        let hold = self.states.get(name)?.hold.clone()?;
        self.hold_ended(name).is_none().then_some(hold)
    }

    /// Ends `name`'s hold for `why`: the record loses it now (not in a dry run), whatever
    /// the pass does next, and this pass's alerts say why.
    pub(super) fn end_hold(&self, name: &str, why: String, dry_run: bool) {
        if let Ok(mut ended) = self.holds_ended.lock() {
            ended.insert(name.to_owned(), why);
        }
        if dry_run {
            return;
        }
        if let Err(e) = state::save(&self.state_dir, name, &self.state(name)) {
            tracing::warn!(cert = %name, "Cannot remove the hold from the record in the state directory: {e}");
        }
    }

    /// Why this pass ended `name`'s hold, when it did.
    pub(super) fn hold_ended(&self, name: &str) -> Option<String> {
        self.holds_ended.lock().ok()?.get(name).cloned()
    }

    pub(super) fn ari(&self, name: &str) -> Option<state::KeptAri> {
        self.aris.lock().ok()?.get(name).cloned()
    }

    pub(super) fn set_ari(&self, name: &str, ari: Option<state::KeptAri>) {
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
    pub(super) fn alerted(&self, name: &str) -> BTreeMap<String, i64> {
        self.alerted
            .lock()
            .ok()
            .and_then(|a| a.get(name).cloned())
            .unwrap_or_default()
    }

    /// Writes the alert memory back when a renewal cleared a part of it, under the lock.
    pub(super) fn save_alerted(&self, locked: &store::Locked<'_>) {
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

    /// Forgets what was alerted about `name` (a certificate, or a fleet's subject): what
    /// failed works again. Written back by [`Kept::save_alerted`].
    pub(super) fn forget_alerted(&self, name: &str) {
        if let Ok(mut alerted) = self.alerted.lock()
            && alerted.remove(name).is_some()
        {
            self.alerted_changed
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Notes what the pass did with `name`: found it not due at `now`, or something else.
    pub(super) fn outcome(&self, name: &str, outcome: &Outcome, now: OffsetDateTime) {
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
    pub(super) fn save(&self) {
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
