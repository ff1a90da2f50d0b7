//! The fleet host for the suspects test (`holmes-demo fleet-service`): one instance of a
//! service whose every instance spends about a fifth of a core in [`background`], which
//! spends its time in the shared helper [`checksum`]; an instance started with a
//! culprit delay then also burns a core in [`culprit`], which spends its time in the
//! same helper. So the helper is busy everywhere, the background function is the same
//! on healthy and sick instances, and only the culprit tells them apart.
//!
//! Its CPU rule fires at 0.4 of one core, as a percentage of the cores CPU % counts
//! (see [`crate::demo::cpu_capacity`]): above the background's fifth, below what the
//! culprit adds, on 2 cores as on 16.

use std::time::{Duration, Instant};

use holmes_agent::{Holmes, Metric, Rule};

use crate::demo::cpu_capacity;

/// The service name of the fleet host.
pub const SERVICE: &str = "fleet";
/// The background's period: busy a fifth of it, asleep the rest.
const PERIOD: Duration = Duration::from_millis(100);

/// The shared helper: mixes `rounds` numbers (both the background and the culprit
/// spend their time here).
#[inline(never)]
pub fn checksum(rounds: u64) -> u64 {
    let mut x = 0u64;
    for i in 0..rounds {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    x
}

/// What every instance does: about a fifth of a core in [`checksum`], in slices of
/// [`PERIOD`], until `stop` says so.
#[inline(never)]
pub fn background(stop: &dyn Fn() -> bool) {
    while !stop() {
        let started = Instant::now();
        while started.elapsed() < PERIOD / 5 {
            std::hint::black_box(checksum(20_000));
        }
        std::thread::sleep(PERIOD.saturating_sub(started.elapsed()));
    }
}

/// The culprit: a core's worth of [`checksum`] until `stop` says so.
#[inline(never)]
pub fn culprit(stop: &dyn Fn() -> bool) {
    while !stop() {
        std::hint::black_box(checksum(20_000));
    }
}

/// The CPU rule: the agent's default with `min` at 0.4 of one core of `capacity`.
pub fn cpu_rule(capacity: f64) -> Rule {
    Rule::default_for(Metric::CpuPercent)
        .unwrap_or_default()
        .min(40.0 / capacity.max(1.0))
}

/// Runs one instance until the parent goes away: the agent, [`background`] on a thread
/// of its own, and after `culprit_after` (if given) [`culprit`] on another.
pub fn run_service(
    collector: &str,
    instance: &str,
    culprit_after: Option<Duration>,
) -> anyhow::Result<()> {
    let parent = std::os::unix::process::parent_id();
    let orphaned = move || std::os::unix::process::parent_id() != parent;
    let mut agent = Holmes::from_env()?
        .service(SERVICE)
        .instance(instance)
        .collector(collector)
        .collect_interval(Duration::from_secs(1))
        .send_interval(Duration::from_secs(1));
    if std::env::var_os("HOLMES_RULE_CPU").is_none() {
        agent = agent.cpu_rule(cpu_rule(cpu_capacity()));
    }
    let holmes = agent.start()?;
    let started = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| background(&orphaned));
        if let Some(after) = culprit_after {
            s.spawn(move || {
                while started.elapsed() < after {
                    if orphaned() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                culprit(&orphaned);
            });
        }
    });
    holmes.stop();
    Ok(())
}
