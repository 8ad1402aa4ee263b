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
use crate::config::{Certificate, Config, Issuer};
use crate::keys;
use crate::x509::{self, Cert, TrustStore, leaf_of_file};
use local_ca::LocalCa;

/// The issuers of one pass: local CAs opened once and shared by the certificates' tasks.
pub struct Issuers {
    config: Arc<Config>,
    persist: bool,
    now: OffsetDateTime,
    local: Mutex<BTreeMap<String, LocalCa>>,
    acme: Mutex<BTreeMap<String, Arc<Acme>>>,
    providers: dns::Providers,
    system: TrustStore,
}

impl Issuers {
    /// The issuers of `config`; `persist` false keeps accounts and CAs in memory (dry run).
    pub fn new(config: Arc<Config>, persist: bool, now: OffsetDateTime) -> Issuers {
        Issuers {
            config,
            persist,
            now,
            local: Mutex::new(BTreeMap::new()),
            acme: Mutex::new(BTreeMap::new()),
            providers: dns::Providers::default(),
            system: TrustStore::system(),
        }
    }

    /// Gets a fullchain PEM for `cert` from `issuer`, signed for `key`.
    pub async fn issue(
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
                let live = leaf_of_file(&cert.fullchain).ok();
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
    pub async fn acme(&self, name: &str) -> Result<Arc<Acme>, String> {
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
    pub async fn renewal_window(
        &self,
        cert: &Certificate,
        leaf: &Cert,
    ) -> Option<acme::RenewalWindow> {
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

    /// The DNS provider configured under `key`, built once per pass and shared by every
    /// order that uses it.
    pub fn dns_provider(&self, key: &str) -> Result<Arc<dyn DnsProvider>, String> {
        self.providers.get(&self.config, key)
    }

    /// The roots new material of `cert` must chain to: the system's, its issuers'
    /// `trust_roots`, and the roots of the local CAs opened in this pass.
    pub async fn trust_for(&self, cert: &Certificate) -> TrustStore {
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
