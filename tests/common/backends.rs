//! Small odd or hostile HTTP backends for the relay's integration tests.
//!
//! Each one imitates a kind of server a relay may sit in front of (a
//! streamer, a server that writes bytes nobody asked for, a WebSocket echo,
//! Python's `http.server`) and provokes one relay behaviour. Pure std: one
//! accept thread per backend, one thread per connection, and 20 s socket
//! timeouts so a broken test fails instead of hanging. Request heads are
//! parsed with bookrelay's own [`parse_request_head`]; bodies are streamed in
//! pieces, never held whole.
//!
//! Unless its doc says otherwise, a backend answers `GET /health` with `200`
//! and `{"node":"<name>","status":"ok"}`, keeps HTTP/1.1 connections alive,
//! and names itself in an `X-Node` header. Dropping a backend stops its
//! accept thread; connections already open finish on their own.

use bookrelay::http::parse::{parse_request_head, Status};
use bookrelay::http::{has_token, Framing, Request};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

/// Read and write timeout on every backend and [`WsClient`] socket.
pub const SOCKET_TIMEOUT: Duration = Duration::from_secs(20);

/// What [`StrayBytesBackend`] writes, unasked, after answering a `HEAD`.
pub const FORGED_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged";

/// Largest single read from a socket (so a streamed body never has more
/// than 64 KiB buffered).
const READ_PIECE: usize = 32 * 1024;
/// Each write of a `Content-Length` or close-delimited body.
const WRITE_PIECE: usize = 64 * 1024;
/// Each chunk of a chunked body.
const CHUNK_PIECE: usize = 16 * 1024;
/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;
/// Largest WebSocket frame payload the echo server accepts.
const MAX_FRAME: u64 = 64 * 1024 * 1024;
/// The GUID RFC 6455 appends to `Sec-WebSocket-Key`.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

// ---------------------------------------------------------------------------
// The body pattern.

/// Byte `i` of every body the backends send and of the uploads they check.
pub fn pattern_byte(i: u64) -> u8 {
    i.wrapping_mul(31).wrapping_add(i / 251) as u8
}

/// Whether `data` is the pattern from byte `offset` on.
pub fn check_pattern(offset: u64, data: &[u8]) -> bool {
    data.iter()
        .zip(offset..)
        .all(|(&b, i)| b == pattern_byte(i))
}

/// `len` pattern bytes from byte `offset` on (an upload body, say).
pub fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64).map(pattern_byte).collect()
}

// ---------------------------------------------------------------------------
// 1. Streaming.

/// Imitates a streaming server (large downloads with `Content-Length`,
/// chunked, or close-delimited; Server-Sent Events; a body released piece by
/// piece by the test; large uploads). Provokes the relay to stream both ways
/// instead of buffering, and to notice clients that go away mid-answer.
///
/// - `GET /bytes/N`: `N` pattern bytes with `Content-Length`, 64 KiB writes.
/// - `GET /chunked/N`: the same, chunked in 16 KiB chunks.
/// - `GET /close/N`: the same with neither `Content-Length` nor
///   `Transfer-Encoding` (nor `Connection: close`): the body ends when the
///   server closes the connection.
/// - `GET /events/COUNT/GAP_MS`: `text/event-stream`, chunked, one chunk
///   `data: event K\n\n` per event, `GAP_MS` apart.
/// - `GET /gated`: chunked; `piece 0\n` at once, then one more `piece K\n`
///   per [`open_gate`](Self::open_gate), and the last chunk after
///   [`finish_gated`](Self::finish_gated). One gated answer at a time.
/// - `PUT` or `POST /upload` (`Content-Length` or chunked, any size):
///   `{"bytes":N,"pattern_ok":BOOL}`. Honours `Expect: 100-continue`.
/// - anything else: `404`.
pub struct StreamingBackend {
    pub addr: SocketAddr,
    pub name: String,
    counters: Arc<Counters>,
    gate: Arc<Gate>,
    _acceptor: Acceptor,
}

