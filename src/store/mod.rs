//! The only module that talks to Redis: the replica pool (reads) and the master pool (writes),
//! the commands, and the bounds every request-path step runs under: the request's deadline,
//! a reply size limit, and a reconnect backoff per pool.
//!
//! Submodules: [`conn`] our RESP2 connection (why not redis-rs's is said there), [`watchdog`]
//! the thread that ends a step at its deadline, [`backoff`] the reconnect backoff, [`tls`] the
//! TLS settings, [`subscription`] memory mode's subscription.
//!
//! Pools are r2d2 over our own connection manager: a connection whose step failed mid-reply
//! (timeout, oversized reply, reset) is marked broken and dropped, never reused, so a late
//! reply is never read by the next request. Every connection the API opens to Redis (pools,
//! health checks, sentinel, subscription) is ours and opened by [`Manager`], so TLS and
//! credentials apply to all alike. The `redis` crate only packs commands.

mod backoff;
mod coalesce;
mod conn;
mod sentinel;
mod subscription;
mod tls;
mod watchdog;

use crate::breaker::{Breaker, Verdict};
use crate::config::{Config, RedisEndpoint};
use crate::deadline::Deadline;
use crate::gate::{Admit, Gate, Refused};
use crate::metrics::{Metrics, PoolLabels};
use backoff::Backoff;
pub use coalesce::Done;
use coalesce::{Coalescer, Gather};
pub use conn::ConnError;
use conn::{Conn, TlsParams, Value};
use r2d2::{ManageConnection, Pool};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
pub use sentinel::Sentinel;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
pub use subscription::Subscription;
pub use tls::{Tls, TlsError, TlsFile};
use watchdog::Watchdog;

/// How often the idle reader thread checks that its store still exists.
const READER_CHECK: Duration = Duration::from_secs(1);
/// The longest the reader gathers a batch, counted from the send of its last read. Each read
/// costs the replica an epoll wake-up (~21 µs of CPU; the `HGET` itself takes 0.4 µs), and the
/// reader its syscalls: with the CPU saturated, fewer and bigger reads leave more of it to
/// the answers. Beside a busy loop (50 connections, five alternated pairs of 5 s runs) 400 µs
/// served 41.4k GETs/s against 37.0k with 200 µs (0.105 against 0.188 `HGET`s per GET); 800 µs
/// added 4 % more. It bounds what an idle keep-alive connection (one that may send any time)
/// costs each batch: 0.4 ms against a 400 ms deadline.
const GATHER_WINDOW: Duration = Duration::from_micros(400);
/// The reader gathers only after a batch of at least this many deferred GETs: a few clients
/// taking turns are not held for each other.
const GATHER_AFTER: usize = 4;

/// What a read of the value gives.
pub type ValueRead = Result<Option<f64>, StoreError>;

/// A read of the value and when its answer came back: what is checked of the replica after
/// `at` (its sentinel) holds for this read, and for every caller that shares it.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub read: ValueRead,
    pub at: Instant,
}

impl Fetched {
    /// `read`, back now.
    pub fn now(read: ValueRead) -> Fetched {
        Fetched { read, at: Instant::now() }
    }
}

/// Timeout of the health checks' own connections and commands.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// Largest `INFO` reply accepted (`INFO replication` + `persistence` is 1–2 KiB; a replica
/// list makes it longer).
const INFO_MAX_REPLY: usize = 256 * 1024;
/// Largest reply to `MULTI`/`HSET`/`PUBLISH`/`EXEC` or `PING` accepted (a few bytes each).
const SMALL_REPLY: usize = 4096;

/// What a failed command means for a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteEffect {
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
    Timeout(WriteEffect),
    /// The budget was spent before the step started.
    BudgetSpent,
    /// Refused without waiting: the requests queued for the pool would outlast the budget.
    Shed { expected_wait: Duration },
    /// The replica has not completed a sync, so its "no value" means nothing.
    NotSynced,
    /// Redis could not be reached or the connection failed (or connecting is backing off).
    Unavailable { reason: String, outcome: WriteEffect },
    /// Redis answered that it cannot serve now (`LOADING`, `MASTERDOWN`, `READONLY`).
    NotServing { reason: String, outcome: WriteEffect },
    /// Redis is up but the data or the command is wrong: the stored value is not a number or
    /// is over the reply limit, or Redis refused the command (`WRONGTYPE`, `NOPERM`, ...).
    /// Retrying will not help.
    BadData { reason: String, outcome: WriteEffect },
    /// The master's circuit is open: the write was refused without trying.
    CircuitOpen { retry_in: Duration },
    /// TLS was refused (certificate, name, client certificate): a configuration fault that a
    /// retry will not mend.
    TlsRefused { reason: String, outcome: WriteEffect },
}

