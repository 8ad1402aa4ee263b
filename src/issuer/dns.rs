//! The DNS provider registry: a configured `dns_providers` entry turned into a provider,
//! built once per pass and shared by every order that uses it (one connection pool, one
//! zone cache). Adding a provider is one arm here and its own crate under `providers/`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use certkeeper_dns::DnsProvider;
use certkeeper_dns_exec::ExecProvider;

use crate::config::{self, Config};

/// The providers of one pass, each built on first use.
#[derive(Debug, Default)]
pub struct Providers {
    built: Mutex<BTreeMap<String, Arc<dyn DnsProvider>>>,
}

impl Providers {
    /// The provider configured under `key`, built once.
    pub fn get(&self, config: &Config, key: &str) -> Result<Arc<dyn DnsProvider>, String> {
        // A poisoned lock only means another task panicked while building: build again.
        let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = built.get(key) {
            return Ok(p.clone());
        }
        let provider = build(config, key)?;
        built.insert(key.to_owned(), provider.clone());
        Ok(provider)
    }
}

/// Builds the provider configured under `key`: its secrets are read now. Errors name the
/// provider by its config key and never hold a secret.
pub fn build(config: &Config, key: &str) -> Result<Arc<dyn DnsProvider>, String> {
    let fail = |e: String| format!("dns_providers.{key}: {e}");
    match config.dns_providers.get(key) {
        Some(config::DnsProvider::Exec { command, timeout }) => {
            ExecProvider::new(command.clone(), *timeout)
                .map(|p| Arc::new(p) as Arc<dyn DnsProvider>)
                .map_err(|e| fail(e.to_string()))
        }
        Some(config::DnsProvider::Cloudflare {
            api_token,
            api_base,
            zone_id,
        }) => {
            let token = api_token
                .resolve()
                .map_err(|e| fail(format!("api_token: {e}")))?;
            certkeeper_dns_cloudflare::CloudflareProvider::new(
                token.expose().to_owned(),
                api_base,
                zone_id.clone(),
            )
            .map(|p| Arc::new(p) as Arc<dyn DnsProvider>)
            .map_err(|e| fail(e.to_string()))
        }
        Some(config::DnsProvider::Aliyun {
            access_key_id,
            access_key_secret,
            endpoint,
        }) => {
            let id = access_key_id
                .resolve()
                .map_err(|e| fail(format!("access_key_id: {e}")))?;
            let secret = access_key_secret
                .resolve()
                .map_err(|e| fail(format!("access_key_secret: {e}")))?;
            certkeeper_dns_aliyun::AliyunProvider::new(
                id.expose().to_owned(),
                secret.expose().to_owned(),
                endpoint,
            )
            .map(|p| Arc::new(p) as Arc<dyn DnsProvider>)
            .map_err(|e| fail(e.to_string()))
        }
        None => Err(format!("dns provider {key} is not configured")),
    }
}
