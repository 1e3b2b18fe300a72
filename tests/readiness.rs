//! The readiness table of the README, row by row, against real redis-server processes: what
//! `/readyz` (on the probe port) and `GET /` answer in each state of the replica and the master;
//! probes answered while the main port is full; and monotonic reads across a replica restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use testkit::*;

/// These tests measure seconds of staleness: one at a time, so they do not load each other.
fn readyz(api: &Api) -> Resp {
    get(api.probe_addr, "/readyz")
}

fn age(r: &Resp) -> u64 {
    r.header("Age").unwrap_or_else(|| panic!("no Age header: {:?}", r.headers)).parse().expect("Age is seconds")
}

/// Row "in sync": ready, GET serves with `Age: 0`, and the gauge says 0.
#[test]
fn in_sync_ready_and_age_zero() {
    let _serial = serial();
    let pair = Pair::new();
    let api = Api::on(&pair, &[]);
    wait_until(Duration::from_secs(10), "ready", || readyz(&api).status == 200);
    api.set_and_see(1.5);
    let r = get(api.addr, "/");
    assert_eq!(age(&r), 0);
    assert_eq!(r.header("Access-Control-Expose-Headers"), Some("Age"));
    let ready = readyz(&api).json();
    assert_eq!(ready["serving"], true, "{ready}");
    assert_eq!(api.metric("redis_api_value_age_seconds", ""), 0.0);
}

/// Row "master down for the API too": past the grace the pod stays ready and serves the last
/// synced value, its growing age in `Age` and in the gauge.
#[test]
fn master_down_for_everyone_stays_ready() {
    let _serial = serial();
    let mut pair = Pair::new();
    let api = Api::on(&pair, &[("REPLICA_LINK_GRACE", "2s")]);
    wait_until(Duration::from_secs(10), "ready", || readyz(&api).status == 200);
    api.set_and_see(2.0);
    pair.master.kill();
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let ready = readyz(&api);
        assert_eq!(ready.status, 200, "{}", ready.text());
        let r = get(api.addr, "/");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["current"], 2.0);
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = get(api.addr, "/");
    assert!(age(&r) >= 3, "Age {}", age(&r));
    assert!(readyz(&api).json()["reason"].as_str().unwrap().contains("does not answer the API"));
    assert!(api.metric("redis_api_value_age_seconds", "") >= 3.0);
}

/// Row "master down, past --max-staleness": GET answers 503 instead of the old value; the pod
/// stays ready (every pod is in the same state).
#[test]
fn max_staleness_turns_get_503() {
    let _serial = serial();
    let mut pair = Pair::new();
    let api = Api::on(&pair, &[("REPLICA_LINK_GRACE", "1s"), ("MAX_STALENESS", "2s")]);
    wait_until(Duration::from_secs(10), "ready", || readyz(&api).status == 200);
    api.set_and_see(3.0);
    pair.master.kill();
    assert_eq!(get(api.addr, "/").status, 200, "fresh enough at first");
    wait_until(Duration::from_secs(6), "GET 503 past --max-staleness", || get(api.addr, "/").status == 503);
    let r = get(api.addr, "/");
    assert!(r.error().contains("--max-staleness"), "{}", r.text());
    assert!(age(&r) >= 2);
    assert_eq!(readyz(&api).status, 200);
}

/// Rows "link down within the grace" and "cut off": the master answers the API but this
/// replica cannot sync (wrong masterauth): ready within the grace, then not ready; GET keeps
/// serving the value it synced, its age growing.
#[test]
fn cut_off_replica_not_ready_past_grace() {
    let _serial = serial();
    let pair = Pair::new();
    let pw = "readiness-test-pw";
    pair.replica.cmd(&["CONFIG", "SET", "masterauth", pw]);
    pair.master.cmd(&["CONFIG", "SET", "requirepass", pw]);
    let api = Api::on(&pair, &[("REPLICA_LINK_GRACE", "2s"), ("REDIS_PASS_WRITE", pw)]);
    wait_until(Duration::from_secs(10), "ready", || readyz(&api).status == 200);
    api.set_and_see(4.0);
    pair.replica.cmd(&["CONFIG", "SET", "masterauth", "wrong"]);
    pair.replica.cmd(&["CLIENT", "KILL", "TYPE", "master"]);
    wait_until(Duration::from_secs(2), "link down seen", || readyz(&api).text().contains("link down"));
    assert_eq!(readyz(&api).status, 200, "within the grace");
    wait_until(Duration::from_secs(6), "not ready past the grace", || readyz(&api).status == 503);
    let ready = readyz(&api);
    assert!(ready.error().contains("past grace") && ready.error().contains("master answers"), "{}", ready.text());
    let r = get(api.addr, "/");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["current"], 4.0);
    assert!(age(&r) >= 2);
    assert_eq!(post_value(api.addr, 5.0).status, 200, "the master takes writes meanwhile");
}

