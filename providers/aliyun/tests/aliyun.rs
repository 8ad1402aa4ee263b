//! The Aliyun provider against its fake Alidns (feature `fake`): configuration errors, the
//! mapped error messages (exact text), domain discovery through the API, TTL, duplicates,
//! cleanup by RecordId, retries with fresh nonces, acme.sh #3585, challtestsrv mirroring and
//! the shared conformance suite.
#![cfg(feature = "fake")]
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use certkeeper_dns::testkit::conformance::{self, FakeZone};
use certkeeper_dns::testkit::http::{Request, Response, Server, write_endless, write_head};
use certkeeper_dns::{DnsProvider, RecordHandle, TxtRecord};
use certkeeper_dns_aliyun::fake::{self, FakeAlidns, Hostile, Options};
use certkeeper_dns_aliyun::{AliyunProvider, DEFAULT_ENDPOINT};

const WRONG_SECRET: &str = "credentials were refused: the AccessKeySecret does not match the \
                            AccessKey (SignatureDoesNotMatch); check access_key_secret";

fn provider(fake: &FakeAlidns) -> AliyunProvider {
    AliyunProvider::new(fake::KEY_ID.into(), fake::KEY_SECRET.into(), &fake.url()).unwrap()
}

fn provider_with(fake: &FakeAlidns, id: &str, secret: &str) -> AliyunProvider {
    AliyunProvider::new(id.into(), secret.into(), &fake.url()).unwrap()
}

fn txt(fqdn: &str, value: &str) -> TxtRecord {
    TxtRecord {
        fqdn: fqdn.into(),
        value: value.into(),
    }
}

fn count(fake: &FakeAlidns, action: &str) -> usize {
    fake.requests()
        .iter()
        .filter(|s| s.action.as_deref() == Some(action))
        .count()
}

#[test]
fn config_errors() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "",
            "s",
            DEFAULT_ENDPOINT,
            "access_key_id is empty; give the AccessKey ID of a RAM user allowed to edit Alidns",
        ),
        (
            "id",
            "",
            DEFAULT_ENDPOINT,
            "access_key_secret is empty; give the AccessKey secret that belongs to access_key_id",
        ),
        (
            "id",
            "secret\n",
            DEFAULT_ENDPOINT,
            "access_key_secret has leading or trailing white space; remove it",
        ),
        (
            " id",
            "s",
            DEFAULT_ENDPOINT,
            "access_key_id has leading or trailing white space; remove it",
        ),
        (
            "id",
            "s",
            "alidns.aliyuncs.com",
            "invalid endpoint \"alidns.aliyuncs.com\": relative URL without a base; give a URL \
             such as https://alidns.aliyuncs.com",
        ),
        (
            "id",
            "s",
            "ftp://alidns.aliyuncs.com",
            "invalid endpoint \"ftp://alidns.aliyuncs.com\": the scheme must be https (or http \
             for a local test server)",
        ),
        (
            "id",
            "s",
            "https://alidns.aliyuncs.com/?Action=x",
            "invalid endpoint \"https://alidns.aliyuncs.com/?Action=x\": the URL must not have a \
             query or fragment",
        ),
        (
            "id",
            "s",
            "https://user:pw@alidns.aliyuncs.com",
            "invalid endpoint \"<redacted>\": the URL must not carry credentials",
        ),
    ];
    for (id, secret, endpoint, expected) in cases {
        let err = AliyunProvider::new((*id).into(), (*secret).into(), endpoint).unwrap_err();
        assert_eq!(err.to_string(), *expected, "{id:?} {endpoint:?}");
    }
    assert!(AliyunProvider::new("id".into(), "s".into(), DEFAULT_ENDPOINT).is_ok());
}

#[test]
fn debug_shows_no_credentials() {
    let p = AliyunProvider::new(
        "LTAIdebugkeyid".into(),
        "debug-secret".into(),
        DEFAULT_ENDPOINT,
    )
    .unwrap();
    let debug = format!("{p:?}");
    assert!(!debug.contains("debug-secret"), "{debug}");
    assert!(!debug.contains("LTAIdebugkeyid"), "{debug}");
    assert!(debug.contains(DEFAULT_ENDPOINT), "{debug}");
}

