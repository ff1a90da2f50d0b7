//! A counting global allocator, so services that do not use jemalloc still get a heap
//! metric (`heap_bytes`, and `heap` as % of the memory limit).
//!
//! ```rust
//! #[global_allocator]
//! static GLOBAL: holmes_agent::CountingAllocator = holmes_agent::CountingAllocator::system();
//!
//! fn main() {
//!     let v = vec![0u8; 1 << 20];
//!     assert!(holmes_agent::allocated_bytes().unwrap() >= v.len());
//! }
//! ```
//!
//! Cost: one relaxed atomic add or subtract per allocation and free.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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

/// Bytes allocated and not yet freed through a [`CountingAllocator`], or `None` when
/// none is installed as the global allocator.
pub fn allocated_bytes() -> Option<usize> {
    INSTALLED
        .load(Ordering::Relaxed)
        .then(|| LIVE_BYTES.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
