//! Our HTTP/1.1 server on `httparse`: one acceptor thread hands each accepted connection over a
//! crossbeam channel to a pool of reusable worker threads (one connection per worker at a time,
//! capped by the connection limit); beyond the cap a connection is answered 503 at once.
//!
//! The pool never strands a connection (the bug measured in tiny_http): the acceptor only
//! sends a connection down the channel after reserving a worker that is already waiting on
//! it (the `idle` count); otherwise it starts a new worker for it, or refuses it.

mod conn;
pub mod request;
pub mod response;

pub use request::{Method, Request};
pub use response::Response;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use socket2::{Domain, SockRef, Socket, Type};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// Stack of each worker thread of the API. Stacks are touched lazily, so this bounds the depth
/// a handler may reach, not the memory an idle connection costs.
pub const WORKER_STACK: usize = 256 * 1024;
/// How long an idle worker waits for a connection before it exits. Threads a burst made (a
/// load spike, a slowloris attack holding every slot) go back to what the steady load needs,
/// instead of staying at the connection cap for the life of the process.
pub const WORKER_RETIRE: Duration = Duration::from_secs(10);
/// Listen backlog: a burst of fresh connections must not overflow the accept queue.
const LISTEN_BACKLOG: i32 = 4096;
/// Send buffer of every connection (the kernel doubles it). Left to autotuning it grows to
/// `tcp_wmem`'s maximum (4 MiB): a client that pipelines and never reads parked up to that much
/// of our answers in kernel memory and its connection never hit the write timeout (10 000
/// answers, ~1.5 MB, all fit). Answers are a few hundred bytes, so 64 KiB costs nothing.
const SEND_BUFFER: usize = 64 * 1024;
/// Pause after an accept error that retrying at once would only repeat (EMFILE, ENOMEM).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(10);
/// At most one warning per this interval for repeated accept errors.
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(1);

/// What the application plugs into the server.
pub trait Handler: Send + Sync + 'static {
    /// Answers one complete request. A panic here becomes a 500; the worker lives on.
    fn handle(&self, req: &Request) -> Response;
    /// Adds the headers every answer carries (CORS), given the request's `Origin`.
    fn decorate(&self, _origin: Option<&str>, _resp: &mut Response) {}
}

/// Limits and timeouts of the HTTP layer.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    /// Budget of each request from its first byte.
    pub deadline: Duration,
    /// Stack size of each worker thread (handlers that need deep stacks ask for more).
    pub worker_stack: usize,
    /// An idle worker thread exits after this long without a connection.
    pub worker_retire: Duration,
}

impl Limits {
    pub fn from_config(c: &crate::config::Config) -> Self {
        Limits {
            max_connections: c.max_connections,
            max_header_bytes: c.max_header_bytes,
            max_body_bytes: c.max_body_bytes,
            header_timeout: c.header_timeout,
            body_timeout: c.body_timeout,
            idle_timeout: c.idle_timeout,
            write_timeout: c.write_timeout,
            deadline: c.deadline,
            worker_stack: WORKER_STACK,
            worker_retire: WORKER_RETIRE,
        }
    }
}

