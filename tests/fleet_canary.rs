//! A canary that fails, with the binary against a real 3-member etcd and Pebble: the issuer
//! deploys a new generation first and its verification fails, so the generation is marked
//! bad (`max_failures: 0`) at once, the other hosts never deploy it, and the alerts name
//! the canary host and the generation.

use certkeeper_fleet::testing::Cluster;

use crate::acme::unique_label;
use crate::fleet_alerts::{add_webhook, received};
use crate::fleet_pass::{Host, orders};
use crate::util::pebble::Pebble;
use crate::util::sinks::{Behaviour, Sink, Vendor};

/// A fleet host with `max_failures: 0`.
fn host(pebble: &Pebble, cluster: &Cluster, fleet: &str, id: &str, domain: &str) -> Host {
    let host = Host::new(pebble, cluster, fleet, id, domain);
    edit_config(&host, "  max_failures: 1\n", "  max_failures: 0\n");
    host
}

pub(crate) fn edit_config(host: &Host, from: &str, to: &str) {
    let path = host.dir().join("config.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    assert!(yaml.contains(from), "{yaml}");
    std::fs::write(&path, yaml.replacen(from, to, 1)).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_generation_the_canary_cannot_verify_is_marked_bad_and_deployed_nowhere() {
    let pebble = Pebble::start().await;
    let cluster = Cluster::start(3);
    let fleet = unique_label("pool");
    let domain = format!("www.{}.certkeeper-test.example.com", unique_label("fleet"));
    let hosts: Vec<Host> = ["web1", "web2", "web3"]
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

    // web1's service keeps serving generation 1 (its verification is pinned to it), and
    // web1 has an alert channel.
    let pin = hosts[0].dir().write("www.pin", &leaf1);
    edit_config(
        &hosts[0],
        "    privkey: live/www/privkey.pem\n",
        &format!(
            "    privkey: live/www/privkey.pem\n    verify: {{ command: [sh, -c, 'test \"$CERTKEEPER_FINGERPRINT\" = \"$(cat {})\"'], timeout: 5s }}\n",
            pin.display()
        ),
    );
    let sink = Sink::start(
        Vendor::Webhook,
        Some("whsec-fleet-0123456789"),
        Behaviour::Normal,
    );
    add_webhook(&hosts[0], &sink, None);

    // web1 issues generation 2, deploys it first, and its verification fails: rolled back.
    let canary = hosts[0].dir().run(&["renew", "--force"]);
    assert_eq!(canary.code, 1, "web1: {canary:?}\n{}", pebble.logs());
    assert_eq!(orders(&pebble), 2, "{}", pebble.logs());
    assert_eq!(hosts[0].leaf(), leaf1, "web1 went back to generation 1");
    assert!(
        canary.stderr.contains("generation 2 is marked bad"),
        "{canary:?}"
    );

    // The verdict is bad, and says which host failed.
    let client = certkeeper_fleet::Fleet::connect(&cluster.options(&fleet, "probe"))
        .await
        .unwrap();
    let (current, _) = client.current("www").await.unwrap().unwrap();
    assert_eq!(current.serial, 2);
    match &current.verdict {
        certkeeper_fleet::Verdict::Bad { why, .. } => assert!(why.contains("web1"), "{why}"),
        other => panic!("generation 2 is {other:?}"),
    }

    // web2 and web3 never deploy it, forced or not; nothing more is ordered.
    for h in &hosts[1..] {
        for args in [&["renew"][..], &["renew", "--force"][..]] {
            let run = h.dir().run(args);
            assert_eq!(run.code, 0, "{} {args:?}: {run:?}", h.id);
            assert!(!run.stdout.contains("generation 2"), "{}: {run:?}", h.id);
            assert_eq!(h.leaf(), leaf1, "{} {args:?}: {run:?}", h.id);
        }
    }
    assert_eq!(orders(&pebble), 2, "{}", pebble.logs());

    // The alert names the canary host and the generation.
    let got = received(&sink);
    let rolled: Vec<_> = got.iter().filter(|(e, _)| e == "rolled_back").collect();
    assert_eq!(rolled.len(), 1, "{got:?}");
    let message = rolled[0].1["message"].as_str().unwrap();
    assert!(
        message.contains("fleet generation 2, canary host web1"),
        "{message}"
    );
    // web1's judgement marked it bad: one fleet_generation_bad, naming web1 and why.
    let bad: Vec<_> = got
        .iter()
        .filter(|(e, _)| e == "fleet_generation_bad")
        .collect();
    assert_eq!(bad.len(), 1, "{got:?}");
    let message = bad[0].1["message"].as_str().unwrap();
    assert!(
        message.starts_with("fleet generation 2 of www is marked bad: it failed on web1 (web1: "),
        "{message}"
    );
}
