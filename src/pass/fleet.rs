//! Fleet: the way before the swap of a certificate shared by the fleet (`fleet: true`). The
//! fleet's etcd decides ([`certkeeper_fleet::Fleet::decide`]): this host issues and publishes
//! a new generation (then deploys it first, as the canary), deploys a published one, goes
//! back to an earlier one, or waits. Material from etcd is opened with the fleet key and
//! checked like material from a CA before it is deployed; after the deploy, the host reports
//! its result (see `batch`).

use std::sync::Arc;

use certkeeper_fleet::protocol::{Rules, Step as FleetStep};
use certkeeper_fleet::{Fleet, Generation, HostResult, SealedKey};
use time::OffsetDateTime;

use super::check::{self, Ready};
use super::kept::Kept;
use super::obtain::{self, Obtained};
use super::{Failure, Options, Outcome, Step, plan};
use crate::config::{Certificate, Config};
use crate::fleet::{SealKey, Timeouts, connect, seal};
use crate::issuer::Issuers;

/// What a pass shares for the fleet: its connection and the fleet key, set up once.
pub(super) struct Link {
    /// The connection; `Err` with one line when there is none.
    fleet: Result<Fleet, String>,
    /// The fleet key; `Err` with one line when it cannot be loaded.
    key: Result<SealKey, String>,
    rules: Rules,
    /// The fleet's name, for the sealed keys' identity.
    name: String,
    seal_key_file: std::path::PathBuf,
    /// What this pass learnt of etcd (see [`Link::health`]).
    health: std::sync::Mutex<Option<Result<(), String>>>,
    /// The generations this host's judgement marked bad in this pass (see [`Link::marked`]).
    marked: std::sync::Mutex<Vec<Marked>>,
    /// Why etcd could not be read at the start of the pass (no member answered, no
    /// quorum): every shared certificate waits then, without asking again.
    unreachable: Option<String>,
}

/// What this host reports to the fleet after trying a generation.
pub(super) enum Report<'a> {
    /// It serves the generation now.
    Deployed,
    /// It left this (bad) generation for generation `to`, which it serves now.
    Reverted { to: u64 },
    /// It could not deploy the generation, and why; it still serves its live pair.
    Failed { why: &'a str },
}

/// A generation this host's judgement marked bad: what its `fleet_generation_bad` alert says.
pub(super) struct Marked {
    pub(super) cert: String,
    pub(super) serial: u64,
    /// Each host that failed it, with why (one line each, as the hosts reported it).
    pub(super) failed: Vec<(String, Option<String>)>,
    /// The verdict's own words, for when the hosts' results could not be read.
    pub(super) why: String,
}

impl Link {
    /// Connects when some of `selected` is shared and the config has a `fleet:` section;
    /// `None` otherwise (nothing asks etcd). A dry run never asks it either.
    pub(super) async fn open(
        config: &Config,
        selected: &[Certificate],
        opts: &Options,
    ) -> Option<Arc<Link>> {
        let section = config.fleet.as_ref()?;
        if opts.dry_run || !selected.iter().any(|c| c.fleet) {
            return None;
        }
        let fleet = connect(section, Timeouts::DEFAULT)
            .await
            .map_err(|e| e.to_string());
        let unreachable = match &fleet {
            Ok(fleet) => prefetch(fleet, selected).await,
            Err(_) => None,
        };
        let key = SealKey::load(&section.seal_key_file).map_err(|e| e.to_string());
        Some(Arc::new(Link {
            fleet,
            key,
            rules: Rules {
                lease_ttl: section.lease_ttl,
                canary: section.canary,
                max_failures: section.max_failures,
            },
            name: section.name.clone(),
            seal_key_file: section.seal_key_file.clone(),
            health: std::sync::Mutex::new(None),
            marked: std::sync::Mutex::new(Vec::new()),
            unreachable,
        }))
    }

