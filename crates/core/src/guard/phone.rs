//! The phone number validator: which digit runs the phone pattern found are numbers.
//!
//! Shape alone decides only the clear cases: an international prefix (`+41`, `0044`),
//! an area code in brackets, or the North American 3-3-4 grouping. Everything else
//! (local 3-4 numbers, European 2-2-2-2 or 3-2-3 groupings, ten bare digits) is scored
//! low and needs a phone word around it: a label before it ("Phone:", "call me on") or
//! after it ("555 0134 office", "…-Fax"), as contact listings write them. Digit runs
//! that are shaped like phone numbers but named as something else (card, licence and
//! account numbers) or followed by a street name (house number and postcode) are
//! dropped.

use super::checks;
use super::detectors::{alnum, Candidate, CONTEXT_BOOST};

/// Words before a number that say it is a phone number; matched where a word starts.
const CONTEXT: &[&str] = &[
    "phone",
    "tel",
    "call",
    "mobile",
    "mob:",
    "cell",
    "fax",
    "contact",
    "number",
    "reach",
    "dial",
    "whatsapp",
    "sms",
    "text me",
    "ring",
    "landline",
    "hotline",
    "switchboard",
    // Field labels of contact cards, only with their colon: "home" alone is prose.
    "office:",
    "desk:",
    "home:",
    "work:",
    "direct:",
];

/// Phone words strong enough to outweigh a competing identifier word nearby
/// ("call the order desk on …"); "number" or "contact" alone are not.
const STRONG_CONTEXT: &[&str] = &[
    "phone", "tel", "call", "mobile", "cell", "fax", "dial", "whatsapp", "sms",
];

/// Labels written right after a number in contact listings.
const LABELS_AFTER: &[&str] = &[
    "office", "fax", "mobile", "cell", "home", "work", "direct", "phone", "tel",
];

/// Identifiers written with the same digits and separators as phone numbers.
const OTHER_IDENTIFIERS: &[&str] = &[
    "card",
    "licence",
    "license",
    "account",
    "acct",
    "passport",
    "ssn",
    "social security",
    "routing",
    "iban",
    "invoice",
    "order",
    "tracking",
    "serial",
    "policy",
    "zip",
    "postal",
];

/// Street types and unit words: a number followed by one is part of an address.
const STREET_WORDS: &[&str] = &[
    "st",
    "street",
    "ave",
    "avenue",
    "rd",
    "road",
    "blvd",
    "boulevard",
    "ln",
    "lane",
    "dr",
    "drive",
    "way",
    "ct",
    "court",
    "pl",
    "place",
    "sq",
    "square",
    "ter",
    "terrace",
    "cir",
    "circle",
    "hwy",
    "highway",
    "pkwy",
    "parkway",
    "suite",
    "ste",
    "apt",
    "unit",
    "floor",
];

/// How many words after a number may come before its street type ("12 Main St").
const STREET_WORDS_AHEAD: usize = 3;

