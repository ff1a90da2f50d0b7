//! Debug info uploads of modules, stored in chunks by GNU build id, so that every
//! collector of a deployment can symbolize the native locations of that build.
//!
//! An upload is `holmes-symbolize`'s upload blob. It arrives in pieces — from an agent,
//! in chunks, possibly over several streams and from several processes of the build,
//! resuming where the store stopped — or whole from CI (`holmes debuginfo upload`). The
//! store keeps each source's bytes apart ([`DebugInfoSource`]): the agents of one build
//! all send the same blob (read from the same file), a CI upload may be another one (the
//! sections of a separate debug file), so their chunks never mix. A build's debug info
//! is complete once one source holds every byte it announced.
//!
//! At most one upload of a build runs at a time across the deployment: a collector
//! asks an agent for it only while it holds the build's upload claim
//! ([`crate::Store::claim_debuginfo_upload`]), which lapses when not refreshed.

/// Where an upload comes from; each source's chunks are kept apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DebugInfoSource {
    /// An agent of the build, in chunks (any agent of the build continues it).
    Agent,
    /// `PUT /api/v1/debuginfo/{build_id}` (CI), whole.
    Upload,
}

impl DebugInfoSource {
    /// The stored name: `agent`, `upload`.
    pub fn as_str(self) -> &'static str {
        match self {
            DebugInfoSource::Agent => "agent",
            DebugInfoSource::Upload => "upload",
        }
    }

    /// The source a stored name stands for.
    pub fn from_name(name: &str) -> Option<DebugInfoSource> {
        match name {
            "agent" => Some(DebugInfoSource::Agent),
            "upload" => Some(DebugInfoSource::Upload),
            _ => None,
        }
    }
}

/// A piece of a build's debug info upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugInfoChunkRecord {
    /// The module's GNU build id (lowercase hex).
    pub build_id: String,
    /// Who sends it.
    pub source: DebugInfoSource,
    /// Where `data` starts in the upload.
    pub offset: u64,
    /// Size of the whole upload.
    pub total_bytes: u64,
    /// The bytes.
    pub data: Vec<u8>,
}

/// How much of a build's debug info the store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebugInfoStatus {
    /// The source whose upload this is (a complete one if there is one).
    pub source: DebugInfoSource,
    /// Bytes held from the start of the upload on, without a gap.
    pub stored_bytes: u64,
    /// Size of the whole upload.
    pub total_bytes: u64,
}

impl DebugInfoStatus {
    /// Whether every byte of the upload is stored.
    pub fn complete(&self) -> bool {
        self.total_bytes > 0 && self.stored_bytes >= self.total_bytes
    }
}

/// One stored chunk, without its bytes: what a status is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ChunkMeta {
    pub(crate) source: DebugInfoSource,
    pub(crate) total_bytes: u64,
    pub(crate) offset: u64,
    pub(crate) len: u64,
}

/// The status of a build from its stored chunks (in any order, duplicates allowed): of
/// each source and size, the bytes held from 0 without a gap; a complete upload wins
/// (a CI upload before an agent's), else the one furthest along of the agents'.
pub(crate) fn status_of(mut chunks: Vec<ChunkMeta>) -> Option<DebugInfoStatus> {
    chunks.sort();
    let mut best: Option<DebugInfoStatus> = None;
    let mut i = 0;
    while i < chunks.len() {
        let (source, total_bytes) = (chunks[i].source, chunks[i].total_bytes);
        let mut stored = 0u64;
        while i < chunks.len() && chunks[i].source == source && chunks[i].total_bytes == total_bytes
        {
            let c = chunks[i];
            if c.offset <= stored {
                stored = stored.max(c.offset.saturating_add(c.len));
            }
            i += 1;
        }
        let status = DebugInfoStatus {
            source,
            stored_bytes: stored.min(total_bytes),
            total_bytes,
        };
        let better = match best {
            None => true,
            Some(b) => match (status.complete(), b.complete()) {
                (true, false) => true,
                (false, true) => false,
                (true, true) => status.source > b.source,
                (false, false) => {
                    status.source == DebugInfoSource::Agent
                        && (b.source != DebugInfoSource::Agent
                            || status.stored_bytes > b.stored_bytes)
                }
            },
        };
        if better {
            best = Some(status);
        }
    }
    best
}

/// The bytes of a complete upload from its chunks (sorted by offset, duplicates
/// allowed), or `None` if they leave a gap.
pub(crate) fn assemble(
    status: DebugInfoStatus,
    chunks: impl IntoIterator<Item = (u64, Vec<u8>)>,
) -> Option<Vec<u8>> {
    let total = usize::try_from(status.total_bytes).ok()?;
    let mut out = Vec::with_capacity(total);
    for (offset, data) in chunks {
        let at = out.len() as u64;
        if offset > at {
            return None;
        }
        let skip = usize::try_from(at - offset).ok()?;
        if skip < data.len() {
            out.extend_from_slice(&data[skip..]);
        }
    }
    out.truncate(total);
    (out.len() == total).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(source: DebugInfoSource, total_bytes: u64, offset: u64, len: u64) -> ChunkMeta {
        ChunkMeta {
            source,
            total_bytes,
            offset,
            len,
        }
    }

    #[test]
    fn status_counts_bytes_up_to_the_first_gap() {
        use DebugInfoSource::*;
        let s = status_of(vec![meta(Agent, 10, 0, 4), meta(Agent, 10, 8, 2)]).unwrap();
        assert_eq!((s.stored_bytes, s.complete()), (4, false));
        let s = status_of(vec![
            meta(Agent, 10, 4, 4),
            meta(Agent, 10, 0, 4),
            meta(Agent, 10, 0, 4),
            meta(Agent, 10, 8, 2),
        ])
        .unwrap();
        assert_eq!((s.stored_bytes, s.complete()), (10, true));
        // A complete CI upload wins over an agent's partial one.
        let s = status_of(vec![meta(Agent, 10, 0, 4), meta(Upload, 12, 0, 12)]).unwrap();
        assert_eq!((s.source, s.complete()), (Upload, true));
        // Without a complete one, the agents' progress is what resumes.
        let s = status_of(vec![meta(Agent, 10, 0, 4), meta(Upload, 12, 0, 2)]).unwrap();
        assert_eq!((s.source, s.stored_bytes), (Agent, 4));
        assert_eq!(status_of(Vec::new()), None);
    }

    #[test]
    fn assembling_skips_overlaps_and_refuses_gaps() {
        let status = DebugInfoStatus {
            source: DebugInfoSource::Agent,
            stored_bytes: 6,
            total_bytes: 6,
        };
        let whole = assemble(
            status,
            [
                (0, b"abc".to_vec()),
                (2, b"cd".to_vec()),
                (4, b"ef".to_vec()),
            ],
        );
        assert_eq!(whole.as_deref(), Some(&b"abcdef"[..]));
        assert_eq!(
            assemble(status, [(0, b"ab".to_vec()), (3, b"def".to_vec())]),
            None
        );
    }
}
