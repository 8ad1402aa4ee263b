//! A fake Alidns RPC API for tests (feature `fake`), written from the API's documented
//! behaviour rather than from this crate's client: it verifies Signature V1 with its own
//! implementation, the timestamp window (15 minutes) and nonce reuse, and answers the
//! vendor's error bodies `{RequestId, HostId, Code, Message, Recommend}`.
//!
//! - Keys: [`KEY_ID`]/[`KEY_SECRET`] may do everything; [`NO_PERMISSION_KEY_ID`]/
//!   [`NO_PERMISSION_KEY_SECRET`] is a valid key whose RAM user lacks DNS permission
//!   (`403 Forbidden.RAM`). Any other key id is `404 InvalidAccessKeyId.NotFound`.
//! - Checks, in order: `Format=JSON` (XML is out of scope: 400), `Version`,
//!   `SignatureMethod`/`SignatureVersion`, the key, the signature (`SignatureDoesNotMatch`),
//!   the timestamp (`InvalidTimeStamp.Expired`), the nonce (`SignatureNonceUsed`; a nonce is
//!   spent by every request that got this far, so retrying a refused request with the same
//!   nonce answers `SignatureNonceUsed`, as in acme.sh #3585), injected failures
//!   ([`FakeAlidns::fail_next`]), permission, then the action.
//! - Actions: `DescribeDomains`, `DescribeDomainRecords`, `AddDomainRecord` (TXT only; TTL
//!   below 600 is `QuotaExceeded.TTL` unless [`Options::ttl_quota`] is off; the same
//!   RR/Type/Value twice is `DomainRecordDuplicate`), `DeleteDomainRecord`.
//! - Records live in memory and can be mirrored into pebble-challtestsrv
//!   ([`Options::challtestsrv`]): `set-txt` on add; `clear-txt` and re-adding the other
//!   values of the name on delete.
//!
//! Codes and messages not pinned by the public docs (`UnsupportedFormat`,
//! `UnsupportedRecordType`, `InvalidPageSize`, the `Missing*` family) are the fake's own.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use certkeeper_dns::testkit::conformance::FakeZone;
use certkeeper_dns::testkit::http::{Request, Response, Server};
use serde_json::{Value, json};

/// The AccessKey ID the fake knows, with full DNS permission.
pub const KEY_ID: &str = "LTAI5tCertkeeperFakeKey01";
/// The secret of [`KEY_ID`].
pub const KEY_SECRET: &str = "FakeSecretOfCertkeeperTests0001";
/// A known AccessKey ID whose RAM user has no DNS permission.
pub const NO_PERMISSION_KEY_ID: &str = "LTAI5tCertkeeperNoDnsPerm";
/// The secret of [`NO_PERMISSION_KEY_ID`].
pub const NO_PERMISSION_KEY_SECRET: &str = "FakeSecretWithoutDnsPermission1";

/// The TTL quota of the free edition.
const MIN_TTL: u32 = 600;
/// How far a request's timestamp may be from the fake's clock.
const MAX_SKEW_SECS: i64 = 15 * 60;

/// How the fake behaves.
#[derive(Clone, Debug)]
pub struct Options {
    /// The account's registered domains.
    pub domains: Vec<String>,
    /// Base URL of a pebble-challtestsrv management API (`http://127.0.0.1:8055`) to mirror
    /// TXT records into.
    pub challtestsrv: Option<String>,
    /// Refuse TTLs below 600 with `QuotaExceeded.TTL` (the free edition). Default on.
    pub ttl_quota: bool,
    /// Wait this long before answering each request.
    pub latency: Option<Duration>,
    /// The fake's clock runs this many seconds ahead of the system's (negative: behind).
    pub clock_skew_secs: i64,
    /// Answers no real Alidns gives, for tests of the client's bounds.
    pub hostile: Option<Hostile>,
}

