//! The disk spool: every durable message waits here, one file each, until the collector
//! acknowledges it, so that neither an unreachable collector nor a restart of the agent
//! loses it.
//!
//! Layout of the spool folder:
//! - `LOCK`: held with `flock` for the life of the agent, so two processes never share a
//!   spool (the second one runs with its in-memory outbox only);
//! - `<id>.w.hsp` (metric window), `<id>.t.hsp` (trigger event) and
//!   `<id>.p.<profile-id>.<index>.<count>.hsp` (profile chunk): one message each, `<id>`
//!   16 hex digits increasing in write order. The name says everything the outbox needs
//!   (kind, order, which chunks make a profile), so loading the spool at start is a
//!   directory listing, not a read of every byte;
//! - `.<id>.tmp`: a file being written.
//!
//! A file is `HSP1`, the payload length (u32 LE), the payload's CRC-32 (u32 LE) and the
//! payload, a protobuf `AgentMessage` with sequence number 0 (numbers are given when the
//! message is queued, so a restarted agent numbers its spooled messages afresh; the
//! collector dedupes resends by event id, profile id and sample time).
//!
//! Crash safety: a file is written under its temporary name and renamed into place, so a
//! crash leaves either the whole message or a `.tmp` file, which the next start deletes
//! and counts. Trigger events and profile chunks are `fsync`ed before the rename (and
//! the folder after it): they survive a power loss. Metric windows are not: a restart of
//! the process keeps them (the kernel has them), a power loss may cost the latest ones,
//! and a file torn that way fails its length or checksum when read, is deleted and
//! counted — never a panic. A profile whose chunk files are not all there is deleted
//! whole at start, so the collector never gets part of one.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use holmes_proto::{pb, AgentBody, AgentMessage};
use prost::Message;

use super::message::Kind;

const MAGIC: [u8; 4] = *b"HSP1";
const HEADER_BYTES: usize = 12;
const SUFFIX: &str = ".hsp";
const LOCK_FILE: &str = "LOCK";

/// Why the spool cannot be used, or a message could not be written to it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpoolError {
    /// A file operation failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// Another process holds the spool folder.
    #[error("spool folder {0} is in use by another process")]
    Locked(PathBuf),
    /// A profile id that cannot be part of a file name (agents make hex ids).
    #[error("profile id {0:?} cannot name a spool file")]
    BadProfileId(String),
}

/// Why a spooled message could not be read back.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The file is gone (acknowledged or dropped meanwhile) or unreadable.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file does not hold what its header or name promises.
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

impl ReadError {
    /// Whether the file simply no longer exists.
    pub(crate) fn is_missing(&self) -> bool {
        matches!(self, ReadError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// One message's file in the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpoolFile {
    name: String,
}

impl SpoolFile {
    /// The file name inside the spool folder.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    #[cfg(test)]
    pub(crate) fn named(name: String) -> Self {
        SpoolFile { name }
    }
}

/// A complete message found in the spool at start, in write order.
#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) file: SpoolFile,
    pub(crate) kind: Kind,
    pub(crate) bytes: u64,
    /// For profile chunks: the profile's id; a profile's chunks are consecutive.
    pub(crate) profile: Option<String>,
}

/// What opening the spool found.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) spool: Spool,
    /// Messages to resend, oldest first; a profile's chunks together and complete.
    pub(crate) found: Vec<Found>,
    /// Files deleted because a write never finished or a profile was incomplete.
    pub(crate) discarded: u64,
}

/// An open spool folder.
#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    next_id: AtomicU64,
    /// Holds the `flock` for as long as the spool is open.
    _lock: File,
}

/// What a file name says about its message.
#[derive(Debug, PartialEq, Eq)]
struct Name {
    id: u64,
    kind: Kind,
    /// Profile id, chunk index, chunk count.
    chunk: Option<(String, u32, u32)>,
}

