//! The time every time-dependent rule reads: the system clock in production, a clock that
//! tests set and advance.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use super::time::{Micros, now_micros};

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Micros;
}

/// Shared handle to the application's clock.
pub type SharedClock = Arc<dyn Clock>;

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Micros {
        now_micros()
    }
}

pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that stands still until told to move: for tests of contact hours, retries and
/// leases that must not depend on the wall clock.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn at(t: Micros) -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(t)))
    }

    pub fn set(&self, t: Micros) {
        self.0.store(t, Ordering::SeqCst);
    }

    pub fn advance(&self, by: std::time::Duration) {
        let by = super::time::duration_micros(by);
        self.0.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Micros {
        self.0.load(Ordering::SeqCst)
    }
}
