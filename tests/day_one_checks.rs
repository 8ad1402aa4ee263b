//! Day one: `config check` runs what it can without side effects, `check` as a monitoring
//! user keeps what it could not read apart from the problems, and failures say what failed.

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;

use crate::util::{Dir, Run, as_nobody, bin};

fn local_ca(certs: &[&str]) -> String {
    let mut out =
        "state_dir: state\nissuers:\n  internal:\n    type: local-ca\ncertificates:\n".to_owned();
    for name in certs {
        out.push_str(&format!(
            "  - name: {name}\n    domains: [{name}.test]\n    issuer: internal\n    \
             fullchain: live/{name}/fullchain.pem\n    privkey: live/{name}/privkey.pem\n"
        ));
    }
    out
}

fn check_as_nobody(dir: &Dir, json: bool) -> Run {
    let config = dir.join("config.yaml");
    let mut args = vec![bin(), "--config", config.to_str().unwrap(), "check"];
    if json {
        args.push("--json");
    }
    as_nobody(&args)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn check_as_a_monitoring_user_keeps_what_it_could_not_read_apart_from_problems() {
    let dir = Dir::new();
    dir.config(&local_ca(&["www"]));
    assert_eq!(dir.run(&["renew"]).code, 0);
    dir.open_way_to_live(&["www"]);
    // The key stays as certkeeper made it: 0600 root.
    let key = std::fs::metadata(dir.join("live/www/privkey.pem")).unwrap();
    assert_eq!(key.permissions().mode() & 0o777, 0o600);

    let run = check_as_nobody(&dir, true);
    assert_eq!(run.code, 0, "{run:?}");
    let entries: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|_| panic!("{run:?}"));
    let e = &entries[0];
    assert_eq!(e["status"], "ok", "{e:#}");
    assert!(strings(&e["problems"]).is_empty(), "{e:#}");
    let not_checked = strings(&e["not_checked"]);
    assert_eq!(not_checked.len(), 1, "{e:#}");
    assert!(not_checked[0].starts_with("privkey not checked: not readable by this user"));

    let run = check_as_nobody(&dir, false);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .starts_with("CERTKEEPER OK - 1 certificate: 0 critical, 0 warning, 1 ok\n"),
        "{run:?}"
    );
    let row = run.stdout.lines().find(|l| l.starts_with("ok ")).unwrap();
    assert!(
        row.ends_with(" -"),
        "the problems column is not empty: {run:?}"
    );
    assert!(
        run.stdout
            .contains("\nnot checked: www: privkey not checked: not readable by this user"),
        "{run:?}"
    );

    // As root everything is read: nothing is left unchecked.
    let (code, entries) = dir.check_json();
    assert_eq!(code, 0);
    assert!(
        strings(&entries[0]["not_checked"]).is_empty(),
        "{entries:?}"
    );
}

#[test]
fn check_is_unknown_when_nothing_could_be_checked_and_the_checked_status_otherwise() {
    let dir = Dir::new();
    dir.config(&local_ca(&["www", "api"]));
    assert_eq!(dir.run(&["renew"]).code, 0);
    dir.open_way_to_live(&["www", "api"]);
    // The monitoring user may enter neither certificate's directory.
    for name in ["www", "api"] {
        let d = dir.join(&format!("live/{name}"));
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let run = check_as_nobody(&dir, false);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stdout.starts_with(
            "CERTKEEPER UNKNOWN - 2 certificates: 0 critical, 0 warning, 0 ok, 2 not checked\n"
        ),
        "{run:?}"
    );
    let run = check_as_nobody(&dir, true);
    assert_eq!(run.code, 3, "{run:?}");
    let entries: Value = serde_json::from_str(&run.stdout).unwrap();
    for e in entries.as_array().unwrap() {
        assert_eq!(e["status"], "unknown", "{e:#}");
        assert!(strings(&e["problems"]).is_empty(), "{e:#}");
        assert!(
            strings(&e["not_checked"])
                .iter()
                .any(|n| n.starts_with("fullchain not checked: ")),
            "{e:#}"
        );
    }

    // One readable certificate: the status is that of what was checked.
    let d = dir.join("live/api");
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = check_as_nobody(&dir, true);
    assert_eq!(run.code, 0, "{run:?}");
    let entries: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(entries[0]["status"], "unknown", "{run:?}");
    assert_eq!(entries[1]["status"], "ok", "{run:?}");

    // A certificate that is broken in what could be read is still critical.
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    let www = dir.join("live/www");
    std::fs::set_permissions(&www, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_file(dir.join("live/www/privkey.pem")).unwrap();
    let run = check_as_nobody(&dir, true);
    assert_eq!(run.code, 2, "{run:?}");
}

/// Where Debian keeps Apache's control script; the test needs the real one.
fn apache2ctl() -> &'static str {
    const PATH: &str = "/usr/sbin/apache2ctl";
    assert!(
        std::path::Path::new(PATH).exists(),
        "{PATH} is missing: install the Debian package apache2"
    );
    PATH
}

