//! Our own small RESP2 connection, for every Redis connection the API opens (the request path,
//! the health checks, memory mode's subscription): TCP connect with a timeout, TCP_NODELAY,
//! optional TLS (rustls), optional `AUTH`, a packed command out, and a bounded reply in.
//!
//! Why not redis-rs's sync `Connection` here (the crate stays for packing commands):
//! - a request's Redis step must end at its deadline whatever the socket sees. Socket timeouts
//!   bound each `read()`, not the step: a reply trickled one byte every 350 ms was answered
//!   after 3.5 s. The [`super::watchdog`] ends a step by `shutdown()` of its socket from
//!   another thread, which needs the socket; redis-rs does not expose it.
//! - a reply must be refused by its length header, before its payload is read, and a
//!   connection must not keep a buffer the size of the largest reply it ever read; redis-rs
//!   reads whole values into a buffer that only grows (64 MiB per pooled connection, for good).
//!
//! - TLS: redis-rs's rustls support lives inside its own connection type, so it cannot carry
//!   this one. Here rustls runs over a wrapper that shares the `Arc<TcpStream>` with the
//!   watchdog, so a TLS step is cut at its deadline like a plaintext one.
//!
//! The subset of RESP2 our commands need is small: simple strings, errors, integers, bulk
//! strings and (shallow, short) arrays.

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes asked of the socket per read, and the buffer a connection keeps between replies.
const READ_CHUNK: usize = 4096;
/// A read buffer grown past this by a large reply is given back once the reply is consumed.
const KEEP_CAPACITY: usize = 16 * 1024;
/// Longest reply line (type byte, header or simple string/error text) accepted.
const MAX_LINE: usize = 4096;
/// Deepest array nesting accepted (`EXEC` answers an array of replies: depth 1).
const MAX_DEPTH: usize = 2;
/// Most elements accepted in one array (our transaction queues two commands).
const MAX_ELEMENTS: i64 = 16;

/// Why a connection or a command failed.
#[derive(Debug)]
pub enum ConnError {
    /// The socket failed or was closed (connect failures included).
    Io(io::Error),
    /// The step's deadline passed: the watchdog shut the socket, or no time was left to start.
    Timeout,
    /// Redis refused the handshake (`AUTH`): the text of its error reply.
    Auth(String),
    /// TLS failed: the server's certificate was refused (unknown issuer, expired, not valid for
    /// the name) or the server refused ours. rustls's reason. A configuration fault: retrying
    /// will not help.
    Tls(String),
    /// Redis answered with an error reply: `CODE message`.
    Reply(String),
    /// A bulk string longer than the limit; its payload was left unread.
    TooLarge { size: u64, limit: usize },
    /// Bytes that are not the RESP2 we expect.
    Protocol(&'static str),
    /// No attempt was made: connecting failed recently; `last` is that failure.
    Backoff { last: String, retry_in: Duration },
}

impl ConnError {
    /// The error code of an error reply (`WRONGTYPE`, `LOADING`, ...).
    pub fn code(&self) -> Option<&str> {
        match self {
            ConnError::Reply(text) => text.split_whitespace().next(),
            _ => None,
        }
    }
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Io(e) => write!(f, "{e}"),
            ConnError::Timeout => f.write_str("timed out"),
            ConnError::Auth(text) => write!(f, "authentication refused: {text}"),
            ConnError::Tls(reason) => write!(f, "TLS refused: {reason}"),
            ConnError::Reply(text) => f.write_str(text),
            ConnError::TooLarge { size, limit } => write!(f, "a {size}-byte reply, over the {limit}-byte limit"),
            ConnError::Protocol(what) => write!(f, "protocol error: {what}"),
            ConnError::Backoff { last, retry_in } => {
                write!(f, "{last} (no new attempt for {:.1}s)", retry_in.as_secs_f64())
            }
        }
    }
}

impl std::error::Error for ConnError {}

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Nil,
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Array(Vec<Value>),
}

/// The header line of a reply.
enum Header {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(i64),
    Array(i64),
}

/// The socket as rustls's transport: shares the `Arc<TcpStream>` the watchdog shuts down.
struct Shared(Arc<TcpStream>);

