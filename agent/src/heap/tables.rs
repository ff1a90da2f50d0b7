//! The sampling allocator's bookkeeping: distinct stacks with what their samples stand
//! for, the live sampled blocks, and a filter over the blocks' addresses. Allocated from
//! `System` at the first sample, never through the global allocator, and never freed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Most frames recorded per sampled stack, the allocator's own included.
pub(super) const MAX_FRAMES: usize = 64;
/// Most distinct stacks; samples with further stacks go to the overflow stack (id 0).
pub(super) const MAX_STACKS: usize = 16 * 1024;
/// Slots of the stack index (a power of two, twice the stacks: at most half full).
const STACK_SLOTS: usize = 2 * MAX_STACKS;
/// Slots of the table of live sampled allocations (a power of two; at most 3/4 used).
const LIVE_SLOTS: usize = 128 * 1024;
/// log2 of the slots of the free filter.
const FILTER_BITS: u32 = 20;
const FILTER_SLOTS: usize = 1 << FILTER_BITS;
/// The stack samples are charged to when the stack table is full.
pub(super) const OVERFLOW_STACK: usize = 0;

/// Distinct stacks and frames in the stack table, for sizing snapshots.
pub(super) static STACK_COUNT: AtomicUsize = AtomicUsize::new(0);
pub(super) static FRAME_COUNT: AtomicUsize = AtomicUsize::new(0);
/// Samples that found no tables (the system allocator refused them).
pub(super) static NO_TABLES: AtomicU64 = AtomicU64::new(0);
/// Set when the tables could not be allocated; sampling then only counts drops.
static TABLES_FAILED: AtomicBool = AtomicBool::new(false);
/// The bookkeeping, allocated at the first sample. Never held across an allocation.
static TABLES: Mutex<Option<Tables>> = Mutex::new(None);
/// A counting filter over the addresses of live sampled blocks: a free whose slot is 0
/// was not sampled and skips the lock. Slots are only changed under the `TABLES` lock;
/// one that reaches 255 stays there (its frees always look).
pub(super) static FILTER: [AtomicU8; FILTER_SLOTS] = [const { AtomicU8::new(0) }; FILTER_SLOTS];

pub(super) fn lock_tables() -> MutexGuard<'static, Option<Tables>> {
    // Nothing panics while holding it; a poisoned lock is taken over.
    TABLES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The tables, allocated on first use; None if the system allocator refused them.
pub(super) fn tables(slot: &mut Option<Tables>) -> Option<&mut Tables> {
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

pub(super) fn filter_slot(ptr: usize) -> usize {
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
pub(super) struct StackRecord {
    pub(super) hash: u64,
    pub(super) len: usize,
    pub(super) alloc_objects: f64,
    pub(super) alloc_space: f64,
    pub(super) inuse_objects: f64,
    pub(super) inuse_space: f64,
}

/// A live sampled block; `ptr` 0 marks an empty slot.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct LiveRecord {
    pub(super) ptr: usize,
    pub(super) size: usize,
    pub(super) scale: f64,
    pub(super) stack: usize,
}

/// The sampler's bookkeeping: a pool of distinct stacks (each `MAX_FRAMES` wide in
/// `frames`, found by hash through `stack_index`) and an open-addressing table of live
/// sampled blocks (linear probing, deletion by backward shift). Capacities are the
/// slices' lengths; the index and live slices have power-of-two lengths.
#[derive(Debug)]
pub(super) struct Tables {
    pub(super) stacks: &'static mut [StackRecord],
    pub(super) frames: &'static mut [usize],
    /// 0 empty, else a stack id (ids start at 1; 0 is the overflow stack).
    pub(super) stack_index: &'static mut [u32],
    pub(super) stack_count: usize,
    pub(super) live: &'static mut [LiveRecord],
    pub(super) live_count: usize,
    /// Samples whose block could not be followed (live table full): in alloc_* only.
    pub(super) untracked: u64,
    /// Samples charged to the overflow stack (stack table full).
    pub(super) overflowed: u64,
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
    pub(super) fn allocate() -> Option<Tables> {
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

    pub(super) fn with(
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
    pub(super) fn sample(&mut self, ptr: usize, size: usize, scale: f64, frames: &[usize]) {
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
    pub(super) fn retrack(&mut self, rec: LiveRecord) {
        if self.track(rec) {
            if let Some(s) = self.stacks.get_mut(rec.stack) {
                s.inuse_objects += rec.scale;
                s.inuse_space += rec.size as f64 * rec.scale;
            }
        }
    }

    /// The stack id of `frames`, added if new; the overflow stack when the table is full.
    pub(super) fn intern(&mut self, frames: &[usize]) -> usize {
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

    pub(super) fn find(&self, ptr: usize) -> Option<usize> {
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
    pub(super) fn track(&mut self, rec: LiveRecord) -> bool {
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
    pub(super) fn untrack(&mut self, ptr: usize) -> Option<LiveRecord> {
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
