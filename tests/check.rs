//! `certkeeper check` and `verify` through the real binary, over fixtures generated at test
//! time: every status, its message and its Nagios exit code.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use serde_json::Value;
use time::{Duration, OffsetDateTime};

use crate::util::fixtures::{Key, LeafSpec, Pki, self_signed_leaf, stray_key};
use crate::util::{Dir, bin, is_root};

/// A test host: a PKI whose root is trusted through an issuer's `trust_roots`, and managed
/// certificates whose live files the test writes.
struct Host {
    dir: Dir,
    pki: Pki,
    certs: Vec<(String, Vec<String>)>,
    extra: String,
}

impl Host {
    fn new() -> Host {
        let dir = Dir::new();
        let pki = Pki::new("Test");
        dir.write("trust.pem", pki.root_pem());
        Host {
            dir,
            pki,
            certs: Vec::new(),
            extra: String::new(),
        }
    }

    /// Declares a managed certificate `name` with `domains`, and writes its live files.
    fn managed(
        &mut self,
        name: &str,
        domains: &[&str],
        fullchain: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
    ) {
        self.dir
            .write(&format!("live/{name}/fullchain.pem"), fullchain);
        self.dir.write(&format!("live/{name}/privkey.pem"), key);
        self.certs.push((
            name.to_owned(),
            domains.iter().map(|d| d.to_string()).collect(),
        ));
    }

    /// A valid leaf + chain for `domains`, `days_left` days from expiry.
    fn good(&mut self, name: &str, domains: &[&str], days_left: i64) {
        let leaf = self.pki.leaf(LeafSpec::new(domains, days_left));
        self.managed(name, domains, leaf.fullchain(), &leaf.key_pem);
    }

    fn write_config(&self) {
        let mut yaml = String::from(
            "state_dir: state\n\
             issuers:\n  ca:\n    type: acme\n    directory: https://127.0.0.1:14000/dir\n    trust_roots: trust.pem\n\
             dns_providers:\n  hook:\n    type: exec\n    command: [/bin/true]\n",
        );
        yaml.push_str(&self.extra);
        yaml.push_str("certificates:\n");
        if self.certs.is_empty() {
            yaml.push_str("  []\n");
        }
        for (name, domains) in &self.certs {
            let domains: Vec<String> = domains.iter().map(|d| format!("\"{d}\"")).collect();
            yaml.push_str(&format!(
                "  - name: {name}\n    domains: [{}]\n    issuer: ca\n    dns_provider: hook\n    \
                 fullchain: live/{name}/fullchain.pem\n    privkey: live/{name}/privkey.pem\n",
                domains.join(", ")
            ));
        }
        self.dir.config(&yaml);
    }

    fn check(&self, args: &[&str]) -> crate::util::Run {
        self.write_config();
        let mut all = vec!["check"];
        all.extend_from_slice(args);
        self.dir.run(&all)
    }

    /// `check --json`, parsed, with the exit code.
    fn json(&self) -> (i32, Vec<Value>) {
        let run = self.check(&["--json"]);
        let parsed: Value = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("check --json is not JSON ({e}): {run:?}"));
        (run.code, parsed.as_array().expect("array").clone())
    }

    /// The single entry of a one-certificate host, with the exit code.
    fn only(&self) -> (i32, Value) {
        let (code, entries) = self.json();
        assert_eq!(entries.len(), 1, "{entries:?}");
        (code, entries[0].clone())
    }
}

