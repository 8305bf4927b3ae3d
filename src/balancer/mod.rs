//! Load balancing: which node gets the next request.
//!
//! The relay owns sockets, health checks and retries; a balancer owns only the *choice*. Each
//! strategy implements [`Balancer`], and [`by_name`] builds one from the name given on the
//! command line and the node set ([`NodeSpec`]s, in the relay's order). For every request the
//! relay passes one [`NodeState`] per node, in that same order, and the balancer answers with
//! an index into the slice.
//!
//! **One table.** [`STRATEGIES`] lists every strategy once: its name, a line of help and how to
//! build it. `--balancer` and `PUT /_relay/balancer` accept its names ([`NAMES`]), `--help`
//! prints its help lines, and the dashboard's list is rendered from it. Adding a strategy is
//! one new file here (a type implementing [`Balancer`], with its `mod` line) and one row in
//! [`STRATEGIES`]; nothing else names the strategies (but the table below, for readers).
//!
//! | name                | chooses                               | weights    | `in_flight` | `key`   |
//! |---------------------|---------------------------------------|------------|-------------|---------|
//! | `round-robin`       | healthy nodes in turn                 | ignored    | ignored     | ignored |
//! | `random`            | uniformly among healthy nodes         | ignored    | ignored     | ignored |
//! | `weighted`          | smooth weighted round-robin, as nginx | share      | ignored     | ignored |
//! | `least-connections` | fewest requests in flight             | ignored    | used        | ignored |
//! | `consistent-hash`   | the key's owner on a hash ring        | ring share | ignored     | used    |
//! | `p2c`               | the less loaded of two random nodes   | ignored    | used        | ignored |
//! | `bounded-consistent-hash` | the key's owner unless over its load bound | ring share | used | used |
//! | `peak-ewma`         | lowest latency × load of two random   | ignored    | used        | ignored |
//!
//! The trait and what a strategy sees of the nodes live in `strategy.rs`, which every
//! strategy file imports and which imports none of them; this file holds the table
//! ([`STRATEGIES`]) and the [`InFlight`] counter.
//!
//! Rules every strategy follows:
//!
//! - **Never an unhealthy node.** A node with `healthy == false` is never picked. On a retry
//!   the relay clears `healthy` on nodes already tried, so "unhealthy" also means "excluded".
//! - **`None` means nobody is eligible**: no nodes, or none healthy.
//! - **A slice of the wrong length does not panic.** A balancer considers only the first
//!   `min(nodes.len(), specs.len())` entries: an entry missing from the slice counts as
//!   unhealthy, and an entry beyond the specs it was built with is unknown to it and never
//!   picked. The relay rebuilds the balancer whenever the node set changes, so this only
//!   covers the moment in between.
//! - **No sockets, clock or globals.** A balancer's choices depend only on its construction,
//!   its seed, the slices it has been shown, the outcomes it has been told of
//!   ([`Balancer::observe`]) and the order of picks, so tests can assert exact sequences.
//!   `peak-ewma`, the one strategy that needs time, reads it through a [`Clock`] it is built
//!   with, which tests replace by a fake one. `pick` runs concurrently through `&self`; state lives in atomics, or in a
//!   `Mutex` where one pick must update several values together (`weighted`).
//!
//! Load is read from [`NodeState::in_flight`], which the relay fills from per-node counters
//! kept by [`InFlight`] guards. The counter belongs to the node, not the balancer, so the
//! count stays right while a balancer is rebuilt or the strategy switched mid-request.

mod bounded_consistent_hash;
mod consistent_hash;
mod least_connections;
mod p2c;
mod peak_ewma;
mod random;
mod round_robin;
pub mod slow_start;
mod strategy;
mod weighted;

pub use bounded_consistent_hash::BoundedConsistentHash;
pub use consistent_hash::ConsistentHash;
pub use least_connections::LeastConnections;
pub use p2c::PowerOfTwoChoices;
pub use peak_ewma::{Clock, PeakEwma, SystemClock};
pub use random::Random;
pub use round_robin::RoundRobin;
pub use strategy::{Balancer, NodeSpec, NodeState};
pub use weighted::SmoothWeighted;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Tuning of the strategies that have any, from the command line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Options {
    /// `bounded-consistent-hash`: no node takes more than this × the average load
    /// (`--hash-balance-factor`, > 1).
    pub hash_balance_factor: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            hash_balance_factor: BoundedConsistentHash::DEFAULT_FACTOR,
        }
    }
}

