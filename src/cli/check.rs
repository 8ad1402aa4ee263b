//! `certkeeper check` and `certkeeper verify`: the inventory as a table, JSON, or a detailed
//! report of one certificate, with Nagios exit codes (0 OK, 1 WARNING, 2 CRITICAL,
//! 3 UNKNOWN). `check --probe` adds what each `verify.tls_connect` serves.

use std::path::Path;

use time::OffsetDateTime;

use super::{known_names, load_config, print};
use crate::config::Config;
use crate::inventory::{self, Entry, Status, Trust};

/// Exit code for config and usage errors (Nagios UNKNOWN).
pub const UNKNOWN: u8 = 3;

/// Runs `check` (with `probe`, `check --probe`).
pub fn check(config_path: &Path, names: &[String], json: bool, probe: bool) -> u8 {
    let Some((config, trust)) = prepare(config_path, names) else {
        return UNKNOWN;
    };
    let now = OffsetDateTime::now_utc();
    let mut entries = inventory::inventory(&config, names, &trust, now);
    add_fleet_view(&config, &mut entries, now);
    if probe {
        add_served(&config, &trust, names, &mut entries, now);
    }
    let out = if json {
        json_text(&entries)
    } else {
        table(&entries)
    };
    if !print(&out) {
        return UNKNOWN;
    }
    worst(&entries).exit_code()
}

/// Runs `verify NAME`.
pub fn verify(config_path: &Path, name: &str, json: bool) -> u8 {
    let names = [name.to_owned()];
    let Some((config, trust)) = prepare(config_path, &names) else {
        return UNKNOWN;
    };
    let Some(cert) = config.certificate(name) else {
        return UNKNOWN;
    };
    let saved = crate::state::Records::load(&config.state_dir, &crate::state::Horizon::of(&config))
        .get(name);
    let now = OffsetDateTime::now_utc();
    let mut entry = inventory::inspect_managed(&config, cert, &trust, saved, now);
    add_fleet_view(&config, std::slice::from_mut(&mut entry), now);
    let out = if json {
        match serde_json::to_string_pretty(&entry) {
            Ok(s) => s + "\n",
            Err(e) => {
                eprintln!("certkeeper: cannot encode the report: {e}");
                return UNKNOWN;
            }
        }
    } else {
        report(&entry)
    };
    if !print(&out) {
        return UNKNOWN;
    }
    entry.status.exit_code()
}

/// The most `check` and `verify` wait for etcd in all, so that a monitoring plugin answers
/// well within its own timeout (Nagios: 10 s) when etcd does not.
pub const FLEET_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

/// Adds the fleet's view to the entries of shared certificates (`fleet: true`): read from
/// etcd within [`FLEET_BUDGET`]; etcd not answering is noted, never a problem.
fn add_fleet_view(config: &Config, entries: &mut [Entry], now: OffsetDateTime) {
    let Some(fleet) = &config.fleet else {
        return;
    };
    let shared: Vec<(usize, String, Option<String>)> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.managed && config.certificate(&e.name).is_some_and(|c| c.fleet))
        .map(|(i, e)| (i, e.name.clone(), e.fingerprint.clone()))
        .collect();
    if shared.is_empty() {
        return;
    }
    let read = crate::fleet::view::within(FLEET_BUDGET, || async {
        let timeouts = crate::fleet::Timeouts::within(FLEET_BUDGET);
        let client = crate::fleet::connect(fleet, timeouts)
            .await
            .map_err(|e| e.to_string())?;
        let mut facts = Vec::with_capacity(shared.len());
        for (_, name, fingerprint) in &shared {
            let current = client
                .current(name)
                .await
                .map_err(|e| crate::fleet::connect::brief(&e))?;
            let serving_here = match (&current, fingerprint) {
                (Some((g, _)), Some(fp)) => crate::fleet::view::serial_of(&client, name, g, fp)
                    .await
                    .map_err(|e| crate::fleet::connect::brief(&e))?,
                _ => None,
            };
            facts.push(inventory::FleetFacts {
                current: current.map(|(g, _)| (g.serial, g.verdict)),
                serving_here,
            });
        }
        Ok::<_, String>(facts)
    });
    let read = read.unwrap_or_else(|| {
        Err(format!(
            "etcd did not answer within {}",
            crate::text::seconds(FLEET_BUDGET)
        ))
    });
    for (n, (i, ..)) in shared.iter().enumerate() {
        let facts = match &read {
            Ok(all) => Ok(&all[n]),
            Err(why) => Err(why.as_str()),
        };
        inventory::add_fleet_view(&mut entries[*i], config, facts, now);
    }
}

