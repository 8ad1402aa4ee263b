//! Fake alert receivers ("sinks"): one small HTTP/1.1 server per vendor on a free loopback
//! port, which checks what the real service checks, answers in the vendor's shapes, and
//! records every request, so that the alert tests (DESIGN.md "Events") see what a user
//! would see.
//!
//! Where each rule comes from:
//!
//! - **Slack**: the incoming-webhooks documentation ("Handling errors": `invalid_payload`,
//!   `no_text`, `invalid_blocks`, `no_service` with HTTP 404; success is `200 ok` in
//!   text/plain). Real Slack also accepts a form-encoded `payload=` and a message with only
//!   `blocks`; this sink is stricter and wants JSON with a non-empty `text` (the fallback
//!   text certkeeper always sends).
//! - **Webhook**: certkeeper's own generic webhook (DESIGN.md "Events"): the JSON body with
//!   its eight keys, `X-Certkeeper-Timestamp` (unix seconds) and, with a secret,
//!   `X-Certkeeper-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>`; a receiver
//!   refuses a timestamp more than 300 s from its clock (replay window).
//! - **WeCom** (企业微信 group robot, "群机器人配置说明"): `POST /cgi-bin/webhook/send?key=KEY`,
//!   always HTTP 200 with `{"errcode","errmsg"}`; `msgtype` `text` (`text.content`, at most
//!   2048 bytes) or `markdown` (`markdown.content`, at most 4096 bytes).
//! - **DingTalk** (钉钉 custom robot, "自定义机器人安全设置" → "加签"): `POST
//!   /robot/send?access_token=TOKEN&timestamp=MS&sign=SIGN`, where SIGN is the URL-encoded
//!   base64 of HMAC-SHA256(key = secret, message = `"{timestamp}\n{secret}"`) and the
//!   timestamp (milliseconds) must be within one hour of the server's clock.
//! - **Feishu / Lark** (飞书 custom bot, "自定义机器人使用指南" → "签名校验"): `POST
//!   /open-apis/bot/v2/hook/HOOK_ID`, `timestamp` (seconds) and `sign` in the JSON body,
//!   where sign is the base64 of HMAC-SHA256(key = `"{timestamp}\n{secret}"`, message =
//!   empty), the timestamp within one hour; answers `{"code","msg","data"}`.
//!
//! Error codes and messages are as those documents and common client libraries (and the
//! issue reports quoting real answers) give them: WeCom 93000 / 40035 / 40008 / 44004 /
//! 40058, DingTalk 300001 / 310000 / 40035, Feishu 19001 / 19021 / 19002 / 9499.
//!
//! Every sink refuses a method other than POST with `405`, answers with `Connection: close`
//! (through the provider testkit's HTTP server, a thread per connection), and stops when
//! dropped.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use certkeeper_dns::testkit::http;

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

/// The Slack token in [`Sink::url`] (`/services/T0000/B0000/<token>`).
pub const SLACK_TOKEN: &str = "XXXXXXXXXXXXXXXXXXXXXXXX";
/// The path of the generic webhook sink.
pub const WEBHOOK_PATH: &str = "/hooks/certs";
/// The WeCom robot key in [`Sink::url`].
pub const WECOM_KEY: &str = "693a91f6-7b1c-4bc4-97a0-0ec2a9fa5aaa";
/// The DingTalk `access_token` in [`Sink::url`].
pub const DINGTALK_TOKEN: &str = "3a1f5e9c7b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f2a4c6e8b0d1f3a";
/// The Feishu hook id in [`Sink::url`].
pub const FEISHU_HOOK: &str = "2f8c1d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f";

/// Which service a sink imitates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    Slack,
    Webhook,
    WeCom,
    DingTalk,
    Feishu,
}

/// How a sink answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Checks and answers like the vendor.
    Normal,
    /// Reads each request and never answers (holds the sockets until the sink is dropped).
    Hang,
    /// Answers `status` with an empty body to the first `count` requests, then as `Normal`.
    FailFirst { count: usize, status: u16 },
    /// Answers every request with `status`, `body` (as `content_type`) and, when given, a
    /// `Location` header: a hostile or broken vendor (a redirect, an echo of the token).
    Answer {
        status: u16,
        location: Option<&'static str>,
        content_type: &'static str,
        body: &'static str,
    },
}

/// One request a sink received, with what it answered.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    /// The request target as sent (path and query, not decoded).
    pub target: String,
    /// The path, without the query (not decoded).
    pub path: String,
    /// Query parameters in order, percent-decoded (`+` is a space).
    pub query: Vec<(String, String)>,
    /// Headers in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body parsed as JSON, when it is JSON.
    pub json: Option<Value>,
    /// Whether the vendor would have delivered the message.
    pub accepted: bool,
    /// The HTTP status answered (0 when the sink never answered: `Behaviour::Hang`).
    pub status: u16,
    /// The body answered.
    pub answer: String,
}

