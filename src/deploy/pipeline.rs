//! The deploy pipeline: stage → reload → verify → commit, or revert → reload → verify.
//!
//! Certificates of one pass that share a reload command are staged first, all of them, then
//! the command runs once (one nginx reload for fifty certificates), then each certificate is
//! verified on its own. A certificate whose reload or verification failed is reverted to the
//! pair it replaced, the service is reloaded again (once for all of them), and the restored
//! leaf must be served; that gives [`Outcome::RolledBack`], and any failure on that way back
//! [`Outcome::RollbackFailed`], the outcome someone must act on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;

use super::Failure;
use super::{reload, verify};
use crate::config::{self, Certificate};
use crate::store::{self, Locked, PairSpec, Staged};
use crate::x509::{Cert, TrustStore, leaf_of_file};

/// One certificate's checked material, ready to go live.
#[derive(Clone, Debug)]
pub struct Item {
    /// The configured certificate (its reload and verify settings).
    pub cert: Certificate,
    /// Its live pair in the store.
    pub spec: PairSpec,
    /// The new fullchain (PEM).
    pub fullchain: Vec<u8>,
    /// The new private key (PEM).
    pub privkey: Vec<u8>,
    /// The new leaf.
    pub leaf: Cert,
    /// The roots the served chain must reach.
    pub trust: Arc<TrustStore>,
}

/// What became of one certificate's deploy. Alerts, metrics, state and exit codes follow
/// from the variant.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// The new pair is live, reloaded and served.
    Renewed(Renewed),
    /// The new pair was refused after the swap and the previous pair is live and served
    /// again.
    RolledBack {
        /// Why the new pair was refused (reload or verify output).
        cause: Failure,
        /// What the way back did worth knowing (a reload that failed again while the
        /// restored leaf was still served).
        note: Option<String>,
    },
    /// The new pair was refused, and putting the previous pair back failed too: someone must
    /// act.
    RollbackFailed {
        /// Why the new pair was refused.
        cause: Failure,
        /// What went wrong on the way back, and what is live now.
        rollback: String,
    },
    /// Nothing was swapped (the stage itself failed); the live pair is unchanged.
    Failed {
        /// Why.
        error: Failure,
    },
}

/// A deploy that went through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Renewed {
    /// The new leaf's notAfter (RFC 3339).
    pub not_after: String,
    /// SHA-256 of the new leaf's DER, hex.
    pub fingerprint: String,
    /// The snapshot keeping the replaced pair.
    pub snapshot: Option<String>,
    /// Whether plain files at the live paths were adopted and are links now.
    pub adopted: bool,
    /// What an operator should know (a live file that had been edited in place).
    pub warnings: Vec<String>,
}

impl Outcome {
    /// The word used in state records and events: `renewed`, `rolled_back`,
    /// `rollback_failed` or `failed`.
    pub fn event(&self) -> &'static str {
        match self {
            Outcome::Renewed(_) => "renewed",
            Outcome::RolledBack { .. } => "rolled_back",
            Outcome::RollbackFailed { .. } => "rollback_failed",
            Outcome::Failed { .. } => "failed",
        }
    }
}

/// Deploys every item: grouped by reload command, each group staged, reloaded once, and
/// verified. Returns each item's name and outcome, in no particular order; the items of
/// groups not started when `stop` is requested are left out (their material stays kept for
/// the next pass), while a group in flight always finishes.
pub async fn deploy_all(
    locked: &Locked<'_>,
    items: Vec<Item>,
    stop: &CancellationToken,
) -> Vec<(String, Outcome)> {
    let mut groups: BTreeMap<Option<Vec<String>>, Vec<Item>> = BTreeMap::new();
    for item in items {
        let key = item.cert.reload.as_ref().map(|r| r.command.clone());
        groups.entry(key).or_default().push(item);
    }
    let mut out = Vec::new();
    for (_, group) in groups {
        if stop.is_cancelled() {
            break;
        }
        out.extend(deploy_group(locked, group).await);
    }
    out
}

/// A certificate switched in and waiting for its verdict.
struct Pending {
    item: Item,
    staged: Staged,
}

