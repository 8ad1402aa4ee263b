//! A loopback ACME server (RFC 8555) shaped like a current public CA, for what Pebble 2.4
//! lacks: renewal information (RFC 9773), profiles (the ACME profiles draft: `meta.profiles`
//! in the directory, `profile` in newOrder and in the order), orders that say what they
//! `replace`, rate limits and a required User-Agent, each switchable while it runs.
//!
//! It speaks plain HTTP on 127.0.0.1 through the test [`Server`] and keeps everything in
//! memory:
//!
//! - Every answer carries a fresh `Replay-Nonce`, `Cache-Control: no-store` and the
//!   directory as `Link: rel="index"`; errors are `application/problem+json` documents of type
//!   `urn:ietf:params:acme:error:*`. Like Let's Encrypt's, the directory holds one random key
//!   so that clients do not depend on its exact contents.
//! - Without a `User-Agent` (RFC 8555 §6.1) a request is answered 400 `malformed`, as current
//!   CAs do ([`Behaviour::require_user_agent`]).
//! - POSTs are flattened JWS (`application/jose+json`): the protected header's `url` must be
//!   the request URL, a `nonce` must be present (and, with [`Behaviour::check_nonces`], one
//!   this server issued and nobody used yet), `kid` must name a valid account, and `jwk` is
//!   taken only by newAccount and revokeCert. Signatures are not verified. An empty payload is
//!   a POST-as-GET.
//! - Authorizations are valid as soon as they exist (as when a CA reuses them), so an order is
//!   `ready` at once and no challenge is needed. Finalize checks the CSR (its signature, and
//!   names equal to the order's) and issues a leaf for its key from an intermediate under a
//!   root made at start ([`FakeAcme::root_pem`]); the certificate URL serves leaf and
//!   intermediate as `application/pem-certificate-chain`.
//! - ARI: `GET <renewalInfo>/<certID>` (certID: base64url of the leaf's AKI keyIdentifier,
//!   ".", base64url of its DER serial, RFC 9773 §4.1) answers the certificate's window (by
//!   default the last third of its lifetime; past for a revoked one) with `Retry-After`;
//!   an unknown certID is 404. `replaces` is checked as RFC 9773 §5 asks: a known certificate
//!   of the same account, sharing a name, not already replaced (else 409 `alreadyReplaced`).
//!
//! Everything received is recorded for assertions: every request, every newOrder payload,
//! the renewalInfo GETs and the certificates issued.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use certkeeper_dns::testkit::http::{Request, Response, Server};
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SerialNumber,
};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::fixtures::Pki;

/// The paths the server answers, below [`FakeAcme::url`]. Those ending in `/` take a number.
pub mod path {
    /// The directory.
    pub const DIRECTORY: &str = "/dir";
    /// newNonce (HEAD: 200, GET: 204).
    pub const NEW_NONCE: &str = "/acme/new-nonce";
    /// newAccount.
    pub const NEW_ACCOUNT: &str = "/acme/new-acct";
    /// newOrder.
    pub const NEW_ORDER: &str = "/acme/new-order";
    /// revokeCert.
    pub const REVOKE_CERT: &str = "/acme/revoke-cert";
    /// keyChange.
    pub const KEY_CHANGE: &str = "/acme/key-change";
    /// renewalInfo; a certID follows after `/`.
    pub const RENEWAL_INFO: &str = "/acme/renewal-info";
    /// Accounts; `<n>/orders` lists an account's orders.
    pub const ACCOUNT: &str = "/acme/acct/";
    /// Orders.
    pub const ORDER: &str = "/acme/order/";
    /// Authorizations.
    pub const AUTHZ: &str = "/acme/authz/";
    /// Challenges (one dns-01 challenge per authorization, numbered alike).
    pub const CHALLENGE: &str = "/acme/chall/";
    /// Finalize URLs (numbered as the orders).
    pub const FINALIZE: &str = "/acme/finalize/";
    /// Certificates.
    pub const CERT: &str = "/acme/cert/";
}

/// A running fake CA; it stops when dropped.
pub struct FakeAcme {
    shared: Arc<Shared>,
    server: Server,
}

/// What the CA offers and how strict it is. Change it while running with
/// [`FakeAcme::configure`].
#[derive(Clone, Debug)]
pub struct Behaviour {
    /// Offer ACME Renewal Information: `renewalInfo` in the directory, and `replaces` in
    /// newOrder understood (a CA without ARI ignores the field). On by default.
    pub renewal_info: bool,
    /// Profiles in the directory's `meta.profiles`, by name; none by default (then a
    /// `profile` in newOrder is ignored, as by a CA that does not know the extension).
    pub profiles: BTreeMap<String, Profile>,
    /// Where an accepted `replaces` is reflected; [`Echo::Always`] by default.
    pub echo_replaces: Echo,
    /// Answer requests without a `User-Agent` with 400 `malformed`. On by default.
    pub require_user_agent: bool,
    /// Refuse nonces this server did not issue or that were used already (`badNonce`). Off by
    /// default; a nonce is always required.
    pub check_nonces: bool,
    /// Lifetime of certificates ordered without a profile; [`DEFAULT_VALIDITY`].
    pub validity: Duration,
    /// `Retry-After` of renewalInfo answers; [`DEFAULT_ARI_RETRY_AFTER`].
    pub ari_retry_after: Duration,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            renewal_info: true,
            profiles: BTreeMap::new(),
            echo_replaces: Echo::Always,
            require_user_agent: true,
            check_nonces: false,
            validity: DEFAULT_VALIDITY,
            ari_retry_after: DEFAULT_ARI_RETRY_AFTER,
        }
    }
}

/// One offered profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// What the directory says about it (Let's Encrypt gives a documentation URL).
    pub description: String,
    /// The lifetime of its certificates.
    pub validity: Duration,
}

impl Profile {
    /// A profile described by `description` whose certificates live `validity`.
    pub fn new(description: &str, validity: Duration) -> Profile {
        Profile {
            description: description.to_owned(),
            validity,
        }
    }
}

/// The profiles Let's Encrypt offers: `classic` and `tlsserver` (90 days) and `shortlived`
/// (160 hours).
pub fn lets_encrypt_profiles() -> BTreeMap<String, Profile> {
    let doc = |name: &str| format!("https://letsencrypt.org/docs/profiles#{name}");
    [
        ("classic", DEFAULT_VALIDITY),
        ("shortlived", Duration::from_secs(160 * 3600)),
        ("tlsserver", DEFAULT_VALIDITY),
    ]
    .into_iter()
    .map(|(name, validity)| (name.to_owned(), Profile::new(&doc(name), validity)))
    .collect()
}

/// Where an accepted `replaces` shows in the order object. RFC 9773 §5: the server "MUST
/// reflect that field in the response and in subsequent requests for the corresponding Order
/// object".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Echo {
    /// In the newOrder answer and every later read, as the RFC asks.
    #[default]
    Always,
    /// Only in the newOrder answer (Let's Encrypt in 2025, letsencrypt/boulder#8272).
    NewOrderOnly,
    /// Never: the CA accepts `replaces` but does not say so.
    Never,
}

