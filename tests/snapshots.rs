//! `certkeeper snapshots` and `certkeeper rollback` through the real binary, over pairs the
//! store deployed: the JSON shape, the default and `--to` targets, undoing a rollback, and a
//! corrupt snapshot refused.

use serde_json::Value;

use certkeeper::store::{PairSpec, Store};

use crate::util::Dir;
use crate::util::fixtures::{LeafSpec, Pki};

struct Host {
    dir: Dir,
    pki: Pki,
}

impl Host {
    fn new() -> Host {
        let dir = Dir::new();
        let pki = Pki::new("Snap");
        dir.write("trust.pem", pki.root_pem());
        dir.config(
            "state_dir: state\nissuers:\n  ca:\n    type: acme\n    directory: https://127.0.0.1:14000/dir\n    trust_roots: trust.pem\n\
             dns_providers:\n  hook:\n    type: exec\n    command: [/bin/true]\n\
             certificates:\n  - name: www\n    domains: [example.test]\n    issuer: ca\n    dns_provider: hook\n    \
             fullchain: live/fullchain.pem\n    privkey: live/privkey.pem\n    keep_snapshots: 5\n",
        );
        Host { dir, pki }
    }

    /// Deploys a new pair valid for `days` and returns its leaf fingerprint.
    fn deploy(&self, days: i64) -> String {
        let leaf = self.pki.leaf(LeafSpec::new(&["example.test"], days));
        let store = Store::open(self.dir.join("state")).unwrap();
        let spec = PairSpec::new(
            "www",
            self.dir.join("live/fullchain.pem"),
            self.dir.join("live/privkey.pem"),
        );
        let locked = store.lock().unwrap();
        let done = locked
            .deploy(&spec, leaf.fullchain().as_bytes(), leaf.key_pem.as_bytes())
            .unwrap();
        done.manifest.fingerprint
    }

    fn live_fingerprint(&self) -> String {
        let run = self.dir.run(&["check", "--json"]);
        assert_eq!(run.code, 0, "{run:?}");
        let v: Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(v[0]["integrity"], true, "{run:?}");
        v[0]["fingerprint"].as_str().unwrap().to_owned()
    }

    fn snapshots(&self) -> Vec<Value> {
        let run = self.dir.run(&["snapshots", "--json", "www"]);
        assert_eq!(run.code, 0, "{run:?}");
        serde_json::from_str(&run.stdout).unwrap()
    }
}

#[test]
fn snapshots_json_shape_newest_first() {
    let host = Host::new();
    assert!(host.snapshots().is_empty());
    let run = host.dir.run(&["snapshots", "www"]);
    assert_eq!(run.stdout, "www: no snapshots\n");
    let a = host.deploy(30);
    let b = host.deploy(40);
    host.deploy(50);
    let list = host.snapshots();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["fingerprint"], b.as_str());
    assert_eq!(list[1]["fingerprint"], a.as_str());
    let obj = list[0].as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(|k| k.as_str()).collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            "created",
            "files",
            "fingerprint",
            "id",
            "linked",
            "not_after",
            "verified"
        ]
    );
    assert_eq!(list[0]["linked"], true);
    assert_eq!(list[0]["verified"], true);
    assert_eq!(list[0]["files"]["fullchain"].as_str().unwrap().len(), 64);
    assert_eq!(list[0]["files"]["privkey"].as_str().unwrap().len(), 64);
    assert!(list[0]["id"].as_str().unwrap() > list[1]["id"].as_str().unwrap());
    let table = host.dir.run(&["snapshots", "www"]);
    assert!(table.stdout.starts_with("ID "), "{table:?}");
    assert_eq!(table.stdout.lines().count(), 3, "{table:?}");
}

#[test]
fn rollback_default_to_and_undo() {
    let host = Host::new();
    let a = host.deploy(30);
    let b = host.deploy(40);
    let c = host.deploy(50);
    assert_eq!(host.live_fingerprint(), c);

    // Default: the newest snapshot whose leaf differs from the live one.
    let run = host.dir.run(&["rollback", "www"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with("www: rolled back to snapshot "),
        "{run:?}"
    );
    assert_eq!(host.live_fingerprint(), b);

    // The replaced pair (c) is now a snapshot: undo the rollback with --to.
    let c_id = host
        .snapshots()
        .iter()
        .find(|s| s["fingerprint"] == c.as_str())
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .expect("the replaced pair is kept as a snapshot");
    let run = host.dir.run(&["rollback", "www", "--to", &c_id]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(host.live_fingerprint(), c);

    // --to an older one.
    let a_id = host
        .snapshots()
        .iter()
        .find(|s| s["fingerprint"] == a.as_str())
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .unwrap();
    let run = host.dir.run(&["rollback", "www", "--to", &a_id]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(host.live_fingerprint(), a);

    let run = host.dir.run(&["rollback", "www", "--to", "999999"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("no snapshot 999999 of www"), "{run:?}");
    assert_eq!(host.live_fingerprint(), a);
}

#[test]
fn corrupt_snapshot_is_refused_and_skipped() {
    let host = Host::new();
    let a = host.deploy(30);
    let b = host.deploy(40);
    host.deploy(50);
    let list = host.snapshots();
    let b_id = list[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(list[0]["fingerprint"], b.as_str());
    // Corrupt b's snapshot in place: a hard link shares data with its generation, so write a
    // new file over the snapshot's link instead of editing through it.
    let snap = host
        .dir
        .join(&format!("state/snapshots/www/{b_id}/privkey.pem"));
    std::fs::remove_file(&snap).unwrap();
    std::fs::write(&snap, "tampered").unwrap();
    let list = host.snapshots();
    assert_eq!(list[0]["verified"], false);

    let run = host.dir.run(&["rollback", "www", "--to", &b_id]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("corrupt and will not be restored"),
        "{run:?}"
    );
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");

    // The default skips to the next older good one.
    let run = host.dir.run(&["rollback", "www"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(host.live_fingerprint(), a);
}

#[test]
fn usage_errors_exit_2() {
    let host = Host::new();
    let run = host.dir.run(&["snapshots", "nope"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("no certificate named \"nope\"; configured: www"),
        "{run:?}"
    );
    let run = host.dir.run(&["rollback", "nope"]);
    assert_eq!(run.code, 2, "{run:?}");
    let run = host.dir.run(&["rollback"]);
    assert_eq!(run.code, 2, "{run:?}");
    // Nothing to roll back to is a failure of the rollback, not a usage error.
    let run = host.dir.run(&["rollback", "www"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("no snapshot of www to roll back to"),
        "{run:?}"
    );
}
