//! What a channel may show of a vendor's answer: every spelling of its secrets replaced by
//! `<redacted>`, and the text kept on one line.
//!
//! A vendor that echoes a request back may spell a token differently from the config: alone
//! (Feishu's `hook <id> not found`), percent-encoded, JSON-escaped (`\u0046...`), or in
//! another case. So the text is searched in a decoded view (`%XX`, `\uXXXX` and `\/` read as
//! what they stand for, ASCII case ignored), and the source span of each match is replaced.
//!
//! What is searched for, per secret: the whole value; for a URL, its path with query, and
//! each distinctive piece of it (user, password, each path segment, each query value, the
//! fragment). A piece is distinctive when it is at least [`MIN_PIECE`] characters long
//! (decoded) and is not one of the vendors' fixed path words ([`FIXED_WORDS`]): shorter
//! pieces (`v2`, `send`, `bot`) would blank out ordinary words of every answer, and no
//! vendor's token is that short.

use crate::config::Secret;
use crate::text::escape_line;

/// The shortest URL piece treated as a token.
pub const MIN_PIECE: usize = 8;

/// Path words of the vendors' documented URLs (`/open-apis/bot/v2/hook/<id>`,
/// `/cgi-bin/webhook/send?key=`, `/services/T/B/<token>`, `/robot/send?access_token=`):
/// public, not tokens, at least [`MIN_PIECE`] long.
pub const FIXED_WORDS: [&str; 3] = ["open-apis", "services", "webhooks"];

/// What replaces a secret.
pub const REDACTED: &str = "<redacted>";

/// The spellings of one channel's secrets to remove.
#[derive(Debug, Default)]
pub struct Redactor {
    /// Decoded, ASCII lower-cased, longest first.
    pieces: Vec<Vec<u8>>,
}

impl Redactor {
    /// A redactor for `secrets` (whole values and, for URLs, their distinctive pieces).
    pub fn new(secrets: &[&Secret]) -> Redactor {
        let mut pieces: Vec<Vec<u8>> = Vec::new();
        for secret in secrets {
            for piece in pieces_of(secret.expose()) {
                let bytes: Vec<u8> = decoded(&piece).into_iter().map(|(b, ..)| b).collect();
                if !bytes.is_empty() && !pieces.contains(&bytes) {
                    pieces.push(bytes);
                }
            }
        }
        pieces.sort_by_key(|p| std::cmp::Reverse(p.len()));
        Redactor { pieces }
    }

    /// `text` with every spelling of a secret replaced by [`REDACTED`]. `cut` says the text
    /// was cut from a longer one: then a secret's start at its very end (and an escape cut in
    /// two) is removed too, so that a cut cannot show part of a token.
    pub fn redact(&self, text: &str, cut: bool) -> String {
        let text = if cut { without_cut_escape(text) } else { text };
        let view = decoded(text);
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for piece in &self.pieces {
            if piece.len() > view.len() {
                continue;
            }
            for start in 0..=view.len() - piece.len() {
                if view[start..start + piece.len()]
                    .iter()
                    .zip(piece)
                    .all(|((b, ..), p)| b == p)
                {
                    spans.push((view[start].1, view[start + piece.len() - 1].2));
                }
            }
        }
        if cut {
            // The longest end of the text that begins some secret.
            let longest = self
                .pieces
                .iter()
                .filter_map(|piece| {
                    (1..piece.len().min(view.len() + 1)).rev().find(|&k| {
                        view[view.len() - k..]
                            .iter()
                            .zip(piece)
                            .all(|((b, ..), p)| b == p)
                    })
                })
                .max();
            if let Some(k) = longest {
                spans.push((view[view.len() - k].1, text.len()));
            }
        }
        spans.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (start, end) in spans {
            if end <= at {
                continue;
            }
            if start >= at {
                out.push_str(&text[at..start]);
                out.push_str(REDACTED);
            }
            at = end;
        }
        out.push_str(&text[at..]);
        out
    }

    /// `text` redacted (see [`Redactor::redact`]) and on one line ([`escape_line`]): what a
    /// report, an error line or a log line shows of anything a vendor said.
    pub fn show(&self, text: &str) -> String {
        escape_line(self.redact(text, false).trim())
    }
}

/// The whole secret and, for a URL, its path with query and its distinctive pieces.
fn pieces_of(secret: &str) -> Vec<String> {
    let mut out = vec![secret.to_owned()];
    if secret.trim() != secret {
        out.push(secret.trim().to_owned());
    }
    let Some((_, rest)) = secret.split_once("://") else {
        return out;
    };
    let at = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(at);
    if tail.len() >= MIN_PIECE {
        out.push(tail.to_owned());
    }
    let mut pieces: Vec<&str> = Vec::new();
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        pieces.extend(userinfo.split(':'));
    }
    let (tail, fragment) = tail.split_once('#').unwrap_or((tail, ""));
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    pieces.extend(path.split('/'));
    pieces.extend(
        query
            .split('&')
            .map(|pair| pair.split_once('=').map_or(pair, |(_, v)| v)),
    );
    pieces.push(fragment);
    out.extend(
        pieces
            .into_iter()
            .filter(|p| distinctive(p))
            .map(str::to_owned),
    );
    out
}

