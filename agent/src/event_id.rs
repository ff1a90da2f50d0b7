//! Event and profile ids: 128 random bits in hex, from the kernel's `getrandom`, so ids
//! from a whole fleet never collide.

use std::sync::atomic::{AtomicU64, Ordering};

static FALLBACK_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new 32-character hex id.
pub(crate) fn new() -> String {
    let mut bytes = [0u8; 16];
    // SAFETY: the buffer is valid and writable for its length.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), libc::GRND_NONBLOCK) };
    if usize::try_from(n).ok() != Some(bytes.len()) {
        // No entropy (very early boot): time, pid and a counter are still unique here.
        let t = crate::clock::unix_nanos_now();
        let c = FALLBACK_COUNTER.fetch_add(1, Ordering::Relaxed);
        bytes[..8].copy_from_slice(&t.to_le_bytes());
        bytes[8..12].copy_from_slice(&std::process::id().to_le_bytes());
        bytes[12..].copy_from_slice(&(c as u32).to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_hex_and_distinct() {
        let a = super::new();
        let b = super::new();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
