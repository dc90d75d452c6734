//! Character classes of the two pretokenization patterns.
//!
//! tiktoken matches its patterns with fancy-regex, whose Unicode tables come from
//! `regex-syntax`. The classes here are built from the same crate so that both agree on
//! every code point, then flattened into a two-level table: one lookup per character
//! instead of a binary search over ranges.

use std::sync::OnceLock;

use regex_syntax::hir::{Class, HirKind};
use rustc_hash::FxHashMap;

/// `\p{L}`: letters.
pub const LETTER: u8 = 1;
/// `\p{N}`: numbers.
pub const NUMBER: u8 = 2;
/// `\s`: the Unicode White_Space property.
pub const SPACE: u8 = 4;
/// `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]`: the "upper" run of o200k's word alternatives.
pub const UPPER: u8 = 8;
/// `[\p{Ll}\p{Lm}\p{Lo}\p{M}]`: the "lower" run of o200k's word alternatives.
pub const LOWER: u8 = 16;

const CLASSES: [(&str, u8); 5] = [
    (r"\p{L}", LETTER),
    (r"\p{N}", NUMBER),
    (r"\s", SPACE),
    (r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]", UPPER),
    (r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]", LOWER),
];

const BLOCK: usize = 256;
const CODE_POINTS: usize = 0x11_0000;

/// Class bits of every code point, stored as deduplicated 256-entry blocks.
pub struct Table {
    block_of: Vec<u16>,
    blocks: Vec<[u8; BLOCK]>,
}

/// ASCII classes as a constant, so the common case needs no lazy initialisation check;
/// a test checks them against the Unicode tables.
static ASCII: [u8; 128] = ascii_classes();
static TABLE: OnceLock<Table> = OnceLock::new();

fn class_ranges(pattern: &str) -> Vec<(u32, u32)> {
    // The patterns are constants that regex-syntax always parses into a Unicode class;
    // an empty range list here would make the differential tests fail loudly.
    match regex_syntax::parse(pattern).map(|hir| hir.kind().clone()) {
        Ok(HirKind::Class(Class::Unicode(class))) => class
            .ranges()
            .iter()
            .map(|r| (u32::from(r.start()), u32::from(r.end())))
            .collect(),
        _ => Vec::new(),
    }
}

fn build_table() -> Table {
    let mut flat = vec![0u8; CODE_POINTS];
    for (pattern, bit) in CLASSES {
        for (start, end) in class_ranges(pattern) {
            for cp in start..=end {
                flat[cp as usize] |= bit;
            }
        }
    }

    let mut blocks: Vec<[u8; BLOCK]> = Vec::new();
    let mut seen: FxHashMap<[u8; BLOCK], u16> = FxHashMap::default();
    let mut block_of = Vec::with_capacity(CODE_POINTS / BLOCK);
    for chunk in flat.chunks_exact(BLOCK) {
        let mut block = [0u8; BLOCK];
        block.copy_from_slice(chunk);
        let index = *seen.entry(block).or_insert_with(|| {
            blocks.push(block);
            (blocks.len() - 1) as u16
        });
        block_of.push(index);
    }
    Table { block_of, blocks }
}

/// The table of every code point, built on first use.
pub fn table() -> &'static Table {
    TABLE.get_or_init(build_table)
}

impl Table {
    /// The class bits of one code point.
    #[inline]
    pub fn class_of(&self, cp: u32) -> u8 {
        if cp < 128 {
            return ASCII[cp as usize];
        }
        let block = self.block_of[(cp as usize) / BLOCK] as usize;
        self.blocks[block][(cp as usize) % BLOCK]
    }
}

/// The class bits of an ASCII byte (below 0x80).
#[inline(always)]
pub fn ascii_class(byte: u8) -> u8 {
    ASCII[usize::from(byte & 0x7F)]
}

const fn ascii_classes() -> [u8; 128] {
    let mut classes = [0u8; 128];
    let mut c = 0;
    while c < 128 {
        let b = c as u8;
        classes[c] = if b.is_ascii_lowercase() {
            LETTER | LOWER
        } else if b.is_ascii_uppercase() {
            LETTER | UPPER
        } else if b.is_ascii_digit() {
            NUMBER
        } else if matches!(b, b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ') {
            SPACE
        } else {
            0
        };
        c += 1;
    }
    classes
}

/// Builds the tables now, so that the first count does not pay for it.
pub fn warm_up() {
    table();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class_of(cp: u32) -> u8 {
        table().class_of(cp)
    }

    #[test]
    fn ascii_classes() {
        assert_eq!(class_of('a' as u32), LETTER | LOWER);
        assert_eq!(class_of('A' as u32), LETTER | UPPER);
        assert_eq!(class_of('7' as u32), NUMBER);
        assert_eq!(class_of(' ' as u32), SPACE);
        assert_eq!(class_of('\n' as u32), SPACE);
        assert_eq!(class_of('!' as u32), 0);
    }

    #[test]
    fn ascii_constants_match_the_unicode_tables() {
        let table = table();
        let first_block = &table.blocks[table.block_of[0] as usize];
        for (cp, bits) in ASCII.iter().enumerate() {
            assert_eq!(*bits, first_block[cp], "{cp:#x}");
        }
    }

    #[test]
    fn unicode_classes() {
        // Combining acute accent: a mark, so in both word runs but not a letter.
        assert_eq!(class_of(0x301), UPPER | LOWER);
        // CJK ideograph: Lo, in both runs and a letter.
        assert_eq!(class_of('中' as u32), LETTER | UPPER | LOWER);
        assert_eq!(class_of(0x3000), SPACE);
        assert_eq!(class_of('٣' as u32), NUMBER);
        assert_eq!(class_of(0x10FFFF), 0);
    }
}
