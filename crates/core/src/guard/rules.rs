//! A compiled rule: what it matches, what it does, where it applies.

use aho_corasick::AhoCorasick;
use regex::bytes::Regex;

use super::detectors::Candidate;
use super::spec::{Action, AppliesTo, Role, Severity, Target};

/// One compiled rule.
pub struct Rule {
    pub id: String,
    pub category: String,
    pub severity: Severity,
    pub action: Action,
    pub tier: Option<String>,
    pub shadow: bool,
    pub applies_to: AppliesTo,
    pub roles: Vec<Role>,
    pub placeholder: String,
    pub(super) matcher: Matcher,
}

pub(super) enum Matcher {
    Pattern(Pattern),
    Literal {
        automaton: AhoCorasick,
        whole_word: bool,
        max_len: usize,
    },
    Injection {
        threshold: f64,
    },
    Invisible,
    MaxChars(usize),
    MaxMessages(usize),
    MaxTokens(usize),
}

pub(super) struct Pattern {
    pub(super) regex: Regex,
    /// Capture group 1 is the reported span.
    pub(super) grouped: bool,
    pub(super) validate: Option<fn(&Candidate<'_>) -> Option<f64>>,
    pub(super) label: String,
    pub(super) max_len: usize,
    /// A literal every match starts with, for rules longer than `LONG_MATCH`.
    pub(super) opener: Option<&'static [u8]>,
}

/// Which rules take part in a scan.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope {
    pub target: Option<Target>,
    pub role: Option<Role>,
}

impl Rule {
    pub fn covers(&self, scope: Scope) -> bool {
        scope.target.is_none_or(|t| self.applies_to.covers(t))
            && scope
                .role
                .is_none_or(|r| self.roles.is_empty() || self.roles.contains(&r))
    }
}
