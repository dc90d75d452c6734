//! The routing spec: plain serde data, as written in the policy (after the Python layer
//! validated and normalised it). `Router::new` compiles it into index-based tables.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSpec {
    pub deployments: Vec<DeploymentSpec>,
    /// Ordered from smallest to largest: a cascade escalates to the next tier in this list.
    pub tiers: Vec<TierSpec>,
    /// Evaluated in order; the first acting rule that matches picks the tier.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// The tier of requests no rule or alias claims; the first tier when absent.
    #[serde(default)]
    pub default_tier: Option<String>,
    #[serde(default)]
    pub experiments: Vec<ExperimentSpec>,
    #[serde(default)]
    pub breaker: BreakerSpec,
    /// Weight of the newest observation in the latency average (0 < alpha <= 1).
    #[serde(default = "default_latency_alpha")]
    pub latency_alpha: f64,
    /// Output tokens assumed by the `cheapest` strategy when the request sets no maximum.
    #[serde(default = "default_assumed_output_tokens")]
    pub assumed_output_tokens: u64,
}

fn default_latency_alpha() -> f64 {
    0.3
}

fn default_assumed_output_tokens() -> u64 {
    256
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    pub name: String,
    /// The upstream (provider connection) this deployment is served by.
    pub upstream: String,
    /// The model name sent to the upstream.
    pub model: String,
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// Input plus output tokens the model accepts; no check when absent.
    #[serde(default)]
    pub context_window: Option<u64>,
    #[serde(default)]
    pub input_usd_per_mtok: f64,
    #[serde(default)]
    pub output_usd_per_mtok: f64,
    /// Calls in flight above which the deployment is skipped as over its limit.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
}

fn default_weight() -> f64 {
    1.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Weighted random order (weights of the deployments).
    #[default]
    WeightedRandom,
    /// Lowest moving average of observed latency first; unmeasured deployments first.
    LowestLatency,
    /// Fewest calls in flight first.
    LeastBusy,
    /// Lowest estimated cost for this request first.
    Cheapest,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierSpec {
    pub name: String,
    pub deployments: Vec<String>,
    #[serde(default)]
    pub strategy: Strategy,
    /// Requested model names that select this tier when no rule matched.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Tiers whose deployments are appended as fallback candidates, in order.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// The tier a cascade escalates to; the next tier of the list when absent.
    #[serde(default)]
    pub escalate_to: Option<String>,
    /// Whether a cascade may leave this tier at all.
    #[serde(default = "default_escalates")]
    pub escalates: bool,
}

fn default_escalates() -> bool {
    true
}

/// Conditions of a rule or experiment; every condition that is set must hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionSpec {
    #[serde(default)]
    pub input_tokens_over: Option<u64>,
    #[serde(default)]
    pub input_tokens_at_most: Option<u64>,
    /// The requested model (or alias) is one of these.
    #[serde(default)]
    pub model_in: Vec<String>,
    /// At least one of these labels is on the key or the request.
    #[serde(default)]
    pub tags_any: Vec<String>,
    /// All of these labels are on the key or the request.
    #[serde(default)]
    pub tags_all: Vec<String>,
    #[serde(default)]
    pub user_tier_in: Vec<String>,
    #[serde(default)]
    pub has_tools: Option<bool>,
    #[serde(default)]
    pub has_images: Option<bool>,
    #[serde(default)]
    pub has_json_schema: Option<bool>,
    /// A guardrail `route` verdict named one of these.
    #[serde(default)]
    pub guard_route_in: Vec<String>,
    /// The remaining budget of the request's scopes is below this many dollars.
    #[serde(default)]
    pub budget_remaining_usd_under: Option<f64>,
    /// The limits layer asked to downgrade (for example a budget nearly spent).
    #[serde(default)]
    pub downgrade: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: String,
    #[serde(default)]
    pub when: ConditionSpec,
    pub tier: String,
    /// Evaluate and report the match, but do not act on it.
    #[serde(default)]
    pub shadow: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    #[default]
    User,
    Key,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    pub name: String,
    /// Salt of the sticky hash; the experiment's name when absent. Changing it reshuffles
    /// this experiment's subjects and no other experiment's.
    #[serde(default)]
    pub salt: Option<String>,
    #[serde(default)]
    pub subject: Subject,
    /// Only requests meeting these conditions take part.
    #[serde(default)]
    pub when: ConditionSpec,
    /// Only requests routed to one of these tiers take part; every tier when empty.
    #[serde(default)]
    pub tiers: Vec<String>,
    /// Ranges of the hash space are laid out in this order from zero, so growing the
    /// first variant's weight (a canary ramp) keeps every subject it already had.
    pub variants: Vec<VariantSpec>,
    #[serde(default)]
    pub shadow: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantSpec {
    pub name: String,
    pub weight: f64,
    /// Route the subject's requests to this tier.
    #[serde(default)]
    pub tier: Option<String>,
    /// Try this deployment first.
    #[serde(default)]
    pub deployment: Option<String>,
    /// A prompt template version; carried through for the layer that renders prompts.
    #[serde(default)]
    pub template: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSpec {
    /// Failure share over the window at or above which the breaker opens.
    #[serde(default = "default_failure_rate")]
    pub failure_rate: f64,
    /// Calls in the window before the failure share is trusted; kept low so that a
    /// deployment with little traffic is still protected.
    #[serde(default = "default_min_calls")]
    pub min_calls: u32,
    #[serde(default = "default_window_seconds")]
    pub window_seconds: f64,
    /// Time an open breaker waits before letting trial calls through.
    #[serde(default = "default_cooldown_seconds")]
    pub cooldown_seconds: f64,
    /// Trial calls allowed while half-open; that many successes close the breaker.
    #[serde(default = "default_half_open_calls")]
    pub half_open_calls: u32,
    /// Track and report breaker state, but never skip a deployment for it.
    #[serde(default)]
    pub shadow: bool,
}

fn default_failure_rate() -> f64 {
    0.5
}

fn default_min_calls() -> u32 {
    5
}

fn default_window_seconds() -> f64 {
    30.0
}

fn default_cooldown_seconds() -> f64 {
    15.0
}

fn default_half_open_calls() -> u32 {
    2
}

impl Default for BreakerSpec {
    fn default() -> Self {
        BreakerSpec {
            failure_rate: default_failure_rate(),
            min_calls: default_min_calls(),
            window_seconds: default_window_seconds(),
            cooldown_seconds: default_cooldown_seconds(),
            half_open_calls: default_half_open_calls(),
            shadow: false,
        }
    }
}
