//! SPEC §4 on a real node socket: framing, keep-alive, close, pipelining,
//! half-close, bare LF, limits, malformed input, `Expect: 100-continue`.

mod common;

use common::{booking_body, Client, TestNode};
use std::time::{Duration, Instant};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[test]
fn connection_close_is_answered_and_closed_without_a_timer() {
    let node = TestNode::start("close-timer", 5);
    let request = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

    // Keep-alive round trips on one connection, for comparison in the same run.
    let mut keep_alive = Vec::new();
    let mut client = node.client();
    for _ in 0..20 {
        let started = Instant::now();
        client.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(client.read_reply(false).expect("reply").status, 200);
        keep_alive.push(started.elapsed());
    }

    // Close round trips: connect, ask, read until the server closes.
    let mut closing = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let mut client = node.client();
        client.send(request);
        let answer = client.read_to_end();
        closing.push(started.elapsed());
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("Connection: close\r\n"));
    }
    let (keep_alive, closing) = (median(keep_alive), median(closing));
    // The seed's relay waited 200 ms per request; anything timer-based would
    // show up here as ~100 ms or more.
    assert!(
        closing < keep_alive + Duration::from_millis(50),
        "close round trip {closing:?} vs keep-alive {keep_alive:?}"
    );
}

#[test]
fn a_thousand_sequential_requests_share_one_connection() {
    let node = TestNode::start("thousand", 3);
    let mut client = node.client();
    for i in 0..1000 {
        let path = if i % 2 == 0 {
            "/health"
        } else {
            "/bookings?limit=1"
        };
        let reply = client.get(path);
        assert_eq!(reply.status, 200, "request {i}");
    }
    // Still the same socket, still open.
    assert_eq!(client.get("/health").status, 200);
}

