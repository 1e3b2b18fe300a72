//! `tools scale`: the scaling experiment of `crate::scale` (naive vs sidekick reads against the
//! number of pods, and the master's cost per write), its tables and chart.

use super::{API_BIN, Common, ENV, NET, PREFIX, REPO, STATE};
use crate::scale::{self, Mode, Plan, Results};
use crate::{cgroup::Quota, chart, utc};
use anyhow::{Context, Result};
use cli::{Args, Flag, UsageError};
use std::ffi::OsString;
use std::num::NonZeroUsize;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

const PROGRAM: &str = "tools scale";

const USAGE: &str = "\
tools scale: naive vs sidekick reads against the number of pods, and the master's cost per
write.

Usage: tools scale run [FLAGS]    the sweep (as root); writes OUT/scaling.json, .png, -tables.md
       tools scale chart JSON PNG   redraws the chart of a results file
       tools scale tables JSON      prints the tables of a results file

`tools scale run --help` lists the flags of the sweep (defaults: the full sweep, about 10-15
minutes on two cores). Durations take a unit: 5s, 10ms.
Exit status: 0 done, 1 the run failed, 2 bad arguments.";

const RUN_USAGE: &str = "\
tools scale run: the sweep, as root (defaults: the full sweep, about 10-15 minutes on two
cores). Before each point it prints \"point k of n\" and the time left.

Usage: tools scale run [FLAGS]";

const OUT: Flag = Flag::new(
    "--out",
    "DIR",
    "where the results go (default: results/scaling/<UTC time>, git-ignored; --out docs/scaling \
     replaces the committed results)",
);
const PODS: Flag = Flag::new("--pods", "LIST", "numbers of pods of the read sweep")
    .default("1,2,3,4,5,6")
    .parsed::<List<NonZeroUsize>>("a comma-separated list of pod counts >= 1");
const MODES: Flag = Flag::new("--modes", "LIST", "naive,sidekick or one of them")
    .default("naive,sidekick")
    .parsed::<List<Mode>>("naive, sidekick or both, comma-separated");
const CPU_QUOTA: Flag = Flag::new("--cpu-quota", "PCT", "CPU quota of the master and of each replica, % of one core")
    .default("10")
    .parsed::<Quota>("a CPU quota in % of one core");
const TRIAL: Flag = Flag::new("--trial", "DURATION", "length of each trial")
    .default("5s")
    .old("--trial-s", None, "s")
    .duration_in(Duration::from_millis(100), Duration::from_secs(3600));
const P99: Flag = Flag::new("--p99", "DURATION", "a trial passes with p99 at most this ...")
    .default("10ms")
    .old("--p99-ms", None, "ms")
    .duration_in(Duration::from_millis(1), Duration::from_secs(3600));
const MIN_SUCCESS: Flag = Flag::new("--min-success", "R", "... and a success ratio of at least R")
    .default("0.999")
    .accepts("a ratio from 0 to 1", |s| s.parse::<f64>().is_ok_and(|r| (0.0..=1.0).contains(&r)));
const START_RATE: Flag =
    Flag::new("--start-rate", "N", "first rate tried, req/s").default("2000").accepts("a positive rate", is_rate);
const STEP: Flag = Flag::new("--step", "F", "climbing factor between rates (> 1)")
    .default("1.3")
    .accepts("a factor above 1", |s| s.parse::<f64>().is_ok_and(|f| f > 1.0));
const BISECT: Flag =
    Flag::new("--bisect", "K", "bisection steps after the first failure").default("3").number_in(0, 20);
const CONNECTIONS: Flag =
    Flag::new("--connections", "N", "generator connections, each to every pod").default("64").number_in(1, 10_000);
const WRITE_PODS: Flag = Flag::new("--write-pods", "LIST", "replicas of the write-side measurement (none: skip it)")
    .default("1,2,4,8,16")
    .parsed::<List<NonZeroUsize>>("a comma-separated list of replica counts >= 1, or none");
const WRITE_RATE: Flag =
    Flag::new("--write-rate", "N", "POSTs per second of it").default("500").accepts("a positive rate", is_rate);
const WRITE_TRIAL: Flag = Flag::new("--write-trial", "DURATION", "length of it, idle and loaded each")
    .default("5s")
    .old("--write-s", None, "s")
    .duration_in(Duration::from_millis(100), Duration::from_secs(3600));
const RUN_FLAGS: &[Flag] = &[
    OUT,
    REPO,
    API_BIN,
    Flag {
        help: "parent of the clusters' state directories",
        ..STATE.default("/tmp/redis-api-scale").old("--work", None, "")
    },
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
    PREFIX.default("scale"),
    NET.default("81"),
    ENV,
];

fn is_rate(s: &str) -> bool {
    s.parse::<f64>().is_ok_and(|r| r.is_finite() && r > 0.0)
}

/// A comma-separated list of `T`, or `none` for an empty one.
struct List<T>(Vec<T>);

