//! HTTP/1.1 messages as nodes and the relay see them.
//!
//! The seed project read one 1024-byte chunk and answered with `Connection: close`;
//! its relay then waited on a 200 ms timer to decide a response was over. Here a
//! message is framed only by `Content-Length` or `Transfer-Encoding: chunked`, so a
//! connection can carry any number of requests and never waits on a clock.
//!
//! - [`parse`]: bytes to request heads and chunked bodies. Pure, no sockets.
//! - [`write`](mod@write): responses back to bytes. Pure.
//! - [`conn`]: one client socket: buffering, keep-alive, pipelining, half-close,
//!   timeouts and `Expect: 100-continue`. It knows no routes: a [`conn::Handler`] does.
//! - [`upstream`]: the client side, one connection to a server: request heads
//!   out, response heads and bodies (streamed piece by piece) back.
//!
//! The shared types ([`Request`] and the [`ResponseHead`] read back, their
//! [`Framing`], [`Response`], the limits) live in `message.rs`, below every other
//! file here, and are re-exported from this module. This file holds [`Error`], a
//! refused request: its bytes ([`parse::Error`], which knows no status codes) or
//! its pace, with the one status code and sentence a person can act on; and the
//! small text helpers (percent-decoding, the booking id in a path, reason phrases).

pub mod body;
pub mod buffer;
pub mod conn;
mod message;
pub mod parse;
pub mod server;
pub mod upstream;
pub mod write;

pub use message::*;

/// Why a request could not be read: its bytes ([`parse::Error`]) or its
/// pace. Every variant here means the framing of the connection is lost or
/// untrustworthy, so the connection closes after the answer. This is the one
/// place that chooses a refused request's status code and words its sentence,
/// from the limits' constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The bytes are not a request we take.
    Parse(parse::Error),
    HeadTimeout,
    BodyTimeout,
    /// The body arrived slower than [`MIN_BODY_BYTES_PER_SEC`] allows.
    BodyTooSlow,
}

impl From<parse::Error> for Error {
    fn from(error: parse::Error) -> Self {
        Error::Parse(error)
    }
}

impl Error {
    pub fn status(self) -> u16 {
        use parse::Error as Bytes;
        match self {
            Error::Parse(Bytes::Version) => 505,
            Error::Parse(Bytes::HeadTooLarge | Bytes::TooManyHeaders) => 431,
            Error::Parse(Bytes::BodyTooLarge { .. }) => 413,
            Error::Parse(Bytes::StatusLine) => 502,
            Error::Parse(_) => 400,
            Error::HeadTimeout | Error::BodyTimeout | Error::BodyTooSlow => 408,
        }
    }

    /// One sentence a person typing into `nc` can act on.
    pub fn sentence(self) -> std::borrow::Cow<'static, str> {
        use parse::Error as Bytes;
        let fixed = match self {
            Error::Parse(Bytes::RequestLine) => {
                "the request line must look like 'GET /bookings HTTP/1.1' (method, target, version, separated by single spaces)"
            }
            Error::Parse(Bytes::Method) => "the method must be a token such as GET or POST",
            Error::Parse(Bytes::Target) => "the request target must be printable ASCII without spaces, like /bookings?limit=5",
            Error::Parse(Bytes::Version) => "only HTTP/1.0 and HTTP/1.1 are supported",
            Error::Parse(Bytes::HeaderName) => {
                "a header line must look like 'Name: value', with no space before the colon"
            }
            Error::Parse(Bytes::HeaderValue) => "a header value contains a control character or invalid UTF-8",
            Error::Parse(Bytes::ObsFold) => "header lines may not be continued on a line starting with a space or tab",
            Error::Parse(Bytes::HeadTooLarge) => {
                return format!(
                    "the request line and headers must fit in {}",
                    human_bytes(MAX_HEAD_BYTES as u64)
                )
                .into()
            }
            Error::Parse(Bytes::TooManyHeaders) => {
                return format!("a request may carry at most {MAX_HEADERS} header lines").into()
            }
            Error::Parse(Bytes::ContentLength) => "Content-Length must be a decimal number of bytes",
            Error::Parse(Bytes::ConflictingLength) => "the request carries differing Content-Length values",
            Error::Parse(Bytes::LengthAndChunked) => {
                "a request may not carry both Content-Length and Transfer-Encoding"
            }
            Error::Parse(Bytes::TransferEncoding) => "the only Transfer-Encoding accepted is 'chunked'",
            Error::Parse(Bytes::ChunkSize) => "a chunk must start with its size in hexadecimal on a line of its own",
            Error::Parse(Bytes::ChunkEnd) => "chunk data must be followed by a line break",
            Error::Parse(Bytes::BodyTooLarge { limit }) => {
                return format!(
                    "the request body must be at most {} ({limit} bytes)",
                    human_bytes(limit)
                )
                .into()
            }
            Error::HeadTimeout => {
                return format!(
                    "the request head did not arrive within {} seconds",
                    HEAD_TIMEOUT.as_secs()
                )
                .into()
            }
            Error::BodyTooSlow => {
                return format!(
                    "the request body arrived too slowly (it may take {} seconds plus one \
                     second per {} received)",
                    BODY_TIMEOUT.as_secs(),
                    human_bytes(MIN_BODY_BYTES_PER_SEC)
                )
                .into()
            }
            Error::BodyTimeout => {
                return format!(
                    "the request body stopped arriving for {} seconds",
                    BODY_TIMEOUT.as_secs()
                )
                .into()
            }
            Error::Parse(Bytes::DuplicateHost) => "a request may carry only one Host header",
            Error::Parse(Bytes::StatusLine) => "the node answered with a malformed status line",
        };
        fixed.into()
    }

    /// The JSON error response for this failure; always closes the connection.
    pub fn response(self) -> Response {
        let mut response = Response::error(self.status(), &self.sentence());
        response.close = true;
        response
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.sentence())
    }
}