#[tokio::test]
async fn conformance() {
    let fake = FakeAlidns::start(&["example.com", "example.co.uk"]);
    let wrong = provider_with(&fake, fake::KEY_ID, "not-the-secret");
    conformance::run(&provider(&fake), &wrong, WRONG_SECRET, &fake, "example.com").await;
}

/// The exact text of each mapped error, and that no credential leaks into it.
#[tokio::test]
async fn mapped_error_messages() {
    let fake = FakeAlidns::start(&["example.com"]);
    let record = txt("_acme-challenge.example.com.", "v");
    let cases: Vec<(AliyunProvider, &str)> = vec![
        (
            provider_with(&fake, fake::KEY_ID, "not-the-secret"),
            WRONG_SECRET,
        ),
        (
            provider_with(&fake, "LTAI5tUnknownKeyId", fake::KEY_SECRET),
            "credentials were refused: the AccessKey does not exist \
             (InvalidAccessKeyId.NotFound); check access_key_id",
        ),
        (
            provider_with(
                &fake,
                fake::NO_PERMISSION_KEY_ID,
                fake::NO_PERMISSION_KEY_SECRET,
            ),
            "credentials were refused: the AccessKey has no permission for Alidns \
             (Forbidden.RAM: User not authorized to operate on the specified resource.); grant \
             its RAM user AliyunDNSFullAccess, or a policy allowing alidns:DescribeDomains, \
             alidns:DescribeDomainRecords, alidns:AddDomainRecord and alidns:DeleteDomainRecord",
        ),
    ];
    for (p, expected) in cases {
        let err = p.present(&record).await.unwrap_err();
        let text = err.to_string();
        assert_eq!(text, expected);
        assert!(matches!(err, certkeeper_dns::Error::Auth(_)), "{err:?}");
        for secret in [
            fake::KEY_SECRET,
            "not-the-secret",
            fake::NO_PERMISSION_KEY_SECRET,
        ] {
            assert!(!text.contains(secret) && !format!("{err:?}").contains(secret));
        }
        for id in [
            fake::KEY_ID,
            fake::NO_PERMISSION_KEY_ID,
            "LTAI5tUnknownKeyId",
        ] {
            assert!(!text.contains(id), "{text}");
        }
    }

    // Clock skew.
    fake.set_clock_skew(20 * 60);
    let err = provider(&fake).present(&record).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "api error (HTTP 400): InvalidTimeStamp.Expired: Specified time stamp or date value is \
         expired. (the request's time was more than 15 minutes off Aliyun's; check the system \
         clock, e.g. that NTP is running)"
    );
    fake.set_clock_skew(0);

    // A plain API error: `Code: Message`.
    let p = provider(&fake);
    let handle = RecordHandle {
        record: record.clone(),
        id: None,
        zone: Some("example.com".into()),
    };
    assert_eq!(
        p.cleanup(&handle).await.unwrap_err().to_string(),
        "the record handle has no RecordId; only records created by present can be removed"
    );
    assert!(fake.records().is_empty());
}

