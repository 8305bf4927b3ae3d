//! One client request to one node and back, streamed: pick a node, take a
//! quiet pooled connection, send the head with `X-Forwarded-For` and the body
//! as it arrives, then pass the answer back piece by piece as the node sends
//! it. Retry elsewhere where that is safe, else 502/503/504.
//!
//! **Memory.** Neither body is ever held whole: the request body goes from
//! the client's buffer to the node in pieces (keeping at most
//! [`REPLAY_BYTES`] to send again), the answer from the node's buffer to the
//! client in pieces of at most [`BODY_READ_BYTES`]. A 300 MiB download costs
//! the same memory as a booking.
//!
//! **Retry rules** (a node that may have acted on a request must never be
//! sent it twice):
//! - nothing of the request sent yet (connect refused or timed out): any
//!   method, another node;
//! - sent, closed before any answer byte: `GET`, `HEAD`, `PUT`, `DELETE`,
//!   `OPTIONS`, and `POST` with an `Idempotency-Key`, as long as the relay
//!   still holds the whole body to send again; any other request: 502;
//! - "sent" is tracked across every attempt of a request, so a later connect
//!   failure can never make a request that already went out look unsent;
//! - an answer that started and broke: the client's answer is cut, no retry;
//!   a malformed head: 502; no head in [`ANSWER_TIMEOUT`]: 504;
//! - the relay's own failure (out of file descriptors or ports) is a 503 and
//!   marks no node down.
//!
//! **Upgrades.** A request asking `Connection: upgrade` keeps its `Upgrade`
//! header; a `101` answer turns the connection into a byte tunnel
//! ([`super::tunnel`]). `CONNECT` never gets here (the relay answers 501).

use super::backend::{Backend, Topology};
use super::events::{EventKind, Events};
use super::failopen::{self, FailOpen, Fitness};
use super::health::in_words;
use super::outlier::{Ejector, Verdict, CONSECUTIVE_5XX};
use super::queue::Queue;
use super::rate_limited_log::RateLimitedLog;
use super::tunnel;
use crate::http::conn::{AnswerBody, Exchange, Piece};
use crate::http::parse::Error as ParseError;
use crate::http::upstream::{
    length_framing, write_chunk, write_request_head, BodyReader, Peek, ReadError, RequestBody,
    Upstream, BODY_READ_BYTES, LAST_CHUNK,
};
use crate::http::{
    booking_id_in_path, has_token, Error, Framing, Header, Request, Response, ResponseHead,
    BODY_TIMEOUT, MAX_HEADERS, MAX_HEAD_BYTES,
};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A node slower than this to send its answer's head gets the client a 504.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// How much of a request body the relay keeps so it can send the request
/// again after a failure. A booking is under 4 KiB; a larger body that has
/// already begun to flow to a node is not sent again.
pub const REPLAY_BYTES: usize = 64 * 1024;

/// While a client is slow to send its body, how often the relay looks
/// whether the node has already answered (an early 413 or 401).
const EARLY_ANSWER_POLL: Duration = Duration::from_millis(50);

/// Relay-local failures (out of descriptors or ports) are logged at most
/// once a second.
static LOCAL_FAILURES: RateLimitedLog = RateLimitedLog::new(Duration::from_secs(1));

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1);
/// they are not forwarded in either direction. Framing headers are written
/// anew for each side.
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
    /// The relay itself is out of a resource (descriptors, ports, memory).
    Local(io::Error),
    /// Sent (perhaps partly); the node closed or reset before any answer
    /// byte. `reused`: on a connection from the pool.
    NoAnswer { reset: bool, reused: bool },
    /// The node did not answer within [`ANSWER_TIMEOUT`].
    Timeout,
    /// The answer's head was malformed or cut off.
    BadAnswer(String),
    /// The client's request body could not be read (it left, stalled or
    /// broke the framing): the client connection answers or closes.
    ClientBody,
    /// The head as it would go out is over a node's limits: the relay's own
    /// lines (`X-Forwarded-For`, a `Host`, CRLF for bare LF, `: ` after each
    /// name) pushed a head that fit the relay over [`MAX_HEAD_BYTES`] or
    /// [`MAX_HEADERS`]. Nothing is sent: the client gets the 431 a node
    /// would give, and the connection closes as after any head too large.
    HeadTooLarge,
}

impl Failure {
    /// Whether the node should be marked down at once (passive health).
    fn marks_down(&self) -> bool {
        matches!(
            self,
            Failure::Connect(_)
                | Failure::NoAnswer {
                    reset: true,
                    reused: false
                }
        )
    }

