//! Hand-written splitters for the two fixed pretokenization patterns.
//!
//! Each function below reproduces one alternative of tiktoken's pattern with the same
//! leftmost-first, backtracking semantics as fancy-regex, so the pieces are identical.
//! Written out by hand, a split costs one table lookup per character and never recurses,
//! which makes it several times faster than a regex engine and immune to the
//! stack overflow fancy-regex hits on a million spaces.
//!
//! cl100k_base:
//! `'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s`
//!
//! o200k_base, alternatives joined with `|`:
//! `[^\r\n\p{L}\p{N}]?[UPPER]*[LOWER]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?`,
//! `[^\r\n\p{L}\p{N}]?[UPPER]+[LOWER]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?`,
//! `\p{N}{1,3}`, ` ?[^\s\p{L}\p{N}]+[\r\n/]*`, `\s*[\r\n]+`, `\s+(?!\S)`, `\s+`
//! with UPPER = `\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}` and LOWER = `\p{Ll}\p{Lm}\p{Lo}\p{M}`.

use super::chars::{self, ascii_class, Table, LETTER, LOWER, NUMBER, SPACE, UPPER};

/// Which of the two patterns splits the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    Cl100k,
    O200k,
}

/// One decoded character: code point, UTF-8 length and class bits.
#[derive(Clone, Copy)]
struct Ch {
    cp: u32,
    len: usize,
    class: u8,
}

impl Ch {
    #[inline]
    fn is(self, bits: u8) -> bool {
        self.class & bits != 0
    }

    #[inline]
    fn is_newline(self) -> bool {
        self.cp == u32::from(b'\r') || self.cp == u32::from(b'\n')
    }

    /// `[^\s\p{L}\p{N}]`: punctuation, symbols, marks, controls.
    #[inline]
    fn is_other(self) -> bool {
        self.class & (SPACE | LETTER | NUMBER) == 0
    }

    /// `[^\r\n\p{L}\p{N}]`: the optional one-character prefix of a word.
    #[inline]
    fn is_word_prefix(self) -> bool {
        self.class & (LETTER | NUMBER) == 0 && !self.is_newline()
    }

    /// Case-insensitive match of an ASCII letter, as `(?i:x)` does: `s` also matches
    /// U+017F LATIN SMALL LETTER LONG S, the only non-ASCII fold of the letters used.
    #[inline]
    fn is_letter(self, lower: u8) -> bool {
        self.cp == u32::from(lower)
            || self.cp == u32::from(lower.to_ascii_uppercase())
            || (lower == b's' && self.cp == 0x17F)
    }
}

#[inline]
fn decode(text: &[u8], pos: usize) -> (u32, usize) {
    let b0 = u32::from(text[pos]);
    if b0 < 0x80 {
        return (b0, 1);
    }
    let cont = |i: usize| u32::from(text[pos + i]) & 0x3F;
    if b0 < 0xE0 {
        ((b0 & 0x1F) << 6 | cont(1), 2)
    } else if b0 < 0xF0 {
        ((b0 & 0x0F) << 12 | cont(1) << 6 | cont(2), 3)
    } else {
        (
            (b0 & 0x07) << 18 | cont(1) << 12 | cont(2) << 6 | cont(3),
            4,
        )
    }
}

/// Reads characters and remembers whether a decision looked at the end of the text:
/// only pieces decided without doing so are final when more text may follow.
struct Scanner<'a> {
    text: &'a [u8],
    hit_end: bool,
    classes: &'static Table,
}

