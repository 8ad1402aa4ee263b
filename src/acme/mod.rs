//! ACME issuance over DNS-01 (RFC 8555 through instant-acme), with renewal information
//! (RFC 9773) where the CA offers it.
//!
//! [`Acme::open`] loads or creates the issuer's account; [`Acme::issue`] runs one order:
//! a DNS-01 challenge per identifier published through a DNS provider, checked to be visible
//! before the CA is told, finalized with the caller's CSR, the chain downloaded, and every
//! record removed again whatever happens. [`Acme::renewal_window`] asks for the CA's window.
//!
//! - TLS: system roots plus the issuer's `trust_roots`, with the aws-lc-rs provider; call
//!   [`install_crypto_provider`] once at startup for the rest of the process.
//! - Passing failures (`rateLimited`, `serverInternal`, 5xx, no answer) are retried per step
//!   with [`Backoff`], honouring `Retry-After`; order polling uses an explicit policy
//!   ([`Tuning::poll_timeout`] and its neighbours), never instant-acme's default.

mod account;
mod certbot_account;
pub mod dns01;
mod http;
mod order;
pub mod persist;
mod problem;
mod retry;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use instant_acme::{Account, CertificateIdentifier};
use rustls_pki_types::CertificateDer;

pub use account::account_path;
pub use http::install_crypto_provider;
pub use problem::ProblemType;
pub use retry::{Backoff, DEFAULT_BACKOFF};

use crate::config::{self, AcmeIssuer};
use crate::state::RenewalWindow;
use crate::store::StateDir;
use http::Http;

/// An ACME account at one CA, and the client that talks to it.
pub struct Acme {
    issuer: String,
    directory: Directory,
    account: Account,
    created: bool,
    account_file: Option<PathBuf>,
    tuning: Tuning,
    orders_per_minute: Option<u32>,
    /// certbot's account, when the issuer uses it: its key answers the challenges.
    certbot: Option<Arc<certbot_account::CertbotAccount>>,
    /// The account's credentials (JSON), recorded with an order in flight in fleet mode.
    credentials: Option<zeroize::Zeroizing<Vec<u8>>>,
    /// The client, for an account recorded by another host (a resumed order).
    http: Http,
}

impl std::fmt::Debug for Acme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme")
            .field("issuer", &self.issuer)
            .field("directory", &self.directory.url)
            .field("account", &self.account.id())
            .finish()
    }
}

/// What one order asks for.
pub struct OrderRequest<'a> {
    /// The names, as configured (lower-case; `*.example.com` for a wildcard).
    pub domains: &'a [String],
    /// The CSR (DER) for exactly these names, signed by the certificate's new key.
    pub csr_der: Vec<u8>,
    /// The ACME profile; sent only when the directory offers profiles.
    pub profile: Option<&'a str>,
    /// The live leaf (DER) this order renews; sent as `replaces` when the CA offers ARI.
    pub replaces: Option<&'a [u8]>,
    /// How control of the names is shown.
    pub proof: Proof<'a>,
    /// Propagation check settings (and where the dns-persist-01 record is looked up).
    pub settings: &'a config::DnsSettings,
    /// Where the order in flight is recorded and an earlier one found (fleet mode).
    pub track: Option<&'a dyn Track>,
}

/// How an order shows the CA control of its names.
pub enum Proof<'a> {
    /// dns-01: a record per authorization, published and removed again.
    Dns01 {
        /// Publishes the challenge records.
        dns: Arc<dyn certkeeper_dns::DnsProvider>,
        /// The provider's config key, named in errors and logs.
        dns_name: &'a str,
    },
    /// dns-persist-01: the standing `_validation-persist` record ([`persist`]) must be
    /// visible; nothing is published.
    DnsPersist01 {
        /// The certificate's name, for the hint of an error.
        cert: &'a str,
    },
}

/// An order in flight that another process placed and did not finish: its URL and the
/// credentials (JSON, private key included) of the account that placed it, which alone may
/// fetch and finalize it.
pub struct Resume {
    pub order_url: String,
    pub account: zeroize::Zeroizing<Vec<u8>>,
}

