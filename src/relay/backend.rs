//! A node as the relay sees it: where it is, whether it is up, what it has
//! been sent, its connection pool; and the [`Topology`], the set of nodes plus
//! the balancer built for exactly that set.
//!
//! A topology never changes: adding, removing or re-weighting nodes, or
//! switching strategy, builds a new one and swaps it in. Counters live in the
//! [`Backend`]s, which the old and new topologies share, so `in_flight` and
//! the request counts survive every swap.

use super::health::{CheckReport, Health, HealthState};
use super::outlier::Outlier;
use super::pool::Pool;
use super::spawned::SpawnedNode;
use crate::balancer::slow_start::SlowStart;
use crate::balancer::{self, Balancer, NodeSpec, NodeState, UnknownBalancer};
use crate::rand::AtomicRng;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How the relay runs a node.
pub enum Kind {
    /// A node the relay started (a thread of this process), which it can
    /// kill, revive and make sick.
    Spawned(Box<dyn SpawnedNode>),
    /// Any HTTP server given with `--backend`.
    External,
}

/// One node or backend.
pub struct Backend {
    name: RwLock<String>,
    pub addr: SocketAddr,
    pub kind: Kind,
    pub health: Health,
    /// Its streak of 5xx answers and ejections ([`super::outlier`]).
    pub outlier: Outlier,
    /// Requests being served right now (see [`balancer::InFlight`]).
    pub in_flight: Arc<AtomicU64>,
    /// Client requests forwarded here (health checks not counted).
    pub requests: AtomicU64,
    /// Forwarded requests that failed here (connect, reset, timeout, bad answer).
    pub failures: AtomicU64,
    /// Requests that failed here and were then sent to another node.
    pub retries: AtomicU64,
    /// Answers the clients got for requests forwarded here, by status class
    /// (2xx, 3xx, 4xx, 5xx); the relay's own 502/504 for this node count as 5xx.
    responses: [AtomicU64; 4],
    /// How long this node took to answer, from the attempt's start to the
    /// answer's end.
    pub latency: Histogram,
    pub pool: Pool,
    /// An external backend's cache figures from its `/stats`, when known.
    remote_cache: Mutex<Option<(u64, u64)>>,
    /// Named by its own health answer (or a spawned node): the name is kept.
    named: AtomicBool,
    /// Removed from the relay: checkers stop, no new requests.
    retired: AtomicBool,
    /// The `--slow-start` ramp since the node last came up.
    slow_start: Mutex<SlowStart>,
}

impl Backend {
    pub fn new(name: String, addr: SocketAddr, kind: Kind, initial: HealthState) -> Backend {
        let spawned = matches!(kind, Kind::Spawned(_));
        Backend {
            name: RwLock::new(name),
            addr,
            kind,
            health: Health::new(initial),
            outlier: Outlier::default(),
            in_flight: Arc::new(AtomicU64::new(0)),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            responses: Default::default(),
            latency: Histogram::default(),
            pool: Pool::new(),
            remote_cache: Mutex::new(None),
            named: AtomicBool::new(spawned),
            retired: AtomicBool::new(false),
            slow_start: Mutex::new(SlowStart::default()),
        }
    }

