//! `tools chaos`: the overload and chaos suite (`crate::chaos`) against local pods.

use super::{API_BIN, Common, ENV, NET, PREFIX, REPO, STATE};
use crate::cgroup::Quota;
use crate::chaos::{self, Plan, SCENARIOS};
use anyhow::{Context, Result, bail};
use cli::Flag;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

const PROGRAM: &str = "tools chaos";

const USAGE: &str = "\
tools chaos: as root, brings up 2 local pods from k8s/, runs the scenarios, one PASS/FAIL line
each with its figures; \"scenario k of n\" and the time left before each.

Usage: tools chaos [FLAGS]";

const LONG: Flag = Flag::switch("--long", "also the scenarios of 30 s or more (marked long below)");
const ONLY: Flag =
    Flag::new("--only", "LIST", "just these scenario numbers, e.g. 2,9 (default: the fast subset, or all with --long)")
        .parsed::<Only>("scenario numbers from the list below, comma-separated");
const OUT: Flag = Flag::new("--out", "FILE", "also write the results as a Markdown table");
const OVERLOAD: Flag = Flag::new("--overload", "DURATION", "length of #1's overload")
    .default("30s")
    .old("--overload-s", None, "s")
    .duration_in(Duration::from_secs(1), Duration::from_secs(3600));
const OVERLOAD_CPU_QUOTA: Flag = Flag::new(
    "--overload-cpu-quota",
    "PCT",
    "CPU quota of #1's API, % of one core (25: the Deployment's 250m request; 0: none)",
)
.default("25")
.old("--overload-cpu", None, "")
.accepts("0 (none), or a quota from 1 to 100 (% of one core)", |s| {
    s.parse::<f64>().is_ok_and(|p| p == 0.0) || s.parse::<Quota>().is_ok()
});
const OVERLOAD_CPU_PERIOD: Flag = Flag::new(
    "--overload-cpu-period",
    "DURATION",
    "CFS period of that quota (10ms: the Deployment sets a CPU request, no limit, so the pod is never \
     frozen for 75 ms at a time; 100ms is what a CPU limit does, see docs/chaos.md)",
)
.default("10ms")
.old("--overload-period-ms", None, "ms")
.duration_in(Duration::from_millis(1), Duration::from_secs(1));
const OVERLOAD_CONNECTIONS: Flag =
    Flag::new("--overload-connections", "N", "connections of #1's generator (0: MAX_CONNECTIONS)")
        .default("0")
        .number_in(0, 100_000);
const SLOWLORIS: Flag = Flag::new("--slowloris", "DURATION", "length of #6's slowhttptest attack, whole seconds")
    .default("20s")
    .old("--slowloris-s", None, "s")
    .duration_in(Duration::from_secs(1), Duration::from_secs(3600));
const RETRIES: Flag = Flag::new("--retries", "N", "runs of a failed scenario again").default("0").number_in(0, 10);
const CUT: Flag = Flag::new("--cut", "DURATION", "length of #5's link cut (past Redis's 60 s repl-timeout)")
    .default("70s")
    .old("--cut-s", None, "s")
    .duration_in(Duration::from_secs(1), Duration::from_secs(3600));
const OUTAGE: Flag = Flag::new("--outage", "DURATION", "how long #11 keeps the master down")
    .default("3m")
    .old("--outage-s", None, "s")
    .duration_in(Duration::from_secs(1), Duration::from_secs(3600));
const LOOSE_TIMING: Flag = Flag::switch(
    "--loose-timing",
    "time bounds half as much again (what CI uses on its busy machine); correctness is judged the same",
);
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
    STATE.default("/tmp/redis-api-chaos"),
    PREFIX.default("chaos"),
    NET.default("85"),
];

/// The help's last part: every scenario of [`SCENARIOS`], in the order they run.
fn footer() -> String {
    let numbers = || SCENARIOS.iter().map(|s| s.number);
    let (first, last) = (numbers().min().unwrap_or(0), numbers().max().unwrap_or(0));
    let mut out = format!(
        "Scenarios: {first}-{last}, in the order they run (long: only with --long; Service: judged at a\n\
         Service, with the emulated kubelet probing):\n"
    );
    for s in SCENARIOS {
        let marks: Vec<&str> = [(s.long, "long"), (s.at_service, "Service")]
            .into_iter()
            .filter_map(|(on, mark)| on.then_some(mark))
            .collect();
        let marks = if marks.is_empty() { String::new() } else { format!(" ({})", marks.join(", ")) };
        out.push_str(&format!("  #{:<3} {}{marks}\n", s.number, s.name));
    }
    out.push_str(
        "\nDurations take a unit: 30s, 10ms, 3m.\n\
         Exit status: 0 every scenario passed, 1 one failed (or the run could not start), 2 bad arguments.",
    );
    out
}

