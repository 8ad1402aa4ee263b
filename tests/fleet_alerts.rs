//! The fleet's alerts, with the binary against a real 3-member etcd and Pebble: a pass that
//! cannot reach a quorum raises one `fleet_degraded` (once per `alert_repeat`, however many
//! passes), and one `fleet_recovered` when etcd answers again; neither carries a secret.

use serde_json::Value;

use certkeeper_fleet::testing::Cluster;

use crate::acme::unique_label;
use crate::fleet_pass::{Host, orders};
use crate::util::pebble::Pebble;
use crate::util::sinks::{Behaviour, Sink, Vendor};

/// The signing secret of the webhook channel.
const SECRET: &str = "whsec-fleet-0123456789";

/// Adds a webhook channel to `sink` (its URL and secret in files) to `host`'s config, with
/// `on` when given (the default events otherwise).
pub(crate) fn add_webhook(host: &Host, sink: &Sink, on: Option<&str>) {
    let dir = host.dir();
    let url = dir.write("hook.url", sink.url());
    let secret = dir.write("hook.secret", SECRET);
    let path = dir.join("config.yaml");
    let mut yaml = std::fs::read_to_string(&path).unwrap();
    yaml.push_str(&format!(
        "alerts:\n  - type: webhook\n    url_file: {}\n    secret_file: {}\n{}",
        url.display(),
        secret.display(),
        on.map(|on| format!("    on: [{on}]\n")).unwrap_or_default()
    ));
    std::fs::write(&path, yaml).unwrap();
}

/// The `event` of each request the sink accepted, with its body.
pub(crate) fn received(sink: &Sink) -> Vec<(String, Value)> {
    sink.accepted()
        .iter()
        .map(|r| {
            let v = r.json.clone().unwrap_or(Value::Null);
            (v["event"].as_str().unwrap_or_default().to_owned(), v)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_without_quorum_alerts_once_and_its_recovery_once() {
    let pebble = Pebble::start().await;
    let mut cluster = Cluster::start(3);
    let fleet = unique_label("pool");
    let domain = format!("www.{}.certkeeper-test.example.com", unique_label("fleet"));
    let web1 = Host::new(&pebble, &cluster, &fleet, "web1", &domain);
    let web2 = Host::new(&pebble, &cluster, &fleet, "web2", &domain);
    // web3 has not deployed anything when the quorum is lost.
    let web3 = Host::new(&pebble, &cluster, &fleet, "web3", &domain);
    // web1: the default events; web2: only the fleet's.
    let sink1 = Sink::start(Vendor::Webhook, Some(SECRET), Behaviour::Normal);
    let sink2 = Sink::start(Vendor::Webhook, Some(SECRET), Behaviour::Normal);
    add_webhook(&web1, &sink1, None);
    add_webhook(&web2, &sink2, Some("fleet_degraded"));

    let first = web1.renew();
    assert_eq!(first.code, 0, "web1: {first:?}\n{}", pebble.logs());
    let leaf = web1.leaf();
    // A fleet that answers raises no fleet event.
    let run = web2.renew();
    assert_eq!(run.code, 0, "web2: {run:?}");
    assert!(received(&sink1).is_empty(), "{:?}", received(&sink1));
    assert!(received(&sink2).is_empty(), "{:?}", received(&sink2));

    cluster.stop(1);
    cluster.stop(2);
    for host in [&web1, &web2] {
        for args in [&["renew"][..], &["renew"][..], &["renew", "--force"][..]] {
            let run = host.dir().run(args);
            assert_eq!(run.code, 0, "{} {args:?}: {run:?}", host.id);
            assert!(
                run.stderr
                    .contains("etcd cannot be reached or has no quorum"),
                "{} {args:?}: {run:?}",
                host.id
            );
        }
    }
    for (sink, host) in [(&sink1, &web1), (&sink2, &web2)] {
        let got = received(sink);
        let events: Vec<&str> = got.iter().map(|(e, _)| e.as_str()).collect();
        assert_eq!(events, ["fleet_degraded"], "{}: {got:?}", host.id);
        let body = &got[0].1;
        assert_eq!(body["certificate"], format!("fleet {fleet}"), "{body}");
        assert_eq!(body["domains"], serde_json::json!([domain]), "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("no quorum"), "{message}");
    }
    assert_eq!(web1.leaf(), leaf);
    assert_eq!(orders(&pebble), 1, "{}", pebble.logs());
    // Without a quorum, `check` still reads the hosts' own pairs: OK.
    for host in [&web1, &web2] {
        let check = host.dir().run(&["check"]);
        assert_eq!(check.code, 0, "{}: {check:?}", host.id);
    }
    // A host without a pair waits too, and orders nothing.
    let run = web3.renew();
    assert_eq!(run.code, 0, "web3: {run:?}");
    assert!(web3.live("fullchain.pem").is_none());

    // The members back: one recovery alert each, then nothing more.
    cluster.start_member(1);
    cluster.start_member(2);
    cluster.wait_healthy();
    for host in [&web1, &web2] {
        for _ in 0..2 {
            let run = host.renew();
            assert_eq!(run.code, 0, "{}: {run:?}", host.id);
        }
    }
    for (sink, host) in [(&sink1, &web1), (&sink2, &web2)] {
        let got = received(sink);
        let events: Vec<&str> = got.iter().map(|(e, _)| e.as_str()).collect();
        assert_eq!(
            events,
            ["fleet_degraded", "fleet_recovered"],
            "{}: {got:?}",
            host.id
        );
        assert_eq!(got[1].1["certificate"], format!("fleet {fleet}"));
    }
    assert_eq!(web2.leaf(), leaf, "web2 caught up");
    // The fleet converges without a new order: web3 deploys the current generation.
    let run = web3.renew();
    assert_eq!(run.code, 0, "web3: {run:?}");
    assert!(run.stdout.contains("fleet generation 1"), "{run:?}");
    assert_eq!(web3.leaf(), leaf);
    assert_eq!(orders(&pebble), 1, "{}", pebble.logs());

    // No secret in any alert: no webhook URL, signing secret or key material.
    let key = String::from_utf8(web1.live("privkey.pem").unwrap()).unwrap();
    for sink in [&sink1, &sink2] {
        for r in sink.requests() {
            let body = r.body_text();
            assert!(!body.contains(SECRET), "{body}");
            assert!(!body.contains(&sink.url()), "{body}");
            assert!(!body.contains("PRIVATE KEY"), "{body}");
            for line in key.lines().filter(|l| !l.starts_with("-----")) {
                assert!(!body.contains(line), "a line of the key in an alert");
            }
        }
    }
    // Again down: the memory was cleared by the recovery, so it alerts again at once.
    cluster.stop(1);
    cluster.stop(2);
    let run = web2.renew();
    assert_eq!(run.code, 0, "{run:?}");
    let events: Vec<String> = received(&sink2).into_iter().map(|(e, _)| e).collect();
    assert_eq!(
        events,
        ["fleet_degraded", "fleet_recovered", "fleet_degraded"]
    );
}
