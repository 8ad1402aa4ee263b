//! The fleet protocol (decide, publish, canary slots, results, verdicts) against a real
//! 3-member etcd cluster on loopback, with three simulated hosts: three clients, each with
//! leases of its own.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use certkeeper_fleet::protocol::{Role, Rules, Step, Wait};
use certkeeper_fleet::testing::Cluster;
use certkeeper_fleet::{Error, Fleet, Generation, HostResult, SealedKey, Verdict};
use time::OffsetDateTime;

/// A bound on waits that would otherwise hang a broken test; never a pass/fail threshold.
const PATIENCE: Duration = Duration::from_secs(60);
const CERT: &str = "www";

async fn fleet(cluster: &Cluster, host: &str) -> Fleet {
    Fleet::connect(&cluster.options("web-pool", host))
        .await
        .unwrap()
}

async fn hosts(cluster: &Cluster) -> [Fleet; 3] {
    [
        fleet(cluster, "web1").await,
        fleet(cluster, "web2").await,
        fleet(cluster, "web3").await,
    ]
}

fn rules(canary: usize, max_failures: usize) -> Rules {
    Rules {
        lease_ttl: Duration::from_secs(2),
        canary,
        max_failures,
    }
}

fn fp(serial: u64) -> String {
    format!("{serial:064x}")
}

fn generation(serial: u64) -> Generation {
    Generation {
        serial,
        fingerprint: fp(serial),
        not_after: OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap(),
        issued_by: "whoever".to_owned(),
        issued_at: OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
        fullchain_pem: format!(
            "-----BEGIN CERTIFICATE-----\nserial {serial}\n-----END CERTIFICATE-----\n"
        ),
        sealed_key: SealedKey(vec![serial as u8; 48]),
        verdict: Verdict::Good {
            by: "forged".into(),
            at: OffsetDateTime::UNIX_EPOCH,
        },
    }
}

/// Due when nothing is published or the current generation is older than `serial`.
fn due_before(serial: u64) -> impl Fn(Option<&Generation>) -> bool {
    move |g| g.is_none_or(|g| g.serial < serial)
}

fn never_due(_: Option<&Generation>) -> bool {
    false
}

/// `host`, serving generation `live`, decides it issues generation `serial`, and publishes it.
async fn issue(host: &Fleet, live: Option<u64>, serial: u64, r: &Rules) {
    let live = live.map(fp);
    match host
        .decide(CERT, live.as_deref(), r, due_before(serial))
        .await
        .unwrap()
    {
        Step::Issue(issue) => {
            assert_eq!(issue.next_serial(), serial);
            assert_eq!(
                host.publish_new(issue, generation(serial)).await.unwrap(),
                serial
            );
        }
        other => panic!("{} expected to issue {serial}, got {other:?}", host.host()),
    }
}

async fn step(host: &Fleet, live: Option<u64>, r: &Rules) -> Step {
    let live = live.map(fp);
    host.decide(CERT, live.as_deref(), r, never_due)
        .await
        .unwrap()
}

fn deployed(serial: u64) -> (HostResult, Option<u64>) {
    (HostResult::Deployed, Some(serial))
}

async fn report(host: &Fleet, serial: u64, (result, serving): (HostResult, Option<u64>)) {
    let why = (result == HostResult::Failed).then_some("verify: nginx serves another leaf");
    host.report_result(CERT, serial, result, serving, why)
        .await
        .unwrap();
}

fn assert_deploy(s: &Step, serial: u64, expected_role: Role) {
    match s {
        Step::Deploy { generation, role } => {
            assert_eq!((generation.serial, *role), (serial, expected_role), "{s:?}");
        }
        other => panic!("expected a deploy of {serial} as {expected_role:?}, got {other:?}"),
    }
}

fn assert_no_deploy_of(s: &Step, serial: u64) {
    if let Step::Deploy { generation, .. } = s {
        assert_ne!(generation.serial, serial, "deployed {serial}: {s:?}");
    }
}

async fn verdict(host: &Fleet) -> Verdict {
    host.current(CERT).await.unwrap().unwrap().0.verdict
}

