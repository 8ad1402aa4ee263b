//! A fleet of three hosts, each with its own state_dir, live dir and nginx, against a real
//! 3-member etcd and Pebble; what counts is what each nginx serves.
//!
//! - The issuer dies mid-order: of three `certkeeper run` daemons, the one that leads the
//!   issuance is killed with SIGKILL while it waits for its challenge record to propagate;
//!   another host takes over once the dead one's lease runs out, resumes the order it left
//!   in flight (recorded in etcd with its account, sealed) instead of placing another, and
//!   all three nginx end up serving one leaf.
//! - A canary whose nginx keeps serving a stale copy: the new generation fails its
//!   verification there, is marked bad, and the other two never deploy it.

use std::time::{Duration, Instant};

use certkeeper_fleet::Fleet;
use certkeeper_fleet::testing::Cluster;
use rustix::process::Signal;

use crate::acme::unique_label;
use crate::daemon::Daemon;
use crate::fleet_alerts::{add_webhook, received};
use crate::fleet_pass::{Host, etcd_dump, orders, pem_first_der};
use crate::util::Dir;
use crate::util::fixtures;
use crate::util::nginx::{Nginx, Site, write_script};
use crate::util::pebble::Pebble;
use crate::util::sinks::{Behaviour, Sink, Vendor};

/// The fleet's `lease_ttl` here (the shortest allowed).
const LEASE_TTL: Duration = Duration::from_secs(5);

/// One host: its config and directories, and the nginx that serves its live pair.
struct Served {
    host: Host,
    nginx: Nginx,
}

/// A host whose daemon runs on a once-a-year schedule and whose nginx serves the shared
/// certificate (a self-signed placeholder for another name until the first deploy, so that
/// nginx can start), reloaded with `nginx -s reload` and verified over TLS. With `first`,
/// every host's DNS hook goes through it: the first record the fleet publishes is never
/// published, so the host that places the order waits for it.
fn host(
    pebble: &Pebble,
    cluster: &Cluster,
    fleet: &str,
    id: &str,
    domain: &str,
    first: Option<&Dir>,
) -> Served {
    let host = Host::new(pebble, cluster, fleet, id, domain);
    let dir = host.dir();
    let (cert, key) = fixtures::self_signed_leaf(&["placeholder.invalid"]);
    let fullchain = dir.write("live/www/fullchain.pem", &cert);
    let privkey = dir.write("live/www/privkey.pem", &key);
    let nginx = Nginx::start(&dir.join("nginx"), &[Site::new(domain, fullchain, privkey)]);
    let mut edits = vec![
        (
            "  canary: 1\n",
            format!("  lease_ttl: {}s\n  canary: 1\n", LEASE_TTL.as_secs()),
        ),
        (
            "privkey: live/www/privkey.pem\n",
            format!(
                "privkey: live/www/privkey.pem\n    reload: {{ command: {}, timeout: 10s }}\n    \
                 verify: {{ tls_connect: \"{}\", server_name: \"{domain}\", timeout: 10s }}\n",
                serde_json::to_string(&nginx.reload_argv()).unwrap(),
                nginx.connect()
            ),
        ),
    ];
    if let Some(first) = first {
        write_script(
            &dir.join("hooks/first-silent"),
            &format!(
                "#!/bin/sh\n\
                 # The fleet's first challenge record is never published (mkdir is atomic: one\n\
                 # host only), so its host waits for it until it is killed.\n\
                 if [ \"$1\" = present ] && mkdir '{}' 2>/dev/null; then exit 0; fi\n\
                 exec \"$(dirname \"$0\")/publish\" \"$@\"\n",
                first.join("taken").display()
            ),
        );
        edits.push((
            "command: [hooks/publish]",
            "command: [hooks/first-silent]".to_owned(),
        ));
        edits.push((
            "propagation_timeout: 10s",
            "propagation_timeout: 90s".to_owned(),
        ));
    }
    for (from, to) in edits {
        edit_config(&host, from, &to);
    }
    edit_config(
        &host,
        "state_dir: state\n",
        "renewal:\n  schedule: \"0 0 0 1 1 *\"\n  jitter: 0s\nstate_dir: state\n",
    );
    Served { host, nginx }
}

