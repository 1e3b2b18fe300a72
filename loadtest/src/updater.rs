//! The updater: POSTs `{"value": x}` to the API on an absolute schedule (tick k at start +
//! k × interval, so there is no drift), x a random walk seeded from the clock. Failures are
//! logged and counted and it keeps going; it stops when told to (SIGTERM in the binary).

use crate::client::{Client, Target};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Largest relative step of the walk per tick.
const STEP: f64 = 0.01;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// The updater's counters.
#[derive(Clone, Default)]
pub struct Stats {
    pub posts: Family<ResultLabels, Counter>,
    pub skipped_ticks: Counter,
    pub last_value: Gauge<f64, AtomicU64>,
}

impl Stats {
    pub fn register(&self, registry: &mut Registry) {
        registry.register("posts", "POSTs sent, by result (ok, failed)", self.posts.clone());
        registry.register("skipped_ticks", "Ticks skipped because a POST overran its slot", self.skipped_ticks.clone());
        registry.register("last_value", "The last value POSTed successfully", self.last_value.clone());
    }

    pub fn count(&self, result: &'static str) -> u64 {
        self.posts.get_or_create(&ResultLabels { result }).get()
    }
}

/// A random walk, seeded from the clock.
pub struct Walk {
    state: u64,
    pub value: f64,
}

impl Walk {
    pub fn from_clock(start: f64) -> Walk {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
        Walk { state: nanos | 1, value: start }
    }

    /// The next value: a relative step of at most ±STEP, rounded to 4 decimals like a price.
    pub fn step(&mut self) -> f64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let unit = (self.state >> 11) as f64 / (1u64 << 53) as f64;
        let next = self.value * (1.0 + STEP * (2.0 * unit - 1.0));
        self.value = (next * 10_000.0).round() / 10_000.0;
        self.value
    }
}

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct Config {
    pub api: Target,
    pub interval: Duration,
    pub timeout: Duration,
    pub start_value: f64,
}

/// Runs until `stop` fires (or is dropped).
pub fn run(cfg: &Config, stats: &Stats, stop: &Receiver<()>) {
    let mut client = Client::new(cfg.api.clone(), cfg.timeout);
    let mut walk = Walk::from_clock(cfg.start_value);
    let start = Instant::now();
    let mut tick: u32 = 0;
    log::info!("posting to http://{}{} every {:?}", cfg.api.host, cfg.api.path, cfg.interval);
    loop {
        let due = start + cfg.interval * tick;
        match stop.recv_timeout(due.saturating_duration_since(Instant::now())) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
        }
        let value = walk.step();
        let body = format!("{{\"value\": {value}}}");
        match client.request("POST", Some(body.as_bytes())) {
            Ok(a) if a.status == 200 => {
                stats.posts.get_or_create(&ResultLabels { result: "ok" }).inc();
                stats.last_value.set(value);
                log::debug!("posted {value}");
            }
            other => {
                let failed = stats.posts.get_or_create(&ResultLabels { result: "failed" }).inc() + 1;
                let why = match other {
                    Ok(a) => format!("HTTP {}: {}", a.status, String::from_utf8_lossy(&a.body).trim()),
                    Err(e) => e.to_string(),
                };
                log::warn!("POST {value} failed ({failed} failures so far): {why}");
            }
        }
        // The next tick on the schedule; ticks a slow POST overran are skipped, not bunched.
        let elapsed = start.elapsed();
        let next = (elapsed.as_nanos() / cfg.interval.as_nanos().max(1)) as u32 + 1;
        let skipped = next.saturating_sub(tick + 1);
        if skipped > 0 {
            stats.skipped_ticks.inc_by(u64::from(skipped));
        }
        tick = next;
    }
    log::info!("stopped after {} ok, {} failed POSTs", stats.count("ok"), stats.count("failed"));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The walk moves by at most STEP per tick and stays positive.
    #[test]
    fn walk_steps_are_bounded() {
        let mut w = Walk::from_clock(1.0);
        let mut prev = w.value;
        let mut moved = 0;
        for _ in 0..10_000 {
            let v = w.step();
            assert!(v > 0.0 && (v - prev).abs() <= prev * STEP + 0.0001, "{prev} -> {v}");
            moved += usize::from(v != prev);
            prev = v;
        }
        assert!(moved > 9_000);
    }
}
