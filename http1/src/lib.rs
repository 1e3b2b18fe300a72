//! Our HTTP/1.1 server on `httparse`: one acceptor thread hands each accepted connection over a
//! crossbeam channel to a pool of reusable worker threads (one connection per worker at a time,
//! capped by the connection limit).
//!
//! The pool never strands a connection: the acceptor only
//! sends a connection down the channel after reserving a worker that is already waiting on
//! it (the `idle` count), or one it has just displaced; otherwise it starts a new worker for it.
//!
//! At the cap, a new connection displaces the connection that has done nothing the longest
//! (idle, or still sending its request: a slowloris), never one whose request is being
//! handled. Only when every slot holds a request in progress does a new connection wait in
//! the [`room`]: it is handed to the first slot that frees up, or answered 503 once its
//! request has arrived, or closed unanswered — never answered before it sent a request.
//!
//! The crate knows nothing of the application: it calls a [`Handler`] (which also renders the
//! layer's own [`Error`]s and may keep a state per connection) and reports what happens to an
//! [`Observer`] (the application's metrics). It depends only on what HTTP needs.

mod conn;
mod defer;
pub mod error;
pub mod request;
pub mod response;
mod room;
mod turns;

pub use defer::Responder;
pub use error::Error;
pub use request::{Method, Request};
pub use response::Response;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use room::Entry;
use socket2::{Domain, SockRef, Socket, Type};
use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use std::any::Any;
use std::io::Write;

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
/// How long after accept() last ran out of descriptors they count as short.
const FDS_SHORT_FOR: Duration = Duration::from_secs(1);
/// At most one warning per this interval for repeated accept errors.
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(1);

/// The application's state for one connection, made by [`Handler::connection_state`] when the
/// connection starts and handed to each of its requests ([`Request::conn_state`]).
pub type ConnState = Arc<dyn Any + Send + Sync>;

/// What the application plugs into the server.
pub trait Handler: Send + Sync + 'static {
    /// Answers one complete request. A panic here becomes [`Error::Internal`]; the worker
    /// lives on.
    fn handle(&self, req: &Request) -> Response;
    /// Adds the headers every answer carries (CORS), given the request's `Origin`.
    fn decorate(&self, _origin: Option<&str>, _resp: &mut Response) {}
    /// The answer to an error of the HTTP layer (a request it cannot pass on, a refusal at the
    /// cap, a panicking handler); by default [`Error::to_response`]. It should keep the
    /// status and `Connection: close` of the default.
    fn on_error(&self, err: &Error) -> Response {
        err.to_response()
    }
    /// A new connection's state, if the application keeps one (none by default).
    fn connection_state(&self) -> Option<ConnState> {
        None
    }
}

/// What the server reports as it works, for the application's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// An answer is about to be written: its route label ([`Response::route`]), its status and
    /// the time since the request's first byte.
    Answered {
        route: &'static str,
        status: u16,
        elapsed: Duration,
    },
    /// A request went to the handler; it is in flight until [`Event::RequestFinished`] (its
    /// answer written, by the worker or a [`Responder`]).
    RequestStarted,
    RequestFinished,
    ConnectionOpened,
    ConnectionClosed,
    WorkerStarted,
    WorkerStopped,
    /// A connection doing nothing made room for a new one at the cap.
    Displaced,
    /// A connection was refused at the cap (503, or closed before it sent a request).
    Refused,
    /// `accept()` failed (out of descriptors, memory).
    AcceptError,
    /// A deferred answer was not written by the request's deadline; the late answer went out.
    DeadlineExpired,
}

/// Receives the server's [`Event`]s. Called on the server's threads: keep it cheap.
pub trait Observer: Send + Sync + 'static {
    fn event(&self, event: Event);
}

/// No observer.
impl Observer for () {
    fn event(&self, _event: Event) {}
}