/// Hostile answers ([`Options::hostile`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hostile {
    /// `DescribeDomains` answers `per_page` made-up domains on every page, whatever was
    /// asked, claiming `total` domains in the account.
    HugeDomainPages {
        /// Domains on each page.
        per_page: usize,
        /// The `TotalCount` claimed.
        total: u64,
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
    fn default() -> Self {
        Options {
            domains: vec!["example.com".to_owned(), "example.co.uk".to_owned()],
            challtestsrv: None,
            ttl_quota: true,
            latency: None,
            clock_skew_secs: 0,
            hostile: None,
        }
    }
}

/// A record held by the fake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeRecord {
    /// `RecordId`.
    pub id: String,
    /// The registered domain.
    pub domain: String,
    /// The host record relative to the domain (`@` for the apex), lower-case.
    pub rr: String,
    /// `TXT`.
    pub kind: String,
    /// The value.
    pub value: String,
    /// The TTL.
    pub ttl: u32,
}

impl FakeRecord {
    /// The record's name with the trailing dot.
    pub fn fqdn(&self) -> String {
        record_name(&self.rr, &self.domain)
    }
}

/// One request the fake received, and what it answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// `GET` or `POST`.
    pub method: String,
    /// `Action`, if given.
    pub action: Option<String>,
    /// `AccessKeyId`, if given.
    pub access_key_id: Option<String>,
    /// `SignatureNonce`, if given.
    pub nonce: Option<String>,
    /// `Timestamp`, if given.
    pub timestamp: Option<String>,
    /// `TTL`, if given.
    pub ttl: Option<String>,
    /// The status answered.
    pub status: u16,
    /// The error code answered, if any.
    pub code: Option<String>,
}

/// A running fake Alidns; stops when dropped.
pub struct FakeAlidns {
    server: Server,
    state: Arc<Mutex<State>>,
}

struct State {
    options: Options,
    records: Vec<FakeRecord>,
    next_id: u64,
    next_request: u64,
    nonces: HashSet<String>,
    failures_left: usize,
    failures_done: usize,
    /// Percentage of requests that fail, spread evenly.
    fail_percent: u64,
    requests_seen: u64,
    log: Vec<Seen>,
    /// The made-up items of a [`Hostile`] listing, as JSON, made once.
    junk: Option<String>,
}

