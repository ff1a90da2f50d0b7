//! The sampling allocator: every allocation counts down a per-thread byte budget, and the
//! one that runs it out has its stack recorded in the [`tables`](super::tables).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::counting::{grew, shrank};
use super::tables::{filter_slot, lock_tables, tables, LiveRecord, FILTER, MAX_FRAMES, NO_TABLES};
use crate::unwind;

/// Mean bytes between two sampled allocations by default (Go's `MemProfileRate`).
const DEFAULT_SAMPLE_EVERY_BYTES: usize = 512 * 1024;

/// A global allocator that counts the bytes in use like
/// [`CountingAllocator`](super::CountingAllocator) (so
/// [`allocated_bytes`](super::allocated_bytes) and the `heap` metrics work) and samples allocations for heap
/// profiles, the way Go's runtime does with `MemProfileRate`.
///
/// ```rust
/// #[global_allocator]
/// static GLOBAL: holmes_agent::SamplingAllocator = holmes_agent::SamplingAllocator::system();
///
/// fn main() {
///     let v = vec![1u8; 1 << 20];
///     assert!(holmes_agent::allocated_bytes().is_some_and(|b| b >= v.len()));
/// }
/// ```
///
/// Each thread counts down a number of bytes drawn from an exponential distribution with
/// mean `sample_every_bytes` (512 KiB by default); the allocation that runs it out is
/// sampled, and a new countdown is drawn. An allocation of `size` bytes is thus sampled
/// with probability `1 - exp(-size / rate)` (one much larger than the rate always is),
/// and a sample stands for `1 / (1 - exp(-size / rate))` allocations, so the profile's
/// totals are unbiased. A sampled allocation's stack is recorded with a frame-pointer
/// walk of the allocating thread (build with `-C force-frame-pointers=yes`; without frame
/// pointers stacks come out short, never wrong enough to crash) and followed until it is
/// freed or moved by `realloc`. Heap captures (on `heap` and `memory` triggers) turn the
/// samples into a pprof with Go's `alloc_objects`, `alloc_space`, `inuse_objects` and
/// `inuse_space`.
///
/// Cost: besides the counting, one thread-local decrement and compare per allocation
/// and one load of a static byte per free. A sampled allocation (one per `rate` bytes on
/// average) costs a stack walk and a lock. The tables come from the system allocator at
/// the first sample, about 13 MiB of address space touched as they fill: up to 16384
/// distinct stacks of 64 frames and 98304 live sampled allocations; what does not fit is
/// counted in the profile's comments. A 1 MiB static filter (zero pages until used)
/// spares most frees the lock. Nothing in it allocates through the global allocator or
/// panics.
#[derive(Debug, Clone, Copy)]
pub struct SamplingAllocator<A = System> {
    inner: A,
    rate: usize,
}

impl SamplingAllocator<System> {
    /// Samples around the system allocator, one allocation per 512 KiB on average.
    pub const fn system() -> Self {
        SamplingAllocator {
            inner: System,
            rate: DEFAULT_SAMPLE_EVERY_BYTES,
        }
    }
}

impl<A> SamplingAllocator<A> {
    /// Samples around `inner`, one allocation per `sample_every_bytes` allocated bytes on
    /// average; 0 samples nothing (the allocator then only counts).
    pub const fn new(inner: A, sample_every_bytes: usize) -> Self {
        SamplingAllocator {
            inner,
            rate: sample_every_bytes,
        }
    }

    /// The mean bytes between two sampled allocations.
    pub const fn sample_every_bytes(&self) -> usize {
        self.rate
    }
}

impl<A: Default> Default for SamplingAllocator<A> {
    fn default() -> Self {
        SamplingAllocator::new(A::default(), DEFAULT_SAMPLE_EVERY_BYTES)
    }
}

// SAFETY: every method forwards to the inner allocator with the caller's arguments; the
// bookkeeping never allocates through the global allocator (its tables come from `System`
// directly), never touches the memory it hands out, and never panics.
unsafe impl<A: GlobalAlloc> GlobalAlloc for SamplingAllocator<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded under the caller's guarantees.
        let p = unsafe { self.inner.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
            allocated(p, layout.size(), self.rate);
        }
        p
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded under the caller's guarantees.
        let p = unsafe { self.inner.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
            allocated(p, layout.size(), self.rate);
        }
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Forgotten before it is freed: once freed, another thread may get (and sample)
        // the same address.
        if maybe_sampled(ptr) {
            forget(ptr as usize);
        }
        // SAFETY: forwarded under the caller's guarantees.
        unsafe { self.inner.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = if maybe_sampled(ptr) {
            forget(ptr as usize)
        } else {
            None
        };
        // SAFETY: forwarded under the caller's guarantees.
        let p = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if p.is_null() {
            // The old block is still there, and still sampled.
            if let Some(old) = old {
                remember_again(old);
            }
            return p;
        }
        if new_size >= layout.size() {
            grew(new_size - layout.size());
        } else {
            shrank(layout.size() - new_size);
        }
        // The new block is a new allocation for sampling, wherever it lives.
        allocated(p, new_size, self.rate);
        p
    }
}

thread_local! {
    /// Bytes this thread may still allocate before the next sample. The allocation that
    /// brings it to zero or below is sampled; 0 at first, so that a thread's first
    /// allocation draws its countdown.
    static COUNTDOWN: Cell<i64> = const { Cell::new(0) };
    /// xorshift64* state; 0 until this thread draws its first countdown.
    static RNG: Cell<u64> = const { Cell::new(0) };
    /// Set while this thread is in the sampler, so that nothing it does re-enters it.
    pub(super) static IN_SAMPLER: Cell<bool> = const { Cell::new(false) };
}

