//! One client socket: buffering, keep-alive, pipelining, half-close, timeouts.
//!
//! A connection is a loop: parse what is buffered; if a head is complete, read
//! its body by its framing, hand the request to a [`Handler`], queue the answer;
//! if not, flush queued answers and read more. Answers to pipelined requests are
//! therefore written together, in order, in one `write` when the client sends
//! them together. Nothing here waits on a timer to decide a message is over
//! (the seed's 200 ms bug): timeouts only bound how long a silent client may
//! hold the connection.
//!
//! The loop knows no routes and no balancing; nodes and the relay both plug in
//! through [`Handler`]. A node takes each request whole and answers it whole;
//! the relay streams both bodies through an [`Exchange`], which also turns
//! the connection into a byte tunnel after a `101 Switching Protocols`.

use super::body::{BodyFraming, Step};
use super::buffer::InputBuffer;
use super::parse::{parse_request_head, Error as ParseError, Status};
use super::write::{write_response, CONTINUE};
use super::{
    Error, Framing, Request, Response, Version, BODY_TIMEOUT, HEAD_TIMEOUT, IDLE_TIMEOUT,
    MAX_BODY_BYTES, MIN_BODY_BYTES_PER_SEC,
};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Answers queued for a client that pipelines without reading are written out
/// once they pass this size, so a client cannot make us buffer without bound.
const MAX_QUEUED_OUTPUT_BYTES: usize = 256 * 1024;

/// A client that stops reading our answers is given up after this long.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// After answering and half-closing, how long we drain what the client still
/// sends (an unread body, more pipelined requests). Closing with unread input
/// makes the kernel send a reset, which can destroy our answer on its way to
/// the client; draining first lets the answer arrive (nginx's lingering close).
/// Like nginx, we linger only when the client may still be sending: not after
/// the last request of a client that asked to close and sent nothing more.
pub(crate) const LINGER_TIMEOUT: Duration = Duration::from_secs(2);

/// The most we drain while lingering before closing anyway.
const LINGER_MAX_BYTES: usize = 2 * 1024 * 1024;

/// Queued output beyond which a streamed piece is written at once instead
/// of being gathered: it bounds what one streaming response holds in memory.
pub const STREAM_FLUSH_BYTES: usize = 64 * 1024;

/// What a connection needs from the server behind it.
pub trait Handler {
    /// Looks at a request whose client sent `Expect: 100-continue`, before its
    /// body is read. A response returned here is sent at once instead of
    /// `100 Continue` (e.g. 404, 415), the body is never read, and the
    /// connection closes after it.
    fn precheck(&self, _request: &Request) -> Option<Response> {
        None
    }

    /// The largest request body this server takes; an announced length over
    /// it is answered 413 before the body is read.
    fn max_body_bytes(&self) -> u64 {
        MAX_BODY_BYTES as u64
    }

    /// Answers one complete request.
    fn handle(&self, request: Request, peer: SocketAddr) -> Response;

    /// Called on every response before it is written, including the errors the
    /// connection makes itself (bad framing, timeouts), e.g. to add `X-Node`.
    fn decorate(&self, _response: &mut Response) {}

    /// Answers one request whose body is still unread. The default reads the
    /// whole body, asks [`Handler::handle`] and writes its answer; a handler
    /// that streams (the relay) reads and writes through `exchange` itself.
    fn exchange(&self, mut request: Request, peer: SocketAddr, exchange: &mut Exchange<'_>) {
        match exchange.read_body() {
            Some(body) => request.body = body,
            None => return,
        }
        let mut response = self.handle(request, peer);
        self.decorate(&mut response);
        exchange.respond(&response);
    }
}

/// A client connection as its server tracks it: the socket (the only
/// descriptor it costs; whoever must cut it shares this one), and whether it
/// is waiting for a request of which nothing has arrived yet, an idle
/// keep-alive connection or a new one that has sent nothing. A server at its
/// limit closes such a connection to make room for a new client.
#[derive(Debug)]
pub struct Client {
    pub stream: TcpStream,
    /// The address `accept` gave (asking the socket again is a system call).
    pub peer: SocketAddr,
    /// The socket came from a listener [`preset_listener`] succeeded on, so it
    /// has its options already.
    preset: bool,
    state: AtomicU8,
}

