//! Scenarios #11-#15: availability judged at the Service, as Kubernetes users see
//! it. Each brings up the emulated kubelet ([`crate::kubelet`]) and a Service
//! ([`crate::service`]) on the running pods, and judges what clients that know only the
//! Service's address saw: every request on a new connection (so each is routed afresh over
//! the ready pods), its status and the value served.

use super::probe::proc_stat;
use super::{Ctx, Undo, Verdict};
use crate::kubelet::{EventKind, Kubelet};
use crate::probes::Kind;
use crate::service::Service;
use anyhow::{Context, Result, anyhow, bail};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Client timeout of a request through the Service.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest any client loop runs, whatever a scenario does.
const CLIENT_CAP: Duration = Duration::from_secs(15 * 60);

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn sleep(s: f64) {
    std::thread::sleep(secs(s));
}

/// A bound on time: the figure, and in CI (`strict == false`, a busy shared machine) half as
/// much again. The scenario's line says which applied.
fn within(ctx: &Ctx, took: Duration, bound: Duration) -> bool {
    let bound = if ctx.strict_timing { bound } else { bound.mul_f64(1.5) };
    took <= bound
}

fn timing_note(ctx: &Ctx) -> String {
    if ctx.strict_timing { "timing judged strictly".into() } else { "timing judged loosely (bounds x1.5)".into() }
}

/// The kubelet and the Service over the pods; both stop when dropped.
struct Harness {
    kubelet: Kubelet,
    service: Service,
}

impl Harness {
    fn start(ctx: &Ctx) -> Result<Harness> {
        let kubelet = Kubelet::start(&ctx.repo, &ctx.state, false)?;
        let service = Service::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), kubelet.endpoints())?;
        kubelet.wait_all_ready(secs(60.0))?;
        Ok(Harness { kubelet, service })
    }

    fn addr(&self) -> SocketAddr {
        self.service.addr()
    }

    /// Liveness/startup restarts and pod-readiness changes so far, for the line.
    fn summary(&self) -> String {
        let restarts = self.kubelet.all_restarts();
        let restarts = if restarts.is_empty() {
            "no restarts".to_string()
        } else {
            restarts.iter().map(|(w, n)| format!("{w} x{n}")).collect::<Vec<_>>().join(", ")
        };
        let per_pod: Vec<String> = self.service.stats.per_pod().iter().map(|(p, n)| format!("pod-{p}:{n}")).collect();
        format!(
            "kubelet: {restarts}; Service connections {} , {} refused",
            per_pod.join(" "),
            self.service.stats.refused()
        )
    }

    /// Times pod `pod` left or joined the endpoints, `(at since the kubelet started, ready)`.
    fn pod_changes(&self, pod: usize) -> Vec<(Duration, bool)> {
        let name = format!("pod-{pod}");
        self.kubelet
            .events()
            .into_iter()
            .filter(|e| e.what == name)
            .filter_map(|e| match e.kind {
                EventKind::PodReady(r) => Some((e.at, r)),
                _ => None,
            })
            .collect()
    }
}

/// One request's record.
#[derive(Debug, Clone)]
struct Sample {
    /// Sent, since the clients started.
    at: Duration,
    post: bool,
    /// Status, or why there was none.
    outcome: Result<u16, String>,
    value: Option<f64>,
    took: Duration,
    /// Whether this client had seen a newer value before (a GET going back in time).
    older_than_seen: bool,
}

