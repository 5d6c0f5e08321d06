//! Cron schedules with six fields (seconds first; `0 0 * * * *` = hourly), evaluated in UTC so
//! that daylight-saving changes never shift a run.

use std::fmt;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A parsed six-field cron expression.
#[derive(Clone)]
pub struct Schedule {
    expr: String,
    // Shared: a parsed pattern is large and schedules are cloned with job settings.
    cron: std::sync::Arc<Cron>,
}

impl Schedule {
    /// Parses a six-field expression (seconds minutes hours day-of-month month day-of-week).
    pub fn parse(expr: &str) -> Result<Self, String> {
        let fields = expr.split_whitespace().count();
        if fields != 6 {
            return Err(format!(
                "invalid cron `{expr}`: expected 6 fields (sec min hour day month weekday), found {fields}"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| format!("invalid cron `{expr}`: {e}"))?;
        Ok(Schedule {
            expr: expr.to_string(),
            cron: std::sync::Arc::new(cron),
        })
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The first fire time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&t, false).ok()
    }

    /// The first fire time at or after `t`.
    pub fn next_at_or_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&t, true).ok()
    }

    /// Whether `t` (to the second) is one of the schedule's moments.
    pub fn matches(&self, t: DateTime<Utc>) -> bool {
        use chrono::{SubsecRound, Timelike};
        let t = t.trunc_subsecs(0);
        debug_assert_eq!(t.nanosecond(), 0);
        self.cron.is_time_matching(&t).unwrap_or(false)
    }

    /// The nominal interval between two fire times (from the first two after `t`).
    pub fn interval_near(&self, t: DateTime<Utc>) -> Option<chrono::Duration> {
        let a = self.next_after(t)?;
        let b = self.next_after(a)?;
        Some(b - a)
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.expr)
    }
}

impl<'de> serde::Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Schedule::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn hourly_fires_on_the_hour_in_utc() {
        let s = Schedule::parse("0 0 * * * *").unwrap();
        let t = Utc.with_ymd_and_hms(2026, 3, 29, 0, 30, 0).unwrap();
        assert_eq!(
            s.next_after(t).unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap()
        );
        assert_eq!(s.interval_near(t).unwrap(), chrono::Duration::hours(1));
    }

    #[test]
    fn next_after_is_strict_and_at_or_after_is_not() {
        let s = Schedule::parse("*/5 * * * * *").unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 10).unwrap();
        assert_eq!(s.next_after(t).unwrap(), t + chrono::Duration::seconds(5));
        assert_eq!(s.next_at_or_after(t).unwrap(), t);
    }

    #[test]
    fn five_fields_and_garbage_are_rejected() {
        assert!(Schedule::parse("0 * * * *").is_err());
        assert!(Schedule::parse("61 * * * * *").is_err());
        assert!(Schedule::parse("a b c d e f").is_err());
    }
}