/// The rate of the sampler in use; 0 until a [`SamplingAllocator`] with a non-zero rate
/// has allocated.
pub(super) static SAMPLE_EVERY: AtomicUsize = AtomicUsize::new(0);
/// Frees of possibly sampled blocks that could not be looked up (from inside the sampler).
pub(super) static MISSED_FREES: AtomicU64 = AtomicU64::new(0);

/// Whether a sampling allocator is in use here (a heap profile can be made).
pub(crate) fn sampling_active() -> bool {
    SAMPLE_EVERY.load(Ordering::Relaxed) != 0
}

/// The fast path of every allocation: one thread-local decrement and compare.
#[inline(always)]
fn allocated(ptr: *mut u8, size: usize, rate: usize) {
    let due = COUNTDOWN.try_with(|c| {
        let left = c.get().wrapping_sub(size as i64);
        c.set(left);
        left <= 0
    });
    if matches!(due, Ok(true)) {
        countdown_ran_out(ptr as usize, size, rate);
    }
}

/// Whether `ptr` may be a live sampled block; false is certain.
#[inline(always)]
pub(super) fn maybe_sampled(ptr: *mut u8) -> bool {
    FILTER
        .get(filter_slot(ptr as usize))
        .is_some_and(|c| c.load(Ordering::Relaxed) != 0)
}

#[cold]
#[inline(never)]
fn countdown_ran_out(ptr: usize, size: usize, rate: usize) {
    if rate == 0 {
        let _ = COUNTDOWN.try_with(|c| c.set(i64::MAX));
        return;
    }
    if IN_SAMPLER.try_with(|g| g.replace(true)) != Ok(false) {
        // Allocated from inside the sampler: not sampled; the next allocation looks again.
        let _ = COUNTDOWN.try_with(|c| c.set(0));
        return;
    }
    if SAMPLE_EVERY.load(Ordering::Relaxed) != rate {
        SAMPLE_EVERY.store(rate, Ordering::Relaxed);
    }
    let first = RNG.try_with(|r| r.get() == 0).unwrap_or(false);
    let sampled = COUNTDOWN
        .try_with(|c| {
            let left = if first {
                next_countdown(rate).wrapping_sub(size as i64)
            } else {
                c.get()
            };
            if left > 0 {
                c.set(left);
                false
            } else {
                c.set(next_countdown(rate));
                true
            }
        })
        .unwrap_or(false);
    if sampled {
        record(ptr, size, weight(size, rate));
    }
    let _ = IN_SAMPLER.try_with(|g| g.set(false));
}

/// How many allocations a sample of `size` bytes stands for: `1 / (1 - exp(-size/rate))`,
/// as Go's pprof scales heap samples.
pub(super) fn weight(size: usize, rate: usize) -> f64 {
    if rate == 0 {
        return 1.0;
    }
    let p = -(-(size as f64) / rate as f64).exp_m1();
    if p > 0.0 {
        1.0 / p
    } else {
        1.0
    }
}

/// The next countdown: exponentially distributed bytes with mean `rate`, at least 1.
pub(super) fn next_countdown(rate: usize) -> i64 {
    // Uniform in (0, 1] from the top 53 bits.
    let u = ((rng_next() >> 11) + 1) as f64 / (1u64 << 53) as f64;
    // `as` saturates.
    ((-u.ln() * rate as f64) as i64).max(1)
}

/// This thread's xorshift64* generator, seeded on first use.
fn rng_next() -> u64 {
    RNG.try_with(|r| {
        let mut x = r.get();
        if x == 0 {
            x = seed(r as *const Cell<u64> as u64);
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        r.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
    .unwrap_or(0x853C_49E6_748F_EA9B)
}

/// A non-zero seed: a global sequence mixed with `salt` (a thread-local address) by
/// splitmix64.
fn seed(salt: u64) -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut z = NEXT
        .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
        .wrapping_add(salt);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    z.max(1)
}

/// Records a sampled block: walks this thread's stack and charges the stack.
#[inline(never)]
fn record(ptr: usize, size: usize, scale: f64) {
    let mut frames = [0usize; MAX_FRAMES];
    let depth = walk_this_stack(&mut frames);
    let stack = frames.get(..depth).unwrap_or(&[]);
    let mut guard = lock_tables();
    match tables(&mut guard) {
        Some(t) => t.sample(ptr, size, scale, stack),
        None => {
            NO_TABLES.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Walks the calling thread's stack into `out`: `out[0]` is a pc in the caller itself,
/// then return addresses, innermost first. Inlined, so the caller's own frame is the
/// first one walked and every return address is symbolized as one.
#[inline(always)]
fn walk_this_stack(out: &mut [usize]) -> usize {
    unwind::init();
    unwind::walk_here(out)
}

/// Stops following a block that is being freed or moved; returns what it was charged.
#[cold]
#[inline(never)]
fn forget(ptr: usize) -> Option<LiveRecord> {
    if IN_SAMPLER.try_with(Cell::get).unwrap_or(true) {
        // The lock may be ours already; the record stays until its address is reused.
        MISSED_FREES.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    let mut guard = lock_tables();
    guard.as_mut()?.untrack(ptr)
}

/// Follows a block again after a failed `realloc` left it in place.
#[cold]
#[inline(never)]
fn remember_again(rec: LiveRecord) {
    if IN_SAMPLER.try_with(Cell::get).unwrap_or(true) {
        return;
    }
    let mut guard = lock_tables();
    if let Some(t) = guard.as_mut() {
        t.retrack(rec);
    }
}