/// Time left until `at`, or `None` once it has passed.
fn remaining(at: Instant) -> Option<Duration> {
    at.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
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
    /// Budget of each request from its first byte: a deferred answer not written by then is
    /// replaced by the handler's late answer ([`Request::defer`]).
    pub deadline: Duration,
    /// Stack size of each worker thread (handlers that need deep stacks ask for more).
    pub worker_stack: usize,
    /// An idle worker thread exits after this long without a connection.
    pub worker_retire: Duration,
}

/// A connection on its way to a worker, with the bytes already read from it (by the room).
struct Incoming {
    stream: TcpStream,
    pending: Vec<u8>,
    /// When the first of `pending` arrived (or the connection was accepted).
    arrived: Instant,
}

impl Incoming {
    fn new(stream: TcpStream) -> Self {
        Incoming { stream, pending: Vec::new(), arrived: Instant::now() }
    }
}

/// State shared by the acceptor, the room, the workers and the shutdown handle.
struct Shared {
    handler: Box<dyn Handler>,
    limits: Limits,
    observer: Arc<dyn Observer>,
    stopping: AtomicBool,
    /// Answers close their connections (set at the start of a shutdown).
    draining: AtomicBool,
    /// Workers blocked on the channel and not yet reserved by the acceptor.
    idle: AtomicUsize,
    /// Worker places taken (a worker running, or about to start), at most the cap.
    workers: AtomicUsize,
    /// Connections on a worker between requests ([`BetweenRequests`]).
    between: Arc<AtomicUsize>,
    slots: Mutex<Vec<Arc<Slot>>>,
    /// Connections that have not completed a request yet, in the order they started on a
    /// worker (slot and connection number; entries go stale as connections get served or
    /// close): the first to displace, found without scanning every slot.
    fresh: Mutex<VecDeque<(Arc<Slot>, u64)>>,
    /// Connections that found every slot busy, and connections closing politely.
    room: Sender<Entry>,
    /// Open connections (on a worker or on their way to one), with a condvar for the drain.
    open: Mutex<usize>,
    drained: Condvar,
    /// Refusals at the cap not yet logged, and when the last warning went out.
    refusals: Mutex<(u64, Option<Instant>)>,
    /// While paced: who reads its next request when (see [`turns`]).
    turns: turns::Turns,
}

/// At most one warning about refusals at the connection cap per this interval: a flood must
/// not turn into a flood of log lines.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

