//! Serde types of the Cloudflare API v4 wire format: the envelope every answer comes in,
//! the vendor's error items (displayed as `code: message`), zones and DNS records.
//!
//! Only the fields certkeeper reads are declared; serde ignores the rest, so that new fields
//! Cloudflare adds never break parsing.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The envelope of every answer:
/// `{"success", "errors", "messages", "result", "result_info"}`. On errors `result` is null.
#[derive(Clone, Debug, Deserialize)]
pub struct Envelope<T> {
    /// Whether the call succeeded.
    pub success: bool,
    /// What went wrong, when `success` is false.
    #[serde(default)]
    pub errors: Vec<ApiError>,
    /// The payload; null on errors.
    pub result: Option<T>,
    /// Paging of list answers.
    #[serde(default)]
    pub result_info: Option<ResultInfo>,
}

/// One item of `errors`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct ApiError {
    /// Cloudflare's numeric code (9109, 81058, ...).
    pub code: i64,
    /// Cloudflare's text.
    pub message: String,
    /// The finer causes Cloudflare sometimes attaches (`6003` carries `6111`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_chain: Vec<ApiError>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if !self.error_chain.is_empty() {
            f.write_str(" (")?;
            for (i, e) in self.error_chain.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{e}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// All of an answer's errors, displayed `code: message; code: message`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiErrors(pub Vec<ApiError>);

impl ApiErrors {
    /// Whether any error (or a cause in its chain) has one of `codes`.
    pub fn has_code(&self, codes: &[i64]) -> bool {
        fn any(errors: &[ApiError], codes: &[i64]) -> bool {
            errors
                .iter()
                .any(|e| codes.contains(&e.code) || any(&e.error_chain, codes))
        }
        any(&self.0, codes)
    }
}

impl fmt::Display for ApiErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no error detail in the answer");
        }
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Paging information of list answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct ResultInfo {
    /// This page's number, from 1.
    #[serde(default)]
    pub page: u64,
    /// Items per page.
    #[serde(default)]
    pub per_page: u64,
    /// Items on this page.
    #[serde(default)]
    pub count: u64,
    /// Items on all pages.
    #[serde(default)]
    pub total_count: u64,
    /// Number of pages.
    #[serde(default)]
    pub total_pages: u64,
}

/// A zone, as `GET /zones` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Zone {
    /// The zone id (32 hex digits).
    pub id: String,
    /// The zone's name (`example.com`).
    pub name: String,
}

/// A DNS record, as Cloudflare returns it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct DnsRecord {
    /// The record id.
    pub id: String,
    /// `TXT`, `A`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The full name, without the trailing dot.
    pub name: String,
    /// The content, exactly as it was sent.
    pub content: String,
    /// Seconds; 1 means automatic.
    #[serde(default)]
    pub ttl: u32,
}

/// The body of `POST /zones/{zone_id}/dns_records`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NewRecord<'a> {
    /// Always `TXT` here.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// The full name, without the trailing dot.
    pub name: &'a str,
    /// The value, as is.
    pub content: &'a str,
    /// Seconds (1 or 60..=86400).
    pub ttl: u32,
}

/// The result of `DELETE /zones/{zone_id}/dns_records/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Deleted {
    /// The id of the deleted record.
    pub id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_vendor_error_answer_and_displays_code_message() {
        // The shape of Cloudflare's documented error answer.
        let body = r#"{"success":false,"errors":[{"code":6003,"message":"Invalid request headers",
            "error_chain":[{"code":6111,"message":"Invalid format for Authorization header"}]}],
            "messages":[],"result":null}"#;
        let env: Envelope<serde_json::Value> = serde_json::from_str(body).expect("parses");
        assert!(!env.success);
        assert!(env.result.is_none());
        let errors = ApiErrors(env.errors);
        assert!(errors.has_code(&[6111]));
        assert_eq!(
            errors.to_string(),
            "6003: Invalid request headers (6111: Invalid format for Authorization header)"
        );
    }

    #[test]
    fn parses_a_record_list_with_paging() {
        let body = r#"{"success":true,"errors":[],"messages":[],"result":[{"id":
            "372e67954025e0ba6aaa6d586b9e0b59","type":"TXT","name":"_acme-challenge.example.com",
            "content":"abc","proxiable":false,"proxied":false,"ttl":120,"meta":{},"tags":[]}],
            "result_info":{"page":1,"per_page":100,"count":1,"total_count":1,"total_pages":1}}"#;
        let env: Envelope<Vec<DnsRecord>> = serde_json::from_str(body).expect("parses");
        let records = env.result.expect("a result");
        assert_eq!(records[0].kind, "TXT");
        assert_eq!(records[0].ttl, 120);
        assert_eq!(env.result_info.expect("paging").total_pages, 1);
    }

    #[test]
    fn several_errors_are_joined() {
        let errors = ApiErrors(vec![
            ApiError {
                code: 1004,
                message: "DNS Validation Error".into(),
                error_chain: vec![],
            },
            ApiError {
                code: 9021,
                message: "Invalid TTL".into(),
                error_chain: vec![],
            },
        ]);
        assert_eq!(
            errors.to_string(),
            "1004: DNS Validation Error; 9021: Invalid TTL"
        );
        assert_eq!(
            ApiErrors::default().to_string(),
            "no error detail in the answer"
        );
    }
}
