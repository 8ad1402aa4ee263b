//! The built-in CA: a root and an intermediate created on first use under
//! `state_dir/ca/<issuer>/`, and leaves issued from the intermediate with the configured names
//! and validity. Its root is exported at `state_dir/ca/<issuer>/root.pem` for the clients that
//! must trust it, and `check`/`verify` trust it for the certificates it issued.
//!
//! Files: `root.pem` (the roots to trust: the signing root first, then, while the root is
//! being rotated, the other one), `root.key` and `intermediate.pem` (the intermediate's
//! certificate followed by its key), keys mode 0600. The directory appears whole or not at all
//! (it is built under a temporary name and renamed), and a rotated intermediate replaces the
//! old one with a single rename. The root itself is rotated in phases ([`rotation`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, SerialNumber,
};
use time::OffsetDateTime;

pub mod rotation;

use crate::config::Usage;
use crate::store::{Durable, StateDir};
use crate::x509::pem;
use crate::x509::read_certificates;

/// Whether `leaf` was issued by an intermediate of the local CA `name` (see
/// [`LocalCa::rotate_intermediate`] for the name every intermediate has).
fn issued_by(leaf: &crate::x509::Cert, name: &str) -> bool {
    let prefix = format!("CN=certkeeper local CA {name} intermediate ");
    leaf.issuer.split(", ").any(|part| {
        part.strip_prefix(&prefix)
            .is_some_and(|stamp| stamp.len() == 8 && stamp.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// How long the root is valid.
pub const ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// How long an intermediate is valid; it is rotated when a new leaf would outlive it.
pub const INTERMEDIATE_VALIDITY: Duration = Duration::from_secs(2 * 365 * 86_400);
/// The exported root certificate's file name in the CA directory.
const ROOT_FILE: &str = "root.pem";
/// Leaves start this long before issuance, for hosts whose clocks run a little behind.
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// Why the local CA could not be opened or could not issue.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the CA's files failed.
    #[error("local CA files in {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Writing the CA's files failed.
    #[error("local CA: {0}")]
    Write(crate::store::Error),
    /// The stored CA files are unusable.
    #[error(
        "local CA files in {path} are damaged: {reason}; move the directory away to start a new CA"
    )]
    Damaged {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The CA's files are gone while certificates it issued are live: a new root would
    /// silently leave every client that trusts the old one unable to verify what it issues.
    #[error(
        "local CA {name}: its files in {path} are gone, but certificates it issued are live ({certificates}); restore {path} from a backup, or remove the live files of those certificates to start over with a new root"
    )]
    Vanished {
        /// The issuer's name.
        name: String,
        /// The CA's directory.
        path: PathBuf,
        /// The certificates whose live leaf it issued, comma-separated.
        certificates: String,
    },
    /// The root is not valid yet: it was made while the clock was ahead, and nothing it
    /// signs can be verified until then. A new root is not made silently in its place.
    #[error(
        "local CA {name}: its root is not valid before {not_before} (it was made while the clock was wrong); move {path} away to make a new root (clients that trust the old root.pem need the new one), or correct the clock"
    )]
    RootNotYetValid {
        /// The issuer's name.
        name: String,
        /// The CA's directory.
        path: PathBuf,
        /// The root's notBefore, RFC 3339.
        not_before: String,
    },
    /// `ca rotate` before the CA was ever used.
    #[error(
        "local CA {name} does not exist yet ({path} is missing): it is created at its first issue; run a renewal first"
    )]
    NotCreated {
        /// The issuer's name.
        name: String,
        /// The CA's directory.
        path: PathBuf,
    },
    /// `ca rotate` while a rotation is under way.
    #[error(
        "local CA {name}: a root rotation is under way (phase {phase}); each pass moves it on, `certkeeper ca status {name}` shows where it stands"
    )]
    RotationUnderWay {
        /// The issuer's name.
        name: String,
        /// Its phase.
        phase: rotation::Phase,
    },
    /// Certificate generation failed.
    #[error("local CA cannot sign: {0}")]
    Sign(String),
    /// The requested validity outlives the root.
    #[error(
        "a {validity_days}-day certificate would outlive the local CA's root (notAfter {root_not_after})"
    )]
    OutlivesRoot {
        /// Requested validity.
        validity_days: u64,
        /// The root's notAfter.
        root_not_after: String,
    },
}

