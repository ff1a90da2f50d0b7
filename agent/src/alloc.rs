//! Global allocators for services that do not use jemalloc: [`CountingAllocator`] gives
//! them a heap metric (`heap_bytes`, and `heap` as % of the memory limit), and
//! [`SamplingAllocator`] adds sampled heap profiles on top of the same metric.
//!
//! ```rust
//! #[global_allocator]
//! static GLOBAL: holmes_agent::CountingAllocator = holmes_agent::CountingAllocator::system();
//!
//! fn main() {
//!     let v = vec![0u8; 1 << 20];
//!     assert!(holmes_agent::allocated_bytes().is_some_and(|b| b >= v.len()));
//! }
//! ```
//!
//! Cost: one relaxed atomic add or subtract per allocation and free.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::capture::unwind;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Wraps an allocator (the system one by default) and counts the bytes in use.
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAllocator<A = System> {
    inner: A,
}

impl CountingAllocator<System> {
    /// Counts around the system allocator.
    pub const fn system() -> Self {
        CountingAllocator { inner: System }
    }
}

impl<A> CountingAllocator<A> {
    /// Counts around `inner`.
    pub const fn new(inner: A) -> Self {
        CountingAllocator { inner }
    }
}

#[inline]
fn grew(bytes: usize) {
    LIVE_BYTES.fetch_add(bytes, Ordering::Relaxed);
    if !INSTALLED.load(Ordering::Relaxed) {
        INSTALLED.store(true, Ordering::Relaxed);
    }
}

#[inline]
fn shrank(bytes: usize) {
    LIVE_BYTES.fetch_sub(bytes, Ordering::Relaxed);
}

// SAFETY: every method forwards to the inner allocator with the caller's arguments and
// only adds bookkeeping on an atomic counter; the allocator contract is the inner one's.
unsafe impl<A: GlobalAlloc> GlobalAlloc for CountingAllocator<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded under the caller's guarantees.
        let p = unsafe { self.inner.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded under the caller's guarantees.
        let p = unsafe { self.inner.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded under the caller's guarantees.
        unsafe { self.inner.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded under the caller's guarantees.
        let p = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        p
    }
}

/// Bytes allocated and not yet freed through a [`CountingAllocator`] or a
/// [`SamplingAllocator`], or `None` when neither is installed as the global allocator.
pub fn allocated_bytes() -> Option<usize> {
    INSTALLED
        .load(Ordering::Relaxed)
        .then(|| LIVE_BYTES.load(Ordering::Relaxed))
}

// ---------------------------------------------------------------------------------------
// Sampling heap profiler
// ---------------------------------------------------------------------------------------

/// Mean bytes between two sampled allocations by default (Go's `MemProfileRate`).
const DEFAULT_SAMPLE_EVERY_BYTES: usize = 512 * 1024;
/// Most frames recorded per sampled stack, the allocator's own included.
pub(crate) const MAX_FRAMES: usize = 64;
/// Most distinct stacks; samples with further stacks go to the overflow stack (id 0).
const MAX_STACKS: usize = 16 * 1024;
/// Slots of the stack index (a power of two, twice the stacks: at most half full).
const STACK_SLOTS: usize = 2 * MAX_STACKS;
/// Slots of the table of live sampled allocations (a power of two; at most 3/4 used).
const LIVE_SLOTS: usize = 128 * 1024;
/// log2 of the slots of the free filter.
const FILTER_BITS: u32 = 20;
const FILTER_SLOTS: usize = 1 << FILTER_BITS;
/// The stack samples are charged to when the stack table is full.
const OVERFLOW_STACK: usize = 0;

/// A global allocator that counts the bytes in use like [`CountingAllocator`] (so
/// [`allocated_bytes`] and the `heap` metrics work) and samples allocations for heap
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
    static IN_SAMPLER: Cell<bool> = const { Cell::new(false) };
}

