//! A fake of the Cloudflare API v4 (feature `fake`), written from certkeeper's
//! `docs/PROVIDER-APIS.md` rather than from this crate's client, for the provider's tests and
//! the application's end-to-end tests.
//!
//! It serves `/client/v4` on a loopback port ([`FakeCloudflare::url`] is the `api_base` to
//! configure): `GET /zones?name=`, `GET /zones/{id}`, `GET|POST /zones/{id}/dns_records`,
//! `GET|DELETE /zones/{id}/dns_records/{record id}`, every answer in Cloudflare's envelope.
//! It checks the bearer token ([`TOKEN`]) and answers like Cloudflare:
//!
//! | case | status | code: message |
//! |---|---|---|
//! | no or malformed `Authorization` | 400 | 6003: Invalid request headers (6111 in the chain) |
//! | wrong token | 403 | 9109: Invalid access token |
//! | `GET /zones` without Zone:Read ([`Options::zone_read`]) | 403 | 9109: Unauthorized to access requested resource |
//! | malformed / unknown zone id | 400 / 404 | 7003: Could not route to ..., perhaps your object identifier is invalid? |
//! | unknown record | 404 | 81044: Record does not exist. |
//! | same type, name and content again | 400 | 81058: An identical record already exists. |
//! | TTL other than 1 or 60..=86400 | 400 | 9021: Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic. |
//! | body not JSON | 400 | 9207: Request body is invalid. |
//! | unknown path / method | 400 / 405 | 7000: No route for that URI / 7001: Method ... not available for that URI |
//!
//! A record name outside the zone gets the zone appended, as Cloudflare does with relative
//! names (`www` in `example.com` is `www.example.com`); names are stored lower-case, without
//! the trailing dot.
//!
//! [`FakeCloudflare::fail_next`] makes the next requests fail, alternately 429 (`Retry-After:
//! 1`, 971 "Please wait and consider throttling your request speed") and 500 (code 10002 is
//! *assumed*: Cloudflare documents none). [`Options::latency`] delays every answer.
//! With [`Options::challtestsrv`], TXT records are mirrored to pebble-challtestsrv's
//! management API, so that the ACME server sees them in DNS.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use certkeeper_dns::testkit::conformance::FakeZone;
use certkeeper_dns::testkit::http::{Request, Response, Server};
use serde_json::{Value, json};

/// The token the fake accepts.
pub const TOKEN: &str = "fake-cloudflare-token-0123456789abcdefgh";

/// How a fake behaves.
#[derive(Clone, Debug)]
pub struct Options {
    /// The zones served (`example.com`, `test`).
    pub zones: Vec<String>,
    /// Whether [`TOKEN`] has Zone:Read: without it `GET /zones` answers 403 9109, while the
    /// records of every zone can still be edited (a token scoped to Zone:DNS:Edit).
    pub zone_read: bool,
    /// The base URL of pebble-challtestsrv's management API (`http://127.0.0.1:8055`), to
    /// mirror TXT records to.
    pub challtestsrv: Option<String>,
    /// A delay before every answer.
    pub latency: Duration,
    /// Answers no real Cloudflare gives, for tests of the client's bounds.
    pub hostile: Option<Hostile>,
}

/// Hostile answers ([`Options::hostile`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hostile {
    /// `GET /zones` lists `count` made-up zones before the real ones.
    HugeZones {
        /// Made-up zones listed.
        count: usize,
    },
    /// `POST dns_records` answers 81058 (an identical record exists), and `GET dns_records`
    /// answers `per_page` made-up records on every page, whatever was asked, claiming
    /// `total_pages` pages.
    HugeRecordPages {
        /// Records on each page.
        per_page: usize,
        /// The `total_pages` claimed.
        total_pages: u64,
    },
    /// Every request is answered `status` with `Location: location` and an HTML body
    /// repeating the location.
    Redirect {
        /// A 3xx.
        status: u16,
        /// The `Location`.
        location: String,
    },
}

impl Default for Options {
    /// Zones `example.com` and `test`, Zone:Read granted, no mirroring, no latency.
    fn default() -> Self {
        Options {
            zones: vec!["example.com".into(), "test".into()],
            zone_read: true,
            challtestsrv: None,
            latency: Duration::ZERO,
            hostile: None,
        }
    }
}