impl Received {
    /// The first header with this name (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first query parameter with this name, decoded.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The answer parsed as JSON (WeCom, DingTalk and Feishu answer JSON).
    pub fn answer_json(&self) -> Option<Value> {
        serde_json::from_str(&self.answer).ok()
    }
}

struct Shared {
    received: Mutex<Vec<Received>>,
    changed: Condvar,
    stop: AtomicBool,
    seen: AtomicUsize,
}

/// A running fake receiver; stopped when dropped.
pub struct Sink {
    vendor: Vendor,
    base: String,
    shared: Arc<Shared>,
    server: Option<http::Server>,
}

impl Sink {
    /// Starts a sink on `127.0.0.1:<free port>`. `secret` turns on the vendor's signature
    /// check (ignored by Slack and WeCom, which have none).
    pub fn start(vendor: Vendor, secret: Option<&str>, behaviour: Behaviour) -> Sink {
        let shared = Arc::new(Shared {
            received: Mutex::default(),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            seen: AtomicUsize::new(0),
        });
        let (state, secret) = (Arc::clone(&shared), secret.map(str::to_owned));
        let server = http::Server::start(move |req| {
            answer(vendor, secret.as_deref(), behaviour, &state, req)
        });
        Sink {
            vendor,
            base: server.url(),
            shared,
            server: Some(server),
        }
    }

    /// The vendor this sink imitates.
    pub fn vendor(&self) -> Vendor {
        self.vendor
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        self.base.clone()
    }

    /// The webhook URL a user would configure (with the token/key/hook id the sink expects).
    /// For DingTalk, certkeeper appends `&timestamp=…&sign=…` in signed mode.
    pub fn url(&self) -> String {
        self.url_with(true)
    }

    /// The same URL with a wrong token/key/hook id (for the generic webhook: a wrong path).
    pub fn url_with_wrong_token(&self) -> String {
        self.url_with(false)
    }

    fn url_with(&self, right: bool) -> String {
        let base = self.base();
        match (self.vendor, right) {
            (Vendor::Slack, true) => format!("{base}/services/T0000/B0000/{SLACK_TOKEN}"),
            (Vendor::Slack, false) => {
                format!("{base}/services/T0000/B0000/YYYYYYYYYYYYYYYYYYYYYYYY")
            }
            (Vendor::Webhook, true) => format!("{base}{WEBHOOK_PATH}"),
            (Vendor::Webhook, false) => format!("{base}/hooks/wrong"),
            (Vendor::WeCom, true) => format!("{base}/cgi-bin/webhook/send?key={WECOM_KEY}"),
            (Vendor::WeCom, false) => {
                format!("{base}/cgi-bin/webhook/send?key=00000000-0000-0000-0000-000000000000")
            }
            (Vendor::DingTalk, true) => {
                format!("{base}/robot/send?access_token={DINGTALK_TOKEN}")
            }
            (Vendor::DingTalk, false) => {
                format!("{base}/robot/send?access_token={}", "0".repeat(64))
            }
            (Vendor::Feishu, true) => format!("{base}/open-apis/bot/v2/hook/{FEISHU_HOOK}"),
            (Vendor::Feishu, false) => {
                format!("{base}/open-apis/bot/v2/hook/00000000-0000-0000-0000-000000000000")
            }
        }
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.received.lock().expect("sink lock").clone()
    }

    /// The requests the vendor would have delivered, in order.
    pub fn accepted(&self) -> Vec<Received> {
        self.requests().into_iter().filter(|r| r.accepted).collect()
    }

    /// Waits up to `timeout` for at least `n` requests, then returns all of them (possibly
    /// fewer than `n`).
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        let mut received = self.shared.received.lock().expect("sink lock");
        while received.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            received = self
                .shared
                .changed
                .wait_timeout(received, left)
                .expect("sink lock")
                .0;
        }
        received.clone()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        // Releases the connections `Behaviour::Hang` holds, then stops the server.
        self.shared.stop.store(true, Ordering::SeqCst);
        drop(self.server.take());
    }
}

/// One request: check, record, answer (or, with `Behaviour::Hang`, hold the connection
/// until the sink is dropped).
fn answer(
    vendor: Vendor,
    secret: Option<&str>,
    behaviour: Behaviour,
    shared: &Shared,
    req: &http::Request,
) -> http::Response {
    let request = Request {
        method: req.method.clone(),
        target: req.target.clone(),
        headers: req.headers.clone(),
        body: req.body.clone(),
    };
    let n = shared.seen.fetch_add(1, Ordering::SeqCst);
    let reply = match behaviour {
        Behaviour::Hang => None,
        Behaviour::FailFirst { count, status } if n < count => Some(Reply::empty(status)),
        Behaviour::Answer {
            status,
            location,
            content_type,
            body,
        } => Some(Reply {
            status,
            content_type,
            body: body.to_owned(),
            accepted: false,
            location,
        }),
        _ => Some(check(vendor, secret, &request)),
    };
    // Recorded before answering, so that a client that has its answer finds it.
    record(shared, &request, reply.as_ref());
    match reply {
        Some(reply) => reply.response(),
        None => {
            while !shared.stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            Reply::empty(503).response()
        }
    }
}

