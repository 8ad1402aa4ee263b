//! Renewal timing, in one place for `check`, `renew` and `run`. Every function takes the
//! current time from its caller (the clock is passed in), so each decision is tested without
//! a CA and without sleeping.
//!
//! - [`due`] / [`should_renew`]: when a live certificate is due. The CA's ARI window wins
//!   (a window that has moved into the past means now); without one, `before_expiry` decides;
//!   an expired certificate is always due.
//! - [`retry_at`]: when a certificate whose last attempt failed may be tried again (the
//!   backoff itself is [`crate::state::backoff`]).
//! - [`jittered`]: the daemon's passes on `renewal.schedule` (a
//!   [`Cron`](crate::config::Cron): UTC, a seconds field first, day-of-month and day-of-week
//!   both required when both are given), each delayed by a random part of `renewal.jitter` so that a fleet does not hit its CA at once.
//! - [`next_wake`]: the daemon sleeps until the next scheduled pass or the first moment a
//!   certificate becomes due or leaves its backoff, whichever comes first, and not before.
//!

use std::time::Duration;

use time::OffsetDateTime;

use crate::config::BeforeExpiry;
use crate::state::{CertState, RenewalWindow};
use crate::x509::Cert;

/// Where a renewal time came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DueSource {
    /// The CA's ARI window.
    Ari,
    /// `renewal.before_expiry` (no window, or an unusable one).
    BeforeExpiry,
    /// The certificate has expired already.
    Expired,
    /// The configured ACME profile is not the one the live leaf was ordered with.
    ProfileChanged,
}

/// When a certificate should be renewed, and whether that time has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Due {
    /// Renew now.
    pub now: bool,
    /// The chosen renewal time.
    pub at: OffsetDateTime,
    /// What decided it.
    pub source: DueSource,
}

