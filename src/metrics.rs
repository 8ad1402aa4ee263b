//! Prometheus text exposition of what certkeeper knows about each managed certificate, for
//! `certkeeper metrics`, `renew --textfile` (node_exporter's textfile collector) and, later,
//! the daemon's `/metrics`. Every per-certificate sample carries `name="<certificate>"`.
//!
//! Read-only: the live leaf gives notAfter, the state record the last attempt, success and
//! failures; with a `fleet:` section, the fleet's etcd gives whether it answers and how many
//! hosts serve each generation of a shared certificate (read within [`FLEET_BUDGET`]). A state record the invoking user cannot read (a monitoring user, with state_dir
//! private) leaves those samples out rather than reporting zeros that would look like facts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::config::Config;
use crate::state;
use crate::x509::leaf_of_file;

/// One pass's summary, for `renew --textfile`.
#[derive(Clone, Debug, Default)]
pub struct Pass {
    /// How long the pass took.
    pub duration: Duration,
    /// When it ended (unix seconds).
    pub finished: i64,
    /// How many certificates ended how (`renewed`, `not_due`, `failed`, ...).
    pub outcomes: Vec<(&'static str, usize)>,
}

impl Pass {
    /// The summary of a pass that took `duration` and ended at `finished`.
    pub fn of(
        outcomes: &[(String, crate::pass::Outcome)],
        duration: Duration,
        finished: time::OffsetDateTime,
    ) -> Pass {
        let mut counts: std::collections::BTreeMap<&'static str, usize> = Default::default();
        for (_, o) in outcomes {
            *counts.entry(o.word()).or_default() += 1;
        }
        Pass {
            duration,
            finished: finished.unix_timestamp(),
            outcomes: counts.into_iter().collect(),
        }
    }
}

/// The metrics of every managed certificate (and of `pass`, when given), in the text format,
/// read from the live files and the state directory.
pub fn render(config: &Config, pass: Option<&Pass>) -> String {
    render_known(config, &BTreeMap::new(), pass)
}

/// [`render`] after a pass: what the pass knows of a certificate (`known`) is taken from it,
/// not read back; only the certificates it did not look at are read from disk.
pub fn render_known(
    config: &Config,
    known: &BTreeMap<String, crate::pass::Known>,
    pass: Option<&Pass>,
) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        if samples.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    };
    let mut not_after = Vec::new();
    let mut success = Vec::new();
    let mut attempt = Vec::new();
    let mut failures = Vec::new();
    let mut result = Vec::new();
    let mut held = Vec::new();
    // When a pass last found each certificate not due: later than its record's last attempt,
    // that is its last look and its result is `ok`.
    let horizon = state::Horizon::of(config);
    let looked = std::cell::OnceCell::new();
    for cert in &config.certificates {
        let label = format!("name=\"{}\"", escape(&cert.name));
        let facts = match known.get(&cert.name) {
            Some(k) => Facts {
                not_after: match k.leaf_known {
                    true => k.not_after,
                    false => leaf_of_file(&cert.fullchain).ok().map(|l| l.not_after),
                },
                record: Some(k.record.clone()),
                not_due_at: k.not_due_at,
            },
            None => Facts {
                not_after: leaf_of_file(&cert.fullchain).ok().map(|l| l.not_after),
                record: state::load_if_readable(&config.state_dir, &cert.name, &horizon),
                not_due_at: looked
                    .get_or_init(|| state::load_pass(&config.state_dir, &horizon))
                    .not_due
                    .get(&cert.name)
                    .copied(),
            },
        };
        if let Some(t) = facts.not_after {
            not_after.push((label.clone(), t.unix_timestamp().to_string()));
        }
        let Some(s) = facts.record else {
            continue;
        };
        let (last_attempt, last_result, cause) = match facts.not_due_at {
            Some(t) if s.last_attempt.is_none_or(|a| t > a) => (Some(t), Some("ok"), None),
            _ => (s.last_attempt, s.last_result.as_deref(), s.last_cause),
        };
        success.push((label.clone(), s.last_success.unwrap_or(0).to_string()));
        if let Some(t) = last_attempt {
            attempt.push((label.clone(), t.to_string()));
        }
        failures.push((label.clone(), s.consecutive_failures.to_string()));
        held.push((label.clone(), u8::from(s.hold.is_some()).to_string()));
        if let Some(r) = last_result {
            let cause = cause.map_or("none", state::CauseKind::as_str);
            result.push((
                format!("{label},result=\"{}\",cause=\"{cause}\"", escape(r)),
                "1".to_owned(),
            ));
        }
    }
    family(
        "certkeeper_certificate_not_after_seconds",
        "gauge",
        "The live leaf's notAfter, unix seconds.",
        not_after,
    );
    family(
        "certkeeper_certificate_last_success_timestamp_seconds",
        "gauge",
        "When the certificate was last renewed, unix seconds (0: never by certkeeper).",
        success,
    );
    family(
        "certkeeper_certificate_last_attempt_timestamp_seconds",
        "gauge",
        "When the certificate was last looked at by a pass, unix seconds.",
        attempt,
    );
    family(
        "certkeeper_certificate_consecutive_failures",
        "gauge",
        "Failed attempts since the last success.",
        failures,
    );
    family(
        "certkeeper_certificate_last_result",
        "gauge",
        "The last attempt's result (renewed, failed, rolled_back, rollback_failed, ok) and the kind of its failure (cause: none, rate_limited, ca_refused, dns, network, local, material, deploy, reload, verify, config), as labels.",
        result,
    );
    family(
        "certkeeper_certificate_held",
        "gauge",
        "1 while `rollback --hold` keeps the certificate on the restored pair (no deploys until `certkeeper release`), else 0.",
        held,
    );
    if let Some(fleet) = &config.fleet {
        let shared: Vec<&str> = config
            .certificates
            .iter()
            .filter(|c| c.fleet)
            .map(|c| c.name.as_str())
            .collect();
        let hosts = fleet_hosts(fleet, &shared);
        family(
            "certkeeper_fleet_connected",
            "gauge",
            "1 when the fleet's etcd answered (a quorum), else 0.",
            vec![(String::new(), u8::from(hosts.is_some()).to_string())],
        );
        family(
            "certkeeper_fleet_hosts",
            "gauge",
            "Hosts that report serving each generation (serial) of a shared certificate.",
            hosts
                .unwrap_or_default()
                .into_iter()
                .map(|((cert, serial), n)| {
                    (
                        format!("name=\"{}\",generation=\"{serial}\"", escape(&cert)),
                        n.to_string(),
                    )
                })
                .collect(),
        );
    }
    if let Some(p) = pass {
        family(
            "certkeeper_pass_duration_seconds",
            "gauge",
            "How long the last pass took.",
            vec![(String::new(), format!("{:.3}", p.duration.as_secs_f64()))],
        );
        family(
            "certkeeper_pass_timestamp_seconds",
            "gauge",
            "When the last pass ended, unix seconds.",
            vec![(String::new(), p.finished.to_string())],
        );
        family(
            "certkeeper_pass_certificates",
            "gauge",
            "Certificates of the last pass, by outcome.",
            p.outcomes
                .iter()
                .map(|(o, n)| (format!("outcome=\"{o}\""), n.to_string()))
                .collect(),
        );
    }
    out
}

