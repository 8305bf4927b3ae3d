//! A listening socket served by one thread per connection; used by nodes and
//! by the relay alike.
//!
//! **Why a thread per connection.** The project's design card is blocking std
//! sockets, no async runtime. A thread per connection is the plainest form of
//! that: a slow client or a slow backend holds up only its own connection, the
//! code reads top to bottom, and the kernel does the scheduling. Threads get
//! small stacks so that thousands of idle keep-alive connections cost little
//! memory (the untouched part of a stack costs nothing); a bounded pool would
//! instead make the thousand-and-first client wait for a free thread.
//! Threads are reused: when a connection ends, its thread waits for the next
//! one the acceptor hands off, so a stream of short connections costs no
//! thread start each.
//!
//! **The acceptor only accepts.** std listens with a backlog of 128 and offers
//! no way to raise it, so a burst of new connections (a load generator opening
//! a thousand at once, a relay filling its pool) overflows the kernel's queue
//! unless it is drained at once: an overflowed handshake costs the client a
//! retransmit a second later. Starting a thread takes far longer than an
//! `accept`, so threads are started by a second thread, the spawner, for the
//! connections no idle worker will take; meanwhile they wait, in order, in
//! user space, where waiting costs nothing but a queue entry.
//!
//! A [`Server`] can be killed abruptly, like a crashed process: the listener
//! closes and every open connection is cut. The node simulator relies on it.
//!
//! **Limits.** At most [`ServerOptions::max_connections`] client connections
//! are open at once. At the limit, a connection waiting for a request of
//! which nothing has arrived (an idle keep-alive one, or one that connected
//! and sent nothing) is closed to make room, the oldest first: holding a slot
//! with silence costs an attacker nothing, so silence is what goes first
//! (nginx reuses "reusable" connections the same way). Only when every
//! connection is busy is the next one answered `503` at once and closed, so a
//! connection flood costs a bounded number of threads and never a hang. A
//! panic while serving one connection ends that connection only, is logged,
//! and is counted in [`ServerCounters`].

use super::conn::{self, Client, Handler};
use super::write::write_response;
use super::{Response, Version};
use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Default bound on concurrent client connections per server.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// How a server runs its connections.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Names the threads and log lines.
    pub label: String,
    /// Stack of each connection thread.
    pub stack_bytes: usize,
    /// Concurrent client connections beyond which new ones get 503.
    pub max_connections: usize,
}

/// What a server counts, shared with whoever reports it (`/_relay/metrics`).
#[derive(Debug, Default)]
pub struct ServerCounters {
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// Connections refused with 503 because the limit was reached.
    pub refused: AtomicU64,
    /// Waiting connections closed to make room for a new one at the limit.
    pub shed: AtomicU64,
    /// Connections whose handler panicked (each ended only that connection).
    pub panics: AtomicU64,
}

/// A running server. Dropping it or calling [`Server::kill`] stops it.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptors: Vec<JoinHandle<()>>,
    spawner: Option<JoinHandle<()>>,
}

/// Threads accepting on the listener. With two, one of them is usually
/// running when a burst arrives, even while the other has been preempted by
/// the worker it just woke (see the module notes on the backlog).
const ACCEPTORS: usize = 2;

/// How long a worker thread with nothing to serve waits before it ends.
/// Reusing threads spares a thread start per connection; ending idle ones
/// gives their memory back after a burst.
pub const WORKER_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the acceptor, the worker threads and the killer share.
struct Shared {
    options: ServerOptions,
    /// Accepted sockets come with their options ([`conn::preset_listener`]).
    preset: bool,
    stopping: AtomicBool,
    /// Every connection being served, oldest first, so that a kill can cut
    /// them all and a full server can close the oldest waiting one.
    connections: Mutex<BTreeMap<u64, Arc<Client>>>,
    next_connection: AtomicU64,
    /// Connections accepted and not yet finished (queued or being served),
    /// less those shed (closed to make room, on their way out).
    open: AtomicUsize,
    queue: Mutex<Queue>,
    /// Signals a waiting worker that a connection was queued.
    work: Condvar,
    /// Signals the spawner that a queued connection has no idle worker.
    spawn: Condvar,
    counters: Arc<ServerCounters>,
}