/// An opened local CA.
pub struct LocalCa {
    dir: PathBuf,
    name: String,
    /// The signing root, PEM.
    signing_pem: String,
    /// Every root to trust (`root.pem`), the signing one first.
    trusted_pem: String,
    root_key: KeyPair,
    root_not_before: OffsetDateTime,
    root_not_after: OffsetDateTime,
    intermediate_pem: String,
    intermediate: Issuer<'static, KeyPair>,
    intermediate_not_before: OffsetDateTime,
    intermediate_not_after: OffsetDateTime,
    /// Where the CA is kept; `None` while it lives in memory only (a dry run).
    state: Option<StateDir>,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa")
            .field("dir", &self.dir)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl LocalCa {
    /// The directory of issuer `name` under `state_dir`.
    pub fn dir(state_dir: &Path, name: &str) -> PathBuf {
        state_dir.join("ca").join(name)
    }

    /// Where issuer `name`'s root certificate is exported.
    pub fn root_path(state_dir: &Path, name: &str) -> PathBuf {
        Self::dir(state_dir, name).join(ROOT_FILE)
    }

    /// Opens the CA of issuer `name`, creating it on first use. With a read-only
    /// `state_dir` (dry runs) a CA that does not exist yet is made in memory only and nothing
    /// is written.
    ///
    /// `live` names the certificates configured with this issuer and their live fullchains:
    /// when one of them holds a leaf this CA issued (its issuer is one of this CA's
    /// intermediates), the CA's files were lost, and a new root is not made in their place
    /// ([`Error::Vanished`]).
    pub fn open(
        state_dir: &StateDir,
        name: &str,
        now: OffsetDateTime,
        live: &[(&str, &Path)],
    ) -> Result<LocalCa, Error> {
        let dir = Self::dir(state_dir.path(), name);
        let keep = state_dir.is_writable().then(|| state_dir.clone());
        if dir.join(ROOT_FILE).exists() {
            if let Some(state) = &keep
                // A CA made before the root was exported to every user: open the way to it.
                && let Err(e) = state.open_way(&["ca", name])
            {
                tracing::warn!("Cannot open the way to the local CA's root for every user: {e}");
            }
            return Self::load(&dir, name, keep);
        }
        let issued: Vec<&str> = live
            .iter()
            .filter(|(_, fullchain)| {
                crate::x509::leaf_of_file(fullchain).is_ok_and(|leaf| issued_by(&leaf, name))
            })
            .map(|(cert, _)| *cert)
            .collect();
        if !issued.is_empty() {
            return Err(Error::Vanished {
                name: name.to_owned(),
                path: dir,
                certificates: issued.join(", "),
            });
        }
        let mut ca = Self::create(&dir, name, &format!("certkeeper local CA {name}"), now)?;
        if let Some(state) = keep {
            ca.write_new(&state)?;
            ca.state = Some(state);
        }
        Ok(ca)
    }

    /// The roots to trust, PEM: the signing root, and the other one while the root is
    /// being rotated.
    pub fn root_pem(&self) -> &str {
        &self.trusted_pem
    }

    /// Issues a leaf for `domains` with `key`, valid `validity` from `now`. Returns the
    /// fullchain PEM (leaf, intermediate). Rotates the intermediate first when the leaf would
    /// outlive it, or when it is not valid yet (made while the clock was ahead); a root that
    /// is not valid yet is [`Error::RootNotYetValid`].
    pub fn issue(
        &mut self,
        domains: &[String],
        key: &KeyPair,
        validity: Duration,
        usage: Usage,
        now: OffsetDateTime,
    ) -> Result<String, Error> {
        let not_after = now + validity;
        if not_after > self.root_not_after {
            return Err(Error::OutlivesRoot {
                validity_days: validity.as_secs() / 86_400,
                root_not_after: crate::text::rfc3339(self.root_not_after),
            });
        }
        if self.root_not_before > now + BACKDATE {
            return Err(Error::RootNotYetValid {
                name: self.name.clone(),
                path: self.dir.clone(),
                not_before: crate::text::rfc3339(self.root_not_before),
            });
        }
        if not_after > self.intermediate_not_after || self.intermediate_not_before > now {
            self.rotate_intermediate(now)?;
        }
        let mut params = CertificateParams::new(domains.to_vec()).map_err(sign)?;
        let mut dn = DistinguishedName::new();
        if let Some(first) = domains.first() {
            dn.push(DnType::CommonName, first.clone());
        }
        params.distinguished_name = dn;
        params.not_before = now - BACKDATE;
        params.not_after = not_after;
        params.serial_number = Some(random_serial()?);
        params.is_ca = IsCa::NoCa;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if key.algorithm() == &PKCS_RSA_SHA256 {
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        params.extended_key_usages = Vec::new();
        if usage.server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if usage.client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        let leaf = params.signed_by(key, &self.intermediate).map_err(sign)?;
        Ok(format!(
            "{}{}",
            pem::write("CERTIFICATE", leaf.der()),
            self.intermediate_pem
        ))
    }

    /// A new CA, in memory, whose root is named `root_cn`.
    fn create(
        dir: &Path,
        name: &str,
        root_cn: &str,
        now: OffsetDateTime,
    ) -> Result<LocalCa, Error> {
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(sign)?;
        let root_params = ca_params(root_cn, now, ROOT_VALIDITY, None)?;
        let root = root_params.self_signed(&root_key).map_err(sign)?;
        let signing_pem = pem::write("CERTIFICATE", root.der());
        let mut ca = LocalCa {
            dir: dir.to_owned(),
            name: name.to_owned(),
            root_not_before: now - BACKDATE,
            root_not_after: now + ROOT_VALIDITY,
            trusted_pem: signing_pem.clone(),
            signing_pem,
            root_key,
            // Replaced at once by rotate_intermediate below.
            intermediate_pem: String::new(),
            intermediate: Issuer::new(CertificateParams::default(), placeholder_key()?),
            intermediate_not_before: now,
            intermediate_not_after: now,
            state: None,
        };
        ca.rotate_intermediate(now)?;
        Ok(ca)
    }

    /// Makes a new intermediate signed by the root; persisted with one rename.
    fn rotate_intermediate(&mut self, now: OffsetDateTime) -> Result<(), Error> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(sign)?;
        let stamp = format!(
            "{:04}{:02}{:02}",
            now.year(),
            u8::from(now.month()),
            now.day()
        );
        let params = ca_params(
            &format!("certkeeper local CA {} intermediate {stamp}", self.name),
            now,
            INTERMEDIATE_VALIDITY,
            Some(0),
        )?;
        let root_issuer =
            Issuer::from_ca_cert_pem(&self.signing_pem, &self.root_key).map_err(sign)?;
        let cert = params.signed_by(&key, &root_issuer).map_err(sign)?;
        let pem = pem::write("CERTIFICATE", cert.der());
        let not_after = (now + INTERMEDIATE_VALIDITY).min(self.root_not_after);
        if let Some(state) = &self.state {
            let bundle = format!("{pem}{}", key_pem(&key));
            state
                .write_file(
                    &["ca", &self.name],
                    "intermediate.pem",
                    bundle.as_bytes(),
                    0o600,
                    Durable::Now,
                )
                .map_err(Error::Write)?;
        }
        self.intermediate = Issuer::new(params, key);
        self.intermediate_pem = pem;
        self.intermediate_not_before = now - BACKDATE;
        self.intermediate_not_after = not_after;
        Ok(())
    }

    /// Writes a freshly created CA: all files in a temporary directory, then one rename.
    fn write_new(&self, state: &StateDir) -> Result<(), Error> {
        self.write_dir_at(state, &["ca"], &self.name, false)
    }

    /// Writes this CA's files as the directory `state_dir/<dir...>/<name>`, whole.
    fn write_dir_at(
        &self,
        state: &StateDir,
        dir: &[&str],
        name: &str,
        replace: bool,
    ) -> Result<(), Error> {
        let intermediate = self.intermediate_key_bundle();
        let root_key = key_pem(&self.root_key);
        let files: [(&str, &[u8], u32); 3] = [
            (ROOT_FILE, self.trusted_pem.as_bytes(), 0o644),
            ("root.key", root_key.as_bytes(), 0o600),
            ("intermediate.pem", intermediate.as_bytes(), 0o600),
        ];
        state
            .write_dir(dir, name, &files, replace, Durable::Now)
            .map_err(Error::Write)
    }

    fn intermediate_key_bundle(&self) -> String {
        format!(
            "{}{}",
            self.intermediate_pem,
            key_pem(self.intermediate.key())
        )
    }

    fn load(dir: &Path, name: &str, state: Option<StateDir>) -> Result<LocalCa, Error> {
        let read = |file: &str| {
            crate::fsutil::read_regular_text(&dir.join(file), crate::fsutil::MAX_FILE)
                .map_err(|e| io(&dir.join(file), e))
        };
        let damaged = |reason: String| Error::Damaged {
            path: dir.to_owned(),
            reason,
        };
        for key_file in ["root.key", "intermediate.pem"] {
            crate::perms::check_trusted_file(&dir.join(key_file), "the local CA's key", true)
                .map_err(damaged)?;
        }
        let trusted_pem = read(ROOT_FILE)?;
        let root_key = key_of(&read("root.key")?).map_err(|e| damaged(format!("root.key: {e}")))?;
        let bundle = read("intermediate.pem")?;
        let key_der =
            pkcs8_block(&bundle).ok_or_else(|| damaged("intermediate.pem holds no key".into()))?;
        let intermediate_key = KeyPair::try_from(key_der.as_slice())
            .map_err(|e| damaged(format!("intermediate key: {e}")))?;
        let (root_certs, _) = read_certificates(trusted_pem.as_bytes())
            .map_err(|e| damaged(format!("root.pem: {e}")))?;
        let (inter_certs, _) = read_certificates(bundle.as_bytes())
            .map_err(|e| damaged(format!("intermediate.pem: {e}")))?;
        let (root, inter) = match (root_certs.first(), inter_certs.first()) {
            (Some(r), Some(i)) => (r, i),
            _ => return Err(damaged("a certificate is missing".into())),
        };
        let intermediate_pem = pem::write("CERTIFICATE", &inter.der);
        let signing_pem = pem::write("CERTIFICATE", &root.der);
        let intermediate = Issuer::from_ca_cert_der(&inter.der.clone().into(), intermediate_key)
            .map_err(|e| damaged(format!("intermediate: {e}")))?;
        Ok(LocalCa {
            dir: dir.to_owned(),
            name: name.to_owned(),
            signing_pem,
            trusted_pem,
            root_key,
            root_not_before: root.not_before,
            root_not_after: root.not_after,
            intermediate_pem,
            intermediate,
            intermediate_not_before: inter.not_before,
            intermediate_not_after: inter.not_after,
            state,
        })
    }
}

fn ca_params(
    cn: &str,
    now: OffsetDateTime,
    validity: Duration,
    path_len: Option<u8>,
) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "certkeeper");
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - BACKDATE;
    params.not_after = now + validity;
    params.serial_number = Some(random_serial()?);
    params.use_authority_key_identifier_extension = path_len.is_some();
    Ok(params)
}

