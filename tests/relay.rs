//! The relay over real sockets: balancing as each strategy promises, pooled
//! keep-alive to nodes, SPEC §4 on the client side, failover and retries,
//! status and metrics.

mod common;

use bookrelay::json::Value;
use common::{
    booking_body, node_field, ok_reply, Act, Client, FakeBackend, NodeProcess, TestRelay,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

fn x_node(client: &mut Client, path: &str) -> String {
    let reply = client.get(path);
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.header("x-node").expect("X-Node").to_string()
}

fn counts(names: &[String]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for name in names {
        *counts.entry(name.clone()).or_default() += 1;
    }
    counts
}

#[test]
fn round_robin_rotates_through_every_node_in_order() {
    let relay = TestRelay::start(3, 0, "round-robin", |_| {});
    let order = relay.node_names();
    let mut client = relay.client();
    let seen: Vec<String> = (0..9).map(|_| x_node(&mut client, "/health")).collect();
    let start = order
        .iter()
        .position(|n| *n == seen[0])
        .expect("known node");
    for (i, name) in seen.iter().enumerate() {
        assert_eq!(*name, order[(start + i) % 3], "pick {i} of {seen:?}");
    }
}

#[test]
fn weighted_follows_smooth_weighted_round_robin() {
    let relay = TestRelay::start(3, 0, "weighted", |c| c.weights = Some(vec![5, 1, 1]));
    let order = relay.node_names();
    let mut client = relay.client();
    let seen: Vec<String> = (0..14).map(|_| x_node(&mut client, "/health")).collect();
    let (a, b, c) = (&order[0], &order[1], &order[2]);
    let cycle = [a, a, b, a, c, a, a];
    let expected: Vec<&String> = cycle.iter().chain(cycle.iter()).copied().collect();
    assert_eq!(seen.iter().collect::<Vec<_>>(), expected);
}

#[test]
fn consistent_hash_sends_each_booking_to_one_node() {
    let relay = TestRelay::start(3, 30, "consistent-hash", |_| {});
    let mut client = relay.client();
    let ids = common::some_ids(relay.addr, 30);
    let mut owners = HashMap::new();
    for _ in 0..3 {
        for id in &ids {
            let reply = client.get(&format!("/bookings/{id}"));
            let node = reply.header("x-node").expect("X-Node").to_string();
            assert_eq!(
                owners.entry(id.clone()).or_insert_with(|| node.clone()),
                &node,
                "{id}"
            );
        }
    }
    let spread = counts(&owners.values().cloned().collect::<Vec<_>>());
    assert!(
        spread.len() >= 2,
        "30 ids should land on more than one node: {spread:?}"
    );
    // Repeat reads hit the owner's cache.
    let id = &ids[0];
    assert_eq!(
        client.get(&format!("/bookings/{id}")).header("x-cache"),
        Some("HIT")
    );
}

#[test]
fn random_least_connections_and_p2c_use_every_node() {
    for balancer in ["random", "least-connections", "p2c"] {
        let relay = TestRelay::start(3, 0, balancer, |_| {});
        let mut client = relay.client();
        let seen: Vec<String> = (0..60).map(|_| x_node(&mut client, "/health")).collect();
        let spread = counts(&seen);
        assert_eq!(spread.len(), 3, "{balancer}: {spread:?}");
    }
}

#[test]
fn keep_alive_through_the_relay_uses_few_node_connections() {
    let relay = TestRelay::start(3, 3, "round-robin", |_| {});
    let mut client = relay.client();
    for i in 0..1000 {
        assert_eq!(client.get("/bookings?limit=1").status, 200, "request {i}");
    }
    let status = relay.status();
    let nodes = status
        .get("nodes")
        .and_then(Value::as_array)
        .expect("nodes");
    let opened: f64 = nodes
        .iter()
        .map(|n| {
            n.get("connections_opened")
                .and_then(Value::as_f64)
                .expect("connections_opened")
        })
        .sum();
    // One client, one request at a time: one pooled connection per node.
    assert!(
        opened <= 3.0,
        "opened {opened} node connections for 1000 requests"
    );
    let requests: f64 = nodes
        .iter()
        .map(|n| n.get("requests").and_then(Value::as_f64).expect("requests"))
        .sum();
    assert_eq!(
        requests, 1000.0,
        "status calls are the relay's own, not forwarded"
    );
}

#[test]
fn connection_close_through_the_relay_closes_promptly() {
    let relay = TestRelay::start(2, 0, "round-robin", |_| {});
    let mut samples = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let mut client = relay.client();
        client.send(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let answer = String::from_utf8(client.read_to_end()).expect("utf8");
        samples.push(started.elapsed());
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("Connection: close\r\n"));
        assert!(answer.contains("X-Node: "));
    }
    samples.sort();
    let median = samples[samples.len() / 2];
    // The seed's relay took ~150 ms; a timer anywhere would show here.
    assert!(
        median < Duration::from_millis(50),
        "median close round trip {median:?}"
    );
}

