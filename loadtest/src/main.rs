//! `loadtest`: the load-test kit's binary. Subcommands: attack, aggregator, hello-world, updater.

use cli::{Args, Failure, Parsed, UsageError};
use crossbeam_channel::Sender;
use http1::{Method, Response};
use loadtest::aggregator::{self, Aggregator, Discovery};
use loadtest::attack::{self, Recorder};
use loadtest::{client::Target, updater};
use prometheus_client::registry::Registry;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long a generator in pod mode keeps serving after its attack ends, for the aggregator
/// (which pulls every second) to get the last seconds; it exits as soon as one pull did.
const FLUSH_WAIT: Duration = Duration::from_secs(5);

const USAGE: &str = "\
loadtest: redis-api's load-test kit.

Usage: loadtest attack --target URL [FLAGS]      open-loop constant-rate load; a report at the end
       loadtest aggregator --generators URL,...  merges generators' seconds; serves the dashboard
       loadtest hello-world [FLAGS]              the calibration server (a fixed body)
       loadtest updater [FLAGS]                  POSTs a random walk to the API on a schedule

`loadtest SUBCOMMAND --help` lists a subcommand's flags, each with its env twin and default.
Durations take a unit: 400ms, 30s, 5m, 1h. Logs: RUST_LOG (default info).
SIGTERM/SIGINT stop any of them cleanly.
Exit status: 0 done, 1 the run failed (nothing answered, an address in use), 2 bad arguments.";

const EXIT: &str = "Exit status: 0 done, 1 the run failed, 2 bad arguments.";

mod flag {
    //! Every subcommand's flags.
    use cli::Flag;
    use std::net::SocketAddr;
    use std::time::Duration;

    const URL: &str = "an http:// URL such as http://127.0.0.1:8080/";

    /// `http://` and a host: the syntax. Resolving the host is the run's business.
    fn is_url(s: &str) -> bool {
        s.strip_prefix("http://").is_some_and(|rest| !rest.is_empty() && !rest.starts_with(['/', ':']))
    }

    /// `--discover NAME:PORT`: the headless Service's name and port.
    pub fn discover(s: &str) -> Option<(String, u16)> {
        let (name, port) = s.rsplit_once(':')?;
        let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
        (!name.is_empty()).then(|| (name.to_owned(), port))
    }

    pub const TARGET: Flag = Flag::new("--target", "URL", "where to send requests (repeatable; env: comma-separated)")
        .env("TARGET_URL")
        .many()
        .accepts(URL, is_url);
    pub const RATE: Flag = Flag::new("--rate", "N", "requests per second, all targets together")
        .env("ATTACK_RATE")
        .default("1000")
        .accepts("a positive number of requests per second", |s| {
            s.parse::<f64>().is_ok_and(|r| r.is_finite() && r > 0.0)
        });
    pub const DURATION: Flag = Flag::new("--duration", "DURATION", "how long to attack; 0: until stopped")
        .env("ATTACK_DURATION")
        .default("10s")
        .duration_in(Duration::ZERO, Duration::from_secs(365 * 86_400));
    pub const ATTACK_TIMEOUT: Flag =
        Flag::new("--timeout", "DURATION", "a request unanswered after this counts as a timeout")
            .env("ATTACK_TIMEOUT")
            .default("1s")
            .old("--timeout-ms", Some("ATTACK_TIMEOUT_MS"), "ms")
            .duration_in(Duration::from_millis(1), Duration::from_secs(600));
    pub const CONNECTIONS: Flag = Flag::new("--connections", "N", "keep-alive connections the requests share")
        .env("ATTACK_CONNECTIONS")
        .default("64")
        .number_in(1, 100_000);
    pub const POST_RATIO: Flag = Flag::new("--post-ratio", "X", "share of POSTs {\"value\": x}, 0 to 1 (0: GETs only)")
        .env("POST_RATIO")
        .default("0")
        .accepts("a share from 0 to 1", |s| s.parse::<f64>().is_ok_and(|r| (0.0..=1.0).contains(&r)));
    pub const NAME: Flag = Flag::new("--name", "NAME", "this generator's name in reports (default: the host name)")
        .env("GENERATOR_NAME")
        .accepts("a non-empty name", |s| !s.is_empty());
    pub const ATTACK_LISTEN: Flag = Flag::new(
        "--listen",
        "ADDR",
        "pod mode: serve GET / (recent intervals) and /metrics instead of printing a report \
         (LISTEN_ADDR, the API's variable, is ignored here)",
    )
    .env("ATTACK_LISTEN_ADDR")
    .parsed::<SocketAddr>("an address:port such as 0.0.0.0:8090");
    pub const JSON: Flag = Flag::switch("--json", "print the end report as JSON").env("ATTACK_JSON");
    pub const ATTACK: &[Flag] =
        &[TARGET, RATE, DURATION, ATTACK_TIMEOUT, CONNECTIONS, POST_RATIO, NAME, ATTACK_LISTEN, JSON];

