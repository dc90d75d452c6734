//! Routing: which deployments a request should try, in which order, and why.
//!
//! A [`RoutingSpec`] compiles into a [`Router`]. `decide` evaluates rules (first acting
//! match picks a tier), sticky experiments and the tier's strategy, drops deployments that
//! cannot serve the request, and returns an explained [`Decision`]. `start`, `record` and
//! `abandon` report calls back so latency averages, in-flight counts and circuit breakers
//! follow reality. The asyncio layer carries the decision out (timeouts, retries,
//! fallbacks, cascades).

mod breaker;
mod compile;
mod conditions;
mod decision;
mod facts;
mod hashing;
mod rng;
mod router;
mod spec;

#[cfg(test)]
mod tests;

pub use breaker::{Breaker, Bucket, Phase};
pub use decision::{Assignment, Decision, DropReason, Dropped, MatchedBy};
pub use facts::RequestFacts;
pub use hashing::bucket;
pub use router::{DeploymentState, Router, Snapshot};
pub use spec::{
    BreakerSpec, ConditionSpec, DeploymentSpec, ExperimentSpec, RoutingSpec, RuleSpec, Strategy,
    Subject, TierSpec, VariantSpec,
};
