//! The relay's history at `/_relay/events` and the per-node `retries` and
//! `responses` of `/_relay/status`, over real sockets: kills and revives,
//! marks down and up, retries, the relay's own 502s, and `after` filtering.
//! Every wait is for a specific event or figure, with a deadline.

mod common;

use bookrelay::json::Value;
use common::events::{events_after, seq, text, wait_for_event, WAIT};
use common::{admin, node_field, Act, FakeBackend, TestRelay};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Details are sentences, never Rust `Debug` text.
fn assert_readable(event: &Value) {
    let detail = text(event, "detail").expect("detail");
    assert!(!detail.is_empty());
    for debug in ["Os {", "Kind(", "os error", "NoAnswer", "Connect("] {
        assert!(!detail.contains(debug), "Debug text in {detail:?}");
    }
}

/// Kills the spawned node `name` through the admin API.
fn kill(relay: &TestRelay, name: &str) {
    let killed = admin(
        relay.addr,
        "POST",
        &format!("/_relay/nodes/{name}/kill"),
        "",
    );
    assert_eq!(killed.status, 200, "{}", killed.text());
}

#[test]
fn a_kill_is_followed_by_down_and_a_revive_by_up() {
    let relay = TestRelay::start(2, 0, "round-robin", |_| {});
    let name = relay.node_names()[0].clone();
    kill(&relay, &name);
    let kill = wait_for_event(relay.addr, 0, "kill", Some(&name));
    assert_readable(&kill);
    let down = wait_for_event(relay.addr, seq(&kill), "down", Some(&name));
    assert_readable(&down);
    assert!(
        text(&down, "detail").is_some_and(|d| d.contains("connection refused")),
        "{}",
        down.to_json()
    );
    let time = text(&down, "time").expect("time");
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "{time}"
    );
    relay.wait_for_status("the node marked down", WAIT, |s| {
        node_field(s, &name, "healthy") == Value::Bool(false)
    });

    let revived = admin(
        relay.addr,
        "POST",
        &format!("/_relay/nodes/{name}/revive"),
        "",
    );
    assert_eq!(revived.status, 200, "{}", revived.text());
    let revive = wait_for_event(relay.addr, seq(&down), "revive", Some(&name));
    let up = wait_for_event(relay.addr, seq(&revive), "up", Some(&name));
    assert_readable(&up);
    assert_eq!(
        relay.client().get("/health").status,
        200,
        "the revived node serves again"
    );
}

#[test]
fn under_load_a_kill_is_recorded_before_the_failures_it_causes() {
    let relay = TestRelay::start(2, 0, "round-robin", |_| {});
    let name = relay.node_names()[0].clone();
    let before = events_after(relay.addr, 0).last().map_or(0, seq);
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, mut client) = (Arc::clone(&stop), relay.client());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    client.get("/health");
                }
            })
        })
        .collect();
    kill(&relay, &name);
    let down = wait_for_event(relay.addr, before, "down", Some(&name));
    stop.store(true, Ordering::Relaxed);
    for worker in load {
        worker.join().expect("load thread");
    }
    let of_node: Vec<Value> = events_after(relay.addr, before)
        .into_iter()
        .filter(|e| text(e, "node") == Some(name.as_str()) && seq(e) <= seq(&down))
        .collect();
    assert_eq!(
        text(&of_node[0], "kind"),
        Some("kill"),
        "cause first: {:?}",
        of_node.iter().map(|e| text(e, "kind")).collect::<Vec<_>>()
    );
}

#[test]
fn a_get_the_balancer_sent_to_a_killed_node_is_retried_and_counted() {
    // No active checks in the test's time: only the failed forward tells
    // the relay, so round robin still sends one of two GETs to the dead node.
    let relay = TestRelay::start(2, 0, "round-robin", |c| {
        c.health_interval = Duration::from_secs(600)
    });
    let names = relay.node_names();
    let dead = names[0].clone();
    let alive = names[1].clone();
    kill(&relay, &dead);
    let mut client = relay.client();
    for _ in 0..2 {
        assert_eq!(
            client.get("/health").status,
            200,
            "retried on the live node"
        );
    }
    let retry = wait_for_event(relay.addr, 0, "retry", Some(&dead));
    assert_readable(&retry);
    let detail = text(&retry, "detail").expect("detail");
    assert!(
        detail.contains("GET /health") && detail.contains(&alive),
        "says what, and where it went: {detail}"
    );
    let down = wait_for_event(relay.addr, 0, "down", Some(&dead));
    assert_readable(&down);
    let status = relay.status();
    let retries = node_field(&status, &dead, "retries")
        .as_f64()
        .expect("retries");
    assert!(retries >= 1.0, "{}", status.to_json());
    assert_eq!(
        node_field(&status, &alive, "retries").as_f64(),
        Some(0.0),
        "the node that answered retried nothing"
    );
    let metrics = admin(relay.addr, "GET", "/_relay/metrics", "").text();
    assert!(
        metrics.contains(&format!("bookrelay_node_retries_total{{node=\"{dead}\""))
            && !metrics.contains(&format!(
                "bookrelay_node_retries_total{{node=\"{dead}\",addr=\"{}\"}} 0\n",
                node_field(&status, &dead, "addr").as_str().expect("addr")
            )),
        "{metrics}"
    );
}