/// A suggested renewal window (RFC 9773 §4.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Renew no earlier than this.
    pub start: OffsetDateTime,
    /// Renew no later than this.
    pub end: OffsetDateTime,
    /// A page explaining the window, when there is one.
    pub explanation_url: Option<String>,
}

impl Window {
    /// The window from `start` to `end`, without explanation.
    pub fn new(start: OffsetDateTime, end: OffsetDateTime) -> Window {
        Window {
            start,
            end,
            explanation_url: None,
        }
    }

    /// The default: the last third of the certificate's lifetime.
    pub fn last_third(cert: &IssuedCert) -> Window {
        let lifetime = cert.not_after - cert.not_before;
        Window::new(cert.not_after - lifetime / 3, cert.not_after)
    }

    /// A window that closed an hour ago: renew now (what a CA says after an incident or a
    /// revocation).
    pub fn passed() -> Window {
        let now = OffsetDateTime::now_utc();
        Window::new(
            now - time::Duration::hours(2),
            now - time::Duration::hours(1),
        )
    }
}

/// A certificate the fake issued.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    /// Its ARI certID ([`cert_id`]).
    pub cert_id: String,
    /// The content bytes of its DER serial number.
    pub serial: Vec<u8>,
    /// Its names, as ordered.
    pub names: Vec<String>,
    /// notBefore (backdated an hour, as Let's Encrypt does).
    pub not_before: OffsetDateTime,
    /// notAfter.
    pub not_after: OffsetDateTime,
    /// The leaf, DER.
    pub der: Vec<u8>,
    /// Leaf and intermediate, PEM: what the certificate URL serves.
    pub fullchain_pem: String,
    /// The profile it was ordered with, when the CA offered that profile.
    pub profile: Option<String>,
    /// The certID its order replaces, when the CA accepted one.
    pub replaces: Option<String>,
    /// Its order's URL.
    pub order_url: String,
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// `GET`, `HEAD`, `POST`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The `User-Agent` header, when there was one.
    pub user_agent: Option<String>,
    /// When it arrived.
    pub at: SystemTime,
    /// The status answered.
    pub status: u16,
}

/// One newOrder payload as received (with an acceptable JWS), and the status answered, also
/// when refused or rate-limited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewOrderRecord {
    /// The identifiers' values, in order.
    pub identifiers: Vec<String>,
    /// `profile`, when sent.
    pub profile: Option<String>,
    /// `replaces`, when sent.
    pub replaces: Option<String>,
    /// The status answered.
    pub status: u16,
}

impl FakeAcme {
    /// Starts with [`Behaviour::default`]: ARI on, no profiles, User-Agent required.
    pub fn start() -> FakeAcme {
        Self::start_with(Behaviour::default())
    }

    /// Starts with `behaviour`.
    pub fn start_with(behaviour: Behaviour) -> FakeAcme {
        let shared = Arc::new(Shared {
            base: OnceLock::new(),
            pki: Pki::new("Fake ACME"),
            state: Mutex::new(State::new(behaviour)),
        });
        let handler = Arc::clone(&shared);
        let server = Server::start(move |req| handler.handle(req));
        // Nothing can have asked yet: the URL was not known outside before this line.
        let _ = shared.base.set(server.url());
        FakeAcme { shared, server }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The directory URL, what an issuer's `directory` is set to.
    pub fn directory_url(&self) -> String {
        format!("{}{}", self.url(), path::DIRECTORY)
    }

    /// The root every issued chain leads to (PEM).
    pub fn root_pem(&self) -> String {
        self.shared.pki.root_pem()
    }

    /// The intermediate that signs the leaves (PEM).
    pub fn intermediate_pem(&self) -> String {
        self.shared.pki.intermediate.pem()
    }

    /// Writes [`FakeAcme::root_pem`] to `path` (for an issuer's `trust_roots`) and returns it.
    pub fn write_root(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir for the root");
        }
        std::fs::write(path, self.root_pem()).expect("write the root");
        path.to_owned()
    }

    /// The current behaviour.
    pub fn behaviour(&self) -> Behaviour {
        self.shared.lock().behaviour.clone()
    }

    /// Changes the behaviour; requests after this call see the change.
    pub fn configure(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut self.shared.lock().behaviour);
    }

    /// Answers the next `count` newOrders that carry `replaces` with 409 `alreadyReplaced`
    /// (when the CA offers ARI).
    pub fn reject_next_replaces(&self, count: u32) {
        self.shared.lock().already_replaced += count;
    }

    /// Answers the next `count` requests whose path starts with `path_prefix` with 429
    /// `rateLimited` and `Retry-After` (whole seconds, rounded up). POSTs are checked after
    /// their JWS, so their nonce is used up, as at a real CA.
    pub fn rate_limit(&self, path_prefix: &str, count: u32, retry_after: Duration) {
        self.shared.lock().rate_limits.push(RateLimit {
            prefix: path_prefix.to_owned(),
            remaining: count,
            retry_after,
            refusal: None,
            unavailable: None,
        });
    }

    /// Answers the next `count` requests whose path starts with `path_prefix` with a problem
    /// document of `status` and `kind` (`unauthorized`, ...), checked like
    /// [`FakeAcme::rate_limit`] but without `Retry-After`.
    pub fn refuse(&self, path_prefix: &str, count: u32, status: u16, kind: &str) {
        self.shared.lock().rate_limits.push(RateLimit {
            prefix: path_prefix.to_owned(),
            remaining: count,
            retry_after: Duration::ZERO,
            refusal: Some((status, kind.to_owned())),
            unavailable: None,
        });
    }

    /// Answers the next `count` requests whose path starts with `path_prefix` with `status`
    /// and `Retry-After: retry_after` (sent as given: seconds or an HTTP date), as a CA in
    /// maintenance or the proxy in front of it does; the body is a problem document of
    /// `kind` when given, else an HTML page. Checked like [`FakeAcme::rate_limit`].
    pub fn unavailable(
        &self,
        path_prefix: &str,
        count: u32,
        status: u16,
        kind: Option<&str>,
        retry_after: &str,
    ) {
        self.shared.lock().rate_limits.push(RateLimit {
            prefix: path_prefix.to_owned(),
            remaining: count,
            retry_after: Duration::ZERO,
            refusal: None,
            unavailable: Some(Unavailable {
                status,
                kind: kind.map(str::to_owned),
                retry_after: retry_after.to_owned(),
            }),
        });
    }

    /// Answers the next `count` requests whose path starts with `path_prefix` with 200 and a
    /// body of `size` bytes (a JSON string), as a broken proxy or a hostile server might.
    pub fn oversize(&self, path_prefix: &str, count: u32, size: usize) {
        self.shared.lock().oversized.push(Oversized {
            prefix: path_prefix.to_owned(),
            remaining: count,
            size,
        });
    }

    /// [`FakeAcme::rate_limit`] of the next `count` newOrders.
    pub fn rate_limit_new_orders(&self, count: u32, retry_after: Duration) {
        self.rate_limit(path::NEW_ORDER, count, retry_after);
    }

    /// Sets the renewal window of the certificate with ARI certID `cert_id`.
    pub fn set_window(&self, cert_id: &str, window: Window) {
        self.shared
            .lock()
            .windows
            .insert(cert_id.to_owned(), window);
    }

    /// Computes the window of every certificate without one set by [`FakeAcme::set_window`].
    pub fn set_window_fn(&self, window: impl Fn(&IssuedCert) -> Window + Send + Sync + 'static) {
        self.shared.lock().window_fn = Some(Arc::new(window));
    }

    /// Every request so far, in order of arrival.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Every newOrder payload so far, refused and rate-limited ones included.
    pub fn new_orders(&self) -> Vec<NewOrderRecord> {
        self.shared.lock().new_orders.clone()
    }

    /// How many times renewalInfo was asked (whatever the answer).
    pub fn renewal_info_gets(&self) -> usize {
        self.shared.lock().renewal_info_gets
    }

    /// The certificates issued so far, oldest first.
    pub fn issued(&self) -> Vec<IssuedCert> {
        self.shared
            .lock()
            .certs
            .iter()
            .map(|c| c.issued.clone())
            .collect()
    }
}