/// Replaces the first `from` in `host`'s config with `to`.
fn edit_config(host: &Host, from: &str, to: &str) {
    let path = host.dir().join("config.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    assert!(yaml.contains(from), "{from} not in:\n{yaml}");
    std::fs::write(&path, yaml.replacen(from, to, 1)).unwrap();
}

/// Waits for `what` to be `Some`, asking every 100 ms; panics with `context()` after
/// `timeout`.
fn wait_for<T>(
    timeout: Duration,
    mut what: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(found) = what() {
            return found;
        }
        assert!(
            Instant::now() < end,
            "not within {timeout:?}:\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_killed_issuer_is_replaced_and_its_order_resumed_not_placed_again() {
    // Plain threads drive the processes; this runtime only asks etcd.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pebble = rt.block_on(Pebble::start());
    let cluster = Cluster::start(3);
    let fleet = unique_label("pool");
    let domain = format!("www.{}.certkeeper-test.example.com", unique_label("fleet"));
    let first = Dir::new();
    let hosts: Vec<Served> = ["web1", "web2", "web3"]
        .iter()
        .map(|id| host(&pebble, &cluster, &fleet, id, &domain, Some(&first)))
        .collect();
    let mut daemons: Vec<Daemon> = hosts
        .iter()
        .map(|s| Daemon::start(s.host.dir().path(), &[], &[]))
        .collect();
    let logs = |daemons: &[Daemon]| {
        daemons
            .iter()
            .zip(&hosts)
            .map(|(d, s)| format!("--- {}\n{}", s.host.id, d.log()))
            .collect::<String>()
    };
    let observer = rt
        .block_on(Fleet::connect(&cluster.options(&fleet, "observer")))
        .unwrap();

    // The leader places the order, records it in etcd, and waits for a record that never
    // comes.
    let record = wait_for(
        Duration::from_secs(60),
        || rt.block_on(observer.order("www")).unwrap(),
        || logs(&daemons),
    );
    let leader = hosts.iter().position(|s| s.host.id == record.host).unwrap();
    assert_eq!(record.issuer, "pebble");
    let sealed = record
        .account
        .as_ref()
        .expect("the order's account is recorded");
    assert!(!sealed.0.is_empty());
    daemons[leader].wait_log(
        "Waiting for the challenge record to propagate",
        1,
        Duration::from_secs(30),
    );
    assert_eq!(orders(&pebble), 1, "{}", pebble.logs());
    // etcd holds the order's account sealed: neither its private key nor any PEM key in clear.
    let account = std::fs::read_to_string(
        hosts[leader]
            .host
            .dir()
            .join("state/accounts/pebble/account.json"),
    )
    .unwrap();
    let account: serde_json::Value = serde_json::from_str(&account).unwrap();
    let account_key = account["key_pkcs8"].as_str().unwrap();
    assert!(account_key.len() > 40);
    let dump = etcd_dump(&cluster, &fleet);
    assert!(dump.contains(&record.order), "the order is in etcd");
    assert!(
        !dump.contains(account_key),
        "the account key is in etcd in clear"
    );
    assert!(!dump.contains("PRIVATE KEY"));

    daemons[leader].signal(Signal::KILL);
    let killed = Instant::now();
    let _ = daemons[leader].wait_exit(Duration::from_secs(10));

    // Another host takes over once the lease runs out, and resumes the order.
    let resumed = "Resuming the order in flight that another host placed";
    let taker = wait_for(
        LEASE_TTL * 3 + Duration::from_secs(30),
        || {
            (0..hosts.len())
                .filter(|&i| i != leader)
                .find(|&i| daemons[i].log().contains(resumed))
        },
        || logs(&daemons),
    );
    let takeover = killed.elapsed();
    let generation = wait_for(
        Duration::from_secs(120),
        || {
            rt.block_on(observer.current("www"))
                .unwrap()
                .map(|(g, _)| g)
        },
        || logs(&daemons),
    );
    let published = killed.elapsed();
    assert_eq!(generation.serial, 1);
    assert_eq!(generation.issued_by, hosts[taker].host.id);

    // The two live hosts serve it; the killed one, restarted, catches up.
    let leaf = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(pem_first_der(
            generation.fullchain_pem.as_bytes(),
        )))
    };
    for s in hosts
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, s)| s)
    {
        wait_for(
            Duration::from_secs(120),
            || (s.nginx.try_served(&domain).ok().as_deref() == Some(leaf.as_str())).then_some(()),
            || {
                format!(
                    "{} does not serve generation 1:\n{}",
                    s.host.id,
                    logs(&daemons)
                )
            },
        );
    }
    let served_by_two = killed.elapsed();
    daemons[leader] = Daemon::start(hosts[leader].host.dir().path(), &[], &[]);
    hosts[leader]
        .nginx
        .wait_served(&domain, &leaf, Duration::from_secs(120));
    // Right after a reload, nginx's old workers may still take a connection for a moment:
    // what counts is what every host comes to serve.
    for s in &hosts {
        s.nginx.wait_served(&domain, &leaf, Duration::from_secs(30));
        assert_eq!(s.host.leaf(), leaf, "{}\n{}", s.host.id, logs(&daemons));
    }
    eprintln!(
        "takeover after SIGKILL: resumed {:.1}s, published {:.1}s, served by the two live hosts {:.1}s (lease_ttl {}s)",
        takeover.as_secs_f64(),
        published.as_secs_f64(),
        served_by_two.as_secs_f64(),
        LEASE_TTL.as_secs()
    );

    // One order for the name: the resumed one.
    assert_eq!(orders(&pebble), 1, "{}", pebble.logs());
    // The order record is gone with the publish.
    assert!(rt.block_on(observer.order("www")).unwrap().is_none());

    let mut codes = Vec::new();
    for d in &mut daemons {
        d.signal(Signal::TERM);
        codes.push(d.wait_exit(Duration::from_secs(30)).code());
    }
    assert_eq!(codes, [Some(0); 3], "{}", logs(&daemons));
}