impl Read for Shared {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the bytes travel in.
enum Stream {
    Plain,
    Tls(Box<StreamOwned<ClientConnection, Shared>>),
}

/// TLS for a new connection: the shared client configuration and the name to verify.
pub struct TlsParams<'a> {
    pub config: &'a Arc<ClientConfig>,
    pub server_name: &'a ServerName<'static>,
}

/// One connection to Redis.
pub struct Conn {
    /// Shared with the watchdog while a step runs, so it can shut the socket down.
    socket: Arc<TcpStream>,
    stream: Stream,
    /// Bytes read and not yet consumed: `buf[pos..]`.
    buf: Vec<u8>,
    pos: usize,
    /// Set after any failure that may leave a reply in flight; the pool then drops it.
    pub broken: bool,
}

impl Conn {
    /// Connects to `host:port` within `timeout` (every resolved address shares it), with
    /// TCP_NODELAY on and `backstop` as the socket timeouts: the watchdog bounds each step, the
    /// backstop only guards against a step nobody watches. With `tls`, the TLS handshake is
    /// left to [`Conn::handshake`], so the caller can watch it.
    pub fn open(
        host: &str,
        port: u16,
        timeout: Duration,
        backstop: Duration,
        tls: Option<TlsParams<'_>>,
    ) -> Result<Conn, ConnError> {
        let until = Instant::now() + timeout;
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} resolves to no address"));
        for addr in (host, port).to_socket_addrs().map_err(ConnError::Io)? {
            let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
                return Err(ConnError::Timeout);
            };
            match TcpStream::connect_timeout(&addr, left) {
                Ok(socket) => {
                    socket.set_nodelay(true).map_err(ConnError::Io)?;
                    socket.set_read_timeout(Some(backstop)).map_err(ConnError::Io)?;
                    socket.set_write_timeout(Some(backstop)).map_err(ConnError::Io)?;
                    let socket = Arc::new(socket);
                    let stream = match &tls {
                        None => Stream::Plain,
                        Some(t) => {
                            let session = ClientConnection::new(t.config.clone(), t.server_name.clone())
                                .map_err(|e| ConnError::Tls(e.to_string()))?;
                            Stream::Tls(Box::new(StreamOwned::new(session, Shared(socket.clone()))))
                        }
                    };
                    return Ok(Conn { socket, stream, buf: Vec::with_capacity(READ_CHUNK), pos: 0, broken: false });
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(ConnError::Timeout),
                Err(e) => last = e,
            }
        }
        Err(ConnError::Io(last))
    }

    /// The socket, for the watchdog.
    pub fn socket(&self) -> &Arc<TcpStream> {
        &self.socket
    }

    /// Runs the TLS handshake, certificate checks included (nothing to do without TLS). The
    /// caller bounds it (the watchdog): a silent server would otherwise hold it for the backstop.
    pub fn handshake(&mut self) -> Result<(), ConnError> {
        if let Stream::Tls(s) = &mut self.stream {
            while s.conn.is_handshaking() {
                if let Err(e) = s.conn.complete_io(&mut s.sock) {
                    self.broken = true;
                    return Err(match e.kind() {
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ConnError::Timeout,
                        _ => io_error(e),
                    });
                }
            }
        }
        Ok(())
    }

    /// Sets the socket's read timeout (a subscription waits for its next message this long).
    pub fn set_read_timeout(&self, timeout: Duration) -> Result<(), ConnError> {
        self.socket.set_read_timeout(Some(timeout)).map_err(ConnError::Io)
    }

    /// Whether a reply has bytes already read and not consumed.
    pub fn has_buffered(&self) -> bool {
        self.pos < self.buf.len()
    }

    /// Waits for at least one byte more to read (the socket's read timeout bounds it); `Ok` with
    /// nothing read when a stop and continue of the process (EINTR) ended the wait.
    pub fn wait_readable(&mut self) -> Result<(), ConnError> {
        let result = self.fill(0);
        if matches!(result, Err(ref e) if !matches!(e, ConnError::Timeout)) {
            self.broken = true;
        }
        result
    }

    /// Authenticates: `AUTH password`, or `AUTH username password` for an ACL user.
    pub fn auth(&mut self, username: Option<&str>, password: &str) -> Result<(), ConnError> {
        let mut cmd = redis::cmd("AUTH");
        if let Some(user) = username {
            cmd.arg(user);
        }
        cmd.arg(password);
        match self.query(&cmd.get_packed_command(), MAX_LINE) {
            Ok(_) => Ok(()),
            Err(ConnError::Reply(text)) => Err(ConnError::Auth(text)),
            Err(e) => Err(e),
        }
    }

    /// Sends a packed command and reads its reply (an error reply becomes `Err(Reply)`).
    pub fn query(&mut self, packed: &[u8], limit: usize) -> Result<Value, ConnError> {
        self.send(packed)?;
        match self.read(limit)? {
            Value::Error(text) => Err(ConnError::Reply(text)),
            v => Ok(v),
        }
    }

    /// Sends packed bytes (one command or a pipeline).
    pub fn send(&mut self, packed: &[u8]) -> Result<(), ConnError> {
        let result = match &mut self.stream {
            Stream::Plain => (&*self.socket).write_all(packed),
            // The flush pushes out what rustls still holds of the records.
            Stream::Tls(s) => s.write_all(packed).and_then(|()| s.flush()),
        }
        .map_err(io_error);
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    /// Reads one reply of at most `limit` bytes of payload. An error reply is `Ok(Value::Error)`;
    /// any `Err` leaves the stream unusable, and the connection is marked broken.
    pub fn read(&mut self, limit: usize) -> Result<Value, ConnError> {
        let mut budget = limit;
        let result = self.value(&mut budget, limit, 0);
        if result.is_err() {
            self.broken = true;
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            if self.buf.capacity() > KEEP_CAPACITY {
                self.buf = Vec::with_capacity(READ_CHUNK);
            }
        }
        result
    }

    fn value(&mut self, budget: &mut usize, limit: usize, depth: usize) -> Result<Value, ConnError> {
        Ok(match self.header()? {
            Header::Simple(s) => Value::Simple(s),
            Header::Error(s) => Value::Error(s),
            Header::Int(i) => Value::Int(i),
            Header::Bulk(-1) | Header::Array(-1) => Value::Nil,
            Header::Bulk(len) => {
                let size = u64::try_from(len).map_err(|_| ConnError::Protocol("negative bulk length"))?;
                let len =
                    usize::try_from(size).ok().filter(|l| *l <= *budget).ok_or(ConnError::TooLarge { size, limit })?;
                *budget -= len;
                while self.buf.len() - self.pos < len + 2 {
                    self.fill(len + 2 - (self.buf.len() - self.pos))?;
                }
                let data = self.buf[self.pos..self.pos + len].to_vec();
                if &self.buf[self.pos + len..self.pos + len + 2] != b"\r\n" {
                    return Err(ConnError::Protocol("bulk string not followed by CRLF"));
                }
                self.pos += len + 2;
                Value::Bulk(data)
            }
            Header::Array(n) => {
                if !(0..=MAX_ELEMENTS).contains(&n) || depth >= MAX_DEPTH {
                    return Err(ConnError::Protocol("array too long or too deep"));
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(budget, limit, depth + 1)?);
                }
                Value::Array(items)
            }
        })
    }

    /// Reads one CRLF-terminated header line and parses it.
    fn header(&mut self) -> Result<Header, ConnError> {
        let end = loop {
            if let Some(i) = self.buf[self.pos..].windows(2).position(|w| w == b"\r\n") {
                break self.pos + i;
            }
            if self.buf.len() - self.pos > MAX_LINE {
                return Err(ConnError::Protocol("reply line too long"));
            }
            self.fill(0)?;
        };
        let line = &self.buf[self.pos..end];
        let (kind, rest) = line.split_first().ok_or(ConnError::Protocol("empty reply line"))?;
        let int = || -> Result<i64, ConnError> {
            std::str::from_utf8(rest).ok().and_then(|s| s.parse().ok()).ok_or(ConnError::Protocol("malformed integer"))
        };
        let header = match kind {
            b'+' => Header::Simple(String::from_utf8_lossy(rest).into_owned()),
            b'-' => Header::Error(String::from_utf8_lossy(rest).into_owned()),
            b':' => Header::Int(int()?),
            b'$' => Header::Bulk(int()?),
            b'*' => Header::Array(int()?),
            _ => return Err(ConnError::Protocol("unknown reply type")),
        };
        self.pos = end + 2;
        Ok(header)
    }

    /// Reads at least one more byte from the socket, room for at least `want` (bounded by the
    /// caller's limit); none when a stop and continue of the process (EINTR) ended the read,
    /// and the caller's loop reads again.
    fn fill(&mut self, want: usize) -> Result<(), ConnError> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let filled = self.buf.len();
        self.buf.resize(filled + want.max(READ_CHUNK), 0);
        let result = match &mut self.stream {
            Stream::Plain => (&*self.socket).read(&mut self.buf[filled..]),
            Stream::Tls(s) => s.read(&mut self.buf[filled..]),
        };
        self.buf.truncate(filled + *result.as_ref().unwrap_or(&0));
        match result {
            Ok(0) => Err(ConnError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "redis closed the connection"))),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                Err(ConnError::Timeout)
            }
            Err(e) => Err(io_error(e)),
        }
    }
}

