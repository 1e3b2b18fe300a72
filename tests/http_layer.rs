//! The HTTP layer in-process with test handlers: a panicking handler becomes a 500 and the
//! worker lives on; random and mutated requests never crash the server and always get a
//! well-formed answer or a clean close.

mod common;
use common::*;
use redis_api::http::{Handler, Limits, Request, Response, Server, ServerHandle};
use redis_api::metrics::Metrics;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

struct TestHandler;

impl Handler for TestHandler {
    fn handle(&self, req: &Request) -> Response {
        if req.path == "/panic" {
            panic!("handler bug");
        }
        Response::new(200, "text/plain", format!("{} bytes", req.body.len()).into_bytes())
    }
}

fn start() -> ServerHandle {
    start_with(Duration::from_secs(10))
}

fn start_with(worker_retire: Duration) -> ServerHandle {
    let limits = Limits {
        max_connections: 64,
        max_header_bytes: 4096,
        max_body_bytes: 1024,
        header_timeout: Duration::from_millis(500),
        body_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(500),
        write_timeout: Duration::from_secs(2),
        deadline: Duration::from_millis(400),
        worker_stack: redis_api::http::WORKER_STACK,
        worker_retire,
    };
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), limits, TestHandler, Arc::new(Metrics::new())).unwrap();
    server.start().unwrap()
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
];

fn mutate(rng: &mut Rng) -> Vec<u8> {
    let mut msg = SEEDS[rng.below(SEEDS.len())].to_vec();
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

/// Checks that `bytes` form zero or more complete, well-formed HTTP/1.1 responses.
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
        let body = if code == 100 || code == 204 { 0 } else { cl };
        if bytes.len() < len + body {
            return Err(format!("truncated body: {:?}", String::from_utf8_lossy(bytes)));
        }
        bytes = &bytes[len + body..];
        count += 1;
    }
    Ok(count)
}

/// 1500 random and mutated requests: each gets well-formed answers or a clean close, and the
/// server answers normally afterwards.
#[test]
fn fuzz_requests_never_crash() {
    let server = start();
    let addr = server.local_addr();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for case in 0..1500 {
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
