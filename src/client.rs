//! A small blocking HTTP/1.1 client over one keep-alive connection, for the
//! examples and benchmarks: send a request, read the answer by its framing
//! (with the same response parser the relay uses), keep the connection.

use crate::http::buffer::InputBuffer;
use crate::http::parse::{parse_response_head, ChunkedDecoder, ResponseFraming, Status};
use crate::http::Header;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
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
    stream: TcpStream,
    input: InputBuffer,
}

fn invalid(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

impl HttpClient {
    /// Connects, with `timeout` for the connect and for each answer.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<HttpClient> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(HttpClient {
            addr,
            stream,
            input: InputBuffer::new(),
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
        let mut wire = Vec::with_capacity(128 + body.len());
        wire.extend_from_slice(
            format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr).as_bytes(),
        );
        for (name, value) in headers {
            wire.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
            wire.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        wire.extend_from_slice(b"\r\n");
        wire.extend_from_slice(body);
        self.stream.write_all(&wire)?;
        self.read_answer(method == "HEAD")
    }

    fn fill(&mut self) -> io::Result<()> {
        match self.input.read_from(&mut self.stream)? {
            0 => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )),
            _ => Ok(()),
        }
    }

    fn read_answer(&mut self, to_head: bool) -> io::Result<Answer> {
        let (head, used) = loop {
            match parse_response_head(self.input.data(), to_head)
                .map_err(|e| invalid(e.sentence()))?
            {
                Status::Complete((head, used)) if (100..200).contains(&head.status) => {
                    self.input.consume(used)
                }
                Status::Complete(done) => break done,
                Status::Partial => self.fill()?,
            }
        };
        self.input.consume(used);
        let body = match head.framing {
            ResponseFraming::Empty => Vec::new(),
            ResponseFraming::Length(length) if length <= MAX_BODY_BYTES => {
                let length = length as usize;
                while self.input.len() < length {
                    self.fill()?;
                }
                let body = self.input.data()[..length].to_vec();
                self.input.consume(length);
                body
            }
            ResponseFraming::Length(_) => return Err(invalid("the answer is too large")),
            ResponseFraming::Chunked => {
                let mut decoder = ChunkedDecoder::with_limit(MAX_BODY_BYTES);
                loop {
                    let used = decoder
                        .feed(self.input.data())
                        .map_err(|e| invalid(e.sentence()))?;
                    self.input.consume(used);
                    if decoder.is_done() {
                        break decoder.into_body();
                    }
                    self.fill()?;
                }
            }
            ResponseFraming::UntilClose => {
                while self.input.read_from(&mut self.stream)? > 0 {}
                let body = self.input.data().to_vec();
                self.input.consume(body.len());
                body
            }
        };
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
    use std::io::Read;
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
