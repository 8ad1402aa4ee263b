//! A provider's own config section. Each provider crate owns the struct its YAML section
//! deserializes into (`type: cloudflare`, its keys) and says, through [`ProviderConfig`],
//! which secrets it takes, where its API is, what else is wrong with the section, and how
//! to build the provider. certkeeper does the rest the same way for every provider: secrets
//! from `<name>_env` or `<name>_file` (never inline), the endpoint URL checked, every problem
//! reported with its key path and line, and one registry line per provider type.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::DnsProvider;

/// A secret a provider takes, as written: from `<name>_env` or `<name>_file`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretKey {
    /// The secret's name (`api_token`): its keys are `<name>_env` and `<name>_file`.
    pub name: &'static str,
    /// The environment variable named in `<name>_env`.
    pub env: Option<String>,
    /// The file named in `<name>_file`.
    pub file: Option<String>,
}

/// What certkeeper needs from a provider's config section.
pub trait ProviderConfig: fmt::Debug + Send + Sync {
    /// The secrets the section names; each is required.
    fn secrets(&self) -> Vec<SecretKey>;
    /// The key of the API endpoint and its value (the default when not written).
    fn endpoint(&self) -> (&'static str, String);
    /// Problems beyond the section's shape, as (key, what to do).
    fn problems(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
    /// A line for `config check`: what the section says, never a secret.
    fn describe(&self) -> String;
    /// Builds the provider from its secrets (by name, read now) and its endpoint. Errors
    /// never hold a secret.
    fn build(
        &self,
        secrets: &BTreeMap<&'static str, String>,
        endpoint: &str,
    ) -> Result<Arc<dyn DnsProvider>, String>;
}

/// The secret called `name` in `secrets`, or an error naming it.
pub fn secret<'a>(
    secrets: &'a BTreeMap<&'static str, String>,
    name: &str,
) -> Result<&'a str, String> {
    secrets
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| format!("{name} is missing"))
}