/// Probes what each managed certificate's `verify.tls_connect` serves (all at once, each
/// within its `verify.timeout`) and adds it to its entry.
fn add_served(
    config: &Config,
    trust: &Trust,
    names: &[String],
    entries: &mut [Entry],
    now: OffsetDateTime,
) {
    let budget = config
        .certificates
        .iter()
        .filter_map(|c| c.verify.as_ref().map(|v| v.timeout))
        .max()
        .unwrap_or_default()
        + PROBE_MARGIN;
    let Some(findings) =
        crate::fleet::view::within(budget, || crate::probe::measure(config, trust, names))
    else {
        // Each probe ends within its own timeout: this is not expected, but is not hidden.
        for e in entries.iter_mut().filter(|e| e.managed) {
            e.not_checked.push(format!(
                "served: the probes did not end within {}",
                crate::text::seconds(budget)
            ));
        }
        return;
    };
    for f in findings {
        if let Some(e) = entries.iter_mut().find(|e| e.managed && e.name == f.name) {
            inventory::add_served(e, f.report, now);
        }
    }
}

/// Time given to `check --probe` beyond the longest `verify.timeout`.
const PROBE_MARGIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Loads the config, checks the names and loads the roots; prints the error and returns
/// `None` on failure.
fn prepare(config_path: &Path, names: &[String]) -> Option<(Config, Trust)> {
    let config = load_config(config_path).ok()?;
    if !known_names(&config, config_path, names) {
        return None;
    }
    match Trust::load(&config) {
        Ok(trust) => Some((config, trust)),
        Err(e) => {
            // file:line: key: message, as every other config error.
            let err = crate::config::ConfigError {
                file: config_path.to_owned(),
                problems: vec![crate::config::Problem {
                    line: config.line_of(&e.key),
                    path: e.key.to_string(),
                    message: e.message,
                }],
            };
            for line in err.lines() {
                eprintln!("certkeeper: {line}");
            }
            None
        }
    }
}

/// The plugin's status: the worst of what was checked; UNKNOWN only when there were
/// certificates and none of them could be checked (a monitoring user who may read nothing),
/// as Nagios reads UNKNOWN: the plugin could not tell.
fn worst(entries: &[Entry]) -> Status {
    let checked = entries.iter().filter(|e| e.status != Status::Unknown);
    match checked.map(|e| e.status).max() {
        Some(status) => status,
        None if entries.is_empty() => Status::Ok,
        None => Status::Unknown,
    }
}

/// The JSON array of `check --json`.
fn json_text(entries: &[Entry]) -> String {
    // Entry holds only strings, numbers, bools and lists of them: encoding cannot fail.
    serde_json::to_string_pretty(entries).unwrap_or_else(|_| "[]".into()) + "\n"
}

/// A Nagios summary line, then one row per certificate.
fn table(entries: &[Entry]) -> String {
    let count = |s: Status| entries.iter().filter(|e| e.status == s).count();
    let (crit, warn, ok, unknown) = (
        count(Status::Critical),
        count(Status::Warning),
        count(Status::Ok),
        count(Status::Unknown),
    );
    let mut out = format!(
        "CERTKEEPER {} - {} certificate{}: {crit} critical, {warn} warning, {ok} ok{}\n",
        worst(entries).as_str().to_uppercase(),
        entries.len(),
        if entries.len() == 1 { "" } else { "s" },
        if unknown > 0 {
            format!(", {unknown} not checked")
        } else {
            String::new()
        }
    );
    if entries.is_empty() {
        return out;
    }
    let rows: Vec<[String; 5]> = entries
        .iter()
        .map(|e| {
            [
                e.status.as_str().to_owned(),
                e.name.clone(),
                e.days_left
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "-".into()),
                e.not_after.clone().unwrap_or_else(|| "-".into()),
                match (&e.hold, e.problems.is_empty()) {
                    (Some(h), true) => held_note(&e.name, h),
                    (Some(h), false) => {
                        format!("{}; {}", e.problems.join("; "), held_note(&e.name, h))
                    }
                    (None, true) => "-".into(),
                    (None, false) => e.problems.join("; "),
                },
            ]
        })
        .collect();
    let header = ["STATUS", "NAME", "DAYS", "NOT AFTER", "PROBLEMS"];
    let table: Vec<[String; 5]> = std::iter::once(header.map(String::from))
        .chain(rows.into_iter().map(|r| r.map(|c| one_line(&c))))
        .collect();
    for line in crate::text::table(&table, &[2]) {
        out.push_str(&line);
        out.push('\n');
    }
    // What this user could not read, apart from the problems: not a fault of the files.
    for e in entries {
        for n in &e.not_checked {
            out.push_str(&format!(
                "not checked: {}: {}\n",
                one_line(&e.name),
                one_line(n)
            ));
        }
    }
    out
}

