//! Protocol corners of RFC 9110/9112 through the relay, each sent as raw
//! bytes: what a client sends that a careless proxy would pass on wrongly,
//! and what a backend answers that a careless proxy would pass back wrongly.

mod common;

use common::{Act, Client, FakeBackend, TestRelay};
use std::net::SocketAddr;

fn relay_for(addr: SocketAddr) -> TestRelay {
    TestRelay::start(0, 0, "round-robin", |c| c.backends = vec![addr.to_string()])
}

/// A backend that answers every request with `answer`.
fn answering(answer: &'static [u8]) -> FakeBackend {
    FakeBackend::start(move |_, _| Act::Reply(answer.to_vec()))
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

#[test]
fn an_http_1_0_request_with_transfer_encoding_is_answered_then_closed() {
    let backend = answering(OK);
    let relay = relay_for(backend.addr);
    let mut client = relay.client();
    client.send(b"POST /x HTTP/1.0\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n");
    let reply = client.read_reply(false).expect("answer");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(
        client.is_closed_by_server(),
        "its framing is not trusted for more"
    );
    assert_eq!(backend.received()[0].body, b"{}");
}

#[test]
fn two_host_headers_are_a_400_and_never_forwarded() {
    let backend = answering(OK);
    let relay = relay_for(backend.addr);
    let mut client = relay.client();
    client.send(b"GET /x HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n");
    let reply = client.read_reply(false).expect("answer");
    assert_eq!(reply.status, 400);
    assert!(
        reply.error().contains("one Host header"),
        "{}",
        reply.text()
    );
    assert!(backend.received().is_empty());
}

#[test]
fn every_x_forwarded_for_line_reaches_the_node_in_order() {
    let backend = answering(OK);
    let relay = relay_for(backend.addr);
    let mut client = relay.client();
    client.send(b"GET /x HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\n\r\n");
    assert_eq!(client.read_reply(false).expect("answer").status, 200);
    let seen = backend.received();
    let chains: Vec<&str> = seen[0]
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
        .map(|h| h.value.as_str())
        .collect();
    assert_eq!(chains, ["10.0.0.1, 10.0.0.2, 127.0.0.1"]);
}

#[test]
fn headers_the_backend_names_in_connection_stay_with_the_backend() {
    let backend = answering(
        b"HTTP/1.1 200 OK\r\nConnection: X-Internal\r\nX-Internal: secret-hop\r\nX-Public: yes\r\nContent-Length: 2\r\n\r\nok",
    );
    let relay = relay_for(backend.addr);
    let reply = relay.client().get("/x");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-internal"), None);
    assert_eq!(reply.header("x-public"), Some("yes"));
}

#[test]
fn a_gzip_coded_chunked_answer_keeps_its_coding_and_its_bytes() {
    // Five bytes standing for gzip data: what matters is that the client is
    // told they are gzip-coded and gets exactly them, de-chunked.
    let backend = answering(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\n\x1f\x8b\x08\r\n2\r\n\x00\x01\r\n0\r\n\r\n",
    );
    let relay = relay_for(backend.addr);
    let mut client = relay.client();
    client.send(b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    let raw = client.read_to_end();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains("Transfer-Encoding: gzip\r\n"), "{text}");
    assert!(text.contains("Transfer-Encoding: chunked\r\n"), "{text}");
    assert!(!text.contains("Content-Length"), "{text}");
    let body_start = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
    assert_eq!(
        &raw[body_start..],
        b"3\r\n\x1f\x8b\x08\r\n2\r\n\x00\x01\r\n0\r\n\r\n"
    );
}

#[test]
fn an_absolute_form_target_reaches_the_node_in_origin_form() {
    let backend = answering(OK);
    let relay = relay_for(backend.addr);
    let mut client = relay.client();
    client.send(
        b"GET http://bookings.example:8080/bookings?limit=1 HTTP/1.1\r\nHost: ignored\r\n\r\n",
    );
    assert_eq!(client.read_reply(false).expect("answer").status, 200);
    let seen = backend.received();
    assert_eq!(seen[0].target, "/bookings?limit=1");
    assert_eq!(seen[0].header("host"), Some("bookings.example:8080"));
}

#[test]
fn a_backends_http_1_0_status_line_reaches_the_client_as_http_1_1() {
    let backend =
        answering(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok");
    let relay = relay_for(backend.addr);
    let mut client = relay.client();
    client.send(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut head = Vec::new();
    while !head.ends_with(b"ok") {
        let mut byte = [0u8; 1];
        assert_eq!(
            std::io::Read::read(&mut client.stream, &mut byte).expect("read"),
            1
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{}",
        String::from_utf8_lossy(&head)
    );
}

#[test]
fn an_underscored_framing_header_is_not_passed_on() {
    let backend = answering(OK);
    let relay = relay_for(backend.addr);
    let mut client = relay.client();
    client.send(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nTransfer_Encoding: chunked\r\nContent-Length: 2\r\n\r\n{}");
    assert_eq!(client.read_reply(false).expect("answer").status, 200);
    let seen = backend.received();
    assert!(seen[0].header("transfer_encoding").is_none());
    assert_eq!(seen[0].header("content-length"), Some("2"));
    assert_eq!(seen[0].body, b"{}");
}

#[test]
fn a_percent_encoded_booking_id_goes_to_the_same_node_as_its_plain_form() {
    let relay = TestRelay::start(3, 0, "consistent-hash", |_| {});
    let node_of = |client: &mut Client, path: &str| {
        client
            .get(path)
            .header("x-node")
            .expect("X-Node")
            .to_string()
    };
    let mut client = relay.client();
    for id in ["a-1", "trip-42", "x-y-z", "B-7", "q-9"] {
        let encoded = id.replace('-', "%2D");
        assert_eq!(
            node_of(&mut client, &format!("/bookings/{id}")),
            node_of(&mut client, &format!("/bookings/{encoded}")),
            "{id}"
        );
    }
}
