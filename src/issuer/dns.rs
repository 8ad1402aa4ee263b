//! The DNS provider registry: a configured `dns_providers` entry turned into a provider,
//! built once per pass and shared by every order that uses it (one connection pool, one
//! zone cache). A provider with a crate of its own builds itself from its config section
//! (`certkeeper_dns::config::ProviderConfig`); adding one is its crate and one registry line
//! in the config validator.

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
        Some(config::DnsProvider::Api {
            config,
            secrets,
            endpoint,
            ..
        }) => {
            let mut values = BTreeMap::new();
            for (name, src) in secrets {
                let value = src.resolve().map_err(|e| fail(format!("{name}: {e}")))?;
                values.insert(*name, value.expose().to_owned());
            }
            config.build(&values, endpoint).map_err(fail)
        }
        None => Err(format!("dns provider {key} is not configured")),
    }
}
