//! Turns the YAML text into a [`Config`]: each section deserialized on its own, then every
//! semantic rule checked, collecting all problems with their key paths and lines.
//!
//! Beyond the text given, only the live paths' directories are looked at (to tell two
//! spellings of one file apart, and a live path inside state_dir); no network or secret is
//! touched here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use yaml_serde::Value;

use certkeeper_dns::config::ProviderConfig;

use super::duration::{BeforeExpiry, format_duration, parse_duration};
use super::error::{ConfigError, Problem};
use super::locate::{KeyPath, Segment, line_of};
use super::raw::{self, DurationText, OneOrMany};
use super::secret::SecretSource;
use super::*;

mod fleet;

/// Validates `text`, read from `file`.
pub fn validate(text: &str, file: &Path) -> Result<Config, ConfigError> {
    // Paths in the config are relative to its directory, made absolute here so that they
    // mean the same whatever the working directory of a later step.
    let base = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let base = std::path::absolute(base).unwrap_or_else(|_| base.to_owned());
    if let Some(problem) = nesting_problem(text) {
        return Err(ConfigError {
            file: file.to_owned(),
            problems: vec![problem],
        });
    }
    let mut v = Validator {
        text,
        declared: BTreeSet::new(),
        base,
        problems: Vec::new(),
        warnings: Vec::new(),
        dirs: Resolved::default(),
    };
    let config = v.config(file);
    if v.problems.is_empty()
        && let Some(config) = config
    {
        return Ok(config);
    }
    v.problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    if v.problems.is_empty() {
        v.problems.push(Problem {
            line: None,
            path: String::new(),
            message: "invalid config".into(),
        });
    }
    Err(ConfigError {
        file: file.to_owned(),
        problems: v.problems,
    })
}

struct Validator<'a> {
    text: &'a str,
    /// Keys written under `issuers` and `dns_providers`, valid or not: a reference to an
    /// entry that failed validation is not reported a second time as unknown.
    declared: BTreeSet<String>,
    base: PathBuf,
    problems: Vec<Problem>,
    warnings: Vec<String>,
    /// The live files' directories as the file system has them, each looked at once.
    dirs: Resolved,
}

