//! The load generator: open loop at a constant rate. A scheduler computes each request's
//! intended send time (start + k / rate) and hands it to a bounded set of connections; latency
//! is measured from the intended time, so a slow target shows up as latency and timeouts
//! instead of silently lowering the offered rate (no coordinated omission).

use crate::client::{Answer, Client, Failure, Target};
use crate::stats::{self, GeneratorReport, Interval, LatencyMs};
use crossbeam_channel::{Receiver, RecvTimeoutError, TrySendError};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Seconds of intervals a long-running (pod mode) generator keeps.
pub const KEEP_SECONDS: u64 = 120;
/// Queued requests allowed per connection before new ones count as `overflow` failures.
const QUEUE_PER_CONNECTION: usize = 64;

/// What to attack and how.
#[derive(Debug, Clone)]
pub struct Config {
    pub targets: Vec<Target>,
    /// Requests per second.
    pub rate: f64,
    /// `None`: until stopped.
    pub duration: Option<Duration>,
    pub timeout: Duration,
    pub connections: usize,
    /// Share of POSTs (0.0 to 1.0); the rest are GETs.
    pub post_ratio: f64,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: String,
}

/// Prometheus counters of a generator (monotonic, unlike the kept intervals).
#[derive(Clone)]
pub struct LoadgenMetrics {
    pub offered: Counter,
    pub completed: Family<CodeLabels, Counter>,
    pub latency: Histogram,
}

impl Default for LoadgenMetrics {
    fn default() -> Self {
        LoadgenMetrics {
            offered: Counter::default(),
            completed: Family::default(),
            // 100 µs to ~50 s.
            latency: Histogram::new(exponential_buckets(0.0001, 2.0, 20)),
        }
    }
}

impl LoadgenMetrics {
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("loadgen");
        r.register("offered", "Requests due to be sent", self.offered.clone());
        r.register("completed", "Requests completed, by status code or failure kind", self.completed.clone());
        r.register("latency_seconds", "Latency from the intended send time", self.latency.clone());
        r
    }
}

/// Results by second, shared by the connections and the report.
pub struct Recorder {
    intervals: Mutex<BTreeMap<u64, Interval>>,
    /// The first message of each failure kind (e.g. `connect` → "Connection refused (os error
    /// 111)"): the reason a report can name.
    reasons: Mutex<BTreeMap<String, String>>,
    /// `None`: keep everything (a bounded CLI run).
    keep: Option<u64>,
    pub metrics: LoadgenMetrics,
}

impl Recorder {
    pub fn new(keep: Option<u64>) -> Recorder {
        Recorder {
            intervals: Mutex::new(BTreeMap::new()),
            reasons: Mutex::new(BTreeMap::new()),
            keep,
            metrics: LoadgenMetrics::default(),
        }
    }

    fn with<R>(&self, t: u64, f: impl FnOnce(&mut Interval) -> R) -> R {
        let mut map = self.intervals.lock().unwrap_or_else(PoisonError::into_inner);
        let r = f(map.entry(t).or_insert_with(|| Interval::new(t)));
        if let Some(keep) = self.keep {
            while map.len() as u64 > keep {
                map.pop_first();
            }
        }
        r
    }

    /// Completed seconds (before `now`), oldest first.
    pub fn completed_intervals(&self, now: u64) -> Vec<Interval> {
        let map = self.intervals.lock().unwrap_or_else(PoisonError::into_inner);
        map.range(..now).map(|(_, i)| i.clone()).collect()
    }

    /// Everything recorded, merged into one.
    pub fn total(&self) -> Interval {
        let map = self.intervals.lock().unwrap_or_else(PoisonError::into_inner);
        let mut total = Interval::new(0);
        for i in map.values() {
            total.merge(i);
        }
        total
    }

    /// Second `t`, if anything was recorded in it.
    pub fn interval(&self, t: u64) -> Option<Interval> {
        self.intervals.lock().unwrap_or_else(PoisonError::into_inner).get(&t).cloned()
    }

