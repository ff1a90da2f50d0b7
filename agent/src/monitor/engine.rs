//! Rules, the second stage: every reading judged against its metric's rule, a firing
//! turned into a trigger event and its captures. Requested captures ([`super::requested`])
//! and baselines ([`super::baseline`]) go through the same [`record_and_capture`].
//!
//! With `cpu_max` set, no capture starts while the last sampled CPU % is above it — for
//! a rule's trigger and for a requested capture alike: captures cost CPU too. The same
//! while the collector has paused captures. The trigger event is still recorded and
//! sent, planning no profile, and the reason is logged.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use holmes_proto::{CapturePause, Metric, RuleConfig, Sample, TriggerEvent, TriggerReason};

use super::shared::Shared;
use crate::capture::plan::{Job, OnDone};
use crate::capture::requests::RateLimit;
use crate::capture::Captures;
use crate::clock::unix_nanos_now;
use crate::config::AgentConfig;
use crate::event_id;
use crate::rules::{Decision, RuleState};

/// The rules being applied, the generation of the shared rule book they came from, and
/// what the agent thread alone keeps about captures.
pub(super) struct Engine {
    states: BTreeMap<Metric, RuleState>,
    generation: u64,
    /// The last CPU % sampled, for the `cpu_max` gate.
    pub(super) last_cpu: Option<f64>,
    /// Captures the collector asked for, per kind.
    pub(super) limit: RateLimit,
}

impl Engine {
    pub(super) fn new(shared: &Shared, cfg: &AgentConfig) -> Self {
        let (generation, rules) = shared.rules.snapshot();
        Engine {
            states: rules
                .into_iter()
                .map(|(m, r)| (m, RuleState::new(m, r)))
                .collect(),
            generation,
            last_cpu: None,
            limit: RateLimit::new(cfg.capture_request_interval),
        }
    }

    /// Picks up rule changes made through the handle or pushed by the collector.
    pub(super) fn refresh(&mut self, shared: &Shared) {
        if shared.rules.generation() == self.generation {
            return;
        }
        let (generation, rules) = shared.rules.snapshot();
        for (metric, rule) in rules {
            match self.states.get_mut(&metric) {
                Some(state) => state.set_rule(rule),
                None => {
                    self.states.insert(metric, RuleState::new(metric, rule));
                }
            }
        }
        self.generation = generation;
        tracing::info!(target: "holmes", generation, rules_version = shared.rules.version(), "rules updated");
    }
}

/// What a firing needs: the configuration, the shared state and the capture machinery.
pub(super) struct Ctx<'a> {
    pub(super) cfg: &'a Arc<AgentConfig>,
    pub(super) shared: &'a Arc<Shared>,
    pub(super) captures: &'a Arc<Captures>,
}

impl Ctx<'_> {
    /// The CPU % above `cpu_max` that holds captures back, if it does now.
    pub(super) fn cpu_gate(&self, last_cpu: Option<f64>) -> Option<f64> {
        let max = self.cfg.cpu_max;
        last_cpu.filter(|cpu| max > 0.0 && *cpu > max)
    }

    /// The collector's pause of captures, if one is on now.
    pub(super) fn paused(&self) -> Option<CapturePause> {
        self.shared.rules.paused(unix_nanos_now())
    }
}

/// Judges a round of readings; fires what crosses its rule.
pub(super) fn judge_reading(
    ctx: &Ctx<'_>,
    engine: &mut Engine,
    unix_nanos: u64,
    values: &[(Metric, f64)],
) {
    if let Some(cpu) = values.iter().find(|(m, _)| *m == Metric::CpuPercent) {
        engine.last_cpu = Some(cpu.1);
    }
    let now = Instant::now();
    let last_cpu = engine.last_cpu;
    for &(metric, value) in values {
        let Some(state) = engine.states.get_mut(&metric) else {
            continue;
        };
        let decision = state.observe(Sample { unix_nanos, value }, now);
        log_decision(ctx.cfg, state, value, &decision, "sample");
        if let Decision::Fire { reason, .. } = decision {
            let firing = Firing {
                metric,
                reason,
                current: value,
                unix_nanos,
                window: state.window(),
                rule: state.rule.to_config(metric),
            };
            fire(ctx, last_cpu, firing);
        }
    }
}

/// Judges one value read between two rounds against its rule's window, without keeping
/// it in the window; fires if it crosses the rule.
pub(super) fn fast_check(ctx: &Ctx<'_>, engine: &mut Engine, metric: Metric, value: f64) {
    let last_cpu = engine.last_cpu;
    let Some(state) = engine.states.get_mut(&metric) else {
        return;
    };
    let decision = state.peek(value, Instant::now());
    if let Decision::Fire { reason, .. } = decision {
        log_decision(ctx.cfg, state, value, &decision, "fast check");
        let unix_nanos = unix_nanos_now();
        let mut window = state.window();
        if window.len() >= state.rule.window as usize && !window.is_empty() {
            window.remove(0);
        }
        window.push(Sample { unix_nanos, value });
        let firing = Firing {
            metric,
            reason,
            current: value,
            unix_nanos,
            window,
            rule: state.rule.to_config(metric),
        };
        fire(ctx, last_cpu, firing);
    }
}

