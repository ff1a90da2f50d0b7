//! An async-signal-safe frame-pointer walk of the calling thread's own stack, for
//! signal handlers and the sampling allocator.
//!
//! The interrupted program counter (from the signal's `ucontext`) is recorded first, as
//! the leaf: a frame-pointer walk alone starts at the caller and charges a spinning leaf
//! function's time to its caller (measured with pprof-rs 0.15's `frame-pointer` feature).
//! Then the chain of saved frame pointers is followed, each link checked before it is
//! read: above the stack pointer, aligned, not too far, strictly increasing. Links
//! inside the thread's own stack ([`bounds`]: the main thread's `[stack]` mapping, or
//! `[sp, thread pointer)` of a pthread, checked once per thread) are read directly, with
//! no system call; any other link is read by the kernel ([`memory`]: `process_vm_readv`
//! on this process, `EFAULT` instead of a crash), so a garbage frame pointer from code
//! built without frame pointers ends the walk instead of the process. No file
//! descriptor is involved anywhere (the host may close and reuse any number).
//!
//! Nothing here allocates, locks or calls anything but `process_vm_readv` and `getpid`
//! (and, once at [`init`], reads `/proc/self/maps` into a stack buffer).

mod bounds;
mod memory;

/// Most frames recorded per stack.
pub(crate) const MAX_DEPTH: usize = 128;
/// A frame pointer further than this above the stack pointer ends the walk.
const MAX_STACK_SPAN: usize = 256 * 1024 * 1024;

/// Prepares walks: reads the main thread's stack range (once; later calls return at
/// once). Walks work without it, reading the main thread's frames through the kernel.
/// Allocates nothing.
pub(crate) fn init() {
    bounds::init();
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

/// The calling thread's thread pointer: the address of its control block, which glibc
/// and musl place at the top of a pthread's stack allocation. 0 where unknown.
#[inline(always)]
fn thread_pointer() -> usize {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        let tp: usize;
        // SAFETY: fs:0 holds the thread control block's address (its self pointer) on
        // every thread of a glibc or musl process; errno, which every signal handler
        // here saves and restores, is found through the same register.
        unsafe {
            std::arch::asm!(
                "mov {tp}, fs:0",
                tp = out(reg) tp,
                options(nostack, readonly, preserves_flags),
            );
        }
        tp
    }
    #[cfg(all(target_os = "linux", target_arch = "aarch64"))]
    {
        let tp: usize;
        // SAFETY: reads the thread pointer register; no memory is touched.
        unsafe {
            std::arch::asm!(
                "mrs {tp}, tpidr_el0",
                tp = out(reg) tp,
                options(nomem, nostack, preserves_flags),
            );
        }
        tp
    }
    #[cfg(not(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )))]
    {
        0
    }
}

/// Walks the calling thread's stack from `regs` into `out`: `out[0]` is the interrupted
/// pc, the rest are return addresses, innermost first. Returns how many were written.
/// Async-signal-safe; `regs` must be this thread's (a signal handler's interrupted
/// context, or [`walk_here`]).
pub(crate) fn walk(regs: Registers, out: &mut [usize]) -> usize {
    let Some(first) = out.first_mut() else {
        return 0;
    };
    *first = regs.pc;
    let top = bounds::known_top(regs.sp, thread_pointer());
    let mut n = 1;
    let mut fp = regs.fp;
    while n < out.len() {
        if fp < regs.sp || fp % 16 != 0 || fp - regs.sp > MAX_STACK_SPAN {
            break;
        }
        let link = match top {
            Some(top) if fp.checked_add(16).is_some_and(|end| end <= top) => {
                // SAFETY: [sp, top) is this thread's own stack, known readable
                // (bounds), and fp..fp+16 lies inside it; a thread's stack is not
                // unmapped while the thread runs, here or in a signal handler.
                unsafe {
                    let p = fp as *const usize;
                    Some((p.read_volatile(), p.add(1).read_volatile()))
                }
            }
            _ => memory::read_pair(fp),
        };
        let Some((next, ret)) = link else {
            break;
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
mod tests;
