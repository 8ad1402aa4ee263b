//! Private keys for new certificates: generating one of the configured type, reading the
//! live one back when `reuse_key` asks for it, and the CSR an ACME order is finalized with.

use rcgen::{
    CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256,
    PKCS_ECDSA_P384_SHA384, PKCS_RSA_SHA256, RsaKeySize,
};

use crate::config::KeyType;

/// Why a key or CSR could not be made.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Key generation failed in the crypto library.
    #[error("cannot generate a {key} key: {reason}")]
    Generate {
        /// The key type asked for.
        key: &'static str,
        /// The library's reason.
        reason: String,
    },
    /// The existing key could not be read for reuse.
    #[error("cannot reuse the live private key: {0}")]
    Reuse(String),
    /// The CSR could not be built.
    #[error("cannot build the certificate request: {0}")]
    Csr(String),
}

/// Generates a new key of `kind`.
pub fn generate(kind: KeyType) -> Result<KeyPair, Error> {
    let made = match kind {
        KeyType::EcdsaP256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256),
        KeyType::EcdsaP384 => KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384),
        KeyType::Rsa2048 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048),
        KeyType::Rsa3072 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_3072),
        KeyType::Rsa4096 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_4096),
    };
    made.map_err(|e| Error::Generate {
        key: kind.as_str(),
        reason: e.to_string(),
    })
}

/// Reads an existing key (PKCS#8, SEC1 or PKCS#1 PEM) for `reuse_key`.
pub fn from_pem(pem: &str) -> Result<KeyPair, Error> {
    let first = crate::x509::pem::read(pem.as_bytes())
        .and_then(|blocks| blocks.into_iter().next())
        .ok_or_else(|| Error::Reuse("no PEM block found".into()))?
        .map_err(Error::Reuse)?;
    KeyPair::try_from(first.der).map_err(|e| Error::Reuse(e.to_string()))
}

/// A key for a new certificate: the live one when `reuse` and it is readable, else a new
/// one of `kind`.
pub fn for_renewal(kind: KeyType, reuse: bool, live_pem: Option<&str>) -> Result<KeyPair, Error> {
    match (reuse, live_pem) {
        (true, Some(pem)) => from_pem(pem),
        _ => generate(kind),
    }
}

/// A DER CSR for `domains` (the first one is also the CN), signed by `key`.
pub fn csr_der(key: &KeyPair, domains: &[String]) -> Result<Vec<u8>, Error> {
    let mut params =
        CertificateParams::new(domains.to_vec()).map_err(|e| Error::Csr(e.to_string()))?;
    let mut dn = DistinguishedName::new();
    if let Some(first) = domains.first() {
        dn.push(DnType::CommonName, first.clone());
    }
    params.distinguished_name = dn;
    params
        .serialize_request(key)
        .map(|csr| csr.der().to_vec())
        .map_err(|e| Error::Csr(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x509::PrivateKey;

    #[test]
    fn every_key_type_generates_and_reads_back() {
        for (name, kind) in KeyType::NAMES {
            if name == "rsa-4096" {
                continue; // seconds of CPU for nothing rsa-2048/3072 do not already show
            }
            let key = generate(kind).unwrap();
            let pem = key.serialize_pem();
            let parsed = PrivateKey::from_bytes(pem.as_bytes()).unwrap();
            let expected = if name.starts_with("rsa") { "rsa" } else { name };
            assert_eq!(parsed.algorithm, expected, "{name}");
            let reused = for_renewal(kind, true, Some(&pem)).unwrap();
            assert_eq!(reused.public_key_raw(), key.public_key_raw(), "{name}");
            let fresh = for_renewal(kind, false, Some(&pem)).unwrap();
            assert_ne!(fresh.public_key_raw(), key.public_key_raw(), "{name}");
        }
    }

    #[test]
    fn csr_carries_every_domain() {
        let key = generate(KeyType::EcdsaP256).unwrap();
        let domains = vec!["example.test".to_string(), "*.example.test".to_string()];
        let der = csr_der(&key, &domains).unwrap();
        use x509_parser::prelude::FromDer;
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&der).unwrap();
        csr.verify_signature().unwrap();
        let text = format!(
            "{:?}",
            csr.requested_extensions().map(|e| e.collect::<Vec<_>>())
        );
        assert!(
            text.contains("example.test") && text.contains("*.example.test"),
            "{text}"
        );
    }
}
