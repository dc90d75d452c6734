//! Validators: the arithmetic that separates a real identifier from a look-alike.
//! Each takes the candidate as matched (separators included) and answers yes or no.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Digits of `s`, skipping separators.
pub fn digits(s: &[u8]) -> Vec<u8> {
    s.iter()
        .filter(|b| b.is_ascii_digit())
        .map(|b| b - b'0')
        .collect()
}

pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    !digits.is_empty() && sum % 10 == 0
}

/// The number spelled by the first `n` digits.
pub fn prefix_number(digits: &[u8], n: usize) -> u32 {
    digits
        .iter()
        .take(n)
        .fold(0, |acc, &d| acc * 10 + u32::from(d))
}

/// Issuer identification ranges and the lengths each network issues.
pub fn card_network(digits: &[u8]) -> Option<&'static str> {
    let len = digits.len();
    let p1 = prefix_number(digits, 1);
    let p2 = prefix_number(digits, 2);
    let p3 = prefix_number(digits, 3);
    let p4 = prefix_number(digits, 4);
    let p6 = prefix_number(digits, 6);
    let network = if p1 == 4 && matches!(len, 13 | 16 | 19) {
        "visa"
    } else if ((51..=55).contains(&p2) || (2221..=2720).contains(&p4)) && len == 16 {
        "mastercard"
    } else if matches!(p2, 34 | 37) && len == 15 {
        "amex"
    } else if (p4 == 6011
        || (644..=649).contains(&p3)
        || p2 == 65
        || (622126..=622925).contains(&p6))
        && (16..=19).contains(&len)
    {
        "discover"
    } else if ((3528..=3589).contains(&p4) && (16..=19).contains(&len))
        || (matches!(p4, 1800 | 2131) && len == 15)
    {
        "jcb"
    } else if ((300..=305).contains(&p3) || matches!(p2, 36 | 38 | 39)) && (14..=19).contains(&len)
    {
        "diners"
    } else if p2 == 62 && (16..=19).contains(&len) {
        "unionpay"
    } else if (p2 == 50 || (56..=69).contains(&p2)) && (12..=19).contains(&len) {
        "maestro"
    } else {
        return None;
    };
    Some(network)
}

/// Separators must be used consistently: one kind, and in groups a person would write.
pub fn consistent_groups(s: &[u8], allowed: &[u8]) -> bool {
    let seps: Vec<u8> = s.iter().copied().filter(|b| !b.is_ascii_digit()).collect();
    if seps.is_empty() {
        return true;
    }
    seps.iter().all(|&b| b == seps[0] && allowed.contains(&b))
}

pub fn all_same(digits: &[u8]) -> bool {
    digits.windows(2).all(|w| w[0] == w[1])
}

/// Runs like 123456 or 987654, the digit sequences people type as filler.
pub fn is_sequence(digits: &[u8]) -> bool {
    digits.len() > 2
        && (digits.windows(2).all(|w| (w[0] + 1) % 10 == w[1])
            || digits.windows(2).all(|w| (w[1] + 1) % 10 == w[0]))
}

/// US Social Security numbers: the ranges the SSA never issues and the famous
/// advertising numbers.
pub fn ssn_valid(digits: &[u8]) -> bool {
    if digits.len() != 9 || all_same(digits) || is_sequence(digits) {
        return false;
    }
    let area = prefix_number(digits, 3);
    let group = prefix_number(&digits[3..], 2);
    let serial = prefix_number(&digits[5..], 4);
    let whole = prefix_number(digits, 9);
    area != 0
        && area != 666
        && area < 900
        && group != 0
        && serial != 0
        && !matches!(whole, 78051120 | 219099999)
}

