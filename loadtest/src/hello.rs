//! hello-world: the calibration target. The workspace's HTTP layer (`http1`, as redis-api's) answering a small fixed body
//! with no Redis behind it: its throughput is the ceiling of that layer on a machine.

use crate::ops;
use http1::{Method, Response, ServerHandle};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;

/// The body `GET /` answers.
pub const BODY: &[u8] = b"Hello, World!\n";

/// Starts the server; `/` answers [`BODY`] and counts itself in `hello_requests_total`.
pub fn start(addr: SocketAddr) -> Result<ServerHandle, String> {
    let mut registry = Registry::with_prefix("hello");
    let served = Counter::<u64>::default();
    registry.register("requests", "GET / answered", served.clone());
    let routes: ops::Routes = Box::new(move |req| match (&req.method, req.path.as_str()) {
        (Method::Get | Method::Head, "/") => {
            served.inc();
            Some(Response::new(200, "text/plain", BODY.to_vec()).route("hello"))
        }
        _ => None,
    });
    ops::serve(addr, registry, routes)
}
