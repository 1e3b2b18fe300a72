//! `local-cluster`: the redis-api Kubernetes topology in network namespaces (see the library).

use local_cluster::{Options, ReadFrom, cgroup::Quota, master_addr, pod_addr};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
Usage: local-cluster up N [OPTIONS]   master + N pods from k8s/, waits until every pod is ready
       local-cluster down             removes everything `up` made
       local-cluster cut I            takes pod I's link to the master down (veth)
       local-cluster restore I        brings it back up
       local-cluster serve            runs the emulated kubelet (the manifests' probes; failed
                                      liveness restarts the process) and the API Service on
                                      --service-addr (ready pods only, round robin), in the
                                      foreground until Ctrl-C; events also in STATE/kubelet.log

Options:
  --repo DIR       repository root holding k8s/ and run.sh (default: .)
  --state DIR      state, logs and pod files (default: /tmp/redis-api-local-cluster)
  --prefix P       prefix of namespace and link names, 1-6 characters (default: rapi)
  --net N          pods' master links on 10.N.i.0/24, client links on 10.(N+1).i.0/24 (default: 77)
  --api-bin PATH   redis-api binary (default: target/release/redis-api, else target/debug)
  --env KEY=VALUE  extra environment for every API process (repeatable)
  --cpu-quota PCT  CPU quota of the master and of every replica, in % of one core (cgroup v1
                   cpu.cfs_quota_us per 100 ms period; default: none)
  --read-from R    where the API reads: replica (its sidecar, the default) or master (naive)
  --service-addr A the Service's address for `serve` (default: 127.0.0.1:8080)
Needs root (ip netns, cgroups).";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("local-cluster: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut args = pico_args::Arguments::from_env();
    if args.contains(["-h", "--help"]) {
        println!("{USAGE}");
        return Ok(());
    }
    let repo: PathBuf = args.opt_value_from_str("--repo").map_err(|e| e.to_string())?.unwrap_or_else(|| ".".into());
    let state: PathBuf = args
        .opt_value_from_str("--state")
        .map_err(|e| e.to_string())?
        .unwrap_or_else(|| "/tmp/redis-api-local-cluster".into());
    let prefix: String =
        args.opt_value_from_str("--prefix").map_err(|e| e.to_string())?.unwrap_or_else(|| "rapi".into());
    let net: u8 = args.opt_value_from_str("--net").map_err(|e| e.to_string())?.unwrap_or(77);
    let api_bin: Option<PathBuf> = args.opt_value_from_str("--api-bin").map_err(|e| e.to_string())?;
    let mut extra_env = Vec::new();
    while let Some(kv) = args.opt_value_from_str::<_, String>("--env").map_err(|e| e.to_string())? {
        let (k, v) = kv.split_once('=').ok_or_else(|| format!("--env {kv}: expected KEY=VALUE"))?;
        extra_env.push((k.to_owned(), v.to_owned()));
    }
    let cpu_quota: Option<String> = args.opt_value_from_str("--cpu-quota").map_err(|e| e.to_string())?;
    let cpu_quota = cpu_quota.map(|q| Quota::parse(&q)).transpose()?;
    let read_from: Option<String> = args.opt_value_from_str("--read-from").map_err(|e| e.to_string())?;
    let read_from = read_from.map(|r| ReadFrom::parse(&r)).transpose()?.unwrap_or_default();
    let service_addr: std::net::SocketAddr = args
        .opt_value_from_str("--service-addr")
        .map_err(|e| e.to_string())?
        .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 8080)));
    let command: Option<String> = args.subcommand().map_err(|e| e.to_string())?;
    let number: Option<usize> = args.opt_free_from_str().map_err(|e| e.to_string())?;
    if let Some(rest) = args.finish().first() {
        return Err(format!("unexpected argument {rest:?}\n{USAGE}"));
    }
    let repo = std::fs::canonicalize(&repo).map_err(|e| format!("{}: {e}", repo.display()))?;
    let need_n = || number.ok_or_else(|| format!("a number is required\n{USAGE}"));
    match command.as_deref() {
        Some("up") => {
            let api_bin = api_bin.unwrap_or_else(|| {
                let release = repo.join("target/release/redis-api");
                if release.exists() { release } else { repo.join("target/debug/redis-api") }
            });
            let n = need_n()?;
            let opts = Options { repo, state, prefix, net, api_bin, extra_env, cpu_quota, read_from };
            local_cluster::up(n, &opts)?;
            println!("redis-master {}", master_addr(net));
            for i in 1..=n {
                println!("pod-{i} http://{}", pod_addr(net, i));
            }
            Ok(())
        }
        Some("down") => local_cluster::down(&state),
        Some("cut") => local_cluster::set_master_link(&state, need_n()?, false),
        Some("restore") => local_cluster::set_master_link(&state, need_n()?, true),
        Some("serve") => serve(&repo, &state, service_addr),
        _ => Err(USAGE.into()),
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
