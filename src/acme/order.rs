//! One order, step by step: new order (with `profile` and `replaces` where the CA offers
//! them), the challenge of each pending authorization (dns-01: published, then the propagation
//! check; dns-persist-01: the standing record checked where the CA will look), ready,
//! polling, finalize with the caller's CSR, and the chain. Every step that may meet a passing
//! failure runs under the retry policy; challenge records are removed before finalizing, and
//! on every way out (see [`dns01::Published`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use instant_acme::{AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus};

use super::dns01::{self, Challenge};
use super::{Acme, Error, Issued, OrderRequest, Proof, acme_error, cert_id};
use super::{persist, retry};
use tokio::time::Instant;

/// The profile to send with a new order: the configured one when the CA offers it, and an
/// error naming what it offers otherwise, also when it offers none (a typo, or a CA without
/// profiles, must not silently give another kind of certificate than the one configured).
fn chosen_profile<'a>(
    wanted: Option<&'a str>,
    offered: &[String],
) -> Result<Option<&'a str>, Error> {
    let Some(profile) = wanted else {
        return Ok(None);
    };
    if offered.iter().any(|p| p == profile) {
        return Ok(Some(profile));
    }
    Err(Error::UnknownProfile {
        profile: profile.to_owned(),
        offered: offered.to_vec(),
    })
}

/// Waits until the account may place another order: at most `per_minute` new orders in any
/// 60 seconds, per account in this process (certmagic limits order events per CA and account
/// the same way), so a pass over many certificates never bursts past a CA's order limit.
async fn order_turn(account: &str, per_minute: u32) {
    static RECENT: LazyLock<Mutex<HashMap<String, VecDeque<Instant>>>> =
        LazyLock::new(Mutex::default);
    const WINDOW: Duration = Duration::from_secs(60);
    let mut told = false;
    loop {
        let wait = {
            // Entries are pushed and popped whole, so a poisoned lock is still consistent.
            let mut recent = RECENT.lock().unwrap_or_else(PoisonError::into_inner);
            let times = recent.entry(account.to_owned()).or_default();
            let now = Instant::now();
            while times
                .front()
                .is_some_and(|t| now.duration_since(*t) >= WINDOW)
            {
                times.pop_front();
            }
            if times.len() < per_minute as usize {
                times.push_back(now);
                return;
            }
            // The oldest order of the window leaves it first.
            times.front().map_or(Duration::ZERO, |t| {
                WINDOW.saturating_sub(now.duration_since(*t))
            })
        };
        if !told {
            tracing::info!(
                per_minute,
                wait_ms = wait.as_millis() as u64,
                "orders_per_minute reached; waiting before the next order."
            );
            told = true;
        }
        tokio::time::sleep(wait).await;
    }
}

fn new_order<'a>(identifiers: &'a [Identifier], profile: Option<&'a str>) -> NewOrder<'a> {
    let new = NewOrder::new(identifiers);
    match profile {
        Some(p) => new.profile(p),
        None => new,
    }
}

/// Whether a new order was refused because of its `replaces`: `alreadyReplaced`, or a
/// `malformed` problem about the field.
fn refuses_replaces(e: &instant_acme::Error) -> bool {
    let instant_acme::Error::Api(p) = e else {
        return false;
    };
    match p.r#type.as_deref() {
        Some("urn:ietf:params:acme:error:alreadyReplaced") => true,
        Some("urn:ietf:params:acme:error:malformed") => p
            .detail
            .as_deref()
            .is_some_and(|d| d.to_ascii_lowercase().contains("replaces")),
        _ => false,
    }
}

