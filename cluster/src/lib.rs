//! The redis-api topology of `k8s/` on one machine: a network namespace for the Redis master
//! and one per "pod", each pod with its own loopback holding the replica sidecar on
//! 127.0.0.1:6379 and the API started through `run.sh`. Configuration comes from the manifests
//! themselves: the containers' commands, env, and the ConfigMap and Secret files they mount.
//!
//! Modules: [`manifests`] reads `k8s/`, [`rules`] holds the project's own rules for it; [`acl`]
//! makes the Secret's passwords and ACL files; [`netns`] wraps `ip`; [`pod`] turns a manifest's
//! container into a process (its mounted files materialized under a directory of its own);
//! [`cgroup`] gives the Redis processes a CPU quota; [`resp`] asks the master for `INFO`;
//! [`scale`] is the scaling experiment run on such clusters, [`chart`] draws its result.
//! [`probes`] reads the containers' probes, [`kubelet`] runs them on a running cluster
//! (restarting what fails liveness, keeping the endpoints), [`service`] forwards a host address
//! to the ready pods as kube-proxy does. [`utc`] stamps what the tools record; [`progress`] words
//! the "k of n, about T left" lines of the tools that run for minutes. [`tools`] is the `tools`
//! binary's command line: `cluster`, `chaos`, `scale`, `bench` and `manifests`.

use anyhow::{Context, Result, anyhow, bail};
pub mod acl;
pub mod cgroup;
pub mod chaos;
pub mod chart;
pub mod kubelet;
pub mod manifests;
pub mod netns;
pub mod pod;
pub mod probes;
pub mod progress;
pub mod resp;
pub mod rules;
pub mod scale;
pub mod service;
pub mod tools;
pub mod utc;

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Name of the master's StatefulSet, Service and host name.
pub const MASTER: &str = "redis-master";
/// Name of the API Deployment and of its API container.
pub const API: &str = "redis-api";
/// The Secret every Redis password comes from; its example lives in `k8s/examples/`.
pub const AUTH_SECRET: &str = "redis-auth";
/// The harness's own ACL user, added to what the manifests configure. On the master it may only
/// read (INFO, HGET, PING): no user of the manifests may (the writer only writes, the replication
/// user only syncs), and `wait_replicas`, the scaling experiment and the chaos suite read the
/// master's INFO and value. On the replicas it may also CONFIG SET and CLIENT KILL: the chaos
/// suite's faults.
pub const HARNESS: &str = "local-cluster";
/// The harness user's grants on the master.
const HARNESS_MASTER: &str = "-@all +info +hget +ping";
/// The harness user's grants on the replicas.
const HARNESS_REPLICA: &str = "-@all +info +hget +ping +config|set +client|kill";
/// The harness's password, in the state directory (mode 0600).
const HARNESS_PASSWORD_FILE: &str = "redis-harness-password";
/// Port the API listens on in a pod.
pub const API_PORT: u16 = 8080;

/// Options of `up`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Repository root (holds `k8s/` and `run.sh`).
    pub repo: PathBuf,
    /// Where state, logs and pod files live.
    pub state: PathBuf,
    /// Prefix of namespace and interface names (at most 6 characters).
    pub prefix: String,
    /// Second octet of the pods' master links (10.NET.i.0/24); client links use NET+1.
    pub net: u8,
    /// The redis-api binary run.sh execs.
    pub api_bin: PathBuf,
    /// Extra environment for every API process (after the manifest's).
    pub extra_env: Vec<(String, String)>,
    /// A CPU quota for the master and for every pod's replica alike (`None`: unlimited).
    pub cpu_quota: Option<cgroup::Quota>,
    /// Where the API reads: its replica sidecar (the design) or the master (the "naive" setup).
    pub read_from: ReadFrom,
}

/// The API's read address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadFrom {
    /// The manifest's `REDIS_ADDR_READ`: the pod's own replica sidecar.
    #[default]
    Replica,
    /// The master, at the manifest's `REDIS_ADDR_WRITE`: every read crosses to the one master,
    /// as in the original before its sidecars. The replicas still run and sync (so both modes
    /// cost the master the same replication), they are just not read.
    Master,
}

impl std::str::FromStr for ReadFrom {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> Result<ReadFrom> {
        match text {
            "replica" => Ok(ReadFrom::Replica),
            "master" => Ok(ReadFrom::Master),
            _ => Err(anyhow!("read-from {text:?}: replica or master")),
        }
    }
}

