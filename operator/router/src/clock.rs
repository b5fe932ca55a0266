//! UTC calendar time from [`SystemTime`], for capture records
//! (`inferenceTime`) and the hour folders of capture objects: the
//! proleptic Gregorian calendar computed from the days since the Unix epoch
//! (Howard Hinnant's `civil_from_days`), so no date crate is needed.

use std::time::{SystemTime, UNIX_EPOCH};

/// One instant in UTC, to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl Utc {
    /// The UTC time of `t` (rounded down to the second).
    pub fn of(t: SystemTime) -> Utc {
        let seconds = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => {
                let before = e.duration();
                -(before.as_secs() as i64) - i64::from(before.subsec_nanos() > 0)
            }
        };
        Utc::from_unix(seconds)
    }

    /// The UTC time `seconds` after 1970-01-01T00:00:00Z (negative: before).
    pub fn from_unix(seconds: i64) -> Utc {
        let days = seconds.div_euclid(86_400);
        let of_day = seconds.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        Utc {
            year,
            month,
            day,
            hour: of_day / 3600,
            minute: of_day / 60 % 60,
            second: of_day % 60,
        }
    }

    /// RFC 3339 with a `Z` offset, e.g. `2024-02-29T23:59:59Z`.
    pub fn rfc3339(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// The (year, month 1-12, day 1-31) of the day `days` after 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Days since 0000-03-01, in 400-year eras of 146,097 days each.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1st
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn leap(year: i64) -> bool {
        year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
    }

    fn days_in(year: i64, month: u32) -> u32 {
        match month {
            2 if leap(year) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    #[test]
    fn known_instants() {
        assert_eq!(Utc::from_unix(0).rfc3339(), "1970-01-01T00:00:00Z");
        // 2000 is a leap year (divisible by 400).
        assert_eq!(
            Utc::from_unix(951_782_400).rfc3339(),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            Utc::from_unix(1_709_251_199).rfc3339(),
            "2024-02-29T23:59:59Z"
        );
        assert_eq!(
            Utc::from_unix(1_709_251_200).rfc3339(),
            "2024-03-01T00:00:00Z"
        );
        assert_eq!(
            Utc::from_unix(1_735_689_599).rfc3339(),
            "2024-12-31T23:59:59Z"
        );
        assert_eq!(
            Utc::from_unix(4_107_542_400).rfc3339(),
            "2100-03-01T00:00:00Z"
        );
        assert_eq!(Utc::from_unix(-1).rfc3339(), "1969-12-31T23:59:59Z");
        assert_eq!(
            Utc::of(UNIX_EPOCH + Duration::from_millis(1_709_251_199_999)).rfc3339(),
            "2024-02-29T23:59:59Z"
        );
        assert_eq!(
            Utc::of(UNIX_EPOCH - Duration::from_millis(500)).rfc3339(),
            "1969-12-31T23:59:59Z"
        );
    }

    #[test]
    fn every_day_follows_the_previous_one() {
        // 1900-01-01 .. 2200-12-31, against a day-by-day count.
        let mut expected = (1900i64, 1u32, 1u32);
        let start = -25_567; // 1900-01-01
        for days in start..start + 110_000 {
            assert_eq!(civil_from_days(days), expected, "day {days}");
            let (y, m, d) = expected;
            expected = if d < days_in(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }
}
