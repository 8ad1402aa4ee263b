//! The one retry policy of certkeeper: the ACME client, the DNS providers and the alert
//! channels all retry passing failures through it, each with its own numbers (a
//! [`RetryPolicy`] value) and its own knowledge of what is worth another attempt (which stays
//! with the caller: it is the vendor's).
//!
//! A policy bounds the retries four ways: a number of attempts, an exponential backoff with a
//! cap, the server's `Retry-After` (honoured up to a cap, see [`RetryAfter`]), and a total
//! deadline. Waits are spread by jitter ([`Jitter::Equal`]), so that clients failing together
//! do not come back together; jitter only shortens a wait, never lengthens it past the
//! backoff, and whether another attempt is made at all is decided on the full wait, so the
//! number of attempts does not depend on chance.
//!
//! [`RetryPolicy::wait`] is the decision, a pure function; [`Retry`] is one call's state (its
//! failures, its deadline, its random source) for the loops that run it. It needs no runtime:
//! the caller sleeps.

use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

/// What a server's `Retry-After` does to the next wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryAfter {
    /// Nothing: the backoff alone decides.
    Ignored,
    /// It is the wait, in place of the backoff (shorter or longer), cut to at most `cap`.
    Replaces {
        /// The longest wait a server gets.
        cap: Duration,
    },
    /// The wait is at least it (the backoff when that is longer); a server asking for more
    /// than `limit` ends the retries at once rather than hold the caller that long.
    AtLeast {
        /// The longest wait a server gets.
        limit: Duration,
    },
}

/// How waits are spread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// Every wait is the backoff itself (for tests that time the waits).
    None,
    /// "Equal jitter": a wait is drawn between half the backoff and the backoff.
    Equal,
}

/// How the passing failures of one call are retried. A value type, built with `const fn`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (`u32::MAX`: no limit but the deadline).
    pub attempts: u32,
    /// The wait after the first failure; doubled after each further one.
    pub backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
    /// What the server's `Retry-After` does.
    pub retry_after: RetryAfter,
    /// The most one call may take, retries and waits included: no wait begins that would end
    /// past it. `None`: no deadline of its own (a caller's may still apply, [`Retry::until`]).
    pub total: Option<Duration>,
    /// How waits are spread.
    pub jitter: Jitter,
}

impl RetryPolicy {
    /// `attempts` attempts with waits from `backoff`, doubling without cap, `Retry-After`
    /// ignored, no deadline, equal jitter.
    pub const fn new(attempts: u32, backoff: Duration) -> RetryPolicy {
        RetryPolicy {
            attempts,
            backoff,
            max_backoff: Duration::MAX,
            retry_after: RetryAfter::Ignored,
            total: None,
            jitter: Jitter::Equal,
        }
    }

    /// The same with the backoff capped at `max`.
    pub const fn max_backoff(mut self, max: Duration) -> RetryPolicy {
        self.max_backoff = max;
        self
    }

    /// The same with `Retry-After` handled as `retry_after` says.
    pub const fn retry_after(mut self, retry_after: RetryAfter) -> RetryPolicy {
        self.retry_after = retry_after;
        self
    }

    /// The same with a deadline of `total` per call.
    pub const fn total(mut self, total: Duration) -> RetryPolicy {
        self.total = Some(total);
        self
    }

    /// The same with `jitter`.
    pub const fn jitter(mut self, jitter: Jitter) -> RetryPolicy {
        self.jitter = jitter;
        self
    }

    /// The backoff after `failed` failures (from 1), before jitter: `backoff` doubled
    /// `failed - 1` times, at most `max_backoff`.
    pub fn nominal(&self, failed: u32) -> Duration {
        let mut wait = self.backoff;
        // Past 128 doublings any backoff has long reached `Duration::MAX`.
        for _ in 1..failed.min(128) {
            wait = wait.saturating_mul(2);
        }
        wait.min(self.max_backoff)
    }

