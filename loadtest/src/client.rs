//! A small blocking HTTP/1.1 client: one keep-alive connection to one `http://host:port`,
//! reconnecting when the server closes it, every step under a timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// An `http://host:port/path` URL, resolved.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub addr: SocketAddr,
    pub path: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url}: only http:// URLs"))?;
        let (hostport, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
        let with_port = if hostport.contains(':') { hostport.to_owned() } else { format!("{hostport}:80") };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("{url}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url}: no address"))?;
        Ok(Target { host: hostport.to_owned(), addr, path })
    }
}

/// An answer: status and body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// The `Retry-After` header's value, when there was one.
    pub retry_after: Option<String>,
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Connect(String),
    Timeout,
    Io(String),
    BadResponse(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "connect: {e}"),
            Failure::Timeout => f.write_str("timeout"),
            Failure::Io(e) => write!(f, "io: {e}"),
            Failure::BadResponse(e) => write!(f, "bad response: {e}"),
        }
    }
}

/// One keep-alive connection.
pub struct Client {
    target: Target,
    timeout: Duration,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Client {
    pub fn new(target: Target, timeout: Duration) -> Client {
        Client { target, timeout, stream: None, buf: Vec::new() }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Sends one request and reads its answer. A connection that failed is dropped; a request
    /// on a reused connection that the server had closed is retried once on a new one.
    pub fn request(&mut self, method: &str, body: Option<&[u8]>) -> Result<Answer, Failure> {
        let reused = self.stream.is_some();
        match self.try_request(method, body) {
            Err(Failure::Io(_)) if reused => self.try_request(method, body),
            other => other,
        }
    }

    fn try_request(&mut self, method: &str, body: Option<&[u8]>) -> Result<Answer, Failure> {
        let result = self.exchange(method, body);
        if result.is_err() {
            self.stream = None;
            self.buf.clear();
        }
        result
    }

    fn exchange(&mut self, method: &str, body: Option<&[u8]>) -> Result<Answer, Failure> {
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&self.target.addr, self.timeout).map_err(|e| match e.kind() {
                std::io::ErrorKind::TimedOut => Failure::Timeout,
                _ => Failure::Connect(e.to_string()),
            })?;
            s.set_nodelay(true).map_err(io)?;
            s.set_read_timeout(Some(self.timeout)).map_err(io)?;
            s.set_write_timeout(Some(self.timeout)).map_err(io)?;
            self.stream = Some(s);
        }
        let Some(stream) = self.stream.as_mut() else { return Err(Failure::Io("no connection".into())) };
        let mut req = format!("{method} {} HTTP/1.1\r\nHost: {}\r\n", self.target.path, self.target.host).into_bytes();
        if let Some(b) = body {
            req.extend_from_slice(
                format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n", b.len()).as_bytes(),
            );
            req.extend_from_slice(b);
        } else {
            req.extend_from_slice(b"\r\n");
        }
        stream.write_all(&req).map_err(io)?;
        let (answer, close) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = resp.code.unwrap_or(0);
                    let mut content_length = 0usize;
                    let mut close = false;
                    let mut retry_after = None;
                    for h in resp.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            content_length = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse().ok())
                                .ok_or_else(|| Failure::BadResponse("content-length".into()))?;
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            close = h.value.eq_ignore_ascii_case(b"close");
                        } else if h.name.eq_ignore_ascii_case("retry-after") {
                            retry_after = Some(String::from_utf8_lossy(h.value).into_owned());
                        }
                    }
                    if method == "HEAD" || status == 204 || status == 304 {
                        content_length = 0;
                    }
                    while self.buf.len() < len + content_length {
                        fill(stream, &mut self.buf, self.timeout)?;
                    }
                    let body = self.buf[len..len + content_length].to_vec();
                    self.buf.drain(..len + content_length);
                    if status != 100 {
                        break (Answer { status, body, retry_after }, close);
                    }
                }
                Ok(httparse::Status::Partial) => fill(stream, &mut self.buf, self.timeout)?,
                Err(e) => return Err(Failure::BadResponse(e.to_string())),
            }
        };
        if close {
            self.stream = None;
            self.buf.clear();
        }
        Ok(answer)
    }
}

