//! Turns to read the next request while the server is paced: a worker whose deferred reply
//! was written waits, parked, for one of a few turns (arrival order) instead of blocking on its
//! socket, and gives its turn to the next one as soon as it runs.
//!
//! Why: under a CPU quota that throttles (a Kubernetes CPU limit), every thread runnable when
//! the quota runs out is switched in and out once per CFS period just to be held (Linux 6.18
//! holds each at its return to user space). With a thousand keep-alive connections whose
//! requests all arrived, a thousand workers are runnable, and those switches eat the quota
//! (docs/chaos.md, #1). Parked threads cost nothing: with turns, the requests wait in their
//! sockets and at most [`Turns`]'s few woken workers wait for the CPU. The application says when
//! to pace ([`Pacer`](super::Pacer)); unpaced, nothing here runs.

use super::defer::Deferred;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

pub(super) struct Turns {
    paced: AtomicBool,
    inner: Mutex<Inner>,
}

struct Inner {
    /// Turns not given to anyone.
    free: usize,
    /// Written replies whose workers wait for a turn, oldest first.
    queue: VecDeque<Arc<Deferred>>,
}

impl Turns {
    pub(super) fn new(turns: usize) -> Turns {
        Turns { paced: AtomicBool::new(false), inner: Mutex::new(Inner { free: turns.max(1), queue: VecDeque::new() }) }
    }

    pub(super) fn paced(&self) -> bool {
        self.paced.load(Ordering::Relaxed)
    }

    pub(super) fn set_paced(&self, on: bool) {
        self.paced.store(on, Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `d`'s reply is written and its worker may read the next request: at once if a turn is
    /// free, else after the workers queued before it.
    pub(super) fn ready(&self, d: Arc<Deferred>) {
        {
            let mut s = self.lock();
            if s.free == 0 {
                s.queue.push_back(d);
                return;
            }
            s.free -= 1;
        }
        if !d.grant() {
            self.release();
        }
    }

    /// A worker that had a turn runs: the turn goes to the longest waiting one (past any that
    /// left meanwhile), or back to the free ones.
    pub(super) fn release(&self) {
        loop {
            let next = {
                let mut s = self.lock();
                let next = s.queue.pop_front();
                if next.is_none() {
                    s.free += 1;
                }
                next
            };
            match next {
                Some(d) if !d.grant() => continue,
                _ => return,
            }
        }
    }

    /// `d`'s worker ends without its turn: out of the queue, or the turn it got given on; a
    /// turn offered later is passed on at once.
    pub(super) fn leave(&self, d: &Arc<Deferred>) {
        self.lock().queue.retain(|q| !Arc::ptr_eq(q, d));
        if d.leave_turn() {
            self.release();
        }
    }

    #[cfg(test)]
    pub(super) fn counts(&self) -> (usize, usize) {
        let s = self.lock();
        (s.free, s.queue.len())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Server, Shared, tests::Recorder};
    use super::*;

    struct Ok200;

    impl super::super::Handler for Ok200 {
        fn handle(&self, _: &crate::Request) -> crate::Response {
            crate::Response::new(200, "text/plain", Vec::new())
        }
    }

    fn shared() -> Arc<Shared> {
        let limits = super::super::tests::limits();
        let server = Server::bind("127.0.0.1:0".parse().expect("addr"), limits, Ok200, Arc::new(Recorder::default()))
            .expect("bind");
        server.shared.turns.set_paced(true);
        server.shared.clone()
    }

    /// Turns go in arrival order, at most as many at once as there are; a worker that leaves
    /// (queued, or holding a turn it never used, or before its reply was kept) loses no turn.
    #[test]
    fn in_arrival_order_and_never_lost() {
        let shared = shared();
        let turns = Turns::new(2);
        let d: Vec<_> = (0..5).map(|_| Deferred::for_tests(shared.clone())).collect();
        assert!(d.iter().all(|d| d.paced));
        for x in &d {
            turns.ready(x.clone());
        }
        let granted = |d: &[Arc<Deferred>]| d.iter().map(|x| x.granted()).collect::<Vec<_>>();
        assert_eq!(granted(&d), [true, true, false, false, false]);
        assert_eq!(turns.counts(), (0, 3));
        // A queued worker leaves: out of the queue.
        turns.leave(&d[3]);
        assert_eq!(turns.counts(), (0, 2));
        // The first runs: its turn goes to the oldest waiting.
        turns.release();
        assert_eq!(granted(&d), [true, true, true, false, false]);
        // The second leaves without running: its turn goes on, past the one that left.
        turns.leave(&d[1]);
        assert!(d[4].granted());
        assert_eq!(turns.counts(), (0, 0));
        turns.release();
        turns.release();
        assert_eq!(turns.counts(), (2, 0), "every turn back");
        // A reply kept after its worker left: the turn it is offered goes back at once.
        let gone = Deferred::for_tests(shared.clone());
        turns.leave(&gone);
        turns.ready(gone.clone());
        assert!(!gone.granted());
        assert_eq!(turns.counts(), (2, 0));
        // ... and so does one queued when its turn comes.
        let (a, b, c) =
            (Deferred::for_tests(shared.clone()), Deferred::for_tests(shared.clone()), Deferred::for_tests(shared));
        turns.ready(a.clone());
        turns.ready(b.clone());
        turns.ready(c.clone());
        assert!(!c.leave_turn() && !c.granted());
        turns.release();
        assert_eq!(turns.counts(), (1, 0), "c's turn came back");
    }

    /// Unpaced, a reply deferred keeps the old way (its worker is woken by its socket).
    #[test]
    fn unpaced_replies_take_no_turn() {
        let shared = shared();
        shared.turns.set_paced(false);
        assert!(!Deferred::for_tests(shared).paced);
    }
}
