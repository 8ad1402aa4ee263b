//! Issuers: where new certificates come from. The built-in CA lives in [`local_ca`]; ACME
//! orders are in `crate::acme`. [`Issuers`] dispatches a pass's requests to the configured
//! issuers, opening each once per pass.

pub mod dns;
pub mod local_ca;

use std::collections::BTreeMap;
use std::sync::Arc;

use time::OffsetDateTime;
use tokio::sync::Mutex;

use certkeeper_dns::DnsProvider;

use crate::acme::{self, Acme};
use crate::config::{AcmeIssuer, Certificate, Challenge, Config, Issuer};
use crate::keys;
use crate::state::CauseKind;
use crate::store::StateDir;
use crate::x509::{self, Cert, TrustStore, leaf_of_file};
use local_ca::LocalCa;

/// Why an issuer gave no certificate. The leaf's error is kept whole, so that backoff,
/// alerts and metrics can tell a CA's `rateLimited` from a DNS timeout ([`IssueError::kind`]);
/// the message is rendered from it where it is shown.
#[non_exhaustive]
#[derive(Clone, Debug, thiserror::Error)]
pub enum IssueError {
    /// The ACME CA (or the DNS work of its order) failed.
    #[error(transparent)]
    Acme(Arc<acme::Error>),
    /// A dry run's staging CA failed to open its account.
    #[error("staging {directory}: {source}")]
    Staging {
        /// The staging directory URL.
        directory: String,
        /// What failed.
        source: Arc<acme::Error>,
    },
    /// The local CA failed.
    #[error(transparent)]
    LocalCa(Arc<local_ca::Error>),
    /// The DNS provider could not be built (its secrets, its settings).
    #[error(transparent)]
    DnsProvider(Arc<dns::Error>),
    /// The certificate signing request could not be made.
    #[error(transparent)]
    Key(Arc<keys::Error>),
    /// The issuer cannot order as configured.
    #[error("{0}")]
    Config(&'static str),
}

impl IssueError {
    /// What kind of failure this is.
    pub fn kind(&self) -> CauseKind {
        match self {
            IssueError::Acme(e) | IssueError::Staging { source: e, .. } => acme_kind(e),
            IssueError::LocalCa(_) | IssueError::Key(_) => CauseKind::Local,
            IssueError::DnsProvider(_) => CauseKind::Dns,
            IssueError::Config(_) => CauseKind::Config,
        }
    }