    fn response(&self) -> Option<Response> {
        Some(match self {
            // The system's own words go to the log (see `describe`), not to
            // the client.
            Failure::Connect(_) => {
                Response::error(502, "the relay could not connect to a node; try again")
            }
            Failure::Local(_) => Response::error(
                503,
                "the relay is out of connections to give right now; try again shortly",
            ),
            Failure::NoAnswer { .. } => Response::error(
                502,
                "the node closed the connection before answering; the request may or may not have taken effect",
            ),
            Failure::Timeout => Response::error(
                504,
                &format!(
                    "the node did not answer within {} seconds",
                    ANSWER_TIMEOUT.as_secs()
                ),
            ),
            Failure::BadAnswer(why) => {
                Response::error(502, &format!("the node sent a broken answer: {why}"))
            }
            Failure::ClientBody => return None,
            Failure::HeadTooLarge => Error::Parse(ParseError::HeadTooLarge).response(),
        })
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

/// Whether a connect error is the relay's own shortage rather than the node's
/// fault: no descriptor, no local port, no buffer memory.
fn is_local(error: &io::Error) -> bool {
    // EMFILE, ENFILE, EADDRNOTAVAIL, ENOBUFS, ENOMEM (Linux numbers).
    matches!(error.raw_os_error(), Some(24 | 23 | 99 | 105 | 12))
}

/// Whether a request asks to switch protocols (WebSocket): HTTP/1.1 with
/// `Connection: upgrade` and an `Upgrade` header.
pub fn is_upgrade(request: &Request) -> bool {
    request.version == crate::http::Version::Http11
        && request.header("upgrade").is_some()
        && request
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("connection") && has_token(&h.value, "upgrade"))
}

/// What the access log learns of one forwarded request.
pub struct Forwarded {
    /// The status the client was sent, if any.
    pub status: Option<u16>,
    pub node: Option<Arc<Backend>>,
}

/// The request as it goes out, across all attempts.
struct Outgoing<'r> {
    request: &'r Request,
    /// How the body is framed toward the node.
    framing: RequestBody,
    /// Every body byte read from the client so far, while `replayable`.
    replay: Vec<u8>,
    replayable: bool,
    /// Some byte of this request was written to some node.
    sent: bool,
    upgrade: bool,
}

impl Outgoing<'_> {
    /// Remembers a body piece for a resend, unless the body outgrew the
    /// replay buffer (then it can never be resent).
    fn keep(&mut self, data: &[u8]) {
        if !self.replayable {
            return;
        }
        if self.replay.len() + data.len() <= REPLAY_BYTES {
            self.replay.extend_from_slice(data);
        } else {
            self.replayable = false;
            self.replay = Vec::new();
        }
    }

    /// Whether the request may go out (again) after it has been sent once:
    /// safe to repeat, and its whole body still held.
    fn resendable(&self) -> bool {
        is_retry_safe(self.request) && self.replayable
    }

    /// Whether this failure still allows sending the request to another node.
    fn may_retry(&self, failure: &Failure) -> bool {
        match failure {
            // Nothing of this attempt went out; but if an earlier attempt
            // sent the request, that one decides.
            Failure::Connect(_) => !self.sent || self.resendable(),
            Failure::NoAnswer { .. } => self.resendable(),
            Failure::Local(_)
            | Failure::Timeout
            | Failure::BadAnswer(_)
            | Failure::ClientBody
            | Failure::HeadTooLarge => false,
        }
    }
}

/// What a forward needs of the relay besides the topology.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// Longest silence between two pieces of a node's answer body.
    pub read_timeout: Duration,
    pub events: &'a Events,
    /// Counts every answer toward its node's ejection.
    pub ejector: &'a Ejector,
    /// Whether the last request found too few fit nodes.
    pub fail_open: &'a FailOpen,
    /// The cap on requests in flight per node, and the line of those waiting for a slot.
    pub queue: &'a Queue,
}

