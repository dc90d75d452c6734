//! Bindings of `aiofast_core::limits`: the limiter, its request context and answers.
//!
//! Only conversions live here: Python values to core types (seconds to nanoseconds,
//! dollars to nano-dollars, spec dicts to `LimitSpec`) and core answers back to Python.

use std::sync::Arc;

use aiofast_core::limits::{
    self as core, usd_to_nano, usd_to_nano_ceil, Budget, BudgetPeriod, Clock, LimitSpec, Mode,
    Rate, RequestScopes, ScopeKind, SystemClock,
};
use aiofast_core::Error;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyList, PyString, PyTuple};

use crate::errors::to_py;

const NS_PER_S: f64 = 1e9;

fn seconds_to_ns(seconds: f64, what: &str) -> PyResult<u64> {
    if !(seconds.is_finite() && seconds >= 0.0) {
        return Err(to_py(Error::InvalidInput(format!(
            "{what} must be a non-negative number of seconds, got {seconds}"
        ))));
    }
    Ok((seconds * NS_PER_S).round() as u64)
}

fn count(value: i64, what: &str) -> PyResult<u64> {
    u64::try_from(value).map_err(|_| {
        to_py(Error::InvalidInput(format!(
            "{what} must be a non-negative integer, got {value}"
        )))
    })
}

fn dollars(value: f64, what: &str) -> PyResult<f64> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(to_py(Error::InvalidInput(format!(
            "{what} must be a non-negative number of dollars, got {value}"
        ))))
    }
}

/// A clock that moves only when told to, for tests of time-dependent limits.
#[pyclass(module = "aiofast._core", frozen)]
pub struct ManualClock {
    inner: Arc<core::ManualClock>,
}

#[pymethods]
impl ManualClock {
    #[new]
    #[pyo3(signature = (*, monotonic = 0.0, wall = 0.0))]
    fn new(monotonic: f64, wall: f64) -> PyResult<Self> {
        let mono = seconds_to_ns(monotonic, "monotonic")?;
        Ok(Self {
            inner: Arc::new(core::ManualClock::new(
                mono,
                (wall * NS_PER_S).round() as i64,
            )),
        })
    }

    /// Moves the monotonic and the wall clock forward together.
    fn advance(&self, seconds: f64) -> PyResult<()> {
        self.inner.advance(seconds_to_ns(seconds, "seconds")?);
        Ok(())
    }

    /// Sets the wall clock (Unix seconds) alone.
    fn set_wall(&self, unix_seconds: f64) {
        self.inner
            .set_wall_ns((unix_seconds * NS_PER_S).round() as i64);
    }

    #[getter]
    fn monotonic(&self) -> f64 {
        self.inner.monotonic_ns() as f64 / NS_PER_S
    }

    #[getter]
    fn wall(&self) -> f64 {
        self.inner.wall_ns() as f64 / NS_PER_S
    }
}

/// What a request brings to admission: scope values, tokens, worst-case cost.
///
/// One is built per request, so freed objects are kept for reuse (a free list) rather than
/// returned to the allocator.
#[pyclass(module = "aiofast._core", frozen, freelist = 64)]
pub struct RequestContext {
    key: Option<Py<PyString>>,
    user: Option<Py<PyString>>,
    team: Option<Py<PyString>>,
    model: Option<Py<PyString>>,
    tier: Option<Py<PyString>>,
    labels: Vec<(String, String)>,
    input_tokens: u64,
    reserved_output_tokens: u64,
    cost_usd: f64,
}

#[pymethods]
impl RequestContext {
    #[new]
    #[pyo3(signature = (
        *, key = None, user = None, team = None, model = None, tier = None, labels = None,
        input_tokens = 0, reserved_output_tokens = 0, cost_usd = 0.0
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        key: Option<Py<PyString>>,
        user: Option<Py<PyString>>,
        team: Option<Py<PyString>>,
        model: Option<Py<PyString>>,
        tier: Option<Py<PyString>>,
        labels: Option<Vec<(String, String)>>,
        input_tokens: i64,
        reserved_output_tokens: i64,
        cost_usd: f64,
    ) -> PyResult<Self> {
        Ok(Self {
            key,
            user,
            team,
            model,
            tier,
            labels: labels.unwrap_or_default(),
            input_tokens: count(input_tokens, "input_tokens")?,
            reserved_output_tokens: count(reserved_output_tokens, "reserved_output_tokens")?,
            cost_usd: dollars(cost_usd, "cost_usd")?,
        })
    }

    #[getter]
    fn key(&self, py: Python<'_>) -> Option<Py<PyString>> {
        self.key.as_ref().map(|s| s.clone_ref(py))
    }

    #[getter]
    fn user(&self, py: Python<'_>) -> Option<Py<PyString>> {
        self.user.as_ref().map(|s| s.clone_ref(py))
    }

    #[getter]
    fn team(&self, py: Python<'_>) -> Option<Py<PyString>> {
        self.team.as_ref().map(|s| s.clone_ref(py))
    }

    #[getter]
    fn model(&self, py: Python<'_>) -> Option<Py<PyString>> {
        self.model.as_ref().map(|s| s.clone_ref(py))
    }

    #[getter]
    fn tier(&self, py: Python<'_>) -> Option<Py<PyString>> {
        self.tier.as_ref().map(|s| s.clone_ref(py))
    }

    #[getter]
    fn labels(&self) -> Vec<(String, String)> {
        self.labels.clone()
    }

    #[getter]
    fn input_tokens(&self) -> u64 {
        self.input_tokens
    }

    #[getter]
    fn reserved_output_tokens(&self) -> u64 {
        self.reserved_output_tokens
    }

    #[getter]
    fn cost_usd(&self) -> f64 {
        self.cost_usd
    }
}

