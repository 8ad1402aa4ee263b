//! The configuration: loading the YAML file, validating it into a [`Config`] that cannot
//! hold invalid states, and reporting every problem at once with its key path and line.
//!
//! Two stages, as vector and rustls do it: `raw.rs` holds serde structs as written (unknown
//! keys rejected), `validate.rs` turns them into [`Config`] without touching the filesystem,
//! the network or any secret. Reading secrets and files happens later, where a command needs
//! them ([`Config::preflight`]).

mod cron;
mod duration;
mod error;
mod locate;
mod raw;
mod secret;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use certkeeper_dns::config::ProviderConfig;

pub use cron::Cron;
pub use duration::{BeforeExpiry, format_duration, parse_duration};
pub use error::{ConfigError, Problem};
pub use locate::KeyPath;
pub use secret::{Secret, SecretSource};

/// Where the config is read from when neither `--config` nor `CERTKEEPER_CONFIG` says.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/certkeeper/config.yaml";
/// Default `state_dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/certkeeper";
/// Default `renewal.before_expiry`: 30 days.
pub const DEFAULT_BEFORE_EXPIRY: Duration = Duration::from_secs(30 * 86_400);
/// Default `renewal.schedule`: twice a day at a fixed minute, with seconds first.
pub const DEFAULT_SCHEDULE: &str = "0 17 */12 * * *";
/// Default `renewal.jitter`.
pub const DEFAULT_JITTER: Duration = Duration::from_secs(30 * 60);
/// Default `renewal.concurrency`.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Default `renewal.retry.initial`.
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_secs(5 * 60);
/// Default `renewal.retry.max`.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(24 * 3600);
/// Default `dns.propagation_timeout`.
pub const DEFAULT_PROPAGATION_TIMEOUT: Duration = Duration::from_secs(120);
/// Default `dns.poll_interval`.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Default `keep_snapshots`.
pub const DEFAULT_KEEP_SNAPSHOTS: usize = 5;
/// Default private key mode.
pub const DEFAULT_KEY_MODE: u32 = 0o600;
/// Default `validity` of a local CA's leaves.
pub const DEFAULT_LOCAL_CA_VALIDITY: Duration = Duration::from_secs(90 * 86_400);
/// Default `reload.timeout`.
pub const DEFAULT_RELOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `verify.timeout`.
pub const DEFAULT_VERIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default exec DNS hook timeout.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// A validated configuration. Relative paths are already resolved against the config
/// file's directory.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file this was read from.
    pub source: PathBuf,
    /// Accounts, local CA, snapshots, journal, state, lock.
    pub state_dir: PathBuf,
    /// Issuers by their config key.
    pub issuers: BTreeMap<String, Issuer>,
    /// DNS providers by their config key.
    pub dns_providers: BTreeMap<String, DnsProvider>,
    /// Propagation checks.
    pub dns: DnsSettings,
    /// When and how renewals run.
    pub renewal: Renewal,
    /// Where events are sent.
    pub alerts: Vec<Alert>,
    /// The same failure of the same certificate alerts again only after this.
    pub alert_repeat: Duration,
    /// Directories whose certificates `check` reports (never changed).
    pub discover_paths: Vec<PathBuf>,
    /// The managed certificates, in config order.
    pub certificates: Vec<Certificate>,
    /// Things that are allowed but probably not meant (e.g. plain http to a remote host).
    pub warnings: Vec<String>,
}

/// A certificate issuer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Issuer {
    /// An ACME CA reached over DNS-01.
    Acme(AcmeIssuer),
    /// The built-in CA under `state_dir`.
    LocalCa(LocalCaIssuer),
}

impl Issuer {
    /// The `type` as written in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            Issuer::Acme(_) => "acme",
            Issuer::LocalCa(_) => "local-ca",
        }
    }
}

