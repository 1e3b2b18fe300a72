//! `scale-experiment`: the scaling experiment of `local_cluster::scale` (naive vs sidekick
//! reads against the number of pods, and the master's cost per write), its tables and chart.

use local_cluster::scale::{self, Mode, Plan, Results};
use local_cluster::{cgroup::Quota, chart, utc};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

const USAGE: &str = "\
Usage: scale-experiment run [OPTIONS]    the sweep (as root); writes OUT/scaling.json, .png, -tables.md
       scale-experiment chart JSON PNG   redraws the chart of a results file
       scale-experiment tables JSON      prints the tables of a results file

Options of run (defaults: the full sweep, about 10-15 minutes on two cores):
  --out DIR            where the results go (default: results/scaling/<UTC time>, git-ignored;
                       --out docs/scaling replaces the committed results)
  --repo DIR           repository root holding k8s/ and run.sh (default: .)
  --api-bin PATH       redis-api binary (default: REPO/target/release/redis-api)
  --work DIR           the clusters' state directories (default: /tmp/redis-api-scale)
  --pods LIST          numbers of pods of the read sweep (default: 1,2,3,4,5,6)
  --modes LIST         naive,sidekick (default: both)
  --cpu-quota PCT      CPU quota of the master and of each replica, % of one core (default: 10)
  --trial-s S          seconds per trial (default: 5)
  --p99-ms MS          a trial passes with p99 <= MS ... (default: 10)
  --min-success R      ... and a success ratio >= R (default: 0.999)
  --start-rate R       first rate tried (default: 2000 req/s)
  --step F             climbing factor between rates (default: 1.3)
  --bisect K           bisection steps after the first failure (default: 3)
  --connections C      generator connections, each to every pod (default: 64)
  --write-pods LIST    replicas of the write-side measurement (default: 1,2,4,8,16; none: skip)
  --write-rate R       POSTs per second of it (default: 500)
  --write-s S          seconds of it, idle and loaded each (default: 5)
  --prefix P --net N   names and networks of the clusters (default: scale, 81)";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scale-experiment: {e}");
            ExitCode::FAILURE
        }
    }
}

fn list<T>(text: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    if text == "none" {
        return Ok(Vec::new());
    }
    text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(parse).collect()
}

fn number<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("not a number: {s:?}"))
}

fn run() -> Result<(), String> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let mut args = pico_args::Arguments::from_env();
    if args.contains(["-h", "--help"]) {
        println!("{USAGE}");
        return Ok(());
    }
    let e = |e: pico_args::Error| e.to_string();
    match args.subcommand().map_err(e)?.as_deref() {
        Some("chart") => {
            let (json, png): (PathBuf, PathBuf) = (args.free_from_str().map_err(e)?, args.free_from_str().map_err(e)?);
            chart::draw(&load(&json)?, &png)
        }
        Some("tables") => {
            let json: PathBuf = args.free_from_str().map_err(e)?;
            print!("{}", scale::markdown(&load(&json)?));
            Ok(())
        }
        Some("run") => {
            let repo: PathBuf = args.opt_value_from_str("--repo").map_err(e)?.unwrap_or_else(|| ".".into());
            let repo = std::fs::canonicalize(&repo).map_err(|err| format!("{}: {err}", repo.display()))?;
            let api_bin = args
                .opt_value_from_str("--api-bin")
                .map_err(e)?
                .unwrap_or_else(|| repo.join("target/release/redis-api"));
            let work = args.opt_value_from_str("--work").map_err(e)?.unwrap_or_else(|| "/tmp/redis-api-scale".into());
            let out: PathBuf =
                args.opt_value_from_str("--out").map_err(e)?.unwrap_or_else(|| scale::default_out(utc::now()));
            let mut plan = Plan::new(repo, api_bin, work);
            if let Some(v) = args.opt_value_from_str::<_, String>("--pods").map_err(e)? {
                plan.pods = list(&v, number)?;
            }
            if let Some(v) = args.opt_value_from_str::<_, String>("--modes").map_err(e)? {
                plan.modes = list(&v, Mode::parse)?;
            }
            if let Some(v) = args.opt_value_from_str::<_, String>("--cpu-quota").map_err(e)? {
                plan.quota_percent = Quota::parse(&v)?.percent;
            }
            if let Some(v) = args.opt_value_from_str::<_, String>("--write-pods").map_err(e)? {
                plan.write_pods = list(&v, number)?;
            }
            let f = |args: &mut pico_args::Arguments, flag: &'static str, into: &mut f64| -> Result<(), String> {
                if let Some(v) = args.opt_value_from_str::<_, f64>(flag).map_err(|err| err.to_string())? {
                    *into = v;
                }
                Ok(())
            };
            f(&mut args, "--trial-s", &mut plan.trial_s)?;
            f(&mut args, "--p99-ms", &mut plan.max_p99_ms)?;
            f(&mut args, "--min-success", &mut plan.min_success)?;
            f(&mut args, "--start-rate", &mut plan.start_rate)?;
            f(&mut args, "--step", &mut plan.step)?;
            f(&mut args, "--write-rate", &mut plan.write_rate)?;
            f(&mut args, "--write-s", &mut plan.write_s)?;
            if let Some(v) = args.opt_value_from_str("--bisect").map_err(e)? {
                plan.bisect = v;
            }
            if let Some(v) = args.opt_value_from_str("--connections").map_err(e)? {
                plan.connections = v;
            }
            if let Some(v) = args.opt_value_from_str("--prefix").map_err(e)? {
                plan.prefix = v;
            }
            if let Some(v) = args.opt_value_from_str("--net").map_err(e)? {
                plan.net = v;
            }
            if let Some(rest) = args.finish().first() {
                return Err(format!("unexpected argument {rest:?}\n{USAGE}"));
            }
            if plan.pods.iter().chain(&plan.write_pods).any(|&n| n == 0)
                || !(plan.step > 1.0 && plan.trial_s > 0.0 && plan.write_rate > 0.0 && plan.connections > 0)
            {
                return Err("pods must be >= 1, --step > 1, --trial-s, --write-rate and --connections > 0".into());
            }
            let started = Instant::now();
            eprintln!("scale-experiment: started {}; results will go to {}", utc::stamp(utc::now()), out.display());
            let stop = on_signal()?;
            let mut results = scale::run(&plan, &stop, &mut |line| eprintln!("{line}"))?;
            results.command = format!("scale-experiment {}", raw.join(" "));
            save(&results, &out)?;
            print!("{}", scale::markdown(&results));
            println!("total time {:.0} s; results in {}", started.elapsed().as_secs_f64(), out.display());
            Ok(())
        }
        _ => Err(USAGE.into()),
    }
}

fn load(json: &Path) -> Result<Results, String> {
    let text = std::fs::read_to_string(json).map_err(|e| format!("{}: {e}", json.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", json.display()))
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
fn on_signal() -> Result<crossbeam_channel::Receiver<()>, String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let (tx, rx) = crossbeam_channel::bounded::<()>(1);
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            eprintln!("scale-experiment: signal {sig}: stopping after taking the cluster down");
            drop(tx);
        }
    });
    Ok(rx)
}
