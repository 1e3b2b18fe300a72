//! The routes: one `match` on (method, path) → a plain handler function. Handlers return
//! `Result<Response, ApiError>`; errors become responses through [`ApiError::to_response`].
//! [`App`] serves the main port; [`Probes`] serves the probe port (`/healthz`, `/readyz`,
//! `/metrics` only), whose own small connection cap no client traffic can fill.

use crate::cache::Cache;
use crate::config::CorsOrigins;
use crate::deadline::Deadline;
use crate::error::{ApiError, json};
use crate::gate::{Admission, Admit};
use crate::health::{Health, Ticket};
use crate::metrics::Metrics;
use crate::store::{Fetched, Store, WriteEffect};
use http1::{ConnState, Handler, Method, Request, Response};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Methods `/` answers.
const ALLOW_VALUE: &str = "GET, HEAD, POST, OPTIONS";
/// Methods the operational routes answer.
const ALLOW_OPS: &str = "GET, HEAD, OPTIONS";
/// How long a browser may cache a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "600";
/// Response headers a browser page may read besides the CORS-safelisted ones: the value's age.
const EXPOSE_HEADERS: &str = "Age";

/// The application: the state the routes need.
pub struct App {
    parts: Arc<Parts>,
    /// Memory read mode's copy, if that mode is on.
    cache: Option<Arc<Cache>>,
    cors: CorsOrigins,
    /// Each request's budget from its first byte (`--deadline`).
    deadline: Duration,
}

/// What a deferred GET's answer is made with, behind one reference count: its completion and
/// late answer each hold it, and that count (like any shared by every worker and the reader)
/// moves between cores at each clone and drop; three separate `Arc`s cost three times that.
struct Parts {
    store: Arc<Store>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

impl Handler for App {
    fn handle(&self, req: &Request) -> Response {
        let (route, result) = self.route(req);
        self.answer(req.conn_state(), result).route(route)
    }

    fn on_error(&self, err: &http1::Error) -> Response {
        ApiError::from(err.clone()).to_response()
    }

    /// Each connection remembers its last refusal for overload (see [`Admission`]).
    fn connection_state(&self) -> Option<ConnState> {
        Some(Arc::new(Admission::default()))
    }

    fn decorate(&self, origin: Option<&str>, resp: &mut Response) {
        resp.headers.push(("Access-Control-Expose-Headers", EXPOSE_HEADERS.into()));
        match &self.cors {
            CorsOrigins::Any => resp.headers.push(("Access-Control-Allow-Origin", "*".into())),
            CorsOrigins::List(list) => {
                if let Some(origin) = origin.filter(|o| list.iter().any(|a| a == o)) {
                    resp.headers.push(("Access-Control-Allow-Origin", origin.to_owned().into()));
                }
                resp.headers.push(("Vary", "Origin".into()));
            }
        }
    }
}

impl App {
    pub fn new(
        store: Arc<Store>,
        cache: Option<Arc<Cache>>,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
        cors: CorsOrigins,
        deadline: Duration,
    ) -> App {
        App { parts: Arc::new(Parts { store, health, metrics }), cache, cors, deadline }
    }

    fn route(&self, req: &Request) -> (&'static str, Result<Response, ApiError>) {
        use Method::*;
        match (&req.method, req.path.as_str()) {
            (Get | Head, "/") => ("value", Ok(self.get_value_with_age(req))),
            (Post, "/") => ("value", self.set_value(req)),
            (Options, "/") => ("preflight", Ok(preflight(req))),
            (_, "/") => ("value", Err(ApiError::MethodNotAllowed { allow: ALLOW_VALUE })),
            (_, "/healthz" | "/readyz" | "/metrics") => self.ops().route(req),
            _ => ("not_found", Err(ApiError::NotFound)),
        }
    }

    fn answer(&self, admission: Option<&Admission>, result: Result<Response, ApiError>) -> Response {
        answer(&self.parts.metrics, admission, result)
    }

    /// The request's deadline: its budget from its first byte.
    fn deadline(&self, req: &Request) -> Deadline {
        Deadline::new(req.started, self.deadline)
    }

    fn ops(&self) -> Ops<'_> {
        Ops { health: &self.parts.health, metrics: &self.parts.metrics, cache: self.cache.as_deref() }
    }

