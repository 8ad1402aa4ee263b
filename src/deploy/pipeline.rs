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
    /// Nothing whole was live before, so there was nothing to go back to: the new pair
    /// stays live, but its reload or verification failed. The next pass reloads and
    /// verifies it again, without ordering.
    Unserved {
        /// Why it is not known to be served.
        cause: Failure,
        /// What the deploy did.
        done: Renewed,
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
    /// Swapped in without reload or verification (`renew --no-reload`).
    pub unverified: bool,
}

impl Renewed {
    /// A pair an earlier deploy left live, now served.
    fn of_live(leaf: &Cert) -> Renewed {
        Renewed {
            not_after: crate::text::rfc3339(leaf.not_after),
            fingerprint: leaf.fingerprint.clone(),
            snapshot: None,
            adopted: false,
            warnings: Vec::new(),
            unverified: false,
        }
    }
}

impl Outcome {
    /// The word used in state records and events: `renewed`, `rolled_back`,
    /// `rollback_failed` or `failed`.
    pub fn event(&self) -> &'static str {
        match self {
            Outcome::Renewed(_) => "renewed",
            Outcome::RolledBack { .. } => "rolled_back",
            Outcome::RollbackFailed { .. } => "rollback_failed",
            Outcome::Unserved { .. } | Outcome::Failed { .. } => "failed",
        }
    }
}

/// A certificate whose live pair an earlier deploy left in place unserved (nothing whole was
/// live before it, and its reload or verification failed): reloaded and verified again with
/// its group, nothing staged.
#[derive(Clone, Debug)]
pub struct Retry {
    /// The configured certificate.
    pub cert: Certificate,
    /// The live leaf, which the service must serve.
    pub leaf: Cert,
    /// The roots the served chain must reach.
    pub trust: Arc<TrustStore>,
}

/// Deploys every item: grouped by reload command, each group staged, reloaded once, and
/// verified; the `retries` of a group are reloaded and verified with it. With `no_reload`,
/// items are swapped in and committed without reload or verification. Returns each name
/// and outcome, in no particular order; the items of groups not started when `stop` is
/// requested are left out (their material stays kept for the next pass), while a group in
/// flight always finishes.
pub async fn deploy_all(
    locked: &Locked<'_>,
    items: Vec<Item>,
    retries: Vec<Retry>,
    no_reload: bool,
    stop: &CancellationToken,
) -> Vec<(String, Outcome)> {
    type Group = (Vec<Item>, Vec<Retry>);
    let mut groups: BTreeMap<Option<Vec<String>>, Group> = BTreeMap::new();
    for item in items {
        let key = item.cert.reload.as_ref().map(|r| r.command.clone());
        groups.entry(key).or_default().0.push(item);
    }
    for retry in retries {
        let key = retry.cert.reload.as_ref().map(|r| r.command.clone());
        groups.entry(key).or_default().1.push(retry);
    }
    let mut out = Vec::new();
    for (_, (items, retries)) in groups {
        if stop.is_cancelled() {
            break;
        }
        let staged = stage_group(locked, items, &mut out);
        if no_reload {
            out.extend(commit_unverified(locked, staged).await);
        } else {
            out.extend(deploy_group(locked, staged, retries).await);
        }
    }
    out
}

/// A certificate switched in and waiting for its verdict.
struct Pending {
    item: Item,
    staged: Staged,
}

/// Pairs refused after the swap, each with why.
type Refused = Vec<(Pending, Failure)>;

/// Stages a group's pairs together (their fsyncs are batched); a pair that fails to stage
/// gets its outcome in `out`.
fn stage_group(
    locked: &Locked<'_>,
    items: Vec<Item>,
    out: &mut Vec<(String, Outcome)>,
) -> Vec<Pending> {
    let results = tokio::task::block_in_place(|| {
        let pairs: Vec<(&store::PairSpec, &[u8], &[u8])> = items
            .iter()
            .map(|i| (&i.spec, i.fullchain.as_slice(), i.privkey.as_slice()))
            .collect();
        locked.stage_all(&pairs)
    });
    let mut staged = Vec::new();
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
    staged
}

/// `renew --no-reload`: the staged pairs are committed as they are, neither reloaded nor
/// verified.
async fn commit_unverified(locked: &Locked<'_>, staged: Vec<Pending>) -> Vec<(String, Outcome)> {
    let (mut out, refused) = commit(locked, staged, |mut done| {
        done.unverified = true;
        Outcome::Renewed(done)
    });
    if !refused.is_empty() {
        out.extend(revert_all(locked, &Reloader { reload: None }, refused).await);
    }
    out
}