impl Validator<'_> {
    fn config(&mut self, file: &Path) -> Option<Config> {
        let root: Value = match yaml_serde::from_str(self.text) {
            Ok(v) => v,
            Err(e) => {
                let message = e.to_string();
                // The parser's message ends with "at line L column C"; the line goes in front.
                let message = match message.find(" at line ") {
                    Some(at) => message[..at].to_owned(),
                    None => message,
                };
                self.problems.push(Problem {
                    line: e.location().map(|l| l.line()),
                    path: String::new(),
                    message: format!("not valid YAML: {message}"),
                });
                return None;
            }
        };
        if root.is_null() {
            self.problem(
                &KeyPath::default(),
                "the config is empty; it needs at least `certificates` (see examples/quickstart.yaml)",
            );
            return None;
        }
        let top: raw::Top = self.de(&KeyPath::default(), root)?;

        let state_dir = match top.state_dir {
            None => PathBuf::from(DEFAULT_STATE_DIR),
            Some(v) => {
                let p = KeyPath::key("state_dir");
                self.de::<String>(&p, v)
                    .and_then(|s| self.non_empty(&p, s))
                    .map(|s| self.resolve(&s))
                    .unwrap_or_default()
            }
        };
        let issuers = self.issuers(top.issuers);
        let dns_providers = self.dns_providers(top.dns_providers);
        let dns = self.dns(top.dns);
        let renewal = self.renewal(top.renewal);
        let alerts = self.alerts(top.alerts);
        let alert_repeat = self.duration(
            &KeyPath::key("alert_repeat"),
            top.alert_repeat,
            DEFAULT_ALERT_REPEAT,
        );
        let discover_paths = self.discover(top.discover);
        let has_fleet = top.fleet.is_some();
        let fleet = top.fleet.and_then(|v| self.fleet(v));
        let probe = self.probe(top.probe_interval, top.drift_after);
        let certificates = self.certificates(top.certificates, &issuers, &dns_providers, has_fleet);
        let state_real = std::fs::canonicalize(&state_dir).ok();
        for (n, cert) in certificates.iter().enumerate() {
            for (which, file) in cert.files() {
                if self.dirs.inside(file, &state_dir, state_real.as_deref()) {
                    self.problem(
                        &KeyPath::key("certificates").with_index(n).with_key(which),
                        format!(
                            "{} is inside state_dir ({}), where certkeeper keeps its own files; put live files elsewhere",
                            file.display(),
                            state_dir.display()
                        ),
                    );
                }
            }
        }

        for (key, issuer) in &issuers {
            if let (Issuer::LocalCa(ca), Some(r)) = (issuer, &renewal)
                && let BeforeExpiry::Duration(d) = r.before_expiry
                && d >= ca.validity
            {
                self.warnings.push(format!(
                    "renewal.before_expiry ({}) is not shorter than issuers.{key}.validity ({}): \
                     its certificates are due on every pass",
                    format_duration(d),
                    format_duration(ca.validity)
                ));
            }
        }

        Some(Config {
            source: file.to_owned(),
            state_dir,
            issuers,
            dns_providers,
            dns: dns?,
            renewal: renewal?,
            alerts,
            alert_repeat: alert_repeat?,
            discover_paths,
            certificates,
            fleet,
            probe: probe?,
            // A warning echoes config values; each is one line of printable text.
            warnings: self
                .warnings
                .drain(..)
                .map(|w| crate::text::escape_line(&w))
                .collect(),
        })
    }

    fn issuers(&mut self, value: Option<Value>) -> BTreeMap<String, Issuer> {
        let mut out = BTreeMap::new();
        let section = KeyPath::key("issuers");
        let Some(named) = value.and_then(|v| self.de::<raw::Named>(&section, v)) else {
            return out;
        };
        for (key, value) in named {
            let path = section.with_key(&key);
            self.config_key(&path, &key);
            self.declared.insert(format!("issuers.{key}"));
            let issuer = match self.kind(&path, &value, &["acme", "local-ca"]).as_deref() {
                Some("acme") => self.de::<raw::Acme>(&path, value).and_then(|a| {
                    let directory = self.required(&path.with_key("directory"), a.directory)?;
                    let directory = self.url(&path.with_key("directory"), directory)?;
                    let contact = a.contact.unwrap_or_default();
                    for (n, c) in contact.iter().enumerate() {
                        if !c.starts_with("mailto:") || c.len() <= "mailto:".len() {
                            self.problem(
                                &path.with_key("contact").with_index(n),
                                format!("\"{c}\" is not a mailto: URL; write e.g. \"mailto:ops@example.com\""),
                            );
                        }
                    }
                    let eab = a.eab.and_then(|e| {
                        let ep = path.with_key("eab");
                        let key_id = self.required(&ep.with_key("key_id"), e.key_id)?;
                        let hmac_key =
                            self.secret(&ep, "hmac_key", e.hmac_key_env, e.hmac_key_file, true)??;
                        Some(Eab { key_id, hmac_key })
                    });
                    let staging_directory = match a.staging_directory {
                        Some(s) => Some(self.url(&path.with_key("staging_directory"), s)?),
                        None => None,
                    };
                    let max_concurrent_requests = match a.max_concurrent_requests {
                        None | Some(0) => None,
                        Some(n) if n > 1000 => {
                            self.problem(
                                &path.with_key("max_concurrent_requests"),
                                format!("{n} is more than 1000; write 0 for no limit"),
                            );
                            return None;
                        }
                        Some(n) => Some(n as usize),
                    };
                    let orders_per_minute = match a.orders_per_minute {
                        None => None,
                        Some(n) if n == 0 || n > 100_000 => {
                            self.problem(
                                &path.with_key("orders_per_minute"),
                                format!("{n} is not between 1 and 100000; leave the key out for no limit"),
                            );
                            return None;
                        }
                        Some(n) => Some(n as u32),
                    };
                    if a.certbot_account.is_some() && eab.is_some() {
                        self.problem(
                            &path.with_key("certbot_account"),
                            "certbot's account is registered already and needs no external account binding; remove eab".to_owned(),
                        );
                        return None;
                    }
                    let certbot_account = match a.certbot_account {
                        Some(dir) if dir.trim().is_empty() => {
                            self.problem(
                                &path.with_key("certbot_account"),
                                "is empty; name certbot's account directory (accounts/<server>/<id>/) or remove the key".to_owned(),
                            );
                            return None;
                        }
                        Some(dir) => Some(self.resolve(&dir)),
                        None => None,
                    };
                    Some(Issuer::Acme(AcmeIssuer {
                        directory,
                        contact,
                        trust_roots: match a.trust_roots {
                            None => Vec::new(),
                            Some(OneOrMany::One(t)) => vec![self.resolve(&t)],
                            Some(OneOrMany::Many(ts)) => ts.iter().map(|t| self.resolve(t)).collect(),
                        },
                        eab,
                        staging_directory,
                        max_concurrent_requests,
                        orders_per_minute,
                        certbot_account,
                    }))
                }),
                Some("local-ca") => self.de::<raw::LocalCa>(&path, value).and_then(|c| {
                    let validity = self.duration(
                        &path.with_key("validity"),
                        c.validity,
                        DEFAULT_LOCAL_CA_VALIDITY,
                    )?;
                    if validity < Duration::from_secs(3600) {
                        self.problem(
                            &path.with_key("validity"),
                            "validity must be at least 1h",
                        );
                        return None;
                    }
                    let trust_bundle = match c.trust_bundle {
                        None => None,
                        Some(t) => {
                            let t = self.non_empty(&path.with_key("trust_bundle"), t)?;
                            Some(self.resolve(&t))
                        }
                    };
                    let trust_reload = match c.trust_reload {
                        None => None,
                        Some(r) => {
                            let rp = path.with_key("trust_reload");
                            if trust_bundle.is_none() {
                                self.problem(&rp, "trust_reload needs trust_bundle (the file it re-reads)");
                                return None;
                            }
                            let command = self.command(&rp.with_key("command"), r.command)?;
                            let timeout = self.duration(&rp.with_key("timeout"), r.timeout, DEFAULT_RELOAD_TIMEOUT)?;
                            Some(Reload { command, timeout })
                        }
                    };
                    Some(Issuer::LocalCa(LocalCaIssuer {
                        validity,
                        trust_bundle,
                        trust_reload,
                    }))
                }),
                _ => None,
            };
            if let Some(issuer) = issuer {
                out.insert(key, issuer);
            }
        }
        out
    }

    fn dns_providers(&mut self, value: Option<Value>) -> BTreeMap<String, DnsProvider> {
        let mut out = BTreeMap::new();
        let section = KeyPath::key("dns_providers");
        let Some(named) = value.and_then(|v| self.de::<raw::Named>(&section, v)) else {
            return out;
        };
        for (key, value) in named {
            let path = section.with_key(&key);
            self.config_key(&path, &key);
            self.declared.insert(format!("dns_providers.{key}"));
            if self.inline_secrets(&path, &value) {
                continue;
            }
            let provider = match self.kind(&path, &value, &PROVIDER_TYPES).as_deref() {
                Some(kind) if kind != "exec" => self.api_provider(&path, kind, value),
                Some("exec") => self.de::<raw::Exec>(&path, value).and_then(|e| {
                    let command = self.command(&path.with_key("command"), e.command)?;
                    let timeout =
                        self.duration(&path.with_key("timeout"), e.timeout, DEFAULT_EXEC_TIMEOUT)?;
                    Some(DnsProvider::Exec {
                        command: command
                            .into_iter()
                            .enumerate()
                            .map(|(n, a)| if n == 0 { self.resolve_program(&a) } else { a })
                            .collect(),
                        timeout,
                    })
                }),
                _ => None,
            };
            if let Some(p) = provider {
                out.insert(key, p);
            }
        }
        out
    }

    /// A provider with a crate of its own: its section read by that crate's `Config`,
    /// then its secrets, endpoint and own problems checked here like every other section's.
    fn api_provider(&mut self, path: &KeyPath, kind: &str, value: Value) -> Option<DnsProvider> {
        // The registry: one line per provider type (see PROVIDER_TYPES).
        let config: Arc<dyn ProviderConfig> = match kind {
            "cloudflare" => {
                Arc::new(self.de::<certkeeper_dns_cloudflare::config::Config>(path, value)?)
            }
            "aliyun" => Arc::new(self.de::<certkeeper_dns_aliyun::config::Config>(path, value)?),
            _ => return None,
        };
        let kind = PROVIDER_TYPES.iter().find(|k| **k == kind)?;
        let mut secrets = Vec::new();
        let mut whole = true;
        for s in config.secrets() {
            match self.secret(path, s.name, s.env, s.file, true) {
                Some(Some(src)) => secrets.push((s.name, src)),
                _ => whole = false,
            }
        }
        for (key, problem) in config.problems() {
            self.problem(&path.with_key(key), problem);
            whole = false;
        }
        let (key, url) = config.endpoint();
        let endpoint = self.url(&path.with_key(key), url);
        Some(DnsProvider::Api {
            kind,
            config,
            secrets,
            endpoint: endpoint.filter(|_| whole)?,
        })
    }

    fn dns(&mut self, value: Option<Value>) -> Option<DnsSettings> {
        let path = KeyPath::key("dns");
        let raw: raw::Dns = match value {
            Some(v) => self.de(&path, v)?,
            None => raw::Dns::default(),
        };
        let mut resolvers = Vec::new();
        for (n, r) in raw.resolvers.unwrap_or_default().iter().enumerate() {
            match parse_resolver(r) {
                Some(addr) => resolvers.push(addr),
                None => self.problem(
                    &path.with_key("resolvers").with_index(n),
                    format!(
                        "\"{r}\" is not IP or IP:PORT; write e.g. \"127.0.0.1:8053\" or \"1.1.1.1\""
                    ),
                ),
            }
        }
        let timeout = self.duration(
            &path.with_key("propagation_timeout"),
            raw.propagation_timeout,
            DEFAULT_PROPAGATION_TIMEOUT,
        );
        let poll = self.duration(
            &path.with_key("poll_interval"),
            raw.poll_interval,
            DEFAULT_POLL_INTERVAL,
        );
        let (timeout, poll) = (timeout?, poll?);
        if poll.is_zero() {
            self.problem(
                &path.with_key("poll_interval"),
                "poll_interval must be above 0s",
            );
            return None;
        }
        if timeout < poll {
            self.problem(
                &path.with_key("propagation_timeout"),
                "propagation_timeout is shorter than poll_interval; make it longer",
            );
            return None;
        }
        Some(DnsSettings {
            resolvers,
            propagation_timeout: timeout,
            poll_interval: poll,
        })
    }

    fn renewal(&mut self, value: Option<Value>) -> Option<Renewal> {
        let path = KeyPath::key("renewal");
        let raw: raw::Renewal = match value {
            Some(v) => self.de(&path, v)?,
            None => raw::Renewal::default(),
        };
        let before_expiry = match raw.before_expiry {
            None => Some(BeforeExpiry::Duration(DEFAULT_BEFORE_EXPIRY)),
            Some(DurationText(t)) => match BeforeExpiry::parse(&t) {
                Ok(b) => Some(b),
                Err(e) => {
                    self.problem(&path.with_key("before_expiry"), e);
                    None
                }
            },
        };
        let schedule = raw.schedule.unwrap_or_else(|| DEFAULT_SCHEDULE.into());
        let schedule = match Cron::parse(&schedule) {
            Ok(cron) => Some(cron),
            Err(e) => {
                self.problem(&path.with_key("schedule"), e);
                None
            }
        };
        let jitter = self.duration(&path.with_key("jitter"), raw.jitter, DEFAULT_JITTER);
        let concurrency = match raw.concurrency {
            None => Some(DEFAULT_CONCURRENCY),
            Some(n) if (1..=MAX_CONCURRENCY as u64).contains(&n) => Some(n as usize),
            Some(n) => {
                self.problem(
                    &path.with_key("concurrency"),
                    format!("concurrency {n} is out of range; use 1 to {MAX_CONCURRENCY}"),
                );
                None
            }
        };
        let retry = raw.retry.unwrap_or_default();
        let initial = self.duration(
            &path.with_key("retry").with_key("initial"),
            retry.initial,
            DEFAULT_RETRY_INITIAL,
        );
        let max = self.duration(
            &path.with_key("retry").with_key("max"),
            retry.max,
            DEFAULT_RETRY_MAX,
        );
        let (initial, max) = (initial?, max?);
        if initial.is_zero() || initial > max {
            self.problem(
                &path.with_key("retry"),
                "retry.initial must be above 0s and not longer than retry.max",
            );
            return None;
        }
        Some(Renewal {
            before_expiry: before_expiry?,
            schedule: schedule?,
            jitter: jitter?,
            concurrency: concurrency?,
            retry_initial: initial,
            retry_max: max,
        })
    }

    /// `probe_interval` and `drift_after`: both at least [`MIN_PROBE`].
    fn probe(
        &mut self,
        interval: Option<DurationText>,
        drift_after: Option<DurationText>,
    ) -> Option<Probe> {
        let mut bounded = |key: &str, value, default| {
            let at = KeyPath::key(key);
            let d = self.duration(&at, value, default)?;
            if d < MIN_PROBE {
                self.problem(
                    &at,
                    format!(
                        "{key} {} is too short; give at least {}",
                        format_duration(d),
                        format_duration(MIN_PROBE)
                    ),
                );
                return None;
            }
            Some(d)
        };
        let interval = bounded("probe_interval", interval, DEFAULT_PROBE_INTERVAL);
        let drift_after = bounded("drift_after", drift_after, DEFAULT_DRIFT_AFTER);
        Some(Probe {
            interval: interval?,
            drift_after: drift_after?,
        })
    }

    fn alerts(&mut self, value: Option<Value>) -> Vec<Alert> {
        let section = KeyPath::key("alerts");
        let Some(list) = value.and_then(|v| self.de::<Vec<Value>>(&section, v)) else {
            return Vec::new();
        };
        let mut out: Vec<Alert> = Vec::new();
        for (n, value) in list.into_iter().enumerate() {
            let path = section.with_index(n);
            if self.inline_secrets(&path, &value) {
                continue;
            }
            let kinds = ["slack", "webhook", "wecom", "dingtalk", "feishu"];
            let parsed = match self.kind(&path, &value, &kinds).as_deref() {
                Some("slack") => self.de::<raw::Slack>(&path, value).and_then(|s| {
                    let on = self.events(&path.with_key("on"), s.on);
                    let url = self.secret(
                        &path,
                        "webhook_url",
                        s.webhook_url_env,
                        s.webhook_url_file,
                        true,
                    );
                    Some((s.name, Channel::Slack { webhook_url: url?? }, on?))
                }),
                Some("webhook") => self.de::<raw::Webhook>(&path, value).and_then(|w| {
                    let on = self.events(&path.with_key("on"), w.on);
                    let secret = self.secret(&path, "secret", w.secret_env, w.secret_file, false);
                    let url = match (w.url, w.url_env.is_some() || w.url_file.is_some()) {
                        (Some(_), true) => {
                            self.problem(
                                &path.with_key("url"),
                                "give one of url, url_env or url_file, not several",
                            );
                            None
                        }
                        (Some(u), false) => {
                            self.url(&path.with_key("url"), u).map(WebhookUrl::Inline)
                        }
                        (None, _) => self
                            .secret(&path, "url", w.url_env, w.url_file, true)
                            .flatten()
                            .map(WebhookUrl::Secret),
                    };
                    Some((
                        w.name,
                        Channel::Webhook {
                            url: url?,
                            secret: secret?,
                        },
                        on?,
                    ))
                }),
                Some(kind @ ("wecom" | "dingtalk" | "feishu")) => {
                    let kind = kind.to_owned();
                    self.de::<raw::Robot>(&path, value).and_then(|r| {
                        let on = self.events(&path.with_key("on"), r.on);
                        let url = self.secret(
                            &path,
                            "webhook_url",
                            r.webhook_url_env,
                            r.webhook_url_file,
                            true,
                        );
                        let has_secret = r.secret_env.is_some() || r.secret_file.is_some();
                        let secret =
                            self.secret(&path, "secret", r.secret_env, r.secret_file, false);
                        let webhook_url = url??;
                        let channel = match kind.as_str() {
                            "wecom" => {
                                if has_secret {
                                    self.problem(
                                        &path.with_key("secret_env"),
                                        "a WeCom group robot has no signing secret: the key in its webhook URL is the credential; remove secret_env/secret_file",
                                    );
                                    return None;
                                }
                                Channel::WeCom { webhook_url }
                            }
                            "dingtalk" => Channel::DingTalk {
                                webhook_url,
                                secret: secret?,
                            },
                            _ => Channel::Feishu {
                                webhook_url,
                                secret: secret?,
                            },
                        };
                        Some((r.name, channel, on?))
                    })
                }
                _ => None,
            };
            let Some((name, channel, on)) = parsed else {
                continue;
            };
            let name = match name {
                Some(name) => {
                    if !valid_name(&name) {
                        self.problem(
                            &path.with_key("name"),
                            format!("\"{name}\" is not a valid name; use lower-case letters, digits, '.', '_' and '-'"),
                        );
                        continue;
                    }
                    name
                }
                None => {
                    let kind = channel.kind();
                    let mut name = kind.to_owned();
                    let mut n = 1;
                    while out.iter().any(|a| a.name == name) {
                        n += 1;
                        name = format!("{kind}-{n}");
                    }
                    name
                }
            };
            if let Some(other) = out.iter().position(|a| a.name == name) {
                self.problem(
                    &path.with_key("name"),
                    format!("the name \"{name}\" is already used by alerts[{other}]; give each channel its own name"),
                );
                continue;
            }
            out.push(Alert { name, channel, on });
        }
        out
    }

    fn discover(&mut self, value: Option<Value>) -> Vec<PathBuf> {
        let path = KeyPath::key("discover");
        let raw: raw::Discover = match value {
            Some(v) => self.de(&path, v).unwrap_or_default(),
            None => raw::Discover::default(),
        };
        let mut out = Vec::new();
        for (n, p) in raw.paths.unwrap_or_default().into_iter().enumerate() {
            if let Some(p) = self.non_empty(&path.with_key("paths").with_index(n), p) {
                out.push(self.resolve(&p));
            }
        }
        out
    }

    fn certificates(
        &mut self,
        value: Option<Value>,
        issuers: &BTreeMap<String, Issuer>,
        providers: &BTreeMap<String, DnsProvider>,
        has_fleet: bool,
    ) -> Vec<Certificate> {
        let section = KeyPath::key("certificates");
        let Some(value) = value else {
            self.problem(
                &KeyPath::default(),
                "`certificates` is missing; list the certificates to manage (may be [] to only monitor discover.paths)",
            );
            return Vec::new();
        };
        let Some(list) = self.de::<Vec<Value>>(&section, value) else {
            return Vec::new();
        };
        let mut out: Vec<Certificate> = Vec::new();
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        let mut files: BTreeMap<FileKey, (usize, &'static str)> = BTreeMap::new();
        for (n, value) in list.into_iter().enumerate() {
            let path = section.with_index(n);
            let Some(c) = self.de::<raw::Certificate>(&path, value) else {
                continue;
            };
            if c.fleet == Some(true) && !has_fleet {
                self.problem(
                    &path.with_key("fleet"),
                    "fleet: true needs a top-level `fleet:` section (name, etcd.endpoints, seal_key_file); add it or remove this key",
                );
            }
            if let Some(cert) = self.certificate(&path, c, issuers, providers) {
                if let Some(first) = names.insert(cert.name.clone(), n) {
                    self.problem(
                        &path.with_key("name"),
                        format!(
                            "name \"{}\" is already used by certificates[{first}]; names must be unique",
                            cert.name
                        ),
                    );
                }
                for (which, file) in cert.files() {
                    match files.insert(self.dirs.key(file), (n, which)) {
                        // Reported once, by the check of the pair itself.
                        Some((first, "fullchain")) if first == n && which == "privkey" => {}
                        Some((first, its)) if first == n => self.problem(
                            &path.with_key(which),
                            format!(
                                "{} is also this certificate's {its}; give each file its own path",
                                file.display()
                            ),
                        ),
                        Some((first, its)) => self.problem(
                            &path.with_key(which),
                            format!(
                                "{} is also certificates[{first}].{its}; each certificate needs files of its own",
                                file.display()
                            ),
                        ),
                        None => {}
                    }
                }
                out.push(cert);
            }
        }
        out
    }

    fn certificate(
        &mut self,
        path: &KeyPath,
        c: raw::Certificate,
        issuers: &BTreeMap<String, Issuer>,
        providers: &BTreeMap<String, DnsProvider>,
    ) -> Option<Certificate> {
        let name = self.required(&path.with_key("name"), c.name).and_then(|n| {
            if n.len() > MAX_NAME {
                self.problem(
                    &path.with_key("name"),
                    format!(
                        "the name is {} bytes long; at most {MAX_NAME} (certkeeper's own file names add to it, and a file name has at most 255 bytes)",
                        n.len()
                    ),
                );
                None
            } else if valid_name(&n) {
                Some(n)
            } else {
                self.problem(
                    &path.with_key("name"),
                    format!("\"{n}\" is not a valid name; use lower-case letters, digits, '.', '_' and '-', starting with a letter or digit"),
                );
                None
            }
        });
        let domains = self.domains(&path.with_key("domains"), c.domains);
        let issuer_names = match c.issuer {
            None => {
                self.problem(
                    &path.with_key("issuer"),
                    "issuer is missing; name one of the keys under `issuers`",
                );
                None
            }
            Some(OneOrMany::One(s)) => Some(vec![s]),
            Some(OneOrMany::Many(v)) if v.is_empty() => {
                self.problem(
                    &path.with_key("issuer"),
                    "issuer list is empty; name at least one issuer",
                );
                None
            }
            Some(OneOrMany::Many(v)) => Some(v),
        };
        let mut needs_dns = false;
        let usage = self.usage(&path.with_key("usage"), c.usage);
        if let (Some(list), Some(u)) = (&issuer_names, usage)
            && u != Usage::default()
            && let Some(acme) = list
                .iter()
                .find(|i| matches!(issuers.get(*i), Some(Issuer::Acme(_))))
        {
            self.problem(
                &path.with_key("usage"),
                format!("usage applies to local-ca issuers only; issuer \"{acme}\" is an ACME CA, which decides a leaf's usage itself: remove usage or use a local-ca issuer"),
            );
        }
        if let Some(list) = &issuer_names {
            for (n, i) in list.iter().enumerate() {
                let ip = if list.len() > 1 || matches!(i.as_str(), "") {
                    path.with_key("issuer").with_index(n)
                } else {
                    path.with_key("issuer")
                };
                match issuers.get(i) {
                    Some(Issuer::Acme(_)) => needs_dns = true,
                    Some(Issuer::LocalCa(_)) => {}
                    None if self.declared.contains(&format!("issuers.{i}")) => {}
                    None => self.problem(
                        &ip,
                        format!(
                            "unknown issuer \"{i}\"; define it under `issuers` or fix the name"
                        ),
                    ),
                }
            }
        }
        let challenge = match c.challenge.as_deref() {
            None => Some(Challenge::Dns01),
            Some(ch) => match Challenge::NAMES.iter().find(|(n, _)| *n == ch) {
                Some((_, t)) => Some(*t),
                None => {
                    self.problem(
                        &path.with_key("challenge"),
                        format!("unknown challenge \"{ch}\"; use dns-01 or dns-persist-01"),
                    );
                    None
                }
            },
        };
        // dns-persist-01 orders publish nothing: the standing record is made once, by hand
        // or with `certkeeper persist publish` (which then needs the provider).
        let needs_dns = needs_dns && challenge != Some(Challenge::DnsPersist01);
        match (&c.dns_provider, needs_dns) {
            (Some(p), _)
                if !providers.contains_key(p)
                    && !self.declared.contains(&format!("dns_providers.{p}")) =>
            {
                self.problem(
                &path.with_key("dns_provider"),
                    format!("unknown dns provider \"{p}\"; define it under `dns_providers` or fix the name"),
                )
            }
            (None, true) => self.problem(
                &path.with_key("dns_provider"),
                "dns_provider is missing; an acme issuer needs one for DNS-01 (a key under `dns_providers`)",
            ),
            _ => {}
        }
        let key = match c.key.as_deref() {
            None => Some(KeyType::EcdsaP256),
            Some(k) => match KeyType::NAMES.iter().find(|(n, _)| *n == k) {
                Some((_, t)) => Some(*t),
                None => {
                    self.problem(
                        &path.with_key("key"),
                        format!("unknown key type \"{k}\"; use ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072 or rsa-4096"),
                    );
                    None
                }
            },
        };
        let fullchain = self
            .required(&path.with_key("fullchain"), c.fullchain)
            .and_then(|s| self.non_empty(&path.with_key("fullchain"), s))
            .map(|s| self.resolve(&s));
        let privkey = self
            .required(&path.with_key("privkey"), c.privkey)
            .and_then(|s| self.non_empty(&path.with_key("privkey"), s))
            .map(|s| self.resolve(&s));
        if let (Some(f), Some(k)) = (&fullchain, &privkey)
            && self.dirs.key(f) == self.dirs.key(k)
        {
            self.problem(
                &path.with_key("privkey"),
                "privkey and fullchain are the same file; give each its own path",
            );
        }
        let cert = self.live_file(&path.with_key("cert"), c.cert);
        let chain = self.live_file(&path.with_key("chain"), c.chain);
        let combined = self.live_file(&path.with_key("combined"), c.combined);
        let mode = self.mode(&path.with_key("mode"), c.mode);
        let owner = self.account(&path.with_key("owner"), c.owner);
        let group = self.account(&path.with_key("group"), c.group);
        let keep_snapshots = match c.keep_snapshots {
            None => Some(DEFAULT_KEEP_SNAPSHOTS),
            Some(n) if (1..=1000).contains(&n) => Some(n as usize),
            Some(n) => {
                self.problem(
                    &path.with_key("keep_snapshots"),
                    format!("keep_snapshots {n} is out of range; keep 1 to 1000 (rollback needs at least one)"),
                );
                None
            }
        };
        let reload = c.reload.and_then(|r| {
            let rp = path.with_key("reload");
            let command = self.command(&rp.with_key("command"), r.command)?;
            let timeout =
                self.duration(&rp.with_key("timeout"), r.timeout, DEFAULT_RELOAD_TIMEOUT)?;
            Some(Reload { command, timeout })
        });
        let verify = match c.verify {
            None => Some(None),
            Some(v) => {
                let vp = path.with_key("verify");
                if v.tls_connect.is_none() && v.command.is_none() {
                    self.problem(
                        &vp,
                        "verify needs tls_connect (HOST:PORT where the certificate is served), command (a health check), or both",
                    );
                }
                let connect = match v.tls_connect {
                    None => Some(None),
                    Some(t) if valid_host_port(&t) => Some(Some(t)),
                    Some(t) => {
                        self.problem(
                            &vp.with_key("tls_connect"),
                            format!("\"{t}\" is not HOST:PORT; write e.g. \"127.0.0.1:443\""),
                        );
                        None
                    }
                };
                let command = match v.command {
                    None => Some(None),
                    Some(c) => self.command(&vp.with_key("command"), Some(c)).map(Some),
                };
                let timeout =
                    self.duration(&vp.with_key("timeout"), v.timeout, DEFAULT_VERIFY_TIMEOUT);
                let server_name = v.server_name.or_else(|| {
                    domains
                        .as_ref()
                        .and_then(|d| d.iter().find(|d| !d.starts_with("*.")).cloned())
                        .or_else(|| {
                            domains
                                .as_ref()
                                .and_then(|d| d.first())
                                .map(|d| d[2..].to_owned())
                        })
                });
                match (connect, timeout, server_name, command) {
                    (Some(tls_connect), Some(timeout), Some(server_name), Some(command)) => {
                        Some(Some(VerifyTarget {
                            tls_connect,
                            server_name,
                            timeout,
                            command,
                        }))
                    }
                    _ => None,
                }
            }
        };
        Some(Certificate {
            name: name?,
            domains: domains?,
            issuers: issuer_names?,
            profile: c.profile,
            challenge: challenge?,
            dns_provider: c.dns_provider,
            key: key?,
            fullchain: fullchain?,
            privkey: privkey?,
            cert: cert?,
            chain: chain?,
            combined: combined?,
            mode: mode?,
            owner: owner?,
            group: group?,
            reuse_key: c.reuse_key.unwrap_or(false),
            keep_snapshots: keep_snapshots?,
            reload,
            verify: verify?,
            fleet: c.fleet.unwrap_or(false),
            usage: usage?,
        })
    }

    /// `usage`: `server`, `client`, or both (a word or a list); default `[server]`.
    fn usage(&mut self, path: &KeyPath, value: Option<OneOrMany>) -> Option<Usage> {
        let words = match value {
            None => return Some(Usage::default()),
            Some(OneOrMany::One(w)) => vec![w],
            Some(OneOrMany::Many(ws)) => ws,
        };
        let mut usage = Usage {
            server: false,
            client: false,
        };
        for w in &words {
            match w.as_str() {
                "server" => usage.server = true,
                "client" => usage.client = true,
                other => {
                    self.problem(
                        path,
                        format!(
                            "unknown usage \"{}\"; write server, client, or [server, client]",
                            crate::text::escape_line(other)
                        ),
                    );
                    return None;
                }
            }
        }
        if !usage.server && !usage.client {
            self.problem(
                path,
                "usage is empty; write server, client, or [server, client]",
            );
            return None;
        }
        Some(usage)
    }

    /// An optional live file's path (`cert`, `chain`, `combined`): `Some(None)` when not
    /// set, `None` when set but unusable (reported).
    fn live_file(&mut self, path: &KeyPath, value: Option<String>) -> Option<Option<PathBuf>> {
        match value {
            None => Some(None),
            Some(s) => {
                let s = self.non_empty(path, s)?;
                let resolved = self.resolve(&s);
                if resolved
                    .file_name()
                    .and_then(|f| f.to_str())
                    .is_none_or(|f| f.starts_with(".certkeeper"))
                {
                    self.problem(
                        path,
                        format!(
                            "{} is not a usable file name: names starting with .certkeeper are certkeeper's own; name a file",
                            resolved.display()
                        ),
                    );
                    return None;
                }
                Some(Some(resolved))
            }
        }
    }

    fn domains(&mut self, path: &KeyPath, domains: Option<Vec<String>>) -> Option<Vec<String>> {
        let domains = self.required(path, domains)?;
        if domains.is_empty() {
            self.problem(path, "domains is empty; list at least one domain");
            return None;
        }
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        let mut ok = true;
        for (n, d) in domains.iter().enumerate() {
            match check_domain(d) {
                Ok(d) => {
                    if !seen.insert(d.clone()) {
                        self.problem(&path.with_index(n), format!("\"{d}\" is listed twice"));
                        ok = false;
                    }
                    out.push(d);
                }
                Err(e) => {
                    self.problem(&path.with_index(n), e);
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// `Some(None)` when not set: the live key's mode is kept (0600 for a first deploy).
    fn mode(&mut self, path: &KeyPath, value: Option<Value>) -> Option<Option<u32>> {
        let Some(value) = value else {
            return Some(None);
        };
        let Value::String(s) = value else {
            self.problem(
                path,
                "write the mode as a quoted octal string, e.g. \"0640\"",
            );
            return None;
        };
        match u32::from_str_radix(s.trim(), 8) {
            Ok(m) if m <= 0o777 && m & 0o007 != 0 => {
                self.problem(
                    path,
                    format!("mode {m:04o} lets every user on the host use the private key; use \"0600\", or \"0640\" with a group"),
                );
                None
            }
            Ok(m) if m <= 0o777 && m & 0o400 != 0 => Some(Some(m)),
            _ => {
                self.problem(
                    path,
                    format!(
                        "\"{s}\" is not a usable private key mode; write e.g. \"0600\" or \"0640\""
                    ),
                );
                None
            }
        }
    }

    fn account(&mut self, path: &KeyPath, value: Option<Value>) -> Option<Option<String>> {
        match value {
            None => Some(None),
            Some(Value::String(s)) if !s.trim().is_empty() => Some(Some(s)),
            Some(Value::Number(n)) if n.as_u64().is_some() => Some(Some(n.to_string())),
            Some(_) => {
                self.problem(path, "give a user or group name, or a numeric id");
                None
            }
        }
    }

    fn events(&mut self, path: &KeyPath, on: Option<Vec<String>>) -> Option<Vec<EventKind>> {
        let Some(on) = on else {
            return Some(DEFAULT_ALERT_EVENTS.to_vec());
        };
        let mut out = Vec::new();
        for (n, e) in on.iter().enumerate() {
            match EventKind::ALL.iter().find(|k| k.as_str() == e) {
                Some(k) => out.push(*k),
                None => {
                    self.problem(
                        &path.with_index(n),
                        format!("unknown event \"{e}\"; use renewed, failed, rolled_back, rollback_failed, expiring, fleet_degraded, fleet_generation_bad or drift"),
                    );
                    return None;
                }
            }
        }
        Some(out)
    }

    fn command(&mut self, path: &KeyPath, command: Option<Vec<String>>) -> Option<Vec<String>> {
        let command = self.required(path, command)?;
        if command.first().is_none_or(|c| c.trim().is_empty()) {
            self.problem(
                path,
                "command is empty; give the program and its arguments as a list",
            );
            return None;
        }
        Some(command)
    }

    /// A secret from exactly one of `<name>_env` / `<name>_file`.
    fn secret(
        &mut self,
        path: &KeyPath,
        name: &str,
        env: Option<String>,
        file: Option<String>,
        required: bool,
    ) -> Option<Option<SecretSource>> {
        match (env, file) {
            (Some(_), Some(_)) => {
                self.problem(
                    &path.with_key(&format!("{name}_env")),
                    format!("give one of {name}_env or {name}_file, not both"),
                );
                None
            }
            (Some(var), None) => {
                if var.is_empty()
                    || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    || var.starts_with(|c: char| c.is_ascii_digit())
                {
                    self.problem(
                        &path.with_key(&format!("{name}_env")),
                        format!("{name}_env takes the NAME of an environment variable (letters, digits, _), not the secret itself"),
                    );
                    return None;
                }
                Some(Some(SecretSource::Env(var)))
            }
            (None, Some(f)) => self
                .non_empty(&path.with_key(&format!("{name}_file")), f)
                .map(|f| Some(SecretSource::File(self.resolve(&f)))),
            (None, None) if required => {
                self.problem(
                    path,
                    format!("{name} is missing; set {name}_env (an environment variable's name) or {name}_file (a file holding it)"),
                );
                None
            }
            (None, None) => Some(None),
        }
    }

    /// Flags secrets written inline (`api_token: ...`). Returns whether any was found; the
    /// value itself is never repeated.
    fn inline_secrets(&mut self, path: &KeyPath, value: &Value) -> bool {
        let Value::Mapping(map) = value else {
            return false;
        };
        let mut found = false;
        for key in INLINE_SECRET_KEYS {
            if map.contains_key(*key) {
                self.problem(
                    &path.with_key(key),
                    format!("secrets are not accepted inline; use {key}_env (an environment variable's name) or {key}_file (a file holding it)"),
                );
                found = true;
            }
        }
        found
    }

    /// The `type` of a tagged entry, checked against the known ones.
    fn kind(&mut self, path: &KeyPath, value: &Value, known: &[&str]) -> Option<String> {
        let kinds = known.join(", ");
        match value {
            Value::Mapping(map) => match map.get("type") {
                Some(Value::String(t)) if known.contains(&t.as_str()) => Some(t.clone()),
                Some(Value::String(t)) => {
                    self.problem(
                        &path.with_key("type"),
                        format!("unknown type \"{t}\"; use one of: {kinds}"),
                    );
                    None
                }
                Some(_) => {
                    self.problem(
                        &path.with_key("type"),
                        format!("type must be one of: {kinds}"),
                    );
                    None
                }
                None => {
                    self.problem(path, format!("`type` is missing; use one of: {kinds}"));
                    None
                }
            },
            _ => {
                self.problem(path, format!("expected a mapping with a `type` ({kinds})"));
                None
            }
        }
    }

    fn config_key(&mut self, path: &KeyPath, key: &str) {
        if !valid_name(key) {
            self.problem(
                path,
                format!(
                    "\"{key}\" is not a valid key; use lower-case letters, digits, '.', '_' and '-'"
                ),
            );
        }
    }

    fn url(&mut self, path: &KeyPath, url: String) -> Option<String> {
        match reqwest::Url::parse(&url) {
            Ok(u) if (u.scheme() == "https" || u.scheme() == "http") && u.host().is_some() => {
                if u.scheme() == "http" && !is_loopback_host(&u) {
                    self.warnings.push(format!(
                        "{path}: {url} is plain http to a host that is not loopback; use https://"
                    ));
                }
                Some(url)
            }
            _ => {
                self.problem(
                    path,
                    format!("\"{url}\" is not an http(s) URL; write e.g. \"https://host/path\""),
                );
                None
            }
        }
    }

    fn duration(
        &mut self,
        path: &KeyPath,
        value: Option<DurationText>,
        default: Duration,
    ) -> Option<Duration> {
        match value {
            None => Some(default),
            Some(DurationText(t)) => match parse_duration(&t) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.problem(path, e);
                    None
                }
            },
        }
    }

    fn required<T>(&mut self, path: &KeyPath, value: Option<T>) -> Option<T> {
        if value.is_none() {
            let key = match path.0.last() {
                Some(Segment::Key(k)) => k.clone(),
                _ => path.to_string(),
            };
            self.problem(path, format!("{key} is missing; it is required"));
        }
        value
    }

    fn non_empty(&mut self, path: &KeyPath, s: String) -> Option<String> {
        if s.trim().is_empty() {
            self.problem(path, "is empty; give a value or remove the key");
            return None;
        }
        Some(s)
    }

    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        }
    }

    /// A program path with a `/` is relative to the config; a bare name is looked up on PATH.
    fn resolve_program(&self, p: &str) -> String {
        if p.contains('/') {
            self.resolve(p).display().to_string()
        } else {
            p.to_owned()
        }
    }

    /// Deserializes `value` into `T`, recording a problem at the precise key path on failure.
    fn de<T: DeserializeOwned>(&mut self, path: &KeyPath, value: Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(t) => Some(t),
            Err(e) => {
                let mut full = path.clone();
                for seg in e.path().iter() {
                    match seg {
                        serde_path_to_error::Segment::Seq { index } => {
                            full.0.push(Segment::Index(*index))
                        }
                        serde_path_to_error::Segment::Map { key } => {
                            full.0.push(Segment::Key(key.clone()))
                        }
                        _ => {}
                    }
                }
                let message = e.into_inner().to_string();
                let message = match message.strip_prefix("unknown field ") {
                    Some(rest) => format!("unknown key {rest}"),
                    None => message,
                };
                self.problem(&full, message);
                None
            }
        }
    }

    fn problem(&mut self, path: &KeyPath, message: impl Into<String>) {
        self.problems.push(Problem {
            line: line_of(self.text, path),
            path: path.to_string(),
            message: message.into(),
        });
    }
}