/// Forwards `request` through `exchange`, streaming both bodies. Retries,
/// passive downs and the relay's own 502/503/504 go to `events`.
pub fn forward(
    topology: &Topology,
    request: &Request,
    peer: SocketAddr,
    exchange: &mut Exchange<'_>,
    context: &Context<'_>,
) -> Forwarded {
    let Context {
        read_timeout,
        events,
        ejector,
        fail_open,
        queue,
    } = *context;
    let Some(mut out) = prepare(request, exchange) else {
        return Forwarded {
            status: None,
            node: None,
        };
    };
    let key = booking_id_in_path(request.path());
    let mut excluded = vec![false; topology.backends.len()];
    let mut last: Option<(Failure, Arc<Backend>)> = None;
    let mut retried_fresh = false;
    // The node a failed attempt was on and why, until the retry is sent.
    let mut retry_from: Option<(Arc<Backend>, String)> = None;
    let eligible = eligible_nodes(topology, events, fail_open);
    let mut ticket = queue.ticket();
    let queue_deadline = Instant::now() + queue.timeout();
    loop {
        // With a cap, a request waits in line behind those already waiting, and picks only
        // among the nodes with a free slot; without one, `full` is all false.
        if ticket.behind_others() && ticket.wait(queue_deadline).is_err() {
            // Out of the line before the answer is written, however slow the client.
            drop(ticket);
            return queue_timeout(exchange, request, events, queue);
        }
        // Without a cap nothing is ever full, and the request path allocates nothing for it.
        let full: Option<Vec<bool>> = queue.cap().map(|_| {
            topology
                .backends
                .iter()
                .map(|b| queue.is_full(b.in_flight.load(Ordering::Relaxed)))
                .collect()
        });
        let states = match &full {
            Some(full) => {
                let blocked: Vec<bool> = excluded.iter().zip(full).map(|(e, f)| *e || *f).collect();
                topology.states(&eligible, &blocked, Instant::now())
            }
            None => topology.states(&eligible, &excluded, Instant::now()),
        };
        let Some(index) = topology.balancer.pick(&states, key.as_deref()) else {
            let waits_for_a_slot = full.as_ref().is_some_and(|full| {
                (0..full.len()).any(|i| full[i] && eligible[i] && !excluded[i])
            });
            if waits_for_a_slot {
                // Room at a node this request already failed at (and others may use): a turn
                // it holds may be for that room. Nodes nobody may use are no reason.
                let unusable_room = full.as_ref().is_some_and(|full| {
                    (0..full.len()).any(|i| !full[i] && excluded[i] && eligible[i])
                });
                let waited = if unusable_room {
                    ticket.wait_giving_way(queue_deadline)
                } else {
                    ticket.wait(queue_deadline)
                };
                if waited.is_err() {
                    drop(ticket);
                    return queue_timeout(exchange, request, events, queue);
                }
                continue;
            }
            break;
        };
        let backend = &topology.backends[index];
        // Lost a race for the last slot: pick again (now it counts as full).
        let Some(slot) = queue.try_take(&backend.in_flight) else {
            continue;
        };
        std::mem::replace(&mut ticket, queue.ticket()).admitted();
        if let Some((from, why)) = retry_from.take() {
            record_retry(events, request, &from, &why, backend);
        }
        backend.requests.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let failure = match attempt(backend, &mut out, peer, exchange, read_timeout) {
            Ok(status) => {
                let took = started.elapsed();
                topology.balancer.observe(index, took, true);
                if let Some(status) = status {
                    count_answer(topology, backend, status, events, ejector);
                    backend.latency.observe(took);
                }
                return Forwarded {
                    status,
                    node: Some(Arc::clone(backend)),
                };
            }
            Err(failure) => failure,
        };
        if matches!(failure, Failure::ClientBody | Failure::HeadTooLarge) {
            // The client's fault, not the node's: nothing to count or retry. The slot is
            // free before the answer is written, however slow the client.
            drop(slot);
            return answer_failure(
                exchange,
                (topology, context),
                request,
                failure,
                Some(Arc::clone(backend)),
            );
        }
        if let Failure::Local(error) = &failure {
            // The relay's own trouble: not the node's failure, and told at
            // most once a second, since then every request meets it.
            LOCAL_FAILURES.write(|| {
                format!(
                    "relay: cannot open a connection to {}: {error}",
                    backend.addr
                )
            });
        } else {
            backend.failures.fetch_add(1, Ordering::Relaxed);
            topology.balancer.observe(index, started.elapsed(), false);
        }
        if failure.marks_down() && backend.health.mark_down() {
            events.record(
                EventKind::Down,
                Some(&backend.name()),
                format!("{} (on a forwarded request)", describe(&failure)),
            );
        }
        if failure.marks_down() {
            backend.pool.clear();
        }
        if !out.may_retry(&failure) {
            drop(slot);
            return answer_failure(
                exchange,
                (topology, context),
                request,
                failure,
                Some(Arc::clone(backend)),
            );
        }
        // A pooled connection the node had closed just as it was reused says
        // nothing about the node: try it once more on a fresh connection.
        if matches!(failure, Failure::NoAnswer { reused: true, .. }) && !retried_fresh {
            retried_fresh = true;
            backend.pool.clear();
        } else {
            excluded[index] = true;
        }
        retry_from = Some((Arc::clone(backend), describe(&failure)));
        last = Some((failure, Arc::clone(backend)));
    }
    // A turn still held passes on now, not after the answer below is written.
    drop(ticket);
    match last {
        Some((failure, backend)) => answer_failure(
            exchange,
            (topology, context),
            request,
            failure,
            Some(backend),
        ),
        None => {
            exchange.respond(&Response::error(
                503,
                "no healthy node is available; try again shortly",
            ));
            events.record(
                EventKind::Error,
                None,
                format!(
                    "answered 503 to {}: no healthy node was available",
                    request_words(request)
                ),
            );
            Forwarded {
                status: Some(503),
                node: None,
            }
        }
    }
}

/// The 503 for a request that waited its whole queue timeout for a slot; it was sent nowhere.
fn queue_timeout(
    exchange: &mut Exchange<'_>,
    request: &Request,
    events: &Events,
    queue: &Queue,
) -> Forwarded {
    let cap = queue.cap().unwrap_or_default();
    let waited = duration_words(queue.timeout());
    exchange.respond(&Response::error(
        503,
        &format!(
            "every node is busy with its limit of {cap} requests (--max-conns-per-node) and this request waited {waited} in line for one; try again shortly"
        ),
    ));
    events.record(
        EventKind::Error,
        None,
        format!(
            "answered 503 to {}: it waited {waited} in line and no node had a free slot (at most {cap} requests each)",
            request_words(request)
        ),
    );
    Forwarded {
        status: Some(503),
        node: None,
    }
}

