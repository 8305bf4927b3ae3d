//! The relay as a streaming reverse proxy, over real sockets: bodies of any
//! size and framing pass through piece by piece both ways, clients that
//! leave free their node connection, upgrades become tunnels, `CONNECT` is
//! refused, a backend out of step or crashing is contained, backends that
//! are not bookrelay nodes are checked as configured, and the body limit,
//! the read timeout and early answers hold.
//!
//! Nothing here waits on a clock to decide something happened: each test
//! waits on a read, the backend's gate, or a polled counter with a deadline.

mod common;

use bookrelay::cli::RelayConfig;
use bookrelay::json::Value;
use common::backends::{
    check_pattern, pattern, PlainBackend, StrayBytesBackend, StreamingBackend,
    WebSocketEchoBackend, WsClient, FORGED_RESPONSE,
};
use common::{booking_body, node_field, ok_reply, Act, Client, FakeBackend, TestRelay};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// How long a test waits for something that should take milliseconds.
const SOON: Duration = Duration::from_secs(5);

/// Polls `condition` every 20 ms until it holds; panics after `limit`.
fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// A relay over the one backend at `addr` and no node threads.
fn relay_for(addr: SocketAddr, adjust: impl FnOnce(&mut RelayConfig)) -> TestRelay {
    TestRelay::start(0, 0, "round-robin", |c| {
        c.backends = vec![addr.to_string()];
        adjust(c);
    })
}

/// A numeric field of the node named `node` in the relay's status.
fn node_number(relay: &TestRelay, node: &str, field: &str) -> f64 {
    let status = relay.status();
    node_field(&status, node, field)
        .as_f64()
        .unwrap_or_else(|| panic!("no {field} for {node} in {}", status.to_json()))
}

fn in_flight(relay: &TestRelay, node: &str) -> f64 {
    node_number(relay, node, "in_flight")
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned()
}

// ---------------------------------------------------------------------------
// A client that reads answers as they arrive.

/// A client connection that reads an answer a piece at a time (its head, a
/// body by length, chunk by chunk, or until close), so that a large or
/// endless body is checked as it arrives and never held whole, and a test
/// can see what has arrived so far.
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// A response head.
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn is_chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    }

    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

impl Wire {
    /// Connects; every read gives up (and fails the test) after `timeout`.
    fn connect(addr: SocketAddr, timeout: Duration) -> Wire {
        let stream = TcpStream::connect(addr).expect("connect to the relay");
        stream.set_read_timeout(Some(timeout)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Wire {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Sends `GET path` as HTTP/1.`minor`.
    fn get(&mut self, path: &str, minor: u8) {
        self.send(format!("GET {path} HTTP/1.{minor}\r\nHost: test\r\n\r\n").as_bytes());
    }

    /// Reads more; 0 at end of file or reset. Fails the test on a timeout.
    fn fill(&mut self) -> usize {
        let mut piece = vec![0u8; 64 * KIB];
        match self.stream.read(&mut piece) {
            Ok(n) => {
                self.buf.extend_from_slice(&piece[..n]);
                n
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => 0,
            Err(e) => panic!(
                "no more bytes from the relay ({e}); buffered: {:?}",
                lossy(&self.buf)
            ),
        }
    }

    fn head(&mut self) -> Head {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(
                self.fill() > 0,
                "closed before a complete head: {:?}",
                lossy(&self.buf)
            );
        };
        let text = String::from_utf8(self.buf[..end].to_vec()).expect("ASCII head");
        self.buf.drain(..end);
        let mut lines = text.split("\r\n");
        let status_line = lines.next().expect("status line");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(':').expect("header colon");
                (n.to_string(), v.trim().to_string())
            })
            .collect();
        Head { status, headers }
    }

    /// Exactly `n` body bytes, handed to `each` as they arrive.
    fn exact(&mut self, n: u64, mut each: impl FnMut(&[u8])) {
        let mut left = n;
        while left > 0 {
            if self.buf.is_empty() {
                assert!(self.fill() > 0, "closed with {left} of {n} bytes to come");
            }
            let take = (self.buf.len() as u64).min(left) as usize;
            each(&self.buf[..take]);
            self.buf.drain(..take);
            left -= take as u64;
        }
    }

    /// `n` body bytes checked against the pattern as they arrive.
    fn exact_pattern(&mut self, n: u64) {
        let mut offset = 0u64;
        self.exact(n, |piece| {
            assert!(
                check_pattern(offset, piece),
                "bytes {offset}..{} are not the pattern",
                offset + piece.len() as u64
            );
            offset += piece.len() as u64;
        });
    }

    /// One line without its CRLF.
    fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8(self.buf[..i].to_vec()).expect("ASCII line");
                self.buf.drain(..i + 2);
                return line;
            }
            assert!(
                self.fill() > 0,
                "closed in the middle of a chunked body: {:?}",
                lossy(&self.buf)
            );
        }
    }

    /// The next chunk's data; `None` after the last chunk and its trailers.
    fn chunk(&mut self) -> Option<Vec<u8>> {
        let line = self.line();
        let digits = line.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(digits, 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
        if size == 0 {
            while !self.line().is_empty() {}
            return None;
        }
        let mut data = Vec::with_capacity(size as usize);
        self.exact(size, |piece| data.extend_from_slice(piece));
        assert_eq!(self.line(), "", "chunk data ends with CRLF");
        Some(data)
    }

    /// `len` bytes of a chunked body, across however many chunks.
    fn chunked_bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < len {
            match self.chunk() {
                Some(data) => out.extend_from_slice(&data),
                None => panic!("the body ended after {:?}", lossy(&out)),
            }
        }
        out
    }

    /// A whole chunked body checked against the pattern; its length.
    fn chunked_pattern(&mut self) -> u64 {
        let mut total = 0u64;
        while let Some(data) = self.chunk() {
            assert!(
                check_pattern(total, &data),
                "chunk at byte {total} is not the pattern"
            );
            total += data.len() as u64;
        }
        total
    }

    /// Everything until the server closes, handed to `each`; its length.
    fn until_close(&mut self, mut each: impl FnMut(&[u8])) -> u64 {
        let mut total = 0u64;
        loop {
            if !self.buf.is_empty() {
                each(&self.buf);
                total += self.buf.len() as u64;
                self.buf.clear();
            }
            if self.fill() == 0 {
                return total;
            }
        }
    }

    /// Whether the server closed with nothing more to say.
    fn is_closed(&mut self) -> bool {
        self.buf.is_empty() && self.fill() == 0
    }
}

