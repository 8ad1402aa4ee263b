//! WeCom (企业微信) group robots: `msgtype: markdown` to `.../cgi-bin/webhook/send?key=KEY`.
//! The key in the URL is the credential (no signing mode). WeCom answers HTTP 200 with
//! `{"errcode": N, "errmsg": "..."}`: 0 is a delivery; 45009 means "too frequent" and is
//! retried; any other code (93000: invalid webhook URL/key) is reported with its message.

use async_trait::async_trait;
use serde_json::json;

use super::client::{Client, DeliveryError};
use super::redact::Redactor;
use super::{Event, Notifier};
use crate::config::Secret;

/// A WeCom group robot.
#[derive(Debug)]
pub struct WeCom {
    /// The webhook URL with its key.
    pub url: Secret,
}

#[async_trait]
impl Notifier for WeCom {
    async fn send(&self, client: &Client, event: &Event) -> Result<String, DeliveryError> {
        let body = serde_json::to_vec(&json!({
            "msgtype": "markdown",
            "markdown": {"content": markdown(event)},
        }))
        .map_err(|e| DeliveryError::Request(e.to_string()))?;
        let answer = client
            .post_json(
                self.url.expose(),
                &[],
                body,
                &Redactor::new(&self.secrets()),
            )
            .await?;
        errcode(&answer.body, &[RATE_LIMITED])
    }

    fn secrets(&self) -> Vec<&Secret> {
        vec![&self.url]
    }
}

/// The markdown WeCom and DingTalk render: a heading, the reason, the facts, what was done.
/// At most [`MAX_MARKDOWN`] bytes.
pub fn markdown(event: &Event) -> String {
    let mut out = format!("### {}\n> {}\n\n", event.title(), event.message);
    for (label, value) in event.facts() {
        out.push_str(&format!("- **{label}**: {value}\n"));
    }
    out.push_str(&format!("\n{}", event.consequence()));
    if out.len() > MAX_MARKDOWN {
        let mut cut = MAX_MARKDOWN - 3;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// Reads `{"errcode": N, "errmsg": "..."}`: 0 is a delivery, a code in `rate_limited` a
/// retryable error, anything else the vendor's error.
pub fn errcode(body: &str, rate_limited: &[i64]) -> Result<String, DeliveryError> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|_| DeliveryError::Vendor {
        code: -1,
        message: format!(
            "unexpected answer: {}",
            body.chars().take(200).collect::<String>()
        ),
        rate_limited: false,
    })?;
    let code = v["errcode"].as_i64().unwrap_or(-1);
    let message = v["errmsg"].as_str().unwrap_or_default().to_owned();
    if code == 0 {
        Ok(format!("errcode 0 ({message})"))
    } else {
        Err(DeliveryError::Vendor {
            code,
            message,
            rate_limited: rate_limited.contains(&code),
        })
    }
}

/// WeCom's "api freq out of limit".
const RATE_LIMITED: i64 = 45009;
/// WeCom's limit for `markdown.content`, in bytes.
pub const MAX_MARKDOWN: usize = 4096;
