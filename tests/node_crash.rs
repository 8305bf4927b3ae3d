//! A killed node is a crashed node: whatever it was in the middle of handling
//! is never committed after the kill, even a write still in its simulated
//! service time; and a node started again on the same database writes normally.
//!
//! Each case uses a node with a long simulated service time, sends one write,
//! waits until the node has started handling it (its in-progress count, not a
//! guessed sleep), kills it, then waits out the service time: a write that
//! survived the kill would commit in that window.

mod common;

use bookrelay::launch;
use bookrelay::node::{self, NodeConfig, NodeServer};
use bookrelay::store::Store;
use bookrelay::temp_dir::TempDir;
use common::{admin, booking_body, Client, TestRelay, ANSWER_TIMEOUT};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

/// The simulated service time of the slow node: long enough that a kill lands
/// well inside it.
const DELAY: Duration = Duration::from_millis(1000);

/// Time allowed beyond [`DELAY`] for a surviving handler to reach its commit.
const MARGIN: Duration = Duration::from_millis(500);

struct SlowNode {
    server: NodeServer,
    db: PathBuf,
    // Dropped last: the server must stop before its files go.
    _dir: TempDir,
}

impl SlowNode {
    /// A node with `seed` sample bookings that takes [`DELAY`] per booking request.
    fn start(label: &str, seed: usize) -> SlowNode {
        let dir = TempDir::new(label);
        let db = dir.path().join("bookings.db");
        launch::prepare_database(&db, seed).expect("prepare database");
        let config = NodeConfig {
            name: label.to_string(),
            db: db.clone(),
            cache_capacity: 1024,
            cache_ttl: Some(Duration::from_secs(60)),
            delay: DELAY,
        };
        let listener = node::bind("127.0.0.1:0").expect("bind");
        let server = node::start_node(&config, listener).expect("start node");
        SlowNode {
            server,
            db,
            _dir: dir,
        }
    }

    fn in_progress(&self) -> u64 {
        self.server.node().requests_in_progress()
    }
}

/// Every row of the table as JSON, in id order.
fn table(db: &std::path::Path) -> Vec<String> {
    Store::open(db)
        .expect("open store")
        .list(None, 1000)
        .expect("list")
        .iter()
        .map(|b| b.to_json())
        .collect()
}

fn raw_request(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
    for (name, value) in headers {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    raw.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    raw.into_bytes()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < ANSWER_TIMEOUT,
            "timed out waiting for {what}"
        );
        thread::sleep(Duration::from_millis(1));
    }
    started.elapsed()
}

/// Sends the request `build` makes (given the id of an existing booking) to a
/// slow node, kills the node while it handles it, and checks that the table
/// is unchanged once the service time is over.
fn kill_mid_request(label: &str, build: impl FnOnce(&str) -> Vec<u8>) {
    let mut node = SlowNode::start(label, 1);
    let before = table(&node.db);
    let existing = Store::open(&node.db)
        .expect("open store")
        .list(None, 1)
        .expect("list")[0]
        .booking_id
        .clone();
    let mut client = Client::connect(node.server.addr());
    client.send(&build(&existing));
    wait_until("the node to start handling the request", || {
        node.in_progress() == 1
    });

    let killed_at = Instant::now();
    node.server.kill();
    assert!(
        client.is_closed_by_server(),
        "{label}: the client's connection was not cut by the kill"
    );
    let stopped_after = wait_until("the killed node's handler to end", || {
        node.in_progress() == 0
    });
    // Wait out the rest of the service time: a handler that outlived the kill
    // would have committed by then.
    while killed_at.elapsed() < DELAY + MARGIN {
        assert_eq!(
            table(&node.db),
            before,
            "{label}: a write committed {:?} after the kill",
            killed_at.elapsed()
        );
        thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(table(&node.db), before, "{label}: the table changed");
    assert!(
        stopped_after < DELAY / 2,
        "{label}: the killed node's handler lingered {stopped_after:?} of its {DELAY:?} service time"
    );
}

#[test]
fn a_post_in_progress_on_a_killed_node_is_not_committed() {
    kill_mid_request("crash-post", |_| {
        raw_request(
            "POST",
            "/bookings",
            &[("Content-Type", "application/json")],
            &booking_body("crash-post-1"),
        )
    });
}

#[test]
fn a_keyed_post_in_progress_on_a_killed_node_is_not_committed() {
    kill_mid_request("crash-keyed", |_| {
        raw_request(
            "POST",
            "/bookings",
            &[
                ("Content-Type", "application/json"),
                ("Idempotency-Key", "crash-key-1"),
            ],
            &booking_body("crash-keyed-1"),
        )
    });
}

#[test]
fn a_patch_in_progress_on_a_killed_node_is_not_committed() {
    kill_mid_request("crash-patch", |id| {
        raw_request(
            "PATCH",
            &format!("/bookings/{id}"),
            &[("Content-Type", "application/json")],
            r#"{"special_requests":"written after the crash"}"#,
        )
    });
}

#[test]
fn a_delete_in_progress_on_a_killed_node_is_not_committed() {
    kill_mid_request("crash-delete", |id| {
        raw_request("DELETE", &format!("/bookings/{id}"), &[], "")
    });
}

#[test]
fn a_slow_node_that_is_not_killed_commits_its_write() {
    let node = SlowNode::start("crash-control", 0);
    let mut client = Client::connect(node.server.addr());
    let started = Instant::now();
    let reply = client.post_json("/bookings", &booking_body("crash-control-1"));
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert!(started.elapsed() >= DELAY, "the service time was skipped");
    assert_eq!(Store::open(&node.db).expect("open").count(), Ok(1));
}

#[test]
fn a_revived_node_commits_writes_again() {
    let relay = TestRelay::start(1, 0, "round-robin", |_| {});
    let name = relay.node_names()[0].clone();
    for action in ["kill", "revive"] {
        let reply = admin(
            relay.addr,
            "POST",
            &format!("/_relay/nodes/{name}/{action}"),
            "",
        );
        assert_eq!(reply.status, 200, "{action}: {}", reply.text());
    }
    let reply = relay
        .client()
        .post_json("/bookings", &booking_body("after-revive-1"));
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(Store::open(&relay.db).expect("open").count(), Ok(1));
}
