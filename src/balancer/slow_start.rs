//! Slow start (`--slow-start SECS`): a node that has just come up gets a share of traffic
//! that grows over a window instead of its full share at once.
//!
//! A node that was just revived, added or found healthy again starts with a cold cache, cold
//! connection pools and perhaps a database still warming; sent its full share at once it can
//! fall over again, or answer slowly enough to hurt the clients sent to it. Here its share
//! grows linearly from [`MIN_FACTOR`] of its weight to all of it over the window (as
//! HAProxy's `slowstart` and Envoy's slow-start mode do).
//!
//! Two pure pieces, applied by the relay:
//! - [`SlowStart`]: when the ramp began and how long it lasts, and the [`SlowStart::factor`]
//!   at an instant; the relay keeps one per node and calls [`SlowStart::begin`] when the node
//!   comes up.
//! - [`thin`]: before each pick, a ramping node is hidden from the balancer (counted as not
//!   eligible for that one pick) with probability `1 - factor`. This works with every
//!   strategy alike and needs nothing of them: a node hidden from a pick takes no part in it
//!   (for `weighted`, a skipped node does not accumulate), so the node's share becomes
//!   `factor ×` the share its full weight would give it; for the hashing strategies its keys
//!   go to the next node on the ring that often. The effective weight the relay reports is
//!   `weight × factor`. (Scaling the weight itself would give a little more, `f·w / (f·w +
//!   others)` rather than `f × w / (w + others)`; the difference vanishes as the ramp ends.)

use super::strategy::NodeState;
use std::time::{Duration, Instant};

/// The share a node gets the instant it comes up: 10% of its weight, not 0, so that it is
/// tried (and its health confirmed by real traffic) from the start.
pub const MIN_FACTOR: f64 = 0.1;

/// One node's ramp: since when, and over how long.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlowStart {
    /// When the node last came up; `None`: not ramping (at full share).
    since: Option<Instant>,
    /// How long the ramp lasts; zero means slow start is off.
    window: Duration,
}

impl SlowStart {
    /// A ramp of `window` that has not begun: the node is at full share.
    pub fn new(window: Duration) -> SlowStart {
        SlowStart {
            since: None,
            window,
        }
    }

    /// The node came up at `now`: its share starts again from [`MIN_FACTOR`].
    pub fn begin(&mut self, now: Instant) {
        if !self.window.is_zero() {
            self.since = Some(now);
        }
    }

    /// The fraction of its weight the node gets at `now`: [`MIN_FACTOR`] when the ramp begins,
    /// growing linearly to 1 at its end and 1 after; always 1 when slow start is off or the
    /// node never came up.
    pub fn factor(&self, now: Instant) -> f64 {
        let Some(since) = self.since else {
            return 1.0;
        };
        if self.window.is_zero() {
            return 1.0;
        }
        let progress =
            now.saturating_duration_since(since).as_secs_f64() / self.window.as_secs_f64();
        if progress >= 1.0 {
            1.0
        } else {
            MIN_FACTOR + (1.0 - MIN_FACTOR) * progress
        }
    }
}

/// Hides ramping nodes from one pick: each healthy node whose `factors` entry is below 1 is
/// marked not healthy in `nodes` when `draw()` (uniform in `[0, 1)`) is at or above its
/// factor, i.e. with probability `1 - factor`. If that would leave no node eligible, nothing
/// is hidden: a ramping node still serves when it is the only one up. Entries without a factor
/// are left as they are. `draw` is called once per ramping healthy node.
pub fn thin(nodes: &mut [NodeState], factors: &[f64], mut draw: impl FnMut() -> f64) {
    let mut hidden: Vec<usize> = Vec::new();
    for (index, (node, &factor)) in nodes.iter_mut().zip(factors).enumerate() {
        if node.healthy && factor < 1.0 && draw() >= factor {
            node.healthy = false;
            hidden.push(index);
        }
    }
    if !hidden.is_empty() && !nodes.iter().any(|node| node.healthy) {
        for index in hidden {
            nodes[index].healthy = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::strategy::testing::{healthy, weighted_specs, with_down};
    use super::super::strategy::Balancer;
    use super::super::weighted::SmoothWeighted;
    use super::*;
    use crate::rand::Rng;

    fn secs(n: f64) -> Duration {
        Duration::from_secs_f64(n)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn the_weight_curve_rises_from_a_tenth_to_all_over_the_window() {
        let t0 = Instant::now();
        let mut ramp = SlowStart::new(secs(30.0));
        assert_eq!(ramp.factor(t0), 1.0, "never came up: full share");
        ramp.begin(t0);
        assert!(close(ramp.factor(t0), 0.10));
        assert!(close(ramp.factor(t0 + secs(15.0)), 0.55));
        assert!(close(ramp.factor(t0 + secs(7.5)), 0.325));
        assert_eq!(ramp.factor(t0 + secs(30.0)), 1.0);
        assert_eq!(ramp.factor(t0 + secs(3_000.0)), 1.0);
        // Coming up again restarts the ramp.
        ramp.begin(t0 + secs(100.0));
        assert!(close(ramp.factor(t0 + secs(100.0)), 0.10));
        // An instant before the start counts as the start.
        assert!(close(ramp.factor(t0), 0.10));
    }

    #[test]
    fn a_zero_window_is_off() {
        let t0 = Instant::now();
        let mut ramp = SlowStart::new(Duration::ZERO);
        ramp.begin(t0);
        assert_eq!(ramp.factor(t0), 1.0);
        assert_eq!(SlowStart::default().factor(t0), 1.0);
    }

    #[test]
    fn thin_hides_a_ramping_node_when_the_draw_is_at_or_above_its_factor() {
        let mut nodes = healthy(3);
        let mut draws = [0.5, 0.2].into_iter();
        thin(&mut nodes, &[1.0, 0.3, 0.3], || {
            draws.next().expect("two draws")
        });
        assert_eq!(
            nodes.iter().map(|n| n.healthy).collect::<Vec<_>>(),
            [true, false, true]
        );
    }

    #[test]
    fn thin_leaves_the_only_eligible_node_alone() {
        let mut nodes = with_down(2, &[0]);
        thin(&mut nodes, &[0.1, 0.1], || 0.99);
        assert!(!nodes[0].healthy, "a down node stays down");
        assert!(nodes[1].healthy, "the only node up serves while ramping");
    }

    #[test]
    fn a_ramping_node_gets_about_its_factor_of_its_weighted_share() {
        // Two nodes of weight 1, one at factor 0.55: it is eligible for 55% of the picks and
        // gets half of those, 0.55 of its full half share. Tolerance ±5% of 2,750 of 10,000.
        let balancer = SmoothWeighted::new(&weighted_specs(&[1, 1]));
        let mut rng = Rng::new(5);
        let mut ramping = 0;
        for _ in 0..10_000 {
            let mut nodes = healthy(2);
            thin(&mut nodes, &[1.0, 0.55], || rng.next_f64());
            if balancer.pick(&nodes, None) == Some(1) {
                ramping += 1;
            }
        }
        let expected = 10_000.0 * 0.55 / 2.0;
        assert!(
            (ramping as f64 - expected).abs() < expected * 0.05,
            "{ramping} picks, expected {expected:.0}"
        );
    }
}
