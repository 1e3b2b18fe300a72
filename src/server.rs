//! The `redis-api` process: wires config, Redis pools, health watch and HTTP server together,
//! then waits for SIGTERM/SIGINT (graceful drain) or for the health watch to give up.

use crate::api::App;
use crate::cache::Cache;
use crate::config::{Config, ReadMode};
use crate::health::{self, Health};
use crate::http::{Limits, Server};
use crate::metrics::Metrics;
use crate::store::Store;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::error::Error;
use std::sync::Arc;
use std::thread;

/// What ends the process.
enum Event {
    Signal(i32),
    GiveUp(String),
}

/// Runs the server until a signal (returns `Ok` after the drain) or until Redis could not be
/// reached within `--redis-wait` (returns `Err`).
pub fn run(config: Config) -> Result<(), Box<dyn Error>> {
    log::info!("starting redis-api {} with {}", env!("CARGO_PKG_VERSION"), config.summary());
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(Store::new(&config, metrics.clone())?);
    let cache =
        (config.read_mode == ReadMode::Memory).then(|| Arc::new(Cache::new(config.memory_refresh, metrics.clone())));
    let health = Arc::new(Health::new(config.replica_link_grace, cache.clone()));
    let app = App {
        store: store.clone(),
        cache: cache.clone(),
        health: health.clone(),
        metrics: metrics.clone(),
        cors: config.cors_origins.clone(),
    };
    let server = Server::bind(config.listen, Limits::from_config(&config), app, metrics.clone())
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let handle = server.start()?;
    log::info!("listening on {}", handle.local_addr());

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
        let store = store.clone();
        thread::Builder::new().name("memory-cache".into()).spawn(move || cache.run(&store, &cache_stop_rx))?;
    }
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
            let _ = stop_health.send(());
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
