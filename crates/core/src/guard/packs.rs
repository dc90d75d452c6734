//! The built-in rule packs. Every rule here can be switched off or changed through
//! `overrides` by its id; the packs only choose sensible defaults.

use super::detectors::DETECTORS;
use super::spec::{Action, AppliesTo, Kind, RuleSpec, Severity};
use crate::error::{Error, Result};

pub const PACK_NAMES: &[&str] = &["pii", "secrets", "injection", "invisible"];

fn rule(id: &str, kind: Kind, category: &str, severity: Severity, action: Action) -> RuleSpec {
    RuleSpec {
        id: id.to_owned(),
        kind,
        category: Some(category.to_owned()),
        severity: Some(severity),
        action: Some(action),
        tier: None,
        shadow: false,
        applies_to: None,
        roles: Vec::new(),
        placeholder: None,
        enabled: true,
    }
}

fn detector_rules(category: &str, severity: Severity) -> Vec<RuleSpec> {
    DETECTORS
        .iter()
        .filter(|d| d.category == category)
        .map(|d| {
            rule(
                d.id,
                Kind::Detector { detector: d.name },
                category,
                severity,
                Action::Redact,
            )
        })
        .collect()
}

/// The rules of one named pack.
pub fn pack(name: &str) -> Result<Vec<RuleSpec>> {
    let rules = match name {
        // Personal data is masked before it leaves, in prompts and in answers.
        "pii" => detector_rules("pii", Severity::Medium),
        // Credentials are masked too: refusing would make users paste them elsewhere.
        "secrets" => detector_rules("secret", Severity::High),
        // Heuristics have false positives, so the pack records instead of refusing;
        // policies that want refusals override the action.
        "injection" => {
            let mut r = rule(
                "injection.phrases",
                Kind::Injection { threshold: 0.45 },
                "injection",
                Severity::High,
                Action::Flag,
            );
            r.applies_to = Some(AppliesTo::Input);
            vec![r]
        }
        // Hidden characters are stripped (an empty placeholder) and recorded.
        "invisible" => {
            let mut r = rule(
                "invisible.characters",
                Kind::Invisible,
                "invisible",
                Severity::Medium,
                Action::Redact,
            );
            r.placeholder = Some(String::new());
            vec![r]
        }
        other => {
            return Err(Error::Config(format!(
                "guard.packs: unknown pack {other:?}; known packs are {}",
                PACK_NAMES.join(", ")
            )))
        }
    };
    Ok(rules)
}
