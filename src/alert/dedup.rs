//! Which failures alert again. The same event (`failed`, `rolled_back`, `rollback_failed`,
//! `expiring`) of the same certificate alerts once, then again only after `alert_repeat`;
//! when it was last delivered is kept in the alert memory (`state_dir/alerted.json`, see
//! [`crate::state::Alerted`]), written under the state_dir lock after delivery. A renewal
//! clears the certificate's part of it, and a renewal after failures always alerts
//! (recovery).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::EventKind;

/// Whether an event of `kind` should go out at `now` (unix seconds), given when each kind
/// was last delivered.
pub fn due(alerted: &BTreeMap<String, i64>, kind: EventKind, now: i64, repeat: Duration) -> bool {
    if kind == EventKind::Renewed {
        return true;
    }
    match alerted.get(kind.as_str()) {
        None => true,
        Some(&last) => now.saturating_sub(last) >= repeat.as_secs() as i64 || now < last,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_repeat_per_kind() {
        let day = Duration::from_secs(86_400);
        let mut alerted = BTreeMap::new();
        assert!(due(&alerted, EventKind::Failed, 1000, day));
        alerted.insert("failed".to_owned(), 1000);
        assert!(!due(&alerted, EventKind::Failed, 1000 + 3600, day));
        assert!(
            due(&alerted, EventKind::RolledBack, 1000 + 3600, day),
            "another event"
        );
        assert!(due(&alerted, EventKind::Failed, 1000 + 86_400, day));
        assert!(due(&alerted, EventKind::Renewed, 1001, day));
        // A clock set back does not silence alerts for the time it was ahead.
        assert!(due(&alerted, EventKind::Failed, 10, day));
    }
}
