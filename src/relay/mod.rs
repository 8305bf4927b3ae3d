//! The relay: accepts client connections and hands each request to
//! `/_relay/*` ([`admin`]) or to a node ([`forward`]). No SQL here.
//!
//! Client connections are served by [`crate::http::server`] (one thread each)
//! and framed by [`crate::http::conn`], exactly as on a node; the relay is a
//! [`Handler`] like a node is. Node connections are pooled per node
//! ([`pool`]); a checker thread per node keeps its health current ([`health`]).
//! The set of nodes and the balancer over them form one immutable
//! [`backend::Topology`], swapped whole when either changes.

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
pub mod rate_limited_log;
pub mod spawned;
pub mod tunnel;

use crate::balancer;
use crate::http::conn::{Exchange, Handler};
use crate::http::server::{Server, ServerCounters, ServerOptions, DEFAULT_MAX_CONNECTIONS};
use crate::http::{Request, Response};
use crate::limits::{self, OpenFilesLimit};
use crate::names::NameGenerator;
use crate::rand::Rng;
use backend::{Backend, Kind, Topology};
use events::Events;
use failopen::FailOpen;
use health::HealthState;
use outlier::Ejector;
use spawned::{Spawned, Spawner};
use std::fmt;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most nodes one relay runs, spawned (`--nodes`) and external (`--backend`)
/// together, at start and after `POST /_relay/nodes`.
pub const MAX_NODES: usize = 64;

/// Stack of each client connection thread: the relay parses and copies, it
/// recurses nowhere, so this is plenty.
pub const CONNECTION_STACK_BYTES: usize = 128 * 1024;

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
    /// their count; see [`outlier`]).
    pub ejection_time: Duration,
    /// Largest request body the relay forwards.
    pub max_body_bytes: u64,
    /// Longest silence between two pieces of a backend's response body.
    pub read_timeout: Duration,
    pub access_log: bool,
    /// The token changing `/_relay/*` calls must present; `None`: such calls
    /// are accepted from this machine only.
    pub admin_token: Option<String>,
    /// `None`: what the descriptor limit allows (see [`connection_limit`]).
    pub max_connections: Option<usize>,
}

/// Why the relay could not start; one sentence for the terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartError(pub String);

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// The relay's shared state.
pub struct Relay {
    topology: RwLock<Arc<Topology>>,
    settings: Settings,
    stop: Arc<AtomicBool>,
    checkers: Mutex<Vec<JoinHandle<()>>>,
    /// Friendly names, unique for the relay's life (added nodes get new ones).
    names: Mutex<NameGenerator>,
    /// Seeds for the random balancers of each new topology.
    seeds: Mutex<Rng>,
    /// Serialises changes to the node set, so two concurrent adds cannot
    /// each build a topology that lacks the other's node.
    changes: Mutex<()>,
    /// Client connections accepted, refused at the limit, and panicked.
    counters: Arc<ServerCounters>,
    /// Where the relay listens (the bound address, port included).
    listen_addr: SocketAddr,
    /// The recent history (`/_relay/events`), shared with the checkers.
    events: Arc<Events>,
    /// Ejects nodes that answer 5xx too often in a row.
    ejector: Ejector,
    /// Whether too few nodes are fit, so requests go to all reachable ones.
    fail_open: FailOpen,
    /// Starts the nodes `POST /_relay/nodes` adds; `None`: it adds none.
    spawner: Option<Arc<dyn Spawner>>,
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

    /// The address the relay listens on (the bound one: a `:0` port resolved).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    fn lock_changes(&self) -> std::sync::MutexGuard<'_, ()> {
        self.changes.lock().unwrap_or_else(|e| e.into_inner())
    }

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

/// `2026-11-21T03:13:36.123Z`: UTC, millisecond precision, for the access log.
pub fn utc_timestamp(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let (days, rest) = ((seconds / 86_400) as i64, seconds % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since_epoch.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        let at = |secs: u64| utc_timestamp(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20.000Z");
        assert_eq!(
            utc_timestamp(UNIX_EPOCH + Duration::from_millis(4_102_444_799_999)),
            "2099-12-31T23:59:59.999Z"
        );
    }
}