/// A connection as the acceptor registered it.
type Registered = (u64, Arc<Client>);

/// Connections handed off by the acceptor, and the workers waiting for them.
#[derive(Default)]
struct Queue {
    waiting: VecDeque<Registered>,
    idle_workers: usize,
    /// The spawner is waiting to be signalled (else it is starting workers
    /// and looks at the queue again by itself).
    spawner_waiting: bool,
}

impl Shared {
    fn connections(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Client>>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Server {
    /// Serves `handler` on `listener` from a new acceptor thread, one
    /// thread per connection, counting into `counters`.
    pub fn start<H: Handler + Send + Sync + 'static>(
        listener: TcpListener,
        handler: Arc<H>,
        options: ServerOptions,
        counters: Arc<ServerCounters>,
    ) -> io::Result<Server> {
        let addr = listener.local_addr()?;
        let label = options.label.clone();
        let preset = conn::preset_listener(&listener);
        let shared = Arc::new(Shared {
            options,
            preset,
            stopping: AtomicBool::new(false),
            connections: Mutex::new(BTreeMap::new()),
            next_connection: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            spawn: Condvar::new(),
            counters,
        });
        let spawner = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("{label}-spawn"))
                .spawn(move || spawn_loop(&handler, &shared))?
        };
        let mut server = Server {
            addr,
            shared,
            acceptors: Vec::with_capacity(ACCEPTORS),
            spawner: Some(spawner),
        };
        for _ in 0..ACCEPTORS {
            let started = listener.try_clone().and_then(|listener| {
                let shared = Arc::clone(&server.shared);
                thread::Builder::new()
                    .name(format!("{label}-accept"))
                    .spawn(move || accept_loop(&listener, &shared))
            });
            match started {
                Ok(acceptor) => server.acceptors.push(acceptor),
                // Dropping the server stops what was started.
                Err(error) => return Err(error),
            }
        }
        Ok(server)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn counters(&self) -> &Arc<ServerCounters> {
        &self.shared.counters
    }

    /// Worker threads waiting for a connection to serve.
    pub fn idle_workers(&self) -> usize {
        self.shared.queue().idle_workers
    }

    /// Client connections waiting for a request of which nothing has
    /// arrived (idle keep-alive ones, and new ones that sent nothing yet).
    pub fn waiting_connections(&self) -> usize {
        self.shared
            .connections()
            .values()
            .filter(|client| client.is_waiting())
            .count()
    }

    /// Client connections currently open.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Stops abruptly, like a crash: the listener closes and every open
    /// connection is cut, answered or not. The port is free again on return.
    pub fn kill(&mut self) {
        let acceptors = std::mem::take(&mut self.acceptors);
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake each acceptor blocked in accept(): it sees the flag and
        // returns, dropping its handle on the listener.
        for _ in &acceptors {
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        }
        for acceptor in acceptors {
            let _ = acceptor.join();
        }
        if let Some(spawner) = self.spawner.take() {
            stop_spawner(&self.shared, spawner);
        }
        let queued: Vec<Registered> = self.shared.queue().waiting.drain(..).collect();
        for (id, client) in queued {
            let _ = client.stream.shutdown(Shutdown::Both);
            unregister(id, &self.shared);
        }
        self.shared.work.notify_all();
        // Queued or served, every connection is registered; each one's
        // thread unregisters it as it ends.
        for client in self.shared.connections().values() {
            let _ = client.stream.shutdown(Shutdown::Both);
        }
    }

    /// Blocks until the server is killed from another thread (a foreground
    /// process runs until it is itself killed).
    pub fn wait(mut self) {
        self.join();
    }