fn problems(entry: &Value) -> Vec<String> {
    entry["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p.as_str().expect("string").to_owned())
        .collect()
}

/// Asserts status and exit code, and that exactly one problem contains `needle`.
fn assert_one(code: i32, entry: &Value, status: &str, exit: i32, needle: &str) {
    assert_eq!(entry["status"], status, "{entry:#}");
    assert_eq!(code, exit, "{entry:#}");
    let p = problems(entry);
    assert_eq!(
        p.iter().filter(|p| p.contains(needle)).count(),
        1,
        "expected one problem containing {needle:?}: {p:?}"
    );
}

#[test]
fn valid_chain_is_ok() {
    let mut host = Host::new();
    host.good("www", &["example.test", "www.example.test"], 60);
    let (code, e) = host.only();
    assert_eq!(code, 0, "{e:#}");
    assert_eq!(e["status"], "ok");
    assert!(problems(&e).is_empty(), "{e:#}");
    assert_eq!(e["chain_length"], 2);
    assert_eq!(e["due"], false);
    let days = e["days_left"].as_i64().unwrap();
    assert!((59..=60).contains(&days), "{days}");
    let run = host.check(&[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .starts_with("CERTKEEPER OK - 1 certificate: 0 critical, 0 warning, 1 ok\n"),
        "{run:?}"
    );
    assert!(run.stdout.contains("www"), "{run:?}");
}

#[test]
fn missing_intermediate_is_named() {
    let mut host = Host::new();
    let leaf = host.pki.leaf(LeafSpec::new(&["example.test"], 60));
    host.managed("www", &["example.test"], &leaf.cert_pem, &leaf.key_pem);
    let (code, e) = host.only();
    assert_one(
        code,
        &e,
        "critical",
        2,
        "missing intermediate \"Test Intermediate\"",
    );
}

#[test]
fn wrong_order_is_named() {
    let mut host = Host::new();
    let leaf = host.pki.leaf(LeafSpec::new(&["example.test"], 60));
    let reversed = format!("{}{}", leaf.intermediate_pem, leaf.cert_pem);
    host.managed("www", &["example.test"], reversed, &leaf.key_pem);
    let (code, e) = host.only();
    assert_one(code, &e, "critical", 2, "chain in wrong order");
    // The facts reported are the leaf's, not the intermediate's.
    assert_eq!(e["sans"], serde_json::json!(["example.test"]));
}

#[test]
fn chain_to_an_unknown_root_is_untrusted() {
    let mut host = Host::new();
    let other = Pki::new("Other");
    let leaf = other.leaf(LeafSpec::new(&["example.test"], 60));
    let with_root = format!("{}{}", leaf.fullchain(), other.root_pem());
    host.managed("www", &["example.test"], with_root, &leaf.key_pem);
    let (code, e) = host.only();
    assert_one(
        code,
        &e,
        "critical",
        2,
        "chain untrusted: it ends at \"Other Root\"",
    );
}

#[test]
fn self_signed_leaf_is_named() {
    let mut host = Host::new();
    let (cert, key) = self_signed_leaf(&["example.test"]);
    host.managed("www", &["example.test"], cert, key);
    let (code, e) = host.only();
    assert_one(code, &e, "critical", 2, "self-signed leaf");
}

#[test]
fn expired_is_critical() {
    let mut host = Host::new();
    let now = OffsetDateTime::now_utc();
    let leaf = host.pki.leaf(LeafSpec {
        not_before: now - Duration::days(93),
        not_after: now - Duration::days(3) - Duration::hours(1),
        ..LeafSpec::new(&["example.test"], 0)
    });
    host.managed("www", &["example.test"], leaf.fullchain(), &leaf.key_pem);
    let (code, e) = host.only();
    assert_one(code, &e, "critical", 2, "expired 3d ago");
    assert_eq!(e["days_left"], -4);
    assert_eq!(e["due"], true);
}

#[test]
fn not_yet_valid_is_critical() {
    let mut host = Host::new();
    let now = OffsetDateTime::now_utc();
    let leaf = host.pki.leaf(LeafSpec {
        not_before: now + Duration::days(2),
        not_after: now + Duration::days(92),
        ..LeafSpec::new(&["example.test"], 0)
    });
    host.managed("www", &["example.test"], leaf.fullchain(), &leaf.key_pem);
    let (code, e) = host.only();
    assert_one(code, &e, "critical", 2, "not yet valid");
}

#[test]
fn due_is_a_warning() {
    let mut host = Host::new();
    host.good("www", &["example.test"], 10);
    let (code, e) = host.only();
    assert_one(code, &e, "warning", 1, "due for renewal");
    assert_eq!(e["due"], true);
    let run = host.check(&[]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.starts_with("CERTKEEPER WARNING"), "{run:?}");
}

#[test]
fn due_follows_before_expiry_fraction() {
    let mut host = Host::new();
    // 90-day lifetime, 40 days left: due at 1/2 of the lifetime (45 days), not at 1/3 (30).
    host.good("www", &["example.test"], 40);
    host.extra = "renewal:\n  before_expiry: 1/2\n".into();
    let (code, e) = host.only();
    assert_one(code, &e, "warning", 1, "due for renewal");
    host.extra = "renewal:\n  before_expiry: 1/3\n".into();
    let (code, e) = host.only();
    assert_eq!((code, e["status"].as_str()), (0, Some("ok")), "{e:#}");
}

#[test]
fn san_not_covering_a_domain_is_critical() {
    let mut host = Host::new();
    let leaf = host.pki.leaf(LeafSpec::new(&["example.test"], 60));
    host.managed(
        "www",
        &["example.test", "other.test"],
        leaf.fullchain(),
        &leaf.key_pem,
    );
    let (code, e) = host.only();
    assert_one(
        code,
        &e,
        "critical",
        2,
        "names not covered by the certificate: other.test",
    );
}

#[test]
fn wildcard_covers_one_label_only() {
    let mut host = Host::new();
    let leaf = host.pki.leaf(LeafSpec::new(&["*.example.test"], 60));
    host.managed(
        "ok",
        &["www.example.test", "*.example.test"],
        leaf.fullchain(),
        &leaf.key_pem,
    );
    let (code, e) = host.only();
    assert_eq!(code, 0, "{e:#}");

    let mut host = Host::new();
    let leaf = host.pki.leaf(LeafSpec::new(&["*.example.test"], 60));
    host.managed(
        "bad",
        &["example.test", "a.b.example.test"],
        leaf.fullchain(),
        &leaf.key_pem,
    );
    let (code, e) = host.only();
    assert_one(
        code,
        &e,
        "critical",
        2,
        "names not covered by the certificate: example.test, a.b.example.test",
    );
}

#[test]
fn key_mismatch_is_critical() {
    let mut host = Host::new();
    let leaf = host.pki.leaf(LeafSpec::new(&["example.test"], 60));
    host.managed(
        "www",
        &["example.test"],
        leaf.fullchain(),
        stray_key(&rcgen::PKCS_ECDSA_P256_SHA256),
    );
    let (code, e) = host.only();
    assert_one(code, &e, "critical", 2, "key mismatch");
}

#[test]
fn every_key_type_matches_its_leaf() {
    for key in [Key::P256, Key::P384, Key::Rsa2048, Key::Ed25519] {
        let mut host = Host::new();
        let leaf = host.pki.leaf(LeafSpec {
            key,
            ..LeafSpec::new(&["example.test"], 60)
        });
        host.managed("www", &["example.test"], leaf.fullchain(), &leaf.key_pem);
        let (code, e) = host.only();
        assert_eq!(
            (code, e["status"].as_str()),
            (0, Some("ok")),
            "{key:?}: {e:#}"
        );
        // And a key of the same type that is not the leaf's is caught.
        let other = host.pki.leaf(LeafSpec {
            key,
            ..LeafSpec::new(&["example.test"], 60)
        });
        host.dir.write("live/www/privkey.pem", &other.key_pem);
        let (code, e) = host.only();
        assert_one(code, &e, "critical", 2, "key mismatch");
    }
}

#[test]
fn sec1_and_pkcs1_keys_are_read() {
    let Some(openssl) = which("openssl") else {
        panic!("openssl is needed to convert key formats: apt-get install -y openssl");
    };
    for (key, args) in [
        (Key::P256, &["ec"][..]),
        (Key::Rsa2048, &["rsa", "-traditional"][..]),
    ] {
        let mut host = Host::new();
        let leaf = host.pki.leaf(LeafSpec {
            key,
            ..LeafSpec::new(&["example.test"], 60)
        });
        let pkcs8 = host.dir.write("pkcs8.pem", &leaf.key_pem);
        let out = Command::new(&openssl)
            .args(args)
            .arg("-in")
            .arg(&pkcs8)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let legacy = String::from_utf8(out.stdout).unwrap();
        assert!(
            legacy.contains("-----BEGIN EC PRIVATE KEY-----")
                || legacy.contains("-----BEGIN RSA PRIVATE KEY-----")
        );
        host.managed("www", &["example.test"], leaf.fullchain(), legacy);
        let (code, e) = host.only();
        assert_eq!(
            (code, e["status"].as_str()),
            (0, Some("ok")),
            "{key:?}: {e:#}"
        );
    }
}

#[test]
fn corrupt_pem_is_critical() {
    let mut host = Host::new();
    let leaf = host.pki.leaf(LeafSpec::new(&["example.test"], 60));
    let corrupt = leaf.fullchain().replacen("MII", "M!I", 1);
    host.managed("www", &["example.test"], corrupt, &leaf.key_pem);
    let (code, e) = host.only();
    assert_one(code, &e, "critical", 2, "fullchain: corrupt PEM");
}

#[test]
fn truncated_pem_is_critical() {
    let mut host = Host::new();
    let leaf = host.pki.leaf(LeafSpec::new(&["example.test"], 60));
    let full = leaf.fullchain();
    host.managed(
        "www",
        &["example.test"],
        &full[..full.len() / 3],
        &leaf.key_pem,
    );
    let (code, e) = host.only();
    assert_one(code, &e, "critical", 2, "fullchain: corrupt PEM");
}

#[test]
fn empty_files_are_critical() {
    let mut host = Host::new();
    let leaf = host.pki.leaf(LeafSpec::new(&["example.test"], 60));
    host.managed("www", &["example.test"], "", &leaf.key_pem);
    let (code, e) = host.only();
    assert_one(code, &e, "critical", 2, "fullchain: empty file");

    let mut host = Host::new();
    host.managed("www", &["example.test"], leaf.fullchain(), "\n");
    let (code, e) = host.only();
    assert_one(
        code,
        &e,
        "critical",
        2,
        "privkey: private key file is empty",
    );
}

#[test]
fn der_fullchain_is_critical_but_der_discovered_is_read() {
    let mut host = Host::new();
    let leaf = host.pki.leaf(LeafSpec::new(&["example.test"], 60));
    host.managed("www", &["example.test"], &leaf.cert_der, &leaf.key_pem);
    let (code, e) = host.only();
    assert_eq!(code, 2);
    assert!(
        problems(&e)
            .iter()
            .any(|p| p == "fullchain: DER-encoded; services expect PEM"),
        "{e:#}"
    );

    let host = Host::new();
    let self_signed = rcgen::generate_simple_self_signed(vec!["der.test".to_string()]).unwrap();
    host.dir.write("discover/cert.der", self_signed.cert.der());
    let mut host = host;
    host.extra = "discover:\n  paths: [discover]\n".into();
    let (_, entries) = host.json();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["sans"], serde_json::json!(["der.test"]));
    assert_eq!(entries[0]["managed"], false);
}

#[test]
fn encrypted_private_key_is_refused_clearly() {
    let Some(openssl) = which("openssl") else {
        panic!("openssl is needed to encrypt a test key: apt-get install -y openssl");
    };
    let mut host = Host::new();
    let leaf = host.pki.leaf(LeafSpec::new(&["example.test"], 60));
    let plain = host.dir.write("plain.pem", &leaf.key_pem);
    let out = Command::new(openssl)
        .args([
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-passout",
            "pass:test",
            "-in",
        ])
        .arg(&plain)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let encrypted = String::from_utf8(out.stdout).unwrap();
    assert!(encrypted.contains("ENCRYPTED PRIVATE KEY"));
    host.managed("www", &["example.test"], leaf.fullchain(), &encrypted);
    let (code, e) = host.only();
    assert_one(code, &e, "critical", 2, "privkey: private key is encrypted");

    // The legacy OpenSSL form: a plain label with Proc-Type/DEK-Info headers.
    let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
                  DEK-Info: AES-256-CBC,0123456789ABCDEF0123456789ABCDEF\n\n\
                  c2VjcmV0IGJ5dGVzIHRoYXQgYXJlIGVuY3J5cHRlZA==\n-----END RSA PRIVATE KEY-----\n";
    host.dir.write("live/www/privkey.pem", legacy);
    let (code, e) = host.only();
    assert_one(code, &e, "critical", 2, "privkey: private key is encrypted");
}

#[test]
fn missing_live_files_are_critical() {
    let mut host = Host::new();
    host.good("www", &["example.test"], 60);
    std::fs::remove_file(host.dir.join("live/www/privkey.pem")).unwrap();
    let (code, e) = host.only();
    assert_one(code, &e, "critical", 2, "privkey missing");
    std::fs::remove_file(host.dir.join("live/www/fullchain.pem")).unwrap();
    let (code, e) = host.only();
    assert_one(code, &e, "critical", 2, "fullchain missing");
}

#[test]
fn unreadable_files_as_a_monitoring_user() {
    // root reads anything: run as nobody, as a monitoring user would.
    let run_check = |host: &Host| {
        let mut cmd = if is_root() {
            let mut c = Command::new(which("setpriv").expect("setpriv (util-linux) is needed"));
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin()]);
            c
        } else {
            Command::new(bin())
        };
        let out = cmd
            .arg("--config")
            .arg(host.dir.join("config.yaml"))
            .args(["check", "--json"])
            .output()
            .unwrap();
        let run = crate::util::Run::from(out);
        let entries: Value =
            serde_json::from_str(&run.stdout).unwrap_or_else(|_| panic!("{run:?}"));
        (run, entries)
    };

    // A fullchain the user cannot read: nothing can be checked, UNKNOWN (Nagios: the
    // plugin could not tell), and it is no problem of the certificate.
    let mut host = Host::new();
    host.good("www", &["example.test"], 60);
    host.write_config();
    host.dir.open_up();
    let chain = host.dir.join("live/www/fullchain.pem");
    std::fs::set_permissions(&chain, std::fs::Permissions::from_mode(0o000)).unwrap();
    let (run, entries) = run_check(&host);
    assert_not_checked(run.code, &entries[0], "unknown", 3, "fullchain not checked");

    // A private key the user cannot read (keys are 0600): not checked, not a fault.
    let mut host = Host::new();
    host.good("www", &["example.test"], 60);
    host.write_config();
    host.dir.open_up();
    let key = host.dir.join("live/www/privkey.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o000)).unwrap();
    let (run, entries) = run_check(&host);
    assert_not_checked(
        run.code,
        &entries[0],
        "ok",
        0,
        "privkey not checked: not readable by this user",
    );
}