impl StoreError {
    /// What the write breaker makes of it: only connection failures and timeouts are failures
    /// of the master; an answer, even an error reply, shows it is alive. A TLS refusal is
    /// neither: it comes at once (nothing to shed) and an open circuit would hide its reason.
    fn verdict(&self) -> Verdict {
        match self {
            StoreError::Timeout(_) | StoreError::Unavailable { .. } => Verdict::Failed,
            StoreError::NotServing { .. } | StoreError::BadData { .. } => Verdict::Answered,
            StoreError::BudgetSpent
            | StoreError::Shed { .. }
            | StoreError::NotSynced
            | StoreError::CircuitOpen { .. }
            | StoreError::TlsRefused { .. } => Verdict::None,
        }
    }
}

/// How one endpoint is reached.
struct Endpoint {
    host: String,
    port: u16,
    /// ACL user name for `AUTH username password`; `None`: the default user (`AUTH password`).
    username: Option<String>,
    password: Option<String>,
    /// `rediss://`: the shared client configuration and the name the certificate must be valid for.
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    connect_timeout: Duration,
    /// Socket timeouts set once per connection: the watchdog bounds every step; this only
    /// guards against a step it does not watch.
    backstop: Duration,
}

/// Opens connections to one Redis endpoint; clones share the endpoint's backoff.
#[derive(Clone)]
pub struct Manager {
    endpoint: Arc<Endpoint>,
    backoff: Arc<Backoff>,
    /// The last connect failed as a TLS refusal (its reason): callers the backoff turns away
    /// meanwhile get it as such, not as an outage.
    tls_refusal: Arc<Mutex<Option<String>>>,
    watchdog: Watchdog,
}

impl Manager {
    fn new(endpoint: &RedisEndpoint, config: &Config, watchdog: Watchdog) -> Manager {
        Manager {
            endpoint: Arc::new(Endpoint {
                host: endpoint.host.clone(),
                port: endpoint.port,
                username: endpoint.user.clone(),
                password: endpoint.password.clone(),
                tls: match (&endpoint.tls, &config.redis_tls) {
                    (Some(name), Some(tls)) => Some((tls.config().clone(), name.clone())),
                    _ => None,
                },
                connect_timeout: config.redis_connect_timeout,
                backstop: config.deadline.max(HEALTH_TIMEOUT) * 2,
            }),
            backoff: Arc::new(Backoff::default()),
            tls_refusal: Arc::default(),
            watchdog,
        }
    }

    /// A new connection, connect + handshake bounded by `timeout` (at most the configured
    /// connect timeout). `probe`: connect even while backing off (the health checks, one per
    /// interval: they notice first that Redis is back); else refused at once meanwhile.
    fn connect_within(&self, timeout: Duration, probe: bool) -> Result<Conn, ConnError> {
        let refusal = || self.tls_refusal.lock().unwrap_or_else(PoisonError::into_inner);
        if !probe {
            self.backoff.admit().map_err(|w| match refusal().clone() {
                Some(reason) => ConnError::Tls(reason),
                None => ConnError::Backoff { last: w.last, retry_in: w.retry_in },
            })?;
        }
        let result = self.open(timeout);
        *refusal() = match &result {
            Err(ConnError::Tls(reason)) => Some(reason.clone()),
            _ => None,
        };
        self.backoff.record(result.as_ref().map(|_| ()).map_err(ToString::to_string));
        result
    }

    fn open(&self, timeout: Duration) -> Result<Conn, ConnError> {
        let e = &*self.endpoint;
        let timeout = timeout.min(e.connect_timeout);
        let at = Instant::now() + timeout;
        let tls = e.tls.as_ref().map(|(config, server_name)| TlsParams { config, server_name });
        let mut conn = Conn::open(&e.host, e.port, timeout, e.backstop, tls)?;
        if e.tls.is_some() || e.password.is_some() {
            // The TLS handshake and AUTH share what is left of the connect timeout.
            let watch = self.watchdog.watch(at, conn.socket());
            let result = conn.handshake().and_then(|()| match &e.password {
                Some(password) => conn.auth(e.username.as_deref(), password),
                None => Ok(()),
            });
            if watch.finish().is_some() {
                return Err(ConnError::Timeout);
            }
            result?;
        }
        Ok(conn)
    }

