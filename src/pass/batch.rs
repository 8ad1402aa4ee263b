//! The hand-over to the deploy pipeline (`crate::deploy`): what is ready goes in one batch,
//! so that certificates sharing a reload command are reloaded once, and each outcome is
//! recorded; material the deploy did not take is kept for the next pass.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Outcome;
use super::check::Ready;
use super::pending::{self, keep_now};
use super::record::Recorder;
use crate::deploy;
use crate::issuer::Issuers;
use crate::store;
use crate::text::rfc3339;
use crate::x509::Cert;

/// What goes to the deploy pipeline: an item per ready certificate, where its material came
/// from, and the material not kept yet (kept when its deploy does not take it).
pub(super) struct Batch {
    pub(super) items: Vec<deploy::Item>,
    sources: BTreeMap<String, String>,
    /// By certificate: the issuer, the fullchain and the key.
    unkept: BTreeMap<String, (String, Vec<u8>, Vec<u8>)>,
    /// Each item's new leaf: the live one once its deploy renews it.
    leaves: BTreeMap<String, Cert>,
}

impl Batch {
    /// The batch of the `ready` material; without the lock (a dry run), each is recorded
    /// as what it would renew instead.
    pub(super) async fn of(
        ready: Vec<(String, Box<Ready>)>,
        locked: bool,
        specs: &BTreeMap<String, store::PairSpec>,
        issuers: &Issuers,
        record: &mut Recorder<'_>,
    ) -> Batch {
        let config = record.config;
        let mut batch = Batch {
            items: Vec::new(),
            sources: BTreeMap::new(),
            unkept: BTreeMap::new(),
            leaves: BTreeMap::new(),
        };
        for (name, r) in ready {
            match (locked, specs.get(&name), config.certificate(&name)) {
                (true, Some(spec), Some(cert)) => {
                    batch.sources.insert(name.clone(), r.source.clone());
                    if !r.kept {
                        let material = (r.issuer.clone(), r.fullchain.clone(), r.privkey.clone());
                        batch.unkept.insert(name.clone(), material);
                    }
                    batch.leaves.insert(name.clone(), r.leaf.clone());
                    batch.items.push(deploy::Item {
                        cert: cert.clone(),
                        spec: spec.clone(),
                        fullchain: r.fullchain,
                        privkey: r.privkey,
                        leaf: r.leaf,
                        trust: Arc::new(issuers.trust_for(cert).await),
                    });
                }
                _ => {
                    let outcome = Outcome::WouldRenew {
                        not_after: rfc3339(r.leaf.not_after),
                        source: r.source.clone(),
                    };
                    record.done(name, outcome);
                }
            }
        }
        batch
    }

    /// Deploys the batch under the lock and records each outcome; material the deploy did
    /// not take is kept for the next pass, and kept material that went live is dropped.
    pub(super) async fn deploy(mut self, locked: &store::Locked<'_>, record: &mut Recorder<'_>) {
        let (config, stop) = (record.config, &record.opts.stop);
        let state_dir = record.kept.state_dir.clone();
        for (name, done) in deploy::deploy_all(locked, self.items, stop).await {
            let source = self.sources.remove(&name).unwrap_or_default();
            let renewed = matches!(done, deploy::Outcome::Renewed(_));
            let still_kept = match self.unkept.remove(&name) {
                Some(_) if renewed => false,
                Some((issuer, fullchain, privkey)) => {
                    keep_now(&state_dir, &name, &issuer, &fullchain, &privkey)
                }
                None => pending::exists(&config.state_dir, &name),
            };
            if renewed && still_kept {
                pending::remove(&state_dir, &name);
            }
            if let Some(leaf) = self.leaves.remove(&name).filter(|_| renewed) {
                record.renewed(&name, leaf);
            }
            let outcome = Outcome::from_deploy(source, done, still_kept);
            record.done(name, outcome);
        }
        // Groups not started because of a stop.
        for name in self.sources.into_keys() {
            if let Some((issuer, fullchain, privkey)) = self.unkept.remove(&name) {
                keep_now(&state_dir, &name, &issuer, &fullchain, &privkey);
            }
            record.done(name, Outcome::Stopped);
        }
    }
}
