//! What certkeeper remembers about each certificate between passes, under
//! `state_dir/state/<name>.json`: the last attempt and its result, the last success, the
//! consecutive failures and when the next attempt is allowed (retry backoff, computed by
//! [`backoff`]).
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
use time::OffsetDateTime;

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
    /// What kind of failure the last one was (`None` after a success, and in records
    /// written before kinds were kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_cause: Option<CauseKind>,
    /// Unix time of the last successful renewal.
    pub last_success: Option<i64>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Unix time before which no new attempt is made (unless forced).
    pub next_attempt: Option<i64>,
    /// When each failure event (`failed`, `rolled_back`, ...) was last alerted, unix time;
    /// cleared by a success. Kept in the alert memory ([`Alerted`]), not in the record: read
    /// from records written before, never written into one.
    #[serde(skip_serializing)]
    pub alerted: BTreeMap<String, i64>,
    /// The CA's last renewal-information answer (RFC 9773) for the live leaf, kept until the
    /// CA's `Retry-After` so that a pass does not ask again for every certificate. Kept in
    /// the [`Aris`] cache, not in the record.
    #[serde(skip)]
    pub ari: Option<KeptAri>,
    /// The ACME profile the live leaf was ordered with, as configured then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued: Option<IssuedWith>,
    /// The live pair (SHA-256 of its leaf, hex) that went live without a reload and
    /// verification that passed: a first deploy whose reload or verification failed (there
    /// was nothing to go back to), or `renew --no-reload`. The next pass reloads and
    /// verifies it, without ordering.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unserved: Option<String>,
    /// Set by `rollback --hold`: the certificate stays on the restored pair (no deploys, no
    /// orders) until `certkeeper release`, or until the live leaf is within half of
    /// `before_expiry` of its notAfter (see [`crate::hold`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold: Option<Hold>,
}

/// A hold on the pair a rollback restored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Hold {
    /// When the hold was set (unix seconds).
    pub since: i64,
    /// Who set it (the user that ran `rollback --hold`), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The snapshot the rollback restored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The restored leaf (SHA-256 of its DER, hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// What kind of failure stopped a renewal: a small fixed set, the same in the state record,
/// the `cause` label of `certkeeper_certificate_last_result` and an alert's `cause_kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CauseKind {
    /// The CA asked to be asked again later (`rateLimited`).
    RateLimited,
    /// The CA refused the order or an account (another problem document, a failed
    /// challenge, an invalid order).
    CaRefused,
    /// The DNS provider or the propagation check failed.
    Dns,
    /// The CA could not be reached, or did not answer in time or in ACME's words.
    Network,
    /// Something on this host failed: a local CA, a key, an account file, the clock.
    Local,
    /// New material was refused by the checks before the deploy.
    Material,
    /// Staging, committing or recovering the files failed (the store).
    Deploy,
    /// The reload command failed, or changed what was deployed.
    Reload,
    /// The service did not serve the new certificate, or its health command failed.
    Verify,
    /// The configuration cannot work as written (an owner that does not exist, an issuer
    /// without what it needs).
    Config,
}

impl CauseKind {
    /// Every kind, in the order documented.
    pub const ALL: [CauseKind; 10] = [
        CauseKind::RateLimited,
        CauseKind::CaRefused,
        CauseKind::Dns,
        CauseKind::Network,
        CauseKind::Local,
        CauseKind::Material,
        CauseKind::Deploy,
        CauseKind::Reload,
        CauseKind::Verify,
        CauseKind::Config,
    ];

    /// The kind as a label value: `rate_limited`, `ca_refused`, `dns`, `network`, `local`,
    /// `material`, `deploy`, `reload`, `verify` or `config`.
    pub fn as_str(self) -> &'static str {
        match self {
            CauseKind::RateLimited => "rate_limited",
            CauseKind::CaRefused => "ca_refused",
            CauseKind::Dns => "dns",
            CauseKind::Network => "network",
            CauseKind::Local => "local",
            CauseKind::Material => "material",
            CauseKind::Deploy => "deploy",
            CauseKind::Reload => "reload",
            CauseKind::Verify => "verify",
            CauseKind::Config => "config",
        }
    }
}

