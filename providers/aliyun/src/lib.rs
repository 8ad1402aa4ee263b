//! A certkeeper DNS provider for Alibaba Cloud DNS ("Alidns"), RPC API version 2015-01-09.
//!
//! `present` finds the registered domain an FQDN belongs to through the API
//! (`DescribeDomains`, fetched once per provider and cached; never through DNS, whose SOA
//! answers may come from a test server or a CNAME target), then creates the TXT record with
//! `AddDomainRecord` (TTL 600, the lowest the free edition allows) and returns its
//! `RecordId`. `cleanup` deletes by that `RecordId` only, so a foreign record under the same
//! name is never touched. Requests are signed with Signature V1 (see `sign`), each attempt
//! with a fresh nonce and timestamp.
//!
//! Every answer is read up to 1 MiB, listings stop at 200 pages (and at a page longer than
//! asked), a redirect is an error (it is never followed: the request carries the AccessKey),
//! and `present` and `cleanup` each end within one deadline ([`OPERATION_DEADLINE`]), every
//! request, retry and page included (`certkeeper_dns::http`).
//!
//! With the `fake` feature, the `fake` module provides an in-memory Alidns for tests.
#![warn(missing_docs)]

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use certkeeper_dns::http::{Pager, within};
use certkeeper_dns::{DnsProvider, Error as DnsError, Operation, RecordHandle, TxtRecord};
use reqwest::Url;

mod api;
mod client;
pub mod config;
mod sign;

#[cfg(feature = "fake")]
pub mod fake;

use client::{CallError, Client};
use sign::Secret;

/// The public Alidns endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://alidns.aliyuncs.com";

/// The TTL of the records created: the lowest the free edition accepts (lower answers
/// `QuotaExceeded.TTL`).
pub const TTL: u32 = 600;

/// `DescribeDomains` page size (the API's maximum).
const DOMAINS_PAGE_SIZE: u32 = 100;
/// `DescribeDomainRecords` page size (the API's maximum).
const RECORDS_PAGE_SIZE: u32 = 500;
/// A bound on pages read for one listing, against an API that never stops paging: 20,000
/// domains, 100,000 records of one name.
const MAX_PAGES: u32 = 200;

pub use certkeeper_dns::http::{MAX_ANSWER, OPERATION_DEADLINE};

/// Why the provider could not be built from its configuration.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `access_key_id` is empty.
    #[error("access_key_id is empty; give the AccessKey ID of a RAM user allowed to edit Alidns")]
    EmptyAccessKeyId,
    /// `access_key_secret` is empty.
    #[error("access_key_secret is empty; give the AccessKey secret that belongs to access_key_id")]
    EmptyAccessKeySecret,
    /// A credential has white space around it (often a newline from a file).
    #[error("{field} has leading or trailing white space; remove it")]
    WhiteSpace {
        /// `access_key_id` or `access_key_secret`.
        field: &'static str,
    },
    /// The endpoint is not a usable URL.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client: {0}")]
    HttpClient(String),
}

/// Creates and removes TXT records through the Alidns API. Build one per pass and share it
/// between orders: it caches the account's domain list.
pub struct AliyunProvider {
    client: Client,
    endpoint: String,
    /// The account's domains, fetched on first use.
    domains: tokio::sync::Mutex<Option<Arc<Vec<Zone>>>>,
    /// The most one `present` or `cleanup` takes.
    deadline: Duration,
}

/// A registered domain.
#[derive(Clone, Debug)]
struct Zone {
    /// Lower-case ASCII (punycode) form, compared with FQDNs.
    ascii: String,
    /// The name as the API takes it in `DomainName`.
    api_name: String,
}

