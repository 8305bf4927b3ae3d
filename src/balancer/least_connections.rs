//! `least-connections`: the healthy node with the fewest requests in flight.
//!
//! Use it when request costs vary: a node stuck on slow requests accumulates in-flight count
//! and stops receiving new ones until it catches up, which rotation-based strategies cannot
//! notice. This file owns the tie-breaking rotation; the counts come from the relay.

use super::strategy::{known, Balancer, NodeSpec, NodeState, Turns};

/// Sends each request to the healthy node with the fewest requests in flight.
///
/// Ties rotate: among the nodes sharing the minimum, a ticket taken per pick chooses which
/// (ticket mod tie count), so idle nodes are used in turn instead of the first one absorbing
/// every request. Weights are ignored: the in-flight count already reflects capacity, since a
/// faster node finishes sooner and so has fewer requests open.
#[derive(Debug)]
pub struct LeastConnections {
    node_count: usize,
    ties: Turns,
}

impl LeastConnections {
    /// The CLI name.
    pub const NAME: &'static str = "least-connections";

    /// A least-connections chooser over `specs`. Weights are ignored.
    pub fn new(specs: &[NodeSpec]) -> Self {
        LeastConnections {
            node_count: specs.len(),
            ties: Turns::default(),
        }
    }
}

impl Balancer for LeastConnections {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn pick(&self, nodes: &[NodeState], _key: Option<&str>) -> Option<usize> {
        let nodes = known(nodes, self.node_count);
        let fewest = nodes
            .iter()
            .filter(|node| node.healthy)
            .map(|node| node.in_flight)
            .min()?;
        let is_least_loaded = |node: &NodeState| node.healthy && node.in_flight == fewest;
        let tied = nodes.iter().filter(|node| is_least_loaded(node)).count();
        // Counting the tied nodes and taking the ticket's rank among them (rather than scanning
        // from a rotating start) keeps ties even when only some nodes are tied: a rotating start
        // would favour a tied node that follows an untied one.
        let rank = (self.ties.next_ticket() % tied as u64) as usize;
        nodes
            .iter()
            .enumerate()
            .filter(|(_, node)| is_least_loaded(node))
            .nth(rank)
            .map(|(index, _)| index)
    }
}

#[cfg(test)]
mod tests {
    use super::super::strategy::testing::{
        healthy, loaded, sequence, specs, tally, weighted_specs,
    };
    use super::*;
    use crate::rand::Rng;

    #[test]
    fn picks_the_node_with_fewest_in_flight() {
        let balancer = LeastConnections::new(&specs(3));
        assert_eq!(sequence(&balancer, &loaded(&[5, 2, 7]), 5), [1; 5]);
    }

    #[test]
    fn always_picks_a_healthy_minimum_over_random_states() {
        let balancer = LeastConnections::new(&specs(6));
        let mut rng = Rng::new(2024);
        for _ in 0..10_000 {
            let nodes: Vec<NodeState> = (0..6)
                .map(|_| NodeState {
                    healthy: rng.chance(0.8),
                    in_flight: rng.below(4), // a small range, so ties are common
                })
                .collect();
            let fewest = nodes
                .iter()
                .filter(|n| n.healthy)
                .map(|n| n.in_flight)
                .min();
            match balancer.pick(&nodes, None) {
                Some(index) => {
                    assert!(nodes[index].healthy, "{nodes:?} -> {index}");
                    assert_eq!(Some(nodes[index].in_flight), fewest, "{nodes:?} -> {index}");
                }
                None => assert_eq!(fewest, None, "{nodes:?} had a healthy node"),
            }
        }
    }

    #[test]
    fn rotates_among_tied_nodes() {
        let balancer = LeastConnections::new(&specs(3));
        assert_eq!(sequence(&balancer, &healthy(3), 6), [0, 1, 2, 0, 1, 2]);
        assert_eq!(
            sequence(&balancer, &loaded(&[0, 9, 0, 0]), 6),
            [0, 2, 0, 2, 0, 2],
            "only the first three nodes are known"
        );
    }

    #[test]
    fn shares_ten_thousand_picks_evenly_among_equally_loaded_nodes() {
        // Tolerance: none beyond the remainder, since ties rotate exactly.
        let balancer = LeastConnections::new(&specs(4));
        assert_eq!(
            tally(&balancer, &loaded(&[3, 1, 8, 1]), 10_000),
            [0, 5000, 0, 5000]
        );
    }

    #[test]
    fn ignores_weights() {
        let balancer = LeastConnections::new(&weighted_specs(&[10, 1, 1]));
        assert_eq!(sequence(&balancer, &healthy(3), 3), [0, 1, 2]);
    }

    #[test]
    fn keeps_open_requests_level_as_they_pile_up() {
        let balancer = LeastConnections::new(&specs(3));
        let mut nodes = loaded(&[10, 0, 4]);
        for _ in 0..3_000 {
            let index = balancer.pick(&nodes, None).expect("all healthy");
            nodes[index].in_flight += 1;
        }
        let counts: Vec<u64> = nodes.iter().map(|n| n.in_flight).collect();
        // 3,014 requests in all: the idle nodes caught up with the busy one, then all rose
        // together, never more than one apart.
        let spread = counts.iter().max().unwrap() - counts.iter().min().unwrap();
        assert!(spread <= 1, "{counts:?}");
    }
}
