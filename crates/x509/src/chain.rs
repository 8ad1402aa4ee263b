//! Chains: every certificate signed by the next, the last one anchored in a trusted root
//! (system roots plus configured extra roots), and the problems named precisely when not:
//! a missing intermediate, a wrong order, a self-signed leaf, an untrusted root.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;

use super::Error;
use super::parse::{Cert, read_certificates};

/// Root certificates trusted as chain anchors, indexed by subject, with a cache of signature
/// checks (many leaves share one intermediate; its signature is checked once).
#[derive(Default)]
pub struct TrustStore {
    /// Roots shared with other stores (the system's), consulted after this store's own.
    base: Option<Arc<TrustStore>>,
    /// Roots read the first time a chain needs them (the platform's: see
    /// [`TrustStore::system_on_demand`]), consulted after this store's own.
    on_demand: Option<std::sync::OnceLock<Box<TrustStore>>>,
    roots: Vec<Cert>,
    by_subject: HashMap<Vec<u8>, Vec<usize>>,
    verified: Mutex<HashMap<(u64, u64), bool>>,
}

impl fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustStore")
            .field("roots", &self.len())
            .finish()
    }
}

/// The platform's roots as rustls wants them for a TLS client (certkeeper's ACME and alert
/// clients); unusable roots are skipped, a missing system bundle gives an empty store.
pub fn native_root_store() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    roots
}

impl TrustStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The platform's roots (the system bundle, or `SSL_CERT_FILE`/`SSL_CERT_DIR`). Roots
    /// that fail to parse are skipped; a missing system bundle gives an empty store.
    pub fn system() -> Self {
        let mut store = Self::new();
        for der in rustls_native_certs::load_native_certs().certs {
            if let Ok(cert) = Cert::from_der(der.to_vec()) {
                store.add(cert);
            }
        }
        store
    }

    /// The platform's roots, as [`TrustStore::system`], read only the first time a chain is
    /// not anchored in a root of its own issuer (a pass over local-CA certificates, or over
    /// a CA whose root is in `trust_roots`, never reads them).
    pub fn system_on_demand() -> Self {
        TrustStore {
            on_demand: Some(std::sync::OnceLock::new()),
            ..Self::default()
        }
    }

    fn demanded(&self) -> Option<&TrustStore> {
        let cell = self.on_demand.as_ref()?;
        Some(cell.get_or_init(|| Box::new(TrustStore::system())))
    }

    /// Whether the roots read on demand (see [`TrustStore::system_on_demand`]) have been
    /// read.
    pub fn demand_met(&self) -> bool {
        self.on_demand.as_ref().is_some_and(|c| c.get().is_some())
    }

    /// A new store that trusts `base`'s roots without copying them (the system's ~150 roots
    /// are shared by every certificate's store), plus what is added to it.
    pub fn layered(base: &Arc<TrustStore>) -> Self {
        TrustStore {
            base: Some(Arc::clone(base)),
            ..Self::default()
        }
    }

    /// Adds every certificate of a PEM file as a trusted root.
    pub fn add_pem_file(&mut self, path: &Path) -> Result<(), Error> {
        let err = |reason: String| Error::TrustRoots {
            path: path.display().to_string(),
            reason,
        };
        let bytes = certkeeper_base::fsutil::read_regular(path, certkeeper_base::fsutil::MAX_FILE)
            .map_err(|e| err(e.to_string()))?;
        let (certs, _) = read_certificates(&bytes).map_err(|e| err(e.to_string()))?;
        for cert in certs {
            self.add(cert);
        }
        Ok(())
    }

    /// Adds one trusted root.
    pub fn add(&mut self, cert: Cert) {
        // Only this store's own roots: a base's may not even be read yet.
        if self.roots.iter().any(|r| r.der == cert.der) {
            return;
        }
        let subject = cert.subject_raw.clone();
        self.by_subject
            .entry(subject)
            .or_default()
            .push(self.roots.len());
        self.roots.push(cert);
    }

    /// How many roots are trusted.
    pub fn len(&self) -> usize {
        self.roots.len()
            + self.demanded().map_or(0, |d| d.len())
            + self.base.as_ref().map_or(0, |b| b.len())
    }

    /// Whether no root is trusted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether this exact certificate is a trusted root.
    pub fn contains(&self, cert: &Cert) -> bool {
        self.roots.iter().any(|r| r.der == cert.der)
            || self.demanded().is_some_and(|d| d.contains(cert))
            || self.base.as_ref().is_some_and(|b| b.contains(cert))
    }

    /// A trusted root that signed `cert`, if any.
    fn anchor_of(&self, cert: &Cert) -> Option<&Cert> {
        self.by_subject
            .get(&cert.issuer_raw)
            .into_iter()
            .flatten()
            .map(|&i| &self.roots[i])
            .find(|root| self.signed_by(cert, root))
            .or_else(|| self.demanded().and_then(|d| d.anchor_of(cert)))
            .or_else(|| self.base.as_ref().and_then(|b| b.anchor_of(cert)))
    }

    /// Records that `child` is signed by `parent` without checking it again: for links a
    /// matching manifest vouches for (the store's `Manifest::chain_signed`).
    pub fn vouch(&self, child: &Cert, parent: &Cert) {
        if child.issuer_raw != parent.subject_raw {
            return;
        }
        if let Ok(mut cache) = self.verified.lock() {
            cache.insert((digest(&child.der), digest(&parent.der)), true);
        }
    }

    /// Whether `child`'s signature verifies with `parent`'s key and the names chain.
    pub fn signed_by(&self, child: &Cert, parent: &Cert) -> bool {
        if child.issuer_raw != parent.subject_raw {
            return false;
        }
        let key = (digest(&child.der), digest(&parent.der));
        if let Ok(cache) = self.verified.lock()
            && let Some(&ok) = cache.get(&key)
        {
            return ok;
        }
        let (c, p) = (child.parsed(), parent.parsed());
        let ok = c.verify_signature(Some(p.public_key())).is_ok();
        if let Ok(mut cache) = self.verified.lock() {
            cache.insert(key, ok);
        }
        ok
    }
}

