//! Symbolization in this process, for local dumps: each module's debug info loaded with
//! `holmes-symbolize` on the first address that falls in it (the executable and shared
//! libraries mapped from their files, so only the pages lookups touch are read; the vDSO
//! from memory), and dropped again when no capture has used it for a while
//! ([`SYMBOLS_IDLE`]), giving the memory back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holmes_proto::Module;
use holmes_symbolize::{DebugInfo, Frame, Symbolizer};

use super::modules::Resolver;

/// How long loaded debug info is kept after the last capture that used it.
pub(crate) const SYMBOLS_IDLE: Duration = Duration::from_secs(30);
/// Offsets remembered per module.
const CACHED_OFFSETS: usize = 1 << 15;

/// The debug info loaded so far, by module.
#[derive(Debug, Default)]
pub(crate) struct LocalSymbols {
    /// `None`: the module's debug info could not be read (not tried again).
    modules: HashMap<Module, Option<Symbolizer>>,
    /// Frames tests give made-up addresses.
    #[cfg(test)]
    made_up: HashMap<usize, Arc<[Frame]>>,
}

impl LocalSymbols {
    /// The frames at `lookup` (an instruction address of this process: a pc, or a
    /// return address − 1), innermost first, never empty: a module's code without
    /// symbols is `name+0x<offset>`, an address in no module `0x<address>`.
    pub(crate) fn frames(&mut self, resolver: &mut Resolver, lookup: usize) -> Arc<[Frame]> {
        #[cfg(test)]
        if let Some(frames) = self.made_up.get(&lookup) {
            return Arc::clone(frames);
        }
        let Some((index, offset)) = resolver.find(lookup) else {
            return Arc::from([unknown(format!("{lookup:#x}"))]);
        };
        let Some(loaded) = resolver.map().get(index) else {
            return Arc::from([unknown(format!("{lookup:#x}"))]);
        };
        let symbolizer = self
            .modules
            .entry(loaded.module.clone())
            .or_insert_with(|| load(loaded).map(|i| Symbolizer::with_capacity(i, CACHED_OFFSETS)));
        let frames = symbolizer.as_mut().map(|s| s.frames(offset));
        match frames {
            Some(frames) if !frames.is_empty() => frames,
            _ => Arc::from([unknown(format!("{}+{offset:#x}", loaded.module.name))]),
        }
    }

    /// Makes `lookup` symbolize to `frames`.
    #[cfg(test)]
    pub(crate) fn insert_test_frames(&mut self, lookup: usize, frames: Vec<Frame>) {
        self.made_up.insert(lookup, frames.into());
    }

    /// Modules whose debug info is loaded.
    #[cfg(test)]
    pub(crate) fn loaded(&self) -> usize {
        self.modules.values().filter(|s| s.is_some()).count()
    }
}

fn unknown(function: String) -> Frame {
    Frame {
        function,
        file: String::new(),
        line: 0,
    }
}

/// A module's debug info, mapped from its file or (the vDSO) read from memory; logged
/// when it cannot be read, or when the file is no longer the loaded module (replaced on
/// disk: another build id).
fn load(loaded: &super::modules::LoadedModule) -> Option<DebugInfo> {
    let started = Instant::now();
    let info = match &loaded.path {
        // SAFETY: the file of a module the loader mapped into this process: truncating
        // it would crash the process by itself. (A file replaced on disk by another is a
        // new file, left alone; the build id check below catches it.)
        Some(path) => unsafe { DebugInfo::map_elf_file(path) },
        None => match loaded.image_bytes() {
            Some(image) => DebugInfo::from_elf_bytes(&image),
            None => return None,
        },
    };
    let wanted = loaded.module.build_id.as_str();
    let info = info.and_then(|info| match info.build_id() {
        Some(found) if !wanted.is_empty() && found != wanted => {
            Err(holmes_symbolize::LoadError::Elf {
                what: loaded.module.name.clone(),
                why: format!("its file has build id {found}, the loaded module {wanted}"),
            })
        }
        _ => Ok(info),
    });
    match info {
        Ok(info) => {
            tracing::debug!(target: "holmes", module = %loaded.module.name, took = ?started.elapsed(), bytes = info.section_bytes(), dwarf = info.has_dwarf(), "debug info loaded");
            Some(info)
        }
        Err(err) => {
            tracing::info!(target: "holmes", module = %loaded.module.name, error = %err, "cannot read debug info; its frames are shown as module+offset");
            None
        }
    }
}

/// The in-process symbolizer of a process's local dumps: loaded on first use, dropped
/// after [`SYMBOLS_IDLE`] without use.
#[derive(Debug, Default)]
pub(crate) struct LocalSymbolizer {
    state: Mutex<Option<(LocalSymbols, Instant)>>,
}

impl LocalSymbolizer {
    /// Runs `f` with the symbols (loading what it asks for), marking them used.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut LocalSymbols) -> R) -> R {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (symbols, used) =
            state.get_or_insert_with(|| (LocalSymbols::default(), Instant::now()));
        let out = f(symbols);
        *used = Instant::now();
        out
    }

    /// Drops the symbols if no capture used them for `idle`; never waits for a capture
    /// that holds them. Returns whether it dropped them.
    pub(crate) fn release_if_idle(&self, idle: Duration) -> bool {
        let Ok(mut state) = self.state.try_lock() else {
            return false;
        };
        if state.as_ref().is_none_or(|(_, used)| used.elapsed() < idle) {
            return false;
        }
        let dropped = state.take();
        drop(state);
        drop(dropped);
        give_back_freed_memory();
        tracing::debug!(target: "holmes", "debug info released after {idle:?} without captures");
        true
    }

    /// Whether symbols are loaded now.
    #[cfg(test)]
    pub(crate) fn is_loaded(&self) -> bool {
        self.state.try_lock().map_or(true, |s| s.is_some())
    }
}

/// Returns freed heap to the kernel: glibc keeps freed memory in its arenas, and the
/// debug info's many allocations would otherwise stay in the process's RSS.
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; with a non-glibc global allocator it
    // only trims glibc's own (then small) heap.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The function names at `lookup` in this process (a test binary), innermost first,
/// from one symbolizer shared by the tests.
#[cfg(test)]
pub(crate) fn function_names(lookup: usize) -> Vec<String> {
    static SHARED: Mutex<Option<LocalSymbols>> = Mutex::new(None);
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    let symbols = shared.get_or_insert_with(LocalSymbols::default);
    symbols
        .frames(&mut Resolver::new(), lookup)
        .iter()
        .map(|f| f.function.clone())
        .collect()
}

#[cfg(test)]
mod tests;