    /// How long to wait before the next attempt after `failed` failures (from 1), or `None`
    /// to give up. `retry_after` is what the server asked (from now), `left` the time left
    /// before the deadline (if any), `sample` a random number (the jitter's draw).
    ///
    /// The decision to go on is taken on the full wait, never on the jittered one: jitter
    /// changes when the next attempt comes, not whether it does.
    pub fn wait(
        &self,
        failed: u32,
        retry_after: Option<Duration>,
        left: Option<Duration>,
        sample: u64,
    ) -> Option<Duration> {
        if failed >= self.attempts {
            return None;
        }
        let nominal = self.nominal(failed);
        let jittered = || match self.jitter {
            Jitter::None => nominal,
            Jitter::Equal => spread(nominal, sample),
        };
        let (full, wait) = match (self.retry_after, retry_after) {
            (RetryAfter::Replaces { cap }, Some(asked)) => (asked.min(cap), asked.min(cap)),
            (RetryAfter::AtLeast { limit }, asked) => {
                let asked = asked.unwrap_or(Duration::ZERO);
                if asked > limit {
                    return None;
                }
                (nominal.max(asked), jittered().max(asked))
            }
            (RetryAfter::Ignored | RetryAfter::Replaces { .. }, _) => (nominal, jittered()),
        };
        if left.is_some_and(|left| full >= left) {
            return None;
        }
        Some(wait)
    }
}

/// A wait between half of `full` and `full`, chosen by `sample`.
fn spread(full: Duration, sample: u64) -> Duration {
    let nanos = full.as_nanos();
    let half = nanos / 2;
    let cut = u128::from(sample) % (half + 1);
    let nanos = nanos - cut;
    // The seconds of `nanos` are at most `full`'s, which fit in a u64.
    Duration::new(
        u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX),
        (nanos % 1_000_000_000) as u32,
    )
}

/// One call's retries under a [`RetryPolicy`]: its failures so far, its deadline and the
/// source of its jitter.
#[derive(Debug)]
pub struct Retry {
    policy: RetryPolicy,
    deadline: Option<Instant>,
    failed: u32,
    rng: u64,
}

impl Retry {
    /// The retries of a call starting now, with a random jitter.
    pub fn new(policy: RetryPolicy) -> Retry {
        Retry::seeded(policy, RandomState::new().hash_one(Instant::now()))
    }

    /// The same with the jitter drawn from `seed` (the same seed, the same waits).
    pub fn seeded(policy: RetryPolicy, seed: u64) -> Retry {
        Retry {
            policy,
            deadline: policy.total.map(|total| Instant::now() + total),
            failed: 0,
            rng: seed,
        }
    }

    /// The same, ending at `deadline` at the latest (a caller's bound over the policy's own).
    pub fn until(mut self, deadline: Instant) -> Retry {
        self.deadline = Some(self.deadline.map_or(deadline, |own| own.min(deadline)));
        self
    }

    /// The failures so far: when [`Retry::next`] gave up, the attempts made.
    pub fn failed(&self) -> u32 {
        self.failed
    }