    /// The first message of each failure kind seen.
    pub fn reasons(&self) -> BTreeMap<String, String> {
        self.reasons.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Sink for Recorder {
    fn offered(&self, second: u64) {
        self.metrics.offered.inc();
        self.with(second, |i| i.offered += 1);
    }

    fn completed(&self, done: &Done<'_>) {
        let latency = done.latency();
        let code = match done.result {
            Ok(a) => a.status.to_string(),
            Err(kind) => kind.to_owned(),
        };
        self.metrics.completed.get_or_create(&CodeLabels { code }).inc();
        self.metrics.latency.observe(latency.as_secs_f64());
        if let (Err(kind), Some(reason)) = (done.result, done.reason) {
            let mut reasons = self.reasons.lock().unwrap_or_else(PoisonError::into_inner);
            if !reasons.contains_key(kind) {
                reasons.insert(kind.to_owned(), reason.to_owned());
            }
        }
        self.with(done.second, |i| {
            i.record_latency(latency);
            match done.result {
                Ok(a) => *i.codes.entry(a.status).or_default() += 1,
                Err(kind) => *i.errors.entry(kind.into()).or_default() += 1,
            }
        });
    }
}

/// One request finished: answered or failed.
pub struct Done<'a> {
    /// Unix second it finished in.
    pub second: u64,
    /// When it was due (the open loop's schedule).
    pub intended: Instant,
    /// When it was handed to a connection (`intended` plus any wait for a free one).
    pub sent: Instant,
    pub finished: Instant,
    pub post: bool,
    /// The answer, or the kind of failure (`connect`, `timeout`, `io`, `bad_response`,
    /// `overflow`).
    pub result: Result<&'a Answer, &'static str>,
    /// A failure's message, when it has one (e.g. "Connection refused (os error 111)").
    pub reason: Option<&'a str>,
}

impl Done<'_> {
    /// Latency from the intended send time (what a user of an open-loop client sees).
    pub fn latency(&self) -> Duration {
        self.finished.saturating_duration_since(self.intended)
    }

    /// Latency from the hand-over to a connection (what the target and the network cost).
    pub fn service(&self) -> Duration {
        self.finished.saturating_duration_since(self.sent)
    }
}

/// Where results go: the [`Recorder`] of the kit's reports, or a caller's own (the chaos
/// suite splits them by method and status).
pub trait Sink: Send + Sync {
    /// A request became due in unix second `second`.
    fn offered(&self, second: u64);
    fn completed(&self, done: &Done<'_>);
}

/// The message of a failure that carries one.
fn failure_reason(f: &Failure) -> Option<&str> {
    match f {
        Failure::Connect(e) | Failure::Io(e) | Failure::BadResponse(e) => Some(e),
        Failure::Timeout => None,
    }
}

fn failure_kind(f: &Failure) -> &'static str {
    match f {
        Failure::Connect(_) => "connect",
        Failure::Timeout => "timeout",
        Failure::Io(_) => "io",
        Failure::BadResponse(_) => "bad_response",
    }
}

/// A request due at `intended`.
struct Job {
    intended: Instant,
    post: bool,
}

/// Maps an `Instant` to a unix second, from one reading of both clocks.
#[derive(Clone, Copy)]
struct Clock {
    start: Instant,
    unix_start: f64,
}

impl Clock {
    fn now() -> Clock {
        let unix_start = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        Clock { start: Instant::now(), unix_start }
    }

    fn second(&self, at: Instant) -> u64 {
        (self.unix_start + at.saturating_duration_since(self.start).as_secs_f64()) as u64
    }
}

/// Timing of a finished run.
#[derive(Debug, Clone, Copy)]
pub struct RunTimes {
    /// The sending window: from the start to the end of the duration (or to the stop), so
    /// that `sent / attack` is the rate sent even when only one request fitted in it.
    pub attack: Duration,
    /// From the end of the window to the last answer.
    pub wait: Duration,
    pub sent: u64,
}

