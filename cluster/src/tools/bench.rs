//! `tools bench`: the benchmark, in one run on this machine. redis-api as users run it (default
//! flags) against its yardsticks on the same replica: redis-benchmark (the replica itself, no
//! HTTP), webdis (C, HTTP→Redis), the 2017 talk's design (Go net/http + redigo), and our HTTP
//! layer alone (hello-world). At 50 and 200 client connections, then again beside a noisy
//! neighbour (one busy-looping process). The whole sequence runs `--rounds` times, so a system
//! and its yardstick are measured minutes apart at most: each ratio is taken within a round, and
//! the report gives the median of the rounds with their range (the machine is shared; one
//! measurement can be off by a tenth). Compare ratios within one run only, since everything
//! shares the cores.

use anyhow::{Context, Result, anyhow, bail};
use cli::{Args, Flag, UsageError};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PROGRAM: &str = "tools bench";

const USAGE: &str = "\
tools bench: runs every system, prints figures and ratios.

Usage: tools bench [FLAGS]";

const FOOTER: &str = "Exit status: 0 the run completed (whether or not the targets were met), 1 it could not,\n\
                      2 bad arguments.";

const DURATION: Flag = Flag::new("--duration", "DURATION", "length of each measurement, whole seconds")
    .default("5s")
    .duration_in(Duration::from_secs(1), Duration::from_secs(600));
const ROUNDS: Flag = Flag::new("--rounds", "N", "times the whole sequence runs; figures are medians of the rounds")
    .default("3")
    .number_in(1, 20);
const CONNS: Flag =
    Flag::new("--conns", "N", "client connections of the main round").default("50").number_in(1, 10_000);
const CONNS_HIGH: Flag =
    Flag::new("--conns-high", "N", "client connections of the second round").default("200").number_in(1, 10_000);
const IDLE_CONNS: Flag = Flag::new("--idle-conns", "N", "idle keep-alive connections for the RSS measurement")
    .default("1000")
    .number_in(1, 100_000);
const API_BIN: Flag = Flag::new("--api-bin", "PATH", "redis-api binary").default("target/release/redis-api");
const LOADTEST_BIN: Flag =
    Flag::new("--loadtest-bin", "PATH", "the kit's binary, for hello-world").default("target/release/loadtest");
const PEER_BIN: Flag =
    Flag::new("--peer-bin", "PATH", "the Go peer (unset: that system is skipped, its ratio not judged)");
const RECORD: Flag =
    Flag::new("--record", "FILE", "also append the run (machine, date, table, ratios) to FILE as Markdown");
const FLAGS: &[Flag] = &[DURATION, ROUNDS, CONNS, CONNS_HIGH, IDLE_CONNS, API_BIN, LOADTEST_BIN, PEER_BIN, RECORD];

struct Options {
    duration: u64,
    rounds: usize,
    conns: u32,
    conns_high: u32,
    idle_conns: usize,
    api_bin: PathBuf,
    loadtest_bin: PathBuf,
    peer_bin: Option<PathBuf>,
    record: Option<PathBuf>,
}

fn options(args: &Args) -> Result<Options, UsageError> {
    Ok(Options {
        duration: args.duration(&DURATION)?.as_secs(),
        rounds: args.number(&ROUNDS)?,
        conns: args.number(&CONNS)?,
        conns_high: args.number(&CONNS_HIGH)?,
        idle_conns: args.number(&IDLE_CONNS)?,
        api_bin: args.value(&API_BIN)?,
        loadtest_bin: args.value(&LOADTEST_BIN)?,
        peer_bin: args.opt_value(&PEER_BIN)?,
        record: args.opt_value(&RECORD)?,
    })
}

/// Every child process of the run; killed when the run ends, however it ends.
#[derive(Default)]
struct Children(Vec<(String, Child)>);

impl Children {
    fn spawn(&mut self, name: &str, cmd: &mut Command) -> Result<u32> {
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().with_context(|| name.to_string())?;
        let pid = child.id();
        self.0.push((name.to_owned(), child));
        Ok(pid)
    }

