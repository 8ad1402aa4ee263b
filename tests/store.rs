//! Store integration tests: the public store API against real directories, real
//! processes killed at random moments, concurrent readers, a second file system (tmpfs),
//! and real write failures (ENOSPC, EFBIG, EACCES).

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use certkeeper::store::manifest;
use certkeeper::store::{Error, PairSpec, Store};
use certkeeper::text::sha256_hex;

use crate::util::{
    self, ChildGuard, Pair, Pool, Rng, Tmpfs, certkeeper_entries, child_test, env_number,
};

/// A state_dir and a live directory in a fresh temp dir.
struct Fixture {
    root: tempfile::TempDir,
    spec: PairSpec,
}

impl Fixture {
    fn new() -> Fixture {
        let root = tempfile::tempdir().expect("tempdir");
        let live = root.path().join("live");
        fs::create_dir(&live).expect("live dir");
        let spec = PairSpec::new("www", live.join("fullchain.pem"), live.join("privkey.pem"));
        Fixture { root, spec }
    }

    fn state(&self) -> PathBuf {
        self.root.path().join("state")
    }

    fn live_dir(&self) -> PathBuf {
        self.root.path().join("live")
    }

    fn store(&self) -> Store {
        Store::open(self.state()).expect("open store")
    }

    fn deploy(&self, pair: &Pair) -> certkeeper::store::Deployed {
        let store = self.store();
        let locked = store.lock().expect("lock");
        locked
            .deploy(&self.spec, &pair.fullchain, &pair.privkey)
            .expect("deploy")
    }

    /// The live pair, read through the configured paths.
    fn live(&self) -> Pair {
        Pair {
            fullchain: fs::read(&self.spec.fullchain).expect("read live fullchain"),
            privkey: fs::read(&self.spec.privkey).expect("read live privkey"),
        }
    }

    /// Asserts the live pair is `pair`, whole, and that the live manifest describes it.
    fn assert_live(&self, pair: &Pair) {
        let live = self.live();
        assert_eq!(
            sha256_hex(&live.fullchain),
            sha256_hex(&pair.fullchain),
            "live fullchain"
        );
        assert_eq!(
            sha256_hex(&live.privkey),
            sha256_hex(&pair.privkey),
            "live privkey"
        );
        let m = manifest::read_live(&self.spec.name, &self.spec.fullchain)
            .expect("read manifest")
            .expect("manifest");
        assert_eq!(m.files.fullchain, sha256_hex(&pair.fullchain));
        assert_eq!(m.files.privkey, sha256_hex(&pair.privkey));
        assert_eq!(m.fingerprint, pair.fingerprint());
    }
}

#[test]
fn deploy_writes_a_whole_pair_with_its_manifest() {
    let fx = Fixture::new();
    let pool = Pool::new(2);
    let first = fx.deploy(&pool.pairs[0]);
    assert!(first.snapshot.is_none(), "nothing was live before");
    fx.assert_live(&pool.pairs[0]);
    assert_eq!(
        util::mode(&fx.state()),
        0o711,
        "state_dir mode: entered by all, listed by none"
    );
    assert_eq!(util::mode(&fx.spec.privkey), 0o600, "default key mode");
    assert_eq!(util::mode(&fx.spec.fullchain), 0o644);
    let leaf = manifest::leaf_identity(&pool.pairs[0].fullchain).expect("leaf");
    assert_eq!(first.manifest.not_after, leaf.not_after);
    time::OffsetDateTime::parse(
        &first.manifest.created,
        &time::format_description::well_known::Rfc3339,
    )
    .expect("created is RFC 3339");

    let old_key_inode = fs::metadata(&fx.spec.privkey).expect("meta").ino();
    let second = fx.deploy(&pool.pairs[1]);
    fx.assert_live(&pool.pairs[1]);
    let snap = second.snapshot.expect("the replaced pair is kept");
    assert!(snap.linked && snap.verified, "{snap:?}");
    assert_eq!(
        snap.fingerprint.as_deref(),
        Some(pool.pairs[0].fingerprint().as_str())
    );
    let snap_key = fx
        .state()
        .join("snapshots/www")
        .join(&snap.id)
        .join("privkey.pem");
    assert_eq!(
        fs::metadata(&snap_key).expect("meta").ino(),
        old_key_inode,
        "a hard link, not a copy"
    );

    // Only the documented names are left beside the live files.
    assert_eq!(
        certkeeper_entries(&fx.live_dir()),
        [
            ".certkeeper-www.gen-000001",
            ".certkeeper-www.gen-000002",
            ".certkeeper-www.live",
            ".certkeeper-www.manifest.json"
        ]
    );
}

/// Several certificates staged and committed together (their fsyncs batched) end as each
/// would alone: every pair live and whole, the replaced ones kept as snapshots, no stage
/// left open.
#[test]
fn pairs_staged_and_committed_together_are_each_whole() {
    let root = tempfile::tempdir().expect("tempdir");
    let specs: Vec<PairSpec> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            let live = root.path().join("live").join(n);
            fs::create_dir_all(&live).expect("live dir");
            PairSpec::new(*n, live.join("fullchain.pem"), live.join("privkey.pem"))
        })
        .collect();
    let pool = Pool::new(6);
    let store = Store::open(root.path().join("state")).expect("store");
    let locked = store.lock().expect("lock");
    for round in [0, 3] {
        let pairs: Vec<(&PairSpec, &[u8], &[u8])> = specs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let p = &pool.pairs[round + i];
                (s, p.fullchain.as_slice(), p.privkey.as_slice())
            })
            .collect();
        let staged: Vec<_> = locked
            .stage_all(&pairs)
            .into_iter()
            .map(|s| s.expect("staged"))
            .collect();
        let done = locked.commit_all(specs.iter().zip(staged).collect());
        for (i, (spec, d)) in specs.iter().zip(done).enumerate() {
            let d = d.expect("committed");
            assert_eq!(d.snapshot.is_some(), round > 0, "{}", spec.name);
            assert_eq!(
                fs::read(&spec.fullchain).unwrap(),
                pool.pairs[round + i].fullchain
            );
            assert_eq!(
                fs::read(&spec.privkey).unwrap(),
                pool.pairs[round + i].privkey
            );
        }
    }
    let journals = root.path().join("state/journal");
    assert_eq!(fs::read_dir(&journals).expect("journals").count(), 0);
}

#[test]
fn snapshots_list_newest_first_in_the_documented_json_shape() {
    let fx = Fixture::new();
    let pool = Pool::new(3);
    for p in &pool.pairs {
        fx.deploy(p);
    }
    let list = fx.store().snapshots(&fx.spec).expect("list");
    let ids: Vec<&str> = list.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["000002", "000001"]);
    let json = serde_json::to_value(&list).expect("json");
    let first = json[0].as_object().expect("object");
    let mut keys: Vec<&str> = first.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "created",
            "files",
            "fingerprint",
            "id",
            "linked",
            "not_after",
            "verified"
        ]
    );
    assert_eq!(json[0]["fingerprint"], pool.pairs[1].fingerprint());
    assert_eq!(
        json[0]["files"]["privkey"],
        sha256_hex(&pool.pairs[1].privkey)
    );
    assert_eq!(json[0]["verified"], true);
    assert_eq!(json[0]["linked"], true);
}

