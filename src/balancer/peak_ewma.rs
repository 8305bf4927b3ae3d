//! `peak-ewma`: the node expected to answer soonest, by measured latency and load.
//!
//! Connection counts (`least-connections`, `p2c`) treat a slow node and a fast one alike until
//! requests pile up on the slow one. Peak EWMA (as in Finagle and Linkerd) keeps, per node, an
//! exponentially weighted moving average of how long its answers took, and sends a request to
//! the node with the lowest `estimate × (in_flight + 1)`: the estimated wait behind the requests
//! already there. The "peak" rule makes the estimate pessimistic: a sample above the estimate
//! replaces it at once, so a node that turns slow loses traffic on its first slow answer, while
//! a node that turns fast earns traffic back gradually, over [`DECAY`]. A failed attempt counts
//! as a sample of [`FAILURE_PENALTY`].
//!
//! The comparison is between two nodes drawn at random (power of two choices), not all: the
//! estimates lag behind reality, and comparing all nodes would send every simultaneous request
//! to the one node that looked best a moment ago; two random candidates spread them, cost
//! O(1), and still never choose the worse of the pair. This is Finagle's and Linkerd's choice.
//!
//! This file owns the estimates; time comes from a [`Clock`] so that tests can fake it.

use super::strategy::{healthy_count, known, nth_healthy, Balancer, NodeSpec, NodeState};
use crate::rand::AtomicRng;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Time constant of the decay: 10 s, as in Finagle and Linkerd. Long enough that one fast
/// answer does not undo a slow spell (the estimate moves `1 - e^(-Δt/10 s)` of the way towards
/// a lower sample), short enough that a node that recovered gets its share back within tens
/// of seconds. An estimate with no new sample also fades towards zero with this constant, so a
/// node once found slow is tried again after a while rather than never.
pub const DECAY: Duration = Duration::from_secs(10);

/// What a failed attempt counts as: 1 s, longer than any answer a healthy booking node gives
/// (milliseconds), so a failing node is avoided at once (the peak rule) and fades back into use
/// over about a minute, unless the other nodes get that slow or that busy.
pub const FAILURE_PENALTY: Duration = Duration::from_secs(1);

/// Where the balancer reads the time.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The real clock, [`Instant::now`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// One node's latency estimate.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Estimate {
    /// Seconds; `None` until the first sample.
    seconds: Option<f64>,
    /// When it was last updated.
    at: Option<Instant>,
}

/// `e^(-elapsed / DECAY)`: how much of an old value remains after `elapsed`.
fn remaining(elapsed: Duration) -> f64 {
    (-elapsed.as_secs_f64() / DECAY.as_secs_f64()).exp()
}

impl Estimate {
    /// Takes in a sample of `sample` seconds at `now`: the peak rule above, decay below.
    fn observe(&mut self, sample: f64, now: Instant) {
        let next = match (self.seconds, self.at) {
            (Some(old), Some(at)) if sample < old => {
                let keep = remaining(now.saturating_duration_since(at));
                old * keep + sample * (1.0 - keep)
            }
            _ => sample,
        };
        self.seconds = Some(next);
        self.at = Some(now);
    }

    /// The estimate as of `now`: faded towards zero for the time since its last sample.
    fn at(&self, now: Instant) -> Option<f64> {
        let seconds = self.seconds?;
        let since = self
            .at
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        Some(seconds * remaining(since))
    }
}

/// The cost of sending one more request to a node: `estimate × (in_flight + 1)`. A node never
/// measured costs nothing while idle (so a new node gets tried at once) and the failure
/// penalty while busy (so a burst does not all go to it before it has answered once), as in
/// Finagle.
fn cost(estimate: Option<f64>, in_flight: u64) -> f64 {
    match estimate {
        Some(seconds) => seconds * (in_flight as f64 + 1.0),
        None if in_flight == 0 => 0.0,
        None => FAILURE_PENALTY.as_secs_f64() * in_flight as f64,
    }
}

/// Peak EWMA over two random candidates (see the module docs).
///
/// Unhealthy nodes are never drawn: a pair is drawn among the healthy nodes; with one healthy
/// node, that node is picked. Ties go to the first drawn. Weights and keys are ignored.
/// Estimates belong to this balancer: a new topology (nodes added, removed, strategy switched)
/// starts with none, and learns them again from the first answers.
pub struct PeakEwma {
    estimates: Mutex<Vec<Estimate>>,
    rng: AtomicRng,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for PeakEwma {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeakEwma")
            .field("estimates", &self.estimates)
            .finish_non_exhaustive()
    }
}

