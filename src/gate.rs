//! Admission to a Redis pool: at most `permits` requests use the pool at once, the others wait
//! in arrival order, and a request that cannot be served within what is left of its budget is
//! refused at once (a fast 503) instead of waiting to time out (a slow 504).
//!
//! Not r2d2's own wait, which lets a newly arrived thread take a connection just handed back
//! while the waiter it woke waits for a CPU (docs/design.md has what that did under overload).
//! Here, once the longest waiter has waited 2 ms (`STARVING`), a released permit goes straight
//! to it, so under overload a request's wait is its place in the queue divided by the rate
//! permits come back.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// What a refusal for overload asks of the client (`Retry-After`, whole seconds); a client
/// that comes back sooner on the same connection waits its turn instead ([`Admit::Wait`]).
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Weight of the newest hold time in the running mean: slow (~1 000 requests, a fraction of
/// a second under load), because a refusal is answered at once and its client's next request
/// comes at once: refusing on a passing stall (a CFS throttle, one slow reply) feeds itself.
const HOLD_WEIGHT: f64 = 1.0 / 1024.0;

/// How a request may be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Refused at once if the queue ahead would outlast its budget.
    OrRefuse,
    /// Waits its turn however long the queue. For a client refused moments ago (told
    /// `Retry-After`) that came straight back: a refusal is answered at once, so refusing it
    /// again and again would turn it into a busy loop that takes the CPU from the queue.
    Wait,
}

/// A client connection's record of its last refusal for overload: the application keeps one
/// per connection (the HTTP layer carries it as the connection's state), so a client that
/// comes back within [`RETRY_AFTER`] on the same connection waits its turn ([`Admit::Wait`]).
#[derive(Debug, Default)]
pub struct Admission {
    refused_at: Mutex<Option<Instant>>,
}

impl Admission {
    /// How this connection's next request may be admitted.
    pub fn admit(&self) -> Admit {
        match *self.refused_at.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(t) if t.elapsed() < RETRY_AFTER => Admit::Wait,
            _ => Admit::OrRefuse,
        }
    }

    /// A request of this connection was just refused for overload.
    pub fn refused(&self) {
        *self.refused_at.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue ahead would outlast the budget; nothing was waited for.
    Overloaded { expected_wait: Duration },
    /// The budget ran out while waiting.
    TimedOut,
}

/// A FIFO counting semaphore with a deadline-aware refusal.
pub struct Gate {
    state: Mutex<State>,
    permits: usize,
}

struct State {
    free: usize,
    waiting: VecDeque<Arc<Waiter>>,
    /// Running mean of how long a permit is held, in seconds (`None` until the first release).
    hold: Option<f64>,
}

struct Waiter {
    thread: Thread,
    granted: AtomicBool,
    since: Instant,
}

/// A waiter queued this long is handed the next permit released; before that a running
/// thread may take a permit the moment it comes back (what Go's `sync.Mutex` does, for the
/// same reason): handing every permit to a sleeping thread makes each request wait for a
/// wakeup with the permit unused, which cost the unthrottled benchmark about a quarter of its
/// GETs/s, while under CPU overload waits are long and the queue stays first come first served.
const STARVING: Duration = Duration::from_millis(2);

impl State {
    /// Whether the longest waiter has waited long enough to be handed the next permit.
    fn starving(&self) -> bool {
        self.waiting.front().is_some_and(|w| w.since.elapsed() >= STARVING)
    }
}

/// A permit; dropping it hands it to the next waiter.
pub struct Permit<'a> {
    gate: &'a Gate,
    since: Instant,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.gate.release(self.since.elapsed());
    }
}

impl Gate {
    pub fn new(permits: usize) -> Gate {
        let permits = permits.max(1);
        Gate { state: Mutex::new(State { free: permits, waiting: VecDeque::new(), hold: None }), permits }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A permit within `budget`: at once if one is free and no waiter is starving; after the
    /// waiters ahead otherwise; refused at once (with [`Admit::OrRefuse`]) if those waiters and
    /// this request's own use would take longer than `budget`.
    pub fn acquire(&self, budget: Duration, admit: Admit) -> Result<Permit<'_>, Refused> {
        let until = Instant::now() + budget;
        let me = {
            let mut s = self.lock();
            if s.free > 0 && !s.starving() {
                s.free -= 1;
                return Ok(Permit { gate: self, since: Instant::now() });
            }
            // Permits come back at `permits / hold` per second: this request is served after
            // the ones ahead of it, then holds a permit for about `hold` itself.
            let ahead = s.waiting.len() + 1;
            let hold = s.hold.unwrap_or(0.0);
            let expected = Duration::from_secs_f64(hold * (ahead as f64 / self.permits as f64 + 1.0));
            if expected >= budget && admit == Admit::OrRefuse {
                return Err(Refused::Overloaded { expected_wait: expected });
            }
            let me =
                Arc::new(Waiter { thread: thread::current(), granted: AtomicBool::new(false), since: Instant::now() });
            s.waiting.push_back(me.clone());
            me
        };
        loop {
            if me.granted.load(Ordering::Acquire) {
                return Ok(Permit { gate: self, since: Instant::now() });
            }
            let now = Instant::now();
            {
                let mut s = self.lock();
                // Granted between the check and the lock: the permit is ours.
                if me.granted.load(Ordering::Acquire) {
                    return Ok(Permit { gate: self, since: Instant::now() });
                }
                // Woken at the front with a permit free (nobody took it first): take it.
                if s.free > 0 && s.waiting.front().is_some_and(|w| Arc::ptr_eq(w, &me)) {
                    s.free -= 1;
                    s.waiting.pop_front();
                    return Ok(Permit { gate: self, since: Instant::now() });
                }
                if now >= until {
                    s.waiting.retain(|w| !Arc::ptr_eq(w, &me));
                    // A permit freed for this waiter goes to the next one instead.
                    if s.free > 0
                        && let Some(next) = s.waiting.front()
                    {
                        next.thread.unpark();
                    }
                    return Err(Refused::TimedOut);
                }
            }
            thread::park_timeout(until - now);
        }
    }

