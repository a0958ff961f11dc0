//! Hash maps keyed by ids funcx makes itself: task, worker and function ids.
//!
//! Task and worker ids are sequential numbers, and function ids are already uniform hashes,
//! so the standard library's SipHash (built to resist keys chosen by an attacker) is wasted
//! work on the hottest paths (the dispatcher, a manager's session).
//!
//! The hash keeps a key's low bits as they are and mixes only its top seven. The table picks
//! a key's bucket from the low bits and compares the top seven (its tag) while probing, so
//! tasks submitted together (consecutive ids) sit in neighbouring buckets: a batch inserted,
//! dispatched and finished together touches a few cache lines instead of one per task, which
//! matters when a million tasks are in flight and the table is far larger than the caches.
//! The mixed tag keeps probing as selective as a fully mixed hash.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Fibonacci hashing's multiplier (2^64 / φ): the high bits of the product depend on every
/// bit of the input.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The hash bits the table compares while probing (hashbrown's tag: the top seven).
const TAG: u64 = 0x7F << 57;

/// The two halves of the full product of `a` and `b`, xored: every bit of the result depends
/// on every bit of `a` (for an odd `b`), where a plain multiplication's low bits depend only on
/// `a`'s low bits. Zero stays zero, so the first word of a key is taken as it is.
fn folded_multiply(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

/// A hasher for keys that are sequential numbers or already hashes (a [`crate::TaskId`], a
/// [`crate::FunctionId`]).
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // The low bits as they are (the bucket), the top seven mixed (the tag).
        let tag = self.0.wrapping_mul(GOLDEN) & TAG;
        tag | (self.0 & !TAG)
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
        // A one-word key (an id) stays itself; the words of a longer one (a function id, as
        // bytes) are mixed into each other, so every one of them moves the low bits.
        self.0 = folded_multiply(self.0, GOLDEN) ^ value;
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
    fn sequential_ids_take_neighbouring_buckets_with_spread_tags() {
        let build = BuildHasherDefault::<IdHasher>::default();
        let first = 1 << 40;
        let hashes: Vec<u64> = (first..first + 1024_u64)
            .map(|id| build.hash_one(id))
            .collect();
        // The bucket of a table of 1,024 (the low ten bits) is the id's own: one each, in
        // order.
        for (offset, hash) in hashes.iter().enumerate() {
            assert_eq!(hash & 1023, (first + offset as u64) & 1023);
        }
        // The tags (top seven bits): 1,024 ids over 128 tags use nearly all of them.
        let tags: HashSet<u64> = hashes.iter().map(|hash| hash >> 57).collect();
        assert!(tags.len() > 120, "{}", tags.len());
    }

    #[test]
    fn a_function_id_moves_the_bucket_with_every_word() {
        let build = BuildHasherDefault::<IdHasher>::default();
        let base = [7_u8; 32];
        // The key and four others, each with one of its four words changed.
        let buckets: HashSet<u64> = (0..5)
            .map(|word| {
                let mut key = base;
                if word > 0 {
                    key[8 * (word - 1)] ^= 1;
                }
                build.hash_one(key) & 0xFFFF
            })
            .collect();
        assert_eq!(buckets.len(), 5, "each changed word gives another bucket");
    }
}
