//! UTC calendar dates for the timestamps Freehold writes (session ids, the
//! model store, reports, the gateway's ledger), without a date crate. The
//! caller passes the time: nothing here reads a clock.

/// `YYYY-MM-DD` of a Unix time in seconds (UTC).
pub fn utc_date(unix_secs: i64) -> String {
    let (year, month, day) = civil_from_days(unix_secs.div_euclid(86_400));
    format!("{year:04}-{month:02}-{day:02}")
}

/// `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339, UTC) of a Unix time in seconds.
pub fn utc_rfc3339(unix_secs: i64) -> String {
    let of_day = unix_secs.rem_euclid(86_400);
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        utc_date(unix_secs),
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`). Out-of-range months and days are not checked: a
/// caller parsing a date compares [`utc_date`] of the result with its input.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month = i64::from(month);
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a count of days since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_rfc3339(951_827_696), "2000-02-29T12:34:56Z");
        assert_eq!(utc_date(-1), "1969-12-31");
        assert_eq!(utc_date(20_454 * 86_400), "2026-01-01");
    }

    #[test]
    fn days_round_trip() {
        for days in [-800_000, -1, 0, 11_016, 20_454, 2_932_896] {
            let date = utc_date(days * 86_400);
            let year = date[..date.len() - 6].parse().unwrap_or(0);
            let month = date[date.len() - 5..date.len() - 3].parse().unwrap_or(0);
            let day = date[date.len() - 2..].parse().unwrap_or(0);
            assert_eq!(days_from_civil(year, month, day), days, "{date}");
        }
    }
}
