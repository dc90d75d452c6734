//! The `aiofast._core` extension module: thin PyO3 bindings over `aiofast-core`.
//!
//! Every submodule here only converts types; the logic lives in the core crate.

use pyo3::prelude::*;

mod errors;
mod gil;
mod guard;
mod limits;
mod routing;
mod tokens;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    routing::register(m)?;
    limits::register(m)?;
    tokens::register(m)?;
    guard::register(m)?;
    Ok(())
}
