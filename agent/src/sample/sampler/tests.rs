use super::*;
use crate::clock::thread_cpu_time;

#[test]
fn rates_need_two_readings() -> crate::TestResult {
    let mut last = None;
    let t0 = Instant::now();
    assert_eq!(rate(&mut last, t0, Duration::from_millis(100)), None);
    let r = rate(
        &mut last,
        t0 + Duration::from_secs(2),
        Duration::from_millis(1100),
    )
    .ok_or("no rate from the second reading")?;
    assert!((r - 50.0).abs() < 1e-9, "{r}");
    Ok(())
}

/// CPU time this process has used, from the kernel's own accounting.
fn process_cpu() -> Duration {
    // SAFETY: an all-zero rusage is valid; getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) }, 0);
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[test]
fn samples_this_process() -> crate::TestResult {
    let mut sampler = Sampler::new(None);
    // What the process used and how much time passed, measured just outside and
    // just inside the sampler's own interval: the sampled CPU % must lie between
    // the bounds they give, whatever else the machine (or this test binary) runs.
    let (cpu_outer0, wall_outer0) = (process_cpu(), Instant::now());
    let first = sampler.sample();
    let (cpu_inner0, wall_inner0) = (process_cpu(), Instant::now());
    // Spin until this thread has had 200 ms of CPU, however long that takes.
    let spin_from = thread_cpu_time();
    let mut x = 0u64;
    while thread_cpu_time() - spin_from < Duration::from_millis(200) {
        x = std::hint::black_box(x.wrapping_add(1));
    }
    let (cpu_inner1, wall_inner1) = (process_cpu(), Instant::now());
    let second = sampler.sample();
    let (cpu_outer1, wall_outer1) = (process_cpu(), Instant::now());
    let get = |r: &Reading, m| r.values.iter().find(|(k, _)| *k == m).map(|(_, v)| *v);
    assert_eq!(
        get(&first, Metric::CpuPercent),
        None,
        "no CPU % without a previous round"
    );
    let cpu = get(&second, Metric::CpuPercent).ok_or("no CPU % in the second round")?;
    let percent = |used: Duration, wall: Duration| {
        used.as_secs_f64() / wall.as_secs_f64() * 100.0 / sampler.cores
    };
    // The two clocks may differ by a scheduler tick per running thread.
    let tick = Duration::from_millis(40);
    let low = percent(
        (cpu_inner1 - cpu_inner0).saturating_sub(tick),
        wall_outer1 - wall_outer0,
    );
    let high = percent(cpu_outer1 - cpu_outer0 + tick, wall_inner1 - wall_inner0);
    assert!(low > 0.0, "the spin used CPU");
    assert!(
        (low..=high).contains(&cpu),
        "sampled cpu {cpu:.2}% is outside [{low:.2}%, {high:.2}%]"
    );
    assert!(get(&second, Metric::RssBytes).ok_or("no RSS in the second round")? > 1_000_000.0);
    let mem = get(&second, Metric::MemoryPercent).ok_or("no memory % in the second round")?;
    assert!(mem > 0.0 && mem < 100.0, "{mem}");
    assert!(get(&second, Metric::Threads).ok_or("no thread count in the second round")? >= 1.0);
    assert!(get(&second, Metric::OpenFds).ok_or("no open fd count in the second round")? >= 3.0);
    assert!(second.unix_nanos > first.unix_nanos);
    assert!(
        sampler
            .memory_percent_now()
            .ok_or("no memory % from memory_percent_now")?
            > 0.0
    );
    Ok(())
}

#[test]
fn configured_cores_replace_the_detected_limit() {
    let detected = Sampler::new(None).cores;
    assert!(detected > 0.0);
    assert_eq!(Sampler::new(Some(16.0)).cores, 16.0);
    assert_eq!(Sampler::new(Some(0.5)).cores, 0.5);
    // Not a usable count (refused earlier by the configuration): the detected one.
    assert_eq!(Sampler::new(Some(f64::NAN)).cores, detected);
}
