//! The broker's one source of randomness (`Broker::random`): SplitMix64, seeded from the
//! operating system at start (`Random::from_os`) or from a given seed in tests and simulations
//! (`Random::seeded`), so a run can be replayed from its seed. Not for secrets.
//!
//! Used for group member ids, topic ids, the cluster id of a new data directory and the
//! broker's incarnation id; only the names of directories moved aside use `meta::random_id`.

use std::sync::atomic::{AtomicU64, Ordering};

const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

#[derive(Debug)]
pub struct Random {
    state: AtomicU64,
    seed: u64,
}

impl Random {
    /// A generator that yields the same sequence for the same seed.
    pub fn seeded(seed: u64) -> Random {
        Random {
            state: AtomicU64::new(seed),
            seed,
        }
    }

    /// Seeded from the operating system (std's per-process hash keys, which it draws from the
    /// OS), mixed with the time.
    pub fn from_os() -> Random {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        Random::seeded(h.finish())
    }

    /// The seed this generator started from (to log, so a run can be replayed).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The next 64 random bits. Safe to call from many threads (each call gets its own step).
    pub fn next_u64(&self) -> u64 {
        let mut z = self.state.fetch_add(GAMMA, Ordering::Relaxed).wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// 16 random bytes (a UUID's worth).
    pub fn bytes16(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        b[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        b
    }

    /// A number in `0..n` (`0` when `n` is 0), for jitter and choices.
    pub fn below(&self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Lemire's multiply-shift: the bias is at most n / 2^64.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_sequence() {
        let a = Random::seeded(42);
        let b = Random::seeded(42);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], xs[1]);
        // SplitMix64's published first output for seed 0.
        assert_eq!(Random::seeded(0).next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_ne!(Random::seeded(43).next_u64(), xs[0]);
        assert!((0..100).all(|_| a.below(10) < 10));
        assert_eq!(a.below(0), 0);
    }
}
