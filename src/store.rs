//! The only module that talks to Redis: the replica pool (reads) and the master pool (writes),
//! the commands, and the per-request timeouts taken from the request's remaining budget.
//!
//! Pools are r2d2 over our own small connection manager rather than the `redis` crate's
//! `r2d2` feature: that impl connects without a timeout and cannot be told that a connection
//! whose command timed out must be dropped (a late reply would be read by the next request).

use crate::breaker::Breaker;
use crate::config::{Config, RedisEndpoint};
use crate::deadline::Deadline;
use crate::gate::{Admit, Gate, Refused};
use crate::metrics::{Metrics, PoolLabels};
use r2d2::{ManageConnection, Pool};
use redis::io::tcp::TcpSettings;
use redis::{ConnectionAddr, ConnectionInfo, ConnectionLike, IntoConnectionInfo, RedisError};
use std::sync::Arc;
use std::time::Duration;

/// A socket timeout already in place is reused when it is at most this much shorter than the
/// remaining budget: saves two syscalls a request, costs at most this much of the budget.
const TIMEOUT_SLACK: Duration = Duration::from_millis(5);

/// Linux runs socket timeouts (SO_RCVTIMEO/SO_SNDTIMEO) on its timer wheel, which fires up to
/// one tick late below ~63 ticks and up to 1/8 late above that (measured here: a 397 ms
/// timeout fired 27 ms late). Budgets are shrunk so the worst case still lands on time.
const TICK: Duration = Duration::from_millis(4);
/// Longest timeout the wheel keeps to one-tick precision (63 ticks at HZ=250, less a tick).
const PRECISE_UP_TO: Duration = Duration::from_millis(248);

/// The socket timeout to set so that the kernel's wakeup comes no later than `budget`.
fn socket_timeout(budget: Duration) -> Option<Duration> {
    let t = if budget <= PRECISE_UP_TO + TICK {
        budget.checked_sub(TICK)?
    } else {
        (budget.saturating_sub(TICK) * 8 / 9).max(PRECISE_UP_TO)
    };
    (!t.is_zero()).then_some(t)
}

/// Timeout of the health checks' own connections and commands.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// What a failed command means for a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not a write.
    Read,
    /// The write was certainly not applied.
    NotWritten,
    /// The write may or may not have been applied.
    Unknown,
}

/// Why a Redis step failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The budget ran out during the step.
    Timeout(Outcome),
    /// The budget was spent before the step started.
    BudgetSpent,
    /// Refused without waiting: the requests queued for the pool would outlast the budget.
    Shed {
        expected_wait: Duration,
    },
    /// The replica has not completed a sync, so its "no value" means nothing.
    NotSynced,
    Unavailable {
        reason: String,
        outcome: Outcome,
    },
    /// The master's circuit is open: the write was refused without trying.
    CircuitOpen {
        retry_in: Duration,
    },
}

/// A pooled Redis connection and what we know about it.
pub struct Conn {
    inner: redis::Connection,
    /// Set after any failure that may leave a reply in flight; the pool then drops it.
    broken: bool,
    /// Read/write timeout currently set on the socket.
    timeout: Option<Duration>,
}