// ---------------------------------------------------------------------------
// 1-3. Answer bodies of every framing.

#[test]
fn a_48_mib_download_with_content_length_arrives_byte_exact_on_a_reusable_connection() {
    let backend = StreamingBackend::start("streamer");
    let relay = relay_for(backend.addr, |_| {});
    let mut wire = Wire::connect(relay.addr, Duration::from_secs(20));
    let n = 48 * MIB as u64;
    wire.get(&format!("/bytes/{n}"), 1);
    let head = wire.head();
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(n.to_string().as_str()),
        "the length passes through as it is"
    );
    assert!(!head.is_chunked() && !head.closes());
    wire.exact_pattern(n);

    // The same client connection carries the next request, and the relay's
    // node connection went back to its pool and carries it too.
    wire.get("/bytes/1000", 1);
    let head = wire.head();
    assert_eq!(
        (head.status, head.header("content-length")),
        (200, Some("1000"))
    );
    wire.exact_pattern(1000);
    assert_eq!(node_number(&relay, "streamer", "requests"), 2.0);
    assert_eq!(node_number(&relay, "streamer", "connections_opened"), 1.0);
}

#[test]
fn a_gated_body_reaches_the_client_piece_by_piece_as_the_backend_sends_it() {
    let backend = StreamingBackend::start("streamer");
    let relay = relay_for(backend.addr, |_| {});
    let mut wire = Wire::connect(relay.addr, SOON);
    wire.get("/gated", 1);
    let head = wire.head();
    assert_eq!(head.status, 200);
    assert!(head.is_chunked(), "an answer of unknown length is chunked");
    assert_eq!(head.header("content-length"), None);
    // The gate has not been opened yet: the relay passed on what the backend
    // had sent instead of waiting for the whole body.
    assert_eq!(wire.chunked_bytes(8), b"piece 0\n");
    for k in 1..=5 {
        assert!(
            wire.buf.is_empty(),
            "nothing arrives beyond piece {}: {:?}",
            k - 1,
            lossy(&wire.buf)
        );
        backend.open_gate();
        let expected = format!("piece {k}\n");
        assert_eq!(
            String::from_utf8(wire.chunked_bytes(expected.len())).expect("text"),
            expected,
            "each opening lets exactly the next piece through"
        );
    }
    backend.finish_gated();
    assert_eq!(wire.chunk(), None, "the chunked body ends");
    wire.get("/bytes/10", 1);
    assert_eq!(wire.head().status, 200, "the connection is still in step");
    wire.exact_pattern(10);
}

