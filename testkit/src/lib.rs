//! The tests' shared harness (a dev-dependency of the server, the kit and the tools): real
//! `redis-server` processes on loopback ports in temp dirs (talked to with a small RESP client
//! of its own, so no Redis client crate is needed), the real `redis-api` binary and the kit's
//! processes (bound to port 0, their address read from their log), a raw HTTP/1.1 client over
//! TCP, `wait_until`, and `serial()` for tests that must not overlap. Nothing here mocks Redis.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The redis-api binary: `REDIS_API_BIN`, else the one beside the running test (a test
/// binary lives in `target/<profile>/deps/`; `cargo test` builds the package's binaries there,
/// `cargo test --workspace` the server's for every member's tests).
pub fn api_bin() -> std::path::PathBuf {
    if let Some(bin) = std::env::var_os("REDIS_API_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps").join("redis-api");
    assert!(bin.exists(), "{} missing: cargo build -p redis-api (or set REDIS_API_BIN)", bin.display());
    bin
}

static SERIAL: Mutex<()> = Mutex::new(());

/// Held by tests that must not overlap within one test binary (timing, ports, CPU).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A port nobody listens on right now: for an address that must refuse connections. A server
/// a test starts binds port 0 instead and reports its address ([`Listening`]), or retries on
/// another port when this one was taken meanwhile ([`Redis`]).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// Polls `f` every 20 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    if poll(timeout, || if f() { Ok(()) } else { Err(String::new()) }).is_err() {
        panic!("timed out after {timeout:?} waiting for {what}");
    }
}

