//! Certificate fixtures generated at test time with rcgen: a root, an intermediate, and
//! leaves with whatever names, validity and key a test needs. No binary blobs are checked in.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519, PKCS_RSA_SHA256,
    RsaKeySize, SignatureAlgorithm,
};
use time::{Duration, OffsetDateTime};

/// Key algorithms fixtures can use.
#[derive(Clone, Copy, Debug)]
pub enum Key {
    P256,
    P384,
    Rsa2048,
    Ed25519,
}

impl Key {
    pub fn generate(self) -> KeyPair {
        match self {
            Key::P256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256),
            Key::P384 => KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384),
            Key::Ed25519 => KeyPair::generate_for(&PKCS_ED25519),
            Key::Rsa2048 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048),
        }
        .expect("key generation")
    }
}

/// A root CA and an intermediate signed by it.
pub struct Pki {
    pub root: CertifiedIssuer<'static, KeyPair>,
    pub intermediate: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf with its key and the intermediate that signed it.
pub struct Leaf {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub key_pem: String,
    pub intermediate_pem: String,
}

impl Leaf {
    /// leaf + intermediate: what a fullchain file holds.
    pub fn fullchain(&self) -> String {
        format!("{}{}", self.cert_pem, self.intermediate_pem)
    }
}

/// What a leaf should look like.
pub struct LeafSpec {
    pub names: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub key: Key,
}

impl LeafSpec {
    /// Valid from a day ago for `days_left` more days, ECDSA P-256.
    pub fn new(names: &[&str], days_left: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        LeafSpec {
            names: names.iter().map(|s| s.to_string()).collect(),
            not_before: now - Duration::days(90 - days_left.min(89)),
            not_after: now + Duration::days(days_left) + Duration::hours(1),
            key: Key::P256,
        }
    }
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let root =
            CertifiedIssuer::self_signed(ca_params(&format!("{name} Root")), Key::P256.generate())
                .expect("root");
        let intermediate = CertifiedIssuer::signed_by(
            ca_params(&format!("{name} Intermediate")),
            Key::P256.generate(),
            &root,
        )
        .expect("intermediate");
        Pki { root, intermediate }
    }

    pub fn root_pem(&self) -> String {
        self.root.pem()
    }

    /// A leaf signed by the intermediate.
    pub fn leaf(&self, spec: LeafSpec) -> Leaf {
        let key = spec.key.generate();
        let mut params = CertificateParams::new(spec.names.clone()).expect("names");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, spec.names[0].clone());
        params.distinguished_name = dn;
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.intermediate).expect("leaf");
        Leaf {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            intermediate_pem: self.intermediate.pem(),
        }
    }
}

/// A self-signed end-entity certificate and its key, dated as `openssl req -x509 -days 365`
/// dates one: valid from now for a year.
pub fn self_signed_leaf(names: &[&str]) -> (String, String) {
    let key = Key::P256.generate();
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("names");
    params.is_ca = IsCa::ExplicitNoCa;
    params.not_before = OffsetDateTime::now_utc();
    params.not_after = params.not_before + Duration::days(365);
    let cert = params.self_signed(&key).expect("self-signed");
    (cert.pem(), key.serialize_pem())
}

/// A key that belongs to no certificate.
pub fn stray_key(alg: &'static SignatureAlgorithm) -> String {
    KeyPair::generate_for(alg).expect("key").serialize_pem()
}

/// A CA certificate's parameters, valid from a year ago for ten years.
pub fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(365);
    params.not_after = now + Duration::days(3650);
    params
}