/// Runs the attack until its duration ends or `stop` fires; returns when every request sent
/// has completed (answered or timed out).
pub fn run(cfg: &Config, recorder: &Arc<Recorder>, stop: &Receiver<()>) -> RunTimes {
    run_with(cfg, recorder.clone(), QUEUE_PER_CONNECTION, stop)
}

/// [`run`] into any [`Sink`], with `queue_per_connection` requests allowed to wait for a
/// connection (1 keeps the wait short, so latency from the intended time stays close to the
/// target's; the rest of an overload counts as `overflow`).
pub fn run_with<S: Sink + 'static>(
    cfg: &Config,
    sink: Arc<S>,
    queue_per_connection: usize,
    stop: &Receiver<()>,
) -> RunTimes {
    let connections = cfg.connections.max(1);
    let (tx, rx) = crossbeam_channel::bounded::<Job>(connections * queue_per_connection.max(1));
    let clock = Clock::now();
    let mut workers = Vec::with_capacity(connections);
    for w in 0..connections {
        let rx = rx.clone();
        let sink = sink.clone();
        let cfg = cfg.clone();
        workers.push(std::thread::spawn(move || {
            let mut clients: Vec<Client> = cfg.targets.iter().map(|t| Client::new(t.clone(), cfg.timeout)).collect();
            let mut next = w % clients.len().max(1);
            let mut value = 1.0 + w as f64 / 100.0;
            for job in rx.iter() {
                let client = &mut clients[next];
                next = (next + 1) % cfg.targets.len();
                let sent = Instant::now();
                let result = if job.post {
                    value = if value > 1000.0 { 1.0 } else { value + 0.01 };
                    client.request("POST", Some(format!("{{\"value\": {value:.2}}}").as_bytes()))
                } else {
                    client.request("GET", None)
                };
                let finished = Instant::now();
                sink.completed(&Done {
                    second: clock.second(finished),
                    intended: job.intended,
                    sent,
                    finished,
                    post: job.post,
                    result: result.as_ref().map_err(failure_kind),
                    reason: result.as_ref().err().and_then(failure_reason),
                });
            }
        }));
    }
    drop(rx);
    let interval = Duration::from_secs_f64(1.0 / cfg.rate.max(0.001));
    let end = cfg.duration.map(|d| clock.start + d);
    let mut sent: u64 = 0;
    // Where the sending window closed: the end of the duration, or the stop.
    let mut closed = end;
    // Deterministic mix: request k is a POST when the running share falls below post_ratio.
    let mut posts: u64 = 0;
    loop {
        let intended = clock.start + interval.mul_f64(sent as f64);
        if let Some(e) = end.filter(|&e| intended >= e) {
            // The window lasts to its end: sleep out the rest (a stop ends it sooner).
            match stop.recv_timeout(e.saturating_duration_since(Instant::now())) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => closed = Some(Instant::now().min(e)),
            }
            break;
        }
        let now = Instant::now();
        if intended > now {
            match stop.recv_timeout(intended - now) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                    closed = Some(Instant::now());
                    break;
                }
            }
        } else if sent.is_multiple_of(1024) && !stop.is_empty() {
            closed = Some(Instant::now());
            break;
        }
        let post = (posts as f64) < cfg.post_ratio * (sent + 1) as f64;
        posts += u64::from(post);
        sink.offered(clock.second(intended));
        if let Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) = tx.try_send(Job { intended, post }) {
            // Every connection is busy and the queue is full: the request is offered but never
            // sent, and counts as a failure so the shortfall is visible.
            let now = Instant::now();
            let second = clock.second(now);
            let (intended, post) = (job.intended, job.post);
            let result = Err("overflow");
            sink.completed(&Done { second, intended, sent: now, finished: now, post, result, reason: None });
        }
        sent += 1;
    }
    drop(tx);
    for w in workers {
        let _ = w.join();
    }
    let closed = closed.unwrap_or_else(Instant::now);
    RunTimes { attack: closed.saturating_duration_since(clock.start), wait: closed.elapsed(), sent }
}

