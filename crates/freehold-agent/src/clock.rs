//! Wall-clock dates for session ids and the environment note (UTC only,
//! which is all the agent needs; the calendar is freehold-protocol's).

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `YYYY-MM-DD` for a Unix time (UTC).
pub(crate) fn date(unix: u64) -> String {
    freehold_protocol::time::utc_date(i64::try_from(unix).unwrap_or(i64::MAX))
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time.
pub(crate) fn rfc3339(unix: u64) -> String {
    freehold_protocol::time::utc_rfc3339(i64::try_from(unix).unwrap_or(i64::MAX))
}

/// `YYYYMMDD-HHMMSS` for a Unix time: sorts like the time it names.
pub(crate) fn compact(unix: u64) -> String {
    rfc3339(unix)
        .replace(['-', ':'], "")
        .replace('T', "-")
        .trim_end_matches('Z')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(rfc3339(1_764_031_712), "2025-11-25T00:48:32Z");
        assert_eq!(compact(1_764_031_712), "20251125-004832");
    }
}
