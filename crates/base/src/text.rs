//! Text for people and for files: untrusted text made safe to print, durations for humans,
//! digests as hex, times as RFC 3339 and aligned tables.
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

/// A duration for people: whole seconds from 10 s up (`10s`, `120s`, rounded to the
/// nearest), to the millisecond below (`5s`, `0.5s`, `1.234s`), so that a measured time
/// never reads `10.001352913s`.
pub fn seconds(d: Duration) -> String {
    if d >= Duration::from_secs(10) {
        let secs = d
            .as_secs()
            .saturating_add(u64::from(d.subsec_millis() >= 500));
        return format!("{secs}s");
    }
    let ms = (d.as_micros() + 500) / 1000;
    let (secs, frac) = (ms / 1000, ms % 1000);
    if frac == 0 {
        format!("{secs}s")
    } else {
        format!("{secs}.{}s", format!("{frac:03}").trim_end_matches('0'))
    }
}

/// The lines of a command's output that say what failed, joined with ` | ` on one line, at
/// most `budget` characters: from the first line that carries an error (`emerg`, `alert`,
/// `crit`, `error`, `fatal`, an Apache `AH0nnnn` code) on, since the cause often follows it
/// (Apache's `AH00526: Syntax error on line 22 of FILE:` has it on the next line); when no
/// line carries one, the last lines, which usually explain a failure. Blank lines and the
/// `[... N bytes cut]` marker are left out; a line longer than what is left is cut with `…`.
pub fn error_lines(output: &str, budget: usize) -> String {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !is_cut_marker(l))
        .collect();
    const SEP: &str = " | ";
    let fit = |picked: &[&str]| {
        let mut out = String::new();
        for line in picked {
            let sep = if out.is_empty() { "" } else { SEP };
            let left = budget.saturating_sub(out.chars().count() + sep.chars().count());
            if left == 0 {
                break;
            }
            out.push_str(sep);
            if line.chars().count() <= left {
                out.push_str(line);
            } else {
                out.extend(line.chars().take(left.saturating_sub(1)));
                out.push('…');
                break;
            }
        }
        out
    };
    match lines.iter().position(|l| carries_error(l)) {
        Some(first) => fit(&lines[first..]),
        None => {
            // The last lines that fit whole, in their order; the last line cut when alone.
            let mut used = 0;
            let mut start = lines.len();
            while start > 0 {
                let len = lines[start - 1].chars().count() + if used == 0 { 0 } else { SEP.len() };
                if used + len > budget {
                    break;
                }
                used += len;
                start -= 1;
            }
            if start == lines.len() && start > 0 {
                start -= 1;
            }
            fit(&lines[start..])
        }
    }
}

/// Whether a line of command output says that something failed.
fn carries_error(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    ["emerg", "alert", "crit", "error", "fatal"]
        .iter()
        .any(|w| lower.contains(w))
        || line
            .match_indices("AH0")
            .any(|(at, _)| line[at + 3..].starts_with(|c: char| c.is_ascii_digit()))
}

