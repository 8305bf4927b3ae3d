//! The lab bench beside the clients: it reads the relay's status (node names in order, retry
//! counters), carries out the scheduled actions (`POST /_relay/nodes/{name}/kill` …) at their
//! times, and follows `GET /_relay/events` so that the report can list what the relay did
//! during the run, each event at its time into the run.

use crate::options::{Action, ActionKind, NodeRef};
use bookrelay::client::HttpClient;
use bookrelay::json::{self, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often the watcher asks for new events: often enough to print each one live within a
/// fraction of a second, rarely enough to cost the relay nothing measurable.
const POLL: Duration = Duration::from_millis(200);

const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The relay's admin token, when it has one (the same variable the relay reads).
const ADMIN_TOKEN_ENV: &str = "BOOKRELAY_ADMIN_TOKEN";

/// One node as `/_relay/status` lists it.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub name: String,
    pub retries: u64,
}

/// The relay's status: its balancer and nodes in their order.
#[derive(Debug, Clone)]
pub struct RelayStatus {
    pub balancer: String,
    pub nodes: Vec<NodeStatus>,
}

impl RelayStatus {
    pub fn fetch(addr: SocketAddr) -> Result<RelayStatus, String> {
        let doc = get_json(addr, "/_relay/status")?;
        let nodes = doc
            .get("nodes")
            .and_then(Value::as_array)
            .ok_or("/_relay/status has no nodes list (is this a bookrelay relay?)")?
            .iter()
            .map(|node| NodeStatus {
                name: node
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string(),
                retries: node.get("retries").and_then(Value::as_f64).unwrap_or(0.0) as u64,
            })
            .collect();
        Ok(RelayStatus {
            balancer: doc
                .get("balancer")
                .and_then(Value::as_str)
                .unwrap_or("(unknown)")
                .to_string(),
            nodes,
        })
    }

    /// Retries per node since `before`, by name.
    pub fn retries_since(&self, before: &RelayStatus) -> Vec<(String, u64)> {
        self.nodes
            .iter()
            .map(|node| {
                let was = before
                    .nodes
                    .iter()
                    .find(|b| b.name == node.name)
                    .map_or(0, |b| b.retries);
                (node.name.clone(), node.retries.saturating_sub(was))
            })
            .collect()
    }
}

/// One relay event, placed on the run's clock.
#[derive(Debug, Clone)]
pub struct SeenEvent {
    /// Seconds since the run started (negative: just before it).
    pub at: f64,
    pub kind: String,
    pub node: Option<String>,
    pub detail: String,
}

impl SeenEvent {
    pub fn line(&self) -> String {
        format!(
            "{:>6.2} s  {:<13} {:<20} {}",
            self.at,
            self.kind,
            self.node.as_deref().unwrap_or("-"),
            self.detail
        )
    }
}

/// The watcher thread: actions and events.
pub struct Lab {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<Vec<SeenEvent>, String>>,
}

impl Lab {
    /// Starts watching events after the relay's current last one, and schedules `actions`
    /// on the run's clock from `started`. With `echo`, each event is also printed as it comes
    /// (an in-process relay logs its events to stderr itself).
    pub fn start(
        addr: SocketAddr,
        status: &RelayStatus,
        actions: Vec<Action>,
        started: Instant,
        echo: bool,
    ) -> Result<Lab, String> {
        let after = last_seq(addr)?;
        let names: Vec<String> = status.nodes.iter().map(|n| n.name.clone()).collect();
        let targets = resolve(&actions, &names)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name("lab".into())
                .spawn(move || watch(addr, after, targets, (started, echo), &stop))
                .map_err(|e| format!("cannot start the lab thread: {e}"))?
        };
        Ok(Lab { stop, thread })
    }

    /// Stops after one last look at the events; returns all of them.
    pub fn finish(self) -> Result<Vec<SeenEvent>, String> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.thread().unpark();
        self.thread
            .join()
            .map_err(|_| "the lab thread panicked".to_string())?
    }
}

