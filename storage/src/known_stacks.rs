//! Stack ids a store has written: the cache behind [`Store::has_stack`](crate::Store::has_stack).
//!
//! A fleet repeats the same stacks in every profile. Remembering which ones are stored
//! lets the ingest skip copying their frames and the store skip writing them again, so
//! each distinct stack is written about once per collector run.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::Stack;

/// Stack ids remembered as written; past this many the memory starts over (about 16 MiB).
pub const MAX_KNOWN_STACKS: usize = 1 << 20;

/// Stack ids written by this store, bounded by [`MAX_KNOWN_STACKS`].
#[derive(Debug, Default)]
pub(crate) struct KnownStacks(Mutex<HashSet<u64>>);

impl KnownStacks {
    /// Whether `id` was written.
    pub(crate) fn contains(&self, id: u64) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&id)
    }

    /// The ids of `stacks` not known to be written.
    pub(crate) fn unknown(&self, stacks: &[Stack]) -> Vec<u64> {
        let known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        stacks
            .iter()
            .map(|s| s.stack_id)
            .filter(|id| !known.contains(id))
            .collect()
    }

    /// Remembers `ids` as written (call only once they are durable).
    pub(crate) fn remember(&self, ids: impl IntoIterator<Item = u64>) {
        let mut known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= MAX_KNOWN_STACKS {
            known.clear();
        }
        known.extend(ids);
    }
}
