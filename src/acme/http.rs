//! The HTTP client handed to instant-acme: rustls with the system roots plus the issuer's
//! `trust_roots` (never "accept any certificate"), bounded connect and request times, and two
//! additions the retry layer needs:
//!
//! - the `Retry-After` of an error answer is recorded in a task-local slot, because
//!   instant-acme's `Problem` does not carry headers;
//! - an error answer whose body is not a problem document (a proxy's HTML 502 page) is turned
//!   into one that keeps the status and the start of the body, so the evidence survives
//!   instead of becoming a JSON parse error.
//!
//! Every request carries a `User-Agent` naming certkeeper and its version, followed by the
//! protocol library's (RFC 8555 §6.1: clients MUST send one; current CAs refuse requests
//! without it).
//!
//! No redirect is followed and no `Referer` is sent (hyper does neither): RFC 8555 needs no
//! redirects (every URL comes from the directory or from a `Location` of a `201`), so a 3xx
//! answer is an error naming its status and the host of its `Location`, instead of being
//! passed on as a success whose body the protocol library would misread.
//!
//! Two limits protect the CA and certkeeper:
//!
//! - `max_concurrent_requests` of the issuer: requests to its server hold one of that many
//!   turns from sending until the whole body is read (shared by every client in the process
//!   with the same server and limit). Without it, the only limit is `renewal.concurrency`.
//!   Pebble 2.x needs 1: it hangs for good when an authorization is fetched while another
//!   request of the same account holds its store lock.
//! - A `429` or `503` answer with `Retry-After` pauses every request to that server until
//!   then, not only the one that got it, when the pause is short enough to wait out
//!   ([`PAUSE_MAX`]); during a longer one, requests fail at once as rate limited, with the
//!   CA's time, so each certificate waits in its own backoff instead of holding a pass.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex, Once, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{RETRY_AFTER, USER_AGENT as USER_AGENT_HEADER};
use http::{Request, Response, StatusCode};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls_pki_types::CertificateDer;

use super::Error;

/// Installs the aws-lc-rs rustls crypto provider as the process default. Call it once at
/// startup, before any TLS is used; calling it again (or after another part of the process
/// installed the same provider) does nothing. rustls refuses to choose a provider itself when
/// more than one backend is compiled in, so an explicit install keeps every client working.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means a provider is already installed; that one stays, which is what we want.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// certkeeper's part of every request's `User-Agent`.
pub const USER_AGENT: &str = concat!("certkeeper/", env!("CARGO_PKG_VERSION"));

/// The longest `Retry-After` pause that requests wait out; a longer one fails them at once.
pub const PAUSE_MAX: Duration = Duration::from_secs(60);

/// The client instant-acme sends every request through. Clones share one connection pool.
#[derive(Clone)]
pub(crate) struct Http {
    client: HyperClient<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
    request_timeout: Duration,
    max_concurrent: Option<usize>,
}

/// Scheme, host and port of a URL: what gates and pauses are kept per.
fn server_of(uri: &http::Uri) -> String {
    format!(
        "{}://{}",
        uri.scheme_str().unwrap_or_default(),
        uri.authority().map(|a| a.as_str()).unwrap_or_default()
    )
}

/// The gate of a server with a limit: one per server and limit in the process.
fn gate_for(server: &str, limit: usize) -> Arc<tokio::sync::Semaphore> {
    type Gates = HashMap<(String, usize), Arc<tokio::sync::Semaphore>>;
    static GATES: LazyLock<Mutex<Gates>> = LazyLock::new(Mutex::default);
    // A panic while the map was locked cannot leave it inconsistent (inserts are whole), so a
    // poisoned lock is used as it is.
    let mut gates = GATES.lock().unwrap_or_else(PoisonError::into_inner);
    Arc::clone(
        gates
            .entry((server.to_owned(), limit))
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(limit))),
    )
}

/// Until when each server asked (with `Retry-After` on a 429 or 503) not to be asked.
static PAUSES: LazyLock<Mutex<HashMap<String, SystemTime>>> = LazyLock::new(Mutex::default);

/// Notes a server's request to pause until `until` (a later pause wins), at most
/// [`crate::state::RETRY_AFTER_MAX`] from now: a daemon never stops asking a CA for
/// longer, whatever date it sent.
fn pause(server: &str, until: SystemTime) {
    let until = until.min(SystemTime::now() + crate::state::RETRY_AFTER_MAX);
    let mut pauses = PAUSES.lock().unwrap_or_else(PoisonError::into_inner);
    let at = pauses.entry(server.to_owned()).or_insert(until);
    if *at < until {
        *at = until;
    }
}

