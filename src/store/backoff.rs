//! Reconnect backoff for one Redis endpoint: after a failed connect, no new attempt for a
//! delay growing from [`FIRST`] to [`MAX`] (±20 % jitter); callers meanwhile fail fast with
//! the last error instead of connecting. Any successful connect resets it.
//!
//! Without it, a wrong password made each API instance open ~100 connections a second: every
//! request, and the pool's background refill, tried a fresh connect.

use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Pause after the first failure.
pub const FIRST: Duration = Duration::from_millis(100);
/// Longest pause between attempts.
pub const MAX: Duration = Duration::from_secs(5);
/// Each pause is its nominal length times a random factor within 1 ± this.
const JITTER: f64 = 0.2;

#[derive(Default)]
struct State {
    /// Failures in a row (a burst of concurrent failures counts once).
    failures: u32,
    /// No attempt before this; `None` while connecting works.
    until: Option<Instant>,
    /// The last failure, as told to callers refused meanwhile.
    last: String,
    /// After a pause, one attempt at a time probes the endpoint.
    probing: bool,
}

/// Why no attempt may be made now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    pub last: String,
    pub retry_in: Duration,
}

#[derive(Default)]
pub struct Backoff {
    state: Mutex<State>,
}

impl Backoff {
    /// May a connect be attempted now? The caller must [`Self::record`] its outcome.
    pub fn admit(&self) -> Result<(), Wait> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(until) = s.until else { return Ok(()) };
        let now = Instant::now();
        if now < until || s.probing {
            return Err(Wait { last: s.last.clone(), retry_in: until.saturating_duration_since(now) });
        }
        s.probing = true;
        Ok(())
    }

    /// The outcome of a connect attempt (admitted or not: the health checks connect regardless
    /// and their outcome counts too).
    pub fn record(&self, outcome: Result<(), String>) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.probing = false;
        match outcome {
            Ok(()) => *s = State::default(),
            Err(error) => {
                let now = Instant::now();
                // Failures of attempts made together (a pool refilling, a burst of requests)
                // are one failure: the pause grows once per pause, not once per attempt.
                if s.until.is_none_or(|u| now >= u) {
                    s.failures = s.failures.saturating_add(1);
                    s.until = Some(now + jittered(pause(s.failures)));
                }
                s.last = error;
            }
        }
    }
}

/// The nominal pause after `failures` failures in a row.
fn pause(failures: u32) -> Duration {
    FIRST.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(MAX)
}

/// `d` times a random factor in [1 - JITTER, 1 + JITTER].
fn jittered(d: Duration) -> Duration {
    // std's RandomState is seeded randomly per process and varies per instance: enough
    // randomness to spread reconnects apart, without a crate.
    let unit = (RandomState::new().hash_one(Instant::now()) >> 11) as f64 / (1u64 << 53) as f64;
    d.mul_f64(1.0 - JITTER + 2.0 * JITTER * unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pauses double from 100 ms to 5 s, each within ±20 %.
    #[test]
    fn pauses_grow_and_cap() {
        assert_eq!(pause(1), FIRST);
        assert_eq!(pause(2), FIRST * 2);
        assert_eq!(pause(7), MAX);
        assert_eq!(pause(u32::MAX), MAX);
        for _ in 0..100 {
            let j = jittered(Duration::from_secs(1));
            assert!(j >= Duration::from_millis(800) && j <= Duration::from_millis(1200), "{j:?}");
        }
    }

    /// A failure refuses attempts with the last error until the pause ends; then one probe at
    /// a time; a success resets everything.
    #[test]
    fn refuses_then_probes_then_resets() {
        let b = Backoff::default();
        assert!(b.admit().is_ok());
        b.record(Err("WRONGPASS".into()));
        b.record(Err("WRONGPASS again".into()));
        let wait = b.admit().unwrap_err();
        assert_eq!(wait.last, "WRONGPASS again");
        assert!(wait.retry_in <= FIRST.mul_f64(1.0 + JITTER));
        assert_eq!(b.state.lock().unwrap().failures, 1, "a burst counts once");
        std::thread::sleep(FIRST.mul_f64(1.0 + JITTER));
        assert!(b.admit().is_ok(), "the probe");
        assert!(b.admit().is_err(), "one probe at a time");
        b.record(Err("still".into()));
        assert_eq!(b.state.lock().unwrap().failures, 2);
        b.record(Ok(()));
        assert!(b.admit().is_ok());
        assert!(b.admit().is_ok());
    }
}
