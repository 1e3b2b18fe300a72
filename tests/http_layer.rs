//! The HTTP layer in-process with test handlers: a panicking handler becomes a 500 and the
//! worker lives on; request targets, framing, Host and Expect follow RFC 9112 (#13 items
//! 4-6); every answer carries a Date; random and mutated requests never crash the server and
//! always get a well-formed answer or a clean close.

use http1::{Handler, Limits, Request, Response, Server, ServerHandle};
use redis_api::metrics::Metrics;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use testkit::*;

struct TestHandler;

impl Handler for TestHandler {
    fn handle(&self, req: &Request) -> Response {
        if req.path == "/panic" {
            panic!("handler bug");
        }
        if let Some(rest) = req.path.strip_prefix("/later/") {
            return later(req, rest);
        }
        // The path as routed and the body length, so tests see what the layer made of a request.
        Response::new(200, "text/plain", format!("{} {} bytes", req.path, req.body.len()).into_bytes())
    }
}

/// `/later/<ms>`: answered `later <ms>` by another thread after `<ms>` milliseconds when the
/// request may be deferred, else `now <ms>` at once; `/later/drop` drops its responder;
/// `/later/never` answers only after the deadline (the late answer is `late`, 504).
fn later(req: &Request, what: &str) -> Response {
    let late = || Response::new(504, "text/plain", b"late".to_vec()).route("late");
    let Some(responder) = req.defer("late", late) else {
        return Response::new(200, "text/plain", format!("now {what}").into_bytes()).route("later");
    };
    let ms = match what {
        "drop" => return Response::new(200, "text/plain", b"ignored".to_vec()),
        "never" => 1000,
        ms => ms.parse().unwrap_or(0),
    };
    let what = what.to_owned();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(ms));
        responder.complete(Response::new(200, "text/plain", format!("later {what}").into_bytes()).route("later"));
    });
    // Ignored: the responder answers.
    Response::new(200, "text/plain", b"ignored".to_vec())
}

fn start() -> ServerHandle {
    start_with(Duration::from_secs(10))
}

fn start_with(worker_retire: Duration) -> ServerHandle {
    start_metered(worker_retire).0
}

fn start_metered(worker_retire: Duration) -> (ServerHandle, Arc<Metrics>) {
    start_idle(worker_retire, Duration::from_millis(500))
}

fn start_idle(worker_retire: Duration, idle_timeout: Duration) -> (ServerHandle, Arc<Metrics>) {
    let limits = Limits {
        max_connections: 64,
        max_header_bytes: 4096,
        max_body_bytes: 1024,
        header_timeout: Duration::from_millis(500),
        body_timeout: Duration::from_millis(500),
        idle_timeout,
        write_timeout: Duration::from_secs(2),
        deadline: Duration::from_millis(400),
        worker_stack: http1::WORKER_STACK,
        worker_retire,
    };
    let metrics = Arc::new(Metrics::new());
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), limits, TestHandler, metrics.clone()).unwrap();
    (server.start().unwrap(), metrics)
}

/// Requests counted by route and status (`http_requests_total`).
fn counted(metrics: &Metrics, route: &str, status: u16) -> u64 {
    let line = format!("redis_api_http_requests_total{{route=\"{route}\",status=\"{status}\"}} ");
    metrics.encode().lines().find_map(|l| l.strip_prefix(&line)?.parse().ok()).unwrap_or(0)
}

