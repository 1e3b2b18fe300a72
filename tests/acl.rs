//! ACL users per role: the users of `k8s/acl/*.acl.template`, rendered the way
//! `scripts/k8s.sh secret` renders them, loaded into real `redis-server` processes. Each role
//! can do its job and nothing else, and the API runs as those users.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use testkit::*;

const HASH: &str = "currency";
const CHANNEL: &str = "currency:current-value:changed";

/// What no app user may reach (the issue names the first seven).
const FORBIDDEN: &[&[&str]] = &[
    &["FLUSHALL"],
    &["FLUSHDB"],
    &["CONFIG", "GET", "port"],
    &["DEBUG", "SLEEP", "0"],
    &["KEYS", "*"],
    &["SHUTDOWN", "NOSAVE"],
    &["MODULE", "LIST"],
    &["ACL", "LIST"],
    &["EVAL", "return 1", "0"],
    &["SCRIPT", "FLUSH"],
    &["FUNCTION", "FLUSH"],
    &["REPLICAOF", "NO", "ONE"],
    &["SAVE"],
    &["BGSAVE"],
    &["SET", "x", "1"],
    &["DEL", "currency"],
    &["CLIENT", "KILL", "TYPE", "normal"],
];

struct Passwords {
    writer: String,
    replication: String,
    reader: String,
    /// The operator's `admin` user of the master's template (ACL LOAD only).
    operator: String,
    /// The harness's own user `harness` (appended by the tests only: never part of a template).
    admin: String,
}

fn random_hex() -> String {
    let mut buf = [0u8; 16];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).expect("urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex SHA-256, as `scripts/k8s.sh` computes it (coreutils).
fn sha256(text: &str) -> String {
    let mut child =
        Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("sha256sum (coreutils)");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), text.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().expect("hash").to_owned()
}

/// A template rendered: comment and blank lines dropped (an ACL file allows neither), each
/// `@NAME@` replaced; then the harness's admin user.
fn render(template: &str, pw: &Passwords, dir: &Path) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/acl").join(template);
    let text = std::fs::read_to_string(&path).expect("template");
    let mut out = String::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let line = line
            .replace("@HASH@", HASH)
            .replace("@CHANNEL@", CHANNEL)
            .replace("@WRITER_SHA256@", &sha256(&pw.writer))
            .replace("@REPLICATION_SHA256@", &sha256(&pw.replication))
            .replace("@READER_SHA256@", &sha256(&pw.reader))
            .replace("@ADMIN_SHA256@", &sha256(&pw.operator));
        assert!(!line.contains('@') || line.contains("+@") || line.contains("-@"), "unreplaced: {line}");
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(&format!("user harness on >{} ~* &* +@all\n", pw.admin));
    let file = dir.join(template.trim_end_matches(".template"));
    std::fs::write(&file, &out).expect("write acl");
    file.to_str().expect("utf8 path").to_owned()
}

/// A master and a replica under the rendered users; the replica links as `replication`.
struct AclPair {
    master: Redis,
    replica: Redis,
    pw: Passwords,
    dir: tempfile::TempDir,
    /// The master's ACL file (the Secret's `master.acl`, as mounted).
    master_acl: String,
}

impl AclPair {
    fn new() -> AclPair {
        AclPair::with_master_args(&[])
    }