/// An error answer: status, code, message.
struct ApiError(u16, &'static str, String);

impl FakeAlidns {
    /// Starts a fake serving `domains`, with the other [`Options`] at their defaults.
    pub fn start(domains: &[&str]) -> FakeAlidns {
        FakeAlidns::start_with(Options {
            domains: domains.iter().map(|d| (*d).to_owned()).collect(),
            ..Options::default()
        })
    }

    /// Starts a fake with `options`.
    pub fn start_with(options: Options) -> FakeAlidns {
        let state = Arc::new(Mutex::new(State {
            options,
            records: Vec::new(),
            next_id: 1_000_000_000_000_000,
            next_request: 1,
            nonces: HashSet::new(),
            failures_left: 0,
            failures_done: 0,
            fail_percent: 0,
            requests_seen: 0,
            log: Vec::new(),
            junk: None,
        }));
        let handler_state = state.clone();
        let server = Server::start(move |request| {
            let latency = lock(&handler_state).options.latency;
            if let Some(latency) = latency {
                std::thread::sleep(latency);
            }
            handle(&handler_state, request)
        });
        FakeAlidns { server, state }
    }

    /// The endpoint: `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The records now held, in creation order.
    pub fn records(&self) -> Vec<FakeRecord> {
        lock(&self.state).records.clone()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        lock(&self.state).log.clone()
    }

    /// Makes `percent` of the requests from now on fail (spread evenly), as [`fail_next`]
    /// does.
    ///
    /// [`fail_next`]: Self::fail_next
    pub fn fail_percent(&self, percent: u64) {
        lock(&self.state).fail_percent = percent.min(100);
    }

    /// Makes the next `n` requests fail, alternately 503 and 429.
    pub fn fail_next(&self, n: usize) {
        lock(&self.state).failures_left = n;
    }

    /// Changes the latency of later requests.
    pub fn set_latency(&self, latency: Option<Duration>) {
        lock(&self.state).options.latency = latency;
    }

    /// Changes whether TTLs below 600 are refused.
    pub fn set_ttl_quota(&self, on: bool) {
        lock(&self.state).options.ttl_quota = on;
    }

    /// Moves the fake's clock `secs` ahead of the system's (negative: behind).
    pub fn set_clock_skew(&self, secs: i64) {
        lock(&self.state).options.clock_skew_secs = secs;
    }
}

impl FakeZone for FakeAlidns {
    fn values(&self, fqdn: &str) -> Vec<String> {
        let fqdn = fqdn.to_ascii_lowercase();
        lock(&self.state)
            .records
            .iter()
            .filter(|r| r.kind == "TXT" && r.fqdn() == fqdn)
            .map(|r| r.value.clone())
            .collect()
    }

    fn add_foreign(&self, fqdn: &str, value: &str) {
        let mut state = lock(&self.state);
        let name = fqdn.trim_end_matches('.').to_ascii_lowercase();
        let domain = state
            .options
            .domains
            .iter()
            .filter(|d| name == **d || name.ends_with(&format!(".{d}")))
            .max_by_key(|d| d.len())
            .cloned()
            // A test helper: a name outside the fake's domains is a bug in the test.
            .unwrap_or_else(|| panic!("{fqdn} is in none of the fake's domains"));
        let rr = match name.strip_suffix(&format!(".{domain}")) {
            Some(rr) => rr.to_owned(),
            None => "@".to_owned(),
        };
        if let Some(base) = state.options.challtestsrv.clone() {
            challtestsrv_post(&base, "/set-txt", &record_name(&rr, &domain), Some(value))
                .unwrap_or_else(|e| panic!("mirroring to challtestsrv: {e}"));
        }
        let id = state.new_id();
        state.records.push(FakeRecord {
            id,
            domain,
            rr,
            kind: "TXT".to_owned(),
            value: value.to_owned(),
            ttl: MIN_TTL,
        });
    }

    fn fail_next(&self, n: usize) {
        FakeAlidns::fail_next(self, n);
    }
}

impl State {
    fn new_id(&mut self) -> String {
        self.next_id += 1;
        self.next_id.to_string()
    }

    fn request_id(&mut self) -> String {
        self.next_request += 1;
        format!("6A0B8D6E-FA6E-4C2B-9E1F-{:012X}", self.next_request)
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panicking test thread must not hide the records from the others.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn record_name(rr: &str, domain: &str) -> String {
    if rr == "@" {
        format!("{domain}.")
    } else {
        format!("{rr}.{domain}.")
    }
}

fn handle(state: &Mutex<State>, request: &Request) -> Response {
    let params = match request.method.as_str() {
        "GET" => request.query.clone(),
        "POST" => {
            let mut params = request.query.clone();
            if request
                .header("content-type")
                .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"))
            {
                params.extend(request.form());
            }
            params
        }
        _ => Vec::new(),
    };
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut state = lock(state);
    if let Some(response) = hostile(&mut state, request, param("Action").as_deref()) {
        return response;
    }
    let request_id = state.request_id();
    let result = answer(&mut state, request, &params);
    let (status, code, body) = match result {
        Ok(mut body) => {
            body["RequestId"] = Value::String(request_id);
            (200, None, body)
        }
        Err(ApiError(status, code, message)) => (
            status,
            Some(code.to_owned()),
            json!({
                "RequestId": request_id,
                "HostId": "alidns.aliyuncs.com",
                "Code": code,
                "Message": message,
                "Recommend": format!("https://api.aliyun.com/troubleshoot?q={code}&product=Alidns"),
            }),
        ),
    };
    state.log.push(Seen {
        method: request.method.clone(),
        action: param("Action"),
        access_key_id: param("AccessKeyId"),
        nonce: param("SignatureNonce"),
        timestamp: param("Timestamp"),
        ttl: param("TTL"),
        status,
        code,
    });
    Response::json(status, &body)
}

/// The answer of a [`Hostile`] mode, if it has one; logged like the others.
fn hostile(state: &mut State, request: &Request, action: Option<&str>) -> Option<Response> {
    let response = match (&state.options.hostile, action) {
        (Some(Hostile::Redirect { status, location }), _) => Response {
            status: *status,
            headers: vec![
                ("Location".into(), location.clone()),
                ("Content-Type".into(), "text/html".into()),
            ],
            body: format!("<a href=\"{location}\">moved</a>").into_bytes(),
        },
        (Some(Hostile::HugeDomainPages { per_page, total }), Some("DescribeDomains")) => {
            let (per_page, total) = (*per_page, *total);
            let junk = state.junk.get_or_insert_with(|| {
                (0..per_page)
                    .map(|i| {
                        json!({"DomainId": format!("junk-{i}"), "DomainName": format!("junk{i}.example"),
                               "PunyCode": format!("junk{i}.example"), "RecordCount": 0})
                        .to_string()
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            });
            let body = format!(
                "{{\"RequestId\":\"hostile\",\"TotalCount\":{total},\"PageSize\":{per_page},\
                 \"Domains\":{{\"Domain\":[{junk}]}}}}"
            );
            Response {
                status: 200,
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: body.into_bytes(),
            }
        }
        _ => return None,
    };
    state.log.push(Seen {
        method: request.method.clone(),
        action: action.map(str::to_owned),
        access_key_id: None,
        nonce: None,
        timestamp: None,
        ttl: None,
        status: response.status,
        code: None,
    });
    Some(response)
}

fn missing(name: &str) -> ApiError {
    let code: &'static str = match name {
        "AccessKeyId" => "MissingAccessKeyId",
        "Signature" => "MissingSignature",
        "SignatureNonce" => "MissingSignatureNonce",
        "Timestamp" => "MissingTimestamp",
        "Action" => "MissingAction",
        "DomainName" => "MissingDomainName",
        "RR" => "MissingRR",
        "Type" => "MissingType",
        "Value" => "MissingValue",
        "RecordId" => "MissingRecordId",
        _ => "MissingParameter",
    };
    ApiError(400, code, format!("{name} is mandatory for this action."))
}

fn answer(
    state: &mut State,
    request: &Request,
    params: &[(String, String)],
) -> Result<Value, ApiError> {
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let required = |name: &str| param(name).ok_or_else(|| missing(name));

    if request.path != "/" || !matches!(request.method.as_str(), "GET" | "POST") {
        return Err(ApiError(
            404,
            "InvalidAction.NotFound",
            "Specified api is not found, please check your url and method.".into(),
        ));
    }
    if param("Format") != Some("JSON") {
        return Err(ApiError(
            400,
            "UnsupportedFormat",
            "The fake Alidns answers only Format=JSON (the default, XML, is out of scope).".into(),
        ));
    }
    let action = required("Action")?;
    if param("Version") != Some("2015-01-09") {
        return Err(ApiError(
            400,
            "InvalidVersion",
            "Specified parameter Version is not valid.".into(),
        ));
    }
    if param("SignatureMethod") != Some("HMAC-SHA1") {
        return Err(ApiError(
            400,
            "InvalidSignatureMethod",
            "Specified signature method is not supported.".into(),
        ));
    }
    if param("SignatureVersion") != Some("1.0") {
        return Err(ApiError(
            400,
            "InvalidSignatureVersion",
            "Specified signature version is not supported.".into(),
        ));
    }
    let key_id = required("AccessKeyId")?;
    let signature = required("Signature")?;
    let nonce = required("SignatureNonce")?;
    let timestamp = required("Timestamp")?;

    let (secret, allowed) = match key_id {
        KEY_ID => (KEY_SECRET, true),
        NO_PERMISSION_KEY_ID => (NO_PERMISSION_KEY_SECRET, false),
        _ => {
            return Err(ApiError(
                404,
                "InvalidAccessKeyId.NotFound",
                "Specified access key is not found.".into(),
            ));
        }
    };
    let signed: Vec<(&str, &str)> = params
        .iter()
        .filter(|(k, _)| k != "Signature")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let to_sign = string_to_sign(&request.method, &signed);
    if hmac_sha1_base64(secret, &to_sign) != signature {
        // Aliyun echoes its string to sign.
        return Err(ApiError(
            400,
            "SignatureDoesNotMatch",
            format!(
                "Specified signature is not matched with our calculation. server string to sign is:{to_sign}"
            ),
        ));
    }
    let Some(sent) = parse_timestamp(timestamp) else {
        return Err(ApiError(
            400,
            "InvalidTimeStamp.Format",
            "Specified time stamp or date value is not well formatted.".into(),
        ));
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
        + state.options.clock_skew_secs;
    if (now - sent).abs() > MAX_SKEW_SECS {
        return Err(ApiError(
            400,
            "InvalidTimeStamp.Expired",
            "Specified time stamp or date value is expired.".into(),
        ));
    }
    if !state.nonces.insert(nonce.to_owned()) {
        return Err(ApiError(
            400,
            "SignatureNonceUsed",
            "Specified signature nonce was used already.".into(),
        ));
    }
    let n = state.requests_seen;
    state.requests_seen += 1;
    let by_ratio = (n + 1) * state.fail_percent / 100 != n * state.fail_percent / 100;
    if state.failures_left > 0 || by_ratio {
        state.failures_left = state.failures_left.saturating_sub(1);
        state.failures_done += 1;
        return Err(if state.failures_done % 2 == 1 {
            ApiError(
                503,
                "ServiceUnavailable",
                "The request has failed due to a temporary failure of the server.".into(),
            )
        } else {
            ApiError(
                429,
                "Throttling.User",
                "Request was denied due to user flow control.".into(),
            )
        });
    }
    if !allowed {
        return Err(ApiError(
            403,
            "Forbidden.RAM",
            "User not authorized to operate on the specified resource.".into(),
        ));
    }
    match action {
        "DescribeDomains" => describe_domains(state, &param),
        "DescribeDomainRecords" => describe_domain_records(state, &param),
        "AddDomainRecord" => add_domain_record(state, &param),
        "DeleteDomainRecord" => delete_domain_record(state, &param),
        _ => Err(ApiError(
            404,
            "InvalidAction.NotFound",
            "Specified api is not found, please check your url and method.".into(),
        )),
    }
}

/// `PageNumber` and `PageSize` (default 20, at most `max`).
fn paging<'a>(
    param: &impl Fn(&str) -> Option<&'a str>,
    max: usize,
) -> Result<(usize, usize), ApiError> {
    let number = match param("PageNumber") {
        None => 1,
        Some(n) => n.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| {
            ApiError(
                400,
                "InvalidPageNumber",
                "The specified PageNumber is invalid.".into(),
            )
        })?,
    };
    let size = match param("PageSize") {
        None => 20,
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError(
                    400,
                    "InvalidPageSize",
                    format!("The specified PageSize is invalid: it must be 1 to {max}."),
                )
            })?,
    };
    Ok((number, size))
}

fn page<T: Clone>(items: &[T], number: usize, size: usize) -> Vec<T> {
    items
        .iter()
        .skip((number - 1).saturating_mul(size))
        .take(size)
        .cloned()
        .collect()
}

fn describe_domains<'a>(
    state: &State,
    param: &impl Fn(&str) -> Option<&'a str>,
) -> Result<Value, ApiError> {
    let (number, size) = paging(param, 100)?;
    let keyword = param("KeyWord").map(str::to_ascii_lowercase);
    let matching: Vec<&String> = state
        .options
        .domains
        .iter()
        .filter(|d| keyword.as_ref().is_none_or(|k| d.contains(k.as_str())))
        .collect();
    let domains: Vec<Value> = page(&matching, number, size)
        .into_iter()
        .map(|d| {
            json!({
                "DomainId": format!("00efd71a-770e-4255-b54e-{:012x}", d.len()),
                "DomainName": d,
                "PunyCode": d,
                "AliDomain": false,
                "RecordCount": state.records.iter().filter(|r| &r.domain == d).count(),
                "VersionCode": "mianfei",
                "VersionName": "Alibaba Cloud DNS",
                "DnsServers": {"DnsServer": ["dns1.hichina.com", "dns2.hichina.com"]},
            })
        })
        .collect();
    Ok(json!({
        "TotalCount": matching.len(),
        "PageNumber": number,
        "PageSize": size,
        "Domains": {"Domain": domains},
    }))
}

