//! `certkeeper renew [--force] [--dry-run] [NAME...]`: one pass, a line per certificate on
//! stdout, exit 0 when all is good or nothing is due, 1 when at least one certificate failed,
//! was rolled back, failed to roll back or is waiting out the backoff of an earlier failure,
//! 2 on a config or usage error.

use std::path::Path;
use std::sync::Arc;

use super::{known_names, load_config, print};
use crate::metrics;
use crate::pass::{self, Options, Outcome};
use crate::text::rfc3339;

/// Exit code when a certificate failed.
const FAILED: u8 = 1;
/// Exit code of a config or usage error.
const USAGE: u8 = 2;

/// Runs `renew`.
pub fn run(config_path: &Path, opts: Options, textfile: Option<&Path>) -> u8 {
    let started = std::time::Instant::now();
    let Ok(config) = load_config(config_path) else {
        return USAGE;
    };
    if !known_names(&config, config_path, &opts.names) {
        return USAGE;
    }
    // A textfile path holding a device, FIFO or socket fails the command before the pass
    // changes anything, as an output that cannot be written does.
    if let Some(path) = textfile
        && let Some(what) = crate::fsutil::foreign_file(path)
    {
        let e = crate::store::Error::NotOurs {
            path: path.to_owned(),
            what,
        };
        eprintln!("certkeeper: renew: --textfile: {e}");
        return FAILED;
    }
    let runtime = match super::runtime(FAILED) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let config = Arc::new(config);
    let result = runtime.block_on(pass::run(config.clone(), &opts));
    let done = match result {
        Ok(done) => done,
        Err(e) => {
            eprintln!("certkeeper: renew: {e}");
            return FAILED;
        }
    };
    let outcomes = &done.outcomes;
    let mut out = String::new();
    for (name, outcome) in outcomes {
        out.push_str(&line(name, outcome));
        out.push('\n');
    }
    let mut printed = print(&out);
    if let Some(path) = textfile {
        let pass = metrics::Pass::of(outcomes, started.elapsed(), time::OffsetDateTime::now_utc());
        if let Err(e) = metrics::write_textfile(
            path,
            &metrics::render_known(&config, &done.known, Some(&pass)),
        ) {
            eprintln!(
                "certkeeper: renew: cannot write the metrics to {}: {e}",
                path.display()
            );
            // An output that was asked for and not written is a failure, like stdout's.
            printed = false;
        }
    }
    if outcomes.iter().any(|(_, o)| o.failed()) || !printed {
        FAILED
    } else {
        0
    }
}

/// Runs `metrics`: the Prometheus text of every managed certificate on stdout.
pub fn metrics(config_path: &Path) -> u8 {
    let Ok(config) = load_config(config_path) else {
        return USAGE;
    };
    u8::from(!print(&metrics::render(&config, None)))
}

fn line(name: &str, outcome: &Outcome) -> String {
    match outcome {
        Outcome::NotDue { renew_after } => {
            format!("{name}: not due (renews from {})", rfc3339(*renew_after))
        }
        Outcome::Backoff { until } => format!(
            "{name}: last attempt failed; next attempt from {} (--force to try now)",
            rfc3339(*until)
        ),
        Outcome::Stopped => format!("{name}: stopped before it was done; nothing changed"),
        Outcome::FleetWait { why, .. } => format!("{name}: fleet: nothing to do here now ({why})"),
        Outcome::Held { since, ends } => format!(
            "{name}: held on the restored pair since {}; nothing deployed or ordered (`certkeeper release {name}` ends the hold; it ends by itself from {}, within half of before_expiry of notAfter)",
            rfc3339(*since),
            rfc3339(*ends)
        ),
        Outcome::Renewed { source, done } => {
            let mut out = format!(
                "{name}: renewed from {source} (notAfter {})",
                done.not_after
            );
            if let Some(s) = &done.snapshot {
                out.push_str(&format!(", previous pair kept as snapshot {s}"));
            }
            if done.adopted {
                out.push_str(
                    "; the plain files found at the live paths were adopted and are links into certkeeper's generations now",
                );
            }
            if done.unverified {
                out.push_str(
                    "; not reloaded or verified (--no-reload): the next pass reloads and verifies it",
                );
            }
            for w in &done.warnings {
                out.push_str(&format!("; WARNING: {w}"));
            }
            out
        }
        Outcome::RolledBack {
            source,
            cause,
            note,
        } => format!(
            "{name}: ROLLED BACK: the new certificate from {source} was refused and the previous pair is live and served again{}; it is tried again on a later pass. Cause: {cause}",
            note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
        ),
        Outcome::RollbackFailed {
            source,
            cause,
            rollback,
        } => format!(
            "{name}: ROLLBACK FAILED: the new certificate from {source} was refused, and {rollback}. Act now. Cause: {cause}"
        ),
        Outcome::WouldRenew { not_after, source } => {
            format!(
                "{name}: would renew from {source} (notAfter {not_after}); dry run, nothing changed"
            )
        }
        Outcome::Failed { error, .. } => format!("{name}: FAILED: {error}"),
        Outcome::Unserved { source, cause, .. } => {
            format!(
                "{name}: FAILED: {}",
                crate::pass::unserved_message(source, cause)
            )
        }
        Outcome::WouldOrder { issuer, domains } => format!(
            "{name}: due; would order {} from {issuer}; dry run without a staging_directory for {issuer}, so nothing was ordered",
            domains.join(", ")
        ),
    }
}
