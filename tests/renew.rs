//! `certkeeper renew` through the real binary with the built-in local CA (the ACME path has
//! its own tests against Pebble): the quickstart end to end, not due, --force, --dry-run,
//! failures that do not stop the others, issuer fallback, kept material deployed on the next
//! pass, broken live certificates due now, never older material (a shorter lifetime is fine),
//! live files edited in place, adopted files' modes, the retry backoff, reuse_key and key types.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::util::Dir;
use crate::util::fixtures::{LeafSpec, Pki};

/// A config with a local CA `internal` and an ACME issuer `broken` that nothing answers.
fn config(certs: &str) -> String {
    format!(
        "state_dir: state\n\
         issuers:\n  internal:\n    type: local-ca\n    validity: 90d\n  \
         broken:\n    type: acme\n    directory: https://127.0.0.1:9/dir\n\
         dns_providers:\n  hook:\n    type: exec\n    command: [/bin/true]\n\
         renewal:\n  retry: {{ initial: 1h, max: 1d }}\n\
         certificates:\n{certs}"
    )
}

fn cert(name: &str, issuer: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    domains: [{name}.test, \"*.{name}.test\"]\n    issuer: {issuer}\n    dns_provider: hook\n    \
         fullchain: live/{name}/fullchain.pem\n    privkey: live/{name}/privkey.pem\n{extra}"
    )
}

fn check_json(dir: &Dir) -> Vec<Value> {
    let run = dir.run(&["check", "--json"]);
    serde_json::from_str(&run.stdout).unwrap_or_else(|_| panic!("{run:?}"))
}