/// Row "read address is the write address": no replica, reading the master by design (the
/// scaling experiment's naive mode) is ready and serves, not refused as a promoted replica.
#[test]
fn reading_the_master_by_design_is_ready() {
    let _serial = serial();
    let master = Redis::master();
    let api = Api::start(&master.addr(), &master.addr(), &[]);
    api.wait_ready();
    assert_eq!(post_value(api.addr, 4.5).status, 200);
    let r = get(api.addr, "/");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["current"], 4.5);
}

/// Row "promoted to master": `REPLICAOF NO ONE` turns the pod not ready and GET 503, never the
/// value the promoted server may now diverge from.
#[test]
fn promoted_replica_refuses_reads() {
    let _serial = serial();
    let pair = Pair::new();
    let api = Api::on(&pair, &[]);
    wait_until(Duration::from_secs(10), "ready", || readyz(&api).status == 200);
    api.set_and_see(6.0);
    pair.replica.cmd(&["REPLICAOF", "NO", "ONE"]);
    wait_until(Duration::from_secs(5), "not ready", || readyz(&api).status == 503);
    assert!(readyz(&api).error().contains("not a replica"), "{}", readyz(&api).text());
    for _ in 0..5 {
        let r = get(api.addr, "/");
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.error().contains("not a replica"), "{}", r.text());
    }
}

/// Row "fails the read GETs use": a replica without `HGET` (renamed away) is not ready, and GET
/// says why (503).
#[test]
fn replica_failing_hget_not_ready() {
    let _serial = serial();
    let master = Redis::master();
    let replica = Redis::replica_of_with(&master, &["--rename-command", "HGET", ""]);
    replica.wait_synced();
    let api = Api::start(&replica.addr(), &master.addr(), &[]);
    assert_eq!(post_value(api.addr, 7.0).status, 200);
    wait_until(Duration::from_secs(5), "a verdict on the HGET", || readyz(&api).text().contains("fails the read"));
    let ready = readyz(&api);
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert_eq!(ready.json()["serving"], false);
    assert_eq!(get(api.addr, "/").status, 503);
}

/// Row "bad data": a value that is not a number, or a hash key of another type, is every
/// pod's alike: the pod stays ready (not-ready everywhere would empty the Service) and GET
/// says what is wrong with a 500.
#[test]
fn bad_data_keeps_the_pod_ready() {
    let _serial = serial();
    let pair = Pair::new();
    let api = Api::on(&pair, &[]);
    api.wait_ready();
    for (setup, says) in [
        (&["HSET", "currency", "current-value", "abc"][..], "not a number"),
        (&["SET", "currency", "a string"][..], "WRONGTYPE"),
    ] {
        pair.master.cmd(&["DEL", "currency"]);
        pair.master.cmd(setup);
        wait_until(Duration::from_secs(5), "GET meets the bad data", || get(api.addr, "/").status == 500);
        let r = get(api.addr, "/");
        assert!(r.error().contains(says), "{}", r.error());
        // Several health checks later, still ready.
        std::thread::sleep(Duration::from_millis(500));
        let ready = readyz(&api);
        assert_eq!(ready.status, 200, "{}", ready.text());
    }
}

/// Row "loading": while the replica loads its dataset, not ready and GET 503.
#[test]
fn loading_replica_refuses() {
    let _serial = serial();
    let pair = Pair::new();
    let api = Api::on(&pair, &[]);
    wait_until(Duration::from_secs(10), "ready", || readyz(&api).status == 200);
    api.set_and_see(8.0);
    // Written by a script: its effects replicate (DEBUG POPULATE's do not).
    pair.master.cmd(&["EVAL", "for i = 1, 3000 do redis.call('SET', 'k' .. i, i) end", "0"]);
    wait_until(Duration::from_secs(5), "keys replicated", || pair.replica.cmd(&["DBSIZE"]) == "3001");
    // 1 ms per key: a 3 s load, answering INFO (and LOADING to the rest) every 1 KiB.
    pair.replica.cmd(&["CONFIG", "SET", "key-load-delay", "1000"]);
    pair.replica.cmd(&["CONFIG", "SET", "loading-process-events-interval-bytes", "1024"]);
    let port = pair.replica.port;
    let reload = std::thread::spawn(move || {
        RespConn::open(&format!("127.0.0.1:{port}"), Duration::from_secs(20))?.call(&["DEBUG", "RELOAD"])
    });
    wait_until(Duration::from_secs(5), "not ready while loading", || {
        readyz(&api).text().contains("loading its dataset")
    });
    let ready = readyz(&api);
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert_eq!(ready.json()["serving"], false);
    assert_eq!(get(api.addr, "/").status, 503);
    assert_eq!(reload.join().unwrap(), Ok(Reply::Simple("OK".into())), "DEBUG RELOAD");
    pair.replica.cmd(&["CONFIG", "SET", "key-load-delay", "0"]);
    wait_until(Duration::from_secs(10), "ready after the load", || readyz(&api).status == 200);
    assert_eq!(get(api.addr, "/").json()["current"], 8.0);
}

