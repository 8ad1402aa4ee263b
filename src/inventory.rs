//! The inventory behind `check` and `verify`: every managed certificate's live files, and
//! every certificate file found under `discover.paths`, each examined and given a status.
//!
//! Read-only by construction: it opens files for reading and never creates, renames or
//! deletes anything, so it works for a monitoring user and never disturbs a swap.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use serde::Serialize;
use time::OffsetDateTime;

use crate::config::{self, BeforeExpiry, Config, Issuer};
use crate::issuer::local_ca::LocalCa;
use crate::store::{Derived, manifest};
use crate::text::{rfc3339, sha256_hex};
use crate::x509::{
    Cert, Encoding, ParseError, PrivateKey, Severity, TrustStore, examine_chain, key_matches,
    read_certificates, uncovered,
};

/// The status of one certificate, in the Nagios sense.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nothing to do.
    Ok,
    /// Due for renewal.
    Warning,
    /// Broken or about to break.
    Critical,
    /// Nothing could be checked: this user may not read the files (see
    /// [`Entry::not_checked`]).
    Unknown,
}

impl Status {
    /// The lower-case word used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Critical => "critical",
            Status::Unknown => "unknown",
        }
    }

    /// The Nagios exit code: 0, 1, 2 or 3.
    pub fn exit_code(self) -> u8 {
        self as u8
    }
}

/// What `check` reports about one certificate. This is also the `check --json` object.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    /// The managed name, or the file path for discovered certificates.
    pub name: String,
    /// Whether the certificate is managed by this config.
    pub managed: bool,
    /// The certificate file (fullchain for managed ones).
    pub path: PathBuf,
    /// The private key file of a managed certificate.
    pub privkey: Option<PathBuf>,
    /// Configured domains (managed), or the leaf's SANs (discovered).
    pub domains: Vec<String>,
    /// The leaf's subject.
    pub subject: Option<String>,
    /// The leaf's issuer.
    pub issuer: Option<String>,
    /// The leaf's DNS and IP SANs.
    pub sans: Vec<String>,
    /// The leaf's notBefore (RFC 3339).
    pub not_before: Option<String>,
    /// The leaf's notAfter (RFC 3339).
    pub not_after: Option<String>,
    /// Whole days until notAfter (negative once expired).
    pub days_left: Option<i64>,
    /// Whether renewal is due per `renewal.before_expiry`.
    pub due: bool,
    /// How many certificates the file holds.
    pub chain_length: usize,
    /// SHA-256 of the leaf's DER, hex.
    pub fingerprint: Option<String>,
    /// Whether a manifest of the live files exists and matched (`null` when there is none).
    pub integrity: Option<bool>,
    /// Whether the private key matches the leaf: checked on the key, or, when this user may
    /// not read the key, as the manifest recorded it at deploy; `null` when unknown.
    pub key_match: Option<bool>,
    /// `ok`, `warning`, `critical`, or `unknown` when nothing could be checked.
    pub status: Status,
    /// Short descriptions of what is wrong; empty when ok.
    pub problems: Vec<String>,
    /// What this user could not read and so did not check (a monitoring user and a 0600
    /// key); never a problem of the certificate itself.
    pub not_checked: Vec<String>,
    /// Whether a `rollback --hold` keeps it on the restored pair (`null` when this user may
    /// not read its record; always false for a discovered certificate).
    pub held: Option<bool>,
    /// The hold, when it is held (`null` otherwise).
    pub hold: Option<HoldReport>,
    /// The fleet's view of a shared certificate (`fleet: true`); `null` for any other.
    pub fleet: Option<FleetReport>,
    /// What its `verify.tls_connect` serves, measured by `check --probe` (absent without
    /// `--probe`, and for a certificate without `tls_connect`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub served: Option<ServedReport>,
}

/// One probe of what a certificate's `verify.tls_connect` serves: the handshake, the chain
/// as sent, and whether its leaf is the live one (see [`crate::probe`]). When the probe
/// failed, `error` says why and the measured fields are `null`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ServedReport {
    /// The address connected to (HOST:PORT).
    pub connect: String,
    /// The name sent as SNI.
    pub server_name: String,
    /// Why no chain was served (connect, handshake, parse); `null` when one was.
    pub error: Option<String>,
    /// The TLS handshake's duration, seconds (TCP connect not counted).
    pub handshake_seconds: Option<f64>,
    /// How many certificates were sent, leaf included.
    pub chain_length: Option<usize>,
    /// The DER bytes of the certificates sent, summed.
    pub chain_bytes: Option<usize>,
    /// Whether the chain as sent leads from the leaf to a root the certificate's issuers
    /// trust, with nothing fetched; extra certificates do not make it incomplete.
    pub complete: Option<bool>,
    /// Why it is not complete (a missing intermediate, a wrong order, an untrusted root).
    pub chain_problems: Vec<String>,
    /// The served leaf's notAfter (RFC 3339).
    pub not_after: Option<String>,
    /// SHA-256 of the served leaf's DER, hex.
    pub fingerprint: Option<String>,
    /// Whether the served leaf is the live one (the leaf of `fullchain`); `null` when the
    /// live file cannot be read or no leaf was served.
    pub matches_live: Option<bool>,
}