/// The ARI certID of a certificate (RFC 9773 §4.1): base64url (unpadded) of the
/// keyIdentifier of its Authority Key Identifier, ".", base64url of the content bytes of its
/// DER serial number. `None` when it does not parse or has no AKI keyIdentifier.
pub fn cert_id(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let aki = cert
        .iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref(),
            _ => None,
        })?;
    Some(format!(
        "{}.{}",
        B64.encode(aki.0),
        B64.encode(cert.tbs_certificate.raw_serial())
    ))
}

// --- the server's state

type WindowFn = Arc<dyn Fn(&IssuedCert) -> Window + Send + Sync>;

struct Shared {
    base: OnceLock<String>,
    pki: Pki,
    state: Mutex<State>,
}

struct State {
    behaviour: Behaviour,
    already_replaced: u32,
    rate_limits: Vec<RateLimit>,
    oversized: Vec<Oversized>,
    windows: HashMap<String, Window>,
    window_fn: Option<WindowFn>,
    directory_noise: String,
    nonces: HashSet<String>,
    // Numbered from 1 in URLs: entry n - 1.
    accounts: Vec<Account>,
    orders: Vec<Order>,
    authzs: Vec<Authz>,
    certs: Vec<CertRecord>,
    requests: Vec<RecordedRequest>,
    new_orders: Vec<NewOrderRecord>,
    renewal_info_gets: usize,
}

struct Oversized {
    prefix: String,
    remaining: u32,
    size: usize,
}

struct RateLimit {
    prefix: String,
    remaining: u32,
    retry_after: Duration,
    /// Answered instead of `rateLimited`: (status, problem type), no `Retry-After`.
    refusal: Option<(u16, String)>,
    /// Answered instead of `rateLimited`: [`FakeAcme::unavailable`].
    unavailable: Option<Unavailable>,
}

#[derive(Clone)]
struct Unavailable {
    status: u16,
    kind: Option<String>,
    retry_after: String,
}

struct Account {
    jwk: Value,
    contact: Vec<String>,
    deactivated: bool,
}

struct Order {
    account: usize,
    names: Vec<String>,
    authzs: Vec<usize>,
    profile: Option<String>,
    replaces: Option<String>,
    cert: Option<usize>,
    expires: OffsetDateTime,
}

struct Authz {
    order: usize,
    name: String,
    token: String,
    validated: OffsetDateTime,
    deactivated: bool,
}

struct CertRecord {
    issued: IssuedCert,
    account: usize,
    replaced_by: Option<usize>,
    revoked: bool,
}

impl State {
    fn new(behaviour: Behaviour) -> State {
        State {
            behaviour,
            already_replaced: 0,
            rate_limits: Vec::new(),
            oversized: Vec::new(),
            windows: HashMap::new(),
            window_fn: None,
            directory_noise: hex::encode(random::<6>()),
            nonces: HashSet::new(),
            accounts: Vec::new(),
            orders: Vec::new(),
            authzs: Vec::new(),
            certs: Vec::new(),
            requests: Vec::new(),
            new_orders: Vec::new(),
            renewal_info_gets: 0,
        }
    }

    fn fresh_nonce(&mut self) -> String {
        let nonce = B64.encode(random::<16>());
        self.nonces.insert(nonce.clone());
        nonce
    }

    fn order_status(&self, n: usize) -> &'static str {
        let order = &self.orders[n - 1];
        if order.cert.is_some() {
            "valid"
        } else if order.authzs.iter().any(|&a| self.authzs[a - 1].deactivated) {
            "invalid"
        } else {
            "ready"
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock leaves whole values behind.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn handle(&self, req: &Request) -> Response {
        let at = SystemTime::now();
        let base = self.base.get().map_or("", String::as_str);
        let mut state = self.lock();
        let mut ctx = Ctx {
            st: &mut state,
            pki: &self.pki,
            base,
            req,
        };
        let mut response = match ctx.route() {
            Ok(r) | Err(r) => r,
        };
        if req.method == "HEAD" {
            response.body.clear();
        }
        let nonce = state.fresh_nonce();
        state.requests.push(RecordedRequest {
            method: req.method.clone(),
            path: req.path.clone(),
            user_agent: req.header("user-agent").map(str::to_owned),
            at,
            status: response.status,
        });
        response
            .with_header("Replay-Nonce", &nonce)
            .with_header("Cache-Control", "no-store")
            .with_header(
                "Link",
                &format!("<{base}{}>;rel=\"index\"", path::DIRECTORY),
            )
    }
}

// --- answering one request

/// A request being answered; `Err` carries an early answer (a problem document).
struct Ctx<'a> {
    st: &'a mut State,
    pki: &'a Pki,
    base: &'a str,
    req: &'a Request,
}

type Answer = Result<Response, Response>;

/// A POST's JWS, checked.
struct Jws {
    key: JwsKey,
    url: String,
    /// `None` for POST-as-GET.
    payload: Option<Value>,
}

enum JwsKey {
    Jwk(Value),
    Account(usize),
}

impl Jws {
    fn account(&self) -> Result<usize, Response> {
        match self.key {
            JwsKey::Account(n) => Ok(n),
            JwsKey::Jwk(_) => Err(malformed(
                "this request must be signed with the account's kid, not a jwk",
            )),
        }
    }

    fn object(&self) -> Result<&Map<String, Value>, Response> {
        self.payload
            .as_ref()
            .and_then(Value::as_object)
            .ok_or_else(|| malformed("the request payload must be a JSON object"))
    }

    fn post_as_get(&self) -> Result<(), Response> {
        match &self.payload {
            None => Ok(()),
            Some(_) => Err(malformed(
                "this resource takes POST-as-GET only: the payload must be empty",
            )),
        }
    }
}

