//! A node: an HTTP server for the booking API with its own LRU cache over the
//! shared SQLite database. It runs as a thread set inside the relay process or
//! alone as `bookrelay node`; it knows nothing of the relay. [`bind`] and
//! [`start_node`] start one; [`routes`] translates HTTP to its booking
//! operations ([`Node::list`], [`Node::create`], [`Node::read_booking`],
//! [`Node::update`], [`Node::delete`]), which own its store and cache.
//!
//! **One thread per connection** ([`crate::http::server`] says why), each
//! with a [`CONNECTION_STACK_BYTES`] stack: a thread waiting for its write's
//! group commit ([`crate::store`]) holds up only its own connection.
//!
//! **Coherence.** Before every cached read the node polls the store's change
//! feed (one `PRAGMA data_version`, a shared-memory read) and drops the ids any
//! writer, in this process or another, committed since the last poll. So once
//! a write has been answered 2xx, no node serves the old value.
//!
//! **Stopping like a crash.** Cutting a killed node's connections does not
//! stop its handler threads, and a thread inside its simulated service time
//! would otherwise wake up and commit a write nobody can be told about (a
//! crashed process commits nothing after its death; the client, or a relay
//! retrying for it, must be free to assume that). So every write runs behind
//! the node's `Liveness` gate and [`NodeServer::kill`] closes the gate
//! before it returns.
//!
//! **Sick, not dead.** [`Node::set_failing`] makes a live node answer every
//! request but `/health` with a 500: the failure a health check cannot see
//! (a broken database connection, a bad deploy), which only the answers
//! themselves reveal. The relay's outlier ejection exists for it.

pub mod routes;

use crate::booking::Booking;
use crate::cache::{Cache, Lookup};
use crate::http::server::{Server, ServerOptions, DEFAULT_MAX_CONNECTIONS};
use crate::json;
use crate::store::{self, ChangeFeed, Changes, Created, Store};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
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

/// Why a node could not start (its port, its database): one sentence for
/// the terminal or the relay's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// Binds `addr`, explaining the usual failures in words.
pub fn bind(addr: &str) -> Result<TcpListener, StartError> {
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
        StartError(format!("cannot listen on {addr}: {why}"))
    })
}

/// Starts one node server on `listener`.
pub fn start_node(config: &NodeConfig, listener: TcpListener) -> Result<NodeServer, StartError> {
    let node = Node::open(config)
        .map_err(|e| StartError(format!("cannot open database {}: {e}", config.db.display())))?;
    NodeServer::start(Arc::new(node), listener)
        .map_err(|e| StartError(format!("cannot start node {}: {e}", config.name)))
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
    liveness: Liveness,
    /// Set: every request but `/health` is answered 500 (a sick node).
    failing: AtomicBool,
}

/// Whether a node may still commit, and whether it is fully dead.
///
/// The gate is a lock rather than a flag because checking a flag and then
/// committing leaves a window: a kill could land between the two and the
/// write would still commit after it. Holding a read guard from the check
/// until the store call returns closes it: [`Liveness::stop`] takes the write
/// lock, so it waits for commits already under way (they belong to before
/// the kill) and every later write finds the node dead. Writers share the
/// read lock, so the gate never serializes them: concurrent writes still
/// meet in one group commit of the store's writer.
///
/// Dead is a second state, reached only once the connections are cut too:
/// the handlers stopped by the kill wait for it before they answer, so a
/// killed node answers nothing, as a crashed one could not. It has its own
/// mutex and condvar because an `RwLock` cannot be waited on.
struct Liveness {
    alive: RwLock<bool>,
    dead: Mutex<bool>,
    died: Condvar,
}

impl Liveness {
    fn new() -> Liveness {
        Liveness {
            alive: RwLock::new(true),
            dead: Mutex::new(false),
            died: Condvar::new(),
        }
    }

    /// `write` if still alive, with no stop getting past the gate until it
    /// returns.
    fn while_alive<T>(&self, write: impl FnOnce() -> T) -> Option<T> {
        // A poisoned lock still holds a valid bool: read guards never
        // poison it, and `stop` cannot panic while it holds the write guard.
        let alive = self.alive.read().unwrap_or_else(|e| e.into_inner());
        alive.then(write)
    }

    /// Sleeps for `delay` unless the node dies first; `false` if it did.
    fn sleep(&self, delay: Duration) -> bool {
        let dead = self.lock_dead();
        let (dead, _) = self
            .died
            .wait_timeout_while(dead, delay, |dead| !*dead)
            .unwrap_or_else(|e| e.into_inner());
        !*dead
    }

    /// Returns once the node is dead. Called only after the gate was found
    /// closed, and [`Liveness::stop`] always goes on from there to dead.
    fn wait_dead(&self) {
        let dead = self.lock_dead();
        let _dead = self
            .died
            .wait_while(dead, |dead| !*dead)
            .unwrap_or_else(|e| e.into_inner());
    }

