//! `renewal.schedule`: a cron expression with a seconds field first, parsed once when the
//! config is validated and used as is by the daemon.
//!
//! The expressions are parsed by croner with the options tokio-cron-scheduler uses, so a
//! schedule means what it means there; the daemon does not run tokio-cron-scheduler's own
//! loop, which wakes every 500 ms to look at its jobs.

use std::fmt;

use time::OffsetDateTime;

/// `renewal.schedule`, parsed.
///
/// Two schedules are equal when they were written the same; a schedule equals the text it was
/// parsed from, and displays as that text.
#[derive(Clone, Debug)]
pub struct Cron {
    expr: String,
    cron: croner::Cron,
}

impl Cron {
    /// Parses a cron expression with a seconds field first (6 fields, or 7 with a year).
    pub fn parse(expr: &str) -> Result<Cron, String> {
        let fields = expr.split_whitespace().count();
        if fields == 5 && Cron::parse(&format!("0 {expr}")).is_ok() {
            return Err(format!(
                "\"{expr}\" has 5 fields; certkeeper's cron has a seconds field first, e.g. \"0 {expr}\""
            ));
        }
        if !(6..=7).contains(&fields) {
            return Err(format!(
                "\"{expr}\" is not a cron expression with seconds (sec min hour day month weekday), e.g. \"0 17 */12 * * *\""
            ));
        }
        croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(expr)
            .map(|cron| Cron {
                expr: expr.to_owned(),
                cron,
            })
            .map_err(|e| format!("\"{expr}\" is not a valid cron expression: {e}"))
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.expr
    }

    /// The first tick strictly after `t` (UTC), if the expression ever fires again.
    pub fn next_after(&self, t: OffsetDateTime) -> Option<OffsetDateTime> {
        let from = chrono::DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond())?;
        let next = self.cron.find_next_occurrence(&from, false).ok()?;
        OffsetDateTime::from_unix_timestamp(next.timestamp()).ok()
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

impl PartialEq for Cron {
    fn eq(&self, other: &Cron) -> bool {
        self.expr == other.expr
    }
}

impl Eq for Cron {}

impl PartialEq<str> for Cron {
    fn eq(&self, other: &str) -> bool {
        self.expr == other
    }
}

impl PartialEq<&str> for Cron {
    fn eq(&self, other: &&str) -> bool {
        self.expr == *other
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn cron_ticks_in_utc_with_seconds() {
        let c = Cron::parse("0 17 */12 * * *").unwrap();
        let t = datetime!(2026-11-30 8:00 UTC);
        assert_eq!(c.next_after(t), Some(datetime!(2026-11-30 12:17 UTC)));
        assert_eq!(
            c.next_after(datetime!(2026-11-30 12:17 UTC)),
            Some(datetime!(2026-12-01 0:17 UTC))
        );
        let every = Cron::parse("* * * * * *").unwrap();
        assert_eq!(
            every.next_after(datetime!(2026-11-30 8:00:00.5 UTC)),
            Some(datetime!(2026-11-30 8:00:01 UTC))
        );
        // Day of month and day of week both given: both must match (2026-12-25 is a Friday).
        let c = Cron::parse("0 0 0 25 12 Fri").unwrap();
        assert_eq!(c.next_after(t), Some(datetime!(2026-12-25 0:00 UTC)));
    }

    #[test]
    fn cron_refuses_five_fields_with_a_hint() {
        let e = Cron::parse("17 */12 * * *").unwrap_err();
        assert!(e.contains("\"0 17 */12 * * *\""), "{e}");
        assert!(Cron::parse("every day").is_err());
        assert!(Cron::parse("0 61 * * * *").is_err());
    }
}