impl<T: FromStr> FromStr for List<T> {
    type Err = ();
    fn from_str(text: &str) -> Result<Self, ()> {
        if text == "none" {
            return Ok(List(Vec::new()));
        }
        let items = text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| s.parse().map_err(|_| ()));
        items.collect::<Result<_, ()>>().map(List)
    }
}

fn counts(list: List<NonZeroUsize>) -> Vec<usize> {
    list.0.into_iter().map(NonZeroUsize::get).collect()
}

pub(super) fn run(mut argv: Vec<OsString>) -> Result<bool> {
    let raw: Vec<String> = argv.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let sub = if argv.is_empty() { None } else { Some(argv.remove(0)) };
    let sub = sub.as_ref().and_then(|a| a.to_str()).map(str::to_owned);
    let (flags, free, usage): (&'static [Flag], usize, &str) = match sub.as_deref() {
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return Ok(true);
        }
        Some("-V" | "--version") => {
            println!("tools {}", env!("CARGO_PKG_VERSION"));
            return Ok(true);
        }
        Some("run") => (RUN_FLAGS, 0, RUN_USAGE),
        Some("chart") => (&[], 2, "Usage: tools scale chart JSON PNG   redraws the chart of a results file"),
        Some("tables") => (&[], 1, "Usage: tools scale tables JSON   prints the tables of a results file"),
        _ => {
            return Err(
                UsageError("a subcommand is required: run, chart or tables; see tools scale --help".into()).into()
            );
        }
    };
    let Some(args) = super::parse(PROGRAM, usage, flags, super::EXIT, argv, free)? else { return Ok(true) };
    if args.free().len() != free {
        return Err(UsageError(format!("{} needs {free} file name(s); see --help", sub.unwrap_or_default())).into());
    }
    match sub.as_deref() {
        Some("chart") => {
            let (json, png) = (Path::new(&args.free()[0]), Path::new(&args.free()[1]));
            chart::draw(&load(json)?, png)?;
        }
        Some("tables") => print!("{}", scale::markdown(&load(Path::new(&args.free()[0]))?)),
        _ => run_sweep(&args, &raw)?,
    }
    Ok(true)
}

fn run_sweep(args: &Args, raw: &[String]) -> Result<()> {
    let common = Common::parse(args)?;
    let out = args.opt_value(&OUT)?.unwrap_or_else(|| scale::default_out(utc::now()));
    let repo = common.repo()?;
    let mut plan = Plan::new(repo.clone(), common.api_bin(&repo, false), common.state.clone());
    plan.prefix = common.prefix;
    plan.net = common.net;
    plan.extra_env = common.env;
    plan.pods = counts(args.value(&PODS)?);
    plan.modes = args.value::<List<Mode>>(&MODES)?.0;
    plan.quota_percent = args.value::<Quota>(&CPU_QUOTA)?.percent;
    plan.write_pods = counts(args.value(&WRITE_PODS)?);
    plan.trial_s = args.duration(&TRIAL)?.as_secs_f64();
    plan.max_p99_ms = args.duration(&P99)?.as_secs_f64() * 1e3;
    plan.min_success = args.value(&MIN_SUCCESS)?;
    plan.start_rate = args.value(&START_RATE)?;
    plan.step = args.value(&STEP)?;
    plan.write_rate = args.value(&WRITE_RATE)?;
    plan.write_s = args.duration(&WRITE_TRIAL)?.as_secs_f64();
    plan.bisect = args.number(&BISECT)?;
    plan.connections = args.number(&CONNECTIONS)?;
    let started = Instant::now();
    eprintln!("{PROGRAM}: started {}; results will go to {}", utc::stamp(utc::now()), out.display());
    // A channel whose sender is dropped on SIGINT or SIGTERM: the run stops between trials (or
    // ends the running attack) and takes its cluster down.
    let (tx, stop) = crossbeam_channel::bounded::<()>(1);
    super::on_signal(move |sig| {
        eprintln!("{PROGRAM}: signal {sig}: stopping after taking the cluster down");
        drop(tx);
    })?;
    let mut results = scale::run(&plan, &stop, &mut |line| eprintln!("{line}"))?;
    results.command = format!("tools scale {}", raw.join(" "));
    save(&results, &out)?;
    print!("{}", scale::markdown(&results));
    println!("total time {:.0} s; results in {}", started.elapsed().as_secs_f64(), out.display());
    Ok(())
}

fn load(json: &Path) -> Result<Results> {
    let text = std::fs::read_to_string(json).with_context(|| json.display().to_string())?;
    serde_json::from_str(&text).with_context(|| json.display().to_string())
}

/// OUT/scaling.json, OUT/scaling.png, OUT/scaling-tables.md.
fn save(results: &Results, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
    let json = serde_json::to_string_pretty(results).context("the results as JSON")?;
    std::fs::write(out.join("scaling.json"), json + "\n").with_context(|| out.display().to_string())?;
    std::fs::write(out.join("scaling-tables.md"), scale::markdown(results))
        .with_context(|| out.display().to_string())?;
    chart::draw(results, &out.join("scaling.png"))
}