/// Answers the client for a failed request (unless the client is the one
/// who failed); the answer is an `error` event, and a 502 or 504 counts as
/// the node's 5xx (a 503 is the relay's own shortage, not the node's).
fn answer_failure(
    exchange: &mut Exchange<'_>,
    (topology, context): (&Topology, &Context<'_>),
    request: &Request,
    failure: Failure,
    node: Option<Arc<Backend>>,
) -> Forwarded {
    let events = context.events;
    let Some(response) = failure.response() else {
        return Forwarded { status: None, node };
    };
    exchange.respond(&response);
    let status = response.status;
    let name = node.as_ref().map(|n| n.name());
    // A head too large never reached the node; a 503 is the relay's own.
    let nodes_answer = status != 503 && !matches!(failure, Failure::HeadTooLarge);
    if let (Some(node), true) = (&node, nodes_answer) {
        count_answer(topology, node, status, events, context.ejector);
    }
    if status < 500 {
        // A client's mistake, not an event of the relay's.
        return Forwarded {
            status: Some(status),
            node,
        };
    }
    let why = match (&failure, &name) {
        (Failure::Local(_), _) | (_, None) => describe(&failure),
        (_, Some(name)) => format!("{name}: {}", describe(&failure)),
    };
    events.record(
        EventKind::Error,
        name.as_deref(),
        format!("answered {status} to {}: {why}", request_words(request)),
    );
    Forwarded {
        status: Some(status),
        node,
    }
}

/// The nodes this request may go to ([`failopen::eligible`]): re-admits
/// the ejected nodes whose time is up first, and tells entering or leaving
/// fail-open as an event.
fn eligible_nodes(topology: &Topology, events: &Events, fail_open: &FailOpen) -> Vec<bool> {
    let now = Instant::now();
    let fitness: Vec<Fitness> = topology
        .backends
        .iter()
        .map(|backend| {
            readmit_if_due(backend, events, now);
            Fitness {
                healthy: backend.state().healthy,
                ejected: backend.outlier.is_ejected(),
                reachable: backend.health.is_reachable() && !backend.is_retired(),
            }
        })
        .collect();
    let (eligible, open) = failopen::eligible(&fitness);
    if fail_open.update(open) {
        let fit = fitness.iter().filter(|f| f.healthy && !f.ejected).count();
        let total = fitness.len();
        if open {
            events.record(
                EventKind::FailOpen,
                None,
                format!("only {fit} of {total} nodes are healthy and not ejected: failing open, requests go to every node that accepts connections"),
            );
        } else {
            events.record(
                EventKind::FailOpenEnd,
                None,
                format!("{fit} of {total} nodes are healthy and not ejected again: requests go to those only"),
            );
        }
    }
    eligible
}

/// Counts an answer a client got from (or for) `backend`, by class and
/// toward its ejection; an ejection is an `eject` event.
fn count_answer(
    topology: &Topology,
    backend: &Backend,
    status: u16,
    events: &Events,
    ejector: &Ejector,
) {
    backend.count_response(status);
    if !(200..600).contains(&status) {
        return;
    }
    let all = topology.backends.iter().map(|b| &b.outlier);
    let verdict = ejector.observe(&backend.outlier, all, status >= 500, Instant::now());
    if let Verdict::Ejected { length, count } = verdict {
        let times = match count {
            1 => "first ejection".to_string(),
            n => format!("ejection number {n}"),
        };
        events.record(
            EventKind::Eject,
            Some(&backend.name()),
            format!(
                "{CONSECUTIVE_5XX} answers in a row were 5xx: no traffic for {} ({times}), though its health checks may pass",
                duration_words(length)
            ),
        );
    }
}

/// Lets an ejected node back in once its time is up, as a `readmit` event.
/// Asked on every request and by the node's checker, so it happens on time
/// with or without traffic.
pub fn readmit_if_due(backend: &Backend, events: &Events, now: Instant) {
    if backend.outlier.readmit_if_due(now) {
        events.record(
            EventKind::Readmit,
            Some(&backend.name()),
            "its ejection time is over: it gets traffic again",
        );
    }
}

/// `30 s`, `1.5 s`, `300 ms`.
fn duration_words(length: Duration) -> String {
    let ms = length.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", length.as_secs_f64())
    }
}

/// A retry is being sent: counted at the node it left (when it leaves it
/// for another) and told as a `retry` event.
fn record_retry(events: &Events, request: &Request, from: &Backend, why: &str, to: &Backend) {
    let from_name = from.name();
    let destination = if std::ptr::eq(from, to) {
        format!("sent again to {from_name} on a fresh connection")
    } else {
        from.retries.fetch_add(1, Ordering::Relaxed);
        format!("sent again to {}", to.name())
    };
    events.record(
        EventKind::Retry,
        Some(&from_name),
        format!(
            "{} failed at {from_name} ({why}); {destination}",
            request_words(request)
        ),
    );
}