    /// `f` on `conn`, ended by the watchdog at `at` at the latest. Returns the result and, if
    /// the watchdog cut the step, how long after `at` it ended. Any failure other than an error
    /// reply marks the connection broken, so the pool drops it instead of reusing it.
    fn watched<T>(
        &self,
        conn: &mut Conn,
        at: Instant,
        f: impl FnOnce(&mut Conn) -> Result<T, ConnError>,
    ) -> (Result<T, ConnError>, Option<Duration>) {
        let watch = self.watchdog.watch(at, conn.socket());
        let result = f(conn);
        let cut = watch.finish();
        if cut.is_some() {
            // The socket is shut down: whatever was read, the connection is done.
            conn.broken = true;
        }
        let result = match result {
            Err(_) if cut.is_some() => Err(ConnError::Timeout),
            Err(e) => {
                if !matches!(e, ConnError::Reply(_)) {
                    conn.broken = true;
                }
                Err(e)
            }
            ok => ok,
        };
        (result, cut)
    }
}

impl ManageConnection for Manager {
    type Connection = Conn;
    type Error = ConnError;

    fn connect(&self) -> Result<Conn, ConnError> {
        self.connect_within(self.endpoint.connect_timeout, false)
    }

    fn is_valid(&self, conn: &mut Conn) -> Result<(), ConnError> {
        let at = Instant::now() + self.endpoint.connect_timeout;
        self.watched(conn, at, |c| c.query(&redis::cmd("PING").get_packed_command(), SMALL_REPLY)).0.map(|_| ())
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.broken
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

impl r2d2::HandleError<ConnError> for PoolErrors {
    fn handle_error(&self, error: ConnError) {
        // A refill refused by the backoff made no attempt: nothing to count.
        if !matches!(error, ConnError::Backoff { .. }) {
            self.metrics.redis_error(self.pool);
            log::debug!("{} pool: cannot open a connection: {error}", self.pool);
        }
    }
}

/// One role's pool, the manager that opens its connections (for fresh attempts and health
/// checks too, sharing the backoff), and the gate that admits requests to it (one permit per
/// connection).
struct Role {
    name: &'static str,
    pool: Pool<Manager>,
    manager: Manager,
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
    /// `HGET hash field`, packed once.
    hget: Vec<u8>,
    /// `INFO replication persistence`, packed once.
    info: Vec<u8>,
    /// `INFO server`, packed once (the sentinel's `run_id`).
    info_server: Vec<u8>,
    hash: String,
    field: String,
    channel: String,
    /// Largest reply accepted on the request path (`--redis-max-reply`).
    max_reply: usize,
    breaker: Breaker,
    /// Shares value reads among concurrent GETs.
    reads: Coalescer<Fetched>,
    watchdog: Watchdog,
    metrics: Arc<Metrics>,
}

impl Drop for Store {
    fn drop(&mut self) {
        self.watchdog.stop();
    }
}

/// Why the store could not be built.
#[derive(Debug)]
pub enum SetupError {
    Thread(std::io::Error),
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupError::Thread(e) => write!(f, "cannot start the redis watchdog thread: {e}"),
        }
    }
}

impl std::error::Error for SetupError {}

