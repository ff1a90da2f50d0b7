//! One module's debug info, loaded: its function symbols and its DWARF, answering
//! "which frames are at this offset" with full paths.

use std::collections::HashMap;
use std::fs::File;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use addr2line::gimli;

use crate::bytes::{Backing, Mapping, SectionBytes};
use crate::elf::{Layout, Origin, Section, SHT_DYNSYM, SHT_NOTE, SHT_SYMTAB};
use crate::error::LoadError;
use crate::names::qualify;
use crate::notes::build_id_from_notes;
use crate::symbols::{demangle, is_mangled_rust, RawTable, SymbolTable};
use crate::upload::elf_of_upload;

type Reader = gimli::EndianReader<gimli::RunTimeEndian, SectionBytes>;

/// Largest section read (after decompression); a larger one fails the load.
pub const MAX_SECTION_BYTES: u64 = 1 << 30;
/// Most inlined frames returned for one offset (the innermost ones and the outermost).
const MAX_INLINE_DEPTH: usize = 64;
/// Most frames read from the DWARF for one offset before giving up on the rest.
const MAX_FRAMES_READ: usize = 1024;

/// The DWARF sections a symbolizer reads: units, line tables, names and ranges (not
/// locations, call frames or macros).
pub const DWARF_SECTIONS: &[&str] = &[
    ".debug_abbrev",
    ".debug_addr",
    ".debug_aranges",
    ".debug_info",
    ".debug_line",
    ".debug_line_str",
    ".debug_ranges",
    ".debug_rnglists",
    ".debug_str",
    ".debug_str_offsets",
    ".debug_types",
];

/// One symbolic frame: a function with its full path (`crate::module::function`), its
/// source file and line ("" and 0 when unknown).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Frame {
    /// Full path of the function, e.g. `checkout::cart::total`; never empty.
    pub function: String,
    /// Source file, as the debug info has it; "" when unknown.
    pub file: String,
    /// Line; 0 when unknown.
    pub line: u32,
}

/// A module's debug info (from its ELF file, ELF bytes or an upload blob): function
/// symbols and DWARF, resolving offsets to frames.
///
/// Loading reads the symbol tables and the DWARF sections into memory (decompressed),
/// or maps the file ([`DebugInfo::map_elf_file`]); units are parsed on the first offset
/// that falls in them. Dropping it gives all of that back.
pub struct DebugInfo {
    build_id: Option<String>,
    program_crate: OnceLock<Option<String>>,
    symbols: SymbolTable,
    dwarf: Option<addr2line::Context<Reader>>,
    section_bytes: usize,
}

impl std::fmt::Debug for DebugInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DebugInfo")
            .field("build_id", &self.build_id)
            .field("has_dwarf", &self.dwarf.is_some())
            .field("section_bytes", &self.section_bytes)
            .finish_non_exhaustive()
    }
}

impl DebugInfo {
    /// Reads the debug info of the ELF file at `path` (an executable, a shared library,
    /// or a separate debug file made by `objcopy --only-keep-debug`). Only the symbol
    /// tables, DWARF sections and notes are read, not the whole file.
    pub fn from_elf_file(path: &Path) -> Result<DebugInfo, LoadError> {
        let file = File::open(path).map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        DebugInfo::load(Source::Read(Origin::File(&file, path)))
    }

    /// Maps the ELF file at `path` read-only and reads its debug info in place: only the
    /// pages a lookup touches are read (and they are the page cache's, shared), which
    /// makes loading a large binary's debug info fast and light; compressed sections are
    /// inflated into memory. The mapping goes with the `DebugInfo`.
    ///
    /// # Safety
    /// The file must not be truncated while the `DebugInfo` lives (reading a page past
    /// its new end raises `SIGBUS`). Files the dynamic loader mapped into this process —
    /// its executable, its shared libraries — qualify: truncating them would crash the
    /// process by itself.
    pub unsafe fn map_elf_file(path: &Path) -> Result<DebugInfo, LoadError> {
        let io = |source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the caller promises the file keeps its length while this lives.
        let mapping = unsafe { Mapping::map(&file) }.map_err(io)?;
        let backing = Arc::new(Backing::Mapped(mapping));
        DebugInfo::load(Source::Mapped(&backing, path))
    }

    /// Reads the debug info of an ELF file held in memory.
    pub fn from_elf_bytes(bytes: &[u8]) -> Result<DebugInfo, LoadError> {
        DebugInfo::load(Source::Read(Origin::Bytes(bytes)))
    }

    /// Reads an upload blob (see [`crate::UploadBlob`] for the format).
    pub fn from_upload(bytes: &[u8]) -> Result<DebugInfo, LoadError> {
        DebugInfo::load(Source::Read(Origin::Bytes(elf_of_upload(bytes)?)))
    }

    /// Reads an upload blob or, if `bytes` is not one, an ELF file.
    pub fn from_upload_or_elf(bytes: &[u8]) -> Result<DebugInfo, LoadError> {
        if crate::upload::is_upload(bytes) {
            DebugInfo::from_upload(bytes)
        } else {
            DebugInfo::from_elf_bytes(bytes)
        }
    }

