//! The Cloudflare provider against the fake Cloudflare API (feature `fake`) and against
//! canned answers: zone discovery, the request bodies, identical records, cleanup by id,
//! retries and their bounds, every mapped error message, and the shared conformance suite.
#![allow(clippy::unwrap_used)]

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use certkeeper_dns::testkit::conformance::{self, FakeZone};
use certkeeper_dns::testkit::http::{Request, Response, Server, write_endless, write_head};
use certkeeper_dns::{DnsProvider, Error as DnsError, RecordHandle, TxtRecord};
use certkeeper_dns_cloudflare::fake::{FakeCloudflare, Hostile, Options, TOKEN};
use certkeeper_dns_cloudflare::{CloudflareProvider, DEFAULT_RETRY, RetryAfter, RetryPolicy};
use serde_json::json;

/// Retries without real waits.
const FAST: RetryPolicy = RetryPolicy::new(5, Duration::from_millis(5))
    .retry_after(RetryAfter::Replaces {
        cap: Duration::from_millis(10),
    })
    .total(Duration::from_secs(10));

fn provider(api_base: &str, token: &str, zone_id: Option<String>) -> CloudflareProvider {
    CloudflareProvider::new(token.to_owned(), api_base, zone_id)
        .unwrap()
        .with_retry(FAST)
}

fn record(fqdn: &str, value: &str) -> TxtRecord {
    TxtRecord {
        fqdn: fqdn.into(),
        value: value.into(),
    }
}

const WRONG_TOKEN: &str = "wrong-token-0000000000000000000000000000";

#[tokio::test]
async fn conformance_with_zone_lookup() {
    let fake = FakeCloudflare::start(&["example.com", "test"]);
    let p = provider(&fake.url(), TOKEN, None);
    let wrong = provider(&fake.url(), WRONG_TOKEN, None);
    conformance::run(
        &p,
        &wrong,
        "credentials were refused: 9109: Invalid access token (looking up the zone of \
         _certkeeper-conformance.example.com.); check api_token, and that it is an API token, \
         not a global API key; a token without Zone:Read cannot look zones up: grant it \
         Zone:Read or set zone_id",
        &fake,
        "example.com",
    )
    .await;
}

#[tokio::test]
async fn conformance_with_a_pinned_zone_and_no_zone_read() {
    let fake = FakeCloudflare::start_with(Options {
        zone_read: false,
        ..Options::default()
    });
    let zone = fake.zone_id("example.com").unwrap();
    let p = provider(&fake.url(), TOKEN, Some(zone.clone()));
    let wrong = provider(&fake.url(), WRONG_TOKEN, Some(zone.clone()));
    conformance::run(
        &p,
        &wrong,
        &format!(
            "credentials were refused: 9109: Invalid access token; check api_token, and that \
             it is an API token, not a global API key, and that the token has Zone:DNS:Edit \
             on zone {zone}"
        ),
        &fake,
        "example.com",
    )
    .await;
    assert!(
        fake.requests().iter().all(|r| r.path != "/client/v4/zones"),
        "a pinned zone needs no lookup"
    );
}

#[tokio::test]
async fn present_sends_the_documented_body_and_cleanup_deletes_by_id() {
    let fake = FakeCloudflare::start(&["example.com"]);
    let p = provider(&fake.url(), TOKEN, None);
    let rec = record("_acme-challenge.example.com.", "gfj9Xq-Rw_8");
    let handle = p.present(&rec).await.unwrap();
    let zone = fake.zone_id("example.com").unwrap();
    let stored = fake.records();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        handle,
        RecordHandle {
            record: rec.clone(),
            id: Some(stored[0].id.clone()),
            zone: Some(zone.clone()),
        }
    );
    let posts: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 1);
    assert_eq!(
        posts[0].path,
        format!("/client/v4/zones/{zone}/dns_records")
    );
    assert_eq!(
        posts[0].body,
        Some(json!({
            "type": "TXT",
            "name": "_acme-challenge.example.com",
            "content": "gfj9Xq-Rw_8",
            "ttl": 120,
        }))
    );
    assert_eq!(
        posts[0].authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(stored[0].ttl, 120);

    let before = fake.requests().len();
    p.cleanup(&handle).await.unwrap();
    let after: Vec<_> = fake.requests().into_iter().skip(before).collect();
    assert_eq!(after.len(), 1, "cleanup is one DELETE: {after:?}");
    assert_eq!(after[0].method, "DELETE");
    assert_eq!(
        after[0].path,
        format!("/client/v4/zones/{zone}/dns_records/{}", stored[0].id)
    );
    assert!(fake.records().is_empty());
}

