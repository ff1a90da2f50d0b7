//! The modules loaded in this process — the executable, its shared libraries, the vDSO —
//! from the dynamic loader (`dl_iterate_phdr`): each one's file name, GNU build id (read
//! from its `PT_NOTE` segment in memory, not from its file), load bias and segments.
//! An address becomes `(module, offset)`, the offset being what the module's ELF file
//! calls that address (run-time address − load bias): the same in every process of one
//! build, whatever ASLR did.
//!
//! The table is kept, and enumerated again when the loader's load and unload counters
//! (`dlpi_adds`, `dlpi_subs`) moved or an address is not found. Never used in a signal
//! handler: it allocates and takes a lock.

use std::ffi::CStr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use holmes_proto::Module;

/// `AT_SYSINFO_EHDR`: where the kernel mapped the vDSO.
const AT_SYSINFO_EHDR: libc::c_ulong = 33;
/// `PF_R`: a readable segment.
const PF_R: u32 = 4;
/// Largest `PT_NOTE` segment read for a build id.
const MAX_NOTES: usize = 64 * 1024;
/// Largest vDSO image copied for its symbols.
const MAX_VDSO_BYTES: usize = 1 << 20;

/// The loader's program headers, as wide as this process.
#[cfg(target_pointer_width = "64")]
type Phdr = libc::Elf64_Phdr;
#[cfg(target_pointer_width = "32")]
type Phdr = libc::Elf32_Phdr;

/// One loaded module.
#[derive(Debug, Clone)]
pub(crate) struct LoadedModule {
    /// File name and build id, as profiles name it.
    pub(crate) module: Module,
    /// Where its debug info is read from (`/proc/self/exe` for the executable); `None`
    /// for the vDSO, which has no file.
    pub(crate) path: Option<PathBuf>,
    /// The vDSO's image in memory: (address, length).
    pub(crate) image: Option<(usize, usize)>,
    /// Run-time address − address in the file.
    pub(crate) bias: usize,
    /// Run-time ranges of its `PT_LOAD` segments: (start, length).
    segments: Vec<(usize, usize)>,
}

impl LoadedModule {
    fn contains(&self, addr: usize) -> bool {
        self.segments
            .iter()
            .any(|&(start, len)| addr >= start && addr - start < len)
    }

    /// The vDSO's ELF image, copied out of memory.
    pub(crate) fn image_bytes(&self) -> Option<Vec<u8>> {
        let (start, len) = self.image?;
        // SAFETY: the vDSO stays mapped for the life of the process, readable, and
        // [start, start + len) is its mapping as /proc/self/maps lists it (capped).
        let bytes = unsafe { std::slice::from_raw_parts(start as *const u8, len) };
        Some(bytes.to_vec())
    }
}

/// The modules of this process, as the loader listed them.
#[derive(Debug, Default)]
pub(crate) struct ModuleMap {
    list: Vec<LoadedModule>,
    /// The loader's counters when it was listed.
    adds: u64,
    subs: u64,
}

impl ModuleMap {
    /// The module holding `addr` and `addr`'s offset in it.
    pub(crate) fn find(&self, addr: usize) -> Option<(usize, u64)> {
        let index = self.list.iter().position(|m| m.contains(addr))?;
        let module = self.list.get(index)?;
        Some((index, addr.wrapping_sub(module.bias) as u64))
    }

    /// The module at `index` (from [`ModuleMap::find`]).
    pub(crate) fn get(&self, index: usize) -> Option<&LoadedModule> {
        self.list.get(index)
    }

    /// The executable (the loader lists it first).
    pub(crate) fn executable(&self) -> Option<&LoadedModule> {
        self.list.first()
    }
}

static MAP: Mutex<Option<Arc<ModuleMap>>> = Mutex::new(None);

/// The module table: the kept one while the loader has loaded and unloaded nothing
/// since, else listed again.
pub(crate) fn current() -> Arc<ModuleMap> {
    let mut kept = MAP.lock().unwrap_or_else(|p| p.into_inner());
    let (adds, subs) = loader_counters();
    match kept.as_ref() {
        Some(map) if map.adds == adds && map.subs == subs && adds != 0 => Arc::clone(map),
        _ => {
            let map = Arc::new(enumerate());
            *kept = Some(Arc::clone(&map));
            map
        }
    }
}

/// The module table listed again (an address was not found in the kept one).
pub(crate) fn refreshed() -> Arc<ModuleMap> {
    let map = Arc::new(enumerate());
    *MAP.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&map));
    map
}

/// Looks addresses up, listing the modules again at most once (on the first miss).
#[derive(Debug)]
pub(crate) struct Resolver {
    map: Arc<ModuleMap>,
    refreshed: bool,
}

impl Resolver {
    pub(crate) fn new() -> Self {
        Resolver {
            map: current(),
            refreshed: false,
        }
    }

    /// The module holding `addr` and `addr`'s offset in it.
    pub(crate) fn find(&mut self, addr: usize) -> Option<(usize, u64)> {
        if let Some(found) = self.map.find(addr) {
            return Some(found);
        }
        if self.refreshed {
            return None;
        }
        self.refreshed = true;
        self.map = refreshed();
        self.map.find(addr)
    }

    /// The table lookups are answered from.
    pub(crate) fn map(&self) -> &ModuleMap {
        &self.map
    }
}