    /// As [`AclPair::new`], the master started with `extra` arguments too.
    fn with_master_args(extra: &[&str]) -> AclPair {
        let pw = Passwords {
            writer: random_hex(),
            replication: random_hex(),
            reader: random_hex(),
            operator: random_hex(),
            admin: random_hex(),
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let master_acl = render("master.acl.template", &pw, dir.path());
        let replica_acl = render("replica.acl.template", &pw, dir.path());
        // As the Secret's replica-auth.conf: the replication password never on argv.
        let auth = dir.path().join("replica-auth.conf");
        std::fs::write(&auth, format!("masteruser replication\nmasterauth {}\n", pw.replication)).expect("write");
        let mut args = vec!["--aclfile", master_acl.as_str()];
        args.extend_from_slice(extra);
        let master = Redis::with_auth(&args, "harness", &pw.admin);
        let port = master.port.to_string();
        let replica = Redis::with_auth(
            &["--aclfile", &replica_acl, "--replicaof", "127.0.0.1", &port, "--include", auth.to_str().unwrap()],
            "harness",
            &pw.admin,
        );
        replica.wait_synced();
        AclPair { master, replica, pw, dir, master_acl }
    }

    /// The API on this pair, reading as `reader` and writing as `write_user` with
    /// `write_password` (both passwords from files), with `extra` env.
    fn api(&self, write_user: &str, write_password: &str, extra: &[(&str, &str)]) -> Api {
        let read_pw = self.file("read-pw", &self.pw.reader);
        // One file per password: two APIs may write with different ones (rotation).
        let write_pw = self.file(&format!("write-pw-{}", &write_password[..8]), write_password);
        let mut env = vec![
            ("REDIS_USER_READ", "reader"),
            ("REDIS_USER_WRITE", write_user),
            ("REDIS_PASS_READ_FILE", read_pw.as_str()),
            ("REDIS_PASS_WRITE_FILE", write_pw.as_str()),
        ];
        env.extend_from_slice(extra);
        Api::start(&self.replica.addr(), &self.master.addr(), &env)
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.to_str().expect("utf8").to_owned()
    }
}

/// A connection logged in as `user`, or the login error.
fn login(redis: &Redis, user: &str, password: &str) -> Result<redis::Connection, String> {
    let client = redis::Client::open(format!("redis://{user}:{password}@127.0.0.1:{}/", redis.port)).expect("url");
    client.get_connection_with_timeout(Duration::from_secs(2)).map_err(|e| e.to_string())
}

/// The reply as text, or the error's code and text.
fn run(conn: &mut redis::Connection, args: &[&str]) -> Result<String, String> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query::<redis::Value>(conn).map(|v| format!("{v:?}")).map_err(|e| format!("{:?} {e}", e.code()))
}

fn assert_denied(conn: &mut redis::Connection, user: &str, args: &[&str]) {
    match run(conn, args) {
        Err(e) => assert!(e.contains("NOPERM"), "{user}: {args:?} failed, but not for lack of permission: {e}"),
        Ok(v) => panic!("{user} may run {args:?} (answered {v})"),
    }
}

/// The writer can set the value and announce it, in a transaction, and nothing else; the
/// replication user can only sync (proved by the replica's sync); the reader can read the value,
/// the replication state and the channel, and nothing else; the default user is off on both.
#[test]
fn each_role_does_its_job_and_nothing_else() {
    let p = AclPair::new();

    let mut w = login(&p.master, "writer", &p.pw.writer).expect("writer logs in");
    assert!(run(&mut w, &["PING"]).is_ok());
    let mut tx = redis::pipe();
    tx.atomic().cmd("HSET").arg(HASH).arg("current-value").arg("1.25").ignore();
    tx.cmd("PUBLISH").arg(CHANNEL).arg("1.25").ignore();
    tx.query::<()>(&mut w).expect("writer: MULTI/HSET/PUBLISH/EXEC");
    assert_denied(&mut w, "writer", &["HSET", "other", "f", "1"]);
    assert_denied(&mut w, "writer", &["PUBLISH", "other", "1"]);
    assert_denied(&mut w, "writer", &["HGET", HASH, "current-value"]);
    assert_denied(&mut w, "writer", &["INFO"]);

    let mut repl = login(&p.master, "replication", &p.pw.replication).expect("replication logs in");
    assert!(run(&mut repl, &["PING"]).is_ok());
    assert_denied(&mut repl, "replication", &["HSET", HASH, "current-value", "2"]);
    assert_denied(&mut repl, "replication", &["HGET", HASH, "current-value"]);

    let mut r = login(&p.replica, "reader", &p.pw.reader).expect("reader logs in");
    wait_until(Duration::from_secs(10), "the write replicated", || {
        run(&mut r, &["HGET", HASH, "current-value"]).is_ok_and(|v| v.contains("1.25"))
    });
    assert!(run(&mut r, &["INFO", "replication", "persistence"]).is_ok_and(|v| v.contains("role:slave")));
    assert!(run(&mut r, &["PING"]).is_ok());
    assert_denied(&mut r, "reader", &["HGET", "other", "f"]);
    assert_denied(&mut r, "reader", &["HSET", HASH, "current-value", "3"]);
    // Each on a connection of its own: a subscribed connection takes no other command.
    let mut sub = login(&p.replica, "reader", &p.pw.reader).expect("reader logs in");
    let confirmed = run(&mut sub, &["SUBSCRIBE", CHANNEL]);
    assert!(confirmed.as_ref().is_ok_and(|v| v.contains("subscribe")), "reader: SUBSCRIBE {CHANNEL}: {confirmed:?}");
    let mut sub = login(&p.replica, "reader", &p.pw.reader).expect("reader logs in");
    assert_denied(&mut sub, "reader", &["SUBSCRIBE", "other"]);

    for (server, user, conn) in [(&p.master, "writer", &mut w), (&p.master, "replication", &mut repl)] {
        for args in FORBIDDEN {
            assert_denied(conn, user, args);
        }
        assert!(server.ping(), "{user} stopped the master");
    }
    for args in FORBIDDEN {
        assert_denied(&mut r, "reader", args);
    }
    assert!(p.replica.ping(), "the reader stopped the replica");

    for server in [&p.master, &p.replica] {
        let anonymous = redis::Client::open(format!("redis://127.0.0.1:{}/", server.port)).expect("url");
        let mut c = anonymous.get_connection_with_timeout(Duration::from_secs(2)).expect("connect");
        let e = run(&mut c, &["PING"]).expect_err("the default user is off");
        assert!(e.contains("NOAUTH"), "{e}");
        let e = run(&mut c, &["AUTH", "any-password"]).expect_err("AUTH as the default user");
        assert!(e.contains("WRONGPASS"), "{e}");
    }
    // The roles do not cross servers: the writer does not exist on the replica, the reader not
    // on the master.
    assert!(login(&p.replica, "writer", &p.pw.writer).is_err());
    assert!(login(&p.master, "reader", &p.pw.reader).is_err());
}

