//! An async-signal-safe frame-pointer walk, for signal handlers.
//!
//! The interrupted program counter (from the signal's `ucontext`) is recorded first, as
//! the leaf: a frame-pointer walk alone starts at the caller and charges a spinning leaf
//! function's time to its caller (measured with pprof-rs 0.15's `frame-pointer` feature).
//! Then the chain of saved frame pointers is followed, each link checked before it is
//! read: above the stack pointer, aligned, not too far, strictly increasing, and on a page
//! proven readable. A page is proven readable by asking the kernel to copy one byte of it
//! into a pipe (`write` fails with `EFAULT` instead of crashing), so a garbage frame
//! pointer from code built without frame pointers ends the walk instead of the process.
//!
//! Nothing here allocates, locks or calls anything but `write`/`read` on a pipe.

use std::sync::atomic::{AtomicI32, Ordering};

/// Most frames recorded per stack.
pub(crate) const MAX_DEPTH: usize = 128;
/// A frame pointer further than this above the stack pointer ends the walk.
const MAX_STACK_SPAN: usize = 256 * 1024 * 1024;
const PAGE: usize = 4096;

static PROBE_READ: AtomicI32 = AtomicI32::new(-1);
static PROBE_WRITE: AtomicI32 = AtomicI32::new(-1);

/// Creates the probe pipe; idempotent. Returns false if no pipe could be made (then
/// walks record only the leaf).
pub(crate) fn init() -> bool {
    if PROBE_WRITE.load(Ordering::Acquire) >= 0 {
        return true;
    }
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a valid array of two ints.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if rc != 0 {
        return false;
    }
    if PROBE_WRITE
        .compare_exchange(-1, fds[1], Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        PROBE_READ.store(fds[0], Ordering::Release);
    } else {
        // Another thread won the race; close ours.
        // SAFETY: closing descriptors this function just created.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }
    true
}

/// Whether the page holding `addr` can be read, asked of the kernel. Async-signal-safe.
fn readable(addr: usize) -> bool {
    let w = PROBE_WRITE.load(Ordering::Acquire);
    let r = PROBE_READ.load(Ordering::Acquire);
    if w < 0 || r < 0 {
        return false;
    }
    // SAFETY: write() reads one byte at `addr` in the kernel and reports EFAULT if it is
    // not mapped; it never faults in user space.
    let n = unsafe { libc::write(w, addr as *const libc::c_void, 1) };
    if n != 1 {
        return false;
    }
    let mut sink = 0u8;
    // SAFETY: reading one byte into a valid local.
    unsafe { libc::read(r, (&mut sink as *mut u8).cast(), 1) };
    true
}

/// The registers a walk starts from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Registers {
    pub(crate) pc: usize,
    pub(crate) fp: usize,
    pub(crate) sp: usize,
}

impl Registers {
    /// Reads pc, frame pointer and stack pointer from a signal handler's context.
    ///
    /// # Safety
    /// `ucontext` must be the third argument of an `SA_SIGINFO` signal handler.
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    pub(crate) unsafe fn from_ucontext(ucontext: *mut libc::c_void) -> Option<Registers> {
        let uc = ucontext.cast::<libc::ucontext_t>();
        if uc.is_null() {
            return None;
        }
        // SAFETY: the kernel passes a valid ucontext_t to SA_SIGINFO handlers.
        let gregs = unsafe { &(*uc).uc_mcontext.gregs };
        Some(Registers {
            pc: gregs[libc::REG_RIP as usize] as usize,
            fp: gregs[libc::REG_RBP as usize] as usize,
            sp: gregs[libc::REG_RSP as usize] as usize,
        })
    }

    /// Reads pc, frame pointer and stack pointer from a signal handler's context.
    ///
    /// # Safety
    /// `ucontext` must be the third argument of an `SA_SIGINFO` signal handler.
    #[cfg(all(target_os = "linux", target_arch = "aarch64"))]
    pub(crate) unsafe fn from_ucontext(ucontext: *mut libc::c_void) -> Option<Registers> {
        let uc = ucontext.cast::<libc::ucontext_t>();
        if uc.is_null() {
            return None;
        }
        // SAFETY: the kernel passes a valid ucontext_t to SA_SIGINFO handlers.
        let mc = unsafe { &(*uc).uc_mcontext };
        Some(Registers {
            pc: mc.pc as usize,
            fp: mc.regs[29] as usize,
            sp: mc.sp as usize,
        })
    }

