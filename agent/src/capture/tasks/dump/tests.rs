use super::*;
use crate::capture::profile::decode::decode;
use crate::capture::symbolize::local::LocalSymbols;
use crate::Failure;

#[inline(never)]
async fn parked_on_a_unit_test_channel(mut rx: tokio::sync::mpsc::Receiver<()>) {
    let _ = rx.recv().await;
}

#[test]
fn a_dump_has_one_sample_per_task_and_names_the_await_point() -> crate::TestResult {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()?;
    let mut senders = Vec::new();
    for _ in 0..20 {
        let (tx, rx) = tokio::sync::mpsc::channel::<()>(1);
        senders.push(tx);
        rt.spawn(parked_on_a_unit_test_channel(rx));
    }
    std::thread::sleep(Duration::from_millis(100));
    let dump = capture(&[rt.handle().clone()], Duration::from_secs(10))
        .map_err(|e| format!("the task dump: {e}"))?;
    assert!(dump.failures.is_empty());
    let p = decode(&dump.profile.encode_gzip(&mut LocalSymbols::default()))?;
    assert_eq!(p.sample_types, [("tasks".to_owned(), "count".to_owned())]);
    assert_eq!(p.total("tasks"), 20, "the dumping task is left out");
    let parked = p
        .samples
        .iter()
        .filter(|s| {
            s.stack
                .iter()
                .any(|f| f.contains("parked_on_a_unit_test_channel"))
        })
        .count();
    assert_eq!(parked, 20, "{:?}", p.samples.first());
    assert!(p.samples.iter().all(|s| s.label("task_id").is_some()));
    assert!(p.samples.iter().all(|s| s.label("runtime") == Some("0")));
    assert!(
        dump.text.contains("runtime 0: 20 tasks"),
        "identical stacks are grouped:\n{}",
        dump.text
    );
    assert!(dump.text.contains("parked_on_a_unit_test_channel"));
    drop(senders);
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

#[test]
fn a_runtime_whose_workers_are_all_blocked_times_out() -> crate::TestResult {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()?;
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    // Blocks both workers until dropped (also when an assertion fails, so the
    // runtime's drop does not wait for them forever).
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = std::sync::Arc::new(std::sync::Mutex::new(released));
    for _ in 0..2 {
        let started = started_tx.clone();
        let released = std::sync::Arc::clone(&released);
        rt.spawn(async move {
            // Should this fail, the test fails waiting for it below.
            started.send(())?;
            let _ = released.lock().map(|rx| rx.recv());
            Ok::<(), std::sync::mpsc::SendError<()>>(())
        });
    }
    for i in 0..2 {
        started_rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|e| format!("blocking worker {i} did not start: {e}"))?;
    }
    let t = Instant::now();
    let err = capture(&[rt.handle().clone()], Duration::from_millis(300)).failure()?;
    let waited = t.elapsed();
    assert_eq!(
        err.to_string(),
        "task dump of runtime 0 timed out after 300ms: its workers may all be blocked; \
         see the threads profile"
    );
    // It gives up at its deadline rather than waiting for the blocked workers (which
    // never yield until released, below); a loaded machine may add scheduling delay.
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(10),
        "gave up in {waited:?}"
    );
    drop(release);
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// A current-thread runtime driven by a thread of its own until `stop` is sent
/// or dropped.
fn driven_current_thread() -> crate::TestResult<(Handle, tokio::sync::oneshot::Sender<()>)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        rt.block_on(async {
            let _ = stopped.await;
        })
    });
    Ok((handle, stop))
}

#[test]
fn a_busy_multi_thread_runtime_is_not_dumped_but_a_current_thread_one_is() -> crate::TestResult {
    let busy = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()?;
    let (driven, _stop) = driven_current_thread()?;
    let mut senders = Vec::new();
    for _ in 0..100 {
        let (tx, rx) = tokio::sync::mpsc::channel::<()>(1);
        senders.push(tx);
        busy.spawn(parked_on_a_unit_test_channel(rx));
    }
    for _ in 0..300 {
        let (tx, rx) = tokio::sync::mpsc::channel::<()>(1);
        senders.push(tx);
        driven.spawn(parked_on_a_unit_test_channel(rx));
    }
    std::thread::sleep(Duration::from_millis(100));

    let t = Instant::now();
    let err = capture(&[busy.handle().clone()], Duration::from_secs(60)).failure()?;
    // Refused without dumping: well before the deadline, however loaded the machine.
    assert!(t.elapsed() < Duration::from_secs(30), "refused at once");
    assert!(
        matches!(err, TasksError::Unsafe { runtime: 0, tasks } if tasks >= 100),
        "{err:?}"
    );
    assert!(err.wants_threads());
    assert!(err.to_string().starts_with(
        "task dump of runtime 0 skipped: a tokio task dump can hang a multi-thread \
         runtime with more than 64 tasks for good, and it has 10"
    ));

    let dump = capture(
        &[busy.handle().clone(), driven.clone()],
        Duration::from_secs(10),
    )
    .map_err(|e| format!("the task dump of both runtimes: {e}"))?;
    assert!(matches!(
        dump.failures.as_slice(),
        [TasksError::Unsafe { runtime: 0, .. }]
    ));
    let p = decode(&dump.profile.encode_gzip(&mut LocalSymbols::default()))?;
    assert_eq!(p.total("tasks"), 300);
    assert!(p.samples.iter().all(|s| s.label("runtime") == Some("1")));
    assert!(p.comments.iter().any(|c| c.contains("runtime 0 skipped")));
    assert!(dump.text.contains("runtime 1: 300 tasks"), "{}", dump.text);

    // The refused runtime was left alone and still runs tasks.
    let (tx, rx) = std::sync::mpsc::channel();
    // Should this fail, the test fails waiting for it below.
    busy.spawn(async move { tx.send(()) });
    rx.recv_timeout(Duration::from_secs(5))
        .map_err(|e| format!("the refused runtime ran no task: {e}"))?;
    drop(senders);
    busy.shutdown_background();
    Ok(())
}

#[test]
fn no_runtimes_and_a_shut_down_runtime_are_errors() -> crate::TestResult {
    assert_eq!(
        capture(&[], Duration::from_secs(1)).failure()?,
        TasksError::NoRuntimes
    );
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let handle = rt.handle().clone();
    drop(rt);
    assert_eq!(
        capture(&[handle], Duration::from_secs(1)).failure()?,
        TasksError::ShutDown { runtime: 0 }
    );
    Ok(())
}

#[test]
fn hashes_are_stripped() {
    assert_eq!(strip_hash("a::b::h0123456789abcdef"), "a::b");
    assert_eq!(strip_hash("a::hb"), "a::hb");
}
