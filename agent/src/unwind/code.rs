//! Where this process's own code stays mapped: the executable segments of the object the
//! agent is linked into (the service's executable), found once at [`init`] with
//! `dl_iterate_phdr`. An instruction there is read directly, with no system call; any
//! other (a library's, which `dlclose` may unmap under a walk) through the kernel.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Executable segments remembered (an object has one, sometimes two).
const SEGMENTS: usize = 4;
/// `PF_X`: an executable segment.
const PF_X: u32 = 1;

/// The loader's program headers, as wide as this process.
#[cfg(target_pointer_width = "64")]
type Phdr = libc::Elf64_Phdr;
#[cfg(target_pointer_width = "32")]
type Phdr = libc::Elf32_Phdr;

/// `[start, end)` of each executable segment; `end` is stored last, so an entry with a
/// nonzero `end` is whole.
static RANGES: [(AtomicUsize, AtomicUsize); SEGMENTS] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; SEGMENTS];

/// What [`on_object`] looks for, and what it found.
struct Search {
    /// An address of the agent's own code.
    target: usize,
    found: [(usize, usize); SEGMENTS],
}

/// Finds the agent's object's executable segments; idempotent. Not for signal handlers
/// nor allocators (the loader takes its lock).
pub(super) fn init() {
    if RANGES
        .iter()
        .any(|(_, end)| end.load(Ordering::Acquire) != 0)
    {
        return;
    }
    let mut search = Search {
        target: init as *const () as usize,
        found: [(0, 0); SEGMENTS],
    };
    // SAFETY: the callback only reads the `dl_phdr_info` it is given and writes `search`,
    // alive and not otherwise borrowed during the call.
    unsafe {
        libc::dl_iterate_phdr(Some(on_object), (&raw mut search).cast());
    }
    for ((start, end), (lo, hi)) in RANGES.iter().zip(search.found) {
        start.store(lo, Ordering::Relaxed);
        end.store(hi, Ordering::Release);
    }
}

unsafe extern "C" fn on_object(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: dl_iterate_phdr passes a valid info and our `data` (see init).
    let (info, search) = unsafe { (&*info, &mut *data.cast::<Search>()) };
    if info.dlpi_phdr.is_null() {
        return 0;
    }
    // SAFETY: dlpi_phdr points at dlpi_phnum program headers of a loaded object, which
    // cannot be unloaded while the loader runs this callback.
    let phdrs: &[Phdr] =
        unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
    let bias = info.dlpi_addr as usize;
    let mut segments = [(0usize, 0usize); SEGMENTS];
    let mut kept = 0;
    let mut ours = false;
    for p in phdrs {
        if p.p_type != libc::PT_LOAD || p.p_flags & PF_X == 0 {
            continue;
        }
        let lo = bias.wrapping_add(p.p_vaddr as usize);
        // What the file maps: the part of the segment that is code.
        let hi = lo.saturating_add(p.p_filesz as usize);
        ours |= (lo..hi).contains(&search.target);
        if let Some(slot) = segments.get_mut(kept) {
            *slot = (lo, hi);
            kept += 1;
        }
    }
    if ours {
        search.found = segments;
        // Found: stop.
        return 1;
    }
    0
}

/// Whether `[addr, addr + len)` lies in the agent's own object's code (mapped for as
/// long as the process runs). Async-signal-safe.
pub(super) fn is_own(addr: usize, len: usize) -> bool {
    let Some(end) = addr.checked_add(len) else {
        return false;
    };
    RANGES.iter().any(|(lo, hi)| {
        let hi = hi.load(Ordering::Acquire);
        hi != 0 && addr >= lo.load(Ordering::Relaxed) && end <= hi
    })
}

#[cfg(test)]
mod tests;
