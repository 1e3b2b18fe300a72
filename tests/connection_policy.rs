//! The connection policy at the cap, in-process with a test handler: a new connection displaces
//! the one that has done nothing the longest (idle: closed unanswered; sending its head: 408),
//! never one whose request is being handled; with every slot busy a new connection is never
//! answered before it sends a request, gets the first slot that frees up, or a 503 after its
//! request arrived.

use http1::{Handler, Limits, Request, Response, Server, ServerHandle};
use redis_api::metrics::Metrics;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use testkit::*;

/// `/block?` sleeps [`BLOCK`] before answering; `/defer` is answered by another thread after
/// [`DEFER`] (within the deadline); anything else answers at once.
struct TestHandler;

const DEFER: Duration = Duration::from_millis(300);

const BLOCK: Duration = Duration::from_millis(1500);

impl Handler for TestHandler {
    fn handle(&self, req: &Request) -> Response {
        if req.path == "/block" {
            thread::sleep(BLOCK);
        }
        if req.path == "/defer"
            && let Some(responder) = req.defer("other", || Response::new(504, "text/plain", b"late".to_vec()))
        {
            thread::spawn(move || {
                thread::sleep(DEFER);
                responder.complete(Response::new(200, "text/plain", b"later".to_vec()));
            });
        }
        Response::new(200, "text/plain", b"ok".to_vec())
    }
}

const CAP: usize = 4;

fn start(cap: usize) -> ServerHandle {
    start_with_metrics(cap).0
}

fn start_with_metrics(cap: usize) -> (ServerHandle, Arc<Metrics>) {
    let limits = Limits {
        max_connections: cap,
        max_header_bytes: 4096,
        max_body_bytes: 1024,
        header_timeout: Duration::from_secs(5),
        body_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(30),
        write_timeout: Duration::from_secs(2),
        deadline: Duration::from_millis(400),
        worker_stack: http1::WORKER_STACK,
        worker_retire: Duration::from_secs(10),
    };
    let metrics = Arc::new(Metrics::new());
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), limits, TestHandler, metrics.clone()).unwrap();
    (server.start().unwrap(), metrics)
}

fn raw(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Everything the server sends until it closes (or the read timeout): bytes, and whether it
/// closed.
fn read_all(s: &mut TcpStream, timeout: Duration) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (out, true),
            // A stop and continue of the test process (a cgroup freezer, a debugger) ends the
            // read with EINTR.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return (out, false),
        }
    }
}

/// Waits until the server runs `n` workers (connections on a worker).
fn wait_workers(server: &ServerHandle, n: usize) {
    wait_until(Duration::from_secs(5), &format!("{n} workers"), || server.workers() == n);
}

/// Fills every slot with a request that takes [`BLOCK`]; the threads return their statuses.
fn hold_every_slot(server: &ServerHandle) -> Vec<thread::JoinHandle<u16>> {
    let addr = server.local_addr();
    let busy =
        (0..CAP).map(|_| thread::spawn(move || Client::connect(addr).request("GET", "/block", None).status)).collect();
    wait_workers(server, CAP);
    busy
}

