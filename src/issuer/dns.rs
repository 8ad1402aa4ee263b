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

/// Why the provider configured under a key could not be built. Messages name the provider
/// by its config key (`dns_providers.<key>: ...`) and never hold a secret.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No provider is configured under the key.
    #[error("dns provider {key} is not configured")]
    NotConfigured {
        /// The key.
        key: String,
    },
    /// An `exec` provider's command cannot be used.
    #[error("dns_providers.{key}: {source}")]
    Exec {
        /// The provider's key.
        key: String,
        /// Why.
        #[source]
        source: certkeeper_dns_exec::Error,
    },
    /// A secret of an API provider could not be read (the message names its source, never
    /// its value).
    #[error("dns_providers.{key}: {name}: {reason}")]
    Secret {
        /// The provider's key.
        key: String,
        /// The secret's name in the provider's section.
        name: &'static str,
        /// Why it could not be read.
        reason: String,
    },
    /// An API provider refused its settings.
    #[error("dns_providers.{key}: {reason}")]
    Settings {
        /// The provider's key.
        key: String,
        /// What the provider said.
        reason: String,
    },
}

impl Error {
    /// The message without the `dns_providers.<key>: ` its display starts with, for a line
    /// that names the provider already.
    pub fn detail(&self) -> String {
        match self {
            Error::NotConfigured { .. } => self.to_string(),
            Error::Exec { source, .. } => source.to_string(),
            Error::Secret { name, reason, .. } => format!("{name}: {reason}"),
            Error::Settings { reason, .. } => reason.clone(),
        }
    }
}

impl Providers {
    /// The provider configured under `key`, built once.
    pub fn get(&self, config: &Config, key: &str) -> Result<Arc<dyn DnsProvider>, Error> {
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
pub fn build(config: &Config, key: &str) -> Result<Arc<dyn DnsProvider>, Error> {
    match config.dns_providers.get(key) {
        Some(config::DnsProvider::Exec { command, timeout }) => {
            ExecProvider::new(command.clone(), *timeout)
                .map(|p| Arc::new(p) as Arc<dyn DnsProvider>)
                .map_err(|source| Error::Exec {
                    key: key.to_owned(),
                    source,
                })
        }
        Some(config::DnsProvider::Api {
            config,
            secrets,
            endpoint,
            ..
        }) => {
            let mut values = BTreeMap::new();
            for (name, src) in secrets {
                let value = src.resolve().map_err(|reason| Error::Secret {
                    key: key.to_owned(),
                    name,
                    reason,
                })?;
                values.insert(*name, value.expose().to_owned());
            }
            config
                .build(&values, endpoint)
                .map_err(|reason| Error::Settings {
                    key: key.to_owned(),
                    reason,
                })
        }
        None => Err(Error::NotConfigured {
            key: key.to_owned(),
        }),
    }
}