impl Store {
    /// Builds both pools without waiting for Redis (connections open in the background).
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Store, SetupError> {
        let watchdog = Watchdog::start().map_err(SetupError::Thread)?;
        let role = |name: &'static str, endpoint: &RedisEndpoint, size: u32| -> Role {
            let manager = Manager::new(endpoint, config, watchdog.clone());
            let pool = Pool::builder()
                .max_size(size)
                // min_idle defaults to max_size: r2d2 keeps refilling the pool in the
                // background, so requests find warm connections after a Redis restart (its
                // attempts go through the manager's backoff like everyone's).
                // No PING per checkout (it doubles a GET's round trips); failures are caught on
                // use instead and the connection dropped.
                .test_on_check_out(false)
                // Each checkout passes its own timeout from the request's budget.
                .connection_timeout(config.deadline)
                .error_handler(Box::new(PoolErrors { metrics: metrics.clone(), pool: name }))
                .build_unchecked(manager.clone());
            Role { name, pool, manager, gate: Gate::new(size as usize) }
        };
        let mut hget = redis::cmd("HGET");
        hget.arg(&config.redis_hash).arg(&config.redis_field);
        Ok(Store {
            replica: role("replica", &config.read, config.read_pool_size),
            master: role("master", &config.write, config.write_pool_size),
            hget: hget.get_packed_command(),
            info: redis::cmd("INFO").arg("replication").arg("persistence").get_packed_command(),
            info_server: redis::cmd("INFO").arg("server").get_packed_command(),
            hash: config.redis_hash.clone(),
            field: config.redis_field.clone(),
            channel: format!("{}:{}:changed", config.redis_hash, config.redis_field),
            max_reply: config.redis_max_reply,
            breaker: Breaker::new(config.breaker_failures, config.breaker_cooldown),
            reads: Coalescer::default(),
            watchdog,
            metrics,
        })
    }

    /// The current value from the replica, `None` if never set, from a read sent after this
    /// call began. Concurrent calls share reads (see [`coalesce`]): the replica sees about one
    /// read per round trip, however many GETs wait, and the read pool's size stops limiting
    /// GETs. A shared read that failed for lack of its sender's budget (it timed out) is tried
    /// again by callers with budget left.
    pub fn get(&self, deadline: &Deadline, admit: Admit) -> Fetched {
        loop {
            let read = self.reads.read(deadline, |d| {
                self.metrics.value_reads.inc();
                Fetched::now(self.read_value(d, admit))
            });
            let Some((fetched, sent)) = read else {
                return Fetched::now(Err(StoreError::Timeout(WriteEffect::Read)));
            };
            if !sent {
                self.metrics.value_reads_shared.inc();
                // Not a shed: that is instant, and retrying it would spin while overloaded.
                let senders_budget = matches!(fetched.read, Err(StoreError::Timeout(_) | StoreError::BudgetSpent));
                if senders_budget && !deadline.expired() {
                    continue;
                }
            }
            return fetched;
        }
    }

    /// Whether a GET may wait for the next shared read: with `Admit::OrRefuse`, one that
    /// arrives behind a read in flight is refused at once (overloaded) when it would wait for
    /// the rest of that read and then its own (on average two holds of a connection) longer
    /// than its budget (a hung replica): it would only time out. Alone it reads itself, and the
    /// admission gate judges it there.
    pub fn admit_read(&self, deadline: &Deadline, admit: Admit) -> Result<(), StoreError> {
        if admit == Admit::Wait {
            return Ok(());
        }
        let Some(hold) = self.replica.gate.mean_hold() else { return Ok(()) };
        let expected = hold * 2;
        // Every GET takes the coalescer's lock, the gate's only a read's sender: the usual
        // answer (reads are fast) is found without adding to the busier one.
        if deadline.remaining().is_some_and(|budget| expected < budget) || !self.reads.busy() {
            return Ok(());
        }
        let budget = deadline.remaining().ok_or(StoreError::BudgetSpent)?;
        if expected >= budget {
            self.metrics.shed.get_or_create(&PoolLabels { pool: self.replica.name }).inc();
            return Err(StoreError::Shed { expected_wait: expected });
        }
        Ok(())
    }

    /// Like [`Store::get`], but never waits: while a read is in flight, the caller joins the
    /// batch pending behind it and `make` gives the completion that receives the result of
    /// that batch's read (sent after this call, on the thread that sends it). `make` runs only
    /// then (under the coalescer's lock: keep it short) and may decline with `None`. False when
    /// nothing is in flight or `make` declined: read with [`Store::get`] (a lone GET reads
    /// itself, at once). Needs [`Store::start_reader`].
    pub fn get_later(&self, deadline: Deadline, make: impl FnOnce() -> Option<Done<Fetched>>) -> bool {
        self.reads.defer(deadline, || {
            let done = make()?;
            self.metrics.value_reads_deferred.inc();
            let metrics = self.metrics.clone();
            Some(Box::new(move |result| {
                metrics.value_reads_shared.inc();
                done(result)
            }))
        })
    }

    /// Starts the thread that sends the reads of batches whose members are answered later
    /// ([`Store::get_later`]): woken once per batch, it goes on while batches keep coming. It
    /// ends within [`READER_CHECK`] once the store is dropped.
    pub fn start_reader(self: &Arc<Self>) -> std::io::Result<()> {
        let store = Arc::downgrade(self);
        let reader = std::thread::Builder::new().name("redis-reader".into()).spawn(move || {
            loop {
                std::thread::park_timeout(READER_CHECK);
                let Some(store) = store.upgrade() else { return };
                let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    store.reads.serve_deferred(|d| {
                        store.metrics.value_reads.inc();
                        // Not one request's: a shed answers the whole batch at once.
                        Fetched::now(store.read_value(d, Admit::OrRefuse))
                    })
                }));
                if served.is_err() {
                    log::error!("the redis reader panicked; it goes on");
                }
            }
        })?;
        self.reads.set_reader(reader.thread().clone());
        Ok(())
    }

    /// Lets the reader gather each batch while `more_coming` says callers may still join (see
    /// [`GATHER_WINDOW`]), once switched on ([`Store::gather_on`]).
    pub fn gather_reads(&self, more_coming: impl Fn() -> bool + Send + Sync + 'static) {
        self.reads.set_gather(Gather {
            window: GATHER_WINDOW,
            after: GATHER_AFTER,
            more_coming: Box::new(more_coming),
        });
    }

    /// Switches gathering on while the CPU bounds the rate, off while it does not.
    pub fn gather_on(&self, on: bool) {
        self.reads.gather_on(on);
        self.metrics.value_reads_gathering.set(i64::from(on));
    }

    /// One read of the value: one `HGET`; only a nil answer costs more round trips, to tell
    /// "never set" from "replica not synced yet".
    fn read_value(&self, deadline: &Deadline, admit: Admit) -> Result<Option<f64>, StoreError> {
        let max_reply = self.max_reply;
        let hget = || self.run(&self.replica, deadline, admit, WriteEffect::Read, |c| c.query(&self.hget, max_reply));
        let mut value = hget()?;
        if value == Value::Nil {
            let info =
                self.run(&self.replica, deadline, admit, WriteEffect::Read, |c| c.query(&self.info, INFO_MAX_REPLY))?;
            let info = ReplicaInfo::parse(&text(&info, "replica")?);
            if info.is_replica() && !info.has_synced() {
                return Err(StoreError::NotSynced);
            }
            // The sync may have completed between the HGET and the INFO: only a nil read after
            // a synced INFO means "never set".
            if info.is_replica() {
                value = hget()?;
            }
        }
        match value {
            Value::Nil => Ok(None),
            Value::Bulk(bytes) => number(&bytes)
                .map(Some)
                .ok_or_else(|| StoreError::BadData { reason: self.not_a_number(), outcome: WriteEffect::Read }),
            other => Err(StoreError::Unavailable {
                reason: format!("the replica answered HGET with an unexpected reply: {other:?}"),
                outcome: WriteEffect::Read,
            }),
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
        let result = self.run(&self.master, deadline, admit, WriteEffect::Unknown, |c| transaction(c, &packed));
        self.breaker.record(result.as_ref().err().map_or(Verdict::Answered, StoreError::verdict));
        self.metrics.breaker_state.set(self.breaker.level() as i64);
        result
    }

    /// The channel change notices are published on.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Runs `f` on a pooled connection within the budget; on a connection failure (not a
    /// timeout) retries once on a fresh connection if the budget allows.
    fn run<T>(
        &self,
        role: &Role,
        deadline: &Deadline,
        admit: Admit,
        outcome: WriteEffect,
        f: impl Fn(&mut Conn) -> Result<T, ConnError>,
    ) -> Result<T, StoreError> {
        let not_sent = if outcome == WriteEffect::Read { WriteEffect::Read } else { WriteEffect::NotWritten };
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
            return self.fresh_attempt(role, deadline, outcome, not_sent, &f);
        }
        // r2d2 waits on a condvar, a precise timer: the budget as it is.
        let first_err = match role.pool.get_timeout(budget) {
            Ok(mut conn) => match self.attempt(role, &mut conn, deadline, &f) {
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
            return Err(classify(first_err, role.name, outcome, not_sent));
        }
        // The pooled connection was dead (e.g. Redis restarted): one fresh try if time allows.
        // Whatever happens now, a write's first attempt may have been applied.
        self.fresh_attempt(role, deadline, outcome, outcome, &f)
    }

    /// `f` on a new, unpooled connection. `unsent`: what a failure before the command was sent
    /// means for a write.
    fn fresh_attempt<T>(
        &self,
        role: &Role,
        deadline: &Deadline,
        outcome: WriteEffect,
        unsent: WriteEffect,
        f: &impl Fn(&mut Conn) -> Result<T, ConnError>,
    ) -> Result<T, StoreError> {
        let budget = deadline.remaining().ok_or(StoreError::Timeout(unsent))?;
        let mut conn = role.manager.connect_within(budget, false).map_err(|e| {
            self.metrics.redis_error(role.name);
            if deadline.expired() { StoreError::Timeout(unsent) } else { classify(e, role.name, unsent, unsent) }
        })?;
        self.attempt(role, &mut conn, deadline, f).map_err(|e| {
            self.metrics.redis_error(role.name);
            classify(e, role.name, outcome, unsent)
        })
    }

    /// One step on `conn`, cut by the watchdog at the deadline.
    fn attempt<T>(
        &self,
        role: &Role,
        conn: &mut Conn,
        deadline: &Deadline,
        f: &impl Fn(&mut Conn) -> Result<T, ConnError>,
    ) -> Result<T, ConnError> {
        let Some(left) = deadline.remaining() else { return Err(ConnError::Timeout) };
        let (result, cut) = role.manager.watched(conn, Instant::now() + left, f);
        if let Some(late) = cut {
            self.metrics.redis_steps_cut.get_or_create(&PoolLabels { pool: role.name }).inc();
            self.metrics.redis_cut_lateness.observe(late.as_secs_f64());
        }
        result
    }

    /// What GET's `HGET` would meet on the local replica, with its `INFO` state, on one fresh
    /// connection (not the pool: the clients' queue and the admission gate's estimates stay
    /// theirs). For the health watch.
    pub fn replica_check(&self) -> Result<(ReplicaInfo, ReadProbe), ConnError> {
        let at = Instant::now() + HEALTH_TIMEOUT;
        let m = &self.replica.manager;
        let mut conn = m.connect_within(HEALTH_TIMEOUT, true)?;
        let info = match m.watched(&mut conn, at, |c| c.query(&self.info, INFO_MAX_REPLY)).0? {
            Value::Bulk(bytes) => ReplicaInfo::parse(&String::from_utf8_lossy(&bytes)),
            _ => return Err(ConnError::Protocol("INFO answered with something other than text")),
        };
        // A number is a few bytes: a larger reply is left unread (the check must not cost a
        // copy of a huge value every interval); only what GET itself refuses is bad data.
        let probe = match m.watched(&mut conn, at, |c| c.query(&self.hget, SMALL_REPLY)).0 {
            Ok(Value::Nil) => ReadProbe::Pass,
            Ok(Value::Bulk(bytes)) if number(&bytes).is_some() => ReadProbe::Pass,
            Ok(Value::Bulk(_)) => ReadProbe::BadData(self.not_a_number()),
            Ok(other) => ReadProbe::Fail(format!("HGET answered {other:?}")),
            Err(ConnError::TooLarge { size, .. }) if size <= self.max_reply as u64 => {
                ReadProbe::BadData(self.not_a_number())
            }
            Err(ConnError::TooLarge { size, .. }) => ReadProbe::BadData(format!(
                "the stored value is {size} bytes, larger than {} bytes (--redis-max-reply)",
                self.max_reply
            )),
            Err(e) if e.code() == Some("WRONGTYPE") => ReadProbe::BadData(e.to_string()),
            Err(e @ ConnError::Reply(_)) => ReadProbe::Fail(e.to_string()),
            Err(_) => ReadProbe::Inconclusive,
        };
        Ok((info, probe))
    }

    fn not_a_number(&self) -> String {
        format!("the value stored in redis (hash {:?}, field {:?}) is not a number", self.hash, self.field)
    }

    /// Whether the master answers `PING`.
    pub fn master_ping(&self) -> Result<(), ConnError> {
        let at = Instant::now() + HEALTH_TIMEOUT;
        let m = &self.master.manager;
        let mut conn = m.connect_within(HEALTH_TIMEOUT, true)?;
        m.watched(&mut conn, at, |c| c.query(&redis::cmd("PING").get_packed_command(), SMALL_REPLY)).0.map(|_| ())
    }
}