/// `--only 2,9`: scenario numbers that exist.
struct Only(Vec<u8>);

impl std::str::FromStr for Only {
    type Err = ();
    fn from_str(list: &str) -> Result<Only, ()> {
        let number = |n: &str| chaos::scenario(n.trim().parse().ok()?).map(|s| s.number);
        list.split(',').map(number).collect::<Option<Vec<u8>>>().map(Only).ok_or(())
    }
}

pub(super) fn run(argv: Vec<OsString>) -> Result<bool> {
    let raw: Vec<String> = argv.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let Some(args) = super::parse(PROGRAM, USAGE, FLAGS, &footer(), argv, 0)? else { return Ok(true) };
    let common = Common::parse(&args)?;
    let overload_s = args.duration(&OVERLOAD)?.as_secs_f64();
    let period = args.duration(&OVERLOAD_CPU_PERIOD)?;
    // 0 or a quota, as declared.
    let overload_quota = args.value::<String>(&OVERLOAD_CPU_QUOTA)?.parse::<Quota>().ok().map(|mut q| {
        q.period_us = period.as_micros() as u64;
        q
    });
    let only = match args.opt_value::<Only>(&ONLY)? {
        Some(Only(only)) => only,
        None => Plan::scenarios(args.switch(&LONG)?),
    };
    let out: Option<PathBuf> = args.opt_value(&OUT)?;
    let overload_connections = args.number(&OVERLOAD_CONNECTIONS)?;
    let slowloris_s = args.duration(&SLOWLORIS)?.as_secs() as u32;
    let cut_s = args.duration(&CUT)?.as_secs_f64();
    let outage_s = args.duration(&OUTAGE)?.as_secs_f64();
    let strict_timing = !args.switch(&LOOSE_TIMING)?;
    let retries = args.number(&RETRIES)?;
    let repo = common.repo()?;
    let api_bin = common.api_bin(&repo, false);
    if !api_bin.exists() {
        bail!("{} not found: cargo build --release first", api_bin.display());
    }
    let plan = Plan {
        repo,
        api_bin,
        extra_env: common.env,
        state: common.state.clone(),
        prefix: common.prefix,
        net: common.net,
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
    // On SIGINT or SIGTERM the pods are taken down before exiting, not left behind.
    let state = common.state;
    super::on_signal(move |sig| {
        eprintln!("{PROGRAM}: signal {sig}: taking the pods down");
        if let Err(e) = crate::down(&state) {
            eprintln!("{PROGRAM}: {e:#}");
        }
        std::process::exit(130);
    })?;
    let started = crate::utc::now();
    let verdicts = chaos::run(&plan, &mut |v| println!("{}", v.line()))?;
    let failed = verdicts.iter().filter(|v| !v.passed()).count();
    println!("{} of {} scenarios passed", verdicts.len() - failed, verdicts.len());
    if let Some(out) = out {
        // When it ran, from the clock and in UTC: a time copied into the docs is then the run's.
        let header = format!(
            "Run from {} to {}: `tools chaos {}`\n\n",
            crate::utc::stamp(started),
            crate::utc::stamp(crate::utc::now()),
            raw.join(" ")
        );
        std::fs::write(&out, header + &chaos::markdown(&verdicts))
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(failed == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The help lists every scenario of the table, marked long or at a Service as it is.
    #[test]
    fn help_lists_the_scenario_table() {
        let f = footer();
        assert!(f.starts_with("Scenarios: 1-15"), "{f}");
        for s in SCENARIOS {
            assert!(f.contains(&format!("#{:<3} {}", s.number, s.name)), "#{} missing: {f}", s.number);
        }
        assert!(f.contains("#1   10x overload (long)"), "{f}");
        assert!(f.contains("#11  master down, judged at the Service (long, Service)"), "{f}");
        assert!(f.contains("#12  master SIGSTOP, kubelet restart (Service)"), "{f}");
    }
}
