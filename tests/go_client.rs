//! Go's net/http client against the real API with its connection cap really full (every slot
//! holding a request that waits on a hung replica): it must see statuses (503, 504), never a
//! transport error or an "Unsolicited response" — the symptom of a server that writes before
//! it was asked. Needs Go (`scripts/test.sh` installs golang-go).

use std::path::PathBuf;
use std::process::Command;
use testkit::*;

/// Builds tests/go/capclient.go into the target directory.
fn capclient() -> PathBuf {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("capclient");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/go/capclient.go");
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(&src)
        .env("GOCACHE", PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("go-cache"))
        .env("GOFLAGS", "-mod=mod")
        .env("GO111MODULE", "off")
        .status()
        .unwrap_or_else(|e| panic!("cannot run `go` ({e}): install golang-go (scripts/test.sh does)"));
    assert!(built.success(), "go build {}", src.display());
    out
}

/// 32 Go clients against a cap of 8 whose slots all wait on a SIGSTOPped replica: every
/// request gets a status — 504 for those that reached a slot, 503 for those that found every
/// slot busy — and Go reports no transport error and no unsolicited response.
#[test]
#[ignore = "needs the Go toolchain: scripts/test.sh runs it"]
fn go_client_sees_statuses_at_a_full_cap() {
    let client = capclient();
    let pair = Pair::new();
    let api = Api::on(&pair, &[("MAX_CONNECTIONS", "8")]);
    api.wait_ready();
    pair.replica.stop();
    let out = Command::new(&client)
        .args(["-url", &format!("http://{}/", api.addr), "-c", "32", "-d", "3s", "-n", "5000", "-timeout", "5s"])
        .output()
        .expect("run capclient");
    pair.replica.cont();
    assert!(out.status.success(), "capclient: {}", String::from_utf8_lossy(&out.stderr));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("capclient JSON");
    eprintln!("{result}");
    let count = |key: &str, code: &str| result[key][code].as_u64().unwrap_or(0);
    assert_eq!(result["unsolicited"], 0, "Go saw unsolicited responses: {result}");
    assert!(result["errors"].as_object().is_some_and(|e| e.is_empty()), "Go saw transport errors: {result}");
    assert!(count("codes", "503") > 0, "the full cap refused someone: {result}");
    assert!(count("codes", "504") > 0, "requests on a slot met the deadline: {result}");
    let others: u64 = result["codes"]
        .as_object()
        .map(|m| m.iter().filter(|(k, _)| *k != "503" && *k != "504").map(|(_, v)| v.as_u64().unwrap_or(0)).sum())
        .unwrap_or(0);
    assert_eq!(others, 0, "only 503 and 504 while the replica hangs: {result}");
}
