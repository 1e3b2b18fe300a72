//! The kit's shell scripts as a user meets them: `SKIP_BUILD=1` honoured (no cargo run, a clear
//! error when a binary is missing), local-cluster.sh building only for `up`/`serve`, rig.sh
//! refusing a bad RATE at once, naming a component that died instead of waiting for it, and
//! ending with a summary.
//! Build checks run the scripts copied into a scratch repository whose `cargo` is a stand-in
//! that records being called.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

fn write_exe(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A scratch repository: the real scripts, an empty target/, a `cargo` on PATH that only
/// records its arguments in `cargo.calls`, and a `sudo` that runs its command as it is.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let scripts = dir.path().join("scripts");
        std::fs::create_dir_all(&scripts).unwrap();
        for name in ["lib.sh", "bench.sh", "local-cluster.sh", "rig.sh", "k8s.sh"] {
            std::fs::copy(repo().join("scripts").join(name), scripts.join(name)).unwrap();
        }
        let calls = dir.path().join("cargo.calls");
        write_exe(&dir.path().join("bin/cargo"), &format!("#!/bin/sh\necho \"$*\" >>'{}'\nexit 1\n", calls.display()));
        // The scripts run their tools as root (`as_root`: sudo when not root); the stand-ins
        // need no root, so a plain `cargo test` as any user runs them as they are.
        write_exe(&dir.path().join("bin/sudo"), "#!/bin/sh\nexec \"$@\"\n");
        Scratch { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A release binary that records its arguments in `<name>.calls`.
    fn stub(&self, name: &str) {
        let calls = self.path(&format!("{name}.calls"));
        write_exe(
            &self.path(&format!("target/release/{name}")),
            &format!("#!/bin/sh\necho \"$*\" >>'{}'\n", calls.display()),
        );
    }

    fn run(&self, script: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let path = format!("{}:{}", self.path("bin").display(), std::env::var("PATH").unwrap_or_default());
        let mut cmd = Command::new(self.path(&format!("scripts/{script}")));
        cmd.args(args).env("PATH", path).env("CARGO_HOME", self.path("cargo-home")).env_remove("SKIP_BUILD");
        cmd.envs(env.iter().copied()).output().unwrap()
    }

    fn cargo_calls(&self) -> String {
        std::fs::read_to_string(self.path("cargo.calls")).unwrap_or_default()
    }

    fn calls(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{name}.calls"))).unwrap_or_default()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// bench.sh with SKIP_BUILD=1 and no loadtest binary: one clear error naming it and how to
/// build it; cargo never runs (it used to build loadtest whatever SKIP_BUILD said).
#[test]
fn bench_skip_build_never_runs_cargo() {
    let s = Scratch::new();
    s.stub("redis-api");
    let out = s.run("bench.sh", &[], &[("SKIP_BUILD", "1")]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("SKIP_BUILD=1 but") && err.contains("target/release/loadtest is missing"), "{err}");
    assert!(err.contains("cargo build --release --locked -p loadtest"), "{err}");
    assert_eq!(s.cargo_calls(), "", "cargo ran");
}

/// k8s.sh --help: the wrapper's usage at once, without building tools (a release build takes
/// minutes); with tools built, the commands' own help after it.
#[test]
fn k8s_help_never_builds() {
    let s = Scratch::new();
    let out = s.run("k8s.sh", &["--help"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Usage: scripts/k8s.sh COMMAND") && text.contains("once tools is built"), "{text}");
    assert_eq!(s.cargo_calls(), "", "cargo ran");
    s.stub("tools");
    let out = s.run("k8s.sh", &["-h"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(s.calls("tools").trim(), "k8s --help");
    assert_eq!(s.cargo_calls(), "", "cargo ran");
}

/// local-cluster.sh: down, cut and restore use what `up` built and never run cargo; up with
/// SKIP_BUILD=1 uses the existing binaries; up with SKIP_BUILD=1 and none is a clear error.
#[test]
fn local_cluster_builds_only_when_asked() {
    let s = Scratch::new();
    let out = s.run("local-cluster.sh", &["up", "2"], &[("SKIP_BUILD", "1")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("SKIP_BUILD=1 but"), "{}", stderr(&out));
    s.stub("redis-api");
    s.stub("tools");
    for args in [&["down"][..], &["cut", "1"], &["restore", "1"]] {
        let out = s.run("local-cluster.sh", args, &[]);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let out = s.run("local-cluster.sh", &["up", "2"], &[("SKIP_BUILD", "1")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(s.cargo_calls(), "", "cargo ran");
    let calls: Vec<String> = s.calls("tools").lines().map(|l| l.split(" --repo").next().unwrap().to_owned()).collect();
    assert_eq!(calls, ["cluster down", "cluster cut 1", "cluster restore 1", "cluster up 2"]);
}

/// RATE=abc: rig.sh says so in one line at once, before building or starting anything.
#[test]
fn rig_refuses_a_bad_rate_at_once() {
    let s = Scratch::new();
    let started = Instant::now();
    for bad in ["abc", "0", "-5", "1e3"] {
        let out = s.run("rig.sh", &["--duration", "1s"], &[("RATE", bad)]);
        let err = stderr(&out);
        assert!(!out.status.success(), "RATE={bad}: {err}");
        assert_eq!(err.trim(), format!("[rig.sh] error: RATE: a positive number (req/s), not '{bad}'"));
    }
    assert_eq!(s.cargo_calls(), "", "cargo ran");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

/// A generator that dies at start: rig.sh says which, with its exit status and last log line,
/// within seconds (it used to wait 30 s and say "timed out waiting").
#[test]
fn rig_names_a_component_that_died() {
    let dir = tempfile::tempdir().unwrap();
    let kit = dir.path().join("kit");
    let real = env!("CARGO_BIN_EXE_loadtest");
    write_exe(
        &kit,
        &format!(
            "#!/bin/sh\nif [ \"$1\" = attack ]; then echo 'error: no such rate' >&2; exit 3; fi\nexec '{real}' \"$@\"\n"
        ),
    );
    let started = Instant::now();
    let out = Command::new(repo().join("scripts/rig.sh"))
        .args(["--generators", "1", "--duration", "60s"])
        .env("API_BIN", testkit::api_bin())
        .env("LOADTEST_BIN", &kit)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("gen-1 exited with status 3: error: no such rate"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(25), "{:?}: {err}", started.elapsed());
}

/// The rig run for 3 s ends with a summary, after the stop: what ran and for how long, the
/// generators' totals from the aggregator (requests, success, percentiles, by status) and the
/// updater's POSTs.
#[test]
fn rig_ends_with_a_summary() {
    let started = Instant::now();
    let out = Command::new(repo().join("scripts/rig.sh"))
        .args(["--generators", "1", "--duration", "3s"])
        .env("API_BIN", testkit::api_bin())
        .env("LOADTEST_BIN", env!("CARGO_BIN_EXE_loadtest"))
        .env("RATE", "50")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let lines: Vec<&str> = err.lines().skip_while(|l| !l.contains("--duration 3s is over")).collect();
    let summary: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix("[rig.sh] summary: ")).collect();
    assert_eq!(summary.len(), 3, "three lines after the stop: {err}");
    let ran = summary[0].strip_prefix("1 generator(s) at 50 req/s each against redis-api http://127.0.0.1:");
    let secs: u64 = ran
        .and_then(|r| r.rsplit_once(", for "))
        .and_then(|(_, s)| s.strip_suffix(" s")?.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    assert!((3..=10).contains(&secs), "{err}");
    let totals = summary[1].strip_prefix("generators' totals: ").unwrap_or_else(|| panic!("{err}"));
    let requests: u64 = totals.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(requests > 0 && totals.contains(" requests of "), "{err}");
    for part in ["success ", "p50 ", "p99 ", " ms; by status: ", " × 200"] {
        assert!(totals.contains(part), "{part:?} in {totals}");
    }
    let posts = summary[2].strip_prefix("updater POSTs: ").unwrap_or_else(|| panic!("{err}"));
    let ok: u64 = posts.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(ok >= 1 && posts.starts_with(&format!("{ok} ok")), "{err}");
    assert!(started.elapsed() < Duration::from_secs(40), "{:?}", started.elapsed());
}

/// test.sh's `step` says how long each step took, and a failed step names its exit status and
/// time (the function run on its own: the real steps build and test everything).
#[test]
fn test_sh_steps_say_how_long_they_took() {
    let script = r#"source scripts/lib.sh
        eval "$(sed -n '/^step() {/,/^}/p' scripts/test.sh)"
        step "a nap" sleep 1.1
        step "a failure" sh -c 'exit 3'
        log "not reached""#;
    let out = Command::new("bash").args(["-c", script]).current_dir(repo()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    let nap = lines.iter().find(|l| l.contains("<== a nap: ")).unwrap_or_else(|| panic!("{stderr}"));
    let secs: u64 = nap.rsplit(": ").next().and_then(|s| s.strip_suffix(" s")).and_then(|s| s.parse().ok()).unwrap();
    assert!((1..=3).contains(&secs), "{nap}");
    // $SECONDS counts whole seconds: a quick step may straddle one.
    assert!(
        ["0", "1"]
            .iter()
            .any(|s| stderr.contains(&format!("error: step failed: a failure (exit status 3, after {s} s)"))),
        "{stderr}"
    );
    assert!(!stderr.contains("not reached") && !stderr.contains("<== a failure"), "{stderr}");
}
