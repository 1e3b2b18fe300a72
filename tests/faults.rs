//! Redis faults injected for real (SIGSTOP, kill, restart, a replica that cannot sync) and
//! what clients see: answers within the deadline, readiness, never a false "no value", and a
//! graceful shutdown that loses no in-flight request.

use std::io::Write;
use std::time::{Duration, Instant};
use testkit::*;

/// Allowed lateness past the deadline: the answer comes at it (a second wait would add
/// another 400 ms), with room for a busy or briefly stopped test machine, as in the chaos
/// suite.
const SLACK: Duration = Duration::from_millis(50);
/// An answer that did not wait for the deadline: well under it, with room for a busy (or
/// briefly stopped) test machine, which must not fail a test that judges behaviour.
const AT_ONCE: Duration = Duration::from_millis(250);
const DEADLINE: Duration = Duration::from_millis(400);

/// Fault tests measure time: they run one at a time so they do not load each other.
fn timed(f: impl FnOnce() -> Resp) -> (Resp, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

/// Master hung (SIGSTOP): POST answers 504 within deadline + 50 ms, saying the outcome is
/// unknown, while GETs keep succeeding from the replica.
#[test]
fn master_stopped_post_504_get_ok() {
    let _serial = serial();
    let pair = Pair::new();
    let api = Api::serving(&pair, &[], 1.0);
    pair.master.stop();
    for _ in 0..3 {
        let mut c = Client::connect(api.addr);
        let (r, took) = timed(|| c.request("POST", "/", Some(r#"{"value": 2}"#)));
        assert_eq!(r.status, 504, "{}", r.text());
        assert!(r.error().starts_with("deadline exceeded"), "{}", r.error());
        assert!(r.error().contains("may or may not have been applied") && r.error().contains("retry is safe"));
        assert!(took <= DEADLINE + SLACK, "timing: POST took {took:?}");
        let (g, took) = timed(|| get(api.addr, "/"));
        assert_eq!(g.status, 200, "{}", g.text());
        assert!(took < AT_ONCE, "timing: GET took {took:?}");
    }
    assert!(api.metric("redis_api_deadline_expired_total", "") >= 3.0);
    pair.master.cont();
    wait_until(Duration::from_secs(5), "POST works again", || post_value(api.addr, 3.0).status == 200);
    assert_eq!(pair.master.hget(), "3.0");
}

/// Replica hung: GET 504 within the deadline; a request queued behind it on the same
/// connection, its budget spent, is 503 at once; after SIGCONT no late reply leaks into
/// a later answer.
#[test]
fn replica_stopped_get_504_then_recovers() {
    let _serial = serial();
    let pair = Pair::new();
    let api = Api::serving(&pair, &[], 11.0);
    pair.replica.stop();
    let mut c = Client::connect(api.addr);
    let t = Instant::now();
    c.send(format!("{}{}", request_bytes("GET", "/", None, ""), request_bytes("GET", "/", None, "")).as_bytes());
    let first = c.read_response(false).unwrap();
    let took = t.elapsed();
    assert_eq!(first.status, 504, "{}", first.text());
    assert_eq!(first.error(), "deadline exceeded");
    assert!(took <= DEADLINE + SLACK, "timing: GET took {took:?}");
    // The pipelined second request shares the first's arrival time, so its budget is (nearly)
    // gone too: it must not cost another full deadline.
    let second = c.read_response(false).unwrap();
    assert!(matches!(second.status, 503 | 504), "{}", second.text());
    assert!(t.elapsed() <= DEADLINE + SLACK, "timing: pipelined pair took {:?}", t.elapsed());
    // The server's own account: the deadline watchdog ended the step, by the deadline.
    assert!(api.metric("redis_api_redis_steps_cut_total", "pool=\"replica\"") >= 1.0);
    let cut = metric_exact(&api, "redis_api_redis_cut_lateness_seconds_count");
    assert_eq!(metric_exact(&api, "redis_api_redis_cut_lateness_seconds_bucket{le=\"0.001\"}"), cut);
    pair.replica.cont();
    // Change the value so a stale reply from the timed-out connection would be visible.
    assert_eq!(post_value(api.addr, 12.0).status, 200);
    wait_until(Duration::from_secs(5), "new value", || {
        let r = get(api.addr, "/");
        r.status == 200 && r.json()["current"] == 12.0
    });
    for _ in 0..50 {
        assert_eq!(get(api.addr, "/").json()["current"], 12.0);
    }
}

/// A request whose budget is spent before it reaches Redis (its body trickled in past the
/// deadline) is answered 503 without touching Redis.
#[test]
fn spent_budget_is_503_without_redis() {
    let _serial = serial();
    let pair = Pair::new();
    let api = Api::on(&pair, &[("DEADLINE", "200ms")]);
    api.wait_ready();
    assert_eq!(post_value(api.addr, 1.0).status, 200);
    let calls_before = pair.master.cmd(&["INFO", "commandstats"]);
    let mut c = Client::connect(api.addr);
    c.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 12\r\n\r\n{\"value\"");
    std::thread::sleep(Duration::from_millis(300));
    c.send(b": 2}");
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.error().contains("before the request could be processed"), "{}", r.error());
    assert_eq!(pair.master.hget(), "1.0");
    let hset_calls = |info: &str| info.lines().find(|l| l.starts_with("cmdstat_hset:")).map(str::to_owned);
    assert_eq!(hset_calls(&calls_before), hset_calls(&pair.master.cmd(&["INFO", "commandstats"])));
}

/// Pool exhausted (one connection, replica hung): concurrent GETs all answer 504 within the
/// deadline, none waits longer.
#[test]
fn pool_exhausted_within_deadline() {
    let _serial = serial();
    let pair = Pair::new();
    let api = Api::serving(&pair, &[("READ_POOL_SIZE", "1")], 1.0);
    pair.replica.stop();
    let addr = api.addr;
    let clients: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                timed(|| c.request("GET", "/", None))
            })
        })
        .collect();
    for h in clients {
        let (r, took) = h.join().unwrap();
        assert_eq!(r.status, 504, "{}", r.text());
        assert!(took <= DEADLINE + SLACK, "timing: took {took:?}");
    }
    pair.replica.cont();
}