impl StreamingBackend {
    pub fn start(name: &str) -> StreamingBackend {
        let counters = Arc::new(Counters::default());
        let gate = Arc::new(Gate::default());
        let acceptor = {
            let (name, counters, gate) =
                (name.to_string(), Arc::clone(&counters), Arc::clone(&gate));
            Acceptor::start(Arc::clone(&counters), move |conn| {
                serve_keep_alive(conn, &name, &counters, |conn, request| {
                    streaming_answer(conn, &name, request, &gate)
                })
            })
        };
        StreamingBackend {
            addr: acceptor.addr,
            name: name.to_string(),
            counters,
            gate,
            _acceptor: acceptor,
        }
    }

    /// Lets exactly one more piece of the current `/gated` answer go.
    pub fn open_gate(&self) {
        self.gate.open();
    }

    /// Ends the current `/gated` answer (after any pieces already let go).
    pub fn finish_gated(&self) {
        self.gate.finish();
    }

    /// Client connections open right now.
    pub fn open_connections(&self) -> u64 {
        self.counters.open.load(Ordering::SeqCst)
    }

    /// Client connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.counters.accepted.load(Ordering::SeqCst)
    }

    /// Answers abandoned because a write failed (the client went away).
    pub fn closed_early(&self) -> u64 {
        self.counters.closed_early.load(Ordering::SeqCst)
    }

    /// Requests seen other than `GET /health`.
    pub fn requests(&self) -> u64 {
        self.counters.requests.load(Ordering::SeqCst)
    }
}

impl Drop for StreamingBackend {
    fn drop(&mut self) {
        self.gate.stop();
    }
}

fn streaming_answer(conn: &mut Conn, name: &str, request: &Request, gate: &Gate) -> Outcome {
    let path = request.path();
    let method = request.method.as_str();
    if matches!(method, "PUT" | "POST") && path == "/upload" {
        return upload(conn, name, request);
    }
    if !conn.discard_body(request.framing) {
        return Outcome::Gone;
    }
    if method == "GET" {
        if let Some(n) = number_after(path, "/bytes/") {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nX-Node: {name}\r\nContent-Length: {n}\r\n\r\n"
            );
            return sent(conn.send(head.as_bytes()) && send_pattern(conn, n, false));
        }
        if let Some(n) = number_after(path, "/chunked/") {
            let head = chunked_head(name, "application/octet-stream");
            let done = conn.send(head.as_bytes()) && send_pattern(conn, n, true);
            return sent(done && conn.send(b"0\r\n\r\n"));
        }
        if let Some(n) = number_after(path, "/close/") {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nX-Node: {name}\r\n\r\n"
            );
            if conn.send(head.as_bytes()) && send_pattern(conn, n, false) {
                return Outcome::Close;
            }
            return Outcome::WriteFailed;
        }
        if let Some((count, gap)) = path
            .strip_prefix("/events/")
            .and_then(|rest| rest.split_once('/'))
            .and_then(|(c, g)| Some((c.parse::<u64>().ok()?, g.parse::<u64>().ok()?)))
        {
            return events(conn, name, count, Duration::from_millis(gap));
        }
        if path == "/gated" {
            return gated(conn, name, gate);
        }
    }
    sent(conn.send(&message(
        "HTTP/1.1 404 Not Found",
        &[("Content-Type", "text/plain"), ("X-Node", name)],
        b"not found\n",
        request.is_head(),
    )))
}

/// `N` from a path `{prefix}N`.
fn number_after(path: &str, prefix: &str) -> Option<u64> {
    path.strip_prefix(prefix)?.parse().ok()
}

fn chunked_head(name: &str, content_type: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nX-Node: {name}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
}

/// One chunk of a chunked body.
fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// Writes `n` pattern bytes: 64 KiB writes, or 16 KiB chunks if `chunked`.
fn send_pattern(conn: &mut Conn, n: u64, chunked: bool) -> bool {
    let piece = if chunked { CHUNK_PIECE } else { WRITE_PIECE } as u64;
    let mut offset = 0;
    while offset < n {
        let len = (n - offset).min(piece) as usize;
        let data = pattern(offset, len);
        let written = if chunked {
            conn.send(&chunk(&data))
        } else {
            conn.send(&data)
        };
        if !written {
            return false;
        }
        offset += len as u64;
    }
    true
}

fn events(conn: &mut Conn, name: &str, count: u64, gap: Duration) -> Outcome {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Node: {name}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    if !conn.send(head.as_bytes()) {
        return Outcome::WriteFailed;
    }
    for k in 0..count {
        if k > 0 {
            // The backend's own pacing, not test synchronisation.
            thread::sleep(gap);
        }
        if !conn.send(&chunk(format!("data: event {k}\n\n").as_bytes())) {
            return Outcome::WriteFailed;
        }
    }
    sent(conn.send(b"0\r\n\r\n"))
}

