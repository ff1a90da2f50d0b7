//! A module's debug info with a bounded memory of the offsets it resolved.

use std::collections::HashMap;
use std::sync::Arc;

use crate::debuginfo::{DebugInfo, Frame};

/// Offsets remembered by default before the cache starts over.
pub const DEFAULT_CACHED_OFFSETS: usize = 1 << 16;

/// [`DebugInfo`] plus a cache of resolved offsets, at most `capacity` of them (when full,
/// it is emptied and fills again: hot offsets come back at once, and memory stays
/// bounded without bookkeeping per hit).
#[derive(Debug)]
pub struct Symbolizer {
    info: DebugInfo,
    cache: HashMap<u64, Arc<[Frame]>>,
    capacity: usize,
}

impl Symbolizer {
    /// A symbolizer remembering up to [`DEFAULT_CACHED_OFFSETS`] offsets.
    pub fn new(info: DebugInfo) -> Symbolizer {
        Symbolizer::with_capacity(info, DEFAULT_CACHED_OFFSETS)
    }

    /// A symbolizer remembering up to `capacity` offsets (at least one).
    pub fn with_capacity(info: DebugInfo, capacity: usize) -> Symbolizer {
        Symbolizer {
            info,
            cache: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// The debug info.
    pub fn debug_info(&self) -> &DebugInfo {
        &self.info
    }

    /// [`DebugInfo::frames`], remembered.
    pub fn frames(&mut self, offset: u64) -> Arc<[Frame]> {
        if let Some(hit) = self.cache.get(&offset) {
            return Arc::clone(hit);
        }
        if self.cache.len() >= self.capacity {
            self.cache.clear();
        }
        let frames: Arc<[Frame]> = self.info.frames(offset).into();
        self.cache.insert(offset, Arc::clone(&frames));
        frames
    }

    /// Offsets remembered now.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}