impl fmt::Debug for AliyunProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Neither the AccessKey ID nor the secret.
        f.debug_struct("AliyunProvider")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl AliyunProvider {
    /// A provider signing with `access_key_id`/`access_key_secret`, talking to `endpoint`
    /// ([`DEFAULT_ENDPOINT`], a regional one, or a test server's `http://127.0.0.1:PORT`).
    pub fn new(
        access_key_id: String,
        access_key_secret: String,
        endpoint: &str,
    ) -> Result<AliyunProvider, Error> {
        if access_key_id.is_empty() {
            return Err(Error::EmptyAccessKeyId);
        }
        if access_key_id.trim() != access_key_id {
            return Err(Error::WhiteSpace {
                field: "access_key_id",
            });
        }
        if access_key_secret.is_empty() {
            return Err(Error::EmptyAccessKeySecret);
        }
        if access_key_secret.trim() != access_key_secret {
            return Err(Error::WhiteSpace {
                field: "access_key_secret",
            });
        }
        let url = parse_endpoint(endpoint)?;
        let client = Client::new(url, access_key_id, Secret::new(access_key_secret))
            .map_err(|e| Error::HttpClient(e.to_string()))?;
        Ok(AliyunProvider {
            client,
            endpoint: endpoint.to_owned(),
            domains: tokio::sync::Mutex::new(None),
            deadline: OPERATION_DEADLINE,
        })
    }

    /// Replaces the deadline of each `present` and `cleanup` ([`OPERATION_DEADLINE`]
    /// otherwise): every request, retry and page of one operation included.
    pub fn with_deadline(mut self, deadline: Duration) -> AliyunProvider {
        self.deadline = deadline;
        self
    }

    /// The account's domains; fetched when not cached yet or when `refresh`. The flag says
    /// whether this call fetched them.
    async fn zones(&self, refresh: bool) -> Result<(Arc<Vec<Zone>>, bool), DnsError> {
        let mut cached = self.domains.lock().await;
        if let Some(zones) = cached.as_ref().filter(|_| !refresh) {
            return Ok((zones.clone(), false));
        }
        let zones = Arc::new(self.describe_domains().await?);
        *cached = Some(zones.clone());
        Ok((zones, true))
    }

    /// Every domain of the account, all pages.
    async fn describe_domains(&self) -> Result<Vec<Zone>, DnsError> {
        let mut zones = Vec::new();
        let page_size = DOMAINS_PAGE_SIZE.to_string();
        let per_page = DOMAINS_PAGE_SIZE as usize;
        let mut pager = Pager::new(
            "DescribeDomains",
            per_page,
            MAX_PAGES,
            per_page * MAX_PAGES as usize,
        );
        loop {
            let page_number = pager.next_page()?.to_string();
            let answer: api::DescribeDomains = self
                .client
                .call(
                    "DescribeDomains",
                    &[("PageNumber", &page_number), ("PageSize", &page_size)],
                )
                .await
                .map_err(map_error)?;
            let got = answer.domains.domain.len();
            pager.read(got)?;
            zones.extend(answer.domains.domain.into_iter().map(|d| {
                Zone {
                    ascii: d
                        .puny_code
                        .filter(|p| !p.is_empty())
                        .unwrap_or_else(|| d.domain_name.clone())
                        .trim_end_matches('.')
                        .to_ascii_lowercase(),
                    api_name: d.domain_name,
                }
            }));
            if got == 0 || zones.len() as u64 >= answer.total_count {
                break;
            }
        }
        Ok(zones)
    }

    /// The registered domain holding `fqdn` and the host record (RR) relative to it.
    async fn locate(&self, fqdn: &str) -> Result<(Zone, String), DnsError> {
        let name = fqdn.trim_end_matches('.').to_ascii_lowercase();
        let (zones, fetched) = self.zones(false).await?;
        if let Some(found) = pick_zone(&zones, &name) {
            return Ok(found);
        }
        if !fetched {
            // The domain may have been added since the list was fetched.
            let (zones, _) = self.zones(true).await?;
            if let Some(found) = pick_zone(&zones, &name) {
                return Ok(found);
            }
        }
        Err(DnsError::ZoneNotFound {
            fqdn: fqdn.to_owned(),
        })
    }

    /// The id of the TXT record `rr` = `value` in `zone`, if there is one.
    async fn find_record(
        &self,
        zone: &Zone,
        rr: &str,
        value: &str,
    ) -> Result<Option<String>, DnsError> {
        let page_size = RECORDS_PAGE_SIZE.to_string();
        let per_page = RECORDS_PAGE_SIZE as usize;
        // The records are looked at page by page and not kept.
        let mut pager = Pager::new(
            "DescribeDomainRecords",
            per_page,
            MAX_PAGES,
            per_page * MAX_PAGES as usize,
        );
        let mut seen = 0u64;
        loop {
            let page_number = pager.next_page()?.to_string();
            let answer: api::DescribeDomainRecords = self
                .client
                .call(
                    "DescribeDomainRecords",
                    &[
                        ("DomainName", &zone.api_name),
                        // A fuzzy filter: the exact match is below.
                        ("RRKeyWord", rr),
                        ("TypeKeyWord", "TXT"),
                        ("PageNumber", &page_number),
                        ("PageSize", &page_size),
                    ],
                )
                .await
                .map_err(map_error)?;
            let records = answer.domain_records.record;
            pager.read(records.len())?;
            seen += records.len() as u64;
            if let Some(r) = records.iter().find(|r| {
                r.rr.eq_ignore_ascii_case(rr)
                    && r.kind.eq_ignore_ascii_case("TXT")
                    && r.value == value
            }) {
                return Ok(Some(r.record_id.clone()));
            }
            if records.is_empty() || seen >= answer.total_count {
                return Ok(None);
            }
        }
    }
}

