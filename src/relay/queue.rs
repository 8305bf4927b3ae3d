//! A cap on requests in flight per node, and a fair line for the requests that find every node
//! at its cap (HAProxy's per-server `maxconn` and backend queue).
//!
//! Why: the relay holds one node connection per request in flight, and a node serves each
//! connection with a thread. Under a thousand client connections that is a thousand relay
//! threads and a thousand node threads on the same cores; the scheduler then decides who waits,
//! and some requests wait far too long. With a cap, at most `cap` requests are at a node at
//! once; the others wait here, parked, in arrival order, and each slot a finished request frees
//! goes to the one that has waited longest. Node threads stay bounded and the tail follows the
//! queue, not the scheduler.
//!
//! How: a request asks for a slot at the node its balancer picked ([`Queue::try_take`], a
//! compare-and-swap on the node's in-flight count, so the cap is never passed). When every
//! node it may use is full, or others already wait, it joins the line ([`Ticket`]) and parks.
//! A freed slot ([`Slot`]'s drop) takes the longest-waiting request out of the line, gives it a
//! turn and wakes it; that request picks again, and if another took the slot first, goes back
//! to the front of the line. A request that waits longer than the queue's timeout gets a 503.
//!
//! Cost: with the line formed, every request parks once and is woken once, on top of the two
//! waits each request has anyway (for its client and for its node). So the hand-off does as
//! little as it can: the freed slot's thread holds the line's lock only to pop one entry, and
//! wakes the waiter after letting go of it; a request that got its turn leaves without the lock.
//!
//! Known limits, from three reviews of the hand-off: a slot freed just before the first waiter
//! is counted, and not taken by it, is found only when the next slot frees anywhere; and a
//! request that has given way once ([`Ticket::wait_giving_way`]) and then gets a turn for room
//! it still may not use goes back with that turn. Each ends at the next freed slot or at the
//! queue timeout. The thorough fix is the condition-variable order: join the line, then look
//! at the nodes again before parking, which would also make spares unnecessary.
//!
//! Pure mechanism: which nodes are full and what to do on a timeout are the caller's
//! (`forward.rs`).

use crate::balancer::InFlight;
use std::collections::VecDeque;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long a request waits in line before it is answered 503: the `timeout queue` HAProxy's
/// documentation suggests, long enough to ride out a burst, short enough that a client is told
/// rather than left hanging when the nodes are overwhelmed.
pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// Only keeps [`Line::spare`] from growing without end; far more than the free slots a relay's
/// nodes can have at once.
const SPARE_LIMIT: usize = 1 << 16;

/// The line of requests waiting for a slot, and the cap that makes them wait.
#[derive(Debug)]
pub struct Queue {
    cap: Option<u64>,
    timeout: Duration,
    line: Mutex<Line>,
    /// Requests waiting: in the line, or out of it with a turn they have not used yet. One
    /// counter for both, so that a request moving between the two (given a turn, or coming
    /// back after losing its slot) never looks, to a freed slot reading it without the lock,
    /// as if nobody waited. Raised with the line locked when a request starts waiting, lowered
    /// when it is admitted or gives up.
    waiting: AtomicUsize,
    /// Requests that had to wait, ever.
    waited: AtomicU64,
    /// Requests that waited [`Queue::timeout`] in vain.
    timeouts: AtomicU64,
}

#[derive(Debug, Default)]
struct Line {
    waiters: VecDeque<Arc<Waiter>>,
    /// Slots freed while the line was empty but turns were out: a turn's holder that lost its
    /// race comes back and tries again at once instead of waiting for a slot that is already
    /// free. Not bounded by the turns out: a holder may use the very slot its turn was for, and
    /// then each other freed slot still needs a spare of its own. A spare left over costs the
    /// next request one extra try.
    spare: usize,
}

#[derive(Debug)]
struct Waiter {
    thread: Thread,
    /// Given (with the line locked) when this waiter is taken out of the line.
    turn: AtomicBool,
    /// Whether this waiter is in [`Line::waiters`]; changed only with the line locked.
    queued: AtomicBool,
}

/// The figures of a queue, for status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    pub cap: Option<u64>,
    pub waiting: usize,
    pub waited: u64,
    pub timeouts: u64,
}

