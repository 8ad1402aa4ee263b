//! The dns-persist-01 record (draft-ietf-acme-dns-persist), built and parsed in this one
//! place: one standing TXT record at `_validation-persist.<domain>.` whose value
//! `<issuer-domain-name>; accounturi=<account URL>[; policy=wildcard][; persistUntil=<unix
//! time>]` authorizes that ACME account for the name for as long as it stands.
//!
//! The draft is still moving (a hashed account field is being discussed); this module
//! implements what Pebble 2.10.1 checks: the issuer domain name is one the challenge names
//! (`issuer-domain-names`), `accounturi` is the account's URL exactly, a wildcard
//! authorization needs `policy=wildcard`, and a `persistUntil` in the past no longer counts.
//! Parameter names are matched without regard to case, as the draft's examples mix
//! `accounturi` and `persistUntil`.

use std::net::SocketAddr;

use certkeeper_dns::TxtRecord;

use super::dns01;
use crate::config::DnsSettings;

/// The challenge type, as the CA names it.
pub const CHALLENGE_TYPE: &str = "dns-persist-01";

/// The label the record is published under.
pub const LABEL: &str = "_validation-persist";

/// One dns-persist-01 record value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The CA's issuer domain name (`letsencrypt.org`).
    pub issuer: String,
    /// The authorized account's URL.
    pub account_uri: String,
    /// `policy=wildcard`: also authorizes wildcard certificates (and subdomains).
    pub wildcard: bool,
    /// `persistUntil`: the record counts until then (unix time).
    pub persist_until: Option<i64>,
}

impl Record {
    /// The record's TXT value.
    pub fn value(&self) -> String {
        let mut v = format!("{}; accounturi={}", self.issuer, self.account_uri);
        if self.wildcard {
            v.push_str("; policy=wildcard");
        }
        if let Some(t) = self.persist_until {
            v.push_str(&format!("; persistUntil={t}"));
        }
        v
    }

    /// Parses a TXT value; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Record, String> {
        let mut parts = text.split(';').map(str::trim);
        let issuer = parts.next().unwrap_or_default();
        if issuer.is_empty() || issuer.contains('=') {
            return Err("no issuer domain name before the first ';'".into());
        }
        let mut record = Record {
            issuer: issuer.trim_end_matches('.').to_ascii_lowercase(),
            account_uri: String::new(),
            wildcard: false,
            persist_until: None,
        };
        for part in parts.filter(|p| !p.is_empty()) {
            let Some((key, value)) = part.split_once('=') else {
                return Err(format!("parameter {part:?} has no '='"));
            };
            let value = value.trim();
            match key.trim().to_ascii_lowercase().as_str() {
                "accounturi" => record.account_uri = value.to_owned(),
                "policy" => record.wildcard = value.eq_ignore_ascii_case("wildcard"),
                "persistuntil" => {
                    record.persist_until = Some(
                        value
                            .parse()
                            .map_err(|_| format!("persistUntil {value:?} is not a unix time"))?,
                    )
                }
                // Parameters a later draft adds are not ours to refuse.
                _ => {}
            }
        }
        if record.account_uri.is_empty() {
            return Err("no accounturi parameter".into());
        }
        Ok(record)
    }

    /// Why this record does not authorize `account` at a CA named by one of `issuers` for a
    /// (`wildcard` or not) authorization at unix time `now`; `None` when it does.
    pub fn refuses(
        &self,
        issuers: &[String],
        account: &str,
        wildcard: bool,
        now: i64,
    ) -> Option<String> {
        if !issuers.iter().any(|i| i.eq_ignore_ascii_case(&self.issuer)) {
            return Some(format!("for issuer {}", self.issuer));
        }
        if self.account_uri != account {
            return Some(format!("for account {}", self.account_uri));
        }
        if wildcard && !self.wildcard {
            return Some("without policy=wildcard, which a wildcard name needs".into());
        }
        match self.persist_until {
            Some(t) if t < now => Some(format!("expired (persistUntil={t})")),
            _ => None,
        }
    }
}