/// Decides whether a certificate valid from `not_before` to `not_after` is due at `now`.
///
/// With a usable ARI `window` (start before end, end not after notAfter), the renewal time is
/// a point in the window chosen by `pick` in `[0, 1)` (RFC 9773 §4.2: a uniformly random
/// point, so that many clients do not renew at once; the caller draws `pick`, once per
/// certificate, and keeps it so the time is stable between passes). Without one, it is
/// notAfter minus the `before_expiry` lead time. An expired certificate is always due.
pub fn should_renew(
    now: OffsetDateTime,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    window: Option<&RenewalWindow>,
    before_expiry: BeforeExpiry,
    pick: f64,
) -> Due {
    if now >= not_after {
        return Due {
            now: true,
            at: not_after,
            source: DueSource::Expired,
        };
    }
    if let Some(w) = window.filter(|w| w.start < w.end && w.end <= not_after) {
        let pick = if pick.is_finite() {
            pick.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let at = w.start + (w.end - w.start) * pick;
        return Due {
            now: now >= at,
            at,
            source: DueSource::Ari,
        };
    }
    let lifetime: Duration = (not_after - not_before)
        .try_into()
        .unwrap_or(Duration::ZERO);
    let lead =
        time::Duration::try_from(before_expiry.lead_time(lifetime)).unwrap_or(time::Duration::MAX);
    let at = not_after.checked_sub(lead).unwrap_or(not_before);
    Due {
        now: now >= at,
        at,
        source: DueSource::BeforeExpiry,
    }
}

/// When `leaf` is due at `now`: [`should_renew`] with a point in the ARI window that is
/// fixed for the leaf (see [`stable_pick`]), so every pass and every command agrees.
pub fn due(
    leaf: &Cert,
    window: Option<&RenewalWindow>,
    before_expiry: BeforeExpiry,
    now: OffsetDateTime,
) -> Due {
    should_renew(
        now,
        leaf.not_before,
        leaf.not_after,
        window,
        before_expiry,
        stable_pick(leaf),
    )
}

/// The due decision that `check`, `renew` and `run` share for a managed certificate: a
/// changed profile makes it due now; otherwise [`due`] with the CA's kept renewal window for
/// this very leaf (see [`crate::state::KeptAri`]), or `before_expiry` without one. `state`
/// is `None` for a user who cannot read it (then `before_expiry` decides).
pub fn decide(
    leaf: &Cert,
    state: Option<&CertState>,
    profile: Option<&str>,
    before_expiry: BeforeExpiry,
    now: OffsetDateTime,
) -> Due {
    if let Some(issued) = state.and_then(|s| s.issued.as_ref())
        && issued.fingerprint == leaf.fingerprint
        && issued.profile.as_deref() != profile
    {
        return Due {
            now: true,
            at: now,
            source: DueSource::ProfileChanged,
        };
    }
    let window = state
        .and_then(|s| s.ari.as_ref())
        .filter(|k| k.fingerprint == leaf.fingerprint)
        .and_then(kept_window);
    due(leaf, window.as_ref(), before_expiry, now)
}

/// The window of a kept answer, when it has one.
pub fn kept_window(kept: &crate::state::KeptAri) -> Option<RenewalWindow> {
    let (start, end) = kept.window?;
    Some(RenewalWindow {
        start: OffsetDateTime::from_unix_timestamp(start).ok()?,
        end: OffsetDateTime::from_unix_timestamp(end).ok()?,
        explanation_url: kept.explanation_url.clone(),
        retry_after: Duration::ZERO,
    })
}

/// Whether a kept answer about `leaf` may still be used at `now` (the CA's `Retry-After`
/// has not passed).
pub fn ari_fresh(kept: Option<&crate::state::KeptAri>, leaf: &Cert, now: OffsetDateTime) -> bool {
    kept.is_some_and(|k| k.fingerprint == leaf.fingerprint && now.unix_timestamp() < k.retry_after)
}

/// A point in `[0, 1)` fixed for a leaf (from its fingerprint), so that the renewal time
/// chosen inside an ARI window is random across certificates but the same on every pass.
pub fn stable_pick(leaf: &Cert) -> f64 {
    let prefix = leaf.fingerprint.get(..13).unwrap_or("0");
    u64::from_str_radix(prefix, 16).map_or(0.0, |n| n as f64 / (1u64 << 52) as f64)
}

/// When a certificate may be tried again after a failure; `None` when nothing holds it back
/// at `now`.
pub fn retry_at(state: &CertState, now: OffsetDateTime) -> Option<OffsetDateTime> {
    state
        .next_attempt
        .filter(|t| *t > now.unix_timestamp())
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
}

/// A scheduled tick delayed by `pick` (in `[0, 1)`, drawn per pass) of `jitter`.
pub fn jittered(tick: OffsetDateTime, jitter: Duration, pick: f64) -> OffsetDateTime {
    let pick = if pick.is_finite() {
        pick.clamp(0.0, 1.0)
    } else {
        0.0
    };
    tick + jitter.mul_f64(pick)
}

/// A fresh random pick in `[0, 1)` for [`jittered`].
pub fn random_pick() -> f64 {
    let mut bytes = [0u8; 8];
    // Without randomness the jitter is 0: passes run on the tick, which is still correct.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        return 0.0;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// The moment the daemon must wake: the next scheduled pass or the earliest of `moments`
/// (a certificate's due time, the end of its backoff) that lies after `now`.
pub fn next_wake(
    now: OffsetDateTime,
    next_pass: Option<OffsetDateTime>,
    moments: impl IntoIterator<Item = OffsetDateTime>,
) -> Option<OffsetDateTime> {
    moments
        .into_iter()
        .filter(|m| *m > now)
        .chain(next_pass)
        .min()
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const NB: OffsetDateTime = datetime!(2026-01-01 0:00 UTC);
    const NA: OffsetDateTime = datetime!(2026-04-01 0:00 UTC); // 90 days
    const THIRTY_DAYS: BeforeExpiry = BeforeExpiry::Duration(Duration::from_secs(30 * 86_400));

    fn window(start: OffsetDateTime, end: OffsetDateTime) -> RenewalWindow {
        RenewalWindow {
            start,
            end,
            explanation_url: None,
            retry_after: Duration::from_secs(6 * 3600),
        }
    }

    #[test]
    fn without_a_window_before_expiry_decides() {
        let due_at = datetime!(2026-03-02 0:00 UTC);
        let d = should_renew(
            due_at - time::Duration::seconds(1),
            NB,
            NA,
            None,
            THIRTY_DAYS,
            0.5,
        );
        assert_eq!(
            d,
            Due {
                now: false,
                at: due_at,
                source: DueSource::BeforeExpiry
            }
        );
        assert!(should_renew(due_at, NB, NA, None, THIRTY_DAYS, 0.5).now);
    }

    #[test]
    fn a_fraction_of_the_lifetime_works_as_fallback() {
        let third = BeforeExpiry::Fraction {
            numerator: 1,
            denominator: 3,
        };
        let d = should_renew(NB, NB, NA, None, third, 0.0);
        assert_eq!(d.at, datetime!(2026-03-02 0:00 UTC));
        assert!(!d.now);
    }

    #[test]
    fn the_ca_window_wins_over_before_expiry() {
        // The CA asks for an early renewal (e.g. a revocation incident): due although
        // before_expiry alone would wait another month.
        let w = window(
            datetime!(2026-01-10 0:00 UTC),
            datetime!(2026-01-12 0:00 UTC),
        );
        let now = datetime!(2026-01-11 12:00 UTC);
        let d = should_renew(now, NB, NA, Some(&w), THIRTY_DAYS, 0.5);
        assert_eq!(
            d,
            Due {
                now: true,
                at: datetime!(2026-01-11 0:00 UTC),
                source: DueSource::Ari
            }
        );
        // A window later than before_expiry's time is followed too.
        let late = window(
            datetime!(2026-03-10 0:00 UTC),
            datetime!(2026-03-12 0:00 UTC),
        );
        let d = should_renew(
            datetime!(2026-03-05 0:00 UTC),
            NB,
            NA,
            Some(&late),
            THIRTY_DAYS,
            0.0,
        );
        assert!(!d.now);
        assert_eq!(d.at, datetime!(2026-03-10 0:00 UTC));
    }

    #[test]
    fn the_pick_chooses_a_point_inside_the_window() {
        let w = window(
            datetime!(2026-03-01 0:00 UTC),
            datetime!(2026-03-03 0:00 UTC),
        );
        let at = |pick| should_renew(NB, NB, NA, Some(&w), THIRTY_DAYS, pick).at;
        assert_eq!(at(0.0), w.start);
        assert_eq!(at(0.25), datetime!(2026-03-01 12:00 UTC));
        assert_eq!(at(1.0), w.end);
        assert_eq!(at(7.0), w.end);
        assert_eq!(at(-1.0), w.start);
        assert_eq!(at(f64::NAN), w.start);
    }

    #[test]
    fn a_window_in_the_past_means_now() {
        let w = window(
            datetime!(2026-02-01 0:00 UTC),
            datetime!(2026-02-02 0:00 UTC),
        );
        assert!(
            should_renew(
                datetime!(2026-02-20 0:00 UTC),
                NB,
                NA,
                Some(&w),
                THIRTY_DAYS,
                0.9
            )
            .now
        );
    }

    #[test]
    fn unusable_windows_fall_back() {
        // Inverted.
        let inverted = window(
            datetime!(2026-03-03 0:00 UTC),
            datetime!(2026-03-01 0:00 UTC),
        );
        // Ending after the certificate has expired.
        let beyond = window(
            datetime!(2026-03-30 0:00 UTC),
            datetime!(2026-04-05 0:00 UTC),
        );
        for w in [inverted, beyond] {
            let d = should_renew(NB, NB, NA, Some(&w), THIRTY_DAYS, 0.5);
            assert_eq!(d.source, DueSource::BeforeExpiry, "{w:?}");
            assert_eq!(d.at, datetime!(2026-03-02 0:00 UTC));
        }
    }

    #[test]
    fn expired_is_always_due() {
        let w = window(
            datetime!(2026-03-01 0:00 UTC),
            datetime!(2026-03-03 0:00 UTC),
        );
        let d = should_renew(NA, NB, NA, Some(&w), THIRTY_DAYS, 0.5);
        assert_eq!(
            d,
            Due {
                now: true,
                at: NA,
                source: DueSource::Expired
            }
        );
    }

    #[test]
    fn retry_at_is_the_backoff_end_while_it_lies_ahead() {
        let s = CertState {
            next_attempt: Some(NB.unix_timestamp() + 600),
            ..CertState::default()
        };
        assert_eq!(retry_at(&s, NB), Some(NB + time::Duration::minutes(10)));
        assert_eq!(retry_at(&s, NB + time::Duration::minutes(10)), None);
        assert_eq!(retry_at(&CertState::default(), NB), None);
    }

    #[test]
    fn jitter_delays_within_its_bound() {
        let tick = datetime!(2026-11-30 12:17 UTC);
        let half_hour = Duration::from_secs(1800);
        assert_eq!(jittered(tick, half_hour, 0.0), tick);
        assert_eq!(
            jittered(tick, half_hour, 0.5),
            tick + time::Duration::minutes(15)
        );
        assert_eq!(jittered(tick, half_hour, f64::NAN), tick);
        assert_eq!(
            jittered(tick, half_hour, 9.0),
            tick + time::Duration::minutes(30)
        );
        for _ in 0..100 {
            let p = random_pick();
            assert!((0.0..1.0).contains(&p), "{p}");
        }
    }

    #[test]
    fn the_daemon_wakes_for_the_first_moment_ahead() {
        let now = datetime!(2026-11-30 8:00 UTC);
        let pass = datetime!(2026-11-30 12:17 UTC);
        let backoff_end = datetime!(2026-11-30 8:05 UTC);
        let past = datetime!(2026-11-30 7:00 UTC);
        assert_eq!(
            next_wake(now, Some(pass), [past, backoff_end]),
            Some(backoff_end)
        );
        assert_eq!(next_wake(now, Some(pass), [past]), Some(pass));
        assert_eq!(next_wake(now, None, []), None);
        assert_eq!(next_wake(now, Some(pass), [now]), Some(pass));
    }
}
