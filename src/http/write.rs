//! Responses back to bytes, appended to a buffer the caller writes in one call.
//!
//! Head and body go out in a single `write`: two writes per message cost a
//! quarter of the throughput in measurements, and with Nagle's algorithm they
//! can add a delayed-ACK wait of tens of milliseconds.

use super::{reason_phrase, Response, Version};
use std::fmt::Write as _;

/// Whether a status code may carry a body (RFC 9112 §6.3: 1xx, 204 and 304 never do).
pub fn status_has_body(status: u16) -> bool {
    !(100..200).contains(&status) && status != 204 && status != 304
}

/// Appends `response` to `out`.
///
/// `Content-Length` is added for every status that can have a body, so the
/// client can frame it; for `HEAD` (`head_only`) the length is that of the body
/// a `GET` would have had, and the body is left out. `Connection` says `close`
/// when `close` is set, and `keep-alive` for HTTP/1.0 clients that keep it open.
pub fn write_response(
    out: &mut Vec<u8>,
    response: &Response,
    version: Version,
    head_only: bool,
    close: bool,
) {
    let mut head = String::with_capacity(128 + response.headers.len() * 32);
    let _ = write!(
        head,
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason_phrase(response.status)
    );
    for (name, value) in &response.headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    let has_body = status_has_body(response.status);
    if has_body {
        let _ = write!(head, "Content-Length: {}\r\n", response.body.len());
    }
    out.extend_from_slice(head.as_bytes());
    write_connection(out, version, close);
    out.extend_from_slice(b"\r\n");
    if has_body && !head_only {
        out.extend_from_slice(&response.body);
    }
}

fn write_connection(out: &mut Vec<u8>, version: Version, close: bool) {
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if version == Version::Http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
}

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn written(response: &Response, version: Version, head_only: bool, close: bool) -> String {
        let mut out = Vec::new();
        write_response(&mut out, response, version, head_only, close);
        String::from_utf8(out).expect("ASCII")
    }

    #[test]
    fn json_response_has_length_and_body() {
        let response = Response::json(200, "{\"a\":1}".into()).with_header("X-Node", "n1");
        assert_eq!(
            written(&response, Version::Http11, false, false),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Node: n1\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
        );
    }

    #[test]
    fn head_keeps_the_length_but_not_the_body() {
        let response = Response::json(200, "{\"a\":1}".into());
        let text = written(&response, Version::Http11, true, false);
        assert!(text.contains("Content-Length: 7\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn no_content_has_no_length_and_no_body() {
        let response = Response::new(204);
        assert_eq!(
            written(&response, Version::Http11, false, false),
            "HTTP/1.1 204 No Content\r\n\r\n"
        );
    }

    #[test]
    fn connection_header_follows_the_decision() {
        let response = Response::new(200);
        assert!(written(&response, Version::Http11, false, true).contains("Connection: close\r\n"));
        assert!(written(&response, Version::Http10, false, false)
            .contains("Connection: keep-alive\r\n"));
        assert!(!written(&response, Version::Http11, false, false).contains("Connection"));
    }

    #[test]
    fn error_bodies_are_json_with_escaped_sentences() {
        let response = Response::error(400, "say \"hi\"");
        assert_eq!(response.body, br#"{"error":"say \"hi\""}"#);
        assert_eq!(response.header("content-type"), Some("application/json"));
    }
}
