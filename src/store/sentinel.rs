//! The sentinel: an idle connection to one replica process, and that process's `run_id` (asked
//! on this very connection). Redis closes it when the process ends and sends nothing unasked,
//! so one non-blocking peek tells whether a value just read came from the process the health
//! watch vouched for (a replica restarted in place may load an old dump).

use super::conn::Value;
use super::{ConnError, HEALTH_TIMEOUT, INFO_MAX_REPLY, Store};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Sentinel {
    socket: Arc<TcpStream>,
    run_id: String,
}

impl Sentinel {
    /// The replica process this sentinel is connected to.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Still connected to its process, with nothing unexpected received (one syscall).
    pub fn alive(&self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.socket.peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
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
        Ok(Sentinel { socket, run_id })
    }
}