/// Polls `f` every 20 ms until it returns `Ok` or `timeout` passes; then its last `Err`.
pub fn poll(timeout: Duration, mut f: impl FnMut() -> Result<(), String>) -> Result<(), String> {
    let until = Instant::now() + timeout;
    let mut last = Err("not tried".to_owned());
    while Instant::now() < until {
        last = f();
        if last.is_ok() {
            return last;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    last
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").args([format!("-{sig}"), pid.to_string()]).status().map(|s| s.success());
    assert!(matches!(ok, Ok(true)), "kill -{sig} {pid}");
}

/// Stops this whole test process (SIGSTOP) for 200 ms and continues it (SIGCONT), once the
/// thread `tid` (from [`thread_id`]) sleeps: what a cgroup freezer, `docker pause` or a debugger
/// does. On Linux a socket read with a timeout then fails with EINTR, handler or not. Every test
/// running in the same binary meanwhile stalls too, and its timed reads see EINTR as well.
pub fn stop_and_continue_once_asleep(tid: &str) {
    let stat = format!("/proc/self/task/{tid}/stat");
    wait_until(Duration::from_secs(5), "the thread asleep", || {
        let s = std::fs::read_to_string(&stat).unwrap_or_default();
        s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('S'))
    });
    let pid = std::process::id().to_string();
    // The continue is in a trap: however the shell ends, it does not leave this process stopped.
    let script = "trap 'kill -CONT \"$1\"' EXIT; kill -STOP \"$1\"; sleep 0.2";
    let ok = Command::new("sh").args(["-c", script, "sh", &pid]).status();
    assert!(matches!(ok, Ok(s) if s.success()), "stop and continue: {ok:?}");
}

/// The calling thread's id, as `/proc/self/task/` names it.
pub fn thread_id() -> String {
    let link = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
    link.file_name().expect("<pid>/task/<tid>").to_string_lossy().into_owned()
}

/// A `redis-server` child process.
pub struct Redis {
    pub port: u16,
    /// The TLS port, for a server started with [`Redis::start_tls`] (it keeps `port` too).
    pub tls_port: Option<u16>,
    dir: tempfile::TempDir,
    child: Option<Child>,
    args: Vec<String>,
    /// The user and password the harness itself logs in with (servers whose default user is
    /// off); `None`: the default user, no password.
    auth: Option<(String, String)>,
}

impl Redis {
    /// A master without persistence.
    pub fn master() -> Redis {
        Redis::start(Vec::new())
    }

    /// A replica of `master`, started but not waited for.
    pub fn replica_of_nowait(master: &Redis) -> Redis {
        Redis::start(vec!["--replicaof".into(), "127.0.0.1".into(), master.port.to_string()])
    }

    /// A replica of `master` with extra `redis-server` arguments (config lines as
    /// `--name value...`), started but not waited for.
    pub fn replica_of_with(master: &Redis, extra: &[&str]) -> Redis {
        let mut args = vec!["--replicaof".to_owned(), "127.0.0.1".into(), master.port.to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Redis::start(args)
    }

    /// The server's working directory (where a sync's RDB file lands).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// A replica of `master`, synced.
    pub fn replica_of(master: &Redis) -> Redis {
        let r = Redis::replica_of_nowait(master);
        r.wait_synced();
        r
    }

    /// A server that listens for TLS on `tls_port` as well as plaintext on `port` (the harness's
    /// own commands use that one), with extra `redis-server` arguments: `--tls-cert-file`,
    /// `--tls-key-file`, `--tls-ca-cert-file`, `--tls-auth-clients`, ...
    pub fn start_tls(extra: &[&str]) -> Redis {
        Redis::launch_new(extra.iter().map(|s| s.to_string()).collect(), None, true)
    }

    /// A replica of `master`'s TLS port (`--tls-replication yes`) that listens for TLS itself
    /// too, with the TLS arguments it needs (`--tls-cert-file`, `--tls-key-file`,
    /// `--tls-ca-cert-file`, ...), not waited for.
    pub fn replica_of_tls(master: &Redis, extra: &[&str]) -> Redis {
        let port = master.tls_port.expect("a TLS master").to_string();
        let mut args =
            vec!["--replicaof".to_owned(), "127.0.0.1".into(), port, "--tls-replication".into(), "yes".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Redis::launch_new(args, None, true)
    }

    /// A server with extra `redis-server` arguments that the harness reaches as `user` with
    /// `password` (e.g. under an `--aclfile` that disables the default user).
    pub fn with_auth(extra: &[&str], user: &str, password: &str) -> Redis {
        Redis::launch_new(extra.iter().map(|s| s.to_string()).collect(), Some((user.into(), password.into())), false)
    }

    fn start(extra: Vec<String>) -> Redis {
        Redis::launch_new(extra, None, false)
    }

    fn launch_new(extra: Vec<String>, auth: Option<(String, String)>, tls: bool) -> Redis {
        let mut args: Vec<String> = [
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--repl-diskless-sync-delay",
            "0",
            "--enable-debug-command",
            "local",
            "--protected-mode",
            "yes",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra);
        let mut r = Redis {
            port: 0,
            tls_port: tls.then_some(0),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
            args,
            auth,
        };
        r.launch();
        r
    }

    /// `--tls-port N` for a TLS server, else nothing.
    fn tls_args(&self) -> Vec<String> {
        self.tls_port.map(|p| vec!["--tls-port".to_owned(), p.to_string()]).unwrap_or_default()
    }

    fn launch(&mut self) {
        for _ in 0..5 {
            self.port = free_port();
            self.tls_port = self.tls_port.map(|_| free_port());
            if self.start_here() {
                return;
            }
        }
        panic!("redis-server did not start");
    }

    /// Starts the server on its ports and waits (up to 5 s) until it answers as this process:
    /// false (and killed) when it exited or did not. Another test's server may take a port
    /// between `free_port` and the bind; ours then exits while theirs answers PING, so what
    /// answers must give our process id.
    fn start_here(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--dir", self.dir.path().to_str().unwrap()])
            .args(self.tls_args())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if self.is_ours() {
                return true;
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                break; // port taken meanwhile
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        false
    }

    /// Whether the server answering on the port is this object's process.
    fn is_ours(&self) -> bool {
        let Some(pid) = self.child.as_ref().map(Child::id) else { return false };
        let own = format!("process_id:{pid}");
        self.cmd(&["INFO", "server"]).lines().any(|l| l.trim() == own)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// One command on a new connection (as the harness user, if the server has one).
    fn call(&self, args: &[&str]) -> Result<Reply, String> {
        let mut conn = RespConn::open(&self.addr(), Duration::from_secs(5))?;
        if let Some((user, password)) = &self.auth
            && let Reply::Error(e) = conn.call(&["AUTH", user, password])?
        {
            return Err(e);
        }
        conn.call(args)
    }

    pub fn ping(&self) -> bool {
        matches!(self.call(&["PING"]), Ok(Reply::Simple(_)))
    }

    /// Runs a command and returns the reply as text (errors as text too: `ERR ...`).
    pub fn cmd(&self, args: &[&str]) -> String {
        match self.call(args) {
            Ok(reply) => reply.to_string(),
            Err(e) => format!("ERR {e}"),
        }
    }

    pub fn hget(&self) -> String {
        self.cmd(&["HGET", "currency", "current-value"])
    }

    pub fn wait_synced(&self) {
        wait_until(Duration::from_secs(20), "replica sync", || {
            let info = self.cmd(&["INFO", "replication"]);
            info.contains("master_link_status:up") && info.contains("master_sync_in_progress:0")
        });
    }

    pub fn stop(&self) {
        signal(self.pid(), "STOP");
    }

    pub fn cont(&self) {
        signal(self.pid(), "CONT");
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the same server again (same args, new process, same port if still free).
    pub fn restart(&mut self) {
        self.kill();
        assert!(self.start_here(), "redis restart: not up as itself on port {} within 5 s", self.port);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A stopped process must be continued to die promptly.
            let _ = Command::new("kill").args(["-CONT", &c.id().to_string()]).status();
        }
        self.kill();
    }
}

/// A master and a synced replica.
pub struct Pair {
    pub master: Redis,
    pub replica: Redis,
}

impl Pair {
    #[allow(clippy::new_without_default)] // starts two processes: not a default value
    pub fn new() -> Pair {
        let master = Redis::master();
        let replica = Redis::replica_of(&master);
        Pair { master, replica }
    }
}

/// The `redis-api` binary as a child process.
pub struct Api {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// The probe listener's address (`/healthz`, `/readyz`, `/metrics`).
    pub probe_addr: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
    /// The thread that collects `logs`; it ends at the log's end, once the process is gone.
    log_reader: Option<std::thread::JoinHandle<()>>,
}

impl Api {
    /// Starts the API on a free port reading from `read`, writing to `write`, with extra env.
    pub fn start(read: &str, write: &str, env: &[(&str, &str)]) -> Api {
        let mut cmd = Command::new(api_bin());
        cmd.env_clear()
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("PROBE_LISTEN", "127.0.0.1:0")
            .env("REDIS_ADDR_READ", read)
            .env("REDIS_ADDR_WRITE", write)
            .env("HEALTH_INTERVAL", "100ms")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn redis-api");
        let (logs, listening, log_reader) = follow_log(&mut child);
        let (mut addr, mut probe_addr) = (None, None);
        let until = Instant::now() + Duration::from_secs(10);
        while addr.is_none() || probe_addr.is_none() {
            let left = until.saturating_duration_since(Instant::now());
            let (line, a) = listening.recv_timeout(left).expect("redis-api did not start listening");
            if line.contains("probes listening on ") { probe_addr = Some(a) } else { addr = Some(a) }
        }
        Api {
            child: Some(child),
            addr: addr.unwrap(),
            probe_addr: probe_addr.unwrap(),
            logs,
            log_reader: Some(log_reader),
        }
    }

    /// Starts the API on `pair`.
    pub fn on(pair: &Pair, env: &[(&str, &str)]) -> Api {
        Api::start(&pair.replica.addr(), &pair.master.addr(), env)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits up to 20 s for `/readyz` 200; a timeout says why the server was not ready (the
    /// last `/readyz` body) and what it logged, so a rare failure can be read from CI's output.
    pub fn wait_ready(&self) {
        let ready = poll(Duration::from_secs(20), || {
            let r = get(self.addr, "/readyz");
            if r.status == 200 { Ok(()) } else { Err(format!("{} {}", r.status, r.text())) }
        });
        if let Err(last) = ready {
            panic!("timed out after 20s waiting for /readyz 200; the last: {last}\nits log:\n{}", self.log_text());
        }
    }

    /// An API on `pair` with `env`, ready and serving `value`: posted through it, read back from
    /// the replica.
    pub fn serving(pair: &Pair, env: &[(&str, &str)], value: f64) -> Api {
        let api = Api::on(pair, env);
        api.wait_ready();
        api.set_and_see(value);
        api
    }

    /// Posts `value` through the API and waits until GET serves it.
    pub fn set_and_see(&self, value: f64) {
        assert_eq!(post_value(self.addr, value).status, 200);
        wait_until(Duration::from_secs(5), "value replicated", || {
            let r = get(self.addr, "/");
            r.status == 200 && r.json()["current"] == value
        });
    }

    pub fn signal(&self, sig: &str) {
        signal(self.pid(), sig);
    }

    /// Stops the API (SIGSTOP) for `d` and continues it (SIGCONT): a pause, as `docker pause` or
    /// a cgroup freezer makes one. Its reads that have a timeout end with EINTR.
    pub fn pause(&self, d: Duration) {
        self.signal("STOP");
        std::thread::sleep(d);
        self.signal("CONT");
    }

    /// Waits for the process to exit, and for its log to be read to the end.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let until = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                if let Some(reader) = self.log_reader.take() {
                    let _ = reader.join();
                }
                return status;
            }
            assert!(Instant::now() < until, "redis-api did not exit within {timeout:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Sum of the samples of metric `name` whose labels contain `labels`.
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        let page = String::from_utf8(get(self.addr, "/metrics").body).expect("utf8");
        page.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `error` field of a JSON error body.
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_else(|| panic!("no error field: {}", self.text())).to_owned()
    }
}

/// A raw HTTP/1.1 client connection.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream, buf: Vec::new() }
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        Client { stream, buf: Vec::new() }
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).expect("send");
    }

    /// Sends a request with a body; `Host` added.
    pub fn request(&mut self, method: &str, path: &str, body: Option<&str>) -> Resp {
        self.send(request_bytes(method, path, body, "").as_bytes());
        self.read_response(method == "HEAD").expect("response")
    }

    /// Reads one response; `None` if the server closed the connection first.
    pub fn read_response(&mut self, head_only: bool) -> Option<Resp> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(len) = resp.parse(&self.buf).expect("valid response head") {
                let status = resp.code.expect("code");
                let headers: Vec<(String, String)> = resp
                    .headers
                    .iter()
                    .map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned()))
                    .collect();
                let cl: usize = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .map(|(_, v)| v.parse().expect("content-length"))
                    .unwrap_or(0);
                let body_len = if head_only || status == 100 || status == 204 { 0 } else { cl };
                while self.buf.len() < len + body_len {
                    if self.fill() == 0 {
                        panic!("connection closed inside a response body");
                    }
                }
                let body = self.buf[len..len + body_len].to_vec();
                self.buf.drain(..len + body_len);
                return Some(Resp { status, headers, body });
            }
            if self.fill() == 0 {
                assert!(
                    self.buf.is_empty(),
                    "connection closed inside a response head: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                return None;
            }
        }
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 8192];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return 0,
                // A stop and continue of this process (a cgroup freezer, a debugger) ends a read
                // that has a timeout with EINTR; nothing was read.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// True once the server has closed the connection (EOF or reset).
    pub fn is_closed(&mut self) -> bool {
        self.buf.is_empty() && self.fill() == 0
    }
}