/// Rows "never synced" and "dead": not ready, GET 503, and `/readyz` says GET is not serving.
#[test]
fn unsynced_or_dead_replica_refuses() {
    let _serial = serial();
    let master = Redis::master();
    master.cmd(&["HSET", "currency", "current-value", "9"]);
    master.stop();
    let mut replica = Redis::replica_of_nowait(&master);
    let api = Api::start(&replica.addr(), &master.addr(), &[]);
    wait_until(Duration::from_secs(5), "a verdict", || readyz(&api).text().contains("first sync since it started"));
    let ready = readyz(&api);
    assert_eq!((ready.status, ready.json()["serving"].as_bool()), (503, Some(false)), "{}", ready.text());
    assert_eq!(get(api.addr, "/").status, 503);
    master.cont();
    wait_until(Duration::from_secs(20), "ready after the sync", || readyz(&api).status == 200);
    replica.kill();
    wait_until(Duration::from_secs(5), "not ready", || readyz(&api).text().contains("not answering"));
    assert_eq!(readyz(&api).json()["serving"], false);
    assert_eq!(get(api.addr, "/").status, 503);
}

/// Probes are never starved: with the main port's 4 slots held by slow requests (a hung master,
/// POSTs waiting out their deadline) for 2 s, the probe port answers /healthz, /readyz and
/// /metrics every time, fast; it answers nothing else.
#[test]
fn probes_answered_while_main_port_is_full() {
    let _serial = serial();
    let pair = Pair::new();
    let api = Api::on(&pair, &[("MAX_CONNECTIONS", "4"), ("BREAKER_FAILURES", "1000")]);
    wait_until(Duration::from_secs(10), "ready", || readyz(&api).status == 200);
    assert_eq!(get(api.probe_addr, "/").status, 404);
    pair.master.stop();
    let stop = Arc::new(AtomicBool::new(false));
    let addr = api.addr;
    let busy: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut slow, mut tries) = (0, 0);
                let mut c = Client::connect(addr);
                while !stop.load(Ordering::Relaxed) && tries < 1000 {
                    tries += 1;
                    c.send(request_bytes("POST", "/", Some(r#"{"value": 1}"#), "").as_bytes());
                    match c.read_response(false) {
                        Some(r) if r.status == 504 => slow += 1,
                        Some(r) if r.header("Connection") != Some("close") => {}
                        // Closed (refused at the cap, or displaced while idle): a new one.
                        _ => c = Client::connect(addr),
                    }
                }
                slow
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (mut worst, mut main_slow) = (Duration::ZERO, 0);
    let until = Instant::now() + Duration::from_secs(2);
    let mut probes = 0;
    while Instant::now() < until {
        for path in ["/healthz", "/readyz", "/metrics"] {
            let t = Instant::now();
            let r = get(api.probe_addr, path);
            worst = worst.max(t.elapsed());
            assert!(r.status == 200 || (path == "/readyz" && r.status == 503), "{path}: {}", r.status);
            probes += 1;
        }
        // The main port is full meanwhile: its own /healthz waits for a slot or is refused.
        let t = Instant::now();
        let mut c = Client::connect(api.addr);
        c.send(request_bytes("GET", "/healthz", None, "").as_bytes());
        match c.read_response(false) {
            Some(r) if r.status == 200 && t.elapsed() < Duration::from_millis(50) => {}
            _ => main_slow += 1,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    pair.master.cont();
    let slow: u32 = busy.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(slow >= 8, "the main port was not kept busy ({slow} slow POSTs)");
    assert!(main_slow > 0, "the main port was never full: the test proves nothing");
    assert!(probes >= 15, "{probes} probes");
    // A probe queued behind the main port's slow POSTs would wait for their 400 ms deadline.
    assert!(worst < Duration::from_millis(250), "timing: slowest probe {worst:?}");
}

/// Monotonic reads (#4): a replica restarted in place with an older dump on disk (value A from
/// its full sync) while the master is paused never makes the API answer A after it answered B;
/// once the replica has synced again, B is served.
#[test]
fn restarted_replica_never_serves_its_old_dump() {
    never_serves_the_old_dump(&[]);
}

/// The same in memory mode: the copy in memory (read from the replica before it restarted, and
/// vouched for by the check made after that read) never hides the restart, and the old dump is
/// never served either.
#[test]
fn restarted_replica_never_serves_its_old_dump_in_memory_mode() {
    never_serves_the_old_dump(&[("READ_MODE", "memory")]);
}

fn never_serves_the_old_dump(api_env: &[(&str, &str)]) {
    let _serial = serial();
    let master = Redis::master();
    master.cmd(&["HSET", "currency", "current-value", "1.18"]);
    // The harness's replica keeps the RDB of its full sync, as replica.conf did before.
    let mut replica = Redis::replica_of(&master);
    assert!(replica.dir().join("dump.rdb").exists(), "precondition: the sync left a dump holding A");
    let api = Api::start(&replica.addr(), &master.addr(), api_env);
    wait_until(Duration::from_secs(10), "A served", || get(api.addr, "/").text().contains("1.18"));
    api.set_and_see(1.46);
    master.stop();
    replica.restart();
    assert_eq!(replica.hget(), "1.18", "precondition: the restarted replica holds the old dump");
    let mut codes = std::collections::BTreeMap::new();
    let check = |codes: &mut std::collections::BTreeMap<u16, u32>| {
        let r = get(api.addr, "/");
        if r.status == 200 {
            assert_eq!(r.json()["current"], 1.46, "went back in time: {}", r.text());
        }
        *codes.entry(r.status).or_insert(0) += 1;
        r.status == 200
    };
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        check(&mut codes);
    }
    assert!(codes.get(&503).is_some_and(|n| *n > 0), "{codes:?}");
    master.cont();
    wait_until(Duration::from_secs(20), "B served again after the sync", || check(&mut codes));
}

/// The sidecar's replica.conf (k8s/redis-replica-configmap.yaml) never leaves a sync's RDB on
/// disk, so a replica restarted in place (an emptyDir survives it) starts empty and waits for
/// its sync instead of loading an old value.
#[test]
fn sidecar_config_keeps_no_sync_dump() {
    let _serial = serial();
    let yaml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/k8s/redis-replica-configmap.yaml"))
        .expect("replica ConfigMap");
    let conf: Vec<&str> = yaml
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("replica.conf: |"))
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    // This machine's paths, ports and no ACL users stand in for the pod's.
    let skip = ["replicaof", "bind", "port", "dir", "include", "aclfile", "protected-mode"];
    let mut args = Vec::new();
    for line in &conf {
        let mut words = line.split_whitespace();
        let name = words.next().unwrap();
        if skip.contains(&name) {
            continue;
        }
        args.push(format!("--{name}"));
        args.extend(words.map(|w| w.trim_matches('"').to_owned()));
    }
    assert!(args.len() > 4, "parsed {conf:?}");
    let master = Redis::master();
    master.cmd(&["HSET", "currency", "current-value", "1.18"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut replica = Redis::replica_of_with(&master, &refs);
    replica.wait_synced();
    assert_eq!(replica.hget(), "1.18");
    let files: Vec<_> = std::fs::read_dir(replica.dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(files.iter().all(|f| !f.to_string_lossy().ends_with(".rdb")), "a sync dump stayed: {files:?}");
    master.stop();
    replica.restart();
    assert_eq!(replica.hget(), "(nil)", "the restarted replica loaded an old value");
    master.cont();
}

/// Connections refused at the cap (every worker busy with a request) are logged, once per
/// interval with their count, besides `redis_api_http_connections_refused_total`: an operator
/// reading the log sees why clients get 503s.
#[test]
fn refusals_at_the_cap_are_logged() {
    let _serial = serial();
    let pair = Pair::new();
    let api = Api::on(&pair, &[("MAX_CONNECTIONS", "2"), ("BREAKER_FAILURES", "1000"), ("DEADLINE", "3s")]);
    wait_until(Duration::from_secs(10), "ready", || readyz(&api).status == 200);
    pair.master.stop();
    let addr = api.addr;
    // Two POSTs hang on the stopped master until their deadline: both workers are busy.
    let busy: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.send(request_bytes("POST", "/", Some(r#"{"value": 1}"#), "").as_bytes());
                c.read_response(false).map(|r| r.status)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let refused = (0..10).any(|_| get(addr, "/healthz").status == 503);
    pair.master.cont();
    for b in busy {
        let _ = b.join();
    }
    assert!(refused, "a request that found both workers busy was not refused");
    assert!(api.metric("redis_api_http_connections_refused_total", "") >= 1.0);
    let log = api.log_text();
    assert!(log.contains("connection cap of 2 reached"), "{log}");
}