/// The samples of the daemon's last probe of each certificate with `verify.tls_connect`
/// (see [`crate::probe`]), in the text format. A failed probe gives only
/// `certkeeper_served_probe_success 0`; `matches_live` is left out when the live leaf cannot
/// be read.
pub fn render_served(findings: &[crate::probe::Finding]) -> String {
    type Pick = fn(&crate::probe::Finding) -> Option<String>;
    let families: [(&str, &str, Pick); 7] = [
        (
            "certkeeper_served_probe_success",
            "1 when the last probe of verify.tls_connect got a certificate chain, else 0.",
            |f| Some(u8::from(f.served()).to_string()),
        ),
        (
            "certkeeper_served_handshake_seconds",
            "The last probe's TLS handshake time (TCP connect not counted).",
            |f| f.report.handshake_seconds.map(|s| format!("{s:.6}")),
        ),
        (
            "certkeeper_served_chain_bytes",
            "DER bytes of the certificates served, summed.",
            |f| f.report.chain_bytes.map(|b| b.to_string()),
        ),
        (
            "certkeeper_served_chain_length",
            "Certificates served, leaf included.",
            |f| f.report.chain_length.map(|n| n.to_string()),
        ),
        (
            "certkeeper_served_chain_complete",
            "1 when the chain as served leads to a root the certificate's issuers trust, else 0.",
            |f| f.report.complete.map(|c| u8::from(c).to_string()),
        ),
        (
            "certkeeper_served_not_after_seconds",
            "The served leaf's notAfter, unix seconds.",
            |f| f.not_after.map(|t| t.unix_timestamp().to_string()),
        ),
        (
            "certkeeper_served_matches_live",
            "1 when the served leaf is the live one (the leaf of fullchain), else 0.",
            |f| f.report.matches_live.map(|m| u8::from(m).to_string()),
        ),
    ];
    let mut out = String::new();
    for (name, help, pick) in families {
        let samples: Vec<(String, String)> = findings
            .iter()
            .filter_map(|f| pick(f).map(|v| (format!("name=\"{}\"", escape(&f.name)), v)))
            .collect();
        if samples.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
    out
}

/// Writes `text` to `path` whole: a temporary file beside it, fsynced, renamed over it
/// (mode 0644: node_exporter reads it), so the collector never reads half a file.
pub fn write_textfile(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| std::io::Error::other("the textfile path has no file name"))?;
    use crate::store::atomic;
    atomic::replace_file(dir, name, text.as_bytes(), atomic::Perm::PUBLIC, true)
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// The most a render waits for etcd in all, so that a scrape answers well within
/// Prometheus's timeout (10 s by default) when etcd does not.
pub const FLEET_BUDGET: Duration = Duration::from_secs(2);

/// How many live hosts report serving each generation of each shared certificate in
/// `shared`, by (certificate, serial); `None` when etcd did not answer within
/// [`FLEET_BUDGET`] (a partial count would read as hosts gone).
fn fleet_hosts(
    fleet: &crate::config::Fleet,
    shared: &[&str],
) -> Option<BTreeMap<(String, u64), usize>> {
    crate::fleet::view::within(FLEET_BUDGET, || async {
        let timeouts = crate::fleet::Timeouts::within(FLEET_BUDGET);
        let client = crate::fleet::connect(fleet, timeouts).await.ok()?;
        client.probe().await.ok()?;
        let mut counts = BTreeMap::new();
        for cert in shared {
            for (_, state) in client.hosts(cert).await.ok()? {
                if let Some(serial) = state.serving {
                    *counts.entry(((*cert).to_owned(), serial)).or_default() += 1;
                }
            }
        }
        Some(counts)
    })
    .flatten()
}

/// What the metrics say of one certificate, from a pass or from disk.
struct Facts {
    /// The live leaf's notAfter.
    not_after: Option<time::OffsetDateTime>,
    /// Its record (`None` when it cannot be read).
    record: Option<state::CertState>,
    /// When a pass last found it not due.
    not_due_at: Option<i64>,
}

/// A label value with `\`, `"` and newlines escaped, as the text format wants.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
