//! Times as a person reads them: in the local time zone, to the second, with how long
//! ago (`2026-12-02 03:19:07 (4 min ago)`).

use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::escape::printable;

/// `rfc3339` (as the API gives times) in `zone`, with how long before `now` it was; an
/// unreadable time as it is.
pub(crate) fn when(rfc3339: &str, now: Timestamp, zone: &TimeZone) -> String {
    match rfc3339.parse::<Timestamp>() {
        Ok(t) => format!(
            "{} ({})",
            t.to_zoned_datetime(zone.clone())
                .strftime("%Y-%m-%d %H:%M:%S"),
            ago(t, now)
        ),
        Err(_) => printable(rfc3339).into_owned(),
    }
}

/// `4 min ago`, `in 3 s` (a clock ahead of ours), `now`.
pub(crate) fn ago(t: Timestamp, now: Timestamp) -> String {
    let secs = now.as_second().saturating_sub(t.as_second());
    let (n, unit) = magnitude(secs.unsigned_abs());
    if n == 0 {
        "now".to_owned()
    } else if secs > 0 {
        format!("{n} {unit} ago")
    } else {
        format!("in {n} {unit}")
    }
}

/// A span in seconds in the unit a person would say it in, rounded down.
fn magnitude(secs: u64) -> (u64, &'static str) {
    const MIN: u64 = 60;
    const HOUR: u64 = 60 * MIN;
    const DAY: u64 = 24 * HOUR;
    match secs {
        s if s < MIN => (s, "s"),
        s if s < HOUR => (s / MIN, "min"),
        s if s < 2 * DAY => (s / HOUR, "h"),
        s => (s / DAY, "days"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_local_with_how_long_ago() {
        let now: Timestamp = "2026-12-02T03:23:30Z".parse().unwrap();
        let utc = TimeZone::UTC;
        assert_eq!(
            when("2026-12-02T03:19:07.250Z", now, &utc),
            "2026-12-02 03:19:07 (4 min ago)"
        );
        let plus_one = TimeZone::fixed(jiff::tz::offset(1));
        assert_eq!(
            when("2026-12-02T03:19:07Z", now, &plus_one),
            "2026-12-02 04:19:07 (4 min ago)"
        );
        assert_eq!(when("yesterday\x1b[2J", now, &utc), "yesterday\\u{1b}[2J");
    }

    #[test]
    fn spans_are_said_in_their_unit() {
        let now: Timestamp = "2026-12-02T03:00:00Z".parse().unwrap();
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(ago(at("2026-12-02T03:00:00Z"), now), "now");
        assert_eq!(ago(at("2026-12-02T02:59:15Z"), now), "45 s ago");
        assert_eq!(ago(at("2026-12-02T01:00:00Z"), now), "2 h ago");
        assert_eq!(ago(at("2026-11-30T02:00:00Z"), now), "2 days ago");
        assert_eq!(ago(at("2026-12-02T03:00:07Z"), now), "in 7 s");
    }
}
