//! Is a node up? Passive marks from the forwarder, active checks on a timer,
//! and the hysteresis between them.
//!
//! - **Passive**: a refused or reset connection marks the node down at once,
//!   so the next requests go elsewhere without waiting for a check.
//! - **Active**: every `--health-interval` a checker thread per node sends
//!   `GET --health-path` (1 s to connect and answer); any 2xx or 3xx passes, so
//!   any HTTP server can be checked, not only a bookrelay node.
//!   [`FAILS_TO_DOWN`] failures in a row mark it down; [`PASSES_TO_UP`] passes
//!   in a row bring it back.
//! - **Passive only** (`--health-path none`): no HTTP checks at all; a node
//!   marked down by a failed connection is probed with a bare connect, and two
//!   successful connects in a row bring it back.
//!
//! The up/down rule is [`HealthState`], a state machine without I/O, so its
//! tests need no sockets. The thread that runs the checks is in
//! [`super::checker`].

use crate::http::upstream::{write_request_head, BodyReader, RequestBody, Upstream};
use crate::json;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Failed checks in a row that mark a node down.
pub const FAILS_TO_DOWN: u32 = 2;

/// Passing checks in a row that bring a node back.
pub const PASSES_TO_UP: u32 = 2;

/// Time a check may take to connect, and again to be answered.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// The hysteresis of one node's health, without I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthState {
    healthy: bool,
    passes: u32,
    fails: u32,
}

impl HealthState {
    /// A node starts healthy: it was just started or just answered a check.
    pub fn healthy() -> HealthState {
        HealthState {
            healthy: true,
            passes: 0,
            fails: 0,
        }
    }

    /// A node that must earn its way in with passing checks.
    pub fn unhealthy() -> HealthState {
        HealthState {
            healthy: false,
            passes: 0,
            fails: 0,
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// Records an active check; returns true if the node flipped.
    pub fn observe(&mut self, ok: bool) -> bool {
        if ok {
            self.passes += 1;
            self.fails = 0;
            if !self.healthy && self.passes >= PASSES_TO_UP {
                self.healthy = true;
                return true;
            }
        } else {
            self.fails += 1;
            self.passes = 0;
            if self.healthy && self.fails >= FAILS_TO_DOWN {
                self.healthy = false;
                return true;
            }
        }
        false
    }

    /// A connection was refused or reset: down at once. Returns true if it flipped.
    pub fn mark_down(&mut self) -> bool {
        self.passes = 0;
        let flipped = self.healthy;
        self.healthy = false;
        flipped
    }
}

/// A node's health, read on every request (an atomic) and changed rarely (a mutex).
pub struct Health {
    up: AtomicBool,
    /// Whether the node last accepted a connection: false after a refused
    /// or reset connection or a check that got no answer, true after any
    /// answer, even a failing one. Fail-open routes to such nodes.
    reachable: AtomicBool,
    state: Mutex<HealthState>,
}

impl Health {
    /// A node that starts healthy starts reachable; one that starts down
    /// counts as unreachable until a check gets an answer from it.
    pub fn new(initial: HealthState) -> Health {
        Health {
            up: AtomicBool::new(initial.is_healthy()),
            reachable: AtomicBool::new(initial.is_healthy()),
            state: Mutex::new(initial),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// See the field's doc: the node still accepts connections.
    pub fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// What the last check or probe learnt of the node's reachability.
    pub fn set_reachable(&self, reachable: bool) {
        self.reachable.store(reachable, Ordering::Relaxed);
    }

    fn update(&self, change: impl FnOnce(&mut HealthState) -> bool) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let flipped = change(&mut state);
        self.up.store(state.is_healthy(), Ordering::Relaxed);
        flipped
    }

    /// See [`HealthState::observe`].
    pub fn observe(&self, ok: bool) -> bool {
        self.update(|s| s.observe(ok))
    }

    /// See [`HealthState::mark_down`]; the node is unreachable too.
    pub fn mark_down(&self) -> bool {
        self.set_reachable(false);
        self.update(HealthState::mark_down)
    }

    /// Back to a fresh state (a node just revived or added).
    pub fn reset(&self, state: HealthState) {
        self.set_reachable(true);
        self.update(|s| {
            *s = state;
            false
        });
    }
}

/// What one check learnt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The `node` field of a JSON health answer (a bookrelay node names
    /// itself; any other server leaves this `None`).
    pub name: Option<String>,
}

/// Largest health (or `/stats`) answer body read; a real one is tens of bytes.
const MAX_CHECK_BODY_BYTES: u64 = 64 * 1024;

/// One `GET` to `addr` with `Connection: close`, answered within
/// [`CHECK_TIMEOUT`]: the status and body. One request per check, never
/// pipelined: many servers answer only the first of two.
fn get(addr: SocketAddr, path: &str) -> Result<(u16, Vec<u8>), String> {
    let mut upstream = Upstream::connect(addr, CHECK_TIMEOUT).map_err(|e| in_words(&e))?;
    let host = addr.to_string();
    let mut wire = Vec::with_capacity(128);
    write_request_head(
        &mut wire,
        "GET",
        path,
        [
            ("Host", host.as_str()),
            ("User-Agent", "bookrelay-health"),
            ("Connection", "close"),
        ],
        RequestBody::None,
    );
    upstream.send(&wire).map_err(|e| in_words(&e))?;
    let head = upstream
        .read_head(false, CHECK_TIMEOUT)
        .map_err(|e| e.to_string())?;
    let body = BodyReader::new(head.framing, CHECK_TIMEOUT)
        .read_to_vec(&mut upstream, MAX_CHECK_BODY_BYTES)
        .map_err(|e| e.to_string())?;
    Ok((head.status, body))
}

/// A socket error as a person says it, for events and logs: "connection
/// refused", not `Os { code: 111, .. }` nor "(os error 111)".
pub fn in_words(error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let words = match error.kind() {
        ErrorKind::ConnectionRefused => "connection refused",
        ErrorKind::ConnectionReset => "connection reset",
        ErrorKind::ConnectionAborted => "connection aborted",
        ErrorKind::BrokenPipe => "connection closed while sending",
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "timed out",
        ErrorKind::AddrNotAvailable => "no local address or port free",
        _ => {
            let text = error.to_string();
            let text = match text.find(" (os error") {
                Some(end) => text[..end].to_string(),
                None => text,
            };
            let mut chars = text.chars();
            return match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => "an unknown error".to_string(),
            };
        }
    };
    words.to_string()
}

/// Why a check failed, and whether the node answered at all (a 404 or
/// 500 did; a refused connect or a timeout did not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckFailure {
    pub why: String,
    pub answered: bool,
}

