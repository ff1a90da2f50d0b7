//! The debug info of the objects loaded in this process (the executable and its shared
//! libraries), read straight from their files with `addr2line`: function names (inlined
//! frames expanded), source files and lines for an address.
//!
//! Only what an object carries itself is read. Debug info in separate files
//! (`/usr/lib/debug/.build-id/…`, `.gnu_debuglink`) is not: on a machine with `libc6-dbg`
//! it made the first symbolization decompress ~10 MiB of libc's DWARF (about half the
//! first capture's time and memory, measured), for frames that the library's own symbol
//! table names well enough. Such objects, and stripped ones, get names from their symbol
//! table (`.symtab`, else `.dynsym`) and no file or line.
//!
//! An object is loaded on its first lookup and kept for the rest of the process: its file
//! is mapped read-only (file-backed pages, shared with the page cache) and never unmapped,
//! and `addr2line` keeps the unit ranges it parsed (the anonymous memory a first capture
//! adds). Line tables and functions of a compilation unit are parsed on the first address
//! that falls in it. Nothing here panics; it allocates and takes a lock, so it must not
//! run in a signal handler.

use std::ffi::CStr;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;

use addr2line::gimli;
use object::{Object, ObjectSection, ObjectSymbol};

type Reader = gimli::EndianSlice<'static, gimli::RunTimeEndian>;

/// Largest section decompressed from a compressed debug section.
const MAX_DECOMPRESSED_SECTION: u64 = 512 * 1024 * 1024;

/// One frame at an address: a function name (Rust names demangled, without their hash),
/// a source file and line; any of them may be unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RawFrame {
    pub(crate) function: Option<String>,
    pub(crate) file: Option<String>,
    pub(crate) line: u32,
}

/// The frames at `addr` (the address of an instruction, not a return address), innermost
/// (inlined) first; empty when nothing is known about it.
pub(crate) fn resolve(addr: usize) -> Vec<RawFrame> {
    with_objects(|objects| {
        let index = objects.find(addr).or_else(|| {
            // A library loaded since the last look.
            objects.refresh();
            objects.find(addr)
        });
        let Some(object) = index.and_then(|i| objects.list.get_mut(i)) else {
            return Vec::new();
        };
        let svma = (addr as u64).wrapping_sub(object.bias as u64);
        object
            .debug()
            .map_or_else(Vec::new, |debug| debug.frames(svma))
    })
}

/// Loads the debug info of the executable (and the symbol table of the C library) and
/// parses the compilation unit holding this function, so that the first capture does
/// not pay for it. Returns whether the executable has line tables.
pub(crate) fn prewarm() -> bool {
    let libc_function = libc::pthread_self as *const () as usize;
    let _ = resolve(libc_function);
    resolve(prewarm as *const () as usize)
        .iter()
        .any(|f| f.file.is_some())
}

static OBJECTS: Mutex<Option<Objects>> = Mutex::new(None);

/// Runs `f` on the object table (enumerated on first use), under its lock.
fn with_objects<R>(f: impl FnOnce(&mut Objects) -> R) -> R {
    let mut guard = OBJECTS.lock().unwrap_or_else(|p| p.into_inner());
    f(guard.get_or_insert_with(Objects::enumerate))
}

/// The loaded objects this process knows of.
struct Objects {
    list: Vec<LoadedObject>,
}

/// One loaded object: where it is mapped, and its debug info once looked at.
struct LoadedObject {
    path: PathBuf,
    /// Load bias: run-time address − address in the file.
    bias: usize,
    /// Run-time address ranges of its `PT_LOAD` segments.
    segments: Vec<(usize, usize)>,
    /// `None` until the first lookup; then `Some(None)` when the file cannot be read.
    debug: Option<Option<Box<Debug>>>,
}

impl LoadedObject {
    fn contains(&self, addr: usize) -> bool {
        self.segments
            .iter()
            .any(|&(start, len)| addr >= start && addr - start < len)
    }

    fn debug(&mut self) -> Option<&Debug> {
        if self.debug.is_none() {
            self.debug = Some(Debug::load(&self.path).map(Box::new));
        }
        self.debug.as_ref().and_then(|d| d.as_deref())
    }
}

impl Objects {
    fn enumerate() -> Objects {
        Objects {
            list: loaded_objects(),
        }
    }