#[test]
fn answers_are_counted_by_status_class_at_the_node_that_gave_them() {
    let relay = TestRelay::start(1, 0, "round-robin", |_| {});
    let name = relay.node_names()[0].clone();
    let mut client = relay.client();
    assert_eq!(client.get("/health").status, 200);
    assert_eq!(client.get("/health").status, 200);
    assert_eq!(client.get("/bookings/no-such-booking").status, 404);
    assert_eq!(client.get("/no-such-path").status, 404);
    let status = relay.status();
    let responses = node_field(&status, &name, "responses");
    let count = |class: &str| responses.get(class).and_then(Value::as_f64);
    assert_eq!(count("2xx"), Some(2.0), "{}", status.to_json());
    assert_eq!(count("3xx"), Some(0.0));
    assert_eq!(count("4xx"), Some(2.0));
    assert_eq!(count("5xx"), Some(0.0));
    // The existing fields are all still there.
    for field in ["requests", "failures", "healthy", "in_flight", "weight"] {
        assert_ne!(node_field(&status, &name, field), Value::Null, "{field}");
    }
    let metrics = admin(relay.addr, "GET", "/_relay/metrics", "").text();
    assert!(
        metrics.lines().any(|l| l
            .starts_with(&format!("bookrelay_node_responses_total{{node=\"{name}\""))
            && l.ends_with(",class=\"4xx\"} 2")),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l.starts_with(&format!(
            "bookrelay_node_request_duration_seconds_count{{node=\"{name}\""
        )) && l.ends_with("} 4")),
        "{metrics}"
    );
}

#[test]
fn after_returns_only_newer_events_and_a_bad_after_is_a_400() {
    let relay = TestRelay::start(1, 0, "round-robin", |_| {});
    let switch = |to: &str| {
        let reply = admin(
            relay.addr,
            "PUT",
            "/_relay/balancer",
            &format!("{{\"balancer\":\"{to}\"}}"),
        );
        assert_eq!(reply.status, 200, "{}", reply.text());
    };
    switch("random");
    let first = wait_for_event(relay.addr, 0, "balancer", None);
    assert_eq!(first.get("node"), Some(&Value::Null));
    assert!(
        text(&first, "detail").is_some_and(|d| d.contains("round-robin") && d.contains("random")),
        "{}",
        first.to_json()
    );
    switch("least-connections");
    let second = wait_for_event(relay.addr, seq(&first), "balancer", None);
    assert!(seq(&second) > seq(&first));
    assert!(text(&second, "detail").is_some_and(|d| d.contains("least-connections")));

    let all = events_after(relay.addr, 0);
    assert_eq!(seq(&all[0]), 1, "seq starts at 1");
    for pair in all.windows(2) {
        assert_eq!(
            seq(&pair[1]),
            seq(&pair[0]) + 1,
            "consecutive, oldest first"
        );
    }
    let later = events_after(relay.addr, seq(&first));
    assert!(later.iter().all(|e| seq(e) > seq(&first)));
    assert!(later.iter().any(|e| seq(e) == seq(&second)));
    assert!(events_after(relay.addr, seq(all.last().expect("some event"))).is_empty());
    let everything = admin(relay.addr, "GET", "/_relay/events", "");
    assert_eq!(everything.status, 200);

    for bad in ["abc", "-1", "", "1.5"] {
        let reply = admin(
            relay.addr,
            "GET",
            &format!("/_relay/events?after={bad}"),
            "",
        );
        assert_eq!(reply.status, 400, "after={bad}: {}", reply.text());
        assert!(reply.error().contains("after"), "{}", reply.error());
    }
}

#[test]
fn a_502_the_relay_made_is_an_error_event_and_the_nodes_5xx() {
    // Reads the request and closes without a word: a POST without an
    // Idempotency-Key cannot be retried, so the client gets the relay's 502.
    let crash = FakeBackend::start(|_, _| Act::Close);
    let backends = vec![crash.addr.to_string()];
    let relay = TestRelay::start(0, 0, "round-robin", |c| c.backends = backends);
    let name = relay.node_names()[0].clone();
    let reply =
        relay
            .client()
            .request("POST", "/x", &[("Content-Type", "application/json")], b"{}");
    assert_eq!(reply.status, 502, "{}", reply.text());
    let error = wait_for_event(relay.addr, 0, "error", Some(&name));
    assert_readable(&error);
    let detail = text(&error, "detail").expect("detail");
    assert!(
        detail.contains("502") && detail.contains("POST /x"),
        "{detail}"
    );
    let responses = node_field(&relay.status(), &name, "responses");
    assert_eq!(responses.get("5xx").and_then(Value::as_f64), Some(1.0));
}
