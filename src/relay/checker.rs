//! The one thread per node that wakes on a clock: it runs the active health
//! checks ([`super::health`]) every `--health-interval`, asks a bookrelay
//! backend's `/stats` now and then, re-admits an ejected node whose time is
//! up ([`super::outlier`]; within a second, with or without traffic), and closes the node's pooled connections
//! that have been idle too long ([`super::pool`]).
//!
//! Kept apart from `health.rs` so that the health rules know nothing of a
//! [`Backend`], and from `backend.rs` so that a backend knows nothing of
//! checks on a timer.

use super::backend::Backend;
use super::events::{EventKind, Events};
use super::forward::readmit_if_due;
use super::health::{self, CheckFailure, FAILS_TO_DOWN, PASSES_TO_UP};
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
    /// `--slow-start`: a node found healthy again ramps up over this window.
    pub slow_start: Duration,
}

/// Checks `backend` until it is retired or `stop` is set, recording every
/// flip as a `down` or `up` event.
pub fn spawn_checker(
    backend: Arc<Backend>,
    settings: CheckerSettings,
    stop: Arc<AtomicBool>,
    events: Arc<Events>,
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
                readmit_if_due(&backend, &events, now);
                if now < next_check {
                    continue;
                }
                next_check = now + settings.interval;
                let outcome = match &settings.path {
                    Some(path) => active_check(&backend, path, &mut next_stats),
                    None => passive_probe(&backend),
                };
                let Some(outcome) = outcome else {
                    continue;
                };
                let answered = outcome.as_ref().map_or_else(|f| f.answered, |()| true);
                backend.health.set_reachable(answered);
                if !backend.health.observe(outcome.is_ok()) {
                    continue;
                }
                if outcome.is_ok() {
                    backend.begin_slow_start(settings.slow_start, Instant::now());
                }
                let name = backend.name();
                match (outcome, settings.path.is_some()) {
                    (Ok(()), true) => events.record(
                        EventKind::Up,
                        Some(&name),
                        format!("{PASSES_TO_UP} health checks in a row passed"),
                    ),
                    (Ok(()), false) => events.record(
                        EventKind::Up,
                        Some(&name),
                        format!("{PASSES_TO_UP} connects in a row succeeded"),
                    ),
                    (Err(why), _) => events.record(
                        EventKind::Down,
                        Some(&name),
                        format!("{why} ({FAILS_TO_DOWN} checks failed)"),
                    ),
                }
            }
        })
}

/// One `GET --health-path`, and now and then `/stats` of a named external node.
/// `Err`: why the check failed, in words.
fn active_check(
    backend: &Backend,
    path: &str,
    next_stats: &mut Instant,
) -> Option<Result<(), CheckFailure>> {
    let report = match health::check(backend.addr, path) {
        Ok(report) => report,
        Err(why) => return Some(Err(why)),
    };
    backend.learn(&report);
    if !backend.is_spawned() && backend.is_named() && Instant::now() >= *next_stats {
        *next_stats = Instant::now() + STATS_INTERVAL;
        backend.set_remote_cache(health::fetch_cache_stats(backend.addr));
    }
    Some(Ok(()))
}

/// Passive mode: nothing to learn while a node is up; a node that is down
/// is welcomed back by connects that succeed.
fn passive_probe(backend: &Backend) -> Option<Result<(), CheckFailure>> {
    if backend.health.is_up() {
        return None;
    }
    Some(if health::can_connect(backend.addr) {
        Ok(())
    } else {
        Err(CheckFailure {
            why: "a connect failed".to_string(),
            answered: false,
        })
    })
}