#[test]
fn chunked_and_close_delimited_bodies_reach_an_http_1_1_client_chunked_and_exact() {
    let backend = StreamingBackend::start("streamer");
    let relay = relay_for(backend.addr, |_| {});
    let mut wire = Wire::connect(relay.addr, Duration::from_secs(20));
    let n = 3 * MIB as u64 + 12_345;
    for path in [format!("/chunked/{n}"), format!("/close/{n}")] {
        wire.get(&path, 1);
        let head = wire.head();
        assert_eq!(head.status, 200, "{path}");
        assert!(
            head.is_chunked(),
            "{path} reaches an HTTP/1.1 client chunked"
        );
        assert_eq!(head.header("content-length"), None, "{path}");
        assert!(!head.closes(), "{path}: the client connection stays open");
        assert_eq!(wire.chunked_pattern(), n, "{path}: every byte, no more");
    }
    // The close-delimited answer was re-chunked: the connection lives on.
    wire.get("/bytes/100", 1);
    let head = wire.head();
    assert_eq!(head.status, 200);
    wire.exact_pattern(100);
    assert_eq!(node_number(&relay, "streamer", "requests"), 3.0);
}

#[test]
fn bodies_of_unknown_length_reach_an_http_1_0_client_delimited_by_close() {
    let backend = StreamingBackend::start("streamer");
    let relay = relay_for(backend.addr, |_| {});
    let n = 2 * MIB as u64 + 777;
    for path in [format!("/close/{n}"), format!("/chunked/{n}")] {
        let mut wire = Wire::connect(relay.addr, Duration::from_secs(20));
        wire.get(&path, 0);
        let head = wire.head();
        assert_eq!(head.status, 200, "{path}");
        assert_eq!(head.header("content-length"), None, "{path}");
        assert!(
            !head.is_chunked(),
            "{path}: an HTTP/1.0 client cannot read chunks"
        );
        let mut offset = 0u64;
        let total = wire.until_close(|piece| {
            assert!(check_pattern(offset, piece), "{path}: byte {offset}..");
            offset += piece.len() as u64;
        });
        assert_eq!(total, n, "{path}: the close ends the body after every byte");
    }
}

// ---------------------------------------------------------------------------
// 4. Clients that leave.

#[test]
fn clients_that_leave_an_event_stream_free_its_backend_connection() {
    const CLIENTS: u64 = 4;
    let backend = StreamingBackend::start("streamer");
    let relay = relay_for(backend.addr, |_| {});
    // 50 events 100 ms apart: each stream would run for 5 s on its own.
    let mut wires: Vec<Wire> = (0..CLIENTS)
        .map(|_| {
            let mut wire = Wire::connect(relay.addr, SOON);
            wire.get("/events/50/100", 1);
            wire
        })
        .collect();
    for wire in &mut wires {
        let head = wire.head();
        assert_eq!(head.status, 200);
        assert_eq!(head.header("content-type"), Some("text/event-stream"));
        assert!(head.is_chunked());
        let first = b"data: event 0\n\n";
        assert_eq!(wire.chunked_bytes(first.len()), first);
    }
    assert_eq!(in_flight(&relay, "streamer"), CLIENTS as f64);
    assert_eq!(backend.closed_early(), 0);
    drop(wires);
    // Well before the streams would end by themselves, the relay has
    // noticed each client is gone and closed its node connection, so the
    // backend's next write failed.
    wait_until(
        "the relay to close its node connections",
        Duration::from_secs(3),
        || backend.closed_early() == CLIENTS && backend.open_connections() == 0,
    );
    assert_eq!(in_flight(&relay, "streamer"), 0.0);
}

// ---------------------------------------------------------------------------
// 5. WebSocket.

