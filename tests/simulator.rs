//! Issue 4 over real sockets: no stale read under concurrent writers, and the
//! simulator's controls (kill, revive, add, remove, switch) under load with no
//! client-visible failure; slow nodes; concurrent and idempotent writes.

mod common;

use bookrelay::http::parse::{parse_request_head, Status};
use bookrelay::json::Value;
use bookrelay::relay::admin;
use bookrelay::store::Store;
use common::{admin, booking_body, booking_body_without_id, node_field, Client, Load, TestRelay};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

fn version_of(reply: &common::Reply) -> u64 {
    reply
        .str_field("special_requests")
        .strip_prefix("version ")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no version in {}", reply.text()))
}

#[test]
fn no_stale_reads_with_eight_readers_and_two_writers() {
    let relay = TestRelay::start(3, 0, "round-robin", |_| {});
    let ids = ["stale-a", "stale-b"];
    // Version 0 of each booking, and every node's cache warmed with it.
    let acked: Vec<AtomicU64> = ids.iter().map(|_| AtomicU64::new(0)).collect();
    let mut setup = relay.client();
    for id in ids {
        let body = booking_body(id).replace(
            r#""payment_method""#,
            r#""special_requests":"version 0","payment_method""#,
        );
        assert_eq!(setup.post_json("/bookings", &body).status, 201);
        for _ in 0..3 {
            assert_eq!(setup.get(&format!("/bookings/{id}")).status, 200);
        }
    }
    let stop = AtomicBool::new(false);
    let addr = relay.addr;
    let (reads, stale, hits) = thread::scope(|scope| {
        for (writer, id) in ids.iter().enumerate() {
            let (acked, stop) = (&acked[writer], &stop);
            scope.spawn(move || {
                let mut client = Client::connect(addr);
                let mut version = 0;
                while !stop.load(Ordering::SeqCst) {
                    version += 1;
                    let body = format!(r#"{{"special_requests":"version {version}"}}"#);
                    let reply = client.patch_json(&format!("/bookings/{id}"), &body);
                    assert_eq!(reply.status, 200, "{}", reply.text());
                    // Only now has the write "returned": readers that start
                    // after this must see at least this version.
                    acked.store(version, Ordering::SeqCst);
                }
            });
        }
        let readers: Vec<_> = (0..8)
            .map(|reader| {
                let (acked, stop) = (&acked, &stop);
                scope.spawn(move || {
                    let mut client = Client::connect(addr);
                    let (mut reads, mut stale, mut hits) = (0u64, Vec::new(), 0u64);
                    while !stop.load(Ordering::SeqCst) {
                        let which = (reads as usize + reader) % ids.len();
                        let floor = acked[which].load(Ordering::SeqCst);
                        let reply = client.get(&format!("/bookings/{}", ids[which]));
                        assert_eq!(reply.status, 200);
                        let seen = version_of(&reply);
                        if seen < floor {
                            stale.push(format!(
                                "{} v{seen} < v{floor} via {:?}",
                                ids[which],
                                reply.header("x-node")
                            ));
                        }
                        hits += u64::from(reply.header("x-cache") == Some("HIT"));
                        reads += 1;
                    }
                    (reads, stale, hits)
                })
            })
            .collect();
        // A few seconds of traffic: a duration, not a synchronisation.
        thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::SeqCst);
        readers.into_iter().map(|r| r.join().expect("reader")).fold(
            (0, Vec::new(), 0),
            |(reads, mut stale, hits), (r, s, h)| {
                stale.extend(s);
                (reads + r, stale, hits + h)
            },
        )
    });
    assert!(
        stale.is_empty(),
        "{} stale reads of {reads}: {:?}",
        stale.len(),
        &stale[..stale.len().min(5)]
    );
    assert!(reads > 500, "only {reads} reads");
    assert!(
        hits > 0,
        "the caches were exercised ({hits} hits of {reads} reads)"
    );
    let versions: u64 = acked.iter().map(|a| a.load(Ordering::SeqCst)).sum();
    assert!(versions > 50, "only {versions} writes");
}

