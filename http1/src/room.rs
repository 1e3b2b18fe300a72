//! The waiting room: connections that arrived while every slot held a request in progress,
//! and connections being closed politely. A waiting connection goes to the first slot that
//! frees up; if its request arrives first, it is answered 503 (the only answer the server
//! gives without a worker); if neither happens in time, it is closed unanswered. Nothing is
//! ever written to a connection before it has sent a request: Go's net/http reports such bytes
//! as "Unsolicited response received on idle HTTP channel", a transport error, not a status.

use super::{Dispatcher, Incoming};
use crate::Error;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::collections::VecDeque;
use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Connections the room holds at most (waiting and closing); past it a new connection that
/// finds every slot busy is closed unanswered.
pub(super) const CAPACITY: usize = 1024;
/// How often the room looks at its connections while it holds few of them.
const TICK: Duration = Duration::from_millis(10);
/// ... and while it holds many (each look costs a read per connection).
const SLOW_TICK: Duration = Duration::from_millis(50);
/// How often an empty room checks whether the server is stopping.
const IDLE_TICK: Duration = Duration::from_secs(1);
/// Connections held above which the room looks at them less often.
const MANY: usize = 64;
/// How long a connection being closed is drained before it is closed.
const LINGER: Duration = Duration::from_millis(250);

pub(super) enum Entry {
    /// A new connection that found every slot busy.
    Waiting(Incoming),
    /// A connection to close politely: what the peer still sends is drained first, so the
    /// close does not reset the connection and destroy the last answer at the client.
    Closing(TcpStream),
}

struct Waiting {
    incoming: Incoming,
    since: Instant,
}

/// Runs the room until the server's channels close.
pub(super) fn run(dispatcher: &Dispatcher, rx: &Receiver<Entry>) {
    let mut waiting: VecDeque<Waiting> = VecDeque::new();
    let mut closing: Vec<(TcpStream, Instant)> = Vec::new();
    loop {
        let held = waiting.len() + closing.len();
        if held == 0 && dispatcher.shared.stopping() {
            return;
        }
        let tick = match held {
            0 => IDLE_TICK,
            n if n > MANY => SLOW_TICK,
            _ => TICK,
        };
        let next = rx.recv_timeout(tick);
        match next {
            Ok(entry) => admit(entry, &mut waiting, &mut closing),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        for entry in rx.try_iter() {
            admit(entry, &mut waiting, &mut closing);
        }
        look_at_waiting(dispatcher, &mut waiting, &mut closing);
        closing.retain_mut(|(stream, since)| drain(stream) && since.elapsed() < LINGER);
    }
}

fn admit(entry: Entry, waiting: &mut VecDeque<Waiting>, closing: &mut Vec<(TcpStream, Instant)>) {
    match entry {
        Entry::Waiting(incoming) => {
            if incoming.stream.set_nonblocking(true).is_ok() {
                waiting.push_back(Waiting { incoming, since: Instant::now() });
            }
        }
        Entry::Closing(stream) => {
            if stream.set_nonblocking(true).is_ok() {
                closing.push((stream, Instant::now()));
            }
        }
    }
}

/// Oldest first: hands connections to freed slots, answers 503 to those whose request has
/// arrived, closes those that waited too long or went away.
fn look_at_waiting(dispatcher: &Dispatcher, waiting: &mut VecDeque<Waiting>, closing: &mut Vec<(TcpStream, Instant)>) {
    let shared = &dispatcher.shared;
    let limits = &shared.limits;
    let mut slots_full = false;
    for _ in 0..waiting.len() {
        let Some(mut w) = waiting.pop_front() else { break };
        let (bytes, peer_done) = read_available(&mut w.incoming, limits.max_header_bytes + 1);
        if bytes > 0 && w.incoming.pending.len() == bytes {
            w.incoming.arrived = Instant::now();
        }
        let head_done = head_complete(&w.incoming.pending) || w.incoming.pending.len() > limits.max_header_bytes;
        if peer_done && !head_done {
            shared.refused();
            continue;
        }
        if !slots_full && w.incoming.stream.set_nonblocking(false).is_ok() {
            match dispatcher.place(w.incoming, false) {
                Ok(()) => continue,
                Err(incoming) => {
                    slots_full = true;
                    w.incoming = incoming;
                    if w.incoming.stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                }
            }
        }
        if head_done && (w.since.elapsed() >= limits.header_timeout || shared.every_slot_busy()) {
            refuse(&w.incoming.stream, dispatcher);
            closing.push((w.incoming.stream, Instant::now()));
        } else if !head_done && w.since.elapsed() >= limits.header_timeout {
            shared.refused();
        } else {
            waiting.push_back(w);
        }
    }
}

/// Reads what has arrived into `pending`, up to `max` bytes in all. Returns the bytes read
/// now and whether the peer has closed (or the connection failed).
fn read_available(incoming: &mut Incoming, max: usize) -> (usize, bool) {
    let mut got = 0;
    let mut chunk = [0u8; 4096];
    while incoming.pending.len() < max {
        let room = (max - incoming.pending.len()).min(chunk.len());
        match incoming.stream.read(&mut chunk[..room]) {
            Ok(0) => return (got, true),
            Ok(n) => {
                incoming.pending.extend_from_slice(&chunk[..n]);
                got += n;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

/// Whether `buf` holds a whole request head (its blank line).
fn head_complete(buf: &[u8]) -> bool {
    buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n")
}

/// Answers 503 + `Connection: close` to a request that found every slot busy.
fn refuse(stream: &TcpStream, dispatcher: &Dispatcher) {
    let shared = &dispatcher.shared;
    shared.refused();
    shared.last_answer(stream, &Error::Overloaded, "refused");
}

/// Reads and discards what the peer sends; false once it has closed (or failed).
fn drain(stream: &mut TcpStream) -> bool {
    let mut sink = [0u8; 4096];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return false,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A head is complete at its blank line, with CRLF or bare LF line ends.
    #[test]
    fn head_completion() {
        assert!(head_complete(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(head_complete(b"GET / HTTP/1.0\n\n"));
        assert!(!head_complete(b"GET / HTTP/1.1\r\nHost: a\r\n"));
        assert!(!head_complete(b""));
    }
}
