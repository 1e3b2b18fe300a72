//! The scaling experiment: does a read replica in every pod ("sidekick") scale reads with the
//! number of pods, where reading from the one master ("naive") does not?
//!
//! The master and every pod's replica get the same CPU quota (cgroup v1), so a replica is
//! exactly as strong as the master. For each number of pods N and each mode, a local cluster
//! is brought up (same binaries, same manifests; only the API's read address differs) and the
//! highest offered rate it sustains is searched for: open-loop GET load spread over the pods
//! (in this process, with `loadtest`'s generator), while the updater POSTs once a second.
//! A trial passes when at least `min_success` of the requests got a 2xx and p99 stays within
//! `max_p99`. The rate climbs by `step` until a trial fails, then bisects.
//!
//! The write side: with N replicas attached, a fixed POST rate goes through the pods to the
//! master; the master's CPU time and `total_net_repl_output_bytes` before and after (less the
//! same span idle) give its CPU and replication bytes per write against N.
//!
//! Everything shares the machine's cores: each trial records where the CPU went (generator,
//! APIs, replicas, master, and everything else on the machine) and is re-run when something
//! outside the experiment used more than `max_other_cores`.

use crate::cgroup::{self, Quota};
use crate::{Options, ReadFrom, master_addr, pod_addr, resp};
use anyhow::{Context, Result, anyhow, bail};
use crossbeam_channel::Receiver;
use loadtest::attack::{self, Recorder};
use loadtest::client::Target;
use loadtest::updater;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lowest rate the search tries (req/s).
const MIN_RATE: f64 = 100.0;
/// Highest rate the search tries (req/s): far beyond what two cores can generate and serve.
const MAX_RATE: f64 = 200_000.0;

/// Seconds a cluster takes to come up and go down beside its trials (namespaces, Redis, first
/// sync, APIs ready): the progress estimate's share of each point.
const CLUSTER_S: f64 = 5.0;

/// Where a run's results go unless `--out` says otherwise (relative to the working directory,
/// git-ignored): a directory of their own per run, so a short look never overwrites the
/// committed results in `docs/scaling/` (written only when asked: `--out docs/scaling`).
pub const RESULTS_DIR: &str = "results/scaling";

/// The default output directory of a run started at `unix`: `results/scaling/<UTC time>`.
pub fn default_out(unix: u64) -> PathBuf {
    Path::new(RESULTS_DIR).join(crate::utc::compact(unix))
}

/// Everything a run needs; [`Plan::run`] carries it out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// Repository root (k8s/, run.sh).
    pub repo: PathBuf,
    pub api_bin: PathBuf,
    /// Parent of the clusters' state directories.
    pub work: PathBuf,
    /// Prefix of namespace, link and cgroup names.
    pub prefix: String,
    /// Second octet of the clusters' networks (see [`Options::net`]).
    pub net: u8,
    /// CPU quota of the master and of every replica.
    pub quota_percent: f64,
    /// Numbers of pods of the read sweep, in order.
    pub pods: Vec<usize>,
    /// Modes of the read sweep, in order, for each N.
    pub modes: Vec<Mode>,
    pub trial_s: f64,
    /// Pause after a passing trial; twice that after a failing one (queues drain).
    pub pause_s: f64,
    pub min_success: f64,
    pub max_p99_ms: f64,
    /// First rate tried for the first N; later N start from the last result (see `run`).
    pub start_rate: f64,
    /// Factor between climbing rates.
    pub step: f64,
    /// Bisection steps between the last pass and the first failure.
    pub bisect: u32,
    /// Generator connections (threads), each with a keep-alive connection to every pod.
    pub connections: usize,
    pub timeout_ms: u64,
    /// The updater's period.
    pub update_interval_ms: u64,
    /// A trial is re-run when the rest of the machine used more than this many cores.
    pub max_other_cores: f64,
    /// Disturbed trials are re-run this many times at most ...
    #[serde(default)]
    pub retries: u32,
    /// ... after this much quiet time (other sessions' builds and tests come and go on a
    /// shared machine).
    #[serde(default)]
    pub retry_pause_s: f64,
    /// Numbers of replicas of the write-side measurement (empty: skip it).
    pub write_pods: Vec<usize>,
    /// POSTs per second of the write-side measurement.
    pub write_rate: f64,
    pub write_s: f64,
    /// Extra environment for the APIs (after the manifest's), e.g. to try a setting.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_env: Vec<(String, String)>,
}

