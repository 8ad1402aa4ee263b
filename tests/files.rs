//! The files services expect besides the pair (`cert`, `chain`, `combined`), through the
//! real binary and the store: written with every renewal, restored by every rollback (a
//! snapshot from before they existed gets them derived from its pair), checked by `check`
//! and `verify`, refused where something certkeeper must not replace sits, and a config
//! error when two files share a path. The crash harness in `store` runs a certificate with
//! all five files.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde_json::Value;

use crate::util::Dir;

/// A local-CA config for `www` with all five files: `extra` is appended to its entry.
fn config(extra: &str) -> String {
    format!(
        "state_dir: state\n\
         issuers:\n  internal:\n    type: local-ca\n    validity: 90d\n\
         certificates:\n  - name: www\n    domains: [www.test]\n    issuer: internal\n    \
         fullchain: live/fullchain.pem\n    privkey: live/privkey.pem\n    \
         cert: live/cert.pem\n    chain: live/chain.pem\n    combined: haproxy/www.pem\n{extra}"
    )
}

fn ders(bytes: &[u8]) -> Vec<Vec<u8>> {
    match certkeeper::x509::read_certificates(bytes) {
        Ok((certs, _)) => certs.into_iter().map(|c| c.der).collect(),
        Err(_) => Vec::new(),
    }
}

/// Asserts that cert, chain and combined hold what the live pair says, and returns the
/// live leaf's DER.
fn assert_follow_the_pair(dir: &Dir) -> Vec<u8> {
    let fullchain = fs::read(dir.join("live/fullchain.pem")).unwrap();
    let key = fs::read(dir.join("live/privkey.pem")).unwrap();
    let chain = ders(&fullchain);
    assert!(!chain.is_empty());
    assert_eq!(
        ders(&fs::read(dir.join("live/cert.pem")).unwrap()),
        chain[..1]
    );
    assert_eq!(
        ders(&fs::read(dir.join("live/chain.pem")).unwrap()),
        chain[1..]
    );
    let combined = fs::read(dir.join("haproxy/www.pem")).unwrap();
    assert_eq!(ders(&combined), chain);
    assert!(
        combined.ends_with(&key),
        "combined does not end with the live key"
    );
    chain[0].clone()
}

fn check(dir: &Dir) -> (i32, Value) {
    let (code, list) = dir.check_json();
    assert_eq!(list.len(), 1, "{list:?}");
    (code, list[0].clone())
}

/// Every path under `dir` with what it holds (link targets for links), to prove that a
/// refused run changed nothing.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        let what = if meta.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            b"dir".to_vec()
        } else if meta.is_symlink() {
            fs::read_link(&p)
                .unwrap()
                .display()
                .to_string()
                .into_bytes()
        } else if meta.is_file() {
            fs::read(&p).unwrap()
        } else {
            b"special".to_vec()
        };
        out.push((p.display().to_string(), what));
    }
    out.sort();
    out
}

