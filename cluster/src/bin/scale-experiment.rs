//! `scale-experiment`: the scaling experiment of `local_cluster::scale` (naive vs sidekick
//! reads against the number of pods, and the master's cost per write), its tables and chart.

use cli::{Args, Failure, Flag, Parsed, UsageError};
use local_cluster::scale::{self, Mode, Plan, Results};
use local_cluster::{cgroup::Quota, chart, utc};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

const USAGE: &str = "\
scale-experiment: naive vs sidekick reads against the number of pods, and the master's cost
per write.

Usage: scale-experiment run [FLAGS]    the sweep (as root); writes OUT/scaling.json, .png, -tables.md
       scale-experiment chart JSON PNG   redraws the chart of a results file
       scale-experiment tables JSON      prints the tables of a results file

`scale-experiment run --help` lists the flags of the sweep (defaults: the full sweep, about
10-15 minutes on two cores). Durations take a unit: 5s, 10ms.
Exit status: 0 done, 1 the run failed, 2 bad arguments.";

const RUN_USAGE: &str = "\
scale-experiment run: the sweep, as root (defaults: the full sweep, about 10-15 minutes on two
cores). Before each point it prints \"point k of n\" and the time left.

Usage: scale-experiment run [FLAGS]";

const EXIT: &str = "Exit status: 0 done, 1 the run failed, 2 bad arguments.";

const OUT: Flag = Flag::new(
    "--out",
    "DIR",
    "where the results go (default: results/scaling/<UTC time>, git-ignored; --out docs/scaling \
     replaces the committed results)",
);
const REPO: Flag = Flag::new("--repo", "DIR", "repository root holding k8s/ and run.sh").default(".");
const API_BIN: Flag = Flag::new("--api-bin", "PATH", "redis-api binary (default: REPO/target/release/redis-api)");
const STATE: Flag = Flag::new("--state", "DIR", "parent of the clusters' state directories")
    .default("/tmp/redis-api-scale")
    .old("--work", None, "");
const PODS: Flag = Flag::new("--pods", "LIST", "numbers of pods of the read sweep").default("1,2,3,4,5,6");
const MODES: Flag = Flag::new("--modes", "LIST", "naive,sidekick or one of them").default("naive,sidekick");
const CPU_QUOTA: Flag =
    Flag::new("--cpu-quota", "PCT", "CPU quota of the master and of each replica, % of one core").default("10");
const TRIAL: Flag = Flag::new("--trial", "DURATION", "length of each trial").default("5s").old("--trial-s", None, "s");
const P99: Flag = Flag::new("--p99", "DURATION", "a trial passes with p99 at most this ...")
    .default("10ms")
    .old("--p99-ms", None, "ms");
const MIN_SUCCESS: Flag = Flag::new("--min-success", "R", "... and a success ratio of at least R").default("0.999");
const START_RATE: Flag = Flag::new("--start-rate", "N", "first rate tried, req/s").default("2000");
const STEP: Flag = Flag::new("--step", "F", "climbing factor between rates (> 1)").default("1.3");
const BISECT: Flag = Flag::new("--bisect", "K", "bisection steps after the first failure").default("3");
const CONNECTIONS: Flag = Flag::new("--connections", "N", "generator connections, each to every pod").default("64");
const WRITE_PODS: Flag =
    Flag::new("--write-pods", "LIST", "replicas of the write-side measurement (none: skip it)").default("1,2,4,8,16");
const WRITE_RATE: Flag = Flag::new("--write-rate", "N", "POSTs per second of it").default("500");
const WRITE_TRIAL: Flag = Flag::new("--write-trial", "DURATION", "length of it, idle and loaded each")
    .default("5s")
    .old("--write-s", None, "s");
const PREFIX: Flag = Flag::new("--prefix", "P", "prefix of the clusters' names").default("scale");
const NET: Flag = Flag::new("--net", "N", "second octet of the clusters' networks").default("81");
const RUN_FLAGS: &[Flag] = &[
    OUT,
    REPO,
    API_BIN,
    STATE,
    PODS,
    MODES,
    CPU_QUOTA,
    TRIAL,
    P99,
    MIN_SUCCESS,
    START_RATE,
    STEP,
    BISECT,
    CONNECTIONS,
    WRITE_PODS,
    WRITE_RATE,
    WRITE_TRIAL,
    PREFIX,
    NET,
];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report("scale-experiment"),
    }
}