    /// Like [`Server::wait`], for owners that cannot give the server up.
    pub fn join(&mut self) {
        for acceptor in std::mem::take(&mut self.acceptors) {
            let _ = acceptor.join();
        }
    }

    pub fn is_running(&self) -> bool {
        !self.acceptors.is_empty()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn accept_loop(listener: &TcpListener, shared: &Shared) {
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(error) => {
                if shared.stopping.load(Ordering::SeqCst) {
                    return;
                }
                // The preset listener's read timeout ran out: nobody came.
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) {
                    continue;
                }
                // Out of file descriptors or similar: back off instead of spinning.
                eprintln!("{}: accept failed: {error}", shared.options.label);
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        if shared.open.load(Ordering::SeqCst) >= shared.options.max_connections
            && !shed_oldest_waiting(shared)
        {
            shared.counters.refused.fetch_add(1, Ordering::Relaxed);
            refuse_overloaded(stream, shared.options.max_connections);
            continue;
        }
        shared.open.fetch_add(1, Ordering::SeqCst);
        shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
        // Registered at once: a connection not yet picked up by a worker is
        // waiting for its first request too, and may be shed like any.
        let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
        let client = Arc::new(Client::new(stream, peer, shared.preset));
        shared.connections().insert(id, Arc::clone(&client));
        dispatch((id, client), shared);
    }
}

/// Closes the oldest connection that is waiting for a request, making room
/// for one more; false if every connection is busy. The shed connection no
/// longer counts as open from here on (its thread, on its way out, leaves
/// the count alone).
fn shed_oldest_waiting(shared: &Shared) -> bool {
    let shed = {
        let mut connections = shared.connections();
        let Some(id) = connections
            .iter()
            .find(|(_, client)| client.claim_if_waiting())
            .map(|(id, _)| *id)
        else {
            return false;
        };
        connections.remove(&id)
    };
    if let Some(client) = shed {
        let _ = client.stream.shutdown(Shutdown::Both);
        shared.open.fetch_sub(1, Ordering::SeqCst);
        shared.counters.shed.fetch_add(1, Ordering::Relaxed);
    }
    true
}

/// Queues a new connection for an idle worker, or, if none is idle, for the
/// spawner to start one. The acceptor does nothing slower than this, so it
/// keeps draining the listen backlog (see the module notes).
fn dispatch(connection: Registered, shared: &Shared) {
    let mut queue = shared.queue();
    queue.waiting.push_back(connection);
    // Each idle worker, woken or not yet, takes one queued connection.
    let a_worker_will_take_it = queue.idle_workers >= queue.waiting.len();
    let wake_spawner = !a_worker_will_take_it && queue.spawner_waiting;
    drop(queue);
    if a_worker_will_take_it {
        shared.work.notify_one();
    } else if wake_spawner {
        shared.spawn.notify_one();
    }
}

/// The spawner: starts a worker for each queued connection that no idle
/// worker will take, oldest first, until the server stops.
fn spawn_loop<H: Handler + Send + Sync + 'static>(handler: &Arc<H>, shared: &Arc<Shared>) {
    let mut queue = shared.queue();
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        if queue.waiting.len() <= queue.idle_workers {
            queue.spawner_waiting = true;
            queue = shared.spawn.wait(queue).unwrap_or_else(|e| e.into_inner());
            queue.spawner_waiting = false;
            continue;
        }
        let Some(connection) = queue.waiting.pop_front() else {
            continue;
        };
        drop(queue);
        start_worker(connection, handler, shared);
        queue = shared.queue();
    }
}

/// Ends the spawner (the server is stopping) and waits for it.
fn stop_spawner(shared: &Shared, spawner: JoinHandle<()>) {
    shared.stopping.store(true, Ordering::SeqCst);
    // Taking the lock orders the flag before the spawner's next look at it.
    drop(shared.queue());
    shared.spawn.notify_all();
    let _ = spawner.join();
}

