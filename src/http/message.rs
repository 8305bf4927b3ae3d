//! The shared types of an HTTP/1.1 message, with the limits that bound them: [`Request`], the
//! [`ResponseHead`] read back, their [`Framing`], the [`Response`] a handler builds, and the
//! two small header helpers the parser and the connection loop both use. Every file of `http`
//! builds on these; this one builds on none of them.

use std::time::Duration;

/// Request line plus headers. Large enough for long cookies and tokens, small
/// enough that a client cannot make us buffer without bound (nginx's default
/// `large_client_header_buffers` is 4 × 8 KiB).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Largest request body: a booking is well under 4 KiB, so 1 MiB is generous
/// and keeps one request from tying up much memory.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Most header lines in one head; more is a sign of abuse, not of a real client.
pub const MAX_HEADERS: usize = 100;

/// The whole head must arrive within this time of its first byte, so a client
/// that trickles bytes (slowloris) cannot hold a connection forever.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// A keep-alive connection with no request in progress is closed after this.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// Longest silence while a body is being received.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The slowest a request body may arrive on average: a body gets
/// [`BODY_TIMEOUT`] plus one second for each this many bytes received, so a
/// client trickling a byte now and then (never silent for long) cannot hold
/// its connection for as long as it likes (Apache's `MinRate`). At this rate
/// a 1 MiB body has 74 s.
pub const MIN_BODY_BYTES_PER_SEC: u64 = 16 * 1024;

/// HTTP versions we speak. Anything else is answered 505.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// How the body of a message is delimited, decided from its head (RFC 9112 §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body at all (for a response: also the answer to `HEAD`, or status
    /// 1xx, 204, 304).
    Empty,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Responses only: neither length nor chunked, so the body ends when the
    /// server closes. A request framed by neither has no body.
    UntilClose,
}

/// One header line. Names keep the client's spelling; compare them with
/// [`eq_ignore_case`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// A parsed request. The body is empty until [`conn`](super::conn) has read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target as sent: path plus optional `?query`.
    pub target: String,
    pub version: Version,
    pub headers: Vec<Header>,
    pub framing: Framing,
    /// Whether the connection may stay open after this exchange
    /// (HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with `keep-alive`).
    pub keep_alive: bool,
    /// The client sent `Expect: 100-continue` and waits before sending its body.
    pub expects_continue: bool,
    pub body: Vec<u8>,
}

impl Request {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| eq_ignore_case(&h.name, name))
            .map(|h| h.value.as_str())
    }

    /// The target without its query string.
    pub fn path(&self) -> &str {
        match self.target.find('?') {
            Some(i) => &self.target[..i],
            None => &self.target,
        }
    }

    /// The query string after `?`, if any.
    pub fn query(&self) -> Option<&str> {
        self.target.find('?').map(|i| &self.target[i + 1..])
    }

    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

/// A parsed response head, as the relay reads it from a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// The status line as sent, without its line ending, passed on unchanged.
    pub status_line: String,
    pub headers: Vec<Header>,
    pub framing: Framing,
    /// The server will close after this response (`Connection: close`, or
    /// HTTP/1.0 without keep-alive).
    pub closes: bool,
}

/// A response to write. `Content-Length` and `Connection` are added by
/// [`write_response`](super::write::write_response); handlers set everything else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// Close the connection after this response, whatever the client asked.
    pub close: bool,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            close: false,
        }
    }

    /// A response with a JSON body.
    pub fn json(status: u16, body: String) -> Response {
        Response::new(status)
            .with_header("Content-Type", "application/json")
            .with_body(body.into_bytes())
    }

    /// The JSON error every failure carries: `{"error":"<sentence>"}`.
    pub fn error(status: u16, sentence: &str) -> Response {
        let mut body = String::with_capacity(sentence.len() + 12);
        body.push_str("{\"error\":");
        crate::json::write_str(&mut body, sentence);
        body.push('}');
        Response::json(status, body)
    }

    /// 405 to a method the path does not take, with the `Allow` header naming
    /// those it does (`"GET, HEAD"`).
    pub fn method_not_allowed(allow: &'static str) -> Response {
        Response::error(405, &format!("this path accepts only {allow}")).with_header("Allow", allow)
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    pub fn with_body(mut self, body: Vec<u8>) -> Response {
        self.body = body;
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| eq_ignore_case(n, name))
            .map(|(_, v)| v.as_str())
    }
}

/// ASCII case-insensitive comparison, as header names and tokens need.
pub fn eq_ignore_case(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Whether a comma-separated header value (like `Connection: keep-alive, Upgrade`)
/// contains `token`, ignoring case and spaces.
pub fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}