impl Conn {
    /// Sends a packed MULTI/EXEC pipeline and reads its `replies`, each read bounded by what is
    /// left of the budget (redis-rs's own pipeline read would wait the full timeout once per
    /// reply on a hung server). Stops at the first error and then drops the connection, whose
    /// remaining replies are unread.
    fn transaction(&mut self, packed: &[u8], replies: usize, deadline: &Deadline) -> redis::RedisResult<()> {
        let result = self.read_replies(packed, replies, deadline);
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    fn read_replies(&mut self, packed: &[u8], replies: usize, deadline: &Deadline) -> redis::RedisResult<()> {
        self.inner.send_packed_command(packed)?;
        for i in 0..replies {
            if i > 0 {
                let Some(budget) = deadline.remaining().and_then(socket_timeout) else {
                    return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "deadline exceeded").into());
                };
                self.fit_timeouts(budget)?;
            }
            let reply = self.inner.recv_response()?;
            let failed = match &reply {
                redis::Value::ServerError(e) => Some(e.clone()),
                redis::Value::Array(items) => items.iter().find_map(|v| match v {
                    redis::Value::ServerError(e) => Some(e.clone()),
                    _ => None,
                }),
                _ => None,
            };
            if let Some(e) = failed {
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Sets the socket timeouts to `budget` unless the ones in place are just below it.
    fn fit_timeouts(&mut self, budget: Duration) -> redis::RedisResult<()> {
        let fits = self.timeout.is_some_and(|t| t <= budget && budget - t <= TIMEOUT_SLACK);
        if !fits {
            self.inner.set_read_timeout(Some(budget))?;
            self.inner.set_write_timeout(Some(budget))?;
            self.timeout = Some(budget);
        }
        Ok(())
    }
}

/// Opens connections to one Redis endpoint.
pub struct Manager {
    client: redis::Client,
    connect_timeout: Duration,
}

impl Manager {
    pub fn new(endpoint: &RedisEndpoint, connect_timeout: Duration) -> Result<Self, RedisError> {
        let mut redis_settings = redis::RedisConnectionInfo::default().set_skip_set_lib_name();
        if let Some(p) = &endpoint.password {
            redis_settings = redis_settings.set_password(p);
        }
        let info: ConnectionInfo = ConnectionAddr::Tcp(endpoint.host.clone(), endpoint.port)
            .into_connection_info()?
            .set_tcp_settings(TcpSettings::default().set_nodelay(true))
            .set_redis_settings(redis_settings);
        Ok(Manager { client: redis::Client::open(info)?, connect_timeout })
    }

    /// A new connection, with connect + handshake bounded by `timeout` (at most the
    /// configured connect timeout).
    fn connect_within(&self, timeout: Duration) -> Result<Conn, RedisError> {
        let inner = self.client.get_connection_with_timeout(timeout.min(self.connect_timeout))?;
        Ok(Conn { inner, broken: false, timeout: None })
    }
}

impl ManageConnection for Manager {
    type Connection = Conn;
    type Error = RedisError;

    fn connect(&self) -> Result<Conn, RedisError> {
        self.connect_within(self.connect_timeout)
    }

    fn is_valid(&self, conn: &mut Conn) -> Result<(), RedisError> {
        redis::cmd("PING").query::<()>(&mut conn.inner)
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.broken || !conn.inner.is_open()
    }
}

/// Background connection failures of a pool are counted; the request path reports its own.
struct PoolErrors {
    metrics: Arc<Metrics>,
    pool: &'static str,
}

impl std::fmt::Debug for PoolErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PoolErrors({})", self.pool)
    }
}

impl r2d2::HandleError<RedisError> for PoolErrors {
    fn handle_error(&self, error: RedisError) {
        self.metrics.redis_error(self.pool);
        log::debug!("{} pool: cannot open a connection: {error}", self.pool);
    }
}

/// One role's pool, and the gate that admits requests to it (one permit per connection).
struct Role {
    name: &'static str,
    pool: Pool<Manager>,
    gate: Gate,
}

/// Replication state of the local replica, from `INFO replication` + `INFO persistence`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplicaInfo {
    pub role: String,
    pub link_up: bool,
    pub sync_in_progress: bool,
    pub loading: bool,
    /// Seconds since the last byte from the master (link up).
    pub master_last_io_seconds_ago: Option<i64>,
    /// Seconds the link has been down; `None` when up; `Some(-1)` when never synced.
    pub link_down_since_seconds: Option<i64>,
}

impl ReplicaInfo {
    pub(crate) fn parse(info: &str) -> ReplicaInfo {
        let mut r = ReplicaInfo::default();
        for line in info.lines() {
            let Some((k, v)) = line.trim_end().split_once(':') else { continue };
            match k {
                "role" => r.role = v.to_owned(),
                "master_link_status" => r.link_up = v == "up",
                "master_sync_in_progress" => r.sync_in_progress = v == "1",
                "loading" => r.loading = v == "1",
                "master_last_io_seconds_ago" => r.master_last_io_seconds_ago = v.parse().ok(),
                "master_link_down_since_seconds" => r.link_down_since_seconds = v.parse().ok(),
                _ => {}
            }
        }
        r
    }

    pub fn is_replica(&self) -> bool {
        self.role == "slave"
    }

    /// Has this replica process completed a sync, so that its data means something?
    pub fn has_synced(&self) -> bool {
        !self.loading
            && !self.sync_in_progress
            && (self.link_up || self.link_down_since_seconds.is_some_and(|s| s >= 0))
    }
}

