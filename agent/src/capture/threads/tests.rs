use super::slots::UNMATCHED;
use super::*;
use std::hint::black_box;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicUsize;
use std::sync::Mutex;
use std::sync::{mpsc, Arc, MutexGuard};
use std::thread;

/// What a helper thread returns: a failed step as a message (sent back across `join`).
type ThreadResult = Result<(), String>;

/// Captures share the process: tests that capture run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn symbolize(addr: usize, leaf: bool) -> Vec<String> {
    let lookup = crate::capture::symbolize::lookup_address(addr, leaf);
    crate::capture::symbolize::local::function_names(lookup)
}

fn symbolized(stack: &ThreadStack) -> Vec<String> {
    stack
        .frames
        .iter()
        .enumerate()
        .flat_map(|(i, &addr)| symbolize(addr, i == 0))
        .collect()
}

fn find(stacks: &[ThreadStack], tid: i32) -> crate::TestResult<&ThreadStack> {
    stacks
        .iter()
        .find(|t| t.tid == tid)
        .ok_or_else(|| format!("tid {tid} not in the capture").into())
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, capture_signal());
        set
    }
}

/// The blocked thread's tid, what tells it to go, and its handle.
type Blocked = (i32, mpsc::Sender<()>, thread::JoinHandle<ThreadResult>);

