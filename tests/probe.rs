//! The standing probe of what clients are served, against a real nginx: the daemon's
//! `certkeeper_served_*` metrics and its `drift` alert through a webhook, and
//! `check --probe`. nginx serves its own copy of the files (`served/`), which the
//! certificate's reload command fills from the live files; the tests put other files there
//! (the leaf alone, a stale pair) and reload nginx themselves.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde_json::Value;

use crate::daemon::{Daemon, http_get};
use crate::metrics::{Sample, parse, value};
use crate::util::fixtures::self_signed_leaf;
use crate::util::nginx::{Nginx, Site, quote, write_script};
use crate::util::pebble::free_tcp_port;
use crate::util::sinks::{Behaviour, Sink, Vendor};
use crate::util::{Dir, Run};

/// The signing secret of the webhook channel.
const SECRET: &str = "whsec-probe-0123456789";
/// `drift_after` in the tests' config.
const DRIFT_AFTER: Duration = Duration::from_secs(3);
/// The longest the tests wait for anything the daemon or nginx does.
const WAIT: Duration = Duration::from_secs(60);
/// How many connections in a row must see a new chain before nginx counts as serving it.
const IN_A_ROW: usize = 5;

/// A local-CA certificate `web` served by a real nginx from its own copy of the files.
struct Served {
    dir: Dir,
    nginx: Nginx,
}

/// A certificate pair as PEM bytes.
struct Pair {
    fullchain: Vec<u8>,
    privkey: Vec<u8>,
}

impl Served {
    /// nginx serving a self-signed pair for `web.test`, and the config: the certificate
    /// reloads nginx with the live files copied to its `served/` files, is verified
    /// there, and is probed every second; `extra` is appended at top level.
    fn new(extra: &str) -> Served {
        let dir = Dir::new();
        let (cert, key) = self_signed_leaf(&["web.test"]);
        let fullchain = dir.write("served/fullchain.pem", cert);
        let privkey = dir.write("served/privkey.pem", key);
        let nginx = Nginx::start(
            &dir.join("nginx"),
            &[Site::new("web.test", &fullchain, &privkey)],
        );
        let argv: Vec<String> = nginx.reload_argv().iter().map(|a| quote(a)).collect();
        let script = write_script(
            &dir.join("reload.sh"),
            &format!(
                "#!/bin/sh\nset -e\ncp {live}/fullchain.pem {served}/fullchain.pem\ncp {live}/privkey.pem {served}/privkey.pem\nexec {}\n",
                argv.join(" "),
                live = quote(&dir.join("live/web").display().to_string()),
                served = quote(&dir.join("served").display().to_string()),
            ),
        );
        dir.config(&format!(
            "state_dir: state\n\
             issuers:\n  internal:\n    type: local-ca\n    validity: 90d\n\
             renewal:\n  schedule: \"0 0 0 1 1 *\"\n  jitter: 0s\n\
             probe_interval: 1s\ndrift_after: {}s\n\
             certificates:\n  - name: web\n    domains: [web.test]\n    issuer: internal\n    \
             fullchain: live/web/fullchain.pem\n    privkey: live/web/privkey.pem\n    \
             reload: {{ command: [\"{}\"], timeout: 10s }}\n    \
             verify: {{ tls_connect: \"{}\", server_name: web.test, timeout: 10s }}\n{extra}",
            DRIFT_AFTER.as_secs(),
            script.display(),
            nginx.connect(),
        ));
        Served { dir, nginx }
    }

    fn live(&self) -> Pair {
        Pair {
            fullchain: std::fs::read(self.dir.join("live/web/fullchain.pem")).unwrap(),
            privkey: std::fs::read(self.dir.join("live/web/privkey.pem")).unwrap(),
        }
    }