/// Deploys one group of staged pairs that share one reload command (or have none), with the
/// group's retries.
async fn deploy_group(
    locked: &Locked<'_>,
    staged: Vec<Pending>,
    retries: Vec<Retry>,
) -> Vec<(String, Outcome)> {
    let mut out = Vec::new();
    if staged.is_empty() && retries.is_empty() {
        return out;
    }
    let (reload, names, checked) = {
        let certs: Vec<&Certificate> = staged
            .iter()
            .map(|p| &p.item.cert)
            .chain(retries.iter().map(|r| &r.cert))
            .collect();
        let names: Vec<String> = certs.iter().map(|c| c.name.clone()).collect();
        // Whether anything is reloaded or verified at all.
        let checked = certs
            .iter()
            .any(|c| c.reload.is_some() || c.verify.is_some());
        (Reloader::for_group(&certs), names, checked)
    };
    let names: Vec<&str> = names.iter().map(String::as_str).collect();

    let started = Instant::now();
    if let Some(Err(e)) = reload.run_names(&names).await {
        let cause = Failure::Reload(Arc::new(e));
        for r in retries {
            let done = Renewed::of_live(&r.leaf);
            out.push((r.cert.name.clone(), unserved(cause.clone(), done)));
        }
        let failed = staged.into_iter().map(|p| (p, cause.clone())).collect();
        out.extend(refuse(locked, &reload, failed).await);
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
    let retried = join_all(
        retries
            .iter()
            .map(|r| check_target(&r.cert, &r.leaf, Some(&r.trust))),
    )
    .await;
    if checked {
        tracing::info!(
            certificates = names.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Reloaded and verified."
        );
    }
    for (r, verdict) in retries.into_iter().zip(retried) {
        let done = Renewed::of_live(&r.leaf);
        let outcome = match verdict {
            Ok(()) => Outcome::Renewed(done),
            Err(cause) => unserved(cause, done),
        };
        out.push((r.cert.name.clone(), outcome));
    }
    let mut accepted = Vec::new();
    for (p, verdict) in staged.into_iter().zip(verdicts) {
        match verdict {
            Err(cause) => refused.push((p, cause)),
            Ok(()) => accepted.push(p),
        }
    }
    let (done, failed) = commit(locked, accepted, Outcome::Renewed);
    out.extend(done);
    refused.extend(failed);
    if !refused.is_empty() {
        out.extend(refuse(locked, &reload, refused).await);
    }
    out
}

/// The outcome of a pair left in place unserved.
fn unserved(cause: Failure, done: Renewed) -> Outcome {
    Outcome::Unserved { cause, done }
}

/// Commits staged pairs (the group's commits share one sync); each committed one's outcome
/// is `outcome` of what the deploy did, and those whose commit failed are returned to be
/// reverted. Commit removes the journal, which cannot be undone; a failure there leaves the
/// stage open.
fn commit(
    locked: &Locked<'_>,
    accepted: Vec<Pending>,
    outcome: impl Fn(Renewed) -> Outcome,
) -> (Vec<(String, Outcome)>, Refused) {
    let committed = tokio::task::block_in_place(|| {
        locked.commit_all(
            accepted
                .iter()
                .map(|p| (&p.item.spec, p.staged.clone()))
                .collect(),
        )
    });
    let mut out = Vec::new();
    let mut refused = Vec::new();
    for (p, result) in accepted.into_iter().zip(committed) {
        match result {
            Ok(done) => out.push((
                p.item.cert.name.clone(),
                outcome(Renewed {
                    not_after: done.manifest.not_after,
                    fingerprint: done.manifest.fingerprint,
                    snapshot: done.snapshot.map(|s| s.id),
                    adopted: done.adopted,
                    warnings: done.warnings,
                    unverified: false,
                }),
            )),
            Err(e) => refused.push((p, Failure::Commit(Arc::new(e)))),
        }
    }
    (out, refused)
}

/// Refused pairs: one that replaced nothing whole, refused by its reload or verification,
/// stays in place (there is nothing better to go back to; the next pass reloads and
/// verifies it again); the others are reverted.
async fn refuse(
    locked: &Locked<'_>,
    reload: &Reloader,
    refused: Vec<(Pending, Failure)>,
) -> Vec<(String, Outcome)> {
    let (first, others): (Vec<_>, Vec<_>) = refused.into_iter().partition(|(p, cause)| {
        p.staged.previous.is_none() && matches!(cause, Failure::Reload(_) | Failure::Verify(_))
    });
    let mut out = Vec::new();
    let mut revert = others;
    let causes: BTreeMap<String, Failure> = first
        .iter()
        .map(|(p, c)| (p.item.cert.name.clone(), c.clone()))
        .collect();
    let (kept, failed) = commit(
        locked,
        first.into_iter().map(|(p, _)| p).collect(),
        Outcome::Renewed,
    );
    for (name, outcome) in kept {
        let (Outcome::Renewed(done), Some(cause)) = (outcome, causes.get(&name)) else {
            continue;
        };
        tracing::warn!(cert = %name, "Nothing was live before: the new pair stays in place, unserved; the next pass reloads and verifies it again.");
        out.push((name, unserved(cause.clone(), done)));
    }
    // A pair whose commit failed goes back with the cause it was refused for.
    for (p, commit_failure) in failed {
        let cause = causes
            .get(&p.item.cert.name)
            .cloned()
            .unwrap_or(commit_failure);
        revert.push((p, cause));
    }
    if !revert.is_empty() {
        out.extend(revert_all(locked, reload, revert).await);
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
    let names: Vec<&str> = reverted
        .iter()
        .map(|(p, _, _)| p.item.cert.name.as_str())
        .collect();
    let reloaded = reload.run_names(&names).await.map(|r| r.map_err(Arc::new));
    let checks = join_all(reverted.iter().map(|(p, _, r)| {
        let reloaded = &reloaded;
        async move {
            if !r.restored {
                // Nothing was live before this certificate's first deploy: nothing to serve.
                return Ok(None);
            }
            let leaf =
                leaf_of_file(&p.item.cert.fullchain).map_err(|e| Failure::Live(Arc::new(e)))?;
            judge_served(&p.item.cert, &leaf, reloaded).await
        }
    }))
    .await;
    for ((p, cause, r), check) in reverted.into_iter().zip(checks) {
        let name = p.item.cert.name.clone();
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
            // Nothing was live before this deploy, and the new pair could not stay: the
            // host is as it was.
            Ok(_) if !r.restored => Outcome::RolledBack {
                cause,
                note: Some("nothing was live before; the live paths are gone again".into()),
            },
            Err(Failure::Reload(e)) => Outcome::RollbackFailed {
                cause,
                rollback: format!(
                    "the previous pair is back on disk{}, but {}",
                    from_snapshot(&r),
                    reload_failed_again(&e)
                ),
            },
            Err(e) => Outcome::RollbackFailed {
                cause,
                rollback: format!(
                    "the previous pair is back on disk{}, but it is not served: {e}{}",
                    from_snapshot(&r),
                    match &reloaded {
                        Some(Err(e)) => format!("; {}", reload_failed_again(e)),
                        _ => String::new(),
                    }
                ),
            },
            Ok(note) => Outcome::RolledBack {
                cause,
                note: match (note, r.from_snapshot.as_deref()) {
                    (Some(n), _) => Some(n),
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

/// Whether the service serves `leaf`, the pair now live, after a reload that gave
/// `reloaded`: the one judgement of a revert and of a manual rollback. A failed reload
/// fails it only when nothing shows what the service serves (no `verify`); with a verify
/// target, what the service serves decides, and the failed reload is a note (a service
/// whose new config is broken keeps serving what it loaded before).
pub async fn judge_served(
    cert: &Certificate,
    leaf: &Cert,
    reloaded: &Option<Result<(), Arc<reload::CommandError>>>,
) -> Result<Option<String>, Failure> {
    match reloaded {
        Some(Err(e)) if cert.verify.is_none() => Err(Failure::Reload(e.clone())),
        Some(Err(e)) => {
            check_target(cert, leaf, None).await?;
            Ok(Some(format!(
                "{}; the restored certificate is served",
                reload_failed_again(e)
            )))
        }
        _ => check_target(cert, leaf, None).await.map(|()| None),
    }
}

/// A failed reload on the way back, in a few words (its output is in the cause already when
/// the first reload failed the same way).
fn reload_failed_again(e: &reload::CommandError) -> String {
    format!(
        "the reload after the revert failed too: {}",
        e.to_string().lines().next().unwrap_or_default()
    )
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

/// Reloads `cert`'s service (when it has a reload command) and judges whether it serves the
/// leaf of the live fullchain ([`judge_served`], as a revert does): the judgement of a manual
/// rollback. `Ok` with a note when the reload failed but the restored leaf is served.
pub async fn reload_and_check(
    reloader: &Reloader,
    cert: &Certificate,
) -> Result<Option<String>, Failure> {
    let reloaded = reloader
        .run_names(&[cert.name.as_str()])
        .await
        .map(|r| r.map_err(Arc::new));
    let leaf = leaf_of_file(&cert.fullchain).map_err(|e| Failure::Live(Arc::new(e)))?;
    judge_served(cert, &leaf, &reloaded).await
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
    fn for_group(certs: &[&Certificate]) -> Reloader {
        let reload = certs.first().and_then(|c| c.reload.clone());
        let reload = reload.map(|mut r| {
            for c in certs {
                if let Some(other) = &c.reload {
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
            // The output is in the outcome's line: only its first line here, so that a
            // failed reload's output is printed once.
            Err(e) => tracing::warn!(
                certificates = names.len(),
                "Reload failed: {}",
                e.to_string().lines().next().unwrap_or_default()
            ),
        }
        Some(result.map(|_| ()))
    }
}

/// A health command gets at least this long, even when the TLS check used up the timeout.
const MIN_HEALTH_TIME: Duration = Duration::from_secs(1);