/// [`Client`] states: reading or answering a request.
const BUSY: u8 = 0;
/// Waiting for a request of which nothing has arrived (how it starts).
const WAITING: u8 = 1;
/// Taken away by the server while waiting: nothing more is served.
const CLAIMED: u8 = 2;

impl Client {
    /// A connection just accepted from `peer`: waiting for its first request.
    /// `preset`: it was accepted from a listener [`preset_listener`] succeeded
    /// on.
    pub fn new(stream: TcpStream, peer: SocketAddr, preset: bool) -> Client {
        Client {
            stream,
            peer,
            preset,
            state: AtomicU8::new(WAITING),
        }
    }

    /// Whether it waits for a request of which nothing has arrived.
    pub fn is_waiting(&self) -> bool {
        self.state.load(Ordering::SeqCst) == WAITING
    }

    /// Takes the connection away from its loop if it is waiting for a
    /// request: true means the loop will serve nothing more on it (a request
    /// that arrives at this moment is dropped unanswered, like one that meets
    /// an idle timeout), so the caller may cut it. False: it is busy.
    pub fn claim_if_waiting(&self) -> bool {
        self.move_state(WAITING, CLAIMED)
    }

    fn move_state(&self, from: u8, to: u8) -> bool {
        self.state
            .compare_exchange(from, to, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    fn is_claimed(&self) -> bool {
        self.state.load(Ordering::SeqCst) == CLAIMED
    }
}

/// Serves requests on `client` until it closes, asks to close, times out,
/// sends something that loses the framing, or is claimed while waiting
/// ([`Client::claim_if_waiting`]). Returns when the socket is done with;
/// never panics on client input.
pub fn serve<H: Handler + ?Sized>(client: Arc<Client>, handler: &H) {
    let peer = client.peer;
    let ready = client.preset || set_options(&client.stream);
    let read_timeout = ready.then_some(IDLE_TIMEOUT);
    let mut conn = Connection {
        client,
        input: InputBuffer::new(),
        output: Vec::new(),
        read_timeout,
    };
    conn.run(handler, peer);
}

/// The options every client socket is served with: every message is one
/// write, so Nagle's algorithm would only add delay; a client that stops
/// reading is given up after [`WRITE_TIMEOUT`]; the first wait for a request
/// is bounded by [`IDLE_TIMEOUT`].
fn set_options(stream: &TcpStream) -> bool {
    stream.set_nodelay(true).is_ok()
        && stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_ok()
        && stream.set_read_timeout(Some(IDLE_TIMEOUT)).is_ok()
}

/// Sets on the listening socket itself the options [`serve`] needs on every
/// client socket, so that each accepted one is born with them: three system
/// calls fewer per connection, which a new connection per request pays on
/// every request. Linux copies these options from the listener to the
/// sockets it accepts; elsewhere this does nothing and returns false, and
/// [`serve`] sets them per connection. A side effect the caller must expect:
/// with the read timeout on the listener, a blocking `accept` that waits
/// longer than [`IDLE_TIMEOUT`] fails with `WouldBlock` (or `TimedOut`), and
/// should just be called again.
pub fn preset_listener(listener: &TcpListener) -> bool {
    if !cfg!(target_os = "linux") {
        return false;
    }
    // std sets socket options only on streams; a stream over a duplicate of
    // the listener's descriptor reaches the same socket (and closes only the
    // duplicate when dropped).
    let Ok(fd) = std::os::fd::AsFd::as_fd(listener).try_clone_to_owned() else {
        return false;
    };
    set_options(&TcpStream::from(fd))
}

struct Connection {
    client: Arc<Client>,
    input: InputBuffer,
    output: Vec<u8>,
    /// The read timeout currently set on the socket, to skip redundant syscalls.
    read_timeout: Option<Duration>,
}

/// How much longer a request body may take, and the error if it runs out:
/// [`BODY_TIMEOUT`] of silence at most, and on the whole [`BODY_TIMEOUT`]
/// plus a second per [`MIN_BODY_BYTES_PER_SEC`] bytes `received` since the
/// first wait (`waited` ago).
fn body_time_left(received: u64, waited: Duration, silent: Duration) -> (Duration, Error) {
    let silence_left = BODY_TIMEOUT.saturating_sub(silent);
    let earned =
        BODY_TIMEOUT + Duration::from_secs_f64(received as f64 / MIN_BODY_BYTES_PER_SEC as f64);
    let rate_left = earned.saturating_sub(waited);
    if rate_left < silence_left {
        (rate_left, Error::BodyTooSlow)
    } else {
        (silence_left, Error::BodyTimeout)
    }
}

/// How a wait for more input ended.
enum Fill {
    Data,
    /// The server took the waiting connection away to close it.
    Claimed,
    Eof,
    TimedOut,
    Failed,
}

impl Connection {
    fn run<H: Handler + ?Sized>(&mut self, handler: &H, peer: SocketAddr) {
        let mut head_started: Option<Instant> = None;
        loop {
            let (request, used) = match parse_request_head(self.input.data()) {
                Ok(Status::Complete(parsed)) => parsed,
                Ok(Status::Partial) => {
                    let filled = if self.input.is_empty() {
                        self.await_request(IDLE_TIMEOUT)
                    } else {
                        let started = *head_started.get_or_insert_with(Instant::now);
                        match HEAD_TIMEOUT.checked_sub(started.elapsed()) {
                            Some(left) if !left.is_zero() => self.fill(left),
                            _ => return self.fail(handler, Error::HeadTimeout),
                        }
                    };
                    match filled {
                        Fill::Data => continue,
                        // Closed by the server to make room: nothing is owed.
                        Fill::Claimed => return,
                        Fill::TimedOut if !self.input.is_empty() => {
                            return self.fail(handler, Error::HeadTimeout)
                        }
                        // Idle keep-alive timeout, a client that is done, or a
                        // dead socket: nothing is owed and nothing was just
                        // answered, so there is nothing to linger for.
                        Fill::TimedOut | Fill::Eof | Fill::Failed => return,
                    }
                }
                Err(error) => return self.fail(handler, error.into()),
            };
            self.input.consume(used);
            head_started = None;

            let limit = handler.max_body_bytes();
            if let Framing::Length(length) = request.framing {
                if length > limit {
                    return self.fail(handler, ParseError::BodyTooLarge { limit }.into());
                }
            }
            if request.framing != Framing::Empty
                && request.expects_continue
                && self.input.is_empty()
            {
                if let Some(mut response) = handler.precheck(&request) {
                    response.close = true;
                    return self.answer(handler, response, &request);
                }
                self.output.extend_from_slice(CONTINUE);
            }

            let mut exchange = Exchange::new(self, &request, limit);
            handler.exchange(request, peer, &mut exchange);
            let ending = exchange.ending();
            match ending {
                Ending::Answered { close: false, .. } => {}
                // The client said this was its last request and sent nothing
                // more: the close cannot meet unread input, so no lingering
                // (and no worker waiting for the client's own close).
                Ending::Answered {
                    close: true,
                    client_done: true,
                } => {
                    self.flush();
                    return;
                }
                Ending::Answered { close: true, .. } => return self.finish(),
                Ending::Unanswered(Some(error)) => return self.fail(handler, error),
                Ending::Unanswered(None) => {
                    let mut response =
                        Response::error(500, "the server failed to answer this request; try again");
                    response.close = true;
                    handler.decorate(&mut response);
                    write_response(&mut self.output, &response, Version::Http11, false, true);
                    return self.finish();
                }
                // The answer broke off midway: the client must see it cut,
                // never padded or followed by another answer.
                Ending::Truncated => {
                    self.flush();
                    let _ = self.client.stream.shutdown(Shutdown::Both);
                    return;
                }
                Ending::ClientGone | Ending::Upgraded => return,
            }
            if self.output.len() > MAX_QUEUED_OUTPUT_BYTES && !self.flush() {
                return;
            }
        }
    }

    /// Like [`Connection::fill`] while nothing of the next request has
    /// arrived: meanwhile the server may claim the connection to close it
    /// (at its limit), and then nothing more is served on it.
    fn await_request(&mut self, timeout: Duration) -> Fill {
        if !self.flush() {
            return Fill::Failed;
        }
        // Busy → waiting (a new connection starts out waiting).
        if !self.client.move_state(BUSY, WAITING) && self.client.is_claimed() {
            return Fill::Claimed;
        }
        let filled = self.fill(timeout);
        if !self.client.move_state(WAITING, BUSY) {
            return Fill::Claimed;
        }
        filled
    }

    /// Flushes queued answers, then reads more input within `timeout`.
    fn fill(&mut self, timeout: Duration) -> Fill {
        if !self.flush() {
            return Fill::Failed;
        }
        if self.read_timeout != Some(timeout) {
            if self.client.stream.set_read_timeout(Some(timeout)).is_err() {
                return Fill::Failed;
            }
            self.read_timeout = Some(timeout);
        }
        match self.input.read_from(&mut &self.client.stream) {
            Ok(0) => Fill::Eof,
            Ok(_) => Fill::Data,
            Err(e) if is_timeout(&e) => Fill::TimedOut,
            Err(_) => Fill::Failed,
        }
    }

    /// Writes queued answers; false if the client can no longer be written to.
    fn flush(&mut self) -> bool {
        if self.output.is_empty() {
            return true;
        }
        let ok = (&self.client.stream).write_all(&self.output).is_ok();
        self.output.clear();
        if self.output.capacity() > 2 * STREAM_FLUSH_BYTES {
            self.output = Vec::new();
        }
        ok
    }

    /// Answers a request with a response that closes the connection.
    fn answer<H: Handler + ?Sized>(
        &mut self,
        handler: &H,
        mut response: Response,
        request: &Request,
    ) {
        handler.decorate(&mut response);
        write_response(
            &mut self.output,
            &response,
            request.version,
            request.is_head(),
            true,
        );
        self.finish();
    }

    /// Answers a framing error and closes: after one, the next byte's meaning is unknown.
    fn fail<H: Handler + ?Sized>(&mut self, handler: &H, error: Error) {
        let mut response = error.response();
        handler.decorate(&mut response);
        write_response(&mut self.output, &response, Version::Http11, false, true);
        self.finish();
    }

    /// Sends what is queued, half-closes, and drains the client briefly so our
    /// last answer is not destroyed by a reset (see [`LINGER_TIMEOUT`]).
    fn finish(&mut self) {
        if !self.flush() {
            return;
        }
        if self.client.stream.shutdown(Shutdown::Write).is_err() {
            return;
        }
        if self
            .client
            .stream
            .set_read_timeout(Some(LINGER_TIMEOUT))
            .is_err()
        {
            return;
        }
        let deadline = Instant::now() + LINGER_TIMEOUT;
        let mut drained = 0;
        let mut scratch = [0u8; 4096];
        while drained < LINGER_MAX_BYTES && Instant::now() < deadline {
            match (&self.client.stream).read(&mut scratch) {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    }
}

/// One request's hold on its client connection: its body, read whole or in
/// pieces, and its answer, written whole or streamed.
///
/// The connection loop makes one per request and, once the handler is done,
/// asks it how the exchange ended: answered (and whether to close), broken
/// off, turned into a tunnel, or abandoned by the client.
pub struct Exchange<'a> {
    conn: &'a mut Connection,
    version: Version,
    head_only: bool,
    keep_alive: bool,
    body: BodyFraming,
    answer: AnswerState,
    /// Why reading the request body failed, answered by the connection.
    body_error: Option<Error>,
    /// Since when the client has sent no body byte we waited for.
    silent_since: Option<Instant>,
    /// When the relay first had to wait for the body, and the body bytes
    /// handed out so far: together they bound how slowly it may arrive.
    body_waited_from: Option<Instant>,
    body_received: u64,
    client_gone: bool,
    upgraded: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AnswerState {
    None,
    Streaming { framing: StreamFraming, close: bool },
    Done { close: bool },
}

/// How a streamed answer's body is delimited toward the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamFraming {
    /// No body follows the head.
    Empty,
    /// The head announced this many bytes still to come.
    Length(u64),
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client).
    UntilClose,
}

/// The length of a streamed answer's body, as its head announces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerBody {
    /// No body: an answer to `HEAD`, or a 1xx, 204 or 304.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Not known in advance: chunked to HTTP/1.1 clients, delimited by
    /// closing the connection for HTTP/1.0 ones.
    Unknown,
}

/// A piece of request body, or why there is none right now.
pub enum Piece<'b> {
    Data(&'b [u8]),
    /// The body is complete.
    End,
    /// Nothing is buffered (only when asked not to wait).
    Pending,
}

/// How an exchange ended, for the connection loop.
enum Ending {
    Answered {
        close: bool,
        /// The client asked to close, its body was read to the end and
        /// nothing of it is left unread here.
        client_done: bool,
    },
    /// No answer was written; the body error, if any, is answered instead.
    Unanswered(Option<Error>),
    Truncated,
    ClientGone,
    Upgraded,
}

impl<'a> Exchange<'a> {
    fn new(conn: &'a mut Connection, request: &Request, limit: u64) -> Exchange<'a> {
        let body = match request.framing {
            // A request is never framed by close (parse gives it none).
            Framing::Empty | Framing::UntilClose => BodyFraming::empty(),
            Framing::Length(n) => BodyFraming::length(n),
            Framing::Chunked => BodyFraming::chunked(limit),
        };
        Exchange {
            conn,
            version: request.version,
            head_only: request.is_head(),
            keep_alive: request.keep_alive,
            body,
            answer: AnswerState::None,
            body_error: None,
            silent_since: None,
            body_waited_from: None,
            body_received: 0,
            client_gone: false,
            upgraded: false,
        }
    }

    /// Whether the whole request body has been read.
    pub fn body_done(&self) -> bool {
        self.body.is_done()
    }

    /// Whether an answer has begun (so a failure can no longer become a
    /// clean error response).
    pub fn answer_started(&self) -> bool {
        self.answer != AnswerState::None
    }

    /// The next piece of the request body, waiting at most `wait` for it
    /// ([`Piece::Pending`] if none came; `Duration::ZERO`: only what is
    /// already buffered). `None`: the body cannot be read (a framing error,
    /// [`BODY_TIMEOUT`] of silence in all, slower on average than
    /// [`MIN_BODY_BYTES_PER_SEC`] allows, or the client left); the handler
    /// should give up, and the connection answers or closes.
    pub fn body_piece(&mut self, wait: Duration) -> Option<Piece<'_>> {
        let conn = &mut *self.conn;
        loop {
            match self.body.next(&mut conn.input) {
                Ok(Step::Data(n)) => {
                    self.silent_since = None;
                    self.body_received += n as u64;
                    return Some(Piece::Data(&conn.input.data()[..n]));
                }
                Ok(Step::End) => return Some(Piece::End),
                Ok(Step::NeedMore) => {}
                Err(error) => {
                    self.body_error = Some(error.into());
                    return None;
                }
            }
            if wait.is_zero() {
                return Some(Piece::Pending);
            }
            let now = Instant::now();
            let silent = now.duration_since(*self.silent_since.get_or_insert(now));
            let waited = now.duration_since(*self.body_waited_from.get_or_insert(now));
            let (left, limit) = body_time_left(self.body_received, waited, silent);
            if left.is_zero() {
                self.body_error = Some(limit);
                return None;
            }
            match conn.fill(wait.min(left)) {
                Fill::Data => {}
                Fill::TimedOut if wait < left => return Some(Piece::Pending),
                Fill::TimedOut => {
                    self.body_error = Some(limit);
                    return None;
                }
                Fill::Eof | Fill::Failed | Fill::Claimed => {
                    self.client_gone = true;
                    return None;
                }
            }
        }
    }