    pub const GENERATORS: Flag =
        Flag::new("--generators", "URL", "generators in pod mode to pull from (repeatable, or comma-separated)")
            .env("GENERATORS")
            .many()
            .accepts("http:// URLs, comma-separated", |s| {
                s.split(',').map(str::trim).filter(|g| !g.is_empty()).all(is_url)
            });
    pub const DISCOVER: Flag =
        Flag::new("--discover", "NAME:PORT", "find the generators as the addresses of a headless Service instead")
            .env("DISCOVER")
            .accepts("NAME:PORT, the headless Service's name and port", |s| discover(s).is_some());
    pub const API_URL: Flag =
        Flag::new("--api-url", "URL", "the API (what the currency page polls; what the updater POSTs to)")
            .env("API_URL")
            .default("http://127.0.0.1:8080/")
            .accepts(URL, is_url);
    pub const AGGREGATOR_LISTEN: Flag =
        Flag::new("--listen", "ADDR", "where the dashboard, /api/series and /metrics are served")
            .env("LISTEN_ADDR")
            .default("0.0.0.0:8082")
            .parsed::<SocketAddr>("an address:port such as 0.0.0.0:8082");
    pub const WINDOW: Flag = Flag::new("--window", "DURATION", "history kept for the dashboard")
        .env("WINDOW")
        .default("5m")
        .old("--window-s", Some("WINDOW_S"), "s")
        .duration_in(Duration::from_secs(1), Duration::from_secs(86_400));
    pub const PULL_TIMEOUT: Flag =
        Flag::new("--timeout", "DURATION", "a generator that does not answer a pull within this is missing")
            .env("PULL_TIMEOUT")
            .default("500ms")
            .old("--timeout-ms", Some("PULL_TIMEOUT_MS"), "ms")
            .duration_in(Duration::from_millis(1), Duration::from_secs(60));
    pub const AGGREGATOR: &[Flag] = &[GENERATORS, DISCOVER, API_URL, AGGREGATOR_LISTEN, WINDOW, PULL_TIMEOUT];

    pub const HELLO_LISTEN: Flag =
        Flag::new("--listen", "ADDR", "where GET / (a fixed body), /healthz and /metrics are served")
            .env("LISTEN_ADDR")
            .default("0.0.0.0:8080")
            .parsed::<SocketAddr>("an address:port such as 0.0.0.0:8080");
    pub const HELLO: &[Flag] = &[HELLO_LISTEN];

    pub const INTERVAL: Flag = Flag::new("--interval", "DURATION", "time between POSTs, on an absolute schedule")
        .env("UPDATE_INTERVAL")
        .default("1s")
        .old("--interval-ms", Some("UPDATE_INTERVAL_MS"), "ms")
        .duration_in(Duration::from_millis(1), Duration::from_secs(3600));
    pub const UPDATE_TIMEOUT: Flag =
        Flag::new("--timeout", "DURATION", "a POST unanswered after this counts as failed")
            .env("UPDATE_TIMEOUT")
            .default("900ms")
            .old("--timeout-ms", Some("UPDATE_TIMEOUT_MS"), "ms")
            .duration_in(Duration::from_millis(1), Duration::from_secs(600));
    pub const START_VALUE: Flag = Flag::new("--start-value", "X", "first value of the random walk (positive)")
        .env("START_VALUE")
        .default("1.0")
        .accepts("a positive number", |s| s.parse::<f64>().is_ok_and(|v| v.is_finite() && v > 0.0));
    pub const UPDATER_LISTEN: Flag = Flag::new("--listen", "ADDR", "where /healthz and /metrics are served")
        .env("LISTEN_ADDR")
        .default("0.0.0.0:8083")
        .parsed::<SocketAddr>("an address:port such as 0.0.0.0:8083");
    pub const UPDATER: &[Flag] = &[API_URL, INTERVAL, UPDATE_TIMEOUT, START_VALUE, UPDATER_LISTEN];
}

