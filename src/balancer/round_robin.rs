//! `round-robin`: healthy nodes in turn, 0, 1, 2, 0, 1, 2, ...
//!
//! The simplest fair strategy, and the baseline the others are measured against. It needs no
//! load information and gives every healthy node the same share regardless of weight or key.
//! This file owns only the rotation; the shared ticket counter is [`super::strategy::Turns`].

use super::strategy::{known, Balancer, NodeSpec, NodeState, Turns};

/// Hands requests to healthy nodes in turn.
///
/// Each pick takes one ticket with a single `fetch_add`, so concurrent picks never share a
/// turn. A down node's turns are spread over the healthy ones rather than handed to its
/// successor, so the rotation stays even over whichever nodes are healthy: with node 1 of
/// 0..4 down, the order is 0, 2, 3, 0, 2, 3.
#[derive(Debug)]
pub struct RoundRobin {
    node_count: usize,
    turns: Turns,
}

impl RoundRobin {
    /// The CLI name.
    pub const NAME: &'static str = "round-robin";

    /// A rotation over `specs`, starting at the first node. Weights are ignored.
    pub fn new(specs: &[NodeSpec]) -> Self {
        RoundRobin {
            node_count: specs.len(),
            turns: Turns::default(),
        }
    }
}

impl Balancer for RoundRobin {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn pick(&self, nodes: &[NodeState], _key: Option<&str>) -> Option<usize> {
        self.turns.next_healthy(known(nodes, self.node_count))
    }
}

#[cfg(test)]
mod tests {
    use super::super::strategy::testing::{
        healthy, sequence, specs, tally, weighted_specs, with_down,
    };
    use super::*;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn rotates_through_nodes_in_index_order() {
        let balancer = RoundRobin::new(&specs(3));
        assert_eq!(
            sequence(&balancer, &healthy(3), 9),
            [0, 1, 2, 0, 1, 2, 0, 1, 2]
        );
    }

    #[test]
    fn skips_unhealthy_nodes_keeping_the_rotation_even() {
        let balancer = RoundRobin::new(&specs(4));
        let nodes = with_down(4, &[1]);
        assert_eq!(sequence(&balancer, &nodes, 6), [0, 2, 3, 0, 2, 3]);
        // Exactly even: 9,999 picks is 3,333 full turns over the three healthy nodes.
        assert_eq!(tally(&balancer, &nodes, 9_999), [3333, 0, 3333, 3333]);
    }

    #[test]
    fn shares_ten_thousand_picks_exactly_evenly() {
        // Tolerance: none beyond the remainder; 10,000 = 3 × 3,333 + 1.
        let balancer = RoundRobin::new(&specs(3));
        assert_eq!(tally(&balancer, &healthy(3), 10_000), [3334, 3333, 3333]);
    }

    #[test]
    fn ignores_weights_and_keys() {
        let balancer = RoundRobin::new(&weighted_specs(&[5, 1, 0]));
        let picks: Vec<_> = (0..6)
            .map(|i| balancer.pick(&healthy(3), Some(&format!("key-{i}"))))
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2].map(Some));
    }

    #[test]
    fn concurrent_picks_never_share_a_turn() {
        let balancer = Arc::new(RoundRobin::new(&specs(3)));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let balancer = Arc::clone(&balancer);
                thread::spawn(move || tally(&*balancer, &healthy(3), 3_000))
            })
            .collect();
        let mut totals = [0; 3];
        for handle in handles {
            let counts = handle.join().expect("picking thread panicked");
            totals.iter_mut().zip(counts).for_each(|(t, c)| *t += c);
        }
        // 12,000 distinct tickets cover each node exactly 4,000 times, however interleaved.
        assert_eq!(totals, [4000, 4000, 4000]);
    }
}