/// What `check` says of a shared certificate: the fleet's current generation, as etcd has
/// it, next to the generation this host serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FleetReport {
    /// Whether etcd answered (within `check`'s time for it). When not, the fields below are
    /// `null`/false and only the local checks decide.
    pub connected: bool,
    /// The serial of the fleet's current generation (`null`: none published, or not
    /// connected).
    pub serial_current: Option<u64>,
    /// The serial of the generation whose leaf this host's live files hold: the current one
    /// or one etcd still keeps (`null`: none of them, or not connected).
    pub serving_serial_here: Option<u64>,
    /// The current generation's verdict: `pending`, `good` or `bad`.
    pub verdict: Option<&'static str>,
    /// Whether this host is behind the fleet: the current generation has been `good` since
    /// before the last scheduled pass and this host does not serve it (a WARNING).
    pub behind: bool,
}

/// What etcd holds of one shared certificate, for [`add_fleet_view`].
#[derive(Clone, Debug)]
pub struct FleetFacts {
    /// The current generation's serial and verdict, if one was published.
    pub current: Option<(u64, certkeeper_fleet::Verdict)>,
    /// The serial of the kept generation whose leaf the live files hold.
    pub serving_here: Option<u64>,
}

/// Adds the fleet's view to the entry of a shared certificate: `facts` from etcd, or
/// `None` when etcd did not answer (then `why` says so under `not_checked`; never a
/// problem: the local checks still decide). A host that does not serve a current
/// generation which has been `good` since before the last scheduled pass (the first tick
/// of `renewal.schedule` after the verdict, plus `renewal.jitter`: a host in timer mode
/// takes it at that pass, a daemon at once) is behind the fleet, a WARNING.
pub fn add_fleet_view(
    entry: &mut Entry,
    config: &Config,
    facts: Result<&FleetFacts, &str>,
    now: OffsetDateTime,
) {
    let facts = match facts {
        Ok(f) => f,
        Err(why) => {
            entry.not_checked.push(format!("the fleet's view: {why}"));
            entry.fleet = Some(FleetReport {
                connected: false,
                serial_current: None,
                serving_serial_here: None,
                verdict: None,
                behind: false,
            });
            return;
        }
    };
    use certkeeper_fleet::Verdict;
    let mut report = FleetReport {
        connected: true,
        serial_current: facts.current.as_ref().map(|(s, _)| *s),
        serving_serial_here: facts.serving_here,
        verdict: facts.current.as_ref().map(|(_, v)| match v {
            Verdict::Pending => "pending",
            Verdict::Good { .. } => "good",
            Verdict::Bad { .. } => "bad",
        }),
        behind: false,
    };
    if let Some((serial, Verdict::Good { at, .. })) = &facts.current
        && facts.serving_here != Some(*serial)
    {
        let due_by = config
            .renewal
            .schedule
            .next_after(*at)
            .map(|tick| tick + config.renewal.jitter);
        if due_by.is_some_and(|t| now > t) {
            report.behind = true;
            let serving = match facts.serving_here {
                Some(s) => format!("serves generation {s}"),
                None => "serves no generation etcd keeps".to_owned(),
            };
            entry.problem(
                Severity::Warning,
                format!(
                    "behind the fleet: this host {serving}, while generation {serial} has been good since {} (see certkeeper fleet status {})",
                    rfc3339(*at),
                    entry.name
                ),
            );
        }
    }
    entry.fleet = Some(report);
}

/// What `check` says of a hold (see [`crate::hold`]).
#[derive(Clone, Debug, Serialize)]
pub struct HoldReport {
    /// When it was set (RFC 3339).
    pub since: String,
    /// Who set it, when known.
    pub by: Option<String>,
    /// The snapshot the rollback restored, when known.
    pub snapshot: Option<String>,
    /// When it ends by itself (RFC 3339): the live leaf is then within half of
    /// `before_expiry` of its notAfter; `null` without a live leaf (the next pass ends it).
    pub ends: Option<String>,
}

impl Entry {
    fn new(name: String, managed: bool, path: PathBuf) -> Self {
        Entry {
            name,
            managed,
            path,
            privkey: None,
            domains: Vec::new(),
            subject: None,
            issuer: None,
            sans: Vec::new(),
            not_before: None,
            not_after: None,
            days_left: None,
            due: false,
            chain_length: 0,
            fingerprint: None,
            integrity: None,
            key_match: None,
            status: Status::Ok,
            problems: Vec::new(),
            not_checked: Vec::new(),
            held: Some(false),
            hold: None,
            fleet: None,
            served: None,
        }
    }

    /// What could not be read was not checked. When that left nothing checked (no problem
    /// found either), the status is `unknown`.
    fn unchecked(&mut self, text: impl Into<String>, nothing_checked: bool) {
        self.not_checked.push(text.into());
        if nothing_checked && self.problems.is_empty() {
            self.status = Status::Unknown;
        }
    }

    fn problem(&mut self, severity: Severity, text: impl Into<String>) {
        let status = match severity {
            Severity::Warning => Status::Warning,
            Severity::Critical => Status::Critical,
        };
        self.status = self.status.max(status);
        self.problems.push(text.into());
    }

    fn critical(&mut self, text: impl Into<String>) {
        self.problem(Severity::Critical, text);
    }
}