#[test]
fn keep_snapshots_prunes_oldest_first() {
    let mut fx = Fixture::new();
    fx.spec.keep_snapshots = 2;
    let pool = Pool::new(5);
    let mut pruned = Vec::new();
    for p in &pool.pairs {
        pruned.extend(fx.deploy(p).pruned);
    }
    assert_eq!(pruned, ["000001", "000002"]);
    let list = fx.store().snapshots(&fx.spec).expect("list");
    let fps: Vec<String> = list.iter().filter_map(|s| s.fingerprint.clone()).collect();
    assert_eq!(
        fps,
        [pool.pairs[3].fingerprint(), pool.pairs[2].fingerprint()]
    );
}

#[test]
fn plain_files_are_adopted_and_kept_as_a_snapshot() {
    let fx = Fixture::new();
    let pool = Pool::new(2);
    fs::write(&fx.spec.fullchain, &pool.pairs[0].fullchain).expect("write");
    fs::write(&fx.spec.privkey, &pool.pairs[0].privkey).expect("write");
    let deployed = fx.deploy(&pool.pairs[1]);
    fx.assert_live(&pool.pairs[1]);
    let snap = deployed.snapshot.expect("the plain files are kept");
    assert!(snap.verified);
    assert_eq!(
        snap.fingerprint.as_deref(),
        Some(pool.pairs[0].fingerprint().as_str())
    );
    let locked_store = fx.store();
    let locked = locked_store.lock().expect("lock");
    let back = locked
        .rollback(&fx.spec, None)
        .expect("rollback to the adopted pair");
    assert_eq!(back.restored.id, snap.id);
    drop(locked);
    fx.assert_live(&pool.pairs[0]);
}

#[test]
fn key_mode_owner_and_group_are_honoured_and_kept_across_renewals() {
    let mut fx = Fixture::new();
    fx.spec.mode = Some(0o640);
    fx.spec.owner = Some(4243);
    fx.spec.group = Some(4242);
    let pool = Pool::new(3);
    fx.deploy(&pool.pairs[0]);
    let meta = fs::metadata(&fx.spec.privkey).expect("meta");
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o640, 4243, 4242)
    );

    // Without owner/group in the spec, a renewal keeps what the live key has, even when
    // an operator changed it by hand.
    fx.spec.owner = None;
    fx.spec.group = None;
    std::os::unix::fs::chown(&fx.spec.privkey, Some(1234), Some(5678)).expect("chown");
    fx.deploy(&pool.pairs[1]);
    let meta = fs::metadata(&fx.spec.privkey).expect("meta");
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o640, 1234, 5678)
    );

    // A rollback applies them to the restored key too.
    let store = fx.store();
    store
        .lock()
        .expect("lock")
        .rollback(&fx.spec, None)
        .expect("rollback");
    let meta = fs::metadata(&fx.spec.privkey).expect("meta");
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o640, 1234, 5678)
    );
    fx.assert_live(&pool.pairs[0]);
}

#[test]
fn rollback_default_and_to_and_rollback_of_a_rollback() {
    let fx = Fixture::new();
    let pool = Pool::new(3);
    for p in &pool.pairs {
        fx.deploy(p);
    }
    // Live: 2; snapshots: 1 (000002), 0 (000001).
    let store = fx.store();
    let locked = store.lock().expect("lock");
    let back = locked.rollback(&fx.spec, None).expect("default rollback");
    assert_eq!(
        back.restored.fingerprint.as_deref(),
        Some(pool.pairs[1].fingerprint().as_str())
    );
    assert_eq!(
        back.manifest.fingerprint,
        pool.pairs[1].fingerprint(),
        "the caller verifies against this leaf"
    );
    fx.assert_live(&pool.pairs[1]);
    let replaced = back.replaced.expect("the replaced pair is kept");
    assert_eq!(
        replaced.fingerprint.as_deref(),
        Some(pool.pairs[2].fingerprint().as_str())
    );

    // Rolling back the rollback brings the newer pair back.
    let again = locked.rollback(&fx.spec, None).expect("undo the rollback");
    assert_eq!(again.restored.id, replaced.id);
    fx.assert_live(&pool.pairs[2]);

    // --to picks any verified snapshot, here the oldest.
    let oldest = fx
        .store()
        .snapshots(&fx.spec)
        .expect("list")
        .last()
        .expect("one")
        .clone();
    assert_eq!(
        oldest.fingerprint.as_deref(),
        Some(pool.pairs[0].fingerprint().as_str())
    );
    locked
        .rollback(&fx.spec, Some(&oldest.id))
        .expect("rollback --to");
    fx.assert_live(&pool.pairs[0]);

    let err = locked
        .rollback(&fx.spec, Some("999999"))
        .expect_err("unknown id");
    assert!(matches!(err, Error::SnapshotNotFound { .. }), "{err}");
    assert_eq!(
        certkeeper_entries(&fx.live_dir()).len(),
        4,
        "live, manifest and two generations"
    );
}

/// Fingerprints of a certificate's snapshots, newest first.
fn snapshot_fingerprints(fx: &Fixture) -> Vec<String> {
    fx.store()
        .snapshots(&fx.spec)
        .expect("list")
        .into_iter()
        .filter_map(|s| s.fingerprint)
        .collect()
}

/// Generation directories beside the live files other than the live one.
fn old_generations(fx: &Fixture) -> Vec<PathBuf> {
    let live = fs::read_link(fx.live_dir().join(".certkeeper-www.live")).expect("live link");
    certkeeper_entries(&fx.live_dir())
        .into_iter()
        .filter(|n| n.starts_with(".certkeeper-www.gen-") && Path::new(n) != live)
        .map(|n| fx.live_dir().join(n))
        .collect()
}

