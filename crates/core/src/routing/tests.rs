//! Router behaviour end to end over small specs.

use super::*;
use crate::Error;

fn deployment(name: &str, price: f64) -> DeploymentSpec {
    DeploymentSpec {
        name: name.into(),
        upstream: "sim".into(),
        model: format!("model-{name}"),
        weight: 1.0,
        context_window: None,
        input_usd_per_mtok: price,
        output_usd_per_mtok: price * 4.0,
        max_in_flight: None,
    }
}

fn tier(name: &str, members: &[&str], strategy: Strategy) -> TierSpec {
    TierSpec {
        name: name.into(),
        deployments: members.iter().map(|m| m.to_string()).collect(),
        strategy,
        aliases: Vec::new(),
        fallbacks: Vec::new(),
        escalate_to: None,
        escalates: true,
    }
}

fn rule(name: &str, when: ConditionSpec, tier: &str) -> RuleSpec {
    RuleSpec {
        name: name.into(),
        when,
        tier: tier.into(),
        shadow: false,
    }
}

fn spec() -> RoutingSpec {
    let mut large = deployment("l1", 10.0);
    large.context_window = Some(200_000);
    let mut small = deployment("s1", 0.1);
    small.context_window = Some(8_000);
    RoutingSpec {
        deployments: vec![small, deployment("m1", 1.0), deployment("m2", 2.0), large],
        tiers: vec![
            tier("small", &["s1"], Strategy::WeightedRandom),
            tier("medium", &["m1", "m2"], Strategy::WeightedRandom),
            tier("large", &["l1"], Strategy::WeightedRandom),
        ],
        rules: vec![
            rule(
                "long",
                ConditionSpec {
                    input_tokens_over: Some(8_000),
                    ..Default::default()
                },
                "large",
            ),
            rule(
                "tools",
                ConditionSpec {
                    has_tools: Some(true),
                    ..Default::default()
                },
                "medium",
            ),
        ],
        default_tier: Some("small".into()),
        breaker: BreakerSpec {
            min_calls: 2,
            cooldown_seconds: 10.0,
            half_open_calls: 1,
            ..Default::default()
        },
        latency_alpha: 0.5,
        assumed_output_tokens: 256,
        experiments: Vec::new(),
    }
}

fn router(spec: RoutingSpec) -> Router {
    Router::new(spec, 7).unwrap()
}

fn names(decision: &Decision) -> Vec<&str> {
    decision.candidates.iter().map(|c| &**c).collect()
}

fn fail(r: &Router, deployment: &str, now: f64) {
    assert!(r.start(deployment, now).unwrap());
    r.record(deployment, false, None, now).unwrap();
}

#[test]
fn first_matching_rule_wins_and_default_catches_the_rest() {
    let r = router(spec());
    let long = RequestFacts {
        input_tokens: 9_000,
        has_tools: true,
        ..Default::default()
    };
    let d = r.decide(&long, 0.0);
    assert_eq!(&*d.tier, "large");
    assert_eq!(d.matched_by, MatchedBy::Rule("long".into()));
    assert_eq!(names(&d), ["l1"]);

    let d = r.decide(&RequestFacts::default(), 0.0);
    assert_eq!((&*d.tier, &d.matched_by), ("small", &MatchedBy::Default));
    assert_eq!(d.escalation_tier.as_deref(), Some("medium"));
}

#[test]
fn shadow_rule_is_reported_but_does_not_act() {
    let mut s = spec();
    s.rules[0].shadow = true;
    let r = router(s);
    let d = r.decide(
        &RequestFacts {
            input_tokens: 7_000,
            ..Default::default()
        },
        0.0,
    );
    assert_eq!(&*d.tier, "small");
    assert!(d.shadow_rules.is_empty());
    let d = r.decide(
        &RequestFacts {
            input_tokens: 9_000,
            has_tools: true,
            ..Default::default()
        },
        0.0,
    );
    assert_eq!(&*d.tier, "medium");
    assert_eq!(d.shadow_rules, vec![("long".into(), "large".into())]);
}

