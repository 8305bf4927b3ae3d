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
