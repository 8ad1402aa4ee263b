//! Holding a certificate on the pair a rollback restored: `certkeeper rollback NAME --hold`
//! sets a hold in the certificate's record ([`crate::state::Hold`]), and while it is there a
//! pass neither deploys (not even material kept in `pending/`, which stays for later) nor
//! orders for it. `certkeeper release NAME` ends it, and so does time: once the live leaf is
//! within half of `renewal.before_expiry` of its notAfter ([`ends_at`]), holding any longer
//! would let it expire, and the pass renews it as usual and says why.
//!
//! The hold is written like every record: whole, under the state_dir lock, refused where
//! something that is not a regular file sits, and its time clamped on read when a wrong
//! clock put it in the future.

use std::time::Duration;

use time::OffsetDateTime;

use crate::config::BeforeExpiry;
use crate::state::{self, Hold, Horizon};
use crate::store;
use crate::x509::Cert;

/// When a hold on `leaf` ends by itself: half of the `before_expiry` lead time before its
/// notAfter (for a fraction of the lifetime, half of that fraction's lead time).
pub fn ends_at(leaf: &Cert, before_expiry: BeforeExpiry) -> OffsetDateTime {
    ends_between(leaf.not_before, leaf.not_after, before_expiry)
}

/// [`ends_at`] of a leaf valid from `not_before` to `not_after`.
fn ends_between(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    before_expiry: BeforeExpiry,
) -> OffsetDateTime {
    let lifetime: Duration = (not_after - not_before)
        .try_into()
        .unwrap_or(Duration::ZERO);
    let half = before_expiry.lead_time(lifetime) / 2;
    let half = time::Duration::try_from(half).unwrap_or(time::Duration::MAX);
    not_after.checked_sub(half).unwrap_or(not_before)
}

/// Sets a hold on `name` in its record, under the lock that `locked` proves held, and makes
/// it durable before returning. A hold already there is replaced (a new rollback, a new
/// restored pair).
pub fn set(
    locked: &store::Locked<'_>,
    name: &str,
    snapshot: &str,
    fingerprint: &str,
    horizon: &Horizon,
    now: OffsetDateTime,
) -> Result<(), store::Error> {
    let state_dir = locked.state_dir();
    let mut record = state::load(state_dir.path(), name, horizon);
    record.hold = Some(Hold {
        since: now.unix_timestamp(),
        by: who(),
        snapshot: Some(snapshot.to_owned()),
        fingerprint: Some(fingerprint.to_owned()),
    });
    state::save(state_dir, name, &record)?;
    state_dir.sync()
}

/// Removes the hold on `name`, under the lock that `locked` proves held, durably; returns
/// the hold that was removed, `None` when there was none (nothing is written then).
pub fn release(
    locked: &store::Locked<'_>,
    name: &str,
    horizon: &Horizon,
) -> Result<Option<Hold>, store::Error> {
    let state_dir = locked.state_dir();
    let mut record = state::load(state_dir.path(), name, horizon);
    let Some(hold) = record.hold.take() else {
        return Ok(None);
    };
    state::save(state_dir, name, &record)?;
    state_dir.sync()?;
    Ok(Some(hold))
}

/// Who runs this command, for the record: the login name behind `sudo` when there is one,
/// and the user of this process (its name, or its uid when it has none).
pub fn who() -> Option<String> {
    let uid = rustix::process::getuid();
    let me = match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid.as_raw())) {
        Ok(Some(u)) => u.name,
        _ => format!("uid {}", uid.as_raw()),
    };
    // SUDO_USER is what sudo says of the caller: worth keeping beside the account, never
    // instead of it (anyone can set it).
    match std::env::var("SUDO_USER") {
        Ok(s) if !s.is_empty() && s != me && s.len() <= 64 && !s.chars().any(char::is_control) => {
            Some(format!("{me} (sudo from {s})"))
        }
        _ => Some(me),
    }
}

/// How long before a hold ends by itself, as a reader wants it: whole days, or hours under
/// two days.
pub fn human_left(left: time::Duration) -> String {
    if left.is_negative() {
        return format!("expired {}", human_span(-left));
    }
    format!("expires in {}", human_span(left))
}

fn human_span(d: time::Duration) -> String {
    if d >= time::Duration::days(2) {
        format!("{} days", d.whole_days())
    } else {
        let h = d.whole_hours();
        format!("{h} hour{}", if h == 1 { "" } else { "s" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_ends_at_half_the_lead_time() {
        let not_before = OffsetDateTime::from_unix_timestamp(1_000_000_000).unwrap();
        let na = not_before + time::Duration::days(90);
        let thirty = BeforeExpiry::parse("30d").unwrap();
        assert_eq!(
            ends_between(not_before, na, thirty),
            na - time::Duration::days(15)
        );
        // A third of 90 days is 30 days: half of it, 15.
        let third = BeforeExpiry::parse("1/3").unwrap();
        assert_eq!(
            ends_between(not_before, na, third),
            na - time::Duration::days(15)
        );
        // A lead time longer than twice the lifetime: the hold has ended before it began.
        let long = BeforeExpiry::parse("400d").unwrap();
        assert!(ends_between(not_before, na, long) < not_before);
        assert_eq!(human_left(time::Duration::days(9)), "expires in 9 days");
        assert_eq!(human_left(time::Duration::hours(30)), "expires in 30 hours");
        assert_eq!(human_left(time::Duration::hours(-1)), "expired 1 hour");
    }
}
