//! A small blocking HTTP/1.1 client over one keep-alive connection, for the
//! examples and benchmarks: send a request, read the answer by its framing
//! (with the same client-side code the relay uses), keep the connection.

use crate::http::upstream::{length_framing, write_request_head, BodyReader, Upstream};
use crate::http::Header;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Largest answer body the client accepts.
const MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;

/// One answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }
}

/// A keep-alive connection to one server.
pub struct HttpClient {
    addr: SocketAddr,
    upstream: Upstream,
    timeout: Duration,
}

impl HttpClient {
    /// Connects, with `timeout` for the connect and for each answer.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<HttpClient> {
        Ok(HttpClient {
            addr,
            upstream: Upstream::connect(addr, timeout)?,
            timeout,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends one request (head and body in one write) and reads its answer.
    /// `headers` are extra lines such as `("Content-Type", "application/json")`.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Answer> {
        let host = self.addr.to_string();
        let mut wire = Vec::with_capacity(128 + body.len());
        write_request_head(
            &mut wire,
            method,
            path,
            std::iter::once(("Host", host.as_str())).chain(headers.iter().copied()),
            length_framing(method, body.len()),
        );
        wire.extend_from_slice(body);
        self.upstream.send(&wire)?;
        self.read_answer(method == "HEAD")
    }

    fn read_answer(&mut self, to_head: bool) -> io::Result<Answer> {
        let invalid = |e: crate::http::upstream::ReadError| {
            io::Error::new(io::ErrorKind::InvalidData, e.to_string())
        };
        let head = self
            .upstream
            .read_head(to_head, self.timeout)
            .map_err(invalid)?;
        let body = BodyReader::new(head.framing, self.timeout)
            .read_to_vec(&mut self.upstream, MAX_BODY_BYTES)
            .map_err(invalid)?;
        Ok(Answer {
            status: head.status,
            headers: head.headers,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::thread;

    #[test]
    fn keep_alive_requests_are_framed_by_length_and_chunks() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut seen = Vec::new();
            let mut chunk = [0u8; 1024];
            // Two requests, answered once both heads have arrived.
            while seen.windows(4).filter(|w| w == b"\r\n\r\n").count() < 2 {
                let n = stream.read(&mut chunk).expect("read");
                assert!(n > 0);
                seen.extend_from_slice(&chunk[..n]);
            }
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Node: n\r\n\r\nhelloHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
                .expect("write");
            String::from_utf8(seen).expect("utf8")
        });
        let mut client = HttpClient::connect(addr, Duration::from_secs(5)).expect("connect");
        // Pipelining by hand: send both, then read both.
        client
            .upstream
            .stream
            .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("send");
        let first = client.read_answer(false).expect("first");
        assert_eq!(
            (first.status, first.body.as_slice(), first.header("x-node")),
            (200, &b"hello"[..], Some("n"))
        );
        let second = client.read_answer(false).expect("second");
        assert_eq!((second.status, second.body.as_slice()), (201, &b"abc"[..]));
        assert!(server.join().expect("server").contains("GET /b"));
    }
}
