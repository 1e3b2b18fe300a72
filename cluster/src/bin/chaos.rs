//! `chaos`: the overload and chaos suite (`local_cluster::chaos`) against local pods.

use cli::{Args, Failure, Flag, Parsed, UsageError};
use local_cluster::cgroup::Quota;
use local_cluster::chaos::{self, ORDER, Plan};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "\
chaos: as root, brings up 2 local pods from k8s/, runs the scenarios, one PASS/FAIL line each
with its figures; \"scenario k of n\" and the time left before each.

Usage: chaos [FLAGS]";

const FOOTER: &str = "\
Scenarios: 1 10x overload, 2 master SIGSTOP, 3 master kill + AOF restart, 4 replica full
resync, 5 master link cut, 6 3000 slowloris connections, 7 fd exhaustion, 8 SIGTERM under
load, 9 pipelined non-reader, 10 idle-socket flood. At a Service, with the emulated kubelet:
11 master down 3 min, 12 master SIGSTOP (liveness restart), 13 10x overload (no restarts),
14 one replica's link cut, 15 replica restarted on an older dump.

Durations take a unit: 30s, 10ms, 3m.
Exit status: 0 every scenario passed, 1 one failed (or the run could not start), 2 bad arguments.";

const LONG: Flag = Flag::switch("--long", "also the scenarios of 30 s or more (#1, #5, #11, #13, #14)");
const ONLY: Flag =
    Flag::new("--only", "LIST", "just these scenario numbers, e.g. 2,9 (default: the fast subset, or all with --long)");
const OUT: Flag = Flag::new("--out", "FILE", "also write the results as a Markdown table");
const OVERLOAD: Flag =
    Flag::new("--overload", "DURATION", "length of #1's overload").default("30s").old("--overload-s", None, "s");
const OVERLOAD_CPU_QUOTA: Flag = Flag::new(
    "--overload-cpu-quota",
    "PCT",
    "CPU quota of #1's API, % of one core (25: the Deployment's 250m request; 0: none)",
)
.default("25")
.old("--overload-cpu", None, "");
const OVERLOAD_CPU_PERIOD: Flag = Flag::new(
    "--overload-cpu-period",
    "DURATION",
    "CFS period of that quota (10ms: the Deployment sets a CPU request, no limit, so the pod is never \
     frozen for 75 ms at a time; 100ms is what a CPU limit does, see docs/chaos.md)",
)
.default("10ms")
.old("--overload-period-ms", None, "ms");
const OVERLOAD_CONNECTIONS: Flag =
    Flag::new("--overload-connections", "N", "connections of #1's generator (0: MAX_CONNECTIONS)").default("0");
const SLOWLORIS: Flag = Flag::new("--slowloris", "DURATION", "length of #6's slowhttptest attack, whole seconds")
    .default("20s")
    .old("--slowloris-s", None, "s");
const RETRIES: Flag = Flag::new("--retries", "N", "runs of a failed scenario again").default("0");
const CUT: Flag = Flag::new("--cut", "DURATION", "length of #5's link cut (past Redis's 60 s repl-timeout)")
    .default("70s")
    .old("--cut-s", None, "s");
const OUTAGE: Flag =
    Flag::new("--outage", "DURATION", "how long #11 keeps the master down").default("3m").old("--outage-s", None, "s");
const LOOSE_TIMING: Flag = Flag::switch(
    "--loose-timing",
    "time bounds half as much again (what CI uses on its busy machine); correctness is judged the same",
);
const ENV: Flag = Flag::new("--env", "KEY=VALUE", "extra environment for the APIs, after the manifest's").many();
const REPO: Flag = Flag::new("--repo", "DIR", "repository root holding k8s/ and run.sh").default(".");
const API_BIN: Flag = Flag::new("--api-bin", "PATH", "redis-api binary (default: REPO/target/release/redis-api)");
const STATE: Flag = Flag::new("--state", "DIR", "the cluster's state").default("/tmp/redis-api-chaos");
const PREFIX: Flag = Flag::new("--prefix", "P", "prefix of the cluster's names").default("chaos");
const NET: Flag = Flag::new("--net", "N", "second octet of the cluster's networks").default("85");
const FLAGS: &[Flag] = &[
    LONG,
    ONLY,
    OUT,
    OVERLOAD,
    OVERLOAD_CPU_QUOTA,
    OVERLOAD_CPU_PERIOD,
    OVERLOAD_CONNECTIONS,
    SLOWLORIS,
    RETRIES,
    CUT,
    OUTAGE,
    LOOSE_TIMING,
    ENV,
    REPO,
    API_BIN,
    STATE,
    PREFIX,
    NET,
];

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => e.report("chaos"),
    }
}

