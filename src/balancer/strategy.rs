//! What a strategy is and sees: the [`Balancer`] trait, the node set it is built from
//! ([`NodeSpec`]) and the state it picks from ([`NodeState`]), and the small helpers several
//! strategies share (the healthy nodes among the known ones, a lock-free turn counter).
//!
//! Its own file so that the strategies depend on it and the module's table depends on the
//! strategies, with nothing pointing back up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What a balancer is built from: the node set, in the relay's order. Rebuilt whenever the set
/// or weights change.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// The node's unique name; `consistent-hash` places the node on its ring by this name, so
    /// keys follow the name rather than the position in the list.
    pub name: String,
    /// Relative share of traffic for `weighted` and of the ring for `consistent-hash`;
    /// 0 means "no traffic while another node can take it". Other strategies ignore it.
    pub weight: u32,
}

/// What a balancer sees of each node at pick time (same order and length as the specs it was
/// built with).
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeState {
    /// False if the node is down or already tried for this request: never pick it.
    pub healthy: bool,
    /// Requests currently being served by the node (see [`super::InFlight`]).
    pub in_flight: u64,
}

/// A load-balancing strategy.
pub trait Balancer: Send + Sync {
    /// The CLI name, its row's in [`super::STRATEGIES`].
    fn name(&self) -> &'static str;

    /// Index of the chosen node, or None if no node is eligible. Never picks a node with
    /// healthy == false.
    ///
    /// `key` is the routing key (the booking id from the path), used by consistent-hash only.
    /// `nodes` should have one entry per spec the balancer was built with; if it has fewer,
    /// the missing nodes count as unhealthy, and entries beyond the spec count are never
    /// picked.
    fn pick(&self, nodes: &[NodeState], key: Option<&str>) -> Option<usize>;

    /// Told after every attempt on the node at `index` (an index into the specs it was built
    /// with): how long the attempt took and whether the node answered (`ok`) or failed.
    /// Only latency-aware strategies (`peak-ewma`) use it; the default does nothing. An index
    /// beyond the specs is ignored.
    fn observe(&self, index: usize, elapsed: Duration, ok: bool) {
        let _ = (index, elapsed, ok);
    }
}

/// The entries of `nodes` a balancer built for `built` specs may choose from (see the module
/// rules: missing entries cannot be picked, extra entries are unknown).
pub(super) fn known(nodes: &[NodeState], built: usize) -> &[NodeState] {
    &nodes[..nodes.len().min(built)]
}

pub(super) fn healthy_count(nodes: &[NodeState]) -> usize {
    nodes.iter().filter(|node| node.healthy).count()
}

/// Index of the `rank`-th healthy node (counting from 0, in slice order).
pub(super) fn nth_healthy(nodes: &[NodeState], rank: usize) -> Option<usize> {
    nodes
        .iter()
        .enumerate()
        .filter(|(_, node)| node.healthy)
        .nth(rank)
        .map(|(index, _)| index)
}

/// A turn counter shared by concurrent picks: each pick takes a distinct ticket with one
/// `fetch_add`, so no two picks share a turn and none waits.
#[derive(Debug, Default)]
pub(super) struct Turns(AtomicU64);

impl Turns {
    pub(super) fn next_ticket(&self) -> u64 {
        // Relaxed: only the ticket's uniqueness matters, which atomicity alone guarantees.
        self.0.fetch_add(1, Ordering::Relaxed)
    }

    /// The next healthy node in rotation.
    ///
    /// The ticket chooses among the *healthy* nodes (ticket mod healthy count) rather than
    /// choosing a slot and walking forward past down nodes: walking would hand every turn of a
    /// down node to its successor and double that node's share.
    pub(super) fn next_healthy(&self, nodes: &[NodeState]) -> Option<usize> {
        let healthy = healthy_count(nodes);
        if healthy == 0 {
            return None;
        }
        let rank = self.next_ticket() % healthy as u64;
        nth_healthy(nodes, rank as usize)
    }
}

/// Helpers shared by the strategies' tests.
#[cfg(test)]
pub(super) mod testing {
    use super::{Balancer, NodeSpec, NodeState};

    /// Specs named `node-0`, `node-1`, ... with the given weights.
    pub fn weighted_specs(weights: &[u32]) -> Vec<NodeSpec> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| NodeSpec {
                name: format!("node-{i}"),
                weight,
            })
            .collect()
    }

    /// `count` specs of weight 1.
    pub fn specs(count: usize) -> Vec<NodeSpec> {
        weighted_specs(&vec![1; count])
    }

    /// Specs with the given names and weight 1.
    pub fn named_specs(names: &[&str]) -> Vec<NodeSpec> {
        names
            .iter()
            .map(|name| NodeSpec {
                name: (*name).to_owned(),
                weight: 1,
            })
            .collect()
    }

    /// `count` healthy, idle nodes.
    pub fn healthy(count: usize) -> Vec<NodeState> {
        vec![
            NodeState {
                healthy: true,
                in_flight: 0,
            };
            count
        ]
    }

    /// `count` idle nodes, of which those at `down` are unhealthy.
    pub fn with_down(count: usize, down: &[usize]) -> Vec<NodeState> {
        let mut nodes = healthy(count);
        for &index in down {
            nodes[index].healthy = false;
        }
        nodes
    }

    /// Healthy nodes with the given in-flight counts.
    pub fn loaded(in_flight: &[u64]) -> Vec<NodeState> {
        in_flight
            .iter()
            .map(|&in_flight| NodeState {
                healthy: true,
                in_flight,
            })
            .collect()
    }

    /// The first `picks` choices without a key, panicking if any pick finds no node.
    pub fn sequence(balancer: &dyn Balancer, nodes: &[NodeState], picks: usize) -> Vec<usize> {
        (0..picks)
            .map(|_| balancer.pick(nodes, None).expect("a node is eligible"))
            .collect()
    }

    /// How many of `picks` keyless choices went to each node.
    pub fn tally(balancer: &dyn Balancer, nodes: &[NodeState], picks: usize) -> Vec<usize> {
        let mut counts = vec![0; nodes.len()];
        for index in sequence(balancer, nodes, picks) {
            counts[index] += 1;
        }
        counts
    }

    /// Asserts each count is within `tolerance` (a fraction, e.g. 0.05 for ±5%) of its
    /// expected count.
    pub fn assert_within(counts: &[usize], expected: &[f64], tolerance: f64) {
        for (index, (&count, &want)) in counts.iter().zip(expected).enumerate() {
            let error = (count as f64 - want).abs();
            assert!(
                error <= want * tolerance,
                "node {index} got {count}, expected {want} ± {:.0}%: {counts:?}",
                tolerance * 100.0
            );
        }
    }
}