fn tree(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![path.to_owned()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else if meta.file_type().is_symlink() {
            out.push((
                p.display().to_string(),
                std::fs::read_link(&p)
                    .unwrap()
                    .display()
                    .to_string()
                    .into_bytes(),
            ));
        } else {
            out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn quickstart_runs_end_to_end() {
    let dir = Dir::new();
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart.yaml"),
    )
    .unwrap();
    dir.config(&example);
    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .starts_with("demo: renewed from internal (notAfter "),
        "{run:?}"
    );
    let run = dir.run(&["check"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with("CERTKEEPER OK - 1 certificate"),
        "{run:?}"
    );
    let entries = check_json(&dir);
    assert_eq!(entries[0]["integrity"], true);
    assert_eq!(entries[0]["chain_length"], 2);
    assert_eq!(
        entries[0]["sans"],
        serde_json::json!(["localhost", "demo.localhost"])
    );
    // The local CA's root is exported for clients.
    let root = dir.join("quickstart-out/state/ca/internal/root.pem");
    assert!(
        std::fs::read_to_string(root)
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );

    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with("demo: not due (renews from "),
        "{run:?}"
    );

    let before = check_json(&dir)[0]["fingerprint"].clone();
    let run = dir.run(&["renew", "--force", "demo"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("previous pair kept as snapshot 000001"),
        "{run:?}"
    );
    assert_ne!(check_json(&dir)[0]["fingerprint"], before);
    let snaps = dir.run(&["snapshots", "--json", "demo"]);
    let snaps: Vec<Value> = serde_json::from_str(&snaps.stdout).unwrap();
    assert_eq!(snaps[0]["fingerprint"], before);
}

#[test]
fn dry_run_changes_nothing_on_disk() {
    let dir = Dir::new();
    dir.config(&config(&cert("www", "internal", "")));
    let before = tree(dir.path());
    let run = dir.run(&["renew", "--dry-run"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("www: would renew from internal"),
        "{run:?}"
    );
    assert_eq!(
        before,
        tree(dir.path()),
        "a dry run on a fresh host wrote something"
    );

    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    let before = tree(dir.path());
    let run = dir.run(&["renew", "--dry-run", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("www: would renew from internal"),
        "{run:?}"
    );
    assert_eq!(before, tree(dir.path()), "a forced dry run wrote something");
}

#[test]
fn one_failure_does_not_stop_the_others() {
    let dir = Dir::new();
    dir.config(&config(&format!(
        "{}{}{}",
        cert("a", "internal", ""),
        cert("b", "broken", ""),
        cert("c", "internal", "")
    )));
    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{run:?}");
    assert!(lines[0].starts_with("a: renewed from internal"), "{run:?}");
    assert!(
        lines[1].starts_with("b: FAILED: issuer broken: "),
        "{run:?}"
    );
    assert!(lines[2].starts_with("c: renewed from internal"), "{run:?}");
    assert!(
        !dir.join("live/b").exists() || std::fs::read_dir(dir.join("live/b")).unwrap().count() == 0
    );
    let statuses: Vec<String> = check_json(&dir)
        .iter()
        .map(|e| e["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, vec!["ok", "critical", "ok"]);

    // The failure is remembered: without --force the next pass waits for the backoff, and
    // exits 1 so that a timer unit does not look healthy meanwhile.
    let run = dir.run(&["renew", "b"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .starts_with("b: last attempt failed; next attempt from "),
        "{run:?}"
    );
    let run = dir.run(&["renew", "--force", "b"]);
    assert_eq!(run.code, 1, "{run:?}");
    let state: Value =
        serde_json::from_slice(&std::fs::read(dir.join("state/state/b.json")).unwrap()).unwrap();
    assert_eq!(state["consecutive_failures"], 2);
}

#[test]
fn issuers_are_tried_in_order() {
    let dir = Dir::new();
    dir.config(&config(&cert("www", "[broken, internal]", "")));
    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with("www: renewed from internal"),
        "{run:?}"
    );
}

#[test]
fn issued_material_is_kept_and_deployed_on_the_next_pass() {
    let dir = Dir::new();
    dir.config(&config(&cert("www", "internal", "")));
    assert_eq!(dir.run(&["renew"]).code, 0);
    // An immutable live directory makes the swap fail after issuance (even for root).
    let frozen = Immutable::new(&dir.join("live/www"));
    let live_before = std::fs::read(dir.join("live/www/fullchain.pem")).unwrap();
    let run = dir.run(&["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("www: FAILED: deploy: "), "{run:?}");
    assert!(
        run.stdout.contains("kept and deployed on the next pass"),
        "{run:?}"
    );
    assert_eq!(
        std::fs::read(dir.join("live/www/fullchain.pem")).unwrap(),
        live_before
    );
    let kept = std::fs::read(dir.join("state/pending/www/fullchain.pem")).unwrap();
    drop(frozen);
    // The backoff of the failure holds the kept material back (exit 1 meanwhile)...
    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.starts_with("www: last attempt failed"),
        "{run:?}"
    );
    assert!(dir.join("state/pending/www/fullchain.pem").exists());
    // ... and once it has passed (the record says so), the kept material is deployed, not
    // due and not forced, without a new order.
    let state_file = dir.join("state/state/www.json");
    let mut state: Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    state["next_attempt"] = Value::from(0);
    std::fs::write(&state_file, serde_json::to_vec(&state).unwrap()).unwrap();
    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .starts_with("www: renewed from internal (issued by an earlier pass)"),
        "{run:?}"
    );
    assert_eq!(
        std::fs::read(dir.join("live/www/fullchain.pem")).unwrap(),
        kept
    );
    assert!(!dir.join("state/pending/www").exists());
    assert_eq!(check_json(&dir)[0]["status"], "ok");
    let run = dir.run(&["renew"]);
    assert!(run.stdout.starts_with("www: not due"), "{run:?}");
}

/// `chattr +i` on a directory for the life of the value (root cannot write into it either).
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn new(path: &Path) -> Immutable {
        let status = std::process::Command::new("chattr")
            .arg("+i")
            .arg(path)
            .status()
            .expect("chattr (Debian package e2fsprogs) is needed for this test");
        assert!(
            status.success(),
            "chattr +i failed: the test directory must be on ext4/xfs/btrfs"
        );
        Immutable(path.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_shorter_lifetime_is_fine_but_older_material_is_never_deployed() {
    // The live pair, from elsewhere, is valid for two more years; the local CA gives 90 days.
    // It is not older material (it is dated now), so it replaces the live pair.
    let dir = Dir::new();
    let pki = Pki::new("Other");
    let leaf = pki.leaf(LeafSpec::new(&["www.test", "*.www.test"], 700));
    dir.write("live/www/fullchain.pem", leaf.fullchain());
    dir.write("live/www/privkey.pem", &leaf.key_pem);
    dir.config(&config(&cert("www", "internal", "")));
    let run = dir.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with("www: renewed from internal"),
        "{run:?}"
    );

    // A live leaf dated in the future makes anything ordered now older material: refused
    // before ordering (the local CA is not even created), the live pair untouched.
    let dir = Dir::new();
    let mut spec = LeafSpec::new(&["www.test", "*.www.test"], 300);
    spec.not_before = time::OffsetDateTime::now_utc() + time::Duration::days(2);
    let leaf = pki.leaf(spec);
    dir.write("live/www/fullchain.pem", leaf.fullchain());
    dir.write("live/www/privkey.pem", &leaf.key_pem);
    dir.config(&config(&cert("www", "internal", "")));
    let before = tree(&dir.join("live"));
    let run = dir.run(&["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("is later than now") && run.stdout.contains("older material"),
        "{run:?}"
    );
    assert!(!dir.join("state/ca/internal").exists(), "ordered anyway");
    assert_eq!(before, tree(&dir.join("live")));

    // Kept material dated more than an hour before the live leaf (issuers date back by up
    // to an hour, so nothing closer is older) is discarded, never deployed. It is signed by a
    // root the certificate's issuers trust, so age is its only fault.
    let dir = Dir::new();
    dir.write("other-root.pem", pki.root_pem());
    dir.config(&config(&cert("www", "[internal, broken]", "")).replace(
        "directory: https://127.0.0.1:9/dir\n",
        "directory: https://127.0.0.1:9/dir\n    trust_roots: other-root.pem\n",
    ));
    assert_eq!(dir.run(&["renew"]).code, 0);
    let live = std::fs::read(dir.join("live/www/fullchain.pem")).unwrap();
    let older = pki.leaf(LeafSpec::new(&["www.test", "*.www.test"], 80));
    dir.write("state/pending/www/fullchain.pem", older.fullchain());
    dir.write("state/pending/www/privkey.pem", &older.key_pem);
    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("www: not due"), "{run:?}");
    assert!(
        run.stderr.contains("older than the live certificate"),
        "{run:?}"
    );
    assert_eq!(
        std::fs::read(dir.join("live/www/fullchain.pem")).unwrap(),
        live
    );
    assert!(!dir.join("state/pending/www").exists());
}

#[test]
fn a_broken_live_certificate_is_due_now() {
    // A self-signed certificate made a moment ago and valid for a year: `check` calls it
    // CRITICAL (untrusted), so a plain pass replaces it from the local CA (the migration an
    // operator makes first), although the local CA dates its leaf five minutes back.
    let dir = Dir::new();
    let (chain, key) = crate::util::fixtures::self_signed_leaf(&["www.test", "*.www.test"]);
    dir.write("live/www/fullchain.pem", &chain);
    dir.write("live/www/privkey.pem", &key);
    dir.config(&config(&cert("www", "internal", "")));
    assert_eq!(check_json(&dir)[0]["status"], "critical");
    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with("www: renewed from internal"),
        "{run:?}"
    );
    assert!(run.stdout.contains("were adopted"), "{run:?}");
    assert_eq!(check_json(&dir)[0]["status"], "ok");
    let snaps = dir.run(&["snapshots", "--json", "www"]);
    let snaps: Vec<Value> = serde_json::from_str(&snaps.stdout).unwrap();
    assert_eq!(snaps.len(), 1, "the self-signed pair is kept");
    assert_eq!(snaps[0]["verified"], true);
    assert!(dir.run(&["renew"]).stdout.starts_with("www: not due"));

    // A key that does not belong to the leaf is CRITICAL too: due now.
    let other = crate::util::fixtures::self_signed_leaf(&["www.test"]).1;
    let key_path = std::fs::canonicalize(dir.join("live/www/privkey.pem")).unwrap();
    std::fs::write(&key_path, other).unwrap();
    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with("www: renewed from internal"),
        "{run:?}"
    );
    assert_eq!(check_json(&dir)[0]["status"], "ok");
}

#[test]
fn a_live_file_edited_in_place_does_not_wedge_the_certificate() {
    let dir = Dir::new();
    dir.config(&config(&cert("www", "internal", "")));
    assert_eq!(dir.run(&["renew"]).code, 0);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(dir.run(&["renew", "--force"]).code, 0);
    let first = dir.run(&["snapshots", "--json", "www"]);
    let first: Vec<Value> = serde_json::from_str(&first.stdout).unwrap();
    // Someone edits the live fullchain in place (through the link, into the generation).
    let live = dir.join("live/www/fullchain.pem");
    let mut edited = std::fs::read(&live).unwrap();
    edited.extend_from_slice(b"# edited by hand\n");
    std::fs::write(&live, &edited).unwrap();
    let entry = &check_json(&dir)[0];
    assert_eq!(entry["status"], "critical");
    assert_eq!(entry["integrity"], false);

    // A rollback still works: the edited pair is kept as found, marked unverified.
    let run = dir.run(&["rollback", "www"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(&format!(
            "rolled back to snapshot {}",
            first[0]["id"].as_str().unwrap()
        )),
        "{run:?}"
    );
    assert!(
        run.stderr.contains("was changed outside certkeeper"),
        "{run:?}"
    );
    let snaps = dir.run(&["snapshots", "--json", "www"]);
    let snaps: Vec<Value> = serde_json::from_str(&snaps.stdout).unwrap();
    assert_eq!(snaps[0]["verified"], false, "{snaps:?}");
    assert_eq!(
        snaps[0]["files"]["fullchain"],
        certkeeper::text::sha256_hex(&edited)
    );
    // And so does a renewal over an edited pair: it is due (integrity), deploys, and says
    // which file was edited.
    let live = dir.join("live/www/privkey.pem");
    let mut key = std::fs::read(&live).unwrap();
    key.extend_from_slice(b"\n");
    std::fs::write(&live, &key).unwrap();
    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with("www: renewed from internal"),
        "{run:?}"
    );
    assert!(
        run.stdout.contains(&format!(
            "WARNING: {} was changed outside certkeeper",
            dir.join("live/www/privkey.pem").display()
        )),
        "{run:?}"
    );
    assert_eq!(check_json(&dir)[0]["status"], "ok");
    // The default rollback target is never an edited pair. (The key edited in place was a
    // hard link shared with the snapshot it had been restored from, so that one no longer
    // verifies either: nothing is left to restore by default.)
    let snaps = dir.run(&["snapshots", "--json", "www"]);
    let snaps: Vec<Value> = serde_json::from_str(&snaps.stdout).unwrap();
    let verified: Vec<bool> = snaps.iter().map(|s| s["verified"] == true).collect();
    assert_eq!(verified, [false, false, false], "{snaps:?}");
    let run = dir.run(&["rollback", "www"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("no snapshot of www to roll back to"),
        "{run:?}"
    );
    // By id, an intact snapshot of edited files can still be restored.
    let id = snaps[0]["id"].as_str().unwrap();
    let run = dir.run(&["rollback", "www", "--to", id]);
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn adopted_files_keep_their_mode_owner_and_group() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !crate::util::is_root() {
        panic!("this test changes file owners: run the suite as root, as CI does");
    }
    let dir = Dir::new();
    let (chain, key) = crate::util::fixtures::self_signed_leaf(&["www.test", "*.www.test"]);
    dir.write("live/www/fullchain.pem", &chain);
    let key_path = dir.write("live/www/privkey.pem", &key);
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&key_path, Some(0), Some(33)).unwrap();
    dir.config(&config(&cert("www", "internal", "")));
    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("were adopted and are links"), "{run:?}");
    let meta = std::fs::metadata(&key_path).unwrap();
    assert_eq!(
        (meta.mode() & 0o777, meta.uid(), meta.gid()),
        (0o640, 0, 33)
    );
    assert!(
        std::fs::symlink_metadata(&key_path)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // Kept across later renewals too...
    assert_eq!(dir.run(&["renew", "--force"]).code, 0);
    let meta = std::fs::metadata(&key_path).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o640, 33));
    // ... unless the config says otherwise.
    dir.config(&config(&cert("www", "internal", "    mode: \"0600\"\n")));
    assert_eq!(dir.run(&["renew", "--force"]).code, 0);
    let meta = std::fs::metadata(&key_path).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o600, 33));
}

#[test]
fn many_certificates_in_one_pass() {
    let dir = Dir::new();
    let certs: String = (0..10)
        .map(|i| cert(&format!("c{i}"), "internal", ""))
        .collect();
    dir.config(&config(&certs));
    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout
            .lines()
            .filter(|l| l.contains(": renewed from internal"))
            .count(),
        10,
        "{run:?}"
    );
    let run = dir.run(&["check"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with("CERTKEEPER OK - 10 certificates"),
        "{run:?}"
    );
}

#[test]
fn key_types_and_reuse_key() {
    let dir = Dir::new();
    dir.config(&config(&format!(
        "{}{}{}",
        cert("rsa", "internal", "    key: rsa-2048\n"),
        cert("p384", "internal", "    key: ecdsa-p384\n"),
        cert(
            "same",
            "internal",
            "    reuse_key: true\n    mode: \"0640\"\n"
        )
    )));
    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    let rsa = std::fs::read_to_string(dir.join("live/rsa/privkey.pem")).unwrap();
    let p384 = certkeeper::x509::PrivateKey::from_bytes(
        &std::fs::read(dir.join("live/p384/privkey.pem")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        certkeeper::x509::PrivateKey::from_bytes(rsa.as_bytes())
            .unwrap()
            .algorithm,
        "rsa"
    );
    assert_eq!(p384.algorithm, "ecdsa-p384");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("live/same/privkey.pem"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o640);
    let key = std::fs::read(dir.join("live/same/privkey.pem")).unwrap();
    let run = dir.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        std::fs::read(dir.join("live/same/privkey.pem")).unwrap(),
        key,
        "reuse_key changed the key"
    );
    assert_ne!(
        std::fs::read_to_string(dir.join("live/rsa/privkey.pem")).unwrap(),
        rsa
    );
    assert_eq!(dir.run(&["check"]).code, 0);
}

#[test]
fn usage_errors_exit_2() {
    let dir = Dir::new();
    dir.config(&config(&cert("www", "internal", "")));
    let run = dir.run(&["renew", "nope"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("no certificate named \"nope\""),
        "{run:?}"
    );
    dir.config("certificates: [\n");
    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(!dir.join("state").exists());
}

#[test]
fn check_as_a_monitoring_user_on_a_local_ca_host_is_ok() {
    use std::os::unix::fs::PermissionsExt;
    if !crate::util::is_root() {
        panic!("this test drops from root to nobody; run the suite as root (CI does)");
    }
    let dir = Dir::new();
    dir.config(&config(&cert("www", "internal", "")));
    assert_eq!(dir.run(&["renew"]).code, 0);
    // Only the way to the config and the live files is opened, as on a real host; the
    // private key (0600) and state_dir stay as certkeeper made them.
    dir.open_way_to_live(&["www"]);
    let mode = |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("state"), 0o711);
    assert_eq!(mode("state/ca"), 0o711);
    assert_eq!(mode("state/ca/internal"), 0o711);
    assert_eq!(mode("state/ca/internal/root.pem"), 0o644);
    assert_eq!(mode("state/ca/internal/root.key"), 0o600);
    assert_eq!(mode("state/state"), 0o700);
    let as_nobody = crate::util::as_nobody;
    let config_path = dir.join("config.yaml");
    let run = as_nobody(&[
        crate::util::bin(),
        "--config",
        config_path.to_str().unwrap(),
        "check",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with("CERTKEEPER OK - 1 certificate"),
        "{run:?}"
    );
    assert!(
        run.stdout.contains("privkey not checked: not readable by this user (the manifest records that certkeeper matched it to the leaf when it wrote this pair)"),
        "{run:?}"
    );
    let json = as_nobody(&[
        crate::util::bin(),
        "--config",
        config_path.to_str().unwrap(),
        "check",
        "--json",
    ]);
    let entries: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(
        entries[0]["key_match"],
        serde_json::Value::Bool(true),
        "{json:?}"
    );
    assert_eq!(entries[0]["status"], "ok", "{json:?}");
    // The manifest is what tells: one that records a mismatch is reported as such.
    let manifest_path = dir.join("live/www/.certkeeper-www.manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    assert_eq!(manifest["key_matches_leaf"], serde_json::Value::Bool(true));
    manifest["key_matches_leaf"] = serde_json::Value::Bool(false);
    let target = std::fs::canonicalize(&manifest_path).unwrap();
    std::fs::write(&target, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let run = as_nobody(&[
        crate::util::bin(),
        "--config",
        config_path.to_str().unwrap(),
        "check",
        "--json",
    ]);
    let entries: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        entries[0]["key_match"],
        serde_json::Value::Bool(false),
        "{run:?}"
    );
    // Entered, not listed: nothing else in state_dir is visible to that user.
    let state = dir.join("state");
    let ls = as_nobody(&["ls", state.to_str().unwrap()]);
    assert_ne!(ls.code, 0, "state_dir is listable: {ls:?}");
    let key = dir.join("state/ca/internal/root.key");
    let cat = as_nobody(&["cat", key.to_str().unwrap()]);
    assert_ne!(cat.code, 0, "the CA key is readable: {cat:?}");
}

#[test]
fn a_refused_first_deploy_keeps_the_new_pair_and_a_later_pass_reloads_it_without_ordering() {
    let dir = Dir::new();
    let verify = |cmd: &str| format!("    verify: {{ command: [{cmd}], timeout: 1s }}\n");
    dir.config(&config(&cert("www", "internal", &verify("/bin/false"))));
    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.starts_with(
            "www: FAILED: the new certificate from internal is live and stays in place (nothing was live before"
        ) && run
            .stdout
            .contains("verify failed: the health check did not pass")
            && run
                .stdout
                .contains("the next pass reloads and verifies it again without ordering"),
        "{run:?}"
    );
    // Nothing better to go back to: the new, checked pair stays live.
    let live = std::fs::read(dir.join("live/www/fullchain.pem")).unwrap();
    assert!(dir.join("live/www/privkey.pem").exists());
    assert!(!dir.join("state/pending/www").exists(), "{run:?}");
    let state: Value =
        serde_json::from_slice(&std::fs::read(dir.join("state/state/www.json")).unwrap()).unwrap();
    assert_eq!(state["last_result"], "failed");
    assert_eq!(state["last_cause"], "verify");
    let fingerprint = {
        let (certs, _) = certkeeper::x509::read_certificates(&live).unwrap();
        certs[0].fingerprint.clone()
    };
    assert_eq!(state["unserved"], fingerprint.as_str());

    // The next pass, backoff or not, verifies the same pair again: nothing is ordered.
    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.starts_with("www: FAILED: "), "{run:?}");
    assert_eq!(
        std::fs::read(dir.join("live/www/fullchain.pem")).unwrap(),
        live
    );

    // Once the service is healthy, the next pass (not forced, within the backoff) serves
    // it: the same pair, no new order.
    dir.config(&config(&cert("www", "internal", &verify("/bin/true"))));
    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .starts_with("www: renewed from the pair an earlier pass deployed"),
        "{run:?}"
    );
    assert_eq!(
        std::fs::read(dir.join("live/www/fullchain.pem")).unwrap(),
        live
    );
    let state: Value =
        serde_json::from_slice(&std::fs::read(dir.join("state/state/www.json")).unwrap()).unwrap();
    assert_eq!(state["last_result"], "renewed");
    assert!(state.get("unserved").is_none(), "{state}");
    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("www: not due"), "{run:?}");
}