    fn kill(&mut self, name: &str) {
        self.0.retain_mut(|(n, c)| {
            if n != name {
                return true;
            }
            let _ = c.kill();
            let _ = c.wait();
            false
        });
    }

    /// Fails if a child has exited (a crash would otherwise read as a slow system).
    fn check(&mut self) -> Result<()> {
        for (name, c) in &mut self.0 {
            if let Ok(Some(status)) = c.try_wait() {
                bail!("{name} exited ({status})");
            }
        }
        Ok(())
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Result<()> {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(anyhow!("timed out after {}s waiting for {what}", timeout.as_secs()))
}

/// One plain HTTP/1.0 GET; the status code.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: bench\r\n\r\n").ok()?;
    let mut head = String::new();
    BufReader::new(s).read_line(&mut head).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

fn redis(port: u16, args: &[&str]) -> Result<String> {
    let out = Command::new("redis-cli").args(["-p", &port.to_string()]).args(args).output().context("redis-cli")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `calls` of `cmdstat_hget` in the replica's `INFO commandstats`.
fn hget_calls(port: u16) -> Result<u64> {
    let text = redis(port, &["INFO", "commandstats"])?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_hget:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0))
}

/// One measured system.
#[derive(Clone)]
struct Row {
    name: String,
    conns: u32,
    neighbour: bool,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    requests: u64,
    /// 1-based.
    round: usize,
}

/// wrk's latency text (`812.00us`, `1.20ms`, `2.00s`) in milliseconds.
fn wrk_ms(v: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (v, 1.0)
    };
    num.parse::<f64>().ok().map(|n| n * scale)
}

fn parse_wrk(name: &str, text: &str) -> Result<Row> {
    let mut row = Row {
        name: name.into(),
        conns: 0,
        neighbour: false,
        rps: f64::NAN,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        errors: 0,
        requests: 0,
        round: 0,
    };
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["50%", v] => row.p50_ms = wrk_ms(v).unwrap_or(f64::NAN),
            ["99%", v] => row.p99_ms = wrk_ms(v).unwrap_or(f64::NAN),
            ["Requests/sec:", v] => row.rps = v.parse().unwrap_or(f64::NAN),
            ["Non-2xx", "or", "3xx", "responses:", n] => row.errors += n.parse::<u64>().unwrap_or(1),
            [n, "requests", "in", ..] => row.requests = n.parse().unwrap_or(0),
            ["Socket", "errors:", ..] => {
                row.errors +=
                    line.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u64>().ok()).sum::<u64>()
            }
            _ => {}
        }
    }
    if row.rps.is_nan() {
        bail!("{name}: wrk printed no rate:\n{text}");
    }
    Ok(row)
}

struct Bench {
    opts: Options,
    work: PathBuf,
    rows: Vec<Row>,
    /// The round being measured.
    round: usize,
}

impl Bench {
    /// One wrk run of `/` (or `path`) on `port`.
    fn wrk(&mut self, name: &str, port: u16, conns: u32, neighbour: bool, lua: Option<&str>) -> Result<Row> {
        let path = if name.starts_with("webdis") { WEBDIS_PATH } else { "/" };
        let mut cmd = Command::new("wrk");
        cmd.args(["-t1", &format!("-c{conns}"), &format!("-d{}s", self.opts.duration), "--latency"]);
        if let Some(lua) = lua {
            cmd.args(["-s", &self.work.join(lua).to_string_lossy()]);
        }
        let out = cmd.arg(format!("http://127.0.0.1:{port}{path}")).output().context("wrk")?;
        let mut row = parse_wrk(name, &String::from_utf8_lossy(&out.stdout))?;
        row.conns = conns;
        row.neighbour = neighbour;
        row.round = self.round;
        self.rows.push(row.clone());
        Ok(row)
    }