#[test]
fn a_staged_pair_is_live_until_reverted_and_leaves_no_trace() {
    let fx = Fixture::new();
    let pool = Pool::new(3);
    fx.deploy(&pool.pairs[0]);
    fx.deploy(&pool.pairs[1]);
    let store = fx.store();
    let locked = store.lock().expect("lock");
    let staged = locked
        .stage(&fx.spec, &pool.pairs[2].fullchain, &pool.pairs[2].privkey)
        .expect("stage");
    // Staged means live: readers and the service see the new pair while it is verified.
    fx.assert_live(&pool.pairs[2]);
    assert!(fx.state().join("journal/www.json").exists());
    assert_eq!(
        staged.previous.as_ref().map(|m| m.fingerprint.clone()),
        Some(pool.pairs[1].fingerprint())
    );

    let reverted = locked.revert(&fx.spec, &staged).expect("revert");
    assert!(reverted.restored && reverted.from_snapshot.is_none());
    fx.assert_live(&pool.pairs[1]);
    assert!(!fx.state().join("journal/www.json").exists());
    // No snapshot of the refused pair, and the one taken of the restored pair is gone again.
    assert_eq!(snapshot_fingerprints(&fx), [pool.pairs[0].fingerprint()]);
    assert_eq!(old_generations(&fx).len(), 1, "only the generation before");
    // A default rollback goes to the pair before, never the refused one.
    let back = locked.rollback(&fx.spec, None).expect("rollback");
    assert_eq!(back.manifest.fingerprint, pool.pairs[0].fingerprint());
}

#[test]
fn a_revert_uses_the_snapshot_when_the_old_generation_is_gone_and_fails_loudly_without_it() {
    let fx = Fixture::new();
    let pool = Pool::new(2);
    fx.deploy(&pool.pairs[0]);
    let store = fx.store();
    let locked = store.lock().expect("lock");
    let staged = locked
        .stage(&fx.spec, &pool.pairs[1].fullchain, &pool.pairs[1].privkey)
        .expect("stage");
    for g in old_generations(&fx) {
        fs::remove_dir_all(g).expect("remove the old generation");
    }
    let reverted = locked.revert(&fx.spec, &staged).expect("revert");
    assert_eq!(reverted.from_snapshot.as_deref(), Some("000001"));
    fx.assert_live(&pool.pairs[0]);

    // Neither the generation nor the snapshot left: the staged pair stays live, whole, and
    // the stage is closed so that later passes are not blocked.
    let staged = locked
        .stage(&fx.spec, &pool.pairs[1].fullchain, &pool.pairs[1].privkey)
        .expect("stage");
    for g in old_generations(&fx) {
        fs::remove_dir_all(g).expect("remove the old generation");
    }
    fs::remove_dir_all(fx.state().join("snapshots/www")).expect("remove snapshots");
    match locked.revert(&fx.spec, &staged) {
        Err(Error::RevertImpossible { name, reason }) => {
            assert_eq!(name, "www");
            assert!(reason.contains("no intact snapshot"), "{reason}");
        }
        other => panic!("expected RevertImpossible, got {other:?}"),
    }
    fx.assert_live(&pool.pairs[1]);
    assert!(!fx.state().join("journal/www.json").exists());
    locked
        .deploy(&fx.spec, &pool.pairs[0].fullchain, &pool.pairs[0].privkey)
        .expect("a later deploy");
}

#[test]
fn recovery_reverts_a_stage_that_was_never_decided() {
    let fx = Fixture::new();
    let pool = Pool::new(2);
    fx.deploy(&pool.pairs[0]);
    {
        let store = fx.store();
        let locked = store.lock().expect("lock");
        // The process dies between stage and commit: nothing decides.
        let _abandoned = locked
            .stage(&fx.spec, &pool.pairs[1].fullchain, &pool.pairs[1].privkey)
            .expect("stage");
    }
    fx.assert_live(&pool.pairs[1]);
    let store = fx.store();
    let locked = store.lock().expect("lock");
    let recovered = locked.recover(&fx.spec).expect("recover");
    assert!(
        recovered
            .undone
            .as_deref()
            .is_some_and(|u| u.contains("the previous pair is live again")),
        "{recovered:?}"
    );
    fx.assert_live(&pool.pairs[0]);
    assert!(snapshot_fingerprints(&fx).is_empty());
    assert!(locked.recover(&fx.spec).expect("again").is_clean());

    // An undecided first deploy is undone to nothing, as it was.
    let fx = Fixture::new();
    {
        let store = fx.store();
        let locked = store.lock().expect("lock");
        let _abandoned = locked
            .stage(&fx.spec, &pool.pairs[1].fullchain, &pool.pairs[1].privkey)
            .expect("stage");
    }
    let store = fx.store();
    let locked = store.lock().expect("lock");
    locked.recover(&fx.spec).expect("recover");
    assert!(!fx.spec.fullchain.exists() && !fx.spec.privkey.exists());
    assert!(certkeeper_entries(&fx.live_dir()).is_empty());
}

#[test]
fn a_corrupt_snapshot_is_refused_and_the_default_skips_to_an_older_good_one() {
    let fx = Fixture::new();
    let pool = Pool::new(4);
    for p in &pool.pairs {
        fx.deploy(p);
    }
    // Live: 3; snapshots newest first: 2, 1, 0. Corrupt the snapshot of pair 2 in place.
    let store = fx.store();
    let list = store.snapshots(&fx.spec).expect("list");
    let bad = &list[0];
    assert_eq!(
        bad.fingerprint.as_deref(),
        Some(pool.pairs[2].fingerprint().as_str())
    );
    let bad_key = fx
        .state()
        .join("snapshots/www")
        .join(&bad.id)
        .join("privkey.pem");
    fs::OpenOptions::new()
        .append(true)
        .open(&bad_key)
        .expect("open")
        .set_len(10)
        .expect("truncate");
    let list = store.snapshots(&fx.spec).expect("list");
    assert!(
        !list[0].verified && list[1].verified && list[2].verified,
        "{list:?}"
    );

    let locked = store.lock().expect("lock");
    let err = locked
        .rollback(&fx.spec, Some(&bad.id))
        .expect_err("corrupt snapshot refused");
    assert!(
        matches!(&err, Error::SnapshotCorrupt { id, .. } if id == &bad.id),
        "{err}"
    );
    fx.assert_live(&pool.pairs[3]);

    let back = locked
        .rollback(&fx.spec, None)
        .expect("default skips the corrupt one");
    assert_eq!(
        back.restored.fingerprint.as_deref(),
        Some(pool.pairs[1].fingerprint().as_str())
    );
    fx.assert_live(&pool.pairs[1]);
}

#[test]
fn a_damaged_live_manifest_does_not_block_the_next_deploy() {
    let fx = Fixture::new();
    let pool = Pool::new(2);
    fx.deploy(&pool.pairs[0]);
    let manifest = fx
        .live_dir()
        .join(".certkeeper-www.gen-000001/manifest.json");
    fs::write(&manifest, b"{ not json").expect("damage");
    let deployed = fx.deploy(&pool.pairs[1]);
    fx.assert_live(&pool.pairs[1]);
    let snap = deployed.snapshot.expect("the replaced pair is kept");
    assert!(snap.verified);
    assert_eq!(
        snap.fingerprint.as_deref(),
        Some(pool.pairs[0].fingerprint().as_str())
    );
}

