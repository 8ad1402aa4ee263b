//! One renewal pass, the same for `certkeeper renew` and each run of the daemon: recover
//! interrupted swaps, find what is due, get new material (issued-but-not-deployed material
//! first, then the issuers in order), check it, and swap it in with a snapshot. Due
//! certificates are issued in parallel up to `renewal.concurrency`; one failure never stops
//! the others. Swaps happen one at a time on the task that holds the state_dir lock.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use time::OffsetDateTime;
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;

use certkeeper_dns::DnsProvider;
use certkeeper_dns_exec::ExecProvider;

use crate::acme::{self, Acme};
use crate::config::{self, Certificate, Config, Issuer};
use crate::deploy::pair_spec;
use crate::fsutil;
use crate::issuer::local_ca::LocalCa;
use crate::material::check_new;
use crate::state::{self, CertState};
use crate::store::{self, Store};
use crate::x509::{Cert, TrustStore, read_certificates, rfc3339};
use crate::{keys, x509};

/// What to do in a pass.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Renew the selected certificates even when not due, ignoring the retry backoff.
    pub force: bool,
    /// Do everything up to the swap and change nothing on disk.
    pub dry_run: bool,
    /// Only these certificates (all when empty).
    pub names: Vec<String>,
}

/// What happened to one certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not due; renews from `renew_after`.
    NotDue {
        /// When it becomes due (RFC 3339).
        renew_after: String,
    },
    /// A previous failure's backoff has not run out.
    Backoff {
        /// When the next attempt is allowed (RFC 3339).
        until: String,
    },
    /// New material is live.
    Renewed {
        /// The new leaf's notAfter (RFC 3339).
        not_after: String,
        /// The snapshot keeping the replaced pair.
        snapshot: Option<String>,
        /// Where the material came from (an issuer name, or `pending`).
        source: String,
    },
    /// Dry run: new material was obtained and checked, nothing was written.
    WouldRenew {
        /// The new leaf's notAfter (RFC 3339).
        not_after: String,
        /// The issuer that gave it.
        source: String,
    },
    /// The renewal failed; nothing changed on disk for this certificate.
    Failed {
        /// Why, with the issuers' errors.
        error: String,
    },
}

impl Outcome {
    /// Whether this counts as a failure for the exit code.
    pub fn failed(&self) -> bool {
        matches!(self, Outcome::Failed { .. })
    }
}

/// Why a pass could not run at all.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store (state_dir, lock) is unusable.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A configured certificate cannot be mapped to the store (owner/group unknown).
    #[error("{0}")]
    Spec(String),
}