    fn redis_benchmark(&mut self, port: u16, conns: u32, neighbour: bool) -> Result<()> {
        let n = (self.opts.duration * 70_000).to_string();
        let out = Command::new("redis-benchmark")
            .args(["-p", &port.to_string(), "-t", "get", "-c", &conns.to_string(), "-n", &n, "--csv"])
            .output()
            .context("redis-benchmark")?;
        let text = String::from_utf8_lossy(&out.stdout);
        // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
        let line = text
            .lines()
            .find(|l| l.starts_with("\"GET\""))
            .with_context(|| format!("redis-benchmark printed: {text}"))?;
        let f: Vec<f64> = line.split(',').skip(1).filter_map(|v| v.trim_matches('"').parse().ok()).collect();
        let [rps, _, _, p50, _, p99, ..] = f[..] else { bail!("redis-benchmark: {line}") };
        self.rows.push(Row {
            name: "redis-benchmark".into(),
            conns,
            neighbour,
            rps,
            p50_ms: p50,
            p99_ms: p99,
            errors: 0,
            requests: n.parse().unwrap_or(0),
            round: self.round,
        });
        Ok(())
    }

    /// The measurement of `name` at `conns` connections in `round`.
    fn get(&self, round: usize, name: &str, conns: u32, neighbour: bool) -> Option<&Row> {
        self.rows.iter().find(|r| r.round == round && r.name == name && r.conns == conns && r.neighbour == neighbour)
    }

    /// Every round's measurement of `name` at `conns` connections, in round order.
    fn all(&self, name: &str, conns: u32, neighbour: bool) -> Vec<&Row> {
        self.rows.iter().filter(|r| r.name == name && r.conns == conns && r.neighbour == neighbour).collect()
    }
}

/// The client connections of a step: the main round's or the second round's.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Conns {
    Main,
    High,
}

/// The measurements of a run, in order: (system, connections, beside the noisy neighbour).
/// Round 1: every system at the main connection count. Round 2: more client connections than
/// anything is pooled for (and our HTTP layer alone there, hello-world, which shows what a
/// thread per connection costs at that count with no Redis behind it). Round 3: the same GETs
/// beside a noisy neighbour, one busy loop for the whole round. `go-redigo` runs only when the
/// Go peer was given.
const STEPS: [(&str, Conns, bool); 16] = [
    ("redis-benchmark", Conns::Main, false),
    ("webdis-hget", Conns::Main, false),
    ("go-redigo", Conns::Main, false),
    ("hello-world", Conns::Main, false),
    ("api-get", Conns::Main, false),
    ("api-get-memory", Conns::Main, false),
    ("api-post", Conns::Main, false),
    ("api-mix-90-10", Conns::Main, false),
    ("api-get", Conns::High, false),
    ("hello-world", Conns::High, false),
    ("go-redigo", Conns::High, false),
    ("webdis-hget", Conns::High, false),
    ("redis-benchmark", Conns::Main, true),
    ("webdis-hget", Conns::Main, true),
    ("go-redigo", Conns::Main, true),
    ("api-get", Conns::Main, true),
];

/// The steps of a run with or without the Go peer.
fn steps(with_peer: bool) -> Vec<(&'static str, Conns, bool)> {
    STEPS.iter().copied().filter(|(name, ..)| with_peer || *name != "go-redigo").collect()
}

/// Seconds the last step, the RSS measurement, takes (connections opened, one request each).
const RSS_S: f64 = 5.0;

/// The line before step `k` of `n` (1-based; step `n` is the RSS measurement, the others take
/// `duration` seconds each): what it measures and the time left, this step's included.
fn step_line(k: usize, n: usize, what: &str, duration: u64) -> String {
    let left = n.saturating_sub(k) as f64 * duration as f64 + RSS_S;
    format!("bench: {}", crate::progress::line("step", k, n, what, &crate::progress::about_left(left)))
}

/// What a measuring step is, for its progress line; `round` is (this round, rounds).
fn step_what(name: &str, conns: u32, neighbour: bool, duration: u64, round: (usize, usize)) -> String {
    let neighbour = if neighbour { ", noisy neighbour" } else { "" };
    format!("round {} of {}: {name}, {conns} connections{neighbour}, {duration} s", round.0, round.1)
}