fn run() -> Result<bool, Failure> {
    let env = |k: &str| std::env::var(k).ok();
    let args = match Args::parse(FLAGS, std::env::args_os().skip(1), &env, 0)? {
        Parsed::Help => {
            print!("{}", cli::help(USAGE, FLAGS, FOOTER));
            return Ok(true);
        }
        Parsed::Version => {
            println!("chaos {}", env!("CARGO_PKG_VERSION"));
            return Ok(true);
        }
        Parsed::Run(args) => args,
    };
    for warning in args.warnings() {
        eprintln!("chaos: warning: {warning}");
    }
    let hour = Duration::from_secs(3600);
    let overload_s = args.duration(&OVERLOAD, Duration::from_secs(1), hour)?.as_secs_f64();
    let overload_cpu: f64 = args.get(&OVERLOAD_CPU_QUOTA, "a quota in % of one core (0: none)", |s| {
        s.parse().ok().filter(|p: &f64| *p >= 0.0)
    })?;
    let period = args.duration(&OVERLOAD_CPU_PERIOD, Duration::from_millis(1), Duration::from_secs(1))?;
    let overload_quota = if overload_cpu > 0.0 {
        let mut q = Quota::parse(&overload_cpu.to_string())
            .map_err(|why| UsageError(format!("{}: {why}", OVERLOAD_CPU_QUOTA.name)))?;
        q.period_us = period.as_micros() as u64;
        Some(q)
    } else {
        None
    };
    let path = |flag: &Flag| args.opt(flag, "a path", |s| Some(PathBuf::from(s)));
    let repo = path(&REPO)?.unwrap_or_else(|| ".".into());
    let repo = std::fs::canonicalize(&repo).map_err(|err| Failure::Run(format!("{}: {err}", repo.display())))?;
    let api_bin = path(&API_BIN)?.unwrap_or_else(|| repo.join("target/release/redis-api"));
    let state = path(&STATE)?.unwrap_or_else(|| "/tmp/redis-api-chaos".into());
    let only = args.opt(&ONLY, "scenario numbers from 1 to 15, comma-separated", |list| {
        list.split(',').map(|n| n.trim().parse::<u8>().ok().filter(|n| ORDER.contains(n))).collect::<Option<Vec<u8>>>()
    })?;
    let only = only.unwrap_or_else(|| Plan::scenarios(args.switch(&LONG).unwrap_or(false)));
    let extra_env = local_cluster::env_pairs(&args, &ENV)?;
    let out = path(&OUT)?;
    let (prefix, net) = (args.get(&PREFIX, "1 to 6 letters", |s| Some(s.to_owned()))?, args.number(&NET, 1u8, 253)?);
    let overload_connections = args.number(&OVERLOAD_CONNECTIONS, 0, 100_000)?;
    let slowloris_s = args.duration(&SLOWLORIS, Duration::from_secs(1), hour)?.as_secs() as u32;
    let cut_s = args.duration(&CUT, Duration::from_secs(1), hour)?.as_secs_f64();
    let outage_s = args.duration(&OUTAGE, Duration::from_secs(1), hour)?.as_secs_f64();
    let strict_timing = !args.switch(&LOOSE_TIMING)?;
    let retries = args.number(&RETRIES, 0, 10)?;
    if !api_bin.exists() {
        return Err(Failure::Run(format!("{} not found: cargo build --release first", api_bin.display())));
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
    on_signal(state).map_err(Failure::Run)?;
    let started = local_cluster::utc::now();
    let verdicts = chaos::run(&plan, &mut |v| println!("{}", v.line())).map_err(Failure::Run)?;
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
            .map_err(|err| Failure::Run(format!("{}: {err}", out.display())))?;
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