impl ReadFrom {
    pub fn as_str(self) -> &'static str {
        match self {
            ReadFrom::Replica => "replica",
            ReadFrom::Master => "master",
        }
    }
}

/// The cluster's record, kept in the state directory so `down` and `cut` work later.
#[derive(Debug, Default)]
pub struct State {
    pub prefix: String,
    pub net: u8,
    pub pods: usize,
    pub namespaces: Vec<String>,
    /// `(pid, what)` of every process started.
    pub processes: Vec<(u32, String)>,
    /// `/etc/netns/<ns>` directories made.
    pub etc_dirs: Vec<PathBuf>,
    /// CPU cgroups made (removed once their processes are gone).
    pub cgroups: Vec<PathBuf>,
}

impl State {
    fn file(state_dir: &Path) -> PathBuf {
        state_dir.join("cluster.state")
    }

    pub fn save(&self, state_dir: &Path) -> Result<()> {
        let mut text = format!("prefix {}\nnet {}\npods {}\n", self.prefix, self.net, self.pods);
        for ns in &self.namespaces {
            text.push_str(&format!("ns {ns}\n"));
        }
        for (pid, what) in &self.processes {
            text.push_str(&format!("pid {pid} {what}\n"));
        }
        for d in &self.etc_dirs {
            text.push_str(&format!("etc {}\n", d.display()));
        }
        for d in &self.cgroups {
            text.push_str(&format!("cgroup {}\n", d.display()));
        }
        // Written aside and renamed: a reader (the kubelet, a scenario) never sees half a file.
        let tmp = state_dir.join("cluster.state.tmp");
        fs::write(&tmp, text).context("saving state")?;
        fs::rename(&tmp, Self::file(state_dir)).context("saving state")
    }

    pub fn load(state_dir: &Path) -> Result<State> {
        let text = fs::read_to_string(Self::file(state_dir))
            .map_err(|e| anyhow!("no cluster state in {} ({e:#}); is a cluster up?", state_dir.display()))?;
        let mut s = State::default();
        for line in text.lines() {
            let (k, v) = line.split_once(' ').unwrap_or((line, ""));
            match k {
                "prefix" => s.prefix = v.to_owned(),
                "net" => s.net = v.parse().unwrap_or(77),
                "pods" => s.pods = v.parse().unwrap_or(0),
                "ns" => s.namespaces.push(v.to_owned()),
                "pid" => {
                    let (pid, what) = v.split_once(' ').unwrap_or((v, ""));
                    if let Ok(pid) = pid.parse() {
                        s.processes.push((pid, what.to_owned()));
                    }
                }
                "etc" => s.etc_dirs.push(PathBuf::from(v)),
                "cgroup" => s.cgroups.push(PathBuf::from(v)),
                _ => {}
            }
        }
        Ok(s)
    }

    /// Pid of the process recorded as `what` (e.g. `redis-master`, `pod-2/redis-api`).
    pub fn pid(&self, what: &str) -> Option<u32> {
        self.processes.iter().find(|(_, w)| w == what).map(|(pid, _)| *pid)
    }

    /// The master's CPU cgroup, when it has one.
    pub fn master_cgroup(&self) -> Option<&Path> {
        let name = cgroup_name(&self.prefix, MASTER);
        self.cgroups.iter().find(|d| d.ends_with(&name)).map(PathBuf::as_path)
    }
}

fn cgroup_name(prefix: &str, what: &str) -> String {
    format!("{prefix}-{}", what.replace('/', "-"))
}

/// An ACL user name and its password.
#[derive(Clone)]
pub struct Login {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Login({}, ..)", self.user)
    }
}

/// The [`HARNESS`] login of a cluster that is up.
pub fn harness_login(state_dir: &Path) -> Result<Login> {
    let file = state_dir.join(HARNESS_PASSWORD_FILE);
    let password = fs::read_to_string(&file).with_context(|| file.display().to_string())?;
    Ok(Login { user: HARNESS.to_owned(), password })
}

pub(crate) fn master_ns(prefix: &str) -> String {
    format!("{prefix}-master")
}

pub(crate) fn pod_ns(prefix: &str, i: usize) -> String {
    format!("{prefix}-pod-{i}")
}

/// The master-side interface of pod `i`'s link (the one `cut` takes down).
fn master_link(prefix: &str, i: usize) -> String {
    format!("{prefix}-m{i}")
}

/// Pod `i`'s IP as the host reaches it (its client link; 0: the master): what the kubelet
/// probes and the Service forwards to.
pub fn pod_ip(net: u8, i: usize) -> std::net::IpAddr {
    std::net::IpAddr::from([10, net + 1, i as u8, 2])
}

