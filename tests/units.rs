//! The systemd units in `deploy/` (timer mode: `certkeeper.service` + `certkeeper.timer`;
//! daemon mode: `certkeeper-daemon.service`): `systemd-analyze verify` accepts each of them
//! with the installed binary's path pointed at the built one, `systemd-analyze security`
//! rates both services well inside "OK", and the unit text keeps what the README promises
//! (the daemon checks the config before SIGHUP, the oneshot runs `renew`, the timer catches
//! up on missed runs at a random moment). These tests need `systemd-analyze` (Debian package
//! `systemd`) and fail without it.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util::bin;

/// Every unit in `deploy/`.
const UNITS: [&str; 3] = [
    "certkeeper.service",
    "certkeeper.timer",
    "certkeeper-daemon.service",
];

/// The units that run certkeeper, and so are sandboxed.
const SERVICES: [&str; 2] = ["certkeeper.service", "certkeeper-daemon.service"];

/// Where the units expect the binary (README, "Running it").
const INSTALLED: &str = "/usr/local/bin/certkeeper";

/// The highest overall exposure `systemd-analyze security` may give a service. systemd 252
/// rates both 2.3 ("OK" is below 5.0); the margin lets one or two minor settings change,
/// not the sandbox go.
const MAX_EXPOSURE: f64 = 2.5;

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    assert!(
        Path::new("/bin/kill").exists(),
        "/bin/kill is missing: certkeeper-daemon.service's ExecReload= uses it; install it \
         with `apt-get install -y procps`"
    );
    let dir = installed_copies();
    for unit in UNITS {
        // `--man=no`: the man page named by Documentation= is installed by the operator
        // (README, Install), not on a test host; `man_page_matches_documentation` checks
        // that the name and section are the binary's.
        let out = systemd_analyze(&["verify", "--man=no", unit], dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "systemd-analyze verify {unit}: {}\n{stderr}",
            out.status
        );
        // Warnings about other units on the host are not ours; every line about ours
        // names a unit file or the binary, and so contains "certkeeper".
        let ours: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("certkeeper"))
            .collect();
        assert!(
            ours.is_empty(),
            "systemd-analyze verify {unit} warns:\n{}",
            ours.join("\n")
        );
    }
}

#[test]
fn man_page_matches_documentation() {
    let out = Command::new(bin())
        .arg("man")
        .output()
        .expect("run certkeeper");
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "certkeeper man: {}", out.status);
    assert!(
        page.lines().any(|l| l.starts_with(".TH certkeeper 1 ")),
        "the man page is not certkeeper(1):\n{page}"
    );
    for unit in UNITS {
        assert_eq!(
            values(&unit_text(unit), "Unit", "Documentation"),
            ["man:certkeeper(1)"],
            "{unit}"
        );
    }
}

#[test]
fn services_are_sandboxed() {
    let dir = installed_copies();
    for unit in SERVICES {
        let out = systemd_analyze(&["security", "--offline=true", unit], dir.path());
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "systemd-analyze security {unit}: {}\n{stdout}{stderr}",
            out.status
        );
        let exposure = overall_exposure(&stdout, unit);
        assert!(
            exposure < MAX_EXPOSURE,
            "{unit}: overall exposure {exposure}, more than {MAX_EXPOSURE}:\n{stdout}"
        );
    }
}

#[test]
fn services_keep_the_documented_sandbox() {
    for unit in SERVICES {
        let text = unit_text(unit);
        let one = |key: &str| values(&text, "Service", key);
        assert_eq!(
            one("CapabilityBoundingSet"),
            ["CAP_CHOWN CAP_FOWNER CAP_DAC_OVERRIDE CAP_KILL"],
            "{unit}"
        );
        assert_eq!(one("ProtectSystem"), ["strict"], "{unit}");
        assert_eq!(one("NoNewPrivileges"), ["yes"], "{unit}");
        assert_eq!(one("MemoryDenyWriteExecute"), ["yes"], "{unit}");
        assert_eq!(
            one("RestrictAddressFamilies"),
            ["AF_UNIX AF_INET AF_INET6"],
            "{unit}"
        );
        assert_eq!(
            one("SystemCallFilter"),
            ["@system-service", "~@resources"],
            "{unit}"
        );
        assert_eq!(one("UMask"), ["0077"], "{unit}");
        // state_dir is 0711 so that a monitoring user can read the local CA's root.
        assert_eq!(one("StateDirectory"), ["certkeeper"], "{unit}");
        assert_eq!(one("StateDirectoryMode"), ["0711"], "{unit}");
        // The certificate directories depend on the config: a placeholder that may be
        // missing, which operators extend with `systemctl edit`.
        assert_eq!(one("ReadWritePaths"), ["-/etc/ssl/certkeeper"], "{unit}");
        assert!(text.contains("systemctl edit"), "{unit}");
    }
}