/// One subcommand: its flags and the first lines of its help.
struct Sub {
    name: &'static str,
    flags: &'static [cli::Flag],
    usage: &'static str,
}

const SUBCOMMANDS: &[Sub] = &[
    Sub {
        name: "attack",
        flags: flag::ATTACK,
        usage: "loadtest attack: open-loop constant-rate load; latency is measured from each request's\n\
                intended send time, so a stall shows as latency and timeouts.\n\n\
                Usage: loadtest attack --target URL [FLAGS]\n\n\
                A run longer than 10 s (or until stopped) prints a progress line to stderr once a second\n\
                when stderr is a terminal. Exit status 1 when no request got an answer (the reason is printed).",
    },
    Sub {
        name: "aggregator",
        flags: flag::AGGREGATOR,
        usage: "loadtest aggregator: pulls the generators' intervals every second and merges them; serves\n\
                the dashboard (/), the currency page (/currency), /api/series, /api/config, /metrics.\n\n\
                Usage: loadtest aggregator (--generators URL,... | --discover NAME:PORT) [FLAGS]",
    },
    Sub {
        name: "hello-world",
        flags: flag::HELLO,
        usage: "loadtest hello-world: the calibration server: GET / answers a fixed body.\n\n\
                Usage: loadtest hello-world [FLAGS]",
    },
    Sub {
        name: "updater",
        flags: flag::UPDATER,
        usage: "loadtest updater: POSTs {\"value\": x} to the API on an absolute schedule, x a random walk.\n\n\
                Usage: loadtest updater [FLAGS]",
    },
];

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match run() {
        Ok(code) => code,
        Err(e) => e.report("loadtest"),
    }
}

/// A channel that receives once on SIGTERM or SIGINT.
fn on_signal() -> Result<crossbeam_channel::Receiver<()>, Failure> {
    let (tx, rx): (Sender<()>, _) = crossbeam_channel::bounded(1);
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
        .map_err(|e| Failure::Run(format!("cannot watch for signals: {e}")))?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            log::info!("signal {sig}: stopping");
            let _ = tx.send(());
        }
    });
    Ok(rx)
}

fn run() -> Result<ExitCode, Failure> {
    let mut argv = std::env::args_os().skip(1).peekable();
    let first = argv.peek().and_then(|a| a.to_str()).map(str::to_owned);
    let sub = match first.as_deref() {
        None => {
            return Err(UsageError(
                "a subcommand is required: attack, aggregator, hello-world or updater; see --help".into(),
            )
            .into());
        }
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return Ok(ExitCode::SUCCESS);
        }
        Some("-V" | "--version") => {
            println!("loadtest {}", env!("CARGO_PKG_VERSION"));
            return Ok(ExitCode::SUCCESS);
        }
        Some(name) => SUBCOMMANDS.iter().find(|s| s.name == name).ok_or_else(|| {
            let shown = if cli::looks_like_flag(name) || name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                format!("{name:?}")
            } else {
                "(not shown)".to_owned()
            };
            UsageError(format!("unknown subcommand {shown}: attack, aggregator, hello-world or updater; see --help"))
        })?,
    };
    argv.next();
    let env = |k: &str| std::env::var(k).ok();
    let args = match Args::parse(sub.flags, argv, &env, 0)? {
        Parsed::Help => {
            print!("{}", cli::help(sub.usage, sub.flags, EXIT));
            return Ok(ExitCode::SUCCESS);
        }
        Parsed::Version => {
            println!("loadtest {}", env!("CARGO_PKG_VERSION"));
            return Ok(ExitCode::SUCCESS);
        }
        Parsed::Run(args) => args,
    };
    for warning in args.warnings() {
        log::warn!("{warning}");
    }
    match sub.name {
        "hello-world" => {
            let listen = args.value(&flag::HELLO_LISTEN)?;
            let stop = on_signal()?;
            let server = loadtest::hello::start(listen).map_err(Failure::Run)?;
            let _ = stop.recv();
            server.shutdown(Duration::from_secs(5));
            Ok(ExitCode::SUCCESS)
        }
        "attack" => run_attack(&args),
        "aggregator" => run_aggregator(&args).map(|()| ExitCode::SUCCESS),
        _ => run_updater(&args).map(|()| ExitCode::SUCCESS),
    }
}