/// Where clients reach pod `i`'s API.
pub fn pod_addr(net: u8, i: usize) -> SocketAddr {
    SocketAddr::from(([10, net + 1, i as u8, 2], API_PORT))
}

/// Whether a cluster on `net` would clash with addresses of the root namespace: its client
/// links (10.NET+1.i.1), or another cluster's whose client net is NET (two clusters may run
/// at once, e.g. tests of two checkouts).
pub fn net_in_use(net: u8) -> bool {
    let out = std::process::Command::new("ip").args(["-o", "-4", "addr", "show"]).output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    let ours = [format!(" 10.{}.", u16::from(net) + 1), format!(" 10.{net}.")];
    text.lines().any(|l| ours.iter().any(|p| l.contains(p.as_str())))
}

/// Where clients reach the master.
pub fn master_addr(net: u8) -> SocketAddr {
    SocketAddr::from(([10, net + 1, 0, 2], 6379))
}

/// Brings up the master and `n` pods. On any failure everything made so far is removed.
pub fn up(n: usize, opts: &Options) -> Result<State> {
    if n == 0 || n > 200 {
        bail!("the number of pods must be 1..=200");
    }
    if opts.prefix.is_empty() || opts.prefix.len() > 6 {
        bail!("the prefix must be 1 to 6 characters");
    }
    if netns::list().iter().any(|ns| ns.starts_with(&format!("{}-", opts.prefix))) {
        bail!("namespaces {}-* exist already: run `down` first", opts.prefix);
    }
    if net_in_use(opts.net) {
        bail!(
            "10.{}.0.0/16 is in use here (another cluster?): clients would reach the wrong pods; choose another --net",
            u16::from(opts.net) + 1
        );
    }
    // With no namespaces left, groups of this prefix are leftovers of a killed run: empty ones go.
    for dir in cgroup::list(&format!("{}-", opts.prefix)) {
        cgroup::remove(&dir, Duration::ZERO).context("a CPU group of an earlier run is in use")?;
    }
    fs::create_dir_all(&opts.state).with_context(|| opts.state.display().to_string())?;
    let mut state = State { prefix: opts.prefix.clone(), net: opts.net, pods: n, ..State::default() };
    let result = build(n, opts, &mut state);
    let saved = state.save(&opts.state);
    match result.and(saved) {
        Ok(()) => Ok(state),
        Err(e) => {
            teardown(&state, &opts.state);
            Err(e)
        }
    }
}

/// A cluster brought up by [`Cluster::up`]: taken down when dropped, however its scope ends
/// (an error, a panic); [`Cluster::down`] takes it down at once and reports what failed.
pub struct Cluster {
    dir: PathBuf,
    pub state: State,
    /// Cleared once taken down.
    up: bool,
}

impl Cluster {
    /// [`up`], guarded.
    pub fn up(n: usize, opts: &Options) -> Result<Cluster> {
        let state = up(n, opts)?;
        Ok(Cluster { dir: opts.state.clone(), state, up: true })
    }

    /// Its state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// [`down`] now, with its error.
    pub fn down(mut self) -> Result<()> {
        self.up = false;
        down(&self.dir)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.up
            && let Err(e) = down(&self.dir)
        {
            eprintln!("taking the cluster in {} down: {e:#}", self.dir.display());
        }
    }
}