impl PeakEwma {
    /// The CLI name.
    pub const NAME: &'static str = "peak-ewma";

    /// Peak EWMA over `specs`, drawing candidates as `seed` determines, reading time from
    /// `clock`.
    pub fn new(specs: &[NodeSpec], seed: u64, clock: Arc<dyn Clock>) -> Self {
        PeakEwma {
            estimates: Mutex::new(vec![Estimate::default(); specs.len()]),
            rng: AtomicRng::new(seed),
            clock,
        }
    }

    /// The current latency estimate of node `index` in seconds, if it has been measured.
    pub fn estimate(&self, index: usize) -> Option<f64> {
        let now = self.clock.now();
        self.lock().get(index).and_then(|estimate| estimate.at(now))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Estimate>> {
        // Any values are a usable state, so a poisoned lock is used as is.
        self.estimates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Balancer for PeakEwma {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn pick(&self, nodes: &[NodeState], _key: Option<&str>) -> Option<usize> {
        let estimates = self.lock();
        let nodes = known(nodes, estimates.len());
        let healthy = healthy_count(nodes);
        if healthy < 2 {
            return nth_healthy(nodes, 0);
        }
        let first_rank = self.rng.below(healthy as u64) as usize;
        let mut second_rank = self.rng.below(healthy as u64 - 1) as usize;
        if second_rank >= first_rank {
            second_rank += 1;
        }
        let first = nth_healthy(nodes, first_rank)?;
        let second = nth_healthy(nodes, second_rank)?;
        let now = self.clock.now();
        let cost_of = |index: usize| cost(estimates[index].at(now), nodes[index].in_flight);
        Some(if cost_of(second) < cost_of(first) {
            second
        } else {
            first
        })
    }

    fn observe(&self, index: usize, elapsed: Duration, ok: bool) {
        let sample = if ok {
            elapsed.as_secs_f64()
        } else {
            FAILURE_PENALTY.as_secs_f64().max(elapsed.as_secs_f64())
        };
        let now = self.clock.now();
        if let Some(estimate) = self.lock().get_mut(index) {
            estimate.observe(sample, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::strategy::testing::{healthy, loaded, sequence, specs, tally, with_down};
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A clock that moves only when told to.
    struct FakeClock {
        start: Instant,
        offset_micros: AtomicU64,
    }

    impl FakeClock {
        fn new() -> Arc<FakeClock> {
            Arc::new(FakeClock {
                start: Instant::now(),
                offset_micros: AtomicU64::new(0),
            })
        }

        fn advance(&self, by: Duration) {
            self.offset_micros
                .fetch_add(by.as_micros() as u64, Ordering::Relaxed);
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Instant {
            self.start + Duration::from_micros(self.offset_micros.load(Ordering::Relaxed))
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn balancer(count: usize, clock: &Arc<FakeClock>) -> PeakEwma {
        PeakEwma::new(&specs(count), 11, Arc::clone(clock) as Arc<dyn Clock>)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn a_higher_sample_replaces_the_estimate_at_once() {
        let clock = FakeClock::new();
        let balancer = balancer(1, &clock);
        assert_eq!(balancer.estimate(0), None);
        balancer.observe(0, ms(10), true);
        assert!(close(balancer.estimate(0).unwrap(), 0.010));
        balancer.observe(0, ms(80), true);
        assert!(close(balancer.estimate(0).unwrap(), 0.080));
    }

    #[test]
    fn a_lower_sample_pulls_the_estimate_down_with_the_time_constant() {
        let clock = FakeClock::new();
        let balancer = balancer(1, &clock);
        balancer.observe(0, ms(100), true);
        clock.advance(DECAY);
        balancer.observe(0, ms(10), true);
        // One time constant later the estimate went 1 - 1/e of the way down to the sample.
        let keep = (-1.0f64).exp();
        assert!(close(
            balancer.estimate(0).unwrap(),
            0.100 * keep + 0.010 * (1.0 - keep)
        ));
        // A sample at the same instant barely moves it.
        let before = balancer.estimate(0).unwrap();
        balancer.observe(0, ms(1), true);
        assert!(close(balancer.estimate(0).unwrap(), before));
    }

    #[test]
    fn an_unrefreshed_estimate_fades_towards_zero() {
        let clock = FakeClock::new();
        let balancer = balancer(1, &clock);
        balancer.observe(0, ms(100), true);
        clock.advance(DECAY * 2);
        let expected = 0.100 * (-2.0f64).exp();
        assert!(close(balancer.estimate(0).unwrap(), expected));
    }

    #[test]
    fn a_failure_counts_as_the_penalty() {
        let clock = FakeClock::new();
        let balancer = balancer(2, &clock);
        balancer.observe(0, ms(2), true);
        balancer.observe(0, ms(3), false);
        assert!(close(balancer.estimate(0).unwrap(), 1.0));
        balancer.observe(1, ms(50), true);
        assert_eq!(sequence(&balancer, &healthy(2), 8), vec![1; 8]);
    }

    #[test]
    fn cost_is_estimate_times_load_with_this_request() {
        assert!(close(cost(Some(0.010), 0), 0.010));
        assert!(close(cost(Some(0.010), 3), 0.040));
        assert_eq!(cost(None, 0), 0.0);
        assert_eq!(cost(None, 2), 2.0);
    }

    #[test]
    fn exact_picks_of_two_nodes_follow_latency_then_load() {
        let clock = FakeClock::new();
        let balancer = balancer(2, &clock);
        // Unmeasured and idle: both cost 0, the first drawn wins.
        let first = sequence(&balancer, &healthy(2), 6);
        assert!(first.iter().all(|&i| i < 2));
        balancer.observe(0, ms(10), true);
        balancer.observe(1, ms(30), true);
        assert_eq!(sequence(&balancer, &healthy(2), 6), vec![0; 6]);
        // 10 ms × 3 = 30 ms equals 30 ms × 1: the tie goes to the first drawn; at 4 in
        // flight node 0 costs 50 ms and node 1 wins.
        assert_eq!(sequence(&balancer, &loaded(&[4, 0]), 6), vec![1; 6]);
        assert_eq!(sequence(&balancer, &loaded(&[1, 0]), 6), vec![0; 6]);
    }

    #[test]
    fn never_picks_the_costliest_of_three_or_an_unhealthy_node() {
        let clock = FakeClock::new();
        let balancer = balancer(3, &clock);
        for (index, latency) in [5, 10, 40].into_iter().enumerate() {
            balancer.observe(index, ms(latency), true);
        }
        let counts = tally(&balancer, &healthy(3), 3_000);
        assert_eq!(counts[2], 0, "{counts:?}");
        // Node 0 wins every pair it is in (2/3), node 1 the pair with node 2 (1/3).
        assert!((1_800..=2_200).contains(&counts[0]), "{counts:?}");
        assert_eq!(sequence(&balancer, &with_down(3, &[0, 2]), 5), vec![1; 5]);
        assert_eq!(balancer.pick(&with_down(3, &[0, 1, 2]), None), None);
    }

    #[test]
    fn prefers_a_node_after_it_gets_faster() {
        let clock = FakeClock::new();
        let balancer = balancer(2, &clock);
        // Node 0 answers in 20 ms throughout; node 1 in 50 ms, then in 2 ms.
        balancer.observe(0, ms(20), true);
        balancer.observe(1, ms(50), true);
        assert_eq!(sequence(&balancer, &healthy(2), 4), vec![0; 4]);
        let mut picks_after = Vec::new();
        for step in 0..60 {
            clock.advance(ms(500));
            balancer.observe(0, ms(20), true);
            balancer.observe(1, ms(2), true);
            if step >= 40 {
                picks_after.push(balancer.pick(&healthy(2), None).expect("healthy"));
            }
        }
        // After 20 s of fast answers its estimate is far below node 0's 20 ms.
        assert!(balancer.estimate(1).unwrap() < 0.005);
        assert_eq!(picks_after, vec![1; 20]);
    }

    #[test]
    fn a_closed_loop_moves_traffic_to_the_node_that_got_faster() {
        // Each pick is answered at once with the node's current latency, 100 ms apart; node 1
        // turns from 30 ms to 1 ms after 10 s. Node 1 is still drawn in pairs and, while idle,
        // its faded estimate gets it tried: within 20 s it takes most picks.
        let clock = FakeClock::new();
        let balancer = balancer(2, &clock);
        let mut late = [0usize; 2];
        for step in 0..600 {
            clock.advance(ms(100));
            let index = balancer.pick(&healthy(2), None).expect("healthy");
            let latency = match (index, step >= 100) {
                (0, _) => ms(10),
                (_, false) => ms(30),
                (_, true) => ms(1),
            };
            balancer.observe(index, latency, true);
            if step >= 400 {
                late[index] += 1;
            }
        }
        assert!(late[1] > 190, "{late:?}");
    }

    #[test]
    fn observations_of_unknown_nodes_are_ignored() {
        let clock = FakeClock::new();
        let balancer = balancer(1, &clock);
        balancer.observe(5, ms(1), true);
        assert_eq!(balancer.estimate(5), None);
    }
}
