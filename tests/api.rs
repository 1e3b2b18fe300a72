//! The API against a real Redis master + replica: wire format, routing, CORS, config names.

use std::time::Duration;
use testkit::*;

/// No value → 404; POST stores on the master; GET serves it from the replica, as JSON with a
/// final newline.
#[test]
fn get_post_roundtrip() {
    let pair = Pair::new();
    let api = Api::on(&pair, &[]);
    api.wait_ready();
    let r = get(api.addr, "/");
    assert_eq!(r.status, 404);
    assert_eq!(r.error(), "no value has been set");
    assert_eq!(r.header("content-type"), Some("application/json"));

    let r = post_value(api.addr, 1.25);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({ "current": 1.25 }));
    assert_eq!(pair.master.hget(), "1.25");
    wait_until(Duration::from_secs(5), "GET sees the value", || get(api.addr, "/").status == 200);
    let r = get(api.addr, "/");
    assert_eq!(r.json(), serde_json::json!({ "current": 1.25 }));
    // The wire format is unchanged JSON; a final newline keeps `curl` output on its own line.
    assert_eq!(r.text(), "{\"current\":1.25}\n", "GET's body, byte for byte");
    assert!(get(api.addr, "/nowhere").text().ends_with("}\n"), "errors end in a newline too");
    let r = post_value(api.addr, -7.0);
    assert_eq!(r.status, 200);
    assert_eq!(pair.master.hget(), "-7.0");
}

/// GET reads the replica and POST writes the master: made visible by detaching the replica
/// and giving it a value of its own.
#[test]
fn reads_replica_writes_master() {
    let pair = Pair::new();
    let api = Api::on(&pair, &[]);
    api.wait_ready();
    assert_eq!(post_value(api.addr, 1.0).status, 200);
    pair.replica.cmd(&["REPLICAOF", "NO", "ONE"]);
    pair.replica.cmd(&["HSET", "currency", "current-value", "99"]);
    assert_eq!(get(api.addr, "/").json()["current"], 99.0);
    assert_eq!(post_value(api.addr, 2.0).status, 200);
    assert_eq!(pair.master.hget(), "2.0");
    assert_eq!(pair.replica.hget(), "99");
}

