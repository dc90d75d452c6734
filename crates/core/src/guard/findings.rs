//! Findings: one match of one rule, and what happens to a set of them (overlaps
//! resolved, redactions applied).

use super::rules::{Matcher, Rule};
use super::spec::Action;

/// A match, with byte offsets into the scanned text.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub rule: usize,
    pub start: usize,
    pub end: usize,
    pub score: f64,
    /// Entity type for detectors, phrase family for injection, rule label otherwise.
    pub label: String,
}

/// Detector findings that overlap (a number read as both a phone and a card) keep
/// the best-scored one; findings of other kinds are left alone.
pub(super) fn resolve_overlaps(findings: &mut Vec<Finding>, rules: &[Rule]) {
    let is_detector =
        |f: &Finding| matches!(&rules[f.rule].matcher, Matcher::Pattern(p) if p.validate.is_some());
    findings.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then((b.end - b.start).cmp(&(a.end - a.start)))
            .then(a.rule.cmp(&b.rule))
    });
    let mut kept: Vec<Finding> = Vec::with_capacity(findings.len());
    for f in findings.drain(..) {
        let duplicate = kept.iter().any(|k| {
            let overlap = k.start < f.end && f.start < k.end;
            (k.rule == f.rule && overlap) || (overlap && is_detector(k) && is_detector(&f))
        });
        if !duplicate {
            kept.push(f);
        }
    }
    kept.sort_by_key(|f| (f.start, f.end, f.rule));
    *findings = kept;
}

/// The text with every non-shadow `redact` finding replaced by its rule's placeholder.
/// Overlapping findings are merged; the earliest one names the placeholder.
pub fn redact(text: &str, findings: &[Finding], rules: &[Rule]) -> String {
    let mut spans: Vec<(usize, usize, &str)> = findings
        .iter()
        .filter(|f| {
            let r = &rules[f.rule];
            r.action == Action::Redact && !r.shadow
        })
        .map(|f| (f.start, f.end, rules[f.rule].placeholder.as_str()))
        .collect();
    spans.sort_by_key(|s| (s.0, std::cmp::Reverse(s.1)));
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end, placeholder) in spans {
        if end <= at {
            continue;
        }
        if start >= at {
            out.push_str(&text[at..start]);
            out.push_str(placeholder);
        }
        at = end;
    }
    out.push_str(&text[at.min(text.len())..]);
    out
}
