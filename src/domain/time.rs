use chrono::{Duration, NaiveDate, NaiveDateTime, Timelike, Utc};

/// The current UTC time truncated to milliseconds, the precision every database here stores.
pub fn now_utc() -> NaiveDateTime {
    let now = Utc::now().naive_utc();
    now.with_nanosecond(now.nanosecond() / 1_000_000 * 1_000_000).unwrap_or(now)
}

/// Today's date in Beijing (UTC+8), the day the business and WeChat's bills count in.
pub fn beijing_today() -> NaiveDate {
    (Utc::now() + Duration::hours(8)).date_naive()
}

/// Parses WeChat's `yyyyMMddHHmmss` in Beijing time (UTC+8, no daylight saving) into UTC.
pub fn beijing_to_utc(s: &str) -> Option<NaiveDateTime> {
    if s.len() != 14 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let local = NaiveDateTime::parse_from_str(s, "%Y%m%d%H%M%S").ok()?;
    local.checked_sub_signed(Duration::hours(8))
}

/// The first and last day the service accepts in a query: beyond them no order can exist, and date
/// arithmetic on them can never overflow.
pub const FIRST_DAY: NaiveDate = match NaiveDate::from_ymd_opt(2000, 1, 1) {
    Some(d) => d,
    None => NaiveDate::MIN,
};
pub const LAST_DAY: NaiveDate = match NaiveDate::from_ymd_opt(2999, 12, 31) {
    Some(d) => d,
    None => NaiveDate::MAX,
};

/// A day not in `YYYY-MM-DD` with a four-digit year, or outside [`FIRST_DAY`]..=[`LAST_DAY`].
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("dates must be YYYY-MM-DD between 2000-01-01 and 2999-12-31")]
pub struct DayError;

/// The days [`parse_day`] accepts, as a JSON Schema pattern next to `format: date` (which checks the
/// month and day): a four-digit year starting with 2 is exactly [`FIRST_DAY`]..=[`LAST_DAY`].
pub const DAY_PATTERN: &str = "^2[0-9]{3}-[0-9]{2}-[0-9]{2}$";

/// Parses a query's day strictly: exactly `YYYY-MM-DD` (no sign, no six-digit years), within bounds.
pub fn parse_day(s: &str) -> Result<NaiveDate, DayError> {
    let b = s.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return Err(DayError);
    }
    let day = NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| DayError)?;
    if !(FIRST_DAY..=LAST_DAY).contains(&day) {
        return Err(DayError);
    }
    Ok(day)
}

/// The days a report covers, both included: `from` (default: six days before `to`) to `to` (default:
/// today, Beijing), at most 366 days, within [`FIRST_DAY`]..=[`LAST_DAY`].
pub fn day_range(from: Option<&str>, to: Option<&str>, today: NaiveDate) -> Result<(NaiveDate, NaiveDate), DayError> {
    let to = match to {
        Some(d) => parse_day(d)?,
        None => today.clamp(FIRST_DAY, LAST_DAY),
    };
    let from = match from {
        Some(d) => parse_day(d)?,
        None => to.checked_sub_signed(Duration::days(6)).unwrap_or(FIRST_DAY).max(FIRST_DAY),
    };
    if from > to || (to - from).num_days() > 366 {
        return Err(DayError);
    }
    Ok((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn days_are_strict_and_bounded() {
        assert_eq!(parse_day("2026-12-01").unwrap().to_string(), "2026-12-01");
        for bad in [
            "-262143-01-01",
            "+2026-12-01",
            "2026-1-01",
            "2026-02-30",
            "1999-12-31",
            "3000-01-01",
            "",
            "２０２６-12-01",
        ] {
            assert_eq!(parse_day(bad), Err(DayError), "{bad}");
        }
    }

    #[test]
    fn a_range_defaults_to_the_last_seven_days_and_is_bounded() {
        let today = parse_day("2026-12-01").unwrap();
        let (from, to) = day_range(None, None, today).unwrap();
        assert_eq!((from.to_string(), to.to_string()), ("2026-11-25".into(), "2026-12-01".into()));
        assert_eq!(day_range(None, Some("2000-01-03"), today).unwrap().0, FIRST_DAY);
        assert_eq!(day_range(Some("2026-12-02"), Some("2026-12-01"), today), Err(DayError));
        assert_eq!(day_range(Some("2024-01-01"), Some("2026-01-01"), today), Err(DayError));
    }

    proptest! {
        #[test]
        fn any_range_is_ordered_and_short_or_refused(from in "\\PC{0,12}", to in "\\PC{0,12}", days in 0i64..400_000) {
            let today = FIRST_DAY.checked_add_signed(Duration::days(days)).unwrap_or(LAST_DAY);
            for (f, t) in [(Some(from.as_str()), Some(to.as_str())), (None, Some(to.as_str())), (Some(from.as_str()), None), (None, None)] {
                if let Ok((a, b)) = day_range(f, t, today) {
                    prop_assert!(a <= b && (b - a).num_days() <= 366 && a >= FIRST_DAY && b <= LAST_DAY);
                }
            }
        }

        #[test]
        fn any_text_parses_or_is_refused_and_accepted_days_take_arithmetic(s in "\\PC{0,16}") {
            if let Ok(day) = parse_day(&s) {
                prop_assert!(day.checked_sub_signed(Duration::days(400)).is_some());
                prop_assert!(day.checked_add_signed(Duration::days(400)).is_some());
                prop_assert!(day.and_hms_opt(0, 0, 0).is_some());
            }
        }

        #[test]
        fn every_day_in_range_round_trips(offset in 0i64..365_000) {
            if let Some(day) = FIRST_DAY.checked_add_signed(Duration::days(offset)).filter(|d| *d <= LAST_DAY) {
                prop_assert_eq!(parse_day(&day.format("%Y-%m-%d").to_string()), Ok(day));
            }
        }

        #[test]
        fn any_time_end_parses_or_is_refused(s in "\\PC{0,20}") {
            let _ = beijing_to_utc(&s);
        }
    }

    #[test]
    fn time_end_is_beijing_time() {
        let utc = beijing_to_utc("20220321132007").unwrap();
        assert_eq!(utc.to_string(), "2022-03-21 05:20:07");
        assert_eq!(beijing_to_utc("20220321").map(|_| ()), None);
        assert_eq!(beijing_to_utc("2022032113200x").map(|_| ()), None);
    }
}