/// The bytes of a request; `extra` holds additional header lines ending in CRLF.
pub fn request_bytes(method: &str, path: &str, body: Option<&str>, extra: &str) -> String {
    match body {
        Some(b) => format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        ),
        None => format!("{method} {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n"),
    }
}

/// One request on a fresh connection.
pub fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Resp {
    Client::connect(addr).request(method, path, body)
}

pub fn get(addr: SocketAddr, path: &str) -> Resp {
    call(addr, "GET", path, None)
}

pub fn post_value(addr: SocketAddr, value: f64) -> Resp {
    call(addr, "POST", "/", Some(&format!("{{\"value\": {value}}}")))
}

/// A Redis reply, as the harness reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Reply>),
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Simple(s) => f.write_str(s),
            Reply::Error(e) => write!(f, "ERR {e}"),
            Reply::Int(i) => write!(f, "{i}"),
            Reply::Bulk(b) => f.write_str(&String::from_utf8_lossy(b)),
            Reply::Nil => f.write_str("(nil)"),
            Reply::Array(items) => {
                let items: Vec<String> = items.iter().map(Reply::to_string).collect();
                write!(f, "[{}]", items.join(", "))
            }
        }
    }
}

/// A connection of the harness's own RESP client, kept open: for a subscriber, a transaction, or
/// a command that outlasts [`Redis::cmd`]'s 5 s. Unlike the `redis` crate's, its reads go on
/// after an EINTR (a stop and continue of the test process: a cgroup freezer, a debugger).
pub struct RespConn(BufReader<TcpStream>);

