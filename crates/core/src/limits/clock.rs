//! Time sources for the limiter.
//!
//! Rates and reservation deadlines use a monotonic clock, so a wall-clock step (NTP, a
//! suspended VM) can never refill a bucket early or expire reservations in bulk. Calendar
//! budgets need the wall clock, because "per day" means a day in some time zone. Both are
//! behind one trait so tests (and the Python tests through `ManualClock`) can drive time.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A monotonic time in nanoseconds plus the wall clock in nanoseconds since the Unix epoch.
pub trait Clock: Send + Sync {
    /// Nanoseconds since an arbitrary fixed origin; never goes backwards.
    fn monotonic_ns(&self) -> u64;
    /// Nanoseconds since 1970-01-01T00:00:00Z (may jump; only used for calendar periods).
    fn wall_ns(&self) -> i64;
}

/// The real clocks: `Instant` for monotonic time (the OS's CLOCK_MONOTONIC, which does not
/// jump between cores the way a raw TSC can) and `SystemTime` for the wall clock.
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn monotonic_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn wall_ns(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_nanos()).unwrap_or(i64::MAX),
        }
    }
}

/// A clock that only moves when told to; shared between a test and the limiter under test.
#[derive(Debug, Default)]
pub struct ManualClock {
    monotonic_ns: AtomicU64,
    wall_ns: AtomicI64,
}

impl ManualClock {
    pub fn new(monotonic_ns: u64, wall_ns: i64) -> Self {
        Self {
            monotonic_ns: AtomicU64::new(monotonic_ns),
            wall_ns: AtomicI64::new(wall_ns),
        }
    }

    /// Moves both clocks forward by `ns`, as real time passing would.
    pub fn advance(&self, ns: u64) {
        self.monotonic_ns.fetch_add(ns, Ordering::SeqCst);
        self.wall_ns
            .fetch_add(i64::try_from(ns).unwrap_or(i64::MAX), Ordering::SeqCst);
    }

    /// Sets the wall clock alone, as an NTP step or a test of a calendar boundary would.
    pub fn set_wall_ns(&self, wall_ns: i64) {
        self.wall_ns.store(wall_ns, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn monotonic_ns(&self) -> u64 {
        self.monotonic_ns.load(Ordering::SeqCst)
    }

    fn wall_ns(&self) -> i64 {
        self.wall_ns.load(Ordering::SeqCst)
    }
}