/// The record name for a domain: `_validation-persist.<bare domain>.`, lower-case; a wildcard
/// and its apex share it.
pub fn record_name(domain: &str) -> String {
    let bare = domain.strip_prefix("*.").unwrap_or(domain);
    format!(
        "{LABEL}.{}.",
        bare.trim_end_matches('.').to_ascii_lowercase()
    )
}

/// One standing record for one record name: the bare domain it is for, and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standing {
    /// The bare domain (no `*.`).
    pub domain: String,
    /// The value.
    pub record: Record,
}

impl Standing {
    /// The record as a TXT record to create.
    pub fn txt(&self) -> TxtRecord {
        TxtRecord {
            fqdn: record_name(&self.domain),
            value: self.record.value(),
        }
    }
}

/// The records that authorize `account` at `issuer` for every one of `domains`: one per
/// record name, with `policy=wildcard` when a wildcard needs that name (the one record then
/// serves the apex too).
pub fn records_for(domains: &[String], issuer: &str, account: &str) -> Vec<Standing> {
    let mut out: Vec<Standing> = Vec::new();
    for d in domains {
        let wildcard = d.starts_with("*.");
        let bare = d
            .trim_start_matches("*.")
            .trim_end_matches('.')
            .to_ascii_lowercase();
        match out.iter_mut().find(|s| s.domain == bare) {
            Some(s) => s.record.wildcard |= wildcard,
            None => out.push(Standing {
                domain: bare,
                record: Record {
                    issuer: issuer.to_owned(),
                    account_uri: account.to_owned(),
                    wildcard,
                    persist_until: None,
                },
            }),
        }
    }
    out
}

/// Whether one of `values` (the TXT values at a record name) authorizes the account; else
/// why each does not, for the error.
pub fn find(
    values: &[String],
    issuers: &[String],
    account: &str,
    wildcard: bool,
    now: i64,
) -> Result<(), Vec<String>> {
    let mut why = Vec::new();
    for v in values {
        match Record::parse(v).map(|r| r.refuses(issuers, account, wildcard, now)) {
            Ok(None) => return Ok(()),
            Ok(Some(reason)) => why.push(format!("{v:?}: {reason}")),
            Err(reason) => why.push(format!("{v:?}: {reason}")),
        }
    }
    Err(why)
}