/// The `GET /` answer of a generator in pod mode: the completed seconds, or every second
/// once the attack has `finished` (its last, partial second is complete then: nothing more
/// will land in it, and the aggregator must get it before the generator exits).
pub fn report_json(cfg: &Config, recorder: &Recorder, finished: bool) -> GeneratorReport {
    let before = if finished { u64::MAX } else { stats::unix_now() };
    GeneratorReport {
        name: cfg.name.clone(),
        rate: cfg.rate,
        targets: cfg.targets.iter().map(|t| format!("http://{}{}", t.host, t.path)).collect(),
        intervals: recorder.completed_intervals(before).iter().map(Interval::to_wire).collect(),
    }
}

/// Runs shorter than this print no progress: their report comes soon enough.
pub const PROGRESS_AFTER: Duration = Duration::from_secs(10);

/// The progress line printed once a second while a long attack runs on a terminal: elapsed
/// (and left, for a bounded run), then the last completed second's rate, success and p99.
pub fn progress_line(elapsed: Duration, duration: Option<Duration>, last: Option<&Interval>) -> String {
    let secs = elapsed.as_secs();
    let time = match duration {
        Some(d) => format!("{secs:>4} s of {} s, {} s left", d.as_secs(), d.saturating_sub(elapsed).as_secs()),
        None => format!("{secs:>4} s (until stopped)"),
    };
    let Some(i) = last.filter(|i| i.offered > 0 || i.completed() > 0) else {
        return format!("{time}  no second completed yet");
    };
    let done = i.completed();
    let success = if done > 0 { format!("{:.2} %", i.ok() as f64 * 100.0 / done as f64) } else { "–".into() };
    let p99 = if i.hist.is_empty() { "–".into() } else { format!("{:.2} ms", i.latency_ms().p99) };
    format!("{time}  rate {done}/s (offered {}/s)  success {success}  p99 {p99}", i.offered)
}

/// Prints [`progress_line`] to stderr once a second (the last completed second) until `done`
/// fires; the caller decides whether stderr is a terminal and the run long enough.
pub fn print_progress(recorder: &Recorder, duration: Option<Duration>, done: &Receiver<()>) {
    let start = Instant::now();
    // Bounded: a run ends, and the caller drops or fires `done` then.
    for k in 1u64.. {
        let next = start + Duration::from_secs(k);
        match done.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let last = recorder.interval(stats::unix_now().saturating_sub(1));
        eprintln!("{}", progress_line(start.elapsed(), duration, last.as_ref()));
    }
}

/// The end-of-run report, like vegeta's.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub requests: u64,
    /// Sent per second over the attack.
    pub rate: f64,
    /// Successful answers per second over attack + wait.
    pub throughput: f64,
    pub offered_rate: f64,
    pub duration_s: f64,
    pub attack_s: f64,
    pub wait_s: f64,
    pub success_ratio: f64,
    pub latency_ms: LatencyMs,
    pub status_codes: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    /// The first message of each failure kind (see [`Recorder::reasons`]).
    pub error_reasons: BTreeMap<String, String>,
}

impl Report {
    pub fn new(cfg: &Config, times: RunTimes, total: &Interval) -> Report {
        let completed = total.completed();
        let attack = times.attack.as_secs_f64();
        let duration = attack + times.wait.as_secs_f64();
        Report {
            requests: completed,
            rate: if attack > 0.0 { times.sent as f64 / attack } else { 0.0 },
            throughput: if duration > 0.0 { total.ok() as f64 / duration } else { 0.0 },
            offered_rate: cfg.rate,
            duration_s: duration,
            attack_s: attack,
            wait_s: times.wait.as_secs_f64(),
            success_ratio: if completed > 0 { total.ok() as f64 / completed as f64 } else { 0.0 },
            latency_ms: total.latency_ms(),
            status_codes: total.codes.iter().map(|(c, n)| (c.to_string(), *n)).collect(),
            errors: total.errors.clone(),
            error_reasons: BTreeMap::new(),
        }
    }