#[test]
fn renew_no_reload_swaps_in_and_the_next_pass_reloads_and_verifies() {
    let dir = Dir::new();
    let marker = dir.join("reloaded");
    let reload = format!(
        "    reload: {{ command: [sh, -c, 'echo x >> {}'] }}\n",
        marker.display()
    );
    dir.config(&config(&cert("www", "internal", &reload)));
    let run = dir.run(&["renew", "--no-reload"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with("www: renewed from internal")
            && run
                .stdout
                .contains("not reloaded or verified (--no-reload)"),
        "{run:?}"
    );
    assert!(!marker.exists(), "--no-reload reloaded: {run:?}");
    let live = std::fs::read(dir.join("live/www/fullchain.pem")).unwrap();
    // The next pass reloads it, without ordering.
    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .starts_with("www: renewed from the pair an earlier pass deployed"),
        "{run:?}"
    );
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "x\n");
    assert_eq!(
        std::fs::read(dir.join("live/www/fullchain.pem")).unwrap(),
        live
    );
    // And then nothing more.
    let run = dir.run(&["renew"]);
    assert!(run.stdout.starts_with("www: not due"), "{run:?}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "x\n");
    // --no-reload and --dry-run do not go together.
    let run = dir.run(&["renew", "--no-reload", "--dry-run"]);
    assert_eq!(run.code, 2, "{run:?}");
}

