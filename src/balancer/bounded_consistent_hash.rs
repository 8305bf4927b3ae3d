//! `bounded-consistent-hash`: consistent hashing with bounded loads.
//!
//! Plain consistent hashing sends a hot key, and every key that hashes near it, to one node
//! however busy that node is: with a skewed (zipf-like) key stream one node can carry most of
//! the load while the others idle. Consistent hashing with bounded loads (Mirrokni, Thorup and
//! Zadimoghaddam, 2018; HAProxy's `hash-balance-factor`, Envoy's ring-hash
//! `hash_balance_factor`) keeps the ring and its affinity but gives every node a capacity of
//! `ceil(F × (total in flight + 1) / healthy nodes)`: a key goes to the first node clockwise
//! from its point that is healthy and still has room. While no node is over its bound, every
//! key goes to its plain consistent-hash owner; only the overflow of a hot node moves, and it
//! moves to the next nodes on the ring, the same ones each time.
//!
//! This file owns the bound and the walk; the ring and its hash are [`ConsistentHash`]'s.

use super::consistent_hash::{ring_hash, ConsistentHash};
use super::strategy::{healthy_count, known, Balancer, NodeSpec, NodeState, Turns};

/// Routes each key to its ring owner unless that node is at its load bound, then to the next
/// node clockwise with room.
///
/// - The bound is `ceil(factor × (in_flight of the healthy ring nodes + 1) / their count)`;
///   a node may take the request if its `in_flight + 1` is within it. Some node always is (the
///   least loaded is at most the average), so a keyed pick never fails while a ring node is
///   healthy, and the walk visits each node at most once.
/// - The bound is the same for every node: weights set a node's share of the ring (its
///   affinity), not its capacity, as in HAProxy.
/// - Without a key, picks rotate over the healthy nodes as in round-robin, except that a node
///   at its bound is passed over for the least loaded one.
/// - When no ring node is healthy (only weight-0 nodes are), picks rotate as in
///   `consistent-hash`: availability over affinity.
#[derive(Debug)]
pub struct BoundedConsistentHash {
    ring: ConsistentHash,
    factor: f64,
    fallback: Turns,
}

impl BoundedConsistentHash {
    /// The CLI name.
    pub const NAME: &'static str = "bounded-consistent-hash";

    /// `--hash-balance-factor` when not given: 1.25, the value the paper's authors suggest
    /// and HAProxy's documentation uses as its example; a node may carry a quarter more than
    /// the average before keys spill over.
    pub const DEFAULT_FACTOR: f64 = 1.25;

    /// The ring of [`ConsistentHash::new`] for `specs`, with load bound `factor` (> 1; a
    /// smaller value is raised to just above 1 so that the bound always leaves room).
    pub fn new(specs: &[NodeSpec], factor: f64) -> Self {
        let factor = if factor.is_finite() && factor > 1.0 {
            factor
        } else {
            1.0 + f64::EPSILON
        };
        BoundedConsistentHash {
            ring: ConsistentHash::new(specs),
            factor,
            fallback: Turns::default(),
        }
    }

    /// The most requests a node may have in flight once this one is added, given `nodes`.
    /// `None` if no node on the ring is healthy.
    fn bound(&self, nodes: &[NodeState]) -> Option<u64> {
        let mut on_ring = vec![false; nodes.len()];
        for &(_, index) in &self.ring.ring {
            if let Some(slot) = on_ring.get_mut(index) {
                *slot = true;
            }
        }
        let (count, total) = nodes
            .iter()
            .zip(&on_ring)
            .filter(|(node, &on_ring)| node.healthy && on_ring)
            .fold((0u64, 0u64), |(count, total), (node, _)| {
                (count + 1, total.saturating_add(node.in_flight))
            });
        (count > 0).then(|| capacity(self.factor, total, count))
    }

    /// The first node clockwise from `hash` that is healthy and within `bound`.
    fn owner(&self, hash: u64, nodes: &[NodeState], bound: u64) -> Option<usize> {
        let ring = &self.ring.ring;
        let start = ring.partition_point(|&(point, _)| point < hash);
        let (before, from_start) = ring.split_at(start);
        let mut seen = vec![false; nodes.len()];
        let mut left = nodes.len();
        for &(_, index) in from_start.iter().chain(before) {
            let Some(node) = nodes.get(index) else {
                continue;
            };
            if seen[index] {
                continue;
            }
            seen[index] = true;
            if node.healthy && node.in_flight < bound {
                return Some(index);
            }
            left -= 1;
            if left == 0 {
                break;
            }
        }
        None
    }