/// Runs one pass and returns each selected certificate's outcome, in config order.
pub async fn run(config: Arc<Config>, opts: &Options) -> Result<Vec<(String, Outcome)>, Error> {
    let now = OffsetDateTime::now_utc();
    let selected: Vec<Certificate> = config
        .certificates
        .iter()
        .filter(|c| opts.names.is_empty() || opts.names.contains(&c.name))
        .cloned()
        .collect();
    let mut specs = BTreeMap::new();
    for cert in &selected {
        specs.insert(cert.name.clone(), pair_spec(cert).map_err(Error::Spec)?);
    }

    let mut unrecoverable: BTreeMap<String, String> = BTreeMap::new();
    // A dry run writes nothing: no state_dir is created, no lock taken, no recovery run.
    let store = if opts.dry_run {
        None
    } else {
        Some(Store::open(&config.state_dir)?)
    };
    let locked = match &store {
        Some(store) => {
            let locked = match store.try_lock() {
                Ok(l) => l,
                Err(store::Error::Locked { .. }) => {
                    tracing::info!("Waiting for another certkeeper pass to finish.");
                    tokio::task::block_in_place(|| store.lock())?
                }
                Err(e) => return Err(e.into()),
            };
            for spec in specs.values() {
                match locked.recover(spec) {
                    Ok(r) if r.removed.is_empty() && r.completed.is_empty() => {}
                    Ok(r) => {
                        tracing::warn!(cert = %spec.name, removed = ?r.removed, completed = ?r.completed, "Recovered an interrupted swap.")
                    }
                    // Reported as this certificate's failure; the others go on.
                    Err(e) => {
                        unrecoverable.insert(spec.name.clone(), format!("recovery: {e}"));
                    }
                }
            }
            Some(locked)
        }
        None => None,
    };

    let issuers = Arc::new(Issuers::new(config.clone(), !opts.dry_run, now));
    let limit = Arc::new(Semaphore::new(config.renewal.concurrency));
    let mut tasks = JoinSet::new();
    let mut task_names = std::collections::HashMap::new();
    let mut outcomes: BTreeMap<String, Outcome> = BTreeMap::new();
    for cert in selected.iter().cloned() {
        if let Some(error) = unrecoverable.remove(&cert.name) {
            let outcome = Outcome::Failed { error };
            record(&config.state_dir, &cert.name, &outcome, &config, now);
            log(&cert.name, &outcome);
            outcomes.insert(cert.name.clone(), outcome);
            continue;
        }
        let (config, issuers, limit, opts) =
            (config.clone(), issuers.clone(), limit.clone(), opts.clone());
        let task_name = cert.name.clone();
        let handle = tasks.spawn(async move {
            let name = cert.name.clone();
            // The semaphore is never closed, so acquiring only waits.
            let _permit = limit.acquire_owned().await;
            let step = prepare(&config, &cert, &issuers, &opts, now).await;
            (name, step)
        });
        task_names.insert(handle.id(), task_name);
    }
    while let Some(joined) = tasks.join_next_with_id().await {
        let (name, step) = match joined {
            Ok((_, done)) => done,
            // A panic is a bug, but it still counts as this certificate's failure.
            Err(e) => match task_names.get(&e.id()) {
                Some(name) => (
                    name.clone(),
                    Step::Done(Outcome::Failed {
                        error: format!("internal error, please report it: {e}"),
                    }),
                ),
                None => continue,
            },
        };
        let outcome = match step {
            Step::Done(outcome) => outcome,
            Step::Deploy(ready) => match (&locked, specs.get(&name)) {
                (Some(locked), Some(spec)) => {
                    tokio::task::block_in_place(|| deploy(&config, locked, spec, &ready))
                }
                _ => Outcome::WouldRenew {
                    not_after: rfc3339(ready.leaf.not_after),
                    source: ready.source.clone(),
                },
            },
        };
        if !opts.dry_run {
            record(&config.state_dir, &name, &outcome, &config, now);
        }
        log(&name, &outcome);
        outcomes.insert(name, outcome);
    }
    Ok(selected
        .iter()
        .filter_map(|c| outcomes.remove(&c.name).map(|o| (c.name.clone(), o)))
        .collect())
}

/// Checked material ready to be swapped in.
struct Ready {
    fullchain: Vec<u8>,
    privkey: Vec<u8>,
    leaf: Cert,
    source: String,
}

enum Step {
    Done(Outcome),
    Deploy(Box<Ready>),
}