impl Plan {
    /// The defaults of the full sweep (about 12 to 15 minutes on two cores).
    pub fn new(repo: PathBuf, api_bin: PathBuf, work: PathBuf) -> Plan {
        Plan {
            repo,
            api_bin,
            work,
            prefix: "scale".into(),
            net: 81,
            quota_percent: 10.0,
            pods: vec![1, 2, 3, 4, 5, 6],
            modes: vec![Mode::Naive, Mode::Sidekick],
            trial_s: 5.0,
            pause_s: 1.0,
            min_success: 0.999,
            max_p99_ms: 10.0,
            start_rate: 2000.0,
            step: 1.3,
            bisect: 3,
            connections: 64,
            timeout_ms: 1000,
            update_interval_ms: 1000,
            max_other_cores: 0.3,
            retries: 6,
            retry_pause_s: 10.0,
            write_pods: vec![1, 2, 4, 8, 16],
            write_rate: 500.0,
            write_s: 5.0,
            extra_env: Vec::new(),
        }
    }
}

/// Where the pods' APIs read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every API reads from the master.
    Naive,
    /// Every API reads from its own replica.
    Sidekick,
}

impl std::str::FromStr for Mode {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> Result<Mode> {
        match text {
            "naive" => Ok(Mode::Naive),
            "sidekick" => Ok(Mode::Sidekick),
            _ => Err(anyhow!("mode {text:?}: naive or sidekick")),
        }
    }
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Naive => "naive",
            Mode::Sidekick => "sidekick",
        }
    }

    fn read_from(self) -> ReadFrom {
        match self {
            Mode::Naive => ReadFrom::Master,
            Mode::Sidekick => ReadFrom::Replica,
        }
    }
}

/// Average CPU use during a trial, in cores (CPU-seconds per second).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Cores {
    /// This process: the load generator (and the updater).
    pub loadgen: f64,
    pub apis: f64,
    pub replicas: f64,
    pub master: f64,
    /// The whole machine's user + system time (the cluster's and everything else's).
    pub machine: f64,
    /// Interrupt and softirq time of the machine: mostly the kernel moving packets over the
    /// veth links and loopback, for all of the above. Tick-based accounting also charges it
    /// to the process it interrupted, so it overlaps the columns above; `machine + irq` is
    /// the machine's busy time.
    #[serde(default)]
    pub irq: f64,
    /// Time the hypervisor gave to other guests while this one wanted to run.
    #[serde(default)]
    pub steal: f64,
    /// `machine` less the processes above: other sessions, builds, the kernel's own threads.
    pub other: f64,
}

/// One run of the generator at one rate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trial {
    pub rate: f64,
    pub success: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub pass: bool,
    pub cores: Cores,
    /// Share of CFS periods in which the master was throttled (at its quota).
    pub master_throttled: f64,
    /// The same for the most throttled replica.
    pub replica_throttled: f64,
    /// Each replica's cores, in pod order (`cores.replicas` is their sum): how the reads
    /// spread over the replicas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replica_cores: Vec<f64>,
    /// Re-runs because something else used the CPU; `disturbed` if the last one still was.
    pub retries: u32,
    pub disturbed: bool,
}

/// The result of one (mode, N).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Point {
    pub mode: Mode,
    pub pods: usize,
    /// The highest rate that passed (0 if none did).
    pub sustained: f64,
    /// The passing trial at that rate.
    pub at_sustained: Option<Trial>,
    /// The lowest rate that failed, if one did.
    pub failed_at: Option<Trial>,
    pub trials: Vec<Trial>,
    pub updates_ok: u64,
    pub updates_failed: u64,
    pub seconds: f64,
}

/// The master's cost of writes with `pods` replicas attached.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriteCost {
    pub pods: usize,
    pub offered_rate: f64,
    /// POSTs answered 200.
    pub writes: u64,
    pub success: f64,
    pub p99_ms: f64,
    /// Master CPU per write, less the same span idle (µs).
    pub cpu_us_per_write: f64,
    /// Master CPU while idle (health checks, replica pings), in cores.
    pub idle_cores: f64,
    /// Replication bytes sent per write, less the same span idle (all replicas together).
    pub repl_bytes_per_write: f64,
    /// Replication bytes per second while idle.
    pub idle_repl_bytes_per_s: f64,
    pub master_throttled: f64,
}

/// What the machine was.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub redis: String,
    /// `/proc/loadavg` when the run started.
    pub loadavg: String,
}

impl Machine {
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let redis = std::process::Command::new("redis-server")
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            cpu_model,
            kernel: read_trim("/proc/sys/kernel/osrelease"),
            redis,
            loadavg: read_trim("/proc/loadavg"),
        }
    }
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// The command line that made them (set by the binary).
    #[serde(default)]
    pub command: String,
    pub plan: Plan,
    pub machine: Machine,
    pub points: Vec<Point>,
    pub writes: Vec<WriteCost>,
    pub seconds: f64,
}

