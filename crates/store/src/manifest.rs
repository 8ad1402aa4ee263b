//! Manifests: what certkeeper wrote, as SHA-256 digests plus the leaf's identity.
//!
//! A manifest sits beside the live files it describes (so that a read-only monitoring user
//! can compare against it, where `state_dir` is 0700), named `.certkeeper-<name>.manifest.json`
//! in the fullchain's directory. Snapshots carry one of the same shape.
//!
//! With the generation layout (see the README's store section), that name is a symlink into the live
//! generation directory, so the manifest changes in the same atomic step as the pair it
//! describes; readers just follow it.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::error::Error;
use certkeeper_base::text::{rfc3339, sha256_hex};

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
    /// Whether the private key was checked against the leaf's public key when the pair was
    /// written: what `check` reports to a user who may not read the key. Absent from
    /// manifests written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_matches_leaf: Option<bool>,
    /// Whether each certificate of the fullchain was signed by the next one when the pair
    /// was written. A signature is a property of the bytes, so while the fullchain's SHA-256
    /// matches, a reader need not check these links again (the last certificate's anchor in
    /// a trusted root it always checks: trust changes). Absent from older manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_signed: Option<bool>,
}

impl Manifest {
    /// Describes a pair about to be written: digests of both files and the identity of the
    /// leaf, the first certificate of `fullchain`.
    pub fn describe(
        name: &str,
        fullchain: &[u8],
        privkey: &[u8],
        created: OffsetDateTime,
    ) -> Result<Manifest, Error> {
        let bad = |reason: String| Error::BadCertificate {
            name: name.to_owned(),
            reason,
        };
        let leaf = leaf_identity(fullchain).map_err(bad)?;
        let chain = certkeeper_x509::read_certificates(fullchain)
            .map(|(certs, _)| certs)
            .unwrap_or_default();
        Ok(Manifest {
            version: MANIFEST_VERSION,
            certificate: name.to_owned(),
            created: rfc3339(created),
            not_after: leaf.not_after,
            fingerprint: leaf.fingerprint,
            files: FileDigests {
                fullchain: sha256_hex(fullchain),
                privkey: sha256_hex(privkey),
            },
            key_matches_leaf: Some(key_matches_leaf(chain.first(), privkey)),
            chain_signed: Some(!chain.is_empty() && certkeeper_x509::links_signed(&chain)),
        })
    }

    /// Whether this manifest describes exactly these bytes (both SHA-256 digests match):
    /// then what it records of them holds for them.
    pub fn describes(&self, fullchain: &[u8], privkey: &[u8]) -> bool {
        self.files.fullchain == sha256_hex(fullchain) && self.files.privkey == sha256_hex(privkey)
    }
}

/// Whether `privkey` is the key of `leaf` (false when either is missing or does not parse).
fn key_matches_leaf(leaf: Option<&certkeeper_x509::Cert>, privkey: &[u8]) -> bool {
    match (leaf, certkeeper_x509::PrivateKey::from_bytes(privkey)) {
        (Some(leaf), Ok(key)) => certkeeper_x509::key_matches(leaf, &key),
        _ => false,
    }
}

/// The identity of a fullchain's leaf certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafIdentity {
    /// notAfter, RFC 3339.
    pub not_after: String,
    /// SHA-256 of the leaf's DER, lower-case hex.
    pub fingerprint: String,
}

/// Parses the first certificate of a PEM fullchain; the error says why it is not usable.
pub fn leaf_identity(fullchain: &[u8]) -> Result<LeafIdentity, String> {
    let first = certkeeper_x509::pem::read(fullchain)
        .and_then(|blocks| blocks.into_iter().next())
        .ok_or_else(|| "no PEM block found".to_owned())?
        .map_err(|e| format!("bad PEM: {e}"))?;
    if first.label != "CERTIFICATE" {
        return Err(format!(
            "first PEM block is {:?}, not a CERTIFICATE",
            first.label
        ));
    }
    let (_, cert) = x509_parser::parse_x509_certificate(&first.der)
        .map_err(|e| format!("bad certificate: {e}"))?;
    Ok(LeafIdentity {
        not_after: rfc3339(cert.validity().not_after.to_datetime()),
        fingerprint: sha256_hex(&first.der),
    })
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
    match certkeeper_base::fsutil::read_regular(path, certkeeper_base::fsutil::MAX_FILE) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
