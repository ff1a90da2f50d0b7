//! An incident's healthy control: the collector asks a CPU profile of a wall-clock
//! interval some seconds in the past (the sick instances' pre-trigger window), and the
//! agent sends its flight recorder's samples of those seconds — no new sampling — while
//! the other kinds of the request are captured now. An interval older than the
//! recorder's history is refused saying so.
//!
//! A process of its own: the flight recorder's signals are process-wide.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use holmes_agent::ProfileKind;
use holmes_proto::{
    AgentBody, CaptureOutcome, CapturePurpose, CaptureRequest, CollectorMessage, ProfileChunk,
    RefusalReason, TimeWindow,
};

mod support;
use support::collector::TestCollector;
use support::{files, go_available, pprof, quiet_agent, thread_cpu_time};

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// The culprit of the past interval: spins without calls in its hot loop.
#[inline(never)]
fn control_window_culprit(rounds: u64) -> u64 {
    let mut x = rounds | 1;
    let mut i = 0u64;
    while i < rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        i += 1;
    }
    x
}

/// Burns `cpu` of this thread's CPU time in the culprit, however long that takes.
fn burn(cpu: Duration) {
    let from = thread_cpu_time();
    while thread_cpu_time() - from < cpu {
        std::hint::black_box(control_window_culprit(2_000_000));
    }
}

fn control(id: &str, kinds: &[ProfileKind], window: TimeWindow) -> CollectorMessage {
    CollectorMessage::CaptureRequest(CaptureRequest {
        request_id: id.to_owned(),
        kinds: kinds.to_vec(),
        cpu_duration: None,
        purpose: CapturePurpose::Control,
        window: Some(window),
        incident_id: Some("incident-1".to_owned()),
    })
}

fn outcome(c: &TestCollector, id: &str) -> CaptureOutcome {
    c.wait_for(&format!("the outcome of {id}"), |msgs| {
        msgs.iter().find_map(|(_, m)| match &m.body {
            AgentBody::CaptureOutcome(o) if o.request_id == id => Some(o.clone()),
            _ => None,
        })
    })
}

#[test]
fn a_control_gets_the_flight_recorders_samples_of_a_past_interval() {
    let dir = tempfile::tempdir().unwrap();
    let c = TestCollector::start();
    let agent = quiet_agent("control-window", dir.path())
        .collector(c.url())
        .send_interval(Duration::from_millis(100))
        // Two CPU windows are asked for within seconds.
        .capture_request_interval(Duration::ZERO)
        .start()
        .unwrap();
    c.wait_for("a hello", |msgs| (!msgs.is_empty()).then_some(()));

    // The interval: half a second of CPU in the culprit, on a thread of its own.
    let start = unix_now();
    std::thread::spawn(|| burn(Duration::from_millis(500)))
        .join()
        .unwrap();
    let end = unix_now();
    // Asked a few seconds later, as an incident's controls are.
    std::thread::sleep(Duration::from_secs(3));
    let window = TimeWindow {
        start_unix_nanos: start,
        end_unix_nanos: end,
    };
    let asked = unix_now();
    assert_eq!(
        c.send(&control(
            "ctl",
            &[ProfileKind::Cpu, ProfileKind::Threads],
            window
        )),
        1
    );
    let o = outcome(&c, "ctl");
    assert_eq!(
        o.captured,
        [ProfileKind::Cpu, ProfileKind::Threads],
        "{o:?}"
    );
    let event = o.event_id.expect("an event");
    let cpu: Vec<ProfileChunk> = c.bodies(|b| match b {
        AgentBody::ProfileChunk(p) if p.event_id == event && p.kind == ProfileKind::Cpu => {
            Some(p.clone())
        }
        _ => None,
    });
    let profiles: std::collections::BTreeSet<&str> =
        cpu.iter().map(|p| p.profile_id.as_str()).collect();
    assert_eq!(
        profiles.len(),
        1,
        "one CPU profile, no new capture: {cpu:?}"
    );
    let p = &cpu[0];
    assert_eq!(p.labels["phase"], "control");
    assert_eq!(p.labels["window_start_unix_nanos"], start.to_string());
    assert_eq!(p.labels["window_end_unix_nanos"], end.to_string());
    assert_eq!(p.started_unix_nanos, start);
    // Milliseconds on the wire.
    assert_eq!(p.duration, Duration::from_millis((end - start) / 1_000_000));
    assert!(
        p.started_unix_nanos < asked,
        "the profile is of the past, not of the request's moment"
    );

    // What the interval held: the culprit, in the dump folder's pprof copy.
    if go_available() {
        let file = files(dir.path(), &format!("cpu.{event}"), ".pb.gz");
        assert_eq!(file.len(), 1, "{file:?}");
        let top = pprof(&["-top", "-nodecount=15"], &file[0]);
        assert!(top.contains("control_window_culprit"), "{top}");
    }

    // Older than the recorder's history (a minute): refused, saying what it holds.
    let now = unix_now();
    let old = TimeWindow {
        start_unix_nanos: now - 3_600_000_000_000,
        end_unix_nanos: now - 3_590_000_000_000,
    };
    c.send(&control("too-old", &[ProfileKind::Cpu], old));
    let o = outcome(&c, "too-old");
    assert!(o.captured.is_empty(), "{o:?}");
    assert_eq!(o.refused.len(), 1, "{o:?}");
    assert_eq!(o.refused[0].reason, RefusalReason::Failed);
    assert!(
        o.refused[0]
            .detail
            .starts_with("the flight recorder holds 1m of history, from "),
        "{}",
        o.refused[0].detail
    );
    agent.stop();
}