/// Each action with the name of the node it is for.
fn resolve(actions: &[Action], names: &[String]) -> Result<Vec<(Action, String)>, String> {
    let mut last_killed: Option<String> = None;
    let mut last_failed: Option<String> = None;
    actions
        .iter()
        .map(|action| {
            let name = match &action.node {
                NodeRef::Index(i) => names.get(i - 1).cloned().ok_or_else(|| {
                    format!(
                        "--{}-at names node {i}, but the relay has {} nodes",
                        action.kind.verb(),
                        names.len()
                    )
                })?,
                NodeRef::Name(name) => {
                    if !names.contains(name) {
                        return Err(format!(
                            "--{}-at names node '{name}'; the relay's nodes are {}",
                            action.kind.verb(),
                            names.join(", ")
                        ));
                    }
                    name.clone()
                }
                NodeRef::Default => {
                    let remembered = match action.kind {
                        ActionKind::Revive => last_killed.clone(),
                        ActionKind::Heal => last_failed.clone(),
                        _ => None,
                    };
                    match remembered.or_else(|| names.first().cloned()) {
                        Some(name) => name,
                        None => return Err("the relay has no nodes to act on".into()),
                    }
                }
            };
            match action.kind {
                ActionKind::Kill => last_killed = Some(name.clone()),
                ActionKind::Fail => last_failed = Some(name.clone()),
                _ => {}
            }
            Ok((action.clone(), name))
        })
        .collect()
}

fn watch(
    addr: SocketAddr,
    mut after: u64,
    actions: Vec<(Action, String)>,
    (started, echo): (Instant, bool),
    stop: &AtomicBool,
) -> Result<Vec<SeenEvent>, String> {
    let start_ms = unix_ms(SystemTime::now()) - started.elapsed().as_millis() as i64;
    let mut pending = actions.into_iter().peekable();
    let mut seen = Vec::new();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        while let Some((action, _)) = pending.peek() {
            if started.elapsed() < action.at || stopping {
                break;
            }
            let (action, node) = pending.next().expect("peeked");
            let path = format!("/_relay/nodes/{node}/{}", action.kind.verb());
            match post(addr, &path) {
                Ok(()) => eprintln!(
                    "{:>6.2} s  many_clients: POST {path}",
                    started.elapsed().as_secs_f64()
                ),
                Err(error) => eprintln!("many_clients: POST {path} failed: {error}"),
            }
        }
        match fetch_events(addr, after) {
            Ok(events) => {
                for (seq, time, kind, node, detail) in events {
                    after = after.max(seq);
                    let at = time
                        .as_deref()
                        .and_then(time_of_day_ms)
                        .map_or(started.elapsed().as_secs_f64(), |ms| {
                            since_start(ms, start_ms) as f64 / 1000.0
                        });
                    let event = SeenEvent {
                        at,
                        kind,
                        node,
                        detail,
                    };
                    if echo {
                        eprintln!("{}", event.line());
                    }
                    seen.push(event);
                }
            }
            Err(error) if stopping => return Err(error),
            Err(_) => {} // the next poll tries again; a relay under a kill is still a relay
        }
        if stopping {
            return Ok(seen);
        }
        let next_action = pending
            .peek()
            .map(|(a, _)| a.at.saturating_sub(started.elapsed()));
        thread::park_timeout(next_action.map_or(POLL, |d| d.min(POLL)));
    }
}

type RawEvent = (u64, Option<String>, String, Option<String>, String);

fn fetch_events(addr: SocketAddr, after: u64) -> Result<Vec<RawEvent>, String> {
    let doc = get_json(addr, &format!("/_relay/events?after={after}"))?;
    let events = doc
        .get("events")
        .and_then(Value::as_array)
        .ok_or("/_relay/events has no events list")?;
    Ok(events
        .iter()
        .map(|e| {
            let text = |field: &str| e.get(field).and_then(Value::as_str).map(str::to_string);
            (
                e.get("seq").and_then(Value::as_f64).unwrap_or(0.0) as u64,
                text("time"),
                text("kind").unwrap_or_default(),
                text("node"),
                text("detail").unwrap_or_default(),
            )
        })
        .collect())
}

fn last_seq(addr: SocketAddr) -> Result<u64, String> {
    Ok(fetch_events(addr, 0)?
        .iter()
        .map(|e| e.0)
        .max()
        .unwrap_or(0))
}