    /// Unsupported architecture: no registers, so captures report an error.
    ///
    /// # Safety
    /// Always safe; the signature matches the supported architectures.
    #[cfg(not(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )))]
    pub(crate) unsafe fn from_ucontext(_ucontext: *mut libc::c_void) -> Option<Registers> {
        None
    }
}

/// Walks the stack from `regs` into `out`: `out[0]` is the interrupted pc, the rest are
/// return addresses, innermost first. Returns how many were written. Async-signal-safe.
pub(crate) fn walk(regs: Registers, out: &mut [usize]) -> usize {
    let Some(first) = out.first_mut() else {
        return 0;
    };
    *first = regs.pc;
    let mut n = 1;
    let mut fp = regs.fp;
    let mut proven = [usize::MAX; 4];
    let mut next_slot = 0;
    while n < out.len() {
        if fp < regs.sp || fp % 16 != 0 || fp - regs.sp > MAX_STACK_SPAN {
            break;
        }
        // fp is 16-aligned, so the two words at fp and fp + 8 share one page.
        let page = fp & !(PAGE - 1);
        if !proven.contains(&page) {
            if !readable(page) {
                break;
            }
            proven[next_slot % proven.len()] = page;
            next_slot += 1;
        }
        // SAFETY: the page holding fp..fp+16 was just proven mapped and readable, and a
        // thread's stack is not unmapped while that thread sits in a signal handler.
        let (next, ret) = unsafe {
            let p = fp as *const usize;
            (p.read_volatile(), p.add(1).read_volatile())
        };
        if ret == 0 {
            break;
        }
        out[n] = ret;
        n += 1;
        if next <= fp {
            break;
        }
        fp = next;
    }
    n
}

/// Walks the calling code's own stack (not in a signal handler): reads pc, frame
/// pointer and stack pointer where it is inlined, then [`walk`]s. Always inlined, so
/// `out[0]` is a pc inside the caller.
#[inline(always)]
pub(crate) fn walk_here(out: &mut [usize]) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let (pc, fp, sp): (usize, usize, usize);
        // SAFETY: only reads rip, rbp and rsp into registers.
        unsafe {
            std::arch::asm!(
                "lea {pc}, [rip]",
                "mov {fp}, rbp",
                "mov {sp}, rsp",
                pc = out(reg) pc,
                fp = out(reg) fp,
                sp = out(reg) sp,
                options(nomem, nostack, preserves_flags),
            );
        }
        walk(Registers { pc, fp, sp }, out)
    }
    #[cfg(target_arch = "aarch64")]
    {
        let (pc, fp, sp): (usize, usize, usize);
        // SAFETY: only reads pc, x29 and sp into registers.
        unsafe {
            std::arch::asm!(
                "adr {pc}, .",
                "mov {fp}, x29",
                "mov {sp}, sp",
                pc = out(reg) pc,
                fp = out(reg) fp,
                sp = out(reg) sp,
                options(nomem, nostack, preserves_flags),
            );
        }
        walk(Registers { pc, fp, sp }, out)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = out;
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_tell_mapped_from_unmapped() {
        assert!(init());
        let local = 5u64;
        assert!(readable(&local as *const u64 as usize));
        assert!(!readable(8));
        assert!(!readable(usize::MAX & !(PAGE - 1)));
    }

    #[test]
    fn a_garbage_frame_pointer_ends_the_walk_safely() {
        assert!(init());
        let mut out = [0usize; 8];
        let local = 0u64;
        let sp = &local as *const u64 as usize;
        // A frame pointer just above sp but in an unmapped region far away is refused by
        // the span check; one that is misaligned by the alignment check.
        for fp in [sp + (MAX_STACK_SPAN + 4096), sp + 8 + 1, 0x10] {
            let n = walk(Registers { pc: 42, fp, sp }, &mut out);
            assert_eq!(n, 1, "fp {fp:#x}");
            assert_eq!(out[0], 42);
        }
    }
}
