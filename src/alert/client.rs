//! The HTTP side of alert delivery: one reqwest client (rustls, the system roots, as the rest
//! of certkeeper), posting JSON, and the errors a delivery can meet, with which of them are
//! worth another attempt.
//!
//! Every channel's URL carries its credential, so the client never follows a redirect and
//! never sends `Referer`: a 3xx is a failure that names its status and the host it points to,
//! nothing more (a 307 would re-send the signed body elsewhere, a 302 would turn the POST into
//! a GET that any server answers 200). These settings, and the `User-Agent`, come from the
//! builder every HTTP client of certkeeper that carries a secret shares
//! (`certkeeper_dns::http::client_builder`), with shorter timeouts of its own (an alert never
//! holds a pass) and the TLS setup of the rest of certkeeper.
//!
//! An answer is read only as far as what can be shown ([`MAX_BODY`]), then the connection is
//! dropped, whatever its length says. This is why the providers' reader
//! (`certkeeper_dns::http::receive`, which refuses an answer past 1 MiB) is not used here: a
//! vendor's answer matters only by its status and its start, so an alert is delivered when a
//! generic webhook answers 200 with a body without end (`receive` would call that a failure),
//! and no more than 4 KiB is ever read.

use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;

use super::redact::Redactor;

/// The client every channel sends through.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
}

/// Why one attempt to deliver failed.
#[non_exhaustive]
#[derive(Debug)]
pub enum DeliveryError {
    /// No answer: connection refused or reset, TLS failure, timeout of the request.
    Transport(String),
    /// The overall time for delivery ran out.
    TimedOut,
    /// An HTTP status other than success, with the start of the body.
    Status {
        /// The status code.
        status: u16,
        /// The start of the answer's body.
        body: String,
        /// What Retry-After asked for.
        retry_after: Option<Duration>,
    },
    /// The vendor answered with an error code in its body.
    Vendor {
        /// Its code.
        code: i64,
        /// Its message.
        message: String,
        /// Whether the vendor means "too fast, try later".
        rate_limited: bool,
    },
    /// A redirect, not followed: it could carry the URL's token or the signed body
    /// elsewhere.
    Redirect {
        /// The status code (3xx).
        status: u16,
        /// The host of its `Location` (never its path or query), when it has one.
        host: Option<String>,
    },
    /// The request could not be built (a malformed URL, a secret that cannot be used).
    Request(String),
}

impl DeliveryError {
    /// Whether another attempt may succeed: no answer, 429, 5xx, a vendor's rate limit.
    pub fn retryable(&self) -> bool {
        match self {
            DeliveryError::Transport(_) => true,
            DeliveryError::Status { status, .. } => *status == 429 || *status >= 500,
            DeliveryError::Vendor { rate_limited, .. } => *rate_limited,
            DeliveryError::TimedOut
            | DeliveryError::Redirect { .. }
            | DeliveryError::Request(_) => false,
        }
    }

