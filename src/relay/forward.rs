//! One client request to one node and back: pick, pooled connection, send
//! with `X-Forwarded-For`, read the answer by its framing, pass it back
//! unchanged; retry elsewhere where SPEC §4 allows, else 502/503/504.
//!
//! Retry rules, from the method's safety:
//! - nothing sent yet (connect refused or timed out): any method, another node;
//! - sent, no answer byte yet (reset, closed): `GET`, `HEAD`, `PUT`, `DELETE`,
//!   and `POST` with an `Idempotency-Key`, another node; others 502, since the
//!   node may have acted on them;
//! - a *reused* pooled connection that turns out closed before any answer
//!   byte: resent once on a fresh connection to the same node, whatever the
//!   method, because the node closed it while idle and never saw the request;
//! - an answer that started and broke, or a malformed one: 502, no retry;
//! - no answer in 30 s: 504, no retry.

use super::backend::{Backend, Topology};
use super::pool::Upstream;
use crate::balancer::InFlight;
use crate::http::parse::{parse_response_head, ChunkedDecoder, ResponseFraming, Status};
use crate::http::write::status_has_body;
use crate::http::{Request, Response};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Largest response body the relay buffers from a node. A page of 1000
/// bookings is about 600 KiB; this leaves ample room.
pub const MAX_RESPONSE_BODY_BYTES: u64 = 64 * 1024 * 1024;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1);
/// they are not forwarded in either direction. `Content-Length` is rewritten.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "expect",
];

/// Why one attempt on one node failed.
#[derive(Debug)]
pub enum Failure {
    /// The connection could not be made: nothing was sent.
    Connect(io::Error),
    /// Sent (perhaps partly); the node closed or reset before any answer byte.
    NoAnswer { reset: bool },
    /// The node did not answer within the timeout.
    Timeout,
    /// The answer was malformed or broke off midway.
    BadAnswer(String),
}

impl Failure {
    /// Whether the node should be marked down at once (passive health).
    fn marks_down(&self) -> bool {
        matches!(
            self,
            Failure::Connect(_) | Failure::NoAnswer { reset: true }
        )
    }

    /// Whether the request may go to another node after this.
    fn allows_retry(&self, request: &Request) -> bool {
        match self {
            Failure::Connect(_) => true,
            Failure::NoAnswer { .. } => is_retry_safe(request),
            Failure::Timeout | Failure::BadAnswer(_) => false,
        }
    }

    fn response(&self) -> Response {
        match self {
            Failure::Connect(error) => Response::error(
                502,
                &format!("the relay could not connect to a node ({error}); try again"),
            ),
            Failure::NoAnswer { .. } => Response::error(
                502,
                "the node closed the connection before answering; the request may or may not have taken effect",
            ),
            Failure::Timeout => Response::error(504, "the node did not answer within 30 seconds"),
            Failure::BadAnswer(why) => {
                Response::error(502, &format!("the node sent a broken answer: {why}"))
            }
        }
    }
}

/// Methods that may be sent twice (RFC 9110 §9.2.2), and POSTs that say so.
fn is_retry_safe(request: &Request) -> bool {
    match request.method.as_str() {
        "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" => true,
        "POST" => request.header("idempotency-key").is_some(),
        _ => false,
    }
}