fn text(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// Answers written later by another thread: in order with a pipelined request that arrived
/// meanwhile, HEAD without a body, each counted once; a request with pipelined bytes behind
/// it, or `Connection: close`, is answered at once (and the close still closes).
#[test]
fn deferred_answers_keep_order() {
    keep_order(false);
}

/// The same, paced (workers read their next requests in turns): nothing changes for a client.
#[test]
fn paced_deferred_answers_keep_order() {
    keep_order(true);
}

fn keep_order(paced: bool) {
    let (server, metrics) = start_metered(Duration::from_secs(10));
    server.pacer().set(paced);
    let mut c = Client::connect(server.local_addr());
    let r = c.request("GET", "/later/30", None);
    assert_eq!((r.status, text(&r)), (200, "later 30".into()));
    assert!(r.header("date").is_some(), "a deferred answer is dated");
    // HEAD: the head only (the next answer on the connection parses right after it).
    let r = c.request("HEAD", "/later/10", None);
    assert_eq!((r.status, r.header("content-length")), (200, Some("8")));
    assert!(r.body.is_empty());
    // A request arriving while the one before is pending is answered after it.
    c.send(request_bytes("GET", "/later/150", None, "").as_bytes());
    std::thread::sleep(Duration::from_millis(30));
    c.send(request_bytes("GET", "/ok", None, "").as_bytes());
    let first = c.read_response(false).expect("first answer");
    let second = c.read_response(false).expect("second answer");
    assert_eq!(text(&first), "later 150");
    assert_eq!(text(&second), "/ok 0 bytes");
    // Pipelined together: the first has bytes queued behind it, so it is answered now.
    let two = request_bytes("GET", "/later/20", None, "") + &request_bytes("GET", "/later/20", None, "");
    c.send(two.as_bytes());
    assert_eq!(text(&c.read_response(false).expect("first")), "now 20");
    assert_eq!(text(&c.read_response(false).expect("second")), "later 20");
    // Connection: close is never deferred, and closes after its answer.
    c.send(request_bytes("GET", "/later/20", None, "Connection: close\r\n").as_bytes());
    let r = c.read_response(false).expect("answer");
    assert_eq!((text(&r), r.header("connection")), ("now 20".into(), Some("close")));
    assert!(c.is_closed());
    assert_eq!(counted(&metrics, "later", 200), 6, "each answer counted once");
    assert_eq!(metrics.in_flight.get(), 0);
    assert_eq!(server.shutdown(Duration::from_secs(1)), 0);
}

/// Waits (at most 2 s) until `count` reads `want`; its last reading otherwise.
fn settles_at(count: impl Fn() -> usize, want: usize) -> usize {
    let _ = poll(Duration::from_secs(2), || if count() == want { Ok(()) } else { Err(String::new()) });
    count()
}

/// The count of connections between requests (what shared reads wait for while they gather):
/// a connection waiting for or receiving a request counts; one whose request is being handled
/// or whose deferred answer is pending does not, until that answer is written (by the worker at
/// the deadline, or by the responder); a closed one no longer counts.
#[test]
fn between_requests_counts_connections_without_a_request_in_hand() {
    let server = start();
    let between = server.between_requests();
    let count = || between.count();
    assert_eq!(count(), 0);
    let mut a = Client::connect(server.local_addr());
    let mut b = Client::connect(server.local_addr());
    assert_eq!(settles_at(count, 2), 2, "two connections waiting for a request");
    // Half a head: receiving counts (its request may come any moment).
    b.send(b"GET /ok HTTP/1.1\r\n");
    // Deferred and never answered by its responder: pending until the 400 ms deadline.
    a.send(request_bytes("GET", "/later/never", None, "").as_bytes());
    assert_eq!(settles_at(count, 1), 1, "a's request is handled and its answer pending");
    b.send(b"Host: x\r\n\r\n");
    assert_eq!(text(&b.read_response(false).expect("b's answer")), "/ok 0 bytes");
    let r = a.read_response(false).expect("a's late answer");
    assert_eq!((r.status, text(&r)), (504, "late".into()));
    assert_eq!(settles_at(count, 2), 2, "a answered at the deadline: between requests again");
    // Answered by the responder.
    let r = a.request("GET", "/later/20", None);
    assert_eq!(text(&r), "later 20");
    assert_eq!(settles_at(count, 2), 2, "a answered by the responder");
    drop(a);
    assert_eq!(settles_at(count, 1), 1, "a closed");
    drop(b);
    assert_eq!(settles_at(count, 0), 0, "b closed");
    assert_eq!(server.shutdown(Duration::from_secs(1)), 0);
}

/// A deferred reply still pending at the deadline is answered by the worker with the late
/// answer (the responder's later answer is dropped), and the connection goes on; a responder
/// dropped unanswered answers 500.
#[test]
fn deferred_reply_late_or_dropped() {
    late_or_dropped(false);
}

/// The same, paced.
#[test]
fn paced_deferred_reply_late_or_dropped() {
    late_or_dropped(true);
}

fn late_or_dropped(paced: bool) {
    // Idle longer than the wait below: the connection must outlive the late responder.
    let (server, metrics) = start_idle(Duration::from_secs(10), Duration::from_secs(2));
    server.pacer().set(paced);
    let mut c = Client::connect(server.local_addr());
    let t = std::time::Instant::now();
    let r = c.request("GET", "/later/never", None);
    assert_eq!((r.status, text(&r)), (504, "late".into()));
    assert!(t.elapsed() >= Duration::from_millis(390), "answered before the deadline: {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_millis(1500), "answered long after the deadline: {:?}", t.elapsed());
    let r = c.request("GET", "/later/drop", None);
    assert_eq!((r.status, r.error()), (500, "internal error".into()));
    // The responder of the late reply completes meanwhile: nothing of it reaches the client.
    std::thread::sleep(Duration::from_millis(800));
    let r = c.request("GET", "/later/10", None);
    assert_eq!(text(&r), "later 10");
    assert_eq!(counted(&metrics, "late", 504), 1);
    assert_eq!(counted(&metrics, "late", 500), 1, "the dropped responder's 500, under its late route");
    assert_eq!(counted(&metrics, "later", 200), 1, "the answer after the deadline is not counted");
    assert_eq!(metrics.in_flight.get(), 0);
    assert_eq!(server.shutdown(Duration::from_secs(1)), 0);
}

/// Paced, many keep-alive connections whose answers are written together (by one thread, as
/// the API's reader does) all go on: each worker gets its turn and passes it on, none is lost
/// (a lost turn would leave its connection waiting, and the reads below would time out),
/// including across pacing switched off and on mid-load.
#[test]
fn paced_connections_all_get_their_turns() {
    let (server, metrics) = start_metered(Duration::from_secs(10));
    server.pacer().set(true);
    let addr = server.local_addr();
    let clients: Vec<_> = (0..48)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for n in 0..40 {
                    let r = c.request("GET", &format!("/later/{}", (i + n) % 3), None);
                    assert_eq!(
                        (r.status, text(&r)),
                        (200, format!("later {}", (i + n) % 3)),
                        "client {i}, request {n}"
                    );
                }
            })
        })
        .collect();
    let pacer = server.pacer();
    for on in [false, true, false, true] {
        std::thread::sleep(Duration::from_millis(30));
        pacer.set(on);
    }
    for c in clients {
        c.join().expect("every client served");
    }
    assert_eq!(counted(&metrics, "later", 200), 48 * 40);
    assert_eq!(metrics.in_flight.get(), 0);
    assert_eq!(server.shutdown(Duration::from_secs(1)), 0);
}