    /// Reports this host's result for generation `serial` of `cert`, with the generation it
    /// serves now (after a failure: its live leaf's, when that is a kept generation); then
    /// judges the generation at once. A failure to report is a warning (the verdict waits
    /// for the report of the next pass).
    pub(super) async fn report(&self, cert: &Certificate, serial: u64, report: Report<'_>) {
        let Ok(fleet) = &self.fleet else { return };
        let (result, serving, why) = match report {
            Report::Deployed => (HostResult::Deployed, Some(serial), None),
            Report::Reverted { to } => (
                HostResult::Reverted,
                Some(to),
                Some(format!(
                    "generation {serial} is bad; back to generation {to}"
                )),
            ),
            Report::Failed { why } => (
                HostResult::Failed,
                serving_here(fleet, cert).await,
                Some(why.to_owned()),
            ),
        };
        if let Err(e) = fleet
            .report_result(&cert.name, serial, result, serving, why.as_deref())
            .await
        {
            tracing::warn!(cert = %cert.name, serial, "Cannot report this host's result to the fleet: {}", crate::fleet::connect::brief(&e));
            return;
        }
        // A generation left for being bad stays bad: there is nothing to judge.
        if result != HostResult::Reverted {
            self.judge(fleet, &cert.name, serial).await;
        }
    }

