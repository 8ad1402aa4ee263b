//! `certkeeper alert test [CHANNEL...]`: sends a test event to each (or the named) alert
//! channel and prints, per channel, what the vendor answered. Exit 0 when every channel took
//! it, 1 otherwise, 2 on a config or usage error (an unknown channel name included).

use std::path::Path;

use super::{load_config, print};
use crate::alert::{Alerts, ONE_SHOT_BUDGET};

/// Exit code when a channel did not take the test event.
const FAILED: u8 = 1;
/// Exit code of a config or usage error.
const USAGE: u8 = 2;

/// Runs `alert test`.
pub fn test(config_path: &Path, names: &[String]) -> u8 {
    let Ok(config) = load_config(config_path) else {
        return USAGE;
    };
    let alerts = Alerts::new(&config);
    if alerts.is_empty() {
        eprintln!(
            "certkeeper: {}: no alert channels are configured; add one under `alerts`",
            config_path.display()
        );
        return USAGE;
    }
    let known: Vec<&str> = alerts.channels().iter().map(|c| c.name.as_str()).collect();
    let unknown: Vec<&str> = names
        .iter()
        .filter(|n| !known.contains(&n.as_str()))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        eprintln!(
            "certkeeper: {}: no alert channel named {}; configured: {}",
            config_path.display(),
            unknown.join(", "),
            known.join(", ")
        );
        return USAGE;
    }
    let runtime = match super::runtime(FAILED) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let reports = runtime.block_on(alerts.test(names, ONE_SHOT_BUDGET));
    let mut out = String::new();
    for r in &reports {
        let kind = alerts
            .channels()
            .iter()
            .find(|c| c.name == r.channel)
            .map_or("", |c| c.kind);
        let tries = if r.attempts == 1 {
            String::new()
        } else {
            format!(" after {} attempts", r.attempts)
        };
        match &r.result {
            Ok(answer) => out.push_str(&format!(
                "{} ({kind}): delivered{tries}: {answer}\n",
                r.channel
            )),
            Err(e) => out.push_str(&format!(
                "{} ({kind}): NOT DELIVERED{tries}: {e}\n",
                r.channel
            )),
        }
    }
    if !print(&out) {
        return FAILED;
    }
    if reports.iter().all(|r| r.result.is_ok()) {
        0
    } else {
        FAILED
    }
}