/// A panicking handler answers 500; the same connection and the server keep working.
#[test]
fn handler_panic_is_500() {
    let server = start();
    let mut c = Client::connect(server.local_addr());
    for _ in 0..3 {
        let r = c.request("GET", "/panic", None);
        assert_eq!(r.status, 500);
        assert_eq!(r.error(), "internal error");
        assert_eq!(c.request("GET", "/ok", None).status, 200);
    }
    assert_eq!(server.shutdown(Duration::from_secs(1)), 0);
}

/// A burst of connections leaves no threads behind: idle workers retire, and a connection
/// arriving as they do is still served.
#[test]
fn idle_workers_retire() {
    let server = start_with(Duration::from_millis(300));
    let addr = server.local_addr();
    let mut clients: Vec<Client> = (0..20).map(|_| Client::connect(addr)).collect();
    for c in &mut clients {
        assert_eq!(c.request("GET", "/ok", None).status, 200);
    }
    assert_eq!(server.workers(), 20);
    drop(clients);
    // Connections arriving all through the retirement (every 20 ms for 1 s) are all served.
    let until = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < until {
        assert_eq!(Client::connect(addr).request("GET", "/ok", None).status, 200);
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(server.workers(), 0, "idle workers did not retire");
    assert_eq!(Client::connect(addr).request("GET", "/ok", None).status, 200);
    assert_eq!(server.shutdown(Duration::from_secs(1)), 0);
}

/// `://` inside an origin-form target stays in its path or query: `/?x=://y/metrics` is `/`,
/// `/static://y/readyz` is itself, `POST /anything?://x/` is `/anything`; only `http(s)://host`
/// targets are absolute-form, and `*` outside OPTIONS is a 400.
#[test]
fn scheme_separator_inside_target_is_not_absolute() {
    let server = start();
    let mut c = Client::connect(server.local_addr());
    for (raw, path) in [
        ("GET /?x=://y/metrics HTTP/1.1\r\nHost: a\r\n\r\n", "/"),
        ("GET /static://y/readyz HTTP/1.1\r\nHost: a\r\n\r\n", "/static://y/readyz"),
        ("POST /anything?://x/ HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}", "/anything"),
        ("GET http://a/metrics?x HTTP/1.1\r\nHost: a\r\n\r\n", "/metrics"),
        ("GET HTTPS://a HTTP/1.1\r\nHost: a\r\n\r\n", "/"),
    ] {
        c.send(raw.as_bytes());
        let r = c.read_response(false).unwrap();
        assert_eq!(r.status, 200, "{raw:?}");
        assert_eq!(r.text().split(' ').next(), Some(path), "{raw:?}");
    }
    for raw in ["GET * HTTP/1.1\r\nHost: a\r\n\r\n", "GET x://y/metrics HTTP/1.1\r\nHost: a\r\n\r\n"] {
        let mut c = Client::connect(server.local_addr());
        c.send(raw.as_bytes());
        assert_bad_and_closed(&mut c, raw.as_bytes());
    }
    assert_eq!(server.shutdown(Duration::from_secs(1)), 0);
}

/// Framing that RFC 9112 and nginx reject and a laxer proxy could read differently, two Host
/// headers and an invalid Host: each is a 400 with Connection: close, and the connection ends
/// (so nothing after it is read as a request).
const REJECTED: &[&[u8]] = &[
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\xc2\xa0\r\n\r\nhello world",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \xe3\x80\x8011\r\n\r\nhello world",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\xc2\xa0\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n+b\r\nhello world\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n b\r\nhello world\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a b\r\nhello\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX: y\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX : y\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n folded\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a b/c\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: a b/c\r\n\r\n",
];

/// Each smuggling shape, double Host and invalid Host: 400 + Connection: close, then EOF.
#[test]
fn smuggling_shapes_and_bad_host_are_400_and_close() {
    let server = start();
    for raw in REJECTED {
        let mut c = Client::connect(server.local_addr());
        c.send(raw);
        assert_bad_and_closed(&mut c, raw);
    }
    // Valid trailers and extensions still work, and the connection stays open.
    let mut c = Client::connect(server.local_addr());
    c.send(b"POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 ; a=\"b\"\r\nhello\r\n0\r\nX: y\r\nZ:\r\n\r\n");
    let r = c.read_response(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "/t 5 bytes"));
    assert_eq!(c.request("GET", "/after", None).status, 200);
    assert_eq!(server.shutdown(Duration::from_secs(1)), 0);
}

