//! Coalesced reads: while one read of the value is in flight, callers that arrive wait for the
//! *next* read, which one of them sends for all. Every caller's result therefore comes from a
//! read sent after the caller arrived (the freshness of one read per caller), while the source
//! sees one read per round trip instead of one per caller. With nothing in flight a caller
//! reads at once, itself: under light load nothing changes.
//!
//! Waiting and waking are per thread (`park`), never a shared condition variable: waking a
//! batch through one mutex makes every woken thread queue on that mutex again, a convoy that
//! grows with the batch. A finished batch is woken as a tree, in arrival order (the oldest
//! waiter has the least budget left): the reader wakes two members and each woken member two
//! more, so no thread pays for waking the whole batch. A member whose budget runs out leaves
//! (it is skipped); the next read's sender is the oldest member still waiting.
//!
//! A caller that can be answered later ([`Coalescer::defer`]) joins the pending batch without
//! waiting at all: it leaves a completion that the batch's sender runs with the result, and its
//! thread goes on with other work (no park, no wake). A pending batch that holds such members is
//! sent by the reader thread ([`Coalescer::serve_deferred`]), woken once per batch and going on
//! while batches keep coming; a batch of parked members only is still sent by its oldest member.
//!
//! Under load the reader may gather a batch before it sends its read ([`Gather`]): each read
//! costs the source a wake-up whatever the batch's size, so after a batch of several deferred
//! members, the next read waits (within a short window from the one before) while more callers
//! may still join, and goes as soon as none can. A closed-loop client's connections then all
//! share each read; an idle keep-alive connection costs the batch at most the window.

use crate::deadline::Deadline;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How many members each woken member wakes.
const FAN_OUT: usize = 2;

// A member's state.
const WAITING: u8 = 0;
/// Woken because its batch's result is there (or the batch was abandoned).
const WOKEN: u8 = 1;
/// Left: its budget ran out.
const GONE: u8 = 2;
/// Chosen to send the read for its (pending) batch.
const LEAD: u8 = 3;

struct Member {
    thread: Thread,
    state: AtomicU8,
}

impl Member {
    fn claim(&self, to: u8) -> bool {
        self.state.compare_exchange(WAITING, to, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }
}

/// The callers one read serves.
struct Batch<T> {
    result: OnceLock<T>,
    /// Set when the read's sender panicked: the members go back to the queue.
    abandoned: AtomicBool,
    /// Fixed when the read is sent: exactly the callers that arrived before it.
    members: OnceLock<Vec<Arc<Member>>>,
    next_to_wake: AtomicUsize,
}

impl<T> Batch<T> {
    fn new() -> Batch<T> {
        Batch {
            result: OnceLock::new(),
            abandoned: AtomicBool::new(false),
            members: OnceLock::new(),
            next_to_wake: AtomicUsize::new(0),
        }
    }