/// The note of a held certificate's row.
fn held_note(name: &str, h: &inventory::HoldReport) -> String {
    format!(
        "held on the restored pair since {}{} (certkeeper release {name})",
        h.since,
        h.by.as_ref()
            .map(|b| format!(" by {b}"))
            .unwrap_or_default()
    )
}

/// Text from certificates, file names and commands on one line of a terminal: every control
/// character escaped (`\x1b`, `\x0a`), so a crafted subject or file name can neither recolour
/// the output nor start a forged line.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// The readable report of `verify`.
fn report(e: &Entry) -> String {
    let mut out = format!(
        "{}: {}\n",
        one_line(&e.name),
        e.status.as_str().to_uppercase()
    );
    let mut field = |k: &str, v: String| out.push_str(&format!("  {k:<11}{}\n", one_line(&v)));
    field(
        "fullchain",
        format!("{} ({} certificates)", e.path.display(), e.chain_length),
    );
    if let Some(k) = &e.privkey {
        field("privkey", k.display().to_string());
    }
    field("domains", e.domains.join(", "));
    if let Some(s) = &e.subject {
        field("subject", s.clone());
    }
    if let Some(i) = &e.issuer {
        field("issuer", i.clone());
    }
    if !e.sans.is_empty() {
        field("names", e.sans.join(", "));
    }
    if let (Some(nb), Some(na), Some(d)) = (&e.not_before, &e.not_after, e.days_left) {
        field("valid", format!("{nb} to {na} ({d} days left)"));
    }
    if let Some(f) = &e.fingerprint {
        field("sha256", f.clone());
    }
    field(
        "integrity",
        match e.integrity {
            Some(true) => "matches the manifest".into(),
            Some(false) => "DOES NOT match the manifest".into(),
            None => "no manifest (files not written by certkeeper)".into(),
        },
    );
    if e.managed {
        field(
            "key",
            match e.key_match {
                Some(true) => "matches the leaf".into(),
                Some(false) => "DOES NOT match the leaf".into(),
                None => "not checked".into(),
            },
        );
    }
    if let Some(f) = &e.fleet {
        field(
            "fleet",
            match (f.connected, f.serial_current) {
                (false, _) => "etcd did not answer (see not checked)".into(),
                (true, None) => "no generation published yet".into(),
                (true, Some(current)) => format!(
                    "generation {current} ({}), this host serves {}",
                    f.verdict.unwrap_or("pending"),
                    f.serving_serial_here
                        .map(|s| format!("generation {s}"))
                        .unwrap_or_else(|| "no generation etcd keeps".into())
                ),
            },
        );
    }
    if let Some(h) = &e.hold {
        field(
            "held",
            format!(
                "since {}{}{}; ends by itself from {}; `certkeeper release {}` ends it",
                h.since,
                h.by.as_ref()
                    .map(|b| format!(" by {b}"))
                    .unwrap_or_default(),
                h.snapshot
                    .as_ref()
                    .map(|s| format!(" (snapshot {s})"))
                    .unwrap_or_default(),
                h.ends.as_deref().unwrap_or("the next pass"),
                e.name
            ),
        );
    }
    if !e.not_checked.is_empty() {
        out.push_str("  not checked:\n");
        for n in &e.not_checked {
            out.push_str(&format!("    - {}\n", one_line(n)));
        }
    }
    if e.problems.is_empty() {
        out.push_str("  no problems\n");
    } else {
        out.push_str("  problems:\n");
        for p in &e.problems {
            out.push_str(&format!("    - {}\n", one_line(p)));
        }
    }
    out
}
