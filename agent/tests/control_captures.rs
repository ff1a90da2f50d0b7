//! Captures a collector asks for, against a real collector's side of holmes.v1 on
//! loopback: every request answered with a `CaptureOutcome` (what was captured under
//! which event, what was refused and why), rate-limited per kind, refused while the
//! collector has paused captures (whose triggers still arrive, planning nothing), and
//! profiles the collector skips neither captured nor sent.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use holmes_agent::{Metric, ProfileKind};
use holmes_proto::rule_spec;
use holmes_proto::{
    AgentBody, AgentMessage, CaptureOutcome, CapturePause, CapturePurpose, CaptureRequest,
    CollectorMessage, ConfigUpdate, ProfileChunk, RefusalReason, SkipProfiles, TimeWindow,
    TriggerEvent,
};

mod support;
use support::collector::TestCollector;
use support::quiet_agent;

fn request(id: &str, kinds: &[ProfileKind]) -> CaptureRequest {
    CaptureRequest {
        request_id: id.to_owned(),
        kinds: kinds.to_vec(),
        cpu_duration: None,
        purpose: CapturePurpose::Operator,
        window: None,
        incident_id: None,
    }
}

fn ask(c: &TestCollector, r: CaptureRequest) {
    assert_eq!(c.send(&CollectorMessage::CaptureRequest(r)), 1, "one agent");
}

fn outcome(c: &TestCollector, request_id: &str) -> CaptureOutcome {
    c.wait_for(&format!("the outcome of {request_id}"), |msgs| {
        msgs.iter().find_map(|(_, m)| match &m.body {
            AgentBody::CaptureOutcome(o) if o.request_id == request_id => Some(o.clone()),
            _ => None,
        })
    })
}

fn trigger_of(msgs: &[(usize, AgentMessage)], request_id: &str) -> Option<TriggerEvent> {
    msgs.iter().find_map(|(_, m)| match &m.body {
        AgentBody::Trigger(t) if t.request_id.as_deref() == Some(request_id) => Some(t.clone()),
        _ => None,
    })
}

fn chunks_of(c: &TestCollector, event_id: &str) -> Vec<ProfileChunk> {
    c.bodies(|b| match b {
        AgentBody::ProfileChunk(p) if p.event_id == event_id => Some(p.clone()),
        _ => None,
    })
}

fn refusals(o: &CaptureOutcome) -> Vec<(ProfileKind, RefusalReason)> {
    o.refused.iter().map(|r| (r.kind, r.reason)).collect()
}

