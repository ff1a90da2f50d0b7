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
//! (libc, the vDSO) stay `name+0x<offset>`, unless a configured debuginfod server has it
//! ([`debuginfod`], `[symbolize]` in [`config`]).

pub mod cache;
pub mod config;
pub mod debuginfod;
pub mod upload;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holmes_proto::Module;
use holmes_storage::{Location, LocationId, ProfileContents, StackFrame, Store, StoreError};
use tokio::sync::{mpsc, watch};

use cache::{Loaded, LoadedBuilds};
use config::SymbolizeConfig;
use debuginfod::{Debuginfod, Found};

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
    /// Builds to load and sweep now (an upload completed here, or an agent of the build
    /// connected).
    sweeps: mpsc::Sender<(String, Completed)>,
    sweeps_rx: Mutex<Option<mpsc::Receiver<(String, Completed)>>>,
    /// Where debug info nobody uploaded is fetched from, if anywhere.
    debuginfod: Option<Debuginfod>,
    /// This collector, as the store's upload claims name it while it fetches.
    holder: String,
}

impl std::fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Symbolizer")
            .field("store", &self.store.backend())
            .finish_non_exhaustive()
    }
}

impl Symbolizer {
    /// A symbolizer over `store` keeping the debug info of `cached_builds` builds loaded,
    /// fetching what nobody uploaded from the debuginfod servers of `config` (if any).
    pub fn new(
        store: Arc<dyn Store>,
        cached_builds: usize,
        config: &SymbolizeConfig,
    ) -> Arc<Symbolizer> {
        let (sweeps, sweeps_rx) = mpsc::channel(64);
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        Arc::new(Symbolizer {
            store,
            complete: Mutex::default(),
            unreadable: Mutex::default(),
            loaded: LoadedBuilds::new(cached_builds),
            sweeps,
            sweeps_rx: Mutex::new(Some(sweeps_rx)),
            debuginfod: Debuginfod::new(config),
            holder: format!("debuginfod/{host}/{}", std::process::id()),
        })
    }

    /// Starts the background sweeps: every build with complete debug info at start and
    /// every [`SWEEP_INTERVAL`], and a build as soon as [`Symbolizer::completed`] says
    /// its upload completed; and, with debuginfod servers, the lookups of builds nobody
    /// uploaded. Ends when `closing` turns true.
    pub fn spawn(self: &Arc<Self>, closing: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        let rx = self
            .sweeps_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let lookups = self.debuginfod.as_ref().and_then(Debuginfod::take_queue);
        tokio::spawn(async move {
            let Some(mut rx) = rx else {
                return;
            };
            let sweeps = async {
                let mut closing = closing.clone();
                let mut tick = tokio::time::interval(SWEEP_INTERVAL);
                loop {
                    tokio::select! {
                        _ = async { let _ = closing.wait_for(|c| *c).await; } => return,
                        _ = tick.tick() => this.sweep_all().await,
                        Some((build, when)) = rx.recv() => {
                            this.prepare(&build, when).await;
                            this.sweep_logged(&build).await;
                        }
                    }
                }
            };
            let fetches = async {
                let Some(mut lookups) = lookups else {
                    return;
                };
                let mut closing = closing.clone();
                loop {
                    tokio::select! {
                        _ = async { let _ = closing.wait_for(|c| *c).await; } => return,
                        Some(build) = lookups.recv() => this.fetch_from_debuginfod(&build).await,
                    }
                }
            };
            tokio::join!(sweeps, fetches);
        })
    }