impl Ctx<'_> {
    fn route(&mut self) -> Answer {
        let req = self.req;
        if self.st.behaviour.require_user_agent
            && req
                .header("user-agent")
                .is_none_or(|ua| ua.trim().is_empty())
        {
            return Err(malformed("All requests MUST include a User-Agent header"));
        }
        let jws = match req.method.as_str() {
            "POST" => Some(self.jws()?),
            _ => None,
        };
        // A newOrder is recorded whatever it is answered, rate limit included.
        let record = jws
            .as_ref()
            .filter(|_| req.path == path::NEW_ORDER)
            .and_then(|jws| jws.payload.as_ref())
            .map(new_order_record);
        let path = req.path.as_str();
        let answer = self
            .rate_limit()
            .and_then(|()| self.oversized())
            .and_then(|()| match (req.method.as_str(), &jws) {
                ("GET" | "HEAD", _) => self.get(path),
                ("POST", Some(jws)) => self.post(path, jws),
                _ => Err(method_not_allowed()),
            });
        if let Some(mut record) = record {
            record.status = match &answer {
                Ok(r) | Err(r) => r.status,
            };
            self.st.new_orders.push(record);
        }
        answer
    }

    fn get(&mut self, path: &str) -> Answer {
        if path == path::DIRECTORY {
            return Ok(self.directory());
        }
        if path == path::NEW_NONCE {
            // RFC 8555 §7.2: 200 for HEAD, 204 for GET.
            let status = if self.req.method == "HEAD" { 200 } else { 204 };
            return Ok(empty(status));
        }
        if let Some(id) = path
            .strip_prefix(path::RENEWAL_INFO)
            .and_then(|rest| rest.strip_prefix('/'))
            && self.st.behaviour.renewal_info
        {
            return self.renewal_info(id);
        }
        if path.starts_with("/acme/") && !path.starts_with(path::RENEWAL_INFO) {
            // RFC 8555 §6.3: everything but the directory and newNonce is POST (-as-GET).
            return Err(method_not_allowed());
        }
        Err(not_found())
    }

    fn post(&mut self, path: &str, jws: &Jws) -> Answer {
        match path {
            path::NEW_ACCOUNT => return self.new_account(jws),
            path::NEW_ORDER => return self.new_order(jws),
            path::REVOKE_CERT => return self.revoke(jws),
            path::KEY_CHANGE => return self.key_change(jws),
            _ => {}
        }
        if let Some(n) = path
            .strip_suffix("/orders")
            .and_then(|p| number(p, path::ACCOUNT, self.st.accounts.len()))
        {
            return self.account_orders(n, jws);
        }
        if let Some(n) = number(path, path::ACCOUNT, self.st.accounts.len()) {
            return self.account(n, jws);
        }
        if let Some(n) = number(path, path::ORDER, self.st.orders.len()) {
            return self.order(n, jws);
        }
        if let Some(n) = number(path, path::FINALIZE, self.st.orders.len()) {
            return self.finalize(n, jws);
        }
        if let Some(n) = number(path, path::AUTHZ, self.st.authzs.len()) {
            return self.authz(n, jws);
        }
        if let Some(n) = number(path, path::CHALLENGE, self.st.authzs.len()) {
            return self.challenge(n, jws);
        }
        if let Some(n) = number(path, path::CERT, self.st.certs.len()) {
            return self.certificate(n, jws);
        }
        Err(not_found())
    }

    /// Parses and checks the flattened JWS of a POST (RFC 8555 §6.2, §6.4, §6.5).
    fn jws(&mut self) -> Result<Jws, Response> {
        let req = self.req;
        let content_type = req.header("content-type").unwrap_or_default();
        let media_type = content_type.split(';').next().unwrap_or_default().trim();
        if !media_type.eq_ignore_ascii_case(JOSE_JSON) {
            return Err(problem(
                415,
                "malformed",
                "Invalid Content-Type header on POST. Content-Type must be \"application/jose+json\"",
            ));
        }
        let body: Value =
            serde_json::from_slice(&req.body).map_err(|_| malformed("Parse error reading JWS"))?;
        if body.get("signatures").is_some() {
            return Err(malformed(
                "JWS General Serialization is not allowed: use the flattened form",
            ));
        }
        let field = |name: &str| body.get(name).and_then(Value::as_str);
        let (Some(protected), Some(payload), Some(signature)) =
            (field("protected"), field("payload"), field("signature"))
        else {
            return Err(malformed(
                "JWS must have the members protected, payload and signature",
            ));
        };
        let header = decode_json(protected)
            .filter(Value::is_object)
            .ok_or_else(|| malformed("JWS protected header is not base64url JSON"))?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !SIGNATURE_ALGORITHMS.contains(&alg) {
            let doc = json!({
                "type": format!("{ACME_ERROR}badSignatureAlgorithm"),
                "detail": format!("JWS signature algorithm {alg:?} is not supported"),
                "status": 400,
                "algorithms": SIGNATURE_ALGORITHMS,
            });
            return Err(problem_doc(400, &doc));
        }
        if signature.is_empty() || B64.decode(signature).is_err() {
            return Err(malformed("JWS signature is not base64url"));
        }
        let expected = format!("{}{}", self.base, req.target);
        match header.get("url").and_then(Value::as_str) {
            Some(url) if url == expected => {}
            Some(url) => {
                return Err(malformed(&format!(
                    "JWS header parameter 'url' incorrect. Expected {expected:?}, got {url:?}"
                )));
            }
            None => return Err(malformed("JWS header parameter 'url' required")),
        }
        let Some(nonce) = header.get("nonce").and_then(Value::as_str) else {
            return Err(problem(400, "badNonce", "JWS has no anti-replay nonce"));
        };
        if self.st.behaviour.check_nonces && !self.st.nonces.remove(nonce) {
            return Err(problem(
                400,
                "badNonce",
                &format!("JWS has an invalid anti-replay nonce: {nonce:?}"),
            ));
        }
        let key = match (header.get("jwk"), header.get("kid")) {
            (Some(jwk), None) if jwk.is_object() => JwsKey::Jwk(jwk.clone()),
            (None, Some(Value::String(kid))) => JwsKey::Account(self.account_of(kid)?),
            (Some(_), Some(_)) => {
                return Err(malformed(
                    "jwk and kid header fields are mutually exclusive",
                ));
            }
            _ => return Err(malformed("JWS has neither a usable jwk nor a kid")),
        };
        let payload = match payload {
            "" => None,
            text => Some(
                decode_json(text)
                    .ok_or_else(|| malformed("Request payload did not parse as JSON"))?,
            ),
        };
        Ok(Jws {
            key,
            url: expected,
            payload,
        })
    }

    /// The account a `kid` names; it must exist and be valid.
    fn account_of(&self, kid: &str) -> Result<usize, Response> {
        let n = kid
            .strip_prefix(self.base)
            .and_then(|p| number(p, path::ACCOUNT, self.st.accounts.len()))
            .ok_or_else(|| {
                problem(
                    400,
                    "accountDoesNotExist",
                    &format!("Account {kid:?} not found"),
                )
            })?;
        if self.st.accounts[n - 1].deactivated {
            return Err(problem(
                401,
                "unauthorized",
                "Account is not valid, has status \"deactivated\"",
            ));
        }
        Ok(n)
    }

    fn rate_limit(&mut self) -> Result<(), Response> {
        let req = self.req;
        let path = &req.path;
        let Some(i) = self
            .st
            .rate_limits
            .iter()
            .position(|l| l.remaining > 0 && path.starts_with(&l.prefix))
        else {
            return Ok(());
        };
        let limit = &mut self.st.rate_limits[i];
        limit.remaining -= 1;
        let wait = limit.retry_after;
        let refusal = limit.refusal.clone();
        let unavailable = limit.unavailable.clone();
        if limit.remaining == 0 {
            self.st.rate_limits.remove(i);
        }
        if let Some(u) = unavailable {
            let answer = match &u.kind {
                Some(kind) => problem(u.status, kind, &format!("{path} is unavailable")),
                None => Response {
                    status: u.status,
                    headers: vec![("Content-Type".into(), "text/html".into())],
                    body: format!(
                        "<html><body><h1>{} Service Unavailable</h1></body></html>",
                        u.status
                    )
                    .into_bytes(),
                },
            };
            return Err(answer.with_header("Retry-After", &u.retry_after));
        }
        if let Some((status, kind)) = refusal {
            return Err(problem(status, &kind, &format!("{path} is refused here")));
        }
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let until = OffsetDateTime::now_utc() + time::Duration::seconds(seconds as i64);
        Err(problem(
            429,
            "rateLimited",
            &format!(
                "too many requests to {path}: retry after {}",
                rfc3339(until)
            ),
        )
        .with_header("Retry-After", &seconds.to_string()))
    }

    fn oversized(&mut self) -> Result<(), Response> {
        let path = &self.req.path;
        let Some(i) = self
            .st
            .oversized
            .iter()
            .position(|o| o.remaining > 0 && path.starts_with(&o.prefix))
        else {
            return Ok(());
        };
        let o = &mut self.st.oversized[i];
        o.remaining -= 1;
        let size = o.size;
        if o.remaining == 0 {
            self.st.oversized.remove(i);
        }
        let mut body = vec![b'x'; size.max(2)];
        body[0] = b'"';
        body[size.max(2) - 1] = b'"';
        Err(Response {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body,
        })
    }

    fn directory(&self) -> Response {
        let url = |p: &str| format!("{}{p}", self.base);
        let mut meta = json!({
            "termsOfService": "https://fake-acme.test/terms",
            "website": "https://fake-acme.test",
            "caaIdentities": ["fake-acme.test"],
        });
        let profiles = &self.st.behaviour.profiles;
        if !profiles.is_empty() {
            meta["profiles"] = profiles
                .iter()
                .map(|(name, p)| (name.clone(), Value::from(p.description.clone())))
                .collect::<Map<_, _>>()
                .into();
        }
        let mut dir = json!({
            "newNonce": url(path::NEW_NONCE),
            "newAccount": url(path::NEW_ACCOUNT),
            "newOrder": url(path::NEW_ORDER),
            "revokeCert": url(path::REVOKE_CERT),
            "keyChange": url(path::KEY_CHANGE),
            "meta": meta,
        });
        if self.st.behaviour.renewal_info {
            dir["renewalInfo"] = url(path::RENEWAL_INFO).into();
        }
        dir[self.st.directory_noise.as_str()] = DIRECTORY_NOISE.into();
        Response::json(200, &dir)
    }

    // --- accounts

    fn new_account(&mut self, jws: &Jws) -> Answer {
        let JwsKey::Jwk(jwk) = &jws.key else {
            return Err(malformed(
                "newAccount requests must be signed with a jwk, not a kid",
            ));
        };
        let payload = jws.object()?;
        if let Some(i) = self.st.accounts.iter().position(|a| &a.jwk == jwk) {
            // RFC 8555 §7.3.1: an existing account is answered 200 with its URL.
            let n = i + 1;
            return Ok(Response::json(200, &self.account_json(n))
                .with_header("Location", &self.url(path::ACCOUNT, n)));
        }
        if payload.get("onlyReturnExisting") == Some(&Value::Bool(true)) {
            return Err(problem(
                400,
                "accountDoesNotExist",
                "No account exists with the provided key",
            ));
        }
        if payload.get("termsOfServiceAgreed") != Some(&Value::Bool(true)) {
            return Err(malformed("must agree to terms of service"));
        }
        let contact = contacts(payload)?;
        self.st.accounts.push(Account {
            jwk: jwk.clone(),
            contact,
            deactivated: false,
        });
        let n = self.st.accounts.len();
        Ok(Response::json(201, &self.account_json(n))
            .with_header("Location", &self.url(path::ACCOUNT, n)))
    }

    fn account(&mut self, n: usize, jws: &Jws) -> Answer {
        if jws.account()? != n {
            return Err(problem(
                403,
                "unauthorized",
                "Request signing key did not match account key",
            ));
        }
        match &jws.payload {
            None => {}
            Some(Value::Object(update)) => {
                if update.get("status").and_then(Value::as_str) == Some("deactivated") {
                    self.st.accounts[n - 1].deactivated = true;
                } else if update.contains_key("contact") {
                    self.st.accounts[n - 1].contact = contacts(update)?;
                }
            }
            Some(_) => return Err(malformed("the request payload must be a JSON object")),
        }
        Ok(Response::json(200, &self.account_json(n)))
    }

    fn account_orders(&self, n: usize, jws: &Jws) -> Answer {
        if jws.account()? != n {
            return Err(problem(
                403,
                "unauthorized",
                "Request signing key did not match account key",
            ));
        }
        jws.post_as_get()?;
        let orders: Vec<String> = (1..=self.st.orders.len())
            .filter(|&o| self.st.orders[o - 1].account == n)
            .map(|o| self.url(path::ORDER, o))
            .collect();
        Ok(Response::json(200, &json!({ "orders": orders })))
    }

    fn account_json(&self, n: usize) -> Value {
        let account = &self.st.accounts[n - 1];
        json!({
            "status": if account.deactivated { "deactivated" } else { "valid" },
            "contact": account.contact,
            "orders": format!("{}/orders", self.url(path::ACCOUNT, n)),
            "key": account.jwk,
        })
    }

    fn key_change(&mut self, jws: &Jws) -> Answer {
        // RFC 8555 §7.3.5: the payload is a JWS signed by the new key, naming the account
        // and its old key.
        let n = jws.account()?;
        let inner = jws.object()?;
        let header = inner
            .get("protected")
            .and_then(Value::as_str)
            .and_then(decode_json)
            .ok_or_else(|| malformed("the keyChange payload is not a JWS"))?;
        let Some(new_key) = header.get("jwk").filter(|k| k.is_object()) else {
            return Err(malformed("the inner JWS must carry the new key as jwk"));
        };
        if header.get("url").and_then(Value::as_str) != Some(jws.url.as_str()) {
            return Err(malformed("the inner JWS url must equal the outer JWS url"));
        }
        if header.get("nonce").is_some() {
            return Err(malformed("the inner JWS must not carry a nonce"));
        }
        let change = inner
            .get("payload")
            .and_then(Value::as_str)
            .and_then(decode_json)
            .ok_or_else(|| malformed("the inner JWS payload is not JSON"))?;
        if change.get("account").and_then(Value::as_str) != Some(&self.url(path::ACCOUNT, n)) {
            return Err(malformed(
                "the inner JWS account does not match the outer kid",
            ));
        }
        if change.get("oldKey") != Some(&self.st.accounts[n - 1].jwk) {
            return Err(malformed("oldKey does not match the account's key"));
        }
        if let Some(other) = self.st.accounts.iter().position(|a| &a.jwk == new_key) {
            return Err(problem(
                409,
                "malformed",
                "the new key is already in use for an account",
            )
            .with_header("Location", &self.url(path::ACCOUNT, other + 1)));
        }
        self.st.accounts[n - 1].jwk = new_key.clone();
        Ok(Response::json(200, &self.account_json(n)))
    }

    // --- orders

    fn new_order(&mut self, jws: &Jws) -> Answer {
        let account = jws.account()?;
        let payload = jws.object()?;
        let names = identifiers(payload)?;
        if payload.contains_key("notBefore") || payload.contains_key("notAfter") {
            return Err(malformed("NotBefore and NotAfter are not supported"));
        }
        let offered = &self.st.behaviour.profiles;
        let profile = match payload.get("profile") {
            None => None,
            // A CA that does not know the extension ignores the field.
            Some(_) if offered.is_empty() => None,
            Some(Value::String(p)) if offered.contains_key(p) => Some(p.clone()),
            Some(Value::String(p)) => {
                let names: Vec<&str> = offered.keys().map(String::as_str).collect();
                return Err(problem(
                    400,
                    "invalidProfile",
                    &format!(
                        "profile {p:?} is not offered (offered: {})",
                        names.join(", ")
                    ),
                ));
            }
            Some(_) => return Err(malformed("profile must be a string")),
        };
        let replaced = match payload.get("replaces") {
            None => None,
            // A CA without ARI ignores the field.
            Some(_) if !self.st.behaviour.renewal_info => None,
            Some(Value::String(id)) => Some(self.check_replaces(account, id, &names)?),
            Some(_) => return Err(malformed("replaces must be a string")),
        };

        let now = OffsetDateTime::now_utc();
        let n = self.st.orders.len() + 1;
        let mut authzs = Vec::new();
        for name in &names {
            self.st.authzs.push(Authz {
                order: n,
                name: name.clone(),
                token: B64.encode(random::<32>()),
                validated: now,
                deactivated: false,
            });
            authzs.push(self.st.authzs.len());
        }
        let replaces = replaced.map(|c| self.st.certs[c].issued.cert_id.clone());
        self.st.orders.push(Order {
            account,
            names,
            authzs,
            profile,
            replaces,
            cert: None,
            expires: now + ORDER_LIFETIME,
        });
        if let Some(c) = replaced {
            self.st.certs[c].replaced_by = Some(n);
        }
        let echo = self.st.behaviour.echo_replaces != Echo::Never;
        Ok(Response::json(201, &self.order_json(n, echo))
            .with_header("Location", &self.url(path::ORDER, n)))
    }

    /// The certificate `replaces` names, checked as RFC 9773 §5 asks.
    fn check_replaces(
        &mut self,
        account: usize,
        id: &str,
        names: &[String],
    ) -> Result<usize, Response> {
        if !is_cert_id(id) {
            return Err(malformed(&format!(
                "replaces {id:?} is not a certID (base64url AKI keyIdentifier \".\" base64url serial)"
            )));
        }
        if self.st.already_replaced > 0 {
            self.st.already_replaced -= 1;
            return Err(already_replaced(id));
        }
        let Some(c) = self.st.certs.iter().position(|c| c.issued.cert_id == id) else {
            return Err(malformed(&format!(
                "the certificate {id:?} this order replaces was not issued here"
            )));
        };
        let cert = &self.st.certs[c];
        if cert.account != account {
            return Err(problem(
                403,
                "unauthorized",
                "the certificate this order replaces was issued to another account",
            ));
        }
        if !cert.issued.names.iter().any(|n| names.contains(n)) {
            return Err(malformed(
                "the order shares no identifier with the certificate it replaces",
            ));
        }
        if let Some(o) = cert.replaced_by
            && self.st.order_status(o) != "invalid"
        {
            return Err(already_replaced(id));
        }
        Ok(c)
    }

    fn order(&self, n: usize, jws: &Jws) -> Answer {
        self.owns_order(n, jws)?;
        jws.post_as_get()?;
        let echo = self.st.behaviour.echo_replaces == Echo::Always;
        Ok(Response::json(200, &self.order_json(n, echo)))
    }

    fn owns_order(&self, n: usize, jws: &Jws) -> Result<(), Response> {
        match jws.account()? == self.st.orders[n - 1].account {
            true => Ok(()),
            false => Err(not_found()),
        }
    }

    fn order_json(&self, n: usize, echo_replaces: bool) -> Value {
        let order = &self.st.orders[n - 1];
        let status = self.st.order_status(n);
        let mut v = json!({
            "status": status,
            "expires": rfc3339(order.expires),
            "identifiers": order.names.iter()
                .map(|name| json!({ "type": "dns", "value": name }))
                .collect::<Vec<_>>(),
            "authorizations": order.authzs.iter()
                .map(|&a| self.url(path::AUTHZ, a))
                .collect::<Vec<_>>(),
            "finalize": self.url(path::FINALIZE, n),
        });
        if let Some(profile) = &order.profile {
            v["profile"] = profile.clone().into();
        }
        if echo_replaces && let Some(id) = &order.replaces {
            v["replaces"] = id.clone().into();
        }
        if let Some(c) = order.cert {
            v["certificate"] = self.url(path::CERT, c).into();
        }
        if status == "invalid" {
            v["error"] = json!({
                "type": format!("{ACME_ERROR}unauthorized"),
                "detail": "an authorization of this order was deactivated",
                "status": 403,
            });
        }
        v
    }

    fn finalize(&mut self, n: usize, jws: &Jws) -> Answer {
        self.owns_order(n, jws)?;
        let status = self.st.order_status(n);
        if status != "ready" {
            return Err(problem(
                403,
                "orderNotReady",
                &format!("Order's status ({status:?}) is not acceptable for finalization"),
            ));
        }
        let csr = jws
            .object()?
            .get("csr")
            .and_then(Value::as_str)
            .and_then(|c| B64.decode(c).ok())
            .ok_or_else(|| malformed("the finalize payload needs csr, base64url DER"))?;
        let (key, csr_names) = read_csr(&csr).map_err(|e| problem(400, "badCSR", &e))?;
        let order = &self.st.orders[n - 1];
        let ordered: BTreeSet<String> = order.names.iter().cloned().collect();
        if csr_names != ordered {
            return Err(problem(
                400,
                "badCSR",
                "CSR does not specify same identifiers as Order",
            ));
        }
        let validity = order
            .profile
            .as_ref()
            .and_then(|p| self.st.behaviour.profiles.get(p))
            .map_or(self.st.behaviour.validity, |p| p.validity);
        let now = OffsetDateTime::now_utc();
        // Whole seconds, as the certificate holds them.
        let not_before = now - time::Duration::nanoseconds(now.nanosecond().into()) - BACKDATE;
        let not_after =
            not_before + time::Duration::try_from(validity).unwrap_or(time::Duration::MAX);
        let leaf = sign_leaf(self.pki, &key, &order.names, not_before, not_after)
            .map_err(|e| problem(500, "serverInternal", &format!("cannot sign: {e}")))?;
        let der = leaf.der().to_vec();
        let cert_id = cert_id(&der).ok_or_else(|| {
            problem(
                500,
                "serverInternal",
                "the new leaf has no AKI keyIdentifier",
            )
        })?;
        let serial = X509Certificate::from_der(&der)
            .map(|(_, c)| c.tbs_certificate.raw_serial().to_vec())
            .unwrap_or_default();
        let issued = IssuedCert {
            cert_id,
            serial,
            names: order.names.clone(),
            not_before,
            not_after,
            fullchain_pem: format!("{}{}", leaf.pem(), self.pki.intermediate.pem()),
            der,
            profile: order.profile.clone(),
            replaces: order.replaces.clone(),
            order_url: self.url(path::ORDER, n),
        };
        let account = order.account;
        self.st.certs.push(CertRecord {
            issued,
            account,
            replaced_by: None,
            revoked: false,
        });
        self.st.orders[n - 1].cert = Some(self.st.certs.len());
        let echo = self.st.behaviour.echo_replaces == Echo::Always;
        Ok(Response::json(200, &self.order_json(n, echo))
            .with_header("Location", &self.url(path::ORDER, n)))
    }

    // --- authorizations and challenges

    fn owns_authz(&self, n: usize, jws: &Jws) -> Result<(), Response> {
        self.owns_order(self.st.authzs[n - 1].order, jws)
    }

    fn authz(&mut self, n: usize, jws: &Jws) -> Answer {
        self.owns_authz(n, jws)?;
        match &jws.payload {
            None => {}
            Some(v) if v.get("status").and_then(Value::as_str) == Some("deactivated") => {
                self.st.authzs[n - 1].deactivated = true;
            }
            Some(_) => {
                return Err(malformed(
                    "an authorization takes POST-as-GET or {\"status\":\"deactivated\"}",
                ));
            }
        }
        let authz = &self.st.authzs[n - 1];
        let (value, wildcard) = match authz.name.strip_prefix("*.") {
            Some(base) => (base, true),
            None => (authz.name.as_str(), false),
        };
        let mut v = json!({
            "identifier": { "type": "dns", "value": value },
            "status": if authz.deactivated { "deactivated" } else { "valid" },
            "expires": rfc3339(authz.validated + AUTHZ_LIFETIME),
            "challenges": [self.challenge_json(n)],
        });
        if wildcard {
            v["wildcard"] = true.into();
        }
        Ok(Response::json(200, &v))
    }

    fn challenge(&self, n: usize, jws: &Jws) -> Answer {
        self.owns_authz(n, jws)?;
        // An empty object responds to the challenge; it is valid already.
        match &jws.payload {
            None => {}
            Some(Value::Object(o)) if o.is_empty() => {}
            Some(_) => return Err(malformed("a challenge takes {} or POST-as-GET")),
        }
        Ok(Response::json(200, &self.challenge_json(n)).with_header(
            "Link",
            &format!("<{}>;rel=\"up\"", self.url(path::AUTHZ, n)),
        ))
    }

    fn challenge_json(&self, n: usize) -> Value {
        let authz = &self.st.authzs[n - 1];
        json!({
            "type": "dns-01",
            "url": self.url(path::CHALLENGE, n),
            "status": "valid",
            "token": authz.token,
            "validated": rfc3339(authz.validated),
        })
    }

    // --- certificates

    fn certificate(&self, n: usize, jws: &Jws) -> Answer {
        if jws.account()? != self.st.certs[n - 1].account {
            return Err(not_found());
        }
        jws.post_as_get()?;
        Ok(Response {
            status: 200,
            headers: vec![("Content-Type".into(), PEM_CHAIN.into())],
            body: self.st.certs[n - 1]
                .issued
                .fullchain_pem
                .clone()
                .into_bytes(),
        })
    }

    fn revoke(&mut self, jws: &Jws) -> Answer {
        let payload = jws.object()?;
        let der = payload
            .get("certificate")
            .and_then(Value::as_str)
            .and_then(|c| B64.decode(c).ok())
            .ok_or_else(|| malformed("revokeCert needs certificate, base64url DER"))?;
        let Some(c) = self.st.certs.iter().position(|c| c.issued.der == der) else {
            return Err(problem(404, "malformed", "Certificate not found"));
        };
        // Signed by the account: it must be the one that ordered it. Signed by a jwk (the
        // certificate's key): accepted, since signatures are not verified here.
        if let JwsKey::Account(a) = jws.key
            && a != self.st.certs[c].account
        {
            return Err(problem(
                403,
                "unauthorized",
                "The requester does not hold valid authorizations for all names in the certificate",
            ));
        }
        let reason = payload.get("reason").map_or(Some(0), Value::as_u64);
        if !reason.is_some_and(|r| REVOCATION_REASONS.contains(&r)) {
            return Err(problem(
                400,
                "badRevocationReason",
                "the revocation reason is not allowed",
            ));
        }
        if self.st.certs[c].revoked {
            return Err(problem(
                400,
                "alreadyRevoked",
                "Certificate already revoked",
            ));
        }
        self.st.certs[c].revoked = true;
        Ok(empty(200))
    }

    // --- renewal information

    fn renewal_info(&mut self, id: &str) -> Answer {
        self.st.renewal_info_gets += 1;
        if !is_cert_id(id) {
            return Err(malformed(&format!(
                "{id:?} is not a certID (base64url AKI keyIdentifier \".\" base64url serial, unpadded)"
            )));
        }
        let Some(cert) = self.st.certs.iter().find(|c| c.issued.cert_id == id) else {
            return Err(problem(404, "malformed", "Certificate not found"));
        };
        let window = if cert.revoked {
            Window::passed()
        } else if let Some(w) = self.st.windows.get(id) {
            w.clone()
        } else if let Some(f) = &self.st.window_fn {
            f(&cert.issued)
        } else {
            Window::last_third(&cert.issued)
        };
        let mut body = json!({
            "suggestedWindow": { "start": rfc3339(window.start), "end": rfc3339(window.end) },
        });
        if let Some(url) = &window.explanation_url {
            body["explanationURL"] = url.clone().into();
        }
        let retry_after = self.st.behaviour.ari_retry_after.as_secs().to_string();
        Ok(Response::json(200, &body).with_header("Retry-After", &retry_after))
    }

    fn url(&self, prefix: &str, n: usize) -> String {
        format!("{}{prefix}{n}", self.base)
    }
}

