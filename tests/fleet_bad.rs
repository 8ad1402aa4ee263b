//! A generation that goes bad after its canary, with the binary against a real 3-member etcd
//! and Pebble: four hosts (`canary: 1`, `max_failures: 1`); generation 2 is good on its
//! canary and taken by a second host, then fails on two others, which marks it bad. The
//! hosts that took it go back to generation 1 at their next pass, nobody deploys it after,
//! `fleet status` shows it bad with the failing hosts and what each still serves, and the
//! host whose judgement marked it bad sends one `fleet_generation_bad` alert naming them.

use serde_json::Value;

use certkeeper_fleet::testing::Cluster;

use crate::acme::unique_label;
use crate::fleet_alerts::{add_webhook, received};
use crate::fleet_canary::edit_config;
use crate::fleet_pass::{Host, orders};
use crate::util::pebble::Pebble;
use crate::util::sinks::{Behaviour, Sink, Vendor};

/// The signing secret of the webhook channels.
const SECRET: &str = "whsec-fleet-0123456789";

/// A fleet host whose states outlive its passes long enough for `fleet status` to see them.
fn host(pebble: &Pebble, cluster: &Cluster, fleet: &str, id: &str, domain: &str) -> Host {
    let host = Host::new(pebble, cluster, fleet, id, domain);
    edit_config(&host, "  canary: 1\n", "  canary: 1\n  lease_ttl: 5m\n");
    host
}

/// `host`'s service keeps serving the leaf `pin` (its verification accepts nothing else).
fn pin_verification(host: &Host, pin: &str) {
    let pin = host.dir().write("www.pin", pin);
    edit_config(
        host,
        "    privkey: live/www/privkey.pem\n",
        &format!(
            "    privkey: live/www/privkey.pem\n    verify: {{ command: [sh, -c, 'test \"$CERTKEEPER_FINGERPRINT\" = \"$(cat {})\"'], timeout: 5s }}\n",
            pin.display()
        ),
    );
}