/// Overload with a hung replica and one pooled connection: once a request has held the pool
/// for ~400 ms, a GET queued behind the one holding it cannot make its deadline and is answered
/// `503 overloaded` at once (Retry-After, connection kept); the same client coming straight back
/// on that connection waits its turn instead of being refused again (here it gets 504).
#[test]
fn overload_refuses_at_once_then_queues_the_impatient() {
    let _serial = serial();
    let pair = Pair::new();
    let api = Api::on(&pair, &[("READ_POOL_SIZE", "1")]);
    api.wait_ready();
    pair.replica.stop();
    // The first GET holds the only permit until its deadline: the hold time the gate learns.
    assert_eq!(get(api.addr, "/").status, 504);
    let addr = api.addr;
    let holder = std::thread::spawn(move || get(addr, "/"));
    std::thread::sleep(Duration::from_millis(50));
    let mut c = Client::connect(api.addr);
    let (refused, took) = timed(|| c.request("GET", "/", None));
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(took < AT_ONCE, "timing: refusal took {took:?}");
    assert!(refused.error().contains("overloaded"), "{}", refused.text());
    assert_eq!(refused.header("Retry-After"), Some("1"));
    assert_eq!(refused.header("Connection"), None, "the connection is kept");
    let (again, took) = timed(|| c.request("GET", "/", None));
    assert_eq!(again.status, 504, "came straight back: waits its turn, not refused again: {}", again.text());
    assert!(took >= Duration::from_millis(300), "answered after {took:?}: it did not wait");
    assert_eq!(holder.join().unwrap().status, 504);
    assert_eq!(api.metric("redis_api_shed_total", "pool=\"replica\""), 1.0);
    pair.replica.cont();
}

