//! Readiness: a background thread watches the local replica (and, for the record, the master)
//! and keeps the verdict `/readyz` reports, so probes never cost a Redis round trip. It also
//! enforces `--redis-wait`: if the replica never answers within it, the process gives up.

use crate::cache::Cache;
use crate::metrics::Metrics;
use crate::store::{ReplicaInfo, Store};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// First retry delay while Redis has never answered; doubles up to the check interval.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// The verdict `/readyz` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub reason: String,
    pub replica: Option<ReplicaInfo>,
    pub master_reachable: bool,
}

/// Shared readiness state.
pub struct Health {
    state: RwLock<Readiness>,
    draining: AtomicBool,
    link_grace: Duration,
    /// When the replica last had data from its master, as last observed. Kept across checks
    /// because Redis restarts its count when it declares the link down (after `repl-timeout`,
    /// 60 s of silence): judged on `master_link_down_since_seconds` alone, a pod that had
    /// turned not ready after the grace turned ready again for another grace (the chaos suite's
    /// link cut caught it flapping).
    last_heard: Mutex<Option<Instant>>,
    /// Memory read mode's copy: its subscription and first read are part of readiness.
    cache: Option<Arc<Cache>>,
}

impl Health {
    pub fn new(link_grace: Duration, cache: Option<Arc<Cache>>) -> Self {
        Health {
            cache,
            state: RwLock::new(Readiness {
                ready: false,
                reason: "starting: the local replica has not been checked yet".into(),
                replica: None,
                master_reachable: false,
            }),
            draining: AtomicBool::new(false),
            link_grace,
            last_heard: Mutex::new(None),
        }
    }

    /// The current verdict (not ready at once when draining).
    pub fn readiness(&self) -> Readiness {
        let mut r = self.state.read().unwrap_or_else(PoisonError::into_inner).clone();
        if self.draining.load(Ordering::Acquire) {
            r.ready = false;
            r.reason = "shutting down".into();
        } else if let Some(why) = self.cache.as_ref().and_then(|c| c.not_ready()).filter(|_| r.ready) {
            r.ready = false;
            r.reason = why.into();
        }
        r
    }

    /// From now on not ready: the server is shutting down.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// The verdict for one observation of the replica, made at `now`.
    pub fn judge(&self, replica: &Result<ReplicaInfo, String>, now: Instant) -> (bool, String) {
        let info = match replica {
            Err(e) => return (false, format!("local replica not answering: {e}")),
            Ok(info) => info,
        };
        if !info.is_replica() {
            return (false, format!("the read address is a Redis {}, not a replica", info.role));
        }
        if info.loading {
            return (false, "local replica is loading its dataset".into());
        }
        if info.sync_in_progress {
            return (false, "local replica is doing a full sync".into());
        }
        let ago = |s: i64| now.checked_sub(Duration::from_secs(s.max(0) as u64)).unwrap_or(now);
        let mut last_heard = self.last_heard.lock().unwrap_or_else(PoisonError::into_inner);
        let heard = match (info.link_up, info.master_last_io_seconds_ago, info.link_down_since_seconds) {
            (true, Some(s), _) => ago(s),
            (true, None, _) => now,
            // Down: the silence began before Redis declared it (up to `repl-timeout` earlier),
            // so only what this process saw before counts.
            (false, _, Some(s)) if s >= 0 => match *last_heard {
                Some(l) => l,
                None => {
                    return (false, format!("replica link down for {s}s and not seen up since this process started"));
                }
            },
            _ => return (false, "local replica has not completed its first sync".into()),
        };
        let heard = last_heard.map_or(heard, |l| l.max(heard));
        *last_heard = Some(heard);
        let silent = now.saturating_duration_since(heard).as_secs();
        let grace = self.link_grace.as_secs();
        match (info.link_up, silent <= grace) {
            (true, true) => (true, "local replica in sync".into()),
            (true, false) => (false, format!("no data from the master for {silent}s (grace {grace}s)")),
            (false, true) => {
                (true, format!("replica link down, no data for {silent}s, within grace {grace}s; serving last value"))
            }
            (false, false) => (false, format!("replica link down, no data for {silent}s, past grace {grace}s")),
        }
    }