#[test]
fn requested_model_selects_a_tier_by_name_or_alias() {
    let mut s = spec();
    s.tiers[2].aliases = vec!["gpt-4o".into()];
    let r = router(s);
    for model in ["gpt-4o", "large"] {
        let d = r.decide(
            &RequestFacts {
                model: Some(model.into()),
                ..Default::default()
            },
            0.0,
        );
        assert_eq!((&*d.tier, &d.matched_by), ("large", &MatchedBy::Alias));
    }
}

#[test]
fn context_window_budget_and_limits_drop_candidates_with_reasons() {
    let mut s = spec();
    s.tiers[0].fallbacks = vec!["medium".into(), "large".into()];
    s.rules.clear();
    let r = router(s);
    let facts = RequestFacts {
        input_tokens: 7_900,
        max_output_tokens: Some(200),
        budget_remaining_usd: Some(0.05),
        over_limit: vec!["m2".into()],
        ..Default::default()
    };
    let d = r.decide(&facts, 0.0);
    assert_eq!(names(&d), ["m1"]);
    let reasons: Vec<(&str, DropReason)> = d
        .dropped
        .iter()
        .map(|x| (&*x.deployment, x.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            ("s1", DropReason::ContextWindow),
            ("m2", DropReason::OverLimit),
            ("l1", DropReason::TooExpensive),
        ]
    );
    assert!(d
        .explain()
        .contains("dropped=s1:context_window,m2:over_limit,l1:too_expensive"));
}

#[test]
fn max_in_flight_counts_started_calls() {
    let mut s = spec();
    s.deployments[0].max_in_flight = Some(1);
    s.tiers[0].fallbacks = vec!["large".into()];
    let r = router(s);
    assert!(r.start("s1", 0.0).unwrap());
    let d = r.decide(&RequestFacts::default(), 0.0);
    assert_eq!(names(&d), ["l1"]);
    r.record("s1", true, Some(0.1), 0.0).unwrap();
    assert_eq!(
        names(&r.decide(&RequestFacts::default(), 0.0)),
        ["s1", "l1"]
    );
}

#[test]
fn breaker_drops_then_lets_a_trial_through_after_cool_down() {
    let r = router(spec());
    fail(&r, "s1", 0.0);
    fail(&r, "s1", 1.0);
    let d = r.decide(&RequestFacts::default(), 2.0);
    assert!(d.candidates.is_empty());
    assert_eq!(d.dropped[0].reason, DropReason::BreakerOpen);
    assert!(!r.start("s1", 2.0).unwrap());

    assert_eq!(names(&r.decide(&RequestFacts::default(), 11.0)), ["s1"]);
    assert!(r.start("s1", 11.0).unwrap());
    // One trial only: a second concurrent call is refused until the trial reports.
    assert!(!r.start("s1", 11.0).unwrap());
    r.record("s1", true, Some(0.2), 11.5).unwrap();
    assert_eq!(r.snapshot().deployments["s1"].breaker.phase, Phase::Closed);
}

#[test]
fn shadow_breaker_reports_but_keeps_the_candidate() {
    let mut s = spec();
    s.breaker.shadow = true;
    let r = router(s);
    fail(&r, "s1", 0.0);
    fail(&r, "s1", 1.0);
    let d = r.decide(&RequestFacts::default(), 2.0);
    assert_eq!(names(&d), ["s1"]);
    assert!(d.dropped[0].shadow);
    assert!(r.start("s1", 2.0).unwrap());
}

#[test]
fn lowest_latency_and_least_busy_order_by_observations() {
    let mut s = spec();
    s.tiers[1].strategy = Strategy::LowestLatency;
    let r = router(s);
    for (d, latency) in [("m1", 0.9), ("m2", 0.2)] {
        r.start(d, 0.0).unwrap();
        r.record(d, true, Some(latency), 0.0).unwrap();
    }
    let facts = RequestFacts {
        has_tools: true,
        ..Default::default()
    };
    assert_eq!(names(&r.decide(&facts, 0.0)), ["m2", "m1"]);
    // The average moves halfway (alpha 0.5) towards a slow sample: 0.2 -> 1.1.
    r.start("m2", 0.0).unwrap();
    r.record("m2", true, Some(2.0), 0.0).unwrap();
    assert_eq!(r.snapshot().deployments["m2"].latency_ewma, Some(1.1));
    assert_eq!(names(&r.decide(&facts, 0.0)), ["m1", "m2"]);

    let mut s = spec();
    s.tiers[1].strategy = Strategy::LeastBusy;
    let r = router(s);
    r.start("m1", 0.0).unwrap();
    for _ in 0..20 {
        assert_eq!(names(&r.decide(&facts, 0.0)), ["m2", "m1"]);
    }
}