/// Replica killed: not ready, GETs 503 fast; after restart and resync, ready and serving.
#[test]
fn replica_killed_and_restarted() {
    let _serial = serial();
    let mut pair = Pair::new();
    let api = Api::serving(&pair, &[], 21.0);
    pair.replica.kill();
    wait_until(Duration::from_secs(5), "/readyz 503", || get(api.addr, "/readyz").status == 503);
    let ready = get(api.addr, "/readyz");
    assert!(ready.error().contains("not answering"), "{}", ready.text());
    let (r, took) = timed(|| get(api.addr, "/"));
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(took < AT_ONCE, "timing: {took:?}");
    pair.replica.restart();
    wait_until(Duration::from_secs(20), "/readyz 200 after resync", || get(api.addr, "/readyz").status == 200);
    assert_eq!(get(api.addr, "/").json()["current"], 21.0);
}

/// A fresh replica that has not synced yet: not ready, and GET never says "no value".
#[test]
fn unsynced_replica_never_404() {
    let _serial = serial();
    let master = Redis::master();
    master.cmd(&["HSET", "currency", "current-value", "5"]);
    master.stop(); // the replica cannot complete its first sync
    let replica = Redis::replica_of_nowait(&master);
    let api = Api::start(&replica.addr(), &master.addr(), &[]);
    wait_until(Duration::from_secs(5), "a readiness verdict", || get(api.addr, "/readyz").text().contains("replica"));
    for _ in 0..10 {
        let ready = get(api.addr, "/readyz");
        assert_eq!(ready.status, 503, "{}", ready.text());
        let r = get(api.addr, "/");
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.error().contains("first sync"), "{}", r.error());
        std::thread::sleep(Duration::from_millis(30));
    }
    master.cont();
    api.wait_ready();
    assert_eq!(get(api.addr, "/").json()["current"], 5.0);
}

/// Redis never reachable: the process says what it waits for (address, last error) every few
/// seconds, then gives up after --redis-wait with a clear message.
#[test]
fn gives_up_after_redis_wait() {
    let _serial = serial();
    let dead = format!("127.0.0.1:{}", free_port());
    let mut api = Api::start(&dead, &dead, &[("REDIS_WAIT", "6s")]);
    assert_eq!(get(api.addr, "/healthz").status, 200, "listens at once");
    // Before the first check the 503 says "starting"; on a busy machine that check may take
    // a moment, so wait for the verdict (every answer meanwhile must still be 503).
    wait_until(Duration::from_secs(4), "a readiness verdict naming the dead replica", || {
        let r = get(api.addr, "/readyz");
        assert_eq!(r.status, 503, "{}", r.text());
        r.error().contains("not answering")
    });
    let status = api.wait_exit(Duration::from_secs(15));
    assert!(!status.success());
    let log = api.log_text();
    assert!(log.contains(&format!("waiting for the local replica at {dead}: ")), "{log}");
    assert!(log.contains(&format!("the local replica at {dead} did not answer within --redis-wait (6s)")), "{log}");
}

/// SIGTERM under load: /readyz 503 at once, in-flight requests complete, exit 0.
#[test]
fn graceful_shutdown_loses_nothing() {
    let _serial = serial();
    let pair = Pair::new();
    let mut api = Api::on(&pair, &[("SHUTDOWN_DELAY", "300ms"), ("SHUTDOWN_GRACE", "5s")]);
    api.wait_ready();
    // In-flight: heads and half bodies sent before SIGTERM, the rest after.
    let body = r#"{"value": 77}"#;
    let mut inflight: Vec<Client> = (0..5)
        .map(|_| {
            let mut c = Client::connect(api.addr);
            c.send(
                format!("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{}", body.len(), &body[..5])
                    .as_bytes(),
            );
            c
        })
        .collect();
    // Load: keep-alive GET loops; each response must be whole.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addr = api.addr;
    let loaders: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut ok = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && ok < 100_000 {
                    let Ok(s) = std::net::TcpStream::connect(addr) else { break };
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut c = Client::from_stream(s);
                    if c.stream.write_all(request_bytes("GET", "/healthz", None, "").as_bytes()).is_err() {
                        break;
                    }
                    match c.read_response(false) {
                        Some(r) if r.status == 200 => ok += 1,
                        Some(r) => panic!("unexpected {}", r.status),
                        None => break, // closed before answering: not accepted as in-flight
                    }
                }
                ok
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    api.signal("TERM");
    wait_until(Duration::from_millis(250), "/readyz 503 right after SIGTERM", || {
        let r = get(api.addr, "/readyz");
        r.status == 503 && r.error().contains("shutting down")
    });
    assert_eq!(get(api.addr, "/healthz").status, 200, "still serving during the shutdown delay");
    for c in &mut inflight {
        c.send(&body.as_bytes()[5..]);
    }
    for c in &mut inflight {
        let r = c.read_response(false).expect("in-flight request answered");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("connection"), Some("close"));
    }
    let status = api.wait_exit(Duration::from_secs(6));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(status.success(), "{status:?}");
    assert!(t.elapsed() < Duration::from_secs(6));
    let served: u32 = loaders.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(served > 0);
    assert_eq!(pair.master.hget(), "77.0");
}