/// Where an order in flight is recorded, so that another host resumes it when this one
/// dies before the certificate is issued (a fleet's etcd).
pub trait Track: Send + Sync {
    /// The order in flight left for `issuer`, to resume rather than place another.
    fn resume(&self, issuer: &str) -> Option<&Resume>;
    /// Records `order_url`, just placed with `issuer` by the account whose credentials are
    /// `account` (`None`: an account that cannot be shared), before its challenges.
    fn placed<'a>(
        &'a self,
        issuer: &'a str,
        order_url: &'a str,
        account: Option<&'a [u8]>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;
}

/// A certificate the CA issued.
#[derive(Clone, Debug)]
pub struct Issued {
    /// Leaf first, then the intermediates, as the CA sent them (PEM).
    pub fullchain_pem: String,
    /// The order's URL at the CA (for logs and support requests).
    pub order_url: String,
}

/// Timeouts and retry behaviour. [`Tuning::default`] suits public CAs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tuning {
    /// Retries of one step on passing failures.
    pub backoff: Backoff,
    /// First wait when polling an order (the first poll is at once), when the CA gives no
    /// `Retry-After`.
    pub poll_initial: Duration,
    /// Growth factor of the polling wait.
    pub poll_factor: f32,
    /// How long an order may take to become ready, and then to be issued.
    pub poll_timeout: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Time for one HTTP request, answer included.
    pub request_timeout: Duration,
}

/// The default [`Tuning`].
pub const DEFAULT_TUNING: Tuning = Tuning {
    backoff: DEFAULT_BACKOFF,
    poll_initial: Duration::from_millis(100),
    poll_factor: 1.5,
    poll_timeout: Duration::from_secs(120),
    connect_timeout: Duration::from_secs(10),
    request_timeout: Duration::from_secs(30),
};

impl Default for Tuning {
    fn default() -> Self {
        DEFAULT_TUNING
    }
}

/// What the directory offers, read once when the account is opened.
#[derive(Clone, Debug)]
struct Directory {
    url: String,
    renewal_info: bool,
    profiles: Vec<String>,
    /// `meta.caaIdentities`: the CA's issuer domain names.
    caa_identities: Vec<String>,
}

/// What a CA's directory offers, as `config check --online` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offers {
    /// Whether it offers ACME Renewal Information (RFC 9773).
    pub renewal_info: bool,
    /// The profiles it offers (empty when it has none).
    pub profiles: Vec<String>,
    /// Its issuer domain names (`meta.caaIdentities`; empty when it names none).
    pub caa_identities: Vec<String>,
}

/// Fetches the directory of `cfg` (trusting its `trust_roots`) and says what it offers; no
/// account is opened or created.
pub async fn probe_directory(cfg: &AcmeIssuer) -> Result<Offers, Error> {
    let tuning = DEFAULT_TUNING;
    let http = Http::for_issuer(cfg, &tuning)?;
    let d = read_directory(&http, &cfg.directory, &tuning.backoff).await?;
    Ok(Offers {
        renewal_info: d.renewal_info,
        profiles: d.profiles,
        caa_identities: d.caa_identities,
    })
}

impl Acme {
    /// Loads the account stored under `state_dir/accounts/<issuer>/` or creates one (contact
    /// and external account binding from `cfg`) and stores it (file 0600, directories 0700).
    /// With a read-only `state_dir` (dry runs) a new account is kept in memory only and
    /// nothing is written.
    pub async fn open(
        issuer_name: &str,
        cfg: &AcmeIssuer,
        state_dir: &StateDir,
    ) -> Result<Acme, Error> {
        Self::open_with(issuer_name, cfg, state_dir, DEFAULT_TUNING).await
    }

