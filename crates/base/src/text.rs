//! Text for people and for files: untrusted text made safe to print, durations for humans,
//! digests as hex and times as RFC 3339.
//!
//! The lowest floor: it imports nothing of certkeeper's, so that every other part may use it
//! (Cargo enforces it: this crate depends on no other of the workspace).

use std::time::Duration;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// Makes untrusted text safe to print: every control character except `\n` and `\t` becomes
/// `\xNN` (ESC is `\x1b`, CR is `\x0d`), and the characters that end or reorder a line on
/// screen (U+2028, U+2029, the bidirectional controls) become `\u{NNNN}`, so that it cannot
/// move the cursor, recolour a terminal or forge log lines. Use [`String::from_utf8_lossy`]
/// first for bytes.
pub fn escape_control(s: &str) -> String {
    escape(s, &['\n', '\t'])
}

/// [`escape_control`] for text that must stay on one line (a config value in an error, a
/// vendor's answer): newline and tab become `\x0a` and `\x09` too.
pub fn escape_line(s: &str) -> String {
    escape(s, &[])
}

/// A duration in seconds, to the millisecond: `5s`, `0.5s`, `1.234s`.
pub fn seconds(d: Duration) -> String {
    let ms = d.as_millis();
    let (secs, frac) = (ms / 1000, ms % 1000);
    if frac == 0 {
        format!("{secs}s")
    } else {
        format!("{secs}.{}s", format!("{frac:03}").trim_end_matches('0'))
    }
}

/// SHA-256 of `bytes` as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Formats a time as RFC 3339 in UTC with whole seconds (`2026-01-31T12:00:00Z`).
///
/// Written by hand rather than with `time`'s `Rfc3339`: that one adds the fraction of a
/// second when there is one, and fails (so it would need a fallback) for years it cannot
/// write in four digits.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Every control character of `s` but those in `keep` as `\xNN`, and the characters that
/// break or reorder a line as `\u{NNNN}`.
fn escape(s: &str, keep: &[char]) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() && !keep.contains(&c) {
            // Unicode's control characters (Cc) are U+0000..U+001F and U+007F..U+009F, so
            // two hex digits always suffice.
            out.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else if matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
        {
            out.push_str(&format!("\\u{{{:04x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_to_the_millisecond() {
        assert_eq!(seconds(Duration::from_secs(5)), "5s");
        assert_eq!(seconds(Duration::from_millis(500)), "0.5s");
        assert_eq!(seconds(Duration::from_millis(1234)), "1.234s");
    }

    #[test]
    fn rfc3339_has_whole_seconds_in_utc() {
        let t = time::macros::datetime!(2026-12-07 18:00:07.25 +01:00);
        assert_eq!(rfc3339(t), "2026-12-07T17:00:07Z");
    }

    #[test]
    fn sha256_of_nothing() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
