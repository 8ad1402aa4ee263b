//! What certkeeper remembers about each certificate between passes, under
//! `state_dir/state/<name>.json`: the last attempt and its result, the last success, the
//! consecutive failures and when the next attempt is allowed (retry backoff, computed by
//! [`crate::schedule::backoff`]).
//!
//! Written through a temporary file and a rename; a missing or unreadable record is treated
//! as "nothing known" (a first run), never as an error that stops a renewal.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::{self, StateDir};

/// The per-certificate record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CertState {
    /// Unix time of the last attempt.
    pub last_attempt: Option<i64>,
    /// `renewed`, `failed`, `rolled_back`, `rollback_failed`, or `ok` (nothing was due).
    pub last_result: Option<String>,
    /// The last failure's message.
    pub last_error: Option<String>,
    /// Unix time of the last successful renewal.
    pub last_success: Option<i64>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Unix time before which no new attempt is made (unless forced).
    pub next_attempt: Option<i64>,
    /// When each failure event (`failed`, `rolled_back`, ...) was last alerted, unix time;
    /// cleared by a success.
    pub alerted: std::collections::BTreeMap<String, i64>,
    /// The CA's last renewal-information answer (RFC 9773) for the live leaf, kept until the
    /// CA's `Retry-After` so that a pass does not ask again for every certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ari: Option<KeptAri>,
    /// The ACME profile the live leaf was ordered with, as configured then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued: Option<IssuedWith>,
}

/// A kept renewal-information answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeptAri {
    /// The leaf it is about (SHA-256 of its DER, hex).
    pub fingerprint: String,
    /// The suggested window (unix seconds), or `None` when the CA offers no renewal
    /// information.
    pub window: Option<(i64, i64)>,
    /// The CA's page explaining the window, if it gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation_url: Option<String>,
    /// When it was fetched (unix seconds).
    pub fetched: i64,
    /// Not asked again before this (unix seconds): the CA's `Retry-After`.
    pub retry_after: i64,
}

/// What the live leaf was ordered with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IssuedWith {
    /// The leaf (SHA-256 of its DER, hex).
    pub fingerprint: String,
    /// The configured ACME profile when it was ordered (`None`: none).
    pub profile: Option<String>,
}

impl CertState {
    /// Records a failure at `now` (`result`: `failed`, `rolled_back` or `rollback_failed`)
    /// and schedules the next attempt with exponential backoff.
    pub fn failed(
        &mut self,
        now: i64,
        result: &str,
        error: &str,
        initial: Duration,
        max: Duration,
    ) {
        self.last_attempt = Some(now);
        self.last_result = Some(result.into());
        self.last_error = Some(error.to_owned());
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.next_attempt = Some(
            now + crate::schedule::backoff(self.consecutive_failures, initial, max).as_secs()
                as i64,
        );
    }

    /// Records a success at `now`.
    pub fn succeeded(&mut self, now: i64, result: &str) {
        self.last_attempt = Some(now);
        self.last_result = Some(result.to_owned());
        self.last_error = None;
        self.last_success = Some(now);
        self.consecutive_failures = 0;
        self.next_attempt = None;
        self.alerted.clear();
    }

    /// Whether the backoff allows an attempt at `now`.
    pub fn may_attempt(&self, now: i64) -> bool {
        self.next_attempt.is_none_or(|t| now >= t)
    }
}

/// Where a certificate's record lives.
pub fn path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("state").join(format!("{name}.json"))
}

/// Reads a record; a missing or damaged one reads as the default.
pub fn load(state_dir: &Path, name: &str) -> CertState {
    crate::fsutil::read_regular(&path(state_dir, name), crate::fsutil::MAX_FILE)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Reads a record for reporting: `None` when it cannot be read (a monitoring user without
/// access to state_dir), the default when there is none yet.
pub fn load_if_readable(state_dir: &Path, name: &str) -> Option<CertState> {
    match crate::fsutil::read_regular(&path(state_dir, name), crate::fsutil::MAX_FILE) {
        Ok(b) => Some(serde_json::from_slice(&b).unwrap_or_default()),
        // No pass has recorded anything yet. A private state_dir answers "permission denied"
        // instead, and that is not knowledge.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(CertState::default()),
        Err(_) => None,
    }
}

/// Writes a record whole and durably.
pub fn save(state_dir: &StateDir, name: &str, state: &CertState) -> Result<(), store::Error> {
    // A map with string keys, numbers and strings always encodes.
    let bytes = serde_json::to_vec_pretty(state).unwrap_or_default();
    state_dir.write_file(&["state"], &format!("{name}.json"), &bytes, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_and_success_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = load(dir.path(), "www");
        assert_eq!(s, CertState::default());
        assert!(s.may_attempt(0));
        s.failed(
            1000,
            "failed",
            "boom",
            Duration::from_secs(60),
            Duration::from_secs(3600),
        );
        s.failed(
            1100,
            "failed",
            "boom again",
            Duration::from_secs(60),
            Duration::from_secs(3600),
        );
        assert_eq!(s.next_attempt, Some(1220));
        assert!(!s.may_attempt(1219) && s.may_attempt(1220));
        save(&StateDir::open(dir.path()).unwrap(), "www", &s).unwrap();
        assert_eq!(load(dir.path(), "www"), s);
        s.succeeded(2000, "renewed");
        assert_eq!(
            (s.consecutive_failures, s.next_attempt, s.last_success),
            (0, None, Some(2000))
        );
        std::fs::write(path(dir.path(), "www"), b"{ damaged").unwrap();
        assert_eq!(load(dir.path(), "www"), CertState::default());
    }
}