/// Why a request was (or, for a shadow limit, would have been) refused.
#[pyclass(module = "aiofast._core", frozen)]
pub struct Refusal {
    inner: core::Refusal,
}

#[pymethods]
impl Refusal {
    /// Name of the limit that refused.
    #[getter]
    fn limit(&self) -> &str {
        &self.inner.limit
    }

    /// Which meter refused: requests, tokens, concurrency or budget.
    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.kind.as_str()
    }

    #[getter]
    fn scope(&self) -> &str {
        &self.inner.scope
    }

    #[getter]
    fn scope_value(&self) -> &str {
        &self.inner.scope_value
    }

    #[getter]
    fn code(&self) -> &'static str {
        self.inner.code.as_str()
    }

    #[getter]
    fn message(&self) -> String {
        self.inner.message()
    }

    /// Seconds after which the same request would pass; None when waiting cannot help.
    #[getter]
    fn retry_after(&self) -> Option<f64> {
        self.inner.retry_after_ns.map(|ns| ns as f64 / NS_PER_S)
    }

    #[getter]
    fn mode(&self) -> &'static str {
        self.inner.mode.as_str()
    }

    fn __repr__(&self) -> String {
        format!(
            "Refusal(limit={:?}, kind={:?}, scope={:?}, scope_value={:?}, code={:?})",
            &*self.inner.limit,
            self.inner.kind.as_str(),
            self.inner.scope,
            self.inner.scope_value,
            self.inner.code.as_str()
        )
    }
}

/// The answer to `Limiter.admit`.
///
/// `admitted` and `handle` are read on every request, so they are stored as Python objects
/// that the interpreter reads straight from the instance, without a call into Rust. One is
/// built per admission, so freed objects are kept for reuse (a free list).
#[pyclass(module = "aiofast._core", frozen, freelist = 64)]
pub struct Admission {
    /// True when no enforced limit refused the request.
    #[pyo3(get)]
    admitted: Py<PyBool>,
    /// Pass to `Limiter.settle`; 0 when the request holds nothing that needs settling.
    #[pyo3(get)]
    handle: Py<PyInt>,
    inner: core::Admission,
}

impl Admission {
    fn new(py: Python<'_>, inner: core::Admission) -> Self {
        Self {
            admitted: PyBool::new(py, inner.admitted()).to_owned().unbind(),
            handle: PyInt::new(py, inner.handle).unbind(),
            inner,
        }
    }
}

#[pymethods]
impl Admission {
    #[getter]
    fn refusal(&self) -> Option<Refusal> {
        self.inner.refusal.as_deref().map(|inner| Refusal {
            inner: inner.clone(),
        })
    }

    #[getter]
    fn shadow_refusals<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let items = self
            .inner
            .shadow_refusals
            .iter()
            .map(|r| Refusal { inner: r.clone() })
            .collect::<Vec<_>>();
        PyTuple::new(py, items)
    }

    #[getter]
    fn downgrade_to(&self) -> Option<&str> {
        self.inner.downgrade_to.as_deref()
    }

    /// The least any enforced budget of the request has left, in dollars.
    #[getter]
    fn budget_remaining_usd(&self) -> Option<f64> {
        self.inner.budget_remaining_nano.map(core::nano_to_usd)
    }

    #[getter]
    fn limit_requests(&self) -> Option<u64> {
        self.inner.requests.map(|h| h.limit)
    }

    #[getter]
    fn remaining_requests(&self) -> Option<u64> {
        self.inner.requests.map(|h| h.remaining)
    }

    /// Seconds until the tightest requests limit is back to full.
    #[getter]
    fn reset_requests(&self) -> Option<f64> {
        self.inner.requests.map(|h| h.reset_ns as f64 / NS_PER_S)
    }

    #[getter]
    fn limit_tokens(&self) -> Option<u64> {
        self.inner.tokens.map(|h| h.limit)
    }

    #[getter]
    fn remaining_tokens(&self) -> Option<u64> {
        self.inner.tokens.map(|h| h.remaining)
    }

    #[getter]
    fn reset_tokens(&self) -> Option<f64> {
        self.inner.tokens.map(|h| h.reset_ns as f64 / NS_PER_S)
    }

    fn __repr__(&self) -> String {
        match &self.inner.refusal {
            None => format!("Admission(admitted=True, handle={})", self.inner.handle),
            Some(r) => format!(
                "Admission(admitted=False, limit={:?}, code={:?})",
                &*r.limit,
                r.code.as_str()
            ),
        }
    }
}

