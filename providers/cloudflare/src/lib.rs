//! A certkeeper DNS provider for Cloudflare's API v4.
//!
//! It authenticates with an API token (`Authorization: Bearer`), the kind careful users scope
//! to Zone:DNS:Edit on one zone. The zone of a record is found by asking `GET /zones?name=`
//! for each suffix of the name, longest first, and cached for the provider's life (one pass,
//! shared by all orders); a token without Zone:Read cannot do that lookup, so a zone id can be
//! pinned instead. `present` creates one TXT record and returns a handle holding its record id
//! and zone id; `cleanup` deletes that id and nothing else, so that two orders sharing one
//! `_acme-challenge` name (an apex and its wildcard) never remove each other's value, nor
//! anyone else's.
//!
//! Rate limiting (429, honouring `Retry-After`), 5xx answers and transport errors are retried
//! with backoff and jitter ([`DEFAULT_RETRY`], a [`RetryPolicy`]: certkeeper's one retry
//! policy, from `certkeeper_dns::retry`). Errors carry Cloudflare's `code: message`; the token
//! never appears in any error or `Debug` output. The crate logs nothing.
//!
//! Every answer is read up to 1 MiB, listings stop at 50 pages (and at a page longer than
//! asked), a redirect is an error (it is never followed: the request carries the token), and
//! `present` and `cleanup` each end within one deadline ([`OPERATION_DEADLINE`]), every
//! request, retry and page included (`certkeeper_dns::http`).
//!
//! With feature `fake`, module `fake` is an in-memory fake of the API for tests.
#![warn(missing_docs)]

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use certkeeper_dns::http::within;
use certkeeper_dns::{DnsProvider, Error as DnsError, Operation, RecordHandle, TxtRecord};

pub mod api;
mod client;
pub mod config;
#[cfg(feature = "fake")]
pub mod fake;

pub use certkeeper_dns::http::{MAX_ANSWER, OPERATION_DEADLINE};
pub use certkeeper_dns::retry::{Jitter, RetryAfter, RetryPolicy};
pub use client::{
    CONNECT_TIMEOUT, DEFAULT_ATTEMPTS, DEFAULT_BACKOFF, DEFAULT_RETRY, DEFAULT_TOTAL,
    MAX_RETRY_AFTER, REQUEST_TIMEOUT,
};
use client::{CallError, Client};

/// Cloudflare's public API base.
pub const DEFAULT_API_BASE: &str = "https://api.cloudflare.com/client/v4";
/// The TTL of the records created, in seconds.
pub const TTL: u32 = 120;

/// Creates and removes TXT records through Cloudflare's API v4.
pub struct CloudflareProvider {
    client: Client,
    zone_id: Option<String>,
    /// What the zone lookups found, by candidate name: `Some(zone id)` for a zone, `None`
    /// for a name that is no zone. Lives as long as the provider (one pass).
    zones: Mutex<HashMap<String, Option<String>>>,
    /// The most one `present` or `cleanup` takes.
    deadline: Duration,
}