/// Waits out a short pause of `server`; `Err(until)` during one longer than [`PAUSE_MAX`].
async fn paused(server: &str) -> Result<(), SystemTime> {
    loop {
        let until = {
            let pauses = PAUSES.lock().unwrap_or_else(PoisonError::into_inner);
            pauses.get(server).copied()
        };
        let Some(until) = until else { return Ok(()) };
        let Ok(left) = until.duration_since(SystemTime::now()) else {
            return Ok(());
        };
        if left > PAUSE_MAX {
            return Err(until);
        }
        tracing::debug!(%server, wait_ms = left.as_millis() as u64, "The CA asked for a pause; waiting.");
        tokio::time::sleep(left).await;
    }
}

/// The answer given for a request not sent because the server asked for a long pause: a
/// `rateLimited` problem, as if the CA had sent it.
fn paused_answer(server: &str, until: SystemTime) -> BytesResponse {
    let _ = RETRY_AFTER_SLOT.try_with(|slot| slot.set(Some(until)));
    let doc = serde_json::json!({
        "type": "urn:ietf:params:acme:error:rateLimited",
        "status": 429,
        "detail": format!(
            "not sent: {server} asked (Retry-After) for no requests until {}",
            httpdate::fmt_http_date(until)
        ),
    });
    let mut rsp = Response::new(http_body_util::Full::new(Bytes::from(doc.to_string())));
    *rsp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    BytesResponse::from(rsp)
}

