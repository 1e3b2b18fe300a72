//! Answers written later, by another thread: a handler may take a [`Responder`] for its
//! request ([`Request::defer`](super::Request::defer)) and return at once; the worker goes back
//! to the connection instead of sleeping until the answer exists, and whoever holds the
//! `Responder` writes the answer exactly as the worker would have (decorated, dated, HEAD
//! without a body, metrics observed from the request's first byte).
//!
//! One atomic state decides who writes: `PENDING` → `WRITING` → `KEPT`/`ENDED` (the responder
//! wrote it), or `PENDING` → `CLAIMED` (the worker, at the request's deadline, writes the
//! handler's late answer itself). Never both, never neither: a `Responder` dropped without an
//! answer writes a 500. While a reply is pending, the connection's slot stays busy (it is
//! never displaced), and its socket stays open: the worker waits for the state to leave
//! `PENDING`/`WRITING` before it reads a next request or drops the stream.

use super::{Event, Request, Response, Shared, Slot};
use crate::Error;
use socket2::SockRef;
use std::net::Shutdown;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::Thread;
use std::time::Instant;

/// `send(2)` flags (Linux values): never block the responder's thread on a client that does
/// not read, and never raise SIGPIPE on a closed connection.
const MSG_DONTWAIT: i32 = 0x40;
const MSG_NOSIGNAL: i32 = 0x4000;

thread_local! {
    /// The answer's wire form, reused by each thread that writes deferred answers (the reader
    /// writes thousands a second): no allocation per answer.
    static OUT: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A larger buffer (a big answer) is not kept for the next one.
const OUT_KEEP: usize = 64 * 1024;

// The reply's state.
const PENDING: u8 = 0;
/// The responder is writing it (the worker waits: the socket must stay open).
const WRITING: u8 = 1;
/// Written whole; the connection stays open for the next request.
const KEPT: u8 = 2;
/// Written (or the write failed) and the connection is ending: the responder shut it down.
const ENDED: u8 = 3;
/// The worker took it back at the deadline (or on its way out) and answers itself.
const CLAIMED: u8 = 4;

/// How a pending reply ended, as the worker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Settled {
    /// Written by the responder; the connection stays.
    Kept,
    /// Written by the responder (or not at all) and the connection is shut down.
    Ended,
    /// Taken back by the worker: it writes the late answer.
    Claimed,
    /// Still pending (or being written).
    Pending,
}

/// What a responder needs to write the answer the worker would have written.
pub(super) struct Deferred {
    state: AtomicU8,
    shared: Arc<Shared>,
    slot: Arc<Slot>,
    /// The connection's number on the slot (its phase is only touched for this connection).
    conn: u64,
    /// The connection's socket; open while the state is `PENDING` or `WRITING` (the worker
    /// waits for the state to leave both before it drops the stream).
    fd: RawFd,
    /// The worker serving the connection, woken when the reply is written.
    worker: Thread,
    /// Route label of the 500 a dropped responder writes.
    route: &'static str,
    pub(super) origin: Option<String>,
    pub(super) head_only: bool,
    pub(super) http10: bool,
    pub(super) started: Instant,
    /// When the worker takes the reply back: `started` + [`Limits::deadline`](super::Limits::deadline).
    pub(super) deadline: Instant,
    /// Deferred while the server was paced: once written and kept, the worker reads the next
    /// request in its turn ([`Turns`](super::turns::Turns)), not when its socket wakes it.
    pub(super) paced: bool,
    /// `NO_TURN` → `GRANTED`, or → `LEFT` (the worker ended; a turn given later is passed on).
    turn: AtomicU8,
}

// The worker's turn (paced replies only).
const NO_TURN: u8 = 0;
const GRANTED: u8 = 1;
const LEFT: u8 = 2;

/// What [`Deferred::new`] is built from (the worker's view of the request).
pub(super) struct Context {
    pub shared: Arc<Shared>,
    pub slot: Arc<Slot>,
    pub conn: u64,
    pub fd: RawFd,
    pub origin: Option<String>,
    pub head_only: bool,
    pub http10: bool,
    pub started: Instant,
    pub deadline: Instant,
}

