//! One client connection, served by one worker thread from its first byte to its close:
//! read a head within the header timeout, read the body within limits, call the handler,
//! write the answer within the write timeout, and repeat while the connection stays alive.
//! The slot records what the connection is doing, so the acceptor can displace it while it
//! waits for or receives a request (never while its request is handled).

use super::defer::{Context, Deferral, Deferred, Late, Settled};
use super::request::{BodyFraming, ChunkedDecoder, Head, Parsed, Request, parse_head};
use super::room::Entry;
use super::{ConnState, Event, Incoming, Shared, Slot, remaining};
use crate::Error;
use crate::Response;
use crate::request::Method;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Size of each read from the socket.
const READ_CHUNK: usize = 4096;
/// After an error answer, unread input is drained for at most this long / this many bytes so
/// the client sees the answer instead of a reset.
const LINGER_TIME: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 1 << 20;

/// The first byte of a request on a new connection must arrive within this share of the
/// header timeout (capped by the idle timeout), and an idle keep-alive connection within this
/// share of the idle timeout, where the share shrinks as the server fills: whole up to half
/// full, then linearly down to [`MIN_WAIT_SHARE`] at the cap. Connections that do nothing
/// give way before the cap is reached (Apache's mod_reqtimeout, nginx's keep-alive reuse).
fn wait_share(occupancy: f64) -> f64 {
    ((1.0 - occupancy) * 2.0).clamp(MIN_WAIT_SHARE, 1.0)
}

/// The smallest share of the idle or header timeout a connection may wait for a request.
const MIN_WAIT_SHARE: f64 = 0.1;

/// How long a worker naps while a deferred reply is being written (a non-blocking send).
const WRITING_NAP: Duration = Duration::from_millis(1);

/// How long a paced worker sleeps between looks at its turn (it is woken when it comes).
const TURN_NAP: Duration = Duration::from_millis(100);

/// A pending reply is taken back (only a panic on the worker gets here): the responder must
/// not write on a socket about to close, nor may the worker close it mid-write.
fn abandon(d: &Arc<Deferred>, shared: &Shared) {
    loop {
        if d.claim() {
            shared.observer.event(Event::RequestFinished);
            return;
        }
        if d.settled() != Settled::Pending {
            // A paced reply kept meanwhile would be given a turn this worker never uses.
            if d.paced {
                shared.turns.leave(d);
            }
            return;
        }
        std::thread::park_timeout(WRITING_NAP);
    }
}

/// What a connection is served over: a TCP socket in the server, an in-memory stream in the
/// unit tests below.
pub(crate) trait Stream: Read + Write {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()>;
    fn shutdown(&self, how: Shutdown) -> std::io::Result<()>;
    /// The socket: displacement shuts it down from another thread, and a deferred answer is
    /// sent on it by another thread. `None`: neither happens to this connection.
    fn fd(&self) -> Option<RawFd>;
    /// Writes `bytes` without blocking and ends the writes: the last word to a connection
    /// being let go of.
    fn last_words(&mut self, bytes: &[u8]);
    /// A second handle for the room, which drains and closes the connection politely.
    fn for_room(&self) -> Option<TcpStream>;
}

impl Stream for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }

    fn shutdown(&self, how: Shutdown) -> std::io::Result<()> {
        TcpStream::shutdown(self, how)
    }

    fn fd(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }

    fn last_words(&mut self, bytes: &[u8]) {
        if self.set_nonblocking(true).is_ok() {
            let _ = self.write(bytes);
        }
        let _ = TcpStream::shutdown(self, Shutdown::Write);
    }

    fn for_room(&self) -> Option<TcpStream> {
        self.try_clone().ok()
    }
}

/// Why reading stopped.
enum ReadEnd {
    /// The peer closed or reset: nothing to answer.
    Closed,
    /// Displaced by a new connection at the cap while the request was still arriving.
    Displaced,
    /// An error to answer before closing.
    Error(Error),
}

