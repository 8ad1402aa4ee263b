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
    /// The issuer (of the certificate's config) it was placed with.
    #[serde(default)]
    pub issuer: String,
    /// The credentials of the account that placed it, sealed by the caller (only that
    /// account may fetch and finalize the order); `None` when the account cannot be shared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<SealedKey>,
    /// The host that placed it.
    pub host: String,
    /// The lease of the leadership it was placed under (hex, as etcdctl shows leases).
    pub lease: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(sealed: &[u8]) -> Generation {
        Generation {
            serial: 7,
            fingerprint: "ab".repeat(32),
            not_after: OffsetDateTime::UNIX_EPOCH,
            issued_by: "web1".into(),
            issued_at: OffsetDateTime::UNIX_EPOCH,
            fullchain_pem: "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".into(),
            sealed_key: SealedKey(sealed.to_vec()),
            verdict: Verdict::Bad {
                by: "web2".into(),
                why: "verify failed".into(),
                at: OffsetDateTime::UNIX_EPOCH,
            },
        }
    }

    fn field_names(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    out.push(k.clone());
                    field_names(v, out);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| field_names(v, out)),
            _ => {}
        }
    }

    #[test]
    fn a_generation_has_no_field_for_a_key_in_clear() {
        let pem =
            b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI\n-----END PRIVATE KEY-----\n";
        let json = serde_json::to_string(&sample(pem)).unwrap();
        let mut names = Vec::new();
        field_names(&serde_json::from_str(&json).unwrap(), &mut names);
        let keyish: Vec<&String> = names
            .iter()
            .filter(|n| n.contains("key") || n.contains("private") || n.contains("secret"))
            .collect();
        assert_eq!(keyish, ["sealed_key"], "fields: {names:?}");
        // Even bytes that are a PEM key (a caller that forgot to seal) never show as PEM.
        assert!(!json.contains("PRIVATE KEY"), "{json}");
        assert!(!format!("{:?}", sample(pem)).contains("PRIVATE"));
    }

    #[test]
    fn records_round_trip_and_bad_ones_are_refused() {
        let g = sample(&[0, 1, 2, 255]);
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(serde_json::from_str::<Generation>(&json).unwrap(), g);
        assert!(json.contains("\"sealed_key\":\"AAEC/w==\""), "{json}");
        assert!(json.contains("\"verdict\":{\"state\":\"bad\""), "{json}");
        let broken = json.replace("AAEC/w==", "not base64!");
        let err = serde_json::from_str::<Generation>(&broken).unwrap_err();
        assert!(
            err.to_string().contains("sealed_key is not base64"),
            "{err}"
        );
        let pending = serde_json::to_string(&Verdict::Pending).unwrap();
        assert_eq!(pending, r#"{"state":"pending"}"#);
    }
}
