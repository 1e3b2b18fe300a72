//! The `redis-api` process: wires config, Redis pools, health watch and HTTP server together,
//! then waits for SIGTERM/SIGINT (graceful drain) or for the health watch to give up.

use crate::api::{App, Probes};
use crate::cache::Cache;
use crate::config::{Config, ReadMode};
use crate::cpu;
use crate::health::{self, Health};
use crate::metrics::Metrics;
use crate::store::Store;
use http1::{Limits, Server};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::error::Error;
use std::sync::Arc;
use std::thread;

/// Connection cap of the probe listener: the kubelet's probes and a Prometheus scrape or two.
/// At the cap its idle or slow connections are displaced like the main port's.
pub const PROBE_MAX_CONNECTIONS: usize = 16;
/// Largest request head and body the probe listener accepts: probes send small GETs.
const PROBE_MAX_HEADER_BYTES: usize = 8 * 1024;
const PROBE_MAX_BODY_BYTES: usize = 1024;

/// What ends the process.
enum Event {
    Signal(i32),
    GiveUp(String),
}

/// The HTTP layer's limits from the configuration.
fn limits(c: &Config) -> Limits {
    Limits {
        max_connections: c.max_connections,
        max_header_bytes: c.max_header_bytes,
        max_body_bytes: c.max_body_bytes,
        header_timeout: c.header_timeout,
        body_timeout: c.body_timeout,
        idle_timeout: c.idle_timeout,
        write_timeout: c.write_timeout,
        deadline: c.deadline,
        worker_stack: http1::WORKER_STACK,
        worker_retire: http1::WORKER_RETIRE,
    }
}

/// Runs the server until a signal (returns `Ok` after the drain) or until Redis could not be
/// reached within `--redis-wait` (returns `Err`).
pub fn run(config: Config) -> Result<(), Box<dyn Error>> {
    log::info!("starting redis-api {}: {}", env!("CARGO_PKG_VERSION"), config.summary());
    for warning in &config.warnings {
        log::warn!("{warning}");
    }
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(Store::new(&config, metrics.clone())?);
    store.start_reader()?;
    let cache =
        (config.read_mode == ReadMode::Memory).then(|| Arc::new(Cache::new(config.memory_refresh, metrics.clone())));
    let health = Arc::new(Health::new(&config, cache.clone()));
    let app = App::new(
        store.clone(),
        cache.clone(),
        health.clone(),
        metrics.clone(),
        config.cors_origins.clone(),
        config.deadline,
    );
    let server = Server::bind(config.listen, limits(&config), app, metrics.clone())
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let handle = server.start()?;
    let between = handle.between_requests();
    store.gather_reads(move || between.count() > 0);
    log::info!("listening on {}", handle.local_addr());
    let probes = match config.probe_listen {
        Some(addr) => {
            let limits = Limits {
                max_connections: PROBE_MAX_CONNECTIONS,
                max_header_bytes: PROBE_MAX_HEADER_BYTES.min(config.max_header_bytes),
                max_body_bytes: PROBE_MAX_BODY_BYTES,
                ..limits(&config)
            };
            let handler = Probes { health: health.clone(), metrics: metrics.clone(), cache: cache.clone() };
            // Not observed: the main port's connection and worker gauges describe the main
            // port's capacity alone.
            let server = Server::bind(addr, limits, handler, Arc::new(()))
                .map_err(|e| format!("cannot listen on {addr} (--probe-listen): {e}"))?;
            let handle = server.start()?;
            // Logged after the main address: whoever reads the first "listening on" line gets that.
            log::info!("probes listening on {} (/healthz, /readyz, /metrics)", handle.local_addr());
            Some(handle)
        }
        None => None,
    };

    let (events_tx, events) = crossbeam_channel::bounded(4);
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    let tx = events_tx.clone();
    thread::Builder::new().name("signals".into()).spawn(move || {
        for sig in signals.forever() {
            let _ = tx.send(Event::Signal(sig));
        }
    })?;
    let (stop_cache, cache_stop_rx) = crossbeam_channel::bounded::<()>(1);
    if let Some(cache) = cache {
        let (store, health) = (store.clone(), health.clone());
        thread::Builder::new().name("memory-cache".into()).spawn(move || cache.run(&store, &health, &cache_stop_rx))?;
    }
    let (stop_cpu, cpu_stop_rx) = crossbeam_channel::bounded::<()>(1);
    let (pacer, m, s) = (handle.pacer(), metrics.clone(), store.clone());
    thread::Builder::new().name("cpu-watch".into()).spawn(move || watch_cpu(&pacer, &s, &m, &cpu_stop_rx))?;
    let (stop_health, stop_rx) = crossbeam_channel::bounded::<()>(1);
    let (h, m) = (health.clone(), metrics.clone());
    let (interval, wait) = (config.health_interval, config.redis_wait);
    thread::Builder::new().name("health".into()).spawn(move || {
        if let Err(why) = health::watch(&h, &store, &m, interval, wait, &stop_rx) {
            let _ = events_tx.send(Event::GiveUp(why));
        }
    })?;

    match events.recv() {
        Ok(Event::Signal(sig)) => {
            log::info!("signal {sig}: not ready, draining connections (grace {:?})", config.shutdown_grace);
            // Answers close their connections first, then readiness turns off: whoever sees
            // /readyz 503 also gets `Connection: close` on everything after it.
            handle.begin_drain();
            health.start_draining();
            // Probes see 503 while the listener still serves, so load balancers can let go.
            thread::sleep(config.shutdown_delay);
            let left = handle.shutdown(config.shutdown_grace);
            // Probes answer until the main port has drained (readiness says "shutting down").
            if let Some(probes) = probes {
                probes.shutdown(std::time::Duration::from_millis(100));
            }
            let _ = stop_health.send(());
            let _ = stop_cpu.send(());
            let _ = stop_cache.send(());
            if left > 0 {
                log::warn!("{left} connection(s) still open after the shutdown grace; exiting anyway");
            }
            log::info!("stopped");
            Ok(())
        }
        Ok(Event::GiveUp(why)) => Err(why.into()),
        Err(_) => Err("internal: event channel closed".into()),
    }
}

/// Paces the main port while the process's CPU quota throttles it, and lets shared reads
/// gather while every CPU of the machine is busy (see [`cpu`]) and the port is not paced:
/// paced, the connections between requests wait for turns that answers give, so a batch
/// gathered for them would only wait out its window (measured under chaos #1: 42 answers
/// past the deadline in one of ten runs, none in sixteen without gathering).
fn watch_cpu(pacer: &http1::Pacer, store: &Store, metrics: &Metrics, stop: &crossbeam_channel::Receiver<()>) {
    let mut throttling = cpu::Throttling::default();
    let mut saturation = cpu::Saturation::default();
    let (mut paced, mut saturated, mut gathering) = (false, false, false);
    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stop.recv_timeout(cpu::EVERY) {
        let pace = throttling.poll();
        paced = pace.unwrap_or(paced);
        saturated = saturation.poll().unwrap_or(saturated);
        // Before pacing starts: whoever sees the port paced sees reads not gathering.
        if gathering != (saturated && !paced) {
            gathering = saturated && !paced;
            store.gather_on(gathering);
            log::debug!("shared reads gather batches: {gathering}");
        }
        let Some(on) = pace else { continue };
        pacer.set(on);
        metrics.http_paced.set(i64::from(on));
        if on {
            log::info!("the CPU quota throttles most periods: workers read their next requests in turns");
        } else {
            log::info!("the CPU quota no longer throttles: workers read their next requests at once");
        }
    }
}
