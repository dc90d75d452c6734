//! Evaluation of rule and experiment conditions against the facts of a request.

use super::facts::RequestFacts;
use super::spec::ConditionSpec;

fn contains(haystack: &[String], needle: &str) -> bool {
    haystack.iter().any(|s| s == needle)
}

fn flag_matches(wanted: Option<bool>, actual: bool) -> bool {
    wanted.is_none_or(|w| w == actual)
}

impl ConditionSpec {
    /// True when every condition that is set holds; an empty condition always holds.
    pub fn matches(&self, facts: &RequestFacts) -> bool {
        self.tokens_match(facts)
            && self.labels_match(facts)
            && flag_matches(self.has_tools, facts.has_tools)
            && flag_matches(self.has_images, facts.has_images)
            && flag_matches(self.has_json_schema, facts.has_json_schema)
            && flag_matches(self.downgrade, facts.downgrade)
            && self.budget_matches(facts)
    }

    fn tokens_match(&self, facts: &RequestFacts) -> bool {
        self.input_tokens_over
            .is_none_or(|n| facts.input_tokens > n)
            && self
                .input_tokens_at_most
                .is_none_or(|n| facts.input_tokens <= n)
    }

    fn labels_match(&self, facts: &RequestFacts) -> bool {
        let in_list = |list: &[String], value: &Option<String>| {
            list.is_empty() || value.as_deref().is_some_and(|v| contains(list, v))
        };
        in_list(&self.model_in, &facts.model)
            && in_list(&self.user_tier_in, &facts.user_tier)
            && (self.tags_any.is_empty() || self.tags_any.iter().any(|t| contains(&facts.tags, t)))
            && self.tags_all.iter().all(|t| contains(&facts.tags, t))
            && (self.guard_route_in.is_empty()
                || self
                    .guard_route_in
                    .iter()
                    .any(|r| contains(&facts.guard_routes, r)))
    }

    fn budget_matches(&self, facts: &RequestFacts) -> bool {
        match (self.budget_remaining_usd_under, facts.budget_remaining_usd) {
            (None, _) => true,
            (Some(limit), Some(remaining)) => remaining < limit,
            // No budget applies to the request, so it is not running low.
            (Some(_), None) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn empty_condition_matches_everything() {
        assert!(ConditionSpec::default().matches(&RequestFacts::default()));
    }

    #[test]
    fn token_bounds_are_exclusive_below_and_inclusive_above() {
        let cond = ConditionSpec {
            input_tokens_over: Some(100),
            input_tokens_at_most: Some(200),
            ..Default::default()
        };
        let facts = |n| RequestFacts {
            input_tokens: n,
            ..Default::default()
        };
        assert!(!cond.matches(&facts(100)));
        assert!(cond.matches(&facts(101)));
        assert!(cond.matches(&facts(200)));
        assert!(!cond.matches(&facts(201)));
    }

    #[test]
    fn tags_any_and_all() {
        let any = ConditionSpec {
            tags_any: tags(&["a", "b"]),
            ..Default::default()
        };
        let all = ConditionSpec {
            tags_all: tags(&["a", "b"]),
            ..Default::default()
        };
        let facts = |t: &[&str]| RequestFacts {
            tags: tags(t),
            ..Default::default()
        };
        assert!(any.matches(&facts(&["b"])));
        assert!(!any.matches(&facts(&["c"])));
        assert!(!all.matches(&facts(&["a"])));
        assert!(all.matches(&facts(&["b", "c", "a"])));
    }

    #[test]
    fn a_list_condition_needs_the_fact() {
        let cond = ConditionSpec {
            user_tier_in: tags(&["pro"]),
            ..Default::default()
        };
        assert!(!cond.matches(&RequestFacts::default()));
        let pro = RequestFacts {
            user_tier: Some("pro".into()),
            ..Default::default()
        };
        assert!(cond.matches(&pro));
    }

    #[test]
    fn flags_match_only_when_set() {
        let cond = ConditionSpec {
            has_tools: Some(false),
            ..Default::default()
        };
        assert!(cond.matches(&RequestFacts::default()));
        assert!(!cond.matches(&RequestFacts {
            has_tools: true,
            ..Default::default()
        }));
    }

    #[test]
    fn budget_condition_needs_a_budget() {
        let cond = ConditionSpec {
            budget_remaining_usd_under: Some(1.0),
            ..Default::default()
        };
        assert!(!cond.matches(&RequestFacts::default()));
        let low = RequestFacts {
            budget_remaining_usd: Some(0.5),
            ..Default::default()
        };
        let high = RequestFacts {
            budget_remaining_usd: Some(2.0),
            ..Default::default()
        };
        assert!(cond.matches(&low));
        assert!(!cond.matches(&high));
    }

    #[test]
    fn guard_routes_and_models() {
        let cond = ConditionSpec {
            guard_route_in: tags(&["sensitive"]),
            model_in: tags(&["gpt-4o", "smart"]),
            ..Default::default()
        };
        let facts = RequestFacts {
            guard_routes: tags(&["sensitive"]),
            model: Some("smart".into()),
            ..Default::default()
        };
        assert!(cond.matches(&facts));
        assert!(!cond.matches(&RequestFacts {
            model: None,
            ..facts
        }));
    }
}