impl std::fmt::Display for CauseKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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

/// The CA's suggested renewal window for one certificate (ACME Renewal Information, RFC
/// 9773), as fetched from the CA or kept in a [`KeptAri`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenewalWindow {
    /// Renew no earlier than this.
    pub start: OffsetDateTime,
    /// Renew no later than this.
    pub end: OffsetDateTime,
    /// A page explaining the window, when the CA gives one (e.g. after an incident).
    pub explanation_url: Option<String>,
    /// When the CA wants to be asked again.
    pub retry_after: Duration,
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
        self.next_attempt =
            Some(now + backoff(self.consecutive_failures, initial, max).as_secs() as i64);
    }

    /// Records a success at `now`.
    pub fn succeeded(&mut self, now: i64, result: &str) {
        self.last_attempt = Some(now);
        self.last_result = Some(result.to_owned());
        self.last_error = None;
        self.last_cause = None;
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

/// The longest a CA's `Retry-After` (a `rateLimited` answer) holds a certificate back, and
/// the longest pause of requests to a CA that is kept: a week, the longest window of Let's
/// Encrypt's rate limits. A CA asking for longer is asked again after a week.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(7 * 86_400);

/// The longest a stored next attempt may lie ahead of now: the backoff's `retry.max` or a
/// CA's capped `Retry-After`, whichever is longer. Further ahead, the clock was wrong when
/// it was written (see [`crate::state::Horizon`]).
pub fn next_attempt_cap(retry_max: Duration) -> Duration {
    retry_max.max(RETRY_AFTER_MAX)
}

/// The delay after the `failures`-th consecutive failure: `initial`, doubling, capped at `max`.
pub fn backoff(failures: u32, initial: Duration, max: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(32);
    initial.saturating_mul(1u32 << doublings.min(31)).min(max)
}

/// How long a renewal-information answer is kept: the CA's `Retry-After`, at least a minute
/// (a CA asking for less would be asked on every pass of a busy daemon) and at most a day
/// (RFC 9773 §4.3 suggests clients poll at least daily).
pub fn ari_keep(retry_after: Duration) -> Duration {
    retry_after.clamp(Duration::from_secs(60), Duration::from_secs(86_400))
}

/// How far ahead of now each stored time may lie. A time written while the clock was
/// wrong (a clock years ahead, fixed since) is not a plan: beyond its cap it is clamped on
/// read, and a warning says so once per process. A next attempt may lie up to
/// [`next_attempt_cap`] ahead; a kept renewal-information answer's
/// `Retry-After` up to [`ari_keep`]'s day; times of what happened (last
/// attempt, last success, alerts, fetches, passes) never more than [`CLOCK_SKEW`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Horizon {
    now: i64,
    next_attempt: i64,
}

impl Horizon {
    /// The horizon at `now` with the backoff's `retry.max`.
    pub fn new(now: time::OffsetDateTime, retry_max: Duration) -> Horizon {
        let cap = next_attempt_cap(retry_max).as_secs();
        Horizon {
            now: now.unix_timestamp(),
            next_attempt: i64::try_from(cap).unwrap_or(i64::MAX),
        }
    }

    /// The horizon of `config` at the time now.
    pub fn of(config: &crate::config::Config) -> Horizon {
        Horizon::new(time::OffsetDateTime::now_utc(), config.renewal.retry_max)
    }

    /// Whether `t`, a time of something that happened, lies ahead of now beyond the skew.
    fn happened_ahead(&self, t: i64) -> bool {
        t > self.now.saturating_add(CLOCK_SKEW)
    }

    /// Says once that `what` in `path` was `t`, too far ahead, and what is done instead.
    fn clamped(&self, path: &Path, what: &str, t: i64, instead: &str) {
        let when = time::OffsetDateTime::from_unix_timestamp(t)
            .map(crate::text::rfc3339)
            .unwrap_or_else(|_| t.to_string());
        crate::perms::warn_once(
            path,
            &format!(
                "{what} is {when}, further ahead than it can be (the clock was wrong when it was written); {instead}"
            ),
        );
    }
}

