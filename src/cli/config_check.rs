//! `certkeeper config check`: validate the config (and, unless told not to, that its secrets
//! resolve and its files exist) and print what would be managed, one line per item.

use std::path::Path;

use super::load_config;
use crate::config::{Challenge, Channel, Config, DnsProvider, Issuer, WebhookUrl, format_duration};

/// Exit code of an invalid config.
pub const INVALID: u8 = 2;

/// Runs `config check`; with `online`, also the checks that talk to DNS providers and CAs.
pub fn run(config_path: &Path, environment: bool, online: bool) -> u8 {
    let Ok(config) = load_config(config_path) else {
        return INVALID;
    };
    if environment && let Err(err) = config.preflight() {
        // Each line escaped: config values (paths, names) are echoed.
        for line in err.lines() {
            eprintln!("certkeeper: {line}");
        }
        return INVALID;
    }
    for line in certbot_renews(&config) {
        tracing::warn!("{line}");
    }
    print!("{}", summary(&config));
    if !online {
        return 0;
    }
    let runtime = match super::runtime(INVALID) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let lines = runtime.block_on(super::online::check(&config));
    let mut out = String::new();
    for line in &lines {
        match &line.result {
            Ok(what) => out.push_str(&format!("online {}: ok: {what}\n", line.key)),
            Err(e) => out.push_str(&format!("online {}: FAILED: {e}\n", line.key)),
        }
    }
    if !super::print(&out) {
        return 2;
    }
    let failed: Vec<&str> = lines
        .iter()
        .filter(|l| l.result.is_err())
        .map(|l| l.key.as_str())
        .collect();
    if failed.is_empty() {
        0
    } else {
        eprintln!(
            "certkeeper: {}: online check failed for {}",
            config_path.display(),
            failed.join(", ")
        );
        INVALID
    }
}

/// One warning for each managed live path inside a certbot lineage that certbot still renews
/// (its `renewal/<name>.conf` exists): two tools would replace the same files.
pub fn certbot_renews(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for (i, c) in config.certificates.iter().enumerate() {
        for (key, path) in [("fullchain", &c.fullchain), ("privkey", &c.privkey)] {
            if let Some(conf) = crate::certbot::renewing(path) {
                out.push(crate::text::escape_line(&format!(
                    "{}: certificates[{i}].{key}: {} is in a certbot lineage that certbot still renews ({}); once certkeeper renewed it, disable certbot's renewal: systemctl disable --now certbot.timer (or remove that renewal config)",
                    config.source.display(),
                    path.display(),
                    conf.display()
                )));
                // One line a certificate: its privkey lies in the same lineage.
                break;
            }
        }
    }
    out
}

/// Adds one item of the summary as one line, whatever the config's paths and names hold.
fn item(out: &mut String, line: String) {
    out.push_str(&crate::text::escape_line(&line));
    out.push('\n');
}