pub fn validate(c: &Candidate<'_>) -> Option<f64> {
    if alnum(c.prev) || matches!(c.prev, Some(b'.' | b'-' | b'/' | b':' | b'+')) {
        return None;
    }
    let main = match c.text.iter().position(|&b| b == b'x') {
        Some(x) => &c.text[..x],
        None => c.text,
    };
    let digits = checks::digits(main);
    if !(7..=15).contains(&digits.len()) || checks::all_same(&digits) {
        return None;
    }
    let groups: Vec<&[u8]> = main
        .split(|b| !b.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .collect();
    if groups.windows(3).any(checks::looks_like_date) {
        return None;
    }
    let dotted = main.contains(&b'.');
    if dotted && groups.len() == 4 && groups.iter().all(|g| g.len() <= 3) {
        return None; // an IPv4 address or a version number
    }
    if (dotted && groups.len() == 2) || years(&groups) {
        return None; // a decimal number (3.1415926535) or years (1903-1950, 1642-1726/1727)
    }
    if named_otherwise(c.before) || street_follows(c.after) {
        return None;
    }
    let base = shape_score(main, &groups, digits.len());
    let labelled = mentions_word(c.before, CONTEXT) || labelled_after(c.after);
    Some(if labelled {
        (base + CONTEXT_BOOST).min(1.0)
    } else {
        base
    })
}

/// The score of a number's written form before any context is considered.
fn shape_score(main: &[u8], groups: &[&[u8]], digit_count: usize) -> f64 {
    let international = main.starts_with(b"+") || main.starts_with(b"00");
    let area_code = main.starts_with(b"(");
    let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let nanp = lengths.ends_with(&[3, 3, 4]);
    if lengths == [3, 2, 4] {
        0.3 // written like a US SSN
    } else if international || area_code || nanp {
        0.7
    } else if groups.len() >= 2 && digit_count >= 9 {
        0.5
    } else {
        0.3
    }
}

/// Every group a four-digit year: a range or list of years, not a number to call.
fn years(groups: &[&[u8]]) -> bool {
    groups.iter().all(|g| {
        g.len() == 4 && matches!(checks::prefix_number(&checks::digits(g), 4), 1000..=2100)
    })
}

/// Whether one of `words` occurs in `text` where a word starts, ignoring ASCII case
/// (so "tel" matches "Tel:" and "telephone" but not "hotel").
fn mentions_word(text: &[u8], words: &[&str]) -> bool {
    words.iter().any(|w| {
        let w = w.as_bytes();
        text.windows(w.len()).enumerate().any(|(i, win)| {
            win.eq_ignore_ascii_case(w) && (i == 0 || !text[i - 1].is_ascii_alphabetic())
        })
    })
}

/// A card, licence or account number and the like, with no phone word to say otherwise.
fn named_otherwise(before: &[u8]) -> bool {
    mentions_word(before, OTHER_IDENTIFIERS) && !mentions_word(before, STRONG_CONTEXT)
}

/// "555 0134 office", "5550134-Fax", "555 0134 (mobile)".
fn labelled_after(after: &[u8]) -> bool {
    let start = after
        .iter()
        .position(|b| !matches!(b, b' ' | b'-' | b'(' | b'/' | b','))
        .unwrap_or(after.len());
    let rest = &after[start..];
    LABELS_AFTER.iter().any(|label| {
        let label = label.as_bytes();
        rest.len() >= label.len()
            && rest[..label.len()].eq_ignore_ascii_case(label)
            && !rest.get(label.len()).is_some_and(u8::is_ascii_alphabetic)
    })
}

/// "17151 2450 Crown St", "94941 2505 Heatherleigh Suite 3": a house number and code.
fn street_follows(after: &[u8]) -> bool {
    after
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .take(STREET_WORDS_AHEAD)
        .map(|w| {
            w.strip_suffix(b".")
                .or_else(|| w.strip_suffix(b","))
                .unwrap_or(w)
        })
        .any(|w| {
            STREET_WORDS
                .iter()
                .any(|s| w.eq_ignore_ascii_case(s.as_bytes()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(before: &str, number: &str, after: &str) -> Option<f64> {
        validate(&Candidate {
            text: number.as_bytes(),
            before: before.as_bytes(),
            after: after.as_bytes(),
            prev: before.as_bytes().last().copied(),
        })
        .filter(|&s| s >= super::super::detectors::MIN_SCORE)
    }

    #[test]
    fn international_and_north_american_shapes_stand_alone() {
        for number in [
            "+41 (0)44 668 18 00",
            "+44 20 7946 0958",
            "0049 30 901820",
            "(602)272-9781",
        ] {
            assert!(
                score("reach the team at ", number, "").is_some(),
                "{number}"
            );
            assert!(score("see ", number, " today").is_some(), "{number}");
        }
        assert!(score("see ", "415-555-0132", "").is_some());
    }

    #[test]
    fn local_groupings_need_a_phone_word() {
        for number in [
            "555 0134",
            "6123 4567",
            "01-42-68-53",
            "612 34 567",
            "22 345 678",
            "2125550134",
        ] {
            assert!(score("Phone:\n", number, "\n").is_some(), "{number}");
            assert!(score("MOBILE: ", number, "").is_some(), "{number}");
            assert!(
                score("there were ", number, " of them").is_none(),
                "{number}"
            );
        }
    }

    #[test]
    fn labels_after_the_number_count() {
        assert!(score("\n", "612 34 567", " office\n").is_some());
        assert!(score("\\,", "2125550199", "-Fax").is_some());
        assert!(score("", "555 0134", " (mobile)").is_some());
        assert!(score("", "555 0134", " officers").is_none());
    }

    #[test]
    fn decimals_and_years_are_not_phones() {
        assert!(score("the number is ", "2.718281828459", "").is_none());
        assert!(score("phone inventor (", "1847-1922", ")").is_none());
        assert!(score("call ", "1847-1922/1923", "").is_none());
        assert!(score("call ", "1847-1922-5555", "").is_some());
    }

    #[test]
    fn context_words_start_a_word() {
        assert!(score("the hotel ", "555 0134", "").is_none());
        assert!(score("the telephone ", "555 0134", "").is_some());
    }

    #[test]
    fn numbers_named_as_other_identifiers_are_not_phones() {
        assert!(score("my card number is ", "512345678901", "").is_none());
        assert!(score("driver's license number is ", "4410-22-9876", "").is_none());
        assert!(score("order ", "415-555-0132", "").is_none());
        assert!(score("call the order desk on ", "415-555-0132", "").is_some());
    }

    #[test]
    fn house_numbers_with_a_street_are_not_phones() {
        assert!(score("The shop is at ", "88120 3391", " Elm St").is_none());
        assert!(score("at ", "40233 1187", " Birchwood Suite 4").is_none());
        assert!(score("at ", "52810 4402", " Mill Road,").is_none());
        assert!(score("call ", "88120 3391", " after five").is_some());
    }
}