// --- helpers

/// What a newOrder payload asked for, as far as it says (the status is filled in later).
fn new_order_record(payload: &Value) -> NewOrderRecord {
    let text = |name: &str| payload.get(name).and_then(Value::as_str).map(str::to_owned);
    NewOrderRecord {
        identifiers: payload
            .get("identifiers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|i| i.get("value").and_then(Value::as_str).map(str::to_owned))
            .collect(),
        profile: text("profile"),
        replaces: text("replaces"),
        status: 0,
    }
}

/// `n` when `path` is `prefix` followed by a number from 1 to `count`.
fn number(path: &str, prefix: &str, count: usize) -> Option<usize> {
    let n: usize = path.strip_prefix(prefix)?.parse().ok()?;
    (1..=count).contains(&n).then_some(n)
}

/// The identifiers of a newOrder: DNS names, deduplicated, in order.
fn identifiers(payload: &Map<String, Value>) -> Result<Vec<String>, Response> {
    let list = payload
        .get("identifiers")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| malformed("NewOrder request did not specify any identifiers"))?;
    let mut names: Vec<String> = Vec::new();
    for identifier in list {
        let kind = identifier.get("type").and_then(Value::as_str);
        let value = identifier.get("value").and_then(Value::as_str);
        let (Some("dns"), Some(value)) = (kind, value) else {
            return Err(problem(
                400,
                "unsupportedIdentifier",
                &format!("identifier {identifier} is not supported: only type dns"),
            ));
        };
        if !is_dns_name(value) {
            return Err(problem(
                400,
                "rejectedIdentifier",
                &format!("Invalid identifier {value:?}"),
            ));
        }
        let value = value.to_ascii_lowercase();
        if !names.contains(&value) {
            names.push(value);
        }
    }
    Ok(names)
}

