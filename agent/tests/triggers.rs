//! Rules firing in a real process: after a rule change at run time, and on tokio tasks.
//! Without a collector, every trigger is written to the dump folder as
//! `<event-id>.json`, which is what these tests read. (Rules on CPU are tested in
//! processes of their own: tests/blocked_host.rs, tests/cpu_gate.rs.)

use std::time::Duration;

use holmes_agent::{Holmes, Metric, Rule};

mod support;
use support::{eventually, quiet_agent, trigger_docs};

#[test]
fn a_rule_changed_at_run_time_fires_without_a_second_warm_up() {
    let dir = tempfile::tempdir().unwrap();
    let agent = quiet_agent("trigger-test", dir.path())
        .thread_rule(Rule::new().min(1.0).abs(10_000.0).window(20))
        .start()
        .unwrap();
    eventually(Duration::from_secs(30), "warm-up", || {
        agent.stats().samples >= 21
    });
    assert_eq!(agent.stats().triggers, 0);
    let samples = agent.stats().samples;
    // Every process here has more than one thread: the changed rule fires on its next
    // sample, whatever other tests of this binary start or stop meanwhile.
    agent
        .set_rule(Metric::Threads, Rule::new().min(1.0).abs(1.0).window(20))
        .unwrap();
    eventually(Duration::from_secs(30), "the changed rule to fire", || {
        agent.stats().triggers >= 1
    });
    assert!(
        agent.stats().samples < samples + 20,
        "fired on the next samples, not after another window of 20: {:?}",
        agent.stats()
    );
    // Disabled, it stays silent even though the value is still above abs (once the
    // agent has taken the change, at its next sample).
    agent.disable_rule(Metric::Threads).unwrap();
    let after_disable = agent.stats().samples;
    eventually(Duration::from_secs(30), "the change to be taken", || {
        agent.stats().samples >= after_disable + 2
    });
    let fired = agent.stats().triggers;
    let samples = agent.stats().samples;
    eventually(Duration::from_secs(30), "more samples", || {
        agent.stats().samples >= samples + 5
    });
    assert_eq!(agent.stats().triggers, fired);
    assert!(!agent.rules()[&Metric::Threads].is_enabled());
    assert!(agent.set_rule(Metric::RssBytes, Rule::new()).is_err());
    agent.stop();
    let docs = trigger_docs(dir.path());
    assert!(docs[0].contains("\"metric\":\"threads\""), "{}", docs[0]);
}

#[test]
fn tokio_tasks_of_registered_runtimes_are_counted_and_fire() {
    let dir = tempfile::tempdir().unwrap();
    let host = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let agent = quiet_agent("trigger-test", dir.path())
        .task_rule(Rule::new().min(100.0).abs(400.0).window(3))
        .start()
        .unwrap();
    agent.register_runtime(host.handle().clone());
    eventually(Duration::from_secs(30), "warm-up", || {
        agent.stats().samples >= 4
    });
    assert_eq!(agent.stats().triggers, 0);
    // A leak: 500 tasks waiting forever on channels nobody writes to.
    let mut keep = Vec::new();
    for _ in 0..500 {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        keep.push(tx);
        host.spawn(async move {
            let _ = rx.await;
        });
    }
    eventually(Duration::from_secs(30), "a tasks trigger", || {
        agent.stats().triggers >= 1
    });
    let docs = trigger_docs(dir.path());
    assert!(docs[0].contains("\"metric\":\"tasks\""), "{}", docs[0]);
    assert!(docs[0].contains("\"current\":500"), "{}", docs[0]);
    agent.stop();
    drop(keep);
}

#[test]
fn a_disabled_agent_does_nothing() {
    let agent = Holmes::builder()
        .service("off")
        .enabled(false)
        .start()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(agent.stop().samples, 0);
}
