//! The tokio runtimes registered with the agent (`.tokio_runtime()`,
//! `register_runtime()`): their alive tasks are the `tasks` metric, and a `tasks` capture
//! dumps them.

use std::sync::Mutex;

use tokio::runtime::Handle;

/// The registered runtimes; host threads add to them while the agent reads them.
#[derive(Debug, Default)]
pub(crate) struct Runtimes {
    handles: Mutex<Vec<Handle>>,
}

impl Runtimes {
    /// The runtimes registered with the builder.
    pub(crate) fn new(handles: Vec<Handle>) -> Self {
        Runtimes {
            handles: Mutex::new(handles),
        }
    }

    /// Adds a runtime.
    pub(crate) fn register(&self, handle: Handle) {
        self.lock().push(handle);
    }

    /// The runtimes registered so far.
    pub(crate) fn handles(&self) -> Vec<Handle> {
        self.lock().clone()
    }

    /// Alive tasks of all of them; `None` when none is registered.
    pub(crate) fn alive_tasks(&self) -> Option<f64> {
        let handles = self.lock();
        if handles.is_empty() {
            return None;
        }
        Some(
            handles
                .iter()
                .map(|h| h.metrics().num_alive_tasks())
                .sum::<usize>() as f64,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Handle>> {
        // Nothing panics while it is held; a poisoned lock is taken over.
        self.handles.lock().unwrap_or_else(|p| p.into_inner())
    }
}
