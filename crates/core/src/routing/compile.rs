//! Checks a routing spec and turns its names into indices, once, so that a decision
//! never looks a name up by string except for the request's own facts.

use std::collections::HashMap;
use std::sync::Arc;

use super::hashing::range_bounds;
use super::spec::{
    BreakerSpec, ConditionSpec, DeploymentSpec, RoutingSpec, Strategy, Subject, TierSpec,
};
use crate::{Error, Result};

pub struct Deployment {
    pub name: Arc<str>,
    pub spec: DeploymentSpec,
}

pub struct Tier {
    pub name: Arc<str>,
    pub members: Vec<usize>,
    pub strategy: Strategy,
    pub fallbacks: Vec<usize>,
    pub escalate_to: Option<usize>,
}

pub struct Rule {
    pub name: Arc<str>,
    pub when: ConditionSpec,
    pub tier: usize,
    pub shadow: bool,
}

pub struct Variant {
    pub name: Arc<str>,
    pub tier: Option<usize>,
    pub deployment: Option<usize>,
}

pub struct Experiment {
    pub name: Arc<str>,
    pub salt: String,
    pub subject: Subject,
    pub when: ConditionSpec,
    pub tiers: Vec<usize>,
    pub bounds: Vec<u64>,
    pub variants: Vec<Variant>,
    pub shadow: bool,
}

pub struct Compiled {
    pub deployments: Vec<Deployment>,
    pub deployment_index: HashMap<String, usize>,
    pub tiers: Vec<Tier>,
    /// Tier names and aliases, for requests that name a tier as their model.
    pub tier_by_model: HashMap<String, usize>,
    pub rules: Vec<Rule>,
    pub experiments: Vec<Experiment>,
    pub default_tier: usize,
    pub breaker: BreakerSpec,
    pub latency_alpha: f64,
    pub assumed_output_tokens: u64,
}

fn config(msg: String) -> Error {
    Error::Config(msg)
}

/// Names end up in the `x-aiofast-route` header and in metric labels, so they are kept to
/// characters that need no escaping there.
fn check_name(key: &str, name: &str) -> Result<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._-/@+".contains(c);
    if name.is_empty() || !name.chars().all(allowed) {
        return Err(config(format!(
            "{key} must be a non-empty name of letters, digits and ._-/@+, got {name:?}"
        )));
    }
    Ok(())
}

fn index_of(index: &HashMap<String, usize>, key: &str, kind: &str, name: &str) -> Result<usize> {
    index.get(name).copied().ok_or_else(|| {
        let mut known: Vec<&str> = index.keys().map(String::as_str).collect();
        known.sort_unstable();
        config(format!(
            "{key} names unknown {kind} {name:?}; known: {}",
            known.join(", ")
        ))
    })
}

fn unique_index<'a>(
    key: &str,
    names: impl Iterator<Item = &'a str>,
) -> Result<HashMap<String, usize>> {
    let mut index = HashMap::new();
    for (i, name) in names.enumerate() {
        check_name(&format!("{key}[{i}].name"), name)?;
        if index.insert(name.to_string(), i).is_some() {
            return Err(config(format!(
                "{key}[{i}].name {name:?} is used twice; names are unique"
            )));
        }
    }
    Ok(index)
}

fn check_deployment(i: usize, d: &DeploymentSpec) -> Result<()> {
    let key = format!("deployments[{i}]");
    let non_negative = |field: &str, v: f64| {
        if v.is_finite() && v >= 0.0 {
            Ok(())
        } else {
            Err(config(format!(
                "{key}.{field} must be a finite number >= 0, got {v}"
            )))
        }
    };
    non_negative("weight", d.weight)?;
    non_negative("input_usd_per_mtok", d.input_usd_per_mtok)?;
    non_negative("output_usd_per_mtok", d.output_usd_per_mtok)?;
    if d.context_window == Some(0) {
        return Err(config(format!(
            "{key}.context_window must be positive when set"
        )));
    }
    if d.upstream.is_empty() || d.model.is_empty() {
        return Err(config(format!(
            "{key} needs a non-empty upstream and model"
        )));
    }
    Ok(())
}

fn check_breaker(b: &BreakerSpec) -> Result<()> {
    if !(b.failure_rate > 0.0 && b.failure_rate <= 1.0) {
        return Err(config(format!(
            "breaker.failure_rate must be in (0, 1], got {}",
            b.failure_rate
        )));
    }
    if !(b.window_seconds.is_finite() && b.window_seconds > 0.0) {
        return Err(config(format!(
            "breaker.window_seconds must be > 0, got {}",
            b.window_seconds
        )));
    }
    if !(b.cooldown_seconds.is_finite() && b.cooldown_seconds >= 0.0) {
        return Err(config(format!(
            "breaker.cooldown_seconds must be >= 0, got {}",
            b.cooldown_seconds
        )));
    }
    if b.min_calls == 0 || b.half_open_calls == 0 {
        return Err(config(
            "breaker.min_calls and breaker.half_open_calls must be >= 1".into(),
        ));
    }
    Ok(())
}