/// The rate of the sampler in use; 0 until a [`SamplingAllocator`] with a non-zero rate
/// has allocated.
static SAMPLE_EVERY: AtomicUsize = AtomicUsize::new(0);
/// Distinct stacks and frames in the stack table, for sizing snapshots.
static STACK_COUNT: AtomicUsize = AtomicUsize::new(0);
static FRAME_COUNT: AtomicUsize = AtomicUsize::new(0);
/// Frees of possibly sampled blocks that could not be looked up (from inside the sampler).
static MISSED_FREES: AtomicU64 = AtomicU64::new(0);
/// Samples that found no tables (the system allocator refused them).
static NO_TABLES: AtomicU64 = AtomicU64::new(0);
/// Set when the tables could not be allocated; sampling then only counts drops.
static TABLES_FAILED: AtomicBool = AtomicBool::new(false);
/// The bookkeeping, allocated at the first sample. Never held across an allocation.
static TABLES: Mutex<Option<Tables>> = Mutex::new(None);
/// A counting filter over the addresses of live sampled blocks: a free whose slot is 0
/// was not sampled and skips the lock. Slots are only changed under the `TABLES` lock;
/// one that reaches 255 stays there (its frees always look).
static FILTER: [AtomicU8; FILTER_SLOTS] = [const { AtomicU8::new(0) }; FILTER_SLOTS];

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
fn maybe_sampled(ptr: *mut u8) -> bool {
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
fn weight(size: usize, rate: usize) -> f64 {
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
fn next_countdown(rate: usize) -> i64 {
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
    if !unwind::init() {
        // No probe pipe: a walk would record only the pc.
        return 0;
    }
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

fn lock_tables() -> MutexGuard<'static, Option<Tables>> {
    // Nothing panics while holding it; a poisoned lock is taken over.
    TABLES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The tables, allocated on first use; None if the system allocator refused them.
fn tables(slot: &mut Option<Tables>) -> Option<&mut Tables> {
    if slot.is_none() && !TABLES_FAILED.load(Ordering::Relaxed) {
        *slot = Tables::allocate();
        if slot.is_none() {
            TABLES_FAILED.store(true, Ordering::Relaxed);
        }
    }
    slot.as_mut()
}

/// Multiplicative hash of a block address (blocks are at least 16-byte aligned).
fn ptr_hash(ptr: usize) -> u64 {
    ((ptr as u64) >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn filter_slot(ptr: usize) -> usize {
    (ptr_hash(ptr) >> (64 - FILTER_BITS)) as usize
}

fn filter_add(ptr: usize) {
    if let Some(c) = FILTER.get(filter_slot(ptr)) {
        let v = c.load(Ordering::Relaxed);
        if v < u8::MAX {
            c.store(v + 1, Ordering::Relaxed);
        }
    }
}

fn filter_remove(ptr: usize) {
    if let Some(c) = FILTER.get(filter_slot(ptr)) {
        let v = c.load(Ordering::Relaxed);
        if v > 0 && v < u8::MAX {
            c.store(v - 1, Ordering::Relaxed);
        }
    }
}

/// One distinct stack and what its samples stand for (weighted).
#[derive(Debug, Clone, Copy, Default)]
struct StackRecord {
    hash: u64,
    len: usize,
    alloc_objects: f64,
    alloc_space: f64,
    inuse_objects: f64,
    inuse_space: f64,
}

/// A live sampled block; `ptr` 0 marks an empty slot.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct LiveRecord {
    ptr: usize,
    size: usize,
    scale: f64,
    stack: usize,
}

/// The sampler's bookkeeping: a pool of distinct stacks (each `MAX_FRAMES` wide in
/// `frames`, found by hash through `stack_index`) and an open-addressing table of live
/// sampled blocks (linear probing, deletion by backward shift). Capacities are the
/// slices' lengths; the index and live slices have power-of-two lengths.
#[derive(Debug)]
struct Tables {
    stacks: &'static mut [StackRecord],
    frames: &'static mut [usize],
    /// 0 empty, else a stack id (ids start at 1; 0 is the overflow stack).
    stack_index: &'static mut [u32],
    stack_count: usize,
    live: &'static mut [LiveRecord],
    live_count: usize,
    /// Samples whose block could not be followed (live table full): in alloc_* only.
    untracked: u64,
    /// Samples charged to the overflow stack (stack table full).
    overflowed: u64,
}

/// A zeroed, never freed slice from the system allocator.
///
/// # Safety
/// All-zero bytes must be a valid `T`.
unsafe fn zeroed_slice<T>(len: usize) -> Option<&'static mut [T]> {
    let layout = Layout::array::<T>(len).ok()?;
    if layout.size() == 0 {
        return None;
    }
    // SAFETY: a non-zero layout.
    let p = unsafe { System.alloc_zeroed(layout) }.cast::<T>();
    if p.is_null() {
        return None;
    }
    // SAFETY: `len` zeroed (valid, by the caller's promise) and suitably aligned `T`s,
    // owned by nobody else and never freed.
    Some(unsafe { std::slice::from_raw_parts_mut(p, len) })
}

impl Tables {
    /// The full-size tables from `System` (lazily zeroed pages, touched as they fill).
    /// On failure what was obtained is not given back (this happens at most once).
    fn allocate() -> Option<Tables> {
        // SAFETY: all four element types are plain integers and floats, for which all-zero
        // bytes are valid (0 and 0.0).
        unsafe {
            Some(Tables::with(
                zeroed_slice(MAX_STACKS)?,
                zeroed_slice(MAX_STACKS * MAX_FRAMES)?,
                zeroed_slice(STACK_SLOTS)?,
                zeroed_slice(LIVE_SLOTS)?,
            ))
        }
    }

    fn with(
        stacks: &'static mut [StackRecord],
        frames: &'static mut [usize],
        stack_index: &'static mut [u32],
        live: &'static mut [LiveRecord],
    ) -> Tables {
        Tables {
            stacks,
            frames,
            stack_index,
            // The overflow stack (empty) is id 0.
            stack_count: 1,
            live,
            live_count: 0,
            untracked: 0,
            overflowed: 0,
        }
    }

    fn max_live(&self) -> usize {
        self.live.len() / 4 * 3
    }

    /// Charges a sampled block to its stack and follows it until it is freed.
    fn sample(&mut self, ptr: usize, size: usize, scale: f64, frames: &[usize]) {
        let stack = self.intern(frames);
        if let Some(s) = self.stacks.get_mut(stack) {
            s.alloc_objects += scale;
            s.alloc_space += size as f64 * scale;
        }
        self.retrack(LiveRecord {
            ptr,
            size,
            scale,
            stack,
        });
    }

    /// Follows `rec` and counts it in use, unless the live table is full.
    fn retrack(&mut self, rec: LiveRecord) {
        if self.track(rec) {
            if let Some(s) = self.stacks.get_mut(rec.stack) {
                s.inuse_objects += rec.scale;
                s.inuse_space += rec.size as f64 * rec.scale;
            }
        }
    }

    /// The stack id of `frames`, added if new; the overflow stack when the table is full.
    fn intern(&mut self, frames: &[usize]) -> usize {
        let frames = frames.get(..MAX_FRAMES).unwrap_or(frames);
        let hash = hash_frames(frames);
        let mask = self.stack_index.len().wrapping_sub(1);
        let mut slot = hash as usize & mask;
        for _ in 0..self.stack_index.len() {
            let Some(&id) = self.stack_index.get(slot) else {
                break;
            };
            let id = id as usize;
            if id == 0 {
                return self.add_stack(slot, hash, frames);
            }
            if self.stack_is(id, hash, frames) {
                return id;
            }
            slot = (slot + 1) & mask;
        }
        self.overflowed += 1;
        OVERFLOW_STACK
    }

    fn stack_is(&self, id: usize, hash: u64, frames: &[usize]) -> bool {
        let Some(rec) = self.stacks.get(id) else {
            return false;
        };
        let base = id * MAX_FRAMES;
        rec.hash == hash
            && rec.len == frames.len()
            && self.frames.get(base..base + rec.len) == Some(frames)
    }

    fn add_stack(&mut self, slot: usize, hash: u64, frames: &[usize]) -> usize {
        let id = self.stack_count;
        let base = id * MAX_FRAMES;
        let stored = match (
            self.stacks.get_mut(id),
            self.frames.get_mut(base..base + frames.len()),
            u32::try_from(id),
        ) {
            (Some(rec), Some(dst), Ok(id32)) => {
                for (d, s) in dst.iter_mut().zip(frames) {
                    *d = *s;
                }
                rec.hash = hash;
                rec.len = frames.len();
                id32
            }
            _ => {
                self.overflowed += 1;
                return OVERFLOW_STACK;
            }
        };
        if let Some(entry) = self.stack_index.get_mut(slot) {
            *entry = stored;
        }
        self.stack_count += 1;
        STACK_COUNT.store(self.stack_count, Ordering::Relaxed);
        FRAME_COUNT.fetch_add(frames.len(), Ordering::Relaxed);
        id
    }

    fn live_mask(&self) -> usize {
        self.live.len().wrapping_sub(1)
    }

    /// Where a block's probe sequence starts: the hash's top bits.
    fn live_home(&self, ptr: usize) -> usize {
        let bits = self.live.len().trailing_zeros();
        if bits == 0 {
            return 0;
        }
        (ptr_hash(ptr) >> (64 - bits)) as usize
    }

    fn find(&self, ptr: usize) -> Option<usize> {
        let mask = self.live_mask();
        let mut i = self.live_home(ptr);
        for _ in 0..self.live.len() {
            let rec = self.live.get(i)?;
            if rec.ptr == ptr {
                return Some(i);
            }
            if rec.ptr == 0 {
                return None;
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// Adds a live block; an older record at the same address (a free that was missed)
    /// is replaced. False when the table is full.
    fn track(&mut self, rec: LiveRecord) -> bool {
        if rec.ptr == 0 {
            return false;
        }
        if self.find(rec.ptr).is_some() {
            let _ = self.untrack(rec.ptr);
        }
        if self.live_count >= self.max_live() {
            self.untracked += 1;
            return false;
        }
        let mask = self.live_mask();
        let mut i = self.live_home(rec.ptr);
        for _ in 0..self.live.len() {
            let Some(slot) = self.live.get_mut(i) else {
                break;
            };
            if slot.ptr == 0 {
                *slot = rec;
                self.live_count += 1;
                filter_add(rec.ptr);
                return true;
            }
            i = (i + 1) & mask;
        }
        self.untracked += 1;
        false
    }

    /// Removes a live block and takes it out of its stack's in-use totals.
    fn untrack(&mut self, ptr: usize) -> Option<LiveRecord> {
        let i = self.find(ptr)?;
        let rec = *self.live.get(i)?;
        self.remove_at(i);
        self.live_count = self.live_count.saturating_sub(1);
        filter_remove(ptr);
        if let Some(s) = self.stacks.get_mut(rec.stack) {
            s.inuse_objects -= rec.scale;
            s.inuse_space -= rec.size as f64 * rec.scale;
        }
        Some(rec)
    }

    /// Empties slot `i`, shifting later records of the same probe run back into the gap
    /// (so lookups never need tombstones).
    fn remove_at(&mut self, mut i: usize) {
        let mask = self.live_mask();
        let mut j = i;
        for _ in 0..self.live.len() {
            j = (j + 1) & mask;
            let Some(&next) = self.live.get(j) else {
                break;
            };
            if next.ptr == 0 {
                break;
            }
            let home = self.live_home(next.ptr);
            // `next` may fill the gap if the gap lies within its probe run [home, j).
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(i) & mask) {
                if let Some(gap) = self.live.get_mut(i) {
                    *gap = next;
                }
                i = j;
            }
        }
        if let Some(gap) = self.live.get_mut(i) {
            *gap = LiveRecord::default();
        }
    }
}

/// FxHash-style hash of a stack.
fn hash_frames(frames: &[usize]) -> u64 {
    let mut h = frames.len() as u64;
    for &f in frames {
        h = (h.rotate_left(5) ^ f as u64).wrapping_mul(0x517C_C1B7_2722_0A95);
    }
    h ^ (h >> 29)
}

/// One stack of the sampled heap and what its samples stand for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HeapStack {
    /// `[0]` a pc in the sampler's own code, then return addresses, innermost first.
    /// Empty for the samples that found the stack table full.
    pub(crate) frames: Vec<usize>,
    pub(crate) alloc_objects: f64,
    pub(crate) alloc_space: f64,
    pub(crate) inuse_objects: f64,
    pub(crate) inuse_space: f64,
}

/// A copy of the sampler's tables.
#[derive(Debug, Clone, Default)]
pub(crate) struct HeapSnapshot {
    /// The sampling rate, bytes.
    pub(crate) sample_every_bytes: usize,
    pub(crate) stacks: Vec<HeapStack>,
    /// Live sampled blocks followed now.
    pub(crate) live_samples: usize,
    /// Samples counted as allocated but not followed (live table full).
    pub(crate) untracked: u64,
    /// Samples charged to the overflow stack (stack table full).
    pub(crate) overflowed: u64,
    /// Samples lost: no tables, or frees that could not be looked up.
    pub(crate) lost: u64,
}

/// A copy of what the sampling allocator recorded, or None when none samples here.
pub(crate) fn heap_snapshot() -> Option<HeapSnapshot> {
    let rate = SAMPLE_EVERY.load(Ordering::Relaxed);
    if rate == 0 {
        return None;
    }
    // Room is made before the lock is taken: allocating under it would re-enter the
    // sampler. Stacks added meanwhile beyond the slack wait for the next snapshot.
    let stack_room = STACK_COUNT
        .load(Ordering::Relaxed)
        .saturating_add(256)
        .min(MAX_STACKS);
    let frame_room = FRAME_COUNT
        .load(Ordering::Relaxed)
        .saturating_add(256 * MAX_FRAMES)
        .min(MAX_STACKS * MAX_FRAMES);
    let mut counts: Vec<(usize, [f64; 4])> = Vec::with_capacity(stack_room);
    let mut frames: Vec<usize> = Vec::with_capacity(frame_room);
    let mut snap = HeapSnapshot {
        sample_every_bytes: rate,
        ..HeapSnapshot::default()
    };
    if IN_SAMPLER.try_with(|g| g.replace(true)) == Ok(false) {
        let guard = lock_tables();
        if let Some(t) = guard.as_ref() {
            for id in 0..t.stack_count {
                let Some(rec) = t.stacks.get(id) else {
                    break;
                };
                let base = id * MAX_FRAMES;
                let stack = t.frames.get(base..base + rec.len).unwrap_or(&[]);
                if counts.len() == counts.capacity()
                    || frames.capacity() - frames.len() < stack.len()
                {
                    break;
                }
                counts.push((
                    stack.len(),
                    [
                        rec.alloc_objects,
                        rec.alloc_space,
                        rec.inuse_objects,
                        rec.inuse_space,
                    ],
                ));
                frames.extend_from_slice(stack);
            }
            snap.live_samples = t.live_count;
            snap.untracked = t.untracked;
            snap.overflowed = t.overflowed;
        }
        drop(guard);
        let _ = IN_SAMPLER.try_with(|g| g.set(false));
    }
    snap.lost = NO_TABLES
        .load(Ordering::Relaxed)
        .saturating_add(MISSED_FREES.load(Ordering::Relaxed));
    let mut at = 0;
    for (len, [alloc_objects, alloc_space, inuse_objects, inuse_space]) in counts {
        let stack = frames.get(at..at + len).unwrap_or(&[]).to_vec();
        at += len;
        snap.stacks.push(HeapStack {
            frames: stack,
            alloc_objects,
            alloc_space,
            inuse_objects,
            inuse_space,
        });
    }
    Some(snap)
}

#[cfg(test)]
pub(crate) mod tests {
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
    fn counts_what_goes_through_it() {
        let a = CountingAllocator::system();
        let before = LIVE_BYTES.load(Ordering::Relaxed);
        let layout = Layout::from_size_align(4096, 8).unwrap();
        // SAFETY: a valid layout; the pointer is freed with the same layout.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            assert_eq!(LIVE_BYTES.load(Ordering::Relaxed) - before, 4096);
            let q = a.realloc(p, layout, 10_000);
            assert_eq!(LIVE_BYTES.load(Ordering::Relaxed) - before, 10_000);
            a.dealloc(q, Layout::from_size_align(10_000, 8).unwrap());
        }
        assert_eq!(LIVE_BYTES.load(Ordering::Relaxed), before);
        assert!(allocated_bytes().is_some());
    }

    #[test]
    fn sampling_alloc_estimates_many_small_allocations_within_20_percent() {
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
            let layout = Layout::from_size_align(8 + (x % 249) as usize, 8).unwrap();
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
    }

    #[test]
    fn sampling_alloc_always_samples_large_blocks_and_follows_realloc() {
        let _serial = serial();
        let a = SamplingAllocator::new(System, 64 * 1024);
        let before = totals();
        let mib = 1024.0 * 1024.0;
        let small = Layout::from_size_align(4 << 20, 16).unwrap();
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
            a.dealloc(q, Layout::from_size_align(8 << 20, 16).unwrap());
            let d = delta(totals(), before);
            assert!(d[3].abs() < 1.0 && d[2].abs() < 1e-9, "{d:?}");
        }
        assert!(sampling_active());
        assert!(allocated_bytes().is_some());
    }

    #[test]
    fn sampling_alloc_with_rate_zero_only_counts() {
        let _serial = serial();
        let a = SamplingAllocator::new(System, 0);
        let before = totals();
        let layout = Layout::from_size_align(8 << 20, 16).unwrap();
        // SAFETY: a valid layout, freed with the same layout.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            assert_eq!(delta(totals(), before), [0.0; 4]);
            a.dealloc(p, layout);
        }
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
    fn sampling_alloc_live_table_survives_collisions_and_removals() {
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
                let rec = t.untrack(*p).unwrap();
                assert_eq!(rec.size, model.remove(p).unwrap());
            }
            for (p, size) in &model {
                let i = t.find(*p).unwrap_or_else(|| panic!("{p:#x} lost"));
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
        let p = *model.keys().next().unwrap();
        assert!(t.track(LiveRecord {
            ptr: p,
            size: 99,
            scale: 1.0,
            stack: 1,
        }));
        assert_eq!(t.live_count, model.len());
        assert_eq!(t.live[t.find(p).unwrap()].size, 99);
        for p in model.keys() {
            assert!(t.untrack(*p).is_some());
        }
        assert_eq!(t.live_count, 0);
        assert!(t.live.iter().all(|r| r.ptr == 0));
    }
}