/// Places a new order for the request's names.
async fn place(acme: &Acme, req: &OrderRequest<'_>) -> Result<instant_acme::Order, Error> {
    let backoff = &acme.tuning.backoff;
    let identifiers: Vec<Identifier> = req
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let profile = chosen_profile(req.profile, &acme.directory.profiles)?;
    let mut new = new_order(&identifiers, profile);
    if let Some(leaf) = req.replaces {
        if acme.directory.renewal_info {
            new = new.replaces(cert_id(leaf)?);
        } else {
            tracing::debug!("The CA offers no renewal information; ordering without replaces.");
        }
    }
    if let Some(per_minute) = acme.orders_per_minute {
        order_turn(acme.account.id(), per_minute).await;
    }
    match retry::retrying!(backoff, "new order", acme.account.new_order(&new).await) {
        Ok(order) => Ok(order),
        // The certificate named in `replaces` was replaced already (a rollback put it back
        // live, or an earlier order for it was lost), or the CA refuses the field: the
        // renewal is ordered once more without it (RFC 9773 §5).
        Err(e) if req.replaces.is_some() && refuses_replaces(&e.error) => {
            tracing::info!(error = %acme_error("new order", e), "Ordering again without replaces.");
            let plain = new_order(&identifiers, profile);
            retry::retrying!(backoff, "new order", acme.account.new_order(&plain).await)
                .map_err(|e| acme_error("new order", e))
        }
        Err(e) => Err(acme_error("new order", e)),
    }
}

/// The order in flight that the request's tracker recorded for this issuer, fetched with the
/// account that placed it, when it can still be finished here: `pending` (its challenges
/// are worked again) or `ready` (finalized with this request's CSR). An order already
/// finalized was finalized with the key of the host that placed it, which is gone; one that
/// is invalid, or cannot be fetched, is not resumed: a new order is placed. Returns the
/// order and the URL of the account that placed it.
async fn resumed(acme: &Acme, req: &OrderRequest<'_>) -> Option<(instant_acme::Order, String)> {
    let resume = req.track?.resume(&acme.issuer)?;
    // Only a plain account signs as the account of the order; certbot's signs for itself.
    if acme.certbot.is_some() {
        return None;
    }
    let url = &resume.order_url;
    let backoff = &acme.tuning.backoff;
    let account = match super::account::from_shared(
        &resume.account,
        &acme.directory.url,
        &acme.http,
        backoff,
    )
    .await
    {
        Ok(account) => account,
        Err(why) => {
            tracing::warn!(order = %url, "Not resuming the order in flight ({why}); placing a new one.");
            return None;
        }
    };
    let fetched = retry::retrying!(backoff, "fetch the order in flight", {
        account.order(url.clone()).await
    });
    let mut order = match fetched {
        Ok(order) => order,
        Err(e) => {
            let e = acme_error("fetch the order in flight", e);
            tracing::warn!(order = %url, "Not resuming the order in flight ({e}); placing a new one.");
            return None;
        }
    };
    let status = order.state().status;
    match status {
        OrderStatus::Pending | OrderStatus::Ready => {
            tracing::info!(order = %url, status = ?status, "Resuming the order in flight that another host placed.");
            Some((order, account.id().to_owned()))
        }
        _ => {
            tracing::info!(order = %url, status = ?status, "The order in flight cannot be finished here; placing a new one.");
            None
        }
    }
}

pub(crate) async fn issue(acme: &Acme, req: &OrderRequest<'_>) -> Result<Issued, Error> {
    let backoff = &acme.tuning.backoff;
    // The account the CA checks a dns-persist-01 record against: the order's.
    let (mut order, order_account) = match resumed(acme, req).await {
        Some(resumed) => resumed,
        None => {
            let order = place(acme, req).await?;
            if let Some(track) = req.track {
                let account = acme.credentials.as_deref().map(Vec::as_slice);
                track.placed(&acme.issuer, order.url(), account).await;
            }
            (order, acme.account.id().to_owned())
        }
    };
    let order_url = order.url().to_owned();
    tracing::debug!(order = %order_url, "Order created.");

    let pending = pending(acme, &mut order, req).await?;
    if !pending.is_empty() {
        prove(acme, &mut order, &order_account, req, &pending).await?;
    }

    // Validation left the order ready, or every authorization was valid already (reused):
    // asked only when the last answer does not say so.
    let mut status = order.state().status;
    if status != OrderStatus::Ready {
        status = poll_order(acme, &mut order, "become ready", |s| {
            s == OrderStatus::Ready
        })
        .await?;
    }
    if status != OrderStatus::Ready {
        return Err(why_invalid(&mut order).await);
    }

    retry::retrying!(backoff, "finalize", order.finalize_csr(&req.csr_der).await)
        .map_err(|e| acme_error("finalize", e))?;
    // Many CAs answer the finalize with the order valid already; then there is nothing to
    // wait for.
    if order.state().status != OrderStatus::Valid {
        let status = poll_order(acme, &mut order, "issue the certificate", |s| {
            s == OrderStatus::Valid
        })
        .await?;
        if status != OrderStatus::Valid {
            return Err(why_invalid(&mut order).await);
        }
    }
    let fullchain_pem = retry::retrying!(backoff, "download certificate", {
        order
            .certificate()
            .await?
            .ok_or(instant_acme::Error::Str("the CA sent no certificate"))
    })
    .map_err(|e| acme_error("download certificate", e))?;
    tracing::debug!(order = %order_url, "Certificate issued.");
    Ok(Issued {
        fullchain_pem,
        order_url,
    })
}