/// Reads more of the answer, waiting up to `timeout` (the socket's read timeout).
fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, timeout: Duration) -> Result<(), Failure> {
    let mut chunk = [0u8; 4096];
    let started = Instant::now();
    let mut shortened = false;
    let got = loop {
        match stream.read(&mut chunk) {
            // A stop and continue of the generator (Ctrl-Z and fg, a paused container) ends a
            // read that has a timeout with EINTR. Not the server's failure, and failing it would
            // resend the request on a new connection; the read goes on for what is left of its
            // timeout, not a new one.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                let left = timeout.saturating_sub(started.elapsed());
                if left.is_zero() {
                    break Err(Failure::Timeout);
                }
                stream.set_read_timeout(Some(left)).map_err(io)?;
                shortened = true;
            }
            other => break other.map_err(io),
        }
    };
    if shortened {
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
    }
    match got? {
        0 => Err(Failure::Io("connection closed".into())),
        n => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
    }
}

fn io(e: std::io::Error) -> Failure {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Failure::Timeout,
        _ => Failure::Io(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread::JoinHandle;

    /// What a request on another thread came to, and how long it took.
    type Outcome = JoinHandle<(Result<Answer, Failure>, Duration)>;

    /// A client on another thread sending one request, with `timeout`, to a listener of the
    /// test's own; the thread's id for [`testkit::stop_and_continue_once_asleep`].
    fn request_from_a_thread(
        timeout: Duration,
        method: &'static str,
        body: Option<&'static [u8]>,
    ) -> (TcpListener, Outcome, String) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = Target::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let requester = std::thread::spawn(move || {
            tx.send(testkit::thread_id()).unwrap();
            let sent = Instant::now();
            (Client::new(target, timeout).request(method, body), sent.elapsed())
        });
        let tid = rx.recv().unwrap();
        (listener, requester, tid)
    }

    /// A stop and continue of the generator while it waits for an answer is neither a failure
    /// nor a reason to send the request again.
    #[test]
    fn a_read_interrupted_by_stop_and_continue_goes_on() {
        const BODY: &[u8] = b"{\"value\": 1}";
        let (listener, requester, tid) = request_from_a_thread(Duration::from_secs(5), "POST", Some(BODY));
        let (mut server, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        while !got.ends_with(BODY) {
            let n = server.read(&mut chunk).unwrap();
            assert!(n > 0, "the request whole before the client closed");
            got.extend_from_slice(&chunk[..n]);
        }
        testkit::stop_and_continue_once_asleep(&tid);
        server.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
        let answer = requester.join().unwrap().0.expect("answered");
        assert_eq!((answer.status, answer.body), (200, b"ok".to_vec()));
        listener.set_nonblocking(true).unwrap();
        assert!(listener.accept().is_err(), "the request was sent again on a second connection");
    }

    /// A stop and continue of the generator does not give a read a new timeout: a request to a
    /// server that never answers still times out about `timeout` after it was sent.
    #[test]
    fn a_stop_and_continue_does_not_extend_the_timeout() {
        let (listener, requester, tid) = request_from_a_thread(Duration::from_secs(1), "GET", None);
        let (_silent, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        testkit::stop_and_continue_once_asleep(&tid);
        let (result, took) = requester.join().unwrap();
        assert_eq!(result.map(|a| a.status), Err(Failure::Timeout));
        // Loose: 1 s is due; a new timeout after the continue (at ~0.7 s) would make it ~1.7 s.
        assert!(took < Duration::from_millis(1400), "timed out after {took:?}: the timeout restarted");
    }
}