#[test]
fn rollback_fails_loudly_when_no_snapshot_qualifies() {
    let fx = Fixture::new();
    let pool = Pool::new(1);
    let store = fx.store();
    let locked = store.lock().expect("lock");
    let err = locked
        .rollback(&fx.spec, None)
        .expect_err("nothing to restore");
    assert!(matches!(err, Error::NoRollbackTarget { .. }), "{err}");
    drop(locked);
    // The same leaf deployed twice: the only snapshot has the live leaf.
    fx.deploy(&pool.pairs[0]);
    fx.deploy(&pool.pairs[0]);
    let locked = store.lock().expect("lock");
    let err = locked
        .rollback(&fx.spec, None)
        .expect_err("only the live leaf");
    assert!(matches!(err, Error::NoRollbackTarget { .. }), "{err}");
    fx.assert_live(&pool.pairs[0]);
}

#[test]
fn recovery_removes_leftovers_and_undoes_an_unfinished_first_deploy() {
    let fx = Fixture::new();
    let pool = Pool::new(2);
    let live = fx.live_dir();
    // An unfinished first deploy: a generation and dangling links, but no `.live` yet.
    fs::create_dir(live.join(".certkeeper-www.gen-000001")).expect("gen");
    fs::write(
        live.join(".certkeeper-www.gen-000001/fullchain.pem"),
        b"partial",
    )
    .expect("partial");
    std::os::unix::fs::symlink(".certkeeper-www.live/fullchain.pem", &fx.spec.fullchain)
        .expect("link");
    std::os::unix::fs::symlink("nowhere", live.join(".certkeeper-www.tmp-1f-0-2a")).expect("tmp");
    fs::create_dir_all(fx.state().join("snapshots/www/.tmp-000001-1f-0-2a")).expect("tmp snapshot");
    // Another certificate's files are not touched.
    fs::write(live.join(".certkeeper-other.gen-000001"), b"x").expect("other");

    let store = fx.store();
    let recovered = store
        .lock()
        .expect("lock")
        .recover(&fx.spec)
        .expect("recover");
    assert_eq!(recovered.removed.len(), 4, "{recovered:?}");
    assert!(
        fs::symlink_metadata(&fx.spec.fullchain).is_err(),
        "dangling link removed"
    );
    assert_eq!(certkeeper_entries(&live), [".certkeeper-other.gen-000001"]);
    assert!(
        store
            .lock()
            .expect("lock")
            .recover(&fx.spec)
            .expect("again")
            .is_clean()
    );

    // After a deploy, a generation above the live one (never committed) is removed.
    fx.deploy(&pool.pairs[0]);
    fs::create_dir(live.join(".certkeeper-www.gen-000007")).expect("gen");
    fx.deploy(&pool.pairs[1]);
    fx.assert_live(&pool.pairs[1]);
    assert!(!live.join(".certkeeper-www.gen-000007").exists());
}

#[test]
fn symlinks_planted_at_snapshot_and_generation_paths_are_never_followed() {
    let fx = Fixture::new();
    let pool = Pool::new(2);
    fx.deploy(&pool.pairs[0]);
    let victim = fx.root.path().join("victim");
    fs::create_dir(&victim).expect("victim");
    fs::write(victim.join("keep"), b"precious").expect("victim file");
    let store = fx.store();

    // The certificate's snapshot directory replaced by a link: the deploy is refused.
    let snaps = fx.state().join("snapshots/www");
    fs::create_dir_all(fx.state().join("snapshots")).expect("snapshots dir");
    std::os::unix::fs::symlink(&victim, &snaps).expect("plant");
    // Refused when the lock is taken, before anything is written, naming the link.
    let err = store
        .lock()
        .and_then(|l| l.deploy(&fx.spec, &pool.pairs[1].fullchain, &pool.pairs[1].privkey));
    let err = err.expect_err("must refuse");
    assert!(
        matches!(&err, Error::LinkedDir { path, .. } if path == &snaps),
        "{err}"
    );
    fx.assert_live(&pool.pairs[0]);
    assert_eq!(
        certkeeper_entries(&fx.live_dir()).len(),
        3,
        "no new generation left"
    );
    fs::remove_file(&snaps).expect("unplant");

    // A link at the next generation's name is a leftover to recovery: it is unlinked,
    // never followed, and the deploy goes on in a directory of its own.
    let next_gen = fx.live_dir().join(".certkeeper-www.gen-000002");
    std::os::unix::fs::symlink(&victim, &next_gen).expect("plant");
    fx.deploy(&pool.pairs[1]);
    fx.assert_live(&pool.pairs[1]);
    assert!(
        !fs::symlink_metadata(&next_gen)
            .expect("gen 2")
            .file_type()
            .is_symlink()
    );

    let entries: Vec<_> = fs::read_dir(&victim)
        .expect("list")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert_eq!(entries, ["keep"], "nothing written through a planted link");
    assert_eq!(fs::read(victim.join("keep")).expect("read"), b"precious");
}

#[test]
fn snapshots_on_another_file_system_are_fsynced_copies() {
    let fx = Fixture::new();
    let pool = Pool::new(3);
    let mnt = fx.root.path().join("other-fs");
    let Some(tmpfs) = Tmpfs::mount(&mnt, "4m") else {
        panic!("this test mounts a tmpfs and must run as root");
    };
    let spec = PairSpec::new(
        "www",
        tmpfs.path.join("fullchain.pem"),
        tmpfs.path.join("privkey.pem"),
    );
    let store = fx.store();
    let locked = store.lock().expect("lock");
    for p in &pool.pairs {
        locked
            .deploy(&spec, &p.fullchain, &p.privkey)
            .expect("deploy");
    }
    let list = store.snapshots(&spec).expect("list");
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|s| !s.linked && s.verified), "{list:?}");
    let back = locked
        .rollback(&spec, None)
        .expect("rollback across file systems");
    assert_eq!(back.manifest.fingerprint, pool.pairs[1].fingerprint());
    assert_eq!(
        fs::read(&spec.privkey).expect("read"),
        pool.pairs[1].privkey
    );
    assert_eq!(util::mode(&spec.privkey), 0o600);
    drop(locked);
}

#[test]
fn disk_full_leaves_the_old_pair_and_no_partial_files() {
    let fx = Fixture::new();
    let pool = Pool::new(2);
    let mnt = fx.root.path().join("small-fs");
    let Some(tmpfs) = Tmpfs::mount(&mnt, "256k") else {
        panic!("this test mounts a tmpfs and must run as root");
    };
    let spec = PairSpec::new(
        "www",
        tmpfs.path.join("fullchain.pem"),
        tmpfs.path.join("privkey.pem"),
    );
    let store = fx.store();
    let locked = store.lock().expect("lock");
    locked
        .deploy(&spec, &pool.pairs[0].fullchain, &pool.pairs[0].privkey)
        .expect("first deploy fits");
    let before = certkeeper_entries(&tmpfs.path);

    let big = pool.pairs[1].padded(512 * 1024);
    let err = locked
        .deploy(&spec, &big.fullchain, &big.privkey)
        .expect_err("disk full");
    let os = err.io_error().map(std::io::Error::kind);
    assert_eq!(os, Some(std::io::ErrorKind::StorageFull), "{err}");
    assert!(err.to_string().starts_with("writing "), "{err}");
    assert_eq!(
        fs::read(&spec.fullchain).expect("read"),
        pool.pairs[0].fullchain
    );
    assert_eq!(
        fs::read(&spec.privkey).expect("read"),
        pool.pairs[0].privkey
    );
    assert_eq!(certkeeper_entries(&tmpfs.path), before, "no partial files");
    assert!(
        store.snapshots(&spec).expect("list").is_empty(),
        "no snapshot of an unchanged pair"
    );
}

