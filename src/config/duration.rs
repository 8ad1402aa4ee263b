//! Durations as written in the config: `90s`, `30m`, `12h`, `30d`, `1h30m`, and the
//! `before_expiry` form that may also be a fraction `a/b` of a certificate's lifetime.

use std::fmt;
use std::time::Duration;

/// Parses `<integer><unit>` repeated, units `s`, `m`, `h`, `d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration; write e.g. \"90s\", \"30m\", \"12h\" or \"30d\"".into());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad_duration(text)),
        };
        if digits.is_empty() {
            return Err(bad_duration(text));
        }
        let n: u64 = digits.parse().map_err(|_| bad_duration(text))?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|secs| total.checked_add(secs))
            .filter(|t| *t <= MAX_SECONDS)
            .ok_or_else(|| format!("duration \"{text}\" is too long (at most 100 years)"))?;
    }
    if !digits.is_empty() {
        return Err(format!(
            "duration \"{text}\" lacks a unit after {digits}; add s, m, h or d"
        ));
    }
    Ok(Duration::from_secs(total))
}

/// Formats a duration the way the config writes it (`1d12h`, `90s`, `0s`).
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [('d', 86_400), ('h', 3600), ('m', 60), ('s', 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// When a certificate becomes due: a fixed time before notAfter, or a fraction of its
/// lifetime (notAfter − notBefore) before notAfter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BeforeExpiry {
    /// Due this long before notAfter.
    Duration(Duration),
    /// Due when `numerator/denominator` of the lifetime is left.
    Fraction {
        /// The `a` of `a/b`.
        numerator: u32,
        /// The `b` of `a/b`.
        denominator: u32,
    },
}

impl BeforeExpiry {
    /// Parses `30d` or `1/3`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some((a, b)) = text.split_once('/') else {
            return parse_duration(text).map(BeforeExpiry::Duration);
        };
        let bad = || {
            format!("\"{text}\" is not a fraction of the lifetime; write e.g. \"1/3\" (0 < a < b)")
        };
        let numerator: u32 = a.trim().parse().map_err(|_| bad())?;
        let denominator: u32 = b.trim().parse().map_err(|_| bad())?;
        if numerator == 0 || numerator >= denominator {
            return Err(bad());
        }
        Ok(BeforeExpiry::Fraction {
            numerator,
            denominator,
        })
    }

    /// How long before notAfter a certificate with this lifetime becomes due.
    pub fn lead_time(&self, lifetime: Duration) -> Duration {
        match *self {
            BeforeExpiry::Duration(d) => d,
            BeforeExpiry::Fraction {
                numerator,
                denominator,
            } => lifetime * numerator / denominator,
        }
    }
}

impl fmt::Display for BeforeExpiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BeforeExpiry::Duration(d) => f.write_str(&format_duration(*d)),
            BeforeExpiry::Fraction {
                numerator,
                denominator,
            } => write!(f, "{numerator}/{denominator} of the lifetime"),
        }
    }
}

fn bad_duration(text: &str) -> String {
    format!(
        "\"{text}\" is not a duration; write e.g. \"90s\", \"30m\", \"12h\", \"30d\" or \"1h30m\""
    )
}

/// 100 years: anything longer is a typo.
const MAX_SECONDS: u64 = 100 * 366 * 86_400;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(2_592_000)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "30",
            "d",
            "30x",
            "1.5h",
            "-1s",
            "h30",
            "30 d",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse_duration("30").unwrap_err().contains("lacks a unit"));
        assert!(parse_duration("1000000d").unwrap_err().contains("too long"));
    }

    #[test]
    fn formats_round_trip() {
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        for text in ["45s", "30m", "12h", "30d", "1d12h", "1h30m"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(format_duration(d), text);
        }
    }

    #[test]
    fn before_expiry_fraction() {
        let f = BeforeExpiry::parse("1/3").unwrap();
        assert_eq!(
            f.lead_time(Duration::from_secs(90 * 86_400)),
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(
            BeforeExpiry::parse("30d").unwrap(),
            BeforeExpiry::Duration(Duration::from_secs(30 * 86_400))
        );
        for bad in ["0/3", "3/3", "4/3", "a/b", "1/0", "1/"] {
            assert!(BeforeExpiry::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