/// `GET /bookings/abc` (the target cut at 100 characters), for events.
fn request_words(request: &Request) -> String {
    let target: String = request.target.chars().take(100).collect();
    let cut = if target.len() < request.target.len() {
        "…"
    } else {
        ""
    };
    format!("{} {target}{cut}", request.method)
}

/// A failure in words, for events and the log.
fn describe(failure: &Failure) -> String {
    match failure {
        Failure::Connect(error) => in_words(error),
        Failure::Local(error) => format!(
            "the relay could not open a connection ({}), which is no fault of the node",
            in_words(error)
        ),
        Failure::NoAnswer { reset: true, .. } => "it reset the connection before answering".into(),
        Failure::NoAnswer { .. } => "it closed the connection without answering".into(),
        Failure::Timeout => format!("no answer within {} seconds", ANSWER_TIMEOUT.as_secs()),
        Failure::BadAnswer(why) => format!("it sent a broken answer: {why}"),
        Failure::ClientBody => "the client's request body could not be read".into(),
        Failure::HeadTooLarge => {
            "the request head, with the relay's own lines added, is over a node's limits".into()
        }
    }
}

/// Decides how the body goes out. A chunked body is gathered up to the replay
/// size first: if it ends by then, it goes out with a `Content-Length`, which
/// every server understands (some, like Python's `http.server`, read nothing
/// else). `None`: the client's body could not be read.
fn prepare<'r>(request: &'r Request, exchange: &mut Exchange<'_>) -> Option<Outgoing<'r>> {
    let mut out = Outgoing {
        request,
        framing: length_framing(&request.method, 0),
        replay: Vec::new(),
        replayable: true,
        sent: false,
        upgrade: is_upgrade(request),
    };
    match request.framing {
        // A request is never framed by close (parse gives it none).
        Framing::Empty | Framing::UntilClose => {}
        Framing::Length(n) => out.framing = RequestBody::Length(n),
        Framing::Chunked => loop {
            match exchange.body_piece(BODY_TIMEOUT)? {
                Piece::Data(data) => out.replay.extend_from_slice(data),
                Piece::End => {
                    out.framing = RequestBody::Length(out.replay.len() as u64);
                    break;
                }
                Piece::Pending => {}
            }
            if out.replay.len() >= REPLAY_BYTES {
                out.framing = RequestBody::Chunked;
                break;
            }
        },
    }
    Some(out)
}

/// One attempt on one node. `Ok`: the node answered (with the status sent
/// to the client, if the client was still there); from the first byte of
/// the answer on, nothing is retried.
fn attempt(
    backend: &Backend,
    out: &mut Outgoing<'_>,
    peer: SocketAddr,
    exchange: &mut Exchange<'_>,
    read_timeout: Duration,
) -> Result<Option<u16>, Failure> {
    let (mut upstream, reused) = match backend.pool.take() {
        Some(upstream) => (upstream, true),
        None => match backend.pool.connect(backend.addr) {
            Ok(upstream) => (upstream, false),
            Err(error) if is_local(&error) => return Err(Failure::Local(error)),
            Err(error) => return Err(Failure::Connect(error)),
        },
    };
    let to_head = out.request.is_head();
    let sent_whole = send_request(&mut upstream, out, peer, backend.addr, exchange)?;
    let head = upstream
        .read_head(to_head, ANSWER_TIMEOUT)
        .map_err(|error| match error {
            ReadError::TimedOut => Failure::Timeout,
            ReadError::Closed {
                answered: false,
                reset,
            } => Failure::NoAnswer { reset, reused },
            ReadError::Closed { answered: true, .. } => {
                Failure::BadAnswer("the answer's head was cut off".into())
            }
            ReadError::Malformed(why) => Failure::BadAnswer(why),
            ReadError::Stopped => Failure::BadAnswer("the read stopped".into()),
        })?;
    if head.status == 101 {
        if !out.upgrade {
            return Err(Failure::BadAnswer(
                "it switched protocols (101) for a request that did not ask to".into(),
            ));
        }
        let Ok((client, early)) = exchange.upgrade(&answer_head(&head, to_head, true)) else {
            return Ok(None);
        };
        tunnel::run(client, &early, upstream, read_timeout);
        return Ok(Some(101));
    }
    let status = head.status;
    let body = match head.framing {
        Framing::Empty => AnswerBody::None,
        Framing::Length(n) => AnswerBody::Length(n),
        Framing::Chunked | Framing::UntilClose => AnswerBody::Unknown,
    };
    exchange.start_answer(&answer_head(&head, to_head, false), body, false);
    let mut reader = BodyReader::new(head.framing, read_timeout);
    loop {
        // Before waiting on the node, what the client has been sent so far
        // goes out (an event stream's last event, a download's first bytes).
        let mut flush = || exchange.flush().is_ok();
        match reader.next_piece(&mut upstream, &mut flush) {
            Ok(Some(piece)) => {
                if exchange.send_piece(piece).is_err() {
                    // The client left: the node's connection is dropped with
                    // its unread rest, and `in_flight` falls on return.
                    return Ok(Some(status));
                }
            }
            Ok(None) => break,
            Err(ReadError::Stopped) => return Ok(Some(status)),
            Err(_) => {
                // Broke off or fell silent mid-body: the client's answer is
                // cut (the connection closes), never padded.
                backend.failures.fetch_add(1, Ordering::Relaxed);
                return Ok(Some(status));
            }
        }
    }
    exchange.end_answer();
    // The client has its answer before the connection is parked for reuse,
    // so parking costs the client no wait.
    exchange.deliver();
    let reusable = sent_whole && !head.closes && !reader.until_close();
    if reusable && upstream.settle() {
        backend.pool.put(upstream);
    }
    Ok(Some(status))
}

