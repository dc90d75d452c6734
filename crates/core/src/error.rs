//! The one error type of the core. `crates/py/src/errors.rs` maps every variant
//! to a Python exception class, exhaustively.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The caller passed a value that can never be valid (bad argument, bad rule).
    InvalidInput(String),
    /// A name (encoding, model, rule, scope) that is not known.
    NotFound(String),
    /// Configuration that cannot be compiled (bad policy, bad rank file).
    Config(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidInput(msg) | Error::NotFound(msg) | Error::Config(msg) => {
                f.write_str(msg)
            }
        }
    }
}

impl std::error::Error for Error {}
