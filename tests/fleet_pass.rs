//! Fleet mode through the pass, with the binary: three hosts (own state_dir, live dir and
//! config; one fleet, one seal key) against a real 3-member etcd and Pebble. `renew` on each
//! in turn orders a shared certificate once, every host serves the same leaf with its key,
//! etcd holds no private key in clear, and a host with another seal key refuses to deploy
//! with one clear line while the others are unaffected.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use certkeeper_fleet::testing::Cluster;

use crate::acme::unique_label;
use crate::renew_acme::Host as AcmeHost;
use crate::util::pebble::Pebble;
use crate::util::{Dir, Run};

/// One host of the fleet: a directory with hooks, its config and its seal key.
pub(crate) struct Host {
    pub(crate) acme: AcmeHost,
    pub(crate) id: String,
}

impl Host {
    pub(crate) fn new(
        pebble: &Pebble,
        cluster: &Cluster,
        fleet: &str,
        id: &str,
        domain: &str,
    ) -> Host {
        let acme = AcmeHost::new(pebble);
        let endpoints: Vec<String> = cluster
            .endpoints()
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect();
        acme.dir.config(&format!(
            "state_dir: state\n\
             issuers:\n  pebble:\n    type: acme\n    directory: {dir}\n    contact: [\"mailto:ops@example.com\"]\n    trust_roots: {roots}\n    max_concurrent_requests: 1\n\
             dns_providers:\n  hook:\n    type: exec\n    command: [hooks/publish]\n    timeout: 20s\n\
             dns:\n  resolvers: [\"{dns}\"]\n  propagation_timeout: 10s\n  poll_interval: 1s\n\
             fleet:\n  name: {fleet}\n  host: {id}\n  etcd:\n    endpoints: [{endpoints}]\n  seal_key_file: fleet.key\n  canary: 1\n  max_failures: 1\n\
             certificates:\n\
             \x20 - name: www\n    domains: [\"{domain}\"]\n    issuer: pebble\n    dns_provider: hook\n    fleet: true\n    \
             fullchain: live/www/fullchain.pem\n    privkey: live/www/privkey.pem\n",
            dir = pebble.directory,
            roots = pebble.trust_roots.display(),
            dns = pebble.dns,
            endpoints = endpoints.join(", "),
        ));
        let host = Host {
            acme,
            id: id.into(),
        };
        host.seal_key([42u8; 32]);
        host
    }

    pub(crate) fn dir(&self) -> &Dir {
        &self.acme.dir
    }

    pub(crate) fn seal_key(&self, key: [u8; 32]) {
        let path = self.dir().write("fleet.key", key);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    pub(crate) fn renew(&self) -> Run {
        self.dir().run(&["renew"])
    }

    pub(crate) fn live(&self, file: &str) -> Option<Vec<u8>> {
        std::fs::read(self.dir().join(&format!("live/www/{file}"))).ok()
    }

    /// The SHA-256 of the live leaf (the first certificate of the fullchain).
    pub(crate) fn leaf(&self) -> String {
        let pem = self
            .live("fullchain.pem")
            .unwrap_or_else(|| panic!("{}: no live fullchain", self.id));
        let der = pem_first_der(&pem);
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(der))
    }
}