impl Scanner<'_> {
    /// The character at `pos`. Inlined everywhere: every decision of the splitter reads
    /// characters, and for ASCII this is one table lookup.
    #[inline(always)]
    fn at(&mut self, pos: usize) -> Option<Ch> {
        let Some(&byte) = self.text.get(pos) else {
            self.hit_end = true;
            return None;
        };
        if byte < 0x80 {
            return Some(Ch {
                cp: u32::from(byte),
                len: 1,
                class: ascii_class(byte),
            });
        }
        let (cp, len) = decode(self.text, pos);
        Some(Ch {
            cp,
            len,
            class: self.classes.class_of(cp),
        })
    }

    /// End of the longest run of characters with any of `bits`, from `pos`.
    #[inline]
    fn run_end(&mut self, mut pos: usize, bits: u8) -> usize {
        // ASCII bytes first, without decoding; the general loop takes over at the first
        // other byte and at the end of the text (where it notes that the end was seen).
        while let Some(&byte) = self.text.get(pos) {
            if byte >= 0x80 {
                break;
            }
            if ascii_class(byte) & bits == 0 {
                return pos;
            }
            pos += 1;
        }
        while let Some(ch) = self.at(pos) {
            if !ch.is(bits) {
                break;
            }
            pos += ch.len;
        }
        pos
    }

    fn other_run_end(&mut self, mut pos: usize) -> usize {
        while let Some(ch) = self.at(pos) {
            if !ch.is_other() {
                break;
            }
            pos += ch.len;
        }
        pos
    }

    /// End of the longest run of characters accepted by `accept`, from `pos`.
    fn run_while(&mut self, mut pos: usize, accept: impl Fn(u32) -> bool) -> usize {
        while let Some(ch) = self.at(pos) {
            if !accept(ch.cp) {
                break;
            }
            pos += ch.len;
        }
        pos
    }

    /// `\p{N}{1,3}`, from a position known to hold a number.
    fn digits_end(&mut self, mut pos: usize) -> usize {
        for _ in 0..3 {
            match self.at(pos) {
                Some(ch) if ch.is(NUMBER) => pos += ch.len,
                _ => break,
            }
        }
        pos
    }

    /// Scans the whitespace run at `start`: its end, the position after its last
    /// newline, and the start of its last character.
    fn whitespace_run(&mut self, start: usize) -> (usize, Option<usize>, usize) {
        let mut pos = start;
        let mut after_newline = None;
        let mut last_start = start;
        while let Some(ch) = self.at(pos) {
            if !ch.is(SPACE) {
                break;
            }
            last_start = pos;
            pos += ch.len;
            if ch.is_newline() {
                after_newline = Some(pos);
            }
        }
        (pos, after_newline, last_start)
    }

    /// cl100k's whitespace alternatives, at a whitespace character: `\s++$` (the whole
    /// run at the end of the text), `\s*[\r\n]` (up to the run's last newline),
    /// `\s+(?!\S)` (the run less its last character), then a single `\s`.
    fn cl100k_whitespace_end(&mut self, start: usize) -> usize {
        let (end, after_newline, last_start) = self.whitespace_run(start);
        if end == self.text.len() {
            return end;
        }
        if let Some(newline_end) = after_newline {
            return newline_end;
        }
        if last_start > start {
            last_start
        } else {
            end
        }
    }

    /// o200k's whitespace alternatives: `\s*[\r\n]+` first (up to the run's last
    /// newline, even at the end of the text), then `\s+(?!\S)`, then `\s+`.
    fn o200k_whitespace_end(&mut self, start: usize) -> usize {
        let (end, after_newline, last_start) = self.whitespace_run(start);
        if let Some(newline_end) = after_newline {
            return newline_end;
        }
        if end == self.text.len() || last_start == start {
            return end;
        }
        last_start
    }

    // ---- cl100k_base ----

    /// `'(?i:[sdmt]|ll|ve|re)` after the apostrophe at `pos - 1`.
    fn cl100k_contraction(&mut self, pos: usize) -> Option<usize> {
        let first = self.at(pos)?;
        if [b's', b'd', b'm', b't'].iter().any(|&c| first.is_letter(c)) {
            return Some(pos + first.len);
        }
        let second = self.at(pos + first.len)?;
        let pairs = [(b'l', b'l'), (b'v', b'e'), (b'r', b'e')];
        if pairs
            .iter()
            .any(|&(a, b)| first.is_letter(a) && second.is_letter(b))
        {
            return Some(pos + first.len + second.len);
        }
        None
    }

    fn cl100k_piece(&mut self, start: usize, first: Ch) -> usize {
        if first.cp == u32::from(b'\'') {
            if let Some(end) = self.cl100k_contraction(start + 1) {
                return end;
            }
        }
        if first.is(LETTER) {
            return self.run_end(start, LETTER);
        }
        if first.is_word_prefix() {
            // `?+` is possessive: once the prefix is taken, a letter must follow.
            if let Some(next) = self.at(start + first.len) {
                if next.is(LETTER) {
                    return self.run_end(start + first.len, LETTER);
                }
            }
        }
        if first.is(NUMBER) {
            return self.digits_end(start);
        }
        if let Some(end) = self.punctuation_end(start, first) {
            return self.run_while(end, |cp| cp == 0x0D || cp == 0x0A);
        }
        self.cl100k_whitespace_end(start)
    }

    /// ` ?[^\s\p{L}\p{N}]+`: the end of the punctuation run, if one starts here.
    fn punctuation_end(&mut self, start: usize, first: Ch) -> Option<usize> {
        if first.is_other() {
            return Some(self.other_run_end(start));
        }
        if first.cp == u32::from(b' ') {
            let next = self.at(start + 1)?;
            if next.is_other() {
                return Some(self.other_run_end(start + 1));
            }
        }
        None
    }

    // ---- o200k_base ----

    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)?` at `pos`: the end after the optional contraction.
    fn o200k_contraction(&mut self, pos: usize) -> usize {
        let Some(quote) = self.at(pos) else {
            return pos;
        };
        if quote.cp != u32::from(b'\'') {
            return pos;
        }
        let Some(first) = self.at(pos + 1) else {
            return pos;
        };
        if [b's', b't', b'm', b'd'].iter().any(|&c| first.is_letter(c)) {
            return pos + 1 + first.len;
        }
        if ![b'r', b'v', b'l'].iter().any(|&c| first.is_letter(c)) {
            return pos;
        }
        let Some(second) = self.at(pos + 1 + first.len) else {
            return pos;
        };
        let pairs = [(b'r', b'e'), (b'v', b'e'), (b'l', b'l')];
        if pairs
            .iter()
            .any(|&(a, b)| first.is_letter(a) && second.is_letter(b))
        {
            return pos + 1 + first.len + second.len;
        }
        pos
    }

    /// `[UPPER]*[LOWER]+` from `pos`, with the backtracking of the regex: the upper run
    /// gives back characters until a lower one can follow.
    fn upper_then_lower(&mut self, pos: usize) -> Option<usize> {
        let mut end = pos;
        let mut after_last_lower = None;
        while let Some(ch) = self.at(end) {
            if !ch.is(UPPER) {
                if ch.is(LOWER) {
                    return Some(self.run_end(end, LOWER));
                }
                break;
            }
            end += ch.len;
            if ch.is(LOWER) {
                after_last_lower = Some(end);
            }
        }
        after_last_lower
    }

    /// `[UPPER]+[LOWER]*` from `pos`.
    fn upper_run(&mut self, pos: usize) -> Option<usize> {
        let end = self.run_end(pos, UPPER);
        (end > pos).then(|| self.run_end(end, LOWER))
    }

    fn o200k_word(&mut self, start: usize, first: Ch) -> Option<usize> {
        let prefixed = first.is_word_prefix();
        let after_prefix = start + first.len;
        if prefixed {
            if let Some(end) = self.upper_then_lower(after_prefix) {
                return Some(end);
            }
        }
        if first.is(UPPER | LOWER) {
            if let Some(end) = self.upper_then_lower(start) {
                return Some(end);
            }
        }
        if prefixed {
            if let Some(end) = self.upper_run(after_prefix) {
                return Some(end);
            }
        }
        if first.is(UPPER) {
            return self.upper_run(start);
        }
        None
    }

    fn o200k_piece(&mut self, start: usize, first: Ch) -> usize {
        if let Some(end) = self.o200k_word(start, first) {
            return self.o200k_contraction(end);
        }
        if first.is(NUMBER) {
            return self.digits_end(start);
        }
        if let Some(end) = self.punctuation_end(start, first) {
            return self.run_while(end, |cp| cp == 0x0D || cp == 0x0A || cp == 0x2F);
        }
        self.o200k_whitespace_end(start)
    }
}

/// A piece of text: byte range, and whether deciding it looked at the end of the text
/// (so appending text could still change it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub start: usize,
    pub end: usize,
    pub touches_end: bool,
}

/// The pieces of `text`, in order, covering it entirely.
pub struct Pieces<'a> {
    scanner: Scanner<'a>,
    pattern: Pattern,
    pos: usize,
}

impl<'a> Pieces<'a> {
    pub fn new(pattern: Pattern, text: &'a str) -> Self {
        Pieces {
            scanner: Scanner {
                text: text.as_bytes(),
                hit_end: false,
                classes: chars::table(),
            },
            pattern,
            pos: 0,
        }
    }
}

impl Iterator for Pieces<'_> {
    type Item = Piece;

    #[inline]
    fn next(&mut self) -> Option<Piece> {
        let start = self.pos;
        let first = self.scanner.at(start)?;
        self.scanner.hit_end = false;
        let end = match self.pattern {
            Pattern::Cl100k => self.scanner.cl100k_piece(start, first),
            Pattern::O200k => self.scanner.o200k_piece(start, first),
        };
        self.pos = end;
        Some(Piece {
            start,
            end,
            touches_end: self.scanner.hit_end || end == self.scanner.text.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pattern: Pattern, text: &str) -> Vec<&str> {
        Pieces::new(pattern, text)
            .map(|p| &text[p.start..p.end])
            .collect()
    }

    #[test]
    fn cl100k_pieces() {
        let text = "Hello world's  end\n\n  x 123456 !!?\r\n  ";
        assert_eq!(
            split(Pattern::Cl100k, text),
            [
                "Hello", " world", "'s", " ", " end", "\n\n", " ", " x", " ", "123", "456",
                " !!?\r\n", "  "
            ]
        );
        assert_eq!(split(Pattern::Cl100k, "'LL'Ve'ſ"), ["'LL", "'Ve", "'ſ"]);
    }

    #[test]
    fn o200k_pieces() {
        let text = "HelloWorld HTTPServer don't\t\tgo/ ./x\n \n";
        assert_eq!(
            split(Pattern::O200k, text),
            [
                "Hello",
                "World",
                " HTTPServer",
                " don't",
                "\t",
                "\tgo",
                "/",
                " ./",
                "x",
                "\n \n"
            ]
        );
        assert_eq!(split(Pattern::O200k, "  a"), [" ", " a"]);
    }

    #[test]
    fn pieces_cover_the_text() {
        let text = "a\u{301}b ́ ̃x ß中文 ٣٤٥٦ \u{3000}\u{3000}z";
        for pattern in [Pattern::Cl100k, Pattern::O200k] {
            assert_eq!(split(pattern, text).concat(), text);
        }
    }

    #[test]
    fn a_million_spaces_is_one_piece() {
        let text = " ".repeat(1_000_000);
        assert_eq!(split(Pattern::O200k, &text).len(), 1);
        assert_eq!(split(Pattern::Cl100k, &text).len(), 1);
    }

    #[test]
    fn pieces_report_whether_they_touch_the_end() {
        let pieces: Vec<Piece> = Pieces::new(Pattern::O200k, "ab cd'").collect();
        assert!(!pieces[0].touches_end);
        assert!(pieces[1].touches_end);
    }
}