/// A hostname of two labels or more, optionally under a leading `*.`.
fn is_dns_name(name: &str) -> bool {
    let host = name.strip_prefix("*.").unwrap_or(name);
    let labels: Vec<&str> = host.split('.').collect();
    host.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn contacts(payload: &Map<String, Value>) -> Result<Vec<String>, Response> {
    let Some(list) = payload.get("contact") else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| malformed("contact must be a list"))?;
    list.iter()
        .map(|c| match c.as_str() {
            Some(c) if c.strip_prefix("mailto:").is_some_and(|a| a.contains('@')) => {
                Ok(c.to_owned())
            }
            Some(c) if c.starts_with("mailto:") => Err(problem(
                400,
                "invalidContact",
                &format!("contact {c:?} is not an email address"),
            )),
            _ => Err(problem(
                400,
                "unsupportedContact",
                &format!("contact {c} is not supported: only mailto:"),
            )),
        })
        .collect()
}

/// `aki.serial`, both unpadded base64url and not empty.
fn is_cert_id(id: &str) -> bool {
    id.split_once('.').is_some_and(|(aki, serial)| {
        [aki, serial]
            .iter()
            .all(|p| !p.is_empty() && B64.decode(p).is_ok())
    })
}

/// The CSR's public key (its signature checked) and its names: the DNS SANs and the common
/// name, lower-cased.
fn read_csr(der: &[u8]) -> Result<(rcgen::PublicKey, BTreeSet<String>), String> {
    let params = CertificateSigningRequestParams::from_der(&der.into())
        .map_err(|e| format!("CSR cannot be used: {e}"))?;
    let (_, csr) =
        X509CertificationRequest::from_der(der).map_err(|e| format!("CSR does not parse: {e}"))?;
    let mut names = BTreeSet::new();
    for cn in csr.certification_request_info.subject.iter_common_name() {
        let cn = cn.as_str().map_err(|e| format!("CSR common name: {e}"))?;
        names.insert(cn.to_ascii_lowercase());
    }
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(d) => names.insert(d.to_ascii_lowercase()),
                    other => {
                        return Err(format!("CSR names something other than DNS: {other:?}"));
                    }
                };
            }
        }
    }
    Ok((params.public_key, names))
}