fn assert_bad_and_closed(c: &mut Client, raw: &[u8]) {
    let r = c.read_response(false).unwrap_or_else(|| panic!("no answer to {:?}", String::from_utf8_lossy(raw)));
    assert_eq!(r.status, 400, "{:?}: {}", String::from_utf8_lossy(raw), r.text());
    assert_eq!(r.header("connection"), Some("close"), "{:?}", String::from_utf8_lossy(raw));
    assert!(c.is_closed(), "{:?}", String::from_utf8_lossy(raw));
}

/// An HTTP/1.0 request with Expect: 100-continue gets no interim 100, only its answer.
#[test]
fn http10_expect_gets_no_100() {
    let server = start();
    let mut c = Client::connect(server.local_addr());
    c.send(b"POST /e HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello");
    let r = c.read_response(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "/e 5 bytes"));
    assert!(c.is_closed(), "HTTP/1.0 closes after its answer, with nothing else sent");
    // HTTP/1.1 still gets its 100 before the body is sent.
    let mut c = Client::connect(server.local_addr());
    c.send(b"POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    assert_eq!(c.read_response(false).unwrap().status, 100);
    c.send(b"hello");
    assert_eq!(c.read_response(false).unwrap().status, 200);
    assert_eq!(server.shutdown(Duration::from_secs(1)), 0);
}