fn log_decision(
    cfg: &AgentConfig,
    state: &RuleState,
    current: f64,
    decision: &Decision,
    path: &str,
) {
    let loud = cfg.log_decisions || decision.fires();
    if !loud && !tracing::enabled!(target: "holmes::rules", tracing::Level::TRACE) {
        return;
    }
    let window: Vec<String> = state
        .window()
        .iter()
        .map(|s| format!("{:.2}", s.value))
        .collect();
    let line = format_args!(
        "rule {} [{}] window [{}] current {:.2} -> {} ({})",
        state.metric,
        state.rule,
        window.join(" "),
        current,
        decision,
        path
    );
    if loud {
        tracing::info!(target: "holmes::rules", "{line}");
    } else {
        tracing::trace!(target: "holmes::rules", "{line}");
    }
}

/// A rule that fired, with what the trigger event reports.
struct Firing {
    metric: Metric,
    reason: TriggerReason,
    current: f64,
    unix_nanos: u64,
    window: Vec<Sample>,
    rule: RuleConfig,
}

fn fire(ctx: &Ctx<'_>, last_cpu: Option<f64>, f: Firing) {
    let cpu_above_max = ctx.cpu_gate(last_cpu);
    let paused = ctx.paused();
    let event_id = event_id::new();
    let planned = if cpu_above_max.is_some() || paused.is_some() {
        Vec::new()
    } else {
        ctx.captures
            .claim(&event_id, &ctx.captures.kinds_for(f.metric))
    };
    let event = TriggerEvent {
        event_id,
        metric: Some(f.metric),
        reason: f.reason,
        current: f.current,
        window: f.window,
        rule: Some(f.rule),
        unix_nanos: f.unix_nanos,
        planned: planned.clone(),
        request_id: None,
    };
    tracing::info!(
        target: "holmes",
        event_id = %event.event_id,
        metric = %f.metric,
        reason = ?f.reason,
        current = f.current,
        planned = ?planned,
        gated = cpu_above_max.is_some(),
        paused = paused.is_some(),
        "trigger fired"
    );
    if let Some(cpu) = cpu_above_max {
        log_gated(ctx, &event.event_id, cpu);
    } else if let Some(pause) = paused {
        log_paused(&event.event_id, &pause);
    }
    let jobs = planned
        .iter()
        .map(|k| Job::of(*k, ctx.cfg.cpu_profile_duration))
        .collect();
    record_and_capture(ctx, &event, jobs, None);
}

pub(super) fn log_gated(ctx: &Ctx<'_>, event_id: &str, cpu: f64) {
    tracing::info!(
        target: "holmes",
        event_id,
        cpu_percent = cpu,
        cpu_max = ctx.cfg.cpu_max,
        "no capture: cpu is above cpu_max; the trigger event plans no profile"
    );
}

fn log_paused(event_id: &str, pause: &CapturePause) {
    tracing::info!(
        target: "holmes",
        event_id,
        until_unix_nanos = pause.until_unix_nanos,
        reason = %pause.reason,
        "no capture: the collector paused captures; the trigger event plans no profile"
    );
}

/// Writes a trigger event to the dump folder, queues it for the collector, and starts
/// its captures (`jobs`, whose exclusive kinds the caller claimed), calling `done` when
/// they are over.
pub(super) fn record_and_capture(
    ctx: &Ctx<'_>,
    event: &TriggerEvent,
    jobs: Vec<Job>,
    done: Option<OnDone>,
) {
    let cfg = ctx.cfg;
    if let Some(dump) = &cfg.dump {
        match dump.write_trigger(&cfg.service, &cfg.instance, event) {
            Ok(path) => {
                tracing::debug!(target: "holmes", path = %path.display(), "trigger written")
            }
            Err(err) => {
                tracing::warn!(target: "holmes", error = %err, "cannot write the trigger to the dump folder")
            }
        }
    }
    if cfg.collector.is_some() {
        ctx.shared
            .delivery
            .enqueue(holmes_proto::AgentBody::Trigger(event.clone()));
    }
    ctx.captures.run(
        cfg,
        &ctx.shared.delivery,
        ctx.shared.runtimes.handles(),
        &event.event_id,
        jobs,
        done,
    );
    // Counted last, so whoever sees the count also finds the dump and the queued event.
    // Baselines are counted when they are done, with their cost.
    if event.reason != TriggerReason::Baseline {
        ctx.shared.triggers.fetch_add(1, Ordering::Relaxed);
    }
}