impl Http {
    /// A client trusting the system roots plus every certificate in `trust_roots`.
    pub(crate) fn new(
        trust_roots: &[PathBuf],
        connect_timeout: Duration,
        request_timeout: Duration,
        max_concurrent: Option<usize>,
    ) -> Result<Http, Error> {
        // Unreadable system roots leave only the configured ones; a directory served with a
        // public certificate then fails with a clear TLS error naming the unknown issuer.
        let mut roots = crate::x509::native_root_store();
        for path in trust_roots {
            let err = |reason: String| Error::TrustRoots {
                path: path.to_owned(),
                reason,
            };
            let bytes = crate::fsutil::read_regular(path, crate::fsutil::MAX_FILE)
                .map_err(|e| err(e.to_string()))?;
            let (certs, _) =
                crate::x509::read_certificates(&bytes).map_err(|e| err(e.to_string()))?;
            for cert in certs {
                roots
                    .add(CertificateDer::from(cert.der.clone()))
                    .map_err(|e| err(format!("{}: {e}", cert.short_name())))?;
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut connector = HttpConnector::new();
        connector.enforce_http(false);
        connector.set_connect_timeout(Some(connect_timeout));
        // A signed POST goes out as two HTTP/2 frames (headers, then body): with Nagle's
        // algorithm on, the second waits for the server's delayed ACK of the first, about
        // 40 ms on every request. Requests are small and latency is what matters.
        connector.set_nodelay(true);
        // http:// is allowed for loopback test servers and local proxies (config validation
        // warns about it elsewhere).
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(connector);
        Ok(Http {
            client: HyperClient::builder(TokioExecutor::new()).build(https),
            request_timeout,
            max_concurrent,
        })
    }

    /// The client for issuer `cfg`: its `trust_roots` and `max_concurrent_requests`, with
    /// the timeouts of `tuning`.
    pub(crate) fn for_issuer(
        cfg: &crate::config::AcmeIssuer,
        tuning: &super::Tuning,
    ) -> Result<Http, Error> {
        Http::new(
            &cfg.trust_roots,
            tuning.connect_timeout,
            tuning.request_timeout,
            cfg.max_concurrent_requests,
        )
    }

    /// A plain GET through the same client: status and body.
    pub(crate) async fn get(&self, url: &str) -> Result<(StatusCode, Bytes), instant_acme::Error> {
        let req = Request::get(url).body(BodyWrapper::default())?;
        let mut rsp = self.request(req).await?;
        let body = rsp
            .body
            .into_bytes()
            .await
            .map_err(instant_acme::Error::Other)?;
        Ok((rsp.parts.status, body))
    }
}

impl HttpClient for Http {
    fn request(
        &self,
        mut req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let url = req.uri().to_string();
        let agent = match req
            .headers()
            .get(USER_AGENT_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            Some(library) => format!("{USER_AGENT} {library}"),
            None => format!("{USER_AGENT} hyper/1"),
        };
        if let Ok(value) = http::HeaderValue::from_str(&agent) {
            req.headers_mut().insert(USER_AGENT_HEADER, value);
        }
        let client = self.client.clone();
        let server = server_of(req.uri());
        // Only newNonce is asked with HEAD (RFC 8555 §7.2).
        let head = req.method() == http::Method::HEAD;
        let gate = self.max_concurrent.map(|n| gate_for(&server, n));
        let timeout = self.request_timeout;
        Box::pin(async move {
            // A new order's `replaces`, read from the request, to check the CA's echo below.
            let (req, replaces) = replaces_of(req).await?;
            if let Err(until) = paused(&server).await {
                return Ok(paused_answer(&server, until));
            }
            // The gate is never closed, so acquiring only fails if it were; treat that as a
            // transport problem rather than trusting it cannot happen.
            let _turn = match gate {
                Some(gate) => Some(
                    gate.acquire_owned()
                        .await
                        .map_err(|e| Transport::from_error(&url, &e))?,
                ),
                None => None,
            };
            let rsp = match tokio::time::timeout(timeout, client.request(req)).await {
                Err(_) => return Err(Transport::timed_out(&url, timeout).into()),
                Ok(Err(e)) => return Err(Transport::from_error(&url, &e).into()),
                Ok(Ok(rsp)) => rsp,
            };
            if rsp.status().is_redirection() {
                // Its body is dropped unread, with the connection.
                return Err(Redirected::new(&url, rsp.status(), rsp.headers()).into());
            }
            // The whole body is read under the gate and within the time limit, so the next
            // request starts only when this one is over, and a stalled body cannot hang a pass.
            let (parts, body) = rsp.into_parts();
            // Bounded: a CA's answers are small; a server streaming without end must not
            // grow certkeeper's memory.
            let body = http_body_util::Limited::new(body, MAX_ANSWER);
            let body =
                match tokio::time::timeout(timeout, http_body_util::BodyExt::collect(body)).await {
                    Ok(Ok(body)) => body.to_bytes(),
                    // Not the network: asking again gets the same answer.
                    Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                        return Err(TooLarge {
                            url,
                            limit: MAX_ANSWER,
                        }
                        .into());
                    }
                    Ok(Err(e)) => return Err(Transport::from_error(&url, &*e).into()),
                    Err(_) => return Err(Transport::timed_out(&url, timeout).into()),
                };
            let status = parts.status;
            if status.is_success() || status.is_redirection() || status.is_informational() {
                // A poll's answer may say when to ask again.
                if let Some(at) = retry_after(parts.headers.get(RETRY_AFTER)) {
                    let _ = POLL_HINT.try_with(|slot| slot.set(Some(at)));
                }
                note_persist_issuers(&body);
                let body = match &replaces {
                    Some(id) if status == StatusCode::CREATED => echo_replaces(&server, id, body),
                    _ => body,
                };
                let body = http_body_util::Full::new(body);
                return Ok(BytesResponse::from(Response::from_parts(parts, body)));
            }
            if let Some(at) = retry_after(parts.headers.get(RETRY_AFTER)) {
                // Outside a retry scope there is nobody to tell; that is fine.
                let _ = RETRY_AFTER_SLOT.try_with(|slot| slot.set(Some(at)));
                if status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::SERVICE_UNAVAILABLE
                {
                    pause(&server, at);
                }
            }
            if head {
                // instant-acme turns any newNonce error into "missing data" and drops the
                // status; a problem keeps it, and a 429 or 5xx is retried by its kind.
                return Err(nonce_problem(status, &url)?);
            }
            let body = problem_body(status, &body);
            Ok(BytesResponse::from(Response::from_parts(parts, body)))
        })
    }
}

/// Reads the `replaces` of a JWS-signed request's payload (a new order that renews), giving
/// back the request whole; `None` for any other request.
async fn replaces_of(
    req: Request<BodyWrapper<Bytes>>,
) -> Result<(Request<BodyWrapper<Bytes>>, Option<String>), instant_acme::Error> {
    if req.method() != http::Method::POST {
        return Ok((req, None));
    }
    let (parts, body) = req.into_parts();
    let bytes = http_body_util::BodyExt::collect(body)
        .await
        .map_err(|e| instant_acme::Error::Other(e.into()))?
        .to_bytes();
    let replaces = jws_payload(&bytes).and_then(|payload| {
        payload
            .get("replaces")
            .and_then(|r| r.as_str())
            .map(str::to_owned)
    });
    Ok((
        Request::from_parts(parts, BodyWrapper::from(bytes.to_vec())),
        replaces,
    ))
}

/// The payload of a flattened JWS (RFC 7515 §7.2.2) as JSON, when it is an object.
fn jws_payload(body: &[u8]) -> Option<serde_json::Value> {
    use base64::Engine as _;
    let jws: serde_json::Value = serde_json::from_slice(body).ok()?;
    let payload = jws.get("payload")?.as_str()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .filter(|v| v.is_object())
}

/// A new order the CA accepted without echoing `replaces` (RFC 9773 §5 says it MUST; not
/// every server does): the order is fine, so the field is put back into the answer and the
/// order goes on, instead of failing in the protocol library's check and leaving the order
/// abandoned at the CA. Said once per CA.
fn echo_replaces(server: &str, replaces: &str, body: Bytes) -> Bytes {
    let Ok(serde_json::Value::Object(mut order)) = serde_json::from_slice(&body) else {
        return body;
    };
    if !(order.contains_key("identifiers") && order.contains_key("status"))
        || order.contains_key("replaces")
    {
        return body;
    }
    static WARNED: LazyLock<Mutex<std::collections::HashSet<String>>> =
        LazyLock::new(Mutex::default);
    if WARNED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(server.to_owned())
    {
        tracing::warn!(%server, "The CA accepted a renewal order without echoing its replaces field (RFC 9773 section 5 says it must); going on with the order.");
    }
    order.insert(
        "replaces".into(),
        serde_json::Value::String(replaces.to_owned()),
    );
    serde_json::to_vec(&order).map_or(body, Bytes::from)
}

tokio::task_local! {
    /// When the server last asked to be retried, within one retry scope.
    pub(crate) static RETRY_AFTER_SLOT: Cell<Option<SystemTime>>;
    /// When the server, in a successful answer, asked to be polled again.
    static POLL_HINT: Cell<Option<SystemTime>>;
    /// The `issuer-domain-names` of the dns-persist-01 challenges seen, by challenge URL.
    static PERSIST_ISSUERS: RefCell<HashMap<String, Vec<String>>>;
}

/// Runs `fut` and returns, with its output, the `issuer-domain-names` of every dns-persist-01
/// challenge in the authorizations fetched during it, by challenge URL: instant-acme keeps a
/// challenge of a type it does not know, but drops that field, so it is read from the raw
/// answer here.
pub(crate) async fn persist_issuers<T>(
    fut: impl Future<Output = T>,
) -> (T, HashMap<String, Vec<String>>) {
    PERSIST_ISSUERS
        .scope(RefCell::default(), async {
            let out = fut.await;
            (out, PERSIST_ISSUERS.with(|seen| seen.take()))
        })
        .await
}

/// Records, inside a [`persist_issuers`] scope, the issuer domain names of the dns-persist-01
/// challenges of an authorization answer (lower-case, without a final dot).
fn note_persist_issuers(body: &[u8]) {
    let _ = PERSIST_ISSUERS.try_with(|seen| {
        let kind = super::persist::CHALLENGE_TYPE.as_bytes();
        if !body.windows(kind.len()).any(|w| w == kind) {
            return;
        }
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(body) else {
            return;
        };
        let challenges = doc.get("challenges").and_then(|c| c.as_array());
        for ch in challenges.into_iter().flatten() {
            if ch.get("type").and_then(|t| t.as_str()) != Some(super::persist::CHALLENGE_TYPE) {
                continue;
            }
            let url = ch.get("url").and_then(|u| u.as_str());
            let names = ch.get("issuer-domain-names").and_then(|n| n.as_array());
            if let (Some(url), Some(names)) = (url, names) {
                let names = names
                    .iter()
                    .filter_map(|n| n.as_str())
                    .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
                    .collect();
                seen.borrow_mut().insert(url.to_owned(), names);
            }
        }
    });
}

/// Runs `fut` and returns, with its output, the `Retry-After` of the last successful answer
/// during it (when polling an order, the CA's word on when to ask again).
pub(crate) async fn hinted<T>(fut: impl Future<Output = T>) -> (T, Option<SystemTime>) {
    POLL_HINT
        .scope(Cell::new(None), async {
            let out = fut.await;
            (out, POLL_HINT.with(Cell::get))
        })
        .await
}

/// An error answer's body as a problem document: kept as it is when it already is a JSON
/// object, otherwise wrapped so that the status and the first part of the text survive.
fn problem_body(status: StatusCode, body: &Bytes) -> http_body_util::Full<Bytes> {
    let is_object = serde_json::from_slice::<serde_json::Value>(body)
        .map(|v| v.is_object())
        .unwrap_or(false);
    if is_object {
        return http_body_util::Full::new(body.clone());
    }
    let text = String::from_utf8_lossy(body);
    let text = super::fold(&text.chars().take(MAX_BODY_EVIDENCE).collect::<String>());
    let detail = if text.is_empty() {
        format!("HTTP {status} with an empty body")
    } else {
        format!("HTTP {status}: {text}")
    };
    let doc = serde_json::json!({ "status": status.as_u16(), "detail": detail });
    http_body_util::Full::new(Bytes::from(doc.to_string()))
}

/// The problem for an error answer to newNonce (a HEAD, so without a body): the status, with
/// the kind a 429 (`rateLimited`) or a 5xx (`serverInternal`) means.
fn nonce_problem(
    status: StatusCode,
    url: &str,
) -> Result<instant_acme::Error, instant_acme::Error> {
    let kind = match status.as_u16() {
        429 => Some("urn:ietf:params:acme:error:rateLimited"),
        500..=599 => Some("urn:ietf:params:acme:error:serverInternal"),
        _ => None,
    };
    let doc = serde_json::json!({
        "type": kind,
        "status": status.as_u16(),
        "detail": format!("newNonce {url} answered HTTP {status}"),
    });
    Ok(instant_acme::Error::Api(serde_json::from_value(doc)?))
}

/// Reads `Retry-After` as seconds or an HTTP date, at most
/// [`crate::state::RETRY_AFTER_MAX`] from now: a CA is never waited for longer, and an
/// absurd number of seconds cannot overflow the clock. A date in the past is returned as it
/// is; whoever waits for it does not wait.
pub(crate) fn retry_after(value: Option<&http::HeaderValue>) -> Option<SystemTime> {
    let value = value?.to_str().ok()?.trim();
    let now = SystemTime::now();
    let latest = now + crate::state::RETRY_AFTER_MAX;
    if let Ok(secs) = value.parse::<u64>() {
        let asked = Duration::from_secs(secs).min(crate::state::RETRY_AFTER_MAX);
        return Some(now + asked);
    }
    httpdate::parse_http_date(value)
        .ok()
        .map(|at| at.min(latest))
}

/// The request never got an answer: connection refused, DNS, TLS, timeout.
#[derive(Debug)]
pub(crate) struct Transport {
    pub(crate) url: String,
    pub(crate) reason: String,
}

impl Transport {
    fn timed_out(url: &str, after: Duration) -> Transport {
        Transport {
            url: url.to_owned(),
            reason: format!("no answer within {}", crate::text::seconds(after)),
        }
    }

