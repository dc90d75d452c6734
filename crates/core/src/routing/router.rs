//! The router: decides candidate lists and learns from the outcomes of calls.
//!
//! Time is passed in by the caller (seconds on a monotonic clock), so tests drive it and
//! the mutable state stays plain data that another store could hold.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use super::breaker::Breaker;
use super::compile::{compile, Compiled, Tier};
use super::decision::{Assignment, Decision, DropReason, Dropped, MatchedBy};
use super::facts::RequestFacts;
use super::hashing::{bucket, pick};
use super::rng::SplitMix64;
use super::spec::{RoutingSpec, Strategy, Subject};
use crate::{Error, Result};

/// What the router has learned about one deployment.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeploymentState {
    pub in_flight: u32,
    /// Moving average of the latency of successful calls, in seconds.
    pub latency_ewma: Option<f64>,
    pub calls: u64,
    pub failures: u64,
    pub breaker: Breaker,
}

/// All mutable state: per deployment, and assignment counts per experiment variant.
#[derive(Debug, Clone)]
struct State {
    deployments: Vec<DeploymentState>,
    variant_counts: Vec<Vec<u64>>,
    rng: SplitMix64,
    scratch: Scratch,
}

/// Working buffers of a decision, kept between decisions to spare allocations.
#[derive(Debug, Clone, Default)]
struct Scratch {
    keyed: Vec<(f64, usize)>,
    order: Vec<usize>,
    seen: Vec<bool>,
}

/// A named copy of the state, for admin pages, metrics and tests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub deployments: BTreeMap<String, DeploymentState>,
    pub experiments: BTreeMap<String, BTreeMap<String, u64>>,
}

pub struct Router {
    compiled: Compiled,
    state: Mutex<State>,
}

/// Where the tier came from, before experiments may change it.
struct TierChoice {
    tier: usize,
    matched_by: MatchedBy,
    shadow_rules: Vec<(Arc<str>, Arc<str>)>,
}

impl Router {
    pub fn new(spec: RoutingSpec, seed: u64) -> Result<Router> {
        let compiled = compile(spec)?;
        let state = State {
            deployments: vec![DeploymentState::default(); compiled.deployments.len()],
            variant_counts: compiled
                .experiments
                .iter()
                .map(|e| vec![0; e.variants.len()])
                .collect(),
            rng: SplitMix64::new(seed),
            scratch: Scratch::default(),
        };
        Ok(Router {
            compiled,
            state: Mutex::new(state),
        })
    }

    pub fn from_json(text: &str, seed: u64) -> Result<Router> {
        let spec: RoutingSpec =
            serde_json::from_str(text).map_err(|e| Error::Config(format!("routing spec: {e}")))?;
        Router::new(spec, seed)
    }

