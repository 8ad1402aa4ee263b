//! Log lines and the generated CLI files, through the real binary with stderr a pipe
//! (DESIGN.md "Details that tests and scripts rely on", Logs): no colour off a terminal or
//! with `NO_COLOR`, JSON lines that parse, field values in their plain form; and
//! `completions SHELL` and `man`, which need no config file.

use std::process::Command;

use serde_json::Value;

use crate::util::{Dir, Run, bin};

/// A config with one certificate from the built-in local CA.
const CONFIG: &str = "state_dir: state\n\
     issuers:\n  internal:\n    type: local-ca\n    validity: 90d\n\
     dns_providers:\n  hook:\n    type: exec\n    command: [/bin/true]\n\
     certificates:\n  - name: www\n    domains: [www.test]\n    issuer: internal\n    \
     dns_provider: hook\n    fullchain: live/www/fullchain.pem\n    privkey: live/www/privkey.pem\n";

/// Runs the binary on the dir's config with stdout and stderr pipes and the given
/// environment (`NO_COLOR` removed unless set here).
fn run_env(dir: &Dir, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(bin());
    cmd.arg("--config").arg(dir.join("config.yaml")).args(args);
    cmd.env_remove("CERTKEEPER_CONFIG")
        .env_remove("CERTKEEPER_LOG")
        .env_remove("NO_COLOR");
    cmd.envs(env.iter().copied());
    Run::from(cmd.output().expect("run certkeeper"))
}

#[test]
fn text_logs_to_a_pipe_have_no_colour() {
    let dir = Dir::new();
    dir.config(CONFIG);
    for env in [&[][..], &[("NO_COLOR", "1")][..]] {
        let run = run_env(&dir, &["renew", "-v", "--force"], env);
        assert_eq!(run.code, 0, "{run:?}");
        assert!(run.stderr.contains("Renewed certificate."), "{run:?}");
        assert!(!run.stderr.contains('\u{1b}'), "ESC in the logs: {run:?}");
    }
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = Dir::new();
    dir.config(CONFIG);
    let run = run_env(&dir, &["renew", "--log-format", "json", "-v"], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stderr.is_empty(), "{run:?}");
    for line in run.stderr.lines() {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}\n{run:?}"));
        assert!(value.is_object(), "{line}");
    }
    assert!(run.stderr.contains("\"Renewed certificate.\""), "{run:?}");
    // The work on a certificate runs in a span that carries its name.
    let in_span = run
        .stderr
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Due now"))
        })
        .unwrap_or_else(|| panic!("no line of the due decision: {run:?}"));
    assert_eq!(in_span["span"]["name"], "certificate", "{in_span}");
    assert_eq!(in_span["span"]["cert"], "www", "{in_span}");
}

#[test]
fn log_fields_are_plain_not_debug() {
    let dir = Dir::new();
    dir.config(CONFIG);
    let run = run_env(&dir, &["renew"], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = run_env(&dir, &["renew", "--force", "-v"], &[("NO_COLOR", "1")]);
    assert_eq!(run.code, 0, "{run:?}");
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("Renewed certificate."))
        .unwrap_or_else(|| panic!("{run:?}"));
    assert!(line.contains(" cert=www "), "{line}");
    assert!(line.contains(" snapshot=000001"), "{line}");
    assert!(!line.contains("Some("), "{line}");
    assert!(!line.contains('"'), "{line}");
}

/// Runs the binary without any config file (it must not need one).
fn run_no_config(args: &[&str]) -> Run {
    let dir = Dir::new();
    let mut cmd = Command::new(bin());
    cmd.arg("--config").arg(dir.join("missing.yaml")).args(args);
    cmd.env_remove("CERTKEEPER_CONFIG")
        .env_remove("CERTKEEPER_LOG");
    Run::from(cmd.output().expect("run certkeeper"))
}

#[test]
fn completions_for_each_shell() {
    let run = run_no_config(&["completions", "bash"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("_certkeeper()"), "{run:?}");
    assert!(run.stdout.contains("complete -F"), "{run:?}");
    let run = run_no_config(&["completions", "zsh"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("#compdef certkeeper"), "{run:?}");
    for shell in ["fish", "elvish", "powershell"] {
        let run = run_no_config(&["completions", shell]);
        assert_eq!(run.code, 0, "{run:?}");
        assert!(run.stdout.contains("renew"), "{shell}: {run:?}");
    }
}

#[test]
fn completions_of_an_unknown_shell_is_a_usage_error() {
    let run = run_no_config(&["completions", "nosuch"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    assert!(run.stderr.contains("nosuch"), "{run:?}");
}

#[test]
fn man_page_is_roff() {
    let run = run_no_config(&["man"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains(".TH certkeeper 1"), "{run:?}");
    assert!(run.stdout.contains("renew"), "{run:?}");
    assert!(run.stderr.is_empty(), "{run:?}");
}