/// IBAN lengths per country (ISO 13616 registry).
fn iban_length(country: &[u8]) -> Option<usize> {
    let len = match country {
        b"AD" | b"CZ" | b"ES" | b"MD" | b"PK" | b"RO" | b"SA" | b"SE" | b"SK" | b"TN" | b"VG" => 24,
        b"AE" | b"GB" | b"GE" | b"IE" | b"IL" | b"ME" | b"RS" | b"DE" | b"BH" => 22,
        b"AL" | b"AZ" | b"BY" | b"CY" | b"DO" | b"GT" | b"HU" | b"LB" | b"PL" | b"SV" => 28,
        b"AT" | b"BA" | b"EE" | b"KZ" | b"LT" | b"LU" | b"XK" => 20,
        b"BE" => 16,
        b"BG" | b"CR" => 22,
        b"BR" | b"PS" | b"QA" | b"UA" => 29,
        b"CH" | b"HR" | b"LI" | b"LV" => 21,
        b"DK" | b"FI" | b"FO" | b"GL" | b"NL" => 18,
        b"EG" | b"LY" => 29,
        b"FR" | b"GR" | b"IT" | b"MC" | b"SM" | b"MR" => 27,
        b"GI" | b"IQ" | b"JO" | b"KW" | b"MU" => 23,
        b"IS" | b"TR" => 26,
        b"MK" | b"SI" => 19,
        b"MT" => 31,
        b"NO" => 15,
        b"PT" | b"ST" => 25,
        b"SC" | b"LC" => 32,
        b"TL" => 23,
        _ => return None,
    };
    Some(len)
}

