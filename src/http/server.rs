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

use super::conn::{self, Handler};
use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// A running server. Dropping it or calling [`Server::kill`] stops it.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

/// What the acceptor, the connection threads and the killer share.
struct Shared {
    label: String,
    stack_bytes: usize,
    stopping: AtomicBool,
    /// A clone of every open client socket, so a kill can cut them all.
    connections: Mutex<HashMap<u64, TcpStream>>,
    next_connection: AtomicU64,
    /// Connections whose handler panicked (each ended only that connection).
    panics: AtomicU64,
}

impl Shared {
    fn connections(&self) -> MutexGuard<'_, HashMap<u64, TcpStream>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Server {
    /// Serves `handler` on `listener` from a new acceptor thread; each
    /// connection gets a thread with a `stack_bytes` stack. `label` names the
    /// threads and log lines.
    pub fn start<H: Handler + Send + Sync + 'static>(
        listener: TcpListener,
        handler: Arc<H>,
        label: &str,
        stack_bytes: usize,
    ) -> io::Result<Server> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            label: label.to_string(),
            stack_bytes,
            stopping: AtomicBool::new(false),
            connections: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(0),
            panics: AtomicU64::new(0),
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

    /// Connections whose handler panicked so far.
    pub fn panics(&self) -> u64 {
        self.shared.panics.load(Ordering::Relaxed)
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
                eprintln!("{}: accept failed: {error}", shared.label);
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
        let handler = Arc::clone(handler);
        let worker_shared = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name(format!("{}-conn", shared.label))
            .stack_size(shared.stack_bytes)
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
        shared.panics.fetch_add(1, Ordering::Relaxed);
        eprintln!(
            "{}: a connection handler panicked; that connection was closed",
            shared.label
        );
    }
}