/// The API process paused and resumed (`docker pause`, a cgroup freezer, SIGSTOP and SIGCONT):
/// the socket reads it was blocked in end with EINTR, which must not end a connection. Idle
/// keep-alive connections and one halfway through a request head carry on, and so does Redis.
#[test]
fn a_paused_api_keeps_its_connections() {
    let _serial = serial();
    let pair = Pair::new();
    let api = Api::serving(&pair, &[], 1.5);
    let mut idle: Vec<Client> = (0..4).map(|_| Client::connect(api.addr)).collect();
    for c in &mut idle {
        assert_eq!(c.request("GET", "/", None).status, 200);
    }
    let mut halfway = Client::connect(api.addr);
    let head = request_bytes("GET", "/", None, "");
    halfway.send(&head.as_bytes()[..10]);
    std::thread::sleep(Duration::from_millis(100));
    api.pause(Duration::from_millis(300));
    halfway.send(&head.as_bytes()[10..]);
    // Its deadline counts from its first byte, 400 ms ago or more: an answer either way, not a
    // dropped connection.
    let r = halfway.read_response(false).expect("the half-sent request answered, not dropped");
    assert!(r.status == 200 || r.error().starts_with("deadline exceeded"), "{} {}", r.status, r.text());
    for (i, c) in idle.iter_mut().enumerate() {
        c.send(head.as_bytes());
        let r = c.read_response(false).unwrap_or_else(|| panic!("idle connection {i} closed by the pause"));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let mut c = Client::connect(api.addr);
    assert_eq!(c.request("POST", "/", Some(r#"{"value": 2.5}"#)).status, 200);
    wait_until(Duration::from_secs(5), "the new value read", || get(api.addr, "/").json()["current"] == 2.5);
}

/// Pooled connections killed by Redis (as after a restart): the next request still succeeds,
/// retried once on a fresh connection.
#[test]
fn dead_pooled_connections_are_retried_once() {
    let _serial = serial();
    let pair = Pair::new();
    let api = Api::serving(&pair, &[("READ_POOL_SIZE", "4"), ("WRITE_POOL_SIZE", "2")], 31.0);
    for _ in 0..5 {
        pair.replica.cmd(&["CLIENT", "KILL", "TYPE", "normal"]);
        pair.master.cmd(&["CLIENT", "KILL", "TYPE", "normal"]);
        let r = get(api.addr, "/");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["current"], 31.0);
        let r = post_value(api.addr, 31.0);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(api.metric("redis_api_redis_errors_total", "pool=\"replica\"") >= 1.0);
}

/// A hung master opens the writes' circuit after three timeouts: further POSTs are refused at
/// once (503, nothing written) instead of each costing the deadline; after the master is back
/// and the cooldown has passed, a probe write closes the circuit.
#[test]
fn circuit_breaker_refuses_fast_then_recovers() {
    let _serial = serial();
    let pair = Pair::new();
    let api = Api::serving(&pair, &[("BREAKER_FAILURES", "3"), ("BREAKER_COOLDOWN", "500ms")], 1.0);
    pair.master.stop();
    for _ in 0..3 {
        let (r, took) = timed(|| post_value(api.addr, 2.0));
        assert_eq!(r.status, 504, "{}", r.text());
        assert!(took <= DEADLINE + SLACK, "timing: {took:?}");
    }
    let (r, took) = timed(|| post_value(api.addr, 2.0));
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.error().contains("refused") && r.error().contains("not written"), "{}", r.error());
    assert!(took < AT_ONCE, "timing: refused at once, took {took:?}");
    assert_eq!(api.metric("redis_api_master_breaker_state", ""), 1.0);
    // Reads are not affected.
    assert_eq!(get(api.addr, "/").status, 200);
    pair.master.cont();
    wait_until(Duration::from_secs(5), "a probe write closes the circuit", || post_value(api.addr, 3.0).status == 200);
    assert_eq!(pair.master.hget(), "3.0");
    assert_eq!(api.metric("redis_api_master_breaker_state", ""), 0.0);
    assert!(api.metric("redis_api_writes_refused_total", "") >= 1.0);
}

/// Resident memory of process `pid`, in KiB, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").parse().expect("VmRSS")))
        .expect("VmRSS line")
}

/// The sample of a metric line with exactly this name and label text (`""` for none).
fn metric_exact(api: &Api, line_start: &str) -> f64 {
    let page = String::from_utf8(get(api.addr, "/metrics").body).expect("utf8");
    page.lines()
        .find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in /metrics"))
}

/// A fake Redis replica on loopback: answers `AUTH`, `PING` and `INFO` (a synced replica) at
/// once, everything else `+OK`, and trickles its `HGET` reply one byte every `gap`.
struct FakeRedis {
    addr: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FakeRedis {
    /// How long the fake serves at most, whatever the test does.
    const LIFETIME: Duration = Duration::from_secs(60);

    fn start(gap: Duration) -> FakeRedis {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr").to_string();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let until = Instant::now() + Self::LIFETIME;
            while !flag.load(Ordering::Relaxed) && Instant::now() < until {
                match listener.accept() {
                    Ok((s, _)) => {
                        let flag = flag.clone();
                        std::thread::spawn(move || Self::serve(s, gap, &flag, until));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeRedis { addr, stop }
    }

    fn serve(mut s: std::net::TcpStream, gap: Duration, stop: &std::sync::atomic::AtomicBool, until: Instant) {
        use std::io::Read;
        use std::sync::atomic::Ordering;
        s.set_nonblocking(false).ok();
        s.set_read_timeout(Some(Duration::from_millis(50))).ok();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            while let Some((args, used)) = parse_command(&buf) {
                buf.drain(..used);
                let reply: Vec<u8> = match args.first().map(|a| a.to_ascii_uppercase()).as_deref() {
                    Some("PING") => b"+PONG\r\n".to_vec(),
                    Some("INFO") => {
                        let info = "# Server\r\nrun_id:0123456789abcdef0123456789abcdef01234567\r\n\
                                    # Replication\r\nrole:slave\r\nmaster_link_status:up\r\n\
                                    master_last_io_seconds_ago:0\r\nmaster_sync_in_progress:0\r\n\
                                    # Persistence\r\nloading:0\r\n";
                        format!("${}\r\n{info}\r\n", info.len()).into_bytes()
                    }
                    Some("HGET") => {
                        for byte in b"$3\r\n1.5\r\n" {
                            if stop.load(Ordering::Relaxed) || s.write_all(&[*byte]).is_err() {
                                return;
                            }
                            std::thread::sleep(gap);
                        }
                        Vec::new()
                    }
                    _ => b"+OK\r\n".to_vec(),
                };
                if s.write_all(&reply).is_err() {
                    return;
                }
            }
            match s.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => return,
            }
        }
    }
}

impl Drop for FakeRedis {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One RESP command (`*N` of `$len` strings) from the front of `buf`, and its length.
fn parse_command(buf: &[u8]) -> Option<(Vec<String>, usize)> {
    fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let end = at + buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
        Some((&buf[at..end], end + 2))
    }
    let (head, mut at) = line(buf, 0)?;
    let n: usize = std::str::from_utf8(head.strip_prefix(b"*")?).ok()?.parse().ok()?;
    let mut args = Vec::with_capacity(n);
    for _ in 0..n {
        let (len, next) = line(buf, at)?;
        let len: usize = std::str::from_utf8(len.strip_prefix(b"$")?).ok()?.parse().ok()?;
        let arg = buf.get(next..next + len)?;
        args.push(String::from_utf8_lossy(arg).into_owned());
        at = next + len + 2;
    }
    (buf.len() >= at).then_some((args, at))
}

/// A replica that trickles its HGET reply (one byte every 350 ms, 3.5 s in all): GET answers
/// 504 at the deadline, and the server's metrics show the watchdog ended the step by it.
#[test]
fn trickled_reply_is_cut_at_the_deadline() {
    let _serial = serial();
    let fake = FakeRedis::start(Duration::from_millis(350));
    let api = Api::start(&fake.addr, &fake.addr, &[]);
    api.wait_ready();
    for _ in 0..3 {
        let mut c = Client::connect(api.addr);
        let (r, took) = timed(|| c.request("GET", "/", None));
        assert_eq!(r.status, 504, "{}", r.text());
        assert_eq!(r.error(), "deadline exceeded");
        assert!(took <= DEADLINE + SLACK, "timing: GET took {took:?}");
    }
    assert_eq!(api.metric("redis_api_redis_steps_cut_total", "pool=\"replica\""), 3.0);
    // The server's own timing: each cut step ended by its deadline, give or take a busy
    // machine's scheduler (timing judged loosely: 5 ms; a clean-clone CI run saw one of three
    // cuts between 1 and 5 ms late).
    let cut = metric_exact(&api, "redis_api_redis_cut_lateness_seconds_count");
    let on_time = metric_exact(&api, "redis_api_redis_cut_lateness_seconds_bucket{le=\"0.005\"}");
    assert_eq!((cut, on_time), (3.0, 3.0), "timing: (steps cut, cut within 5 ms of their deadline)");
}

/// A 64 MiB value in the hash: 16 concurrent GETs are each answered within the deadline, 500
/// "larger than" (refused from the reply's length header, no Retry-After) or 504.
#[test]
fn huge_value_refused_within_the_deadline() {
    let _serial = serial();
    let pair = Pair::new();
    let api = Api::on(&pair, &[]);
    api.wait_ready();
    let huge = "x".repeat(64 << 20);
    pair.master.cmd(&["HSET", "currency", "current-value", &huge]);
    drop(huge);
    wait_until(Duration::from_secs(10), "huge value replicated", || {
        pair.replica.cmd(&["HSTRLEN", "currency", "current-value"]) == (64 << 20).to_string()
    });
    let addr = api.addr;
    let clients: Vec<_> = (0..16)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                timed(|| c.request("GET", "/", None))
            })
        })
        .collect();
    // Redis copies the value into each client's output buffer (~80 ms here), one client at a
    // time: the later ones may not see even the reply's header before their deadline (504).
    let mut answers = Vec::new();
    for h in clients {
        let (r, took) = h.join().unwrap();
        answers.push((r.status, took));
        assert!(took <= DEADLINE + SLACK, "timing: took {took:?}: {}", r.text());
        assert!(matches!(r.status, 500 | 504), "{} {}", r.status, r.text());
        if r.status == 500 {
            assert!(r.error().contains("larger than 65536 bytes"), "{}", r.error());
            assert_eq!(r.header("Retry-After"), None);
        }
    }
    eprintln!("16 concurrent GETs of a 64 MiB value: {answers:?}");
    // Once Redis has worked off the burst (it still copies the value for each cut request),
    // a GET alone is refused as soon as the header comes; meanwhile still all within the deadline.
    wait_until(Duration::from_secs(10), "a GET refused as too large", || {
        let (r, took) = timed(|| get(api.addr, "/"));
        assert!(took <= DEADLINE + SLACK, "timing: took {took:?}: {}", r.text());
        assert!(matches!(r.status, 500 | 504), "{} {}", r.status, r.text());
        r.status == 500 && r.error().contains("larger than 65536 bytes") && r.header("Retry-After").is_none()
    });
}