    /// The verdict at once, from the results so far: a canary that served it makes it good,
    /// one failure too many makes it bad (otherwise the next host that asks judges). A bad
    /// verdict this judgement wrote is noted for its alert.
    async fn judge(&self, fleet: &Fleet, cert: &str, serial: u64) {
        match fleet.judge_here(cert, serial, &self.rules).await {
            Ok((certkeeper_fleet::Verdict::Bad { why, .. }, wrote)) => {
                tracing::warn!(
                    cert = %cert,
                    serial,
                    "Fleet: generation {serial} is marked bad; every host that took it goes back: {}",
                    crate::text::escape_line(&why)
                );
                if !wrote {
                    return;
                }
                let failed = match fleet.results(cert, serial).await {
                    Ok(results) => results
                        .into_iter()
                        .filter(|r| r.result == HostResult::Failed)
                        .map(|r| (r.host, r.why))
                        .collect(),
                    Err(_) => Vec::new(),
                };
                if let Ok(mut marked) = self.marked.lock() {
                    marked.push(Marked {
                        cert: cert.to_owned(),
                        serial,
                        failed,
                        why,
                    });
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(cert = %cert, serial, "Cannot judge generation {serial} for the fleet: {}", crate::fleet::connect::brief(&e))
            }
        }
    }

    /// The generations this host's judgement marked bad so far in this pass, taken once.
    pub(super) fn marked(&self) -> Vec<Marked> {
        self.marked
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default()
    }

    /// The fleet's name.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// What this pass learnt of the fleet's etcd: `None` when it did not ask it,
    /// `Some(Err(why))` when a request found it unreachable or without a quorum (whatever
    /// the others found), `Some(Ok(()))` when it answered every time.
    pub(super) fn health(&self) -> Option<Result<(), String>> {
        self.health.lock().ok().and_then(|h| h.clone())
    }

    /// Notes that etcd answered (`Ok`) or could not be reached (`Err(why)`); the first
    /// reason it could not be reached is kept.
    fn note(&self, answer: Result<(), String>) {
        if let Ok(mut health) = self.health.lock() {
            match (&*health, answer) {
                (Some(Err(_)), _) => {}
                (_, answer) => *health = Some(answer),
            }
        }
    }

    /// Generation `g`'s private key of certificate `cert`, opened with the fleet key.
    fn open_key(&self, cert: &str, g: &Generation) -> Result<Vec<u8>, Failure> {
        let Ok(key) = &self.key else {
            return Err(seal_failure(self));
        };
        let identity = self.identity(cert, g.serial, &g.fingerprint);
        seal::open(key, &g.sealed_key.0, &identity)
            .map(|plain| plain.to_vec())
            .map_err(|e| {
                Failure::Fleet(format!(
                    "seal key file {}: generation {}: {e}",
                    self.seal_key_file.display(),
                    g.serial
                ))
            })
    }

    /// The identity a generation's sealed key is bound to.
    fn identity(&self, cert: &str, serial: u64, fingerprint: &str) -> Vec<u8> {
        format!("{}/{cert}/{serial}/{fingerprint}", self.name).into_bytes()
    }
}

/// The way before the swap of shared certificate `cert`, after the plan: what the fleet
/// decides, and the checked material to deploy when there is some.
#[allow(clippy::too_many_arguments)] // the stages' shared inputs, each borrowed once
pub(super) async fn prepare(
    link: &Link,
    config: &Config,
    kept: &Kept,
    cert: &Certificate,
    issuers: &Issuers,
    opts: &Options,
    now: OffsetDateTime,
    live: &mut plan::Live,
) -> Step {
    let fleet = match &link.fleet {
        Ok(fleet) => fleet,
        Err(e) => {
            let why = format!("no connection to the fleet's etcd: {e}");
            link.note(Err(why.clone()));
            return wait(cert, why, Some(now + link.rules.lease_ttl));
        }
    };
    let live_fp = live.leaf.as_ref().map(|l| l.fingerprint.clone());
    let live_not_before = live.leaf.as_ref().map(|l| l.not_before);
    // Whether this host's own pair is due, by the usual rules (a missing or broken leaf,
    // the CA's window, before_expiry); a generation this host does not serve is judged by
    // its notAfter.
    let not_due = plan::not_due(config, kept, cert, issuers, live, now).await;
    let locally_due = opts.force || not_due.is_none();
    // When this host's own pair becomes due, when it is not due now.
    let renew_after = match not_due {
        Some(Outcome::NotDue { renew_after }) => Some(renew_after),
        _ => None,
    };
    // Within `lease_ttl`, what another host holds (a leadership, a canary slot) is given
    // back or done; a host without etcd asks again then too.
    let soon = Some(now + link.rules.lease_ttl);
    let before_expiry = config.renewal.before_expiry;
    let due = |current: Option<&Generation>| match current {
        None => locally_due,
        Some(g) if live_fp.as_deref() == Some(g.fingerprint.as_str()) => locally_due,
        Some(g) => generation_due(g, before_expiry, now),
    };
    let step = match ask(link, fleet, cert, live_fp.as_deref(), due, soon).await {
        Ok(step) => step,
        Err(wait) => return wait,
    };
    match step {
        FleetStep::Issue(issue) => {
            let ctx = Leading {
                link,
                fleet,
                kept,
                cert,
                issuers,
            };
            lead(&ctx, issue, opts, now, live).await
        }
        FleetStep::Deploy { generation, .. } => {
            deploy(link, kept, cert, issuers, generation, live_not_before, now).await
        }
        // Going back is older material by design: the older-material rule does not apply.
        FleetStep::Revert { from, to } => revert(link, kept, cert, issuers, from, to, now).await,
        FleetStep::Wait { why } => {
            let next = match why {
                // Nothing is published and this host's pair is not due: when it is.
                certkeeper_fleet::protocol::Wait::Unpublished => renew_after,
                // A new generation comes through the watch; this host's pair may become
                // due before.
                certkeeper_fleet::protocol::Wait::NothingGood { .. } => renew_after.or(soon),
                _ => soon,
            };
            wait(cert, why.to_string(), next)
        }
        FleetStep::UpToDate { serial } => Step::Done(Outcome::FleetWait {
            why: format!("serves generation {serial}, the fleet's current one"),
            next: renew_after,
        }),
    }
}

/// What the fleet decides for `cert`, noting whether etcd answered; `Err` with this
/// certificate's wait when etcd cannot tell (no quorum, no answer).
async fn ask(
    link: &Link,
    fleet: &Fleet,
    cert: &Certificate,
    live_fp: Option<&str>,
    due: impl Fn(Option<&Generation>) -> bool,
    soon: Option<OffsetDateTime>,
) -> Result<FleetStep, Step> {
    if let Some(reason) = &link.unreachable {
        let why = certkeeper_fleet::protocol::Wait::NoQuorum {
            reason: reason.clone(),
        };
        link.note(Err(why.to_string()));
        return Err(wait(cert, why.to_string(), soon));
    }
    match fleet.decide(&cert.name, live_fp, &link.rules, due).await {
        Ok(FleetStep::Wait {
            why: why @ certkeeper_fleet::protocol::Wait::NoQuorum { .. },
        }) => {
            link.note(Err(why.to_string()));
            Err(wait(cert, why.to_string(), soon))
        }
        Ok(step) => {
            link.note(Ok(()));
            Ok(step)
        }
        Err(e) => {
            let why = crate::fleet::connect::brief(&e);
            if e.is_unavailable() {
                link.note(Err(why.clone()));
            }
            Err(wait(cert, why, soon))
        }
    }
}

/// Reads what the shared certificates of `selected` have in etcd in a few requests, for
/// their decisions. When etcd cannot be reached or has no quorum, why (then no decision
/// asks again: each would wait its own timeout for the same answer); on another error each
/// decision reads for itself.
async fn prefetch(fleet: &Fleet, selected: &[Certificate]) -> Option<String> {
    let shared: Vec<&str> = selected
        .iter()
        .filter(|c| c.fleet)
        .map(|c| c.name.as_str())
        .collect();
    match fleet.prefetch(&shared).await {
        Ok(()) => None,
        Err(e) if e.is_unavailable() => Some(e.to_string()),
        Err(e) => {
            tracing::debug!(
                "Fleet: reading every shared certificate at once failed ({}); each is read alone.",
                crate::fleet::connect::brief(&e)
            );
            None
        }
    }
}

/// What a leading host works with.
struct Leading<'a> {
    link: &'a Link,
    fleet: &'a Fleet,
    kept: &'a Kept,
    cert: &'a Certificate,
    issuers: &'a Issuers,
}

