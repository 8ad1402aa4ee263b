//! Slack incoming webhooks: `text` (what notifications and old clients show) plus blocks
//! (a header, the facts as fields, the reason, and what certkeeper did). Slack answers
//! `200 ok`, or an error status with a short code in the body (`invalid_payload`,
//! `no_service`, ...), which the error carries.

use async_trait::async_trait;
use serde_json::json;

use super::client::{Client, DeliveryError};
use super::redact::Redactor;
use super::{Event, Notifier};
use crate::config::Secret;

/// A Slack incoming webhook.
#[derive(Debug)]
pub struct Slack {
    /// The webhook URL (a secret: it is the credential).
    pub url: Secret,
}

#[async_trait]
impl Notifier for Slack {
    async fn send(&self, client: &Client, event: &Event) -> Result<String, DeliveryError> {
        let body = serde_json::to_vec(&message(event))
            .map_err(|e| DeliveryError::Request(e.to_string()))?;
        let answer = client
            .post_json(
                self.url.expose(),
                &[],
                body,
                &Redactor::new(&self.secrets()),
            )
            .await?;
        if answer.body == "ok" {
            Ok(format!("HTTP {} ok", answer.status.as_u16()))
        } else {
            Err(DeliveryError::Vendor {
                code: i64::from(answer.status.as_u16()),
                message: answer.body,
                rate_limited: false,
            })
        }
    }

    fn secrets(&self) -> Vec<&Secret> {
        vec![&self.url]
    }
}

/// The Slack message for `event`.
pub fn message(event: &Event) -> serde_json::Value {
    let fields: Vec<serde_json::Value> = event
        .facts()
        .into_iter()
        .map(|(label, value)| json!({"type": "mrkdwn", "text": format!("*{label}*\n{}", escape(&value))}))
        .collect();
    json!({
        "text": format!("{}: {}", event.title(), event.message),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": event.title()}},
            {"type": "section", "text": {"type": "mrkdwn", "text": escape(&event.message)}},
            {"type": "section", "fields": fields},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": escape(event.consequence())}]}
        ]
    })
}

/// Slack's mrkdwn escapes: `&`, `<` and `>`.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