    fn find(&self, addr: usize) -> Option<usize> {
        self.list.iter().position(|o| o.contains(addr))
    }

    /// Adds objects loaded since the last enumeration, keeping what was already read.
    fn refresh(&mut self) {
        for object in loaded_objects() {
            let known = self
                .list
                .iter()
                .any(|o| o.bias == object.bias && o.path == object.path);
            if !known {
                self.list.push(object);
            }
        }
    }
}

/// The objects mapped in this process, from the dynamic loader.
fn loaded_objects() -> Vec<LoadedObject> {
    let mut list: Vec<LoadedObject> = Vec::new();
    // SAFETY: the callback only reads the `dl_phdr_info` it is given, for the duration
    // of the call, and `data` is the `list` above, alive and not otherwise borrowed.
    unsafe {
        libc::dl_iterate_phdr(Some(on_object), (&raw mut list).cast());
    }
    list
}

unsafe extern "C" fn on_object(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: dl_iterate_phdr passes a valid info and our `data` (see loaded_objects).
    let (info, list) = unsafe { (&*info, &mut *data.cast::<Vec<LoadedObject>>()) };
    let name = if info.dlpi_name.is_null() {
        None
    } else {
        // SAFETY: a non-null dlpi_name is a NUL-terminated string owned by the loader.
        Some(unsafe { CStr::from_ptr(info.dlpi_name) })
    };
    let path = match name.map(CStr::to_bytes) {
        // The first object, with an empty name, is the executable.
        None | Some(b"") if list.is_empty() => PathBuf::from("/proc/self/exe"),
        None | Some(b"") => return 0,
        Some(bytes) => {
            use std::os::unix::ffi::OsStrExt;
            PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
        }
    };
    let bias = info.dlpi_addr as usize;
    let mut segments = Vec::new();
    if !info.dlpi_phdr.is_null() {
        for i in 0..usize::from(info.dlpi_phnum) {
            // SAFETY: dlpi_phdr points at dlpi_phnum program headers.
            let phdr = unsafe { &*info.dlpi_phdr.add(i) };
            if phdr.p_type == libc::PT_LOAD {
                segments.push((
                    bias.wrapping_add(phdr.p_vaddr as usize),
                    phdr.p_memsz as usize,
                ));
            }
        }
    }
    list.push(LoadedObject {
        path,
        bias,
        segments,
        debug: None,
    });
    0
}