struct Connection<'a, S: Stream> {
    stream: S,
    shared: &'a Arc<Shared>,
    slot: &'a Arc<Slot>,
    /// The connection's number on its slot.
    number: u64,
    /// A reply deferred to a responder, not known to be written yet, with the answer to write
    /// if the request's deadline passes first.
    pending: Option<(Arc<Deferred>, Late)>,
    /// Received bytes not consumed yet (may hold pipelined requests).
    buf: Vec<u8>,
    /// Where a read lands before its bytes join `buf`: zeroed once per connection, where
    /// growing `buf` for each read zeroed a whole chunk per request.
    chunk: Box<[u8]>,
    /// When the last read returned: the arrival time of pipelined bytes in `buf`.
    last_read: Instant,
    /// The read timeout currently set on the socket, to skip redundant setsockopt calls.
    read_timeout: Option<Duration>,
    out: Vec<u8>,
    /// The application's state for this connection, handed to each of its requests.
    state: Option<ConnState>,
    /// No request has been read on this connection yet.
    fresh: bool,
}

impl<S: Stream> Drop for Connection<'_, S> {
    fn drop(&mut self) {
        // Only a panic leaves a reply pending here: the responder must be done with the socket
        // before it closes.
        if let Some((d, _)) = self.pending.take() {
            abandon(&d, self.shared);
        }
        // Before the stream closes: its fd number may be reused at once.
        self.slot.release();
    }
}

/// Serves `incoming` until it closes, idles out, is displaced, or the server stops.
pub(super) fn serve(incoming: Incoming, shared: &Arc<Shared>, slot: &Arc<Slot>) {
    let Incoming { stream, pending, arrived } = incoming;
    let _ = stream.set_nodelay(true);
    if stream.set_write_timeout(Some(shared.limits.write_timeout)).is_err() {
        return;
    }
    serve_stream(stream, pending, arrived, shared, slot);
}

/// Serves a connection over `stream`, `pending` holding bytes already read (at `arrived`).
fn serve_stream<S: Stream>(stream: S, pending: Vec<u8>, arrived: Instant, shared: &Arc<Shared>, slot: &Arc<Slot>) {
    let number = slot.open(stream.fd(), (!pending.is_empty()).then_some(arrived));
    shared.note_fresh(slot, number);
    let mut conn = Connection {
        stream,
        shared,
        slot,
        number,
        pending: None,
        buf: pending,
        chunk: vec![0; READ_CHUNK].into_boxed_slice(),
        last_read: arrived,
        read_timeout: None,
        out: Vec::new(),
        state: shared.handler.connection_state(),
        fresh: true,
    };
    conn.run();
}