/// Whether a URL piece is a token: long enough, and not a vendor's fixed path word.
fn distinctive(piece: &str) -> bool {
    let len = decoded(piece).len();
    len >= MIN_PIECE && !FIXED_WORDS.iter().any(|w| piece.eq_ignore_ascii_case(w))
}

/// The bytes `text` stands for, each with the span of `text` it came from: `%XX` is one
/// byte, `\uXXXX` (JSON) a character's bytes, `\/` a slash; ASCII letters lower-cased.
fn decoded(text: &str) -> Vec<(u8, usize, usize)> {
    let raw = text.as_bytes();
    let hex = |from: usize, len: usize| -> Option<u32> {
        let digits = raw.get(from..from + len)?;
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    };
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%'
            && let Some(v) = hex(i + 1, 2)
        {
            // Two hex digits are at most 0xff.
            out.push((u8::try_from(v).unwrap_or(0).to_ascii_lowercase(), i, i + 3));
            i += 3;
            continue;
        }
        if raw[i] == b'\\'
            && raw.get(i + 1) == Some(&b'u')
            && let Some(c) = hex(i + 2, 4).and_then(char::from_u32)
        {
            let mut buf = [0; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push((b.to_ascii_lowercase(), i, i + 6));
            }
            i += 6;
            continue;
        }
        if raw[i] == b'\\' && raw.get(i + 1) == Some(&b'/') {
            out.push((b'/', i, i + 2));
            i += 2;
            continue;
        }
        out.push((raw[i].to_ascii_lowercase(), i, i + 1));
        i += 1;
    }
    out
}

/// `text` without an escape cut in two at its end (`%4`, `\u00`).
fn without_cut_escape(text: &str) -> &str {
    let raw = text.as_bytes();
    let n = raw.len();
    for back in 1..=5.min(n) {
        let start = n - back;
        let tail = &raw[start + 1..];
        let partial = match raw[start] {
            b'%' => back <= 2 && tail.iter().all(u8::is_ascii_hexdigit),
            b'\\' => back == 1 || (tail[0] == b'u' && tail[1..].iter().all(u8::is_ascii_hexdigit)),
            _ => false,
        };
        if partial {
            return &text[..start];
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(secrets: &[&str]) -> Redactor {
        let secrets: Vec<Secret> = secrets.iter().map(|s| Secret::new((*s).into())).collect();
        Redactor::new(&secrets.iter().collect::<Vec<_>>())
    }

    #[test]
    fn every_spelling_of_every_distinctive_piece_is_redacted() {
        let r = redactor(&[
            "https://open.feishu.cn/open-apis/bot/v2/hook/FEISHUHOOK123456",
            "https://u:pa55word-x@example.com/cgi-bin/webhook/send?key=693a91f6-7b1c&x=1#frag-0123456789",
        ]);
        for (text, shown) in [
            (
                "hook FEISHUHOOK123456 not found",
                "hook <redacted> not found",
            ),
            ("hook feishuhook123456", "hook <redacted>"),
            ("hook %46%45ISHUHOOK123456!", "hook <redacted>!"),
            (
                r#"{"msg":"\u0046EISHUHOOK123456"}"#,
                r#"{"msg":"<redacted>"}"#,
            ),
            (
                "key=693a91f6-7b1c, 693A91F6%2d7b1c",
                "key=<redacted>, <redacted>",
            ),
            ("pa55word-x frag-0123456789", "<redacted> <redacted>"),
            // The fixed words and short pieces stay: they are in every answer.
            (
                "open-apis/bot/v2/hook send x=1",
                "open-apis/bot/v2/hook send x=1",
            ),
        ] {
            assert_eq!(r.redact(text, false), shown, "{text}");
        }
    }

    #[test]
    fn a_cut_cannot_show_the_start_of_a_token() {
        let r = redactor(&["https://h/open-apis/bot/v2/hook/FEISHUHOOK123456"]);
        assert_eq!(r.redact("hook FEISHUHOO", true), "hook <redacted>");
        assert_eq!(r.redact("hook FEISHUHOO%4", true), "hook <redacted>");
        assert_eq!(r.redact("hook \\u0046\\u00", true), "hook <redacted>");
        // Uncut text ending like a token's start is not a token.
        assert_eq!(r.redact("hook FEISHUHOO", false), "hook FEISHUHOO");
    }

    #[test]
    fn one_line_escapes_line_breaks_and_reordering() {
        assert_eq!(
            escape_line("x\nslack (slack): delivered\r\t\u{1b}[31m\u{2028}\u{202e}"),
            "x\\x0aslack (slack): delivered\\x0d\\x09\\x1b[31m\\u{2028}\\u{202e}"
        );
    }
}