impl Shared {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire) || self.stopping()
    }

    /// How full the server is, 0.0 to 1.0: workers holding a connection, over the cap.
    fn occupancy(&self) -> f64 {
        let busy = self.workers.load(Ordering::Acquire).saturating_sub(self.idle.load(Ordering::Acquire));
        (busy as f64 / self.limits.max_connections.max(1) as f64).min(1.0)
    }

    fn connection_opened(&self) {
        *self.open.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.observer.event(Event::ConnectionOpened);
    }

    fn connection_closed(&self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        *open -= 1;
        self.observer.event(Event::ConnectionClosed);
        if *open == 0 {
            self.drained.notify_all();
        }
    }

    /// Takes one worker place under the cap, atomically (the acceptor and the room both start
    /// workers).
    fn reserve_worker(&self) -> bool {
        let cap = self.limits.max_connections;
        self.workers.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < cap).then_some(n + 1)).is_ok()
    }

    /// A worker whose place is reserved is about to start: its slot is recorded before its
    /// thread runs (it may serve its connection and retire before the acceptor runs again).
    fn worker_started(&self, slot: &Arc<Slot>) {
        self.observer.event(Event::WorkerStarted);
        self.slots.lock().unwrap_or_else(PoisonError::into_inner).push(slot.clone());
    }

    /// A worker is gone (retired, or its thread could not start): its place is free.
    fn worker_gone(&self, slot: &Slot) {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner).retain(|s| !std::ptr::eq(&**s, slot));
        self.observer.event(Event::WorkerStopped);
        self.workers.fetch_sub(1, Ordering::AcqRel);
    }

    /// A connection started on `slot` as its connection number `conn`.
    fn note_fresh(&self, slot: &Arc<Slot>, conn: u64) {
        let mut fresh = self.fresh.lock().unwrap_or_else(PoisonError::into_inner);
        // Bounded: past it the oldest entries go (mostly stale; a live one is still found by
        // the scan in `displace_one`).
        while fresh.len() >= 2 * self.limits.max_connections.max(1) {
            fresh.pop_front();
        }
        fresh.push_back((slot.clone(), conn));
    }

    /// Displaces the oldest connection that has not completed a request, if it has waited
    /// [`MIN_DISPLACE_AGE`].
    fn displace_fresh(&self) -> Fresh {
        let mut fresh = self.fresh.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((slot, conn)) = fresh.front() {
            match slot.displace_if_fresh(*conn) {
                Fresh::Displaced => {
                    fresh.pop_front();
                    return Fresh::Displaced;
                }
                Fresh::Young => return Fresh::Young,
                Fresh::None => {
                    fresh.pop_front();
                }
            }
        }
        Fresh::None
    }

    /// Closes a connection doing nothing so that its worker takes the next connection from
    /// the channel: the oldest that has not completed a request (silent, or trickling its
    /// first head: what floods and slowloris hold); only when no such connection holds a
    /// slot, the served keep-alive connection idle the longest (see [`Slot::displace_rank`]).
    /// False when every slot holds a request being handled, or only connections too young.
    fn displace_one(&self) -> bool {
        match self.displace_fresh() {
            Fresh::Displaced => {
                self.observer.event(Event::Displaced);
                return true;
            }
            // Served clients keep their connections while fresh ones come and go: the new
            // connection waits in the room for a fresh one to come of age.
            Fresh::Young => return false,
            Fresh::None => {}
        }
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        // A candidate may start its handler between the scan and the displacement: look again.
        for _ in 0..DISPLACE_TRIES {
            let oldest = slots.iter().filter_map(|s| s.displace_rank().map(|r| (r, s))).min_by_key(|(r, _)| *r);
            match oldest {
                Some((_, slot)) if slot.displace() => {
                    self.observer.event(Event::Displaced);
                    return true;
                }
                Some(_) => {}
                None => return false,
            }
        }
        false
    }
}

impl Shared {
    /// Answers `err` (an answer that closes its connection) in one non-blocking write and ends
    /// the writes: the last word to a connection the server lets go of, which must not hold a
    /// thread on a peer that does not read. Returns the answer, for the metrics.
    /// Counts a connection refused at the cap (503, or closed unanswered) and warns, at most
    /// once per [`REFUSAL_LOG_EVERY`], with how many were refused since the last warning.
    fn refused(&self) {
        self.observer.event(Event::Refused);
        let mut r = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        r.0 += 1;
        if r.1.is_none_or(|last| last.elapsed() >= REFUSAL_LOG_EVERY) {
            log::warn!(
                "connection cap of {} reached: {} connection(s) refused since the last warning; \
                 every worker is busy with a request",
                self.limits.max_connections,
                r.0
            );
            *r = (0, Some(Instant::now()));
        }
    }

    fn last_answer(&self, stream: &TcpStream, err: &Error, route: &'static str) -> Response {
        let (resp, out) = self.last_words(err, route);
        if stream.set_nonblocking(true).is_ok() {
            let _ = (&*stream).write(&out);
        }
        let _ = stream.shutdown(Shutdown::Write);
        resp
    }

    /// The answer to `err` before a close, decorated, and its wire form.
    fn last_words(&self, err: &Error, route: &'static str) -> (Response, Vec<u8>) {
        let mut resp = self.handler.on_error(err).route(route);
        self.handler.decorate(None, &mut resp);
        let mut out = Vec::with_capacity(256);
        resp.write_to(&mut out, false, false, false);
        (resp, out)
    }

