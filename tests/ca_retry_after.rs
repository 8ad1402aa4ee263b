//! A CA's `Retry-After` sets the certificate's next attempt wherever the CA sends it: on a
//! 503 (or any 5xx, or a 429 without a problem document) as on a `rateLimited` problem, on
//! newNonce and newAccount as on newOrder, as seconds or as an HTTP date; the failure's kind
//! stays what the answer was. A time already past, or absurdly far, never makes a certificate
//! hammer the CA or wait for ever.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use time::OffsetDateTime;

use crate::util::fake_acme::{FakeAcme, path};
use crate::util::{Dir, Run};

/// A week: the longest a CA's `Retry-After` holds a certificate back.
const WEEK: i64 = 7 * 86_400;
/// The first step of the usual backoff ladder (`renewal.retry.initial`'s default).
const LADDER_FIRST: i64 = 300;

#[test]
fn a_503_with_retry_after_on_new_order_sets_the_next_attempt_to_the_cas_time() {
    let fake = FakeAcme::start();
    fake.unavailable(path::NEW_ORDER, 100, 503, None, "7200");
    let host = Host::new(&fake);
    let started = now();
    let run = host.renew();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        first_line(&run)
            .starts_with("www: FAILED: issuer fake: new order: the CA answered HTTP 503"),
        "{run:?}"
    );
    // No retries against a two-hour Retry-After.
    assert_eq!(requests_to(&fake, path::NEW_ORDER), 1, "{run:?}");
    host.assert_next_attempt_near(started + 7200);
    host.assert_cause("network");
    // The next pass waits: nothing is asked of the CA.
    let run = host.renew();
    assert!(
        run.stdout.starts_with("www: last attempt failed"),
        "{run:?}"
    );
    assert_eq!(requests_to(&fake, path::NEW_ORDER), 1, "{run:?}");
}

#[test]
fn a_503_with_retry_after_on_new_nonce_sets_the_next_attempt_to_the_cas_time() {
    let fake = FakeAcme::start();
    fake.unavailable(path::NEW_NONCE, 100, 503, None, "7200");
    let host = Host::new(&fake);
    let started = now();
    let run = host.renew();
    assert_eq!(run.code, 1, "{run:?}");
    let line = first_line(&run);
    assert!(
        line.starts_with("www: FAILED: issuer fake: ")
            && line.contains("HTTP 503")
            && !line.contains("missing data"),
        "{run:?}"
    );
    assert_eq!(
        requests_to(&fake, path::NEW_NONCE),
        1,
        "retried anyway: {run:?}"
    );
    host.assert_next_attempt_near(started + 7200);
    host.assert_cause("network");
}

/// A 503 with a problem document, opening the account: the same.
#[test]
fn a_server_internal_new_account_with_retry_after_sets_the_next_attempt() {
    let fake = FakeAcme::start();
    fake.unavailable(path::NEW_ACCOUNT, 100, 503, Some("serverInternal"), "5400");
    let host = Host::new(&fake);
    let started = now();
    let run = host.renew();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        first_line(&run).contains("the CA answered HTTP 503 serverInternal: "),
        "{run:?}"
    );
    assert_eq!(requests_to(&fake, path::NEW_ORDER), 0, "{run:?}");
    host.assert_next_attempt_near(started + 5400);
    host.assert_cause("network");
    let samples = crate::metrics::parse(&host.dir.run(&["metrics"]).stdout);
    assert_eq!(
        crate::metrics::value(
            &samples,
            "certkeeper_certificate_last_result",
            &[("name", "www"), ("result", "failed"), ("cause", "network")]
        ),
        Some(1.0)
    );
}

/// `Retry-After` as an HTTP date, on a 429 whose body is no problem document (a proxy's
/// page): the CA's time, and the kind is a rate limit.
#[test]
fn an_http_date_retry_after_on_a_bare_429_sets_the_next_attempt() {
    let fake = FakeAcme::start();
    let at = SystemTime::now() + Duration::from_secs(3 * 3600);
    let date = httpdate::fmt_http_date(at);
    fake.unavailable(path::NEW_ORDER, 100, 429, None, &date);
    let host = Host::new(&fake);
    let run = host.renew();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(first_line(&run).contains("HTTP 429"), "{run:?}");
    assert_eq!(requests_to(&fake, path::NEW_ORDER), 1, "{run:?}");
    let expected = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    host.assert_next_attempt_near(expected);
    host.assert_cause("rate_limited");
}

