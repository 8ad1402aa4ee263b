//! The conformance suite every DNS provider runs against its fake API: what certkeeper's
//! DNS-01 orchestration relies on, whatever the vendor.
//!
//! - two values under one name coexist (an apex and its wildcard share one
//!   `_acme-challenge` name), and cleaning one up leaves the other;
//! - cleanup removes exactly the record `present` created, never a foreign one;
//! - transient API failures (429, 5xx) are survived;
//! - wrong credentials fail with the provider's clear message.
//!
//! Cancellation of a `present` in flight is the orchestration's business (it cleans up what
//! a cancelled order created) and is tested there.

use crate::{DnsProvider, TxtRecord};

/// What the suite needs from a fake API besides the provider itself.
pub trait FakeZone: Send + Sync {
    /// The TXT values published at `fqdn` (with the trailing dot) now.
    fn values(&self, fqdn: &str) -> Vec<String>;
    /// Publishes `value` at `fqdn` as someone else would, not through the provider.
    fn add_foreign(&self, fqdn: &str, value: &str);
    /// Makes the next `n` API requests fail with a retryable error (429 or a 5xx).
    fn fail_next(&self, n: usize);
}

/// Runs the suite: `provider` works against `fake`, `wrong` is the same provider with
/// credentials the fake refuses, whose error must contain `wrong_message`. Records are made
/// under `_certkeeper-conformance.<zone>.`; `zone` is a zone the fake serves.
pub async fn run(
    provider: &dyn DnsProvider,
    wrong: &dyn DnsProvider,
    wrong_message: &str,
    fake: &dyn FakeZone,
    zone: &str,
) {
    let fqdn = format!("_certkeeper-conformance.{zone}.");
    let record = |value: &str| TxtRecord {
        fqdn: fqdn.clone(),
        value: value.to_owned(),
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };

    // Two values under one name coexist; cleanup removes exactly one.
    let a = provider
        .present(&record("value-a"))
        .await
        .expect("present a");
    let b = provider
        .present(&record("value-b"))
        .await
        .expect("present b");
    assert_eq!(
        sorted(fake.values(&fqdn)),
        ["value-a", "value-b"],
        "two values under one name must coexist"
    );
    provider.cleanup(&a).await.expect("cleanup a");
    assert_eq!(
        fake.values(&fqdn),
        ["value-b"],
        "cleanup removed more than its record"
    );
    provider.cleanup(&b).await.expect("cleanup b");
    assert!(fake.values(&fqdn).is_empty(), "records left behind");

    // A foreign record under the same name is never touched.
    fake.add_foreign(&fqdn, "someone-else");
    let ours = provider
        .present(&record("ours"))
        .await
        .expect("present beside a foreign record");
    provider
        .cleanup(&ours)
        .await
        .expect("cleanup beside a foreign record");
    assert_eq!(
        fake.values(&fqdn),
        ["someone-else"],
        "the foreign record was touched"
    );

    // Transient failures are retried.
    fake.fail_next(2);
    let h = provider
        .present(&record("after-failures"))
        .await
        .expect("present must survive two transient failures");
    fake.fail_next(2);
    provider
        .cleanup(&h)
        .await
        .expect("cleanup must survive two transient failures");
    assert_eq!(fake.values(&fqdn), ["someone-else"]);

    // Wrong credentials: the clear message, and nothing created.
    let err = wrong
        .present(&record("refused"))
        .await
        .expect_err("wrong credentials must fail");
    assert!(
        err.to_string().contains(wrong_message),
        "wrong credentials: {err} (expected it to contain {wrong_message:?})"
    );
    assert_eq!(fake.values(&fqdn), ["someone-else"]);
}