/// What the `HGET` GET sends met, as the health watch runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadProbe {
    /// GET would be served: a number, or no value yet.
    Pass,
    /// GET fails because of the data, which every pod shares (not a number, too large, the key
    /// holds another type): no pod can fix it by restarting, so readiness stays; GET is 500.
    BadData(String),
    /// This replica refuses the command (renamed, no permission, loading, ...): GET fails here.
    Fail(String),
    /// Timed out, or the connection failed: says nothing about the command.
    Inconclusive,
}

/// The stored text as a finite number.
fn number(bytes: &[u8]) -> Option<f64> {
    std::str::from_utf8(bytes).ok().and_then(|t| t.trim().parse::<f64>().ok()).filter(|v| v.is_finite())
}

/// Sends a packed `MULTI`/`HSET`/`PUBLISH`/`EXEC` and reads its four replies, all of them even
/// after an error reply so the connection stays in step; then the first error, if any (inside
/// `EXEC`'s array too: `WRONGTYPE` is only found when `HSET` runs).
fn transaction(conn: &mut Conn, packed: &[u8]) -> Result<(), ConnError> {
    conn.send(packed)?;
    let mut first_error = None;
    for _ in 0..4 {
        let reply = conn.read(SMALL_REPLY)?;
        let error = match reply {
            Value::Error(e) => Some(e),
            Value::Array(items) => items.into_iter().find_map(|v| match v {
                Value::Error(e) => Some(e),
                _ => None,
            }),
            _ => None,
        };
        if first_error.is_none() {
            first_error = error;
        }
    }
    first_error.map_or(Ok(()), |e| Err(ConnError::Reply(e)))
}

