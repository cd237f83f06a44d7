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
    let local = NaiveDateTime::parse_from_str(s, "%Y%m%d%H%M%S").ok()?;
    Some(local - Duration::hours(8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_end_is_beijing_time() {
        let utc = beijing_to_utc("20220321132007").unwrap();
        assert_eq!(utc.to_string(), "2022-03-21 05:20:07");
        assert_eq!(beijing_to_utc("20220321").map(|_| ()), None);
        assert_eq!(beijing_to_utc("2022032113200x").map(|_| ()), None);
    }
}