#[test]
fn file_size_limit_leaves_the_old_pair_and_no_partial_files() {
    if let Ok(dir) = std::env::var("CERTKEEPER_TEST_EFBIG_CHILD") {
        // Child: RLIMIT_FSIZE is set and SIGXFSZ ignored by the shell that started us.
        let dir = PathBuf::from(dir);
        let spec = PairSpec::new(
            "www",
            dir.join("live/fullchain.pem"),
            dir.join("live/privkey.pem"),
        );
        let big = Pair::read_from(&dir, "big");
        let store = Store::open(dir.join("state")).expect("open");
        let err = store
            .lock()
            .expect("lock")
            .deploy(&spec, &big.fullchain, &big.privkey)
            .expect_err("EFBIG");
        println!("error-kind={:?}", err.io_error().map(std::io::Error::kind));
        println!("error={err}");
        return;
    }
    let fx = Fixture::new();
    let pool = Pool::new(2);
    fx.deploy(&pool.pairs[0]);
    pool.pairs[1]
        .padded(256 * 1024)
        .write_to(fx.root.path(), "big");
    let before = certkeeper_entries(&fx.live_dir());
    let exe = std::env::current_exe().expect("exe");
    // 64 blocks of 512 bytes (dash) or 1024 (bash): far below the 256 KiB fullchain.
    let out = std::process::Command::new("sh")
        .args(["-c", "trap '' XFSZ; ulimit -f 64 && exec \"$@\"", "sh"])
        .arg(exe)
        .args([
            "--exact",
            "store::file_size_limit_leaves_the_old_pair_and_no_partial_files",
            "--nocapture",
        ])
        .env("CERTKEEPER_TEST_EFBIG_CHILD", fx.root.path())
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("error-kind=Some(FileTooLarge)"), "{stdout}");
    fx.assert_live(&pool.pairs[0]);
    assert_eq!(
        certkeeper_entries(&fx.live_dir()),
        before,
        "no partial files"
    );
    assert!(fx.store().snapshots(&fx.spec).expect("list").is_empty());
}

#[test]
fn permission_denied_leaves_the_old_pair_and_no_partial_files() {
    if let Ok(dir) = std::env::var("CERTKEEPER_TEST_EACCES_CHILD") {
        // Child, running as nobody: the live directory belongs to root.
        let dir = PathBuf::from(dir);
        let spec = PairSpec::new(
            "www",
            dir.join("live/fullchain.pem"),
            dir.join("live/privkey.pem"),
        );
        let pair = Pair::read_from(&dir, "new");
        let store = Store::open(dir.join("state-nobody")).expect("open");
        let err = store
            .lock()
            .expect("lock")
            .deploy(&spec, &pair.fullchain, &pair.privkey)
            .expect_err("EACCES");
        println!("error-kind={:?}", err.io_error().map(std::io::Error::kind));
        println!("error={err}");
        return;
    }
    let fx = Fixture::new();
    let pool = Pool::new(2);
    fx.deploy(&pool.pairs[0]);
    pool.pairs[1].write_to(fx.root.path(), "new");
    let nobody = 65534;
    std::os::unix::fs::chown(fx.root.path().join("new.key"), Some(nobody), None).expect("chown");
    let state = fx.root.path().join("state-nobody");
    fs::create_dir(&state).expect("state");
    std::os::unix::fs::chown(&state, Some(nobody), Some(nobody)).expect("chown");
    let mut perms = fs::metadata(fx.root.path()).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    fs::set_permissions(fx.root.path(), perms).expect("chmod");
    let before = certkeeper_entries(&fx.live_dir());

    let exe = std::env::current_exe().expect("exe");
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(exe)
        .args([
            "--exact",
            "store::permission_denied_leaves_the_old_pair_and_no_partial_files",
            "--nocapture",
        ])
        .env("CERTKEEPER_TEST_EACCES_CHILD", fx.root.path())
        .output()
        .expect("run setpriv (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("error-kind=Some(PermissionDenied)"),
        "{stdout}"
    );
    fx.assert_live(&pool.pairs[0]);
    assert_eq!(
        certkeeper_entries(&fx.live_dir()),
        before,
        "no partial files"
    );
}

#[test]
fn a_second_writer_waits_for_the_lock() {
    let fx = Fixture::new();
    let store = fx.store();
    let held = store.lock().expect("lock");
    let other = fx.store();
    assert!(matches!(other.try_lock(), Err(Error::Locked { .. })));
    drop(held);
    other.try_lock().expect("free again");
}

/// What the reader threads of [`readers_never_see_a_mismatched_pair`] counted.
#[derive(Default)]
struct ReadCounts {
    reads: AtomicU64,
    /// Path reads during which `.live` did not change, and mismatches among them.
    stable: AtomicU64,
    stable_mismatches: AtomicU64,
    /// Path reads across a switch, and mismatches or missing files among them.
    straddled: AtomicU64,
    straddled_mismatches: AtomicU64,
    straddled_errors: AtomicU64,
    /// Errors or mismatches where the guarantee says there are none.
    violations: AtomicU64,
    /// Reads through one handle on the live generation directory, and their mismatches.
    dir_reads: AtomicU64,
    dir_mismatches: AtomicU64,
    dir_gone: AtomicU64,
}

