//! `p2c`: power of two choices — the less loaded of two nodes drawn at random.
//!
//! Least-connections needs every node's count and sends a burst of simultaneous picks all to
//! the same least-loaded node; pure random ignores load. Drawing two nodes and taking the less
//! loaded is O(1), spreads simultaneous picks, and still keeps the busiest node out of reach:
//! a node busier than all others never wins a comparison. This file owns the drawing; the
//! comparison is the small pure function [`choose`].

use super::strategy::{healthy_count, known, nth_healthy, Balancer, NodeSpec, NodeState};
use crate::rand::AtomicRng;

/// How many times to draw a fresh pair when a draw includes an unhealthy node, before falling
/// back to drawing among the healthy nodes by scanning. With half the nodes down a round
/// succeeds about a quarter of the time, so most picks stay O(1) even then.
const DRAW_ROUNDS: usize = 4;

/// Which of the two drawn nodes gets the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Choice {
    First,
    Second,
}

/// The decision between two drawn nodes: a healthy node over an unhealthy one, then fewer
/// requests in flight, with a tie going to the first. `None` if neither is healthy.
fn choose(first: NodeState, second: NodeState) -> Option<Choice> {
    match (first.healthy, second.healthy) {
        (true, true) if second.in_flight < first.in_flight => Some(Choice::Second),
        (true, _) => Some(Choice::First),
        (false, true) => Some(Choice::Second),
        (false, false) => None,
    }
}

/// [`choose`] applied to the nodes at two indices, answering with the chosen index.
fn decide(nodes: &[NodeState], first: usize, second: usize) -> Option<usize> {
    choose(nodes[first], nodes[second]).map(|choice| match choice {
        Choice::First => first,
        Choice::Second => second,
    })
}

/// Power of two choices: draws two distinct nodes and sends the request to the one with fewer
/// requests in flight. Weights and keys are ignored.
///
/// A draw that includes an unhealthy node is redrawn, up to 4 rounds. If every round fails
/// (the more nodes are down, the likelier), the pair is drawn among the healthy nodes by
/// scanning: O(n), but just as uniform, so the choice does not depend on which path found it.
/// With one healthy node, that node is picked.
#[derive(Debug)]
pub struct PowerOfTwoChoices {
    node_count: usize,
    rng: AtomicRng,
}

impl PowerOfTwoChoices {
    /// The CLI name.
    pub const NAME: &'static str = "p2c";

    /// A two-choice chooser over `specs` whose draws are determined by `seed`.
    pub fn new(specs: &[NodeSpec], seed: u64) -> Self {
        PowerOfTwoChoices {
            node_count: specs.len(),
            rng: AtomicRng::new(seed),
        }
    }

    /// Two distinct indices in `0..count`, uniformly over all ordered pairs, in two draws:
    /// the second is drawn from the `count - 1` values left and shifted past the first.
    fn draw_pair(&self, count: usize) -> (usize, usize) {
        debug_assert!(count >= 2, "a pair needs two nodes");
        let first = self.rng.below(count as u64) as usize;
        let mut second = self.rng.below(count as u64 - 1) as usize;
        if second >= first {
            second += 1;
        }
        (first, second)
    }

    /// Two choices among the healthy nodes only, finding them by scanning (the rare path).
    fn pick_by_scan(&self, nodes: &[NodeState]) -> Option<usize> {
        match healthy_count(nodes) {
            0 => None,
            1 => nth_healthy(nodes, 0),
            healthy => {
                let (first_rank, second_rank) = self.draw_pair(healthy);
                let first = nth_healthy(nodes, first_rank)?;
                let second = nth_healthy(nodes, second_rank)?;
                decide(nodes, first, second)
            }
        }
    }
}

impl Balancer for PowerOfTwoChoices {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn pick(&self, nodes: &[NodeState], _key: Option<&str>) -> Option<usize> {
        let nodes = known(nodes, self.node_count);
        if nodes.len() < 2 {
            return nth_healthy(nodes, 0);
        }
        for _ in 0..DRAW_ROUNDS {
            let (first, second) = self.draw_pair(nodes.len());
            if nodes[first].healthy && nodes[second].healthy {
                return decide(nodes, first, second);
            }
        }
        self.pick_by_scan(nodes)
    }
}

#[cfg(test)]
mod tests {
    use super::super::strategy::testing::{
        assert_within, healthy, loaded, sequence, specs, tally, with_down,
    };
    use super::*;
    use crate::rand::Rng;
    use std::collections::HashMap;

    fn node(healthy: bool, in_flight: u64) -> NodeState {
        NodeState { healthy, in_flight }
    }

    #[test]
    fn choose_takes_the_less_loaded_of_two_healthy_nodes() {
        assert_eq!(choose(node(true, 3), node(true, 1)), Some(Choice::Second));
        assert_eq!(choose(node(true, 1), node(true, 3)), Some(Choice::First));
    }