/// Starts a worker thread with `connection` as its first.
fn start_worker<H: Handler + Send + Sync + 'static>(
    connection: Registered,
    handler: &Arc<H>,
    shared: &Arc<Shared>,
) {
    let id = connection.0;
    let handler = Arc::clone(handler);
    let worker_shared = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .name(format!("{}-conn", shared.options.label))
        .stack_size(shared.options.stack_bytes)
        .spawn(move || work(connection, &*handler, &worker_shared));
    if spawned.is_err() {
        // No thread to be had: the client is refused (its socket closed with
        // the failed closure and its registration) rather than queued.
        unregister(id, shared);
    }
}

/// A worker: serves its first connection, then whatever is handed to it,
/// until it has been idle for [`WORKER_IDLE_TIMEOUT`] or the server stops.
fn work<H: Handler>(first: Registered, handler: &H, shared: &Shared) {
    let mut next = Some(first);
    while let Some(connection) = next.take() {
        serve_registered(connection, handler, shared);
        next = wait_for_work(shared);
    }
}

fn wait_for_work(shared: &Shared) -> Option<Registered> {
    let mut queue = shared.queue();
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return None;
        }
        if let Some(connection) = queue.waiting.pop_front() {
            return Some(connection);
        }
        queue.idle_workers += 1;
        let (woken, timeout) = shared
            .work
            .wait_timeout(queue, WORKER_IDLE_TIMEOUT)
            .unwrap_or_else(|e| e.into_inner());
        queue = woken;
        queue.idle_workers -= 1;
        if timeout.timed_out() && queue.waiting.is_empty() {
            return None;
        }
    }
}

/// Serves one registered connection (a kill can cut it, a full server can
/// shed it while it waits), then unregisters it.
fn serve_registered<H: Handler>(connection: Registered, handler: &H, shared: &Shared) {
    let (id, client) = connection;
    // A kill sets the flag before it cuts the registered connections, so a
    // connection registered after that sees the flag here.
    if !shared.stopping.load(Ordering::SeqCst) {
        serve_guarded(client, handler, shared);
    }
    unregister(id, shared);
}

/// Forgets a finished connection. One that was shed is gone already, and
/// was uncounted then.
fn unregister(id: u64, shared: &Shared) {
    if shared.connections().remove(&id).is_some() {
        shared.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves one connection; a panic in it ends that connection only.
fn serve_guarded<H: Handler>(client: Arc<Client>, handler: &H, shared: &Shared) {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        conn::serve(client, handler);
    }));
    if outcome.is_err() {
        shared.counters.panics.fetch_add(1, Ordering::Relaxed);
        eprintln!(
            "{}: a connection handler panicked; that connection was closed",
            shared.options.label
        );
    }
}

