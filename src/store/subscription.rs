//! Memory mode's subscription: one connection of our own to the local replica, `SUBSCRIBE`d to
//! the change notices, then read for push messages with a timeout. Ours rather than redis-rs's
//! so the replica's TLS and credentials apply to it as to every other connection.

use super::conn::{Conn, Value};
use super::{ConnError, HEALTH_TIMEOUT, SMALL_REPLY, Store};
use std::time::{Duration, Instant};

/// A live subscription; dropping it closes the connection.
pub struct Subscription {
    conn: Conn,
    /// Largest message accepted: the value's own limit plus room for the channel's name.
    limit: usize,
}

impl Subscription {
    /// Waits up to `wait` for the next message: `Ok(true)` a notice arrived, `Ok(false)` none
    /// within `wait`; `Err` the subscription is broken (closed, reset, unexpected bytes).
    pub fn next(&mut self, wait: Duration) -> Result<bool, ConnError> {
        if !self.conn.has_buffered() {
            self.conn.set_read_timeout(wait.max(Duration::from_millis(1)))?;
            match self.conn.wait_readable() {
                Err(ConnError::Timeout) => return Ok(false),
                other => other?,
            }
            // A stop and continue of the process ended the wait with nothing read: no message
            // has begun, so waiting for one with the message's bound would break a live
            // subscription.
            if !self.conn.has_buffered() {
                return Ok(false);
            }
        }
        // A message has begun: the rest follows at once, so the usual bound applies to it.
        self.conn.set_read_timeout(HEALTH_TIMEOUT)?;
        match self.conn.read(self.limit)? {
            Value::Array(items) if items.first() == Some(&Value::Bulk(b"message".to_vec())) => Ok(true),
            Value::Error(text) => Err(ConnError::Reply(text)),
            // Anything else a subscribed connection may be sent (a PING's pong) is not a notice.
            _ => Ok(false),
        }
    }
}

impl Store {
    /// Subscribes to [`Store::channel`] on the local replica: connect (TLS, AUTH as for every
    /// connection) and `SUBSCRIBE`, within the health checks' timeout.
    pub fn subscribe(&self) -> Result<Subscription, ConnError> {
        let m = &self.replica.manager;
        let mut conn = m.connect_within(HEALTH_TIMEOUT, true)?;
        let subscribe = redis::cmd("SUBSCRIBE").arg(&self.channel).get_packed_command();
        let at = Instant::now() + HEALTH_TIMEOUT;
        match m.watched(&mut conn, at, |c| c.query(&subscribe, SMALL_REPLY)).0? {
            Value::Array(items) if items.first() == Some(&Value::Bulk(b"subscribe".to_vec())) => {}
            _ => return Err(ConnError::Protocol("SUBSCRIBE answered with something other than its confirmation")),
        }
        Ok(Subscription { conn, limit: self.max_reply.saturating_add(SMALL_REPLY) })
    }
}