    /// [`Acme::open`] with other timeouts and retries.
    pub async fn open_with(
        issuer_name: &str,
        cfg: &AcmeIssuer,
        state_dir: &StateDir,
        tuning: Tuning,
    ) -> Result<Acme, Error> {
        let http = Http::for_issuer(cfg, &tuning)?;
        let directory = read_directory(&http, &cfg.directory, &tuning.backoff).await?;
        let opened = account::open(issuer_name, cfg, state_dir, &http, &tuning.backoff).await?;
        Ok(Acme {
            issuer: issuer_name.to_owned(),
            directory,
            account: opened.account,
            created: opened.created,
            account_file: opened.file,
            certbot: opened.certbot,
            credentials: opened.credentials,
            http,
            tuning,
            orders_per_minute: cfg.orders_per_minute,
        })
    }

    /// The account's URL at the CA.
    pub fn account_id(&self) -> &str {
        self.account.id()
    }

    /// Whether [`Acme::open`] created the account (rather than loading a stored one).
    pub fn created(&self) -> bool {
        self.created
    }

    /// Where the account is stored; `None` for an in-memory account.
    pub fn account_file(&self) -> Option<&Path> {
        self.account_file.as_deref()
    }

    /// Whether the directory offers renewal information (ARI).
    pub fn offers_renewal_info(&self) -> bool {
        self.directory.renewal_info
    }

    /// The profiles the directory offers (empty when it has none).
    pub fn profiles(&self) -> &[String] {
        &self.directory.profiles
    }

    /// The CA's issuer domain names, as its directory names them (`meta.caaIdentities`).
    pub fn caa_identities(&self) -> &[String] {
        &self.directory.caa_identities
    }

    /// The dns-persist-01 records that authorize this account for `domains` (see
    /// [`persist::records_for`]), with the CA's first issuer domain name.
    pub fn persist_records(&self, domains: &[String]) -> Result<Vec<persist::Standing>, Error> {
        let issuer =
            self.directory
                .caa_identities
                .first()
                .ok_or_else(|| Error::NoIssuerDomain {
                    directory: self.directory.url.clone(),
                })?;
        Ok(persist::records_for(domains, issuer, self.account.id()))
    }

    /// One order: DNS-01 for every identifier, propagation check, finalize with the CSR,
    /// download the chain. Challenge records are removed on success, failure and
    /// cancellation.
    pub async fn issue(&self, req: &OrderRequest<'_>) -> Result<Issued, Error> {
        order::issue(self, req).await
    }

    /// The CA's suggested renewal window for a live leaf (RFC 9773); `None` when the
    /// directory does not offer renewal information.
    pub async fn renewal_window(&self, leaf_der: &[u8]) -> Result<Option<RenewalWindow>, Error> {
        if !self.directory.renewal_info {
            return Ok(None);
        }
        let id = cert_id(leaf_der)?;
        let (info, retry_after) = retry::retrying!(&self.tuning.backoff, "renewal info", {
            self.account.renewal_info(&id).await
        })
        .map_err(|e| acme_error("renewal info", e))?;
        Ok(Some(RenewalWindow {
            start: info.suggested_window.start,
            end: info.suggested_window.end,
            explanation_url: info.explanation_url,
            retry_after,
        }))
    }
}

/// The ARI certificate identifier (authority key id + serial) of a leaf.
fn cert_id(leaf_der: &[u8]) -> Result<CertificateIdentifier<'static>, Error> {
    let der = CertificateDer::from(leaf_der);
    CertificateIdentifier::try_from(&der)
        .map(CertificateIdentifier::into_owned)
        .map_err(|e| Error::Leaf(e.to_string()))
}

async fn read_directory(http: &Http, url: &str, backoff: &Backoff) -> Result<Directory, Error> {
    let (status, body) = retry::retrying!(backoff, "directory", {
        let (status, body) = http.get(url).await?;
        if status.is_server_error() {
            // Through the problem path, so that it is retried like any 5xx.
            let problem: instant_acme::Problem = serde_json::from_slice(&body)?;
            return Err(instant_acme::Error::Api(problem));
        }
        Ok((status, body))
    })
    .map_err(|e| acme_error("directory", e))?;
    parse_directory(url, status, &body)
}

