use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::counting::live_bytes;
use super::sampling::{maybe_sampled, next_countdown, weight};
use super::tables::{LiveRecord, StackRecord, Tables, MAX_FRAMES, OVERFLOW_STACK};
use super::*;

/// Tests that go through the process-wide sampler tables, one at a time.
static SAMPLER_TESTS: Mutex<()> = Mutex::new(());

pub(crate) fn serial() -> MutexGuard<'static, ()> {
    SAMPLER_TESTS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// alloc_objects, alloc_space, inuse_objects, inuse_space over all stacks.
fn totals() -> [f64; 4] {
    let mut t = [0.0; 4];
    for s in heap_snapshot().map(|s| s.stacks).unwrap_or_default() {
        t[0] += s.alloc_objects;
        t[1] += s.alloc_space;
        t[2] += s.inuse_objects;
        t[3] += s.inuse_space;
    }
    t
}

fn delta(after: [f64; 4], before: [f64; 4]) -> [f64; 4] {
    [0, 1, 2, 3].map(|i| after[i] - before[i])
}

#[test]
fn counts_what_goes_through_it() -> crate::TestResult {
    let a = CountingAllocator::system();
    let before = live_bytes();
    let layout = Layout::from_size_align(4096, 8)?;
    let grown = Layout::from_size_align(10_000, 8)?;
    // SAFETY: a valid layout; the pointer is freed with the same layout.
    unsafe {
        let p = a.alloc(layout);
        assert!(!p.is_null());
        assert_eq!(live_bytes() - before, 4096);
        let q = a.realloc(p, layout, 10_000);
        assert_eq!(live_bytes() - before, 10_000);
        a.dealloc(q, grown);
    }
    assert_eq!(live_bytes(), before);
    assert!(allocated_bytes().is_some());
    Ok(())
}

#[test]
fn sampling_alloc_estimates_many_small_allocations_within_20_percent() -> crate::TestResult {
    let _serial = serial();
    let a = SamplingAllocator::new(System, 16 * 1024);
    let before = totals();
    // 400k blocks of 8..=256 bytes (~53 MB): ~3200 samples, a ~2% standard error.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut blocks = Vec::with_capacity(400_000);
    let mut bytes = 0usize;
    for _ in 0..400_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let layout = Layout::from_size_align(8 + (x % 249) as usize, 8)?;
        // SAFETY: a non-zero layout; freed below with the same layout.
        let p = unsafe { a.alloc(layout) };
        assert!(!p.is_null());
        bytes += layout.size();
        blocks.push((p, layout));
    }
    let live = delta(totals(), before);
    let n = blocks.len() as f64;
    let within = |estimate: f64, truth: f64| (estimate - truth).abs() <= 0.2 * truth;
    eprintln!(
        "true: {n} objects, {bytes} bytes; estimated: alloc {:.0} objects {:.0} bytes, inuse {:.0} objects {:.0} bytes",
        live[0], live[1], live[2], live[3]
    );
    assert!(
        within(live[1], bytes as f64),
        "alloc_space {live:?} vs {bytes}"
    );
    assert!(
        within(live[3], bytes as f64),
        "inuse_space {live:?} vs {bytes}"
    );
    assert!(within(live[0], n), "alloc_objects {live:?} vs {n}");
    assert!(within(live[2], n), "inuse_objects {live:?} vs {n}");
    for (p, layout) in blocks {
        // SAFETY: allocated above with this layout.
        unsafe { a.dealloc(p, layout) };
    }
    let freed = delta(totals(), before);
    assert!(freed[3].abs() < 1.0, "inuse_space back to 0: {freed:?}");
    assert!(freed[2].abs() < 1e-6, "inuse_objects back to 0: {freed:?}");
    assert_eq!(freed[1], live[1], "alloc_space is cumulative");
    Ok(())
}

#[test]
fn sampling_alloc_always_samples_large_blocks_and_follows_realloc() -> crate::TestResult {
    let _serial = serial();
    let a = SamplingAllocator::new(System, 64 * 1024);
    let before = totals();
    let mib = 1024.0 * 1024.0;
    let small = Layout::from_size_align(4 << 20, 16)?;
    let grown = Layout::from_size_align(8 << 20, 16)?;
    // SAFETY: valid layouts; each block is freed or reallocated with its own layout.
    unsafe {
        let p = a.alloc(small);
        assert!(!p.is_null());
        assert!(maybe_sampled(p));
        let d = delta(totals(), before);
        assert!((d[3] - 4.0 * mib).abs() < 1.0, "{d:?}");
        assert!((d[2] - 1.0).abs() < 1e-9, "{d:?}");
        let q = a.realloc(p, small, 8 << 20);
        assert!(!q.is_null());
        let d = delta(totals(), before);
        assert!((d[3] - 8.0 * mib).abs() < 1.0, "moved, not added: {d:?}");
        assert!((d[1] - 12.0 * mib).abs() < 1.0, "{d:?}");
        assert!((d[0] - 2.0).abs() < 1e-9, "{d:?}");
        a.dealloc(q, grown);
        let d = delta(totals(), before);
        assert!(d[3].abs() < 1.0 && d[2].abs() < 1e-9, "{d:?}");
    }
    assert!(sampling_active());
    assert!(allocated_bytes().is_some());
    Ok(())
}

#[test]
fn sampling_alloc_with_rate_zero_only_counts() -> crate::TestResult {
    let _serial = serial();
    let a = SamplingAllocator::new(System, 0);
    let before = totals();
    let layout = Layout::from_size_align(8 << 20, 16)?;
    // SAFETY: a valid layout, freed with the same layout.
    unsafe {
        let p = a.alloc(layout);
        assert!(!p.is_null());
        assert_eq!(delta(totals(), before), [0.0; 4]);
        a.dealloc(p, layout);
    }
    Ok(())
}

