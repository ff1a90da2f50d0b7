//! The upload blob: the sections of a module that symbolizing needs, extracted from its
//! ELF file into one self-describing byte string that a collector stores and reads back
//! with [`DebugInfo::from_upload`](crate::DebugInfo::from_upload).
//!
//! # Format (version 1)
//!
//! | bytes | what |
//! |---|---|
//! | 0..8 | magic `HOLMESDI` |
//! | 8 | format version, `1` |
//! | 9..16 | zero |
//! | 16.. | an ELF file |
//!
//! The ELF file has the module's class, byte order, type and machine, no program headers,
//! and *every* section header of the module, unchanged (names, types, flags, addresses,
//! sizes, links) except for file offsets: the sections symbolizing needs keep their bytes
//! as they are in the module (compressed ones stay compressed), every other section
//! becomes `SHT_NOBITS` without bytes — what `objcopy --only-keep-debug` makes. Section
//! indexes thus stay valid (symbols refer to them), and `readelf`, `addr2line -e` or any
//! ELF reader opens it (skip the 16-byte header: `tail -c +17`). Kept: `.symtab` and
//! `.dynsym` with their string tables, the section names (`.shstrtab`), notes (the build
//! id) and the DWARF sections of [`DWARF_SECTIONS`](crate::DWARF_SECTIONS) (`.debug_*`
//! or `.zdebug_*`); section data is 8-byte aligned relative to the ELF's start, the
//! section header table is last.
//!
//! A blob is described once ([`UploadBlob::from_elf_file`]) and then read in pieces
//! ([`UploadBlob::read_at`]) straight from the module's file: building one holds the
//! section headers in memory, never the sections.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::debuginfo::DWARF_SECTIONS;
use crate::elf::{Layout, Origin, Section, SHT_DYNSYM, SHT_NOBITS, SHT_NOTE, SHT_SYMTAB};
use crate::error::LoadError;
use crate::notes::build_id_from_notes;

/// The first 8 bytes of every upload blob.
pub const UPLOAD_MAGIC: &[u8; 8] = b"HOLMESDI";
/// The format version this crate writes and reads.
pub const UPLOAD_VERSION: u8 = 1;
/// Bytes before the ELF file in a blob.
pub const UPLOAD_HEADER_BYTES: usize = 16;

/// Whether `bytes` start like an upload blob (any version).
pub fn is_upload(bytes: &[u8]) -> bool {
    bytes.starts_with(UPLOAD_MAGIC)
}

/// The ELF file inside an upload blob.
pub(crate) fn elf_of_upload(bytes: &[u8]) -> Result<&[u8], LoadError> {
    if bytes.len() < UPLOAD_HEADER_BYTES {
        return Err(LoadError::NotUpload {
            why: format!("{} bytes is shorter than its header", bytes.len()),
        });
    }
    if !is_upload(bytes) {
        return Err(LoadError::NotUpload {
            why: "it does not start with HOLMESDI".to_owned(),
        });
    }
    match bytes.get(8).copied() {
        Some(UPLOAD_VERSION) => Ok(bytes.get(UPLOAD_HEADER_BYTES..).unwrap_or(&[])),
        Some(version) => Err(LoadError::UploadVersion { version }),
        None => Err(LoadError::NotUpload {
            why: "no version byte".to_owned(),
        }),
    }
}

/// Where the blob's bytes come from.
#[derive(Debug)]
enum Source {
    File { file: File, path: PathBuf },
    Bytes(Arc<[u8]>),
}

/// A run of the blob's bytes.
#[derive(Debug)]
enum Piece {
    /// Made here (headers).
    Inline { at: u64, bytes: Vec<u8> },
    /// Copied from the module at `from`.
    Copy { at: u64, from: u64, len: u64 },
}

impl Piece {
    fn range(&self) -> (u64, u64) {
        match self {
            Piece::Inline { at, bytes } => (*at, bytes.len() as u64),
            Piece::Copy { at, len, .. } => (*at, *len),
        }
    }
}

/// A module's upload blob, described and read on demand from the module (see the
/// [module docs](self) for the format).
#[derive(Debug)]
pub struct UploadBlob {
    source: Source,
    /// In order of `at`; the gaps between them are zero padding.
    pieces: Vec<Piece>,
    len: u64,
    build_id: Option<String>,
    debug_info: bool,
}

impl UploadBlob {
    /// Describes the blob of the ELF file at `path` (an executable, a shared library or
    /// a separate debug file); reads its headers and notes only. Keeps the file open;
    /// [`UploadBlob::read_at`] reads from it, so the file must not change meanwhile
    /// (a running executable cannot be written to).
    pub fn from_elf_file(path: &Path) -> Result<UploadBlob, LoadError> {
        let file = File::open(path).map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let (pieces, len, build_id, debug_info) = describe(Origin::File(&file, path))?;
        Ok(UploadBlob {
            source: Source::File {
                file,
                path: path.to_path_buf(),
            },
            pieces,
            len,
            build_id,
            debug_info,
        })
    }