/// What the config manages, one line per item.
pub fn summary(config: &Config) -> String {
    let mut out = String::new();
    item(
        &mut out,
        format!("config {}: valid", config.source.display()),
    );
    item(
        &mut out,
        format!("state_dir {}", config.state_dir.display()),
    );
    for (key, issuer) in &config.issuers {
        let detail = match issuer {
            Issuer::Acme(a) => format!(
                "acme {}{}{}",
                a.directory,
                if a.trust_roots.is_empty() {
                    String::new()
                } else {
                    let files: Vec<String> = a
                        .trust_roots
                        .iter()
                        .map(|t| t.display().to_string())
                        .collect();
                    format!(", trust_roots {}", files.join(", "))
                },
                if a.eab.is_some() { ", eab" } else { "" }
            ),
            Issuer::LocalCa(c) => format!("local-ca, validity {}", format_duration(c.validity)),
        };
        item(&mut out, format!("issuer {key}: {detail}"));
    }
    for (key, p) in &config.dns_providers {
        let detail = match p {
            DnsProvider::Api {
                config, secrets, ..
            } => {
                let from: Vec<String> = secrets
                    .iter()
                    .map(|(name, src)| format!("{} from {src}", name.replace('_', " ")))
                    .collect();
                format!("{}, {}", config.describe(), from.join(", "))
            }
            DnsProvider::Exec { command, timeout } => {
                format!(
                    "exec {}, timeout {}",
                    command.join(" "),
                    format_duration(*timeout)
                )
            }
        };
        item(&mut out, format!("dns provider {key}: {detail}"));
    }
    let r = &config.renewal;
    item(
        &mut out,
        format!(
            "renewal: before_expiry {}, schedule \"{}\", jitter {}, concurrency {}, retry {}..{}",
            r.before_expiry,
            r.schedule,
            format_duration(r.jitter),
            r.concurrency,
            format_duration(r.retry_initial),
            format_duration(r.retry_max)
        ),
    );
    for a in &config.alerts {
        let signed =
            |s: &Option<crate::config::SecretSource>| if s.is_some() { ", signed" } else { "" };
        let kind = match &a.channel {
            Channel::Webhook { url, secret } => format!(
                "webhook {}{}",
                match url {
                    WebhookUrl::Inline(u) => u.clone(),
                    WebhookUrl::Secret(s) => format!("(url from {s})"),
                },
                signed(secret)
            ),
            Channel::DingTalk { secret, .. } | Channel::Feishu { secret, .. } => {
                format!("{}{}", a.channel.kind(), signed(secret))
            }
            other => other.kind().to_owned(),
        };
        let on: Vec<&str> = a.on.iter().map(|e| e.as_str()).collect();
        item(
            &mut out,
            format!("alert {}: {kind} on {}", a.name, on.join(", ")),
        );
    }
    if !config.alerts.is_empty() {
        item(
            &mut out,
            format!("alert_repeat {}", format_duration(config.alert_repeat)),
        );
    }
    if crate::probe::any(config) {
        item(
            &mut out,
            format!(
                "probe (daemon): every {}, drift after {}",
                format_duration(config.probe.interval),
                format_duration(config.probe.drift_after)
            ),
        );
    }
    for p in &config.discover_paths {
        item(&mut out, format!("discover {}", p.display()));
    }
    if let Some(f) = &config.fleet {
        let e = &f.etcd;
        item(
            &mut out,
            format!(
                "fleet {}: host {}, etcd {}{}{}{}, seal key {}, lease_ttl {}, canary {}, max_failures {}",
                f.name,
                f.host,
                e.endpoints.join(", "),
                e.ca_file
                    .as_ref()
                    .map(|c| format!(", ca_file {}", c.display()))
                    .unwrap_or_default(),
                if e.client_identity.is_some() {
                    ", client certificate"
                } else {
                    ""
                },
                e.auth
                    .as_ref()
                    .map(|a| format!(", user {} (password from {})", a.username, a.password))
                    .unwrap_or_default(),
                f.seal_key_file.display(),
                format_duration(f.lease_ttl),
                f.canary,
                f.max_failures
            ),
        );
    }
    for c in &config.certificates {
        item(
            &mut out,
            format!(
                "certificate {}{}: {} via {}{}, key {}, {} + {}",
                c.name,
                if c.fleet { " (fleet)" } else { "" },
                c.domains.join(", "),
                c.issuers.join(" then "),
                match (c.challenge, &c.dns_provider) {
                    (Challenge::DnsPersist01, Some(p)) => {
                        format!(" (dns-persist-01, publish via dns {p})")
                    }
                    (Challenge::DnsPersist01, None) => " (dns-persist-01)".to_owned(),
                    (Challenge::Dns01, Some(p)) => format!(" (dns {p})"),
                    (Challenge::Dns01, None) => String::new(),
                },
                c.key.as_str(),
                c.fullchain.display(),
                c.privkey.display()
            ),
        );
        // Programs only: arguments written in a config may carry tokens.
        if let Some(r) = &c.reload {
            let shared = config
                .certificates
                .iter()
                .filter(|o| o.reload.as_ref().is_some_and(|or| or.command == r.command))
                .count();
            item(
                &mut out,
                format!(
                    "  reload {} (timeout {}){}",
                    r.command[0],
                    format_duration(r.timeout),
                    if shared > 1 {
                        format!(", once per pass for the {shared} certificates that share it")
                    } else {
                        String::new()
                    }
                ),
            );
        }
        if let Some(v) = &c.verify {
            let mut what = Vec::new();
            if let Some(connect) = &v.tls_connect {
                what.push(format!("{} served at {connect}", v.server_name));
            }
            if let Some(command) = &v.command {
                what.push(format!("health check {}", command[0]));
            }
            item(
                &mut out,
                format!(
                    "  verify {} (within {})",
                    what.join(" and "),
                    format_duration(v.timeout)
                ),
            );
        }
    }
    out
}