/// Answers a connection over the limit from the acceptor itself, without a
/// thread: whatever the client already sent is drained (closing with unread
/// input would reset the connection and could destroy the answer), then a
/// 503 and a close. Nothing here blocks.
fn refuse_overloaded(mut stream: TcpStream, limit: usize) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let mut scratch = [0u8; 4096];
    while matches!(stream.read(&mut scratch), Ok(n) if n > 0) {}
    let mut response = Response::error(
        503,
        &format!("the server is at its limit of {limit} open connections; try again shortly"),
    );
    response.close = true;
    let mut out = Vec::new();
    write_response(&mut out, &response, Version::Http11, false, true);
    let _ = stream.write_all(&out);
    let _ = stream.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Request, Response};
    use std::io::Read;
    use std::sync::mpsc;

    /// Answers with the id of the thread that served the request.
    struct WhichThread;

    impl Handler for WhichThread {
        fn handle(&self, _request: Request, _peer: SocketAddr) -> Response {
            Response::new(200).with_body(format!("{:?}", thread::current().id()).into_bytes())
        }
    }

    /// Holds each request until the test lets it go, saying when one arrived.
    struct Held {
        arrived: Mutex<mpsc::Sender<()>>,
        release: Mutex<mpsc::Receiver<()>>,
    }

    impl Held {
        /// The handler, the arrivals it reports, and the sender that lets
        /// one held request go.
        fn new() -> (Held, mpsc::Receiver<()>, mpsc::Sender<()>) {
            let (arrived, arrivals) = mpsc::channel();
            let (release, released) = mpsc::channel();
            let held = Held {
                arrived: Mutex::new(arrived),
                release: Mutex::new(released),
            };
            (held, arrivals, release)
        }
    }

    impl Handler for Held {
        fn handle(&self, _request: Request, _peer: SocketAddr) -> Response {
            let _ = self.arrived.lock().expect("lock").send(());
            let _ = self.release.lock().expect("lock").recv();
            Response::new(200)
        }
    }

    fn start(max_connections: usize) -> Server {
        start_with(WhichThread, max_connections)
    }

    fn start_with<H: Handler + Send + Sync + 'static>(
        handler: H,
        max_connections: usize,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let options = ServerOptions {
            label: "test".into(),
            stack_bytes: 128 * 1024,
            max_connections,
        };
        Server::start(listener, Arc::new(handler), options, Arc::default()).expect("start")
    }

    /// Sends a keep-alive GET on `stream` and reads its whole answer.
    fn keep_alive_get(stream: &mut TcpStream) -> String {
        stream.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("send");
        let mut input = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let n = stream.read(&mut chunk).expect("read");
            assert!(n > 0, "closed before the answer was complete");
            input.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&input).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .expect("length")
                    .parse()
                    .expect("number");
                if body.len() >= length {
                    return text;
                }
            }
        }
    }

    /// Waits (yielding) until `holds`, for `patience` at most.
    fn until(what: &str, patience: Duration, holds: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + patience;
        while !holds() {
            assert!(
                std::time::Instant::now() < deadline,
                "never {what} within {patience:?}"
            );
            thread::yield_now();
        }
    }

    /// Waits until `count` connections wait for a request.
    fn until_waiting(server: &Server, count: usize) {
        until(&format!("{count} waiting"), Duration::from_secs(10), || {
            server.waiting_connections() == count
        });
    }

    /// Waits until `count` workers wait for a connection.
    fn until_idle_workers(server: &Server, count: usize) {
        until_idle_workers_within(server, count, Duration::from_secs(10));
    }

    fn until_idle_workers_within(server: &Server, count: usize, patience: Duration) {
        until(&format!("{count} idle workers"), patience, || {
            server.idle_workers() == count
        });
    }

    fn close_request(addr: SocketAddr) -> String {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read");
        answer
    }

    #[test]
    fn worker_threads_are_reused_across_connections() {
        let server = start(16);
        let threads: std::collections::HashSet<String> = (0..20)
            .map(|_| {
                let answer = close_request(server.addr());
                assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
                // The client sees the close before the worker is back in
                // line; the next connection is made once it is.
                until_idle_workers(&server, 1);
                answer.rsplit("\r\n\r\n").next().expect("body").to_string()
            })
            .collect();
        // One after another, the one worker serves all twenty; a thread per
        // connection would show twenty.
        assert_eq!(threads.len(), 1, "threads for 20 sequential connections");
        assert_eq!(server.counters().accepted.load(Ordering::SeqCst), 20);
    }

    #[test]
    fn a_client_that_asked_to_close_and_sent_nothing_more_is_not_waited_for() {
        let server = start(16);
        let mut stream = TcpStream::connect(server.addr()).expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // The client still holds its end open and says nothing: a lingering
        // close would keep the worker reading for LINGER_TIMEOUT.
        until_idle_workers_within(&server, 1, conn::LINGER_TIMEOUT / 2);
        drop(stream);
    }

    #[test]
    fn a_close_with_input_left_unread_lingers_until_the_client_is_done() {
        let server = start(16);
        let mut stream = TcpStream::connect(server.addr()).expect("connect");
        // More bytes after a request that asked to close: closing at once
        // with them unread would reset the connection under the answer.
        stream
            .write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET /more HTTP/1.1\r\n")
            .expect("send");
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .expect("the answer arrives whole");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer}");
        assert_eq!(server.idle_workers(), 0, "the worker drains the client");
        drop(stream);
        until_idle_workers(&server, 1);
    }

    #[test]
    fn at_the_limit_the_oldest_waiting_connection_makes_room() {
        let server = start(2);
        let mut oldest = TcpStream::connect(server.addr()).expect("connect");
        assert!(keep_alive_get(&mut oldest).starts_with("HTTP/1.1 200"));
        until_waiting(&server, 1);
        let mut newer = TcpStream::connect(server.addr()).expect("connect");
        assert!(keep_alive_get(&mut newer).starts_with("HTTP/1.1 200"));
        until_waiting(&server, 2);

        // A third client is served, not refused: the oldest idle one goes.
        let answer = close_request(server.addr());
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let mut rest = Vec::new();
        oldest.read_to_end(&mut rest).expect("closed cleanly");
        assert!(rest.is_empty(), "nothing more was sent to the shed client");
        assert!(keep_alive_get(&mut newer).starts_with("HTTP/1.1 200"));
        assert_eq!(server.counters().shed.load(Ordering::SeqCst), 1);
        assert_eq!(server.counters().refused.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn at_the_limit_with_every_connection_busy_the_next_gets_503() {
        let (held, arrivals, release) = Held::new();
        let server = start_with(held, 1);
        let mut busy = TcpStream::connect(server.addr()).expect("connect");
        busy.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("send");
        arrivals.recv().expect("the request reached the handler");

        let answer = close_request(server.addr());
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("limit of 1 open connections"), "{answer}");
        release.send(()).expect("release");
        let mut chunk = [0u8; 256];
        let n = busy.read(&mut chunk).expect("answer");
        assert!(
            chunk[..n].starts_with(b"HTTP/1.1 200"),
            "the busy one is not cut"
        );
        assert_eq!(server.counters().shed.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_burst_of_connections_each_gets_a_thread_of_its_own() {
        let (held, arrivals, release) = Held::new();
        let server = start_with(held, 1000);
        // More at once than std's listen backlog of 128.
        let mut clients: Vec<TcpStream> = (0..300)
            .map(|_| TcpStream::connect(server.addr()).expect("connect"))
            .collect();
        for client in &mut clients {
            client.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("send");
        }
        // Every request is held in its handler at the same time, so each
        // has a worker: none waits behind another connection.
        for _ in 0..300 {
            arrivals.recv().expect("every request reaches the handler");
        }
        assert_eq!(server.idle_workers(), 0);
        for _ in 0..300 {
            release.send(()).expect("release");
        }
        for client in &mut clients {
            let mut chunk = [0u8; 256];
            let n = client.read(&mut chunk).expect("answer");
            assert!(chunk[..n].starts_with(b"HTTP/1.1 200"));
        }
        assert_eq!(server.counters().accepted.load(Ordering::SeqCst), 300);
    }

    #[test]
    fn a_killed_server_cuts_its_connections_and_frees_the_port() {
        let mut server = start(16);
        let addr = server.addr();
        let mut open = TcpStream::connect(addr).expect("connect");
        open.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("send");
        let mut chunk = [0u8; 256];
        assert!(open.read(&mut chunk).expect("answer") > 0);
        server.kill();
        let mut rest = Vec::new();
        let _ = open.read_to_end(&mut rest);
        assert!(
            TcpStream::connect(addr).is_err(),
            "nothing listens any more"
        );
        assert!(TcpListener::bind(addr).is_ok(), "the port is free again");
    }
}