/// One pending authorization: its bare domain, whether it is for the wildcard, its
/// challenge's URL and, for dns-01, the record value; for dns-persist-01, the issuer domain
/// names the challenge names (`issuer-domain-names`, else the directory's `caaIdentities`).
struct Pending {
    domain: String,
    wildcard: bool,
    url: String,
    dns01: Option<Challenge>,
    issuers: Vec<String>,
}

/// The challenge type `proof` answers.
fn challenge_type(proof: &Proof<'_>) -> ChallengeType {
    match proof {
        Proof::Dns01 { .. } => ChallengeType::Dns01,
        Proof::DnsPersist01 { .. } => ChallengeType::Unknown(persist::CHALLENGE_TYPE.to_owned()),
    }
}

/// What must be proven: the pending authorizations, each with the challenge of the request's
/// kind (valid ones were reused; any other state cannot lead to a certificate).
async fn pending(
    acme: &Acme,
    order: &mut instant_acme::Order,
    req: &OrderRequest<'_>,
) -> Result<Vec<Pending>, Error> {
    let kind = challenge_type(&req.proof);
    let (fetched, issuers) = super::http::persist_issuers(async {
        retry::retrying!(&acme.tuning.backoff, "fetch authorizations", {
            let mut pending = Vec::new();
            let mut authzs = order.authorizations();
            while let Some(authz) = authzs.next().await {
                let mut authz = authz?;
                let domain = match &authz.identifier().identifier {
                    Identifier::Dns(d) => d.trim_start_matches("*.").to_owned(),
                    other => format!("{other:?}"),
                };
                let wildcard = authz.wildcard;
                match authz.status {
                    AuthorizationStatus::Valid => continue,
                    AuthorizationStatus::Pending => {}
                    status => {
                        return Ok(Err(Error::Authorization {
                            domain,
                            status: format!("{status:?}").to_lowercase(),
                        }));
                    }
                }
                let Some(challenge) = authz.challenge(kind.clone()) else {
                    return Ok(Err(match req.proof {
                        Proof::Dns01 { .. } => Error::NoDns01 { domain },
                        Proof::DnsPersist01 { .. } => Error::NoDnsPersist01 { domain },
                    }));
                };
                let dns01 = matches!(req.proof, Proof::Dns01 { .. }).then(|| Challenge {
                    domain: domain.clone(),
                    value: match &acme.certbot {
                        Some(certbot) => certbot.dns_value(&challenge.token),
                        None => challenge.key_authorization().dns_value(),
                    },
                });
                let url = challenge.url.clone();
                pending.push(Pending {
                    domain,
                    wildcard,
                    url,
                    dns01,
                    issuers: Vec::new(),
                });
            }
            Ok(Ok(pending))
        })
    })
    .await;
    let mut pending = fetched.map_err(|e| acme_error("fetch authorizations", e))??;
    for p in &mut pending {
        p.issuers = match issuers.get(&p.url) {
            Some(names) if !names.is_empty() => {
                tracing::debug!(challenge = %p.url, issuers = ?names, "Issuer domain names from the challenge.");
                names.clone()
            }
            _ => acme.directory.caa_identities.clone(),
        };
    }
    Ok(pending)
}

