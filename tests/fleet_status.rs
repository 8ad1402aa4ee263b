//! The fleet's view for operators through the binary, against a real 3-member etcd on
//! loopback: `fleet status` (text and JSON), the `fleet` object of `check`/`verify` and its
//! "behind the fleet" WARNING, and the `certkeeper_fleet_*` metrics. The records are written
//! with the fleet's own client, as hosts would write them. With etcd unreachable or without
//! a quorum: `fleet status` exits 1 with one line, `check` still decides locally, metrics
//! say `certkeeper_fleet_connected 0`; and the etcd password is never printed.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use certkeeper_fleet::testing::Cluster;
use certkeeper_fleet::{
    Fleet, Generation, HostResult, HostState, Leadership, Password, SealedKey, Verdict,
};
use serde_json::Value;
use time::OffsetDateTime;

use crate::hostile::bounded;
use crate::metrics::{parse, value};
use crate::util::fixtures::{Leaf, LeafSpec, Pki};
use crate::util::{Dir, Run};

const PASSWORD: &str = "etcd-pw-Zq8v1Lr7";

/// A host of the fleet (`web1`): its config, a PKI its trust roots hold, and three leaves
/// for the shared certificate `www` (generations 1 and 2, and one from neither).
struct Host {
    dir: Dir,
    leaves: Vec<Leaf>,
}

impl Host {
    /// `endpoints` for etcd; `auth`: a username and the password in a 0600 file.
    fn new(endpoints: &[String], auth: bool) -> Host {
        let dir = Dir::new();
        let pki = Pki::new("Fleet");
        dir.write("trust.pem", pki.root_pem());
        let leaves: Vec<Leaf> = (0..3)
            .map(|_| pki.leaf(LeafSpec::new(&["www.example.test"], 60)))
            .collect();
        let mail = pki.leaf(LeafSpec::new(&["mail.example.test"], 60));
        dir.write("live/mail/fullchain.pem", mail.fullchain());
        dir.write("live/mail/privkey.pem", &mail.key_pem);
        let key = dir.write("fleet.key", [7u8; 32]);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut auth_yaml = String::new();
        if auth {
            let pw = dir.write("etcd.pw", format!("{PASSWORD}\n"));
            std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
            auth_yaml = "    username: certkeeper\n    password_file: etcd.pw\n".into();
        }
        let endpoints: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
        dir.config(&format!(
            "state_dir: state\n\
             issuers:\n  ca:\n    type: acme\n    directory: https://127.0.0.1:14000/dir\n    trust_roots: trust.pem\n\
             dns_providers:\n  hook:\n    type: exec\n    command: [/bin/true]\n\
             fleet:\n  name: web-pool\n  host: web1\n  etcd:\n    endpoints: [{}]\n{auth_yaml}  seal_key_file: fleet.key\n\
             certificates:\n\
             {}{}",
            endpoints.join(", "),
            cert_yaml("www", true),
            cert_yaml("mail", false),
        ));
        let host = Host { dir, leaves };
        host.serve(0);
        host
    }

    /// Writes leaf `i` as www's live pair.
    fn serve(&self, i: usize) {
        let leaf = &self.leaves[i];
        self.dir.write("live/www/fullchain.pem", leaf.fullchain());
        self.dir.write("live/www/privkey.pem", &leaf.key_pem);
    }

    fn run(&self, args: &[&str]) -> Run {
        bounded(&self.dir, "config.yaml", args)
    }

    /// `check --json`'s entry for `name`, and the exit code.
    fn check(&self, args: &[&str], name: &str) -> (i32, Value) {
        let run = self.run(args);
        let v: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|_| panic!("{run:?}"));
        let entry = match &v {
            Value::Array(entries) => entries
                .iter()
                .find(|e| e["name"] == name)
                .unwrap_or_else(|| panic!("no {name}: {run:?}"))
                .clone(),
            _ => v,
        };
        (run.code, entry)
    }
}