/// An entry whose problems are empty and whose `not_checked` holds one item with `needle`.
fn assert_not_checked(code: i32, entry: &Value, status: &str, exit: i32, needle: &str) {
    assert_eq!(entry["status"], status, "{entry:#}");
    assert_eq!(code, exit, "{entry:#}");
    assert!(problems(entry).is_empty(), "{entry:#}");
    let n: Vec<&str> = entry["not_checked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        n.iter().filter(|p| p.contains(needle)).count(),
        1,
        "expected one item containing {needle:?}: {n:?}"
    );
}

#[test]
fn integrity_is_checked_against_the_manifest() {
    use certkeeper::store::manifest::{FileDigests, Manifest, live_path};
    use certkeeper::text::sha256_hex;
    let mut host = Host::new();
    let leaf = host.pki.leaf(LeafSpec::new(&["example.test"], 60));
    host.managed("www", &["example.test"], leaf.fullchain(), &leaf.key_pem);
    let manifest = Manifest {
        version: 1,
        certificate: "www".into(),
        created: "2026-01-01T00:00:00Z".into(),
        not_after: "2027-01-01T00:00:00Z".into(),
        fingerprint: sha256_hex(&leaf.cert_der),
        files: FileDigests {
            fullchain: sha256_hex(leaf.fullchain().as_bytes()),
            privkey: sha256_hex(leaf.key_pem.as_bytes()),
            cert: None,
            chain: None,
            combined: None,
        },
        key_matches_leaf: Some(true),
        chain_signed: None,
    };
    let path = live_path("www", &host.dir.join("live/www/fullchain.pem"));
    std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let (code, e) = host.only();
    assert_eq!((code, &e["integrity"]), (0, &Value::Bool(true)), "{e:#}");

    // Same certificate, one byte of whitespace more: still valid PEM, but not what was written.
    host.dir
        .write("live/www/fullchain.pem", format!("{}\n", leaf.fullchain()));
    let (code, e) = host.only();
    assert_one(
        code,
        &e,
        "critical",
        2,
        "integrity: fullchain SHA-256 differs from the manifest",
    );
    assert_eq!(e["integrity"], false);

    std::fs::write(&path, b"{ not json").unwrap();
    let (code, e) = host.only();
    assert_one(code, &e, "critical", 2, "manifest");
}