/// How far ahead of this host's clock a time of something that happened may lie (another
/// host's clock, a leap): five minutes.
pub const CLOCK_SKEW: i64 = 300;

impl CertState {
    /// Clamps times that lie further ahead than they can (see [`Horizon`]); `path` is the
    /// record's file, for the warning.
    fn clamp(&mut self, h: &Horizon, path: &Path) {
        if let Some(t) = self.last_attempt.filter(|&t| h.happened_ahead(t)) {
            h.clamped(path, "last_attempt", t, "taken as now");
            self.last_attempt = Some(h.now);
        }
        if let Some(t) = self.last_success.filter(|&t| h.happened_ahead(t)) {
            h.clamped(path, "last_success", t, "taken as now");
            self.last_success = Some(h.now);
        }
        if let Some(hold) = self
            .hold
            .as_mut()
            .filter(|hold| h.happened_ahead(hold.since))
        {
            h.clamped(path, "hold.since", hold.since, "taken as now");
            hold.since = h.now;
        }
        if let Some(t) = self
            .next_attempt
            .filter(|&t| t > h.now.saturating_add(h.next_attempt))
        {
            h.clamped(path, "next_attempt", t, "an attempt is allowed now");
            self.next_attempt = None;
        }
        let ahead: Vec<(String, i64)> = self
            .alerted
            .iter()
            .filter(|&(_, &t)| h.happened_ahead(t))
            .map(|(k, &t)| (k.clone(), t))
            .collect();
        for (kind, t) in ahead {
            h.clamped(
                path,
                &format!("alerted.{kind}"),
                t,
                "the alert may go out again",
            );
            self.alerted.remove(&kind);
        }
    }
}

impl KeptAri {
    /// Whether the answer can have been fetched as kept: not in the future, and not kept
    /// beyond a day after its fetch (see [`ari_keep`]).
    fn plausible(&self, h: &Horizon) -> bool {
        let longest = ari_keep(Duration::MAX).as_secs() as i64;
        !h.happened_ahead(self.fetched)
            && self.retry_after
                <= self
                    .fetched
                    .saturating_add(longest)
                    .saturating_add(CLOCK_SKEW)
    }
}

/// The renewal-information answers of every certificate, by name: `state_dir/ari.json`.
pub type Aris = BTreeMap<String, KeptAri>;

/// Reads the kept renewal-information answers; none when the cache is missing or damaged. An
/// answer fetched in the future or kept too long (a wrong clock) is dropped: the CA is asked
/// again.
pub fn load_aris(state_dir: &Path, h: &Horizon) -> Aris {
    let mut aris: Aris = read_cache(state_dir, "ari.json").unwrap_or_default();
    aris.retain(|name, kept| {
        let keep = kept.plausible(h);
        if !keep {
            h.clamped(
                &state_dir.join("ari.json"),
                &format!("{name:?}.fetched"),
                kept.fetched,
                "the answer is dropped and the CA asked again",
            );
        }
        keep
    });
    aris
}

/// Keeps the renewal-information answers (not fsynced).
pub fn save_aris(state_dir: &StateDir, aris: &Aris) -> Result<(), store::Error> {
    write_cache(state_dir, "ari.json", aris)
}

/// When each failure event of each certificate was last delivered to a channel (unix
/// seconds), by certificate and event: `state_dir/alerted.json`. Delivery ends after the
/// pass that raised the alerts has released the lock, so this memory is kept apart from the
/// records and written only under the lock ([`save_alerted`] takes the lock guard); a crash
/// that loses it costs an alert sent again.
pub type Alerted = BTreeMap<String, BTreeMap<String, i64>>;

/// Reads the alert memory; empty when missing or damaged. A time ahead of now (a wrong
/// clock) is dropped, so the alert may go out again.
pub fn load_alerted(state_dir: &Path, h: &Horizon) -> Alerted {
    let mut alerted: Alerted = read_cache(state_dir, "alerted.json").unwrap_or_default();
    for (name, events) in alerted.iter_mut() {
        events.retain(|event, &mut t| {
            let ahead = h.happened_ahead(t);
            if ahead {
                h.clamped(
                    &state_dir.join("alerted.json"),
                    &format!("{name:?}.{event:?}"),
                    t,
                    "the alert may go out again",
                );
            }
            !ahead
        });
    }
    alerted.retain(|_, events| !events.is_empty());
    alerted
}