impl std::fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

/// `GET path`: any 2xx or 3xx answer passes (as HAProxy's `httpchk` and
/// nginx's `health_check` count them). A JSON answer with a `node` field
/// names the backend.
pub fn check(addr: SocketAddr, path: &str) -> Result<CheckReport, CheckFailure> {
    let (status, body) = get(addr, path).map_err(|why| CheckFailure {
        why,
        answered: false,
    })?;
    if !(200..400).contains(&status) {
        return Err(CheckFailure {
            why: format!("{path} answered {status}"),
            answered: true,
        });
    }
    let name = json::parse(&body)
        .ok()
        .and_then(|v| v.get("node").and_then(|n| n.as_str()).map(str::to_string));
    Ok(CheckReport { name })
}

/// A bookrelay node's cache hits and misses from its `/stats`, if it has them.
pub fn fetch_cache_stats(addr: SocketAddr) -> Option<(u64, u64)> {
    let (status, body) = get(addr, "/stats").ok()?;
    if status != 200 {
        return None;
    }
    let stats = json::parse(&body).ok()?;
    let hits = stats.get("cache_hits")?.as_f64()?;
    let misses = stats.get("cache_misses")?.as_f64()?;
    Some((hits as u64, misses as u64))
}

/// Whether a connection to `addr` can be opened (the passive-only mode's
/// probe of a node that is down: no HTTP request, so nothing in its logs).
pub fn can_connect(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, CHECK_TIMEOUT).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_failures_in_a_row_mark_down() {
        let mut state = HealthState::healthy();
        assert!(!state.observe(false));
        assert!(state.is_healthy());
        assert!(!state.observe(true), "a pass resets the failure count");
        assert!(!state.observe(false));
        assert!(state.observe(false));
        assert!(!state.is_healthy());
        assert!(!state.observe(false), "already down: no flip");
    }

    #[test]
    fn two_passes_in_a_row_bring_back() {
        let mut state = HealthState::unhealthy();
        assert!(!state.observe(true));
        assert!(!state.observe(false), "a failure resets the pass count");
        assert!(!state.observe(true));
        assert!(state.observe(true));
        assert!(state.is_healthy());
    }

    #[test]
    fn passive_mark_is_immediate_and_needs_two_passes_to_undo() {
        let mut state = HealthState::healthy();
        assert!(state.mark_down());
        assert!(!state.is_healthy());
        assert!(!state.mark_down(), "already down");
        assert!(!state.observe(true));
        assert!(state.observe(true));
    }

    #[test]
    fn socket_errors_are_told_in_words() {
        use std::io::{Error, ErrorKind};
        assert_eq!(
            in_words(&Error::from(ErrorKind::ConnectionRefused)),
            "connection refused"
        );
        assert_eq!(
            in_words(&Error::from_raw_os_error(111)),
            "connection refused"
        );
        assert_eq!(
            in_words(&Error::from_raw_os_error(24)),
            "too many open files"
        );
        assert_eq!(in_words(&Error::other("Odd thing")), "odd thing");
    }

    #[test]
    fn health_mirrors_its_state_in_the_atomic() {
        let health = Health::new(HealthState::healthy());
        assert!(health.is_up());
        health.mark_down();
        assert!(!health.is_up());
        health.observe(true);
        health.observe(true);
        assert!(health.is_up());
    }
}
