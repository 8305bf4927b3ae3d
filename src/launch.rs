//! Configuration to running servers: open and seed the database, bind the
//! listeners, print what started. Shared by `main`, the integration tests and
//! the examples, so all three start the system the same way.

use crate::cli::{NodeArgs, RelayConfig};
use crate::names::{random_name, NameGenerator};
use crate::node::{Node, NodeConfig, NodeServer};
use crate::rand::Rng;
use crate::relay::RelayServer;
use crate::store::Store;
use std::fmt;
use std::io;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;

/// Why the system could not start; one sentence for the terminal.
#[derive(Debug)]
pub struct LaunchError(pub String);

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LaunchError {}

/// Binds `addr`, explaining the usual failures in words.
pub fn bind(addr: &str) -> Result<TcpListener, LaunchError> {
    TcpListener::bind(addr).map_err(|error| {
        let why = match error.kind() {
            io::ErrorKind::AddrInUse => {
                "the address is already in use (is another bookrelay running?)".to_string()
            }
            io::ErrorKind::PermissionDenied => {
                "permission denied (ports below 1024 need root)".to_string()
            }
            _ => error.to_string(),
        };
        LaunchError(format!("cannot listen on {addr}: {why}"))
    })
}

/// Opens the database and inserts `seed` sample bookings if it is empty.
/// Returns how many were inserted.
pub fn prepare_database(db: &Path, seed: usize) -> Result<usize, LaunchError> {
    let store = Store::open(db)
        .map_err(|e| LaunchError(format!("cannot open database {}: {e}", db.display())))?;
    store
        .seed_if_empty(seed, &mut Rng::from_entropy())
        .map_err(|e| LaunchError(format!("cannot seed database {}: {e}", db.display())))
}

/// Starts one node server on `listener`.
pub fn start_node(config: &NodeConfig, listener: TcpListener) -> Result<NodeServer, LaunchError> {
    let node = Node::open(config)
        .map_err(|e| LaunchError(format!("cannot open database {}: {e}", config.db.display())))?;
    NodeServer::start(Arc::new(node), listener)
        .map_err(|e| LaunchError(format!("cannot start node {}: {e}", config.name)))
}

/// `bookrelay node`: one node in the foreground until the process is killed.
pub fn run_node(args: &NodeArgs) -> Result<(), LaunchError> {
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| random_name(&mut Rng::from_entropy()));
    let seeded = prepare_database(&args.db, args.seed)?;
    let listener = bind(&listen_address(&args.listen))?;
    let config = NodeConfig {
        name: name.clone(),
        db: args.db.clone(),
        cache_capacity: args.cache_capacity,
        cache_ttl: args.cache_ttl,
        delay: args.delay,
    };
    let server = start_node(&config, listener)?;
    if seeded > 0 {
        println!("seeded {} with {seeded} sample bookings", args.db.display());
    }
    println!("node {name} listening on {}", server.addr());
    server.wait();
    Ok(())
}

/// Spawns `config.nodes` node threads on free loopback ports, with unique
/// friendly names, after seeding the database once.
pub fn spawn_nodes(config: &RelayConfig) -> Result<Vec<NodeServer>, LaunchError> {
    let seeded = prepare_database(&config.db, config.seed)?;
    if seeded > 0 {
        println!(
            "seeded {} with {seeded} sample bookings",
            config.db.display()
        );
    }
    let mut names = NameGenerator::new(Rng::from_entropy());
    let mut servers = Vec::with_capacity(config.nodes);
    for i in 0..config.nodes {
        let node = NodeConfig {
            name: names.next_name(),
            db: config.db.clone(),
            cache_capacity: config.cache_capacity,
            cache_ttl: config.cache_ttl,
            delay: config.node_delays.get(i).copied().unwrap_or_default(),
        };
        servers.push(start_node(&node, bind("127.0.0.1:0")?)?);
    }
    Ok(servers)
}

/// Spawns the node threads and starts a relay over them and the backends.
pub fn start_relay(config: &RelayConfig) -> Result<RelayServer, LaunchError> {
    // Bind first: a port in use should fail before nodes or data are touched.
    let listener = bind(&listen_address(&config.listen))?;
    let nodes = if config.nodes > 0 {
        spawn_nodes(config)?
    } else {
        Vec::new()
    };
    RelayServer::start(config, listener, nodes)
}

/// The default command: relay + node threads in the foreground.
pub fn run_relay(config: &RelayConfig) -> Result<(), LaunchError> {
    let relay = start_relay(config)?;
    let topology = relay.relay().topology();
    for backend in &topology.backends {
        println!("node {} at {}", backend.name(), backend.addr);
    }
    println!(
        "relay listening on {} (balancer {})",
        relay.addr(),
        topology.balancer.name()
    );
    drop(topology);
    relay.wait();
    Ok(())
}

/// `:PORT` means loopback: the relay is reachable from this machine only
/// unless an interface is named (e.g. `0.0.0.0:8080`).
pub fn listen_address(text: &str) -> String {
    match text.strip_prefix(':') {
        Some(port) => format!("127.0.0.1:{port}"),
        None => text.to_string(),
    }
}
