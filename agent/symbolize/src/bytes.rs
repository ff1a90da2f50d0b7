//! Section bytes the DWARF reader and the symbol table hold: a range of a buffer that is
//! either owned (read or decompressed sections) or a read-only mapping of the module's
//! file, shared by reference count and given back when the last holder drops it.

use std::ops::Deref;
use std::sync::Arc;

/// Where bytes live.
#[derive(Debug)]
pub(crate) enum Backing {
    /// Owned.
    Heap(Box<[u8]>),
    /// A read-only private mapping of a whole file, unmapped on drop.
    Mapped(Mapping),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Heap(b) => b,
            Backing::Mapped(m) => m.bytes(),
        }
    }
}

/// A read-only private mapping of a file.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: *const u8,
    len: usize,
}

// SAFETY: the mapping is read-only and never written through; its pages may be read from
// any thread.
unsafe impl Send for Mapping {}
// SAFETY: as above: shared reads only.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps all of `file` read-only.
    ///
    /// # Safety
    /// The file must not be truncated while the mapping lives: reading a page past its
    /// new end raises `SIGBUS`.
    pub(crate) unsafe fn map(file: &std::fs::File) -> std::io::Result<Mapping> {
        use std::os::fd::AsRawFd;
        let len = usize::try_from(file.metadata()?.len())
            .map_err(|_| std::io::Error::other("the file does not fit in memory"))?;
        if len == 0 {
            return Err(std::io::Error::other("the file is empty"));
        }
        // SAFETY: a private read-only mapping of an open file; the kernel checks the
        // arguments and answers MAP_FAILED on error.
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
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until drop, never written (the
        // caller of `map` promised the file keeps its length).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped; no slice of it outlives the
        // mapping (they borrow from it, or hold the Arc that owns it).
        unsafe {
            libc::munmap(self.ptr.cast_mut().cast(), self.len);
        }
    }
}

/// A range of a shared buffer.
#[derive(Debug, Clone)]
pub(crate) struct SectionBytes {
    owner: Arc<Backing>,
    start: usize,
    len: usize,
}

impl SectionBytes {
    /// All of an owned buffer.
    pub(crate) fn owned(bytes: Vec<u8>) -> SectionBytes {
        let len = bytes.len();
        SectionBytes {
            owner: Arc::new(Backing::Heap(bytes.into_boxed_slice())),
            start: 0,
            len,
        }
    }

    /// `len` bytes at `start` of `owner`; `None` if they are not all there.
    pub(crate) fn range(owner: &Arc<Backing>, start: u64, len: u64) -> Option<SectionBytes> {
        let start = usize::try_from(start).ok()?;
        let len = usize::try_from(len).ok()?;
        owner.bytes().get(start..start.checked_add(len)?)?;
        Some(SectionBytes {
            owner: Arc::clone(owner),
            start,
            len,
        })
    }

    pub(crate) fn empty() -> SectionBytes {
        SectionBytes::owned(Vec::new())
    }

    /// Whether the bytes are a file mapping's.
    pub(crate) fn is_mapped(&self) -> bool {
        matches!(*self.owner, Backing::Mapped(_))
    }
}

impl Deref for SectionBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // Checked when made; `get` keeps it panic-free regardless.
        self.owner
            .bytes()
            .get(self.start..self.start + self.len)
            .unwrap_or(&[])
    }
}

// SAFETY: the bytes live in the buffer `owner` points to (a heap allocation or a
// mapping), which moving a `SectionBytes` does not move.
unsafe impl stable_deref_trait::StableDeref for SectionBytes {}
// SAFETY: a clone points into the same buffer, so derefs to the same address.
unsafe impl stable_deref_trait::CloneStableDeref for SectionBytes {}