    /// Names the crate of the program's own source files (those neither the standard
    /// library's nor a dependency's), used to give inlined frames from them their path.
    /// Without it, the crate of the executable's Rust `main` is used, if there is one.
    pub fn with_program_crate(self, krate: impl Into<String>) -> DebugInfo {
        let program_crate = OnceLock::new();
        let _ = program_crate.set(Some(krate.into()));
        DebugInfo {
            program_crate,
            ..self
        }
    }

    /// The module's GNU build id, lowercase hex.
    pub fn build_id(&self) -> Option<&str> {
        self.build_id.as_deref()
    }

    /// Whether it has DWARF (line tables at least), so frames carry files and lines.
    pub fn has_dwarf(&self) -> bool {
        self.dwarf.is_some()
    }

    /// Whether it has a symbol table.
    pub fn has_symbols(&self) -> bool {
        !self.symbols.is_empty()
    }

    /// Bytes of sections and symbols held in memory — not counting a mapped file's pages,
    /// which are the page cache's (the DWARF reader's own parsed state comes on top,
    /// growing with the units looked at).
    pub fn section_bytes(&self) -> usize {
        self.section_bytes
    }

    /// The crate of the program's own code: the one given, else the crate of a Rust
    /// `main` function (`<crate>::main`) in the symbol table.
    pub fn program_crate(&self) -> Option<&str> {
        self.program_crate
            .get_or_init(|| program_crate_of(&self.symbols))
            .as_deref()
    }

    fn load(source: Source<'_>) -> Result<DebugInfo, LoadError> {
        // A reader fed a crafted file may panic; the caller must not see it.
        catch_unwind(AssertUnwindSafe(|| DebugInfo::load_unguarded(&source))).unwrap_or_else(|_| {
            Err(LoadError::elf(
                &source.describe(),
                "the reader gave up on malformed data",
            ))
        })
    }

    fn load_unguarded(source: &Source<'_>) -> Result<DebugInfo, LoadError> {
        let origin = source.origin();
        let layout = origin.layout()?;
        let mut section_bytes = 0usize;
        let build_id = build_id(&origin, &layout);

        let mut tables = Vec::new();
        // The static table when there is one; the dynamic one (exported functions only)
        // for stripped modules.
        for kind in [SHT_SYMTAB, SHT_DYNSYM] {
            let Some(symtab) = layout.sections.iter().find(|s| s.sh_type == kind) else {
                continue;
            };
            let Some(strtab) = layout.sections.get(symtab.sh_link as usize) else {
                continue;
            };
            let (Some(symbols), Some(strings)) = (source.section(symtab)?, source.section(strtab)?)
            else {
                continue;
            };
            if symbols.is_empty() {
                continue;
            }
            section_bytes += source.held(&symbols) + source.held(&strings);
            tables.push(RawTable { symbols, strings });
            break;
        }
        let symbols = SymbolTable::parse(tables, layout.class64, layout.little_endian);
        section_bytes += symbols.heap_bytes();

        let mut dwarf_sections: HashMap<&'static str, SectionBytes> = HashMap::new();
        for name in DWARF_SECTIONS {
            if let Some(section) = layout.section(name) {
                if let Some(bytes) = source.section(section)? {
                    section_bytes += source.held(&bytes);
                    dwarf_sections.insert(name, bytes);
                }
            }
        }
        let dwarf = dwarf_context(dwarf_sections, layout.little_endian);
        Ok(DebugInfo {
            build_id,
            program_crate: OnceLock::new(),
            symbols,
            dwarf,
            section_bytes,
        })
    }

    /// The frames at `offset` (an address as the ELF file sees it: what `addr2line -e`
    /// takes), innermost (inlined) first; empty when nothing is known about it.
    ///
    /// The outermost frame is named from the symbol table (the demangled name without
    /// its hash), inlined frames from the DWARF: a linkage name when the debug info has
    /// one, else the short name prefixed with the crate of its source file (see
    /// [`crate::crate_of_path`]) — with `debug = "line-tables-only"` the DWARF has short
    /// names only.
    pub fn frames(&self, offset: u64) -> Vec<Frame> {
        catch_unwind(AssertUnwindSafe(|| self.frames_unguarded(offset))).unwrap_or_default()
    }

