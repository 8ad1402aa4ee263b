//! Issued material kept under `state_dir/pending/<name>/` until it is live: a CA's before
//! its deploy, a local CA's when its deploy does not take it. Beside the pair, `issuer`
//! names the issuer that gave it, so that what deploys it later can say where it is from.

use std::path::{Path, PathBuf};

use crate::store::{Durable, StateDir};

/// Keeps material the deploy did not take; whether it is kept.
pub(super) fn keep_now(
    state_dir: &StateDir,
    name: &str,
    issuer: &str,
    fullchain: &[u8],
    privkey: &[u8],
) -> bool {
    match save(state_dir, name, issuer, fullchain, privkey) {
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

/// A kept pair, and the issuer that gave it.
pub struct Kept {
    /// The fullchain (PEM).
    pub fullchain: Vec<u8>,
    /// The key (PEM).
    pub privkey: Vec<u8>,
    /// The issuer's name as it was kept; `None` when it is not there (material kept by an
    /// older version) or does not read.
    pub issuer: Option<String>,
}

/// The longest issuer name read back.
const MAX_ISSUER: u64 = 256;

/// The kept fullchain and key, when both are there.
pub fn load(state_dir: &Path, name: &str) -> Option<Kept> {
    let d = dir(state_dir, name);
    let issuer = crate::fsutil::read_regular(&d.join("issuer"), MAX_ISSUER)
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    Some(Kept {
        fullchain: crate::fsutil::read_regular(&d.join("fullchain.pem"), crate::fsutil::MAX_FILE)
            .ok()?,
        privkey: crate::fsutil::read_regular(&d.join("privkey.pem"), crate::fsutil::MAX_FILE)
            .ok()?,
        issuer,
    })
}

/// Keeps a pair whole (key 0600), replacing the one kept before in one step: a crash at
/// any point leaves one whole pair.
pub fn save(
    state_dir: &StateDir,
    name: &str,
    issuer: &str,
    fullchain: &[u8],
    privkey: &[u8],
) -> Result<(), crate::store::Error> {
    let files: [(&str, &[u8], u32); 3] = [
        ("fullchain.pem", fullchain, 0o644),
        ("privkey.pem", privkey, 0o600),
        ("issuer", issuer.as_bytes(), 0o644),
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
        save(&state, "www", "ca-1", b"chain-1", b"key-1").unwrap();
        save(&state, "www", "ca-2", b"chain-2", b"key-2").unwrap();
        let kept = load(root.path(), "www").unwrap();
        assert_eq!(
            (kept.fullchain, kept.privkey, kept.issuer.as_deref()),
            (b"chain-2".to_vec(), b"key-2".to_vec(), Some("ca-2"))
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
