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
mod fleet;
mod locate;
mod program;
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
pub use fleet::{
    ClientIdentity, DEFAULT_CANARY, DEFAULT_LEASE_TTL, DEFAULT_MAX_FAILURES, Etcd, EtcdAuth, Fleet,
    MAX_FLEET_ID, MAX_LEASE_TTL, MIN_LEASE_TTL, SEAL_KEY_LEN, SealKeyFileError, hostname,
    read_seal_key_file, valid_fleet_id,
};
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
/// Default `probe_interval`: how often the daemon probes what each `verify.tls_connect`
/// serves.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Default `drift_after`: how long the served leaf may differ from the live one before
/// `drift` alerts.
pub const DEFAULT_DRIFT_AFTER: Duration = Duration::from_secs(15 * 60);
/// The shortest `probe_interval` and `drift_after`.
pub const MIN_PROBE: Duration = Duration::from_secs(1);
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
    /// The `fleet` section: certificates marked `fleet: true` are issued once for the fleet.
    pub fleet: Option<Fleet>,
    /// The `probe` section: the daemon's standing probe of what is served.
    pub probe: Probe,
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
    /// Extra roots trusted for the directory's TLS and as anchors for issued chains: PEM
    /// bundles (`trust_roots:` takes one file or a list).
    pub trust_roots: Vec<PathBuf>,
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
    /// Where the roots that clients and servers must trust are written (`trust_bundle`).
    pub trust_bundle: Option<PathBuf>,
    /// What re-reads the trust bundle when it changes (`trust_reload`).
    pub trust_reload: Option<Reload>,
}

/// What a local CA's leaf may be used for (`usage`): TLS server, TLS client, or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// `server`: the serverAuth extended key usage.
    pub server: bool,
    /// `client`: the clientAuth extended key usage (mutual TLS).
    pub client: bool,
}

impl Default for Usage {
    fn default() -> Usage {
        Usage {
            server: true,
            client: false,
        }
    }
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

/// The `probe` section: how often the daemon connects to every certificate's
/// `verify.tls_connect` to measure what is served, and how long the served leaf may differ
/// from the live one before `drift` alerts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Between two probes (default [`DEFAULT_PROBE_INTERVAL`]).
    pub interval: Duration,
    /// How long the served leaf may not be the live one (default [`DEFAULT_DRIFT_AFTER`]).
    pub drift_after: Duration,
}

impl Default for Probe {
    fn default() -> Probe {
        Probe {
            interval: DEFAULT_PROBE_INTERVAL,
            drift_after: DEFAULT_DRIFT_AFTER,
        }
    }
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
    /// A pass with shared certificates could not reach the fleet's etcd, or it had no
    /// quorum; its recovery (`fleet_recovered`) is an event of this kind too.
    FleetDegraded,
    /// This host's judgement marked a fleet generation bad (sent once for the fleet, by that
    /// host): it names the hosts that failed it and why.
    FleetGenerationBad,
    /// The daemon's probe found that the served leaf has not been the live one for longer
    /// than `drift_after`; its end (`drift_resolved`) is an event of this kind too.
    Drift,
}

impl EventKind {
    /// Every event, in the order of DESIGN.md.
    pub const ALL: [EventKind; 8] = [
        EventKind::Renewed,
        EventKind::Failed,
        EventKind::RolledBack,
        EventKind::RollbackFailed,
        EventKind::Expiring,
        EventKind::FleetDegraded,
        EventKind::FleetGenerationBad,
        EventKind::Drift,
    ];

