//! The parts of an ELF file this crate reads: its header and section headers (parsed
//! with `object`, from a file without reading the whole file, or from bytes), and the
//! bytes of a section, decompressed when the file compressed it.

use std::borrow::Cow;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use object::read::elf::{FileHeader, SectionHeader};
use object::read::{ReadCache, ReadRef};
use object::Endianness;

use crate::error::LoadError;

/// `sh_type` of a section that takes no room in the file.
pub(crate) const SHT_NOBITS: u32 = 8;
/// `sh_type` of a note section.
pub(crate) const SHT_NOTE: u32 = 7;
/// `sh_type` of the static symbol table.
pub(crate) const SHT_SYMTAB: u32 = 2;
/// `sh_type` of the dynamic symbol table.
pub(crate) const SHT_DYNSYM: u32 = 11;
/// `sh_flags` bit of a section compressed behind an `Elf*_Chdr`.
const SHF_COMPRESSED: u64 = 0x800;
/// `ch_type` of zlib compression.
const ELFCOMPRESS_ZLIB: u32 = 1;
/// Most sections one file may have (ELF allows extended numbering up to 2^32).
const MAX_SECTIONS: usize = 1 << 20;

/// How a section's bytes are compressed in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    /// Stored as they are.
    None,
    /// zlib, the compressed stream at `offset` (file) for `size` bytes, inflating to
    /// `uncompressed` bytes: `SHF_COMPRESSED` with `ELFCOMPRESS_ZLIB`, or a GNU
    /// `.zdebug_*` section.
    Zlib {
        offset: u64,
        size: u64,
        uncompressed: u64,
    },
    /// A compression this crate does not read (zstd).
    Unsupported,
}

/// One section header, widened to 64 bits, with its name.
#[derive(Debug, Clone)]
pub(crate) struct Section {
    pub(crate) name: String,
    pub(crate) sh_name: u32,
    pub(crate) sh_type: u32,
    pub(crate) sh_flags: u64,
    pub(crate) sh_addr: u64,
    pub(crate) sh_offset: u64,
    pub(crate) sh_size: u64,
    pub(crate) sh_link: u32,
    pub(crate) sh_info: u32,
    pub(crate) sh_addralign: u64,
    pub(crate) sh_entsize: u64,
    pub(crate) compression: Compression,
}

impl Section {
    /// Where the section's bytes are in the file, if it has any.
    pub(crate) fn file_range(&self) -> Option<(u64, u64)> {
        (self.sh_type != SHT_NOBITS && self.sh_type != 0).then_some((self.sh_offset, self.sh_size))
    }
}

/// An ELF file's header and section headers.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) class64: bool,
    pub(crate) little_endian: bool,
    pub(crate) ident: [u8; 16],
    pub(crate) e_type: u16,
    pub(crate) e_machine: u16,
    pub(crate) e_version: u32,
    pub(crate) e_entry: u64,
    pub(crate) e_flags: u32,
    /// As found (0 when the count is in section 0).
    pub(crate) e_shnum: u16,
    /// As found (`SHN_XINDEX` when the index is in section 0).
    pub(crate) e_shstrndx: u16,
    /// The section-name string table's index.
    pub(crate) shstrndx: usize,
    pub(crate) sections: Vec<Section>,
}

impl Layout {
    /// The first section called `name` (`.zdebug_*` answers for `.debug_*` too).
    pub(crate) fn section(&self, name: &str) -> Option<&Section> {
        let gnu = name.strip_prefix(".debug_").map(|n| format!(".zdebug_{n}"));
        self.sections
            .iter()
            .find(|s| s.name == name)
            .or_else(|| gnu.and_then(|g| self.sections.iter().find(|s| s.name == g)))
    }
}

/// Where a file's bytes come from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Origin<'a> {
    File(&'a File, &'a Path),
    Bytes(&'a [u8]),
}

