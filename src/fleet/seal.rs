//! Sealing private keys with the fleet key: AES-256-GCM (through aws-lc-rs), a random 96-bit
//! nonce per seal, and the generation's identity as associated data.
//!
//! etcd keeps values in clear on its disks, so a private key goes there only sealed, and the
//! fleet key never leaves the hosts. The associated data binds a sealed key to the generation
//! it belongs to: the caller passes the generation's identity (for example
//! `<fleet>/<certificate>/<generation>`) when sealing and the same when opening, so a sealed
//! key copied under another generation does not open.
//!
//! The sealed form is versioned:
//!
//! ```text
//! [version: 1 byte = 1][nonce: 12 bytes][ciphertext][tag: 16 bytes]
//! ```
//!
//! A wrong key, a changed byte anywhere, a wrong identity, a truncated value or an unknown
//! version is a typed [`SealError`]; errors never carry the plaintext or the key.

use std::fmt;
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

use crate::config::{SEAL_KEY_LEN, SealKeyFileError, read_seal_key_file};

/// The version byte of the sealed form this build writes.
pub const VERSION: u8 = 1;
/// Bytes a seal adds to the plaintext: version, nonce and tag.
pub const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

/// Why a key could not be loaded, or a value sealed or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The seal key file is unusable.
    #[error(transparent)]
    KeyFile(#[from] SealKeyFileError),
    /// The sealed value is shorter than its header and tag.
    #[error("sealed value is truncated: {len} bytes, at least {OVERHEAD} expected")]
    Truncated {
        /// Its length.
        len: usize,
    },
    /// The sealed value has a version this build does not know.
    #[error(
        "sealed value has unknown format version {version}; this certkeeper reads version {VERSION} (is another host newer?)"
    )]
    UnknownVersion {
        /// The version byte found.
        version: u8,
    },
    /// Authentication failed: another fleet key, a changed byte, or another generation's
    /// identity (AES-GCM cannot tell these apart, by design).
    #[error(
        "sealed value does not open: it was sealed with another fleet key, changed, or belongs to another generation; check that seal_key_file is the same on every host"
    )]
    Open,
    /// The cryptographic library failed (no randomness, a key it refused).
    #[error("sealing failed in the cryptographic library")]
    Crypto,
}

/// The fleet's key, ready to seal and open. `Debug` never shows it; the raw bytes are wiped
/// once the key is set up (aws-lc-rs wipes its own copy when the key is dropped).
pub struct SealKey {
    key: LessSafeKey,
}

impl SealKey {
    /// Reads the key from `path`: exactly 32 bytes, in a regular file that neither group nor
    /// others may access; one error for each reason it is refused.
    pub fn load(path: &Path) -> Result<SealKey, SealError> {
        let bytes = read_seal_key_file(path)?;
        SealKey::from_bytes(&bytes)
    }

    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8; SEAL_KEY_LEN]) -> Result<SealKey, SealError> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| SealError::Crypto)?;
        Ok(SealKey {
            key: LessSafeKey::new(unbound),
        })
    }
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(<redacted>)")
    }
}

/// 32 new random bytes for a seal key, wiped from memory when dropped.
pub fn generate_key() -> Result<Zeroizing<[u8; SEAL_KEY_LEN]>, SealError> {
    let mut key = Zeroizing::new([0u8; SEAL_KEY_LEN]);
    aws_lc_rs::rand::fill(key.as_mut()).map_err(|_| SealError::Crypto)?;
    Ok(key)
}

/// Seals `plaintext` under `key`, bound to `aad` (the generation's identity), with a new
/// random nonce: two seals of one plaintext differ.
pub fn seal(key: &SealKey, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| SealError::Crypto)?;
    let mut body = Zeroizing::new(plaintext.to_vec());
    key.key
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut *body,
        )
        .map_err(|_| SealError::Crypto)?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + body.len());
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Opens what [`seal`] made, with the same key and `aad`. The plaintext is wiped from memory
/// when dropped.
pub fn open(key: &SealKey, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let Some((&version, rest)) = sealed.split_first() else {
        return Err(SealError::Truncated { len: 0 });
    };
    if sealed.len() < OVERHEAD {
        return Err(SealError::Truncated { len: sealed.len() });
    }
    if version != VERSION {
        return Err(SealError::UnknownVersion { version });
    }
    let (nonce, body) = rest.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
    let mut body = Zeroizing::new(body.to_vec());
    let len = key
        .key
        .open_in_place(nonce, Aad::from(aad), &mut body)
        .map_err(|_| SealError::Open)?
        .len();
    body.truncate(len);
    Ok(body)
}