/// A request's place in line; leaving the line (on drop) passes a turn it held to the next.
#[must_use = "a ticket keeps its place only while it is alive"]
pub struct Ticket<'q> {
    queue: &'q Queue,
    /// Set once the request starts waiting (it is then counted in [`Queue::waiting`] until
    /// it is admitted or leaves).
    waiter: Option<Arc<Waiter>>,
    /// This request has a turn it is using: out of the line, still counted as waiting.
    holds_turn: bool,
    /// This request has once handed a turn on instead of going back with it
    /// ([`Ticket::wait_giving_way`]); it does so at most once, so that two requests that
    /// cannot use a free node never hand turns to each other back and forth.
    gave_way: bool,
}

/// A slot at a node: the request counts as in flight there until this is dropped, and then the
/// front of the line gets its turn.
#[must_use = "the slot is held only while the guard is alive"]
#[derive(Debug)]
pub struct Slot<'q> {
    in_flight: Option<InFlight>,
    queue: &'q Queue,
}

/// The wait ran out; the request was not sent anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

impl Queue {
    /// A queue for at most `cap` requests in flight per node (`None`: no cap, nobody waits).
    pub fn new(cap: Option<usize>, timeout: Duration) -> Queue {
        Queue {
            cap: cap.map(|c| c.max(1) as u64),
            timeout,
            line: Mutex::new(Line::default()),
            waiting: AtomicUsize::new(0),
            waited: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
        }
    }