impl<S: Stream> Connection<'_, S> {
    fn run(&mut self) {
        loop {
            let started = if let Some(pending) = self.pending.take() {
                match self.after_deferred(pending) {
                    Some(t) => t,
                    None => {
                        self.close();
                        return;
                    }
                }
            } else if self.buf.is_empty() {
                match self.wait_for_request() {
                    Some(t) => t,
                    None => {
                        // Displaced or idled out before a request: nothing to answer.
                        self.close();
                        return;
                    }
                }
            } else {
                self.last_read
            };
            self.fresh = false;
            if !self.slot.receiving(started) {
                // Displaced as its request arrived (only a connection that was waiting can be):
                // closed unanswered, the keep-alive race HTTP clients retry idempotent
                // requests on; a 408 would reach the client as its GET's answer.
                self.close();
                return;
            }
            let keep_going = match self.read_request(started) {
                Ok((head, body)) => self.respond(head, body, started),
                Err(ReadEnd::Closed) => false,
                Err(ReadEnd::Displaced) => {
                    self.displaced();
                    return;
                }
                Err(ReadEnd::Error(err)) => {
                    self.answer_error(err, started);
                    false
                }
            };
            if !keep_going {
                self.close();
                return;
            }
        }
    }

    /// Blocks until the first byte of the next request arrives (returns its time), or the
    /// connection idles out, closes, is displaced, or the server stops (returns `None`).
    fn wait_for_request(&mut self) -> Option<Instant> {
        if !self.slot.wait(self.shared) {
            return None;
        }
        let limits = &self.shared.limits;
        let full_wait = if self.fresh { limits.header_timeout.min(limits.idle_timeout) } else { limits.idle_timeout };
        let wait = full_wait.mul_f64(wait_share(self.shared.occupancy())).max(Duration::from_millis(1));
        match self.read_until(Instant::now() + wait) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(self.last_read),
        }
    }

    /// Reads one whole request (head and body) from `buf` and the socket.
    fn read_request(&mut self, started: Instant) -> Result<(Head, Vec<u8>), ReadEnd> {
        let shared = self.shared;
        let limits = &shared.limits;
        let head = loop {
            match parse_head(&self.buf, limits.max_header_bytes).map_err(ReadEnd::Error)? {
                Parsed::Complete(head) => break head,
                Parsed::Partial => self.read_some(started + limits.header_timeout)?,
            }
        };
        let body = self.read_body(&head)?;
        if !self.slot.busy() {
            return Err(ReadEnd::Displaced);
        }
        Ok((head, body))
    }

    fn read_body(&mut self, head: &Head) -> Result<Vec<u8>, ReadEnd> {
        let shared = self.shared;
        let limits = &shared.limits;
        let max = limits.max_body_bytes;
        if let BodyFraming::Length(n) = head.framing
            && n > max as u64
        {
            // Answered from the header alone: the body is neither read nor allocated.
            return Err(ReadEnd::Error(Error::PayloadTooLarge { limit: max }));
        }
        if head.framing != BodyFraming::None && head.expect_continue {
            self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").map_err(|_| ReadEnd::Closed)?;
        }
        let body_until = Instant::now() + limits.body_timeout;
        match head.framing {
            BodyFraming::None => {
                self.buf.drain(..head.len);
                Ok(Vec::new())
            }
            BodyFraming::Length(n) => {
                let n = n as usize;
                while self.buf.len() < head.len + n {
                    self.read_some(body_until)?;
                }
                let body = self.buf[head.len..head.len + n].to_vec();
                self.buf.drain(..head.len + n);
                Ok(body)
            }
            BodyFraming::Chunked => {
                self.buf.drain(..head.len);
                let mut decoder = ChunkedDecoder::default();
                let mut body = Vec::new();
                loop {
                    let used = decoder.decode(&self.buf, &mut body, max).map_err(ReadEnd::Error)?;
                    self.buf.drain(..used);
                    if decoder.is_done() {
                        return Ok(body);
                    }
                    self.read_some(body_until)?;
                }
            }
        }
    }

    /// Runs the handler and writes its answer. Returns whether to keep the connection.
    fn respond(&mut self, head: Head, body: Vec<u8>, started: Instant) -> bool {
        let shared = self.shared;
        let deadline = started + shared.limits.deadline;
        let head_only = head.method == Method::Head;
        let http10 = head.minor_version == 0;
        // Deferral only where the worker can go back to the connection at once: the answer
        // keeps the connection, and no pipelined request is queued behind this one.
        let fd = self.stream.fd().filter(|_| head.keep_alive && self.buf.is_empty() && !shared.draining());
        let deferral = if let Some(fd) = fd {
            Deferral::available(Context {
                shared: shared.clone(),
                slot: self.slot.clone(),
                conn: self.number,
                fd,
                origin: head.origin.clone(),
                head_only,
                http10,
                started,
                deadline,
            })
        } else {
            Deferral::default()
        };
        let req = Request {
            method: head.method,
            path: head.path,
            origin: head.origin,
            body,
            started,
            conn: self.state.clone(),
            deferral,
        };
        shared.observer.event(Event::RequestStarted);
        let handler = &shared.handler;
        let mut resp = catch_unwind(AssertUnwindSafe(|| handler.handle(&req))).unwrap_or_else(|_| {
            log::error!("handler panicked on {:?} {}", req.method, req.path);
            handler.on_error(&Error::Internal)
        });
        if let Some(taken) = req.deferral.taken() {
            // A responder answers (it counts the request out of `in_flight`); what the handler
            // returned is not the answer.
            self.pending = Some(taken);
            return true;
        }
        shared.observer.event(Event::RequestFinished);
        handler.decorate(req.origin.as_deref(), &mut resp);
        let keep_alive = head.keep_alive && !resp.close && !shared.draining();
        self.write_response(&resp, head_only, keep_alive, http10, started) && keep_alive
    }

    /// After a reply was deferred: waits for the next request's first byte (returns its time)
    /// while the reply is written by its responder, or claimed here at the request's deadline
    /// and answered with the late answer. A next request is read only once the reply before
    /// it is written (answers keep their order). `None`: the connection ends.
    fn after_deferred(&mut self, (d, late): (Arc<Deferred>, Late)) -> Option<Instant> {
        if d.paced {
            return self.after_paced(&d, late);
        }
        // The slot stays busy (the responder makes it idle once the reply is written), so the
        // wait for the next request does not go through `Slot::wait`.
        let got = self.read_until(d.deadline);
        if !self.settle(&d, late) {
            return None;
        }
        match got {
            Ok(0) => None,
            Ok(_) => Some(self.last_read),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => self.wait_for_request(),
            Err(_) => None,
        }
    }

    /// Paced: parked until the reply is written (or claimed at the deadline), then until this
    /// worker's turn; the turn goes on as soon as it runs, before it reads (see `turns`).
    fn after_paced(&mut self, d: &Arc<Deferred>, late: Late) -> Option<Instant> {
        // Ended or claimed: the responder gives no turn.
        if !self.settle(d, late) {
            return None;
        }
        if d.settled() == Settled::Kept {
            while !d.granted() {
                // Woken by the grant; the nap only bounds a wake-up lost to a bug.
                std::thread::park_timeout(TURN_NAP);
            }
            self.shared.turns.release();
        }
        self.wait_for_request()
    }

    /// Waits (bounded by the request's deadline) until the deferred reply is written, or
    /// claims it at the deadline and writes `late`. Returns whether the connection stays.
    fn settle(&mut self, d: &Deferred, late: Late) -> bool {
        loop {
            match d.settled() {
                Settled::Kept => return true,
                Settled::Ended => return false,
                Settled::Claimed => return false,
                Settled::Pending => {}
            }
            match remaining(d.deadline) {
                // Woken by the responder once it has written; a reply being written (it never
                // blocks) is waited for in short naps.
                Some(left) => std::thread::park_timeout(left),
                None if d.claim() => return self.write_late(late(), d),
                None => std::thread::park_timeout(WRITING_NAP),
            }
        }
    }

    /// The deadline passed with the deferred reply unwritten: the handler's late answer.
    fn write_late(&mut self, mut late: Response, d: &Deferred) -> bool {
        let shared = self.shared;
        shared.observer.event(Event::RequestFinished);
        shared.observer.event(Event::DeadlineExpired);
        shared.handler.decorate(d.origin.as_deref(), &mut late);
        let keep_alive = !late.close && !shared.draining();
        self.write_response(&late, d.head_only, keep_alive, d.http10, d.started) && keep_alive
    }

    fn answer_error(&mut self, err: Error, started: Instant) {
        let mut resp = self.shared.handler.on_error(&err).route("invalid");
        self.shared.handler.decorate(None, &mut resp);
        if self.write_response(&resp, false, false, false, started) {
            self.linger();
        }
    }

    fn write_response(
        &mut self,
        resp: &Response,
        head_only: bool,
        keep_alive: bool,
        http10: bool,
        started: Instant,
    ) -> bool {
        self.out.clear();
        resp.write_to(&mut self.out, head_only, keep_alive, http10);
        // Counted before the client can see the answer, so that a scrape it makes next
        // includes it.
        self.shared.observer.event(Event::Answered {
            route: resp.route,
            status: resp.status,
            elapsed: started.elapsed(),
        });
        let ok = self.stream.write_all(&self.out).is_ok();
        if self.out.capacity() > 64 * 1024 {
            self.out = Vec::new();
        }
        if ok && log::log_enabled!(log::Level::Debug) {
            log::debug!("{} {} {:.3}ms", resp.route, resp.status, started.elapsed().as_secs_f64() * 1000.0);
        }
        ok
    }

    /// Reads more bytes into `buf` by `until`, or answers 408; the peer closing mid-request
    /// ends reading.
    fn read_some(&mut self, until: Instant) -> Result<(), ReadEnd> {
        let got = self.read_until(until);
        // Displacement shuts the read side down: the read ends with EOF.
        if !matches!(got, Ok(n) if n > 0) && self.slot.is_displaced() {
            return Err(ReadEnd::Displaced);
        }
        match got {
            Ok(0) => Err(ReadEnd::Closed),
            Ok(_) => Ok(()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(ReadEnd::Error(Error::RequestTimeout))
            }
            Err(_) => Err(ReadEnd::Closed),
        }
    }

    /// Reads once into `buf`, waiting until `until` at most (`TimedOut` once it has passed).
    /// A stop and continue of the process (SIGSTOP, a freezer, `docker pause`) ends a read that
    /// has a timeout with EINTR; the read goes on for the time left, since the socket's timeout
    /// would start over and a pause would lengthen every wait.
    fn read_until(&mut self, until: Instant) -> std::io::Result<usize> {
        loop {
            let Some(left) = remaining(until) else { return Err(ErrorKind::TimedOut.into()) };
            // Whole milliseconds, rounded down: waits that begin within the same millisecond ask
            // for the same timeout, which costs no syscall, and none outlasts `until`.
            let whole = Duration::from_millis(left.as_millis() as u64);
            self.set_read_timeout(if whole.is_zero() { left } else { whole })?;
            let got = self.stream.read(&mut self.chunk);
            if let Ok(n @ 1..) = got {
                self.buf.extend_from_slice(&self.chunk[..n]);
                self.last_read = Instant::now();
            }
            if !matches!(&got, Err(e) if e.kind() == ErrorKind::Interrupted) {
                return got;
            }
        }
    }

    fn set_read_timeout(&mut self, timeout: Duration) -> std::io::Result<()> {
        // Timeouts within a millisecond of the one in place are not worth a syscall.
        let close_enough = self.read_timeout.is_some_and(|t| t <= timeout && timeout - t < Duration::from_millis(1));
        if !close_enough {
            self.stream.set_read_timeout(Some(timeout))?;
            self.read_timeout = Some(timeout);
        }
        Ok(())
    }

    /// Ends the connection gracefully: no more writes, then close.
    fn close(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Displaced while its request was arriving: a 408 (the client sent part of a request, so
    /// it expects an answer), written without blocking; then the room drains and closes the
    /// connection, so this worker can take the new one at once.
    fn displaced(&mut self) {
        let (resp, out) = self.shared.last_words(&Error::RequestTimeout, "displaced");
        self.stream.last_words(&out);
        let elapsed = self.last_read.elapsed();
        self.shared.observer.event(Event::Answered { route: resp.route, status: resp.status, elapsed });
        if let Some(clone) = self.stream.for_room() {
            let _ = self.shared.room.try_send(Entry::Closing(clone));
        }
    }

    /// After an error answer the client may still be sending; drain a bounded amount so
    /// closing does not reset the connection before the answer is read.
    // Not inlined: its 4 KiB drain buffer would sit in the worker loop's frame, one more
    // stack page touched by every worker for an error path.
    #[inline(never)]
    fn linger(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let until = Instant::now() + LINGER_TIME;
        let mut drained = 0;
        let mut sink = [0u8; READ_CHUNK];
        while drained < LINGER_BYTES {
            let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else { break };
            if self.stream.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match self.stream.read(&mut sink) {
                // A stop and continue of the process: the time left says whether to go on.
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The connection's state machine over an in-memory stream: each read returns the next
    //! scripted chunk (an empty chunk is a read timeout; the end of the script, the peer
    //! closing), and everything written is kept for the assertions.
    use super::super::{Handler, Limits, Server, tests::Recorder};
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    struct Memory {
        input: VecDeque<Vec<u8>>,
        output: Arc<Mutex<Vec<u8>>>,
    }

    impl Read for Memory {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match self.input.pop_front() {
                None => Ok(0),
                Some(chunk) if chunk.is_empty() => Err(ErrorKind::TimedOut.into()),
                Some(mut chunk) => {
                    let n = chunk.len().min(buf.len());
                    buf[..n].copy_from_slice(&chunk[..n]);
                    if n < chunk.len() {
                        self.input.push_front(chunk.split_off(n));
                    }
                    Ok(n)
                }
            }
        }
    }

    impl Write for Memory {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.output.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Stream for Memory {
        fn set_read_timeout(&self, _timeout: Option<Duration>) -> std::io::Result<()> {
            Ok(())
        }
        fn shutdown(&self, _how: Shutdown) -> std::io::Result<()> {
            Ok(())
        }
        fn fd(&self) -> Option<RawFd> {
            None
        }
        fn last_words(&mut self, bytes: &[u8]) {
            let _ = self.write(bytes);
        }
        fn for_room(&self) -> Option<TcpStream> {
            None
        }
    }

    /// Echoes method, path and body; `/panic` panics.
    struct Echo;

    impl Handler for Echo {
        fn handle(&self, req: &Request) -> Response {
            if req.path == "/panic" {
                panic!("test handler panics");
            }
            let body = format!("{:?} {} {}", req.method, req.path, String::from_utf8_lossy(&req.body));
            Response::new(200, "text/plain", body.into_bytes()).route("echo")
        }
    }

    /// Serves one connection that sends `chunks`; returns what it was sent and the events.
    fn serve_chunks(chunks: &[&[u8]]) -> (String, Arc<Recorder>) {
        let limits = Limits {
            max_connections: 4,
            max_header_bytes: 1024,
            max_body_bytes: 64,
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            deadline: Duration::from_millis(400),
            worker_stack: super::super::WORKER_STACK,
            worker_retire: Duration::from_secs(1),
        };
        let recorder = Arc::new(Recorder::default());
        // Bound, never started: its shared state is what a worker serves with.
        let server = Server::bind("127.0.0.1:0".parse().expect("addr"), limits, Echo, recorder.clone()).expect("bind");
        let output = Arc::new(Mutex::new(Vec::new()));
        let stream = Memory { input: chunks.iter().map(|c| c.to_vec()).collect(), output: output.clone() };
        let slot = Arc::new(Slot::default());
        serve_stream(stream, Vec::new(), Instant::now(), &server.shared, &slot);
        let sent =
            String::from_utf8_lossy(&output.lock().unwrap_or_else(std::sync::PoisonError::into_inner)).into_owned();
        (sent, recorder)
    }

    /// The status lines of `sent`, in order.
    fn statuses(sent: &str) -> Vec<&str> {
        sent.split("HTTP/1.1 ").skip(1).map(|a| &a[..3]).collect()
    }

    /// Pipelined keep-alive requests in one read are answered in order, each once.
    #[test]
    fn pipelined_requests_answered_in_order() {
        let (sent, recorder) = serve_chunks(&[
            b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nPOST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi",
        ]);
        assert_eq!(statuses(&sent), ["200", "200"], "{sent}");
        let (a, b) = (sent.find("Get /a ").expect("first answer"), sent.find("Post /b hi").expect("second answer"));
        assert!(a < b, "{sent}");
        assert!(!sent.contains("Connection: close"), "{sent}");
        assert_eq!((recorder.answered("echo", 200), recorder.in_flight()), (2, 0));
    }

    /// A head and a chunked body trickled over many reads make one request.
    #[test]
    fn trickled_chunked_body() {
        let (sent, _) = serve_chunks(&[
            b"POST /c HTTP/1.1\r\nHo",
            b"st: t\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"3\r\nab",
            b"c\r\n2\r\nde\r\n0\r\n\r\n",
        ]);
        assert_eq!(statuses(&sent), ["200"], "{sent}");
        assert!(sent.ends_with("Post /c abcde"), "{sent}");
    }

    /// HTTP/1.0 without keep-alive: one answer, then `Connection: close`; a second request on
    /// the same bytes is not read.
    #[test]
    fn http10_closes_after_one_answer() {
        let (sent, _) = serve_chunks(&[b"GET /x HTTP/1.0\r\n\r\nGET /y HTTP/1.0\r\n\r\n"]);
        assert_eq!(statuses(&sent), ["200"], "{sent}");
        assert!(sent.contains("Connection: close\r\n"), "{sent}");
    }

    /// A Content-Length over the limit is a 413 from the head alone, closing the connection.
    #[test]
    fn oversized_body_refused_from_its_header() {
        let (sent, recorder) = serve_chunks(&[b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n"]);
        assert_eq!(statuses(&sent), ["413"], "{sent}");
        assert!(sent.contains("Connection: close\r\n") && sent.contains("larger than 64 bytes"), "{sent}");
        assert_eq!(recorder.answered("invalid", 413), 1);
    }

    /// A head that stops arriving (a read timeout mid-head) is answered 408.
    #[test]
    fn stalled_head_is_408() {
        let (sent, _) = serve_chunks(&[b"GET / HTTP/1.1\r\nHost:", b""]);
        assert_eq!(statuses(&sent), ["408"], "{sent}");
    }

    /// A panicking handler becomes a 500 through `on_error`, and the connection goes on.
    #[test]
    fn panic_is_500_and_the_connection_lives() {
        let (sent, _) =
            serve_chunks(&[b"GET /panic HTTP/1.1\r\nHost: t\r\n\r\n", b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n"]);
        assert_eq!(statuses(&sent), ["500", "200"], "{sent}");
        assert!(sent.contains("{\"error\":\"internal error\"}"), "{sent}");
    }

    /// `Expect: 100-continue` gets its interim answer before the final one; HEAD gets no body.
    #[test]
    fn expect_continue_and_head() {
        let (sent, _) =
            serve_chunks(&[b"POST /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n", b"ok"]);
        assert!(sent.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 "), "{sent}");
        let (sent, _) = serve_chunks(&[b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n"]);
        assert!(sent.contains("Content-Length: 8\r\n") && sent.ends_with("\r\n\r\n"), "{sent}");
    }
}
