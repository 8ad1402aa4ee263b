//! The config as written: serde structs that reject unknown keys. Each section is
//! deserialized on its own (see `validate.rs`) so that every problem is reported at once,
//! each with its key path.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use yaml_serde::Value;

/// The top level: each section kept as a YAML value and deserialized separately.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Top {
    pub state_dir: Option<Value>,
    pub issuers: Option<Value>,
    pub dns_providers: Option<Value>,
    pub dns: Option<Value>,
    pub renewal: Option<Value>,
    pub alerts: Option<Value>,
    pub alert_repeat: Option<DurationText>,
    pub discover: Option<Value>,
    pub certificates: Option<Value>,
    pub fleet: Option<Value>,
    pub probe_interval: Option<DurationText>,
    pub drift_after: Option<DurationText>,
}

/// The `type` key is read before the entry is deserialized; the fields named `_kind` only
/// let it pass `deny_unknown_fields`.
///
/// A named map section (`issuers`, `dns_providers`) before its entries are read.
pub type Named = BTreeMap<String, Value>;

/// A duration as written; integers are refused with a hint to add a unit.
#[derive(Clone, Debug)]
pub struct DurationText(pub String);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(DurationText(s)),
            Value::Number(n) => Err(serde::de::Error::custom(format!(
                "a duration needs a unit: write \"{n}s\", \"{n}m\", \"{n}h\" or \"{n}d\" rather than {n}"
            ))),
            _ => Err(serde::de::Error::custom(
                "expected a duration such as \"90s\", \"30m\", \"12h\" or \"30d\"",
            )),
        }
    }
}

/// A string, or a list of strings (`issuer: le` or `issuer: [le, zerossl]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acme {
    #[serde(rename = "type")]
    pub _kind: String,
    pub directory: Option<String>,
    pub contact: Option<Vec<String>>,
    pub trust_roots: Option<OneOrMany>,
    pub eab: Option<Eab>,
    pub staging_directory: Option<String>,
    pub max_concurrent_requests: Option<u64>,
    pub orders_per_minute: Option<u64>,
    pub certbot_account: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Eab {
    pub key_id: Option<String>,
    pub hmac_key_env: Option<String>,
    pub hmac_key_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalCa {
    #[serde(rename = "type")]
    pub _kind: String,
    pub validity: Option<DurationText>,
    pub trust_bundle: Option<String>,
    pub trust_reload: Option<Reload>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exec {
    #[serde(rename = "type")]
    pub _kind: String,
    pub command: Option<Vec<String>>,
    pub timeout: Option<DurationText>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    pub resolvers: Option<Vec<String>>,
    pub propagation_timeout: Option<DurationText>,
    pub poll_interval: Option<DurationText>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Renewal {
    pub before_expiry: Option<DurationText>,
    pub schedule: Option<String>,
    pub jitter: Option<DurationText>,
    pub concurrency: Option<u64>,
    pub retry: Option<Retry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    pub initial: Option<DurationText>,
    pub max: Option<DurationText>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slack {
    #[serde(rename = "type")]
    pub _kind: String,
    pub name: Option<String>,
    pub webhook_url_env: Option<String>,
    pub webhook_url_file: Option<String>,
    pub on: Option<Vec<String>>,
}

/// A chat robot (WeCom, DingTalk, Feishu): a secret webhook URL and, for the signed modes,
/// a signing secret (WeCom has none: the key in its URL is the credential).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Robot {
    #[serde(rename = "type")]
    pub _kind: String,
    pub name: Option<String>,
    pub webhook_url_env: Option<String>,
    pub webhook_url_file: Option<String>,
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
    pub on: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    #[serde(rename = "type")]
    pub _kind: String,
    pub name: Option<String>,
    pub url: Option<String>,
    pub url_env: Option<String>,
    pub url_file: Option<String>,
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
    pub on: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discover {
    pub paths: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    pub name: Option<String>,
    pub domains: Option<Vec<String>>,
    pub issuer: Option<OneOrMany>,
    pub profile: Option<String>,
    pub challenge: Option<String>,
    pub dns_provider: Option<String>,
    pub key: Option<String>,
    pub fullchain: Option<String>,
    pub privkey: Option<String>,
    pub cert: Option<String>,
    pub chain: Option<String>,
    pub combined: Option<String>,
    pub mode: Option<Value>,
    pub owner: Option<Value>,
    pub group: Option<Value>,
    pub reuse_key: Option<bool>,
    pub keep_snapshots: Option<u64>,
    pub reload: Option<Reload>,
    pub verify: Option<Verify>,
    pub fleet: Option<bool>,
    pub usage: Option<OneOrMany>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reload {
    pub command: Option<Vec<String>>,
    pub timeout: Option<DurationText>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    pub tls_connect: Option<String>,
    pub server_name: Option<String>,
    pub timeout: Option<DurationText>,
    pub command: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    pub name: Option<String>,
    pub host: Option<String>,
    pub etcd: Option<Value>,
    pub seal_key_file: Option<String>,
    pub lease_ttl: Option<DurationText>,
    pub canary: Option<u64>,
    pub max_failures: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Etcd {
    pub endpoints: Option<Vec<String>>,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
}
