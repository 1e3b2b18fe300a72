//! The aggregator: finds the load generators (a list, or the DNS records of a headless
//! Service), pulls their completed intervals every second with short timeouts, and merges each
//! second's raw histograms across generators, so percentiles are true percentiles of all
//! requests. A generator that stops answering is shown as missing, not dropped.

use crate::client::{Client, Target};
use crate::stats::{GeneratorReport, Interval, LatencyMs, unix_now};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::ToSocketAddrs;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Where the generators are.
#[derive(Debug, Clone)]
pub enum Discovery {
    /// Base URLs, e.g. `http://10.0.0.5:8081/`.
    List(Vec<String>),
    /// Every address `name` resolves to (a headless Service), on `port`.
    Dns { name: String, port: u16 },
}

impl Discovery {
    /// The generators' URLs now.
    fn urls(&self) -> Result<Vec<String>, String> {
        match self {
            Discovery::List(urls) => Ok(urls.clone()),
            Discovery::Dns { name, port } => {
                let addrs = (name.as_str(), *port).to_socket_addrs().map_err(|e| format!("resolving {name}: {e}"))?;
                let mut urls: Vec<String> = addrs.map(|a| format!("http://{a}/")).collect();
                urls.sort();
                urls.dedup();
                Ok(urls)
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub discovery: Discovery,
    /// Seconds of history kept and served.
    pub window_s: u64,
    /// Timeout of each pull.
    pub timeout: Duration,
    pub poll: Duration,
    /// The API the currency page polls.
    pub api_url: String,
}

/// One generator as the dashboard sees it.
#[derive(Debug, Clone, Serialize)]
pub struct GeneratorView {
    pub name: String,
    pub url: String,
    /// `ok` or `missing`.
    pub state: &'static str,
    pub last_seen_s: Option<u64>,
    /// The newest second it reported (a generator that answers but stopped attacking keeps
    /// it still: the dashboard counts only fresh ones as reporting).
    pub last_data_s: Option<u64>,
    pub rate: f64,
    /// The URLs it attacks (from its report).
    pub targets: Vec<String>,
    pub error: Option<String>,
}

/// One merged second.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesPoint {
    pub t: u64,
    pub offered: u64,
    pub achieved: u64,
    pub success_ratio: f64,
    pub codes: BTreeMap<String, u64>,
    pub latency_ms: LatencyMs,
    pub generators_reporting: usize,
}

/// Seconds without any data after which the next data starts a new run (its totals from 0):
/// an aggregator left running sees one attack after another.
pub const RUN_GAP_S: u64 = 30;

/// The whole run so far, beyond the window: every merged second added up, the histogram too,
/// so its percentiles are over every request of the run.
#[derive(Debug, Clone, Serialize)]
pub struct RunTotals {
    /// First and last second with data.
    pub start: u64,
    pub end: u64,
    pub offered: u64,
    /// Completed requests (answered or failed).
    pub requests: u64,
    pub success_ratio: f64,
    /// Answers by status code.
    pub codes: BTreeMap<String, u64>,
    /// Failures without an answer, by kind (timeout, connect, ...).
    pub errors: BTreeMap<String, u64>,
    pub latency_ms: LatencyMs,
}

/// `GET /api/series`.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub now: u64,
    pub window_s: u64,
    pub generators: Vec<GeneratorView>,
    pub intervals: Vec<SeriesPoint>,
    /// `None` before the first data.
    pub totals: Option<RunTotals>,
}

/// The run being added up: its first and last second and the sum of its seconds.
struct Run {
    start: u64,
    end: u64,
    total: Interval,
}

impl Run {
    /// Adds one generator's second `i`; data after more than [`RUN_GAP_S`] without any starts
    /// a new run.
    fn add(run: &mut Option<Run>, i: &Interval) {
        match run {
            Some(r) if i.t <= r.end + RUN_GAP_S => {
                r.start = r.start.min(i.t);
                r.end = r.end.max(i.t);
                r.total.merge(i);
            }
            _ => {
                let mut total = Interval::new(0);
                total.merge(i);
                *run = Some(Run { start: i.t, end: i.t, total });
            }
        }
    }

