//! Normalised views of a text, each with a map back to the original.
//!
//! Rules never match the raw text. They match one of two views built once per text:
//!
//! - `clean`: NFKC, with hidden characters (zero-width, bidi controls, fillers, variation
//!   selectors used for smuggling) removed and Unicode tag characters decoded to the
//!   ASCII they hide. PII and secrets detectors read this view: digits stay digits.
//! - `folded`: `clean`, lower-cased, combining marks dropped, Cyrillic and Greek
//!   look-alikes folded to Latin, and leetspeak digits/symbols turned into letters inside
//!   words that also contain letters. Literal lists and injection phrases read this view.
//!
//! Each view keeps, for every byte it holds, the byte offset in the original text of the
//! character that produced it, so every finding is reported on the original text.
//! Pure-ASCII input (most traffic) is length-preserving in both views and needs no map.

use std::borrow::Cow;

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization};

/// One normalised view and its map back to the original text.
pub struct View<'a> {
    pub text: Cow<'a, str>,
    /// `map[i]` is the original byte offset of the character that produced byte `i`;
    /// `None` means the view is byte-for-byte aligned with the original.
    map: Option<Vec<u32>>,
}

impl View<'_> {
    /// Maps a byte span of this view onto the original text.
    pub fn to_original(&self, original: &str, start: usize, end: usize) -> (usize, usize) {
        let Some(map) = &self.map else {
            return (start, end);
        };
        let first = map.get(start).map_or(original.len(), |&o| o as usize);
        let last = match end.checked_sub(1).and_then(|i| map.get(i)) {
            Some(&o) => {
                let o = o as usize;
                o + original[o..].chars().next().map_or(0, char::len_utf8)
            }
            None => first,
        };
        (first, last.max(first))
    }
}

/// Both views of one text plus the spans of hidden characters found while building them.
pub struct Views<'a> {
    pub original: &'a str,
    pub clean: View<'a>,
    pub folded: View<'a>,
    /// Byte spans (original offsets) of runs of hidden characters.
    pub hidden: Vec<(usize, usize)>,
}

impl<'a> Views<'a> {
    pub fn new(original: &'a str) -> Views<'a> {
        if original.is_ascii() {
            return ascii_views(original);
        }
        unicode_views(original, !already_clean(original))
    }
}

/// Whether `text` is its own `clean` view: already NFKC, with nothing hidden. Most
/// non-ASCII prose is, and then the view needs neither a copy nor a map.
fn already_clean(text: &str) -> bool {
    let mut prev = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if !c.is_ascii() && is_hidden(c, prev, chars.peek().copied()) {
            return false;
        }
        prev = Some(c);
    }
    is_nfkc_quick(text.chars()) == IsNormalized::Yes
}

fn ascii_views(original: &str) -> Views<'_> {
    let mut folded = original.as_bytes().to_ascii_lowercase();
    fold_leetspeak(&mut folded);
    Views {
        original,
        clean: View {
            text: Cow::Borrowed(original),
            map: None,
        },
        folded: View {
            text: Cow::Owned(ascii_string(folded)),
            map: None,
        },
        hidden: Vec::new(),
    }
}

fn ascii_string(bytes: Vec<u8>) -> String {
    // Only ASCII bytes were written, so this never falls back to the lossy path.
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into())
}

struct Builder {
    text: String,
    map: Vec<u32>,
}

impl Builder {
    fn with_capacity(n: usize) -> Builder {
        Builder {
            text: String::with_capacity(n),
            map: Vec::with_capacity(n),
        }
    }

    /// Appends ASCII text that maps byte for byte onto the original at `origin`.
    fn push_ascii(&mut self, chunk: &str, origin: usize) {
        self.text.push_str(chunk);
        let first = u32::try_from(origin).unwrap_or(u32::MAX);
        let count = u32::try_from(chunk.len()).unwrap_or(0);
        self.map.extend(first..first.saturating_add(count));
    }

    fn push(&mut self, c: char, origin: usize) {
        self.text.push(c);
        let origin = u32::try_from(origin).unwrap_or(u32::MAX);
        self.map.resize(self.text.len(), origin);
    }
}

