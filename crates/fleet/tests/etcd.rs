//! The fleet's etcd layer against a real 3-member etcd cluster on loopback.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use certkeeper_fleet::testing::Cluster;
use certkeeper_fleet::{Error, Fleet, Generation, HostResult, HostState, SealedKey, Verdict};
use time::OffsetDateTime;

/// A bound on waits that would otherwise hang a broken test; never a pass/fail threshold.
const PATIENCE: Duration = Duration::from_secs(60);

async fn fleet(cluster: &Cluster, host: &str) -> Fleet {
    Fleet::connect(&cluster.options("web-pool", host))
        .await
        .unwrap()
}

fn generation(serial: u64, by: &str) -> Generation {
    Generation {
        serial,
        fingerprint: format!("{serial:064x}"),
        not_after: OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap(),
        issued_by: by.to_owned(),
        issued_at: OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
        fullchain_pem: format!(
            "-----BEGIN CERTIFICATE-----\nserial {serial}\n-----END CERTIFICATE-----\n"
        ),
        sealed_key: SealedKey((0..=255u8).chain([serial as u8]).collect()),
        verdict: Verdict::Pending,
    }
}

fn state(serving: Option<u64>) -> HostState {
    HostState {
        serving,
        result: HostResult::Deployed,
        at: OffsetDateTime::now_utc(),
        why: None,
    }
}