    /// When the CA asked to be asked again (the `Retry-After` of its last answer: a
    /// `rateLimited` problem, a 429 or 5xx once the client's own retries ran out), on any
    /// step: opening the account (newNonce, newAccount) or the order. The kind stays what
    /// the answer was ([`IssueError::kind`]).
    pub fn retry_after(&self) -> Option<std::time::SystemTime> {
        match self {
            IssueError::Acme(e) | IssueError::Staging { source: e, .. } => e.retry_after(),
            _ => None,
        }
    }
}

impl From<acme::Error> for IssueError {
    fn from(e: acme::Error) -> IssueError {
        IssueError::Acme(Arc::new(e))
    }
}

impl From<local_ca::Error> for IssueError {
    fn from(e: local_ca::Error) -> IssueError {
        IssueError::LocalCa(Arc::new(e))
    }
}

/// The kind of an ACME failure.
fn acme_kind(e: &acme::Error) -> CauseKind {
    use acme::Error as E;
    match e {
        E::Refused { .. } if e.is_rate_limited() => CauseKind::RateLimited,
        // The CA's server failed (a 503 during maintenance, a proxy's 502): not a refusal.
        E::Refused { .. } if e.is_server_error() => CauseKind::Network,
        // The CA lacks the challenge the certificate is configured for: no retry helps,
        // the config must change (challenge: dns-01, or another issuer).
        E::NoDnsPersist01 { .. } | E::NoIssuerDomain { .. } => CauseKind::Config,
        // The standing record is missing or wrong: a DNS matter someone must fix.
        E::PersistRecord { .. } => CauseKind::Dns,
        E::Refused { .. }
        | E::NoDns01 { .. }
        | E::Authorization { .. }
        | E::ChallengeFailed { .. }
        | E::OrderInvalid { .. } => CauseKind::CaRefused,
        E::Dns(_) => CauseKind::Dns,
        E::Unreachable { .. }
        | E::TooLarge { .. }
        | E::Directory { .. }
        | E::Protocol { .. }
        | E::Timeout { .. }
        | E::Tls(_) => CauseKind::Network,
        E::TrustRoots { .. }
        | E::IssuerName { .. }
        | E::Eab(_)
        | E::UnknownProfile { .. }
        | E::AccountDirectory { .. } => CauseKind::Config,
        _ => CauseKind::Local,
    }
}

/// An ACME account opened (or failed to open) once for a pass.
/// The error keeps the CA's `Retry-After` (a rate-limited newNonce or newAccount), so that
/// every certificate waiting for the opening waits until then.
type OpenOnce = Arc<tokio::sync::OnceCell<Result<Arc<Acme>, IssueError>>>;

/// The issuers of one pass: local CAs opened once and shared by the certificates' tasks.
pub struct Issuers {
    config: Arc<Config>,
    state_dir: StateDir,
    now: OffsetDateTime,
    local: Mutex<BTreeMap<String, LocalCa>>,
    acme: Mutex<BTreeMap<String, OpenOnce>>,
    providers: dns::Providers,
    system: Arc<TrustStore>,
    /// The old root of each local CA whose root rotation is switched, read once per pass.
    retiring: std::sync::OnceLock<BTreeMap<String, Cert>>,
}

impl Issuers {
    /// The issuers of `config`, keeping accounts and CAs in `state_dir` (in memory when it is
    /// read-only: a dry run); `system` is the platform's roots.
    pub fn new(
        config: Arc<Config>,
        state_dir: StateDir,
        system: Arc<TrustStore>,
        now: OffsetDateTime,
    ) -> Issuers {
        Issuers {
            config,
            state_dir,
            now,
            local: Mutex::new(BTreeMap::new()),
            acme: Mutex::new(BTreeMap::new()),
            providers: dns::Providers::default(),
            system,
            retiring: std::sync::OnceLock::new(),
        }
    }

