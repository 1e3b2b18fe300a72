//! The deadline watchdog: ends a Redis step at its request's deadline whatever its socket
//! sees, by `shutdown(Both)` of the step's socket from one timer thread; the blocked read or
//! write then returns at once and the step fails as a timeout.
//!
//! Socket timeouts cannot do this: they bound each `read()`, so a reply trickled a byte at a
//! time, or a large reply that keeps arriving, outlives the deadline by as much as it likes.
//!
//! Cost on the request path: a registration is one uncontended lock, one insertion into an
//! ordered map of the steps in flight and, when the step ends, one removal. The thread is only
//! woken when a registration is due earlier than the time it sleeps until, which under load
//! (deadlines arrive in order) is almost never.

use std::collections::BTreeMap;
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The socket is shut down this much before the deadline, so the answer (a 504) is written by
/// the deadline rather than just after it.
const LEAD: Duration = Duration::from_millis(1);

/// What the timer thread is doing, as seen by registrations.
#[derive(Clone, Copy)]
enum Sleep {
    /// Nothing registered: it waits until woken.
    Idle,
    /// It wakes at this instant on its own.
    Until(Instant),
}

struct State {
    /// Steps in flight by when they are due: (fire at, id) → the step's socket.
    due: BTreeMap<(Instant, u64), Arc<TcpStream>>,
    next_id: u64,
    sleep: Sleep,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Handle to the timer thread; clones share it. The thread stops when [`Watchdog::stop`] is
/// called (the store does so when dropped).
#[derive(Clone)]
pub struct Watchdog {
    shared: Arc<Shared>,
}

/// One watched step; dropping it (or [`Watch::finish`]) ends the watch.
pub struct Watch<'a> {
    shared: &'a Shared,
    key: Option<(Instant, u64)>,
    at: Instant,
}

impl Watchdog {
    /// Starts the timer thread.
    pub fn start() -> std::io::Result<Watchdog> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State { due: BTreeMap::new(), next_id: 0, sleep: Sleep::Idle, stop: false }),
            wake: Condvar::new(),
        });
        let thread_shared = shared.clone();
        std::thread::Builder::new().name("redis-watchdog".into()).spawn(move || run(&thread_shared))?;
        Ok(Watchdog { shared })
    }

    /// Watches a step on `socket` that must end by `at`.
    pub fn watch(&self, at: Instant, socket: &Arc<TcpStream>) -> Watch<'_> {
        let fire = at.checked_sub(LEAD).unwrap_or(at);
        let mut s = self.shared.lock();
        let key = (fire, s.next_id);
        s.next_id += 1;
        s.due.insert(key, socket.clone());
        let wake = match s.sleep {
            Sleep::Idle => true,
            Sleep::Until(t) => fire < t,
        };
        drop(s);
        if wake {
            self.shared.wake.notify_one();
        }
        Watch { shared: &self.shared, key: Some(key), at }
    }

    /// Ends the timer thread.
    pub fn stop(&self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
    }
}

impl Watch<'_> {
    /// Ends the watch: `Some(lateness)` if the watchdog cut the step (its socket is shut down),
    /// with how long after the deadline the step ended (zero if before it).
    pub fn finish(mut self) -> Option<Duration> {
        let cut = self.remove();
        cut.then(|| Instant::now().saturating_duration_since(self.at))
    }

    /// Whether the watchdog had already cut the step.
    fn remove(&mut self) -> bool {
        match self.key.take() {
            Some(key) => self.shared.lock().due.remove(&key).is_none(),
            None => false,
        }
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The timer thread: shuts down every socket whose time has come, then sleeps until the next.
fn run(shared: &Shared) {
    let mut s = shared.lock();
    loop {
        if s.stop {
            return;
        }
        let now = Instant::now();
        while let Some(entry) = s.due.first_entry() {
            if entry.key().0 > now {
                break;
            }
            // An error means the socket is already closed or shut: the step is over anyway.
            let _ = entry.remove().shutdown(Shutdown::Both);
        }
        s = match s.due.keys().next().map(|k| k.0) {
            Some(t) => {
                s.sleep = Sleep::Until(t);
                shared.wake.wait_timeout(s, t - now).unwrap_or_else(PoisonError::into_inner).0
            }
            None => {
                s.sleep = Sleep::Idle;
                shared.wake.wait(s).unwrap_or_else(PoisonError::into_inner)
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    /// A read blocked on a silent socket returns at the deadline; a step that ends in time is
    /// not cut.
    #[test]
    fn cuts_a_blocked_read_at_the_deadline() {
        let dog = Watchdog::start().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = Arc::new(TcpStream::connect(listener.local_addr().unwrap()).unwrap());
        let (_server, _) = listener.accept().unwrap();
        let quick = dog.watch(Instant::now() + Duration::from_secs(5), &client);
        assert_eq!(quick.finish(), None);
        let start = Instant::now();
        let watch = dog.watch(start + Duration::from_millis(50), &client);
        let mut byte = [0u8; 1];
        assert_eq!((&*client).read(&mut byte).unwrap(), 0, "shut down: end of stream");
        let took = start.elapsed();
        assert!(watch.finish().is_some());
        assert!(took >= Duration::from_millis(45) && took < Duration::from_millis(150), "{took:?}");
        dog.stop();
    }
}