#[tokio::test]
async fn zone_is_found_through_the_api_and_cached() {
    let fake = FakeAlidns::start(&["example.com", "example.co.uk", "sub.example.com"]);
    let p = provider(&fake);
    let h = p
        .present(&txt("_acme-challenge.www.example.co.uk.", "v1"))
        .await
        .unwrap();
    assert_eq!(h.zone.as_deref(), Some("example.co.uk"));
    let records = fake.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].domain, "example.co.uk");
    assert_eq!(records[0].rr, "_acme-challenge.www");
    assert_eq!(h.id.as_deref(), Some(records[0].id.as_str()));

    // The longest registered domain wins.
    let h2 = p
        .present(&txt("_acme-challenge.a.sub.example.com.", "v2"))
        .await
        .unwrap();
    assert_eq!(h2.zone.as_deref(), Some("sub.example.com"));
    assert_eq!(fake.records()[1].rr, "_acme-challenge.a");

    // Upper case in the name still lands in the domain.
    let h3 = p
        .present(&txt("_acme-challenge.Example.COM.", "v3"))
        .await
        .unwrap();
    assert_eq!(h3.zone.as_deref(), Some("example.com"));
    assert_eq!(
        count(&fake, "DescribeDomains"),
        1,
        "the domain list is cached"
    );

    // Not in the account: ZoneNotFound, after one refresh of the list.
    let err = p
        .present(&txt("_acme-challenge.example.org.", "v"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no zone found for _acme-challenge.example.org."
    );
    assert_eq!(count(&fake, "DescribeDomains"), 2);
    // "co.uk" is not a domain of the account (lego #2150).
    let err = p
        .present(&txt("_acme-challenge.example2.co.uk.", "v"))
        .await
        .unwrap_err();
    assert!(matches!(err, certkeeper_dns::Error::ZoneNotFound { .. }));
    for h in [h, h2, h3] {
        p.cleanup(&h).await.unwrap();
    }
    assert!(fake.records().is_empty());
}

#[tokio::test]
async fn domains_are_read_over_all_pages() {
    let mut domains: Vec<String> = (0..230).map(|i| format!("d{i:03}.example")).collect();
    domains.push("target.example.net".into());
    let fake = FakeAlidns::start_with(Options {
        domains,
        ..Options::default()
    });
    let p = provider(&fake);
    let h = p
        .present(&txt("_acme-challenge.target.example.net.", "v"))
        .await
        .unwrap();
    assert_eq!(h.zone.as_deref(), Some("target.example.net"));
    assert_eq!(count(&fake, "DescribeDomains"), 3);
}

#[tokio::test]
async fn ttl_is_600() {
    let fake = FakeAlidns::start(&["example.com"]);
    provider(&fake)
        .present(&txt("_acme-challenge.example.com.", "v"))
        .await
        .unwrap();
    assert_eq!(fake.records()[0].ttl, 600);
    let adds: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|s| s.action.as_deref() == Some("AddDomainRecord"))
        .collect();
    assert_eq!(adds.len(), 1);
    assert_eq!(adds[0].ttl.as_deref(), Some("600"));
    assert!(
        !fake
            .requests()
            .iter()
            .any(|s| s.code.as_deref() == Some("QuotaExceeded.TTL"))
    );
}

#[tokio::test]
async fn a_duplicate_is_ours_and_found_by_describe() {
    let fake = FakeAlidns::start(&["example.com"]);
    let p = provider(&fake);
    // Noise that the fuzzy RRKeyWord filter also matches.
    fake.add_foreign("_acme-challenge.www.example.com.", "v");
    fake.add_foreign("_acme-challenge.example.com.", "other");
    fake.add_foreign("_acme-challenge.example.com.", "v");
    let existing = fake.records()[2].id.clone();
    let h = p
        .present(&txt("_acme-challenge.example.com.", "v"))
        .await
        .unwrap();
    assert_eq!(h.id.as_deref(), Some(existing.as_str()));
    assert_eq!(fake.records().len(), 3, "nothing new was created");
    assert_eq!(count(&fake, "DescribeDomainRecords"), 1);
    p.cleanup(&h).await.unwrap();
    assert_eq!(
        fake.values("_acme-challenge.example.com."),
        ["other"],
        "only the record with our value went"
    );
    assert_eq!(fake.values("_acme-challenge.www.example.com."), ["v"]);
}

#[tokio::test]
async fn cleanup_deletes_by_record_id_only() {
    let fake = FakeAlidns::start(&["example.com"]);
    let p = provider(&fake);
    let h = p
        .present(&txt("_acme-challenge.example.com.", "v"))
        .await
        .unwrap();
    let before = fake.requests().len();
    p.cleanup(&h).await.unwrap();
    let after: Vec<_> = fake.requests()[before..].to_vec();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].action.as_deref(), Some("DeleteDomainRecord"));
    assert!(fake.records().is_empty());
    // Gone already (an earlier cleanup whose answer was lost): fine.
    p.cleanup(&h).await.unwrap();
}