/// Adds what `check --probe` found served to a managed certificate's entry: a probe that
/// got no chain is CRITICAL (clients get nothing either), so is a served leaf past its
/// notAfter; a chain that is not complete, or a served leaf that is not the live one (a
/// reload that did not happen, another file in place), is a WARNING.
pub fn add_served(entry: &mut Entry, report: ServedReport, now: OffsetDateTime) {
    let at = format!("{} at {}", report.server_name, report.connect);
    if let Some(why) = &report.error {
        entry.critical(format!("served: {at}: {why}"));
    }
    if report.complete == Some(false) {
        entry.problem(
            Severity::Warning,
            format!(
                "served: {at}: the chain as sent is not complete: {}",
                report.chain_problems.join("; ")
            ),
        );
    }
    if let Some(not_after) = &report.not_after
        && let Ok(t) =
            OffsetDateTime::parse(not_after, &time::format_description::well_known::Rfc3339)
        && t < now
    {
        entry.critical(format!(
            "served: {at}: the served leaf expired at {not_after}"
        ));
    }
    if report.matches_live == Some(false) {
        entry.problem(
            Severity::Warning,
            format!(
                "served: {at}: the served leaf (sha256 {}…, notAfter {}) is not the live one; reload the service",
                report
                    .fingerprint
                    .as_deref()
                    .map(crate::text::short_fingerprint)
                    .unwrap_or("-"),
                report.not_after.as_deref().unwrap_or("-")
            ),
        );
    }
    entry.served = Some(report);
}

/// A root file of the config that could not be used: the key that names it and why.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct TrustError {
    /// The key that names the file (`issuers.le.trust_roots[1]`).
    pub key: config::KeyPath,
    /// What is wrong with it.
    pub message: String,
}

/// Trust stores for the certificates of one config: the system roots plus, per set of
/// issuers, their `trust_roots` and local CA roots. Built once per command.
pub struct Trust {
    system: Arc<TrustStore>,
    by_issuers: BTreeMap<Vec<String>, Arc<TrustStore>>,
    discovered: Arc<TrustStore>,
}

impl Trust {
    /// Loads the system roots and every extra root the config names. An unreadable
    /// `trust_roots` file is an error that names its issuer.
    pub fn load(config: &Config) -> Result<Trust, TrustError> {
        Self::with_system(config, Arc::new(TrustStore::system_on_demand()))
    }

    /// As [`Trust::load`], starting from the given system store (loaded once by the caller
    /// that needs it elsewhere too; tests pass an empty one).
    pub fn with_system(config: &Config, system: Arc<TrustStore>) -> Result<Trust, TrustError> {
        let mut extra: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        for (key, issuer) in &config.issuers {
            let files = extra.entry(key.clone()).or_default();
            match issuer {
                Issuer::Acme(a) => files.extend(a.trust_roots.iter().cloned()),
                Issuer::LocalCa(_) => {
                    let root = LocalCa::root_path(&config.state_dir, key);
                    // The local CA exists only once it has issued; until then there is
                    // nothing of it to trust. A root that exists but cannot be read would
                    // make its chains look broken: say so instead.
                    match fs::metadata(&root) {
                        Ok(_) => files.push(root),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(TrustError {
                                key: config::KeyPath::key("issuers").with_key(key),
                                message: format!(
                                    "cannot read the local CA root {} ({}); run as a user that can read state_dir, or as root",
                                    root.display(),
                                    io_reason(&e)
                                ),
                            });
                        }
                    }
                }
            }
        }
        let build = |issuers: &[String]| -> Result<TrustStore, TrustError> {
            let mut store = TrustStore::layered(&system);
            for issuer in issuers {
                let files = extra.get(issuer).map(Vec::as_slice).unwrap_or_default();
                for (n, file) in files.iter().enumerate() {
                    store.add_pem_file(file).map_err(|e| {
                        let key = config::KeyPath::key("issuers")
                            .with_key(issuer)
                            .with_key("trust_roots");
                        TrustError {
                            // The list item's own line when there are several.
                            key: if files.len() > 1 {
                                key.with_index(n)
                            } else {
                                key
                            },
                            message: e.to_string(),
                        }
                    })?;
                }
            }
            Ok(store)
        };
        let mut by_issuers = BTreeMap::new();
        for cert in &config.certificates {
            if !by_issuers.contains_key(&cert.issuers) {
                by_issuers.insert(cert.issuers.clone(), Arc::new(build(&cert.issuers)?));
            }
        }
        let all: Vec<String> = config.issuers.keys().cloned().collect();
        let discovered = Arc::new(build(&all)?);
        Ok(Trust {
            system,
            by_issuers,
            discovered,
        })
    }

    /// The roots the chains of a certificate with these issuers must end in (the system's
    /// when the config names no such certificate).
    pub fn for_issuers(&self, issuers: &[String]) -> &TrustStore {
        self.by_issuers
            .get(issuers)
            .map(|s| s.as_ref())
            .unwrap_or(&self.system)
    }
}

/// Examines one managed certificate's live files.
///
/// `saved` is what the state_dir keeps of the certificate (`None`: not readable by this
/// user), as [`crate::state::Records`] reads it.
pub fn inspect_managed(
    config: &Config,
    cert: &config::Certificate,
    trust: &Trust,
    saved: Option<crate::state::CertState>,
    now: OffsetDateTime,
) -> Entry {
    inspect_managed_leaf(config, cert, trust, saved, now).0
}