    /// Closes the gate (waiting for the commits under way), runs `cut`, then
    /// declares the node dead and wakes every handler waiting on it.
    fn stop(&self, cut: impl FnOnce()) {
        *self.alive.write().unwrap_or_else(|e| e.into_inner()) = false;
        cut();
        *self.lock_dead() = true;
        self.died.notify_all();
    }

    fn lock_dead(&self) -> std::sync::MutexGuard<'_, bool> {
        self.dead.lock().unwrap_or_else(|e| e.into_inner())
    }
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
            liveness: Liveness::new(),
            failing: AtomicBool::new(false),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The extra service time per booking request (`--node-delay`).
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// Makes the node sick (`true`: every request but `/health` gets a 500)
    /// or well again.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
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

    // The booking operations: the only way to the store, and the one place
    // that keeps this node's cache coherent with its own writes. Each write
    // is `None` if the node was killed (see `write`).

    /// Up to `limit` bookings in id order, after the id `after`.
    pub fn list(&self, after: Option<&str>, limit: usize) -> Result<Vec<Booking>, store::Error> {
        self.store.list(after, limit)
    }

    /// Commits a new booking (under `key`, an `Idempotency-Key` and the body
    /// it came with: a repeat is replayed), then drops its id from the cache.
    pub fn create(
        &self,
        booking: &Booking,
        key: Option<(&str, &[u8])>,
    ) -> Option<Result<Created, store::Error>> {
        let result = self.write(|store| store.create(booking, key))?;
        if let Ok(Created::New(_)) = &result {
            self.cache.invalidate(&booking.booking_id);
        }
        Some(result)
    }

    /// Commits `patch` to booking `id`, then drops the id from the cache.
    pub fn update(&self, id: &str, patch: &json::Value) -> Option<Result<Booking, store::Error>> {
        let result = self.write(|store| store.update(id, |current| current.patched(patch)))?;
        self.cache.invalidate(id);
        Some(result)
    }

    /// Deletes booking `id`, then drops it from the cache.
    pub fn delete(&self, id: &str) -> Option<Result<(), store::Error>> {
        let result = self.write(|store| store.delete(id))?;
        self.cache.invalidate(id);
        Some(result)
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

    /// Runs `write` (a store call that commits) unless the node has been
    /// killed, and holds off a kill until it returns. Every write goes
    /// through here (`Liveness` says why).
    ///
    /// `None` if killed, and only once the kill has cut the connections, so
    /// whatever the caller then answers reaches no client.
    fn write<T>(&self, write: impl FnOnce(&Store) -> T) -> Option<T> {
        let written = self.liveness.while_alive(|| write(&self.store));
        if written.is_none() {
            self.liveness.wait_dead();
        }
        written
    }

    /// Waits out the simulated service time; `false` if the node was killed
    /// meanwhile (its connections are then cut already). A kill ends the
    /// wait at once, so a killed node's threads do not linger for the delay.
    fn simulate_service_time(&self) -> bool {
        self.delay.is_zero() || self.liveness.sleep(self.delay)
    }

    /// The `/stats` document. `writes`, `commits` and `largest_batch` are the
    /// group-commit counters of this process's writer for the database file
    /// (shared by the nodes of one process; see [`crate::store`]): writes run,
    /// transactions committed, most writes in one transaction.
    pub fn stats_json(&self) -> String {
        let stats = self.cache.stats();
        let writes = self.store.write_stats();
        json::Object::new()
            .str("node", &self.name)
            .uint("requests", self.requests())
            .uint("cache_hits", stats.hits)
            .uint("cache_misses", stats.misses)
            .uint("cache_entries", stats.entries)
            .uint("cache_evictions", stats.evictions)
            .uint("cache_invalidations", stats.invalidations)
            .uint("writes", writes.writes)
            .uint("commits", writes.commits)
            .uint("largest_batch", writes.largest_batch)
            .finish()
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

    /// Stops abruptly, like a crash: the work in progress stops (nothing it
    /// was handling commits after this returns, nothing more is answered),
    /// the listener closes and every open connection is cut. The port is
    /// free again on return. A revived node is a new [`Node`]; this one
    /// stays dead.
    ///
    /// The order is the point: writes stop first (waiting for the commits
    /// under way, a few milliseconds; at worst the store's busy timeout), so
    /// nothing commits between the cut and the stop; handlers are woken
    /// last, so none of them answers before its connection is gone.
    pub fn kill(&mut self) {
        let server = &mut self.server;
        self.node.liveness.stop(|| server.kill());
    }

    /// Blocks until the server is killed from another thread.
    pub fn wait(mut self) {
        self.server.join();
    }

    pub fn is_running(&self) -> bool {
        self.server.is_running()
    }
}

impl Drop for NodeServer {
    /// A dropped server is killed in full: dropping only the [`Server`]
    /// would cut the connections but leave their handlers free to commit.
    fn drop(&mut self) {
        self.kill();
    }
}
