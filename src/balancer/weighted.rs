//! `weighted`: smooth weighted round-robin, exactly as nginx does it.
//!
//! Use it when nodes differ in capacity. Plain weighted round-robin sends a node its whole
//! share in a burst (`a a a a a b c` for weights 5, 1, 1); the smooth variant interleaves the
//! same shares (`a a b a c a a`), so no node sees a burst and the pattern repeats exactly every
//! `sum(weights)` picks. This file owns the per-node "current" weights that make it smooth.

use super::strategy::{known, Balancer, NodeSpec, NodeState, Turns};
use std::sync::{Mutex, PoisonError};

/// Smooth weighted round-robin.
///
/// Every pick, each eligible node's current weight grows by its weight; the node with the
/// largest current weight (lowest index on ties) is chosen and its current weight drops by the
/// total of the eligible weights. Over every `sum(weights)` consecutive picks with a fixed set
/// of eligible nodes, each node is chosen exactly `weight` times.
///
/// - Unhealthy nodes are skipped and do not accumulate, so a node coming back does not get a
///   burst to "catch up"; its share while down goes to the others in proportion to theirs.
/// - Weight 0 means no traffic while a healthy node with a positive weight exists. If only
///   weight-0 nodes are healthy, they are used in plain round-robin: availability wins over
///   draining.
#[derive(Debug)]
pub struct SmoothWeighted {
    weights: Vec<i64>,
    /// One pick reads and writes every node's current weight, so they share one lock rather
    /// than being separate atomics that concurrent picks could interleave.
    current: Mutex<Vec<i64>>,
    fallback: Turns,
}

impl SmoothWeighted {
    /// The CLI name.
    pub const NAME: &'static str = "weighted";

    /// Smooth weighted round-robin over `specs` by their weights.
    pub fn new(specs: &[NodeSpec]) -> Self {
        SmoothWeighted {
            weights: specs.iter().map(|spec| i64::from(spec.weight)).collect(),
            current: Mutex::new(vec![0; specs.len()]),
            fallback: Turns::default(),
        }
    }
}

