//! Checks new material before it goes live: the leaf covers every configured domain, the key
//! matches the leaf, the chain is complete to a trusted root, the validity window is sane,
//! and the new leaf is not older material than the live one (an earlier notBefore).

use time::OffsetDateTime;

use crate::text::rfc3339;
use crate::x509::{
    Cert, PrivateKey, TrustStore, examine_chain, key_matches, read_certificates, uncovered,
};

/// What is wrong with new material; every problem found, as short phrases.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("new certificate refused: {}", .problems.join("; "))]
pub struct Rejected {
    /// Each problem.
    pub problems: Vec<String>,
}

/// Largest clock difference tolerated between the CA and this host for notBefore.
pub const CLOCK_SKEW: time::Duration = time::Duration::minutes(10);

/// How far back an issuer may date a certificate it issues now. CAs set notBefore in the
/// past to allow for clients' clock skew (commonly by up to an hour; the local CA by
/// [`BACKDATE`](crate::issuer::local_ca::BACKDATE)), so a leaf issued just after the live one
/// may carry an earlier notBefore. Material is older than the live pair only when its
/// notBefore is earlier by more than this: a certificate made minutes ago with `openssl req
/// -x509` is replaced by the local CA's, whose notBefore is five minutes back.
pub const ISSUER_BACKDATE: time::Duration = time::Duration::hours(1);

/// Checks `fullchain` and `privkey` (PEM) for `domains`. `live_not_before` is the notBefore
/// of the live leaf, when there is one: a new leaf dated earlier by more than
/// [`ISSUER_BACKDATE`] is older material and is refused (a shorter lifetime is fine).
/// Returns the new leaf.
pub fn check_new(
    fullchain: &[u8],
    privkey: &[u8],
    domains: &[String],
    trust: &TrustStore,
    live_not_before: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<Cert, Rejected> {
    let mut problems = Vec::new();
    let certs = match read_certificates(fullchain) {
        Ok((certs, _)) => certs,
        Err(e) => {
            return Err(Rejected {
                problems: vec![format!("fullchain: {e}")],
            });
        }
    };
    let (leaf_at, chain_problems) = examine_chain(&certs, trust, now);
    problems.extend(chain_problems.iter().map(|p| p.to_string()));
    let leaf = certs[leaf_at].clone();
    match PrivateKey::from_bytes(privkey) {
        Ok(key) if key_matches(&leaf, &key) => {}
        Ok(_) => problems.push("key mismatch: the private key does not belong to the leaf".into()),
        Err(e) => problems.push(format!("privkey: {e}")),
    }
    let missing = uncovered(&leaf.sans, domains);
    if !missing.is_empty() {
        problems.push(format!(
            "names not covered by the certificate: {}",
            missing.join(", ")
        ));
    }
    if leaf.not_before > now + CLOCK_SKEW {
        problems.push(format!(
            "not yet valid (notBefore {})",
            rfc3339(leaf.not_before)
        ));
    }
    if leaf.not_after <= now {
        problems.push(format!(
            "already expired (notAfter {})",
            rfc3339(leaf.not_after)
        ));
    }
    if leaf.not_after <= leaf.not_before {
        problems.push("validity window is empty".into());
    }
    if let Some(live) = live_not_before
        && leaf.not_before + ISSUER_BACKDATE < live
    {
        problems.push(format!(
            "older than the live certificate (notBefore {} < {}); a deploy never puts older material over the live pair (`certkeeper rollback` restores older pairs explicitly)",
            rfc3339(leaf.not_before),
            rfc3339(live)
        ));
    }
    if problems.is_empty() {
        Ok(leaf)
    } else {
        Err(Rejected { problems })
    }
}
