//! The `type: aliyun` section of certkeeper's `dns_providers`, as written:
//!
//! ```yaml
//! ali:
//!   type: aliyun
//!   access_key_id_env: ALIYUN_ACCESS_KEY_ID          # or access_key_id_file
//!   access_key_secret_env: ALIYUN_ACCESS_KEY_SECRET  # or access_key_secret_file
//!   endpoint: https://alidns.aliyuncs.com            # optional
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use certkeeper_dns::DnsProvider;
use certkeeper_dns::config::{ProviderConfig, SecretKey, secret};

use crate::{AliyunProvider, DEFAULT_ENDPOINT};

/// The section as written; unknown keys are refused.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `aliyun`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The environment variable holding the AccessKey id.
    pub access_key_id_env: Option<String>,
    /// The file holding the AccessKey id.
    pub access_key_id_file: Option<String>,
    /// The environment variable holding the AccessKey secret.
    pub access_key_secret_env: Option<String>,
    /// The file holding the AccessKey secret.
    pub access_key_secret_file: Option<String>,
    /// The API endpoint ([`DEFAULT_ENDPOINT`] when not set).
    pub endpoint: Option<String>,
}

impl ProviderConfig for Config {
    fn secrets(&self) -> Vec<SecretKey> {
        vec![
            SecretKey {
                name: "access_key_id",
                env: self.access_key_id_env.clone(),
                file: self.access_key_id_file.clone(),
            },
            SecretKey {
                name: "access_key_secret",
                env: self.access_key_secret_env.clone(),
                file: self.access_key_secret_file.clone(),
            },
        ]
    }

    fn endpoint(&self) -> (&'static str, String) {
        (
            "endpoint",
            self.endpoint
                .clone()
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned()),
        )
    }

    fn describe(&self) -> String {
        format!("aliyun {}", self.endpoint().1)
    }

    fn build(
        &self,
        secrets: &BTreeMap<&'static str, String>,
        endpoint: &str,
    ) -> Result<Arc<dyn DnsProvider>, String> {
        AliyunProvider::new(
            secret(secrets, "access_key_id")?.to_owned(),
            secret(secrets, "access_key_secret")?.to_owned(),
            endpoint,
        )
        .map(|p| Arc::new(p) as Arc<dyn DnsProvider>)
        .map_err(|e| e.to_string())
    }
}
