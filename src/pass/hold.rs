//! Whether a certificate is held on the pair a rollback restored (see [`crate::hold`]): a
//! held certificate's pass ends before the plan, with [`Outcome::Held`]; a hold whose time
//! is up (the live leaf within half of `before_expiry` of its notAfter, or no live leaf left
//! to hold) ends here, and the pass goes on as usual.

use time::OffsetDateTime;

use super::kept::Kept;
use super::{Options, Outcome};
use crate::config::{Certificate, Config};
use crate::text::rfc3339;
use crate::x509::leaf_of_file;

/// `Some` with the outcome and the live leaf's notAfter when `cert` is held now; `None`
/// when it is not held, or its hold has just ended (said in a warning, and kept for the
/// alerts of this pass, see [`Kept::end_hold`]).
pub(super) fn held(
    config: &Config,
    kept: &Kept,
    cert: &Certificate,
    opts: &Options,
    now: OffsetDateTime,
) -> Option<(Outcome, Option<OffsetDateTime>)> {
    let hold = kept.hold(&cert.name)?;
    let since = OffsetDateTime::from_unix_timestamp(hold.since).unwrap_or(now);
    let name = &cert.name;
    let leaf = match leaf_of_file(&cert.fullchain) {
        Ok(leaf) => leaf,
        Err(e) => {
            let why =
                format!("the hold on {name} ended: there is no live certificate to hold ({e})");
            tracing::warn!(cert = %name, "{why}; it is renewed as usual.");
            kept.end_hold(name, why, opts.dry_run);
            return None;
        }
    };
    let ends = crate::hold::ends_at(&leaf, config.renewal.before_expiry);
    if now >= ends {
        let why = format!(
            "the hold on {name} ended: the restored certificate {} (notAfter {}), within half of renewal.before_expiry ({}), and holding it longer would let it expire",
            crate::hold::human_left(leaf.not_after - now),
            rfc3339(leaf.not_after),
            config.renewal.before_expiry,
        );
        tracing::warn!(cert = %name, "{why}; it is renewed as usual.");
        kept.end_hold(name, why, opts.dry_run);
        return None;
    }
    Some((Outcome::Held { since, ends }, Some(leaf.not_after)))
}
