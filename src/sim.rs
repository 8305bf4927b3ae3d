//! The node simulator: node threads inside the relay's process, which the
//! relay can kill, revive, make sick and add while traffic flows.
//!
//! The relay knows them only through [`crate::relay::spawned`]'s traits; the
//! servers, and the settings each node was started with, live here. One
//! place builds a node's [`NodeConfig`] (`Simulator::config`), the delay
//! included, and a revive restarts the node with the very config it was
//! first started with, so a slow node comes back as slow.

use crate::names::NameGenerator;
use crate::node::{self, NodeConfig, NodeServer, StartError};
use crate::rand::Rng;
use crate::relay::spawned::{Spawned, SpawnedNode, Spawner};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// What every simulated node shares: the database and the cache settings.
#[derive(Debug, Clone)]
pub struct NodeTemplate {
    pub db: PathBuf,
    pub cache_capacity: usize,
    /// `None`: cache entries never age out.
    pub cache_ttl: Option<Duration>,
}

/// Starts node threads from one [`NodeTemplate`].
pub struct Simulator {
    template: NodeTemplate,
}

impl Simulator {
    pub fn new(template: NodeTemplate) -> Simulator {
        Simulator { template }
    }

    /// The one place a simulated node's config is made.
    fn config(&self, name: &str, delay: Duration) -> NodeConfig {
        NodeConfig {
            name: name.to_string(),
            db: self.template.db.clone(),
            cache_capacity: self.template.cache_capacity,
            cache_ttl: self.template.cache_ttl,
            delay,
        }
    }

    /// Starts a node called `name`, `delay` slower per booking request, on a
    /// free loopback port.
    pub fn start(&self, name: &str, delay: Duration) -> Result<Spawned, StartError> {
        let config = self.config(name, delay);
        let server = node::start_node(&config, node::bind("127.0.0.1:0")?)?;
        let addr = server.addr();
        Ok(Spawned {
            name: config.name.clone(),
            addr,
            node: Box::new(SimulatedNode {
                config,
                addr,
                server: Mutex::new(Some(server)),
            }),
        })
    }

    /// Starts one node per entry of `delays`, with unique friendly names.
    pub fn start_many(&self, delays: &[Duration]) -> Result<Vec<Spawned>, StartError> {
        let mut names = NameGenerator::new(Rng::from_entropy());
        delays
            .iter()
            .map(|&delay| self.start(&names.next_name(), delay))
            .collect()
    }
}

impl Spawner for Simulator {
    /// A node added later runs without a delay.
    fn spawn(&self, name: &str) -> Result<Spawned, String> {
        self.start(name, Duration::ZERO).map_err(|e| e.0)
    }
}

/// One simulated node: its config, its address, and its server while it runs.
struct SimulatedNode {
    config: NodeConfig,
    addr: SocketAddr,
    server: Mutex<Option<NodeServer>>,
}

impl SimulatedNode {
    fn server(&self) -> MutexGuard<'_, Option<NodeServer>> {
        self.server.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SpawnedNode for SimulatedNode {
    fn is_running(&self) -> bool {
        self.server().is_some()
    }

    fn kill(&self) -> bool {
        match self.server().take() {
            Some(mut running) => {
                running.kill();
                true
            }
            None => false,
        }
    }

    fn revive(&self) -> Result<(), String> {
        let mut server = self.server();
        if server.is_some() {
            return Err(format!("node {} is already running", self.config.name));
        }
        let listener = node::bind(&self.addr.to_string()).map_err(|e| e.0)?;
        *server = Some(node::start_node(&self.config, listener).map_err(|e| e.0)?);
        Ok(())
    }

    fn set_failing(&self, failing: bool) -> bool {
        match self.server().as_ref() {
            Some(running) => {
                running.node().set_failing(failing);
                true
            }
            None => false,
        }
    }

    fn cache_figures(&self) -> Option<(u64, u64)> {
        self.server().as_ref().map(|running| {
            let stats = running.node().cache().stats();
            (stats.hits, stats.misses)
        })
    }
}
