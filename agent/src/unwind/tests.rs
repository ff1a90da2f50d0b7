use super::memory::KERNEL_READS;
use super::*;

const PAGE: usize = 4096;

fn kernel_reads() -> usize {
    KERNEL_READS.with(std::cell::Cell::get)
}

/// Three fresh pages: read-write, none, read-write.
/// Pages a [`Pages`] maps: three to write frames in (the middle one a guard page), then
/// inaccessible ones for links beyond them.
const MAPPED: usize = 8;

struct Pages(usize);

impl Pages {
    fn new() -> Pages {
        // SAFETY: a fresh anonymous private mapping.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MAPPED * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED);
        let base = map as usize;
        // SAFETY: the middle page of the mapping above.
        let rc = unsafe { libc::mprotect((base + PAGE) as *mut _, PAGE, libc::PROT_NONE) };
        assert_eq!(rc, 0);
        // The pages past the third are held inaccessible rather than left unmapped: an
        // address past a mapping may be another one's (mappings are placed next to each
        // other, and the tests run in parallel), which a walk would then read.
        // SAFETY: pages 3.. of the mapping above.
        let rc = unsafe {
            libc::mprotect(
                (base + 3 * PAGE) as *mut _,
                (MAPPED - 3) * PAGE,
                libc::PROT_NONE,
            )
        };
        assert_eq!(rc, 0);
        Pages(base)
    }

    /// Writes a frame (saved fp, return address) at `at`, in the first or last page.
    fn frame(&self, at: usize, next: usize, ret: usize) {
        assert!(at >= self.0 && at + 16 <= self.0 + 3 * PAGE);
        assert!(!(self.0 + PAGE..self.0 + 2 * PAGE).contains(&at));
        // SAFETY: a writable page of the mapping, checked above.
        unsafe {
            (at as *mut usize).write(next);
            ((at + 8) as *mut usize).write(ret);
        }
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        // SAFETY: unmapping what new() mapped.
        unsafe { libc::munmap(self.0 as *mut _, MAPPED * PAGE) };
    }
}

#[test]
fn a_garbage_frame_pointer_ends_the_walk_safely() {
    init();
    let mut out = [0usize; 8];
    let local = 0u64;
    let sp = &local as *const u64 as usize;
    // Far above sp, misaligned, below sp, null.
    for fp in [sp + (MAX_STACK_SPAN + 4096), sp + 8 + 1, 0x10, 0] {
        let n = walk(Registers { pc: 42, fp, sp }, &mut out);
        assert_eq!(n, 1, "fp {fp:#x}");
        assert_eq!(out[0], 42);
    }
    // Into a guard page (mapped, not readable) and past the writable pages.
    let pages = Pages::new();
    let base = pages.0;
    pages.frame(base, base + PAGE, 0x1111);
    let n = walk(
        Registers {
            pc: 42,
            fp: base,
            sp: base,
        },
        &mut out,
    );
    assert_eq!(
        &out[..n],
        &[42, 0x1111],
        "the link into the guard page is not followed"
    );
    pages.frame(base, base + 3 * PAGE + 4 * PAGE, 0x2222);
    let n = walk(
        Registers {
            pc: 42,
            fp: base,
            sp: base,
        },
        &mut out,
    );
    assert_eq!(&out[..n], &[42, 0x2222]);
}

#[test]
fn frames_outside_any_known_stack_are_read_through_the_kernel() {
    let pages = Pages::new();
    let (lo, hi) = (pages.0, pages.0 + 2 * PAGE);
    // A chain in the first page, on to the last page, ending in a frame with no caller.
    pages.frame(lo, lo + 64, 0xa1);
    pages.frame(lo + 64, hi + 32, 0xa2);
    pages.frame(hi + 32, 0, 0xa3);
    let mut out = [0usize; 8];
    let before = kernel_reads();
    let n = walk(
        Registers {
            pc: 7,
            fp: lo,
            sp: lo,
        },
        &mut out,
    );
    assert_eq!(&out[..n], &[7, 0xa1, 0xa2, 0xa3]);
    assert!(
        kernel_reads() - before >= 3,
        "each link was read by the kernel"
    );
    // A loop (a link pointing back) ends the walk too.
    pages.frame(hi + 32, lo, 0xa3);
    let n = walk(
        Registers {
            pc: 7,
            fp: lo,
            sp: lo,
        },
        &mut out,
    );
    assert_eq!(&out[..n], &[7, 0xa1, 0xa2, 0xa3]);
    // A full buffer stops at its size.
    let mut small = [0usize; 2];
    assert_eq!(
        walk(
            Registers {
                pc: 7,
                fp: lo,
                sp: lo
            },
            &mut small
        ),
        2
    );
}

#[inline(never)]
fn unwind_test_outer(out: &mut [usize]) -> usize {
    std::hint::black_box(unwind_test_inner(out))
}

#[inline(never)]
fn unwind_test_inner(out: &mut [usize]) -> usize {
    std::hint::black_box(walk_here(out))
}