fn cert_yaml(name: &str, fleet: bool) -> String {
    format!(
        "  - name: {name}\n    domains: [{name}.example.test]\n    issuer: ca\n    dns_provider: hook\n{}    fullchain: live/{name}/fullchain.pem\n    privkey: live/{name}/privkey.pem\n",
        if fleet { "    fleet: true\n" } else { "" }
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn client(cluster: &Cluster, host: &str, auth: bool) -> Fleet {
    let mut o = cluster.options("web-pool", host);
    if auth {
        o.username = Some("certkeeper".into());
        o.password = Some(Password(PASSWORD.into()));
    }
    Fleet::connect(&o).await.unwrap()
}

fn fingerprint(leaf: &Leaf) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(&leaf.cert_der))
}

fn generation(serial: u64, leaf: &Leaf, by: &str, verdict: Verdict) -> Generation {
    Generation {
        serial,
        fingerprint: fingerprint(leaf),
        not_after: OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap(),
        issued_by: by.into(),
        issued_at: OffsetDateTime::from_unix_timestamp(1_800_000_000 + serial as i64).unwrap(),
        fullchain_pem: leaf.fullchain(),
        sealed_key: SealedKey(vec![0xA5; 60]),
        verdict,
    }
}

/// `web2` publishes generations 1 (good for 9 days, by web1) and 2 (good for `second_good`,
/// by web2) of `www`, of the host's first two leaves.
async fn publish_two(web2: &Fleet, host: &Host, second_good: time::Duration) {
    let g1 = generation(
        1,
        &host.leaves[0],
        "web2",
        good(time::Duration::days(9), "web1"),
    );
    web2.publish("www", &g1, None).await.unwrap();
    let (_, rev) = web2.current("www").await.unwrap().unwrap();
    let g2 = generation(2, &host.leaves[1], "web2", good(second_good, "web2"));
    web2.publish("www", &g2, Some(rev)).await.unwrap();
}

fn state(serving: Option<u64>, result: HostResult, why: Option<&str>) -> HostState {
    HostState {
        serving,
        result,
        at: OffsetDateTime::now_utc(),
        why: why.map(str::to_owned),
    }
}

fn good(ago: time::Duration, by: &str) -> Verdict {
    Verdict::Good {
        by: by.into(),
        at: OffsetDateTime::now_utc() - ago,
    }
}

/// Runs etcdctl against `endpoints`; fails naming the Debian package when it is missing.
fn etcdctl(endpoints: &[String], args: &[&str]) {
    let out = Command::new("etcdctl")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("etcdctl ({e}): install the Debian package etcd-client (apt-get install -y etcd-client)")
        });
    assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
}

/// Turns etcd authentication on, with a user `certkeeper` (role root) whose password is
/// [`PASSWORD`].
fn enable_auth(endpoints: &[String]) {
    etcdctl(
        endpoints,
        &["user", "add", "root:root-pw", "--interactive=false"],
    );
    etcdctl(endpoints, &["user", "grant-role", "root", "root"]);
    let user = format!("certkeeper:{PASSWORD}");
    etcdctl(endpoints, &["user", "add", &user, "--interactive=false"]);
    etcdctl(endpoints, &["user", "grant-role", "certkeeper", "root"]);
    etcdctl(endpoints, &["auth", "enable"]);
}