/// [`inspect_managed`], and the live leaf it found (a renewal pass reads it once).
pub fn inspect_managed_leaf(
    config: &Config,
    cert: &config::Certificate,
    trust: &Trust,
    saved: Option<crate::state::CertState>,
    now: OffsetDateTime,
) -> (Entry, Option<Cert>) {
    let mut e = Entry::new(cert.name.clone(), true, cert.fullchain.clone());
    e.privkey = Some(cert.privkey.clone());
    e.domains = cert.domains.clone();
    // One generation's three files when certkeeper wrote the pair (a renewal beside this
    // read never mixes two), the paths one by one otherwise.
    let spec = cert.live_spec();
    let derived: Vec<(Derived, &Path)> = spec
        .derived()
        .into_iter()
        .map(|(d, p)| (d, p.as_path()))
        .collect();
    let (chain_read, key_read, manifest_read, derived_read) =
        match crate::store::read_live_files(&cert.name, &cert.fullchain, &cert.privkey, &derived) {
            Some(pair) => (pair.fullchain, pair.privkey, pair.manifest, pair.derived),
            None => (
                read_limited(&cert.fullchain),
                read_limited(&cert.privkey),
                manifest::read_live(&cert.name, &cert.fullchain),
                derived.iter().map(|&(d, p)| (d, read_limited(p))).collect(),
            ),
        };
    let chain_denied = chain_read
        .as_ref()
        .is_err_and(|err| err.kind() == io::ErrorKind::PermissionDenied);
    let chain_bytes = if chain_denied {
        None
    } else {
        live_or_problem(&mut e, "fullchain", &cert.fullchain, chain_read)
    };
    // A private key this user may not read (a monitoring user; keys are 0600) is not
    // checked, which is not a fault: certkeeper checked it against the leaf when it deployed
    // the pair the manifest describes.
    let key_denied = key_read
        .as_ref()
        .is_err_and(|err| err.kind() == io::ErrorKind::PermissionDenied);
    let key_bytes = if key_denied {
        // What the manifest of this very fullchain recorded when certkeeper wrote the pair.
        let recorded = chain_bytes.as_ref().and_then(|chain| {
            manifest_read
                .as_ref()
                .ok()
                .and_then(Option::as_ref)
                .filter(|m| m.files.fullchain == sha256_hex(chain))
                .and_then(|m| m.key_matches_leaf)
        });
        e.key_match = recorded;
        e.not_checked.push(match recorded {
            Some(true) => "privkey not checked: not readable by this user (the manifest records that certkeeper matched it to the leaf when it wrote this pair)".to_owned(),
            Some(false) => "privkey not checked: not readable by this user, and the manifest records that it did NOT match the leaf when this pair was written".to_owned(),
            None => "privkey not checked: not readable by this user".to_owned(),
        });
        None
    } else {
        live_or_problem(&mut e, "privkey", &cert.privkey, key_read)
    };
    // The same decision as a renewal pass, with what the pass kept (the CA's renewal window,
    // the profile the leaf was ordered with), when this user can read it.
    let before_expiry = config.renewal.before_expiry;
    let due = |leaf: &Cert| {
        crate::schedule::decide(
            leaf,
            saved.as_ref(),
            cert.profile.as_deref(),
            before_expiry,
            now,
        )
    };
    // A manifest that describes exactly these bytes vouches for what was checked when
    // certkeeper wrote them: the chain's signatures and the key's match are not computed
    // again (the chain's anchor, the dates and the names always are).
    let vouched = match (&manifest_read, &chain_bytes, &key_bytes) {
        (Ok(Some(m)), Some(chain), Some(key)) if m.describes(chain, key) => Some(m),
        _ => None,
    };
    let leaf = chain_bytes.as_deref().and_then(|bytes| {
        examine_chain_file(
            &mut e,
            bytes,
            trust.for_issuers(&cert.issuers),
            &due,
            before_expiry,
            now,
            Examined {
                managed: true,
                links_signed: vouched.is_some_and(|m| m.chain_signed == Some(true)),
            },
        )
    });
    e.held = saved.as_ref().map(|s| s.hold.is_some());
    e.hold = saved
        .as_ref()
        .and_then(|s| s.hold.as_ref())
        .map(|h| HoldReport {
            since: OffsetDateTime::from_unix_timestamp(h.since)
                .map(rfc3339)
                .unwrap_or_else(|_| h.since.to_string()),
            by: h.by.clone(),
            snapshot: h.snapshot.clone(),
            ends: leaf
                .as_ref()
                .map(|l| rfc3339(crate::hold::ends_at(l, before_expiry))),
        });
    if let Some(leaf) = &leaf {
        let missing = uncovered(&leaf.sans, &cert.domains);
        if !missing.is_empty() {
            e.critical(format!(
                "names not covered by the certificate: {}",
                missing.join(", ")
            ));
        }
    }
    let key_vouched = vouched.is_some_and(|m| {
        m.key_matches_leaf == Some(true)
            && leaf
                .as_ref()
                .is_some_and(|l| l.fingerprint == m.fingerprint)
    });
    if key_vouched {
        e.key_match = Some(true);
    } else if let Some(bytes) = &key_bytes {
        match PrivateKey::from_bytes(bytes) {
            Ok(key) => {
                if let Some(leaf) = &leaf {
                    let matches = key_matches(leaf, &key);
                    e.key_match = Some(matches);
                    if !matches {
                        e.critical(format!(
                            "key mismatch: {} does not belong to the leaf",
                            cert.privkey.display()
                        ));
                    }
                }
            }
            Err(err) => e.critical(format!("privkey: {err}")),
        }
    }
    for ((d, read), (_, path)) in derived_read.into_iter().zip(&derived) {
        check_derived(&mut e, d, path, read, chain_bytes.as_deref(), leaf.as_ref());
    }
    if let (Some(chain), Some(key)) = (&chain_bytes, &key_bytes) {
        integrity(
            &mut e,
            &cert.name,
            &cert.fullchain,
            chain,
            key,
            manifest_read,
        );
    }
    if chain_denied {
        // Said last, so that a problem found in what could be read (a missing key) keeps
        // its status.
        e.unchecked(
            format!(
                "fullchain not checked: {} is not readable by this user",
                cert.fullchain.display()
            ),
            true,
        );
    }
    (e, leaf)
}

