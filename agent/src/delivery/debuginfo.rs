//! Uploads of the executable's debug info, when the collector asks for them
//! (`DebugInfoRequest`: a build id and the first byte it lacks).
//!
//! The upload is `holmes-symbolize`'s upload blob of the executable (its symbol tables
//! and DWARF sections, see `UploadBlob`), read straight from `/proc/self/exe` on a
//! `holmes-debuginfo` thread of its own — never a host thread, never the sender's — in
//! chunks of [`CHUNK_BYTES`], paced to the configured rate (`HOLMES_DEBUGINFO_RATE`).
//! Chunks are not sequenced (seq 0) and not spooled: the collector keeps what arrived and
//! asks again from where it stopped, so an upload ends with its stream and resumes on the
//! next one. At most one upload runs per stream; a new request replaces it. Memory stays
//! bounded: the blob is described by the file's section headers, and at most a few chunks
//! are in flight (one being read, one waiting here, two in the stream).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holmes_proto::{DebugInfoChunk, DebugInfoRequest};
use holmes_symbolize::UploadBlob;
use tokio::sync::mpsc;

/// Bytes per chunk (the protocol allows up to 1 MiB).
pub(crate) const CHUNK_BYTES: usize = 256 * 1024;
/// Longest sleep between two looks at whether the upload was called off.
const CANCEL_CHECK: Duration = Duration::from_millis(100);

/// What uploads need to know, fixed for the agent's life.
#[derive(Debug, Clone)]
pub(crate) struct UploadSettings {
    /// Whether uploads are on (`HOLMES_DEBUGINFO_UPLOAD`).
    pub(crate) enabled: bool,
    /// Bytes per second.
    pub(crate) rate: usize,
    /// The executable's build id; requests for anything else are ignored.
    pub(crate) build_id: Option<String>,
    /// The executable's file.
    pub(crate) path: PathBuf,
}

/// The uploads of one stream: started by requests, their chunks read by the stream.
#[derive(Debug)]
pub(crate) struct Uploads {
    settings: UploadSettings,
    chunks: mpsc::Sender<DebugInfoChunk>,
    /// The running upload's "stop" flag.
    running: Mutex<Option<Arc<AtomicBool>>>,
}

impl Uploads {
    /// Uploads for a stream; their chunks arrive on the returned receiver.
    pub(crate) fn new(settings: UploadSettings) -> (Uploads, mpsc::Receiver<DebugInfoChunk>) {
        let (chunks, received) = mpsc::channel(1);
        (
            Uploads {
                settings,
                chunks,
                running: Mutex::new(None),
            },
            received,
        )
    }

    /// Starts uploading what `request` asks for, if it is this executable's and uploads
    /// are on; otherwise logs why not.
    pub(crate) fn request(&self, request: &DebugInfoRequest) {
        let s = &self.settings;
        if !s.enabled {
            tracing::info!(target: "holmes", build_id = %request.build_id, "the collector asks for debug info, but uploads are off (HOLMES_DEBUGINFO_UPLOAD)");
            return;
        }
        if s.build_id.as_deref() != Some(request.build_id.as_str()) {
            tracing::info!(target: "holmes", build_id = %request.build_id, own = ?s.build_id, "ignoring a request for debug info of a build id this process does not have");
            return;
        }
        let stop = Arc::new(AtomicBool::new(false));
        if let Some(previous) = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(Arc::clone(&stop))
        {
            previous.store(true, Ordering::Relaxed);
        }
        let job = Job {
            path: s.path.clone(),
            build_id: request.build_id.clone(),
            offset: request.offset,
            rate: s.rate.max(1),
            chunks: self.chunks.clone(),
            stop,
        };
        let spawned = std::thread::Builder::new()
            .name("holmes-debuginfo".to_owned())
            .spawn(move || {
                crate::capture::cpu::leave_this_thread_out();
                job.run();
            });
        if let Err(err) = spawned {
            tracing::warn!(target: "holmes", error = %err, "cannot start the debug info upload thread");
        }
    }
}

impl Drop for Uploads {
    fn drop(&mut self) {
        if let Some(running) = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            running.store(true, Ordering::Relaxed);
        }
    }
}

/// One upload, on its own thread.
struct Job {
    path: PathBuf,
    build_id: String,
    offset: u64,
    rate: usize,
    chunks: mpsc::Sender<DebugInfoChunk>,
    stop: Arc<AtomicBool>,
}

impl Job {
    fn run(self) {
        let started = Instant::now();
        let blob = match UploadBlob::from_elf_file(&self.path) {
            Ok(blob) => blob,
            Err(err) => {
                tracing::warn!(target: "holmes", build_id = %self.build_id, error = %err, "cannot read the executable's debug info for the collector");
                return;
            }
        };
        if blob.build_id() != Some(self.build_id.as_str()) {
            tracing::warn!(target: "holmes", build_id = %self.build_id, file = ?blob.build_id(), path = %self.path.display(), "the executable's file has another build id than the running process; not uploading it");
            return;
        }
        let total = blob.len();
        let mut at = self.offset.min(total);
        tracing::info!(target: "holmes", build_id = %self.build_id, from = at, total, rate = self.rate, "uploading debug info to the collector");
        let mut sent = 0u64;
        loop {
            let want = usize::try_from(total - at)
                .unwrap_or(usize::MAX)
                .min(CHUNK_BYTES);
            let mut data = vec![0u8; want];
            let n = match blob.read_at(at, &mut data) {
                Ok(n) => n,
                Err(err) => {
                    tracing::warn!(target: "holmes", build_id = %self.build_id, at, error = %err, "debug info upload stopped: cannot read the executable");
                    return;
                }
            };
            data.truncate(n);
            let chunk = DebugInfoChunk {
                build_id: self.build_id.clone(),
                offset: at,
                total_bytes: total,
                data,
            };
            // Waits while the stream has enough in flight; fails once the stream ended.
            if self.stopped() || self.chunks.blocking_send(chunk).is_err() {
                tracing::info!(target: "holmes", build_id = %self.build_id, at, total, "debug info upload interrupted; the collector asks again from where it stopped");
                return;
            }
            at += n as u64;
            sent += n as u64;
            if at >= total {
                break;
            }
            if !self.pace(started, sent) {
                return;
            }
        }
        tracing::info!(target: "holmes", build_id = %self.build_id, bytes = sent, took = ?started.elapsed(), "debug info uploaded");
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.chunks.is_closed()
    }

    /// Sleeps until `sent` bytes are due at the rate; false if called off meanwhile.
    fn pace(&self, started: Instant, sent: u64) -> bool {
        let due = started + Duration::from_secs_f64(sent as f64 / self.rate as f64);
        loop {
            if self.stopped() {
                return false;
            }
            let left = due.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(CANCEL_CHECK));
        }
    }
}

#[cfg(test)]
mod tests;