#[test]
fn renew_writes_all_five_files_and_rollback_restores_all_five() {
    let dir = Dir::new();
    dir.config(&config("    mode: \"0640\"\n"));
    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    let first = assert_follow_the_pair(&dir);
    // The combined file holds the key: it has the key's mode, the others the fullchain's.
    assert_eq!(
        fs::metadata(dir.join("haproxy/www.pem")).unwrap().mode() & 0o777,
        0o640
    );
    assert_eq!(
        fs::metadata(dir.join("live/cert.pem")).unwrap().mode() & 0o777,
        fs::metadata(dir.join("live/fullchain.pem")).unwrap().mode() & 0o777
    );
    let (code, e) = check(&dir);
    assert_eq!(code, 0, "{e:#}");

    let run = dir.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    let second = assert_follow_the_pair(&dir);
    assert_ne!(first, second);
    let snaps: Vec<Value> =
        serde_json::from_str(&dir.run(&["snapshots", "--json", "www"]).stdout).unwrap();
    for key in ["fullchain", "privkey", "cert", "chain", "combined"] {
        assert_eq!(
            snaps[0]["files"][key].as_str().map(str::len),
            Some(64),
            "{snaps:#?}"
        );
    }

    let run = dir.run(&["rollback", "www"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(assert_follow_the_pair(&dir), first);
    let (code, e) = check(&dir);
    assert_eq!(code, 0, "{e:#}");
}

#[test]
fn a_snapshot_from_before_the_files_existed_is_restored_with_files_derived_from_its_pair() {
    let dir = Dir::new();
    dir.config(&config(""));
    assert_eq!(dir.run(&["renew"]).code, 0);
    let first = assert_follow_the_pair(&dir);
    assert_eq!(dir.run(&["renew", "--force"]).code, 0);
    // Make snapshot 000001 what an older certkeeper kept: the pair alone, recorded so.
    let snap = dir.join("state/snapshots/www/000001");
    for file in ["cert.pem", "chain.pem", "combined.pem"] {
        fs::remove_file(snap.join(file)).unwrap();
    }
    let mut record: Value =
        serde_json::from_slice(&fs::read(snap.join("snapshot.json")).unwrap()).unwrap();
    let files = record["manifest"]["files"].as_object_mut().unwrap();
    for key in ["cert", "chain", "combined"] {
        files.remove(key);
    }
    fs::write(
        snap.join("snapshot.json"),
        serde_json::to_vec(&record).unwrap(),
    )
    .unwrap();
    let listed: Vec<Value> =
        serde_json::from_str(&dir.run(&["snapshots", "--json", "www"]).stdout).unwrap();
    assert_eq!(listed[0]["verified"], true, "{listed:#?}");

    let run = dir.run(&["rollback", "www", "--to", "000001"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(assert_follow_the_pair(&dir), first);
    let (code, e) = check(&dir);
    assert_eq!(code, 0, "{e:#}");
}

#[test]
fn a_certbot_layout_is_taken_over_and_cert_and_chain_follow_each_renewal() {
    let dir = Dir::new();
    // certbot's live/ holds links into archive/; certkeeper replaces the links, never the
    // archive's files.
    let pki = crate::util::fixtures::Pki::new("Certbot");
    let leaf = pki.leaf(crate::util::fixtures::LeafSpec::new(&["www.test"], 60));
    let full = leaf.fullchain();
    let certs = ders(full.as_bytes());
    assert!(certs.len() >= 2, "the fixture has an intermediate");
    let pem = |der: &[u8]| certkeeper::x509::pem::write("CERTIFICATE", der);
    let chain_pem: String = certs[1..].iter().map(|d| pem(d)).collect();
    dir.write("archive/cert1.pem", pem(&certs[0]));
    dir.write("archive/chain1.pem", &chain_pem);
    dir.write("archive/fullchain1.pem", &full);
    dir.write("archive/privkey1.pem", &leaf.key_pem);
    fs::create_dir_all(dir.join("live")).unwrap();
    fs::create_dir_all(dir.join("haproxy")).unwrap();
    for name in ["cert", "chain", "fullchain", "privkey"] {
        std::os::unix::fs::symlink(
            format!("../archive/{name}1.pem"),
            dir.join(&format!("live/{name}.pem")),
        )
        .unwrap();
    }
    let archive = tree(&dir.join("archive"));
    dir.config(&config(""));
    let run = dir.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    let renewed = assert_follow_the_pair(&dir);
    assert_ne!(renewed, certs[0]);
    assert_eq!(tree(&dir.join("archive")), archive);
    let run = dir.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_ne!(assert_follow_the_pair(&dir), renewed);
}

#[test]
fn check_and_verify_name_a_file_that_does_not_follow_the_pair_and_renew_repairs_it() {
    let dir = Dir::new();
    dir.config(&config(""));
    assert_eq!(dir.run(&["renew"]).code, 0);
    let fullchain = fs::read(dir.join("live/fullchain.pem")).unwrap();
    let certs = ders(&fullchain);
    let pem = |der: &[u8]| certkeeper::x509::pem::write("CERTIFICATE", der);

    // A chain file holding the leaf instead of the intermediates.
    fs::remove_file(dir.join("live/chain.pem")).unwrap();
    dir.write("live/chain.pem", pem(&certs[0]));
    let (code, e) = check(&dir);
    assert_eq!(code, 2, "{e:#}");
    let problems = e["problems"].to_string();
    assert!(
        problems.contains("chain mismatch") && problems.contains("live/chain.pem"),
        "{e:#}"
    );
    let run = dir.run(&["verify", "www"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stdout.contains("live/chain.pem"), "{run:?}");

    // CRITICAL is due now: a plain renew puts the files back in line.
    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_follow_the_pair(&dir);
    assert_eq!(check(&dir).0, 0);

    // A cert file holding an intermediate, a combined file with another key, a missing file.
    let other = crate::util::fixtures::Pki::new("Other")
        .leaf(crate::util::fixtures::LeafSpec::new(&["www.test"], 30));
    let cases: [(&str, Option<Vec<u8>>, &str); 4] = [
        (
            "live/cert.pem",
            Some(pem(certs.last().unwrap()).into_bytes()),
            "cert mismatch",
        ),
        (
            "haproxy/www.pem",
            Some([fullchain.clone(), other.key_pem.clone().into_bytes()].concat()),
            "combined mismatch",
        ),
        (
            "haproxy/www.pem",
            Some(other.fullchain().into_bytes()),
            "combined mismatch",
        ),
        ("live/chain.pem", None, "chain missing"),
    ];
    for (path, content, said) in cases {
        let saved = fs::read_link(dir.join(path)).unwrap();
        fs::remove_file(dir.join(path)).unwrap();
        if let Some(c) = content {
            dir.write(path, c);
        }
        let (code, e) = check(&dir);
        assert_eq!(code, 2, "{path}: {e:#}");
        let problems = e["problems"].to_string();
        assert!(problems.contains(said) && problems.contains(path), "{e:#}");
        let _ = fs::remove_file(dir.join(path));
        std::os::unix::fs::symlink(saved, dir.join(path)).unwrap();
        assert_eq!(check(&dir).0, 0);
    }
}

#[test]
fn special_files_at_the_new_paths_are_refused_and_nothing_changes() {
    let dir = Dir::new();
    dir.config(&config(""));
    assert_eq!(dir.run(&["renew"]).code, 0);
    let made = std::process::Command::new("mkfifo")
        .arg(dir.join("fifo.pem"))
        .status()
        .expect("mkfifo (coreutils)");
    assert!(made.success());
    std::os::unix::fs::symlink("/dev/null", dir.join("haproxy/null.pem")).unwrap();
    for (key, path) in [
        ("cert", "fifo.pem"),
        ("chain", "fifo.pem"),
        ("combined", "haproxy/null.pem"),
    ] {
        let yaml = config("").replace(
            &format!("    {key}: {}", original(key)),
            &format!("    {key}: {path}"),
        );
        assert_ne!(yaml, config(""));
        dir.config(&yaml);
        let before = tree(dir.path());
        let run = dir.run(&["renew", "--force"]);
        assert_eq!(run.code, 1, "{run:?}");
        assert!(
            run.stderr.contains(&dir.join(path).display().to_string())
                && run.stderr.contains("refusing to write"),
            "{run:?}"
        );
        assert!(!run.stderr.contains("panicked"), "{run:?}");
        let run = dir.run(&["config", "check"]);
        assert_eq!(run.code, 2, "{run:?}");
        assert!(
            run.stderr.contains(&format!("certificates[0].{key}:")),
            "{run:?}"
        );
        let mut after = tree(dir.path());
        // Only the state_dir's bookkeeping of the failed attempt may differ.
        after.retain(|(p, _)| !p.contains("/state/"));
        let mut before = before;
        before.retain(|(p, _)| !p.contains("/state/"));
        assert_eq!(after, before, "{key}: a refused run changed files");
    }
}

/// The path `config("")` gives each derived key.
fn original(key: &str) -> &'static str {
    match key {
        "cert" => "live/cert.pem",
        "chain" => "live/chain.pem",
        _ => "haproxy/www.pem",
    }
}

#[test]
fn two_files_at_one_path_or_a_reserved_name_are_config_errors_with_their_line() {
    let dir = Dir::new();
    let second = "  - name: mail\n    domains: [mail.test]\n    issuer: internal\n    \
                  fullchain: mail/fullchain.pem\n    privkey: mail/privkey.pem\n";
    let cases: [(String, &str, &str); 5] = [
        (
            config("").replace("chain: live/chain.pem", "chain: live/fullchain.pem"),
            "config.yaml:13: certificates[0].chain:",
            "is also this certificate's fullchain",
        ),
        (
            config("").replace("cert: live/cert.pem", "cert: haproxy/www.pem"),
            "config.yaml:14: certificates[0].combined:",
            "is also this certificate's cert",
        ),
        (
            format!("{}{second}    combined: live/privkey.pem\n", config("")),
            "config.yaml:20: certificates[1].combined:",
            "is also certificates[0].privkey",
        ),
        (
            config("").replace("cert: live/cert.pem", "cert: state/cert.pem"),
            "config.yaml:12: certificates[0].cert:",
            "inside state_dir",
        ),
        (
            config("").replace("chain: live/chain.pem", "chain: live/.certkeeper-x"),
            "config.yaml:13: certificates[0].chain:",
            "certkeeper's own",
        ),
    ];
    for (yaml, place, said) in cases {
        dir.config(&yaml);
        let run = dir.run(&["config", "check"]);
        assert_eq!(run.code, 2, "{yaml}\n{run:?}");
        assert!(
            run.stderr
                .lines()
                .any(|l| l.contains(place) && l.contains(said)),
            "{place} {said}\n{run:?}"
        );
        // Nothing is written for a config that does not validate.
        let run = dir.run(&["renew"]);
        assert_eq!(run.code, 2, "{run:?}");
        assert!(!dir.join("live").exists() && !dir.join("state").exists());
    }
}

#[test]
fn a_revert_in_the_store_puts_back_all_five_files_of_the_previous_pair() {
    use certkeeper::store::{Derived, PairSpec, Store};
    let dir = Dir::new();
    let pki = crate::util::fixtures::Pki::new("Revert");
    let mut spec = PairSpec::new(
        "www",
        dir.join("live/fullchain.pem"),
        dir.join("live/privkey.pem"),
    );
    spec.cert = Some(dir.join("live/cert.pem"));
    spec.chain = Some(dir.join("other/chain.pem"));
    spec.combined = Some(dir.join("haproxy/www.pem"));
    let store = Store::open(dir.join("state")).unwrap();
    let locked = store.lock().unwrap();
    let a = pki.leaf(crate::util::fixtures::LeafSpec::new(&["www.test"], 30));
    let b = pki.leaf(crate::util::fixtures::LeafSpec::new(&["www.test"], 60));
    locked
        .deploy(&spec, a.fullchain().as_bytes(), a.key_pem.as_bytes())
        .unwrap();
    let read_all = || -> Vec<Vec<u8>> {
        Derived::ALL
            .iter()
            .map(|d| fs::read(spec.derived_path(*d).unwrap()).unwrap())
            .collect()
    };
    let old = read_all();
    let staged = locked
        .stage(&spec, b.fullchain().as_bytes(), b.key_pem.as_bytes())
        .unwrap();
    let new = read_all();
    for (d, (o, n)) in Derived::ALL.iter().zip(old.iter().zip(&new)) {
        if *d != Derived::Chain {
            assert_ne!(o, n, "{d:?} did not follow the staged pair");
        }
    }
    assert_eq!(ders(&new[0]), ders(b.fullchain().as_bytes())[..1].to_vec());
    locked.revert(&spec, &staged).unwrap();
    assert_eq!(read_all(), old);
}
