//! `consistent-hash`: the same booking always goes to the same node.
//!
//! Use it when nodes keep per-key state (caches, sessions): a key keeps its node as long as
//! that node is up, and when the node set changes only the keys that must move do. This file
//! owns the hash function and the Ketama-style ring built from the node specs.
//!
//! The ring holds 160 points per unit of weight per node, each the hash of `"{name}#{i}"`.
//! A key belongs to the first point at or after its own hash, wrapping past the top. Because
//! points derive from node *names*, not positions, adding a node moves only the keys that now
//! fall to its points, and removing one moves only its own keys. Many points per node smooth
//! out the share each gets: with 160 points, a node's share is typically within 10–15% of
//! its fair share.

use super::strategy::{healthy_count, known, Balancer, NodeSpec, NodeState, Turns};
use std::fmt::Write;

/// Ring points per unit of weight, as in Ketama.
const POINTS_PER_WEIGHT: u64 = 160;

/// FNV-1a (64-bit) over `bytes`.
fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// MurmurHash3's 64-bit finalizer: every input bit flips each output bit with probability
/// about one half.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The ring's hash for points and keys. FNV-1a alone leaves inputs that differ only in their
/// last bytes (`node#1`, `node#2`) close together and clustered on the ring; the finalizer
/// scatters them.
pub(super) fn ring_hash(text: &str) -> u64 {
    fmix64(fnv1a64(text.as_bytes()))
}

/// Routes each key to its owner on a hash ring, walking clockwise past unhealthy nodes.
///
/// - A key whose owner is unhealthy goes to the next healthy node clockwise; the keys of
///   healthy nodes do not move.
/// - Without a key, or when no node on the ring is healthy (say, only weight-0 nodes are),
///   picks rotate over the healthy nodes as in round-robin: availability over affinity.
/// - Weight 0 gives a node no points; if every weight is 0 the ring is empty and all picks
///   rotate. Ring size is 160 × the sum of the weights, so weights are meant to be small.
#[derive(Debug)]
pub struct ConsistentHash {
    /// `(point, node index)`, sorted by point (then index, so equal points order stably).
    pub(super) ring: Vec<(u64, usize)>,
    pub(super) node_count: usize,
    fallback: Turns,
}

impl ConsistentHash {
    /// The CLI name.
    pub const NAME: &'static str = "consistent-hash";

    /// Builds the ring for `specs`, giving each node 160 points per unit of weight.
    pub fn new(specs: &[NodeSpec]) -> Self {
        let total_weight: u64 = specs.iter().map(|spec| u64::from(spec.weight)).sum();
        let mut ring = Vec::with_capacity((total_weight * POINTS_PER_WEIGHT) as usize);
        let mut label = String::new();
        for (index, spec) in specs.iter().enumerate() {
            for point in 0..u64::from(spec.weight) * POINTS_PER_WEIGHT {
                label.clear();
                write!(label, "{}#{point}", spec.name).expect("writing to a String cannot fail");
                ring.push((ring_hash(&label), index));
            }
        }
        ring.sort_unstable();
        ConsistentHash {
            ring,
            node_count: specs.len(),
            fallback: Turns::default(),
        }
    }

    /// The first healthy node at or after `hash` going clockwise, if any node on the ring is
    /// healthy. Visits each ring point at most once.
    fn owner(&self, hash: u64, nodes: &[NodeState]) -> Option<usize> {
        let start = self.ring.partition_point(|&(point, _)| point < hash);
        let (before, from_start) = self.ring.split_at(start);
        from_start
            .iter()
            .chain(before)
            .map(|&(_, index)| index)
            .find(|&index| nodes.get(index).is_some_and(|node| node.healthy))
    }
}

impl Balancer for ConsistentHash {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn pick(&self, nodes: &[NodeState], key: Option<&str>) -> Option<usize> {
        let nodes = known(nodes, self.node_count);
        // Without this check a keyed pick with every node down would walk the whole ring.
        if healthy_count(nodes) == 0 {
            return None;
        }
        key.and_then(|key| self.owner(ring_hash(key), nodes))
            .or_else(|| self.fallback.next_healthy(nodes))
    }
}

#[cfg(test)]
mod tests {
    use super::super::strategy::testing::{
        assert_within, healthy, named_specs, sequence, specs, weighted_specs, with_down,
    };
    use super::*;
    use crate::rand::Rng;

    /// 10,000 booking ids, fixed by seed.
    fn keys() -> Vec<String> {
        let mut rng = Rng::new(77);
        (0..10_000).map(|_| rng.uuid_v4()).collect()
    }

    /// The name of the node each key routes to.
    fn owners(specs: &[NodeSpec], nodes: &[NodeState], keys: &[String]) -> Vec<String> {
        let balancer = ConsistentHash::new(specs);
        keys.iter()
            .map(|key| {
                let index = balancer.pick(nodes, Some(key)).expect("a node is healthy");
                specs[index].name.clone()
            })
            .collect()
    }

    fn share_of(owners: &[String], name: &str) -> usize {
        owners.iter().filter(|owner| *owner == name).count()
    }

    #[test]
    fn hash_matches_reference_vectors() {
        // FNV-1a 64 test vectors from the FNV reference (isthe.com/chongo/tech/comp/fnv).
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(fmix64(0), 0);
        assert_ne!(ring_hash("node#1") >> 48, ring_hash("node#2") >> 48);
    }

