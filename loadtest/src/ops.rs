//! The kit's own small servers on redis-api's HTTP layer: `/healthz`, `/metrics` and whatever
//! routes a tool adds, with a Prometheus registry per process.

use prometheus_client::registry::Registry;
use redis_api::http::{Handler, Limits, Method, Request, Response, Server, ServerHandle};
use redis_api::metrics::Metrics;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Routes a tool serves besides `/healthz` and `/metrics`.
pub type Routes = Box<dyn Fn(&Request) -> Option<Response> + Send + Sync>;

struct Ops {
    registry: Arc<Registry>,
    routes: Routes,
}

impl Handler for Ops {
    fn handle(&self, req: &Request) -> Response {
        if let Some(resp) = (self.routes)(req) {
            return resp;
        }
        match (&req.method, req.path.as_str()) {
            (Method::Get | Method::Head, "/healthz") => {
                Response::new(200, "text/plain", b"ok\n".to_vec()).route("healthz")
            }
            (Method::Get | Method::Head, "/metrics") => {
                let mut text = String::new();
                let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
                Response::new(200, "application/openmetrics-text; version=1.0.0; charset=utf-8", text.into_bytes())
                    .route("metrics")
            }
            _ => redis_api::error::ApiError::NotFound.to_response().route("not_found"),
        }
    }

    fn decorate(&self, _origin: Option<&str>, resp: &mut Response) {
        // The kit's pages fetch from other origins (the API, the aggregator).
        resp.headers.push(("Access-Control-Allow-Origin", "*".into()));
    }
}

/// Limits of the kit's servers: generous, they face only the kit itself.
pub fn limits() -> Limits {
    Limits {
        max_connections: 1024,
        max_header_bytes: 16 * 1024,
        max_body_bytes: 64 * 1024,
        header_timeout: Duration::from_secs(5),
        body_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(60),
        write_timeout: Duration::from_secs(5),
        deadline: Duration::from_secs(5),
        // Serializing HDR histograms (deflate) needs more than the API's small stacks.
        worker_stack: 4 << 20,
        worker_retire: redis_api::http::WORKER_RETIRE,
    }
}

/// Serves `routes` + `/healthz` + `/metrics` on `addr`.
pub fn serve(addr: SocketAddr, registry: Arc<Registry>, routes: Routes) -> Result<ServerHandle, String> {
    let server = Server::bind(addr, limits(), Ops { registry, routes }, Arc::new(Metrics::new()))
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let handle = server.start().map_err(|e| e.to_string())?;
    log::info!("listening on {}", handle.local_addr());
    Ok(handle)
}
