//! Built-in detectors: a candidate pattern (linear-time regex over the `clean` view)
//! followed by a validator that scores the candidate or throws it away.
//!
//! Scores follow Presidio's scheme loosely: a validated candidate gets its detector's
//! base score; context words in the few words before it add `CONTEXT_BOOST`; anything
//! under `MIN_SCORE` is dropped. Patterns are bounded so every match has a maximum
//! length, which is what lets the streaming scanner hold back a bounded tail.

use super::checks;
use super::phone;
use super::spec::DetectorName;

pub const MIN_SCORE: f64 = 0.5;
pub(super) const CONTEXT_BOOST: f64 = 0.35;
/// Bytes before a candidate searched for context words (about five words).
pub const CONTEXT_BEFORE: usize = 40;
/// Bytes after a candidate its validator may look at (a label or a street name).
pub const CONTEXT_AFTER: usize = 32;

/// A candidate as the validator sees it.
pub struct Candidate<'a> {
    /// The matched bytes (capture group 1 when the pattern has one).
    pub text: &'a [u8],
    /// Up to `CONTEXT_BEFORE` bytes before the whole match (context words are
    /// compared ignoring ASCII case).
    pub before: &'a [u8],
    /// Up to `CONTEXT_AFTER` bytes after the whole match.
    pub after: &'a [u8],
    /// The byte right before the match, if any.
    pub prev: Option<u8>,
}