    /// Describes the blob of an ELF file held in memory.
    pub fn from_elf_bytes(bytes: impl Into<Arc<[u8]>>) -> Result<UploadBlob, LoadError> {
        let bytes: Arc<[u8]> = bytes.into();
        let (pieces, len, build_id, debug_info) = describe(Origin::Bytes(&bytes))?;
        Ok(UploadBlob {
            source: Source::Bytes(bytes),
            pieces,
            len,
            build_id,
            debug_info,
        })
    }

    /// The blob's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the blob is empty (never: it has headers at least).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The module's GNU build id, lowercase hex, if it has one.
    pub fn build_id(&self) -> Option<&str> {
        self.build_id.as_deref()
    }

    /// Whether the blob carries more than a stripped module has: a static symbol table or
    /// DWARF line tables. (A stripped binary's blob names its exported functions only;
    /// its debug file, uploaded from CI, is the one worth having.)
    pub fn has_debug_info(&self) -> bool {
        self.debug_info
    }

    /// Fills `buf` with the blob's bytes from `offset` on; returns how many it wrote
    /// (fewer than `buf.len()` only at the end of the blob, 0 past it).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, LoadError> {
        let n = usize::try_from(self.len.saturating_sub(offset))
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let Some(out) = buf.get_mut(..n) else {
            return Ok(0);
        };
        out.fill(0);
        let end = offset + n as u64;
        let first = self.pieces.partition_point(|p| {
            let (at, len) = p.range();
            at + len <= offset
        });
        for piece in self.pieces.get(first..).unwrap_or(&[]) {
            let (at, len) = piece.range();
            if at >= end {
                break;
            }
            let from = offset.max(at);
            let to = end.min(at + len);
            let dst = out
                .get_mut((from - offset) as usize..(to - offset) as usize)
                .unwrap_or(&mut []);
            match piece {
                Piece::Inline { bytes, .. } => {
                    let src = bytes
                        .get((from - at) as usize..(to - at) as usize)
                        .unwrap_or(&[]);
                    dst.copy_from_slice(src);
                }
                Piece::Copy { from: base, .. } => {
                    let src_at = base + (from - at);
                    let origin = match &self.source {
                        Source::File { file, path } => Origin::File(file, path),
                        Source::Bytes(bytes) => Origin::Bytes(bytes),
                    };
                    let src = origin.read(src_at, to - from)?;
                    if src.len() == dst.len() {
                        dst.copy_from_slice(&src);
                    }
                }
            }
        }
        Ok(n)
    }

    /// The whole blob in memory.
    pub fn to_vec(&self) -> Result<Vec<u8>, LoadError> {
        let len = usize::try_from(self.len).map_err(|_| LoadError::TooLarge {
            section: "upload".to_owned(),
            bytes: self.len,
            limit: usize::MAX as u64,
        })?;
        let mut out = vec![0u8; len];
        self.read_at(0, &mut out)?;
        Ok(out)
    }
}

/// Whether section `index` goes into the blob with its bytes.
fn kept(layout: &Layout, index: usize, section: &Section, linked: &[usize]) -> bool {
    if section.file_range().is_none() {
        return false;
    }
    let name = section.name.as_str();
    index == layout.shstrndx
        || section.sh_type == SHT_SYMTAB
        || section.sh_type == SHT_DYNSYM
        || section.sh_type == SHT_NOTE
        || linked.contains(&index)
        || DWARF_SECTIONS.iter().any(|d| {
            name == *d
                || d.strip_prefix(".debug_")
                    .is_some_and(|rest| name.strip_prefix(".zdebug_") == Some(rest))
        })
}

/// A blob's description: its pieces, its length, the module's build id and whether it
/// has a symbol table or line tables.
type Description = (Vec<Piece>, u64, Option<String>, bool);