/// This host leads the certificate's issuance: it orders (or takes its kept material),
/// checks and seals the new material, publishes it as the next generation and deploys it
/// here first, as the canary. Every way out before the publish gives up the leadership.
async fn lead(
    ctx: &Leading<'_>,
    issue: Box<certkeeper_fleet::protocol::Issue>,
    opts: &Options,
    now: OffsetDateTime,
    live: &plan::Live,
) -> Step {
    let serial = issue.next_serial();
    let track = OrderTrack::new(ctx, &issue);
    let made = sealed_material(ctx, &track, serial, opts, now, live).await;
    drop(track);
    let (ready, sealed) = match made {
        Ok(done) => done,
        Err(step) => {
            issue.leadership.resign().await;
            return step;
        }
    };
    let generation = Generation {
        serial,
        fingerprint: ready.leaf.fingerprint.clone(),
        not_after: ready.leaf.not_after,
        issued_by: ctx.fleet.host().to_owned(),
        issued_at: now,
        fullchain_pem: String::from_utf8_lossy(&ready.fullchain).into_owned(),
        sealed_key: SealedKey(sealed),
        verdict: certkeeper_fleet::Verdict::Pending,
    };
    match ctx.fleet.publish_new(issue, generation).await {
        Ok(serial) => {
            tracing::info!(cert = %ctx.cert.name, serial, "Published generation {serial} for the fleet; deploying it here first, as the canary.");
            let mut ready = ready;
            ready.fleet = Some(serial);
            // Lines and alerts of the deploy name the canary host and the generation.
            ready.source = format!(
                "{} (fleet generation {serial}, canary host {})",
                ready.source,
                ctx.fleet.host()
            );
            Step::Deploy(ready)
        }
        // The material stays kept (a CA's) for the next pass.
        Err(e) => Step::Done(Outcome::Failed {
            error: Failure::Fleet(format!(
                "publishing the new generation: {}",
                crate::fleet::connect::brief(&e)
            )),
        }),
    }
}

/// New material for generation `serial`, checked, with its key sealed for the fleet; `Err`
/// with where this certificate's pass ends.
async fn sealed_material(
    ctx: &Leading<'_>,
    track: &OrderTrack<'_>,
    serial: u64,
    opts: &Options,
    now: OffsetDateTime,
    live: &plan::Live,
) -> Result<(Box<Ready>, Vec<u8>), Step> {
    let failed = |error| Step::Done(Outcome::Failed { error });
    check::targets(&ctx.kept.state_dir, ctx.cert).map_err(failed)?;
    if let Some(outcome) = plan::too_new(live.leaf.as_ref(), now) {
        return Err(Step::Done(outcome));
    }
    // Without the fleet key nothing ordered could be published: no order.
    let Ok(key) = &ctx.link.key else {
        return Err(failed(seal_failure(ctx.link)));
    };
    let live_not_before = live.leaf.as_ref().map(|l| l.not_before);
    let ready = issue_checked(ctx, track, opts, now, live_not_before)
        .await
        .map_err(Step::Done)?;
    let identity = ctx
        .link
        .identity(&ctx.cert.name, serial, &ready.leaf.fingerprint);
    let sealed = seal::seal(key, &ready.privkey, &identity)
        .map_err(|e| failed(Failure::Fleet(format!("sealing the new key: {e}"))))?;
    Ok((ready, sealed))
}