    /// The local CA among `cert`'s issuers whose old root, being rotated out, anchors
    /// `cert`'s live chain: such a leaf is due.
    pub fn retiring_anchor<'a>(&self, cert: &'a Certificate) -> Option<&'a str> {
        let retiring = self.retiring.get_or_init(|| {
            self.config
                .issuers
                .iter()
                .filter(|(_, i)| matches!(i, Issuer::LocalCa(_)))
                .filter_map(|(name, _)| {
                    local_ca::rotation::retiring(self.state_dir.path(), name)
                        .map(|root| (name.clone(), root))
                })
                .collect()
        });
        if retiring.is_empty() {
            return None;
        }
        cert.issuers
            .iter()
            .find(|i| {
                retiring
                    .get(*i)
                    .is_some_and(|root| local_ca::rotation::chains_to(&cert.fullchain, root))
            })
            .map(String::as_str)
    }

    /// Gets a fullchain PEM for `cert` from `issuer`, signed for `key`; an ACME order is
    /// recorded with `track` (and one it recorded before is resumed) when there is one.
    pub async fn issue(
        &self,
        issuer: &str,
        cert: &Certificate,
        key: &rcgen::KeyPair,
        now: OffsetDateTime,
        track: Option<&dyn acme::Track>,
    ) -> Result<String, IssueError> {
        match self.config.issuers.get(issuer) {
            Some(Issuer::LocalCa(ca)) => {
                let mut open = self.local.lock().await;
                let ca_handle = match open.get_mut(issuer) {
                    Some(h) => h,
                    None => {
                        // The live leaves of the certificates it may have issued: a CA
                        // whose files vanished under them is not replaced silently.
                        let live: Vec<(&str, &std::path::Path)> = self
                            .config
                            .certificates
                            .iter()
                            .filter(|c| c.issuers.iter().any(|i| i == issuer))
                            .map(|c| (c.name.as_str(), c.fullchain.as_path()))
                            .collect();
                        let h = LocalCa::open(&self.state_dir, issuer, self.now, &live)?;
                        open.entry(issuer.to_owned()).or_insert(h)
                    }
                };
                Ok(ca_handle.issue(&cert.domains, key, ca.validity, cert.usage, now)?)
            }
            Some(Issuer::Acme(_)) => {
                let acme = self.ordering_account(issuer).await?;
                let proof = match cert.challenge {
                    Challenge::DnsPersist01 => acme::Proof::DnsPersist01 { cert: &cert.name },
                    Challenge::Dns01 => {
                        let dns_name = cert
                            .dns_provider
                            .as_deref()
                            .ok_or(IssueError::Config("no dns_provider for an acme issuer"))?;
                        let dns = self
                            .dns_provider(dns_name)
                            .map_err(|e| IssueError::DnsProvider(Arc::new(e)))?;
                        acme::Proof::Dns01 { dns, dns_name }
                    }
                };
                let csr_der =
                    keys::csr_der(key, &cert.domains).map_err(|e| IssueError::Key(Arc::new(e)))?;
                let live = leaf_of_file(&cert.fullchain).ok();
                let request = acme::OrderRequest {
                    domains: &cert.domains,
                    csr_der,
                    profile: cert.profile.as_deref(),
                    // A staging CA never issued the live certificate.
                    replaces: live
                        .as_ref()
                        .filter(|_| !self.orders_from_staging(issuer))
                        .map(|l| l.der.as_slice()),
                    proof,
                    settings: &self.config.dns,
                    track,
                };
                acme.issue(&request)
                    .await
                    .map(|issued| issued.fullchain_pem)
                    .map_err(IssueError::from)
            }
            None => Err(IssueError::Config("not configured")),
        }
    }

    /// Whether `issuer` issues again at no cost (a local CA: no order, no rate limit).
    pub fn issues_freely(&self, issuer: &str) -> bool {
        matches!(self.config.issuers.get(issuer), Some(Issuer::LocalCa(_)))
    }

    /// Whether ordering from `issuer` in this pass needs a staging CA that it lacks: an ACME
    /// issuer without `staging_directory`, in a dry run.
    pub fn needs_staging(&self, issuer: &str) -> bool {
        !self.state_dir.is_writable()
            && matches!(self.config.issuers.get(issuer), Some(Issuer::Acme(a)) if a.staging_directory.is_none())
    }

    /// Whether orders from `issuer` in this pass go to its staging CA (a dry run).
    pub fn orders_from_staging(&self, issuer: &str) -> bool {
        !self.state_dir.is_writable()
            && matches!(self.config.issuers.get(issuer), Some(Issuer::Acme(a)) if a.staging_directory.is_some())
    }

    /// The account that orders for `issuer` in this pass: its staging CA's in a dry run (a
    /// new account, kept in memory), its own otherwise.
    async fn ordering_account(&self, name: &str) -> Result<Arc<Acme>, IssueError> {
        if self.needs_staging(name) {
            return Err(IssueError::Config(
                "dry run: no staging_directory, nothing is ordered",
            ));
        }
        self.open_once(name, self.orders_from_staging(name)).await
    }

    /// The account at ACME issuer `name`, opened once per pass: the certificates that need
    /// it wait for the same opening, and a failure (a directory that cannot be reached) is
    /// the answer for all of them, so it costs one connect timeout, not one per
    /// certificate. Different issuers are opened concurrently.
    pub async fn acme(&self, name: &str) -> Result<Arc<Acme>, IssueError> {
        self.open_once(name, false).await
    }

    /// Opens, once per pass, the account of ACME issuer `name` at its own directory or, with
    /// `staging`, at its `staging_directory` (a dry run's: a new account kept in memory).
    async fn open_once(&self, name: &str, staging: bool) -> Result<Arc<Acme>, IssueError> {
        let key = if staging {
            format!("{name} (staging)")
        } else {
            name.to_owned()
        };
        let cell = {
            let mut cells = self.acme.lock().await;
            cells.entry(key).or_default().clone()
        };
        cell.get_or_init(|| async {
            let Some(Issuer::Acme(cfg)) = self.config.issuers.get(name) else {
                return Err(IssueError::Config("not an acme issuer"));
            };
            if !staging {
                return Acme::open(name, cfg, &self.state_dir)
                    .await
                    .map(Arc::new)
                    .map_err(IssueError::from);
            }
            let staging = AcmeIssuer {
                directory: cfg.staging_directory.clone().unwrap_or_default(),
                // certbot's account belongs to the production CA.
                certbot_account: None,
                ..cfg.clone()
            };
            tracing::info!(issuer = %name, directory = %staging.directory, "Dry run: ordering from the staging CA.");
            let in_memory = StateDir::read_only(self.state_dir.path());
            Acme::open(&format!("{name}-staging"), &staging, &in_memory)
                .await
                .map(Arc::new)
                .map_err(|e| IssueError::Staging {
                    directory: staging.directory.clone(),
                    source: Arc::new(e),
                })
        })
        .await
        .clone()
    }

    /// Brings the kept renewal-information answer (ARI) for `leaf` in `state` up to date:
    /// asked of the certificate's first ACME issuer only when there is no answer about this
    /// leaf, or the CA's `Retry-After` of the last one has passed. Returns whether `state`
    /// changed. When the CA cannot be asked, the last answer (if any) stays and
    /// `before_expiry` decides without one.
    pub async fn refresh_ari(
        &self,
        cert: &Certificate,
        leaf: &Cert,
        state: &mut crate::state::CertState,
        now: OffsetDateTime,
    ) -> bool {
        if crate::schedule::ari_fresh(state.ari.as_ref(), leaf, now) {
            return false;
        }
        let Some(issuer) = cert
            .issuers
            .iter()
            .find(|i| matches!(self.config.issuers.get(*i), Some(Issuer::Acme(_))))
        else {
            return false;
        };
        let acme = match self.acme(issuer).await {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(cert = %cert.name, %issuer, "No renewal information: {e}");
                return false;
            }
        };
        let kept = |window: Option<(i64, i64)>, url: Option<String>, keep: std::time::Duration| {
            crate::state::KeptAri {
                fingerprint: leaf.fingerprint.clone(),
                window,
                explanation_url: url,
                fetched: now.unix_timestamp(),
                retry_after: now.unix_timestamp() + crate::state::ari_keep(keep).as_secs() as i64,
            }
        };
        match acme.renewal_window(&leaf.der).await {
            Ok(Some(w)) => {
                if w.start <= now
                    && let Some(url) = &w.explanation_url
                {
                    tracing::info!(cert = %cert.name, %issuer, explanation = %url, "The CA's renewal window has begun.");
                }
                state.ari = Some(kept(
                    Some((w.start.unix_timestamp(), w.end.unix_timestamp())),
                    w.explanation_url.clone(),
                    w.retry_after,
                ));
                true
            }
            // No renewal information at this CA: asked again in a day, in case it starts.
            Ok(None) => {
                state.ari = Some(kept(None, None, std::time::Duration::MAX));
                true
            }
            Err(e) => {
                tracing::warn!(cert = %cert.name, %issuer, "Renewal information unavailable, using the last answer or before_expiry: {e}");
                false
            }
        }
    }

    /// The DNS provider configured under `key`, built once per pass and shared by every
    /// order that uses it.
    pub fn dns_provider(&self, key: &str) -> Result<Arc<dyn DnsProvider>, dns::Error> {
        self.providers.get(&self.config, key)
    }

    /// The roots new material of `cert` must chain to: the system's, its issuers'
    /// `trust_roots`, and the roots of the local CAs opened in this pass.
    pub async fn trust_for(&self, cert: &Certificate) -> TrustStore {
        let mut trust = TrustStore::layered(&self.system);
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

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::{Duration, SystemTime};

    fn answered(status: u16, kind: Option<&str>, retry_after: Option<SystemTime>) -> acme::Error {
        acme::Error::Refused {
            step: "new account",
            status: Some(status),
            kind: kind.map(str::to_owned),
            detail: "slow down".into(),
            subproblems: vec![],
            attempts: 1,
            retry_after,
        }
    }

    fn refused(kind: &str) -> acme::Error {
        answered(429, Some(kind), Some(in_an_hour()))
    }

    fn in_an_hour() -> SystemTime {
        SystemTime::now() + Duration::from_secs(3600)
    }

    #[test]
    fn kinds_tell_a_rate_limit_from_a_refusal_from_the_network() {
        let limited = IssueError::from(refused("urn:ietf:params:acme:error:rateLimited"));
        assert_eq!(limited.kind(), CauseKind::RateLimited);
        assert!(limited.retry_after().is_some());
        let other = IssueError::from(answered(
            403,
            Some("urn:ietf:params:acme:error:unauthorized"),
            None,
        ));
        assert_eq!(other.kind(), CauseKind::CaRefused);
        assert_eq!(other.retry_after(), None);
        let staging = IssueError::Staging {
            directory: "https://staging.example/dir".into(),
            source: Arc::new(refused("urn:ietf:params:acme:error:rateLimited")),
        };
        assert_eq!(staging.kind(), CauseKind::RateLimited);
        assert!(
            staging
                .to_string()
                .starts_with("staging https://staging.example/dir: ")
        );
        let unreachable = IssueError::from(acme::Error::Unreachable {
            step: "directory",
            reason: "connection refused".into(),
            attempts: 2,
        });
        assert_eq!(unreachable.kind(), CauseKind::Network);
        let dns_timeout =
            IssueError::from(acme::Error::Dns(acme::dns01::Error::PropagationTimeout {
                provider: "hook".into(),
                fqdn: "_acme-challenge.www.example".into(),
                servers: vec![],
                waited: std::time::Duration::from_secs(60),
                last: "nothing".into(),
            }));
        assert_eq!(dns_timeout.kind(), CauseKind::Dns);
        assert_eq!(dns_timeout.retry_after(), None);
        let unreadable = IssueError::DnsProvider(Arc::new(dns::Error::Secret {
            key: "cf".into(),
            name: "api_token",
            reason: "cannot read /run/secrets/cf: no such file".into(),
        }));
        assert_eq!(unreadable.kind(), CauseKind::Dns);
        assert_eq!(
            unreadable.to_string(),
            "dns_providers.cf: api_token: cannot read /run/secrets/cf: no such file"
        );
    }

    /// Any answer's `Retry-After` sets the next attempt; the kind stays the answer's.
    #[test]
    fn retry_after_of_any_answer_is_kept_with_its_kind() {
        let at = in_an_hour();
        let unavailable = IssueError::from(answered(503, None, Some(at)));
        assert_eq!(unavailable.kind(), CauseKind::Network);
        assert_eq!(unavailable.retry_after(), Some(at));
        let internal = IssueError::from(answered(
            500,
            Some("urn:ietf:params:acme:error:serverInternal"),
            Some(at),
        ));
        assert_eq!(internal.kind(), CauseKind::Network);
        let bare_429 = IssueError::from(answered(429, None, Some(at)));
        assert_eq!(bare_429.kind(), CauseKind::RateLimited);
        assert_eq!(bare_429.retry_after(), Some(at));
        // A time already past is no plan: the usual backoff applies.
        let past = IssueError::from(answered(503, None, Some(SystemTime::UNIX_EPOCH)));
        assert_eq!(past.retry_after(), None);
    }

    /// A CA without dns-persist-01 is a config matter (no retry helps); a missing record is
    /// a DNS one.
    #[test]
    fn dns_persist_01_failures_have_their_own_kinds() {
        let unoffered = IssueError::from(acme::Error::NoDnsPersist01 {
            domain: "example.com".into(),
        });
        assert_eq!(unoffered.kind(), CauseKind::Config);
        assert_eq!(
            unoffered.to_string(),
            "the CA does not offer dns-persist-01 for example.com; use challenge: dns-01 with a dns_provider for this certificate, or an issuer that offers it"
        );
        let unnamed = IssueError::from(acme::Error::NoIssuerDomain {
            directory: "https://ca.example/dir".into(),
        });
        assert_eq!(unnamed.kind(), CauseKind::Config);
        let missing = IssueError::from(acme::Error::PersistRecord {
            fqdn: "_validation-persist.example.com.".into(),
            account: "https://ca.example/acct/1".into(),
            issuer: "ca.example".into(),
            cert: "www".into(),
            seen: vec![],
        });
        assert_eq!(missing.kind(), CauseKind::Dns);
        assert_eq!(
            missing.to_string(),
            "no TXT record at _validation-persist.example.com. authorizes account https://ca.example/acct/1 for issuer ca.example (nothing found); create it (certkeeper persist show www prints it)"
        );
    }

    #[test]
    fn config_errors_are_config() {
        assert_eq!(
            IssueError::Config("not configured").kind(),
            CauseKind::Config
        );
        assert_eq!(
            IssueError::Config("not configured").to_string(),
            "not configured"
        );
    }
}
