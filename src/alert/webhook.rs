//! The generic webhook: the event as JSON (`event, certificate, domains, message, not_after,
//! snapshot, host, timestamp`), and with a secret, `X-Certkeeper-Signature: sha256=<hex
//! HMAC-SHA256 of the exact body bytes>`. `X-Certkeeper-Timestamp` (unix seconds, the
//! event's time, which the signed body carries too) lets a receiver refuse replays. Any 2xx
//! answer is a delivery.

use async_trait::async_trait;

use super::client::{Client, DeliveryError};
use super::redact::Redactor;
use super::{Event, Notifier};
use crate::config::Secret;

/// A JSON webhook.
#[derive(Debug)]
pub struct Webhook {
    /// Where to POST (treated as a secret: it may carry a token).
    pub url: Secret,
    /// The signing secret.
    pub secret: Option<Secret>,
}

#[async_trait]
impl Notifier for Webhook {
    async fn send(&self, client: &Client, event: &Event) -> Result<String, DeliveryError> {
        let body = serde_json::to_vec(event).map_err(|e| DeliveryError::Request(e.to_string()))?;
        let mut headers = vec![("x-certkeeper-timestamp", unix_seconds(&event.timestamp))];
        if let Some(secret) = &self.secret {
            headers.push(("x-certkeeper-signature", signature(secret.expose(), &body)));
        }
        let redactor = Redactor::new(&self.secrets());
        let answer = client
            .post_json(self.url.expose(), &headers, body, &redactor)
            .await?;
        Ok(format!("HTTP {}", answer.status.as_u16()))
    }

    fn secrets(&self) -> Vec<&Secret> {
        let mut secrets = vec![&self.url];
        secrets.extend(self.secret.as_ref());
        secrets
    }
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    format!(
        "sha256={}",
        hex::encode(aws_lc_rs::hmac::sign(&key, body).as_ref())
    )
}

fn unix_seconds(rfc3339: &str) -> String {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc().unix_timestamp())
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