/// Examines one discovered file. `None` when the file holds no certificate and does not
/// look like one (keys, CSRs and unrelated files under a discover path are skipped).
pub fn inspect_file(
    path: &Path,
    trust: &Trust,
    before_expiry: BeforeExpiry,
    now: OffsetDateTime,
) -> Option<Entry> {
    let name = path.display().to_string();
    let mut e = Entry::new(name, false, path.to_owned());
    let looks_like_cert = has_cert_extension(path);
    let bytes = match read_limited(path) {
        Ok(b) => b,
        Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
            // A file this user may not read is not known to be a certificate, nor broken.
            if !looks_like_cert {
                return None;
            }
            e.unchecked("not checked: not readable by this user", true);
            return Some(e);
        }
        Err(err) if looks_like_cert => {
            e.critical(format!("unreadable: {}", io_reason(&err)));
            return Some(e);
        }
        Err(_) => return None,
    };
    match read_certificates(&bytes) {
        Err(ParseError::NoCertificate) => return None,
        Err(_) if !looks_like_cert => return None,
        _ => {}
    }
    let due = |leaf: &Cert| crate::schedule::due(leaf, None, before_expiry, now);
    let leaf = examine_chain_file(
        &mut e,
        &bytes,
        &trust.discovered,
        &due,
        before_expiry,
        now,
        Examined {
            managed: false,
            links_signed: false,
        },
    );
    if let Some(leaf) = leaf {
        e.domains = leaf.sans.clone();
    }
    Some(e)
}

/// A file's identity on its filesystem: two paths to the same file (a symbolic link, a
/// hard link) have the same one.
pub type FileId = (u64, u64);

/// The identity of the file at `path`, following symbolic links.
pub fn file_id(path: &Path) -> Option<FileId> {
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Walks the discover paths recursively in a stable order and hands each file to `emit`,
/// leaving out certkeeper's own internal files and the `exclude`d ones (the managed live
/// files). Symbolic links to files are followed, each file once; links to directories are
/// not (no loops). certbot's layout is understood: a lineage directory (`live/<name>/`) is
/// handed over once as a whole, and `archive/` beside `live/` is skipped (it holds every old
/// version `live/` once pointed to). Returns the paths that could not be read, as errors to
/// report, each with whether it was only this user's permission that kept it closed.
pub fn discover(
    paths: &[PathBuf],
    exclude: &HashSet<FileId>,
    mut emit: impl FnMut(Found),
) -> Vec<(String, bool)> {
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    let mut lineages = HashSet::new();
    let mut stack: Vec<PathBuf> = paths.iter().rev().cloned().collect();
    while let Some(path) = stack.pop() {
        // certkeeper's own files and generation directories are reported through the
        // managed certificate they belong to, never as discovered ones.
        let is_internal = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(".certkeeper"));
        if is_internal {
            continue;
        }
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                errors.push(unreadable(&path, &e));
                continue;
            }
        };
        if meta.is_dir() {
            let root = paths.contains(&path);
            if !root && is_certbot_archive(&path) {
                continue;
            }
            let lineage = is_certbot_lineage(&path);
            match fs::read_dir(&path) {
                Ok(rd) => {
                    let mut children: Vec<PathBuf> =
                        rd.filter_map(|d| d.ok().map(|d| d.path())).collect();
                    children.sort();
                    if lineage {
                        // The lineage's own files are examined together, once, unless
                        // certkeeper manages them (then they are reported as managed).
                        let own: Vec<FileId> = LINEAGE_FILES
                            .iter()
                            .filter_map(|f| file_id(&path.join(f)))
                            .collect();
                        let managed = own.iter().any(|id| exclude.contains(id));
                        let again = !lineages.insert((meta.dev(), meta.ino()));
                        seen.extend(own);
                        children.retain(|c| {
                            !c.file_name()
                                .and_then(|n| n.to_str())
                                .is_some_and(|n| LINEAGE_FILES.contains(&n))
                        });
                        if !managed && !again {
                            emit(Found::Lineage(path.clone()));
                        }
                    }
                    stack.extend(children.into_iter().rev());
                }
                Err(e) => errors.push(unreadable(&path, &e)),
            }
            continue;
        }
        let target = if meta.file_type().is_symlink() {
            match fs::metadata(&path) {
                Ok(m) => m,
                Err(_) => continue,
            }
        } else {
            meta
        };
        let id = (target.dev(), target.ino());
        if !target.is_file() || exclude.contains(&id) || !seen.insert(id) {
            continue;
        }
        emit(Found::File(path));
    }
    errors
}

