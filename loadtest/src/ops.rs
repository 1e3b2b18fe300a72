//! The kit's own small servers on the workspace's HTTP layer (`http1`): `/healthz`,
//! `/metrics` and whatever routes a tool adds, with a Prometheus registry per process that
//! also holds the server's own HTTP metrics.

use http1::{Event, Handler, Limits, Method, Observer, Request, Response, Server, ServerHandle};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnswerLabels {
    route: &'static str,
    status: u16,
}

/// A kit server's HTTP metrics (`<prefix>_http_*` at its `/metrics`).
#[derive(Clone, Default)]
struct HttpMetrics {
    requests: Family<AnswerLabels, Counter>,
    in_flight: Gauge,
    open_connections: Gauge,
    refused: Counter,
}

impl HttpMetrics {
    fn register(&self, registry: &mut Registry) {
        let http = registry.sub_registry_with_prefix("http");
        http.register("requests", "answers written, by route and status", self.requests.clone());
        http.register("requests_in_flight", "requests being handled", self.in_flight.clone());
        http.register("connections_open", "open client connections", self.open_connections.clone());
        http.register("connections_refused", "connections refused at the cap", self.refused.clone());
    }
}

impl Observer for HttpMetrics {
    fn event(&self, event: Event) {
        match event {
            Event::Answered { route, status, .. } => {
                self.requests.get_or_create(&AnswerLabels { route, status }).inc();
            }
            Event::RequestStarted => {
                self.in_flight.inc();
            }
            Event::RequestFinished => {
                self.in_flight.dec();
            }
            Event::ConnectionOpened => {
                self.open_connections.inc();
            }
            Event::ConnectionClosed => {
                self.open_connections.dec();
            }
            Event::Refused => {
                self.refused.inc();
            }
            _ => {}
        }
    }
}

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
            _ => Response::json(404, r#"{"error":"not found"}"#).route("not_found"),
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
        worker_retire: http1::WORKER_RETIRE,
    }
}

/// Serves `routes` + `/healthz` + `/metrics` on `addr`; `/metrics` shows `registry` and the
/// server's own HTTP metrics.
pub fn serve(addr: SocketAddr, mut registry: Registry, routes: Routes) -> Result<ServerHandle, String> {
    let http = HttpMetrics::default();
    http.register(&mut registry);
    let registry = Arc::new(registry);
    let server = Server::bind(addr, limits(), Ops { registry, routes }, Arc::new(http))
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let handle = server.start().map_err(|e| e.to_string())?;
    log::info!("listening on {}", handle.local_addr());
    Ok(handle)
}
