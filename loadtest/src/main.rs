//! `loadtest`: the load-test kit's binary. Subcommands: hello-world, updater.

use crossbeam_channel::Sender;
use loadtest::{client::Target, setting, updater};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

const USAGE: &str = "\
Usage: loadtest hello-world [--listen ADDR]
       loadtest updater [--api-url URL] [--interval-ms N] [--timeout-ms N] [--start-value X] [--listen ADDR]

hello-world   the calibration server: GET / answers a fixed body (+ /healthz, /metrics)
              --listen (LISTEN_ADDR, default 0.0.0.0:8080)
updater       POSTs {\"value\": x} to the API on an absolute schedule, x a random walk
              --api-url (API_URL, default http://127.0.0.1:8080/)
              --interval-ms (UPDATE_INTERVAL_MS, default 1000)
              --timeout-ms (UPDATE_TIMEOUT_MS, default 900)
              --start-value (START_VALUE, default 1.0)
              --listen (LISTEN_ADDR, default 0.0.0.0:8083): /healthz and /metrics
Logs: RUST_LOG (default info). SIGTERM/SIGINT stop either cleanly.";

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
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

fn run() -> Result<(), String> {
    let mut args = pico_args::Arguments::from_env();
    if args.contains(["-h", "--help"]) {
        println!("{USAGE}");
        return Ok(());
    }
    match args.subcommand().map_err(|e| e.to_string())?.as_deref() {
        Some("hello-world") => {
            let listen: SocketAddr = setting(&mut args, "--listen", "LISTEN_ADDR", "0.0.0.0:8080".parse().unwrap())?;
            finish(args)?;
            let stop = on_signal()?;
            let server = loadtest::hello::start(listen)?;
            let _ = stop.recv();
            server.shutdown(Duration::from_secs(5));
            Ok(())
        }
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
            Ok(())
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