impl Deferred {
    pub(super) fn new(c: Context, route: &'static str) -> Deferred {
        Deferred {
            state: AtomicU8::new(PENDING),
            slot: c.slot,
            conn: c.conn,
            fd: c.fd,
            worker: std::thread::current(),
            route,
            origin: c.origin,
            head_only: c.head_only,
            http10: c.http10,
            started: c.started,
            deadline: c.deadline,
            paced: c.shared.turns.paced(),
            turn: AtomicU8::new(NO_TURN),
            shared: c.shared,
        }
    }

    /// Gives the worker its turn and wakes it; false if it has left (the turn goes on).
    pub(super) fn grant(&self) -> bool {
        let given = self.turn.compare_exchange(NO_TURN, GRANTED, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if given {
            self.worker.unpark();
        }
        given
    }

    pub(super) fn granted(&self) -> bool {
        self.turn.load(Ordering::Acquire) == GRANTED
    }

    /// The worker ends without using a turn; true if it held one (to give on).
    pub(super) fn leave_turn(&self) -> bool {
        self.turn.swap(LEFT, Ordering::AcqRel) == GRANTED
    }

    /// A pending reply on no connection (its worker: the calling thread), for the turns' tests.
    #[cfg(test)]
    pub(super) fn for_tests(shared: Arc<Shared>) -> Arc<Deferred> {
        let started = Instant::now();
        let context = Context {
            shared,
            slot: Arc::new(Slot::default()),
            conn: 0,
            fd: -1,
            origin: None,
            head_only: false,
            http10: false,
            started,
            deadline: started + std::time::Duration::from_millis(400),
        };
        Arc::new(Deferred::new(context, "t"))
    }

    pub(super) fn settled(&self) -> Settled {
        match self.state.load(Ordering::Acquire) {
            KEPT => Settled::Kept,
            ENDED => Settled::Ended,
            CLAIMED => Settled::Claimed,
            _ => Settled::Pending,
        }
    }

    /// The worker takes the reply back if no one has started writing it.
    pub(super) fn claim(&self) -> bool {
        self.state.compare_exchange(PENDING, CLAIMED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Writes `resp` as the worker would have, unless the worker claimed the reply first.
    fn write(self: &Arc<Self>, mut resp: Response) {
        if self.state.compare_exchange(PENDING, WRITING, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return;
        }
        let shared = &*self.shared;
        shared.observer.event(Event::RequestFinished);
        shared.handler.decorate(self.origin.as_deref(), &mut resp);
        let keep_alive = !resp.close && !shared.draining();
        // SAFETY: the state is WRITING, so the worker keeps the stream (and its fd) open until
        // this thread stores KEPT or ENDED below.
        let borrowed = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let sock = SockRef::from(&borrowed);
        let whole = OUT.with_borrow_mut(|out| {
            out.clear();
            resp.write_to(out, self.head_only, keep_alive, self.http10);
            // Counted before the client can see the answer, as the worker does.
            shared.observer.event(Event::Answered {
                route: resp.route,
                status: resp.status,
                elapsed: self.started.elapsed(),
            });
            // An answer of a few hundred bytes fits an empty send buffer; a buffer too full for
            // it means the client is not reading its answers, and the connection ends.
            let whole = matches!(sock.send_with_flags(out, MSG_DONTWAIT | MSG_NOSIGNAL), Ok(n) if n == out.len());
            if out.capacity() > OUT_KEEP {
                *out = Vec::new();
            }
            whole
        });
        let kept = whole && keep_alive;
        if kept {
            // Before KEPT is visible: the worker that sees KEPT finds the slot idle.
            self.slot.served(self.conn);
        } else {
            // Both ways: the FIN follows the answer, and the worker's read ends at once.
            let _ = sock.shutdown(Shutdown::Both);
        }
        self.state.store(if kept { KEPT } else { ENDED }, Ordering::Release);
        if kept && self.paced {
            // Not woken now: in its turn.
            self.shared.turns.ready(self.clone());
        } else {
            self.worker.unpark();
        }
    }
}

/// The right to answer one request later, from any thread. Dropping it unused answers 500.
pub struct Responder {
    deferred: Option<Arc<Deferred>>,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Responder")
    }
}

impl Responder {
    pub(super) fn new(deferred: Arc<Deferred>) -> Responder {
        Responder { deferred: Some(deferred) }
    }

    /// Writes the answer (without blocking: a client that does not read loses its
    /// connection). Does nothing if the worker already answered at the deadline.
    pub fn complete(mut self, resp: Response) {
        if let Some(d) = self.deferred.take() {
            d.write(resp);
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(d) = self.deferred.take() {
            log::error!("a deferred {} request was dropped unanswered", d.route);
            d.write(d.shared.handler.on_error(&Error::Internal).route(d.route));
        }
    }
}

/// A request's side of deferral: available (the worker allows it for this request), taken
/// (the handler holds the [`Responder`]; the late answer waits with the worker), or neither.
#[derive(Default)]
pub(crate) struct Deferral {
    state: Mutex<Option<Offer>>,
}

enum Offer {
    Available(Box<Context>),
    Taken(Arc<Deferred>, Late),
}

/// Makes the answer the worker writes if a deferred reply's deadline passes first: made only
/// then, since nearly every deferred reply is written in time.
pub(super) type Late = Box<dyn FnOnce() -> Response + Send>;

impl std::fmt::Debug for Deferral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &*self.lock() {
            None => "unavailable",
            Some(Offer::Available(_)) => "available",
            Some(Offer::Taken(..)) => "taken",
        };
        write!(f, "Deferral({state})")
    }
}

impl Deferral {
    pub(super) fn available(context: Context) -> Deferral {
        Deferral { state: Mutex::new(Some(Offer::Available(Box::new(context)))) }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Offer>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The reply the handler deferred, and the answer to write if the deadline passes first.
    pub(super) fn taken(&self) -> Option<(Arc<Deferred>, Late)> {
        match self.lock().take() {
            Some(Offer::Taken(d, late)) => Some((d, late)),
            _ => None,
        }
    }
}

impl Request {
    /// A [`Responder`] to answer this request later, from any thread; the worker goes back to
    /// the connection at once and whatever the handler returns is ignored. `late` makes the
    /// answer the worker writes itself if the request's deadline passes first (it is called
    /// only then); `route` labels the 500 of a responder dropped unanswered. `None` (answer
    /// now, as usual) unless it is safe: a keep-alive request with no pipelined bytes after
    /// it, the server not draining, and not taken before.
    pub fn defer(&self, route: &'static str, late: impl FnOnce() -> Response + Send + 'static) -> Option<Responder> {
        let mut state = self.deferral.lock();
        match state.take() {
            Some(Offer::Available(context)) => {
                let d = Arc::new(Deferred::new(*context, route));
                *state = Some(Offer::Taken(d.clone(), Box::new(late)));
                Some(Responder::new(d))
            }
            other => {
                *state = other;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Handler, Phase, Server, tests::Recorder};
    use super::*;
    use std::io::{ErrorKind, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    struct Decorating;

    impl Handler for Decorating {
        fn handle(&self, _req: &Request) -> Response {
            Response::new(200, "text/plain", Vec::new())
        }
        fn decorate(&self, origin: Option<&str>, resp: &mut Response) {
            resp.headers.push(("X-Origin", origin.unwrap_or("none").to_owned().into()));
        }
    }

    /// A server's shared state (never started), a loopback connection (client, server side)
    /// on a busy slot, and a deferred reply for it.
    fn setup(head_only: bool) -> (TcpStream, TcpStream, Arc<Slot>, Arc<Deferred>, Arc<Recorder>) {
        let limits = super::super::tests::limits();
        let recorder = Arc::new(Recorder::default());
        let server =
            Server::bind("127.0.0.1:0".parse().expect("addr"), limits, Decorating, recorder.clone()).expect("bind");
        let shared = server.shared.clone();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (stream, _) = listener.accept().expect("accept");
        client.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
        let slot = Arc::new(Slot::default());
        let conn = slot.open(Some(std::os::fd::AsRawFd::as_raw_fd(&stream)), Some(Instant::now()));
        assert!(slot.busy());
        shared.observer.event(Event::RequestStarted);
        let started = Instant::now();
        let context = Context {
            shared,
            slot: slot.clone(),
            conn,
            fd: std::os::fd::AsRawFd::as_raw_fd(&stream),
            origin: Some("https://a.example".into()),
            head_only,
            http10: false,
            started,
            deadline: started + Duration::from_millis(400),
        };
        (client, stream, slot, Arc::new(Deferred::new(context, "t")), recorder)
    }

    /// What the client has received within its read timeout.
    fn received(client: &mut TcpStream) -> String {
        let mut buf = vec![0u8; 4096];
        loop {
            match client.read(&mut buf) {
                Ok(n) => return String::from_utf8_lossy(&buf[..n]).into_owned(),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return String::new(),
                // The test process stopped and continued (a freezer, a debugger): read on.
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// `complete` writes the answer as the worker would (decorated, dated, counted), once, and
    /// leaves the slot waiting for the next request.
    #[test]
    fn complete_writes_the_answer_and_frees_the_slot() {
        let (mut client, _stream, slot, d, recorder) = setup(false);
        Responder::new(d.clone()).complete(Response::new(200, "text/plain", b"hello".to_vec()).route("t"));
        let text = received(&mut client);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("\r\nDate: ") && text.contains("\r\nX-Origin: https://a.example\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nhello") && !text.contains("Connection: close"), "{text}");
        assert_eq!(d.settled(), Settled::Kept);
        assert!(matches!(slot.lock().phase, Phase::Waiting { served: true, .. }));
        assert!(!d.claim(), "a written reply cannot be claimed");
        assert_eq!(recorder.in_flight(), 0);
        assert_eq!(recorder.answered("t", 200), 1);
    }

    /// A reply the worker claimed is never written by the responder; the slot stays busy.
    #[test]
    fn claimed_reply_is_not_written() {
        let (mut client, _stream, slot, d, _) = setup(false);
        assert!(d.claim());
        Responder::new(d.clone()).complete(Response::new(200, "text/plain", b"hello".to_vec()));
        assert_eq!(received(&mut client), "");
        assert_eq!(d.settled(), Settled::Claimed);
        assert_eq!(slot.lock().phase, Phase::Busy);
    }

    /// A responder dropped unanswered answers 500 under its route; HEAD gets no body.
    #[test]
    fn dropped_responder_answers_500_head_only() {
        let (mut client, _stream, _slot, d, recorder) = setup(true);
        drop(Responder::new(d.clone()));
        let text = received(&mut client);
        assert!(text.starts_with("HTTP/1.1 500 "), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "HEAD: no body: {text}");
        assert_eq!(d.settled(), Settled::Kept);
        assert_eq!(recorder.answered("t", 500), 1);
    }

    /// A client that does not read (its connection's send buffer full) does not block the
    /// responder: the connection is shut down, and the worker sees it ended.
    #[test]
    fn a_client_not_reading_ends_the_connection() {
        let (_client, mut stream, slot, d, _) = setup(false);
        stream.set_nonblocking(true).expect("nonblocking");
        let chunk = [b'x'; 64 * 1024];
        // Bounded: the buffers of a loopback connection hold a few MiB at most.
        for _ in 0..4096 {
            match stream.write(&chunk) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("write: {e}"),
            }
        }
        let t = Instant::now();
        Responder::new(d.clone()).complete(Response::new(200, "text/plain", b"hello".to_vec()));
        assert!(t.elapsed() < Duration::from_millis(100), "the responder blocked for {:?}", t.elapsed());
        assert_eq!(d.settled(), Settled::Ended);
        assert_eq!(slot.lock().phase, Phase::Busy);
        // Shut down both ways: the server side reads EOF at once.
        let mut byte = [0u8; 1];
        stream.set_nonblocking(false).expect("blocking");
        assert_eq!(stream.read(&mut byte).expect("read"), 0);
    }
}