/// A record the fake holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeRecord {
    /// The record id.
    pub id: String,
    /// The zone's id.
    pub zone_id: String,
    /// `TXT`, ...
    pub kind: String,
    /// Lower-case, without the trailing dot.
    pub name: String,
    /// As sent.
    pub content: String,
    /// Seconds; 1 is automatic.
    pub ttl: u32,
}

/// A request the fake answered.
#[derive(Clone, Debug)]
pub struct LoggedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query parameters, decoded.
    pub query: Vec<(String, String)>,
    /// The `Authorization` header as received.
    pub authorization: Option<String>,
    /// The JSON body, if any.
    pub body: Option<Value>,
    /// The status answered.
    pub status: u16,
}

/// A running fake Cloudflare API; stopped when dropped.
pub struct FakeCloudflare {
    server: Server,
    inner: Arc<Inner>,
}

impl FakeCloudflare {
    /// Serves `zones` with the default [`Options`] otherwise.
    pub fn start(zones: &[&str]) -> FakeCloudflare {
        FakeCloudflare::start_with(Options {
            zones: zones.iter().map(|z| z.to_string()).collect(),
            ..Options::default()
        })
    }

    /// Serves as `options` say.
    pub fn start_with(options: Options) -> FakeCloudflare {
        let zones = options
            .zones
            .iter()
            .map(|name| {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                let id = format!(
                    "{:016x}{:016x}",
                    fnv(b"zone", name.as_bytes()),
                    fnv(b"id", name.as_bytes())
                );
                (name, id)
            })
            .collect();
        let inner = Arc::new(Inner {
            options,
            zones,
            state: Mutex::new(State::default()),
            junk: OnceLock::new(),
        });
        let handler = inner.clone();
        let server = Server::start(move |req| handler.handle(req));
        FakeCloudflare { server, inner }
    }

    /// The `api_base` to configure: `http://127.0.0.1:PORT/client/v4`.
    pub fn url(&self) -> String {
        format!("{}/client/v4", self.server.url())
    }

    /// The id of the zone named `name`, if served.
    pub fn zone_id(&self, name: &str) -> Option<String> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.inner
            .zones
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, id)| id.clone())
    }

    /// All records, oldest first.
    pub fn records(&self) -> Vec<FakeRecord> {
        self.inner.lock().records.clone()
    }

    /// The requests answered so far, oldest first.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.inner.lock().log.clone()
    }

    /// Makes `percent` of the requests from now on fail (spread evenly), as [`fail_next`]
    /// does.
    ///
    /// [`fail_next`]: Self::fail_next
    pub fn fail_percent(&self, percent: u64) {
        self.inner.lock().fail_percent = percent.min(100);
    }

    /// Makes the next `n` requests fail, alternately 429 and 500.
    pub fn fail_next(&self, n: usize) {
        self.inner.lock().fail_next = n;
    }
}

impl FakeZone for FakeCloudflare {
    fn values(&self, fqdn: &str) -> Vec<String> {
        let name = fqdn.trim_end_matches('.').to_ascii_lowercase();
        self.inner
            .lock()
            .records
            .iter()
            .filter(|r| r.kind == "TXT" && r.name == name)
            .map(|r| r.content.clone())
            .collect()
    }

    fn add_foreign(&self, fqdn: &str, value: &str) {
        let name = fqdn.trim_end_matches('.').to_ascii_lowercase();
        let Some((_, zone_id)) = self.inner.zone_of(&name) else {
            panic!("the fake serves no zone containing {fqdn}");
        };
        let zone_id = zone_id.to_owned();
        let mut state = self.inner.lock();
        if let Err(e) = self.inner.mirror_add(&name, value) {
            panic!("{e}");
        }
        state.insert(&zone_id, "TXT", &name, value, 1);
    }

    fn fail_next(&self, n: usize) {
        FakeCloudflare::fail_next(self, n);
    }
}

struct Inner {
    options: Options,
    /// (name, id)
    zones: Vec<(String, String)>,
    state: Mutex<State>,
    /// The made-up items of a [`Hostile`] listing, as JSON (`{..},{..}`), made once.
    junk: OnceLock<String>,
}