fn gated(conn: &mut Conn, name: &str, gate: &Gate) -> Outcome {
    let head = chunked_head(name, "text/plain");
    if !(conn.send(head.as_bytes()) && conn.send(&chunk(b"piece 0\n"))) {
        return Outcome::WriteFailed;
    }
    let mut k = 1;
    loop {
        match gate.next() {
            GateStep::Piece => {
                if !conn.send(&chunk(format!("piece {k}\n").as_bytes())) {
                    return Outcome::WriteFailed;
                }
                k += 1;
            }
            GateStep::Finish => return sent(conn.send(b"0\r\n\r\n")),
            GateStep::Stop => return Outcome::Gone,
        }
    }
}

fn upload(conn: &mut Conn, name: &str, request: &Request) -> Outcome {
    if request.expects_continue && !conn.send(b"HTTP/1.1 100 Continue\r\n\r\n") {
        return Outcome::WriteFailed;
    }
    let mut seen = 0u64;
    let mut pattern_ok = true;
    let read = conn.read_body(request.framing, &mut |data: &[u8]| {
        pattern_ok &= check_pattern(seen, data);
        seen += data.len() as u64;
    });
    if read.is_none() {
        return Outcome::Gone;
    }
    let body = format!(r#"{{"bytes":{seen},"pattern_ok":{pattern_ok}}}"#);
    sent(conn.send(&message(
        "HTTP/1.1 200 OK",
        &[("Content-Type", "application/json"), ("X-Node", name)],
        body.as_bytes(),
        false,
    )))
}

/// A gate that the test opens one piece at a time.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    turn: Condvar,
}

#[derive(Default)]
struct GateState {
    permits: u64,
    finished: bool,
    stopped: bool,
}

enum GateStep {
    Piece,
    Finish,
    Stop,
}

impl Gate {
    fn change(&self, f: impl FnOnce(&mut GateState)) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state);
        self.turn.notify_all();
    }

    fn open(&self) {
        self.change(|s| s.permits += 1);
    }

    fn finish(&self) {
        self.change(|s| s.finished = true);
    }

    fn stop(&self) {
        self.change(|s| s.stopped = true);
    }

    /// Waits for the next thing the test allows. Taking the finish resets the
    /// gate for the next `/gated` answer.
    fn next(&self) -> GateStep {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if state.stopped {
                return GateStep::Stop;
            }
            if state.permits > 0 {
                state.permits -= 1;
                return GateStep::Piece;
            }
            if state.finished {
                state.finished = false;
                return GateStep::Finish;
            }
            state = self.turn.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

// ---------------------------------------------------------------------------
// 2. Stray bytes.

/// Imitates a broken server that writes a second, unasked-for response after
/// answering `HEAD` (as if it had sent a body after all). Provokes the relay
/// to notice a connection out of step and not hand the forged answer to the
/// next client. Every other request gets `200` with the request target as
/// its body (`/account/balance` answers `/account/balance`).
pub struct StrayBytesBackend {
    pub addr: SocketAddr,
    pub name: String,
    counters: Arc<Counters>,
    _acceptor: Acceptor,
}

impl StrayBytesBackend {
    pub fn start(name: &str) -> StrayBytesBackend {
        let counters = Arc::new(Counters::default());
        let acceptor = {
            let (name, counters) = (name.to_string(), Arc::clone(&counters));
            Acceptor::start(Arc::clone(&counters), move |conn| {
                serve_keep_alive(conn, &name, &counters, |conn, request| {
                    stray_answer(conn, &name, request)
                })
            })
        };
        StrayBytesBackend {
            addr: acceptor.addr,
            name: name.to_string(),
            counters,
            _acceptor: acceptor,
        }
    }

    /// Requests seen other than `GET /health`.
    pub fn requests(&self) -> u64 {
        self.counters.requests.load(Ordering::SeqCst)
    }

    /// Client connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.counters.accepted.load(Ordering::SeqCst)
    }
}

