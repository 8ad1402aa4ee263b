//! `certkeeper run`, the daemon, through the real binary: against real Pebble on a
//! one-second schedule (renews what is due, then idles), SIGHUP with a broken and a good
//! config, SIGTERM while an order waits on DNS propagation and while a reload runs, a
//! timer-started `renew` during a pass, the sd_notify messages on a test socket, `/metrics`,
//! and `run --once`.

use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::metrics::{parse, value};
use crate::renew_acme::Host;
use crate::util::fixtures::{LeafSpec, Pki};
use crate::util::nginx::write_script;
use crate::util::pebble::{Pebble, free_tcp_port};
use crate::util::{Dir, bin, key_matches_leaf};

use rustix::process::Signal;

/// A running daemon; killed when dropped, so no test leaves one behind.
pub(crate) struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `certkeeper run` on `dir`'s config with `args` and `env`, logging to
    /// `dir/daemon.log`.
    pub(crate) fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let log = dir.join("daemon.log");
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(bin());
        cmd.current_dir(dir)
            .arg("--config")
            .arg(dir.join("config.yaml"))
            .arg("run")
            .args(args)
            .env_remove("CERTKEEPER_CONFIG")
            .env_remove("CERTKEEPER_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        Daemon {
            child: Some(cmd.spawn().expect("start certkeeper run")),
            log,
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `text` `times` times; panics with the log otherwise.
    pub(crate) fn wait_log(&self, text: &str, times: usize, timeout: Duration) {
        let end = Instant::now() + timeout;
        while self.log().matches(text).count() < times {
            assert!(
                Instant::now() < end,
                "waited {timeout:?} for {times}x {text:?} in the daemon's log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn signal(&self, signal: rustix::process::Signal) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        rustix::process::kill_process(rustix::process::Pid::from_raw(pid).unwrap(), signal)
            .unwrap();
    }

    fn running(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// Waits for the exit; panics with the log after `timeout`.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < end,
                "the daemon did not exit within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A local-CA config with a schedule, and `certs` as (name, extra yaml).
fn local_config(dir: &Dir, schedule: &str, certs: &[(&str, &str)]) {
    let mut yaml = format!(
        "state_dir: state\n\
         issuers:\n  internal:\n    type: local-ca\n    validity: 90d\n\
         renewal:\n  before_expiry: 30d\n  schedule: \"{schedule}\"\n  jitter: 0s\n\
         certificates:\n"
    );
    for (name, extra) in certs {
        yaml.push_str(&format!(
            "  - name: {name}\n    domains: [{name}.example.test]\n    issuer: internal\n    \
             fullchain: live/{name}/fullchain.pem\n    privkey: live/{name}/privkey.pem\n{extra}"
        ));
    }
    dir.config(&yaml);
}

fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A reload command that marks its start, takes `secs`, and marks its end.
fn slow_reload(dir: &Dir, secs: u32) -> String {
    let script = write_script(
        &dir.join("slow-reload"),
        &format!(
            "#!/bin/sh\necho \"start $(date +%s.%N)\" >> '{log}'\nsleep {secs}\necho \"end $(date +%s.%N)\" >> '{log}'\n",
            log = dir.join("reload.log").display()
        ),
    );
    format!(
        "    reload:\n      command: [\"{}\"]\n      timeout: 30s\n",
        script.display()
    )
}

fn wait_file_contains(path: &Path, text: &str, timeout: Duration) {
    let end = Instant::now() + timeout;
    while !std::fs::read_to_string(path)
        .unwrap_or_default()
        .contains(text)
    {
        assert!(
            Instant::now() < end,
            "waited {timeout:?} for {text:?} in {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn against_pebble_it_renews_a_due_certificate_then_idles() {
    let pebble = Pebble::start().await;
    let host = Host::new(&pebble);
    host.config(&pebble, "30d", &[("www", "pebble", "hook", "ecdsa-p256")]);
    // A one-second schedule without jitter.
    let yaml = std::fs::read_to_string(host.dir.join("config.yaml"))
        .unwrap()
        .replace(
            "renewal:\n",
            "renewal:\n  schedule: \"* * * * * *\"\n  jitter: 0s\n",
        );
    host.dir.config(&yaml);
    let mut daemon = Daemon::start(host.dir.path(), &[], &[]);
    daemon.wait_log("Renewed certificate.", 1, Duration::from_secs(60));
    let fullchain = read(host.dir.join("live/www/fullchain.pem"));
    let privkey = read(host.dir.join("live/www/privkey.pem"));
    assert!(key_matches_leaf(&fullchain, &privkey));
    // Then it idles: passes every second find nothing due, and nothing more is ordered.
    daemon.wait_log("Pass done: 1 not due.", 3, Duration::from_secs(20));
    assert_eq!(read(host.dir.join("live/www/fullchain.pem")), fullchain);
    let presents = host
        .hook_calls()
        .iter()
        .filter(|c| c.contains(" present "))
        .count();
    assert_eq!(
        presents,
        2,
        "one order (apex and wildcard): {:?}",
        host.hook_calls()
    );
    assert_eq!(daemon.log().matches("Renewed certificate.").count(), 1);
    assert!(daemon.running());
    daemon.signal(Signal::TERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)).code(), Some(0));
}

#[test]
fn sighup_refuses_a_broken_config_and_takes_a_good_one() {
    let dir = Dir::new();
    local_config(&dir, "* * * * * *", &[("one", "")]);
    let mut daemon = Daemon::start(dir.path(), &[], &[]);
    daemon.wait_log("Renewed certificate.", 1, Duration::from_secs(20));

    // A broken config: refused with its problem, and the old config and schedule go on.
    let good = std::fs::read_to_string(dir.join("config.yaml")).unwrap();
    dir.config(&good.replace("before_expiry: 30d", "before_expiry: soon"));
    daemon.signal(Signal::HUP);
    daemon.wait_log("Refused the new config", 1, Duration::from_secs(10));
    let log = daemon.log();
    assert!(log.contains("renewal.before_expiry"), "{log}");
    let passes = log.matches("Pass done:").count();
    daemon.wait_log("Pass done:", passes + 2, Duration::from_secs(10));
    assert!(daemon.running());

    // A good one with a second certificate: taken, and the new certificate is issued.
    local_config(&dir, "* * * * * *", &[("one", ""), ("two", "")]);
    daemon.signal(Signal::HUP);
    daemon.wait_log("Config reloaded", 1, Duration::from_secs(10));
    daemon.wait_log("Renewed certificate.", 2, Duration::from_secs(20));
    assert!(key_matches_leaf(
        &read(dir.join("live/two/fullchain.pem")),
        &read(dir.join("live/two/privkey.pem"))
    ));
    daemon.signal(Signal::TERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_while_waiting_on_dns_propagation_exits_0_and_removes_the_records() {
    let pebble = Pebble::start().await;
    let host = Host::new(&pebble);
    // The silent hook publishes nowhere: the order waits on propagation for a minute.
    host.config(&pebble, "30d", &[("www", "pebble", "silent", "ecdsa-p256")]);
    let yaml = std::fs::read_to_string(host.dir.join("config.yaml"))
        .unwrap()
        .replace("propagation_timeout: 3s", "propagation_timeout: 60s");
    host.dir.config(&yaml);
    // A live pair that is due (expires in 3 days).
    let pki = Pki::new("daemon-test");
    let apex = host.name("www");
    let leaf = pki.leaf(LeafSpec::new(&[&apex], 3));
    host.dir.write("live/www/fullchain.pem", leaf.fullchain());
    host.dir.write("live/www/privkey.pem", &leaf.key_pem);
    let before = (
        read(host.dir.join("live/www/fullchain.pem")),
        read(host.dir.join("live/www/privkey.pem")),
    );

    let mut daemon = Daemon::start(host.dir.path(), &[], &[]);
    wait_file_contains(&host.hook_log, " present ", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    daemon.signal(Signal::TERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)).code(), Some(0));
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "stopping waited for the propagation timeout"
    );
    // Every record presented was cleaned up, and the live pair is the one from before.
    let calls = host.hook_calls();
    let presented: Vec<&str> = calls
        .iter()
        .filter_map(|c| c.split_once(" present ").map(|(_, f)| f))
        .collect();
    assert!(!presented.is_empty());
    for fqdn in &presented {
        assert!(
            calls
                .iter()
                .any(|c| c.ends_with(&format!(" cleanup {fqdn}"))),
            "{fqdn} not cleaned up: {calls:?}\n{}",
            daemon.log()
        );
    }
    let after = (
        read(host.dir.join("live/www/fullchain.pem")),
        read(host.dir.join("live/www/privkey.pem")),
    );
    assert_eq!(after, before);
    // The stop is not a failure: no backoff holds the next start back.
    let state = std::fs::read_to_string(host.dir.join("state/state/www.json")).unwrap_or_default();
    assert!(!state.contains("\"failed\""), "{state}");
}

#[test]
fn sigterm_while_reloading_finishes_the_deploy_and_exits_0() {
    let dir = Dir::new();
    local_config(&dir, "0 0 0 1 1 *", &[("web", &slow_reload(&dir, 2))]);
    let mut daemon = Daemon::start(dir.path(), &[], &[]);
    let reload_log = dir.join("reload.log");
    wait_file_contains(&reload_log, "start", Duration::from_secs(20));
    daemon.signal(Signal::TERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)).code(), Some(0));
    // The reload in flight finished, the deploy was committed, and the pair is whole.
    let reloads = std::fs::read_to_string(&reload_log).unwrap();
    assert_eq!(reloads.matches("start").count(), 1, "{reloads}");
    assert_eq!(reloads.matches("end").count(), 1, "{reloads}");
    let log = daemon.log();
    assert!(log.contains("Renewed certificate."), "{log}");
    assert!(key_matches_leaf(
        &read(dir.join("live/web/fullchain.pem")),
        &read(dir.join("live/web/privkey.pem"))
    ));
    let journal: Vec<_> = std::fs::read_dir(dir.join("state/journal"))
        .map(|d| d.filter_map(Result::ok).collect())
        .unwrap_or_default();
    assert!(journal.is_empty(), "a stage was left open: {journal:?}");
    let check = dir.run(&["check", "web"]);
    assert_eq!(check.code, 0, "{check:?}");
}

#[test]
fn a_renew_started_during_a_pass_waits_and_finds_nothing_to_do() {
    let dir = Dir::new();
    local_config(&dir, "0 0 0 1 1 *", &[("web", &slow_reload(&dir, 2))]);
    let mut daemon = Daemon::start(dir.path(), &[], &[]);
    let reload_log = dir.join("reload.log");
    wait_file_contains(&reload_log, "start", Duration::from_secs(20));
    // The daemon's pass holds the lock through its reload: renew waits for it.
    let renew = dir.run(&["-v", "renew"]);
    let renew_done = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert_eq!(renew.code, 0, "{renew:?}");
    assert!(
        renew.stderr.contains("Waiting for another certkeeper pass"),
        "{renew:?}"
    );
    assert!(renew.stdout.contains("web: not due"), "{renew:?}");
    let reloads = std::fs::read_to_string(&reload_log).unwrap();
    assert_eq!(
        reloads.matches("start").count(),
        1,
        "renew deployed too: {reloads}"
    );
    let end: f64 = reloads
        .lines()
        .find_map(|l| l.strip_prefix("end "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        renew_done >= end,
        "renew ended before the daemon's reload did"
    );
    daemon.signal(Signal::TERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

/// Receives sd_notify datagrams until `until` matches one, or panics after `timeout`.
fn receive_until(
    socket: &UnixDatagram,
    got: &mut Vec<String>,
    mut until: impl FnMut(&str) -> bool,
    timeout: Duration,
) {
    let end = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    loop {
        assert!(Instant::now() < end, "waited {timeout:?}; got {got:?}");
        match socket.recv(&mut buf) {
            Ok(n) => {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = until(&m);
                got.push(m);
                if done {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn sd_notify_messages_arrive_in_order() {
    let dir = Dir::new();
    local_config(&dir, "0 0 0 1 1 *", &[("web", "")]);
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut daemon = Daemon::start(
        dir.path(),
        &[],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut got = Vec::new();
    let t = Duration::from_secs(20);
    receive_until(&socket, &mut got, |m| m.contains("1 renewed"), t);
    // At least two watchdog pings while idle (every 200 ms).
    let mut pings = 0;
    receive_until(
        &socket,
        &mut got,
        |m| {
            pings += usize::from(m == "WATCHDOG=1");
            pings >= 2
        },
        t,
    );
    let before_reload = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    daemon.signal(Signal::HUP);
    receive_until(&socket, &mut got, |m| m.contains("1 not due"), t);
    daemon.signal(Signal::TERM);
    receive_until(&socket, &mut got, |m| m.starts_with("STOPPING=1"), t);
    assert_eq!(daemon.wait_exit(t).code(), Some(0));

    let seen: Vec<String> = got
        .iter()
        .filter(|m| *m != "WATCHDOG=1")
        .map(|m| m.lines().next().unwrap().to_owned())
        .collect();
    let statuses: Vec<&String> = got.iter().filter(|m| m.starts_with("STATUS=")).collect();
    assert_eq!(
        seen,
        [
            "READY=1",
            "STATUS=Renewal pass running",
            statuses[1].as_str(),
            "RELOADING=1",
            "READY=1",
            "STATUS=Renewal pass running",
            statuses[3].as_str(),
            "STOPPING=1",
        ],
        "{got:?}"
    );
    assert!(statuses[1].contains("1 renewed; next pass 20"), "{got:?}");
    let reloading = got.iter().find(|m| m.starts_with("RELOADING=1")).unwrap();
    let usec: i64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap()
        .parse()
        .unwrap();
    let then = before_reload.tv_sec * 1_000_000 + before_reload.tv_nsec / 1000;
    assert!(
        usec >= then && usec < then + 10_000_000,
        "MONOTONIC_USEC {usec} vs {then}"
    );
}

/// `GET path` over plain HTTP/1.1; the status line and the body.
pub(crate) fn http_get(port: u16, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

#[test]
fn metrics_listen_serves_the_prometheus_text() {
    let dir = Dir::new();
    local_config(&dir, "0 0 0 1 1 *", &[("web", ""), ("api", "")]);
    let port = free_tcp_port();
    let addr = format!("127.0.0.1:{port}");
    let mut daemon = Daemon::start(dir.path(), &["--metrics-listen", &addr], &[]);
    daemon.wait_log("Pass done: 2 renewed.", 1, Duration::from_secs(20));
    let (status, body) = http_get(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    let samples = parse(&body);
    for name in ["web", "api"] {
        let not_after = value(
            &samples,
            "certkeeper_certificate_not_after_seconds",
            &[("name", name)],
        )
        .unwrap_or_else(|| panic!("{name}: {body}"));
        assert!(not_after > 0.0);
        assert_eq!(
            value(
                &samples,
                "certkeeper_certificate_consecutive_failures",
                &[("name", name)]
            ),
            Some(0.0)
        );
        assert!(
            value(
                &samples,
                "certkeeper_certificate_last_success_timestamp_seconds",
                &[("name", name)]
            )
            .unwrap()
                > 0.0
        );
    }
    assert_eq!(
        value(
            &samples,
            "certkeeper_pass_certificates",
            &[("outcome", "renewed")]
        ),
        Some(2.0),
        "{body}"
    );
    assert!(value(&samples, "certkeeper_pass_duration_seconds", &[]).is_some());
    let (status, _) = http_get(port, "/other");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    daemon.signal(Signal::TERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn metrics_listen_on_a_taken_port_is_a_startup_error() {
    let dir = Dir::new();
    local_config(&dir, "0 0 0 1 1 *", &[("web", "")]);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let run = dir.run(&["run", "--metrics-listen", &addr]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains(&format!("--metrics-listen {addr}")),
        "{run:?}"
    );
    assert!(!dir.join("live/web").exists(), "it ran a pass anyway");
}

#[test]
fn run_once_is_one_renew_pass_with_its_exit_codes() {
    let dir = Dir::new();
    local_config(&dir, "0 0 0 1 1 *", &[("web", "")]);
    let run = dir.run(&["run", "--once"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with("web: renewed from internal"),
        "{run:?}"
    );
    let run = dir.run(&["run", "--once"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("web: not due"), "{run:?}");
    // A refused reload fails the pass: exit 1, as `renew` (a first deploy stays in place).
    local_config(
        &dir,
        "0 0 0 1 1 *",
        &[
            ("web", ""),
            ("bad", "    reload:\n      command: [\"false\"]\n"),
        ],
    );
    let run = dir.run(&["run", "--once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("bad: FAILED: the new certificate from internal is live and stays in place"),
        "{run:?}"
    );
}

#[test]
fn the_daemon_wakes_when_a_backoff_ends_not_on_the_next_tick() {
    let dir = Dir::new();
    // The first reload fails (the first pair stays in place, unserved, until a pass reloads
    // it), later ones work.
    let reload = write_script(
        &dir.join("flaky-reload"),
        &format!(
            "#!/bin/sh\nif [ -e '{m}' ]; then exit 0; fi\ntouch '{m}'\necho 'not yet' >&2\nexit 1\n",
            m = dir.join("reloaded-once").display()
        ),
    );
    local_config(
        &dir,
        // Once a year: only the backoff's end can bring the second pass.
        "0 0 0 1 1 *",
        &[(
            "web",
            &format!("    reload:\n      command: [\"{}\"]\n", reload.display()),
        )],
    );
    let yaml = std::fs::read_to_string(dir.join("config.yaml"))
        .unwrap()
        .replace(
            "  jitter: 0s\n",
            "  jitter: 0s\n  retry: { initial: 2s, max: 1h }\n",
        );
    dir.config(&yaml);
    let mut daemon = Daemon::start(dir.path(), &[], &[]);
    daemon.wait_log("Pass done: 1 failed.", 1, Duration::from_secs(20));
    daemon.wait_log("Pass done: 1 renewed.", 1, Duration::from_secs(20));
    assert_eq!(
        daemon.log().matches("Pass done:").count(),
        2,
        "{}",
        daemon.log()
    );
    assert!(key_matches_leaf(
        &read(dir.join("live/web/fullchain.pem")),
        &read(dir.join("live/web/privkey.pem"))
    ));
    daemon.signal(Signal::TERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)).code(), Some(0));
}
