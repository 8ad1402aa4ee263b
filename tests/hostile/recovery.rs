//! Hostile input, round two: recovery. What state_dir and the directories beside the live
//! files hold is data: a name, a time or a link found there is checked before it is used.

use std::path::Path;

use super::{CONFIG, bounded, listing};
use crate::util::{Dir, key_matches_leaf};

/// The SHA-256 digests that the live generation's manifest records, as a journal holds them.
fn live_files(dir: &Dir) -> serde_json::Value {
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("live/www/.certkeeper-www.manifest.json")).unwrap(),
    )
    .unwrap();
    manifest["files"].clone()
}

fn live_generation(dir: &Dir) -> String {
    std::fs::read_link(dir.join("live/www/.certkeeper-www.live"))
        .unwrap()
        .display()
        .to_string()
}

fn generation_number(dir: &Dir) -> u64 {
    live_generation(dir)
        .rsplit('-')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn assert_whole(dir: &Dir) {
    assert!(key_matches_leaf(
        &std::fs::read(dir.join("live/www/fullchain.pem")).unwrap(),
        &std::fs::read(dir.join("live/www/privkey.pem")).unwrap()
    ));
}

#[test]
fn a_tampered_journal_never_names_a_file_outside_its_directory() {
    let dir = Dir::new();
    dir.config(CONFIG);
    assert_eq!(bounded(&dir, "config.yaml", &["renew"]).code, 0);
    let live = generation_number(&dir);
    let victim = dir.write("victim.json", "keep me");
    let elsewhere = dir.write("snap/000001/snapshot.json", "{}");
    // A journal that reverts cleanly (its previous generation is the live one, whole), but
    // whose certificate name, and in another its snapshot id, walk out of their directories.
    let journals = [
        serde_json::json!({
            "version": 1, "certificate": "../../victim", "staged": live + 7,
            "previous": live, "previous_files": live_files(&dir),
            "snapshot": null, "snapshot_new": false,
        }),
        serde_json::json!({
            "version": 1, "certificate": "www", "staged": live + 7,
            "previous": live, "previous_files": live_files(&dir),
            "snapshot": "../../../snap/000001", "snapshot_new": true,
        }),
    ];
    for journal in journals {
        dir.write("state/journal/www.json", journal.to_string());
        let _ = std::fs::remove_file(dir.join("state/clean"));
        let run = bounded(&dir, "config.yaml", &["renew"]);
        assert_eq!(run.code, 0, "{run:?}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me", "{run:?}");
        assert!(elsewhere.exists(), "{run:?}");
        // One line names the journal, what is wrong and where it was moved.
        assert!(
            run.stderr.contains("state/journal/www.json")
                && run.stderr.contains("moved aside to")
                && run.stderr.lines().filter(|l| l.contains("journal")).count() == 1,
            "{run:?}"
        );
        // The journal is gone from the journals read, kept aside for inspection, and the
        // next pass has nothing to say about it.
        assert!(!dir.join("state/journal/www.json").exists());
        assert_eq!(generation_number(&dir), live);
        assert_whole(&dir);
        let run = bounded(&dir, "config.yaml", &["renew"]);
        assert_eq!(run.code, 0, "{run:?}");
        assert!(!run.stderr.contains("journal"), "{run:?}");
        assert!(dir.join("state/clean").exists(), "{run:?}");
    }
}

#[test]
fn a_missing_live_link_is_restored_to_the_newest_whole_generation() {
    let dir = Dir::new();
    dir.config(CONFIG);
    assert_eq!(bounded(&dir, "config.yaml", &["renew"]).code, 0);
    assert_eq!(bounded(&dir, "config.yaml", &["renew", "--force"]).code, 0);
    let newest = live_generation(&dir);
    let fingerprint = live_files(&dir);
    // An older generation whose files no longer match its manifest is not chosen, nor is a
    // newer one that is not whole.
    let older = generation_number(&dir) - 1;
    assert!(
        dir.join(&format!("live/www/.certkeeper-www.gen-{older:06}"))
            .is_dir()
    );
    let broken = dir.join(&format!(
        "live/www/.certkeeper-www.gen-{:06}",
        generation_number(&dir) + 1
    ));
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("fullchain.pem"), "half").unwrap();
    std::fs::remove_file(dir.join("live/www/.certkeeper-www.live")).unwrap();
    std::fs::remove_file(dir.join("state/clean")).unwrap();
    let run = bounded(&dir, "config.yaml", &["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("www: not due"), "{run:?}");
    assert_eq!(live_generation(&dir), newest, "{run:?}");
    assert_eq!(live_files(&dir), fingerprint);
    assert_whole(&dir);
    assert!(
        run.stderr.contains(".certkeeper-www.live was missing") && run.stderr.contains(&newest),
        "{run:?}"
    );
    // The pair that was live before is still there for a rollback.
    let run = bounded(&dir, "config.yaml", &["rollback", "www"]);
    assert_eq!(run.code, 0, "{run:?}");
}

/// Moves a directory away and leaves a symlink to it in its place.
fn link_away(dir: &Dir, path: &str) -> std::path::PathBuf {
    let from = dir.join(path);
    let to = dir.join(&format!("elsewhere/{}", path.replace('/', "_")));
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::rename(&from, &to).unwrap();
    std::os::unix::fs::symlink(&to, &from).unwrap();
    from
}

#[test]
fn a_symlinked_directory_of_certkeeper_is_refused_by_name() {
    for path in [
        "state/snapshots/www",
        "state/snapshots",
        "state/journal",
        "state/ca",
        "state/ca/internal",
        "state/state",
    ] {
        let dir = Dir::new();
        dir.config(CONFIG);
        assert_eq!(bounded(&dir, "config.yaml", &["renew"]).code, 0);
        assert_eq!(bounded(&dir, "config.yaml", &["renew", "--force"]).code, 0);
        let link = link_away(&dir, path);
        let outside = listing(&dir.join("elsewhere"));
        let run = bounded(&dir, "config.yaml", &["renew", "--force"]);
        assert_ne!(run.code, 0, "{path}: {run:?}");
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(
            all.contains(&format!("{} is a symbolic link", link.display()))
                && !all.contains("No such file or directory"),
            "{path}: {run:?}"
        );
        // Nothing was written through the link.
        assert_eq!(listing(&dir.join("elsewhere")), outside, "{path}");
        assert_whole(&dir);
    }
}

#[test]
fn a_symlinked_generation_is_refused_by_name() {
    let dir = Dir::new();
    dir.config(CONFIG);
    assert_eq!(bounded(&dir, "config.yaml", &["renew"]).code, 0);
    assert_eq!(bounded(&dir, "config.yaml", &["renew", "--force"]).code, 0);
    let live = live_generation(&dir);
    let link = link_away(&dir, &format!("live/www/{live}"));
    std::fs::remove_file(dir.join("state/clean")).unwrap();
    let run = bounded(&dir, "config.yaml", &["renew", "--force"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        format!("{}{}", run.stdout, run.stderr)
            .contains(&format!("{} is a symbolic link", link.display())),
        "{run:?}"
    );
    assert!(Path::new(&link).is_symlink());
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn times_written_under_a_wrong_clock_are_clamped_on_read() {
    let dir = Dir::new();
    dir.config(CONFIG);
    let now = unix_now();
    let ahead = now + 10 * 365 * 86_400;
    // A pass ran with the clock ten years ahead and failed: its backoff says 2036.
    dir.write(
        "state/state/www.json",
        serde_json::json!({
            "last_attempt": ahead, "last_result": "failed", "last_error": "boom",
            "consecutive_failures": 1, "next_attempt": ahead + 300,
        })
        .to_string(),
    );
    let run = bounded(&dir, "config.yaml", &["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("www: renewed"), "{run:?}");
    // Said once, naming the record and the key.
    assert_eq!(run.stderr.matches("next_attempt is ").count(), 1, "{run:?}");
    assert!(run.stderr.contains("state/state/www.json"), "{run:?}");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state/state/www.json")).unwrap()).unwrap();
    assert!(record["last_attempt"].as_i64().unwrap() < ahead, "{record}");

    // The CA's renewal window, fetched under the wrong clock, would hold a due certificate
    // back for ten years: it is dropped, and `check` and `renew` see the certificate due.
    let fingerprint = {
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join("live/www/.certkeeper-www.manifest.json")).unwrap(),
        )
        .unwrap();
        manifest["fingerprint"].as_str().unwrap().to_owned()
    };
    dir.write(
        "state/ari.json",
        serde_json::json!({"www": {
            "fingerprint": fingerprint, "window": [ahead, ahead + 86_400],
            "fetched": ahead, "retry_after": ahead + 3600,
        }})
        .to_string(),
    );
    dir.write(
        "due.yaml",
        format!("{CONFIG}renewal:\n  before_expiry: 100d\n"),
    );
    let run = bounded(&dir, "due.yaml", &["check"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("ari.json"), "{run:?}");

    // A pass record in the future is no last attempt in the future.
    dir.write(
        "state/pass.json",
        serde_json::json!({"not_due": {"www": ahead}}).to_string(),
    );
    let run = bounded(&dir, "config.yaml", &["metrics"]);
    assert_eq!(run.code, 0, "{run:?}");
    let shown: f64 = run
        .stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("certkeeper_certificate_last_attempt_timestamp_seconds{name=\"www\"} ")
        })
        .unwrap_or_else(|| panic!("{run:?}"))
        .parse()
        .unwrap();
    assert!((shown as i64) < ahead, "{run:?}");
}

/// Every file under `path` with a hash of its content (never the content: keys are there),
/// in order.
fn contents(path: &Path) -> Vec<(String, u64)> {
    use std::hash::{Hash, Hasher};
    let mut out: Vec<_> = super::walk(path)
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::fs::read(&p).unwrap().hash(&mut h);
            (p.display().to_string(), h.finish())
        })
        .collect();
    out.sort();
    out
}

/// Delivery ends after the pass released the state_dir lock: what it remembers (which
/// failure was alerted) is written under the lock taken again, never beside another holder.
#[test]
fn alert_memory_is_written_only_under_the_lock() {
    use std::io::{Read, Write};
    let dir = Dir::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    dir.config(&format!(
        "{CONFIG}alerts:\n  - type: webhook\n    url: http://127.0.0.1:{port}/hook\n    on: [failed]\n"
    ));
    // A directory where the fullchain goes: every deploy fails.
    std::fs::create_dir_all(dir.join("live/www/fullchain.pem")).unwrap();
    let state = dir.join("state");
    let sink = {
        let listener = listener.try_clone().unwrap();
        let state = state.clone();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // The whole request: headers, then Content-Length bytes of body.
            loop {
                let n = conn.read(&mut buf).unwrap();
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    if request.len() >= end + 4 + length {
                        break;
                    }
                }
                assert!(n > 0, "the request ended early");
            }
            // The pass is over (alerts go out after it): hold the lock as another pass would.
            let lock = std::fs::File::open(state.join("lock")).unwrap();
            rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
            let before = contents(&state);
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .unwrap();
            drop(conn);
            std::thread::sleep(std::time::Duration::from_secs(2));
            let during = contents(&state);
            drop(lock);
            (before, during)
        })
    };
    let run = bounded(&dir, "config.yaml", &["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    let (before, during) = sink.join().unwrap();
    assert_eq!(
        before, during,
        "state_dir was written while the lock was held elsewhere"
    );
    // Written once the lock was free again, in a file of its own.
    let alerted: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("alerted.json")).unwrap()).unwrap();
    assert!(alerted["www"]["failed"].as_i64().is_some(), "{alerted}");
    // And it is what deduplicates: the same failure again sends nothing.
    let run = bounded(&dir, "config.yaml", &["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_err(),
        "the same failure alerted again: {run:?}"
    );
}
