//! Retries of one ACME step when the CA or the network had a passing problem: `rateLimited`,
//! `serverInternal`, a 5xx answer, a `badNonce` that outlived instant-acme's own three
//! attempts, or a request that never got an answer. They run under certkeeper's one retry
//! policy ([`RetryPolicy`], from `certkeeper_dns::retry`): waits grow exponentially, spread by
//! jitter, a `Retry-After` from the server is honoured when it asks for longer, and the whole
//! is bounded: a server that asks to wait longer than the policy's limit (60 s by default)
//! gets its error returned at once.

use std::cell::Cell;
use std::future::Future;
use std::time::{Duration, SystemTime};

pub(crate) use certkeeper_dns::retry::Retry;
use certkeeper_dns::retry::{RetryAfter, RetryPolicy};
use instant_acme::Problem;

use super::http::{RETRY_AFTER_SLOT, Transport};
use super::problem::ProblemType;

/// How transient failures of one ACME step are retried: certkeeper's one retry policy.
pub type Backoff = RetryPolicy;

/// The default: 4 attempts, waits of up to 1 s, 2 s, 4 s (longer when the server asks, up to
/// 60 s; a server asking more ends the retries).
pub const DEFAULT_BACKOFF: Backoff = RetryPolicy::new(4, Duration::from_secs(1))
    .max_backoff(MAX_WAIT)
    .retry_after(RetryAfter::AtLeast { limit: MAX_WAIT });

/// The longest wait between two attempts, the server's included.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Whether an error from instant-acme is worth another attempt.
pub(crate) fn is_transient(err: &instant_acme::Error) -> bool {
    match err {
        instant_acme::Error::Api(problem) => problem_is_transient(problem),
        instant_acme::Error::Other(e) => e.downcast_ref::<Transport>().is_some(),
        instant_acme::Error::Hyper(_) => true,
        _ => false,
    }
}

fn problem_is_transient(problem: &Problem) -> bool {
    if problem.status.is_some_and(|s| s >= 500) {
        return true;
    }
    matches!(
        problem.r#type.as_deref().map(ProblemType::parse),
        Some(ProblemType::RateLimited | ProblemType::ServerInternal | ProblemType::BadNonce)
    )
}

/// The outcome of [`retrying`]: the step's error after the last attempt, with how many were
/// made and the `Retry-After` the server sent with it.
pub(crate) struct Exhausted {
    pub(crate) error: instant_acme::Error,
    pub(crate) attempts: u32,
    pub(crate) retry_after: Option<SystemTime>,
}

/// Runs one attempt inside a retry scope: its result, and the `Retry-After` the server sent
/// with an error answer during it.
pub(crate) async fn attempt<T>(
    fut: impl Future<Output = Result<T, instant_acme::Error>>,
) -> (Result<T, instant_acme::Error>, Option<SystemTime>) {
    RETRY_AFTER_SLOT
        .scope(Cell::new(None), async {
            let result = fut.await;
            (result, RETRY_AFTER_SLOT.with(Cell::get))
        })
        .await
}

/// Counts a failed attempt: the wait before the next one, or `None` to give up (the error
/// is final, or the policy's bounds are reached).
pub(crate) fn next_delay(
    retry: &mut Retry,
    error: &instant_acme::Error,
    asked: Option<SystemTime>,
) -> Option<Duration> {
    match is_transient(error) {
        true => retry.next(wait_asked(asked, SystemTime::now())),
        false => {
            retry.fail_for_good();
            None
        }
    }
}

/// How long from `now` the server asked to wait (nothing for a time already past).
fn wait_asked(at: Option<SystemTime>, now: SystemTime) -> Option<Duration> {
    at.and_then(|at| at.duration_since(now).ok())
}

/// Runs the async expression `$body` (a `Result<T, instant_acme::Error>`) until it succeeds,
/// fails for good, or `$backoff` gives up; evaluates to `Result<T, Exhausted>`.
///
/// A macro rather than a function taking an async closure: the expression is a fresh async
/// block on every attempt, so it may borrow the order mutably and the whole issue future
/// stays `Send` (async closures are not yet, for borrowed captures).
macro_rules! retrying {
    ($backoff:expr, $step:expr, $body:expr) => {{
        let mut retry = $crate::acme::retry::Retry::new(*$backoff);
        loop {
            let (result, asked) = $crate::acme::retry::attempt(async { $body }).await;
            match result {
                Ok(v) => break Ok(v),
                Err(error) => {
                    match $crate::acme::retry::next_delay(&mut retry, &error, asked) {
                        Some(delay) => {
                            tracing::debug!(step = $step, attempt = retry.failed(),
                                delay = %$crate::text::seconds(delay),
                                error = %error, "Retrying ACME request.");
                            tokio::time::sleep(delay).await;
                        }
                        None => {
                            break Err($crate::acme::retry::Exhausted {
                                error,
                                attempts: retry.failed(),
                                retry_after: asked,
                            });
                        }
                    }
                }
            }
        }
    }};
}
pub(crate) use retrying;

