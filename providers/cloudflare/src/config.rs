//! The `type: cloudflare` section of certkeeper's `dns_providers`, as written:
//!
//! ```yaml
//! cf:
//!   type: cloudflare
//!   api_token_env: CF_API_TOKEN        # or api_token_file
//!   api_base: https://api.cloudflare.com/client/v4   # optional
//!   zone_id: 023e105f4ecef8ad9ca31a8372d0c353          # optional: tokens without Zone:Read
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use certkeeper_dns::DnsProvider;
use certkeeper_dns::config::{ProviderConfig, SecretKey, secret};

use crate::{CloudflareProvider, DEFAULT_API_BASE};

/// The section as written; unknown keys are refused.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `cloudflare`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The environment variable holding the API token.
    pub api_token_env: Option<String>,
    /// The file holding the API token.
    pub api_token_file: Option<String>,
    /// The API's base URL ([`DEFAULT_API_BASE`] when not set).
    pub api_base: Option<String>,
    /// The zone's id, pinned: no zone lookup (tokens without Zone:Read).
    pub zone_id: Option<String>,
}

impl ProviderConfig for Config {
    fn secrets(&self) -> Vec<SecretKey> {
        vec![SecretKey {
            name: "api_token",
            env: self.api_token_env.clone(),
            file: self.api_token_file.clone(),
        }]
    }

    fn endpoint(&self) -> (&'static str, String) {
        (
            "api_base",
            self.api_base
                .clone()
                .unwrap_or_else(|| DEFAULT_API_BASE.to_owned()),
        )
    }

    fn problems(&self) -> Vec<(&'static str, String)> {
        match &self.zone_id {
            Some(z) if z.is_empty() || !z.chars().all(|c| c.is_ascii_alphanumeric()) => vec![(
                "zone_id",
                "zone_id is the 32-character hex id shown on the zone's overview page".to_owned(),
            )],
            _ => Vec::new(),
        }
    }

    fn describe(&self) -> String {
        let (_, base) = self.endpoint();
        format!(
            "cloudflare {base}{}",
            self.zone_id
                .as_ref()
                .map(|z| format!(", zone {z}"))
                .unwrap_or_default()
        )
    }

    fn build(
        &self,
        secrets: &BTreeMap<&'static str, String>,
        endpoint: &str,
    ) -> Result<Arc<dyn DnsProvider>, String> {
        let token = secret(secrets, "api_token")?;
        CloudflareProvider::new(token.to_owned(), endpoint, self.zone_id.clone())
            .map(|p| Arc::new(p) as Arc<dyn DnsProvider>)
            .map_err(|e| e.to_string())
    }
}