    /// Wakes up to [`FAN_OUT`] members still waiting, oldest first.
    fn wake_some(&self) {
        let Some(members) = self.members.get() else { return };
        let mut woken = 0;
        while woken < FAN_OUT {
            let i = self.next_to_wake.fetch_add(1, Ordering::Relaxed);
            let Some(m) = members.get(i) else { return };
            if m.claim(WOKEN) {
                m.thread.unpark();
                woken += 1;
            }
        }
    }
}

/// How the reader gathers a batch before sending its read (see the module doc).
pub struct Gather {
    /// The longest a read waits, counted from the send of the read before.
    pub window: Duration,
    /// Gathers only after a batch with at least this many deferred members: the load at which
    /// waiting pays. Smaller batches are followed at once, as without gathering.
    pub after: usize,
    /// Whether a caller may still join soon. Called under the coalescer's lock, by each deferral
    /// while the reader gathers: keep it to an atomic load.
    pub more_coming: Box<dyn Fn() -> bool + Send + Sync>,
}

/// What a deferred member does with its batch's result (it answers its request).
pub type Done<T> = Box<dyn FnOnce(T) + Send>;

/// A member answered later: its completion, and its budget (the reader's read runs under the
/// latest budget of its batch).
struct Later<T> {
    deadline: Deadline,
    done: Done<T>,
}

/// A batch waiting for its read, with its members so far: parked, and answered later.
struct Pending<T> {
    batch: Arc<Batch<T>>,
    members: Vec<Arc<Member>>,
    later: Vec<Later<T>>,
}

impl<T> Pending<T> {
    fn new() -> Pending<T> {
        Pending { batch: Arc::new(Batch::new()), members: Vec::new(), later: Vec::new() }
    }
}

struct State<T> {
    /// A read is in flight, or a member chosen to send the next one is waking up, or the
    /// reader is about to send it.
    busy: bool,
    /// The batch the next read will serve, and its members so far. `None` while not busy.
    pending: Option<Pending<T>>,
    /// The reader sends the pending batch next.
    reader_turn: bool,
    /// The reader is gathering the pending batch: a deferral after which no more callers may
    /// come wakes it.
    gathering: bool,
}

/// Shares reads among concurrent callers (see the module doc).
pub struct Coalescer<T> {
    state: Mutex<State<T>>,
    /// The thread that sends batches with deferred members; none: no caller is deferred.
    reader: OnceLock<Thread>,
    /// Gathering before the reader's reads; none: each read goes at once.
    gather: OnceLock<Gather>,
    /// Gathering is switched on (while the CPU is what bounds the rate).
    gather_on: AtomicBool,
}

/// One attempt's end.
enum Step<T> {
    Done(T, bool),
    Spent,
    Again,
}

impl<T: Clone> Default for Coalescer<T> {
    fn default() -> Self {
        Coalescer {
            state: Mutex::new(State { busy: false, pending: None, reader_turn: false, gathering: false }),
            reader: OnceLock::new(),
            gather: OnceLock::new(),
            gather_on: AtomicBool::new(false),
        }
    }
}

impl<T: Clone> Coalescer<T> {
    /// The result of a `read` sent after this call began: this caller's own, or one another
    /// caller sent for it too. `read` runs under the sender's deadline. `None`: the budget ran
    /// out while waiting. The flag says whether this caller sent the read.
    pub fn read(&self, deadline: &Deadline, read: impl Fn(&Deadline) -> T) -> Option<(T, bool)> {
        loop {
            match self.attempt(deadline, &read) {
                Step::Done(v, led) => return Some((v, led)),
                Step::Spent => return None,
                Step::Again => {}
            }
        }
    }

    /// Whether a read is in flight (a caller now would wait for the next one).
    pub fn busy(&self) -> bool {
        self.lock().busy
    }

    /// Sets the thread that runs [`Self::serve_deferred`] when woken (once; deferral is refused
    /// before).
    pub fn set_reader(&self, reader: Thread) {
        let _ = self.reader.set(reader);
    }

    /// Makes the reader gather its batches (once; see [`Gather`]).
    pub fn set_gather(&self, gather: Gather) {
        let _ = self.gather.set(gather);
    }

    /// Switches gathering on or off, from any thread (off until switched on).
    pub fn gather_on(&self, on: bool) {
        self.gather_on.store(on, Ordering::Relaxed);
    }

    /// Joins the batch pending behind the read in flight without waiting: `make` (run under
    /// the coalescer's lock, only then) gives the completion, which gets the result of a read
    /// sent after this call, on the thread that sends it. False, and `make` not run, when no
    /// read is in flight (the caller reads itself, at once) or there is no reader thread; false
    /// too when `make` declines.
    pub fn defer(&self, deadline: Deadline, make: impl FnOnce() -> Option<Done<T>>) -> bool {
        if self.reader.get().is_none() {
            return false;
        }
        let mut state = self.lock();
        if !state.busy {
            return false;
        }
        let Some(done) = make() else { return false };
        state.pending.get_or_insert_with(Pending::new).later.push(Later { deadline, done });
        self.joined(&mut state);
        true
    }

    /// Sends the reads of the pending batches given to the reader, one after another while
    /// finished reads hand the next batch over to it, and runs their deferred completions.
    /// Run by the reader thread each time it is woken.
    pub fn serve_deferred(&self, read: impl Fn(&Deadline) -> T) {
        // When the reader's last read was sent, and for how many deferred members.
        let mut last: Option<(Instant, usize)> = None;
        loop {
            let mut state = self.lock();
            if !state.reader_turn {
                return;
            }
            if let (Some(gather), Some((sent, size))) = (self.gather.get(), last)
                && size >= gather.after
                && self.gather_on.load(Ordering::Relaxed)
            {
                state = self.gathered(state, gather, sent);
            }
            state.reader_turn = false;
            // Only the reader replaces a pending batch given to it (no member is chosen
            // meanwhile), and it holds deferred members.
            // The latest budget of the batch: its members that arrived last are served, and those
            // whose budget ends first are answered at their deadlines by their own workers.
            let latest =
                state.pending.as_ref().and_then(|p| p.later.iter().map(|l| l.deadline).max_by_key(|d| d.remaining()));
            let (Some(deadline), Some(Pending { batch, members, later })) =
                (latest, latest.and_then(|_| state.pending.take()))
            else {
                log::error!("coalesced read: the reader was given no batch with deferred members");
                self.hand_over(&mut state);
                return;
            };
            drop(state);
            last = Some((Instant::now(), later.len()));
            let v = self.lead(batch, members, &deadline, &read);
            complete(later, &v);
        }
    }