fn parse_name(name: &str) -> Option<Name> {
    let stem = name.strip_suffix(SUFFIX)?;
    let mut parts = stem.split('.');
    let id_text = parts.next()?;
    if id_text.len() != 16 {
        return None;
    }
    let id = u64::from_str_radix(id_text, 16).ok()?;
    let parsed = match parts.next()? {
        "w" => Name {
            id,
            kind: Kind::Window,
            chunk: None,
        },
        "t" => Name {
            id,
            kind: Kind::Trigger,
            chunk: None,
        },
        "p" => {
            let profile = parts.next()?;
            if !valid_profile_id(profile) {
                return None;
            }
            let index: u32 = parts.next()?.parse().ok()?;
            let count: u32 = parts.next()?.parse().ok()?;
            if index >= count {
                return None;
            }
            Name {
                id,
                kind: Kind::Profile,
                chunk: Some((profile.to_owned(), index, count)),
            }
        }
        _ => return None,
    };
    parts.next().is_none().then_some(parsed)
}

fn valid_profile_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn file_name(id: u64, body: &AgentBody) -> Result<String, SpoolError> {
    Ok(match body {
        AgentBody::ProfileChunk(c) => {
            if !valid_profile_id(&c.profile_id) {
                return Err(SpoolError::BadProfileId(c.profile_id.clone()));
            }
            format!(
                "{id:016x}.p.{}.{}.{}{SUFFIX}",
                c.profile_id, c.chunk_index, c.chunk_count
            )
        }
        AgentBody::Trigger(_) => format!("{id:016x}.t{SUFFIX}"),
        _ => format!("{id:016x}.w{SUFFIX}"),
    })
}

/// CRC-32 (the gzip polynomial, from flate2, which the agent already has).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(bytes);
    crc.sum()
}