    /// The wait the answer asked for.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DeliveryError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliveryError::Transport(e) => write!(f, "no answer: {e}"),
            DeliveryError::TimedOut => f.write_str("gave up: the time for delivery ran out"),
            DeliveryError::Status { status, body, .. } if body.is_empty() => {
                write!(f, "HTTP {status}")
            }
            DeliveryError::Status { status, body, .. } => {
                write!(f, "HTTP {status}: {}", excerpt(body))
            }
            DeliveryError::Vendor { code, message, .. } => {
                write!(f, "error {code}: {}", excerpt(message))
            }
            DeliveryError::Redirect { status, host } => match host {
                Some(host) => write!(
                    f,
                    "HTTP {status} redirect to {host}, not followed: configure the URL it redirects to"
                ),
                None => write!(
                    f,
                    "HTTP {status} redirect without a usable Location, not followed: check the channel's URL"
                ),
            },
            DeliveryError::Request(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for DeliveryError {}

/// An answer: status and body text.
pub struct Answer {
    /// The status code.
    pub status: StatusCode,
    /// The body (at most [`MAX_BODY`] bytes read), secrets redacted; not yet on one line
    /// (JSON is parsed from it): what is shown of it goes through [`Redactor::show`].
    pub body: String,
}

impl Client {
    /// A client trusting the system roots, with a request timeout of [`REQUEST_TIMEOUT`].
    pub fn new() -> Client {
        let roots = crate::x509::native_root_store();
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        // No redirects, no Referer, certkeeper's User-Agent: the shared settings; the
        // timeouts are the alerts' own.
        let builder = certkeeper_dns::http::client_builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT);
        let builder = match rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
        {
            Ok(tls) => builder
                .tls_backend_preconfigured(tls.with_root_certificates(roots).with_no_client_auth()),
            Err(_) => builder,
        };
        // Building fails only when the TLS backend cannot start; the default client then
        // still delivers to http:// endpoints and reports TLS errors per attempt.
        let http = builder.build().unwrap_or_else(|_| reqwest::Client::new());
        Client { http }
    }

    /// POSTs `body` (JSON) to `url` with `headers`, and reads the start of the answer.
    /// `redactor` removes the channel's secrets from anything an error or log line could
    /// show.
    pub async fn post_json(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
        redactor: &Redactor,
    ) -> Result<Answer, DeliveryError> {
        let mut req = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let mut rsp = req.send().await.map_err(|e| transport(e, redactor))?;
        let status = rsp.status();
        if status.is_redirection() {
            let host = certkeeper_dns::http::redirect_host(
                rsp.url(),
                rsp.headers().get(reqwest::header::LOCATION),
            );
            return Err(DeliveryError::Redirect {
                status: status.as_u16(),
                host: host.map(|h| redactor.show(&h)),
            });
        }
        // Seconds or an HTTP date, read as the providers read it.
        let retry_after = certkeeper_dns::http::retry_after(
            rsp.headers().get(reqwest::header::RETRY_AFTER),
            std::time::SystemTime::now(),
        );
        // Only what can be shown is read, chunk by chunk, whatever content-length says; the
        // rest is left unread and the connection dropped with `rsp`.
        let mut bytes = Vec::new();
        let mut cut = false;
        while let Some(chunk) = rsp.chunk().await.map_err(|e| transport(e, redactor))? {
            let room = MAX_BODY - bytes.len();
            if chunk.len() >= room {
                bytes.extend_from_slice(&chunk[..room]);
                cut = true;
                break;
            }
            bytes.extend_from_slice(&chunk);
        }
        drop(rsp);
        let body = redactor.redact(&String::from_utf8_lossy(&bytes), cut);
        if !status.is_success() {
            return Err(DeliveryError::Status {
                status: status.as_u16(),
                body: body.trim().to_owned(),
                retry_after,
            });
        }
        Ok(Answer { status, body })
    }
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

/// A transport error without its URL (which may carry a token), secrets removed.
fn transport(e: reqwest::Error, redactor: &Redactor) -> DeliveryError {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    DeliveryError::Transport(redactor.show(&text))
}

/// The start of `text`, at most [`EXCERPT`] characters, `…` when cut.
pub fn excerpt(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = chars.by_ref().take(EXCERPT).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The most of an answer's body read.
pub const MAX_BODY: usize = 4096;
/// The most of a vendor's text an error shows, in characters.
pub const EXCERPT: usize = 200;
/// The longest Retry-After honoured (the retry policy cuts longer ones to it).
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn secrets_and_url_tokens_are_redacted() {
        let url = Secret::new(
            "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa".into(),
        );
        let sign = Secret::new("SECabcdef0123456789".into());
        let text = "invalid webhook url, hint: key=693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa \x1b[31m SECabcdef0123456789\nnext";
        let out = Redactor::new(&[&url, &sign]).show(text);
        assert!(!out.contains("693a91f6"), "{out}");
        assert!(!out.contains("SECabcdef"), "{out}");
        assert!(out.contains("\\x1b") && out.contains("\\x0anext"), "{out}");
    }

    #[test]
    fn a_redirect_names_the_host_of_its_location_only() {
        let from = reqwest::Url::parse("https://hooks.example.com/services/T/B/token").unwrap();
        let host = |l: &str| certkeeper_dns::http::redirect_host(&from, Some(&l.parse().unwrap()));
        assert_eq!(
            host("http://127.0.0.1:9/landing?key=x").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(host("/elsewhere?x=1").as_deref(), Some("hooks.example.com"));
        assert_eq!(certkeeper_dns::http::redirect_host(&from, None), None);
        let redirect = DeliveryError::Redirect {
            status: 307,
            host: Some("127.0.0.1".into()),
        };
        assert!(!redirect.retryable());
        assert_eq!(
            redirect.to_string(),
            "HTTP 307 redirect to 127.0.0.1, not followed: configure the URL it redirects to"
        );
    }

    #[test]
    fn what_is_retried() {
        let status = |s| DeliveryError::Status {
            status: s,
            body: String::new(),
            retry_after: None,
        };
        assert!(status(500).retryable() && status(429).retryable() && status(503).retryable());
        assert!(!status(400).retryable() && !status(404).retryable());
        assert!(DeliveryError::Transport("refused".into()).retryable());
        assert!(!DeliveryError::TimedOut.retryable());
    }
}