#[test]
fn readers_never_see_a_mismatched_pair() {
    let fx = Fixture::new();
    let pool = Arc::new(Pool::new(4));
    fx.deploy(&pool.pairs[0]);
    let swaps = env_number("CERTKEEPER_READER_SWAPS", 2000);
    let done = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(ReadCounts::default());
    let live_link = fx.live_dir().join(".certkeeper-www.live");

    // Reader 1 opens the two configured paths one after the other, as a service does, and
    // reads `.live` before and after. The guarantee: when `.live` did not change, the pair
    // matches; a mismatch can only happen across a switch.
    let path_reader = {
        let (pool, done, counts, spec, link) = (
            pool.clone(),
            done.clone(),
            counts.clone(),
            fx.spec.clone(),
            live_link.clone(),
        );
        std::thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                let before = fs::read_link(&link).expect("read .live");
                let chain = fs::read(&spec.fullchain);
                let key = fs::read(&spec.privkey);
                let after = fs::read_link(&link).expect("read .live");
                let matched = match (&chain, &key) {
                    (Ok(c), Ok(k)) => {
                        Some(pool.which(c).is_some() && pool.which(c) == pool.which(k))
                    }
                    _ => None,
                };
                if before == after {
                    counts.stable.fetch_add(1, Ordering::Relaxed);
                    if matched != Some(true) {
                        counts.stable_mismatches.fetch_add(1, Ordering::Relaxed);
                        counts.violations.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    counts.straddled.fetch_add(1, Ordering::Relaxed);
                    match matched {
                        Some(true) => {}
                        Some(false) => {
                            counts.straddled_mismatches.fetch_add(1, Ordering::Relaxed);
                        }
                        None => {
                            counts.straddled_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                counts.reads.fetch_add(1, Ordering::Release);
            }
        })
    };

    // Reader 2 opens the live generation directory once and both files relative to it:
    // it never sees a mismatch, whatever happens meanwhile (a generation is gone only
    // after two more switches, and then both opens fail alike).
    let dir_reader = {
        let (pool, done, counts, link) = (
            pool.clone(),
            done.clone(),
            counts.clone(),
            live_link.clone(),
        );
        std::thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                let dir = fs::File::open(&link).expect("open live generation");
                let read = |name: &str| -> std::io::Result<Vec<u8>> {
                    let fd = rustix::fs::openat(
                        &dir,
                        name,
                        rustix::fs::OFlags::RDONLY,
                        rustix::fs::Mode::empty(),
                    )?;
                    let mut bytes = Vec::new();
                    fs::File::from(fd).read_to_end(&mut bytes)?;
                    Ok(bytes)
                };
                match (read("fullchain.pem"), read("privkey.pem")) {
                    (Ok(c), Ok(k)) => {
                        if pool.which(&c).is_none() || pool.which(&c) != pool.which(&k) {
                            counts.dir_mismatches.fetch_add(1, Ordering::Relaxed);
                            counts.violations.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    (Err(_), Err(_)) => {
                        counts.dir_gone.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        counts.violations.fetch_add(1, Ordering::Relaxed);
                    }
                }
                counts.dir_reads.fetch_add(1, Ordering::Release);
            }
        })
    };

    let store = fx.store();
    let locked = store.lock().expect("lock");
    let mut spec = fx.spec.clone();
    spec.keep_snapshots = 2;
    for i in 1..=swaps {
        // Let each reader finish at least one read between two switches, so that reads
        // and switches interleave however the threads are scheduled.
        let (seen, dir_seen) = (
            counts.reads.load(Ordering::Acquire),
            counts.dir_reads.load(Ordering::Acquire),
        );
        while counts.reads.load(Ordering::Acquire) == seen
            || counts.dir_reads.load(Ordering::Acquire) == dir_seen
        {
            std::thread::yield_now();
        }
        let p = &pool.pairs[(i % 4) as usize];
        locked
            .deploy(&spec, &p.fullchain, &p.privkey)
            .expect("deploy");
    }
    done.store(true, Ordering::Release);
    path_reader.join().expect("path reader");
    dir_reader.join().expect("dir reader");

    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    println!(
        "swaps={swaps} path_reads={} stable={} stable_mismatches={} straddled={} straddled_mismatches={} \
         straddled_errors={} dir_reads={} dir_mismatches={} dir_gone={}",
        get(&counts.reads),
        get(&counts.stable),
        get(&counts.stable_mismatches),
        get(&counts.straddled),
        get(&counts.straddled_mismatches),
        get(&counts.straddled_errors),
        get(&counts.dir_reads),
        get(&counts.dir_mismatches),
        get(&counts.dir_gone),
    );
    assert_eq!(
        get(&counts.violations),
        0,
        "a reader saw a mismatched pair where none is allowed"
    );
    assert!(get(&counts.reads) >= swaps && get(&counts.dir_reads) >= swaps);
}

/// What the crash harness's child runs, and how the parent tells its runs apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Harness {
    /// `Locked::deploy` in a loop: stage and commit at once.
    Swaps,
    /// The whole deploy pipeline in a loop: stage, reload (a real command), verify (a
    /// health command that refuses pool pair [`REJECTED`]), then commit, or revert, reload
    /// and verify again.
    Pipeline,
}

impl Harness {
    fn test(self) -> &'static str {
        match self {
            Harness::Swaps => "store::crash_harness_kill_9_during_swaps",
            Harness::Pipeline => "store::crash_harness_kill_9_during_the_deploy_pipeline",
        }
    }
}

/// The pool pair the pipeline harness's verification always refuses.
const REJECTED: usize = 4;
/// Environment variable naming the harness directory in a child.
const CRASH_CHILD: &str = "CERTKEEPER_CRASH_CHILD";

/// The crash harness. A child process (this test, re-executed) deploys pairs from a pool in
/// a loop; the parent SIGKILLs it at a random moment, recovers, and checks: the live pair
/// is whole (both files from one pool pair, key matching the leaf, manifest matching) and is
/// either the pair live before the deploy in flight or that deploy's pair, every snapshot
/// verifies, no stage is left open, and nothing but the documented names remains. Every
/// tenth round starts from an empty directory and every tenth from plain files, so that the
/// first placement and the adoption are interrupted too. `CERTKEEPER_CRASH_KILLS` sets the
/// number of kills (default 200), `CERTKEEPER_CRASH_SEED` the seed and
/// `CERTKEEPER_CRASH_MAX_DELAY_US` the longest wait before a kill.
#[test]
fn crash_harness_kill_9_during_swaps() {
    if let Ok(root) = std::env::var(CRASH_CHILD) {
        crash_child(Path::new(&root), Harness::Swaps);
        return;
    }
    crash_harness(
        Harness::Swaps,
        env_number("CERTKEEPER_CRASH_KILLS", 200),
        env_number("CERTKEEPER_CRASH_MAX_DELAY_US", 100_000),
    );
}

/// The crash harness over the whole deploy pipeline: kills land while a pair is staged,
/// while the reload or the verification runs, and while a refused pair is reverted. On top
/// of the checks above, the refused pair ([`REJECTED`]) is never live after recovery and
/// never in a snapshot. `CERTKEEPER_PIPELINE_CRASH_KILLS` sets the number of kills (default
/// 60), `CERTKEEPER_CRASH_SEED` the seed.
#[test]
fn crash_harness_kill_9_during_the_deploy_pipeline() {
    if let Ok(root) = std::env::var(CRASH_CHILD) {
        crash_child(Path::new(&root), Harness::Pipeline);
        return;
    }
    crash_harness(
        Harness::Pipeline,
        env_number("CERTKEEPER_PIPELINE_CRASH_KILLS", 60),
        env_number("CERTKEEPER_CRASH_MAX_DELAY_US", 600_000),
    );
}