fn sign_leaf(
    pki: &Pki,
    key: &rcgen::PublicKey,
    names: &[String],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<rcgen::Certificate, rcgen::Error> {
    let mut params = CertificateParams::new(names.to_vec())?;
    let mut dn = DistinguishedName::new();
    if let Some(cn) = names.iter().find(|n| n.len() <= 64) {
        dn.push(DnType::CommonName, cn.clone());
    }
    params.distinguished_name = dn;
    params.not_before = not_before;
    params.not_after = not_after;
    // Random, positive, without a leading zero byte: DER keeps the bytes as they are.
    let mut serial = random::<16>();
    serial[0] = (serial[0] & 0x7f) | 0x40;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.signed_by(key, &pki.intermediate)
}

fn decode_json(b64: &str) -> Option<Value> {
    serde_json::from_slice(&B64.decode(b64).ok()?).ok()
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    aws_lc_rs::rand::fill(&mut bytes).expect("system random");
    bytes
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).expect("a date formats as RFC 3339")
}

fn problem(status: u16, kind: &str, detail: &str) -> Response {
    let doc = json!({ "type": format!("{ACME_ERROR}{kind}"), "detail": detail, "status": status });
    problem_doc(status, &doc)
}

fn problem_doc(status: u16, doc: &Value) -> Response {
    Response {
        status,
        headers: vec![("Content-Type".into(), "application/problem+json".into())],
        body: doc.to_string().into_bytes(),
    }
}

