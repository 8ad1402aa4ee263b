//! Alerts: the events of a pass (`renewed`, `failed`, `rolled_back`, `rollback_failed`,
//! `expiring`, and the fleet's `fleet_degraded` and `fleet_generation_bad`) and of the
//! daemon's probe (`drift`), the channels that carry them (one [`Notifier`] per vendor,
//! each in its own file), and their delivery: filtered by each channel's `on`, retried
//! with backoff on network errors, 429 and 5xx, bounded in time, and never failing the
//! pass.
//!
//! Which failures alert again is decided in [`dedup`]: the same event of the same
//! certificate alerts once per `alert_repeat`, and a renewal after failures always alerts.
//!
//! No secret ever reaches a log line or an error: webhook URLs (Slack's and the robots'
//! carry their token) and signing secrets are held as [`Secret`](crate::config::Secret)s,
//! reqwest errors are stripped of their URL, and vendor answers are redacted of anything
//! secret before they are shown.

mod client;
mod dedup;
mod dingtalk;
mod feishu;
mod redact;
mod slack;
mod webhook;
mod wecom;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use certkeeper_dns::retry::{Retry, RetryAfter, RetryPolicy};
use serde::Serialize;
use time::OffsetDateTime;

use crate::config::{self, Channel, EventKind};
use crate::state::CauseKind;

pub use client::{Client, DeliveryError};
pub use dedup::{due, memory_key, remember};

/// One thing that happened to one certificate, as every channel renders it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    /// `renewed`, `failed`, `rolled_back`, `rollback_failed`, `expiring`, `fleet_degraded`,
    /// `fleet_recovered`, `fleet_generation_bad`, `drift` or `drift_resolved` (`test` from
    /// `alert test`).
    pub event: &'static str,
    /// The certificate's name.
    pub certificate: String,
    /// Its configured domains.
    pub domains: Vec<String>,
    /// What happened and why, on one line (no secrets, control characters escaped).
    pub message: String,
    /// The live leaf's notAfter (RFC 3339), when known.
    pub not_after: Option<String>,
    /// The snapshot involved (the replaced pair of a renewal), when there is one.
    pub snapshot: Option<String>,
    /// This host's name.
    pub host: String,
    /// When the event happened (RFC 3339).
    pub timestamp: String,
    /// What kind of failure it was (`rate_limited`, `dns`, `verify`, ...; see
    /// [`CauseKind`]); absent for `renewed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause_kind: Option<CauseKind>,
    #[serde(skip)]
    kind: EventKind,
}

impl Event {
    /// An event of `kind` for `certificate` now; `message` is brought onto one line.
    pub fn new(kind: EventKind, certificate: &config::Certificate, message: &str) -> Event {
        Event::now(
            kind,
            kind.as_str(),
            certificate.name.clone(),
            certificate.domains.clone(),
            message,
        )
    }

    /// An event of `kind`, sent as `event`, about `subject` and its `domains`, on this host
    /// now; `message` is brought onto one line.
    fn now(
        kind: EventKind,
        event: &'static str,
        subject: String,
        domains: Vec<String>,
        message: &str,
    ) -> Event {
        Event {
            event,
            certificate: subject,
            domains,
            message: one_line(message),
            not_after: None,
            snapshot: None,
            host: host_name(),
            timestamp: crate::text::rfc3339(OffsetDateTime::now_utc()),
            cause_kind: None,
            kind,
        }
    }

    /// An event about the fleet `fleet` (`certificate` is `fleet NAME`, which no
    /// certificate's name can be), with the `domains` of its shared certificates: it is
    /// degraded (`fleet_degraded`), or its etcd answers again (`fleet_recovered`, of the same
    /// kind: it goes to the channels that take `fleet_degraded`).
    pub fn fleet(fleet: &str, domains: Vec<String>, message: &str, recovered: bool) -> Event {
        let kind = EventKind::FleetDegraded;
        let event = if recovered {
            FLEET_RECOVERED
        } else {
            kind.as_str()
        };
        Event::now(kind, event, fleet_subject(fleet), domains, message)
    }