    #[test]
    fn ring_has_160_points_per_unit_of_weight() {
        assert_eq!(
            ConsistentHash::new(&weighted_specs(&[1, 2, 0])).ring.len(),
            480
        );
    }

    #[test]
    fn same_key_always_goes_to_the_same_node() {
        let balancer = ConsistentHash::new(&specs(5));
        for key in keys().iter().take(100) {
            let first = balancer.pick(&healthy(5), Some(key));
            assert!((0..10).all(|_| balancer.pick(&healthy(5), Some(key)) == first));
        }
    }

    #[test]
    fn independently_built_rings_agree() {
        let specs = specs(5);
        assert_eq!(
            owners(&specs, &healthy(5), &keys()),
            owners(&specs, &healthy(5), &keys())
        );
    }

    #[test]
    fn spreads_ten_thousand_keys_evenly() {
        // Tolerance ±20% of the fair 3,333.3: 160 points per node leave each node's share a few
        // percent uneven, and the keys' own randomness adds ~1.4%.
        let specs = specs(3);
        let owners = owners(&specs, &healthy(3), &keys());
        let counts: Vec<usize> = specs.iter().map(|s| share_of(&owners, &s.name)).collect();
        assert_within(&counts, &[10_000.0 / 3.0; 3], 0.20);
    }

    #[test]
    fn ring_share_follows_weight() {
        // Tolerance ±20% of the expected 5,000 / 2,500 / 2,500.
        let specs = weighted_specs(&[2, 1, 1]);
        let owners = owners(&specs, &healthy(3), &keys());
        let counts: Vec<usize> = specs.iter().map(|s| share_of(&owners, &s.name)).collect();
        assert_within(&counts, &[5_000.0, 2_500.0, 2_500.0], 0.20);
    }

    #[test]
    fn adding_a_fourth_node_moves_about_a_quarter_of_keys_all_to_it() {
        let keys = keys();
        let before = owners(&named_specs(&["a", "b", "c"]), &healthy(3), &keys);
        let after = owners(&named_specs(&["a", "b", "c", "d"]), &healthy(4), &keys);
        let moved: Vec<usize> = (0..keys.len()).filter(|&i| before[i] != after[i]).collect();
        assert!(
            (1_500..=3_500).contains(&moved.len()),
            "{} of 10,000 keys moved",
            moved.len()
        );
        assert!(
            moved.iter().all(|&i| after[i] == "d"),
            "a key moved between old nodes"
        );
    }

    #[test]
    fn removing_a_node_moves_only_its_keys() {
        let keys = keys();
        let before = owners(&named_specs(&["a", "b", "c", "d"]), &healthy(4), &keys);
        let after = owners(&named_specs(&["a", "b", "d"]), &healthy(3), &keys);
        for i in 0..keys.len() {
            if before[i] == "c" {
                assert_ne!(after[i], "c");
            } else {
                assert_eq!(after[i], before[i], "key {} moved", keys[i]);
            }
        }
    }

    #[test]
    fn marking_a_node_unhealthy_moves_only_its_keys() {
        let keys = keys();
        let specs = specs(4);
        let before = owners(&specs, &healthy(4), &keys);
        let after = owners(&specs, &with_down(4, &[2]), &keys);
        for i in 0..keys.len() {
            if before[i] == "node-2" {
                assert_ne!(after[i], "node-2");
            } else {
                assert_eq!(after[i], before[i], "key {} moved", keys[i]);
            }
        }
    }

    #[test]
    fn keyless_picks_rotate_over_healthy_nodes() {
        let balancer = ConsistentHash::new(&specs(3));
        assert_eq!(sequence(&balancer, &healthy(3), 6), [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn weight_zero_nodes_get_no_keys_while_weighted_nodes_are_healthy() {
        let specs = weighted_specs(&[1, 0, 1]);
        let owners = owners(&specs, &healthy(3), &keys());
        assert_eq!(share_of(&owners, "node-1"), 0);
    }

    #[test]
    fn weight_zero_nodes_serve_when_no_ring_node_is_healthy() {
        let balancer = ConsistentHash::new(&weighted_specs(&[1, 0, 0]));
        let picks: Vec<_> = (0..4)
            .map(|i| balancer.pick(&with_down(3, &[0]), Some(&format!("key-{i}"))))
            .collect();
        assert_eq!(picks, [1, 2, 1, 2].map(Some));
    }

    #[test]
    fn all_zero_weights_rotate_without_panicking() {
        let balancer = ConsistentHash::new(&weighted_specs(&[0, 0, 0]));
        assert!(balancer.ring.is_empty());
        let picks: Vec<_> = (0..3)
            .map(|_| balancer.pick(&healthy(3), Some("k")))
            .collect();
        assert_eq!(picks, [0, 1, 2].map(Some));
        assert_eq!(balancer.pick(&with_down(3, &[0, 1, 2]), Some("k")), None);
    }

    #[test]
    fn keys_hashing_past_the_last_point_wrap_to_the_first() {
        let balancer = ConsistentHash::new(&specs(3));
        let (_, first_owner) = balancer.ring[0];
        assert_eq!(balancer.owner(u64::MAX, &healthy(3)), Some(first_owner));
        assert_eq!(balancer.owner(0, &healthy(3)), Some(first_owner));
    }
}