/// Everything before the swap, for one certificate.
async fn prepare(
    config: &Config,
    cert: &Certificate,
    issuers: &Issuers,
    opts: &Options,
    now: OffsetDateTime,
) -> Step {
    let live_chain = fs::read(&cert.fullchain).ok();
    let live_leaf = live_chain
        .as_deref()
        .and_then(|b| read_certificates(b).ok())
        .and_then(|(certs, _)| certs.into_iter().next());
    let saved = state::load(&config.state_dir, &cert.name);
    let live_not_after = live_leaf.as_ref().map(|l| l.not_after);

    // Material issued by an earlier pass that could not be deployed goes first, due or not:
    // it was ordered because the certificate was due then.
    if let Some((fullchain, privkey)) = pending::load(&config.state_dir, &cert.name) {
        match checked(
            issuers,
            cert,
            fullchain,
            privkey,
            live_not_after,
            now,
            "pending",
        )
        .await
        {
            Ok(ready) => return Step::Deploy(ready),
            Err(rejected) => {
                tracing::warn!(cert = %cert.name, "Discarding undeployed material from an earlier pass: {rejected}");
                if !opts.dry_run {
                    pending::remove(&config.state_dir, &cert.name);
                }
            }
        }
    }

    if !opts.force {
        if let Some(leaf) = &live_leaf {
            let window = issuers.renewal_window(cert, leaf).await;
            let due = acme::should_renew(
                now,
                leaf.not_before,
                leaf.not_after,
                window.as_ref(),
                config.renewal.before_expiry,
                stable_pick(leaf),
            );
            if !due.now {
                return Step::Done(Outcome::NotDue {
                    renew_after: rfc3339(due.at),
                });
            }
        }
        if !saved.may_attempt(now.unix_timestamp()) {
            let until = saved
                .next_attempt
                .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
                .map(rfc3339)
                .unwrap_or_default();
            return Step::Done(Outcome::Backoff { until });
        }
    }

    let live_key = if cert.reuse_key {
        fs::read_to_string(&cert.privkey).ok()
    } else {
        None
    };
    let key = match keys::for_renewal(cert.key, cert.reuse_key, live_key.as_deref()) {
        Ok(k) => k,
        Err(e) => {
            return Step::Done(Outcome::Failed {
                error: e.to_string(),
            });
        }
    };
    let privkey = key.serialize_pem().into_bytes();
    let mut errors = Vec::new();
    for issuer in &cert.issuers {
        let issued = issuers.issue(issuer, cert, &key, now).await;
        let fullchain = match issued {
            Ok(f) => f.into_bytes(),
            Err(e) => {
                tracing::warn!(cert = %cert.name, issuer = %issuer, "Issuer failed: {e}");
                errors.push(format!("issuer {issuer}: {e}"));
                continue;
            }
        };
        if !opts.dry_run
            && let Err(e) = pending::save(&config.state_dir, &cert.name, &fullchain, &privkey)
        {
            tracing::warn!(cert = %cert.name, "Cannot keep the new material for a later pass: {e}");
        }
        return match checked(
            issuers,
            cert,
            fullchain,
            privkey,
            live_not_after,
            now,
            issuer,
        )
        .await
        {
            Ok(ready) => Step::Deploy(ready),
            Err(rejected) => {
                if !opts.dry_run {
                    pending::remove(&config.state_dir, &cert.name);
                }
                Step::Done(Outcome::Failed {
                    error: format!("issuer {issuer}: {rejected}"),
                })
            }
        };
    }
    Step::Done(Outcome::Failed {
        error: errors.join("; "),
    })
}

/// New material checked against the roots `cert`'s issuers chain to, ready to swap in.
async fn checked(
    issuers: &Issuers,
    cert: &Certificate,
    fullchain: Vec<u8>,
    privkey: Vec<u8>,
    live_not_after: Option<OffsetDateTime>,
    now: OffsetDateTime,
    source: &str,
) -> Result<Box<Ready>, crate::material::Rejected> {
    let trust = issuers.trust_for(cert).await;
    let leaf = check_new(
        &fullchain,
        &privkey,
        &cert.domains,
        &trust,
        live_not_after,
        now,
    )?;
    Ok(Box::new(Ready {
        fullchain,
        privkey,
        leaf,
        source: source.to_owned(),
    }))
}

/// The swap of checked material; on success the pending copy is dropped.
fn deploy(
    config: &Config,
    locked: &store::Locked<'_>,
    spec: &store::PairSpec,
    ready: &Ready,
) -> Outcome {
    match locked.deploy(spec, &ready.fullchain, &ready.privkey) {
        Ok(done) => {
            pending::remove(&config.state_dir, &spec.name);
            Outcome::Renewed {
                not_after: done.manifest.not_after,
                snapshot: done.snapshot.map(|s| s.id),
                source: ready.source.clone(),
            }
        }
        Err(e) => Outcome::Failed {
            error: format!("deploy: {e} (the new material is kept and deployed on the next pass)"),
        },
    }
}

fn record(state_dir: &Path, name: &str, outcome: &Outcome, config: &Config, now: OffsetDateTime) {
    let mut s: CertState = state::load(state_dir, name);
    let t = now.unix_timestamp();
    match outcome {
        Outcome::Renewed { .. } => s.succeeded(t, "renewed"),
        Outcome::Failed { error } => s.failed(
            t,
            error,
            config.renewal.retry_initial,
            config.renewal.retry_max,
        ),
        Outcome::NotDue { .. } => {
            s.last_attempt = Some(t);
            s.last_result = Some("ok".into());
        }
        Outcome::Backoff { .. } | Outcome::WouldRenew { .. } => return,
    }
    if let Err(e) = state::save(state_dir, name, &s) {
        tracing::warn!(cert = %name, "Cannot record the outcome in the state directory: {e}");
    }
}