    pub fn name(&self) -> String {
        self.name.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn is_spawned(&self) -> bool {
        matches!(self.kind, Kind::Spawned(_))
    }

    /// What the relay can do to it, if it started it; `None` for an external backend.
    pub fn spawned(&self) -> Option<&dyn SpawnedNode> {
        match &self.kind {
            Kind::Spawned(node) => Some(node.as_ref()),
            Kind::External => None,
        }
    }

    /// Cache hits and misses: asked of a spawned node, or as last reported
    /// by an external backend's `/stats`.
    pub fn cache_figures(&self) -> Option<(u64, u64)> {
        if let Some(node) = self.spawned() {
            return node.cache_figures();
        }
        *self.remote_cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes in what a health check learnt: an external backend is named once,
    /// by the `node` of its first JSON health answer, and keeps that name
    /// (a relay's log and status must not rename a node under the reader).
    pub fn learn(&self, report: &CheckReport) {
        let Some(name) = &report.name else {
            return;
        };
        if self.is_spawned() || self.named.swap(true, Ordering::SeqCst) {
            return;
        }
        *self.name.write().unwrap_or_else(|e| e.into_inner()) = name.clone();
    }

    /// Whether the backend named itself (so it is a bookrelay node, and its
    /// `/stats` is worth asking).
    pub fn is_named(&self) -> bool {
        self.named.load(Ordering::SeqCst)
    }

    /// An external backend's cache figures, as its `/stats` last reported them.
    pub fn set_remote_cache(&self, figures: Option<(u64, u64)>) {
        *self.remote_cache.lock().unwrap_or_else(|e| e.into_inner()) = figures;
    }

    /// Counts an answer a client got for a request forwarded here; codes
    /// outside 200..=599 (a 101 switch) are not counted.
    pub fn count_response(&self, status: u16) {
        if let Some(class) = (200..600)
            .contains(&status)
            .then(|| usize::from(status / 100 - 2))
        {
            self.responses[class].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The answers counted by [`Backend::count_response`]: 2xx, 3xx, 4xx, 5xx.
    pub fn responses(&self) -> [u64; 4] {
        std::array::from_fn(|i| self.responses[i].load(Ordering::Relaxed))
    }

    pub fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
        self.pool.clear();
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }

    /// The node came up at `now` (revived, added, or found healthy again): its share ramps
    /// up over `window` (`--slow-start`; zero: at once).
    pub fn begin_slow_start(&self, window: Duration, now: Instant) {
        let mut ramp = self.slow_start.lock().unwrap_or_else(|e| e.into_inner());
        *ramp = SlowStart::new(window);
        ramp.begin(now);
    }

    /// The fraction of its weight the node gets at `now` (see [`SlowStart::factor`]).
    pub fn slow_start_factor(&self, now: Instant) -> f64 {
        self.slow_start
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .factor(now)
    }

    /// What the balancer may know of this node now.
    pub fn state(&self) -> NodeState {
        NodeState {
            healthy: self.health.is_up() && !self.is_retired(),
            in_flight: self.in_flight.load(Ordering::Relaxed),
        }
    }
}

/// The status classes of [`Backend::responses`], in order.
pub const RESPONSE_CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

/// Upper bounds (seconds) of the latency histogram's buckets; a last
/// `+Inf` bucket holds everything.
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A fixed-bucket latency histogram, counted with atomics.
#[derive(Default)]
pub struct Histogram {
    /// Observations in each bucket alone (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let index = LATENCY_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket (the last is `+Inf`), the sum in
    /// seconds, and the count.
    pub fn snapshot(&self) -> ([u64; LATENCY_BUCKETS.len() + 1], f64, u64) {
        let mut total = 0;
        let cumulative = std::array::from_fn(|i| {
            total += self.buckets[i].load(Ordering::Relaxed);
            total
        });
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (cumulative, sum, self.count.load(Ordering::Relaxed))
    }
}

/// The nodes, their weights, and a balancer built for exactly them.
pub struct Topology {
    pub backends: Vec<Arc<Backend>>,
    pub weights: Vec<u32>,
    pub balancer: Box<dyn Balancer>,
    /// Draws which ramping nodes (`--slow-start`) sit out a pick.
    pub ramp_rng: AtomicRng,
}

impl Topology {
    /// Builds the balancer `name` over `backends` with `weights` (same length), tuned by
    /// `options`.
    pub fn build(
        backends: Vec<Arc<Backend>>,
        weights: Vec<u32>,
        name: &str,
        seed: u64,
        options: &balancer::Options,
    ) -> Result<Topology, UnknownBalancer> {
        debug_assert_eq!(backends.len(), weights.len());
        let specs: Vec<NodeSpec> = backends
            .iter()
            .zip(&weights)
            .map(|(b, &weight)| NodeSpec {
                name: b.name(),
                weight,
            })
            .collect();
        let balancer = balancer::build(name, &specs, seed, options)?;
        Ok(Topology {
            backends,
            weights,
            balancer,
            ramp_rng: AtomicRng::new(seed.rotate_left(32)),
        })
    }

    /// The nodes' states for one pick, with ramping nodes thinned out (see
    /// [`balancer::slow_start::thin`]); a node counts as up when it is `eligible`
    /// (healthy, or any reachable one when failing open) and not `excluded`.
    pub fn states(&self, eligible: &[bool], excluded: &[bool], now: Instant) -> Vec<NodeState> {
        let mut states: Vec<NodeState> = self
            .backends
            .iter()
            .zip(eligible.iter().zip(excluded))
            .map(|(backend, (&eligible, &excluded))| {
                let mut state = backend.state();
                state.healthy = eligible && !excluded;
                state
            })
            .collect();
        let factors: Vec<f64> = self
            .backends
            .iter()
            .map(|backend| backend.slow_start_factor(now))
            .collect();
        if factors.iter().any(|&factor| factor < 1.0) {
            balancer::slow_start::thin(&mut states, &factors, || self.ramp_rng.next_f64());
        }
        states
    }

    /// Each node's weight scaled by its slow-start factor at `now`, as `/_relay/status`
    /// shows it.
    pub fn effective_weights(&self, now: Instant) -> Vec<f64> {
        self.backends
            .iter()
            .zip(&self.weights)
            .map(|(backend, &weight)| f64::from(weight) * backend.slow_start_factor(now))
            .collect()
    }

    pub fn find(&self, name: &str) -> Option<usize> {
        self.backends.iter().position(|b| b.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_counted_by_class() {
        let backend = Backend::new(
            "n".into(),
            "127.0.0.1:1".parse().expect("addr"),
            Kind::External,
            HealthState::healthy(),
        );
        for status in [200, 204, 301, 404, 404, 502, 101] {
            backend.count_response(status);
        }
        assert_eq!(backend.responses(), [2, 1, 2, 1]);
    }

    #[test]
    fn the_histogram_is_cumulative_with_an_infinite_last_bucket() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(500));
        histogram.observe(Duration::from_millis(1));
        histogram.observe(Duration::from_millis(30));
        histogram.observe(Duration::from_secs(60));
        let (buckets, sum, count) = histogram.snapshot();
        assert_eq!(buckets[0], 2, "0.5 ms and exactly 1 ms are both <= 0.001");
        assert_eq!(buckets[4], 2, "30 ms is above 0.025");
        assert_eq!(buckets[5], 3);
        assert_eq!(buckets[LATENCY_BUCKETS.len() - 1], 3);
        assert_eq!(buckets[LATENCY_BUCKETS.len()], 4, "+Inf holds all");
        assert_eq!(count, 4);
        assert!((sum - 60.0315).abs() < 1e-9, "{sum}");
    }
}