/// The median of the numbers that are not NaN (NaN when there is none).
fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `min–max` of the numbers that are not NaN, for a figure measured in several rounds.
fn range(values: &[f64], decimals: usize) -> String {
    let v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.len() < 2 {
        return "-".into();
    }
    let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
    format!("{lo:.decimals$}–{hi:.decimals$}")
}

/// VmRSS of `pid` in MB after `n` keep-alive connections each made one request and stay open.
fn idle_rss(port: u16, pid: u32, n: usize) -> Result<f64> {
    let mut socks = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(("127.0.0.1", port)).context("idle connection")?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")?;
        socks.push(s);
    }
    for s in &mut socks {
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).context("idle connection")?;
        if &buf != b"HTTP/1.1 200" {
            bail!("idle connection: answered {:?}", String::from_utf8_lossy(&buf));
        }
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")?;
    Ok(kb / 1024.0)
}

/// webdis's URL for the same read (`HGET currency current-value`).
const WEBDIS_PATH: &str = "/HGET/currency/current-value";

const POST_LUA: &str = r#"wrk.method = "POST"
wrk.body = '{"value": 1.5}'
wrk.headers["Content-Type"] = "application/json"
"#;

const MIX_LUA: &str = r#"-- Formatted in init(): wrk sets the Host header only then.
local n, get, post = 0, nil, nil
function init(args)
  get = wrk.format("GET", "/")
  post = wrk.format("POST", "/", { ["Content-Type"] = "application/json" }, '{"value": 1.5}')
end
function request()
  n = n + 1
  if n % 10 == 0 then return post end
  return get
end
"#;

pub(super) fn run(argv: Vec<OsString>) -> Result<bool> {
    let Some(args) = super::parse(PROGRAM, USAGE, FLAGS, FOOTER, argv, 0)? else { return Ok(true) };
    bench(options(&args)?)?;
    Ok(true)
}