    /// Makes nginx serve `fullchain` with `privkey` (its `served/` files, then a reload),
    /// and waits until it does.
    fn serve(&self, fullchain: &[u8], privkey: &[u8]) {
        std::fs::write(self.dir.join("served/fullchain.pem"), fullchain).unwrap();
        std::fs::write(self.dir.join("served/privkey.pem"), privkey).unwrap();
        let argv = self.nginx.reload_argv();
        let out = Command::new(&argv[0]).args(&argv[1..]).output().unwrap();
        assert!(out.status.success(), "nginx reload: {out:?}");
        self.wait_chain(fullchain);
    }

    /// Waits until nginx serves exactly the certificates of `fullchain`, on [`IN_A_ROW`]
    /// connections in a row (an old worker may still answer some right after a reload).
    fn wait_chain(&self, fullchain: &[u8]) {
        let (want, _) = certkeeper::x509::read_certificates(fullchain).unwrap();
        let want: Vec<String> = want.into_iter().map(|c| c.fingerprint).collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let end = Instant::now() + WAIT;
        let mut seen = 0;
        while seen < IN_A_ROW {
            let got = runtime.block_on(certkeeper::deploy::verify::probe(
                &self.nginx.connect(),
                "web.test",
                Duration::from_secs(5),
            ));
            let got: Option<Vec<String>> = got
                .ok()
                .map(|c| c.into_iter().map(|c| c.fingerprint).collect());
            seen = if got.as_ref() == Some(&want) {
                seen + 1
            } else {
                0
            };
            assert!(Instant::now() < end, "nginx serves {got:?}, not {want:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `renew --force web`: a new live leaf, deployed and served.
    fn renew_force(&self) {
        let run = self.dir.run(&["renew", "--force", "web"]);
        assert_eq!(run.code, 0, "{run:?}");
    }

    fn check_probe(&self) -> (Run, Value) {
        let run = self.dir.run(&["check", "--probe", "--json"]);
        let entries: Value = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("check --probe --json: {e}: {run:?}"));
        let entry = entries[0].clone();
        assert_eq!(entry["name"], "web", "{run:?}");
        (run, entry)
    }
}

/// The leaf alone, from a fullchain: its first PEM block.
fn leaf_only(fullchain: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(fullchain).unwrap();
    let end = "-----END CERTIFICATE-----";
    let at = text.find(end).unwrap() + end.len();
    format!("{}\n", &text[..at]).into_bytes()
}

/// The leaf's SHA-256, the DER bytes of every certificate summed, and the leaf's notAfter
/// (unix seconds).
fn facts(fullchain: &[u8]) -> (String, usize, i64) {
    let (certs, _) = certkeeper::x509::read_certificates(fullchain).unwrap();
    (
        certs[0].fingerprint.clone(),
        certs.iter().map(|c| c.der.len()).sum(),
        certs[0].not_after.unix_timestamp(),
    )
}

fn fingerprint(fullchain: &[u8]) -> String {
    facts(fullchain).0
}

/// A `certkeeper_served_*` sample of `web`.
fn served(samples: &[Sample], what: &str) -> Option<f64> {
    value(
        samples,
        &format!("certkeeper_served_{what}"),
        &[("name", "web")],
    )
}

/// Scrapes `/metrics` until `ok` holds for its samples; panics with the last scrape and the
/// daemon's log after [`WAIT`].
fn scrape_until(port: u16, daemon: &Daemon, ok: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let end = Instant::now() + WAIT;
    loop {
        let (status, body) = http_get(port, "/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
        let samples = parse(&body);
        if ok(&samples) {
            return samples;
        }
        assert!(
            Instant::now() < end,
            "waited {WAIT:?}; last /metrics:\n{body}\n--- daemon log\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `event` of each request the sink accepted, with its body.
fn events(sink: &Sink) -> Vec<(String, Value)> {
    sink.accepted()
        .iter()
        .map(|r| {
            let v = r.json.clone().unwrap_or(Value::Null);
            (v["event"].as_str().unwrap_or_default().to_owned(), v)
        })
        .collect()
}

/// Waits until the sink holds `n` events; panics with the daemon's log otherwise.
fn wait_events(sink: &Sink, n: usize, daemon: &Daemon) -> Vec<(String, Value)> {
    sink.wait_for(n, WAIT);
    let got = events(sink);
    assert!(got.len() >= n, "{got:?}\n--- daemon log\n{}", daemon.log());
    got
}

#[test]
fn the_daemon_measures_the_served_chain_and_alerts_drift_once_then_its_end() {
    let sink = Sink::start(Vendor::Webhook, Some(SECRET), Behaviour::Normal);
    let dir = Dir::new();
    let url: PathBuf = dir.write("hook.url", sink.url());
    let secret: PathBuf = dir.write("hook.secret", SECRET);
    // The default events: `drift` is one of them.
    let host = Served::new(&format!(
        "alerts:\n  - type: webhook\n    url_file: {}\n    secret_file: {}\n",
        url.display(),
        secret.display()
    ));
    let port = free_tcp_port();
    let addr = format!("127.0.0.1:{port}");
    let mut daemon = Daemon::start(host.dir.path(), &["--metrics-listen", &addr], &[]);
    daemon.wait_log("Pass done: 1 renewed.", 1, WAIT);

    // The fullchain: complete, the live leaf.
    let live = host.live();
    let (_, bytes, not_after) = facts(&live.fullchain);
    let s = scrape_until(port, &daemon, |s| {
        served(s, "matches_live") == Some(1.0) && served(s, "chain_complete") == Some(1.0)
    });
    assert_eq!(served(&s, "probe_success"), Some(1.0));
    assert_eq!(served(&s, "chain_length"), Some(2.0));
    assert_eq!(served(&s, "chain_bytes"), Some(bytes as f64));
    assert_eq!(served(&s, "not_after_seconds"), Some(not_after as f64));
    assert!(served(&s, "handshake_seconds").is_some_and(|t| t > 0.0));

    // Only the leaf: incomplete, still the live leaf.
    host.serve(&leaf_only(&live.fullchain), &live.privkey);
    let s = scrape_until(port, &daemon, |s| served(s, "chain_complete") == Some(0.0));
    assert_eq!(served(&s, "matches_live"), Some(1.0));
    assert_eq!(served(&s, "chain_length"), Some(1.0));
    assert_eq!(
        served(&s, "chain_bytes"),
        Some(facts(&leaf_only(&live.fullchain)).1 as f64)
    );

    // A stale copy: the pair before a renewal. One `drift`, after drift_after.
    let stale = live;
    host.renew_force();
    let live = host.live();
    assert_ne!(fingerprint(&live.fullchain), fingerprint(&stale.fullchain));
    // A probe during the renewal's deploy (new live files, nginx not reloaded yet) may have
    // seen a mismatch: a probe of the new leaf served ends it before the clock that counts.
    let renewed = facts(&live.fullchain).2 as f64;
    scrape_until(port, &daemon, |s| {
        served(s, "matches_live") == Some(1.0) && served(s, "not_after_seconds") == Some(renewed)
    });
    let swapped = Instant::now();
    host.serve(&stale.fullchain, &stale.privkey);
    let s = scrape_until(port, &daemon, |s| served(s, "matches_live") == Some(0.0));
    assert_eq!(served(&s, "chain_complete"), Some(1.0));
    assert_eq!(
        served(&s, "not_after_seconds"),
        Some(facts(&stale.fullchain).2 as f64)
    );
    let got = wait_events(&sink, 1, &daemon);
    assert!(
        swapped.elapsed() >= DRIFT_AFTER,
        "drift came {:?} after the stale copy was put in place: {got:?}",
        swapped.elapsed()
    );
    let (event, body) = &got[0];
    assert_eq!(event, "drift", "{got:?}");
    assert_eq!(body["certificate"], "web");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("not the live one"), "{message}");
    assert!(
        message.contains(&fingerprint(&stale.fullchain)[..16]),
        "{message}"
    );
    // Three more probes: no second `drift`.
    std::thread::sleep(DRIFT_AFTER);
    assert_eq!(events(&sink).len(), 1, "{:?}", events(&sink));

    // The right files again: the live leaf, complete, and one `drift_resolved`.
    host.serve(&live.fullchain, &live.privkey);
    scrape_until(port, &daemon, |s| {
        served(s, "matches_live") == Some(1.0) && served(s, "chain_complete") == Some(1.0)
    });
    let got = wait_events(&sink, 2, &daemon);
    let names: Vec<&str> = got.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["drift", "drift_resolved"], "{got:?}");
    for r in sink.accepted() {
        assert!(!r.body_text().contains(SECRET));
    }
    assert!(!daemon.log().contains(SECRET));

    daemon.signal(Signal::TERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)).code(), Some(0));
}

#[test]
fn check_probe_reports_the_served_chain_with_nagios_codes() {
    let host = Served::new("");
    let run = host.dir.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    let live = host.live();
    let (fp, bytes, _) = facts(&live.fullchain);

    // Without --probe nothing is probed.
    let run = host.dir.run(&["check", "--json"]);
    let entries: Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(entries[0].get("served").is_none(), "{run:?}");

    let (run, e) = host.check_probe();
    assert_eq!(run.code, 0, "{run:?}");
    let s = &e["served"];
    assert_eq!(s["connect"], host.nginx.connect());
    assert_eq!(s["server_name"], "web.test");
    assert_eq!(s["error"], Value::Null);
    assert_eq!(s["complete"], true, "{s}");
    assert_eq!(s["matches_live"], true);
    assert_eq!(s["chain_length"], 2);
    assert_eq!(s["chain_bytes"], bytes);
    assert_eq!(s["fingerprint"], fp);
    assert_eq!(s["not_after"], e["not_after"]);
    assert!(s["handshake_seconds"].as_f64().is_some_and(|t| t > 0.0));

    // The leaf alone: WARNING, with the missing intermediate named.
    host.serve(&leaf_only(&live.fullchain), &live.privkey);
    let (run, e) = host.check_probe();
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(e["status"], "warning");
    assert_eq!(e["served"]["complete"], false);
    assert_eq!(e["served"]["matches_live"], true);
    let why = e["served"]["chain_problems"][0].as_str().unwrap();
    assert!(why.contains("missing intermediate"), "{why}");
    let text = host.dir.run(&["check", "--probe"]);
    assert_eq!(text.code, 1, "{text:?}");
    assert!(
        text.stdout
            .contains("the chain as sent is not complete: chain incomplete: missing intermediate"),
        "{text:?}"
    );

    // A stale copy: WARNING, not the live leaf.
    let stale = live;
    host.renew_force();
    host.serve(&stale.fullchain, &stale.privkey);
    let (run, e) = host.check_probe();
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(e["served"]["complete"], true);
    assert_eq!(e["served"]["matches_live"], false);
    assert_eq!(e["served"]["fingerprint"], fingerprint(&stale.fullchain));
    assert!(
        e["problems"].as_array().unwrap().iter().any(|p| p
            .as_str()
            .unwrap()
            .contains("is not the live one; reload the service")),
        "{e}"
    );

    // Nothing listening: CRITICAL, with the connect error.
    let Served { dir, nginx } = host;
    drop(nginx);
    let run = dir.run(&["check", "--probe", "--json"]);
    assert_eq!(run.code, 2, "{run:?}");
    let entries: Value = serde_json::from_str(&run.stdout).unwrap();
    let s = &entries[0]["served"];
    assert!(
        s["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot connect")),
        "{run:?}"
    );
    assert_eq!(s["complete"], Value::Null);
    assert_eq!(entries[0]["status"], "critical");
}
