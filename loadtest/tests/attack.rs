//! Correctness of the load generator and the aggregator (not timings): the offered rate is
//! kept, counts match the server's, a stalled target shows as latency and timeouts, merged
//! percentiles are percentiles of the union, and an independent tool agrees.

use loadtest::aggregator::{self, Aggregator, Discovery};
use loadtest::attack::{self, Recorder};
use loadtest::client::Target;
use loadtest::stats::{GeneratorReport, Interval, histogram};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use testkit::*;

/// A kit process on port 0 (its address from its log).
fn kit(args: &[&str]) -> Listening {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loadtest"));
    cmd.args(args).args(["--listen", "127.0.0.1:0"]);
    Listening::spawn(cmd)
}

fn hello_world() -> (Listening, SocketAddr) {
    let hello = kit(&["hello-world"]);
    let addr = hello.addr;
    (hello, addr)
}

fn config(addr: SocketAddr, rate: f64, secs: f64) -> attack::Config {
    attack::Config {
        targets: vec![Target::parse(&format!("http://{addr}/")).unwrap()],
        rate,
        duration: Some(Duration::from_secs_f64(secs)),
        timeout: Duration::from_millis(300),
        connections: 16,
        post_ratio: 0.0,
        name: "test".into(),
    }
}

fn attack_now(cfg: &attack::Config) -> (attack::Report, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::new(None));
    let (_tx, rx) = crossbeam_channel::bounded(1);
    let times = attack::run(cfg, &recorder, &rx);
    (attack::Report::new(cfg, times, &recorder.total()), recorder)
}

/// Against hello-world at a rate the machine sustains, the achieved rate is within 2 % of the
/// offered one and the request count equals the server's own count.
#[test]
fn achieved_rate_and_count_match() {
    let _s = serial();
    let (_hello, addr) = hello_world();
    let (report, _) = attack_now(&config(addr, 2000.0, 3.0));
    assert_eq!(report.requests, 6000);
    assert!((report.rate - 2000.0).abs() / 2000.0 < 0.02, "rate {}", report.rate);
    assert!((report.throughput - 2000.0).abs() / 2000.0 < 0.02, "throughput {}", report.throughput);
    assert_eq!(report.success_ratio, 1.0);
    let served = get(addr, "/metrics").text();
    assert!(served.contains("hello_requests_total 6000"), "{served}");
}

/// A target stalled (SIGSTOP) for a second: the generator keeps offering the same rate each
/// second, and the stall shows in the percentiles and as timeouts.
#[test]
fn stalled_target_keeps_offered_rate() {
    let _s = serial();
    let (hello, addr) = hello_world();
    let pid = hello.child.id();
    let stall = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1000));
        signal(pid, "STOP");
        std::thread::sleep(Duration::from_millis(1000));
        signal(pid, "CONT");
    });
    let (report, recorder) = attack_now(&config(addr, 500.0, 3.0));
    stall.join().unwrap();
    let intervals = recorder.completed_intervals(u64::MAX);
    let offered: Vec<u64> = intervals.iter().map(|i| i.offered).collect();
    assert_eq!(offered.iter().sum::<u64>(), 1500, "{offered:?}");
    // Every full second offered ~500 (the first and last may be partial seconds of the clock).
    for o in &offered[1..offered.len() - 1] {
        assert!((450..=550).contains(o), "{offered:?}");
    }
    // 16 connections time out every 300 ms during the 1 s stall: ~50 timeouts; the rest of the
    // stalled second waits in the queue and is answered late.
    assert!(report.errors.get("timeout").copied().unwrap_or(0) >= 20, "{:?}", report.errors);
    assert!(report.latency_ms.p99 >= 300.0, "p99 {}", report.latency_ms.p99);
    assert!(report.latency_ms.p50 < 50.0, "most requests were not stalled: p50 {}", report.latency_ms.p50);
}