    fn view(&self) -> RunTotals {
        let requests = self.total.completed();
        RunTotals {
            start: self.start,
            end: self.end,
            offered: self.total.offered,
            requests,
            success_ratio: if requests > 0 { self.total.ok() as f64 / requests as f64 } else { 0.0 },
            codes: self.total.codes.iter().map(|(c, n)| (c.to_string(), *n)).collect(),
            errors: self.total.errors.clone(),
            latency_ms: self.total.latency_ms(),
        }
    }
}

struct GenState {
    view: GeneratorView,
    /// Seconds of this generator already merged.
    merged: BTreeSet<u64>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatLabels {
    stat: &'static str,
}

/// The aggregator's own metrics, refreshed after every poll.
#[derive(Default)]
struct AggMetrics {
    generators: Family<StateLabels, Gauge>,
    last_second: Family<StatLabels, Gauge<f64, AtomicU64>>,
}

struct Merged {
    interval: Interval,
    reporting: usize,
}

/// The aggregator's state.
pub struct Aggregator {
    pub cfg: Config,
    gens: Mutex<BTreeMap<String, GenState>>,
    merged: Mutex<BTreeMap<u64, Merged>>,
    /// Locked after `merged`, never before.
    run: Mutex<Option<Run>>,
    metrics: AggMetrics,
}

impl Aggregator {
    pub fn new(cfg: Config) -> Aggregator {
        Aggregator {
            cfg,
            gens: Mutex::new(BTreeMap::new()),
            merged: Mutex::new(BTreeMap::new()),
            run: Mutex::new(None),
            metrics: AggMetrics::default(),
        }
    }

    /// Discovers, pulls every generator in parallel, merges what is new.
    pub fn poll_once(&self) {
        let urls = match self.cfg.discovery.urls() {
            Ok(u) => u,
            Err(e) => {
                log::warn!("discovery failed: {e}");
                Vec::new()
            }
        };
        let timeout = self.cfg.timeout;
        let results: Vec<(String, Result<GeneratorReport, String>)> = std::thread::scope(|s| {
            let handles: Vec<_> = urls.iter().map(|u| (u.clone(), s.spawn(move || fetch(u, timeout)))).collect();
            handles.into_iter().map(|(u, h)| (u, h.join().unwrap_or_else(|_| Err("fetch panicked".into())))).collect()
        });
        let now = unix_now();
        let oldest = now.saturating_sub(self.cfg.window_s);
        let mut gens = self.gens.lock().unwrap_or_else(PoisonError::into_inner);
        let mut merged = self.merged.lock().unwrap_or_else(PoisonError::into_inner);
        let mut run = self.run.lock().unwrap_or_else(PoisonError::into_inner);
        for (url, result) in results {
            let g = gens.entry(url.clone()).or_insert_with(|| GenState {
                view: GeneratorView {
                    name: url.clone(),
                    url: url.clone(),
                    state: "missing",
                    last_seen_s: None,
                    last_data_s: None,
                    rate: 0.0,
                    targets: Vec::new(),
                    error: None,
                },
                merged: BTreeSet::new(),
            });
            match result {
                Ok(report) => {
                    let newest = report.intervals.iter().map(|w| w.t).max();
                    g.view = GeneratorView {
                        name: report.name.clone(),
                        url: url.clone(),
                        state: "ok",
                        last_seen_s: Some(now),
                        last_data_s: newest.max(g.view.last_data_s),
                        rate: report.rate,
                        targets: report.targets.clone(),
                        error: None,
                    };
                    for w in &report.intervals {
                        if w.t < oldest || g.merged.contains(&w.t) {
                            continue;
                        }
                        match Interval::from_wire(w) {
                            Ok(i) => {
                                let m = merged
                                    .entry(w.t)
                                    .or_insert_with(|| Merged { interval: Interval::new(w.t), reporting: 0 });
                                m.interval.merge(&i);
                                m.reporting += 1;
                                Run::add(&mut run, &i);
                                g.merged.insert(w.t);
                            }
                            Err(e) => log::warn!("{url}: interval {}: {e}", w.t),
                        }
                    }
                }
                Err(e) => {
                    if g.view.state == "ok" {
                        log::warn!("generator {url} stopped answering: {e}");
                    }
                    g.view.state = "missing";
                    g.view.error = Some(e);
                }
            }
            g.merged.retain(|t| *t >= oldest);
        }
        // Generators no longer discovered stay listed, as missing.
        for (url, g) in gens.iter_mut() {
            if !urls.contains(url) && g.view.state == "ok" {
                g.view.state = "missing";
                g.view.error = Some("no longer discovered".into());
            }
        }
        while merged.first_key_value().is_some_and(|(t, _)| *t < oldest) {
            merged.pop_first();
        }
        drop((gens, merged, run));
        self.refresh_metrics();
    }

    /// A registry exporting the aggregator's metrics (for `/metrics`).
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("aggregator");
        r.register("generators", "Generators by state (ok, missing)", self.metrics.generators.clone());
        r.register(
            "last_second",
            "The last merged second: offered, achieved, success ratio, latency (ms)",
            self.metrics.last_second.clone(),
        );
        r
    }

    fn refresh_metrics(&self) {
        let s = self.series();
        let up = s.generators.iter().filter(|g| g.state == "ok").count() as i64;
        self.metrics.generators.get_or_create(&StateLabels { state: "ok" }).set(up);
        self.metrics.generators.get_or_create(&StateLabels { state: "missing" }).set(s.generators.len() as i64 - up);
        if let Some(last) = s.intervals.last() {
            let l = last.latency_ms;
            for (stat, v) in [
                ("offered", last.offered as f64),
                ("achieved", last.achieved as f64),
                ("success_ratio", last.success_ratio),
                ("latency_p50_ms", l.p50),
                ("latency_p90_ms", l.p90),
                ("latency_p99_ms", l.p99),
                ("latency_max_ms", l.max),
            ] {
                self.metrics.last_second.get_or_create(&StatLabels { stat }).set(v);
            }
        }
    }