    fn from_error(url: &str, err: &(dyn StdError + 'static)) -> Transport {
        // hyper's own message is terse ("client error (Connect)"); the cause chain says what
        // happened (connection refused, certificate not trusted).
        let mut reason = err.to_string();
        let mut source = err.source();
        while let Some(e) = source {
            let text = e.to_string();
            if !reason.contains(&text) {
                reason.push_str(": ");
                reason.push_str(&text);
            }
            source = e.source();
        }
        Transport {
            url: url.to_owned(),
            reason,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.url, self.reason)
    }
}

impl StdError for Transport {}

/// An answer longer than certkeeper reads ([`MAX_ANSWER`]): no ACME answer is that long, and
/// asking again gets the same, so it is not retried.
#[derive(Debug)]
pub(crate) struct TooLarge {
    pub(crate) url: String,
    pub(crate) limit: usize,
}

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the answer from {} is larger than {} KiB",
            self.url,
            self.limit / 1024
        )
    }
}

impl StdError for TooLarge {}

impl From<TooLarge> for instant_acme::Error {
    fn from(t: TooLarge) -> Self {
        instant_acme::Error::Other(Box::new(t))
    }
}

impl From<Transport> for instant_acme::Error {
    fn from(t: Transport) -> Self {
        instant_acme::Error::Other(Box::new(t))
    }
}

