//! Nodes the relay runs itself, as the relay sees them: capabilities, not
//! servers. A spawned node can be killed, revived and made sick, and a
//! [`Spawner`] can start more; what a node *is* (its server, its settings,
//! its database) belongs to whoever implements these traits, the simulator
//! ([`crate::sim`]). An external backend has none of this.

use std::net::SocketAddr;

/// What the relay may do to one node it started (see [`super::control`]).
pub trait SpawnedNode: Send + Sync {
    /// Whether it is running (not killed).
    fn is_running(&self) -> bool;

    /// Stops it abruptly, like a crash; `false` if it was not running.
    fn kill(&self) -> bool;

    /// Starts it again on its address, as it was started first (an empty
    /// cache: a crash loses memory). `Err`: why not, for the relay's log.
    fn revive(&self) -> Result<(), String>;

    /// Makes it answer every request but `/health` with a 500, or well again;
    /// `false` if it is not running.
    fn set_failing(&self, failing: bool) -> bool;

    /// Its cache hits and misses; `None` while it is not running.
    fn cache_figures(&self) -> Option<(u64, u64)>;
}

/// A node just started, ready to become a backend.
pub struct Spawned {
    pub name: String,
    pub addr: SocketAddr,
    pub node: Box<dyn SpawnedNode>,
}

/// Starts new nodes for the relay (`POST /_relay/nodes`).
pub trait Spawner: Send + Sync {
    /// Starts a node called `name` on a free port. `Err`: why not, for the
    /// relay's log.
    fn spawn(&self, name: &str) -> Result<Spawned, String>;
}