#[async_trait]
impl DnsProvider for AliyunProvider {
    async fn present(&self, record: &TxtRecord) -> Result<RecordHandle, DnsError> {
        within(self.deadline, Operation::Present, self.add(record)).await
    }

    async fn cleanup(&self, handle: &RecordHandle) -> Result<(), DnsError> {
        within(self.deadline, Operation::Cleanup, self.delete(handle)).await
    }
}

impl AliyunProvider {
    /// `present`, without its deadline.
    async fn add(&self, record: &TxtRecord) -> Result<RecordHandle, DnsError> {
        let (zone, rr) = self.locate(&record.fqdn).await?;
        let ttl = TTL.to_string();
        let added = self
            .client
            .call::<api::AddDomainRecord>(
                "AddDomainRecord",
                &[
                    ("DomainName", &zone.api_name),
                    ("RR", &rr),
                    ("Type", "TXT"),
                    ("Value", &record.value),
                    ("TTL", &ttl),
                ],
            )
            .await;
        let id = match added {
            Ok(answer) => answer.record_id,
            // The same name and value exist already: ours (from an earlier attempt whose
            // answer was lost, or an earlier run), so it is found and used.
            Err(e) if e.code() == Some("DomainRecordDuplicate") => {
                match self.find_record(&zone, &rr, &record.value).await? {
                    Some(id) => id,
                    None => return Err(map_error(e)),
                }
            }
            Err(e) if e.code() == Some("InvalidDomainName.NoExist") => {
                // The domain left the account since the list was fetched.
                *self.domains.lock().await = None;
                return Err(DnsError::ZoneNotFound {
                    fqdn: record.fqdn.clone(),
                });
            }
            Err(e) => return Err(map_error(e)),
        };
        Ok(RecordHandle {
            record: record.clone(),
            id: Some(id),
            zone: Some(zone.api_name),
        })
    }

    /// `cleanup`, without its deadline.
    async fn delete(&self, handle: &RecordHandle) -> Result<(), DnsError> {
        let Some(id) = handle.id.as_deref() else {
            return Err(DnsError::Other(
                "the record handle has no RecordId; only records created by present can be \
                 removed"
                    .into(),
            ));
        };
        match self
            .client
            .call::<api::DeleteDomainRecord>("DeleteDomainRecord", &[("RecordId", id)])
            .await
        {
            Ok(_) => Ok(()),
            // The record is gone already (an earlier cleanup whose answer was lost).
            Err(e) if e.code() == Some("DomainRecordNotBelongToUser") => Ok(()),
            Err(e) => Err(map_error(e)),
        }
    }
}

