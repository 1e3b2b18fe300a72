//! Readiness and the read rule: a background thread watches the local replica and the master
//! and keeps both the verdict `/readyz` reports and the rule GET obeys, so neither costs a Redis
//! round trip per request. It also enforces `--redis-wait`: if the replica never answers within
//! it, the process gives up. The rules, as one table, are in the README ("Readiness").
//!
//! Readiness fails only what this pod can fix: when the master does not answer the API either
//! (down for every pod alike), the pod stays ready and serves the last synced value, its age in
//! the `Age` header; when the master answers but this replica's link stays down past the grace
//! (this pod is cut off), it is not ready.
//!
//! GET serves only data a replica process has synced from the master during its own life. A
//! replica restarted in place may load an old dump and serve it until its next sync: each
//! replica process is identified by its `run_id`
//! through a [`Sentinel`], an idle connection the process closes when it ends, so a GET checks
//! with one non-blocking peek that the process it was allowed to read is still the one there.

use crate::cache::Cache;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{ConnError, HEALTH_TIMEOUT, ReadProbe, ReplicaInfo, Sentinel, Store};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// First retry delay while Redis has never answered; doubles up to the check interval.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// While the replica has never answered, how often the wait is logged (address, last error).
const WAITING_NOTE_EVERY: Duration = Duration::from_secs(5);
/// The master counts as unreachable from the API after this many failed pings in a row, so one
/// lost ping does not make a cut-off pod ready.
const MASTER_DOWN_AFTER: u32 = 3;
/// The replica counts as not answering after this many checks in a row without an answer
/// (while the process that was vouched for is still there): a replica busy for a moment (it
/// copies a large value to many clients at once) neither turns the pod not ready nor stops
/// GETs, which meet the deadline on their own.
const REPLICA_DOWN_AFTER: u32 = 3;
/// The verdict `/readyz` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub reason: String,
    pub replica: Option<ReplicaInfo>,
    pub master_reachable: bool,
    /// Whether GET serves the replica's value now (`false`: GET answers 503).
    pub serving: bool,
    /// Seconds since the replica last heard from its master; 0 while in sync.
    pub value_age_seconds: Option<u64>,
}

/// What GET may do, published with the sentinel it was decided for.
#[derive(Clone)]
struct ReadRule {
    allowed: Result<(), String>,
    sentinel: Option<Arc<Sentinel>>,
    /// Changes whenever the replica process GET may read changes, or it loses that right.
    epoch: u64,
    /// When the replica last had data from its master, as last estimated.
    heard: Option<Instant>,
    /// Link up and the master answered: the value is as current as replication makes it.
    current: bool,
}

/// A GET's permission to read the replica, checked again with [`Health::confirm`] after it.
#[derive(Clone)]
pub struct Ticket {
    sentinel: Arc<Sentinel>,
    pub epoch: u64,
}

/// One look at the replica and the master.
pub struct Observation {
    pub replica: Result<ReplicaInfo, String>,
    /// The replica process the observation is about (`Err`: it could not be identified).
    pub run_id: Result<String, String>,
    /// What the `HGET` GET sends met (inconclusive when the replica did not answer).
    pub probe: ReadProbe,
    pub master_ok: bool,
    /// The master refused the API's TLS handshake (its certificate, or ours): rustls's reason.
    pub master_tls: Option<String>,
}

/// History the judge needs across checks.
#[derive(Default)]
struct Watch {
    /// When the replica last had data from its master, as observed. Kept across checks because
    /// Redis restarts its count when it declares the link down (after `repl-timeout`, 60 s of
    /// silence): judged on `master_link_down_since_seconds` alone, a pod that had turned not
    /// ready after the grace would turn ready again for another grace.
    last_heard: Option<Instant>,
    /// The run_id `last_heard` is about: another process's history does not count.
    run_id: Option<String>,
    master_failures: u32,
    /// When the master answered again after being unreachable: the replica gets a fresh grace
    /// to reconnect, so a master's return does not turn every pod not ready at once.
    master_back_at: Option<Instant>,
    /// The last conclusive background HGET failure.
    probe_failure: Option<String>,
    epoch: u64,
    /// Checks in a row whose `INFO` the replica did not answer.
    replica_failures: u32,
    /// The last verdict, kept while the replica misses fewer than [`REPLICA_DOWN_AFTER`] checks.
    last: Option<Verdict>,
    /// This process has been ready at least once: from then on a TLS refusal by the master is
    /// an outage of the master, not a reason to leave the Service.
    been_ready: bool,
    /// The master refused TLS at the last check (its log line is written once per episode).
    master_tls: bool,
}

