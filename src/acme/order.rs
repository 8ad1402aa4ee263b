//! One order, step by step: new order (with `profile` and `replaces` where the CA offers
//! them), the DNS-01 challenge of each pending authorization, the propagation check, ready,
//! polling, finalize with the caller's CSR, and the chain. Every step that may meet a passing
//! failure runs under the retry policy; challenge records are removed before finalizing, and
//! on every way out (see [`dns01::Published`]).

use std::collections::HashSet;

use instant_acme::{AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus};

use super::dns01::{self, Challenge};
use super::retry;
use super::{Acme, Error, Issued, OrderRequest, acme_error, cert_id};

/// The profile to send with a new order: the configured one when the CA offers it, none when
/// the CA offers no profiles at all (a CA without profiles has one kind of certificate), and
/// an error when the CA offers profiles but not that one (a typo must not silently give
/// another kind of certificate).
fn chosen_profile<'a>(
    wanted: Option<&'a str>,
    offered: &[String],
) -> Result<Option<&'a str>, Error> {
    let Some(profile) = wanted else {
        return Ok(None);
    };
    if offered.is_empty() {
        tracing::debug!(profile, "The CA offers no profiles; ordering without one.");
        return Ok(None);
    }
    if offered.iter().any(|p| p == profile) {
        return Ok(Some(profile));
    }
    Err(Error::UnknownProfile {
        profile: profile.to_owned(),
        offered: offered.to_vec(),
    })
}

pub(crate) async fn issue(acme: &Acme, req: &OrderRequest<'_>) -> Result<Issued, Error> {
    let backoff = &acme.tuning.backoff;
    let identifiers: Vec<Identifier> = req
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let mut new = NewOrder::new(&identifiers);
    if let Some(profile) = chosen_profile(req.profile, &acme.directory.profiles)? {
        new = new.profile(profile);
    }
    if let Some(leaf) = req.replaces {
        if acme.directory.renewal_info {
            new = new.replaces(cert_id(leaf)?);
        } else {
            tracing::debug!("The CA offers no renewal information; ordering without replaces.");
        }
    }
    let mut order = retry::retrying!(backoff, "new order", acme.account.new_order(&new).await)
        .map_err(|e| acme_error("new order", e))?;
    let order_url = order.url().to_owned();
    tracing::debug!(order = %order_url, "Order created.");

    // What must be proven: pending authorizations, each with its dns-01 challenge.
    let pending = retry::retrying!(backoff, "fetch authorizations", {
        let mut pending = Vec::new();
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz?;
            let domain = match &authz.identifier().identifier {
                Identifier::Dns(d) => d.trim_start_matches("*.").to_owned(),
                other => format!("{other:?}"),
            };
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
            let Some(challenge) = authz.challenge(ChallengeType::Dns01) else {
                return Ok(Err(Error::NoDns01 { domain }));
            };
            pending.push((
                Challenge {
                    domain,
                    value: challenge.key_authorization().dns_value(),
                },
                challenge.url.clone(),
            ));
        }
        Ok(Ok(pending))
    })
    .map_err(|e| acme_error("fetch authorizations", e))??;

    if !pending.is_empty() {
        let challenges: Vec<Challenge> = pending.iter().map(|(c, _)| c.clone()).collect();
        let published =
            dns01::publish(req.dns.clone(), req.dns_name, &challenges, req.settings).await?;
        let validated = validate(acme, &mut order, req, &published, &pending).await;
        let leftovers = published.cleanup().await;
        validated?;
        if !leftovers.is_empty() {
            tracing::warn!(
                records = leftovers.len(),
                "Some challenge records could not be removed."
            );
        }
    }

    let status = retry::retrying!(backoff, "order ready", {
        order.poll_ready(&acme.tuning.poll()).await
    })
    .map_err(|e| poll_error("become ready", e, acme))?;
    if status != OrderStatus::Ready {
        return Err(why_invalid(&mut order).await);
    }

    retry::retrying!(backoff, "finalize", order.finalize_csr(&req.csr_der).await)
        .map_err(|e| acme_error("finalize", e))?;
    let fullchain_pem = retry::retrying!(backoff, "download certificate", {
        order.poll_certificate(&acme.tuning.poll()).await
    })
    .map_err(|e| poll_error("issue the certificate", e, acme))?;
    tracing::debug!(order = %order_url, "Certificate issued.");
    Ok(Issued {
        fullchain_pem,
        order_url,
    })
}

/// Waits for the records, tells the CA, and waits for the order to leave `pending`.
async fn validate(
    acme: &Acme,
    order: &mut instant_acme::Order,
    req: &OrderRequest<'_>,
    published: &dns01::Published,
    pending: &[(Challenge, String)],
) -> Result<(), Error> {
    let backoff = &acme.tuning.backoff;
    dns01::wait_visible(req.dns_name, &published.records(), req.settings).await?;
    let wanted: HashSet<&str> = pending.iter().map(|(_, url)| url.as_str()).collect();
    let mut done: HashSet<String> = HashSet::new();
    retry::retrying!(backoff, "challenge ready", {
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz?;
            let Some(mut challenge) = authz.challenge(ChallengeType::Dns01) else {
                continue;
            };
            let url = challenge.url.clone();
            if !wanted.contains(url.as_str()) || done.contains(&url) {
                continue;
            }
            challenge.set_ready().await?;
            done.insert(url);
        }
        Ok(())
    })
    .map_err(|e| acme_error("challenge ready", e))?;
    let status = retry::retrying!(backoff, "validation", {
        order.poll_ready(&acme.tuning.poll()).await
    })
    .map_err(|e| poll_error("validate the challenges", e, acme))?;
    match status {
        OrderStatus::Invalid => Err(why_invalid(order).await),
        _ => Ok(()),
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
                detail: problem.to_string(),
            };
        }
    }
    let detail = order
        .state()
        .error
        .as_ref()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "the CA gave no reason".into());
    Error::OrderInvalid { detail }
}

fn poll_error(step: &'static str, e: retry::Exhausted, acme: &Acme) -> Error {
    match e.error {
        instant_acme::Error::Timeout(_) => Error::Timeout {
            step,
            limit: acme.tuning.poll_timeout,
        },
        _ => acme_error(step, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_is_sent_only_when_the_ca_offers_it() {
        let offered = vec!["classic".to_string(), "shortlived".to_string()];
        assert_eq!(
            chosen_profile(Some("shortlived"), &offered).unwrap(),
            Some("shortlived")
        );
        assert_eq!(chosen_profile(None, &offered).unwrap(), None);
        // A CA without profiles: ordered without one.
        assert_eq!(chosen_profile(Some("shortlived"), &[]).unwrap(), None);
        // A CA with profiles, but not that one: refused, naming what is offered.
        let err = chosen_profile(Some("shortlive"), &offered).unwrap_err();
        assert_eq!(
            err.to_string(),
            "profile \"shortlive\" is not offered by the CA (offered: classic, shortlived)"
        );
    }
}
