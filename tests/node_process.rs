//! `bookrelay node` as its own process: start-up, shared database files.

mod common;

use bookrelay::temp_dir::TempDir;
use common::{Client, NodeProcess};
use std::thread;

#[test]
fn node_processes_started_together_on_a_new_database_all_serve() {
    for round in 0..6 {
        let dir = TempDir::new("together");
        let db = dir.path().join("bookings.db");
        let nodes: Vec<NodeProcess> = thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|i| {
                    let db = &db;
                    scope.spawn(move || {
                        NodeProcess::start(&format!("n{i}"), db, "127.0.0.1:0", &["--seed", "50"])
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("node started"))
                .collect()
        });
        for node in &nodes {
            let mut client = Client::connect(node.addr);
            assert_eq!(client.get("/health").status, 200, "round {round}");
            let page = client.get("/bookings?limit=1000").json();
            let count = page
                .get("items")
                .and_then(|v| v.as_array())
                .map(|a| a.len());
            assert_eq!(count, Some(50), "seeded exactly once (round {round})");
        }
    }
}

#[test]
fn a_write_through_one_process_is_read_fresh_through_another() {
    let dir = TempDir::new("two-processes");
    let db = dir.path().join("bookings.db");
    let a = NodeProcess::start("proc-writer", &db, "127.0.0.1:0", &["--seed", "3"]);
    let b = NodeProcess::start("proc-reader", &db, "127.0.0.1:0", &[]);
    let mut writer = Client::connect(a.addr);
    let mut reader = Client::connect(b.addr);
    let id = writer
        .get("/bookings?limit=1")
        .json()
        .get("items")
        .and_then(|v| v.as_array())
        .and_then(|items| items.first())
        .and_then(|b| b.get("booking_id"))
        .and_then(|v| v.as_str())
        .expect("a seeded booking")
        .to_string();
    let path = format!("/bookings/{id}");
    let mut fresh = 0;
    for round in 0..100 {
        // B holds the current value in its cache...
        reader.get(&path);
        assert_eq!(
            reader.get(&path).header("x-cache"),
            Some("HIT"),
            "round {round}"
        );
        // ...A changes it...
        let name = format!("Process Round {round}");
        let reply = writer.patch_json(&path, &format!(r#"{{"customer_name":"{name}"}}"#));
        assert_eq!(reply.status, 200);
        // ...and B must answer the new value.
        if reader.get(&path).str_field("customer_name") == name {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 100, "fresh reads out of 100");
    let stats = reader.get("/stats").json();
    assert!(
        stats
            .get("cache_invalidations")
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0)
            >= 100.0
    );
}