/// What one object's file says about its addresses.
struct Debug {
    dwarf: Option<addr2line::Context<Reader>>,
    /// Function symbols sorted by address: (start, size, name).
    symbols: Vec<(u64, u64, &'static [u8])>,
}

impl Debug {
    fn load(path: &std::path::Path) -> Option<Debug> {
        let data = map_file(path)?;
        let file = object::File::parse(data).ok()?;
        let mut symbols: Vec<(u64, u64, &'static [u8])> = file
            .symbols()
            .chain(file.dynamic_symbols())
            .filter(|s| s.kind() == object::SymbolKind::Text && s.address() != 0)
            .filter_map(|s| Some((s.address(), s.size(), s.name_bytes().ok()?)))
            .collect();
        symbols.sort_unstable_by_key(|s| (s.0, std::cmp::Reverse(s.1)));
        symbols.dedup_by_key(|s| s.0);
        let dwarf = if file.section_by_name(".debug_info").is_some() {
            let endian = if file.is_little_endian() {
                gimli::RunTimeEndian::Little
            } else {
                gimli::RunTimeEndian::Big
            };
            gimli::Dwarf::load(|id| -> Result<Reader, gimli::Error> {
                Ok(gimli::EndianSlice::new(section(&file, id.name()), endian))
            })
            .ok()
            .and_then(|sections| addr2line::Context::from_dwarf(sections).ok())
        } else {
            None
        };
        Some(Debug { dwarf, symbols })
    }

    fn frames(&self, svma: u64) -> Vec<RawFrame> {
        let mut frames = Vec::new();
        if let Some(cx) = &self.dwarf {
            if let Ok(mut iter) = cx.find_frames(svma).skip_all_loads() {
                while let Ok(Some(frame)) = iter.next() {
                    let function = frame
                        .function
                        .as_ref()
                        .and_then(|f| f.raw_name().ok())
                        .map(|n| demangle(n.as_bytes()))
                        .or_else(|| self.symbol(svma).map(demangle));
                    let (file, line) = frame.location.map_or((None, 0), |l| {
                        (l.file.map(str::to_owned), l.line.unwrap_or(0))
                    });
                    frames.push(RawFrame {
                        function,
                        file,
                        line,
                    });
                }
            }
        }
        if frames.is_empty() {
            if let Some(name) = self.symbol(svma) {
                frames.push(RawFrame {
                    function: Some(demangle(name)),
                    file: None,
                    line: 0,
                });
            }
        }
        frames
    }

    /// The function symbol covering `svma` (a zero-size symbol covers its address only).
    fn symbol(&self, svma: u64) -> Option<&'static [u8]> {
        let i = match self.symbols.binary_search_by_key(&svma, |s| s.0) {
            Ok(i) => i,
            Err(i) => i.checked_sub(1)?,
        };
        let &(start, size, name) = self.symbols.get(i)?;
        (svma == start || svma - start < size).then_some(name)
    }
}

/// A symbol name as people read it: Rust names demangled without their hash (`{:#}`),
/// anything else as it is.
fn demangle(name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    match rustc_demangle::try_demangle(&name) {
        Ok(d) => format!("{d:#}"),
        Err(_) => name.into_owned(),
    }
}

/// A section's bytes, decompressed if needed (zlib; zstd-compressed sections are
/// skipped); empty when missing or unreadable. Decompressed sections stay allocated for
/// the rest of the process, as the mapping does.
fn section(file: &object::File<'static>, name: &str) -> &'static [u8] {
    let Some(section) = file.section_by_name(name) else {
        return &[];
    };
    let Ok(compressed) = section.compressed_data() else {
        return &[];
    };
    match compressed.format {
        object::CompressionFormat::None => compressed.data,
        object::CompressionFormat::Zlib
            if compressed.uncompressed_size <= MAX_DECOMPRESSED_SECTION =>
        {
            let mut out = Vec::with_capacity(compressed.uncompressed_size as usize);
            let inflated = flate2::read::ZlibDecoder::new(compressed.data)
                .take(compressed.uncompressed_size)
                .read_to_end(&mut out);
            match inflated {
                Ok(_) => Box::leak(out.into_boxed_slice()),
                Err(_) => &[],
            }
        }
        _ => &[],
    }
}

/// Maps `path` read-only for the rest of the process.
fn map_file(path: &std::path::Path) -> Option<&'static [u8]> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).ok()?;
    let len = usize::try_from(file.metadata().ok()?.len()).ok()?;
    if len == 0 {
        return None;
    }
    // SAFETY: a private read-only mapping of a file we opened; the kernel checks the
    // arguments. It is never unmapped, so the slice below stays valid for 'static.
    // (Should the file be truncated meanwhile, reads past its end would fault; the
    // executable and its libraries are not written while they run.)
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: `ptr` maps `len` readable bytes, never unmapped nor written.
    Some(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn debuginfo_test_target() -> u64 {
        std::hint::black_box(7)
    }

    #[test]
    fn finds_a_function_of_this_binary_with_file_and_line() {
        let frames = resolve(debuginfo_test_target as *const () as usize);
        let own = frames.last().unwrap();
        assert!(
            own.function
                .as_deref()
                .unwrap()
                .ends_with("debuginfo::tests::debuginfo_test_target"),
            "{frames:#?}"
        );
        assert!(own
            .file
            .as_deref()
            .unwrap()
            .ends_with("symbolize/debuginfo.rs"));
        assert!(own.line > 0);
        assert!(prewarm());
    }

    #[test]
    fn libc_functions_are_named_from_the_symbol_table() {
        let frames = resolve(libc::getpid as *const () as usize);
        assert!(
            frames
                .iter()
                .any(|f| f.function.as_deref().is_some_and(|n| n.contains("getpid"))),
            "{frames:#?}"
        );
        assert!(resolve(0).is_empty());
        assert!(resolve(16).is_empty());
    }

    #[test]
    fn names_are_demangled_without_the_hash() {
        assert_eq!(
            demangle(b"_ZN4core3fmt5write17h0123456789abcdefE"),
            "core::fmt::write"
        );
        assert_eq!(demangle(b"__clone3"), "__clone3");
    }
}