fn bench(opts: Options) -> Result<()> {
    let scratch = super::WorkDir::new("bench")?;
    let work = scratch.path().to_path_buf();
    std::fs::write(work.join("post.lua"), POST_LUA)?;
    std::fs::write(work.join("mix.lua"), MIX_LUA)?;
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut ch = Children::default();

    let master = free_port()?;
    let replica = free_port()?;
    for (name, port, extra) in [("master", master, vec![]), ("replica", replica, vec!["--replicaof", "127.0.0.1", ""])]
    {
        let dir = work.join(name);
        std::fs::create_dir_all(&dir)?;
        let master_port = master.to_string();
        let extra: Vec<&str> = extra.iter().map(|a| if a.is_empty() { master_port.as_str() } else { a }).collect();
        ch.spawn(
            name,
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--dir", &dir.to_string_lossy()])
                .args(extra),
        )?;
        wait_for(name, Duration::from_secs(10), || redis(port, &["PING"]).is_ok_and(|r| r.contains("PONG")))?;
        if name == "master" {
            // Seeded before the replica starts: its first sync carries the value.
            redis(master, &["HSET", "currency", "current-value", "42"])?;
        }
    }
    wait_for("the replica to sync", Duration::from_secs(60), || {
        redis(replica, &["INFO", "replication"]).is_ok_and(|i| i.contains("master_link_status:up"))
    })?;

    let webdis = free_port()?;
    let conf = work.join("webdis.json");
    std::fs::write(
        &conf,
        format!(
            r#"{{"redis_host": "127.0.0.1", "redis_port": {replica}, "http_host": "127.0.0.1", "http_port": {webdis},
 "threads": 2, "pool_size": 20, "daemonize": false, "database": 0, "verbosity": 0, "logfile": "{}"}}"#,
            work.join("webdis.log").display()
        ),
    )?;
    ch.spawn("webdis", Command::new("webdis").arg(&conf))?;
    wait_for("webdis", Duration::from_secs(10), || http_status(webdis, WEBDIS_PATH) == Some(200))?;

    // redis-api exactly as users run it: only the addresses (and ports of this machine) given.
    let api_args = |listen: u16| -> Vec<String> {
        let probe = free_port().unwrap_or(0);
        vec![
            "--listen".into(),
            format!("127.0.0.1:{listen}"),
            "--probe-listen".into(),
            format!("127.0.0.1:{probe}"),
            "--read-redis-addr".into(),
            format!("127.0.0.1:{replica}"),
            "--write-redis-addr".into(),
            format!("127.0.0.1:{master}"),
        ]
    };
    let api = free_port()?;
    let api_pid = ch.spawn("redis-api", Command::new(&opts.api_bin).args(api_args(api)).env("RUST_LOG", "warn"))?;
    wait_for("redis-api /readyz", Duration::from_secs(30), || http_status(api, "/readyz") == Some(200))?;
    let memory = free_port()?;
    ch.spawn(
        "redis-api-memory",
        Command::new(&opts.api_bin).args(api_args(memory)).args(["--read-mode", "memory"]).env("RUST_LOG", "warn"),
    )?;
    wait_for("memory-mode /readyz", Duration::from_secs(30), || http_status(memory, "/readyz") == Some(200))?;
    let hello = free_port()?;
    ch.spawn(
        "hello-world",
        Command::new(&opts.loadtest_bin).args(["hello-world", "--listen", &format!("127.0.0.1:{hello}")]),
    )?;
    wait_for("hello-world", Duration::from_secs(10), || http_status(hello, "/") == Some(200))?;
    let peer = match &opts.peer_bin {
        Some(bin) => {
            let port = free_port()?;
            ch.spawn(
                "go-redigo",
                Command::new(bin).args([
                    "-listen",
                    &format!("127.0.0.1:{port}"),
                    "-redis",
                    &format!("127.0.0.1:{replica}"),
                ]),
            )?;
            wait_for("the Go peer", Duration::from_secs(10), || http_status(port, "/") == Some(200))?;
            Some(port)
        }
        None => None,
    };

    let rounds = opts.rounds;
    let mut b = Bench { opts, work: work.clone(), rows: Vec::new(), round: 0 };
    let (lo, hi, duration) = (b.opts.conns, b.opts.conns_high, b.opts.duration);
    let plan = steps(peer.is_some());
    // The measurements of every round, then the RSS step.
    let n = plan.len() * rounds + 1;
    // Per round: the replica's HGETs during the main GET measurement, and per GET.
    let (mut hgets, mut per_get) = (0, Vec::new());
    for round in 1..=rounds {
        b.round = round;
        let mut neighbour_on = false;
        for (i, &(name, conns, neighbour)) in plan.iter().enumerate() {
            let c = if conns == Conns::Main { lo } else { hi };
            if neighbour && !neighbour_on {
                ch.spawn("neighbour", Command::new("sh").args(["-c", "while :; do :; done"]))?;
                neighbour_on = true;
            }
            let k = (round - 1) * plan.len() + i + 1;
            eprintln!("{}", step_line(k, n, &step_what(name, c, neighbour, duration, (round, rounds)), duration));
            match name {
                "redis-benchmark" => b.redis_benchmark(replica, c, neighbour)?,
                // The replica's HGETs during the main GET measurement: how many GETs read it.
                "api-get" if conns == Conns::Main && !neighbour => {
                    let before = hget_calls(replica)?;
                    let get = b.wrk(name, api, c, neighbour, None)?;
                    let calls = hget_calls(replica)?.saturating_sub(before);
                    hgets += calls;
                    per_get.push(calls as f64 / get.requests.max(1) as f64);
                }
                _ => {
                    let (p, lua) = match name {
                        "webdis-hget" => (webdis, None),
                        "go-redigo" => (peer.context("go-redigo: no Go peer")?, None),
                        "hello-world" => (hello, None),
                        "api-get-memory" => (memory, None),
                        "api-post" => (api, Some("post.lua")),
                        "api-mix-90-10" => (api, Some("mix.lua")),
                        _ => (api, None),
                    };
                    b.wrk(name, p, c, neighbour, lua)?;
                }
            }
            ch.check()?;
        }
        ch.kill("neighbour");
    }
    let what = format!("RSS with {} idle keep-alive connections", b.opts.idle_conns);
    eprintln!("{}", step_line(n, n, &what, duration));
    let rss = idle_rss(api, api_pid, b.opts.idle_conns)?;
    ch.check()?;

    let report = report(&b, &per_get, hgets, rss, peer.is_some());
    println!("{report}");
    if let Some(path) = &b.opts.record {
        record(path, &report, &load_before)?;
    }
    Ok(())
}