#[test]
fn the_relay_speaks_http_like_a_node() {
    let relay = TestRelay::start(2, 3, "round-robin", |_| {});
    // Bare LF, typed by hand.
    let mut client = relay.client();
    client.send(b"GET /bookings?limit=2 HTTP/1.1\nHost: x\n\n");
    assert_eq!(client.read_reply(false).expect("reply").status, 200);
    // Pipelined, then half-closed: every answer, in order, then close.
    let mut client = relay.client();
    let mut batch = Vec::new();
    for i in 1..=5 {
        batch.extend_from_slice(
            format!("GET /bookings?limit={i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        );
    }
    client.send(&batch);
    client.finish_sending();
    for i in 1..=5 {
        let page = client.read_reply(false).expect("reply").json();
        assert_eq!(
            page.get("items").and_then(Value::as_array).map(|a| a.len()),
            Some(i.min(3))
        );
    }
    assert!(client.is_closed_by_server());
    // HTTP/1.0 closes by default.
    let mut client = relay.client();
    client.send(b"GET /health HTTP/1.0\r\n\r\n");
    assert!(String::from_utf8_lossy(&client.read_to_end()).starts_with("HTTP/1.1 200 OK"));
    // Errors from a node pass through unchanged; the connection stays usable.
    let mut client = relay.client();
    let missing = client.get("/bookings/no-such-id");
    assert_eq!(missing.status, 404);
    assert!(missing.header("x-node").is_some());
    assert_eq!(missing.header("x-cache"), Some("MISS"));
    assert!(missing.error().contains("no-such-id"));
    // Malformed framing is refused by the relay itself and closes.
    let mut client = relay.client();
    client.send(
        b"POST /bookings HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    let reply = client.read_reply(false).expect("400");
    assert_eq!(reply.status, 400);
    assert!(reply.header("x-node").is_none(), "never forwarded");
    assert!(client.is_closed_by_server());
}

#[test]
fn writes_through_the_relay_are_read_back_from_any_node() {
    let relay = TestRelay::start(3, 0, "round-robin", |_| {});
    let mut client = relay.client();
    let created = client.post_json("/bookings", &booking_body("via-relay"));
    assert_eq!(created.status, 201);
    assert_eq!(created.header("location"), Some("/bookings/via-relay"));
    // Warm every node's cache, then write, then read from every node.
    for _ in 0..6 {
        assert_eq!(client.get("/bookings/via-relay").status, 200);
    }
    assert_eq!(
        client
            .patch_json("/bookings/via-relay", r#"{"payment_status":"Cancelled"}"#)
            .status,
        200
    );
    for _ in 0..6 {
        let reply = client.get("/bookings/via-relay");
        assert_eq!(
            reply.str_field("payment_status"),
            "Cancelled",
            "from {:?}",
            reply.header("x-node")
        );
    }
}

#[test]
fn requests_reach_nodes_with_x_forwarded_for_and_without_hop_by_hop_headers() {
    let backend = FakeBackend::start(|_, _| Act::Reply(ok_reply("{}")));
    let addr = backend.addr.to_string();
    let relay = TestRelay::start(0, 0, "round-robin", |c| c.backends = vec![addr]);
    let mut client = relay.client();
    let reply = client.request(
        "GET",
        "/anything",
        &[
            ("X-Forwarded-For", "203.0.113.7"),
            ("Keep-Alive", "timeout=5"),
        ],
        b"",
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-node"), Some("fake"));
    let seen = backend.received();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(seen[0].header("keep-alive"), None);
    assert_eq!(
        seen[0].header("host"),
        Some(relay.addr.to_string().as_str()),
        "the client's Host, unchanged"
    );
    // The external backend is named by its /health answer.
    assert_eq!(relay.node_names(), ["fake"]);
    assert_eq!(
        node_field(&relay.status(), "fake", "kind").as_str(),
        Some("external")
    );
}

#[test]
fn a_pooled_connection_closed_by_the_node_is_resent_transparently() {
    // Answers every request, then closes the connection without saying so:
    // each pooled connection is stale by the time the relay reuses it.
    let backend = FakeBackend::start(|_, _| Act::ReplyAndClose(ok_reply("{}")));
    let addr = backend.addr.to_string();
    let relay = TestRelay::start(0, 0, "round-robin", |c| c.backends = vec![addr]);
    let mut client = relay.client();
    for i in 0..20 {
        // The node has really closed the connection the relay pooled (not
        // merely about to): the relay must find it closed before writing.
        backend.wait_all_closed(Duration::from_secs(5));
        // POST without an idempotency key may never be sent twice, but a
        // pooled connection found closed before the write is just replaced.
        let reply = client.request("POST", "/x", &[("Content-Type", "application/json")], b"{}");
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
    }
    assert_eq!(
        backend.received().len(),
        20,
        "each request reached the node exactly once"
    );
}

#[test]
fn a_node_that_dies_mid_request_is_a_502_for_posts_and_a_retry_for_gets() {
    // The first backend closes every request unanswered; the second answers.
    let dead = FakeBackend::start(|_, _| Act::Close);
    let alive = FakeBackend::start(|_, _| Act::Reply(ok_reply("{}")));
    let backends = vec![dead.addr.to_string(), alive.addr.to_string()];
    let relay = TestRelay::start(0, 0, "round-robin", |c| c.backends = backends);
    let mut client = relay.client();
    for _ in 0..4 {
        assert_eq!(
            client.get("/x").status,
            200,
            "GETs are retried on the other node"
        );
    }
    let mut saw_502 = false;
    for _ in 0..4 {
        let reply = client.request("POST", "/x", &[("Content-Type", "application/json")], b"{}");
        assert!(matches!(reply.status, 200 | 502), "{}", reply.status);
        if reply.status == 502 {
            assert!(reply.error().contains("before answering"));
            saw_502 = true;
        }
    }
    assert!(saw_502, "a POST that reached the dead node is not retried");
    let keyed = client.request(
        "POST",
        "/x",
        &[
            ("Content-Type", "application/json"),
            ("Idempotency-Key", "k1"),
        ],
        b"{}",
    );
    assert_eq!(keyed.status, 200, "a POST with Idempotency-Key is retried");
}

#[test]
fn no_healthy_node_is_a_503() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = unused.local_addr().expect("addr").to_string();
    drop(unused);
    let relay = TestRelay::start(0, 0, "round-robin", |c| c.backends = vec![addr]);
    let reply = relay.client().get("/bookings");
    assert_eq!(reply.status, 503);
    assert!(reply.error().contains("no healthy node"));
    assert_eq!(
        node_field(&relay.status(), &relay.node_names()[0], "healthy"),
        Value::Bool(false)
    );
}

#[test]
fn a_killed_node_process_is_marked_down_retried_around_and_welcomed_back() {
    let dir = bookrelay::temp_dir::TempDir::new("failover");
    let db = dir.path().join("bookings.db");
    let mut nodes: Vec<NodeProcess> = ["proc-a", "proc-b", "proc-c"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            NodeProcess::start(
                name,
                &db,
                "127.0.0.1:0",
                &["--seed", if i == 0 { "20" } else { "0" }],
            )
        })
        .collect();
    let backends = nodes.iter().map(|n| n.addr.to_string()).collect();
    let relay = TestRelay::start(0, 0, "round-robin", |c| c.backends = backends);
    assert_eq!(relay.node_names(), ["proc-a", "proc-b", "proc-c"]);
    let addr = relay.addr;

    // GET load from 4 clients; proc-b is killed once 400 requests are done.
    let completed = AtomicUsize::new(0);
    let (failures, completed_at_kill) = thread::scope(|scope| {
        let load: Vec<_> = (0..4)
            .map(|_| {
                let completed = &completed;
                scope.spawn(move || {
                    let mut client = Client::connect(addr);
                    let mut failures = Vec::new();
                    for _ in 0..400 {
                        let reply = client.get("/bookings?limit=2");
                        if reply.status != 200 {
                            failures.push(format!("{} {}", reply.status, reply.text()));
                        }
                        completed.fetch_add(1, Ordering::SeqCst);
                    }
                    failures
                })
            })
            .collect();
        while completed.load(Ordering::SeqCst) < 400 {
            thread::yield_now();
        }
        let at_kill = completed.load(Ordering::SeqCst);
        nodes[1].kill();
        let failures: Vec<String> = load
            .into_iter()
            .flat_map(|h| h.join().expect("load thread"))
            .collect();
        (failures, at_kill)
    });
    assert!(
        completed_at_kill < 1200,
        "the kill landed mid-load ({completed_at_kill} of 1600 done)"
    );
    assert!(failures.is_empty(), "client-visible failures: {failures:?}");
    relay.wait_for_status("proc-b down", Duration::from_secs(5), |s| {
        node_field(s, "proc-b", "healthy") == Value::Bool(false)
    });

    // Restart it on the same address: two passing checks bring it back.
    let old_addr = nodes[1].addr.to_string();
    nodes[1] = NodeProcess::start("proc-b", &db, &old_addr, &[]);
    relay.wait_for_status("proc-b up", Duration::from_secs(5), |s| {
        node_field(s, "proc-b", "healthy") == Value::Bool(true)
    });
    let mut client = relay.client();
    let seen: Vec<String> = (0..6).map(|_| x_node(&mut client, "/health")).collect();
    assert!(
        seen.iter().any(|n| n == "proc-b"),
        "proc-b gets traffic again: {seen:?}"
    );
}

#[test]
fn status_and_metrics_describe_every_node() {
    let relay = TestRelay::start(3, 2, "p2c", |_| {});
    let mut client = relay.client();
    for _ in 0..10 {
        client.get("/bookings?limit=1");
    }
    let status = relay.status();
    assert_eq!(status.get("balancer").and_then(Value::as_str), Some("p2c"));
    let nodes = status
        .get("nodes")
        .and_then(Value::as_array)
        .expect("nodes");
    assert_eq!(nodes.len(), 3);
    for node in nodes {
        assert_eq!(node.get("kind").and_then(Value::as_str), Some("thread"));
        assert_eq!(node.get("healthy"), Some(&Value::Bool(true)));
        assert!(node.get("cache_hits").and_then(Value::as_f64).is_some());
    }
    let total: f64 = nodes
        .iter()
        .filter_map(|n| n.get("requests")?.as_f64())
        .sum();
    assert_eq!(total, 10.0);
    let metrics = client.get("/_relay/metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .header("content-type")
        .expect("type")
        .starts_with("text/plain"));
    let text = metrics.text();
    assert!(text.contains("# TYPE bookrelay_node_requests_total counter"));
    assert_eq!(text.matches("bookrelay_node_requests_total{").count(), 3);
    assert_eq!(client.get("/_relay/nope").status, 404);
}

#[test]
fn bad_options_exit_2_and_a_busy_port_exits_1() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_bookrelay"))
            .args(args)
            .output()
            .expect("run bookrelay")
    };
    for (args, needle) in [
        (&["--nodes", "abc"][..], "--nodes"),
        (&["--balancer", "bogus"][..], "--balancer"),
        (&["--nodes", "0"][..], "--backend"),
        (&["--frobnicate"][..], "--frobnicate"),
        (&["--hash-balance-factor", "1"][..], "--hash-balance-factor"),
        (&["--slow-start", "soon"][..], "--slow-start"),
    ] {
        let output = run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(stderr.contains("--help"), "usage hint: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").to_string();
    let dir = bookrelay::temp_dir::TempDir::new("busy");
    let db = dir.path().join("b.db");
    let output = run(&["--listen", &port, "--db", db.to_str().expect("utf8 path")]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already in use"), "{stderr}");
    let help = run(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--balancer NAME"));
}

#[test]
fn a_node_that_never_answers_is_a_504_after_30_seconds() {
    // Keeps the connection open and silent for good.
    let backend = FakeBackend::start(|_, _| loop {
        thread::park();
    });
    let addr = backend.addr.to_string();
    let relay = TestRelay::start(0, 0, "round-robin", |c| c.backends = vec![addr]);
    let mut client = relay.client();
    client
        .stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let started = Instant::now();
    let reply = client.get("/slow");
    assert_eq!(reply.status, 504);
    assert!(reply.error().contains("30 seconds"));
    assert!(
        started.elapsed() >= Duration::from_secs(29),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn expect_continue_is_answered_by_the_relay_and_not_forwarded() {
    let backend = FakeBackend::start(|_, _| Act::Reply(ok_reply("{}")));
    let addr = backend.addr.to_string();
    let relay = TestRelay::start(0, 0, "round-robin", |c| c.backends = vec![addr]);
    let mut client = relay.client();
    client.send(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
    assert_eq!(client.read_reply(false).expect("interim").status, 100);
    client.send(b"{}");
    assert_eq!(client.read_reply(false).expect("final").status, 200);
    let seen = backend.received();
    assert_eq!(seen[0].header("expect"), None);
    assert_eq!(seen[0].body, b"{}");
}

#[test]
fn the_dashboard_is_one_self_contained_html_page() {
    let relay = TestRelay::start(1, 0, "round-robin", |_| {});
    let mut client = relay.client();
    let page = client.get("/_relay/");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .expect("type")
        .starts_with("text/html"));
    let html = page.text();
    assert!(
        html.contains("\"/_relay\"") && html.contains("\"/status\""),
        "it polls the status"
    );
    assert!(
        html.contains("/events?after=${lastSeq}"),
        "its event log polls the relay's events"
    );
    assert!(
        html.contains("retried on another node or answered with an error"),
        "failures are explained in a tooltip"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external URL"
    );
    let bare = client.get("/_relay");
    assert_eq!(bare.status, 301);
    assert_eq!(bare.header("location"), Some("/_relay/"));
}

#[test]
fn the_access_log_has_one_line_per_request() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = bookrelay::temp_dir::TempDir::new("access-log");
    let db = dir.path().join("b.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_bookrelay"))
        .args([
            "--nodes",
            "1",
            "--seed",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--access-log",
            "--db",
        ])
        .arg(&db)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the relay");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let addr: std::net::SocketAddr = loop {
        let line = lines
            .next()
            .expect("the relay printed its address")
            .expect("read");
        if let Some(rest) = line.strip_prefix("relay listening on ") {
            break rest
                .split(' ')
                .next()
                .expect("address")
                .parse()
                .expect("valid address");
        }
    };
    let mut client = Client::connect(addr);
    assert_eq!(client.get("/bookings?limit=1").status, 200);
    assert_eq!(client.get("/nowhere").status, 404);
    // A request's line is written once its answer has gone out: read the
    // log until both are there (or the relay ends), then stop it.
    let mut log = String::new();
    let mut log_lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut lines: Vec<String> = Vec::new();
    while lines.len() < 2 {
        let Some(Ok(line)) = log_lines.next() else {
            break;
        };
        log.push_str(&line);
        log.push('\n');
        if line.contains(" GET ") {
            lines.push(line);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(lines.len(), 2, "{log}");
    // time, client, method, path, status, node, microseconds
    let fields: Vec<&str> = lines[0].split(' ').collect();
    assert_eq!(fields.len(), 7, "{}", lines[0]);
    assert!(
        fields[0].ends_with('Z') && fields[0].contains('T'),
        "{}",
        fields[0]
    );
    assert!(fields[1].starts_with("127.0.0.1:"));
    assert_eq!(
        (fields[2], fields[3], fields[4]),
        ("GET", "/bookings?limit=1", "200")
    );
    assert!(fields[6].ends_with("us") && fields[6].trim_end_matches("us").parse::<u64>().is_ok());
    assert!(lines[1].contains(" /nowhere 404 "));
}

#[test]
fn head_through_the_relay_keeps_the_length_and_sends_no_body() {
    let relay = TestRelay::start(2, 3, "round-robin", |_| {});
    let id = common::some_id(relay.addr);
    common::assert_head_matches_get(&mut relay.client(), &format!("/bookings/{id}"));
}
