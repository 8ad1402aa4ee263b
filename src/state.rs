//! What certkeeper remembers about each certificate between passes, under
//! `state_dir/state/<name>.json`: the last attempt and its result, the last success, the
//! consecutive failures and when the next attempt is allowed (retry backoff, computed by
//! [`crate::schedule::backoff`]).
//!
//! Written whole, and only when something happened to the certificate (an attempt, a
//! failure, a renewal, an alert); durable once the pass ends (see
//! [`crate::store::Durable::AtSync`]). A missing or unreadable record is treated as "nothing
//! known" (a first run), never as an error that stops a renewal.
//!
//! Two caches sit beside the records, each one file for all certificates, rewritten at most
//! once a pass and never fsynced, since a crash that loses them costs only a question asked
//! again: `state_dir/ari.json`, the CA's renewal-information answers ([`Aris`]), and
//! `state_dir/pass.json`, when each certificate was last found not due ([`PassRecord`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::{self, Durable, StateDir};

/// The per-certificate record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CertState {
    /// Unix time of the last attempt.
    pub last_attempt: Option<i64>,
    /// `renewed`, `failed`, `rolled_back` or `rollback_failed` (a pass that finds nothing due
    /// notes it in the [`PassRecord`], not here).
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
    pub alerted: BTreeMap<String, i64>,
    /// The CA's last renewal-information answer (RFC 9773) for the live leaf, kept until the
    /// CA's `Retry-After` so that a pass does not ask again for every certificate. Kept in
    /// the [`Aris`] cache, not in the record.
    #[serde(skip)]
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

/// The renewal-information answers of every certificate, by name: `state_dir/ari.json`.
pub type Aris = BTreeMap<String, KeptAri>;

/// Reads the kept renewal-information answers; none when the cache is missing or damaged.
pub fn load_aris(state_dir: &Path) -> Aris {
    read_cache(state_dir, "ari.json").unwrap_or_default()
}

/// Keeps the renewal-information answers (not fsynced).
pub fn save_aris(state_dir: &StateDir, aris: &Aris) -> Result<(), store::Error> {
    write_cache(state_dir, "ari.json", aris)
}

/// When each certificate was last found not due by a pass (unix seconds), for the metrics:
/// `state_dir/pass.json`. A certificate leaves it when a pass does anything else with it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PassRecord {
    /// Certificate name to the start of the last pass that found it not due.
    pub not_due: BTreeMap<String, i64>,
}

/// Reads the pass record; empty when missing or damaged.
pub fn load_pass(state_dir: &Path) -> PassRecord {
    read_cache(state_dir, "pass.json").unwrap_or_default()
}

/// Keeps the pass record (not fsynced).
pub fn save_pass(state_dir: &StateDir, record: &PassRecord) -> Result<(), store::Error> {
    write_cache(state_dir, "pass.json", record)
}

/// The most read of a cache: 16 MiB (tens of thousands of certificates).
const MAX_CACHE: u64 = 16 * 1024 * 1024;

fn write_cache<T: Serialize>(
    state_dir: &StateDir,
    name: &str,
    value: &T,
) -> Result<(), store::Error> {
    // Maps with string keys, numbers and strings: they always encode.
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    state_dir.write_cache(name, &bytes)
}

fn read_cache<T: serde::de::DeserializeOwned>(state_dir: &Path, name: &str) -> Option<T> {
    let bytes = crate::fsutil::read_regular(&state_dir.join(name), MAX_CACHE).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// What a reader (`check`, `verify`, `metrics`) may know from state_dir: each certificate's
/// record with its kept renewal-information answer, the cache read once.
#[derive(Clone, Debug)]
pub struct Records {
    state_dir: PathBuf,
    aris: Aris,
}

impl Records {
    /// Reads the caches of `state_dir`.
    pub fn load(state_dir: &Path) -> Records {
        Records {
            state_dir: state_dir.to_owned(),
            aris: load_aris(state_dir),
        }
    }

    /// The record of `name` (see [`load_if_readable`]) with its kept answer.
    pub fn get(&self, name: &str) -> Option<CertState> {
        let mut s = load_if_readable(&self.state_dir, name)?;
        s.ari = self.aris.get(name).cloned();
        Some(s)
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
    state_dir.write_file(
        &["state"],
        &format!("{name}.json"),
        &bytes,
        0o600,
        Durable::AtSync,
    )
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