    /// GET's answer. While a read of the replica is in flight, a request that can be answered
    /// later joins the batch pending behind it and leaves its answer to the batch's sender
    /// (the worker goes back to its connection instead of sleeping until then); otherwise it
    /// reads (or waits for a shared read) here.
    /// Not inlined into the router: its frame (grown with deferred answers) would then be on
    /// the stack of every request, the probes' and ops routes' too (one more stack page per
    /// worker; docs/design.md).
    #[inline(never)]
    fn get_value_with_age(&self, req: &Request) -> Response {
        let (deadline, admission) = (self.deadline(req), req.conn_state::<Admission>());
        // Only a replica process that has synced with the master during its life is read, and
        // only while it is still the process listening (see health.rs).
        let ticket = match self.parts.health.may_read() {
            Ok(ticket) => ticket,
            Err(reason) => return with_age(&self.parts.health, self.answer(admission, Err(refused(reason)))),
        };
        let finish = |read| finish_get(&self.parts, admission, &ticket, &deadline, read);
        if let Some(cache) = &self.cache {
            let fresh = cache.fresh(ticket.epoch);
            self.parts.metrics.memory_read(fresh.is_some());
            if let Some((copy, at)) = fresh {
                // Checked against the replica as the read that made the copy: its sentinel seen
                // alive since vouches for it.
                return finish(Fetched { read: Ok(copy.value()), at });
            }
        }
        if let Err(e) = self.parts.store.admit_read(&deadline, admit(admission)) {
            return finish(Fetched::now(Err(e)));
        }
        let deferred = self.parts.store.get_later(deadline, || {
            // Every GET answer says the value's age, the late one too.
            let parts = self.parts.clone();
            let responder = req.defer("value", move || {
                with_age(&parts.health, ApiError::DeadlineExceeded(WriteEffect::Read).to_response().route("value"))
            })?;
            let f = Finish { parts: self.parts.clone(), ticket: ticket.clone(), deadline, conn: req.conn.clone() };
            Some(Box::new(move |read| {
                let admission = f.conn.as_deref().and_then(|c| c.downcast_ref::<Admission>());
                responder.complete(finish_get(&f.parts, admission, &f.ticket, &f.deadline, read));
            }))
        });
        if deferred {
            // Not the answer (the worker ignores it): the responder writes that.
            return Response::new(202, "", Vec::new()).route("value");
        }
        finish(self.parts.store.get(&deadline, admit(admission)))
    }

    fn set_value(&self, req: &Request) -> Result<Response, ApiError> {
        let value = parse_value(&req.body)?;
        self.parts.store.set(&self.deadline(req), admit(req.conn_state()), value)?;
        Ok(current(value))
    }
}

/// What a GET's answer is made from on the thread that answers it later.
struct Finish {
    parts: Arc<Parts>,
    ticket: Ticket,
    deadline: Deadline,
    /// The connection's state (its [`Admission`]).
    conn: Option<ConnState>,
}

/// How a request of a connection with `admission` may be admitted.
fn admit(admission: Option<&Admission>) -> Admit {
    admission.map_or(Admit::OrRefuse, Admission::admit)
}

/// GET's answer from a read of the value: the replica is confirmed to be the process the read
/// was allowed on, and every answer, value or error, says how old the value is (RFC 9111
/// `Age`: seconds since the origin — the master — last vouched for it; 0 while the replica is
/// in sync).
fn finish_get(
    parts: &Parts,
    admission: Option<&Admission>,
    ticket: &Ticket,
    deadline: &Deadline,
    fetched: Fetched,
) -> Response {
    let result = fetched.read.map_err(ApiError::from).and_then(|value| {
        let budget = deadline.remaining().ok_or(ApiError::DeadlineExceeded(WriteEffect::Read))?;
        parts.health.confirm(&parts.store, ticket, fetched.at, budget).map_err(refused)?;
        Ok(current(value.ok_or(ApiError::NoValue)?))
    });
    with_age(&parts.health, answer(&parts.metrics, admission, result)).route("value")
}

/// `{"current": value}`, the answer of GET and POST, serialized straight from the number (no
/// JSON tree built per answer).
fn current(value: f64) -> Response {
    #[derive(serde::Serialize)]
    struct Current {
        current: f64,
    }
    // Serializing a number into memory cannot fail.
    Response::json(200, serde_json::to_vec(&Current { current: value }).unwrap_or_default())
}

/// `resp` with the value's `Age`, when it is known.
fn with_age(health: &Health, resp: Response) -> Response {
    match health.value_age() {
        // In sync, the age is 0: no string to allocate.
        Some(age) if age.as_secs() == 0 => resp.header("Age", "0"),
        Some(age) => resp.header("Age", age.as_secs().to_string()),
        None => resp,
    }
}

/// Reads refused by the readiness rules.
fn refused(reason: String) -> ApiError {
    ApiError::Unavailable { reason, outcome: WriteEffect::Read }
}

/// The response for a handler's result: an error becomes its status and JSON here, and a
/// deadline expiration is counted.
/// A refusal for overload is noted on the connection's `admission`, so its next request
/// within `Retry-After` waits its turn.
fn answer(metrics: &Metrics, admission: Option<&Admission>, result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(|e| {
        if e.is_deadline() {
            metrics.deadline_expired.inc();
        }
        if let (ApiError::Shed { .. }, Some(a)) = (&e, admission) {
            a.refused();
        }
        e.to_response()
    })
}

/// The operational routes, shared by both ports.
struct Ops<'a> {
    health: &'a Health,
    metrics: &'a Metrics,
    cache: Option<&'a Cache>,
}