/// Writes the request head and its body to the node, the body as it comes
/// from the client. Returns whether the whole request went out (a node may
/// answer before it has read all of a large body; then the connection cannot
/// be reused).
fn send_request(
    upstream: &mut Upstream,
    out: &mut Outgoing<'_>,
    peer: SocketAddr,
    node: SocketAddr,
    exchange: &mut Exchange<'_>,
) -> Result<bool, Failure> {
    let mut wire = request_head(out.request, peer, node, out.framing, out.upgrade);
    if !fits_a_node(&wire) {
        return Err(Failure::HeadTooLarge);
    }
    encode_body(&mut wire, out.framing, &out.replay);
    // From here on the node may have seen bytes of this request.
    out.sent = true;
    let mut wait = Duration::ZERO;
    loop {
        match exchange.body_piece(wait) {
            None => return Err(Failure::ClientBody),
            Some(Piece::End) => break,
            Some(Piece::Data(data)) => {
                encode_body(&mut wire, out.framing, data);
                out.keep(data);
                wait = Duration::ZERO;
            }
            Some(Piece::Pending) => {
                // Nothing more buffered: send what there is, then wait.
                if !send_part(upstream, &wire)? {
                    return Ok(false);
                }
                wire.clear();
                if has_answered(upstream) {
                    // The node answered before the body was complete (an
                    // early 413 or 401): stop sending and read its answer.
                    return Ok(false);
                }
                // Wait for the client in short slices, looking at the node
                // between them, so an early answer is noticed while the
                // client is still slow to send.
                wait = EARLY_ANSWER_POLL;
                continue;
            }
        }
        if wire.len() >= BODY_READ_BYTES {
            if !send_part(upstream, &wire)? {
                return Ok(false);
            }
            wire.clear();
        }
    }
    if out.framing == RequestBody::Chunked {
        wire.extend_from_slice(LAST_CHUNK);
    }
    if !send_part(upstream, &wire)? {
        return Ok(false);
    }
    Ok(true)
}

/// Whether a request head as the relay writes it (CRLF after each line)
/// is within the limits a node's parser enforces.
fn fits_a_node(head: &[u8]) -> bool {
    // The request line and the blank line are not header lines.
    let lines = head.windows(2).filter(|w| w == b"\r\n").count();
    let headers = lines.saturating_sub(2);
    head.len() <= MAX_HEAD_BYTES && headers <= MAX_HEADERS
}

/// Writes part of a request. `Ok(false)`: the write failed other than by
/// timing out, which may mean the node answered early and closed (a server
/// refusing the body): its answer is then still there to read, so the
/// caller reads before it judges.
fn send_part(upstream: &mut Upstream, bytes: &[u8]) -> Result<bool, Failure> {
    match upstream.send(bytes) {
        Ok(()) => Ok(true),
        Err(error) if is_timeout(&error) => Err(Failure::Timeout),
        Err(_) => Ok(false),
    }
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Whether the node has sent something while the relay was still sending
/// (a non-blocking peek; only asked while a body is being streamed).
fn has_answered(upstream: &mut Upstream) -> bool {
    upstream.peek_now() == Peek::Data
}

fn encode_body(wire: &mut Vec<u8>, framing: RequestBody, data: &[u8]) {
    match framing {
        RequestBody::Chunked => write_chunk(wire, data),
        RequestBody::Length(_) | RequestBody::None => wire.extend_from_slice(data),
    }
}

/// Whether a header belongs to one connection, not the message. A name
/// spelled with `_` for `-` (`Transfer_Encoding`) counts too: some servers
/// read it as the real one, so passing it on beside the relay's own framing
/// would let a client smuggle a second framing past the relay.
fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| {
        h.len() == name.len()
            && h.bytes()
                .zip(name.bytes())
                .all(|(h, n)| h == n.to_ascii_lowercase() || (h == b'-' && n == b'_'))
    })
}

/// The header names a message's `Connection` header lists: hop-by-hop for
/// that message too (RFC 9110 §7.6.1).
fn connection_tokens(headers: &[Header]) -> Vec<&str> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(','))
        .map(str::trim)
        .collect()
}