    /// Whether every worker's connection has a request in progress (none is waiting, receiving
    /// or changing hands): only then is a waiting request refused.
    fn every_slot_busy(&self) -> bool {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.len() >= self.limits.max_connections && slots.iter().all(|s| s.lock().phase == Phase::Busy)
    }
}

/// A connection is not displaced before it has waited for (or received) its request this
/// long: a new connection gets the time to send its request, and a keep-alive connection
/// the time to send its next one, instead of being closed as its request arrives (a fresh
/// connection closed that way is a transport error for the client, not a retry).
const MIN_DISPLACE_AGE: Duration = Duration::from_millis(100);

/// Scans of the slots for a connection to displace before a new connection goes to the room.
const DISPLACE_TRIES: usize = 3;

/// What [`Slot::displace_if_fresh`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fresh {
    Displaced,
    /// A fresh connection, younger than [`MIN_DISPLACE_AGE`].
    Young,
    /// Not (or no longer) a fresh connection.
    None,
}

/// What a worker's connection is doing, as the acceptor sees it when choosing whom to displace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No connection: the worker waits on the channel.
    Free,
    /// Waiting since `since` for a request's first byte: a new connection (`served` false), or
    /// a keep-alive connection between requests.
    Waiting { since: Instant, served: bool },
    /// Receiving a request (head or body) whose first byte arrived at `since`; `served`: an
    /// earlier request of this connection was answered.
    Receiving { since: Instant, served: bool },
    /// Its request is being handled or answered (a deferred reply still pending included):
    /// never displaced.
    Busy,
    /// Displaced (read side shut down): the worker ends the connection and takes the next one
    /// from the channel without re-entering the idle count.
    Displaced,
}

struct SlotState {
    phase: Phase,
    /// The server's count of connections between requests ([`BetweenRequests`]), kept by
    /// [`SlotState::enter`].
    between: Arc<AtomicUsize>,
    /// Number of the connection on this slot (counts up with each).
    conn: u64,
    /// The connection's socket while it has one (shutdown and displacement wake its reads).
    fd: Option<RawFd>,
}

/// A worker's record of its connection, read by displacement and by shutdown.
struct Slot {
    state: Mutex<SlotState>,
}

impl Default for Slot {
    fn default() -> Self {
        Slot::counted(Arc::default())
    }
}

impl Phase {
    /// Between requests: waiting for one or receiving one (it may join work soon).
    fn between(self) -> bool {
        matches!(self, Phase::Waiting { .. } | Phase::Receiving { .. })
    }
}

impl SlotState {
    /// Every phase change goes through here, so the server's count stays exact.
    fn enter(&mut self, phase: Phase) {
        match (self.phase.between(), phase.between()) {
            (false, true) => {
                self.between.fetch_add(1, Ordering::AcqRel);
            }
            (true, false) => {
                self.between.fetch_sub(1, Ordering::AcqRel);
            }
            _ => {}
        }
        self.phase = phase;
    }
}

impl Slot {
    /// A free slot whose connections are counted in `between` while between requests.
    fn counted(between: Arc<AtomicUsize>) -> Slot {
        Slot { state: Mutex::new(SlotState { phase: Phase::Free, between, conn: 0, fd: None }) }
    }

    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection starts on this worker; `request_since`: part of a request has arrived.
    /// Returns the connection's number.
    /// `fd`: the socket, for displacement to shut down (none: it cannot be displaced).
    fn open(&self, fd: Option<RawFd>, request_since: Option<Instant>) -> u64 {
        let mut st = self.lock();
        st.enter(match request_since {
            Some(since) => Phase::Receiving { since, served: false },
            None => Phase::Waiting { since: Instant::now(), served: false },
        });
        st.fd = fd;
        st.conn += 1;
        st.conn
    }

