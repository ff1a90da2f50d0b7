//! Baselines: what this instance looks like between incidents, sent to the collector
//! every `HOLMES_BASELINE_INTERVAL` (±20 % at random, so a fleet started together does
//! not send together), so an incident's suspects have something to be judged against.
//!
//! A baseline is a trigger event with reason `baseline` and no metric, and cheap
//! captures only: the flight recorder's history as a CPU profile (no new sampling), a
//! heap profile where a heap profiler is installed (a copy of the sampler's table, or a
//! jemalloc dump), the threads' stacks (one signal per thread) and, with task dumps
//! built in, the tasks' stacks when the registered runtimes hold at most
//! [`BASELINE_MAX_TASKS`] tasks (a dump re-polls every task). Kinds being captured for a
//! trigger at that moment are left out. None while captures are paused or CPU is above
//! `cpu_max`, and none without a collector (the dump folder is for incidents). What each
//! baseline cost — CPU time of its capture thread and bytes of its profiles — is added
//! to the agent's stats.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use holmes_proto::{ProfileKind, TriggerEvent, TriggerReason};

use super::engine::{record_and_capture, Ctx, Engine};
use crate::capture::plan::{Job, OnDone, Report};
use crate::capture::tasks;
use crate::clock::unix_nanos_now;
use crate::event_id;

/// Most alive tasks for a baseline's task dump; with more, the baseline has none.
pub(crate) const BASELINE_MAX_TASKS: usize = 1_000;

/// Sends a baseline now, unless captures are held back.
pub(super) fn fire_baseline(ctx: &Ctx<'_>, engine: &Engine) {
    if let Some(pause) = ctx.paused() {
        tracing::debug!(target: "holmes", reason = %pause.reason, "no baseline: the collector paused captures");
        return;
    }
    if let Some(cpu) = ctx.cpu_gate(engine.last_cpu) {
        tracing::info!(target: "holmes", cpu_percent = cpu, cpu_max = ctx.cfg.cpu_max, "no baseline: cpu is above cpu_max");
        return;
    }
    let mut wanted = Vec::new();
    if ctx.captures.unsupported(ProfileKind::Cpu).is_none() {
        wanted.push(Job::CpuRecorded {
            window: None,
            phase: "baseline",
        });
    }
    wanted.push(Job::Threads);
    if ctx.captures.unsupported(ProfileKind::Heap).is_none() {
        wanted.push(Job::Heap);
    }
    let runtimes = ctx.shared.runtimes.handles();
    let alive: usize = runtimes.iter().map(|h| h.metrics().num_alive_tasks()).sum();
    if tasks::AVAILABLE && !runtimes.is_empty() && alive <= BASELINE_MAX_TASKS {
        wanted.push(Job::Tasks);
    }
    let event_id = event_id::new();
    let exclusive: Vec<ProfileKind> = wanted
        .iter()
        .filter(|j| j.exclusive())
        .map(|j| j.kind())
        .collect();
    let claimed = ctx.captures.claim(&event_id, &exclusive);
    let jobs: Vec<Job> = wanted
        .into_iter()
        .filter(|j| !j.exclusive() || claimed.contains(&j.kind()))
        .collect();
    if jobs.is_empty() {
        return;
    }
    let planned: Vec<ProfileKind> = jobs.iter().map(|j| j.kind()).collect();
    let event = TriggerEvent {
        event_id,
        metric: None,
        reason: TriggerReason::Baseline,
        current: 0.0,
        window: Vec::new(),
        rule: None,
        unix_nanos: unix_nanos_now(),
        planned: planned.clone(),
        request_id: None,
    };
    tracing::debug!(target: "holmes", event_id = %event.event_id, planned = ?planned, "baseline");
    let shared = Arc::clone(ctx.shared);
    let id = event.event_id.clone();
    let done: OnDone = Box::new(move |report: Report| {
        shared.baselines.fetch_add(1, Ordering::Relaxed);
        shared.baseline_cpu_nanos.fetch_add(
            u64::try_from(report.cpu.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        shared
            .baseline_bytes
            .fetch_add(report.bytes, Ordering::Relaxed);
        tracing::info!(
            target: "holmes",
            event_id = %id,
            kinds = ?report.results.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            cpu_ms = report.cpu.as_secs_f64() * 1e3,
            bytes = report.bytes,
            "baseline sent"
        );
    });
    record_and_capture(ctx, &event, jobs, Some(done));
}
