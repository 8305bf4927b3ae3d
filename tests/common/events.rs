//! Reading the relay's event history (`GET /_relay/events`) from tests:
//! waiting for an event is how a test knows the relay has noticed something.

use super::admin;
use bookrelay::json::Value;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

/// How long a test waits for an event before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// The events with `seq > after`.
pub fn events_after(addr: SocketAddr, after: u64) -> Vec<Value> {
    let reply = admin(addr, "GET", &format!("/_relay/events?after={after}"), "");
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply
        .json()
        .get("events")
        .and_then(Value::as_array)
        .expect("an events array")
        .to_vec()
}

pub fn text<'a>(event: &'a Value, field: &str) -> Option<&'a str> {
    event.get(field).and_then(Value::as_str)
}

pub fn seq(event: &Value) -> u64 {
    event.get("seq").and_then(Value::as_f64).expect("seq") as u64
}

/// The first event after `after` of `kind` about `node` (any node when
/// `None`), if there is one yet.
pub fn find_event(addr: SocketAddr, after: u64, kind: &str, node: Option<&str>) -> Option<Value> {
    events_after(addr, after)
        .into_iter()
        .find(|e| text(e, "kind") == Some(kind) && (node.is_none() || text(e, "node") == node))
}

/// Polls until such an event appears; panics after [`WAIT`].
pub fn wait_for_event(addr: SocketAddr, after: u64, kind: &str, node: Option<&str>) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(found) = find_event(addr, after, kind, node) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} event for {node:?} after seq {after}: {}",
            Value::Array(events_after(addr, after)).to_json()
        );
        thread::sleep(Duration::from_millis(20));
    }
}