/// The longest certificate name: certkeeper's own file names add up to 55 bytes to it
/// (`.certkeeper-<name>.manifest.json`, temporary names), and a file name has at most 255.
const MAX_NAME: usize = 200;

/// What makes two configured paths the same file: the device and inode of the directory
/// that holds it, and its name there (so a symlinked directory, a bind mount or `..` cannot
/// make one file look like two); the path with `.` and `..` folded when that directory does
/// not exist yet.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum FileKey {
    Entry(u64, u64, std::ffi::OsString),
    Spelled(PathBuf),
}

/// `path` with `.` dropped and `..` taking away the component before it, without looking
/// at the file system.
fn folded(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Directories as the file system has them, each looked at once (a fullchain and its key
/// usually share one, and a thousand certificates their parents).
#[derive(Default)]
struct Resolved {
    /// Device and inode, following links.
    ids: std::collections::HashMap<PathBuf, Option<(u64, u64)>>,
    /// The path with every link resolved.
    real: std::collections::HashMap<PathBuf, Option<PathBuf>>,
    /// What `lstat` says of each directory looked at.
    lstat: std::collections::HashMap<PathBuf, Option<std::fs::Metadata>>,
}

impl Resolved {
    /// The identity of `path`: the device and inode of its directory and its name, or, where
    /// the directory does not exist, its spelling with `.` and `..` folded.
    fn key(&mut self, path: &Path) -> FileKey {
        use std::os::unix::fs::MetadataExt;
        if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
            let id = match self.ids.get(parent) {
                Some(known) => *known,
                None => {
                    // Most directories are no links: their lstat, which `real` needs too,
                    // tells both.
                    let id = match self.lstat(parent) {
                        Some(m) if m.file_type().is_symlink() => std::fs::metadata(parent).ok(),
                        other => other,
                    }
                    .map(|m| (m.dev(), m.ino()));
                    self.ids.insert(parent.to_owned(), id);
                    id
                }
            };
            if let Some((dev, ino)) = id {
                return FileKey::Entry(dev, ino, name.to_owned());
            }
        }
        FileKey::Spelled(folded(path))
    }

    /// `lstat(path)`, once per path.
    fn lstat(&mut self, path: &Path) -> Option<std::fs::Metadata> {
        if let Some(known) = self.lstat.get(path) {
            return known.clone();
        }
        let meta = std::fs::symlink_metadata(path).ok();
        self.lstat.insert(path.to_owned(), meta.clone());
        meta
    }

    /// Whether `file` lies inside `dir` (whose resolved path is `dir_real`): compared as the
    /// file system resolves both, where they exist, and as written otherwise.
    fn inside(&mut self, file: &Path, dir: &Path, dir_real: Option<&Path>) -> bool {
        let parent = file.parent().unwrap_or(file);
        match (self.real(parent), dir_real) {
            (Some(p), Some(d)) => p.starts_with(d),
            _ => folded(file).starts_with(folded(dir)),
        }
    }

    /// `path` with every link resolved, as `realpath(3)` gives it, resolving each directory
    /// on the way once: a component that is not a link adds one `lstat`.
    fn real(&mut self, path: &Path) -> Option<PathBuf> {
        if let Some(known) = self.real.get(path) {
            return known.clone();
        }
        let resolved = match (path.parent(), path.file_name()) {
            // `file_name` is `None` for a path ending in `..`: the kernel knows best then.
            (Some(parent), Some(name)) if path.is_absolute() => match self.lstat(path) {
                Some(m) if !m.file_type().is_symlink() => self.real(parent).map(|p| p.join(name)),
                Some(_) => std::fs::canonicalize(path).ok(),
                None => None,
            },
            _ => std::fs::canonicalize(path).ok(),
        };
        self.real.insert(path.to_owned(), resolved.clone());
        resolved
    }
}

/// How deep `[`/`{` may nest in a config: certkeeper's own structure is a few levels deep.
const MAX_FLOW_NESTING: usize = 32;

/// How many columns of indentation (spaces and `- ` markers) a config line may start with.
const MAX_INDENT: usize = 256;

/// Refuses, before the YAML parser sees it, input nested far beyond any certkeeper config:
/// the parser's time grows faster than linearly with nesting (100 KB of `[` took over a
/// minute). A quick scan: flow brackets outside quotes and comments, and each line's
/// indentation.
fn nesting_problem(text: &str) -> Option<Problem> {
    let problem = |line: usize, message: String| Problem {
        line: Some(line),
        path: String::new(),
        message,
    };
    let mut depth = 0usize;
    let (mut single, mut double) = (false, false);
    for (n, line) in text.lines().enumerate() {
        let indent = line
            .chars()
            .take_while(|c| *c == ' ' || *c == '-' || *c == '\t')
            .count();
        if indent > MAX_INDENT && !single && !double {
            return Some(problem(
                n + 1,
                format!(
                    "indented or nested deeper than {MAX_INDENT} columns; a certkeeper config is a few levels deep"
                ),
            ));
        }
        let mut prev = ' ';
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\'' if !double => {
                    // '' inside single quotes is an escaped quote.
                    if single && chars.peek() == Some(&'\'') {
                        chars.next();
                    } else {
                        single = !single;
                    }
                }
                '"' if !single => double = !double,
                '\\' if double => {
                    chars.next();
                }
                '#' if !single && !double && (prev == ' ' || prev == '\t') => break,
                '[' | '{' if !single && !double => {
                    depth += 1;
                    if depth > MAX_FLOW_NESTING {
                        return Some(problem(
                            n + 1,
                            format!(
                                "brackets nested deeper than {MAX_FLOW_NESTING} levels; a certkeeper config is a few levels deep"
                            ),
                        ));
                    }
                }
                ']' | '}' if !single && !double => depth = depth.saturating_sub(1),
                _ => {}
            }
            prev = c;
        }
        // A quoted scalar may span lines; '#' at a line's start opens a comment.
    }
    None
}

