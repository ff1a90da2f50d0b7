//! `cpu_max`: while the process's CPU is above it, no capture starts — neither for a
//! rule's trigger nor for a requested capture. The trigger event is still written, with
//! no profile planned; the collector's request is answered `cpu_max`; once CPU is back
//! under the gate, captures run again.
//!
//! CPU % is the whole process's CPU: a process of its own, no symbol prewarm, and one
//! core as the agent's capacity, so that two spinning threads are far above the gate on
//! any machine, idle or loaded, and an idle process far below it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use holmes_agent::{ProfileKind, Rule};
use holmes_proto::{AgentBody, CapturePurpose, CaptureRequest, CollectorMessage, RefusalReason};

mod support;
use support::collector::TestCollector;
use support::{eventually, files, quiet_agent, trigger_docs};

/// The trigger document of `event_id`.
fn doc(dir: &std::path::Path, event_id: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{event_id}.json"))).unwrap()
}

#[test]
fn no_capture_starts_above_cpu_max_for_triggers_and_requests() {
    let dir = tempfile::tempdir().unwrap();
    let collector = TestCollector::start();
    let agent = quiet_agent("cpu-gate-test", dir.path())
        .collector(collector.url())
        .cpu_cores(1.0)
        .cpu_max(10.0)
        .cpu_rule(
            Rule::new()
                .min(5.0)
                .abs(20.0)
                .window(3)
                .cooldown(Duration::from_secs(600)),
        )
        .start()
        .unwrap();
    eventually(Duration::from_secs(30), "warm-up", || {
        agent.stats().samples >= 4
    });
    assert_eq!(agent.stats().triggers, 0, "an idle process does not fire");

    let release = Arc::new(AtomicBool::new(false));
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let release = Arc::clone(&release);
            std::thread::spawn(move || {
                while !release.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    // The CPU rule fires on a sample far above the gate: a trigger without captures.
    eventually(Duration::from_secs(30), "a CPU trigger", || {
        agent.stats().triggers >= 1
    });
    let fired = trigger_docs(dir.path());
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert!(fired[0].contains("\"metric\":\"cpu\""), "{}", fired[0]);
    assert!(fired[0].contains("\"planned\":[]"), "{}", fired[0]);

    // Asked for while still spinning: refused the same way.
    let refused = agent.capture_now(&[ProfileKind::Threads]).unwrap();
    eventually(
        Duration::from_secs(30),
        "the requested capture's event",
        || agent.stats().triggers >= 2,
    );
    let refused_doc = doc(dir.path(), &refused);
    assert!(
        refused_doc.contains("\"reason\":\"requested\""),
        "{refused_doc}"
    );
    assert!(refused_doc.contains("\"planned\":[]"), "{refused_doc}");
    // The collector's request is refused too, and told why.
    collector.wait_for("the agent's stream", |msgs| {
        msgs.iter()
            .any(|(_, m)| matches!(m.body, AgentBody::Hello(_)))
            .then_some(())
    });
    let sent = collector.send(&CollectorMessage::CaptureRequest(CaptureRequest {
        request_id: "gated".into(),
        kinds: vec![ProfileKind::Threads],
        cpu_duration: None,
        purpose: CapturePurpose::Operator,
        window: None,
        incident_id: None,
    }));
    assert_eq!(sent, 1);
    let answer = collector.wait_for("the outcome", |msgs| {
        msgs.iter().find_map(|(_, m)| match &m.body {
            AgentBody::CaptureOutcome(o) if o.request_id == "gated" => Some(o.clone()),
            _ => None,
        })
    });
    assert_eq!(answer.event_id, None);
    assert_eq!(answer.refused.len(), 1, "{answer:?}");
    assert_eq!(answer.refused[0].reason, RefusalReason::CpuMax);
    assert!(
        answer.refused[0].detail.ends_with("is above cpu_max 10%"),
        "{answer:?}"
    );

    release.store(true, Ordering::Relaxed);
    for s in spinners {
        s.join().unwrap();
    }
    // Idle again: once a sample has seen it, the same request is captured.
    let samples = agent.stats().samples;
    eventually(
        Duration::from_secs(30),
        "samples of an idle process",
        || agent.stats().samples >= samples + 3,
    );
    let allowed = agent.capture_now(&[ProfileKind::Threads]).unwrap();
    eventually(Duration::from_secs(60), "a thread dump", || {
        !files(dir.path(), "threads.", ".pb.gz").is_empty()
    });
    let allowed_doc = doc(dir.path(), &allowed);
    assert!(
        allowed_doc.contains("\"planned\":[\"threads\"]"),
        "{allowed_doc}"
    );
    assert!(files(dir.path(), "threads.", ".pb.gz")[0]
        .to_string_lossy()
        .contains(&allowed));
    assert!(
        files(dir.path(), "cpu.", ".pb.gz").is_empty(),
        "the gated trigger captured no CPU profile"
    );
    assert!(files(dir.path(), &format!("threads.{refused}"), "").is_empty());
    agent.stop();
}
