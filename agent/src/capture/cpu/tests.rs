use super::*;
use crate::clock::thread_cpu_time;
use std::time::Instant;

/// The culprit: a leaf that spins without calling anything in its hot loop (plain
/// operators only, so even an unoptimized build makes no calls here).
#[inline(never)]
fn spin_leaf_culprit(rounds: u64) -> u64 {
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

/// Spins until this thread has had `cpu` of CPU time, however long a busy machine
/// takes to give it that.
#[inline(never)]
fn cpu_test_spin_harness(cpu: Duration) {
    let from = thread_cpu_time();
    while thread_cpu_time() - from < cpu {
        std::hint::black_box(spin_leaf_culprit(2_000_000));
    }
}

/// As small as a function with a frame gets: most of its time goes to setting its frame
/// up and tearing it down, where a frame-pointer walk alone skips its caller.
#[inline(never)]
fn cpu_test_tiny_callee(x: u64) -> u64 {
    x.wrapping_add(1)
}

/// Calls the tiny callee in a loop until this thread has had `cpu` of CPU time.
#[inline(never)]
fn cpu_test_caller_of_tiny(cpu: Duration) {
    let from = thread_cpu_time();
    let mut x = 0u64;
    while thread_cpu_time() - from < cpu {
        for _ in 0..200_000 {
            x = cpu_test_tiny_callee(std::hint::black_box(x));
        }
    }
    std::hint::black_box(x);
}

#[inline(never)]
fn cpu_test_tiny_harness(cpu: Duration) {
    cpu_test_caller_of_tiny(cpu);
    std::hint::black_box(());
}

/// The sampler is the process's: one test at a time starts and stops it.
static SAMPLER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Every stack sampled at the capture rate while `spin` runs on a thread of its own
/// (until it is done, however long a busy machine takes to run it).
fn samples_of(spin: fn()) -> crate::TestResult<Vec<Vec<usize>>> {
    let _one = SAMPLER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    start(CAPTURE_HZ).map_err(|e| format!("start the sampler: {e}"))?;
    let mut stacks: Vec<Vec<usize>> = Vec::new();
    let spinner = std::thread::spawn(spin);
    let give_up = Instant::now() + Duration::from_secs(120);
    while !spinner.is_finished() {
        assert!(Instant::now() < give_up, "the spinner got 1.5 s of CPU");
        drain(|stack, _, _| stacks.push(stack.to_vec()));
        std::thread::sleep(Duration::from_millis(50));
    }
    spinner.join().map_err(|_| "the spinner panicked")?;
    set_rate(0).map_err(|e| format!("stop the sampler: {e}"))?;
    drain(|stack, _, _| stacks.push(stack.to_vec()));
    Ok(stacks)
}

/// The functions at a stack entry, inlined ones included, joined.
fn name_of(addr: usize, leaf: bool) -> String {
    let lookup = crate::capture::symbolize::lookup_address(addr, leaf);
    crate::capture::symbolize::local::function_names(lookup).join(" <- ")
}

#[test]
fn a_spinning_leaf_function_carries_its_time() -> crate::TestResult {
    let stacks = samples_of(|| cpu_test_spin_harness(Duration::from_millis(1500)))?;
    let ours: Vec<&Vec<usize>> = stacks
        .iter()
        .filter(|s| {
            s.iter()
                .enumerate()
                .any(|(i, a)| name_of(*a, i == 0).contains("cpu_test_spin_harness"))
        })
        .collect();
    // 1.5 s of the spinner's CPU at 99 Hz is ~150 samples; the signal ring may
    // overflow while this thread waits for the CPU, so ask for a fraction of that.
    assert!(
        ours.len() >= 20,
        "only {} of {} samples in the harness",
        ours.len(),
        stacks.len()
    );
    let in_leaf = ours
        .iter()
        .filter(|s| name_of(s[0], true).contains("spin_leaf_culprit"))
        .count();
    assert!(
        in_leaf * 10 >= ours.len() * 9,
        "the leaf carries {in_leaf} of {} samples",
        ours.len()
    );
    Ok(())
}

#[test]
fn a_loop_calling_a_small_function_is_on_its_samples() -> crate::TestResult {
    let stacks = samples_of(|| cpu_test_tiny_harness(Duration::from_millis(1500)))?;
    let names: Vec<Vec<String>> = stacks
        .iter()
        .map(|s| {
            s.iter()
                .enumerate()
                .map(|(i, a)| name_of(*a, i == 0))
                .collect()
        })
        .filter(|names: &Vec<String>| names.iter().any(|n| n.contains("cpu_test_tiny_harness")))
        .collect();
    assert!(
        names.len() >= 20,
        "only {} of {} samples in the harness",
        names.len(),
        stacks.len()
    );
    // Every sample under the harness is in the loop or in what it calls: the loop is on
    // each (but for samples in the clock read, whose callees may lack frame pointers).
    let with_loop = names
        .iter()
        .filter(|n| n.iter().any(|f| f.contains("cpu_test_caller_of_tiny")))
        .count();
    let in_callee = names
        .iter()
        .filter(|n| n[0].contains("cpu_test_tiny_callee"))
        .count();
    assert!(
        with_loop * 100 >= names.len() * 97,
        "the loop is on {with_loop} of {} samples ({in_callee} in its callee): {:?}",
        names.len(),
        names
            .iter()
            .find(|n| !n.iter().any(|f| f.contains("cpu_test_caller_of_tiny")))
    );
    Ok(())
}

#[test]
fn the_recorder_keeps_only_its_window_and_tallies_captures() {
    let mut r = FlightRecorder::new(Duration::from_secs(3), Duration::ZERO);
    let s = 1_000_000_000u64;
    r.add(&[1, 2], 10, 100 * s);
    r.add(&[1, 2], 10, 100 * s + 5);
    r.add(&[3], 10, 101 * s);
    assert_eq!(
        r.window(0).get(&vec![1, 2]),
        Some(&Tally {
            samples: 2,
            nanos: 20
        })
    );
    r.begin_capture(102 * s);
    r.add(&[4], 7, 102 * s);
    r.add(&[4], 7, 103 * s);
    // 103 s: the 100 s bucket is now older than 3 s and gone.
    assert_eq!(r.window(0).get(&vec![1, 2]), None);
    assert_eq!(r.window(101 * s).len(), 2);
    let cap = r.end_capture();
    assert_eq!(
        cap.get(&vec![4]),
        Some(&Tally {
            samples: 2,
            nanos: 14
        })
    );
    assert!(r.end_capture().is_empty());
}

#[test]
fn a_longer_history_serves_older_intervals() {
    let s = 1_000_000_000u64;
    let mut r = FlightRecorder::new(Duration::from_secs(10), Duration::from_secs(60));
    assert_eq!(r.history(), Duration::from_secs(60));
    for second in 100..200 {
        r.add(&[second as usize], 10, second * s + 5);
    }
    // 60 s kept: 140..=199.
    assert!(r.range(0, 140 * s).is_empty());
    assert_eq!(r.range(0, u64::MAX).len(), 60);
    // An interval of the past, to the second: 150.5 s to 152.2 s touches 150..=152.
    let mut got: Vec<usize> = r
        .range(150 * s + s / 2, 152 * s + s / 5)
        .into_keys()
        .map(|k| k[0])
        .collect();
    got.sort();
    assert_eq!(got, [150, 151, 152]);
    assert_eq!(r.window(195 * s).len(), 5);
}

#[test]
fn it_holds_nothing_from_before_it_started() {
    let r = FlightRecorder::new(Duration::from_secs(10), Duration::from_secs(60));
    let now = monotonic_ns();
    assert!(r.holds_since(now) <= now);
    assert!(
        now - r.holds_since(now) < 5_000_000_000,
        "a young recorder holds only its own seconds"
    );
    let later = now + 3_600_000_000_000;
    assert_eq!(r.holds_since(later), later - 60_000_000_000);
}

#[test]
fn a_busy_history_gives_way_but_the_pre_trigger_window_does_not() {
    let s = 1_000_000_000u64;
    let mut r = FlightRecorder::new(Duration::from_secs(10), Duration::from_secs(60));
    let per_second = 1_000;
    for second in 0..60u64 {
        for i in 0..per_second {
            r.add(&[second as usize, i], 1, second * s);
        }
    }
    // One more second: the history beyond the last 10 s holds at most the cap.
    r.add(&[0], 1, 60 * s);
    let older = r.range(0, 50 * s).len();
    assert!(older <= MAX_HISTORY_STACKS, "{older}");
    assert!(older >= MAX_HISTORY_STACKS - per_second, "{older}");
    assert_eq!(r.range(50 * s, 60 * s).len(), 10 * per_second);
}

#[test]
fn too_many_distinct_stacks_are_counted_not_kept() {
    let mut r = FlightRecorder::new(Duration::from_secs(10), Duration::ZERO);
    for i in 0..(MAX_STACKS_PER_BUCKET + 10) {
        r.add(&[i], 1, 5);
    }
    assert_eq!(r.window(0).len(), MAX_STACKS_PER_BUCKET);
    assert_eq!(r.overflow(), 10);
}