/// What is wrong with a chain. Displayed as a short phrase for `check`'s `problems`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainProblem {
    /// The leaf signs itself and is not a trusted root.
    SelfSignedLeaf,
    /// The certificates are present but not leaf first, each followed by its issuer.
    WrongOrder {
        /// What is out of place.
        detail: String,
    },
    /// No certificate in the file, and no trusted root, issued this one.
    MissingIntermediate {
        /// The issuer that is missing.
        issuer: String,
    },
    /// The chain ends at a self-signed root that is not trusted.
    UntrustedRoot {
        /// The root's subject.
        root: String,
    },
    /// A certificate that is not the leaf is not a CA.
    NotCa {
        /// Its subject.
        subject: String,
    },
    /// An intermediate in the file is past its notAfter.
    IntermediateExpired {
        /// Its subject.
        subject: String,
        /// Its notAfter.
        not_after: OffsetDateTime,
    },
    /// An intermediate in the file is not valid yet (its notBefore is ahead: a clock set
    /// back, or a chain dated wrongly).
    IntermediateNotYetValid {
        /// Its subject.
        subject: String,
        /// Its notBefore.
        not_before: OffsetDateTime,
    },
}

impl fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainProblem::SelfSignedLeaf => {
                f.write_str("self-signed leaf: not issued by a CA and not a trusted root")
            }
            ChainProblem::WrongOrder { detail } => write!(f, "chain in wrong order: {detail}"),
            ChainProblem::MissingIntermediate { issuer } => write!(
                f,
                "chain incomplete: missing intermediate \"{issuer}\" (not in the file, not a trusted root)"
            ),
            ChainProblem::UntrustedRoot { root } => {
                write!(
                    f,
                    "chain untrusted: it ends at \"{root}\", which is not a trusted root"
                )
            }
            ChainProblem::NotCa { subject } => {
                write!(
                    f,
                    "chain invalid: \"{subject}\" signs the certificate before it but is not a CA"
                )
            }
            ChainProblem::IntermediateExpired { subject, not_after } => write!(
                f,
                "chain invalid: intermediate \"{subject}\" is expired (notAfter {})",
                certkeeper_base::text::rfc3339(*not_after)
            ),
            ChainProblem::IntermediateNotYetValid {
                subject,
                not_before,
            } => write!(
                f,
                "chain invalid: intermediate \"{subject}\" is not yet valid (notBefore {})",
                certkeeper_base::text::rfc3339(*not_before)
            ),
        }
    }
}