#[test]
fn a_killed_node_costs_no_get_and_comes_back_when_revived() {
    let relay = TestRelay::start(3, 5, "round-robin", |c| {
        c.health_interval = Duration::from_millis(250)
    });
    let victim = relay.node_names()[1].clone();
    let load = Load::start(relay.addr, 4, "/bookings?limit=1");
    load.wait_for(200);

    let killed_at = Instant::now();
    let reply = admin(
        relay.addr,
        "POST",
        &format!("/_relay/nodes/{victim}/kill"),
        "",
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.str_field("state"), "killed");
    relay.wait_for_status("the killed node marked down", Duration::from_secs(5), |s| {
        node_field(s, &victim, "healthy") == Value::Bool(false)
    });
    let noticed = killed_at.elapsed();
    assert!(
        noticed <= Duration::from_millis(500),
        "marked down after {noticed:?}, more than 2 intervals"
    );
    load.wait_for(200);

    let reply = admin(
        relay.addr,
        "POST",
        &format!("/_relay/nodes/{victim}/revive"),
        "",
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let before = node_field(&relay.status(), &victim, "requests")
        .as_f64()
        .expect("requests");
    relay.wait_for_status("traffic to the revived node", Duration::from_secs(5), |s| {
        node_field(s, &victim, "requests")
            .as_f64()
            .expect("requests")
            > before + 10.0
    });
    let (completed, failures) = load.stop();
    assert!(
        failures.is_empty(),
        "{} failed GETs of {completed}: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
}

#[test]
fn an_added_node_gets_traffic_and_a_removed_one_drains_without_failures() {
    let relay = TestRelay::start(3, 5, "round-robin", |_| {});
    let original = relay.node_names();
    let load = Load::start(relay.addr, 4, "/bookings?limit=1");
    load.wait_for(100);

    let added = admin(relay.addr, "POST", "/_relay/nodes", "");
    assert_eq!(added.status, 201, "{}", added.text());
    let name = added.str_field("name");
    assert!(!original.contains(&name), "a new, unique name");
    relay.wait_for_status("traffic to the added node", Duration::from_secs(5), |s| {
        node_field(s, &name, "requests").as_f64().unwrap_or(0.0) > 10.0
    });

    let removed = admin(
        relay.addr,
        "DELETE",
        &format!("/_relay/nodes/{}", original[0]),
        "",
    );
    assert_eq!(removed.status, 204, "{}", removed.text());
    assert!(!relay.node_names().contains(&original[0]));
    load.wait_for(200);
    let (completed, failures) = load.stop();
    assert!(
        failures.is_empty(),
        "{} failed of {completed}: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert_eq!(relay.node_names().len(), 3);
}

#[test]
fn switching_balancers_under_load_fails_nothing() {
    let relay = TestRelay::start(3, 20, "round-robin", |_| {});
    let load = Load::start(relay.addr, 4, "/bookings?limit=2");
    for (name, body) in [
        ("random", r#"{"balancer":"random"}"#),
        ("weighted", r#"{"balancer":"weighted","weights":[5,1,1]}"#),
        ("least-connections", r#"{"balancer":"least-connections"}"#),
        ("consistent-hash", r#"{"balancer":"consistent-hash"}"#),
        ("p2c", r#"{"balancer":"p2c","weights":[1,1,1]}"#),
        ("round-robin", r#"{"balancer":"round-robin"}"#),
    ] {
        load.wait_for(50);
        let reply = admin(relay.addr, "PUT", "/_relay/balancer", body);
        assert_eq!(reply.status, 200, "{name}: {}", reply.text());
        assert_eq!(reply.str_field("balancer"), name);
        assert_eq!(
            relay.status().get("balancer").and_then(Value::as_str),
            Some(name)
        );
    }
    let weights = admin(relay.addr, "GET", "/_relay/balancer", "").json();
    assert_eq!(
        weights
            .get("weights")
            .and_then(Value::as_array)
            .map(|w| w.len()),
        Some(3)
    );
    let (completed, failures) = load.stop();
    assert!(
        failures.is_empty(),
        "{} failed of {completed}",
        failures.len()
    );
}

#[test]
fn control_calls_refuse_bad_input_with_json_errors() {
    let relay = TestRelay::start(2, 0, "round-robin", |_| {});
    let cases = [
        ("POST", "/_relay/nodes/nobody/kill", "", 404),
        ("POST", "/_relay/nodes/nobody/revive", "", 404),
        ("DELETE", "/_relay/nodes/nobody", "", 404),
        ("PUT", "/_relay/balancer", r#"{"balancer":"bogus"}"#, 400),
        (
            "PUT",
            "/_relay/balancer",
            r#"{"balancer":"weighted","weights":[1]}"#,
            400,
        ),
        (
            "PUT",
            "/_relay/balancer",
            r#"{"balancer":"weighted","weights":[1,1001]}"#,
            400,
        ),
        (
            "PUT",
            "/_relay/balancer",
            r#"{"balancer":"weighted","weights":[1,"x"]}"#,
            400,
        ),
        ("PUT", "/_relay/balancer", "{nope", 400),
        ("PUT", "/_relay/balancer", "", 400),
        ("POST", "/_relay/nodes", r#"{"weight":-1}"#, 400),
        ("GET", "/_relay/nodes", "", 405),
        ("POST", "/_relay/status", "", 405),
    ];
    for (method, path, body, status) in cases {
        let reply = admin(relay.addr, method, path, body);
        assert_eq!(
            reply.status,
            status,
            "{method} {path} {body}: {}",
            reply.text()
        );
        assert!(!reply.error().is_empty());
    }
    let name = relay.node_names()[0].clone();
    let revive_running = admin(
        relay.addr,
        "POST",
        &format!("/_relay/nodes/{name}/revive"),
        "",
    );
    assert_eq!(revive_running.status, 409);
    assert_eq!(
        admin(
            relay.addr,
            "POST",
            &format!("/_relay/nodes/{name}/kill"),
            ""
        )
        .status,
        200
    );
    assert_eq!(
        admin(
            relay.addr,
            "POST",
            &format!("/_relay/nodes/{name}/kill"),
            ""
        )
        .status,
        409
    );
}

#[test]
fn external_backends_cannot_be_killed_or_revived() {
    let other = TestRelay::start(1, 0, "round-robin", |_| {});
    let node_addr = other
        .status()
        .get("nodes")
        .and_then(Value::as_array)
        .expect("nodes")[0]
        .get("addr")
        .and_then(Value::as_str)
        .expect("addr")
        .to_string();
    let relay = TestRelay::start(0, 0, "round-robin", |c| c.backends = vec![node_addr]);
    let name = relay.node_names()[0].clone();
    for action in ["kill", "revive"] {
        let reply = admin(
            relay.addr,
            "POST",
            &format!("/_relay/nodes/{name}/{action}"),
            "",
        );
        assert_eq!(reply.status, 409, "{action}");
        assert!(reply.error().contains("external"));
    }
}

#[test]
fn admin_token_guards_changes_but_not_reads() {
    let relay = TestRelay::start(2, 0, "round-robin", |c| {
        c.admin_token = Some("s3cret".into())
    });
    let name = relay.node_names()[0].clone();
    let kill = format!("/_relay/nodes/{name}/kill");
    let mut client = relay.client();
    assert_eq!(client.get("/_relay/status").status, 200);
    let refused = client.request("POST", &kill, &[], b"");
    assert_eq!(refused.status, 403);
    assert!(refused.error().contains("Authorization: Bearer"));
    assert_eq!(
        client
            .request("POST", &kill, &[("Authorization", "Bearer wrong")], b"")
            .status,
        403
    );
    assert_eq!(
        client
            .request("POST", &kill, &[("Authorization", "Bearer s3cret")], b"")
            .status,
        200
    );
}

#[test]
fn without_a_token_changes_are_accepted_from_loopback_only() {
    let relay = TestRelay::start(2, 0, "round-robin", |_| {});
    let name = relay.node_names()[0].clone();
    let raw = format!("POST /_relay/nodes/{name}/kill HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let Ok(Status::Complete((request, _))) = parse_request_head(raw.as_bytes()) else {
        panic!("parse");
    };
    // Handed to the admin layer as if from another machine; no packet leaves this one.
    let remote = admin::handle(
        relay.server.relay(),
        &request,
        "192.0.2.10:40000".parse().expect("addr"),
    );
    assert_eq!(remote.status, 403);
    let local = admin::handle(
        relay.server.relay(),
        &request,
        "127.0.0.1:40000".parse().expect("addr"),
    );
    assert_eq!(local.status, 200);
}

/// The slow node's share of the requests when a relay with `--node-delay
/// 0,0,20` serves 6 concurrent clients under `balancer`.
fn share_of_the_slow_node(balancer: &str) -> f64 {
    let relay = TestRelay::start(3, 5, balancer, |c| {
        c.node_delays = vec![Duration::ZERO, Duration::ZERO, Duration::from_millis(20)]
    });
    let names = relay.node_names();
    let addr = relay.addr;
    thread::scope(|scope| {
        for _ in 0..6 {
            scope.spawn(move || {
                let mut client = Client::connect(addr);
                for _ in 0..60 {
                    assert_eq!(client.get("/bookings?limit=1").status, 200);
                }
            });
        }
    });
    let status = relay.status();
    let requests: Vec<f64> = names
        .iter()
        .map(|n| {
            node_field(&status, n, "requests")
                .as_f64()
                .expect("requests")
        })
        .collect();
    let total: f64 = requests.iter().sum();
    requests[2] / total
}

#[test]
fn least_connections_and_p2c_send_less_to_a_slow_node_than_round_robin() {
    let round_robin = share_of_the_slow_node("round-robin");
    let least = share_of_the_slow_node("least-connections");
    let p2c = share_of_the_slow_node("p2c");
    assert!(
        least < round_robin,
        "least-connections {least:.2} vs round-robin {round_robin:.2}"
    );
    assert!(
        p2c < round_robin,
        "p2c {p2c:.2} vs round-robin {round_robin:.2}"
    );
}

#[test]
fn sixteen_threads_of_concurrent_posts_all_land() {
    let relay = TestRelay::start(3, 0, "round-robin", |_| {});
    let statuses = common::post_concurrently(relay.addr, 16, 150, "p");
    assert_eq!(statuses.len(), 2400);
    assert!(statuses.iter().all(|&s| s == 201));
    assert_eq!(Store::open(&relay.db).expect("open").count(), Ok(2400));
}

#[test]
fn keyed_posts_retried_through_a_node_kill_create_one_row_per_key() {
    let relay = TestRelay::start(3, 0, "round-robin", |c| {
        c.health_interval = Duration::from_millis(100)
    });
    let victim = relay.node_names()[0].clone();
    let addr = relay.addr;
    let sent = AtomicU64::new(0);
    let keys: Vec<String> = thread::scope(|scope| {
        let writers: Vec<_> = (0..8)
            .map(|t| {
                let sent = &sent;
                scope.spawn(move || {
                    let mut client = Client::connect(addr);
                    let mut keys = Vec::new();
                    for i in 0..60 {
                        let key = format!("key-{t}-{i}");
                        let body = booking_body_without_id();
                        let headers = [
                            ("Content-Type", "application/json"),
                            ("Idempotency-Key", key.as_str()),
                        ];
                        // A client that retries until it hears 201, as a payment client would.
                        let mut attempts = 0;
                        loop {
                            attempts += 1;
                            let reply =
                                client.request("POST", "/bookings", &headers, body.as_bytes());
                            if reply.status == 201 {
                                break;
                            }
                            assert!(attempts < 50, "{key}: {} {}", reply.status, reply.text());
                            client = Client::connect(addr);
                        }
                        sent.fetch_add(1, Ordering::SeqCst);
                        keys.push(key);
                    }
                    keys
                })
            })
            .collect();
        while sent.load(Ordering::SeqCst) < 100 {
            thread::yield_now();
        }
        assert_eq!(
            admin(addr, "POST", &format!("/_relay/nodes/{victim}/kill"), "").status,
            200
        );
        writers
            .into_iter()
            .flat_map(|w| w.join().expect("writer"))
            .collect()
    });
    assert!(sent.load(Ordering::SeqCst) == 480);
    let unique: HashSet<&String> = keys.iter().collect();
    assert_eq!(unique.len(), 480);
    assert_eq!(
        Store::open(&relay.db).expect("open").count(),
        Ok(480),
        "exactly one row per key"
    );
}

#[test]
fn a_revived_slow_node_keeps_its_node_delay() {
    let relay = TestRelay::start(2, 5, "round-robin", |c| {
        c.node_delays = vec![Duration::ZERO, Duration::from_millis(50)]
    });
    let slow = relay.node_names()[1].clone();
    for verb in ["kill", "revive"] {
        let reply = admin(
            relay.addr,
            "POST",
            &format!("/_relay/nodes/{slow}/{verb}"),
            "",
        );
        assert_eq!(reply.status, 200, "{verb}: {}", reply.text());
    }
    relay.wait_for_status("the revived node up", Duration::from_secs(5), |s| {
        node_field(s, &slow, "healthy") == Value::Bool(true)
    });
    // Round-robin alternates: among a few GETs, some reach the revived node,
    // and each of those still takes its 50 ms.
    let mut client = relay.client();
    let mut timed_at_slow = Vec::new();
    for _ in 0..6 {
        let started = Instant::now();
        let reply = client.get("/bookings?limit=1");
        assert_eq!(reply.status, 200);
        if reply.header("X-Node") == Some(slow.as_str()) {
            timed_at_slow.push(started.elapsed());
        }
    }
    assert!(!timed_at_slow.is_empty(), "no GET reached {slow}");
    for took in timed_at_slow {
        assert!(
            took >= Duration::from_millis(50),
            "the revived node answered in {took:?}: its --node-delay was lost"
        );
    }
}
