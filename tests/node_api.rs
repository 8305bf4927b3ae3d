//! SPEC §2 and §3 on a real node: every row of the booking API, the cache's
//! HIT/MISS and invalidation, idempotency keys, and concurrent writers.

mod common;

use bookrelay::booking::FIELDS;
use bookrelay::json::Value;
use bookrelay::store::Store;
use bookrelay::temp_dir::TempDir;
use common::{booking_body, booking_body_without_id, Client, TestNode};
use std::thread;

fn stat(client: &mut Client, name: &str) -> f64 {
    client
        .get("/stats")
        .json()
        .get(name)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no {name} in /stats"))
}

#[test]
fn health_and_stats_name_the_node() {
    let node = TestNode::start("healthy-heron", 0);
    let mut client = node.client();
    let health = client.get("/health");
    assert_eq!(health.status, 200);
    assert_eq!(health.text(), r#"{"node":"healthy-heron","status":"ok"}"#);
    assert_eq!(health.header("x-node"), Some("healthy-heron"));
    let stats = client.get("/stats").json();
    for field in [
        "requests",
        "cache_hits",
        "cache_misses",
        "cache_entries",
        "cache_evictions",
        "cache_invalidations",
        "writes",
        "commits",
        "largest_batch",
    ] {
        assert!(
            stats.get(field).and_then(Value::as_f64).is_some(),
            "{field}"
        );
    }
    assert_eq!(
        stats.get("node").and_then(Value::as_str),
        Some("healthy-heron")
    );
}

#[test]
fn listing_pages_by_id_with_next_after() {
    let node = TestNode::start("lister", 7);
    let mut client = node.client();
    let first = client.get("/bookings?limit=5").json();
    let items = first.get("items").and_then(Value::as_array).expect("items");
    assert_eq!(items.len(), 5);
    let ids: Vec<&str> = items
        .iter()
        .filter_map(|b| b.get("booking_id")?.as_str())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "byte order of booking_id");
    let next = first
        .get("next_after")
        .and_then(Value::as_str)
        .expect("full page has next_after");
    assert_eq!(next, ids[4]);
    let second = client
        .get(&format!("/bookings?limit=5&after={next}"))
        .json();
    let rest = second
        .get("items")
        .and_then(Value::as_array)
        .expect("items");
    assert_eq!(rest.len(), 2);
    assert_eq!(second.get("next_after"), Some(&Value::Null));
    // Default limit is 50: 7 rows fit, no next page.
    let all = client.get("/bookings").json();
    assert_eq!(
        all.get("items").and_then(Value::as_array).map(|a| a.len()),
        Some(7)
    );
    for bad in ["limit=0", "limit=5000", "limit=abc", "limit=-1", "limit="] {
        let reply = client.get(&format!("/bookings?{bad}"));
        assert_eq!(reply.status, 400, "{bad}");
        assert!(reply.error().contains("limit"), "{bad}");
    }
}

#[test]
fn bookings_carry_exactly_the_spec_fields() {
    let node = TestNode::start("fields", 1);
    let id = node.some_id();
    let booking = node.client().get(&format!("/bookings/{id}")).json();
    let names: Vec<&str> = booking
        .as_object()
        .expect("object")
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(names, FIELDS);
}

