//! A circuit breaker for writes to the master: after a run of failures a dead or hung master
//! is refused at once (503) for a cooldown instead of costing every POST the full deadline;
//! then one probe request is let through, and its outcome closes or reopens the circuit.
//!
//! Only failures of the master count: connection failures and timeouts. An error reply
//! (`WRONGTYPE` when someone made the hash key a string, `NOPERM`) is an answer: the master is
//! alive and refusing it would not help.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight; everything else is refused until it ends.
    HalfOpen,
}

/// The breaker's state as a number for /metrics: 0 closed, 1 open, 2 half-open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

/// What a write let through by [`Breaker::allow`] showed about the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It answered (success or an error reply).
    Answered,
    /// It could not be reached, or did not answer in time.
    Failed,
    /// The request ended before it reached the master (refused as overloaded): nothing learned.
    None,
}

pub struct Breaker {
    state: Mutex<State>,
    threshold: u32,
    cooldown: Duration,
}

impl Breaker {
    /// Opens after `threshold` consecutive failures, for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker { state: Mutex::new(State::Closed { failures: 0 }), threshold: threshold.max(1), cooldown }
    }

    /// May a request go to the master now? `Err(wait)`: refused, retry after `wait`.
    pub fn allow(&self) -> Result<(), Duration> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match *s {
            State::Closed { .. } => Ok(()),
            State::Open { until } => match until.checked_duration_since(Instant::now()) {
                Some(wait) if !wait.is_zero() => Err(wait),
                _ => {
                    *s = State::HalfOpen;
                    Ok(())
                }
            },
            State::HalfOpen => Err(self.cooldown),
        }
    }

    /// The outcome of a request that [`Self::allow`] let through.
    pub fn record(&self, verdict: Verdict) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let open = State::Open { until: now + self.cooldown };
        let ok = match verdict {
            Verdict::Answered => true,
            Verdict::Failed => false,
            // A probe that learned nothing hands the probe to the next request at once.
            Verdict::None => {
                if *s == State::HalfOpen {
                    *s = State::Open { until: now };
                }
                return;
            }
        };
        *s = match (*s, ok) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < self.threshold => {
                State::Closed { failures: failures + 1 }
            }
            (State::Closed { .. }, false) => {
                log::warn!(
                    "master circuit open after {} failures in a row; refusing writes for {:?}",
                    self.threshold,
                    self.cooldown
                );
                open
            }
            (State::HalfOpen | State::Open { .. }, false) => open,
        };
    }

    pub fn level(&self) -> Level {
        match *self.state.lock().unwrap_or_else(PoisonError::into_inner) {
            State::Closed { .. } => Level::Closed,
            State::Open { .. } => Level::Open,
            State::HalfOpen => Level::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Closed → open after the threshold → half-open after the cooldown → closed on success,
    /// reopened on failure.
    #[test]
    fn transitions() {
        let b = Breaker::new(3, Duration::from_millis(50));
        for _ in 0..2 {
            assert!(b.allow().is_ok());
            b.record(Verdict::Failed);
        }
        assert_eq!(b.level(), Level::Closed);
        b.record(Verdict::Answered);
        for _ in 0..3 {
            assert!(b.allow().is_ok());
            b.record(Verdict::Failed);
        }
        assert_eq!(b.level(), Level::Open);
        assert!(b.allow().is_err());
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.allow().is_ok(), "the probe");
        assert_eq!(b.level(), Level::HalfOpen);
        assert!(b.allow().is_err(), "one probe at a time");
        b.record(Verdict::Failed);
        assert_eq!(b.level(), Level::Open);
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.allow().is_ok());
        b.record(Verdict::Answered);
        assert_eq!(b.level(), Level::Closed);
    }

    /// A probe that never reached the master (shed) neither closes nor delays the circuit;
    /// outside a probe it changes nothing.
    #[test]
    fn no_verdict_hands_the_probe_on() {
        let b = Breaker::new(1, Duration::from_millis(20));
        b.record(Verdict::None);
        assert_eq!(b.level(), Level::Closed);
        assert!(b.allow().is_ok());
        b.record(Verdict::Failed);
        std::thread::sleep(Duration::from_millis(30));
        assert!(b.allow().is_ok(), "the probe");
        b.record(Verdict::None);
        assert_eq!(b.level(), Level::Open);
        assert!(b.allow().is_ok(), "the next request probes at once");
    }
}