/// The table (per system, the median of the rounds and the range of its rate) and the ratios
/// against the targets (each taken within a round; the median of the rounds and their range),
/// as Markdown.
fn report(b: &Bench, per_get: &[f64], hgets: u64, rss: f64, with_peer: bool) -> String {
    let rounds = b.opts.rounds;
    let mut out = format!(
        "Medians of {rounds} round(s) of {} s per measurement; the range is the lowest and highest round.\n\n",
        b.opts.duration
    );
    out.push_str("| system | client conns | neighbour | req/s | req/s range | p50 ms | p99 ms | errors |\n");
    out.push_str("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |\n");
    for r in b.rows.iter().filter(|r| r.round == 1) {
        let all = b.all(&r.name, r.conns, r.neighbour);
        let of = |f: fn(&Row) -> f64| all.iter().map(|r| f(r)).collect::<Vec<f64>>();
        let rps = of(|r| r.rps);
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {} | {:.3} | {:.3} | {} |\n",
            r.name,
            r.conns,
            if r.neighbour { "busy loop" } else { "-" },
            median(&rps),
            range(&rps, 0),
            median(&of(|r| r.p50_ms)),
            median(&of(|r| r.p99_ms)),
            all.iter().map(|r| r.errors).sum::<u64>()
        ));
    }
    // Each system once, however many of its rounds had errors.
    let mut bad: Vec<&str> = b.rows.iter().filter(|r| r.errors > 0).map(|r| r.name.as_str()).collect();
    bad.sort_unstable();
    bad.dedup();
    if !bad.is_empty() {
        out.push_str(&format!("\nwarning: errors (non-2xx or socket) in {bad:?}: their numbers are not valid\n"));
    }
    let (lo, hi) = (b.opts.conns, b.opts.conns_high);
    // A figure per round.
    let per_round = |f: &dyn Fn(usize) -> f64| (1..=rounds).map(f).collect::<Vec<f64>>();
    let rps = |round: usize, name: &str, conns: u32, n: bool| b.get(round, name, conns, n).map_or(f64::NAN, |r| r.rps);
    let p99 = |round: usize, name: &str, conns: u32| b.get(round, name, conns, false).map_or(f64::NAN, |r| r.p99_ms);
    let versus = |other: &'static str, conns: u32, n: bool| {
        per_round(&|k| rps(k, "api-get", conns, n) / rps(k, other, conns, n))
    };
    // A system's own step from the main to the high connection count, per round.
    let scaling = |name: &str| per_round(&|k| rps(k, name, hi, false) / rps(k, name, lo, false));
    let mut checks: Vec<(String, Vec<f64>, &str, f64)> = vec![
        (format!("api GET / redis-benchmark GET, {lo} conns"), versus("redis-benchmark", lo, false), ">=", 0.8),
        (format!("api GET / webdis HGET, {lo} conns"), versus("webdis-hget", lo, false), ">=", 1.2),
    ];
    if with_peer {
        checks.push((format!("api GET / Go net/http+redigo, {lo} conns"), versus("go-redigo", lo, false), ">=", 2.0));
    }
    checks.extend([
        (format!("api GET p99 ms, {lo} conns"), per_round(&|k| p99(k, "api-get", lo)), "<=", 5.0),
        (format!("api GET {hi} conns / {lo} conns"), scaling("api-get"), ">=", 0.9),
        (format!("api GET p99 ms, {hi} conns"), per_round(&|k| p99(k, "api-get", hi)), "<=", 20.0),
        (format!("replica HGETs per api GET ({hgets} HGETs)"), per_get.to_vec(), "<=", 0.2),
        ("api GET / webdis HGET, noisy neighbour".into(), versus("webdis-hget", lo, true), ">=", 1.0),
        (
            "memory-mode GET / hello-world".into(),
            per_round(&|k| rps(k, "api-get-memory", lo, false) / rps(k, "hello-world", lo, false)),
            ">=",
            0.95,
        ),
        (format!("RSS MB, {} idle keep-alive connections", b.opts.idle_conns), vec![rss], "<=", 30.0),
    ]);
    out.push_str("\n| ratio | median | range | target | |\n| --- | ---: | ---: | --- | --- |\n");
    for (label, values, op, t) in checks {
        let v = median(&values);
        let pass = if op == ">=" { v >= t } else { v <= t };
        let verdict = if pass { "PASS" } else { "FAIL" };
        out.push_str(&format!("| {label} | {v:.3} | {} | {op} {t} | {verdict} |\n", range(&values, 3)));
    }
    // No targets: what the same step up in connections does to the yardsticks, to read the
    // API's own ratio against (a thread per connection pays for more threads; an event loop
    // gets more work per wake-up).
    out.push_str(&format!("\n| for reference, {hi} conns / {lo} conns | median | range |\n| --- | ---: | ---: |\n"));
    for (label, name) in [
        ("hello-world (our HTTP layer alone)", "hello-world"),
        ("webdis HGET", "webdis-hget"),
        ("Go net/http+redigo", "go-redigo"),
    ] {
        let values = scaling(name);
        if values.iter().all(|v| v.is_nan()) {
            continue;
        }
        out.push_str(&format!("| {label} | {:.3} | {} |\n", median(&values), range(&values, 3)));
    }
    out
}

