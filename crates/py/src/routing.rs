//! Bindings of `aiofast_core::routing`: the router, request facts and decisions.

use aiofast_core::routing::{bucket, Decision, MatchedBy, RequestFacts, Router};
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::errors::to_py;

/// Facts about one request, as the router reads them.
#[pyclass(name = "RouteFacts", module = "aiofast._core", frozen)]
pub struct PyRouteFacts(RequestFacts);

#[pymethods]
impl PyRouteFacts {
    #[new]
    #[pyo3(signature = (
        *,
        input_tokens = 0,
        max_output_tokens = None,
        model = None,
        tags = Vec::new(),
        user = None,
        key = None,
        user_tier = None,
        has_tools = false,
        has_images = false,
        has_json_schema = false,
        guard_routes = Vec::new(),
        budget_remaining_usd = None,
        downgrade = false,
        over_limit = Vec::new(),
        request_id = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        input_tokens: u64,
        max_output_tokens: Option<u64>,
        model: Option<String>,
        tags: Vec<String>,
        user: Option<String>,
        key: Option<String>,
        user_tier: Option<String>,
        has_tools: bool,
        has_images: bool,
        has_json_schema: bool,
        guard_routes: Vec<String>,
        budget_remaining_usd: Option<f64>,
        downgrade: bool,
        over_limit: Vec<String>,
        request_id: Option<String>,
    ) -> Self {
        PyRouteFacts(RequestFacts {
            input_tokens,
            max_output_tokens,
            model,
            tags,
            user,
            key,
            user_tier,
            has_tools,
            has_images,
            has_json_schema,
            guard_routes,
            budget_remaining_usd,
            downgrade,
            over_limit,
            request_id,
        })
    }

    #[getter]
    fn input_tokens(&self) -> u64 {
        self.0.input_tokens
    }

    #[getter]
    fn model(&self) -> Option<&str> {
        self.0.model.as_deref()
    }

    #[getter]
    fn user(&self) -> Option<&str> {
        self.0.user.as_deref()
    }
}

/// An ordered candidate list and how it was chosen.
#[pyclass(name = "RouteDecision", module = "aiofast._core", frozen)]
pub struct PyRouteDecision(Decision);

#[pymethods]
impl PyRouteDecision {
    #[getter]
    fn tier(&self) -> &str {
        &self.0.tier
    }

    /// `"rule"`, `"alias"`, `"default"` or `"cascade"`.
    #[getter]
    fn matched_by(&self) -> &'static str {
        match self.0.matched_by {
            MatchedBy::Rule(_) => "rule",
            MatchedBy::Alias => "alias",
            MatchedBy::Default => "default",
            MatchedBy::Cascade => "cascade",
        }
    }

    #[getter]
    fn rule(&self) -> Option<&str> {
        match &self.0.matched_by {
            MatchedBy::Rule(name) => Some(name),
            _ => None,
        }
    }

    #[getter]
    fn candidates<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.0.candidates.iter().map(|c| &**c))
    }

    /// `(deployment, reason, shadow)` for every deployment left out or flagged.
    #[getter]
    fn dropped(&self) -> Vec<(&str, &'static str, bool)> {
        self.0
            .dropped
            .iter()
            .map(|d| (&*d.deployment, d.reason.as_str(), d.shadow))
            .collect()
    }

    /// `(experiment, variant, shadow)` for every experiment the request took part in.
    #[getter]
    fn assignments(&self) -> Vec<(&str, &str, bool)> {
        self.0
            .assignments
            .iter()
            .map(|a| (&*a.experiment, &*a.variant, a.shadow))
            .collect()
    }

    /// `(rule, tier)` for shadow rules that matched.
    #[getter]
    fn shadow_rules(&self) -> Vec<(&str, &str)> {
        self.0
            .shadow_rules
            .iter()
            .map(|(r, t)| (&**r, &**t))
            .collect()
    }

    #[getter]
    fn escalation_tier(&self) -> Option<&str> {
        self.0.escalation_tier.as_deref()
    }

    fn explain(&self) -> String {
        self.0.explain()
    }

    fn __repr__(&self) -> String {
        format!(
            "RouteDecision({}; candidates={})",
            self.0.explain(),
            self.0.candidates.join(",")
        )
    }
}

/// The routing engine compiled from a JSON routing spec.
#[pyclass(name = "Router", module = "aiofast._core", frozen)]
pub struct PyRouter(Router);

#[pymethods]
impl PyRouter {
    #[new]
    fn new(spec_json: &str, seed: u64) -> PyResult<Self> {
        Router::from_json(spec_json, seed)
            .map(PyRouter)
            .map_err(to_py)
    }

    fn decide(&self, facts: &PyRouteFacts, now: f64) -> PyRouteDecision {
        PyRouteDecision(self.0.decide(&facts.0, now))
    }

    fn decide_tier(&self, facts: &PyRouteFacts, tier: &str, now: f64) -> PyResult<PyRouteDecision> {
        self.0
            .decide_tier(&facts.0, tier, now)
            .map(PyRouteDecision)
            .map_err(to_py)
    }

    fn start(&self, deployment: &str, now: f64) -> PyResult<bool> {
        self.0.start(deployment, now).map_err(to_py)
    }

    #[pyo3(signature = (deployment, ok, latency, now))]
    fn record(&self, deployment: &str, ok: bool, latency: Option<f64>, now: f64) -> PyResult<()> {
        self.0.record(deployment, ok, latency, now).map_err(to_py)
    }

    fn abandon(&self, deployment: &str) -> PyResult<()> {
        self.0.abandon(deployment).map_err(to_py)
    }

    fn snapshot_json(&self) -> PyResult<String> {
        self.0.snapshot_json().map_err(to_py)
    }
}

/// The sticky bucket in `[0, 2**32)` of `subject` in an experiment salted with `salt`.
#[pyfunction]
fn route_bucket(salt: &str, subject: &str) -> u32 {
    bucket(salt, subject)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyRouteFacts>()?;
    m.add_class::<PyRouteDecision>()?;
    m.add_class::<PyRouter>()?;
    m.add_function(wrap_pyfunction!(route_bucket, m)?)?;
    Ok(())
}