/// Shows control of the pending names: dns-01 records published, seen, validated and
/// removed again; or the standing dns-persist-01 records checked, then validated.
async fn prove(
    acme: &Acme,
    order: &mut instant_acme::Order,
    order_account: &str,
    req: &OrderRequest<'_>,
    pending: &[Pending],
) -> Result<(), Error> {
    match &req.proof {
        Proof::Dns01 { dns, dns_name } => {
            let challenges: Vec<Challenge> =
                pending.iter().filter_map(|p| p.dns01.clone()).collect();
            let published =
                dns01::publish(dns.clone(), dns_name, &challenges, req.settings).await?;
            let validated = async {
                dns01::wait_visible(dns_name, &published.records(), req.settings).await?;
                validate(acme, order, &req.proof, pending).await
            }
            .await;
            let leftovers = published.cleanup().await;
            validated?;
            if !leftovers.is_empty() {
                tracing::warn!(
                    records = leftovers.len(),
                    "Some challenge records could not be removed."
                );
            }
            Ok(())
        }
        Proof::DnsPersist01 { cert } => {
            persist_visible(acme, order_account, req, cert, pending).await?;
            validate(acme, order, &req.proof, pending).await
        }
    }
}

/// Checks, before the CA is told, that each pending name's standing record authorizes
/// `account` (the order's: another host's for a resumed order) where the CA will look, so that a removed record fails with its cause rather
/// than with an invalid authorization.
async fn persist_visible(
    acme: &Acme,
    account: &str,
    req: &OrderRequest<'_>,
    cert: &str,
    pending: &[Pending],
) -> Result<(), Error> {
    for p in pending {
        let Some(issuer) = p.issuers.first() else {
            return Err(Error::NoIssuerDomain {
                directory: acme.directory.url.clone(),
            });
        };
        if let Err(seen) =
            persist::visible(&p.domain, p.wildcard, &p.issuers, account, req.settings).await?
        {
            return Err(Error::PersistRecord {
                fqdn: persist::record_name(&p.domain),
                account: account.to_owned(),
                issuer: issuer.clone(),
                cert: cert.to_owned(),
                seen,
            });
        }
    }
    Ok(())
}

/// Tells the CA each pending challenge is ready, and waits for the order to leave `pending`.
async fn validate(
    acme: &Acme,
    order: &mut instant_acme::Order,
    proof: &Proof<'_>,
    pending: &[Pending],
) -> Result<(), Error> {
    let backoff = &acme.tuning.backoff;
    let kind = challenge_type(proof);
    let wanted: HashSet<&str> = pending.iter().map(|p| p.url.as_str()).collect();
    let mut done: HashSet<String> = HashSet::new();
    retry::retrying!(backoff, "challenge ready", {
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz?;
            let Some(mut challenge) = authz.challenge(kind.clone()) else {
                continue;
            };
            let url = challenge.url.clone();
            if !wanted.contains(url.as_str()) || done.contains(&url) {
                continue;
            }
            // A resumed order's challenge may have been set ready by the host that placed
            // it: the CA is validating it already.
            if challenge.status != instant_acme::ChallengeStatus::Pending {
                done.insert(url);
                continue;
            }
            // Both kinds are answered with `{}` (dns-persist-01 included).
            challenge.set_ready().await?;
            done.insert(url);
        }
        Ok(())
    })
    .map_err(|e| acme_error("challenge ready", e))?;
    let status = poll_order(acme, order, "validate the challenges", |s| {
        s == OrderStatus::Ready
    })
    .await?;
    match status {
        OrderStatus::Invalid => Err(why_invalid(order).await),
        _ => Ok(()),
    }
}

/// The longest wait between two polls of an order, when the CA gives no `Retry-After`.
const POLL_MAX_WAIT: Duration = Duration::from_secs(5);

