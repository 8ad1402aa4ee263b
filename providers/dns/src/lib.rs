//! The DNS provider seam of certkeeper.
//!
//! A DNS provider creates and removes the TXT records that ACME DNS-01 challenges need. The
//! trait lives in this small crate so that the application and every provider depend on it,
//! while providers never depend on the application (the same split as rustls'
//! `CryptoProvider` and its implementation crates).
#![warn(missing_docs)]

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

pub mod config;
#[cfg(feature = "http")]
pub mod http;
pub mod retry;
#[cfg(feature = "testkit")]
pub mod testkit;

/// A TXT record to publish for a DNS-01 challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxtRecord {
    /// Fully qualified name, lower-case, with the trailing dot
    /// (`_acme-challenge.example.com.`), after CNAME following.
    pub fqdn: String,
    /// The record's value (the challenge's key authorization digest).
    pub value: String,
}

/// Names exactly what `present` created, so that `cleanup` removes that and nothing else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordHandle {
    /// The record that was published.
    pub record: TxtRecord,
    /// The provider's own identifier of the record (a record id), if it has one.
    pub id: Option<String>,
    /// The zone the record was created in, if the provider resolved one.
    pub zone: Option<String>,
}

/// How long to wait for a record to become visible, and how often to look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Propagation {
    /// Give up after this long.
    pub timeout: Duration,
    /// Look again after this long.
    pub poll_interval: Duration,
}

/// The default propagation timeout (lego's default).
pub const DEFAULT_PROPAGATION_TIMEOUT: Duration = Duration::from_secs(60);
/// The default propagation poll interval (lego's default).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);

impl Default for Propagation {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_PROPAGATION_TIMEOUT,
            poll_interval: DEFAULT_POLL_INTERVAL,
        }
    }
}

/// Creates and removes TXT records through one DNS provider's API.
#[async_trait]
pub trait DnsProvider: fmt::Debug + Send + Sync {
    /// Creates the TXT record; returns a handle naming exactly what was created.
    async fn present(&self, record: &TxtRecord) -> Result<RecordHandle, Error>;
    /// Deletes the record created by `present`, and nothing else.
    async fn cleanup(&self, handle: &RecordHandle) -> Result<(), Error>;
    /// Propagation timeout and poll interval this provider needs.
    fn propagation(&self) -> Propagation {
        Propagation::default()
    }
}

/// What a provider was doing, for [`Error::Deadline`].
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// [`DnsProvider::present`].
    Present,
    /// [`DnsProvider::cleanup`].
    Cleanup,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Present => "creating the record",
            Operation::Cleanup => "removing the record",
        })
    }
}

/// Why a provider call failed. Messages never include secrets nor the provider's name (the
/// caller adds which provider, zone and record).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The provider refused the credentials.
    #[error("credentials were refused: {0}")]
    Auth(String),
    /// No zone managed by this provider contains the name.
    #[error("no zone found for {fqdn}")]
    ZoneNotFound {
        /// The name that was looked up.
        fqdn: String,
    },
    /// The provider's API answered with an error.
    #[error("api error (HTTP {status}): {message}")]
    Api {
        /// HTTP status code.
        status: u16,
        /// The vendor's error text, as `code: message`.
        message: String,
    },
    /// The provider could not be reached.
    #[error("transport error: {0}")]
    Transport(String),
    /// The API answered with a redirect. It is not followed: the request carries credentials.
    /// Only the target's host is kept, never its path or query.
    #[error(
        "the API answered HTTP {status}, a redirect{}; redirects are not followed, since the \
         request carries credentials: configure the API's own address",
        host.as_deref().map(|h| format!(" to {h}")).unwrap_or_default()
    )]
    Redirect {
        /// HTTP status code (3xx).
        status: u16,
        /// The host of the `Location`, when it names one.
        host: Option<String>,
    },
    /// An answer was larger than any answer of the API: it was not read further.
    #[error(
        "the answer to {call} is larger than {} KiB, more than the API ever answers; it was \
         not read further",
        limit / 1024
    )]
    AnswerTooLarge {
        /// The call (`GET dns_records`, `DescribeDomains`).
        call: String,
        /// The most read of one answer, in bytes.
        limit: usize,
    },
    /// A listing page held more items than were asked for.
    #[error(
        "{call} answered {count} items on a page of {per_page}; the API pages no more than asked"
    )]
    PageTooLong {
        /// The call.
        call: String,
        /// Items on the page.
        count: usize,
        /// Items asked for.
        per_page: usize,
    },
    /// A listing went on past the pages or items certkeeper reads of one.
    #[error("{call} goes on past {limit}; certkeeper reads no more of one listing")]
    ListingTooLong {
        /// The call.
        call: String,
        /// What was reached: `50 pages`, `100000 items`.
        limit: String,
    },
    /// One operation (every request, retry and page of it) did not end within its deadline.
    #[error(
        "{operation} did not finish within {} (every request, retry and page \
         included); the API is too slow or not answering",
        certkeeper_base::text::seconds(*.deadline)
    )]
    Deadline {
        /// What was being done.
        operation: Operation,
        /// The deadline.
        deadline: Duration,
    },
    /// Anything else, with the provider's own detail.
    #[error(transparent)]
    Other(Box<dyn StdError + Send + Sync>),
}