/// Appends the run to `path`: when, where, and the report.
fn record(path: &Path, report: &str, load_before: &str) -> Result<()> {
    let date = Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]).output()?;
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model =
        cpu.lines().find_map(|l| l.strip_prefix("model name")).map_or("?", |m| m.trim_start_matches([' ', '\t', ':']));
    let cores = cpu.lines().filter(|l| l.starts_with("processor")).count();
    let text = format!(
        "\n### Run finished {} on {cores} × {model}\n\nLoad average before the run: {}\n\n{report}",
        String::from_utf8_lossy(&date.stdout).trim(),
        load_before.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    );
    let mut f =
        std::fs::OpenOptions::new().append(true).create(true).open(path).with_context(|| path.display().to_string())?;
    f.write_all(text.as_bytes()).with_context(|| path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of `rounds` rounds at 50 and 200 connections, with no measurement yet.
    fn bench_of(rounds: usize) -> Bench {
        let opts = Options {
            duration: 1,
            rounds,
            conns: 50,
            conns_high: 200,
            idle_conns: 1,
            api_bin: PathBuf::new(),
            loadtest_bin: PathBuf::new(),
            peer_bin: None,
            record: None,
        };
        Bench { opts, work: PathBuf::new(), rows: Vec::new(), round: 0 }
    }

    /// A measurement of `name` without the neighbour, p50 1 ms, p99 2 ms, no errors.
    fn row(name: &str, conns: u32, rps: f64, round: usize) -> Row {
        Row { name: name.into(), conns, neighbour: false, rps, p50_ms: 1.0, p99_ms: 2.0, errors: 0, requests: 1, round }
    }

    /// wrk's summary is read in its own units, errors included.
    #[test]
    fn reads_wrk_output() {
        let text = "  Latency Distribution\n     50%  812.00us\n     99%    2.10ms\n  120000 requests in 10.00s, 1.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 5\nRequests/sec:  12000.50\n";
        let r = parse_wrk("x", text).expect("parsed");
        assert_eq!((r.rps, r.requests, r.errors), (12000.5, 120000, 8));
        assert!((r.p50_ms - 0.812).abs() < 1e-9 && (r.p99_ms - 2.1).abs() < 1e-9);
        assert!(parse_wrk("x", "nothing").is_err());
    }

    /// Medians and ranges ignore missing figures (NaN).
    #[test]
    fn medians_and_ranges() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, f64::NAN, 2.0, 3.0]), 2.5);
        assert!(median(&[f64::NAN]).is_nan());
        assert_eq!(range(&[0.81, 0.79, 0.9], 2), "0.79–0.90");
        assert_eq!(range(&[0.8], 2), "-");
    }

    /// A ratio is taken within each round, then its median is judged: a round where both
    /// systems ran slow counts as one round, not as a slow numerator against a fast denominator.
    #[test]
    fn ratios_are_taken_within_rounds() {
        let mut b = bench_of(3);
        // Round 2 ran at half speed for both; within each round the API is 0.85x.
        for (round, scale) in [(1, 1.0), (2, 0.5), (3, 1.0)] {
            for (name, rps) in [("redis-benchmark", 80_000.0), ("api-get", 68_000.0)] {
                b.rows.push(row(name, 50, rps * scale, round));
            }
        }
        let out = report(&b, &[0.1, 0.1, 0.1], 3, 20.0, false);
        assert!(
            out.contains("| api GET / redis-benchmark GET, 50 conns | 0.850 | 0.850–0.850 | >= 0.8 | PASS |"),
            "{out}"
        );
        assert!(out.contains("| api-get | 50 | - | 68000 | 34000–68000 |"), "{out}");
        assert!(out.contains("| memory-mode GET / hello-world | NaN |"), "a missing system is no pass: {out}");
        assert!(!out.contains("| webdis HGET |"), "a reference with no figure is left out: {out}");
    }

    /// The reference table gives a yardstick's own step from the main to the high connection
    /// count, per round.
    #[test]
    fn reference_scaling_per_round() {
        let mut b = bench_of(2);
        for (round, conns, rps) in [(1, 50, 70_000.0), (1, 200, 56_000.0), (2, 50, 35_000.0), (2, 200, 31_500.0)] {
            b.rows.push(row("hello-world", conns, rps, round));
        }
        let out = report(&b, &[0.1, 0.1], 3, 20.0, false);
        assert!(out.contains("| for reference, 200 conns / 50 conns | median | range |"), "{out}");
        assert!(out.contains("| hello-world (our HTTP layer alone) | 0.850 | 0.800–0.900 |"), "{out}");
    }

    /// 16 measurements with the Go peer, 13 without, in round order; each step's line counts
    /// them plus the RSS step and says the time left (this step, the later ones, ~5 s of RSS).
    #[test]
    fn steps_are_counted_with_time_left() {
        assert_eq!(steps(true).len(), 16);
        let without = steps(false);
        assert_eq!(without.len(), 13);
        assert_eq!(without[2], ("hello-world", Conns::Main, false));
        assert_eq!(without.iter().filter(|s| s.2).count(), 3, "round 3 beside the neighbour");
        let what = step_what("webdis-hget", 50, true, 10, (1, 1));
        assert_eq!(
            step_line(1, 16, &what, 10),
            "bench: step 1 of 16: round 1 of 1: webdis-hget, 50 connections, noisy neighbour, 10 s (about 3 min left)"
        );
        assert_eq!(
            step_line(15, 16, &step_what("api-get", 200, false, 10, (1, 1)), 10),
            "bench: step 15 of 16: round 1 of 1: api-get, 200 connections, 10 s (about 15 s left)"
        );
        assert_eq!(step_line(16, 16, "RSS", 10), "bench: step 16 of 16: RSS (about 5 s left)");
    }
}
