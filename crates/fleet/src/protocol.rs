//! The fleet protocol: for one shared certificate on one host, what to do now ([`Fleet::decide`]),
//! and the writes that move a generation from published to good or bad
//! ([`Fleet::publish_new`], [`Fleet::report_result`], [`Fleet::judge`]).
//!
//! A pass over many shared certificates calls [`Fleet::prefetch`] first: the current and
//! kept generations of all of them in a few requests, each taken by that certificate's next
//! decide.
//!
//! The fleet layer keeps the coordination; the caller keeps the rest: whether a certificate
//! is due (ARI, renewal windows) is a closure the caller passes, and ordering, checking,
//! staging, reloading and verifying are the caller's.
//!
//! Keys it adds under `/certkeeper/<fleet>/certs/<cert>/` (serials zero-padded to 20 digits):
//!
//! | key | value | lifetime |
//! |---|---|---|
//! | `canary/<serial>/<slot>` | the host that holds canary slot `slot` (0 to `canary - 1`) | on that host's lease; freed when the host reports a failure |
//! | `results/<serial>/<host>` | that host's last [`ResultRecord`] for the generation | durable (not on a lease), deleted with the generation |
//!
//! The life of a generation:
//!
//! 1. **Issue.** A host whose `due` closure says so campaigns; the winner gets
//!    [`Step::Issue`] with the current generation, the revision it was read at and the order
//!    in flight (to resume rather than order again). It records a new order with
//!    [`Fleet::set_order`] before waiting for DNS, and publishes with
//!    [`Fleet::publish_new`]: one transaction, guarded on the current generation's revision
//!    and on its leadership, that writes the generation (verdict `pending`), gives the issuer
//!    canary slot 0, deletes the order record and the slots and results of generations no
//!    longer kept. Slot 0 is taken inside the publishing transaction, not after it: no other
//!    host can see the generation pending with slot 0 free, so the issuer is always the first
//!    canary. The leadership is then resigned.
//! 2. **Canary.** While a generation is `pending`, a host that serves it not claims a free
//!    slot with a transaction that creates `canary/<serial>/<slot>` only if absent (and only if
//!    the generation is unchanged since read); with a slot it gets [`Step::Deploy`] with
//!    [`Role::Canary`], without one [`Wait::Pending`]. A host that failed the generation
//!    gives its slot back (another host may try) and claims none again for it.
//! 3. **Results.** After a deploy a host calls [`Fleet::report_result`]: its state under its
//!    lease (as [`Fleet::report`]) and a durable record under `results/`, so that a verdict
//!    still counts a host that died afterwards.
//! 4. **Verdict.** [`Fleet::judge`] (also run by every [`Fleet::decide`] on a pending
//!    generation): `bad` once more than `max_failures` hosts reported a failure (from
//!    `pending` or `good`); else `good` once `canary` hosts reported serving it. A verdict is
//!    written with a transaction guarded on the revision read; the loser of a race reads the
//!    winner's verdict back, so two judges give one verdict. `bad` is final.
//! 5. **Rollout or revert.** A `good` generation is deployed by every host that does not
//!    serve it ([`Role::Rollout`]). When the current generation is `bad`, a host that serves
//!    it gets [`Step::Revert`] to the newest kept generation before it that is not `bad`
//!    (preferring `good`), and a host that does not serve it deploys that one if it serves
//!    nothing of it; nobody deploys a `bad` generation.
//!
//! Without a quorum every step is [`Wait::NoQuorum`]: the host keeps what it serves.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{
    Error, Fleet, Generation, HostResult, HostState, KEPT_GENERATIONS, Leadership, OrderRecord,
    Result, Verdict, call, check_name, from_json, to_json,
};

/// The fleet's rules for one certificate (from the `fleet:` section).
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// The TTL of an issuer's leadership.
    pub lease_ttl: Duration,
    /// Hosts that must serve a generation before it is good (below 1 counts as 1).
    pub canary: usize,
    /// Hosts that may fail a generation before it is bad.
    pub max_failures: usize,
}

