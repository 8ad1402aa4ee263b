//! Manifests: what certkeeper wrote, as SHA-256 digests plus the leaf's identity.
//!
//! A manifest sits beside the live files it describes (so that a read-only monitoring user
//! can compare against it, where `state_dir` is 0700), named `.certkeeper-<name>.manifest.json`
//! in the fullchain's directory. Snapshots carry one of the same shape.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The version written into new manifests.
pub const MANIFEST_VERSION: u32 = 1;

/// The digests and leaf identity of one certificate pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version.
    pub version: u32,
    /// The managed certificate's name.
    pub certificate: String,
    /// When the pair was written (RFC 3339).
    pub created: String,
    /// The leaf's notAfter (RFC 3339).
    pub not_after: String,
    /// SHA-256 of the leaf's DER, lower-case hex.
    pub fingerprint: String,
    /// SHA-256 of each file, lower-case hex.
    pub files: FileDigests,
}

/// SHA-256 digests of the two files of a pair, lower-case hex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDigests {
    /// Digest of the fullchain file.
    pub fullchain: String,
    /// Digest of the private key file.
    pub privkey: String,
}

/// Where the manifest of a certificate's live pair is kept.
pub fn live_path(name: &str, fullchain: &Path) -> PathBuf {
    let dir = fullchain.parent().unwrap_or_else(|| Path::new("."));
    dir.join(format!(".certkeeper-{name}.manifest.json"))
}

/// Reads the manifest of a live pair; `Ok(None)` when there is none (files not written by
/// certkeeper).
pub fn read_live(name: &str, fullchain: &Path) -> io::Result<Option<Manifest>> {
    read(&live_path(name, fullchain))
}

/// Reads a manifest file; `Ok(None)` when it does not exist.
pub fn read(path: &Path) -> io::Result<Option<Manifest>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// SHA-256 of `bytes` as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