/// GETs of a 64 MiB value leave the server's memory as it was: refused unread under the
/// default limit, and with the limit raised, read and then given back.
#[test]
fn huge_value_leaves_no_memory_behind() {
    let _serial = serial();
    let pair = Pair::new();
    assert_eq!(pair.master.cmd(&["HSET", "currency", "current-value", "1"]), "1");
    pair.replica.wait_synced();
    for env in [&[][..], &[("REDIS_MAX_REPLY", "134217728"), ("DEADLINE", "10s")][..]] {
        let api = Api::on(&pair, env);
        api.wait_ready();
        pair.master.cmd(&["HSET", "currency", "current-value", "1"]);
        wait_until(Duration::from_secs(5), "small value", || get(api.addr, "/").status == 200);
        let before = rss_kib(api.pid());
        pair.master.cmd(&["HSET", "currency", "current-value", &"x".repeat(64 << 20)]);
        wait_until(Duration::from_secs(10), "huge value replicated", || {
            pair.replica.cmd(&["HSTRLEN", "currency", "current-value"]) == (64 << 20).to_string()
        });
        let answers = [get(api.addr, "/"), get(api.addr, "/")];
        let after = rss_kib(api.pid());
        assert!(after < before + 20 * 1024, "{env:?}: RSS {before} kB before, {after} kB after");
        let says = if env.is_empty() { "larger than" } else { "not a number" };
        for r in answers {
            assert_eq!(r.status, 500, "{}", r.text());
            assert!(r.error().contains(says), "{}", r.error());
        }
    }
}