#[derive(Default)]
struct State {
    records: Vec<FakeRecord>,
    next_record: u64,
    fail_next: usize,
    failures: u64,
    /// Percentage of requests that fail, spread evenly.
    fail_percent: u64,
    requests_seen: u64,
    log: Vec<LoggedRequest>,
}

impl State {
    fn insert(
        &mut self,
        zone_id: &str,
        kind: &str,
        name: &str,
        content: &str,
        ttl: u32,
    ) -> FakeRecord {
        self.next_record += 1;
        let n = self.next_record;
        let record = FakeRecord {
            id: format!("{:016x}{n:016x}", fnv(b"record", &n.to_be_bytes())),
            zone_id: zone_id.to_owned(),
            kind: kind.to_owned(),
            name: name.to_owned(),
            content: content.to_owned(),
            ttl,
        };
        self.records.push(record.clone());
        record
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread leaves consistent records behind; keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The served zone containing `name` (the longest match).
    fn zone_of(&self, name: &str) -> Option<(&str, &str)> {
        self.zones
            .iter()
            .filter(|(zone, _)| name == zone || name.ends_with(&format!(".{zone}")))
            .max_by_key(|(zone, _)| zone.len())
            .map(|(n, id)| (n.as_str(), id.as_str()))
    }

    fn handle(&self, req: &Request) -> Response {
        if !self.options.latency.is_zero() {
            std::thread::sleep(self.options.latency);
        }
        // One request at a time: the records and challtestsrv's view change together.
        let mut state = self.lock();
        let response = self.route(&mut state, req);
        state.log.push(LoggedRequest {
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            authorization: req.header("authorization").map(str::to_owned),
            body: req.json(),
            status: response.status,
        });
        response
    }

    fn route(&self, state: &mut State, req: &Request) -> Response {
        if let Some(answer) = self.hostile(req) {
            return answer;
        }
        let n = state.requests_seen;
        state.requests_seen += 1;
        let by_ratio = (n + 1) * state.fail_percent / 100 != n * state.fail_percent / 100;
        if state.fail_next > 0 || by_ratio {
            state.fail_next = state.fail_next.saturating_sub(1);
            state.failures += 1;
            return if state.failures % 2 == 1 {
                failure(
                    429,
                    971,
                    "Please wait and consider throttling your request speed",
                )
                .with_header("Retry-After", "1")
            } else {
                failure(500, 10002, "An unknown error has occurred")
            };
        }
        let Some(rest) = req.path.strip_prefix("/client/v4/") else {
            return no_route();
        };
        if let Some(refused) = check_token(req) {
            return refused;
        }
        let segments: Vec<&str> = rest.split('/').collect();
        let method = req.method.as_str();
        match (method, segments.as_slice()) {
            ("GET", ["zones"]) => self.list_zones(req),
            ("GET", ["zones", zone]) => self.with_zone(zone, req, |_, name, id| {
                if !self.options.zone_read {
                    return unauthorized();
                }
                success(&zone_json(name, id), None)
            }),
            ("GET", ["zones", zone, "dns_records"]) => {
                self.with_zone(zone, req, |_, name, id| list_records(state, name, id, req))
            }
            ("POST", ["zones", zone, "dns_records"]) => {
                self.with_zone(zone, req, |this, name, id| {
                    this.create(state, name, id, req)
                })
            }
            ("GET", ["zones", zone, "dns_records", record]) => {
                self.with_zone(zone, req, |_, name, id| {
                    match state
                        .records
                        .iter()
                        .find(|r| r.zone_id == id && r.id == *record)
                    {
                        Some(r) => success(&record_json(r, name), None),
                        None => record_not_found(),
                    }
                })
            }
            ("DELETE", ["zones", zone, "dns_records", record]) => {
                self.with_zone(zone, req, |this, _, id| this.delete(state, id, record))
            }
            (_, ["zones"] | ["zones", _] | ["zones", _, "dns_records"])
            | (_, ["zones", _, "dns_records", _]) => failure(
                405,
                7001,
                &format!("Method {method} not available for that URI"),
            ),
            _ => no_route(),
        }
    }

    /// The answer of a [`Hostile`] mode to `req`, if it has one.
    fn hostile(&self, req: &Request) -> Option<Response> {
        let segments: Vec<&str> = req.path.split('/').skip(3).collect();
        match (
            &self.options.hostile,
            req.method.as_str(),
            segments.as_slice(),
        ) {
            (None, ..) => None,
            (Some(Hostile::Redirect { status, location }), ..) => Some(Response {
                status: *status,
                headers: vec![
                    ("Location".into(), location.clone()),
                    ("Content-Type".into(), "text/html".into()),
                ],
                body: format!("<a href=\"{location}\">moved</a>").into_bytes(),
            }),
            (Some(Hostile::HugeZones { count }), "GET", ["zones"]) => {
                let junk = self.junk.get_or_init(|| {
                    junk_items(*count, |i| {
                        zone_json(&format!("junk{i}.example"), &"0".repeat(32))
                    })
                });
                let real: Vec<String> = self
                    .zones
                    .iter()
                    .map(|(n, id)| zone_json(n, id).to_string())
                    .collect();
                let body = format!(
                    "{{\"success\":true,\"errors\":[],\"messages\":[],\"result\":[{junk}{}{}],\
                     \"result_info\":{{\"page\":1,\"per_page\":20,\"total_pages\":1}}}}",
                    if real.is_empty() { "" } else { "," },
                    real.join(",")
                );
                Some(raw_json(body))
            }
            (Some(Hostile::HugeRecordPages { .. }), "POST", ["zones", _, "dns_records"]) => {
                Some(failure(400, 81058, "An identical record already exists."))
            }
            (
                Some(Hostile::HugeRecordPages {
                    per_page,
                    total_pages,
                }),
                "GET",
                ["zones", zone_id, "dns_records"],
            ) => {
                let junk = self.junk.get_or_init(|| {
                    junk_items(*per_page, |i| {
                        record_json(
                            &FakeRecord {
                                id: format!("{i:032x}"),
                                zone_id: (*zone_id).to_owned(),
                                kind: "TXT".into(),
                                name: format!("junk{i}.example.com"),
                                content: "junk".into(),
                                ttl: 1,
                            },
                            "example.com",
                        )
                    })
                });
                let page = req.query_param("page").unwrap_or("1");
                let body = format!(
                    "{{\"success\":true,\"errors\":[],\"messages\":[],\"result\":[{junk}],\
                     \"result_info\":{{\"page\":{page},\"per_page\":{per_page},\
                     \"count\":{per_page},\"total_pages\":{total_pages}}}}}"
                );
                Some(raw_json(body))
            }
            _ => None,
        }
    }

    /// Runs `f` with the zone `id` names, or answers Cloudflare's routing error.
    fn with_zone(
        &self,
        id: &str,
        req: &Request,
        f: impl FnOnce(&Inner, &str, &str) -> Response,
    ) -> Response {
        let well_formed = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
        match self.zones.iter().find(|(_, zid)| zid == id) {
            Some((name, zid)) => f(self, name, zid),
            None => failure(
                if well_formed { 404 } else { 400 },
                7003,
                &format!(
                    "Could not route to {}, perhaps your object identifier is invalid?",
                    req.path.trim_start_matches("/client/v4")
                ),
            ),
        }
    }

    fn list_zones(&self, req: &Request) -> Response {
        if !self.options.zone_read {
            return unauthorized();
        }
        let name = req
            .query_param("name")
            .map(|n| n.trim_end_matches('.').to_ascii_lowercase());
        let zones: Vec<Value> = self
            .zones
            .iter()
            .filter(|(n, _)| name.as_ref().is_none_or(|want| want == n))
            .map(|(n, id)| zone_json(n, id))
            .collect();
        paged(req, zones, 20, 50)
    }

    fn create(&self, state: &mut State, zone: &str, zone_id: &str, req: &Request) -> Response {
        let Some(Value::Object(body)) = req.json() else {
            return failure(400, 9207, "Request body is invalid.");
        };
        let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
        let (Some(kind), Some(name), Some(content)) = (text("type"), text("name"), text("content"))
        else {
            return validation_error("type, name and content are required");
        };
        if content.is_empty() {
            return validation_error("content must not be empty");
        }
        let ttl = match body.get("ttl") {
            None => 1,
            Some(v) => match v.as_u64() {
                Some(t @ (1 | 60..=86400)) => t as u32,
                _ => {
                    return failure(
                        400,
                        9021,
                        "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic.",
                    );
                }
            },
        };
        let kind = kind.to_ascii_uppercase();
        let mut name = name.trim_end_matches('.').to_ascii_lowercase();
        if name == "@" || name.is_empty() {
            name = zone.to_owned();
        } else if name != zone && !name.ends_with(&format!(".{zone}")) {
            name = format!("{name}.{zone}");
        }
        if state.records.iter().any(|r| {
            r.zone_id == zone_id && r.kind == kind && r.name == name && r.content == content
        }) {
            return failure(400, 81058, "An identical record already exists.");
        }
        let mirrored = match kind.as_str() {
            "TXT" => self.mirror_add(&name, &content),
            _ => Ok(()),
        };
        if let Err(e) = mirrored {
            return failure(500, 10002, &e);
        }
        let record = state.insert(zone_id, &kind, &name, &content, ttl);
        success(&record_json(&record, zone), None)
    }

    fn delete(&self, state: &mut State, zone_id: &str, id: &str) -> Response {
        let Some(at) = state
            .records
            .iter()
            .position(|r| r.zone_id == zone_id && r.id == id)
        else {
            return record_not_found();
        };
        let gone = state.records.remove(at);
        if gone.kind == "TXT" {
            let rest: Vec<String> = state
                .records
                .iter()
                .filter(|r| r.kind == "TXT" && r.name == gone.name)
                .map(|r| r.content.clone())
                .collect();
            if let Err(e) = self.mirror_replace(&gone.name, &rest) {
                return failure(500, 10002, &e);
            }
        }
        success(&json!({ "id": gone.id }), None)
    }

    /// Adds one TXT value at challtestsrv.
    fn mirror_add(&self, name: &str, value: &str) -> Result<(), String> {
        let Some(base) = &self.options.challtestsrv else {
            return Ok(());
        };
        post_json(
            base,
            "/set-txt",
            &json!({ "host": format!("{name}."), "value": value }),
        )
    }

    /// Replaces the TXT values of `name` at challtestsrv: clear-txt removes them all, so the
    /// remaining ones are added again.
    fn mirror_replace(&self, name: &str, values: &[String]) -> Result<(), String> {
        let Some(base) = &self.options.challtestsrv else {
            return Ok(());
        };
        post_json(base, "/clear-txt", &json!({ "host": format!("{name}.") }))?;
        values.iter().try_for_each(|v| self.mirror_add(name, v))
    }
}

/// The auth check: `None` when the request carries [`TOKEN`].
fn check_token(req: &Request) -> Option<Response> {
    let token = req.header("authorization").and_then(|v| {
        let (scheme, token) = v.split_once(' ')?;
        let token_chars = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        (scheme.eq_ignore_ascii_case("bearer")
            && !token.is_empty()
            && token.bytes().all(token_chars))
        .then_some(token)
    });
    match token {
        None => Some(Response::json(
            400,
            &envelope_err(&[json!({
                "code": 6003,
                "message": "Invalid request headers",
                "error_chain": [{"code": 6111, "message": "Invalid format for Authorization header"}],
            })]),
        )),
        Some(TOKEN) => None,
        Some(_) => Some(failure(403, 9109, "Invalid access token")),
    }
}

fn list_records(state: &State, zone: &str, zone_id: &str, req: &Request) -> Response {
    let kind = req.query_param("type").map(str::to_ascii_uppercase);
    let name = req
        .query_param("name")
        .map(|n| n.trim_end_matches('.').to_ascii_lowercase());
    let content = req.query_param("content");
    let records: Vec<Value> = state
        .records
        .iter()
        .filter(|r| r.zone_id == zone_id)
        .filter(|r| kind.as_ref().is_none_or(|k| *k == r.kind))
        .filter(|r| name.as_ref().is_none_or(|n| *n == r.name))
        .filter(|r| content.is_none_or(|c| c == r.content))
        .map(|r| record_json(r, zone))
        .collect();
    paged(req, records, 100, 5000)
}

/// One page of `items` as `page` and `per_page` ask (defaults and bounds as Cloudflare's).
fn paged(
    req: &Request,
    items: Vec<Value>,
    default_per_page: usize,
    max_per_page: usize,
) -> Response {
    let number = |key: &str, default: usize| match req.query_param(key) {
        None => Some(default),
        Some(v) => v.parse::<usize>().ok().filter(|n| *n > 0),
    };
    let (Some(page), Some(per_page)) = (number("page", 1), number("per_page", default_per_page))
    else {
        return validation_error("page and per_page must be positive integers");
    };
    let per_page = per_page.min(max_per_page);
    let total = items.len();
    let result: Vec<Value> = items
        .into_iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .collect();
    let info = json!({
        "page": page,
        "per_page": per_page,
        "count": result.len(),
        "total_count": total,
        "total_pages": total.div_ceil(per_page),
    });
    success(&Value::Array(result), Some(info))
}

fn zone_json(name: &str, id: &str) -> Value {
    json!({
        "id": id,
        "name": name,
        "status": "active",
        "paused": false,
        "type": "full",
        "name_servers": ["ada.ns.cloudflare.com", "bob.ns.cloudflare.com"],
    })
}

fn record_json(r: &FakeRecord, zone_name: &str) -> Value {
    let now = rfc3339(SystemTime::now());
    json!({
        "id": r.id,
        "zone_id": r.zone_id,
        "zone_name": zone_name,
        "name": r.name,
        "type": r.kind,
        "content": r.content,
        "proxiable": false,
        "proxied": false,
        "ttl": r.ttl,
        "settings": {},
        "meta": {},
        "comment": null,
        "tags": [],
        "created_on": now,
        "modified_on": now,
    })
}

/// `count` items made by `item`, as JSON joined with commas.
fn junk_items(count: usize, item: impl Fn(usize) -> Value) -> String {
    let mut out = String::new();
    for i in 0..count {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{}", item(i));
    }
    out
}

fn raw_json(body: String) -> Response {
    Response {
        status: 200,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: body.into_bytes(),
    }
}

fn success(result: &Value, result_info: Option<Value>) -> Response {
    let mut body = json!({ "success": true, "errors": [], "messages": [], "result": result });
    if let Some(info) = result_info {
        body["result_info"] = info;
    }
    Response::json(200, &body)
}

fn envelope_err(errors: &[Value]) -> Value {
    json!({ "success": false, "errors": errors, "messages": [], "result": null })
}

fn failure(status: u16, code: i64, message: &str) -> Response {
    Response::json(
        status,
        &envelope_err(&[json!({ "code": code, "message": message })]),
    )
}

fn validation_error(detail: &str) -> Response {
    Response::json(
        400,
        &envelope_err(&[json!({
            "code": 1004,
            "message": "DNS Validation Error",
            "error_chain": [{"code": 1004, "message": detail}],
        })]),
    )
}

fn unauthorized() -> Response {
    failure(403, 9109, "Unauthorized to access requested resource")
}

fn record_not_found() -> Response {
    failure(404, 81044, "Record does not exist.")
}

fn no_route() -> Response {
    failure(400, 7000, "No route for that URI")
}

/// POSTs JSON to `base` + `path` over a plain TCP connection (challtestsrv speaks HTTP/1.1
/// on loopback); fails unless the answer is 2xx.
fn post_json(base: &str, path: &str, body: &Value) -> Result<(), String> {
    let fail = |what: String| format!("mirroring to challtestsrv {base}{path} failed: {what}");
    let rest = base
        .strip_prefix("http://")
        .ok_or_else(|| fail("only http:// is supported".into()))?;
    let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| fail(e.to_string()))?
        .next()
        .ok_or_else(|| fail("no address".into()))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| fail(e.to_string()))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let body = body.to_string();
    let prefix = prefix.trim_end_matches('/');
    let path = if prefix.is_empty() {
        path.to_owned()
    } else {
        format!("/{prefix}{path}")
    };
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|e| fail(e.to_string()))?;
    let answer = String::from_utf8_lossy(&answer);
    let status_line = answer.lines().next().unwrap_or("");
    match status_line.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') => Ok(()),
        _ => Err(fail(format!("answered {status_line:?}"))),
    }
}

/// FNV-1a over `salt` and `data`: stable ids that look like Cloudflare's.
fn fnv(salt: &[u8], data: &[u8]) -> u64 {
    salt.iter().chain(data).fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `2024-01-02T03:04:05.000000Z`.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = String::new();
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_251_200 + 3661);
        assert_eq!(rfc3339(t), "2024-03-01T01:01:01.000000Z");
    }
}