    /// The healthy node with the fewest in flight (lowest index on ties).
    fn least_loaded(nodes: &[NodeState]) -> Option<usize> {
        nodes
            .iter()
            .enumerate()
            .filter(|(_, node)| node.healthy)
            .min_by_key(|(index, node)| (node.in_flight, *index))
            .map(|(index, _)| index)
    }
}

/// `ceil(factor × (total + 1) / count)`: the bound on `in_flight + 1` for each of `count`
/// nodes carrying `total` requests, counting the one being placed.
fn capacity(factor: f64, total: u64, count: u64) -> u64 {
    (factor * (total as f64 + 1.0) / count as f64).ceil() as u64
}

impl Balancer for BoundedConsistentHash {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn pick(&self, nodes: &[NodeState], key: Option<&str>) -> Option<usize> {
        let nodes = known(nodes, self.ring.node_count);
        if healthy_count(nodes) == 0 {
            return None;
        }
        let Some(bound) = self.bound(nodes) else {
            return self.fallback.next_healthy(nodes);
        };
        match key {
            Some(key) => self
                .owner(ring_hash(key), nodes, bound)
                .or_else(|| Self::least_loaded(nodes)),
            None => self
                .fallback
                .next_healthy(nodes)
                .filter(|&index| nodes[index].in_flight < bound)
                .or_else(|| Self::least_loaded(nodes)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::strategy::testing::{
        healthy, loaded, named_specs, sequence, specs, weighted_specs, with_down,
    };
    use super::*;
    use crate::rand::Rng;

    /// 1,000 booking ids, fixed by seed.
    fn keys(count: usize) -> Vec<String> {
        let mut rng = Rng::new(77);
        (0..count).map(|_| rng.uuid_v4()).collect()
    }

    /// Draws indices into `0..n` with probability proportional to `1 / (rank + 1)^s`.
    struct Zipf {
        cumulative: Vec<f64>,
    }

    impl Zipf {
        fn new(n: usize, s: f64) -> Zipf {
            let mut total = 0.0;
            let cumulative = (0..n)
                .map(|rank| {
                    total += 1.0 / ((rank + 1) as f64).powf(s);
                    total
                })
                .collect::<Vec<_>>();
            let cumulative = cumulative.iter().map(|c| c / total).collect();
            Zipf { cumulative }
        }

        fn draw(&self, rng: &mut Rng) -> usize {
            let u = rng.next_f64();
            self.cumulative
                .partition_point(|&c| c < u)
                .min(self.cumulative.len() - 1)
        }
    }

    #[test]
    fn capacity_is_the_ceiling_of_factor_times_average_with_this_request() {
        assert_eq!(capacity(1.25, 0, 3), 1);
        assert_eq!(capacity(1.25, 10, 3), 5); // 1.25 × 11 / 3 = 4.58
        assert_eq!(capacity(1.25, 11, 3), 5); // exactly 5.0
        assert_eq!(capacity(2.0, 5, 2), 6);
    }

    #[test]
    fn idle_nodes_give_every_key_its_plain_consistent_hash_owner() {
        let specs = specs(5);
        let plain = ConsistentHash::new(&specs);
        let bounded = BoundedConsistentHash::new(&specs, 1.25);
        for key in keys(1_000) {
            assert_eq!(
                bounded.pick(&healthy(5), Some(&key)),
                plain.pick(&healthy(5), Some(&key))
            );
        }
    }

    #[test]
    fn exact_picks_for_fixed_names_and_keys() {
        let balancer = BoundedConsistentHash::new(&named_specs(&["a", "b", "c"]), 1.25);
        let picks: Vec<_> = ["booking-1", "booking-2", "booking-3", "booking-4"]
            .iter()
            .map(|key| balancer.pick(&healthy(3), Some(key)))
            .collect();
        let plain = ConsistentHash::new(&named_specs(&["a", "b", "c"]));
        let expected: Vec<_> = ["booking-1", "booking-2", "booking-3", "booking-4"]
            .iter()
            .map(|key| plain.pick(&healthy(3), Some(key)))
            .collect();
        assert_eq!(picks, expected);
        assert_eq!(picks, [0, 2, 0, 2].map(Some));
        // Node a full (10 in flight, bound 5): its keys go on clockwise, the others stay.
        let full_a = loaded(&[10, 0, 0]);
        let picks: Vec<_> = ["booking-1", "booking-2", "booking-3", "booking-4"]
            .iter()
            .map(|key| balancer.pick(&full_a, Some(key)))
            .collect();
        assert_eq!(picks, [1, 2, 1, 2].map(Some));
    }

    #[test]
    fn a_full_owner_passes_the_key_to_the_next_node_clockwise() {
        // The next node clockwise is where plain consistent hashing sends the key when the
        // owner is down, so that answers what the bounded walk must pick.
        let specs = specs(3);
        let plain = ConsistentHash::new(&specs);
        let bounded = BoundedConsistentHash::new(&specs, 1.25);
        for key in keys(200) {
            let owner = plain.pick(&healthy(3), Some(&key)).expect("healthy");
            let next = plain
                .pick(&with_down(3, &[owner]), Some(&key))
                .expect("two healthy");
            let mut nodes = healthy(3);
            // 10 in flight in all, bound ceil(1.25 × 11 / 3) = 5: the owner with 10 is full.
            nodes[owner].in_flight = 10;
            assert_eq!(bounded.pick(&nodes, Some(&key)), Some(next), "{key}");
            // With 4 in flight the owner still has room for a 5th.
            nodes[owner].in_flight = 4;
            nodes[next].in_flight = 6;
            assert_eq!(bounded.pick(&nodes, Some(&key)), Some(owner), "{key}");
        }
    }

    #[test]
    fn the_bound_holds_over_ten_thousand_zipf_picks_with_requests_in_flight() {
        let factor = 1.25;
        let count = 5;
        let balancer = BoundedConsistentHash::new(&specs(count), factor);
        let keys = keys(1_000);
        let zipf = Zipf::new(keys.len(), 1.1);
        let mut rng = Rng::new(3);
        let mut nodes = healthy(count);
        // Requests in flight, by node; up to 60 stay open, one finishing at random per pick.
        let mut open: Vec<usize> = Vec::new();
        let mut spilled = 0;
        let plain = ConsistentHash::new(&specs(count));
        for _ in 0..10_000 {
            let key = &keys[zipf.draw(&mut rng)];
            let total: u64 = nodes.iter().map(|n| n.in_flight).sum();
            let index = balancer.pick(&nodes, Some(key)).expect("all healthy");
            if Some(index) != plain.pick(&nodes, Some(key)) {
                spilled += 1;
            }
            nodes[index].in_flight += 1;
            open.push(index);
            let average = (total + 1) as f64 / count as f64;
            assert!(
                nodes[index].in_flight as f64 <= factor * average + 1.0,
                "{} in flight on node {index}, average {average}",
                nodes[index].in_flight
            );
            if open.len() > 60 {
                let done = open.swap_remove(rng.below(open.len() as u64) as usize);
                nodes[done].in_flight -= 1;
            }
        }
        // The zipf head is hot enough that the bound has to act.
        assert!(spilled > 100, "only {spilled} picks spilled");
    }

    #[test]
    fn never_picks_an_unhealthy_node_even_when_the_others_are_full() {
        let balancer = BoundedConsistentHash::new(&specs(3), 1.25);
        let mut nodes = with_down(3, &[1]);
        nodes[0].in_flight = 50;
        nodes[2].in_flight = 50;
        for key in keys(100) {
            assert!(matches!(balancer.pick(&nodes, Some(&key)), Some(0 | 2)));
        }
    }

    #[test]
    fn keyless_picks_rotate_but_skip_a_full_node() {
        let balancer = BoundedConsistentHash::new(&specs(3), 1.25);
        assert_eq!(sequence(&balancer, &healthy(3), 6), [0, 1, 2, 0, 1, 2]);
        let mut nodes = healthy(3);
        nodes[0].in_flight = 9; // bound ceil(1.25 × 10 / 3) = 5
        nodes[2].in_flight = 1;
        assert_eq!(sequence(&balancer, &nodes, 3), [1, 1, 2]);
    }

    #[test]
    fn weight_zero_nodes_serve_only_when_no_ring_node_is_healthy() {
        let balancer = BoundedConsistentHash::new(&weighted_specs(&[1, 0, 0]), 1.25);
        assert_eq!(balancer.pick(&healthy(3), Some("k")), Some(0));
        let picks: Vec<_> = (0..4)
            .map(|i| balancer.pick(&with_down(3, &[0]), Some(&format!("key-{i}"))))
            .collect();
        assert_eq!(picks, [1, 2, 1, 2].map(Some));
    }

    #[test]
    fn a_factor_of_one_or_less_still_leaves_room() {
        let balancer = BoundedConsistentHash::new(&specs(2), 0.5);
        let mut nodes = healthy(2);
        for key in keys(100) {
            let index = balancer.pick(&nodes, Some(&key)).expect("healthy");
            nodes[index].in_flight += 1;
        }
        assert_eq!(nodes[0].in_flight + nodes[1].in_flight, 100);
        assert!(nodes[0].in_flight.abs_diff(nodes[1].in_flight) <= 2);
    }
}
