//! Is a node up? Passive marks from the forwarder, active checks on a timer,
//! and the hysteresis between them.
//!
//! - **Passive**: a refused or reset connection marks the node down at once,
//!   so the next requests go elsewhere without waiting for a check.
//! - **Active**: every `--health-interval` a checker thread per node sends
//!   `GET /health` (1 s to connect and answer). [`FAILS_TO_DOWN`] failures in a
//!   row mark it down; [`PASSES_TO_UP`] passes in a row bring it back.
//!
//! The up/down rule is [`HealthState`], a state machine without I/O, so its
//! tests need no sockets.

use super::backend::Backend;
use crate::http::buffer::InputBuffer;
use crate::http::parse::{parse_response_head, ResponseFraming, Status};
use crate::json;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

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
    state: Mutex<HealthState>,
}

impl Health {
    pub fn new(initial: HealthState) -> Health {
        Health {
            up: AtomicBool::new(initial.is_healthy()),
            state: Mutex::new(initial),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
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

    /// See [`HealthState::mark_down`].
    pub fn mark_down(&self) -> bool {
        self.update(HealthState::mark_down)
    }

    /// Back to a fresh state (a node just revived or added).
    pub fn reset(&self, state: HealthState) {
        self.update(|s| {
            *s = state;
            false
        });
    }
}

/// What one check learnt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The `node` field of the `/health` answer.
    pub name: Option<String>,
    /// `cache_hits` and `cache_misses` from `/stats`, when it has one.
    pub cache: Option<(u64, u64)>,
}

/// `GET /health`, then `GET /stats` on the same connection. `Err` unless
/// `/health` answered 200 in time.
pub fn check(addr: SocketAddr) -> Result<CheckReport, String> {
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let mut stream = TcpStream::connect_timeout(&addr, CHECK_TIMEOUT).map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: bookrelay-health\r\n\r\nGET /stats HTTP/1.1\r\nHost: bookrelay-health\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut input = InputBuffer::new();
    let (status, body) = read_answer(&mut stream, &mut input, deadline)?;
    if status != 200 {
        return Err(format!("/health answered {status}"));
    }
    let name = json::parse(&body)
        .ok()
        .and_then(|v| v.get("node").and_then(|n| n.as_str()).map(str::to_string));
    let cache = read_answer(&mut stream, &mut input, deadline)
        .ok()
        .filter(|(status, _)| *status == 200)
        .and_then(|(_, body)| json::parse(&body).ok())
        .and_then(|stats| {
            let hits = stats.get("cache_hits")?.as_f64()?;
            let misses = stats.get("cache_misses")?.as_f64()?;
            Some((hits as u64, misses as u64))
        });
    Ok(CheckReport { name, cache })
}

/// Reads one small response with a `Content-Length` (or none) by `deadline`.
fn read_answer(
    stream: &mut TcpStream,
    input: &mut InputBuffer,
    deadline: Instant,
) -> Result<(u16, Vec<u8>), String> {
    loop {
        if let Status::Complete((head, used)) =
            parse_response_head(input.data(), false).map_err(|e| e.to_string())?
        {
            let length = match head.framing {
                ResponseFraming::Empty => 0,
                ResponseFraming::Length(n) if n <= 1 << 20 => n as usize,
                _ => return Err("the health answer was not framed by Content-Length".into()),
            };
            if input.len() >= used + length {
                let body = input.data()[used..used + length].to_vec();
                input.consume(used + length);
                return Ok((head.status, body));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("no answer within 1 s".into());
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match input.read_from(stream) {
            Ok(0) => return Err("closed before answering".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Checks `backend` every `interval` until it is retired or `stop` is set,
/// logging every flip.
pub fn spawn_checker(
    backend: Arc<Backend>,
    interval: Duration,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name(format!("health-{}", backend.addr))
        .stack_size(128 * 1024)
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) && !backend.is_retired() {
                // A plain period: checks are a clock-driven activity.
                thread::park_timeout(interval);
                if stop.load(Ordering::Relaxed) || backend.is_retired() {
                    return;
                }
                let result = check(backend.addr);
                let ok = result.is_ok();
                if let Ok(report) = result {
                    backend.learn(report);
                }
                if backend.health.observe(ok) {
                    let state = if ok { "up again" } else { "down" };
                    eprintln!(
                        "relay: node {} at {} is {state}",
                        backend.name(),
                        backend.addr
                    );
                }
            }
        })
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