fn random_serial() -> Result<SerialNumber, Error> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| Error::Sign("no randomness for a serial number".into()))?;
    bytes[0] &= 0x7f; // a positive INTEGER
    bytes[0] |= 0x01; // and never one with a leading zero byte to strip
    Ok(SerialNumber::from_slice(&bytes))
}

/// A key used only until the first intermediate exists (never signs anything).
fn placeholder_key() -> Result<KeyPair, Error> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(sign)
}

/// A key as the PKCS#8 PEM block it is stored as.
fn key_pem(key: &KeyPair) -> String {
    pem::write("PRIVATE KEY", &key.serialize_der())
}

/// The first readable PKCS#8 `PRIVATE KEY` block of `text`.
fn pkcs8_block(text: &str) -> Option<Vec<u8>> {
    pem::read(text.as_bytes())?
        .into_iter()
        .flatten()
        .find(|b| b.label == "PRIVATE KEY")
        .map(|b| b.der)
}

/// The key of a file that holds one PKCS#8 key.
fn key_of(text: &str) -> Result<KeyPair, String> {
    let der = pkcs8_block(text).ok_or_else(|| "no private key".to_owned())?;
    KeyPair::try_from(der.as_slice()).map_err(|e| e.to_string())
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_owned(),
        source,
    }
}