fn list<T>(args: &Args, flag: &Flag, expected: &str, parse: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, UsageError> {
    args.get(flag, expected, |text| {
        if text == "none" {
            return Some(Vec::new());
        }
        text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(&parse).collect()
    })
}

fn run() -> Result<(), Failure> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let mut argv = std::env::args_os().skip(1);
    let sub = argv.next().and_then(|a| a.into_string().ok());
    let env = |k: &str| std::env::var(k).ok();
    let (flags, free, usage): (&'static [Flag], usize, &str) = match sub.as_deref() {
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return Ok(());
        }
        Some("-V" | "--version") => {
            println!("scale-experiment {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        Some("run") => (RUN_FLAGS, 0, RUN_USAGE),
        Some("chart") => (&[], 2, "Usage: scale-experiment chart JSON PNG   redraws the chart of a results file"),
        Some("tables") => (&[], 1, "Usage: scale-experiment tables JSON   prints the tables of a results file"),
        _ => {
            return Err(UsageError("a subcommand is required: run, chart or tables; see --help".into()).into());
        }
    };
    let args = match Args::parse(flags, argv, &env, free)? {
        Parsed::Help => {
            print!("{}", cli::help(usage, flags, EXIT));
            return Ok(());
        }
        Parsed::Version => {
            println!("scale-experiment {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        Parsed::Run(args) => args,
    };
    for warning in args.warnings() {
        eprintln!("scale-experiment: warning: {warning}");
    }
    if args.free().len() != free {
        return Err(UsageError(format!("{} needs {free} file name(s); see --help", sub.unwrap_or_default())).into());
    }
    match sub.as_deref() {
        Some("chart") => {
            let (json, png) = (Path::new(&args.free()[0]), Path::new(&args.free()[1]));
            chart::draw(&load(json)?, png).map_err(Failure::Run)
        }
        Some("tables") => {
            print!("{}", scale::markdown(&load(Path::new(&args.free()[0]))?));
            Ok(())
        }
        _ => run_sweep(&args, &raw),
    }
}

fn run_sweep(args: &Args, raw: &[String]) -> Result<(), Failure> {
    let path = |flag: &Flag| args.opt(flag, "a path", |s| Some(PathBuf::from(s)));
    let repo = path(&REPO)?.unwrap_or_else(|| ".".into());
    let repo = std::fs::canonicalize(&repo).map_err(|err| Failure::Run(format!("{}: {err}", repo.display())))?;
    let api_bin = path(&API_BIN)?.unwrap_or_else(|| repo.join("target/release/redis-api"));
    let work = path(&STATE)?.unwrap_or_else(|| "/tmp/redis-api-scale".into());
    let out = path(&OUT)?.unwrap_or_else(|| scale::default_out(utc::now()));
    let mut plan = Plan::new(repo, api_bin, work);
    let positive = |s: &str| s.parse::<usize>().ok().filter(|n| *n >= 1);
    plan.pods = list(args, &PODS, "a comma-separated list of pod counts >= 1", positive)?;
    plan.modes = list(args, &MODES, "naive, sidekick or both, comma-separated", |s| Mode::parse(s).ok())?;
    plan.quota_percent = args.get(&CPU_QUOTA, "a CPU quota in % of one core", |s| Quota::parse(s).ok())?.percent;
    plan.write_pods = list(args, &WRITE_PODS, "a comma-separated list of replica counts >= 1, or none", positive)?;
    let hour = std::time::Duration::from_secs(3600);
    plan.trial_s = args.duration(&TRIAL, std::time::Duration::from_millis(100), hour)?.as_secs_f64();
    plan.max_p99_ms = args.duration(&P99, std::time::Duration::from_millis(1), hour)?.as_secs_f64() * 1e3;
    plan.min_success =
        args.get(&MIN_SUCCESS, "a ratio from 0 to 1", |s| s.parse().ok().filter(|r| (0.0..=1.0).contains(r)))?;
    plan.start_rate = args.get(&START_RATE, "a positive rate", |s| s.parse().ok().filter(|r: &f64| *r > 0.0))?;
    plan.step = args.get(&STEP, "a factor above 1", |s| s.parse().ok().filter(|f: &f64| *f > 1.0))?;
    plan.write_rate = args.get(&WRITE_RATE, "a positive rate", |s| s.parse().ok().filter(|r: &f64| *r > 0.0))?;
    plan.write_s = args.duration(&WRITE_TRIAL, std::time::Duration::from_millis(100), hour)?.as_secs_f64();
    plan.bisect = args.number(&BISECT, 0, 20)?;
    plan.connections = args.number(&CONNECTIONS, 1, 10_000)?;
    plan.prefix = args.get(&PREFIX, "1 to 6 letters", |s| Some(s.to_owned()))?;
    plan.net = args.number(&NET, 1, 254)?;
    let started = Instant::now();
    eprintln!("scale-experiment: started {}; results will go to {}", utc::stamp(utc::now()), out.display());
    let stop = on_signal()?;
    let mut results = scale::run(&plan, &stop, &mut |line| eprintln!("{line}")).map_err(Failure::Run)?;
    results.command = format!("scale-experiment {}", raw.join(" "));
    save(&results, &out).map_err(Failure::Run)?;
    print!("{}", scale::markdown(&results));
    println!("total time {:.0} s; results in {}", started.elapsed().as_secs_f64(), out.display());
    Ok(())
}

fn load(json: &Path) -> Result<Results, Failure> {
    let text = std::fs::read_to_string(json).map_err(|e| Failure::Run(format!("{}: {e}", json.display())))?;
    serde_json::from_str(&text).map_err(|e| Failure::Run(format!("{}: {e}", json.display())))
}

/// OUT/scaling.json, OUT/scaling.png, OUT/scaling-tables.md.
fn save(results: &Results, out: &Path) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let json = serde_json::to_string_pretty(results).map_err(|e| e.to_string())?;
    std::fs::write(out.join("scaling.json"), json + "\n").map_err(|e| format!("{}: {e}", out.display()))?;
    std::fs::write(out.join("scaling-tables.md"), scale::markdown(results))
        .map_err(|e| format!("{}: {e}", out.display()))?;
    chart::draw(results, &out.join("scaling.png"))
}

/// A channel whose sender is dropped on SIGINT or SIGTERM: the run stops between trials (or
/// ends the running attack) and takes its cluster down.
fn on_signal() -> Result<crossbeam_channel::Receiver<()>, Failure> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let (tx, rx) = crossbeam_channel::bounded::<()>(1);
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(|e| Failure::Run(e.to_string()))?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            eprintln!("scale-experiment: signal {sig}: stopping after taking the cluster down");
            drop(tx);
        }
    });
    Ok(rx)
}
