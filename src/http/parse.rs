//! Bytes to request heads and chunked bodies: pure functions over `&[u8]`.
//!
//! Incomplete input is not an error: [`Status::Partial`] means "read more". Every
//! complete line is checked as soon as it arrives, so a person typing a bad
//! request line into `nc` is told at once instead of after the blank line.
//!
//! Both `CRLF` and bare `LF` end a line (people type requests by hand). The rules
//! that keep a relay safe from request smuggling live here: ambiguous framing
//! (`Content-Length` with `Transfer-Encoding`, differing lengths, a length that is
//! not a plain number, a transfer coding other than `chunked`, obs-fold lines,
//! space before a header colon) is an [`Error`], never a guess.

use super::message::{
    has_token, Framing, Header, Request, ResponseHead, Version, MAX_BODY_BYTES, MAX_HEADERS,
    MAX_HEAD_BYTES,
};

/// Longest chunk-size line (size plus extensions). Real clients send a few bytes.
pub const MAX_CHUNK_LINE_BYTES: usize = 4096;

/// What is wrong with a message's bytes: its syntax, an ambiguous framing, or
/// a size the parser will not take. No status code and no sentence: a
/// request's are chosen by [`super::Error`], a response's by
/// [`super::upstream::response_error_sentence`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    RequestLine,
    Method,
    Target,
    Version,
    HeaderName,
    HeaderValue,
    ObsFold,
    HeadTooLarge,
    TooManyHeaders,
    ContentLength,
    ConflictingLength,
    LengthAndChunked,
    TransferEncoding,
    ChunkSize,
    ChunkEnd,
    /// The body is over the receiver's limit, in bytes.
    BodyTooLarge {
        limit: u64,
    },
    /// More than one `Host` header (RFC 9112 §3.2).
    DuplicateHost,
    /// A response (from a node) whose status line is not HTTP/1.x NNN.
    StatusLine,
}

/// The outcome of parsing input that may not all have arrived yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status<T> {
    Complete(T),
    Partial,
}

/// Parses a request head at the start of `buf`.
///
/// Returns the request (with an empty body) and how many bytes of `buf` the head
/// used, including any empty lines before the request line, which RFC 9112 §2.2
/// tells servers to ignore (a user pressing Enter twice in `nc`).
pub fn parse_request_head(buf: &[u8]) -> Result<Status<(Request, usize)>, Error> {
    let mut pos = 0;
    // Skip blank lines before the request line.
    loop {
        match buf[pos..].first() {
            Some(b'\n') => pos += 1,
            Some(b'\r') => match buf.get(pos + 1) {
                Some(b'\n') => pos += 2,
                Some(_) => return Err(Error::RequestLine),
                None => return Ok(Status::Partial),
            },
            Some(_) => break,
            None => return Ok(Status::Partial),
        }
        if pos > MAX_HEAD_BYTES {
            return Err(Error::HeadTooLarge);
        }
    }
    let head_start = pos;

    let Some((line, next)) = next_line(buf, pos) else {
        return partial_or_too_large(buf.len() - head_start, MAX_HEAD_BYTES);
    };
    let (method, target, version) = parse_request_line(line)?;

    let Status::Complete((headers, pos)) =
        parse_header_block(buf, next, head_start, MAX_HEAD_BYTES)?
    else {
        return Ok(Status::Partial);
    };

    let mut headers = headers;
    if headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .count()
        > 1
    {
        return Err(Error::DuplicateHost);
    }
    let framing = decide_framing(&headers)?;
    let keep_alive = match version {
        Version::Http11 => !connection_has(&headers, "close"),
        // An HTTP/1.0 message with Transfer-Encoding is read, but its framing
        // cannot be trusted for what follows (RFC 9112 §6.1): close after it.
        Version::Http10 => {
            connection_has(&headers, "keep-alive")
                && !connection_has(&headers, "close")
                && !headers
                    .iter()
                    .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        }
    };
    let target = origin_form(target, &mut headers);
    let expects_continue = version == Version::Http11
        && headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("expect") && has_token(&h.value, "100-continue"));

    let request = Request {
        method,
        target,
        version,
        headers,
        framing,
        keep_alive,
        expects_continue,
        body: Vec::new(),
    };
    Ok(Status::Complete((request, pos)))
}