#[test]
fn no_manifest_is_not_an_integrity_failure() {
    let mut host = Host::new();
    host.good("www", &["example.test"], 60);
    let (code, e) = host.only();
    assert_eq!(code, 0);
    assert_eq!(e["integrity"], Value::Null);
}

#[test]
fn discovery_reports_certificates_only() {
    let mut host = Host::new();
    let a = host.pki.leaf(LeafSpec::new(&["a.test"], 60));
    let b = host.pki.leaf(LeafSpec::new(&["b.test"], 5));
    host.dir.write("disc/a/fullchain.pem", a.fullchain());
    host.dir.write("disc/a/privkey.pem", &a.key_pem);
    host.dir.write("disc/nested/deeper/b.crt", b.fullchain());
    host.dir.write("disc/README", "not a certificate");
    host.dir.write(
        "disc/broken.pem",
        "-----BEGIN CERTIFICATE-----\n@@@\n-----END CERTIFICATE-----\n",
    );
    host.dir.write("disc/.certkeeper-x.manifest.json", "{}");
    std::os::unix::fs::symlink(
        host.dir.join("disc/a/fullchain.pem"),
        host.dir.join("disc/link.pem"),
    )
    .unwrap();
    std::os::unix::fs::symlink(host.dir.join("disc"), host.dir.join("disc/loop")).unwrap();
    host.extra = "discover:\n  paths: [disc]\n".into();
    let (code, entries) = host.json();
    let names: Vec<&str> = entries
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    let disc = host.dir.join("disc");
    let rel: Vec<String> = names
        .iter()
        .map(|n| n.strip_prefix(disc.to_str().unwrap()).unwrap().to_owned())
        .collect();
    // The symlink to a.pem is the same file: reported once. The directory link is not followed.
    assert_eq!(
        rel,
        vec!["/a/fullchain.pem", "/broken.pem", "/nested/deeper/b.crt"],
        "{entries:#?}"
    );
    assert_eq!(entries[0]["status"], "ok");
    assert_eq!(entries[1]["status"], "critical");
    assert_eq!(entries[2]["status"], "warning");
    assert_eq!(code, 2);
    assert!(entries.iter().all(|e| e["managed"] == false));
}

