//! Wall-clock helpers: nanoseconds since the Unix epoch, RFC 3339 text, and the
//! relative times (`10m`) the API and CLI accept.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, in nanoseconds since the Unix epoch.
pub fn unix_nanos_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// RFC 3339 with milliseconds, UTC: `2026-11-26T03:12:00.123Z`.
pub fn rfc3339(unix_nanos: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(unix_nanos)).to_string()
}

/// A point in time given as a duration before `now` (`10m`, `2h`) or as RFC 3339.
pub fn parse_time(text: &str, now_unix_nanos: u64) -> Result<u64, String> {
    let text = text.trim();
    if let Ok(ago) = humantime::parse_duration(text) {
        let ago = u64::try_from(ago.as_nanos()).unwrap_or(u64::MAX);
        return Ok(now_unix_nanos.saturating_sub(ago));
    }
    match humantime::parse_rfc3339_weak(text) {
        Ok(t) => Ok(t
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))),
        Err(_) => Err(format!(
            "{text:?} is neither a duration such as 10m or 2h nor a time such as 2026-11-26T03:12:00Z"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_relative_and_absolute_times() {
        let now = 1_000 * 1_000_000_000;
        assert_eq!(parse_time("10m", now), Ok(400 * 1_000_000_000));
        assert_eq!(parse_time("1h", now), Ok(0));
        assert_eq!(
            parse_time("1970-01-01T00:00:10Z", now),
            Ok(10 * 1_000_000_000)
        );
        assert!(parse_time("yesterday", now)
            .unwrap_err()
            .contains("yesterday"));
        assert_eq!(rfc3339(1_500_000_000), "1970-01-01T00:00:01.500Z");
    }
}