/// Looks up the record for `domain` at every server that must see it (the configured
/// resolvers, else the zone's authoritative servers): `Ok` with those servers when each
/// answers with a value that authorizes `account` (for a wildcard when `wildcard`) at a CA
/// named by one of `issuers`; `Err` with one line per server that does not, saying what it
/// answered.
pub async fn visible(
    domain: &str,
    wildcard: bool,
    issuers: &[String],
    account: &str,
    settings: &DnsSettings,
) -> Result<Result<Vec<SocketAddr>, Vec<String>>, dns01::Error> {
    let fqdn = record_name(domain);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut servers = Vec::new();
    let mut missing = Vec::new();
    for (server, seen) in dns01::txt_seen(&fqdn, settings).await? {
        match seen {
            Ok(values) => match find(&values, issuers, account, wildcard, now) {
                Ok(()) => servers.push(server),
                Err(why) if why.is_empty() => missing.push(format!("{server}: no TXT record")),
                Err(why) => missing.push(format!("{server}: {}", why.join(", "))),
            },
            Err(e) => missing.push(format!("{server}: {e}")),
        }
    }
    Ok(if missing.is_empty() {
        Ok(servers)
    } else {
        Err(missing)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "https://ca.example/my-account/1";

    fn issuers() -> Vec<String> {
        vec!["pebble.letsencrypt.org".into()]
    }

    #[test]
    fn values_are_built_as_the_draft_writes_them() {
        let r = Record {
            issuer: "letsencrypt.org".into(),
            account_uri: ACCOUNT.into(),
            wildcard: true,
            persist_until: Some(1_800_000_000),
        };
        assert_eq!(
            r.value(),
            "letsencrypt.org; accounturi=https://ca.example/my-account/1; policy=wildcard; persistUntil=1800000000"
        );
        assert_eq!(Record::parse(&r.value()).unwrap(), r);
    }

    #[test]
    fn an_apex_and_its_wildcard_share_one_wildcard_record() {
        let domains = vec!["example.com".to_string(), "*.example.com".to_string()];
        let records: Vec<TxtRecord> = records_for(&domains, "pebble.letsencrypt.org", ACCOUNT)
            .iter()
            .map(Standing::txt)
            .collect();
        assert_eq!(
            records,
            [TxtRecord {
                fqdn: "_validation-persist.example.com.".into(),
                value: "pebble.letsencrypt.org; accounturi=https://ca.example/my-account/1; policy=wildcard".into(),
            }]
        );
        let domains = vec!["Example.com".to_string(), "www.example.com".to_string()];
        let records: Vec<TxtRecord> = records_for(&domains, "pebble.letsencrypt.org", ACCOUNT)
            .iter()
            .map(Standing::txt)
            .collect();
        let names: Vec<&str> = records.iter().map(|r| r.fqdn.as_str()).collect();
        assert_eq!(
            names,
            [
                "_validation-persist.example.com.",
                "_validation-persist.www.example.com."
            ]
        );
        assert!(records.iter().all(|r| !r.value.contains("policy")));
    }

    #[test]
    fn parsing_tolerates_case_and_spaces_and_names_what_is_wrong() {
        let r =
            Record::parse(" Pebble.LetsEncrypt.org. ;AccountURI=https://a/1 ;Policy=WILDCARD ;")
                .unwrap();
        assert_eq!(r.issuer, "pebble.letsencrypt.org");
        assert_eq!(r.account_uri, "https://a/1");
        assert!(r.wildcard);
        assert_eq!(
            Record::parse("letsencrypt.org").unwrap_err(),
            "no accounturi parameter"
        );
        assert_eq!(
            Record::parse("accounturi=https://a/1").unwrap_err(),
            "no issuer domain name before the first ';'"
        );
        assert_eq!(
            Record::parse("ca.example; accounturi=x; persistUntil=soon").unwrap_err(),
            "persistUntil \"soon\" is not a unix time"
        );
        assert_eq!(
            Record::parse("ca.example; accounturi").unwrap_err(),
            "parameter \"accounturi\" has no '='"
        );
    }

    #[test]
    fn a_record_authorizes_only_its_account_issuer_policy_and_time() {
        let value = |extra: &str| format!("pebble.letsencrypt.org; accounturi={ACCOUNT}{extra}");
        let ok =
            |v: &str, wildcard: bool| find(&[v.to_owned()], &issuers(), ACCOUNT, wildcard, 100);
        assert_eq!(ok(&value(""), false), Ok(()));
        assert_eq!(ok(&value("; policy=wildcard"), true), Ok(()));
        assert_eq!(ok(&value("; policy=wildcard"), false), Ok(()));
        assert_eq!(ok(&value("; persistUntil=100"), false), Ok(()));
        let why = ok(&value(""), true).unwrap_err();
        assert!(
            why[0].ends_with("without policy=wildcard, which a wildcard name needs"),
            "{why:?}"
        );
        let why = ok(&value("; persistUntil=99"), false).unwrap_err();
        assert!(why[0].ends_with("expired (persistUntil=99)"), "{why:?}");
        let other = "letsencrypt.org; accounturi=https://ca.example/my-account/1";
        let why = ok(other, false).unwrap_err();
        assert!(why[0].ends_with("for issuer letsencrypt.org"), "{why:?}");
        let other = "pebble.letsencrypt.org; accounturi=https://ca.example/my-account/2";
        let why = ok(other, false).unwrap_err();
        assert!(
            why[0].ends_with("for account https://ca.example/my-account/2"),
            "{why:?}"
        );
        // One good value among others is enough.
        let values = vec!["v=spf1 -all".to_string(), value("")];
        assert_eq!(find(&values, &issuers(), ACCOUNT, false, 0), Ok(()));
        assert_eq!(find(&[], &issuers(), ACCOUNT, false, 0), Err(vec![]));
    }
}