/// An ACME issuer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeIssuer {
    /// The directory URL.
    pub directory: String,
    /// Contact URLs (`mailto:`).
    pub contact: Vec<String>,
    /// Extra roots trusted for the directory's TLS and as anchors for issued chains.
    pub trust_roots: Option<PathBuf>,
    /// External account binding.
    pub eab: Option<Eab>,
    /// Where `renew --dry-run` orders (the CA's staging environment); without it a dry run
    /// stops before ordering.
    pub staging_directory: Option<String>,
    /// Requests in flight to this CA at once; `None`: no limit beyond `renewal.concurrency`.
    /// Pebble 2.x needs 1: it deadlocks when an authorization is fetched while another
    /// request of the same account holds its store lock.
    pub max_concurrent_requests: Option<usize>,
    /// New orders per minute per account; `None`: no limit.
    pub orders_per_minute: Option<u32>,
    /// certbot's account directory (`accounts/<server>/<id>/`) to use instead of a
    /// certkeeper account, read only, while `state_dir` holds no account for this issuer.
    pub certbot_account: Option<PathBuf>,
}

/// External account binding credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eab {
    /// The key identifier given by the CA.
    pub key_id: String,
    /// Where the HMAC key is read from.
    pub hmac_key: SecretSource,
}

/// The built-in CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalCaIssuer {
    /// Lifetime of the leaves it issues.
    pub validity: Duration,
}

/// A DNS provider.
#[derive(Clone, Debug)]
pub enum DnsProvider {
    /// A provider with a crate of its own under `providers/` (Cloudflare, Aliyun): its
    /// section as that crate reads it.
    Api {
        /// The `type` as written.
        kind: &'static str,
        /// The section, as the provider's crate defines it.
        config: Arc<dyn ProviderConfig>,
        /// Where each of its secrets comes from, by name (`api_token`).
        secrets: Vec<(&'static str, SecretSource)>,
        /// The API endpoint, checked.
        endpoint: String,
    },
    /// An external command run as `CMD present|cleanup FQDN VALUE`.
    Exec {
        /// The command and its leading arguments.
        command: Vec<String>,
        /// How long one call may take.
        timeout: Duration,
    },
}

impl DnsProvider {
    /// The `type` as written in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            DnsProvider::Api { kind, .. } => kind,
            DnsProvider::Exec { .. } => "exec",
        }
    }
}

/// The `dns` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsSettings {
    /// Where to check that TXT records are visible; empty = the zone's authoritative servers.
    pub resolvers: Vec<SocketAddr>,
    /// Give up waiting for a record after this long.
    pub propagation_timeout: Duration,
    /// Look again after this long.
    pub poll_interval: Duration,
}

/// The `renewal` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Renewal {
    /// When a certificate becomes due.
    pub before_expiry: BeforeExpiry,
    /// Daemon schedule, cron with a seconds field.
    pub schedule: Cron,
    /// Random delay added to each scheduled pass.
    pub jitter: Duration,
    /// How many certificates renew at once.
    pub concurrency: usize,
    /// First retry delay after a failure.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
}

/// An event that alerts can subscribe to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    /// A certificate was renewed and deployed.
    Renewed,
    /// A renewal failed before anything changed on disk.
    Failed,
    /// A deploy failed and the previous pair was put back.
    RolledBack,
    /// A deploy failed and the previous pair could not be put back.
    RollbackFailed,
    /// notAfter is within 7 days and the last attempt failed.
    Expiring,
}

impl EventKind {
    /// Every event, in the order of DESIGN.md.
    pub const ALL: [EventKind; 5] = [
        EventKind::Renewed,
        EventKind::Failed,
        EventKind::RolledBack,
        EventKind::RollbackFailed,
        EventKind::Expiring,
    ];

    /// The event's name as written in config and alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Renewed => "renewed",
            EventKind::Failed => "failed",
            EventKind::RolledBack => "rolled_back",
            EventKind::RollbackFailed => "rollback_failed",
            EventKind::Expiring => "expiring",
        }
    }
}