/// The loader's load and unload counters (`dlpi_adds`, `dlpi_subs`).
fn loader_counters() -> (u64, u64) {
    let mut counters = (0u64, 0u64);
    // SAFETY: the callback only reads the `dl_phdr_info` it is given and writes the
    // `counters` above, alive for the call; returning 1 stops after the first object.
    unsafe {
        libc::dl_iterate_phdr(Some(on_first), (&raw mut counters).cast());
    }
    counters
}

unsafe extern "C" fn on_first(
    info: *mut libc::dl_phdr_info,
    size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // The counters exist when the loader's struct is that large (glibc ≥ 2.4, musl).
    let needed = std::mem::offset_of!(libc::dl_phdr_info, dlpi_subs)
        + std::mem::size_of::<libc::c_ulonglong>();
    if size >= needed {
        // SAFETY: dl_iterate_phdr passes a valid info of `size` bytes and our `data`.
        let (info, out) = unsafe { (&*info, &mut *data.cast::<(u64, u64)>()) };
        *out = (info.dlpi_adds, info.dlpi_subs);
    }
    1
}

/// Lists the loaded modules.
fn enumerate() -> ModuleMap {
    let mut map = ModuleMap::default();
    (map.adds, map.subs) = loader_counters();
    // SAFETY: the callback only reads the `dl_phdr_info` it is given (and the memory its
    // program headers describe, checked there) and pushes into `map.list`, alive and not
    // otherwise borrowed during the call.
    unsafe {
        libc::dl_iterate_phdr(Some(on_object), (&raw mut map.list).cast());
    }
    map
}

unsafe extern "C" fn on_object(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: dl_iterate_phdr passes a valid info and our `data` (see enumerate).
    let (info, list) = unsafe { (&*info, &mut *data.cast::<Vec<LoadedModule>>()) };
    let name_bytes = if info.dlpi_name.is_null() {
        &[][..]
    } else {
        // SAFETY: a non-null dlpi_name is a NUL-terminated string owned by the loader.
        unsafe { CStr::from_ptr(info.dlpi_name) }.to_bytes()
    };
    let bias = info.dlpi_addr as usize;
    let phdrs: &[Phdr] = if info.dlpi_phdr.is_null() {
        &[]
    } else {
        // SAFETY: dlpi_phdr points at dlpi_phnum program headers of a loaded object,
        // which cannot be unloaded while the loader runs this callback.
        unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) }
    };
    let loads: Vec<(usize, usize, bool)> = phdrs
        .iter()
        .filter(|p| p.p_type == libc::PT_LOAD)
        .map(|p| {
            (
                bias.wrapping_add(p.p_vaddr as usize),
                p.p_memsz as usize,
                p.p_flags & PF_R != 0,
            )
        })
        .collect();
    let segments: Vec<(usize, usize)> = loads.iter().map(|&(s, l, _)| (s, l)).collect();
    let build_id = phdrs
        .iter()
        .filter(|p| p.p_type == libc::PT_NOTE)
        .find_map(|p| {
            let start = bias.wrapping_add(p.p_vaddr as usize);
            let len = (p.p_filesz as usize).min(MAX_NOTES);
            // Read only notes inside a readable loaded segment: mapped for sure.
            let mapped = loads.iter().any(|&(s, l, readable)| {
                readable && start >= s && start.checked_add(len).is_some_and(|e| e <= s + l)
            });
            if !mapped || len == 0 {
                return None;
            }
            // SAFETY: [start, start + len) lies inside a readable PT_LOAD segment of an
            // object that stays loaded during this callback.
            let notes = unsafe { std::slice::from_raw_parts(start as *const u8, len) };
            // Widened on 32-bit targets, the same type on 64-bit ones.
            #[allow(clippy::useless_conversion)]
            let align = u64::from(p.p_align);
            holmes_symbolize::build_id_from_notes(notes, align, cfg!(target_endian = "little"))
        })
        .unwrap_or_default();

    // SAFETY: getauxval has no preconditions.
    let vdso = unsafe { libc::getauxval(AT_SYSINFO_EHDR) } as usize;
    let is_vdso = vdso != 0 && segments.iter().any(|&(s, l)| vdso >= s && vdso - s < l);
    let (name, path, image) = if is_vdso {
        // The whole image (section headers included, past the PT_LOAD segment) is
        // mapped; /proc/self/maps says how far.
        let image = vdso_mapping()
            .filter(|&(start, _)| start == vdso)
            .map(|(start, len)| (start, len.min(MAX_VDSO_BYTES)));
        ("[vdso]".to_owned(), None, image)
    } else if name_bytes.is_empty() {
        if !list.is_empty() {
            // Only the executable comes without a name.
            return 0;
        }
        (
            executable_name(),
            Some(PathBuf::from("/proc/self/exe")),
            None,
        )
    } else {
        use std::os::unix::ffi::OsStrExt;
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(name_bytes));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (name, Some(path), None)
    };
    list.push(LoadedModule {
        module: Module { name, build_id },
        path,
        image,
        bias,
        segments,
    });
    0
}

/// The `[vdso]` mapping of `/proc/self/maps`: (start, length).
fn vdso_mapping() -> Option<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|l| l.ends_with("[vdso]"))?;
    let (start, end) = line.split_whitespace().next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    Some((start, end.checked_sub(start)?))
}

/// The executable's file name, as `/proc/self/exe` points to it.
fn executable_name() -> String {
    std::fs::read_link("/proc/self/exe")
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .map(|n| n.trim_end_matches(" (deleted)").to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