fn log(name: &str, outcome: &Outcome) {
    match outcome {
        Outcome::Renewed {
            not_after,
            snapshot,
            source,
        } => {
            tracing::info!(cert = %name, %not_after, snapshot = ?snapshot, %source, "Renewed certificate.")
        }
        Outcome::Failed { error } => tracing::error!(cert = %name, "Renewal failed: {error}"),
        Outcome::NotDue { renew_after } => tracing::debug!(cert = %name, %renew_after, "Not due."),
        Outcome::Backoff { until } => {
            tracing::warn!(cert = %name, %until, "Waiting for the retry backoff after a failure.")
        }
        Outcome::WouldRenew { not_after, source } => {
            tracing::info!(cert = %name, %not_after, %source, "Dry run: would renew.")
        }
    }
}

/// The issuers of one pass: local CAs opened once and shared by the certificates' tasks.
struct Issuers {
    config: Arc<Config>,
    persist: bool,
    now: OffsetDateTime,
    local: Mutex<BTreeMap<String, LocalCa>>,
    acme: Mutex<BTreeMap<String, Arc<Acme>>>,
    system: TrustStore,
}

impl Issuers {
    fn new(config: Arc<Config>, persist: bool, now: OffsetDateTime) -> Issuers {
        Issuers {
            config,
            persist,
            now,
            local: Mutex::new(BTreeMap::new()),
            acme: Mutex::new(BTreeMap::new()),
            system: TrustStore::system(),
        }
    }

    /// Gets a fullchain PEM for `cert` from `issuer`, signed for `key`.
    async fn issue(
        &self,
        issuer: &str,
        cert: &Certificate,
        key: &rcgen::KeyPair,
        now: OffsetDateTime,
    ) -> Result<String, String> {
        match self.config.issuers.get(issuer) {
            Some(Issuer::LocalCa(ca)) => {
                let mut open = self.local.lock().await;
                let ca_handle = match open.get_mut(issuer) {
                    Some(h) => h,
                    None => {
                        let h =
                            LocalCa::open(&self.config.state_dir, issuer, self.persist, self.now)
                                .map_err(|e| e.to_string())?;
                        open.entry(issuer.to_owned()).or_insert(h)
                    }
                };
                ca_handle
                    .issue(&cert.domains, key, ca.validity, now)
                    .map_err(|e| e.to_string())
            }
            Some(Issuer::Acme(_)) => {
                let acme = self.acme(issuer).await?;
                let provider_key = cert
                    .dns_provider
                    .as_deref()
                    .ok_or("no dns_provider for an acme issuer")?;
                let provider = self.dns_provider(provider_key)?;
                let csr_der = keys::csr_der(key, &cert.domains).map_err(|e| e.to_string())?;
                let live = fs::read(&cert.fullchain)
                    .ok()
                    .and_then(|b| read_certificates(&b).ok())
                    .and_then(|(certs, _)| certs.into_iter().next());
                let request = acme::OrderRequest {
                    domains: &cert.domains,
                    csr_der,
                    profile: cert.profile.as_deref(),
                    replaces: live.as_ref().map(|l| l.der.as_slice()),
                    dns: provider,
                    dns_name: provider_key,
                    settings: &self.config.dns,
                };
                acme.issue(&request)
                    .await
                    .map(|issued| issued.fullchain_pem)
                    .map_err(|e| e.to_string())
            }
            None => Err("not configured".into()),
        }
    }

    /// The account at ACME issuer `name`, opened once per pass.
    async fn acme(&self, name: &str) -> Result<Arc<Acme>, String> {
        let mut open = self.acme.lock().await;
        if let Some(a) = open.get(name) {
            return Ok(a.clone());
        }
        let Some(Issuer::Acme(cfg)) = self.config.issuers.get(name) else {
            return Err("not an acme issuer".into());
        };
        let acme = Arc::new(
            Acme::open(name, cfg, &self.config.state_dir, self.persist)
                .await
                .map_err(|e| e.to_string())?,
        );
        open.insert(name.to_owned(), acme.clone());
        Ok(acme)
    }

