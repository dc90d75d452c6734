//! Bindings of `aiofast_core::tokens`: exact token counts.

use std::borrow::Cow;
use std::sync::Mutex;

use aiofast_core::tokens::{Encoding, TokenStream as CoreStream};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::errors::to_py;

/// Inputs shorter than this are counted without releasing the GIL: releasing and
/// retaking it would cost more than the count.
const DETACH_BYTES: usize = 4096;

fn encoding(name: &str) -> PyResult<&'static Encoding> {
    Encoding::get(name).map_err(to_py)
}

/// The UTF-8 text of a Python string. A string with lone surrogates has none, so it is
/// repaired the way tiktoken does: through UTF-16 with `surrogatepass`, which joins a
/// split surrogate pair and turns each lone surrogate into U+FFFD.
fn text_of<'a>(text: &'a Bound<'_, PyString>) -> PyResult<Cow<'a, str>> {
    match text.to_str() {
        Ok(utf8) => Ok(Cow::Borrowed(utf8)),
        Err(_) => {
            let repaired = text
                .call_method1("encode", ("utf-16", "surrogatepass"))?
                .call_method1("decode", ("utf-16", "replace"))?;
            Ok(Cow::Owned(repaired.extract::<String>()?))
        }
    }
}

/// count_tokens(text, encoding)
/// --
///
/// The number of tokens `encoding` makes of `text`, as tiktoken's `encode_ordinary`.
#[pyfunction]
fn count_tokens(py: Python<'_>, text: &Bound<'_, PyString>, encoding: &str) -> PyResult<usize> {
    let encoding = self::encoding(encoding)?;
    let text = text_of(text)?;
    if text.len() < DETACH_BYTES {
        return Ok(encoding.count(&text));
    }
    Ok(py.detach(|| encoding.count(&text)))
}

/// count_tokens_batch(texts, encoding)
/// --
///
/// Token counts of many texts, computed without the GIL and on several threads when
/// the batch is large.
#[pyfunction]
fn count_tokens_batch(
    py: Python<'_>,
    texts: Vec<Bound<'_, PyString>>,
    encoding: &str,
) -> PyResult<Vec<usize>> {
    let encoding = self::encoding(encoding)?;
    let owned = texts.iter().map(text_of).collect::<PyResult<Vec<_>>>()?;
    let borrowed: Vec<&str> = owned.iter().map(|t| t.as_ref()).collect();
    if borrowed.iter().map(|t| t.len()).sum::<usize>() < DETACH_BYTES {
        return Ok(encoding.count_batch(&borrowed));
    }
    Ok(py.detach(|| encoding.count_batch(&borrowed)))
}

/// TokenStream(encoding)
/// --
///
/// Counts text pushed in chunks; `total` equals counting the concatenation. Safe to
/// share between threads.
#[pyclass(frozen, module = "aiofast._core")]
struct TokenStream {
    inner: Mutex<CoreStream>,
}

impl TokenStream {
    fn with<T>(&self, f: impl FnOnce(&mut CoreStream) -> T) -> PyResult<T> {
        let mut guard = self
            .inner
            .lock()
            .map_err(|_| PyRuntimeError::new_err("TokenStream is unusable after a panic"))?;
        Ok(f(&mut guard))
    }
}

#[pymethods]
impl TokenStream {
    #[new]
    fn new(encoding: &str) -> PyResult<Self> {
        Ok(TokenStream {
            inner: Mutex::new(CoreStream::new(self::encoding(encoding)?)),
        })
    }

    /// Appends a chunk of text.
    fn push(&self, py: Python<'_>, delta: &Bound<'_, PyString>) -> PyResult<()> {
        let delta = text_of(delta)?;
        // A streamed delta is a few bytes: on the event loop, handing the GIL to another
        // thread and waiting to get it back would cost far more than the count.
        if delta.len() < DETACH_BYTES {
            return self.with(|stream| stream.push(&delta));
        }
        py.detach(|| self.with(|stream| stream.push(&delta)))
    }

    /// Tokens in everything pushed so far.
    #[getter]
    fn total(&self) -> PyResult<usize> {
        self.with(|stream| stream.total())
    }

    /// Tokens in everything pushed so far followed by `suffix`, which is not kept.
    fn total_with(&self, py: Python<'_>, suffix: &Bound<'_, PyString>) -> PyResult<usize> {
        let suffix = text_of(suffix)?;
        if suffix.len() < DETACH_BYTES {
            return self.with(|stream| stream.total_with(&suffix));
        }
        py.detach(|| self.with(|stream| stream.total_with(&suffix)))
    }

    /// The name of the encoding.
    #[getter]
    fn encoding(&self) -> PyResult<&'static str> {
        self.with(|stream| stream.encoding().name())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(count_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(count_tokens_batch, m)?)?;
    m.add_class::<TokenStream>()?;
    Ok(())
}
