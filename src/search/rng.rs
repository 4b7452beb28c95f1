//! A small seeded random number generator (SplitMix64) for the search strategies.
//!
//! The strategies need the same order for the same seed on every machine and every version of
//! the engine, which SplitMix64 gives with a few lines and no dependency: a 64-bit counter
//! advanced by a fixed odd constant, then mixed by two multiply-xorshift rounds.

/// SplitMix64: the state advances by the golden-ratio constant and each output is the state
/// mixed.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0), by rejection so that every number is equally
    /// likely.
    pub fn below(&mut self, bound: usize) -> usize {
        let bound = bound as u64;
        let zone = u64::MAX - u64::MAX % bound;
        loop {
            let value = self.next_u64();
            if value < zone {
                return (value % bound) as usize;
            }
        }
    }

    /// `0..n` in an order shuffled by Fisher-Yates.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.below(i + 1);
            order.swap(i, j);
        }
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_output_for_seed_zero_is_splitmix64s() {
        // The published first output of SplitMix64 seeded with 0.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn a_permutation_holds_every_index_once_and_depends_on_the_seed() {
        let a = SplitMix64::new(1).permutation(50);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_eq!(a, SplitMix64::new(1).permutation(50));
        assert_ne!(a, SplitMix64::new(2).permutation(50));
    }
}
