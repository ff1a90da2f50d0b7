//! The agent's own thread: a one-thread tokio runtime of its own, so a host runtime that
//! is deadlocked or saturated cannot stop it. Each tick it samples the process, adds
//! the readings to the current metric window, and hands full windows to the outbox.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use holmes_proto::{AgentBody, Hello, Metric, MetricSeries, MetricWindow, Sample};
use tokio::sync::oneshot;

use crate::config::AgentConfig;
use crate::sampler::{unix_nanos_now, Sampler};
use crate::{sender, Shared};

/// Starts the agent thread.
pub(crate) fn spawn(
    cfg: AgentConfig,
    shared: Arc<Shared>,
    stop: oneshot::Receiver<()>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("holmes-agent".to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name("holmes-agent")
                .build()
            {
                Ok(rt) => rt,
                Err(err) => {
                    tracing::error!(target: "holmes", error = %err, "cannot build the agent's runtime; the agent is off");
                    return;
                }
            };
            runtime.block_on(run(Arc::new(cfg), shared, stop));
            // Cancels the sender; its stream closes with the runtime.
            runtime.shutdown_timeout(Duration::from_millis(200));
        })
}

async fn run(cfg: Arc<AgentConfig>, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let hello = Hello {
        protocol_version: holmes_proto::PROTOCOL_VERSION,
        service: cfg.service.clone(),
        instance_id: cfg.instance.clone(),
        host: cfg.host.clone(),
        pid: std::process::id(),
        labels: cfg.labels.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        rules: Vec::new(),
        started_at_unix_nanos: process_start_unix_nanos(),
        collect_interval: cfg.collect_interval,
    };
    if cfg.collector.is_some() {
        tokio::spawn(sender::run(Arc::clone(&cfg), hello, Arc::clone(&shared)));
    } else {
        tracing::info!(target: "holmes", service = %cfg.service, "no collector configured; the agent samples locally");
    }

    let mut sampler = Sampler::new();
    let mut window = WindowBuilder::default();
    let mut ticker = tokio::time::interval(cfg.collect_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_flush: Option<Instant> = None;
    let mut stop_live = true;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let reading = sampler.sample();
                shared.samples.fetch_add(1, Ordering::Relaxed);
                window.add(reading.unix_nanos, &reading.values);
                let due = last_flush.is_none_or(|t| t.elapsed() >= cfg.send_interval);
                if due && !window.is_empty() {
                    flush_window(&cfg, &shared, &mut window);
                    last_flush = Some(Instant::now());
                }
            }
            res = &mut stop, if stop_live => {
                if res.is_ok() {
                    break;
                }
                // The handle was dropped without stop(): keep running for the process's life.
                stop_live = false;
            }
        }
    }

    // stop(): send what is left and give the collector a moment to acknowledge it.
    if cfg.collector.is_some() {
        flush_window(&cfg, &shared, &mut window);
        let deadline = tokio::time::Instant::now() + cfg.flush_timeout; // bounded in config
        loop {
            let notified = shared.acked.notified();
            if shared.lock_outbox().len() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let left = shared.lock_outbox().len();
                tracing::warn!(target: "holmes", unacknowledged = left, "stopping with messages the collector has not acknowledged");
                break;
            }
        }
    }
}

fn flush_window(cfg: &AgentConfig, shared: &Shared, window: &mut WindowBuilder) {
    let w = window.take();
    if cfg.collector.is_none() || w.series.is_empty() {
        return;
    }
    shared.lock_outbox().push(AgentBody::MetricWindow(w));
    shared.queued.notify_one();
}

/// Accumulates samples per metric until the window is sent.
#[derive(Debug, Default)]
struct WindowBuilder {
    series: BTreeMap<Metric, Vec<Sample>>,
}

impl WindowBuilder {
    fn add(&mut self, unix_nanos: u64, values: &[(Metric, f64)]) {
        for &(metric, value) in values {
            self.series
                .entry(metric)
                .or_default()
                .push(Sample { unix_nanos, value });
        }
    }

    fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    fn take(&mut self) -> MetricWindow {
        MetricWindow {
            series: std::mem::take(&mut self.series)
                .into_iter()
                .map(|(metric, samples)| MetricSeries { metric, samples })
                .collect(),
        }
    }
}

/// When this process started, from `/proc/self/stat` and the boot time; now if unknown.
fn process_start_unix_nanos() -> u64 {
    let now = unix_nanos_now();
    let read = || -> Option<u64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let after = &stat[stat.rfind(')')? + 1..];
        // Field 22 is starttime in clock ticks since boot.
        let ticks: u64 = after.split_whitespace().nth(22 - 3)?.parse().ok()?;
        let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
        let uptime_secs: f64 = uptime.split_whitespace().next()?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let hz = u64::try_from(hz).ok().filter(|h| *h > 0)?;
        let started_after_boot = ticks.checked_mul(1_000_000_000 / hz)?;
        let age_nanos = ((uptime_secs * 1e9) as u64).saturating_sub(started_after_boot);
        now.checked_sub(age_nanos)
    };
    read().unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_group_samples_by_metric_in_order() {
        let mut w = WindowBuilder::default();
        w.add(1, &[(Metric::CpuPercent, 5.0), (Metric::Threads, 3.0)]);
        w.add(2, &[(Metric::CpuPercent, 7.0)]);
        let taken = w.take();
        assert!(w.is_empty());
        assert_eq!(taken.series.len(), 2);
        assert_eq!(taken.series[0].metric, Metric::CpuPercent);
        assert_eq!(
            taken.series[0].samples,
            vec![
                Sample {
                    unix_nanos: 1,
                    value: 5.0
                },
                Sample {
                    unix_nanos: 2,
                    value: 7.0
                }
            ]
        );
    }

    #[test]
    fn knows_roughly_when_this_process_started() {
        let start = process_start_unix_nanos();
        let now = unix_nanos_now();
        assert!(
            start <= now && now - start < 3_600 * 1_000_000_000,
            "{start} {now}"
        );
    }
}