/// Every answer carries a well-formed, current Date: a 200, a 400, a 431, a 500 and a 505.
#[test]
fn date_on_every_answer() {
    let server = start();
    let mut c = Client::connect(server.local_addr());
    let r = c.request("GET", "/ok", None);
    assert_eq!(r.status, 200);
    check_date(r.header("date")).unwrap();
    let r = c.request("GET", "/panic", None);
    assert_eq!(r.status, 500);
    check_date(r.header("date")).unwrap();
    let many: String = (0..100).map(|i| format!("X-{i}: v\r\n")).collect();
    for (raw, status) in [
        ("GET / HTTP/1.1\r\n\r\n".to_owned(), 400),
        (format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n"), 431),
        ("GET / HTTP/2.0\r\nHost: a\r\n\r\n".to_owned(), 505),
    ] {
        let mut c = Client::connect(server.local_addr());
        c.send(raw.as_bytes());
        let r = c.read_response(false).unwrap();
        assert_eq!(r.status, status);
        check_date(r.header("date")).unwrap();
    }
    assert_eq!(server.shutdown(Duration::from_secs(1)), 0);
}

/// Checks an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`): its shape, that the weekday fits
/// the date, and that it is within a minute of now. Independent of the server's formatter.
fn check_date(value: Option<&str>) -> Result<(), String> {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let v = value.ok_or("no Date header")?;
    let b = v.as_bytes();
    let shape_ok = b.len() == 29
        && &v[3..5] == ", "
        && b[7] == b' '
        && b[11] == b' '
        && b[16] == b' '
        && b[19] == b':'
        && b[22] == b':'
        && &v[25..] == " GMT";
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        v.get(r).filter(|s| s.bytes().all(|c| c.is_ascii_digit())).and_then(|s| s.parse().ok())
    };
    let (Some(day), Some(year), Some(h), Some(m), Some(s)) =
        (num(5..7), num(12..16), num(17..19), num(20..22), num(23..25))
    else {
        return Err(format!("bad Date {v:?}"));
    };
    let month = MONTHS.iter().position(|&n| v.get(8..11) == Some(n)).ok_or(format!("bad month in {v:?}"))? as i64 + 1;
    if !shape_ok || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return Err(format!("bad Date {v:?}"));
    }
    // days_from_civil (proleptic Gregorian), the inverse of what the server computes.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    if v.get(..3) != Some(DAYS[days.rem_euclid(7) as usize]) {
        return Err(format!("weekday does not fit the date in {v:?}"));
    }
    let secs = days * 86_400 + h * 3600 + m * 60 + s;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    if (secs - now).abs() > 60 {
        return Err(format!("Date {v:?} is {}s away from now", secs - now));
    }
    Ok(())
}

