//! An emulated kubelet for a running local cluster: every container's probes from `k8s/`
//! ([`crate::probes`]) run on their schedule, one worker thread per probe as the kubelet has;
//! a startup or liveness probe failing `failureThreshold` times in a row restarts that
//! container's process (preStop sleep, SIGTERM, SIGKILL after the grace, then
//! [`crate::respawn`] — counted and logged), and so does a process that exited
//! (`restartPolicy: Always`, with the kubelet's 10 s doubling back-off from the second
//! restart); a pod is an endpoint of the API Service while every container of it is ready.
//!
//! Probes reach the pod as the kubelet does: httpGet and tcpSocket the pod's IP (its client
//! link, from the host), exec inside the pod's network namespace (`ip netns exec`) with the
//! container's environment (Secret values arrive as env, never on a command line).
//! Not emulated: the master's readiness has no Service to feed (the pods reach the master
//! directly); grpc probes; container start order (`up` already starts sidecars first).

use crate::probes::{Action, Kind, Probe, Probes};
use crate::service::{Endpoint, Endpoints};
use crate::{API, MASTER, State, manifests};
use anyhow::{Context, Result, anyhow, bail};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often a container's process is checked for having exited.
pub const EXIT_CHECK: Duration = Duration::from_millis(500);
/// The first back-off between restarts (the kubelet's), doubling up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(10);
/// The longest back-off between restarts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long since its last restart starts over without back-off.
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// Bytes of an httpGet probe's answer read (the kubelet reads at most 10 KiB).
const HTTP_READ_LIMIT: usize = 10 * 1024;

/// One container of the cluster, as the kubelet sees it.
#[derive(Debug, Clone)]
pub struct Container {
    /// The process's name in the cluster's state: `redis-master`, `pod-1/redis-api`.
    pub what: String,
    /// 0: the master's pod; 1..: the API pods.
    pub pod: usize,
    pub ip: IpAddr,
    pub probes: Probes,
    /// `terminationGracePeriodSeconds` of its pod.
    pub grace: Duration,
    pub pre_stop: Option<Duration>,
}

/// What happened, for the log and for the scenarios' figures.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// A probe failed (its kind, why).
    ProbeFailed(Kind, String),
    /// The container was restarted (why: a probe's failures, or its exit).
    Restarted(String),
    /// A pod became an endpoint (`true`) or left the endpoints.
    PodReady(bool),
}

#[derive(Debug, Clone)]
pub struct Event {
    /// Since the kubelet started.
    pub at: Duration,
    pub what: String,
    pub kind: EventKind,
}

#[derive(Debug)]
struct Status {
    /// Bumped at each restart: a probe's result from before is discarded.
    generation: u64,
    started_at: Instant,
    /// The startup probe passed (or there is none).
    started: bool,
    ready: bool,
    restarting: bool,
    restarts: u32,
    backoff: Duration,
}

struct Shared {
    state_dir: PathBuf,
    containers: Vec<Container>,
    status: Mutex<Vec<Status>>,
    endpoints: Arc<Endpoints>,
    events: Mutex<Vec<Event>>,
    /// Containers left alone (not probed, not restarted): their node is "gone".
    held: Mutex<Vec<String>>,
    start: Instant,
    log: Mutex<Option<std::fs::File>>,
    echo: bool,
}

