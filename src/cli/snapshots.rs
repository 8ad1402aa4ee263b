//! `certkeeper snapshots [--json] NAME` and `certkeeper rollback NAME [--to ID]`: the history
//! the store keeps of a certificate's live pair, and putting one of them back (reloaded and
//! verified like a renewal).

use std::path::Path;

use super::{known_names, load_config, print};
use crate::alert::{Alerts, Event, ONE_SHOT_BUDGET};
use crate::config::{Config, EventKind};
use crate::deploy::{Reloader, pair_spec, reload_and_check};
use crate::store::{PairSpec, SnapshotInfo, Store};
use crate::x509::leaf_of_file;

/// Exit code of a config or usage error.
const USAGE: u8 = 2;
/// Exit code of a rollback that failed.
const FAILED: u8 = 1;

/// Runs `snapshots`.
pub fn snapshots(config_path: &Path, name: &str, json: bool) -> u8 {
    let Some((config, spec)) = prepare(config_path, name) else {
        return USAGE;
    };
    let store = match Store::open(&config.state_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("certkeeper: snapshots {name}: {e}");
            return USAGE;
        }
    };
    let list = match store.snapshots(&spec) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("certkeeper: snapshots {name}: {e}");
            return USAGE;
        }
    };
    let text = if json {
        // SnapshotInfo holds strings, bools and digests: encoding cannot fail.
        serde_json::to_string_pretty(&list).unwrap_or_else(|_| "[]".into()) + "\n"
    } else {
        table(name, &list)
    };
    if print(&text) { 0 } else { USAGE }
}

/// Runs `rollback`: restores the snapshot, reloads the service and checks that it serves
/// the restored leaf. When it does not, the pair that was live before is put back (and
/// reloaded and checked in turn), and the rollback fails.
/// With `hold`, a rollback that went through also sets a hold (see [`crate::hold`]).
pub fn rollback(config_path: &Path, name: &str, to: Option<&str>, hold: bool) -> u8 {
    let Some((config, spec)) = prepare(config_path, name) else {
        return USAGE;
    };
    let Some(cert) = config.certificate(name).cloned() else {
        return USAGE;
    };
    let runtime = match super::runtime(FAILED) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let store = match Store::open(&config.state_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("certkeeper: rollback {name}: {e}");
            return FAILED;
        }
    };
    let locked = match store.lock() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("certkeeper: rollback {name}: {e}");
            return FAILED;
        }
    };
    // After a crash, every certificate is recovered, as a pass does (this one's errors are
    // the rollback's own, below).
    let specs: Result<Vec<_>, _> = config
        .certificates
        .iter()
        .map(crate::deploy::pair_spec)
        .collect();
    // (A certificate that cannot be mapped to the store is left to the next pass, which
    // reports it; the marker stays off until then.)
    if let Ok(specs) = &specs {
        for (other, recovered) in locked.recover_all(specs) {
            if let Err(e) = recovered
                && other.name != name
            {
                tracing::warn!(cert = %other.name, "Cannot recover an interrupted swap: {e}");
            }
        }
    }
    let (restored, staged) = match locked.stage_rollback(&spec, to) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("certkeeper: rollback {name}: {e}");
            return FAILED;
        }
    };
    let reloader = Reloader::for_certificate(&cert);
    let served = runtime.block_on(reload_and_check(&reloader, &cert));
    let note = match served {
        Ok(note) => note,
        Err(cause) => {
            let restore = Restore {
                locked: &locked,
                spec: &spec,
                staged: &staged,
                restored: &restored,
                reloader: &reloader,
            };
            return refused(&runtime, &config, &cert, &restore, cause);
        }
    };
    let done = match locked.commit(&spec, staged) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("certkeeper: rollback {name}: {e}");
            return FAILED;
        }
    };
    tracing::info!(
        cert = %name,
        snapshot = %restored.id,
        fingerprint = %done.manifest.fingerprint,
        "Rolled back certificate."
    );
    for w in &done.warnings {
        tracing::warn!(cert = %name, "{w}");
    }
    let mut out = format!(
        "{name}: rolled back to snapshot {} (notAfter {}, sha256 {})",
        restored.id, done.manifest.not_after, done.manifest.fingerprint
    );
    match (&cert.reload, &cert.verify) {
        // The reload failed, and the service still serves the restored certificate.
        _ if note.is_some() => out.push_str(&format!("; {}", note.as_deref().unwrap_or_default())),
        (Some(_), Some(_)) => out.push_str("; reloaded, and the restored certificate is served"),
        (Some(_), None) => out.push_str("; reloaded (no verify target configured)"),
        (None, Some(_)) => {
            out.push_str("; the restored certificate is served (no reload command configured)")
        }
        (None, None) => out.push_str("; no reload command configured: reload the service yourself"),
    }
    if let Some(replaced) = &done.snapshot {
        out.push_str(&format!(
            "; the replaced pair is snapshot {} (undo with: certkeeper rollback {name} --to {})",
            replaced.id, replaced.id
        ));
    }
    let held = hold
        && super::release::hold_restored(
            &locked,
            &config,
            name,
            &restored.id,
            &done.manifest.fingerprint,
            &mut out,
        );
    let printed = print(&(out + "\n"));
    // Alerts never hold the lock up.
    drop(locked);
    let mut event = format!(
        "rolled back by `certkeeper rollback` to snapshot {} (sha256 {})",
        restored.id, done.manifest.fingerprint
    );
    if cert.verify.is_some() {
        event.push_str("; the restored certificate is served");
    }
    if held {
        event.push_str(&format!(
            "; held on the restored pair until `certkeeper release {name}`"
        ));
    }
    alert(
        &runtime,
        &config,
        &cert,
        EventKind::RolledBack,
        &event,
        &restored.id,
    );
    // The rollback is done either way; an output that could not be written, or a hold
    // asked for and not set, is still a failure to report.
    if printed && held == hold { 0 } else { FAILED }
}