/// What the walk of the discover paths found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// A file that may hold certificates.
    File(PathBuf),
    /// A certbot lineage directory (`live/<name>/`): `cert.pem`, `chain.pem`, `fullchain.pem`
    /// and `privkey.pem` are one certificate.
    Lineage(PathBuf),
}

/// Whether `dir` is a certbot lineage: `cert.pem` with `chain.pem` or `fullchain.pem` beside
/// it (links or files; a dangling link still marks the layout, and is reported).
pub fn is_certbot_lineage(dir: &Path) -> bool {
    let present = |name: &str| fs::symlink_metadata(dir.join(name)).is_ok();
    present("cert.pem") && (present("chain.pem") || present("fullchain.pem"))
}

/// Whether `dir` is certbot's `archive/` (every version it ever issued, which `live/` links
/// to): a directory of that name with `live/` beside it.
fn is_certbot_archive(dir: &Path) -> bool {
    dir.file_name().is_some_and(|n| n == "archive")
        && dir
            .parent()
            .is_some_and(|p| fs::symlink_metadata(p.join("live")).is_ok_and(|m| m.is_dir()))
}

/// Examines a certbot lineage as one certificate: `cert.pem` (the leaf) followed by
/// `chain.pem` (its intermediates) is the chain; `fullchain.pem` must hold the same leaf,
/// and `privkey.pem`, when this user may read it, must match it.
pub fn inspect_lineage(
    dir: &Path,
    trust: &Trust,
    before_expiry: BeforeExpiry,
    now: OffsetDateTime,
) -> Entry {
    let cert_path = dir.join("cert.pem");
    let mut e = Entry::new(dir.display().to_string(), false, cert_path.clone());
    let cert = live_or_problem(&mut e, "cert.pem", &cert_path, read_limited(&cert_path));
    let chain_path = dir.join("chain.pem");
    let chain = match read_limited(&chain_path) {
        Ok(b) => Some(b),
        // Without chain.pem, fullchain.pem alone is the certificate.
        Err(err) if err.kind() == io::ErrorKind::NotFound => None,
        Err(err) => live_or_problem(&mut e, "chain.pem", &chain_path, Err(err)),
    };
    let full_path = dir.join("fullchain.pem");
    let full = match read_limited(&full_path) {
        Ok(b) => Some(b),
        Err(err) if err.kind() == io::ErrorKind::NotFound && chain.is_some() => None,
        Err(err) => live_or_problem(&mut e, "fullchain.pem", &full_path, Err(err)),
    };
    let bytes = match (&cert, &chain, &full) {
        (Some(cert), Some(chain), _) => {
            let mut b = cert.clone();
            if !b.ends_with(b"\n") {
                b.push(b'\n');
            }
            b.extend_from_slice(chain);
            Some(b)
        }
        (Some(_), None, Some(full)) => {
            e.path = full_path.clone();
            Some(full.clone())
        }
        _ => None,
    };
    let due = |leaf: &Cert| crate::schedule::due(leaf, None, before_expiry, now);
    let leaf = bytes.and_then(|bytes| {
        examine_chain_file(
            &mut e,
            &bytes,
            &trust.discovered,
            &due,
            before_expiry,
            now,
            Examined {
                managed: false,
                links_signed: false,
            },
        )
    });
    let Some(leaf) = leaf else {
        return e;
    };
    e.domains = leaf.sans.clone();
    if let Some(full) = &full {
        let same = read_certificates(full)
            .ok()
            .and_then(|(certs, _)| certs.into_iter().next())
            .is_some_and(|first| first.fingerprint == leaf.fingerprint);
        if !same {
            e.critical("fullchain.pem does not start with the leaf of cert.pem");
        }
    }
    let key_path = dir.join("privkey.pem");
    match read_limited(&key_path) {
        Ok(bytes) => match PrivateKey::from_bytes(&bytes) {
            Ok(key) => {
                let matches = key_matches(&leaf, &key);
                e.key_match = Some(matches);
                if !matches {
                    e.critical("key mismatch: privkey.pem does not belong to the leaf of cert.pem");
                }
            }
            Err(err) => e.critical(format!("privkey.pem: {err}")),
        },
        // A monitoring user may not read keys; that is not a fault.
        Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {}
        Err(err) => {
            live_or_problem(&mut e, "privkey.pem", &key_path, Err(err));
        }
    }
    e
}

