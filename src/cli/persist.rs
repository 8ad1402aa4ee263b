//! `certkeeper persist show NAME` and `certkeeper persist publish NAME`: the standing
//! dns-persist-01 records (see [`crate::acme::persist`]) that let a certificate's ACME
//! issuers renew it with the account key alone. `show` prints them in zone-file syntax, from
//! each issuer's account (created if needed) and the CA's issuer domain name; `publish`
//! creates the ones not yet visible, once, through the certificate's `dns_provider`.

use std::path::Path;

use certkeeper_dns::TxtRecord;

use super::{known_names, load_config, print};
use crate::acme::{Acme, persist};
use crate::config::{Certificate, Config, Issuer};
use crate::issuer::dns;
use crate::store::Store;
use crate::text::escape_line;

/// Exit code of a config or usage error.
const USAGE: u8 = 2;
/// Exit code of a command that failed.
const FAILED: u8 = 1;

/// The records of one ACME issuer of a certificate.
struct IssuerRecords {
    issuer: String,
    account: String,
    records: Vec<persist::Standing>,
}

/// Runs `persist show NAME`.
pub fn show(config_path: &Path, name: &str) -> u8 {
    let (config, cert) = match certificate(config_path, name) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let runtime = match super::runtime(FAILED) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let all = match runtime.block_on(records(&config, &cert)) {
        Ok(all) => all,
        Err(e) => {
            eprintln!("certkeeper: persist show {name}: {e}");
            return FAILED;
        }
    };
    let mut out = String::new();
    for r in &all {
        out.push_str(&escape_line(&format!(
            "; certificate {name}, issuer {}, account {}",
            r.issuer, r.account
        )));
        out.push('\n');
        for rec in &r.records {
            out.push_str(&escape_line(&zone_line(&rec.txt())));
            out.push('\n');
        }
    }
    if print(&out) { 0 } else { FAILED }
}

/// Runs `persist publish NAME`: creates, through the certificate's `dns_provider`, each record
/// not yet visible, and waits until it is.
pub fn publish(config_path: &Path, name: &str) -> u8 {
    let (config, cert) = match certificate(config_path, name) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let Some(provider_key) = cert.dns_provider.clone() else {
        eprintln!(
            "certkeeper: {}: certificate {name} has no dns_provider; persist publish creates the records through it (or create them by hand: certkeeper persist show {name})",
            config_path.display()
        );
        return USAGE;
    };
    let runtime = match super::runtime(FAILED) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(publish_all(&config, &cert, &provider_key)) {
        Ok(lines) => {
            let text: String = lines.iter().map(|l| escape_line(l) + "\n").collect();
            if print(&text) { 0 } else { FAILED }
        }
        Err(e) => {
            eprintln!("certkeeper: persist publish {name}: {e}");
            FAILED
        }
    }
}

/// A record as a zone file line.
fn zone_line(rec: &TxtRecord) -> String {
    format!("{} IN TXT \"{}\"", rec.fqdn, rec.value)
}

/// The config and the certificate `name`, which must have an ACME issuer; else the exit
/// code, after one line saying why.
fn certificate(config_path: &Path, name: &str) -> Result<(Config, Certificate), u8> {
    let config = load_config(config_path).map_err(|_| USAGE)?;
    if !known_names(&config, config_path, &[name.to_owned()]) {
        return Err(USAGE);
    }
    let cert = config.certificate(name).cloned().ok_or(USAGE)?;
    if acme_issuers(&config, &cert).next().is_none() {
        eprintln!(
            "certkeeper: {}: certificate {name} has no acme issuer; dns-persist-01 records authorize an ACME account",
            config_path.display()
        );
        return Err(USAGE);
    }
    Ok((config, cert))
}

fn acme_issuers<'a>(config: &'a Config, cert: &'a Certificate) -> impl Iterator<Item = &'a str> {
    cert.issuers
        .iter()
        .filter(|i| matches!(config.issuers.get(i.as_str()), Some(Issuer::Acme(_))))
        .map(String::as_str)
}

/// The records of every ACME issuer of `cert`, each issuer's account opened (created and
/// stored if it has none yet).
async fn records(config: &Config, cert: &Certificate) -> Result<Vec<IssuerRecords>, String> {
    let store = Store::open(&config.state_dir).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for issuer in acme_issuers(config, cert) {
        let Some(Issuer::Acme(cfg)) = config.issuers.get(issuer) else {
            continue;
        };
        let acme = Acme::open(issuer, cfg, store.state_dir())
            .await
            .map_err(|e| format!("issuer {issuer}: {e}"))?;
        if acme.created() {
            tracing::info!(%issuer, account = %acme.account_id(), "Created the ACME account.");
        }
        let records = acme
            .persist_records(&cert.domains)
            .map_err(|e| format!("issuer {issuer}: {e}"))?;
        out.push(IssuerRecords {
            issuer: issuer.to_owned(),
            account: acme.account_id().to_owned(),
            records,
        });
    }
    Ok(out)
}

/// Creates the records not yet visible and waits for them; one line per record.
async fn publish_all(
    config: &Config,
    cert: &Certificate,
    provider_key: &str,
) -> Result<Vec<String>, String> {
    let all = records(config, cert).await?;
    let provider = dns::build(config, provider_key).map_err(|e| e.to_string())?;
    let mut lines = Vec::new();
    let mut created = Vec::new();
    for r in &all {
        for rec in &r.records {
            let txt = rec.txt();
            let issuers = [rec.record.issuer.clone()];
            let seen = persist::visible(
                &rec.domain,
                rec.record.wildcard,
                &issuers,
                &r.account,
                &config.dns,
            )
            .await
            .map_err(|e| e.to_string())?;
            if seen.is_ok() {
                lines.push(format!("already visible: {}", zone_line(&txt)));
                continue;
            }
            provider.present(&txt).await.map_err(|e| {
                format!(
                    "dns provider {provider_key} could not create TXT {}: {e}",
                    txt.fqdn
                )
            })?;
            lines.push(format!(
                "created through dns provider {provider_key}: {}",
                zone_line(&txt)
            ));
            created.push(txt);
        }
    }
    crate::acme::dns01::wait_visible(provider_key, &created, &config.dns)
        .await
        .map_err(|e| e.to_string())?;
    Ok(lines)
}
