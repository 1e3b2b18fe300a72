//! Readiness: a background thread watches the local replica (and, for the record, the master)
//! and keeps the verdict `/readyz` reports, so probes never cost a Redis round trip. It also
//! enforces `--redis-wait`: if the replica never answers within it, the process gives up.

use crate::cache::Cache;
use crate::metrics::Metrics;
use crate::store::{ReplicaInfo, Store};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
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

    /// The verdict for one observation of the replica.
    pub fn judge(&self, replica: &Result<ReplicaInfo, String>) -> (bool, String) {
        let grace = self.link_grace.as_secs() as i64;
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
        if info.link_up {
            return match info.master_last_io_seconds_ago {
                Some(s) if s > grace => (false, format!("no data from the master for {s}s (grace {grace}s)")),
                _ => (true, "local replica in sync".into()),
            };
        }
        match info.link_down_since_seconds {
            Some(s) if s >= 0 && s <= grace => {
                (true, format!("replica link down for {s}s, within grace {grace}s; serving last value"))
            }
            Some(s) if s >= 0 => (false, format!("replica link down for {s}s, past grace {grace}s")),
            _ => (false, "local replica has not completed its first sync".into()),
        }
    }

    fn update(&self, replica: Result<ReplicaInfo, String>, master_reachable: bool, metrics: &Metrics) {
        let (ready, reason) = self.judge(&replica);
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
        let h = Health::new(Duration::from_secs(30), None);
        assert!(h.judge(&info("slave", true, None, Some(1))).0);
        assert!(!h.judge(&info("slave", true, None, Some(31))).0);
        assert!(h.judge(&info("slave", false, Some(10), None)).0);
        assert!(!h.judge(&info("slave", false, Some(31), None)).0);
        assert!(!h.judge(&info("slave", false, Some(-1), None)).0);
        assert!(!h.judge(&info("master", false, None, None)).0);
        assert!(!h.judge(&Err("refused".into())).0);
        h.start_draining();
        assert!(!h.readiness().ready);
    }
}