    /// The connection waits for its next request. False when the server is stopping or the
    /// connection was displaced (close instead of waiting).
    fn wait(&self, shared: &Shared) -> bool {
        let mut st = self.lock();
        // Checked under the lock: shutdown sets the flag, then visits every slot under its lock.
        if shared.stopping() || st.phase == Phase::Displaced {
            return false;
        }
        let served = !matches!(st.phase, Phase::Waiting { served: false, .. });
        st.enter(Phase::Waiting { since: Instant::now(), served });
        true
    }

    /// A request's first byte arrived at `since`. False when displaced.
    fn receiving(&self, since: Instant) -> bool {
        let mut st = self.lock();
        let served = match st.phase {
            Phase::Displaced => return false,
            Phase::Waiting { served, .. } | Phase::Receiving { served, .. } => served,
            _ => true,
        };
        st.enter(Phase::Receiving { since, served });
        true
    }

    /// The request is complete and goes to the handler. False when displaced.
    fn busy(&self) -> bool {
        self.set(Phase::Busy)
    }

    fn set(&self, phase: Phase) -> bool {
        let mut st = self.lock();
        if st.phase == Phase::Displaced {
            return false;
        }
        st.enter(phase);
        true
    }

    /// A reply written by a responder ([`defer`]): connection number `conn`, if still here and
    /// busy with it, waits for its next request.
    fn served(&self, conn: u64) {
        let mut st = self.lock();
        if st.conn == conn && st.phase == Phase::Busy {
            st.enter(Phase::Waiting { since: Instant::now(), served: true });
        }
    }

    fn is_displaced(&self) -> bool {
        self.lock().phase == Phase::Displaced
    }

    /// The connection's stream is about to be dropped: its fd is forgotten first.
    fn release(&self) {
        self.lock().fd = None;
    }

    /// The worker is done with its connection. Returns whether it had been displaced, i.e. a
    /// connection is on its way to this worker.
    fn close(&self) -> bool {
        let mut st = self.lock();
        let displaced = st.phase == Phase::Displaced;
        st.enter(Phase::Free);
        st.fd = None;
        displaced
    }

    /// Whether the connection may be displaced (it has waited for or received its request for
    /// at least [`MIN_DISPLACE_AGE`]), and its rank: the lowest goes first. Connections that
    /// have never completed a request (silent, or trickling their first head: what an
    /// attacker holds) go before keep-alive connections of clients that have been served;
    /// within each kind, the one that has done nothing the longest.
    fn displace_rank(&self) -> Option<(bool, Instant)> {
        match self.lock().phase {
            Phase::Waiting { since, served } if since.elapsed() >= MIN_DISPLACE_AGE => Some((served, since)),
            Phase::Receiving { since, served } if since.elapsed() >= MIN_DISPLACE_AGE => Some((served, since)),
            _ => None,
        }
    }

    /// Displaces the connection if it still is waiting or receiving, and wakes its worker.
    fn displace(&self) -> bool {
        let mut st = self.lock();
        if !matches!(st.phase, Phase::Waiting { .. } | Phase::Receiving { .. }) {
            return false;
        }
        mark_displaced(&mut st);
        true
    }

    /// Displaces connection number `conn` if it is still on this slot, has not completed a
    /// request, and has waited long enough.
    fn displace_if_fresh(&self, conn: u64) -> Fresh {
        let mut st = self.lock();
        let since = match st.phase {
            _ if st.conn != conn => return Fresh::None,
            Phase::Waiting { since, served: false } | Phase::Receiving { since, served: false } => since,
            _ => return Fresh::None,
        };
        if since.elapsed() < MIN_DISPLACE_AGE {
            return Fresh::Young;
        }
        mark_displaced(&mut st);
        Fresh::Displaced
    }

    /// Wakes a connection waiting for a request with EOF (shutdown closes idle connections).
    fn close_if_waiting(&self) {
        let st = self.lock();
        if let (Phase::Waiting { .. }, Some(fd)) = (st.phase, st.fd) {
            shutdown_read(fd);
        }
    }
}

