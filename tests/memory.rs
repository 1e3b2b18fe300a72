//! Memory read mode: change notices reach replica subscribers after the write they announce;
//! staleness against replica mode; the fallback when the subscription breaks, and recovery.

use std::time::{Duration, Instant};
use testkit::*;

/// Notices published on the master (in MULTI/EXEC with the write) reach subscribers on a
/// replica, and always after the replica has applied the write.
#[test]
fn notices_reach_replica_after_the_write() {
    let pair = Pair::new();
    let (channel, wait) = ("currency:current-value:changed", Duration::from_secs(5));
    let mut sub = RespConn::open(&pair.replica.addr(), wait).unwrap();
    sub.call(&["SUBSCRIBE", channel]).expect("subscribed");
    let mut reader = RespConn::open(&pair.replica.addr(), wait).unwrap();
    let mut master = RespConn::open(&pair.master.addr(), wait).unwrap();
    for i in 0..200 {
        let v = i.to_string();
        for args in [&["MULTI"][..], &["HSET", "currency", "current-value", &v], &["PUBLISH", channel, &v], &["EXEC"]] {
            let reply = master.call(args).unwrap();
            assert!(!matches!(reply, Reply::Error(_)), "{args:?}: {reply}");
        }
        let msg = sub.next_reply().expect("notice on the replica");
        let message = Reply::Array(vec![
            Reply::Bulk(b"message".to_vec()),
            Reply::Bulk(channel.into()),
            Reply::Bulk(v.clone().into_bytes()),
        ]);
        assert_eq!(msg, message);
        let seen = reader.call(&["HGET", "currency", "current-value"]).unwrap();
        assert_eq!(
            seen,
            Reply::Bulk(v.clone().into_bytes()),
            "the replica applied the write before delivering its notice"
        );
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Two pods on two replicas: POST through A, poll B until it serves the new value. Memory mode
/// adds little staleness over replica mode at p99: the bound is loose (20 ms; a busy CI machine
/// shifts p99 by several ms) but far below the 1 s refresh interval a lost notice would show.
#[test]
fn staleness_memory_vs_replica() {
    let master = Redis::master();
    let r1 = Redis::replica_of(&master);
    let r2 = Redis::replica_of(&master);
    let mut results = Vec::new();
    for mode in ["replica", "memory"] {
        let env = [("READ_MODE", mode)];
        let a = Api::start(&r1.addr(), &master.addr(), &env);
        let b = Api::start(&r2.addr(), &master.addr(), &env);
        a.wait_ready();
        b.wait_ready();
        let mut reader = Client::connect(b.addr);
        let mut writer = Client::connect(a.addr);
        let mut stale = Vec::new();
        for i in 0..100 {
            let value = 1000.0 + i as f64 + if mode == "memory" { 0.5 } else { 0.0 };
            let t = Instant::now();
            assert_eq!(writer.request("POST", "/", Some(&format!("{{\"value\": {value}}}"))).status, 200);
            loop {
                let r = reader.request("GET", "/", None);
                if r.status == 200 && r.json()["current"] == value {
                    break;
                }
                assert!(t.elapsed() < Duration::from_secs(3), "{mode}: B never served {value}");
            }
            stale.push(t.elapsed());
        }
        stale.sort();
        let (p50, p99) = (percentile(&stale, 0.5), percentile(&stale, 0.99));
        println!("staleness {mode}: p50 {p50:?} p99 {p99:?} (POST via A until B serves it, 100 writes)");
        results.push(p99);
    }
    assert!(
        results[1] <= results[0] + Duration::from_millis(20),
        "timing: memory p99 {:?} vs replica p99 {:?} (bound +20 ms)",
        results[1],
        results[0]
    );
}

/// An API in memory mode on `pair` (with `env` besides), ready, 7.0 posted and a GET served
/// from its copy.
fn serving_from_memory(pair: &Pair, env: &[(&str, &str)]) -> Api {
    let env: Vec<_> = [("READ_MODE", "memory")].into_iter().chain(env.iter().copied()).collect();
    let api = Api::on(pair, &env);
    api.wait_ready();
    assert_eq!(post_value(api.addr, 7.0).status, 200);
    wait_until(Duration::from_secs(5), "served from memory", || {
        get(api.addr, "/").status == 200 && api.metric("redis_api_memory_reads_total", "source=\"memory\"") > 0.0
    });
    api
}

/// The subscription breaks and cannot be restored (SUBSCRIBE denied by ACL): the pod is not
/// ready and GETs fall back to the replica, still correct; once allowed again it recovers.
#[test]
fn subscription_loss_falls_back_and_recovers() {
    let pair = Pair::new();
    let api = serving_from_memory(&pair, &[("MEMORY_REFRESH", "200ms")]);
    pair.replica.cmd(&["ACL", "SETUSER", "default", "-subscribe"]);
    pair.replica.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    wait_until(Duration::from_secs(5), "not ready without a subscription", || {
        let r = get(api.addr, "/readyz");
        r.status == 503 && r.error().contains("subscription")
    });
    // Readiness reads the subscription's state, set just before the gauge.
    wait_until(Duration::from_secs(5), "the gauge says unsubscribed", || {
        api.metric("redis_api_memory_subscribed", "") == 0.0
    });
    let fallback_before = api.metric("redis_api_memory_reads_total", "source=\"replica\"");
    assert_eq!(post_value(api.addr, 8.0).status, 200);
    wait_until(Duration::from_secs(5), "the new value through the fallback", || {
        get(api.addr, "/").json()["current"] == 8.0
    });
    assert!(api.metric("redis_api_memory_reads_total", "source=\"replica\"") > fallback_before);
    assert!(api.log_text().contains("subscription lost"));

    pair.replica.cmd(&["ACL", "SETUSER", "default", "+subscribe"]);
    wait_until(Duration::from_secs(10), "ready again", || get(api.addr, "/readyz").status == 200);
    let memory_before = api.metric("redis_api_memory_reads_total", "source=\"memory\"");
    assert_eq!(post_value(api.addr, 9.0).status, 200);
    // A GET between a scheduled re-read's start and its end is served from the replica, and the
    // notice is counted on the cache's thread: all three, polled.
    wait_until(Duration::from_secs(5), "new value from memory, its notice counted", || {
        get(api.addr, "/").json()["current"] == 9.0
            && api.metric("redis_api_memory_reads_total", "source=\"memory\"") > memory_before
            && api.metric("redis_api_memory_notices_total", "") >= 2.0
    });
}

/// A pause of the process (SIGSTOP and SIGCONT: `docker pause`, a freezer) while the
/// subscription waits for a notice does not break it: the wait's EINTR is not a message begun.
#[test]
fn a_pause_keeps_the_subscription() {
    let pair = Pair::new();
    let api = serving_from_memory(&pair, &[]);
    api.pause(Duration::from_millis(200));
    // Taken for a message begun, the wait would run out the message's 1 s bound and break.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!api.log_text().contains("subscription lost"), "{}", api.log_text());
    assert_eq!(api.metric("redis_api_memory_subscribed", ""), 1.0);
    assert_eq!(post_value(api.addr, 8.0).status, 200);
    wait_until(Duration::from_secs(5), "the new value", || get(api.addr, "/").json()["current"] == 8.0);
}

/// Memory mode is not ready (and never answers "no value") before the replica's first sync.
#[test]
fn memory_mode_waits_for_the_first_read() {
    let master = Redis::master();
    master.cmd(&["HSET", "currency", "current-value", "3"]);
    master.stop();
    let replica = Redis::replica_of_nowait(&master);
    let api = Api::start(&replica.addr(), &master.addr(), &[("READ_MODE", "memory")]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(get(api.addr, "/readyz").status, 503);
    assert_eq!(get(api.addr, "/").status, 503);
    master.cont();
    api.wait_ready();
    assert_eq!(get(api.addr, "/").json()["current"], 3.0);
}
