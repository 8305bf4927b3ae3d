//! The one thread per node that wakes on a clock: it runs the active health
//! checks ([`super::health`]) every `--health-interval`, asks a bookrelay
//! backend's `/stats` now and then, and closes the node's pooled connections
//! that have been idle too long ([`super::pool`]).
//!
//! Kept apart from `health.rs` so that the health rules know nothing of a
//! [`Backend`], and from `backend.rs` so that a backend knows nothing of
//! checks on a timer.

use super::backend::Backend;
use super::health;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often a checker wakes at the least, to close expired idle
/// connections even when checks are rare or off.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// How often an external bookrelay node's `/stats` is asked for its cache
/// figures: the dashboard wants them, but a request per second per backend
/// would be noise in its logs.
pub const STATS_INTERVAL: Duration = Duration::from_secs(5);

/// What a checker does.
#[derive(Debug, Clone)]
pub struct CheckerSettings {
    pub interval: Duration,
    /// `GET` this path; `None`: passive health only.
    pub path: Option<String>,
}

/// Checks `backend` until it is retired or `stop` is set, logging every flip.
pub fn spawn_checker(
    backend: Arc<Backend>,
    settings: CheckerSettings,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name(format!("health-{}", backend.addr))
        .stack_size(128 * 1024)
        .spawn(move || {
            let mut next_check = Instant::now() + settings.interval;
            let mut next_stats = Instant::now();
            loop {
                let now = Instant::now();
                let wake = next_check.min(now + SWEEP_INTERVAL);
                // A plain period: checks are a clock-driven activity.
                thread::park_timeout(wake.saturating_duration_since(now));
                if stop.load(Ordering::Relaxed) || backend.is_retired() {
                    return;
                }
                let now = Instant::now();
                backend.pool.evict_idle(now);
                if now < next_check {
                    continue;
                }
                next_check = now + settings.interval;
                let ok = match &settings.path {
                    Some(path) => active_check(&backend, path, &mut next_stats),
                    None => passive_probe(&backend),
                };
                if let Some(ok) = ok {
                    if backend.health.observe(ok) {
                        let state = if ok { "up again" } else { "down" };
                        eprintln!(
                            "relay: node {} at {} is {state}",
                            backend.name(),
                            backend.addr
                        );
                    }
                }
            }
        })
}

/// One `GET --health-path`, and now and then `/stats` of a named external node.
fn active_check(backend: &Backend, path: &str, next_stats: &mut Instant) -> Option<bool> {
    let report = match health::check(backend.addr, path) {
        Ok(report) => report,
        Err(_) => return Some(false),
    };
    backend.learn(&report);
    if !backend.is_thread() && backend.is_named() && Instant::now() >= *next_stats {
        *next_stats = Instant::now() + STATS_INTERVAL;
        backend.set_remote_cache(health::fetch_cache_stats(backend.addr));
    }
    Some(true)
}

/// Passive mode: nothing to learn while a node is up; a node that is down
/// is welcomed back by connects that succeed.
fn passive_probe(backend: &Backend) -> Option<bool> {
    if backend.health.is_up() {
        return None;
    }
    Some(health::can_connect(backend.addr))
}
