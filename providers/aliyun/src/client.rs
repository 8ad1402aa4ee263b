//! Raw Alidns RPC calls: each call is a signed `POST` with an
//! `application/x-www-form-urlencoded` body carrying the common parameters (`Format=JSON`,
//! `Version=2015-01-09`, `SignatureMethod=HMAC-SHA1`, `SignatureVersion=1.0`, a fresh
//! `SignatureNonce` and `Timestamp` on every attempt) and the action's own.
//!
//! Throttling, 5xx answers and transport failures are retried with exponential backoff and
//! jitter (certkeeper's one `RetryPolicy`); every other error is returned at once (a 4xx
//! other than throttling does not get better by asking again, and retrying it only hides the
//! cause — acme.sh #3585). Alidns's documentation does not promise a `Retry-After` on
//! throttling (`Throttling.*`, HTTP 400 or 429) or on 503; when an answer has one (seconds
//! or an HTTP date: the gateway in front of the API may add it), the next attempt waits at
//! least that long, and a wait past [`MAX_RETRY_AFTER`] ends the retries at once with the
//! vendor's error rather than hold the operation.

use std::error::Error as StdError;
use std::process;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use certkeeper_dns::Error as DnsError;
use certkeeper_dns::http::Failure;
use certkeeper_dns::retry::{Retry, RetryAfter, RetryPolicy};
use reqwest::Url;
use reqwest::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;

use crate::api::ErrorBody;
use crate::sign::{self, Secret};

/// The API version this client speaks.
pub(crate) const VERSION: &str = "2015-01-09";
/// Requests are signed for, and sent with, this method.
const METHOD: &str = "POST";
/// Attempts per call, the first included.
pub(crate) const MAX_ATTEMPTS: u32 = 5;
/// The wait before the first retry; doubled for each further one.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(4);
/// The longest `Retry-After` waited for; a server asking more ends the retries.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
/// How a call is retried: certkeeper's one policy with the numbers above (waits spread by
/// jitter, never past them; a server's `Retry-After` honoured up to [`MAX_RETRY_AFTER`]).
const RETRY: RetryPolicy = RetryPolicy::new(MAX_ATTEMPTS, FIRST_BACKOFF)
    .max_backoff(MAX_BACKOFF)
    .retry_after(RetryAfter::AtLeast {
        limit: MAX_RETRY_AFTER,
    });
/// How long one request may take.
pub(crate) use certkeeper_dns::http::REQUEST_TIMEOUT;

/// A signed-request client for one AccessKey and endpoint.
#[derive(Debug)]
pub(crate) struct Client {
    http: reqwest::Client,
    endpoint: Url,
    access_key_id: String,
    secret: Secret,
}

/// Why a call failed. Never holds the request (its body carries the AccessKeyId and the
/// signature).
#[derive(Debug)]
pub(crate) enum CallError {
    /// The API answered with its error body.
    Api {
        /// HTTP status.
        status: u16,
        /// The vendor's error.
        body: ErrorBody,
        /// How many attempts were made.
        attempts: u32,
    },
    /// The API answered something this client cannot read.
    Unexpected {
        /// HTTP status.
        status: u16,
        /// What was wrong, with the start of the answer.
        detail: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// No answer.
    Transport {
        /// What the HTTP stack said, without the URL.
        detail: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// An answer past a bound (a redirect, a body past 1 MiB, a listing without end): final,
    /// and already certkeeper's error.
    Final(DnsError),
}

impl CallError {
    /// The vendor's error code, if the API answered one.
    pub(crate) fn code(&self) -> Option<&str> {
        match self {
            CallError::Api { body, .. } => Some(&body.code),
            _ => None,
        }
    }
}

impl Client {
    /// A client for `endpoint` (already validated: http or https, no query).
    pub(crate) fn new(
        endpoint: Url,
        access_key_id: String,
        secret: Secret,
    ) -> Result<Client, reqwest::Error> {
        // No redirects and no Referer: every request carries the AccessKey and a signature.
        let http = certkeeper_dns::http::client_builder().build()?;
        Ok(Client {
            http,
            endpoint,
            access_key_id,
            secret,
        })
    }

    /// Calls `action` with `params`, retrying what is worth retrying, and decodes the answer.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        action: &str,
        params: &[(&str, &str)],
    ) -> Result<T, CallError> {
        let mut retry = Retry::new(RETRY);
        loop {
            let (result, retry_after) = self.attempt(action, params, retry.failed() + 1).await;
            match result {
                Err(e) if retryable(&e) => match retry.next(retry_after) {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => return Err(e),
                },
                other => return other,
            }
        }
    }

    /// One signed request, with its own nonce and timestamp: its result, and the answer's
    /// `Retry-After` when it has one.
    async fn attempt<T: DeserializeOwned>(
        &self,
        action: &str,
        params: &[(&str, &str)],
        attempt: u32,
    ) -> (Result<T, CallError>, Option<Duration>) {
        let mut retry_after = None;
        let result = self
            .attempt_inner(action, params, attempt, &mut retry_after)
            .await;
        (result, retry_after)
    }

    async fn attempt_inner<T: DeserializeOwned>(
        &self,
        action: &str,
        params: &[(&str, &str)],
        attempt: u32,
        retry_after: &mut Option<Duration>,
    ) -> Result<T, CallError> {
        let nonce = nonce();
        let timestamp = timestamp(SystemTime::now());
        let mut all: Vec<(&str, &str)> = vec![
            ("Action", action),
            ("Version", VERSION),
            ("Format", "JSON"),
            ("AccessKeyId", &self.access_key_id),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("SignatureNonce", &nonce),
            ("Timestamp", &timestamp),
        ];
        all.extend_from_slice(params);
        let signature = sign::sign(METHOD, &all, &self.secret);
        let body = format!(
            "{}&Signature={}",
            sign::canonical_query(&all),
            sign::percent_encode(&signature)
        );
        let transport = |e: reqwest::Error| CallError::Transport {
            detail: describe(e),
            attempts: attempt,
        };
        let response = self
            .http
            .post(self.endpoint.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(transport)?;
        let answer = match certkeeper_dns::http::receive(action, response).await {
            Ok(answer) => answer,
            Err(Failure::Transport(e)) => return Err(transport(e)),
            Err(Failure::Final(e)) => return Err(CallError::Final(e)),
        };
        *retry_after = answer.retry_after;
        let status = answer.status.as_u16();
        let bytes = answer.body;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes).map_err(|e| CallError::Unexpected {
                status,
                detail: format!(
                    "cannot read the answer to {action}: {e}: {}",
                    snippet(&bytes)
                ),
                attempts: attempt,
            });
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) if !body.code.is_empty() => Err(CallError::Api {
                status,
                body,
                attempts: attempt,
            }),
            _ => Err(CallError::Unexpected {
                status,
                detail: format!("unexpected answer: {}", snippet(&bytes)),
                attempts: attempt,
            }),
        }
    }
}

