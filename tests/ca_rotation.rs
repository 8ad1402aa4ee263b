//! Rotating the local CA's root under mutual TLS, with the binary: nginx requires client
//! certificates and trusts the issuer's `trust_bundle`; a client certificate from the same
//! CA (`usage: client`, its `combined` file) makes requests with curl in a loop while
//! `ca rotate` and the passes that follow go through every phase (both roots trusted, the new
//! root signs and the leaves renew, the old root retired). No handshake fails, and at the end
//! no certificate or bundle holds the old root.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::util::Dir;
use crate::util::nginx::{Nginx, Site};

/// How long both roots are trusted before the new one signs.
const OVERLAP: Duration = Duration::from_secs(3);

/// Requests made and the failures (each with why) of a curl loop.
#[derive(Default)]
struct Tally {
    total: usize,
    failed: Vec<String>,
}

/// Runs curl against `url` with the client's combined file until `stop`, trusting the bundle
/// as it is at each request. The combined file is read once per request, as a client that
/// loads its credentials does: curl given the file itself opens it twice (certificate, then
/// key), and a renewal between the two opens pairs the new certificate with the old key
/// before any handshake (the README says so).
fn curl_loop(
    dir: &Dir,
    resolve: String,
    url: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Tally> {
    let bundle = dir.join("trust/bundle.pem");
    let client = dir.join("live/client/combined.pem");
    let snapshot = dir.join("client-snapshot.pem");
    std::thread::spawn(move || {
        let mut tally = Tally::default();
        while !stop.load(Ordering::Relaxed) {
            std::fs::write(&snapshot, std::fs::read(&client).unwrap()).unwrap();
            let out = Command::new("curl")
                .args([
                    "-sS",
                    "--max-time",
                    "5",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                ])
                .arg("--cacert")
                .arg(&bundle)
                .arg("--cert")
                .arg(&snapshot)
                .args(["--resolve", &resolve, &url])
                .output()
                .expect("curl is needed: install the Debian package curl");
            tally.total += 1;
            let code = String::from_utf8_lossy(&out.stdout).into_owned();
            if !out.status.success() || code != "200" {
                tally.failed.push(format!(
                    "request {}: {} {code}: {}",
                    tally.total,
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tally
    })
}

fn status(dir: &Dir) -> Value {
    let run = dir.run(&["ca", "status", "internal", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    serde_json::from_str(&run.stdout).unwrap()
}

fn renew(dir: &Dir) -> String {
    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    format!("{}{}", run.stdout, run.stderr)
}

#[test]
fn rotating_the_root_under_mutual_tls_fails_no_handshake() {
    let dir = Dir::new();
    std::fs::create_dir_all(dir.join("trust")).unwrap();
    // nginx does not exist yet: the first pass's reloads and verification are left out.
    let config = |reload: &str| {
        format!(
            "state_dir: state\n\
             issuers:\n  internal:\n    type: local-ca\n    validity: 90d\n    \
             trust_bundle: trust/bundle.pem\n{reload}\
             certificates:\n\
             \x20 - name: server\n    domains: [mtls.test]\n    issuer: internal\n    \
             fullchain: live/server/fullchain.pem\n    privkey: live/server/privkey.pem\n{reload_cert}\
             \x20 - name: client\n    domains: [client.test]\n    issuer: internal\n    usage: client\n    \
             fullchain: live/client/fullchain.pem\n    privkey: live/client/privkey.pem\n    \
             combined: live/client/combined.pem\n",
            reload_cert = reload.replace("trust_reload", "reload"),
        )
    };
    dir.config(&config(""));
    renew(&dir);
    let first = status(&dir);
    let old_root = first["roots"][0]["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let old_pem = std::fs::read_to_string(dir.join("trust/bundle.pem")).unwrap();

    let site = Site::new(
        "mtls.test",
        dir.join("live/server/fullchain.pem"),
        dir.join("live/server/privkey.pem"),
    )
    .with(&format!(
        "ssl_client_certificate {};",
        dir.join("trust/bundle.pem").display()
    ))
    .with("ssl_verify_client on;")
    .with("ssl_verify_depth 2;");
    let nginx = Nginx::start(&dir.join("nginx"), &[site]);
    let reload = format!(
        "    trust_reload: {{ command: {}, timeout: 10s }}\n",
        serde_json::to_string(&nginx.reload_argv()).unwrap()
    );
    dir.config(&config(&reload));

    let stop = Arc::new(AtomicBool::new(false));
    let port = nginx.connect().rsplit(':').next().unwrap().to_owned();
    let requests = curl_loop(
        &dir,
        format!("mtls.test:{port}:127.0.0.1"),
        format!("https://mtls.test:{port}/"),
        stop.clone(),
    );
    let pause = || std::thread::sleep(Duration::from_secs(1));
    pause();

    // Both roots trusted at once; nothing renews during the overlap.
    let run = dir.run(&[
        "ca",
        "rotate",
        "internal",
        "--overlap",
        &format!("{}s", OVERLAP.as_secs()),
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("root rotation started"), "{run:?}");
    let bundle = std::fs::read_to_string(dir.join("trust/bundle.pem")).unwrap();
    assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2);
    let overlap = status(&dir);
    assert_eq!(overlap["rotation"]["phase"], "overlap");
    let new_root = overlap["rotation"]["new_root"].as_str().unwrap().to_owned();
    pause();
    let out = renew(&dir);
    assert!(!out.contains("renewed"), "{out}");
    std::thread::sleep(OVERLAP);

    // The switch: the new root signs, the leaves of the old one renew.
    let out = renew(&dir);
    assert!(out.contains("server: renewed"), "{out}");
    assert!(out.contains("client: renewed"), "{out}");
    let switched = status(&dir);
    assert_eq!(switched["rotation"]["phase"], "switched");
    assert_eq!(switched["roots"][0]["fingerprint"], new_root.as_str());
    for cert in switched["certificates"].as_array().unwrap() {
        assert_eq!(cert["root"], new_root.as_str(), "{switched}");
    }
    pause();

    // The retirement: the old root leaves the bundle, which nginx reloads.
    renew(&dir);
    let done = status(&dir);
    assert_eq!(done["rotation"]["phase"], "done", "{done}");
    assert_eq!(done["roots"].as_array().unwrap().len(), 1);
    pause();
    pause();
    stop.store(true, Ordering::Relaxed);
    let tally = requests.join().unwrap();
    eprintln!(
        "mTLS requests across the rotation: {} in all, {} failed",
        tally.total,
        tally.failed.len()
    );
    assert!(tally.failed.is_empty(), "{:?}", tally.failed);
    assert!(tally.total >= 20, "only {} requests", tally.total);

    // No certificate or bundle holds the old root, or anything it signed.
    let old_body: String = old_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("\n");
    for file in [
        "trust/bundle.pem",
        "state/ca/internal/root.pem",
        "live/server/fullchain.pem",
        "live/client/fullchain.pem",
        "live/client/combined.pem",
    ] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(!text.contains(&old_body), "{file} holds the old root");
    }
    let verify = |file: &str| {
        Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(dir.join("trust/bundle.pem"))
            .arg("-untrusted")
            .arg(dir.join(file))
            .arg(dir.join(file))
            .output()
            .expect("openssl is needed: install the Debian package openssl")
    };
    for file in ["live/server/fullchain.pem", "live/client/fullchain.pem"] {
        let out = verify(file);
        assert!(out.status.success(), "{file}: {out:?}");
    }
    assert_ne!(old_root, new_root);
    // The old root's keys are gone from state_dir.
    assert!(!dir.join("state/ca/internal/next").exists());
    let out = dir.run(&["ca", "status", "internal"]);
    assert!(out.stdout.contains("rotation: done"), "{out:?}");
}

/// Every file under `dir` with its content, to show that a refused command changed nothing.
fn snapshot(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push((
                    path.display().to_string(),
                    std::fs::read(&path).unwrap_or_default(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn ca_commands_and_keys_refuse_bad_input_in_one_line() {
    let dir = Dir::new();
    let base = "state_dir: state\n\
                issuers:\n  internal:\n    type: local-ca\n  \
                ca:\n    type: acme\n    directory: https://127.0.0.1:9/dir\n\
                dns_providers:\n  hook:\n    type: exec\n    command: [/bin/true]\n\
                certificates:\n\
                \x20 - name: web\n    domains: [web.test]\n    issuer: internal\n    \
                fullchain: live/web/fullchain.pem\n    privkey: live/web/privkey.pem\n";
    dir.config(base);
    let one_line = |run: &crate::util::Run, code: i32, text: &str| {
        assert_eq!(run.code, code, "{run:?}");
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{run:?}");
        assert!(lines[0].contains(text), "{run:?}");
    };
    let before = snapshot(dir.path());
    one_line(
        &dir.run(&["ca", "rotate", "nosuch"]),
        2,
        "no issuer nosuch in the config; its local-ca issuers: internal",
    );
    one_line(
        &dir.run(&["ca", "rotate", "ca"]),
        2,
        "issuer ca is not a local-ca issuer",
    );
    one_line(
        &dir.run(&["ca", "rotate", "internal", "--overlap", "soon"]),
        2,
        "--overlap",
    );
    one_line(
        &dir.run(&["ca", "status", "ca"]),
        2,
        "not a local-ca issuer",
    );
    assert_eq!(snapshot(dir.path()), before);
    // Before the CA exists: nothing to rotate (the state_dir may be created, nothing else).
    one_line(
        &dir.run(&["ca", "rotate", "internal"]),
        1,
        "does not exist yet",
    );
    assert!(!dir.join("state/ca").exists());
    let run = dir.run(&["ca", "status", "internal"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("not created yet"), "{run:?}");

    // A rotation under way is not started again, and changes nothing.
    assert_eq!(dir.run(&["renew"]).code, 0);
    assert_eq!(dir.run(&["ca", "rotate", "internal"]).code, 0);
    let under_way = snapshot(&dir.join("state/ca"));
    one_line(
        &dir.run(&["ca", "rotate", "internal"]),
        1,
        "a root rotation is under way (phase overlap)",
    );
    assert_eq!(snapshot(&dir.join("state/ca")), under_way);

    // Keys: one line each, naming the file, line and key.
    for (yaml, text) in [
        (
            base.replace(
                "    issuer: internal\n",
                "    issuer: internal\n    usage: [server, peer]\n",
            ),
            "unknown usage \"peer\"; write server, client, or [server, client]",
        ),
        (
            base.replace(
                "    issuer: internal\n",
                "    issuer: ca\n    dns_provider: hook\n    usage: client\n",
            ),
            "usage applies to local-ca issuers only",
        ),
        (
            base.replace(
                "    type: local-ca\n",
                "    type: local-ca\n    trust_reload: { command: [/bin/true] }\n",
            ),
            "trust_reload needs trust_bundle",
        ),
    ] {
        dir.config(&yaml);
        let run = dir.run(&["config", "check", "--no-environment"]);
        assert_eq!(run.code, 2, "{run:?}");
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{run:?}");
        assert!(
            lines[0].contains("config.yaml:") && lines[0].contains(text),
            "{run:?}"
        );
    }
}
