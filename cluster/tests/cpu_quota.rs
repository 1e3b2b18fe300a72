//! The API under a CPU quota that throttles it (a cgroup, as a Kubernetes CPU limit makes):
//! it notices from its cgroup's `cpu.stat` and paces its workers (`redis_api_http_paced` 1)
//! instead of letting shared reads gather (`redis_api_value_reads_gathering` 0), answers every
//! request meanwhile, and stops pacing once the load is gone. Needs root and a cgroup v1 `cpu`
//! controller at /sys/fs/cgroup/cpu (CI runs as root).

use local_cluster::cgroup::{self, CPU_ROOT, Quota};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::*;

/// The API's cpu cgroup, removed when dropped (its process moved back to the root first: the
/// API may still run).
struct Group(PathBuf);

impl Drop for Group {
    fn drop(&mut self) {
        if let Ok(procs) = std::fs::read_to_string(self.0.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|p| p.parse().ok()) {
                let _ = cgroup::add(Path::new(CPU_ROOT), pid);
            }
        }
        let _ = cgroup::remove(&self.0, Duration::from_secs(2));
    }
}

#[test]
#[ignore = "needs root and a cgroup v1 cpu controller: scripts/test.sh runs it"]
fn throttled_api_paces_its_workers_then_stops() {
    let _serial = serial();
    let pair = Pair::new();
    pair.master.cmd(&["HSET", "currency", "current-value", "7"]);
    let api = Api::on(&pair, &[]);
    api.wait_ready();
    wait_until(Duration::from_secs(5), "value replicated", || get(api.addr, "/").status == 200);
    assert_eq!(api.metric("redis_api_http_paced", ""), 0.0, "not paced while nothing throttles it");
    // 10 % of a core in 10 ms periods: any load throttles most periods.
    let quota = Quota { percent: 10.0, period_us: 10_000 };
    let group =
        Group(cgroup::create(&format!("redis-api-test-{}", std::process::id()), quota).expect("cgroup (root?)"));
    cgroup::add(&group.0, api.pid()).expect("move the API in");
    let (stop, addr) = (Arc::new(AtomicBool::new(false)), api.addr);
    let (ok, other) = (Arc::new(AtomicU64::new(0)), Arc::new(Mutex::new(Vec::new())));
    let loaders: Vec<_> = (0..32)
        .map(|_| {
            let (stop, ok, other) = (stop.clone(), ok.clone(), other.clone());
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let until = Instant::now() + Duration::from_secs(20);
                while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                    let r = c.request("GET", "/", None);
                    match r.status {
                        200 => assert_eq!(r.json()["current"], 7.0),
                        // Past its deadline under a tenth of a core: answered, and said so.
                        503 | 504 => {}
                        s => {
                            let mut other = other.lock().expect("lock");
                            if other.len() < 5 {
                                other.push(format!("{s} {}", r.text()));
                            }
                        }
                    }
                    if r.status == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    wait_until(Duration::from_secs(15), "paced under the quota", || api.metric("redis_api_http_paced", "") == 1.0);
    // The metric is set just before the line is logged, and a tenth of a core may part the two.
    let logged = poll(Duration::from_secs(5), || {
        let log = api.log_text();
        if log.contains("workers read their next requests in turns") { Ok(()) } else { Err(log) }
    });
    assert!(logged.is_ok(), "paced, but not logged: {logged:?}");
    // Paced, shared reads do not gather, whatever the host's own load (switched off first).
    assert_eq!(api.metric("redis_api_value_reads_gathering", ""), 0.0, "gathering while paced");
    // Served while paced.
    let before = ok.load(Ordering::Relaxed);
    wait_until(Duration::from_secs(10), "GETs answered while paced", || ok.load(Ordering::Relaxed) >= before + 100);
    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        l.join().expect("every answer well-formed");
    }
    assert!(other.lock().expect("lock").is_empty(), "answers other than 200/503/504: {:?}", other.lock());
    wait_until(Duration::from_secs(10), "not paced once the load is gone", || {
        api.metric("redis_api_http_paced", "") == 0.0
    });
    let mut c = Client::connect(api.addr);
    assert_eq!(c.request("GET", "/", None).status, 200);
}
