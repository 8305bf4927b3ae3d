//! The relay: accepts client connections and hands each request to
//! `/_relay/*` ([`admin`]) or to a node ([`forward`]). No SQL here.
//!
//! Client connections are served by [`crate::http::server`] (one thread each)
//! and framed by [`crate::http::conn`], exactly as on a node; the relay is a
//! [`Handler`] like a node is. Node connections are pooled per node
//! ([`pool`]); a checker thread per node keeps its health current ([`health`]).
//! The set of nodes and the balancer over them form one immutable
//! [`backend::Topology`], swapped whole when either changes.
//!
//! This file starts and stops a relay ([`RelayServer`]) and routes each
//! request; the state every request shares is [`state::Relay`], changed by
//! [`control`]. Nodes the relay runs itself it knows only through the
//! capabilities of [`spawned`] (the simulator, [`crate::sim`], provides them).

pub mod admin;
pub mod backend;
pub mod checker;
pub mod control;
pub mod events;
pub mod failopen;
pub mod forward;
pub mod health;
pub mod outlier;
pub mod pool;
pub mod queue;
pub mod rate_limited_log;
pub mod spawned;
pub mod state;
pub mod tunnel;

use crate::http::conn::{Exchange, Handler};
use crate::http::server::{Server, ServerOptions, DEFAULT_MAX_CONNECTIONS};
use crate::http::{Request, Response};
use crate::limits::{self, OpenFilesLimit};
use crate::names::NameGenerator;
use crate::rand::Rng;
use backend::{Backend, Kind, Topology};
use events::utc_timestamp;
use failopen::FailOpen;
use health::HealthState;
use outlier::Ejector;
use queue::Queue;
use spawned::{Spawned, Spawner};
pub use state::{Relay, Settings};
use std::fmt;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime};

/// Stack of each client connection thread: the relay parses and copies, it
/// recurses nowhere, so this is plenty.
pub const CONNECTION_STACK_BYTES: usize = 128 * 1024;

/// Why the relay could not start; one sentence for the terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartError(pub String);

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

impl Relay {
    /// What the relay answers itself: `/_relay/*`, and 501 to `CONNECT`.
    fn own_answer(&self, request: &Request, peer: SocketAddr) -> Response {
        if request.method == "CONNECT" {
            return Response::error(
                501,
                "the relay is a reverse proxy and does not open tunnels with CONNECT",
            );
        }
        admin::handle(self, request, peer)
    }

    fn log_access(
        &self,
        started: Instant,
        peer: SocketAddr,
        request: &Request,
        status: Option<u16>,
        node: Option<&Backend>,
    ) {
        if !self.settings.access_log {
            return;
        }
        eprintln!(
            "{} {peer} {} {} {} {} {}us",
            utc_timestamp(SystemTime::now()),
            request.method,
            request.target,
            // 499: the client left before it was answered (as nginx logs it).
            status.unwrap_or(499),
            node.map_or_else(|| "-".to_string(), |n| n.name()),
            started.elapsed().as_micros()
        );
    }
}

/// Whether a path is the relay's own (`/_relay/*`), never forwarded.
fn is_admin_path(path: &str) -> bool {
    path == "/_relay" || path.starts_with("/_relay/")
}

impl Handler for Relay {
    fn max_body_bytes(&self) -> u64 {
        self.settings.max_body_bytes
    }

    /// The relay's own endpoints, answered whole.
    fn handle(&self, request: Request, peer: SocketAddr) -> Response {
        self.own_answer(&request, peer)
    }

    /// Forwards to a node, streaming; `/_relay/*` and `CONNECT` are answered here.
    fn exchange(&self, request: Request, peer: SocketAddr, exchange: &mut Exchange<'_>) {
        let started = Instant::now();
        if is_admin_path(request.path()) || request.method == "CONNECT" {
            let Some(body) = exchange.read_body() else {
                return;
            };
            let request = Request { body, ..request };
            let response = self.own_answer(&request, peer);
            exchange.respond(&response);
            self.log_access(started, peer, &request, Some(response.status), None);
            return;
        }
        let topology = self.topology();
        let context = forward::Context {
            read_timeout: self.settings.read_timeout,
            events: &self.events,
            ejector: &self.ejector,
            fail_open: &self.fail_open,
            queue: &self.queue,
        };
        let forwarded = forward::forward(&topology, &request, peer, exchange, &context);
        self.log_access(
            started,
            peer,
            &request,
            forwarded.status,
            forwarded.node.as_deref(),
        );
    }
}

/// A running relay. Dropping it stops the relay (not the node threads'
/// sockets of other owners) and its checkers.
pub struct RelayServer {
    relay: Arc<Relay>,
    server: Server,
}

