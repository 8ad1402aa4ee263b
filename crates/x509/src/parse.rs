//! Reading certificates from bytes: PEM bundles (any number of `CERTIFICATE` blocks, other
//! blocks ignored) or a single DER certificate, and the facts certkeeper needs from each.

use std::fmt;

use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use certkeeper_base::text::sha256_hex;

/// How a file was encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// PEM text.
    Pem,
    /// A single binary DER certificate.
    Der,
}

/// Why no certificate could be read from a file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The file has no bytes.
    #[error("empty file")]
    Empty,
    /// PEM text without any CERTIFICATE block (e.g. a key file).
    #[error("no certificate in the file")]
    NoCertificate,
    /// A PEM block whose base64 or DER is broken.
    #[error("corrupt PEM: {0}")]
    CorruptPem(String),
    /// Neither PEM nor a DER certificate.
    #[error("not a certificate: neither PEM nor DER")]
    NotCertificate,
}

/// Why one DER certificate could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DerError {
    /// The DER does not decode as an X.509 certificate.
    #[error("{0}")]
    Decode(String),
    /// Bytes follow the certificate.
    #[error("trailing bytes after the certificate")]
    Trailing,
}

/// Why the leaf of a fullchain file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read (missing, not a regular file, too large).
    #[error("reading {}: {source}", .path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no readable certificate.
    #[error("{}: {source}", .path.display())]
    Parse {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        source: ParseError,
    },
}

/// One certificate with what certkeeper reports about it. Owns its DER.
#[derive(Clone, Debug)]
pub struct Cert {
    /// The DER encoding.
    pub der: Vec<u8>,
    /// Subject DN, as text.
    pub subject: String,
    /// Issuer DN, as text.
    pub issuer: String,
    /// notBefore.
    pub not_before: OffsetDateTime,
    /// notAfter.
    pub not_after: OffsetDateTime,
    /// dNSName and iPAddress SANs, lower-case.
    pub sans: Vec<String>,
    /// Whether basicConstraints says CA.
    pub is_ca: bool,
    /// SHA-256 of the DER, lower-case hex.
    pub fingerprint: String,
    /// The subject name's DER, for chaining by name without parsing again.
    pub subject_raw: Vec<u8>,
    /// The issuer name's DER.
    pub issuer_raw: Vec<u8>,
}

impl Cert {
    /// Parses one DER certificate.
    pub fn from_der(der: Vec<u8>) -> Result<Cert, DerError> {
        // CA certificates repeat across chains (a thousand leaves share one intermediate):
        // each is parsed once per process.
        if let Some(known) = ca_cache::get(&der) {
            return Ok(known);
        }
        let cert = Self::parse_der(der)?;
        if cert.is_ca {
            ca_cache::put(&cert);
        }
        Ok(cert)
    }

    fn parse_der(der: Vec<u8>) -> Result<Cert, DerError> {
        let (rest, x) =
            X509Certificate::from_der(&der).map_err(|e| DerError::Decode(e.to_string()))?;
        if !rest.is_empty() {
            return Err(DerError::Trailing);
        }
        let mut sans = Vec::new();
        if let Ok(Some(ext)) = x.subject_alternative_name() {
            for name in &ext.value.general_names {
                match name {
                    GeneralName::DNSName(d) => sans.push(d.to_ascii_lowercase()),
                    GeneralName::IPAddress(b) => {
                        if let Some(ip) = ip_from_bytes(b) {
                            sans.push(ip.to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        let cert = Cert {
            subject: x.subject().to_string(),
            issuer: x.issuer().to_string(),
            not_before: x.validity().not_before.to_datetime(),
            not_after: x.validity().not_after.to_datetime(),
            sans,
            is_ca: x.is_ca(),
            fingerprint: String::new(),
            subject_raw: x.subject().as_raw().to_vec(),
            issuer_raw: x.issuer().as_raw().to_vec(),
            der: Vec::new(),
        };
        Ok(Cert {
            fingerprint: sha256_hex(&der),
            der,
            ..cert
        })
    }

    /// The parsed form, for signature and name checks.
    pub fn parsed(&self) -> X509Certificate<'_> {
        // `from_der` succeeded on these exact bytes when the Cert was built, and the bytes
        // are never modified, so parsing again cannot fail.
        #[allow(clippy::expect_used)]
        X509Certificate::from_der(&self.der)
            .map(|(_, x)| x)
            .expect("DER was parsed when the Cert was built")
    }

    /// Whether subject and issuer are the same name.
    pub fn self_issued(&self) -> bool {
        self.subject_raw == self.issuer_raw
    }

    /// A short name for messages: the CN when there is one, else the whole subject.
    pub fn short_name(&self) -> String {
        short_dn(&self.subject)
    }
}

impl fmt::Display for Cert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short_name())
    }
}

/// Reads every certificate from PEM text, or the one certificate of a DER file.
pub fn read_certificates(bytes: &[u8]) -> Result<(Vec<Cert>, Encoding), ParseError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ParseError::Empty);
    }
    if let Some(blocks) = super::pem::read(bytes) {
        let mut certs = Vec::new();
        for block in blocks {
            let block = block.map_err(ParseError::CorruptPem)?;
            if block.label != "CERTIFICATE" {
                continue;
            }
            let cert = Cert::from_der(block.der).map_err(|e| {
                ParseError::CorruptPem(format!("certificate {}: {e}", certs.len() + 1))
            })?;
            certs.push(cert);
        }
        if certs.is_empty() {
            return Err(ParseError::NoCertificate);
        }
        return Ok((certs, Encoding::Pem));
    }
    match Cert::from_der(bytes.to_vec()) {
        Ok(cert) => Ok((vec![cert], Encoding::Der)),
        Err(_) => Err(ParseError::NotCertificate),
    }
}

/// The first certificate of the fullchain file at `path` (the leaf of a live pair); the
/// error names the file and what is wrong.
pub fn leaf_of_file(path: &std::path::Path) -> Result<Cert, FileError> {
    let bytes = certkeeper_base::fsutil::read_regular(path, certkeeper_base::fsutil::MAX_FILE)
        .map_err(|source| FileError::Read {
            path: path.to_owned(),
            source,
        })?;
    let parse = |source| FileError::Parse {
        path: path.to_owned(),
        source,
    };
    read_certificates(&bytes)
        .map_err(parse)?
        .0
        .into_iter()
        .next()
        .ok_or_else(|| parse(ParseError::NoCertificate))
}

fn ip_from_bytes(b: &[u8]) -> Option<std::net::IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

fn short_dn(dn: &str) -> String {
    dn.split(", ")
        .find_map(|part| part.strip_prefix("CN="))
        .map(|cn| cn.to_owned())
        .unwrap_or_else(|| dn.to_owned())
}

/// The CA certificates parsed by this process, by DER: a few, each parsed once.
mod ca_cache {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::Cert;

    /// Enough for every intermediate and root a host's chains use; beyond it, parsing
    /// happens as without a cache.
    const MAX: usize = 256;

    static CACHE: Mutex<Option<HashMap<Vec<u8>, Cert>>> = Mutex::new(None);

    pub(super) fn get(der: &[u8]) -> Option<Cert> {
        CACHE.lock().ok()?.as_ref()?.get(der).cloned()
    }

    pub(super) fn put(cert: &Cert) {
        if let Ok(mut cache) = CACHE.lock() {
            let map = cache.get_or_insert_with(HashMap::new);
            if map.len() < MAX {
                map.insert(cert.der.clone(), cert.clone());
            }
        }
    }
}