/// Serves a fixed generator report (known samples) like a generator in pod mode.
fn fake_generator(report: GeneratorReport) -> (http1::ServerHandle, String) {
    let body = serde_json::to_vec(&report).unwrap();
    let routes: loadtest::ops::Routes =
        Box::new(move |req| (req.path == "/").then(|| http1::Response::new(200, "application/json", body.clone())));
    let registry = prometheus_client::registry::Registry::default();
    let server = loadtest::ops::serve("127.0.0.1:0".parse().unwrap(), registry, routes).unwrap();
    let url = format!("http://{}/", server.local_addr());
    (server, url)
}

/// The merged p99 over two generators is the p99 of the union of their samples — not the mean
/// of their p99s; a generator that stops answering is shown as missing.
#[test]
fn merged_percentiles_are_of_the_union() {
    let _s = serial();
    let t = loadtest::stats::unix_now() - 5;
    // Generator A: 990 fast (1 ms) and 10 slow (100 ms); B: 100 at 50 ms.
    let samples_a: Vec<u64> = (0..990).map(|_| 1_000).chain((0..10).map(|_| 100_000)).collect();
    let samples_b: Vec<u64> = (0..100).map(|_| 50_000).collect();
    let interval = |samples: &[u64]| {
        let mut i = Interval::new(t);
        i.offered = samples.len() as u64;
        for us in samples {
            i.record_latency(Duration::from_micros(*us));
            *i.codes.entry(200).or_default() += 1;
        }
        i
    };
    let report = |name: &str, samples: &[u64]| GeneratorReport {
        name: name.into(),
        rate: 1000.0,
        targets: vec![],
        intervals: vec![interval(samples).to_wire()],
    };
    let (a, url_a) = fake_generator(report("a", &samples_a));
    let (b, url_b) = fake_generator(report("b", &samples_b));
    let agg = Aggregator::new(aggregator::Config {
        discovery: Discovery::List(vec![url_a.clone(), url_b.clone()]),
        window_s: 300,
        timeout: Duration::from_millis(500),
        poll: Duration::from_secs(1),
        api_url: "http://127.0.0.1:1/".into(),
    });
    agg.poll_once();
    agg.poll_once(); // pulled twice: each second is merged once per generator
    let mut union = histogram();
    for us in samples_a.iter().chain(&samples_b) {
        union.record(*us).unwrap();
    }
    let merged = agg.merged_interval(t).expect("merged second");
    assert_eq!(merged.hist.len(), 1100);
    assert_eq!(merged.hist.value_at_quantile(0.99), union.value_at_quantile(0.99));
    let series = agg.series();
    let point = series.intervals.iter().find(|p| p.t == t).unwrap();
    assert_eq!(point.generators_reporting, 2);
    assert_eq!((point.offered, point.achieved), (1100, 1100));
    let union_p99_ms = union.value_at_quantile(0.99) as f64 / 1000.0;
    assert_eq!(point.latency_ms.p99, union_p99_ms);
    let p99 = |s: &[u64]| {
        let mut h = histogram();
        s.iter().for_each(|v| h.record(*v).unwrap());
        h.value_at_quantile(0.99) as f64 / 1000.0
    };
    let mean_of_p99s = (p99(&samples_a) + p99(&samples_b)) / 2.0;
    assert!((point.latency_ms.p99 - mean_of_p99s).abs() > 10.0, "{} vs {mean_of_p99s}", point.latency_ms.p99);

    b.shutdown(Duration::from_secs(1));
    agg.poll_once();
    let gens = agg.series().generators;
    let state = |u: &str| gens.iter().find(|g| g.url == u).map(|g| g.state);
    assert_eq!((state(&url_a), state(&url_b)), (Some("ok"), Some("missing")));
    drop(a);
}