/// The API reads as `reader` and writes as `writer` (passwords from files), in both read modes:
/// POST, GET (memory mode's change notice arrives over the reader's subscription), /readyz.
#[test]
fn api_runs_as_its_acl_users() {
    let p = AclPair::new();
    for (mode, value) in [("replica", 1.5), ("memory", 2.5)] {
        // Only the change notice (the reader's subscription) can bring the new value.
        let api = p.api("writer", &p.pw.writer, &[("READ_MODE", mode), ("MEMORY_REFRESH", "10m")]);
        api.wait_ready();
        let r = post_value(api.addr, value);
        assert_eq!(r.status, 200, "{mode}: POST as writer: {}", r.text());
        wait_until(Duration::from_secs(10), "GET serves the new value", || {
            let r = get(api.addr, "/");
            r.status == 200 && r.json()["current"].as_f64() == Some(value)
        });
        assert_eq!(get(api.probe_addr, "/readyz").status, 200, "{mode}");
        assert!(!api.log_text().contains(&p.pw.writer) && !api.log_text().contains(&p.pw.reader));
    }
}

/// A role mix-up (the API writes as `replication`: a valid login whose commands are denied) is
/// a clear 500 naming the refusal, every time, and never opens the write circuit breaker (the
/// master answered: it is not down).
#[test]
fn a_denied_write_is_a_clear_500_and_the_breaker_stays_closed() {
    let p = AclPair::new();
    let api = p.api("replication", &p.pw.replication, &[("BREAKER_FAILURES", "3")]);
    api.wait_ready();
    for i in 0..8 {
        let r = post_value(api.addr, 7.0);
        assert_eq!(r.status, 500, "POST #{i}: {}", r.text());
        assert!(r.error().contains("NOPERM"), "POST #{i}: the reason is not said: {}", r.error());
        assert_eq!(r.header("retry-after"), None, "a refused command is not worth a retry");
    }
    assert_eq!(api.metric("redis_api_master_breaker_state", ""), 0.0, "the breaker opened");
    assert!(p.master.cmd(&["HGET", HASH, "current-value"]).contains("nil"), "a denied write was applied");
}

