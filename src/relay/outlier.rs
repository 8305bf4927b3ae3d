//! Outlier ejection: a node whose answers are 5xx [`CONSECUTIVE_5XX`] times
//! in a row gets no traffic for a while, as Envoy's outlier detection does.
//!
//! Why, beside health checks: a check asks one cheap path (`/health`), and a
//! node can pass it while failing every real request (its database gone, a
//! bad deploy: the simulator's `fail`). Only the answers give such a node
//! away. An ejected node is routed around as if it were down, but it is not
//! marked unhealthy: its checks still pass, and the two states are kept apart
//! so that each says what it saw.
//!
//! - An ejection lasts the base time (`--ejection-time`, [`BASE_EJECTION`] by
//!   default) × the number of times the node has been ejected, at most
//!   [`MAX_EJECTION_MULTIPLIER`] × the base: a node that keeps failing stays
//!   out longer each time. When the time is up the node is re-admitted with a
//!   fresh streak; if it fails again it goes out again, for longer.
//! - Never more than half of the nodes are ejected at once ([`may_eject`]):
//!   when many nodes fail together the fault is more likely shared (the
//!   database, the network) than theirs, and ejecting them all would turn
//!   errors into no service at all.
//!
//! The rule is [`OutlierState`], pure and driven by the `now` its caller
//! passes, so its tests use a fake clock. [`Outlier`] wraps it for one
//! node's threads; [`Ejector`] applies the cap across the nodes. This module
//! knows nothing of backends, sockets or events.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// 5xx answers in a row that eject a node.
pub const CONSECUTIVE_5XX: u32 = 5;

/// The first ejection's length (the default of `--ejection-time`).
pub const BASE_EJECTION: Duration = Duration::from_secs(30);

/// The longest ejection, in base times.
pub const MAX_EJECTION_MULTIPLIER: u32 = 10;

/// Whether one more node may be ejected when `ejected` of `total` already
/// are: never more than half of them (so a lone node is never ejected).
pub fn may_eject(ejected: usize, total: usize) -> bool {
    (ejected + 1) * 2 <= total
}

/// One node's streak of 5xx answers and its ejections, without I/O or clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutlierState {
    /// 5xx answers in a row since the last other answer (or re-admission).
    streak: u32,
    /// Times ejected so far.
    ejections: u32,
    /// Set while ejected: when the node may come back.
    until: Option<Instant>,
}

impl OutlierState {
    pub fn is_ejected(&self) -> bool {
        self.until.is_some()
    }

    /// Times this node has been ejected.
    pub fn ejections(&self) -> u32 {
        self.ejections
    }

    /// Whether the streak is long enough to eject (and the node is not out yet).
    pub fn wants_ejection(&self) -> bool {
        !self.is_ejected() && self.streak >= CONSECUTIVE_5XX
    }

    /// Counts one answer; true if the streak now asks for an ejection.
    /// Answers that arrive while ejected (requests sent before) count for
    /// nothing.
    pub fn observe(&mut self, is_5xx: bool) -> bool {
        if self.is_ejected() {
            return false;
        }
        if is_5xx {
            self.streak = self.streak.saturating_add(1);
        } else {
            self.streak = 0;
        }
        self.wants_ejection()
    }

    /// Ejects the node at `now`; returns how long for (`base` × the
    /// ejections so far, this one included, capped).
    pub fn eject(&mut self, now: Instant, base: Duration) -> Duration {
        self.ejections = self.ejections.saturating_add(1);
        let length = base * self.ejections.min(MAX_EJECTION_MULTIPLIER);
        self.until = Some(now + length);
        length
    }

    /// Re-admits the node if its ejection is over at `now`; true if it was.
    pub fn readmit_if_due(&mut self, now: Instant) -> bool {
        match self.until {
            Some(until) if now >= until => {
                self.until = None;
                self.streak = 0;
                true
            }
            _ => false,
        }
    }
}

/// One node's [`OutlierState`]: read on every request (atomics), changed
/// under a mutex.
#[derive(Default)]
pub struct Outlier {
    ejected: AtomicBool,
    /// Whether its last answer was a 5xx (a streak has begun): while not, a
    /// good answer changes nothing and takes no lock, which is nearly every
    /// answer of a healthy node.
    on_streak: AtomicBool,
    state: Mutex<OutlierState>,
}

impl Outlier {
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutlierState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Times this node has been ejected.
    pub fn ejections(&self) -> u32 {
        self.lock().ejections()
    }

    /// See [`OutlierState::readmit_if_due`]. Cheap while not ejected.
    pub fn readmit_if_due(&self, now: Instant) -> bool {
        if !self.is_ejected() {
            return false;
        }
        let mut state = self.lock();
        let readmitted = state.readmit_if_due(now);
        self.ejected.store(state.is_ejected(), Ordering::Relaxed);
        readmitted
    }
}

/// The ejection rule across the nodes: the base time and the cap.
pub struct Ejector {
    base: Duration,
    /// Held while one ejection is decided, so two nodes ejected at the same
    /// moment cannot both slip under the cap.
    deciding: Mutex<()>,
}

/// What an answer did to its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to tell.
    None,
    /// Ejected now, for this long; `count` is its ejections so far.
    Ejected { length: Duration, count: u32 },
    /// The streak asks for an ejection but half of the nodes are out already.
    Capped,
}

