//! aiofast-core: the pure-Rust engine behind aiofast.
//!
//! Nothing here knows about Python or HTTP; `crates/py` converts types and errors.

pub mod error;
pub mod guard;
pub mod limits;
pub mod routing;
pub mod tokens;

pub use error::{Error, Result};