/// Deploys items that share one reload command (or have none).
async fn deploy_group(locked: &Locked<'_>, items: Vec<Item>) -> Vec<(String, Outcome)> {
    let mut out = Vec::new();
    let mut staged = Vec::new();
    // All of the group's pairs are staged together: their fsyncs are batched.
    let results = tokio::task::block_in_place(|| {
        let pairs: Vec<(&store::PairSpec, &[u8], &[u8])> = items
            .iter()
            .map(|i| (&i.spec, i.fullchain.as_slice(), i.privkey.as_slice()))
            .collect();
        locked.stage_all(&pairs)
    });
    for (item, result) in items.into_iter().zip(results) {
        match result {
            Ok(s) => {
                if !s.recovered.is_clean() {
                    tracing::warn!(cert = %item.cert.name, "Recovered an interrupted swap first.");
                }
                staged.push(Pending { item, staged: s })
            }
            Err(e) => out.push((
                item.cert.name.clone(),
                Outcome::Failed {
                    error: Failure::Stage(Arc::new(e)),
                },
            )),
        }
    }
    if staged.is_empty() {
        return out;
    }
    let reload = Reloader::for_group(&staged);

    let started = Instant::now();
    if let Some(Err(e)) = reload.run(&staged).await {
        let cause = Failure::Reload(Arc::new(e));
        let failed = staged.into_iter().map(|p| (p, cause.clone())).collect();
        out.extend(revert_all(locked, &reload, failed).await);
        return out;
    }

    // A reload command can damage what it was asked to load (remove the live files, or
    // state_dir): what it left is looked at before anything is served or committed.
    let mut refused = Vec::new();
    let staged: Vec<Pending> = staged
        .into_iter()
        .filter_map(|p| match locked.check_staged(&p.item.spec, &p.staged) {
            Ok(()) => Some(p),
            Err(problem) => {
                tracing::warn!(cert = %p.item.cert.name, "The reload damaged the deploy: {problem}.");
                refused.push((p, Failure::Damaged(problem)));
                None
            }
        })
        .collect();
    let verdicts = join_all(
        staged
            .iter()
            .map(|p| check_target(&p.item.cert, &p.item.leaf, Some(&p.item.trust))),
    )
    .await;
    tracing::info!(
        certificates = staged.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Reloaded and verified."
    );
    let mut accepted = Vec::new();
    for (p, verdict) in staged.into_iter().zip(verdicts) {
        match verdict {
            Err(cause) => refused.push((p, cause)),
            Ok(()) => accepted.push(p),
        }
    }
    // Commit removes the journal, which cannot be undone; a failure there leaves the stage
    // open, and it is reverted like a refused pair. The group's commits share one sync.
    let committed = tokio::task::block_in_place(|| {
        locked.commit_all(
            accepted
                .iter()
                .map(|p| (&p.item.spec, p.staged.clone()))
                .collect(),
        )
    });
    for (p, result) in accepted.into_iter().zip(committed) {
        let name = p.item.cert.name.clone();
        match result {
            Ok(done) => out.push((
                name,
                Outcome::Renewed(Renewed {
                    not_after: done.manifest.not_after,
                    fingerprint: done.manifest.fingerprint,
                    snapshot: done.snapshot.map(|s| s.id),
                    adopted: done.adopted,
                    warnings: done.warnings,
                }),
            )),
            Err(e) => refused.push((p, Failure::Commit(Arc::new(e)))),
        }
    }
    if !refused.is_empty() {
        out.extend(revert_all(locked, &reload, refused).await);
    }
    out
}