pub struct DetectorDef {
    pub name: DetectorName,
    pub id: &'static str,
    pub category: &'static str,
    pub label: &'static str,
    pub pattern: &'static str,
    /// Longest match in bytes; bounds the streaming hold-back.
    pub max_len: usize,
    /// A literal every match starts with; lets a stream hold back from it.
    pub opener: Option<&'static str>,
    pub validate: fn(&Candidate<'_>) -> Option<f64>,
}

/// Whether any of `words` occurs in `text`, ignoring ASCII case.
fn mentions(text: &[u8], words: &[&str]) -> bool {
    words.iter().any(|w| {
        text.windows(w.len())
            .any(|win| win.eq_ignore_ascii_case(w.as_bytes()))
    })
}

pub(super) fn boosted(base: f64, before: &[u8], words: &[&str]) -> f64 {
    if mentions(before, words) {
        (base + CONTEXT_BOOST).min(1.0)
    } else {
        base
    }
}

pub(super) fn alnum(b: Option<u8>) -> bool {
    b.is_some_and(|b| b.is_ascii_alphanumeric())
}

const CARD_CONTEXT: &[&str] = &[
    "card",
    "visa",
    "mastercard",
    "amex",
    "credit",
    "debit",
    "payment",
    "cc ",
    "pan",
];
const SSN_CONTEXT: &[&str] = &["ssn", "social security", "social-security", "taxpayer"];
const IP_CONTEXT: &[&str] = &[
    "ip", "address", "host", "server", "client", "from", "connect",
];
const VERSION_WORDS: &[&str] = &["version", "ver", "release", "build", "v.", "firmware"];

fn email(c: &Candidate<'_>) -> Option<f64> {
    let at = c.text.iter().position(|&b| b == b'@')?;
    let (local, domain) = (&c.text[..at], &c.text[at + 1..]);
    if local.ends_with(b".") || local.windows(2).any(|w| w == b"..") {
        return None;
    }
    if domain
        .split(|&b| b == b'.')
        .any(|l| l.starts_with(b"-") || l.ends_with(b"-"))
    {
        return None;
    }
    // Retina assets and package pins (logo@2x.png, pkg@1.2.js) are not addresses.
    let tld = domain.rsplit(|&b| b == b'.').next()?.to_ascii_lowercase();
    const FILE_EXTENSIONS: &[&[u8]] = &[
        b"png", b"jpg", b"jpeg", b"gif", b"svg", b"webp", b"js", b"ts", b"css", b"html", b"json",
    ];
    if FILE_EXTENSIONS.contains(&tld.as_slice()) {
        return None;
    }
    Some(0.9)
}

fn card(c: &Candidate<'_>) -> Option<f64> {
    let digits = checks::digits(c.text);
    if alnum(c.prev) || alnum(c.after.first().copied()) || !checks::consistent_groups(c.text, b" -")
    {
        return None;
    }
    if checks::all_same(&digits) || !checks::luhn(&digits) {
        return None;
    }
    // Outside the issuer ranges, or short Maestro-range numbers that collide with order
    // and account ids: only with a card word nearby.
    let known = checks::card_network(&digits).is_some();
    let industry = matches!(digits.first(), Some(2..=6));
    let base = if known && digits.len() >= 14 {
        0.85
    } else if known || (industry && digits.len() >= 15) {
        0.3
    } else {
        return None;
    };
    Some(boosted(base, c.before, CARD_CONTEXT))
}

fn ssn(c: &Candidate<'_>) -> Option<f64> {
    if alnum(c.prev) || alnum(c.after.first().copied()) || matches!(c.prev, Some(b'-' | b'.')) {
        return None;
    }
    let digits = checks::digits(c.text);
    if !checks::consistent_groups(c.text, b"- .") || !checks::ssn_valid(&digits) {
        return None;
    }
    let separated = c.text.len() == 11;
    Some(boosted(
        if separated { 0.6 } else { 0.2 },
        c.before,
        SSN_CONTEXT,
    ))
}

fn iban(c: &Candidate<'_>) -> Option<f64> {
    if alnum(c.prev) || alnum(c.after.first().copied()) || !checks::iban_valid(c.text) {
        return None;
    }
    Some(0.95)
}

fn in_version_context(c: &Candidate<'_>) -> bool {
    let before = c.before.strip_suffix(b" ").unwrap_or(c.before);
    VERSION_WORDS.iter().any(|w| before.ends_with(w.as_bytes())) || before.ends_with(b"v")
}

fn ipv4(c: &Candidate<'_>) -> Option<f64> {
    // Part of a longer dotted number (1.2.3.4.5), an OID or a version string.
    let continues =
        c.after.first() == Some(&b'.') && c.after.get(1).is_some_and(u8::is_ascii_digit);
    if alnum(c.prev) || c.prev == Some(b'.') || continues {
        return None;
    }
    if in_version_context(c) || !checks::ipv4_valid(c.text) {
        return None;
    }
    Some(boosted(0.75, c.before, IP_CONTEXT))
}

fn ipv6(c: &Candidate<'_>) -> Option<f64> {
    if alnum(c.prev) || matches!(c.prev, Some(b':')) || alnum(c.after.first().copied()) {
        return None;
    }
    checks::ipv6_valid(c.text).then_some(0.8)
}

fn token_with_entropy(c: &Candidate<'_>, min_entropy: f64) -> Option<f64> {
    if checks::looks_like_placeholder(c.text) || checks::entropy(c.text) < min_entropy {
        return None;
    }
    Some(0.95)
}

fn openai_key(c: &Candidate<'_>) -> Option<f64> {
    if c.text.starts_with(b"sk-ant-") {
        return None;
    }
    // Current keys embed "T3BlbkFJ" (base64 of "OpenAI"); older ones are 48 characters.
    let marked = c.text.windows(8).any(|w| w == b"T3BlbkFJ");
    if !marked && c.text.len() < 40 {
        return None;
    }
    if checks::char_classes(&c.text[3..]) < 3 {
        return None;
    }
    token_with_entropy(c, 3.5)
}

fn prefixed_token(c: &Candidate<'_>) -> Option<f64> {
    token_with_entropy(c, 3.0)
}

fn aws_access_key(c: &Candidate<'_>) -> Option<f64> {
    if c.text.ends_with(b"EXAMPLE") {
        return None;
    }
    token_with_entropy(c, 3.0)
}

fn always(_: &Candidate<'_>) -> Option<f64> {
    Some(1.0)
}

fn jwt(c: &Candidate<'_>) -> Option<f64> {
    (c.text.iter().filter(|&&b| b == b'.').count() == 2).then_some(0.95)
}

fn generic_secret(c: &Candidate<'_>) -> Option<f64> {
    let v = c.text;
    if checks::looks_like_placeholder(v) || v.contains(&b'(') || v.contains(&b'[') {
        return None;
    }
    // Code references (config.api_key, os.environ) and paths are not values.
    if v.iter().filter(|&&b| b == b'.' || b == b'/').count() > 2 {
        return None;
    }
    let classes = checks::char_classes(v);
    let long_enough = v.len() >= 16 || classes >= 3;
    if classes < 2 || !long_enough || checks::entropy(v) < 3.0 {
        return None;
    }
    Some(0.75)
}

/// Word boundary that never needs Unicode tables (the views are mostly ASCII).
macro_rules! b {
    () => {
        r"(?-u:\b)"
    };
}

pub const DETECTORS: &[DetectorDef] = &[
    DetectorDef {
        name: DetectorName::Email,
        id: "pii.email",
        category: "pii",
        label: "EMAIL",
        pattern: concat!(
            b!(),
            r"[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9-]{1,63}\.){1,4}[A-Za-z]{2,24}",
            b!()
        ),
        max_len: 345,
        opener: None,
        validate: email,
    },
    DetectorDef {
        name: DetectorName::Phone,
        id: "pii.phone",
        category: "pii",
        label: "PHONE",
        pattern: concat!(
            r"(?:\+|\b00)?(?:\(?[0-9]{1,4}\)?[ .-]{0,3}){1,6}[0-9]{2,4}(?:\s?(?:x|",
            r"ext\.?)\s?[0-9]{1,5})?(?-u:\b)",
        ),
        max_len: 60,
        opener: None,
        validate: phone::validate,
    },
    DetectorDef {
        name: DetectorName::Card,
        id: "pii.card",
        category: "pii",
        label: "CARD",
        pattern: r"[0-9](?:[ -]?[0-9]){11,18}",
        max_len: 40,
        opener: None,
        validate: card,
    },
    DetectorDef {
        name: DetectorName::Iban,
        id: "pii.iban",
        category: "pii",
        label: "IBAN",
        pattern: concat!(
            r"(?i)[A-Z]{2}[0-9]{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-",
            r"9]{1,3})?)(?-u:\b)",
        ),
        max_len: 45,
        opener: None,
        validate: iban,
    },
    DetectorDef {
        name: DetectorName::Ssn,
        id: "pii.ssn",
        category: "pii",
        label: "SSN",
        pattern: r"[0-9]{3}[- .][0-9]{2}[- .][0-9]{4}|[0-9]{9}",
        max_len: 11,
        opener: None,
        validate: ssn,
    },
    DetectorDef {
        name: DetectorName::Ipv4,
        id: "pii.ipv4",
        category: "pii",
        label: "IP",
        pattern: r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}",
        max_len: 15,
        opener: None,
        validate: ipv4,
    },
    DetectorDef {
        name: DetectorName::Ipv6,
        id: "pii.ipv6",
        category: "pii",
        label: "IP",
        pattern: concat!(
            r"(?i)(?:[0-9a-f]{1,4}:|::)(?:[0-9a-f]{0,4}:){1,7}[0-9a-f]{1,4}",
            r"(?:\.[0-9]{1,3}){0,3}",
        ),
        max_len: 45,
        opener: None,
        validate: ipv6,
    },
    DetectorDef {
        name: DetectorName::OpenaiKey,
        id: "secret.openai",
        category: "secret",
        label: "SECRET",
        pattern: concat!(b!(), r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,200}"),
        max_len: 210,
        opener: None,
        validate: openai_key,
    },
    DetectorDef {
        name: DetectorName::AnthropicKey,
        id: "secret.anthropic",
        category: "secret",
        label: "SECRET",
        pattern: concat!(
            b!(),
            r"sk-ant-(?:api|admin|oat|sid)[0-9]{2}-[A-Za-z0-9_-]{32,200}"
        ),
        max_len: 220,
        opener: None,
        validate: prefixed_token,
    },
    DetectorDef {
        name: DetectorName::AwsAccessKey,
        id: "secret.aws_access_key",
        category: "secret",
        label: "SECRET",
        pattern: concat!(
            b!(),
            r"(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z2-7]{16}",
            b!()
        ),
        max_len: 20,
        opener: None,
        validate: aws_access_key,
    },
    DetectorDef {
        name: DetectorName::GithubToken,
        id: "secret.github",
        category: "secret",
        label: "SECRET",
        pattern: concat!(
            b!(),
            r"(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,244})"
        ),
        max_len: 260,
        opener: None,
        validate: prefixed_token,
    },
    DetectorDef {
        name: DetectorName::SlackToken,
        id: "secret.slack",
        category: "secret",
        label: "SECRET",
        pattern: concat!(
            r"(?:\bxox[abposr]-[A-Za-z0-9-]{10,250}|https://hooks\.slack\.com/servic",
            r"es/[A-Za-z0-9/_-]{20,120})",
        ),
        max_len: 260,
        opener: None,
        validate: prefixed_token,
    },
    DetectorDef {
        name: DetectorName::StripeKey,
        id: "secret.stripe",
        category: "secret",
        label: "SECRET",
        pattern: concat!(b!(), r"[rs]k_(?:live|test)_[A-Za-z0-9]{10,247}"),
        max_len: 260,
        opener: None,
        validate: prefixed_token,
    },
    DetectorDef {
        name: DetectorName::GoogleApiKey,
        id: "secret.google",
        category: "secret",
        label: "SECRET",
        pattern: concat!(b!(), r"AIza[0-9A-Za-z_-]{35}"),
        max_len: 39,
        opener: None,
        validate: prefixed_token,
    },
    DetectorDef {
        name: DetectorName::PrivateKey,
        id: "secret.private_key",
        category: "secret",
        label: "PRIVATE_KEY",
        pattern: concat!(
            r"-----BEGIN[ A-Z0-9]{0,30}PRIVATE KEY(?: BLOCK)?-----(?:[A-Za-z0-9+/=\s",
            r":,-]{0,4000}?-----END[ A-Z0-9]{0,30}PRIVATE KEY(?: BLOCK)?-----)?",
        ),
        max_len: 4150,
        opener: Some("-----BEGIN"),
        validate: always,
    },
    DetectorDef {
        name: DetectorName::Jwt,
        id: "secret.jwt",
        category: "secret",
        label: "SECRET",
        pattern: concat!(
            b!(),
            r"eyJ[A-Za-z0-9_-]{8,1000}\.eyJ[A-Za-z0-9_-]{8,2000}\.[A-Za-z0-9_-]{8,1000}"
        ),
        max_len: 4010,
        opener: Some("eyJ"),
        validate: jwt,
    },
    DetectorDef {
        name: DetectorName::GenericSecret,
        id: "secret.generic",
        category: "secret",
        label: "SECRET",
        pattern: concat!(
            r"(?i)",
            b!(),
            concat!(
                r"(?:api[_-]?key|apikey|api[_-]?secret|secret[_-]?key|client[_-]?secret|",
                r"access[_-]?token",
            ),
            r"|auth[_-]?token|refresh[_-]?token|bearer|token|secret|password|passwd|pwd",
            r"|private[_-]?key|access[_-]?key(?:[_-]?id)?|credentials?)",
            r"[A-Za-z0-9_-]{0,16}[\x22']?[ \t]{0,3}(?:=|:|:=|=>|[ \t])[ \t]{0,3}[\x22']?",
            r"([A-Za-z0-9/+_=.~!@#$%^&*-]{8,200})"
        ),
        max_len: 260,
        opener: None,
        validate: generic_secret,
    },
];

pub fn find(name: DetectorName) -> Option<&'static DetectorDef> {
    DETECTORS.iter().find(|d| d.name == name)
}
