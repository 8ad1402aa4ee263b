//! Raw calls to the Cloudflare API v4: one shared HTTP client, the bearer token, and the
//! retry loop (429 honouring `Retry-After`, 5xx and transport errors, with backoff and jitter,
//! bounded in attempts and in total time: certkeeper's one `RetryPolicy`). The base URL is
//! configurable (`api_base`), so that tests run against a local fake. Errors come back as
//! [`CallError`]: what the API answered, kept whole, for `lib.rs` to turn into certkeeper's
//! messages.

use std::fmt;
use std::time::Duration;

use certkeeper_dns::Error as DnsError;
use certkeeper_dns::http::{Failure, Pager};
use certkeeper_dns::retry::{Retry, RetryAfter, RetryPolicy};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;

use crate::Error;
use crate::api::{ApiErrors, Deleted, DnsRecord, Envelope, NewRecord, ResultInfo, Zone};

pub use certkeeper_dns::http::{CONNECT_TIMEOUT, REQUEST_TIMEOUT};

/// How failed calls are retried by default: 429 (after its `Retry-After`, cut to
/// [`MAX_RETRY_AFTER`]), 5xx and transport errors, [`DEFAULT_ATTEMPTS`] attempts, waits from
/// [`DEFAULT_BACKOFF`] doubling, [`DEFAULT_TOTAL`] in all. Other answers are final at once.
pub const DEFAULT_RETRY: RetryPolicy = RetryPolicy::new(DEFAULT_ATTEMPTS, DEFAULT_BACKOFF)
    .retry_after(RetryAfter::Replaces {
        cap: MAX_RETRY_AFTER,
    })
    .total(DEFAULT_TOTAL);

/// Attempts per call by default.
pub const DEFAULT_ATTEMPTS: u32 = 5;
/// The first retry's wait by default (then 1 s, 2 s, 4 s).
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(500);
/// The longest `Retry-After` honoured by default.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
/// The most one call takes by default, retries included.
pub const DEFAULT_TOTAL: Duration = Duration::from_secs(30);

/// Why a call failed, as the API or the network said it.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The API answered `success: false` (or a non-2xx status) with its errors.
    Api {
        status: u16,
        errors: ApiErrors,
        gave_up_after: Option<u32>,
    },
    /// The answer was not the API's JSON envelope (a proxy's HTML page, a truncated body).
    Unexpected {
        status: u16,
        detail: String,
        gave_up_after: Option<u32>,
    },
    /// No answer: connection refused, timed out, reset.
    Transport {
        detail: String,
        gave_up_after: Option<u32>,
    },
    /// An answer past a bound (a redirect, a body past 1 MiB, a listing without end): final,
    /// and already certkeeper's error.
    Final(DnsError),
}

impl CallError {
    fn gave_up_after(mut self, attempts: u32) -> CallError {
        match &mut self {
            CallError::Api { gave_up_after, .. }
            | CallError::Unexpected { gave_up_after, .. }
            | CallError::Transport { gave_up_after, .. } => *gave_up_after = Some(attempts),
            CallError::Final(_) => {}
        }
        self
    }
}

/// The API token, as the `Authorization` header value. Its `Debug` is redacted and it has
/// no `Display`.
struct Token(HeaderValue);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// The API client: shared by all calls of one provider.
pub(crate) struct Client {
    http: reqwest::Client,
    base: Url,
    token: Token,
    retry: RetryPolicy,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("api_base", &self.base.as_str())
            .field("token", &self.token)
            .field("retry", &self.retry)
            .finish()
    }
}