/// Describes the blob of the ELF file at `origin`.
fn describe(origin: Origin<'_>) -> Result<Description, LoadError> {
    let layout = origin.layout()?;
    let what = origin.describe();
    let file_len = origin.len()?;
    // String tables of the symbol tables.
    let linked: Vec<usize> = layout
        .sections
        .iter()
        .filter(|s| s.sh_type == SHT_SYMTAB || s.sh_type == SHT_DYNSYM)
        .map(|s| s.sh_link as usize)
        .collect();
    let mut build_id = None;
    let mut debug_info = false;
    let mut pieces = Vec::new();
    let mut prefix = Vec::with_capacity(UPLOAD_HEADER_BYTES);
    prefix.extend_from_slice(UPLOAD_MAGIC);
    prefix.push(UPLOAD_VERSION);
    prefix.resize(UPLOAD_HEADER_BYTES, 0);
    pieces.push(Piece::Inline {
        at: 0,
        bytes: prefix,
    });
    let base = UPLOAD_HEADER_BYTES as u64;
    let ehsize: u64 = if layout.class64 { 64 } else { 52 };
    let mut pos = base + ehsize;
    let mut headers = Vec::with_capacity(layout.sections.len());
    for (index, section) in layout.sections.iter().enumerate() {
        let mut out = section.clone();
        if kept(&layout, index, section, &linked) {
            pos = align8(pos);
            if section.sh_type == SHT_NOTE && build_id.is_none() && section.sh_size <= 1 << 16 {
                build_id = origin
                    .read(section.sh_offset, section.sh_size)
                    .ok()
                    .and_then(|n| {
                        build_id_from_notes(&n, section.sh_addralign, layout.little_endian)
                    });
            }
            // The bytes are read when the blob is: a section past the end of the file
            // fails here, not halfway through an upload.
            if section
                .sh_offset
                .checked_add(section.sh_size)
                .is_none_or(|end| end > file_len)
            {
                return Err(LoadError::elf(
                    &what,
                    format!("section {} runs past the end of the file", section.name),
                ));
            }
            debug_info |= section.sh_type == SHT_SYMTAB
                || section.name.ends_with("debug_line")
                || section.name.ends_with("debug_info");
            pieces.push(Piece::Copy {
                at: pos,
                from: section.sh_offset,
                len: section.sh_size,
            });
            out.sh_offset = pos - base;
            pos += section.sh_size;
        } else if index != 0 {
            out.sh_type = SHT_NOBITS;
            out.sh_offset = pos - base;
        }
        headers.push(out);
    }
    pos = align8(pos);
    let shoff = pos - base;
    let table = section_headers(&layout, &headers, &what)?;
    let header = elf_header(&layout, shoff, &what)?;
    pieces.insert(
        1,
        Piece::Inline {
            at: base,
            bytes: header,
        },
    );
    let len = pos + table.len() as u64;
    pieces.push(Piece::Inline {
        at: pos,
        bytes: table,
    });
    Ok((pieces, len, build_id, debug_info))
}

fn align8(v: u64) -> u64 {
    (v + 7) & !7
}

/// Writes numbers in the file's byte order and class.
struct Writer {
    out: Vec<u8>,
    little: bool,
    class64: bool,
    what: String,
}

impl Writer {
    fn u16(&mut self, v: u16) {
        let b = if self.little {
            v.to_le_bytes()
        } else {
            v.to_be_bytes()
        };
        self.out.extend_from_slice(&b);
    }

    fn u32(&mut self, v: u32) {
        let b = if self.little {
            v.to_le_bytes()
        } else {
            v.to_be_bytes()
        };
        self.out.extend_from_slice(&b);
    }

    fn u64(&mut self, v: u64) {
        let b = if self.little {
            v.to_le_bytes()
        } else {
            v.to_be_bytes()
        };
        self.out.extend_from_slice(&b);
    }

    /// An address-sized word: 8 bytes in ELF64, 4 in ELF32 (refused if it does not fit).
    fn word(&mut self, v: u64) -> Result<(), LoadError> {
        if self.class64 {
            self.u64(v);
        } else {
            let v = u32::try_from(v)
                .map_err(|_| LoadError::elf(&self.what, format!("{v} does not fit ELF32")))?;
            self.u32(v);
        }
        Ok(())
    }
}

fn writer(layout: &Layout, what: &str, capacity: usize) -> Writer {
    Writer {
        out: Vec::with_capacity(capacity),
        little: layout.little_endian,
        class64: layout.class64,
        what: what.to_owned(),
    }
}

/// The ELF header: the module's, without program headers, section headers at `shoff`.
fn elf_header(layout: &Layout, shoff: u64, what: &str) -> Result<Vec<u8>, LoadError> {
    let mut w = writer(layout, what, 64);
    w.out.extend_from_slice(&layout.ident);
    w.u16(layout.e_type);
    w.u16(layout.e_machine);
    w.u32(layout.e_version);
    w.word(layout.e_entry)?;
    w.word(0)?; // e_phoff
    w.word(shoff)?;
    w.u32(layout.e_flags);
    w.u16(if layout.class64 { 64 } else { 52 }); // e_ehsize
    w.u16(0); // e_phentsize
    w.u16(0); // e_phnum
    w.u16(if layout.class64 { 64 } else { 40 }); // e_shentsize
    w.u16(layout.e_shnum);
    w.u16(layout.e_shstrndx);
    Ok(w.out)
}

/// The section header table.
fn section_headers(layout: &Layout, headers: &[Section], what: &str) -> Result<Vec<u8>, LoadError> {
    let size = if layout.class64 { 64 } else { 40 };
    let mut w = writer(layout, what, headers.len() * size);
    for s in headers {
        w.u32(s.sh_name);
        w.u32(s.sh_type);
        w.word(s.sh_flags)?;
        w.word(s.sh_addr)?;
        w.word(s.sh_offset)?;
        w.word(s.sh_size)?;
        w.u32(s.sh_link);
        w.u32(s.sh_info);
        w.word(s.sh_addralign)?;
        w.word(s.sh_entsize)?;
    }
    Ok(w.out)
}