/// Someone made the hash key a string: reads and writes answer 500 naming WRONGTYPE, five
/// failed writes do not open the write circuit, and once the key is fixed a write succeeds
/// at once.
#[test]
fn wrongtype_is_500_and_does_not_open_the_breaker() {
    let _serial = serial();
    let pair = Pair::new();
    let api = Api::on(&pair, &[("BREAKER_FAILURES", "3"), ("BREAKER_COOLDOWN", "1s")]);
    api.wait_ready();
    pair.master.cmd(&["SET", "currency", "oops"]);
    wait_until(Duration::from_secs(5), "string replicated", || pair.replica.cmd(&["TYPE", "currency"]) == "string");
    let read = get(api.addr, "/");
    let writes: Vec<Resp> = (0..5).map(|_| post_value(api.addr, 4.0)).collect();
    let breaker = api.metric("redis_api_master_breaker_state", "");
    pair.master.cmd(&["DEL", "currency"]);
    let r = post_value(api.addr, 5.0);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(pair.master.hget(), "5.0");
    assert_eq!(breaker, 0.0, "the circuit stayed closed");
    assert_eq!(read.status, 500, "{}", read.text());
    assert!(read.error().contains("WRONGTYPE"), "{}", read.error());
    for r in writes {
        assert_eq!(r.status, 500, "{}", r.text());
        assert!(r.error().contains("WRONGTYPE") && r.error().contains("not written"), "{}", r.error());
        assert_eq!(r.header("Retry-After"), None);
    }
}