/// Marks the slot's connection displaced and wakes its worker's read (under the slot's lock).
fn mark_displaced(st: &mut SlotState) {
    st.enter(Phase::Displaced);
    if let Some(fd) = st.fd {
        shutdown_read(fd);
    }
}

/// Ends the reads of socket `fd`: a blocked `read` returns 0 at once.
fn shutdown_read(fd: RawFd) {
    // SAFETY: callers hold the slot's lock, and the fd stays open while it is recorded in the
    // slot: the worker clears the record under that lock before it can drop the stream.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let _ = SockRef::from(&borrowed).shutdown(Shutdown::Read);
}

/// Places connections on workers; the acceptor and the room each hold one.
#[derive(Clone)]
struct Dispatcher {
    shared: Arc<Shared>,
    tx: Sender<Incoming>,
    rx: Receiver<Incoming>,
}

impl Dispatcher {
    /// Hands `incoming` to an idle worker, or a new one under the cap, or the worker of a
    /// displaced connection. Gives it back when every slot holds a request in progress.
    /// `fds_short`: descriptors ran out, so a connection doing nothing is displaced even below
    /// the cap (a new worker would not free the descriptor the next accept needs).
    fn place(&self, incoming: Incoming, fds_short: bool) -> Result<(), Incoming> {
        let shared = &self.shared;
        let idle = shared.idle.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok();
        let displaced = !idle && fds_short && shared.displace_one();
        if !idle && !displaced && shared.reserve_worker() {
            shared.connection_opened();
            return spawn_worker(shared.clone(), self.rx.clone(), incoming).map_err(|(e, incoming)| {
                shared.connection_closed();
                log::warn!("cannot start a worker thread: {e}");
                incoming
            });
        }
        if !idle && !displaced && !shared.displace_one() {
            return Err(incoming);
        }
        self.hand_over(incoming);
        Ok(())
    }

    /// Sends `incoming` to the worker reserved for it (idle, or displaced).
    fn hand_over(&self, incoming: Incoming) {
        self.shared.connection_opened();
        // The channel outlives every worker; a send can only fail if all receivers are gone.
        if self.tx.send(incoming).is_err() {
            self.shared.connection_closed();
        }
    }
}

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
    room: Receiver<Entry>,
}

/// Paces the server while its CPU is throttled: workers whose deferred replies were written
/// read their next requests in turns, a few at a time, instead of all being woken by their
/// sockets (see the `turns` module). Off by default; only deferred replies are affected.
#[derive(Clone)]
pub struct Pacer {
    shared: Arc<Shared>,
}

impl Pacer {
    pub fn set(&self, on: bool) {
        self.shared.turns.set_paced(on);
    }
}

/// Woken workers, at most, waiting for the CPU while paced. Measured under chaos #1 (1 024
/// connections, 250m, two 15 s runs each): 2 or 4 turns, 5.3–5.9k GETs/s (a quota left partly
/// unused between wake-ups); 8 or 16, 6.0–6.9k with a 200 p99 of 270–320 ms; 32 or 64, no
/// more GETs and a p99 of 360–380 ms, near the deadline.
const TURNS: usize = 8;

/// The connections on a worker that are between requests: waiting for the next one, or
/// receiving it. Those are the requests that may arrive soon; a connection whose request is
/// being handled or answered (a deferred answer included) is not counted. Read with one atomic
/// load: cheap enough for every request.
#[derive(Clone)]
pub struct BetweenRequests(Arc<AtomicUsize>);

