//! When a binding releases the GIL around its Rust work.

use pyo3::marker::Ungil;
use pyo3::Python;

/// Inputs shorter than this are handled without releasing the GIL. On the event loop a
/// release is not free: another thread waiting for the GIL (a log or ledger writer)
/// takes it, and the loop then waits until that thread lets go, often far longer than
/// the few microseconds the Rust work on a short input takes.
pub const DETACH_BYTES: usize = 4096;

/// Runs `work` on an input of `bytes` bytes, releasing the GIL only for a large one.
pub fn detach_if_large<T, F>(py: Python<'_>, bytes: usize, work: F) -> T
where
    F: Ungil + FnOnce() -> T,
    T: Ungil,
{
    if bytes < DETACH_BYTES {
        work()
    } else {
        py.detach(work)
    }
}