fn build(n: usize, opts: &Options, state: &mut State) -> Result<()> {
    let objects = manifests::load_dir(&opts.repo.join("k8s"))?;
    let examples = manifests::load_dir(&opts.repo.join("k8s/examples")).unwrap_or_default();
    let deployment = manifests::find(&objects, "Deployment", API)?;
    let names = acl_names(deployment);
    let (mut secret, _) = pod::Secret::generated(&examples, AUTH_SECRET, &opts.repo.join("k8s/acl"), &names)?;
    let (p, net) = (opts.prefix.as_str(), opts.net);
    // The harness's user (see HARNESS) and, when the API reads the master, the reader there too:
    // the manifests' master has no reader, as no pod of theirs reads it.
    let harness = Login { user: HARNESS.into(), password: acl::Passwords::generate()?.read };
    let sum = acl::sha256_hex(&harness.password)?;
    for (key, grants) in [("master.acl", HARNESS_MASTER), ("replica.acl", HARNESS_REPLICA)] {
        let line = format!("user {HARNESS} on #{sum} resetkeys ~{} resetchannels {grants}", names.hash);
        secret.append_line(key, &line)?;
    }
    if opts.read_from == ReadFrom::Master {
        let replica_acl = secret.get("replica.acl").context("the Secret has no replica.acl")?;
        let reader =
            replica_acl.lines().find(|l| l.starts_with("user reader ")).context("replica.acl has no reader")?;
        let reader = reader.to_owned();
        secret.append_line("master.acl", &reader)?;
    }
    write_private(&opts.state.join(HARNESS_PASSWORD_FILE), &harness.password)?;

    let mns = master_ns(p);
    netns::create(&mns)?;
    state.namespaces.push(mns.clone());
    let client_cidr = |i: usize, host: u8| format!("10.{}.{i}.{host}/24", net + 1);
    netns::link(
        netns::End { ns: None, name: &format!("{p}-cm"), cidr: &client_cidr(0, 1) },
        netns::End { ns: Some(&mns), name: "ext0", cidr: &client_cidr(0, 2) },
    )?;
    let master = manifests::find(&objects, "StatefulSet", MASTER)?;
    let master_dir = opts.state.join("master");
    let container = master.doc["spec"]["template"]["spec"]["containers"][0]["name"]
        .as_str()
        .with_context(|| format!("StatefulSet {MASTER} has no container"))?;
    let cmd = pod::prepare(master, container, &objects, &secret, &master_dir)?;
    let pid = start(&opts.state, MASTER, &mns, &cmd, &master_dir.join("redis-master.log"))?;
    state.processes.push((pid, MASTER.into()));
    limit_cpu(opts, state, MASTER, pid)?;
    wait_tcp(master_addr(net), Duration::from_secs(10), "the master")?;

    for i in 1..=n {
        let ns = pod_ns(p, i);
        netns::create(&ns)?;
        state.namespaces.push(ns.clone());
        netns::link(
            netns::End { ns: Some(&mns), name: &master_link(p, i), cidr: &format!("10.{net}.{i}.1/24") },
            netns::End { ns: Some(&ns), name: "eth0", cidr: &format!("10.{net}.{i}.2/24") },
        )?;
        netns::link(
            netns::End { ns: None, name: &format!("{p}-c{i}"), cidr: &client_cidr(i, 1) },
            netns::End { ns: Some(&ns), name: "ext0", cidr: &client_cidr(i, 2) },
        )?;
        // `ip netns exec` shows /etc/netns/<ns>/hosts as /etc/hosts: the pod's DNS.
        let etc = PathBuf::from("/etc/netns").join(&ns);
        fs::create_dir_all(&etc).with_context(|| etc.display().to_string())?;
        state.etc_dirs.push(etc.clone());
        let hosts = format!("127.0.0.1 localhost\n10.{net}.{i}.1 {MASTER}\n");
        fs::write(etc.join("hosts"), hosts).with_context(|| etc.display().to_string())?;

        let dir = opts.state.join(format!("pod-{i}"));
        for container in pod::sidecars(deployment) {
            let cmd = pod::prepare(deployment, &container, &objects, &secret, &dir)?;
            let what = format!("pod-{i}/{container}");
            let pid = start(&opts.state, &what, &ns, &cmd, &dir.join(format!("{container}.log")))?;
            state.processes.push((pid, what.clone()));
            limit_cpu(opts, state, &what, pid)?;
        }
        let mut cmd = pod::prepare(deployment, API, &objects, &secret, &dir)?;
        cmd.argv = vec![opts.repo.join("run.sh").display().to_string()];
        cmd.env.push(("REDIS_API_BIN".into(), opts.api_bin.display().to_string()));
        if opts.read_from == ReadFrom::Master {
            let write = env_value(&cmd, "REDIS_ADDR_WRITE")?;
            cmd.env.push(("REDIS_ADDR_READ".into(), write));
        }
        cmd.env.extend(opts.extra_env.iter().cloned());
        let what = format!("pod-{i}/{API}");
        let pid = start(&opts.state, &what, &ns, &cmd, &dir.join("redis-api.log"))?;
        state.processes.push((pid, what));
        state.save(&opts.state)?;
    }
    match opts.read_from {
        ReadFrom::Replica => {
            for i in 1..=n {
                wait_ready(pod_addr(net, i), Duration::from_secs(60)).with_context(|| format!("pod-{i}"))?;
            }
        }
        // /readyz stays 503 when the read address is not a replica: wait for the replicas to
        // be in sync, write a first value, and wait until every pod reads it.
        ReadFrom::Master => {
            wait_replicas(net, &harness, n, Duration::from_secs(60))?;
            let (status, body) = http(pod_addr(net, 1), "POST", "/", Some(r#"{"value": 1}"#))?;
            if status != 200 {
                bail!("pod-1: first POST answered {status} {body}");
            }
            for i in 1..=n {
                wait_get(pod_addr(net, i), Duration::from_secs(30)).with_context(|| format!("pod-{i}"))?;
            }
        }
    }
    Ok(())
}

/// How a process was started, kept (mode 0600) so [`respawn`] can start it again the same way.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Spawn {
    ns: String,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
}

/// The namespace and whole environment process `what` was started with (the container's env,
/// Secret values included): what an exec probe runs with. Never to be logged.
pub(crate) fn spawn_env(state_dir: &Path, what: &str) -> Result<(String, Vec<(String, String)>)> {
    let file = spawn_file(state_dir, what);
    let text = fs::read_to_string(&file).with_context(|| file.display().to_string())?;
    let spec: Spawn = serde_json::from_str(&text).with_context(|| file.display().to_string())?;
    Ok((spec.ns, spec.env))
}

fn spawn_file(state_dir: &Path, what: &str) -> PathBuf {
    state_dir.join(format!("spawn-{}.json", what.replace('/', "-")))
}

fn start(state_dir: &Path, what: &str, ns: &str, cmd: &pod::Cmd, log: &Path) -> Result<u32> {
    let spec = Spawn { ns: ns.to_owned(), argv: cmd.argv.clone(), env: cmd.env.clone(), log: log.to_path_buf() };
    let json = serde_json::to_string(&spec)?;
    write_private(&spawn_file(state_dir, what), &json)?;
    netns::spawn(ns, &cmd.argv, &cmd.env, log)
}

/// Starts process `what` (e.g. `redis-master`, `pod-1/redis-replica`) again, exactly as `up`
/// did, in its namespace and CPU group, its output appended to the same log; the old one must
/// be gone (killed or exited). Records and returns the new pid — a pod's container restarted
/// by the kubelet.
pub fn respawn(state_dir: &Path, what: &str) -> Result<u32> {
    // Load, change, save: one at a time in this process (the kubelet restarts from threads).
    static RESPAWN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = RESPAWN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut state = State::load(state_dir)?;
    let file = spawn_file(state_dir, what);
    let text = fs::read_to_string(&file).with_context(|| file.display().to_string())?;
    let spec: Spawn = serde_json::from_str(&text).with_context(|| file.display().to_string())?;
    if let Some(old) = state.pid(what)
        && netns::alive(old)
    {
        bail!("{what} (pid {old}) is still running");
    }
    let pid = netns::spawn_appending(&spec.ns, &spec.argv, &spec.env, &spec.log)?;
    let name = cgroup_name(&state.prefix, what);
    if let Some(dir) = state.cgroups.iter().find(|d| d.ends_with(&name)) {
        cgroup::add(dir, pid)?;
    }
    match state.processes.iter_mut().find(|(_, w)| w == what) {
        Some(entry) => entry.0 = pid,
        None => state.processes.push((pid, what.to_owned())),
    }
    state.save(state_dir)?;
    Ok(pid)
}

/// Puts process `pid` (recorded as `what`) into a CPU group of its own with the quota, if any.
fn limit_cpu(opts: &Options, state: &mut State, what: &str, pid: u32) -> Result<()> {
    let Some(quota) = opts.cpu_quota else { return Ok(()) };
    let dir = cgroup::create(&cgroup_name(&opts.prefix, what), quota)?;
    state.cgroups.push(dir.clone());
    cgroup::add(&dir, pid)
}

/// The hash and field the API container is configured with (`REDIS_HASH`, `REDIS_FIELD`),
/// else the API's defaults: what the ACL users are granted.
fn acl_names(deployment: &manifests::Object) -> acl::Names {
    let mut names = acl::Names::default();
    let env = deployment.container(API).map(manifests::container_env).unwrap_or_default();
    for (key, value) in env {
        match (key.as_str(), value) {
            ("REDIS_HASH", manifests::EnvValue::Literal(v)) => names.hash = v,
            ("REDIS_FIELD", manifests::EnvValue::Literal(v)) => names.field = v,
            _ => {}
        }
    }
    names
}

fn env_value(cmd: &pod::Cmd, key: &str) -> Result<String> {
    cmd.env.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.clone()).with_context(|| format!("{API}: no env {key}"))
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| path.display().to_string())?;
    f.write_all(text.as_bytes()).with_context(|| path.display().to_string())
}