/// State shared by the acceptor, the workers and the shutdown handle.
struct Shared {
    handler: Box<dyn Handler>,
    limits: Limits,
    metrics: Arc<Metrics>,
    stopping: AtomicBool,
    /// Answers close their connections (set at the start of a shutdown).
    draining: AtomicBool,
    /// Workers blocked on the channel and not yet reserved by the acceptor.
    idle: AtomicUsize,
    /// Workers running (started by the acceptor, gone after [`Limits::worker_retire`] idle).
    workers: AtomicUsize,
    slots: Mutex<Vec<Arc<Slot>>>,
    /// Refused connections, handed to the closer thread.
    closer: Sender<TcpStream>,
    /// Open connections, with a condvar for the shutdown drain.
    open: Mutex<usize>,
    drained: Condvar,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire) || self.stopping()
    }

    fn connection_opened(&self) {
        *self.open.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.metrics.open_connections.inc();
    }

    /// A worker is about to start: counted, and its slot recorded, before its thread runs
    /// (it may serve its connection and retire before the acceptor runs again).
    fn worker_started(&self, slot: &Arc<Slot>) {
        self.workers.fetch_add(1, Ordering::AcqRel);
        self.metrics.workers.inc();
        self.slots.lock().unwrap_or_else(PoisonError::into_inner).push(slot.clone());
    }

    /// A worker is gone (retired, or its thread could not start).
    fn worker_gone(&self, slot: &Slot) {
        self.workers.fetch_sub(1, Ordering::AcqRel);
        self.metrics.workers.dec();
        self.slots.lock().unwrap_or_else(PoisonError::into_inner).retain(|s| !std::ptr::eq(&**s, slot));
    }

    fn connection_closed(&self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        *open -= 1;
        self.metrics.open_connections.dec();
        if *open == 0 {
            self.drained.notify_all();
        }
    }
}

/// A worker's record of the connection it is idle on, so shutdown can close idle connections.
#[derive(Default)]
struct Slot {
    idle_fd: Mutex<Option<RawFd>>,
}

impl Slot {
    /// Marks the connection idle; false when the server is stopping (close instead of waiting).
    fn enter_idle(&self, stream: &TcpStream, shared: &Shared) -> bool {
        let mut fd = self.idle_fd.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked under the lock: shutdown sets the flag, then visits every slot under its lock.
        if shared.stopping() {
            return false;
        }
        *fd = Some(stream.as_raw_fd());
        true
    }

