//! `certkeeper ca rotate ISSUER` and `certkeeper ca status ISSUER`: a local CA's root
//! rotation (see [`crate::issuer::local_ca::rotation`]) started, and shown.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;

use super::{load_config, print};
use crate::config::{Config, Issuer, LocalCaIssuer};
use crate::issuer::local_ca::rotation::{self, Phase};
use crate::issuer::local_ca::{self, LocalCa};
use crate::text::rfc3339;
use crate::text::short_fingerprint as short;
use crate::x509::read_certificates;

/// Exit code of a config or usage error.
const USAGE: u8 = 2;
/// Exit code of a command that failed.
const FAILED: u8 = 1;

/// The overlap when `--overlap` is not given.
pub const DEFAULT_OVERLAP: &str = "30d";

/// The local-ca issuer `name` of the config; one line and `Err(2)` otherwise.
fn local_ca<'a>(config: &'a Config, name: &str) -> Result<&'a LocalCaIssuer, u8> {
    match config.issuers.get(name) {
        Some(Issuer::LocalCa(ca)) => Ok(ca),
        Some(_) => {
            eprintln!(
                "certkeeper: issuer {name} is not a local-ca issuer; only a local CA's root can be rotated here"
            );
            Err(USAGE)
        }
        None => {
            let known: Vec<&str> = config
                .issuers
                .iter()
                .filter(|(_, i)| matches!(i, Issuer::LocalCa(_)))
                .map(|(n, _)| n.as_str())
                .collect();
            eprintln!(
                "certkeeper: no issuer {} in the config; its local-ca issuers: {}",
                crate::text::escape_line(name),
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            );
            Err(USAGE)
        }
    }
}

/// Runs `ca rotate`: starts a root rotation of local CA `name` whose new root signs after
/// `overlap`; both roots are trusted (root.pem, the trust bundle, reloaded) at once.
pub fn rotate(config_path: &Path, name: &str, overlap: &str) -> u8 {
    let Ok(config) = load_config(config_path) else {
        return USAGE;
    };
    let ca = match local_ca(&config, name) {
        Ok(ca) => ca,
        Err(code) => return code,
    };
    let overlap: Duration = match crate::config::parse_duration(overlap) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("certkeeper: --overlap: {e}");
            return USAGE;
        }
    };
    let runtime = match super::runtime(FAILED) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let now = OffsetDateTime::now_utc();
    // Under the pass's lock: a pass never sees a rotation half started.
    let started = super::with_lock(&config, &format!("ca rotate {name}"), |store, _| {
        let started = rotation::start(store.state_dir(), name, now, overlap)?;
        let state = store.state_dir();
        runtime.block_on(crate::pass::trust::advance_ca(
            &config, name, ca, state, now,
        ));
        Ok::<_, local_ca::Error>(started)
    });
    let started = match started {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            eprintln!("certkeeper: ca rotate {name}: {e}");
            return FAILED;
        }
        Err(code) => return code,
    };
    let bundle = match &ca.trust_bundle {
        Some(b) => format!(" and the trust bundle {}", b.display()),
        None => String::new(),
    };
    let text = format!(
        "{name}: root rotation started: the new root {new} is trusted from now (root.pem{bundle} hold the old and the new root); it signs from {at}, when the first pass after that renews the leaves of the old root {old}; the pass after the last of them retires the old root\n",
        new = short(&started.new_root),
        old = short(&started.old_root),
        at = rfc3339(started.switch_at),
    );
    if print(&text) { 0 } else { FAILED }
}