fn url(flag: &cli::Flag, text: &str) -> Result<Target, UsageError> {
    Target::parse(text).map_err(|why| UsageError(format!("{}: {why}", flag.label())))
}

fn run_updater(args: &Args) -> Result<(), Failure> {
    let api_url: String = args.value(&flag::API_URL)?;
    let cfg = updater::Config {
        api: url(&flag::API_URL, &api_url)?,
        interval: args.duration(&flag::INTERVAL)?,
        timeout: args.duration(&flag::UPDATE_TIMEOUT)?,
        start_value: args.value(&flag::START_VALUE)?,
    };
    let listen = args.value(&flag::UPDATER_LISTEN)?;
    let stats = updater::Stats::default();
    let mut registry = Registry::with_prefix("updater");
    stats.register(&mut registry);
    let server = loadtest::ops::serve(listen, registry, Box::new(|_| None)).map_err(Failure::Run)?;
    let stop = on_signal()?;
    updater::run(&cfg, &stats, &stop);
    server.shutdown(Duration::from_secs(2));
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "generator".into())
}

/// `attack`: a report at the end (exit 1 when no request got an answer), or pod mode when
/// `--listen`/`ATTACK_LISTEN_ADDR` asks for it.
fn run_attack(args: &Args) -> Result<ExitCode, Failure> {
    let urls = args.many(&flag::TARGET)?;
    if urls.is_empty() {
        return Err(UsageError(format!("at least one {} is required", flag::TARGET.label())).into());
    }
    // Not LISTEN_ADDR: the API's variable is often set in the same shell, and must not turn a
    // one-off attack into a silent server.
    let listen: Option<SocketAddr> = args.opt_value(&flag::ATTACK_LISTEN)?;
    if listen.is_none() && std::env::var_os("LISTEN_ADDR").is_some() {
        eprintln!("loadtest: attack ignores LISTEN_ADDR; pod mode is --listen or ATTACK_LISTEN_ADDR");
    }
    let duration = args.duration(&flag::DURATION)?;
    let cfg = attack::Config {
        targets: urls.iter().map(|u| url(&flag::TARGET, u)).collect::<Result<_, _>>()?,
        rate: args.value(&flag::RATE)?,
        duration: (!duration.is_zero()).then_some(duration),
        timeout: args.duration(&flag::ATTACK_TIMEOUT)?,
        connections: args.number(&flag::CONNECTIONS)?,
        post_ratio: args.value(&flag::POST_RATIO)?,
        name: args.opt_value(&flag::NAME)?.unwrap_or_else(hostname),
    };
    let json = args.switch(&flag::JSON)?;
    let stop = on_signal()?;
    let Some(listen) = listen else {
        let recorder = Arc::new(Recorder::new(None));
        // Progress once a second, only for a person watching a long run (not in a pipe or a
        // log, where the report at the end is what counts).
        let long = cfg.duration.is_none_or(|d| d > attack::PROGRESS_AFTER);
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(1);
        let progress = (long && std::io::stderr().is_terminal()).then(|| {
            let (rec, duration) = (recorder.clone(), cfg.duration);
            std::thread::spawn(move || attack::print_progress(&rec, duration, &done_rx))
        });
        let times = attack::run(&cfg, &recorder, &stop);
        drop(done_tx);
        if let Some(p) = progress {
            let _ = p.join();
        }
        let report = attack::Report::new(&cfg, times, &recorder.total()).with_reasons(recorder.reasons());
        if json {
            println!("{}", serde_json::to_string_pretty(&report).map_err(|e| Failure::Run(e.to_string()))?);
        } else {
            print!("{}", report.text());
        }
        if let Some(why) = report.unreachable() {
            eprintln!("loadtest: {why}");
            return Ok(ExitCode::FAILURE);
        }
        return Ok(ExitCode::SUCCESS);
    };
    let recorder = Arc::new(Recorder::new(Some(attack::KEEP_SECONDS)));
    // Set when the attack is over; `pulled` when a GET / has served every second after that.
    let finished = Arc::new(AtomicBool::new(false));
    let pulled = Arc::new(AtomicBool::new(false));
    let (rec, c, fin, pul) = (recorder.clone(), cfg.clone(), finished.clone(), pulled.clone());
    let routes: loadtest::ops::Routes = Box::new(move |req| match (&req.method, req.path.as_str()) {
        (Method::Get | Method::Head, "/") => {
            let done = fin.load(Ordering::SeqCst);
            let body = serde_json::to_vec(&attack::report_json(&c, &rec, done)).unwrap_or_default();
            if done {
                pul.store(true, Ordering::SeqCst);
            }
            Some(Response::new(200, "application/json", body).route("intervals"))
        }
        _ => None,
    });
    let server = loadtest::ops::serve(listen, recorder.metrics.registry(), routes).map_err(Failure::Run)?;
    attack::run(&cfg, &recorder, &stop);
    // Flush: the last second or two are not complete until now; serve them until a puller
    // (the aggregator, every second) has had them, or FLUSH_WAIT passes.
    finished.store(true, Ordering::SeqCst);
    let until = std::time::Instant::now() + FLUSH_WAIT;
    while !pulled.load(Ordering::SeqCst) && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    server.shutdown(Duration::from_secs(2));
    Ok(ExitCode::SUCCESS)
}

