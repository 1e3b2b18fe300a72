//! The API under a CPU quota that throttles it (a cgroup, as a Kubernetes CPU limit makes):
//! it notices from its cgroup's `cpu.stat` and paces its workers (`redis_api_http_paced` 1),
//! answers every request meanwhile, and stops pacing once the load is gone. Needs root and a
//! cgroup v1 `cpu` controller at /sys/fs/cgroup/cpu (CI runs as root).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::*;

const CPU_ROOT: &str = "/sys/fs/cgroup/cpu";

/// A cpu cgroup holding one process, removed (the process moved back first) when dropped.
struct Group(PathBuf);

impl Group {
    fn new(pid: u32, quota_us: u64, period_us: u64) -> Group {
        let dir = Path::new(CPU_ROOT).join(format!("redis-api-test-{}", std::process::id()));
        std::fs::create_dir(&dir).expect("create the cgroup (root?)");
        let group = Group(dir);
        std::fs::write(group.0.join("cpu.cfs_period_us"), period_us.to_string()).expect("period");
        std::fs::write(group.0.join("cpu.cfs_quota_us"), quota_us.to_string()).expect("quota");
        std::fs::write(group.0.join("cgroup.procs"), pid.to_string()).expect("move the API in");
        group
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Ok(procs) = std::fs::read_to_string(self.0.join("cgroup.procs")) {
            for pid in procs.lines() {
                let _ = std::fs::write(Path::new(CPU_ROOT).join("cgroup.procs"), pid);
            }
        }
        let until = Instant::now() + Duration::from_secs(2);
        while std::fs::remove_dir(&self.0).is_err() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
#[ignore = "needs root and a cgroup v1 cpu controller: scripts/test.sh runs it"]
fn throttled_api_paces_its_workers_then_stops() {
    assert!(Path::new(CPU_ROOT).join("cpu.cfs_quota_us").exists(), "no cgroup v1 cpu controller at {CPU_ROOT}");
    let _serial = serial();
    let pair = Pair::new();
    pair.master.cmd(&["HSET", "currency", "current-value", "7"]);
    let api = Api::on(&pair, &[]);
    api.wait_ready();
    wait_until(Duration::from_secs(5), "value replicated", || get(api.addr, "/").status == 200);
    assert_eq!(api.metric("redis_api_http_paced", ""), 0.0, "not paced while nothing throttles it");
    // 10 % of a core in 10 ms periods: any load throttles most periods.
    let _group = Group::new(api.pid(), 1_000, 10_000);
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
    assert!(api.log_text().contains("workers read their next requests in turns"), "{}", api.log_text());
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