/// An alert channel: where events go, and which.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    /// The channel's name, as `alert test` takes it: `name` when set, else its type, with
    /// `-2`, `-3`... for further channels of one type.
    pub name: String,
    /// The vendor and its credentials.
    pub channel: Channel,
    /// Events sent (default: [`DEFAULT_ALERT_EVENTS`]).
    pub on: Vec<EventKind>,
}

/// The vendor of an alert channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Channel {
    /// A Slack incoming webhook (its URL is a secret).
    Slack {
        /// Webhook URL source.
        webhook_url: SecretSource,
    },
    /// A JSON webhook, optionally signed with HMAC-SHA256.
    Webhook {
        /// The URL, inline or from a secret source.
        url: WebhookUrl,
        /// Signing secret source.
        secret: Option<SecretSource>,
    },
    /// A WeCom (企业微信) group robot; the key in its URL is the credential.
    WeCom {
        /// Webhook URL source.
        webhook_url: SecretSource,
    },
    /// A DingTalk (钉钉) custom robot, signed when a secret is given.
    DingTalk {
        /// Webhook URL source.
        webhook_url: SecretSource,
        /// Signing secret (`SEC...`).
        secret: Option<SecretSource>,
    },
    /// A Feishu / Lark (飞书) custom bot, signed when a secret is given.
    Feishu {
        /// Webhook URL source.
        webhook_url: SecretSource,
        /// Signing secret.
        secret: Option<SecretSource>,
    },
}

impl Channel {
    /// The `type` as written in config.
    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Slack { .. } => "slack",
            Channel::Webhook { .. } => "webhook",
            Channel::WeCom { .. } => "wecom",
            Channel::DingTalk { .. } => "dingtalk",
            Channel::Feishu { .. } => "feishu",
        }
    }

    /// The secret sources of this channel, with the key each comes from.
    pub fn secrets(&self) -> Vec<(&'static str, &SecretSource)> {
        let mut out = Vec::new();
        match self {
            Channel::Slack { webhook_url } | Channel::WeCom { webhook_url } => {
                out.push(("webhook_url", webhook_url))
            }
            Channel::Webhook { url, secret } => {
                if let WebhookUrl::Secret(src) = url {
                    out.push(("url", src));
                }
                out.extend(secret.iter().map(|s| ("secret", s)));
            }
            Channel::DingTalk {
                webhook_url,
                secret,
            }
            | Channel::Feishu {
                webhook_url,
                secret,
            } => {
                out.push(("webhook_url", webhook_url));
                out.extend(secret.iter().map(|s| ("secret", s)));
            }
        }
        out
    }
}

/// The events a channel gets when its `on` is not set.
pub const DEFAULT_ALERT_EVENTS: [EventKind; 4] = [
    EventKind::Failed,
    EventKind::RolledBack,
    EventKind::RollbackFailed,
    EventKind::Expiring,
];

/// Default `alert_repeat`: the same failure of a certificate alerts again only after this.
pub const DEFAULT_ALERT_REPEAT: Duration = Duration::from_secs(24 * 3600);

/// A webhook URL: written in the config, or kept secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookUrl {
    /// Written in the config.
    Inline(String),
    /// Read from an env var or file.
    Secret(SecretSource),
}

/// Private key algorithm and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA on P-256 (the default).
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// RSA 2048.
    Rsa2048,
    /// RSA 3072.
    Rsa3072,
    /// RSA 4096.
    Rsa4096,
}

impl KeyType {
    /// Every key type with its config name.
    pub const NAMES: [(&'static str, KeyType); 5] = [
        ("ecdsa-p256", KeyType::EcdsaP256),
        ("ecdsa-p384", KeyType::EcdsaP384),
        ("rsa-2048", KeyType::Rsa2048),
        ("rsa-3072", KeyType::Rsa3072),
        ("rsa-4096", KeyType::Rsa4096),
    ];

    /// The config name.
    pub fn as_str(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(n, _)| *n)
            .unwrap_or("ecdsa-p256")
    }
}