impl Ejector {
    pub fn new(base: Duration) -> Ejector {
        Ejector {
            base,
            deciding: Mutex::new(()),
        }
    }

    pub fn base(&self) -> Duration {
        self.base
    }

    /// Counts an answer of `node`; `all` are every node's outliers (`node`
    /// among them), to apply the cap.
    pub fn observe<'a>(
        &self,
        node: &Outlier,
        all: impl Iterator<Item = &'a Outlier>,
        is_5xx: bool,
        now: Instant,
    ) -> Verdict {
        if !is_5xx && (node.is_ejected() || !node.on_streak.load(Ordering::Relaxed)) {
            return Verdict::None;
        }
        let mut state = node.lock();
        let wants_ejection = state.observe(is_5xx);
        node.on_streak.store(is_5xx, Ordering::Relaxed);
        if !wants_ejection {
            return Verdict::None;
        }
        let _deciding = self.deciding.lock().unwrap_or_else(|e| e.into_inner());
        let (mut total, mut ejected) = (0, 0);
        for outlier in all {
            total += 1;
            ejected += usize::from(outlier.is_ejected());
        }
        if !may_eject(ejected, total) {
            return Verdict::Capped;
        }
        let length = state.eject(now, self.base);
        node.ejected.store(true, Ordering::Relaxed);
        Verdict::Ejected {
            length,
            count: state.ejections(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(30);

    #[test]
    fn five_5xx_in_a_row_eject_and_any_other_answer_resets_the_streak() {
        let mut state = OutlierState::default();
        for _ in 0..CONSECUTIVE_5XX - 1 {
            assert!(!state.observe(true));
        }
        assert!(!state.observe(false), "a 2xx breaks the streak");
        for _ in 0..CONSECUTIVE_5XX - 1 {
            assert!(!state.observe(true));
        }
        assert!(state.observe(true), "the fifth in a row");
        assert!(!state.is_ejected(), "observe only asks; eject decides");
    }

    #[test]
    fn ejections_last_the_base_time_times_their_count_then_readmit() {
        let start = Instant::now();
        let mut state = OutlierState::default();
        for _ in 0..CONSECUTIVE_5XX {
            state.observe(true);
        }
        assert_eq!(state.eject(start, BASE), BASE);
        assert!(state.is_ejected());
        assert!(!state.observe(true), "answers while out count for nothing");
        assert!(!state.readmit_if_due(start + BASE - Duration::from_millis(1)));
        assert!(state.is_ejected());
        assert!(state.readmit_if_due(start + BASE));
        assert!(!state.is_ejected());
        assert!(!state.readmit_if_due(start + BASE), "once");

        // Failing again: out again, for twice as long; the streak started afresh.
        let again = start + BASE + Duration::from_secs(1);
        for _ in 0..CONSECUTIVE_5XX - 1 {
            assert!(!state.observe(true));
        }
        assert!(state.observe(true));
        assert_eq!(state.eject(again, BASE), 2 * BASE);
        assert!(!state.readmit_if_due(again + BASE));
        assert!(state.readmit_if_due(again + 2 * BASE));
        assert_eq!(state.ejections(), 2);
    }

    #[test]
    fn the_ejection_time_is_capped() {
        let now = Instant::now();
        let mut state = OutlierState::default();
        let mut last = Duration::ZERO;
        for _ in 0..MAX_EJECTION_MULTIPLIER + 5 {
            last = state.eject(now, BASE);
            assert!(state.readmit_if_due(now + last));
        }
        assert_eq!(last, BASE * MAX_EJECTION_MULTIPLIER);
    }

    #[test]
    fn never_more_than_half_of_the_nodes_are_ejected() {
        assert!(!may_eject(0, 1), "a lone node is never ejected");
        assert!(may_eject(0, 2));
        assert!(!may_eject(1, 2));
        assert!(may_eject(0, 3));
        assert!(!may_eject(1, 3));
        assert!(may_eject(1, 4));
        assert!(!may_eject(2, 4));
        assert!(!may_eject(0, 0));
    }

    #[test]
    fn the_ejector_applies_the_cap_across_nodes_and_readmits_on_time() {
        let ejector = Ejector::new(BASE);
        let nodes: Vec<Outlier> = (0..3).map(|_| Outlier::default()).collect();
        let now = Instant::now();
        let fail = |i: usize, at: Instant| {
            let mut verdict = Verdict::None;
            for _ in 0..CONSECUTIVE_5XX {
                verdict = ejector.observe(&nodes[i], nodes.iter(), true, at);
            }
            verdict
        };
        assert_eq!(
            fail(0, now),
            Verdict::Ejected {
                length: BASE,
                count: 1
            }
        );
        assert!(nodes[0].is_ejected());
        assert_eq!(fail(1, now), Verdict::Capped, "one of three is the most");
        assert!(!nodes[1].is_ejected());
        assert!(!nodes[0].readmit_if_due(now + BASE / 2));
        assert!(nodes[0].readmit_if_due(now + BASE));
        assert!(!nodes[0].is_ejected());
        // Node 1's streak is still long: its next 5xx ejects it now that there is room.
        assert_eq!(
            ejector.observe(&nodes[1], nodes.iter(), true, now + BASE),
            Verdict::Ejected {
                length: BASE,
                count: 1
            }
        );
        assert_eq!(
            ejector.observe(&nodes[2], nodes.iter(), false, now),
            Verdict::None
        );
    }
}
