//! Hostile input, round two: alerts. Vendors (or what answers at a vendor's URL) that
//! redirect, answer without end, echo the token back in another spelling, or put newlines in
//! their answer: every case through `alert test` as a user runs it, under the time and memory
//! bounds of [`bounded`], with all five channel types at once.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{CONFIG, bounded};
use crate::util::sinks::{
    Behaviour, DINGTALK_TOKEN, FEISHU_HOOK, SLACK_TOKEN, Sink, Vendor, WECOM_KEY,
};
use crate::util::{Dir, Run};

/// The signing secrets of the channels.
const WEBHOOK_SECRET: &str = "whsec-hostile-0123456789";
const DINGTALK_SECRET: &str = "SECdingtalk0123456789abcdef";
const FEISHU_SECRET: &str = "feishu-secret-0123456789";
/// The token the generic webhook's URL carries in its query.
const WEBHOOK_TOKEN: &str = "whtoken-5f1e0c9a7b3d";

/// Every vendor, with its channel type.
const VENDORS: [(Vendor, &str); 5] = [
    (Vendor::Slack, "slack"),
    (Vendor::Webhook, "webhook"),
    (Vendor::WeCom, "wecom"),
    (Vendor::DingTalk, "dingtalk"),
    (Vendor::Feishu, "feishu"),
];

/// The secrets a vendor's channel holds that are distinctive enough to redact: the token
/// of its URL and its signing secret.
fn tokens(vendor: Vendor) -> Vec<&'static str> {
    match vendor {
        Vendor::Slack => vec![SLACK_TOKEN],
        Vendor::Webhook => vec![WEBHOOK_TOKEN, WEBHOOK_SECRET],
        Vendor::WeCom => vec![WECOM_KEY],
        Vendor::DingTalk => vec![DINGTALK_TOKEN, DINGTALK_SECRET],
        Vendor::Feishu => vec![FEISHU_HOOK, FEISHU_SECRET],
    }
}

