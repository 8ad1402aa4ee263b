//! The hand-over to the deploy pipeline (`crate::deploy`): what is ready goes in one batch,
//! so that certificates sharing a reload command are reloaded once, and each outcome is
//! recorded; material the deploy did not take is kept for the next pass.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Outcome;
use super::pending::{self, keep_now};
use super::record::Recorder;
use super::tasks::Joined;
use crate::deploy;
use crate::issuer::Issuers;
use crate::store;
use crate::text::rfc3339;
use crate::x509::Cert;

/// What goes to the deploy pipeline: an item per ready certificate, where its material came
/// from, and the material not kept yet (kept when its deploy does not take it).
pub(super) struct Batch {
    pub(super) items: Vec<deploy::Item>,
    /// Live pairs to reload and verify again.
    retries: Vec<deploy::Retry>,
    sources: BTreeMap<String, String>,
    /// By certificate: the issuer, the fullchain and the key.
    unkept: BTreeMap<String, (String, Vec<u8>, Vec<u8>)>,
    /// Each item's new leaf: the live one once its deploy renews it.
    leaves: BTreeMap<String, Cert>,
    /// The fleet generation of each shared certificate's item, reported after its deploy,
    /// with the bad generation it goes back from, if it does.
    generations: BTreeMap<String, (u64, Option<u64>)>,
}

/// Where a live pair that is reloaded and verified again comes from, as lines say it.
const AN_EARLIER_DEPLOY: &str = "the pair an earlier pass deployed";

impl Batch {
    /// The batch of the `joined` material and retries; without the lock (a dry run), each
    /// is recorded as what it would renew instead.
    pub(super) async fn of(
        joined: Joined,
        locked: bool,
        specs: &BTreeMap<String, store::PairSpec>,
        issuers: &Issuers,
        record: &mut Recorder<'_>,
    ) -> Batch {
        let config = record.config;
        let mut batch = Batch {
            items: Vec::new(),
            retries: Vec::new(),
            sources: BTreeMap::new(),
            unkept: BTreeMap::new(),
            leaves: BTreeMap::new(),
            generations: BTreeMap::new(),
        };
        for (name, leaf) in joined.retries {
            match (locked, config.certificate(&name)) {
                (true, Some(cert)) => {
                    batch.sources.insert(name.clone(), AN_EARLIER_DEPLOY.into());
                    batch.leaves.insert(name.clone(), (*leaf).clone());
                    batch.retries.push(deploy::Retry {
                        cert: cert.clone(),
                        leaf: *leaf,
                        trust: Arc::new(issuers.trust_for(cert).await),
                    });
                }
                _ => {
                    let outcome = Outcome::WouldRenew {
                        not_after: rfc3339(leaf.not_after),
                        source: AN_EARLIER_DEPLOY.into(),
                    };
                    record.done(name, outcome);
                }
            }
        }
        for (name, r) in joined.ready {
            match (locked, specs.get(&name), config.certificate(&name)) {
                (true, Some(spec), Some(cert)) => {
                    batch.sources.insert(name.clone(), r.source.clone());
                    if let Some(serial) = r.fleet {
                        batch
                            .generations
                            .insert(name.clone(), (serial, r.reverting));
                    }
                    // A fleet generation is kept in the fleet's etcd, not in `pending/`.
                    if !r.kept && (r.fleet.is_none() || !r.issuer.is_empty()) {
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
    pub(super) async fn deploy(
        mut self,
        locked: &store::Locked<'_>,
        record: &mut Recorder<'_>,
        fleet: Option<&super::fleet::Link>,
    ) {
        let (config, opts) = (record.config, record.opts);
        let state_dir = record.kept.state_dir.clone();
        let done =
            deploy::deploy_all(locked, self.items, self.retries, opts.no_reload, &opts.stop).await;
        // The fleet hears of each deploy once every outcome is known, several at once.
        let mut reports = Vec::new();
        for (name, done) in done {
            let source = self.sources.remove(&name).unwrap_or_default();
            // The material is live (served, or left in place unserved).
            let renewed = matches!(
                done,
                deploy::Outcome::Renewed(_) | deploy::Outcome::Unserved { .. }
            );
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
            if let Some(generation) = self.generations.remove(&name) {
                reports.push((name.clone(), generation, renewed, outcome_line(&outcome)));
            }
            record.done(name, outcome);
        }
        if let Some(fleet) = fleet {
            report_all(fleet, config, reports).await;
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

/// Reports each deploy of a fleet generation (certificate, serial and the generation it went
/// back from, whether it went live, why not) to the fleet, [`REPORTS_IN_FLIGHT`] at a time:
/// each report is a few requests to etcd, and a pass that deployed a thousand generations
/// would otherwise wait for them one after the other.
async fn report_all(
    fleet: &super::fleet::Link,
    config: &crate::config::Config,
    reports: Vec<FleetReport>,
) {
    use futures_util::StreamExt;
    futures_util::stream::iter(reports)
        .for_each_concurrent(
            REPORTS_IN_FLIGHT,
            |(name, generation, renewed, why)| async move {
                if let Some(cert) = config.certificate(&name) {
                    report(fleet, cert, generation, renewed, &why).await;
                }
            },
        )
        .await;
}

/// A deploy of a fleet generation to report: the certificate, the generation's serial and the
/// one it went back from, whether it went live, and why not.
type FleetReport = (String, (u64, Option<u64>), bool, String);

/// How many reports to the fleet's etcd are in flight at once.
const REPORTS_IN_FLIGHT: usize = 16;

/// Reports a deploy of fleet generation `serial` (going back from `from`, if set): deployed,
/// reverted, or failed with why; a failed revert is a failure of the generation gone back to.
async fn report(
    fleet: &super::fleet::Link,
    cert: &crate::config::Certificate,
    (serial, from): (u64, Option<u64>),
    renewed: bool,
    why: &str,
) {
    use super::fleet::Report;
    match (renewed, from) {
        (true, Some(from)) => {
            fleet
                .report(cert, from, Report::Reverted { to: serial })
                .await
        }
        (true, None) => fleet.report(cert, serial, Report::Deployed).await,
        (false, _) => fleet.report(cert, serial, Report::Failed { why }).await,
    }
}

/// Why a deploy did not take a fleet generation, as the host reports it.
fn outcome_line(outcome: &Outcome) -> String {
    match outcome {
        Outcome::RolledBack { cause, .. } | Outcome::RollbackFailed { cause, .. } => {
            cause.to_string()
        }
        Outcome::Unserved { cause, .. } => cause.to_string(),
        Outcome::Failed { error } => error.to_string(),
        other => other.word().to_owned(),
    }
}
