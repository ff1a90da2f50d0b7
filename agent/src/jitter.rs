//! Random spread for delays, so a fleet of agents does not act in lockstep (reconnects
//! after a collector restart, baselines after a deploy). xorshift: quality is
//! irrelevant, independence between processes is what matters.

use std::time::Duration;

use crate::clock::unix_nanos_now;

/// A small random source seeded from the clock and the process id.
#[derive(Debug)]
pub(crate) struct Jitter(u64);

impl Jitter {
    pub(crate) fn new() -> Self {
        Jitter(unix_nanos_now() ^ (u64::from(std::process::id()) << 32) | 1)
    }

    /// `d` scaled by a random factor in [1 - `fraction`, 1 + `fraction`).
    pub(crate) fn spread(&mut self, d: Duration, fraction: f64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let unit = (self.0 % 1_000) as f64 / 1_000.0;
        d.mul_f64(1.0 - fraction + unit * 2.0 * fraction)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_its_fraction_and_spreads() {
        let mut j = Jitter::new();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..1_000 {
            let d = j.spread(Duration::from_secs(100), 0.2);
            assert!(
                d >= Duration::from_secs(80) && d < Duration::from_secs(120),
                "{d:?}"
            );
            seen.insert(d.as_secs() / 10);
        }
        assert!(seen.len() >= 4, "spread over the range: {seen:?}");
    }
}
