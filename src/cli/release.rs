//! `certkeeper release NAME`, and the hold that `certkeeper rollback NAME --hold` sets (see
//! [`crate::hold`]): both written in the certificate's record under the state_dir lock.

use std::path::Path;

use time::OffsetDateTime;

use super::{known_names, load_config, print};
use crate::config::Config;
use crate::state::Horizon;
use crate::store::Locked;
use crate::text::rfc3339;

/// Exit code of a config or usage error.
const USAGE: u8 = 2;
/// Exit code of a release that failed.
const FAILED: u8 = 1;

/// Runs `release`: removes the hold on `name`. Releasing a certificate that is not held
/// says so and succeeds.
pub fn release(config_path: &Path, name: &str) -> u8 {
    let Ok(config) = load_config(config_path) else {
        return USAGE;
    };
    if !known_names(&config, config_path, &[name.to_owned()]) {
        return USAGE;
    }
    let released = match super::with_lock(&config, &format!("release {name}"), |_, locked| {
        crate::hold::release(locked, name, &Horizon::of(&config))
    }) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let out = match released {
        Ok(Some(hold)) => {
            let since = OffsetDateTime::from_unix_timestamp(hold.since)
                .map(rfc3339)
                .unwrap_or_else(|_| hold.since.to_string());
            tracing::info!(cert = %name, %since, "Released the hold.");
            format!(
                "{name}: released (held since {since}{}); the next pass deploys kept material, or renews when due",
                hold.by.map(|b| format!(" by {b}")).unwrap_or_default()
            )
        }
        Ok(None) => format!("{name}: not held; nothing to release"),
        Err(e) => {
            eprintln!("certkeeper: release {name}: {e}");
            return FAILED;
        }
    };
    if print(&(out + "\n")) { 0 } else { FAILED }
}

/// Sets the hold after a rollback to `snapshot` went through, still under its lock, and
/// says so in `out`; `false` (after a line on stderr) when it could not be set.
pub(super) fn hold_restored(
    locked: &Locked<'_>,
    config: &Config,
    name: &str,
    snapshot: &str,
    fingerprint: &str,
    out: &mut String,
) -> bool {
    let now = OffsetDateTime::now_utc();
    match crate::hold::set(
        locked,
        name,
        snapshot,
        fingerprint,
        &Horizon::of(config),
        now,
    ) {
        Ok(()) => {
            let ends = config
                .certificate(name)
                .and_then(|c| crate::x509::leaf_of_file(&c.fullchain).ok())
                .map(|leaf| {
                    format!(
                        " (from {})",
                        rfc3339(crate::hold::ends_at(&leaf, config.renewal.before_expiry))
                    )
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "; held: no deploys or orders until `certkeeper release {name}`, or until it is within half of before_expiry ({}) of its notAfter{ends}",
                config.renewal.before_expiry
            ));
            true
        }
        Err(e) => {
            eprintln!(
                "certkeeper: rollback {name}: the rollback went through, but the hold was not set: {e}; the next pass may deploy again"
            );
            false
        }
    }
}