/// One judgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub ready: bool,
    pub reason: String,
    pub allowed: Result<(), String>,
    pub heard: Option<Instant>,
    pub current: bool,
}

impl Verdict {
    fn refuse(reason: String) -> Verdict {
        Verdict { ready: false, allowed: Err(reason.clone()), reason, heard: None, current: false }
    }
}

struct Published {
    readiness: Readiness,
    rule: ReadRule,
}

/// Shared readiness state and read rule.
pub struct Health {
    published: RwLock<Published>,
    watch: Mutex<Watch>,
    /// Serialises sentinel replacement by the watch and by GETs.
    sentinel_lock: Mutex<()>,
    draining: AtomicBool,
    link_grace: Duration,
    max_staleness: Option<Duration>,
    /// The read address is the write address: reading the master is the design (no replica
    /// sidecar, the 2017 talk's first setup and the scaling experiment's naive mode), not a
    /// promoted replica.
    reads_master: bool,
    /// Memory read mode's copy: its subscription and first read are part of readiness.
    cache: Option<Arc<Cache>>,
    /// `host:port` of the local replica, for the log lines of the wait for it.
    replica_addr: String,
}

impl Health {
    pub fn new(config: &Config, cache: Option<Arc<Cache>>) -> Self {
        let starting =
            "starting: the local replica has not been checked yet (its first sync is not confirmed)".to_owned();
        Health {
            cache,
            published: RwLock::new(Published {
                readiness: Readiness {
                    ready: false,
                    reason: starting.clone(),
                    replica: None,
                    master_reachable: false,
                    serving: false,
                    value_age_seconds: None,
                },
                rule: ReadRule { allowed: Err(starting), sentinel: None, epoch: 0, heard: None, current: false },
            }),
            watch: Mutex::new(Watch::default()),
            sentinel_lock: Mutex::new(()),
            draining: AtomicBool::new(false),
            link_grace: config.replica_link_grace,
            max_staleness: config.max_staleness,
            reads_master: config.read.host == config.write.host && config.read.port == config.write.port,
            replica_addr: format!("{}:{}", config.read.host, config.read.port),
        }
    }