/// The whole inventory of a config: managed certificates in config order (only `names`
/// when given), then discovered files in path order (only when no names are given).
/// Files are examined on all cores; the order of the result does not depend on it.
pub fn inventory(
    config: &Config,
    names: &[String],
    trust: &Trust,
    now: OffsetDateTime,
) -> Vec<Entry> {
    let managed: Vec<&config::Certificate> = config
        .certificates
        .iter()
        .filter(|c| names.is_empty() || names.contains(&c.name))
        .collect();
    let horizon = crate::state::Horizon::new(now, config.renewal.retry_max);
    let kept = crate::state::Records::load(&config.state_dir, &horizon);
    let mut entries: Vec<Entry> = parallel_map(&managed, |c| {
        inspect_managed(config, c, trust, kept.get(&c.name), now)
    });
    if names.is_empty() && !config.discover_paths.is_empty() {
        let exclude: HashSet<FileId> = config
            .certificates
            .iter()
            .flat_map(|c| [&c.fullchain, &c.privkey])
            .filter_map(|p| file_id(p))
            .collect();
        let before = config.renewal.before_expiry;
        // The walk feeds the workers as it goes, so reading and checking files overlaps
        // with listing directories.
        let (tx, rx) = mpsc::sync_channel::<(usize, Found)>(1024);
        let rx = Mutex::new(rx);
        let (errors, mut found) = std::thread::scope(|scope| {
            let walker = scope.spawn(move || {
                let mut n = 0;
                discover(&config.discover_paths, &exclude, |path| {
                    // The workers outlive the walker, so the channel is open here.
                    let _ = tx.send((n, path));
                    n += 1;
                })
            });
            let workers: Vec<_> = (0..threads())
                .map(|_| {
                    scope.spawn(|| {
                        let mut out = Vec::new();
                        loop {
                            let next = match rx.lock() {
                                Ok(rx) => rx.recv(),
                                Err(_) => break,
                            };
                            let Ok((n, found)) = next else { break };
                            let entry = match found {
                                Found::File(path) => inspect_file(&path, trust, before, now),
                                Found::Lineage(dir) => {
                                    Some(inspect_lineage(&dir, trust, before, now))
                                }
                            };
                            if let Some(e) = entry {
                                out.push((n, e));
                            }
                        }
                        out
                    })
                })
                .collect();
            let errors = join(walker);
            let found: Vec<(usize, Entry)> = workers.into_iter().flat_map(join).collect();
            (errors, found)
        });
        for (err, denied) in errors {
            let mut e = Entry::new(
                err.clone(),
                false,
                PathBuf::from(err.split(": ").next().unwrap_or("")),
            );
            if denied {
                e.unchecked(format!("discover: {err}"), true);
            } else {
                e.critical(format!("discover: {err}"));
            }
            entries.push(e);
        }
        found.sort_by_key(|(n, _)| *n);
        entries.extend(found.into_iter().map(|(_, e)| e));
    }
    entries
}

/// Reads certificates from a fullchain file's bytes and records what is wrong with them;
/// returns the leaf.
fn examine_chain_file(
    e: &mut Entry,
    bytes: &[u8],
    trust: &TrustStore,
    due: &dyn Fn(&Cert) -> crate::schedule::Due,
    before_expiry: BeforeExpiry,
    now: OffsetDateTime,
    how: Examined,
) -> Option<Cert> {
    let Examined {
        managed,
        links_signed,
    } = how;
    let which = if managed { "fullchain: " } else { "" };
    let (certs, encoding) = match read_certificates(bytes) {
        Ok(found) => found,
        Err(err) => {
            e.critical(format!("{which}{err}"));
            return None;
        }
    };
    if managed && encoding == Encoding::Der {
        e.critical("fullchain: DER-encoded; services expect PEM");
    }
    e.chain_length = certs.len();
    if links_signed {
        for link in certs.windows(2) {
            trust.vouch(&link[0], &link[1]);
        }
    }
    let (leaf_at, problems) = examine_chain(&certs, trust, now);
    let leaf = certs[leaf_at].clone();
    e.subject = Some(leaf.subject.clone());
    e.issuer = Some(leaf.issuer.clone());
    e.sans = leaf.sans.clone();
    e.not_before = Some(rfc3339(leaf.not_before));
    e.not_after = Some(rfc3339(leaf.not_after));
    e.fingerprint = Some(leaf.fingerprint.clone());
    let left = leaf.not_after - now;
    e.days_left = Some(left.whole_seconds().div_euclid(86_400));
    if now >= leaf.not_after {
        e.critical(format!(
            "expired {} ago (notAfter {})",
            human_duration(now - leaf.not_after),
            rfc3339(leaf.not_after)
        ));
    } else if now < leaf.not_before {
        e.critical(format!(
            "not yet valid (notBefore {})",
            rfc3339(leaf.not_before)
        ));
    } else {
        let d = due(&leaf);
        if d.now {
            e.due = true;
            let why = match d.source {
                crate::schedule::DueSource::ProfileChanged => {
                    "the configured profile is not the one it was ordered with".to_owned()
                }
                crate::schedule::DueSource::Ari => {
                    format!("inside the CA's renewal window since {}", rfc3339(d.at))
                }
                _ => format!("renews {before_expiry} before expiry"),
            };
            e.problem(
                Severity::Warning,
                format!(
                    "due for renewal: {} left, {why}",
                    human_duration(leaf.not_after - now)
                ),
            );
        }
    }
    if now >= leaf.not_after {
        e.due = true;
    }
    for p in problems {
        e.critical(p.to_string());
    }
    Some(leaf)
}