#[test]
fn cheapest_orders_by_estimated_cost() {
    let mut s = spec();
    s.tiers[1].strategy = Strategy::Cheapest;
    s.tiers[1].deployments = vec!["m2".into(), "l1".into(), "m1".into()];
    let r = router(s);
    let facts = RequestFacts {
        has_tools: true,
        input_tokens: 100,
        ..Default::default()
    };
    assert_eq!(names(&r.decide(&facts, 0.0)), ["m1", "m2", "l1"]);
}

#[test]
fn weighted_random_follows_weights_and_keeps_zero_weight_last() {
    let mut s = spec();
    s.deployments.push(deployment("m3", 1.0));
    s.deployments[1].weight = 3.0;
    s.deployments[4].weight = 0.0;
    s.tiers[1].deployments.push("m3".into());
    let r = router(s);
    let facts = RequestFacts {
        has_tools: true,
        ..Default::default()
    };
    let mut m1_first = 0;
    for _ in 0..4000 {
        let d = r.decide(&facts, 0.0);
        assert_eq!(names(&d)[2], "m3");
        m1_first += usize::from(&*d.candidates[0] == "m1");
    }
    // Expected 3000 of 4000; the bound is more than six standard deviations (27).
    assert!((2830..3170).contains(&m1_first), "{m1_first}");
}

fn experiment(variants: Vec<VariantSpec>) -> ExperimentSpec {
    ExperimentSpec {
        name: "exp".into(),
        salt: None,
        subject: Subject::User,
        when: ConditionSpec::default(),
        tiers: Vec::new(),
        variants,
        shadow: false,
    }
}

fn variant(name: &str, weight: f64, tier: Option<&str>, deployment: Option<&str>) -> VariantSpec {
    VariantSpec {
        name: name.into(),
        weight,
        tier: tier.map(Into::into),
        deployment: deployment.map(Into::into),
        template: None,
    }
}

#[test]
fn experiment_variants_switch_tier_or_pin_a_deployment_per_subject() {
    let mut s = spec();
    s.experiments = vec![experiment(vec![
        variant("to-large", 1.0, Some("large"), None),
        variant("pin-m2", 1.0, None, Some("m2")),
    ])];
    let r = router(s);
    let mut seen = std::collections::HashSet::new();
    for i in 0..50 {
        let facts = RequestFacts {
            user: Some(format!("u{i}")),
            ..Default::default()
        };
        let d = r.decide(&facts, 0.0);
        let again = r.decide(&facts, 0.0);
        assert_eq!(d.assignments, again.assignments);
        match &*d.assignments[0].variant {
            "to-large" => assert_eq!((&*d.tier, names(&d)), ("large", vec!["l1"])),
            _ => assert_eq!((&*d.tier, names(&d)), ("small", vec!["m2", "s1"])),
        }
        seen.insert(d.assignments[0].variant.clone());
    }
    assert_eq!(seen.len(), 2);
    let counts = &r.snapshot().experiments["exp"];
    assert_eq!(counts.values().sum::<u64>(), 100);
}

#[test]
fn experiments_skip_requests_outside_their_tiers_and_without_subject() {
    let mut s = spec();
    let mut e = experiment(vec![variant("only", 1.0, None, Some("m2"))]);
    e.tiers = vec!["medium".into()];
    s.experiments = vec![e];
    let r = router(s);
    let user = RequestFacts {
        user: Some("u".into()),
        ..Default::default()
    };
    assert!(r.decide(&user, 0.0).assignments.is_empty());
    let tools = RequestFacts {
        has_tools: true,
        ..Default::default()
    };
    assert!(r.decide(&tools, 0.0).assignments.is_empty());
    let both = RequestFacts {
        has_tools: true,
        ..user
    };
    assert_eq!(names(&r.decide(&both, 0.0))[0], "m2");
}

