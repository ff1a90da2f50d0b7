//! Heap profiles: from jemalloc's own profiler when the `jemalloc` feature is on and
//! jemalloc profiling is enabled in this process, else from the samples of the
//! [`SamplingAllocator`](crate::SamplingAllocator) installed as the global allocator.
//!
//! The sampler's profile has Go's sample types, in Go's order: `alloc_objects/count`,
//! `alloc_space/bytes`, `inuse_objects/count`, `inuse_space/bytes` (the last, so pprof
//! shows `inuse_space` by default), period type `space/bytes` and the sampling rate as
//! period. Every recorded stack starts with the sampler's own frames, the allocator
//! glue (`__rust_alloc`, `alloc::alloc::…`) and the standard library's collection code
//! that asked for the memory (`alloc::raw_vec`, `alloc::vec`, `core::…`, as Go hides its
//! runtime's frames); they are trimmed, so the function that built the `Vec`, `String`
//! or `Box` is the leaf that `pprof -top` shows. (jemalloc's profiles keep the
//! `alloc::raw_vec` frames: see [`super::jemalloc`].)

use std::collections::BTreeMap;
use std::time::Instant;

use holmes_proto::ProfileKind;
use holmes_symbolize::Frame;

use super::profile::ProfileBuilder;
use super::Captured;
use crate::clock::unix_nanos_now;
use crate::heap::{self, HeapSnapshot};

/// Innermost frames that belong to the sampler and the allocator glue, not to the code
/// that allocated, by name prefix (`*text`: containing `text`; `=name`: exactly `name`;
/// `@text`: any frame whose file contains `text`).
pub(crate) const ALLOCATOR_FRAMES: &[&str] = &[
    "holmes_agent::heap::",
    "<holmes_agent::heap::",
    "__rust_alloc",
    "__rust_alloc_zeroed",
    "__rust_realloc",
    "__rustc::",
    "alloc::alloc::",
    // `<alloc::alloc::Global>::alloc_impl`, `<alloc::alloc::Global as Allocator>::allocate`
    "<alloc::alloc::Global",
    "std::alloc::",
    // Like Go hiding runtime frames: the standard library's collection machinery between
    // the allocator and the code that asked (`vec!`, `Vec::with_capacity`, `String`, ...).
    "alloc::",
    "<alloc::",
    "core::",
    "<core::",
    "*as alloc::",
    "*as core::",
    // Optimized builds inline these into each other, and line tables name inlined
    // frames without their module path: trim by source file as well.
    "@holmes-agent/src/heap/",
    "@agent/src/heap/",
    "@agent/src/unwind/",
    "holmes_agent::unwind::",
    "@/library/alloc/",
    "@/library/core/",
    "@/library/std/src/alloc.rs",
    "@/library/std/src/sys/alloc/",
];

/// Whether a frame is the sampler's or the allocator glue's (see [`ALLOCATOR_FRAMES`]).
pub(crate) fn is_sampler_frame(name: &str, file: &str) -> bool {
    ALLOCATOR_FRAMES.iter().any(|p| trimmed_by(name, file, p))
}

/// Whether `pattern` names the frame `name` in `file`: a prefix; written `*text`, any
/// name containing `text` (for trait impls such as `<u8 as alloc::vec::SpecFromElem>`);
/// written `=name`, exactly that name; written `@text`, any frame whose source file
/// contains `text`.
fn trimmed_by(name: &str, file: &str, pattern: &str) -> bool {
    if let Some(path) = pattern.strip_prefix('@') {
        file.contains(path)
    } else if let Some(inner) = pattern.strip_prefix('*') {
        name.contains(inner)
    } else if let Some(exact) = pattern.strip_prefix('=') {
        name == exact
    } else {
        name.starts_with(pattern)
    }
}

/// Go's heap profile sample types, in Go's order.
const SAMPLE_TYPES: [(&str, &str); 4] = [
    ("alloc_objects", "count"),
    ("alloc_space", "bytes"),
    ("inuse_objects", "count"),
    ("inuse_space", "bytes"),
];

