//! Shared test support: a node on port 0 over a SQLite file in a temp dir,
//! and a raw-socket HTTP client that sends exactly the bytes it is given
//! (as `nc` would) and frames answers by `Content-Length`.

#![allow(dead_code)]

use bookrelay::json::{self, Value};
use bookrelay::launch;
use bookrelay::node::{NodeConfig, NodeServer};
use bookrelay::temp_dir::TempDir;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

/// How long a test waits for any answer before failing instead of hanging.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

/// A node serving a fresh database; both vanish when dropped.
pub struct TestNode {
    pub server: NodeServer,
    pub addr: SocketAddr,
    pub db: PathBuf,
    // Dropped last: the server must stop before its files go.
    pub dir: TempDir,
}

impl TestNode {
    /// A node named `name` with `seed` sample bookings.
    pub fn start(name: &str, seed: usize) -> TestNode {
        let dir = TempDir::new(name);
        let db = dir.path().join("bookings.db");
        TestNode::start_on(name, seed, dir, db)
    }

    /// Another node on an existing database file.
    pub fn start_on(name: &str, seed: usize, dir: TempDir, db: PathBuf) -> TestNode {
        launch::prepare_database(&db, seed).expect("prepare database");
        let config = NodeConfig {
            name: name.to_string(),
            db: db.clone(),
            cache_capacity: 1024,
            cache_ttl: Some(Duration::from_secs(60)),
            delay: Duration::ZERO,
        };
        let listener = launch::bind("127.0.0.1:0").expect("bind");
        let server = launch::start_node(&config, listener).expect("start node");
        let addr = server.addr();
        TestNode {
            server,
            addr,
            db,
            dir,
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Some booking id present in the seeded database.
    pub fn some_id(&self) -> String {
        let page = self.client().get("/bookings?limit=1").json();
        page.get("items")
            .and_then(Value::as_array)
            .and_then(|items| items.first())
            .and_then(|b| b.get("booking_id"))
            .and_then(Value::as_str)
            .expect("a seeded booking")
            .to_string()
    }
}

/// A response as it came off the wire.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        json::parse(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The `error` sentence of a JSON error body.
    pub fn error(&self) -> String {
        self.json()
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no error field in {}", self.text()))
            .to_string()
    }

    pub fn str_field(&self, field: &str) -> String {
        self.json()
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no string field {field} in {}", self.text()))
            .to_string()
    }
}

/// One client connection speaking raw bytes.
pub struct Client {
    pub stream: TcpStream,
    buffer: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(ANSWER_TIMEOUT))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            stream,
            buffer: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Half-closes: the server sees EOF after what was sent.
    pub fn finish_sending(&mut self) {
        self.stream.shutdown(Shutdown::Write).expect("shutdown");
    }

    /// Sends a request with the usual headers and reads its answer.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
        for (name, value) in headers {
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() || matches!(method, "POST" | "PATCH") {
            raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        raw.push_str("\r\n");
        let mut bytes = raw.into_bytes();
        bytes.extend_from_slice(body);
        self.send(&bytes);
        self.read_reply(method == "HEAD")
            .unwrap_or_else(|| panic!("no answer to {method} {path}"))
    }

    pub fn get(&mut self, path: &str) -> Reply {
        self.request("GET", path, &[], b"")
    }

    pub fn post_json(&mut self, path: &str, body: &str) -> Reply {
        self.request(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    }

    pub fn patch_json(&mut self, path: &str, body: &str) -> Reply {
        self.request(
            "PATCH",
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(n) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                n
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset) => 0,
            Err(e) => panic!("read failed: {e}"),
        }
    }

    /// Reads one response (skipping `100 Continue` only if `skip_interim`);
    /// `None` if the server closed first.
    pub fn read_reply(&mut self, head_request: bool) -> Option<Reply> {
        let head_end = loop {
            if let Some(i) = find(&self.buffer, b"\r\n\r\n") {
                break i + 4;
            }
            if self.fill() == 0 {
                assert!(
                    self.buffer.is_empty(),
                    "server closed mid-response: {:?}",
                    String::from_utf8_lossy(&self.buffer)
                );
                return None;
            }
        };
        let head = String::from_utf8(self.buffer[..head_end].to_vec()).expect("ASCII head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("status line");
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(':').expect("header colon");
                (n.to_string(), v.trim().to_string())
            })
            .collect();
        let length = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse::<usize>().expect("numeric length"))
            .unwrap_or(0);
        let body_length = if head_request || status == 204 || status < 200 {
            0
        } else {
            length
        };
        while self.buffer.len() < head_end + body_length {
            assert!(self.fill() > 0, "server closed mid-body");
        }
        let body = self.buffer[head_end..head_end + body_length].to_vec();
        self.buffer.drain(..head_end + body_length);
        Some(Reply {
            status,
            headers,
            body,
        })
    }

    /// True if the server closes the connection (EOF) with nothing more to say.
    pub fn is_closed_by_server(&mut self) -> bool {
        self.buffer.is_empty() && self.fill() == 0 && self.buffer.is_empty()
    }

    /// Everything the server sends until it closes.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        while self.fill() > 0 {}
        std::mem::take(&mut self.buffer)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A complete, valid booking body with the given id.
pub fn booking_body(id: &str) -> String {
    format!(
        r#"{{"booking_id":"{id}","customer_id":"C-1","customer_name":"Ada Lovelace","email":"ada@example.com","phone":"+44 20 7946 0000","destination":"Lisbon","departure_city":"London","flight_number":"TP1351","hotel_name":"Hotel Avenida","room_type":"Double","booking_date":"2025-05-01","travel_date":"2025-06-01","return_date":"2025-06-08","total_price":812.5,"payment_status":"Paid","payment_method":"Card"}}"#
    )
}

/// The same without a `booking_id`, so the node generates one.
pub fn booking_body_without_id() -> String {
    booking_body("x").replace(r#""booking_id":"x","#, "")
}