impl BetweenRequests {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
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
        observer: Arc<dyn Observer>,
    ) -> std::io::Result<Server> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        // Inherited by every accepted connection.
        socket.set_send_buffer_size(SEND_BUFFER)?;
        socket.bind(&addr.into())?;
        socket.listen(LISTEN_BACKLOG)?;
        let (room_tx, room_rx) = crossbeam_channel::bounded(room::CAPACITY);
        let shared = Arc::new(Shared {
            room: room_tx,
            handler: Box::new(handler),
            limits,
            observer,
            stopping: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            idle: AtomicUsize::new(0),
            workers: AtomicUsize::new(0),
            between: Arc::default(),
            slots: Mutex::new(Vec::new()),
            fresh: Mutex::new(VecDeque::new()),
            open: Mutex::new(0),
            drained: Condvar::new(),
            refusals: Mutex::new((0, None)),
            turns: turns::Turns::new(TURNS),
        });
        Ok(Server { listener: socket.into(), shared, room: room_rx })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Starts the acceptor and room threads and returns at once.
    pub fn start(self) -> std::io::Result<ServerHandle> {
        let local_addr = self.listener.local_addr()?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let dispatcher = Dispatcher { shared: self.shared.clone(), tx, rx };
        let in_room = dispatcher.clone();
        let room = self.room;
        thread::Builder::new().name("http-room".into()).spawn(move || room::run(&in_room, &room))?;
        let listener = self.listener;
        let acceptor =
            thread::Builder::new().name("http-acceptor".into()).spawn(move || accept_loop(listener, &dispatcher))?;
        Ok(ServerHandle { shared: self.shared, local_addr, acceptor: Some(acceptor) })
    }
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Switches pacing on and off from any thread (see [`Pacer`]).
    pub fn pacer(&self) -> Pacer {
        Pacer { shared: self.shared.clone() }
    }

    /// Counts the connections between requests, from any thread.
    pub fn between_requests(&self) -> BetweenRequests {
        BetweenRequests(self.shared.between.clone())
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
            slot.close_if_waiting();
        }
        let mut open = self.shared.open.lock().unwrap_or_else(PoisonError::into_inner);
        while *open > 0 {
            let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else { break };
            open = self.shared.drained.wait_timeout(open, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        *open
    }
}

fn accept_loop(listener: TcpListener, dispatcher: &Dispatcher) {
    let shared = &dispatcher.shared;
    let mut last_warn: Option<Instant> = None;
    // A descriptor held in reserve: on EMFILE it is released to accept one connection, so
    // clients get an answer (or a clean close) instead of hanging in the backlog.
    let mut spare = std::fs::File::open("/dev/null").ok();
    // When descriptors last ran out: the room must not hold any while they are short.
    let mut out_of_fds_at: Option<Instant> = None;
    // Workers displaced to free a descriptor, each waiting for the next accepted connection.
    let mut displaced_ahead = 0usize;
    loop {
        let accepted = listener.accept();
        if shared.stopping() {
            return;
        }
        let fds_short = out_of_fds_at.is_some_and(|t| t.elapsed() < FDS_SHORT_FOR);
        match accepted {
            Ok((stream, _)) if displaced_ahead > 0 => {
                displaced_ahead -= 1;
                dispatcher.hand_over(Incoming::new(stream));
            }
            Ok((stream, _)) => dispatch(stream, dispatcher, fds_short),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                shared.observer.event(Event::AcceptError);
                if last_warn.is_none_or(|t| t.elapsed() >= ACCEPT_WARN_EVERY) {
                    log::warn!("accept() failed: {e}; still accepting");
                    last_warn = Some(Instant::now());
                }
                let out_of_fds = matches!(e.raw_os_error(), Some(code) if code == 24 || code == 23);
                if out_of_fds {
                    out_of_fds_at = Some(Instant::now());
                }
                if out_of_fds && spare.is_none() {
                    // Descriptors may have come back since the spare was last used.
                    spare = std::fs::File::open("/dev/null").ok();
                }
                if out_of_fds && spare.take().is_some() {
                    if let Ok((stream, _)) = listener.accept() {
                        dispatch(stream, dispatcher, true);
                    }
                    spare = std::fs::File::open("/dev/null").ok();
                } else if out_of_fds && displaced_ahead == 0 && shared.displace_one() {
                    // No spare left: a connection doing nothing gives its descriptor to the
                    // next one in the backlog.
                    displaced_ahead += 1;
                } else {
                    thread::sleep(ACCEPT_ERROR_PAUSE);
                }
            }
        }
    }
}