    /// An event of the daemon's probe about `certificate`: its served leaf has not been the
    /// live one for longer than `drift_after` (`drift`), or it is again
    /// (`drift_resolved`, of the same kind: it goes to the channels that take `drift`).
    pub fn drift(certificate: &config::Certificate, message: &str, resolved: bool) -> Event {
        let mut e = Event::new(EventKind::Drift, certificate, message);
        if resolved {
            e.event = DRIFT_RESOLVED;
        }
        e
    }

    /// Whether it is a `drift_resolved`.
    pub fn is_drift_resolved(&self) -> bool {
        self.event == DRIFT_RESOLVED
    }

    /// Whether it says that something failing before works again (a `renewed` after
    /// failures is told apart by the caller, see [`Alerts::deliver`]).
    pub fn is_fleet_recovery(&self) -> bool {
        self.event == FLEET_RECOVERED
    }

    /// The event, saying what kind of failure it is about.
    pub fn with_cause(mut self, cause: Option<CauseKind>) -> Event {
        self.cause_kind = cause;
        self
    }

    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        self.kind
    }

    /// A short title: `certkeeper: www rolled back on host1`.
    pub fn title(&self) -> String {
        format!(
            "certkeeper: {} {} on {}",
            self.certificate,
            self.headline(),
            self.host
        )
    }

    /// What happened, in words.
    pub fn headline(&self) -> &'static str {
        if self.event == TEST_EVENT {
            return "test alert";
        }
        match self.kind {
            EventKind::Renewed => "renewed",
            EventKind::Failed => "renewal FAILED",
            EventKind::RolledBack => "ROLLED BACK",
            EventKind::RollbackFailed => "ROLLBACK FAILED, act now",
            EventKind::Expiring => "EXPIRING soon",
            EventKind::FleetDegraded if self.is_fleet_recovery() => "etcd answers again",
            EventKind::FleetDegraded => "DEGRADED: etcd unreachable",
            EventKind::FleetGenerationBad => "fleet generation marked BAD",
            EventKind::Drift if self.is_drift_resolved() => "serves the live certificate again",
            EventKind::Drift => "DRIFT: does not serve the live certificate",
        }
    }

    /// What certkeeper did about it, and what is left to a person.
    pub fn consequence(&self) -> &'static str {
        if self.event == TEST_EVENT {
            return "Nothing to do: this checks that the channel works.";
        }
        match self.kind {
            EventKind::Renewed => "The new certificate is live and served.",
            EventKind::Failed => {
                "Nothing changed on disk; certkeeper tries again after its retry backoff."
            }
            EventKind::RolledBack => {
                "The previous certificate is live and served again; the new one is tried again later."
            }
            EventKind::RollbackFailed => {
                "The previous certificate could not be put back and served: someone must check the service and its files now."
            }
            EventKind::Expiring => {
                "The certificate expires within 7 days and its last renewal failed: someone must look."
            }
            EventKind::FleetDegraded if self.is_fleet_recovery() => {
                "Shared certificates are renewed and deployed again as the fleet decides."
            }
            EventKind::FleetDegraded => {
                "Every host keeps serving what it has and check works; renewals of shared certificates wait until etcd has a quorum again: someone must look at etcd."
            }
            EventKind::FleetGenerationBad => {
                "No host deploys this generation; the hosts that took it go back to the one before at their next pass: someone must look at why it failed before the next one is issued."
            }
            EventKind::Drift if self.is_drift_resolved() => {
                "The service serves the live certificate again; nothing to do."
            }
            EventKind::Drift => {
                "certkeeper changes nothing: someone must find why the service serves another certificate (another file in place, or a reload that never happened) and reload it."
            }
        }
    }

    /// The lines every text rendering shows, as (label, value).
    pub fn facts(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            ("Certificate", self.certificate.clone()),
            ("Domains", self.domains.join(", ")),
        ];
        if let Some(n) = &self.not_after {
            out.push(("Not after", n.clone()));
        }
        if let Some(s) = &self.snapshot {
            out.push(("Snapshot", s.clone()));
        }
        out.push(("Host", self.host.clone()));
        out.push(("Time", self.timestamp.clone()));
        out
    }
}

/// Sends events to one vendor.
#[async_trait]
pub trait Notifier: fmt::Debug + Send + Sync {
    /// Delivers one event once (no retry here); `Ok` carries the vendor's answer in words.
    async fn send(&self, client: &Client, event: &Event) -> Result<String, DeliveryError>;