/// A wrong password: 2 s of steady GETs answer 503 at once with Retry-After and the Redis
/// error, and open only a bounded number of connections (backoff), not one per request.
#[test]
fn wrong_password_connects_with_backoff() {
    let _serial = serial();
    let redis = Redis::master();
    assert_eq!(redis.cmd(&["CONFIG", "SET", "requirepass", "right-one"]).to_uppercase(), "OK");
    let connections = || -> u64 {
        let client = redis::Client::open(format!("redis://:right-one@{}/", redis.addr())).unwrap();
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(1)).unwrap();
        let info: String = redis::cmd("INFO").arg("stats").query(&mut conn).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:")?.trim().parse().ok())
            .expect("total_connections_received")
    };
    let env = [("REDIS_PASS_READ", "wrong"), ("REDIS_PASS_WRITE", "wrong"), ("HEALTH_INTERVAL", "1s")];
    let api = Api::start(&redis.addr(), &redis.addr(), &env);
    std::thread::sleep(Duration::from_millis(300));
    let before = connections();
    let until = Instant::now() + Duration::from_secs(2);
    let mut answers = Vec::new();
    let mut c = Client::connect(api.addr);
    while Instant::now() < until && answers.len() < 100_000 {
        answers.push(timed(|| c.request("GET", "/", None)));
    }
    let opened = connections() - before - 1;
    assert!(answers.len() > 100, "only {} requests", answers.len());
    assert!(opened < 30, "{opened} connections for {} requests", answers.len());
    for (r, took) in answers {
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.header("Retry-After"), Some("1"));
        assert!(r.error().contains("WRONGPASS"), "{}", r.error());
        assert!(took < AT_ONCE, "timing: {took:?}");
    }
}

