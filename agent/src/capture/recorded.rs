//! CPU profiles of a past interval, from the flight recorder's history: what an
//! incident's healthy controls send (the same wall-clock seconds as the sick instances'
//! pre-trigger window) and what a baseline sends (all the history). No new sampling: the
//! recorder already holds the seconds, so this is cheap and runs beside a full-rate
//! capture.
//!
//! The recorder counts time on the monotonic clock; a wall-clock interval is mapped onto
//! it with the offset between the two clocks now, and read to the second. What the
//! recorder does not hold (older than its history, or than the agent) is cut from the
//! interval; the
//! profile's time and duration and its `window_start_unix_nanos` /
//! `window_end_unix_nanos` labels say what it covers. An interval entirely outside the
//! history is a failed capture saying so. An idle process has no samples in an interval
//! it holds: its profile is empty, which is the truth about it.

use std::time::Duration;

use holmes_proto::{ProfileKind, TimeWindow};

use super::{cpu, phase, Captured, Captures};
use crate::clock::unix_nanos_now;

impl Captures {
    /// The flight recorder's samples over `window` (all it holds when `None`),
    /// labelled `phase`.
    pub(super) fn capture_cpu_recorded(
        &self,
        window: Option<TimeWindow>,
        phase_name: &str,
        sink: &mut dyn FnMut(Captured),
    ) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        self.drain();
        let now_mono = cpu::now_ns();
        let now_unix = unix_nanos_now();
        let (stacks, from, to) = {
            let r = recorder.lock().unwrap_or_else(|p| p.into_inner());
            let history = r.history();
            let held_from =
                now_unix.saturating_sub(now_mono.saturating_sub(r.holds_since(now_mono)));
            let (start, end) = window.map_or((held_from, now_unix), |w| {
                (w.start_unix_nanos, w.end_unix_nanos)
            });
            let (from, to) = (start.max(held_from), end.min(now_unix));
            if from >= to {
                drop(r);
                let when = |n: u64| {
                    humantime::format_rfc3339_millis(
                        std::time::UNIX_EPOCH + Duration::from_nanos(n),
                    )
                };
                sink(Captured {
                    kind: ProfileKind::Cpu,
                    started_unix_nanos: start,
                    duration: Duration::ZERO,
                    labels: phase(phase_name),
                    result: Err(format!(
                        "the flight recorder holds {} of history, from {}; the interval {} to {} is not in it",
                        humantime::format_duration(history),
                        when(held_from),
                        when(start),
                        when(end)
                    )),
                    text: None,
                });
                return;
            }
            // Wall clock to monotonic, with the offset between the two clocks now.
            let to_mono = |unix: u64| now_mono.saturating_sub(now_unix - unix);
            (r.range(to_mono(from), to_mono(to)), from, to)
        };
        let mut captured = self.encode_cpu(
            &stacks,
            cpu::FLIGHT_HZ,
            from,
            Duration::from_nanos(to - from),
            phase_name,
        );
        captured
            .labels
            .insert("window_start_unix_nanos".to_owned(), from.to_string());
        captured
            .labels
            .insert("window_end_unix_nanos".to_owned(), to.to_string());
        tracing::debug!(target: "holmes", phase = phase_name, from, to, stacks = stacks.len(), "cpu profile from the flight recorder's history");
        sink(captured);
    }
}
