//! The relay's shared state: what it was started with ([`Settings`]), the
//! current [`Topology`], and what every request and control call shares.
//! Requests read it ([`super::forward`], [`super::admin`]); the controls
//! ([`super::control`]) change it.

use super::backend::Topology;
use super::events::Events;
use super::failopen::FailOpen;
use super::outlier::Ejector;
use super::queue::Queue;
use super::spawned::Spawner;
use crate::balancer;
use crate::http::server::ServerCounters;
use crate::names::NameGenerator;
use crate::rand::Rng;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// What a relay is started with (`launch` fills it from the command line).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `--backend` addresses, resolved once at start.
    pub backends: Vec<String>,
    /// The strategy's name, one of [`balancer::NAMES`].
    pub balancer: String,
    /// One per node, spawned first, then the backends; `None`: all 1.
    pub weights: Option<Vec<u32>>,
    pub balancer_options: balancer::Options,
    /// How long a node that came up takes to ramp to its full share; zero: off.
    pub slow_start: Duration,
    pub health_interval: Duration,
    /// What the active check requests; `None`: passive health only.
    pub health_path: Option<String>,
    /// How long a node's first outlier ejection lasts (later ones: this ×
    /// their count; see [`super::outlier`]).
    pub ejection_time: Duration,
    /// At most this many requests in flight at each node; more wait in the relay's line
    /// ([`super::queue`]). `None`: no cap.
    pub max_conns_per_node: Option<usize>,
    /// Longest a request waits in that line before it is answered 503.
    pub queue_timeout: Duration,
    /// Largest request body the relay forwards.
    pub max_body_bytes: u64,
    /// Longest silence between two pieces of a backend's response body.
    pub read_timeout: Duration,
    pub access_log: bool,
    /// The token changing `/_relay/*` calls must present; `None`: such calls
    /// are accepted from this machine only.
    pub admin_token: Option<String>,
    /// `None`: what the descriptor limit allows (see [`super::connection_limit`]).
    pub max_connections: Option<usize>,
}

/// The relay's shared state.
pub struct Relay {
    pub(super) topology: RwLock<Arc<Topology>>,
    pub(super) settings: Settings,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) checkers: Mutex<Vec<JoinHandle<()>>>,
    /// Friendly names, unique for the relay's life (added nodes get new ones).
    pub(super) names: Mutex<NameGenerator>,
    /// Seeds for the random balancers of each new topology.
    pub(super) seeds: Mutex<Rng>,
    /// Serialises changes to the node set, so two concurrent adds cannot
    /// each build a topology that lacks the other's node.
    pub(super) changes: Mutex<()>,
    /// Client connections accepted, refused at the limit, and panicked.
    pub(super) counters: Arc<ServerCounters>,
    /// Where the relay listens (the bound address, port included).
    pub(super) listen_addr: SocketAddr,
    /// The recent history (`/_relay/events`), shared with the checkers.
    pub(super) events: Arc<Events>,
    /// Ejects nodes that answer 5xx too often in a row.
    pub(super) ejector: Ejector,
    /// Whether too few nodes are fit, so requests go to all reachable ones.
    pub(super) fail_open: FailOpen,
    /// The per-node cap and the line of requests waiting under it.
    pub(super) queue: Queue,
    /// Starts the nodes `POST /_relay/nodes` adds; `None`: it adds none.
    pub(super) spawner: Option<Arc<dyn Spawner>>,
}

impl Relay {
    /// The current nodes and balancer.
    pub fn topology(&self) -> Arc<Topology> {
        Arc::clone(&self.topology.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The client-side connection counters.
    pub fn counters(&self) -> &ServerCounters {
        &self.counters
    }

    /// The relay's recent history.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// The per-node cap and the line of requests waiting under it.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// The address the relay listens on (the bound one: a `:0` port resolved).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    pub(super) fn lock_changes(&self) -> std::sync::MutexGuard<'_, ()> {
        self.changes.lock().unwrap_or_else(|e| e.into_inner())
    }
}