/// Whether `name` fits `[a-z0-9][a-z0-9._-]*`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

/// The longest domain name, written without its final dot.
const MAX_DOMAIN: usize = 253;
/// The longest label of a domain name (RFC 1035 §2.3.4).
const MAX_LABEL: usize = 63;

/// Checks a configured domain and returns it lower-cased.
fn check_domain(d: &str) -> Result<String, String> {
    let lower = d.trim().to_ascii_lowercase();
    if lower.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "\"{d}\" is an IP address; domains must be DNS names"
        ));
    }
    if lower.ends_with('.') {
        return Err(format!(
            "\"{d}\" ends with a dot; write it without the trailing dot"
        ));
    }
    let rest = lower.strip_prefix("*.").unwrap_or(&lower);
    // RFC 1035 §2.3.4: 255 octets on the wire, 253 characters written out without the
    // final dot, the wildcard label counted (a CA refuses the order otherwise).
    let ok = !rest.is_empty()
        && lower.len() <= MAX_DOMAIN
        && rest.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !ok {
        let hint = if rest.contains('*') {
            "; a wildcard may only be the whole first label, as in \"*.example.com\"".to_owned()
        } else if lower.len() > MAX_DOMAIN {
            format!(
                "; it is {} characters long, at most {MAX_DOMAIN}",
                lower.len()
            )
        } else if rest.split('.').any(|label| label.len() > MAX_LABEL) {
            format!("; a label has at most {MAX_LABEL} characters")
        } else {
            String::new()
        };
        return Err(format!("\"{d}\" is not a valid domain name{hint}"));
    }
    Ok(lower)
}