/// Pod mode through the binaries: two generators against hello-world, the aggregator's
/// /api/series shows both and merged seconds with the summed offered rate.
#[test]
fn pod_mode_and_aggregator_binaries() {
    let _s = serial();
    let (_hello, addr) = hello_world();
    let mut gens = Vec::new();
    let mut urls = Vec::new();
    for n in 1..=2 {
        let (target, name) = (format!("http://{addr}/"), format!("gen-{n}"));
        let generator = kit(&["attack", "--target", &target, "--rate", "100", "--duration", "0", "--name", &name]);
        urls.push(format!("http://{}/", generator.addr));
        gens.push(generator);
    }
    let agg = kit(&["aggregator", "--generators", &urls.join(",")]);
    let agg_addr = agg.addr;
    wait_until(Duration::from_secs(10), "merged seconds from both generators", || {
        std::net::TcpStream::connect(agg_addr).is_ok() && {
            let s = get(agg_addr, "/api/series").json();
            s["intervals"]
                .as_array()
                .is_some_and(|v| v.iter().any(|p| p["generators_reporting"] == 2 && p["offered"] == 200))
        }
    });
    let s = get(agg_addr, "/api/series").json();
    let names: Vec<&str> = s["generators"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"gen-1") && names.contains(&"gen-2"));
    let page = get(agg_addr, "/");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("/static/dashboard.js"));
    // The gauge is set after the merged seconds are published.
    wait_until(Duration::from_secs(5), "the gauge of generators reporting", || {
        get(agg_addr, "/metrics").text().contains("aggregator_generators{state=\"ok\"} 2")
    });
    let gen_addr: SocketAddr = urls[0].trim_start_matches("http://").trim_end_matches('/').parse().unwrap();
    assert!(get(gen_addr, "/metrics").text().contains("loadgen_offered_total"));
    drop(agg);
}

/// Our report against wrk's on the same target at the same concurrency: same order of
/// magnitude of throughput and latency.
#[test]
#[ignore = "needs wrk: scripts/test.sh runs it"]
fn agrees_with_wrk() {
    let _s = serial();
    let (_hello, addr) = hello_world();
    let out = Command::new("wrk")
        .args(["-t1", "-c16", "-d2s", "--latency", &format!("http://{addr}/")])
        .output()
        .expect("wrk (Debian package wrk; scripts/test.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let wrk_rps: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    let wrk_p50_ms: f64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("50%"))
        .map(|v| {
            let v = v.trim();
            if let Some(us) = v.strip_suffix("us") {
                us.parse::<f64>().unwrap() / 1000.0
            } else if let Some(ms) = v.strip_suffix("ms") {
                ms.parse().unwrap()
            } else {
                v.trim_end_matches('s').parse::<f64>().unwrap() * 1000.0
            }
        })
        .unwrap_or_else(|| panic!("{text}"));
    // Open loop at half of wrk's closed-loop maximum: throughput and latency comparable.
    let rate = (wrk_rps / 2.0).min(20_000.0);
    let mut cfg = config(addr, rate, 2.0);
    cfg.timeout = Duration::from_secs(2);
    let (ours, _) = attack_now(&cfg);
    assert!(ours.success_ratio > 0.99, "{}", ours.success_ratio);
    let ratio = ours.throughput / wrk_rps;
    assert!((0.1..=10.0).contains(&ratio), "throughput ours {} wrk {wrk_rps}", ours.throughput);
    let lat = ours.latency_ms.p50 / wrk_p50_ms;
    assert!((0.1..=10.0).contains(&lat), "p50 ours {} ms, wrk {wrk_p50_ms} ms", ours.latency_ms.p50);
}

/// A window that fits one request (5 req/s for 100 ms) reports the rate sent in it (1 request
/// in 0.1 s), not 0.
#[test]
fn short_attack_reports_its_true_rate() {
    let _s = serial();
    let (_hello, addr) = hello_world();
    let (report, _) = attack_now(&config(addr, 5.0, 0.1));
    assert_eq!(report.requests, 1);
    assert!((report.rate - 10.0).abs() < 0.5, "rate {}", report.rate);
    assert!((report.attack_s - 0.1).abs() < 0.02, "attack {} s", report.attack_s);
}

fn loadtest_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loadtest"));
    cmd.args(args).env_remove("ATTACK_LISTEN_ADDR").env_remove("TARGET_URL");
    cmd
}