/// The request head as the node gets it: HTTP/1.1, hop-by-hop headers
/// dropped (those the `Connection` header names too), `X-Forwarded-For`
/// extended with the client, the body framed as `framing` says, and for an
/// upgrade request its `Upgrade` header with `Connection: upgrade`.
pub fn request_head(
    request: &Request,
    peer: SocketAddr,
    node: SocketAddr,
    framing: RequestBody,
    upgrade: bool,
) -> Vec<u8> {
    let connection_tokens = connection_tokens(&request.headers);
    let mut forwarded_for: Vec<&str> = Vec::new();
    let mut has_host = false;
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(request.headers.len() + 3);
    for header in &request.headers {
        let name = header.name.as_str();
        if upgrade && name.eq_ignore_ascii_case("upgrade") {
            headers.push((name, &header.value));
            continue;
        }
        if is_hop_by_hop(name)
            || connection_tokens
                .iter()
                .any(|t| name.eq_ignore_ascii_case(t))
        {
            continue;
        }
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            // Every earlier hop, in order, however many lines they took.
            forwarded_for.push(&header.value);
            continue;
        }
        has_host |= name.eq_ignore_ascii_case("host");
        headers.push((name, &header.value));
    }
    let host = (!has_host).then(|| node.to_string());
    if let Some(host) = &host {
        headers.push(("Host", host));
    }
    let client = peer.ip().to_string();
    forwarded_for.push(&client);
    let chain = forwarded_for.join(", ");
    headers.push(("X-Forwarded-For", &chain));
    if upgrade {
        headers.push(("Connection", "upgrade"));
    }
    let mut out = Vec::with_capacity(256);
    write_request_head(&mut out, &request.method, &request.target, headers, framing);
    out
}

