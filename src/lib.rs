//! redis-api: a small HTTP API that serves one value from a local Redis replica and writes it
//! to the Redis master, each request under a hard deadline.
//!
//! Crate map — one module owns each concern:
//! - [`config`]: argv + environment → validated [`config::Config`] (the only reader of either).
//! - the HTTP/1.1 layer is the workspace's `http1` crate (acceptor, worker pool, connections,
//!   limits); [`api`] plugs into it as its `Handler`, [`metrics`] as its `Observer`.
//! - [`api`]: the routes, `(method, path)` → handler.
//! - [`error`]: every error a request can meet, mapped to status + JSON in one place.
//! - [`store`]: the only module that talks to Redis (pools, commands, timeouts, TLS).
//! - [`gate`]: admission to a Redis pool: FIFO waiting, refused at once when it cannot make
//!   the deadline.
//! - [`breaker`]: the circuit breaker that refuses writes at once while the master is failing.
//! - [`cache`]: memory read mode's in-memory copy, kept fresh by change notices.
//! - [`health`]: the background watch of the replica and master that `/readyz` reports.
//! - [`metrics`]: the Prometheus registry.
//! - [`deadline`]: the per-request time budget.
//! - [`server`]: wiring, signals and graceful shutdown for the `redis-api` binary.

pub mod api;
pub mod breaker;
pub mod cache;
pub mod config;
pub mod cpu;
pub mod deadline;
pub mod error;
pub mod gate;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod server;
pub mod store;
