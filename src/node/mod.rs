//! A node: an HTTP server for the booking API with its own LRU cache over the
//! shared SQLite database. It runs as a thread set inside the relay process or
//! alone as `bookrelay node`; it knows nothing of the relay.
//!
//! **One thread per connection** ([`crate::http::server`] says why), each
//! with a [`CONNECTION_STACK_BYTES`] stack: a slow SQLite write holds up only
//! its own connection.
//!
//! **Coherence.** Before every cached read the node polls the store's change
//! feed (one `PRAGMA data_version`, a shared-memory read) and drops the ids any
//! writer, in this process or another, committed since the last poll. So once
//! a write has been answered 2xx, no node serves the old value.

pub mod routes;

use crate::cache::{Cache, Lookup};
use crate::http::conn::Handler;
use crate::http::server::{Server, ServerOptions, DEFAULT_MAX_CONNECTIONS};
use crate::http::{Request, Response};
use crate::json;
use crate::store::{self, ChangeFeed, Changes, Store};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
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
    in_progress: AtomicU64,
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
            in_progress: AtomicU64::new(0),
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

    /// Requests whose body has arrived and whose answer is not yet built.
    /// Lets an observer (a test) act at a moment the node is known to be
    /// working on a request, rather than after a guessed sleep.
    pub fn requests_in_progress(&self) -> u64 {
        self.in_progress.load(Ordering::SeqCst)
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
    ///
    /// The feed stays locked until the cache has dropped the ids: a poll
    /// consumes the changes, so a reader that polled in between would see
    /// none and could still find the old entry.
    fn forget_changed_bookings(&self) {
        let mut feed = self.feed.lock().unwrap_or_else(|e| e.into_inner());
        match feed.poll() {
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
        let _counted = InProgress::enter(&self.in_progress);
        routes::handle(self, &request)
    }

    fn decorate(&self, response: &mut Response) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        response.headers.push(("X-Node", self.name.clone()));
    }
}

/// One request counted in [`Node::requests_in_progress`]; uncounted on drop,
/// so a handler that panics is not counted forever.
struct InProgress<'a>(&'a AtomicU64);

impl<'a> InProgress<'a> {
    fn enter(counter: &'a AtomicU64) -> InProgress<'a> {
        counter.fetch_add(1, Ordering::SeqCst);
        InProgress(counter)
    }
}

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running node server. Dropping it or calling [`NodeServer::kill`] stops it.
pub struct NodeServer {
    node: Arc<Node>,
    server: Server,
}

impl NodeServer {
    /// Serves `node` on `listener`.
    pub fn start(node: Arc<Node>, listener: TcpListener) -> io::Result<NodeServer> {
        let options = ServerOptions {
            label: format!("node-{}", node.name),
            stack_bytes: CONNECTION_STACK_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        };
        let server = Server::start(listener, Arc::clone(&node), options, Default::default())?;
        Ok(NodeServer { node, server })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Stops abruptly, like a crash: the listener closes and every open
    /// connection is cut. The port is free again on return.
    pub fn kill(&mut self) {
        self.server.kill();
    }

    /// Blocks until the server is killed from another thread.
    pub fn wait(self) {
        self.server.wait();
    }

    pub fn is_running(&self) -> bool {
        self.server.is_running()
    }
}