/// What certkeeper needs from a directory document: that it is one, whether it offers
/// renewal information (ARI), and the names of the profiles it offers.
fn parse_directory(url: &str, status: ::http::StatusCode, body: &[u8]) -> Result<Directory, Error> {
    let text = String::from_utf8_lossy(body);
    let evidence = || fold(&text.chars().take(512).collect::<String>());
    if !status.is_success() {
        return Err(Error::Directory {
            url: url.to_owned(),
            reason: format!("HTTP {status}: {}", evidence()),
        });
    }
    let doc: serde_json::Value = serde_json::from_slice(body).map_err(|e| Error::Directory {
        url: url.to_owned(),
        reason: format!("not an ACME directory ({e}): {}", evidence()),
    })?;
    if doc.get("newOrder").and_then(|v| v.as_str()).is_none() {
        return Err(Error::Directory {
            url: url.to_owned(),
            reason: format!("not an ACME directory (no newOrder): {}", evidence()),
        });
    }
    let mut profiles: Vec<String> = doc
        .pointer("/meta/profiles")
        .and_then(|p| p.as_object())
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    profiles.sort();
    let caa_identities = doc
        .pointer("/meta/caaIdentities")
        .and_then(|p| p.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_ascii_lowercase))
                .collect()
        })
        .unwrap_or_default();
    Ok(Directory {
        url: url.to_owned(),
        renewal_info: doc.get("renewalInfo").and_then(|v| v.as_str()).is_some(),
        profiles,
        caa_identities,
    })
}

