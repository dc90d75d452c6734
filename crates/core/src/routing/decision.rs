//! The router's answer: an ordered candidate list that explains how it was made.

use std::fmt::Write;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    BreakerOpen,
    ContextWindow,
    TooExpensive,
    OverLimit,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::BreakerOpen => "breaker_open",
            DropReason::ContextWindow => "context_window",
            DropReason::TooExpensive => "too_expensive",
            DropReason::OverLimit => "over_limit",
        }
    }
}

/// A deployment left out of the candidates, or (in shadow mode) kept but reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Dropped {
    pub deployment: Arc<str>,
    pub reason: DropReason,
    /// The breaker runs in shadow mode: the deployment stayed a candidate.
    pub shadow: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub experiment: Arc<str>,
    pub variant: Arc<str>,
    /// The experiment runs in shadow mode: the variant was recorded but not applied.
    pub shadow: bool,
}

/// What chose the tier.
#[derive(Debug, Clone, PartialEq)]
pub enum MatchedBy {
    Rule(Arc<str>),
    /// The requested model named the tier or one of its aliases.
    Alias,
    Default,
    /// A cascade asked for this tier after a response failed its constraints.
    Cascade,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub tier: Arc<str>,
    pub matched_by: MatchedBy,
    /// Shadow rules that matched before the acting one, with the tier each would pick.
    pub shadow_rules: Vec<(Arc<str>, Arc<str>)>,
    pub assignments: Vec<Assignment>,
    /// Deployment names, best first: the tier's own, then its fallback tiers'.
    pub candidates: Vec<Arc<str>>,
    pub dropped: Vec<Dropped>,
    /// The tier a cascade would escalate to.
    pub escalation_tier: Option<Arc<str>>,
}

impl Decision {
    /// One header-safe line: `tier=large; by=rule:long; exp=canary:new; dropped=a:breaker_open`.
    pub fn explain(&self) -> String {
        let mut out = format!("tier={}; by=", self.tier);
        match &self.matched_by {
            MatchedBy::Rule(name) => {
                let _ = write!(out, "rule:{name}");
            }
            MatchedBy::Alias => out.push_str("alias"),
            MatchedBy::Default => out.push_str("default"),
            MatchedBy::Cascade => out.push_str("cascade"),
        }
        push_list(
            &mut out,
            "shadow_rules",
            &self.shadow_rules,
            |o, (rule, tier)| {
                let _ = write!(o, "{rule}:{tier}");
            },
        );
        push_list(&mut out, "exp", &self.assignments, |o, a| {
            let _ = write!(o, "{}:{}{}", a.experiment, a.variant, shadow_mark(a.shadow));
        });
        push_list(&mut out, "dropped", &self.dropped, |o, d| {
            let _ = write!(
                o,
                "{}:{}{}",
                d.deployment,
                d.reason.as_str(),
                shadow_mark(d.shadow)
            );
        });
        out
    }
}

fn shadow_mark(shadow: bool) -> &'static str {
    if shadow {
        "(shadow)"
    } else {
        ""
    }
}

fn push_list<T>(out: &mut String, key: &str, items: &[T], mut item: impl FnMut(&mut String, &T)) {
    if items.is_empty() {
        return;
    }
    let _ = write!(out, "; {key}=");
    for (i, value) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        item(out, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explanation_lists_every_part() {
        let decision = Decision {
            tier: "large".into(),
            matched_by: MatchedBy::Rule("long".into()),
            shadow_rules: vec![("try".into(), "medium".into())],
            assignments: vec![Assignment {
                experiment: "canary".into(),
                variant: "new".into(),
                shadow: false,
            }],
            candidates: vec!["b".into()],
            dropped: vec![
                Dropped {
                    deployment: "a".into(),
                    reason: DropReason::BreakerOpen,
                    shadow: true,
                },
                Dropped {
                    deployment: "c".into(),
                    reason: DropReason::ContextWindow,
                    shadow: false,
                },
            ],
            escalation_tier: None,
        };
        assert_eq!(
            decision.explain(),
            "tier=large; by=rule:long; shadow_rules=try:medium; exp=canary:new; \
             dropped=a:breaker_open(shadow),c:context_window"
        );
    }
}