#[tokio::test]
async fn the_zone_is_the_longest_suffix_cloudflare_knows_and_is_cached() {
    let fake = FakeCloudflare::start(&["example.com", "test"]);
    let p = provider(&fake.url(), TOKEN, None);
    let h = p
        .present(&record("_acme-challenge.www.example.com.", "v1"))
        .await
        .unwrap();
    assert_eq!(h.zone, fake.zone_id("example.com"));
    let looked_up: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.path == "/client/v4/zones")
        .map(|r| r.query[0].1.clone())
        .collect();
    assert_eq!(
        looked_up,
        [
            "_acme-challenge.www.example.com",
            "www.example.com",
            "example.com"
        ]
    );
    // The same name again, and the apex under the same zone: no more lookups of known names.
    let before = fake.requests().len();
    p.present(&record("_acme-challenge.www.example.com.", "v2"))
        .await
        .unwrap();
    let h2 = p
        .present(&record("_acme-challenge.example.com.", "v3"))
        .await
        .unwrap();
    assert_eq!(h2.zone, fake.zone_id("example.com"));
    let zone_lookups: Vec<String> = fake
        .requests()
        .iter()
        .skip(before)
        .filter(|r| r.path == "/client/v4/zones")
        .map(|r| r.query[0].1.clone())
        .collect();
    assert_eq!(zone_lookups, ["_acme-challenge.example.com"]);

    // A one-label zone.
    let h3 = p
        .present(&record("_acme-challenge.host.test.", "v4"))
        .await
        .unwrap();
    assert_eq!(h3.zone, fake.zone_id("test"));
    assert_eq!(fake.values("_acme-challenge.host.test."), ["v4"]);
}

#[tokio::test]
async fn a_name_under_no_zone_is_zone_not_found() {
    let fake = FakeCloudflare::start(&["example.com"]);
    let p = provider(&fake.url(), TOKEN, None);
    let err = p
        .present(&record("_acme-challenge.example.org.", "v"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DnsError::ZoneNotFound { ref fqdn } if fqdn == "_acme-challenge.example.org.")
    );
    assert_eq!(
        err.to_string(),
        "no zone found for _acme-challenge.example.org."
    );
    assert!(fake.records().is_empty());
}

#[tokio::test]
async fn a_pinned_zone_works_without_zone_read() {
    let fake = FakeCloudflare::start_with(Options {
        zone_read: false,
        ..Options::default()
    });
    let zone = fake.zone_id("example.com").unwrap();
    let p = provider(&fake.url(), TOKEN, Some(zone.clone()));
    let h = p
        .present(&record("_acme-challenge.example.com.", "v"))
        .await
        .unwrap();
    assert_eq!(h.zone.as_deref(), Some(zone.as_str()));
    assert_eq!(fake.values("_acme-challenge.example.com."), ["v"]);
    p.cleanup(&h).await.unwrap();
    assert!(fake.records().is_empty());

    // The same token without a pin cannot look the zone up, and is told what to do.
    let unpinned = provider(&fake.url(), TOKEN, None);
    let err = unpinned
        .present(&record("_acme-challenge.example.com.", "v"))
        .await
        .unwrap_err();
    assert!(matches!(err, DnsError::Auth(_)));
    assert_eq!(
        err.to_string(),
        "credentials were refused: 9109: Unauthorized to access requested resource (looking \
         up the zone of _acme-challenge.example.com.); check api_token, and that it is an API \
         token, not a global API key; a token without Zone:Read cannot look zones up: grant \
         it Zone:Read or set zone_id"
    );
}