impl RespConn {
    /// Connects to `addr`; every read waits up to `timeout`.
    pub fn open(addr: &str, timeout: Duration) -> Result<RespConn, String> {
        let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
        Ok(RespConn(BufReader::new(stream)))
    }

    /// Sends `args` as a RESP array of bulk strings and reads one reply.
    pub fn call(&mut self, args: &[&str]) -> Result<Reply, String> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.0.get_mut().write_all(&out).map_err(|e| e.to_string())?;
        read_reply(&mut self.0)
    }

    /// Reads the next reply: a subscriber's next message.
    pub fn next_reply(&mut self) -> Result<Reply, String> {
        read_reply(&mut self.0)
    }
}

fn read_reply(conn: &mut BufReader<TcpStream>) -> Result<Reply, String> {
    let mut line = String::new();
    if conn.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
        return Err("connection closed".into());
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at(1.min(line.len()));
    let number = || rest.parse::<i64>().map_err(|_| format!("bad reply line {line:?}"));
    Ok(match kind {
        "+" => Reply::Simple(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Int(number()?),
        "$" => match number()? {
            n if n < 0 => Reply::Nil,
            n => {
                let mut buf = vec![0u8; n as usize + 2];
                conn.read_exact(&mut buf).map_err(|e| e.to_string())?;
                buf.truncate(n as usize);
                Reply::Bulk(buf)
            }
        },
        "*" => match number()? {
            n if n < 0 => Reply::Nil,
            n => Reply::Array((0..n).map(|_| read_reply(conn)).collect::<Result<_, _>>()?),
        },
        _ => return Err(format!("bad reply line {line:?}")),
    })
}

/// A process's log lines, as collected so far.
pub type Logs = Arc<Mutex<Vec<String>>>;

/// Collects `child`'s stderr lines (its stderr piped) on a thread of its own, and sends each
/// `... listening on ADDR ...` line with its address.
fn follow_log(
    child: &mut Child,
) -> (Logs, std::sync::mpsc::Receiver<(String, SocketAddr)>, std::thread::JoinHandle<()>) {
    let stderr = child.stderr.take().expect("stderr piped");
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let kept = logs.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let addr = line.split("listening on ").nth(1).and_then(|rest| rest.split_whitespace().next());
            if let Some(addr) = addr {
                let _ = tx.send((line.clone(), addr.parse().expect("a listen address")));
            }
            kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(line);
        }
    });
    (logs, rx, reader)
}