/// `[... 123 bytes cut]`, which a bounded capture puts before what it kept.
fn is_cut_marker(line: &str) -> bool {
    line.strip_prefix("[... ")
        .and_then(|rest| rest.strip_suffix(" bytes cut]"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Rows as lines of a table: each column as wide as its widest cell (in characters), two
/// spaces between columns, the columns in `right` aligned right, the last one not padded,
/// trailing spaces cut.
pub fn table<const N: usize>(rows: &[[String; N]], right: &[usize]) -> Vec<String> {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = " ".repeat(width - cell.chars().count());
                match (right.contains(&i), i + 1 == N) {
                    (true, _) => line.extend([pad.as_str(), cell.as_str()]),
                    (false, true) => line.push_str(cell),
                    (false, false) => line.extend([cell.as_str(), pad.as_str()]),
                }
            }
            line.trim_end().to_owned()
        })
        .collect()
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// How many hex digits of a SHA-256 fingerprint a message shows.
pub const FINGERPRINT_SHOWN: usize = 16;

/// A fingerprint as messages show it: its first [`FINGERPRINT_SHOWN`] hex digits (the whole
/// text when it is shorter).
pub fn short_fingerprint(fingerprint: &str) -> &str {
    fingerprint.get(..FINGERPRINT_SHOWN).unwrap_or(fingerprint)
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
    fn a_table_aligns_columns_by_characters_and_cuts_trailing_spaces() {
        let rows = [
            ["NAME", "N", "NOTE"].map(String::from),
            ["élan", "10", ""].map(String::from),
            ["b", "2", "x"].map(String::from),
        ];
        assert_eq!(
            table(&rows, &[1]),
            ["NAME   N  NOTE", "élan  10", "b      2  x"]
        );
    }

    #[test]
    fn seconds_to_the_millisecond_below_ten_whole_from_ten() {
        assert_eq!(seconds(Duration::from_secs(5)), "5s");
        assert_eq!(seconds(Duration::from_millis(500)), "0.5s");
        assert_eq!(seconds(Duration::from_millis(1234)), "1.234s");
        assert_eq!(seconds(Duration::from_nanos(1_234_567_891)), "1.235s");
        assert_eq!(seconds(Duration::from_nanos(9_999_700_000)), "10s");
        assert_eq!(seconds(Duration::from_nanos(10_001_352_913)), "10s");
        assert_eq!(seconds(Duration::from_millis(10_500)), "11s");
        assert_eq!(seconds(Duration::from_secs(120)), "120s");
        assert_eq!(seconds(Duration::from_nanos(400)), "0s");
        assert_eq!(seconds(Duration::MAX), format!("{}s", u64::MAX));
    }

    #[test]
    fn error_lines_keep_the_cause_after_apaches_header() {
        let apache = "AH00526: Syntax error on line 22 of /etc/apache2/sites-enabled/www.conf:\n\
                      Invalid command 'SSLCertificateFiel', perhaps misspelled or defined by a module not included in the server configuration\n\
                      Action 'configtest' failed.\n\
                      The Apache error log may have more information.\n";
        let picked = error_lines(apache, 500);
        assert!(
            picked.starts_with("AH00526: Syntax error on line 22 of /etc/apache2/sites-enabled/www.conf: | Invalid command 'SSLCertificateFiel'"),
            "{picked}"
        );
        assert!(picked.chars().count() <= 500);
    }

    #[test]
    fn error_lines_of_nginx_haproxy_and_postfix() {
        let nginx = "nginx: [emerg] unknown directive \"ssl_certificate_kye\" in /etc/nginx/sites-enabled/www:12\n\
                     nginx: configuration file /etc/nginx/nginx.conf test failed\n";
        assert_eq!(
            error_lines(nginx, 500),
            "nginx: [emerg] unknown directive \"ssl_certificate_kye\" in /etc/nginx/sites-enabled/www:12 | nginx: configuration file /etc/nginx/nginx.conf test failed"
        );
        let haproxy = "[NOTICE]   (4242) : haproxy version is 2.6.12-1\n\
                       [NOTICE]   (4242) : path to executable is /usr/sbin/haproxy\n\
                       [ALERT]    (4242) : config : parsing [/etc/haproxy/haproxy.cfg:22] : unknown keyword 'bindd' in 'frontend' section\n\
                       [ALERT]    (4242) : config : Error(s) found in configuration file : /etc/haproxy/haproxy.cfg\n";
        assert!(
            error_lines(haproxy, 500).starts_with("[ALERT]    (4242) : config : parsing [/etc/haproxy/haproxy.cfg:22] : unknown keyword 'bindd'"),
            "{}",
            error_lines(haproxy, 500)
        );
        let postfix = "postconf: warning: /etc/postfix/main.cf, line 40: overriding earlier entry: smtpd_tls_cert_file=x\n\
                       postfix/postfix-script: fatal: the Postfix mail system is not running\n";
        assert_eq!(
            error_lines(postfix, 500),
            "postfix/postfix-script: fatal: the Postfix mail system is not running"
        );
        // Nothing marked: the last lines, which usually explain.
        assert_eq!(
            error_lines("starting\nchecking\nno such user www-dta\n", 500),
            "starting | checking | no such user www-dta"
        );
        assert_eq!(error_lines("one\ntwo\nthree\n", 13), "two | three");
        assert_eq!(error_lines("", 500), "");
        // The marker of a bounded capture is not output.
        assert_eq!(
            error_lines("[... 12 bytes cut]\nlast words\n", 500),
            "last words"
        );
    }

    #[test]
    fn error_lines_stay_within_the_budget_whatever_the_output() {
        let huge = format!(
            "{}\nerror: {}\n{}",
            "noise\n".repeat(100_000),
            "x".repeat(10_000),
            "y\n".repeat(1000)
        );
        let picked = error_lines(&huge, 500);
        assert_eq!(picked.chars().count(), 500);
        assert!(
            picked.starts_with("error: xxx") && picked.ends_with('…'),
            "{picked}"
        );
        let plain = "z".repeat(2000);
        let picked = error_lines(&plain, 500);
        assert_eq!(picked.chars().count(), 500);
        let wide = "é".repeat(2000);
        assert_eq!(error_lines(&wide, 10).chars().count(), 10);
        assert_eq!(
            error_lines("AH0 is no code\nlast\n", 500),
            "AH0 is no code | last"
        );
        assert_eq!(error_lines("a\nb\n", 0), "");
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