#[tokio::test]
async fn an_identical_record_counts_as_ours() {
    let fake = FakeCloudflare::start(&["example.com"]);
    let p = provider(&fake.url(), TOKEN, None);
    let fqdn = "_acme-challenge.example.com.";
    fake.add_foreign(fqdn, "other");
    fake.add_foreign(fqdn, "ours");
    let existing = fake.records()[1].id.clone();
    let h = p.present(&record(fqdn, "ours")).await.unwrap();
    assert_eq!(h.id.as_deref(), Some(existing.as_str()));
    let list = fake
        .requests()
        .into_iter()
        .find(|r| r.method == "GET" && r.path.ends_with("/dns_records"))
        .unwrap();
    assert_eq!(
        list.query[..3],
        [
            ("type".to_owned(), "TXT".to_owned()),
            ("name".to_owned(), "_acme-challenge.example.com".to_owned()),
            ("content".to_owned(), "ours".to_owned()),
        ]
    );
    p.cleanup(&h).await.unwrap();
    assert_eq!(fake.values(fqdn), ["other"]);
}

#[tokio::test]
async fn cleanup_of_a_record_already_gone_succeeds() {
    let fake = FakeCloudflare::start(&["example.com"]);
    let p = provider(&fake.url(), TOKEN, None);
    let h = p
        .present(&record("_acme-challenge.example.com.", "v"))
        .await
        .unwrap();
    p.cleanup(&h).await.unwrap();
    p.cleanup(&h).await.unwrap();
    assert_eq!(fake.requests().last().unwrap().status, 404);
}

#[tokio::test]
async fn cleanup_needs_a_record_id() {
    let fake = FakeCloudflare::start(&["example.com"]);
    let p = provider(&fake.url(), TOKEN, None);
    fake.add_foreign("_acme-challenge.example.com.", "v");
    let err = p
        .cleanup(&RecordHandle {
            record: record("_acme-challenge.example.com.", "v"),
            id: None,
            zone: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the record handle carries no record id; cleanup deletes only the record present \
         created, by its id"
    );
    assert_eq!(fake.values("_acme-challenge.example.com."), ["v"]);
}

#[tokio::test]
async fn a_handle_without_zone_finds_it_again() {
    let fake = FakeCloudflare::start(&["example.com"]);
    let p = provider(&fake.url(), TOKEN, None);
    let mut h = p
        .present(&record("_acme-challenge.example.com.", "v"))
        .await
        .unwrap();
    h.zone = None;
    let fresh = provider(&fake.url(), TOKEN, None);
    fresh.cleanup(&h).await.unwrap();
    assert!(fake.records().is_empty());
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried() {
    let fake = FakeCloudflare::start(&["example.com"]);
    let p = provider(&fake.url(), TOKEN, None);
    // 429, 500, 429, 500: the fifth attempt succeeds.
    fake.fail_next(4);
    let h = p
        .present(&record("_acme-challenge.example.com.", "v"))
        .await
        .unwrap();
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses[..5], [429, 500, 429, 500, 200]);
    fake.fail_next(4);
    p.cleanup(&h).await.unwrap();
    assert!(fake.records().is_empty());

    // Five failures: the last one is reported, with how many attempts were made.
    fake.fail_next(5);
    let err = p
        .present(&record("_acme-challenge.example.com.", "v"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "api error (HTTP 429): 971: Please wait and consider throttling your request speed \
         (gave up after 5 attempts)"
    );
    assert!(fake.records().is_empty());
}

/// A `Retry-After` of an hour is cut to the policy's cap: the retry comes after the cap, and
/// long before the hour (the bounds are wide: what is checked is which wait was taken).
#[tokio::test]
async fn retry_after_is_honoured_up_to_its_cap() {
    let posts = Arc::new(AtomicUsize::new(0));
    let seen = posts.clone();
    let server = Server::start(move |_: &Request| {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            return Response::json(
                429,
                &json!({"success": false, "errors": [{"code": 971, "message": "Please wait"}],
                        "messages": [], "result": null}),
            )
            .with_header("Retry-After", "3600");
        }
        Response::json(
            200,
            &json!({"success": true, "errors": [], "messages": [],
                    "result": {"id": "372e67954025e0ba6aaa6d586b9e0b59", "type": "TXT",
                               "name": "_acme-challenge.example.com", "content": "v"}}),
        )
    });
    let p = CloudflareProvider::new(
        TOKEN.into(),
        &format!("{}/client/v4", server.url()),
        Some("023e105f4ecef8ad9ca31a8372d0c353".into()),
    )
    .unwrap()
    .with_retry(RetryPolicy {
        backoff: Duration::from_millis(1),
        retry_after: RetryAfter::Replaces {
            cap: Duration::from_millis(300),
        },
        ..DEFAULT_RETRY
    });
    let start = Instant::now();
    p.present(&record("_acme-challenge.example.com.", "v"))
        .await
        .unwrap();
    let took = start.elapsed();
    assert_eq!(posts.load(Ordering::SeqCst), 2);
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(60),
        "Retry-After: 3600 capped at 300 ms, took {took:?}"
    );
}