/// Access to the value in Redis.
pub struct Store {
    replica: Role,
    master: Role,
    replica_manager: Manager,
    master_manager: Manager,
    hash: String,
    field: String,
    channel: String,
    breaker: Breaker,
    metrics: Arc<Metrics>,
}

impl Store {
    /// Builds both pools without waiting for Redis (connections open in the background).
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Store, RedisError> {
        let role = |name: &'static str, endpoint: &RedisEndpoint, size: u32| -> Result<Role, RedisError> {
            let pool = Pool::builder()
                .max_size(size)
                // min_idle defaults to max_size: r2d2 keeps refilling the pool in the
                // background, so requests find warm connections after a Redis restart.
                // A PING per checkout doubles the round trips (-25% measured); failures are
                // caught on use instead and the connection dropped.
                .test_on_check_out(false)
                // Each checkout passes its own timeout from the request's budget.
                .connection_timeout(config.deadline)
                .error_handler(Box::new(PoolErrors { metrics: metrics.clone(), pool: name }))
                .build_unchecked(Manager::new(endpoint, config.redis_connect_timeout)?);
            Ok(Role { name, pool, gate: Gate::new(size as usize) })
        };
        Ok(Store {
            replica: role("replica", &config.read, config.read_pool_size)?,
            master: role("master", &config.write, config.write_pool_size)?,
            replica_manager: Manager::new(&config.read, config.redis_connect_timeout)?,
            master_manager: Manager::new(&config.write, config.redis_connect_timeout)?,
            hash: config.redis_hash.clone(),
            field: config.redis_field.clone(),
            channel: format!("{}:{}:changed", config.redis_hash, config.redis_field),
            breaker: Breaker::new(config.breaker_failures, config.breaker_cooldown),
            metrics,
        })
    }

    /// The current value from the replica, `None` if never set. One `HGET`; only a nil answer
    /// costs more round trips, to tell "never set" from "replica not synced yet".
    pub fn get(&self, deadline: &Deadline, admit: Admit) -> Result<Option<f64>, StoreError> {
        let mut cmd = redis::cmd("HGET");
        cmd.arg(&self.hash).arg(&self.field);
        let hget = || -> Result<Option<String>, StoreError> {
            self.run(&self.replica, &self.replica_manager, deadline, admit, Outcome::Read, |c, _| {
                cmd.query(&mut c.inner)
            })
        };
        let mut value = hget()?;
        if value.is_none() {
            let info = self.run(&self.replica, &self.replica_manager, deadline, admit, Outcome::Read, |c, _| {
                redis::cmd("INFO").arg("replication").arg("persistence").query::<String>(&mut c.inner)
            })?;
            let info = ReplicaInfo::parse(&info);
            if info.is_replica() && !info.has_synced() {
                return Err(StoreError::NotSynced);
            }
            // The sync may have completed between the HGET and the INFO (the chaos suite's
            // replica resync caught a 404 that way): only a nil read after a synced INFO means
            // "never set".
            if info.is_replica() {
                value = hget()?;
            }
        }
        match value {
            Some(text) => text.trim().parse::<f64>().ok().filter(|v| v.is_finite()).map(Some).ok_or_else(|| {
                StoreError::Unavailable { reason: "the stored value is not a number".into(), outcome: Outcome::Read }
            }),
            None => Ok(None),
        }
    }

    /// Sets the value on the master: `HSET` and a change notice (`PUBLISH` on [`Self::channel`])
    /// in one `MULTI`/`EXEC`, sent in one round trip. The replicas apply the write before they
    /// deliver the notice, so a process re-reading on the notice sees the new value.
    pub fn set(&self, deadline: &Deadline, admit: Admit, value: f64) -> Result<(), StoreError> {
        let text = serde_json::to_string(&value).unwrap_or_else(|_| value.to_string());
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("HSET").arg(&self.hash).arg(&self.field).arg(&text).ignore();
        pipe.cmd("PUBLISH").arg(&self.channel).arg(&text).ignore();
        let packed = pipe.get_packed_pipeline();
        if deadline.expired() {
            return Err(StoreError::BudgetSpent);
        }
        if let Err(retry_in) = self.breaker.allow() {
            self.metrics.writes_refused.inc();
            return Err(StoreError::CircuitOpen { retry_in });
        }
        // MULTI, HSET, PUBLISH, EXEC: four replies.
        let result = self.run(&self.master, &self.master_manager, deadline, admit, Outcome::Unknown, |c, d| {
            c.transaction(&packed, 4, d)
        });
        self.breaker.record(result.is_ok());
        self.metrics.breaker_state.set(self.breaker.level() as i64);
        result
    }

    /// The channel change notices are published on.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// A dedicated connection to the replica for a subscription (the caller sets timeouts).
    pub fn replica_connection(&self) -> Result<redis::Connection, RedisError> {
        Ok(self.replica_manager.connect_within(HEALTH_TIMEOUT)?.inner)
    }

    /// Runs `f` on a pooled connection within the budget; on a connection failure (not a
    /// timeout) retries once on a fresh connection if the budget allows.
    fn run<T>(
        &self,
        role: &Role,
        manager: &Manager,
        deadline: &Deadline,
        admit: Admit,
        outcome: Outcome,
        f: impl Fn(&mut Conn, &Deadline) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let not_sent = if outcome == Outcome::Read { Outcome::Read } else { Outcome::NotWritten };
        let budget = deadline.remaining().ok_or(StoreError::BudgetSpent)?;
        let _permit = role.gate.acquire(budget, admit).map_err(|refused| match refused {
            Refused::Overloaded { expected_wait } => {
                self.metrics.shed.get_or_create(&PoolLabels { pool: role.name }).inc();
                StoreError::Shed { expected_wait }
            }
            Refused::TimedOut => {
                self.metrics.redis_error(role.name);
                StoreError::Timeout(not_sent)
            }
        })?;
        let budget = deadline.remaining().ok_or(StoreError::Timeout(not_sent))?;
        if role.pool.state().connections == 0 {
            // Nothing pooled (Redis down, or still connecting): r2d2 would wait out the whole
            // budget; a direct attempt fails fast with the real reason, or serves the request.
            return self.fresh_attempt(role, manager, deadline, outcome, not_sent, &f);
        }
        // r2d2 waits on a condvar, a precise timer: the budget as it is.
        let first_err = match role.pool.get_timeout(budget) {
            Ok(mut conn) => match attempt(&mut conn, deadline, &f) {
                Ok(v) => return Ok(v),
                Err(e) => e,
            },
            Err(_) => {
                // r2d2 fails a checkout only when the timeout (our budget) ran out.
                self.metrics.redis_error(role.name);
                return Err(StoreError::Timeout(not_sent));
            }
        };
        self.metrics.redis_error(role.name);
        if !retryable(&first_err) {
            return Err(classify(&first_err, role.name, outcome, not_sent));
        }
        // The pooled connection was dead (e.g. Redis restarted): one fresh try if time allows.
        // Whatever happens now, a write's first attempt may have been applied.
        self.fresh_attempt(role, manager, deadline, outcome, outcome, &f)
    }

    /// `f` on a new, unpooled connection. `unsent`: what a failure before the command was sent
    /// means for a write.
    fn fresh_attempt<T>(
        &self,
        role: &Role,
        manager: &Manager,
        deadline: &Deadline,
        outcome: Outcome,
        unsent: Outcome,
        f: &impl Fn(&mut Conn, &Deadline) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let budget = deadline.remaining().and_then(socket_timeout).ok_or(StoreError::Timeout(unsent))?;
        let mut conn = manager.connect_within(budget).map_err(|e| {
            self.metrics.redis_error(role.name);
            if deadline.expired() || e.is_timeout() {
                StoreError::Timeout(unsent)
            } else {
                classify(&e, role.name, unsent, unsent)
            }
        })?;
        attempt(&mut conn, deadline, f).map_err(|e| {
            self.metrics.redis_error(role.name);
            classify(&e, role.name, outcome, unsent)
        })
    }

    /// `INFO replication` + `INFO persistence` of the replica, on a fresh connection.
    pub fn replica_info(&self) -> Result<ReplicaInfo, RedisError> {
        let mut conn = self.replica_manager.connect_within(HEALTH_TIMEOUT)?;
        conn.fit_timeouts(HEALTH_TIMEOUT)?;
        let text: String = redis::cmd("INFO").arg("replication").arg("persistence").query(&mut conn.inner)?;
        Ok(ReplicaInfo::parse(&text))
    }

    /// Whether the master answers `PING`.
    pub fn master_ping(&self) -> Result<(), RedisError> {
        let mut conn = self.master_manager.connect_within(HEALTH_TIMEOUT)?;
        conn.fit_timeouts(HEALTH_TIMEOUT)?;
        redis::cmd("PING").query::<()>(&mut conn.inner)
    }
}