/// With the default user off, an API left without its user names fails to log in, says so
/// (503 naming the refused credentials, /readyz 503), and never serves.
#[test]
fn without_its_users_the_api_is_refused_clearly() {
    let p = AclPair::new();
    let read_pw = p.file("read-pw", &p.pw.reader);
    let write_pw = p.file("write-pw", &p.pw.writer);
    let api = Api::start(
        &p.replica.addr(),
        &p.master.addr(),
        &[("REDIS_PASS_READ_FILE", &read_pw), ("REDIS_PASS_WRITE_FILE", &write_pw), ("REDIS_WAIT", "60s")],
    );
    wait_until(Duration::from_secs(10), "/readyz names the refusal", || {
        let r = get(api.probe_addr, "/readyz");
        r.status == 503 && r.text().contains("WRONGPASS")
    });
    let r = post_value(api.addr, 3.0);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.error().contains("WRONGPASS"), "the refusal is not said: {}", r.error());
    assert_eq!(get(api.addr, "/").status, 503);
}

/// The master restarted from its AOF keeps every acknowledged POST under the ACL users. With a
/// replica attached the POST's MULTI/HSET/PUBLISH/EXEC reaches the AOF as a transaction, and
/// Redis replays it as the default user, re-checking EXEC against that user's ACL
/// (redis/redis#14541): with `-@all` alone every acknowledged write was dropped at the restart.
#[test]
fn acknowledged_writes_survive_a_master_restart() {
    let mut p = AclPair::with_master_args(&["--appendonly", "yes", "--appendfsync", "always"]);
    let api = p.api("writer", &p.pw.writer, &[]);
    for value in [1.0, 2.0, 3.5] {
        let r = post_value(api.addr, value);
        assert_eq!(r.status, 200, "POST {value}: {}", r.text());
    }
    p.master.kill();
    p.master.restart();
    assert_eq!(p.master.cmd(&["HGET", HASH, "current-value"]), "3.5", "acknowledged writes lost on restart");
}

/// Rotating the writer's password without downtime (README "Security"): the ACL file holds the
/// old and the new hash, the operator's `admin` makes the master re-read it (ACL LOAD, its only
/// command besides PING); pods on the old password and pods on the new one both write meanwhile,
/// without one failed POST; then the old hash goes and only the new password works.
#[test]
fn writer_password_rotates_without_a_failed_write() {
    let p = AclPair::new();
    let new = random_hex();
    let old_api = p.api("writer", &p.pw.writer, &[]);
    let writes = |a: &Api, n: usize| -> Vec<u16> { (0..n).map(|i| post_value(a.addr, i as f64).status).collect() };
    assert!(writes(&old_api, 5).iter().all(|s| *s == 200));

    let mut admin = login(&p.master, "admin", &p.pw.operator).expect("the operator logs in");
    for args in FORBIDDEN {
        assert_denied(&mut admin, "admin", args);
    }
    assert_denied(&mut admin, "admin", &["ACL", "SETUSER", "writer", "nopass"]);
    assert_denied(&mut admin, "admin", &["HSET", HASH, "current-value", "1"]);
    let acl = std::fs::read_to_string(&p.master_acl).expect("acl");
    let (old_hash, new_hash) = (sha256(&p.pw.writer), sha256(&new));
    // Step 1: both hashes, re-read by the master.
    std::fs::write(&p.master_acl, acl.replace(&format!("#{old_hash}"), &format!("#{old_hash} #{new_hash}")))
        .expect("write acl");
    assert_eq!(run(&mut admin, &["ACL", "LOAD"]), Ok("ok".into()));
    assert!(writes(&old_api, 20).iter().all(|s| *s == 200), "the old password stopped working too early");
    // Step 2: the pods roll to the new password; old and new write side by side.
    let new_api = p.api("writer", &new, &[]);
    for _ in 0..10 {
        assert!(writes(&old_api, 2).iter().chain(writes(&new_api, 2).iter()).all(|s| *s == 200));
    }
    drop(old_api);
    // Step 3: the old hash goes.
    std::fs::write(&p.master_acl, acl.replace(&format!("#{old_hash}"), &format!("#{new_hash}"))).expect("write acl");
    let mut admin = login(&p.master, "admin", &p.pw.operator).expect("the operator logs in");
    assert_eq!(run(&mut admin, &["ACL", "LOAD"]), Ok("ok".into()));
    assert!(writes(&new_api, 20).iter().all(|s| *s == 200), "the new password failed after the old one went");
    assert!(login(&p.master, "writer", &p.pw.writer).is_err(), "the old password still works");
}
