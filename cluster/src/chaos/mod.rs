//! The overload and chaos suite: local pods brought up from `k8s/`, one fault
//! injected per scenario under load, one PASS/FAIL line each with the figures measured.
//! [`probe`] measures; [`scenarios`] injects and judges; [`at_service`] judges #11-#15 at a
//! Service, with the emulated kubelet probing.

use anyhow::{Context, Result, anyhow, bail};
pub mod at_service;
pub mod probe;
pub mod scenarios;

use crate::{Options, ReadFrom};
use redis_api::config::{Command, Config};
use std::collections::HashMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One scenario of the suite: a row of [`SCENARIOS`].
pub struct Scenario {
    pub number: u8,
    /// Its name as the help and the progress line say it.
    pub name: &'static str,
    /// Takes 30 s or more: runs only with `--long` (or `--only`).
    pub long: bool,
    /// Judged at a Service, with the emulated kubelet probing.
    pub at_service: bool,
    /// About how long it takes at most, in seconds: the docs/chaos.md run's times plus a
    /// margin, scaled with the plan's durations. Only for the line printed before it (a silent
    /// minute looks like a hang).
    pub up_to: fn(&Ctx, &Plan) -> f64,
    pub run: fn(&Ctx, &Plan) -> Result<Verdict>,
}

/// Every scenario, in the order they run: the ones that leave the cluster changed (a
/// restarted master, a restarted API) come last. #12 takes 30-60 s but is not `long`: it is
/// the only check that a hung master is restarted, so CI runs it.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        number: 9,
        name: "pipelined non-reader",
        long: false,
        at_service: false,
        up_to: |_, _| 15.0,
        run: |ctx, _| scenarios::pipelined_non_reader(ctx),
    },
    Scenario {
        number: 7,
        name: "fd exhaustion",
        long: false,
        at_service: false,
        up_to: |_, _| 10.0,
        run: |ctx, _| scenarios::fd_exhaustion(ctx),
    },
    Scenario {
        number: 6,
        name: "slowloris at 3x the cap",
        long: false,
        at_service: false,
        up_to: |_, plan| 2.0 * f64::from(plan.slowloris_s) + 15.0,
        run: |ctx, plan| scenarios::slowloris(ctx, plan.slowloris_s),
    },
    Scenario {
        number: 10,
        name: "idle-socket flood at 3x the cap",
        long: false,
        at_service: false,
        up_to: |_, plan| f64::from(plan.slowloris_s) + 20.0,
        run: |ctx, plan| scenarios::idle_flood(ctx, f64::from(plan.slowloris_s)),
    },
    Scenario {
        number: 1,
        name: "10x overload",
        long: true,
        at_service: false,
        up_to: |_, plan| plan.overload_s + 20.0,
        run: |ctx, plan| scenarios::overload(ctx, plan.overload_s, plan.overload_quota, plan.overload_connections),
    },
    Scenario {
        number: 13,
        name: "10x overload, kubelet probing",
        long: true,
        at_service: true,
        up_to: |_, plan| plan.overload_s + 20.0,
        run: at_service::overload_probes,
    },
    Scenario {
        number: 2,
        name: "master SIGSTOP 10 s",
        long: false,
        at_service: false,
        up_to: |_, _| 30.0,
        run: |ctx, _| scenarios::master_stopped(ctx),
    },
    Scenario {
        number: 4,
        name: "replica full resync",
        long: false,
        at_service: false,
        up_to: |_, _| 20.0,
        run: |ctx, _| scenarios::replica_resync(ctx),
    },
    Scenario {
        number: 15,
        name: "replica restarted on an older dump",
        long: false,
        at_service: true,
        up_to: |_, _| 20.0,
        run: |ctx, _| at_service::older_dump(ctx),
    },
    Scenario {
        number: 3,
        name: "master kill + AOF restart",
        long: false,
        at_service: false,
        up_to: |_, _| 20.0,
        run: |ctx, _| scenarios::master_killed(ctx),
    },
    Scenario {
        number: 5,
        name: "whole-pod master link cut",
        long: true,
        at_service: false,
        up_to: |_, plan| plan.cut_s + 15.0,
        run: |ctx, plan| scenarios::link_cut(ctx, plan.cut_s),
    },
    Scenario {
        number: 14,
        name: "one replica cut off, judged at the Service",
        long: true,
        at_service: true,
        up_to: |ctx, _| ctx.link_grace.as_secs_f64() + 45.0,
        run: |ctx, _| at_service::replica_link_cut(ctx, ctx.link_grace.as_secs_f64() + 15.0),
    },
    Scenario {
        number: 11,
        name: "master down, judged at the Service",
        long: true,
        at_service: true,
        up_to: |_, plan| plan.outage_s + 20.0,
        run: |ctx, plan| at_service::master_outage(ctx, plan.outage_s),
    },
    Scenario {
        number: 12,
        name: "master SIGSTOP, kubelet restart",
        long: false,
        at_service: true,
        up_to: |_, _| 60.0,
        run: |ctx, _| at_service::master_hung(ctx),
    },
    Scenario {
        number: 8,
        name: "SIGTERM under load",
        long: false,
        at_service: false,
        up_to: |_, _| 10.0,
        run: |ctx, _| scenarios::sigterm(ctx),
    },
];

