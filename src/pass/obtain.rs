//! Obtain: new material for one certificate, from `pending/` (issued by an earlier pass
//! and not deployed) or from its issuers in order. Nothing here judges the material; the
//! check stage (`check`) does.

use time::OffsetDateTime;

use super::kept::Kept;
use super::pending::{self, keep_now};
use super::{Failure, Options, Outcome};
use crate::config::Certificate;
use crate::issuer::Issuers;
use crate::keys;
use crate::material::Rejected;

/// Material not checked yet, and where it came from.
pub(super) struct Obtained {
    pub(super) fullchain: Vec<u8>,
    pub(super) privkey: Vec<u8>,
    /// Where it is from, as lines and alerts say it: the issuer's name, and for kept
    /// material that an earlier pass issued it.
    pub(super) source: String,
    /// The issuer's name (empty when kept material does not say).
    pub(super) issuer: String,
    /// Whether it is a staging CA's (a dry run's order): its chain ends at the CA's own root.
    pub(super) staging: bool,
    /// Whether it is kept in `pending/`.
    pub(super) kept: bool,
}

/// The material kept in `pending/` for `cert`, when there is any.
pub(super) fn kept_material(kept: &Kept, cert: &Certificate) -> Option<Obtained> {
    let material = kept
        .pending
        .contains(&cert.name)
        .then(|| pending::load(kept.state_dir.path(), &cert.name))
        .flatten()?;
    // The issuer the record names, when it is still one of the certificate's.
    let issuer = material.issuer.filter(|i| cert.issuers.contains(i));
    Some(Obtained {
        source: match &issuer {
            Some(i) => format!("{i} (issued by an earlier pass)"),
            None => "an earlier pass".into(),
        },
        issuer: issuer.unwrap_or_default(),
        fullchain: material.fullchain,
        privkey: material.privkey,
        staging: false,
        kept: true,
    })
}

/// Kept material the check refused is dropped; the issuers are asked instead.
pub(super) fn discard_kept(kept: &Kept, cert: &Certificate, opts: &Options, why: &Rejected) {
    tracing::warn!(cert = %cert.name, "Discarding undeployed material from an earlier pass: {why}");
    if !opts.dry_run {
        pending::remove(&kept.state_dir, &cert.name);
    }
}

/// Material an issuer gave that the check refused: not kept for the next pass.
pub(super) fn refused(
    kept: &Kept,
    cert: &Certificate,
    issuer: String,
    was_kept: bool,
    why: Rejected,
) -> Outcome {
    if was_kept {
        pending::remove(&kept.state_dir, &cert.name);
    }
    Outcome::Failed {
        error: Failure::Material {
            issuer,
            rejected: why,
        },
    }
}

/// The key the new certificate gets: the live one when `reuse_key` says so and it reads,
/// a new one otherwise.
fn new_key(cert: &Certificate) -> Result<rcgen::KeyPair, Failure> {
    let live_key = if cert.reuse_key {
        crate::fsutil::read_regular_text(&cert.privkey, crate::fsutil::MAX_FILE).ok()
    } else {
        None
    };
    keys::for_renewal(cert.key, cert.reuse_key, live_key.as_deref())
        .map_err(|e| Failure::Key(std::sync::Arc::new(e)))
}

/// Orders from `cert`'s issuers in order until one gives material; `Err` with the outcome
/// when none does (or a dry run would order from a production CA).
pub(super) async fn issue(
    kept: &Kept,
    cert: &Certificate,
    issuers: &Issuers,
    opts: &Options,
    now: OffsetDateTime,
    track: Option<&dyn crate::acme::Track>,
) -> Result<Obtained, Outcome> {
    let key = new_key(cert).map_err(|error| Outcome::Failed { error })?;
    // A dry run orders only from a staging CA: without one, it stops here and says what it
    // would order.
    if opts.dry_run
        && let Some(first) = cert.issuers.first()
        && issuers.needs_staging(first)
    {
        return Err(Outcome::WouldOrder {
            issuer: first.clone(),
            domains: cert.domains.clone(),
        });
    }
    let privkey = crate::x509::pem::write("PRIVATE KEY", &key.serialize_der()).into_bytes();
    let mut failures = Vec::new();
    for issuer in &cert.issuers {
        let fullchain = match issuers.issue(issuer, cert, &key, now, track).await {
            Ok(f) => f.into_bytes(),
            Err(e) => {
                tracing::warn!(cert = %cert.name, issuer = %issuer, "Issuer failed: {e}");
                failures.push((issuer.clone(), e));
                continue;
            }
        };
        // Material from a CA is kept before the deploy (a crash must not cost another order);
        // a local CA's only when the deploy does not take it (issuing again costs nothing).
        let kept_now = !opts.dry_run
            && !issuers.issues_freely(issuer)
            && keep_now(&kept.state_dir, &cert.name, issuer, &fullchain, &privkey);
        return Ok(Obtained {
            fullchain,
            privkey,
            source: issuer.clone(),
            issuer: issuer.clone(),
            staging: opts.dry_run && issuers.orders_from_staging(issuer),
            kept: kept_now,
        });
    }
    Err(Outcome::Failed {
        error: Failure::Issuers(failures),
    })
}
