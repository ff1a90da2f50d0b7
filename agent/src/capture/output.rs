//! What becomes of a finished capture:
//!
//! - in the dump folder (the local mode, or a folder set beside a collector): gzip pprof,
//!   symbolized in this process (the debug info is loaded on the first such capture and
//!   given back when idle), as `<kind>.<event-id>.<time>.pb.gz`, plus a readable `.txt`
//!   for thread and task dumps;
//! - to the collector: the agent's own `NativeProfile` (module + offset, no debug info
//!   loaded), in chunks queued together in the outbox (and the spool).
//!
//! A profile over [`MAX_PROFILE_BYTES`] in either form is reported as a failed capture.

use holmes_proto::{AgentBody, ProfileChunk, ProfileFormat, MAX_CHUNK_BYTES};
use holmes_symbolize::Frame;

use super::symbolize::local::{LocalSymbolizer, LocalSymbols};
use super::symbolize::modules::Resolver;
use super::{threads, Captured, Text, MAX_PROFILE_BYTES};
use crate::config::AgentConfig;
use crate::delivery::dump::DumpFolder;
use crate::delivery::Delivery;
use crate::event_id;

/// Writes a capture to `dump` and queues it for the collector. Returns the
/// size of the profile made (the collector's form when there is a collector, else the
/// dump's), or why none was made.
pub(super) fn deliver(
    cfg: &AgentConfig,
    dump: Option<&DumpFolder>,
    delivery: &Delivery,
    symbols: &LocalSymbolizer,
    event_id: &str,
    c: &Captured,
) -> Result<usize, String> {
    let profile_id = event_id::new();
    let capped = |bytes: Vec<u8>| -> Result<Vec<u8>, String> {
        if bytes.len() > MAX_PROFILE_BYTES {
            Err(format!(
                "the profile is {} bytes, over the {MAX_PROFILE_BYTES}-byte cap",
                bytes.len()
            ))
        } else {
            Ok(bytes)
        }
    };
    if let Err(err) = &c.result {
        tracing::warn!(target: "holmes", event_id, kind = c.kind.as_str(), error = %err, "capture failed");
    }
    let mut made = c.result.as_ref().map(|_| 0).map_err(Clone::clone);
    if let Some(dump) = dump {
        let (pprof, text) = symbols.with(|symbols| {
            let pprof = c
                .result
                .as_ref()
                .map(|p| p.encode_gzip(symbols))
                .map_err(Clone::clone)
                .and_then(capped);
            let text = c.text.as_ref().map(|t| render(t, symbols));
            (pprof, text)
        });
        let stem = format!(
            "{}.{}.{}",
            c.kind.as_str(),
            event_id,
            compact_time(c.started_unix_nanos)
        );
        match &pprof {
            Ok(bytes) => match dump.write_file(&format!("{stem}.pb.gz"), bytes) {
                Ok(path) => {
                    tracing::info!(target: "holmes", event_id, kind = c.kind.as_str(), bytes = bytes.len(), labels = ?c.labels, path = %path.display(), "profile written")
                }
                Err(err) => {
                    tracing::warn!(target: "holmes", error = %err, "cannot write the profile")
                }
            },
            Err(err) if c.result.is_ok() => {
                tracing::warn!(target: "holmes", event_id, kind = c.kind.as_str(), error = %err, "profile not written")
            }
            Err(_) => {}
        }
        if let Some(text) = &text {
            if let Err(err) = dump.write_file(&format!("{stem}.txt"), text.as_bytes()) {
                tracing::warn!(target: "holmes", error = %err, "cannot write the readable dump");
            }
        }
        made = pprof.map(|bytes| bytes.len());
    }
    if cfg.collector.is_none() {
        return made;
    }
    let native = c
        .result
        .as_ref()
        .map(|p| p.encode_native().encode())
        .map_err(Clone::clone)
        .and_then(capped);
    let (data, error) = match native {
        Ok(bytes) => {
            tracing::info!(target: "holmes", event_id, kind = c.kind.as_str(), bytes = bytes.len(), labels = ?c.labels, "profile queued for the collector");
            made = Ok(bytes.len());
            (bytes, None)
        }
        Err(err) => {
            made = Err(err.clone());
            (Vec::new(), Some(err))
        }
    };
    let total = data.len();
    let pieces: Vec<&[u8]> = if data.is_empty() {
        vec![&[][..]]
    } else {
        data.chunks(MAX_CHUNK_BYTES).collect()
    };
    let count = u32::try_from(pieces.len()).unwrap_or(u32::MAX);
    // Queued together: their sequence numbers are consecutive, so the collector sees a
    // profile's chunks together, and a full outbox drops the whole profile or none of it.
    let mut chunks = Vec::with_capacity(pieces.len());
    for (i, piece) in pieces.into_iter().enumerate() {
        chunks.push(AgentBody::ProfileChunk(ProfileChunk {
            profile_id: profile_id.clone(),
            event_id: event_id.to_owned(),
            kind: c.kind,
            chunk_index: u32::try_from(i).unwrap_or(u32::MAX),
            chunk_count: count,
            total_bytes: total as u64,
            data: piece.to_vec(),
            started_unix_nanos: c.started_unix_nanos,
            duration: c.duration,
            error: error.clone(),
            labels: c.labels.clone(),
            format: ProfileFormat::Native,
        }));
    }
    delivery.enqueue_group(chunks);
    made
}

/// The readable dump of a capture.
fn render(text: &Text, symbols: &mut LocalSymbols) -> String {
    match text {
        Text::Ready(text) => text.clone(),
        Text::Threads(stacks) => {
            let mut resolver = Resolver::new();
            threads::render_text(stacks, |addr, leaf| {
                let lookup = super::symbolize::lookup_address(addr, leaf);
                symbols
                    .frames(&mut resolver, lookup)
                    .iter()
                    .map(describe)
                    .collect()
            })
        }
    }
}

fn describe(f: &Frame) -> String {
    if f.file.is_empty() {
        f.function.clone()
    } else {
        format!("{} ({}:{})", f.function, f.file, f.line)
    }
}

/// `20261126T031200.123Z`: sortable, and free of characters file systems dislike.
fn compact_time(unix_nanos: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(unix_nanos);
    humantime::format_rfc3339_millis(t)
        .to_string()
        .replace(['-', ':'], "")
}

#[cfg(test)]
mod tests;