/// Every file under `dir` with its size, modification time and inode: what a write changes.
fn stamps(dir: &Path) -> Vec<(PathBuf, u64, i64, i64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
            }
            out.push((
                path,
                meta.len(),
                meta.mtime(),
                meta.mtime_nsec(),
                meta.ino(),
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn a_pass_that_renews_nothing_writes_nothing_per_certificate() {
    let dir = Dir::new();
    dir.config(&config(
        &["a", "b", "c"].map(|n| cert(n, "internal", "")).concat(),
    ));
    assert_eq!(dir.run(&["renew"]).code, 0);
    // The first pass over a state_dir with no `clean` marker looked everywhere and put the
    // marker; a second pass finds nothing due and nothing interrupted.
    assert!(dir.join("state/clean").is_file());
    let before_state = stamps(&dir.join("state"));
    let before_live = stamps(&dir.join("live"));
    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout.matches(": not due").count(), 3, "{run:?}");
    // Nothing changed under the live paths, and under state_dir only the pass record, which
    // says when each certificate was found not due.
    assert_eq!(stamps(&dir.join("live")), before_live);
    let changed: Vec<_> = stamps(&dir.join("state"))
        .into_iter()
        .filter(|s| !before_state.contains(s))
        .map(|s| s.0)
        .collect();
    assert_eq!(changed, [dir.join("state/pass.json")], "{run:?}");
    let record: Value =
        serde_json::from_slice(&std::fs::read(dir.join("state/pass.json")).unwrap()).unwrap();
    for name in ["a", "b", "c"] {
        assert!(
            record["not_due"][name].as_i64().unwrap() > 1_700_000_000,
            "{record}"
        );
    }
    // A pass that finds the marker gone (a command was interrupted) looks everywhere again:
    // a temporary file left in a certificate's live directory is removed.
    std::fs::remove_file(dir.join("state/clean")).unwrap();
    let leftover = dir.join("live/b/.certkeeper-b.tmp-1-2-3");
    std::os::unix::fs::symlink("gen-000001", &leftover).unwrap();
    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(std::fs::symlink_metadata(&leftover).is_err(), "{run:?}");
    assert!(dir.join("state/clean").is_file());
}

/// A failed reload's output is printed once on stdout (the outcome's line) and once in the
/// log (the outcome's log line), not again by every step that saw it; and a certificate with
/// neither reload nor verify logs no "Reloaded and verified".
#[test]
fn a_failed_commands_output_is_printed_once_and_nothing_unchecked_is_called_verified() {
    let dir = Dir::new();
    let fail = dir.join("fail");
    let reload = format!(
        "    reload: {{ command: [sh, -c, 'echo UNIQUE-RELOAD-OUTPUT >&2; exit $(cat {} 2>/dev/null || echo 0)'] }}\n",
        fail.display()
    );
    dir.config(&config(&cert("www", "internal", &reload)));
    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    std::fs::write(&fail, "1").unwrap();
    let run = dir.run(&["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.stdout.matches("UNIQUE-RELOAD-OUTPUT").count(),
        1,
        "{run:?}"
    );
    assert_eq!(
        run.stderr.matches("UNIQUE-RELOAD-OUTPUT").count(),
        1,
        "{run:?}"
    );

    let plain = Dir::new();
    plain.config(&config(&cert("www", "internal", "")));
    let run = plain.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stderr.contains("Reloaded and verified"), "{run:?}");
}