pub(crate) fn pem_first_der(pem: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let text = String::from_utf8_lossy(pem);
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

/// The orders Pebble created.
pub(crate) fn orders(pebble: &Pebble) -> usize {
    let log = std::fs::read_to_string(pebble.dir.join("pebble.log")).unwrap_or_default();
    // An order Pebble created, not a request: a newOrder refused for a bad nonce (Pebble
    // refuses 5% of good ones) is sent again and is not a second order.
    log.lines().filter(|l| l.contains("Added order ")).count()
}

/// Everything etcd holds under the fleet's prefix, keys and values, as `etcdctl` prints it.
pub(crate) fn etcd_dump(cluster: &Cluster, fleet: &str) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", cluster.endpoints().join(",")))
        .args(["get", "--prefix", &format!("/certkeeper/{fleet}/")])
        .output()
        .expect("etcdctl is needed: install the Debian package etcd-client");
    assert!(out.status.success(), "etcdctl: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shared_certificate_is_ordered_once_and_served_by_every_host() {
    let pebble = Pebble::start().await;
    let cluster = Cluster::start(3);
    let fleet = unique_label("pool");
    let domain = format!("www.{}.certkeeper-test.example.com", unique_label("fleet"));
    let hosts: Vec<Host> = ["web1", "web2", "web3"]
        .iter()
        .map(|id| Host::new(&pebble, &cluster, &fleet, id, &domain))
        .collect();
    // web3 has another fleet key: it cannot open what web1 sealed.
    hosts[2].seal_key([7u8; 32]);

    let first = hosts[0].renew();
    assert_eq!(first.code, 0, "web1: {first:?}\n{}", pebble.logs());
    assert!(first.stdout.contains("www: renewed"), "web1: {first:?}");
    let leaf = hosts[0].leaf();
    assert_eq!(orders(&pebble), 1, "web1 ordered once\n{}", pebble.logs());

    let second = hosts[1].renew();
    assert_eq!(second.code, 0, "web2: {second:?}");
    assert!(
        second.stdout.contains("fleet generation 1"),
        "web2: {second:?}"
    );

    // The wrong key: one clear line naming the seal key file, nothing deployed, no secret.
    let wrong = hosts[2].renew();
    assert_eq!(wrong.code, 1, "web3 with another key: {wrong:?}");
    let all = format!("{}{}", wrong.stdout, wrong.stderr);
    let lines: Vec<&str> = wrong
        .stdout
        .lines()
        .filter(|l| l.starts_with("www:"))
        .collect();
    assert_eq!(lines.len(), 1, "{wrong:?}");
    assert!(
        lines[0].contains("seal key file") && lines[0].contains("fleet.key"),
        "{wrong:?}"
    );
    assert!(!all.contains("PRIVATE KEY"), "{wrong:?}");
    assert!(hosts[2].live("fullchain.pem").is_none(), "{wrong:?}");
    assert!(hosts[2].live("privkey.pem").is_none(), "{wrong:?}");

    // web1 and web2 are unaffected: a pass on each changes nothing and orders nothing.
    for host in &hosts[..2] {
        let again = host.renew();
        assert_eq!(again.code, 0, "{}: {again:?}", host.id);
        assert_eq!(host.leaf(), leaf, "{}", host.id);
    }

    // With the fleet's key, web3 deploys the same generation: `--force`, as its line said,
    // skips the backoff of its failure, and still orders nothing (a generation is there).
    hosts[2].seal_key([42u8; 32]);
    let third = hosts[2].dir().run(&["renew", "--force"]);
    assert_eq!(third.code, 0, "web3: {third:?}");

    assert_eq!(
        orders(&pebble),
        1,
        "one order for the fleet\n{}",
        pebble.logs()
    );
    let key = hosts[0].live("privkey.pem").unwrap();
    for host in &hosts {
        assert_eq!(host.leaf(), leaf, "{} serves another leaf", host.id);
        assert_eq!(host.live("privkey.pem").as_ref(), Some(&key), "{}", host.id);
        // verify checks that the key matches the leaf, the chain and the names.
        let verify = host.dir().run(&["verify", "www"]);
        assert_eq!(verify.code, 0, "{}: {verify:?}", host.id);
    }

    // etcd holds the generation, its key sealed: no PEM key, no line of the key's body.
    let dump = etcd_dump(&cluster, &fleet);
    assert!(dump.contains("sealed_key"), "{dump}");
    assert!(!dump.contains("PRIVATE KEY"), "{dump}");
    let key_text = String::from_utf8(key).unwrap();
    for line in key_text.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!dump.contains(line), "a line of the private key is in etcd");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_quorum_hosts_keep_what_they_serve_and_order_nothing() {
    let pebble = Pebble::start().await;
    let mut cluster = Cluster::start(3);
    let fleet = unique_label("pool");
    let domain = format!("www.{}.certkeeper-test.example.com", unique_label("fleet"));
    let web1 = Host::new(&pebble, &cluster, &fleet, "web1", &domain);
    let web2 = Host::new(&pebble, &cluster, &fleet, "web2", &domain);
    let first = web1.renew();
    assert_eq!(first.code, 0, "web1: {first:?}\n{}", pebble.logs());
    let leaf = web1.leaf();
    assert_eq!(orders(&pebble), 1, "{}", pebble.logs());

    cluster.stop(1);
    cluster.stop(2);
    // Forced or not, a host without the fleet's etcd waits: what it serves stays, nothing
    // is ordered, and it is not a failure.
    for (host, args) in [
        (&web1, &["renew"][..]),
        (&web1, &["renew", "--force"][..]),
        (&web2, &["renew"][..]),
        (&web2, &["renew", "--force"][..]),
    ] {
        let run = host.dir().run(args);
        assert_eq!(run.code, 0, "{} {args:?}: {run:?}", host.id);
        assert!(
            run.stdout.contains("www: fleet: nothing to do here now"),
            "{} {args:?}: {run:?}",
            host.id
        );
        assert!(run.stderr.contains("WARN"), "{} {args:?}: {run:?}", host.id);
    }
    assert_eq!(web1.leaf(), leaf);
    assert!(web2.live("fullchain.pem").is_none());
    assert_eq!(orders(&pebble), 1, "{}", pebble.logs());

    // The members back: web2 catches up with the generation, still without a new order.
    cluster.start_member(1);
    cluster.start_member(2);
    cluster.wait_healthy();
    let back = web2.renew();
    assert_eq!(back.code, 0, "web2: {back:?}");
    assert_eq!(web2.leaf(), leaf);
    assert_eq!(orders(&pebble), 1, "{}", pebble.logs());
}

/// Publishes `serial` of `www` as a good generation, as a host would, with `key_pem` sealed
/// with the fleet key `[42; 32]` under the generation's identity.
async fn publish_good(cluster: &Cluster, fleet: &str, serial: u64, fullchain: &str, key_pem: &str) {
    use certkeeper::fleet::{SealKey, seal};
    use certkeeper_fleet::{Fleet, Generation, SealedKey, Verdict};
    use time::OffsetDateTime;
    let client = Fleet::connect(&cluster.options(fleet, "web1"))
        .await
        .unwrap();
    let read = client.current("www").await.unwrap().map(|(_, rev)| rev);
    let fingerprint = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(pem_first_der(fullchain.as_bytes())))
    };
    let identity = format!("{fleet}/www/{serial}/{fingerprint}");
    let key = SealKey::from_bytes(&[42u8; 32]).unwrap();
    let sealed = seal::seal(&key, key_pem.as_bytes(), identity.as_bytes()).unwrap();
    let now = OffsetDateTime::now_utc();
    let generation = Generation {
        serial,
        fingerprint,
        not_after: now + time::Duration::days(60),
        issued_by: "web1".into(),
        issued_at: now,
        fullchain_pem: fullchain.into(),
        sealed_key: SealedKey(sealed),
        verdict: Verdict::Good {
            by: "web1".into(),
            at: now,
        },
    };
    client.publish("www", &generation, read).await.unwrap();
}