fn get_json(addr: SocketAddr, path: &str) -> Result<Value, String> {
    let mut client =
        HttpClient::connect(addr, ADMIN_TIMEOUT).map_err(|e| format!("GET {path}: {e}"))?;
    let answer = client
        .request("GET", path, &[], b"")
        .map_err(|e| format!("GET {path}: {e}"))?;
    if answer.status != 200 {
        return Err(format!("GET {path} answered {}", answer.status));
    }
    json::parse(&answer.body).map_err(|e| format!("GET {path}: {e}"))
}

fn post(addr: SocketAddr, path: &str) -> Result<(), String> {
    let token = std::env::var(ADMIN_TOKEN_ENV).ok();
    let bearer = token.map(|t| format!("Bearer {}", t.trim()));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| ("Authorization", b))
        .into_iter()
        .collect();
    let mut client = HttpClient::connect(addr, ADMIN_TIMEOUT).map_err(|e| e.to_string())?;
    let answer = client
        .request("POST", path, &headers, b"")
        .map_err(|e| e.to_string())?;
    if answer.status >= 300 {
        return Err(format!(
            "{}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body).trim()
        ));
    }
    Ok(())
}

const DAY_MS: i64 = 86_400_000;

fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Milliseconds into the UTC day of an RFC 3339 time `…THH:MM:SS.mmmZ`.
fn time_of_day_ms(time: &str) -> Option<i64> {
    let clock = time.split_once('T')?.1.strip_suffix('Z')?;
    let (hms, millis) = clock.split_once('.').unwrap_or((clock, "0"));
    let mut parts = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    let millis: i64 = format!("{millis:0<3}").get(..3)?.parse().ok()?;
    Some(((h * 60 + m) * 60 + s) * 1000 + millis)
}

/// Milliseconds from the run's start (unix ms) to a time of day, on the nearest day: the
/// events of one run are minutes apart at most, so a run across midnight still comes out right.
fn since_start(time_of_day: i64, start_unix_ms: i64) -> i64 {
    let delta = (time_of_day - start_unix_ms.rem_euclid(DAY_MS)).rem_euclid(DAY_MS);
    if delta > DAY_MS / 2 {
        delta - DAY_MS
    } else {
        delta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_times_land_on_the_run_clock_even_across_midnight() {
        assert_eq!(time_of_day_ms("2026-12-01T12:03:04.250Z"), Some(43_384_250));
        assert_eq!(time_of_day_ms("2026-12-01T12:03:04Z"), Some(43_384_000));
        assert_eq!(time_of_day_ms("not a time"), None);
        let start = 20 * DAY_MS + 43_384_000; // 12:03:04.000 on some day
        assert_eq!(since_start(43_384_250, start), 250);
        assert_eq!(since_start(43_383_000, start), -1000);
        let just_before_midnight = 21 * DAY_MS - 500;
        assert_eq!(since_start(1_500, just_before_midnight), 2_000);
    }

    fn action(kind: ActionKind, node: NodeRef) -> Action {
        Action {
            at: Duration::ZERO,
            kind,
            node,
        }
    }

    #[test]
    fn revive_and_heal_default_to_the_node_last_killed_or_failed() {
        let names: Vec<String> = ["owl", "fox", "elk"].map(String::from).to_vec();
        let actions = [
            action(ActionKind::Kill, NodeRef::Index(2)),
            action(ActionKind::Fail, NodeRef::Name("elk".into())),
            action(ActionKind::Revive, NodeRef::Default),
            action(ActionKind::Heal, NodeRef::Default),
            action(ActionKind::Kill, NodeRef::Default),
        ];
        let targets: Vec<String> = resolve(&actions, &names)
            .expect("resolved")
            .into_iter()
            .map(|(_, name)| name)
            .collect();
        assert_eq!(targets, ["fox", "elk", "fox", "elk", "owl"]);
        let unknown = resolve(
            &[action(ActionKind::Kill, NodeRef::Name("yak".into()))],
            &names,
        );
        assert!(unknown.expect_err("unknown").contains("owl, fox, elk"));
    }
}