    /// Waits while more callers may join the pending batch, until the window after the read
    /// sent at `sent` ends. The batch stays the reader's meanwhile: nobody else sends it.
    fn gathered<'a>(
        &'a self,
        mut state: MutexGuard<'a, State<T>>,
        gather: &Gather,
        sent: Instant,
    ) -> MutexGuard<'a, State<T>> {
        while let Some(left) = gather.window.checked_sub(sent.elapsed())
            && !left.is_zero()
            && (gather.more_coming)()
        {
            state.gathering = true;
            drop(state);
            // Woken early by the deferral after which none may come (or by a stale unpark:
            // the loop checks again).
            thread::park_timeout(left);
            state = self.lock();
        }
        state.gathering = false;
        state
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn attempt(&self, deadline: &Deadline, read: &impl Fn(&Deadline) -> T) -> Step<T> {
        let mut state = self.lock();
        if !state.busy {
            state.busy = true;
            drop(state);
            return Step::Done(self.lead(Arc::new(Batch::new()), Vec::new(), deadline, read), true);
        }
        let me = Arc::new(Member { thread: thread::current(), state: AtomicU8::new(WAITING) });
        let pending = state.pending.get_or_insert_with(Pending::new);
        pending.members.push(me.clone());
        let batch = pending.batch.clone();
        self.joined(&mut state);
        drop(state);
        self.wait(&batch, &me, deadline, read)
    }

    /// A caller joined the pending batch: while the reader gathers it, the last caller that
    /// may come wakes it.
    fn joined(&self, state: &mut State<T>) {
        if state.gathering
            && let Some(gather) = self.gather.get()
            && !(gather.more_coming)()
            && let Some(reader) = self.reader.get()
        {
            state.gathering = false;
            reader.unpark();
        }
    }

    fn wait(&self, batch: &Arc<Batch<T>>, me: &Member, deadline: &Deadline, read: &impl Fn(&Deadline) -> T) -> Step<T> {
        loop {
            // Whoever sees the batch done wakes the next members: a member counted as woken
            // always does, so the tree never stops short. One that saw it on its own first
            // marks itself gone, so no wake is spent on it.
            if let Some(v) = batch.result.get() {
                me.claim(GONE);
                batch.wake_some();
                return Step::Done(v.clone(), false);
            }
            if batch.abandoned.load(Ordering::Acquire) {
                me.claim(GONE);
                batch.wake_some();
                return Step::Again;
            }
            if me.state.load(Ordering::Acquire) == LEAD {
                let mut state = self.lock();
                if deadline.expired() {
                    // Too late to send it: the next oldest member does.
                    me.state.store(GONE, Ordering::Release);
                    self.hand_over(&mut state);
                    return Step::Spent;
                }
                // Only the member chosen from the pending batch is LEAD, and the pending batch
                // is replaced only by its chosen sender: this one.
                let (members, later) = match state.pending.take() {
                    Some(p) if Arc::ptr_eq(&p.batch, batch) => (p.members, p.later),
                    other => {
                        state.pending = other;
                        log::error!("coalesced read: a chosen sender found another batch pending");
                        me.state.store(WAITING, Ordering::Release);
                        continue;
                    }
                };
                drop(state);
                // Deferred members that joined since this member was chosen are answered after
                // its read (the reader is only given batches that hold such members at a hand-over).
                let v = self.lead(batch.clone(), members, deadline, read);
                complete(later, &v);
                return Step::Done(v, true);
            }
            match deadline.remaining() {
                Some(left) => thread::park_timeout(left),
                // Woken or chosen meanwhile: the loop takes it from there.
                None if !me.claim(GONE) => {}
                None => return Step::Spent,
            }
        }
    }

    /// Sends the read for `batch`, whose members are fixed from now on, and hands over.
    fn lead(
        &self,
        batch: Arc<Batch<T>>,
        members: Vec<Arc<Member>>,
        deadline: &Deadline,
        read: &impl Fn(&Deadline) -> T,
    ) -> T {
        let _ = batch.members.set(members);
        let finish = Finish { coalescer: self, batch: &batch };
        let v = read(deadline);
        let _ = batch.result.set(v.clone());
        drop(finish);
        v
    }

