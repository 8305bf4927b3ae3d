//! The simulator's controls: kill, revive, add and remove nodes, and switch
//! the balancer, all while traffic flows.
//!
//! Every change to the node set or the strategy builds a new [`Topology`] and
//! swaps it in under one lock, so requests see either the old set or the new
//! one, never half of each. Counters live in the [`Backend`]s the topologies
//! share, so nothing is lost in a swap.
//!
//! - **kill**: the node thread's listener and connections vanish, like a
//!   crash. The relay is not told: it finds out as it would in production
//!   (a refused connect, a reset, failed checks) and retries around it.
//! - **revive**: a fresh node (cold cache: a crash loses memory) on the same
//!   address, marked up at once since the relay just started it.
//! - **fail** / **heal**: the node stays up and keeps passing its `/health`
//!   check, but answers every other request with a 500 until healed: the
//!   sick node that only its answers give away (see [`super::outlier`]).
//!   A revive brings a node back well.
//! - **add**: a new node thread with a new friendly name.
//! - **remove**: drain, then stop: the node leaves the topology first (no new
//!   requests), the call waits for its in-flight requests to finish, then it
//!   is stopped. Requests already sent complete normally.

use super::backend::{Backend, Kind, Topology};
use super::checker::{spawn_checker, CheckerSettings};
use super::events::EventKind;
use super::health::HealthState;
use super::state::Relay;
use crate::balancer::MAX_WEIGHT;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Most nodes one relay runs, spawned (`--nodes`) and external (`--backend`)
/// together, at start and after `POST /_relay/nodes`.
pub const MAX_NODES: usize = 64;

/// Longest a remove waits for its node's requests to finish before stopping it anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a control call was refused: an HTTP status and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub sentence: String,
}

fn refuse(status: u16, sentence: impl Into<String>) -> Refusal {
    Refusal {
        status,
        sentence: sentence.into(),
    }
}

/// A control call that failed inside the relay (a port, a thread, the
/// database): the caller hears what failed and where to look; the detail,
/// which can name files, SQL or system errors, goes to the relay's log only.
fn failed(what: String) -> impl FnOnce(String) -> Refusal {
    move |detail| {
        eprintln!("relay: {what}: {detail}");
        refuse(
            500,
            format!("{what}; the relay's log says why; try again, or tell its operator"),
        )
    }
}

/// What a node looks like after a control call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub addr: String,
}

impl Relay {
    fn find(&self, name: &str) -> Result<Arc<Backend>, Refusal> {
        let topology = self.topology();
        topology
            .find(name)
            .map(|i| Arc::clone(&topology.backends[i]))
            .ok_or_else(|| {
                refuse(
                    404,
                    format!("no node is named '{name}'; see /_relay/status"),
                )
            })
    }

    /// Stops a spawned node abruptly (a simulated crash).
    pub fn kill_node(&self, name: &str) -> Result<NodeInfo, Refusal> {
        let _changing = self.lock_changes();
        let backend = self.find(name)?;
        let Some(node) = backend.spawned() else {
            return Err(refuse(
                409,
                format!("'{name}' is an external backend; only spawned nodes can be killed"),
            ));
        };
        if !node.is_running() {
            return Err(refuse(
                409,
                format!("node '{name}' is not running; revive it first"),
            ));
        }
        // Recorded before the cut (changes are serialised by `lock_changes`), so that the
        // history reads cause first: the failed requests, retries and "down" the kill sets
        // off come after it.
        self.events.record(
            EventKind::Kill,
            Some(name),
            format!(
                "killed from the admin API (a simulated crash); the relay finds out as requests and checks fail at {}",
                backend.addr
            ),
        );
        node.kill();
        Ok(info(&backend))
    }

    /// Starts a killed node again on its address, with an empty cache.
    pub fn revive_node(&self, name: &str) -> Result<NodeInfo, Refusal> {
        let _changing = self.lock_changes();
        let backend = self.find(name)?;
        let Some(node) = backend.spawned() else {
            return Err(refuse(
                409,
                format!("'{name}' is an external backend; only spawned nodes can be revived"),
            ));
        };
        if node.is_running() {
            return Err(refuse(409, format!("node '{name}' is already running")));
        }
        node.revive()
            .map_err(failed(format!("node '{name}' could not be started again")))?;
        backend.pool.clear();
        let was_up = backend.health.is_up();
        backend.health.reset(HealthState::healthy());
        backend.begin_slow_start(self.settings.slow_start, Instant::now());
        self.events.record(
            EventKind::Revive,
            Some(name),
            format!("started again at {} with an empty cache", backend.addr),
        );
        if !was_up {
            self.events.record(
                EventKind::Up,
                Some(name),
                "marked up at once: the relay has just started it",
            );
        }
        Ok(info(&backend))
    }

    /// Makes a running spawned node sick (`failing`) or well again.
    pub fn set_node_failing(&self, name: &str, failing: bool) -> Result<NodeInfo, Refusal> {
        let _changing = self.lock_changes();
        let backend = self.find(name)?;
        let verb = if failing { "failed" } else { "healed" };
        let Some(node) = backend.spawned() else {
            return Err(refuse(
                409,
                format!("'{name}' is an external backend; only spawned nodes can be {verb}"),
            ));
        };
        if !node.is_running() {
            return Err(refuse(
                409,
                format!("node '{name}' is not running; revive it first"),
            ));
        }
        let (kind, detail) = if failing {
            (
                EventKind::Fail,
                "made sick from the admin API: it answers every request but /health with a 500",
            )
        } else {
            (
                EventKind::Heal,
                "healed from the admin API: it answers requests normally again",
            )
        };
        // Cause before its effects (the 500s and the ejection), as for a kill.
        self.events.record(kind, Some(name), detail);
        node.set_failing(failing);
        Ok(info(&backend))
    }