    /// The secrets the channel holds (its URL, its signing secret): nothing that shows what
    /// the vendor said may contain them.
    fn secrets(&self) -> Vec<&config::Secret>;
}

/// A configured channel ready to send.
#[derive(Debug)]
pub struct Endpoint {
    /// Its name (`alert test` takes it).
    pub name: String,
    /// Its type.
    pub kind: &'static str,
    /// The events it takes.
    pub on: Vec<EventKind>,
    notifier: Result<Box<dyn Notifier>, ChannelError>,
}

/// Why a channel cannot send at all.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// A secret of its section could not be read (the message names the key and the
    /// secret's source, never its value).
    #[error("{key}: {reason}")]
    Secret {
        /// The key in the channel's section (`webhook_url`, `secret`).
        key: &'static str,
        /// Why it could not be read.
        reason: String,
    },
}

/// Every channel of a config, with one HTTP client.
#[derive(Debug)]
pub struct Alerts {
    channels: Vec<Endpoint>,
    client: Arc<Client>,
}

/// What became of one event on one channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The channel's name.
    pub channel: String,
    /// The event.
    pub event: &'static str,
    /// The certificate.
    pub certificate: String,
    /// The vendor's answer (`Ok`), or why it was not delivered.
    pub result: Result<String, String>,
    /// Attempts made.
    pub attempts: u32,
}

impl Alerts {
    /// The channels of `config`; a channel whose secrets do not resolve reports that at
    /// each delivery instead of stopping anything.
    pub fn new(config: &config::Config) -> Alerts {
        let channels = config
            .alerts
            .iter()
            .map(|a| Endpoint {
                name: a.name.clone(),
                kind: a.channel.kind(),
                on: a.on.clone(),
                notifier: notifier(&a.channel),
            })
            .collect();
        Alerts {
            channels,
            client: Arc::new(Client::new()),
        }
    }

    /// Whether any channel is configured.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// The channels.
    pub fn channels(&self) -> &[Endpoint] {
        &self.channels
    }

    /// Whether some channel takes `kind`.
    pub fn wants(&self, kind: EventKind) -> bool {
        self.channels.iter().any(|c| c.on.contains(&kind))
    }

    /// Delivers each event to the channels that take it (a recovery `renewed` also to the
    /// channels that took failures: `recovery`), all at once, retrying within `within`.
    /// Every failure is logged once, with the channel's name and the vendor's error.
    pub async fn deliver(&self, events: &[(Event, bool)], within: Duration) -> Vec<Report> {
        let deadline = Instant::now() + within;
        let mut jobs = Vec::new();
        for (event, recovery) in events {
            for channel in &self.channels {
                let takes = channel.on.contains(&event.kind)
                    || (*recovery && channel.on.iter().any(|k| *k != EventKind::Renewed));
                if takes {
                    jobs.push(self.deliver_one(channel, event, deadline));
                }
            }
        }
        futures_util::future::join_all(jobs).await
    }

    /// Sends a test event to the channels named (all when `names` is empty), bounded by
    /// `within`.
    pub async fn test(&self, names: &[String], within: Duration) -> Vec<Report> {
        let deadline = Instant::now() + within;
        let event = Event::now(
            EventKind::Renewed,
            TEST_EVENT,
            "certkeeper-test".into(),
            vec!["example.com".into()],
            "a test alert from `certkeeper alert test`; nothing happened to any certificate",
        );
        let jobs = self
            .channels
            .iter()
            .filter(|c| names.is_empty() || names.contains(&c.name))
            .map(|c| self.deliver_one(c, &event, deadline));
        futures_util::future::join_all(jobs).await
    }