/// Both views of a non-ASCII text; `build_clean` false when the text is already clean.
fn unicode_views(original: &str, build_clean: bool) -> Views<'_> {
    let mut clean = Builder::with_capacity(if build_clean { original.len() } else { 0 });
    let mut folded = Builder::with_capacity(original.len());
    let mut hidden: Vec<(usize, usize)> = Vec::new();
    let mut prev: Option<char> = None;
    let bytes = original.as_bytes();
    let mut at = 0;

    while at < bytes.len() {
        // Runs of ASCII (most of any text) are copied in bulk: they are never hidden
        // and NFKC leaves them alone.
        let run = bytes[at..]
            .iter()
            .position(|b| !b.is_ascii())
            .unwrap_or(bytes.len() - at);
        if run > 0 {
            let chunk = &original[at..at + run];
            if build_clean {
                clean.push_ascii(chunk, at);
            }
            folded.push_ascii(&chunk.to_ascii_lowercase(), at);
            prev = chunk.chars().next_back();
            at += run;
            continue;
        }
        let Some(c) = original[at..].chars().next() else {
            break;
        };
        let next = original[at + c.len_utf8()..].chars().next();
        if is_hidden(c, prev, next) {
            match hidden.last_mut() {
                Some(last) if last.1 == at => last.1 = at + c.len_utf8(),
                _ => hidden.push((at, at + c.len_utf8())),
            }
            if let Some(revealed) = tag_to_ascii(c) {
                clean.push(revealed, at);
                push_folded(&mut folded, revealed, at);
            }
            at += c.len_utf8();
            continue;
        }
        prev = Some(c);
        // Most non-ASCII letters are already NFKC; the full normaliser is slow per char.
        if !build_clean || is_nfkc_quick(std::iter::once(c)) == IsNormalized::Yes {
            if build_clean {
                clean.push(c, at);
            }
            push_folded(&mut folded, c, at);
        } else {
            for n in std::iter::once(c).nfkc() {
                clean.push(n, at);
                push_folded(&mut folded, n, at);
            }
        }
        at += c.len_utf8();
    }

    let mut folded_bytes = folded.text.into_bytes();
    fold_leetspeak(&mut folded_bytes);
    let clean = if build_clean {
        View {
            text: Cow::Owned(clean.text),
            map: Some(clean.map),
        }
    } else {
        View {
            text: Cow::Borrowed(original),
            map: None,
        }
    };
    Views {
        original,
        clean,
        folded: View {
            text: Cow::Owned(ascii_safe_string(folded_bytes)),
            map: Some(folded.map),
        },
        hidden,
    }
}

fn ascii_safe_string(bytes: Vec<u8>) -> String {
    // Leetspeak folding rewrites ASCII bytes to ASCII bytes, so UTF-8 stays valid.
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into())
}

fn push_folded(folded: &mut Builder, c: char, at: usize) {
    if c.is_ascii() {
        folded.push(c.to_ascii_lowercase(), at);
        return;
    }
    if is_combining_mark(c) {
        return;
    }
    for lower in c.to_lowercase() {
        folded.push(fold_confusable(lower), at);
    }
}

/// Characters that render as nothing (or as something else) and are used to split
/// words past filters or to smuggle text. Zero-width joiners are only hidden between
/// ASCII characters: between emoji or in Persian and Indic scripts they are legitimate.
pub fn is_hidden(c: char, prev: Option<char>, next: Option<char>) -> bool {
    match c {
        '\u{200C}' | '\u{200D}' => {
            prev.is_none_or(|p| p.is_ascii()) && next.is_none_or(|n| n.is_ascii())
        }
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}'
        | '\u{17B5}' | '\u{180E}' | '\u{200B}' | '\u{200E}' | '\u{200F}' | '\u{3164}'
        | '\u{FEFF}' | '\u{FFA0}' => true,
        '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' => true,
        '\u{E0000}'..='\u{E007F}' | '\u{E0100}'..='\u{E01EF}' => true,
        _ => false,
    }
}

/// Unicode tag characters mirror printable ASCII at U+E0020..U+E007E; models read
/// them, so the views spell out what they hide.
fn tag_to_ascii(c: char) -> Option<char> {
    let code = u32::from(c);
    if (0xE0020..=0xE007E).contains(&code) {
        char::from_u32(code - 0xE0000)
    } else {
        None
    }
}

/// Folds the Cyrillic and Greek letters that look like Latin ones (the lower-case
/// subset of Unicode's intentional confusables) and a few Latin look-alikes.
fn fold_confusable(c: char) -> char {
    match c {
        'а' | 'α' | 'ɑ' => 'a',
        'в' | 'β' => 'b',
        'с' | 'ϲ' => 'c',
        'ԁ' => 'd',
        'е' | 'ё' | 'ε' | 'є' => 'e',
        'ɡ' => 'g',
        'һ' => 'h',
        'і' | 'ї' | 'ι' | 'ı' | 'ӏ' => 'i',
        'ј' | 'ϳ' => 'j',
        'к' | 'κ' => 'k',
        'м' => 'm',
        'п' | 'η' => 'n',
        'о' | 'ο' | 'σ' | 'ө' => 'o',
        'р' | 'ρ' => 'p',
        'ԛ' => 'q',
        'ѕ' => 's',
        'т' | 'τ' => 't',
        'υ' | 'џ' => 'u',
        'ν' | 'ѵ' => 'v',
        'ԝ' | 'ω' => 'w',
        'х' | 'χ' => 'x',
        'у' | 'γ' => 'y',
        'ᴢ' => 'z',
        other => other,
    }
}