/// A URL where nothing listens (a free port, closed): a sink that is down.
pub fn down_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    drop(listener);
    format!("http://{addr}/hooks/down")
}

/// DingTalk's `sign`: base64 of HMAC-SHA256(key = secret, message = `"{ts}\n{secret}"`),
/// before URL-encoding.
pub fn dingtalk_sign(secret: &str, timestamp_ms: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, format!("{timestamp_ms}\n{secret}").as_bytes());
    BASE64.encode(tag.as_ref())
}

/// Feishu's `sign`: base64 of HMAC-SHA256(key = `"{ts}\n{secret}"`, message = empty).
pub fn feishu_sign(secret: &str, timestamp_s: &str) -> String {
    let key = hmac::Key::new(
        hmac::HMAC_SHA256,
        format!("{timestamp_s}\n{secret}").as_bytes(),
    );
    BASE64.encode(hmac::sign(&key, b"").as_ref())
}

/// The generic webhook's `X-Certkeeper-Signature` value for a body.
pub fn webhook_signature(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    format!("sha256={}", hex::encode(hmac::sign(&key, body).as_ref()))
}

pub use certkeeper_dns::testkit::http::percent_decode;

fn now_secs() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    d.as_secs() as i64
}

fn now_millis() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    d.as_millis() as i64
}

/// A parsed request.
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    fn query(&self) -> Vec<(String, String)> {
        let Some((_, query)) = self.target.split_once('?') else {
            return Vec::new();
        };
        query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect()
    }

    /// Whether `Content-Type` is `application/json` (parameters such as charset allowed).
    fn is_json(&self) -> bool {
        self.header("content-type").is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        })
    }

    /// The body as a JSON object, when the content type says JSON and it parses as one.
    fn json_object(&self) -> Option<serde_json::Map<String, Value>> {
        if !self.is_json() {
            return None;
        }
        match serde_json::from_slice(&self.body) {
            Ok(Value::Object(map)) => Some(map),
            _ => None,
        }
    }
}

/// What a sink answers.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
    accepted: bool,
    location: Option<&'static str>,
}

impl Reply {
    fn text(status: u16, body: &str) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.to_owned(),
            accepted: false,
            location: None,
        }
    }

    fn json(body: Value) -> Reply {
        Reply {
            status: 200,
            content_type: "application/json; charset=utf-8",
            body: body.to_string(),
            accepted: false,
            location: None,
        }
    }

    fn accept(self) -> Reply {
        Reply {
            accepted: true,
            ..self
        }
    }

    fn response(&self) -> http::Response {
        let mut headers = Vec::new();
        if !self.content_type.is_empty() {
            headers.push(("Content-Type".to_owned(), self.content_type.to_owned()));
        }
        if self.status == 405 {
            headers.push(("Allow".to_owned(), "POST".to_owned()));
        }
        if let Some(location) = self.location {
            headers.push(("Location".to_owned(), location.to_owned()));
        }
        http::Response {
            status: self.status,
            headers,
            body: self.body.clone().into_bytes(),
        }
    }

    fn empty(status: u16) -> Reply {
        Reply {
            status,
            content_type: "",
            body: String::new(),
            accepted: false,
            location: None,
        }
    }
}

fn record(shared: &Shared, request: &Request, reply: Option<&Reply>) {
    let received = Received {
        method: request.method.clone(),
        target: request.target.clone(),
        path: request.path().to_owned(),
        query: request.query(),
        headers: request.headers.clone(),
        body: request.body.clone(),
        json: serde_json::from_slice(&request.body).ok(),
        accepted: reply.is_some_and(|r| r.accepted),
        status: reply.map_or(0, |r| r.status),
        answer: reply.map(|r| r.body.clone()).unwrap_or_default(),
    };
    shared.received.lock().expect("sink lock").push(received);
    shared.changed.notify_all();
}

fn check(vendor: Vendor, secret: Option<&str>, request: &Request) -> Reply {
    if request.method != "POST" {
        return Reply::empty(405);
    }
    match vendor {
        Vendor::Slack => slack(request),
        Vendor::Webhook => webhook(request, secret),
        Vendor::WeCom => wecom(request),
        Vendor::DingTalk => dingtalk(request, secret),
        Vendor::Feishu => feishu(request, secret),
    }
}