/// Validates the endpoint: an http(s) URL with a host and no query.
fn parse_endpoint(endpoint: &str) -> Result<Url, Error> {
    let invalid = |reason: &str| Error::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let url = Url::parse(endpoint)
        .map_err(|e| invalid(&format!("{e}; give a URL such as {DEFAULT_ENDPOINT}")))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(invalid(
            "the scheme must be https (or http for a local test server)",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("the URL has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("the URL must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Not echoed: what is in it may be a secret.
        return Err(Error::InvalidEndpoint {
            endpoint: "<redacted>".to_owned(),
            reason: "the URL must not carry credentials".to_owned(),
        });
    }
    Ok(url)
}

/// The longest domain that `name` (lower-case, no trailing dot) is in, on a label boundary,
/// with the RR relative to it (`@` for the apex).
fn pick_zone(zones: &[Zone], name: &str) -> Option<(Zone, String)> {
    zones
        .iter()
        .filter_map(|z| {
            if z.ascii.is_empty() {
                return None;
            }
            if name == z.ascii {
                return Some((z, "@".to_owned()));
            }
            let rr = name.strip_suffix(&z.ascii)?.strip_suffix('.')?;
            (!rr.is_empty()).then(|| (z, rr.to_owned()))
        })
        .max_by_key(|(z, _)| z.ascii.len())
        .map(|(z, rr)| (z.clone(), rr))
}

/// Maps an API failure to the provider error, with a clear message for what users can fix.
fn map_error(e: CallError) -> DnsError {
    match e {
        CallError::Final(e) => e,
        CallError::Api {
            status,
            body,
            attempts,
        } => {
            let code = body.code.as_str();
            match code {
                "SignatureDoesNotMatch" => DnsError::Auth(format!(
                    "the AccessKeySecret does not match the AccessKey ({code}); check \
                     access_key_secret"
                )),
                "InvalidAccessKeyId.Inactive" => DnsError::Auth(format!(
                    "the AccessKey is disabled ({code}); enable it in the RAM console or \
                     configure an active one"
                )),
                _ if code == "InvalidAccessKeyId" || code.starts_with("InvalidAccessKeyId.") => {
                    DnsError::Auth(format!(
                        "the AccessKey does not exist ({code}); check access_key_id"
                    ))
                }
                _ if code.starts_with("Forbidden") || code == "NoPermission" => {
                    DnsError::Auth(format!(
                        "the AccessKey has no permission for Alidns ({body}); grant its RAM \
                         user AliyunDNSFullAccess, or a policy allowing alidns:DescribeDomains, \
                         alidns:DescribeDomainRecords, alidns:AddDomainRecord and \
                         alidns:DeleteDomainRecord"
                    ))
                }
                _ if code.starts_with("InvalidTimeStamp") => DnsError::Api {
                    status,
                    message: format!(
                        "{body} (the request's time was more than 15 minutes off Aliyun's; \
                         check the system clock, e.g. that NTP is running)"
                    ),
                },
                _ => DnsError::Api {
                    status,
                    message: with_attempts(body.to_string(), attempts),
                },
            }
        }
        CallError::Unexpected {
            status,
            detail,
            attempts,
        } => DnsError::Api {
            status,
            message: with_attempts(detail, attempts),
        },
        CallError::Transport { detail, attempts } => {
            DnsError::Transport(with_attempts(detail, attempts))
        }
    }
}

/// Notes that retries were exhausted.
fn with_attempts(message: String, attempts: u32) -> String {
    if attempts > 1 {
        format!("{message} (gave up after {attempts} attempts)")
    } else {
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zones(names: &[&str]) -> Vec<Zone> {
        names
            .iter()
            .map(|n| Zone {
                ascii: (*n).to_owned(),
                api_name: (*n).to_owned(),
            })
            .collect()
    }

    #[test]
    fn longest_suffix_on_a_label_boundary() {
        let z = zones(&[
            "example.com",
            "example.co.uk",
            "www.example.com",
            "ample.com",
        ]);
        let pick = |n: &str| pick_zone(&z, n).map(|(z, rr)| (z.ascii, rr));
        assert_eq!(
            pick("_acme-challenge.www.example.co.uk"),
            Some(("example.co.uk".into(), "_acme-challenge.www".into()))
        );
        assert_eq!(
            pick("_acme-challenge.www.example.com"),
            Some(("www.example.com".into(), "_acme-challenge".into()))
        );
        assert_eq!(
            pick("_acme-challenge.example.com"),
            Some(("example.com".into(), "_acme-challenge".into()))
        );
        assert_eq!(
            pick("example.com"),
            Some(("example.com".into(), "@".into()))
        );
        assert_eq!(pick("_acme-challenge.notexample.org"), None);
        assert_eq!(pick("co.uk"), None);
        assert_eq!(pick("xexample.co.uk"), None);
    }

    #[test]
    fn endpoints() {
        assert!(parse_endpoint(DEFAULT_ENDPOINT).is_ok());
        assert!(parse_endpoint("http://127.0.0.1:8080").is_ok());
        assert_eq!(
            parse_endpoint("alidns.aliyuncs.com")
                .map(|_| ())
                .unwrap_err()
                .to_string(),
            "invalid endpoint \"alidns.aliyuncs.com\": relative URL without a base; give a \
             URL such as https://alidns.aliyuncs.com"
        );
        assert_eq!(
            parse_endpoint("ftp://alidns.aliyuncs.com")
                .map(|_| ())
                .unwrap_err()
                .to_string(),
            "invalid endpoint \"ftp://alidns.aliyuncs.com\": the scheme must be https (or http \
             for a local test server)"
        );
        assert!(parse_endpoint("https://alidns.aliyuncs.com/?a=b").is_err());
    }
}