/// Scenario `number` of [`SCENARIOS`].
pub fn scenario(number: u8) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.number == number)
}

/// Outcome counts as a reader takes them: `5101 × 200, 2 × 503, 1 × reset` (count, then the
/// status or failure; `200:5101` read like a status code), or `none`.
pub fn counts_text<L: std::fmt::Display>(counts: impl IntoIterator<Item = (L, u64)>) -> String {
    let parts: Vec<String> = counts.into_iter().map(|(label, n)| format!("{n} × {label}")).collect();
    if parts.is_empty() { "none".into() } else { parts.join(", ") }
}

/// A reaped process's exit status as text: `exit 0`, `exit 143`, or `no exit` (still running).
pub fn exit_text(code: Option<i32>) -> String {
    code.map_or_else(|| "no exit".into(), |c| format!("exit {c}"))
}

/// What to run, where.
#[derive(Debug, Clone)]
pub struct Plan {
    pub repo: PathBuf,
    pub api_bin: PathBuf,
    /// Extra environment for the APIs (after the manifest's), e.g. to try a setting.
    pub extra_env: Vec<(String, String)>,
    pub state: PathBuf,
    pub prefix: String,
    pub net: u8,
    /// Scenario numbers to run (in the order of [`SCENARIOS`], whatever theirs).
    pub only: Vec<u8>,
    pub overload_s: f64,
    /// CPU quota of the overloaded API (`None`: none).
    pub overload_quota: Option<crate::cgroup::Quota>,
    /// Connections of #1's generator (0: twice the API's connection cap).
    pub overload_connections: usize,
    pub slowloris_s: u32,
    pub cut_s: f64,
    /// Seconds #11 keeps the master down.
    pub outage_s: f64,
    /// Time bounds as stated (`false`: half as much again, for a busy shared CI machine).
    pub strict_timing: bool,
    /// Runs of a failed scenario again (0: none). Latency is judged against a baseline taken
    /// on the same shared machine; CI allows one re-run, and the line shows the first failure.
    pub retries: u32,
}

impl Plan {
    /// The fast subset (what CI runs), or everything with `long`.
    pub fn scenarios(long: bool) -> Vec<u8> {
        SCENARIOS.iter().filter(|s| long || !s.long).map(|s| s.number).collect()
    }
}

/// A fault undone when dropped, however the scenario ends (an error, a panic): a link brought
/// back, a descriptor limit or a CPU group put back. [`Undo::now`] undoes it at once and
/// returns the error a drop can only print.
pub(crate) struct Undo<F: FnOnce() -> Result<()>> {
    what: &'static str,
    undo: Option<F>,
}

