//! `certkeeper snapshots [--json] NAME` and `certkeeper rollback NAME [--to ID]`: the history
//! the store keeps of a certificate's live pair, and putting one of them back.

use std::path::Path;

use super::{known_names, load_config, print};
use crate::config::Config;
use crate::deploy::pair_spec;
use crate::store::{PairSpec, SnapshotInfo, Store};

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
    if json {
        // SnapshotInfo holds strings, bools and digests: encoding cannot fail.
        print(&(serde_json::to_string_pretty(&list).unwrap_or_else(|_| "[]".into()) + "\n"));
    } else {
        print(&table(name, &list));
    }
    0
}

/// Runs `rollback`.
pub fn rollback(config_path: &Path, name: &str, to: Option<&str>) -> u8 {
    let Some((config, spec)) = prepare(config_path, name) else {
        return USAGE;
    };
    let result = Store::open(&config.state_dir).and_then(|store| {
        let locked = store.lock()?;
        locked.rollback(&spec, to)
    });
    match result {
        Ok(done) => {
            tracing::info!(
                cert = %name,
                snapshot = %done.restored.id,
                fingerprint = %done.manifest.fingerprint,
                "Rolled back certificate."
            );
            let mut out = format!(
                "{name}: rolled back to snapshot {} (notAfter {}, sha256 {})",
                done.restored.id, done.manifest.not_after, done.manifest.fingerprint
            );
            if let Some(replaced) = &done.replaced {
                out.push_str(&format!(
                    "; the replaced pair is snapshot {} (undo with: certkeeper rollback {name} --to {})",
                    replaced.id, replaced.id
                ));
            }
            print(&(out + "\n"));
            0
        }
        Err(e) => {
            eprintln!("certkeeper: rollback {name}: {e}");
            FAILED
        }
    }
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