#[test]
fn managed_files_are_not_reported_twice_by_discovery() {
    let mut host = Host::new();
    host.good("www", &["example.test"], 60);
    host.extra = "discover:\n  paths: [live]\n".into();
    let (code, entries) = host.json();
    assert_eq!(code, 0);
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(entries[0]["managed"], true);
}

#[test]
fn json_schema_is_stable() {
    let mut host = Host::new();
    host.good("www", &["example.test", "*.example.test"], 60);
    let (_, e) = host.only();
    let obj = e.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(|k| k.as_str()).collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            "chain_length",
            "days_left",
            "domains",
            "due",
            "fingerprint",
            "fleet",
            "held",
            "hold",
            "integrity",
            "issuer",
            "key_match",
            "managed",
            "name",
            "not_after",
            "not_before",
            "not_checked",
            "path",
            "privkey",
            "problems",
            "sans",
            "status",
            "subject",
        ]
    );
    assert!(e["name"].is_string() && e["managed"].is_boolean() && e["path"].is_string());
    assert_eq!(
        e["domains"],
        serde_json::json!(["example.test", "*.example.test"])
    );
    assert!(e["days_left"].is_i64() && e["due"].is_boolean() && e["problems"].is_array());
    assert_eq!(e["fingerprint"].as_str().unwrap().len(), 64);
    let not_after = e["not_after"].as_str().unwrap();
    OffsetDateTime::parse(not_after, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|err| panic!("not RFC 3339: {not_after}: {err}"));
    assert!(not_after.ends_with('Z'));
    assert!(["ok", "warning", "critical"].contains(&e["status"].as_str().unwrap()));
}