fn connected(c: &TestCollector, stream: usize) {
    c.wait_for("a hello", |msgs| {
        msgs.iter()
            .any(|(n, m)| *n == stream && matches!(m.body, AgentBody::Hello(_)))
            .then_some(())
    });
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
fn requested_captures_are_answered_and_rate_limited_per_kind() {
    let dir = tempfile::tempdir().unwrap();
    let c = TestCollector::start();
    let agent = quiet_agent("capture-outcomes", dir.path())
        .collector(c.url())
        .send_interval(Duration::from_millis(100))
        .start()
        .unwrap();
    connected(&c, 0);

    ask(
        &c,
        request(
            "r1",
            &[ProfileKind::Threads, ProfileKind::Tasks, ProfileKind::Heap],
        ),
    );
    let o = outcome(&c, "r1");
    assert_eq!(o.captured, [ProfileKind::Threads], "{o:?}");
    let heap_refusal = if cfg!(feature = "jemalloc") {
        // jemalloc's profiler is compiled in but not on in this process: it ran, failed.
        RefusalReason::Failed
    } else {
        // No heap profiler installed in this test binary.
        RefusalReason::Unsupported
    };
    assert_eq!(
        refusals(&o),
        [
            (ProfileKind::Tasks, RefusalReason::Unsupported),
            (ProfileKind::Heap, heap_refusal),
        ],
        "{o:?}"
    );
    let event = o.event_id.clone().expect("captured under an event");
    let trigger = c.wait_for("r1's trigger event", |msgs| trigger_of(msgs, "r1"));
    assert_eq!(trigger.event_id, event);
    assert_eq!(trigger.planned, [ProfileKind::Threads]);
    assert!(chunks_of(&c, &event)
        .iter()
        .any(|p| p.kind == ProfileKind::Threads && p.error.is_none()));

    // Threads again, at once: too soon. No event is made for a request that captures
    // nothing.
    ask(&c, request("r2", &[ProfileKind::Threads]));
    let o = outcome(&c, "r2");
    assert_eq!(o.event_id, None);
    assert!(o.captured.is_empty());
    assert_eq!(
        refusals(&o),
        [(ProfileKind::Threads, RefusalReason::RateLimited)]
    );
    assert!(
        o.refused[0]
            .detail
            .starts_with("at most one requested threads capture per 30s; the last started"),
        "{}",
        o.refused[0].detail
    );
    assert!(trigger_of(&c.received(), "r2").is_none());

    // CPU has its own turn; a CPU window from the flight recorder counts apart from a
    // new CPU profile, so an incident's control is not refused for an operator's capture.
    let mut cpu = request("r3", &[ProfileKind::Cpu]);
    cpu.cpu_duration = Some(Duration::from_millis(200));
    ask(&c, cpu);
    let mut window = request("r4", &[ProfileKind::Cpu]);
    window.purpose = CapturePurpose::Control;
    let now = unix_now();
    window.window = Some(TimeWindow {
        start_unix_nanos: now - 2_000_000_000,
        end_unix_nanos: now,
    });
    ask(&c, window);
    assert_eq!(outcome(&c, "r3").captured, [ProfileKind::Cpu]);
    assert_eq!(outcome(&c, "r4").captured, [ProfileKind::Cpu]);

    // The host's own request is not the collector's: not rate-limited.
    let host_event = agent.capture_now(&[ProfileKind::Threads]).unwrap();
    c.wait_for("the host's thread dump", |_| {
        chunks_of(&c, &host_event)
            .iter()
            .any(|p| p.kind == ProfileKind::Threads && p.error.is_none())
            .then_some(())
    });
    agent.stop();
}

#[test]
fn paused_captures_still_send_triggers_and_refuse_requests_as_paused() {
    let dir = tempfile::tempdir().unwrap();
    let c = TestCollector::start();
    let agent = quiet_agent("capture-pause", dir.path())
        .collector(c.url())
        .send_interval(Duration::from_millis(100))
        .start()
        .unwrap();
    connected(&c, 0);
    let threads_rule = rule_spec::apply(
        &rule_spec::default_rule(Metric::Threads).unwrap(),
        "min=1,abs=1,window=2,cooldown=1h",
    )
    .unwrap();
    let config = |version, pause| {
        CollectorMessage::ConfigUpdate(ConfigUpdate {
            version,
            rules: vec![threads_rule.clone()],
            replace: true,
            pause,
        })
    };
    let until = unix_now() + 3_600_000_000_000;
    c.send(&config(
        1,
        Some(CapturePause {
            until_unix_nanos: until,
            reason: "deploy window".into(),
        }),
    ));
    // The rule fires: its trigger arrives, planning nothing.
    let fired = c.wait_for("a threads trigger", |msgs| {
        msgs.iter().find_map(|(_, m)| match &m.body {
            AgentBody::Trigger(t) if t.metric == Some(Metric::Threads) => Some(t.clone()),
            _ => None,
        })
    });
    assert!(fired.planned.is_empty(), "{fired:?}");

    ask(&c, request("paused", &[ProfileKind::Threads]));
    let o = outcome(&c, "paused");
    assert_eq!(o.event_id, None);
    assert_eq!(
        refusals(&o),
        [(ProfileKind::Threads, RefusalReason::Paused)]
    );
    assert!(o.refused[0].detail.contains("deploy window"), "{o:?}");
    assert!(
        chunks_of(&c, &fired.event_id).is_empty(),
        "no profile for the paused trigger"
    );

    // The host's own capture is not paused by the collector.
    let host_event = agent.capture_now(&[ProfileKind::Threads]).unwrap();
    c.wait_for("the host's thread dump", |_| {
        (!chunks_of(&c, &host_event).is_empty()).then_some(())
    });

    // The next version lifts the pause; the refused request did not use the turn.
    c.send(&config(2, None));
    c.wait_for("ConfigApplied 2", |msgs| {
        msgs.iter()
            .any(|(_, m)| matches!(&m.body, AgentBody::ConfigApplied(a) if a.version == 2))
            .then_some(())
    });
    ask(&c, request("resumed", &[ProfileKind::Threads]));
    assert_eq!(outcome(&c, "resumed").captured, [ProfileKind::Threads]);
    agent.stop();
}

#[test]
fn a_skip_cancels_captures_not_started_and_drops_profiles_not_queued() {
    let dir = tempfile::tempdir().unwrap();
    let c = TestCollector::start();
    let agent = quiet_agent("capture-skip", dir.path())
        .collector(c.url())
        .send_interval(Duration::from_millis(100))
        .start()
        .unwrap();
    connected(&c, 0);
    // CPU runs first, for 3 s; the thread dump waits behind it.
    let mut r = request("budget", &[ProfileKind::Cpu, ProfileKind::Threads]);
    r.cpu_duration = Some(Duration::from_secs(3));
    ask(&c, r);
    let trigger = c.wait_for("the trigger event", |msgs| trigger_of(msgs, "budget"));
    assert_eq!(trigger.planned, [ProfileKind::Cpu, ProfileKind::Threads]);
    c.send(&CollectorMessage::SkipProfiles(SkipProfiles {
        event_id: trigger.event_id.clone(),
        kinds: vec![],
    }));
    let o = outcome(&c, "budget");
    // The pre-trigger profile was made at once (sent or not, depending on the race
    // with the skip); the full-rate one ended after the skip, the thread dump never ran.
    assert_eq!(o.captured, [ProfileKind::Cpu], "{o:?}");
    assert_eq!(refusals(&o), [(ProfileKind::Threads, RefusalReason::Other)]);
    assert!(o.refused[0].detail.contains("skipped"), "{o:?}");
    let sent = chunks_of(&c, &trigger.event_id);
    assert!(
        sent.iter().all(|p| p.kind == ProfileKind::Cpu
            && p.labels.get("phase").map(String::as_str) == Some("pre-trigger")),
        "only the pre-trigger profile may have gone: {:?}",
        sent.iter()
            .map(|p| (&p.kind, &p.labels))
            .collect::<Vec<_>>()
    );
    let stats = agent.stop();
    assert!(stats.skipped_profiles >= 1, "{stats:?}");
    assert!(
        chunks_of(&c, &trigger.event_id).len() == sent.len(),
        "nothing more after stop"
    );
}

#[test]
fn profiles_the_collector_skips_are_not_sent_again_after_a_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let c = TestCollector::start();
    // Nothing is acknowledged: everything is resent on the next stream, and stays in
    // the spool meanwhile.
    c.set_acks(false);
    let spool = tempfile::tempdir().unwrap();
    let agent = quiet_agent("capture-skip-resend", dir.path())
        .collector(c.url())
        .send_interval(Duration::from_millis(100))
        .spool_dir(spool.path())
        .start()
        .unwrap();
    connected(&c, 0);
    ask(&c, request("r", &[ProfileKind::Threads]));
    let event = outcome(&c, "r").event_id.expect("captured");
    let first = c.wait_for("the thread dump", |msgs| {
        msgs.iter().find_map(|(n, m)| match &m.body {
            AgentBody::ProfileChunk(p) if p.event_id == event => {
                Some((*n, m.seq, p.profile_id.clone()))
            }
            _ => None,
        })
    });
    assert_eq!(first.0, 0);
    let spooled = |profile: &str| {
        support::files(spool.path(), "", ".hsp")
            .iter()
            .filter(|f| f.to_string_lossy().contains(&format!(".p.{profile}.")))
            .count()
    };
    assert!(
        spooled(&first.2) > 0,
        "the unacknowledged profile is in the spool"
    );
    c.send(&CollectorMessage::SkipProfiles(SkipProfiles {
        event_id: event.clone(),
        kinds: vec![ProfileKind::Threads],
    }));
    // Answered in order: once this is applied, so is the skip.
    c.send(&CollectorMessage::ConfigUpdate(ConfigUpdate {
        version: 1,
        rules: vec![],
        replace: false,
        pause: None,
    }));
    c.wait_for("ConfigApplied", |msgs| {
        msgs.iter()
            .any(|(_, m)| matches!(m.body, AgentBody::ConfigApplied(_)))
            .then_some(())
    });
    c.drop_streams();
    // The new stream resends what was not acknowledged, past the profile's number.
    c.wait_for("a resend past the profile", |msgs| {
        msgs.iter()
            .any(|(n, m)| *n >= 1 && m.seq > first.1)
            .then_some(())
    });
    let resent: Vec<u64> = c
        .received()
        .iter()
        .filter(|(n, m)| {
            *n >= 1 && matches!(&m.body, AgentBody::ProfileChunk(p) if p.event_id == event)
        })
        .map(|(_, m)| m.seq)
        .collect();
    assert!(
        resent.is_empty(),
        "the skipped profile went again: {resent:?}"
    );
    assert!(
        c.received().iter().any(
            |(n, m)| *n >= 1 && matches!(&m.body, AgentBody::Trigger(t) if t.event_id == event)
        ),
        "its trigger event was resent: not everything was dropped"
    );
    assert_eq!(agent.stats().skipped_profiles, 1);
    assert_eq!(spooled(&first.2), 0, "its spool files are gone");
    agent.stop();
}