impl Rules {
    fn canary(&self) -> usize {
        self.canary.max(1)
    }
}

/// What one host does now for one shared certificate.
#[derive(Debug)]
pub enum Step {
    /// This host leads: order (or resume [`Issue::order`]), check, then
    /// [`Fleet::publish_new`]. Boxed: a leadership holds a client of its own.
    Issue(Box<Issue>),
    /// Deploy this generation (open its sealed key, run the usual checks, stage, reload,
    /// verify), then [`Fleet::report_result`].
    Deploy { generation: Generation, role: Role },
    /// The generation this host serves (`from`) is bad: go back to `to`, then report
    /// [`HostResult::Reverted`].
    Revert { from: u64, to: Generation },
    /// Keep what is served; nothing to do for the fleet now.
    Wait { why: Wait },
    /// This host serves the generation it should.
    UpToDate { serial: u64 },
}

/// Why a host deploys a generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The generation is pending and this host holds canary slot `slot`.
    Canary { slot: usize },
    /// The generation is good.
    Rollout,
}

/// Why a host waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// etcd could not be reached or has no quorum.
    NoQuorum { reason: String },
    /// Another host leads the certificate's issuance (`None`: it resigned meanwhile).
    Leader { host: Option<String> },
    /// Nothing is published and the caller does not want it issued.
    Unpublished,
    /// The generation is pending and this host holds no canary slot.
    Pending { serial: u64 },
    /// The current generation is bad and no kept generation before it may be served.
    NothingGood { bad: u64 },
}

impl std::fmt::Display for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wait::NoQuorum { reason } => write!(f, "no quorum: {reason}"),
            Wait::Leader { host: Some(host) } => write!(f, "host {host} leads the issuance"),
            Wait::Leader { host: None } => f.write_str("another host leads the issuance"),
            Wait::Unpublished => f.write_str("no generation published yet"),
            Wait::Pending { serial } => {
                write!(f, "generation {serial} waits for its canary hosts")
            }
            Wait::NothingGood { bad } => write!(
                f,
                "generation {bad} is bad and no earlier generation is kept to go back to"
            ),
        }
    }
}

/// This host leads a certificate's issuance: what it needs to order or resume, and publish.
#[derive(Debug)]
pub struct Issue {
    /// The leadership; [`Fleet::publish_new`] resigns it.
    pub leadership: Leadership,
    /// The current generation, if any, as read after winning the election.
    pub current: Option<Generation>,
    /// The order a previous leader left in flight: resume it rather than order again.
    pub order: Option<OrderRecord>,
    read: Option<i64>,
}

impl Issue {
    /// The serial the new generation must carry (bind the sealed key to it).
    pub fn next_serial(&self) -> u64 {
        self.current.as_ref().map_or(1, |g| g.serial + 1)
    }
}

