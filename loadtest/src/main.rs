//! `loadtest`: the load-test kit's binary. Subcommands: attack, aggregator, hello-world, updater.

use crossbeam_channel::Sender;
use loadtest::aggregator::{self, Aggregator, Discovery};
use loadtest::attack::{self, Recorder};
use loadtest::{client::Target, setting, updater};
use prometheus_client::registry::Registry;
use redis_api::http::{Method, Response};
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
Usage: loadtest attack --target URL [--target URL]... [OPTIONS]
       loadtest aggregator [--generators URL,URL | --discover NAME:PORT] [OPTIONS]
       loadtest hello-world [--listen ADDR]
       loadtest updater [--api-url URL] [--interval-ms N] [--timeout-ms N] [--start-value X] [--listen ADDR]

attack        open-loop constant-rate load; latency from the intended send time
              --target (TARGET_URL, comma-separated; repeatable flag)
              --rate (ATTACK_RATE, default 1000 req/s)   --duration (ATTACK_DURATION, default 10s; 0: until stopped)
              --timeout-ms (ATTACK_TIMEOUT_MS, default 1000)   --connections (ATTACK_CONNECTIONS, default 64)
              --post-ratio (POST_RATIO, default 0: GETs only)  --name (GENERATOR_NAME, default the host name)
              --listen (ATTACK_LISTEN_ADDR): pod mode: serve GET / (recent intervals, histograms) and
              /metrics instead of printing a report. Only this flag or ATTACK_LISTEN_ADDR turns it on:
              LISTEN_ADDR (the API's and the other subcommands' variable) is ignored by attack
              --json: print the end report as JSON
              A run longer than 10 s (or until stopped) prints a progress line to stderr once a
              second when stderr is a terminal: elapsed/left, the last second's rate, success, p99
              Exit status 1 when no request got an answer (e.g. nothing listens: the reason is printed)
aggregator    pulls the generators' intervals every second and merges them; serves the dashboard (/),
              the currency page (/currency), /api/series, /api/config, /metrics
              --generators (GENERATORS, comma-separated URLs) or --discover (DISCOVER, headless Service NAME:PORT)
              --api-url (API_URL, default http://127.0.0.1:8080/): what the currency page polls
              --listen (LISTEN_ADDR, default 0.0.0.0:8082)  --window-s (WINDOW_S, default 300)
              --timeout-ms (PULL_TIMEOUT_MS, default 500)
hello-world   the calibration server: GET / answers a fixed body (+ /healthz, /metrics)
              --listen (LISTEN_ADDR, default 0.0.0.0:8080)
updater       POSTs {\"value\": x} to the API on an absolute schedule, x a random walk
              --api-url (API_URL, default http://127.0.0.1:8080/)
              --interval-ms (UPDATE_INTERVAL_MS, default 1000)
              --timeout-ms (UPDATE_TIMEOUT_MS, default 900)
              --start-value (START_VALUE, default 1.0)
              --listen (LISTEN_ADDR, default 0.0.0.0:8083): /healthz and /metrics
Logs: RUST_LOG (default info). SIGTERM/SIGINT stop either cleanly. --version prints the version.
Exit status: 0 done, 1 the run failed, 2 bad arguments.";

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadtest: {e}");
            ExitCode::from(2)
        }
    }
}

/// A channel that receives once on SIGTERM or SIGINT.
fn on_signal() -> Result<crossbeam_channel::Receiver<()>, String> {
    let (tx, rx): (Sender<()>, _) = crossbeam_channel::bounded(1);
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
        .map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            log::info!("signal {sig}: stopping");
            let _ = tx.send(());
        }
    });
    Ok(rx)
}

fn run() -> Result<ExitCode, String> {
    let mut args = pico_args::Arguments::from_env();
    if args.contains(["-h", "--help"]) {
        println!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    }
    if args.contains(["-V", "--version"]) {
        println!("loadtest {}", env!("CARGO_PKG_VERSION"));
        return Ok(ExitCode::SUCCESS);
    }
    match args.subcommand().map_err(|e| e.to_string())?.as_deref() {
        Some("hello-world") => {
            let listen: SocketAddr = setting(&mut args, "--listen", "LISTEN_ADDR", "0.0.0.0:8080".parse().unwrap())?;
            finish(args)?;
            let stop = on_signal()?;
            let server = loadtest::hello::start(listen)?;
            let _ = stop.recv();
            server.shutdown(Duration::from_secs(5));
            Ok(ExitCode::SUCCESS)
        }
        Some("attack") => run_attack(args),
        Some("aggregator") => run_aggregator(args).map(|()| ExitCode::SUCCESS),
        Some("updater") => {
            let url: String = setting(&mut args, "--api-url", "API_URL", "http://127.0.0.1:8080/".to_owned())?;
            let interval: u64 = setting(&mut args, "--interval-ms", "UPDATE_INTERVAL_MS", 1000)?;
            let timeout: u64 = setting(&mut args, "--timeout-ms", "UPDATE_TIMEOUT_MS", 900)?;
            let start_value: f64 = setting(&mut args, "--start-value", "START_VALUE", 1.0)?;
            let listen: SocketAddr = setting(&mut args, "--listen", "LISTEN_ADDR", "0.0.0.0:8083".parse().unwrap())?;
            finish(args)?;
            if interval == 0 || timeout == 0 || !(start_value.is_finite() && start_value > 0.0) {
                return Err("--interval-ms and --timeout-ms must be > 0, --start-value a positive number".into());
            }
            let cfg = updater::Config {
                api: Target::parse(&url)?,
                interval: Duration::from_millis(interval),
                timeout: Duration::from_millis(timeout),
                start_value,
            };
            let stats = updater::Stats::default();
            let mut registry = Registry::with_prefix("updater");
            stats.register(&mut registry);
            let server = loadtest::ops::serve(listen, Arc::new(registry), Box::new(|_| None))?;
            let stop = on_signal()?;
            updater::run(&cfg, &stats, &stop);
            server.shutdown(Duration::from_secs(2));
            Ok(ExitCode::SUCCESS)
        }
        _ => Err(USAGE.into()),
    }
}