/// Bad bodies get 400 saying what is wrong, and the stored value is untouched.
#[test]
fn bad_bodies_are_400() {
    let pair = Pair::new();
    let api = Api::on(&pair, &[]);
    api.wait_ready();
    assert_eq!(post_value(api.addr, 3.0).status, 200);
    for (body, says) in [
        ("", "empty body"),
        ("{", "malformed JSON"),
        ("not json", "malformed JSON"),
        (r#"{"value": "3"}"#, "must be a number"),
        (r#"{"value": null}"#, "must be a number"),
        (r#"{"other": 1}"#, "missing field"),
        (r#"{"value": 1}garbage"#, "malformed JSON"),
        (r#"{"value": 1e400}"#, "malformed JSON"),
        ("[1]", "expected a JSON object"),
        ("\u{0}\u{1}", "malformed JSON"),
    ] {
        let r = call(api.addr, "POST", "/", Some(body));
        assert_eq!(r.status, 400, "{body:?}: {}", r.text());
        assert!(r.error().contains(says), "{body:?}: {}", r.error());
    }
    assert_eq!(pair.master.hget(), "3.0");
}

/// A body with a field besides "value" is a 400 naming the field (as the README says: exactly
/// `{"value": <number>}`), and nothing is stored.
#[test]
fn unknown_fields_are_400() {
    let pair = Pair::new();
    let api = Api::on(&pair, &[]);
    api.wait_ready();
    assert_eq!(post_value(api.addr, 3.0).status, 200);
    for (body, field) in [(r#"{"value": 5, "x": 1}"#, "\"x\""), (r#"{"valeu": 6, "value": 5}"#, "\"valeu\"")] {
        let r = call(api.addr, "POST", "/", Some(body));
        assert_eq!(r.status, 400, "{body:?}: {}", r.text());
        assert!(r.error().contains(&format!("unknown field {field}")), "{body:?}: {}", r.error());
    }
    assert_eq!(pair.master.hget(), "3.0");
}

/// Wrong methods → 405 + Allow; unknown paths → 404 JSON; HEAD has no body.
#[test]
fn routing() {
    let pair = Pair::new();
    let api = Api::on(&pair, &[]);
    api.wait_ready();
    for method in ["PUT", "DELETE", "PATCH"] {
        let r = call(api.addr, method, "/", None);
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("GET, HEAD, POST, OPTIONS"));
        assert!(r.error().contains("method not allowed"));
    }
    assert_eq!(call(api.addr, "POST", "/healthz", Some("{}")).status, 405);
    let r = get(api.addr, "/nope");
    assert_eq!((r.status, r.error().as_str()), (404, "not found"));
    assert_eq!(post_value(api.addr, 5.5).status, 200);
    wait_until(Duration::from_secs(5), "value", || get(api.addr, "/").status == 200);
    let head = Client::connect(api.addr).request("HEAD", "/", None);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), Some(get(api.addr, "/").body.len().to_string().as_str()));
    let h = get(api.addr, "/healthz");
    assert_eq!((h.status, h.json()["status"].as_str()), (200, Some("ok")));
}

/// CORS: preflight 204, the allow-origin header on every answer, errors included.
#[test]
fn cors_any_and_list() {
    let pair = Pair::new();
    let api = Api::on(&pair, &[]);
    api.wait_ready();
    let mut c = Client::connect(api.addr);
    c.send(b"OPTIONS / HTTP/1.1\r\nHost: t\r\nOrigin: http://x.example\r\nAccess-Control-Request-Method: POST\r\n\r\n");
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(r.header("access-control-allow-methods").unwrap().contains("POST"));
    assert!(r.header("access-control-allow-headers").unwrap().contains("Content-Type"));
    for r in [get(api.addr, "/"), get(api.addr, "/nope"), call(api.addr, "POST", "/", Some("{"))] {
        assert_eq!(r.header("access-control-allow-origin"), Some("*"), "status {}", r.status);
    }

    let listed = Api::on(&pair, &[("CORS_ORIGINS", "https://ok.example")]);
    let mut c = Client::connect(listed.addr);
    c.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\nOrigin: https://ok.example\r\n\r\n");
    let r = c.read_response(false).unwrap();
    assert_eq!(r.header("access-control-allow-origin"), Some("https://ok.example"));
    assert_eq!(r.header("vary"), Some("Origin"));
    c.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\nOrigin: https://evil.example\r\n\r\n");
    assert_eq!(c.read_response(false).unwrap().header("access-control-allow-origin"), None);
}

/// Hash and field names are configurable, to share Redis with the old Go service.
#[test]
fn hash_and_field_flags() {
    let pair = Pair::new();
    pair.master.cmd(&["HSET", "fx", "eur", "0.92"]);
    let api = Api::on(&pair, &[("REDIS_HASH", "fx"), ("REDIS_FIELD", "eur")]);
    api.wait_ready();
    wait_until(Duration::from_secs(5), "replicated value", || get(api.addr, "/").status == 200);
    assert_eq!(get(api.addr, "/").json()["current"], 0.92);
    assert_eq!(post_value(api.addr, 0.95).status, 200);
    assert_eq!(pair.master.cmd(&["HGET", "fx", "eur"]), "0.95");
    assert_eq!(pair.master.hget(), "(nil)");
}

/// Passwords come from env and files, work, and never reach argv or the log.
#[test]
fn passwords_from_env_and_file_never_logged() {
    let pair = Pair::new();
    let secret = "s3cr3t-do-not-log";
    pair.master.cmd(&["CONFIG", "SET", "requirepass", secret]);
    pair.replica.cmd(&["CONFIG", "SET", "masterauth", secret]);
    pair.replica.cmd(&["CONFIG", "SET", "requirepass", secret]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pass");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let api = Api::on(
        &pair,
        &[("REDIS_PASS_READ", secret), ("REDIS_PASS_WRITE_FILE", file.to_str().unwrap()), ("RUST_LOG", "debug")],
    );
    api.wait_ready();
    assert_eq!(post_value(api.addr, 4.0).status, 200);
    wait_until(Duration::from_secs(5), "GET through the password-protected replica", || {
        get(api.addr, "/").status == 200
    });
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", api.pid())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(secret));
    let logs = api.log_text();
    assert!(logs.contains("password: set"), "{logs}");
    assert!(!logs.contains(secret), "{logs}");

    let wrong = Api::on(&pair, &[("REDIS_PASS_WRITE", "wrong")]);
    let r = post_value(wrong.addr, 1.0);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(!wrong.log_text().contains(secret));
}

/// /metrics exposes requests by route and status, latency, connections and readiness.
#[test]
fn metrics_page() {
    let pair = Pair::new();
    let api = Api::on(&pair, &[]);
    api.wait_ready();
    get(api.addr, "/");
    post_value(api.addr, 1.0);
    let page = get(api.addr, "/metrics");
    assert_eq!(page.status, 200);
    let text = page.text();
    for needle in [
        "redis_api_http_requests_total{route=\"value\",status=\"404\"} 1",
        "redis_api_http_requests_total{route=\"value\",status=\"200\"} 1",
        "redis_api_http_request_duration_seconds_bucket",
        "redis_api_http_requests_in_flight",
        "redis_api_http_connections_open",
        "redis_api_http_connections_refused_total",
        "redis_api_redis_errors_total",
        "redis_api_deadline_expired_total",
        "redis_api_replica_link_up 1",
        "redis_api_ready 1",
        "redis_api_master_reachable 1",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

/// A bad setting exits non-zero with a message naming the flag; --help lists every flag.
#[test]
fn bad_config_exits_naming_the_flag() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_redis-api"))
        .env_clear()
        .env("REDIS_ADDR_WRITE", "127.0.0.1:1")
        .args(["--deadline", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(cli::EXIT_USAGE.into()), "bad settings exit 2, as in every tool");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--deadline (DEADLINE): expected a duration") && stderr.lines().count() == 1, "{stderr}");
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_redis-api")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    for f in redis_api::config::FLAGS {
        assert!(help.contains(f.name) && f.env.is_some_and(|e| help.contains(e)), "{}", f.name);
    }
}

/// The README's configuration table is the one generated from FLAGS, every column of every
/// row (flag, env twin, default, meaning), so neither can change without the other.
#[test]
fn readme_config_table_is_generated_from_flags() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table = cli::markdown_table(redis_api::config::FLAGS);
    assert!(readme.contains(&table), "README's configuration table differs from FLAGS; it should read:\n{table}");
    for f in redis_api::config::FLAGS {
        assert!(f.env.is_some(), "{} has no env twin", f.name);
    }
}

/// Many concurrent keep-alive clients: GETs that wait behind a read in flight are answered by
/// that read's sender (deferred, not parked), and every client gets every answer right, in
/// order (GET, HEAD, and a pipelined pair), each counted once.
#[test]
fn concurrent_keep_alive_gets_are_all_answered() {
    const CLIENTS: usize = 32;
    const ROUNDS: usize = 150;
    let pair = Pair::new();
    let api = Api::serving(&pair, &[], 3.5);
    let counted =
        |status: &str| api.metric("redis_api_http_requests_total", &format!("route=\"value\",status=\"{status}\""));
    let (ok_before, deferred_before) = (counted("200"), api.metric("redis_api_value_reads_deferred_total", ""));
    let addr = api.addr;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for round in 0..ROUNDS {
                    match (i + round) % 10 {
                        0 => {
                            let r = c.request("HEAD", "/", None);
                            assert_eq!(r.status, 200);
                            assert!(r.body.is_empty() && r.header("content-length").is_some());
                        }
                        1 => {
                            let get = request_bytes("GET", "/", None, "");
                            c.send(format!("{get}{get}").as_bytes());
                            for _ in 0..2 {
                                let r = c.read_response(false).expect("answer");
                                assert_eq!((r.status, r.json()), (200, serde_json::json!({ "current": 3.5 })));
                            }
                        }
                        _ => {
                            let r = c.request("GET", "/", None);
                            assert_eq!((r.status, r.json()), (200, serde_json::json!({ "current": 3.5 })));
                            assert_eq!(r.header("age"), Some("0"));
                        }
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("every answer right");
    }
    // 2 requests in the pipelined rounds: 1 in 10 rounds.
    let requests = (CLIENTS * ROUNDS + CLIENTS * ROUNDS / 10) as f64;
    assert_eq!(counted("200") - ok_before, requests, "each GET counted once");
    assert!(api.metric("redis_api_value_reads_deferred_total", "") - deferred_before > 0.0, "no GET was deferred");
}
