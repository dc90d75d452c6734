//! Rate, token, concurrency and spend limits, decided per request with reservations.
//!
//! - [`rate`]: requests and tokens per period by GCRA (one arrival time per meter).
//! - [`budget`]: dollars per calendar day or month in a time zone, or per rolling window.
//! - [`decision`]: the state of one scope value and the pure decision over it.
//! - [`limiter`]: all-or-nothing admission across limits, settlement, expiry, snapshots.
//! - [`store`], [`reservations`]: sharded state per limit and the outstanding reservations.
//! - [`spec`], [`clock`]: what a limit is, and the injectable monotonic and wall clocks.
//!
//! The decision functions take plain data and the current time, so the same logic can run
//! against state kept elsewhere (a Redis script) without change of meaning.

pub mod admission;
pub mod budget;
pub mod clock;
pub mod decision;
pub mod limiter;
pub mod rate;
pub mod reservations;
pub mod spec;
pub mod store;

pub use admission::{
    Actual, Admission, BudgetView, EntryView, Headroom, LimitView, Refusal, Request,
};
pub use budget::{nano_to_usd, usd_to_nano, usd_to_nano_ceil, Budget, BudgetPeriod};
pub use clock::{Clock, ManualClock, SystemClock};
pub use decision::RefusalCode;
pub use limiter::Limiter;
pub use rate::Rate;
pub use spec::{LimitKind, LimitSpec, Mode, RequestScopes, ScopeKind};

#[cfg(test)]
mod tests;
