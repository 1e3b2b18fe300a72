//! The Prometheus registry: every counter, gauge and histogram the server exports at
//! `/metrics`, encoded by `prometheus-client` (no hand-formatted exposition text).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Latency buckets in seconds: fine below 5 ms where a healthy request lands, up to past the
/// deadline so expirations are visible.
const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.5, 1.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: &'static str,
}

/// Buckets of how late past its deadline a step cut by the watchdog ended, in seconds: the
/// first (0) holds the steps that ended by their deadline.
const CUT_LATENESS_BUCKETS: [f64; 7] = [0.0, 0.001, 0.002, 0.005, 0.01, 0.05, 0.5];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// All metrics of one server process.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub in_flight: Gauge,
    pub open_connections: Gauge,
    pub workers: Gauge,
    pub http_paced: Gauge,
    pub value_reads_gathering: Gauge,
    pub refused_connections: Counter,
    pub displaced_connections: Counter,
    pub accept_errors: Counter,
    pub redis_errors: Family<PoolLabels, Counter>,
    pub shed: Family<PoolLabels, Counter>,
    pub deadline_expired: Counter,
    pub replica_link_up: Gauge,
    pub replica_ready: Gauge,
    pub master_reachable: Gauge,
    pub memory_subscribed: Gauge,
    pub memory_notices: Counter,
    pub memory_value_age: Gauge<f64, AtomicU64>,
    pub memory_reads: Family<SourceLabels, Counter>,
    pub breaker_state: Gauge,
    pub writes_refused: Counter,
    pub value_reads: Counter,
    pub value_reads_shared: Counter,
    pub value_reads_deferred: Counter,
    pub redis_steps_cut: Family<PoolLabels, Counter>,
    pub redis_cut_lateness: Histogram,
    pub value_age: Gauge<f64, AtomicU64>,
    /// The series of the most common answer (`value`, 200) and of memory mode's two sources,
    /// looked up once: a family's lookup is a lock and a hash per request.
    value_ok: OnceLock<(Counter, Histogram)>,
    memory_source: [OnceLock<Counter>; 2],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("redis_api"),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            in_flight: Gauge::default(),
            open_connections: Gauge::default(),
            workers: Gauge::default(),
            http_paced: Gauge::default(),
            value_reads_gathering: Gauge::default(),
            refused_connections: Counter::default(),
            displaced_connections: Counter::default(),
            accept_errors: Counter::default(),
            redis_errors: Family::default(),
            shed: Family::default(),
            deadline_expired: Counter::default(),
            replica_link_up: Gauge::default(),
            replica_ready: Gauge::default(),
            master_reachable: Gauge::default(),
            memory_subscribed: Gauge::default(),
            memory_notices: Counter::default(),
            memory_value_age: Gauge::default(),
            memory_reads: Family::default(),
            breaker_state: Gauge::default(),
            writes_refused: Counter::default(),
            value_reads: Counter::default(),
            value_reads_shared: Counter::default(),
            value_reads_deferred: Counter::default(),
            redis_steps_cut: Family::default(),
            redis_cut_lateness: Histogram::new(CUT_LATENESS_BUCKETS),
            value_age: Gauge::default(),
            value_ok: OnceLock::new(),
            memory_source: [OnceLock::new(), OnceLock::new()],
        };
        // Both pools' series exist from the start, at zero.
        for pool in ["replica", "master"] {
            let _ = m.redis_errors.get_or_create(&PoolLabels { pool });
            let _ = m.shed.get_or_create(&PoolLabels { pool });
            let _ = m.redis_steps_cut.get_or_create(&PoolLabels { pool });
        }
        let r = &mut m.registry;
        r.register("http_requests", "HTTP requests answered, by route and status", m.requests.clone());
        r.register(
            "http_request_duration_seconds",
            "Time from a request's first byte to its answer written",
            m.latency.clone(),
        );
        r.register("http_requests_in_flight", "Requests being handled now", m.in_flight.clone());
        r.register("http_connections_open", "Client connections open now", m.open_connections.clone());
        r.register("http_workers", "Worker threads alive, serving or idle", m.workers.clone());
        r.register(
            "http_paced",
            "1 while the CPU quota throttles the process and workers read their next requests in turns",
            m.http_paced.clone(),
        );
        r.register(
            "value_reads_gathering",
            "1 while every CPU of the machine is busy (and the port is not paced) and shared reads gather bigger batches",
            m.value_reads_gathering.clone(),
        );
        r.register(
            "http_connections_refused",
            "Connections refused at the connection cap with every slot busy (503 after their request, or closed unanswered)",
            m.refused_connections.clone(),
        );
        r.register(
            "http_connections_displaced",
            "Idle or slow-sending connections closed at the cap to make room for a new one",
            m.displaced_connections.clone(),
        );
        r.register(
            "http_accept_errors",
            "accept() failures survived (EMFILE, ECONNABORTED, ...)",
            m.accept_errors.clone(),
        );
        r.register("redis_errors", "Redis command or connection failures, by pool", m.redis_errors.clone());
        r.register(
            "shed",
            "Requests answered 503 at once because the queue for the pool would outlast their deadline",
            m.shed.clone(),
        );
        r.register(
            "deadline_expired",
            "Requests answered 503/504 because their deadline ran out",
            m.deadline_expired.clone(),
        );
        r.register("replica_link_up", "1 when the local replica's link to its master is up", m.replica_link_up.clone());
        r.register("ready", "1 when /readyz answers 200", m.replica_ready.clone());
        r.register("master_reachable", "1 when the master answered the last health check", m.master_reachable.clone());
        r.register(
            "memory_subscribed",
            "Memory mode: 1 while subscribed to change notices",
            m.memory_subscribed.clone(),
        );
        r.register("memory_notices", "Memory mode: change notices received", m.memory_notices.clone());
        r.register("memory_value_age_seconds", "Memory mode: age of the in-memory copy", m.memory_value_age.clone());
        r.register(
            "master_breaker_state",
            "Writes' circuit breaker: 0 closed, 1 open, 2 half-open",
            m.breaker_state.clone(),
        );
        r.register(
            "writes_refused",
            "POSTs refused at once because the master's circuit was open",
            m.writes_refused.clone(),
        );
        r.register(
            "value_reads",
            "Reads of the value sent to the replica (each serves every GET that waited for it)",
            m.value_reads.clone(),
        );
        r.register(
            "value_reads_shared",
            "Value reads a caller took from a read another caller sent (coalesced)",
            m.value_reads_shared.clone(),
        );
        r.register(
            "value_reads_deferred",
            "GETs that joined a read pending behind another and left their answer to its sender, without waiting",
            m.value_reads_deferred.clone(),
        );
        r.register(
            "redis_steps_cut",
            "Redis steps ended by the deadline watchdog (socket shut down at the request's deadline), by pool",
            m.redis_steps_cut.clone(),
        );
        r.register(
            "redis_cut_lateness_seconds",
            "Steps cut by the deadline watchdog: how long after the request's deadline each ended (0: by it)",
            m.redis_cut_lateness.clone(),
        );
        r.register(
            "value_age_seconds",
            "Seconds since the local replica last heard from its master (0 while in sync; -1 before its first sync); GET's Age header",
            m.value_age.clone(),
        );
        r.register(
            "memory_reads",
            "Memory mode: GETs by where the value came from (memory, replica)",
            m.memory_reads.clone(),
        );
        m
    }

    /// Records one answered request.
    pub fn observe(&self, route: &'static str, status: u16, elapsed: Duration) {
        if (route, status) == ("value", 200) {
            let (count, latency) = self.value_ok.get_or_init(|| {
                let count = self.requests.get_or_create(&RequestLabels { route, status }).clone();
                (count, self.latency.get_or_create(&RouteLabels { route }).clone())
            });
            count.inc();
            latency.observe(elapsed.as_secs_f64());
            return;
        }
        self.requests.get_or_create(&RequestLabels { route, status }).inc();
        self.latency.get_or_create(&RouteLabels { route }).observe(elapsed.as_secs_f64());
    }

    /// Counts a memory-mode GET by where its value came from: the copy in memory, or the
    /// replica (the copy was not fresh).
    pub fn memory_read(&self, from_memory: bool) {
        let source = if from_memory { "memory" } else { "replica" };
        let counter = self.memory_source[usize::from(from_memory)]
            .get_or_init(|| self.memory_reads.get_or_create(&SourceLabels { source }).clone());
        counter.inc();
    }

    pub fn redis_error(&self, pool: &'static str) {
        self.redis_errors.get_or_create(&PoolLabels { pool }).inc();
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The HTTP layer's events, counted in this registry (both ports' servers report here).
impl http1::Observer for Metrics {
    fn event(&self, event: http1::Event) {
        use http1::Event::*;
        match event {
            Answered { route, status, elapsed } => self.observe(route, status, elapsed),
            RequestStarted => {
                self.in_flight.inc();
            }
            RequestFinished => {
                self.in_flight.dec();
            }
            ConnectionOpened => {
                self.open_connections.inc();
            }
            ConnectionClosed => {
                self.open_connections.dec();
            }
            WorkerStarted => {
                self.workers.inc();
            }
            WorkerStopped => {
                self.workers.dec();
            }
            Displaced => {
                self.displaced_connections.inc();
            }
            Refused => {
                self.refused_connections.inc();
            }
            AcceptError => {
                self.accept_errors.inc();
            }
            DeadlineExpired => {
                self.deadline_expired.inc();
            }
        }
    }
}
