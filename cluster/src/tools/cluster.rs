//! `tools cluster`: the redis-api Kubernetes topology in network namespaces (see the library):
//! `up N`, `down`, `cut I`, `restore I`, `serve`.

use super::{API_BIN, Common, ENV, NET, PREFIX, REPO, STATE};
use crate::{Options, ReadFrom, cgroup::Quota, master_addr, pod_addr};
use anyhow::{Context, Result};
use cli::{Args, Flag, UsageError};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;

const PROGRAM: &str = "tools cluster";

const USAGE: &str = "\
tools cluster: the redis-api Kubernetes topology on one machine, in network namespaces.
Needs root (ip netns, cgroups).

Usage: tools cluster up N [FLAGS]   master + N pods from k8s/, waits until every pod is ready
       tools cluster down             removes everything `up` made
       tools cluster cut I            takes pod I's link to the master down (veth)
       tools cluster restore I        brings it back up
       tools cluster serve            runs the emulated kubelet (the manifests' probes; failed
                                      liveness restarts the process) and the API Service on
                                      --service-addr (ready pods only, round robin), in the
                                      foreground until Ctrl-C; events also in STATE/kubelet.log";

const CPU_QUOTA: Flag = Flag::new(
    "--cpu-quota",
    "PCT",
    "CPU quota of the master and of every replica, % of one core (cgroup v1 cpu.cfs_quota_us per 100 ms)",
)
.parsed::<Quota>("a quota in % of one core, e.g. 25");
const READ_FROM: Flag = Flag::new("--read-from", "R", "where the API reads: replica (its sidecar) or master (naive)")
    .default("replica")
    .parsed::<ReadFrom>("replica or master");
const SERVICE_ADDR: Flag = Flag::new("--service-addr", "ADDR", "the Service's address for `serve`")
    .default("127.0.0.1:8080")
    .parsed::<SocketAddr>("an address:port such as 127.0.0.1:8080");
const FLAGS: &[Flag] = &[
    REPO,
    STATE.default("/tmp/redis-api-local-cluster"),
    PREFIX.default("rapi"),
    NET.default("77"),
    Flag { help: "redis-api binary (default: REPO/target/release/redis-api, else target/debug)", ..API_BIN },
    ENV,
    CPU_QUOTA,
    READ_FROM,
    SERVICE_ADDR,
];

/// Each subcommand, the number it takes (pods for `up`, a pod index for `cut`/`restore`), and
/// its usage line.
const SUBCOMMANDS: &[(&str, usize, &str)] = &[
    ("up", 1, "Usage: tools cluster up N [FLAGS]   master + N pods from k8s/, waits until every pod is ready"),
    ("down", 0, "Usage: tools cluster down [FLAGS]   removes everything `up` made (STATE)"),
    ("cut", 1, "Usage: tools cluster cut I [FLAGS]   takes pod I's link to the master down (veth)"),
    ("restore", 1, "Usage: tools cluster restore I [FLAGS]   brings pod I's link back up"),
    (
        "serve",
        0,
        "Usage: tools cluster serve [FLAGS]   the emulated kubelet and the API Service on --service-addr,\n\
         in the foreground until Ctrl-C",
    ),
];

pub(super) fn run(mut argv: Vec<OsString>) -> Result<bool> {
    let first = if argv.is_empty() { None } else { Some(argv.remove(0)) };
    let (command, free, usage) = match first.as_ref().and_then(|a| a.to_str()) {
        Some("-h" | "--help") => {
            print!("{}", cli::help(USAGE, FLAGS, super::EXIT));
            return Ok(true);
        }
        Some("-V" | "--version") => {
            println!("tools {}", env!("CARGO_PKG_VERSION"));
            return Ok(true);
        }
        Some(name) => *SUBCOMMANDS.iter().find(|(n, _, _)| *n == name).ok_or_else(|| {
            UsageError("unknown subcommand: up, down, cut, restore or serve; see tools cluster --help".into())
        })?,
        None => {
            return Err(UsageError(
                "a subcommand is required: up, down, cut, restore or serve; see tools cluster --help".into(),
            )
            .into());
        }
    };
    let Some(args) = super::parse(PROGRAM, usage, FLAGS, super::EXIT, argv, free)? else { return Ok(true) };
    let common = Common::parse(&args)?;
    let number = || -> Result<usize, UsageError> {
        args.free()
            .first()
            .and_then(|n| n.parse::<usize>().ok().filter(|n| *n >= 1))
            .ok_or_else(|| UsageError(format!("`{command}` needs a number >= 1; see tools cluster {command} --help")))
    };
    match command {
        "down" => crate::down(&common.state)?,
        "cut" => crate::set_master_link(&common.state, number()?, false)?,
        "restore" => crate::set_master_link(&common.state, number()?, true)?,
        "serve" => {
            let addr = args.value(&SERVICE_ADDR)?;
            serve(&common.repo()?, &common.state, addr)?;
        }
        _ => up(number()?, &args, &common)?,
    }
    Ok(true)
}

/// `up N`: the cluster, then its addresses on stdout.
fn up(n: usize, args: &Args, common: &Common) -> Result<()> {
    let repo = common.repo()?;
    let opts = Options {
        api_bin: common.api_bin(&repo, true),
        repo,
        state: common.state.clone(),
        prefix: common.prefix.clone(),
        net: common.net,
        extra_env: common.env.clone(),
        cpu_quota: args.opt_value(&CPU_QUOTA)?,
        read_from: args.value(&READ_FROM)?,
    };
    crate::up(n, &opts)?;
    println!("redis-master {}", master_addr(opts.net));
    for i in 1..=n {
        println!("pod-{i} http://{}", pod_addr(opts.net, i));
    }
    Ok(())
}

/// The kubelet and the Service until SIGINT/SIGTERM.
fn serve(repo: &Path, state: &Path, addr: SocketAddr) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
    let kubelet = crate::kubelet::Kubelet::start(repo, state, true).context("starting the kubelet")?;
    let service = crate::service::Service::start(addr, kubelet.endpoints()).context("starting the Service")?;
    println!("Service http://{} -> the ready pods; Ctrl-C stops the kubelet and the Service", service.addr());
    signals.forever().next();
    drop(service);
    let restarts = kubelet.all_restarts();
    kubelet.stop();
    println!("restarts: {restarts:?}");
    Ok(())
}