impl fmt::Debug for CloudflareProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudflareProvider")
            .field("api_base", &self.client.api_base())
            .field("zone_id", &self.zone_id)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl CloudflareProvider {
    /// A provider using the API token `token` against `api_base` ([`DEFAULT_API_BASE`] in
    /// production). With `zone_id`, every record goes to that zone and no zone lookup is
    /// made (for tokens without Zone:Read). Builds the one HTTP client all calls share
    /// ([`REQUEST_TIMEOUT`], [`CONNECT_TIMEOUT`]).
    pub fn new(
        token: String,
        api_base: &str,
        zone_id: Option<String>,
    ) -> Result<CloudflareProvider, Error> {
        let malformed = |id: &str| id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric());
        if let Some(id) = zone_id.as_deref().filter(|id| malformed(id)) {
            return Err(Error::InvalidZoneId {
                zone_id: id.to_owned(),
            });
        }
        Ok(CloudflareProvider {
            client: Client::new(&token, api_base)?,
            zone_id,
            zones: Mutex::new(HashMap::new()),
            deadline: OPERATION_DEADLINE,
        })
    }

    /// Replaces the retry policy ([`DEFAULT_RETRY`] otherwise).
    pub fn with_retry(mut self, retry: RetryPolicy) -> CloudflareProvider {
        self.client.set_retry(retry);
        self
    }

    /// Replaces the deadline of each `present` and `cleanup` ([`OPERATION_DEADLINE`]
    /// otherwise): every request, retry and page of one operation included.
    pub fn with_deadline(mut self, deadline: Duration) -> CloudflareProvider {
        self.deadline = deadline;
        self
    }

    /// The zone `fqdn` belongs to: the pinned one, or the longest suffix Cloudflare knows as
    /// a zone.
    async fn zone(&self, fqdn: &str) -> Result<ZoneRef, DnsError> {
        if let Some(id) = &self.zone_id {
            return Ok(ZoneRef {
                id: id.clone(),
                name: None,
                pinned: true,
            });
        }
        let name = fqdn.trim_end_matches('.').to_ascii_lowercase();
        for candidate in suffixes(&name) {
            let known = self.cache().get(candidate).cloned();
            let id = match known {
                Some(id) => id,
                None => {
                    let zones = self
                        .client
                        .zones_named(candidate)
                        .await
                        .map_err(|e| map_error(e, Step::ZoneLookup { fqdn }))?;
                    let id = zones
                        .into_iter()
                        .find(|z| z.name.eq_ignore_ascii_case(candidate))
                        .map(|z| z.id);
                    self.cache().insert(candidate.to_owned(), id.clone());
                    id
                }
            };
            if let Some(id) = id {
                return Ok(ZoneRef {
                    id,
                    name: Some(candidate.to_owned()),
                    pinned: false,
                });
            }
        }
        Err(DnsError::ZoneNotFound {
            fqdn: fqdn.to_owned(),
        })
    }

    /// The zone a handle names, with its name when a lookup of this provider found it.
    fn zone_of_handle(&self, id: &str) -> ZoneRef {
        let name = self
            .cache()
            .iter()
            .find(|(_, zone)| zone.as_deref() == Some(id))
            .map(|(name, _)| name.clone());
        ZoneRef {
            id: id.to_owned(),
            name,
            pinned: self.zone_id.as_deref() == Some(id),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<String>>> {
        // The map holds no invariant a panicking holder could break.
        self.zones.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl DnsProvider for CloudflareProvider {
    async fn present(&self, record: &TxtRecord) -> Result<RecordHandle, DnsError> {
        within(self.deadline, Operation::Present, self.create(record)).await
    }

    async fn cleanup(&self, handle: &RecordHandle) -> Result<(), DnsError> {
        within(self.deadline, Operation::Cleanup, self.delete(handle)).await
    }
}

impl CloudflareProvider {
    /// `present`, without its deadline.
    async fn create(&self, record: &TxtRecord) -> Result<RecordHandle, DnsError> {
        let zone = self.zone(&record.fqdn).await?;
        let name = record.fqdn.trim_end_matches('.');
        let handle = |id: String| RecordHandle {
            record: record.clone(),
            id: Some(id),
            zone: Some(zone.id.clone()),
        };
        match self
            .client
            .create_txt(&zone.id, name, &record.value, TTL)
            .await
        {
            Ok(created) => Ok(handle(created.id)),
            // Our value is already there: a retried create whose first answer was lost, or
            // an earlier run's leftover. The value is this order's own digest, so the record
            // is ours; find its id (filters compare literally, as we sent it).
            Err(CallError::Api { errors, .. }) if errors.has_code(IDENTICAL_RECORD) => {
                let found = self
                    .client
                    .find_txt(&zone.id, name, &record.value)
                    .await
                    .map_err(|e| map_error(e, Step::Records { zone: &zone }))?;
                match found {
                    Some(existing) => Ok(handle(existing.id)),
                    None => Err(DnsError::Api {
                        status: 400,
                        message: format!(
                            "{errors}, but no TXT record {name} with this value is listed"
                        ),
                    }),
                }
            }
            Err(e) => Err(map_error(e, Step::Records { zone: &zone })),
        }
    }

    /// `cleanup`, without its deadline.
    async fn delete(&self, handle: &RecordHandle) -> Result<(), DnsError> {
        let Some(id) = handle.id.as_deref() else {
            return Err(DnsError::Other(Box::new(Error::MissingRecordId)));
        };
        let zone = match &handle.zone {
            Some(zone) => self.zone_of_handle(zone),
            None => self.zone(&handle.record.fqdn).await?,
        };
        match self.client.delete_record(&zone.id, id).await {
            Ok(()) => Ok(()),
            // Already gone (a retried delete whose first answer was lost, or removed by hand).
            Err(CallError::Api { errors, .. }) if errors.has_code(RECORD_NOT_FOUND) => Ok(()),
            Err(e) => Err(map_error(e, Step::Records { zone: &zone })),
        }
    }
}

/// Why a provider could not be built, or a handle cannot be cleaned up. API errors are
/// [`certkeeper_dns::Error`]s.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The token is empty.
    #[error("the API token is empty")]
    EmptyToken,
    /// The token holds characters an HTTP header cannot carry.
    #[error(
        "the API token contains spaces or characters other than printable ASCII; \
         check api_token for a stray space or line break"
    )]
    MalformedToken,
    /// `api_base` is no usable http(s) URL.
    #[error("api_base {api_base:?} is not usable: {reason}")]
    InvalidApiBase {
        /// As configured.
        api_base: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The pinned zone id is not of the form Cloudflare uses.
    #[error(
        "zone_id {zone_id:?} is not a Cloudflare zone id (32 hex digits, on the zone's \
         Overview page)"
    )]
    InvalidZoneId {
        /// As configured.
        zone_id: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// A handle without a record id: this provider deletes only by id.
    #[error(
        "the record handle carries no record id; cleanup deletes only the record present \
         created, by its id"
    )]
    MissingRecordId,
}