fn stray_answer(conn: &mut Conn, name: &str, request: &Request) -> Outcome {
    if !conn.discard_body(request.framing) {
        return Outcome::Gone;
    }
    let mut bytes = message(
        "HTTP/1.1 200 OK",
        &[("Content-Type", "text/plain"), ("X-Node", name)],
        request.target.as_bytes(),
        request.is_head(),
    );
    if request.is_head() {
        // One write: the forged answer arrives with the real one.
        bytes.extend_from_slice(FORGED_RESPONSE);
    }
    sent(conn.send(&bytes))
}

// ---------------------------------------------------------------------------
// 3. WebSocket echo.

/// Imitates a WebSocket (RFC 6455) echo server: answers an upgrade with
/// `101`, then echoes text and binary frames, answers ping with pong and
/// close with close (then closes TCP). Provokes the relay to tunnel an
/// upgraded connection both ways. A request without `Upgrade: websocket`
/// gets a plain `200`; a bad upgrade (no key, version not 13) gets `400`.
pub struct WebSocketEchoBackend {
    pub addr: SocketAddr,
    pub name: String,
    counters: Arc<Counters>,
    _acceptor: Acceptor,
}

impl WebSocketEchoBackend {
    pub fn start(name: &str) -> WebSocketEchoBackend {
        let counters = Arc::new(Counters::default());
        let acceptor = {
            let (name, counters) = (name.to_string(), Arc::clone(&counters));
            Acceptor::start(Arc::clone(&counters), move |conn| {
                serve_keep_alive(conn, &name, &counters, |conn, request| {
                    websocket_answer(conn, &name, request, &counters)
                })
            })
        };
        WebSocketEchoBackend {
            addr: acceptor.addr,
            name: name.to_string(),
            counters,
            _acceptor: acceptor,
        }
    }

    /// Connections switched to WebSocket so far.
    pub fn upgrades(&self) -> u64 {
        self.counters.upgrades.load(Ordering::SeqCst)
    }

    /// Text and binary frames echoed so far.
    pub fn messages(&self) -> u64 {
        self.counters.messages.load(Ordering::SeqCst)
    }

    /// Client connections open right now.
    pub fn open_connections(&self) -> u64 {
        self.counters.open.load(Ordering::SeqCst)
    }

    /// Requests seen other than `GET /health`.
    pub fn requests(&self) -> u64 {
        self.counters.requests.load(Ordering::SeqCst)
    }
}

fn websocket_answer(
    conn: &mut Conn,
    name: &str,
    request: &Request,
    counters: &Counters,
) -> Outcome {
    if !conn.discard_body(request.framing) {
        return Outcome::Gone;
    }
    let wants_upgrade = request
        .header("upgrade")
        .is_some_and(|v| has_token(v, "websocket"));
    if !wants_upgrade {
        let body = format!("websocket echo {name}: send an Upgrade request\n");
        return sent(conn.send(&message(
            "HTTP/1.1 200 OK",
            &[("Content-Type", "text/plain"), ("X-Node", name)],
            body.as_bytes(),
            request.is_head(),
        )));
    }
    let key = request.header("sec-websocket-key").filter(|_| {
        request.method == "GET"
            && request.header("sec-websocket-version") == Some("13")
            && request
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("connection"))
                .any(|h| has_token(&h.value, "upgrade"))
    });
    let Some(key) = key else {
        let refusal = message(
            "HTTP/1.1 400 Bad Request",
            &[
                ("Content-Type", "text/plain"),
                ("Sec-WebSocket-Version", "13"),
            ],
            b"bad WebSocket upgrade\n",
            false,
        );
        return if conn.send(&refusal) {
            Outcome::Close
        } else {
            Outcome::WriteFailed
        };
    };
    let switch = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        websocket_accept(key.trim())
    );
    if !conn.send(switch.as_bytes()) {
        return Outcome::WriteFailed;
    }
    counters.upgrades.fetch_add(1, Ordering::SeqCst);
    while let Some((first, payload)) = read_frame(conn) {
        let reply = match first & 0x0F {
            0..=2 => {
                counters.messages.fetch_add(1, Ordering::SeqCst);
                encode_frame(first & 0x8F, &payload, None)
            }
            9 => encode_frame(0x80 | 10, &payload, None),
            10 => continue,
            8 => {
                if conn.send(&encode_frame(0x80 | 8, &payload, None)) {
                    conn.close_gently();
                }
                return Outcome::Gone;
            }
            _ => return Outcome::Gone,
        };
        if !conn.send(&reply) {
            return Outcome::WriteFailed;
        }
    }
    Outcome::Gone
}