    /// The whole request body (within the limit the connection was given).
    pub fn read_body(&mut self) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            match self.body_piece(BODY_TIMEOUT)? {
                Piece::Data(data) => body.extend_from_slice(data),
                Piece::End => return Some(body),
                Piece::Pending => {}
            }
        }
    }

    /// Whether the connection must close after this answer: the client or
    /// the response asked for it, or the request body was left unread (its
    /// bytes would be taken for the next request).
    fn must_close(&self, asked: bool) -> bool {
        asked || !self.keep_alive || !self.body_done()
    }

    /// Writes a whole answer.
    pub fn respond(&mut self, response: &Response) {
        if self.answer_started() {
            return;
        }
        let close = self.must_close(response.close);
        write_response(
            &mut self.conn.output,
            response,
            self.version,
            self.head_only,
            close,
        );
        self.answer = AnswerState::Done { close };
    }

    /// Begins a streamed answer: `head` is its status line and headers, each
    /// ending in CRLF, without framing or `Connection` headers, which are
    /// added here for `body` and this client.
    pub fn start_answer(&mut self, head: &[u8], body: AnswerBody, close: bool) {
        if self.answer_started() {
            return;
        }
        let framing = match body {
            AnswerBody::None => StreamFraming::Empty,
            _ if self.head_only => StreamFraming::Empty,
            AnswerBody::Length(n) => StreamFraming::Length(n),
            AnswerBody::Unknown if self.version == Version::Http11 => StreamFraming::Chunked,
            AnswerBody::Unknown => StreamFraming::UntilClose,
        };
        let close = self.must_close(close) || framing == StreamFraming::UntilClose;
        let out = &mut self.conn.output;
        out.extend_from_slice(head);
        match framing {
            StreamFraming::Length(n) => {
                out.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes())
            }
            StreamFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            StreamFraming::Empty | StreamFraming::UntilClose => {}
        }
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if self.version == Version::Http10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        self.answer = match framing {
            StreamFraming::Empty | StreamFraming::Length(0) => AnswerState::Done { close },
            _ => AnswerState::Streaming { framing, close },
        };
    }

    /// Sends one piece of a streamed answer's body. Small pieces are gathered
    /// and go out with the next flush; large ones are written at once.
    /// `Err`: the client can no longer be written to.
    pub fn send_piece(&mut self, data: &[u8]) -> io::Result<()> {
        let AnswerState::Streaming { framing, close } = self.answer else {
            return Ok(());
        };
        if data.is_empty() {
            return Ok(());
        }
        let data = match framing {
            StreamFraming::Length(remaining) => {
                let take = (data.len() as u64).min(remaining) as usize;
                let left = remaining - take as u64;
                self.answer = if left == 0 {
                    AnswerState::Done { close }
                } else {
                    AnswerState::Streaming {
                        framing: StreamFraming::Length(left),
                        close,
                    }
                };
                &data[..take]
            }
            _ => data,
        };
        let chunked = framing == StreamFraming::Chunked;
        if chunked {
            self.conn
                .output
                .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        if self.conn.output.len() + data.len() <= STREAM_FLUSH_BYTES {
            self.conn.output.extend_from_slice(data);
        } else {
            self.flush()?;
            if let Err(error) = (&self.conn.client.stream).write_all(data) {
                self.client_gone = true;
                return Err(error);
            }
        }
        if chunked {
            self.conn.output.extend_from_slice(b"\r\n");
        }
        Ok(())
    }

    /// Ends a streamed answer whose body is complete.
    pub fn end_answer(&mut self) {
        if let AnswerState::Streaming { framing, close } = self.answer {
            match framing {
                StreamFraming::Chunked => self.conn.output.extend_from_slice(b"0\r\n\r\n"),
                // Nothing marks the end but the close itself.
                StreamFraming::UntilClose => {}
                // Fewer bytes than announced: leave it unfinished, so the
                // connection is cut and the client sees the shortfall.
                StreamFraming::Length(_) | StreamFraming::Empty => return,
            }
            self.answer = AnswerState::Done { close };
        }
    }

    /// Writes whatever is queued for the client now (before waiting on the
    /// backend, so each piece reaches the client as soon as it arrived).
    pub fn flush(&mut self) -> io::Result<()> {
        if self.conn.flush() {
            Ok(())
        } else {
            self.client_gone = true;
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the client is gone",
            ))
        }
    }

    /// Sends a finished answer now, unless the client has already sent more
    /// (a pipelined request: its answer goes out with this one, as the
    /// connection's loop would send them). Lets the caller tidy up after the
    /// client has what it waits for.
    pub fn deliver(&mut self) {
        if matches!(self.answer, AnswerState::Done { .. }) && self.conn.input.is_empty() {
            let _ = self.flush();
        }
    }

    /// Answers `101 Switching Protocols` with `head` (status line and
    /// headers, each ending in CRLF) and hands the connection over to a byte
    /// tunnel: returns the client socket and the bytes the client already
    /// sent beyond the request. The connection serves no more HTTP.
    pub fn upgrade(&mut self, head: &[u8]) -> io::Result<(&TcpStream, Vec<u8>)> {
        if self.answer_started() {
            return Err(io::Error::other("an answer was already started"));
        }
        self.conn.output.extend_from_slice(head);
        self.conn.output.extend_from_slice(b"\r\n");
        self.answer = AnswerState::Done { close: true };
        self.flush()?;
        self.upgraded = true;
        self.body.release(&mut self.conn.input);
        let early = self.conn.input.data().to_vec();
        self.conn.input.consume(early.len());
        Ok((&self.conn.client.stream, early))
    }

    /// Whether the client can have nothing more to send: it asked to close
    /// (RFC 9112 §9.6: then it sends no further request), its body was read
    /// to the end, and nothing it sent is still buffered.
    fn client_done(&self) -> bool {
        !self.keep_alive && self.body_done() && self.conn.input.is_empty()
    }

    fn ending(&self) -> Ending {
        if self.upgraded {
            return Ending::Upgraded;
        }
        if self.client_gone {
            return Ending::ClientGone;
        }
        match self.answer {
            AnswerState::Done { close } => Ending::Answered {
                close,
                client_done: self.client_done(),
            },
            AnswerState::None => Ending::Unanswered(self.body_error),
            AnswerState::Streaming {
                framing: StreamFraming::UntilClose,
                ..
            } => Ending::Answered {
                close: true,
                client_done: self.client_done(),
            },
            AnswerState::Streaming { .. } => Ending::Truncated,
        }
    }
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    /// What `serve` relies on when it skips setting a preset client socket's
    /// options: the accepted socket really has them.
    #[test]
    fn a_socket_accepted_from_a_preset_listener_has_the_client_options() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let preset = preset_listener(&listener);
        assert_eq!(preset, cfg!(target_os = "linux"));
        let _client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (accepted, _) = listener.accept().expect("accept");
        let options = (
            accepted.nodelay().expect("nodelay"),
            accepted.write_timeout().expect("write timeout"),
            accepted.read_timeout().expect("read timeout"),
        );
        if preset {
            assert_eq!(options, (true, Some(WRITE_TIMEOUT), Some(IDLE_TIMEOUT)));
        }
        // The listener itself is still a listener, and blocking.
        let _second = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        assert!(listener.accept().is_ok());
    }

    #[test]
    fn a_body_may_fall_silent_for_the_body_timeout_at_most() {
        let (left, why) = body_time_left(0, Duration::ZERO, Duration::ZERO);
        assert_eq!((left, why), (BODY_TIMEOUT, Error::BodyTimeout));
        // Plenty of credit from bytes received: silence is what bounds it.
        let (left, why) = body_time_left(1024 * 1024, 20 * SEC, 4 * SEC);
        assert_eq!((left, why), (BODY_TIMEOUT - 4 * SEC, Error::BodyTimeout));
    }

    #[test]
    fn a_trickled_body_runs_out_of_time_though_never_silent_for_long() {
        // A byte every 8 s: never 10 s silent, but 2 bytes earn nothing.
        let (left, why) = body_time_left(2, 10 * SEC, SEC);
        assert!(left < SEC / 100, "{left:?}");
        assert_eq!(why, Error::BodyTooSlow);
        // At the minimum rate exactly, a body always keeps its 10 s ahead.
        let (left, why) = body_time_left(60 * MIN_BODY_BYTES_PER_SEC, 60 * SEC, Duration::ZERO);
        assert_eq!((left, why), (BODY_TIMEOUT, Error::BodyTimeout));
        let (left, why) = body_time_left(30 * MIN_BODY_BYTES_PER_SEC, 35 * SEC, Duration::ZERO);
        assert_eq!((left, why), (5 * SEC, Error::BodyTooSlow));
    }
}
