//! Bindings of the guardrails engine (`aiofast_core::guard`). Findings cross the
//! boundary as tuples; `aiofast/guard.py` turns them into typed objects.

use std::sync::Arc;

use aiofast_core::guard::{
    Finding, Guard, OutputSchema, Role, Scope, StreamScanner, StreamStep, Target,
};
use aiofast_core::Error;
use pyo3::prelude::*;

use crate::errors::to_py;
use crate::gil::detach_if_large;

/// (rule index, start, end, score, label); offsets are character offsets.
type FindingTuple = (usize, usize, usize, f64, String);
/// A finding inside a chat request plus its JSON pointer and role.
type ChatFindingTuple = (
    usize,
    usize,
    usize,
    f64,
    String,
    String,
    Option<&'static str>,
);
/// (id, category, severity, action, tier, shadow, placeholder)
type RuleTuple = (
    String,
    String,
    &'static str,
    &'static str,
    Option<String>,
    bool,
    String,
);

fn tuple(f: Finding) -> FindingTuple {
    (f.rule, f.start, f.end, f.score, f.label)
}

fn parse_target(target: Option<&str>) -> PyResult<Option<Target>> {
    match target {
        None => Ok(None),
        Some("input") => Ok(Some(Target::Input)),
        Some("output") => Ok(Some(Target::Output)),
        Some(other) => Err(to_py(Error::InvalidInput(format!(
            "target must be \"input\" or \"output\", got {other:?}"
        )))),
    }
}

fn parse_scope(target: Option<&str>, role: Option<&str>) -> PyResult<Scope> {
    let role = match role {
        None => None,
        Some(name) => Some(Role::parse(name).ok_or_else(|| {
            to_py(Error::InvalidInput(format!(
                "role must be one of system, developer, user, assistant, tool; got {name:?}"
            )))
        })?),
    };
    Ok(Scope {
        target: parse_target(target)?,
        role,
    })
}

#[pyclass(module = "aiofast._core", name = "_Guard", frozen)]
pub struct PyGuard {
    guard: Arc<Guard>,
}

#[pymethods]
impl PyGuard {
    #[new]
    fn new(spec_json: &str) -> PyResult<Self> {
        Ok(PyGuard {
            guard: Arc::new(Guard::from_json(spec_json).map_err(to_py)?),
        })
    }

    fn rules(&self) -> Vec<RuleTuple> {
        self.guard
            .rules
            .iter()
            .map(|r| {
                (
                    r.id.clone(),
                    r.category.clone(),
                    r.severity.as_str(),
                    r.action.as_str(),
                    r.tier.clone(),
                    r.shadow,
                    r.placeholder.clone(),
                )
            })
            .collect()
    }

    #[pyo3(signature = (text, target=None, role=None))]
    fn scan(
        &self,
        py: Python<'_>,
        text: &str,
        target: Option<&str>,
        role: Option<&str>,
    ) -> PyResult<Vec<FindingTuple>> {
        let scope = parse_scope(target, role)?;
        let guard = &self.guard;
        Ok(
            detach_if_large(py, text.len(), || guard.scan_text(text, scope))
                .into_iter()
                .map(tuple)
                .collect(),
        )
    }

    #[pyo3(signature = (text, target=None, role=None))]
    fn redact(
        &self,
        py: Python<'_>,
        text: &str,
        target: Option<&str>,
        role: Option<&str>,
    ) -> PyResult<String> {
        let scope = parse_scope(target, role)?;
        let guard = &self.guard;
        Ok(detach_if_large(py, text.len(), || {
            guard.redact_text(text, scope)
        }))
    }

    /// Returns (findings, blocked index, route tier, redacted request JSON).
    #[pyo3(signature = (request_json, target="input", input_tokens=None))]
    #[allow(clippy::type_complexity)]
    fn scan_chat(
        &self,
        py: Python<'_>,
        request_json: &str,
        target: &str,
        input_tokens: Option<usize>,
    ) -> PyResult<(
        Vec<ChatFindingTuple>,
        Option<usize>,
        Option<String>,
        Option<String>,
    )> {
        let target = parse_target(Some(target))?.unwrap_or(Target::Input);
        let guard = &self.guard;
        let verdict = detach_if_large(py, request_json.len(), || {
            guard.scan_chat_json(request_json, target, input_tokens)
        })
        .map_err(to_py)?;
        let redacted = verdict.redacted_json();
        let findings = verdict
            .findings
            .into_iter()
            .map(|c| {
                let f = c.finding;
                (
                    f.rule,
                    f.start,
                    f.end,
                    f.score,
                    f.label,
                    c.path,
                    c.role.map(Role::as_str),
                )
            })
            .collect();
        Ok((findings, verdict.blocked, verdict.route, redacted))
    }

    #[pyo3(signature = (target=None, role=None))]
    fn stream(&self, target: Option<&str>, role: Option<&str>) -> PyResult<PyGuardStream> {
        let scope = parse_scope(target, role)?;
        Ok(PyGuardStream {
            scanner: StreamScanner::new(self.guard.clone(), scope),
        })
    }
}

#[pyclass(module = "aiofast._core", name = "_GuardStream")]
pub struct PyGuardStream {
    scanner: StreamScanner,
}

fn step(s: StreamStep) -> (String, Vec<FindingTuple>) {
    (s.text, s.findings.into_iter().map(tuple).collect())
}

#[pymethods]
impl PyGuardStream {
    #[getter]
    fn holdback(&self) -> usize {
        self.scanner.holdback()
    }

    fn feed(&mut self, py: Python<'_>, delta: &str) -> (String, Vec<FindingTuple>) {
        let scanner = &mut self.scanner;
        // A streamed delta and the held-back tail are a few hundred bytes: scanned with
        // the GIL held (see crate::gil).
        let bytes = delta.len() + scanner.holdback();
        step(detach_if_large(py, bytes, || scanner.feed(delta)))
    }

    fn finish(&mut self, py: Python<'_>) -> (String, Vec<FindingTuple>) {
        let scanner = &mut self.scanner;
        let held = scanner.holdback();
        step(detach_if_large(py, held, || scanner.finish()))
    }
}

#[pyclass(module = "aiofast._core", name = "_JsonSchema", frozen)]
pub struct PyJsonSchema {
    schema: OutputSchema,
}

#[pymethods]
impl PyJsonSchema {
    #[new]
    fn new(schema_json: &str) -> PyResult<Self> {
        Ok(PyJsonSchema {
            schema: OutputSchema::new(schema_json).map_err(to_py)?,
        })
    }

    fn check(&self, py: Python<'_>, output: &str) -> Vec<String> {
        let schema = &self.schema;
        detach_if_large(py, output.len(), || schema.check(output))
    }
}

#[pyfunction]
fn guard_packs() -> Vec<&'static str> {
    aiofast_core::guard::PACK_NAMES.to_vec()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyGuard>()?;
    m.add_class::<PyGuardStream>()?;
    m.add_class::<PyJsonSchema>()?;
    m.add_function(wrap_pyfunction!(guard_packs, m)?)?;
    Ok(())
}