/// Waits until the master counts `n` replicas online (first sync done).
pub fn wait_replicas(net: u8, login: &Login, n: usize, timeout: Duration) -> Result<()> {
    let until = Instant::now() + timeout;
    let mut last = String::from("no answer");
    while Instant::now() < until {
        match resp::info(master_addr(net), login, "replication") {
            Ok(info) => {
                let online = info.iter().filter(|(k, v)| k.starts_with("slave") && v.contains("state=online")).count();
                if online >= n {
                    return Ok(());
                }
                last = format!("{online} of {n} replicas online");
            }
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(anyhow!("replicas not in sync within {timeout:?}: {last}"))
}

/// Waits until `GET /` answers 200.
pub fn wait_get(addr: SocketAddr, timeout: Duration) -> Result<()> {
    wait_200(addr, "/", timeout).map_err(|last| anyhow!("GET / not 200 within {timeout:?}: {last}"))
}

/// Removes everything `up` made.
pub fn down(state_dir: &Path) -> Result<()> {
    let state = State::load(state_dir)?;
    teardown(&state, state_dir);
    Ok(())
}

fn teardown(state: &State, state_dir: &Path) {
    // The APIs first (they drain), then the replicas, then the master.
    for (pid, _) in state.processes.iter().rev() {
        netns::stop(*pid, Duration::from_secs(12));
    }
    for dir in &state.cgroups {
        if let Err(e) = cgroup::remove(dir, Duration::from_secs(2)) {
            eprintln!("local-cluster: {e:#}");
        }
    }
    for ns in state.namespaces.iter().rev() {
        let _ = netns::delete(ns);
    }
    // A root-side link whose namespace end failed to move would be left behind.
    for i in 0..=state.pods {
        let name = if i == 0 { format!("{}-cm", state.prefix) } else { format!("{}-c{i}", state.prefix) };
        let _ = netns::ip(&["link", "delete", &name]);
    }
    for d in &state.etc_dirs {
        let _ = fs::remove_dir_all(d);
    }
    let _ = fs::remove_dir_all(state_dir);
}

/// Takes pod `i`'s link to the master down (`up == false`) or back up.
pub fn set_master_link(state_dir: &Path, i: usize, up: bool) -> Result<()> {
    let state = State::load(state_dir)?;
    if i == 0 || i > state.pods {
        bail!("no pod {i} (pods 1..={})", state.pods);
    }
    netns::set_link(&master_ns(&state.prefix), &master_link(&state.prefix, i), up)
}

fn wait_tcp(addr: SocketAddr, timeout: Duration, what: &str) -> Result<()> {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(anyhow!("{what} did not listen on {addr} within {timeout:?}"))
}

/// Waits until `GET /readyz` answers 200.
pub fn wait_ready(addr: SocketAddr, timeout: Duration) -> Result<()> {
    wait_200(addr, "/readyz", timeout).map_err(|last| anyhow!("not ready within {timeout:?}: {last}"))
}

/// Polls `GET path` every 100 ms until it answers 200; `Err`: the last answer or error.
fn wait_200(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(), String> {
    let until = Instant::now() + timeout;
    let mut last = String::from("no answer");
    while Instant::now() < until {
        match http(addr, "GET", path, None) {
            Ok((200, _)) => return Ok(()),
            Ok((status, body)) => last = format!("{status} {body}"),
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last)
}

/// One HTTP/1.1 request on a fresh connection (the load-test kit's client); returns status
/// and body.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
    let target = loadtest::client::Target { host: addr.to_string(), addr, path: path.to_owned() };
    let mut client = loadtest::client::Client::new(target, Duration::from_secs(5));
    let answer = client.request(method, body.map(str::as_bytes)).map_err(|e| anyhow!("{addr}: {e}"))?;
    Ok((answer.status, String::from_utf8_lossy(&answer.body).into_owned()))
}

/// `KEY=VALUE` with a non-empty key: what a repeatable `--env` flag declares it accepts.
pub fn is_env_pair(kv: &str) -> bool {
    kv.split_once('=').is_some_and(|(k, _)| !k.is_empty())
}

/// The values of a repeatable `--env KEY=VALUE` flag (declared with [`is_env_pair`]), as pairs.
pub fn env_pairs(args: &cli::Args, flag: &cli::Flag) -> Result<Vec<(String, String)>, cli::UsageError> {
    let pairs = args.many(flag)?;
    Ok(pairs.iter().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
}
