//! The crate's one error type. No variant carries a password, a key or a sealed key: an
//! endpoint is shown as configured (userinfo is refused at connect), a record by its key.

use std::error::Error as StdError;
use std::path::PathBuf;
use std::time::Duration;

/// What went wrong talking to etcd or reading what it holds.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A name that would not make one path segment of a key (fleet, certificate or host).
    #[error(
        "{what} {value:?} is not a valid name: use letters, digits, '.', '_' or '-' (1 to 128)"
    )]
    InvalidName { what: &'static str, value: String },
    /// An endpoint that is not `http(s)://host:port`.
    #[error("etcd endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        endpoint: String,
        reason: &'static str,
    },
    /// A TLS or credential file that could not be read.
    #[error("reading the etcd {what} {}: {source}", path.display())]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A TLS option that needs a companion (a client certificate without its key).
    #[error("etcd tls: {0}")]
    Tls(&'static str),
    /// A username without a password, or the reverse.
    #[error("etcd auth: {0}")]
    Auth(&'static str),
    /// etcd did not answer in time (no quorum, no member reachable, a stalled link).
    #[error("etcd did not answer the {op} within {}", certkeeper_base::text::seconds(*timeout))]
    Timeout { op: &'static str, timeout: Duration },
    /// etcd answered with an error, or the link to it failed.
    #[error("etcd {op} failed: {source}")]
    Etcd {
        op: &'static str,
        #[source]
        source: etcd_client::Error,
    },
    /// A guarded write lost: someone else wrote the key since it was read.
    #[error("{key}: changed by another writer since it was read ({expected}); read it again")]
    Conflict { key: String, expected: Revision },
    /// `set_verdict` or a revert named a generation that etcd does not keep.
    #[error("certificate {cert}: generation {serial} is not kept in etcd")]
    UnknownGeneration { cert: String, serial: u64 },
    /// A write that only the leader may make, from a leadership that has ended.
    #[error("certificate {cert}: this host no longer leads it")]
    NotLeader { cert: String },
    /// A new generation whose serial is not the one after the current generation's.
    #[error(
        "certificate {cert}: generation {serial} cannot follow the current one: use serial {next}"
    )]
    SerialNotNext {
        cert: String,
        serial: u64,
        next: u64,
    },
    /// A value under the fleet's prefix that is not a record of this version.
    #[error("{key}: not a valid record: {source}")]
    Record {
        key: String,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
}

impl Error {
    /// Whether etcd could not be reached or had no quorum (as opposed to an answer that
    /// refused the request): the caller keeps what it has and waits.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Timeout { .. } => true,
            Error::Etcd { source, .. } => crate::unavailable(source),
            _ => false,
        }
    }
}

/// The revision a guarded write expects: what the writer read (`Some(mod_revision)`), or
/// that the key did not exist (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revision(pub Option<i64>);

impl std::fmt::Display for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(r) => write!(f, "at revision {r}"),
            None => f.write_str("absent"),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_reads_as_one_line() {
        let cases: Vec<(Error, &str)> = vec![
            (
                Error::InvalidName {
                    what: "host id",
                    value: "a/b".into(),
                },
                "host id \"a/b\" is not a valid name: use letters, digits, '.', '_' or '-' (1 to 128)",
            ),
            (
                Error::InvalidEndpoint {
                    endpoint: "x".into(),
                    reason: "use http://host:port or https://host:port",
                },
                "etcd endpoint \"x\": use http://host:port or https://host:port",
            ),
            (
                Error::ReadFile {
                    what: "CA file",
                    path: "/etc/certkeeper/etcd-ca.pem".into(),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                },
                "reading the etcd CA file /etc/certkeeper/etcd-ca.pem: entity not found",
            ),
            (
                Error::Tls("cert_file and key_file go together"),
                "etcd tls: cert_file and key_file go together",
            ),
            (
                Error::Auth("a password needs a username"),
                "etcd auth: a password needs a username",
            ),
            (
                Error::Timeout {
                    op: "publish",
                    timeout: Duration::from_secs(5),
                },
                "etcd did not answer the publish within 5s",
            ),
            (
                Error::Conflict {
                    key: "/certkeeper/p/certs/www/current".into(),
                    expected: Revision(Some(42)),
                },
                "/certkeeper/p/certs/www/current: changed by another writer since it was read (at revision 42); read it again",
            ),
            (
                Error::Conflict {
                    key: "k".into(),
                    expected: Revision(None),
                },
                "k: changed by another writer since it was read (absent); read it again",
            ),
            (
                Error::UnknownGeneration {
                    cert: "www".into(),
                    serial: 3,
                },
                "certificate www: generation 3 is not kept in etcd",
            ),
            (
                Error::SerialNotNext {
                    cert: "www".into(),
                    serial: 9,
                    next: 4,
                },
                "certificate www: generation 9 cannot follow the current one: use serial 4",
            ),
            (
                Error::NotLeader { cert: "www".into() },
                "certificate www: this host no longer leads it",
            ),
        ];
        for (err, expected) in cases {
            assert_eq!(err.to_string(), expected);
        }
    }
}
