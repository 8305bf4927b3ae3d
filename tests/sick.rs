//! Sick nodes over real sockets: `fail` and `heal`, outlier ejection and
//! re-admission, and fail-open when most nodes fail their checks. Every
//! wait is for a specific event or figure, with a deadline.

mod common;

use bookrelay::json::Value;
use common::{admin, node_field, ok_reply, Act, FakeBackend, TestRelay};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

fn events_after(addr: SocketAddr, after: u64) -> Vec<Value> {
    let reply = admin(addr, "GET", &format!("/_relay/events?after={after}"), "");
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply
        .json()
        .get("events")
        .and_then(Value::as_array)
        .expect("an events array")
        .to_vec()
}

fn text<'a>(event: &'a Value, field: &str) -> Option<&'a str> {
    event.get(field).and_then(Value::as_str)
}

fn seq(event: &Value) -> u64 {
    event.get("seq").and_then(Value::as_f64).expect("seq") as u64
}

fn find_event(addr: SocketAddr, after: u64, kind: &str, node: Option<&str>) -> Option<Value> {
    events_after(addr, after)
        .into_iter()
        .find(|e| text(e, "kind") == Some(kind) && (node.is_none() || text(e, "node") == node))
}

fn wait_for_event(addr: SocketAddr, after: u64, kind: &str, node: Option<&str>) -> Value {
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

#[test]
fn a_failed_node_is_ejected_after_five_5xx_and_readmitted_once_healed() {
    let ejection = Duration::from_millis(400);
    let relay = TestRelay::start(3, 5, "round-robin", |c| c.ejection_time = ejection);
    let sick = relay.node_names()[0].clone();
    let failed = admin(
        relay.addr,
        "POST",
        &format!("/_relay/nodes/{sick}/fail"),
        "",
    );
    assert_eq!(failed.status, 200, "{}", failed.text());
    assert_eq!(failed.str_field("name"), sick);
    assert_eq!(failed.str_field("state"), "failing");
    let fail = wait_for_event(relay.addr, 0, "fail", Some(&sick));

    // Sequential GETs: the sick node's 500s reach the client until its fifth.
    let mut client = relay.client();
    let mut from_sick = 0;
    let deadline = Instant::now() + WAIT;
    let eject = loop {
        let reply = client.get("/bookings?limit=1");
        if reply.header("x-node") == Some(sick.as_str()) {
            assert_eq!(reply.status, 500, "{}", reply.text());
            from_sick += 1;
        } else {
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
        if let Some(eject) = find_event(relay.addr, seq(&fail), "eject", Some(&sick)) {
            break eject;
        }
        assert!(from_sick <= 5, "still not ejected after {from_sick} 500s");
        assert!(Instant::now() < deadline, "no eject event");
    };
    assert_eq!(from_sick, 5, "ejected at the threshold");
    let status = relay.status();
    assert_eq!(node_field(&status, &sick, "ejected"), Value::Bool(true));
    assert_eq!(
        node_field(&status, &sick, "healthy"),
        Value::Bool(true),
        "ejected, not unhealthy: its checks pass"
    );
    for _ in 0..10 {
        let reply = client.get("/bookings?limit=1");
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_ne!(reply.header("x-node"), Some(sick.as_str()));
    }

    let healed = admin(
        relay.addr,
        "POST",
        &format!("/_relay/nodes/{sick}/heal"),
        "",
    );
    assert_eq!(healed.status, 200, "{}", healed.text());
    assert_eq!(healed.str_field("state"), "running");
    wait_for_event(relay.addr, seq(&eject), "heal", Some(&sick));
    wait_for_event(relay.addr, seq(&eject), "readmit", Some(&sick));
    relay.wait_for_status("the node back in rotation", WAIT, |s| {
        node_field(s, &sick, "ejected") == Value::Bool(false)
    });
    let mut seen = HashSet::new();
    for _ in 0..6 {
        let reply = client.get("/bookings?limit=1");
        assert_eq!(reply.status, 200, "{}", reply.text());
        seen.insert(reply.header("x-node").expect("x-node").to_string());
    }
    assert!(
        seen.contains(&sick),
        "the healed node serves again: {seen:?}"
    );
}

#[test]
fn fail_and_heal_are_refused_for_unknown_names_external_backends_and_gets() {
    let backend = FakeBackend::start(|_, _| Act::Reply(ok_reply("{}")));
    let relay = TestRelay::start(1, 0, "round-robin", |c| {
        c.backends = vec![backend.addr.to_string()];
    });
    let external = relay
        .node_names()
        .into_iter()
        .find(|n| node_field(&relay.status(), n, "kind") == Value::from("external"))
        .expect("the external backend");
    for verb in ["fail", "heal"] {
        let reply = admin(
            relay.addr,
            "POST",
            &format!("/_relay/nodes/{external}/{verb}"),
            "",
        );
        assert_eq!(reply.status, 409, "{}", reply.text());
        assert!(reply.error().contains("external"), "{}", reply.text());
        let reply = admin(
            relay.addr,
            "POST",
            &format!("/_relay/nodes/nobody/{verb}"),
            "",
        );
        assert_eq!(reply.status, 404, "{}", reply.text());
        let reply = admin(
            relay.addr,
            "GET",
            &format!("/_relay/nodes/nobody/{verb}"),
            "",
        );
        assert_eq!(reply.status, 405, "{}", reply.text());
    }
}