/// The text of a bulk string reply.
fn text(value: &Value, pool: &str) -> Result<String, StoreError> {
    match value {
        Value::Bulk(bytes) => Ok(String::from_utf8_lossy(bytes).into_owned()),
        other => Err(StoreError::Unavailable {
            reason: format!("the {pool} answered INFO with an unexpected reply: {other:?}"),
            outcome: WriteEffect::Read,
        }),
    }
}

/// A dead connection (reset, refused, closed) is worth one retry on a fresh one; a timeout
/// (the budget is gone), an error reply or an oversized reply is not.
fn retryable(e: &ConnError) -> bool {
    matches!(e, ConnError::Io(_))
}

/// What a failure means for the request. `outcome`: for a write whose command may have been
/// sent; `refused`: for a write Redis refused.
fn classify(e: ConnError, pool: &'static str, outcome: WriteEffect, refused: WriteEffect) -> StoreError {
    match e {
        ConnError::Timeout => StoreError::Timeout(outcome),
        ConnError::Io(e) => StoreError::Unavailable { reason: format!("{pool} connection failed: {e}"), outcome },
        ConnError::Protocol(what) => {
            StoreError::Unavailable { reason: format!("{pool} sent a malformed reply ({what})"), outcome }
        }
        ConnError::Auth(text) => {
            StoreError::Unavailable { reason: format!("{pool} refused the credentials: {text}"), outcome: refused }
        }
        // Nothing was sent: a refused handshake carries no command.
        ConnError::Tls(reason) => StoreError::TlsRefused {
            reason: format!("TLS to the {pool} refused: {reason} (check --redis-tls-* and the server's certificate)"),
            outcome: refused,
        },
        ConnError::Backoff { last, retry_in } => StoreError::Unavailable {
            reason: format!("{pool} connection failed: {last}; the next attempt is in {:.1}s", retry_in.as_secs_f64()),
            outcome: refused,
        },
        ConnError::TooLarge { size, limit } => StoreError::BadData {
            reason: format!(
                "the stored value is larger than {limit} bytes (--redis-max-reply): the {pool} sent a {size}-byte reply"
            ),
            outcome,
        },
        ConnError::Reply(text) => {
            let code = text.split_whitespace().next().unwrap_or_default();
            let not_serving = |reason: String| StoreError::NotServing { reason, outcome: refused };
            match code {
                "LOADING" => not_serving(format!("{pool} is loading its dataset")),
                "MASTERDOWN" => not_serving(format!("{pool} has lost its master")),
                "READONLY" => {
                    log::warn!("the {pool} address points to a read-only replica; writes need the master");
                    not_serving(format!("{pool} is a read-only replica"))
                }
                _ => {
                    StoreError::BadData { reason: format!("the {pool} refused the command: {text}"), outcome: refused }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