    fn frames_unguarded(&self, offset: u64) -> Vec<Frame> {
        let symbol = self.symbols.lookup(offset).map(demangle);
        let mut raw: Vec<(Option<String>, Option<gimli::DwLang>, String, u32)> = Vec::new();
        if let Some(cx) = &self.dwarf {
            if let Ok(mut iter) = cx.find_frames(offset).skip_all_loads() {
                while let Ok(Some(frame)) = iter.next() {
                    if raw.len() >= MAX_FRAMES_READ {
                        break;
                    }
                    let (name, language) = match &frame.function {
                        Some(f) => (f.raw_name().ok().map(|n| n.into_owned()), f.language),
                        None => (None, None),
                    };
                    let (file, line) = frame.location.map_or((String::new(), 0), |l| {
                        (l.file.unwrap_or_default().to_owned(), l.line.unwrap_or(0))
                    });
                    raw.push((name, language, file, line));
                }
            }
        }
        if raw.len() > MAX_INLINE_DEPTH {
            let last = raw.pop();
            raw.truncate(MAX_INLINE_DEPTH - 1);
            raw.extend(last);
        }
        let outermost = raw.len().saturating_sub(1);
        let mut frames = Vec::with_capacity(raw.len().max(1));
        for (i, (name, language, file, line)) in raw.into_iter().enumerate() {
            let function = match name {
                Some(n) if is_mangled_rust(&n) => demangle(n.as_bytes()),
                _ if i == outermost && symbol.is_some() => symbol.clone().unwrap_or_default(),
                Some(n) if language.is_none_or(|l| l == gimli::DW_LANG_Rust) => {
                    qualify(&n, &file, self.program_crate())
                }
                Some(n) => n,
                None => match &symbol {
                    Some(s) if i == outermost => s.clone(),
                    _ => "??".to_owned(),
                },
            };
            frames.push(Frame {
                function,
                file,
                line,
            });
        }
        if frames.is_empty() {
            if let Some(function) = symbol {
                frames.push(Frame {
                    function,
                    file: String::new(),
                    line: 0,
                });
            }
        }
        frames
    }
}

/// The build id from the module's `SHT_NOTE` sections.
fn build_id(origin: &Origin<'_>, layout: &Layout) -> Option<String> {
    layout
        .sections
        .iter()
        .filter(|s| s.sh_type == SHT_NOTE && s.sh_size <= 1 << 16)
        .find_map(|s| {
            let bytes = origin.section_bytes(s, 1 << 16).ok()??;
            build_id_from_notes(&bytes, s.sh_addralign, layout.little_endian)
        })
}

/// Where a load takes its sections from.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// Read (and copied) from a file or bytes.
    Read(Origin<'a>),
    /// A mapping of the file at the path: uncompressed sections are read in place.
    Mapped(&'a Arc<Backing>, &'a Path),
}

impl Source<'_> {
    fn origin(&self) -> Origin<'_> {
        match self {
            Source::Read(origin) => *origin,
            Source::Mapped(backing, _) => Origin::Bytes(match &***backing {
                Backing::Mapped(m) => m.bytes(),
                Backing::Heap(h) => h,
            }),
        }
    }

    /// A section's bytes; `None` when compressed in a way this crate does not read.
    fn section(&self, section: &Section) -> Result<Option<SectionBytes>, LoadError> {
        if let (Source::Mapped(backing, _), crate::elf::Compression::None) =
            (self, section.compression)
        {
            let Some((offset, size)) = section.file_range() else {
                return Ok(Some(SectionBytes::empty()));
            };
            return SectionBytes::range(backing, offset, size)
                .map(Some)
                .ok_or_else(|| {
                    LoadError::elf(
                        &self.describe(),
                        format!("section {} runs past the end of the file", section.name),
                    )
                });
        }
        Ok(self
            .origin()
            .section_bytes(section, MAX_SECTION_BYTES)?
            .map(SectionBytes::owned))
    }

    /// Memory a section holds: its length if copied, nothing if it is the mapping's.
    fn held(&self, bytes: &SectionBytes) -> usize {
        if bytes.is_mapped() {
            0
        } else {
            bytes.len()
        }
    }

    fn describe(&self) -> String {
        match self {
            Source::Read(origin) => origin.describe(),
            Source::Mapped(_, path) => path.display().to_string(),
        }
    }
}

/// An addr2line context over the sections read; `None` without line tables or when the
/// DWARF does not parse.
fn dwarf_context(
    mut sections: HashMap<&'static str, SectionBytes>,
    little_endian: bool,
) -> Option<addr2line::Context<Reader>> {
    if !sections.contains_key(".debug_info") || !sections.contains_key(".debug_line") {
        return None;
    }
    let endian = if little_endian {
        gimli::RunTimeEndian::Little
    } else {
        gimli::RunTimeEndian::Big
    };
    let dwarf = gimli::Dwarf::load(|id| -> Result<Reader, gimli::Error> {
        let bytes = sections
            .remove(id.name())
            .unwrap_or_else(SectionBytes::empty);
        Ok(gimli::EndianReader::new(bytes, endian))
    })
    .ok()?;
    addr2line::Context::from_dwarf(dwarf).ok()
}

/// The crate of the Rust `main` function: the `<crate>` of a function `<crate>::main`.
fn program_crate_of(symbols: &SymbolTable) -> Option<String> {
    symbols
        .names()
        .filter(|raw| raw.windows(5).any(|w| w == b"4main"))
        .find_map(|raw| {
            let name = demangle(raw);
            let (krate, f) = name.split_once("::")?;
            let plain = !krate.is_empty()
                && krate
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_');
            (f == "main" && plain && !matches!(krate, "std" | "core" | "alloc"))
                .then(|| krate.to_owned())
        })
}