/// Turns leetspeak into letters inside words that also contain a letter, so
/// "1gn0r3" reads "ignore" while "1.2.3" and "$5" keep their digits and symbols.
fn fold_leetspeak(bytes: &mut [u8]) {
    let mut start = 0;
    while start < bytes.len() {
        if BYTE_CLASS[usize::from(bytes[start])] & WORD == 0 {
            start += 1;
            continue;
        }
        let mut end = start;
        let mut seen = 0u8;
        while end < bytes.len() {
            let class = BYTE_CLASS[usize::from(bytes[end])];
            if class & WORD == 0 {
                break;
            }
            seen |= class;
            end += 1;
        }
        if seen & (LOWER | LEET) == LOWER | LEET {
            let last = end - start - 1;
            for (i, b) in bytes[start..end].iter_mut().enumerate() {
                // Symbols only stand for letters inside a word: "h!t" but not "stop!".
                let inside = i > 0 && i < last;
                if b.is_ascii_digit() || inside {
                    if let Some(l) = leet_letter(*b) {
                        *b = l;
                    }
                }
            }
        }
        start = end;
    }
}

/// Bits of `BYTE_CLASS`: part of a word, a lower-case letter, a leetspeak stand-in.
const WORD: u8 = 1;
const LOWER: u8 = 2;
const LEET: u8 = 4;

/// The class of every byte, looked up once per byte: folding runs over every prompt.
static BYTE_CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        let mut class = 0;
        if byte.is_ascii_alphanumeric() || matches!(byte, b'@' | b'$' | b'!' | b'|') {
            class |= WORD;
        }
        if byte.is_ascii_lowercase() {
            class |= LOWER;
        }
        if leet_letter(byte).is_some() {
            class |= LEET;
        }
        table[b] = class;
        b += 1;
    }
    table
};

const fn leet_letter(b: u8) -> Option<u8> {
    Some(match b {
        b'0' => b'o',
        b'1' | b'!' => b'i',
        b'|' => b'l',
        b'3' => b'e',
        b'4' | b'@' => b'a',
        b'5' | b'$' => b's',
        b'7' => b't',
        b'8' => b'b',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_non_ascii_text_is_its_own_clean_view() {
        let v = Views::new("Grüße aus Köln, 😀 ok");
        assert!(matches!(v.clean.text, Cow::Borrowed(_)));
        assert_eq!(v.clean.to_original(v.original, 3, 7), (3, 7));
        assert_eq!(v.folded.text, "grüße aus köln, 😀 ok");

        let v = Views::new("Grü\u{200B}ße \u{FB01}ne");
        assert_eq!(v.clean.text, "Grüße fine");
        assert_eq!(v.hidden, [(4, 7)]);
    }

    #[test]
    fn ascii_is_aligned_and_folded() {
        let v = Views::new("Ign0re ALL previous v1.2.3 $5");
        assert_eq!(v.clean.text, "Ign0re ALL previous v1.2.3 $5");
        assert_eq!(v.folded.text, "ignore all previous vi.2.3 $5");
        assert!(v.hidden.is_empty());
    }

    #[test]
    fn hidden_characters_are_removed_and_recorded() {
        let text = "ig\u{200B}nore";
        let v = Views::new(text);
        assert_eq!(v.folded.text, "ignore");
        assert_eq!(v.hidden, vec![(2, 5)]);
        assert_eq!(v.folded.to_original(text, 0, 6), (0, text.len()));
    }

    #[test]
    fn confusables_and_fullwidth_fold_to_latin() {
        let text = "іgnоrе ＩＮＳＴＲＵＣＴＩＯＮＳ";
        let v = Views::new(text);
        assert_eq!(v.folded.text, "ignore instructions");
        let (s, e) = v.folded.to_original(text, 7, 19);
        assert_eq!(&text[s..e], "ＩＮＳＴＲＵＣＴＩＯＮＳ");
    }

    #[test]
    fn tag_characters_are_spelled_out() {
        let hidden: String = "hi"
            .chars()
            .map(|c| char::from_u32(c as u32 + 0xE0000).unwrap())
            .collect();
        let text = format!("ok{hidden}");
        let v = Views::new(&text);
        assert_eq!(v.clean.text, "okhi");
        assert_eq!(v.hidden, vec![(2, text.len())]);
    }

    #[test]
    fn joiners_inside_emoji_are_kept() {
        let family = "\u{1F468}\u{200D}\u{1F469}";
        assert!(Views::new(family).hidden.is_empty());
        assert_eq!(Views::new("a\u{200D}b").hidden.len(), 1);
    }
}