fn run_aggregator(args: &Args) -> Result<(), Failure> {
    // Repeatable, and each value may be a comma-separated list (as the env twin is).
    let generators: Vec<String> = args
        .many(&flag::GENERATORS)?
        .iter()
        .flat_map(|v| v.split(',').map(str::trim).filter(|g| !g.is_empty()).map(str::to_owned))
        .collect();
    let discover = args.opt_value::<String>(&flag::DISCOVER)?.as_deref().and_then(flag::discover);
    let discovery = match (generators.is_empty(), discover) {
        (true, None) => {
            return Err(
                UsageError(format!("{} or {} is required", flag::GENERATORS.label(), flag::DISCOVER.label())).into()
            );
        }
        (false, None) => {
            // The same form as --target: a URL with its scheme.
            for g in &generators {
                url(&flag::GENERATORS, g)?;
            }
            Discovery::List(generators)
        }
        (true, Some((name, port))) => Discovery::Dns { name, port },
        (false, Some(_)) => {
            return Err(UsageError(format!(
                "{} and {} exclude each other",
                flag::GENERATORS.name,
                flag::DISCOVER.name
            ))
            .into());
        }
    };
    let api_url: String = args.value(&flag::API_URL)?;
    url(&flag::API_URL, &api_url)?;
    let window = args.duration(&flag::WINDOW)?;
    let listen = args.value(&flag::AGGREGATOR_LISTEN)?;
    let agg = Arc::new(Aggregator::new(aggregator::Config {
        discovery,
        window_s: window.as_secs(),
        timeout: args.duration(&flag::PULL_TIMEOUT)?,
        poll: Duration::from_secs(1),
        api_url,
    }));
    let a = agg.clone();
    let routes: loadtest::ops::Routes = Box::new(move |req| {
        if !matches!(req.method, Method::Get | Method::Head) {
            return None;
        }
        match req.path.as_str() {
            "/api/series" => Some(
                Response::new(200, "application/json", serde_json::to_vec(&a.series()).unwrap_or_default())
                    .route("series"),
            ),
            "/api/config" => {
                let body = serde_json::json!({ "api_url": a.cfg.api_url });
                Some(Response::json(200, body.to_string()).route("config"))
            }
            path => loadtest::web::file(path).map(|(ct, body)| {
                Response::new(200, ct, body.as_bytes().to_vec()).header("Cache-Control", "no-cache").route("page")
            }),
        }
    });
    let server = loadtest::ops::serve(listen, agg.registry(), routes).map_err(Failure::Run)?;
    let stop = on_signal()?;
    agg.run(&stop);
    server.shutdown(Duration::from_secs(2));
    Ok(())
}