/// Largest weight accepted: the consistent-hash ring holds 160 points per unit
/// of weight, so weights beyond this would only cost memory.
pub const MAX_WEIGHT: u32 = 1000;

/// One strategy: its CLI name, one line saying what it picks, and how to build it for a node
/// set (`seed` drives the ones that draw random numbers; `options` tunes the ones with any).
pub struct Strategy {
    pub name: &'static str,
    pub help: &'static str,
    pub build: fn(specs: &[NodeSpec], seed: u64, options: &Options) -> Box<dyn Balancer>,
}

/// Every strategy, in the order `--help` and the dashboard list them. The command line's
/// `--balancer`, the admin API's `PUT /_relay/balancer`, `--help` and the dashboard's list
/// all read this table: a new strategy is one file and one row here.
pub const STRATEGIES: &[Strategy] = &[
    Strategy {
        name: RoundRobin::NAME,
        help: "healthy nodes in turn",
        build: |specs, _, _| Box::new(RoundRobin::new(specs)),
    },
    Strategy {
        name: Random::NAME,
        help: "uniformly among healthy nodes",
        build: |specs, seed, _| Box::new(Random::new(specs, seed)),
    },
    Strategy {
        name: SmoothWeighted::NAME,
        help: "smooth weighted round-robin (--weights), as nginx",
        build: |specs, _, _| Box::new(SmoothWeighted::new(specs)),
    },
    Strategy {
        name: LeastConnections::NAME,
        help: "fewest requests in flight",
        build: |specs, _, _| Box::new(LeastConnections::new(specs)),
    },
    Strategy {
        name: ConsistentHash::NAME,
        help: "the booking id's owner on a hash ring",
        build: |specs, _, _| Box::new(ConsistentHash::new(specs)),
    },
    Strategy {
        name: PowerOfTwoChoices::NAME,
        help: "the less loaded of two random nodes",
        build: |specs, seed, _| Box::new(PowerOfTwoChoices::new(specs, seed)),
    },
    Strategy {
        name: BoundedConsistentHash::NAME,
        help: "the id's ring owner unless over its load bound",
        build: |specs, _, options| {
            Box::new(BoundedConsistentHash::new(
                specs,
                options.hash_balance_factor,
            ))
        },
    },
    Strategy {
        name: PeakEwma::NAME,
        help: "lowest latency x load of two random nodes",
        build: |specs, seed, _| Box::new(PeakEwma::new(specs, seed, Arc::new(SystemClock))),
    },
];

/// Every strategy's CLI name, in [`STRATEGIES`]' order.
pub const NAMES: [&str; STRATEGIES.len()] = names();

const fn names<const N: usize>() -> [&'static str; N] {
    let mut names = [""; N];
    let mut i = 0;
    while i < N {
        names[i] = STRATEGIES[i].name;
        i += 1;
    }
    names
}

/// The error for a strategy name that is not one of [`NAMES`]; holds the name given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownBalancer(pub String);

impl fmt::Display for UnknownBalancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown balancer '{}' (expected one of: {})",
            self.0,
            NAMES.join(", ")
        )
    }
}

impl std::error::Error for UnknownBalancer {}

/// Builds the strategy called `name` for `specs`. `seed` drives the strategies that draw
/// random numbers (`random`, `p2c`), so a fixed seed replays the same choices; the others
/// ignore it.
///
/// # Errors
/// [`UnknownBalancer`] if `name` is not one of [`NAMES`] (matching is exact and
/// case-sensitive); its message lists the valid names, ready to show on the command line.
pub fn by_name(
    name: &str,
    specs: &[NodeSpec],
    seed: u64,
) -> Result<Box<dyn Balancer>, UnknownBalancer> {
    build(name, specs, seed, &Options::default())
}

