//! What the chaos suite measures: load through the kit's open-loop generator into a [`Tally`]
//! split by time slot, method and outcome (so "POSTs while the master was stopped" or "the
//! 503s of the overload" are separate figures), and a [`Sampler`] of a process's RSS, threads
//! and file descriptors from `/proc`.

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use hdrhistogram::Histogram;
use loadtest::attack::{self, Done, Sink};
use loadtest::client::Target;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Width of a tally's time slots.
pub const SLOT: Duration = Duration::from_millis(250);

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Status(u16),
    /// No answer: `connect`, `timeout`, `io`, `bad_response` or `overflow` (never sent: every
    /// connection busy).
    Failed(&'static str),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Status(c) => write!(f, "{c}"),
            Outcome::Failed(k) => f.write_str(k),
        }
    }
}

/// Requests of one (slot, method, outcome).
#[derive(Clone)]
struct Cell {
    count: u64,
    /// 503s without a `Retry-After` header.
    no_retry_after: u64,
    /// Microseconds from the hand-over to a connection to the answer: the target's time.
    service: Histogram<u32>,
    /// Microseconds from the intended send time (includes waiting for a free connection).
    latency: Histogram<u32>,
}

fn histogram() -> Histogram<u32> {
    // 1 µs to 60 s at 2 significant digits: valid bounds, cannot fail.
    Histogram::new_with_bounds(1, 60_000_000, 2).unwrap_or_else(|_| unreachable!())
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, 60_000_000)
}

/// Results of a load, by 250 ms slot (of the send time) from its start.
pub struct Tally {
    start: Instant,
    cells: Mutex<BTreeMap<(u32, bool, Outcome), Cell>>,
}

impl Sink for Tally {
    fn offered(&self, _second: u64) {}

    fn completed(&self, done: &Done<'_>) {
        // Filed by when it was sent: a request sent inside a window is judged with it, even if
        // it ends (a timeout, say) after the window.
        let slot = (done.sent.saturating_duration_since(self.start).as_millis() / SLOT.as_millis()) as u32;
        let (outcome, no_retry_after) = match done.result {
            Ok(a) => (Outcome::Status(a.status), a.status == 503 && a.retry_after.is_none()),
            Err(kind) => (Outcome::Failed(kind), false),
        };
        let mut cells = self.cells.lock().unwrap_or_else(PoisonError::into_inner);
        let cell = cells.entry((slot, done.post, outcome)).or_insert_with(|| Cell {
            count: 0,
            no_retry_after: 0,
            service: histogram(),
            latency: histogram(),
        });
        cell.count += 1;
        cell.no_retry_after += u64::from(no_retry_after);
        cell.service.saturating_record(micros(done.service()));
        cell.latency.saturating_record(micros(done.latency()));
    }
}

/// Which requests of a tally to sum up.
#[derive(Debug, Clone, Copy, Default)]
pub struct Filter {
    /// From this long after the load's start (rounded up to a slot)...
    pub from: Duration,
    /// ... to this long after it (rounded down; `None`: the end).
    pub to: Option<Duration>,
    /// `Some(true)`: POSTs only; `Some(false)`: GETs only.
    pub post: Option<bool>,
}

/// A sum over part of a tally.
pub struct Summary {
    pub counts: BTreeMap<Outcome, u64>,
    pub no_retry_after: u64,
    service: BTreeMap<Outcome, Histogram<u32>>,
    latency: BTreeMap<Outcome, Histogram<u32>>,
    /// Seconds the filter spans (for rates).
    pub seconds: f64,
}

impl Summary {
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    pub fn count(&self, outcome: Outcome) -> u64 {
        self.counts.get(&outcome).copied().unwrap_or(0)
    }

    /// Requests that ended in none of `outcomes`.
    pub fn other_than(&self, outcomes: &[Outcome]) -> u64 {
        self.counts.iter().filter(|(o, _)| !outcomes.contains(o)).map(|(_, n)| n).sum()
    }

    /// Quantile `q` of the target's time (hand-over to answer) of `outcome`'s requests, in ms
    /// (0 when there were none).
    pub fn service_ms(&self, outcome: Outcome, q: f64) -> f64 {
        self.service.get(&outcome).map(|h| h.value_at_quantile(q) as f64 / 1000.0).unwrap_or(0.0)
    }

    /// Quantile `q` of the latency from the intended send time of `outcome`'s requests, in ms.
    pub fn latency_ms(&self, outcome: Outcome, q: f64) -> f64 {
        self.latency.get(&outcome).map(|h| h.value_at_quantile(q) as f64 / 1000.0).unwrap_or(0.0)
    }

    /// The largest target time of any request, in ms.
    pub fn max_service_ms(&self) -> f64 {
        self.service.values().map(|h| h.max()).max().unwrap_or(0) as f64 / 1000.0
    }

    /// Every outcome and its count, e.g. `1234 × 200, 12 × 503`.
    pub fn codes(&self) -> String {
        super::counts_text(self.counts.iter().map(|(o, n)| (o, *n)))
    }
}

impl Tally {
    pub fn new() -> Arc<Tally> {
        Arc::new(Tally { start: Instant::now(), cells: Mutex::new(BTreeMap::new()) })
    }

    /// When the load started: the origin of every [`Filter`].
    pub fn start(&self) -> Instant {
        self.start
    }

