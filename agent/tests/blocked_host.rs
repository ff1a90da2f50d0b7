//! The agent keeps sampling, and fires, while every worker of the host's tokio runtime
//! spins and never yields.
//!
//! CPU % is the whole process's CPU, so this test has a process of its own (no other
//! test's captures or agents in its CPU), and tells the agent it has one core: two
//! spinning workers are then well above the rule on any machine — 2 cores or 16, idle
//! or loaded — while an idle process stays far below it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use holmes_agent::Rule;

mod support;
use support::{eventually, quiet_agent, trigger_docs};

#[test]
fn keeps_sampling_and_fires_while_every_host_worker_is_blocked() {
    let dir = tempfile::tempdir().unwrap();
    let host = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let agent = quiet_agent("trigger-test", dir.path())
        .cpu_cores(1.0)
        .cpu_rule(
            Rule::new()
                .min(5.0)
                .abs(20.0)
                .window(3)
                .cooldown(Duration::from_secs(60)),
        )
        .tokio_runtime(host.handle().clone())
        .start()
        .unwrap();
    eventually(Duration::from_secs(30), "warm-up", || {
        agent.stats().samples >= 5
    });
    assert_eq!(agent.stats().triggers, 0, "an idle process does not fire");

    // Saturate every worker of the host runtime: they spin and never yield.
    let release = Arc::new(AtomicBool::new(false));
    let spinning = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..2 {
        let (release, spinning) = (Arc::clone(&release), Arc::clone(&spinning));
        host.spawn(async move {
            spinning.fetch_add(1, Ordering::SeqCst);
            while !release.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
    }
    eventually(Duration::from_secs(30), "both workers spinning", || {
        spinning.load(Ordering::SeqCst) == 2
    });
    let probe = Arc::new(AtomicBool::new(false));
    let probe_task = Arc::clone(&probe);
    host.spawn(async move { probe_task.store(true, Ordering::Relaxed) });
    let before = agent.stats().samples;
    eventually(Duration::from_secs(30), "a CPU trigger", || {
        agent.stats().triggers >= 1
    });
    eventually(Duration::from_secs(30), "five more samples", || {
        agent.stats().samples >= before + 5
    });
    assert!(
        !probe.load(Ordering::Relaxed),
        "the host runtime really is stuck"
    );
    release.store(true, Ordering::Relaxed);

    let docs = trigger_docs(dir.path());
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert!(docs[0].contains("\"metric\":\"cpu\""), "{}", docs[0]);
    assert!(docs[0].contains("\"reason\":\"abs\""), "{}", docs[0]);
    assert!(docs[0].contains("\"service\":\"trigger-test\""));
    agent.stop();
    host.shutdown_timeout(Duration::from_secs(1));
}
