//! Memory read mode: the current value held in memory, kept fresh by a subscription on the
//! local replica to the master's change notices, plus a periodic re-read as the safety net for
//! missed notices. A GET is served from memory only while the subscription is live and the
//! copy is younger than the safety-net interval; otherwise it reads the replica as in replica
//! mode, so it never serves a value older than that interval.

use crate::deadline::Deadline;
use crate::gate::Admit;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::store::Store;
use crossbeam_channel::Receiver;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// Budget of one re-read of the value.
const REREAD_BUDGET: Duration = Duration::from_secs(1);
/// Longest pause between attempts to restore a broken subscription.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How soon a read that could not be made is tried again.
const RETRY: Duration = Duration::from_millis(100);

/// What the last read of the replica found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Held {
    /// The value.
    Value(f64),
    /// No value has been set (a synced replica holds none).
    Unset,
}

impl Held {
    /// As a read of the replica returns it.
    pub fn value(self) -> Option<f64> {
        match self {
            Held::Value(v) => Some(v),
            Held::Unset => None,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// The last value read; `None`: no read yet.
    value: Option<Held>,
    /// The read rule's epoch the value was read under: served only while it is still current
    /// (a replica process that restarted, or lost the right to be read, voids the copy).
    epoch: u64,
    read_at: Option<Instant>,
    subscribed: bool,
}

/// The in-memory copy and its freshness.
pub struct Cache {
    state: RwLock<State>,
    refresh: Duration,
    metrics: Arc<Metrics>,
}

impl Cache {
    pub fn new(refresh: Duration, metrics: Arc<Metrics>) -> Cache {
        Cache { state: RwLock::new(State::default()), refresh, metrics }
    }

    /// The value and when its read came back, if it may be served from memory: subscription
    /// live, copy fresh, read under the read rule's `epoch` (the one the GET holds).
    /// `None`: not servable from memory (read the replica instead).
    pub fn fresh(&self, epoch: u64) -> Option<(Held, Instant)> {
        let s = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let read_at = s.read_at.filter(|t| t.elapsed() <= self.refresh)?;
        if s.subscribed && s.epoch == epoch { s.value.map(|v| (v, read_at)) } else { None }
    }

    /// Why memory mode is not ready, if it is not: readiness needs a live subscription and a
    /// first successful read.
    pub fn not_ready(&self) -> Option<&'static str> {
        let s = self.state.read().unwrap_or_else(PoisonError::into_inner);
        if !s.subscribed {
            Some("memory mode: no live subscription to change notices; reads fall back to the replica")
        } else if s.value.is_none() {
            Some("memory mode: the value has not been read yet")
        } else {
            None
        }
    }

    /// Seconds since the copy was read (for /metrics), `None` before the first read.
    pub fn age(&self) -> Option<Duration> {
        self.state.read().unwrap_or_else(PoisonError::into_inner).read_at.map(|t| t.elapsed())
    }

    fn set_subscribed(&self, on: bool) {
        self.state.write().unwrap_or_else(PoisonError::into_inner).subscribed = on;
        self.metrics.memory_subscribed.set(i64::from(on));
    }

    /// Reads the value from the replica into memory, under the same read rule as a GET; on
    /// failure the old copy ages out. Whether it was read.
    fn reread(&self, store: &Store, health: &Health) -> bool {
        let ticket = match health.may_read() {
            Ok(t) => t,
            Err(why) => {
                log::debug!("memory mode: re-read skipped: {why}");
                return false;
            }
        };
        let fetched = store.get(&Deadline::new(Instant::now(), REREAD_BUDGET), Admit::Wait);
        let read = fetched.read.map_err(|e| format!("{e:?}"));
        match read.and_then(|v| health.confirm(store, &ticket, fetched.at, REREAD_BUDGET).map(|()| v)) {
            Ok(v) => {
                let mut s = self.state.write().unwrap_or_else(PoisonError::into_inner);
                s.value = Some(v.map_or(Held::Unset, Held::Value));
                s.epoch = ticket.epoch;
                // The read's time: the replica was confirmed after it, which vouches for the
                // copy as for any answer of that read.
                s.read_at = Some(fetched.at);
                true
            }
            Err(e) => {
                log::debug!("memory mode: re-read failed: {e}");
                false
            }
        }
    }

    /// When to read next: after the refresh interval, or soon after a read that could not be
    /// made (at start the replica is usually not vouched for yet: the pod must not wait a
    /// whole refresh interval to become ready).
    fn next_read(&self, read: bool) -> Instant {
        Instant::now() + if read { self.refresh } else { self.refresh.min(RETRY) }
    }

    /// Subscribes on the replica and keeps the copy fresh until `stop` fires: re-reads on every
    /// notice and at least every refresh interval; restores a broken subscription with backoff.
    pub fn run(&self, store: &Store, health: &Health, stop: &Receiver<()>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            if let Err(e) = self.subscribed_loop(store, health, stop) {
                if self.state.read().unwrap_or_else(PoisonError::into_inner).subscribed {
                    log::warn!("memory mode: subscription lost ({e}); serving from the replica until it is back");
                }
                self.set_subscribed(false);
            }
            match stop.recv_timeout(backoff) {
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => backoff = (backoff * 2).min(MAX_BACKOFF),
                _ => return,
            }
        }
    }

    /// One subscription's life; `Ok` when stopped, `Err` when the subscription broke.
    fn subscribed_loop(&self, store: &Store, health: &Health, stop: &Receiver<()>) -> Result<(), String> {
        let mut subscription = store.subscribe().map_err(|e| e.to_string())?;
        // Subscribed first, read second: a change between the two is not missed.
        self.set_subscribed(true);
        log::info!("memory mode: subscribed to {} on the local replica", store.channel());
        let mut next_refresh = self.next_read(self.reread(store, health));
        loop {
            if !stop.is_empty() {
                return Ok(());
            }
            let wait = next_refresh.saturating_duration_since(Instant::now());
            if subscription.next(wait).map_err(|e| e.to_string())? {
                self.metrics.memory_notices.inc();
            }
            next_refresh = self.next_read(self.reread(store, health));
        }
    }
}