/// Goes back from bad generation `from` to generation `to`: deployed as a published one, its
/// lines saying so, and reported as reverted.
#[allow(clippy::too_many_arguments)] // the stages' shared inputs, each borrowed once
async fn revert(
    link: &Link,
    kept: &Kept,
    cert: &Certificate,
    issuers: &Issuers,
    from: u64,
    to: Generation,
    now: OffsetDateTime,
) -> Step {
    tracing::warn!(cert = %cert.name, "Fleet: generation {from} is bad; going back to generation {}.", to.serial);
    match deploy(link, kept, cert, issuers, to, None, now).await {
        Step::Deploy(mut ready) => {
            ready.reverting = Some(from);
            ready.source = format!("{}, back from bad generation {from}", ready.source);
            Step::Deploy(ready)
        }
        other => other,
    }
}

/// Whether a generation this host does not serve is due by `before_expiry` (its leaf read
/// from its chain; one that does not read is due).
fn generation_due(
    g: &Generation,
    before_expiry: crate::config::BeforeExpiry,
    now: OffsetDateTime,
) -> bool {
    match crate::x509::read_certificates(g.fullchain_pem.as_bytes()) {
        Ok((chain, _)) => match chain.first() {
            Some(leaf) => crate::schedule::due(leaf, None, before_expiry, now).now,
            None => true,
        },
        Err(_) => true,
    }
}

/// Nothing to do for the fleet now: what is served stays; `next`: when to look again
/// without news from the fleet.
fn wait(cert: &Certificate, why: String, next: Option<OffsetDateTime>) -> Step {
    tracing::warn!(cert = %cert.name, "Fleet: keeping what is served: {why}");
    Step::Done(Outcome::FleetWait { why, next })
}

/// Why this host cannot seal or open: its fleet key.
fn seal_failure(link: &Link) -> Failure {
    match &link.key {
        Err(e) => Failure::Fleet(e.clone()),
        Ok(_) => Failure::Fleet(format!(
            "seal key file {}: {}",
            link.seal_key_file.display(),
            seal::SealError::Open
        )),
    }
}

/// New material for the fleet, checked: kept from an earlier pass of this host first, then
/// the issuers (the order recorded in etcd, and one a dead leader left resumed).
async fn issue_checked(
    ctx: &Leading<'_>,
    track: &OrderTrack<'_>,
    opts: &Options,
    now: OffsetDateTime,
    live_not_before: Option<OffsetDateTime>,
) -> Result<Box<Ready>, Outcome> {
    let (kept, cert, issuers) = (ctx.kept, ctx.cert, ctx.issuers);
    if let Some(obtained) = obtain::kept_material(kept, cert) {
        match check::material(issuers, cert, obtained, live_not_before, now).await {
            Ok(ready) => return Ok(ready),
            Err(rejected) => obtain::discard_kept(kept, cert, opts, &rejected),
        }
    }
    let obtained = obtain::issue(kept, cert, issuers, opts, now, Some(track)).await?;
    let (source, was_kept) = (obtained.source.clone(), obtained.kept);
    check::material(issuers, cert, obtained, live_not_before, now)
        .await
        .map_err(|rejected| obtain::refused(kept, cert, source, was_kept, rejected))
}

