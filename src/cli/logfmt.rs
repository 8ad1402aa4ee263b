//! How text log lines write their fields: `name=value` with the value in its plain (Display)
//! form, `snapshot=000001` rather than tracing's default `snapshot="000001"`, quoted only when
//! it holds a space, a quote, `=` or a control character, logfmt style. Control characters are
//! escaped in values and in the message (DESIGN.md, Logs; STYLE.md §9), so a certificate name
//! or a hook's output cannot recolour a terminal. JSON lines keep tracing's own JSON fields.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::Writer;

use crate::text::escape_control;

/// The field formatter of text logs (`fmt().fmt_fields(PlainFields)`).
pub(crate) struct PlainFields;

impl<'w> MakeVisitor<Writer<'w>> for PlainFields {
    type Visitor = PlainVisitor<'w>;

    fn make_visitor(&self, target: Writer<'w>) -> PlainVisitor<'w> {
        PlainVisitor {
            writer: target,
            is_empty: true,
            result: Ok(()),
        }
    }
}

/// Writes one event's or span's fields, space-separated.
pub(crate) struct PlainVisitor<'w> {
    writer: Writer<'w>,
    is_empty: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    fn write(&mut self, field: &Field, value: &str) {
        // Fields the `log` bridge adds (log.target, log.file, ...) are noise here.
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        let sep = if self.is_empty { "" } else { " " };
        self.is_empty = false;
        self.result = if field.name() == "message" {
            write!(self.writer, "{sep}{}", escape_control(value))
        } else {
            write!(self.writer, "{sep}{}={}", field.name(), quote(value))
        };
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write(field, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.write(field, &value.to_string());
    }

    /// `%value` fields arrive here too, their `Debug` being their `Display`; numbers and
    /// booleans print the same either way.
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, &format!("{value:?}"));
    }
}

impl VisitOutput<fmt::Result> for PlainVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for PlainVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

/// The value as is when it is one plain word, else in double quotes with `"`, `\`, newline,
/// tab and other control characters escaped.
fn quote(value: &str) -> Cow<'_, str> {
    let plain = |c: char| !(c.is_whitespace() || c.is_control() || matches!(c, '"' | '=' | '\\'));
    if !value.is_empty() && value.chars().all(plain) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn values_are_quoted_only_when_needed() {
        assert_eq!(quote("000001"), "000001");
        assert_eq!(quote("2027-02-28T07:24:42Z"), "2027-02-28T07:24:42Z");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote("x\u{1b}[31m\"\n"), "\"x\\x1b[31m\\\"\\n\"");
    }
}
