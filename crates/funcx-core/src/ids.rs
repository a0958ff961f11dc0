//! Hash maps keyed by ids funcx makes itself: task, worker and function ids.
//!
//! Task and worker ids are sequential numbers, and function ids are already uniform hashes,
//! so the standard library's SipHash (built to resist keys chosen by an attacker) is wasted
//! work on the hottest paths (the dispatcher, a manager's session). A multiplication spreads sequential ids over the
//! table just as well.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A hasher for keys that are sequential numbers or already hashes (a [`crate::TaskId`], a
/// [`crate::FunctionId`]).
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys hashed as bytes; fold them in eight at a time.
        for chunk in bytes.chunks(8) {
            let mut word = [0_u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, value: u64) {
        // Fibonacci hashing: the high bits, which the table uses, depend on every input bit.
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }

    fn write_usize(&mut self, value: usize) {
        self.write_u64(value as u64);
    }
}

/// A `HashMap` keyed by funcx-made ids. Not for keys an outsider chooses.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// A `HashSet` of funcx-made ids. Not for keys an outsider chooses.
pub type IdSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn sequential_ids_spread_over_the_high_bits() {
        let build = BuildHasherDefault::<IdHasher>::default();
        let buckets: std::collections::HashSet<u64> =
            (0..1024_u64).map(|id| build.hash_one(id) >> 54).collect();
        // 1,024 sequential ids over 1,024 buckets of the top ten bits: most are distinct.
        assert!(buckets.len() > 600, "{}", buckets.len());
    }
}