/// Runs `ca status`: the CA's roots, its rotation, its bundle, and which root each of its
/// certificates' live chains ends at.
pub fn status(config_path: &Path, name: &str, json_out: bool) -> u8 {
    let Ok(config) = load_config(config_path) else {
        return USAGE;
    };
    let ca = match local_ca(&config, name) {
        Ok(ca) => ca,
        Err(code) => return code,
    };
    let root_path = LocalCa::root_path(&config.state_dir, name);
    let roots = match crate::fsutil::read_regular(&root_path, crate::fsutil::MAX_FILE) {
        Ok(bytes) => read_certificates(&bytes)
            .map(|(c, _)| c)
            .unwrap_or_default(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            eprintln!("certkeeper: ca status {name}: {}: {e}", root_path.display());
            return FAILED;
        }
    };
    let rotation = match rotation::read(&config.state_dir, name) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("certkeeper: ca status {name}: {e}");
            return FAILED;
        }
    };
    let bundle = ca.trust_bundle.as_ref().map(|path| {
        let state = match (
            crate::fsutil::read_regular(path, crate::fsutil::MAX_FILE),
            crate::fsutil::read_regular(&root_path, crate::fsutil::MAX_FILE),
        ) {
            (Ok(b), Ok(r)) if b == r => "up to date",
            (Err(e), _) if e.kind() == std::io::ErrorKind::NotFound => {
                "missing: the next pass writes it"
            }
            _ => "differs from the roots: the next pass rewrites it",
        };
        (path.display().to_string(), state)
    });
    let certs: Vec<(String, Option<String>)> = config
        .certificates
        .iter()
        .filter(|c| c.issuers.iter().any(|i| i == name))
        .map(|c| {
            let anchor = roots
                .iter()
                .find(|r| rotation::chains_to(&c.fullchain, r))
                .map(|r| r.fingerprint.clone());
            (c.name.clone(), anchor)
        })
        .collect();
    let text = if json_out {
        let value = json!({
            "issuer": name,
            "created": !roots.is_empty(),
            "roots": roots.iter().enumerate().map(|(i, r)| json!({
                "fingerprint": r.fingerprint,
                "subject": r.subject,
                "not_after": rfc3339(r.not_after),
                "signs": i == 0,
            })).collect::<Vec<_>>(),
            "rotation": rotation.as_ref().map(|r| json!({
                "phase": r.phase.to_string(),
                "started": rfc3339(r.started),
                "switch_at": rfc3339(r.switch_at),
                "switched": r.switched.map(rfc3339),
                "done": r.done.map(rfc3339),
                "old_root": r.old_root,
                "new_root": r.new_root,
            })),
            "trust_bundle": bundle.as_ref().map(|(p, s)| json!({"path": p, "state": s})),
            "certificates": certs.iter().map(|(n, a)| json!({"name": n, "root": a})).collect::<Vec<_>>(),
        });
        format!("{value:#}\n")
    } else {
        readable(name, &roots, rotation.as_ref(), bundle.as_ref(), &certs)
    };
    if print(&text) { 0 } else { FAILED }
}

/// The readable `ca status` report.
fn readable(
    name: &str,
    roots: &[crate::x509::Cert],
    rotation: Option<&rotation::Rotation>,
    bundle: Option<&(String, &str)>,
    certs: &[(String, Option<String>)],
) -> String {
    if roots.is_empty() {
        return format!("local CA {name}: not created yet (it is created at its first issue)\n");
    }
    let mut out = format!("local CA {name}\nroots:\n");
    for (i, r) in roots.iter().enumerate() {
        out.push_str(&format!(
            "  {}  {}  notAfter {}  {}\n",
            short(&r.fingerprint),
            if i == 0 { "signs  " } else { "trusted" },
            rfc3339(r.not_after),
            r.subject
        ));
    }
    out.push_str(&match rotation {
        None => "rotation: none yet\n".to_owned(),
        Some(r) => match r.phase {
            Phase::Overlap => format!(
                "rotation: overlap since {}: both roots are trusted; the new root {} signs from {}\n",
                rfc3339(r.started),
                short(&r.new_root),
                rfc3339(r.switch_at)
            ),
            Phase::Switched => {
                let waiting: Vec<&str> = certs
                    .iter()
                    .filter(|(_, a)| a.as_deref() == Some(r.old_root.as_str()))
                    .map(|(n, _)| n.as_str())
                    .collect();
                format!(
                    "rotation: switched at {}: the new root {} signs; the old root {} leaves the trust once no live leaf chains to it (waiting for: {})\n",
                    r.switched.map(rfc3339).unwrap_or_default(),
                    short(&r.new_root),
                    short(&r.old_root),
                    if waiting.is_empty() { "none; the next pass retires it".to_owned() } else { waiting.join(", ") }
                )
            }
            Phase::Done => format!(
                "rotation: done at {}: the old root {} was retired\n",
                r.done.map(rfc3339).unwrap_or_default(),
                short(&r.old_root)
            ),
        },
    });
    if let Some((path, state)) = bundle {
        out.push_str(&format!("trust bundle: {path}: {state}\n"));
    }
    out.push_str("certificates:\n");
    for (n, anchor) in certs {
        let at = match anchor {
            Some(fp) => format!("chains to {}", short(fp)),
            None => "no live leaf of this CA".to_owned(),
        };
        out.push_str(&format!("  {n}  {at}\n"));
    }
    out
}