/// Keeps the alert memory (not fsynced), under the state_dir lock that `locked` proves held.
pub fn save_alerted(locked: &store::Locked<'_>, alerted: &Alerted) -> Result<(), store::Error> {
    write_cache(locked.state_dir(), "alerted.json", alerted)
}

/// When each certificate was last found not due by a pass (unix seconds), for the metrics:
/// `state_dir/pass.json`. A certificate leaves it when a pass does anything else with it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PassRecord {
    /// Certificate name to the start of the last pass that found it not due.
    pub not_due: BTreeMap<String, i64>,
}

/// Reads the pass record; empty when missing or damaged. A time ahead of now (a wrong
/// clock) is taken as now.
pub fn load_pass(state_dir: &Path, h: &Horizon) -> PassRecord {
    let mut record: PassRecord = read_cache(state_dir, "pass.json").unwrap_or_default();
    for (name, t) in record.not_due.iter_mut() {
        if h.happened_ahead(*t) {
            h.clamped(
                &state_dir.join("pass.json"),
                &format!("not_due.{name:?}"),
                *t,
                "taken as now",
            );
            *t = h.now;
        }
    }
    record
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
    horizon: Horizon,
}

impl Records {
    /// Reads the caches of `state_dir`, with times clamped to `h`.
    pub fn load(state_dir: &Path, h: &Horizon) -> Records {
        Records {
            state_dir: state_dir.to_owned(),
            aris: load_aris(state_dir, h),
            horizon: *h,
        }
    }

    /// The record of `name` (see [`load_if_readable`]) with its kept answer.
    pub fn get(&self, name: &str) -> Option<CertState> {
        let mut s = load_if_readable(&self.state_dir, name, &self.horizon)?;
        s.ari = self.aris.get(name).cloned();
        Some(s)
    }
}

/// Where a certificate's record lives.
pub fn path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("state").join(format!("{name}.json"))
}

/// Reads a record, with its times clamped to `h`; a missing or damaged one reads as the
/// default.
pub fn load(state_dir: &Path, name: &str, h: &Horizon) -> CertState {
    let path = path(state_dir, name);
    let mut s: CertState = crate::fsutil::read_regular(&path, crate::fsutil::MAX_FILE)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    s.clamp(h, &path);
    s
}