/// [`by_name`] with the strategies' tuning given (`--hash-balance-factor`).
///
/// # Errors
/// [`UnknownBalancer`] as for [`by_name`].
pub fn build(
    name: &str,
    specs: &[NodeSpec],
    seed: u64,
    options: &Options,
) -> Result<Box<dyn Balancer>, UnknownBalancer> {
    let strategy = STRATEGIES
        .iter()
        .find(|strategy| strategy.name == name)
        .ok_or_else(|| UnknownBalancer(name.to_owned()))?;
    Ok((strategy.build)(specs, seed, options))
}

/// Counts a request in flight on a node for as long as it lives (decrements on Drop), so counts
/// stay right across a change of node list or strategy: the counter lives with the node, not
/// the balancer.
///
/// Create it when the request is handed to the node and keep it until the response is done;
/// it may be moved to whichever thread finishes the request.
#[derive(Debug)]
#[must_use = "the request counts as in flight only while the guard is alive"]
pub struct InFlight {
    counter: Arc<AtomicU64>,
}

impl InFlight {
    /// Adds one to `counter` until the returned guard is dropped.
    pub fn enter(counter: &Arc<AtomicU64>) -> InFlight {
        // Relaxed: the count is a load hint read by balancers, and orders no other memory.
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight {
            counter: Arc::clone(counter),
        }
    }
}