#[cfg(test)]
mod tests {
    use super::*;
    use certkeeper_dns::retry::Jitter;

    /// The default, without jitter.
    const B: Backoff = DEFAULT_BACKOFF.jitter(Jitter::None);

    /// The wait after `failed` failures when the server asked to wait until `at`.
    trait Delay {
        fn delay(&self, failed: u32, at: Option<SystemTime>, now: SystemTime) -> Option<Duration>;
    }

    impl Delay for Backoff {
        fn delay(&self, failed: u32, at: Option<SystemTime>, now: SystemTime) -> Option<Duration> {
            self.wait(failed, wait_asked(at, now), None, 0)
        }
    }

    #[test]
    fn waits_double_and_stop_after_the_last_attempt() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(B.delay(1, None, now), Some(Duration::from_secs(1)));
        assert_eq!(B.delay(2, None, now), Some(Duration::from_secs(2)));
        assert_eq!(B.delay(3, None, now), Some(Duration::from_secs(4)));
        assert_eq!(B.delay(4, None, now), None);
    }

    #[test]
    fn retry_after_is_honoured_when_longer_and_bounded() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |s| Some(now + Duration::from_secs(s));
        assert_eq!(B.delay(1, at(10), now), Some(Duration::from_secs(10)));
        // Shorter than the backoff: the backoff wins.
        assert_eq!(B.delay(3, at(1), now), Some(Duration::from_secs(4)));
        // In the past: ignored.
        assert_eq!(
            B.delay(1, Some(now - Duration::from_secs(5)), now),
            Some(Duration::from_secs(1))
        );
        // Longer than max_wait: give up now rather than hang a pass.
        assert_eq!(B.delay(1, at(61), now), None);
        assert_eq!(B.delay(1, at(60), now), Some(Duration::from_secs(60)));
    }

    #[test]
    fn exponential_wait_is_capped() {
        let b = Backoff::new(40, Duration::from_secs(10))
            .max_backoff(Duration::from_secs(30))
            .retry_after(RetryAfter::AtLeast {
                limit: Duration::from_secs(30),
            })
            .jitter(Jitter::None);
        let now = SystemTime::UNIX_EPOCH;
        assert_eq!(b.delay(30, None, now), Some(Duration::from_secs(30)));
    }

    fn problem(kind: Option<&str>, status: Option<u16>) -> instant_acme::Error {
        instant_acme::Error::Api(
            serde_json::from_value(serde_json::json!({ "type": kind, "status": status })).unwrap(),
        )
    }

    #[test]
    fn transient_errors_are_told_apart() {
        assert!(is_transient(&problem(
            Some("urn:ietf:params:acme:error:rateLimited"),
            Some(429)
        )));
        assert!(is_transient(&problem(
            Some("urn:ietf:params:acme:error:serverInternal"),
            Some(500)
        )));
        assert!(is_transient(&problem(None, Some(503))));
        assert!(is_transient(&problem(
            Some("urn:ietf:params:acme:error:badNonce"),
            Some(400)
        )));
        assert!(is_transient(
            &Transport {
                url: "https://ca.test/dir".into(),
                reason: "connection refused".into()
            }
            .into()
        ));
        assert!(!is_transient(&problem(
            Some("urn:ietf:params:acme:error:unauthorized"),
            Some(403)
        )));
        assert!(!is_transient(&problem(
            Some("urn:ietf:params:acme:error:malformed"),
            Some(400)
        )));
        assert!(!is_transient(&instant_acme::Error::Str("no order URL")));
    }

    #[tokio::test]
    async fn run_retries_transient_errors_and_reports_attempts() {
        let fast = Backoff::new(3, Duration::from_millis(1))
            .max_backoff(Duration::from_secs(1))
            .retry_after(RetryAfter::AtLeast {
                limit: Duration::from_secs(1),
            });
        let mut calls = 0;
        let out: Result<i32, Exhausted> = retrying!(&fast, "test", {
            calls += 1;
            match calls {
                1 | 2 => Err(problem(None, Some(503))),
                _ => Ok(calls),
            }
        });
        assert_eq!(out.ok(), Some(3));

        let mut calls = 0;
        let out: Result<(), Exhausted> = retrying!(&fast, "test", {
            calls += 1;
            Err(problem(None, Some(503)))
        });
        assert_eq!(out.err().map(|e| e.attempts), Some(3));
        assert_eq!(calls, 3);

        let mut calls = 0;
        let out: Result<(), Exhausted> = retrying!(&fast, "test", {
            calls += 1;
            Err(problem(
                Some("urn:ietf:params:acme:error:unauthorized"),
                Some(403),
            ))
        });
        assert_eq!(out.err().map(|e| e.attempts), Some(1));
        assert_eq!(calls, 1);
    }
}