/// A target in absolute form (`http://host/path?q`, as proxies are sent) in
/// the origin form every route expects (`/path?q`), its authority becoming
/// the `Host` (RFC 9112 §3.2.2: the target's authority wins over any `Host`
/// header). Other targets are returned as they are.
fn origin_form(target: String, headers: &mut Vec<Header>) -> String {
    let lower = target.get(..8).unwrap_or(&target).to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &target[7..]
    } else if lower.starts_with("https://") {
        &target[8..]
    } else {
        return target;
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    let origin = match path.strip_prefix('?') {
        Some(_) => format!("/{path}"),
        None if path.is_empty() => "/".to_string(),
        None => path.to_string(),
    };
    if !authority.is_empty() {
        headers.retain(|h| !h.name.eq_ignore_ascii_case("host"));
        headers.push(Header {
            name: "Host".into(),
            value: authority.to_string(),
        });
    }
    origin
}

fn partial_or_too_large<T>(buffered: usize, max_bytes: usize) -> Result<Status<T>, Error> {
    if buffered > max_bytes {
        Err(Error::HeadTooLarge)
    } else {
        Ok(Status::Partial)
    }
}

/// Header lines from `pos` up to and including the blank line that ends a
/// head starting at `head_start`; the head may be at most `max_bytes` long.
/// Returns the headers and where the body starts.
fn parse_header_block(
    buf: &[u8],
    mut pos: usize,
    head_start: usize,
    max_bytes: usize,
) -> Result<Status<(Vec<Header>, usize)>, Error> {
    let mut headers = Vec::new();
    loop {
        let Some((line, next)) = next_line(buf, pos) else {
            return partial_or_too_large(buf.len() - head_start, max_bytes);
        };
        if next - head_start > max_bytes {
            return Err(Error::HeadTooLarge);
        }
        pos = next;
        if line.is_empty() {
            return Ok(Status::Complete((headers, pos)));
        }
        if headers.len() == MAX_HEADERS {
            return Err(Error::TooManyHeaders);
        }
        headers.push(parse_header_line(line)?);
    }
}

/// Whether any `Connection` header lists `token`.
fn connection_has(headers: &[Header], token: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .any(|h| has_token(&h.value, token))
}

/// The one `Content-Length` all such headers agree on, if any: `5, 5` and
/// repeated identical headers are one length; differing ones are an error.
fn agreed_content_length(headers: &[Header]) -> Result<Option<u64>, Error> {
    let mut length: Option<u64> = None;
    for header in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
    {
        for part in header.value.split(',') {
            let value = parse_content_length(part.trim())?;
            match length {
                Some(previous) if previous != value => return Err(Error::ConflictingLength),
                _ => length = Some(value),
            }
        }
    }
    Ok(length)
}

/// The line starting at `pos` without its `\n` or `\r\n`, and where the next
/// line starts; `None` while the line is incomplete.
fn next_line(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let len = buf[pos..].iter().position(|&b| b == b'\n')?;
    let mut line = &buf[pos..pos + len];
    if let [rest @ .., b'\r'] = line {
        line = rest;
    }
    Some((line, pos + len + 1))
}

fn parse_request_line(line: &[u8]) -> Result<(String, String, Version), Error> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::RequestLine);
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(Error::Method);
    }
    if target.is_empty() || !target.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
        return Err(Error::Target);
    }
    let version = match version {
        b"HTTP/1.1" => Version::Http11,
        b"HTTP/1.0" => Version::Http10,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err(Error::Version)
        }
        _ => return Err(Error::RequestLine),
    };
    // Both parts are ASCII, checked above.
    let method = String::from_utf8_lossy(method).into_owned();
    let target = String::from_utf8_lossy(target).into_owned();
    Ok((method, target, version))
}

fn parse_header_line(line: &[u8]) -> Result<Header, Error> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(Error::ObsFold);
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(Error::HeaderName)?;
    let name = &line[..colon];
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(Error::HeaderName);
    }
    let value = trim_ows(&line[colon + 1..]);
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(Error::HeaderValue);
    }
    let value = std::str::from_utf8(value).map_err(|_| Error::HeaderValue)?;
    Ok(Header {
        name: String::from_utf8_lossy(name).into_owned(),
        value: value.to_owned(),
    })
}

fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// RFC 9110 token characters, as allowed in methods and header names.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Decides how the body is delimited, refusing anything ambiguous (RFC 9112 §6.3):
/// a relay that guessed differently from the node behind it could be made to see
/// two requests where the node sees one.
fn decide_framing(headers: &[Header]) -> Result<Framing, Error> {
    let length = agreed_content_length(headers)?;
    let mut transfer_encoding: Option<String> = None;
    for header in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
    {
        let all = transfer_encoding.get_or_insert_with(String::new);
        if !all.is_empty() {
            all.push(',');
        }
        all.push_str(&header.value);
    }
    match (length, transfer_encoding) {
        (Some(_), Some(_)) => Err(Error::LengthAndChunked),
        (None, Some(codings)) => {
            if codings.trim().eq_ignore_ascii_case("chunked") {
                Ok(Framing::Chunked)
            } else {
                Err(Error::TransferEncoding)
            }
        }
        (Some(0), None) | (None, None) => Ok(Framing::Empty),
        (Some(n), None) => Ok(Framing::Length(n)),
    }
}