#[test]
fn a_canary_whose_nginx_serves_a_stale_copy_marks_the_generation_bad() {
    // Plain threads drive the processes; this runtime only asks etcd.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pebble = rt.block_on(Pebble::start());
    let cluster = Cluster::start(3);
    let fleet = unique_label("pool");
    let domain = format!("www.{}.certkeeper-test.example.com", unique_label("fleet"));
    let hosts: Vec<Served> = ["web1", "web2", "web3"]
        .iter()
        .map(|id| host(&pebble, &cluster, &fleet, id, &domain, None))
        .collect();
    for s in &hosts {
        edit_config(&s.host, "  max_failures: 1\n", "  max_failures: 0\n");
    }
    // Generation 1: web1 issues it and serves it first, then the others.
    for s in &hosts {
        let run = s.host.renew();
        assert_eq!(run.code, 0, "{}: {run:?}\n{}", s.host.id, pebble.logs());
    }
    let leaf1 = hosts[0].host.leaf();
    for s in &hosts {
        s.nginx
            .wait_served(&domain, &leaf1, Duration::from_secs(30));
    }
    assert_eq!(orders(&pebble), 1, "{}", pebble.logs());

    // web1's nginx is not reloaded any more: it keeps serving the copy it loaded.
    edit_config(
        &hosts[0].host,
        &serde_json::to_string(&hosts[0].nginx.reload_argv()).unwrap(),
        "[/bin/true]",
    );
    let sink = Sink::start(
        Vendor::Webhook,
        Some("whsec-fleet-0123456789"),
        Behaviour::Normal,
    );
    add_webhook(&hosts[0].host, &sink, None);
    let canary = hosts[0].host.dir().run(&["renew", "--force"]);
    assert_eq!(canary.code, 1, "web1: {canary:?}\n{}", pebble.logs());
    assert_eq!(orders(&pebble), 2, "{}", pebble.logs());
    assert!(
        canary.stderr.contains("generation 2 is marked bad"),
        "{canary:?}"
    );
    // web1 went back on disk too; its nginx never stopped serving generation 1.
    assert_eq!(hosts[0].host.leaf(), leaf1);
    assert_eq!(hosts[0].nginx.served(&domain), leaf1);

    // The others never deploy generation 2, forced or not; nothing more is ordered.
    for s in &hosts[1..] {
        for args in [&["renew"][..], &["renew", "--force"][..]] {
            let run = s.host.dir().run(args);
            assert_eq!(run.code, 0, "{} {args:?}: {run:?}", s.host.id);
            assert!(
                !run.stdout.contains("generation 2"),
                "{}: {run:?}",
                s.host.id
            );
            assert_eq!(s.host.leaf(), leaf1, "{} {args:?}", s.host.id);
            s.nginx
                .wait_served(&domain, &leaf1, Duration::from_secs(10));
        }
    }
    assert_eq!(orders(&pebble), 2, "{}", pebble.logs());

    // The verdict and the alert name the canary host.
    let observer = rt
        .block_on(Fleet::connect(&cluster.options(&fleet, "observer")))
        .unwrap();
    let (current, _) = rt.block_on(observer.current("www")).unwrap().unwrap();
    assert_eq!(current.serial, 2);
    match &current.verdict {
        certkeeper_fleet::Verdict::Bad { why, .. } => assert!(why.contains("web1"), "{why}"),
        other => panic!("generation 2 is {other:?}"),
    }
    let got = received(&sink);
    let rolled: Vec<_> = got.iter().filter(|(e, _)| e == "rolled_back").collect();
    assert_eq!(rolled.len(), 1, "{got:?}");
    let message = rolled[0].1["message"].as_str().unwrap();
    assert!(message.contains("canary host web1"), "{message}");
    assert!(message.contains("verif"), "{message}");
}
