//! The start of a pass: the state_dir lock (waited for without blocking, so that a stop
//! is seen), each selected certificate's pair spec, and the recovery of interrupted swaps.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Failure;
use crate::config::{Certificate, Config};
use crate::deploy::pair_spec;
use crate::store::{self, Store};

/// Waits for the state_dir lock without blocking the runtime, so that a stop request is
/// seen while another process's pass holds it.
pub(super) async fn lock_waiting<'a>(
    store: &'a Store,
    stop: &CancellationToken,
) -> Result<Option<store::Locked<'a>>, store::Error> {
    let mut told = false;
    loop {
        match store.try_lock() {
            Ok(l) => return Ok(Some(l)),
            Err(store::Error::Locked { .. }) => {}
            Err(e) => return Err(e),
        }
        if !told {
            tracing::info!("Waiting for another certkeeper pass to finish.");
            told = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(LOCK_POLL) => {}
            _ = stop.cancelled() => return Ok(None),
        }
    }
}

/// How often a pass looks whether another process's pass has released the lock.
pub(super) const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Each selected certificate's pair spec; an owner or group that does not resolve fails
/// its own certificate (the second map), and the others go on.
pub(super) fn pair_specs(
    selected: &[Certificate],
) -> (BTreeMap<String, store::PairSpec>, BTreeMap<String, Failure>) {
    let mut specs = BTreeMap::new();
    let mut unrecoverable = BTreeMap::new();
    for cert in selected {
        match pair_spec(cert) {
            Ok(spec) => {
                specs.insert(cert.name.clone(), spec);
            }
            Err(e) => {
                unrecoverable.insert(cert.name.clone(), Failure::Spec(Arc::new(e)));
            }
        }
    }
    (specs, unrecoverable)
}

/// Recovers interrupted swaps of the selected certificates, under the lock; a certificate
/// whose recovery fails is added to `unrecoverable` (it fails, the others go on).
pub(super) fn recover(
    locked: &store::Locked<'_>,
    config: &Config,
    specs: &BTreeMap<String, store::PairSpec>,
    unrecoverable: &mut BTreeMap<String, Failure>,
) {
    // Over every configured certificate, a clean recovery puts the `clean` marker
    // back at the end of the pass.
    let recovered = if specs.len() == config.certificates.len() {
        locked.recover_all(specs.values())
    } else {
        specs.values().map(|s| (s, locked.recover(s))).collect()
    };
    for (spec, recovered) in recovered {
        match recovered {
            Ok(r) if r.is_clean() => {}
            Ok(r) => {
                if let Some(undone) = &r.undone {
                    tracing::warn!(cert = %spec.name, "Recovered an interrupted deploy: {undone}.");
                }
                for w in &r.warnings {
                    tracing::warn!(cert = %spec.name, "{w}");
                }
                if !r.removed.is_empty() || !r.completed.is_empty() {
                    tracing::warn!(cert = %spec.name, removed = r.removed.len(), completed = r.completed.len(), "Recovered an interrupted swap.");
                }
            }
            // Reported as this certificate's failure; the others go on.
            Err(e) => {
                unrecoverable.insert(spec.name.clone(), Failure::Recovery(Arc::new(e)));
            }
        }
    }
}