/// Why an ACME operation failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The issuer's `trust_roots` could not be used.
    #[error("cannot use trust roots {path}: {reason}")]
    TrustRoots {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The TLS client could not be set up.
    #[error("tls setup failed: {0}")]
    Tls(String),
    /// The CA did not answer (connection refused, DNS, TLS, timeout), after retries.
    #[error(
        "cannot reach the ACME server during {step}: {reason} (after {attempts} attempt(s)); check the issuer's directory URL, the network and trust_roots"
    )]
    Unreachable {
        /// The step that failed.
        step: &'static str,
        /// The URL and what went wrong.
        reason: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The CA's answer was longer than certkeeper reads (not retried: it would be again).
    #[error(
        "{step}: the answer from {url} is larger than {} KiB, which no ACME answer is; check the issuer's directory URL and any proxy on the way",
        .limit / 1024
    )]
    TooLarge {
        /// The step that failed.
        step: &'static str,
        /// The URL asked.
        url: String,
        /// The limit, in bytes.
        limit: usize,
    },
    /// The directory URL answered, but not with an ACME directory.
    #[error("ACME directory {url} is not usable: {reason}")]
    Directory {
        /// The URL.
        url: String,
        /// What it answered.
        reason: String,
    },
    /// The CA answered a step with a problem document.
    #[error("{step}: the CA answered {}{}", problem_line(*.status, .kind.as_deref(), .detail, .subproblems), attempts_part(*.attempts))]
    Refused {
        /// The step that failed.
        step: &'static str,
        /// HTTP status, when known.
        status: Option<u16>,
        /// The problem type (`urn:ietf:params:acme:error:...`).
        kind: Option<String>,
        /// The CA's explanation.
        detail: String,
        /// Per-identifier problems, as `identifier: detail`.
        subproblems: Vec<String>,
        /// Attempts made.
        attempts: u32,
        /// When the CA asked to be asked again (`Retry-After`), if it did.
        retry_after: Option<std::time::SystemTime>,
    },
    /// Another failure of the protocol library.
    #[error("{step} failed: {source}")]
    Protocol {
        /// The step that failed.
        step: &'static str,
        /// What failed.
        #[source]
        source: instant_acme::Error,
    },
    /// The CA did not finish in time.
    #[error("timed out waiting for the CA to {step} (limit {})", crate::text::seconds(*.limit))]
    Timeout {
        /// What it was waiting for.
        step: &'static str,
        /// The limit.
        limit: Duration,
    },
    /// The account file could not be read or written.
    #[error("ACME account file {path}: {reason}")]
    AccountFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The stored account belongs to another directory.
    #[error(
        "the ACME account in {path} belongs to {stored}, not to the configured directory {configured}; move that file away to create a new account"
    )]
    AccountDirectory {
        /// The file.
        path: PathBuf,
        /// Its directory.
        stored: String,
        /// The configured one.
        configured: String,
    },
    /// The issuer name cannot name a directory.
    #[error("issuer name {name:?} cannot be used as a directory name")]
    IssuerName {
        /// The name.
        name: String,
    },
    /// The external account binding key could not be read (the message names its source,
    /// never its value).
    #[error("external account binding: {0}")]
    Eab(String),
    /// The configured profile is not one the directory offers.
    #[error("profile {profile:?} is not offered by the CA ({})", offered_part(.offered))]
    UnknownProfile {
        /// The configured profile.
        profile: String,
        /// What the directory offers.
        offered: Vec<String>,
    },
    /// An authorization has no DNS-01 challenge.
    #[error("the CA offers no dns-01 challenge for {domain}")]
    NoDns01 {
        /// The identifier.
        domain: String,
    },
    /// An authorization has no dns-persist-01 challenge: the CA does not offer it (Let's
    /// Encrypt production did not yet in 2026).
    #[error(
        "the CA does not offer dns-persist-01 for {domain}; use challenge: dns-01 with a dns_provider for this certificate, or an issuer that offers it"
    )]
    NoDnsPersist01 {
        /// The identifier.
        domain: String,
    },
    /// The CA names no issuer domain name, so no dns-persist-01 record can be written.
    #[error(
        "the CA's directory {directory} names no issuer domain (meta.caaIdentities), so the dns-persist-01 record cannot be written; use challenge: dns-01 for its certificates"
    )]
    NoIssuerDomain {
        /// The directory URL.
        directory: String,
    },
    /// The standing dns-persist-01 record was not seen where the CA will look.
    #[error(
        "no TXT record at {fqdn} authorizes account {account} for issuer {issuer} ({}); create it (certkeeper persist show {cert} prints it)",
        seen_part(.seen)
    )]
    PersistRecord {
        /// The record name.
        fqdn: String,
        /// The account's URL.
        account: String,
        /// The issuer domain name the CA checks.
        issuer: String,
        /// The certificate's name.
        cert: String,
        /// What each server answered, and why each value there does not count.
        seen: Vec<String>,
    },
    /// An authorization is in a state that cannot lead to a certificate.
    #[error("authorization for {domain} is {status}")]
    Authorization {
        /// The identifier.
        domain: String,
        /// Its status.
        status: String,
    },
    /// The CA could not validate a challenge.
    #[error("the CA could not validate {domain}: {detail}")]
    ChallengeFailed {
        /// The identifier.
        domain: String,
        /// The CA's explanation.
        detail: String,
    },
    /// The order ended invalid.
    #[error("the order became invalid: {detail}")]
    OrderInvalid {
        /// The CA's explanation, when it gave one.
        detail: String,
    },
    /// The leaf given for ARI could not be identified.
    #[error("cannot identify the certificate for renewal information: {0}")]
    Leaf(String),
    /// Publishing, checking or removing a challenge record failed.
    #[error(transparent)]
    Dns(#[from] dns01::Error),
}

impl Error {
    /// The problem type of a CA's refusal; `None` for any other error, or a refusal
    /// without a type.
    pub fn problem_type(&self) -> Option<ProblemType> {
        match self {
            Error::Refused {
                kind: Some(kind), ..
            } => Some(ProblemType::parse(kind)),
            _ => None,
        }
    }

    /// When the CA, in the answer that ended the step, asked to be asked again
    /// (`Retry-After` on a `rateLimited` problem, a 503, any error answer, newNonce's
    /// included); `None` for any other error, and for a time already past.
    pub fn retry_after(&self) -> Option<std::time::SystemTime> {
        match self {
            Error::Refused {
                retry_after: Some(at),
                ..
            } if *at > std::time::SystemTime::now() => Some(*at),
            _ => None,
        }
    }