fn parse_content_length(text: &str) -> Result<u64, Error> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::ContentLength);
    }
    // Too many digits for u64 is not a length anyone can send.
    text.parse::<u64>().map_err(|_| Error::ContentLength)
}

/// Longest response head the relay accepts from a node or backend.
pub const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;

/// Parses a response head at the start of `buf`. `to_head` says the request
/// was `HEAD`, whose answer never has a body whatever its headers say.
pub fn parse_response_head(
    buf: &[u8],
    to_head: bool,
) -> Result<Status<(ResponseHead, usize)>, Error> {
    let Some((line, next)) = next_line(buf, 0) else {
        return partial_or_too_large(buf.len(), MAX_RESPONSE_HEAD_BYTES);
    };
    let (version, status) = parse_status_line(line)?;
    let Status::Complete((headers, pos)) =
        parse_header_block(buf, next, 0, MAX_RESPONSE_HEAD_BYTES)?
    else {
        return Ok(Status::Partial);
    };
    let closes = connection_has(&headers, "close")
        || (version == Version::Http10 && !connection_has(&headers, "keep-alive"));
    let framing = if to_head || (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Empty
    } else {
        response_framing(&headers)?
    };
    let head = ResponseHead {
        status,
        status_line: String::from_utf8_lossy(line).into_owned(),
        headers,
        framing,
        closes,
    };
    Ok(Status::Complete((head, pos)))
}

fn parse_status_line(line: &[u8]) -> Result<(Version, u16), Error> {
    let version = match line.get(..9) {
        Some(b"HTTP/1.1 ") => Version::Http11,
        Some(b"HTTP/1.0 ") => Version::Http10,
        _ => return Err(Error::StatusLine),
    };
    let code = line.get(9..12).ok_or(Error::StatusLine)?;
    if !code.iter().all(u8::is_ascii_digit) || !matches!(line.get(12), None | Some(b' ')) {
        return Err(Error::StatusLine);
    }
    if line.iter().any(|&b| b < 0x20 && b != b'\t') {
        return Err(Error::StatusLine);
    }
    let status = code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if !(100..=599).contains(&status) {
        return Err(Error::StatusLine);
    }
    Ok((version, status))
}

fn response_framing(headers: &[Header]) -> Result<Framing, Error> {
    let length = agreed_content_length(headers)?;
    let mut chunked = None;
    for header in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
    {
        // Chunked only counts as the final coding; anything else runs to close.
        let last = header.value.rsplit(',').next().unwrap_or("").trim();
        chunked = Some(last.eq_ignore_ascii_case("chunked"));
    }
    Ok(match (chunked, length) {
        (Some(_), Some(_)) => return Err(Error::LengthAndChunked),
        (Some(true), None) => Framing::Chunked,
        (Some(false), None) => Framing::UntilClose,
        (None, Some(0)) => Framing::Empty,
        (None, Some(n)) => Framing::Length(n),
        (None, None) => Framing::UntilClose,
    })
}

/// Decodes a `Transfer-Encoding: chunked` body incrementally.
///
/// Feed it whatever bytes have arrived; it consumes what it can and keeps its
/// place, so a body trickling in byte by byte costs linear time. Chunk
/// extensions and trailer fields are accepted and dropped.
///
/// Two ways to use it: [`decode`](Self::decode) hands out the data in place,
/// one piece at a time, and keeps nothing (the relay streams bodies of any
/// size through it); [`feed`](Self::feed) collects the whole body (a node
/// reads a booking).
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
    body: Vec<u8>,
    /// Data bytes announced so far, checked against the limit.
    announced: u64,
    trailer_bytes: usize,
    max_body_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailer,
    Done,
}