fn slack(request: &Request) -> Reply {
    if request.path() != format!("/services/T0000/B0000/{SLACK_TOKEN}") {
        return Reply::text(404, "no_service");
    }
    let Some(body) = request.json_object() else {
        return Reply::text(400, "invalid_payload");
    };
    if body
        .get("text")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Reply::text(400, "no_text");
    }
    if let Some(blocks) = body.get("blocks") {
        let valid = blocks.as_array().is_some_and(|blocks| {
            blocks
                .iter()
                .all(|b| b.get("type").is_some_and(Value::is_string))
        });
        if !valid {
            return Reply::text(400, "invalid_blocks");
        }
    }
    Reply::text(200, "ok").accept()
}

/// The keys of certkeeper's webhook body (DESIGN.md "Events").
pub const WEBHOOK_KEYS: [&str; 8] = [
    "event",
    "certificate",
    "domains",
    "message",
    "not_after",
    "snapshot",
    "host",
    "timestamp",
];

fn webhook(request: &Request, secret: Option<&str>) -> Reply {
    if request.path() != WEBHOOK_PATH {
        return Reply::text(404, "not found");
    }
    let Some(timestamp) = request.header("x-certkeeper-timestamp") else {
        return Reply::text(400, "missing X-Certkeeper-Timestamp");
    };
    let Ok(timestamp) = timestamp.trim().parse::<i64>() else {
        return Reply::text(400, "X-Certkeeper-Timestamp is not unix seconds");
    };
    if let Some(secret) = secret {
        let Some(signature) = request.header("x-certkeeper-signature") else {
            return Reply::text(401, "missing X-Certkeeper-Signature");
        };
        if signature != webhook_signature(secret, &request.body) {
            return Reply::text(401, "signature mismatch");
        }
        if (now_secs() - timestamp).abs() > 300 {
            return Reply::text(401, "timestamp outside the 300 s window");
        }
    }
    let Some(body) = request.json_object() else {
        return Reply::text(
            400,
            "body is not a JSON object (Content-Type: application/json)",
        );
    };
    for key in WEBHOOK_KEYS {
        if !body.contains_key(key) {
            return Reply::text(400, &format!("missing key `{key}`"));
        }
    }
    for key in ["event", "certificate", "message", "host"] {
        if !body[key].is_string() {
            return Reply::text(400, &format!("`{key}` is not a string"));
        }
    }
    let domains_ok = body["domains"]
        .as_array()
        .is_some_and(|d| d.iter().all(Value::is_string));
    if !domains_ok {
        return Reply::text(400, "`domains` is not an array of strings");
    }
    for key in ["not_after", "snapshot"] {
        if !(body[key].is_string() || body[key].is_null()) {
            return Reply::text(400, &format!("`{key}` is not a string or null"));
        }
    }
    if !(body["timestamp"].is_string() || body["timestamp"].is_number()) {
        return Reply::text(400, "`timestamp` is not a string or number");
    }
    Reply::empty(204).accept()
}

fn wecom_error(errcode: u32, errmsg: &str) -> Reply {
    Reply::json(json!({ "errcode": errcode, "errmsg": errmsg }))
}

fn wecom(request: &Request) -> Reply {
    let key = request
        .query()
        .into_iter()
        .find(|(k, _)| k == "key")
        .map(|(_, v)| v);
    if request.path() != "/cgi-bin/webhook/send" || key.as_deref() != Some(WECOM_KEY) {
        return wecom_error(
            93000,
            "invalid webhook url, hint: [1700000000_0_sink], from ip: 127.0.0.1, \
             more info at https://open.work.weixin.qq.com/devtool/query?e=93000",
        );
    }
    let Some(body) = request.json_object() else {
        return wecom_error(40035, "invalid parameter");
    };
    let (field, max) = match body.get("msgtype").and_then(Value::as_str) {
        Some("markdown") => ("markdown", 4096),
        Some("text") => ("text", 2048),
        _ => return wecom_error(40008, "invalid message type"),
    };
    let content = body
        .get(field)
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if content.is_empty() {
        return wecom_error(44004, "empty content");
    }
    if content.len() > max {
        return wecom_error(40058, &format!("{field}.content exceed max length {max}"));
    }
    wecom_error(0, "ok").accept()
}

fn dingtalk(request: &Request, secret: Option<&str>) -> Reply {
    let query = request.query();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if request.path() != "/robot/send" || param("access_token") != Some(DINGTALK_TOKEN) {
        return wecom_error(300001, "token is not exist");
    }
    if let Some(secret) = secret {
        let (Some(timestamp), Some(sign)) = (param("timestamp"), param("sign")) else {
            return wecom_error(310000, "sign not match");
        };
        let Ok(ms) = timestamp.parse::<i64>() else {
            return wecom_error(310000, "invalid timestamp");
        };
        if (now_millis() - ms).abs() > 3_600_000 {
            return wecom_error(310000, "invalid timestamp");
        }
        if sign != dingtalk_sign(secret, timestamp) {
            return wecom_error(310000, "sign not match");
        }
    }
    let non_empty = |v: Option<&Value>| v.and_then(Value::as_str).is_some_and(|s| !s.is_empty());
    let valid = request.json_object().is_some_and(|body| {
        match body.get("msgtype").and_then(Value::as_str) {
            Some("markdown") => {
                let md = body.get("markdown");
                non_empty(md.and_then(|m| m.get("title")))
                    && non_empty(md.and_then(|m| m.get("text")))
            }
            Some("text") => non_empty(body.get("text").and_then(|t| t.get("content"))),
            _ => false,
        }
    });
    if !valid {
        return wecom_error(40035, "缺少参数 json");
    }
    wecom_error(0, "ok").accept()
}