fn known_domain<'a>(state: &State, name: &'a str) -> Result<&'a str, ApiError> {
    if state.options.domains.iter().any(|d| d == name) {
        Ok(name)
    } else {
        Err(ApiError(
            400,
            "InvalidDomainName.NoExist",
            "The specified domain name does not exist. Refresh the page and try again.".into(),
        ))
    }
}

fn describe_domain_records<'a>(
    state: &State,
    param: &impl Fn(&str) -> Option<&'a str>,
) -> Result<Value, ApiError> {
    let domain = known_domain(
        state,
        param("DomainName").ok_or_else(|| missing("DomainName"))?,
    )?;
    let (number, size) = paging(param, 500)?;
    // RRKeyWord is a fuzzy (substring) match; TypeKeyWord and Type are exact.
    let rr_keyword = param("RRKeyWord").map(str::to_ascii_lowercase);
    let type_filter = param("TypeKeyWord")
        .or(param("Type"))
        .map(str::to_ascii_uppercase);
    let matching: Vec<&FakeRecord> = state
        .records
        .iter()
        .filter(|r| r.domain == domain)
        .filter(|r| {
            rr_keyword
                .as_ref()
                .is_none_or(|k| r.rr.contains(k.as_str()))
        })
        .filter(|r| type_filter.as_ref().is_none_or(|t| &r.kind == t))
        .collect();
    let records: Vec<Value> = page(&matching, number, size)
        .into_iter()
        .map(|r| {
            json!({
                "DomainName": r.domain,
                "RecordId": r.id,
                "RR": r.rr,
                "Type": r.kind,
                "Value": r.value,
                "TTL": r.ttl,
                "Line": "default",
                "Status": "ENABLE",
                "Locked": false,
                "Weight": 1,
            })
        })
        .collect();
    Ok(json!({
        "TotalCount": matching.len(),
        "PageNumber": number,
        "PageSize": size,
        "DomainRecords": {"Record": records},
    }))
}