/// One step of [`ChunkedDecoder::decode`]: `used` bytes of the input were
/// consumed; `data` (a range of the input, possibly empty) is body data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub used: usize,
    pub data: std::ops::Range<usize>,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder for request bodies to a node, limited to [`MAX_BODY_BYTES`].
    pub fn new() -> ChunkedDecoder {
        ChunkedDecoder::with_limit(MAX_BODY_BYTES as u64)
    }

    /// A decoder that refuses bodies over `max_body_bytes`.
    pub fn with_limit(max_body_bytes: u64) -> ChunkedDecoder {
        ChunkedDecoder {
            state: ChunkState::Size,
            body: Vec::new(),
            announced: 0,
            trailer_bytes: 0,
            max_body_bytes,
        }
    }

    /// Consumes framing from the start of `input` up to and including the
    /// next run of body data, and says where that data is. A result with an
    /// empty `data` means "read more" (or, once [`is_done`](Self::is_done),
    /// the body is over). Data is handed out as soon as any of it arrived.
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, Error> {
        let mut pos = 0;
        loop {
            match self.state {
                ChunkState::Done => {
                    return Ok(Decoded {
                        used: pos,
                        data: pos..pos,
                    })
                }
                ChunkState::Size => {
                    let Some((line, next)) = next_line(input, pos) else {
                        return if input.len() - pos > MAX_CHUNK_LINE_BYTES {
                            Err(Error::ChunkSize)
                        } else {
                            Ok(Decoded {
                                used: pos,
                                data: pos..pos,
                            })
                        };
                    };
                    if next - pos > MAX_CHUNK_LINE_BYTES {
                        return Err(Error::ChunkSize);
                    }
                    let size = parse_chunk_size(line)?;
                    self.announced = self.announced.saturating_add(size);
                    if self.announced > self.max_body_bytes {
                        return Err(Error::BodyTooLarge {
                            limit: self.max_body_bytes,
                        });
                    }
                    pos = next;
                    self.state = if size == 0 {
                        ChunkState::Trailer
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(remaining) => {
                    let available = (input.len() - pos) as u64;
                    let take = remaining.min(available) as usize;
                    let left = remaining - take as u64;
                    if left == 0 {
                        self.state = ChunkState::DataEnd;
                    } else {
                        self.state = ChunkState::Data(left);
                    }
                    return Ok(Decoded {
                        used: pos + take,
                        data: pos..pos + take,
                    });
                }
                ChunkState::DataEnd => match &input[pos..] {
                    [] | [b'\r'] => {
                        return Ok(Decoded {
                            used: pos,
                            data: pos..pos,
                        })
                    }
                    [b'\n', ..] => {
                        pos += 1;
                        self.state = ChunkState::Size;
                    }
                    [b'\r', b'\n', ..] => {
                        pos += 2;
                        self.state = ChunkState::Size;
                    }
                    _ => return Err(Error::ChunkEnd),
                },
                ChunkState::Trailer => {
                    let Some((line, next)) = next_line(input, pos) else {
                        return if self.trailer_bytes + (input.len() - pos) > MAX_HEAD_BYTES {
                            Err(Error::HeadTooLarge)
                        } else {
                            Ok(Decoded {
                                used: pos,
                                data: pos..pos,
                            })
                        };
                    };
                    self.trailer_bytes += next - pos;
                    if self.trailer_bytes > MAX_HEAD_BYTES {
                        return Err(Error::HeadTooLarge);
                    }
                    pos = next;
                    if line.is_empty() {
                        self.state = ChunkState::Done;
                    } else {
                        parse_header_line(line)?;
                    }
                }
            }
        }
    }

    /// Consumes a prefix of `input`, keeping its data for
    /// [`into_body`](Self::into_body); returns how many bytes it used.
    /// After [`is_done`](Self::is_done), it consumes nothing more.
    pub fn feed(&mut self, input: &[u8]) -> Result<usize, Error> {
        let mut pos = 0;
        loop {
            let step = self.decode(&input[pos..])?;
            self.body
                .extend_from_slice(&input[pos + step.data.start..pos + step.data.end]);
            pos += step.used;
            if step.data.is_empty() {
                return Ok(pos);
            }
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// The decoded body so far.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }
}

/// `1a`, `1A;name=value`, `1a ; ext`: hexadecimal size, optional extensions.
fn parse_chunk_size(line: &[u8]) -> Result<u64, Error> {
    let digits = line
        .iter()
        .position(|&b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    // More than 15 hex digits cannot be a size under our 1 MiB limit, and 16
    // could overflow: refuse rather than wrap.
    if digits == 0 || digits > 15 {
        return Err(Error::ChunkSize);
    }
    let rest = trim_ows(&line[digits..]);
    if !(rest.is_empty() || rest[0] == b';') || rest.iter().any(|&b| b < 0x20 && b != b'\t') {
        return Err(Error::ChunkSize);
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|_| Error::ChunkSize)?;
    u64::from_str_radix(text, 16).map_err(|_| Error::ChunkSize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(input: &[u8]) -> (Request, usize) {
        match parse_request_head(input) {
            Ok(Status::Complete(done)) => done,
            other => panic!("expected a complete head for {input:?}, got {other:?}"),
        }
    }

    /// The status a client is answered for `error` (chosen by [`crate::http::Error`]).
    fn status(error: Error) -> u16 {
        crate::http::Error::from(error).status()
    }

    fn error(input: &[u8]) -> Error {
        match parse_request_head(input) {
            Err(e) => e,
            other => panic!("expected an error for {input:?}, got {other:?}"),
        }
    }

    const POST: &[u8] = b"POST /bookings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n";

    #[test]
    fn simple_get_parses_with_crlf() {
        let input = b"GET /bookings?limit=5 HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n\r\n";
        let (req, used) = complete(input);
        assert_eq!(used, input.len());
        assert_eq!(req.method, "GET");
        assert_eq!(req.target, "/bookings?limit=5");
        assert_eq!(req.path(), "/bookings");
        assert_eq!(req.query(), Some("limit=5"));
        assert_eq!(req.version, Version::Http11);
        assert_eq!(req.header("host"), Some("example"));
        assert_eq!(req.header("ACCEPT"), Some("*/*"));
        assert_eq!(req.framing, Framing::Empty);
        assert!(req.keep_alive);
    }

    #[test]
    fn bare_lf_line_endings_are_accepted() {
        let input = b"GET /health HTTP/1.1\nHost: x\n\n";
        let (req, used) = complete(input);
        assert_eq!(used, input.len());
        assert_eq!(req.path(), "/health");
        assert_eq!(req.header("Host"), Some("x"));
    }

    #[test]
    fn mixed_line_endings_are_accepted() {
        let (req, _) = complete(b"GET / HTTP/1.1\r\nA: 1\nB: 2\r\n\n");
        assert_eq!(req.header("a"), Some("1"));
        assert_eq!(req.header("b"), Some("2"));
    }

    #[test]
    fn every_prefix_of_a_valid_request_is_partial() {
        for input in [
            POST,
            b"GET /x HTTP/1.0\nConnection: keep-alive\n\n".as_slice(),
        ] {
            for end in 0..input.len() {
                assert_eq!(
                    parse_request_head(&input[..end]),
                    Ok(Status::Partial),
                    "prefix of {end} bytes"
                );
            }
            complete(input);
        }
    }

    #[test]
    fn leading_blank_lines_are_skipped_and_counted() {
        let input = b"\r\n\nGET / HTTP/1.1\r\n\r\n";
        let (req, used) = complete(input);
        assert_eq!(req.target, "/");
        assert_eq!(used, input.len());
    }

    #[test]
    fn pipelined_requests_parse_one_at_a_time() {
        let input = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        let (first, used) = complete(input);
        assert_eq!(first.target, "/a");
        let (second, used2) = complete(&input[used..]);
        assert_eq!(second.target, "/b");
        assert_eq!(used + used2, input.len());
    }

    #[test]
    fn header_values_are_trimmed() {
        let (req, _) = complete(b"GET / HTTP/1.1\r\nX-A: \t padded \t\r\nX-B:\r\n\r\n");
        assert_eq!(req.header("x-a"), Some("padded"));
        assert_eq!(req.header("x-b"), Some(""));
    }

    #[test]
    fn bad_request_lines_are_rejected() {
        assert_eq!(error(b"GET /\r\n\r\n"), Error::RequestLine);
        assert_eq!(error(b"GET  / HTTP/1.1\r\n\r\n"), Error::RequestLine);
        assert_eq!(error(b"GET / HTTP/1.1 extra\r\n\r\n"), Error::RequestLine);
        assert_eq!(error(b"HELLO\n"), Error::RequestLine);
        assert_eq!(error(b"GET / HTTX/1.1\r\n\r\n"), Error::RequestLine);
        assert_eq!(error(b"G(T / HTTP/1.1\r\n\r\n"), Error::Method);
        assert_eq!(error(b" / HTTP/1.1\r\n\r\n"), Error::Method);
        assert_eq!(error(b"GET /\x01 HTTP/1.1\r\n\r\n"), Error::Target);
        assert_eq!(error(b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n"), Error::Target);
        assert_eq!(error(b"\rGET / HTTP/1.1\r\n\r\n"), Error::RequestLine);
    }

    #[test]
    fn a_bad_request_line_is_reported_before_the_head_ends() {
        assert_eq!(error(b"GARBAGE\r\nHost: x\r\n"), Error::RequestLine);
    }

    #[test]
    fn other_http_versions_get_505() {
        for version in ["HTTP/2.0", "HTTP/0.9", "HTTP/1.2", "HTTP/3.0"] {
            let input = format!("GET / {version}\r\n\r\n");
            let err = error(input.as_bytes());
            assert_eq!(err, Error::Version, "{version}");
            assert_eq!(status(err), 505);
        }
    }

    #[test]
    fn keep_alive_follows_version_and_connection_header() {
        assert!(complete(b"GET / HTTP/1.1\r\n\r\n").0.keep_alive);
        assert!(
            !complete(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
                .0
                .keep_alive
        );
        assert!(
            !complete(b"GET / HTTP/1.1\r\nConnection: Upgrade, CLOSE\r\n\r\n")
                .0
                .keep_alive
        );
        assert!(!complete(b"GET / HTTP/1.0\r\n\r\n").0.keep_alive);
        assert!(
            complete(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .0
                .keep_alive
        );
    }

    #[test]
    fn expect_continue_is_noticed_for_http11_only() {
        let head = b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
        assert!(complete(head).0.expects_continue);
        let old = b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
        assert!(!complete(old).0.expects_continue);
    }

    #[test]
    fn content_length_framing() {
        assert_eq!(complete(POST).0.framing, Framing::Length(2));
        let zero = b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(complete(zero).0.framing, Framing::Empty);
        let same_twice = b"POST / HTTP/1.1\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n";
        assert_eq!(complete(same_twice).0.framing, Framing::Length(7));
        let list = b"POST / HTTP/1.1\r\nContent-Length: 7, 7\r\n\r\n";
        assert_eq!(complete(list).0.framing, Framing::Length(7));
    }

    #[test]
    fn ambiguous_framing_is_rejected() {
        let cases: [(&[u8], Error); 9] = [
            (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", Error::ConflictingLength),
            (b"POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n", Error::ConflictingLength),
            (b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", Error::ContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", Error::ContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", Error::ContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", Error::ContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", Error::LengthAndChunked),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Error::TransferEncoding),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", Error::TransferEncoding),
        ];
        for (input, expected) in cases {
            assert_eq!(error(input), expected, "{}", String::from_utf8_lossy(input));
            assert_eq!(status(expected), 400);
        }
    }

    #[test]
    fn two_host_headers_are_refused() {
        assert_eq!(
            error(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"),
            Error::DuplicateHost
        );
        assert_eq!(status(Error::DuplicateHost), 400);
    }

    #[test]
    fn an_http_1_0_request_with_transfer_encoding_closes_after_its_answer() {
        let (request, _) = complete(
            b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(request.framing, Framing::Chunked);
        assert!(!request.keep_alive);
    }

    #[test]
    fn absolute_form_targets_become_origin_form_with_their_authority_as_host() {
        let (request, _) = complete(
            b"GET http://example.com:8080/bookings?limit=1 HTTP/1.1\r\nHost: other\r\n\r\n",
        );
        assert_eq!(request.target, "/bookings?limit=1");
        assert_eq!(request.header("host"), Some("example.com:8080"));
        let (request, _) = complete(b"GET HTTP://x HTTP/1.1\r\n\r\n");
        assert_eq!(
            (request.target.as_str(), request.header("host")),
            ("/", Some("x"))
        );
        let (request, _) = complete(b"GET http://x?q=1 HTTP/1.1\r\n\r\n");
        assert_eq!(request.target, "/?q=1");
        let (request, _) = complete(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(request.target, "*");
    }

    #[test]
    fn chunked_transfer_encoding_is_case_insensitive() {
        let input = b"POST / HTTP/1.1\r\nTransfer-Encoding:  Chunked \r\n\r\n";
        assert_eq!(complete(input).0.framing, Framing::Chunked);
    }

    #[test]
    fn any_announced_length_is_framing_the_limit_is_the_receivers() {
        // The limit differs between a node (1 MiB) and the relay (--max-body),
        // so the connection decides it; the parser only frames.
        let over = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        );
        assert_eq!(
            complete(over.as_bytes()).0.framing,
            Framing::Length(MAX_BODY_BYTES as u64 + 1)
        );
        let too_large = Error::BodyTooLarge { limit: 8 << 20 };
        assert_eq!(status(too_large), 413);
        assert_eq!(
            crate::http::Error::from(too_large).sentence(),
            "the request body must be at most 8 MiB (8388608 bytes)"
        );
    }

    #[test]
    fn smuggling_shapes_in_header_lines_are_rejected() {
        assert_eq!(
            error(b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n"),
            Error::ObsFold
        );
        assert_eq!(
            error(b"GET / HTTP/1.1\r\nHost: x\r\n\tfolded\r\n\r\n"),
            Error::ObsFold
        );
        assert_eq!(
            error(b"GET / HTTP/1.1\r\nContent-Length : 5\r\n\r\n"),
            Error::HeaderName
        );
        assert_eq!(
            error(b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n"),
            Error::HeaderName
        );
        assert_eq!(
            error(b"GET / HTTP/1.1\r\n: empty name\r\n\r\n"),
            Error::HeaderName
        );
        assert_eq!(
            error(b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n"),
            Error::HeaderValue
        );
        assert_eq!(
            error(b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n"),
            Error::HeaderValue
        );
        assert_eq!(
            error(b"GET / HTTP/1.1\r\nX: \xff\xfe\r\n\r\n"),
            Error::HeaderValue
        );
    }

    #[test]
    fn utf8_header_values_are_kept() {
        let (req, _) = complete("GET / HTTP/1.1\r\nX-Name: Zoë\r\n\r\n".as_bytes());
        assert_eq!(req.header("x-name"), Some("Zoë"));
    }

    #[test]
    fn oversized_heads_get_431() {
        let mut input = b"GET / HTTP/1.1\r\n".to_vec();
        while input.len() <= MAX_HEAD_BYTES {
            input.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        // Still no blank line: too large even though incomplete.
        let err = error(&input);
        assert_eq!(status(err), 431);
        // One long line without an end is also too large.
        let mut long = b"GET /".to_vec();
        long.resize(MAX_HEAD_BYTES + 10, b'a');
        assert_eq!(error(&long), Error::HeadTooLarge);
        // Too many headers.
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(error(&many), Error::TooManyHeaders);
    }

    #[test]
    fn a_head_just_under_the_limit_is_accepted() {
        let mut input = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        input.resize(MAX_HEAD_BYTES - 4, b'a');
        input.extend_from_slice(b"\r\n\r\n");
        assert_eq!(input.len(), MAX_HEAD_BYTES);
        complete(&input);
    }

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize), Error> {
        let mut decoder = ChunkedDecoder::new();
        let used = decoder.feed(input)?;
        assert!(decoder.is_done(), "not done after {input:?}");
        Ok((decoder.into_body(), used))
    }

    #[test]
    fn chunked_body_decodes() {
        let input = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\nNEXT";
        let (body, used) = decode_all(input).expect("valid");
        assert_eq!(body, b"Wikipedia in\r\n\r\nchunks.");
        assert_eq!(&input[used..], b"NEXT");
    }

    #[test]
    fn chunked_body_with_bare_lf_and_trailers_decodes() {
        let input = b"3\nabc\n0\nX-Trailer: yes\n\n";
        let (body, used) = decode_all(input).expect("valid");
        assert_eq!(body, b"abc");
        assert_eq!(used, input.len());
    }

    #[test]
    fn chunked_body_fed_byte_by_byte_decodes() {
        let input = b"4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n";
        let mut decoder = ChunkedDecoder::new();
        let mut pending = Vec::new();
        for &byte in input.iter() {
            pending.push(byte);
            let used = decoder.feed(&pending).expect("valid so far");
            pending.drain(..used);
        }
        assert!(decoder.is_done());
        assert!(pending.is_empty());
        assert_eq!(decoder.into_body(), b"Wikipedia");
    }

    #[test]
    fn every_prefix_of_a_chunked_body_is_incomplete() {
        let input = b"4\r\nWiki\r\n0\r\n\r\n";
        for end in 0..input.len() {
            let mut decoder = ChunkedDecoder::new();
            decoder.feed(&input[..end]).expect("prefix is valid");
            assert!(!decoder.is_done(), "done after {end} bytes");
        }
    }

    #[test]
    fn bad_chunks_are_rejected() {
        let cases: [(&[u8], Error); 6] = [
            (b"xyz\r\n", Error::ChunkSize),
            (b"\r\n", Error::ChunkSize),
            (b"-1\r\n", Error::ChunkSize),
            (b"4 garbage\r\n", Error::ChunkSize),
            (b"1000000000000000\r\n", Error::ChunkSize),
            (b"3\r\nabcX\r\n", Error::ChunkEnd),
        ];
        for (input, expected) in cases {
            let mut decoder = ChunkedDecoder::new();
            assert_eq!(decoder.feed(input), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn chunked_body_over_the_limit_is_413_as_soon_as_the_sum_passes() {
        let mut decoder = ChunkedDecoder::new();
        let first = format!("{:x}\r\n", MAX_BODY_BYTES);
        assert_eq!(decoder.feed(first.as_bytes()), Ok(first.len()));
        let mut data = vec![b'a'; MAX_BODY_BYTES];
        data.extend_from_slice(b"\r\n1\r\n");
        assert_eq!(
            decoder.feed(&data),
            Err(Error::BodyTooLarge {
                limit: MAX_BODY_BYTES as u64
            })
        );
    }

    #[test]
    fn decode_hands_out_each_piece_in_place_as_soon_as_it_arrives() {
        let mut decoder = ChunkedDecoder::with_limit(u64::MAX);
        // Half a chunk: its data is handed out at once, not held back.
        let first = b"a\r\nhello";
        let step = decoder.decode(first).expect("valid");
        assert_eq!((step.used, &first[step.data.clone()]), (8, &b"hello"[..]));
        let rest = b"world\r\n3\r\nabc\r\n0\r\n\r\n";
        let mut pos = 0;
        let mut pieces = Vec::new();
        while !decoder.is_done() {
            let step = decoder.decode(&rest[pos..]).expect("valid");
            if !step.data.is_empty() {
                pieces.push(rest[pos + step.data.start..pos + step.data.end].to_vec());
            }
            pos += step.used;
        }
        assert_eq!(pieces, [b"world".to_vec(), b"abc".to_vec()]);
        assert_eq!(pos, rest.len());
        assert!(decoder.into_body().is_empty(), "decode keeps nothing");
    }

    #[test]
    fn endless_chunk_size_line_is_rejected() {
        let mut decoder = ChunkedDecoder::new();
        let line = vec![b'0'; MAX_CHUNK_LINE_BYTES + 1];
        assert_eq!(decoder.feed(&line), Err(Error::ChunkSize));
    }

    fn response(input: &[u8], to_head: bool) -> (ResponseHead, usize) {
        match parse_response_head(input, to_head) {
            Ok(Status::Complete(done)) => done,
            other => panic!("expected a complete response head, got {other:?}"),
        }
    }

    #[test]
    fn response_heads_frame_as_rfc_9112_says() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Node: a\r\n\r\nhello";
        let (head, used) = response(ok, false);
        assert_eq!(head.status, 200);
        assert_eq!(head.status_line, "HTTP/1.1 200 OK");
        assert_eq!(head.framing, Framing::Length(5));
        assert_eq!(&ok[used..], b"hello");
        assert!(!head.closes);
        // HEAD, 1xx, 204 and 304 have no body whatever the headers say.
        assert_eq!(response(ok, true).0.framing, Framing::Empty);
        for status in ["100 Continue", "204 No Content", "304 Not Modified"] {
            let input = format!("HTTP/1.1 {status}\r\nContent-Length: 5\r\n\r\n");
            assert_eq!(response(input.as_bytes(), false).0.framing, Framing::Empty);
        }
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(response(chunked, false).0.framing, Framing::Chunked);
        let gzip = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n";
        assert_eq!(response(gzip, false).0.framing, Framing::UntilClose);
        let bare = b"HTTP/1.0 200 OK\n\n";
        let (head, _) = response(bare, false);
        assert_eq!(head.framing, Framing::UntilClose);
        assert!(head.closes);
        let close = b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        let (head, _) = response(close, false);
        assert!(head.closes);
        assert_eq!(head.framing, Framing::Empty);
        // A reason phrase is optional.
        assert_eq!(response(b"HTTP/1.1 503\r\n\r\n", false).0.status, 503);
    }

    #[test]
    fn every_prefix_of_a_response_head_is_partial() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n";
        for end in 0..input.len() {
            assert_eq!(
                parse_response_head(&input[..end], false),
                Ok(Status::Partial),
                "{end}"
            );
        }
    }

    #[test]
    fn malformed_response_heads_are_rejected() {
        let cases: [&[u8]; 7] = [
            b"HTTP/2 200 OK\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 099 Low\r\n\r\n",
            b"garbage\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        ];
        for input in cases {
            assert!(
                parse_response_head(input, false).is_err(),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    /// Tiny xorshift so the storm needs no dependency.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn random_and_mutated_heads_never_panic() {
        let seeds: [&[u8]; 3] = [
            POST,
            b"GET /bookings/abc HTTP/1.1\nHost: x\nConnection: close\n\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for round in 0..20_000 {
            let mut input = seeds[round % seeds.len()].to_vec();
            for _ in 0..(xorshift(&mut state) % 6) {
                let at = (xorshift(&mut state) as usize) % (input.len() + 1);
                match xorshift(&mut state) % 4 {
                    0 if at < input.len() => input[at] = xorshift(&mut state) as u8,
                    1 => input.insert(at, xorshift(&mut state) as u8),
                    2 if at < input.len() => {
                        input.remove(at);
                    }
                    _ => input.truncate(at),
                }
            }
            if let Ok(Status::Complete((req, used))) = parse_request_head(&input) {
                assert!(used <= input.len());
                if req.framing == Framing::Chunked {
                    let _ = ChunkedDecoder::new().feed(&input[used..]);
                }
            }
        }
    }
}