#[tokio::test]
async fn retries_stop_within_the_total_time() {
    let fake = FakeCloudflare::start(&["example.com"]);
    let p = CloudflareProvider::new(TOKEN.into(), &fake.url(), fake.zone_id("example.com"))
        .unwrap()
        .with_retry(
            RetryPolicy::new(5, Duration::from_millis(150))
                .retry_after(RetryAfter::Replaces {
                    cap: Duration::from_millis(150),
                })
                .total(Duration::from_millis(400)),
        );
    fake.fail_next(5);
    let start = Instant::now();
    let err = p
        .present(&record("_acme-challenge.example.com.", "v"))
        .await
        .unwrap_err();
    // 429 (wait 150 ms), 500 (the next wait, 300 ms, would pass 400 ms): stop.
    assert_eq!(
        err.to_string(),
        "api error (HTTP 500): 10002: An unknown error has occurred (gave up after 2 attempts)"
    );
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 500], "no third attempt");
    // The one wait taken; the bound above it is wide (10x the total).
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_secs(4),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_hanging_api_times_out_within_the_total_time() {
    // Answers after 30 s: far past the total of 500 ms.
    let fake = FakeCloudflare::start_with(Options {
        latency: Duration::from_secs(30),
        ..Options::default()
    });
    let p = CloudflareProvider::new(TOKEN.into(), &fake.url(), fake.zone_id("example.com"))
        .unwrap()
        .with_retry(FAST.total(Duration::from_millis(500)));
    let start = Instant::now();
    let err = p
        .present(&record("_acme-challenge.example.com.", "v"))
        .await
        .unwrap_err();
    assert!(matches!(err, DnsError::Transport(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("timed out"), "{text}");
    assert!(text.ends_with("(gave up after 1 attempt)"), "{text}");
    // 10x the total, and far below the answer's 30 s.
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_refused_connection_is_a_transport_error_after_retries() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let p = provider(
        &format!("http://127.0.0.1:{port}/client/v4"),
        TOKEN,
        Some("0123456789abcdef0123456789abcdef".into()),
    );
    let err = p
        .present(&record("_acme-challenge.example.com.", "v"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DnsError::Transport(_)), "{text}");
    assert!(
        text.starts_with("transport error: error sending request"),
        "{text}"
    );
    assert!(text.contains("Connection refused"), "{text}");
    assert!(text.ends_with("(gave up after 5 attempts)"), "{text}");
}

/// The messages of the errors the fake can give, through the fake.
#[tokio::test]
async fn error_messages_from_the_fake() {
    let fake = FakeCloudflare::start(&["example.com"]);
    let zone = fake.zone_id("example.com").unwrap();
    let rec = record("_acme-challenge.example.com.", "v");
    let unknown_zone = "0123456789abcdef0123456789abcdef";
    let cases: Vec<(CloudflareProvider, String)> = vec![
        (
            provider(&fake.url(), WRONG_TOKEN, Some(zone.clone())),
            format!(
                "credentials were refused: 9109: Invalid access token; check api_token, and \
                 that it is an API token, not a global API key, and that the token has \
                 Zone:DNS:Edit on zone {zone}"
            ),
        ),
        (
            // The fake refuses tokens outside Cloudflare's alphabet as a malformed header.
            provider(&fake.url(), "not.a.token", None),
            "credentials were refused: 6003: Invalid request headers (6111: Invalid format for \
             Authorization header); check api_token, and that it is an API token, not a global \
             API key"
                .into(),
        ),
        (
            provider(&fake.url(), TOKEN, Some(unknown_zone.into())),
            format!(
                "api error (HTTP 404): 7003: Could not route to /zones/{unknown_zone}/dns_records, \
                 perhaps your object identifier is invalid?; check zone_id {unknown_zone} (on \
                 the zone's Overview page)"
            ),
        ),
    ];
    for (p, want) in cases {
        let err = p.present(&rec).await.unwrap_err();
        assert_eq!(err.to_string(), want);
        assert!(matches!(err, DnsError::Auth(_) | DnsError::Api { .. }));
    }
    assert!(fake.records().is_empty());
}

/// A server giving one canned answer to record calls (zone lookups find `example.com`).
fn canned(status: u16, body: &'static str) -> Server {
    Server::start(move |req: &Request| {
        if req.path == "/client/v4/zones" {
            let found = req.query_param("name") == Some("example.com");
            let result = if found {
                json!([{"id": "023e105f4ecef8ad9ca31a8372d0c353", "name": "example.com"}])
            } else {
                json!([])
            };
            return Response::json(
                200,
                &json!({"success": true, "errors": [], "messages": [], "result": result}),
            );
        }
        Response {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        }
    })
}

/// The messages of answers the fake never gives (copied from Cloudflare's documented shapes).
#[tokio::test]
async fn error_messages_from_canned_answers() {
    let cases: &[(u16, &str, &str)] = &[
        (
            403,
            r#"{"success":false,"errors":[{"code":10000,"message":"Authentication error"}],"messages":[],"result":null}"#,
            "credentials were refused: 10000: Authentication error; the token needs \
             Zone:DNS:Edit on example.com",
        ),
        (
            400,
            r#"{"success":false,"errors":[{"code":9021,"message":"Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic."}],"messages":[],"result":null}"#,
            "api error (HTTP 400): 9021: Invalid TTL. Must be between 60 and 86400 seconds, or 1 \
             for Automatic.",
        ),
        (
            400,
            r#"{"success":false,"errors":[{"code":81058,"message":"An identical record already exists."}],"messages":[],"result":null}"#,
            // The listing (same canned answer) fails too: its error is the one reported.
            "api error (HTTP 400): 81058: An identical record already exists.",
        ),
        (
            502,
            "<html><body>502 Bad Gateway</body></html>",
            "api error (HTTP 502): the answer is not Cloudflare's JSON envelope: \
             <html><body>502 Bad Gateway</body></html> (gave up after 5 attempts)",
        ),
        (
            200,
            r#"{"success":true,"errors":[],"messages":[],"result":null}"#,
            "api error (HTTP 200): a successful answer without a result",
        ),
        (
            400,
            r#"{"success":false,"errors":[],"messages":[],"result":null}"#,
            "api error (HTTP 400): no error detail in the answer",
        ),
    ];
    for (status, body, want) in cases {
        let server = canned(*status, body);
        let p = provider(&format!("{}/client/v4", server.url()), TOKEN, None);
        let err = p
            .present(&record("_acme-challenge.example.com.", "v"))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), *want, "answer {status} {body}");
    }
}

