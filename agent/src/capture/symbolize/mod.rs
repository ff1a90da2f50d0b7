//! Code addresses of this process: which module they are in and at which offset
//! ([`modules`], for the collector's native profiles), and, for local dumps only, the
//! functions, files and lines there ([`local`], with `holmes-symbolize`). Never in a
//! signal handler: this allocates and takes locks.

pub(crate) mod local;
pub(crate) mod modules;

/// The address whose code a stack entry stands for: the interrupted pc itself for the
/// leaf, the call instruction (return address − 1) for the others.
pub(crate) fn lookup_address(addr: usize, leaf: bool) -> usize {
    if leaf {
        addr
    } else {
        addr.saturating_sub(1)
    }
}
