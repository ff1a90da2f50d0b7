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
//! - [`counting`]: the byte count both allocators keep (one relaxed atomic add or
//!   subtract per allocation and free).
//! - [`sampling`]: the sampling allocator, its per-thread countdown and the stack walk
//!   of a sampled allocation.
//! - [`tables`]: the sampler's bookkeeping, allocated at the first sample: distinct
//!   stacks, the live sampled blocks and the filter that spares most frees the lock.
//! - [`snapshot`]: a copy of the tables, which a heap capture turns into a profile.

mod counting;
mod sampling;
mod snapshot;
mod tables;
#[cfg(test)]
pub(crate) mod tests;

pub use counting::{allocated_bytes, CountingAllocator};
pub(crate) use sampling::sampling_active;
pub use sampling::SamplingAllocator;
pub(crate) use snapshot::{heap_snapshot, HeapSnapshot};