#[test]
fn pipelined_requests_come_back_in_order() {
    let node = TestNode::start("pipeline", 0);
    let mut setup = node.client();
    for i in 0..10 {
        assert_eq!(
            setup
                .post_json("/bookings", &booking_body(&format!("pipe-{i}")))
                .status,
            201
        );
    }
    let mut batch = Vec::new();
    for i in 0..10 {
        batch.extend_from_slice(
            format!("GET /bookings/pipe-{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        );
    }
    let mut client = node.client();
    client.send(&batch);
    for i in 0..10 {
        let reply = client.read_reply(false).expect("reply");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.str_field("booking_id"), format!("pipe-{i}"));
    }
}

#[test]
fn half_closed_client_gets_full_answers_then_close() {
    let node = TestNode::start("half-close", 3);
    let mut client = node.client();
    client.send(
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /bookings?limit=2 HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    client.finish_sending();
    assert_eq!(client.read_reply(false).expect("first").status, 200);
    let second = client.read_reply(false).expect("second");
    assert_eq!(second.status, 200);
    assert_eq!(
        second
            .json()
            .get("items")
            .and_then(|v| v.as_array())
            .map(|a| a.len()),
        Some(2)
    );
    assert!(client.is_closed_by_server());
}

#[test]
fn bare_lf_requests_work_like_crlf() {
    let node = TestNode::start("bare-lf", 3);
    let id = node.some_id();
    let mut client = node.client();
    client.send(format!("GET /bookings/{id} HTTP/1.1\nHost: x\n\n").as_bytes());
    let reply = client.read_reply(false).expect("reply");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.str_field("booking_id"), id);
    // A POST typed with bare LF, body framed by Content-Length.
    let body = booking_body("typed-by-hand");
    client.send(
        format!(
            "POST /bookings HTTP/1.1\nContent-Type: application/json\nContent-Length: {}\n\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(client.read_reply(false).expect("reply").status, 201);
}

#[test]
fn http10_closes_unless_asked_to_keep_alive() {
    let node = TestNode::start("http10", 0);
    let mut client = node.client();
    client.send(b"GET /health HTTP/1.0\r\n\r\n");
    let answer = String::from_utf8(client.read_to_end()).expect("utf8");
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");

    let mut client = node.client();
    for _ in 0..3 {
        client.send(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let reply = client.read_reply(false).expect("reply");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("connection"), Some("keep-alive"));
    }
}

#[test]
fn chunked_request_bodies_are_decoded() {
    let node = TestNode::start("chunked", 0);
    let body = booking_body("chunky");
    let (a, b) = body.split_at(40);
    let raw = format!(
        "POST /bookings HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    let mut client = node.client();
    client.send(raw.as_bytes());
    let reply = client.read_reply(false).expect("reply");
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(client.get("/bookings/chunky").status, 200);
}

/// Each malformed request gets a 4xx JSON error and a close; the node keeps
/// serving everyone else.
#[test]
fn malformed_requests_get_json_errors_and_a_close() {
    let node = TestNode::start("malformed", 2);
    let long_header = format!(
        "GET / HTTP/1.1\r\nX-Long: {}\r\n\r\n",
        "a".repeat(17 * 1024)
    );
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"NONSENSE\r\n\r\n".to_vec(), 400),
        (b"GET /\r\n\r\n".to_vec(), 400),
        (b"GET / HTTP/2.0\r\n\r\n".to_vec(), 505),
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n".to_vec(), 400),
        (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n".to_vec(), 400),
        (b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n".to_vec(), 400),
        (long_header.into_bytes(), 431),
        (
            b"POST /bookings HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            b"POST /bookings HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"
                .to_vec(),
            400,
        ),
        (
            b"POST /bookings HTTP/1.1\r\nContent-Length: five\r\n\r\n".to_vec(),
            400,
        ),
        (
            b"POST /bookings HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
            400,
        ),
        (
            b"POST /bookings HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n".to_vec(),
            413,
        ),
        (
            b"POST /bookings HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
            400,
        ),
        (
            b"POST /bookings HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcde\r\n".to_vec(),
            400,
        ),
    ];
    for (raw, status) in cases {
        let mut client = node.client();
        client.send(&raw);
        let reply = client.read_reply(false).expect("an answer");
        let shown = String::from_utf8_lossy(&raw[..raw.len().min(60)]).into_owned();
        assert_eq!(reply.status, status, "{shown}");
        assert!(!reply.error().is_empty(), "{shown}");
        assert_eq!(reply.header("connection"), Some("close"), "{shown}");
        assert_eq!(reply.header("x-node"), Some("malformed"), "{shown}");
        assert!(client.is_closed_by_server(), "{shown}");
        // Everyone else is still served.
        assert_eq!(node.client().get("/health").status, 200);
    }
}

#[test]
fn chunked_body_over_the_limit_is_413() {
    let node = TestNode::start("chunk-limit", 0);
    let mut client = node.client();
    client.send(b"POST /bookings HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
    let chunk = vec![b'a'; 256 * 1024];
    for _ in 0..5 {
        let mut piece = format!("{:x}\r\n", chunk.len()).into_bytes();
        piece.extend_from_slice(&chunk);
        piece.extend_from_slice(b"\r\n");
        if client.stream_write(&piece).is_err() {
            break;
        }
    }
    let reply = client.read_reply(false).expect("answer");
    assert_eq!(reply.status, 413);
}

#[test]
fn content_errors_keep_the_connection_usable() {
    let node = TestNode::start("content-errors", 1);
    let mut client = node.client();
    assert_eq!(client.get("/nowhere").status, 404);
    assert_eq!(client.get("/bookings/no-such-id").status, 404);
    assert_eq!(client.request("PUT", "/bookings", &[], b"").status, 405);
    assert_eq!(client.post_json("/bookings", "{not json").status, 400);
    assert_eq!(client.request("POST", "/bookings", &[], b"{}").status, 415);
    assert_eq!(client.get("/bookings?limit=0").status, 400);
    assert_eq!(client.get("/health").status, 200, "connection still usable");
}

#[test]
fn expect_continue_gets_100_then_the_answer() {
    let node = TestNode::start("expect", 0);
    let body = booking_body("expected");
    let mut client = node.client();
    client.send(
        format!(
            "POST /bookings HTTP/1.1\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let interim = client.read_reply(false).expect("100");
    assert_eq!(interim.status, 100);
    client.send(body.as_bytes());
    assert_eq!(client.read_reply(false).expect("final").status, 201);
}

#[test]
fn expect_continue_is_refused_at_once_when_the_head_decides() {
    let node = TestNode::start("expect-refused", 0);
    let cases: [(&str, u16); 3] = [
        ("POST /nowhere HTTP/1.1\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n", 404),
        ("POST /bookings HTTP/1.1\r\nContent-Type: text/plain\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n", 415),
        ("POST /bookings HTTP/1.1\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 2000000\r\n\r\n", 413),
    ];
    for (head, status) in cases {
        let mut client = node.client();
        client.send(head.as_bytes());
        // No body sent: the final answer must come without it.
        let reply = client.read_reply(false).expect("final answer");
        assert_eq!(reply.status, status, "{head}");
    }
}

#[test]
fn head_requests_get_headers_without_a_body() {
    let node = TestNode::start("head", 2);
    let id = node.some_id();
    common::assert_head_matches_get(&mut node.client(), &format!("/bookings/{id}"));
}

#[test]
fn a_stalled_head_is_answered_408_after_the_header_timeout() {
    let node = TestNode::start("slow-head", 0);
    let mut client = node.client();
    let started = Instant::now();
    client.send(b"GET /health HTTP/1.1\r\nHost:");
    let reply = client.read_reply(false).expect("408");
    assert_eq!(reply.status, 408);
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    assert!(client.is_closed_by_server());
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let node = TestNode::start("idle", 0);
    let mut client = node.client();
    assert_eq!(client.get("/health").status, 200);
    let started = Instant::now();
    assert!(client.is_closed_by_server());
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(14), "closed after {waited:?}");
}

trait WriteRaw {
    fn stream_write(&mut self, bytes: &[u8]) -> std::io::Result<()>;
}

impl WriteRaw for Client {
    fn stream_write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        self.stream.write_all(bytes)
    }
}