impl std::error::Error for Error {}

/// `1 MiB`, `8 MiB`, `64 KiB`, `1500 bytes`: a limit as a person would say it.
pub fn human_bytes(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// Decodes `%XX` escapes (and `+` as a space, as HTML forms send); `None` if
/// an escape is malformed or the result is not UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    if !text.contains(['%', '+']) {
        return Some(text.to_string());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The booking id in a `/bookings/{id}` path, percent-decoded: the one
/// reading that a node's routes and the relay's consistent-hash key share, so
/// `/bookings/a%2D1` and `/bookings/a-1` are the same booking to both.
pub fn booking_id_in_path(path: &str) -> Option<std::borrow::Cow<'_, str>> {
    let raw = path.strip_prefix("/bookings/")?;
    if raw.is_empty() || raw.contains('/') {
        return None;
    }
    if !raw.contains(['%', '+']) {
        return Some(raw.into());
    }
    Some(
        percent_decode(raw)
            .unwrap_or_else(|| raw.to_string())
            .into(),
    )
}

/// The standard reason phrase of a status code.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::parse::Error as Bytes;
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), Some("a b c".into()));
        assert_eq!(percent_decode("plain"), Some("plain".into()));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }

    /// The node's route and the relay's routing key both read the id here.
    #[test]
    fn the_booking_id_in_a_path_is_percent_decoded() {
        assert_eq!(booking_id_in_path("/bookings/abc").as_deref(), Some("abc"));
        assert_eq!(
            booking_id_in_path("/bookings/a%2D1").as_deref(),
            Some("a-1")
        );
        assert_eq!(booking_id_in_path("/bookings"), None);
        assert_eq!(booking_id_in_path("/bookings/"), None);
        assert_eq!(booking_id_in_path("/bookings/a/b"), None);
        assert_eq!(booking_id_in_path("/health"), None);
    }

    #[test]
    fn every_error_has_a_4xx_or_505_status_and_a_sentence() {
        let all = [
            Bytes::RequestLine,
            Bytes::Method,
            Bytes::Target,
            Bytes::Version,
            Bytes::HeaderName,
            Bytes::HeaderValue,
            Bytes::ObsFold,
            Bytes::HeadTooLarge,
            Bytes::TooManyHeaders,
            Bytes::ContentLength,
            Bytes::ConflictingLength,
            Bytes::LengthAndChunked,
            Bytes::TransferEncoding,
            Bytes::ChunkSize,
            Bytes::ChunkEnd,
            Bytes::BodyTooLarge { limit: 1 },
            Bytes::DuplicateHost,
        ]
        .map(Error::Parse)
        .into_iter()
        .chain([Error::HeadTimeout, Error::BodyTimeout]);
        for e in all {
            let status = e.status();
            assert!((400..500).contains(&status) || status == 505, "{e:?}");
            assert!(e.sentence().len() > 10);
            let response = e.response();
            assert!(response.close);
            assert!(String::from_utf8_lossy(&response.body).starts_with("{\"error\":\""));
        }
    }
}