/// Mod-97 check (ISO 7064) and the country's length, on the IBAN without spaces.
pub fn iban_valid(candidate: &[u8]) -> bool {
    let iban: Vec<u8> = candidate
        .iter()
        .filter(|b| **b != b' ')
        .map(|b| b.to_ascii_uppercase())
        .collect();
    if iban.len() < 15 || iban_length(&iban[..2]) != Some(iban.len()) {
        return false;
    }
    let mut remainder = 0u32;
    for &b in iban[4..].iter().chain(&iban[..4]) {
        let value = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    remainder == 1
}

pub fn ipv4_valid(candidate: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(candidate) else {
        return false;
    };
    // std rejects leading zeros ("01.2.3.4"), which are version numbers or dates.
    text.parse::<Ipv4Addr>().is_ok()
}

pub fn ipv6_valid(candidate: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(candidate) else {
        return false;
    };
    let groups = text.split(':').filter(|g| !g.is_empty()).count();
    groups >= 2 && text.parse::<Ipv6Addr>().is_ok()
}

/// Shannon entropy in bits per byte.
pub fn entropy(s: &[u8]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in s {
        counts[usize::from(b)] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// How many of lower-case, upper-case, digits and symbols appear.
pub fn char_classes(s: &[u8]) -> usize {
    let lower = s.iter().any(u8::is_ascii_lowercase);
    let upper = s.iter().any(u8::is_ascii_uppercase);
    let digit = s.iter().any(u8::is_ascii_digit);
    let symbol = s.iter().any(|b| !b.is_ascii_alphanumeric());
    [lower, upper, digit, symbol].iter().filter(|&&x| x).count()
}

/// Values that stand in for a secret rather than being one: templates, placeholders,
/// masked values, variable references, UUIDs and filler sequences.
pub fn looks_like_placeholder(value: &[u8]) -> bool {
    let lower = value.to_ascii_lowercase();
    const MARKERS: &[&[u8]] = &[
        b"xxx",
        b"***",
        b"...",
        b"your",
        b"example",
        b"sample",
        b"changeme",
        b"placeholder",
        b"dummy",
        b"redacted",
        b"replace",
        b"insert",
        b"<",
        b"${",
        b"{{",
        b"%s",
        b"todo",
        b"secret_here",
        b"here",
        b"fake",
        b"test1234",
        b"password",
    ];
    if MARKERS.iter().any(|m| contains(&lower, m)) {
        return true;
    }
    if value.first() == Some(&b'$') || is_uuid(value) || all_same(value) {
        return true;
    }
    let run = lower.windows(2).filter(|w| w[0] + 1 == w[1]).count();
    run + 1 >= value.len().saturating_sub(1)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

pub fn is_uuid(value: &[u8]) -> bool {
    value.len() == 36
        && value.iter().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                *b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        })
}

/// Calendar dates written with separators (2024-01-31, 31.01.2024, 01/31/2024).
pub fn looks_like_date(digits_groups: &[&[u8]]) -> bool {
    if digits_groups.len() != 3 {
        return false;
    }
    let n: Vec<u32> = digits_groups
        .iter()
        .map(|g| prefix_number(&digits(g), 8))
        .collect();
    let lens: Vec<usize> = digits_groups.iter().map(|g| g.len()).collect();
    let year = |v: u32| (1900..=2100).contains(&v);
    let month = |v: u32| (1..=12).contains(&v);
    let day = |v: u32| (1..=31).contains(&v);
    (lens[0] == 4 && year(n[0]) && month(n[1]) && day(n[2]))
        || (lens[2] == 4
            && year(n[2])
            && ((day(n[0]) && month(n[1])) || (month(n[0]) && day(n[1]))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_valid_and_rejects_one_digit_off() {
        assert!(luhn(&digits(b"4111 1111 1111 1111")));
        assert!(!luhn(&digits(b"4111 1111 1111 1112")));
    }

    #[test]
    fn card_networks_by_range_and_length() {
        assert_eq!(card_network(&digits(b"4111111111111111")), Some("visa"));
        assert_eq!(
            card_network(&digits(b"2221000000000009")),
            Some("mastercard")
        );
        assert_eq!(card_network(&digits(b"378282246310005")), Some("amex"));
        assert_eq!(card_network(&digits(b"37828224631000")), None);
        assert_eq!(card_network(&digits(b"9111111111111111")), None);
    }

    #[test]
    fn iban_checksum_and_length() {
        assert!(iban_valid(b"GB82 WEST 1234 5698 7654 32"));
        assert!(iban_valid(b"de89370400440532013000"));
        assert!(!iban_valid(b"GB82 WEST 1234 5698 7654 33"));
        assert!(!iban_valid(b"GB82WEST123456987654"));
    }

    #[test]
    fn ssn_invalid_ranges() {
        assert!(ssn_valid(&digits(b"536-22-1234")));
        for bad in [
            "000-12-3456",
            "666-12-3456",
            "912-12-3456",
            "536-00-1234",
            "536-22-0000",
        ] {
            assert!(!ssn_valid(&digits(bad.as_bytes())), "{bad}");
        }
        assert!(!ssn_valid(&digits(b"123-45-6789")));
        assert!(!ssn_valid(&digits(b"078-05-1120")));
    }

    #[test]
    fn ip_addresses() {
        assert!(ipv4_valid(b"192.168.1.20"));
        assert!(!ipv4_valid(b"192.168.1.256"));
        assert!(!ipv4_valid(b"01.02.03.04"));
        assert!(ipv6_valid(b"2001:db8::8a2e:370:7334"));
        assert!(!ipv6_valid(b"12:30:45"));
    }

    #[test]
    fn placeholders_and_entropy() {
        assert!(looks_like_placeholder(b"your-api-key"));
        assert!(looks_like_placeholder(b"abcdefghijkl"));
        assert!(looks_like_placeholder(
            b"123e4567-e89b-12d3-a456-426614174000"
        ));
        assert!(!looks_like_placeholder(b"q8Zr2LmP0vXa9TnK"));
        assert!(entropy(b"aaaaaaaa") < 0.01);
        assert!(entropy(b"q8Zr2LmP0vXa9TnK") > 3.5);
    }

    #[test]
    fn dates() {
        let parts: Vec<&[u8]> = vec![b"2024", b"01", b"31"];
        assert!(looks_like_date(&parts));
        let parts: Vec<&[u8]> = vec![b"905", b"674", b"3793"];
        assert!(!looks_like_date(&parts));
    }
}