#[test]
fn create_read_update_delete() {
    let node = TestNode::start("crud", 0);
    let mut client = node.client();

    let created = client.post_json("/bookings", &booking_body("trip-1"));
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.header("location"), Some("/bookings/trip-1"));
    assert_eq!(created.str_field("customer_name"), "Ada Lovelace");
    assert_eq!(created.json().get("travel_agency"), Some(&Value::Null));

    assert_eq!(
        client
            .post_json("/bookings", &booking_body("trip-1"))
            .status,
        409
    );

    let read = client.get("/bookings/trip-1");
    assert_eq!(read.status, 200);
    assert_eq!(read.body, created.body);

    let patched = client.patch_json(
        "/bookings/trip-1",
        r#"{"payment_status":"Refunded","travel_agency":"Sunny Tours","return_date":null}"#,
    );
    assert_eq!(patched.status, 200, "{}", patched.text());
    let json = patched.json();
    assert_eq!(
        json.get("payment_status").and_then(Value::as_str),
        Some("Refunded")
    );
    assert_eq!(
        json.get("travel_agency").and_then(Value::as_str),
        Some("Sunny Tours")
    );
    assert_eq!(json.get("return_date"), Some(&Value::Null));
    assert_eq!(
        json.get("customer_name").and_then(Value::as_str),
        Some("Ada Lovelace")
    );

    assert_eq!(
        client
            .patch_json("/bookings/trip-1", r#"{"booking_id":"other"}"#)
            .status,
        400
    );
    assert_eq!(
        client
            .patch_json("/bookings/trip-1", r#"{"travel_date":"2025-13-01"}"#)
            .status,
        400
    );
    assert_eq!(
        client
            .patch_json("/bookings/nope", r#"{"phone":"1"}"#)
            .status,
        404
    );
    let unsupported = client.request(
        "PATCH",
        "/bookings/trip-1",
        &[("Content-Type", "text/plain")],
        b"{}",
    );
    assert_eq!(unsupported.status, 415);

    let deleted = client.request("DELETE", "/bookings/trip-1", &[], b"");
    assert_eq!(deleted.status, 204);
    assert!(deleted.body.is_empty());
    assert_eq!(client.get("/bookings/trip-1").status, 404);
    assert_eq!(
        client
            .request("DELETE", "/bookings/trip-1", &[], b"")
            .status,
        404
    );
}

#[test]
fn a_generated_id_is_a_uuid_v4() {
    let node = TestNode::start("uuid", 0);
    let mut client = node.client();
    let created = client.post_json("/bookings", &booking_body_without_id());
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.str_field("booking_id");
    assert_eq!(id.len(), 36);
    assert_eq!(id.as_bytes()[14], b'4');
    assert_eq!(
        created.header("location"),
        Some(format!("/bookings/{id}").as_str())
    );
    assert_eq!(client.get(&format!("/bookings/{id}")).status, 200);
}

#[test]
fn invalid_bookings_are_rejected_naming_the_field() {
    let node = TestNode::start("invalid", 0);
    let mut client = node.client();
    let good = booking_body("v1");
    let cases = [
        (
            good.replace(r#""email":"ada@example.com""#, r#""email":"nobody""#),
            "email",
        ),
        (
            good.replace(r#""total_price":812.5"#, r#""total_price":-1"#),
            "total_price",
        ),
        (
            good.replace(
                r#""travel_date":"2025-06-01""#,
                r#""travel_date":"2025-02-30""#,
            ),
            "travel_date",
        ),
        (
            good.replace(r#""payment_status":"Paid""#, r#""payment_status":"Maybe""#),
            "payment_status",
        ),
        (good.replace(r#""customer_id":"C-1","#, ""), "customer_id"),
        (
            good.replace(r#""phone""#, r#""colour":"red","phone""#),
            "colour",
        ),
        (
            good.replace(
                r#""return_date":"2025-06-08""#,
                r#""return_date":"2025-05-01""#,
            ),
            "return_date",
        ),
        (good.replace("v1", "bad id!"), "booking_id"),
        (
            good.replace("Ada Lovelace", &"é".repeat(201)),
            "customer_name",
        ),
    ];
    for (body, field) in cases {
        let reply = client.post_json("/bookings", &body);
        assert_eq!(reply.status, 400, "{field}: {}", reply.text());
        assert!(reply.error().contains(field), "{field}: {}", reply.error());
    }
    let fine = good.replace("Ada Lovelace", &"é".repeat(200));
    assert_eq!(
        client.post_json("/bookings", &fine).status,
        201,
        "200 characters of 2 bytes each"
    );
    assert_eq!(client.post_json("/bookings", "[1,2]").status, 400);
    assert_eq!(client.post_json("/bookings", "").status, 400);
}

#[test]
fn content_type_must_be_json_with_parameters_allowed() {
    let node = TestNode::start("ctype", 0);
    let mut client = node.client();
    let body = booking_body("ct-1");
    let with_charset = client.request(
        "POST",
        "/bookings",
        &[("Content-Type", "application/json; charset=utf-8")],
        body.as_bytes(),
    );
    assert_eq!(with_charset.status, 201);
    let missing = client.request("POST", "/bookings", &[], booking_body("ct-2").as_bytes());
    assert_eq!(missing.status, 415);
    assert!(missing.error().contains("Content-Type"));
    let form = client.request(
        "POST",
        "/bookings",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"a=b",
    );
    assert_eq!(form.status, 415);
}

#[test]
fn oversized_body_is_413() {
    let node = TestNode::start("big", 0);
    let mut client = node.client();
    let body = vec![b' '; 1024 * 1024 + 1];
    let reply = client.request(
        "POST",
        "/bookings",
        &[("Content-Type", "application/json")],
        &body,
    );
    assert_eq!(reply.status, 413);
}

#[test]
fn cache_misses_then_hits_and_a_patch_is_seen_at_once() {
    let node = TestNode::start("cachey", 3);
    let id = node.some_id();
    let mut client = node.client();
    let path = format!("/bookings/{id}");

    assert_eq!(client.get(&path).header("x-cache"), Some("MISS"));
    assert_eq!(client.get(&path).header("x-cache"), Some("HIT"));
    assert_eq!(client.get(&path).header("x-cache"), Some("HIT"));

    let patched = client.patch_json(&path, r#"{"customer_name":"Grace Hopper"}"#);
    assert_eq!(patched.status, 200);
    let after = client.get(&path);
    assert_eq!(after.str_field("customer_name"), "Grace Hopper");
    assert_eq!(after.header("x-cache"), Some("MISS"));
    assert_eq!(client.get(&path).header("x-cache"), Some("HIT"));

    assert_eq!(stat(&mut client, "cache_hits"), 3.0);
    assert_eq!(stat(&mut client, "cache_misses"), 2.0);
    assert_eq!(stat(&mut client, "cache_invalidations"), 1.0);
    assert_eq!(stat(&mut client, "cache_entries"), 1.0);
}

#[test]
fn a_write_through_one_node_is_seen_by_another_nodes_cache() {
    let a = TestNode::start("writer-node", 2);
    let dir = TempDir::new("unused");
    let b = TestNode::start_on("reader-node", 0, dir, a.db.clone());
    let id = a.some_id();
    let path = format!("/bookings/{id}");
    let mut reader = b.client();
    let mut writer = a.client();
    assert_eq!(reader.get(&path).header("x-cache"), Some("MISS"));
    for version in 0..100 {
        assert_eq!(reader.get(&path).header("x-cache"), Some("HIT"));
        let name = format!("Version {version}");
        let body = format!(r#"{{"customer_name":"{name}"}}"#);
        assert_eq!(writer.patch_json(&path, &body).status, 200);
        let seen = reader.get(&path);
        assert_eq!(
            seen.str_field("customer_name"),
            name,
            "stale read at version {version}"
        );
    }
    assert_eq!(writer.request("DELETE", &path, &[], b"").status, 204);
    assert_eq!(reader.get(&path).status, 404);
}

#[test]
fn idempotency_key_replays_the_first_answer() {
    let node = TestNode::start("idem", 0);
    let mut client = node.client();
    let body = booking_body_without_id();
    let headers = [
        ("Content-Type", "application/json"),
        ("Idempotency-Key", "order-42"),
    ];
    let first = client.request("POST", "/bookings", &headers, body.as_bytes());
    assert_eq!(first.status, 201);
    let again = client.request("POST", "/bookings", &headers, body.as_bytes());
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body, "same booking, same generated id");
    assert_eq!(again.header("location"), first.header("location"));

    // Even with an explicit id, a repeat is a replay, not a 409.
    let explicit = booking_body("idem-explicit");
    let keyed = [
        ("Content-Type", "application/json"),
        ("Idempotency-Key", "order-43"),
    ];
    assert_eq!(
        client
            .request("POST", "/bookings", &keyed, explicit.as_bytes())
            .status,
        201
    );
    assert_eq!(
        client
            .request("POST", "/bookings", &keyed, explicit.as_bytes())
            .status,
        201
    );

    let different = client.request(
        "POST",
        "/bookings",
        &headers,
        booking_body("other").as_bytes(),
    );
    assert_eq!(different.status, 422);
    assert!(different.error().contains("Idempotency-Key"));

    let listed = client.get("/bookings").json();
    assert_eq!(
        listed
            .get("items")
            .and_then(Value::as_array)
            .map(|a| a.len()),
        Some(2)
    );
}

#[test]
fn concurrent_idempotent_repeats_create_one_row() {
    let node = TestNode::start("idem-race", 0);
    let addr = node.addr;
    let body = booking_body_without_id();
    let replies: Vec<(u16, Vec<u8>)> = thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let body = body.clone();
                scope.spawn(move || {
                    let mut client = Client::connect(addr);
                    let headers = [
                        ("Content-Type", "application/json"),
                        ("Idempotency-Key", "same-key"),
                    ];
                    let reply = client.request("POST", "/bookings", &headers, body.as_bytes());
                    (reply.status, reply.body)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    assert!(replies
        .iter()
        .all(|(status, body)| *status == 201 && *body == replies[0].1));
    assert_eq!(Store::open(&node.db).expect("open").count(), Ok(1));
}

#[test]
fn many_concurrent_posts_all_land() {
    let node = TestNode::start("many-posts", 0);
    let statuses = common::post_concurrently(node.addr, 8, 100, "t");
    assert_eq!(statuses.len(), 800);
    assert!(
        statuses.iter().all(|&s| s == 201),
        "{:?}",
        statuses.iter().filter(|&&s| s != 201).collect::<Vec<_>>()
    );
    assert_eq!(Store::open(&node.db).expect("open").count(), Ok(800));
    // Group commit: every write was run, in at most as many transactions.
    let mut client = node.client();
    let (writes, commits) = (stat(&mut client, "writes"), stat(&mut client, "commits"));
    assert_eq!(writes, 800.0);
    assert!((1.0..=writes).contains(&commits), "{commits} commits");
    assert!(stat(&mut client, "largest_batch") >= 1.0);
}

#[test]
fn every_response_carries_x_node() {
    let node = TestNode::start("tagged", 1);
    let mut client = node.client();
    for path in ["/health", "/stats", "/bookings", "/bookings/none", "/nope"] {
        assert_eq!(client.get(path).header("x-node"), Some("tagged"), "{path}");
    }
    let reply = client.request("DELETE", "/health", &[], b"");
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET, HEAD"));
    assert_eq!(reply.header("x-node"), Some("tagged"));
}