fn parse_resolver(r: &str) -> Option<SocketAddr> {
    if let Ok(addr) = r.parse::<SocketAddr>() {
        return Some(addr);
    }
    r.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53))
}

fn valid_host_port(t: &str) -> bool {
    if t.parse::<SocketAddr>().is_ok() {
        return true;
    }
    match t.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains(':')
                && port.parse::<u16>().is_ok_and(|p| p != 0)
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        }
        None => false,
    }
}

fn is_loopback_host(u: &reqwest::Url) -> bool {
    let host = u.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The DNS provider types this build has: `exec`, and one per crate under `providers/`.
const PROVIDER_TYPES: [&str; 3] = ["cloudflare", "aliyun", "exec"];

/// Keys that would hold a secret inline; their `_env` / `_file` forms are the accepted ones.
const INLINE_SECRET_KEYS: &[&str] = &[
    "api_token",
    "api_key",
    "access_key_id",
    "access_key_secret",
    "webhook_url",
    "secret",
    "hmac_key",
    "password",
    "token",
];

/// Upper bound of `renewal.concurrency`.
const MAX_CONCURRENCY: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_far_beyond_a_config_is_refused_before_parsing() {
        assert!(
            nesting_problem("issuers:\n  a: { type: local-ca }\nlist: [[1, 2], [3]]\n").is_none()
        );
        // Brackets inside quotes and comments do not count.
        let quoted = format!(
            "a: \"{}\"\nb: '{}'\n# {}\nc: x # {}\n",
            "[".repeat(100),
            "{".repeat(100),
            "[".repeat(100),
            "{".repeat(100)
        );
        assert!(nesting_problem(&quoted).is_none(), "{quoted}");
        let deep = format!("certificates: {}", "[".repeat(33));
        let p = nesting_problem(&deep).unwrap();
        assert_eq!(p.line, Some(1));
        assert!(
            p.message
                .starts_with("brackets nested deeper than 32 levels"),
            "{p:?}"
        );
        let indented = format!("certificates:\n{}x\n", "- ".repeat(200));
        assert_eq!(nesting_problem(&indented).unwrap().line, Some(2));
        // A long value is not nesting.
        assert!(nesting_problem(&format!("a: {}\n", "x".repeat(100_000))).is_none());
    }
}