/// A WebSocket client for tests: handshake, masked frames, clean close.
/// Every wait is bounded by [`SOCKET_TIMEOUT`]; every failure panics.
pub struct WsClient {
    conn: Conn,
    rng: u64,
}

impl WsClient {
    /// Upgrades `GET path` at `addr`; panics unless the answer is `101` with
    /// the right `Sec-WebSocket-Accept`. Bytes after the `101` head are kept.
    pub fn connect(addr: SocketAddr, path: &str) -> WsClient {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream
            .set_read_timeout(Some(SOCKET_TIMEOUT))
            .expect("read timeout");
        stream
            .set_write_timeout(Some(SOCKET_TIMEOUT))
            .expect("write timeout");
        stream.set_nodelay(true).expect("nodelay");
        let mut client = WsClient {
            conn: Conn::new(stream),
            rng: seed(),
        };
        let key_bytes: Vec<u8> = (0..16).map(|_| client.random() as u8).collect();
        let key = base64(&key_bytes);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        client
            .conn
            .stream
            .write_all(request.as_bytes())
            .expect("send upgrade request");
        let end = loop {
            if let Some(i) = client.conn.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(
                client.conn.fill(),
                "no complete answer to the upgrade request: {:?}",
                String::from_utf8_lossy(&client.conn.buf)
            );
        };
        let head = String::from_utf8_lossy(&client.conn.buf[..end]).into_owned();
        client.conn.buf.drain(..end);
        let status = head.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok());
        assert_eq!(status, Some(101), "upgrade refused:\n{head}");
        let accept = head.split("\r\n").find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-accept")
                .then(|| value.trim().to_string())
        });
        let expected = websocket_accept(&key);
        assert_eq!(
            accept.as_deref(),
            Some(expected.as_str()),
            "wrong Sec-WebSocket-Accept (key {key}) in:\n{head}"
        );
        client
    }

    /// Sends one masked frame with FIN set; any payload length.
    pub fn send(&mut self, opcode: u8, payload: &[u8]) {
        let mask = (self.random() as u32).to_be_bytes();
        let frame = encode_frame(0x80 | (opcode & 0x0F), payload, Some(mask));
        self.conn.stream.write_all(&frame).expect("send frame");
    }

    /// The next frame: opcode and payload.
    pub fn recv(&mut self) -> (u8, Vec<u8>) {
        let (first, payload) = read_frame(&mut self.conn).unwrap_or_else(|| {
            panic!("no WebSocket frame within {SOCKET_TIMEOUT:?} (or the connection closed)")
        });
        (first & 0x0F, payload)
    }

    /// Sends close (status 1000), expects close back, then EOF; then shuts
    /// the socket.
    pub fn close(&mut self) {
        let code = 1000u16.to_be_bytes();
        self.send(8, &code);
        let (opcode, payload) = self.recv();
        assert_eq!(
            opcode, 8,
            "expected a close frame, got opcode {opcode}: {payload:?}"
        );
        assert_eq!(
            payload, code,
            "the close frame carries our status code back"
        );
        assert!(
            self.conn.buf.is_empty(),
            "bytes after the close frame: {:?}",
            self.conn.buf
        );
        let mut rest = [0u8; 64];
        match self.conn.stream.read(&mut rest) {
            Ok(0) => {}
            Ok(n) => panic!("bytes after the close frame: {:?}", &rest[..n]),
            Err(e) => panic!("expected EOF after the close frame, got {e}"),
        }
        // Done: let the server's side end now rather than at its linger timeout.
        let _ = self.conn.stream.shutdown(Shutdown::Both);
    }

    /// xorshift64: mask keys and the handshake key.
    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