/// `loadtest --version` prints the version on stdout and exits 0.
#[test]
fn version_exits_0() {
    let out = loadtest_cmd(&["--version"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("loadtest {}", env!("CARGO_PKG_VERSION")));
}

/// A target with nothing listening: the report names the reason (connection refused) and the
/// exit status is 1.
#[test]
fn unreachable_target_names_the_reason_and_fails() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/");
    let out = loadtest_cmd(&["attack", "--target", &url, "--rate", "20", "--duration", "300ms"]).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("connect: 6 (Connection refused"), "{stdout}");
    assert!(stderr.contains("no request got an answer: connect (Connection refused"), "{stderr}");
}

/// LISTEN_ADDR in the environment (the API's variable) leaves `attack` a one-off run: it prints
/// its report and exits; only --listen or ATTACK_LISTEN_ADDR asks for pod mode.
#[test]
fn listen_addr_does_not_make_pod_mode() {
    let _s = serial();
    let (_hello, addr) = hello_world();
    let busy = format!("127.0.0.1:{}", free_port());
    let mut cmd =
        loadtest_cmd(&["attack", "--target", &format!("http://{addr}/"), "--rate", "50", "--duration", "200ms"]);
    let out = cmd.env("LISTEN_ADDR", &busy).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Status Codes  [code:count]                    200:10"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("attack ignores LISTEN_ADDR"));
}

/// A short run in pod mode (100 req/s for 2.5 s): every request it offered reaches the
/// aggregator, the last partial second included, before the generator exits (it used to exit
/// with its last one or two seconds never pulled).
#[test]
fn pod_mode_flushes_its_last_seconds() {
    let _s = serial();
    let (_hello, addr) = hello_world();
    let target = format!("http://{addr}/");
    let mut generator =
        kit(&["attack", "--target", &target, "--rate", "100", "--duration", "2500ms", "--name", "short"]);
    let gen_url = format!("http://{}/", generator.addr);
    let agg = Arc::new(Aggregator::new(aggregator::Config {
        discovery: Discovery::List(vec![gen_url]),
        window_s: 60,
        timeout: Duration::from_millis(500),
        poll: Duration::from_secs(1),
        api_url: "http://127.0.0.1:1/".into(),
    }));
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    let a = agg.clone();
    let poller = std::thread::spawn(move || a.run(&stop_rx));
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = generator.child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "the generator did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let _ = stop_tx.send(());
    poller.join().unwrap();
    let series = agg.series();
    let offered: u64 = series.intervals.iter().map(|p| p.offered).sum();
    let achieved: u64 = series.intervals.iter().map(|p| p.achieved).sum();
    assert_eq!((offered, achieved), (250, 250), "{:?}", series.intervals);
}

/// An 11 s attack prints a progress line once a second on a terminal (run under `script`, a
/// pseudo-terminal), and none when stderr is a pipe: the report alone, as before.
#[test]
fn progress_lines_only_on_a_terminal() {
    let _s = serial();
    let (_hello, addr) = hello_world();
    let target = format!("http://{addr}/");
    let args = ["attack", "--target", &target, "--rate", "50", "--duration", "11s"];
    let piped = loadtest_cmd(&args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let line = format!("'{}' {}", env!("CARGO_BIN_EXE_loadtest"), args.join(" "));
    let tty = Command::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .env_remove("ATTACK_LISTEN_ADDR")
        .env_remove("TARGET_URL")
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux) runs the attack on a pseudo-terminal");
    let piped = piped.wait_with_output().unwrap();
    let (shown, stderr) = (String::from_utf8_lossy(&tty.stdout), String::from_utf8_lossy(&piped.stderr));
    assert_eq!((tty.status.code(), piped.status.code()), (Some(0), Some(0)), "{shown}\n{stderr}");
    let progress: Vec<&str> = shown.lines().filter(|l| l.contains(" s of 11 s, ")).collect();
    assert!((8..=12).contains(&progress.len()), "a line a second: {shown}");
    assert!(progress.iter().any(|l| l.contains("rate 50/s (offered 50/s)  success 100.00 %  p99 ")), "{shown}");
    assert!(shown.contains("Requests      [total, rate, throughput]         550,"), "the report follows: {shown}");
    assert!(!stderr.contains(" s of 11 s"), "no progress into a pipe: {stderr}");
    assert!(String::from_utf8_lossy(&piped.stdout).contains("Requests      [total, rate, throughput]         550,"));
}
