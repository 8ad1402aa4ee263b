//! The records the fleet keeps in etcd, as JSON. They hold nothing secret in clear: the
//! private key travels sealed (the caller seals it with the fleet key; this crate stores the
//! sealed bytes as given), because etcd keeps values in plain text on its disks and shows
//! them to anyone with read access.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;

/// One issued certificate for the whole fleet: `certs/<cert>/current`, and kept under
/// `certs/<cert>/generations/<serial>` for a revert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    /// Increases by at least one with every generation of a certificate.
    pub serial: u64,
    /// SHA-256 of the leaf's DER, hex.
    pub fingerprint: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// The host that issued it.
    pub issued_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// Leaf then intermediates, PEM.
    pub fullchain_pem: String,
    /// The private key sealed by the caller with the fleet key, stored as base64.
    pub sealed_key: SealedKey,
    pub verdict: Verdict,
}

/// Sealed private-key bytes, opaque to this crate. Its `Debug` shows the length only.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedKey(pub Vec<u8>);

impl std::fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedKey({} bytes)", self.0.len())
    }
}

impl Serialize for SealedKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for SealedKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map(SealedKey)
            .map_err(|_| serde::de::Error::custom("sealed_key is not base64"))
    }
}

/// Whether a generation may be deployed beyond the canary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Verdict {
    /// Published, the canary has not served it yet.
    Pending,
    /// Enough canary hosts serve it: every host deploys it.
    Good {
        by: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// Too many hosts failed it: hosts that took it revert to the previous one.
    Bad {
        by: String,
        why: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

/// One host's state for one certificate: `certs/<cert>/hosts/<host>`, attached to the host's
/// lease, so that it disappears when the host stops renewing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    /// The generation the host serves, if any.
    pub serving: Option<u64>,
    pub result: HostResult,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Why, for a failure or a revert; one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// The last thing a host did with a certificate's generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostResult {
    /// Staged, reloaded, verified and committed.
    Deployed,
    /// The deploy failed and the host reverted to what it served.
    Failed,
    /// The host went back to the previous generation (the current one was marked bad).
    Reverted,
    /// The host holds back (no seal key, pending verdict, …).
    Waiting,
}

/// The order in flight for a certificate: `certs/<cert>/order`. It outlives the leader that
/// placed it, so that the next leader resumes it rather than placing another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRecord {
    /// Opaque to this crate (the ACME order URL).
    pub order: String,
    /// The host that placed it.
    pub host: String,
    /// The lease of the leadership it was placed under (hex, as etcdctl shows leases).
    pub lease: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}