/// Generation 1 published by web1 and served by all three (canary 1).
async fn all_serve_generation_one(h: &[Fleet; 3]) {
    let r = rules(1, 0);
    issue(&h[0], None, 1, &r).await;
    report(&h[0], 1, deployed(1)).await;
    for host in &h[1..] {
        assert_deploy(&step(host, None, &r).await, 1, Role::Rollout);
        report(host, 1, deployed(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn of_three_concurrent_decides_exactly_one_issues() {
    let cluster = Cluster::start(3);
    let h = hosts(&cluster).await;
    let r = rules(1, 1);
    let due = due_before(1);
    let (s1, s2, s3) = tokio::join!(
        h[0].decide(CERT, None, &r, &due),
        h[1].decide(CERT, None, &r, &due),
        h[2].decide(CERT, None, &r, &due),
    );
    let steps = [s1.unwrap(), s2.unwrap(), s3.unwrap()];
    let issuers: Vec<usize> = (0..3)
        .filter(|i| matches!(steps[*i], Step::Issue(_)))
        .collect();
    assert_eq!(issuers.len(), 1, "{steps:?}");
    let winner = issuers[0];
    for (i, s) in steps.iter().enumerate() {
        if i != winner {
            assert!(
                matches!(
                    s,
                    Step::Wait {
                        why: Wait::Leader { .. }
                    }
                ),
                "{i}: {s:?}"
            );
        }
    }
    let [a, b, c] = steps;
    let issue = [a, b, c]
        .into_iter()
        .find_map(|s| match s {
            Step::Issue(i) => Some(i),
            _ => None,
        })
        .unwrap();
    assert!(issue.current.is_none() && issue.order.is_none());
    // While it leads, not even the leader's own decide issues a second time.
    let issuer = &h[winner];
    let wrong = issuer.decide(CERT, None, &r, &due).await.unwrap();
    assert!(matches!(wrong, Step::Wait { .. }), "{wrong:?}");
    let serial = issuer.publish_new(issue, generation(1)).await.unwrap();
    assert_eq!(serial, 1);
    let (published, _) = issuer.current(CERT).await.unwrap().unwrap();
    assert_eq!(published.issued_by, issuer.host());
    assert_eq!(
        published.verdict,
        Verdict::Pending,
        "a forged verdict is not kept"
    );
    // The issuer holds canary slot 0 from the publishing transaction, and resigned.
    assert_eq!(
        issuer.slots(CERT, 1).await.unwrap(),
        [(0, issuer.host().to_owned())]
    );
    assert_eq!(issuer.leader(CERT).await.unwrap(), None);
    // Not due any more: nobody issues again.
    for host in &h {
        let s = host.decide(CERT, None, &r, &due).await.unwrap();
        assert!(!matches!(s, Step::Issue(_)), "{s:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_serial_that_does_not_follow_is_refused_and_the_leadership_released() {
    let cluster = Cluster::start(3);
    let h = hosts(&cluster).await;
    let r = rules(1, 1);
    let Step::Issue(issue) = h[0].decide(CERT, None, &r, due_before(1)).await.unwrap() else {
        panic!("web1 alone should issue");
    };
    let err = h[0].publish_new(issue, generation(5)).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::SerialNotNext {
                serial: 5,
                next: 1,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "certificate www: generation 5 cannot follow the current one: use serial 1"
    );
    assert!(h[0].current(CERT).await.unwrap().is_none());
    // The leadership was resigned: the next decide may lead at once.
    let s = h[1].decide(CERT, None, &r, due_before(1)).await.unwrap();
    assert!(matches!(s, Step::Issue(_)), "{s:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_one_canary_the_issuer_serves_first_then_the_rest_deploy() {
    let cluster = Cluster::start(3);
    let h = hosts(&cluster).await;
    let r = rules(1, 1);
    issue(&h[0], None, 1, &r).await;
    assert_deploy(&step(&h[0], None, &r).await, 1, Role::Canary { slot: 0 });
    for host in &h[1..] {
        let s = step(host, None, &r).await;
        assert!(
            matches!(
                s,
                Step::Wait {
                    why: Wait::Pending { serial: 1 }
                }
            ),
            "{s:?}"
        );
    }
    assert_eq!(h[1].judge(CERT, 1, &r).await.unwrap(), Verdict::Pending);
    report(&h[0], 1, deployed(1)).await;
    assert!(matches!(
        step(&h[0], Some(1), &r).await,
        Step::UpToDate { serial: 1 }
    ));
    assert!(matches!(verdict(&h[0]).await, Verdict::Good { .. }));
    for host in &h[1..] {
        assert_deploy(&step(host, None, &r).await, 1, Role::Rollout);
        report(host, 1, deployed(1)).await;
        assert!(matches!(
            step(host, Some(1), &r).await,
            Step::UpToDate { serial: 1 }
        ));
    }
    let states = h[2].hosts(CERT).await.unwrap();
    assert_eq!(states.len(), 3, "{states:?}");
    assert!(
        states.iter().all(|(_, s)| s.serving == Some(1)),
        "{states:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_two_canaries_exactly_one_other_host_gets_a_slot() {
    let cluster = Cluster::start(3);
    let h = hosts(&cluster).await;
    let r = rules(2, 1);
    issue(&h[0], None, 1, &r).await;
    let (s2, s3) = tokio::join!(step(&h[1], None, &r), step(&h[2], None, &r));
    let canaries: Vec<&Step> = [&s2, &s3]
        .into_iter()
        .filter(|s| matches!(s, Step::Deploy { .. }))
        .collect();
    assert_eq!(canaries.len(), 1, "{s2:?} {s3:?}");
    assert_deploy(canaries[0], 1, Role::Canary { slot: 1 });
    let (canary, other) = if matches!(s2, Step::Deploy { .. }) {
        (&h[1], &h[2])
    } else {
        (&h[2], &h[1])
    };
    // Asking again gives the same slot, and still none to the other.
    assert_deploy(&step(canary, None, &r).await, 1, Role::Canary { slot: 1 });
    assert!(matches!(
        step(other, None, &r).await,
        Step::Wait {
            why: Wait::Pending { .. }
        }
    ));
    report(&h[0], 1, deployed(1)).await;
    // One canary of two serves it: still pending.
    assert!(matches!(
        step(other, None, &r).await,
        Step::Wait {
            why: Wait::Pending { .. }
        }
    ));
    report(canary, 1, deployed(1)).await;
    assert_deploy(&step(other, None, &r).await, 1, Role::Rollout);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_canary_marks_the_generation_bad_and_its_hosts_revert() {
    let cluster = Cluster::start(3);
    let h = hosts(&cluster).await;
    all_serve_generation_one(&h).await;
    let r = rules(2, 0);
    issue(&h[0], Some(1), 2, &r).await;
    assert_deploy(&step(&h[0], Some(1), &r).await, 2, Role::Canary { slot: 0 });
    report(&h[0], 2, deployed(2)).await;
    assert_deploy(&step(&h[1], Some(1), &r).await, 2, Role::Canary { slot: 1 });
    assert_no_deploy_of(&step(&h[2], Some(1), &r).await, 2);
    // web2's nginx serves a stale copy: it reverted locally and reports the failure.
    report(&h[1], 2, (HostResult::Failed, Some(1))).await;
    let s = step(&h[2], Some(1), &r).await;
    assert!(matches!(s, Step::UpToDate { serial: 1 }), "{s:?}");
    match verdict(&h[2]).await {
        Verdict::Bad { why, .. } => {
            assert!(why.contains("web2"), "{why}");
            assert!(why.contains("nginx serves another leaf"), "{why}");
            assert!(!why.contains("web1") && !why.contains("web3"), "{why}");
        }
        other => panic!("expected bad, got {other:?}"),
    }
    // The host that serves the bad generation goes back to generation 1.
    match step(&h[0], Some(2), &r).await {
        Step::Revert { from, to } => {
            assert_eq!((from, to.serial, to.fingerprint), (2, 1, fp(1)));
        }
        other => panic!("expected a revert, got {other:?}"),
    }
    report(&h[0], 2, (HostResult::Reverted, Some(1))).await;
    // Nobody deploys 2 from here, not even a host with nothing live: it gets 1.
    assert!(matches!(
        step(&h[0], Some(1), &r).await,
        Step::UpToDate { serial: 1 }
    ));
    assert!(matches!(
        step(&h[1], Some(1), &r).await,
        Step::UpToDate { serial: 1 }
    ));
    assert_deploy(&step(&h[2], None, &r).await, 1, Role::Rollout);
    // Bad is final: more hosts serving it later do not make it good.
    report(&h[2], 2, deployed(2)).await;
    assert!(matches!(
        h[1].judge(CERT, 2, &r).await.unwrap(),
        Verdict::Bad { .. }
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_canary_gives_its_slot_to_another_host() {
    let cluster = Cluster::start(3);
    let h = hosts(&cluster).await;
    let r = rules(1, 1);
    issue(&h[0], None, 1, &r).await;
    report(&h[0], 1, (HostResult::Failed, None)).await;
    // One failure of one allowed: still pending, and the issuer does not try again.
    assert_eq!(verdict(&h[0]).await, Verdict::Pending);
    assert!(matches!(
        step(&h[0], None, &r).await,
        Step::Wait {
            why: Wait::Pending { .. }
        }
    ));
    assert_deploy(&step(&h[1], None, &r).await, 1, Role::Canary { slot: 0 });
    assert!(matches!(
        step(&h[2], None, &r).await,
        Step::Wait {
            why: Wait::Pending { .. }
        }
    ));
    report(&h[1], 1, (HostResult::Failed, None)).await;
    // A second failure of one allowed: bad, and with nothing before it, everyone waits.
    let s = step(&h[2], None, &r).await;
    assert!(
        matches!(
            s,
            Step::Wait {
                why: Wait::NothingGood { bad: 1 }
            }
        ),
        "{s:?}"
    );
    assert!(matches!(verdict(&h[2]).await, Verdict::Bad { .. }));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_leader_resumes_the_order_of_a_dead_one() {
    let cluster = Cluster::start(3);
    let [a, b, c] = hosts(&cluster).await;
    let r = rules(1, 1);
    let Step::Issue(first) = a.decide(CERT, None, &r, due_before(1)).await.unwrap() else {
        panic!("web1 alone should issue");
    };
    a.set_order(
        &first.leadership,
        "https://ca.test/order/17",
        "pebble",
        Some(certkeeper_fleet::SealedKey(vec![7; 48])),
    )
    .await
    .unwrap();
    // web1 dies while it waits for DNS: its client and leadership go, its lease runs out.
    drop(first);
    drop(a);
    let start = tokio::time::Instant::now();
    let issue = loop {
        match b.decide(CERT, None, &r, due_before(1)).await.unwrap() {
            Step::Issue(issue) => break issue,
            Step::Wait {
                why: Wait::Leader { .. },
            } => {}
            other => panic!("while web1's lease runs: {other:?}"),
        }
        assert!(start.elapsed() < PATIENCE, "web2 never took over");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let order = issue
        .order
        .clone()
        .expect("the order in flight is handed over");
    assert_eq!(
        (order.order.as_str(), order.host.as_str()),
        ("https://ca.test/order/17", "web1")
    );
    // With the issuer and the sealed account that placed it, which only may finalize it.
    assert_eq!(order.issuer, "pebble");
    assert_eq!(
        order.account,
        Some(certkeeper_fleet::SealedKey(vec![7; 48]))
    );
    // While web2 leads, web3 does not.
    let s = c.decide(CERT, None, &r, due_before(1)).await.unwrap();
    assert!(
        matches!(&s, Step::Wait { why: Wait::Leader { host: Some(h) } } if h == "web2"),
        "{s:?}"
    );
    b.publish_new(issue, generation(1)).await.unwrap();
    assert_eq!(b.order(CERT).await.unwrap(), None, "the order is done with");
}

#[tokio::test(flavor = "multi_thread")]
async fn results_of_a_host_that_died_still_count() {
    let cluster = Cluster::start(3);
    let [a, b, c] = hosts(&cluster).await;
    let r = rules(2, 1);
    issue(&a, None, 1, &r).await;
    report(&a, 1, deployed(1)).await;
    assert_deploy(&step(&b, None, &r).await, 1, Role::Canary { slot: 1 });
    report(&b, 1, deployed(1)).await;
    drop(b);
    let start = tokio::time::Instant::now();
    while c
        .hosts(CERT)
        .await
        .unwrap()
        .iter()
        .any(|(h, _)| h == "web2")
    {
        assert!(start.elapsed() < PATIENCE, "web2's state never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(matches!(
        c.judge(CERT, 1, &r).await.unwrap(),
        Verdict::Good { .. }
    ));
    let results = c.results(CERT, 1).await.unwrap();
    assert!(results.iter().any(|x| x.host == "web2"), "{results:?}");
    assert_deploy(&step(&c, None, &r).await, 1, Role::Rollout);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_judges_at_once_give_one_verdict() {
    let cluster = Cluster::start(3);
    let h = hosts(&cluster).await;
    let r = rules(1, 0);
    let mut serving = None;
    for serial in 1..=4 {
        issue(&h[0], serving, serial, &r).await;
        // Alternate good and bad generations: the race is the same for both.
        let result = if serial % 2 == 1 {
            deployed(serial)
        } else {
            (HostResult::Failed, Some(serial - 1))
        };
        report(&h[0], serial, result).await;
        let (v2, v3) = tokio::join!(h[1].judge(CERT, serial, &r), h[2].judge(CERT, serial, &r));
        let (v2, v3) = (v2.unwrap(), v3.unwrap());
        assert_eq!(v2, v3, "generation {serial}");
        assert_eq!(verdict(&h[0]).await, v2, "generation {serial}");
        let kept = h[0].generation(CERT, serial).await.unwrap().unwrap();
        assert_eq!(kept.verdict, v2, "generation {serial}");
        if serial % 2 == 1 {
            serving = Some(serial);
            assert!(matches!(v2, Verdict::Good { .. }), "{v2:?}");
        } else {
            assert!(matches!(v2, Verdict::Bad { .. }), "{v2:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_quorum_every_host_waits_and_recovers() {
    let mut cluster = Cluster::start(3);
    let h = hosts(&cluster).await;
    let r = rules(1, 1);
    issue(&h[0], None, 1, &r).await;
    cluster.stop(1);
    cluster.stop(2);
    let options = cluster.options("web-pool", "web1");
    let bound = options.request_timeout * 2 + options.connect_timeout;
    for host in &h {
        let s = tokio::time::timeout(bound, host.decide(CERT, None, &r, due_before(2)))
            .await
            .expect("decide without quorum returns within the client's timeout")
            .unwrap();
        match s {
            Step::Wait {
                why: Wait::NoQuorum { reason },
            } => assert!(reason.starts_with("etcd "), "{reason}"),
            other => panic!("{}: expected no quorum, got {other:?}", host.host()),
        }
    }
    cluster.start_member(1);
    cluster.start_member(2);
    cluster.wait_healthy();
    let start = tokio::time::Instant::now();
    loop {
        match step(&h[0], None, &r).await {
            Step::Deploy { generation, role } => {
                assert_eq!((generation.serial, role), (1, Role::Canary { slot: 0 }));
                break;
            }
            Step::Wait {
                why: Wait::NoQuorum { .. },
            } => {}
            other => panic!("after the quorum returns: {other:?}"),
        }
        assert!(
            start.elapsed() < PATIENCE,
            "no quorum after the members returned"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prefetch_serves_the_next_decide_of_each_certificate_once() {
    let cluster = Cluster::start(3);
    let h = hosts(&cluster).await;
    let r = rules(1, 1);
    // More certificates than one prefetch transaction reads.
    let names: Vec<String> = (0..40).map(|i| format!("c{i}")).collect();
    for name in &names {
        h[0].publish(name, &generation(1), None).await.unwrap();
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    h[1].prefetch(&refs).await.unwrap();
    // Generation 2 of c0 after the prefetch: the next decide goes by what was read before
    // it, the one after reads etcd again.
    let (_, rev) = h[0].current("c0").await.unwrap().unwrap();
    h[0].publish("c0", &generation(2), Some(rev)).await.unwrap();
    let live = fp(1);
    let first = h[1].decide("c0", Some(&live), &r, never_due).await.unwrap();
    assert!(matches!(first, Step::UpToDate { serial: 1 }), "{first:?}");
    let again = h[1].decide("c0", Some(&live), &r, never_due).await.unwrap();
    assert_deploy(&again, 2, Role::Rollout);
    // Every other certificate decides from the prefetch as from its own read.
    for name in &names[1..] {
        let s = h[1].decide(name, None, &r, never_due).await.unwrap();
        assert_deploy(&s, 1, Role::Rollout);
        let s = h[1].decide(name, Some(&live), &r, never_due).await.unwrap();
        assert!(matches!(s, Step::UpToDate { serial: 1 }), "{name}: {s:?}");
    }
    // A name that cannot be a key is refused before any read.
    assert!(matches!(
        h[1].prefetch(&["c1", "a/b"]).await,
        Err(Error::InvalidName { .. })
    ));
}