    /// The report naming why requests failed: `reasons` as [`Recorder::reasons`].
    pub fn with_reasons(mut self, reasons: BTreeMap<String, String>) -> Report {
        self.error_reasons = reasons;
        self
    }

    /// Why no request got an answer, when none did: the target is unreachable, not slow.
    pub fn unreachable(&self) -> Option<String> {
        if self.requests == 0 || !self.status_codes.is_empty() {
            return None;
        }
        let why: Vec<String> = self
            .errors
            .iter()
            .map(|(kind, n)| match self.error_reasons.get(kind) {
                Some(reason) => format!("{kind} ({reason}): {n}"),
                None => format!("{kind}: {n}"),
            })
            .collect();
        Some(format!("no request got an answer: {}", why.join(", ")))
    }

    pub fn text(&self) -> String {
        let l = &self.latency_ms;
        let codes: Vec<String> = self.status_codes.iter().map(|(c, n)| format!("{c}:{n}")).collect();
        let mut out = format!(
            "Requests      [total, rate, throughput]         {}, {:.2}, {:.2}\n\
             Offered rate  [req/s]                           {:.2}\n\
             Duration      [total, attack, wait]           {:.3}s, {:.3}s, {:.3}ms\n\
             Latencies     [mean, 50, 90, 99, max] (ms)    {:.3}, {:.3}, {:.3}, {:.3}, {:.3}\n\
             Success       [ratio]                         {:.2}%\n\
             Status Codes  [code:count]                    {}\n\
             Error Set:\n",
            self.requests,
            self.rate,
            self.throughput,
            self.offered_rate,
            self.duration_s,
            self.attack_s,
            self.wait_s * 1000.0,
            l.mean,
            l.p50,
            l.p90,
            l.p99,
            l.max,
            self.success_ratio * 100.0,
            codes.join("  "),
        );
        for (e, n) in &self.errors {
            match self.error_reasons.get(e) {
                Some(reason) => out.push_str(&format!("{e}: {n} ({reason})\n")),
                None => out.push_str(&format!("{e}: {n}\n")),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The progress line: time elapsed and left, the last second's rate (achieved and offered),
    /// success and p99; an attack until stopped has no time left; before any second, says so.
    #[test]
    fn progress_line_formatting() {
        let mut i = Interval::new(7);
        i.offered = 1000;
        for k in 0..978u64 {
            *i.codes.entry(200).or_default() += 1;
            i.record_latency(Duration::from_micros(1000 + k));
        }
        for _ in 0..20 {
            *i.codes.entry(503).or_default() += 1;
            i.record_latency(Duration::from_millis(40));
        }
        *i.errors.entry("timeout".into()).or_default() += 2;
        // p99 40.03: the histogram keeps 3 significant digits (40 ms is in the bucket up to 40.031).
        let line = progress_line(Duration::from_millis(12_400), Some(Duration::from_secs(60)), Some(&i));
        assert_eq!(line, "  12 s of 60 s, 47 s left  rate 1000/s (offered 1000/s)  success 97.80 %  p99 40.03 ms");
        let line = progress_line(Duration::from_secs(75), None, Some(&i));
        assert!(line.starts_with("  75 s (until stopped)  rate 1000/s"), "{line}");
        let line = progress_line(Duration::from_secs(1), Some(Duration::from_secs(30)), None);
        assert_eq!(line, "   1 s of 30 s, 29 s left  no second completed yet");
    }
}