    /// The time left before the deadline, if there is one (for the next request's timeout).
    pub fn left(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Counts a failure worth retrying, after which the server asked to wait `retry_after`:
    /// the wait before the next attempt, or `None` to give up.
    pub fn next(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        self.failed = self.failed.saturating_add(1);
        let sample = self.draw();
        self.policy
            .wait(self.failed, retry_after, self.left(), sample)
    }

    /// Counts a failure not worth retrying (the caller gives up at once): the attempts made.
    pub fn fail_for_good(&mut self) -> u32 {
        self.failed = self.failed.saturating_add(1);
        self.failed
    }

    /// The next number of a splitmix64 sequence.
    fn draw(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    /// ACME's numbers, without jitter.
    const ACME: RetryPolicy = RetryPolicy::new(4, S)
        .max_backoff(Duration::from_secs(60))
        .retry_after(RetryAfter::AtLeast {
            limit: Duration::from_secs(60),
        })
        .jitter(Jitter::None);

    #[test]
    fn attempts_bound_the_retries() {
        assert_eq!(ACME.wait(1, None, None, 0), Some(S));
        assert_eq!(ACME.wait(2, None, None, 0), Some(2 * S));
        assert_eq!(ACME.wait(3, None, None, 0), Some(4 * S));
        assert_eq!(ACME.wait(4, None, None, 0), None);
        let mut retry = Retry::new(RetryPolicy::new(3, MS).jitter(Jitter::None));
        assert_eq!(retry.next(None), Some(MS));
        assert_eq!(retry.next(None), Some(2 * MS));
        assert_eq!(retry.next(None), None);
        assert_eq!(retry.failed(), 3);
        let mut retry = Retry::new(RetryPolicy::new(3, MS));
        assert!(retry.next(None).is_some());
        assert_eq!(retry.fail_for_good(), 2);
    }

    #[test]
    fn the_backoff_is_capped() {
        let p = RetryPolicy::new(u32::MAX, 10 * S).max_backoff(30 * S);
        assert_eq!(p.nominal(30), 30 * S);
        assert_eq!(p.nominal(u32::MAX - 1), 30 * S);
        let uncapped = RetryPolicy::new(u32::MAX, 500 * MS);
        assert_eq!(uncapped.nominal(4), 4 * S);
        assert_eq!(uncapped.nominal(200), Duration::MAX);
    }

    #[test]
    fn retry_after_at_least_is_honoured_when_longer_and_bounded() {
        let asked = |s| Some(Duration::from_secs(s));
        assert_eq!(ACME.wait(1, asked(10), None, 0), Some(10 * S));
        // Shorter than the backoff: the backoff wins.
        assert_eq!(ACME.wait(3, asked(1), None, 0), Some(4 * S));
        // Longer than the limit: give up now rather than hang the caller.
        assert_eq!(ACME.wait(1, asked(61), None, 0), None);
        assert_eq!(ACME.wait(1, asked(60), None, 0), Some(60 * S));
    }

    #[test]
    fn retry_after_replacing_is_cut_to_its_cap() {
        let p = RetryPolicy::new(5, 500 * MS)
            .retry_after(RetryAfter::Replaces { cap: 10 * S })
            .jitter(Jitter::None);
        assert_eq!(p.wait(1, Some(3600 * S), None, 0), Some(10 * S));
        // Shorter than the backoff: the server's word still.
        assert_eq!(p.wait(4, Some(S), None, 0), Some(S));
        assert_eq!(p.wait(4, None, None, 0), Some(4 * S));
        // Ignored: the backoff alone.
        let p = p.retry_after(RetryAfter::Ignored);
        assert_eq!(p.wait(1, Some(3600 * S), None, 0), Some(500 * MS));
    }

    #[test]
    fn no_wait_passes_the_deadline() {
        let p = RetryPolicy::new(u32::MAX, 500 * MS).jitter(Jitter::None);
        assert_eq!(p.wait(1, None, Some(S), 0), Some(500 * MS));
        assert_eq!(p.wait(1, None, Some(500 * MS), 0), None);
        assert_eq!(p.wait(2, None, Some(900 * MS), 0), None);
        // The decision is taken on the full wait, whatever the jitter draws.
        let jittered = p.jitter(Jitter::Equal);
        for sample in [0, 1, u64::MAX, 250_000_000] {
            assert_eq!(jittered.wait(2, None, Some(900 * MS), sample), None);
        }
        // A call's own deadline, and a caller's.
        let mut retry = Retry::new(RetryPolicy::new(u32::MAX, 10 * S).total(5 * S));
        assert!(retry.left().is_some_and(|l| l <= 5 * S));
        assert_eq!(retry.next(None), None);
        let mut retry =
            Retry::new(RetryPolicy::new(u32::MAX, 10 * MS)).until(Instant::now() + 15 * MS);
        assert!(retry.next(None).is_some());
        std::thread::sleep(20 * MS);
        assert_eq!(retry.next(None), None);
        assert_eq!(retry.failed(), 2);
    }

    #[test]
    fn jitter_only_shortens_a_wait_and_by_half_at_most() {
        let p = RetryPolicy::new(u32::MAX, 500 * MS).max_backoff(4 * S);
        let mut retry = Retry::seeded(p, 42);
        let mut seen = Vec::new();
        for failed in 1..=40 {
            let full = p.nominal(failed);
            let wait = retry.next(None).unwrap_or_default();
            assert!(wait <= full && wait >= full / 2, "{wait:?} of {full:?}");
            seen.push(wait);
        }
        // Spread, not constant.
        assert!(seen[10..].iter().any(|w| *w != seen[10]), "{seen:?}");
        assert_eq!(spread(S, 0), S);
        assert_eq!(spread(S, 500_000_000), S / 2);
        assert_eq!(spread(Duration::ZERO, 7), Duration::ZERO);
        // Deterministic with a seed.
        let waits = |seed| {
            let mut r = Retry::seeded(p, seed);
            (0..5).map(|_| r.next(None)).collect::<Vec<_>>()
        };
        assert_eq!(waits(7), waits(7));
        // A server's wait is not shortened: it asked for at least that.
        let acme = ACME.jitter(Jitter::Equal);
        for sample in [0, 1, u64::MAX] {
            let wait = acme.wait(1, Some(10 * S), None, sample);
            assert_eq!(wait, Some(10 * S));
            let wait = acme.wait(3, None, None, sample).unwrap_or_default();
            assert!(wait >= 2 * S && wait <= 4 * S, "{wait:?}");
        }
    }
}
