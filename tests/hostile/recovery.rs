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