/// Reverts refused certificates of one group, reloads once more, and checks that each
/// restored leaf is served.
async fn revert_all(
    locked: &Locked<'_>,
    reload: &Reloader,
    refused: Vec<(Pending, Failure)>,
) -> Vec<(String, Outcome)> {
    let mut out = Vec::new();
    let mut reverted = Vec::new();
    for (p, cause) in refused {
        let name = p.item.cert.name.clone();
        match tokio::task::block_in_place(|| locked.revert(&p.item.spec, &p.staged)) {
            Ok(r) => reverted.push((p, cause, r)),
            Err(e) => {
                let what = match e {
                    store::Error::RevertImpossible { .. } => e.to_string(),
                    _ => format!(
                        "{e}; the new pair is still live, and the next certkeeper run puts the previous one back"
                    ),
                };
                out.push((
                    name,
                    Outcome::RollbackFailed {
                        cause,
                        rollback: what,
                    },
                ))
            }
        }
    }
    if reverted.is_empty() {
        return out;
    }
    let pendings: Vec<&Pending> = reverted.iter().map(|(p, _, _)| p).collect();
    let reloaded = reload.run_for(&pendings).await;
    // The output is in the cause already when the first reload failed the same way.
    let reload_note = match &reloaded {
        Some(Err(e)) => Some(format!(
            "the reload after the revert failed too: {}",
            e.to_string().lines().next().unwrap_or_default()
        )),
        _ => None,
    };
    let checks = join_all(reverted.iter().map(|(p, _, r)| async move {
        if !r.restored {
            // Nothing was live before this certificate's first deploy: nothing to serve.
            return Ok(());
        }
        let leaf = leaf_of_file(&p.item.cert.fullchain).map_err(|e| Failure::Live(Arc::new(e)))?;
        check_target(&p.item.cert, &leaf, None).await
    }))
    .await;
    for ((p, cause, r), check) in reverted.into_iter().zip(checks) {
        let name = p.item.cert.name.clone();
        let verified = p.item.cert.verify.is_some();
        // The reload after the revert may have damaged the restored pair as the first one
        // damaged the new pair.
        let damaged = match r.restored {
            true => locked.check_reverted(&p.item.spec, &p.staged).err(),
            false => None,
        };
        if let Some(problem) = damaged {
            let rollback = format!(
                "the previous pair was put back{}, but the reload after the revert changed it too: {problem}",
                from_snapshot(&r)
            );
            out.push((name, Outcome::RollbackFailed { cause, rollback }));
            continue;
        }
        let outcome = match check {
            // Nothing was live before this first deploy: there is nothing to serve, and the
            // host is as it was.
            Ok(()) if !r.restored => Outcome::RolledBack {
                cause,
                note: Some("nothing was live before; the live paths are gone again".into()),
            },
            Err(e) => Outcome::RollbackFailed {
                cause,
                rollback: format!(
                    "the previous pair is back on disk{}, but it is not served: {e}{}",
                    from_snapshot(&r),
                    reload_note
                        .as_ref()
                        .map(|n| format!("; {n}"))
                        .unwrap_or_default()
                ),
            },
            // Without a verify target, a failed reload leaves the service's state unknown.
            Ok(()) if !verified && reload_note.is_some() => Outcome::RollbackFailed {
                cause,
                rollback: format!(
                    "the previous pair is back on disk{}, but {}",
                    from_snapshot(&r),
                    reload_note.clone().unwrap_or_default()
                ),
            },
            Ok(()) => Outcome::RolledBack {
                cause,
                note: match (&reload_note, r.from_snapshot.as_deref()) {
                    (Some(n), _) => Some(format!("{n}; the restored certificate is served")),
                    (None, Some(id)) => Some(format!(
                        "the previous generation was gone; restored from snapshot {id}"
                    )),
                    (None, None) => None,
                },
            },
        };
        out.push((name, outcome));
    }
    out
}

fn from_snapshot(r: &store::Reverted) -> String {
    r.from_snapshot
        .as_ref()
        .map(|id| format!(" (from snapshot {id})"))
        .unwrap_or_default()
}

