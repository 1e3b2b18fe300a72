//! `local-cluster`: the redis-api Kubernetes topology in network namespaces (see the library).

use cli::{Args, Failure, Flag, Parsed, UsageError};
use local_cluster::{Options, ReadFrom, cgroup::Quota, master_addr, pod_addr};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
local-cluster: the redis-api Kubernetes topology on one machine, in network namespaces.
Needs root (ip netns, cgroups).

Usage: local-cluster up N [FLAGS]   master + N pods from k8s/, waits until every pod is ready
       local-cluster down             removes everything `up` made
       local-cluster cut I            takes pod I's link to the master down (veth)
       local-cluster restore I        brings it back up
       local-cluster serve            runs the emulated kubelet (the manifests' probes; failed
                                      liveness restarts the process) and the API Service on
                                      --service-addr (ready pods only, round robin), in the
                                      foreground until Ctrl-C; events also in STATE/kubelet.log";

const EXIT: &str = "Exit status: 0 done, 1 the run failed, 2 bad arguments.";

const REPO: Flag = Flag::new("--repo", "DIR", "repository root holding k8s/ and run.sh").default(".");
const STATE: Flag = Flag::new("--state", "DIR", "state, logs and pod files").default("/tmp/redis-api-local-cluster");
const PREFIX: Flag = Flag::new("--prefix", "P", "prefix of namespace and link names, 1-6 characters").default("rapi");
const NET: Flag =
    Flag::new("--net", "N", "pods' master links on 10.N.i.0/24, client links on 10.(N+1).i.0/24").default("77");
const API_BIN: Flag =
    Flag::new("--api-bin", "PATH", "redis-api binary (default: REPO/target/release/redis-api, else target/debug)");
const ENV: Flag = Flag::new("--env", "KEY=VALUE", "extra environment for every API process").many();
const CPU_QUOTA: Flag = Flag::new(
    "--cpu-quota",
    "PCT",
    "CPU quota of the master and of every replica, % of one core (cgroup v1 cpu.cfs_quota_us per 100 ms)",
);
const READ_FROM: Flag =
    Flag::new("--read-from", "R", "where the API reads: replica (its sidecar) or master (naive)").default("replica");
const SERVICE_ADDR: Flag =
    Flag::new("--service-addr", "ADDR", "the Service's address for `serve`").default("127.0.0.1:8080");
const FLAGS: &[Flag] = &[REPO, STATE, PREFIX, NET, API_BIN, ENV, CPU_QUOTA, READ_FROM, SERVICE_ADDR];

/// Each subcommand and the number it takes (pods for `up`, a pod index for `cut`/`restore`).
const SUBCOMMANDS: &[(&str, usize, &str)] = &[
    ("up", 1, "Usage: local-cluster up N [FLAGS]   master + N pods from k8s/, waits until every pod is ready"),
    ("down", 0, "Usage: local-cluster down [FLAGS]   removes everything `up` made (STATE)"),
    ("cut", 1, "Usage: local-cluster cut I [FLAGS]   takes pod I's link to the master down (veth)"),
    ("restore", 1, "Usage: local-cluster restore I [FLAGS]   brings pod I's link back up"),
    (
        "serve",
        0,
        "Usage: local-cluster serve [FLAGS]   the emulated kubelet and the API Service on --service-addr,\n\
         in the foreground until Ctrl-C",
    ),
];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report("local-cluster"),
    }
}

fn run() -> Result<(), Failure> {
    let mut argv = std::env::args_os().skip(1);
    let first = argv.next().and_then(|a| a.into_string().ok());
    let (command, free, usage) = match first.as_deref() {
        Some("-h" | "--help") => {
            print!("{}", cli::help(USAGE, FLAGS, EXIT));
            return Ok(());
        }
        Some("-V" | "--version") => {
            println!("local-cluster {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        Some(name) => *SUBCOMMANDS
            .iter()
            .find(|(n, _, _)| *n == name)
            .ok_or_else(|| UsageError("unknown subcommand: up, down, cut, restore or serve; see --help".into()))?,
        None => {
            return Err(
                UsageError("a subcommand is required: up, down, cut, restore or serve; see --help".into()).into()
            );
        }
    };
    let env = |k: &str| std::env::var(k).ok();
    let args = match Args::parse(FLAGS, argv, &env, free)? {
        Parsed::Help => {
            print!("{}", cli::help(usage, FLAGS, EXIT));
            return Ok(());
        }
        Parsed::Version => {
            println!("local-cluster {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        Parsed::Run(args) => args,
    };
    let number = || -> Result<usize, UsageError> {
        args.free()
            .first()
            .and_then(|n| n.parse::<usize>().ok().filter(|n| *n >= 1))
            .ok_or_else(|| UsageError(format!("`{command}` needs a number >= 1; see local-cluster {command} --help")))
    };
    let path = |flag: &Flag| args.opt(flag, "a path", |s| Some(PathBuf::from(s)));
    let repo = path(&REPO)?.unwrap_or_else(|| ".".into());
    let state = path(&STATE)?.unwrap_or_else(|| "/tmp/redis-api-local-cluster".into());
    let run = |r: Result<(), String>| r.map_err(Failure::Run);
    match command {
        "down" => run(local_cluster::down(&state)),
        "cut" => run(local_cluster::set_master_link(&state, number()?, false)),
        "restore" => run(local_cluster::set_master_link(&state, number()?, true)),
        "serve" => {
            let addr = args.get(&SERVICE_ADDR, "an address:port such as 127.0.0.1:8080", |s| s.parse().ok())?;
            let repo = std::fs::canonicalize(&repo).map_err(|e| Failure::Run(format!("{}: {e}", repo.display())))?;
            run(serve(&repo, &state, addr))
        }
        _ => {
            let n = number()?;
            let repo = std::fs::canonicalize(&repo).map_err(|e| Failure::Run(format!("{}: {e}", repo.display())))?;
            let api_bin = path(&API_BIN)?.unwrap_or_else(|| {
                let release = repo.join("target/release/redis-api");
                if release.exists() { release } else { repo.join("target/debug/redis-api") }
            });
            let net = args.number(&NET, 1u8, 253)?;
            let opts = Options {
                repo,
                state,
                prefix: args.get(&PREFIX, "1 to 6 characters", |s| (1..=6).contains(&s.len()).then(|| s.to_owned()))?,
                net,
                api_bin,
                extra_env: local_cluster::env_pairs(&args, &ENV)?,
                cpu_quota: args.opt(&CPU_QUOTA, "a quota in % of one core, e.g. 25", |s| Quota::parse(s).ok())?,
                read_from: args.get(&READ_FROM, "replica or master", |s| ReadFrom::parse(s).ok())?,
            };
            local_cluster::up(n, &opts).map_err(Failure::Run)?;
            println!("redis-master {}", master_addr(net));
            for i in 1..=n {
                println!("pod-{i} http://{}", pod_addr(net, i));
            }
            Ok(())
        }
    }
}

/// The kubelet and the Service until SIGINT/SIGTERM.
fn serve(repo: &std::path::Path, state: &std::path::Path, addr: std::net::SocketAddr) -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(|e| e.to_string())?;
    let kubelet = local_cluster::kubelet::Kubelet::start(repo, state, true)?;
    let service = local_cluster::service::Service::start(addr, kubelet.endpoints())?;
    println!("Service http://{} -> the ready pods; Ctrl-C stops the kubelet and the Service", service.addr());
    signals.forever().next();
    drop(service);
    let restarts = kubelet.all_restarts();
    kubelet.stop();
    println!("restarts: {restarts:?}");
    Ok(())
}
