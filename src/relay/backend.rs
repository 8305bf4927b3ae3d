//! A node as the relay sees it: where it is, whether it is up, what it has
//! been sent, its connection pool; and the [`Topology`], the set of nodes plus
//! the balancer built for exactly that set.
//!
//! A topology never changes: adding, removing or re-weighting nodes, or
//! switching strategy, builds a new one and swaps it in. Counters live in the
//! [`Backend`]s, which the old and new topologies share, so `in_flight` and
//! the request counts survive every swap.

use super::health::{CheckReport, Health, HealthState};
use super::pool::Pool;
use crate::balancer::{self, Balancer, NodeSpec, NodeState, UnknownBalancer};
use crate::node::NodeServer;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// How the relay runs a node.
pub enum Kind {
    /// A node thread the relay spawned (and can kill and revive).
    Thread(Mutex<Option<NodeServer>>),
    /// Any HTTP server given with `--backend`.
    External,
}

/// One node or backend.
pub struct Backend {
    name: RwLock<String>,
    pub addr: SocketAddr,
    pub kind: Kind,
    pub health: Health,
    /// Requests being served right now (see [`balancer::InFlight`]).
    pub in_flight: Arc<AtomicU64>,
    /// Client requests forwarded here (health checks not counted).
    pub requests: AtomicU64,
    /// Forwarded requests that failed here (connect, reset, timeout, bad answer).
    pub failures: AtomicU64,
    pub pool: Pool,
    /// An external backend's cache figures from its `/stats`, when known.
    remote_cache: Mutex<Option<(u64, u64)>>,
    /// Named by its own health answer (or a spawned node): the name is kept.
    named: AtomicBool,
    /// Removed from the relay: checkers stop, no new requests.
    retired: AtomicBool,
}

impl Backend {
    pub fn new(name: String, addr: SocketAddr, kind: Kind, initial: HealthState) -> Backend {
        let kind_is_thread = matches!(kind, Kind::Thread(_));
        Backend {
            name: RwLock::new(name),
            addr,
            kind,
            health: Health::new(initial),
            in_flight: Arc::new(AtomicU64::new(0)),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            pool: Pool::new(),
            remote_cache: Mutex::new(None),
            named: AtomicBool::new(kind_is_thread),
            retired: AtomicBool::new(false),
        }
    }

    pub fn name(&self) -> String {
        self.name.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn is_thread(&self) -> bool {
        matches!(self.kind, Kind::Thread(_))
    }

    pub fn server(&self) -> Option<MutexGuard<'_, Option<NodeServer>>> {
        match &self.kind {
            Kind::Thread(server) => Some(server.lock().unwrap_or_else(|e| e.into_inner())),
            Kind::External => None,
        }
    }

    /// Cache hits and misses: read directly from a node thread, or as last
    /// reported by an external backend's `/stats`.
    pub fn cache_figures(&self) -> Option<(u64, u64)> {
        if let Some(server) = self.server() {
            return server.as_ref().map(|s| {
                let stats = s.node().cache().stats();
                (stats.hits, stats.misses)
            });
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
        if self.is_thread() || self.named.swap(true, Ordering::SeqCst) {
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

    pub fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
        self.pool.clear();
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }

    /// What the balancer may know of this node now.
    pub fn state(&self) -> NodeState {
        NodeState {
            healthy: self.health.is_up() && !self.is_retired(),
            in_flight: self.in_flight.load(Ordering::Relaxed),
        }
    }
}

/// The nodes, their weights, and a balancer built for exactly them.
pub struct Topology {
    pub backends: Vec<Arc<Backend>>,
    pub weights: Vec<u32>,
    pub balancer: Box<dyn Balancer>,
}

impl Topology {
    /// Builds the balancer `name` over `backends` with `weights` (same length).
    pub fn build(
        backends: Vec<Arc<Backend>>,
        weights: Vec<u32>,
        name: &str,
        seed: u64,
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
        let balancer = balancer::by_name(name, &specs, seed)?;
        Ok(Topology {
            backends,
            weights,
            balancer,
        })
    }

    pub fn find(&self, name: &str) -> Option<usize> {
        self.backends.iter().position(|b| b.name() == name)
    }
}