/// Throttling, server-side failures and transport errors are worth another attempt;
/// nothing else is.
fn retryable(e: &CallError) -> bool {
    match e {
        CallError::Final(_) => false,
        CallError::Transport { .. } => true,
        CallError::Unexpected { status, .. } => *status >= 500 || *status == 429,
        CallError::Api { status, body, .. } => {
            *status >= 500
                || *status == 429
                || body.code.starts_with("Throttling")
                || body.code == "ServiceUnavailable"
                || body.code == "InternalError"
        }
    }
}

/// A reqwest error as one line, its causes included, without the URL.
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = if e.is_timeout() {
        format!(
            "no answer within {}: {e}",
            certkeeper_base::text::seconds(REQUEST_TIMEOUT)
        )
    } else {
        e.to_string()
    };
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.ends_with(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// The start of an answer, for error messages.
fn snippet(bytes: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// A fresh `SignatureNonce`: 128 random bits as a UUID-shaped string.
fn nonce() -> String {
    let mut bytes = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        // The system RNG failed: time, process and a counter are still unique per request,
        // which is all a nonce needs.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        bytes[..8].copy_from_slice(&(nanos as u64).to_be_bytes());
        bytes[8..12].copy_from_slice(&process::id().to_be_bytes());
        bytes[12..].copy_from_slice(&(count as u32).to_be_bytes());
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// `YYYY-MM-DDThh:mm:ssZ` in UTC: `time`'s RFC 3339, to the second (Aliyun refuses a
/// fraction).
pub(crate) fn timestamp(at: SystemTime) -> String {
    let t = time::OffsetDateTime::from(at);
    // A system clock's year always has four digits, the one case RFC 3339 cannot write;
    // the unix time stands in should it not.
    t.replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_format() {
        let at = UNIX_EPOCH + Duration::from_secs(1_458_837_714);
        assert_eq!(timestamp(at), "2016-03-24T16:41:54Z");
    }

    #[test]
    fn nonces_differ() {
        let a = nonce();
        assert_eq!(a.len(), 36);
        assert_ne!(a, nonce());
    }

    #[test]
    fn what_is_retried() {
        let api = |status, code: &str| CallError::Api {
            status,
            body: ErrorBody {
                code: code.into(),
                ..ErrorBody::default()
            },
            attempts: 1,
        };
        assert!(retryable(&api(400, "Throttling.User")));
        assert!(retryable(&api(429, "Throttling.User")));
        assert!(retryable(&api(503, "ServiceUnavailable")));
        assert!(retryable(&api(500, "InternalError")));
        assert!(!retryable(&api(403, "Forbidden.RAM")));
        assert!(!retryable(&api(400, "SignatureNonceUsed")));
        assert!(!retryable(&api(400, "SignatureDoesNotMatch")));
        assert!(!retryable(&api(400, "InvalidTimeStamp.Expired")));
    }

    #[test]
    fn snippets_are_bounded() {
        assert_eq!(snippet(b"  "), "(empty body)");
        assert_eq!(snippet("é".repeat(300).as_bytes()).chars().count(), 201);
    }
}