impl Balancer for SmoothWeighted {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn pick(&self, nodes: &[NodeState], _key: Option<&str>) -> Option<usize> {
        let nodes = known(nodes, self.weights.len());
        // A panic elsewhere while holding the lock cannot leave the weights invalid (any
        // values are a usable state), so a poisoned lock is used as is.
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let mut total = 0;
        let mut chosen: Option<usize> = None;
        for (index, node) in nodes.iter().enumerate() {
            let weight = self.weights[index];
            if !node.healthy || weight == 0 {
                continue;
            }
            current[index] += weight;
            total += weight;
            let is_larger = chosen.is_none_or(|best| current[index] > current[best]);
            if is_larger {
                chosen = Some(index);
            }
        }
        match chosen {
            Some(index) => {
                current[index] -= total;
                Some(index)
            }
            None => {
                drop(current);
                self.fallback.next_healthy(nodes)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::strategy::testing::{healthy, sequence, tally, weighted_specs, with_down};
    use super::*;
    use std::sync::Arc;
    use std::thread;

    /// Node indices as letters, to compare with sequences written as in nginx's docs.
    fn letters(picks: &[usize]) -> String {
        picks
            .iter()
            .map(|&index| char::from(b'a' + index as u8))
            .collect()
    }

    /// Asserts every `sum(weights)` consecutive picks contain each node exactly `weight` times.
    fn assert_every_window_honours_weights(weights: &[u32], picks: &[usize]) {
        let cycle = weights.iter().sum::<u32>() as usize;
        for (start, window) in picks.windows(cycle).enumerate() {
            for (index, &weight) in weights.iter().enumerate() {
                let seen = window.iter().filter(|&&pick| pick == index).count();
                assert_eq!(seen, weight as usize, "node {index} in window at {start}");
            }
        }
    }

    /// How many of `picks` went to each of `nodes` nodes.
    fn tally_of(picks: &[usize], nodes: usize) -> Vec<usize> {
        (0..nodes)
            .map(|index| picks.iter().filter(|&&pick| pick == index).count())
            .collect()
    }

    #[test]
    fn weights_5_1_1_give_the_nginx_sequence() {
        let balancer = SmoothWeighted::new(&weighted_specs(&[5, 1, 1]));
        let picks = sequence(&balancer, &healthy(3), 21);
        assert_eq!(letters(&picks), "aabacaa".repeat(3));
    }

    #[test]
    fn weights_3_2_give_an_interleaved_sequence() {
        let balancer = SmoothWeighted::new(&weighted_specs(&[3, 2]));
        let picks = sequence(&balancer, &healthy(2), 15);
        assert_eq!(letters(&picks), "ababa".repeat(3));
    }

    #[test]
    fn every_window_of_one_cycle_honours_the_weights_exactly() {
        for weights in [&[5, 1, 1][..], &[3, 2], &[4, 3, 2, 1], &[1, 1, 1], &[7]] {
            let balancer = SmoothWeighted::new(&weighted_specs(weights));
            let picks = sequence(&balancer, &healthy(weights.len()), 10_000);
            assert_every_window_honours_weights(weights, &picks);
        }
    }

    #[test]
    fn shares_ten_thousand_picks_exactly_by_weight() {
        // Tolerance: none. 10,000 picks are 1,000 whole cycles of 10.
        let balancer = SmoothWeighted::new(&weighted_specs(&[5, 3, 2]));
        assert_eq!(tally(&balancer, &healthy(3), 10_000), [5000, 3000, 2000]);
    }

    #[test]
    fn a_down_nodes_share_goes_to_the_others_by_weight() {
        let balancer = SmoothWeighted::new(&weighted_specs(&[5, 1, 1]));
        let picks = sequence(&balancer, &with_down(3, &[0]), 6);
        assert_eq!(letters(&picks), "bcbcbc");
    }

    #[test]
    fn a_node_coming_back_gets_no_catch_up_burst() {
        let balancer = SmoothWeighted::new(&weighted_specs(&[5, 1, 1]));
        sequence(&balancer, &healthy(3), 3);
        sequence(&balancer, &with_down(3, &[2]), 100);
        let after = sequence(&balancer, &healthy(3), 7);
        // Had it accumulated while down, c would take about 14 picks in a row here.
        let c_picks = after.iter().filter(|&&pick| pick == 2).count();
        assert!(c_picks <= 2, "c got {c_picks} of 7: {}", letters(&after));
        // And within a cycle the steady state is back.
        let steady = sequence(&balancer, &healthy(3), 70);
        assert_eq!(tally_of(&steady, 3), [50, 10, 10]);
    }

    #[test]
    fn weight_zero_gets_no_traffic_while_a_weighted_node_is_healthy() {
        let balancer = SmoothWeighted::new(&weighted_specs(&[0, 1, 1]));
        assert_eq!(tally(&balancer, &healthy(3), 1_000), [0, 500, 500]);
    }

    #[test]
    fn weight_zero_nodes_serve_in_turn_when_no_weighted_node_is_healthy() {
        let balancer = SmoothWeighted::new(&weighted_specs(&[0, 0, 5]));
        let picks = sequence(&balancer, &with_down(3, &[2]), 6);
        assert_eq!(picks, [0, 1, 0, 1, 0, 1]);
    }

    #[test]
    fn all_zero_weights_fall_back_to_round_robin() {
        let balancer = SmoothWeighted::new(&weighted_specs(&[0, 0, 0]));
        assert_eq!(sequence(&balancer, &healthy(3), 6), [0, 1, 2, 0, 1, 2]);
        assert_eq!(balancer.pick(&with_down(3, &[0, 1, 2]), None), None);
    }

    #[test]
    fn concurrent_picks_keep_exact_shares() {
        let balancer = Arc::new(SmoothWeighted::new(&weighted_specs(&[5, 1, 1])));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let balancer = Arc::clone(&balancer);
                thread::spawn(move || tally(&*balancer, &healthy(3), 700))
            })
            .collect();
        let mut totals = [0; 3];
        for handle in handles {
            let counts = handle.join().expect("picking thread panicked");
            totals.iter_mut().zip(counts).for_each(|(t, c)| *t += c);
        }
        // 2,800 picks are 400 whole cycles, and the lock makes each pick one step of the cycle.
        assert_eq!(totals, [2000, 400, 400]);
    }
}
