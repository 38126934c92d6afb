//! What the seeded simulations of the cluster's rules share (`sessions/sim.rs` here,
//! `replication`'s `sim.rs`): their randomness, and which seeds a run takes.

/// SplitMix64: a run's every random choice, from its seed, so a seed replays exactly.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (0 for n 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The seeds a run takes: the one `{prefix}_SEED` names (to replay a failure), else
/// `{prefix}_SEEDS` of them from 0 (1,000 by default).
pub fn seeds(prefix: &str) -> Vec<u64> {
    let var = |name: String| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    match var(format!("{prefix}_SEED")) {
        Some(one) => vec![one],
        None => (0..var(format!("{prefix}_SEEDS")).unwrap_or(1000)).collect(),
    }
}
