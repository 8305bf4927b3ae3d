//! The client side of HTTP/1.1: one connection to a server (a node, any
//! backend), as the relay's forwarder, its health checks and the examples'
//! client all use it.
//!
//! - [`write_request_head`]: a request line and headers, framed for the body
//!   that follows, written one way for all three users.
//! - [`Upstream::read_head`]: a response head by a deadline, skipping a
//!   bounded number of interim `1xx` answers (never `101`, which ends HTTP on
//!   the connection).
//! - [`BodyReader`]: the response body by its framing (RFC 9112 §6.3),
//!   handed out piece by piece from the connection's own buffer, so a body of
//!   any size passes through a fixed amount of memory.
//!
//! Errors here describe the *response* side ("the response head …"): the
//! same parser serves requests, whose sentences speak to a person typing into
//! `nc`, while these end up in a relay's 502 or a health log line.

use super::body::{BodyFraming, Step};
use super::buffer::InputBuffer;
use super::parse::{parse_response_head, Error, Status, MAX_RESPONSE_HEAD_BYTES};
use super::{human_bytes, Framing, ResponseHead};
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Interim answers (`100 Continue`, `103 Early Hints`) skipped before the
/// final one; more than this is a server talking nonsense, not a real one.
pub const MAX_INTERIM_RESPONSES: usize = 8;

/// The room a body read asks for: large pieces mean few system calls per
/// byte for a large download, and this is the most a streamed body holds in
/// the connection's buffer at once (given back when the body has passed). A
/// 300 MiB download through the relay ran at 897–1,153 MiB/s with 256 KiB
/// against 792–881 with 64 KiB (3 interleaved rounds, nginx behind it).
pub const BODY_READ_BYTES: usize = 256 * 1024;