/// Checks a derived live file against the live pair: `cert` holds the leaf alone, `chain`
/// the certificates after it, `combined` the fullchain and a key that matches the leaf. A
/// mismatch is CRITICAL and names the file; a `combined` file this user may not read (it has
/// the key's mode) is not checked, as the key.
fn check_derived(
    e: &mut Entry,
    d: Derived,
    path: &Path,
    read: io::Result<Vec<u8>>,
    fullchain: Option<&[u8]>,
    leaf: Option<&Cert>,
) {
    let which = d.key();
    if d.holds_key()
        && read
            .as_ref()
            .is_err_and(|err| err.kind() == io::ErrorKind::PermissionDenied)
    {
        e.problems.push(format!(
            "{which} not checked: {} is not readable by this user",
            path.display()
        ));
        return;
    }
    let Some(bytes) = live_or_problem(e, which, path, read) else {
        return;
    };
    // The fullchain's own problems are reported already.
    let Some(Ok((expected, _))) = fullchain.map(read_certificates) else {
        return;
    };
    let ders = |certs: &[Cert]| certs.iter().map(|c| c.der.clone()).collect::<Vec<_>>();
    let found = match read_certificates(&bytes) {
        Ok((certs, _)) => ders(&certs),
        // An intermediates-only file of a chain with none is empty.
        Err(ParseError::Empty | ParseError::NoCertificate) => Vec::new(),
        Err(err) => {
            e.critical(format!("{which} {}: {err}", path.display()));
            return;
        }
    };
    let expected = ders(&expected);
    let (want, what): (&[Vec<u8>], &str) = match d {
        Derived::Cert => (&expected[..1], "the leaf of the fullchain alone"),
        Derived::Chain => (&expected[1..], "the intermediates of the fullchain alone"),
        Derived::Combined => (&expected[..], "the fullchain's certificates"),
    };
    if found != want {
        e.critical(format!(
            "{which} mismatch: {} does not hold {what} (it has {} certificate(s), the fullchain {}); renew or rollback rewrites it",
            path.display(),
            found.len(),
            expected.len()
        ));
        return;
    }
    if d.holds_key() {
        match (PrivateKey::from_bytes(&bytes), leaf) {
            (Ok(key), Some(leaf)) if !key_matches(leaf, &key) => e.critical(format!(
                "{which} mismatch: the key in {} does not belong to the leaf",
                path.display()
            )),
            (Err(err), _) => e.critical(format!("{which} {}: {err}", path.display())),
            _ => {}
        }
    }
}

fn integrity(
    e: &mut Entry,
    name: &str,
    fullchain: &Path,
    chain: &[u8],
    key: &[u8],
    manifest: io::Result<Option<manifest::Manifest>>,
) {
    match manifest {
        Ok(None) => {}
        Ok(Some(m)) => {
            let mut ok = true;
            if m.files.fullchain != sha256_hex(chain) {
                e.critical("integrity: fullchain SHA-256 differs from the manifest");
                ok = false;
            }
            if m.files.privkey != sha256_hex(key) {
                e.critical("integrity: privkey SHA-256 differs from the manifest");
                ok = false;
            }
            e.integrity = Some(ok);
        }
        Err(err) => {
            e.integrity = Some(false);
            e.critical(format!(
                "integrity: manifest {} unreadable: {}",
                manifest::live_path(name, fullchain).display(),
                io_reason(&err)
            ));
        }
    }
}

/// How [`examine_chain_file`] looks at a file.
#[derive(Clone, Copy)]
struct Examined {
    /// A managed certificate's fullchain (its problems say `fullchain:`).
    managed: bool,
    /// Each certificate's signature by the next is known good (a matching manifest).
    links_signed: bool,
}

/// A live file's bytes, or the CRITICAL problem its read gave.
fn live_or_problem(
    e: &mut Entry,
    which: &str,
    path: &Path,
    read: io::Result<Vec<u8>>,
) -> Option<Vec<u8>> {
    match read {
        Ok(b) => Some(b),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            e.critical(format!("{which} missing: {}", path.display()));
            None
        }
        Err(err) => {
            e.critical(format!(
                "{which} unreadable: {} ({})",
                path.display(),
                io_reason(&err)
            ));
            None
        }
    }
}

/// Reads a certificate or key file: regular files only, never blocking, at most
/// [`fsutil::MAX_FILE`] bytes.
fn read_limited(path: &Path) -> io::Result<Vec<u8>> {
    crate::fsutil::read_regular(path, crate::fsutil::MAX_FILE)
}

/// A discover path that could not be read, and whether only permission kept it closed.
fn unreadable(path: &Path, err: &io::Error) -> (String, bool) {
    (
        format!("{}: {}", path.display(), io_reason(err)),
        err.kind() == io::ErrorKind::PermissionDenied,
    )
}

fn io_reason(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        io::ErrorKind::NotFound => "not found".into(),
        _ => err.to_string(),
    }
}

/// The files of a certbot lineage directory, examined together.
const LINEAGE_FILES: [&str; 4] = ["cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"];

fn has_cert_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| CERT_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// `3d`, `5h`, `12m`: the largest whole unit.
fn human_duration(d: time::Duration) -> String {
    let secs = d.whole_seconds().unsigned_abs();
    match secs {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3600 => format!("{}h", s / 3600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Runs `f` over `items` on every available core, keeping the order.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if items.len() < 2 {
        return items.iter().map(&f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut out: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads().min(items.len()))
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        out.push((i, f(item)));
                    }
                    out
                })
            })
            .collect();
        workers.into_iter().flat_map(join).collect()
    });
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Joins a scoped thread, passing a panic on (a panic is a bug, not an input problem).
fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    match handle.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Extensions of files that are reported even when they fail to parse.
const CERT_EXTENSIONS: &[&str] = &["pem", "crt", "cer", "cert", "der"];