    pub fn summary(&self, f: Filter) -> Summary {
        // Only slots wholly inside the window: a window's edges are events (a signal sent),
        // and a slot straddling one would mix before and after.
        let from = f.from.as_millis().div_ceil(SLOT.as_millis()) as u32;
        let to = f.to.map(|t| (t.as_millis() / SLOT.as_millis()) as u32).unwrap_or(u32::MAX);
        let cells = self.cells.lock().unwrap_or_else(PoisonError::into_inner);
        let mut s = Summary {
            counts: BTreeMap::new(),
            no_retry_after: 0,
            service: BTreeMap::new(),
            latency: BTreeMap::new(),
            seconds: 0.0,
        };
        let mut last = from;
        for ((slot, post, outcome), cell) in cells.iter() {
            if *slot < from || *slot >= to || f.post.is_some_and(|p| p != *post) {
                continue;
            }
            last = last.max(*slot + 1);
            *s.counts.entry(*outcome).or_default() += cell.count;
            s.no_retry_after += cell.no_retry_after;
            // Same bounds on both sides: cannot fail.
            let _ = s.service.entry(*outcome).or_insert_with(histogram).add(&cell.service);
            let _ = s.latency.entry(*outcome).or_insert_with(histogram).add(&cell.latency);
        }
        let end = if to == u32::MAX { last } else { to };
        s.seconds = f64::from(end.saturating_sub(from)) * SLOT.as_secs_f64();
        s
    }
}

/// A load running in the background.
pub struct Load {
    pub tally: Arc<Tally>,
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

/// How to load a target.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub rate: f64,
    pub connections: usize,
    /// Share of POSTs.
    pub post_ratio: f64,
    /// Client timeout per request.
    pub timeout: Duration,
    /// `None`: until [`Load::finish`].
    pub duration: Option<Duration>,
}

impl Shape {
    /// GETs at `rate` over `connections`, 2 s client timeout, until finished.
    pub fn gets(rate: f64, connections: usize) -> Shape {
        Shape { rate, connections, post_ratio: 0.0, timeout: Duration::from_secs(2), duration: None }
    }
}

impl Load {
    /// Starts open-loop load on `addr`. A request finds a free connection or counts as
    /// `overflow`: no queue builds up in the generator, so latencies are the target's.
    pub fn start(addr: SocketAddr, shape: Shape) -> Load {
        let tally = Tally::new();
        let (stop, rx): (Sender<()>, Receiver<()>) = crossbeam_channel::bounded(1);
        let cfg = attack::Config {
            targets: vec![Target { host: addr.to_string(), addr, path: "/".into() }],
            rate: shape.rate,
            duration: shape.duration,
            timeout: shape.timeout,
            connections: shape.connections,
            post_ratio: shape.post_ratio,
            name: "chaos".into(),
        };
        let sink = tally.clone();
        let thread = std::thread::spawn(move || {
            attack::run_with(&cfg, sink, 1, &rx);
        });
        Load { tally, stop, thread }
    }

    /// Stops sending and waits for every request sent to end.
    pub fn finish(self) -> Arc<Tally> {
        let _ = self.stop.try_send(());
        let _ = self.thread.join();
        self.tally
    }
}

/// Runs `shape` on `addr` for `seconds` and returns its tally.
pub fn load_for(addr: SocketAddr, shape: Shape, seconds: f64) -> Arc<Tally> {
    let load = Load::start(addr, shape);
    std::thread::sleep(Duration::from_secs_f64(seconds));
    load.finish()
}

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStat {
    pub rss_kb: u64,
    pub threads: u64,
    pub fds: u64,
}

/// Reads `/proc/PID`; `None` once the process is gone.
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l[name.len()..].split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(ProcStat { rss_kb: field("VmRSS:"), threads: field("Threads:"), fds })
}

/// Samples a process every 100 ms in the background.
pub struct Sampler {
    samples: Arc<Mutex<Vec<(Duration, ProcStat)>>>,
    stop: Sender<()>,
    thread: JoinHandle<()>,
    start: Instant,
}

impl Sampler {
    pub fn start(pid: u32) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (stop, rx) = crossbeam_channel::bounded::<()>(1);
        let start = Instant::now();
        let keep = samples.clone();
        let thread = std::thread::spawn(move || {
            // Bounded: stops when told or when the process is gone.
            while let Some(s) = proc_stat(pid) {
                keep.lock().unwrap_or_else(PoisonError::into_inner).push((start.elapsed(), s));
                // Told to stop, or the sampler dropped: either way, stop.
                if !matches!(rx.recv_timeout(Duration::from_millis(100)), Err(RecvTimeoutError::Timeout)) {
                    break;
                }
            }
        });
        Sampler { samples, stop, thread, start }
    }

    pub fn start_time(&self) -> Instant {
        self.start
    }

    /// Stops sampling; returns the samples `(time since start, reading)`.
    pub fn finish(self) -> Vec<(Duration, ProcStat)> {
        let _ = self.stop.try_send(());
        let _ = self.thread.join();
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The largest of each field over samples in `[from, to)`.
pub fn peak(samples: &[(Duration, ProcStat)], from: Duration, to: Duration) -> ProcStat {
    samples.iter().filter(|(t, _)| *t >= from && *t < to).fold(ProcStat::default(), |m, (_, s)| ProcStat {
        rss_kb: m.rss_kb.max(s.rss_kb),
        threads: m.threads.max(s.threads),
        fds: m.fds.max(s.fds),
    })
}