/// One command on `conn` with timeouts from the budget. Any failure other than a Redis error
/// reply marks the connection broken, so the pool drops it instead of reusing it.
fn attempt<T>(
    conn: &mut Conn,
    deadline: &Deadline,
    f: &impl Fn(&mut Conn, &Deadline) -> redis::RedisResult<T>,
) -> redis::RedisResult<T> {
    let Some(budget) = deadline.remaining().and_then(socket_timeout) else {
        return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "deadline exceeded").into());
    };
    let result = conn.fit_timeouts(budget).and_then(|()| f(conn, deadline));
    if let Err(e) = &result
        && e.code().is_none()
    {
        conn.broken = true;
    }
    result
}

/// A dead connection (reset, refused, closed) is worth one retry on a fresh one; a timeout
/// (the budget is gone) or an error reply from Redis is not.
fn retryable(e: &RedisError) -> bool {
    !e.is_timeout() && e.code().is_none() && (e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal())
}

fn classify(e: &RedisError, pool: &'static str, outcome: Outcome, refused: Outcome) -> StoreError {
    if e.is_timeout() {
        return StoreError::Timeout(outcome);
    }
    match e.code() {
        Some("LOADING") => {
            StoreError::Unavailable { reason: format!("{pool} is loading its dataset"), outcome: refused }
        }
        Some("MASTERDOWN") => {
            StoreError::Unavailable { reason: format!("{pool} has lost its master"), outcome: refused }
        }
        Some("READONLY") => {
            log::warn!("the {pool} address points to a read-only replica; writes need the master");
            StoreError::Unavailable { reason: format!("{pool} is a read-only replica"), outcome: refused }
        }
        Some(_) => StoreError::Unavailable { reason: format!("{pool} refused the command: {e}"), outcome: refused },
        None => StoreError::Unavailable { reason: format!("{pool} connection failed: {e}"), outcome },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// However late the kernel's timer wheel fires, a socket timeout ends within the budget,
    /// without wasting much of it.
    #[test]
    fn socket_timeouts_absorb_the_timer_wheel() {
        for ms in [1u64, 5, 50, 200, 252, 253, 300, 397, 400, 1000, 5000] {
            let budget = Duration::from_millis(ms);
            if let Some(t) = socket_timeout(budget) {
                let worst = if t <= PRECISE_UP_TO { t + TICK } else { t * 9 / 8 + TICK };
                assert!(worst <= budget, "{ms} ms: timeout {t:?} may fire at {worst:?}");
                assert!(t >= budget * 3 / 4 || ms < 20, "{ms} ms: timeout {t:?} wastes the budget");
            }
        }
        assert_eq!(socket_timeout(Duration::from_millis(3)), None);
    }

    /// Replica states are read from INFO text: never synced, synced, link down after a sync.
    #[test]
    fn replica_info_parse() {
        let never = ReplicaInfo::parse(
            "# Replication\r\nrole:slave\r\nmaster_link_status:down\r\nmaster_sync_in_progress:0\r\nmaster_link_down_since_seconds:-1\r\n# Persistence\r\nloading:0\r\n",
        );
        assert!(never.is_replica() && !never.has_synced());
        let up = ReplicaInfo::parse(
            "role:slave\r\nmaster_link_status:up\r\nmaster_last_io_seconds_ago:2\r\nmaster_sync_in_progress:0\r\nloading:0\r\n",
        );
        assert!(up.has_synced());
        assert_eq!(up.master_last_io_seconds_ago, Some(2));
        let down = ReplicaInfo::parse(
            "role:slave\r\nmaster_link_status:down\r\nmaster_link_down_since_seconds:12\r\nmaster_sync_in_progress:0\r\n",
        );
        assert!(down.has_synced());
        let syncing = ReplicaInfo::parse(
            "role:slave\r\nmaster_link_status:down\r\nmaster_sync_in_progress:1\r\nmaster_link_down_since_seconds:-1\r\n",
        );
        assert!(!syncing.has_synced());
        let loading = ReplicaInfo::parse("role:slave\r\nmaster_link_status:up\r\nloading:1\r\n");
        assert!(!loading.has_synced());
        assert!(!ReplicaInfo::parse("role:master\r\n").is_replica());
    }
}