#[test]
fn shadow_experiment_is_recorded_but_not_applied() {
    let mut s = spec();
    let mut e = experiment(vec![variant("big", 1.0, Some("large"), None)]);
    e.shadow = true;
    s.experiments = vec![e];
    let r = router(s);
    let d = r.decide(
        &RequestFacts {
            user: Some("u".into()),
            ..Default::default()
        },
        0.0,
    );
    assert_eq!(&*d.tier, "small");
    assert!(d.assignments[0].shadow);
    assert!(d.explain().contains("exp=exp:big(shadow)"));
}

#[test]
fn fallback_tiers_follow_without_repeating_a_deployment() {
    let mut s = spec();
    s.tiers[1].fallbacks = vec!["large".into()];
    s.tiers[2].deployments = vec!["l1".into(), "m1".into()];
    let r = router(s);
    let d = r.decide(
        &RequestFacts {
            has_tools: true,
            ..Default::default()
        },
        0.0,
    );
    assert_eq!(d.candidates.len(), 3);
    assert_eq!(&*d.candidates[2], "l1");
}

#[test]
fn a_tier_may_refuse_escalation() {
    let mut s = spec();
    s.tiers[1].escalates = false;
    let r = router(s);
    let d = r.decide(
        &RequestFacts {
            has_tools: true,
            ..Default::default()
        },
        0.0,
    );
    assert_eq!(d.escalation_tier, None);
}

#[test]
fn decide_tier_serves_cascades() {
    let r = router(spec());
    let d = r
        .decide_tier(&RequestFacts::default(), "large", 0.0)
        .unwrap();
    assert_eq!(
        (names(&d), &d.matched_by),
        (vec!["l1"], &MatchedBy::Cascade)
    );
    assert_eq!(d.escalation_tier, None);
    assert!(matches!(
        r.decide_tier(&RequestFacts::default(), "huge", 0.0),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn abandon_frees_in_flight_without_judging() {
    let r = router(spec());
    assert!(r.start("s1", 0.0).unwrap());
    r.abandon("s1").unwrap();
    let live = &r.snapshot().deployments["s1"];
    assert_eq!((live.in_flight, live.calls), (0, 0));
    assert!(matches!(
        r.record("nope", true, None, 0.0),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn invalid_specs_name_the_key() {
    type Mutation = fn(&mut RoutingSpec);
    let cases: Vec<(Mutation, &str)> = vec![
        (
            |s| s.tiers[0].deployments = vec!["zz".into()],
            "tiers[0].deployments",
        ),
        (|s| s.rules[1].tier = "huge".into(), "rules[1].tier"),
        (
            |s| s.deployments[1].name = "s1".into(),
            "deployments[1].name",
        ),
        (|s| s.deployments[0].weight = -1.0, "deployments[0].weight"),
        (|s| s.default_tier = Some("x".into()), "default_tier"),
        (|s| s.breaker.failure_rate = 0.0, "breaker.failure_rate"),
        (
            |s| s.tiers[0].fallbacks = vec!["small".into()],
            "tiers[0].fallbacks",
        ),
        (
            |s| s.deployments[0].name = "has space".into(),
            "deployments[0].name",
        ),
        (
            |s| s.experiments = vec![experiment(vec![variant("a", 0.0, None, None)])],
            "experiments[0].variants",
        ),
    ];
    for (mutate, key) in cases {
        let mut s = spec();
        mutate(&mut s);
        match Router::new(s, 0) {
            Err(Error::Config(msg)) => assert!(msg.contains(key), "{msg} lacks {key}"),
            Err(other) => panic!("{key}: {other:?}"),
            Ok(_) => panic!("{key}: accepted"),
        }
    }
}

#[test]
fn spec_parses_from_json_and_rejects_unknown_fields() {
    let text = r#"{
        "deployments": [{"name": "a", "upstream": "sim", "model": "m"}],
        "tiers": [{"name": "t", "deployments": ["a"], "strategy": "least_busy"}]
    }"#;
    let r = Router::from_json(text, 0).unwrap();
    assert_eq!(names(&r.decide(&RequestFacts::default(), 0.0)), ["a"]);
    let typo = text.replace("\"strategy\"", "\"stratgy\"");
    match Router::from_json(&typo, 0) {
        Err(Error::Config(msg)) => assert!(msg.contains("stratgy"), "{msg}"),
        _ => panic!("typo accepted"),
    }
    assert!(r.snapshot_json().unwrap().contains("\"in_flight\":0"));
}