#[test]
fn sampling_alloc_draws_countdowns_with_the_rate_as_mean() {
    let n = 200_000;
    let rate = 512 * 1024;
    let mean = (0..n).map(|_| next_countdown(rate) as f64).sum::<f64>() / f64::from(n);
    assert!(
        (mean / rate as f64 - 1.0).abs() < 0.02,
        "mean countdown {mean}"
    );
    assert_eq!(weight(64 << 20, rate), 1.0);
    assert!((weight(8, rate) - rate as f64 / 8.0).abs() < 1.0);
    assert!((weight(rate, rate) - 1.0 / (1.0 - (-1.0f64).exp())).abs() < 1e-12);
    assert_eq!(weight(8, 0), 1.0);
}

fn small_tables(stacks: usize, live: usize) -> Tables {
    Tables::with(
        Vec::leak(vec![StackRecord::default(); stacks]),
        Vec::leak(vec![0; stacks * MAX_FRAMES]),
        Vec::leak(vec![0; (2 * stacks).next_power_of_two()]),
        Vec::leak(vec![LiveRecord::default(); live]),
    )
}

#[test]
fn sampling_alloc_stack_table_dedupes_and_overflows() {
    let _serial = serial();
    let mut t = small_tables(4, 16);
    let a = t.intern(&[1, 2, 3]);
    assert_ne!(a, OVERFLOW_STACK);
    assert_eq!(t.intern(&[1, 2, 3]), a);
    let b = t.intern(&[1, 2]);
    let c = t.intern(&[]);
    assert!(b != a && c != a && c != b && b != OVERFLOW_STACK && c != OVERFLOW_STACK);
    assert_eq!(t.intern(&[7]), OVERFLOW_STACK, "ids 1..=3 are taken");
    assert_eq!(t.overflowed, 1);
    assert_eq!(t.intern(&[1, 2]), b);
    let deep: Vec<usize> = (0..100).collect();
    assert_eq!(t.intern(&deep), OVERFLOW_STACK);

    t.sample(0x1000, 100, 2.0, &[1, 2, 3]);
    t.sample(0x2000, 10, 1.0, &[1, 2, 3]);
    t.sample(0x3000, 10, 1.0, &[9]);
    let s = t.stacks[a];
    assert_eq!(
        [
            s.alloc_objects,
            s.alloc_space,
            s.inuse_objects,
            s.inuse_space
        ],
        [3.0, 210.0, 3.0, 210.0]
    );
    assert_eq!(t.stacks[OVERFLOW_STACK].inuse_space, 10.0);
    assert!(t.untrack(0x1000).is_some());
    assert!(t.untrack(0x1000).is_none());
    let s = t.stacks[a];
    assert_eq!(
        [
            s.alloc_objects,
            s.alloc_space,
            s.inuse_objects,
            s.inuse_space
        ],
        [3.0, 210.0, 1.0, 10.0]
    );
    assert!(t.untrack(0x2000).is_some() && t.untrack(0x3000).is_some());
    assert_eq!(t.live_count, 0);
}

#[test]
fn sampling_alloc_live_table_survives_collisions_and_removals() -> crate::TestResult {
    let _serial = serial();
    let mut t = small_tables(2, 64);
    // Addresses in a scrambled order, against a model; 48 (3/4) fit.
    let addr = |i: usize| 0x10_0000 + ((i * 7919) % 1000) * 16;
    let mut model = std::collections::HashMap::new();
    for i in 0..60 {
        let ok = t.track(LiveRecord {
            ptr: addr(i),
            size: i + 1,
            scale: 1.0,
            stack: 1,
        });
        assert_eq!(ok, i < 48, "{i}");
        if ok {
            model.insert(addr(i), i + 1);
        }
    }
    assert_eq!(t.untracked, 12);
    for round in 0..5 {
        let gone: Vec<usize> = model.keys().copied().step_by(2).collect();
        for p in &gone {
            let rec = t
                .untrack(*p)
                .ok_or_else(|| format!("{p:#x} is not tracked"))?;
            assert_eq!(
                rec.size,
                model
                    .remove(p)
                    .ok_or_else(|| format!("{p:#x} is not in the model"))?
            );
        }
        for (p, size) in &model {
            let i = t.find(*p).ok_or_else(|| format!("{p:#x} lost"))?;
            assert_eq!(t.live[i].size, *size);
        }
        for p in &gone {
            assert!(t.find(*p).is_none());
        }
        for i in 0..gone.len() {
            let p = addr(100 * (round + 1) + i);
            if t.track(LiveRecord {
                ptr: p,
                size: 7,
                scale: 1.0,
                stack: 1,
            }) {
                model.insert(p, 7);
            }
        }
        assert_eq!(t.live_count, model.len());
    }
    // Re-tracking an address replaces its record.
    let p = *model.keys().next().ok_or("the model is empty")?;
    assert!(t.track(LiveRecord {
        ptr: p,
        size: 99,
        scale: 1.0,
        stack: 1,
    }));
    assert_eq!(t.live_count, model.len());
    let i = t
        .find(p)
        .ok_or_else(|| format!("{p:#x} lost when tracked again"))?;
    assert_eq!(t.live[i].size, 99);
    for p in model.keys() {
        assert!(t.untrack(*p).is_some());
    }
    assert_eq!(t.live_count, 0);
    assert!(t.live.iter().all(|r| r.ptr == 0));
    Ok(())
}