/// `fleet status --json` on `host`: the `www` entry.
fn status(host: &Host) -> Value {
    let run = host.dir().run(&["fleet", "status", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    v["certificates"][0].clone()
}

/// The state `host` reports in a `fleet status` entry.
fn host_state<'a>(www: &'a Value, host: &str) -> &'a Value {
    www["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == host)
        .unwrap_or_else(|| panic!("{host} is not listed: {www}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_generation_that_fails_after_its_canary_is_marked_bad_and_the_hosts_that_took_it_go_back()
{
    let pebble = Pebble::start().await;
    let cluster = Cluster::start(3);
    let fleet = unique_label("pool");
    let domain = format!("www.{}.certkeeper-test.example.com", unique_label("fleet"));
    let hosts: Vec<Host> = ["web1", "web2", "web3", "web4"]
        .iter()
        .map(|id| host(&pebble, &cluster, &fleet, id, &domain))
        .collect();
    for h in &hosts {
        let run = h.renew();
        assert_eq!(run.code, 0, "{}: {run:?}\n{}", h.id, pebble.logs());
    }
    let leaf1 = hosts[0].leaf();
    for h in &hosts {
        assert_eq!(h.leaf(), leaf1, "{}", h.id);
    }
    assert_eq!(orders(&pebble), 1, "{}", pebble.logs());

    // Every host has an alert channel (the default events); web3's and web4's services
    // keep serving generation 1.
    let sinks: Vec<Sink> = hosts
        .iter()
        .map(|h| {
            let sink = Sink::start(Vendor::Webhook, Some(SECRET), Behaviour::Normal);
            add_webhook(h, &sink, None);
            sink
        })
        .collect();
    pin_verification(&hosts[2], &leaf1);
    pin_verification(&hosts[3], &leaf1);

    // web1 issues generation 2 and serves it as the canary: good. web2 takes it.
    let canary = hosts[0].dir().run(&["renew", "--force"]);
    assert_eq!(canary.code, 0, "web1: {canary:?}\n{}", pebble.logs());
    assert_eq!(orders(&pebble), 2, "{}", pebble.logs());
    let leaf2 = hosts[0].leaf();
    assert_ne!(leaf2, leaf1);
    let run = hosts[1].renew();
    assert_eq!(run.code, 0, "web2: {run:?}");
    assert!(run.stdout.contains("fleet generation 2"), "web2: {run:?}");
    assert_eq!(hosts[1].leaf(), leaf2);
    assert_eq!(status(&hosts[1])["current"]["verdict"]["state"], "good");

    // web3 fails it (one failure is allowed): still good, and web3 reports that it still
    // serves generation 1, not nothing.
    let run = hosts[2].renew();
    assert_eq!(run.code, 1, "web3: {run:?}");
    assert_eq!(hosts[2].leaf(), leaf1);
    let www = status(&hosts[2]);
    assert_eq!(www["current"]["verdict"]["state"], "good", "{www}");
    let web3 = host_state(&www, "web3");
    assert_eq!(web3["result"], "failed", "{www}");
    assert_eq!(web3["serving"], 1, "{www}");
    assert_eq!(web3["on_current"], false, "{www}");
    assert!(web3["why"].as_str().is_some_and(|w| !w.is_empty()), "{www}");

    // web4 fails it too: one failure too many, and web4's judgement marks it bad.
    let run = hosts[3].renew();
    assert_eq!(run.code, 1, "web4: {run:?}");
    assert!(run.stderr.contains("generation 2 is marked bad"), "{run:?}");
    assert_eq!(hosts[3].leaf(), leaf1);

    // The hosts that took it go back to generation 1 at their next pass, and say so.
    for h in &hosts[..2] {
        let run = h.renew();
        assert_eq!(run.code, 0, "{}: {run:?}", h.id);
        assert!(
            run.stdout.contains("www: renewed from fleet generation 1")
                && run.stdout.contains("back from bad generation 2"),
            "{}: {run:?}",
            h.id
        );
        assert!(
            run.stderr
                .contains("generation 2 is bad; going back to generation 1"),
            "{}: {run:?}",
            h.id
        );
        assert_eq!(h.leaf(), leaf1, "{}", h.id);
        let verify = h.dir().run(&["verify", "www"]);
        assert_eq!(verify.code, 0, "{}: {verify:?}", h.id);
    }

    // Nobody deploys generation 2 after, forced or not, and nothing more is ordered.
    for h in &hosts {
        for args in [&["renew"][..], &["renew", "--force"][..]] {
            let run = h.dir().run(args);
            assert!(
                !run.stdout.contains("renewed"),
                "{} {args:?}: {run:?}",
                h.id
            );
            assert_eq!(h.leaf(), leaf1, "{} {args:?}: {run:?}", h.id);
        }
    }
    assert_eq!(orders(&pebble), 2, "{}", pebble.logs());

    // `fleet status`: generation 2 bad, by web4, naming the failing hosts and why; each
    // host serves generation 1, the two that took generation 2 as reverted.
    let www = status(&hosts[0]);
    let verdict = &www["current"]["verdict"];
    assert_eq!(www["current"]["serial"], 2, "{www}");
    assert_eq!(verdict["state"], "bad", "{www}");
    assert_eq!(verdict["by"], "web4", "{www}");
    let why = verdict["why"].as_str().unwrap();
    assert!(why.contains("web3 (") && why.contains("web4 ("), "{why}");
    assert!(!why.contains("web1") && !why.contains("web2"), "{why}");
    for (id, result) in [
        ("web1", "reverted"),
        ("web2", "reverted"),
        ("web3", "failed"),
        ("web4", "failed"),
    ] {
        let state = host_state(&www, id);
        assert_eq!(state["serving"], 1, "{id}: {www}");
        assert_eq!(state["result"], result, "{id}: {www}");
    }
    let text = hosts[0].dir().run(&["fleet", "status"]);
    assert_eq!(text.code, 0, "{text:?}");
    assert!(text.stdout.contains("bad, by web4"), "{text:?}");

    // One fleet_generation_bad alert, from web4 only, naming the certificate, the
    // generation and both failing hosts with their reasons.
    let got: Vec<Vec<(String, Value)>> = sinks.iter().map(received).collect();
    for (i, got) in got.iter().enumerate() {
        let bad: Vec<&(String, Value)> = got
            .iter()
            .filter(|(e, _)| e == "fleet_generation_bad")
            .collect();
        assert_eq!(bad.len(), usize::from(i == 3), "{}: {got:?}", hosts[i].id);
    }
    let (_, body) = got[3]
        .iter()
        .find(|(e, _)| e == "fleet_generation_bad")
        .unwrap();
    assert_eq!(body["certificate"], "www", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "fleet generation 2 of www is marked bad: it failed on web3, web4 (web3: "
        ),
        "{message}"
    );
    assert!(message.contains("; web4: "), "{message}");
    assert!(!message.contains('\n'), "{message}");
    // web3 and web4 alerted their own rollbacks; nobody's alert carries a secret.
    for i in [2, 3] {
        assert!(got[i].iter().any(|(e, _)| e == "rolled_back"), "{got:?}");
    }
    let key = String::from_utf8(hosts[0].live("privkey.pem").unwrap()).unwrap();
    for sink in &sinks {
        for r in sink.requests() {
            let body = r.body_text();
            assert!(!body.contains(SECRET), "{body}");
            assert!(!body.contains("PRIVATE KEY"), "{body}");
            for line in key.lines().filter(|l| !l.starts_with("-----")) {
                assert!(!body.contains(line), "a line of the key in an alert");
            }
        }
    }
}