/// Clients of the Service: GET loops and at most one POST loop, each request on a new
/// connection, recorded.
struct Clients {
    start: Instant,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Clients {
    /// `getters` loops sending a GET every `interval`, plus a POST loop every `post_every`
    /// (values counting up from `first_post`) if given.
    fn start(addr: SocketAddr, getters: usize, interval: Duration, posts: Option<(Duration, f64)>) -> Clients {
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        let loops =
            (0..getters).map(|_| (false, interval, 0.0)).chain(posts.map(|(every, first)| (true, every, first)));
        for (post, every, first) in loops {
            let (stop, samples) = (stop.clone(), samples.clone());
            threads.push(std::thread::spawn(move || {
                let mut newest: Option<f64> = None;
                let mut next_value = first;
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) && start.elapsed() < CLIENT_CAP {
                    let sent = Instant::now();
                    let body = post.then(|| {
                        next_value += 1.0;
                        format!("{{\"value\": {next_value}}}")
                    });
                    let (outcome, value) = request(addr, post, body.as_deref());
                    let older = !post && value.is_some_and(|v| newest.is_some_and(|n| v < n));
                    if !post && let Some(v) = value {
                        newest = Some(newest.map_or(v, |n: f64| n.max(v)));
                    }
                    let s =
                        Sample { at: sent - start, post, outcome, value, took: sent.elapsed(), older_than_seen: older };
                    samples.lock().unwrap_or_else(PoisonError::into_inner).push(s);
                    next += every;
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    } else {
                        next = now;
                    }
                }
            }));
        }
        Clients { start, stop, samples, threads }
    }

    fn since_start(&self) -> Duration {
        self.start.elapsed()
    }

    fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

fn request(addr: SocketAddr, post: bool, body: Option<&str>) -> (Result<u16, String>, Option<f64>) {
    let target = loadtest::client::Target { host: addr.to_string(), addr, path: "/".into() };
    let mut client = loadtest::client::Client::new(target, CLIENT_TIMEOUT);
    match client.request(if post { "POST" } else { "GET" }, body.map(str::as_bytes)) {
        Ok(a) => {
            let value = (a.status == 200 && !post).then(|| value_of(&a.body)).flatten();
            (Ok(a.status), value)
        }
        Err(e) => (Err(failure_kind(&e)), None),
    }
}

fn failure_kind(e: &loadtest::client::Failure) -> String {
    use loadtest::client::Failure;
    match e {
        Failure::Connect(_) => "connect".into(),
        Failure::Timeout => "timeout".into(),
        Failure::Io(m) if m.contains("reset") => "reset".into(),
        Failure::Io(_) => "io".into(),
        Failure::BadResponse(_) => "bad_response".into(),
    }
}

fn value_of(body: &[u8]) -> Option<f64> {
    serde_json::from_slice::<serde_json::Value>(body).ok()?["current"].as_f64()
}

/// Outcome counts of samples, e.g. `1234 × 200, 2 × 503, 1 × reset`.
fn codes<'a>(samples: impl Iterator<Item = &'a Sample>) -> String {
    let mut m = std::collections::BTreeMap::<String, u64>::new();
    for s in samples {
        let k = match &s.outcome {
            Ok(c) => c.to_string(),
            Err(e) => e.clone(),
        };
        *m.entry(k).or_default() += 1;
    }
    super::counts_text(m)
}

fn window(samples: &[Sample], from: Duration, to: Duration, post: bool) -> Vec<&Sample> {
    samples.iter().filter(|s| s.post == post && s.at >= from && s.at < to).collect()
}

fn percentile(mut d: Vec<Duration>, q: f64) -> Duration {
    d.sort();
    d.get(((d.len() as f64 * q) as usize).min(d.len().saturating_sub(1))).copied().unwrap_or_default()
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) of a process this cluster started; no memory involved.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// A fresh value (as #5 does), written through the Service and served by every pod directly.
fn settle(ctx: &Ctx, h: &Harness, v: f64) -> Result<()> {
    let (status, body) = crate::http(h.addr(), "POST", "/", Some(&format!("{{\"value\": {v}}}")))?;
    if status != 200 {
        bail!("POST {v} through the Service answered {status} {body}");
    }
    let until = Instant::now() + secs(20.0);
    for i in 1..=ctx.pods {
        loop {
            if let Ok((200, body)) = crate::http(ctx.pod(i), "GET", "/", None)
                && value_of(body.as_bytes()) == Some(v)
            {
                break;
            }
            if Instant::now() > until {
                bail!("pod-{i} does not serve {v} within 20 s");
            }
            sleep(0.05);
        }
    }
    Ok(())
}

fn fresh_value() -> f64 {
    (loadtest::stats::unix_now() % 1_000_000_000) as f64 * 1000.0
}