/// Reads a record for reporting, with its times clamped to `h`: `None` when it cannot be
/// read (a monitoring user without access to state_dir), the default when there is none
/// yet.
pub fn load_if_readable(state_dir: &Path, name: &str, h: &Horizon) -> Option<CertState> {
    let path = path(state_dir, name);
    match crate::fsutil::read_regular(&path, crate::fsutil::MAX_FILE) {
        Ok(b) => {
            let mut s: CertState = serde_json::from_slice(&b).unwrap_or_default();
            s.clamp(h, &path);
            Some(s)
        }
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
    fn the_last_cause_is_kept_and_old_records_read_without_it() {
        let old: CertState =
            serde_json::from_str(r#"{"last_result":"failed","last_error":"boom"}"#).unwrap();
        assert_eq!(old.last_cause, None);
        let mut s = old.clone();
        s.failed(
            1000,
            "rolled_back",
            "verify failed",
            Duration::from_secs(60),
            Duration::from_secs(3600),
        );
        s.last_cause = Some(CauseKind::Verify);
        let text = serde_json::to_string(&s).unwrap();
        assert!(text.contains(r#""last_cause":"verify""#), "{text}");
        let back: CertState = serde_json::from_str(&text).unwrap();
        assert_eq!(back.last_cause, Some(CauseKind::Verify));
        s.succeeded(2000, "renewed");
        assert_eq!(s.last_cause, None);
        assert!(!serde_json::to_string(&s).unwrap().contains("last_cause"));
        for kind in CauseKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
    }

    #[test]
    fn backoff_doubles_up_to_max() {
        let (i, m) = (Duration::from_secs(300), Duration::from_secs(86_400));
        let secs: Vec<u64> = (1..=11).map(|n| backoff(n, i, m).as_secs()).collect();
        assert_eq!(
            secs,
            vec![
                300, 600, 1200, 2400, 4800, 9600, 19_200, 38_400, 76_800, 86_400, 86_400
            ]
        );
        assert_eq!(backoff(u32::MAX, i, m), m);
    }

    #[test]
    fn failures_and_success_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let h = Horizon::new(
            time::OffsetDateTime::from_unix_timestamp(1000).unwrap(),
            Duration::from_secs(3600),
        );
        let mut s = load(dir.path(), "www", &h);
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
        assert_eq!(load(dir.path(), "www", &h), s);
        s.succeeded(2000, "renewed");
        assert_eq!(
            (s.consecutive_failures, s.next_attempt, s.last_success),
            (0, None, Some(2000))
        );
        std::fs::write(path(dir.path(), "www"), b"{ damaged").unwrap();
        assert_eq!(load(dir.path(), "www", &h), CertState::default());
    }

    #[test]
    fn times_from_a_wrong_clock_are_clamped_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = StateDir::open(dir.path()).unwrap();
        let now = 2_000_000_000;
        let h = Horizon::new(
            time::OffsetDateTime::from_unix_timestamp(now).unwrap(),
            Duration::from_secs(86_400),
        );
        let ten_years = 10 * 365 * 86_400;
        let week = 7 * 86_400;
        // Written by a pass whose clock was ten years ahead (an older record, with its
        // alert times).
        let wrong = serde_json::json!({
            "last_attempt": now + ten_years,
            "last_success": now + ten_years,
            "next_attempt": now + ten_years + 300,
            "consecutive_failures": 1,
            "alerted": {"failed": now + ten_years, "expiring": now - 60},
        });
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        std::fs::write(path(dir.path(), "www"), wrong.to_string()).unwrap();
        let read = load(dir.path(), "www", &h);
        assert_eq!(
            (read.last_attempt, read.last_success, read.next_attempt),
            (Some(now), Some(now), None)
        );
        assert_eq!(read.alerted, [("expiring".to_owned(), now - 60)].into());
        assert!(read.may_attempt(now));
        assert_eq!(read.consecutive_failures, 1);
        // A CA's Retry-After up to its cap, and a backoff up to retry.max, are plans.
        let planned = CertState {
            last_attempt: Some(now - 10),
            next_attempt: Some(now + week),
            ..CertState::default()
        };
        save(&state_dir, "www", &planned).unwrap();
        assert_eq!(load(dir.path(), "www", &h), planned);
        assert_eq!(load_if_readable(dir.path(), "www", &h).unwrap(), planned);
        // The caches: an answer fetched in the future or kept beyond a day is dropped; a
        // pass in the future is taken as now.
        let kept = |fetched: i64, retry_after: i64| KeptAri {
            fingerprint: "ab".into(),
            window: Some((now + ten_years, now + ten_years + 86_400)),
            explanation_url: None,
            fetched,
            retry_after,
        };
        let aris: Aris = [
            (
                "ahead".to_owned(),
                kept(now + ten_years, now + ten_years + 60),
            ),
            ("long".to_owned(), kept(now - 60, now + ten_years)),
            ("fine".to_owned(), kept(now - 60, now + 3600)),
        ]
        .into();
        save_aris(&state_dir, &aris).unwrap();
        assert_eq!(
            load_aris(dir.path(), &h).into_keys().collect::<Vec<_>>(),
            ["fine"]
        );
        let pass = PassRecord {
            not_due: [("a".to_owned(), now + ten_years), ("b".to_owned(), now - 5)].into(),
        };
        save_pass(&state_dir, &pass).unwrap();
        assert_eq!(
            load_pass(dir.path(), &h).not_due,
            [("a".to_owned(), now), ("b".to_owned(), now - 5)].into()
        );
    }
}
