//! Private keys: reading PEM (PKCS#8, SEC1, PKCS#1) or DER, refusing encrypted ones with a
//! clear message, and checking that a key belongs to a leaf (ECDSA P-256/P-384, RSA,
//! Ed25519).

use aws_lc_rs::rsa::KeyPair as RsaKeyPair;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    KeyPair,
};

use super::parse::Cert;

/// Why a private key could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The file has no bytes.
    #[error("private key file is empty")]
    Empty,
    /// The key is protected by a passphrase.
    #[error(
        "private key is encrypted; services reload it unattended, so store it unencrypted (mode 0600)"
    )]
    Encrypted,
    /// No key block in the file.
    #[error("no private key in the file")]
    NoKey,
    /// A key of a kind certkeeper does not handle, or broken bytes.
    #[error("private key unreadable: {0}")]
    Unreadable(String),
}

/// A private key, reduced to its public half for matching.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrivateKey {
    /// `ecdsa-p256`, `ecdsa-p384`, `rsa` or `ed25519`.
    pub algorithm: &'static str,
    /// The public key as it appears in a certificate's subjectPublicKey bit string.
    pub public_key: Vec<u8>,
}

impl PrivateKey {
    /// Reads the first private key of a PEM file, or a DER PKCS#8 key.
    pub fn from_bytes(bytes: &[u8]) -> Result<PrivateKey, KeyError> {
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(KeyError::Empty);
        }
        let Some(blocks) = super::pem::read(bytes) else {
            return from_der(bytes, DerKind::Pkcs8);
        };
        for block in blocks {
            let block = block.map_err(KeyError::Unreadable)?;
            let kind = match block.label.as_str() {
                "ENCRYPTED PRIVATE KEY" => return Err(KeyError::Encrypted),
                "PRIVATE KEY" => DerKind::Pkcs8,
                "EC PRIVATE KEY" => DerKind::Sec1,
                "RSA PRIVATE KEY" => DerKind::Pkcs1,
                _ => continue,
            };
            if block.has_headers {
                // RFC 1421 headers in a key block are the legacy OpenSSL encryption
                // (Proc-Type: 4,ENCRYPTED / DEK-Info).
                return Err(KeyError::Encrypted);
            }
            return from_der(&block.der, kind);
        }
        Err(KeyError::NoKey)
    }
}

/// Whether `key` is the private half of `cert`'s public key.
pub fn key_matches(cert: &Cert, key: &PrivateKey) -> bool {
    let x = cert.parsed();
    x.public_key().subject_public_key.data.as_ref() == key.public_key.as_slice()
}

#[derive(Clone, Copy)]
enum DerKind {
    Pkcs8,
    Sec1,
    Pkcs1,
}

fn from_der(der: &[u8], kind: DerKind) -> Result<PrivateKey, KeyError> {
    let ec = |alg, name| {
        EcdsaKeyPair::from_private_key_der(alg, der).map(|k| PrivateKey {
            algorithm: name,
            public_key: k.public_key().as_ref().to_vec(),
        })
    };
    let rsa = |k: RsaKeyPair| PrivateKey {
        algorithm: "rsa",
        public_key: k.public_key().as_ref().to_vec(),
    };
    let found = match kind {
        DerKind::Sec1 => ec(&ECDSA_P256_SHA256_ASN1_SIGNING, "ecdsa-p256")
            .or_else(|_| ec(&ECDSA_P384_SHA384_ASN1_SIGNING, "ecdsa-p384"))
            .ok(),
        DerKind::Pkcs1 => RsaKeyPair::from_der(der).map(rsa).ok(),
        DerKind::Pkcs8 => ec(&ECDSA_P256_SHA256_ASN1_SIGNING, "ecdsa-p256")
            .or_else(|_| ec(&ECDSA_P384_SHA384_ASN1_SIGNING, "ecdsa-p384"))
            .ok()
            .or_else(|| RsaKeyPair::from_pkcs8(der).map(rsa).ok())
            .or_else(|| {
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                    .map(|k| PrivateKey {
                        algorithm: "ed25519",
                        public_key: k.public_key().as_ref().to_vec(),
                    })
                    .ok()
            }),
    };
    found.ok_or_else(|| {
        KeyError::Unreadable(
            "not an ECDSA P-256/P-384, RSA or Ed25519 key, or the bytes are corrupt".into(),
        )
    })
}
