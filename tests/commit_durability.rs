//! Group commit keeps the durability promise: a `bookrelay node` process
//! killed (SIGKILL) in the middle of a stream of concurrent POSTs has
//! committed every booking it answered 2xx, whole. Writes it never answered
//! may or may not be there, but never half-written.

mod common;

use bookrelay::client::HttpClient;
use bookrelay::json::{self, Value};
use bookrelay::temp_dir::TempDir;
use common::NodeProcess;
use std::collections::BTreeMap;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Concurrent posting clients, each on its own keep-alive connection.
const POSTERS: usize = 8;

/// Bookings answered 201 before the kill. Big enough that the kill lands
/// while many batches are being formed and committed.
const ACKED_BEFORE_KILL: usize = 300;

/// Most posts per client, so a run is bounded even if the kill were late.
const MAX_POSTS_EACH: usize = 5_000;

/// A complete booking whose every field says which post it is, so a row
/// mixing two posts, or missing part of one, cannot match.
fn body(id: &str, n: usize) -> String {
    let notes = format!("notes of {id}: ").repeat(12);
    format!(
        r#"{{"booking_id":"{id}","customer_id":"C-{id}","customer_name":"Person {id}","email":"{id}@example.com","phone":"+44 20 7946 {n:04}","destination":"City {id}","departure_city":"From {id}","flight_number":"FL{n}","hotel_name":"Hotel {id}","room_type":"Room {id}","booking_date":"2025-05-01","travel_date":"2025-06-01","return_date":"2025-06-08","total_price":{n}.25,"payment_status":"Paid","payment_method":"Card {id}","special_requests":"{notes}"}}"#
    )
}

/// What one post sent, and what it was answered (`None`: no answer).
struct Post {
    sent: Value,
    answer: Option<(u16, Vec<u8>)>,
}

fn post_until_cut(
    addr: std::net::SocketAddr,
    poster: usize,
    acked: mpsc::Sender<()>,
) -> BTreeMap<String, Post> {
    let mut posts = BTreeMap::new();
    let Ok(mut client) = HttpClient::connect(addr, Duration::from_secs(30)) else {
        return posts;
    };
    for i in 0..MAX_POSTS_EACH {
        let id = format!("p{poster}-{i}");
        let text = body(&id, poster * MAX_POSTS_EACH + i);
        let sent = json::parse(text.as_bytes()).expect("test body is JSON");
        let answer = client
            .request(
                "POST",
                "/bookings",
                &[("Content-Type", "application/json")],
                text.as_bytes(),
            )
            .ok()
            .map(|a| (a.status, a.body));
        let cut = answer.is_none();
        if matches!(answer, Some((201, _))) {
            // The main thread may have stopped listening after the kill.
            let _ = acked.send(());
        }
        posts.insert(id, Post { sent, answer });
        if cut {
            break;
        }
    }
    posts
}

/// Every field the client sent has the value it sent.
fn holds_all_it_sent(row: &Value, sent: &Value) -> bool {
    sent.as_object()
        .expect("sent an object")
        .iter()
        .all(|(field, value)| row.get(field) == Some(value))
}

#[test]
fn a_node_killed_mid_stream_has_committed_every_answered_booking_whole() {
    let dir = TempDir::new("commit-durability");
    let db = dir.path().join("bookings.db");
    let mut node = NodeProcess::start("doomed", &db, "127.0.0.1:0", &[]);
    let addr = node.addr;
    let (acked, acks) = mpsc::channel();
    let posts: BTreeMap<String, Post> = thread::scope(|scope| {
        let handles: Vec<_> = (0..POSTERS)
            .map(|poster| {
                let acked = acked.clone();
                scope.spawn(move || post_until_cut(addr, poster, acked))
            })
            .collect();
        drop(acked);
        // Kill once enough posts were answered: the others are mid-stream.
        for _ in 0..ACKED_BEFORE_KILL {
            acks.recv().expect("posters answered before the kill");
        }
        node.kill();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("poster"))
            .collect()
    });
    let answered: Vec<(&String, &Vec<u8>)> = posts
        .iter()
        .filter_map(|(id, post)| match &post.answer {
            Some((201, body)) => Some((id, body)),
            _ => None,
        })
        .collect();
    assert!(answered.len() >= ACKED_BEFORE_KILL);
    let refused: Vec<_> = posts
        .iter()
        .filter_map(|(id, p)| p.answer.as_ref().map(|(status, _)| (id, *status)))
        .filter(|(_, status)| *status != 201)
        .collect();
    assert!(refused.is_empty(), "answered but not 201: {refused:?}");

    let revived = NodeProcess::start("revived", &db, "127.0.0.1:0", &[]);
    let mut client = HttpClient::connect(revived.addr, Duration::from_secs(30)).expect("connect");
    // Every answered booking is there, exactly as it was answered.
    for (id, answer) in &answered {
        let read = client
            .request("GET", &format!("/bookings/{id}"), &[], b"")
            .expect("read back");
        assert_eq!(
            read.status, 200,
            "booking {id} was answered 201 but is missing"
        );
        assert_eq!(&read.body, *answer, "booking {id} differs from its answer");
    }
    // Every row is whole: one post's fields, all of them, and nothing unsent.
    let mut after = String::new();
    let mut rows = 0;
    loop {
        let page = client
            .request(
                "GET",
                &format!("/bookings?limit=1000&after={after}"),
                &[],
                b"",
            )
            .expect("list");
        assert_eq!(page.status, 200);
        let page = json::parse(&page.body).expect("page is JSON");
        for row in page.get("items").and_then(Value::as_array).expect("items") {
            let id = row.get("booking_id").and_then(Value::as_str).expect("id");
            let post = posts
                .get(id)
                .unwrap_or_else(|| panic!("row {id} was never sent"));
            assert!(
                holds_all_it_sent(row, &post.sent),
                "row {id} is not whole: {row:?}"
            );
            rows += 1;
        }
        match page.get("next_after").and_then(Value::as_str) {
            Some(next) => after = next.to_string(),
            None => break,
        }
    }
    let unanswered = posts.values().filter(|p| p.answer.is_none()).count();
    eprintln!(
        "{} answered, {unanswered} unanswered, {rows} rows after the restart",
        answered.len()
    );
    assert!(
        (answered.len()..=answered.len() + unanswered).contains(&rows),
        "{rows} rows for {} answered and {unanswered} unanswered posts",
        answered.len()
    );
}