/// A host's durable result for one generation: `results/<serial>/<host>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultRecord {
    pub host: String,
    pub result: HostResult,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl Fleet {
    /// Decides what this host does now for shared certificate `cert`. `live` is the SHA-256
    /// (hex) of the leaf this host serves, if any; `due` says whether a new generation is
    /// needed given the current one (the caller's renewal rules); it is asked before
    /// campaigning and again after winning. Without a quorum this is
    /// [`Wait::NoQuorum`], not an error.
    pub async fn decide(
        &self,
        cert: &str,
        live: Option<&str>,
        rules: &Rules,
        due: impl Fn(Option<&Generation>) -> bool,
    ) -> Result<Step> {
        // Boxed: the steps nest many etcd requests, too big a future for a caller's stack.
        match Box::pin(self.decide_now(cert, live, rules, &due)).await {
            Err(e) if e.is_unavailable() => Ok(Step::Wait {
                why: Wait::NoQuorum {
                    reason: e.to_string(),
                },
            }),
            other => other,
        }
    }

    /// Publishes the generation this [`Issue`] was for, as pending, with canary slot 0 for
    /// this host, and resigns the leadership (whatever the outcome). Its serial must be
    /// [`Issue::next_serial`]; the issuer and verdict are set here. Fails with
    /// [`Error::Conflict`] when another generation was published since, or when the
    /// leadership ended.
    pub async fn publish_new(&self, issue: Box<Issue>, mut generation: Generation) -> Result<u64> {
        let cert = issue.leadership.cert().to_owned();
        let result = Box::pin(self.publish_issue(&cert, &issue, &mut generation)).await;
        issue.leadership.resign().await;
        result
    }

    /// Reports this host's result for generation `serial` of `cert`: its state under its
    /// lease (serving `serving`), and a durable record that verdicts count. A failure gives
    /// back the canary slot this host held for the generation.
    pub async fn report_result(
        &self,
        cert: &str,
        serial: u64,
        result: HostResult,
        serving: Option<u64>,
        why: Option<&str>,
    ) -> Result<()> {
        check_name("certificate name", cert)?;
        let at = OffsetDateTime::now_utc();
        let why = why.map(one_line);
        let record = ResultRecord {
            host: self.host.clone(),
            result,
            at,
            why: why.clone(),
        };
        let state = HostState {
            serving,
            result,
            at,
            why,
        };
        let lease = self.host_lease_id().await?;
        // The durable result, and the host's state on its lease.
        let report = || {
            vec![
                TxnOp::put(
                    self.result_key(cert, serial, &self.host),
                    to_json(&record),
                    None,
                ),
                TxnOp::put(
                    self.key(cert, &format!("hosts/{}", self.host)),
                    to_json(&state),
                    Some(PutOptions::new().with_lease(lease)),
                ),
            ]
        };
        let mut ops = report();
        let mut guards = Vec::new();
        if result == HostResult::Failed {
            for (slot, host) in self.slots(cert, serial).await? {
                if host == self.host {
                    let key = self.slot_key(cert, serial, slot);
                    guards.push(Compare::value(
                        key.as_str(),
                        CompareOp::Equal,
                        host.as_str(),
                    ));
                    ops.push(TxnOp::delete(key.as_str(), None));
                }
            }
        }
        let txn = Txn::new().when(guards).and_then(ops);
        if !self.txn("result report", &txn).await?.succeeded() {
            // The slot changed hands between the read and the write: report without it.
            let txn = Txn::new().and_then(report());
            self.txn("result report", &txn).await?;
        }
        Ok(())
    }

    /// Every host's durable result for generation `serial` of `cert`.
    pub async fn results(&self, cert: &str, serial: u64) -> Result<Vec<ResultRecord>> {
        check_name("certificate name", cert)?;
        let prefix = format!("{}/", self.serial_prefix(cert, "results", serial));
        Ok(self
            .range(&prefix)
            .await?
            .into_iter()
            .map(|(_, r, _)| r)
            .collect())
    }

    /// The canary slots of generation `serial` of `cert`: slot and holder, by slot.
    pub async fn slots(&self, cert: &str, serial: u64) -> Result<Vec<(usize, String)>> {
        check_name("certificate name", cert)?;
        let prefix = format!("{}/", self.serial_prefix(cert, "canary", serial));
        let resp = call("canary slots read", self.timeout, &self.client, |mut c| {
            let prefix = prefix.clone();
            async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })
        .await?;
        let mut slots = Vec::new();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key());
            if let Some(Ok(slot)) = key.strip_prefix(&prefix).map(str::parse::<usize>) {
                slots.push((slot, String::from_utf8_lossy(kv.value()).into_owned()));
            }
        }
        slots.sort();
        Ok(slots)
    }

    /// Judges generation `serial` of `cert` from the hosts' durable results and returns its
    /// verdict: `bad` once more than `max_failures` hosts failed it, else `good` once
    /// `canary` hosts serve it, else as it was. Race-safe: the write is guarded on the
    /// revision read, and a judge that loses reads the winner's verdict back.
    pub async fn judge(&self, cert: &str, serial: u64, rules: &Rules) -> Result<Verdict> {
        Ok(Box::pin(self.judge_once(cert, serial, rules)).await?.0)
    }

    /// [`Fleet::judge`], saying also whether this call wrote the verdict it returns: `true`
    /// for exactly one judge of each verdict (the one whose judgement made it), so that what
    /// a verdict sets off (an alert) happens once for the fleet.
    pub async fn judge_here(
        &self,
        cert: &str,
        serial: u64,
        rules: &Rules,
    ) -> Result<(Verdict, bool)> {
        Box::pin(self.judge_once(cert, serial, rules)).await
    }

    /// Reads the current and kept generations of every certificate of `certs` at once, a
    /// few transactions of [`PREFETCH_BATCH`] reads each instead of one request per
    /// certificate, for the next [`Fleet::decide`] of each (which takes its entry, so a
    /// later decide reads etcd again). A pass over many shared certificates calls it first:
    /// a decide that finds the host up to date then asks etcd nothing. What it read is as
    /// good as a decide's own read made then: every write a decide makes from it is guarded
    /// on the revisions read. On an error nothing is kept, and each decide reads for itself.
    pub async fn prefetch(&self, certs: &[&str]) -> Result<()> {
        for cert in certs {
            check_name("certificate name", cert)?;
        }
        let mut batches = certs.chunks(PREFETCH_BATCH);
        let mut reads = tokio::task::JoinSet::new();
        let mut read = Vec::with_capacity(certs.len());
        loop {
            while reads.len() < PREFETCH_IN_FLIGHT
                && let Some(batch) = batches.next()
            {
                let txn = Txn::new().and_then(
                    batch
                        .iter()
                        .map(|cert| {
                            let end = self.key(cert, "generations0");
                            let options = GetOptions::new().with_range(end);
                            TxnOp::get(self.key(cert, "current"), Some(options))
                        })
                        .collect::<Vec<_>>(),
                );
                let names: Vec<String> = batch.iter().map(|c| (*c).to_owned()).collect();
                let (client, timeout) = (self.client.clone(), self.timeout);
                reads.spawn(async move {
                    let resp = call("read", timeout, &client, |mut c| {
                        let txn = txn.clone();
                        async move { c.txn(txn).await }
                    })
                    .await;
                    (names, resp)
                });
            }
            let Some(joined) = reads.join_next().await else {
                break;
            };
            // A read task only panics on a bug; nothing is kept then, as on an error.
            let Ok((names, resp)) = joined else {
                return Ok(());
            };
            for (cert, op) in names.iter().zip(resp?.op_responses()) {
                if let etcd_client::TxnOpResponse::Get(got) = op {
                    read.push((cert.clone(), self.generations_of(cert, got.kvs())?));
                }
            }
        }
        if let Ok(mut prefetched) = self.prefetched.lock() {
            prefetched.extend(read);
        }
        Ok(())
    }

    async fn decide_now(
        &self,
        cert: &str,
        live: Option<&str>,
        rules: &Rules,
        due: &impl Fn(Option<&Generation>) -> bool,
    ) -> Result<Step> {
        check_name("certificate name", cert)?;
        let (mut current, mut kept) = match self.take_prefetched(cert) {
            Some(read) => read,
            None => self.current_and_kept(cert).await?,
        };
        if let Some((g, _)) = &current
            && g.verdict == Verdict::Pending
            && self.judge_once(cert, g.serial, rules).await?.1
        {
            (current, kept) = self.current_and_kept(cert).await?;
        }
        let serving = live.and_then(|fp| {
            kept.iter()
                .chain(current.iter().map(|(g, _)| g))
                .find(|g| g.fingerprint.eq_ignore_ascii_case(fp))
                .map(|g| g.serial)
        });
        if let Some((g, _)) = &current
            && matches!(g.verdict, Verdict::Bad { .. })
            && serving == Some(g.serial)
        {
            return Ok(match previous(&kept, g.serial) {
                Some(to) => Step::Revert { from: g.serial, to },
                None => Step::Wait {
                    why: Wait::NothingGood { bad: g.serial },
                },
            });
        }
        if due(current.as_ref().map(|(g, _)| g)) {
            if let Some(leadership) = self.try_campaign(cert, rules.lease_ttl).await? {
                // Read again as the leader: another leader may have published meanwhile.
                let fresh = match self.current(cert).await {
                    Ok(fresh) => fresh,
                    Err(e) => {
                        leadership.resign().await;
                        return Err(e);
                    }
                };
                if due(fresh.as_ref().map(|(g, _)| g)) {
                    let order = match self.order(cert).await {
                        Ok(order) => order,
                        Err(e) => {
                            leadership.resign().await;
                            return Err(e);
                        }
                    };
                    let (current, read) = fresh.map_or((None, None), |(g, r)| (Some(g), Some(r)));
                    return Ok(Step::Issue(Box::new(Issue {
                        leadership,
                        current,
                        order,
                        read,
                    })));
                }
                leadership.resign().await;
            } else if current.is_none() {
                return Ok(Step::Wait {
                    why: Wait::Leader {
                        host: self.leader(cert).await?,
                    },
                });
            }
        }
        let Some((current, read)) = current else {
            return Ok(Step::Wait {
                why: Wait::Unpublished,
            });
        };
        match &current.verdict {
            Verdict::Bad { .. } => match previous(&kept, current.serial) {
                None => Ok(Step::Wait {
                    why: Wait::NothingGood {
                        bad: current.serial,
                    },
                }),
                Some(to) if serving == Some(to.serial) => Ok(Step::UpToDate { serial: to.serial }),
                Some(to) if serving.is_some_and(|s| s > to.serial) => {
                    // Serves a bad generation that is not the current one: go back too.
                    Ok(Step::Revert {
                        from: serving.unwrap_or_default(),
                        to,
                    })
                }
                Some(to) => Ok(Step::Deploy {
                    generation: to,
                    role: Role::Rollout,
                }),
            },
            _ if serving == Some(current.serial) => Ok(Step::UpToDate {
                serial: current.serial,
            }),
            Verdict::Good { .. } => Ok(Step::Deploy {
                generation: current,
                role: Role::Rollout,
            }),
            Verdict::Pending => {
                let serial = current.serial;
                let failed_here = self
                    .results(cert, serial)
                    .await?
                    .iter()
                    .any(|r| r.host == self.host && r.result == HostResult::Failed);
                if !failed_here
                    && let Some(slot) = self.claim_slot(cert, serial, read, rules).await?
                {
                    return Ok(Step::Deploy {
                        generation: current,
                        role: Role::Canary { slot },
                    });
                }
                Ok(Step::Wait {
                    why: Wait::Pending { serial },
                })
            }
        }
    }

    async fn publish_issue(
        &self,
        cert: &str,
        issue: &Issue,
        generation: &mut Generation,
    ) -> Result<u64> {
        let next = issue.next_serial();
        if generation.serial != next {
            return Err(Error::SerialNotNext {
                cert: cert.to_owned(),
                serial: generation.serial,
                next,
            });
        }
        generation.issued_by = self.host.clone();
        generation.verdict = Verdict::Pending;
        let lease = self.host_lease_id().await?;
        let serial = generation.serial;
        let mut ops = vec![
            TxnOp::put(
                self.slot_key(cert, serial, 0),
                self.host.as_str(),
                Some(PutOptions::new().with_lease(lease)),
            ),
            TxnOp::delete(self.key(cert, "order"), None),
        ];
        if serial >= KEPT_GENERATIONS {
            let first_kept = serial + 1 - KEPT_GENERATIONS;
            for what in ["canary", "results"] {
                ops.push(TxnOp::delete(
                    self.serial_prefix(cert, what, 0),
                    Some(
                        DeleteOptions::new().with_range(self.serial_prefix(cert, what, first_kept)),
                    ),
                ));
            }
        }
        let guards = vec![issue.leadership.guard()];
        self.publish_with(cert, generation, issue.read, guards, ops)
            .await?;
        Ok(serial)
    }

    /// Judges once (with retries on a lost race); the flag says whether this call wrote.
    async fn judge_once(&self, cert: &str, serial: u64, rules: &Rules) -> Result<(Verdict, bool)> {
        check_name("certificate name", cert)?;
        let current_key = self.key(cert, "current");
        let kept_key = self.generation_key(cert, serial);
        for _ in 0..crate::VERDICT_ATTEMPTS {
            let (key, mut generation, rev, both) = self
                .verdict_target(cert, serial, &current_key, &kept_key)
                .await?;
            if matches!(generation.verdict, Verdict::Bad { .. }) {
                return Ok((generation.verdict, false));
            }
            let results = self.results(cert, serial).await?;
            let failed: Vec<&ResultRecord> = results
                .iter()
                .filter(|r| r.result == HostResult::Failed)
                .collect();
            let served = results
                .iter()
                .filter(|r| r.result == HostResult::Deployed)
                .count();
            let at = OffsetDateTime::now_utc();
            let verdict = if failed.len() > rules.max_failures {
                Verdict::Bad {
                    by: self.host.clone(),
                    why: failures(&failed),
                    at,
                }
            } else if generation.verdict == Verdict::Pending && served >= rules.canary() {
                Verdict::Good {
                    by: self.host.clone(),
                    at,
                }
            } else {
                return Ok((generation.verdict, false));
            };
            generation.verdict = verdict.clone();
            let kept = both.then_some(kept_key.as_str());
            if self.write_verdict(&key, kept, &generation, rev).await? {
                tracing::info!(cert, serial, verdict = ?verdict, "fleet verdict");
                return Ok((verdict, true));
            }
        }
        Err(Error::Conflict {
            key: current_key,
            expected: crate::Revision(None),
        })
    }

    /// The slot this host holds for `serial`, or a free one it claims now, while the
    /// current generation is still at revision `read`.
    async fn claim_slot(
        &self,
        cert: &str,
        serial: u64,
        read: i64,
        rules: &Rules,
    ) -> Result<Option<usize>> {
        let slots = self.slots(cert, serial).await?;
        if let Some((slot, _)) = slots.iter().find(|(_, h)| *h == self.host) {
            return Ok(Some(*slot));
        }
        let current = self.key(cert, "current");
        for slot in 0..rules.canary() {
            if slots.iter().any(|(s, _)| *s == slot) {
                continue;
            }
            let lease = self.host_lease_id().await?;
            let key = self.slot_key(cert, serial, slot);
            let txn = Txn::new()
                .when([
                    Compare::version(key.as_str(), CompareOp::Equal, 0),
                    Compare::mod_revision(current.as_str(), CompareOp::Equal, read),
                ])
                .and_then([TxnOp::put(
                    key.as_str(),
                    self.host.as_str(),
                    Some(PutOptions::new().with_lease(lease)),
                )]);
            if self.txn("canary slot claim", &txn).await?.succeeded() {
                return Ok(Some(slot));
            }
        }
        Ok(None)
    }

    /// What [`Fleet::prefetch`] read for `cert`, once.
    fn take_prefetched(&self, cert: &str) -> Option<Generations> {
        self.prefetched.lock().ok()?.remove(cert)
    }

    /// The current generation of `cert` with the revision it was read at, and the kept
    /// generations, oldest first: in one read, since `current` and `generations/` are
    /// neighbours (no other key of a certificate sorts between them), so a pass over many
    /// shared certificates costs etcd one range request for each.
    async fn current_and_kept(&self, cert: &str) -> Result<Generations> {
        let current_key = self.key(cert, "current");
        // Just past every `generations/<serial>` key ('0' follows '/').
        let end = self.key(cert, "generations0");
        let resp = call("read", self.timeout, &self.client, |mut c| {
            let (from, end) = (current_key.clone(), end.clone());
            async move { c.get(from, Some(GetOptions::new().with_range(end))).await }
        })
        .await?;
        self.generations_of(cert, resp.kvs())
    }

    /// The current and kept generations of `cert` among `kvs` (a read from its `current`
    /// key to just past its `generations/` keys).
    fn generations_of(&self, cert: &str, kvs: &[etcd_client::KeyValue]) -> Result<Generations> {
        let current_key = self.key(cert, "current");
        let kept_prefix = self.key(cert, "generations/");
        let mut current = None;
        let mut kept = Vec::new();
        for kv in kvs {
            let key = String::from_utf8_lossy(kv.key());
            if key == current_key {
                current = Some((from_json(&key, kv.value())?, kv.mod_revision()));
            } else if key.starts_with(&kept_prefix) {
                kept.push(from_json(&key, kv.value())?);
            }
        }
        kept.sort_by_key(|g: &Generation| g.serial);
        Ok((current, kept))
    }

    async fn range<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, T, i64)>> {
        let resp = call("read", self.timeout, &self.client, |mut c| {
            let prefix = prefix.to_owned();
            async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })
        .await?;
        let mut out = Vec::new();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let value = from_json(&key, kv.value())?;
            out.push((key, value, kv.mod_revision()));
        }
        Ok(out)
    }

    fn serial_prefix(&self, cert: &str, what: &str, serial: u64) -> String {
        self.key(cert, &format!("{what}/{serial:020}"))
    }

    fn slot_key(&self, cert: &str, serial: u64, slot: usize) -> String {
        format!("{}/{slot}", self.serial_prefix(cert, "canary", serial))
    }

    fn result_key(&self, cert: &str, serial: u64, host: &str) -> String {
        format!("{}/{host}", self.serial_prefix(cert, "results", serial))
    }
}

