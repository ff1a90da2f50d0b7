//! Symbolization: native locations (module build id + offset, as agents send them) named
//! from their module's debug info, once per build, on the collector.
//!
//! The debug info comes from the store (chunked uploads by build id, see
//! `holmes_storage::DebugInfoChunkRecord`): an agent's upload assembled by
//! [`crate::ingest::debuginfo`], or CI's `PUT /api/v1/debuginfo/{build_id}` ([`upload`],
//! `holmes debuginfo upload`). Once a build's debug info is complete, [`Symbolizer`]
//! names every native location of that build: those already stored (a sweep when the
//! upload completes, and periodically for uploads another collector completed) and new
//! ones as profiles arrive (before the profile is stored, so that it reads back named).
//! Names come from `holmes-symbolize` (inlined frames, full paths); what is written is
//! the location's symbols (`Store::insert_symbols`). Loaded debug info is kept for the
//! few most recently used builds ([`cache`]). Modules whose debug info nobody uploaded
//! (libc, the vDSO) stay `name+0x<offset>`.

pub mod cache;
pub mod upload;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holmes_proto::Module;
use holmes_storage::{Location, LocationId, ProfileContents, StackFrame, Store, StoreError};
use tokio::sync::{mpsc, watch};

use cache::{Loaded, LoadedBuilds};

/// Builds whose loaded debug info is kept (least recently used ones are dropped).
pub const DEFAULT_CACHED_BUILDS: usize = 4;
/// How often the builds with complete debug info are looked up again and swept for
/// native locations without symbols (uploads another collector completed).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Symbols written per store call.
const SYMBOLS_PER_WRITE: usize = 2_000;

/// Why a build could not be symbolized.
#[derive(Debug, thiserror::Error)]
pub enum SymbolizeError {
    /// Reading the debug info or writing symbols failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored upload is not debug info `holmes-symbolize` can read.
    #[error("the debug info of build {build_id} cannot be read: {reason}")]
    Unreadable {
        /// The build.
        build_id: String,
        /// Why.
        reason: String,
    },
    /// A blocking task failed.
    #[error("symbolizing build {build_id} failed: {reason}")]
    Task {
        /// The build.
        build_id: String,
        /// Why.
        reason: String,
    },
}

/// Names native locations of builds whose debug info the store holds.
pub struct Symbolizer {
    store: Arc<dyn Store>,
    /// Builds whose debug info is complete, as last known.
    complete: Mutex<HashSet<String>>,
    /// Builds whose stored debug info does not load: not read again by this process.
    unreadable: Mutex<HashSet<String>>,
    loaded: LoadedBuilds,
    /// Builds to sweep now (an upload completed here).
    sweeps: mpsc::Sender<String>,
    sweeps_rx: Mutex<Option<mpsc::Receiver<String>>>,
}

impl std::fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Symbolizer")
            .field("store", &self.store.backend())
            .finish_non_exhaustive()
    }
}

impl Symbolizer {
    /// A symbolizer over `store` keeping the debug info of `cached_builds` builds loaded.
    pub fn new(store: Arc<dyn Store>, cached_builds: usize) -> Arc<Symbolizer> {
        let (sweeps, sweeps_rx) = mpsc::channel(64);
        Arc::new(Symbolizer {
            store,
            complete: Mutex::default(),
            unreadable: Mutex::default(),
            loaded: LoadedBuilds::new(cached_builds),
            sweeps,
            sweeps_rx: Mutex::new(Some(sweeps_rx)),
        })
    }