/// A limit as `aiofast.limits` normalises it from a policy entry.
#[derive(FromPyObject)]
struct SpecArgs {
    #[pyo3(item)]
    name: String,
    #[pyo3(item)]
    scope: String,
    #[pyo3(item)]
    label: Option<String>,
    #[pyo3(item)]
    value: Option<String>,
    /// (limit, period seconds, burst)
    #[pyo3(item)]
    requests: Option<(u64, f64, u64)>,
    #[pyo3(item)]
    tokens: Option<(u64, f64, u64)>,
    #[pyo3(item)]
    concurrency: Option<u32>,
    /// (usd, "day" | "month" | "window", window seconds, time zone)
    #[pyo3(item)]
    budget: Option<(f64, String, Option<f64>, String)>,
    #[pyo3(item)]
    downgrade_to: Option<String>,
    #[pyo3(item)]
    downgrade_at: Option<f64>,
    #[pyo3(item)]
    mode: String,
}

impl SpecArgs {
    fn into_spec(self, index: usize) -> PyResult<LimitSpec> {
        let what = format!("limits[{index}]");
        let rate = |(limit, period, burst): (u64, f64, u64), field: &str| {
            let period_ns = seconds_to_ns(period, &format!("{what}.{field} period"))?;
            Rate::new(limit, period_ns, burst, &format!("{what}.{field}")).map_err(to_py)
        };
        let budget = match self.budget {
            None => None,
            Some((usd, per, window, time_zone)) => {
                let period = match (per.as_str(), window) {
                    ("day", _) => BudgetPeriod::Day,
                    ("month", _) => BudgetPeriod::Month,
                    ("window", Some(seconds)) => BudgetPeriod::Window {
                        window_ns: seconds_to_ns(
                            seconds,
                            &format!("{what}.budget.window_seconds"),
                        )?,
                    },
                    _ => {
                        return Err(to_py(Error::Config(format!(
                            "{what}.budget.per must be \"day\", \"month\" or \"window\" \
                             (with window_seconds), got {per:?}"
                        ))))
                    }
                };
                let what = format!("{what}.budget");
                Some(
                    Budget::new(usd, period, &time_zone, self.downgrade_at, &what)
                        .map_err(to_py)?,
                )
            }
        };
        Ok(LimitSpec {
            name: self.name.into(),
            scope: ScopeKind::parse(&self.scope, self.label.as_deref(), &what).map_err(to_py)?,
            only_value: self.value,
            requests: self.requests.map(|r| rate(r, "requests")).transpose()?,
            tokens: self.tokens.map(|r| rate(r, "tokens")).transpose()?,
            concurrency: self.concurrency,
            budget,
            mode: Mode::parse(&self.mode, &what).map_err(to_py)?,
            downgrade_to: self.downgrade_to.map(Into::into),
        })
    }
}

/// Rate, token, concurrency and spend limits of one process.
#[pyclass(module = "aiofast._core", subclass, frozen)]
pub struct Limiter {
    inner: core::Limiter,
}

#[pymethods]
impl Limiter {
    #[new]
    #[pyo3(signature = (limits, *, clock = None, reservation_ttl = 600.0))]
    fn new(
        limits: Vec<SpecArgs>,
        clock: Option<PyRef<'_, ManualClock>>,
        reservation_ttl: f64,
    ) -> PyResult<Self> {
        let specs = limits
            .into_iter()
            .enumerate()
            .map(|(i, args)| args.into_spec(i))
            .collect::<PyResult<Vec<_>>>()?;
        let clock: Arc<dyn Clock> = match clock {
            Some(manual) => manual.inner.clone(),
            None => Arc::new(SystemClock::new()),
        };
        let ttl = seconds_to_ns(reservation_ttl, "reservation_ttl")?;
        let inner = core::Limiter::new(specs, clock, ttl).map_err(to_py)?;
        Ok(Self { inner })
    }