/// Writes a secret file as a user should (mode 0600).
fn secret_file(dir: &Dir, rel: &str, value: &str) -> String {
    let path = dir.write(rel, value);
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    path.display().to_string()
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// One channel per sink (in [`VENDORS`] order), each named as its type, their URLs and
/// secrets in files; writes `config.yaml`.
fn configure(dir: &Dir, sinks: &[Sink]) {
    let mut alerts = String::from("alerts:\n");
    for sink in sinks {
        let url = match sink.vendor() {
            Vendor::Webhook => format!("{}?token={WEBHOOK_TOKEN}", sink.url()),
            _ => sink.url(),
        };
        let (kind, secret) = match sink.vendor() {
            Vendor::Slack => ("slack", None),
            Vendor::Webhook => ("webhook", Some(WEBHOOK_SECRET)),
            Vendor::WeCom => ("wecom", None),
            Vendor::DingTalk => ("dingtalk", Some(DINGTALK_SECRET)),
            Vendor::Feishu => ("feishu", Some(FEISHU_SECRET)),
        };
        let url_file = secret_file(dir, &format!("secrets/{kind}.url"), &url);
        let key = if kind == "webhook" {
            "url_file"
        } else {
            "webhook_url_file"
        };
        alerts.push_str(&format!("  - type: {kind}\n    {key}: {url_file}\n"));
        if let Some(secret) = secret {
            let path = secret_file(dir, &format!("secrets/{kind}.secret"), secret);
            alerts.push_str(&format!("    secret_file: {path}\n"));
        }
    }
    dir.config(&format!("{CONFIG}{alerts}"));
}

/// Five sinks, one per vendor, all behaving as `behaviour`.
fn sinks(behaviour: Behaviour) -> Vec<Sink> {
    VENDORS
        .iter()
        .map(|(vendor, _)| Sink::start(*vendor, None, behaviour))
        .collect()
}

/// The spellings of `token` a hostile answer may use: as it is, in upper case,
/// percent-encoded (each byte, upper- and lower-case hex), and JSON-escaped (`\u00XX`).
fn spellings(token: &str) -> Vec<String> {
    vec![
        token.to_owned(),
        token.to_uppercase(),
        token.bytes().map(|b| format!("%{b:02X}")).collect(),
        token.bytes().map(|b| format!("%{b:02x}")).collect(),
        token.bytes().map(|b| format!("\\u{:04x}", b)).collect(),
    ]
}

/// Asserts that no spelling of any channel's token shows in what a run printed (case
/// ignored), nor any run of 12 characters of one.
fn assert_no_token(run: &Run) {
    let printed = format!("{}\n{}", run.stdout, run.stderr).to_lowercase();
    for (vendor, _) in VENDORS {
        for token in tokens(vendor) {
            for spelling in spellings(token) {
                let spelling = spelling.to_lowercase();
                assert!(
                    !printed.contains(&spelling),
                    "{vendor:?}: the token shows as {spelling:?}:\n{run:?}"
                );
            }
            let token = token.to_lowercase();
            for start in 0..token.len().saturating_sub(12) {
                let piece = &token[start..start + 12];
                assert!(
                    !printed.contains(piece),
                    "{vendor:?}: part of the token shows ({piece:?}):\n{run:?}"
                );
            }
        }
    }
}

/// A listener that answers any request `200` with an empty body and remembers what it got:
/// where a redirect points.
struct Recorder {
    port: u16,
    got: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Recorder {
    fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("address").port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (Arc::clone(&got), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = vec![0; 16384];
                        let n = stream.read(&mut buf).unwrap_or(0);
                        g.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                        let _ = stream.write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Recorder { port, got, stop }
    }

    fn requests(&self) -> Vec<String> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_redirect_is_a_failure_naming_its_status_and_host_and_is_never_followed() {
    for status in [301, 302, 303, 307, 308] {
        let dir = Dir::new();
        let elsewhere = Recorder::start();
        let location = leak(format!(
            "http://127.0.0.1:{}/landing/LOCATIONPATH?q=LOCATIONQUERY",
            elsewhere.port
        ));
        let sinks = sinks(Behaviour::Answer {
            status,
            location: Some(location),
            content_type: "text/plain",
            body: "moved, see LOCATIONBODY",
        });
        configure(&dir, &sinks);
        let run = bounded(&dir, "config.yaml", &["alert", "test"]);
        assert_eq!(run.code, 1, "{status}: {run:?}");
        assert!(
            elsewhere.requests().is_empty(),
            "{status}: the redirect was followed: {:?}\n{run:?}",
            elsewhere.requests()
        );
        let expected: String = VENDORS
            .iter()
            .map(|(_, kind)| {
                format!(
                    "{kind} ({kind}): NOT DELIVERED: HTTP {status} redirect to 127.0.0.1, \
                     not followed: configure the URL it redirects to\n"
                )
            })
            .collect();
        assert_eq!(run.stdout, expected, "{status}: {run:?}");
        for word in ["LOCATIONPATH", "LOCATIONQUERY", "LOCATIONBODY", "landing"] {
            assert!(
                !run.stdout.contains(word) && !run.stderr.contains(word),
                "{status}: {word} shows: {run:?}"
            );
        }
        // One attempt each: a redirect is not worth another.
        for sink in &sinks {
            assert_eq!(sink.requests().len(), 1, "{status} {:?}", sink.vendor());
        }
        assert_no_token(&run);
    }
}

/// How a [`Hostile`] server answers.
#[derive(Clone, Copy, Debug)]
enum Endless {
    /// `content-length: 2147483648`, then zeros as fast as they are taken.
    HugeLength,
    /// Chunked, with chunks of zeros that never end.
    Chunked,
    /// A small content-length, one byte every 200 ms.
    Trickle,
}

/// A raw HTTP server whose answers never end (or end too slowly), a thread per connection;
/// stopped when dropped.
struct Hostile {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Hostile {
    fn start(how: Endless) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let s = Arc::clone(&s);
                        std::thread::spawn(move || serve(stream, how, &s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Hostile { port, stop }
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(mut stream: TcpStream, how: Endless, stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = vec![0; 16384];
    let _ = stream.read(&mut buf);
    let head: &[u8] = match how {
        Endless::HugeLength => b"HTTP/1.1 200 OK\r\ncontent-length: 2147483648\r\n\r\n",
        Endless::Chunked => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        Endless::Trickle => b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n",
    };
    if stream.write_all(head).is_err() {
        return;
    }
    let zeros = vec![0u8; 65536];
    let mut chunk = format!("{:x}\r\n", zeros.len()).into_bytes();
    chunk.extend_from_slice(&zeros);
    chunk.extend_from_slice(b"\r\n");
    // Until the client hangs up (a write fails) or the test ends.
    while !stop.load(Ordering::SeqCst) {
        let sent = match how {
            Endless::HugeLength => stream.write_all(&zeros),
            Endless::Chunked => stream.write_all(&chunk),
            Endless::Trickle => {
                std::thread::sleep(Duration::from_millis(200));
                stream.write_all(b"x")
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

#[test]
fn answers_that_never_end_are_cut_within_the_memory_and_time_bounds() {
    for how in [Endless::HugeLength, Endless::Chunked, Endless::Trickle] {
        let dir = Dir::new();
        let server = Hostile::start(how);
        // Every channel type at the endless server (the paths differ, nothing checks them).
        let base = format!("http://127.0.0.1:{}", server.port);
        let mut alerts = String::from("alerts:\n");
        for (_, kind) in VENDORS {
            let key = if kind == "webhook" {
                "url"
            } else {
                "webhook_url_file"
            };
            let value = if kind == "webhook" {
                format!("{base}/hook")
            } else {
                secret_file(
                    &dir,
                    &format!("secrets/{kind}"),
                    &format!("{base}/{kind}/0123456789abcdef"),
                )
            };
            alerts.push_str(&format!("  - type: {kind}\n    {key}: {value}\n"));
        }
        dir.config(&format!("{CONFIG}{alerts}"));
        let run = bounded(&dir, "config.yaml", &["alert", "test"]);
        assert_eq!(run.code, 1, "{how:?}: {run:?}");
        let lines: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(lines.len(), 5, "{how:?}: {run:?}");
        for (line, (_, kind)) in lines.iter().zip(VENDORS) {
            assert!(
                line.starts_with(&format!("{kind} ({kind}): ")),
                "{how:?}: {run:?}"
            );
            // What is shown is an excerpt, not the answer.
            assert!(line.len() < 2000, "{how:?}: {} bytes: {run:?}", line.len());
            match how {
                // The status was a success and a webhook takes any: delivered, with the
                // rest of the answer left unread.
                Endless::HugeLength | Endless::Chunked if kind == "webhook" => {
                    assert_eq!(*line, "webhook (webhook): delivered: HTTP 200", "{run:?}")
                }
                _ => assert!(line.contains(": NOT DELIVERED"), "{how:?}: {run:?}"),
            }
        }
    }
}

/// Bodies that echo each of a vendor's secrets in one spelling, as the vendor's error text
/// (plain text and inside the vendor's JSON shape).
fn echoes(vendor: Vendor, spelling: usize, json: bool) -> &'static str {
    let said: Vec<String> = tokens(vendor)
        .into_iter()
        .map(|t| spellings(t)[spelling].clone())
        .collect();
    let text = format!("hook {} not found", said.join(" and "));
    // The spelling goes into JSON as it is, so that `\u00XX` stays an escape.
    let body = match (vendor, json) {
        (_, false) | (Vendor::Slack | Vendor::Webhook, true) => text,
        (Vendor::Feishu, true) => format!(r#"{{"code":19001,"msg":"{text}","data":{{}}}}"#),
        (_, true) => format!(r#"{{"errcode":93000,"errmsg":"{text}"}}"#),
    };
    leak(body)
}

#[test]
fn a_token_echoed_in_any_spelling_is_redacted_in_output_and_logs() {
    for spelling in 0..spellings("x").len() {
        for (status, json) in [(200, true), (400, false), (400, true), (200, false)] {
            let dir = Dir::new();
            let sinks: Vec<Sink> = VENDORS
                .iter()
                .map(|(vendor, _)| {
                    Sink::start(
                        *vendor,
                        None,
                        Behaviour::Answer {
                            status,
                            location: None,
                            content_type: "text/plain",
                            body: echoes(*vendor, spelling, json),
                        },
                    )
                })
                .collect();
            configure(&dir, &sinks);
            for logs in [&["-vv"][..], &["-vv", "--log-format", "json"][..]] {
                let mut args = logs.to_vec();
                args.extend(["alert", "test"]);
                let run = bounded(&dir, "config.yaml", &args);
                assert_eq!(run.stdout.lines().count(), 5, "{run:?}");
                assert!(
                    run.stdout.contains("<redacted>"),
                    "{spelling} {status} {json}: {run:?}"
                );
                assert_no_token(&run);
            }
        }
    }
}

#[test]
fn newlines_in_an_answer_cannot_forge_a_line_of_output_or_logs() {
    let forged = "slack (slack): delivered: HTTP 200";
    for body in [
        leak(format!("x\n{forged}")),
        leak(format!("x\r\n{forged}\r\n")),
        leak(format!("x\r{forged}")),
        leak(format!("x\u{2028}{forged}")),
        leak(format!(r#"{{"errcode":1,"errmsg":"x\n{forged}"}}"#)),
        leak(format!(r#"{{"code":1,"msg":"x\r\n{forged}"}}"#)),
        leak(format!(r#"{{"errcode":1,"errmsg":"x\u000a{forged}"}}"#)),
    ] {
        for status in [200, 400] {
            let dir = Dir::new();
            let sinks = sinks(Behaviour::Answer {
                status,
                location: None,
                content_type: "text/plain",
                body,
            });
            configure(&dir, &sinks);
            for logs in [&["-vv"][..], &["-vv", "--log-format", "json"][..]] {
                let mut args = logs.to_vec();
                args.extend(["alert", "test"]);
                let run = bounded(&dir, "config.yaml", &args);
                let lines: Vec<&str> = run.stdout.lines().collect();
                assert_eq!(lines.len(), 5, "{body:?} {status}: {run:?}");
                for (line, (_, kind)) in lines.iter().zip(VENDORS) {
                    assert!(
                        line.starts_with(&format!("{kind} ({kind}): ")),
                        "{body:?} {status}: {run:?}"
                    );
                }
                for text in [&run.stdout, &run.stderr] {
                    for line in text.split(['\n', '\r', '\u{2028}', '\u{2029}', '\u{85}']) {
                        assert!(
                            !line.trim_start().starts_with(forged),
                            "{body:?} {status}: a forged line: {run:?}"
                        );
                    }
                }
                if logs.len() > 1 {
                    for line in run.stderr.lines() {
                        assert!(
                            serde_json::from_str::<serde_json::Value>(line).is_ok(),
                            "{body:?} {status}: not one JSON record: {line:?}"
                        );
                    }
                }
            }
        }
    }
}