/// The generation to go back to from `bad`: the newest kept one before it that is good, else
/// the newest before it that is not bad.
fn previous(kept: &[Generation], bad: u64) -> Option<Generation> {
    let before = || kept.iter().rev().filter(|g| g.serial < bad);
    before()
        .find(|g| matches!(g.verdict, Verdict::Good { .. }))
        .or_else(|| before().find(|g| g.verdict == Verdict::Pending))
        .cloned()
}

/// The hosts that failed and why, on one line.
fn failures(failed: &[&ResultRecord]) -> String {
    let hosts: Vec<String> = failed
        .iter()
        .map(|r| match &r.why {
            Some(why) => format!("{} ({why})", r.host),
            None => r.host.clone(),
        })
        .collect();
    format!("failed on {}", hosts.join(", "))
}

/// A reason as one line of bounded length.
fn one_line(why: &str) -> String {
    let line: String = why
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_WHY)
        .collect();
    line.trim().to_owned()
}

/// A certificate's current generation with the revision it was read at, and its kept
/// generations, oldest first.
pub(crate) type Generations = (Option<(Generation, i64)>, Vec<Generation>);

/// How many certificates one prefetch transaction reads (etcd's default limit is 128
/// operations a transaction; 32 keeps an answer near 1 MiB with big chains, under the
/// client's 4 MiB).
const PREFETCH_BATCH: usize = 32;

/// How many prefetch transactions are in flight at once.
const PREFETCH_IN_FLIGHT: usize = 8;

/// The longest reason kept in a result record.
const MAX_WHY: usize = 300;