/// A thread that blocks the capture signal until told to go, then unblocks it (so a
/// queued signal is delivered late) and exits.
fn spawn_blocking_signal() -> crate::TestResult<Blocked> {
    let (tid_tx, tid_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let handle = thread::Builder::new()
        .name("sig-blocked".into())
        .spawn(move || {
            let set = signal_set();
            // SAFETY: changing this thread's own mask.
            let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
            assert_eq!(rc, 0);
            tid_tx
                .send(gettid())
                .map_err(|e| format!("send the blocked thread's tid: {e}"))?;
            let _ = go_rx.recv();
            // SAFETY: as above.
            let rc =
                unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
            assert_eq!(rc, 0);
            Ok(())
        })
        .map_err(|e| format!("spawn the blocked thread: {e}"))?;
    let tid = tid_rx
        .recv()
        .map_err(|e| format!("the blocked thread's tid: {e}"))?;
    Ok((tid, go_tx, handle))
}

#[inline(never)]
fn blocked_in_culprit_lock(lock: &std::sync::Mutex<()>, entered: &AtomicUsize) {
    entered.fetch_add(1, Ordering::SeqCst);
    let guard = lock.lock();
    black_box(&guard);
}

#[inline(never)]
fn spin_in_culprit(started: &AtomicBool, stop: &AtomicBool) {
    started.store(true, Ordering::SeqCst);
    while !black_box(stop).load(Ordering::Relaxed) {
        // A loop without calls even in debug builds, so that nearly every sample
        // lands in this function and not in a helper it calls.
        let mut i = 0u32;
        while i < 1_000_000 {
            // SAFETY: a nop.
            unsafe { std::arch::asm!("nop", options(nomem, nostack, preserves_flags)) };
            i += 1;
        }
    }
}

#[test]
fn threads_piled_up_on_a_lock_are_captured_inside_the_culprit() -> crate::TestResult {
    let _serial = serial();
    let lock = Arc::new(std::sync::Mutex::new(()));
    let held = lock.lock().map_err(|_| "the culprits' lock is poisoned")?;
    let entered = Arc::new(AtomicUsize::new(0));
    let (tid_tx, tid_rx) = mpsc::channel();
    let mut handles = Vec::new();
    for i in 0..3 {
        let (lock, entered, tid_tx) = (lock.clone(), entered.clone(), tid_tx.clone());
        let handle = thread::Builder::new()
            .name(format!("culprit-{i}"))
            .spawn(move || -> ThreadResult {
                tid_tx
                    .send((i, gettid()))
                    .map_err(|e| format!("send culprit-{i}'s tid: {e}"))?;
                blocked_in_culprit_lock(&lock, &entered);
                Ok(())
            })
            .map_err(|e| format!("spawn culprit-{i}: {e}"))?;
        handles.push(handle);
    }
    let mut tids: Vec<(i32, i32)> = Vec::new();
    for _ in 0..3 {
        tids.push(tid_rx.recv().map_err(|e| format!("a culprit's tid: {e}"))?);
    }
    wait_for("the culprits", || entered.load(Ordering::SeqCst) == 3);
    thread::sleep(Duration::from_millis(100)); // let them reach the futex wait

    let stacks = capture_all(Duration::from_secs(2));
    drop(held);
    for h in handles {
        h.join().map_err(|_| "a culprit thread panicked")??;
    }
    let stacks = stacks.map_err(|e| format!("capture_all: {e}"))?;
    println!("{}", render_text(&stacks, symbolize));
    for (i, tid) in tids {
        let stack = find(&stacks, tid)?;
        assert_eq!(stack.name, format!("culprit-{i}"));
        assert_eq!(stack.state, ThreadState::Captured, "{stack:?}");
        let functions = symbolized(stack);
        assert!(
            functions
                .iter()
                .any(|f| f.contains("blocked_in_culprit_lock")),
            "culprit-{i}: {functions:#?}"
        );
    }
    let culprits = stacks
        .iter()
        .filter(|t| t.name.starts_with("culprit-"))
        .count();
    assert_eq!(culprits, 3);
    Ok(())
}

#[test]
fn a_spinning_thread_is_caught_in_its_leaf_function() -> crate::TestResult {
    let _serial = serial();
    let started = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (tid_tx, tid_rx) = mpsc::channel();
    let handle = {
        let (started, stop) = (started.clone(), stop.clone());
        thread::Builder::new()
            .name("spinner".into())
            .spawn(move || -> ThreadResult {
                tid_tx
                    .send(gettid())
                    .map_err(|e| format!("send the spinner's tid: {e}"))?;
                spin_in_culprit(&started, &stop);
                Ok(())
            })
            .map_err(|e| format!("spawn the spinner: {e}"))?
    };
    let tid = tid_rx
        .recv()
        .map_err(|e| format!("the spinner's tid: {e}"))?;
    wait_for("the spinner", || started.load(Ordering::SeqCst));

    let stacks = capture_all(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    handle.join().map_err(|_| "the spinner panicked")??;
    let stacks = stacks.map_err(|e| format!("capture_all: {e}"))?;
    let stack = find(&stacks, tid)?;
    assert_eq!(stack.state, ThreadState::Captured, "{stack:?}");
    let leaf = symbolize(stack.frames[0], true);
    assert!(
        leaf.iter().any(|f| f.contains("spin_in_culprit")),
        "leaf {leaf:?}; stack {:#?}",
        symbolized(stack)
    );
    Ok(())
}

#[test]
fn a_thread_blocking_the_signal_times_out_within_the_deadline() -> crate::TestResult {
    let _serial = serial();
    let (tid, go, handle) = spawn_blocking_signal()?;
    let deadline = Duration::from_millis(300);
    let start = Instant::now();
    let stacks = capture_all(deadline);
    let elapsed = start.elapsed();
    // Unblocking delivers the queued signal late: its handler must find nothing.
    let unmatched = UNMATCHED.load(Ordering::SeqCst);
    go.send(())
        .map_err(|e| format!("release the blocked thread: {e}"))?;
    handle.join().map_err(|_| "the blocked thread panicked")??;
    let late = UNMATCHED.load(Ordering::SeqCst) - unmatched;

    let stacks = stacks.map_err(|e| format!("capture_all: {e}"))?;
    let stack = find(&stacks, tid)?;
    assert_eq!(stack.state, ThreadState::TimedOut);
    assert!(stack.frames.is_empty());
    // It gives up at the deadline: the thread never answers before it is released,
    // below. The upper bound only says "not much later" (a loaded machine may delay the
    // capturer's wake-up).
    assert!(elapsed >= deadline, "{elapsed:?}");
    assert!(elapsed < deadline + Duration::from_secs(5), "{elapsed:?}");
    assert!(late >= 1, "the late signal was not delivered");
    // No slot is left armed or mid-write.
    assert!(SLOTS
        .iter()
        .all(|s| matches!(state_of(s.tag.load(Ordering::SeqCst)), FREE | DONE)));
    Ok(())
}

#[test]
fn a_second_concurrent_capture_is_refused_as_busy() -> crate::TestResult {
    let _serial = serial();
    // Keeps the first capture waiting for its whole deadline.
    let (_tid, go, blocked) = spawn_blocking_signal()?;
    let first = thread::spawn(|| capture_all(Duration::from_secs(3)));
    wait_for("the first capture", || BUSY.load(Ordering::SeqCst));
    let second = capture_all(Duration::from_millis(500));
    let first = first
        .join()
        .map_err(|_| "the thread of the first capture panicked")?;
    go.send(())
        .map_err(|e| format!("release the blocked thread: {e}"))?;
    blocked
        .join()
        .map_err(|_| "the blocked thread panicked")??;
    assert!(matches!(second, Err(ThreadsError::Busy)), "{second:?}");
    assert!(first.is_ok(), "{first:?}");
    // Once it is over, captures work again.
    assert!(capture_all(Duration::from_millis(500)).is_ok());
    Ok(())
}

#[test]
fn the_caller_is_walked_directly() -> crate::TestResult {
    let _serial = serial();
    let stacks = capture_all(Duration::from_secs(2)).map_err(|e| format!("capture_all: {e}"))?;
    let me = find(&stacks, gettid())?;
    assert_eq!(me.state, ThreadState::Caller);
    assert_eq!(
        stacks
            .iter()
            .filter(|t| t.state == ThreadState::Caller)
            .count(),
        1
    );
    let functions = symbolized(me);
    for expected in ["capture_all", "the_caller_is_walked_directly"] {
        assert!(
            functions.iter().any(|f| f.contains(expected)),
            "{expected}: {functions:#?}"
        );
    }
    // The main thread (tid == pid) is listed too.
    find(&stacks, std::process::id() as i32)?;
    Ok(())
}

#[test]
fn threads_coming_and_going_during_captures_do_no_harm() -> crate::TestResult {
    let _serial = serial();
    let spawner = thread::spawn(|| -> ThreadResult {
        let mut alive = std::collections::VecDeque::new();
        for i in 0..200u64 {
            alive.push_back(thread::spawn(move || {
                if i % 3 != 0 {
                    thread::sleep(Duration::from_micros(300 * (i % 7)));
                }
            }));
            if alive.len() > 16 {
                alive
                    .pop_front()
                    .ok_or("no thread to join")?
                    .join()
                    .map_err(|_| "a short-lived thread panicked".to_owned())?;
            }
            thread::sleep(Duration::from_micros(200));
        }
        for h in alive {
            h.join()
                .map_err(|_| "a short-lived thread panicked".to_owned())?;
        }
        Ok(())
    });
    let deadline = Duration::from_secs(1);
    let mut captures = 0;
    while !spawner.is_finished() || captures < 5 {
        let start = Instant::now();
        let stacks = capture_all(deadline).map_err(|e| format!("capture {captures}: {e}"))?;
        // Threads that exit meanwhile are noticed; nothing waits past the deadline.
        assert!(start.elapsed() < deadline + Duration::from_secs(5));
        assert!(stacks.iter().any(|t| t.state == ThreadState::Caller));
        captures += 1;
    }
    spawner.join().map_err(|_| "the spawner panicked")??;
    assert!(captures >= 5);
    Ok(())
}

#[test]
fn twenty_idle_threads_are_all_captured_quickly() -> crate::TestResult {
    let _serial = serial();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Arc::new(std::sync::Mutex::new(go_rx));
    let (tid_tx, tid_rx) = mpsc::channel();
    let mut handles = Vec::new();
    for i in 0..20 {
        let (go_rx, tid_tx) = (go_rx.clone(), tid_tx.clone());
        let handle = thread::Builder::new()
            .name(format!("idle-{i}"))
            .spawn(move || -> ThreadResult {
                tid_tx
                    .send(gettid())
                    .map_err(|e| format!("send idle-{i}'s tid: {e}"))?;
                // One waits on the channel, the others on its lock.
                let _ = go_rx
                    .lock()
                    .map_err(|_| format!("idle-{i}: the channel's lock is poisoned"))?
                    .recv();
                Ok(())
            })
            .map_err(|e| format!("spawn idle-{i}: {e}"))?;
        handles.push(handle);
    }
    let mut tids: Vec<i32> = Vec::new();
    for _ in 0..20 {
        tids.push(
            tid_rx
                .recv()
                .map_err(|e| format!("an idle thread's tid: {e}"))?,
        );
    }
    let mut times = Vec::new();
    let mut last = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        last = capture_all(Duration::from_secs(2)).map_err(|e| format!("capture_all: {e}"))?;
        times.push(start.elapsed());
    }
    drop(go_tx);
    for h in handles {
        h.join().map_err(|_| "an idle thread panicked")??;
    }
    times.sort();
    println!(
        "{} threads: min {:?}, median {:?}, max {:?}",
        last.len(),
        times[0],
        times[times.len() / 2],
        times[times.len() - 1]
    );
    for tid in tids {
        assert_eq!(find(&last, tid)?.state, ThreadState::Captured);
    }
    Ok(())
}

#[test]
fn render_text_prints_one_block_per_thread() {
    let stacks = [
        ThreadStack {
            tid: 7,
            name: "worker".into(),
            frames: vec![0x10, 0x20],
            state: ThreadState::Captured,
        },
        ThreadStack {
            tid: 8,
            name: String::new(),
            frames: Vec::new(),
            state: ThreadState::Skipped("too many threads"),
        },
    ];
    let text = render_text(&stacks, |addr, leaf| match (addr, leaf) {
        (0x10, true) => vec!["inlined".into(), "leaf_fn".into()],
        _ => Vec::new(),
    });
    assert_eq!(
        text,
        "thread worker (tid 7) [captured]\n  #0 inlined\n  #1 leaf_fn\n  #2 0x20\n\n\
         thread ? (tid 8) [skipped: too many threads]\n"
    );
}
