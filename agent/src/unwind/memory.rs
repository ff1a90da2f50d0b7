//! Reading memory that may not be there, without a fault and without a file
//! descriptor: `process_vm_readv` on this process's own pid copies it in the kernel,
//! which answers `EFAULT` for what is unmapped or unreadable (guard pages included).
//! Plus the main thread's stack, found once in `/proc/self/maps` without allocating.
//!
//! Everything here is async-signal-safe: system calls on stack buffers, no allocation,
//! no lock.

use std::sync::atomic::AtomicU8;

#[cfg(test)]
thread_local! {
    /// Reads through the kernel made by this thread (tests count them).
    pub(super) static KERNEL_READS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn count_kernel_read() {
    #[cfg(test)]
    KERNEL_READS.with(|c| c.set(c.get() + 1));
}

/// Bytes the kernel copies into on each pass of a range check.
const SCRATCH_BYTES: usize = 64 * 1024;
/// Pieces of [`SCRATCH`] one `process_vm_readv` call writes (the same buffer over and
/// over: only whether the copy succeeds matters), so one call checks 1 MiB.
const SCRATCH_PIECES: usize = 16;

/// Where range checks copy to. Nothing ever reads it; atomics, so the kernel writing
/// it from several threads at once is nobody's data race.
static SCRATCH: [AtomicU8; SCRATCH_BYTES] = [const { AtomicU8::new(0) }; SCRATCH_BYTES];

/// The two words at `addr` (a saved frame pointer and a return address), read by the
/// kernel; `None` where they cannot be read.
pub(super) fn read_pair(addr: usize) -> Option<(usize, usize)> {
    count_kernel_read();
    let mut words = [0usize; 2];
    let local = libc::iovec {
        iov_base: words.as_mut_ptr().cast(),
        iov_len: std::mem::size_of_val(&words),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: std::mem::size_of_val(&words),
    };
    // SAFETY: the kernel writes at most `local.iov_len` bytes into `words`, a local of
    // that size, and only reads at `addr` in this process, answering EFAULT if it
    // cannot; getpid has no preconditions.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    (n == std::mem::size_of_val(&words) as isize).then_some((words[0], words[1]))
}

/// Whether every byte of `[lo, hi)` can be read now. Copies the range (into a scratch
/// buffer) in calls of up to 1 MiB.
pub(super) fn range_readable(lo: usize, hi: usize) -> bool {
    count_kernel_read();
    let base = SCRATCH.as_ptr() as *mut libc::c_void;
    let local = [libc::iovec {
        iov_base: base,
        iov_len: SCRATCH_BYTES,
    }; SCRATCH_PIECES];
    let mut at = lo;
    while at < hi {
        let len = (hi - at).min(SCRATCH_BYTES * SCRATCH_PIECES);
        let remote = libc::iovec {
            iov_base: at as *mut libc::c_void,
            iov_len: len,
        };
        let pieces = len.div_ceil(SCRATCH_BYTES);
        // SAFETY: the kernel writes at most `len` bytes, spread over `pieces` iovecs
        // that each point at the whole of SCRATCH (never read, atomics), and reads only
        // at [at, at + len) of this process, answering EFAULT (or a short count) where
        // it cannot.
        let n = unsafe {
            libc::process_vm_readv(
                libc::getpid(),
                local.as_ptr(),
                pieces as libc::c_ulong,
                &remote,
                1,
                0,
            )
        };
        if n != len as isize {
            return false;
        }
        at += len;
    }
    true
}

/// The `[stack]` mapping of `/proc/self/maps` (the main thread's stack): (start, end).
/// Reads the file on the stack in small pieces, allocating nothing.
pub(super) fn main_stack_mapping() -> Option<(usize, usize)> {
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe {
        libc::open(
            c"/proc/self/maps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    let mut buf = [0u8; 4096];
    let mut kept = 0usize;
    let mut found = None;
    while let Some(free) = buf.get_mut(kept..) {
        // SAFETY: reads at most `free.len()` bytes into `free`.
        let n = unsafe { libc::read(fd, free.as_mut_ptr().cast(), free.len()) };
        if n <= 0 {
            break;
        }
        let filled = kept + n as usize;
        let data = buf.get(..filled).unwrap_or(&[]);
        let mut start = 0;
        while let Some(end) = data
            .get(start..)
            .and_then(|d| d.iter().position(|b| *b == b'\n'))
        {
            let line = data.get(start..start + end).unwrap_or(&[]);
            if line.ends_with(b"[stack]") {
                found = parse_range(line);
            }
            start += end + 1;
        }
        // Keep the unfinished last line; a line longer than the buffer is dropped.
        let rest = filled - start;
        if rest == buf.len() {
            kept = 0;
        } else {
            buf.copy_within(start..filled, 0);
            kept = rest;
        }
        if found.is_some() {
            break;
        }
    }
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    found
}

/// `7ffd1000-7ffd3000 rw-p …` → (0x7ffd1000, 0x7ffd3000).
fn parse_range(line: &[u8]) -> Option<(usize, usize)> {
    let range = line.split(|b| *b == b' ').next()?;
    let dash = range.iter().position(|b| *b == b'-')?;
    let hex = |s: &[u8]| -> Option<usize> {
        let mut v = 0usize;
        for b in s {
            let d = (*b as char).to_digit(16)? as usize;
            v = v.checked_mul(16)?.checked_add(d)?;
        }
        (!s.is_empty()).then_some(v)
    };
    Some((hex(range.get(..dash)?)?, hex(range.get(dash + 1..)?)?))
}

#[cfg(test)]
mod tests;
