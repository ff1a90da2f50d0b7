//! Captures asked for by the collector (a `CaptureRequest`) or the host
//! (`HolmesHandle::capture_now`): a `requested` trigger event and its captures.
//!
//! Each kind asked for is captured or refused, in this order of reasons: captures are
//! paused by the collector; the agent cannot capture that kind; CPU is above `cpu_max`;
//! the collector asked for that kind too recently (one per
//! `HOLMES_CAPTURE_REQUEST_INTERVAL`; a CPU window from the flight recorder counts apart
//! from a new CPU profile); a capture of that kind is running. The host is trusted: its
//! requests are neither paused nor rate-limited, and always record their event (the id
//! `capture_now` returned). A collector's request that captures nothing records no event.
//! The collector gets a `CaptureOutcome` once the captures are over: what was captured
//! under which event, what was refused and why — including kinds that ran and failed.

use std::time::Instant;

use holmes_proto::{
    AgentBody, CaptureOutcome, CapturePurpose, CaptureRefusal, CaptureRequest, ProfileKind,
    RefusalReason, TriggerEvent, TriggerReason,
};

use super::engine::{log_gated, record_and_capture, Ctx, Engine};
use crate::capture::plan::{Job, JobResult, OnDone, Report};
use crate::capture::requests::{Origin, PendingCapture};
use crate::clock::unix_nanos_now;
use crate::config::{AgentConfig, MAX_REQUESTED_CPU_DURATION};

/// Captures what `pending` asks for, or refuses it, and answers the collector.
pub(super) fn fire_requested(ctx: &Ctx<'_>, engine: &mut Engine, pending: PendingCapture) {
    let PendingCapture {
        request,
        event_id,
        origin,
        ..
    } = pending;
    let from_collector = origin == Origin::Collector;
    let now = Instant::now();
    let paused = ctx.paused().filter(|_| from_collector);
    let cpu_above_max = ctx.cpu_gate(engine.last_cpu);
    let mut kinds = request.kinds.clone();
    let mut seen = Vec::new();
    kinds.retain(|k| {
        let new = !seen.contains(k);
        seen.push(*k);
        new
    });
    let mut refused: Vec<CaptureRefusal> = Vec::new();
    let mut wanted: Vec<Job> = Vec::new();
    for kind in kinds {
        let job = job_for(kind, &request, ctx.cfg);
        let refusal = if let Some(pause) = &paused {
            let until =
                std::time::UNIX_EPOCH + std::time::Duration::from_nanos(pause.until_unix_nanos);
            Some((
                RefusalReason::Paused,
                format!(
                    "captures are paused until {}: {}",
                    humantime::format_rfc3339_seconds(until),
                    pause.reason
                ),
            ))
        } else if let Some(why) = ctx.captures.unsupported(kind) {
            Some((RefusalReason::Unsupported, why))
        } else if kind == ProfileKind::Tasks && ctx.shared.runtimes.handles().is_empty() {
            Some((
                RefusalReason::Unsupported,
                "no tokio runtime is registered with the agent".to_owned(),
            ))
        } else if let Some(cpu) = cpu_above_max {
            Some((
                RefusalReason::CpuMax,
                format!("cpu {cpu:.1}% is above cpu_max {}%", ctx.cfg.cpu_max),
            ))
        } else if from_collector {
            engine
                .limit
                .refusal(job.limit_key(), now)
                .map(|why| (RefusalReason::RateLimited, why))
        } else {
            None
        };
        match refusal {
            Some((reason, detail)) => refused.push(CaptureRefusal {
                kind,
                reason,
                detail,
            }),
            None => wanted.push(job),
        }
    }
    let exclusive: Vec<ProfileKind> = wanted
        .iter()
        .filter(|j| j.exclusive())
        .map(|j| j.kind())
        .collect();
    let claimed = ctx.captures.claim(&event_id, &exclusive);
    let mut jobs = Vec::with_capacity(wanted.len());
    for job in wanted {
        if !job.exclusive() || claimed.contains(&job.kind()) {
            jobs.push(job);
        } else {
            refused.push(CaptureRefusal {
                kind: job.kind(),
                reason: RefusalReason::Busy,
                detail: format!("a {} capture is already running", job.kind().as_str()),
            });
        }
    }
    if from_collector {
        for job in &jobs {
            engine.limit.started(job.limit_key(), now);
        }
    }
    let planned: Vec<ProfileKind> = jobs.iter().map(|j| j.kind()).collect();
    for r in &refused {
        tracing::info!(
            target: "holmes",
            request_id = %request.request_id,
            kind = r.kind.as_str(),
            reason = r.reason.as_str(),
            detail = %r.detail,
            "requested capture refused"
        );
    }
    if from_collector && jobs.is_empty() {
        // Nothing to send profiles under: the answer says why, without an event.
        ctx.shared
            .delivery
            .reply(AgentBody::CaptureOutcome(CaptureOutcome {
                request_id: request.request_id,
                event_id: None,
                captured: Vec::new(),
                refused,
            }));
        return;
    }
    let event = TriggerEvent {
        event_id,
        metric: None,
        reason: TriggerReason::Requested,
        current: 0.0,
        window: Vec::new(),
        rule: None,
        unix_nanos: unix_nanos_now(),
        planned: planned.clone(),
        request_id: Some(request.request_id.clone()),
    };
    tracing::info!(
        target: "holmes",
        event_id = %event.event_id,
        request_id = %request.request_id,
        origin = ?origin,
        purpose = request.purpose.as_str(),
        incident_id = request.incident_id.as_deref().unwrap_or(""),
        kinds = ?request.kinds,
        planned = ?planned,
        gated = cpu_above_max.is_some(),
        "capture requested"
    );
    if let Some(cpu) = cpu_above_max {
        log_gated(ctx, &event.event_id, cpu);
    }
    let done: Option<OnDone> = from_collector.then(|| {
        let delivery = std::sync::Arc::clone(&ctx.shared.delivery);
        let (request_id, event_id) = (request.request_id.clone(), event.event_id.clone());
        Box::new(move |report: Report| {
            delivery.reply(AgentBody::CaptureOutcome(outcome(
                request_id, event_id, refused, report,
            )));
        }) as OnDone
    });
    record_and_capture(ctx, &event, jobs, done);
}

