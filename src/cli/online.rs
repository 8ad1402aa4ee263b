//! `certkeeper config check --online`: proves, before a real renewal needs them, that each
//! DNS provider's credentials work (its zone is found, a harmless TXT record
//! `_certkeeper-check.<domain>` is created and removed again) and that each ACME issuer's
//! directory answers (and what it offers: ARI, profiles). One line per provider and issuer;
//! any failure names the provider or issuer by its config key.

use certkeeper_dns::TxtRecord;

use crate::config::{Config, Issuer};
use crate::issuer::dns;

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
    out
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