fn add_domain_record<'a>(
    state: &mut State,
    param: &impl Fn(&str) -> Option<&'a str>,
) -> Result<Value, ApiError> {
    let domain = known_domain(
        state,
        param("DomainName").ok_or_else(|| missing("DomainName"))?,
    )?
    .to_owned();
    let rr = param("RR")
        .ok_or_else(|| missing("RR"))?
        .to_ascii_lowercase();
    let kind = param("Type")
        .ok_or_else(|| missing("Type"))?
        .to_ascii_uppercase();
    let value = param("Value").ok_or_else(|| missing("Value"))?.to_owned();
    if kind != "TXT" {
        return Err(ApiError(
            400,
            "UnsupportedRecordType",
            "The fake Alidns stores TXT records only.".into(),
        ));
    }
    let ttl = match param("TTL") {
        None => MIN_TTL,
        Some(t) => t
            .parse::<u32>()
            .map_err(|_| ApiError(400, "InvalidTTL", "The specified TTL is invalid.".into()))?,
    };
    if state.options.ttl_quota && ttl < MIN_TTL {
        return Err(ApiError(
            400,
            "QuotaExceeded.TTL",
            format!(
                "The TTL value {ttl} exceeds the quota of the current edition (minimum {MIN_TTL})."
            ),
        ));
    }
    if state
        .records
        .iter()
        .any(|r| r.domain == domain && r.rr == rr && r.kind == kind && r.value == value)
    {
        return Err(ApiError(
            400,
            "DomainRecordDuplicate",
            "The DNS record already exists.".into(),
        ));
    }
    if let Some(base) = &state.options.challtestsrv {
        challtestsrv_post(base, "/set-txt", &record_name(&rr, &domain), Some(&value)).map_err(
            |e| {
                ApiError(
                    500,
                    "InternalError",
                    format!("mirroring to challtestsrv failed: {e}"),
                )
            },
        )?;
    }
    let id = state.new_id();
    state.records.push(FakeRecord {
        id: id.clone(),
        domain,
        rr,
        kind,
        value,
        ttl,
    });
    Ok(json!({ "RecordId": id }))
}