impl Client {
    /// Checks the token and the base URL, and builds the HTTP client.
    pub(crate) fn new(token: &str, api_base: &str) -> Result<Client, Error> {
        if token.is_empty() {
            return Err(Error::EmptyToken);
        }
        // Tokens are URL-safe base64-like text; anything else (a space, a newline) would
        // make a malformed header, and the value must not end up in an error message.
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::MalformedToken);
        }
        let mut header =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| Error::MalformedToken)?;
        header.set_sensitive(true);
        let invalid = |reason: &str| Error::InvalidApiBase {
            api_base: api_base.to_owned(),
            reason: reason.to_owned(),
        };
        let base = Url::parse(api_base).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(invalid("it must be an http:// or https:// URL"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("it must not have a query or a fragment"));
        }
        // No redirects and no Referer: every request carries the token.
        let http = certkeeper_dns::http::client_builder()
            .build()
            .map_err(|e| Error::Client(e.without_url()))?;
        Ok(Client {
            http,
            base,
            token: Token(header),
            retry: DEFAULT_RETRY,
        })
    }

    pub(crate) fn set_retry(&mut self, retry: RetryPolicy) {
        self.retry = retry;
    }

    pub(crate) fn api_base(&self) -> &str {
        self.base.as_str()
    }

    /// `GET /zones?name=<name>`: the zones named exactly `name` (none for a non-zone), from
    /// one page of at most [`ZONES_PER_PAGE`].
    pub(crate) async fn zones_named(&self, name: &str) -> Result<Vec<Zone>, CallError> {
        let per_page = ZONES_PER_PAGE.to_string();
        let url = self.url(&["zones"], &[("name", name), ("per_page", &per_page)]);
        let mut pager = Pager::new("GET zones", ZONES_PER_PAGE, 1, ZONES_PER_PAGE);
        pager.next_page().map_err(CallError::Final)?;
        let (zones, _): (Vec<Zone>, _) = self.call("GET zones", Method::GET, url, None).await?;
        pager.read(zones.len()).map_err(CallError::Final)?;
        Ok(zones)
    }

    /// `POST /zones/{zone}/dns_records` of a TXT record.
    pub(crate) async fn create_txt(
        &self,
        zone: &str,
        name: &str,
        content: &str,
        ttl: u32,
    ) -> Result<DnsRecord, CallError> {
        let url = self.url(&["zones", zone, "dns_records"], &[]);
        let body = NewRecord {
            kind: "TXT",
            name,
            content,
            ttl,
        };
        // Serializing a struct of strings and an integer cannot fail.
        let body = serde_json::to_value(&body).unwrap_or_default();
        Ok(self
            .call("POST dns_records", Method::POST, url, Some(&body))
            .await?
            .0)
    }

    /// The TXT record `name` = `content` in `zone`, if listed: `GET
    /// /zones/{zone}/dns_records?type=TXT&name=<name>&content=<content>`, page after page
    /// until it is found, keeping none of the others.
    pub(crate) async fn find_txt(
        &self,
        zone: &str,
        name: &str,
        content: &str,
    ) -> Result<Option<DnsRecord>, CallError> {
        let per_page = PER_PAGE.to_string();
        let mut pager = Pager::new(
            "GET dns_records",
            PER_PAGE,
            MAX_PAGES,
            PER_PAGE * MAX_PAGES as usize,
        );
        loop {
            let page = pager.next_page().map_err(CallError::Final)?.to_string();
            let query = [
                ("type", "TXT"),
                ("name", name),
                ("content", content),
                ("page", page.as_str()),
                ("per_page", per_page.as_str()),
            ];
            let url = self.url(&["zones", zone, "dns_records"], &query);
            let (batch, info): (Vec<DnsRecord>, _) =
                self.call("GET dns_records", Method::GET, url, None).await?;
            pager.read(batch.len()).map_err(CallError::Final)?;
            let empty = batch.is_empty();
            if let Some(found) = batch
                .into_iter()
                .find(|r| r.content == content && r.name.eq_ignore_ascii_case(name))
            {
                return Ok(Some(found));
            }
            let last = info.is_none_or(|i: ResultInfo| i.page >= i.total_pages);
            if empty || last {
                return Ok(None);
            }
        }
    }

    /// `DELETE /zones/{zone}/dns_records/{id}`.
    pub(crate) async fn delete_record(&self, zone: &str, id: &str) -> Result<(), CallError> {
        let url = self.url(&["zones", zone, "dns_records", id], &[]);
        let _: (Deleted, _) = self
            .call("DELETE dns_records", Method::DELETE, url, None)
            .await?;
        Ok(())
    }

    /// The base URL with `segments` appended (each percent-encoded, so that an id can never
    /// change the path) and `query`.
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        // `new` refused cannot-be-a-base URLs, the only ones without path segments.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// One call with retries; the result and the paging of a successful answer. `call`
    /// names it in errors.
    async fn call<T: DeserializeOwned>(
        &self,
        call: &str,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
    ) -> Result<(T, Option<ResultInfo>), CallError> {
        let mut retry = Retry::new(self.retry);
        loop {
            let timeout = retry
                .left()
                .map_or(REQUEST_TIMEOUT, |l| l.min(REQUEST_TIMEOUT));
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .header(AUTHORIZATION, self.token.0.clone())
                .header(ACCEPT, "application/json")
                .timeout(timeout);
            if let Some(body) = body {
                request = request.json(body);
            }
            let answer = match request.send().await {
                Err(e) => Err(Failure::Transport(e)),
                Ok(response) => certkeeper_dns::http::receive(call, response).await,
            };
            let (error, retry_after) = match answer {
                Err(Failure::Transport(e)) => (transport(e), None),
                Err(Failure::Final(e)) => return Err(CallError::Final(e)),
                Ok(answer) => {
                    let status = answer.status;
                    let retryable =
                        status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
                    match parse(status, &answer.body) {
                        Err(e) if retryable => (e, answer.retry_after),
                        other => return other,
                    }
                }
            };
            match retry.next(retry_after) {
                Some(wait) => tokio::time::sleep(wait).await,
                None => return Err(error.gave_up_after(retry.failed())),
            }
        }
    }
}