/// A different nonzero seed for every client.
fn seed() -> u64 {
    static CLIENTS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = CLIENTS.fetch_add(1, Ordering::SeqCst);
    (nanos ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1
}

/// A frame with first byte `first` (FIN, opcode), masked if `mask` is given.
fn encode_frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(first);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// One frame: its first byte (FIN, opcode) and unmasked payload; `None` if
/// the connection ended, timed out, or announced an absurd length.
fn read_frame(conn: &mut Conn) -> Option<(u8, Vec<u8>)> {
    let head = conn.take(2)?;
    let length = match head[1] & 0x7F {
        126 => u64::from(u16::from_be_bytes(conn.take(2)?.try_into().ok()?)),
        127 => u64::from_be_bytes(conn.take(8)?.try_into().ok()?),
        n => u64::from(n),
    };
    if length > MAX_FRAME {
        return None;
    }
    let mask = if head[1] & 0x80 != 0 {
        Some(conn.take(4)?)
    } else {
        None
    };
    let mut payload = conn.take(length as usize)?;
    if let Some(mask) = mask {
        for (b, k) in payload.iter_mut().zip(mask.iter().cycle()) {
            *b ^= k;
        }
    }
    Some((head[0], payload))
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub fn websocket_accept(key: &str) -> String {
    base64(&sha1(format!("{key}{WEBSOCKET_GUID}").as_bytes()))
}

/// Checks the SHA-1, base64 and accept computation against known answers,
/// including the RFC 6455 sample handshake. Call it from any test.
pub fn check_websocket_accept() {
    let hex = |bytes: [u8; 20]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(hex(sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    assert_eq!(
        hex(sha1(b"abc")),
        "a9993e364706816aba3e25717850c26c9cd0d89d"
    );
    assert_eq!(
        hex(sha1(
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
        )),
        "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
    );
    for (plain, coded) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(plain.as_bytes()), coded);
    }
    assert_eq!(
        websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

/// SHA-1 (FIPS 180-4), enough for the WebSocket handshake.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&(data.len() as u64).wrapping_mul(8).to_be_bytes());
    for block in message.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (word, bytes) in w.iter_mut().zip(block.chunks_exact(4)) {
            *word = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, &word) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let next = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(word);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = next;
        }
        for (state, add) in h.iter_mut().zip([a, b, c, d, e]) {
            *state = state.wrapping_add(add);
        }
    }
    let mut out = [0u8; 20];
    for (bytes, word) in out.chunks_exact_mut(4).zip(h) {
        bytes.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for group in data.chunks(3) {
        let byte = |i: usize| u32::from(group.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for k in 0..4 {
            if k <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// 4. Plain HTTP/1.0.

/// Imitates `python3 -m http.server`: HTTP/1.0 answers with `Content-Length`,
/// the connection closed after each one, `GET /` a small directory listing,
/// `GET /health` (and any other `GET`) `404 File not found`, and `PUT` or
/// `POST` of any path `200 received N bytes`. Provokes the relay to cope
/// with a backend that is not a bookrelay node: failing health checks, no
/// keep-alive, an older HTTP version. Not keep-alive, no `X-Node`.
pub struct PlainBackend {
    pub addr: SocketAddr,
    pub name: String,
    counters: Arc<Counters>,
    _acceptor: Acceptor,
}

impl PlainBackend {
    pub fn start(name: &str) -> PlainBackend {
        let counters = Arc::new(Counters::default());
        let acceptor = {
            let (name, counters) = (name.to_string(), Arc::clone(&counters));
            Acceptor::start(Arc::clone(&counters), move |conn| {
                serve_plain(conn, &name, &counters)
            })
        };
        PlainBackend {
            addr: acceptor.addr,
            name: name.to_string(),
            counters,
            _acceptor: acceptor,
        }
    }

    /// Every request seen, `/health` included.
    pub fn requests(&self) -> u64 {
        self.counters.requests.load(Ordering::SeqCst)
    }

    /// Requests for `/health` seen (any method).
    pub fn health_requests(&self) -> u64 {
        self.counters.health.load(Ordering::SeqCst)
    }

    /// Client connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.counters.accepted.load(Ordering::SeqCst)
    }
}

fn serve_plain(mut conn: Conn, name: &str, counters: &Counters) {
    let Some(request) = conn.next_request() else {
        return;
    };
    counters.requests.fetch_add(1, Ordering::SeqCst);
    if request.path() == "/health" {
        counters.health.fetch_add(1, Ordering::SeqCst);
    }
    let head = request.is_head();
    let answer = match request.method.as_str() {
        "PUT" | "POST" => {
            let Some(n) = conn.read_body(request.framing, &mut |_| {}) else {
                return;
            };
            python_answer("200 OK", "text/plain", format!("received {n} bytes"), false)
        }
        "GET" | "HEAD" => {
            if !conn.discard_body(request.framing) {
                return;
            }
            if request.path() == "/" {
                let listing = format!(
                    "<!DOCTYPE HTML>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Directory listing for /</title>\n</head>\n<body>\n<h1>Directory listing for /</h1>\n<hr>\n<ul>\n<li><a href=\"{name}.txt\">{name}.txt</a></li>\n</ul>\n<hr>\n</body>\n</html>\n"
                );
                python_answer("200 OK", "text/html; charset=utf-8", listing, head)
            } else {
                python_error(404, "File not found", "Nothing matches the given URI", head)
            }
        }
        other => python_error(
            501,
            &format!("Unsupported method ({other:?})"),
            "Server does not support this operation",
            head,
        ),
    };
    if conn.send(&answer) {
        conn.close_gently();
    }
}

fn python_answer(status: &str, content_type: &str, body: String, head: bool) -> Vec<u8> {
    message(
        &format!("HTTP/1.0 {status}"),
        &[
            ("Server", "SimpleHTTP/0.6 Python/3.12.3"),
            ("Content-Type", content_type),
        ],
        body.as_bytes(),
        head,
    )
}

/// An error page as `http.server` writes it (with `Connection: close`).
fn python_error(code: u16, reason: &str, explanation: &str, head: bool) -> Vec<u8> {
    let body = format!(
        "<!DOCTYPE HTML>\n<html lang=\"en\">\n    <head>\n        <meta charset=\"utf-8\">\n        <title>Error response</title>\n    </head>\n    <body>\n        <h1>Error response</h1>\n        <p>Error code: {code}</p>\n        <p>Message: {reason}.</p>\n        <p>Error code explanation: {code} - {explanation}.</p>\n    </body>\n</html>\n"
    );
    message(
        &format!("HTTP/1.0 {code} {reason}"),
        &[
            ("Server", "SimpleHTTP/0.6 Python/3.12.3"),
            ("Connection", "close"),
            ("Content-Type", "text/html;charset=utf-8"),
        ],
        body.as_bytes(),
        head,
    )
}

// ---------------------------------------------------------------------------
// Shared machinery.

/// Counters every backend keeps; each exposes the ones that mean something.
#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    open: AtomicU64,
    requests: AtomicU64,
    health: AtomicU64,
    closed_early: AtomicU64,
    upgrades: AtomicU64,
    messages: AtomicU64,
}

/// Counts a connection as open while it lives.
struct OpenGuard(Arc<Counters>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A listener on `127.0.0.1:0` and its accept thread, which ends when this
/// is dropped.
struct Acceptor {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Acceptor {
    fn start(counters: Arc<Counters>, serve: impl Fn(Conn) + Send + Sync + 'static) -> Acceptor {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a backend");
        let addr = listener.local_addr().expect("backend address");
        let stop = Arc::new(AtomicBool::new(false));
        let serve = Arc::new(serve);
        let stopping = Arc::clone(&stop);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else {
                    // Out of descriptors, say: back off instead of spinning.
                    thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let timeouts = stream
                    .set_read_timeout(Some(SOCKET_TIMEOUT))
                    .and_then(|()| stream.set_write_timeout(Some(SOCKET_TIMEOUT)));
                if timeouts.is_err() {
                    continue;
                }
                let _ = stream.set_nodelay(true);
                counters.accepted.fetch_add(1, Ordering::SeqCst);
                counters.open.fetch_add(1, Ordering::SeqCst);
                let guard = OpenGuard(Arc::clone(&counters));
                let serve = Arc::clone(&serve);
                thread::spawn(move || {
                    let _guard = guard;
                    serve(Conn::new(stream));
                });
            }
        });
        Acceptor { addr, stop }
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept thread so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// How an answer left the connection.
enum Outcome {
    /// Answered; another request may follow.
    Answered,
    /// Answered; now close (a close-delimited body, a refusal).
    Close,
    /// The connection is over: the peer went away, or it was taken over.
    Gone,
    /// A write failed mid-answer: the client went away.
    WriteFailed,
}

fn sent(written: bool) -> Outcome {
    if written {
        Outcome::Answered
    } else {
        Outcome::WriteFailed
    }
}

/// Requests on one keep-alive connection: `GET /health` answered here, every
/// other request counted and given to `answer`.
fn serve_keep_alive(
    mut conn: Conn,
    name: &str,
    counters: &Counters,
    mut answer: impl FnMut(&mut Conn, &Request) -> Outcome,
) {
    while let Some(request) = conn.next_request() {
        let outcome = if request.method == "GET" && request.path() == "/health" {
            counters.health.fetch_add(1, Ordering::SeqCst);
            if conn.discard_body(request.framing) && conn.send(&health_reply(name)) {
                Outcome::Answered
            } else {
                Outcome::Gone
            }
        } else {
            counters.requests.fetch_add(1, Ordering::SeqCst);
            answer(&mut conn, &request)
        };
        match outcome {
            Outcome::Answered if request.keep_alive => {}
            Outcome::Answered | Outcome::Close => {
                conn.close_gently();
                return;
            }
            Outcome::Gone => return,
            Outcome::WriteFailed => {
                counters.closed_early.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
    }
}

fn health_reply(name: &str) -> Vec<u8> {
    let body = format!(r#"{{"node":"{name}","status":"ok"}}"#);
    message(
        "HTTP/1.1 200 OK",
        &[("Content-Type", "application/json"), ("X-Node", name)],
        body.as_bytes(),
        false,
    )
}

/// A whole answer with `Content-Length`; the body left out after a `HEAD`.
fn message(status_line: &str, headers: &[(&str, &str)], body: &[u8], head: bool) -> Vec<u8> {
    let mut text = format!("{status_line}\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = text.into_bytes();
    if !head {
        bytes.extend_from_slice(body);
    }
    bytes
}

/// One connection and the input read but not yet used.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads more input; false on EOF, timeout or error.
    fn fill(&mut self) -> bool {
        let mut piece = vec![0u8; READ_PIECE];
        loop {
            match self.stream.read(&mut piece) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&piece[..n]);
                    return true;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// The next request head; `None` when the peer is gone or sent garbage.
    fn next_request(&mut self) -> Option<Request> {
        loop {
            match parse_request_head(&self.buf) {
                Ok(Status::Complete((request, used))) => {
                    self.buf.drain(..used);
                    return Some(request);
                }
                Ok(Status::Partial) => {
                    if !self.fill() {
                        return None;
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Exactly `n` bytes.
    fn take(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill() {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    /// One line without its `\n` or `\r\n`.
    fn read_line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Some(line);
            }
            if self.buf.len() > MAX_LINE || !self.fill() {
                return None;
            }
        }
    }

    /// Feeds a request body to `sink` piece by piece; its length, or `None`
    /// if the connection ended first or the chunking is broken.
    fn read_body(&mut self, framing: Framing, sink: &mut dyn FnMut(&[u8])) -> Option<u64> {
        match framing {
            // A request is never framed by close.
            Framing::Empty | Framing::UntilClose => Some(0),
            Framing::Length(n) => {
                self.stream_exact(n, sink)?;
                Some(n)
            }
            Framing::Chunked => {
                let mut total = 0;
                loop {
                    let line = self.read_line()?;
                    let text = std::str::from_utf8(&line).ok()?;
                    let digits = text.split(';').next()?.trim();
                    let size = u64::from_str_radix(digits, 16).ok()?;
                    if size == 0 {
                        // Trailers, up to the blank line.
                        while !self.read_line()?.is_empty() {}
                        return Some(total);
                    }
                    self.stream_exact(size, sink)?;
                    total += size;
                    if !self.read_line()?.is_empty() {
                        return None;
                    }
                }
            }
        }
    }

    fn discard_body(&mut self, framing: Framing) -> bool {
        self.read_body(framing, &mut |_| {}).is_some()
    }

    fn stream_exact(&mut self, mut n: u64, sink: &mut dyn FnMut(&[u8])) -> Option<()> {
        while n > 0 {
            if self.buf.is_empty() && !self.fill() {
                return None;
            }
            let take = (self.buf.len() as u64).min(n) as usize;
            sink(&self.buf[..take]);
            self.buf.drain(..take);
            n -= take as u64;
        }
        Some(())
    }

    /// Closes the way a server should after a last answer: FIN first, then
    /// whatever the peer still sends is read and dropped for a moment, so the
    /// kernel does not answer it with a reset that destroys the answer in
    /// flight.
    fn close_gently(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let _ = self.stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < 1 << 20 {
            match self.stream.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    }
}