impl<F: FnOnce() -> Result<()>> Undo<F> {
    /// `undo` undoes `what` (named in the error).
    pub(crate) fn new(what: &'static str, undo: F) -> Undo<F> {
        Undo { what, undo: Some(undo) }
    }

    pub(crate) fn now(mut self) -> Result<()> {
        match self.undo.take() {
            Some(undo) => undo().with_context(|| format!("undoing {}", self.what)),
            None => Ok(()),
        }
    }
}

impl<F: FnOnce() -> Result<()>> Drop for Undo<F> {
    fn drop(&mut self) {
        if let Some(undo) = self.undo.take()
            && let Err(e) = undo()
        {
            eprintln!("chaos: undoing {}: {e:#}", self.what);
        }
    }
}

/// The cluster under test and the API's settings the expectations depend on.
pub struct Ctx {
    pub repo: PathBuf,
    pub state: PathBuf,
    pub prefix: String,
    pub net: u8,
    pub pods: usize,
    /// The harness's login ([`crate::HARNESS`]) on the master and the replicas.
    pub harness: crate::Login,
    pub max_connections: usize,
    pub deadline: Duration,
    pub write_timeout: Duration,
    pub link_grace: Duration,
    pub shutdown_grace: Duration,
    pub strict_timing: bool,
}

impl Ctx {
    pub fn pod(&self, i: usize) -> SocketAddr {
        crate::pod_addr(self.net, i)
    }

    pub fn master(&self) -> SocketAddr {
        crate::master_addr(self.net)
    }

    /// The current pid of process `what` (it changes when a scenario restarts it).
    pub fn pid(&self, what: &str) -> Result<u32> {
        crate::State::load(&self.state)?.pid(what).with_context(|| format!("no process {what}"))
    }

    pub fn api_pid(&self, i: usize) -> Result<u32> {
        self.pid(&format!("pod-{i}/{}", crate::API))
    }
}

/// The settings of the running API `pid`, read as it read them: its arguments and environment
/// (from `/proc`) through the server's own parser, defaults included.
fn api_config(pid: u32) -> Result<Config> {
    let read = |what: &str| -> Result<Vec<String>> {
        let bytes = std::fs::read(format!("/proc/{pid}/{what}")).with_context(|| format!("/proc/{pid}/{what}"))?;
        Ok(bytes
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect())
    };
    let args: Vec<OsString> = read("cmdline")?.into_iter().skip(1).map(OsString::from).collect();
    let env: HashMap<String, String> = read("environ")?
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    match Config::parse(args, |k| env.get(k).cloned()) {
        Ok(Command::Run(config)) => Ok(*config),
        Ok(_) => Err(anyhow!("the API was started for --help or --version")),
        Err(e) => Err(anyhow!("the API's settings: {e:#}")),
    }
}

/// One scenario's result.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub number: u8,
    pub name: &'static str,
    pub figures: Vec<String>,
    pub failures: Vec<String>,
    pub seconds: f64,
}

impl Verdict {
    pub fn new(number: u8, name: &'static str) -> Verdict {
        Verdict { number, name, figures: Vec::new(), failures: Vec::new(), seconds: 0.0 }
    }

    pub fn figure(&mut self, text: impl Into<String>) {
        self.figures.push(text.into());
    }

    pub fn fail(&mut self, why: impl Into<String>) {
        self.failures.push(why.into());
    }

    /// Records `why` as a failure unless `ok`.
    pub fn check(&mut self, ok: bool, why: impl Into<String>) {
        if !ok {
            self.fail(why);
        }
    }

    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The one line of the suite's output.
    pub fn line(&self) -> String {
        let mut line = format!(
            "{} #{} {} ({:.0} s): {}",
            if self.passed() { "PASS" } else { "FAIL" },
            self.number,
            self.name,
            self.seconds,
            self.figures.join("; ")
        );
        if !self.passed() {
            line.push_str(&format!(" -- FAILED: {}", self.failures.join("; ")));
        }
        line
    }
}