impl RelayServer {
    /// Starts a relay on `listener` over the spawned `nodes` plus the
    /// config's `--backend` addresses; `spawner` starts the nodes added
    /// later. An external backend is checked once first, to learn its name;
    /// one that does not answer starts marked down.
    pub fn start(
        settings: &Settings,
        listener: TcpListener,
        nodes: Vec<Spawned>,
        spawner: Option<Arc<dyn Spawner>>,
    ) -> Result<RelayServer, StartError> {
        let in_process = !nodes.is_empty();
        let mut backends = Vec::with_capacity(nodes.len() + settings.backends.len());
        for spawned in nodes {
            backends.push(Arc::new(Backend::new(
                spawned.name,
                spawned.addr,
                Kind::Spawned(spawned.node),
                HealthState::healthy(),
            )));
        }
        for text in &settings.backends {
            let addr = resolve(text)?;
            backends.push(Arc::new(external_backend(text, addr, settings)));
        }
        let weights = settings
            .weights
            .clone()
            .unwrap_or_else(|| vec![1; backends.len()]);
        let mut seeds = Rng::from_entropy();
        let topology = Topology::build(
            backends,
            weights,
            &settings.balancer,
            seeds.next_u64(),
            &settings.balancer_options,
        )
        .map_err(|e| StartError(e.to_string()))?;
        let listen_addr = listener
            .local_addr()
            .map_err(|e| StartError(format!("cannot start the relay: {e}")))?;
        let mut names = NameGenerator::new(Rng::from_entropy());
        for backend in &topology.backends {
            names.reserve(&backend.name());
        }
        let relay = Arc::new(Relay {
            topology: RwLock::new(Arc::new(topology)),
            settings: settings.clone(),
            stop: Arc::new(AtomicBool::new(false)),
            checkers: Mutex::new(Vec::new()),
            names: Mutex::new(names),
            seeds: Mutex::new(seeds),
            changes: Mutex::new(()),
            counters: Arc::default(),
            listen_addr,
            events: Arc::default(),
            ejector: Ejector::new(settings.ejection_time),
            fail_open: FailOpen::default(),
            queue: Queue::new(settings.max_conns_per_node, settings.queue_timeout),
            spawner,
        });
        for backend in &relay.topology().backends {
            relay.start_checker(backend).map_err(StartError)?;
        }
        let options = ServerOptions {
            label: "relay".into(),
            stack_bytes: CONNECTION_STACK_BYTES,
            max_connections: connection_limit(settings, in_process).0,
        };
        let server = Server::start(
            listener,
            Arc::clone(&relay),
            options,
            Arc::clone(&relay.counters),
        )
        .map_err(|e| StartError(format!("cannot start the relay: {e}")))?;
        Ok(RelayServer { relay, server })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub fn relay(&self) -> &Arc<Relay> {
        &self.relay
    }

    /// Blocks until the relay is stopped from another thread.
    pub fn wait(mut self) {
        self.server.join();
    }
}

impl Drop for RelayServer {
    fn drop(&mut self) {
        self.server.kill();
        self.relay.stop.store(true, Ordering::SeqCst);
        let checkers = std::mem::take(
            &mut *self
                .relay
                .checkers
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for checker in checkers {
            checker.thread().unpark();
            let _ = checker.join();
        }
        for backend in &self.relay.topology().backends {
            backend.pool.clear();
            if let Some(node) = backend.spawned() {
                node.kill();
            }
        }
    }
}

/// An external backend, checked once first to learn its name; one that does
/// not pass starts marked down. With passive health only, it starts up.
/// The client-connection limit: `--max-connections` if given, else what
/// the open-files limit allows, at most [`DEFAULT_MAX_CONNECTIONS`]. A
/// client connection being forwarded costs two descriptors, three when its
/// node is a thread of this process (`in_process`: the relay spawned nodes
/// at start). The open-files limit comes along when it is what set the
/// figure, so that the relay can say so at start.
pub fn connection_limit(settings: &Settings, in_process: bool) -> (usize, Option<OpenFilesLimit>) {
    if let Some(limit) = settings.max_connections {
        return (limit, None);
    }
    let per_connection = if in_process { 3 } else { 2 };
    limits::default_connections(per_connection, DEFAULT_MAX_CONNECTIONS)
}

fn external_backend(text: &str, addr: SocketAddr, settings: &Settings) -> Backend {
    let Some(path) = &settings.health_path else {
        return Backend::new(
            addr.to_string(),
            addr,
            Kind::External,
            HealthState::healthy(),
        );
    };
    match health::check(addr, path) {
        Ok(report) => {
            let name = report.name.clone().unwrap_or_else(|| addr.to_string());
            let backend = Backend::new(name, addr, Kind::External, HealthState::healthy());
            backend.learn(&report);
            backend
        }
        Err(why) => {
            eprintln!(
                "relay: backend {text} did not pass GET {path} ({why}); it starts marked down"
            );
            let backend = Backend::new(
                addr.to_string(),
                addr,
                Kind::External,
                HealthState::unhealthy(),
            );
            // It answered, badly: fail-open may still send it requests.
            backend.health.set_reachable(why.answered);
            backend
        }
    }
}

/// Resolves `host:port` once, at start, so no request waits on DNS.
fn resolve(text: &str) -> Result<SocketAddr, StartError> {
    text.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| StartError(format!("cannot resolve --backend {text}")))
}
