//! Alibaba Cloud RPC request signing, Signature V1 (`HMAC-SHA1`, `SignatureVersion=1.0`).
//!
//! 1. All parameters except `Signature`, sorted by name (byte order).
//! 2. Names and values percent-encoded as UTF-8: `A–Z a–z 0–9 - _ . ~` stay, everything else
//!    becomes `%XY` with upper-case hex (so space is `%20`, never `+`, and `*` is `%2A`);
//!    pairs joined as `k=v` with `&`.
//! 3. StringToSign = `METHOD&%2F&` + percent-encode(that joined string).
//! 4. Signature = Base64(HMAC-SHA1(key = AccessKeySecret + `&`, StringToSign)).

use std::fmt;

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// An AccessKeySecret. Its `Debug` never shows the value, and it has no `Display`.
#[derive(Clone)]
pub(crate) struct Secret(String);

impl Secret {
    /// Wraps the secret.
    pub(crate) fn new(secret: String) -> Secret {
        Secret(secret)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Percent-encodes `s` as Signature V1 requires (RFC 3986 unreserved characters stay).
pub(crate) fn percent_encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

/// The parameters sorted by name, encoded, and joined: `k=v&k=v`. This is both the
/// canonicalized query of step 2 and a valid `application/x-www-form-urlencoded` body.
pub(crate) fn canonical_query(params: &[(&str, &str)]) -> String {
    let mut sorted: Vec<&(&str, &str)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = String::new();
    for (k, v) in sorted {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&percent_encode(k));
        out.push('=');
        out.push_str(&percent_encode(v));
    }
    out
}

/// StringToSign for `method` (`GET` or `POST`) and the parameters (without `Signature`).
pub(crate) fn string_to_sign(method: &str, params: &[(&str, &str)]) -> String {
    format!(
        "{method}&{}&{}",
        percent_encode("/"),
        percent_encode(&canonical_query(params))
    )
}

/// The `Signature` value (Base64, not yet percent-encoded) for `method` and `params`.
pub(crate) fn sign(method: &str, params: &[(&str, &str)], secret: &Secret) -> String {
    let key = hmac::Key::new(
        hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        format!("{}&", secret.0).as_bytes(),
    );
    let tag = hmac::sign(&key, string_to_sign(method, params).as_bytes());
    STANDARD.encode(tag.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Alibaba's published example (PROVIDER-APIS.md).
    const KNOWN: &[(&str, &str)] = &[
        ("Version", "2015-01-09"),
        ("Timestamp", "2016-03-24T16:41:54Z"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", "f59ed6a9-83fc-473b-9cc6-99c95df3856e"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("Format", "XML"),
        ("DomainName", "example.com"),
        ("Action", "DescribeDomainRecords"),
        ("AccessKeyId", "testid"),
    ];

    #[test]
    fn known_answer() {
        assert_eq!(
            sign("GET", KNOWN, &Secret::new("testsecret".into())),
            "uRpHwaSEt3J+6KQD//svCh/x+pI="
        );
    }

    #[test]
    fn string_to_sign_of_the_known_answer() {
        assert_eq!(
            string_to_sign("GET", KNOWN),
            "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeDomainRecords%26\
             DomainName%3Dexample.com%26Format%3DXML%26SignatureMethod%3DHMAC-SHA1%26\
             SignatureNonce%3Df59ed6a9-83fc-473b-9cc6-99c95df3856e%26SignatureVersion%3D1.0%26\
             Timestamp%3D2016-03-24T16%253A41%253A54Z%26Version%3D2015-01-09"
        );
    }

    #[test]
    fn percent_encoding_rules() {
        assert_eq!(percent_encode("aZ09-_.~"), "aZ09-_.~");
        assert_eq!(percent_encode("a b*c+d/e"), "a%20b%2Ac%2Bd%2Fe");
        assert_eq!(percent_encode("ü"), "%C3%BC");
        assert_eq!(percent_encode("="), "%3D");
    }

    #[test]
    fn sorted_by_byte_order() {
        assert_eq!(
            canonical_query(&[("b", "1"), ("B", "2"), ("a", "3")]),
            "B=2&a=3&b=1"
        );
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::new("testsecret".into());
        assert!(!format!("{s:?}").contains("testsecret"));
    }
}