fn run_one(ctx: &Ctx, plan: &Plan, scenario: &Scenario) -> Verdict {
    let started = Instant::now();
    let mut v = (scenario.run)(ctx, plan).unwrap_or_else(|e| {
        let mut v = Verdict::new(scenario.number, "could not run");
        v.fail(format!("{e:#}"));
        v
    });
    v.seconds = started.elapsed().as_secs_f64();
    v
}

/// Brings up two pods, runs the plan's scenarios (printing each line through `out` as it
/// ends), takes the pods down. Scenarios after a failed one still run, on a cluster made
/// healthy again (every pod ready) or, failing that, a new one.
pub fn run(plan: &Plan, out: &mut dyn FnMut(&Verdict)) -> Result<Vec<Verdict>> {
    let opts = Options {
        repo: plan.repo.clone(),
        state: plan.state.clone(),
        prefix: plan.prefix.clone(),
        net: plan.net,
        api_bin: plan.api_bin.clone(),
        extra_env: plan.extra_env.clone(),
        cpu_quota: None,
        read_from: ReadFrom::Replica,
    };
    let pods = 2;
    let cluster = crate::Cluster::up(pods, &opts)?;
    let verdicts = suite(plan, pods, out)?;
    cluster.down()?;
    Ok(verdicts)
}