    /// Whether the CA refused because of a rate limit: a `rateLimited` problem, or a 429
    /// without a problem type (a proxy's page, a bare newNonce answer).
    pub fn is_rate_limited(&self) -> bool {
        match self {
            Error::Refused { status, .. } => match self.problem_type() {
                Some(kind) => kind == ProblemType::RateLimited,
                None => *status == Some(429),
            },
            _ => false,
        }
    }

    /// Whether the CA's server failed rather than refused: a 5xx answer, or a
    /// `serverInternal` problem.
    pub fn is_server_error(&self) -> bool {
        match self {
            Error::Refused { status, .. } => {
                status.is_some_and(|s| (500..600).contains(&s))
                    || self.problem_type() == Some(ProblemType::ServerInternal)
            }
            _ => false,
        }
    }
}

/// A problem document on one line: `HTTP 400 malformed: <detail> (<subproblems>)`, the
/// type without its `urn:ietf:params:acme:error:` prefix, and the CA's text with its line
/// breaks folded and control characters escaped.
pub(crate) fn problem_line(
    status: Option<u16>,
    kind: Option<&str>,
    detail: &str,
    subproblems: &[String],
) -> String {
    let kind = kind.map(|k| k.strip_prefix("urn:ietf:params:acme:error:").unwrap_or(k));
    let mut s = match (status, kind) {
        (Some(st), Some(k)) => format!("HTTP {st} {k}: "),
        (Some(st), None) => format!("HTTP {st}: "),
        (None, Some(k)) => format!("{k}: "),
        (None, None) => String::new(),
    };
    s.push_str(&fold(detail));
    if !subproblems.is_empty() {
        let parts: Vec<String> = subproblems.iter().map(|p| fold(p)).collect();
        s.push_str(&format!(" ({})", parts.join("; ")));
    }
    s
}

/// [`problem_line`] of an instant-acme problem.
pub(crate) fn problem_text(p: &instant_acme::Problem) -> String {
    problem_line(
        p.status,
        p.r#type.as_deref(),
        p.detail.as_deref().unwrap_or("no detail given"),
        &subproblems(p),
    )
}

