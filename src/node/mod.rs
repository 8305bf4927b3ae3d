//! A node: an HTTP server for the booking API with its own LRU cache over the
//! shared SQLite database. It runs as a thread set inside the relay process or
//! alone as `bookrelay node`; it knows nothing of the relay.
//!
//! **One thread per connection.** The project's design card is blocking std
//! sockets, no async runtime. A thread per connection is the plainest form of
//! that: a slow client or a slow SQLite write holds up only its own
//! connection, the code reads top to bottom, and the kernel does the
//! scheduling. Threads get small stacks ([`CONNECTION_STACK_BYTES`]) so that
//! thousands of idle keep-alive connections cost little memory; a bounded pool
//! would instead make the thousand-and-first client wait for a free thread.
//!
//! **Coherence.** Before every cached read the node polls the store's change
//! feed (one `PRAGMA data_version`, a shared-memory read) and drops the ids any
//! writer, in this process or another, committed since the last poll. So once
//! a write has been answered 2xx, no node serves the old value.

pub mod routes;

use crate::cache::{Cache, Lookup};
use crate::http::conn::{self, Handler};
use crate::http::{Request, Response};
use crate::json;
use crate::store::{self, ChangeFeed, Changes, Store};
use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Stack of each connection thread. Parsing and SQLite's statement execution
/// need well under this; the untouched part of a stack costs no memory.
pub const CONNECTION_STACK_BYTES: usize = 256 * 1024;

/// What a node is made of.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub db: PathBuf,
    pub cache_capacity: usize,
    /// `None`: cache entries never age out.
    pub cache_ttl: Option<Duration>,
    /// Simulated extra service time per booking request (a slow node).
    pub delay: Duration,
}

/// A node's state, shared by all its connection threads.
pub struct Node {
    name: String,
    store: Store,
    cache: Cache,
    feed: Mutex<ChangeFeed>,
    delay: Duration,
    requests: AtomicU64,
}

impl Node {
    /// Opens the database (creating it if missing) and an empty cache.
    pub fn open(config: &NodeConfig) -> Result<Node, store::Error> {
        let store = Store::open(&config.db)?;
        let feed = store.change_feed()?;
        Ok(Node {
            name: config.name.clone(),
            store,
            cache: Cache::new(config.cache_capacity, config.cache_ttl),
            feed: Mutex::new(feed),
            delay: config.delay,
            requests: AtomicU64::new(0),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Requests answered so far, of any kind.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// One booking's JSON, and whether it came from the cache.
    pub fn read_booking(&self, id: &str) -> Result<(Option<Arc<str>>, bool), store::Error> {
        self.forget_changed_bookings();
        let ticket = match self.cache.lookup(id, Instant::now()) {
            Lookup::Hit(json) => return Ok((Some(json), true)),
            Lookup::Miss(ticket) => ticket,
        };
        let Some(booking) = self.store.get(id)? else {
            return Ok((None, false));
        };
        let json: Arc<str> = Arc::from(booking.to_json());
        self.cache
            .put(id, Arc::clone(&json), ticket, Instant::now());
        Ok((Some(json), false))
    }

    /// Drops from the cache whatever any writer committed since the last look.
    fn forget_changed_bookings(&self) {
        let changes = self.feed.lock().unwrap_or_else(|e| e.into_inner()).poll();
        match changes {
            Ok(Changes::None) => {}
            Ok(Changes::Ids(ids)) => {
                self.cache.invalidate_all_of(ids.iter().map(String::as_str));
            }
            // Unknown changes, or the feed could not be read: be safe, start cold.
            Ok(Changes::All) | Err(_) => self.cache.clear(),
        }
    }

    fn simulate_service_time(&self) {
        if !self.delay.is_zero() {
            thread::sleep(self.delay);
        }
    }

    /// The `/stats` document.
    pub fn stats_json(&self) -> String {
        let stats = self.cache.stats();
        let mut body = String::from("{\"node\":");
        json::write_str(&mut body, &self.name);
        body.push_str(&format!(
            ",\"requests\":{},\"cache_hits\":{},\"cache_misses\":{},\"cache_entries\":{},\
             \"cache_evictions\":{},\"cache_invalidations\":{}}}",
            self.requests(),
            stats.hits,
            stats.misses,
            stats.entries,
            stats.evictions,
            stats.invalidations
        ));
        body
    }
}

impl Handler for Node {
    fn precheck(&self, request: &Request) -> Option<Response> {
        routes::precheck(request)
    }

    fn handle(&self, request: Request, _peer: SocketAddr) -> Response {
        routes::handle(self, &request)
    }

    fn decorate(&self, response: &mut Response) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        response.headers.push(("X-Node", self.name.clone()));
    }
}

/// A running node server. Dropping it or calling [`NodeServer::kill`] stops it.
pub struct NodeServer {
    node: Arc<Node>,
    addr: SocketAddr,
    shared: Arc<ServerShared>,
    acceptor: Option<JoinHandle<()>>,
}

/// What the acceptor and the killer share: the stop flag and every open
/// client socket, so a kill can cut them all like a crash would.
struct ServerShared {
    stopping: AtomicBool,
    connections: Mutex<HashMap<u64, TcpStream>>,
    next_connection: AtomicU64,
}

impl ServerShared {
    fn connections(&self) -> MutexGuard<'_, HashMap<u64, TcpStream>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl NodeServer {
    /// Serves `node` on `listener` from a new acceptor thread.
    pub fn start(node: Arc<Node>, listener: TcpListener) -> io::Result<NodeServer> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(ServerShared {
            stopping: AtomicBool::new(false),
            connections: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(0),
        });
        let acceptor = {
            let node = Arc::clone(&node);
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("node-{}-accept", node.name))
                .spawn(move || accept_loop(&listener, &node, &shared))?
        };
        Ok(NodeServer {
            node,
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Stops abruptly, like a crash: the listener closes and every open
    /// connection is cut, answered or not. The port is free again on return.
    pub fn kill(&mut self) {
        let Some(acceptor) = self.acceptor.take() else {
            return;
        };
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the acceptor blocked in accept(); it sees the flag and returns,
        // dropping the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let _ = acceptor.join();
        for (_, stream) in self.shared.connections().drain() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Blocks until the server is killed from another thread (the
    /// foreground `bookrelay node` runs until its process is).
    pub fn wait(mut self) {
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }

    pub fn is_running(&self) -> bool {
        self.acceptor.is_some()
    }
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn accept_loop(listener: &TcpListener, node: &Arc<Node>, shared: &Arc<ServerShared>) {
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(error) => {
                if shared.stopping.load(Ordering::SeqCst) {
                    return;
                }
                // Out of file descriptors or similar: back off instead of spinning.
                eprintln!("node {}: accept failed: {error}", node.name);
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
        match stream.try_clone() {
            Ok(clone) => {
                shared.connections().insert(id, clone);
            }
            Err(_) => continue,
        }
        let node = Arc::clone(node);
        let worker_shared = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name(format!("node-{}-conn", node.name))
            .stack_size(CONNECTION_STACK_BYTES)
            .spawn(move || {
                serve_guarded(stream, &node);
                worker_shared.connections().remove(&id);
            });
        if spawned.is_err() {
            // No thread to be had: the client is refused rather than queued.
            if let Some(stream) = shared.connections().remove(&id) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Serves one connection; a panic in it ends that connection only.
fn serve_guarded(stream: TcpStream, node: &Node) {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        conn::serve(stream, node);
    }));
    if outcome.is_err() {
        eprintln!(
            "node {}: a connection handler panicked; connection closed",
            node.name
        );
    }
}