/// Whether every certificate of `certs` is signed by the next one (a property of the bytes
/// alone: no trust store is consulted).
pub fn links_signed(certs: &[Cert]) -> bool {
    let check = TrustStore::new();
    certs.windows(2).all(|w| check.signed_by(&w[0], &w[1]))
}

/// Checks that `certs` (as read from a fullchain file) is leaf first, each certificate
/// followed by its issuer, and anchored in `trust`. Returns the index of the leaf (not 0
/// only when the file is out of order) and the problems found.
pub fn examine_chain(
    certs: &[Cert],
    trust: &TrustStore,
    now: OffsetDateTime,
) -> (usize, Vec<ChainProblem>) {
    let mut problems = Vec::new();
    if certs.is_empty() {
        return (0, problems);
    }
    // The leaf is the first certificate unless the file starts with a CA while it also
    // holds an end-entity certificate.
    let leaf = if certs[0].is_ca {
        certs.iter().position(|c| !c.is_ca).unwrap_or(0)
    } else {
        0
    };
    if leaf != 0 {
        problems.push(ChainProblem::WrongOrder {
            detail: format!(
                "the leaf \"{}\" is certificate {} of {}; it must come first",
                certs[leaf],
                leaf + 1,
                certs.len()
            ),
        });
        return (leaf, problems);
    }
    let first = &certs[0];
    if first.self_issued() && trust.signed_by(first, first) {
        if !trust.contains(first) {
            problems.push(if first.is_ca && certs.len() == 1 {
                ChainProblem::UntrustedRoot {
                    root: first.short_name(),
                }
            } else {
                ChainProblem::SelfSignedLeaf
            });
        }
        return (0, problems);
    }
    for i in 0..certs.len() - 1 {
        let (child, parent) = (&certs[i], &certs[i + 1]);
        if trust.signed_by(child, parent) {
            if !parent.is_ca {
                problems.push(ChainProblem::NotCa {
                    subject: parent.short_name(),
                });
                return (0, problems);
            }
            if now > parent.not_after {
                problems.push(ChainProblem::IntermediateExpired {
                    subject: parent.short_name(),
                    not_after: parent.not_after,
                });
            } else if now < parent.not_before {
                problems.push(ChainProblem::IntermediateNotYetValid {
                    subject: parent.short_name(),
                    not_before: parent.not_before,
                });
            }
            continue;
        }
        if let Some(j) = certs
            .iter()
            .enumerate()
            .position(|(j, c)| j != i && j != i + 1 && trust.signed_by(child, c))
        {
            problems.push(ChainProblem::WrongOrder {
                detail: format!(
                    "\"{}\" (certificate {}) is issued by certificate {}, not by the next one",
                    child,
                    i + 1,
                    j + 1
                ),
            });
        } else if trust.anchor_of(child).is_some() {
            problems.push(ChainProblem::WrongOrder {
                detail: format!(
                    "certificate {} \"{}\" does not belong after \"{}\"",
                    i + 2,
                    parent,
                    child
                ),
            });
        } else {
            problems.push(ChainProblem::MissingIntermediate {
                issuer: short_issuer(child),
            });
        }
        return (0, problems);
    }
    let last = &certs[certs.len() - 1];
    if last.self_issued() && trust.signed_by(last, last) {
        if !trust.contains(last) {
            problems.push(ChainProblem::UntrustedRoot {
                root: last.short_name(),
            });
        }
    } else if trust.anchor_of(last).is_none() {
        problems.push(ChainProblem::MissingIntermediate {
            issuer: short_issuer(last),
        });
    }
    (0, problems)
}

fn short_issuer(cert: &Cert) -> String {
    cert.issuer
        .split(", ")
        .find_map(|p| p.strip_prefix("CN="))
        .map(|cn| cn.to_owned())
        .unwrap_or_else(|| cert.issuer.clone())
}

fn digest(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}