/// The booking id in `/bookings/{id}`, the key of `consistent-hash`.
pub fn routing_key(path: &str) -> Option<&str> {
    path.strip_prefix("/bookings/")
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

/// Forwards `request`; returns the answer and the node that gave it, if any.
pub fn forward(
    topology: &Topology,
    request: &Request,
    peer: SocketAddr,
) -> (Response, Option<Arc<Backend>>) {
    let key = routing_key(request.path());
    let mut excluded = vec![false; topology.backends.len()];
    let mut last: Option<(Failure, Arc<Backend>)> = None;
    loop {
        let states: Vec<_> = topology
            .backends
            .iter()
            .zip(&excluded)
            .map(|(backend, &excluded)| {
                let mut state = backend.state();
                state.healthy &= !excluded;
                state
            })
            .collect();
        let Some(index) = topology.balancer.pick(&states, key) else {
            break;
        };
        let backend = &topology.backends[index];
        let _in_flight = InFlight::enter(&backend.in_flight);
        backend.requests.fetch_add(1, Ordering::Relaxed);
        match send(backend, request, peer) {
            Ok(response) => return (response, Some(Arc::clone(backend))),
            Err(failure) => {
                backend.failures.fetch_add(1, Ordering::Relaxed);
                if failure.marks_down() && backend.health.mark_down() {
                    eprintln!(
                        "relay: node {} at {} is down ({failure:?})",
                        backend.name(),
                        backend.addr
                    );
                }
                if failure.marks_down() {
                    backend.pool.clear();
                }
                excluded[index] = true;
                if !failure.allows_retry(request) {
                    return (failure.response(), Some(Arc::clone(backend)));
                }
                last = Some((failure, Arc::clone(backend)));
            }
        }
    }
    match last {
        Some((failure, backend)) => (failure.response(), Some(backend)),
        None => (
            Response::error(503, "no healthy node is available; try again shortly"),
            None,
        ),
    }
}

/// One attempt on one node, with the stale-pooled-connection resend.
fn send(backend: &Backend, request: &Request, peer: SocketAddr) -> Result<Response, Failure> {
    let wire = encode_request(request, peer, backend.addr);
    let to_head = request.is_head();
    if let Some(mut upstream) = backend.pool.take() {
        match exchange(&mut upstream, &wire, to_head) {
            Ok((response, reusable)) => {
                if reusable {
                    backend.pool.put(upstream);
                }
                return Ok(response);
            }
            // Closed while idle: the node never saw this request. Resend below.
            Err(Failure::NoAnswer { .. }) => {}
            Err(failure) => return Err(failure),
        }
    }
    let mut upstream = backend
        .pool
        .connect(backend.addr)
        .map_err(Failure::Connect)?;
    let (response, reusable) = exchange(&mut upstream, &wire, to_head)?;
    if reusable {
        backend.pool.put(upstream);
    }
    Ok(response)
}

/// The request as the node gets it: HTTP/1.1, hop-by-hop headers dropped,
/// `X-Forwarded-For` extended with the client, the body re-framed by length.
pub fn encode_request(request: &Request, peer: SocketAddr, node: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + request.body.len());
    out.extend_from_slice(request.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(request.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let connection_tokens: Vec<&str> = request
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(','))
        .map(str::trim)
        .collect();
    let mut forwarded_for: Option<&str> = None;
    let mut has_host = false;
    for header in &request.headers {
        let name = header.name.as_str();
        if HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
            || connection_tokens
                .iter()
                .any(|t| name.eq_ignore_ascii_case(t))
        {
            continue;
        }
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded_for = Some(&header.value);
            continue;
        }
        has_host |= name.eq_ignore_ascii_case("host");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(header.value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !has_host {
        out.extend_from_slice(format!("Host: {node}\r\n").as_bytes());
    }
    out.extend_from_slice(b"X-Forwarded-For: ");
    if let Some(earlier) = forwarded_for {
        out.extend_from_slice(earlier.as_bytes());
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(peer.ip().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    if !request.body.is_empty() || matches!(request.method.as_str(), "POST" | "PUT" | "PATCH") {
        out.extend_from_slice(format!("Content-Length: {}\r\n", request.body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&request.body);
    out
}

fn read_failure(error: &io::Error, answered: bool) -> Failure {
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Failure::Timeout,
        _ if answered => Failure::BadAnswer(format!("the connection broke mid-answer ({error})")),
        kind => Failure::NoAnswer {
            reset: matches!(
                kind,
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            ),
        },
    }
}

/// Writes `wire`, reads one answer. Returns it, and whether the connection
/// can be reused.
fn exchange(
    upstream: &mut Upstream,
    wire: &[u8],
    to_head: bool,
) -> Result<(Response, bool), Failure> {
    if let Err(error) = upstream.stream.write_all(wire) {
        return Err(read_failure(&error, false));
    }
    // Skip interim 1xx answers (e.g. 103 Early Hints).
    let (head, head_len) = loop {
        match parse_response_head(upstream.input.data(), to_head) {
            Ok(Status::Complete((head, used)))
                if (100..200).contains(&head.status) && head.status != 101 =>
            {
                upstream.input.consume(used);
            }
            Ok(Status::Complete(parsed)) => break parsed,
            Ok(Status::Partial) => {
                let answered = !upstream.input.is_empty();
                match upstream.input.read_from(&mut upstream.stream) {
                    Ok(0) if answered => {
                        return Err(Failure::BadAnswer("the answer's head was cut off".into()))
                    }
                    Ok(0) => return Err(Failure::NoAnswer { reset: false }),
                    Ok(_) => {}
                    Err(error) => return Err(read_failure(&error, answered)),
                }
            }
            Err(error) => return Err(Failure::BadAnswer(error.sentence().to_string())),
        }
    };
    if head.status == 101 {
        return Err(Failure::BadAnswer(
            "protocol upgrades are not supported".into(),
        ));
    }
    // The head as the client will get it, before the body is read, so the
    // raw bytes are still in the buffer.
    let mut raw_head = Vec::with_capacity(head_len + 32);
    raw_head.extend_from_slice(head.status_line.as_bytes());
    raw_head.extend_from_slice(b"\r\n");
    for header in &head.headers {
        let name = header.name.as_str();
        let is_length = name.eq_ignore_ascii_case("content-length");
        // A HEAD answer keeps the node's length: it describes the GET body.
        let keep = if is_length {
            to_head
        } else {
            !HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        };
        if keep {
            raw_head.extend_from_slice(name.as_bytes());
            raw_head.extend_from_slice(b": ");
            raw_head.extend_from_slice(header.value.as_bytes());
            raw_head.extend_from_slice(b"\r\n");
        }
    }
    upstream.input.consume(head_len);

    let mut reusable = !head.closes;
    let body = match head.framing {
        ResponseFraming::Empty => Vec::new(),
        ResponseFraming::Length(length) => {
            if length > MAX_RESPONSE_BODY_BYTES {
                return Err(Failure::BadAnswer(format!(
                    "a body of {length} bytes is too large to relay"
                )));
            }
            let length = length as usize;
            while upstream.input.len() < length {
                match upstream.input.read_from(&mut upstream.stream) {
                    Ok(0) => return Err(Failure::BadAnswer("the body was cut off".into())),
                    Ok(_) => {}
                    Err(error) => return Err(read_failure(&error, true)),
                }
            }
            let body = upstream.input.data()[..length].to_vec();
            upstream.input.consume(length);
            body
        }
        ResponseFraming::Chunked => {
            let mut decoder = ChunkedDecoder::with_limit(MAX_RESPONSE_BODY_BYTES);
            loop {
                let used = decoder
                    .feed(upstream.input.data())
                    .map_err(|e| Failure::BadAnswer(e.sentence().to_string()))?;
                upstream.input.consume(used);
                if decoder.is_done() {
                    break decoder.into_body();
                }
                match upstream.input.read_from(&mut upstream.stream) {
                    Ok(0) => return Err(Failure::BadAnswer("the chunked body was cut off".into())),
                    Ok(_) => {}
                    Err(error) => return Err(read_failure(&error, true)),
                }
            }
        }
        ResponseFraming::UntilClose => {
            reusable = false;
            loop {
                match upstream.input.read_from(&mut upstream.stream) {
                    Ok(0) => break,
                    Ok(_) if upstream.input.len() as u64 > MAX_RESPONSE_BODY_BYTES => {
                        return Err(Failure::BadAnswer("the body is too large to relay".into()))
                    }
                    Ok(_) => {}
                    Err(error) => return Err(read_failure(&error, true)),
                }
            }
            let body = upstream.input.data().to_vec();
            upstream.input.consume(body.len());
            body
        }
    };
    // Re-framed by length; a HEAD answer kept the node's own length above.
    if !to_head && status_has_body(head.status) {
        raw_head.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    // Bytes after the answer mean the node is out of step: do not reuse.
    if !upstream.input.is_empty() {
        reusable = false;
    }
    Ok((Response::passthrough(head.status, raw_head, body), reusable))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse::parse_request_head;

    fn request(raw: &str) -> Request {
        match parse_request_head(raw.as_bytes()) {
            Ok(Status::Complete((mut request, used))) => {
                request.body = raw.as_bytes()[used..].to_vec();
                request
            }
            other => panic!("{other:?}"),
        }
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("address")
    }

    #[test]
    fn forwarded_requests_drop_hop_by_hop_headers_and_add_x_forwarded_for() {
        let req = request(
            "POST /bookings HTTP/1.0\r\nHost: example\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nExpect: 100-continue\r\nX-Forwarded-For: 10.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        );
        let wire = String::from_utf8(encode_request(
            &req,
            addr("127.0.0.9:5000"),
            addr("127.0.0.1:9001"),
        ))
        .expect("utf8");
        assert_eq!(
            wire,
            "POST /bookings HTTP/1.1\r\nHost: example\r\nContent-Type: application/json\r\nX-Forwarded-For: 10.0.0.1, 127.0.0.9\r\nContent-Length: 2\r\n\r\n{}"
        );
    }

    #[test]
    fn a_missing_host_is_filled_with_the_node_address() {
        let req = request("GET /health HTTP/1.1\r\n\r\n");
        let wire = String::from_utf8(encode_request(
            &req,
            addr("127.0.0.1:1"),
            addr("127.0.0.1:9001"),
        ))
        .expect("utf8");
        assert_eq!(
            wire,
            "GET /health HTTP/1.1\r\nHost: 127.0.0.1:9001\r\nX-Forwarded-For: 127.0.0.1\r\n\r\n"
        );
    }

    #[test]
    fn routing_key_is_the_booking_id() {
        assert_eq!(routing_key("/bookings/abc"), Some("abc"));
        assert_eq!(routing_key("/bookings"), None);
        assert_eq!(routing_key("/bookings/"), None);
        assert_eq!(routing_key("/bookings/a/b"), None);
        assert_eq!(routing_key("/health"), None);
    }

    #[test]
    fn only_repeatable_requests_are_retried_after_sending() {
        let retry = |raw: &str| Failure::NoAnswer { reset: true }.allows_retry(&request(raw));
        assert!(retry("GET / HTTP/1.1\r\n\r\n"));
        assert!(retry("DELETE /bookings/a HTTP/1.1\r\n\r\n"));
        assert!(!retry("POST /bookings HTTP/1.1\r\n\r\n"));
        assert!(!retry("PATCH /bookings/a HTTP/1.1\r\n\r\n"));
        assert!(retry(
            "POST /bookings HTTP/1.1\r\nIdempotency-Key: k\r\n\r\n"
        ));
        let post = request("POST /bookings HTTP/1.1\r\n\r\n");
        assert!(
            Failure::Connect(io::Error::from(io::ErrorKind::ConnectionRefused)).allows_retry(&post)
        );
        assert!(!Failure::Timeout.allows_retry(&request("GET / HTTP/1.1\r\n\r\n")));
    }
}