    /// The running mean of how long a permit is held, once one has been returned.
    pub fn mean_hold(&self) -> Option<Duration> {
        self.lock().hold.map(Duration::from_secs_f64)
    }

    fn release(&self, held: Duration) {
        let next = {
            let mut s = self.lock();
            let held = held.as_secs_f64();
            s.hold = Some(s.hold.map_or(held, |h| h + (held - h) * HOLD_WEIGHT));
            if s.starving() {
                s.waiting.pop_front().inspect(|w| w.granted.store(true, Ordering::Release))
            } else {
                // Free for whoever runs first: a thread arriving now, or the front waiter, woken.
                s.free += 1;
                s.waiting.front().cloned()
            }
        };
        if let Some(w) = next {
            w.thread.unpark();
        }
    }

    /// Requests waiting now.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    const LONG: Duration = Duration::from_secs(10);

    /// Waiters are served in arrival order, each by the permit the one before gave back.
    #[test]
    fn first_come_first_served() {
        let gate = Arc::new(Gate::new(1));
        let held = gate.acquire(LONG, Admit::OrRefuse).expect("free permit");
        let (tx, rx) = mpsc::channel();
        let mut threads = Vec::new();
        for i in 0..5 {
            let (g, tx) = (gate.clone(), tx.clone());
            threads.push(thread::spawn(move || {
                let _p = g.acquire(LONG, Admit::OrRefuse).expect("admitted");
                tx.send(i).expect("send");
            }));
            // Each thread queued before the next starts.
            while gate.waiting() < i + 1 {
                thread::yield_now();
            }
        }
        drop(held);
        drop(tx);
        let order: Vec<usize> = rx.iter().collect();
        assert_eq!(order, vec![0, 1, 2, 3, 4]);
        for t in threads {
            t.join().expect("join");
        }
        assert_eq!(gate.lock().free, 1);
    }

    /// With permits held for ~50 ms, a queue that would outlast an 80 ms budget is refused at
    /// once; with the permit free the same budget is served.
    #[test]
    fn refuses_what_cannot_make_its_budget() {
        let gate = Gate::new(1);
        std::mem::forget(gate.acquire(LONG, Admit::OrRefuse).expect("free"));
        gate.release(Duration::from_millis(48));
        let held = gate.acquire(LONG, Admit::OrRefuse).expect("free");
        let t = Instant::now();
        // The mean hold is ~48 ms by now: one ahead plus its own use is ~96 ms.
        match gate.acquire(Duration::from_millis(80), Admit::OrRefuse) {
            Err(Refused::Overloaded { expected_wait }) => assert!(expected_wait >= Duration::from_millis(80)),
            other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
        }
        assert!(t.elapsed() < Duration::from_millis(50), "refusal waited {:?}", t.elapsed());
        // A client refused a moment ago waits its turn instead (here: until its budget ends).
        assert_eq!(gate.acquire(Duration::from_millis(80), Admit::Wait).map(|_| ()), Err(Refused::TimedOut));
        drop(held);
        assert!(gate.acquire(Duration::from_millis(80), Admit::OrRefuse).is_ok());
    }

    /// A waiter whose budget runs out leaves the queue, and the permit goes to the next one.
    #[test]
    fn timed_out_waiter_leaves_the_queue() {
        let gate = Arc::new(Gate::new(1));
        let held = gate.acquire(LONG, Admit::OrRefuse).expect("free");
        let g = gate.clone();
        let t = thread::spawn(move || g.acquire(Duration::from_millis(30), Admit::OrRefuse).map(|_| ()));
        assert_eq!(t.join().expect("join"), Err(Refused::TimedOut));
        assert_eq!(gate.waiting(), 0);
        drop(held);
        assert_eq!(gate.lock().free, 1);
    }
}