fn crash_harness(harness: Harness, kills: u64, max_delay: u64) {
    let seed = env_number("CERTKEEPER_CRASH_SEED", 0x5eed_cafe);
    let mut rng = Rng::new(seed);
    let root = tempfile::tempdir().expect("tempdir");
    let pool = Pool::new(6);
    pool.save(&root.path().join("pool"));
    let spec = crash_spec(root.path());
    let store = Store::open(root.path().join("state")).expect("store");
    let log = root.path().join("child.log");
    let rejected_fingerprint = pool.pairs[REJECTED].fingerprint();

    let (mut mismatches, mut leaks, mut bad_snapshots, mut progressed, mut empty) = (0, 0, 0, 0, 0);
    let mut problems: Vec<String> = Vec::new();
    for round in 0..kills {
        let live_dir = root.path().join("live");
        if round % 10 == 3 || round % 10 == 7 {
            let _ = fs::remove_dir_all(&live_dir);
            let _ = fs::remove_dir_all(root.path().join("haproxy"));
            let _ = fs::remove_dir_all(root.path().join("state/snapshots"));
            fs::create_dir_all(&live_dir).expect("live dir");
            if round % 10 == 7 {
                fs::write(&spec.fullchain, &pool.pairs[5].fullchain).expect("plain chain");
                fs::write(&spec.privkey, &pool.pairs[5].privkey).expect("plain key");
            }
        }
        fs::create_dir_all(&live_dir).expect("live dir");
        let before = fs::read(&spec.fullchain).ok().and_then(|c| pool.which(&c));
        fs::write(&log, b"").expect("clear the child's log");
        let mut cmd = child_test(harness.test());
        cmd.env(CRASH_CHILD, root.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = ChildGuard(cmd.spawn().expect("spawn child"));
        // libtest prints its own lines first; wait for the child's.
        let mut lines = BufReader::new(child.0.stdout.take().expect("piped stdout")).lines();
        let ready = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.contains("crash-child-ready"));
        assert!(ready, "child did not start");
        std::thread::sleep(std::time::Duration::from_micros(rng.below(max_delay + 1)));
        drop(child); // SIGKILL and reap.

        let locked = store.lock().expect("lock");
        locked.recover(&spec).expect("recover");
        drop(locked);
        // The deploy in flight when the child died, as its log says: (new, previous).
        let in_flight = fs::read_to_string(&log)
            .expect("child log")
            .lines()
            .last()
            .map(parse_begin);
        let chain = fs::read(&spec.fullchain);
        let key = fs::read(&spec.privkey);
        let now = match (&chain, &key) {
            (Ok(c), Ok(k)) => {
                let (ic, ik) = (pool.which(c), pool.which(k));
                let m = manifest::read_live(&spec.name, &spec.fullchain)
                    .ok()
                    .flatten();
                let manifest_ok = m.is_none_or(|m| {
                    m.files.fullchain == sha256_hex(c) && m.files.privkey == sha256_hex(k)
                });
                if ic.is_none() || ic != ik || !util::key_matches_leaf(c, k) || !manifest_ok {
                    mismatches += 1;
                    problems.push(format!(
                        "round {round}: mixed pair {ic:?}/{ik:?}, manifest ok {manifest_ok}"
                    ));
                }
                // The derived files are those of this very pair; plain files not adopted yet
                // (a kill before the adoption) have none beside them.
                let managed = fs::symlink_metadata(&spec.fullchain).is_ok_and(|m| m.is_symlink());
                for d in certkeeper::store::Derived::ALL {
                    let path = spec.derived_path(d).expect("all five configured");
                    let want = d.content(c, k).expect("pool pair");
                    let found = fs::read(path).ok();
                    if found.as_ref() != Some(&want) && (managed || found.is_some()) {
                        mismatches += 1;
                        problems.push(format!(
                            "round {round}: {} is not derived from live pair {ic:?}",
                            d.key()
                        ));
                    }
                }
                ic
            }
            (Err(_), Err(_)) => {
                empty += 1;
                for d in certkeeper::store::Derived::ALL {
                    let path = spec.derived_path(d).expect("all five configured");
                    if fs::metadata(path).is_ok() {
                        mismatches += 1;
                        problems.push(format!(
                            "round {round}: no pair is live but {} is there",
                            d.key()
                        ));
                    }
                }
                None
            }
            _ => {
                mismatches += 1;
                problems.push(format!("round {round}: half a pair"));
                None
            }
        };
        let allowed = match in_flight {
            Some((new, previous)) => {
                vec![
                    previous,
                    Some(new).filter(|_| harness == Harness::Swaps || new != REJECTED),
                ]
            }
            None => vec![before],
        };
        if !allowed.contains(&now) || (harness == Harness::Pipeline && now == Some(REJECTED)) {
            mismatches += 1;
            problems.push(format!(
                "round {round}: live pair {now:?}, expected one of {allowed:?} (before {before:?}, in flight {in_flight:?})"
            ));
        }
        if now != before {
            progressed += 1;
        }

        for s in store.snapshots(&spec).expect("list") {
            if !s.verified {
                bad_snapshots += 1;
                problems.push(format!(
                    "round {round}: snapshot {} does not verify: {:?}",
                    s.id, s.problem
                ));
            }
            if harness == Harness::Pipeline
                && s.fingerprint.as_deref() == Some(rejected_fingerprint.as_str())
            {
                bad_snapshots += 1;
                problems.push(format!(
                    "round {round}: snapshot {} holds the refused pair",
                    s.id
                ));
            }
        }
        let mut leftovers = crash_leftovers(&live_dir, &root.path().join("state/snapshots/crash"));
        leftovers.extend(temporaries_under(&root.path().join("state")));
        // Only the link to the combined file lives in its directory.
        if root.path().join("haproxy").is_dir() {
            leftovers.extend(certkeeper_entries(&root.path().join("haproxy")));
        }
        if let Ok(read) = fs::read_dir(root.path().join("state/journal")) {
            leftovers.extend(
                read.filter_map(|e| e.ok())
                    .map(|e| format!("journal/{}", e.file_name().to_string_lossy())),
            );
        }
        if !leftovers.is_empty() {
            leaks += 1;
            problems.push(format!("round {round}: leftovers {leftovers:?}"));
        }
    }
    println!(
        "crash harness ({harness:?}): kills={kills} mismatches={mismatches} leaks={leaks} bad_snapshots={bad_snapshots} \
         rounds_with_progress={progressed} rounds_ending_empty={empty} seed={seed:#x}"
    );
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(
        progressed > 0,
        "no child ever completed a swap: the kills came too early"
    );
}

/// Parses a child's `begin NEW PREVIOUS` line (`-` for no previous pair).
fn parse_begin(line: &str) -> (usize, Option<usize>) {
    let mut words = line.split_whitespace().skip(1);
    let new = words
        .next()
        .and_then(|w| w.parse().ok())
        .expect("begin line");
    let previous = words.next().and_then(|w| w.parse().ok());
    (new, previous)
}