/// The job for `kind` in `request`: CPU from the flight recorder when the request names
/// an interval, else a new profile of the requested length (at most
/// [`MAX_REQUESTED_CPU_DURATION`]).
fn job_for(kind: ProfileKind, request: &CaptureRequest, cfg: &AgentConfig) -> Job {
    match (kind, request.window) {
        (ProfileKind::Cpu, Some(window)) => Job::CpuRecorded {
            window: Some(window),
            phase: if request.purpose == CapturePurpose::Control {
                "control"
            } else {
                "recorded"
            },
        },
        (kind, _) => {
            let asked = request.cpu_duration.unwrap_or(cfg.cpu_profile_duration);
            if asked > MAX_REQUESTED_CPU_DURATION {
                tracing::info!(target: "holmes", request_id = %request.request_id, asked = ?asked, max = ?MAX_REQUESTED_CPU_DURATION, "requested cpu profile cut to the longest allowed");
            }
            Job::of(kind, asked.min(MAX_REQUESTED_CPU_DURATION))
        }
    }
}

/// The answer to a request once its captures are over.
fn outcome(
    request_id: String,
    event_id: String,
    mut refused: Vec<CaptureRefusal>,
    report: Report,
) -> CaptureOutcome {
    let mut captured = Vec::new();
    for (kind, result) in report.results {
        match result {
            JobResult::Captured => captured.push(kind),
            JobResult::Failed(detail) => refused.push(CaptureRefusal {
                kind,
                reason: RefusalReason::Failed,
                detail,
            }),
            JobResult::Skipped => refused.push(CaptureRefusal {
                kind,
                reason: RefusalReason::Other,
                detail: "skipped: the collector asked not to send it".to_owned(),
            }),
        }
    }
    CaptureOutcome {
        request_id,
        event_id: Some(event_id),
        captured,
        refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outcome_lists_what_ran_and_what_failed_or_was_skipped() {
        let report = Report {
            results: vec![
                (ProfileKind::Cpu, JobResult::Captured),
                (
                    ProfileKind::Heap,
                    JobResult::Failed("no heap profiler".into()),
                ),
                (ProfileKind::Threads, JobResult::Skipped),
            ],
            ..Report::default()
        };
        let busy = CaptureRefusal {
            kind: ProfileKind::Tasks,
            reason: RefusalReason::Busy,
            detail: "a tasks capture is already running".into(),
        };
        let o = outcome("r1".into(), "e1".into(), vec![busy.clone()], report);
        assert_eq!(o.event_id.as_deref(), Some("e1"));
        assert_eq!(o.captured, [ProfileKind::Cpu]);
        let reasons: Vec<(ProfileKind, RefusalReason)> =
            o.refused.iter().map(|r| (r.kind, r.reason)).collect();
        assert_eq!(
            reasons,
            [
                (ProfileKind::Tasks, RefusalReason::Busy),
                (ProfileKind::Heap, RefusalReason::Failed),
                (ProfileKind::Threads, RefusalReason::Other),
            ]
        );
        assert_eq!(o.refused[1].detail, "no heap profiler");
    }
}