    /// The CA's renewal window (ARI) for `leaf`, asked of the certificate's first ACME
    /// issuer; `None` when it offers none or cannot be asked (then `before_expiry` decides).
    async fn renewal_window(&self, cert: &Certificate, leaf: &Cert) -> Option<acme::RenewalWindow> {
        let issuer = cert
            .issuers
            .iter()
            .find(|i| matches!(self.config.issuers.get(*i), Some(Issuer::Acme(_))))?;
        let acme = match self.acme(issuer).await {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(cert = %cert.name, %issuer, "No renewal information: {e}");
                return None;
            }
        };
        match acme.renewal_window(&leaf.der).await {
            Ok(window) => window,
            Err(e) => {
                tracing::warn!(cert = %cert.name, %issuer, "Renewal information unavailable, using before_expiry: {e}");
                None
            }
        }
    }

    /// The DNS provider configured under `key`.
    fn dns_provider(&self, key: &str) -> Result<Arc<dyn DnsProvider>, String> {
        match self.config.dns_providers.get(key) {
            Some(config::DnsProvider::Exec { command, timeout }) => {
                ExecProvider::new(command.clone(), *timeout)
                    .map(|p| Arc::new(p) as Arc<dyn DnsProvider>)
                    .map_err(|e| format!("dns provider {key}: {e}"))
            }
            Some(other) => Err(format!(
                "dns provider {key}: type {} is not available in this build yet",
                other.kind()
            )),
            None => Err(format!("dns provider {key} is not configured")),
        }
    }

    /// The roots new material of `cert` must chain to: the system's, its issuers'
    /// `trust_roots`, and the roots of the local CAs opened in this pass.
    async fn trust_for(&self, cert: &Certificate) -> TrustStore {
        let mut trust = self.system.clone_roots();
        for file in self.config.trust_root_files(&cert.issuers) {
            if let Err(e) = trust.add_pem_file(&file) {
                tracing::warn!(cert = %cert.name, "{e}");
            }
        }
        let open = self.local.lock().await;
        for issuer in &cert.issuers {
            if let Some(ca) = open.get(issuer)
                && let Ok((roots, _)) = x509::read_certificates(ca.root_pem().as_bytes())
            {
                roots.into_iter().for_each(|r| trust.add(r));
            } else if let Some(Issuer::LocalCa(_)) = self.config.issuers.get(issuer) {
                // Not opened in this pass (kept material): its exported root, if it exists.
                let root = LocalCa::root_path(&self.config.state_dir, issuer);
                if root.exists()
                    && let Err(e) = trust.add_pem_file(&root)
                {
                    tracing::warn!(cert = %cert.name, "{e}");
                }
            }
        }
        trust
    }
}

/// A point in `[0, 1)` fixed for a leaf (from its fingerprint), so that the renewal time
/// chosen inside an ARI window is random across certificates but the same on every pass.
fn stable_pick(leaf: &Cert) -> f64 {
    let prefix = leaf.fingerprint.get(..13).unwrap_or("0");
    u64::from_str_radix(prefix, 16).map_or(0.0, |n| n as f64 / (1u64 << 52) as f64)
}

/// Issued material kept under `state_dir/pending/<name>/` until it is live.
mod pending {
    use super::*;

    fn dir(state_dir: &Path, name: &str) -> PathBuf {
        state_dir.join("pending").join(name)
    }

    /// The kept fullchain and key, when both are there.
    pub fn load(state_dir: &Path, name: &str) -> Option<(Vec<u8>, Vec<u8>)> {
        let d = dir(state_dir, name);
        Some((
            fs::read(d.join("fullchain.pem")).ok()?,
            fs::read(d.join("privkey.pem")).ok()?,
        ))
    }

    /// Keeps a pair: written whole into a temporary directory (key 0600), then renamed.
    pub fn save(
        state_dir: &Path,
        name: &str,
        fullchain: &[u8],
        privkey: &[u8],
    ) -> std::io::Result<()> {
        let parent = state_dir.join("pending");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&parent)?;
        let tmp = parent.join(format!(".certkeeper-tmp-{name}"));
        let _ = fs::remove_dir_all(&tmp);
        fs::DirBuilder::new().mode(0o700).create(&tmp)?;
        for (file, bytes, mode) in [
            ("fullchain.pem", fullchain, 0o644),
            ("privkey.pem", privkey, 0o600),
        ] {
            fsutil::create_synced(&tmp.join(file), bytes, mode)?;
        }
        fsutil::sync_dir(&tmp)?;
        remove(state_dir, name);
        fs::rename(&tmp, dir(state_dir, name))?;
        fsutil::sync_dir(&parent)
    }

    /// Drops the kept pair.
    pub fn remove(state_dir: &Path, name: &str) {
        let _ = fs::remove_dir_all(dir(state_dir, name));
    }
}
