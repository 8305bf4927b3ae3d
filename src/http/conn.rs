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
//! through [`Handler`].

use super::buffer::InputBuffer;
use super::parse::{parse_request_head, ChunkedDecoder, Status};
use super::write::{write_response, CONTINUE};
use super::{Error, Framing, Request, Response, Version, BODY_TIMEOUT, HEAD_TIMEOUT, IDLE_TIMEOUT};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
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
const LINGER_TIMEOUT: Duration = Duration::from_secs(2);

/// The most we drain while lingering before closing anyway.
const LINGER_MAX_BYTES: usize = 2 * 1024 * 1024;

/// What a connection needs from the server behind it.
pub trait Handler {
    /// Looks at a request whose client sent `Expect: 100-continue`, before its
    /// body is read. A response returned here is sent at once instead of
    /// `100 Continue` (e.g. 404, 415), the body is never read, and the
    /// connection closes after it.
    fn precheck(&self, _request: &Request) -> Option<Response> {
        None
    }

    /// Answers one complete request.
    fn handle(&self, request: Request, peer: SocketAddr) -> Response;

    /// Called on every response before it is written, including the errors the
    /// connection makes itself (bad framing, timeouts), e.g. to add `X-Node`.
    fn decorate(&self, _response: &mut Response) {}
}

/// Serves requests on `stream` until the client closes, asks to close, times
/// out, or sends something that loses the framing. Returns when the socket is
/// done with; never panics on client input.
pub fn serve<H: Handler + ?Sized>(stream: TcpStream, handler: &H) {
    let Ok(peer) = stream.peer_addr() else {
        return;
    };
    // Every message is one write, so Nagle's algorithm would only add delay.
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut conn = Connection {
        stream,
        input: InputBuffer::new(),
        output: Vec::new(),
        read_timeout: None,
    };
    conn.run(handler, peer);
}

struct Connection {
    stream: TcpStream,
    input: InputBuffer,
    output: Vec<u8>,
    /// The read timeout currently set on the socket, to skip redundant syscalls.
    read_timeout: Option<Duration>,
}

/// How a wait for more input ended.
enum Fill {
    Data,
    Eof,
    TimedOut,
    Failed,
}

impl Connection {
    fn run<H: Handler + ?Sized>(&mut self, handler: &H, peer: SocketAddr) {
        let mut head_started: Option<Instant> = None;
        loop {
            let (mut request, used) = match parse_request_head(self.input.data()) {
                Ok(Status::Complete(parsed)) => parsed,
                Ok(Status::Partial) => {
                    let timeout = if self.input.is_empty() {
                        IDLE_TIMEOUT
                    } else {
                        let started = *head_started.get_or_insert_with(Instant::now);
                        match HEAD_TIMEOUT.checked_sub(started.elapsed()) {
                            Some(left) if !left.is_zero() => left,
                            _ => return self.fail(handler, Error::HeadTimeout),
                        }
                    };
                    match self.fill(timeout) {
                        Fill::Data => continue,
                        Fill::TimedOut if !self.input.is_empty() => {
                            return self.fail(handler, Error::HeadTimeout)
                        }
                        // Idle keep-alive timeout, a client that is done, or a
                        // dead socket: nothing is owed, just close.
                        Fill::TimedOut | Fill::Eof | Fill::Failed => return self.finish(),
                    }
                }
                Err(error) => return self.fail(handler, error),
            };
            self.input.consume(used);
            head_started = None;

            if request.framing != Framing::Empty {
                if request.expects_continue && self.input.is_empty() {
                    if let Some(mut response) = handler.precheck(&request) {
                        response.close = true;
                        return self.answer(handler, response, &request);
                    }
                    self.output.extend_from_slice(CONTINUE);
                }
                match self.read_body(request.framing) {
                    Ok(Some(body)) => request.body = body,
                    Ok(None) => return self.finish(),
                    Err(error) => return self.fail(handler, error),
                }
            }

            let version = request.version;
            let head_only = request.is_head();
            let keep_alive = request.keep_alive;
            let mut response = handler.handle(request, peer);
            handler.decorate(&mut response);
            let close = response.close || !keep_alive;
            write_response(&mut self.output, &response, version, head_only, close);
            if close {
                return self.finish();
            }
            if self.output.len() > MAX_QUEUED_OUTPUT_BYTES && !self.flush() {
                return;
            }
        }
    }

    /// Reads a body by its framing. `Ok(None)`: the client went away mid-body.
    fn read_body(&mut self, framing: Framing) -> Result<Option<Vec<u8>>, Error> {
        match framing {
            Framing::Empty => Ok(Some(Vec::new())),
            Framing::Length(length) => {
                // The head parser refused lengths over the body limit.
                let length = length as usize;
                while self.input.len() < length {
                    match self.fill(BODY_TIMEOUT) {
                        Fill::Data => {}
                        Fill::TimedOut => return Err(Error::BodyTimeout),
                        Fill::Eof | Fill::Failed => return Ok(None),
                    }
                }
                let body = self.input.data()[..length].to_vec();
                self.input.consume(length);
                Ok(Some(body))
            }
            Framing::Chunked => {
                let mut decoder = ChunkedDecoder::new();
                loop {
                    let used = decoder.feed(self.input.data())?;
                    self.input.consume(used);
                    if decoder.is_done() {
                        return Ok(Some(decoder.into_body()));
                    }
                    match self.fill(BODY_TIMEOUT) {
                        Fill::Data => {}
                        Fill::TimedOut => return Err(Error::BodyTimeout),
                        Fill::Eof | Fill::Failed => return Ok(None),
                    }
                }
            }
        }
    }

    /// Flushes queued answers, then reads more input within `timeout`.
    fn fill(&mut self, timeout: Duration) -> Fill {
        if !self.flush() {
            return Fill::Failed;
        }
        if self.read_timeout != Some(timeout) {
            if self.stream.set_read_timeout(Some(timeout)).is_err() {
                return Fill::Failed;
            }
            self.read_timeout = Some(timeout);
        }
        match self.input.read_from(&mut self.stream) {
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
        let ok = self.stream.write_all(&self.output).is_ok();
        self.output.clear();
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
        if self.stream.shutdown(Shutdown::Write).is_err() {
            return;
        }
        if self.stream.set_read_timeout(Some(LINGER_TIMEOUT)).is_err() {
            return;
        }
        let deadline = Instant::now() + LINGER_TIMEOUT;
        let mut drained = 0;
        let mut scratch = [0u8; 4096];
        while drained < LINGER_MAX_BYTES && Instant::now() < deadline {
            match self.stream.read(&mut scratch) {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    }
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