/// The plan's scenarios on the cluster that is up, in the order of [`SCENARIOS`].
fn suite(plan: &Plan, pods: usize, out: &mut dyn FnMut(&Verdict)) -> Result<Vec<Verdict>> {
    let api = crate::State::load(&plan.state)?.pid(&format!("pod-1/{}", crate::API)).context("no API")?;
    let config = api_config(api)?;
    let ctx = Ctx {
        repo: plan.repo.clone(),
        state: plan.state.clone(),
        prefix: plan.prefix.clone(),
        net: plan.net,
        pods,
        harness: crate::harness_login(&plan.state)?,
        max_connections: config.max_connections,
        deadline: config.deadline,
        write_timeout: config.write_timeout,
        link_grace: config.replica_link_grace,
        shutdown_grace: config.shutdown_grace,
        strict_timing: plan.strict_timing,
    };
    // A first value, so that GETs answer 200.
    let status = crate::http(ctx.pod(1), "POST", "/", Some(r#"{"value": 1}"#))?.0;
    if status != 200 {
        bail!("first POST answered {status}");
    }
    for i in 1..=pods {
        crate::wait_get(ctx.pod(i), Duration::from_secs(30))?;
    }
    let mut verdicts = Vec::new();
    let chosen: Vec<&Scenario> = SCENARIOS.iter().filter(|s| plan.only.contains(&s.number)).collect();
    let up_tos: Vec<f64> = chosen.iter().map(|s| (s.up_to)(&ctx, plan)).collect();
    for (k, scenario) in chosen.into_iter().enumerate() {
        let n = scenario.number;
        eprintln!("{}", scenario_line(k + 1, n, scenario.name, &up_tos));
        let mut v = run_one(&ctx, plan, scenario);
        for _ in 0..plan.retries {
            if v.passed() {
                break;
            }
            let first = v.line();
            for i in 1..=pods {
                crate::wait_ready(ctx.pod(i), Duration::from_secs(60))?;
            }
            v = run_one(&ctx, plan, scenario);
            v.figure(format!("re-run; the first run: {first}"));
        }
        out(&v);
        verdicts.push(v);
        for i in 1..=pods {
            crate::wait_ready(ctx.pod(i), Duration::from_secs(60)).with_context(|| format!("after #{n}: pod-{i}"))?;
        }
    }
    Ok(verdicts)
}

/// The line before the `k`th (1-based) of the chosen scenarios, number `n`: its place, name and
/// longest run, and the longest the rest of the suite can take (this one and the later ones of
/// `up_tos`, each scenario's upper estimate; re-runs of failed ones come on top).
fn scenario_line(k: usize, n: u8, name: &str, up_tos: &[f64]) -> String {
    let this = up_tos.get(k.saturating_sub(1)).copied().unwrap_or(0.0);
    let left: f64 = up_tos.iter().skip(k.saturating_sub(1)).sum();
    let tail = format!("up to ~{this:.0} s; up to ~{} left in all", crate::progress::duration(left));
    crate::progress::line("scenario", k, up_tos.len(), &format!("#{n} {name}"), &tail)
}

/// The docs' table of a run.
pub fn markdown(verdicts: &[Verdict]) -> String {
    let mut t = String::from("| # | scenario | result | seconds | figures |\n|---|---|---|---|---|\n");
    for v in verdicts {
        let mut figures = v.figures.join("; ");
        if !v.passed() {
            figures.push_str(&format!(" **failed:** {}", v.failures.join("; ")));
        }
        t.push_str(&format!(
            "| {} | {} | {} | {:.0} | {} |\n",
            v.number,
            v.name,
            if v.passed() { "PASS" } else { "FAIL" },
            v.seconds,
            figures.replace('|', "/")
        ));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row per scenario, numbered 1 to 15; the fast subset runs in the order CI expects
    /// and leaves out exactly the long ones.
    #[test]
    fn scenario_table() {
        let mut numbers: Vec<u8> = SCENARIOS.iter().map(|s| s.number).collect();
        numbers.sort_unstable();
        assert_eq!(numbers, (1..=15).collect::<Vec<u8>>());
        assert_eq!(Plan::scenarios(false), [9, 7, 6, 10, 2, 4, 15, 3, 12, 8]);
        assert_eq!(Plan::scenarios(true).len(), 15);
        let long: Vec<u8> = SCENARIOS.iter().filter(|s| s.long).map(|s| s.number).collect();
        assert_eq!(long, [1, 13, 5, 14, 11]);
        assert!(SCENARIOS.iter().all(|s| s.at_service == (s.number >= 11)));
        assert_eq!(scenario(12).map(|s| s.name), Some("master SIGSTOP, kubelet restart"));
        assert!(scenario(16).is_none());
    }

    /// Counts read as "count × outcome", never as `status:count`.
    #[test]
    fn counts_read_as_count_times_outcome() {
        assert_eq!(counts_text([("200", 5101), ("503", 2)]), "5101 × 200, 2 × 503");
        assert_eq!(counts_text(Vec::<(String, u64)>::new()), "none");
    }

    /// Before each scenario: "k of n" among the chosen ones (not its number), its own longest
    /// run and the longest the rest of the suite can take.
    #[test]
    fn scenario_line_counts_and_estimates() {
        let up_tos = [30.0, 20.0, 100.0];
        assert_eq!(
            scenario_line(1, 2, "master SIGSTOP 10 s", &up_tos),
            "scenario 1 of 3: #2 master SIGSTOP 10 s (up to ~30 s; up to ~3 min left in all)"
        );
        assert_eq!(
            scenario_line(3, 14, "one replica cut off", &up_tos),
            "scenario 3 of 3: #14 one replica cut off (up to ~100 s; up to ~2 min left in all)"
        );
        assert_eq!(
            scenario_line(2, 5, "cut", &up_tos),
            "scenario 2 of 3: #5 cut (up to ~20 s; up to ~2 min left in all)"
        );
    }

    /// An exit status without Rust's Option text.
    #[test]
    fn exit_status_text() {
        assert_eq!(exit_text(Some(0)), "exit 0");
        assert_eq!(exit_text(None), "no exit");
    }
}
