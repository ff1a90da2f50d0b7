//! The debug info of the most recently used builds, loaded (an LRU of a few builds: a
//! Rust service's debug info takes tens of megabytes once read).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use holmes_symbolize::{DebugInfo, Frame, Symbolizer};

/// Offsets named per build that are remembered (beyond, they may be named again: the
/// store keeps one set of symbols per location whatever happens).
const NAMED_REMEMBERED: usize = 1 << 20;

/// One build's debug info and the offsets named from it by this collector.
pub struct Loaded {
    symbolizer: Mutex<Symbolizer>,
    named: Mutex<HashSet<u64>>,
}

impl Loaded {
    /// `offsets` without those named before, each once; remembers them as named.
    pub(crate) fn not_named_yet(&self, offsets: &[u64]) -> Vec<u64> {
        let mut named = self.named.lock().unwrap_or_else(|p| p.into_inner());
        if named.len() > NAMED_REMEMBERED {
            named.clear();
        }
        offsets
            .iter()
            .copied()
            .filter(|o| named.insert(*o))
            .collect()
    }

    /// The inlined frames at `offset`, innermost first.
    pub(crate) fn frames(&self, offset: u64) -> Arc<[Frame]> {
        self.symbolizer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .frames(offset)
    }
}

/// Loaded builds, most recently used last.
pub(crate) struct LoadedBuilds {
    capacity: usize,
    builds: Mutex<Vec<(String, Arc<Loaded>)>>,
    loading: tokio::sync::Mutex<()>,
}

impl LoadedBuilds {
    pub(crate) fn new(capacity: usize) -> Self {
        LoadedBuilds {
            capacity: capacity.max(1),
            builds: Mutex::default(),
            loading: tokio::sync::Mutex::new(()),
        }
    }

    /// The build's debug info if loaded (and now the most recently used).
    pub(crate) fn get(&self, build_id: &str) -> Option<Arc<Loaded>> {
        let mut builds = self.builds.lock().unwrap_or_else(|p| p.into_inner());
        let at = builds.iter().position(|(b, _)| b == build_id)?;
        let entry = builds.remove(at);
        let loaded = Arc::clone(&entry.1);
        builds.push(entry);
        Some(loaded)
    }

    /// Whether fewer builds than it keeps are loaded.
    pub(crate) fn has_room(&self) -> bool {
        self.builds.lock().unwrap_or_else(|p| p.into_inner()).len() < self.capacity
    }

    /// Held while a build loads, so that one load runs at a time.
    pub(crate) async fn loading(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.loading.lock().await
    }

    /// Keeps `info` as the build's, dropping the least recently used beyond capacity.
    pub(crate) fn insert(&self, build_id: &str, info: DebugInfo) -> Arc<Loaded> {
        let loaded = Arc::new(Loaded {
            symbolizer: Mutex::new(Symbolizer::new(info)),
            named: Mutex::default(),
        });
        let mut builds = self.builds.lock().unwrap_or_else(|p| p.into_inner());
        builds.retain(|(b, _)| b != build_id);
        builds.push((build_id.to_owned(), Arc::clone(&loaded)));
        while builds.len() > self.capacity {
            let (dropped, _) = builds.remove(0);
            tracing::debug!(build_id = %dropped, "debug info dropped from the cache");
        }
        loaded
    }
}