/// One line on stderr starting `certkeeper: `, nothing on stdout.
fn one_line(run: &Run) -> &str {
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{run:?}");
    assert!(lines[0].starts_with("certkeeper: "), "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    lines[0]
}

fn assert_no_secret(runs: &[&Run]) {
    for run in runs {
        for text in [&run.stdout, &run.stderr] {
            assert!(
                !text.contains(PASSWORD),
                "the etcd password is printed: {run:?}"
            );
            assert!(!text.contains("PRIVATE KEY"), "{run:?}");
            assert!(!text.contains("sealed_key"), "{run:?}");
            assert!(!text.contains("BEGIN CERTIFICATE"), "{run:?}");
        }
    }
}

#[test]
fn status_check_and_metrics_show_the_fleet_and_outlive_a_lost_quorum() {
    let mut cluster = Cluster::start(3);
    enable_auth(&cluster.endpoints());
    let host = Host::new(&cluster.endpoints(), true);
    let rt = runtime();
    // web2 issued generations 1 and 2 and leads; 2 is good since two days (past any
    // scheduled pass); web1 (this host) still serves 1.
    let (_web1, _web2, _leadership): (Fleet, Fleet, Leadership) = rt.block_on(async {
        let web1 = client(&cluster, "web1", true).await;
        let web2 = client(&cluster, "web2", true).await;
        publish_two(&web2, &host, time::Duration::days(2)).await;
        web1.report(
            "www",
            &state(
                Some(1),
                HostResult::Failed,
                Some("nginx: reload failed\x1b[31m"),
            ),
        )
        .await
        .unwrap();
        web2.report("www", &state(Some(2), HostResult::Deployed, None))
            .await
            .unwrap();
        let leadership = web2
            .try_campaign("www", Duration::from_secs(15))
            .await
            .unwrap()
            .unwrap();
        (web1, web2, leadership)
    });
    let fp2 = fingerprint(&host.leaves[1]);

    let text = host.run(&["fleet", "status"]);
    assert_eq!(text.code, 0, "{text:?}");
    for expected in [
        "fleet web-pool, this host web1: 1 shared certificate".to_owned(),
        "www\n".to_owned(),
        "  generation   2\n".to_owned(),
        format!("  fingerprint  {fp2}\n"),
        "  not after    2030-03-17T17:46:40Z\n".to_owned(),
        "  issued       by web2 at 2027-01-15T08:00:02Z\n".to_owned(),
        "  verdict      good, by web2 at ".to_owned(),
        "  leader       web2\n".to_owned(),
        "  hosts        2 reporting\n".to_owned(),
    ] {
        assert!(text.stdout.contains(&expected), "{expected:?} in {text:?}");
    }
    let rows: Vec<Vec<&str>> = text
        .stdout
        .lines()
        .filter(|l| l.starts_with("    web"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{text:?}");
    assert_eq!(rows[0][..3], ["web1", "1", "failed"], "{text:?}");
    assert_eq!(rows[1][..3], ["web2", "2", "deployed"], "{text:?}");
    // A reason from etcd is shown escaped: it cannot recolour the terminal.
    assert!(
        text.stdout.contains("nginx: reload failed\\x1b[31m"),
        "{text:?}"
    );
    assert!(!text.stdout.contains('\x1b'), "{text:?}");
    assert!(text.stderr.is_empty(), "{text:?}");

    let json = host.run(&["fleet", "status", "--json", "www"]);
    assert_eq!(json.code, 0, "{json:?}");
    let v: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["fleet"], "web-pool");
    assert_eq!(v["host"], "web1");
    assert_eq!(v["connected"], true);
    let www = &v["certificates"][0];
    assert_eq!(v["certificates"].as_array().unwrap().len(), 1, "{json:?}");
    assert_eq!(www["name"], "www");
    assert_eq!(www["leader"], "web2");
    assert_eq!(www["current"]["serial"], 2);
    assert_eq!(www["current"]["fingerprint"], fp2.as_str());
    assert_eq!(www["current"]["not_after"], "2030-03-17T17:46:40Z");
    assert_eq!(www["current"]["issued_by"], "web2");
    assert_eq!(www["current"]["issued_at"], "2027-01-15T08:00:02Z");
    assert_eq!(www["current"]["verdict"]["state"], "good");
    assert_eq!(www["current"]["verdict"]["by"], "web2");
    assert!(www["current"]["verdict"]["at"].is_string(), "{json:?}");
    let hosts = www["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 2, "{json:?}");
    assert_eq!(hosts[0]["host"], "web1");
    assert_eq!(hosts[0]["serving"], 1);
    assert_eq!(hosts[0]["on_current"], false);
    assert_eq!(hosts[0]["result"], "failed");
    assert_eq!(hosts[0]["why"], "nginx: reload failed\x1b[31m");
    assert_eq!(hosts[1]["host"], "web2");
    assert_eq!(hosts[1]["serving"], 2);
    assert_eq!(hosts[1]["on_current"], true);
    assert!(hosts[1]["why"].is_null(), "{json:?}");

    // check: web1 serves generation 1 while 2 has been good for two days: behind, WARNING.
    let (code, www) = host.check(&["check", "--json"], "www");
    assert_eq!(code, 1, "{www}");
    assert_eq!(www["status"], "warning");
    assert_eq!(
        www["fleet"],
        serde_json::json!({"connected": true, "serial_current": 2, "serving_serial_here": 1, "verdict": "good", "behind": true})
    );
    let problems = www["problems"].to_string();
    assert!(problems.contains("behind the fleet"), "{www}");
    let (_, mail) = host.check(&["check", "--json"], "mail");
    assert!(mail["fleet"].is_null(), "{mail}");
    assert_eq!(mail["status"], "ok");
    let check_text = host.run(&["check"]);
    assert_eq!(check_text.code, 1, "{check_text:?}");
    assert!(
        check_text.stdout.starts_with("CERTKEEPER WARNING"),
        "{check_text:?}"
    );
    assert!(check_text.stdout.contains("behind the fleet: this host serves generation 1, while generation 2 has been good since"), "{check_text:?}");

    let metrics = host.run(&["metrics"]);
    assert_eq!(metrics.code, 0, "{metrics:?}");
    let samples = parse(&metrics.stdout);
    assert_eq!(
        value(&samples, "certkeeper_fleet_connected", &[]),
        Some(1.0)
    );
    for g in ["1", "2"] {
        assert_eq!(
            value(
                &samples,
                "certkeeper_fleet_hosts",
                &[("name", "www"), ("generation", g)]
            ),
            Some(1.0),
            "{metrics:?}"
        );
    }
    assert_eq!(
        samples
            .iter()
            .filter(|s| s.name == "certkeeper_fleet_hosts")
            .count(),
        2,
        "{metrics:?}"
    );

    // Two of three members stopped: no quorum.
    cluster.stop(1);
    cluster.stop(2);
    let down = host.run(&["fleet", "status"]);
    assert_eq!(down.code, 1, "{down:?}");
    let line = one_line(&down);
    assert!(line.contains("fleet web-pool"), "{down:?}");
    assert!(line.contains("majority of the etcd members"), "{down:?}");
    // The cause in a word, not the transport's nested debug form.
    assert!(
        !line.contains("tonic") && !line.contains("Os {"),
        "{down:?}"
    );
    let down_json = host.run(&["fleet", "status", "--json"]);
    assert_eq!(down_json.code, 1, "{down_json:?}");
    one_line(&down_json);

    // check decides locally: the live pair is sound, so OK; the fleet view says why it is
    // missing.
    let (code, www) = host.check(&["check", "--json"], "www");
    assert_eq!(code, 0, "{www}");
    assert_eq!(www["status"], "ok");
    assert_eq!(www["fleet"]["connected"], false);
    assert!(www["fleet"]["serial_current"].is_null(), "{www}");
    assert!(www["problems"].as_array().unwrap().is_empty(), "{www}");
    assert!(
        www["not_checked"].to_string().contains("the fleet's view"),
        "{www}"
    );
    let check_down = host.run(&["check"]);
    assert_eq!(check_down.code, 0, "{check_down:?}");
    let verify_down = host.run(&["verify", "www"]);
    assert_eq!(verify_down.code, 0, "{verify_down:?}");
    assert!(
        verify_down.stdout.contains("etcd did not answer"),
        "{verify_down:?}"
    );

    let metrics_down = host.run(&["metrics"]);
    assert_eq!(metrics_down.code, 0, "{metrics_down:?}");
    let samples = parse(&metrics_down.stdout);
    assert_eq!(
        value(&samples, "certkeeper_fleet_connected", &[]),
        Some(0.0)
    );
    assert!(
        !samples.iter().any(|s| s.name == "certkeeper_fleet_hosts"),
        "{metrics_down:?}"
    );
    // The local samples are still there.
    assert!(
        value(
            &samples,
            "certkeeper_certificate_not_after_seconds",
            &[("name", "www")]
        )
        .is_some(),
        "{metrics_down:?}"
    );

    assert_no_secret(&[
        &text,
        &json,
        &check_text,
        &metrics,
        &down,
        &down_json,
        &check_down,
        &verify_down,
        &metrics_down,
    ]);
    drop(rt);
}

#[test]
fn behind_the_fleet_means_not_serving_a_generation_good_since_before_the_last_pass() {
    let cluster = Cluster::start(3);
    let host = Host::new(&cluster.endpoints(), false);
    let rt = runtime();
    let web2 = rt.block_on(async {
        let web2 = client(&cluster, "web2", false).await;
        // Generation 2 good just now: this host's next pass has not come yet.
        publish_two(&web2, &host, time::Duration::ZERO).await;
        web2
    });
    let fleet_of = |args: &[&str]| {
        let (code, entry) = host.check(args, "www");
        (code, entry["fleet"].clone(), entry)
    };
    let (code, fleet, entry) = fleet_of(&["check", "--json"]);
    assert_eq!(code, 0, "{entry}");
    assert_eq!(fleet["serving_serial_here"], 1, "{entry}");
    assert_eq!(fleet["serial_current"], 2, "{entry}");
    assert_eq!(fleet["behind"], false, "{entry}");

    // Pending and bad generations hold nobody behind, however old.
    let set = |verdict: Verdict| rt.block_on(web2.set_verdict("www", 2, verdict)).unwrap();
    set(Verdict::Pending);
    let (code, fleet, entry) = fleet_of(&["check", "--json"]);
    assert_eq!(
        (code, &fleet["verdict"], &fleet["behind"]),
        (0, &"pending".into(), &false.into()),
        "{entry}"
    );
    set(Verdict::Bad {
        by: "web3".into(),
        why: "verify failed on web3".into(),
        at: OffsetDateTime::now_utc() - time::Duration::days(5),
    });
    let (code, fleet, entry) = fleet_of(&["check", "--json"]);
    assert_eq!(
        (code, &fleet["verdict"], &fleet["behind"]),
        (0, &"bad".into(), &false.into()),
        "{entry}"
    );
    let status = host.run(&["fleet", "status"]);
    assert!(
        status.stdout.contains("  verdict      bad, by web3 at "),
        "{status:?}"
    );
    assert!(
        status.stdout.contains(": verify failed on web3\n"),
        "{status:?}"
    );
    assert!(
        status.stdout.contains("  leader       none\n"),
        "{status:?}"
    );
    assert!(
        status.stdout.contains("  hosts        none reporting"),
        "{status:?}"
    );

    // Good since before the last scheduled pass: behind, in check and in verify.
    set(good(time::Duration::days(2), "web2"));
    let (code, fleet, entry) = fleet_of(&["check", "--json"]);
    assert_eq!((code, &fleet["behind"]), (1, &true.into()), "{entry}");
    let (code, fleet, entry) = fleet_of(&["verify", "--json", "www"]);
    assert_eq!((code, &fleet["behind"]), (1, &true.into()), "{entry}");
    let verify = host.run(&["verify", "www"]);
    assert_eq!(verify.code, 1, "{verify:?}");
    assert!(
        verify
            .stdout
            .contains("  fleet      generation 2 (good), this host serves generation 1"),
        "{verify:?}"
    );
    assert!(verify.stdout.contains("behind the fleet"), "{verify:?}");

    // A leaf that is no kept generation is behind too.
    host.serve(2);
    let (code, fleet, entry) = fleet_of(&["check", "--json"]);
    assert_eq!((code, &fleet["behind"]), (1, &true.into()), "{entry}");
    assert!(fleet["serving_serial_here"].is_null(), "{entry}");
    assert!(
        entry["problems"]
            .to_string()
            .contains("serves no generation etcd keeps"),
        "{entry}"
    );

    // A value under the fleet's prefix that is no record: one line naming the key, exit 1;
    // check keeps to its local checks.
    let endpoints = cluster.endpoints();
    etcdctl(
        &endpoints,
        &[
            "put",
            "/certkeeper/web-pool/certs/www/hosts/web9",
            "{\"serving\":\"\u{1b}[2Jx\"}",
        ],
    );
    let bad = host.run(&["fleet", "status"]);
    assert_eq!(bad.code, 1, "{bad:?}");
    let line = one_line(&bad);
    assert!(
        line.contains("/certkeeper/web-pool/certs/www/hosts/web9: not a valid record"),
        "{bad:?}"
    );
    assert!(!line.contains('\x1b'), "{bad:?}");
    etcdctl(
        &endpoints,
        &["del", "/certkeeper/web-pool/certs/www/hosts/web9"],
    );

    // Serving the current generation: OK.
    host.serve(1);
    let (code, fleet, entry) = fleet_of(&["check", "--json"]);
    assert_eq!(code, 0, "{entry}");
    assert_eq!(
        fleet,
        serde_json::json!({"connected": true, "serial_current": 2, "serving_serial_here": 2, "verdict": "good", "behind": false})
    );
    drop(rt);
}

#[test]
fn a_shared_certificate_without_a_generation_yet_is_shown_as_such() {
    let cluster = Cluster::start(1);
    let host = Host::new(&cluster.endpoints(), false);
    let status = host.run(&["fleet", "status", "--json"]);
    assert_eq!(status.code, 0, "{status:?}");
    let v: Value = serde_json::from_str(&status.stdout).unwrap();
    let www = &v["certificates"][0];
    assert!(
        www["current"].is_null() && www["leader"].is_null(),
        "{status:?}"
    );
    assert_eq!(www["hosts"], serde_json::json!([]));
    let text = host.run(&["fleet", "status"]);
    assert!(
        text.stdout.contains("  generation   none published yet\n"),
        "{text:?}"
    );
    let (code, entry) = host.check(&["check", "--json"], "www");
    assert_eq!(code, 0, "{entry}");
    assert_eq!(
        entry["fleet"],
        serde_json::json!({"connected": true, "serial_current": null, "serving_serial_here": null, "verdict": null, "behind": false})
    );
}

#[test]
fn without_etcd_or_with_a_bad_setting_status_says_so_in_one_line() {
    // Nothing listens on this port: etcd unreachable.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = Host::new(&[format!("http://127.0.0.1:{port}")], true);
    let down = host.run(&["fleet", "status"]);
    assert_eq!(down.code, 1, "{down:?}");
    let line = one_line(&down);
    assert!(line.contains("majority of the etcd members"), "{down:?}");
    assert!(
        !line.contains("tonic") && !line.contains("Os {"),
        "{down:?}"
    );
    let (code, entry) = host.check(&["check", "--json"], "www");
    assert_eq!(code, 0, "{entry}");
    assert_eq!(entry["fleet"]["connected"], false, "{entry}");
    let metrics = host.run(&["metrics"]);
    let samples = parse(&metrics.stdout);
    assert_eq!(
        value(&samples, "certkeeper_fleet_connected", &[]),
        Some(0.0)
    );

    // Usage and config errors: exit 2, one line naming the file (and key and line).
    let cases: &[(&[&str], &str)] = &[
        (
            &["fleet", "status", "mail"],
            "certificate \"mail\" is not shared (no `fleet: true`)",
        ),
        (
            &["fleet", "status", "nope"],
            "no certificate named \"nope\"",
        ),
    ];
    for (args, expected) in cases {
        let run = host.run(args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(one_line(&run).contains(expected), "{args:?}: {run:?}");
    }
    let config = std::fs::read_to_string(host.dir.join("config.yaml")).unwrap();
    let with_env = config.replace(
        "password_file: etcd.pw",
        "password_env: CERTKEEPER_TEST_SURELY_UNSET_PW",
    );
    host.dir.config(&with_env);
    let line = with_env
        .lines()
        .position(|l| l.contains("password_env"))
        .unwrap()
        + 1;
    let run = host.run(&["fleet", "status"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        one_line(&run).ends_with(&format!(
            "config.yaml:{line}: fleet.etcd.password_env: environment variable CERTKEEPER_TEST_SURELY_UNSET_PW is not set"
        )),
        "{run:?}"
    );
    // check still decides locally and notes why it has no fleet view.
    let (code, entry) = host.check(&["check", "--json"], "www");
    assert_eq!(code, 0, "{entry}");
    assert!(
        entry["not_checked"].to_string().contains("password_env"),
        "{entry}"
    );

    // No fleet section: status is a usage error; check and metrics show no fleet.
    let plain: String = with_env.split("fleet:\n  name").next().unwrap().to_owned()
        + "certificates:\n"
        + &cert_yaml("mail", false);
    host.dir.config(&plain);
    let run = host.run(&["fleet", "status"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        one_line(&run).contains("there is no fleet section"),
        "{run:?}"
    );
    let (code, entry) = host.check(&["check", "--json"], "mail");
    assert_eq!(code, 0, "{entry}");
    assert!(entry["fleet"].is_null(), "{entry}");
    let metrics = host.run(&["metrics"]);
    assert!(!metrics.stdout.contains("certkeeper_fleet_"), "{metrics:?}");
    assert_no_secret(&[&down, &metrics]);
}

/// GET `path` on the loopback `port`, once it listens; the body.
fn http_body(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let start = std::time::Instant::now();
    let mut s = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "port {port}: {e}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{text}");
    body.to_owned()
}

#[test]
fn the_daemons_metrics_carry_the_fleet_view() {
    let mut cluster = Cluster::start(3);
    let dir = Dir::new();
    let key = dir.write("fleet.key", [7u8; 32]);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let endpoints: Vec<String> = cluster
        .endpoints()
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect();
    dir.config(&format!(
        "state_dir: state\n\
         issuers:\n  internal:\n    type: local-ca\n    validity: 90d\n\
         renewal:\n  schedule: \"0 0 0 1 1 *\"\n\
         fleet:\n  name: web-pool\n  host: web1\n  etcd:\n    endpoints: [{}]\n  seal_key_file: fleet.key\n\
         certificates:\n  - name: www\n    domains: [www.example.test]\n    issuer: internal\n    fleet: true\n    \
         fullchain: live/www/fullchain.pem\n    privkey: live/www/privkey.pem\n",
        endpoints.join(", ")
    ));
    let rt = runtime();
    let _web2 = rt.block_on(async {
        let web2 = client(&cluster, "web2", false).await;
        web2.report("www", &state(Some(4), HostResult::Deployed, None))
            .await
            .unwrap();
        web2
    });
    let port = crate::util::pebble::free_tcp_port();
    let _daemon = crate::util::ChildGuard(
        Command::new(crate::util::bin())
            .arg("--config")
            .arg(dir.join("config.yaml"))
            .args(["run", "--metrics-listen", &format!("127.0.0.1:{port}")])
            .env_remove("CERTKEEPER_CONFIG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let samples = parse(&http_body(port, "/metrics"));
    assert_eq!(
        value(&samples, "certkeeper_fleet_connected", &[]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "certkeeper_fleet_hosts",
            &[("name", "www"), ("generation", "4")]
        ),
        Some(1.0)
    );
    cluster.stop(1);
    cluster.stop(2);
    let samples = parse(&http_body(port, "/metrics"));
    assert_eq!(
        value(&samples, "certkeeper_fleet_connected", &[]),
        Some(0.0)
    );
    drop(rt);
}
