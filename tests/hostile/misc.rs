//! Hostile input, round two: misc. `/metrics` against idle and slow clients, config values
//! with control characters and overlong names, owners that do not resolve, and usage errors
//! of the Nagios commands wherever the global options stand.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::CONFIG;
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