#[tokio::test]
async fn retries_use_a_fresh_nonce_and_timestamp() {
    let fake = FakeAlidns::start(&["example.com"]);
    let p = provider(&fake);
    fake.fail_next(4);
    let h = p
        .present(&txt("_acme-challenge.example.com.", "v"))
        .await
        .unwrap();
    fake.fail_next(3);
    p.cleanup(&h).await.unwrap();
    let seen = fake.requests();
    assert_eq!(seen.len(), 5 + 1 + 4, "{seen:#?}");
    let nonces: HashSet<_> = seen.iter().map(|s| s.nonce.clone().unwrap()).collect();
    assert_eq!(nonces.len(), seen.len(), "every attempt has its own nonce");
    assert!(seen.iter().all(|s| s.timestamp.is_some()));
    assert!(
        !seen
            .iter()
            .any(|s| s.code.as_deref() == Some("SignatureNonceUsed"))
    );
    assert!(fake.records().is_empty());
}

#[tokio::test]
async fn retries_are_bounded() {
    let fake = FakeAlidns::start(&["example.com"]);
    let p = provider(&fake);
    fake.fail_next(100);
    let err = p
        .present(&txt("_acme-challenge.example.com.", "v"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "api error (HTTP 503): ServiceUnavailable: The request has failed due to a temporary \
         failure of the server. (gave up after 5 attempts)"
    );
    assert_eq!(fake.requests().len(), 5);
}

/// acme.sh #3585: a key without DNS permission is reported as a permission problem, after a
/// single request: a refused request is not repeated (repeating it with the same nonce is
/// what turned the answer into SignatureNonceUsed there).
#[tokio::test]
async fn no_permission_is_not_a_nonce_problem() {
    let fake = FakeAlidns::start(&["example.com"]);
    let p = provider_with(
        &fake,
        fake::NO_PERMISSION_KEY_ID,
        fake::NO_PERMISSION_KEY_SECRET,
    );
    let err = p
        .present(&txt("_acme-challenge.example.com.", "v"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("no permission"), "{text}");
    assert!(!text.to_lowercase().contains("nonce"), "{text}");
    let seen = fake.requests();
    assert_eq!(seen.len(), 1, "a 403 is not retried: {seen:#?}");
    assert_eq!(seen[0].code.as_deref(), Some("Forbidden.RAM"));
}

#[tokio::test]
async fn transport_errors_name_no_credentials() {
    let url = FakeAlidns::start(&["example.com"]).url(); // dropped: nothing listens there now
    let p = AliyunProvider::new(fake::KEY_ID.into(), fake::KEY_SECRET.into(), &url).unwrap();
    let err = p
        .present(&txt("_acme-challenge.example.com.", "v"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, certkeeper_dns::Error::Transport(_)),
        "{err:?}"
    );
    assert!(text.ends_with("(gave up after 5 attempts)"), "{text}");
    assert!(!text.contains(fake::KEY_ID) && !text.contains(fake::KEY_SECRET));
    assert!(!text.contains("Signature"), "{text}");
}

#[tokio::test]
async fn latency_is_tolerated() {
    let fake = FakeAlidns::start(&["example.com"]);
    fake.set_latency(Some(std::time::Duration::from_millis(200)));
    let p = provider(&fake);
    let h = p
        .present(&txt("_acme-challenge.example.com.", "v"))
        .await
        .unwrap();
    p.cleanup(&h).await.unwrap();
}

#[tokio::test]
async fn mirrors_into_challtestsrv() {
    let posts: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
    let seen = posts.clone();
    let challtestsrv = Server::start(move |r| {
        seen.lock()
            .unwrap()
            .push((r.path.clone(), r.json().unwrap_or_default()));
        Response {
            status: 200,
            headers: Vec::new(),
            body: Vec::new(),
        }
    });
    let fake = FakeAlidns::start_with(Options {
        challtestsrv: Some(challtestsrv.url()),
        ..Options::default()
    });
    let p = provider(&fake);
    let name = "_acme-challenge.example.com.";
    let a = p.present(&txt(name, "a")).await.unwrap();
    let b = p.present(&txt(name, "b")).await.unwrap();
    p.cleanup(&a).await.unwrap();
    p.cleanup(&b).await.unwrap();
    let posts = posts.lock().unwrap().clone();
    let expected: Vec<(String, serde_json::Value)> = vec![
        (
            "/set-txt".into(),
            serde_json::json!({"host": name, "value": "a"}),
        ),
        (
            "/set-txt".into(),
            serde_json::json!({"host": name, "value": "b"}),
        ),
        ("/clear-txt".into(), serde_json::json!({"host": name})),
        (
            "/set-txt".into(),
            serde_json::json!({"host": name, "value": "b"}),
        ),
        ("/clear-txt".into(), serde_json::json!({"host": name})),
    ];
    assert_eq!(posts, expected);
}

// --- Hostile APIs: every answer is read up to 1 MiB, listings stop at their bounds, no
// redirect is followed, and each operation has one deadline.

fn hostile(hostile: Hostile) -> FakeAlidns {
    FakeAlidns::start_with(Options {
        hostile: Some(hostile),
        ..Options::default()
    })
}

fn too_large(call: &str) -> String {
    format!(
        "the answer to {call} is larger than 1024 KiB, more than the API ever answers; it was \
         not read further"
    )
}

/// The most a hostile server below writes of one body.
const ENDLESS: usize = 256 << 20;

fn handle(id: &str) -> RecordHandle {
    RecordHandle {
        record: txt("_acme-challenge.example.com.", "v"),
        id: Some(id.into()),
        zone: Some("example.com".into()),
    }
}

/// A server answering `DescribeDomains` with `example.com` and `AddDomainRecord` with
/// `DomainRecordDuplicate`, except `action`, answered `status` with a body that never ends
/// (no length, until the client hangs up); counts the requests of `action` and the bytes
/// written.
fn endless(action: &'static str, status: u16) -> (Server, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let (hits, written) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (h, w) = (hits.clone(), written.clone());
    let server = Server::start_raw(move |req: &Request, stream: &mut TcpStream| {
        let form = req.form();
        let asked = form
            .iter()
            .find(|(k, _)| k == "Action")
            .map(|(_, v)| v.as_str());
        if asked == Some(action) {
            h.fetch_add(1, Ordering::SeqCst);
            let n = write_endless(
                stream,
                status,
                &[("Content-Type", "application/json")],
                br#"{"RequestId":""#,
                b"x",
                ENDLESS,
            );
            w.fetch_add(n, Ordering::SeqCst);
            return;
        }
        let (status, body) = match asked {
            Some("DescribeDomains") => (
                200,
                r#"{"TotalCount":1,"Domains":{"Domain":[{"DomainName":"example.com"}]}}"#,
            ),
            _ => (
                400,
                r#"{"Code":"DomainRecordDuplicate","Message":"The DNS record already exists."}"#,
            ),
        };
        let _ = write_head(
            stream,
            status,
            &[
                ("Content-Length", &body.len().to_string()),
                ("Connection", "close"),
            ],
        );
        let _ = std::io::Write::write_all(stream, body.as_bytes());
    });
    (server, hits, written)
}

#[tokio::test]
async fn answers_past_one_mib_are_refused_on_every_call() {
    let record = txt("_acme-challenge.example.com.", "v");
    // 20,000 domains a page (1.5 MB), claiming a billion.
    let fake = hostile(Hostile::HugeDomainPages {
        per_page: 20_000,
        total: 1_000_000_000,
    });
    let err = provider(&fake).present(&record).await.unwrap_err();
    assert!(
        matches!(err, certkeeper_dns::Error::AnswerTooLarge { .. }),
        "{err:?}"
    );
    assert_eq!(err.to_string(), too_large("DescribeDomains"));
    assert_eq!(fake.requests().len(), 1, "not retried");
    // Bodies that never end (and say no length), as answers and as error answers of each
    // call: cut at 1 MiB, never retried.
    for (action, status) in [
        ("DescribeDomains", 503),
        ("AddDomainRecord", 200),
        ("AddDomainRecord", 400),
        ("DescribeDomainRecords", 200),
        ("DeleteDomainRecord", 200),
        ("DeleteDomainRecord", 429),
    ] {
        let (server, hits, written) = endless(action, status);
        let p = AliyunProvider::new(fake::KEY_ID.into(), fake::KEY_SECRET.into(), &server.url())
            .unwrap();
        let err = if action == "DeleteDomainRecord" {
            p.cleanup(&handle("1000000000000000001")).await.unwrap_err()
        } else {
            p.present(&record).await.unwrap_err()
        };
        assert_eq!(err.to_string(), too_large(action), "{action} {status}");
        assert_eq!(hits.load(Ordering::SeqCst), 1, "{action} {status}");
        drop(server);
        assert!(
            written.load(Ordering::SeqCst) < ENDLESS,
            "{action} {status}: the client read the whole body"
        );
    }
}

#[tokio::test]
async fn listings_are_bounded_in_items_and_pages() {
    let record = txt("_acme-challenge.example.com.", "v");
    // More domains on a page than asked for.
    let fake = hostile(Hostile::HugeDomainPages {
        per_page: 150,
        total: 1_000_000_000,
    });
    let err = provider(&fake).present(&record).await.unwrap_err();
    assert!(
        matches!(err, certkeeper_dns::Error::PageTooLong { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "DescribeDomains answered 150 items on a page of 100; the API pages no more than asked"
    );
    // Pages without end: the listing fails at its bound (a partial list would name the
    // wrong zone or none).
    let fake = hostile(Hostile::HugeDomainPages {
        per_page: 1,
        total: 1_000_000_000,
    });
    let err = provider(&fake).present(&record).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "DescribeDomains goes on past 200 pages of 100; certkeeper reads no more of one listing"
    );
    assert_eq!(count(&fake, "DescribeDomains"), 200);
}

#[tokio::test]
async fn redirects_are_refused_naming_only_the_host() {
    let stolen = Arc::new(AtomicUsize::new(0));
    let seen = stolen.clone();
    let thief = Server::start(move |_: &Request| {
        seen.fetch_add(1, Ordering::SeqCst);
        Response::json(200, &serde_json::json!({"RecordId": "1"}))
    });
    for status in [301, 302, 303, 307, 308] {
        let location = format!("{}/secret-path?leak=query", thief.url());
        let fake = hostile(Hostile::Redirect { status, location });
        let p = provider(&fake);
        let want = format!(
            "the API answered HTTP {status}, a redirect to 127.0.0.1; redirects are not \
             followed, since the request carries credentials: configure the API's own address"
        );
        let err = p
            .present(&txt("_acme-challenge.example.com.", "v"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, certkeeper_dns::Error::Redirect { .. }),
            "{err:?}"
        );
        assert_eq!(err.to_string(), want);
        assert_eq!(
            p.cleanup(&handle("1000000000000000001"))
                .await
                .unwrap_err()
                .to_string(),
            want
        );
        assert_eq!(fake.requests().len(), 2, "{status} is not retried");
    }
    assert_eq!(stolen.load(Ordering::SeqCst), 0, "a redirect was followed");
}

#[tokio::test]
async fn one_deadline_bounds_each_operation() {
    // A slow API with pages without end: present stops at its deadline, whatever the pages.
    let fake = FakeAlidns::start_with(Options {
        latency: Some(Duration::from_millis(100)),
        hostile: Some(Hostile::HugeDomainPages {
            per_page: 1,
            total: 1_000_000_000,
        }),
        ..Options::default()
    });
    let p = provider(&fake).with_deadline(Duration::from_secs(1));
    let start = Instant::now();
    let err = p
        .present(&txt("_acme-challenge.example.com.", "v"))
        .await
        .unwrap_err();
    let took = start.elapsed();
    assert!(
        matches!(err, certkeeper_dns::Error::Deadline { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "creating the record did not finish within 1s (every request, retry and page \
         included); the API is too slow or not answering"
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert!(
        count(&fake, "DescribeDomains") < 200,
        "it stopped before the page bound"
    );

    // An API that does not answer: cleanup stops at its deadline, before a request's own
    // timeout (10 s) and its retries.
    let fake = FakeAlidns::start_with(Options {
        latency: Some(Duration::from_secs(30)),
        ..Options::default()
    });
    let p = provider(&fake).with_deadline(Duration::from_millis(500));
    let start = Instant::now();
    let err = p.cleanup(&handle("1000000000000000001")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "removing the record did not finish within 0.5s (every request, retry and page \
         included); the API is too slow or not answering"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// A server answering the first `throttled` requests `400 Throttling.User` with `Retry-After:
/// <retry_after()>` (Alidns's documentation promises none; the gateway in front of it may add
/// one), then `DescribeDomains` with `example.com` and `AddDomainRecord` with a record; it
/// notes when each request came.
fn throttling(
    throttled: usize,
    retry_after: impl Fn() -> String + Send + Sync + 'static,
) -> (Server, Arc<Mutex<Vec<Instant>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let server = Server::start(move |req: &Request| {
        let n = {
            let mut seen = s.lock().unwrap();
            seen.push(Instant::now());
            seen.len()
        };
        if n <= throttled {
            let body = serde_json::json!({
                "RequestId": "0F4E6E5B-0000-4000-8000-000000000001",
                "Code": "Throttling.User",
                "Message": "Request was denied due to user flow control.",
            });
            return Response::json(400, &body).with_header("Retry-After", &retry_after());
        }
        let form = req.form();
        let action = form
            .iter()
            .find(|(k, _)| k == "Action")
            .map(|(_, v)| v.as_str());
        let body = match action {
            Some("DescribeDomains") => serde_json::json!({
                "TotalCount": 1, "PageNumber": 1, "PageSize": 100,
                "Domains": {"Domain": [{"DomainName": "example.com"}]},
            }),
            _ => serde_json::json!({"RequestId": "r", "RecordId": "9999985"}),
        };
        Response::json(200, &body)
    });
    (server, seen)
}

fn gap(seen: &Mutex<Vec<Instant>>, i: usize) -> Duration {
    let seen = seen.lock().unwrap();
    seen[i + 1].duration_since(seen[i])
}

/// Throttling with `Retry-After` (seconds) is retried no sooner than the server asked; the
/// backoff alone would have asked again within half a second.
#[tokio::test]
async fn throttling_waits_for_its_retry_after() {
    let (server, seen) = throttling(1, || "3".to_owned());
    let p =
        AliyunProvider::new(fake::KEY_ID.into(), fake::KEY_SECRET.into(), &server.url()).unwrap();
    p.present(&txt("_acme-challenge.example.com.", "v"))
        .await
        .unwrap();
    let waited = gap(&seen, 0);
    assert!(waited >= Duration::from_secs(3), "{waited:?}");
}

/// The same with `Retry-After` as an HTTP date.
#[tokio::test]
async fn throttling_waits_for_its_retry_after_date() {
    let (server, seen) = throttling(1, || {
        httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(4))
    });
    let p =
        AliyunProvider::new(fake::KEY_ID.into(), fake::KEY_SECRET.into(), &server.url()).unwrap();
    p.present(&txt("_acme-challenge.example.com.", "v"))
        .await
        .unwrap();
    // The date has whole seconds: at least 3 of the 4 asked.
    let waited = gap(&seen, 0);
    assert!(waited >= Duration::from_secs(3), "{waited:?}");
}

/// A `Retry-After` longer than the provider waits ends the retries at once, with the
/// vendor's error, instead of holding the operation or asking again too early.
#[tokio::test]
async fn a_long_retry_after_ends_the_retries_at_once() {
    let (server, seen) = throttling(100, || "3600".to_owned());
    let p =
        AliyunProvider::new(fake::KEY_ID.into(), fake::KEY_SECRET.into(), &server.url()).unwrap();
    let err = p
        .present(&txt("_acme-challenge.example.com.", "v"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Throttling.User"), "{err}");
    assert_eq!(seen.lock().unwrap().len(), 1);
}
