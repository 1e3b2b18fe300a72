//! The per-request time budget: every step of a request derives its timeout from what is left.

use std::time::{Duration, Instant};

/// A point in time by which a request must be answered.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    /// A budget of `budget` counted from `start` (the request's first byte).
    pub fn new(start: Instant, budget: Duration) -> Self {
        Deadline { at: start + budget }
    }

    /// Time left, or `None` once the budget is spent.
    pub fn remaining(&self) -> Option<Duration> {
        self.at.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
    }

    pub fn expired(&self) -> bool {
        self.remaining().is_none()
    }
}