/// The harness's certificate has all five live files (the derived ones in the fullchain's
/// directory and, for `combined`, in another one), so that a kill is checked to leave every
/// one of them from the same pair.
fn crash_spec(root: &Path) -> PairSpec {
    let mut spec = PairSpec::new(
        "crash",
        root.join("live/fullchain.pem"),
        root.join("live/privkey.pem"),
    );
    spec.keep_snapshots = 3;
    spec.cert = Some(root.join("live/cert.pem"));
    spec.chain = Some(root.join("live/chain.pem"));
    spec.combined = Some(root.join("haproxy/combined.pem"));
    spec
}

/// The child of the crash harness: deploys the next pool pair, forever, until killed (or
/// until its parent is gone). Before each deploy it appends `begin NEW PREVIOUS` to the log.
fn crash_child(root: &Path, harness: Harness) {
    use std::io::Write;
    let pool = Pool::load(&root.join("pool"));
    let spec = crash_spec(root);
    let store = Store::open(root.join("state")).expect("store");
    let locked = store.lock().expect("lock");
    let parent = rustix::process::getppid();
    let mut log = fs::OpenOptions::new()
        .append(true)
        .open(root.join("child.log"))
        .expect("log");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cert = pipeline_certificate(&spec, &pool.pairs[REJECTED].fingerprint());
    println!("crash-child-ready");
    let mut previous = fs::read(&spec.fullchain).ok().and_then(|c| pool.which(&c));
    let mut i = previous.unwrap_or(0);
    for _ in 0..1_000_000 {
        if rustix::process::getppid() != parent {
            return;
        }
        i = (i + 1) % (pool.pairs.len() - 1);
        let p = &pool.pairs[i];
        let shown = previous.map_or("-".to_owned(), |n| n.to_string());
        log.write_all(format!("begin {i} {shown}\n").as_bytes())
            .expect("log");
        match harness {
            Harness::Swaps => {
                locked
                    .deploy(&spec, &p.fullchain, &p.privkey)
                    .expect("deploy in crash child");
                previous = Some(i);
            }
            Harness::Pipeline => {
                let item = certkeeper::deploy::Item {
                    cert: cert.clone(),
                    spec: spec.clone(),
                    fullchain: p.fullchain.clone(),
                    privkey: p.privkey.clone(),
                    leaf: leaf_of(&p.fullchain),
                    trust: Arc::new(certkeeper::x509::TrustStore::new()),
                };
                let outcomes = runtime.block_on(certkeeper::deploy::deploy_all(
                    &locked,
                    vec![item],
                    Vec::new(),
                    false,
                    &Default::default(),
                ));
                match &outcomes[0].1 {
                    certkeeper::deploy::Outcome::Renewed(_) => previous = Some(i),
                    certkeeper::deploy::Outcome::RolledBack { .. } if i == REJECTED => {}
                    other => panic!("pair {i}: unexpected outcome {other:?}"),
                }
            }
        }
    }
}

/// The configured certificate of the pipeline harness: a reload that really runs, and a
/// health check that refuses the pair with `refused` as its leaf fingerprint.
fn pipeline_certificate(spec: &PairSpec, refused: &str) -> certkeeper::config::Certificate {
    use std::time::Duration;
    certkeeper::config::Certificate {
        name: spec.name.clone(),
        domains: vec!["a.test".into()],
        issuers: vec!["internal".into()],
        profile: None,
        challenge: Default::default(),
        dns_provider: None,
        key: certkeeper::config::KeyType::EcdsaP256,
        fullchain: spec.fullchain.clone(),
        privkey: spec.privkey.clone(),
        cert: spec.cert.clone(),
        chain: spec.chain.clone(),
        combined: spec.combined.clone(),
        mode: None,
        owner: None,
        group: None,
        reuse_key: false,
        keep_snapshots: spec.keep_snapshots,
        reload: Some(certkeeper::config::Reload {
            command: vec!["/bin/true".into()],
            timeout: Duration::from_secs(10),
        }),
        verify: Some(certkeeper::config::VerifyTarget {
            tls_connect: None,
            server_name: "a.test".into(),
            timeout: Duration::from_millis(300),
            command: Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("test \"$CERTKEEPER_FINGERPRINT\" != {refused}"),
            ]),
        }),
        fleet: false,
        usage: Default::default(),
    }
}

fn leaf_of(fullchain: &[u8]) -> certkeeper::x509::Cert {
    certkeeper::x509::read_certificates(fullchain)
        .expect("pool pair")
        .0
        .remove(0)
}

/// Temporary names anywhere under `dir` (state_dir): `.certkeeper-tmp*` and `*.tmp-*`, which
/// recovery must have removed.
fn temporaries_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(read) = fs::read_dir(&d) else { continue };
        for e in read.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            if name.starts_with(".certkeeper-tmp") || name.contains(".tmp-") {
                out.push(
                    path.strip_prefix(dir)
                        .unwrap_or(&path)
                        .display()
                        .to_string(),
                );
            } else if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            }
        }
    }
    out
}

/// Names that must not survive a recovery: anything beside the live files other than the
/// documented ones and at most two generations, and any `.tmp-` among the snapshots.
fn crash_leftovers(live_dir: &Path, snapshots: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut generations = 0;
    for name in certkeeper_entries(live_dir) {
        match name.as_str() {
            ".certkeeper-crash.live" | ".certkeeper-crash.manifest.json" => {}
            n if n.starts_with(".certkeeper-crash.gen-") && generations < 2 => generations += 1,
            _ => out.push(name),
        }
    }
    if let Ok(read) = fs::read_dir(snapshots) {
        for e in read.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                out.push(format!("snapshots/{name}"));
            }
        }
    }
    out
}

/// Not a test but the swap benchmark: prints the median time of one deploy (snapshot,
/// write, fsyncs, switch, read-back, prune) over `CERTKEEPER_BENCH_SWAPS` swaps (default
/// 200). Run by `bench/swap.sh`.
#[test]
#[ignore = "benchmark; run with bench/swap.sh"]
fn bench_swap_median() {
    let fx = Fixture::new();
    let pool = Pool::new(4);
    let swaps = env_number("CERTKEEPER_BENCH_SWAPS", 200) as usize;
    let store = fx.store();
    let locked = store.lock().expect("lock");
    let mut times = Vec::with_capacity(swaps);
    for i in 0..swaps {
        let p = &pool.pairs[i % 4];
        let start = std::time::Instant::now();
        locked
            .deploy(&fx.spec, &p.fullchain, &p.privkey)
            .expect("deploy");
        times.push(start.elapsed());
    }
    times.sort_unstable();
    let pct = |q: usize| times[(times.len() - 1) * q / 100];
    println!(
        "swap timing: swaps={swaps} median={:?} p10={:?} p90={:?} max={:?}",
        pct(50),
        pct(10),
        pct(90),
        times[times.len() - 1]
    );
}
