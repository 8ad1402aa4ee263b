//! The HTTP side of alert delivery: one reqwest client (rustls, the system roots, as the rest
//! of certkeeper), posting JSON, and the errors a delivery can meet, with which of them are
//! worth another attempt.

use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;

use crate::config::Secret;
use crate::deploy::reload::escape_control;

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
            DeliveryError::TimedOut | DeliveryError::Request(_) => false,
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
            DeliveryError::Status { status, body, .. } => write!(f, "HTTP {status}: {body}"),
            DeliveryError::Vendor { code, message, .. } => write!(f, "error {code}: {message}"),
            DeliveryError::Request(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for DeliveryError {}

/// An answer: status and body text.
pub struct Answer {
    /// The status code.
    pub status: StatusCode,
    /// The body (at most [`MAX_BODY`] bytes kept), secrets redacted, control characters
    /// escaped.
    pub body: String,
}

impl Client {
    /// A client trusting the system roots, with a request timeout of [`REQUEST_TIMEOUT`].
    pub fn new() -> Client {
        let roots = crate::x509::native_root_store();
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("certkeeper/", env!("CARGO_PKG_VERSION")));
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

    /// POSTs `body` (JSON) to `url` with `headers`, and reads the answer. `secrets` are
    /// removed from anything an error or log line could show.
    pub async fn post_json(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
        secrets: &[&Secret],
    ) -> Result<Answer, DeliveryError> {
        let mut req = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let rsp = req.send().await.map_err(|e| transport(e, secrets))?;
        let status = rsp.status();
        let retry_after = rsp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(MAX_RETRY_AFTER)));
        let bytes = rsp.bytes().await.map_err(|e| transport(e, secrets))?;
        let body = clean(&bytes[..bytes.len().min(MAX_BODY)], secrets);
        if !status.is_success() {
            return Err(DeliveryError::Status {
                status: status.as_u16(),
                body: body.chars().take(200).collect(),
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
fn transport(e: reqwest::Error, secrets: &[&Secret]) -> DeliveryError {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    DeliveryError::Transport(clean(text.as_bytes(), secrets))
}

/// Text from outside, safe to show: lossy UTF-8, every secret (and the token part of a
/// secret URL) replaced by `<redacted>`, control characters escaped.
pub fn clean(bytes: &[u8], secrets: &[&Secret]) -> String {
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    for secret in secrets {
        for part in secret_parts(secret.expose()) {
            if !part.is_empty() {
                text = text.replace(part, "<redacted>");
            }
        }
    }
    escape_control(text.trim())
}

/// A secret and, for a URL, its path and query (where tokens live), so that an echo of
/// either is caught.
fn secret_parts(secret: &str) -> Vec<&str> {
    let mut out = vec![secret];
    if let Some(rest) = secret.split_once("://").map(|(_, r)| r)
        && let Some(at) = rest.find('/')
    {
        let path = &rest[at..];
        out.push(path);
        if let Some((p, q)) = path.split_once('?') {
            out.extend([p, q].into_iter().filter(|s| s.len() > 8));
            for pair in q.split('&') {
                if let Some((_, v)) = pair.split_once('=')
                    && v.len() >= 8
                {
                    out.push(v);
                }
            }
        }
    }
    // Longest first, so that a part inside another is not replaced first.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out
}

/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The most of an answer's body kept.
pub const MAX_BODY: usize = 4096;
/// The longest Retry-After honoured.
const MAX_RETRY_AFTER: u64 = 5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_url_tokens_are_redacted() {
        let url = Secret::new(
            "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa".into(),
        );
        let sign = Secret::new("SECabcdef0123456789".into());
        let text = b"invalid webhook url, hint: key=693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa \x1b[31m SECabcdef0123456789";
        let out = clean(text, &[&url, &sign]);
        assert!(!out.contains("693a91f6"), "{out}");
        assert!(!out.contains("SECabcdef"), "{out}");
        assert!(out.contains("\\x1b"), "{out}");
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