/// A running kubelet; stopped (its threads joined) by [`Kubelet::stop`] or when dropped.
pub struct Kubelet {
    shared: Arc<Shared>,
    stop: Option<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

/// The containers of the cluster in `state_dir` with their probes, and the API Service's
/// endpoints (the pods' IPs at the Service's `targetPort`, none ready yet).
pub fn containers(repo: &Path, state_dir: &Path, state: &State) -> Result<(Vec<Container>, Vec<Endpoint>)> {
    let objects = manifests::load_dir(&repo.join("k8s"))?;
    let master = manifests::find(&objects, "StatefulSet", MASTER)?;
    let deployment = manifests::find(&objects, "Deployment", API)?;
    let mut out = Vec::new();
    let of = |workload: &manifests::Object, name: &str, what: String, pod: usize| -> Result<Container> {
        let c = workload.container(name).with_context(|| format!("{}: no container {name}", workload.name()))?;
        let spec = workload.pod_spec().with_context(|| format!("{}: no pod spec", workload.name()))?;
        // An exec probe runs on this machine: the files it names (a password the probe reads)
        // are where `up` wrote the container's mounts.
        let dir = if pod == 0 { state_dir.join("master") } else { state_dir.join(format!("pod-{pod}")) };
        let root = crate::pod::container_root(&dir, name);
        let mut probes = crate::probes::of_container(c)?;
        for p in [&mut probes.startup, &mut probes.liveness, &mut probes.readiness].into_iter().flatten() {
            if let Action::Exec { command } = &mut p.action {
                for arg in command.iter_mut() {
                    *arg = crate::pod::map_mount_paths(c, &root, arg);
                }
            }
        }
        Ok(Container {
            what,
            pod,
            ip: crate::pod_ip(state.net, pod),
            probes,
            grace: crate::probes::pod_grace(spec),
            pre_stop: crate::probes::pre_stop_sleep(c),
        })
    };
    let master_container =
        master.containers().first().and_then(|c| c["name"].as_str()).context("master: no container")?;
    out.push(of(master, master_container, MASTER.to_owned(), 0)?);
    let service = manifests::find(&objects, "Service", API)?;
    let api = deployment.container(API).context("Deployment: no API container")?;
    let target = &service.doc["spec"]["ports"][0]["targetPort"];
    let port = crate::probes::port(target, api).with_context(|| format!("Service {API} targetPort"))?;
    let mut endpoints = Vec::new();
    for i in 1..=state.pods {
        for name in crate::pod::sidecars(deployment).into_iter().chain([API.to_owned()]) {
            out.push(of(deployment, &name, format!("pod-{i}/{name}"), i)?);
        }
        endpoints.push(Endpoint { pod: i, addr: SocketAddr::new(crate::pod_ip(state.net, i), port), ready: false });
    }
    Ok((out, endpoints))
}

impl Kubelet {
    /// Starts probing the cluster in `state_dir` (brought up by [`crate::up`] from `repo`).
    /// Every container counts as just started: its startup probe runs first, and no pod is an
    /// endpoint until its readiness probes pass. Events go to `state_dir/kubelet.log` (and to
    /// stderr with `echo`).
    pub fn start(repo: &Path, state_dir: &Path, echo: bool) -> Result<Kubelet> {
        let state = State::load(state_dir)?;
        let (containers, endpoints) = containers(repo, state_dir, &state)?;
        let now = Instant::now();
        let status = containers
            .iter()
            .map(|c| Status {
                generation: 0,
                started_at: now,
                started: c.probes.startup.is_none(),
                ready: c.probes.startup.is_none() && c.probes.readiness.is_none(),
                restarting: false,
                restarts: 0,
                backoff: Duration::ZERO,
            })
            .collect();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(state_dir.join("kubelet.log")).ok();
        let shared = Arc::new(Shared {
            state_dir: state_dir.to_path_buf(),
            containers,
            status: Mutex::new(status),
            endpoints: Endpoints::new(endpoints),
            events: Mutex::new(Vec::new()),
            held: Mutex::new(Vec::new()),
            start: now,
            log: Mutex::new(log),
            echo,
        });
        for pod in 1..=state.pods {
            shared.update_pod(pod);
        }
        let (stop, rx) = crossbeam_channel::bounded::<()>(0);
        let mut threads = Vec::new();
        for (i, c) in shared.containers.iter().enumerate() {
            for probe in c.probes.all() {
                let (sh, rx, probe) = (shared.clone(), rx.clone(), probe.clone());
                threads.push(spawn(&format!("probe-{}", c.what), move || worker(&sh, i, &probe, &rx))?);
            }
            let (sh, rx) = (shared.clone(), rx.clone());
            threads.push(spawn(&format!("watch-{}", c.what), move || watch_exit(&sh, i, &rx))?);
        }
        Ok(Kubelet { shared, stop: Some(stop), threads })
    }

