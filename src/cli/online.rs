//! `certkeeper config check --online`: proves, before a real renewal needs them, that each
//! DNS provider's credentials work (its zone is found, a harmless TXT record
//! `_certkeeper-check.<domain>` is created and removed again) and that each ACME issuer's
//! directory answers (and what it offers: ARI, profiles); and, for each certificate with
//! `challenge: dns-persist-01`, that its standing record is visible at the resolvers and
//! which account it authorizes. One line per provider, issuer and such certificate; any
//! failure names the provider, issuer or certificate by its config key.

use certkeeper_dns::TxtRecord;

use crate::acme::{self, Acme, persist};
use crate::config::{Certificate, Challenge, Config, Issuer};
use crate::issuer::dns;
use crate::store::StateDir;

/// The outcome of one check: the config key, and what was found or why it failed.
pub struct Line {
    /// `dns_providers.KEY` or `issuers.KEY`.
    pub key: String,
    /// What worked, or why not.
    pub result: Result<String, String>,
}

/// Runs every online check, one at a time.
pub async fn check(config: &Config) -> Vec<Line> {
    let mut out = Vec::new();
    for key in config.dns_providers.keys() {
        let result = check_provider(config, key).await;
        out.push(Line {
            key: format!("dns_providers.{key}"),
            result,
        });
    }
    for (key, issuer) in &config.issuers {
        let Issuer::Acme(acme) = issuer else { continue };
        let result = crate::acme::probe_directory(acme)
            .await
            .map(|offers| {
                format!(
                    "directory {} answers; renewal information (ARI): {}; profiles: {}",
                    acme.directory,
                    if offers.renewal_info {
                        "offered"
                    } else {
                        "not offered"
                    },
                    if offers.profiles.is_empty() {
                        "none".to_owned()
                    } else {
                        offers.profiles.join(", ")
                    }
                )
            })
            .map_err(|e| e.to_string());
        out.push(Line {
            key: format!("issuers.{key}"),
            result,
        });
    }
    for cert in &config.certificates {
        if cert.challenge != Challenge::DnsPersist01 {
            continue;
        }
        for issuer in &cert.issuers {
            let Some(Issuer::Acme(acme)) = config.issuers.get(issuer) else {
                continue;
            };
            let result = check_persist(config, cert, issuer, acme).await;
            out.push(Line {
                key: format!("certificates.{} (issuer {issuer})", cert.name),
                result,
            });
        }
    }
    out
}

/// Whether the standing dns-persist-01 records of `cert` for `issuer` are visible at the
/// resolvers and authorize the issuer's stored account. No account is created here: without
/// one, the line says how to make it.
async fn check_persist(
    config: &Config,
    cert: &Certificate,
    issuer: &str,
    cfg: &crate::config::AcmeIssuer,
) -> Result<String, String> {
    let file = acme::account_path(&config.state_dir, issuer);
    if cfg.certbot_account.is_none() && !file.exists() {
        return Err(format!(
            "no ACME account stored at {} yet, so no record can authorize it; certkeeper persist show {} creates it and prints the record(s)",
            file.display(),
            cert.name
        ));
    }
    // Read-only: the stored account is loaded, nothing is written.
    let state_dir = StateDir::read_only(&config.state_dir);
    let opened = Acme::open(issuer, cfg, &state_dir)
        .await
        .map_err(|e| e.to_string())?;
    let account = opened.account_id().to_owned();
    let records = opened
        .persist_records(&cert.domains)
        .map_err(|e| e.to_string())?;
    let issuers = opened.caa_identities();
    let mut seen_at = Vec::new();
    for rec in &records {
        let fqdn = persist::record_name(&rec.domain);
        match persist::visible(
            &rec.domain,
            rec.record.wildcard,
            issuers,
            &account,
            &config.dns,
        )
        .await
        .map_err(|e| e.to_string())?
        {
            Ok(servers) => seen_at.push(format!(
                "{fqdn} at {}",
                servers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Err(seen) => {
                return Err(acme::Error::PersistRecord {
                    fqdn,
                    account,
                    issuer: rec.record.issuer.clone(),
                    cert: cert.name.clone(),
                    seen,
                }
                .to_string());
            }
        }
    }
    Ok(format!(
        "dns-persist-01 record(s) visible ({}), authorizing account {account} for {}",
        seen_at.join("; "),
        records
            .first()
            .map(|r| r.record.issuer.as_str())
            .unwrap_or_default()
    ))
}

/// Creates and removes `_certkeeper-check.<domain>.` through the provider, where `domain` is
/// the first domain of the first certificate that uses it.
async fn check_provider(config: &Config, key: &str) -> Result<String, String> {
    let Some(domain) = config
        .certificates
        .iter()
        .filter(|c| c.dns_provider.as_deref() == Some(key))
        .flat_map(|c| c.domains.first())
        .next()
    else {
        return Ok("not used by any certificate; not checked".into());
    };
    let domain = domain.trim_start_matches("*.");
    let provider = dns::build(config, key).map_err(|e| e.detail())?;
    let record = TxtRecord {
        fqdn: format!("_certkeeper-check.{domain}."),
        value: format!("certkeeper-check-{}", std::process::id()),
    };
    let handle = provider
        .present(&record)
        .await
        .map_err(|e| format!("creating {}: {e}", record.fqdn))?;
    let zone = handle
        .zone
        .as_ref()
        .map(|z| format!(" in zone {z}"))
        .unwrap_or_default();
    provider.cleanup(&handle).await.map_err(|e| {
        format!(
            "created {}{zone}, but removing it failed: {e}; remove it by hand",
            record.fqdn
        )
    })?;
    Ok(format!("created and removed {}{zone}", record.fqdn))
}