/// A CA answered with a redirect, which ACME never needs: not followed, not retried.
#[derive(Debug)]
pub(crate) struct Redirected {
    /// The URL asked.
    pub(crate) url: String,
    /// The 3xx status.
    pub(crate) status: StatusCode,
    /// The host of its `Location` (never its path or query), when it has one.
    pub(crate) host: Option<String>,
}

impl Redirected {
    fn new(url: &str, status: StatusCode, headers: &http::HeaderMap) -> Redirected {
        let host = reqwest::Url::parse(url)
            .ok()
            .and_then(|from| {
                certkeeper_dns::http::redirect_host(&from, headers.get(http::header::LOCATION))
            })
            .map(|host| crate::text::escape_control(&host));
        Redirected {
            url: url.to_owned(),
            status,
            host,
        }
    }
}

impl fmt::Display for Redirected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.status.as_u16();
        match &self.host {
            Some(host) => write!(
                f,
                "{}: HTTP {status} redirect to {host}, not followed: ACME needs no redirects; check the issuer's directory URL",
                self.url
            ),
            None => write!(
                f,
                "{}: HTTP {status} redirect, not followed: ACME needs no redirects; check the issuer's directory URL",
                self.url
            ),
        }
    }
}

impl StdError for Redirected {}

impl From<Redirected> for instant_acme::Error {
    fn from(r: Redirected) -> Self {
        instant_acme::Error::Other(Box::new(r))
    }
}

