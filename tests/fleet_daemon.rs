//! `certkeeper run` in a fleet, with the binary against a real 3-member etcd and Pebble: the
//! daemon watches each shared certificate in etcd and deploys a new generation as soon as it
//! is good, not at the next tick of its (once a year) schedule, and does not wake while
//! nothing happens.

use std::time::{Duration, Instant};

use certkeeper_fleet::testing::Cluster;
use rustix::process::Signal;

use crate::acme::unique_label;
use crate::daemon::Daemon;
use crate::fleet_pass::{Host, orders};
use crate::util::pebble::Pebble;

/// The fleet's `lease_ttl` in these tests (the shortest allowed).
const LEASE_TTL: Duration = Duration::from_secs(5);

/// A fleet host whose daemon runs on a once-a-year schedule, with [`LEASE_TTL`].
fn host(pebble: &Pebble, cluster: &Cluster, fleet: &str, id: &str, domain: &str) -> Host {
    let host = Host::new(pebble, cluster, fleet, id, domain);
    let path = host.dir().join("config.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    assert!(yaml.contains("  canary: 1\n"), "{yaml}");
    let yaml = yaml.replace(
        "  canary: 1\n",
        &format!("  lease_ttl: {}s\n  canary: 1\n", LEASE_TTL.as_secs()),
    );
    let yaml = format!("renewal:\n  schedule: \"0 0 0 1 1 *\"\n  jitter: 0s\n{yaml}");
    std::fs::write(&path, yaml).unwrap();
    host
}

/// Waits until `host` serves the leaf `leaf`; panics with the daemon's log after `timeout`.
fn wait_leaf(host: &Host, daemon: &Daemon, leaf: &str, timeout: Duration) {
    let end = Instant::now() + timeout;
    while host.live("fullchain.pem").is_none() || host.leaf() != leaf {
        assert!(
            Instant::now() < end,
            "{} does not serve {leaf} after {timeout:?}; its daemon's log:\n{}",
            host.id,
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_deploys_a_new_generation_when_etcd_says_so() {
    let pebble = Pebble::start().await;
    let cluster = Cluster::start(3);
    let fleet = unique_label("pool");
    let domain = format!("www.{}.certkeeper-test.example.com", unique_label("fleet"));
    let web1 = host(&pebble, &cluster, &fleet, "web1", &domain);
    let web2 = host(&pebble, &cluster, &fleet, "web2", &domain);

    let first = web1.renew();
    assert_eq!(first.code, 0, "web1: {first:?}\n{}", pebble.logs());
    let leaf1 = web1.leaf();
    assert_eq!(orders(&pebble), 1, "{}", pebble.logs());

    // web2's daemon: its pass at start deploys generation 1, then it watches etcd.
    let mut daemon = Daemon::start(web2.dir().path(), &[], &[]);
    wait_leaf(&web2, &daemon, &leaf1, Duration::from_secs(60));
    daemon.wait_log(
        "watching etcd for new generations",
        1,
        Duration::from_secs(60),
    );
    daemon.wait_log("Pass done", 1, Duration::from_secs(60));

    // web1 issues generation 2 (timer mode), the canary; web2 deploys it without waiting
    // for its schedule.
    let second = web1.dir().run(&["renew", "--force"]);
    assert_eq!(second.code, 0, "web1: {second:?}\n{}", pebble.logs());
    let leaf2 = web1.leaf();
    assert_ne!(leaf2, leaf1);
    wait_leaf(&web2, &daemon, &leaf2, Duration::from_secs(120));
    // The pass logs the deploy after its reload and verification, so a moment after the
    // live files changed.
    daemon.wait_log("fleet generation 2", 1, Duration::from_secs(60));
    let log = daemon.log();
    assert!(log.contains("changed in etcd"), "{log}");
    assert_eq!(
        web2.live("privkey.pem"),
        web1.live("privkey.pem"),
        "web2 serves generation 2 with its key"
    );
    let verify = web2.dir().run(&["verify", "www"]);
    assert_eq!(verify.code, 0, "{verify:?}");
    // One order per generation: web2 ordered nothing.
    assert_eq!(orders(&pebble), 2, "{}", pebble.logs());

    // Idle: once what was pending is done (within a lease_ttl), no pass runs while nothing
    // happens in etcd.
    std::thread::sleep(LEASE_TTL * 2);
    let passes = daemon.log().matches("Pass done").count();
    std::thread::sleep(LEASE_TTL * 3);
    let log = daemon.log();
    assert_eq!(
        log.matches("Pass done").count(),
        passes,
        "passes while idle:\n{log}"
    );
    assert_eq!(orders(&pebble), 2, "{}", pebble.logs());

    daemon.signal(Signal::TERM);
    let status = daemon.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
}
