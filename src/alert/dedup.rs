//! Which failures alert again. The same event (`failed`, `rolled_back`, `rollback_failed`,
//! `expiring`) of the same certificate alerts once, then again only after `alert_repeat`;
//! when it was last delivered is kept in the alert memory (`state_dir/alerted.json`, see
//! [`crate::state::Alerted`]), written under the state_dir lock after delivery. A renewal
//! clears the certificate's part of it, and a renewal after failures always alerts
//! (recovery).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::EventKind;
use crate::state::CauseKind;

/// Whether an event of `kind` about a failure of kind `cause` should go out at `now` (unix
/// seconds), given when each was last delivered (see [`remember`]). Failures of different
/// kinds are different alerts: a rollback after a failed reload and one after a failed
/// verification both go out. A memory kept before kinds were (the event's name only) holds
/// back every kind.
pub fn due(
    alerted: &BTreeMap<String, i64>,
    kind: EventKind,
    cause: Option<CauseKind>,
    now: i64,
    repeat: Duration,
) -> bool {
    if kind == EventKind::Renewed {
        return true;
    }
    let recent = |key: &str| match alerted.get(key) {
        None => false,
        Some(&last) => now.saturating_sub(last) < repeat.as_secs() as i64 && now >= last,
    };
    let event = kind.as_str();
    let by_kind = memory_key(kind, cause);
    let kinds_kept = alerted
        .keys()
        .any(|k| k.strip_prefix(event).is_some_and(|r| r.starts_with(':')));
    let held = recent(event) && (by_kind == event || !kinds_kept || recent(&by_kind));
    !held
}

/// Notes in `alerted` that an event of `kind` about a failure of kind `cause` was delivered
/// at `now`: under the event's name (the last of any kind) and under [`memory_key`].
pub fn remember(
    alerted: &mut BTreeMap<String, i64>,
    kind: EventKind,
    cause: Option<CauseKind>,
    now: i64,
) {
    alerted.insert(kind.as_str().to_owned(), now);
    alerted.insert(memory_key(kind, cause), now);
}

/// The alert memory's key of an event of one kind of failure: the event's name and the kind
/// (`rolled_back:verify`); the name alone without a kind. `expiring` is about the live
/// certificate, whatever failed: it has one key.
pub fn memory_key(kind: EventKind, cause: Option<CauseKind>) -> String {
    match cause {
        Some(c) if kind != EventKind::Expiring => format!("{}:{}", kind.as_str(), c.as_str()),
        _ => kind.as_str().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_repeat_per_kind() {
        let day = Duration::from_secs(86_400);
        let mut alerted = BTreeMap::new();
        assert!(due(&alerted, EventKind::Failed, None, 1000, day));
        alerted.insert("failed".to_owned(), 1000);
        assert!(!due(&alerted, EventKind::Failed, None, 1000 + 3600, day));
        assert!(
            due(&alerted, EventKind::RolledBack, None, 1000 + 3600, day),
            "another event"
        );
        assert!(due(&alerted, EventKind::Failed, None, 1000 + 86_400, day));
        assert!(due(&alerted, EventKind::Renewed, None, 1001, day));
        // A clock set back does not silence alerts for the time it was ahead.
        assert!(due(&alerted, EventKind::Failed, None, 10, day));
    }

    #[test]
    fn failures_of_another_kind_alert_again() {
        let day = Duration::from_secs(86_400);
        let mut alerted = BTreeMap::new();
        let reload = Some(CauseKind::Reload);
        let verify = Some(CauseKind::Verify);
        remember(&mut alerted, EventKind::RolledBack, reload, 1000);
        assert_eq!(
            alerted.keys().collect::<Vec<_>>(),
            ["rolled_back", "rolled_back:reload"]
        );
        assert!(!due(&alerted, EventKind::RolledBack, reload, 2000, day));
        assert!(due(&alerted, EventKind::RolledBack, verify, 2000, day));
        remember(&mut alerted, EventKind::RolledBack, verify, 2000);
        assert!(!due(&alerted, EventKind::RolledBack, reload, 3000, day));
        assert!(!due(&alerted, EventKind::RolledBack, verify, 3000, day));
        assert!(due(
            &alerted,
            EventKind::RolledBack,
            reload,
            1000 + 86_400,
            day
        ));
        // A memory kept before kinds were holds back every kind.
        alerted.insert("failed".to_owned(), 1000);
        assert!(!due(
            &alerted,
            EventKind::Failed,
            Some(CauseKind::Dns),
            2000,
            day
        ));
        assert!(due(
            &alerted,
            EventKind::Failed,
            Some(CauseKind::Dns),
            1000 + 86_400,
            day
        ));
        // Expiring alerts once per repeat, whatever the last failure was.
        remember(&mut alerted, EventKind::Expiring, verify, 1000);
        assert!(!due(&alerted, EventKind::Expiring, None, 2000, day));
    }
}