/// A zone, and how we know it.
#[derive(Debug)]
struct ZoneRef {
    id: String,
    /// The zone's name, when a lookup found it.
    name: Option<String>,
    /// Configured as `zone_id`.
    pinned: bool,
}

/// Which kind of call failed.
enum Step<'a> {
    ZoneLookup { fqdn: &'a str },
    Records { zone: &'a ZoneRef },
}

/// Turns what the API said into certkeeper's error, with the fix where one is known.
fn map_error(error: CallError, step: Step<'_>) -> DnsError {
    let after = |n: Option<u32>| match n {
        None => String::new(),
        Some(1) => " (gave up after 1 attempt)".to_owned(),
        Some(n) => format!(" (gave up after {n} attempts)"),
    };
    let (status, errors, gave_up_after) = match error {
        CallError::Final(e) => return e,
        CallError::Transport {
            detail,
            gave_up_after,
        } => return DnsError::Transport(format!("{detail}{}", after(gave_up_after))),
        CallError::Unexpected {
            status,
            detail,
            gave_up_after,
        } => {
            return DnsError::Api {
                status,
                message: format!("{detail}{}", after(gave_up_after)),
            };
        }
        CallError::Api {
            status,
            errors,
            gave_up_after,
        } => (status, errors, gave_up_after),
    };
    if errors.has_code(MALFORMED_AUTH) {
        return DnsError::Auth(format!("{errors}; {BAD_TOKEN_HINT}"));
    }
    if errors.has_code(REFUSED_TOKEN) {
        return DnsError::Auth(match step {
            Step::ZoneLookup { fqdn } => format!(
                "{errors} (looking up the zone of {fqdn}); {BAD_TOKEN_HINT}; a token without \
                 Zone:Read cannot look zones up: grant it Zone:Read or set zone_id"
            ),
            // The same token just found the zone: it is valid, but not for DNS edits there.
            Step::Records {
                zone: ZoneRef {
                    name: Some(name), ..
                },
            } => format!("{errors}; the token needs Zone:DNS:Edit on {name}"),
            Step::Records { zone } => format!(
                "{errors}; {BAD_TOKEN_HINT}, and that the token has Zone:DNS:Edit on zone {}",
                zone.id
            ),
        });
    }
    let hint = match step {
        Step::Records { zone } if zone.pinned && errors.has_code(BAD_ZONE_ID) => {
            format!("; check zone_id {} (on the zone's Overview page)", zone.id)
        }
        _ => String::new(),
    };
    DnsError::Api {
        status,
        message: format!("{errors}{hint}{}", after(gave_up_after)),
    }
}

/// `a.b.c`, `b.c`, `c`.
fn suffixes(name: &str) -> impl Iterator<Item = &str> {
    let starts = std::iter::once(0).chain(name.match_indices('.').map(|(i, _)| i + 1));
    starts
        .map(move |i| &name[i..])
        .filter(|s| !s.is_empty() && !s.starts_with('.'))
}

/// What to check when the token is refused.
const BAD_TOKEN_HINT: &str = "check api_token, and that it is an API token, not a global API key";
/// A malformed `Authorization` header (6003 "Invalid request headers", 6111 "Invalid format
/// for Authorization header").
const MALFORMED_AUTH: &[i64] = &[6003, 6111];
/// A refused token: 9109 "Invalid access token" / "Unauthorized to access requested
/// resource", 10000 "Authentication error".
const REFUSED_TOKEN: &[i64] = &[9109, 10000];
/// "An identical record already exists." (81057 in older answers).
const IDENTICAL_RECORD: &[i64] = &[81058, 81057];
/// "Record does not exist."
const RECORD_NOT_FOUND: &[i64] = &[81044];
/// "Could not route to /zones/..., perhaps your object identifier is invalid?", "No route
/// for that URI".
const BAD_ZONE_ID: &[i64] = &[7003, 7000];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_longest_first() {
        let all: Vec<_> = suffixes("_acme-challenge.www.example.com").collect();
        assert_eq!(
            all,
            [
                "_acme-challenge.www.example.com",
                "www.example.com",
                "example.com",
                "com"
            ]
        );
        assert_eq!(suffixes("").count(), 0);
        assert_eq!(suffixes("a..b").collect::<Vec<_>>(), ["a..b", "b"]);
    }

    #[test]
    fn construction_errors() {
        let cases: &[(&str, &str, Option<&str>, &str)] = &[
            ("", DEFAULT_API_BASE, None, "the API token is empty"),
            (
                "abc def",
                DEFAULT_API_BASE,
                None,
                "the API token contains spaces or characters other than printable ASCII; \
                 check api_token for a stray space or line break",
            ),
            (
                "abc\n",
                DEFAULT_API_BASE,
                None,
                "the API token contains spaces or characters other than printable ASCII; \
                 check api_token for a stray space or line break",
            ),
            (
                "t",
                "api.cloudflare.com",
                None,
                "api_base \"api.cloudflare.com\" is not usable: relative URL without a base",
            ),
            (
                "t",
                "ftp://api.cloudflare.com/client/v4",
                None,
                "api_base \"ftp://api.cloudflare.com/client/v4\" is not usable: it must be an \
                 http:// or https:// URL",
            ),
            (
                "t",
                "https://api.cloudflare.com/client/v4?x=1",
                None,
                "api_base \"https://api.cloudflare.com/client/v4?x=1\" is not usable: it must \
                 not have a query or a fragment",
            ),
            (
                "t",
                DEFAULT_API_BASE,
                Some("../zones"),
                "zone_id \"../zones\" is not a Cloudflare zone id (32 hex digits, on the zone's \
                 Overview page)",
            ),
            (
                "t",
                DEFAULT_API_BASE,
                Some(""),
                "zone_id \"\" is not a Cloudflare zone id (32 hex digits, on the zone's \
                 Overview page)",
            ),
        ];
        for (token, base, zone, want) in cases {
            let err = CloudflareProvider::new(token.to_string(), base, zone.map(str::to_owned))
                .expect_err(want);
            assert_eq!(err.to_string(), *want);
        }
    }

    #[test]
    fn debug_redacts_the_token() {
        let p = CloudflareProvider::new("sekret-token".into(), DEFAULT_API_BASE, None)
            .expect("provider");
        let debug = format!("{p:?}");
        assert!(!debug.contains("sekret"), "{debug}");
        assert_eq!(
            debug,
            "CloudflareProvider { api_base: \"https://api.cloudflare.com/client/v4\", \
             zone_id: None, token: \"<redacted>\" }"
        );
    }
}