/// Reads an answer: the result of a successful envelope, or what went wrong.
fn parse<T: DeserializeOwned>(
    status: StatusCode,
    body: &[u8],
) -> Result<(T, Option<ResultInfo>), CallError> {
    let unexpected = |detail: String| CallError::Unexpected {
        status: status.as_u16(),
        detail,
        gave_up_after: None,
    };
    let envelope: Envelope<serde_json::Value> = match serde_json::from_slice(body) {
        Ok(envelope) => envelope,
        Err(_) => {
            return Err(unexpected(format!(
                "the answer is not Cloudflare's JSON envelope: {}",
                excerpt(body)
            )));
        }
    };
    if !envelope.success || !status.is_success() {
        return Err(CallError::Api {
            status: status.as_u16(),
            errors: ApiErrors(envelope.errors),
            gave_up_after: None,
        });
    }
    let Some(result) = envelope.result else {
        return Err(unexpected("a successful answer without a result".into()));
    };
    match serde_json::from_value(result) {
        Ok(result) => Ok((result, envelope.result_info)),
        Err(e) => Err(unexpected(format!("cannot read the result: {e}"))),
    }
}

/// A transport error with its causes, without the URL.
fn transport(e: reqwest::Error) -> CallError {
    let e = e.without_url();
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    CallError::Transport {
        detail,
        gave_up_after: None,
    }
}

/// The start of a body, printable on one line.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".into();
    }
    let mut out: String = text.chars().take(EXCERPT_CHARS).collect();
    if text.chars().count() > EXCERPT_CHARS {
        out.push_str("...");
    }
    out.escape_debug().to_string()
}

/// Records per list page (Cloudflare's default).
const PER_PAGE: usize = 100;
/// Zones per page of a zone lookup (Cloudflare's most).
const ZONES_PER_PAGE: usize = 50;
/// The most pages one listing reads (a name with 5,000 TXT records is not a challenge name).
const MAX_PAGES: u32 = 50;
/// How much of an unexpected body an error keeps.
const EXCERPT_CHARS: usize = 200;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_change_the_path() {
        let client = Client::new("t0ken", "http://127.0.0.1:1/client/v4/").expect("client");
        let url = client.url(&["zones", "../x?y", "dns_records"], &[("name", "a b&c")]);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:1/client/v4/zones/..%2Fx%3Fy/dns_records?name=a+b%26c"
        );
    }

    #[test]
    fn unexpected_bodies_are_cut_and_escaped() {
        let e = parse::<Zone>(
            StatusCode::BAD_GATEWAY,
            b"<html>\n\x1b[31mbad gateway</html>",
        );
        let Err(CallError::Unexpected { status, detail, .. }) = e else {
            panic!("not unexpected: {e:?}");
        };
        assert_eq!(status, 502);
        assert_eq!(
            detail,
            "the answer is not Cloudflare's JSON envelope: <html>\\n\\u{1b}[31mbad gateway</html>"
        );
        let long = "x".repeat(500);
        assert_eq!(excerpt(long.as_bytes()).len(), EXCERPT_CHARS + 3);
    }

    #[test]
    fn the_token_stays_out_of_debug() {
        let client =
            Client::new("s3cr3t-token", "https://api.cloudflare.com/client/v4").expect("client");
        let debug = format!("{client:?}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }
}