    #[test]
    fn choose_breaks_ties_toward_the_first() {
        assert_eq!(choose(node(true, 2), node(true, 2)), Some(Choice::First));
    }

    #[test]
    fn choose_prefers_a_healthy_node_whatever_its_load() {
        assert_eq!(choose(node(false, 0), node(true, 9)), Some(Choice::Second));
        assert_eq!(choose(node(true, 9), node(false, 0)), Some(Choice::First));
        assert_eq!(choose(node(false, 0), node(false, 0)), None);
    }

    #[test]
    fn choose_never_takes_the_more_loaded_of_its_two() {
        let mut rng = Rng::new(8);
        for _ in 0..10_000 {
            let (a, b) = (node(true, rng.below(5)), node(true, rng.below(5)));
            let (chosen, other) = match choose(a, b) {
                Some(Choice::First) => (a, b),
                Some(Choice::Second) => (b, a),
                None => panic!("both healthy"),
            };
            assert!(chosen.in_flight <= other.in_flight, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn draws_two_distinct_indices_covering_every_pair_evenly() {
        // Tolerance ±10% of the expected 1,666.7 per ordered pair over 10,000 draws of n = 3.
        let balancer = PowerOfTwoChoices::new(&specs(3), 5);
        let mut pairs: HashMap<(usize, usize), usize> = HashMap::new();
        for _ in 0..10_000 {
            let (first, second) = balancer.draw_pair(3);
            assert!(first != second && first < 3 && second < 3);
            *pairs.entry((first, second)).or_default() += 1;
        }
        assert_eq!(pairs.len(), 6);
        let counts: Vec<usize> = pairs.values().copied().collect();
        assert_within(&counts, &[10_000.0 / 6.0; 6], 0.10);
    }

    #[test]
    fn with_two_nodes_always_picks_the_less_loaded() {
        let balancer = PowerOfTwoChoices::new(&specs(2), 1);
        assert_eq!(tally(&balancer, &loaded(&[4, 1]), 1_000), [0, 1_000]);
    }

    #[test]
    fn never_picks_the_most_loaded_node() {
        // The most loaded node loses every pair it is drawn in; the least loaded wins the 2/3
        // of pairs it is in. Tolerance ±5% of the expected 6,666.7 / 3,333.3.
        let balancer = PowerOfTwoChoices::new(&specs(3), 2);
        let counts = tally(&balancer, &loaded(&[0, 5, 10]), 10_000);
        assert_eq!(counts[2], 0);
        assert_within(&counts[..2], &[20_000.0 / 3.0, 10_000.0 / 3.0], 0.05);
    }

    #[test]
    fn spreads_ten_thousand_picks_evenly_over_idle_nodes() {
        // Tolerance ±5% of the expected 2,500: ties go to the first draw, which is uniform.
        let balancer = PowerOfTwoChoices::new(&specs(4), 3);
        let counts = tally(&balancer, &healthy(4), 10_000);
        assert_within(&counts, &[2_500.0; 4], 0.05);
    }

    #[test]
    fn picks_the_only_healthy_node() {
        let balancer = PowerOfTwoChoices::new(&specs(5), 4);
        let nodes = with_down(5, &[0, 1, 2, 4]);
        assert_eq!(sequence(&balancer, &nodes, 1_000), vec![3; 1_000]);
        assert_eq!(
            PowerOfTwoChoices::new(&specs(1), 4).pick(&healthy(1), None),
            Some(0)
        );
    }

    #[test]
    fn keeps_choosing_by_load_when_most_nodes_are_down() {
        // Most picks here reach the scanning fallback, which must still compare loads.
        let balancer = PowerOfTwoChoices::new(&specs(8), 6);
        let mut nodes = with_down(8, &[0, 1, 2, 3, 4, 6]);
        nodes[5].in_flight = 3;
        assert_eq!(sequence(&balancer, &nodes, 1_000), vec![7; 1_000]);
    }

    #[test]
    fn keeps_open_requests_level_as_they_pile_up() {
        let balancer = PowerOfTwoChoices::new(&specs(5), 9);
        let mut nodes = healthy(5);
        for _ in 0..5_000 {
            let index = balancer.pick(&nodes, None).expect("all healthy");
            nodes[index].in_flight += 1;
        }
        let counts: Vec<u64> = nodes.iter().map(|n| n.in_flight).collect();
        let spread = counts.iter().max().unwrap() - counts.iter().min().unwrap();
        // Two choices keep the gap tiny; plain random would leave a gap of about 60 here.
        assert!(spread <= 4, "{counts:?}");
    }

    #[test]
    fn same_seed_replays_the_same_choices() {
        let nodes = loaded(&[1, 0, 2, 0, 1]);
        let a = PowerOfTwoChoices::new(&specs(5), 10);
        let b = PowerOfTwoChoices::new(&specs(5), 10);
        assert_eq!(sequence(&a, &nodes, 100), sequence(&b, &nodes, 100));
    }
}
