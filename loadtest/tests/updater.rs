//! The updater and hello-world against real servers: the schedule, failures survived, signals.

use loadtest::client::Target;
use loadtest::updater::{self, Config, Stats};
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::*;

fn config(url: &str, interval_ms: u64) -> Config {
    Config {
        api: Target::parse(url).unwrap(),
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(interval_ms.min(900)),
        start_value: 100.0,
    }
}

/// Runs the updater for `run` in a thread; returns its stats.
fn run_for(cfg: Config, run: Duration) -> Stats {
    let stats = Stats::default();
    let (tx, rx) = crossbeam_channel::bounded(1);
    let s = stats.clone();
    let h = std::thread::spawn(move || updater::run(&cfg, &s, &rx));
    std::thread::sleep(run);
    tx.send(()).unwrap();
    h.join().unwrap();
    stats
}

/// One POST per tick on an absolute schedule: 1.05 s at 100 ms gives the 11 ticks 0..=1000 ms;
/// the master holds the last value posted.
#[test]
fn posts_on_schedule() {
    let pair = Pair::new();
    let api = Api::on(&pair, &[]);
    api.wait_ready();
    let stats = run_for(config(&format!("http://{}/", api.addr), 100), Duration::from_millis(1080));
    assert_eq!(stats.count("failed"), 0);
    assert_eq!(stats.count("ok"), 11, "ticks at 0, 100, ..., 1000 ms");
    assert_eq!(stats.skipped_ticks.get(), 0);
    let last = stats.last_value.get();
    assert_eq!(pair.master.hget().parse::<f64>().unwrap(), last);
    assert!(last != 100.0 && (last - 100.0).abs() < 100.0 * 0.011 * 11.0, "a small walk from 100: {last}");
}

/// A server that answers 200 after `delay`, counting requests.
fn slow_server(delay: Duration) -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let c = c.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    std::thread::sleep(delay);
                    c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
                }
            });
        }
    });
    (addr, count)
}

/// No drift: with each POST taking 30 ms, ticks stay at k × 100 ms (a sleep-after-POST loop
/// would manage only 9 in the same time).
#[test]
fn slow_posts_do_not_drift() {
    let (addr, count) = slow_server(Duration::from_millis(30));
    let stats = run_for(config(&format!("http://{addr}/"), 100), Duration::from_millis(1080));
    assert_eq!(stats.count("ok"), 11);
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 11);
    // A POST slower than the interval skips ticks instead of bunching them.
    let (addr, _) = slow_server(Duration::from_millis(250));
    let cfg = Config { timeout: Duration::from_millis(900), ..config(&format!("http://{addr}/"), 100) };
    let stats = run_for(cfg, Duration::from_millis(1080));
    assert_eq!(stats.count("failed"), 0);
    assert!((3..=5).contains(&stats.count("ok")), "{}", stats.count("ok"));
    assert!(stats.skipped_ticks.get() >= 5, "{}", stats.skipped_ticks.get());
}

/// The API is down for a while: failures are counted, the updater keeps its schedule and
/// succeeds once the API is up.
#[test]
fn keeps_going_through_failures() {
    let pair = Pair::new();
    let port = free_port();
    let cfg = config(&format!("http://127.0.0.1:{port}/"), 100);
    let stats = Stats::default();
    let (tx, rx) = crossbeam_channel::bounded(1);
    let s = stats.clone();
    let h = std::thread::spawn(move || updater::run(&cfg, &s, &rx));
    std::thread::sleep(Duration::from_millis(450));
    let failed_while_down = stats.count("failed");
    assert!(failed_while_down >= 4, "{failed_while_down}");
    let api = Api::on(&pair, &[("LISTEN_ADDR", &format!("127.0.0.1:{port}"))]);
    api.wait_ready();
    let t = Instant::now();
    while stats.count("ok") < 3 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    tx.send(()).unwrap();
    h.join().unwrap();
    assert!(stats.count("ok") >= 3);
    assert_eq!(pair.master.hget().parse::<f64>().unwrap(), stats.last_value.get());
}

/// The binaries: hello-world answers and counts; the updater serves /metrics; both exit 0 on
/// SIGTERM at once.
#[test]
fn binaries_serve_and_stop_on_sigterm() {
    let kit = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_loadtest"));
        cmd.args(args).args(["--listen", "127.0.0.1:0"]);
        Listening::spawn(cmd)
    };
    let mut hello = kit(&["hello-world"]);
    let addr = hello.addr;
    for _ in 0..5 {
        let r = get(addr, "/");
        assert_eq!((r.status, r.body.as_slice()), (200, loadtest::hello::BODY));
    }
    let metrics = get(addr, "/metrics").text();
    assert!(metrics.contains("hello_requests_total 5"), "{metrics}");

    let mut updater = kit(&["updater", "--api-url", &format!("http://{addr}/"), "--interval", "50ms"]);
    let up_addr = updater.addr;
    // hello-world answers POST / with 404: every POST is a counted failure.
    wait_until(Duration::from_secs(5), "updater failures counted", || {
        std::net::TcpStream::connect(up_addr).is_ok()
            && get(up_addr, "/metrics").text().contains("updater_posts_total{result=\"failed\"}")
    });
    assert_eq!(get(up_addr, "/healthz").status, 200);
    for process in [&mut updater, &mut hello] {
        let t = Instant::now();
        signal(process.child.id(), "TERM");
        let status = process.child.wait().unwrap();
        assert!(status.success(), "{status:?}");
        assert!(t.elapsed() < Duration::from_secs(3));
    }
}