fn delete_domain_record<'a>(
    state: &mut State,
    param: &impl Fn(&str) -> Option<&'a str>,
) -> Result<Value, ApiError> {
    let id = param("RecordId").ok_or_else(|| missing("RecordId"))?;
    let Some(index) = state.records.iter().position(|r| r.id == id) else {
        return Err(ApiError(
            400,
            "DomainRecordNotBelongToUser",
            "The DNS record does not belong to you.".into(),
        ));
    };
    let removed = state.records[index].clone();
    if let Some(base) = &state.options.challtestsrv {
        let name = removed.fqdn();
        let mirror = || -> Result<(), String> {
            challtestsrv_post(base, "/clear-txt", &name, None)?;
            for r in state
                .records
                .iter()
                .filter(|r| r.id != removed.id && r.fqdn() == name)
            {
                challtestsrv_post(base, "/set-txt", &name, Some(&r.value))?;
            }
            Ok(())
        };
        mirror().map_err(|e| {
            ApiError(
                500,
                "InternalError",
                format!("mirroring to challtestsrv failed: {e}"),
            )
        })?;
    }
    state.records.remove(index);
    Ok(json!({ "RecordId": removed.id }))
}

// --- Signature V1, implemented here from the spec, independently of `crate::sign`.

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn string_to_sign(method: &str, params: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(String, String)> =
        params.iter().map(|(k, v)| (encode(k), encode(v))).collect();
    pairs.sort();
    let query = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!("{method}&%2F&{}", encode(&query))
}