    /// The API Service's endpoints, kept current (for [`crate::service::Service::start`]).
    pub fn endpoints(&self) -> Arc<Endpoints> {
        self.shared.endpoints.clone()
    }

    pub fn containers(&self) -> &[Container] {
        &self.shared.containers
    }

    /// Restarts of container `what` so far.
    pub fn restarts(&self, what: &str) -> u32 {
        let status = self.shared.status.lock().unwrap_or_else(PoisonError::into_inner);
        self.shared.containers.iter().zip(status.iter()).find(|(c, _)| c.what == what).map_or(0, |(_, s)| s.restarts)
    }

    /// Restarts of every container so far, `(what, count)`, only those restarted.
    pub fn all_restarts(&self) -> Vec<(String, u32)> {
        let status = self.shared.status.lock().unwrap_or_else(PoisonError::into_inner);
        self.shared
            .containers
            .iter()
            .zip(status.iter())
            .filter(|(_, s)| s.restarts > 0)
            .map(|(c, s)| (c.what.clone(), s.restarts))
            .collect()
    }

    pub fn events(&self) -> Vec<Event> {
        self.shared.events.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Since the kubelet started (the clock of [`Event::at`]).
    pub fn elapsed(&self) -> Duration {
        self.shared.start.elapsed()
    }

    /// Whether container `what` is ready now.
    pub fn ready(&self, what: &str) -> bool {
        let status = self.shared.status.lock().unwrap_or_else(PoisonError::into_inner);
        self.shared.containers.iter().zip(status.iter()).any(|(c, s)| c.what == what && s.ready)
    }

    /// Leaves container `what` alone (`true`: no probes, no restarts, as if its node were
    /// gone) or takes it back (a dead process is then restarted at once).
    pub fn hold(&self, what: &str, held: bool) {
        let mut h = self.shared.held.lock().unwrap_or_else(PoisonError::into_inner);
        h.retain(|w| w != what);
        if held {
            h.push(what.to_owned());
        }
    }

    /// Waits until every API pod is an endpoint; `Err` after `timeout`.
    pub fn wait_all_ready(&self, timeout: Duration) -> Result<Duration> {
        let t = Instant::now();
        let pods = self.shared.containers.iter().filter(|c| c.pod > 0).map(|c| c.pod).max().unwrap_or(0);
        while t.elapsed() < timeout {
            if self.shared.endpoints.ready().len() == pods {
                return Ok(t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(anyhow!("endpoints {:?} of {pods} pods ready after {timeout:?}", self.shared.endpoints.ready()))
    }

    /// Stops every worker and waits for them (a restart under way finishes first).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.halt();
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    let name: String = name.chars().take(15).collect();
    std::thread::Builder::new().name(name).spawn(f).context("kubelet")
}

/// Sleeps `d` unless told to stop (`false`: stop).
fn pause(rx: &Receiver<()>, d: Duration) -> bool {
    matches!(rx.recv_timeout(d), Err(RecvTimeoutError::Timeout))
}

impl Shared {
    fn held(&self, what: &str) -> bool {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).iter().any(|w| w == what)
    }

    fn event(&self, what: &str, kind: EventKind) {
        let at = self.start.elapsed();
        let text = match &kind {
            EventKind::ProbeFailed(k, why) => format!("{} probe failed: {why}", k.as_str()),
            EventKind::Restarted(why) => format!("restarted: {why}"),
            EventKind::PodReady(r) => {
                if *r { "pod ready: an endpoint" } else { "pod not ready: out of the endpoints" }.into()
            }
        };
        let line = format!("{:>8.2} s {what}: {text}\n", at.as_secs_f64());
        if self.echo {
            eprint!("kubelet: {line}");
        }
        if let Some(f) = self.log.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
            let _ = f.write_all(line.as_bytes());
        }
        self.events.lock().unwrap_or_else(PoisonError::into_inner).push(Event { at, what: what.to_owned(), kind });
    }

    /// Pod `pod` is an endpoint while all its containers are ready.
    fn update_pod(&self, pod: usize) {
        if pod == 0 {
            return;
        }
        let ready = {
            let status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
            self.containers.iter().zip(status.iter()).filter(|(c, _)| c.pod == pod).all(|(_, s)| s.ready)
        };
        if self.endpoints.set_ready(pod, ready) {
            self.event(&format!("pod-{pod}"), EventKind::PodReady(ready));
        }
    }

    /// Kills and starts container `i` again (once: a second caller meanwhile does nothing).
    fn restart(&self, i: usize, why: &str, rx: &Receiver<()>) {
        let c = &self.containers[i];
        let (delay, grace) = {
            let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
            let s = &mut status[i];
            if s.restarting {
                return;
            }
            s.restarting = true;
            s.ready = false;
            s.started = false;
            let probe_grace = c.probes.liveness.as_ref().and_then(|p| p.termination_grace);
            // The kubelet's back-off: none for the first restart (or after a long healthy run).
            if s.started_at.elapsed() >= BACKOFF_RESET {
                s.backoff = Duration::ZERO;
            }
            let delay = s.backoff;
            s.backoff = if delay.is_zero() { FIRST_BACKOFF } else { (delay * 2).min(MAX_BACKOFF) };
            (delay, probe_grace.unwrap_or(c.grace))
        };
        self.update_pod(c.pod);
        let pid = State::load(&self.state_dir).ok().and_then(|s| s.pid(&c.what));
        if let Some(pid) = pid.filter(|p| crate::netns::alive(*p)) {
            kill(pid, c.pre_stop, grace);
        }
        let waited = Instant::now();
        while waited.elapsed() < delay && pause(rx, Duration::from_millis(100)) {}
        let result = crate::respawn(&self.state_dir, &c.what);
        {
            let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
            let s = &mut status[i];
            s.generation += 1;
            s.started_at = Instant::now();
            s.started = c.probes.startup.is_none();
            s.ready = s.started && c.probes.readiness.is_none();
            s.restarting = false;
            s.restarts += u32::from(result.is_ok());
        }
        match result {
            Ok(pid) => self.event(&c.what, EventKind::Restarted(format!("{why} (new pid {pid})"))),
            Err(e) => self.event(&c.what, EventKind::Restarted(format!("{why}: could not start again: {e:#}"))),
        }
        self.update_pod(c.pod);
    }
}

/// The runtime's stop: the preStop sleep (within the grace), SIGTERM, SIGKILL once the grace
/// is over. A stopped (SIGSTOP) process does not act on SIGTERM: it waits for the SIGKILL,
/// as it would under a container runtime.
fn kill(pid: u32, pre_stop: Option<Duration>, grace: Duration) {
    let t = Instant::now();
    if let Some(d) = pre_stop {
        std::thread::sleep(d.min(grace));
    }
    // SAFETY: kill(2) with a pid we started (recorded in the cluster's state); no memory.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    while crate::netns::alive(pid) && t.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(20));
    }
    if crate::netns::alive(pid) {
        // SAFETY: as above.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
    let until = Instant::now() + Duration::from_secs(5);
    while crate::netns::alive(pid) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    reap(pid);
}

/// Collects the exit status of `pid` if it is our child (started in this process).
fn reap(pid: u32) {
    let mut st = 0;
    // SAFETY: waitpid with WNOHANG on a pid and a pointer to a local int; ECHILD is harmless.
    unsafe { libc::waitpid(pid as libc::pid_t, &mut st, libc::WNOHANG) };
}

/// `restartPolicy: Always`: a process that exited is started again.
fn watch_exit(sh: &Shared, i: usize, rx: &Receiver<()>) {
    let what = sh.containers[i].what.clone();
    while pause(rx, EXIT_CHECK) {
        let restarting = sh.status.lock().unwrap_or_else(PoisonError::into_inner)[i].restarting;
        if restarting || sh.held(&what) {
            continue;
        }
        let pid = State::load(&sh.state_dir).ok().and_then(|s| s.pid(&what));
        if let Some(pid) = pid.filter(|p| !crate::netns::alive(*p)) {
            reap(pid);
            sh.restart(i, "the process exited", rx);
        }
    }
}

/// One probe of container `i`, run on its schedule for the kubelet's life.
fn worker(sh: &Shared, i: usize, probe: &Probe, rx: &Receiver<()>) {
    let c = &sh.containers[i];
    let (mut generation, mut successes, mut failures) = (u64::MAX, 0u32, 0u32);
    loop {
        let (gen_now, started_at, started) = {
            let s = &sh.status.lock().unwrap_or_else(PoisonError::into_inner)[i];
            (s.generation, s.started_at, s.started)
        };
        if gen_now != generation {
            (generation, successes, failures) = (gen_now, 0, 0);
            let first = (started_at + probe.initial_delay).saturating_duration_since(Instant::now());
            if !pause(rx, first) {
                return;
            }
            continue;
        }
        let idle = match probe.kind {
            Kind::Startup => started,
            Kind::Liveness | Kind::Readiness => !started,
        };
        if idle || sh.held(&c.what) {
            // Checked again shortly: the startup probe's success must not wait a whole period.
            if !pause(rx, probe.period.min(Duration::from_millis(200))) {
                return;
            }
            continue;
        }
        let t = Instant::now();
        let result = run(sh, c, probe);
        let still = sh.status.lock().unwrap_or_else(PoisonError::into_inner)[i].generation == generation;
        if still && !sh.held(&c.what) {
            match result {
                Ok(()) => {
                    failures = 0;
                    successes = successes.saturating_add(1);
                    if successes >= probe.success_threshold {
                        on_success(sh, i, probe.kind);
                    }
                }
                Err(why) => {
                    successes = 0;
                    failures = failures.saturating_add(1);
                    sh.event(&c.what, EventKind::ProbeFailed(probe.kind, format!("{why:#}")));
                    if failures >= probe.failure_threshold {
                        failures = 0;
                        match probe.kind {
                            Kind::Readiness => set_ready(sh, i, false),
                            Kind::Liveness | Kind::Startup => {
                                let why = format!(
                                    "{} probe failed {} times: {why}",
                                    probe.kind.as_str(),
                                    probe.failure_threshold
                                );
                                sh.restart(i, &why, rx);
                                continue;
                            }
                        }
                    }
                }
            }
        }
        if !pause(rx, probe.period.saturating_sub(t.elapsed())) {
            return;
        }
    }
}

fn on_success(sh: &Shared, i: usize, kind: Kind) {
    let c = &sh.containers[i];
    match kind {
        Kind::Startup => {
            let mut status = sh.status.lock().unwrap_or_else(PoisonError::into_inner);
            status[i].started = true;
            if c.probes.readiness.is_none() {
                status[i].ready = true;
            }
            drop(status);
            sh.update_pod(c.pod);
        }
        Kind::Readiness => set_ready(sh, i, true),
        Kind::Liveness => {}
    }
}

fn set_ready(sh: &Shared, i: usize, ready: bool) {
    sh.status.lock().unwrap_or_else(PoisonError::into_inner)[i].ready = ready;
    sh.update_pod(sh.containers[i].pod);
}

/// Runs one probe once: `Err` says why it failed.
fn run(sh: &Shared, c: &Container, probe: &Probe) -> Result<()> {
    match &probe.action {
        Action::Http { path, port } => http_get(SocketAddr::new(c.ip, *port), path, probe.timeout),
        Action::Tcp { port } => TcpStream::connect_timeout(&SocketAddr::new(c.ip, *port), probe.timeout)
            .map(drop)
            .map_err(|e| anyhow!("tcp {}:{port}: {e:#}", c.ip)),
        Action::Exec { command } => {
            let (ns, env) = crate::spawn_env(&sh.state_dir, &c.what)?;
            exec(&ns, command, &env, probe.timeout)
        }
    }
}

/// The kubelet's httpGet: a fresh connection, `GET path`, 200-399 within `timeout` in all.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let mut s = TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("GET {addr}{path}: connect"))?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.29\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    s.set_write_timeout(Some(left()))?;
    s.write_all(req.as_bytes()).with_context(|| format!("GET {addr}{path}"))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        s.set_read_timeout(Some(left()))?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.len() >= HTTP_READ_LIMIT || head_and_body_done(&got) {
                    break;
                }
            }
            // A stop and continue of this process ends a read that has a timeout with EINTR.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if got.is_empty() {
                    bail!("GET {addr}{path}: timeout after {timeout:?}");
                }
                break;
            }
            Err(e) => bail!("GET {addr}{path}: {e:#}"),
        }
    }
    let text = String::from_utf8_lossy(&got);
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("GET {addr}{path}: no HTTP answer"))?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").trim();
        Err(anyhow!("GET {addr}{path}: {status} {}", body.chars().take(120).collect::<String>()))
    }
}