/// The answer's head as the client gets it: an HTTP/1.1 status line with
/// the node's code and reason, hop-by-hop headers dropped (and those the
/// node's `Connection` header names). A `HEAD` answer keeps the node's
/// `Content-Length`, which describes the body a `GET` would get; a `101`
/// keeps `Upgrade` and says `Connection: upgrade`. Framing and `Connection`
/// for the client are added by the [`Exchange`].
fn answer_head(head: &ResponseHead, to_head: bool, upgrade: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(head.status_line.get(9..).unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let named = connection_tokens(&head.headers);
    for header in &head.headers {
        let name = header.name.as_str();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            // Codings other than chunked (gzip, …) describe the body and stay;
            // the chunked layer is the relay's to redo for this client.
            let codings: Vec<&str> = header
                .value
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("chunked"))
                .collect();
            if !codings.is_empty() && !to_head {
                out.extend_from_slice(b"Transfer-Encoding: ");
                out.extend_from_slice(codings.join(", ").as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            continue;
        }
        let keep = if name.eq_ignore_ascii_case("content-length") {
            to_head
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade
        } else {
            !is_hop_by_hop(name) && !named.iter().any(|t| name.eq_ignore_ascii_case(t))
        };
        if keep {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(header.value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    if upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse::{parse_request_head, parse_response_head, Status};

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

    fn head_for(req: &Request, framing: RequestBody) -> String {
        String::from_utf8(request_head(
            req,
            addr("127.0.0.9:5000"),
            addr("127.0.0.1:9001"),
            framing,
            is_upgrade(req),
        ))
        .expect("utf8")
    }

    #[test]
    fn forwarded_requests_drop_hop_by_hop_headers_and_add_x_forwarded_for() {
        let req = request(
            "POST /bookings HTTP/1.0\r\nHost: example\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nExpect: 100-continue\r\nX-Forwarded-For: 10.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n",
        );
        assert_eq!(
            head_for(&req, RequestBody::Length(2)),
            "POST /bookings HTTP/1.1\r\nHost: example\r\nContent-Type: application/json\r\nX-Forwarded-For: 10.0.0.1, 127.0.0.9\r\nContent-Length: 2\r\n\r\n"
        );
    }

    #[test]
    fn every_x_forwarded_for_line_is_kept_in_order_and_underscored_framing_is_dropped() {
        let req = request(
            "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2, 10.0.0.3\r\nTransfer_Encoding: chunked\r\nContent_Length: 5\r\nX_Custom: kept\r\n\r\n",
        );
        assert_eq!(
            head_for(&req, RequestBody::None),
            "GET / HTTP/1.1\r\nHost: h\r\nX_Custom: kept\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.9\r\n\r\n"
        );
    }

    #[test]
    fn a_missing_host_is_filled_with_the_node_address() {
        let req = request("GET /health HTTP/1.1\r\n\r\n");
        assert_eq!(
            head_for(&req, RequestBody::None),
            "GET /health HTTP/1.1\r\nHost: 127.0.0.1:9001\r\nX-Forwarded-For: 127.0.0.9\r\n\r\n"
        );
    }

    #[test]
    fn a_head_the_relays_own_lines_push_over_a_nodes_limits_is_not_sent() {
        let mut big = "GET / HTTP/1.1\r\nHost: h\r\nX-Big: ".to_string();
        big.push_str(&"b".repeat(MAX_HEAD_BYTES - big.len() - 4));
        big.push_str("\r\n\r\n");
        assert_eq!(big.len(), MAX_HEAD_BYTES, "as large as a client may send");
        assert!(!fits_a_node(
            head_for(&request(&big), RequestBody::None).as_bytes()
        ));
        let mut many = "GET / HTTP/1.1\r\n".to_string();
        for i in 0..MAX_HEADERS {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert!(!fits_a_node(
            head_for(&request(&many), RequestBody::None).as_bytes()
        ));
        let small = request("GET / HTTP/1.1\r\n\r\n");
        assert!(fits_a_node(head_for(&small, RequestBody::None).as_bytes()));
        assert_eq!(
            Failure::HeadTooLarge.response().map(|r| r.status),
            Some(431)
        );
    }

    #[test]
    fn an_upgrade_request_keeps_its_upgrade_header() {
        let req = request("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n");
        assert!(is_upgrade(&req));
        assert_eq!(
            head_for(&req, RequestBody::None),
            "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\nX-Forwarded-For: 127.0.0.9\r\nConnection: upgrade\r\n\r\n"
        );
        assert!(!is_upgrade(&request(
            "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"
        )));
    }

    fn response(raw: &str, to_head: bool) -> ResponseHead {
        match parse_response_head(raw.as_bytes(), to_head) {
            Ok(Status::Complete((head, _))) => head,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn answers_reach_the_client_without_hop_by_hop_headers_as_http_1_1() {
        let head = response(
            "HTTP/1.0 200 OK\r\nConnection: close, X-Internal\r\nX-Internal: secret-hop\r\nKeep-Alive: 5\r\nContent-Length: 5\r\nX-Node: n\r\n\r\n",
            false,
        );
        assert_eq!(
            String::from_utf8(answer_head(&head, false, false)).expect("utf8"),
            "HTTP/1.1 200 OK\r\nX-Node: n\r\n"
        );
        let head = response(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Encoding: br\r\n\r\n",
            false,
        );
        assert_eq!(
            String::from_utf8(answer_head(&head, false, false)).expect("utf8"),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Encoding: br\r\n",
            "the gzip coding stays; the relay adds its own chunked layer"
        );
        let head = response("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true);
        assert_eq!(
            String::from_utf8(answer_head(&head, true, false)).expect("utf8"),
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n",
            "a HEAD answer keeps the length of the body a GET would get"
        );
        let head = response(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: a\r\n\r\n",
            false,
        );
        assert_eq!(
            String::from_utf8(answer_head(&head, false, true)).expect("utf8"),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: a\r\nConnection: upgrade\r\n"
        );
    }

    fn outgoing(req: &Request) -> Outgoing<'_> {
        Outgoing {
            request: req,
            framing: RequestBody::None,
            replay: Vec::new(),
            replayable: true,
            sent: true,
            upgrade: false,
        }
    }

    #[test]
    fn only_repeatable_requests_are_retried_after_sending() {
        let no_answer = Failure::NoAnswer {
            reset: true,
            reused: false,
        };
        let retry = |raw: &str| outgoing(&request(raw)).may_retry(&no_answer);
        assert!(retry("GET / HTTP/1.1\r\n\r\n"));
        assert!(retry("DELETE /bookings/a HTTP/1.1\r\n\r\n"));
        assert!(!retry("POST /bookings HTTP/1.1\r\n\r\n"));
        assert!(!retry("PATCH /bookings/a HTTP/1.1\r\n\r\n"));
        assert!(retry(
            "POST /bookings HTTP/1.1\r\nIdempotency-Key: k\r\n\r\n"
        ));
        let post = request("POST /bookings HTTP/1.1\r\n\r\n");
        let refused = || Failure::Connect(io::Error::from(io::ErrorKind::ConnectionRefused));
        let mut unsent = outgoing(&post);
        unsent.sent = false;
        assert!(unsent.may_retry(&refused()), "nothing went out: any method");
        assert!(
            !outgoing(&post).may_retry(&refused()),
            "a POST already sent to one node never looks unsent after a refused connect"
        );
        let get = request("GET / HTTP/1.1\r\n\r\n");
        assert!(!outgoing(&get).may_retry(&Failure::Timeout));
        assert!(!outgoing(&get).may_retry(&Failure::Local(io::Error::from_raw_os_error(24))));
    }

    #[test]
    fn a_body_that_outgrew_the_replay_buffer_is_never_resent() {
        let put = request("PUT /x HTTP/1.1\r\n\r\n");
        let mut out = outgoing(&put);
        out.keep(&vec![0u8; REPLAY_BYTES]);
        assert!(out.replayable, "exactly the replay size is still held");
        let no_answer = Failure::NoAnswer {
            reset: false,
            reused: false,
        };
        assert!(out.may_retry(&no_answer));
        out.keep(b"one more byte");
        assert!(!out.replayable && out.replay.is_empty());
        assert!(!out.may_retry(&no_answer));
    }

    #[test]
    fn the_relays_own_shortage_marks_no_node_down() {
        assert!(is_local(&io::Error::from_raw_os_error(24)));
        assert!(!is_local(&io::Error::from(
            io::ErrorKind::ConnectionRefused
        )));
        assert!(!Failure::Local(io::Error::from_raw_os_error(24)).marks_down());
        assert!(Failure::Connect(io::Error::from(io::ErrorKind::ConnectionRefused)).marks_down());
        assert!(!Failure::NoAnswer {
            reset: true,
            reused: true
        }
        .marks_down());
    }
}