/// The largest answer read from a CA: 1 MiB (a certificate chain is a few KiB).
const MAX_ANSWER: usize = 1024 * 1024;

/// How much of a non-JSON error body is kept as evidence.
const MAX_BODY_EVIDENCE: usize = 512;

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped like Pebble 2.10.1's authorization: the names are kept by challenge URL, only
    /// inside a scope.
    #[tokio::test]
    async fn issuer_domain_names_of_dns_persist_01_are_read_from_the_raw_authorization() {
        let body = br#"{"status":"pending","identifier":{"type":"dns","value":"example.com"},
            "challenges":[{"type":"dns-01","url":"https://ca/chal/1","token":"t","status":"pending"},
            {"type":"dns-persist-01","url":"https://ca/chal/2","status":"pending",
             "issuer-domain-names":["Pebble.LetsEncrypt.org."],"accounturi":"https://ca/acct/1"}],
            "wildcard":true}"#;
        let ((), seen) = persist_issuers(async { note_persist_issuers(body) }).await;
        assert_eq!(
            seen,
            HashMap::from([(
                "https://ca/chal/2".to_owned(),
                vec!["pebble.letsencrypt.org".to_owned()]
            )])
        );
        // Outside a scope nothing is kept (and nothing fails).
        note_persist_issuers(body);
        let ((), seen) = persist_issuers(async {}).await;
        assert!(seen.is_empty());
    }

    #[test]
    fn html_error_pages_become_problem_documents() {
        let body = problem_body(
            StatusCode::BAD_GATEWAY,
            &Bytes::from_static(b"<html>bad gateway</html>\n"),
        );
        let bytes = futures_bytes(body);
        let problem: instant_acme::Problem = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(problem.status, Some(502));
        assert_eq!(
            problem.detail.as_deref(),
            Some("HTTP 502 Bad Gateway: <html>bad gateway</html>")
        );
    }

    #[test]
    fn problem_documents_are_kept() {
        let doc = br#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"slow down","status":429}"#;
        let bytes = futures_bytes(problem_body(
            StatusCode::TOO_MANY_REQUESTS,
            &Bytes::from_static(doc),
        ));
        assert_eq!(&bytes[..], &doc[..]);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::now();
        let at = retry_after(Some(&http::HeaderValue::from_static("30"))).unwrap();
        let d = at.duration_since(now).unwrap();
        assert!(
            d >= Duration::from_secs(29) && d <= Duration::from_secs(31),
            "{d:?}"
        );
        let at = retry_after(Some(&http::HeaderValue::from_static(
            "Wed, 21 Oct 2015 07:28:00 GMT",
        )))
        .unwrap();
        assert_eq!(
            at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_445_412_480
        );
        assert_eq!(
            retry_after(Some(&http::HeaderValue::from_static("soon"))),
            None
        );
        assert_eq!(retry_after(None), None);
        // Absurd values are cut to the longest wait, never an overflow.
        for absurd in ["18446744073709551615", "Fri, 31 Dec 9999 23:59:59 GMT"] {
            let at = retry_after(Some(&http::HeaderValue::from_static(absurd))).unwrap();
            let d = at.duration_since(now).unwrap();
            assert!(
                d <= crate::state::RETRY_AFTER_MAX + Duration::from_secs(1),
                "{absurd}: {d:?}"
            );
        }
    }

    /// A loopback HTTP/1.1 server that counts requests in progress: each answer is sent in
    /// two parts with a pause between them, and a request counts as over only just before its
    /// last part, so a client that starts a request before the previous body is read shows up
    /// as two at once. `stall` leaves every body unfinished instead.
    async fn counting_server(
        stall: bool,
    ) -> (
        String,
        Arc<std::sync::atomic::AtomicUsize>,
        Arc<std::sync::atomic::AtomicUsize>,
    ) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (n, m) = (Arc::clone(&now), Arc::clone(&most));
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let (now, most) = (Arc::clone(&n), Arc::clone(&m));
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    let at_once = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(at_once, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let head =
                        "HTTP/1.1 200 OK\r\ncontent-length: 10\r\nconnection: close\r\n\r\nhello";
                    let _ = conn.write_all(head.as_bytes()).await;
                    let _ = conn.flush().await;
                    tokio::time::sleep(Duration::from_millis(if stall { 5_000 } else { 20 })).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    let _ = conn.write_all(b"world").await;
                });
            }
        });
        (url, now, most)
    }

    fn get_request(url: &str) -> Request<BodyWrapper<Bytes>> {
        Request::get(url).body(BodyWrapper::default()).unwrap()
    }

    #[tokio::test]
    async fn with_max_concurrent_requests_1_requests_go_one_at_a_time() {
        let (url, _, most) = counting_server(false).await;
        // Two clients, as two issuers using the same CA have: they share the server's gate.
        let one = Http::new(&[], Duration::from_secs(5), Duration::from_secs(5), Some(1)).unwrap();
        let two = Http::new(&[], Duration::from_secs(5), Duration::from_secs(5), Some(1)).unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let http = if i % 2 == 0 { one.clone() } else { two.clone() };
                let req = get_request(&url);
                tokio::spawn(async move {
                    let mut rsp = http.request(req).await.unwrap();
                    rsp.body.into_bytes().await.unwrap()
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(&task.await.unwrap()[..], b"helloworld");
        }
        assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_stalled_body_times_out_and_frees_the_gate() {
        let (url, _, _) = counting_server(true).await;
        let http = Http::new(
            &[],
            Duration::from_secs(5),
            Duration::from_millis(300),
            Some(1),
        )
        .unwrap();
        let err = http.request(get_request(&url)).await.err().unwrap();
        assert!(err.to_string().contains("no answer within 0.3s"), "{err}");
        // The gate was released: the next request is answered by the same rule, not stuck
        // (a bound 100 times the timeout, so that only a stuck gate reaches it).
        let err = tokio::time::timeout(Duration::from_secs(30), http.request(get_request(&url)))
            .await
            .expect("the gate was not released")
            .err()
            .unwrap();
        assert!(err.to_string().contains("no answer within"), "{err}");
    }

    /// A loopback HTTP/1.1 server answering each request with `answer(n)` (n counts from 0)
    /// and recording when each arrived and with which User-Agent.
    async fn scripted_server(
        answer: fn(usize) -> &'static str,
    ) -> (String, Arc<Mutex<Vec<(std::time::Instant, String)>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                    let agent = head
                        .lines()
                        .find_map(|l| l.strip_prefix("user-agent:"))
                        .unwrap_or_default()
                        .trim()
                        .to_owned();
                    let n = {
                        let mut log = log.lock().unwrap();
                        log.push((std::time::Instant::now(), agent));
                        log.len() - 1
                    };
                    let _ = conn.write_all(answer(n).as_bytes()).await;
                });
            }
        });
        (url, seen)
    }

    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";

    #[tokio::test]
    async fn every_request_names_certkeeper_in_its_user_agent() {
        let (url, seen) = scripted_server(|_| OK).await;
        let http = Http::new(&[], Duration::from_secs(5), Duration::from_secs(5), None).unwrap();
        http.get(&url).await.unwrap();
        // A request that names its library keeps it after certkeeper's name.
        let mut req = get_request(&url);
        req.headers_mut().insert(
            USER_AGENT_HEADER,
            http::HeaderValue::from_static("instant-acme/0.8.5"),
        );
        http.request(req).await.unwrap();
        let seen = seen.lock().unwrap();
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(seen[0].1, format!("certkeeper/{version} hyper/1"));
        assert_eq!(
            seen[1].1,
            format!("certkeeper/{version} instant-acme/0.8.5")
        );
    }

    #[tokio::test]
    async fn a_redirect_is_an_error_naming_its_status_and_host_never_followed() {
        macro_rules! moved {
            ($status:literal) => {
                concat!(
                    "HTTP/1.1 ",
                    $status,
                    " Moved\r\nlocation: http://127.0.0.1:9/elsewhere?x=LOCQUERY\r\n",
                    "content-length: 0\r\nconnection: close\r\n\r\n"
                )
            };
        }
        type Answer = fn(usize) -> &'static str;
        let answers: [(&str, Answer); 5] = [
            ("301", |_| moved!("301")),
            ("302", |_| moved!("302")),
            ("303", |_| moved!("303")),
            ("307", |_| moved!("307")),
            ("308", |_| moved!("308")),
        ];
        for (status, answer) in answers {
            let (url, seen) = scripted_server(answer).await;
            let http =
                Http::new(&[], Duration::from_secs(5), Duration::from_secs(5), None).unwrap();
            let mut req = get_request(&url);
            *req.method_mut() = http::Method::POST;
            let err = http.request(req).await.err().expect("a 3xx is an error");
            assert_eq!(
                err.to_string(),
                format!(
                    "{url}: HTTP {status} redirect to 127.0.0.1, not followed: ACME needs no redirects; check the issuer's directory URL"
                )
            );
            assert!(!super::super::retry::is_transient(&err), "{err}");
            assert_eq!(seen.lock().unwrap().len(), 1);
        }
    }

    #[tokio::test]
    async fn a_429_with_retry_after_pauses_every_request_to_that_ca() {
        let (url, seen) = scripted_server(|n| match n {
            0 => "HTTP/1.1 429 Too Many Requests\r\nretry-after: 2\r\ncontent-type: application/problem+json\r\ncontent-length: 62\r\nconnection: close\r\n\r\n{\"type\":\"urn:ietf:params:acme:error:rateLimited\",\"status\":429}",
            _ => OK,
        })
        .await;
        let http = Http::new(&[], Duration::from_secs(5), Duration::from_secs(5), None).unwrap();
        let first = http.request(get_request(&url)).await.unwrap();
        assert_eq!(first.parts.status, StatusCode::TOO_MANY_REQUESTS);
        let paused_at = std::time::Instant::now();
        // Four other tasks talking to the same CA: none of them is sent during the pause.
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let http = http.clone();
                let req = get_request(&url);
                tokio::spawn(async move { http.request(req).await.unwrap().parts.status })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), StatusCode::OK);
        }
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 5);
        let in_pause = seen[1..]
            .iter()
            .filter(|(at, _)| at.duration_since(paused_at) < Duration::from_millis(900))
            .count();
        assert_eq!(in_pause, 0, "requests were sent during the CA's pause");
    }

    #[tokio::test]
    async fn a_long_pause_fails_requests_at_once_as_rate_limited() {
        let (url, seen) = scripted_server(|n| match n {
            0 => "HTTP/1.1 503 Service Unavailable\r\nretry-after: 3600\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            _ => OK,
        })
        .await;
        let http = Http::new(&[], Duration::from_secs(5), Duration::from_secs(5), None).unwrap();
        let first = http.request(get_request(&url)).await.unwrap();
        assert_eq!(first.parts.status, StatusCode::SERVICE_UNAVAILABLE);
        let started = std::time::Instant::now();
        let (second, asked) = super::super::retry::attempt(http.request(get_request(&url))).await;
        let mut second = second.unwrap();
        // At once: far below the CA's hour (the count of requests below is the proof).
        assert!(started.elapsed() < Duration::from_secs(60));
        assert_eq!(second.parts.status, StatusCode::TOO_MANY_REQUESTS);
        let body = second.body.into_bytes().await.unwrap();
        let problem: instant_acme::Problem = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            problem.r#type.as_deref(),
            Some("urn:ietf:params:acme:error:rateLimited")
        );
        // The CA's time travels with it, for the certificate's backoff.
        let until = asked.unwrap().duration_since(SystemTime::now()).unwrap();
        assert!(until > Duration::from_secs(3500), "{until:?}");
        assert_eq!(seen.lock().unwrap().len(), 1, "the request was sent anyway");
    }

    #[tokio::test]
    async fn without_a_limit_requests_to_one_ca_overlap() {
        let (url, _, most) = counting_server(false).await;
        let http = Http::new(&[], Duration::from_secs(5), Duration::from_secs(5), None).unwrap();
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let http = http.clone();
                let req = get_request(&url);
                tokio::spawn(async move {
                    let mut rsp = http.request(req).await.unwrap();
                    rsp.body.into_bytes().await.unwrap()
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(&task.await.unwrap()[..], b"helloworld");
        }
        assert!(most.load(std::sync::atomic::Ordering::SeqCst) > 1);
    }

    fn futures_bytes(body: http_body_util::Full<Bytes>) -> Bytes {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            http_body_util::BodyExt::collect(body)
                .await
                .unwrap()
                .to_bytes()
        })
    }
}