fn malformed(detail: &str) -> Response {
    problem(400, "malformed", detail)
}

fn already_replaced(id: &str) -> Response {
    problem(
        409,
        "alreadyReplaced",
        &format!("the certificate {id:?} already has a replacement order"),
    )
}

fn not_found() -> Response {
    problem(404, "malformed", "Resource not found")
}

fn method_not_allowed() -> Response {
    problem(405, "malformed", "Method not allowed").with_header("Allow", "POST")
}

fn empty(status: u16) -> Response {
    Response {
        status,
        headers: Vec::new(),
        body: Vec::new(),
    }
}

/// Lifetime of certificates ordered without a profile: 90 days, as Let's Encrypt's classic.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(90 * 86_400);

/// `Retry-After` of renewalInfo answers: 6 hours, as Let's Encrypt sends.
pub const DEFAULT_ARI_RETRY_AFTER: Duration = Duration::from_secs(6 * 3600);

/// How far notBefore is backdated (Let's Encrypt: an hour), for clients with slow clocks.
const BACKDATE: time::Duration = time::Duration::hours(1);

const ORDER_LIFETIME: time::Duration = time::Duration::days(7);
const AUTHZ_LIFETIME: time::Duration = time::Duration::days(30);

const ACME_ERROR: &str = "urn:ietf:params:acme:error:";
const JOSE_JSON: &str = "application/jose+json";
const PEM_CHAIN: &str = "application/pem-certificate-chain";

/// The JWS algorithms accepted (RFC 8555 §6.2: no `none`, no MAC).
const SIGNATURE_ALGORITHMS: &[&str] = &["RS256", "ES256", "ES384", "ES512", "EdDSA"];

/// CRL reasons a subscriber may give (Let's Encrypt's list).
const REVOCATION_REASONS: &[u64] = &[0, 1, 3, 4, 5];

/// Let's Encrypt puts a random key with this value into its directory.
const DIRECTORY_NOISE: &str =
    "https://community.letsencrypt.org/t/adding-random-entries-to-the-directory/33417";
