//! The container entrypoint `run.sh`: which flags and environment the server receives, and
//! that no secret reaches its command line.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;
use testkit::*;

fn proc_strings(pid: u32, what: &str) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/{what}")).unwrap();
    raw.split(|&b| b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect()
}

/// run.sh maps addresses to flags, keeps passwords in the environment, and execs the server.
#[test]
fn run_sh_maps_env_to_flags_and_keeps_secrets_off_argv() {
    let pair = Pair::new();
    let secret = "pw-only-in-env-123";
    pair.master.cmd(&["CONFIG", "SET", "requirepass", secret]);
    pair.replica.cmd(&["CONFIG", "SET", "masterauth", secret]);
    let (port, probe_port) = (free_port(), free_port());
    let mut child = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/run.sh"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("REDIS_API_BIN", env!("CARGO_BIN_EXE_redis-api"))
        .env("REDIS_ADDR_WRITE", pair.master.addr())
        .env("REDIS_ADDR_READ", pair.replica.addr())
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("PROBE_LISTEN", format!("127.0.0.1:{probe_port}"))
        .env("REDIS_PASS_WRITE", secret)
        .env("DEADLINE", "350ms")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until(Duration::from_secs(10), "run.sh server ready", || {
        std::net::TcpStream::connect(addr).is_ok() && get(addr, "/readyz").status == 200
    });
    // exec: the pid run.sh started with is now the server itself.
    let pid = child.id();
    let argv = proc_strings(pid, "cmdline");
    assert!(argv[0].ends_with("redis-api"), "{argv:?}");
    let flag = |name: &str| argv.iter().position(|a| a == name).map(|i| argv[i + 1].clone());
    assert_eq!(flag("--listen"), Some(format!("127.0.0.1:{port}")));
    assert_eq!(flag("--probe-listen"), Some(format!("127.0.0.1:{probe_port}")));
    assert_eq!(flag("--read-redis-addr"), Some(pair.replica.addr()));
    assert_eq!(flag("--write-redis-addr"), Some(pair.master.addr()));
    assert!(!argv.iter().any(|a| a.contains(secret)), "{argv:?}");
    let env: HashMap<String, String> = proc_strings(pid, "environ")
        .into_iter()
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.into(), v.into())))
        .collect();
    assert_eq!(env.get("REDIS_PASS_WRITE").map(String::as_str), Some(secret));
    assert_eq!(env.get("DEADLINE").map(String::as_str), Some("350ms"));
    assert!(!env.contains_key("REDIS_ADDR_WRITE"), "one source of truth for the addresses");
    assert_eq!(post_value(addr, 9.0).status, 200, "the password reached the server");
    signal(pid, "TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM reached the server, which exited 0: {status:?}");
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert!(!log.contains(secret), "{log}");
}

/// Without the master's address run.sh refuses to start, saying why.
#[test]
fn run_sh_requires_the_write_address() {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/run.sh"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("REDIS_API_BIN", env!("CARGO_BIN_EXE_redis-api"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("REDIS_ADDR_WRITE"));
}

/// An address holding a password is refused by run.sh itself, so it never reaches the server's
/// argv; the error names the variable but not the value.
#[test]
fn run_sh_refuses_an_address_with_credentials() {
    for (var, pass_var) in [("REDIS_ADDR_READ", "REDIS_PASS_READ"), ("REDIS_ADDR_WRITE", "REDIS_PASS_WRITE")] {
        let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/run.sh"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            // A stand-in server that prints the argv it was given.
            .env("REDIS_API_BIN", "/bin/echo")
            .env("REDIS_ADDR_WRITE", "127.0.0.1:1")
            .env(var, "redis://:hunter2@127.0.0.1:6379")
            .output()
            .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{var}: {stdout}");
        assert!(stderr.contains(var) && stderr.contains(pass_var), "{var}: {stderr}");
        assert!(!stdout.contains("hunter2") && !stderr.contains("hunter2"), "{var}: {stdout} {stderr}");
    }
}

/// An extra flag repeating one run.sh already sets is reported by the server as repeated.
#[test]
fn run_sh_extra_flag_repeating_a_mapped_one_is_named() {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/run.sh"))
        .args(["--listen", "127.0.0.1:0"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("REDIS_API_BIN", env!("CARGO_BIN_EXE_redis-api"))
        .env("REDIS_ADDR_WRITE", "127.0.0.1:1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--listen given more than once"), "{stderr}");
}