fn subproblems(p: &instant_acme::Problem) -> Vec<String> {
    p.subproblems
        .iter()
        .map(|s| {
            let who = match &s.identifier {
                Some(instant_acme::Identifier::Dns(d)) => d.clone(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            format!("{who}: {}", s.detail.as_deref().unwrap_or("no detail"))
        })
        .collect()
}

/// Text from a server on one line: runs of white space (line breaks of pretty-printed JSON
/// included) become one space, and control characters are escaped.
pub(crate) fn fold(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    crate::text::escape_control(&joined)
}

fn seen_part(seen: &[String]) -> String {
    if seen.is_empty() {
        "nothing found".to_owned()
    } else {
        fold(&seen.join("; "))
    }
}

fn offered_part(offered: &[String]) -> String {
    if offered.is_empty() {
        "it offers no profiles".to_owned()
    } else {
        format!("offered: {}", offered.join(", "))
    }
}

fn attempts_part(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (after {attempts} attempts)")
    } else {
        String::new()
    }
}

/// Turns the last error of a step into ours, keeping the CA's evidence.
pub(crate) fn acme_error(step: &'static str, e: retry::Exhausted) -> Error {
    let retry::Exhausted {
        error,
        attempts,
        retry_after,
    } = e;
    match error {
        instant_acme::Error::Api(p) => Error::Refused {
            step,
            status: p.status,
            kind: p.r#type.clone(),
            detail: p.detail.clone().unwrap_or_else(|| "no detail given".into()),
            subproblems: subproblems(&p),
            attempts,
            retry_after,
        },
        instant_acme::Error::Other(e) if e.is::<http::TooLarge>() => {
            match e.downcast::<http::TooLarge>() {
                Ok(t) => Error::TooLarge {
                    step,
                    url: t.url,
                    limit: t.limit,
                },
                Err(e) => Error::Protocol {
                    step,
                    source: instant_acme::Error::Other(e),
                },
            }
        }
        instant_acme::Error::Other(e) if e.downcast_ref::<http::Transport>().is_some() => {
            Error::Unreachable {
                step,
                reason: e.to_string(),
                attempts,
            }
        }
        source => Error::Protocol { step, source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_say_whether_they_offer_ari_and_which_profiles() {
        let url = "https://ca.example/dir";
        let ok = ::http::StatusCode::OK;
        // Shaped like Let's Encrypt's directory.
        let le = br#"{"newNonce":"https://ca.example/nonce","newAccount":"https://ca.example/acct",
            "newOrder":"https://ca.example/order","renewalInfo":"https://ca.example/ari",
            "meta":{"caaIdentities":["LetsEncrypt.org"],"profiles":{"tlsserver":"https://ca.example/docs#tlsserver",
            "classic":"https://ca.example/docs#classic","shortlived":"https://ca.example/docs#short"}}}"#;
        let dir = parse_directory(url, ok, le).unwrap();
        assert!(dir.renewal_info);
        assert_eq!(dir.profiles, ["classic", "shortlived", "tlsserver"]);
        assert_eq!(dir.caa_identities, ["letsencrypt.org"]);
        // Shaped like Pebble 2.4's: neither.
        let pebble = br#"{"newOrder":"https://ca.example/order","meta":{"termsOfService":"x"}}"#;
        let dir = parse_directory(url, ok, pebble).unwrap();
        assert!(!dir.renewal_info);
        assert!(dir.profiles.is_empty());
        assert!(dir.caa_identities.is_empty());
        // Not a directory at all: the error keeps the evidence.
        let err = parse_directory(url, ok, b"<html>login</html>").unwrap_err();
        assert!(err.to_string().contains("not an ACME directory"), "{err}");
        assert!(err.to_string().contains("<html>login</html>"), "{err}");
        let err = parse_directory(url, ::http::StatusCode::NOT_FOUND, b"no").unwrap_err();
        assert!(err.to_string().contains("HTTP 404"), "{err}");
    }

    #[test]
    fn refused_shows_status_type_detail_and_attempts() {
        let e = Error::Refused {
            step: "new order",
            status: Some(429),
            kind: Some("urn:ietf:params:acme:error:rateLimited".into()),
            detail: "too many new orders recently".into(),
            subproblems: vec![],
            attempts: 4,
            retry_after: None,
        };
        assert_eq!(
            e.to_string(),
            "new order: the CA answered HTTP 429 rateLimited: too many new orders recently (after 4 attempts)"
        );
        // A pretty-printed detail and subproblems stay on one line.
        let e = Error::Refused {
            step: "new account",
            status: Some(400),
            kind: Some("urn:ietf:params:acme:error:malformed".into()),
            detail: "{\n  \"reason\": \"no\u{1b}[31m\"\n}".into(),
            subproblems: vec!["a.example: bad\nname".into()],
            attempts: 1,
            retry_after: None,
        };
        assert_eq!(
            e.to_string(),
            "new account: the CA answered HTTP 400 malformed: { \"reason\": \"no\\x1b[31m\" } (a.example: bad name)"
        );
    }

    #[test]
    fn transport_failures_become_unreachable() {
        let err = acme_error(
            "directory",
            retry::Exhausted {
                error: http::Transport {
                    url: "https://127.0.0.1:1/dir".into(),
                    reason: "connection refused".into(),
                }
                .into(),
                attempts: 2,
                retry_after: None,
            },
        );
        assert_eq!(
            err.to_string(),
            "cannot reach the ACME server during directory: https://127.0.0.1:1/dir: connection refused (after 2 attempt(s)); check the issuer's directory URL, the network and trust_roots"
        );
    }
}