fn feishu_answer(code: u32, msg: &str) -> Reply {
    Reply::json(json!({ "code": code, "msg": msg, "data": {} }))
}

fn feishu(request: &Request, secret: Option<&str>) -> Reply {
    if request.path() != format!("/open-apis/bot/v2/hook/{FEISHU_HOOK}") {
        return feishu_answer(
            19001,
            "param invalid: incoming webhook access token invalid",
        );
    }
    let Some(body) = request.json_object() else {
        return feishu_answer(9499, "Bad Request");
    };
    if let Some(secret) = secret {
        const SIGN_FAIL: &str =
            "sign match fail or timestamp is not within one hour from current time";
        let timestamp = match body.get("timestamp") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(n.to_string()),
            _ => None,
        };
        let sign = body.get("sign").and_then(Value::as_str);
        let (Some(timestamp), Some(sign)) = (timestamp, sign) else {
            return feishu_answer(19021, SIGN_FAIL);
        };
        let fresh = timestamp
            .parse::<i64>()
            .is_ok_and(|ts| (now_secs() - ts).abs() <= 3600);
        if !fresh || sign != feishu_sign(secret, &timestamp) {
            return feishu_answer(19021, SIGN_FAIL);
        }
    }
    let content = body.get("content");
    let valid = match body.get("msg_type").and_then(Value::as_str) {
        Some("text") => content
            .and_then(|c| c.get("text"))
            .is_some_and(Value::is_string),
        Some("post") => content
            .and_then(|c| c.get("post"))
            .and_then(Value::as_object)
            .is_some_and(|langs| !langs.is_empty() && langs.values().all(feishu_post_valid)),
        Some("interactive") => body.get("card").is_some_and(Value::is_object),
        _ => false,
    };
    if !valid {
        return feishu_answer(19002, "params error, msg_type need");
    }
    feishu_answer(0, "success").accept()
}

/// One language of a Feishu `post`: `title` and `content`, an array of paragraphs, each an
/// array of elements with a `tag`.
fn feishu_post_valid(lang: &Value) -> bool {
    let title = lang.get("title").is_some_and(Value::is_string);
    let content = lang
        .get("content")
        .and_then(Value::as_array)
        .is_some_and(|paragraphs| {
            paragraphs.iter().all(|p| {
                p.as_array().is_some_and(|elements| {
                    elements
                        .iter()
                        .all(|e| e.get("tag").is_some_and(Value::is_string))
                })
            })
        });
    title && content
}