    pub fn cap(&self) -> Option<u64> {
        self.cap
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether a node with `in_flight` requests has no room.
    pub fn is_full(&self, in_flight: u64) -> bool {
        self.cap.is_some_and(|cap| in_flight >= cap)
    }

    pub fn stats(&self) -> QueueStats {
        QueueStats {
            cap: self.cap,
            waiting: self.waiting.load(Ordering::SeqCst),
            waited: self.waited.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Line> {
        // The line is valid after any panic: entries are whole.
        self.line.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot at the node whose in-flight count is `counter`, if it is below the cap.
    pub fn try_take(&self, counter: &Arc<AtomicU64>) -> Option<Slot<'_>> {
        let in_flight = match self.cap {
            None => InFlight::enter(counter),
            Some(cap) => InFlight::enter_below(counter, cap)?,
        };
        Some(Slot {
            in_flight: Some(in_flight),
            queue: self,
        })
    }

    /// A ticket not yet in line.
    pub fn ticket(&self) -> Ticket<'_> {
        Ticket {
            queue: self,
            waiter: None,
            holds_turn: false,
            gave_way: false,
        }
    }

    /// Takes the longest-waiting request out of the line and gives it a turn; the caller wakes
    /// it once the lock is let go. Each freed slot so takes out a different waiter, so that
    /// slots freed together are taken in parallel rather than handed down the line one wake-up
    /// at a time. With nobody in line, every waiter holds a turn already: the slot is kept as
    /// a spare for one of them that comes back.
    fn next_turn(&self, line: &mut Line) -> Option<Arc<Waiter>> {
        match line.waiters.pop_front() {
            Some(next) => {
                // The turn before leaving the line: a waiter that sees itself out of the line
                // without the lock sees its turn too.
                next.turn.store(true, Ordering::SeqCst);
                next.queued.store(false, Ordering::SeqCst);
                Some(next)
            }
            None => {
                line.spare = (line.spare + 1).min(SPARE_LIMIT);
                None
            }
        }
    }

    /// Gives the next turn and wakes its holder, outside the lock.
    fn pass_turn(&self) {
        let next = self.next_turn(&mut self.lock());
        if let Some(next) = next {
            next.thread.unpark();
        }
    }
}

impl Ticket<'_> {
    /// Whether this request must queue before it picks: others are waiting and it is not the
    /// one whose turn it is. Without a cap, never.
    pub fn behind_others(&self) -> bool {
        self.queue.cap.is_some()
            && self.waiter.is_none()
            && self.queue.waiting.load(Ordering::SeqCst) > 0
    }

    /// Joins the line (if not in it yet; at its front if it comes back from a turn whose slot
    /// another request took) and parks until it is given a turn, or until `deadline`. A request
    /// that finds nobody waiting has its turn at once, and so does one that comes back while
    /// a spare slot is recorded, so that a slot freed just before it joined is not missed.
    pub fn wait(&mut self, deadline: Instant) -> Result<(), TimedOut> {
        self.wait_in_line(deadline, false)
    }

    /// Like [`Ticket::wait`], for a request that waits although some node has room, room it
    /// may not use (a node it already failed at): a turn it holds may be for that room, so it goes to the next waiter (or, with nobody in line, becomes a
    /// spare for the next to come) instead of back to the front with this request. Once per
    /// request.
    pub fn wait_giving_way(&mut self, deadline: Instant) -> Result<(), TimedOut> {
        self.wait_in_line(deadline, true)
    }

    fn wait_in_line(&mut self, deadline: Instant, give_way: bool) -> Result<(), TimedOut> {
        let queue = self.queue;
        let mut next = None;
        let waiter = match &self.waiter {
            Some(waiter) => Arc::clone(waiter),
            None => Arc::new(Waiter {
                thread: thread::current(),
                turn: AtomicBool::new(false),
                queued: AtomicBool::new(false),
            }),
        };
        // In line already, or given a turn not yet seen: only the wait below is left.
        if !waiter.queued.load(Ordering::SeqCst) && !waiter.turn.load(Ordering::SeqCst) {
            let mut line = queue.lock();
            let coming_back = self.waiter.is_some();
            let giving_way = coming_back && give_way && self.holds_turn && !self.gave_way;
            // Coming back, it is still counted as waiting: the count never dips meanwhile.
            self.holds_turn = false;
            let at_once = if coming_back && line.spare > 0 {
                // A slot came free unannounced meanwhile: try it before anything else.
                true
            } else if giving_way {
                self.gave_way = true;
                next = queue.next_turn(&mut line);
                false
            } else if coming_back {
                false
            } else {
                self.waiter = Some(Arc::clone(&waiter));
                queue.waited.fetch_add(1, Ordering::Relaxed);
                let others = queue.waiting.fetch_add(1, Ordering::SeqCst);
                if others == 0 {
                    // Nobody else waits, so no spare has anyone to serve: this request
                    // looks at every node itself (after the fence below).
                    line.spare = 0;
                    true
                } else {
                    line.spare > 0
                }
            };
            if at_once {
                line.spare = line.spare.saturating_sub(1);
                self.holds_turn = true;
                drop(line);
                // Pairs with the fence in `Slot::drop`: either that slot's owner sees this
                // request counted and hands on a turn, or this request sees the slot free.
                fence(Ordering::SeqCst);
                return Ok(());
            }
            if coming_back {
                line.waiters.push_front(Arc::clone(&waiter));
            } else {
                line.waiters.push_back(Arc::clone(&waiter));
            }
            waiter.queued.store(true, Ordering::SeqCst);
        }
        if let Some(next) = next {
            next.thread.unpark();
        }
        loop {
            if waiter.turn.swap(false, Ordering::SeqCst) {
                self.holds_turn = true;
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                queue.timeouts.fetch_add(1, Ordering::Relaxed);
                return Err(TimedOut);
            }
            thread::park_timeout(deadline - now);
        }
    }

    /// Stops waiting: out of the line if still in it, uncounted, and a turn it held or was
    /// given and never used passes to the next waiter.
    fn leave(&mut self) {
        let Some(waiter) = self.waiter.take() else {
            return;
        };
        let queue = self.queue;
        let held = std::mem::take(&mut self.holds_turn);
        let mut line = queue.lock();
        if waiter.queued.swap(false, Ordering::SeqCst) {
            line.waiters.retain(|w| !Arc::ptr_eq(w, &waiter));
        }
        let given = waiter.turn.swap(false, Ordering::SeqCst);
        queue.waiting.fetch_sub(1, Ordering::SeqCst);
        let next = if held || given {
            queue.next_turn(&mut line)
        } else {
            None
        };
        drop(line);
        if let Some(next) = next {
            next.thread.unpark();
        }
    }

    /// The request got its slot: it stops waiting (its turn was used), without the lock.
    pub fn admitted(mut self) {
        if self.holds_turn && self.waiter.is_some() {
            self.holds_turn = false;
            self.waiter = None;
            self.queue.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        self.leave();
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.leave();
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        drop(self.in_flight.take());
        // The freed slot is visible before the count is read, as a request that starts
        // waiting is counted before it tries for a slot (the fence in `Ticket::wait`).
        fence(Ordering::SeqCst);
        if self.queue.waiting.load(Ordering::SeqCst) > 0 {
            self.queue.pass_turn();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn counter() -> Arc<AtomicU64> {
        Arc::new(AtomicU64::new(0))
    }

    /// Waits (with a deadline) until `queue` has `n` waiters: an event, not a sleep.
    fn until_waiting(queue: &Queue, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while queue.stats().waiting != n {
            assert!(Instant::now() < deadline, "never {n} waiting");
            thread::yield_now();
        }
    }

    #[test]
    fn without_a_cap_every_take_succeeds_and_nobody_queues() {
        let queue = Queue::new(None, QUEUE_TIMEOUT);
        let node = counter();
        let slots: Vec<_> = (0..100)
            .map(|_| queue.try_take(&node).expect("slot"))
            .collect();
        assert_eq!(node.load(Ordering::SeqCst), 100);
        assert!(!queue.ticket().behind_others());
        assert!(!queue.is_full(1_000_000));
        drop(slots);
        assert_eq!(node.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn the_cap_is_never_passed_and_a_freed_slot_can_be_taken_again() {
        let queue = Queue::new(Some(2), QUEUE_TIMEOUT);
        let node = counter();
        let a = queue.try_take(&node).expect("first");
        let _b = queue.try_take(&node).expect("second");
        assert!(queue.try_take(&node).is_none(), "full at 2");
        assert!(queue.is_full(node.load(Ordering::SeqCst)));
        drop(a);
        assert!(queue.try_take(&node).is_some(), "room again");
    }

    #[test]
    fn a_waiter_times_out_and_is_counted_and_leaves_the_line() {
        let queue = Queue::new(Some(1), Duration::from_millis(20));
        let node = counter();
        let _held = queue.try_take(&node).expect("slot");
        let mut ticket = queue.ticket();
        // Alone in line: its first turn comes at once (a slot freed just before it joined
        // would otherwise be missed); the second wait finds no turn and runs out.
        assert_eq!(ticket.wait(Instant::now() + queue.timeout()), Ok(()));
        assert!(queue.try_take(&node).is_none());
        assert_eq!(ticket.wait(Instant::now() + queue.timeout()), Err(TimedOut));
        drop(ticket);
        let stats = queue.stats();
        assert_eq!((stats.waiting, stats.waited, stats.timeouts), (0, 1, 1));
    }

    #[test]
    fn freed_slots_go_to_waiters_in_the_order_they_came() {
        let queue = Queue::new(Some(1), Duration::from_secs(10));
        let node = counter();
        let held = queue.try_take(&node).expect("slot");
        let (done, order) = mpsc::channel();
        thread::scope(|scope| {
            for i in 0..4 {
                let (queue, node, done) = (&queue, &node, done.clone());
                scope.spawn(move || {
                    let mut ticket = queue.ticket();
                    let deadline = Instant::now() + queue.timeout();
                    let slot = loop {
                        ticket.wait(deadline).expect("a turn within the timeout");
                        if let Some(slot) = queue.try_take(node) {
                            break slot;
                        }
                    };
                    ticket.admitted();
                    done.send(i).expect("send");
                    drop(slot);
                });
                // The next waiter starts only once this one is in line.
                until_waiting(queue, i + 1);
            }
            drop(held);
        });
        let order: Vec<usize> = order.try_iter().collect();
        assert_eq!(order, [0, 1, 2, 3]);
        assert_eq!(queue.stats().waiting, 0);
        assert_eq!(queue.stats().waited, 4);
    }

    /// A deadline that has passed: `wait` then only looks, it never parks.
    fn now() -> Instant {
        Instant::now()
    }

    #[test]
    fn a_turn_whose_slot_was_taken_goes_back_to_the_front_of_the_line() {
        let queue = Queue::new(Some(1), QUEUE_TIMEOUT);
        let node = counter();
        let held = queue.try_take(&node).expect("slot");
        let mut first = queue.ticket();
        assert_eq!(first.wait(now()), Ok(()), "an empty line: a turn at once");
        let mut second = queue.ticket();
        assert_eq!(second.wait(now()), Err(TimedOut), "a turn is out: in line");
        // `first` lost its race for the slot: it goes back, ahead of `second`.
        assert_eq!(first.wait(now()), Err(TimedOut));
        assert_eq!(queue.stats().waiting, 2);
        drop(held);
        assert_eq!(second.wait(now()), Err(TimedOut), "not second's turn");
        assert_eq!(
            first.wait(now()),
            Ok(()),
            "the freed slot's turn is first's"
        );
        first.admitted();
        assert_eq!(queue.stats().waiting, 1);
    }

    #[test]
    fn a_turn_given_to_a_request_that_gave_up_passes_to_the_next() {
        let queue = Queue::new(Some(1), QUEUE_TIMEOUT);
        let node = counter();
        let held = queue.try_take(&node).expect("slot");
        let mut first = queue.ticket();
        assert_eq!(first.wait(now()), Ok(()));
        assert_eq!(
            first.wait(now()),
            Err(TimedOut),
            "back in line, at the front"
        );
        let mut second = queue.ticket();
        assert_eq!(second.wait(now()), Err(TimedOut));
        drop(held); // the turn goes to `first`, which leaves without seeing it
        drop(first);
        assert_eq!(second.wait(now()), Ok(()), "the unused turn passed on");
        second.admitted();
        assert_eq!(queue.stats().waiting, 0);
    }

    #[test]
    fn a_slot_freed_while_a_turn_is_out_is_not_missed() {
        let queue = Queue::new(Some(1), QUEUE_TIMEOUT);
        let node = counter();
        let held = queue.try_take(&node).expect("slot");
        let mut ticket = queue.ticket();
        assert_eq!(ticket.wait(now()), Ok(()));
        // The slot is freed while the turn's holder is out of the line (as if after its
        // failed try): nobody is in line to hand it to.
        drop(held);
        assert_eq!(
            ticket.wait(now()),
            Ok(()),
            "coming back, the holder tries again at once"
        );
        assert!(queue.try_take(&node).is_some());
    }

    #[test]
    fn slots_freed_at_two_nodes_while_two_turns_are_out_serve_both_holders() {
        // One line for all nodes: two turn holders whose slots were taken, at two nodes,
        // both try again at once when both slots come free.
        let queue = Queue::new(Some(1), QUEUE_TIMEOUT);
        let (a, b) = (counter(), counter());
        let held_a = queue.try_take(&a).expect("slot at a");
        let held_b = queue.try_take(&b).expect("slot at b");
        let mut first = queue.ticket();
        assert_eq!(first.wait(now()), Ok(()), "nobody waits: a turn at once");
        let mut second = queue.ticket();
        assert_eq!(second.wait(now()), Err(TimedOut), "a turn is out: in line");
        drop(held_a); // hands `second` its turn
        assert_eq!(second.wait(now()), Ok(()));
        // A newcomer takes a's slot before either holder tries; then both slots come free.
        let newcomer = queue.try_take(&a).expect("a is free");
        drop(newcomer);
        drop(held_b);
        assert_eq!(first.wait(now()), Ok(()), "a spare slot for the first");
        assert_eq!(second.wait(now()), Ok(()), "and one for the second");
        let (slot_a, slot_b) = (queue.try_take(&a), queue.try_take(&b));
        assert!(slot_a.is_some() && slot_b.is_some());
        first.admitted();
        second.admitted();
        assert_eq!(queue.stats().waiting, 0);
    }

    #[test]
    fn every_slot_freed_while_a_turn_is_being_used_is_kept_for_someone() {
        // Three nodes at cap 1. `holder` gets a turn at once and takes c's slot; while it is
        // still counted as waiting, a's and b's slots come free with nobody in line. Both
        // must be found by the next two requests, not one.
        let queue = Queue::new(Some(1), QUEUE_TIMEOUT);
        let (a, b, c) = (counter(), counter(), counter());
        let held_a = queue.try_take(&a).expect("a");
        let held_b = queue.try_take(&b).expect("b");
        let mut holder = queue.ticket();
        assert_eq!(holder.wait(now()), Ok(()));
        let _at_c = queue.try_take(&c).expect("c is free");
        drop(held_a);
        drop(held_b);
        let mut first = queue.ticket();
        assert!(first.behind_others());
        assert_eq!(first.wait(now()), Ok(()), "a spare for a's slot");
        holder.admitted();
        let mut second = queue.ticket();
        assert!(second.behind_others());
        assert_eq!(second.wait(now()), Ok(()), "and one for b's");
    }

    #[test]
    fn a_turn_for_room_the_holder_may_not_use_goes_to_the_next_request() {
        // Two nodes at cap 1: b is busy; a is free but `retrying` already failed there.
        let queue = Queue::new(Some(1), QUEUE_TIMEOUT);
        let (a, b) = (counter(), counter());
        let _busy_b = queue.try_take(&b).expect("b");
        let mut retrying = queue.ticket();
        assert_eq!(retrying.wait(now()), Ok(()), "nobody waits: a turn at once");
        // It cannot use a, and b is full: it waits, giving its turn away.
        assert_eq!(retrying.wait_giving_way(now()), Err(TimedOut));
        let mut next = queue.ticket();
        assert!(next.behind_others());
        assert_eq!(next.wait(now()), Ok(()), "the given-away turn");
        assert!(queue.try_take(&a).is_some(), "and a's slot is there for it");
    }

    #[test]
    fn giving_way_first_tries_a_slot_that_came_free_meanwhile() {
        // b comes free while the only waiter, which may not use a, holds its turn: the spare
        // is b's, and the waiter takes it rather than parking beside it.
        let queue = Queue::new(Some(1), QUEUE_TIMEOUT);
        let b = counter();
        let held_b = queue.try_take(&b).expect("b");
        let mut retrying = queue.ticket();
        assert_eq!(retrying.wait(now()), Ok(()));
        drop(held_b);
        assert_eq!(retrying.wait_giving_way(now()), Ok(()), "b's slot, at once");
        assert!(queue.try_take(&b).is_some());
    }

    #[test]
    fn spares_left_over_from_an_earlier_rush_give_no_one_a_free_retry() {
        let queue = Queue::new(Some(1), QUEUE_TIMEOUT);
        let (a, b) = (counter(), counter());
        // A rush leaves spares nobody used: while a holder has its turn, both slots come
        // free; the holder takes b's, and a request that never queued takes a's.
        let held_a = queue.try_take(&a).expect("a");
        let held_b = queue.try_take(&b).expect("b");
        let mut holder = queue.ticket();
        assert_eq!(holder.wait(now()), Ok(()));
        drop((held_a, held_b));
        let taken_b = queue.try_take(&b).expect("b, by the holder");
        holder.admitted();
        let held_a = queue
            .try_take(&a)
            .expect("a, by a request that never queued");
        assert_eq!(queue.stats().waiting, 0);
        // Later, with both nodes busy, a request alone in line waits instead of retrying
        // over and over on stale spares.
        let mut later = queue.ticket();
        assert_eq!(later.wait(now()), Ok(()), "nobody waits: one look at once");
        assert_eq!(later.wait(now()), Err(TimedOut), "then it waits");
        drop((held_a, taken_b));
    }

    #[test]
    fn under_contention_every_request_gets_a_slot_and_the_cap_holds() {
        const THREADS: usize = 16;
        const REQUESTS: usize = 300;
        const CAP: u64 = 2;
        let queue = Queue::new(Some(CAP as usize), Duration::from_secs(30));
        let nodes = [counter(), counter(), counter()];
        let most = AtomicU64::new(0);
        thread::scope(|scope| {
            for _ in 0..THREADS {
                scope.spawn(|| {
                    for _ in 0..REQUESTS {
                        // The same steps as the relay's forward path, over three nodes.
                        let mut ticket = queue.ticket();
                        let deadline = Instant::now() + queue.timeout();
                        let (slot, node) = loop {
                            if ticket.behind_others() {
                                ticket.wait(deadline).expect("a turn within the timeout");
                            }
                            if let Some(taken) =
                                nodes.iter().find_map(|n| Some((queue.try_take(n)?, n)))
                            {
                                break taken;
                            }
                            ticket.wait(deadline).expect("a turn within the timeout");
                        };
                        ticket.admitted();
                        most.fetch_max(node.load(Ordering::SeqCst), Ordering::SeqCst);
                        thread::yield_now();
                        drop(slot);
                    }
                });
            }
        });
        assert!(most.load(Ordering::SeqCst) <= CAP, "the cap was passed");
        assert!(nodes.iter().all(|n| n.load(Ordering::SeqCst) == 0));
        let stats = queue.stats();
        assert_eq!((stats.waiting, stats.timeouts), (0, 0));
        assert!(stats.waited > 0, "nobody ever waited: no contention tested");
    }

    #[test]
    fn a_newcomer_queues_behind_waiters_instead_of_passing_them() {
        let queue = Queue::new(Some(1), Duration::from_secs(10));
        let node = counter();
        let _held = queue.try_take(&node).expect("slot");
        assert!(!queue.ticket().behind_others(), "nobody waits yet");
        thread::scope(|scope| {
            scope.spawn(|| {
                let mut ticket = queue.ticket();
                let _ = ticket.wait(Instant::now() + Duration::from_millis(300));
                let _ = ticket.wait(Instant::now() + Duration::from_millis(300));
            });
            until_waiting(&queue, 1);
            assert!(
                queue.ticket().behind_others(),
                "one waits: a newcomer lines up"
            );
        });
    }
}