/// The name given to samples that found the stack table full.
const OVERFLOW_FUNCTION: &str = "[holmes: stack table full]";

/// Why there is no heap profile.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeapError {
    /// Neither a sampling allocator nor jemalloc profiling is in use.
    #[error("no heap profiler: install holmes_agent::SamplingAllocator as the global allocator, or enable the jemalloc feature")]
    NotAvailable,
    /// jemalloc profiling is on, but its dump failed.
    #[cfg(feature = "jemalloc")]
    #[error("{0}")]
    Jemalloc(String),
}

/// Whether a heap capture can be attempted: a sampling allocator samples here, or the
/// jemalloc backend is compiled in (whether jemalloc profiling is on is known when the
/// capture asks it).
pub(crate) fn available() -> bool {
    cfg!(feature = "jemalloc") || heap::sampling_active()
}

/// A heap profile of this process.
pub(crate) fn capture(start_unix_nanos: u64) -> Result<ProfileBuilder, HeapError> {
    #[cfg(feature = "jemalloc")]
    if let Some(result) = super::jemalloc::capture() {
        return result.map_err(HeapError::Jemalloc);
    }
    let snapshot = heap::heap_snapshot().ok_or(HeapError::NotAvailable)?;
    Ok(build(&snapshot, start_unix_nanos))
}

/// A heap capture, ready to be delivered.
pub(crate) fn captured() -> Captured {
    let started = Instant::now();
    let started_unix = unix_nanos_now();
    let result = capture(started_unix);
    Captured {
        kind: ProfileKind::Heap,
        started_unix_nanos: started_unix,
        duration: started.elapsed(),
        labels: BTreeMap::new(),
        result: result.map_err(|e| e.to_string()),
        text: None,
    }
}

/// A weighted total as a profile value: rounded, never negative.
fn value(v: f64) -> i64 {
    if v > 0.0 {
        // `as` saturates.
        v.round() as i64
    } else {
        0
    }
}

fn build(snapshot: &HeapSnapshot, start_unix_nanos: u64) -> ProfileBuilder {
    let rate = snapshot.sample_every_bytes;
    let mut b = ProfileBuilder::new(
        &SAMPLE_TYPES,
        ("space", "bytes"),
        i64::try_from(rate).unwrap_or(i64::MAX),
    );
    b.set_time(start_unix_nanos, 0);
    b.add_comment(&format!(
        "holmes: heap profile from holmes_agent::SamplingAllocator, one allocation sampled per ~{rate} bytes; {} sampled blocks live",
        snapshot.live_samples
    ));
    if snapshot.untracked > 0 {
        b.add_comment(&format!(
            "holmes: {} samples counted in alloc_* only: the live-block table was full",
            snapshot.untracked
        ));
    }
    if snapshot.overflowed > 0 {
        b.add_comment(&format!(
            "holmes: {} samples charged to {OVERFLOW_FUNCTION}",
            snapshot.overflowed
        ));
    }
    if snapshot.lost > 0 {
        b.add_comment(&format!(
            "holmes: {} samples or frees lost (no tables, or freed from inside the sampler)",
            snapshot.lost
        ));
    }
    b.trim_leaf_frames(is_sampler_frame);
    for s in &snapshot.stacks {
        let values = [
            value(s.alloc_objects),
            value(s.alloc_space),
            value(s.inuse_objects),
            value(s.inuse_space),
        ];
        if values.iter().all(|v| *v == 0) {
            continue;
        }
        if s.frames.is_empty() {
            let overflow = Frame {
                function: OVERFLOW_FUNCTION.to_owned(),
                file: String::new(),
                line: 0,
            };
            b.add_symbolic_sample(&[overflow], &values, &[]);
        } else {
            b.add_sample(&s.frames, &values, &[]);
        }
    }
    b
}

#[cfg(test)]
mod tests;
