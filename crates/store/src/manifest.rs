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

use super::derived::Derived;
use super::error::Error;
use super::live::{FULLCHAIN_FILE, PRIVKEY_FILE};
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
        let leaf = leaf_identity(fullchain).map_err(|e| Error::BadCertificate {
            name: name.to_owned(),
            reason: e.to_string(),
        })?;
        let chain = certkeeper_x509::read_certificates(fullchain)
            .map(|(certs, _)| certs)
            .unwrap_or_default();
        Ok(Manifest {
            version: MANIFEST_VERSION,
            certificate: name.to_owned(),
            created: rfc3339(created),
            not_after: leaf.not_after,
            fingerprint: leaf.fingerprint,
            files: FileDigests::of(fullchain, privkey),
            key_matches_leaf: Some(key_matches_leaf(chain.first(), privkey)),
            chain_signed: Some(!chain.is_empty() && certkeeper_x509::links_signed(&chain)),
        })
    }

    /// This manifest with a digest for every derived file it lacks, derived from the pair
    /// it describes (`fullchain` and `privkey`: a snapshot taken before certkeeper derived
    /// files, restored now).
    pub fn with_derived(mut self, fullchain: &[u8], privkey: &[u8]) -> Manifest {
        let all = FileDigests::of(fullchain, privkey);
        for d in Derived::ALL {
            let slot = self.files.derived_mut(d);
            if slot.is_none() {
                *slot = all.derived(d).cloned();
            }
        }
        self
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

/// Why the first certificate of a fullchain is not usable.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum LeafError {
    /// The file holds no PEM block.
    #[error("no PEM block found")]
    NoPem,
    /// The first PEM block cannot be decoded.
    #[error("bad PEM: {0}")]
    Pem(String),
    /// The first PEM block is something else (a key, a CSR).
    #[error("first PEM block is {label:?}, not a CERTIFICATE")]
    NotACertificate {
        /// Its label.
        label: String,
    },
    /// The block is not an X.509 certificate.
    #[error("bad certificate: {0}")]
    Certificate(#[from] x509_parser::nom::Err<x509_parser::error::X509Error>),
}

/// Parses the first certificate of a PEM fullchain; the error says why it is not usable.
pub fn leaf_identity(fullchain: &[u8]) -> Result<LeafIdentity, LeafError> {
    let first = certkeeper_x509::pem::read(fullchain)
        .and_then(|blocks| blocks.into_iter().next())
        .ok_or(LeafError::NoPem)?
        .map_err(LeafError::Pem)?;
    if first.label != "CERTIFICATE" {
        return Err(LeafError::NotACertificate { label: first.label });
    }
    let (_, cert) = x509_parser::parse_x509_certificate(&first.der)?;
    Ok(LeafIdentity {
        not_after: rfc3339(cert.validity().not_after.to_datetime()),
        fingerprint: sha256_hex(&first.der),
    })
}

/// SHA-256 digests of the files of a pair, lower-case hex: the fullchain, the key, and the
/// files derived from them (absent from generations and snapshots written before certkeeper
/// derived them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDigests {
    /// Digest of the fullchain file.
    pub fullchain: String,
    /// Digest of the private key file.
    pub privkey: String,
    /// Digest of the leaf-only file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// Digest of the intermediates-only file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    /// Digest of the fullchain-and-key file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combined: Option<String>,
}

impl FileDigests {
    /// The digests of a pair and of every file derived from it.
    pub fn of(fullchain: &[u8], privkey: &[u8]) -> FileDigests {
        let mut files = FileDigests {
            fullchain: sha256_hex(fullchain),
            privkey: sha256_hex(privkey),
            cert: None,
            chain: None,
            combined: None,
        };
        for d in Derived::ALL {
            *files.derived_mut(d) = d.content(fullchain, privkey).map(|c| sha256_hex(&c));
        }
        files
    }

    /// The digest recorded for a derived file, if any.
    pub fn derived(&self, d: Derived) -> Option<&String> {
        match d {
            Derived::Cert => self.cert.as_ref(),
            Derived::Chain => self.chain.as_ref(),
            Derived::Combined => self.combined.as_ref(),
        }
    }

    pub(crate) fn derived_mut(&mut self, d: Derived) -> &mut Option<String> {
        match d {
            Derived::Cert => &mut self.cert,
            Derived::Chain => &mut self.chain,
            Derived::Combined => &mut self.combined,
        }
    }

    /// Each file recorded, as its name inside a generation or snapshot with its digest.
    pub(crate) fn entries(&self) -> Vec<(&'static str, &String)> {
        let mut out = vec![
            (FULLCHAIN_FILE, &self.fullchain),
            (PRIVKEY_FILE, &self.privkey),
        ];
        for d in Derived::ALL {
            if let Some(digest) = self.derived(d) {
                out.push((d.file_name(), digest));
            }
        }
        out
    }

    /// The digests of the files in a generation or snapshot directory `dir`, read without
    /// following links: the pair must be there; a derived file that is not is recorded as
    /// absent.
    pub(crate) fn read_dir(dir: &Path) -> Result<FileDigests, Error> {
        let read = |file: &str| {
            let path = dir.join(file);
            super::atomic::read_nofollow(&path).map_err(|e| Error::io("reading", &path, e))
        };
        let mut files = FileDigests {
            fullchain: sha256_hex(&read(FULLCHAIN_FILE)?),
            privkey: sha256_hex(&read(PRIVKEY_FILE)?),
            cert: None,
            chain: None,
            combined: None,
        };
        for d in Derived::ALL {
            let path = dir.join(d.file_name());
            *files.derived_mut(d) = match super::atomic::read_nofollow(&path) {
                Ok(bytes) => Some(sha256_hex(&bytes)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(Error::io("reading", &path, e)),
            };
        }
        Ok(files)
    }
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
