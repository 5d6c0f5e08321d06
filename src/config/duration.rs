//! Durations as operators write them: `30d`, `90d`, `48h`, `15m`, `5s` (also `500ms`, `2w`, and
//! sums such as `1h30m`). Zero is rejected: every duration in the config is an interval or a bound.

use std::fmt;
use std::str::FromStr;

/// A positive duration parsed from the config's notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const fn from_secs(secs: u64) -> Self {
        Duration(std::time::Duration::from_secs(secs))
    }

    pub fn as_std(&self) -> std::time::Duration {
        self.0
    }

    /// As a chrono duration (saturating at chrono's maximum).
    pub fn as_chrono(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.0).unwrap_or(chrono::Duration::MAX)
    }
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        if text.is_empty() {
            return Err("empty duration: write it like `30d`, `48h`, `15m` or `5s`".into());
        }
        let mut total_ms: u128 = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(format!(
                    "invalid duration `{text}`: expected a number followed by a unit (ms, s, m, h, d, w)"
                ));
            }
            let n: u128 = rest[..digits]
                .parse()
                .map_err(|_| format!("invalid duration `{text}`: number too large"))?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let ms_per_unit: u128 = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "w" => 604_800_000,
                "" => {
                    return Err(format!(
                        "invalid duration `{text}`: missing unit (ms, s, m, h, d, w)"
                    ));
                }
                other => {
                    return Err(format!(
                        "invalid duration `{text}`: unknown unit `{other}` (use ms, s, m, h, d, w)"
                    ));
                }
            };
            total_ms = total_ms
                .checked_add(n.saturating_mul(ms_per_unit))
                .ok_or_else(|| format!("invalid duration `{text}`: too large"))?;
        }
        if total_ms == 0 {
            return Err(format!("duration `{text}` must be greater than zero"));
        }
        // Bound to ~100 years so that arithmetic with timestamps never overflows.
        if total_ms > 100 * 365 * 86_400_000 {
            return Err(format!(
                "duration `{text}` is too large (at most 100 years)"
            ));
        }
        Ok(Duration(std::time::Duration::from_millis(total_ms as u64)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        let units = [
            (604_800_000u128, "w"),
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1_000, "s"),
            (1, "ms"),
        ];
        if ms == 0 {
            return write!(f, "0s");
        }
        let mut rest = ms;
        for (size, unit) in units {
            if rest >= size {
                write!(f, "{}{}", rest / size, unit)?;
                rest %= size;
            }
        }
        Ok(())
    }
}

impl<'de> serde::Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_units_operators_write() {
        assert_eq!(
            "30d".parse::<Duration>().unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(
            "48h".parse::<Duration>().unwrap(),
            Duration::from_secs(48 * 3600)
        );
        assert_eq!("15m".parse::<Duration>().unwrap(), Duration::from_secs(900));
        assert_eq!("5s".parse::<Duration>().unwrap(), Duration::from_secs(5));
        assert_eq!(
            "1h30m".parse::<Duration>().unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            "250ms".parse::<Duration>().unwrap().as_std(),
            std::time::Duration::from_millis(250)
        );
    }

    #[test]
    fn rejects_zero_missing_units_and_garbage() {
        for bad in [
            "0s",
            "0d",
            "",
            "30",
            "d",
            "3x",
            "-5s",
            "1.5h",
            "99999999999999999999999d",
        ] {
            assert!(bad.parse::<Duration>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn displays_round_trip() {
        for s in ["30d", "48h", "1h30m", "5s", "250ms", "2w"] {
            let d: Duration = s.parse().unwrap();
            assert_eq!(d.to_string().parse::<Duration>().unwrap(), d);
        }
    }
}