/// How a request body is framed toward the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestBody {
    /// No body and no framing header.
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`: the sender encodes each piece with
    /// [`write_chunk`] and ends with [`LAST_CHUNK`].
    Chunked,
}

/// Ends a chunked body (no trailers).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends a request line and headers, then the framing header for `body`
/// and the blank line. `headers` must not carry framing headers of their own.
pub fn write_request_head<'a>(
    out: &mut Vec<u8>,
    method: &str,
    target: &str,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    body: RequestBody,
) {
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match body {
        RequestBody::None => {}
        RequestBody::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        RequestBody::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// The framing a request with `body_len` bytes needs: methods that carry a
/// body announce even an empty one, so the server never waits for it.
pub fn length_framing(method: &str, body_len: usize) -> RequestBody {
    if body_len > 0 || matches!(method, "POST" | "PUT" | "PATCH") {
        RequestBody::Length(body_len as u64)
    } else {
        RequestBody::None
    }
}

/// Appends one chunk of a chunked body: size line, data, line end.
pub fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return; // an empty chunk would end the body
    }
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Why a response could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The server closed or reset the connection; `answered` says whether
    /// any byte of an answer had arrived.
    Closed { answered: bool, reset: bool },
    /// Nothing (more) arrived within the time allowed.
    TimedOut,
    /// The bytes are not HTTP, or the body's framing broke.
    Malformed(String),
    /// The caller's hook before a wait said to stop (the relay's client left).
    Stopped,
}

impl ReadError {
    fn from_io(error: &io::Error, answered: bool) -> ReadError {
        match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ReadError::TimedOut,
            kind => ReadError::Closed {
                answered,
                reset: matches!(
                    kind,
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::BrokenPipe
                ),
            },
        }
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Closed {
                answered: false, ..
            } => f.write_str("the connection closed before any answer"),
            ReadError::Closed { answered: true, .. } => {
                f.write_str("the connection closed in the middle of the answer")
            }
            ReadError::TimedOut => f.write_str("no answer in time"),
            ReadError::Malformed(why) => f.write_str(why),
            ReadError::Stopped => f.write_str("the reader stopped"),
        }
    }
}

/// A parse error as it reads when the server, not a client, sent the bytes.
pub fn response_error_sentence(error: Error) -> String {
    match error {
        Error::StatusLine => "the response's status line is not 'HTTP/1.x NNN reason'".into(),
        Error::HeadTooLarge => format!(
            "the response head is larger than {}",
            human_bytes(MAX_RESPONSE_HEAD_BYTES as u64)
        ),
        Error::TooManyHeaders => "the response carries too many header lines".into(),
        Error::HeaderName | Error::HeaderValue | Error::ObsFold => {
            "the response has a malformed header line".into()
        }
        Error::ContentLength | Error::ConflictingLength => {
            "the response's Content-Length is not one decimal number".into()
        }
        Error::LengthAndChunked => {
            "the response carries both Content-Length and Transfer-Encoding".into()
        }
        Error::ChunkSize | Error::ChunkEnd => "the response's chunked body is malformed".into(),
        other => format!(
            "the response is malformed ({})",
            super::Error::from(other).sentence()
        ),
    }
}

/// One connection to a server, with the bytes read from it and not yet used.
pub struct Upstream {
    pub stream: TcpStream,
    pub input: InputBuffer,
    /// The read timeout set on the socket, to skip redundant system calls.
    read_timeout: Option<Duration>,
    /// Whether the socket is non-blocking: parked in a pool, or just looked
    /// at by [`Upstream::peek_now`]. The next send or wait makes it blocking.
    nonblocking: bool,
}

/// What a look at a connection, without waiting and without reading, finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peek {
    /// Open, with nothing to read.
    Quiet,
    /// The server has sent bytes.
    Data,
    /// The server closed the connection, or it failed.
    Closed,
}

impl Upstream {
    /// Connects to `addr` within `timeout`, with Nagle's algorithm off (a
    /// request goes out in one write and waits for its answer).
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Upstream> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(timeout.max(Duration::from_secs(1))))?;
        Ok(Upstream {
            stream,
            input: InputBuffer::new(),
            read_timeout: None,
            nonblocking: false,
        })
    }

    /// Sets how long one read may wait (skipped when unchanged). Every wait
    /// for the server starts here, so this also makes the socket blocking.
    pub fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.set_blocking()?;
        let timeout = timeout.max(Duration::from_millis(1));
        if self.read_timeout != Some(timeout) {
            self.stream.set_read_timeout(Some(timeout))?;
            self.read_timeout = Some(timeout);
        }
        Ok(())
    }

    /// Reads the final response head within `timeout`, skipping interim
    /// `1xx` answers, and consumes it: what stays in [`Upstream::input`] is
    /// body. `to_head` says the request was `HEAD` (no body, whatever the
    /// head says).
    pub fn read_head(
        &mut self,
        to_head: bool,
        timeout: Duration,
    ) -> Result<ResponseHead, ReadError> {
        let deadline = Instant::now() + timeout;
        // The first wait uses `timeout` as it is, so a connection that keeps
        // the same timeout across requests costs no system call to set it.
        let mut wait = timeout;
        let mut interim = 0;
        loop {
            match parse_response_head(self.input.data(), to_head) {
                Ok(Status::Complete((head, used)))
                    if (100..200).contains(&head.status) && head.status != 101 =>
                {
                    interim += 1;
                    if interim > MAX_INTERIM_RESPONSES {
                        return Err(ReadError::Malformed(format!(
                            "the server sent more than {MAX_INTERIM_RESPONSES} interim 1xx answers"
                        )));
                    }
                    self.input.consume(used);
                    continue;
                }
                Ok(Status::Complete((head, used))) => {
                    self.input.consume(used);
                    return Ok(head);
                }
                Ok(Status::Partial) => {}
                Err(error) => return Err(ReadError::Malformed(response_error_sentence(error))),
            }
            let answered = interim > 0 || !self.input.is_empty();
            if wait.is_zero() {
                return Err(ReadError::TimedOut);
            }
            self.set_read_timeout(wait)
                .map_err(|e| ReadError::from_io(&e, answered))?;
            match self.input.read_from(&mut self.stream) {
                Ok(0) => {
                    return Err(ReadError::Closed {
                        answered,
                        reset: false,
                    })
                }
                Ok(_) => {}
                Err(error) => return Err(ReadError::from_io(&error, answered)),
            }
            wait = deadline.saturating_duration_since(Instant::now());
        }
    }

    /// Writes all of `bytes` to the server.
    ///
    /// On a socket left non-blocking (just taken from a pool) the first write
    /// goes out as it is: a request head almost always fits the socket's
    /// buffer, and the switch back to blocking then happens while the server
    /// is already working on the request, not before.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut rest = bytes;
        if self.nonblocking {
            match self.stream.write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
            self.set_blocking()?;
        }
        self.stream.write_all(rest)
    }

    /// Looks at the connection without waiting or consuming anything. Leaves
    /// the socket non-blocking, so that a look at a parked connection costs
    /// one system call; the next send or wait makes it blocking again.
    pub fn peek_now(&mut self) -> Peek {
        if !self.nonblocking {
            if self.stream.set_nonblocking(true).is_err() {
                return Peek::Closed;
            }
            self.nonblocking = true;
        }
        match self.stream.peek(&mut [0u8; 1]) {
            Ok(0) => Peek::Closed,
            Ok(_) => Peek::Data,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Peek::Quiet,
            Err(_) => Peek::Closed,
        }
    }

    /// Makes the socket non-blocking while it idles (in a pool), so the
    /// check before its reuse, [`Upstream::peek_now`], is one system call.
    pub fn park(&mut self) -> io::Result<()> {
        if !self.nonblocking {
            self.stream.set_nonblocking(true)?;
            self.nonblocking = true;
        }
        Ok(())
    }

    fn set_blocking(&mut self) -> io::Result<()> {
        if self.nonblocking {
            self.stream.set_nonblocking(false)?;
            self.nonblocking = false;
        }
        Ok(())
    }

    /// Whether the connection can carry another exchange: nothing left
    /// unread, and buffers given back to their idle size.
    pub fn settle(&mut self) -> bool {
        self.input.shrink();
        self.input.is_empty()
    }
}

/// A response body read by its framing, one piece at a time.
///
/// Each piece is a slice of the connection's own buffer, valid until the
/// next call; nothing of the body is kept, so its size costs no memory.
#[derive(Debug)]
pub struct BodyReader {
    framing: BodyFraming,
    /// The longest silence allowed between two pieces.
    silence: Duration,
}

impl BodyReader {
    /// A reader for the body that `framing` announces; `silence` bounds the
    /// wait for each piece.
    pub fn new(framing: Framing, silence: Duration) -> BodyReader {
        let framing = match framing {
            Framing::Empty => BodyFraming::empty(),
            Framing::Length(n) => BodyFraming::length(n),
            Framing::Chunked => BodyFraming::chunked(u64::MAX),
            Framing::UntilClose => BodyFraming::until_close(),
        };
        BodyReader { framing, silence }
    }

    /// Whether the whole body has been handed out.
    pub fn is_done(&self) -> bool {
        self.framing.is_done()
    }

    /// Whether the body ends only when the server closes (so the connection
    /// can never be reused).
    pub fn until_close(&self) -> bool {
        self.framing.ends_at_close()
    }

    /// The next piece of the body, or `None` once it is complete.
    /// `before_wait` runs whenever the next piece is not buffered yet, just
    /// before waiting for the server: the relay sends the client what it has
    /// so far (so each event of a stream arrives at once); `false` stops.
    pub fn next_piece<'a>(
        &mut self,
        upstream: &'a mut Upstream,
        before_wait: &mut impl FnMut() -> bool,
    ) -> Result<Option<&'a [u8]>, ReadError> {
        loop {
            let step = self
                .framing
                .next(&mut upstream.input)
                .map_err(|e| ReadError::Malformed(response_error_sentence(e)))?;
            match step {
                Step::Data(n) => return Ok(Some(&upstream.input.data()[..n])),
                Step::End => return Ok(None),
                Step::NeedMore => {}
            }
            if !before_wait() {
                return Err(ReadError::Stopped);
            }
            upstream
                .set_read_timeout(self.silence)
                .map_err(|e| ReadError::from_io(&e, true))?;
            match upstream
                .input
                .read_with_room(&mut upstream.stream, BODY_READ_BYTES)
            {
                Ok(0) if self.framing.end_of_input() => return Ok(None),
                Ok(0) => {
                    return Err(ReadError::Closed {
                        answered: true,
                        reset: false,
                    })
                }
                Ok(_) => {}
                Err(error) => return Err(ReadError::from_io(&error, true)),
            }
        }
    }

    /// The rest of the body in one `Vec`, refused past `limit` bytes (small
    /// answers: health checks, the examples' client).
    pub fn read_to_vec(
        &mut self,
        upstream: &mut Upstream,
        limit: u64,
    ) -> Result<Vec<u8>, ReadError> {
        let mut body = Vec::new();
        while let Some(piece) = self.next_piece(upstream, &mut || true)? {
            if body.len() as u64 + piece.len() as u64 > limit {
                return Err(ReadError::Malformed(format!(
                    "the response body is larger than {}",
                    human_bytes(limit)
                )));
            }
            body.extend_from_slice(piece);
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;
    use std::thread;

    /// A server that sends `answer` in the given pieces, each after the
    /// client's request arrived, and returns what it received.
    fn serve(pieces: Vec<&'static [u8]>) -> (SocketAddr, thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handle = thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut seen = Vec::new();
            let mut chunk = [0u8; 1024];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut chunk).expect("read");
                assert!(n > 0);
                seen.extend_from_slice(&chunk[..n]);
            }
            for piece in pieces {
                stream.write_all(piece).expect("write");
            }
            seen
        });
        (addr, handle)
    }

    const WAIT: Duration = Duration::from_secs(10);

    fn exchange(pieces: Vec<&'static [u8]>, to_head: bool) -> (u16, Vec<u8>, Upstream) {
        let (addr, server) = serve(pieces);
        let mut upstream = Upstream::connect(addr, Duration::from_secs(5)).expect("connect");
        let mut head = Vec::new();
        write_request_head(
            &mut head,
            if to_head { "HEAD" } else { "GET" },
            "/x",
            [("Host", "t")],
            RequestBody::None,
        );
        upstream.send(&head).expect("send");
        let response = upstream.read_head(to_head, WAIT).expect("head");
        let body = BodyReader::new(response.framing, Duration::from_secs(5))
            .read_to_vec(&mut upstream, 1 << 20)
            .expect("body");
        let request = server.join().expect("server");
        assert!(request.starts_with(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n") || to_head);
        (response.status, body, upstream)
    }

    #[test]
    fn request_heads_carry_the_framing_of_their_body() {
        let mut out = Vec::new();
        write_request_head(
            &mut out,
            "POST",
            "/b",
            [("Host", "h"), ("X-A", "1")],
            RequestBody::Length(2),
        );
        assert_eq!(
            out,
            b"POST /b HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nContent-Length: 2\r\n\r\n"
        );
        assert_eq!(length_framing("POST", 0), RequestBody::Length(0));
        assert_eq!(length_framing("GET", 0), RequestBody::None);
        let mut chunk = Vec::new();
        write_chunk(&mut chunk, b"hello world");
        write_chunk(&mut chunk, b"");
        assert_eq!(chunk, b"b\r\nhello world\r\n");
    }

    #[test]
    fn bodies_are_read_by_length_chunks_or_close() {
        let (status, body, mut upstream) = exchange(
            vec![b"HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", b"lo"],
            false,
        );
        assert_eq!((status, body.as_slice()), (200, &b"hello"[..]));
        assert!(upstream.settle(), "nothing left over: reusable");

        let (_, body, _) = exchange(
            vec![
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
                b"2\r\nde\r\n0\r\n\r\n",
            ],
            false,
        );
        assert_eq!(body, b"abcde");

        let (_, body, _) = exchange(vec![b"HTTP/1.1 200 OK\r\n\r\nuntil ", b"close"], false);
        assert_eq!(body, b"until close");
    }

    #[test]
    fn bytes_beyond_the_framed_body_make_the_connection_unusable() {
        let (_, body, mut upstream) = exchange(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"],
            false,
        );
        assert_eq!(body, b"ok");
        assert!(!upstream.settle(), "stray bytes: not reusable");
    }

    #[test]
    fn a_head_answer_has_no_body_whatever_its_length_says() {
        let (status, body, mut upstream) = exchange(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n"],
            true,
        );
        assert_eq!((status, body.len()), (200, 0));
        assert!(upstream.settle());
    }

    #[test]
    fn a_large_body_is_handed_out_in_pieces_without_growing_the_buffer() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        const TOTAL: usize = 8 * 1024 * 1024;
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            stream
                .write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {TOTAL}\r\n\r\n").as_bytes())
                .expect("head");
            let block = vec![7u8; 256 * 1024];
            for _ in 0..TOTAL / block.len() {
                stream.write_all(&block).expect("body");
            }
        });
        let mut upstream = Upstream::connect(addr, Duration::from_secs(5)).expect("connect");
        let head = upstream.read_head(false, WAIT).expect("head");
        let mut reader = BodyReader::new(head.framing, Duration::from_secs(5));
        let (mut total, mut largest_buffer) = (0, 0);
        while let Some(piece) = reader
            .next_piece(&mut upstream, &mut || true)
            .expect("piece")
        {
            assert!(piece.iter().all(|&b| b == 7));
            total += piece.len();
            largest_buffer = largest_buffer.max(upstream.input.capacity());
        }
        server.join().expect("server");
        assert_eq!(total, TOTAL);
        assert!(
            largest_buffer <= 2 * BODY_READ_BYTES,
            "buffer grew to {largest_buffer} bytes"
        );
    }

    #[test]
    fn too_many_interim_answers_or_a_broken_chunk_are_malformed() {
        let (addr, _server) = serve(vec![b"HTTP/1.1 100 Continue\r\n\r\n"; 9]);
        let mut upstream = Upstream::connect(addr, Duration::from_secs(5)).expect("connect");
        upstream.send(b"GET / HTTP/1.1\r\n\r\n").expect("send");
        assert!(matches!(
            upstream.read_head(false, WAIT),
            Err(ReadError::Malformed(_))
        ));

        let (addr, _server) = serve(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ]);
        let mut upstream = Upstream::connect(addr, Duration::from_secs(5)).expect("connect");
        upstream.send(b"GET / HTTP/1.1\r\n\r\n").expect("send");
        let head = upstream.read_head(false, WAIT).expect("head");
        let error = BodyReader::new(head.framing, Duration::from_secs(5))
            .read_to_vec(&mut upstream, 100)
            .expect_err("malformed");
        assert_eq!(
            error.to_string(),
            "the response's chunked body is malformed"
        );
    }

    #[test]
    fn a_parked_connection_sends_all_of_a_large_write_and_then_waits_blocking() {
        // 8 MiB is far beyond any socket buffer: the first, non-blocking
        // write goes out only in part, and the rest must still follow.
        const SIZE: usize = 8 * 1024 * 1024;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut received = 0;
            let mut chunk = vec![0u8; 64 * 1024];
            while received < SIZE {
                let n = stream.read(&mut chunk).expect("read");
                assert!(n > 0, "the client stopped after {received} bytes");
                received += n;
            }
            stream
                .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .expect("answer");
            received
        });
        let mut upstream = Upstream::connect(addr, WAIT).expect("connect");
        upstream.park().expect("park");
        assert_eq!(upstream.peek_now(), Peek::Quiet);
        upstream.send(&vec![b'x'; SIZE]).expect("send");
        // The answer comes only after the server read everything: a wait
        // that is still non-blocking would fail at once instead.
        let head = upstream.read_head(false, WAIT).expect("head");
        assert_eq!(head.status, 204);
        assert_eq!(server.join().expect("server"), SIZE);
    }

    #[test]
    fn a_look_without_waiting_tells_quiet_from_data_from_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut upstream = Upstream::connect(addr, WAIT).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        assert_eq!(upstream.peek_now(), Peek::Quiet);
        server.write_all(b"H").expect("stray byte");
        // Wait (blocking) for the byte on a clone, then look again.
        let probe = upstream.stream.try_clone().expect("clone");
        probe.set_nonblocking(false).expect("blocking");
        assert_eq!(probe.peek(&mut [0u8; 1]).expect("peek"), 1);
        assert_eq!(upstream.peek_now(), Peek::Data, "looking consumes nothing");
        assert_eq!(upstream.peek_now(), Peek::Data);
        drop(server);
        let mut closed = Upstream::connect(addr, WAIT).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        drop(server);
        let probe = closed.stream.try_clone().expect("clone");
        assert_eq!(probe.peek(&mut [0u8; 1]).expect("eof"), 0);
        assert_eq!(closed.peek_now(), Peek::Closed);
    }
}