#[test]
fn daemon_checks_the_config_before_sighup() {
    let text = unit_text("certkeeper-daemon.service");
    let service = |key: &str| values(&text, "Service", key);
    assert_eq!(service("Type"), ["notify"]);
    assert_eq!(service("NotifyAccess"), ["main"]);
    assert_eq!(
        service("ExecStartPre"),
        [format!("{INSTALLED} config check")]
    );
    assert_eq!(service("ExecStart"), [format!("{INSTALLED} run")]);
    // In this order: a failing check ends the reload before the signal is sent.
    assert_eq!(
        service("ExecReload"),
        [
            format!("{INSTALLED} config check"),
            "/bin/kill -HUP $MAINPID".to_owned()
        ]
    );
    assert_eq!(service("Restart"), ["on-failure"]);
    // SIGTERM to the daemon only, so that a reload command in flight finishes, and time
    // for the deploy in flight (reload + verify, up to about two minutes).
    assert_eq!(service("KillMode"), ["mixed"]);
    assert_eq!(service("TimeoutStopSec"), ["3min"]);
    assert!(service("WatchdogSec").is_empty());
    assert_eq!(values(&text, "Install", "WantedBy"), ["multi-user.target"]);
}

#[test]
fn timer_runs_a_renew_pass_twice_a_day() {
    let service = unit_text("certkeeper.service");
    assert_eq!(values(&service, "Service", "Type"), ["oneshot"]);
    assert_eq!(
        values(&service, "Service", "ExecStart"),
        [format!("{INSTALLED} renew")]
    );
    // Started by the timer only.
    assert!(values(&service, "Install", "WantedBy").is_empty());

    let timer = unit_text("certkeeper.timer");
    let key = |key: &str| values(&timer, "Timer", key);
    assert_eq!(key("OnCalendar"), ["*-*-* 00,12:00:00"]);
    assert_eq!(key("Persistent"), ["true"]);
    assert_eq!(key("RandomizedDelaySec"), ["1h"]);
    assert_eq!(values(&timer, "Install", "WantedBy"), ["timers.target"]);
}

/// A unit file's text, from `deploy/`.
fn unit_text(unit: &str) -> String {
    let path = deploy_dir().join(unit);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// The units in a temporary directory, with the installed binary's path replaced by the
/// built binary (`systemd-analyze verify` checks that every Exec*= program exists).
fn installed_copies() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("certkeeper-units-")
        .tempdir()
        .expect("tempdir");
    for unit in UNITS {
        let text = unit_text(unit).replace(INSTALLED, bin());
        std::fs::write(dir.path().join(unit), text).expect("write unit");
    }
    dir
}

/// Runs `systemd-analyze ARGS` in `dir`, with systemd's default log level.
fn systemd_analyze(args: &[&str], dir: &Path) -> Output {
    match Command::new("systemd-analyze")
        .args(args)
        .current_dir(dir)
        .env_remove("SYSTEMD_LOG_LEVEL")
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "systemd-analyze is not installed: the unit tests need it; install the Debian \
             package systemd with `apt-get install -y systemd`"
        ),
        Err(e) => panic!("running systemd-analyze: {e}"),
    }
}

/// X.Y from `→ Overall exposure level for UNIT: X.Y OK 🙂`.
fn overall_exposure(report: &str, unit: &str) -> f64 {
    let marker = format!("Overall exposure level for {unit}: ");
    let line = report
        .lines()
        .find_map(|l| l.split_once(&marker).map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no {marker:?} line in:\n{report}"));
    let number = line.split_whitespace().next().unwrap_or_default();
    number
        .parse()
        .unwrap_or_else(|e| panic!("exposure {number:?} in {line:?}: {e}"))
}

/// Every value of `key` in `[section]`, in order; comments and blank lines skipped. The
/// units use no line continuations.
fn values(text: &str, section: &str, key: &str) -> Vec<String> {
    let mut current = "";
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name;
            continue;
        }
        assert!(!line.ends_with('\\'), "line continuation: {line}");
        if let Some((k, v)) = line.split_once('=')
            && current == section
            && k.trim() == key
        {
            out.push(v.trim().to_owned());
        }
    }
    out
}