/// A date already past is no plan: the client's retries run, then the usual backoff ladder
/// sets the next attempt (never "now", which would ask again on every pass).
#[test]
fn a_past_retry_after_leaves_the_backoff_ladder() {
    let fake = FakeAcme::start();
    fake.unavailable(
        path::NEW_ORDER,
        100,
        503,
        None,
        "Wed, 21 Oct 2015 07:28:00 GMT",
    );
    let host = Host::new(&fake);
    let started = now();
    let run = host.renew();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        requests_to(&fake, path::NEW_ORDER) > 1,
        "not retried: {run:?}"
    );
    let next = host.next_attempt();
    assert!(
        next >= started + LADDER_FIRST && next < started + 3600,
        "next attempt {next}, expected the ladder's first step after {started}"
    );
    host.assert_cause("network");
}

/// An absurd number of seconds neither overflows the clock nor holds the certificate back
/// for more than a week.
#[test]
fn an_absurd_retry_after_is_capped_at_a_week() {
    for absurd in ["18446744073709551615", "Fri, 31 Dec 9999 23:59:59 GMT"] {
        let fake = FakeAcme::start();
        fake.unavailable(path::NEW_ORDER, 100, 503, None, absurd);
        let host = Host::new(&fake);
        let started = now();
        let run = host.renew();
        assert_eq!(run.code, 1, "{absurd}: {run:?}");
        assert!(!run.stderr.contains("panicked"), "{absurd}: {run:?}");
        assert_eq!(requests_to(&fake, path::NEW_ORDER), 1, "{absurd}: {run:?}");
        host.assert_next_attempt_near(started + WEEK);
    }
}

/// A host ordering `www` from the fake through a DNS hook that only logs.
struct Host {
    dir: Dir,
}

impl Host {
    fn new(fake: &FakeAcme) -> Host {
        let dir = Dir::new();
        let hook = dir.write("hooks/log", "#!/bin/sh\nexit 0\n");
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        let roots = fake.write_root(dir.join("fake-root.pem"));
        dir.config(&format!(
            "state_dir: state\n\
             issuers:\n  fake:\n    type: acme\n    directory: {directory}\n    contact: [\"mailto:ops@example.com\"]\n    trust_roots: {roots}\n\
             dns_providers:\n  hook:\n    type: exec\n    command: [hooks/log]\n\
             certificates:\n  - name: www\n    domains: [shop.example.com]\n    issuer: fake\n    dns_provider: hook\n    \
             fullchain: live/www/fullchain.pem\n    privkey: live/www/privkey.pem\n",
            directory = fake.directory_url(),
            roots = roots.display(),
        ));
        Host { dir }
    }

    fn renew(&self) -> Run {
        self.dir.run(&["renew"])
    }

    fn state(&self) -> Value {
        let bytes = std::fs::read(self.dir.join("state/state/www.json")).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn next_attempt(&self) -> i64 {
        let state = self.state();
        state["next_attempt"]
            .as_i64()
            .unwrap_or_else(|| panic!("no next attempt: {state:#}"))
    }

    /// The next attempt is `expected` (a minute either way: the run's own time, a date's
    /// whole seconds).
    fn assert_next_attempt_near(&self, expected: i64) {
        let next = self.next_attempt();
        assert!(
            (next - expected).abs() < 60,
            "next attempt {next}, expected about {expected}"
        );
    }

    fn assert_cause(&self, cause: &str) {
        let state = self.state();
        assert_eq!(state["last_cause"], cause, "{state:#}");
    }
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn first_line(run: &Run) -> &str {
    run.stdout.lines().next().unwrap_or_default()
}

/// Requests the fake received whose path starts with `prefix`.
fn requests_to(fake: &FakeAcme, prefix: &str) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.path.starts_with(prefix))
        .count()
}
