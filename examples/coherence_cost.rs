//! What the no-stale-read guarantee costs a cache hit, and what a node's own
//! work per `GET /bookings/{id}` is with and without its cache.
//!
//! Every cached read first asks whether anyone committed since the last look
//! (one `pread` of SQLite's WAL-index header; the `PRAGMA data_version` poll
//! only when it changed). This times that check beside an LRU lookup and a
//! SQLite primary-key read, then the whole request handler (routing, cache or
//! store, JSON, response) on a node with a cache and on one without, on one
//! thread with no sockets, so the figures are per-request CPU cost.
//!
//! ```sh
//! cargo run --release --example coherence_cost
//! ```

use bookrelay::cache::{Cache, Lookup};
use bookrelay::http::parse::{parse_request_head, Status};
use bookrelay::node::{routes, Node, NodeConfig};
use bookrelay::rand::Rng;
use bookrelay::store::Store;
use bookrelay::temp_dir::TempDir;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn per_op(rounds: u32, mut op: impl FnMut()) -> Duration {
    for _ in 0..rounds / 10 {
        op();
    }
    let started = Instant::now();
    for _ in 0..rounds {
        op();
    }
    started.elapsed() / rounds
}

fn main() {
    let dir = TempDir::new("coherence-cost");
    let store = Store::open(&dir.path().join("bookings.db")).expect("open database");
    store.seed_if_empty(1000, &mut Rng::new(1)).expect("seed");
    let id = store.list(None, 1).expect("list")[0].booking_id.clone();
    let mut feed = store.change_feed().expect("change feed");
    let cache = Cache::new(1024, None);
    if let Lookup::Miss(ticket) = cache.lookup(&id, Instant::now()) {
        cache.put(&id, Arc::from("{}"), ticket, Instant::now());
    }

    let rounds = 200_000;
    let check = per_op(rounds, || {
        black_box(feed.poll().expect("poll"));
    });
    let lookup = per_op(rounds, || {
        black_box(cache.lookup(black_box(&id), Instant::now()));
    });
    let read = per_op(rounds / 10, || {
        black_box(store.get(black_box(&id)).expect("get"));
    });
    println!(
        "coherence check (WAL-index header, nothing changed):    {:>7.2} us",
        check.as_secs_f64() * 1e6
    );
    println!(
        "LRU lookup (hit):                                      {:>7.2} us",
        lookup.as_secs_f64() * 1e6
    );
    println!(
        "SQLite read by primary key (what a miss costs):        {:>7.2} us",
        read.as_secs_f64() * 1e6
    );
    println!(
        "a cache hit costs {:.2} us of which the check is {:.0}%; a miss adds {:.2} us",
        (check + lookup).as_secs_f64() * 1e6,
        100.0 * check.as_secs_f64() / (check + lookup).as_secs_f64(),
        read.as_secs_f64() * 1e6
    );

    // The whole handler, cached and uncached, on the same database.
    let node = |name: &str, capacity: usize| {
        Node::open(&NodeConfig {
            name: name.into(),
            db: dir.path().join("bookings.db"),
            cache_capacity: capacity,
            cache_ttl: None,
            delay: Duration::ZERO,
        })
        .expect("node")
    };
    let (cached, uncached) = (node("cached", 1024), node("uncached", 0));
    let raw = format!("GET /bookings/{id} HTTP/1.1\r\nHost: x\r\n\r\n");
    let Ok(Status::Complete((request, _))) = parse_request_head(raw.as_bytes()) else {
        panic!("request parses");
    };
    let hit = per_op(rounds, || {
        black_box(routes::handle(&cached, black_box(&request)));
    });
    let miss = per_op(rounds / 10, || {
        black_box(routes::handle(&uncached, black_box(&request)));
    });
    println!(
        "node handler, cached GET /bookings/{{id}}:   {:>7.2} us",
        hit.as_secs_f64() * 1e6
    );
    println!(
        "node handler, uncached GET /bookings/{{id}}: {:>7.2} us",
        miss.as_secs_f64() * 1e6
    );
    println!(
        "a cached GET costs the node {:.1}x less work than an uncached one",
        miss.as_secs_f64() / hit.as_secs_f64()
    );
}