/// A value that is not a number: 500 naming the problem, without Retry-After (Redis is up;
/// retrying will not help).
#[test]
fn non_number_is_500_without_retry_after() {
    let _serial = serial();
    let pair = Pair::new();
    let api = Api::on(&pair, &[]);
    api.wait_ready();
    pair.master.cmd(&["HSET", "currency", "current-value", "twelve"]);
    wait_until(Duration::from_secs(5), "value replicated", || pair.replica.hget() == "twelve");
    let r = get(api.addr, "/");
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.error().contains("not a number"), "{}", r.error());
    assert_eq!(r.header("Retry-After"), None);
}

/// Replica hung while GETs wait behind the read in flight: those GETs are deferred (their
/// workers go back to their connections), each is answered 504 at its own deadline and
/// counted once, and after SIGCONT the same connections are served.
#[test]
fn deferred_gets_504_when_the_replica_hangs_then_recover() {
    let _serial = serial();
    let pair = Pair::new();
    let api = Api::serving(&pair, &[], 21.0);
    let deferred_before = api.metric("redis_api_value_reads_deferred_total", "");
    let answered_504 = || api.metric("redis_api_http_requests_total", "route=\"value\",status=\"504\"");
    let before_504 = answered_504();
    pair.replica.stop();
    // Its read hangs: the read in flight the others wait behind.
    let mut first = Client::connect(api.addr);
    first.send(request_bytes("GET", "/", None, "").as_bytes());
    std::thread::sleep(Duration::from_millis(50));
    let mut behind: Vec<(Client, Instant)> = (0..4)
        .map(|_| {
            let mut c = Client::connect(api.addr);
            c.send(request_bytes("GET", "/", None, "").as_bytes());
            (c, Instant::now())
        })
        .collect();
    assert_eq!(first.read_response(false).expect("answer").status, 504);
    for (c, sent) in &mut behind {
        let r = c.read_response(false).expect("answer");
        let took = sent.elapsed();
        assert_eq!((r.status, r.error()), (504, "deadline exceeded".to_owned()), "{}", r.text());
        assert!(r.header("age").is_some(), "the late answer says the value's age");
        assert!(took + Duration::from_millis(20) >= DEADLINE, "answered before its deadline: {took:?}");
        assert!(took <= DEADLINE + Duration::from_millis(300), "answered long after its deadline: {took:?}");
    }
    assert_eq!(api.metric("redis_api_value_reads_deferred_total", "") - deferred_before, 4.0);
    pair.replica.cont();
    assert_eq!(answered_504() - before_504, 5.0, "each GET counted once");
    for (c, _) in &mut behind {
        // Readiness may refuse (503) for a moment after the replica hung; bounded.
        let mut status = 0;
        for _ in 0..50 {
            let r = c.request("GET", "/", None);
            status = r.status;
            if status == 200 {
                assert_eq!(r.json()["current"], 21.0);
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(status, 200, "the connection is served again");
    }
}
