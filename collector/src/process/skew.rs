//! Agents' timestamps checked against the collector's clock.
//!
//! An agent's clock can be wrong, or its data crafted: points dated 1970 or 2200 would
//! land in partitions retention never reaches (or drops at once), and one metric window
//! spread over thousands of days would make thousands of ClickHouse partitions — more
//! than one insert may touch, failing the batch it shares with other agents. So every
//! timestamp must lie within `max_clock_skew` of the collector's clock: metric points
//! outside are dropped, and a trigger event's or a profile's time outside is set to the
//! collector's (the event itself matters; a profile keeps a label saying so). Each is
//! logged with the agent's value and counted as `holmes_ingest_refused_total{reason =
//! "clock_skew"}` (one per message: a window with points dropped, a trigger or a profile
//! re-dated).

use std::time::Duration;

use holmes_storage::{MetricPoint, ProfileRecord, TriggerRecord};

use crate::clock::unix_nanos_now;

/// How far an agent's timestamps may be from the collector's clock unless
/// `max_clock_skew` says otherwise: a day, so that an agent replaying its disk spool
/// after a day without its collector is still taken as it is.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(24 * 3600);

/// The label a profile whose start time was moved gets: the agent's value.
pub const CLAMPED_LABEL: &str = "holmes.agent_started_unix_nanos";

/// The window timestamps must be in, from the collector's clock now.
#[derive(Debug, Clone, Copy)]
pub struct Skew {
    now: u64,
    earliest: u64,
    latest: u64,
}

impl Skew {
    /// The window around now.
    pub fn now(max: Duration) -> Skew {
        Skew::around(unix_nanos_now(), max)
    }

    /// The window around `now`.
    pub fn around(now: u64, max: Duration) -> Skew {
        let max = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Skew {
            now,
            earliest: now.saturating_sub(max),
            latest: now.saturating_add(max),
        }
    }

    fn holds(&self, unix_nanos: u64) -> bool {
        (self.earliest..=self.latest).contains(&unix_nanos)
    }

    /// The finite points of `window` within the window; the others are dropped, said
    /// once per window.
    pub fn points(
        &self,
        service: &str,
        instance_id: &str,
        window: &holmes_proto::MetricWindow,
    ) -> Vec<MetricPoint> {
        let mut out = Vec::new();
        let mut refused = 0usize;
        let mut example = 0u64;
        for series in &window.series {
            for s in series.samples.iter().filter(|s| s.value.is_finite()) {
                if !self.holds(s.unix_nanos) {
                    refused += 1;
                    example = s.unix_nanos;
                    continue;
                }
                out.push(MetricPoint {
                    service: service.to_owned(),
                    instance_id: instance_id.to_owned(),
                    metric: series.metric,
                    unix_nanos: s.unix_nanos,
                    value: s.value,
                });
            }
        }
        if refused > 0 {
            crate::metrics::metrics().ingest_refused("clock_skew");
            tracing::warn!(
                %service,
                instance = %instance_id,
                refused,
                agent_unix_nanos = example,
                collector_unix_nanos = self.now,
                "metric points dated outside max_clock_skew of the collector's clock dropped"
            );
        }
        out
    }

    /// Sets a trigger's time to the collector's when it is outside the window.
    pub fn trigger(&self, t: &mut TriggerRecord) {
        if self.holds(t.unix_nanos) {
            return;
        }
        crate::metrics::metrics().ingest_refused("clock_skew");
        tracing::warn!(
            service = %t.service,
            instance = %t.instance_id,
            event_id = %t.event_id,
            agent_unix_nanos = t.unix_nanos,
            collector_unix_nanos = self.now,
            "trigger event dated outside max_clock_skew of the collector's clock: stored at the collector's time"
        );
        t.unix_nanos = self.now;
    }

    /// When a profile that says it started at `started_unix_nanos` is stored as started
    /// ([`Skew::profile`] moves it to now when outside the window).
    pub fn started(&self, started_unix_nanos: u64) -> u64 {
        if self.holds(started_unix_nanos) {
            started_unix_nanos
        } else {
            self.now
        }
    }

    /// Sets a profile's start to the collector's time when it is outside the window,
    /// with a label holding the agent's value.
    pub fn profile(&self, p: &mut ProfileRecord) {
        if self.holds(p.started_unix_nanos) {
            return;
        }
        crate::metrics::metrics().ingest_refused("clock_skew");
        tracing::warn!(
            service = %p.service,
            instance = %p.instance_id,
            profile_id = %p.profile_id,
            agent_unix_nanos = p.started_unix_nanos,
            collector_unix_nanos = self.now,
            "profile dated outside max_clock_skew of the collector's clock: stored at the collector's time"
        );
        p.labels
            .insert(CLAMPED_LABEL.to_owned(), p.started_unix_nanos.to_string());
        p.started_unix_nanos = self.now;
    }
}

#[cfg(test)]
mod tests {
    use holmes_proto::{Metric, MetricSeries, MetricWindow, Sample};

    use super::*;

    const NOW: u64 = 1_795_651_200_000_000_000;
    const HOUR: u64 = 3_600_000_000_000;

    #[test]
    fn points_outside_the_window_are_dropped() {
        let skew = Skew::around(NOW, Duration::from_secs(3600));
        let window = MetricWindow {
            series: vec![MetricSeries {
                metric: Metric::CpuPercent,
                samples: [
                    0,
                    NOW - 2 * HOUR,
                    NOW - HOUR,
                    NOW,
                    NOW + HOUR,
                    NOW + 2 * HOUR,
                    u64::MAX,
                ]
                .into_iter()
                .map(|unix_nanos| Sample {
                    unix_nanos,
                    value: 1.0,
                })
                .collect(),
            }],
        };
        let counted = || {
            crate::metrics::metrics()
                .ingest_refused
                .get_or_create(&crate::metrics::ReasonLabels {
                    reason: "clock_skew",
                })
                .get()
        };
        let before = counted();
        let kept: Vec<u64> = skew
            .points("s", "i", &window)
            .iter()
            .map(|p| p.unix_nanos)
            .collect();
        assert_eq!(kept, vec![NOW - HOUR, NOW, NOW + HOUR]);
        // The window is counted once, whatever its points.
        assert!(counted() > before);
    }
}
