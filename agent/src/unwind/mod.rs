//! An async-signal-safe frame-pointer walk of the calling thread's own stack, for
//! signal handlers and the sampling allocator.
//!
//! The interrupted program counter (from the signal's `ucontext`) is recorded first, as
//! the leaf: a frame-pointer walk alone starts at the caller and charges a spinning leaf
//! function's time to its caller (measured with pprof-rs 0.15's `frame-pointer` feature).
//! A thread interrupted in a function's frame set-up or tear-down gets its caller put
//! back ([`walk_interrupted`]), which the chain skips there.
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
mod code;
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

/// [`init`], and for [`walk_interrupted`] finds the service's own code (once), whose
/// instructions it then reads without a system call. Not from an allocator: it asks the
/// dynamic loader, which takes its lock.
pub(crate) fn init_interrupted() {
    init();
    code::init();
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
    walk_from(regs, out, false)
}

/// [`walk`] for a thread interrupted anywhere (a signal handler's context): when the
/// interrupted function was setting up or tearing down its frame, its caller's return
/// address is put back first, which the frame-pointer chain skips there (see
/// [`leaf_caller`]). Without it, a loop calling small functions loses itself from a
/// fifth of its samples (an unoptimized build's `Range::next` and `black_box`: their
/// time at `push rbp` and `mov rbp, rsp` is charged to the loop's caller).
pub(crate) fn walk_interrupted(regs: Registers, out: &mut [usize]) -> usize {
    walk_from(regs, out, true)
}

fn walk_from(regs: Registers, out: &mut [usize], interrupted: bool) -> usize {
    let Some(first) = out.first_mut() else {
        return 0;
    };
    *first = regs.pc;
    let top = bounds::known_top(regs.sp, thread_pointer());
    let mut n = 1;
    if interrupted {
        if let (Some(slot), Some(ret)) = (out.get_mut(1), leaf_caller(regs, top)) {
            *slot = ret;
            n = 2;
        }
    }
    let mut fp = regs.fp;
    while n < out.len() {
        if fp < regs.sp || fp % 16 != 0 || fp - regs.sp > MAX_STACK_SPAN {
            break;
        }
        let Some((next, ret)) = read_stack_pair(fp, top) else {
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

/// The two words at `addr` of the thread's stack: read directly when they lie inside
/// its own stack (below `top`, [`bounds`]), else by the kernel.
fn read_stack_pair(addr: usize, top: Option<usize>) -> Option<(usize, usize)> {
    match top {
        Some(top) if addr.checked_add(16).is_some_and(|end| end <= top) => {
            // SAFETY: [sp, top) is this thread's own stack, known readable (bounds),
            // and addr..addr+16 lies inside it (callers pass addresses at or above the
            // stack pointer); a thread's stack is not unmapped while the thread runs,
            // here or in a signal handler.
            unsafe {
                let p = addr as *const usize;
                Some((p.read_volatile(), p.add(1).read_volatile()))
            }
        }
        _ => memory::read_pair(addr),
    }
}

/// The return address into the caller of a function interrupted while setting up or
/// tearing down its frame, which the frame-pointer chain skips (`rbp` is still, or
/// again, the caller's, so the chain's first link is the caller's own return address):
/// at the function's `push rbp` (not yet run) and at its `ret` the address is at
/// `[sp]`, at its `mov rbp, rsp` (the push done) at `[sp + 8]`. `None` elsewhere, and
/// on other architectures. The instruction is read directly in the service's own code
/// ([`code`]), by the kernel elsewhere: a library's code may be unmapped under a walk.
/// A function built without frame pointers that pushes `rbp` mid-body can make this a
/// wrong frame; compilers save it at entry.
#[cfg(target_arch = "x86_64")]
fn leaf_caller(regs: Registers, top: Option<usize>) -> Option<usize> {
    let code = if code::is_own(regs.pc, 8) {
        // SAFETY: [pc, pc + 8) lies in the agent's own object's code, mapped (and
        // readable: code segments are) for as long as the process runs.
        unsafe { (regs.pc as *const usize).read_unaligned() }
    } else {
        memory::read_pair(regs.pc)?.0
    };
    let at = match code.to_le_bytes() {
        // push rbp; ret
        [0x55, ..] | [0xc3, ..] => 0,
        // mov rbp, rsp
        [0x48, 0x89, 0xe5, ..] => 8,
        _ => return None,
    };
    let (ret, _) = read_stack_pair(regs.sp.checked_add(at)?, top)?;
    (ret != 0).then_some(ret)
}

#[cfg(not(target_arch = "x86_64"))]
fn leaf_caller(_regs: Registers, _top: Option<usize>) -> Option<usize> {
    None
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
