//! Configuration to running servers: open and seed the database, bind the
//! listeners, start the node simulator ([`crate::sim`]) and the relay with its
//! part of the command line ([`relay_settings`]), print what started. Shared
//! by `main`, the integration tests and the examples, so all three start the
//! system the same way.

use crate::balancer;
use crate::cli::{self, NodeArgs, RelayConfig};
use crate::names::random_name;
use crate::node::{self, bind, start_node, NodeConfig};
use crate::rand::Rng;
use crate::relay::spawned::Spawned;
use crate::relay::{self, RelayServer};
use crate::sim::{NodeTemplate, Simulator};
use crate::store::Store;
use std::ffi::OsString;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Why the system could not start; one sentence for the terminal.
#[derive(Debug)]
pub struct LaunchError(pub String);

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LaunchError {}

impl From<node::StartError> for LaunchError {
    fn from(error: node::StartError) -> Self {
        LaunchError(error.0)
    }
}

impl From<relay::StartError> for LaunchError {
    fn from(error: relay::StartError) -> Self {
        LaunchError(error.0)
    }
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

/// The simulator of `config`'s node threads.
pub fn simulator(config: &RelayConfig) -> Simulator {
    Simulator::new(NodeTemplate {
        db: config.db.clone(),
        cache_capacity: config.cache_capacity,
        cache_ttl: config.cache_ttl,
    })
}

/// Spawns `config.nodes` node threads on free loopback ports, with unique
/// friendly names and their `--node-delay`, after seeding the database once.
pub fn spawn_nodes(config: &RelayConfig, sim: &Simulator) -> Result<Vec<Spawned>, LaunchError> {
    let seeded = prepare_database(&config.db, config.seed)?;
    if seeded > 0 {
        println!(
            "seeded {} with {seeded} sample bookings",
            config.db.display()
        );
    }
    let delays: Vec<Duration> = (0..config.nodes)
        .map(|i| config.node_delays.get(i).copied().unwrap_or_default())
        .collect();
    Ok(sim.start_many(&delays)?)
}

/// Settles the admin token: `--admin-token-file` is read into
/// `admin_token` (surrounding whitespace, such as the trailing newline,
/// trimmed); without it or `--admin-token`, `env` (the value of
/// [`cli::ADMIN_TOKEN_ENV`], if set) is the token. An unreadable or empty
/// file, or an empty variable, is a [`cli::Error`] naming it: the user asked
/// for protection that would otherwise silently be missing.
pub fn resolve_admin_token(
    config: &mut RelayConfig,
    env: Option<OsString>,
) -> Result<(), cli::Error> {
    if let Some(path) = config.admin_token_file.take() {
        let text = std::fs::read_to_string(&path).map_err(|e| {
            cli::Error(format!(
                "--admin-token-file cannot read {}: {e}",
                path.display()
            ))
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(cli::Error(format!(
                "--admin-token-file {} is empty; put the token in it",
                path.display()
            )));
        }
        config.admin_token = Some(token.to_string());
        return Ok(());
    }
    if config.admin_token.is_some() {
        return Ok(());
    }
    let name = cli::ADMIN_TOKEN_ENV;
    match env {
        None => Ok(()),
        Some(value) => match value.into_string() {
            Ok(token) if !token.trim().is_empty() => {
                config.admin_token = Some(token.trim().to_string());
                Ok(())
            }
            Ok(_) => Err(cli::Error(format!(
                "{name} is set but empty; set it to the admin token or unset it"
            ))),
            Err(_) => Err(cli::Error(format!("{name} is not valid UTF-8"))),
        },
    }
}

/// Spawns the node threads and starts a relay over them and the backends.
pub fn start_relay(config: &RelayConfig) -> Result<RelayServer, LaunchError> {
    // A config built in code may name a token file nobody read yet.
    let mut config = config.clone();
    resolve_admin_token(&mut config, None).map_err(|e| LaunchError(e.0))?;
    let config = &config;
    // Bind first: a port in use should fail before nodes or data are touched.
    let listener = bind(&listen_address(&config.listen))?;
    let sim = simulator(config);
    let nodes = if config.nodes > 0 {
        spawn_nodes(config, &sim)?
    } else {
        Vec::new()
    };
    Ok(RelayServer::start(
        &relay_settings(config),
        listener,
        nodes,
        Some(Arc::new(sim)),
    )?)
}

/// What of `config` the relay itself is told.
pub fn relay_settings(config: &RelayConfig) -> relay::Settings {
    relay::Settings {
        backends: config.backends.clone(),
        balancer: config.balancer.clone(),
        weights: config.weights.clone(),
        balancer_options: balancer::Options {
            hash_balance_factor: config.hash_balance_factor,
        },
        slow_start: config.slow_start,
        health_interval: config.health_interval,
        health_path: config.health_path.clone(),
        ejection_time: config.ejection_time,
        max_conns_per_node: config.max_conns_per_node,
        queue_timeout: config.queue_timeout,
        max_body_bytes: config.max_body_bytes,
        read_timeout: config.read_timeout,
        access_log: config.access_log,
        admin_token: config.admin_token.clone(),
        max_connections: config.max_connections,
    }
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
    let in_process = config.nodes > 0;
    if let (allowed, Some(limit)) = relay::connection_limit(&relay_settings(config), in_process) {
        println!("{}", descriptor_notice(allowed, limit));
    }
    relay.wait();
    Ok(())
}

/// What the start-up says when the open-files limit, not the default, sets
/// how many clients the relay takes.
fn descriptor_notice(allowed: usize, limit: crate::limits::OpenFilesLimit) -> String {
    let soft = limit
        .soft
        .map_or("unlimited".to_string(), |n| n.to_string());
    let ceiling = crate::http::server::DEFAULT_MAX_CONNECTIONS;
    let raise = match limit.hard {
        Some(hard) if limit.soft.is_some_and(|soft| soft < hard) => {
            format!("run 'ulimit -n {hard}' before starting the relay to allow up to {ceiling}")
        }
        _ => format!(
            "the hard limit is no higher, so raise that first (as root: 'ulimit -Hn 65536'; \
             for a service, LimitNOFILE=) to allow up to {ceiling}"
        ),
    };
    format!("at most {allowed} client connections: the limit of {soft} open files allows no more ({raise})")
}

/// `:PORT` means loopback: the relay is reachable from this machine only
/// unless an interface is named (e.g. `0.0.0.0:8080`).
pub fn listen_address(text: &str) -> String {
    match text.strip_prefix(':') {
        Some(port) => format!("127.0.0.1:{port}"),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::temp_dir::TempDir;

    fn resolved(config: RelayConfig, env: Option<&str>) -> Result<Option<String>, String> {
        let mut config = config;
        resolve_admin_token(&mut config, env.map(OsString::from))
            .map(|()| config.admin_token)
            .map_err(|e| e.0)
    }

    #[test]
    fn a_binding_descriptor_limit_is_told_with_the_way_to_raise_it() {
        let limit = crate::limits::OpenFilesLimit {
            soft: Some(1024),
            hard: Some(524288),
        };
        let notice = descriptor_notice(320, limit);
        assert!(
            notice.starts_with("at most 320 client connections"),
            "{notice}"
        );
        assert!(notice.contains("limit of 1024 open files"), "{notice}");
        assert!(notice.contains("'ulimit -n 524288'"), "{notice}");
        let stuck = crate::limits::OpenFilesLimit {
            soft: Some(160),
            hard: Some(160),
        };
        let notice = descriptor_notice(32, stuck);
        assert!(notice.contains("hard limit is no higher"), "{notice}");
    }

    #[test]
    fn the_admin_token_comes_from_the_file_the_option_or_the_environment() {
        let dir = TempDir::new("token");
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret\n").expect("write");
        let with_file = RelayConfig {
            admin_token_file: Some(file.clone()),
            ..RelayConfig::default()
        };
        assert_eq!(
            resolved(with_file.clone(), Some("ignored")),
            Ok(Some("s3cret".into()))
        );
        let inline = RelayConfig {
            admin_token: Some("inline".into()),
            ..RelayConfig::default()
        };
        assert_eq!(resolved(inline, Some("ignored")), Ok(Some("inline".into())));
        assert_eq!(
            resolved(RelayConfig::default(), Some("from-env")),
            Ok(Some("from-env".into()))
        );
        assert_eq!(resolved(RelayConfig::default(), None), Ok(None));
        let empty_env = resolved(RelayConfig::default(), Some("")).expect_err("empty");
        assert!(empty_env.starts_with(cli::ADMIN_TOKEN_ENV), "{empty_env}");

        std::fs::write(&file, "\n").expect("write");
        let empty = resolved(with_file, None).expect_err("empty file");
        assert!(empty.starts_with("--admin-token-file"), "{empty}");
        assert!(empty.contains("empty"), "{empty}");
        let missing = RelayConfig {
            admin_token_file: Some(dir.path().join("absent")),
            ..RelayConfig::default()
        };
        let missing = resolved(missing, None).expect_err("missing file");
        assert!(
            missing.starts_with("--admin-token-file cannot read"),
            "{missing}"
        );
    }
}