    /// After a read: a pending batch with deferred members goes to the reader; else the oldest
    /// member still waiting for the next read is chosen to send it; with none, the coalescer is
    /// idle.
    fn hand_over(&self, state: &mut State<T>) {
        if let Some(p) = &state.pending
            && !p.later.is_empty()
            && let Some(reader) = self.reader.get()
        {
            state.busy = true;
            state.reader_turn = true;
            // Free when the reader is running (it finds its turn before it parks again).
            reader.unpark();
            return;
        }
        if let Some(p) = &state.pending
            && let Some(next) = p.members.iter().find(|m| m.claim(LEAD))
        {
            next.thread.unpark();
            state.busy = true;
            return;
        }
        state.pending = None;
        state.busy = false;
    }
}

/// Runs the deferred members' completions with their batch's result; one that panics costs its
/// own answer only (its responder, dropped, answers 500).
fn complete<T: Clone>(later: Vec<Later<T>>, v: &T) {
    for l in later {
        let done = l.done;
        let v = v.clone();
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || done(v))).is_err() {
            log::error!("a deferred read's completion panicked");
        }
    }
}

/// Ends a read whatever happens in it (a panic included): hands over and wakes the batch.
struct Finish<'a, T: Clone> {
    coalescer: &'a Coalescer<T>,
    batch: &'a Batch<T>,
}

