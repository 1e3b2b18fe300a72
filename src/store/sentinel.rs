//! The sentinel: an idle connection to one replica process, and that process's `run_id` (asked
//! on this very connection). Redis closes it when the process ends and sends nothing unasked,
//! so one non-blocking peek tells whether a value just read came from the process the health
//! watch vouched for (a replica restarted in place may load an old dump).

use super::conn::Value;
use super::{ConnError, HEALTH_TIMEOUT, INFO_MAX_REPLY, Store};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Sentinel {
    socket: Arc<TcpStream>,
    run_id: String,
    /// When the sentinel was made: the origin of `seen_alive`.
    born: Instant,
    /// Nanoseconds after `born` of the latest moment it was seen alive (0: not yet).
    seen_alive: AtomicU64,
}

impl Sentinel {
    /// The replica process this sentinel is connected to.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Still connected to its process, with nothing unexpected received (one syscall).
    pub fn alive(&self) -> bool {
        let before = Instant::now();
        let mut byte = [0u8; 1];
        let alive = matches!(self.socket.peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        if alive {
            let nanos = u64::try_from(before.saturating_duration_since(self.born).as_nanos()).unwrap_or(u64::MAX);
            self.seen_alive.fetch_max(nanos.max(1), Ordering::AcqRel);
        }
        alive
    }

    /// Connected to its process at some moment after `at`: seen so already (the answers of one
    /// shared read, confirmed one after the other, cost one syscall between them), else
    /// [`Sentinel::alive`] now.
    pub fn alive_after(&self, at: Instant) -> bool {
        let seen = self.seen_alive.load(Ordering::Acquire);
        let seen_at = self.born.checked_add(Duration::from_nanos(seen));
        (seen != 0 && seen_at.is_some_and(|t| t >= at)) || self.alive()
    }
}

impl Store {
    /// A sentinel on the local replica: connects, authenticates and asks `INFO server`, within
    /// `timeout` (at most the health checks' own).
    pub fn replica_sentinel(&self, timeout: Duration) -> Result<Sentinel, ConnError> {
        let timeout = timeout.min(HEALTH_TIMEOUT);
        let m = &self.replica.manager;
        let mut conn = m.connect_within(timeout, true)?;
        let info = m.watched(&mut conn, Instant::now() + timeout, |c| c.query(&self.info_server, INFO_MAX_REPLY)).0?;
        let Value::Bulk(text) = info else {
            return Err(ConnError::Protocol("INFO server answered with something other than text"));
        };
        let run_id = String::from_utf8_lossy(&text)
            .lines()
            .find_map(|l| l.trim_end().strip_prefix("run_id:").map(str::to_owned))
            .filter(|id| !id.is_empty())
            .ok_or(ConnError::Protocol("INFO server has no run_id"))?;
        let socket = conn.socket().clone();
        socket.set_nonblocking(true).map_err(ConnError::Io)?;
        Ok(Sentinel { socket, run_id, born: Instant::now(), seen_alive: AtomicU64::new(0) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Seen alive after a read came back, a sentinel vouches for that read without another
    /// syscall, even once its process has gone; a read that came back later needs a fresh look,
    /// which sees it gone.
    #[test]
    fn a_look_after_a_read_vouches_for_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let socket = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (process, _) = listener.accept().unwrap();
        socket.set_nonblocking(true).unwrap();
        let s = Sentinel {
            socket: Arc::new(socket),
            run_id: "r".into(),
            born: Instant::now(),
            seen_alive: AtomicU64::new(0),
        };
        let read_at = Instant::now();
        assert!(s.alive_after(read_at), "a fresh look sees it alive");
        drop(process);
        std::thread::sleep(Duration::from_millis(50));
        assert!(s.alive_after(read_at), "seen alive after that read already");
        assert!(!s.alive_after(Instant::now()), "a later read needs a look of its own, and the process is gone");
        assert!(!s.alive());
    }
}