impl Results {
    pub fn point(&self, mode: Mode, pods: usize) -> Option<&Point> {
        self.points.iter().find(|p| p.mode == mode && p.pods == pods)
    }
}

/// A cluster of the experiment: [`crate::Cluster`] (taken down however its scope ends) with
/// a first value written and read on every pod.
struct Cluster(crate::Cluster);

impl std::ops::Deref for Cluster {
    type Target = crate::Cluster;

    fn deref(&self) -> &crate::Cluster {
        &self.0
    }
}

impl Cluster {
    fn up(plan: &Plan, pods: usize, mode: Mode) -> Result<Cluster> {
        let state_dir = plan.work.join(format!("{}-{}-{pods}", plan.prefix, mode.as_str()));
        let opts = Options {
            repo: plan.repo.clone(),
            state: state_dir.clone(),
            prefix: plan.prefix.clone(),
            net: plan.net,
            api_bin: plan.api_bin.clone(),
            extra_env: plan.extra_env.clone(),
            cpu_quota: Some(Quota { percent: plan.quota_percent, period_us: crate::cgroup::PERIOD_US }),
            read_from: mode.read_from(),
        };
        let cluster = Cluster(crate::Cluster::up(pods, &opts)?);
        // A value to read before the first trial (the naive `up` has written one already).
        let net = cluster.state.net;
        let (status, body) = crate::http(pod_addr(net, 1), "POST", "/", Some(r#"{"value": 1}"#))?;
        if status != 200 {
            bail!("pod-1: first POST answered {status} {body}");
        }
        for i in 1..=pods {
            crate::wait_get(pod_addr(net, i), Duration::from_secs(30)).with_context(|| format!("pod-{i}"))?;
        }
        Ok(cluster)
    }

    fn targets(&self) -> Result<Vec<Target>> {
        (1..=self.state.pods)
            .map(|i| Target::parse(&format!("http://{}/", pod_addr(self.state.net, i))).map_err(anyhow::Error::msg))
            .collect()
    }

    /// The pids of the processes whose name ends with `suffix`, in pod order (pod-1, pod-2,
    /// ...; names are `pod-I/PROCESS`).
    fn pids(&self, suffix: &str) -> Vec<u32> {
        let mut found: Vec<_> = self.state.processes.iter().filter(|(_, w)| w.ends_with(suffix)).collect();
        found.sort_by_key(|(_, w)| w.trim_start_matches("pod-").split('/').next().and_then(|n| n.parse::<u32>().ok()));
        found.into_iter().map(|(p, _)| *p).collect()
    }

    fn master_pid(&self) -> Result<u32> {
        self.state.pid(crate::MASTER).context("no master pid")
    }

    fn replica_groups(&self) -> Vec<PathBuf> {
        let master = self.state.master_cgroup().map(Path::to_path_buf);
        self.state.cgroups.iter().filter(|d| Some(*d) != master.as_ref()).cloned().collect()
    }
}

/// A snapshot of the CPU counters a trial compares.
struct Sample {
    at: Instant,
    loadgen: u64,
    apis: u64,
    replicas: u64,
    /// Each replica's, in pod order.
    replica_each: Vec<u64>,
    master: u64,
    /// From /proc/stat, in ns.
    machine: MachineNs,
    master_stat: cgroup::Stat,
    replica_stats: Vec<cgroup::Stat>,
}

impl Sample {
    fn take(c: &Cluster) -> Sample {
        let cpu = |pid: u32| cgroup::process_cpu_ns(pid).unwrap_or(0);
        let sum = |pids: Vec<u32>| pids.into_iter().map(cpu).sum();
        let stat = |d: &Path| cgroup::stat(d).unwrap_or_default();
        let replica_each: Vec<u64> = c.pids("/redis-replica").into_iter().map(cpu).collect();
        Sample {
            at: Instant::now(),
            loadgen: cpu(std::process::id()),
            apis: sum(c.pids(&format!("/{}", crate::API))),
            replicas: replica_each.iter().sum(),
            replica_each,
            master: sum(c.state.pid(crate::MASTER).into_iter().collect()),
            machine: machine_ns(),
            master_stat: c.state.master_cgroup().map(stat).unwrap_or_default(),
            replica_stats: c.replica_groups().iter().map(|d| stat(d)).collect(),
        }
    }

    /// Cores that `now_ns - before_ns` of CPU time make between `before` and this sample.
    fn cores(&self, before: &Sample, now_ns: u64, before_ns: u64) -> f64 {
        let secs = (self.at - before.at).as_secs_f64().max(1e-3);
        now_ns.saturating_sub(before_ns) as f64 / 1e9 / secs
    }

    /// Each replica's cores since `before`, in pod order.
    fn replica_cores(&self, before: &Sample) -> Vec<f64> {
        self.replica_each.iter().zip(&before.replica_each).map(|(a, b)| self.cores(before, *a, *b)).collect()
    }

    /// Cores used and throttled shares (master, worst replica) since `before`.
    fn since(&self, before: &Sample) -> (Cores, f64, f64) {
        let cores = |a: u64, b: u64| self.cores(before, a, b);
        let mut c = Cores {
            loadgen: cores(self.loadgen, before.loadgen),
            apis: cores(self.apis, before.apis),
            replicas: cores(self.replicas, before.replicas),
            master: cores(self.master, before.master),
            machine: cores(self.machine.busy, before.machine.busy),
            irq: cores(self.machine.irq, before.machine.irq),
            steal: cores(self.machine.steal, before.machine.steal),
            other: 0.0,
        };
        c.other = (c.machine - c.loadgen - c.apis - c.replicas - c.master).max(0.0);
        let throttled = |a: &cgroup::Stat, b: &cgroup::Stat| {
            let periods = a.nr_periods.saturating_sub(b.nr_periods);
            if periods == 0 { 0.0 } else { a.nr_throttled.saturating_sub(b.nr_throttled) as f64 / periods as f64 }
        };
        let replica =
            self.replica_stats.iter().zip(&before.replica_stats).map(|(a, b)| throttled(a, b)).fold(0.0, f64::max);
        (c, throttled(&self.master_stat, &before.master_stat), replica)
    }
}

/// The machine's CPU time by kind, all CPUs, in ns.
#[derive(Clone, Copy, Default)]
struct MachineNs {
    /// user + nice + system: what processes are charged for.
    busy: u64,
    /// irq + softirq: not charged to any process.
    irq: u64,
    steal: u64,
}

/// From the `cpu` line of /proc/stat (USER_HZ ticks: 100 on every architecture Linux supports).
fn machine_ns() -> MachineNs {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else { return MachineNs::default() };
    let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0) * 10_000_000;
    // user nice system idle iowait irq softirq steal
    MachineNs { busy: at(0) + at(1) + at(2), irq: at(5) + at(6), steal: at(7) }
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// Runs the updater against pod 1 until dropped.
struct Updater {
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    stats: updater::Stats,
}

impl Updater {
    fn start(plan: &Plan, c: &Cluster) -> Result<Updater> {
        let cfg = updater::Config {
            api: Target::parse(&format!("http://{}/", pod_addr(c.state.net, 1))).map_err(anyhow::Error::msg)?,
            interval: Duration::from_millis(plan.update_interval_ms),
            timeout: Duration::from_millis(900),
            start_value: 1.0,
        };
        let stats = updater::Stats::default();
        let (tx, rx) = crossbeam_channel::bounded::<()>(1);
        let s = stats.clone();
        let thread = std::thread::spawn(move || updater::run(&cfg, &s, &rx));
        Ok(Updater { stop: Some(tx), thread: Some(thread), stats })
    }

    fn finish(mut self) -> (u64, u64) {
        self.halt();
        (self.stats.count("ok"), self.stats.count("failed"))
    }

    fn halt(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Updater {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Runs `plan`; progress goes to `log`. `stop` aborts between trials (and ends a running
/// attack) when it fires or its sender is dropped.
pub fn run(plan: &Plan, stop: &Receiver<()>, log: &mut dyn FnMut(&str)) -> Result<Results> {
    let started = Instant::now();
    let machine = Machine::describe();
    std::fs::create_dir_all(&plan.work).with_context(|| plan.work.display().to_string())?;
    let mut points: Vec<Point> = Vec::new();
    let mut k = 0;
    for &pods in &plan.pods {
        for &mode in &plan.modes {
            k += 1;
            let done: Vec<f64> = points.iter().map(|p| p.seconds).collect();
            log(&point_line(plan, k, pods, Some(mode), &done));
            // Start near where the previous N of this mode stopped: sidekick is expected to
            // grow with N, naive to stay flat.
            let last = points.iter().rev().find(|p| p.mode == mode && p.sustained > 0.0).map(|p| p.sustained);
            let start = match (mode, last) {
                (_, None) => plan.start_rate,
                (Mode::Sidekick, Some(s)) => s * 0.9,
                (Mode::Naive, Some(s)) => s * 0.8,
            };
            let point = measure_reads(plan, mode, pods, start, stop, log)?;
            log(&format!(
                "== {} N={pods}: sustained {:.0} req/s (p99 {:.1} ms), {} trials, {:.0} s",
                mode.as_str(),
                point.sustained,
                point.at_sustained.as_ref().map_or(0.0, |t| t.p99_ms),
                point.trials.len(),
                point.seconds
            ));
            points.push(point);
        }
    }
    let mut writes = Vec::new();
    let done: Vec<f64> = points.iter().map(|p| p.seconds).collect();
    for &pods in &plan.write_pods {
        k += 1;
        log(&point_line(plan, k, pods, None, &done));
        let w = measure_writes(plan, pods, stop)?;
        log(&format!(
            "== writes N={pods}: {:.1} µs master CPU/write, {:.0} repl bytes/write, {} writes, throttled {:.0} %",
            w.cpu_us_per_write,
            w.repl_bytes_per_write,
            w.writes,
            w.master_throttled * 100.0
        ));
        writes.push(w);
    }
    Ok(Results {
        command: String::new(),
        plan: plan.clone(),
        machine,
        points,
        writes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The progress line before point `k` (1-based) of a run of `plan`: the read sweep's points
/// (`mode` `Some`) come first, then the write side's (`None`). The time left is this point's and
/// the later ones': a read point takes the mean of `read_s` (the seconds of the read points
/// measured so far) or, before the first, [`read_point_s`]; a write point [`write_point_s`].
pub fn point_line(plan: &Plan, k: usize, pods: usize, mode: Option<Mode>, read_s: &[f64]) -> String {
    let reads = plan.pods.len() * plan.modes.len();
    let n = reads + plan.write_pods.len();
    let read_each =
        if read_s.is_empty() { read_point_s(plan) } else { read_s.iter().sum::<f64>() / read_s.len() as f64 };
    let reads_left = reads.saturating_sub(k.saturating_sub(1));
    let writes_left = (n + 1).saturating_sub(k.max(reads + 1)).min(plan.write_pods.len());
    let left = reads_left as f64 * read_each + writes_left as f64 * write_point_s(plan);
    let what = format!("{pods} pod{}, {}", if pods == 1 { "" } else { "s" }, mode.map_or("write side", Mode::as_str));
    crate::progress::line("point", k, n, &what, &crate::progress::about_left(left))
}

/// A read point's seconds before any was measured: the cluster, and a climb of about four
/// trials then `bisect` more, each `trial_s` plus its pause (twice as long after a failure).
pub fn read_point_s(plan: &Plan) -> f64 {
    CLUSTER_S + (4.0 + f64::from(plan.bisect)) * (plan.trial_s + 1.5 * plan.pause_s)
}

/// A write point's seconds: the cluster, then the idle span and the loaded one.
pub fn write_point_s(plan: &Plan) -> f64 {
    CLUSTER_S + 2.0 * plan.write_s
}

fn stopped(stop: &Receiver<()>) -> Result<()> {
    match stop.try_recv() {
        Err(crossbeam_channel::TryRecvError::Empty) => Ok(()),
        _ => Err(anyhow!("stopped")),
    }
}

/// The rate search for one (mode, N) on a cluster of its own.
pub fn measure_reads(
    plan: &Plan,
    mode: Mode,
    pods: usize,
    start: f64,
    stop: &Receiver<()>,
    log: &mut dyn FnMut(&str),
) -> Result<Point> {
    let began = Instant::now();
    stopped(stop)?;
    let cluster = Cluster::up(plan, pods, mode)?;
    let targets = cluster.targets()?;
    let updates = Updater::start(plan, &cluster)?;
    // A warm-up trial at the start rate, not judged: the first seconds after the pods come up
    // (fresh connections, the updater's first writes, a CFS period that begins throttled) can
    // fail a trial the pods sustain, and a failed first trial caps the search below it.
    stopped(stop)?;
    let warm = trial(plan, &cluster, &targets, round(start.clamp(MIN_RATE, MAX_RATE)), stop)?;
    log(&format!(
        "{} N={pods} {:>7.0} req/s: warm-up ({}, p99 {:.1} ms), not judged",
        mode.as_str(),
        warm.rate,
        if warm.pass { "pass" } else { "fail" },
        warm.p99_ms
    ));
    let mut trials: Vec<Trial> = Vec::new();
    let mut best: Option<Trial> = None;
    let mut failed: Option<Trial> = None;
    let mut run_at = |rate: f64, trials: &mut Vec<Trial>| -> Result<Trial> {
        stopped(stop)?;
        let t = trial(plan, &cluster, &targets, round(rate), stop)?;
        log(&format!(
            "{} N={pods} {:>7.0} req/s: {} success {:.4} p99 {:.1} ms; cores: gen {:.2} api {:.2} repl {:.2} master {:.2} irq {:.2} other {:.2} steal {:.2}; throttled master {:.0} % replica {:.0} %{}",
            mode.as_str(),
            t.rate,
            if t.pass { "pass" } else { "FAIL" },
            t.success,
            t.p99_ms,
            t.cores.loadgen,
            t.cores.apis,
            t.cores.replicas,
            t.cores.master,
            t.cores.irq,
            t.cores.other,
            t.cores.steal,
            t.master_throttled * 100.0,
            t.replica_throttled * 100.0,
            if t.disturbed { " (disturbed)" } else { "" },
        ));
        trials.push(t.clone());
        let pause = if t.pass { plan.pause_s } else { 2.0 * plan.pause_s };
        std::thread::sleep(Duration::from_secs_f64(pause));
        Ok(t)
    };
    // Climb until a failure (or the ceiling), going down first if the start already fails.
    let mut rate = start.clamp(MIN_RATE, MAX_RATE);
    loop {
        let t = run_at(rate, &mut trials)?;
        if t.pass {
            best = Some(t);
            if best.is_some() && failed.is_some() || rate * plan.step > MAX_RATE {
                break;
            }
            rate *= plan.step;
        } else {
            failed = Some(t);
            if best.is_some() || rate / plan.step < MIN_RATE {
                break;
            }
            rate /= plan.step;
        }
    }
    for _ in 0..plan.bisect {
        let (Some(lo), Some(hi)) = (&best, &failed) else { break };
        let mid = round((lo.rate + hi.rate) / 2.0);
        if mid <= lo.rate || mid >= hi.rate {
            break;
        }
        let t = run_at(mid, &mut trials)?;
        if t.pass { best = Some(t) } else { failed = Some(t) }
    }
    let (updates_ok, updates_failed) = updates.finish();
    drop(cluster);
    Ok(Point {
        mode,
        pods,
        sustained: best.as_ref().map_or(0.0, |t| t.rate),
        at_sustained: best,
        failed_at: failed,
        trials,
        updates_ok,
        updates_failed,
        seconds: began.elapsed().as_secs_f64(),
    })
}

/// Rates are kept to 10 req/s.
fn round(rate: f64) -> f64 {
    (rate / 10.0).round() * 10.0
}

/// One trial at `rate`, re-run (after a pause) while something outside the experiment used
/// the CPU.
fn trial(plan: &Plan, c: &Cluster, targets: &[Target], rate: f64, stop: &Receiver<()>) -> Result<Trial> {
    let mut retries = 0;
    loop {
        let cfg = attack::Config {
            targets: targets.to_vec(),
            rate,
            duration: Some(Duration::from_secs_f64(plan.trial_s)),
            timeout: Duration::from_millis(plan.timeout_ms),
            connections: plan.connections,
            post_ratio: 0.0,
            name: "scale".into(),
        };
        let recorder = Arc::new(Recorder::new(None));
        let before = Sample::take(c);
        let times = attack::run(&cfg, &recorder, stop);
        let after = Sample::take(c);
        stopped(stop)?;
        let report = attack::Report::new(&cfg, times, &recorder.total());
        let (cores, master_throttled, replica_throttled) = after.since(&before);
        let l = report.latency_ms;
        let disturbed = cores.other > plan.max_other_cores;
        let t = Trial {
            rate,
            success: report.success_ratio,
            p50_ms: l.p50,
            p99_ms: l.p99,
            max_ms: l.max,
            pass: report.success_ratio >= plan.min_success && l.p99 <= plan.max_p99_ms,
            cores,
            master_throttled,
            replica_throttled,
            replica_cores: after.replica_cores(&before),
            retries,
            disturbed,
        };
        if !disturbed || retries >= plan.retries {
            return Ok(t);
        }
        retries += 1;
        std::thread::sleep(Duration::from_secs_f64(plan.retry_pause_s));
    }
}

/// The write side with `pods` replicas: idle span, then `write_rate` POSTs/s spread over the
/// pods for as long; the master's CPU and replication bytes of each.
pub fn measure_writes(plan: &Plan, pods: usize, stop: &Receiver<()>) -> Result<WriteCost> {
    stopped(stop)?;
    let cluster = Cluster::up(plan, pods, Mode::Sidekick)?;
    let harness = crate::harness_login(cluster.dir())?;
    let master = cluster.master_pid()?;
    let net = cluster.state.net;
    let counters = || -> Result<(Instant, u64, u64, cgroup::Stat)> {
        let info = resp::info(master_addr(net), &harness, "stats")?;
        let stat = cluster.state.master_cgroup().map(|d| cgroup::stat(d).unwrap_or_default()).unwrap_or_default();
        Ok((
            Instant::now(),
            cgroup::thread_cpu_ns(master)?,
            resp::info_u64(&info, "total_net_repl_output_bytes")?,
            stat,
        ))
    };
    let span = Duration::from_secs_f64(plan.write_s);
    let idle0 = counters()?;
    std::thread::sleep(span);
    let idle1 = counters()?;
    let cfg = attack::Config {
        targets: cluster.targets()?,
        rate: plan.write_rate,
        duration: Some(span),
        timeout: Duration::from_millis(plan.timeout_ms),
        // Writes are few; a handful of connections keeps the API's write pools busy enough.
        connections: plan.connections.min(16),
        post_ratio: 1.0,
        name: "scale-writes".into(),
    };
    let recorder = Arc::new(Recorder::new(None));
    let load0 = counters()?;
    let times = attack::run(&cfg, &recorder, stop);
    let load1 = counters()?;
    stopped(stop)?;
    let total = recorder.total();
    let report = attack::Report::new(&cfg, times, &total);
    let writes = total.ok();
    let secs = |a: Instant, b: Instant| (b - a).as_secs_f64().max(1e-3);
    let (idle_s, load_s) = (secs(idle0.0, idle1.0), secs(load0.0, load1.0));
    let idle_cpu_per_s = (idle1.1 - idle0.1) as f64 / idle_s;
    let idle_bytes_per_s = (idle1.2 - idle0.2) as f64 / idle_s;
    let net_cpu_ns = (load1.1 - load0.1) as f64 - idle_cpu_per_s * load_s;
    let net_bytes = (load1.2 - load0.2) as f64 - idle_bytes_per_s * load_s;
    let periods = load1.3.nr_periods.saturating_sub(load0.3.nr_periods);
    let per_write = |x: f64| if writes > 0 { x.max(0.0) / writes as f64 } else { 0.0 };
    Ok(WriteCost {
        pods,
        offered_rate: plan.write_rate,
        writes,
        success: report.success_ratio,
        p99_ms: report.latency_ms.p99,
        cpu_us_per_write: per_write(net_cpu_ns) / 1000.0,
        idle_cores: idle_cpu_per_s / 1e9,
        repl_bytes_per_write: per_write(net_bytes),
        idle_repl_bytes_per_s: idle_bytes_per_s,
        master_throttled: if periods == 0 {
            0.0
        } else {
            load1.3.nr_throttled.saturating_sub(load0.3.nr_throttled) as f64 / periods as f64
        },
    })
}

/// Least-squares line `y = a + b·x`.
pub fn fit(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let (sx, sy) = points.iter().fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (mx, my) = (sx / n, sy / n);
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let b = sxy / sxx;
    Some((my - b * mx, b))
}

/// The read table, the write table and the fitted write costs, as Markdown.
pub fn markdown(r: &Results) -> String {
    let mut out = String::new();
    let mut pods: Vec<usize> = r.points.iter().map(|p| p.pods).collect();
    pods.dedup();
    out.push_str(
        "| N pods | naive req/s | p99 ms | sidekick req/s | p99 ms | sidekick / naive | \
         sidekick at its rate, cores: generator / APIs / replicas / master; irq; machine busy | \
         lowest failing rate: naive's master throttled | sidekick's replicas throttled |\n",
    );
    out.push_str("| ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |\n");
    let pct = |x: f64| format!("{:.0} %", x * 100.0);
    for n in pods {
        let cell = |m: Mode| {
            r.point(m, n).map_or(("–".to_owned(), "–".to_owned()), |p| {
                let mark = if p.trials.iter().any(|t| t.disturbed) { " *" } else { "" };
                let p99 = p.at_sustained.as_ref().map_or("–".into(), |t| format!("{:.1}", t.p99_ms));
                (format!("{:.0}{mark}", p.sustained), p99)
            })
        };
        let (nr, np) = cell(Mode::Naive);
        let (sr, sp) = cell(Mode::Sidekick);
        let ratio = match (r.point(Mode::Naive, n), r.point(Mode::Sidekick, n)) {
            (Some(a), Some(b)) if a.sustained > 0.0 => format!("{:.2}", b.sustained / a.sustained),
            _ => "–".into(),
        };
        let side = r.point(Mode::Sidekick, n).and_then(|p| p.at_sustained.as_ref());
        let cores = side.map_or("–".into(), |t| {
            let c = t.cores;
            // A process is also charged for the interrupts that hit it: the machine's busy time
            // is user + system + irq, not the sum of the columns.
            format!(
                "{:.2} / {:.2} / {:.2} / {:.2}; irq {:.2}; machine {:.2}",
                c.loadgen,
                c.apis,
                c.replicas,
                c.master,
                c.irq,
                c.machine + c.irq
            )
        });
        let failed = |m: Mode, f: fn(&Trial) -> f64| {
            r.point(m, n)
                .and_then(|p| p.failed_at.as_ref())
                .map_or("–".into(), |t| format!("{} at {:.0}", pct(f(t)), t.rate))
        };
        let naive_fail = failed(Mode::Naive, |t| t.master_throttled);
        let side_fail = failed(Mode::Sidekick, |t| t.replica_throttled);
        out.push_str(&format!(
            "| {n} | {nr} | {np} | {sr} | {sp} | {ratio} | {cores} | {naive_fail} | {side_fail} |\n"
        ));
    }
    if r.points.iter().flat_map(|p| &p.trials).any(|t| t.disturbed) {
        out.push_str(&format!(
            "\n\\* a trial of this search ran while other processes used more than {} cores, even after {} re-runs.\n",
            r.plan.max_other_cores, r.plan.retries
        ));
    }
    if !r.writes.is_empty() {
        out.push_str(
            "\n| N replicas | writes | success | POST p99 ms | master CPU µs / write | repl bytes / write | \
             master idle cores | idle repl bytes / s | master throttled |\n",
        );
        out.push_str("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        for w in &r.writes {
            out.push_str(&format!(
                "| {} | {} | {:.4} | {:.1} | {:.1} | {:.0} | {:.4} | {:.0} | {:.0} % |\n",
                w.pods,
                w.writes,
                w.success,
                w.p99_ms,
                w.cpu_us_per_write,
                w.repl_bytes_per_write,
                w.idle_cores,
                w.idle_repl_bytes_per_s,
                w.master_throttled * 100.0
            ));
        }
        let cpu: Vec<(f64, f64)> = r.writes.iter().map(|w| (w.pods as f64, w.cpu_us_per_write)).collect();
        let bytes: Vec<(f64, f64)> = r.writes.iter().map(|w| (w.pods as f64, w.repl_bytes_per_write)).collect();
        if let (Some((a, b)), Some((c, d))) = (fit(&cpu), fit(&bytes)) {
            // A rounding residue of -0.3 bytes would print as "-0".
            let c = if c.abs() < 0.5 { 0.0 } else { c };
            out.push_str(&format!(
                "\nFit: master CPU per write ≈ {a:.1} + {b:.2} × N µs; replication ≈ {c:.0} + {d:.1} × N bytes per write.\n"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fit recovers a line, and refuses what is not one.
    #[test]
    fn least_squares() {
        let (a, b) = fit(&[(1.0, 12.0), (2.0, 14.0), (4.0, 18.0)]).unwrap();
        assert!((a - 10.0).abs() < 1e-9 && (b - 2.0).abs() < 1e-9);
        assert!(fit(&[(1.0, 1.0)]).is_none() && fit(&[(2.0, 1.0), (2.0, 3.0)]).is_none());
    }

    /// Before each point: its place among all (read sweep, then write side) and the time left,
    /// first from the trial length, then from the read points measured so far.
    #[test]
    fn point_lines_count_and_estimate() {
        let mut plan = Plan::new("r".into(), "b".into(), "w".into());
        (plan.pods, plan.write_pods, plan.trial_s, plan.pause_s, plan.bisect, plan.write_s) =
            (vec![1, 2], vec![1, 4], 5.0, 1.0, 3, 5.0);
        // Read point: 5 + 7 × 6.5 = 50.5 s; write point: 5 + 2 × 5 = 15 s.
        assert_eq!(read_point_s(&plan), 50.5);
        assert_eq!(write_point_s(&plan), 15.0);
        // 4 × 50.5 + 2 × 15 = 232 s.
        assert_eq!(point_line(&plan, 1, 1, Some(Mode::Naive), &[]), "point 1 of 6: 1 pod, naive (about 4 min left)");
        // Measured: 30 and 50 s, mean 40: 2 × 40 + 30 = 110 s.
        assert_eq!(
            point_line(&plan, 3, 2, Some(Mode::Naive), &[30.0, 50.0]),
            "point 3 of 6: 2 pods, naive (about 2 min left)"
        );
        assert_eq!(
            point_line(&plan, 4, 2, Some(Mode::Sidekick), &[30.0, 50.0, 40.0]),
            "point 4 of 6: 2 pods, sidekick (about 70 s left)"
        );
        assert_eq!(point_line(&plan, 5, 1, None, &[40.0; 4]), "point 5 of 6: 1 pod, write side (about 30 s left)");
        assert_eq!(point_line(&plan, 6, 4, None, &[40.0; 4]), "point 6 of 6: 4 pods, write side (about 15 s left)");
        // No write side: the read points alone.
        plan.write_pods.clear();
        assert_eq!(
            point_line(&plan, 4, 2, Some(Mode::Sidekick), &[40.0; 3]),
            "point 4 of 4: 2 pods, sidekick (about 40 s left)"
        );
    }
}