#[test]
fn a_websocket_is_tunnelled_both_ways_and_counted_in_flight_while_open() {
    let backend = WebSocketEchoBackend::start("echo");
    let relay = relay_for(backend.addr, |_| {});
    // Panics unless the answer is 101 with the right Sec-WebSocket-Accept.
    let mut ws = WsClient::connect(relay.addr, "/ws");
    // The backend counts the upgrade just after sending its 101.
    wait_until("the backend to count the upgrade", SOON, || {
        backend.upgrades() == 1
    });
    assert_eq!(
        in_flight(&relay, "echo"),
        1.0,
        "an open tunnel is in flight"
    );

    let text = |len: usize, salt: usize| -> Vec<u8> {
        (0..len).map(|j| b'a' + ((j + salt) % 26) as u8).collect()
    };
    // Each length class of the frame header: 7-bit, 16-bit, 64-bit.
    let sizes = [
        1,
        125,
        126,
        65_535,
        65_536,
        70 * KIB,
        0,
        2,
        127,
        4096,
        16 * KIB + 1,
    ];
    let mut frames = 0;
    for (i, &size) in sizes.iter().enumerate() {
        for opcode in [1u8, 2] {
            let payload = if opcode == 1 {
                text(size, i)
            } else {
                pattern(i as u64 * 1000, size)
            };
            ws.send(opcode, &payload);
            let (got, echoed) = ws.recv();
            assert_eq!(got, opcode, "frame of {size} bytes: opcode");
            assert!(
                echoed == payload,
                "frame of {size} bytes (opcode {opcode}) came back changed"
            );
            frames += 1;
        }
    }
    // Several frames in flight at once, both directions busy.
    let burst: Vec<Vec<u8>> = (0..10)
        .map(|i| pattern(i * 77, 100 + 400 * i as usize))
        .collect();
    for payload in &burst {
        ws.send(2, payload);
    }
    for payload in &burst {
        assert_eq!(ws.recv(), (2, payload.clone()));
        frames += 1;
    }
    ws.send(9, b"are you there");
    assert_eq!(ws.recv(), (10, b"are you there".to_vec()), "ping, pong");
    assert_eq!(backend.messages(), frames);
    assert_eq!(in_flight(&relay, "echo"), 1.0);

    ws.close();
    wait_until("the tunnel to end on both sides", SOON, || {
        backend.open_connections() == 0 && in_flight(&relay, "echo") == 0.0
    });
}

// ---------------------------------------------------------------------------
// 6. CONNECT.

#[test]
fn connect_is_answered_501_by_the_relay_and_never_forwarded() {
    let backend = FakeBackend::start(|_, _| Act::Reply(ok_reply("{}")));
    let relay = relay_for(backend.addr, |_| {});
    let mut client = relay.client();
    client.send(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
    let reply = client.read_reply(false).expect("an answer to CONNECT");
    assert_eq!(reply.status, 501, "{}", reply.text());
    assert!(reply
        .header("content-type")
        .is_some_and(|t| t.contains("application/json")));
    assert!(reply.error().contains("CONNECT"), "{}", reply.error());
    assert!(
        backend.received().is_empty(),
        "the backend never saw the CONNECT"
    );
    // The backend does record what is forwarded.
    assert_eq!(relay.client().get("/x").status, 200);
    let received = backend.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        (received[0].method.as_str(), received[0].path()),
        ("GET", "/x")
    );
}

// ---------------------------------------------------------------------------
// 7. A backend out of step.