/// A managed certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    /// Unique name (`[a-z0-9][a-z0-9._-]*`).
    pub name: String,
    /// Domains the leaf must cover, lower-case, as configured.
    pub domains: Vec<String>,
    /// Issuers tried in order.
    pub issuers: Vec<String>,
    /// ACME profile, where offered.
    pub profile: Option<String>,
    /// DNS provider for ACME DNS-01.
    pub dns_provider: Option<String>,
    /// Key type of new keys.
    pub key: KeyType,
    /// Live fullchain path.
    pub fullchain: PathBuf,
    /// Live private key path.
    pub privkey: PathBuf,
    /// Live path of the leaf alone (`cert`), if wanted.
    pub cert: Option<PathBuf>,
    /// Live path of the intermediates alone (`chain`), if wanted.
    pub chain: Option<PathBuf>,
    /// Live path of the fullchain followed by the key (`combined`), if wanted.
    pub combined: Option<PathBuf>,
    /// Private key mode; `None` keeps the live key's mode (adopted files keep theirs), and a
    /// first deploy gets [`DEFAULT_KEY_MODE`].
    pub mode: Option<u32>,
    /// Private key owner (name or numeric id).
    pub owner: Option<String>,
    /// Private key group (name or numeric id).
    pub group: Option<String>,
    /// Keep the private key across renewals.
    pub reuse_key: bool,
    /// Snapshots kept.
    pub keep_snapshots: usize,
    /// How to reload the services that use it.
    pub reload: Option<Reload>,
    /// How to check that the new leaf is served.
    pub verify: Option<VerifyTarget>,
}

impl Certificate {
    /// Where the store writes this certificate's files: the pair and the derived files the
    /// config names (mode, owner and snapshots are added by the deploy, which resolves
    /// accounts).
    pub fn live_spec(&self) -> crate::store::PairSpec {
        let mut spec = crate::store::PairSpec::new(&self.name, &self.fullchain, &self.privkey);
        spec.cert = self.cert.clone();
        spec.chain = self.chain.clone();
        spec.combined = self.combined.clone();
        spec
    }

    /// Every live file as its config key and path: `fullchain`, `privkey`, then the derived
    /// files configured.
    pub fn files(&self) -> Vec<(&'static str, &PathBuf)> {
        let mut out = vec![("fullchain", &self.fullchain), ("privkey", &self.privkey)];
        for (key, path) in [
            ("cert", &self.cert),
            ("chain", &self.chain),
            ("combined", &self.combined),
        ] {
            if let Some(p) = path {
                out.push((key, p));
            }
        }
        out
    }
}

/// A reload command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reload {
    /// Command and arguments.
    pub command: Vec<String>,
    /// How long it may take.
    pub timeout: Duration,
}

/// How a deploy is checked after the reload: the certificate served at `tls_connect`, a
/// health command, or both (at least one is set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyTarget {
    /// `host:port` to connect to; the leaf served there must be the deployed one.
    pub tls_connect: Option<String>,
    /// SNI name sent.
    pub server_name: String,
    /// How long the check may take, retries included.
    pub timeout: Duration,
    /// A health command (argv, no shell); exit 0 means healthy.
    pub command: Option<Vec<String>>,
}