    /// The event's name as written in config and alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Renewed => "renewed",
            EventKind::Failed => "failed",
            EventKind::RolledBack => "rolled_back",
            EventKind::RollbackFailed => "rollback_failed",
            EventKind::Expiring => "expiring",
            EventKind::FleetDegraded => "fleet_degraded",
            EventKind::FleetGenerationBad => "fleet_generation_bad",
            EventKind::Drift => "drift",
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
pub const DEFAULT_ALERT_EVENTS: [EventKind; 7] = [
    EventKind::Failed,
    EventKind::RolledBack,
    EventKind::RollbackFailed,
    EventKind::Expiring,
    EventKind::FleetDegraded,
    EventKind::FleetGenerationBad,
    EventKind::Drift,
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

/// How an ACME CA is shown control of a certificate's names (`challenge`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Challenge {
    /// `dns-01` (the default): a TXT record per order, published through `dns_provider`.
    #[default]
    Dns01,
    /// `dns-persist-01`: one standing TXT record per name authorizes the account; orders
    /// need no DNS credentials.
    DnsPersist01,
}

impl Challenge {
    /// Every challenge with its config name.
    pub const NAMES: [(&'static str, Challenge); 2] = [
        ("dns-01", Challenge::Dns01),
        ("dns-persist-01", Challenge::DnsPersist01),
    ];

    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            Challenge::Dns01 => "dns-01",
            Challenge::DnsPersist01 => "dns-persist-01",
        }
    }
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
    /// How the CA is shown control of the names (`challenge`).
    pub challenge: Challenge,
    /// DNS provider for ACME DNS-01 (optional with dns-persist-01, where only
    /// `certkeeper persist publish` uses it).
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
    /// Shared by the fleet (`fleet: true`): issued once for it, deployed by every host.
    pub fleet: bool,
    /// What the leaf may be used for (local CA issuers only; ACME CAs decide for themselves).
    pub usage: Usage,
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

    /// The line of the config file where `path` is written (or its nearest written
    /// ancestor), read again from [`Config::source`]; `None` when it cannot be read.
    pub fn line_of(&self, path: &KeyPath) -> Option<usize> {
        let text =
            crate::fsutil::read_regular_text(&self.source, crate::fsutil::MAX_CONFIG).ok()?;
        locate::line_of(&text, path)
    }