fn sign(e: rcgen::Error) -> Error {
    Error::Sign(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeyType;
    use crate::x509::{PrivateKey, TrustStore, examine_chain, key_matches};

    use std::fs;

    fn writable(dir: &Path) -> StateDir {
        StateDir::open(dir).unwrap()
    }

    fn domains() -> Vec<String> {
        vec![
            "localhost".into(),
            "demo.localhost".into(),
            "*.apps.test".into(),
        ]
    }

    /// A server leaf for [`domains`] with a new P-256 key, valid `validity` from `now`.
    fn issue_p256(
        ca: &mut LocalCa,
        validity: Duration,
        now: OffsetDateTime,
    ) -> Result<String, Error> {
        let key = crate::keys::generate(KeyType::EcdsaP256).unwrap();
        ca.issue(&domains(), &key, validity, Usage::default(), now)
    }

    /// Issues with `ca` and checks the chain against its root alone, the key and the names.
    fn assert_sound(ca: &mut LocalCa, kind: KeyType, validity: Duration, now: OffsetDateTime) {
        let key = crate::keys::generate(kind).unwrap();
        let chain = ca
            .issue(&domains(), &key, validity, Usage::default(), now)
            .unwrap();
        let (certs, _) = read_certificates(chain.as_bytes()).unwrap();
        assert_eq!(certs.len(), 2);
        let mut trust = TrustStore::new();
        let (roots, _) = read_certificates(ca.root_pem().as_bytes()).unwrap();
        trust.add(roots[0].clone());
        let (leaf, problems) = examine_chain(&certs, &trust, now);
        assert_eq!((leaf, problems), (0, vec![]));
        let private = PrivateKey::from_bytes(key.serialize_pem().as_bytes()).unwrap();
        assert!(key_matches(&certs[0], &private));
        assert_eq!(certs[0].sans, domains());
        assert!(!certs[0].is_ca);
        assert_eq!(
            certs[0].not_after.unix_timestamp(),
            (now + validity).unix_timestamp()
        );
        assert!(certs[0].not_before < now);
    }

    /// A chain anchored in its own issuer's root never makes a pass read the system's.
    #[test]
    fn the_system_roots_are_read_only_when_a_chain_needs_them() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let mut ca = LocalCa::open(&StateDir::read_only(dir.path()), "internal", now, &[]).unwrap();
        let chain = issue_p256(&mut ca, Duration::from_secs(86_400), now).unwrap();
        let (certs, _) = read_certificates(chain.as_bytes()).unwrap();
        let system = std::sync::Arc::new(TrustStore::system_on_demand());
        let mut own = TrustStore::layered(&system);
        let (roots, _) = read_certificates(ca.root_pem().as_bytes()).unwrap();
        own.add(roots[0].clone());
        assert_eq!(examine_chain(&certs, &own, now), (0, vec![]));
        assert!(!system.demand_met());
        // A chain its issuer's roots do not anchor asks the system's.
        let alone = TrustStore::layered(&system);
        let (_, problems) = examine_chain(&certs, &alone, now);
        assert!(!problems.is_empty());
        assert!(system.demand_met());
    }

    #[test]
    fn a_vanished_ca_whose_leaves_are_live_is_not_replaced_by_a_new_root() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let mut ca = LocalCa::open(&writable(dir.path()), "internal", now, &[]).unwrap();
        let chain = issue_p256(&mut ca, Duration::from_secs(86_400), now).unwrap();
        let live = dir.path().join("fullchain.pem");
        fs::write(&live, &chain).unwrap();
        // Another CA's leaf (a CA of another name) is no evidence.
        let other = dir.path().join("other.pem");
        let mut stranger = LocalCa::open(&writable(dir.path()), "other", now, &[]).unwrap();
        let chain = issue_p256(&mut stranger, Duration::from_secs(86_400), now).unwrap();
        fs::write(&other, chain).unwrap();
        let ca_dir = LocalCa::dir(dir.path(), "internal");
        fs::remove_dir_all(&ca_dir).unwrap();
        let err = LocalCa::open(
            &writable(dir.path()),
            "internal",
            now,
            &[
                ("www", &live),
                ("api", &other),
                ("new", &dir.path().join("none")),
            ],
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::Vanished { certificates, .. } if certificates == "www"),
            "{err}"
        );
        assert!(!ca_dir.exists());
        // Without live leaves of its own, a CA is made as on first use.
        LocalCa::open(&writable(dir.path()), "internal", now, &[("api", &other)]).unwrap();
        assert!(ca_dir.join("root.pem").exists());
    }

    #[test]
    fn created_on_first_use_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let mut ca = LocalCa::open(&writable(dir.path()), "internal", now, &[]).unwrap();
        for kind in [KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::Rsa2048] {
            assert_sound(&mut ca, kind, Duration::from_secs(90 * 86_400), now);
        }
        let ca_dir = LocalCa::dir(dir.path(), "internal");
        use std::os::unix::fs::PermissionsExt;
        let mode = |f: &str| fs::metadata(ca_dir.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode("root.key"), mode("intermediate.pem")), (0o600, 0o600));
        assert_eq!(mode("."), 0o711);
        let root = fs::read_to_string(ca_dir.join("root.pem")).unwrap();
        assert_eq!(root, ca.root_pem());
        // No temporary directory is left behind.
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("ca"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("internal")]);

        let mut again = LocalCa::open(&writable(dir.path()), "internal", now, &[]).unwrap();
        assert_eq!(again.root_pem(), root);
        assert_sound(
            &mut again,
            KeyType::EcdsaP256,
            Duration::from_secs(30 * 86_400),
            now,
        );
    }

    #[test]
    fn dry_open_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let mut ca = LocalCa::open(&StateDir::read_only(dir.path()), "internal", now, &[]).unwrap();
        assert_sound(
            &mut ca,
            KeyType::EcdsaP256,
            Duration::from_secs(86_400),
            now,
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn intermediate_rotates_before_a_leaf_would_outlive_it() {
        let dir = tempfile::tempdir().unwrap();
        let start = OffsetDateTime::now_utc() - time::Duration::days(700);
        LocalCa::open(&writable(dir.path()), "internal", start, &[]).unwrap();
        let before =
            fs::read_to_string(LocalCa::dir(dir.path(), "internal").join("intermediate.pem"))
                .unwrap();
        let now = OffsetDateTime::now_utc();
        let mut ca = LocalCa::open(&writable(dir.path()), "internal", now, &[]).unwrap();
        assert_sound(
            &mut ca,
            KeyType::EcdsaP256,
            Duration::from_secs(90 * 86_400),
            now,
        );
        let after =
            fs::read_to_string(LocalCa::dir(dir.path(), "internal").join("intermediate.pem"))
                .unwrap();
        assert_ne!(before, after, "the intermediate was not rotated");
        // The rotated intermediate is kept: the next open issues from it without rotating.
        let mut reopened = LocalCa::open(&writable(dir.path()), "internal", now, &[]).unwrap();
        assert_sound(
            &mut reopened,
            KeyType::EcdsaP256,
            Duration::from_secs(90 * 86_400),
            now,
        );
        let again =
            fs::read_to_string(LocalCa::dir(dir.path(), "internal").join("intermediate.pem"))
                .unwrap();
        assert_eq!(after, again);
    }

    #[test]
    fn an_intermediate_made_under_a_clock_ahead_is_rotated_and_a_root_refused() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let ahead = now + time::Duration::days(3650);
        // A root made under the right clock, an intermediate made while it was ahead.
        let mut ca = LocalCa::open(&writable(dir.path()), "internal", now, &[]).unwrap();
        ca.rotate_intermediate(ahead).unwrap();
        let mut ca = LocalCa::open(&writable(dir.path()), "internal", now, &[]).unwrap();
        assert_sound(
            &mut ca,
            KeyType::EcdsaP256,
            Duration::from_secs(90 * 86_400),
            now,
        );
        // A root made while the clock was ahead signs nothing valid now: refused by name.
        let other = tempfile::tempdir().unwrap();
        LocalCa::open(&writable(other.path()), "internal", ahead, &[]).unwrap();
        let root = fs::read(LocalCa::root_path(other.path(), "internal")).unwrap();
        let mut ca = LocalCa::open(&writable(other.path()), "internal", now, &[]).unwrap();
        let err = issue_p256(&mut ca, Duration::from_secs(86_400), now).unwrap_err();
        assert!(matches!(err, Error::RootNotYetValid { .. }), "{err}");
        assert!(
            err.to_string().contains("its root is not valid before")
                && err.to_string().contains("clock was wrong"),
            "{err}"
        );
        // Nothing was replaced.
        assert_eq!(
            fs::read(LocalCa::root_path(other.path(), "internal")).unwrap(),
            root
        );
    }

    #[test]
    fn refuses_to_outlive_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let mut ca = LocalCa::open(&StateDir::read_only(dir.path()), "internal", now, &[]).unwrap();
        let err =
            issue_p256(&mut ca, ROOT_VALIDITY + Duration::from_secs(86_400), now).unwrap_err();
        assert!(
            err.to_string()
                .contains("would outlive the local CA's root"),
            "{err}"
        );
    }

    #[test]
    fn damaged_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        LocalCa::open(&writable(dir.path()), "internal", now, &[]).unwrap();
        fs::write(
            LocalCa::dir(dir.path(), "internal").join("root.key"),
            "garbage",
        )
        .unwrap();
        let err = LocalCa::open(&writable(dir.path()), "internal", now, &[]).unwrap_err();
        assert!(err.to_string().contains("damaged: root.key"), "{err}");
    }
}
