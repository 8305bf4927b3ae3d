//! Sick nodes over real sockets: `fail` and `heal`, outlier ejection and
//! re-admission, and fail-open when most nodes fail their checks. Every
//! wait is for a specific event or figure, with a deadline.

mod common;

use bookrelay::json::Value;
use common::events::{find_event, seq, text, wait_for_event, WAIT};
use common::{admin, node_field, ok_reply, Act, FakeBackend, TestRelay};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// A backend whose `/check` passes while `passing` is set and answers 404
/// otherwise; every other request gets a 200.
fn checked_backend(passing: &Arc<AtomicBool>) -> FakeBackend {
    let passing = Arc::clone(passing);
    FakeBackend::start(move |request, _| {
        if request.path() == "/check" && !passing.load(Ordering::SeqCst) {
            let body = "no";
            return Act::Reply(
                format!(
                    "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes(),
            );
        }
        Act::Reply(ok_reply("{}"))
    })
}

fn served(backend: &FakeBackend) -> usize {
    backend
        .received()
        .iter()
        .filter(|r| r.path() != "/check")
        .count()
}

#[test]
fn with_two_of_three_nodes_failing_their_checks_requests_fail_open_to_them() {
    let flags: Vec<Arc<AtomicBool>> = [true, false, false]
        .into_iter()
        .map(|p| Arc::new(AtomicBool::new(p)))
        .collect();
    let backends: Vec<FakeBackend> = flags.iter().map(checked_backend).collect();
    let relay = TestRelay::start(0, 0, "round-robin", |c| {
        c.backends = backends.iter().map(|b| b.addr.to_string()).collect();
        c.health_path = Some("/check".into());
    });
    let names = relay.node_names();
    relay.wait_for_status("two nodes down by their checks", WAIT, |s| {
        let down: Vec<_> = names
            .iter()
            .filter(|n| node_field(s, n, "healthy") == Value::Bool(false))
            .collect();
        down.len() == 2
    });
    let mut client = relay.client();
    for _ in 0..9 {
        let reply = client.get("/anything");
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let open = wait_for_event(relay.addr, 0, "fail-open", None);
    assert_eq!(text(&open, "node"), None);
    for (backend, flag) in backends.iter().zip(&flags) {
        assert!(
            served(backend) > 0,
            "every node that accepts connections serves (passing: {})",
            flag.load(Ordering::SeqCst)
        );
    }

    // One more passes its checks: two of three fit, no longer fail-open.
    flags[1].store(true, Ordering::SeqCst);
    let (b1, b2) = (&names[1], &names[2]);
    relay.wait_for_status("the second node up", WAIT, |s| {
        node_field(s, b1, "healthy") == Value::Bool(true)
    });
    assert_eq!(client.get("/anything").status, 200);
    wait_for_event(relay.addr, seq(&open), "fail-open-end", None);
    let before = served(&backends[2]);
    for _ in 0..6 {
        assert_eq!(client.get("/anything").status, 200);
    }
    assert_eq!(
        served(&backends[2]),
        before,
        "{b2}, down by its checks, gets nothing once enough nodes are fit"
    );
}

#[test]
fn failing_open_still_skips_a_node_that_refuses_connections() {
    let flags: Vec<Arc<AtomicBool>> = (0..2).map(|_| Arc::new(AtomicBool::new(false))).collect();
    let backends: Vec<FakeBackend> = flags.iter().map(checked_backend).collect();
    let relay = TestRelay::start(1, 0, "round-robin", |c| {
        c.backends = backends.iter().map(|b| b.addr.to_string()).collect();
        c.health_path = Some("/check".into());
    });
    let thread = relay
        .node_names()
        .into_iter()
        .find(|n| node_field(&relay.status(), n, "kind") == Value::from("thread"))
        .expect("the spawned node");
    let killed = admin(
        relay.addr,
        "POST",
        &format!("/_relay/nodes/{thread}/kill"),
        "",
    );
    assert_eq!(killed.status, 200, "{}", killed.text());
    // Everything is down by its checks (the spawned node answers /check 404
    // until killed); the two backends still serve, the killed node refuses.
    let mut client = relay.client();
    for _ in 0..9 {
        let reply = client.get("/anything");
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    wait_for_event(relay.addr, 0, "fail-open", None);
    relay.wait_for_status("the killed node down", WAIT, |s| {
        node_field(s, &thread, "healthy") == Value::Bool(false)
    });
    assert!(served(&backends[0]) > 0 && served(&backends[1]) > 0);
}