/// Checks that the service of `cert` serves `expected` (and, with `trust`, a complete chain
/// to it), then runs its health command; `Ok` when nothing is configured to check. A
/// refusal is a [`Failure::Verify`].
pub async fn check_target(
    cert: &Certificate,
    expected: &Cert,
    trust: Option<&TrustStore>,
) -> Result<(), Failure> {
    let Some(v) = &cert.verify else {
        return Ok(());
    };
    let started = Instant::now();
    if let Some(connect) = &v.tls_connect {
        let served = verify::served(connect, &v.server_name, expected, trust, v.timeout)
            .await
            .map_err(|e| Failure::Verify(Arc::new(e)))?;
        tracing::info!(cert = %cert.name, attempts = served.attempts, elapsed_ms = served.elapsed.as_millis() as u64,
            "Verified the served certificate.");
    }
    if let Some(command) = &v.command {
        let left = v.timeout.saturating_sub(started.elapsed());
        verify::health(
            command,
            &health_env(cert, expected),
            left.max(MIN_HEALTH_TIME),
        )
        .await
        .map_err(|e| Failure::Verify(Arc::new(e)))?;
    }
    Ok(())
}

/// Reloads `cert`'s service (when it has a reload command) and checks that it serves the
/// leaf of the live fullchain: the judgement of a manual rollback.
pub async fn reload_and_check(reloader: &Reloader, cert: &Certificate) -> Result<(), Failure> {
    if let Some(Err(e)) = reloader.run_names(&[cert.name.as_str()]).await {
        return Err(Failure::Reload(Arc::new(e)));
    }
    let leaf = leaf_of_file(&cert.fullchain).map_err(|e| Failure::Live(Arc::new(e)))?;
    check_target(cert, &leaf, None).await
}

/// The environment of a health command: which certificate, and the leaf it must see.
fn health_env(cert: &Certificate, expected: &Cert) -> Vec<(String, String)> {
    vec![
        ("CERTKEEPER_CERTIFICATE".into(), cert.name.clone()),
        (
            "CERTKEEPER_FINGERPRINT".into(),
            expected.fingerprint.clone(),
        ),
        (
            "CERTKEEPER_FULLCHAIN".into(),
            cert.fullchain.display().to_string(),
        ),
        (
            "CERTKEEPER_PRIVKEY".into(),
            cert.privkey.display().to_string(),
        ),
    ]
}

/// The reload of one group: its command and the longest timeout its certificates allow.
pub struct Reloader {
    reload: Option<config::Reload>,
}

impl Reloader {
    fn for_group(staged: &[Pending]) -> Reloader {
        let reload = staged.first().and_then(|p| p.item.cert.reload.clone());
        let reload = reload.map(|mut r| {
            for p in staged {
                if let Some(other) = &p.item.cert.reload {
                    r.timeout = r.timeout.max(other.timeout);
                }
            }
            r
        });
        Reloader { reload }
    }

    /// A reloader for one configured certificate.
    pub fn for_certificate(cert: &Certificate) -> Reloader {
        Reloader {
            reload: cert.reload.clone(),
        }
    }

    async fn run(&self, staged: &[Pending]) -> Option<Result<(), reload::CommandError>> {
        let refs: Vec<&Pending> = staged.iter().collect();
        self.run_for(&refs).await
    }

    async fn run_for(&self, staged: &[&Pending]) -> Option<Result<(), reload::CommandError>> {
        let names: Vec<&str> = staged.iter().map(|p| p.item.cert.name.as_str()).collect();
        self.run_names(&names).await
    }

    /// Runs the reload command, if there is one, for the named certificates (passed in
    /// `CERTKEEPER_CERTIFICATES`, space-separated). `None` when nothing is configured.
    pub async fn run_names(&self, names: &[&str]) -> Option<Result<(), reload::CommandError>> {
        let r = self.reload.as_ref()?;
        let env = vec![("CERTKEEPER_CERTIFICATES".to_owned(), names.join(" "))];
        let result = reload::run("reload", &r.command, &env, r.timeout).await;
        match &result {
            Ok(ran) => tracing::info!(
                certificates = names.len(),
                elapsed_ms = ran.elapsed.as_millis() as u64,
                "Reloaded the service."
            ),
            Err(e) => tracing::warn!(certificates = names.len(), "Reload failed: {e}"),
        }
        Some(result.map(|_| ()))
    }
}

/// A health command gets at least this long, even when the TLS check used up the timeout.
const MIN_HEALTH_TIME: Duration = Duration::from_secs(1);