/// Places a new connection on a worker, or sends it to the room (every slot busy). A full
/// room closes it unanswered: it has sent no request yet, so no answer may be written. So
/// does a shortage of descriptors (`fds_short`): held in the room, it would keep the
/// descriptor that the connections behind it in the backlog need to be accepted at all.
fn dispatch(stream: TcpStream, dispatcher: &Dispatcher, fds_short: bool) {
    if let Err(incoming) = dispatcher.place(Incoming::new(stream), fds_short) {
        let shared = &dispatcher.shared;
        if fds_short || shared.room.try_send(Entry::Waiting(incoming)).is_err() {
            shared.refused();
        }
    }
}

type SpawnError = (std::io::Error, Incoming);

/// Starts a worker on a reserved place, with `first` as its first connection.
fn spawn_worker(shared: Arc<Shared>, rx: Receiver<Incoming>, first: Incoming) -> Result<(), SpawnError> {
    // The connection is parked in a cell so it can be given back if the thread cannot start.
    let cell = Arc::new(Mutex::new(Some(first)));
    let cell2 = cell.clone();
    let slot = Arc::new(Slot::counted(shared.between.clone()));
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
                Some(incoming) => Err((e, incoming)),
                None => Ok(()),
            }
        }
    }
}

fn worker_loop(shared: &Arc<Shared>, slot: &Arc<Slot>, rx: &Receiver<Incoming>, first: Option<Incoming>) {
    let mut next = first;
    loop {
        let mut displaced = false;
        if let Some(incoming) = next.take() {
            // A panic outside the handler (a bug in this layer) must not kill the worker.
            if catch_unwind_silent(|| conn::serve(incoming, shared, slot)).is_err() {
                log::error!("connection task panicked; worker continues");
            }
            displaced = slot.close();
            shared.connection_closed();
        }
        if !displaced {
            if shared.stopping() {
                return;
            }
            shared.idle.fetch_add(1, Ordering::AcqRel);
        }
        // Displaced: the connection that displaced ours is in the channel, counted as ours to
        // take (by whichever waiting worker receives it first), so this one waits without
        // entering the idle count; the waiting workers still match the idle count plus the
        // connections on their way, which is all that keeps a connection from stranding.
        loop {
            match rx.recv_timeout(shared.limits.worker_retire) {
                Ok(incoming) => {
                    next = Some(incoming);
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

#[cfg(test)]
pub(crate) mod tests {
    use super::{Event, Limits, Observer};
    use std::sync::Mutex;
    use std::time::Duration;

    /// Small limits for a server the unit tests build (and mostly never start).
    pub(crate) fn limits() -> Limits {
        Limits {
            max_connections: 4,
            max_header_bytes: 4096,
            max_body_bytes: 1024,
            header_timeout: Duration::from_secs(1),
            body_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            deadline: Duration::from_millis(400),
            worker_stack: super::WORKER_STACK,
            worker_retire: Duration::from_secs(1),
        }
    }

    /// An observer that keeps every event, for the tests' counts.
    #[derive(Default)]
    pub(crate) struct Recorder(Mutex<Vec<Event>>);

    impl Observer for Recorder {
        fn event(&self, event: Event) {
            self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(event);
        }
    }

    impl Recorder {
        fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
            self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().filter(|e| f(e)).count()
        }

        /// Requests started and not finished.
        pub(crate) fn in_flight(&self) -> i64 {
            self.count(|e| *e == Event::RequestStarted) as i64 - self.count(|e| *e == Event::RequestFinished) as i64
        }

        /// Answers written under `route` with `status`.
        pub(crate) fn answered(&self, route: &str, status: u16) -> usize {
            self.count(|e| matches!(e, Event::Answered { route: r, status: s, .. } if *r == route && *s == status))
        }
    }
}