#[test]
fn worst_status_sets_the_exit_code_and_names_filter() {
    let mut host = Host::new();
    host.good("fine", &["a.test"], 60);
    host.good("due", &["b.test"], 3);
    let leaf = host.pki.leaf(LeafSpec::new(&["c.test"], 60));
    host.managed("broken", &["c.test"], &leaf.cert_pem, &leaf.key_pem);
    let run = host.check(&[]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stdout
            .starts_with("CERTKEEPER CRITICAL - 3 certificates: 1 critical, 1 warning, 1 ok"),
        "{run:?}"
    );
    assert_eq!(host.check(&["fine"]).code, 0);
    assert_eq!(host.check(&["fine", "due"]).code, 1);
    let (code, entries) = {
        host.write_config();
        let run = host.dir.run(&["check", "--json", "due"]);
        (
            run.code,
            serde_json::from_str::<Vec<Value>>(&run.stdout).unwrap(),
        )
    };
    assert_eq!(code, 1);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["name"], "due");
}

#[test]
fn unknown_name_and_bad_config_are_unknown() {
    let mut host = Host::new();
    host.good("www", &["example.test"], 60);
    let run = host.check(&["nope"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stdout.is_empty());
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(
        run.stderr
            .contains("no certificate named \"nope\"; configured: www"),
        "{run:?}"
    );

    host.dir.config("certificates: [\n");
    let run = host.dir.run(&["check"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.starts_with("certkeeper: "), "{run:?}");
    let run = host.dir.run(&["verify", "www"]);
    assert_eq!(run.code, 3, "{run:?}");

    let run = crate::util::Run::from(
        Command::new(bin())
            .args(["--config", "/nonexistent/certkeeper.yaml", "check"])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(
        run.stderr.trim(),
        "certkeeper: /nonexistent/certkeeper.yaml: config file not found; pass --config PATH or set CERTKEEPER_CONFIG"
    );
    let run = crate::util::Run::from(
        Command::new(bin())
            .args(["check", "--bogus"])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 3, "{run:?}");
}

#[test]
fn unreadable_trust_roots_is_unknown() {
    let mut host = Host::new();
    host.good("www", &["example.test"], 60);
    host.write_config();
    std::fs::remove_file(host.dir.join("trust.pem")).unwrap();
    let run = host.dir.run(&["check"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("issuers.ca.trust_roots"), "{run:?}");
}

#[test]
fn verify_reports_one_certificate() {
    let mut host = Host::new();
    host.good("www", &["example.test"], 60);
    host.good("other", &["other.test"], 2);
    host.write_config();
    let run = host.dir.run(&["verify", "www"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("www: OK\n"), "{run:?}");
    assert!(run.stdout.contains("no problems"), "{run:?}");
    let run = host.dir.run(&["verify", "other"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("due for renewal"), "{run:?}");
    let run = host.dir.run(&["verify", "--json", "other"]);
    let e: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(e["status"], "warning");
    let run = host.dir.run(&["verify", "nope"]);
    assert_eq!(run.code, 3, "{run:?}");
}

#[test]
fn check_never_writes() {
    let mut host = Host::new();
    host.good("www", &["example.test"], 60);
    host.write_config();
    let before = snapshot_tree(host.dir.path());
    for args in [&["check"][..], &["check", "--json"], &["verify", "www"]] {
        host.dir.run(args);
    }
    assert_eq!(before, snapshot_tree(host.dir.path()));
    assert!(
        !host.dir.join("state").exists(),
        "check created the state_dir"
    );
}

fn snapshot_tree(path: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![path.to_owned()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else {
            out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

#[test]
fn check_reads_pairs_deployed_by_the_store() {
    use certkeeper::store::{PairSpec, Store};
    let mut host = Host::new();
    host.good("www", &["example.test"], 60);
    let leaf = host.pki.leaf(LeafSpec::new(&["example.test"], 70));
    let store = Store::open(host.dir.join("state")).unwrap();
    let spec = PairSpec::new(
        "www",
        host.dir.join("live/www/fullchain.pem"),
        host.dir.join("live/www/privkey.pem"),
    );
    let locked = store.lock().unwrap();
    locked
        .deploy(&spec, leaf.fullchain().as_bytes(), leaf.key_pem.as_bytes())
        .unwrap();
    drop(locked);
    let (code, e) = host.only();
    assert_eq!((code, &e["integrity"]), (0, &Value::Bool(true)), "{e:#}");
    let days = e["days_left"].as_i64().unwrap();
    assert!(
        (69..=70).contains(&days),
        "the new pair is not the one reported: {e:#}"
    );

    // Tampering with the live generation's file in place is an integrity failure.
    let live = std::fs::canonicalize(host.dir.join("live/www/fullchain.pem")).unwrap();
    let mut perms = std::fs::metadata(&live).unwrap().permissions();
    perms.set_mode(0o644);
    std::fs::set_permissions(&live, perms).unwrap();
    std::fs::write(&live, format!("{}\n", leaf.fullchain())).unwrap();
    let (code, e) = host.only();
    assert_one(
        code,
        &e,
        "critical",
        2,
        "integrity: fullchain SHA-256 differs from the manifest",
    );
}
