//! The strategies of issue 14 over real sockets: `bounded-consistent-hash` and `peak-ewma`
//! answer correctly, `PUT /_relay/balancer` switches to them, and `--slow-start` shows a
//! revived node's ramp as its `effective_weight`.

mod common;

use bookrelay::json::Value;
use common::{node_field, TestRelay};
use std::collections::HashMap;
use std::time::Duration;

/// Reads every id through the relay, checking each answer is that booking; returns the
/// node that answered each read, in order.
fn read_all(relay: &TestRelay, ids: &[String], rounds: usize) -> Vec<(String, String)> {
    let mut client = relay.client();
    let mut answered = Vec::new();
    for _ in 0..rounds {
        for id in ids {
            let reply = client.get(&format!("/bookings/{id}"));
            assert_eq!(reply.status, 200, "{id}: {}", reply.text());
            assert_eq!(reply.str_field("booking_id"), *id);
            let node = reply.header("x-node").expect("X-Node").to_string();
            answered.push((id.clone(), node));
        }
    }
    answered
}

#[test]
fn bounded_consistent_hash_answers_and_keeps_each_booking_on_one_node() {
    let relay = TestRelay::start(3, 30, "bounded-consistent-hash", |c| {
        c.hash_balance_factor = 1.5;
    });
    assert_eq!(
        relay.status().get("balancer").and_then(Value::as_str),
        Some("bounded-consistent-hash")
    );
    let ids = common::some_ids(relay.addr, 30);
    // One request at a time: no node is ever over its bound, so each id keeps its owner.
    let mut owners: HashMap<String, String> = HashMap::new();
    for (id, node) in read_all(&relay, &ids, 3) {
        assert_eq!(
            owners.entry(id.clone()).or_insert(node.clone()),
            &node,
            "{id}"
        );
    }
    let nodes: std::collections::HashSet<_> = owners.values().collect();
    assert!(nodes.len() >= 2, "30 ids on one node: {owners:?}");
    let id = &ids[0];
    assert_eq!(
        relay
            .client()
            .get(&format!("/bookings/{id}"))
            .header("x-cache"),
        Some("HIT")
    );
}

#[test]
fn peak_ewma_answers_and_keeps_away_from_the_slow_node() {
    let relay = TestRelay::start(3, 10, "peak-ewma", |c| {
        c.node_delays = vec![Duration::ZERO, Duration::ZERO, Duration::from_millis(300)];
    });
    let names = relay.node_names();
    let slow = &names[2];
    let ids = common::some_ids(relay.addr, 10);
    let answered = read_all(&relay, &ids, 6);
    let on_slow = answered.iter().filter(|(_, node)| node == slow).count();
    // The slow node is tried while unmeasured, then loses every comparison: its 300 ms
    // estimate takes about half a minute to fade below a fast node's.
    assert!(
        on_slow <= 5,
        "{on_slow} of {} reads went to the slow node",
        answered.len()
    );
}

#[test]
fn put_balancer_switches_to_each_new_strategy() {
    let relay = TestRelay::start(2, 5, "round-robin", |_| {});
    let ids = common::some_ids(relay.addr, 5);
    for name in ["bounded-consistent-hash", "peak-ewma", "round-robin"] {
        let reply = relay.client().request(
            "PUT",
            "/_relay/balancer",
            &[("Content-Type", "application/json")],
            format!("{{\"balancer\":\"{name}\"}}").as_bytes(),
        );
        assert_eq!(reply.status, 200, "{name}: {}", reply.text());
        assert_eq!(reply.str_field("balancer"), name);
        assert_eq!(
            relay.status().get("balancer").and_then(Value::as_str),
            Some(name)
        );
        read_all(&relay, &ids, 1);
    }
    let refused = relay.client().request(
        "PUT",
        "/_relay/balancer",
        &[("Content-Type", "application/json")],
        br#"{"balancer":"fastest"}"#,
    );
    assert_eq!(refused.status, 400);
    assert!(
        refused.error().contains("peak-ewma"),
        "the refusal lists the names: {}",
        refused.error()
    );
    let unnamed = relay.client().request(
        "PUT",
        "/_relay/balancer",
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(unnamed.status, 400);
    assert!(unnamed.error().contains("bounded-consistent-hash"));
}

#[test]
fn a_revived_node_ramps_up_under_slow_start() {
    let relay = TestRelay::start(2, 5, "weighted", |c| {
        c.slow_start = Duration::from_secs(600);
        c.weights = Some(vec![10, 10]);
    });
    let names = relay.node_names();
    let status = relay.status();
    for name in &names {
        assert_eq!(
            node_field(&status, name, "effective_weight").as_f64(),
            Some(10.0),
            "nodes at start are not ramping"
        );
    }
    let revived = &names[1];
    let kill = relay
        .client()
        .request("POST", &format!("/_relay/nodes/{revived}/kill"), &[], b"");
    assert_eq!(kill.status, 200, "{}", kill.text());
    let revive =
        relay
            .client()
            .request("POST", &format!("/_relay/nodes/{revived}/revive"), &[], b"");
    assert_eq!(revive.status, 200, "{}", revive.text());
    let status = relay.status();
    let effective = node_field(&status, revived, "effective_weight")
        .as_f64()
        .expect("effective_weight");
    // 10% of 10 at the revive, growing 0.015 a second over the 600 s window.
    assert!((1.0..2.0).contains(&effective), "{effective}");
    assert_eq!(node_field(&status, revived, "weight").as_f64(), Some(10.0));
    assert_eq!(
        node_field(&status, &names[0], "effective_weight").as_f64(),
        Some(10.0)
    );
    // The ramping node still serves, and the other takes most of the traffic.
    let ids = common::some_ids(relay.addr, 5);
    let answered = read_all(&relay, &ids, 20);
    let on_revived = answered.iter().filter(|(_, node)| node == revived).count();
    assert!(on_revived < 30, "{on_revived} of 100 on the ramping node");
}