impl Config {
    /// Reads and validates the config file, reporting every problem found.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = crate::fsutil::read_regular_text(path, crate::fsutil::MAX_CONFIG)
            .map_err(|e| ConfigError::read(path, &e))?;
        if let Err(message) = crate::perms::check_trusted_file(path, "the config file", false) {
            return Err(ConfigError {
                file: path.to_owned(),
                problems: vec![error::Problem {
                    line: None,
                    path: String::new(),
                    message,
                }],
            });
        }
        Self::from_yaml(&text, path)
    }

    /// Validates YAML text as if read from `path` (relative paths resolve against its
    /// directory).
    pub fn from_yaml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        validate::validate(text, path)
    }

    /// A certificate by name.
    pub fn certificate(&self, name: &str) -> Option<&Certificate> {
        self.certificates.iter().find(|c| c.name == name)
    }

    /// The files each issuer's chains are anchored to (`trust_roots`), for chain checks.
    pub fn trust_root_files(&self, issuers: &[String]) -> Vec<PathBuf> {
        issuers
            .iter()
            .filter_map(|i| match self.issuers.get(i) {
                Some(Issuer::Acme(a)) => a.trust_roots.clone(),
                _ => None,
            })
            .collect()
    }

    /// Checks what validation cannot: that referenced files exist and secrets resolve.
    /// Returns one line per problem, naming the key path; secrets' values are never shown.
    pub fn preflight(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut secret = |path: String, src: &SecretSource| {
            if let Err(e) = src.resolve() {
                problems.push(format!("{path}: {e}"));
            }
        };
        for (key, p) in &self.dns_providers {
            if let DnsProvider::Api { secrets, .. } = p {
                for (name, src) in secrets {
                    secret(format!("dns_providers.{key}.{name}"), src);
                }
            }
        }
        for (key, i) in &self.issuers {
            if let Issuer::Acme(a) = i
                && let Some(eab) = &a.eab
            {
                secret(format!("issuers.{key}.eab.hmac_key"), &eab.hmac_key);
            }
        }
        for (n, a) in self.alerts.iter().enumerate() {
            for (key, src) in a.channel.secrets() {
                secret(format!("alerts[{n}].{key}"), src);
            }
        }
        for (key, i) in &self.issuers {
            if let Issuer::Acme(AcmeIssuer {
                certbot_account: Some(dir),
                ..
            }) = i
                && let Err(e) = crate::certbot::read_account(dir)
            {
                problems.push(format!(
                    "issuers.{key}.certbot_account: {}; name certbot's account directory (accounts/<server>/<id>/, `certkeeper import certbot` prints it) or remove the key to register a new account",
                    crate::text::escape_line(&e.to_string())
                ));
            }
            if let Issuer::Acme(AcmeIssuer {
                trust_roots: Some(path),
                ..
            }) = i
                && let Err(e) = std::fs::metadata(path)
            {
                problems.push(format!(
                    "issuers.{key}.trust_roots: cannot read {}: {e}",
                    path.display()
                ));
            }
        }
        // Where certkeeper writes: nothing it must not replace (a device, FIFO, socket).
        if let Some(what) = crate::fsutil::foreign_dir(&self.state_dir, true) {
            let e = crate::store::Error::NotOurs {
                path: self.state_dir.clone(),
                what,
            };
            problems.push(format!("state_dir: {e}"));
        }
        for (n, c) in self.certificates.iter().enumerate() {
            let spec = c.live_spec();
            if let Err(e) = crate::store::check_live_targets(&spec) {
                let which = match &e {
                    crate::store::Error::NotOurs { path, .. } => c
                        .files()
                        .into_iter()
                        .find(|(_, p)| *p == path)
                        .map_or("fullchain", |(key, _)| key),
                    _ => "fullchain",
                };
                problems.push(format!("certificates[{n}].{which}: {e}"));
            }
        }
        for (key, p) in &self.dns_providers {
            if let DnsProvider::Exec { command, .. } = p
                && let Some(program) = command.first()
                && program.contains('/')
                && std::fs::metadata(program).is_err()
            {
                problems.push(format!(
                    "dns_providers.{key}.command: {program} does not exist"
                ));
            }
        }
        // Resolved again at each pass, where an unknown one fails only its certificate.
        for (n, c) in self.certificates.iter().enumerate() {
            if let Some(Err(e)) = c.owner.as_deref().map(crate::accounts::uid) {
                problems.push(format!("certificates[{n}].owner: {e}"));
            }
            if let Some(Err(e)) = c.group.as_deref().map(crate::accounts::gid) {
                problems.push(format!("certificates[{n}].group: {e}"));
            }
        }
        // Each problem echoes config values (paths, names): one line of printable text.
        problems
            .iter()
            .map(|p| crate::text::escape_line(p))
            .collect()
    }
}