#[test]
fn an_apache_syntax_error_alerts_with_the_line_that_says_why() {
    use crate::util::sinks::{Behaviour, Sink, Vendor};
    let ctl = apache2ctl();
    let dir = Dir::new();
    // A config Apache reads up to the typo on line 8, as `apache2ctl -t` runs it.
    let conf = dir.write(
        "apache/site.conf",
        "ServerRoot /etc/apache2\n\
         LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so\n\
         Listen 127.0.0.1:8\n\
         ErrorLog /dev/null\n\
         PidFile apache.pid\n\
         \n\
         # the typo\n\
         SSLCertificateFiel /etc/tls/www/fullchain.pem\n",
    );
    let sink = Sink::start(Vendor::Webhook, None, Behaviour::Normal);
    let base = local_ca(&["www"]);
    dir.config(&base);
    assert_eq!(dir.run(&["renew"]).code, 0);
    dir.config(&format!(
        "{base}    reload: {{ command: [{ctl}, -t, -f, {conf}] }}\n\
         alerts:\n  - type: webhook\n    url: {url}\n    on: [failed, rolled_back, rollback_failed]\n",
        conf = conf.display(),
        url = sink.url(),
    ));
    let run = dir.run(&["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    let header = format!("AH00526: Syntax error on line 8 of {}:", conf.display());
    let cause = "Invalid command 'SSLCertificateFiel', perhaps misspelled";
    let line = run
        .stdout
        .lines()
        .position(|l| l.starts_with("www: "))
        .unwrap_or_else(|| panic!("{run:?}"));
    let rest: Vec<&str> = run.stdout.lines().skip(line).collect();
    assert!(
        rest.iter().any(|l| l.contains(&header)) && rest.iter().any(|l| l.contains(cause)),
        "{run:?}"
    );
    let got = sink.accepted();
    assert!(!got.is_empty(), "no alert: {:?}", sink.requests());
    for r in &got {
        let event = r.json.clone().unwrap();
        let message = event["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("{header} | {cause}")) && !message.contains('\n'),
            "{message}"
        );
        assert!(message.chars().count() <= 501, "{message}");
        // The header is the body's `timestamp` as unix seconds, as the README says.
        let body_time = time::OffsetDateTime::parse(
            event["timestamp"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert_eq!(
            r.header("x-certkeeper-timestamp"),
            Some(body_time.unix_timestamp().to_string().as_str())
        );
    }
}

#[tokio::test]
async fn a_measured_wait_is_printed_rounded() {
    use crate::util::pebble::Pebble;
    let pebble = Pebble::start().await;
    let dir = Dir::new();
    // A hook that publishes nothing: the record never shows, the wait is measured.
    dir.config(&format!(
        "state_dir: state\n\
         issuers:\n  pebble:\n    type: acme\n    directory: {directory}\n    trust_roots: {roots}\n    max_concurrent_requests: 1\n\
         dns_providers:\n  silent:\n    type: exec\n    command: [/bin/true]\n\
         dns:\n  resolvers: [\"{dns}\"]\n  propagation_timeout: 1s\n  poll_interval: 1s\n\
         certificates:\n  - name: www\n    domains: [www.rounded.example.com]\n    issuer: pebble\n    dns_provider: silent\n    \
         fullchain: live/www/fullchain.pem\n    privkey: live/www/privkey.pem\n",
        directory = pebble.directory,
        roots = pebble.trust_roots.display(),
        dns = pebble.dns,
    ));
    let run = tokio::task::spawn_blocking(move || {
        let run = dir.run(&["renew"]);
        drop(dir);
        run
    })
    .await
    .unwrap();
    assert_eq!(run.code, 1, "{run:?}");
    let at = run
        .stdout
        .find(" within ")
        .unwrap_or_else(|| panic!("{run:?}"));
    let shown = run.stdout[at + " within ".len()..]
        .split(' ')
        .next()
        .unwrap();
    // At least the 1 s timeout, to the millisecond: `1.004s`, never `1.004381266s`.
    let number = shown.strip_suffix('s').unwrap_or_else(|| panic!("{run:?}"));
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    assert!(whole.parse::<u64>().unwrap() >= 1, "{run:?}");
    assert!(
        frac.len() <= 3 && frac.bytes().all(|b| b.is_ascii_digit()),
        "{shown}: {run:?}"
    );
}

/// `config check` of `yaml` (written as the test's config): its run and the config's path.
fn config_check(dir: &Dir, yaml: &str, args: &[&str]) -> Run {
    dir.config(yaml);
    let mut all = vec!["config", "check"];
    all.extend_from_slice(args);
    dir.run(&all)
}

/// The 1-based line of the first line of `yaml` that contains `needle`.
fn line_of(yaml: &str, needle: &str) -> usize {
    yaml.lines().position(|l| l.contains(needle)).unwrap() + 1
}

fn with_reload(program: &str) -> String {
    format!(
        "{}    reload:\n      command: [\"{program}\", \"-s\", \"reload\"]\n",
        local_ca(&["www"])
    )
}

#[test]
fn config_check_finds_a_reload_program_that_is_not_there() {
    let dir = Dir::new();
    let yaml = with_reload("/usr/sbin/ngnix");
    let run = config_check(&dir, &yaml, &[]);
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(
        run.stderr,
        format!(
            "certkeeper: {}:{}: certificates[0].reload.command: /usr/sbin/ngnix does not exist; fix the path or install the program\n",
            dir.join("config.yaml").display(),
            line_of(&yaml, "command:")
        ),
        "{run:?}"
    );
    // For a config meant for another host, the environment is not looked at.
    let run = config_check(&dir, &yaml, &["--no-environment"]);
    assert_eq!(run.code, 0, "{run:?}");
    // Nothing was written: no state_dir, no live files.
    assert!(!dir.join("state").exists() && !dir.join("live").exists());

    // A bare name is looked up on PATH, as the runtime does.
    let run = config_check(&dir, &with_reload("ngnix-certkeeper-surely-missing"), &[]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("certificates[0].reload.command: program ngnix-certkeeper-surely-missing is not found in any directory of PATH"), "{run:?}");
    let run = config_check(&dir, &with_reload("true"), &[]);
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn config_check_refuses_programs_that_cannot_run_and_runs_none() {
    use std::os::unix::fs::symlink;
    let dir = Dir::new();
    // A real program that would leave a mark if it were run.
    let mark = dir.join("ran");
    let good = dir.write("bin/good", format!("#!/bin/sh\ntouch {}\n", mark.display()));
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o755)).unwrap();
    let plain = dir.write("bin/plain", "#!/bin/sh\ntouch ran\n");
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::create_dir_all(dir.join("bin/dir")).unwrap();
    let fifo = dir.join("bin/fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    symlink(dir.join("bin/loop-a"), dir.join("bin/loop-b")).unwrap();
    symlink(dir.join("bin/loop-b"), dir.join("bin/loop-a")).unwrap();
    let p = |rel: &str| dir.join(rel).display().to_string();
    let cases = [
        (p("bin/dir"), "is a directory, not a program"),
        (p("bin/fifo"), "is a FIFO, not a program"),
        (p("bin/loop-a"), "is a loop of symbolic links"),
        (p("bin/plain"), "is not executable by this user"),
        (
            format!("{}/x", p("bin/plain")),
            "a part of its path is not a directory",
        ),
        ("../bin/good".to_owned(), "is a relative path"),
    ];
    for (program, why) in &cases {
        // Reload, health check and exec hook alike.
        for yaml in [
            with_reload(program),
            format!(
                "{}    verify:\n      command: [\"{program}\"]\n",
                local_ca(&["www"])
            ),
        ] {
            let run = config_check(&dir, &yaml, &[]);
            assert_eq!(run.code, 2, "{program}: {run:?}");
            assert_eq!(run.stderr.lines().count(), 1, "{program}: {run:?}");
            assert!(
                run.stderr.contains(&format!(
                    ":{}: certificates[0].",
                    line_of(&yaml, "command:")
                )) && run.stderr.contains(why),
                "{program}: {run:?}"
            );
        }
    }
    let hook = |program: &str| {
        format!(
            "state_dir: state\nissuers:\n  le:\n    type: acme\n    directory: https://127.0.0.1:9/dir\n\
             dns_providers:\n  hook:\n    type: exec\n    command: [\"{program}\"]\n\
             certificates:\n  - name: www\n    domains: [www.test]\n    issuer: le\n    dns_provider: hook\n    \
             fullchain: live/www/fullchain.pem\n    privkey: live/www/privkey.pem\n"
        )
    };
    let yaml = hook(&p("bin/plain"));
    let run = config_check(&dir, &yaml, &[]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            ":{}: dns_providers.hook.command: ",
            line_of(&yaml, "command:")
        )) && run.stderr.contains("is not executable by this user"),
        "{run:?}"
    );
    for yaml in [with_reload(&p("bin/good")), hook(&p("bin/good"))] {
        let run = config_check(&dir, &yaml, &[]);
        assert_eq!(run.code, 0, "{run:?}");
    }
    assert!(!mark.exists(), "config check ran a program");
}

#[test]
fn secret_file_and_trust_roots_errors_carry_their_line() {
    let dir = Dir::new();
    let yaml = format!(
        "{}alerts:\n  - type: webhook\n    url_file: missing-url\n",
        local_ca(&["www"])
    );
    let run = config_check(&dir, &yaml, &[]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.starts_with(&format!(
            "certkeeper: {}:{}: alerts[0].url: cannot read secret file ",
            dir.join("config.yaml").display(),
            line_of(&yaml, "url_file")
        )),
        "{run:?}"
    );
    let yaml = "state_dir: state\nissuers:\n  le:\n    type: acme\n    directory: https://127.0.0.1:9/dir\n    \
                trust_roots:\n      - roots-a.pem\n      - roots-b.pem\ncertificates: []\n";
    dir.write("roots-a.pem", "");
    let run = config_check(&dir, yaml, &[]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.starts_with(&format!(
            "certkeeper: {}:{}: issuers.le.trust_roots: cannot read {}",
            dir.join("config.yaml").display(),
            line_of(yaml, "roots-b.pem"),
            dir.join("roots-b.pem").display()
        )),
        "{run:?}"
    );
}

#[test]
fn trust_roots_takes_a_list_and_check_anchors_in_every_file() {
    let dir = Dir::new();
    // Two local CAs make two roots; then an ACME issuer trusts them through trust_roots.
    dir.config(
        "state_dir: state\nissuers:\n  internal:\n    type: local-ca\n  other:\n    type: local-ca\n\
         certificates:\n  - name: www\n    domains: [www.test]\n    issuer: internal\n    \
         fullchain: live/www/fullchain.pem\n    privkey: live/www/privkey.pem\n  \
         - name: api\n    domains: [api.test]\n    issuer: other\n    \
         fullchain: live/api/fullchain.pem\n    privkey: live/api/privkey.pem\n",
    );
    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    std::fs::copy(
        dir.join("state/ca/internal/root.pem"),
        dir.join("internal.pem"),
    )
    .unwrap();
    std::fs::copy(dir.join("state/ca/other/root.pem"), dir.join("other.pem")).unwrap();
    let acme = |roots: &str| {
        format!(
            "state_dir: state\nissuers:\n  le:\n    type: acme\n    directory: https://127.0.0.1:9/dir\n    trust_roots: {roots}\n\
             dns_providers:\n  hook:\n    type: exec\n    command: [/bin/true]\n\
             certificates:\n  - name: www\n    domains: [www.test]\n    issuer: le\n    dns_provider: hook\n    \
             fullchain: live/www/fullchain.pem\n    privkey: live/www/privkey.pem\n"
        )
    };
    // The root of www's chain second in the list: trusted.
    let run = config_check(&dir, &acme("[other.pem, internal.pem]"), &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(&format!(
            ", trust_roots {}, {}",
            dir.join("other.pem").display(),
            dir.join("internal.pem").display()
        )),
        "{run:?}"
    );
    let (code, entries) = dir.check_json();
    assert_eq!(
        (code, &entries[0]["status"]),
        (0, &Value::from("ok")),
        "{entries:?}"
    );
    // One file, as before, still works; the wrong root alone leaves the chain untrusted.
    dir.config(&acme("internal.pem"));
    assert_eq!(dir.check_json().0, 0);
    dir.config(&acme("[other.pem]"));
    let (code, entries) = dir.check_json();
    assert_eq!(code, 2, "{entries:?}");
    // A list item that is not a root bundle: UNKNOWN, naming the item and its line.
    dir.write("not-pem.pem", "not a certificate\n");
    let yaml = acme("\n      - other.pem\n      - not-pem.pem");
    dir.config(&yaml);
    let run = dir.run(&["check"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr.starts_with(&format!(
            "certkeeper: {}:{}: issuers.le.trust_roots[1]: ",
            dir.join("config.yaml").display(),
            line_of(&yaml, "not-pem.pem")
        )),
        "{run:?}"
    );
}