#[test]
fn a_threads_own_stack_is_walked_without_system_calls_after_the_first_walk() -> crate::TestResult {
    let on_thread = std::thread::spawn(|| {
        // No profiling signal walks this thread meanwhile.
        // SAFETY: a valid, initialised signal set, applied to this thread only.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut set);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        let mut out = [0usize; 32];
        let first = unwind_test_outer(&mut out);
        let before = kernel_reads();
        let mut walks = Vec::new();
        for _ in 0..10 {
            let n = unwind_test_outer(&mut out);
            walks.push(out[..n].to_vec());
        }
        (first, walks, kernel_reads() - before)
    });
    let (first, walks, reads) = on_thread
        .join()
        .map_err(|_| "the walking thread panicked")?;
    assert_eq!(reads, 0, "walks after the first read their frames directly");
    for stack in &walks {
        assert_eq!(stack.len(), first);
        // The leaf is a pc in unwind_test_inner; unwind_test_outer and the thread's
        // start follow.
        let names: Vec<Vec<String>> = stack
            .iter()
            .enumerate()
            .map(|(i, a)| {
                crate::capture::symbolize::local::function_names(
                    crate::capture::symbolize::lookup_address(*a, i == 0),
                )
            })
            .collect();
        let has = |i: usize, f: &str| names[i].iter().any(|n| n.ends_with(f));
        assert!(has(0, "unwind::tests::unwind_test_inner"), "{names:#?}");
        assert!(has(1, "unwind::tests::unwind_test_outer"), "{names:#?}");
        assert!(stack.len() >= 5, "{names:#?}");
    }
    Ok(())
}

/// Code bytes for the walks below: `push rbp`, `mov rbp, rsp`, `ret`, then `nop`s (the
/// unwinder reads 16 bytes at the pc).
static CODE: [u8; 32] = [
    0x55, 0x48, 0x89, 0xe5, 0xc3, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90,
    0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90,
];

#[test]
fn a_function_interrupted_in_its_frame_set_up_or_tear_down_keeps_its_caller() {
    let pages = Pages::new();
    let lo = pages.0;
    let code = CODE.as_ptr() as usize;
    // The caller's frame (rbp still, or again, points at it) returns into 0xa2; the
    // interrupted function returns into the caller at 0xa1.
    let (sp, fp) = (lo + 128, lo + 256);
    pages.frame(fp, 0, 0xa2);
    let mut out = [0usize; 8];
    let interrupted_at = |pc: usize, out: &mut [usize]| {
        let n = walk_interrupted(Registers { pc, fp, sp }, out);
        out[..n].to_vec()
    };
    // At `push rbp` and at `ret` the return address is at [sp].
    pages.frame(sp, 0xa1, 0);
    assert_eq!(interrupted_at(code, &mut out), [code, 0xa1, 0xa2]);
    assert_eq!(interrupted_at(code + 4, &mut out), [code + 4, 0xa1, 0xa2]);
    // At `mov rbp, rsp` the saved rbp is at [sp], the return address above it.
    pages.frame(sp, fp, 0xa1);
    assert_eq!(interrupted_at(code + 1, &mut out), [code + 1, 0xa1, 0xa2]);
    // In the body the chain is whole already: nothing is put back.
    assert_eq!(interrupted_at(code + 5, &mut out), [code + 5, 0xa2]);
    // A walk of the calling code's own stack never looks: its pc is in a body.
    let n = walk(Registers { pc: code, fp, sp }, &mut out);
    assert_eq!(&out[..n], &[code, 0xa2]);
    // A pc that cannot be read, and a return address of 0, put nothing back.
    assert_eq!(interrupted_at(lo + PAGE, &mut out), [lo + PAGE, 0xa2]);
    pages.frame(sp, 0, 0);
    assert_eq!(interrupted_at(code, &mut out), [code, 0xa2]);
    // A buffer of one takes the pc alone.
    let mut one = [0usize; 1];
    assert_eq!(
        walk_interrupted(Registers { pc: code, fp, sp }, &mut one),
        1
    );
}

#[inline(never)]
fn unwind_test_framed() -> usize {
    std::hint::black_box(3)
}

#[test]
fn the_services_own_code_is_read_without_system_calls() {
    init_interrupted();
    let pc = unwind_test_framed as *const () as usize;
    // SAFETY: reads the first byte of a function of this binary.
    let first = unsafe { (pc as *const u8).read() };
    assert_eq!(
        first, 0x55,
        "built with frame pointers, it starts with push rbp"
    );
    let pages = Pages::new();
    let lo = pages.0;
    let (sp, fp) = (lo + 128, lo + 256);
    pages.frame(fp, 0, 0xa2);
    pages.frame(sp, 0xa1, 0);
    let mut out = [0usize; 8];
    let mut walk_counted = |pc: usize| {
        let before = kernel_reads();
        let n = walk_interrupted(Registers { pc, fp, sp }, &mut out);
        (out[..n].to_vec(), kernel_reads() - before)
    };
    // The fake stack is no thread's own, so its words are read by the kernel either way;
    // the instruction is too when it is not the service's code (a static here).
    let (own, own_reads) = walk_counted(pc);
    let other = CODE.as_ptr() as usize;
    let (elsewhere, elsewhere_reads) = walk_counted(other);
    assert_eq!(own, [pc, 0xa1, 0xa2]);
    assert_eq!(elsewhere, [other, 0xa1, 0xa2]);
    assert_eq!(
        elsewhere_reads,
        own_reads + 1,
        "the service's own instruction is read without the kernel"
    );
}
