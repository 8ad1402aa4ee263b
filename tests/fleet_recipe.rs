//! The README's etcd setup ("Setting up etcd: three members with TLS"), run as written: its
//! blocks are read out of README.md (between `<!-- recipe etcd-tls: ... -->` markers, as in
//! `recipes`) and changed only where a test must: `/etc/` and `/var/lib/etcd` move under a
//! temporary directory (a data directory per member), the members' addresses 10.0.0.N become
//! 127.0.0.1 with free ports in place of 2379 and 2380, and each member gets etcd1's
//! `/etc/default/etcd` edited as the README says. Three members start from those variables,
//! `etcdctl endpoint health` passes, and `certkeeper fleet status` with the README's `fleet:`
//! section answers; a plain-http endpoint and a CA file of another CA fail in one line.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use certkeeper_fleet::testing::etcd_binary;

use crate::recipes::readme_block;
use crate::util::pebble::free_tcp_port;
use crate::util::{Dir, Run};

/// The etcd members, killed (and reaped) when dropped, also while a failing test unwinds.
struct Members(Vec<Child>);

impl Drop for Members {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A README block as this test runs it: paths under `root`, member `i`'s address
/// (10.0.0.`i`+1) on 127.0.0.1 with its client and peer ports.
fn adapt(text: &str, root: &Path, ports: &[(u16, u16)]) -> String {
    let mut out = text
        .replace("/etc/", &format!("{}/etc/", root.display()))
        .replace("/var/lib/etcd", &format!("{}/var/lib/etcd", root.display()));
    for (i, (client, peer)) in ports.iter().enumerate() {
        let ip = format!("10.0.0.{}", i + 1);
        out = out
            .replace(&format!("{ip}:2379"), &format!("127.0.0.1:{client}"))
            .replace(&format!("{ip}:2380"), &format!("127.0.0.1:{peer}"))
            .replace(&ip, "127.0.0.1");
    }
    out
}

/// Member `n`'s `/etc/default/etcd` (1-based), from etcd1's as the README says: `etcd1` and
/// `10.0.0.1` replaced by the member's name and address on every line but
/// `ETCD_INITIAL_CLUSTER`.
fn member_file(etcd1: &str, n: usize) -> String {
    etcd1
        .lines()
        .map(|line| match line.starts_with("ETCD_INITIAL_CLUSTER=") {
            true => line.to_owned(),
            false => line
                .replace("etcd1", &format!("etcd{n}"))
                .replace("10.0.0.1", &format!("10.0.0.{n}")),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `KEY=VALUE` lines of an environment file (comments and blank lines skipped).
fn variables(file: &str) -> Vec<(String, String)> {
    file.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not KEY=VALUE: {l}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// Runs a shell block in `cwd`; panics with its output when it fails.
fn sh(script: &str, cwd: &Path) -> String {
    let out = Command::new("sh")
        .args(["-ec", script])
        .current_dir(cwd)
        .output()
        .expect("sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script}\n{text}");
    text
}

/// One line on stderr starting `certkeeper: `, nothing on stdout.
fn one_line(run: &Run) -> &str {
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{run:?}");
    assert!(lines[0].starts_with("certkeeper: "), "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    lines[0]
}

#[test]
fn the_readmes_etcd_cluster_with_tls_serves_fleet_status_and_refuses_plain_http_and_another_ca() {
    let etcd = etcd_binary();
    Command::new("openssl")
        .arg("version")
        .output()
        .expect("openssl is needed: install the Debian package openssl");
    Command::new("etcdctl")
        .arg("version")
        .output()
        .expect("etcdctl is needed: install the Debian package etcd-client");
    let dir = Dir::new();
    let root = dir.path();
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_tcp_port(), free_tcp_port())).collect();
    let block = |part: &str| adapt(&readme_block("etcd-tls", part), root, &ports);

    // The PKI, as the admin machine makes it (the block makes its directory and cds there).
    sh(&block("pki"), root);
    let pki = root.join("etc/etcd/pki");
    for file in [
        "ca.pem",
        "etcd1.pem",
        "etcd3.key",
        "certkeeper.pem",
        "certkeeper.key",
    ] {
        assert!(pki.join(file).is_file(), "{file}");
    }

    // Three members from /etc/default/etcd, each its own data directory.
    let etcd1 = readme_block("etcd-tls", "member");
    let mut members = Members(Vec::new());
    for n in 1..=3 {
        let var = root.join("var/lib/etcd").display().to_string();
        let file = adapt(&member_file(&etcd1, n), root, &ports).replace(
            &var,
            &root
                .join(format!("m{n}/var/lib/etcd"))
                .display()
                .to_string(),
        );
        let log = std::fs::File::create(root.join(format!("etcd{n}.log"))).unwrap();
        let child = Command::new(&etcd)
            .env_clear()
            .envs(variables(&file))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", etcd.display()));
        members.0.push(child);
    }

    // Health, as the README checks it; the members need a moment to form the cluster.
    let health = block("health");
    let deadline = Instant::now() + Duration::from_secs(60);
    let report = loop {
        let out = Command::new("sh")
            .args(["-c", &health])
            .output()
            .expect("sh");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            break text;
        }
        let logs: String = (1..=3)
            .map(|n| std::fs::read_to_string(root.join(format!("etcd{n}.log"))).unwrap_or_default())
            .collect();
        assert!(Instant::now() < deadline, "{text}\n{logs}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(report.matches("is healthy").count(), 3, "{report}");

    // certkeeper's files where its config names them, and the README's fleet: section.
    sh(&block("client"), root);
    let key = root.join("etc/certkeeper/fleet.key");
    std::fs::write(&key, [9u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let fleet = block("certkeeper");
    let config = |fleet: &str| {
        format!(
            "state_dir: state\nissuers:\n  internal:\n    type: local-ca\n{fleet}certificates:\n  - name: www\n    domains: [www.example.com]\n    issuer: internal\n    fleet: true\n    fullchain: live/www/fullchain.pem\n    privkey: live/www/privkey.pem\n"
        )
    };
    dir.config(&config(&fleet));
    let check = dir.run(&["config", "check"]);
    assert_eq!(check.code, 0, "{check:?}");
    let status = dir.run(&["fleet", "status"]);
    assert_eq!(status.code, 0, "{status:?}");
    assert!(
        status
            .stdout
            .starts_with("fleet web-pool, this host web1: 1 shared certificate"),
        "{status:?}"
    );

    // Plain http with the TLS files is refused by the config check (exit 2, one line
    // naming the line); without them, plain http to members that speak TLS: exit 1.
    dir.config(&config(&fleet.replace("https://", "http://")));
    let refused = dir.run(&["fleet", "status"]);
    assert_eq!(refused.code, 2, "{refused:?}");
    let line = one_line(&refused);
    assert!(
        line.contains("config.yaml:") && line.ends_with("ca_file is set: use https://"),
        "{refused:?}"
    );
    let plain_yaml: String = fleet
        .replace("https://", "http://")
        .lines()
        .filter(|l| !l.contains("_file: ") || l.contains("seal_key_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    dir.config(&config(&plain_yaml));
    let plain = dir.run(&["fleet", "status"]);
    assert_eq!(plain.code, 1, "{plain:?}");
    let line = one_line(&plain);
    assert!(
        !line.contains("tonic") && !line.contains("Os {"),
        "{plain:?}"
    );
    assert!(
        line.ends_with("over https:// when they speak TLS"),
        "{plain:?}"
    );

    // A CA file of another CA: the members' certificates are refused, one line, exit 1.
    let other = root.join("other");
    std::fs::create_dir_all(&other).unwrap();
    sh(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
         -subj '/CN=another CA' -keyout ca.key -out ca.pem",
        &other,
    );
    let other_ca = other.join("ca.pem");
    let ca_file = root.join("etc/certkeeper/etcd/ca.pem");
    dir.config(&config(&fleet.replace(
        &ca_file.display().to_string(),
        &other_ca.display().to_string(),
    )));
    let stranger = dir.run(&["fleet", "status"]);
    assert_eq!(stranger.code, 1, "{stranger:?}");
    let line = one_line(&stranger);
    assert!(
        !line.contains("tonic") && !line.contains("Os {"),
        "{stranger:?}"
    );
    assert!(line.contains("UnknownIssuer"), "{stranger:?}");
    assert!(
        line.ends_with("check that fleet.etcd.ca_file is the CA that signed the members' certificates, and that they accept fleet.etcd.cert_file"),
        "{stranger:?}"
    );
    for run in [&status, &plain, &stranger] {
        let text = format!("{}{}", run.stdout, run.stderr);
        assert!(!text.contains("PRIVATE KEY"), "{run:?}");
    }
    drop(members);
}
