//! A copy of the sampling allocator's tables, made without allocating under their lock.

use std::sync::atomic::Ordering;

use super::sampling::{IN_SAMPLER, MISSED_FREES, SAMPLE_EVERY};
use super::tables::{lock_tables, FRAME_COUNT, MAX_FRAMES, MAX_STACKS, NO_TABLES, STACK_COUNT};

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