    /// Spawns one more node with weight `weight`; refused (409) when the
    /// relay already balances over [`MAX_NODES`] nodes and backends, or has
    /// no [`Spawner`](super::spawned::Spawner).
    pub fn add_node(&self, weight: u32) -> Result<NodeInfo, Refusal> {
        check_weight(weight)?;
        let _changing = self.lock_changes();
        let Some(spawner) = &self.spawner else {
            return Err(refuse(
                409,
                "this relay starts no nodes of its own; it balances over its --backend servers only",
            ));
        };
        let count = self.topology().backends.len();
        if count >= MAX_NODES {
            return Err(refuse(
                409,
                format!(
                    "the relay already has {count} nodes, the most it runs ({MAX_NODES}); remove one with DELETE /_relay/nodes/NAME first"
                ),
            ));
        }
        let name = self
            .names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next_name();
        let spawned = spawner
            .spawn(&name)
            .map_err(failed("a new node could not be started".into()))?;
        let addr = spawned.addr;
        let backend = Arc::new(Backend::new(
            spawned.name,
            addr,
            Kind::Spawned(spawned.node),
            HealthState::healthy(),
        ));
        backend.begin_slow_start(self.settings.slow_start, Instant::now());
        let current = self.topology();
        let mut backends = current.backends.clone();
        let mut weights = current.weights.clone();
        backends.push(Arc::clone(&backend));
        weights.push(weight);
        self.swap(backends, weights, current.balancer.name())?;
        self.start_checker(&backend).map_err(failed(
            "the new node's health checker could not be started".into(),
        ))?;
        self.events.record(
            EventKind::Add,
            Some(&backend.name()),
            format!("started at {addr} with weight {weight}"),
        );
        Ok(info(&backend))
    }

    /// Takes a node out of rotation, waits for its requests, then stops it.
    pub fn remove_node(&self, name: &str) -> Result<(), Refusal> {
        let backend = {
            let _changing = self.lock_changes();
            let current = self.topology();
            let index = current.find(name).ok_or_else(|| {
                refuse(
                    404,
                    format!("no node is named '{name}'; see /_relay/status"),
                )
            })?;
            let mut backends = current.backends.clone();
            let mut weights = current.weights.clone();
            let backend = backends.remove(index);
            weights.remove(index);
            self.swap(backends, weights, current.balancer.name())?;
            backend
        };
        // Drain: requests that picked it before the swap finish normally.
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while backend.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(2));
        }
        let unfinished = backend.in_flight.load(Ordering::SeqCst);
        backend.retire();
        if let Some(node) = backend.spawned() {
            node.kill();
        }
        let detail = if unfinished == 0 {
            "taken out of rotation, drained of its requests and stopped".to_string()
        } else {
            format!(
                "taken out of rotation and stopped with {unfinished} requests unfinished after {} seconds",
                DRAIN_TIMEOUT.as_secs()
            )
        };
        self.events
            .record(EventKind::Remove, Some(&backend.name()), detail);
        Ok(())
    }

    /// Switches strategy (and optionally weights) live.
    pub fn switch_balancer(
        &self,
        name: &str,
        weights: Option<Vec<u32>>,
    ) -> Result<Arc<Topology>, Refusal> {
        let _changing = self.lock_changes();
        let current = self.topology();
        let weights = match weights {
            Some(weights) => {
                if weights.len() != current.backends.len() {
                    return Err(refuse(
                        400,
                        format!(
                            "weights has {} values but there are {} nodes",
                            weights.len(),
                            current.backends.len()
                        ),
                    ));
                }
                weights.iter().try_for_each(|&w| check_weight(w))?;
                weights
            }
            None => current.weights.clone(),
        };
        let reweighted = weights != current.weights;
        self.swap(current.backends.clone(), weights, name)?;
        let switched = self.topology();
        let mut detail = format!("{} → {}", current.balancer.name(), switched.balancer.name());
        if reweighted {
            let list: Vec<String> = switched.weights.iter().map(u32::to_string).collect();
            detail.push_str(&format!(", weights now {}", list.join(",")));
        }
        self.events.record(EventKind::Balancer, None, detail);
        Ok(switched)
    }

    fn swap(
        &self,
        backends: Vec<Arc<Backend>>,
        weights: Vec<u32>,
        balancer: &str,
    ) -> Result<(), Refusal> {
        let seed = self
            .seeds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next_u64();
        let topology = Topology::build(backends, weights, balancer, seed, &self.balancer_options())
            .map_err(|e| refuse(400, e.to_string()))?;
        *self.topology.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(topology);
        Ok(())
    }

    /// The strategies' tuning from the command line.
    pub(super) fn balancer_options(&self) -> crate::balancer::Options {
        self.settings.balancer_options
    }

    pub(super) fn start_checker(&self, backend: &Arc<Backend>) -> Result<(), String> {
        let settings = CheckerSettings {
            interval: self.settings.health_interval,
            path: self.settings.health_path.clone(),
            slow_start: self.settings.slow_start,
        };
        let checker = spawn_checker(
            Arc::clone(backend),
            settings,
            Arc::clone(&self.stop),
            Arc::clone(&self.events),
        )
        .map_err(|e| format!("cannot start a health checker: {e}"))?;
        self.checkers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(checker);
        Ok(())
    }
}

fn check_weight(weight: u32) -> Result<(), Refusal> {
    if weight > MAX_WEIGHT {
        return Err(refuse(
            400,
            format!("weights must be whole numbers from 0 to {MAX_WEIGHT}, got {weight}"),
        ));
    }
    Ok(())
}

fn info(backend: &Backend) -> NodeInfo {
    NodeInfo {
        name: backend.name(),
        addr: backend.addr.to_string(),
    }
}
