//! The local CAs' trust, under the pass's lock: at its start each CA's root rotation is
//! moved on ([`rotation::advance`]) before anything is issued, and at its start and its end
//! each `trust_bundle` is brought in line with the roots to trust, with `trust_reload` run
//! when the bundle changed. Failures here are warnings: they never stop the certificates'
//! renewals, and the next pass tries again.

use std::path::Path;

use time::OffsetDateTime;

use crate::config::{Config, Issuer, LocalCaIssuer};
use crate::issuer::local_ca::{LocalCa, rotation};
use crate::store::StateDir;

/// At the start of a pass: every local CA's rotation moved on, then its bundle.
pub(super) async fn advance(config: &Config, state: &StateDir, now: OffsetDateTime) {
    for (name, ca) in local_cas(config, state) {
        advance_ca(config, name, ca, state, now).await;
    }
}

/// CA `name`'s rotation moved on, then its bundle (also for `certkeeper ca rotate`).
pub(crate) async fn advance_ca(
    config: &Config,
    name: &str,
    ca: &LocalCaIssuer,
    state: &StateDir,
    now: OffsetDateTime,
) {
    let live: Vec<(&str, &Path)> = config
        .certificates
        .iter()
        .filter(|c| c.issuers.iter().any(|i| i == name))
        .map(|c| (c.name.as_str(), c.fullchain.as_path()))
        .collect();
    match rotation::advance(state, name, &live, now) {
        Ok(steps) => steps
            .iter()
            .for_each(|s| tracing::info!(issuer = %name, "Local CA {name}: {s}.")),
        Err(e) => {
            tracing::warn!(issuer = %name, "Local CA {name}: cannot move its root rotation on: {e}")
        }
    }
    bundle(name, ca, state, now).await;
}

/// At the end of a pass: the bundles of the CAs, those it created included.
pub(super) async fn bundles(config: &Config, state: &StateDir, now: OffsetDateTime) {
    for (name, ca) in local_cas(config, state) {
        bundle(name, ca, state, now).await;
    }
}

/// The local CAs that exist under `state`.
fn local_cas<'a>(
    config: &'a Config,
    state: &StateDir,
) -> impl Iterator<Item = (&'a str, &'a LocalCaIssuer)> {
    let root = state.path().to_owned();
    config
        .issuers
        .iter()
        .filter_map(move |(name, issuer)| match issuer {
            Issuer::LocalCa(ca) if LocalCa::root_path(&root, name).exists() => {
                Some((name.as_str(), ca))
            }
            _ => None,
        })
}

/// Writes CA `name`'s bundle when it differs from its roots, and runs its `trust_reload`.
pub(crate) async fn bundle(name: &str, ca: &LocalCaIssuer, state: &StateDir, now: OffsetDateTime) {
    let Some(path) = &ca.trust_bundle else {
        return;
    };
    match rotation::write_bundle(state, name, path, now) {
        Ok(false) => {}
        Ok(true) => {
            tracing::info!(issuer = %name, bundle = %path.display(), "Local CA {name}: the trust bundle {} now holds its roots.", path.display());
            if let Some(reload) = &ca.trust_reload {
                match crate::deploy::reload::run(
                    "trust reload",
                    &reload.command,
                    &[],
                    reload.timeout,
                )
                .await
                {
                    Ok(_) => tracing::info!(issuer = %name, "Local CA {name}: trust_reload done."),
                    Err(e) => {
                        tracing::warn!(issuer = %name, "Local CA {name}: trust_reload failed: {e}; what reads {} may still trust the roots it had", path.display())
                    }
                }
            }
        }
        Err(e) => {
            tracing::warn!(issuer = %name, "Local CA {name}: cannot write the trust bundle {}: {e}", path.display())
        }
    }
}