    /// The files each issuer's chains are anchored to (`trust_roots`), for chain checks.
    pub fn trust_root_files(&self, issuers: &[String]) -> Vec<PathBuf> {
        issuers
            .iter()
            .flat_map(|i| match self.issuers.get(i) {
                Some(Issuer::Acme(a)) => a.trust_roots.clone(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// Checks what validation cannot, without side effects: that secrets resolve, that
    /// referenced files exist, that every configured program (reload and health commands,
    /// exec DNS hooks) is an executable file found as the runtime finds it. Every problem
    /// names its key and, where the config file can be read again, its line; secrets' values
    /// are never shown.
    pub fn preflight(&self) -> Result<(), ConfigError> {
        let mut found: Vec<(KeyPath, String, String)> = Vec::new();
        // `at` is the key as written (to find its line), `shown` the name in the message.
        let mut push = |at: KeyPath, shown: String, message: String| {
            found.push((at, shown, message));
        };
        let secret_key = |base: &KeyPath, name: &str, src: &SecretSource| match src {
            SecretSource::Env(_) => base.with_key(&format!("{name}_env")),
            SecretSource::File(_) => base.with_key(&format!("{name}_file")),
        };
        for (key, p) in &self.dns_providers {
            let base = KeyPath::key("dns_providers").with_key(key);
            match p {
                DnsProvider::Api { secrets, .. } => {
                    for (name, src) in secrets {
                        if let Err(e) = src.resolve() {
                            push(
                                secret_key(&base, name, src),
                                format!("dns_providers.{key}.{name}"),
                                e,
                            );
                        }
                    }
                }
                DnsProvider::Exec { command, .. } => {
                    if let Some(Err(e)) = command.first().map(|p| program::check(p, true)) {
                        let at = base.with_key("command");
                        push(at.with_index(0), format!("dns_providers.{key}.command"), e);
                    }
                }
            }
        }
        for (key, i) in &self.issuers {
            let Issuer::Acme(a) = i else { continue };
            let base = KeyPath::key("issuers").with_key(key);
            if let Some(eab) = &a.eab
                && let Err(e) = eab.hmac_key.resolve()
            {
                let at = secret_key(&base.with_key("eab"), "hmac_key", &eab.hmac_key);
                push(at, format!("issuers.{key}.eab.hmac_key"), e);
            }
            if let Some(dir) = &a.certbot_account
                && let Err(e) = crate::certbot::read_account(dir)
            {
                push(
                    base.with_key("certbot_account"),
                    format!("issuers.{key}.certbot_account"),
                    format!(
                        "{}; name certbot's account directory (accounts/<server>/<id>/, `certkeeper import certbot` prints it) or remove the key to register a new account",
                        crate::text::escape_line(&e.to_string())
                    ),
                );
            }
            for (n, path) in a.trust_roots.iter().enumerate() {
                if let Err(e) = crate::fsutil::read_regular(path, crate::fsutil::MAX_FILE) {
                    let at = base.with_key("trust_roots");
                    let at = if a.trust_roots.len() > 1 {
                        at.with_index(n)
                    } else {
                        at
                    };
                    push(
                        at,
                        format!("issuers.{key}.trust_roots"),
                        format!("cannot read {}: {e}", path.display()),
                    );
                }
            }
        }
        for (n, a) in self.alerts.iter().enumerate() {
            let base = KeyPath::key("alerts").with_index(n);
            for (key, src) in a.channel.secrets() {
                if let Err(e) = src.resolve() {
                    push(secret_key(&base, key, src), format!("alerts[{n}].{key}"), e);
                }
            }
        }
        if let Some(fleet) = &self.fleet {
            let base = KeyPath::key("fleet");
            // The key itself is dropped (and wiped) at once: only its file is checked here.
            if let Err(e) = read_seal_key_file(&fleet.seal_key_file) {
                push(
                    base.with_key("seal_key_file"),
                    "fleet.seal_key_file".into(),
                    e.to_string(),
                );
            }
            let etcd = base.with_key("etcd");
            let mut files = Vec::new();
            files.extend(fleet.etcd.ca_file.iter().map(|f| ("ca_file", f)));
            if let Some(id) = &fleet.etcd.client_identity {
                files.push(("cert_file", &id.cert_file));
                files.push(("key_file", &id.key_file));
            }
            for (key, file) in files {
                if key == "key_file"
                    && let Err(e) = crate::perms::check_trusted_file(file, "etcd key file", true)
                {
                    push(etcd.with_key(key), format!("fleet.etcd.{key}"), e);
                } else if let Err(e) = crate::fsutil::read_regular(file, crate::fsutil::MAX_FILE) {
                    push(
                        etcd.with_key(key),
                        format!("fleet.etcd.{key}"),
                        format!("cannot read {}: {e}", file.display()),
                    );
                }
            }
            if let Some(auth) = &fleet.etcd.auth
                && let Err(e) = auth.password.resolve()
            {
                push(
                    secret_key(&etcd, "password", &auth.password),
                    "fleet.etcd.password".into(),
                    e,
                );
            }
        }
        // Where certkeeper writes: nothing it must not replace (a device, FIFO, socket).
        if let Some(what) = crate::fsutil::foreign_dir(&self.state_dir, true) {
            let e = crate::store::Error::NotOurs {
                path: self.state_dir.clone(),
                what,
            };
            push(KeyPath::key("state_dir"), "state_dir".into(), e.to_string());
        }
        for (n, c) in self.certificates.iter().enumerate() {
            let base = KeyPath::key("certificates").with_index(n);
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
                push(
                    base.with_key(which),
                    format!("certificates[{n}].{which}"),
                    e.to_string(),
                );
            }
            let programs = [
                ("reload", c.reload.as_ref().map(|r| &r.command)),
                ("verify", c.verify.as_ref().and_then(|v| v.command.as_ref())),
            ];
            for (section, command) in programs {
                if let Some(Err(e)) = command
                    .and_then(|c| c.first())
                    .map(|p| program::check(p, false))
                {
                    let at = base.with_key(section).with_key("command");
                    push(
                        at.with_index(0),
                        format!("certificates[{n}].{section}.command"),
                        e,
                    );
                }
            }
            // Resolved again at each pass, where an unknown one fails only its certificate.
            if let Some(Err(e)) = c.owner.as_deref().map(crate::accounts::uid) {
                push(
                    base.with_key("owner"),
                    format!("certificates[{n}].owner"),
                    e.to_string(),
                );
            }
            if let Some(Err(e)) = c.group.as_deref().map(crate::accounts::gid) {
                push(
                    base.with_key("group"),
                    format!("certificates[{n}].group"),
                    e.to_string(),
                );
            }
        }
        if found.is_empty() {
            return Ok(());
        }
        // The text was read and parsed a moment ago; without it, the problems go without lines.
        let text = crate::fsutil::read_regular_text(&self.source, crate::fsutil::MAX_CONFIG)
            .unwrap_or_default();
        let mut problems: Vec<Problem> = found
            .into_iter()
            .map(|(at, shown, message)| Problem {
                line: locate::line_of(&text, &at),
                path: shown,
                message,
            })
            .collect();
        problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        Err(ConfigError {
            file: self.source.clone(),
            problems,
        })
    }
}