/// Deterministic xorshift, so a failing case can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SEEDS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
    b"POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"b\"\r\nhello\r\n0\r\nX: y\r\nZ:\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nGET /s HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
    b"GET http://a/x?y=://z/ HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
];
const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b" ",
    b":",
    b"\0",
    b"\xff",
    b"HTTP/1.1",
    b"HTTP/2.0",
    b"Content-Length: ",
    b"Transfer-Encoding: chunked",
    b"99999999999999999999",
    b"-1",
    b"ffffffff\r\n",
    b"Expect: 100-continue\r\n",
    b"\r\n\r\n",
    b"\xc2\xa0",
    b"\xe3\x80\x80",
    b"\t",
    b"+",
    b";",
    b";ext=\"q\\\"\"",
    b"://",
    b"*",
    b"Host: b\r\n",
    b"Trailer: x\r\n",
    b"0\r\nX: y\r\n",
    b"5\r\nhello\r\n",
];

fn mutate(rng: &mut Rng) -> Vec<u8> {
    // Valid requests, and the rejected framing shapes (near misses of them probe the checks).
    let seed = rng.below(SEEDS.len() + REJECTED.len());
    let mut msg = SEEDS.get(seed).unwrap_or_else(|| &REJECTED[seed - SEEDS.len()]).to_vec();
    for _ in 0..1 + rng.below(6) {
        let pos = rng.below(msg.len() + 1);
        match rng.below(4) {
            0 => msg.insert(pos, rng.next() as u8),
            1 if pos < msg.len() => {
                msg.remove(pos);
            }
            2 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                msg.splice(pos..pos, t.iter().copied());
            }
            _ => {
                let end = (pos + rng.below(8)).min(msg.len());
                msg.truncate(end.max(1));
            }
        }
    }
    if rng.below(10) == 0 {
        msg = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
    }
    msg
}

/// Checks that `bytes` form zero or more complete, well-formed HTTP/1.1 responses, each final
/// one with a well-formed Date.
fn well_formed(mut bytes: &[u8]) -> Result<usize, String> {
    let mut count = 0;
    while !bytes.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let len = match resp.parse(bytes) {
            Ok(httparse::Status::Complete(len)) => len,
            other => return Err(format!("bad response head {other:?}: {:?}", String::from_utf8_lossy(bytes))),
        };
        let code = resp.code.unwrap_or(0);
        let cl = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .map(|h| std::str::from_utf8(h.value).unwrap().parse::<usize>().unwrap())
            .unwrap_or(0);
        if code != 100 {
            let date = resp.headers.iter().find(|h| h.name.eq_ignore_ascii_case("date"));
            check_date(date.and_then(|h| std::str::from_utf8(h.value).ok()))?;
        }
        let body = if code == 100 || code == 204 { 0 } else { cl };
        if bytes.len() < len + body {
            return Err(format!("truncated body: {:?}", String::from_utf8_lossy(bytes)));
        }
        bytes = &bytes[len + body..];
        count += 1;
    }
    Ok(count)
}

/// 2000 random and mutated requests (valid ones with trailers and extensions, and the rejected
/// framing shapes): each gets well-formed, dated answers or a clean close, within 3 s each and
/// 60 s in all, and the server answers normally afterwards.
#[test]
fn fuzz_requests_never_crash() {
    let server = start();
    let addr = server.local_addr();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let started = std::time::Instant::now();
    for case in 0..2000 {
        assert!(started.elapsed() < Duration::from_secs(60), "case {case}: fuzzing over its time budget");
        let msg = mutate(&mut rng);
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let _ = s.write_all(&msg);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = Vec::new();
        match s.read_to_end(&mut out) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("case {case}: {e} for {:?}", String::from_utf8_lossy(&msg)),
        }
        if let Err(why) = well_formed(&out) {
            panic!("case {case}: {why}\nrequest: {:?}", String::from_utf8_lossy(&msg));
        }
    }
    let mut c = Client::connect(addr);
    assert_eq!(c.request("GET", "/", None).status, 200);
    assert_eq!(server.shutdown(Duration::from_secs(2)), 0);
}