#[test]
fn stray_bytes_after_a_head_answer_never_reach_another_request() {
    let backend = StrayBytesBackend::start("stray");
    let relay = relay_for(backend.addr, |_| {});
    let forged = String::from_utf8_lossy(FORGED_RESPONSE).into_owned();

    let mut client = relay.client();
    let head = client.request("HEAD", "/x", &[], b"");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), Some("2"));
    for i in 0..20 {
        let path = format!("/sequential/{i}");
        let reply = client.get(&path);
        assert_eq!(
            (reply.status, reply.text()),
            (200, path.clone()),
            "GET {path} after a HEAD whose node wrote {forged:?}"
        );
    }

    let failures = Mutex::new(Vec::new());
    thread::scope(|scope| {
        for t in 0..50 {
            let failures = &failures;
            let addr = relay.addr;
            scope.spawn(move || {
                let mut client = Client::connect(addr);
                for i in 0..20 {
                    if i % 4 == 1 {
                        let path = format!("/t{t}/head{i}");
                        let head = client.request("HEAD", &path, &[], b"");
                        let length = path.len().to_string();
                        if head.status != 200
                            || head.header("content-length") != Some(length.as_str())
                        {
                            failures.lock().expect("lock").push(format!(
                                "HEAD {path}: {} length {:?}",
                                head.status,
                                head.header("content-length")
                            ));
                        }
                    }
                    let path = format!("/t{t}/get{i}");
                    let reply = client.get(&path);
                    if reply.status != 200 || reply.text() != path {
                        failures.lock().expect("lock").push(format!(
                            "GET {path}: {} {:?}",
                            reply.status,
                            reply.text()
                        ));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().expect("lock");
    assert!(
        failures.is_empty(),
        "{} answers mixed up, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let reply = relay.client().get("/final");
    assert_eq!((reply.status, reply.text()), (200, "/final".to_string()));
}

// ---------------------------------------------------------------------------
// 8. Crashes and closes.

#[test]
fn a_post_without_idempotency_key_is_sent_once_and_502_when_its_node_crashes_after_reading_it() {
    let a = FakeBackend::start(|_, _| Act::Close);
    let b = FakeBackend::start(|_, _| Act::Close);
    let backends = vec![a.addr.to_string(), b.addr.to_string()];
    let relay = TestRelay::start(0, 0, "round-robin", |c| c.backends = backends);
    let body = booking_body("crash-after-read");
    let reply = relay.client().post_json("/bookings", &body);
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert!(
        reply.error().contains("may or may not have taken effect"),
        "{}",
        reply.error()
    );
    let seen: Vec<_> = a.received().into_iter().chain(b.received()).collect();
    assert_eq!(seen.len(), 1, "never sent to a second node");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path()),
        ("POST", "/bookings")
    );
    assert_eq!(seen[0].body, body.as_bytes(), "the node read all of it");
}

#[test]
fn a_post_with_an_idempotency_key_goes_to_the_other_node_when_one_crashes_after_reading_it() {
    let crash = FakeBackend::start(|_, _| Act::Close);
    let alive = FakeBackend::start(|_, _| Act::Reply(ok_reply(r#"{"booked":true}"#)));
    let backends = vec![crash.addr.to_string(), alive.addr.to_string()];
    let relay = TestRelay::start(0, 0, "round-robin", |c| c.backends = backends);
    let mut client = relay.client();
    for i in 0..4 {
        let key = format!("key-{i}");
        let reply = client.request(
            "POST",
            "/bookings",
            &[
                ("Content-Type", "application/json"),
                ("Idempotency-Key", &key),
            ],
            booking_body(&format!("keyed-{i}")).as_bytes(),
        );
        assert_eq!(reply.status, 200, "{key}: {}", reply.text());
        assert_eq!(reply.text(), r#"{"booked":true}"#);
    }
    let crashed = crash.received();
    assert!(
        !crashed.is_empty(),
        "round robin sent some keyed POST to the crashing node first"
    );
    let answered = alive.received();
    assert_eq!(
        answered.len(),
        4,
        "every POST was answered by the other node"
    );
    for (i, request) in answered.iter().enumerate() {
        assert_eq!(
            request.header("idempotency-key"),
            Some(format!("key-{i}").as_str())
        );
    }
}

#[test]
fn a_pooled_connection_the_node_closed_is_replaced_before_the_write_whatever_the_method() {
    // Answers, then closes: each connection the relay pools is dead.
    let backend = FakeBackend::start(|_, _| Act::ReplyAndClose(ok_reply("{}")));
    let relay = relay_for(backend.addr, |_| {});
    let mut client = relay.client();
    for i in 0..20 {
        // The node has closed every connection for real, not merely begun to.
        backend.wait_all_closed(SOON);
        let reply = client.request(
            "POST",
            "/bookings",
            &[("Content-Type", "application/json")],
            b"{}",
        );
        assert_eq!(reply.status, 200, "POST {i}: {}", reply.text());
    }
    assert_eq!(
        backend.received().len(),
        20,
        "each POST reached the node once"
    );
    // Found closed before the write, not failed after it.
    assert_eq!(node_number(&relay, "fake", "failures"), 0.0);
    assert_eq!(node_number(&relay, "fake", "connections_opened"), 20.0);
}

// ---------------------------------------------------------------------------
// 9. A backend that is not a bookrelay node.

/// `n` `GET /` through the relay on one keep-alive client connection.
fn keep_alive_listings(relay: &TestRelay, n: usize) {
    let mut client = relay.client();
    for i in 0..n {
        let reply = client.get("/");
        assert_eq!(reply.status, 200, "GET / number {i}: {}", reply.text());
        assert!(reply.text().contains("Directory listing for /"));
        assert_ne!(
            reply.header("connection"),
            Some("close"),
            "the client connection outlives the backend's"
        );
    }
}

#[test]
fn a_python_like_backend_checked_on_slash_gets_traffic_and_no_health_requests() {
    let backend = PlainBackend::start("plain");
    let relay = relay_for(backend.addr, |c| c.health_path = Some("/".into()));
    let name = backend.addr.to_string();
    assert_eq!(
        node_field(&relay.status(), &name, "healthy"),
        Value::Bool(true)
    );
    keep_alive_listings(&relay, 5);
    // Checks every 100 ms: let a few more run, all on `/`.
    wait_until("three more checks", SOON, || backend.requests() >= 5 + 4);
    assert_eq!(backend.health_requests(), 0, "nothing asked for /health");
    assert_eq!(
        node_field(&relay.status(), &name, "healthy"),
        Value::Bool(true)
    );
    assert_eq!(node_number(&relay, &name, "requests"), 5.0);
}

#[test]
fn a_python_like_backend_with_passive_health_only_gets_traffic_and_no_checks() {
    let backend = PlainBackend::start("plain");
    let relay = relay_for(backend.addr, |c| c.health_path = None);
    let name = backend.addr.to_string();
    assert_eq!(
        node_field(&relay.status(), &name, "healthy"),
        Value::Bool(true)
    );
    keep_alive_listings(&relay, 5);
    assert_eq!(
        backend.requests(),
        5,
        "the clients' requests and nothing else"
    );
    assert_eq!(backend.health_requests(), 0);
}

#[test]
fn a_python_like_backend_checked_on_health_is_marked_down_and_failed_open_to() {
    let backend = PlainBackend::start("plain");
    let relay = relay_for(backend.addr, |_| {});
    let name = backend.addr.to_string();
    assert!(backend.health_requests() >= 1, "it was asked for /health");
    assert_eq!(
        node_field(&relay.status(), &name, "healthy"),
        Value::Bool(false)
    );
    // Down by its checks (a 404 to /health) but answering: with fewer than
    // half of the nodes fit, the relay fails open and sends it the request.
    let before = backend.requests();
    let reply = relay.client().get("/");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(backend.requests() > before, "the request reached it");
    assert_eq!(
        node_field(&relay.status(), &name, "healthy"),
        Value::Bool(false),
        "still down by its checks"
    );
}

// ---------------------------------------------------------------------------
// 10. Request bodies.

fn upload_relay(backend: &StreamingBackend) -> TestRelay {
    relay_for(backend.addr, |c| c.max_body_bytes = 8 * MIB as u64)
}

#[test]
fn a_5_mib_upload_with_content_length_streams_through_intact() {
    let backend = StreamingBackend::start("streamer");
    let relay = upload_relay(&backend);
    let reply = relay.client().request(
        "PUT",
        "/upload",
        &[("Content-Type", "application/octet-stream")],
        &pattern(0, 5 * MIB),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), r#"{"bytes":5242880,"pattern_ok":true}"#);
}

#[test]
fn a_5_mib_chunked_upload_streams_through_intact() {
    let backend = StreamingBackend::start("streamer");
    let relay = upload_relay(&backend);
    let mut client = relay.client();
    client.send(b"PUT /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n");
    let piece = 64 * KIB;
    for offset in (0..5 * MIB).step_by(piece) {
        let mut chunk = format!("{piece:x}\r\n").into_bytes();
        chunk.extend_from_slice(&pattern(offset as u64, piece));
        chunk.extend_from_slice(b"\r\n");
        client.send(&chunk);
    }
    client.send(b"0\r\n\r\n");
    let reply = client.read_reply(false).expect("an answer");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), r#"{"bytes":5242880,"pattern_ok":true}"#);
    assert_eq!(client.get("/bytes/3").status, 200, "still in step");
}

/// Announces a `length`-byte upload, sends its first 64 KiB, and reads the answer.
fn announce_upload(relay: &TestRelay, length: usize) -> (common::Reply, Client) {
    let mut client = relay.client();
    client.send(
        format!("PUT /upload HTTP/1.1\r\nHost: test\r\nContent-Length: {length}\r\n\r\n")
            .as_bytes(),
    );
    client.send(&pattern(0, 64 * KIB));
    let reply = client.read_reply(false).expect("an answer");
    (reply, client)
}

/// The relay neither forwarded a request to `streamer` nor opened a
/// connection for one (health checks use connections of their own).
fn assert_nothing_forwarded(relay: &TestRelay) {
    assert_eq!(node_number(relay, "streamer", "requests"), 0.0);
    assert_eq!(node_number(relay, "streamer", "connections_opened"), 0.0);
}

#[test]
fn a_9_mib_upload_over_an_8_mib_limit_is_413_and_never_forwarded() {
    let backend = StreamingBackend::start("streamer");
    let relay = upload_relay(&backend);
    let (reply, mut client) = announce_upload(&relay, 9 * MIB);
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert!(reply.error().contains("8 MiB"), "{}", reply.error());
    assert!(
        client.is_closed_by_server(),
        "the unread body ends the connection"
    );
    assert_nothing_forwarded(&relay);
}

#[test]
fn a_chunked_upload_that_grows_past_the_limit_is_413() {
    let backend = StreamingBackend::start("streamer");
    let relay = upload_relay(&backend);
    let mut client = relay.client();
    let mut writer = client.stream.try_clone().expect("clone");
    let sender = thread::spawn(move || {
        let mut wire =
            b"PUT /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let piece = 64 * KIB;
        for offset in (0..9 * MIB).step_by(piece) {
            wire.extend_from_slice(format!("{piece:x}\r\n").as_bytes());
            wire.extend_from_slice(&pattern(offset as u64, piece));
            wire.extend_from_slice(b"\r\n");
            if writer.write_all(&wire).is_err() {
                return;
            }
            wire.clear();
        }
        let _ = writer.write_all(b"0\r\n\r\n");
    });
    let reply = client.read_reply(false).expect("an answer");
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert!(reply.error().contains("8 MiB"), "{}", reply.error());
    assert!(client.is_closed_by_server());
    sender.join().expect("sender");
    assert_eq!(
        node_number(&relay, "streamer", "in_flight"),
        0.0,
        "the cut upload is over at the relay"
    );
}

#[test]
fn the_default_body_limit_of_1_mib_refuses_a_2_mib_upload() {
    let backend = StreamingBackend::start("streamer");
    let relay = relay_for(backend.addr, |_| {});
    let (reply, _client) = announce_upload(&relay, 2 * MIB);
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert!(reply.error().contains("1 MiB"), "{}", reply.error());
    assert_nothing_forwarded(&relay);
}

// ---------------------------------------------------------------------------
// 11. The read timeout.

#[test]
fn a_node_silent_mid_body_for_longer_than_the_read_timeout_is_cut_off() {
    let backend = StreamingBackend::start("streamer");
    let relay = relay_for(backend.addr, |c| c.read_timeout = Duration::from_secs(1));
    let mut wire = Wire::connect(relay.addr, SOON);
    let started = Instant::now();
    wire.get("/gated", 1);
    let head = wire.head();
    assert_eq!(head.status, 200);
    assert!(head.is_chunked());
    assert_eq!(wire.chunked_bytes(8), b"piece 0\n");
    // The gate never opens.
    let mut rest = Vec::new();
    wire.until_close(|piece| rest.extend_from_slice(piece));
    let elapsed = started.elapsed();
    assert!(
        rest.is_empty(),
        "nothing follows piece 0, least of all a last chunk: {:?}",
        lossy(&rest)
    );
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(4),
        "cut off after {elapsed:?}, not after the 1 s read timeout"
    );
    wait_until("the request to end at the relay", SOON, || {
        in_flight(&relay, "streamer") == 0.0
    });
}

// ---------------------------------------------------------------------------
// 12. An answer before the request is complete.

/// A backend that refuses every upload as soon as it has the head: `413`
/// with `Connection: close`, before reading any of the body (if asked, it
/// first waits for `body_first` body bytes, then takes `think` to decide).
/// Then, as a server's lingering close does, it reads and drops what still
/// comes until the relay closes.
/// `GET /health` is answered healthy. Counts the body bytes it received.
struct EarlyRefuser {
    addr: SocketAddr,
    received: Arc<AtomicU64>,
    answered: Arc<AtomicBool>,
}

impl EarlyRefuser {
    fn start(body_first: u64, think: Duration) -> EarlyRefuser {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(AtomicU64::new(0));
        let answered = Arc::new(AtomicBool::new(false));
        let (r, a) = (Arc::clone(&received), Arc::clone(&answered));
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (r, a) = (Arc::clone(&r), Arc::clone(&a));
                thread::spawn(move || refuse(stream, body_first, think, &r, &a));
            }
        });
        EarlyRefuser {
            addr,
            received,
            answered,
        }
    }
}

fn refuse(
    mut stream: TcpStream,
    body_first: u64,
    think: Duration,
    received: &AtomicU64,
    answered: &AtomicBool,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
    let mut buf = Vec::new();
    let mut piece = vec![0u8; 64 * KIB];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut piece) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&piece[..n]),
        }
    };
    if buf.starts_with(b"GET /health ") {
        let body = r#"{"node":"refuser","status":"ok"}"#;
        let _ = stream.write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        return;
    }
    let mut body = (buf.len() - end) as u64;
    while body < body_first {
        match stream.read(&mut piece) {
            Ok(0) | Err(_) => return,
            Ok(n) => body += n as u64,
        }
    }
    received.fetch_add(body, Ordering::SeqCst);
    // The node's own pace (an authorisation lookup, say), not synchronisation.
    thread::sleep(think);
    let refusal = r#"{"error":"uploads are closed"}"#;
    let written = stream.write_all(
        format!(
            "HTTP/1.1 413 Content Too Large\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{refusal}",
            refusal.len()
        )
        .as_bytes(),
    );
    answered.store(true, Ordering::SeqCst);
    if written.is_err() {
        return;
    }
    let _ = stream.shutdown(Shutdown::Write);
    loop {
        match stream.read(&mut piece) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                received.fetch_add(n as u64, Ordering::SeqCst);
            }
        }
    }
}

