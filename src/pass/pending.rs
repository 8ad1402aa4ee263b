//! Issued material kept under `state_dir/pending/<name>/` until it is live: a CA's before
//! its deploy, a local CA's when its deploy does not take it.

use std::path::{Path, PathBuf};

use crate::store::{Durable, StateDir};

/// Keeps material the deploy did not take; whether it is kept.
pub(super) fn keep_now(state_dir: &StateDir, name: &str, fullchain: &[u8], privkey: &[u8]) -> bool {
    match save(state_dir, name, fullchain, privkey) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(cert = %name, "Cannot keep the new material for a later pass: {e}");
            false
        }
    }
}

fn dir(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("pending").join(name)
}

/// Whether a pair is kept for `name`.
pub fn exists(state_dir: &Path, name: &str) -> bool {
    let d = dir(state_dir, name);
    d.join("fullchain.pem").is_file() && d.join("privkey.pem").is_file()
}

/// The kept fullchain and key, when both are there.
pub fn load(state_dir: &Path, name: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let d = dir(state_dir, name);
    Some((
        crate::fsutil::read_regular(&d.join("fullchain.pem"), crate::fsutil::MAX_FILE).ok()?,
        crate::fsutil::read_regular(&d.join("privkey.pem"), crate::fsutil::MAX_FILE).ok()?,
    ))
}

/// Keeps a pair whole (key 0600), replacing the one kept before in one step: a crash at
/// any point leaves one whole pair.
pub fn save(
    state_dir: &StateDir,
    name: &str,
    fullchain: &[u8],
    privkey: &[u8],
) -> Result<(), crate::store::Error> {
    let files: [(&str, &[u8], u32); 2] = [
        ("fullchain.pem", fullchain, 0o644),
        ("privkey.pem", privkey, 0o600),
    ];
    state_dir.write_dir(&["pending"], name, &files, true, Durable::AtSync)
}

/// Drops the kept pair.
pub fn remove(state_dir: &StateDir, name: &str) {
    if let Err(e) = state_dir.remove(&["pending"], name) {
        tracing::warn!(cert = %name, "Cannot drop the kept material: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn a_kept_pair_is_replaced_whole() {
        let root = tempfile::tempdir().unwrap();
        let state = StateDir::open(root.path()).unwrap();
        save(&state, "www", b"chain-1", b"key-1").unwrap();
        save(&state, "www", b"chain-2", b"key-2").unwrap();
        assert_eq!(
            load(root.path(), "www").unwrap(),
            (b"chain-2".to_vec(), b"key-2".to_vec())
        );
        let names: Vec<String> = fs::read_dir(root.path().join("pending"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["www"]);
        assert!(exists(root.path(), "www"));
        remove(&state, "www");
        assert!(!exists(root.path(), "www"));
    }
}
