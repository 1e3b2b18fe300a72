//! `chaos`: the overload and chaos suite (`local_cluster::chaos`) against local pods.

use local_cluster::chaos::{self, ORDER, Plan};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
Usage: chaos [OPTIONS]    as root: brings up 2 local pods from k8s/, runs the scenarios, one
                          PASS/FAIL line each with its figures; exit 1 if any failed

Options:
  --long             also the scenarios of 30 s or more (#1, #5, #11, #13, #14)
  --only LIST        just these scenario numbers, e.g. 2,9 (default: the fast subset, or all
                     with --long)
  --out FILE         also write the results as a Markdown table
  --overload-s S     seconds of #1's overload (default: 30)
  --overload-cpu PCT CPU quota of #1's API, % of one core (default: 25, the Deployment's
                     250m request; 0: none)
  --overload-period-ms MS   CFS period of that quota (default: 10: the Deployment sets a
                     CPU request, no limit, so the pod is never frozen for 75 ms at a
                     time; 100 is what a CPU limit does, see docs/chaos.md)
  --overload-connections N   connections of #1's generator (default: MAX_CONNECTIONS)
  --slowloris-s S    seconds of #6's slowhttptest attack (default: 20)
  --retries N        runs of a failed scenario again (default: 0)
  --cut-s S          seconds of #5's link cut (default: 70, past Redis's 60 s repl-timeout)
  --outage-s S       seconds #11 keeps the master down (default: 180)
  --loose-timing     time bounds half as much again (what CI uses on its busy machine);
                     correctness is judged the same
  --env KEY=VALUE    extra environment for the APIs, after the manifest's (repeatable)
  --repo DIR         repository root holding k8s/ and run.sh (default: .)
  --api-bin PATH     redis-api binary (default: REPO/target/release/redis-api)
  --state DIR        the cluster's state (default: /tmp/redis-api-chaos)
  --prefix P --net N names and networks of the cluster (default: chaos, 85)

Scenarios: 1 10x overload, 2 master SIGSTOP, 3 master kill + AOF restart, 4 replica full
resync, 5 master link cut, 6 3000 slowloris connections, 7 fd exhaustion, 8 SIGTERM under
load, 9 pipelined non-reader, 10 idle-socket flood. At a Service, with the emulated kubelet:
11 master down 3 min, 12 master SIGSTOP (liveness restart), 13 10x overload (no restarts),
14 one replica's link cut, 15 replica restarted on an older dump.";

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("chaos: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool, String> {
    let mut args = pico_args::Arguments::from_env();
    if args.contains(["-h", "--help"]) {
        println!("{USAGE}");
        return Ok(true);
    }
    let e = |e: pico_args::Error| e.to_string();
    let long = args.contains("--long");
    let only: Option<String> = args.opt_value_from_str("--only").map_err(e)?;
    let out: Option<PathBuf> = args.opt_value_from_str("--out").map_err(e)?;
    let overload_s: f64 = args.opt_value_from_str("--overload-s").map_err(e)?.unwrap_or(30.0);
    let overload_cpu: f64 = args.opt_value_from_str("--overload-cpu").map_err(e)?.unwrap_or(25.0);
    let overload_period_ms: u64 = args.opt_value_from_str("--overload-period-ms").map_err(e)?.unwrap_or(10);
    if !(1..=1000).contains(&overload_period_ms) {
        return Err(format!("--overload-period-ms {overload_period_ms}: 1 to 1000"));
    }
    let overload_quota = if overload_cpu > 0.0 {
        let mut q = local_cluster::cgroup::Quota::parse(&overload_cpu.to_string())?;
        q.period_us = overload_period_ms * 1000;
        Some(q)
    } else {
        None
    };
    let overload_connections: usize = args.opt_value_from_str("--overload-connections").map_err(e)?.unwrap_or(0);
    let slowloris_s: u32 = args.opt_value_from_str("--slowloris-s").map_err(e)?.unwrap_or(20);
    let cut_s: f64 = args.opt_value_from_str("--cut-s").map_err(e)?.unwrap_or(70.0);
    let outage_s: f64 = args.opt_value_from_str("--outage-s").map_err(e)?.unwrap_or(180.0);
    let strict_timing = !args.contains("--loose-timing");
    let retries: u32 = args.opt_value_from_str("--retries").map_err(e)?.unwrap_or(0);
    let mut extra_env = Vec::new();
    while let Some(kv) = args.opt_value_from_str::<_, String>("--env").map_err(e)? {
        let (k, v) = kv.split_once('=').ok_or_else(|| format!("--env {kv}: expected KEY=VALUE"))?;
        extra_env.push((k.to_owned(), v.to_owned()));
    }
    let repo: PathBuf = args.opt_value_from_str("--repo").map_err(e)?.unwrap_or_else(|| ".".into());
    let repo = std::fs::canonicalize(&repo).map_err(|err| format!("{}: {err}", repo.display()))?;
    let api_bin: PathBuf =
        args.opt_value_from_str("--api-bin").map_err(e)?.unwrap_or_else(|| repo.join("target/release/redis-api"));
    let state: PathBuf =
        args.opt_value_from_str("--state").map_err(e)?.unwrap_or_else(|| "/tmp/redis-api-chaos".into());
    let prefix: String = args.opt_value_from_str("--prefix").map_err(e)?.unwrap_or_else(|| "chaos".into());
    let net: u8 = args.opt_value_from_str("--net").map_err(e)?.unwrap_or(85);
    if let Some(rest) = args.finish().first() {
        return Err(format!("unexpected argument {rest:?}\n{USAGE}"));
    }
    let only = match only {
        Some(list) => list
            .split(',')
            .map(|n| n.trim().parse::<u8>().ok().filter(|n| ORDER.contains(n)).ok_or(format!("scenario {n:?}: 1-15")))
            .collect::<Result<Vec<u8>, String>>()?,
        None => Plan::scenarios(long),
    };
    if !api_bin.exists() {
        return Err(format!("{} not found: cargo build --release first", api_bin.display()));
    }
    let plan = Plan {
        repo,
        api_bin,
        extra_env,
        state: state.clone(),
        prefix,
        net,
        only,
        overload_s,
        overload_quota,
        overload_connections,
        slowloris_s,
        cut_s,
        outage_s,
        strict_timing,
        retries,
    };
    on_signal(state)?;
    let started = local_cluster::utc::now();
    let verdicts = chaos::run(&plan, &mut |v| println!("{}", v.line()))?;
    let failed = verdicts.iter().filter(|v| !v.passed()).count();
    println!("{} of {} scenarios passed", verdicts.len() - failed, verdicts.len());
    if let Some(out) = out {
        // When it ran, from the clock and in UTC: a time copied into the docs is then the run's.
        let (now, args): (u64, Vec<String>) = (local_cluster::utc::now(), std::env::args().skip(1).collect());
        let header = format!(
            "Run from {} to {}: `chaos {}`\n\n",
            local_cluster::utc::stamp(started),
            local_cluster::utc::stamp(now),
            args.join(" ")
        );
        std::fs::write(&out, header + &chaos::markdown(&verdicts))
            .map_err(|err| format!("{}: {err}", out.display()))?;
    }
    Ok(failed == 0)
}

/// On SIGINT or SIGTERM the pods are taken down before exiting, not left behind.
fn on_signal(state: PathBuf) -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            eprintln!("chaos: signal {sig}: taking the pods down");
            if let Err(e) = local_cluster::down(&state) {
                eprintln!("chaos: {e}");
            }
            std::process::exit(130);
        }
    });
    Ok(())
}
