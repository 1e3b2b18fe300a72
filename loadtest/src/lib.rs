//! redis-api's load-test kit, one binary with subcommands.
//!
//! - [`client`]: a small blocking HTTP/1.1 client (keep-alive, timeouts) on `httparse`.
//! - [`hello`]: the hello-world calibration server, on redis-api's own HTTP layer.
//! - [`updater`]: POSTs a random walk to the API on an absolute 1-second schedule.
//! - [`ops`]: `/healthz` and `/metrics` for the kit's long-running processes.
//! - [`stats`]: 1-second intervals with HDR histograms, and their wire form.
//! - [`attack`]: the open-loop, constant-rate load generator.
//! - [`aggregator`]: pulls the generators' intervals and merges them; [`web`] its pages.

pub mod aggregator;
pub mod attack;
pub mod client;
pub mod hello;
pub mod ops;
pub mod stats;
pub mod updater;
pub mod web;