    async fn deliver_one(&self, channel: &Endpoint, event: &Event, deadline: Instant) -> Report {
        let mut report = Report {
            channel: channel.name.clone(),
            event: event.event,
            certificate: event.certificate.clone(),
            result: Err(String::new()),
            attempts: 0,
        };
        let notifier = match &channel.notifier {
            Ok(n) => n,
            Err(e) => {
                report.result = Err(e.to_string());
                log_failure(&report);
                return report;
            }
        };
        // Vendors' words reach the report and the logs only through this: redacted (after
        // the vendor's JSON was decoded, which may spell a token anew) and on one line.
        let redactor = redact::Redactor::new(&notifier.secrets());
        // Certkeeper's one retry policy: no limit of attempts but the deadline, pauses from
        // FIRST_RETRY doubling up to MAX_RETRY_PAUSE, spread by jitter; a vendor's
        // Retry-After, cut short, replaces the pause.
        const RETRY: RetryPolicy = RetryPolicy::new(u32::MAX, FIRST_RETRY)
            .max_backoff(MAX_RETRY_PAUSE)
            .retry_after(RetryAfter::Replaces {
                cap: client::MAX_RETRY_AFTER,
            });
        let mut retry = Retry::new(RETRY).until(deadline);
        loop {
            report.attempts += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let sent = match tokio::time::timeout(left, notifier.send(&self.client, event)).await {
                Ok(r) => r,
                Err(_) => Err(DeliveryError::TimedOut),
            };
            match sent {
                Ok(answer) => {
                    let answer = redactor.show(&answer);
                    tracing::debug!(channel = %channel.name, event = %event.event, cert = %event.certificate, "Alert delivered: {answer}");
                    report.result = Ok(answer);
                    return report;
                }
                Err(e) => {
                    let wait = match e.retryable() {
                        true => retry.next(e.retry_after()),
                        false => None,
                    };
                    let Some(wait) = wait else {
                        report.result = Err(redactor.show(&e.to_string()));
                        log_failure(&report);
                        return report;
                    };
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

fn log_failure(report: &Report) {
    let Err(e) = &report.result else { return };
    tracing::warn!(
        channel = %report.channel,
        event = %report.event,
        cert = %report.certificate,
        attempts = report.attempts,
        "Alert not delivered: {e}"
    );
}

fn notifier(channel: &Channel) -> Result<Box<dyn Notifier>, ChannelError> {
    let resolve = |key: &'static str, src: &config::SecretSource| {
        src.resolve()
            .map_err(|reason| ChannelError::Secret { key, reason })
    };
    Ok(match channel {
        Channel::Slack { webhook_url } => Box::new(slack::Slack {
            url: resolve("webhook_url", webhook_url)?,
        }),
        Channel::Webhook { url, secret } => Box::new(webhook::Webhook {
            url: match url {
                config::WebhookUrl::Inline(u) => config::Secret::new(u.clone()),
                config::WebhookUrl::Secret(src) => resolve("url", src)?,
            },
            secret: secret.as_ref().map(|s| resolve("secret", s)).transpose()?,
        }),
        Channel::WeCom { webhook_url } => Box::new(wecom::WeCom {
            url: resolve("webhook_url", webhook_url)?,
        }),
        Channel::DingTalk {
            webhook_url,
            secret,
        } => Box::new(dingtalk::DingTalk {
            url: resolve("webhook_url", webhook_url)?,
            secret: secret.as_ref().map(|s| resolve("secret", s)).transpose()?,
        }),
        Channel::Feishu {
            webhook_url,
            secret,
        } => Box::new(feishu::Feishu {
            url: resolve("webhook_url", webhook_url)?,
            secret: secret.as_ref().map(|s| resolve("secret", s)).transpose()?,
        }),
    })
}

/// `text` on one line: the first line, and the lines of any command output it carries
/// between divider lines that say what failed ([`crate::text::error_lines`]: from the first
/// line with `emerg`, `error`, `AH0`, `fatal`..., or else the last lines), joined by ` | `;
/// control characters escaped; at most [`MAX_MESSAGE`] characters.
pub fn one_line(text: &str) -> String {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut out = lines.next().unwrap_or_default().to_owned();
    let mut rest = lines.skip_while(|l| !l.starts_with("-----"));
    if rest.next().is_some() {
        let output: Vec<&str> = rest.take_while(|l| !l.starts_with("-----")).collect();
        let budget = MAX_MESSAGE.saturating_sub(out.chars().count() + 2);
        let picked = crate::text::error_lines(&output.join("\n"), budget);
        if !picked.is_empty() {
            out.push_str(": ");
            out.push_str(&picked);
        }
    }
    let mut out = crate::text::escape_control(&out);
    if out.chars().count() > MAX_MESSAGE {
        out = out.chars().take(MAX_MESSAGE).collect::<String>() + "…";
    }
    out
}

/// This host's name, as alerts name it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The `event` of what `alert test` sends.
pub const TEST_EVENT: &str = "test";

/// The name of the event that says the fleet's etcd answers again after `fleet_degraded`.
pub const FLEET_RECOVERED: &str = "fleet_recovered";

/// The name of the event that says a certificate's served leaf is the live one again after
/// `drift`.
pub const DRIFT_RESOLVED: &str = "drift_resolved";

/// What a fleet's events name in place of a certificate, and the key of its part of the
/// alert memory: `fleet NAME` (a certificate's name has no space).
pub fn fleet_subject(fleet: &str) -> String {
    format!("fleet {fleet}")
}

/// The first pause between two attempts of one delivery; it doubles up to
/// [`MAX_RETRY_PAUSE`].
pub const FIRST_RETRY: Duration = Duration::from_millis(500);
/// The longest pause between two attempts.
pub const MAX_RETRY_PAUSE: Duration = Duration::from_secs(4);
/// How long a one-shot command spends delivering its alerts before it exits.
pub const ONE_SHOT_BUDGET: Duration = Duration::from_secs(10);
/// The longest alert message, in characters.
pub const MAX_MESSAGE: usize = 500;

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event {
            event: "rolled_back",
            certificate: "www".into(),
            domains: vec!["example.com".into(), "*.example.com".into()],
            message: one_line(
                "the new certificate from letsencrypt was refused and the previous pair is served again: reload failed: reload command /usr/sbin/nginx exited with status 1\n---------- output ----------\nnginx: [emerg] unknown directive \"ssl_certificate_kye\" in /etc/nginx/sites-enabled/www:12\n----------------------------",
            ),
            not_after: Some("2027-01-21T10:00:00Z".into()),
            snapshot: None,
            host: "web1".into(),
            timestamp: "2026-11-30T17:00:03Z".into(),
            cause_kind: None,
            kind: EventKind::RolledBack,
        }
    }

    #[test]
    fn messages_are_one_line_with_the_commands_first_output_line() {
        let e = sample();
        assert_eq!(
            e.message,
            "the new certificate from letsencrypt was refused and the previous pair is served again: reload failed: reload command /usr/sbin/nginx exited with status 1: nginx: [emerg] unknown directive \"ssl_certificate_kye\" in /etc/nginx/sites-enabled/www:12"
        );
        assert_eq!(one_line("a\u{1b}[31mb\nsecond"), "a\\x1b[31mb");
        let long = "x".repeat(MAX_MESSAGE + 10);
        assert_eq!(one_line(&long).chars().count(), MAX_MESSAGE + 1);
    }

    #[test]
    fn every_rendering_carries_the_facts() {
        let e = sample();
        let slack = slack::message(&e);
        let markdown = wecom::markdown(&e);
        let post = feishu::post(&e);
        let webhook = serde_json::to_value(&e).unwrap();
        println!(
            "--- slack\n{}",
            serde_json::to_string_pretty(&slack).unwrap()
        );
        println!("--- wecom/dingtalk markdown\n{markdown}");
        println!(
            "--- feishu\n{}",
            serde_json::to_string_pretty(&post).unwrap()
        );
        println!(
            "--- webhook\n{}",
            serde_json::to_string_pretty(&webhook).unwrap()
        );
        assert_eq!(
            slack["text"],
            format!("certkeeper: www ROLLED BACK on web1: {}", e.message)
        );
        assert_eq!(slack["blocks"].as_array().unwrap().len(), 4);
        for text in [
            serde_json::to_string(&slack).unwrap(),
            markdown.clone(),
            serde_json::to_string(&post).unwrap(),
        ] {
            for fact in [
                "www",
                "example.com, *.example.com",
                "2027-01-21T10:00:00Z",
                "web1",
            ] {
                assert!(text.contains(fact), "{fact} missing from {text}");
            }
            assert!(text.contains("previous certificate is live and served again"));
        }
        assert!(markdown.len() <= wecom::MAX_MARKDOWN);
        assert_eq!(
            webhook
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect::<Vec<_>>(),
            [
                "certificate",
                "domains",
                "event",
                "host",
                "message",
                "not_after",
                "snapshot",
                "timestamp"
            ]
        );
        let mut huge = sample();
        huge.domains = vec!["a-very-long-name.example.com".into(); 400];
        assert!(wecom::markdown(&huge).len() <= wecom::MAX_MARKDOWN);
    }
}