    /// Decides a request against every limit that applies; reserves on admission.
    fn admit(&self, py: Python<'_>, ctx: PyRef<'_, RequestContext>) -> PyResult<Admission> {
        fn text<'a>(py: Python<'_>, s: &'a Option<Py<PyString>>) -> PyResult<Option<&'a str>> {
            s.as_ref().map(|s| s.to_str(py)).transpose()
        }
        let request = core::Request {
            scopes: RequestScopes {
                key: text(py, &ctx.key)?,
                user: text(py, &ctx.user)?,
                team: text(py, &ctx.team)?,
                model: text(py, &ctx.model)?,
                tier: text(py, &ctx.tier)?,
                labels: &ctx.labels,
            },
            tokens: ctx.input_tokens.saturating_add(ctx.reserved_output_tokens),
            cost_nano: usd_to_nano_ceil(ctx.cost_usd),
        };
        let inner = self.inner.admit(&request).map_err(to_py)?;
        Ok(Admission::new(py, inner))
    }

    /// Swaps a reservation for what the request really used; False if already settled.
    #[pyo3(signature = (handle, actual_input_tokens = 0, actual_output_tokens = 0, actual_cost_usd = 0.0))]
    fn settle(
        &self,
        handle: u64,
        actual_input_tokens: i64,
        actual_output_tokens: i64,
        actual_cost_usd: f64,
    ) -> PyResult<bool> {
        let tokens = count(actual_input_tokens, "actual_input_tokens")?
            .saturating_add(count(actual_output_tokens, "actual_output_tokens")?);
        let actual = core::Actual {
            tokens,
            cost_nano: usd_to_nano(dollars(actual_cost_usd, "actual_cost_usd")?),
        };
        self.inner.settle(handle, actual).map_err(to_py)
    }

    /// Expires overdue reservations and forgets idle scope values: (expired, evicted).
    /// Visits every scope value, so it runs without the GIL.
    fn sweep(&self, py: Python<'_>) -> PyResult<(usize, usize)> {
        py.detach(|| self.inner.sweep()).map_err(to_py)
    }

    /// Settles up to `max_reservations` reservations past their time to live at their
    /// reserved amount; returns how many. Visits only overdue reservations.
    #[pyo3(signature = (max_reservations = 10_000))]
    fn expire_overdue(&self, max_reservations: usize) -> PyResult<usize> {
        self.inner.expire_overdue(max_reservations).map_err(to_py)
    }

    /// Reservations expired unsettled since the limiter was built.
    fn expired_total(&self) -> u64 {
        self.inner.expired_total()
    }

    /// Scope values held in memory over all limits.
    fn key_count(&self) -> usize {
        self.inner.key_count()
    }

    /// Reservations not yet settled or expired.
    fn outstanding(&self) -> usize {
        self.inner.outstanding()
    }

    /// Every limit's counters and up to `max_entries` scope values each, as plain data.
    #[pyo3(signature = (max_entries = 1000))]
    fn snapshot<'py>(&self, py: Python<'py>, max_entries: usize) -> PyResult<Bound<'py, PyList>> {
        let views = self.inner.snapshot(max_entries).map_err(to_py)?;
        let list = PyList::empty(py);
        for view in views {
            list.append(limit_view(py, view)?)?;
        }
        Ok(list)
    }
}

fn limit_view<'py>(py: Python<'py>, view: core::LimitView) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("name", view.name)?;
    dict.set_item("scope", view.scope)?;
    dict.set_item("mode", view.mode.as_str())?;
    dict.set_item("keys", view.keys)?;
    dict.set_item("spent_usd", view.spent_usd)?;
    let refusals = PyDict::new(py);
    for (kind, enforced, shadow) in view.refusals {
        let counts = PyDict::new(py);
        counts.set_item("enforce", enforced)?;
        counts.set_item("shadow", shadow)?;
        refusals.set_item(kind.as_str(), counts)?;
    }
    dict.set_item("refusals", refusals)?;
    let entries = PyList::empty(py);
    for entry in view.entries {
        let e = PyDict::new(py);
        e.set_item("scope_value", entry.scope_value)?;
        e.set_item("requests_remaining", entry.requests_remaining)?;
        e.set_item("tokens_remaining", entry.tokens_remaining)?;
        e.set_item("in_flight", entry.in_flight)?;
        match entry.budget {
            None => e.set_item("budget", py.None())?,
            Some(b) => {
                let budget = PyDict::new(py);
                budget.set_item("limit_usd", b.limit_usd)?;
                budget.set_item("spent_usd", b.spent_usd)?;
                budget.set_item("reserved_usd", b.reserved_usd)?;
                budget.set_item("remaining_usd", b.remaining_usd)?;
                budget.set_item("resets_in_s", b.resets_in_s)?;
                e.set_item("budget", budget)?;
            }
        }
        entries.append(e)?;
    }
    dict.set_item("entries", entries)?;
    Ok(dict)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ManualClock>()?;
    m.add_class::<RequestContext>()?;
    m.add_class::<Refusal>()?;
    m.add_class::<Admission>()?;
    m.add_class::<Limiter>()?;
    Ok(())
}