fn hmac_sha1_base64(secret: &str, text: &str) -> String {
    let key = hmac::Key::new(
        hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        format!("{secret}&").as_bytes(),
    );
    STANDARD.encode(hmac::sign(&key, text.as_bytes()).as_ref())
}

/// Seconds since the epoch of `YYYY-MM-DDThh:mm:ssZ`.
fn parse_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| s.get(range)?.parse::<u32>().ok();
    let month = time::Month::try_from(u8::try_from(num(5..7)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(
        i32::try_from(num(0..4)?).ok()?,
        month,
        u8::try_from(num(8..10)?).ok()?,
    )
    .ok()?;
    let at = time::Time::from_hms(
        u8::try_from(num(11..13)?).ok()?,
        u8::try_from(num(14..16)?).ok()?,
        u8::try_from(num(17..19)?).ok()?,
    )
    .ok()?;
    Some(
        time::PrimitiveDateTime::new(date, at)
            .assume_utc()
            .unix_timestamp(),
    )
}

// --- A tiny blocking HTTP client for pebble-challtestsrv's management API.

fn challtestsrv_post(
    base: &str,
    path: &str,
    host: &str,
    value: Option<&str>,
) -> Result<(), String> {
    let body = match value {
        Some(v) => json!({"host": host, "value": v}),
        None => json!({"host": host}),
    }
    .to_string();
    let (status, answer) = http_post(base, path, "application/json", &body)?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("POST {path} answered {status}: {answer}"))
    }
}