    pub fn series(&self) -> Series {
        let gens = self.gens.lock().unwrap_or_else(PoisonError::into_inner);
        let merged = self.merged.lock().unwrap_or_else(PoisonError::into_inner);
        let intervals = merged
            .values()
            .map(|m| {
                let i = &m.interval;
                let achieved = i.completed();
                let mut codes: BTreeMap<String, u64> = i.codes.iter().map(|(c, n)| (c.to_string(), *n)).collect();
                let errors: u64 = i.errors.values().sum();
                if errors > 0 {
                    codes.insert("error".into(), errors);
                }
                SeriesPoint {
                    t: i.t,
                    offered: i.offered,
                    achieved,
                    success_ratio: if achieved > 0 { i.ok() as f64 / achieved as f64 } else { 0.0 },
                    codes,
                    latency_ms: i.latency_ms(),
                    generators_reporting: m.reporting,
                }
            })
            .collect();
        let totals = self.run.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map(Run::view);
        Series {
            now: unix_now(),
            window_s: self.cfg.window_s,
            generators: gens.values().map(|g| g.view.clone()).collect(),
            intervals,
            totals,
        }
    }

    /// The merged second `t`, if any generator reported it.
    pub fn merged_interval(&self, t: u64) -> Option<Interval> {
        self.merged.lock().unwrap_or_else(PoisonError::into_inner).get(&t).map(|m| m.interval.clone())
    }

    /// Polls every `cfg.poll` on an absolute schedule until `stop` fires.
    pub fn run(&self, stop: &Receiver<()>) {
        let start = Instant::now();
        let mut k: u32 = 0;
        loop {
            self.poll_once();
            k += 1;
            let next = start + self.cfg.poll * k;
            let now = Instant::now();
            if next <= now {
                // A slow poll overran: continue from the next slot after now.
                k = (now.duration_since(start).as_nanos() / self.cfg.poll.as_nanos().max(1)) as u32;
                continue;
            }
            match stop.recv_timeout(next - now) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

fn fetch(url: &str, timeout: Duration) -> Result<GeneratorReport, String> {
    let target = Target::parse(url)?;
    let mut client = Client::new(target, timeout);
    let answer = client.request("GET", None).map_err(|e| e.to_string())?;
    if answer.status != 200 {
        return Err(format!("HTTP {}", answer.status));
    }
    serde_json::from_slice(&answer.body).map_err(|e| format!("bad report: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second(t: u64, ok: u64, failed: u64, ms: u64) -> Interval {
        let mut i = Interval::new(t);
        i.offered = ok + failed;
        for _ in 0..ok {
            *i.codes.entry(200).or_default() += 1;
            i.record_latency(Duration::from_millis(ms));
        }
        for _ in 0..failed {
            *i.codes.entry(504).or_default() += 1;
            i.record_latency(Duration::from_millis(400));
        }
        i
    }

    /// Run totals add up every second of the run (percentiles over all its requests, not an
    /// average of per-second ones), and data after more than RUN_GAP_S without any starts a
    /// new run from 0.
    #[test]
    fn run_totals_add_up_and_restart_after_a_gap() {
        let mut run = None;
        // 98 fast answers in one second, 2 slow 504s in the next: p99 over the run is 400 ms.
        Run::add(&mut run, &second(100, 98, 0, 2));
        Run::add(&mut run, &second(101, 0, 2, 0));
        // A late second of another generator, older than the newest: still this run.
        Run::add(&mut run, &second(99, 10, 0, 2));
        let t = run.as_ref().unwrap().view();
        assert_eq!((t.start, t.end, t.requests, t.offered), (99, 101, 110, 110));
        assert_eq!(t.codes, BTreeMap::from([("200".into(), 108), ("504".into(), 2)]));
        assert!((t.success_ratio - 108.0 / 110.0).abs() < 1e-9, "{}", t.success_ratio);
        assert!((t.latency_ms.p50 - 2.0).abs() < 0.01 && (t.latency_ms.p99 - 400.0).abs() < 0.5, "{:?}", t.latency_ms);

        Run::add(&mut run, &second(101 + RUN_GAP_S, 5, 0, 1));
        assert_eq!(run.as_ref().unwrap().view().requests, 115, "a gap of RUN_GAP_S is the same run");
        Run::add(&mut run, &second(102 + 2 * RUN_GAP_S, 7, 0, 1));
        let t = run.as_ref().unwrap().view();
        assert_eq!((t.start, t.requests), (102 + 2 * RUN_GAP_S, 7), "a longer gap starts a new run");
    }
}
