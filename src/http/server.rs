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
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
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

/// What the acceptor, the connection threads and the killer share.
struct Shared {
    options: ServerOptions,
    stopping: AtomicBool,
    /// A clone of every open client socket, so a kill can cut them all.
    connections: Mutex<HashMap<u64, TcpStream>>,
    next_connection: AtomicU64,
    counters: Arc<ServerCounters>,
}

impl Shared {
    fn connections(&self) -> MutexGuard<'_, HashMap<u64, TcpStream>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
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

    /// Client connections currently open.
    pub fn open_connections(&self) -> usize {
        self.shared.connections().len()
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
        if shared.connections().len() >= shared.options.max_connections {
            shared.counters.refused.fetch_add(1, Ordering::Relaxed);
            refuse_overloaded(stream, shared.options.max_connections);
            continue;
        }
        shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
        let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
        match stream.try_clone() {
            Ok(clone) => {
                shared.connections().insert(id, clone);
            }
            Err(_) => continue,
        }
        let handler = Arc::clone(handler);
        let worker_shared = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name(format!("{}-conn", shared.options.label))
            .stack_size(shared.options.stack_bytes)
            .spawn(move || {
                serve_guarded(stream, &*handler, &worker_shared);
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