async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    let start = tokio::time::Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < PATIENCE,
            "{what}: still not so after {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn of_two_campaigners_exactly_one_leads() {
    let cluster = Cluster::start(3);
    let (a, b) = (fleet(&cluster, "web1").await, fleet(&cluster, "web2").await);
    let ttl = Duration::from_secs(2);
    let (la, lb) = tokio::join!(a.try_campaign("www", ttl), b.try_campaign("www", ttl));
    let (la, lb) = (la.unwrap(), lb.unwrap());
    assert!(
        la.is_some() != lb.is_some(),
        "exactly one leads: {la:?} {lb:?}"
    );
    let (leader, winner) = if la.is_some() {
        (la, "web1")
    } else {
        (lb, "web2")
    };
    assert_eq!(a.leader("www").await.unwrap().as_deref(), Some(winner));
    // Kept alive past its TTL, it still leads and nobody else can.
    tokio::time::sleep(ttl * 2).await;
    assert!(leader.as_ref().unwrap().is_current());
    assert!(a.try_campaign("www", ttl).await.unwrap().is_none());
    assert!(b.try_campaign("www", ttl).await.unwrap().is_none());
    // Another certificate has an election of its own.
    assert!(b.try_campaign("mail", ttl).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_leadership_passes_to_the_waiting_host_after_its_lease() {
    let cluster = Cluster::start(3);
    let (a, b) = (fleet(&cluster, "web1").await, fleet(&cluster, "web2").await);
    let ttl = Duration::from_secs(2);
    let first = a.try_campaign("www", ttl).await.unwrap().unwrap();
    let waiting = tokio::spawn(async move {
        let l = b.campaign("www", ttl).await.unwrap();
        (b, l)
    });
    tokio::time::sleep(ttl * 2).await;
    assert!(
        !waiting.is_finished(),
        "web2 led while web1's lease was kept alive"
    );
    assert!(first.is_current());
    drop(first); // as a crash: the keepalive stops, the lease runs out on etcd's side
    let (b, second) = tokio::time::timeout(PATIENCE, waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(second.is_current());
    assert_eq!(b.leader("www").await.unwrap().as_deref(), Some("web2"));
    // Resigning hands over at once to the next campaigner.
    second.resign().await;
    let third = tokio::time::timeout(PATIENCE, a.campaign("www", ttl))
        .await
        .unwrap()
        .unwrap();
    assert!(third.is_current());
    assert_eq!(a.leader("www").await.unwrap().as_deref(), Some("web1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn of_two_publishes_from_one_read_exactly_one_wins() {
    let cluster = Cluster::start(3);
    let (a, b) = (fleet(&cluster, "web1").await, fleet(&cluster, "web2").await);
    // Nothing read yet (None) on both sides.
    assert!(a.current("www").await.unwrap().is_none());
    let (ga, gb) = (generation(1, "web1"), generation(1, "web2"));
    let (ra, rb) = tokio::join!(a.publish("www", &ga, None), b.publish("www", &gb, None));
    assert!(
        ra.is_ok() != rb.is_ok(),
        "exactly one publishes: {ra:?} {rb:?}"
    );
    let loser = if ra.is_ok() { rb } else { ra };
    assert!(matches!(loser, Err(Error::Conflict { .. })), "{loser:?}");
    let (current, rev) = a.current("www").await.unwrap().unwrap();
    assert!(current == ga || current == gb);

    // Both read the same revision, then publish the next serial.
    let (_, rev_b) = b.current("www").await.unwrap().unwrap();
    assert_eq!(rev, rev_b);
    let (ga, gb) = (generation(2, "web1"), generation(2, "web2"));
    let (ra, rb) = tokio::join!(
        a.publish("www", &ga, Some(rev)),
        b.publish("www", &gb, Some(rev))
    );
    assert!(
        ra.is_ok() != rb.is_ok(),
        "exactly one publishes: {ra:?} {rb:?}"
    );
    let loser = if ra.is_ok() { rb } else { ra };
    let message = loser.unwrap_err().to_string();
    assert!(
        message.contains("/certkeeper/web-pool/certs/www/current"),
        "{message}"
    );

    // A stale read loses, and so does a serial published before, even at the right revision.
    assert!(matches!(
        a.publish("www", &generation(3, "web1"), Some(rev)).await,
        Err(Error::Conflict { .. })
    ));
    let (_, now) = a.current("www").await.unwrap().unwrap();
    assert!(matches!(
        a.publish("www", &generation(2, "web1"), Some(now)).await,
        Err(Error::Conflict { .. })
    ));
    assert_eq!(a.current("www").await.unwrap().unwrap().0.serial, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn generations_are_kept_for_a_revert_and_verdicts_are_guarded_on_the_serial() {
    let cluster = Cluster::start(3);
    let a = fleet(&cluster, "web1").await;
    let mut read = None;
    for serial in 1..=5 {
        a.publish("www", &generation(serial, "web1"), read)
            .await
            .unwrap();
        read = Some(a.current("www").await.unwrap().unwrap().1);
    }
    for serial in 1..=2 {
        assert!(
            a.generation("www", serial).await.unwrap().is_none(),
            "{serial} kept"
        );
    }
    for serial in 3..=5 {
        assert_eq!(
            a.generation("www", serial).await.unwrap(),
            Some(generation(serial, "web1"))
        );
    }
    let good = Verdict::Good {
        by: "web1".into(),
        at: OffsetDateTime::now_utc(),
    };
    a.set_verdict("www", 5, good.clone()).await.unwrap();
    assert_eq!(a.current("www").await.unwrap().unwrap().0.verdict, good);
    assert_eq!(a.generation("www", 5).await.unwrap().unwrap().verdict, good);
    // A previous generation: only its kept record changes.
    let bad = Verdict::Bad {
        by: "web2".into(),
        why: "verify failed on web2".into(),
        at: OffsetDateTime::now_utc(),
    };
    a.set_verdict("www", 4, bad.clone()).await.unwrap();
    assert_eq!(a.generation("www", 4).await.unwrap().unwrap().verdict, bad);
    assert_eq!(a.current("www").await.unwrap().unwrap().0.verdict, good);
    let err = a.set_verdict("www", 9, bad).await.unwrap_err();
    assert!(
        matches!(err, Error::UnknownGeneration { serial: 9, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "certificate www: generation 9 is not kept in etcd"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_state_disappears_when_its_lease_expires() {
    let cluster = Cluster::start(3);
    let (a, b) = (fleet(&cluster, "web1").await, fleet(&cluster, "web2").await);
    a.report("www", &state(Some(3))).await.unwrap();
    b.report("www", &state(Some(4))).await.unwrap();
    let hosts = b.hosts("www").await.unwrap();
    let names: Vec<&str> = hosts.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(names, ["web1", "web2"]);
    assert_eq!(hosts[0].1.serving, Some(3));
    drop(a); // web1 dies: its lease is no longer kept alive
    eventually("web1's state expired", async || {
        b.hosts("www")
            .await
            .unwrap()
            .iter()
            .all(|(h, _)| h != "web1")
    })
    .await;
    // web2's own state, on a lease kept alive, outlived it.
    let hosts = b.hosts("www").await.unwrap();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].0, "web2");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_sees_new_generations_and_resumes_after_its_member_returns() {
    let mut cluster = Cluster::start(3);
    let a = fleet(&cluster, "web1").await;
    // web2 talks to the first member only, so that stopping it breaks web2's link.
    let mut options = cluster.options("web-pool", "web2");
    options.endpoints.truncate(1);
    let b = Fleet::connect(&options).await.unwrap();
    let mut watch = b.watch_current("www", None).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await; // let the watch be created
    a.publish("www", &generation(1, "web1"), None)
        .await
        .unwrap();
    let (got, rev) = tokio::time::timeout(PATIENCE, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, generation(1, "web1"));

    cluster.stop(0);
    let a = {
        let mut options = cluster.options("web-pool", "web1");
        options.endpoints.remove(0);
        Fleet::connect(&options).await.unwrap()
    };
    a.publish("www", &generation(2, "web1"), Some(rev))
        .await
        .unwrap();
    let (_, rev2) = a.current("www").await.unwrap().unwrap();
    a.publish("www", &generation(3, "web1"), Some(rev2))
        .await
        .unwrap();
    cluster.start_member(0);
    for serial in [2, 3] {
        let (got, _) = tokio::time::timeout(PATIENCE, watch.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            got,
            generation(serial, "web1"),
            "resumed in order, none missed"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_quorum_requests_fail_typed_and_the_client_recovers() {
    let mut cluster = Cluster::start(3);
    let a = fleet(&cluster, "web1").await;
    assert!(a.connected().await);
    a.publish("www", &generation(1, "web1"), None)
        .await
        .unwrap();
    let (_, rev) = a.current("www").await.unwrap().unwrap();
    let lead = a
        .try_campaign("www", Duration::from_secs(2))
        .await
        .unwrap()
        .unwrap();
    cluster.stop(1);
    cluster.stop(2);
    assert!(!a.connected().await);
    // Its lease cannot be renewed without a quorum: the leadership ends on this side too.
    eventually("the leadership ended", async || !lead.is_current()).await;
    let options = cluster.options("web-pool", "web1");
    let bound = options.request_timeout * 2 + options.connect_timeout;
    let published =
        tokio::time::timeout(bound, a.publish("www", &generation(2, "web1"), Some(rev)))
            .await
            .expect("publish without quorum returns within its timeout");
    let err = published.unwrap_err();
    assert!(
        matches!(err, Error::Timeout { .. } | Error::Etcd { .. }),
        "{err:?}"
    );
    assert!(
        tokio::time::timeout(bound, a.current("www"))
            .await
            .unwrap()
            .is_err()
    );
    assert!(
        tokio::time::timeout(bound, a.report("www", &state(Some(1))))
            .await
            .unwrap()
            .is_err()
    );

    cluster.start_member(1);
    cluster.start_member(2);
    cluster.wait_healthy();
    eventually("the client is connected again", async || {
        a.connected().await
    })
    .await;
    a.publish("www", &generation(2, "web1"), Some(rev))
        .await
        .unwrap();
    assert_eq!(a.current("www").await.unwrap().unwrap().0.serial, 2);
    // The host lease was lost with the quorum: a report takes a new one, kept alive.
    a.report("www", &state(Some(2))).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(a.hosts("www").await.unwrap()[0].1.serving, Some(2));
    let err = a
        .set_order(&lead, "https://ca.example/order/1", "pebble", None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotLeader { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_order_outlives_its_leader_and_only_a_leader_writes_it() {
    let cluster = Cluster::start(3);
    let (a, b) = (fleet(&cluster, "web1").await, fleet(&cluster, "web2").await);
    let ttl = Duration::from_secs(2);
    let lead = a.try_campaign("www", ttl).await.unwrap().unwrap();
    a.set_order(&lead, "https://ca.example/order/1", "pebble", None)
        .await
        .unwrap();
    drop(lead);
    let next = tokio::time::timeout(PATIENCE, b.campaign("www", ttl))
        .await
        .unwrap()
        .unwrap();
    let order = b.order("www").await.unwrap().unwrap();
    assert_eq!(order.order, "https://ca.example/order/1");
    assert_eq!(order.host, "web1");
    // A leadership whose leader key is gone (deleted by hand here; its lease is still kept
    // alive, so it believes it leads) cannot write: etcd checks the key in the transaction.
    b.clear_order(&next).await.unwrap();
    let mut raw = etcd_client::Client::connect(cluster.endpoints(), None)
        .await
        .unwrap();
    raw.delete("/certkeeper/web-pool/certs/www/leader", None)
        .await
        .unwrap();
    let now = a.try_campaign("www", ttl).await.unwrap().unwrap();
    assert!(next.is_current());
    let err = b
        .set_order(&next, "https://ca.example/order/2", "pebble", None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotLeader { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "certificate www: this host no longer leads it"
    );
    assert!(b.order("www").await.unwrap().is_none());
    a.set_order(&now, "https://ca.example/order/3", "pebble", None)
        .await
        .unwrap();
    assert_eq!(
        b.order("www").await.unwrap().unwrap().order,
        "https://ca.example/order/3"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn values_hold_exactly_the_bytes_given_and_no_key_in_clear() {
    let cluster = Cluster::start(3);
    let a = fleet(&cluster, "web1").await;
    let mut g = generation(1, "web1");
    // Whatever the caller hands over as sealed bytes is stored as base64, byte for byte.
    g.sealed_key = SealedKey(
        b"-----BEGIN PRIVATE KEY-----\nnot really sealed\n"
            .iter()
            .copied()
            .chain(0..=255)
            .collect(),
    );
    a.publish("www", &g, None).await.unwrap();

    let mut raw = etcd_client::Client::connect(cluster.endpoints(), None)
        .await
        .unwrap();
    let key = "/certkeeper/web-pool/certs/www/current";
    let resp = raw.get(key, None).await.unwrap();
    let value: serde_json::Value = serde_json::from_slice(resp.kvs()[0].value()).unwrap();
    use base64::Engine as _;
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(value["sealed_key"].as_str().unwrap())
        .unwrap();
    assert_eq!(sealed, g.sealed_key.0);
    assert_eq!(value["fullchain_pem"].as_str().unwrap(), g.fullchain_pem);

    // What anyone with etcd access reads back with etcdctl.
    for k in [
        key,
        "/certkeeper/web-pool/certs/www/generations/00000000000000000001",
    ] {
        let out = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &cluster.endpoints().join(","),
                "get",
                k,
                "--print-value-only",
            ])
            .output()
            .unwrap_or_else(|e| panic!("etcdctl: {e}: install the Debian package etcd-client"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("\"serial\":1"), "{text}");
        assert!(
            !text.contains("PRIVATE KEY"),
            "a key in clear under {k}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_that_is_not_one_is_named_by_its_key() {
    let cluster = Cluster::start(1);
    let a = fleet(&cluster, "web1").await;
    let mut raw = etcd_client::Client::connect(cluster.endpoints(), None)
        .await
        .unwrap();
    raw.put(
        "/certkeeper/web-pool/certs/www/current",
        "{\"serial\":\"x\"}",
        None,
    )
    .await
    .unwrap();
    let err = a.current("www").await.unwrap_err();
    assert!(matches!(err, Error::Record { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("/certkeeper/web-pool/certs/www/current: not a valid record:"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_never_show_in_errors() {
    let cluster = Cluster::start(1);
    let mut options = cluster.options("web-pool", "web1");
    options.username = Some("certkeeper".into());
    options.password = Some(certkeeper_fleet::Password("hunter2-s3cret".into()));
    // Auth is not enabled on the test cluster: the login fails.
    let err = Fleet::connect(&options).await.err().expect("login fails");
    let shown = format!("{err} {err:?} {options:?}");
    assert!(!shown.contains("hunter2-s3cret"), "{shown}");
    options.endpoints = vec!["http://certkeeper:hunter2-s3cret@127.0.0.1:2379".into()];
    let err = Fleet::connect(&options).await.err().expect("refused");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("hunter2-s3cret"), "{shown}");
    assert!(
        shown.contains("credentials in an endpoint are refused"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_a_client_certificate() {
    let cluster = Cluster::start_tls(3);
    let a = Fleet::connect(&cluster.options("web-pool", "web1"))
        .await
        .unwrap();
    assert!(a.connected().await);
    a.publish("www", &generation(1, "web1"), None)
        .await
        .unwrap();
    assert_eq!(a.current("www").await.unwrap().unwrap().0.serial, 1);

    let tls = cluster.tls().unwrap();
    // No client certificate: the members refuse the handshake.
    let mut options = cluster.options("web-pool", "web2");
    options.cert_file = None;
    options.key_file = None;
    let b = Fleet::connect(&options).await.unwrap();
    assert!(!b.connected().await);
    // A client certificate from another CA: refused too.
    options.cert_file = Some(tls.stranger_cert_file.clone());
    options.key_file = Some(tls.stranger_key_file.clone());
    let c = Fleet::connect(&options).await.unwrap();
    assert!(!c.connected().await);
    // Plain HTTP to a TLS cluster's endpoints is refused before any request.
    let mut options = cluster.options("web-pool", "web3");
    options.ca_file = None;
    options.cert_file = None;
    options.key_file = None;
    let err = Fleet::connect(&options)
        .await
        .err()
        .expect("https needs ca_file");
    assert!(err.to_string().contains("https needs ca_file"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_member_down_fails_no_request() {
    let mut cluster = Cluster::start(3);
    let a = fleet(&cluster, "web1").await;
    a.report("www", &state(None)).await.unwrap();
    // The client lists all three endpoints; requests the balancer hands to the dead member
    // must land on a live one.
    cluster.kill(1);
    let mut read = None;
    for serial in 1..=20 {
        a.publish("www", &generation(serial, "web1"), read)
            .await
            .unwrap();
        read = Some(a.current("www").await.unwrap().unwrap().1);
        a.report("www", &state(Some(serial))).await.unwrap();
        assert_eq!(a.hosts("www").await.unwrap()[0].1.serving, Some(serial));
        assert!(a.connected().await);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_behind_a_compaction_gets_the_current_generation() {
    let mut cluster = Cluster::start(3);
    let a = fleet(&cluster, "web1").await;
    let mut options = cluster.options("web-pool", "web2");
    options.endpoints.truncate(1);
    let b = Fleet::connect(&options).await.unwrap();
    a.publish("www", &generation(1, "web1"), None)
        .await
        .unwrap();
    let (_, rev) = a.current("www").await.unwrap().unwrap();
    let mut watch = b.watch_current("www", Some(rev)).unwrap();
    cluster.stop(0);
    let mut options = cluster.options("web-pool", "web1");
    options.endpoints.remove(0);
    let a = Fleet::connect(&options).await.unwrap();
    a.publish("www", &generation(2, "web1"), Some(rev))
        .await
        .unwrap();
    let (_, rev2) = a.current("www").await.unwrap().unwrap();
    a.publish("www", &generation(3, "web1"), Some(rev2))
        .await
        .unwrap();
    let (_, rev3) = a.current("www").await.unwrap().unwrap();
    let mut raw = etcd_client::Client::connect(&options.endpoints, None)
        .await
        .unwrap();
    raw.compact(rev3, None).await.unwrap();
    cluster.start_member(0);
    // Generation 2's event is gone from etcd's history: the watch reads the current one.
    let (got, at) = tokio::time::timeout(PATIENCE, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((got, at), (generation(3, "web1"), rev3));
}
