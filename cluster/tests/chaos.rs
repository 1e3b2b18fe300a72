//! The chaos suite's fast subset (what CI runs): two local pods, scenarios #2 #3 #4 #6 #7 #8
//! #9 #10 #12 #15 (the last two judged at an emulated Service), each must pass. Needs root (CI runs as root) and slowhttptest (scripts/test.sh
//! installs it).

use local_cluster::chaos::{self, Plan};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Octets this test may use for its network, the first free one (local_cluster.rs uses 97,
/// scale.rs 93-109, the chaos binary 85).
const NETS: [u8; 3] = [113, 117, 121];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

#[test]
#[ignore = "needs root, slowhttptest and minutes: scripts/test.sh runs it"]
fn fast_subset_passes() {
    let api_bin = repo().join("target/debug/redis-api");
    assert!(api_bin.exists(), "build the server first: cargo build -p redis-api (cargo test --workspace does)");
    let work = tempfile::tempdir().unwrap();
    let plan = Plan {
        repo: repo(),
        api_bin,
        extra_env: Vec::new(),
        state: work.path().join("cluster"),
        prefix: format!("c{}", std::process::id() % 100_000),
        net: NETS.into_iter().find(|&n| !local_cluster::net_in_use(n)).expect("a free network"),
        only: Plan::scenarios(false),
        overload_s: 30.0,
        overload_quota: None,
        overload_connections: 0,
        slowloris_s: 20,
        cut_s: 70.0,
        outage_s: 180.0,
        // A busy shared machine: time bounds x1.5, correctness as strict.
        strict_timing: false,
        // Latency is judged against a baseline on this shared machine: one re-run allowed.
        retries: 1,
    };
    let started = Instant::now();
    let verdicts = chaos::run(&plan, &mut |v| eprintln!("{}", v.line())).unwrap();
    let ran: Vec<u8> = verdicts.iter().map(|v| v.number).collect();
    assert_eq!(ran, vec![9, 7, 6, 10, 2, 4, 15, 3, 12, 8], "the fast subset, in order");
    let failed: Vec<String> = verdicts.iter().filter(|v| !v.passed()).map(|v| v.line()).collect();
    assert!(failed.is_empty(), "failed scenarios:\n{}", failed.join("\n"));
    assert!(chaos::markdown(&verdicts).lines().count() == 2 + verdicts.len());
    assert!(started.elapsed() < Duration::from_secs(600), "bounded: {:?}", started.elapsed());
    assert!(!Path::new(&plan.state).exists(), "the pods were taken down");
}