/// An I/O error, or the TLS failure rustls wrapped in one (a refused certificate, a fatal alert
/// from the server such as "certificate required").
fn io_error(e: io::Error) -> ConnError {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(alert @ rustls::Error::AlertReceived(_)) => ConnError::Tls(format!(
            "{alert}: the server refused this client (does it ask for a client certificate, \
             --redis-tls-cert-file, from a CA it trusts?)"
        )),
        Some(tls) => ConnError::Tls(tls.to_string()),
        None => ConnError::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A connection to a local listener that has already sent `reply`.
    fn conn_with(reply: &'static [u8]) -> Conn {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(reply).unwrap();
            s
        });
        let conn = Conn::open("127.0.0.1", port, Duration::from_secs(1), Duration::from_secs(2), None).unwrap();
        drop(server.join().unwrap());
        conn
    }

    /// Replies of every kind parse; an error inside an array stays a value.
    #[test]
    fn parses_replies() {
        let mut c = conn_with(b"+OK\r\n$3\r\n1.5\r\n$-1\r\n:7\r\n*2\r\n-WRONGTYPE bad\r\n:1\r\n-ERR x\r\n");
        assert_eq!(c.read(100).unwrap(), Value::Simple("OK".into()));
        assert_eq!(c.read(100).unwrap(), Value::Bulk(b"1.5".to_vec()));
        assert_eq!(c.read(100).unwrap(), Value::Nil);
        assert_eq!(c.read(100).unwrap(), Value::Int(7));
        assert_eq!(c.read(100).unwrap(), Value::Array(vec![Value::Error("WRONGTYPE bad".into()), Value::Int(1)]));
        assert_eq!(c.read(100).unwrap(), Value::Error("ERR x".into()));
        assert!(!c.broken);
    }

    /// A bulk string over the limit is refused from its header; the connection is broken.
    #[test]
    fn refuses_large_bulk_before_reading_it() {
        let mut c = conn_with(b"$67108864\r\nxxxx");
        match c.read(65536) {
            Err(ConnError::TooLarge { size: 67_108_864, limit: 65536 }) => {}
            other => panic!("{other:?}"),
        }
        assert!(c.broken);
    }

    /// After a reply larger than the buffer it keeps, the buffer shrinks back.
    #[test]
    fn buffer_shrinks_after_a_large_reply() {
        static REPLY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let reply = REPLY.get_or_init(|| {
            let mut r = b"$100000\r\n".to_vec();
            r.extend(std::iter::repeat_n(b'7', 100_000));
            r.extend_from_slice(b"\r\n");
            r
        });
        let mut c = conn_with(reply.as_slice());
        assert!(matches!(c.read(1 << 20), Ok(Value::Bulk(b)) if b.len() == 100_000));
        assert!(c.buf.capacity() <= KEEP_CAPACITY, "kept {} bytes", c.buf.capacity());
    }

    /// Garbage is a protocol error, not a panic.
    #[test]
    fn garbage_is_a_protocol_error() {
        for bad in [&b"?\r\n"[..], b"$abc\r\n", b"*99\r\n", b"$-5\r\n", b"\r\n"] {
            let reply: &'static [u8] = Box::leak(bad.to_vec().into_boxed_slice());
            let mut c = conn_with(reply);
            assert!(matches!(c.read(100), Err(ConnError::Protocol(_))), "{bad:?}");
        }
    }
}
