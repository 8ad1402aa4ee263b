//! Feishu / Lark (飞书) custom bots: `msg_type: post` (a title and paragraphs) to
//! `.../open-apis/bot/v2/hook/<id>`, signed when a secret is given: the body carries
//! `timestamp` (seconds) and `sign`, the base64 of HMAC-SHA256 with `"{timestamp}\n{secret}"`
//! as key over an empty message; Feishu refuses a timestamp more than an hour off. It
//! answers HTTP 200 with `{"code": N, "msg": "..."}`: 0 is a delivery, 9499 (too many
//! requests) is retried, 19021 is a bad or stale signature, 19001 an unknown hook.

use async_trait::async_trait;
use base64::Engine;
use serde_json::json;

use super::client::{Client, DeliveryError};
use super::redact::Redactor;
use super::{Event, Notifier};
use crate::config::Secret;

/// A Feishu custom bot.
#[derive(Debug)]
pub struct Feishu {
    /// The webhook URL with its hook id.
    pub url: Secret,
    /// The signing secret.
    pub secret: Option<Secret>,
}

#[async_trait]
impl Notifier for Feishu {
    async fn send(&self, client: &Client, event: &Event) -> Result<String, DeliveryError> {
        let mut message = post(event);
        // The signature of this request, good for an hour, so hidden too.
        let mut signed = None;
        if let Some(secret) = &self.secret {
            let ts = time::OffsetDateTime::now_utc().unix_timestamp();
            let sig = sign(ts, secret.expose());
            message["timestamp"] = json!(ts.to_string());
            message["sign"] = json!(sig);
            signed = Some(Secret::new(sig));
        }
        let body =
            serde_json::to_vec(&message).map_err(|e| DeliveryError::Request(e.to_string()))?;
        let mut secrets = self.secrets();
        secrets.extend(signed.as_ref());
        let answer = client
            .post_json(self.url.expose(), &[], body, &Redactor::new(&secrets))
            .await?;
        let v: serde_json::Value =
            serde_json::from_str(&answer.body).map_err(|_| DeliveryError::Vendor {
                code: -1,
                message: format!(
                    "unexpected answer: {}",
                    answer.body.chars().take(200).collect::<String>()
                ),
                rate_limited: false,
            })?;
        // Older deployments answer {"StatusCode": 0, "StatusMessage": "success"}.
        let code = v["code"]
            .as_i64()
            .or(v["StatusCode"].as_i64())
            .unwrap_or(-1);
        let msg = v["msg"]
            .as_str()
            .or(v["StatusMessage"].as_str())
            .unwrap_or_default()
            .to_owned();
        if code == 0 {
            Ok(format!("code 0 ({msg})"))
        } else {
            Err(DeliveryError::Vendor {
                code,
                message: msg,
                rate_limited: code == RATE_LIMITED,
            })
        }
    }

    fn secrets(&self) -> Vec<&Secret> {
        let mut secrets = vec![&self.url];
        secrets.extend(self.secret.as_ref());
        secrets
    }
}

/// The `post` message for `event`.
pub fn post(event: &Event) -> serde_json::Value {
    let text = |t: String| json!([{"tag": "text", "text": t}]);
    let mut content = vec![text(event.message.clone())];
    for (label, value) in event.facts() {
        content.push(text(format!("{label}: {value}")));
    }
    content.push(text(event.consequence().to_owned()));
    json!({
        "msg_type": "post",
        "content": {"post": {"zh_cn": {"title": event.title(), "content": content}}}
    })
}

/// base64(HMAC-SHA256(key = "{timestamp}\n{secret}", message = "")).
pub fn sign(timestamp: i64, secret: &str) -> String {
    let key_bytes = format!("{timestamp}\n{secret}");
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key_bytes.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(aws_lc_rs::hmac::sign(&key, b"").as_ref())
}

/// Feishu's "too many requests".
const RATE_LIMITED: i64 = 9499;