/// A process that logs `listening on ADDR` once bound (redis-api, the kit's servers): started
/// on port 0, its address read from its log, so no other process can take its port first.
pub struct Listening {
    pub child: Child,
    pub addr: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Listening {
    /// Spawns `cmd` (its stderr captured) and waits up to 10 s for its first `listening on`.
    pub fn spawn(mut cmd: Command) -> Listening {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        let (logs, listening, _) = follow_log(&mut child);
        let (_, addr) =
            listening.recv_timeout(Duration::from_secs(10)).expect("the process did not log `listening on`");
        Listening { child, addr, logs }
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).join("\n")
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        // A test may have left it stopped (SIGSTOP); quiet if it has exited already.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-CONT", &pid]).stderr(Stdio::null()).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read that a stop and continue of the process interrupts (EINTR) is retried, not fatal:
    /// a CI run once failed on one.
    #[test]
    fn a_read_interrupted_by_stop_and_continue_goes_on() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = Client::connect(listener.local_addr().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            tx.send(thread_id()).unwrap();
            client.read_response(false)
        });
        let (mut server, _) = listener.accept().unwrap();
        stop_and_continue_once_asleep(&rx.recv().unwrap());
        server.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
        let resp = reader.join().expect("the reader survives the interruption").expect("an answer");
        assert_eq!((resp.status, resp.body), (200, b"ok".to_vec()));
    }

    /// A port another server took before ours could bind it is not mistaken for ours.
    #[test]
    fn a_port_taken_by_another_server_is_not_taken_for_ours() {
        let other = Redis::master();
        let mut r = Redis::master();
        r.kill();
        r.port = other.port;
        assert!(!r.start_here(), "another server's PING taken for ours");
        assert!(other.ping(), "the other server untouched");
        r.launch();
        assert!(r.is_ours() && r.port != other.port);
    }
}