fn compile_tiers(
    spec: &RoutingSpec,
    deployments: &HashMap<String, usize>,
    tiers: &HashMap<String, usize>,
) -> Result<(Vec<Tier>, HashMap<String, usize>)> {
    let mut by_model: HashMap<String, usize> = tiers.clone();
    let mut compiled = Vec::with_capacity(spec.tiers.len());
    for (i, t) in spec.tiers.iter().enumerate() {
        let key = format!("tiers[{i}]");
        if t.deployments.is_empty() {
            return Err(config(format!(
                "{key}.deployments must name at least one deployment"
            )));
        }
        let members = t
            .deployments
            .iter()
            .map(|d| index_of(deployments, &format!("{key}.deployments"), "deployment", d))
            .collect::<Result<Vec<_>>>()?;
        let fallbacks = t
            .fallbacks
            .iter()
            .map(|f| index_of(tiers, &format!("{key}.fallbacks"), "tier", f))
            .collect::<Result<Vec<_>>>()?;
        if fallbacks.contains(&i) {
            return Err(config(format!(
                "{key}.fallbacks must not name the tier itself"
            )));
        }
        for alias in &t.aliases {
            if by_model.insert(alias.clone(), i).is_some() {
                return Err(config(format!(
                    "{key}.aliases: {alias:?} already names a tier"
                )));
            }
        }
        compiled.push(Tier {
            name: t.name.as_str().into(),
            members,
            strategy: t.strategy,
            fallbacks,
            escalate_to: escalation(spec, tiers, i, t)?,
        });
    }
    Ok((compiled, by_model))
}

fn escalation(
    spec: &RoutingSpec,
    tiers: &HashMap<String, usize>,
    i: usize,
    t: &TierSpec,
) -> Result<Option<usize>> {
    if !t.escalates {
        return Ok(None);
    }
    match &t.escalate_to {
        Some(name) => {
            let target = index_of(tiers, &format!("tiers[{i}].escalate_to"), "tier", name)?;
            if target == i {
                return Err(config(format!(
                    "tiers[{i}].escalate_to must not name the tier itself"
                )));
            }
            Ok(Some(target))
        }
        None => Ok((i + 1 < spec.tiers.len()).then_some(i + 1)),
    }
}

fn compile_experiment(
    i: usize,
    e: &super::spec::ExperimentSpec,
    deployments: &HashMap<String, usize>,
    tiers: &HashMap<String, usize>,
) -> Result<Experiment> {
    let key = format!("experiments[{i}]");
    if e.variants.is_empty() {
        return Err(config(format!(
            "{key}.variants must list at least one variant"
        )));
    }
    unique_index(
        &format!("{key}.variants"),
        e.variants.iter().map(|v| v.name.as_str()),
    )?;
    let weights: Vec<f64> = e.variants.iter().map(|v| v.weight).collect();
    if weights.iter().any(|w| !w.is_finite() || *w < 0.0) || weights.iter().sum::<f64>() <= 0.0 {
        return Err(config(format!(
            "{key}.variants weights must be >= 0 with a positive sum, got {weights:?}"
        )));
    }
    let variants = e
        .variants
        .iter()
        .enumerate()
        .map(|(j, v)| {
            let vkey = format!("{key}.variants[{j}]");
            Ok(Variant {
                name: v.name.as_str().into(),
                tier: v
                    .tier
                    .as_deref()
                    .map(|t| index_of(tiers, &format!("{vkey}.tier"), "tier", t))
                    .transpose()?,
                deployment: v
                    .deployment
                    .as_deref()
                    .map(|d| index_of(deployments, &format!("{vkey}.deployment"), "deployment", d))
                    .transpose()?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Experiment {
        name: e.name.as_str().into(),
        salt: e.salt.clone().unwrap_or_else(|| e.name.clone()),
        subject: e.subject,
        when: e.when.clone(),
        tiers: e
            .tiers
            .iter()
            .map(|t| index_of(tiers, &format!("{key}.tiers"), "tier", t))
            .collect::<Result<Vec<_>>>()?,
        bounds: range_bounds(&weights),
        variants,
        shadow: e.shadow,
    })
}

pub fn compile(spec: RoutingSpec) -> Result<Compiled> {
    if spec.deployments.is_empty() || spec.tiers.is_empty() {
        return Err(config(
            "routing needs at least one deployment and one tier".into(),
        ));
    }
    let deployment_index = unique_index(
        "deployments",
        spec.deployments.iter().map(|d| d.name.as_str()),
    )?;
    for (i, d) in spec.deployments.iter().enumerate() {
        check_deployment(i, d)?;
    }
    let tier_index = unique_index("tiers", spec.tiers.iter().map(|t| t.name.as_str()))?;
    let (tiers, tier_by_model) = compile_tiers(&spec, &deployment_index, &tier_index)?;
    unique_index("rules", spec.rules.iter().map(|r| r.name.as_str()))?;
    let rules = spec
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            Ok(Rule {
                name: r.name.as_str().into(),
                when: r.when.clone(),
                tier: index_of(&tier_index, &format!("rules[{i}].tier"), "tier", &r.tier)?,
                shadow: r.shadow,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    unique_index(
        "experiments",
        spec.experiments.iter().map(|e| e.name.as_str()),
    )?;
    let experiments = spec
        .experiments
        .iter()
        .enumerate()
        .map(|(i, e)| compile_experiment(i, e, &deployment_index, &tier_index))
        .collect::<Result<Vec<_>>>()?;
    let default_tier = match &spec.default_tier {
        Some(name) => index_of(&tier_index, "default_tier", "tier", name)?,
        None => 0,
    };
    check_breaker(&spec.breaker)?;
    if !(spec.latency_alpha > 0.0 && spec.latency_alpha <= 1.0) {
        return Err(config(format!(
            "latency_alpha must be in (0, 1], got {}",
            spec.latency_alpha
        )));
    }
    let deployments = spec
        .deployments
        .into_iter()
        .map(|d| Deployment {
            name: d.name.as_str().into(),
            spec: d,
        })
        .collect();
    Ok(Compiled {
        deployments,
        deployment_index,
        tiers,
        tier_by_model,
        rules,
        experiments,
        default_tier,
        breaker: spec.breaker,
        latency_alpha: spec.latency_alpha,
        assumed_output_tokens: spec.assumed_output_tokens,
    })
}