impl<T: Clone> Drop for Finish<'_, T> {
    fn drop(&mut self) {
        if self.batch.result.get().is_none() {
            self.batch.abandoned.store(true, Ordering::Release);
        }
        self.coalescer.hand_over(&mut self.coalescer.lock());
        self.batch.wake_some();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::time::{Duration, Instant};

    fn deadline(ms: u64) -> Deadline {
        Deadline::new(Instant::now(), Duration::from_millis(ms))
    }

    /// Alone, a caller reads itself, at once, every time.
    #[test]
    fn alone_every_call_reads() {
        let c = Coalescer::default();
        let reads = AtomicU64::new(0);
        for i in 0..5 {
            let (v, led) = c.read(&deadline(100), |_| reads.fetch_add(1, Ordering::SeqCst) + 1).expect("read");
            assert_eq!((v, led), (i + 1, true));
        }
    }

    /// Many concurrent callers share reads, and every caller's result comes from a read that
    /// started after the caller arrived.
    #[test]
    fn concurrent_callers_share_fresh_reads() {
        let c = Arc::new(Coalescer::default());
        let epoch = Instant::now();
        let reads = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (c, reads) = (c.clone(), reads.clone());
                thread::spawn(move || {
                    let mut calls = 0;
                    for _ in 0..200 {
                        let arrived = epoch.elapsed();
                        let (started, _) = c
                            .read(&deadline(5_000), |_| {
                                reads.fetch_add(1, Ordering::SeqCst);
                                let started = epoch.elapsed();
                                thread::sleep(Duration::from_micros(300));
                                started
                            })
                            .expect("within budget");
                        assert!(started >= arrived, "served by a read sent before the caller arrived");
                        calls += 1;
                    }
                    calls
                })
            })
            .collect();
        let calls: u64 = threads.into_iter().map(|t| t.join().expect("no panic")).sum();
        let reads = reads.load(Ordering::SeqCst);
        assert_eq!(calls, 16 * 200);
        assert!(reads * 2 < calls, "{reads} reads for {calls} calls: nothing was shared");
    }

    /// A caller whose budget runs out while a slow read is in flight gets `None` at its
    /// deadline, and the coalescer keeps working afterwards.
    #[test]
    fn a_waiter_leaves_at_its_deadline() {
        let c = Arc::new(Coalescer::default());
        let slow = {
            let c = c.clone();
            thread::spawn(move || c.read(&deadline(5_000), |_| thread::sleep(Duration::from_millis(300))))
        };
        thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        assert!(c.read(&deadline(50), |_| ()).is_none());
        assert!(t.elapsed() < Duration::from_millis(250), "left after {:?}", t.elapsed());
        assert!(slow.join().expect("no panic").is_some());
        assert_eq!(c.read(&deadline(100), |_| ()), Some(((), true)));
    }

    /// A sender that panics does not strand its batch: the waiters read again.
    #[test]
    fn a_panicking_read_strands_nobody() {
        let c = Arc::new(Coalescer::default());
        let panicking = {
            let c = c.clone();
            thread::spawn(move || {
                c.read(&deadline(5_000), |_| {
                    thread::sleep(Duration::from_millis(100));
                    panic!("read failed")
                })
            })
        };
        thread::sleep(Duration::from_millis(20));
        let waiter = {
            let c = c.clone();
            thread::spawn(move || c.read(&deadline(5_000), |_| 7))
        };
        assert!(panicking.join().is_err());
        assert_eq!(waiter.join().expect("no panic"), Some((7, true)));
    }

    /// A reader thread for `c`, serving until `stop` is set (woken by hand-overs; checks the
    /// flag every 10 ms).
    fn reader<T: Clone + Send + Sync + 'static>(
        c: &Arc<Coalescer<T>>,
        stop: &Arc<AtomicBool>,
        read: impl Fn(&Deadline) -> T + Send + 'static,
    ) -> thread::JoinHandle<()> {
        let (c, stop) = (c.clone(), stop.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                c.serve_deferred(&read);
                thread::park_timeout(Duration::from_millis(10));
            }
        })
    }

    /// How long each read takes in the gathering tests.
    const READ_MS: u64 = 400;

    /// A coalescer whose reader gathers (within a window, after batches of two) while `more`
    /// is set; its reads take [`READ_MS`] and return when they were sent (ms since `epoch`).
    struct Rig {
        c: Arc<Coalescer<u64>>,
        reads: Arc<AtomicU64>,
        more: Arc<AtomicBool>,
        epoch: Instant,
        stop: Arc<AtomicBool>,
        reader: thread::JoinHandle<()>,
    }

    impl Rig {
        fn new(window: Duration) -> Rig {
            let (epoch, c) = (Instant::now(), Arc::new(Coalescer::default()));
            let (reads, more, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(true)), Arc::default());
            let reader = {
                let reads = reads.clone();
                reader(&c, &stop, move |_| {
                    reads.fetch_add(1, Ordering::SeqCst);
                    let sent = epoch.elapsed().as_millis() as u64;
                    thread::sleep(Duration::from_millis(READ_MS));
                    sent
                })
            };
            c.set_reader(reader.thread().clone());
            let m = more.clone();
            c.set_gather(Gather { window, after: 2, more_coming: Box::new(move || m.load(Ordering::SeqCst)) });
            c.gather_on(true);
            Rig { c, reads, more, epoch, stop, reader }
        }

        /// Milliseconds since the rig started (the clock of the reads' results).
        fn now(&self) -> u64 {
            self.epoch.elapsed().as_millis() as u64
        }

        fn end(self) {
            self.stop.store(true, Ordering::Release);
            self.reader.join().expect("no panic");
        }
    }

    /// Defers one caller on `c`; its result arrives on the returned channel.
    fn join(c: &Coalescer<u64>) -> std::sync::mpsc::Receiver<u64> {
        let (tx, rx) = std::sync::mpsc::channel();
        assert!(c.defer(deadline(10_000), || Some(Box::new(move |v| tx.send(v).expect("send")))), "deferred");
        rx
    }

    /// From now: a caller's own read (0-400 ms); two callers deferred at 50 ms, whose read the
    /// reader sends when that one ends (400-800 ms); `then` at 600 ms, while it is in flight
    /// (200 ms from either end: a busy machine may wake the test late).
    /// Returns when the two's read was sent, and what `then` gave.
    fn two_then<R>(c: &Arc<Coalescer<u64>>, then: impl FnOnce() -> R) -> (u64, R) {
        let own = {
            let c = c.clone();
            thread::spawn(move || {
                c.read(&deadline(10_000), |_| {
                    thread::sleep(Duration::from_millis(READ_MS));
                    0
                })
            })
        };
        thread::sleep(Duration::from_millis(50));
        let two = [join(c), join(c)];
        thread::sleep(Duration::from_millis(550));
        let then = then();
        let sent = two[0].recv_timeout(Duration::from_secs(5)).expect("answered");
        assert_eq!(two[1].recv_timeout(Duration::from_secs(5)).expect("answered"), sent, "one read for both");
        assert!(own.join().expect("no panic").is_some());
        (sent, then)
    }

    /// Gathering: after a batch of two, the reader's next read waits while more callers may
    /// come, so callers that join after the read before it ended share it; it goes as soon as
    /// none may come (long before the window's end), and every result is still fresh.
    #[test]
    fn gathering_waits_while_more_may_come() {
        let rig = Rig::new(Duration::from_secs(10));
        let c = &rig.c;
        let (sent, second) = two_then(c, || join(c));
        // The two's read has ended: the reader gathers the next batch.
        thread::sleep(Duration::from_millis(100));
        let late = rig.now();
        let third = [join(c), join(c)];
        rig.more.store(false, Ordering::SeqCst);
        let woken = Instant::now();
        // Nobody more may come after this one: it wakes the reader.
        let last = join(c);
        let all: Vec<u64> = [&second, &third[0], &third[1], &last]
            .iter()
            .map(|rx| rx.recv_timeout(Duration::from_secs(5)).expect("answered"))
            .collect();
        assert!(woken.elapsed() < Duration::from_secs(5), "it waited for the window's end");
        assert!(all.iter().all(|&s| s == all[0]), "one read for all four: {all:?}");
        assert!(all[0] >= late && all[0] > sent, "read at {} ms, before callers joined at {late} ms", all[0]);
        assert_eq!(rig.reads.load(Ordering::SeqCst), 2, "the reader's two reads");
        rig.end();
    }

    /// Gathering ends at the window even while more callers may come; switched off, the
    /// reader's next read goes at once.
    #[test]
    fn gathering_is_bounded_and_switchable() {
        let rig = Rig::new(Duration::from_secs(1));
        let c = &rig.c;
        let (sent, next) = two_then(c, || join(c));
        let next = next.recv_timeout(Duration::from_secs(5)).expect("answered");
        // Whole milliseconds, read a few µs after the reader's own clock: up to 1 ms short.
        assert!(next >= sent + 999, "sent {} ms after the read before, within the 1 s window", next - sent);
        c.gather_on(false);
        let (sent, next) = two_then(c, || join(c));
        let next = next.recv_timeout(Duration::from_secs(5)).expect("answered");
        assert!(next < sent + 1000, "gathered while switched off: sent {} ms after the read before", next - sent);
        rig.end();
    }

    /// With nothing in flight a caller is not deferred (it reads itself), and its completion
    /// is not even made.
    #[test]
    fn defer_needs_a_read_in_flight() {
        let c = Arc::new(Coalescer::<u64>::default());
        let stop = Arc::new(AtomicBool::new(false));
        let r = reader(&c, &stop, |_| 1);
        c.set_reader(r.thread().clone());
        assert!(!c.defer(deadline(100), || panic!("made without a read in flight")));
        stop.store(true, Ordering::Release);
        r.join().expect("no panic");
    }

    /// Callers deferred behind reads in flight (mixed with callers that wait) are all
    /// answered, without waiting, from reads sent after they arrived; reads are shared.
    #[test]
    fn deferred_callers_get_fresh_shared_reads() {
        let c = Arc::new(Coalescer::default());
        let epoch = Instant::now();
        let reads = Arc::new(AtomicU64::new(0));
        let read = {
            let reads = reads.clone();
            move |_: &Deadline| {
                reads.fetch_add(1, Ordering::SeqCst);
                let started = epoch.elapsed();
                thread::sleep(Duration::from_micros(300));
                started
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let r = reader(&c, &stop, read.clone());
        c.set_reader(r.thread().clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (c, tx, read) = (c.clone(), tx.clone(), read.clone());
                thread::spawn(move || {
                    let mut deferred = 0;
                    for _ in 0..200 {
                        let arrived = epoch.elapsed();
                        let tx2 = tx.clone();
                        let later = c.defer(deadline(5_000), || {
                            Some(Box::new(move |started| tx2.send((arrived, started)).expect("send")))
                        });
                        if later {
                            deferred += 1;
                        } else {
                            let (started, _) = c.read(&deadline(5_000), &read).expect("within budget");
                            tx.send((arrived, started)).expect("send");
                        }
                    }
                    deferred
                })
            })
            .collect();
        drop(tx);
        let deferred: u64 = threads.into_iter().map(|t| t.join().expect("no panic")).sum();
        let mut answers = 0;
        while let Ok((arrived, started)) = rx.recv_timeout(Duration::from_secs(5)) {
            assert!(started >= arrived, "answered from a read sent before the caller arrived");
            answers += 1;
        }
        stop.store(true, Ordering::Release);
        r.join().expect("no panic");
        assert_eq!(answers, 8 * 200, "every caller answered once");
        assert!(deferred > 0, "no caller was deferred");
        let reads = reads.load(Ordering::SeqCst);
        assert!(reads * 2 < answers, "{reads} reads for {answers} calls: nothing was shared");
    }
}
