//! After a `101 Switching Protocols` (WebSocket), the relay stops speaking
//! HTTP on that connection and copies bytes both ways between client and
//! node until they are done.
//!
//! One thread per direction (this one and a scoped helper), each a plain
//! blocking copy through a fixed buffer. An end of file in one direction is
//! passed on as a half-close (`shutdown(Write)`), so either side can finish
//! sending while the other still talks, as TCP allows; an error in either
//! direction ends both. The tunnel is closed when no byte has moved in either
//! direction for the idle limit (the relay's `--read-timeout`), so a
//! forgotten tunnel cannot hold its threads and sockets for ever.

use crate::http::upstream::Upstream;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Buffer of each direction: a WebSocket frame or a TCP segment's worth.
const TUNNEL_BUFFER_BYTES: usize = 16 * 1024;

/// Stack of the helper thread: it copies bytes and calls nothing deep.
const PUMP_STACK_BYTES: usize = 64 * 1024;

/// When bytes last moved in either direction.
struct Activity {
    started: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

/// Copies bytes between `client` and the node until both directions have
/// ended, or either fails, or nothing moved for `idle_limit`. `early` is what
/// the client sent after its request head; what the node sent after its
/// `101` head is still in `upstream`'s buffer.
pub fn run(client: &TcpStream, early: &[u8], upstream: Upstream, idle_limit: Duration) {
    let node = &upstream.stream;
    let node_early = upstream.input.data();
    let activity = Activity {
        started: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    thread::scope(|scope| {
        let upward = thread::Builder::new()
            .name("relay-tunnel".into())
            .stack_size(PUMP_STACK_BYTES)
            .spawn_scoped(scope, || pump(client, node, early, &activity, idle_limit));
        if upward.is_err() {
            // No thread to be had: the tunnel cannot run, end it cleanly.
            end_both(client, node);
            return;
        }
        pump(node, client, node_early, &activity, idle_limit);
    });
}

/// One direction: `from` to `to`, starting with `early`.
fn pump(from: &TcpStream, to: &TcpStream, early: &[u8], activity: &Activity, idle_limit: Duration) {
    let (mut reader, mut writer) = (from, to);
    if !early.is_empty() && writer.write_all(early).is_err() {
        return end_both(from, to);
    }
    if from.set_read_timeout(Some(idle_limit)).is_err() {
        return end_both(from, to);
    }
    let mut buffer = vec![0u8; TUNNEL_BUFFER_BYTES];
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => {
                // This side is done sending; the other may still talk.
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if writer.write_all(&buffer[..n]).is_err() {
                    return end_both(from, to);
                }
                activity.touch();
            }
            Err(error) if is_timeout(&error) => {
                if activity.idle_for() >= idle_limit {
                    return end_both(from, to);
                }
            }
            Err(_) => return end_both(from, to),
        }
    }
}

/// Ends the tunnel in both directions, which also wakes the other thread.
fn end_both(a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
