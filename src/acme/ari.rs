//! ACME Renewal Information (RFC 9773): the CA's suggested window, and the decision of when a
//! live certificate is due, which prefers that window and falls back to `before_expiry`.
//!
//! The decision is a pure function of its inputs (the time included), so it is tested
//! without a CA and without sleeping.

use std::time::Duration;

use time::OffsetDateTime;

use crate::config::BeforeExpiry;

/// The CA's suggested renewal window for one certificate.
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

/// Where a renewal time came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DueSource {
    /// The CA's ARI window.
    Ari,
    /// `renewal.before_expiry` (no window, or an unusable one).
    BeforeExpiry,
    /// The certificate has expired already.
    Expired,
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
}
