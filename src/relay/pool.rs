//! Idle keep-alive connections to one node, reused across client requests so
//! that a request costs no `connect` (and the node no thread start).
//!
//! The pool knows no balancer and no HTTP beyond owning each connection's read
//! buffer. Idle connections are taken last-in first-out: the most recently used
//! one is the least likely to have been closed by the node meanwhile.
//!
//! **A connection handed out is quiet.** Just before it is reused, a
//! non-blocking peek checks that the node has neither closed it (a node
//! closes idle connections on its own clock) nor written anything unasked:
//! bytes that arrived with no request outstanding would be read as the answer
//! to the next client's request, and from then on every client would get the
//! previous one's answer. Such a connection is dropped, never repaired
//! (nginx's keepalive module closes a cached connection on any read event for
//! the same reason). Idle connections wait non-blocking, so that check is a
//! single system call on the request's path; the switch back to blocking
//! happens once the request is written, while the node is working on it.
//!
//! **Idle ones do not linger.** A connection idle for [`IDLE_TIMEOUT`] is
//! closed, well before a node's own 15 s limit, so the relay never holds
//! sockets the node has given up on (they would sit in `CLOSE-WAIT`).

use crate::http::upstream::{Peek, Upstream};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Most idle connections kept per node; beyond it, returned connections close.
/// Enough for the relay's busiest moments without tying up node threads forever.
pub const MAX_IDLE_PER_NODE: usize = 1024;

/// How long a connect to a node may take. Loopback nodes answer at once or
/// refuse at once; this only bounds a node on an unreachable address.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A node that takes no byte of a request for this long is given up (the
/// same bound as waiting for its answer).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// An idle connection older than this is closed: under the 15 s after which
/// nodes close idle connections themselves, so the relay closes first.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// One idle connection and since when it has been idle.
struct Idle {
    upstream: Upstream,
    since: Instant,
}

/// The idle connections to one node, and how many were ever opened.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
    opened: AtomicU64,
    /// Idle connections dropped at reuse because the node had closed them
    /// or written to them unasked.
    discarded: AtomicU64,
}

impl Pool {
    pub fn new() -> Pool {
        Pool::default()
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A quiet idle connection, if any: the newest one that is still open,
    /// has nothing unread and has not been idle too long.
    pub fn take(&self) -> Option<Upstream> {
        let now = Instant::now();
        loop {
            let idle = {
                let mut idle = self.idle();
                let newest = idle.pop()?;
                if now.duration_since(newest.since) >= IDLE_TIMEOUT {
                    // The rest are older still.
                    idle.clear();
                    return None;
                }
                newest
            };
            let mut upstream = idle.upstream;
            if upstream.peek_now() == Peek::Quiet {
                return Some(upstream);
            }
            self.discarded.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Gives back a connection whose last exchange left it clean and open.
    /// It idles non-blocking, so the check before its reuse is one peek (a
    /// connection that cannot be switched is closed instead).
    pub fn put(&self, mut upstream: Upstream) {
        if upstream.park().is_err() {
            return;
        }
        let mut idle = self.idle();
        if idle.len() < MAX_IDLE_PER_NODE {
            idle.push(Idle {
                upstream,
                since: Instant::now(),
            });
        }
    }

    /// A new connection to `addr`.
    pub fn connect(&self, addr: SocketAddr) -> io::Result<Upstream> {
        let upstream = Upstream::connect(addr, CONNECT_TIMEOUT)?;
        upstream.stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(upstream)
    }

    /// Closes connections idle for [`IDLE_TIMEOUT`] or longer; returns how many.
    pub fn evict_idle(&self, now: Instant) -> usize {
        let mut idle = self.idle();
        let before = idle.len();
        idle.retain(|c| now.duration_since(c.since) < IDLE_TIMEOUT);
        before - idle.len()
    }

    /// Connections opened to this node since the relay started.
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Idle connections found closed or holding stray bytes, and dropped.
    pub fn discarded(&self) -> u64 {
        self.discarded.load(Ordering::Relaxed)
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
    use std::io::{Read, Write};
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
    fn a_connection_the_server_closed_or_wrote_to_is_never_handed_out() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let pool = Pool::new();
        let quiet = pool.connect(addr).expect("quiet");
        let closed = pool.connect(addr).expect("closed");
        let chatty = pool.connect(addr).expect("chatty");
        let (_quiet_peer, _) = listener.accept().expect("accept");
        let (closed_peer, _) = listener.accept().expect("accept");
        let (mut chatty_peer, _) = listener.accept().expect("accept");
        let quiet_port = quiet.stream.local_addr().expect("local").port();
        let closed_probe = closed.stream.try_clone().expect("clone");
        let chatty_probe = chatty.stream.try_clone().expect("clone");
        pool.put(quiet);
        pool.put(closed);
        pool.put(chatty);
        drop(closed_peer);
        chatty_peer
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged")
            .expect("stray bytes");
        // Wait (blocking peeks on clones of the same sockets) until the
        // close and the stray bytes have reached the relay's side.
        assert_eq!(closed_probe.peek(&mut [0u8; 1]).expect("eof"), 0);
        assert!(chatty_probe.peek(&mut [0u8; 1]).expect("data") > 0);
        let taken = pool.take().expect("the quiet one");
        assert_eq!(taken.stream.local_addr().expect("local").port(), quiet_port);
        assert_eq!(pool.discarded(), 2);
        assert!(pool.take().is_none());
    }

    #[test]
    fn idle_connections_are_closed_after_the_idle_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let pool = Pool::new();
        pool.put(pool.connect(addr).expect("connect"));
        let (mut peer, _) = listener.accept().expect("accept");
        assert_eq!(pool.evict_idle(Instant::now()), 0);
        assert_eq!(pool.evict_idle(Instant::now() + IDLE_TIMEOUT), 1);
        assert_eq!(pool.idle_count(), 0);
        // Closed for real: the node sees end of file, not a half-open socket.
        assert_eq!(peer.read(&mut [0u8; 1]).expect("eof"), 0);
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