/// At the cap, idle connections that never sent a byte give way to new clients, oldest first,
/// closed without a single byte written to them.
#[test]
fn idle_connections_give_way_oldest_first() {
    let (server, metrics) = start_with_metrics(CAP);
    let addr = server.local_addr();
    let mut idle: Vec<TcpStream> = Vec::new();
    for _ in 0..CAP {
        idle.push(raw(addr));
        thread::sleep(Duration::from_millis(20));
    }
    wait_workers(&server, CAP);
    let t = Instant::now();
    for i in 0..CAP {
        let r = Client::connect(addr).request("GET", "/ok", None);
        assert_eq!(r.status, 200, "new client {i}");
        // The new client's connection closed after it: it is now the most recent idle one.
    }
    assert!(t.elapsed() < Duration::from_secs(3), "new clients waited {:?}", t.elapsed());
    assert!(metrics.displaced_connections.get() >= 1, "served by displacing an idle connection");
    assert_eq!(metrics.refused_connections.get(), 0);
    // The oldest idle connection was displaced first, closed without an answer.
    let (bytes, closed) = read_all(&mut idle[0], Duration::from_secs(2));
    assert!(closed, "the oldest idle connection is closed");
    assert!(
        bytes.is_empty(),
        "nothing written to a connection that sent nothing: {:?}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(server.shutdown(Duration::from_secs(2)), 0);
}

/// A flood of idle sockets at three times the cap never locks a client out.
#[test]
fn idle_flood_at_three_times_the_cap() {
    let server = start(CAP);
    let addr = server.local_addr();
    let mut flood: Vec<TcpStream> = (0..3 * CAP).map(|_| raw(addr)).collect();
    for round in 0..20 {
        let r = Client::connect(addr).request("GET", "/ok", None);
        assert_eq!(r.status, 200, "round {round}");
        // The flood comes back at once, as an attacker would.
        flood.push(raw(addr));
    }
    for s in &mut flood {
        let (bytes, _) = read_all(s, Duration::from_millis(1));
        assert!(bytes.is_empty(), "an idle socket got {:?}", String::from_utf8_lossy(&bytes));
    }
    assert_eq!(server.shutdown(Duration::from_secs(2)), 0);
}

/// A connection displaced while it trickles its request head gets 408, then close.
#[test]
fn slowloris_head_is_displaced_with_408() {
    let server = start(CAP);
    let addr = server.local_addr();
    let mut slow: Vec<TcpStream> = Vec::new();
    for _ in 0..CAP {
        let mut s = raw(addr);
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ").unwrap();
        slow.push(s);
        thread::sleep(Duration::from_millis(20));
    }
    wait_workers(&server, CAP);
    let r = Client::connect(addr).request("GET", "/ok", None);
    assert_eq!(r.status, 200);
    let (bytes, closed) = read_all(&mut slow[0], Duration::from_secs(2));
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 408 "), "displaced slowloris got {text:?}");
    assert!(text.contains("Connection: close"), "{text}");
    assert!(closed);
    drop(slow);
    assert_eq!(server.shutdown(Duration::from_secs(2)), 0);
}

/// With every slot handling a request, a new connection gets no byte before it sends its
/// request, then a 503 with `Connection: close` and `Retry-After`; the busy requests all end
/// 200.
#[test]
fn all_busy_refuses_only_after_the_request() {
    let (server, metrics) = start_with_metrics(CAP);
    let addr = server.local_addr();
    let busy = hold_every_slot(&server);
    thread::sleep(Duration::from_millis(100));
    let mut late = raw(addr);
    let (early, closed) = read_all(&mut late, Duration::from_millis(300));
    assert!(early.is_empty() && !closed, "nothing before the request: {:?}", String::from_utf8_lossy(&early));
    late.write_all(request_bytes("GET", "/ok", None, "").as_bytes()).unwrap();
    let (bytes, _) = read_all(&mut late, Duration::from_millis(500));
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 503 "), "got {text:?}");
    assert!(text.contains("Connection: close") && text.contains("Retry-After: 1"), "{text}");
    assert_eq!(metrics.refused_connections.get(), 1);
    assert_eq!(metrics.displaced_connections.get(), 0, "no busy request displaced");
    for b in busy {
        assert_eq!(b.join().unwrap(), 200);
    }
    assert_eq!(server.shutdown(Duration::from_secs(2)), 0);
}

/// With every slot busy, a connection that has not sent its request yet waits and is served
/// by the first slot that frees up.
#[test]
fn waiting_connection_gets_the_first_free_slot() {
    let server = start(CAP);
    let addr = server.local_addr();
    let busy = hold_every_slot(&server);
    thread::sleep(Duration::from_millis(100));
    let mut late = Client::connect(addr);
    // The busy requests end; then the late client speaks, and is served.
    for b in busy {
        assert_eq!(b.join().unwrap(), 200);
    }
    thread::sleep(Duration::from_millis(100));
    assert_eq!(late.request("GET", "/ok", None).status, 200);
    assert_eq!(server.shutdown(Duration::from_secs(2)), 0);
}

/// A request being handled is never displaced, however many new connections arrive.
#[test]
fn busy_requests_are_never_displaced() {
    let (server, metrics) = start_with_metrics(CAP);
    let addr = server.local_addr();
    let busy = hold_every_slot(&server);
    let flood: Vec<TcpStream> = (0..3 * CAP).map(|_| raw(addr)).collect();
    for b in busy {
        assert_eq!(b.join().unwrap(), 200);
    }
    assert_eq!(metrics.displaced_connections.get(), 0);
    drop(flood);
    assert_eq!(server.shutdown(Duration::from_secs(2)), 0);
}

/// A connection whose reply is deferred (its worker back on the socket, the answer pending on
/// another thread) is never displaced: at the cap, new connections arriving while every slot
/// waits for such a reply do not take a slot, and every pending reply arrives.
#[test]
fn pending_deferred_replies_are_never_displaced() {
    let (server, metrics) = start_with_metrics(CAP);
    let addr = server.local_addr();
    let mut pending: Vec<Client> = (0..CAP).map(|_| Client::connect(addr)).collect();
    for c in &mut pending {
        c.send(request_bytes("GET", "/defer", None, "").as_bytes());
    }
    wait_workers(&server, CAP);
    // Past the age at which a waiting connection may be displaced.
    thread::sleep(Duration::from_millis(150));
    let flood: Vec<TcpStream> = (0..2 * CAP).map(|_| raw(addr)).collect();
    thread::sleep(Duration::from_millis(50));
    assert_eq!(metrics.displaced_connections.get(), 0, "a slot with a pending reply was displaced");
    for c in &mut pending {
        let r = c.read_response(false).expect("the deferred answer, not a close");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"later"[..]));
    }
    drop(flood);
    assert_eq!(server.shutdown(Duration::from_secs(2)), 0);
}