/// AES-GCM's tag length.
const TAG_LEN: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    const AAD: &[u8] = b"web-pool/www/7";
    const SECRET: &[u8] = b"-----BEGIN PRIVATE KEY-----\nnot really a key\n";

    fn key(b: u8) -> SealKey {
        SealKey::from_bytes(&[b; SEAL_KEY_LEN]).unwrap()
    }

    #[test]
    fn round_trip() {
        let k = key(1);
        let sealed = seal(&k, SECRET, AAD).unwrap();
        assert_eq!(sealed.len(), SECRET.len() + OVERHEAD);
        assert_eq!(sealed[0], VERSION);
        assert!(
            !sealed
                .windows(10)
                .any(|w| SECRET.windows(10).any(|s| s == w))
        );
        assert_eq!(&open(&k, &sealed, AAD).unwrap()[..], SECRET);
        // An empty plaintext seals too.
        let empty = seal(&k, b"", AAD).unwrap();
        assert!(open(&k, &empty, AAD).unwrap().is_empty());
    }

    #[test]
    fn a_wrong_key_does_not_open() {
        let sealed = seal(&key(1), SECRET, AAD).unwrap();
        assert!(matches!(open(&key(2), &sealed, AAD), Err(SealError::Open)));
    }

    #[test]
    fn a_changed_byte_anywhere_is_refused() {
        let k = key(1);
        let sealed = seal(&k, SECRET, AAD).unwrap();
        let flip = |at: usize| {
            let mut s = sealed.clone();
            s[at] ^= 0x01;
            open(&k, &s, AAD)
        };
        // The version byte.
        assert!(matches!(
            flip(0),
            Err(SealError::UnknownVersion { version: 0 })
        ));
        // Each byte of the nonce, the body and the tag.
        for at in 1..sealed.len() {
            assert!(matches!(flip(at), Err(SealError::Open)), "byte {at}");
        }
    }

    #[test]
    fn another_generation_does_not_open() {
        let k = key(1);
        let sealed = seal(&k, SECRET, AAD).unwrap();
        assert!(matches!(
            open(&k, &sealed, b"web-pool/www/8"),
            Err(SealError::Open)
        ));
        assert!(matches!(open(&k, &sealed, b""), Err(SealError::Open)));
    }

    #[test]
    fn truncated_values_are_refused() {
        let k = key(1);
        let sealed = seal(&k, SECRET, AAD).unwrap();
        for len in 0..OVERHEAD {
            assert!(
                matches!(open(&k, &sealed[..len], AAD), Err(SealError::Truncated { len: l }) if l == len),
                "length {len}"
            );
        }
        // Cut inside the body or the tag: long enough, but it does not authenticate.
        for len in OVERHEAD..sealed.len() {
            assert!(
                matches!(open(&k, &sealed[..len], AAD), Err(SealError::Open)),
                "length {len}"
            );
        }
    }

    #[test]
    fn unknown_versions_are_named() {
        let k = key(1);
        let mut sealed = seal(&k, SECRET, AAD).unwrap();
        sealed[0] = 2;
        let e = open(&k, &sealed, AAD).unwrap_err();
        assert!(matches!(e, SealError::UnknownVersion { version: 2 }));
        assert_eq!(
            e.to_string(),
            "sealed value has unknown format version 2; this certkeeper reads version 1 (is another host newer?)"
        );
    }

    #[test]
    fn two_seals_of_one_plaintext_differ() {
        let k = key(1);
        let a = seal(&k, SECRET, AAD).unwrap();
        let b = seal(&k, SECRET, AAD).unwrap();
        assert_ne!(a, b);
        assert_ne!(a[1..1 + NONCE_LEN], b[1..1 + NONCE_LEN]);
    }

    #[test]
    fn errors_and_debug_show_no_secret() {
        let k = key(0x41);
        assert_eq!(format!("{k:?}"), "SealKey(<redacted>)");
        let sealed = seal(&k, SECRET, AAD).unwrap();
        let e = open(&key(2), &sealed, AAD).unwrap_err();
        for shown in [e.to_string(), format!("{e:?}")] {
            assert!(!shown.contains("PRIVATE"), "{shown}");
            assert!(
                !shown.contains("AAAA") && !shown.contains("4141"),
                "{shown}"
            );
        }
    }

    #[test]
    fn generated_keys_are_random() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        assert_ne!(*a, *b);
        assert!(SealKey::from_bytes(&a).is_ok());
    }
}
