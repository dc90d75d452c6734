//! The single place where core errors become Python exceptions.
//!
//! The exception classes are defined in `aiofast/errors.py` so that they can inherit
//! both `AiofastError` and the matching builtin; they are looked up once and cached.

use aiofast_core::Error;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

fn class(
    py: Python<'_>,
    cell: &'static PyOnceLock<Py<PyType>>,
    name: &str,
) -> PyResult<Py<PyType>> {
    cell.get_or_try_init(py, || {
        let module = py.import("aiofast.errors")?;
        Ok(module.getattr(name)?.cast_into::<PyType>()?.unbind())
    })
    .map(|c| c.clone_ref(py))
}

/// Converts a core error into the matching `aiofast.errors` exception.
pub fn to_py(err: Error) -> PyErr {
    static INVALID: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    static NOT_FOUND: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    static CONFIG: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    Python::attach(|py| {
        let (cell, name) = match &err {
            Error::InvalidInput(_) => (&INVALID, "InvalidInputError"),
            Error::NotFound(_) => (&NOT_FOUND, "NotFoundError"),
            Error::Config(_) => (&CONFIG, "ConfigError"),
        };
        match class(py, cell, name) {
            Ok(cls) => PyErr::from_type(cls.into_bound(py), err.to_string()),
            Err(lookup) => PyRuntimeError::new_err(format!("{err} (and {lookup})")),
        }
    })
}