impl InFlight {
    /// Adds one to `counter` if it is below `cap`, atomically, so that racing callers never
    /// take it past the cap; `None` when it is full.
    pub fn enter_below(counter: &Arc<AtomicU64>, cap: u64) -> Option<InFlight> {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()?;
        Some(InFlight {
            counter: Arc::clone(counter),
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::strategy::testing::{healthy, specs, with_down};
    use super::strategy::Turns;
    use super::*;
    use std::thread;

    fn every_strategy(specs: &[NodeSpec]) -> Vec<Box<dyn Balancer>> {
        NAMES
            .iter()
            .map(|name| by_name(name, specs, 7).expect("every listed name builds"))
            .collect()
    }

    /// Alternates keyless and keyed picks so consistent-hash exercises both paths.
    fn key_for(i: usize) -> Option<String> {
        (i % 2 == 1).then(|| format!("booking-{i}"))
    }

    #[test]
    fn by_name_builds_every_listed_strategy_under_its_own_name() {
        for name in NAMES {
            let balancer = by_name(name, &specs(3), 1).expect("listed name");
            assert_eq!(balancer.name(), name);
        }
    }

    #[test]
    fn by_name_rejects_unknown_names_listing_the_valid_ones() {
        let error = by_name("fastest", &specs(3), 1)
            .err()
            .expect("unknown name");
        assert_eq!(error, UnknownBalancer("fastest".to_owned()));
        assert_eq!(
            error.to_string(),
            "unknown balancer 'fastest' (expected one of: round-robin, random, weighted, \
             least-connections, consistent-hash, p2c, bounded-consistent-hash, peak-ewma)"
        );
        assert!(
            by_name("Round-Robin", &specs(3), 1).is_err(),
            "names are exact"
        );
        assert!(by_name("", &specs(3), 1).is_err());
    }

    #[test]
    fn no_strategy_ever_picks_an_unhealthy_node() {
        let nodes = with_down(3, &[1]);
        for balancer in every_strategy(&specs(3)) {
            for i in 0..10_000 {
                let picked = balancer.pick(&nodes, key_for(i).as_deref());
                assert!(
                    matches!(picked, Some(0 | 2)),
                    "{} picked {picked:?}",
                    balancer.name()
                );
            }
        }
    }

    #[test]
    fn every_strategy_returns_none_when_no_node_is_healthy() {
        let nodes = with_down(3, &[0, 1, 2]);
        for balancer in every_strategy(&specs(3)) {
            for i in 0..100 {
                assert_eq!(
                    balancer.pick(&nodes, key_for(i).as_deref()),
                    None,
                    "{}",
                    balancer.name()
                );
            }
        }
    }

    #[test]
    fn every_strategy_returns_none_for_an_empty_node_list() {
        for built_for in [0, 3] {
            for balancer in every_strategy(&specs(built_for)) {
                assert_eq!(balancer.pick(&[], None), None, "{}", balancer.name());
                assert_eq!(balancer.pick(&[], Some("k")), None, "{}", balancer.name());
            }
        }
        // Built for no nodes, a balancer knows none to pick, whatever it is shown.
        for balancer in every_strategy(&specs(0)) {
            assert_eq!(
                balancer.pick(&healthy(3), Some("k")),
                None,
                "{}",
                balancer.name()
            );
        }
    }

    #[test]
    fn a_shorter_node_list_counts_missing_nodes_as_unhealthy() {
        for balancer in every_strategy(&specs(4)) {
            for i in 0..1000 {
                let picked = balancer.pick(&healthy(2), key_for(i).as_deref());
                assert!(
                    matches!(picked, Some(0 | 1)),
                    "{} picked {picked:?}",
                    balancer.name()
                );
            }
        }
    }

    #[test]
    fn a_longer_node_list_never_yields_an_unknown_node() {
        for balancer in every_strategy(&specs(2)) {
            for i in 0..1000 {
                let picked = balancer.pick(&healthy(5), key_for(i).as_deref());
                assert!(
                    matches!(picked, Some(0 | 1)),
                    "{} picked {picked:?}",
                    balancer.name()
                );
            }
            assert_eq!(
                balancer.pick(&with_down(5, &[0, 1]), Some("k")),
                None,
                "{}: only unknown nodes are healthy",
                balancer.name()
            );
        }
    }

    #[test]
    fn balancers_can_be_shared_across_threads() {
        let nodes = healthy(3);
        for balancer in every_strategy(&specs(3)) {
            let balancer: Arc<dyn Balancer> = Arc::from(balancer);
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let balancer = Arc::clone(&balancer);
                    let nodes = nodes.clone();
                    thread::spawn(move || {
                        (0..1000).all(|i| balancer.pick(&nodes, key_for(i).as_deref()).is_some())
                    })
                })
                .collect();
            for handle in handles {
                assert!(handle.join().expect("picking thread panicked"));
            }
        }
    }

    #[test]
    fn in_flight_guard_counts_while_alive() {
        let counter = Arc::new(AtomicU64::new(0));
        let first = InFlight::enter(&counter);
        let second = InFlight::enter(&counter);
        assert_eq!(counter.load(Ordering::Relaxed), 2);
        drop(first);
        assert_eq!(counter.load(Ordering::Relaxed), 1);
        drop(second);
        assert_eq!(counter.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn in_flight_guard_decrements_on_the_thread_that_drops_it() {
        let counter = Arc::new(AtomicU64::new(0));
        let guard = InFlight::enter(&counter);
        thread::spawn(move || drop(guard))
            .join()
            .expect("dropping thread panicked");
        assert_eq!(counter.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn in_flight_guards_balance_under_concurrency() {
        let counter = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let counter = Arc::clone(&counter);
                thread::spawn(move || {
                    for _ in 0..1000 {
                        let _guard = InFlight::enter(&counter);
                        assert!(counter.load(Ordering::Relaxed) >= 1);
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().expect("counting thread panicked");
        }
        assert_eq!(counter.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn in_flight_count_outlives_the_balancer() {
        // The counter belongs to the node: replacing the strategy mid-request keeps the count.
        let counter = Arc::new(AtomicU64::new(0));
        let balancer = by_name("least-connections", &specs(1), 0).expect("listed name");
        let guard = InFlight::enter(&counter);
        drop(balancer);
        let _replacement = by_name("p2c", &specs(1), 0).expect("listed name");
        assert_eq!(counter.load(Ordering::Relaxed), 1);
        drop(guard);
        assert_eq!(counter.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn turns_rotate_evenly_over_healthy_nodes_only() {
        let turns = Turns::default();
        let nodes = with_down(4, &[1]);
        let picks: Vec<_> = (0..6).map(|_| turns.next_healthy(&nodes)).collect();
        assert_eq!(picks, [0, 2, 3, 0, 2, 3].map(Some));
    }
}