fn finish(args: pico_args::Arguments) -> Result<(), String> {
    match args.finish().first() {
        Some(extra) => Err(format!("unexpected argument {extra:?}\n{USAGE}")),
        None => Ok(()),
    }
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
fn run_attack(mut args: pico_args::Arguments) -> Result<ExitCode, String> {
    let mut urls: Vec<String> = args.values_from_str("--target").map_err(|e| e.to_string())?;
    if urls.is_empty() {
        urls = std::env::var("TARGET_URL")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
    }
    let rate: f64 = setting(&mut args, "--rate", "ATTACK_RATE", 1000.0)?;
    let duration: String = setting(&mut args, "--duration", "ATTACK_DURATION", "10s".to_owned())?;
    let timeout: u64 = setting(&mut args, "--timeout-ms", "ATTACK_TIMEOUT_MS", 1000)?;
    let connections: usize = setting(&mut args, "--connections", "ATTACK_CONNECTIONS", 64)?;
    let post_ratio: f64 = setting(&mut args, "--post-ratio", "POST_RATIO", 0.0)?;
    let name: String = setting(&mut args, "--name", "GENERATOR_NAME", hostname())?;
    // Not LISTEN_ADDR: the API's variable is often set in the same shell, and must not turn a
    // one-off attack into a silent server.
    let listen: Option<SocketAddr> = match setting(&mut args, "--listen", "ATTACK_LISTEN_ADDR", String::new())? {
        s if s.is_empty() => None,
        s => Some(s.parse().map_err(|e| format!("--listen (ATTACK_LISTEN_ADDR): {e}: {s:?}"))?),
    };
    if listen.is_none() && std::env::var_os("LISTEN_ADDR").is_some() {
        eprintln!("loadtest: attack ignores LISTEN_ADDR; pod mode is --listen or ATTACK_LISTEN_ADDR");
    }
    let json = args.contains("--json");
    finish(args)?;
    if urls.is_empty() {
        return Err(format!("at least one --target (or TARGET_URL) is required\n{USAGE}"));
    }
    let duration = redis_api::config::parse_duration(&duration)
        .ok_or_else(|| format!("--duration: {duration:?}: e.g. 30s, 5m, 0"))?;
    if !(rate > 0.0 && rate.is_finite()) || timeout == 0 || connections == 0 || !(0.0..=1.0).contains(&post_ratio) {
        return Err("--rate, --timeout-ms and --connections must be > 0, --post-ratio within 0..1".into());
    }
    let cfg = attack::Config {
        targets: urls.iter().map(|u| Target::parse(u)).collect::<Result<_, _>>()?,
        rate,
        duration: (!duration.is_zero()).then_some(duration),
        timeout: Duration::from_millis(timeout),
        connections,
        post_ratio,
        name,
    };
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
            println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
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
    let server = loadtest::ops::serve(listen, Arc::new(recorder.metrics.registry()), routes)?;
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

fn run_aggregator(mut args: pico_args::Arguments) -> Result<(), String> {
    let generators: String = setting(&mut args, "--generators", "GENERATORS", String::new())?;
    let discover: String = setting(&mut args, "--discover", "DISCOVER", String::new())?;
    let api_url: String = setting(&mut args, "--api-url", "API_URL", "http://127.0.0.1:8080/".to_owned())?;
    let listen: SocketAddr = setting(&mut args, "--listen", "LISTEN_ADDR", "0.0.0.0:8082".parse().unwrap())?;
    let window_s: u64 = setting(&mut args, "--window-s", "WINDOW_S", 300)?;
    let timeout: u64 = setting(&mut args, "--timeout-ms", "PULL_TIMEOUT_MS", 500)?;
    finish(args)?;
    let discovery = match (generators.trim(), discover.trim()) {
        ("", "") => return Err(format!("--generators or --discover is required\n{USAGE}")),
        (list, "") => {
            Discovery::List(list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
        }
        ("", d) => {
            let (name, port) = d.rsplit_once(':').ok_or_else(|| format!("--discover {d:?}: expected NAME:PORT"))?;
            Discovery::Dns {
                name: name.to_owned(),
                port: port.parse().map_err(|_| format!("--discover {d:?}: bad port"))?,
            }
        }
        _ => return Err("--generators and --discover exclude each other".into()),
    };
    Target::parse(&api_url)?;
    if window_s == 0 || timeout == 0 {
        return Err("--window-s and --timeout-ms must be > 0".into());
    }
    let agg = Arc::new(Aggregator::new(aggregator::Config {
        discovery,
        window_s,
        timeout: Duration::from_millis(timeout),
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
                Some(Response::json(200, &body).route("config"))
            }
            path => loadtest::web::file(path).map(|(ct, body)| {
                Response::new(200, ct, body.as_bytes().to_vec()).header("Cache-Control", "no-cache").route("page")
            }),
        }
    });
    let server = loadtest::ops::serve(listen, Arc::new(agg.registry()), routes)?;
    let stop = on_signal()?;
    agg.run(&stop);
    server.shutdown(Duration::from_secs(2));
    Ok(())
}