    /// Starts the background sweeps: every build with complete debug info at start and
    /// every [`SWEEP_INTERVAL`], and a build as soon as [`Symbolizer::completed`] says
    /// its upload completed. Ends when `closing` turns true.
    pub fn spawn(
        self: &Arc<Self>,
        mut closing: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        let rx = self
            .sweeps_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        tokio::spawn(async move {
            let Some(mut rx) = rx else {
                return;
            };
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                tokio::select! {
                    _ = async { let _ = closing.wait_for(|c| *c).await; } => return,
                    _ = tick.tick() => this.sweep_all().await,
                    Some(build) = rx.recv() => {
                        this.prepare(&build).await;
                        this.sweep_logged(&build).await;
                    }
                }
            }
        })
    }

    /// Says that `build_id`'s debug info is complete in the store: it is loaded now and
    /// its stored native locations named (in the background), and new ones as they
    /// arrive, without waiting for the load.
    pub fn completed(&self, build_id: &str) {
        // A new upload: read it even if an earlier one did not load.
        self.unreadable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(build_id);
        self.complete
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(build_id.to_owned());
        if self.sweeps.try_send(build_id.to_owned()).is_err() {
            tracing::debug!(
                build_id,
                "sweep queue full; the periodic sweep names the build"
            );
        }
    }

    fn is_complete(&self, build_id: &str) -> bool {
        self.complete
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(build_id)
            && !self
                .unreadable
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(build_id)
    }

    /// Loads a build whose upload just completed, so that the next profile of the
    /// build (an incident's, typically) is named without waiting for its debug info to
    /// load; a failure is logged (the next profile tries again).
    async fn prepare(&self, build_id: &str) {
        if !self.is_complete(build_id) {
            return;
        }
        if let Err(err) = self.load_checked(build_id).await {
            tracing::warn!(build_id, error = %err, "cannot load a build's debug info");
        }
    }

    async fn sweep_all(&self) {
        let builds = match self.store.debuginfo_builds().await {
            Ok(builds) => builds,
            Err(err) => {
                tracing::warn!(error = %err, "cannot list the builds with debug info");
                return;
            }
        };
        {
            let mut complete = self.complete.lock().unwrap_or_else(|p| p.into_inner());
            complete.extend(builds.iter().cloned());
        }
        for build in builds {
            self.sweep_logged(&build).await;
        }
    }

    async fn sweep_logged(&self, build_id: &str) {
        let started = Instant::now();
        match self.sweep(build_id).await {
            Ok(0) => {}
            Ok(named) => {
                tracing::info!(build_id, locations = named, took = ?started.elapsed(), "native locations symbolized");
            }
            Err(err) => tracing::warn!(build_id, error = %err, "cannot symbolize a build"),
        }
    }

    /// Names the stored native locations of `build_id` that have no symbols yet;
    /// returns how many got symbols.
    pub async fn sweep(&self, build_id: &str) -> Result<usize, SymbolizeError> {
        if !self.is_complete(build_id) {
            return Ok(0);
        }
        let offsets = self.store.unsymbolized_offsets(build_id).await?;
        if offsets.is_empty() {
            return Ok(0);
        }
        self.name_offsets(build_id, offsets, Named::Again).await
    }

    /// Names the native locations of `contents` whose module's debug info is complete
    /// and that this collector has not named yet (called before the profile is stored,
    /// so that it reads back named). Failures are logged: the profile is stored anyway.
    pub async fn name_profile(&self, contents: &ProfileContents) {
        let mut by_build: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for location in &contents.locations {
            if let Location::Native { module, offset } = location {
                if !module.build_id.is_empty() && self.is_complete(&module.build_id) {
                    by_build.entry(&module.build_id).or_default().push(*offset);
                }
            }
        }
        for (build_id, offsets) in by_build {
            if let Err(err) = self.name_offsets(build_id, offsets, Named::Skip).await {
                tracing::warn!(build_id, error = %err, "cannot symbolize a profile's locations");
            }
        }
    }

    /// Names `offsets` of `build_id` and writes their symbols; returns how many got
    /// symbols.
    async fn name_offsets(
        &self,
        build_id: &str,
        offsets: Vec<u64>,
        named: Named,
    ) -> Result<usize, SymbolizeError> {
        let loaded = self.load_checked(build_id).await?;
        let build = build_id.to_owned();
        let symbols = tokio::task::spawn_blocking(move || resolve(&loaded, &build, offsets, named))
            .await
            .map_err(|e| SymbolizeError::Task {
                build_id: build_id.to_owned(),
                reason: e.to_string(),
            })?;
        for batch in symbols.chunks(SYMBOLS_PER_WRITE) {
            self.store.insert_symbols(batch).await?;
        }
        Ok(symbols.len())
    }

    /// [`Symbolizer::load`], remembering a build whose debug info does not load.
    async fn load_checked(&self, build_id: &str) -> Result<Arc<Loaded>, SymbolizeError> {
        let loaded = self.load(build_id).await;
        if let Err(SymbolizeError::Unreadable { .. }) = &loaded {
            self.unreadable
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(build_id.to_owned());
        }
        loaded
    }

    /// The build's debug info, loaded from the store unless it is cached.
    async fn load(&self, build_id: &str) -> Result<Arc<Loaded>, SymbolizeError> {
        if let Some(loaded) = self.loaded.get(build_id) {
            return Ok(loaded);
        }
        // One load at a time: profiles of a build arriving together wait for one load.
        let _loading = self.loaded.loading().await;
        if let Some(loaded) = self.loaded.get(build_id) {
            return Ok(loaded);
        }
        let started = Instant::now();
        let unreadable = |reason: String| SymbolizeError::Unreadable {
            build_id: build_id.to_owned(),
            reason,
        };
        let bytes = self
            .store
            .read_debuginfo(build_id)
            .await?
            .ok_or_else(|| unreadable("no complete upload is stored".to_owned()))?;
        let size = bytes.len();
        let info = tokio::task::spawn_blocking(move || {
            holmes_symbolize::DebugInfo::from_upload_or_elf(&bytes)
        })
        .await
        .map_err(|e| SymbolizeError::Task {
            build_id: build_id.to_owned(),
            reason: e.to_string(),
        })?
        .map_err(|e| unreadable(e.to_string()))?;
        if info.build_id().is_some_and(|id| id != build_id) {
            return Err(unreadable(format!(
                "the upload is of build {}",
                info.build_id().unwrap_or_default()
            )));
        }
        tracing::info!(build_id, bytes = size, took = ?started.elapsed(), "debug info loaded");
        Ok(self.loaded.insert(build_id, info))
    }
}

/// Whether offsets this collector named before are named again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Named {
    /// Left out: a new profile's locations, most of them named already.
    Skip,
    /// Named again: the store says they have no symbols (a write that failed).
    Again,
}

/// The symbols of `offsets` of a build (offsets its debug info knows nothing of get
/// none).
fn resolve(
    loaded: &Loaded,
    build_id: &str,
    offsets: Vec<u64>,
    named: Named,
) -> Vec<(LocationId, Vec<StackFrame>)> {
    let module = Module {
        name: String::new(),
        build_id: build_id.to_owned(),
    };
    let fresh = loaded.not_named_yet(&offsets);
    let offsets = match named {
        Named::Skip => fresh,
        Named::Again => offsets,
    };
    let mut out = Vec::new();
    for offset in offsets {
        let frames = loaded.frames(offset);
        if frames.is_empty() {
            continue;
        }
        let id = Location::Native {
            module: module.clone(),
            offset,
        }
        .id();
        out.push((
            id,
            frames
                .iter()
                .map(|f| StackFrame::new(f.function.clone(), f.file.clone(), f.line))
                .collect(),
        ));
    }
    out
}