/// Whether `got` holds a whole answer with a Content-Length (a server may keep the socket).
fn head_and_body_done(got: &[u8]) -> bool {
    let text = String::from_utf8_lossy(got);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return false };
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase().strip_prefix("content-length:").and_then(|v| v.trim().parse::<usize>().ok())
        })
        .is_some_and(|n| body.len() >= n)
}

/// The kubelet's exec: `command` inside namespace `ns` with exactly `env` (and PATH), exit 0
/// within `timeout`; on the timeout the whole process group is killed.
pub fn exec(ns: &str, command: &[String], env: &[(String, String)], timeout: Duration) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .args(command)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.env("PATH", std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into()));
    cmd.envs(env.iter().map(|(k, v)| (k, v))).process_group(0);
    let mut child = cmd.spawn().map_err(|e| anyhow!("exec {:?}: {e:#}", command.first()))?;
    let t = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                bail!("exec {:?}: {status}", command.last().map(String::as_str).unwrap_or(""));
            }
            Ok(None) if t.elapsed() >= timeout => {
                // SAFETY: kill(2) of the process group the child leads (process_group(0)).
                unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
                let _ = child.wait();
                bail!("exec {:?}: timeout after {timeout:?}", command.last().map(String::as_str).unwrap_or(""));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => bail!("exec: {e:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};

    fn server(answer: &'static str) -> SocketAddr {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for c in l.incoming().take(4) {
                let Ok(mut c) = c else { continue };
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf);
                if !answer.is_empty() {
                    let _ = c.write_all(answer.as_bytes());
                } else {
                    std::thread::sleep(Duration::from_secs(3));
                }
            }
        });
        addr
    }

    /// httpGet: 200-399 pass (even on a kept-alive socket), 503 fails with its body, silence
    /// fails at the timeout.
    #[test]
    fn http_probe_outcomes() {
        let ok = server("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        assert!(http_get(ok, "/healthz", Duration::from_secs(2)).is_ok());
        let busy = server("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy");
        let e = http_get(busy, "/readyz", Duration::from_secs(2)).unwrap_err();
        assert!(format!("{e:#}").contains("503 busy"), "{e:#}");
        let silent = server("");
        let t = Instant::now();
        let e = http_get(silent, "/", Duration::from_secs(1)).unwrap_err();
        assert!(format!("{e:#}").contains("timeout"), "{e:#}");
        assert!(t.elapsed() < Duration::from_secs(2));
    }
}