/// What `host` reported for generation `serial` of `www`.
async fn result_of(cluster: &Cluster, fleet: &str, serial: u64, host: &str) -> Option<String> {
    let client = certkeeper_fleet::Fleet::connect(&cluster.options(fleet, "probe"))
        .await
        .unwrap();
    client
        .results("www", serial)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.host == host)
        .map(|r| format!("{:?}", r.result))
}

#[tokio::test(flavor = "multi_thread")]
async fn material_from_etcd_is_checked_like_a_cas_before_it_is_deployed() {
    let pebble = Pebble::start().await;
    let cluster = Cluster::start(3);
    let fleet = unique_label("pool");
    let domain = format!("www.{}.certkeeper-test.example.com", unique_label("fleet"));
    let web1 = Host::new(&pebble, &cluster, &fleet, "web1", &domain);
    let web2 = Host::new(&pebble, &cluster, &fleet, "web2", &domain);
    let first = web1.renew();
    assert_eq!(first.code, 0, "web1: {first:?}\n{}", pebble.logs());
    let fullchain = String::from_utf8(web1.live("fullchain.pem").unwrap()).unwrap();

    // Generation 2: the CA's chain, but another key sealed with it.
    let stranger = crate::util::fixtures::Pki::new("Stranger");
    let other = stranger.leaf(crate::util::fixtures::LeafSpec::new(&[domain.as_str()], 60));
    publish_good(&cluster, &fleet, 2, &fullchain, &other.key_pem).await;
    let run = web2.dir().run(&["renew", "--force"]);
    assert_eq!(run.code, 1, "a key that does not match: {run:?}");
    assert!(run.stdout.contains("fleet generation 2"), "{run:?}");
    assert!(web2.live("fullchain.pem").is_none(), "{run:?}");
    assert_eq!(
        result_of(&cluster, &fleet, 2, "web2").await.as_deref(),
        Some("Failed")
    );

    // Generation 3: a chain to a root no issuer of the certificate trusts, with its own key.
    publish_good(&cluster, &fleet, 3, &other.fullchain(), &other.key_pem).await;
    let run = web2.dir().run(&["renew", "--force"]);
    assert_eq!(run.code, 1, "an untrusted chain: {run:?}");
    assert!(run.stdout.contains("fleet generation 3"), "{run:?}");
    assert!(web2.live("fullchain.pem").is_none(), "{run:?}");
    assert!(!format!("{run:?}").contains("PRIVATE KEY"), "{run:?}");
    assert_eq!(
        result_of(&cluster, &fleet, 3, "web2").await.as_deref(),
        Some("Failed")
    );
    assert_eq!(orders(&pebble), 1, "{}", pebble.logs());
}
