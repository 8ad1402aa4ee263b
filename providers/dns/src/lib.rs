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
    /// Anything else, with the provider's own detail.
    #[error(transparent)]
    Other(Box<dyn StdError + Send + Sync>),
}