    fn update(&self, replica: Result<ReplicaInfo, String>, master_reachable: bool, metrics: &Metrics) {
        let (ready, reason) = self.judge(&replica, Instant::now());
        metrics.replica_link_up.set(i64::from(replica.as_ref().is_ok_and(|i| i.link_up)));
        metrics.replica_ready.set(i64::from(ready));
        metrics.master_reachable.set(i64::from(master_reachable));
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if state.ready != ready {
            log::info!("readiness: {} ({reason})", if ready { "ready" } else { "not ready" });
        }
        *state = Readiness { ready, reason, replica: replica.ok(), master_reachable };
    }
}

/// Watches Redis every `interval` until `stop` fires. Returns `Err` if the replica has not
/// answered once within `wait` (the caller exits); otherwise returns when stopped.
pub fn watch(
    health: &Health,
    store: &Store,
    metrics: &Metrics,
    interval: Duration,
    wait: Duration,
    stop: &Receiver<()>,
) -> Result<(), String> {
    let started = Instant::now();
    let mut contacted = false;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let replica = store.replica_info().map_err(|e| e.to_string());
        let master = store.master_ping();
        if let Err(e) = &master {
            log::debug!("master not reachable: {e}");
        }
        let answered = replica.is_ok();
        if answered && !contacted {
            log::info!("local replica answered after {:.1}s", started.elapsed().as_secs_f64());
            contacted = true;
        }
        health.update(replica, master.is_ok(), metrics);
        if !contacted && started.elapsed() >= wait {
            return Err(format!(
                "the local replica did not answer within --redis-wait ({}s); giving up",
                wait.as_secs()
            ));
        }
        // Fast, growing retries until Redis first answers; then the steady interval.
        let pause = if contacted { interval } else { backoff.min(interval) };
        backoff = (backoff * 2).min(interval);
        match stop.recv_timeout(pause) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(role: &str, link_up: bool, down: Option<i64>, last_io: Option<i64>) -> Result<ReplicaInfo, String> {
        Ok(ReplicaInfo {
            role: role.into(),
            link_up,
            sync_in_progress: false,
            loading: false,
            master_last_io_seconds_ago: last_io,
            link_down_since_seconds: down,
        })
    }

    /// The readiness rules: synced replica within grace only.
    #[test]
    fn judge_rules() {
        let now = Instant::now();
        let fresh = || Health::new(Duration::from_secs(30), None);
        assert!(fresh().judge(&info("slave", true, None, Some(1)), now).0);
        assert!(!fresh().judge(&info("slave", true, None, Some(31)), now).0);
        // Down when first seen: how long it was silent before Redis said so is unknown.
        assert!(!fresh().judge(&info("slave", false, Some(10), None), now).0);
        assert!(!fresh().judge(&info("slave", false, Some(31), None), now).0);
        assert!(!fresh().judge(&info("slave", false, Some(-1), None), now).0);
        assert!(!fresh().judge(&info("master", false, None, None), now).0);
        assert!(!fresh().judge(&Err("refused".into()), now).0);
        let h = fresh();
        h.start_draining();
        assert!(!h.readiness().ready);
    }

    /// A link cut past `repl-timeout`: silent for 35 s (not ready), then Redis declares the
    /// link down and counts from 0 — still not ready; data again — ready.
    #[test]
    fn no_flap_when_redis_declares_the_link_down() {
        let h = Health::new(Duration::from_secs(30), None);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(h.judge(&info("slave", true, None, Some(0)), at(0)).0);
        assert!(h.judge(&info("slave", true, None, Some(20)), at(20)).0);
        assert!(!h.judge(&info("slave", true, None, Some(35)), at(35)).0);
        assert!(
            !h.judge(&info("slave", false, Some(0), None), at(60)).0,
            "ready again when the link was declared down"
        );
        assert!(!h.judge(&info("slave", false, Some(10), None), at(70)).0);
        assert!(h.judge(&info("slave", true, None, Some(0)), at(71)).0);
        // A short blip of a healthy link stays within the grace.
        assert!(h.judge(&info("slave", false, Some(2), None), at(73)).0);
    }
}
