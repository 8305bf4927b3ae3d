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
//! A freed slot ([`Slot`]'s drop) gives a turn to the longest-waiting request without one and
//! wakes it; that request picks again (and if another took the slot first, waits on in its
//! place). A request that waits longer than the queue's timeout gets a 503.
//!
//! Pure mechanism: which nodes are full and what to do on a timeout are the caller's
//! (`forward.rs`).

use crate::balancer::InFlight;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long a request waits in line before it is answered 503: the `timeout queue` HAProxy's
/// documentation suggests, long enough to ride out a burst, short enough that a client is told
/// rather than left hanging when the nodes are overwhelmed.
pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// The line of requests waiting for a slot, and the cap that makes them wait.
#[derive(Debug)]
pub struct Queue {
    cap: Option<u64>,
    timeout: Duration,
    line: Mutex<VecDeque<Arc<Waiter>>>,
    /// The line's length, read without the lock on every finished request.
    waiting: AtomicUsize,
    /// Requests that had to wait, ever.
    waited: AtomicU64,
    /// Requests that waited [`Queue::timeout`] in vain.
    timeouts: AtomicU64,
}

#[derive(Debug)]
struct Waiter {
    thread: Thread,
    /// Set with the line locked when this waiter is at the front and a slot may be free.
    turn: AtomicBool,
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
    waiter: Option<Arc<Waiter>>,
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
            line: Mutex::new(VecDeque::new()),
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
            waiting: self.waiting.load(Ordering::Relaxed),
            waited: self.waited.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Arc<Waiter>>> {
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
        }
    }

    /// Gives a turn to the longest-waiting request that has none yet, and wakes it: each freed
    /// slot wakes a different waiter, so that slots freed together are taken in parallel rather
    /// than handed down the line one wake-up at a time.
    fn wake_next(line: &VecDeque<Arc<Waiter>>) {
        if let Some(next) = line.iter().find(|w| !w.turn.load(Ordering::SeqCst)) {
            next.turn.store(true, Ordering::SeqCst);
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

    /// Joins the line (if not in it yet) and parks until this request is at the front with a
    /// turn, or until `deadline`. A request that joins an empty line has its turn at once, so
    /// a slot freed just before it joined is not missed.
    pub fn wait(&mut self, deadline: Instant) -> Result<(), TimedOut> {
        let queue = self.queue;
        let waiter = match &self.waiter {
            Some(waiter) => Arc::clone(waiter),
            None => {
                let waiter = Arc::new(Waiter {
                    thread: thread::current(),
                    turn: AtomicBool::new(false),
                });
                let mut line = queue.lock();
                line.push_back(Arc::clone(&waiter));
                queue.waiting.store(line.len(), Ordering::SeqCst);
                if line.len() == 1 {
                    waiter.turn.store(true, Ordering::SeqCst);
                }
                queue.waited.fetch_add(1, Ordering::Relaxed);
                self.waiter = Some(Arc::clone(&waiter));
                waiter
            }
        };
        loop {
            if waiter.turn.swap(false, Ordering::SeqCst) {
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

    /// Leaves the line; a turn given to this request and not used passes to the next waiter.
    fn leave(&mut self) {
        let Some(waiter) = self.waiter.take() else {
            return;
        };
        let queue = self.queue;
        let mut line = queue.lock();
        line.retain(|w| !Arc::ptr_eq(w, &waiter));
        queue.waiting.store(line.len(), Ordering::SeqCst);
        if waiter.turn.load(Ordering::SeqCst) {
            Queue::wake_next(&line);
        }
    }

    /// The request got its slot: out of the line (its turn was used).
    pub fn admitted(mut self) {
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
        if self.queue.waiting.load(Ordering::SeqCst) > 0 {
            Queue::wake_next(&self.queue.lock());
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