/// Polls the order until `done` says its status is reached, or it is invalid: asks at once,
/// then after the CA's `Retry-After` when it sends one, else after `poll_initial` growing
/// by `poll_factor` (at most [`POLL_MAX_WAIT`]); gives up after `poll_timeout`. An error
/// the order reports ends the wait with that error.
async fn poll_order(
    acme: &Acme,
    order: &mut instant_acme::Order,
    what: &'static str,
    done: impl Fn(OrderStatus) -> bool,
) -> Result<OrderStatus, Error> {
    let tuning = &acme.tuning;
    let started = Instant::now();
    let mut delay = tuning.poll_initial;
    loop {
        let (result, hint) = super::http::hinted(async {
            retry::retrying!(&tuning.backoff, what, {
                order
                    .refresh()
                    .await
                    .map(|state| (state.status, state.error.clone()))
            })
        })
        .await;
        let (status, error) = result.map_err(|e| acme_error(what, e))?;
        if let Some(problem) = error {
            return Err(acme_error(
                what,
                retry::Exhausted {
                    error: instant_acme::Error::Api(problem),
                    attempts: 1,
                    retry_after: None,
                },
            ));
        }
        if status == OrderStatus::Invalid || done(status) {
            return Ok(status);
        }
        let asked = hint.and_then(|at| at.duration_since(std::time::SystemTime::now()).ok());
        let wait = asked.unwrap_or(delay).min(POLL_MAX_WAIT);
        if started.elapsed() + wait > tuning.poll_timeout {
            return Err(Error::Timeout {
                step: what,
                limit: tuning.poll_timeout,
            });
        }
        tokio::time::sleep(wait).await;
        delay = delay.mul_f32(tuning.poll_factor).min(POLL_MAX_WAIT);
    }
}

/// The reason an order is invalid: the first failed challenge's error, else the order's.
async fn why_invalid(order: &mut instant_acme::Order) -> Error {
    let mut authzs = order.authorizations();
    while let Some(Ok(mut authz)) = authzs.next().await {
        // The cached state predates validation; ask again (best effort).
        let _ = authz.refresh().await;
        if authz.status != AuthorizationStatus::Invalid {
            continue;
        }
        let domain = match &authz.identifier().identifier {
            Identifier::Dns(d) => d.clone(),
            other => format!("{other:?}"),
        };
        if let Some(problem) = authz.challenges.iter().find_map(|c| c.error.as_ref()) {
            return Error::ChallengeFailed {
                domain,
                detail: super::problem_text(problem),
            };
        }
    }
    let detail = order
        .state()
        .error
        .as_ref()
        .map(super::problem_text)
        .unwrap_or_else(|| "the CA gave no reason".into());
    Error::OrderInvalid { detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn orders_per_minute_holds_back_the_order_over_the_limit() {
        let start = Instant::now();
        order_turn("https://ca.example/acct/1", 2).await;
        order_turn("https://ca.example/acct/1", 2).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        // Another account has its own window.
        order_turn("https://ca.example/acct/2", 2).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        // The third order of the first account waits until its first leaves the window.
        order_turn("https://ca.example/acct/1", 2).await;
        assert_eq!(start.elapsed(), Duration::from_secs(60));
    }

    #[test]
    fn the_profile_is_sent_only_when_the_ca_offers_it() {
        let offered = vec!["classic".to_string(), "shortlived".to_string()];
        assert_eq!(
            chosen_profile(Some("shortlived"), &offered).unwrap(),
            Some("shortlived")
        );
        assert_eq!(chosen_profile(None, &offered).unwrap(), None);
        assert_eq!(chosen_profile(None, &[]).unwrap(), None);
        // A CA without profiles: refused too, rather than another kind of certificate.
        let err = chosen_profile(Some("shortlived"), &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "profile \"shortlived\" is not offered by the CA (it offers no profiles)"
        );
        // A CA with profiles, but not that one: refused, naming what is offered.
        let err = chosen_profile(Some("shortlive"), &offered).unwrap_err();
        assert_eq!(
            err.to_string(),
            "profile \"shortlive\" is not offered by the CA (offered: classic, shortlived)"
        );
    }
}