#[tokio::test]
async fn an_identical_record_that_cannot_be_listed_is_reported() {
    let server = Server::start(|req: &Request| {
        let ok = |result| {
            Response::json(
                200,
                &json!({"success": true, "errors": [], "messages": [], "result": result}),
            )
        };
        match req.method.as_str() {
            "GET" if req.path.ends_with("/dns_records") => ok(json!([])),
            "GET" => ok(json!([{"id": "023e105f4ecef8ad9ca31a8372d0c353", "name": "example.com"}])),
            _ => Response::json(
                400,
                &json!({"success": false, "errors": [{"code": 81058, "message": "An identical record already exists."}], "messages": [], "result": null}),
            ),
        }
    });
    let p = provider(&format!("{}/client/v4", server.url()), TOKEN, None);
    let err = p
        .present(&record("_acme-challenge.example.com.", "v"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "api error (HTTP 400): 81058: An identical record already exists., but no TXT record \
         _acme-challenge.example.com with this value is listed"
    );
}

#[tokio::test]
async fn the_token_appears_in_no_error_nor_debug() {
    let fake = FakeCloudflare::start(&["example.com"]);
    let secret = "sekret0token0value0which0must0not0leak0";
    let p = provider(&fake.url(), secret, None);
    let err = p
        .present(&record("_acme-challenge.example.com.", "v"))
        .await
        .unwrap_err();
    for text in [
        err.to_string(),
        format!("{err:?}"),
        format!("{p:?}"),
        format!("{:?}", provider(&fake.url(), TOKEN, None)),
    ] {
        assert!(!text.contains(secret) && !text.contains(TOKEN), "{text}");
    }
}

#[tokio::test]
async fn concurrent_orders_share_one_provider() {
    let fake = Arc::new(FakeCloudflare::start(&["example.com"]));
    let p = Arc::new(provider(&fake.url(), TOKEN, None));
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let p = p.clone();
            tokio::spawn(async move {
                p.present(&record("_acme-challenge.example.com.", &format!("v{i}")))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut handles = Vec::new();
    for t in tasks {
        handles.push(t.await.unwrap());
    }
    assert_eq!(fake.values("_acme-challenge.example.com.").len(), 8);
    for h in &handles[..4] {
        p.cleanup(h).await.unwrap();
    }
    let mut left = fake.values("_acme-challenge.example.com.");
    left.sort();
    assert_eq!(left, ["v4", "v5", "v6", "v7"]);
}

#[tokio::test]
async fn the_fake_mirrors_txt_records_to_challtestsrv() {
    // A stand-in for challtestsrv's management API that records what it is told.
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = calls.clone();
    let challtestsrv = Server::start(move |req: &Request| {
        seen.lock()
            .unwrap()
            .push((req.path.clone(), req.json().unwrap()));
        Response {
            status: 200,
            headers: vec![],
            body: vec![],
        }
    });
    let fake = FakeCloudflare::start_with(Options {
        challtestsrv: Some(challtestsrv.url()),
        ..Options::default()
    });
    let p = provider(&fake.url(), TOKEN, None);
    let fqdn = "_acme-challenge.example.com.";
    let a = p.present(&record(fqdn, "a")).await.unwrap();
    p.present(&record(fqdn, "b")).await.unwrap();
    p.cleanup(&a).await.unwrap();
    let host = json!(fqdn);
    assert_eq!(
        *calls.lock().unwrap(),
        [
            ("/set-txt".to_owned(), json!({"host": host, "value": "a"})),
            ("/set-txt".to_owned(), json!({"host": host, "value": "b"})),
            ("/clear-txt".to_owned(), json!({"host": host})),
            ("/set-txt".to_owned(), json!({"host": host, "value": "b"})),
        ]
    );
}

#[tokio::test]
async fn the_fake_checks_ttl_and_names_like_cloudflare() {
    let fake = FakeCloudflare::start(&["example.com"]);
    let zone = fake.zone_id("example.com").unwrap();
    let client = reqwest::Client::new();
    let post = |body: serde_json::Value| {
        client
            .post(format!("{}/zones/{zone}/dns_records", fake.url()))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    };
    let r = post(json!({"type": "TXT", "name": "x.example.com", "content": "v", "ttl": 30}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], 9021);
    assert!(body["result"].is_null());
    // A relative name gets the zone appended.
    let r = post(json!({"type": "TXT", "name": "rel", "content": "v", "ttl": 1}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(fake.values("rel.example.com."), ["v"]);
    // Missing header: 6003.
    let r = client
        .get(format!("{}/zones", fake.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], 6003);
}

// --- Hostile APIs: every answer is read up to 1 MiB, listings stop at their bounds, no
// redirect is followed, and each operation has one deadline.

fn hostile(hostile: Hostile) -> FakeCloudflare {
    FakeCloudflare::start_with(Options {
        hostile: Some(hostile),
        ..Options::default()
    })
}

const ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";

fn too_large(call: &str) -> String {
    format!(
        "the answer to {call} is larger than 1024 KiB, more than the API ever answers; it was \
         not read further"
    )
}

/// The most a hostile server below writes of one body.
const ENDLESS: usize = 256 << 20;

/// A server answering `GET dns_records` with an empty list, and the call `method` `status`
/// with a JSON body that never ends (no length, until the client hangs up); counts the
/// requests of `method` and the bytes it wrote.
fn endless(method: &'static str, status: u16) -> (Server, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let (hits, written) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (h, w) = (hits.clone(), written.clone());
    let server = Server::start_raw(move |req: &Request, stream: &mut TcpStream| {
        if req.method != method {
            let body = r#"{"success":false,"errors":[{"code":81058,"message":"An identical record already exists."}],"messages":[],"result":null}"#;
            let _ = write_head(
                stream,
                400,
                &[
                    ("Content-Length", &body.len().to_string()),
                    ("Connection", "close"),
                ],
            );
            let _ = std::io::Write::write_all(stream, body.as_bytes());
            return;
        }
        h.fetch_add(1, Ordering::SeqCst);
        let n = write_endless(
            stream,
            status,
            &[("Content-Type", "application/json")],
            br#"{"success":true,"errors":[],"messages":["#,
            br#""padding","#,
            ENDLESS,
        );
        w.fetch_add(n, Ordering::SeqCst);
    });
    (server, hits, written)
}

#[tokio::test]
async fn answers_past_one_mib_are_refused_on_every_call() {
    let rec = record("_acme-challenge.example.com.", "v");
    // A zones list of 20,000 zones (4 MB).
    let fake = hostile(Hostile::HugeZones { count: 20_000 });
    let err = provider(&fake.url(), TOKEN, None)
        .present(&rec)
        .await
        .unwrap_err();
    assert!(matches!(err, DnsError::AnswerTooLarge { .. }), "{err:?}");
    assert_eq!(err.to_string(), too_large("GET zones"));
    assert_eq!(fake.requests().len(), 1, "not retried");
    // A records page of 20,000 records, claiming a billion pages.
    let fake = hostile(Hostile::HugeRecordPages {
        per_page: 20_000,
        total_pages: 1_000_000_000,
    });
    let zone = fake.zone_id("example.com");
    let err = provider(&fake.url(), TOKEN, zone)
        .present(&rec)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), too_large("GET dns_records"));
    // Bodies that never end (and say no length), as answers and as error answers of each
    // call: cut at 1 MiB, never retried.
    for (method, status, call) in [
        ("POST", 200, "POST dns_records"),
        ("POST", 500, "POST dns_records"),
        ("GET", 200, "GET dns_records"),
        ("DELETE", 200, "DELETE dns_records"),
        ("DELETE", 429, "DELETE dns_records"),
    ] {
        let (server, hits, written) = endless(method, status);
        let p = provider(
            &format!("{}/client/v4", server.url()),
            TOKEN,
            Some(ZONE.into()),
        );
        let err = if method == "DELETE" {
            p.cleanup(&RecordHandle {
                record: rec.clone(),
                id: Some("372e67954025e0ba6aaa6d586b9e0b59".into()),
                zone: Some(ZONE.into()),
            })
            .await
            .unwrap_err()
        } else {
            p.present(&rec).await.unwrap_err()
        };
        assert_eq!(err.to_string(), too_large(call), "{method} {status}");
        assert_eq!(hits.load(Ordering::SeqCst), 1, "{method} {status}");
        drop(server);
        assert!(
            written.load(Ordering::SeqCst) < ENDLESS,
            "{method} {status}: the client read the whole body"
        );
    }
    // A Content-Length far past the bound is refused before the body is read.
    let server = Server::start_raw(|_: &Request, stream: &mut TcpStream| {
        let _ = write_head(
            stream,
            200,
            &[("Content-Length", "1099511627776"), ("Connection", "close")],
        );
        let _ = std::io::Write::write_all(stream, b"{}");
    });
    let p = provider(
        &format!("{}/client/v4", server.url()),
        TOKEN,
        Some(ZONE.into()),
    );
    assert_eq!(
        p.present(&rec).await.unwrap_err().to_string(),
        too_large("POST dns_records")
    );
}

#[tokio::test]
async fn listings_are_bounded_in_items_and_pages() {
    let rec = record("_acme-challenge.example.com.", "v");
    // More zones than a page holds: 60 made up and the fake's two.
    let fake = hostile(Hostile::HugeZones { count: 60 });
    let err = provider(&fake.url(), TOKEN, None)
        .present(&rec)
        .await
        .unwrap_err();
    assert!(matches!(err, DnsError::PageTooLong { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "GET zones answered 62 items on a page of 50; the API pages no more than asked"
    );
    // More records on a page than asked for.
    let fake = hostile(Hostile::HugeRecordPages {
        per_page: 150,
        total_pages: 1,
    });
    let zone = fake.zone_id("example.com");
    let err = provider(&fake.url(), TOKEN, zone.clone())
        .present(&rec)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "GET dns_records answered 150 items on a page of 100; the API pages no more than asked"
    );
    // Pages without end: 50 are read, then the listing fails (it does not pass for "not
    // there").
    let fake = hostile(Hostile::HugeRecordPages {
        per_page: 1,
        total_pages: 1_000_000_000,
    });
    let err = provider(&fake.url(), TOKEN, zone)
        .present(&rec)
        .await
        .unwrap_err();
    assert!(matches!(err, DnsError::ListingTooLong { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "GET dns_records goes on past 50 pages of 100; certkeeper reads no more of one listing"
    );
    let pages = fake
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/dns_records"))
        .count();
    assert_eq!(pages, 50);
}

#[tokio::test]
async fn redirects_are_refused_naming_only_the_host() {
    let stolen = Arc::new(AtomicUsize::new(0));
    let seen = stolen.clone();
    let thief = Server::start(move |_: &Request| {
        seen.fetch_add(1, Ordering::SeqCst);
        Response::json(
            200,
            &json!({"success": true, "errors": [], "result": {"id": "x"}}),
        )
    });
    let rec = record("_acme-challenge.example.com.", "v");
    for status in [301, 302, 303, 307, 308] {
        let location = format!("{}/client/v4/secret-path?leak=query", thief.url());
        let fake = hostile(Hostile::Redirect { status, location });
        let p = provider(&fake.url(), TOKEN, None);
        let want = format!(
            "the API answered HTTP {status}, a redirect to 127.0.0.1; redirects are not \
             followed, since the request carries credentials: configure the API's own address"
        );
        let err = p.present(&rec).await.unwrap_err();
        assert!(matches!(err, DnsError::Redirect { .. }), "{err:?}");
        assert_eq!(err.to_string(), want);
        let pinned = provider(&fake.url(), TOKEN, Some(ZONE.into()));
        assert_eq!(pinned.present(&rec).await.unwrap_err().to_string(), want);
        let handle = RecordHandle {
            record: rec.clone(),
            id: Some("372e67954025e0ba6aaa6d586b9e0b59".into()),
            zone: Some(ZONE.into()),
        };
        assert_eq!(p.cleanup(&handle).await.unwrap_err().to_string(), want);
        assert_eq!(fake.requests().len(), 3, "{status} is not retried");
    }
    assert_eq!(stolen.load(Ordering::SeqCst), 0, "a redirect was followed");
}

#[tokio::test]
async fn one_deadline_bounds_each_operation() {
    // A slow API with pages without end: present stops at its deadline, whatever the pages.
    let fake = FakeCloudflare::start_with(Options {
        latency: Duration::from_millis(100),
        hostile: Some(Hostile::HugeRecordPages {
            per_page: 1,
            total_pages: 1_000_000_000,
        }),
        ..Options::default()
    });
    let p = provider(&fake.url(), TOKEN, fake.zone_id("example.com"))
        .with_deadline(Duration::from_secs(1));
    let start = Instant::now();
    let err = p
        .present(&record("_acme-challenge.example.com.", "v"))
        .await
        .unwrap_err();
    let took = start.elapsed();
    assert!(matches!(err, DnsError::Deadline { .. }), "{err:?}");
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
        fake.requests().len() < 50,
        "it stopped before the page bound"
    );

    // An API that does not answer: cleanup stops at its deadline, before a request's own
    // timeout (10 s) and the retries' total (10 s here).
    let fake = FakeCloudflare::start_with(Options {
        latency: Duration::from_secs(30),
        ..Options::default()
    });
    let p = provider(&fake.url(), TOKEN, None).with_deadline(Duration::from_millis(500));
    let start = Instant::now();
    let err = p
        .cleanup(&RecordHandle {
            record: record("_acme-challenge.example.com.", "v"),
            id: Some("372e67954025e0ba6aaa6d586b9e0b59".into()),
            zone: Some(ZONE.into()),
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "removing the record did not finish within 0.5s (every request, retry and page \
         included); the API is too slow or not answering"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
}