    /// The current verdict (not ready at once when draining).
    pub fn readiness(&self) -> Readiness {
        let (mut r, age) = {
            let p = self.published.read().unwrap_or_else(PoisonError::into_inner);
            (p.readiness.clone(), age_of(&p.rule, Instant::now()))
        };
        r.value_age_seconds = age.map(|a| a.as_secs());
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

    /// Seconds since the replica last heard from its master (zero while in sync); `None` before
    /// the replica was first seen synced.
    pub fn value_age(&self) -> Option<Duration> {
        age_of(&self.published.read().unwrap_or_else(PoisonError::into_inner).rule, Instant::now())
    }

    /// Permission for a GET to read the replica, or why it must answer 503 instead.
    pub fn may_read(&self) -> Result<Ticket, String> {
        let p = self.published.read().unwrap_or_else(PoisonError::into_inner);
        p.rule.allowed.clone()?;
        if let (Some(max), Some(age)) = (self.max_staleness, age_of(&p.rule, Instant::now()))
            && age > max
        {
            return Err(format!(
                "the last synced value is {}s old, past --max-staleness ({}s): the replica has not heard from the master since",
                age.as_secs(),
                max.as_secs()
            ));
        }
        let sentinel = p.rule.sentinel.clone().ok_or("the local replica process is not identified yet")?;
        Ok(Ticket { sentinel, epoch: p.rule.epoch })
    }

    /// After a read that came back at `read_at`: the replica process `ticket` allowed is still
    /// the one listening, so what was read came from it. Its sentinel seen open after `read_at`
    /// proves it; a closed sentinel (the process ended, or the connection was killed) is
    /// replaced by a new one if the same `run_id` answers, within `budget`.
    pub fn confirm(&self, store: &Store, ticket: &Ticket, read_at: Instant, budget: Duration) -> Result<(), String> {
        if ticket.sentinel.alive_after(read_at) {
            return Ok(());
        }
        let restarted = || "the local replica process changed; waiting for its first sync since it started".to_owned();
        let _serial = self.sentinel_lock.lock().unwrap_or_else(PoisonError::into_inner);
        {
            let p = self.published.read().unwrap_or_else(PoisonError::into_inner);
            if p.rule.epoch != ticket.epoch {
                return Err(restarted());
            }
            // Another request may have replaced it meanwhile.
            if let Some(s) = &p.rule.sentinel
                && !Arc::ptr_eq(s, &ticket.sentinel)
                && s.run_id() == ticket.sentinel.run_id()
                && s.alive()
            {
                return Ok(());
            }
        }
        let fresh = store.replica_sentinel(budget).map_err(|e| format!("local replica not answering: {e}"))?;
        let mut p = self.published.write().unwrap_or_else(PoisonError::into_inner);
        if p.rule.epoch != ticket.epoch {
            return Err(restarted());
        }
        if fresh.run_id() == ticket.sentinel.run_id() {
            p.rule.sentinel = Some(Arc::new(fresh));
            Ok(())
        } else {
            // Every GET refuses from now on, until the watch judges the new process.
            let mut watch = self.watch.lock().unwrap_or_else(PoisonError::into_inner);
            watch.epoch += 1;
            p.rule =
                ReadRule { allowed: Err(restarted()), sentinel: None, epoch: watch.epoch, heard: None, current: false };
            log::info!("the local replica restarted (new run_id): reads refused until it has synced");
            Err(restarted())
        }
    }

    /// The verdict for one observation, made at `now` (updates the history).
    pub fn judge(&self, obs: &Observation, now: Instant) -> Verdict {
        let mut w = self.watch.lock().unwrap_or_else(PoisonError::into_inner);
        let mut v = self.judge_with(&mut w, obs, now);
        w.last = Some(v.clone());
        if let Some(why) = &obs.master_tls {
            if w.been_ready {
                // Counted as unreachable by `judge_with` (the ping failed): ready as that says.
                v.reason = format!("{}; the master refuses TLS from the API ({why}): writes fail", v.reason);
                if !w.master_tls {
                    log::warn!("the master refuses TLS from the API: {why}; writes fail until it is fixed");
                }
            } else {
                v.ready = false;
                v.reason = format!(
                    "the master refuses TLS from the API ({why}): a configuration fault (CA, certificate, server name); \
                     not ready until it is fixed, since this pod has never been ready"
                );
                if !w.master_tls {
                    log::error!("the master refuses TLS from the API: {why}; not ready until it is fixed");
                }
            }
        } else if w.master_tls {
            log::info!("the master accepts TLS from the API again");
        }
        w.master_tls = obs.master_tls.is_some();
        w.been_ready |= v.ready;
        v
    }

    fn judge_with(&self, w: &mut Watch, obs: &Observation, now: Instant) -> Verdict {
        if obs.master_ok {
            if w.master_failures >= MASTER_DOWN_AFTER {
                w.master_back_at = Some(now);
            }
            w.master_failures = 0;
        } else {
            w.master_failures = w.master_failures.saturating_add(1);
        }
        let master_down = w.master_failures >= MASTER_DOWN_AFTER;
        let info = match &obs.replica {
            Err(e) => {
                w.replica_failures = w.replica_failures.saturating_add(1);
                // The same process is still there (its sentinel is open): a few missed checks
                // say "busy", not "gone".
                if w.replica_failures < REPLICA_DOWN_AFTER
                    && obs.run_id.is_ok()
                    && let Some(last) = &w.last
                {
                    return last.clone();
                }
                return Verdict::refuse(format!("local replica not answering: {e}"));
            }
            Ok(info) => {
                w.replica_failures = 0;
                info
            }
        };
        let run_id = match &obs.run_id {
            Err(e) => return Verdict::refuse(format!("local replica not answering: {e}")),
            Ok(id) => id,
        };
        if !info.is_replica() && self.reads_master {
            return Verdict {
                ready: obs.master_ok,
                reason: if obs.master_ok {
                    "reading the master itself (the read address is the write address)".into()
                } else {
                    "reading the master itself, which does not answer".into()
                },
                allowed: Ok(()),
                heard: Some(now),
                current: true,
            };
        }
        if !info.is_replica() {
            return Verdict::refuse(format!(
                "the read address is a Redis {}, not a replica (promoted?): its value is no longer the master's",
                info.role
            ));
        }
        if info.loading {
            return Verdict::refuse("local replica is loading its dataset".into());
        }
        // Data this process got from the master: its link is up, or was up and went down
        // (`-1`: never connected since it started, whatever it loaded from disk).
        let synced = info.link_up || info.link_down_since_seconds.is_some_and(|s| s >= 0);
        if !synced {
            return Verdict::refuse(
                "local replica has not completed its first sync since it started; what it holds (if anything) is not served"
                    .into(),
            );
        }
        match &obs.probe {
            // Bad data is every pod's alike (GET answers 500 everywhere): not this pod's failure.
            ReadProbe::Pass | ReadProbe::BadData(_) => w.probe_failure = None,
            ReadProbe::Fail(e) => w.probe_failure = Some(e.clone()),
            ReadProbe::Inconclusive => {}
        }
        if let Some(e) = &w.probe_failure {
            return Verdict::refuse(format!("local replica fails the read GET uses: {e}"));
        }
        if w.run_id.as_ref() != Some(run_id) {
            w.run_id = Some(run_id.clone());
            w.last_heard = None;
        }
        let ago = |s: i64| now.checked_sub(Duration::from_secs(s.max(0) as u64)).unwrap_or(now);
        let seen_before = w.last_heard;
        let heard = match (info.link_up, info.master_last_io_seconds_ago, info.link_down_since_seconds) {
            (true, Some(s), _) => ago(s),
            (true, None, _) => now,
            // Down: the silence began before Redis declared it (up to `repl-timeout` earlier),
            // so only what this process saw before counts; without it, the declaration is the
            // best (too recent) estimate.
            (false, _, down) => seen_before.unwrap_or_else(|| ago(down.unwrap_or(0))),
        };
        let heard = seen_before.map_or(heard, |l| l.max(heard));
        w.last_heard = Some(heard);
        let current = info.link_up && obs.master_ok;
        let ok = |ready: bool, reason: String| Verdict { ready, reason, allowed: Ok(()), heard: Some(heard), current };
        let silent = now.saturating_duration_since(heard).as_secs();
        if master_down {
            return ok(
                true,
                format!(
                    "the master does not answer the API either: serving the last synced value, {silent}s old ({})",
                    if info.link_up { "replica link still up" } else { "replica link down" }
                ),
            );
        }
        if !info.link_up && seen_before.is_none() {
            return ok(
                false,
                format!(
                    "replica link down for {}s and not seen up since this process started",
                    info.link_down_since_seconds.unwrap_or(0)
                ),
            );
        }
        let since = w.master_back_at.map_or(heard, |b| b.max(heard));
        let within = now.saturating_duration_since(since) <= self.link_grace;
        let grace = self.link_grace.as_secs();
        match (info.link_up, within) {
            (true, true) => ok(true, "local replica in sync".into()),
            (true, false) => {
                ok(false, format!("no data from the master for {silent}s (grace {grace}s); the master answers the API"))
            }
            (false, true) => {
                ok(true, format!("replica link down, no data for {silent}s, within grace {grace}s; serving last value"))
            }
            (false, false) => ok(
                false,
                format!(
                    "replica link down, no data for {silent}s, past grace {grace}s, while the master answers the API"
                ),
            ),
        }
    }

    /// Publishes the verdict for `obs`, made with `sentinel`.
    fn update(&self, obs: Observation, sentinel: Option<Arc<Sentinel>>, metrics: &Metrics) {
        let now = Instant::now();
        let v = self.judge(&obs, now);
        metrics.replica_link_up.set(i64::from(obs.replica.as_ref().is_ok_and(|i| i.link_up)));
        metrics.replica_ready.set(i64::from(v.ready));
        metrics.master_reachable.set(i64::from(obs.master_ok));
        let run_id = obs.run_id.ok();
        let _serial = self.sentinel_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let mut p = self.published.write().unwrap_or_else(PoisonError::into_inner);
        let same_process = p.rule.sentinel.as_ref().map(|s| s.run_id()) == run_id.as_deref();
        let epoch = {
            let mut w = self.watch.lock().unwrap_or_else(PoisonError::into_inner);
            if !(same_process && p.rule.allowed.is_ok() && v.allowed.is_ok()) {
                w.epoch += 1;
            }
            w.epoch
        };
        if p.readiness.ready != v.ready {
            log::info!("readiness: {} ({})", if v.ready { "ready" } else { "not ready" }, v.reason);
        }
        if p.rule.allowed.is_ok() != v.allowed.is_ok() {
            match &v.allowed {
                Ok(()) => log::info!("GET serves the local replica again"),
                Err(why) => log::info!("GET refused: {why}"),
            }
        }
        p.rule = ReadRule { allowed: v.allowed.clone(), sentinel, epoch, heard: v.heard, current: v.current };
        let age = age_of(&p.rule, now);
        metrics.value_age.set(age.map_or(-1.0, |a| a.as_secs_f64()));
        p.readiness = Readiness {
            ready: v.ready,
            reason: v.reason,
            replica: obs.replica.ok(),
            master_reachable: obs.master_ok,
            serving: v.allowed.is_ok(),
            value_age_seconds: age.map(|a| a.as_secs()),
        };
    }

    /// The sentinel to observe with: the published one while it is open, else a new one.
    fn sentinel(&self, store: &Store) -> Result<Arc<Sentinel>, String> {
        if let Some(s) = &self.published.read().unwrap_or_else(PoisonError::into_inner).rule.sentinel
            && s.alive()
        {
            return Ok(s.clone());
        }
        store.replica_sentinel(HEALTH_TIMEOUT).map(Arc::new).map_err(|e| e.to_string())
    }

    /// One check: identify the replica process, read its state, run the read GET uses, ping the
    /// master; if the process changed during the check, nothing of it is trusted.
    fn check(&self, store: &Store) -> (Observation, Option<Arc<Sentinel>>) {
        let sentinel = self.sentinel(store);
        let (replica, probe) = match store.replica_check() {
            Err(e) => (Err(e.to_string()), ReadProbe::Inconclusive),
            Ok((info, read)) => (Ok(info), read),
        };
        let (master_ok, master_tls) = match store.master_ping() {
            Ok(()) => (true, None),
            Err(ConnError::Tls(why)) => (false, Some(why)),
            Err(e) => {
                log::debug!("master not reachable: {e}");
                (false, None)
            }
        };
        let (run_id, sentinel) = match sentinel {
            Ok(s) if s.alive() => (Ok(s.run_id().to_owned()), Some(s)),
            // The sentinel's connection ended during the check: a restart, or only the
            // connection (CLIENT KILL, a timeout). A new one with the same run_id is the same
            // process (run_ids are random per start), so the check stands.
            Ok(s) => match store.replica_sentinel(HEALTH_TIMEOUT) {
                Ok(fresh) if fresh.run_id() == s.run_id() => (Ok(fresh.run_id().to_owned()), Some(Arc::new(fresh))),
                _ => (Err("the replica process changed during the check".to_owned()), None),
            },
            Err(e) => (Err(e), None),
        };
        (Observation { replica, run_id, probe, master_ok, master_tls }, sentinel)
    }
}

/// The value's age under `rule` at `now`.
fn age_of(rule: &ReadRule, now: Instant) -> Option<Duration> {
    if rule.current { Some(Duration::ZERO) } else { rule.heard.map(|h| now.saturating_duration_since(h)) }
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
    let mut last_note = started;
    loop {
        let (obs, sentinel) = health.check(store);
        if !contacted {
            match &obs.replica {
                Ok(_) => {
                    log::info!("local replica answered after {:.1}s", started.elapsed().as_secs_f64());
                    contacted = true;
                }
                // Silence while waiting reads as a hang: say what is awaited and why it fails.
                Err(why) if last_note.elapsed() >= WAITING_NOTE_EVERY => {
                    log::warn!(
                        "waiting for the local replica at {}: {why} ({:.0}s of --redis-wait {})",
                        health.replica_addr,
                        started.elapsed().as_secs_f64(),
                        cli::show(wait)
                    );
                    last_note = Instant::now();
                }
                Err(_) => {}
            }
        }
        health.update(obs, sentinel, metrics);
        if !contacted && started.elapsed() >= wait {
            return Err(format!(
                "the local replica at {} did not answer within --redis-wait ({}); giving up",
                health.replica_addr,
                cli::show(wait)
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

    fn obs(replica: Result<ReplicaInfo, String>, master_ok: bool) -> Observation {
        Observation { replica, run_id: Ok("a".into()), probe: ReadProbe::Pass, master_ok, master_tls: None }
    }

    fn health() -> Health {
        let env = |k: &str| (k == "REDIS_ADDR_WRITE").then(|| "127.0.0.1:1".to_owned());
        match Config::parse(Vec::new(), env) {
            Ok(crate::config::Command::Run(config)) => Health::new(&config, None),
            _ => panic!("the default config parses"),
        }
    }

    /// The readiness rules, row by row (the README's table).
    #[test]
    fn judge_rules() {
        let now = Instant::now();
        let ready = |o: Observation| health().judge(&o, now);
        let v = ready(obs(info("slave", true, None, Some(1)), true));
        assert!(v.ready && v.allowed.is_ok() && v.current);
        let v = ready(obs(info("slave", true, None, Some(31)), true));
        assert!(!v.ready && v.allowed.is_ok(), "cut off: not ready, GET still serves its synced value");
        // Down when first seen: how long it was silent before Redis said so is unknown.
        assert!(!ready(obs(info("slave", false, Some(10), None), true)).ready);
        for refused in [
            obs(info("slave", false, Some(-1), None), true),
            obs(info("master", false, None, None), true),
            obs(Err("refused".into()), true),
            Observation {
                probe: ReadProbe::Fail("unknown command".into()),
                ..obs(info("slave", true, None, Some(0)), true)
            },
            Observation { run_id: Err("gone".into()), ..obs(info("slave", true, None, Some(0)), true) },
        ] {
            let v = ready(refused);
            assert!(!v.ready && v.allowed.is_err(), "{v:?}");
        }
        let loading = ReplicaInfo { loading: true, ..info("slave", true, None, Some(0)).unwrap() };
        assert!(ready(obs(Ok(loading), true)).allowed.is_err());
        let h = health();
        h.start_draining();
        assert!(!h.readiness().ready);
    }

    /// A master refusing the API's TLS: a pod never ready stays not ready with the reason; once
    /// it has been ready, the refusal counts as the master unreachable (ready, reason said).
    #[test]
    fn master_tls_refusal() {
        let now = Instant::now();
        let refused = |o: Observation| Observation {
            master_ok: false,
            master_tls: Some("invalid peer certificate: UnknownIssuer".into()),
            ..o
        };
        let h = health();
        for _ in 0..5 {
            let v = h.judge(&refused(obs(info("slave", true, None, Some(0)), false)), now);
            assert!(!v.ready && v.reason.contains("UnknownIssuer") && v.reason.contains("never been ready"), "{v:?}");
        }
        assert!(h.judge(&obs(info("slave", true, None, Some(0)), true), now).ready, "fixed");
        for i in 0..5 {
            let v = h.judge(&refused(obs(info("slave", true, None, Some(0)), false)), now);
            assert!(v.ready && v.allowed.is_ok() && v.reason.contains("UnknownIssuer"), "{i}: {v:?}");
        }
        let v = h.judge(&refused(obs(info("slave", false, Some(5), None), false)), now);
        assert!(v.ready && v.reason.contains("the master does not answer the API either"), "{v:?}");
    }

    /// A replica that misses a check or two while its process is still there (busy) keeps the
    /// last verdict; the third miss in a row refuses; a process that is gone refuses at once.
    #[test]
    fn a_busy_replica_is_not_a_dead_one() {
        let now = Instant::now();
        let h = health();
        assert!(h.judge(&obs(info("slave", true, None, Some(0)), true), now).ready);
        let missed = || obs(Err("timed out".into()), true);
        assert!(h.judge(&missed(), now).ready);
        assert!(h.judge(&missed(), now).allowed.is_ok());
        assert!(!h.judge(&missed(), now).ready, "third miss in a row");
        assert!(h.judge(&obs(info("slave", true, None, Some(0)), true), now).ready);
        let gone = Observation { run_id: Err("connection refused".into()), ..missed() };
        assert!(h.judge(&gone, now).allowed.is_err(), "the process is gone");
    }

    /// Reading the master by design (read address = write address, the scaling experiment's
    /// naive mode): a master at the read address is served while it answers, not refused as a
    /// promoted replica.
    #[test]
    fn reading_the_master_by_design() {
        let env = |k: &str| matches!(k, "REDIS_ADDR_WRITE" | "REDIS_ADDR_READ").then(|| "127.0.0.1:1".to_owned());
        let h = match Config::parse(Vec::new(), env) {
            Ok(crate::config::Command::Run(config)) => Health::new(&config, None),
            _ => panic!("the config parses"),
        };
        let now = Instant::now();
        let v = h.judge(&obs(info("master", false, None, None), true), now);
        assert!(v.ready && v.allowed.is_ok() && v.current, "{v:?}");
        assert!(!health().judge(&obs(info("master", false, None, None), true), now).ready, "elsewhere: promoted");
    }

    /// A link cut past `repl-timeout`: silent for 35 s (not ready), then Redis declares the
    /// link down and counts from 0 — still not ready; data again — ready.
    #[test]
    fn no_flap_when_redis_declares_the_link_down() {
        let h = health();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let ready = |o: Observation, t: Instant| h.judge(&o, t).ready;
        assert!(ready(obs(info("slave", true, None, Some(0)), true), at(0)));
        assert!(ready(obs(info("slave", true, None, Some(20)), true), at(20)));
        assert!(!ready(obs(info("slave", true, None, Some(35)), true), at(35)));
        assert!(!ready(obs(info("slave", false, Some(0), None), true), at(60)), "ready again when declared down");
        assert!(!ready(obs(info("slave", false, Some(10), None), true), at(70)));
        assert!(ready(obs(info("slave", true, None, Some(0)), true), at(71)));
        // A short blip of a healthy link stays within the grace.
        assert!(ready(obs(info("slave", false, Some(2), None), true), at(73)));
    }

    /// The master down for the API too: ready past the grace (every pod is in the same state);
    /// when it answers again the replica gets a fresh grace to reconnect.
    #[test]
    fn master_down_for_everyone_stays_ready() {
        let h = health();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(h.judge(&obs(info("slave", true, None, Some(0)), true), at(0)).ready);
        for s in 1..=100 {
            let v = h.judge(&obs(info("slave", false, Some(s as i64 - 1), None), false), at(s));
            assert!(v.ready && v.allowed.is_ok() && !v.current, "{s}: {v:?}");
        }
        // Back: within a fresh grace while the replica reconnects, then in sync.
        assert!(h.judge(&obs(info("slave", false, Some(100), None), true), at(101)).ready);
        assert!(h.judge(&obs(info("slave", false, Some(105), None), true), at(106)).ready);
        assert!(!h.judge(&obs(info("slave", false, Some(140), None), true), at(140)).ready, "cut off after all");
    }
}