    /// A panic while holding the lock cannot leave the plain-data state half-updated in a
    /// way that matters more than losing routing altogether, so a poisoned lock is reused.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn decide(&self, facts: &RequestFacts, now: f64) -> Decision {
        let choice = self.choose_tier(facts);
        let mut state = self.lock();
        let (tier, pinned, assignments) = self.assign(facts, choice.tier, &mut state);
        let mut decision = self.candidates(facts, tier, pinned, &mut state, now);
        decision.matched_by = choice.matched_by;
        decision.shadow_rules = choice.shadow_rules;
        decision.assignments = assignments;
        decision
    }

    /// Candidates of a named tier alone, for a cascade escalating to it.
    pub fn decide_tier(&self, facts: &RequestFacts, tier: &str, now: f64) -> Result<Decision> {
        let index = self
            .compiled
            .tiers
            .iter()
            .position(|t| &*t.name == tier)
            .ok_or_else(|| Error::NotFound(format!("tier {tier:?} is not in the routing spec")))?;
        let mut state = self.lock();
        Ok(self.candidates(facts, index, None, &mut state, now))
    }

    fn choose_tier(&self, facts: &RequestFacts) -> TierChoice {
        let mut shadow_rules = Vec::new();
        for rule in &self.compiled.rules {
            if !rule.when.matches(facts) {
                continue;
            }
            if rule.shadow {
                let tier = self.compiled.tiers[rule.tier].name.clone();
                shadow_rules.push((rule.name.clone(), tier));
                continue;
            }
            let matched_by = MatchedBy::Rule(rule.name.clone());
            return TierChoice {
                tier: rule.tier,
                matched_by,
                shadow_rules,
            };
        }
        let alias = facts
            .model
            .as_deref()
            .and_then(|m| self.compiled.tier_by_model.get(m));
        match alias {
            Some(&tier) => TierChoice {
                tier,
                matched_by: MatchedBy::Alias,
                shadow_rules,
            },
            None => TierChoice {
                tier: self.compiled.default_tier,
                matched_by: MatchedBy::Default,
                shadow_rules,
            },
        }
    }

    /// Assigns every experiment the request takes part in; returns the tier and pinned
    /// deployment after the acting variants are applied.
    fn assign(
        &self,
        facts: &RequestFacts,
        mut tier: usize,
        state: &mut State,
    ) -> (usize, Option<usize>, Vec<Assignment>) {
        let mut pinned = None;
        let mut assignments = Vec::new();
        for (e, experiment) in self.compiled.experiments.iter().enumerate() {
            if !experiment.tiers.is_empty() && !experiment.tiers.contains(&tier) {
                continue;
            }
            if !experiment.when.matches(facts) {
                continue;
            }
            let sticky = match experiment.subject {
                Subject::User => facts.user.as_deref(),
                Subject::Key => facts.key.as_deref(),
            };
            let Some(subject) = sticky.or(facts.request_id.as_deref()) else {
                continue;
            };
            let v = pick(&experiment.bounds, bucket(&experiment.salt, subject));
            state.variant_counts[e][v] += 1;
            let variant = &experiment.variants[v];
            assignments.push(Assignment {
                experiment: experiment.name.clone(),
                variant: variant.name.clone(),
                shadow: experiment.shadow,
            });
            if experiment.shadow {
                continue;
            }
            tier = variant.tier.unwrap_or(tier);
            pinned = variant.deployment.or(pinned);
        }
        (tier, pinned, assignments)
    }

    fn candidates(
        &self,
        facts: &RequestFacts,
        tier: usize,
        pinned: Option<usize>,
        state: &mut State,
        now: f64,
    ) -> Decision {
        let c = &self.compiled;
        let home = &c.tiers[tier];
        // Buffers reused from one decision to the next: a decision allocates only its answer.
        let mut scratch = std::mem::take(&mut state.scratch);
        scratch.order.clear();
        scratch.order.extend(pinned);
        for t in std::iter::once(tier).chain(home.fallbacks.iter().copied()) {
            self.order_into(&c.tiers[t], facts, state, &mut scratch);
        }
        scratch.seen.clear();
        scratch.seen.resize(c.deployments.len(), false);
        let mut candidates = Vec::with_capacity(scratch.order.len());
        let mut dropped = Vec::new();
        for &d in &scratch.order {
            if std::mem::replace(&mut scratch.seen[d], true) {
                continue;
            }
            let name = &c.deployments[d].name;
            match self.drop_reason(facts, d, state, now) {
                None => candidates.push(name.clone()),
                Some(reason) => {
                    let shadow = reason == DropReason::BreakerOpen && c.breaker.shadow;
                    if shadow {
                        candidates.push(name.clone());
                    }
                    dropped.push(Dropped {
                        deployment: name.clone(),
                        reason,
                        shadow,
                    });
                }
            }
        }
        state.scratch = scratch;
        Decision {
            tier: home.name.clone(),
            matched_by: MatchedBy::Cascade,
            shadow_rules: Vec::new(),
            assignments: Vec::new(),
            candidates,
            dropped,
            escalation_tier: home.escalate_to.map(|t| c.tiers[t].name.clone()),
        }
    }

    fn drop_reason(
        &self,
        facts: &RequestFacts,
        d: usize,
        state: &State,
        now: f64,
    ) -> Option<DropReason> {
        let deployment = &self.compiled.deployments[d];
        let spec = &deployment.spec;
        let live = &state.deployments[d];
        let over_limit = spec.max_in_flight.is_some_and(|max| live.in_flight >= max)
            || facts
                .over_limit
                .iter()
                .any(|name| **name == *deployment.name);
        let needed = facts.input_tokens + facts.max_output_tokens.unwrap_or(0);
        if over_limit {
            Some(DropReason::OverLimit)
        } else if spec.context_window.is_some_and(|window| needed > window) {
            Some(DropReason::ContextWindow)
        } else if facts
            .budget_remaining_usd
            .is_some_and(|left| self.worst_cost(facts, d) > left)
        {
            Some(DropReason::TooExpensive)
        } else if !live.breaker.allows(&self.compiled.breaker, now) {
            Some(DropReason::BreakerOpen)
        } else {
            None
        }
    }

    fn worst_cost(&self, facts: &RequestFacts, d: usize) -> f64 {
        let spec = &self.compiled.deployments[d].spec;
        let output = facts.max_output_tokens.unwrap_or(0);
        (facts.input_tokens as f64 * spec.input_usd_per_mtok
            + output as f64 * spec.output_usd_per_mtok)
            / 1e6
    }

    /// Appends the members of a tier to `scratch.order`, best first. Every strategy starts
    /// from a weighted random order (so ties are broken by weight), then sorts stably by
    /// its own key.
    fn order_into(
        &self,
        tier: &Tier,
        facts: &RequestFacts,
        state: &mut State,
        scratch: &mut Scratch,
    ) {
        let keyed = &mut scratch.keyed;
        keyed.clear();
        // Efraimidis-Spirakis: an exponential variate scaled by 1/weight; smallest first.
        for &d in &tier.members {
            let weight = self.compiled.deployments[d].spec.weight;
            let draw = -state.rng.next_open01().ln();
            let key = if weight > 0.0 {
                draw / weight
            } else {
                f64::INFINITY
            };
            keyed.push((key, d));
        }
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
        let live = &state.deployments;
        match tier.strategy {
            Strategy::WeightedRandom => {}
            Strategy::LowestLatency => keyed.sort_by(|&(_, a), &(_, b)| {
                let latency = |d: usize| live[d].latency_ewma.unwrap_or(0.0);
                latency(a).total_cmp(&latency(b))
            }),
            Strategy::LeastBusy => keyed.sort_by_key(|&(_, d)| live[d].in_flight),
            Strategy::Cheapest => keyed.sort_by(|&(_, a), &(_, b)| {
                self.typical_cost(facts, a)
                    .total_cmp(&self.typical_cost(facts, b))
            }),
        }
        scratch.order.extend(keyed.iter().map(|&(_, d)| d));
    }

    fn typical_cost(&self, facts: &RequestFacts, d: usize) -> f64 {
        let spec = &self.compiled.deployments[d].spec;
        let output = facts
            .max_output_tokens
            .unwrap_or(self.compiled.assumed_output_tokens);
        facts.input_tokens as f64 * spec.input_usd_per_mtok
            + output as f64 * spec.output_usd_per_mtok
    }

    fn index(&self, deployment: &str) -> Result<usize> {
        self.compiled
            .deployment_index
            .get(deployment)
            .copied()
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "deployment {deployment:?} is not in the routing spec"
                ))
            })
    }

    /// Reserves a call to a deployment: counts it in flight and takes a half-open trial
    /// slot when the breaker is cooling. False means do not call it now (unless the
    /// breaker runs in shadow mode, which always answers true).
    pub fn start(&self, deployment: &str, now: f64) -> Result<bool> {
        let d = self.index(deployment)?;
        let spec = &self.compiled.breaker;
        let mut state = self.lock();
        let live = &mut state.deployments[d];
        let allowed = live.breaker.try_start(spec, now) || spec.shadow;
        if allowed {
            live.in_flight += 1;
        }
        Ok(allowed)
    }

    /// The outcome of a started call; `latency` (seconds) feeds the moving average when
    /// the call succeeded.
    pub fn record(&self, deployment: &str, ok: bool, latency: Option<f64>, now: f64) -> Result<()> {
        let d = self.index(deployment)?;
        let alpha = self.compiled.latency_alpha;
        let mut state = self.lock();
        let live = &mut state.deployments[d];
        live.in_flight = live.in_flight.saturating_sub(1);
        live.calls += 1;
        if !ok {
            live.failures += 1;
        }
        if let (true, Some(sample)) = (ok, latency.filter(|l| l.is_finite() && *l >= 0.0)) {
            live.latency_ewma = Some(match live.latency_ewma {
                Some(previous) => previous + alpha * (sample - previous),
                None => sample,
            });
        }
        live.breaker.record(&self.compiled.breaker, ok, now);
        Ok(())
    }

    /// Ends a started call that has no outcome (the client went away): it leaves the
    /// in-flight count and gives back its trial slot without judging the deployment.
    pub fn abandon(&self, deployment: &str) -> Result<()> {
        let d = self.index(deployment)?;
        let mut state = self.lock();
        let live = &mut state.deployments[d];
        live.in_flight = live.in_flight.saturating_sub(1);
        live.breaker.abandon();
        Ok(())
    }

    pub fn snapshot(&self) -> Snapshot {
        let state = self.lock();
        let c = &self.compiled;
        let deployments = c
            .deployments
            .iter()
            .zip(&state.deployments)
            .map(|(d, live)| (d.name.to_string(), live.clone()))
            .collect();
        let experiments = c
            .experiments
            .iter()
            .zip(&state.variant_counts)
            .map(|(e, counts)| {
                let per_variant = e
                    .variants
                    .iter()
                    .zip(counts)
                    .map(|(v, n)| (v.name.to_string(), *n))
                    .collect();
                (e.name.to_string(), per_variant)
            })
            .collect();
        Snapshot {
            deployments,
            experiments,
        }
    }

    pub fn snapshot_json(&self) -> Result<String> {
        serde_json::to_string(&self.snapshot())
            .map_err(|e| Error::InvalidInput(format!("routing snapshot: {e}")))
    }
}
