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
//! A [`Server`] can be killed abruptly, like a crashed process: the listener
//! closes and every open connection is cut. The node simulator relies on it.
//!
//! **Limits.** At most [`ServerOptions::max_connections`] client connections
//! are open at once; the next one is answered `503` at once and closed, so a
//! connection flood costs a bounded number of threads and never a hang. A
//! panic while serving one connection ends that connection only, is logged,
//! and is counted in [`ServerCounters`].

use super::conn::{self, Handler};
use super::write::write_response;
use super::{Response, Version};
use std::collections::{HashMap, VecDeque};
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
    /// Connections whose handler panicked (each ended only that connection).
    pub panics: AtomicU64,
}

/// A running server. Dropping it or calling [`Server::kill`] stops it.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

/// How long a worker thread with nothing to serve waits before it ends.
/// Reusing threads spares a thread start per connection; ending idle ones
/// gives their memory back after a burst.
pub const WORKER_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the acceptor, the worker threads and the killer share.
struct Shared {
    options: ServerOptions,
    stopping: AtomicBool,
    /// A clone of every connection being served, so a kill can cut them all.
    connections: Mutex<HashMap<u64, TcpStream>>,
    next_connection: AtomicU64,
    /// Connections accepted and not yet finished (queued or being served).
    open: AtomicUsize,
    queue: Mutex<Queue>,
    /// Signals a waiting worker that a connection was queued.
    work: Condvar,
    counters: Arc<ServerCounters>,
}

/// Connections handed off by the acceptor, and the workers waiting for them.
#[derive(Default)]
struct Queue {
    waiting: VecDeque<TcpStream>,
    idle_workers: usize,
}

impl Shared {
    fn connections(&self) -> MutexGuard<'_, HashMap<u64, TcpStream>> {
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
        let shared = Arc::new(Shared {
            options,
            stopping: AtomicBool::new(false),
            connections: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            counters,
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("{label}-accept"))
                .spawn(move || accept_loop(&listener, &handler, &shared))?
        };
        Ok(Server {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
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

    /// Client connections currently open.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
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
        for stream in self.shared.queue().waiting.drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
        self.shared.work.notify_all();
        for (_, stream) in self.shared.connections().drain() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Blocks until the server is killed from another thread (a foreground
    /// process runs until it is itself killed).
    pub fn wait(mut self) {
        self.join();
    }

    /// Like [`Server::wait`], for owners that cannot give the server up.
    pub fn join(&mut self) {
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }

    pub fn is_running(&self) -> bool {
        self.acceptor.is_some()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn accept_loop<H: Handler + Send + Sync + 'static>(
    listener: &TcpListener,
    handler: &Arc<H>,
    shared: &Arc<Shared>,
) {
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(error) => {
                if shared.stopping.load(Ordering::SeqCst) {
                    return;
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
        if shared.open.load(Ordering::SeqCst) >= shared.options.max_connections {
            shared.counters.refused.fetch_add(1, Ordering::Relaxed);
            refuse_overloaded(stream, shared.options.max_connections);
            continue;
        }
        shared.open.fetch_add(1, Ordering::SeqCst);
        shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
        dispatch(stream, handler, shared);
    }
}

/// Hands a new connection to an idle worker, or to a new one if none is
/// idle. The acceptor does nothing slower than this, so it keeps draining the
/// listen backlog (128 in std, which cannot be raised without FFI) even when
/// hundreds of clients connect at once.
fn dispatch<H: Handler + Send + Sync + 'static>(
    stream: TcpStream,
    handler: &Arc<H>,
    shared: &Arc<Shared>,
) {
    {
        let mut queue = shared.queue();
        // Only queue what a waiting worker is sure to take.
        if queue.idle_workers > queue.waiting.len() {
            queue.waiting.push_back(stream);
            drop(queue);
            shared.work.notify_one();
            return;
        }
    }
    let handler = Arc::clone(handler);
    let worker_shared = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .name(format!("{}-conn", shared.options.label))
        .stack_size(shared.options.stack_bytes)
        .spawn(move || work(stream, &*handler, &worker_shared));
    if spawned.is_err() {
        // No thread to be had: the client is refused (its socket closed with
        // the failed closure) rather than queued.
        shared.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A worker: serves its first connection, then whatever is handed to it,
/// until it has been idle for [`WORKER_IDLE_TIMEOUT`] or the server stops.
fn work<H: Handler>(first: TcpStream, handler: &H, shared: &Shared) {
    let mut next = Some(first);
    while let Some(stream) = next.take() {
        serve_registered(stream, handler, shared);
        next = wait_for_work(shared);
    }
}

fn wait_for_work(shared: &Shared) -> Option<TcpStream> {
    let mut queue = shared.queue();
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return None;
        }
        if let Some(stream) = queue.waiting.pop_front() {
            return Some(stream);
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

/// Serves one connection, registered so that a kill can cut it.
fn serve_registered<H: Handler>(stream: TcpStream, handler: &H, shared: &Shared) {
    let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
    if let Ok(clone) = stream.try_clone() {
        shared.connections().insert(id, clone);
    }
    // A kill sets the flag before it cuts the registered connections, so a
    // connection registered after that sees the flag here.
    if !shared.stopping.load(Ordering::SeqCst) {
        serve_guarded(stream, handler, shared);
    }
    shared.connections().remove(&id);
    shared.open.fetch_sub(1, Ordering::SeqCst);
}

/// Serves one connection; a panic in it ends that connection only.
fn serve_guarded<H: Handler>(stream: TcpStream, handler: &H, shared: &Shared) {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        conn::serve(stream, handler);
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

    /// Answers with the id of the thread that served the request.
    struct WhichThread;

    impl Handler for WhichThread {
        fn handle(&self, _request: Request, _peer: SocketAddr) -> Response {
            Response::new(200).with_body(format!("{:?}", thread::current().id()).into_bytes())
        }
    }

    fn start(max_connections: usize) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let options = ServerOptions {
            label: "test".into(),
            stack_bytes: 128 * 1024,
            max_connections,
        };
        Server::start(listener, Arc::new(WhichThread), options, Arc::default()).expect("start")
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
                answer.rsplit("\r\n\r\n").next().expect("body").to_string()
            })
            .collect();
        // One after another, the same few threads serve all twenty; a thread
        // per connection would show twenty.
        assert!(
            threads.len() <= 3,
            "{} threads for 20 sequential connections",
            threads.len()
        );
        assert_eq!(server.counters().accepted.load(Ordering::SeqCst), 20);
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