    /// Looks `build_id` up on the debuginfod servers, unless its debug info is complete
    /// or being uploaded (someone holds the store's claim); stores what a server has like
    /// a CI upload, then names the build's locations.
    async fn fetch_from_debuginfod(&self, build_id: &str) {
        let Some(debuginfod) = &self.debuginfod else {
            return;
        };
        match self.store.debuginfo_status(build_id).await {
            Ok(Some(status)) if status.complete() => {
                if !self.is_complete(build_id) {
                    self.completed(build_id, Completed::Earlier);
                }
                return;
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(build_id, error = %err, "cannot look up a build's debug info");
                return;
            }
        }
        let lease = debuginfod.claim_lease();
        match self
            .store
            .claim_debuginfo_upload(build_id, &self.holder, lease)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(
                    build_id,
                    "the build's debug info is being uploaded; debuginfod not asked"
                );
                return;
            }
            Err(err) => {
                tracing::warn!(build_id, error = %err, "cannot claim a build's debug info");
                return;
            }
        }
        let stored = match debuginfod.fetch(build_id).await {
            Found::Debuginfo { url, bytes } => self.store_fetched(build_id, &url, bytes).await,
            Found::Nothing => false,
        };
        if let Err(err) = self
            .store
            .release_debuginfo_upload(build_id, &self.holder)
            .await
        {
            tracing::warn!(build_id, error = %err, "cannot release a build's debug info claim");
        }
        if stored {
            self.completed(build_id, Completed::JustNow);
        }
    }

    /// Checks and stores a debug file `url` gave for `build_id`; whether it was stored.
    async fn store_fetched(&self, build_id: &str, url: &str, bytes: Vec<u8>) -> bool {
        let bytes = Arc::new(bytes);
        let (build, checked) = (build_id.to_owned(), Arc::clone(&bytes));
        let check = tokio::task::spawn_blocking(move || upload::check_debuginfo(&build, &checked))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        if let Err(reason) = check {
            tracing::warn!(build_id, url, reason, "debuginfod's answer is not usable");
            return false;
        }
        match upload::store_whole(self.store.as_ref(), build_id, &bytes).await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(build_id, error = %err, "cannot store debug info from debuginfod");
                false
            }
        }
    }

    /// Says that `build_id`'s debug info is complete in the store: its stored native
    /// locations are named (in the background), and new ones as they arrive. Debug info
    /// that was [`Completed::JustNow`] is loaded now, so that the next profile does not
    /// wait for the load; one complete [`Completed::Earlier`] only while fewer builds
    /// than the cache holds are loaded (agents of many builds connecting to a restarted
    /// collector load a few, not all of them one after the other).
    pub fn completed(&self, build_id: &str, when: Completed) {
        // A new upload: read it even if an earlier one did not load.
        self.unreadable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(build_id);
        self.complete
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(build_id.to_owned());
        if self.sweeps.try_send((build_id.to_owned(), when)).is_err() {
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

    /// Loads a build's debug info ahead of its profiles (see [`Symbolizer::completed`]),
    /// so that the next one (an incident's, typically) is named without waiting for the
    /// load; a failure is logged (the next profile tries again).
    async fn prepare(&self, build_id: &str, when: Completed) {
        if !self.is_complete(build_id) {
            return;
        }
        if when == Completed::Earlier && !self.loaded.has_room() {
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
    /// so that it reads back named); modules whose debug info the store lacks are looked
    /// up on debuginfod, if configured, in the background. Failures are logged: the
    /// profile is stored anyway.
    ///
    /// Returns the builds it could not name yet: pass them to
    /// [`Symbolizer::name_after_store`] once the profile is stored.
    pub async fn name_profile(&self, contents: &ProfileContents) -> Vec<String> {
        let mut by_build: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        let mut missing: HashSet<&str> = HashSet::new();
        for location in &contents.locations {
            if let Location::Native { module, offset } = location {
                if module.build_id.is_empty() || missing.contains(module.build_id.as_str()) {
                    continue;
                }
                if by_build.contains_key(module.build_id.as_str())
                    || self.is_complete(&module.build_id)
                {
                    by_build.entry(&module.build_id).or_default().push(*offset);
                } else {
                    missing.insert(&module.build_id);
                }
            }
        }
        if let Some(debuginfod) = &self.debuginfod {
            for build_id in &missing {
                debuginfod.wanted(build_id);
            }
        }
        for (build_id, offsets) in by_build {
            if let Err(err) = self.name_offsets(build_id, offsets, Named::Skip).await {
                tracing::warn!(build_id, error = %err, "cannot symbolize a profile's locations");
            }
        }
        missing.into_iter().map(str::to_owned).collect()
    }

    /// Names what a stored profile left unnamed because its build's debug info was not
    /// complete then ([`Symbolizer::name_profile`]'s answer), for each of `builds` whose
    /// debug info completed since: the build's sweep may have read the store before the
    /// profile was in, and later profiles of its stream need not carry those locations
    /// again (the agent's stream form).
    pub async fn name_after_store(&self, builds: &[String]) {
        for build_id in builds {
            if self.is_complete(build_id) {
                self.sweep_logged(build_id).await;
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

/// When a build's debug info became complete, as [`Symbolizer::completed`] is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completed {
    /// Its upload (agent, CI, debuginfod) completed just now.
    JustNow,
    /// It was complete already (found when an agent of the build connected).
    Earlier,
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