/// POSTs `body` to `base` + `path` (`base` is `http://host:port[/prefix]`) and returns the
/// status and body of the answer.
fn http_post(
    base: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let rest = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("{base}: only http:// URLs are supported"))?;
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    let timeout = Duration::from_secs(5);
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{authority}: {e}"))?;
    let io = |e: std::io::Error| format!("{authority}: {e}");
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let request = format!(
        "POST {prefix}{path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(io)?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("{authority}: not an HTTP answer"))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A signed form body for `action` with a chosen nonce, signed with `secret`.
    fn signed_body(key_id: &str, secret: &str, action: &str, nonce: &str) -> String {
        let timestamp = crate::client::timestamp(SystemTime::now());
        let params = [
            ("Action", action),
            ("Version", "2015-01-09"),
            ("Format", "JSON"),
            ("AccessKeyId", key_id),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("SignatureNonce", nonce),
            ("Timestamp", timestamp.as_str()),
        ];
        let signature = hmac_sha1_base64(secret, &string_to_sign("POST", &params));
        let mut pairs: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        pairs.push(format!("Signature={}", encode(&signature)));
        pairs.join("&")
    }

    fn post(fake: &FakeAlidns, body: &str) -> (u16, Value) {
        let (status, text) =
            http_post(&fake.url(), "/", "application/x-www-form-urlencoded", body).expect("post");
        (status, serde_json::from_str(&text).expect("json"))
    }

    #[test]
    fn the_known_answer_verifies() {
        let params = [
            ("AccessKeyId", "testid"),
            ("Action", "DescribeDomainRecords"),
            ("DomainName", "example.com"),
            ("Format", "XML"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "f59ed6a9-83fc-473b-9cc6-99c95df3856e"),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2016-03-24T16:41:54Z"),
            ("Version", "2015-01-09"),
        ];
        assert_eq!(
            hmac_sha1_base64("testsecret", &string_to_sign("GET", &params)),
            "uRpHwaSEt3J+6KQD//svCh/x+pI="
        );
        assert_eq!(parse_timestamp("2016-03-24T16:41:54Z"), Some(1_458_837_714));
        assert_eq!(parse_timestamp("2016-03-24 16:41:54Z"), None);
    }

    /// acme.sh #3585: a key without DNS permission answers Forbidden.RAM; sending the same
    /// request again (same nonce) answers SignatureNonceUsed, which hides the real cause.
    #[test]
    fn reproduces_acme_sh_3585() {
        let fake = FakeAlidns::start(&["example.com"]);
        let body = signed_body(
            NO_PERMISSION_KEY_ID,
            NO_PERMISSION_KEY_SECRET,
            "DescribeDomains",
            "3585-nonce",
        );
        let (status, first) = post(&fake, &body);
        assert_eq!(
            (status, first["Code"].as_str()),
            (403, Some("Forbidden.RAM"))
        );
        let (status, second) = post(&fake, &body);
        assert_eq!(
            (status, second["Code"].as_str()),
            (400, Some("SignatureNonceUsed"))
        );
        assert_eq!(
            second["Message"],
            "Specified signature nonce was used already."
        );
    }

    #[test]
    fn answers_the_documented_errors() {
        let fake = FakeAlidns::start(&["example.com"]);
        let (status, e) = post(
            &fake,
            &signed_body("LTAIunknown", "x", "DescribeDomains", "n1"),
        );
        assert_eq!(
            (status, e["Code"].as_str()),
            (404, Some("InvalidAccessKeyId.NotFound"))
        );
        assert_eq!(e["Message"], "Specified access key is not found.");
        let (status, e) = post(
            &fake,
            &signed_body(KEY_ID, "wrong", "DescribeDomains", "n2"),
        );
        assert_eq!(
            (status, e["Code"].as_str()),
            (400, Some("SignatureDoesNotMatch"))
        );
        assert!(e["Message"].as_str().is_some_and(|m| {
            m.starts_with("Specified signature is not matched with our calculation.")
        }));
        let (status, e) = post(
            &fake,
            &signed_body(KEY_ID, KEY_SECRET, "DescribeDomains", "n3"),
        );
        assert_eq!(status, 200, "{e}");
        assert_eq!(e["Domains"]["Domain"][0]["DomainName"], "example.com");
        assert!(e["RequestId"].is_string());
        let xml = signed_body(KEY_ID, KEY_SECRET, "DescribeDomains", "n4")
            .replace("Format=JSON", "Format=XML");
        assert_eq!(post(&fake, &xml).0, 400);
        fake.set_clock_skew(16 * 60);
        let (status, e) = post(
            &fake,
            &signed_body(KEY_ID, KEY_SECRET, "DescribeDomains", "n5"),
        );
        assert_eq!(
            (status, e["Code"].as_str()),
            (400, Some("InvalidTimeStamp.Expired"))
        );
    }
}