impl Ops<'_> {
    fn route(&self, req: &Request) -> (&'static str, Result<Response, ApiError>) {
        use Method::*;
        match (&req.method, req.path.as_str()) {
            (Options, "/healthz" | "/readyz" | "/metrics") => ("preflight", Ok(preflight(req))),
            (Get | Head, "/healthz") => ("healthz", Ok(json(200, &json!({ "status": "ok" })))),
            (Get | Head, "/readyz") => ("readyz", Ok(self.readyz())),
            (Get | Head, "/metrics") => ("metrics", Ok(self.metrics_page())),
            (_, "/healthz" | "/readyz" | "/metrics") => ("ops", Err(ApiError::MethodNotAllowed { allow: ALLOW_OPS })),
            _ => ("not_found", Err(ApiError::NotFound)),
        }
    }

    fn readyz(&self) -> Response {
        let r = self.health.readiness();
        let status = if r.ready { 200 } else { 503 };
        let mut body = serde_json::to_value(&r).unwrap_or_default();
        if !r.ready {
            body["error"] = json!(format!("not ready: {}", r.reason));
        }
        json(status, &body)
    }

    fn metrics_page(&self) -> Response {
        if let Some(age) = self.cache.and_then(|c| c.age()) {
            self.metrics.memory_value_age.set(age.as_secs_f64());
        }
        self.metrics.value_age.set(self.health.value_age().map_or(-1.0, |a| a.as_secs_f64()));
        Response::new(
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            self.metrics.encode().into_bytes(),
        )
    }
}

/// The probe port's handler: `/healthz`, `/readyz` and `/metrics` only (404 otherwise), on a
/// listener of its own, so the kubelet and Prometheus are answered whatever clients do to the
/// main port (at its cap, a slowloris, 10× load).
pub struct Probes {
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    pub cache: Option<Arc<Cache>>,
}

impl Handler for Probes {
    fn handle(&self, req: &Request) -> Response {
        let ops = Ops { health: &self.health, metrics: &self.metrics, cache: self.cache.as_deref() };
        let (route, result) = ops.route(req);
        result.unwrap_or_else(|e| e.to_response()).route(route)
    }

    fn on_error(&self, err: &http1::Error) -> Response {
        ApiError::from(err.clone()).to_response()
    }
}

/// `{"value": <finite number>}` exactly: no other field (a typo such as `{"valeu": 5, "value":
/// 4}` or a client expecting another field to matter is told, not silently ignored), nothing
/// after it.
fn parse_value(body: &[u8]) -> Result<f64, ApiError> {
    if body.is_empty() {
        return Err(ApiError::InvalidBody("empty body; expected {\"value\": <number>}".into()));
    }
    let parsed: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::InvalidBody(format!("malformed JSON: {e}; expected {{\"value\": <number>}}")))?;
    let Some(object) = parsed.as_object() else {
        return Err(ApiError::InvalidBody("invalid body: expected a JSON object {\"value\": <number>}".into()));
    };
    let value = match object.get("value") {
        None => return Err(ApiError::InvalidBody("invalid body: missing field \"value\"".into())),
        Some(v) => v
            .as_f64()
            .ok_or_else(|| ApiError::InvalidBody(format!("invalid body: \"value\" must be a number, got {v}")))?,
    };
    if let Some(other) = object.keys().find(|k| k.as_str() != "value") {
        let other = serde_json::Value::String(other.clone());
        return Err(ApiError::InvalidBody(format!(
            "invalid body: unknown field {other}; expected exactly {{\"value\": <number>}}"
        )));
    }
    if !value.is_finite() {
        return Err(ApiError::InvalidBody("value must be a finite number".into()));
    }
    Ok(value)
}

fn preflight(req: &Request) -> Response {
    let methods = if req.path == "/" { ALLOW_VALUE } else { ALLOW_OPS };
    Response::new(204, "", Vec::new())
        .header("Allow", methods)
        .header("Access-Control-Allow-Methods", methods)
        .header("Access-Control-Allow-Headers", "Content-Type")
        .header("Access-Control-Max-Age", PREFLIGHT_MAX_AGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bodies: numbers accepted, everything else a 400 saying what is wrong.
    #[test]
    fn value_bodies() {
        assert_eq!(parse_value(br#"{"value": 1.5}"#), Ok(1.5));
        assert_eq!(parse_value(br#"{"value": -3}"#), Ok(-3.0));
        for (body, says) in [
            (&b""[..], "empty body"),
            (b"{", "malformed JSON"),
            (br#"{"value": "1"}"#, "invalid body"),
            (br#"{"valeu": 1}"#, "missing field"),
            (br#"{"value": 1} x"#, "trailing"),
            (br#"{"value": 1e999}"#, "malformed JSON"),
            (br#"[1]"#, "invalid body"),
            (br#"{"value": null}"#, "invalid body"),
        ] {
            match parse_value(body) {
                Err(ApiError::InvalidBody(msg)) => assert!(msg.contains(says), "{body:?}: {msg}"),
                other => panic!("{body:?}: {other:?}"),
            }
        }
    }
}