impl Origin<'_> {
    /// What to call it in errors.
    pub(crate) fn describe(&self) -> String {
        match self {
            Origin::File(_, path) => path.display().to_string(),
            Origin::Bytes(_) => "ELF bytes".to_owned(),
        }
    }

    /// The file's size.
    pub(crate) fn len(&self) -> Result<u64, LoadError> {
        match self {
            Origin::Bytes(bytes) => Ok(bytes.len() as u64),
            Origin::File(file, path) => {
                file.metadata()
                    .map(|m| m.len())
                    .map_err(|source| LoadError::Io {
                        path: path.to_path_buf(),
                        source,
                    })
            }
        }
    }

    /// `len` bytes at `offset`.
    pub(crate) fn read(&self, offset: u64, len: u64) -> Result<Cow<'_, [u8]>, LoadError> {
        match self {
            Origin::Bytes(bytes) => {
                let range = usize::try_from(offset)
                    .ok()
                    .zip(usize::try_from(len).ok())
                    .and_then(|(o, l)| Some(o..o.checked_add(l)?))
                    .and_then(|r| bytes.get(r));
                range.map(Cow::Borrowed).ok_or_else(|| {
                    LoadError::elf(
                        &self.describe(),
                        format!("{len} bytes at {offset} are past its end"),
                    )
                })
            }
            Origin::File(file, path) => {
                let len = usize::try_from(len).map_err(|_| {
                    LoadError::elf(
                        &self.describe(),
                        format!("{len} bytes do not fit in memory"),
                    )
                })?;
                let mut buf = vec![0u8; len];
                read_exact_at(file, &mut buf, offset).map_err(|source| LoadError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                Ok(Cow::Owned(buf))
            }
        }
    }

    /// The file's header and section headers.
    pub(crate) fn layout(&self) -> Result<Layout, LoadError> {
        let what = self.describe();
        match self {
            Origin::Bytes(bytes) => layout(*bytes, &what),
            Origin::File(file, _) => {
                // Reads the headers only; the cache is dropped with them.
                let cache = ReadCache::new(*file);
                layout(&cache, &what)
            }
        }
    }

    /// A section's bytes, decompressed; `None` when it is compressed in a way this crate
    /// does not read.
    pub(crate) fn section_bytes(
        &self,
        section: &Section,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, LoadError> {
        let too_large = |bytes: u64| LoadError::TooLarge {
            section: section.name.clone(),
            bytes,
            limit,
        };
        let Some((offset, size)) = section.file_range() else {
            return Ok(Some(Vec::new()));
        };
        match section.compression {
            Compression::None => {
                if size > limit {
                    return Err(too_large(size));
                }
                Ok(Some(self.read(offset, size)?.into_owned()))
            }
            Compression::Zlib {
                offset,
                size,
                uncompressed,
            } => {
                if uncompressed > limit {
                    return Err(too_large(uncompressed));
                }
                let compressed = self.read(offset, size)?;
                let mut out = Vec::with_capacity(uncompressed as usize);
                flate2::read::ZlibDecoder::new(&compressed[..])
                    .take(uncompressed)
                    .read_to_end(&mut out)
                    .map_err(|e| {
                        LoadError::elf(
                            &self.describe(),
                            format!("section {} does not inflate: {e}", section.name),
                        )
                    })?;
                Ok(Some(out))
            }
            Compression::Unsupported => Ok(None),
        }
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

/// Parses the header and section headers of the ELF file in `data`.
fn layout<'data, R: ReadRef<'data>>(data: R, what: &str) -> Result<Layout, LoadError> {
    match object::FileKind::parse(data) {
        Ok(object::FileKind::Elf32) => {
            layout_as::<object::elf::FileHeader32<Endianness>, R>(data, what)
        }
        Ok(object::FileKind::Elf64) => {
            layout_as::<object::elf::FileHeader64<Endianness>, R>(data, what)
        }
        Ok(other) => Err(LoadError::elf(what, format!("a {other:?} file, not ELF"))),
        Err(e) => Err(LoadError::elf(what, e)),
    }
}

fn layout_as<'data, Elf, R>(data: R, what: &str) -> Result<Layout, LoadError>
where
    Elf: FileHeader<Endian = Endianness>,
    R: ReadRef<'data>,
{
    let bad = |e: object::read::Error| LoadError::elf(what, e);
    let header = Elf::parse(data).map_err(bad)?;
    let endian = header.endian().map_err(bad)?;
    let table = header.sections(endian, data).map_err(bad)?;
    if table.len() > MAX_SECTIONS {
        return Err(LoadError::elf(what, format!("{} sections", table.len())));
    }
    let shstrndx = if table.is_empty() {
        0
    } else {
        header.shstrndx(endian, data).map_err(bad)? as usize
    };
    let mut sections = Vec::with_capacity(table.len());
    for raw in table.iter() {
        let name = table
            .section_name(endian, raw)
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default();
        let sh_flags: u64 = raw.sh_flags(endian).0;
        let sh_type = raw.sh_type(endian).0;
        let compression = if sh_type == SHT_NOBITS {
            Compression::None
        } else if sh_flags & SHF_COMPRESSED != 0 {
            match raw.compression(endian, data) {
                Ok(Some((chdr, offset, size))) if chdr.ch_type(endian).0 == ELFCOMPRESS_ZLIB => {
                    Compression::Zlib {
                        offset,
                        size,
                        uncompressed: chdr.ch_size(endian).into(),
                    }
                }
                _ => Compression::Unsupported,
            }
        } else if name.starts_with(".zdebug_") {
            gnu_compression(
                data,
                raw.sh_offset(endian).into(),
                raw.sh_size(endian).into(),
            )
        } else {
            Compression::None
        };
        sections.push(Section {
            name,
            sh_name: raw.sh_name(endian),
            sh_type,
            sh_flags,
            sh_addr: raw.sh_addr(endian).into(),
            sh_offset: raw.sh_offset(endian).into(),
            sh_size: raw.sh_size(endian).into(),
            sh_link: raw.sh_link(endian),
            sh_info: raw.sh_info(endian),
            sh_addralign: raw.sh_addralign(endian).into(),
            sh_entsize: raw.sh_entsize(endian).into(),
            compression,
        });
    }
    let id = header.e_ident();
    let mut ident = [0u8; 16];
    ident[..4].copy_from_slice(&id.magic);
    ident[4] = id.class.0;
    ident[5] = id.data.0;
    ident[6] = id.version.0;
    ident[7] = id.os_abi.0;
    ident[8] = id.abi_version;
    Ok(Layout {
        class64: header.is_class_64(),
        little_endian: endian.is_little_endian(),
        ident,
        e_type: header.e_type(endian).0,
        e_machine: header.e_machine(endian).0,
        e_version: header.e_version(endian),
        e_entry: header.e_entry(endian).into(),
        e_flags: header.e_flags(endian).0,
        e_shnum: header.e_shnum(endian),
        e_shstrndx: header.e_shstrndx(endian).0,
        shstrndx,
        sections,
    })
}

/// A GNU `.zdebug_*` section: `ZLIB`, the uncompressed size (8 bytes, big-endian), then
/// the zlib stream.
fn gnu_compression<'data, R: ReadRef<'data>>(data: R, offset: u64, size: u64) -> Compression {
    let Ok(head) = data.read_bytes_at(offset, 12.min(size)) else {
        return Compression::Unsupported;
    };
    match (head.get(..4), head.get(4..12)) {
        (Some(b"ZLIB"), Some(len)) => {
            let mut be = [0u8; 8];
            be.copy_from_slice(len);
            Compression::Zlib {
                offset: offset + 12,
                size: size - 12,
                uncompressed: u64::from_be_bytes(be),
            }
        }
        _ => Compression::Unsupported,
    }
}

use object::read::elf::CompressionHeader as _;
use object::Endian as _;
