//! Hostile input, round two: misc. `/metrics` against idle and slow clients, config values
//! with control characters and overlong names, owners that do not resolve, and usage errors
//! of the Nagios commands wherever the global options stand.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{CONFIG, bounded, listing};
use crate::util::{Dir, Run, bin};

/// `certkeeper run --metrics-listen` on a local-CA config; killed when dropped.
struct Daemon {
    child: Child,
    log: std::path::PathBuf,
    port: u16,
}

impl Daemon {
    fn start(dir: &Dir) -> Daemon {
        dir.config(&CONFIG.replace(
            "certificates:",
            "renewal:\n  schedule: \"0 0 0 1 1 *\"\n  jitter: 0s\ncertificates:",
        ));
        let port = crate::util::pebble::free_tcp_port();
        let log = dir.join("daemon.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin())
            .arg("--config")
            .arg(dir.join("config.yaml"))
            .args(["run", "--metrics-listen", &format!("127.0.0.1:{port}")])
            .env_remove("CERTKEEPER_CONFIG")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let daemon = Daemon { child, log, port };
        let end = Instant::now() + super::BOUND;
        while !std::fs::read_to_string(&daemon.log)
            .unwrap_or_default()
            .contains("Pass done")
        {
            assert!(Instant::now() < end, "the daemon's first pass never ended");
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }

    fn connect(&self) -> TcpStream {
        TcpStream::connect(("127.0.0.1", self.port)).unwrap()
    }

    /// A whole scrape, every step of it bounded by `bound`; the status line and body.
    fn scrape(&self, bound: Duration) -> std::io::Result<(String, String)> {
        let mut s = self.connect();
        s.set_read_timeout(Some(bound))?;
        s.set_write_timeout(Some(bound))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        Ok((
            head.lines().next().unwrap_or("").to_owned(),
            body.to_owned(),
        ))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the server closed `s` within `bound` (EOF or reset), without it answering.
fn closed_within(s: &TcpStream, bound: Duration) -> bool {
    s.set_read_timeout(Some(bound)).unwrap();
    let mut buf = [0u8; 64];
    match (&mut &*s).read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// Idle connections, half-sent headers and a slowloris client (one byte a second) cannot
/// keep a scraper waiting: a scrape is answered while 200 of them are open, and they are
/// closed, not held forever.
#[test]
fn idle_and_slow_connections_do_not_block_a_scrape() {
    let dir = Dir::new();
    let daemon = Daemon::start(&dir);
    // Five seconds: far above an answer from a loaded machine, far below what 200 idle
    // connections held for the header timeout each would cost.
    let bound = Duration::from_secs(5);
    let (status, body) = daemon.scrape(bound).unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");

    let mut idle: Vec<TcpStream> = (0..200).map(|_| daemon.connect()).collect();
    for s in idle.iter_mut().take(50) {
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 1").unwrap();
    }
    // Slowloris: 40 connections, each sending one byte a second and never finishing, until
    // the server closes them (or a wide bound passes).
    let slow = {
        let mut conns: Vec<TcpStream> = (0..40).map(|_| daemon.connect()).collect();
        std::thread::spawn(move || {
            let header = b"GET /metrics HTTP/1.1\r\nX-Slow: ";
            let end = Instant::now() + super::BOUND;
            let mut sent = 0;
            while !conns.is_empty() && Instant::now() < end {
                let byte = [header.get(sent).copied().unwrap_or(b'a')];
                // A write to a closed connection fails at the latest on the second try.
                conns.retain_mut(|s| s.write_all(&byte).is_ok());
                sent += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
            conns.len()
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    for round in 0..3 {
        match daemon.scrape(bound) {
            Ok((status, body)) => {
                assert_eq!(status, "HTTP/1.1 200 OK", "round {round}: {body}");
                assert!(
                    body.contains("certkeeper_certificate_not_after_seconds"),
                    "{body}"
                );
            }
            Err(e) => panic!("round {round}: no answer within {bound:?} beside idle clients: {e}"),
        }
    }
    // Every idle and half-sent connection is closed by the server (evicted, or at the header
    // timeout), never answered and never held without end.
    let wait = Duration::from_secs(30);
    let held = idle.iter().filter(|s| !closed_within(s, wait)).count();
    assert_eq!(held, 0, "{held} of 200 idle connections were still open");
    let held = slow.join().unwrap();
    assert_eq!(held, 0, "{held} of 40 slowloris connections were held open");
}

/// Runs the binary with exactly `args` (no `--config` added).
fn raw(args: &[&str]) -> Run {
    let out = Command::new("timeout")
        .args(["--kill-after=5", &super::BOUND.as_secs().to_string(), bin()])
        .args(args)
        .env_remove("CERTKEEPER_CONFIG")
        .output()
        .expect("timeout (coreutils) is needed");
    Run::from(out)
}

/// A usage error of `check` or `verify` is Nagios UNKNOWN (3) wherever the global options
/// stand and whatever form they take; the other commands' usage errors exit 2, and help 0.
#[test]
fn usage_errors_of_nagios_commands_exit_3_wherever_the_global_options_stand() {
    let dir = Dir::new();
    dir.config(CONFIG);
    let c = dir.join("config.yaml").display().to_string();
    let eq = format!("--config={c}");
    let prefixes: Vec<Vec<&str>> = vec![
        vec![],
        vec!["--config", &c],
        vec![&eq],
        vec!["-v"],
        vec!["-vv", "--config", &c],
        vec!["-q"],
        vec!["--log-format", "json"],
        vec!["--log-format=text", "-v"],
        vec!["--config", "check"],
    ];
    for prefix in &prefixes {
        for (tail, code) in [
            (&["check", "--bogus"][..], 3),
            (&["check", "--json", "--online", "--no-environment"][..], 3),
            (&["verify"][..], 3),
            (&["verify", "a", "b"][..], 3),
            (&["verify", "www", "--bogus"][..], 3),
            (&["check", "--log-format", "bogus"][..], 3),
            (&["check", "-v", "-q"][..], 3),
            (&["renew", "--bogus"][..], 2),
            (&["snapshots"][..], 2),
            (&["check", "--help"][..], 0),
            (&["verify", "--help"][..], 0),
        ] {
            let args: Vec<&str> = prefix.iter().copied().chain(tail.iter().copied()).collect();
            let run = raw(&args);
            assert_eq!(run.code, code, "{args:?}: {run:?}");
        }
    }
    // A bad value of a global option before the command.
    for args in [
        &["--log-format", "bogus", "check"][..],
        &["--log-format=bogus", "verify", "www"],
        &["-v", "--log-format", "bogus", "--config", &c, "check"],
        &["-q", "-v", "check"],
        &["--config"],
    ] {
        let run = raw(args);
        let want = if args.contains(&"check") || args.contains(&"verify") {
            3
        } else {
            2
        };
        assert_eq!(run.code, want, "{args:?}: {run:?}");
    }
}

/// Whether `text` is one line of printable text (a final newline aside).
fn one_printable_line(text: &str) -> bool {
    let text = text.strip_suffix('\n').unwrap_or(text);
    !text.is_empty() && !text.chars().any(char::is_control)
}

/// Domain names longer than DNS allows (253 characters in all, wildcard label included; 63 a
/// label) are refused with one line; the longest valid ones pass.
#[test]
fn overlong_domain_names_are_refused() {
    let dir = Dir::new();
    // Labels of 63, 63, 63 and 61 characters: 253 in all.
    let longest = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61)
    );
    assert_eq!(longest.len(), 253);
    let wildcard_longest = format!("*.{}", &longest[4..]);
    assert_eq!(wildcard_longest.len(), 251);
    for (domain, ok) in [
        (longest.clone(), true),
        (wildcard_longest, true),
        (format!("*.{longest}"), false),
        (format!("*.{}", &longest[1..]), false),
        (format!("x{longest}"), false),
        (format!("{}.test", "a".repeat(64)), false),
        (format!("*.{}.test", "a".repeat(64)), false),
        ("a..test".to_owned(), false),
        ("a_b.test".to_owned(), false),
        ("*.*.test".to_owned(), false),
    ] {
        dir.config(&CONFIG.replace("[www.example.test]", &format!("[\"{domain}\"]")));
        let before = listing(dir.path());
        let run = bounded(&dir, "config.yaml", &["config", "check"]);
        if ok {
            assert_eq!(run.code, 0, "{domain}: {run:?}");
            continue;
        }
        assert_eq!(run.code, 2, "{} chars: {run:?}", domain.len());
        assert!(one_printable_line(&run.stderr), "{run:?}");
        assert!(
            run.stderr.contains("certificates[0].domains[0]: ")
                && run.stderr.contains("is not a valid domain name"),
            "{run:?}"
        );
        // renew refuses it before it writes anything.
        let run = bounded(&dir, "config.yaml", &["renew"]);
        assert_eq!(run.code, 2, "{run:?}");
        assert_eq!(listing(dir.path()), before);
    }
}

/// A config value with ESC, NUL, CR or a newline in it, wherever an error or a warning
/// echoes it (a name, a domain, a path, a duration, a type, a key, the YAML parser's own
/// message), is printed escaped, on one line.
#[test]
fn config_values_with_control_characters_are_echoed_escaped_on_one_line() {
    let dir = Dir::new();
    // YAML double-quoted escapes put the raw characters into the values.
    let evil = r#""x\e[31mred\0nul\r\nCERTKEEPER OK - forged""#;
    let with = |from: &str, to: &str| CONFIG.replace(from, to);
    let cases = [
        ("name", with("name: www", &format!("name: {evil}"))),
        ("domain", with("[www.example.test]", &format!("[{evil}]"))),
        (
            "issuer",
            with("issuer: internal", &format!("issuer: {evil}")),
        ),
        ("issuer key", CONFIG.replace("internal", evil)),
        ("type", with("type: local-ca", &format!("type: {evil}"))),
        (
            "validity",
            with("validity: 90d", &format!("validity: {evil}")),
        ),
        (
            "unknown key",
            with(
                "    validity: 90d\n",
                &format!("    validity: 90d\n    {evil}: 1\n"),
            ),
        ),
        (
            "duration",
            format!("renewal:\n  before_expiry: {evil}\n{CONFIG}"),
        ),
        ("cron", format!("renewal:\n  schedule: {evil}\n{CONFIG}")),
        (
            "mode",
            with(
                "privkey: live/www/privkey.pem\n",
                &format!("privkey: live/www/privkey.pem\n    mode: {evil}\n"),
            ),
        ),
        (
            "url",
            format!("alerts:\n  - type: webhook\n    url: {evil}\n{CONFIG}"),
        ),
        (
            "state_dir",
            with(
                "state_dir: state",
                &format!("state_dir: {evil}\ndiscover:\n  paths: [1]"),
            ),
        ),
        (
            "yaml parse error",
            format!("{CONFIG}\u{1b}[31m\u{0}: [\r\n"),
        ),
        ("bad tab", format!("{CONFIG}\t\u{1b}x: \u{7}\n")),
    ];
    for (what, yaml) in cases {
        dir.config(&yaml);
        for args in [&["config", "check"][..], &["check"], &["renew"]] {
            let run = bounded(&dir, "config.yaml", args);
            assert!(run.code == 2 || run.code == 3, "{what} {args:?}: {run:?}");
            assert!(
                one_printable_line(&run.stderr),
                "{what} {args:?}: {:?}",
                run.stderr
            );
            assert!(
                !run.stdout.chars().any(char::is_control) || run.stdout.is_empty(),
                "{what}: {run:?}"
            );
        }
        assert!(!dir.join("state").exists(), "{what}");
    }
    // A warning echoes values too: plain http to a host that is not loopback.
    dir.config(&format!(
        "alerts:\n  - type: webhook\n    url: \"http://x.example.test/\\e[31m\\0\\r\\nforged\"\n{CONFIG}"
    ));
    let run = bounded(&dir, "config.yaml", &["config", "check"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(one_printable_line(&run.stderr), "{:?}", run.stderr);
    assert!(run.stderr.contains("is plain http"), "{run:?}");
}

/// An owner or group that does not resolve fails its own certificate, not the pass: the other
/// certificate is renewed, and the failing one says which name did not resolve, on one line.
#[test]
fn an_unknown_owner_fails_its_certificate_and_the_others_renew() {
    let dir = Dir::new();
    for (key, value) in [
        ("owner", "no-such-user-xyz"),
        ("group", "no-such-group-xyz"),
    ] {
        dir.config(&format!(
            "state_dir: state\n\
             issuers:\n  internal:\n    type: local-ca\n\
             certificates:\n  - name: bad\n    domains: [bad.example.test]\n    issuer: internal\n    \
             fullchain: live/bad/fullchain.pem\n    privkey: live/bad/privkey.pem\n    {key}: {value}\n  \
             - name: good\n    domains: [good.example.test]\n    issuer: internal\n    \
             fullchain: live/good/fullchain.pem\n    privkey: live/good/privkey.pem\n"
        ));
        let run = bounded(&dir, "config.yaml", &["renew", "--force"]);
        assert_eq!(run.code, 1, "{key}: {run:?}");
        assert!(
            run.stdout.contains("good: renewed from internal"),
            "{key}: {run:?}"
        );
        let bad: Vec<&str> = run
            .stdout
            .lines()
            .filter(|l| l.starts_with("bad: "))
            .collect();
        assert_eq!(bad.len(), 1, "{key}: {run:?}");
        assert!(
            bad[0].contains("FAILED")
                && bad[0].contains(&format!("{key}: "))
                && bad[0].contains(value),
            "{key}: {run:?}"
        );
        assert!(dir.join("live/good/privkey.pem").is_file());
        assert!(!dir.join("live/bad").exists(), "{key}: {run:?}");
        // config check names the certificate's key and the name.
        let run = bounded(&dir, "config.yaml", &["config", "check"]);
        assert_eq!(run.code, 2, "{key}: {run:?}");
        assert!(
            one_printable_line(&run.stderr)
                && run.stderr.contains(&format!("certificates[0].{key}: no "))
                && run.stderr.contains(value),
            "{key}: {run:?}"
        );
    }
}

/// An intermediate whose notBefore is still ahead (a clock set back, or a chain dated
/// wrongly) is called not yet valid with its notBefore, not "not valid now" with its
/// notAfter; an expired one still names its notAfter.
#[test]
fn an_intermediate_not_yet_valid_names_its_not_before() {
    use crate::util::fixtures::{Key, ca_params};
    use rcgen::{CertificateParams, CertifiedIssuer, DnType, IsCa};
    use time::{Duration as Days, OffsetDateTime};
    let now = OffsetDateTime::now_utc();
    let root = CertifiedIssuer::self_signed(ca_params("Misc Root"), Key::P256.generate()).unwrap();
    for (label, from, until, want) in [
        (
            "not yet valid",
            now + Days::days(365),
            now + Days::days(3650),
            "is not yet valid (notBefore ",
        ),
        (
            "expired",
            now - Days::days(3650),
            now - Days::days(365),
            "is expired (notAfter ",
        ),
    ] {
        let mut params = ca_params("Misc Intermediate");
        params.not_before = from;
        params.not_after = until;
        let intermediate = CertifiedIssuer::signed_by(params, Key::P256.generate(), &root).unwrap();
        let key = Key::P256.generate();
        let mut leaf = CertificateParams::new(vec!["www.example.test".to_owned()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "www.example.test");
        leaf.is_ca = IsCa::ExplicitNoCa;
        leaf.not_before = now - Days::days(1);
        leaf.not_after = now + Days::days(60);
        let leaf = leaf.signed_by(&key, &intermediate).unwrap();
        let dir = Dir::new();
        dir.write("trust.pem", root.pem());
        dir.write(
            "live/www/fullchain.pem",
            format!("{}{}", leaf.pem(), intermediate.pem()),
        );
        dir.write("live/www/privkey.pem", key.serialize_pem());
        dir.config(
            "state_dir: state\n\
             issuers:\n  ca:\n    type: acme\n    directory: https://127.0.0.1:9/dir\n    trust_roots: trust.pem\n\
             dns_providers:\n  hook:\n    type: exec\n    command: [/bin/true]\n\
             certificates:\n  - name: www\n    domains: [www.example.test]\n    issuer: ca\n    dns_provider: hook\n    \
             fullchain: live/www/fullchain.pem\n    privkey: live/www/privkey.pem\n",
        );
        let run = bounded(&dir, "config.yaml", &["check"]);
        assert_eq!(run.code, 2, "{label}: {run:?}");
        assert!(
            run.stdout
                .contains(&format!("intermediate \"Misc Intermediate\" {want}")),
            "{label}: {run:?}"
        );
    }
}

/// A valid config whose paths and names of commands hold control characters is summarised
/// by `config check` with them escaped: each item stays on its own line.
#[test]
fn config_check_summarises_control_characters_escaped() {
    let dir = Dir::new();
    dir.config(&CONFIG.replace(
        "fullchain: live/www/fullchain.pem",
        "fullchain: \"live/www/\\e[31mfull\\r\\nchain.pem\"",
    ));
    let run = bounded(&dir, "config.yaml", &["config", "check"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        !run.stdout.chars().any(|c| c.is_control() && c != '\n'),
        "{run:?}"
    );
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("certificate www: "))
        .unwrap();
    assert!(
        line.contains("live/www/\\x1b[31mfull\\x0d\\x0achain.pem"),
        "{run:?}"
    );
}
