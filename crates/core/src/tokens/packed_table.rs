//! An open-addressing hash table from packed short tokens to ranks, 16 bytes a slot.
//!
//! Nearly every rank lookup is for a token of a few bytes, packed with its length into a
//! `u128` (see [`super::ranks::pack`]). A general-purpose map reads a control group and
//! then a separate bucket for each lookup, two cache misses on a table of megabytes;
//! here the rank rides in the key's unused bytes, the table is kept at most half full
//! and probed linearly, so a lookup is one multiply and usually one slot read, hit or
//! miss. With 16-byte slots at half load the table takes no more memory than a map
//! sized exactly for the vocabulary with 32-byte buckets.

use super::ranks::NO_RANK;

/// Keys of tokens up to this long leave bytes 12 to 14 of the packed key zero: the rank
/// is stored there.
pub const TABLE_MAX: usize = 12;
/// Ranks below this fit in those three bytes.
pub const RANK_LIMIT: u32 = 1 << 24;
const RANK_SHIFT: u32 = 96;
const RANK_BITS: u128 = 0xFF_FFFF << RANK_SHIFT;

pub struct PackedTable {
    // Packed key with the rank in its bytes 12 to 14. A packed key is never 0 (its
    // length byte is not), so zeroed slots are empty.
    slots: Box<[u128]>,
    // `slots.len() - 1`; the length is a power of two.
    mask: usize,
    // 64 less the number of bits of a slot index.
    shift: u32,
    len: usize,
}

impl Default for PackedTable {
    fn default() -> Self {
        PackedTable::with_capacity(0)
    }
}

impl PackedTable {
    /// A table that holds `capacity` keys without growing.
    pub fn with_capacity(capacity: usize) -> Self {
        let slots = (capacity * 2).max(16).next_power_of_two();
        PackedTable {
            slots: vec![0; slots].into_boxed_slice(),
            mask: slots - 1,
            shift: 64 - slots.trailing_zeros(),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The first slot to probe for `key`: the high bits of a multiplicative hash of the
    /// low word with the high word (later bytes and the length) folded in.
    #[inline]
    fn home(&self, key: u128) -> usize {
        let folded = key as u64 ^ ((key >> 64) as u64).rotate_left(29);
        (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// The rank of `key`, the packed form of at most [`TABLE_MAX`] bytes, or [`NO_RANK`].
    #[inline]
    pub fn get(&self, key: u128) -> u32 {
        let mut i = self.home(key);
        loop {
            let slot = self.slots[i];
            if slot & !RANK_BITS == key {
                return (slot >> RANK_SHIFT) as u32 & (RANK_LIMIT - 1);
            }
            // Keys are never removed, so an empty slot ends every probe sequence.
            if slot == 0 {
                return NO_RANK;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Sets the rank of `key`, the packed form of 1 to [`TABLE_MAX`] bytes; `rank` is
    /// below [`RANK_LIMIT`].
    pub fn insert(&mut self, key: u128, rank: u32) {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let entry = key | u128::from(rank & (RANK_LIMIT - 1)) << RANK_SHIFT;
        let mut i = self.home(key);
        loop {
            let slot = &mut self.slots[i];
            if *slot == 0 {
                self.len += 1;
            }
            if *slot == 0 || *slot & !RANK_BITS == key {
                *slot = entry;
                return;
            }
            i = (i + 1) & self.mask;
        }
    }

    fn grow(&mut self) {
        let old = std::mem::replace(self, PackedTable::with_capacity(self.slots.len()));
        for &slot in old.slots.iter().filter(|&&s| s != 0) {
            self.insert(
                slot & !RANK_BITS,
                (slot >> RANK_SHIFT) as u32 & (RANK_LIMIT - 1),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::ranks::pack;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        /// The table answers as a standard map does, for present and absent tokens,
        /// through every growth from an empty table.
        #[test]
        fn agrees_with_a_standard_map(
            entries in proptest::collection::vec(
                (proptest::collection::vec(0u8.., 1..=TABLE_MAX), 0..RANK_LIMIT),
                0..500,
            ),
            probes in proptest::collection::vec(
                proptest::collection::vec(0u8.., 1..=TABLE_MAX), 0..100,
            ),
        ) {
            let mut table = PackedTable::default();
            let mut map = HashMap::new();
            for (token, rank) in &entries {
                table.insert(pack(token), *rank);
                map.insert(token.clone(), *rank);
            }
            prop_assert_eq!(table.len(), map.len());
            for token in entries.iter().map(|e| &e.0).chain(&probes) {
                let expected = map.get(token).copied().unwrap_or(NO_RANK);
                prop_assert_eq!(table.get(pack(token)), expected);
            }
        }
    }

    #[test]
    fn tokens_that_differ_only_in_length_are_distinct() {
        let mut table = PackedTable::with_capacity(4);
        table.insert(pack(b"a\0"), 1);
        table.insert(pack(b"a"), 2);
        assert_eq!((table.get(pack(b"a\0")), table.get(pack(b"a"))), (1, 2));
        assert_eq!(table.get(pack(b"a\0\0")), NO_RANK);
    }
}
