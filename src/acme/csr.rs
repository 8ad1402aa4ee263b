//! New private keys of each configured [`KeyType`] and the CSR an order is finalized with.

use rcgen::{
    CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256,
    PKCS_ECDSA_P384_SHA384, PKCS_RSA_SHA256, RsaKeySize,
};

use crate::config::KeyType;

/// Why a key or CSR could not be made.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// Key generation failed.
    #[error("cannot generate a {key} key: {reason}")]
    Key {
        /// The key type.
        key: &'static str,
        /// What the crypto library said.
        reason: String,
    },
    /// The CSR could not be built (e.g. a name rcgen refuses).
    #[error("cannot build the certificate request for {domains}: {reason}")]
    Request {
        /// The names, comma-separated.
        domains: String,
        /// Why.
        reason: String,
    },
}

/// A new private key of `key` type.
pub fn new_key(key: KeyType) -> Result<KeyPair, CsrError> {
    let generated = match key {
        KeyType::EcdsaP256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256),
        KeyType::EcdsaP384 => KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384),
        KeyType::Rsa2048 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048),
        KeyType::Rsa3072 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_3072),
        KeyType::Rsa4096 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_4096),
    };
    generated.map_err(|e| CsrError::Key {
        key: key.as_str(),
        reason: e.to_string(),
    })
}

/// A DER CSR for `domains` (all as SANs, the first also as CN), signed by `key`.
pub fn csr_der(domains: &[String], key: &KeyPair) -> Result<Vec<u8>, CsrError> {
    let err = |e: rcgen::Error| CsrError::Request {
        domains: domains.join(", "),
        reason: e.to_string(),
    };
    let mut params = CertificateParams::new(domains.to_vec()).map_err(err)?;
    let mut dn = DistinguishedName::new();
    if let Some(first) = domains.first() {
        dn.push(DnType::CommonName, first.clone());
    }
    params.distinguished_name = dn;
    Ok(params.serialize_request(key).map_err(err)?.der().to_vec())
}

#[cfg(test)]
mod tests {
    use rcgen::PublicKeyData;
    use x509_parser::prelude::FromDer;

    use super::*;

    #[test]
    fn every_key_type_signs_a_csr() {
        let domains = vec!["example.com".to_owned(), "*.example.com".to_owned()];
        for (name, kind) in KeyType::NAMES {
            if matches!(kind, KeyType::Rsa3072 | KeyType::Rsa4096) {
                continue; // slow to generate; the RSA path is covered by rsa-2048
            }
            let key = new_key(kind).unwrap();
            let der = csr_der(&domains, &key).unwrap();
            let (_, req) =
                x509_parser::certification_request::X509CertificationRequest::from_der(&der)
                    .unwrap();
            req.verify_signature()
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                req.certification_request_info.subject_pki.raw,
                &key.subject_public_key_info()[..],
                "{name}"
            );
        }
    }
}
