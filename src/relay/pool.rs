//! Idle keep-alive connections to one node, reused across client requests so
//! that a request costs no `connect` (and the node no thread start).
//!
//! The pool knows no balancer and no HTTP beyond owning each connection's read
//! buffer. Idle connections are taken last-in first-out: the most recently used
//! one is the least likely to have been closed by the node meanwhile. A
//! connection the node did close while idle is detected by the forwarder on
//! first use and replaced (see `forward.rs`).

use crate::http::buffer::InputBuffer;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Most idle connections kept per node; beyond it, returned connections close.
/// Enough for the relay's busiest moments without tying up node threads forever.
pub const MAX_IDLE_PER_NODE: usize = 256;

/// How long a connect to a node may take. Loopback nodes answer at once or
/// refuse at once; this only bounds a node on an unreachable address.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A node slower than this to answer gets the client a 504 (SPEC §4).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// One connection to a node with its unread input.
pub struct Upstream {
    pub stream: TcpStream,
    pub input: InputBuffer,
}

/// The idle connections to one node, and how many were ever opened.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<Vec<Upstream>>,
    opened: AtomicU64,
}

impl Pool {
    pub fn new() -> Pool {
        Pool::default()
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Upstream>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle connection, if any.
    pub fn take(&self) -> Option<Upstream> {
        self.idle().pop()
    }

    /// Gives back a connection whose last exchange left it clean and open.
    pub fn put(&self, upstream: Upstream) {
        let mut idle = self.idle();
        if idle.len() < MAX_IDLE_PER_NODE {
            idle.push(upstream);
        }
    }

    /// A new connection to `addr`.
    pub fn connect(&self, addr: SocketAddr) -> io::Result<Upstream> {
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        stream.set_write_timeout(Some(ANSWER_TIMEOUT))?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(Upstream {
            stream,
            input: InputBuffer::new(),
        })
    }

    /// Connections opened to this node since the relay started.
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Idle connections right now.
    pub fn idle_count(&self) -> usize {
        self.idle().len()
    }

    /// Closes every idle connection (the node was killed or removed).
    pub fn clear(&self) {
        self.idle().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn connections_are_reused_last_in_first_out_and_counted() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let pool = Pool::new();
        let a = pool.connect(addr).expect("a");
        let b = pool.connect(addr).expect("b");
        let b_port = b.stream.local_addr().expect("local").port();
        assert_eq!(pool.opened(), 2);
        pool.put(a);
        pool.put(b);
        assert_eq!(pool.idle_count(), 2);
        let again = pool.take().expect("idle");
        assert_eq!(again.stream.local_addr().expect("local").port(), b_port);
        pool.clear();
        assert!(pool.take().is_none());
        assert_eq!(pool.opened(), 2);
    }

    #[test]
    fn connecting_to_a_closed_port_fails() {
        let addr = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr")
        };
        assert!(Pool::new().connect(addr).is_err());
    }
}