/// A rollback staged and waiting for its verdict.
struct Restore<'a> {
    locked: &'a crate::store::Locked<'a>,
    spec: &'a PairSpec,
    staged: &'a crate::store::Staged,
    restored: &'a SnapshotInfo,
    reloader: &'a Reloader,
}

/// A restored snapshot the service does not serve: the pair that was live before goes back
/// (and is judged as the restored one was); when that fails too, it is said loudly and
/// alerted.
fn refused(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    cert: &crate::config::Certificate,
    restore: &Restore<'_>,
    cause: crate::deploy::Failure,
) -> u8 {
    let name = cert.name.as_str();
    eprintln!(
        "certkeeper: rollback {name}: snapshot {} was restored but refused: {cause}",
        restore.restored.id
    );
    // The way back failed too: said loudly, and alerted.
    let failed = |what: &str| {
        tracing::error!(cert = %name, "ROLLBACK FAILED, act now: {what}");
        eprintln!("certkeeper: rollback {name}: ROLLBACK FAILED: {what}");
        let message = format!(
            "`certkeeper rollback` restored snapshot {} but it was refused ({cause}), and {what}",
            restore.restored.id
        );
        alert(
            runtime,
            config,
            cert,
            EventKind::RollbackFailed,
            &message,
            &restore.restored.id,
        );
    };
    match restore.locked.revert(restore.spec, restore.staged) {
        Ok(_) => {
            let back = runtime.block_on(reload_and_check(restore.reloader, cert));
            match back {
                Ok(_) => eprintln!(
                    "certkeeper: rollback {name}: the pair that was live before is live and served again; nothing changed"
                ),
                Err(e) => failed(&format!(
                    "the pair that was live before is back on disk but not served: {e}"
                )),
            }
            FAILED
        }
        Err(e) => {
            failed(&e.to_string());
            FAILED
        }
    }
}

/// Delivers one event about an operator's rollback to the channels that take it (no
/// deduplication: it is an action, not a repeated failure), within the one-shot budget.
fn alert(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    cert: &crate::config::Certificate,
    kind: EventKind,
    message: &str,
    snapshot: &str,
) {
    let alerts = Alerts::new(config);
    if !alerts.wants(kind) {
        return;
    }
    let mut event = Event::new(kind, cert, message);
    event.snapshot = Some(snapshot.to_owned());
    event.not_after = leaf_of_file(&cert.fullchain)
        .ok()
        .map(|l| crate::text::rfc3339(l.not_after));
    runtime.block_on(alerts.deliver(&[(event, false)], ONE_SHOT_BUDGET));
}

/// Loads the config and finds the certificate; prints the error and returns `None`.
fn prepare(config_path: &Path, name: &str) -> Option<(Config, PairSpec)> {
    let config = load_config(config_path).ok()?;
    if !known_names(&config, config_path, &[name.to_owned()]) {
        return None;
    }
    let cert = config.certificate(name)?;
    match pair_spec(cert) {
        Ok(spec) => Some((config, spec)),
        Err(e) => {
            eprintln!("certkeeper: {}: {e}", config_path.display());
            None
        }
    }
}

fn table(name: &str, list: &[SnapshotInfo]) -> String {
    if list.is_empty() {
        return format!("{name}: no snapshots\n");
    }
    let mut out = format!(
        "{:<8}  {:<20}  {:<20}  {:<6}  {:<8}  {}\n",
        "ID", "CREATED", "NOT AFTER", "FILES", "VERIFIED", "FINGERPRINT"
    );
    for s in list {
        let dash = || "-".to_owned();
        out.push_str(&format!(
            "{:<8}  {:<20}  {:<20}  {:<6}  {:<8}  {}\n",
            s.id,
            s.created.clone().unwrap_or_else(dash),
            s.not_after.clone().unwrap_or_else(dash),
            if s.linked { "linked" } else { "copied" },
            if s.verified { "yes" } else { "NO" },
            match (&s.fingerprint, &s.problem) {
                (_, Some(p)) if !s.verified =>
                    format!("{} ({p})", s.fingerprint.clone().unwrap_or_else(dash)),
                (Some(f), _) => f.clone(),
                (None, _) => dash(),
            }
        ));
    }
    out
}