/// The bytes of a spool file holding `body`.
pub(crate) fn encode(body: &AgentBody) -> Vec<u8> {
    // The conversion takes a whole message; sequence number 0: numbers are per process.
    let msg = pb::AgentMessage::from(&AgentMessage {
        seq: 0,
        body: body.clone(),
    });
    let len = msg.encoded_len();
    let mut out = Vec::with_capacity(HEADER_BYTES + len);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    // Writing into a Vec cannot run out of room.
    let _ = msg.encode(&mut out);
    let crc = crc32(&out[HEADER_BYTES..]);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The message a spool file holds; `Err` with the reason when it is torn or corrupt.
pub(crate) fn decode(bytes: &[u8]) -> Result<AgentBody, String> {
    if bytes.len() < HEADER_BYTES {
        return Err(format!("{} bytes, shorter than the header", bytes.len()));
    }
    if bytes[..4] != MAGIC {
        return Err("bad magic".to_owned());
    }
    let word =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let (len, crc) = (word(4) as usize, word(8));
    let payload = &bytes[HEADER_BYTES..];
    if payload.len() != len {
        return Err(format!(
            "torn: {} payload bytes, header says {len}",
            payload.len()
        ));
    }
    if crc32(payload) != crc {
        return Err("checksum mismatch".to_owned());
    }
    let msg = pb::AgentMessage::decode(payload).map_err(|e| format!("undecodable: {e}"))?;
    let msg = AgentMessage::try_from(msg).map_err(|e| format!("invalid message: {e}"))?;
    match msg.body {
        AgentBody::Hello(_) | AgentBody::Heartbeat(_) => {
            Err("holds a message that is never spooled".to_owned())
        }
        body => Ok(body),
    }
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync", dir))
}

impl Spool {
    /// Opens (creating it if needed) and locks the spool folder, deletes what a crash
    /// left half-written, and lists the messages waiting to be resent.
    pub(crate) fn open(dir: &Path) -> Result<Opened, SpoolError> {
        fs::create_dir_all(dir).map_err(io("create", dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io("open", &lock_path))?;
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            return Err(if err.kind() == std::io::ErrorKind::WouldBlock {
                SpoolError::Locked(dir.to_owned())
            } else {
                SpoolError::Io {
                    op: "lock",
                    path: lock_path,
                    source: err,
                }
            });
        }
        let mut names = Vec::new();
        let mut discarded = 0u64;
        for entry in fs::read_dir(dir).map_err(io("list", dir))? {
            let entry = entry.map_err(io("list", dir))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') && name.ends_with(".tmp") {
                // A write that never finished: the message was never queued.
                discarded += 1;
                remove_logged(&dir.join(&name));
                continue;
            }
            if !name.ends_with(SUFFIX) {
                continue; // LOCK, or something that is not ours
            }
            let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
            match parse_name(&name) {
                Some(parsed) => names.push((parsed, name, bytes)),
                None => {
                    discarded += 1;
                    remove_logged(&dir.join(&name));
                }
            }
        }
        names.sort_by_key(|(n, _, _)| n.id);
        let next_id = names.last().map_or(1, |(n, _, _)| n.id.saturating_add(1));
        let mut found = Vec::with_capacity(names.len());
        let mut iter = names.into_iter().peekable();
        while let Some((parsed, name, bytes)) = iter.next() {
            let Some((profile, index, count)) = parsed.chunk else {
                found.push(Found {
                    file: SpoolFile { name },
                    kind: parsed.kind,
                    bytes,
                    profile: None,
                });
                continue;
            };
            // A profile's chunks were given consecutive ids: take them while they follow.
            let mut chunks = vec![(name, bytes)];
            let mut complete = index == 0;
            let mut expected = 1;
            while complete && expected < count {
                let next_follows = iter.peek().is_some_and(|(n, _, _)| {
                    n.chunk.as_ref() == Some(&(profile.clone(), expected, count))
                });
                if !next_follows {
                    complete = false;
                    break;
                }
                if let Some((_, name, bytes)) = iter.next() {
                    chunks.push((name, bytes));
                }
                expected += 1;
            }
            if complete {
                found.extend(chunks.into_iter().map(|(name, bytes)| Found {
                    file: SpoolFile { name },
                    kind: Kind::Profile,
                    bytes,
                    profile: Some(profile.clone()),
                }));
            } else {
                discarded += chunks.len() as u64;
                for (name, _) in chunks {
                    remove_logged(&dir.join(name));
                }
            }
        }
        Ok(Opened {
            spool: Spool {
                dir: dir.to_owned(),
                next_id: AtomicU64::new(next_id),
                _lock: lock,
            },
            found,
            discarded,
        })
    }

    /// The spool folder.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes messages that belong together (one, or a profile's chunks) under
    /// consecutive ids; returns each one's file and size. Trigger events and profile
    /// chunks are on stable storage when this returns. On error nothing is left behind.
    pub(crate) fn write(&self, bodies: &[AgentBody]) -> Result<Vec<(SpoolFile, u64)>, SpoolError> {
        let first = self
            .next_id
            .fetch_add(bodies.len() as u64, Ordering::Relaxed);
        let durable = bodies
            .iter()
            .any(|b| !matches!(b, AgentBody::MetricWindow(_)));
        let mut written: Vec<(SpoolFile, u64)> = Vec::with_capacity(bodies.len());
        let result = (|| {
            for (id, body) in (first..).zip(bodies) {
                let name = file_name(id, body)?;
                let bytes = encode(body);
                let tmp = self.dir.join(format!(".{id:016x}.tmp"));
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&tmp)
                    .map_err(io("create", &tmp))?;
                let wrote = file.write_all(&bytes).and_then(|()| {
                    if durable {
                        file.sync_data()
                    } else {
                        Ok(())
                    }
                });
                drop(file);
                let path = self.dir.join(&name);
                if let Err(source) = wrote.and_then(|()| fs::rename(&tmp, &path)) {
                    let _ = fs::remove_file(&tmp);
                    return Err(SpoolError::Io {
                        op: "write",
                        path,
                        source,
                    });
                }
                written.push((SpoolFile { name }, bytes.len() as u64));
            }
            if durable {
                sync_dir(&self.dir)?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(written),
            Err(err) => {
                self.remove(written.into_iter().map(|(f, _)| f));
                Err(err)
            }
        }
    }

    /// Reads a message back.
    pub(crate) fn read(&self, file: &SpoolFile) -> Result<AgentBody, ReadError> {
        let path = self.dir.join(&file.name);
        let bytes = fs::read(&path).map_err(|source| ReadError::Io {
            path: path.clone(),
            source,
        })?;
        decode(&bytes).map_err(|reason| ReadError::Corrupt { path, reason })
    }

    /// Deletes messages that were acknowledged or dropped.
    pub(crate) fn remove(&self, files: impl IntoIterator<Item = SpoolFile>) {
        for f in files {
            remove_logged(&self.dir.join(&f.name));
        }
    }
}

fn remove_logged(path: &Path) {
    if let Err(err) = fs::remove_file(path) {
        if err.kind() != std::io::ErrorKind::NotFound {
            tracing::debug!(target: "holmes", path = %path.display(), error = %err, "cannot delete a spool file");
        }
    }
}

#[cfg(test)]
mod tests;