#[test]
fn an_early_413_reaches_a_client_that_is_still_uploading() {
    let backend = EarlyRefuser::start(0, Duration::ZERO);
    let relay = relay_for(backend.addr, |c| c.max_body_bytes = 64 * MIB as u64);
    let total = 32 * MIB;
    let mut wire = Wire::connect(relay.addr, Duration::from_secs(15));
    let mut writer = wire.stream.try_clone().expect("clone");
    let sender = thread::spawn(move || {
        let head = format!("PUT /upload HTTP/1.1\r\nHost: test\r\nContent-Length: {total}\r\n\r\n");
        if writer.write_all(head.as_bytes()).is_err() {
            return 0;
        }
        let mut sent = 0;
        while sent < total {
            if writer.write_all(&pattern(sent as u64, 64 * KIB)).is_err() {
                break;
            }
            sent += 64 * KIB;
        }
        sent
    });
    let head = wire.head();
    assert_eq!(head.status, 413);
    assert!(
        head.closes(),
        "the rest of the body is never read: the connection closes"
    );
    let length: u64 = head
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .expect("length");
    let mut body = Vec::new();
    wire.exact(length, |piece| body.extend_from_slice(piece));
    assert_eq!(body, br#"{"error":"uploads are closed"}"#);
    assert!(wire.is_closed(), "the relay closes after the answer");
    let sent = sender.join().expect("sender");
    assert!(
        sent < total,
        "the relay stopped reading the body it no longer needs"
    );
    let received = backend.received.load(Ordering::SeqCst);
    assert!(
        received < total as u64,
        "the relay stopped sending the body once the node had answered ({received} bytes sent)"
    );
    wait_until("the exchange to end at the relay", SOON, || {
        in_flight(&relay, "refuser") == 0.0
    });
    assert_eq!(
        node_field(&relay.status(), "refuser", "healthy"),
        Value::Bool(true),
        "an early answer is no fault of the node"
    );
}

#[test]
fn an_early_413_reaches_a_client_that_paused_its_upload() {
    // The node answers 200 ms after it has the head and the first 64 KiB:
    // by then the relay has sent all the client gave it and waits for more.
    let backend = EarlyRefuser::start(64 * KIB as u64, Duration::from_millis(200));
    let relay = relay_for(backend.addr, |c| c.max_body_bytes = 64 * MIB as u64);
    let mut wire = Wire::connect(relay.addr, SOON);
    wire.send(
        format!(
            "PUT /upload HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
            32 * MIB
        )
        .as_bytes(),
    );
    wire.send(&pattern(0, 64 * KIB));
    wait_until("the node to answer", SOON, || {
        backend.answered.load(Ordering::SeqCst)
    });
    // The client sends nothing more until it hears back (as a client that
    // reads its answer before sending more does).
    let head = wire.head();
    assert_eq!(
        head.status, 413,
        "the node's answer, not the relay's timeout"
    );
}