    fn leave_idle(&self) {
        *self.idle_fd.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Wakes the worker's blocking read with EOF.
    fn close_if_idle(&self) {
        let fd = self.idle_fd.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(fd) = *fd {
            // SAFETY: the fd stays open while it is recorded here: the worker clears the record
            // under this lock before it can drop the stream.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            let _ = SockRef::from(&borrowed).shutdown(Shutdown::Read);
        }
    }
}

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

/// Controls a running server.
pub struct ServerHandle {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl Server {
    /// Binds the listener (address reuse, a deep backlog, bounded send buffers).
    pub fn bind(
        addr: SocketAddr,
        limits: Limits,
        handler: impl Handler,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Server> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        // Inherited by every accepted connection.
        socket.set_send_buffer_size(SEND_BUFFER)?;
        socket.bind(&addr.into())?;
        socket.listen(LISTEN_BACKLOG)?;
        let (closer_tx, closer_rx) = crossbeam_channel::bounded(CLOSER_CAPACITY);
        thread::Builder::new().name("http-closer".into()).spawn(move || closer(closer_rx))?;
        let shared = Arc::new(Shared {
            closer: closer_tx,
            handler: Box::new(handler),
            limits,
            metrics,
            stopping: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            idle: AtomicUsize::new(0),
            workers: AtomicUsize::new(0),
            slots: Mutex::new(Vec::new()),
            open: Mutex::new(0),
            drained: Condvar::new(),
        });
        Ok(Server { listener: socket.into(), shared })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Starts the acceptor thread and returns at once.
    pub fn start(self) -> std::io::Result<ServerHandle> {
        let local_addr = self.listener.local_addr()?;
        let shared = self.shared.clone();
        let (tx, rx) = crossbeam_channel::unbounded();
        let listener = self.listener;
        let acceptor =
            thread::Builder::new().name("http-acceptor".into()).spawn(move || accept_loop(listener, shared, tx, rx))?;
        Ok(ServerHandle { shared: self.shared, local_addr, acceptor: Some(acceptor) })
    }
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Worker threads alive now (serving or idle).
    pub fn workers(&self) -> usize {
        self.shared.workers.load(Ordering::Acquire)
    }

    /// From now on every answer carries `Connection: close`, so clients move elsewhere while
    /// the listener still serves (the shutdown delay).
    pub fn begin_drain(&self) {
        self.shared.draining.store(true, Ordering::Release);
    }

    /// Stops accepting, closes idle connections, lets in-flight requests finish (their
    /// connections close after the answer) and waits up to `grace` for all connections to
    /// end. Returns how many were still open when the grace ran out.
    pub fn shutdown(mut self, grace: Duration) -> usize {
        let until = Instant::now() + grace;
        self.shared.stopping.store(true, Ordering::Release);
        // Wake the acceptor's blocking accept(); it sees the flag and ends.
        let mut wake = self.local_addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(if wake.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        let slots = self.shared.slots.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for slot in &slots {
            slot.close_if_idle();
        }
        let mut open = self.shared.open.lock().unwrap_or_else(PoisonError::into_inner);
        while *open > 0 {
            let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else { break };
            open = self.shared.drained.wait_timeout(open, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        *open
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, tx: Sender<TcpStream>, rx: Receiver<TcpStream>) {
    let mut last_warn: Option<Instant> = None;
    // A descriptor held in reserve: on EMFILE it is released to accept and refuse one
    // connection, so clients get an answer instead of hanging in the backlog.
    let mut spare = std::fs::File::open("/dev/null").ok();
    loop {
        let accepted = listener.accept();
        if shared.stopping() {
            return;
        }
        match accepted {
            Ok((stream, _)) => dispatch(stream, &shared, &tx, &rx),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                shared.metrics.accept_errors.inc();
                if last_warn.is_none_or(|t| t.elapsed() >= ACCEPT_WARN_EVERY) {
                    log::warn!("accept() failed: {e}; still accepting");
                    last_warn = Some(Instant::now());
                }
                let out_of_fds = matches!(e.raw_os_error(), Some(code) if code == 24 || code == 23);
                if out_of_fds && spare.take().is_some() {
                    if let Ok((stream, _)) = listener.accept() {
                        refuse(stream, &shared, false);
                    }
                    spare = std::fs::File::open("/dev/null").ok();
                } else {
                    thread::sleep(ACCEPT_ERROR_PAUSE);
                }
            }
        }
    }
}

/// Hands `stream` to an idle worker, or a new one, or refuses it when at the cap.
fn dispatch(stream: TcpStream, shared: &Arc<Shared>, tx: &Sender<TcpStream>, rx: &Receiver<TcpStream>) {
    let reserved = shared.idle.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok();
    if reserved {
        shared.connection_opened();
        // The channel outlives every worker; a send can only fail if all receivers are gone.
        if tx.send(stream).is_err() {
            shared.connection_closed();
        }
        return;
    }
    if shared.workers.load(Ordering::Acquire) >= shared.limits.max_connections {
        refuse(stream, shared, true);
        return;
    }
    shared.connection_opened();
    match spawn_worker(shared.clone(), rx.clone(), stream) {
        Ok(()) => {}
        Err((e, stream)) => {
            shared.connection_closed();
            log::warn!("cannot start a worker thread: {e}");
            refuse(stream, shared, true);
        }
    }
}

type SpawnError = (std::io::Error, TcpStream);

fn spawn_worker(shared: Arc<Shared>, rx: Receiver<TcpStream>, first: TcpStream) -> Result<(), SpawnError> {
    // The stream is parked in a cell so it can be given back if the thread cannot start.
    let cell = Arc::new(Mutex::new(Some(first)));
    let cell2 = cell.clone();
    let slot = Arc::new(Slot::default());
    let slot2 = slot.clone();
    let shared2 = shared.clone();
    shared.worker_started(&slot);
    let spawned =
        thread::Builder::new().name("http-worker".into()).stack_size(shared.limits.worker_stack).spawn(move || {
            let first = cell2.lock().unwrap_or_else(PoisonError::into_inner).take();
            worker_loop(&shared2, &slot2, &rx, first);
        });
    match spawned {
        Ok(_) => Ok(()),
        Err(e) => {
            shared.worker_gone(&slot);
            match cell.lock().unwrap_or_else(PoisonError::into_inner).take() {
                Some(stream) => Err((e, stream)),
                None => Ok(()),
            }
        }
    }
}

fn worker_loop(shared: &Shared, slot: &Slot, rx: &Receiver<TcpStream>, first: Option<TcpStream>) {
    let mut next = first;
    loop {
        if let Some(stream) = next.take() {
            // A panic outside the handler (a bug in this layer) must not kill the worker.
            if catch_unwind_silent(|| conn::serve(stream, shared, slot)).is_err() {
                log::error!("connection task panicked; worker continues");
            }
            shared.connection_closed();
        }
        if shared.stopping() {
            return;
        }
        shared.idle.fetch_add(1, Ordering::AcqRel);
        loop {
            match rx.recv_timeout(shared.limits.worker_retire) {
                Ok(stream) => {
                    next = Some(stream);
                    break;
                }
                Err(RecvTimeoutError::Timeout) => {
                    // Leaving the idle count is the same atomic step the acceptor takes to
                    // reserve a worker: if it took the last one, a connection is on its way to
                    // whichever idle worker receives first, so this one stays to take it.
                    if shared.idle.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok() {
                        shared.worker_gone(slot);
                        return;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

fn catch_unwind_silent(f: impl FnOnce()) -> thread::Result<()> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
}

/// Answers 503 + `Connection: close` at once, without blocking the acceptor.
/// `linger`: hand the socket to the closer (not when out of descriptors: then it closes now).
fn refuse(stream: TcpStream, shared: &Shared, linger: bool) {
    shared.metrics.refused_connections.inc();
    let mut resp = ApiError::Overloaded.to_response().route("refused");
    shared.handler.decorate(None, &mut resp);
    let mut out = Vec::with_capacity(256);
    resp.write_to(&mut out, false, false, false);
    if stream.set_nonblocking(true).is_ok() {
        let mut stream = stream;
        // Whatever request bytes already arrived are read first, so closing does not reset.
        let mut sink = [0u8; 4096];
        let _ = stream.read(&mut sink);
        let _ = stream.write(&out);
        let _ = stream.shutdown(Shutdown::Write);
        // Closed now, a request still on its way would reset the connection and could destroy
        // the answer at the client: the closer drains it first. Past its capacity, close now.
        if linger {
            let _ = shared.closer.try_send(stream);
        }
    }
}

/// Refused connections waiting to be closed gracefully, at most.
const CLOSER_CAPACITY: usize = 1024;
/// How long a refused connection is drained before it is closed.
const CLOSER_LINGER: Duration = Duration::from_millis(250);
/// How often the closer looks at the connections it drains.
const CLOSER_TICK: Duration = Duration::from_millis(10);

/// Drains refused connections (non-blocking) until their peer closes or the linger ends.
fn closer(rx: Receiver<TcpStream>) {
    let mut draining: Vec<(TcpStream, Instant)> = Vec::new();
    let mut sink = [0u8; 4096];
    loop {
        let next = if draining.is_empty() {
            rx.recv().map_err(|_| ())
        } else {
            match rx.recv_timeout(CLOSER_TICK) {
                Ok(s) => Ok(s),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(()),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            }
        };
        match next {
            Ok(s) => draining.push((s, Instant::now())),
            Err(()) if draining.is_empty() => return,
            Err(()) => {}
        }
        draining.extend(rx.try_iter().map(|s| (s, Instant::now())));
        draining.retain_mut(|(stream, since)| {
            loop {
                match stream.read(&mut sink) {
                    Ok(0) => return false,
                    Ok(_) => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => return false,
                }
            }
            since.elapsed() < CLOSER_LINGER
        });
    }
}