/// Reads one request. `Ok(None)`: the peer closed or timed out before a whole request (or
/// it is the stop connection); `Err(reply)`: a malformed request, with the answer to send.
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use super::*;

    const SECRET: &str = "SECa1b2c3d4e5f6a7b8c9d0";

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    /// POSTs JSON (exact bytes) with extra headers; returns the status and the body.
    async fn post(url: &str, body: &[u8], headers: &[(&str, String)]) -> (u16, String) {
        let mut req = client()
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let rsp = req.send().await.unwrap();
        let status = rsp.status().as_u16();
        (status, rsp.text().await.unwrap())
    }

    async fn post_json(url: &str, body: &Value) -> (u16, Value) {
        let (status, text) = post(url, body.to_string().as_bytes(), &[]).await;
        (status, serde_json::from_str(&text).unwrap())
    }

    fn urlencode(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    // Slack

    #[tokio::test]
    async fn slack_accepts_text_and_blocks() {
        let sink = Sink::start(Vendor::Slack, None, Behaviour::Normal);
        let body = json!({
            "text": "renewed example.com",
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*renewed*"}}],
        });
        let (status, text) = post(&sink.url(), body.to_string().as_bytes(), &[]).await;
        assert_eq!((status, text.as_str()), (200, "ok"));
        let got = sink.accepted();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].json.as_ref(), Some(&body));
        assert_eq!(got[0].path, format!("/services/T0000/B0000/{SLACK_TOKEN}"));
    }

    #[tokio::test]
    async fn slack_errors() {
        let sink = Sink::start(Vendor::Slack, None, Behaviour::Normal);
        let url = sink.url();
        let cases: [(&str, &[u8], u16, &str); 6] = [
            (&url, b"not json", 400, "invalid_payload"),
            (&url, br#"{"text":""}"#, 400, "no_text"),
            (&url, br#"{"blocks":[{"type":"section"}]}"#, 400, "no_text"),
            (
                &url,
                br#"{"text":"x","blocks":[{"text":"no type"}]}"#,
                400,
                "invalid_blocks",
            ),
            (&url, br#"{"text":"x","blocks":{}}"#, 400, "invalid_blocks"),
            (
                &sink.url_with_wrong_token(),
                br#"{"text":"x"}"#,
                404,
                "no_service",
            ),
        ];
        for (url, body, want_status, want_body) in cases {
            assert_eq!(
                post(url, body, &[]).await,
                (want_status, want_body.to_owned())
            );
        }
        assert_eq!(sink.requests().len(), 6);
        assert!(sink.accepted().is_empty());
        assert!(sink.requests().iter().all(|r| !r.accepted));
    }

    // Webhook

    fn webhook_body() -> Vec<u8> {
        json!({
            "event": "renewed",
            "certificate": "www",
            "domains": ["example.com", "www.example.com"],
            "message": "renewed",
            "not_after": "2026-01-01T00:00:00Z",
            "snapshot": null,
            "host": "h1",
            "timestamp": "2025-10-03T00:00:00Z",
        })
        .to_string()
        .into_bytes()
    }

    #[tokio::test]
    async fn webhook_signed() {
        let sink = Sink::start(Vendor::Webhook, Some(SECRET), Behaviour::Normal);
        let body = webhook_body();
        let now = now_secs().to_string();
        let good = vec![
            ("x-certkeeper-timestamp", now.clone()),
            ("x-certkeeper-signature", webhook_signature(SECRET, &body)),
        ];
        assert_eq!(post(&sink.url(), &body, &good).await, (204, String::new()));

        // Wrong signature.
        let wrong = vec![
            ("x-certkeeper-timestamp", now.clone()),
            ("x-certkeeper-signature", webhook_signature("other", &body)),
        ];
        assert_eq!(post(&sink.url(), &body, &wrong).await.0, 401);

        // The HMAC is over the exact bytes: one byte changed is refused.
        let mut changed = body.clone();
        let at = changed.iter().position(|&b| b == b'h').unwrap();
        changed[at] = b'H';
        assert_eq!(post(&sink.url(), &changed, &good).await.0, 401);

        // No signature.
        let unsigned = vec![("x-certkeeper-timestamp", now.clone())];
        assert_eq!(post(&sink.url(), &body, &unsigned).await.0, 401);

        // Stale: two hours old, correctly signed.
        let stale = vec![
            ("x-certkeeper-timestamp", (now_secs() - 7200).to_string()),
            ("x-certkeeper-signature", webhook_signature(SECRET, &body)),
        ];
        assert_eq!(post(&sink.url(), &body, &stale).await.0, 401);

        // Wrong path.
        assert_eq!(
            post(&sink.url_with_wrong_token(), &body, &good).await.0,
            404
        );

        let requests = sink.requests();
        assert_eq!(requests.len(), 6);
        assert_eq!(sink.accepted().len(), 1);
        assert_eq!(
            requests[0].header("X-Certkeeper-Timestamp"),
            Some(now.as_str())
        );
        assert_eq!(requests[0].body, body);
    }

    #[tokio::test]
    async fn webhook_payload_checks() {
        let sink = Sink::start(Vendor::Webhook, None, Behaviour::Normal);
        let ts = vec![("x-certkeeper-timestamp", now_secs().to_string())];
        let body = webhook_body();
        assert_eq!(post(&sink.url(), &body, &ts).await.0, 204);
        // No timestamp header.
        assert_eq!(post(&sink.url(), &body, &[]).await.0, 400);
        // A key missing.
        let mut v: Value = serde_json::from_slice(&body).unwrap();
        v.as_object_mut().unwrap().remove("host");
        assert_eq!(
            post(&sink.url(), v.to_string().as_bytes(), &ts).await,
            (400, "missing key `host`".to_owned())
        );
        // `domains` not an array.
        let mut v: Value = serde_json::from_slice(&body).unwrap();
        v["domains"] = json!("example.com");
        assert_eq!(
            post(&sink.url(), v.to_string().as_bytes(), &ts).await.0,
            400
        );
        // Not JSON.
        assert_eq!(post(&sink.url(), b"event=renewed", &ts).await.0, 400);
        assert_eq!(sink.accepted().len(), 1);
    }

    // WeCom

    #[tokio::test]
    async fn wecom() {
        let sink = Sink::start(Vendor::WeCom, None, Behaviour::Normal);
        let md = |content: &str| json!({"msgtype": "markdown", "markdown": {"content": content}});
        let (status, ok) = post_json(&sink.url(), &md("**renewed** www")).await;
        assert_eq!((status, ok), (200, json!({"errcode": 0, "errmsg": "ok"})));

        let (status, wrong) = post_json(&sink.url_with_wrong_token(), &md("x")).await;
        assert_eq!((status, wrong["errcode"].clone()), (200, json!(93000)));
        assert!(
            wrong["errmsg"]
                .as_str()
                .unwrap()
                .starts_with("invalid webhook url, hint: [")
        );

        let code = |v: Value| v["errcode"].as_u64().unwrap();
        assert_eq!(code(post_json(&sink.url(), &md("")).await.1), 44004);
        let long = post_json(&sink.url(), &md(&"x".repeat(4097))).await.1;
        assert_eq!(
            long,
            json!({"errcode": 40058, "errmsg": "markdown.content exceed max length 4096"})
        );
        assert_eq!(
            code(post_json(&sink.url(), &md(&"x".repeat(4096))).await.1),
            0
        );
        let news = json!({"msgtype": "news", "news": {}});
        assert_eq!(code(post_json(&sink.url(), &news).await.1), 40008);
        let (_, text) = post(&sink.url(), b"{not json", &[]).await;
        assert_eq!(code(serde_json::from_str(&text).unwrap()), 40035);
        assert_eq!(sink.accepted().len(), 2);
        assert_eq!(sink.requests()[0].query_param("key"), Some(WECOM_KEY));
    }

    // DingTalk

    fn dingtalk_url(base: &str, ts: i64, secret: &str) -> String {
        let ts = ts.to_string();
        format!(
            "{base}&timestamp={ts}&sign={}",
            urlencode(&dingtalk_sign(secret, &ts))
        )
    }

    #[tokio::test]
    async fn dingtalk_signed() {
        let sink = Sink::start(Vendor::DingTalk, Some(SECRET), Behaviour::Normal);
        let md =
            json!({"msgtype": "markdown", "markdown": {"title": "renewed", "text": "### renewed"}});
        let code = |v: &Value| {
            (
                v["errcode"].as_u64().unwrap(),
                v["errmsg"].as_str().unwrap().to_owned(),
            )
        };

        let url = dingtalk_url(&sink.url(), now_millis(), SECRET);
        let (status, ok) = post_json(&url, &md).await;
        assert_eq!((status, ok), (200, json!({"errcode": 0, "errmsg": "ok"})));

        let wrong = dingtalk_url(&sink.url(), now_millis(), "SECother");
        assert_eq!(
            code(&post_json(&wrong, &md).await.1),
            (310000, "sign not match".into())
        );

        let unsigned = post_json(&sink.url(), &md).await.1;
        assert_eq!(code(&unsigned), (310000, "sign not match".into()));

        let stale = dingtalk_url(&sink.url(), now_millis() - 7_200_000, SECRET);
        assert_eq!(
            code(&post_json(&stale, &md).await.1),
            (310000, "invalid timestamp".into())
        );

        let bad_token = dingtalk_url(&sink.url_with_wrong_token(), now_millis(), SECRET);
        assert_eq!(
            code(&post_json(&bad_token, &md).await.1),
            (300001, "token is not exist".into())
        );

        let no_title = json!({"msgtype": "markdown", "markdown": {"text": "x"}});
        assert_eq!(
            code(&post_json(&url, &no_title).await.1),
            (40035, "缺少参数 json".into())
        );

        let text = json!({"msgtype": "text", "text": {"content": "renewed"}});
        assert_eq!(code(&post_json(&url, &text).await.1).0, 0);

        assert_eq!(sink.accepted().len(), 2);
        let first = &sink.requests()[0];
        assert_eq!(first.query_param("access_token"), Some(DINGTALK_TOKEN));
        // The sign arrives URL-encoded and is recorded decoded.
        let ts = first.query_param("timestamp").unwrap();
        assert_eq!(
            first.query_param("sign"),
            Some(dingtalk_sign(SECRET, ts).as_str())
        );
    }

    // Feishu

    fn feishu_text(secret: &str, ts: i64) -> Value {
        let ts = ts.to_string();
        json!({
            "timestamp": ts,
            "sign": feishu_sign(secret, &ts),
            "msg_type": "text",
            "content": {"text": "renewed www"},
        })
    }

    #[tokio::test]
    async fn feishu_signed() {
        let sink = Sink::start(Vendor::Feishu, Some(SECRET), Behaviour::Normal);
        let code = |v: &Value| v["code"].as_u64().unwrap();

        let (status, ok) = post_json(&sink.url(), &feishu_text(SECRET, now_secs())).await;
        assert_eq!(
            (status, ok),
            (200, json!({"code": 0, "msg": "success", "data": {}}))
        );

        let wrong = post_json(&sink.url(), &feishu_text("other", now_secs()))
            .await
            .1;
        assert_eq!(
            wrong,
            json!({"code": 19021, "msg": "sign match fail or timestamp is not within one hour from current time", "data": {}})
        );

        let stale = post_json(&sink.url(), &feishu_text(SECRET, now_secs() - 7200))
            .await
            .1;
        assert_eq!(code(&stale), 19021);

        let mut unsigned = feishu_text(SECRET, now_secs());
        unsigned.as_object_mut().unwrap().remove("sign");
        assert_eq!(code(&post_json(&sink.url(), &unsigned).await.1), 19021);

        let bad = post_json(
            &sink.url_with_wrong_token(),
            &feishu_text(SECRET, now_secs()),
        )
        .await
        .1;
        assert_eq!(
            (code(&bad), bad["msg"].as_str().unwrap()),
            (
                19001,
                "param invalid: incoming webhook access token invalid"
            )
        );

        // A numeric timestamp is fine too.
        let ts = now_secs();
        let post_msg = json!({
            "timestamp": ts,
            "sign": feishu_sign(SECRET, &ts.to_string()),
            "msg_type": "post",
            "content": {"post": {"zh_cn": {"title": "renewed", "content": [[{"tag": "text", "text": "www"}]]}}},
        });
        assert_eq!(code(&post_json(&sink.url(), &post_msg).await.1), 0);

        let mut bad_type = feishu_text(SECRET, now_secs());
        bad_type["msg_type"] = json!("markdown");
        let answer = post_json(&sink.url(), &bad_type).await.1;
        assert_eq!(
            (code(&answer), answer["msg"].as_str().unwrap()),
            (19002, "params error, msg_type need")
        );

        let mut card = feishu_text(SECRET, now_secs());
        card["msg_type"] = json!("interactive");
        card["card"] = json!({"elements": []});
        assert_eq!(code(&post_json(&sink.url(), &card).await.1), 0);

        assert_eq!(sink.accepted().len(), 3);
    }

    // Behaviours

    #[tokio::test]
    async fn fail_first_then_accepts() {
        let sink = Sink::start(
            Vendor::Slack,
            None,
            Behaviour::FailFirst {
                count: 1,
                status: 500,
            },
        );
        let body = br#"{"text":"hi"}"#;
        assert_eq!(post(&sink.url(), body, &[]).await, (500, String::new()));
        assert_eq!(post(&sink.url(), body, &[]).await, (200, "ok".to_owned()));
        let requests = sink.wait_for(2, Duration::from_secs(1));
        let statuses: Vec<_> = requests.iter().map(|r| (r.status, r.accepted)).collect();
        assert_eq!(statuses, [(500, false), (200, true)]);
    }

    #[tokio::test]
    async fn hang_never_answers() {
        let sink = Sink::start(Vendor::WeCom, None, Behaviour::Hang);
        let started = Instant::now();
        let err = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap()
            .post(sink.url())
            .json(&json!({"msgtype": "text", "text": {"content": "x"}}))
            .send()
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err}");
        assert!(started.elapsed() >= Duration::from_secs(1));
        let requests = sink.wait_for(1, Duration::from_secs(1));
        assert_eq!(requests.len(), 1);
        assert_eq!((requests[0].status, requests[0].accepted), (0, false));
        // Dropping the sink (with the held socket) returns promptly.
        let dropping = Instant::now();
        drop(sink);
        // Promptly, with a wide margin for a loaded machine.
        assert!(dropping.elapsed() < Duration::from_secs(20));
    }

    #[tokio::test]
    async fn down_url_refuses() {
        let err = client()
            .post(down_url())
            .body("{}")
            .send()
            .await
            .unwrap_err();
        assert!(err.is_connect(), "{err}");
    }

    #[test]
    fn raw_http_details() {
        let sink = Sink::start(Vendor::WeCom, None, Behaviour::Normal);
        let exchange = |request: &str| {
            let mut s = TcpStream::connect(sink.base().trim_start_matches("http://")).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).unwrap();
            answer
        };
        // GET is refused.
        let get = exchange("GET /cgi-bin/webhook/send HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(get.starts_with("HTTP/1.1 405 "), "{get}");
        assert!(get.contains("Connection: close\r\n"), "{get}");
        // A chunked body, and a percent-encoded key.
        let key = WECOM_KEY.replace('-', "%2D");
        let body = r#"{"msgtype":"text","text":{"content":"a b"}}"#;
        let (a, b) = body.split_at(10);
        let chunked = exchange(&format!(
            "POST /cgi-bin/webhook/send?key={key}&x=a+b%2Fc HTTP/1.1\r\nHost: x\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
             {:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        ));
        assert!(
            chunked.ends_with(r#"{"errcode":0,"errmsg":"ok"}"#),
            "{chunked}"
        );
        let requests = sink.requests();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[1].query_param("x"), Some("a b/c"));
        assert_eq!(requests[1].body, body.as_bytes());
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