/// Waits until `f` holds (polled every 50 ms), at most `timeout`; the time it took.
fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if f() {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// GETs of `samples` answered 200 with `v`, as a share, and the count.
fn share_with(gets: &[&Sample], v: f64) -> (f64, usize) {
    let good = gets.iter().filter(|s| s.outcome == Ok(200) && s.value == Some(v)).count();
    (good as f64 / gets.len().max(1) as f64, good)
}

/// #11: the master SIGKILLed and kept down for `outage_s` (its node gone: the kubelet leaves it
/// alone), then handed back to the kubelet, which starts it again from its AOF.
pub fn master_outage(ctx: &Ctx, outage_s: f64) -> Result<Verdict> {
    let mut v = Verdict::new(11, "master down, judged at the Service");
    let h = Harness::start(ctx)?;
    let last = fresh_value();
    settle(ctx, &h, last)?;
    let clients = Clients::start(h.addr(), 4, secs(0.02), None);
    sleep(1.0);
    h.kubelet.hold(crate::MASTER, true);
    let master = ctx.pid(crate::MASTER)?;
    signal(master, libc::SIGKILL);
    let killed = clients.since_start();
    // POSTs only while the master is down: each must be refused, fast.
    let posts = Clients::start(h.addr(), 0, Duration::ZERO, Some((secs(0.1), last + 1.0)));
    let mut min_ready = ctx.pods;
    let down = Instant::now();
    while down.elapsed() < secs(outage_s) {
        min_ready = min_ready.min(h.kubelet.endpoints().ready().len());
        sleep(0.1);
    }
    let post_samples = posts.finish();
    let back_at = clients.since_start();
    h.kubelet.hold(crate::MASTER, false);
    let back = Instant::now();
    // Ready as the kubelet sees it once it has started the master again (while held, its
    // probes did not run and its last state stood).
    let master_ready = wait_for(secs(60.0), || h.kubelet.restarts(crate::MASTER) > 0 && h.kubelet.ready(crate::MASTER));
    let all_ready = wait_for(secs(60.0), || h.kubelet.endpoints().ready().len() == ctx.pods).map(|_| back.elapsed());
    let writes_back = wait_for(secs(60.0), || {
        matches!(crate::http(h.addr(), "POST", "/", Some(&format!("{{\"value\": {}}}", last + 1.0))), Ok((200, _)))
    })
    .map(|_| back.elapsed());
    sleep(1.0);
    let samples = clients.finish();
    let gets = window(&samples, killed, back_at, false);
    let (share, good) = share_with(&gets, last);
    v.figure(format!(
        "{:.0} s outage: GETs {:.3} % 200 with the last value ({good} of {}: {})",
        outage_s,
        share * 100.0,
        gets.len(),
        codes(gets.iter().copied())
    ));
    v.check(gets.len() > 100 && share >= 0.999, format!("GETs during the outage {:.3} % < 99.9 %", share * 100.0));
    v.figure(format!("endpoints during the outage: at least {min_ready} of {} ready", ctx.pods));
    let post_times: Vec<Duration> = post_samples.iter().map(|s| s.took).collect();
    let (p50, max) = (percentile(post_times.clone(), 0.5), percentile(post_times, 1.0));
    v.figure(format!(
        "POSTs meanwhile: {}, p50 {:.1} ms, max {:.0} ms",
        codes(post_samples.iter()),
        p50.as_secs_f64() * 1000.0,
        max.as_secs_f64() * 1000.0
    ));
    v.check(
        !post_samples.is_empty() && post_samples.iter().all(|s| s.outcome == Ok(503)),
        "POSTs not all 503 while the master was down",
    );
    v.check(within(ctx, p50, secs(0.01)), format!("POST p50 {p50:?}: not fast"));
    v.check(max <= ctx.deadline + secs(0.05), format!("a POST took {max:?}"));
    let fmt = |d: Option<Duration>| d.map_or("never".to_string(), |d| format!("{:.1} s", d.as_secs_f64()));
    v.figure(format!(
        "after its return: master ready {}, every pod ready {}, POSTs 200 {}",
        fmt(master_ready),
        fmt(all_ready),
        fmt(writes_back)
    ));
    for (what, d) in [("master ready", master_ready), ("every pod ready", all_ready), ("writes back", writes_back)] {
        v.check(d.is_some_and(|d| within(ctx, d, secs(10.0))), format!("{what} not within 10 s of the return"));
    }
    v.figure(h.summary());
    v.figure(timing_note(ctx));
    Ok(v)
}

/// #12: the master SIGSTOPped and left so: the kubelet's liveness probe must restart it.
pub fn master_hung(ctx: &Ctx) -> Result<Verdict> {
    let mut v = Verdict::new(12, "master SIGSTOP, kubelet restart");
    let h = Harness::start(ctx)?;
    let last = fresh_value();
    settle(ctx, &h, last)?;
    let clients = Clients::start(h.addr(), 4, secs(0.02), None);
    sleep(1.0);
    let master = ctx.pid(crate::MASTER)?;
    let liveness =
        h.kubelet.containers().iter().find(|c| c.what == crate::MASTER).and_then(|c| c.probes.liveness.clone());
    signal(master, libc::SIGSTOP);
    let stopped = Instant::now();
    let stopped_at = clients.since_start();
    let restarted = wait_for(secs(120.0), || h.kubelet.restarts(crate::MASTER) > 0);
    // Make sure the stopped process is gone whatever happened (a SIGKILL works on a stopped one).
    if crate::netns::alive(master) {
        signal(master, libc::SIGKILL);
        if restarted.is_none() {
            let _ = crate::respawn(&ctx.state, crate::MASTER);
        }
    }
    let detected = h
        .kubelet
        .events()
        .into_iter()
        .find(|e| e.what == crate::MASTER && matches!(&e.kind, EventKind::ProbeFailed(Kind::Liveness, _)));
    let ready =
        wait_for(secs(60.0), || h.kubelet.ready(crate::MASTER) && h.kubelet.endpoints().ready().len() == ctx.pods)
            .map(|_| stopped.elapsed());
    let end_at = clients.since_start();
    sleep(1.0);
    let samples = clients.finish();
    match &liveness {
        Some(p) => {
            v.figure(format!("master liveness {} every {} s, x{}", p.action, p.period.as_secs(), p.failure_threshold))
        }
        None => v.fail("the master has no liveness probe"),
    }
    if let Some(e) = detected {
        v.figure(format!(
            "first liveness failure {:.1} s after SIGSTOP",
            (e.at.saturating_sub(h.kubelet.elapsed() - stopped.elapsed())).as_secs_f64()
        ));
    }
    match restarted {
        Some(t) => {
            v.figure(format!("restarted by the kubelet {:.1} s after SIGSTOP", t.as_secs_f64()));
            v.check(
                within(ctx, t, secs(40.0)),
                format!("restart {:.1} s after SIGSTOP, not within 40 s", t.as_secs_f64()),
            );
        }
        None => v.fail("the kubelet did not restart the hung master within 120 s"),
    }
    match ready {
        Some(t) => v.figure(format!("master and every pod ready {:.1} s after SIGSTOP", t.as_secs_f64())),
        None => v.fail("not everything ready within 60 s of the restart"),
    }
    let gets = window(&samples, stopped_at, end_at, false);
    let (share, good) = share_with(&gets, last);
    v.figure(format!(
        "GETs through the Service: {good} of {} 200 with the last value ({})",
        gets.len(),
        codes(gets.iter().copied())
    ));
    let odd: Vec<String> = gets
        .iter()
        .filter(|s| s.outcome != Ok(200) || s.value != Some(last))
        .take(4)
        .map(|s| format!("{:.1} s", (s.at - stopped_at).as_secs_f64()))
        .collect();
    if !odd.is_empty() {
        v.figure(format!("the first others at {} after SIGSTOP", odd.join(", ")));
    }
    v.check(
        !gets.is_empty() && good == gets.len(),
        format!("reads affected: {:.3} % 200 with the last value", share * 100.0),
    );
    v.figure(h.summary());
    v.figure(timing_note(ctx));
    Ok(v)
}

/// #13: #1's 10x overload on pod 1 with the kubelet probing: no liveness restart; readiness
/// flips are counted and judged (none is justified: no readiness rule is about load).
pub fn overload_probes(ctx: &Ctx, plan: &super::Plan) -> Result<Verdict> {
    let mut v = Verdict::new(13, "10x overload, kubelet probing");
    let h = Harness::start(ctx)?;
    let clients = Clients::start(h.addr(), 2, secs(0.05), None);
    let api = format!("pod-1/{}", crate::API);
    let pid = ctx.api_pid(1)?;
    let t0 = h.kubelet.elapsed();
    let shape = super::scenarios::overload(ctx, plan.overload_s, plan.overload_quota, plan.overload_connections);
    let samples = clients.finish();
    let events: Vec<_> = h.kubelet.events().into_iter().filter(|e| e.at >= t0).collect();
    let failed = |kind: Kind| {
        events.iter().filter(|e| e.what == api && matches!(&e.kind, EventKind::ProbeFailed(k, _) if *k == kind)).count()
    };
    let first_reason = events.iter().find_map(|e| match &e.kind {
        EventKind::ProbeFailed(_, why) if e.what == api => Some(why.clone()),
        _ => None,
    });
    let flips = h.pod_changes(1).into_iter().filter(|(at, ready)| *at >= t0 && !ready).count();
    let restarts = h.kubelet.restarts(&api);
    match &shape {
        Ok(s) => v.figure(format!("#1's load: {}", s.figures.first().cloned().unwrap_or_default())),
        Err(e) => v.fail(format!("the overload could not run: {e:#}")),
    }
    v.figure(format!(
        "pod-1 API: {restarts} restarts, {} liveness / {} readiness probe failures{}, left the endpoints {flips} times",
        failed(Kind::Liveness),
        failed(Kind::Readiness),
        first_reason.map(|r| format!(" (first: {r})")).unwrap_or_default()
    ));
    v.check(restarts == 0 && crate::netns::alive(pid), format!("the busy API was restarted ({restarts})"));
    v.check(flips == 0, format!("pod-1 left the endpoints {flips} times under load"));
    v.figure(format!("Service clients meanwhile: {}", codes(samples.iter())));
    v.figure(h.summary());
    if let Some(s) = proc_stat(pid) {
        v.figure(format!("API threads after {}", s.threads));
    }
    Ok(v)
}

/// Runs `redis-cli ARGS` against the replica of pod `i` as the harness's user (inside its
/// namespace, the password in REDISCLI_AUTH, never argv).
fn replica_cli(ctx: &Ctx, i: usize, args: &[&str]) -> Result<String> {
    let ns = crate::pod_ns(&ctx.prefix, i);
    let out = Command::new("ip")
        .args(["netns", "exec", &ns, "redis-cli", "-h", "127.0.0.1", "-p", "6379", "--user", &ctx.harness.user])
        .args(args)
        .env("REDISCLI_AUTH", &ctx.harness.password)
        .output()
        .context("redis-cli")?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || text.starts_with("ERR") {
        bail!("redis-cli {args:?} in {ns}: {text} {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(text)
}

/// Cuts (or restores) the link of pod `i`'s replica alone: the replica's connections leave
/// from a second address of the pod that a firewall rule drops, the API's from the usual one.
fn cut_replica_link(ctx: &Ctx, i: usize, cut: bool) -> Result<()> {
    let ns = crate::pod_ns(&ctx.prefix, i);
    let addr = format!("10.{}.{i}.3", ctx.net);
    let ipt = |op: &str| -> Result<()> {
        let ok = Command::new("ip")
            .args(["netns", "exec", &ns, "iptables", op, "OUTPUT", "-s", &addr, "-j", "DROP"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok { Ok(()) } else { Err(anyhow!("iptables {op} in {ns} failed")) }
    };
    if cut {
        crate::netns::ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
        ipt("-A")?;
        replica_cli(ctx, i, &["CONFIG", "SET", "bind-source-addr", &addr])?;
        replica_cli(ctx, i, &["CLIENT", "KILL", "TYPE", "master"])?;
    } else {
        replica_cli(ctx, i, &["CONFIG", "SET", "bind-source-addr", ""])?;
        ipt("-D")?;
        crate::netns::ip(&["-n", &ns, "addr", "del", &format!("{addr}/24"), "dev", "eth0"])?;
        // A connect attempt stuck on the dropped address ends at its timeout; start afresh.
        let _ = replica_cli(ctx, i, &["CLIENT", "KILL", "TYPE", "master"]);
    }
    Ok(())
}

/// #14: pod 2's replica link cut while the master is up (the API still reaches it), a new
/// value written: pod 2 must leave the endpoints after the grace; the others serve.
pub fn replica_link_cut(ctx: &Ctx, seconds: f64) -> Result<Verdict> {
    let mut v = Verdict::new(14, "one replica cut off, judged at the Service");
    let h = Harness::start(ctx)?;
    let old = fresh_value();
    settle(ctx, &h, old)?;
    let clients = Clients::start(h.addr(), 4, secs(0.02), None);
    sleep(1.0);
    let t0 = h.kubelet.elapsed();
    cut_replica_link(ctx, 2, true)?;
    let cut_at = clients.since_start();
    let cut = Instant::now();
    let new = old + 1.0;
    // The link comes back on every path.
    let link = Undo::new("pod 2's replica link cut", || cut_replica_link(ctx, 2, false));
    let (status, _) = crate::http(ctx.pod(1), "POST", "/", Some(&format!("{{\"value\": {new}}}")))?;
    v.check(status == 200, format!("POST during the cut answered {status}"));
    while cut.elapsed() < secs(seconds) {
        sleep(0.2);
    }
    let end_at = clients.since_start();
    link.now()?;
    let restored = Instant::now();
    let back = wait_for(secs(60.0), || h.kubelet.endpoints().ready().len() == ctx.pods).map(|_| restored.elapsed());
    let samples = clients.finish();
    let left = h.pod_changes(2).into_iter().find(|(at, r)| *at >= t0 && !r).map(|(at, _)| at - t0);
    let others_left =
        (1..=ctx.pods).filter(|p| *p != 2).any(|p| h.pod_changes(p).iter().any(|(at, r)| *at >= t0 && !r));
    let first = secs(5.0);
    let gets = window(&samples, cut_at, end_at, false);
    let errors_late = gets.iter().filter(|s| s.at >= cut_at + first && s.outcome != Ok(200)).count();
    v.figure(format!(
        "GETs during the cut: {}; {errors_late} not 200 after the first 5 s",
        codes(gets.iter().copied())
    ));
    v.check(errors_late == 0, format!("{errors_late} errors after the first seconds"));
    match left {
        Some(t) => {
            v.figure(format!(
                "pod-2 left the endpoints {:.1} s after the cut (grace {} s)",
                t.as_secs_f64(),
                ctx.link_grace.as_secs()
            ));
            v.check(t >= ctx.link_grace, "left before the grace ran out");
            v.check(within(ctx, t, ctx.link_grace + secs(10.0)), "left more than 10 s after the grace");
            // Once out, every GET is served by the pods that have the new value.
            let settled = cut_at + t + secs(1.0);
            let after: Vec<&Sample> = gets.iter().copied().filter(|s| s.at >= settled).collect();
            let stale = after.iter().filter(|s| s.outcome == Ok(200) && s.value != Some(new)).count();
            v.figure(format!("after it left: {stale} stale of {} GETs", after.len()));
            v.check(!after.is_empty() && stale == 0, format!("{stale} GETs served an old value after pod-2 left"));
        }
        None => v.fail("pod-2 never left the endpoints"),
    }
    v.check(!others_left, "another pod left the endpoints");
    match back {
        Some(t) => v.figure(format!("every pod an endpoint again {:.1} s after the link returned", t.as_secs_f64())),
        None => v.fail("pod-2 not back within 60 s of the link's return"),
    }
    v.figure(h.summary());
    v.figure(timing_note(ctx));
    Ok(v)
}

/// An RDB file holding only `value` (written by a throwaway redis-server on a Unix socket):
/// an older dump with no replication history in common with the master, so the replica that
/// loads it needs a full sync (the master waits `repl-diskless-sync-delay` before sending it),
/// as a replica restarted in place after the master's own restart does (#4's 1.18-after-1.46).
fn old_dump(state: &std::path::Path, value: f64) -> Result<std::path::PathBuf> {
    let dir = state.join("old-dump");
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    let sock = dir.join("redis.sock");
    let mut server = Command::new("redis-server")
        .args(["--port", "0", "--save", "", "--appendonly", "no", "--unixsocket"])
        .arg(&sock)
        .arg("--dir")
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("redis-server")?;
    let cli = |args: &[&str]| {
        Command::new("redis-cli").arg("-s").arg(&sock).args(args).output().map(|o| o.status.success()).unwrap_or(false)
    };
    let up = wait_for(secs(5.0), || cli(&["PING"])).is_some();
    let ok = up && cli(&["HSET", "currency", "current-value", &value.to_string()]) && cli(&["SAVE"]);
    let _ = server.kill();
    let _ = server.wait();
    if !ok {
        bail!("could not write the old dump with a throwaway redis-server");
    }
    Ok(dir.join("dump.rdb"))
}

/// #15: pod 1's replica killed and started again (by the kubelet) on an older dump of the data:
/// no client may see a value older than one it saw.
pub fn older_dump(ctx: &Ctx) -> Result<Verdict> {
    let mut v = Verdict::new(15, "replica restarted on an older dump");
    let h = Harness::start(ctx)?;
    let old = fresh_value();
    settle(ctx, &h, old)?;
    let dump = old_dump(&ctx.state, old)?;
    let replica_dump = ctx.state.join("pod-1/redis-replica-fs/data/dump.rdb");
    let new = old + 1.0;
    settle(ctx, &h, new)?;
    let clients = Clients::start(h.addr(), 4, secs(0.01), None);
    // And one client of pod 1 directly: per pod, the promise is the same.
    let direct = Clients::start(ctx.pod(1), 1, secs(0.01), None);
    sleep(1.0);
    let what = "pod-1/redis-replica";
    h.kubelet.hold(what, true);
    let replica = ctx.pid(what)?;
    signal(replica, libc::SIGKILL);
    let killed = Instant::now();
    let copied = std::fs::copy(&dump, &replica_dump).with_context(|| replica_dump.display().to_string());
    let _ = std::fs::remove_file(&dump);
    h.kubelet.hold(what, false);
    copied?;
    let restarted = wait_for(secs(10.0), || h.kubelet.restarts(what) > 0).map(|_| killed.elapsed());
    // Back: pod 1 an endpoint again and serving the new value (after its full sync).
    let back = wait_for(secs(60.0), || {
        h.kubelet.endpoints().ready().len() == ctx.pods
            && matches!(crate::http(ctx.pod(1), "GET", "/", None), Ok((200, b)) if value_of(b.as_bytes()) == Some(new))
    })
    .map(|_| killed.elapsed());
    sleep(2.0);
    let samples = clients.finish();
    let direct = direct.finish();
    let back_in = |s: &[Sample]| -> (usize, usize, Option<f64>) {
        let older = s.iter().filter(|s| s.older_than_seen).count();
        let oldest = s.iter().filter(|s| s.older_than_seen).filter_map(|s| s.value).reduce(f64::min);
        (older, s.iter().filter(|s| s.value == Some(old)).count(), oldest)
    };
    let (older, old_seen, oldest) = back_in(&samples);
    let (d_older, d_old_seen, _) = back_in(&direct);
    v.figure(format!(
        "dump of {old} planted, {new} served before; kubelet restart {}",
        match restarted {
            Some(t) => format!("{:.1} s after the kill", t.as_secs_f64()),
            None => "none".into(),
        }
    ));
    v.check(restarted.is_some(), "the kubelet did not restart the replica");
    v.figure(format!(
        "through the Service: {}; {older} answers older than one seen (the old value {old_seen} times{})",
        codes(samples.iter()),
        oldest.map(|o| format!(", oldest {o}")).unwrap_or_default()
    ));
    v.figure(format!("pod-1 directly: {}; {d_older} older than one seen", codes(direct.iter())));
    v.check(older == 0 && old_seen == 0, format!("{older} reads through the Service went back in time"));
    v.check(d_older == 0 && d_old_seen == 0, format!("{d_older} reads of pod-1 went back in time"));
    match back {
        Some(t) => v.figure(format!("pod-1 an endpoint serving {new} again {:.1} s after the kill", t.as_secs_f64())),
        None => v.fail("pod-1 not back in the endpoints serving the new value within 60 s"),
    }
    v.figure(h.summary());
    Ok(v)
}