/// Deploys a published generation: its key opened with the fleet key, and the whole checked
/// as material from a CA is. A refusal is reported to the fleet as this host's failure.
async fn deploy(
    link: &Link,
    kept: &Kept,
    cert: &Certificate,
    issuers: &Issuers,
    generation: Generation,
    live_not_before: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Step {
    let serial = generation.serial;
    let source = format!(
        "fleet generation {serial} (issued by {})",
        generation.issued_by
    );
    let privkey = match link.open_key(&cert.name, &generation) {
        Ok(privkey) => privkey,
        Err(error) => return refused(link, cert, serial, error).await,
    };
    if let Err(e) = check::targets(&kept.state_dir, cert) {
        return Step::Done(Outcome::Failed { error: e });
    }
    let obtained = Obtained {
        fullchain: generation.fullchain_pem.into_bytes(),
        privkey,
        source: source.clone(),
        issuer: String::new(),
        staging: false,
        kept: false,
    };
    match check::material(issuers, cert, obtained, live_not_before, now).await {
        Ok(mut ready) => {
            ready.fleet = Some(serial);
            Step::Deploy(ready)
        }
        Err(rejected) => {
            let error = Failure::Material {
                issuer: source,
                rejected,
            };
            refused(link, cert, serial, error).await
        }
    }
}

/// This host refuses generation `serial` of `cert` for `error`: it reports the failure to
/// the fleet, and the certificate's pass ends with it.
async fn refused(link: &Link, cert: &Certificate, serial: u64, error: Failure) -> Step {
    let why = error.to_string();
    link.report(cert, serial, Report::Failed { why: &why })
        .await;
    Step::Done(Outcome::Failed { error })
}

/// The fleet's record of a certificate's order in flight, for a leading host: it records the
/// order this host places (with the account that placed it, sealed with the fleet key), and
/// hands over the order a dead leader left, so that it is resumed rather than placed again.
struct OrderTrack<'a> {
    ctx: &'a Leading<'a>,
    leadership: &'a certkeeper_fleet::Leadership,
    /// The issuer and the order a dead leader left, when its account opens with the fleet key.
    left: Option<(String, crate::acme::Resume)>,
}

impl<'a> OrderTrack<'a> {
    fn new(ctx: &'a Leading<'a>, issue: &'a certkeeper_fleet::protocol::Issue) -> Self {
        let left = issue.order.as_ref().and_then(|record| {
            let key = ctx.link.key.as_ref().ok()?;
            let Some(sealed) = &record.account else {
                tracing::info!(cert = %ctx.cert.name, host = %record.host, "The order in flight left by {} cannot be resumed (its account is not shared); ordering again.", record.host);
                return None;
            };
            let identity = order_identity(ctx.link, &ctx.cert.name, &record.order);
            match seal::open(key, &sealed.0, &identity) {
                Ok(account) => Some((
                    record.issuer.clone(),
                    crate::acme::Resume {
                        order_url: record.order.clone(),
                        account,
                    },
                )),
                Err(e) => {
                    tracing::warn!(cert = %ctx.cert.name, host = %record.host, "The order in flight left by {} cannot be resumed: seal key file {}: {e}", record.host, ctx.link.seal_key_file.display());
                    None
                }
            }
        });
        OrderTrack {
            ctx,
            leadership: &issue.leadership,
            left,
        }
    }
}

impl crate::acme::Track for OrderTrack<'_> {
    fn resume(&self, issuer: &str) -> Option<&crate::acme::Resume> {
        self.left
            .as_ref()
            .filter(|(by, _)| by == issuer)
            .map(|(_, resume)| resume)
    }

    fn placed<'b>(
        &'b self,
        issuer: &'b str,
        order_url: &'b str,
        account: Option<&'b [u8]>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'b>> {
        Box::pin(async move {
            let (link, cert) = (self.ctx.link, &self.ctx.cert.name);
            let identity = order_identity(link, cert, order_url);
            let sealed = match (&link.key, account) {
                (Ok(key), Some(account)) => seal::seal(key, account, &identity).ok().map(SealedKey),
                _ => None,
            };
            let recorded = self
                .ctx
                .fleet
                .set_order(self.leadership, order_url, issuer, sealed)
                .await;
            if let Err(e) = recorded {
                tracing::warn!(cert = %cert, "Cannot record the order in flight in the fleet's etcd (a host that takes over orders again): {}", crate::fleet::connect::brief(&e));
            }
        })
    }
}

/// The identity an order's sealed account is bound to.
fn order_identity(link: &Link, cert: &str, order_url: &str) -> Vec<u8> {
    format!("{}/{cert}/order/{order_url}", link.name).into_bytes()
}

/// The generation this host serves of `cert`: its live leaf's, when that is the current
/// generation or one etcd keeps; `None` when nothing is live, the leaf is none of them, or
/// etcd does not tell.
async fn serving_here(fleet: &Fleet, cert: &Certificate) -> Option<u64> {
    let live = crate::x509::leaf_of_file(&cert.fullchain).ok()?;
    let (current, _) = fleet.current(&cert.name).await.ok()??;
    crate::fleet::view::serial_of(fleet, &cert.name, &current, &live.fingerprint)
        .await
        .ok()?
}
