//! Shared test support: a node on port 0 over a SQLite file in a temp dir,
//! and a raw-socket HTTP client that sends exactly the bytes it is given
//! (as `nc` would) and frames answers by `Content-Length`.

#![allow(dead_code)]

pub mod backends;
pub mod events;
pub mod storm;

use bookrelay::json::{self, Value};
use bookrelay::launch;
use bookrelay::node::{self, NodeConfig, NodeServer};
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
        let listener = node::bind("127.0.0.1:0").expect("bind");
        let server = node::start_node(&config, listener).expect("start node");
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
        some_id(self.addr)
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
        // Host as curl sends it: the address connected to (the relay's
        // admin calls check it against DNS rebinding).
        let host = self.stream.peer_addr().expect("peer address");
        let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
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

    /// Waits for the server to close the connection without sending any
    /// more: true on its end of file, false if bytes came instead.
    pub fn closed_by_server(&mut self) -> bool {
        self.buffer.is_empty() && self.fill() == 0
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

// ---------------------------------------------------------------------------
// Relay support.

use bookrelay::cli::RelayConfig;
use bookrelay::http::parse::{parse_request_head, Status};
use bookrelay::http::Request;
use bookrelay::relay::RelayServer;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

/// A relay over node threads (and any backends) on a fresh database.
pub struct TestRelay {
    pub server: RelayServer,
    pub addr: SocketAddr,
    pub db: PathBuf,
    pub dir: TempDir,
}

impl TestRelay {
    /// A relay with `nodes` node threads, `seed` bookings, the named balancer,
    /// and fast health checks; `adjust` may change anything else first.
    pub fn start(
        nodes: usize,
        seed: usize,
        balancer: &str,
        adjust: impl FnOnce(&mut RelayConfig),
    ) -> TestRelay {
        let dir = TempDir::new("relay");
        let db = dir.path().join("bookings.db");
        let mut config = RelayConfig {
            listen: "127.0.0.1:0".into(),
            nodes,
            balancer: balancer.into(),
            db: db.clone(),
            seed,
            health_interval: Duration::from_millis(100),
            ..RelayConfig::default()
        };
        adjust(&mut config);
        let server = launch::start_relay(&config).expect("start relay");
        let addr = server.addr();
        TestRelay {
            server,
            addr,
            db,
            dir,
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    pub fn status(&self) -> Value {
        self.client().get("/_relay/status").json()
    }

    /// The status entry of the node named `name`.
    pub fn node_status(&self, name: &str) -> Value {
        let status = self.status();
        status
            .get("nodes")
            .and_then(Value::as_array)
            .and_then(|nodes| {
                nodes
                    .iter()
                    .find(|n| n.get("name").and_then(Value::as_str) == Some(name))
                    .cloned()
            })
            .unwrap_or_else(|| panic!("no node {name} in {}", status.to_json()))
    }

    pub fn node_names(&self) -> Vec<String> {
        self.status()
            .get("nodes")
            .and_then(Value::as_array)
            .expect("nodes")
            .iter()
            .map(|n| {
                n.get("name")
                    .and_then(Value::as_str)
                    .expect("name")
                    .to_string()
            })
            .collect()
    }

    /// Polls `/_relay/status` until `condition` holds, or panics after `limit`.
    pub fn wait_for_status(
        &self,
        what: &str,
        limit: Duration,
        condition: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let status = self.status();
            if condition(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {}",
                status.to_json()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The `field` of the node named `name` in a status document.
pub fn node_field(status: &Value, name: &str, field: &str) -> Value {
    status
        .get("nodes")
        .and_then(Value::as_array)
        .and_then(|nodes| {
            nodes
                .iter()
                .find(|n| n.get("name").and_then(Value::as_str) == Some(name))
        })
        .and_then(|n| n.get(field))
        .cloned()
        .unwrap_or(Value::Null)
}

/// A `bookrelay node` child process; killed (SIGKILL) when dropped.
pub struct NodeProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub name: String,
}

impl NodeProcess {
    /// Starts `bookrelay node` and waits for its "listening on" line.
    pub fn start(name: &str, db: &std::path::Path, listen: &str, extra: &[&str]) -> NodeProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bookrelay"))
            .args(["node", "--name", name, "--listen", listen, "--db"])
            .arg(db)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn bookrelay node");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("node printed its address")
                .expect("read stdout");
            if let Some(rest) = line.strip_prefix(&format!("node {name} listening on ")) {
                break rest.trim().parse().expect("address");
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        thread::spawn(move || for _ in lines {});
        NodeProcess {
            child,
            addr,
            name: name.to_string(),
        }
    }

    /// Kills the process abruptly, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a fake backend does with one request.
pub enum Act {
    /// Write these bytes, keep the connection.
    Reply(Vec<u8>),
    /// Write these bytes, then close.
    ReplyAndClose(Vec<u8>),
    /// Close without a word.
    Close,
}

/// A scriptable HTTP server that records what it receives.
pub struct FakeBackend {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Request>>>,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// Connections this backend has closed (its side dropped) so far.
    pub closed: Arc<AtomicUsize>,
}

/// A `200` with a JSON body; `/health` answers name the backend `fake`.
pub fn ok_reply(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Node: fake\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl FakeBackend {
    /// `act(request, index)` decides each answer; `index` counts requests
    /// across all connections. `/health` is always answered healthy and not
    /// recorded.
    pub fn start(act: impl Fn(&Request, usize) -> Act + Send + Sync + 'static) -> FakeBackend {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let act = Arc::new(act);
        {
            let received = Arc::clone(&received);
            let connections = Arc::clone(&connections);
            let closed = Arc::clone(&closed);
            thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { return };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let received = Arc::clone(&received);
                    let act = Arc::clone(&act);
                    let closed = Arc::clone(&closed);
                    thread::spawn(move || {
                        // `serve_fake` owns the stream: on return it is closed.
                        serve_fake(stream, &*act, &received);
                        closed.fetch_add(1, Ordering::SeqCst);
                    });
                }
            });
        }
        FakeBackend {
            addr,
            received,
            connections,
            closed,
        }
    }

    /// Waits until every connection accepted so far has been closed by this
    /// backend (so a pooled connection it dropped is really gone), or panics
    /// after `limit`.
    pub fn wait_all_closed(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let accepted = self.connections.load(Ordering::SeqCst);
            let closed = self.closed.load(Ordering::SeqCst);
            if closed == accepted {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the backend still has {} of {accepted} connections open",
                accepted - closed
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn received(&self) -> Vec<Request> {
        self.received.lock().expect("lock").clone()
    }
}

fn serve_fake(
    mut stream: TcpStream,
    act: &dyn Fn(&Request, usize) -> Act,
    received: &Mutex<Vec<Request>>,
) {
    let mut buffer = Vec::new();
    loop {
        let (mut request, used) = loop {
            match parse_request_head(&buffer) {
                Ok(Status::Complete(done)) => break done,
                Ok(Status::Partial) => {}
                Err(_) => return,
            }
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        buffer.drain(..used);
        if let bookrelay::http::Framing::Length(n) = request.framing {
            while buffer.len() < n as usize {
                let mut chunk = [0u8; 8192];
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(k) => buffer.extend_from_slice(&chunk[..k]),
                }
            }
            request.body = buffer.drain(..n as usize).collect();
        }
        if request.path() == "/health" || request.path() == "/stats" {
            let body = if request.path() == "/health" {
                r#"{"node":"fake","status":"ok"}"#
            } else {
                "{}"
            };
            let reply = ok_reply(body);
            if stream.write_all(&reply).is_err() || request.header("connection") == Some("close") {
                return;
            }
            continue;
        }
        let index = {
            let mut all = received.lock().expect("lock");
            all.push(request.clone());
            all.len() - 1
        };
        match act(&request, index) {
            Act::Reply(bytes) => {
                if stream.write_all(&bytes).is_err() {
                    return;
                }
            }
            Act::ReplyAndClose(bytes) => {
                let _ = stream.write_all(&bytes);
                return;
            }
            Act::Close => return,
        }
    }
}

/// Background GET load: `clients` threads, each on its own keep-alive
/// connection, until stopped. Every non-2xx answer is kept as a failure.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    completed: Arc<AtomicUsize>,
    threads: Vec<thread::JoinHandle<Vec<String>>>,
}

impl Load {
    pub fn start(addr: SocketAddr, clients: usize, path: &str) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let completed = Arc::new(AtomicUsize::new(0));
        let threads = (0..clients)
            .map(|_| {
                let stop = Arc::clone(&stop);
                let completed = Arc::clone(&completed);
                let path = path.to_string();
                thread::spawn(move || {
                    let mut client = Client::connect(addr);
                    let mut failures = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        let reply = client.get(&path);
                        if !(200..300).contains(&reply.status) {
                            failures.push(format!("{} {}", reply.status, reply.text()));
                        }
                        completed.fetch_add(1, Ordering::SeqCst);
                    }
                    failures
                })
            })
            .collect();
        Load {
            stop,
            completed,
            threads,
        }
    }

    pub fn completed(&self) -> usize {
        self.completed.load(Ordering::SeqCst)
    }

    /// Blocks until `more` further requests have completed.
    pub fn wait_for(&self, more: usize) {
        let target = self.completed() + more;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.completed() < target {
            assert!(
                Instant::now() < deadline,
                "load stalled at {}",
                self.completed()
            );
            thread::yield_now();
        }
    }

    /// Stops the load; returns how many requests completed and the failures.
    pub fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let failures = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().expect("load thread"))
            .collect();
        (self.completed.load(Ordering::SeqCst), failures)
    }
}

/// Sends an admin call and returns the reply.
pub fn admin(addr: SocketAddr, method: &str, path: &str, body: &str) -> Reply {
    let mut client = Client::connect(addr);
    let headers: &[(&str, &str)] = if body.is_empty() {
        &[]
    } else {
        &[("Content-Type", "application/json")]
    };
    client.request(method, path, headers, body.as_bytes())
}

/// `threads` clients at once, each POSTing `each` bookings (ids
/// `{prefix}{thread}-{i}`) on its own keep-alive connection; every status.
pub fn post_concurrently(addr: SocketAddr, threads: usize, each: usize, prefix: &str) -> Vec<u16> {
    thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut client = Client::connect(addr);
                    (0..each)
                        .map(|i| {
                            client
                                .post_json("/bookings", &booking_body(&format!("{prefix}{t}-{i}")))
                                .status
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("poster"))
            .collect()
    })
}

/// The first booking id a node or relay at `addr` lists.
pub fn some_id(addr: SocketAddr) -> String {
    some_ids(addr, 1).pop().expect("a seeded booking")
}

/// The ids of the first `limit` bookings, in id order.
pub fn some_ids(addr: SocketAddr, limit: usize) -> Vec<String> {
    let page = Client::connect(addr)
        .get(&format!("/bookings?limit={limit}"))
        .json();
    page.get("items")
        .and_then(Value::as_array)
        .expect("items")
        .iter()
        .map(|b| {
            b.get("booking_id")
                .and_then(Value::as_str)
                .expect("id")
                .to_string()
        })
        .collect()
}

/// HEAD of `path` answers like GET (same status and `Content-Length`) with
/// no body, and leaves the connection in step for the next request.
pub fn assert_head_matches_get(client: &mut Client, path: &str) {
    let get = client.get(path);
    let head = client.request("HEAD", path, &[], b"");
    assert_eq!(head.status, get.status);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(get.body.len().to_string().as_str())
    );
    assert_eq!(
        client.get("/health").status,
        200,
        "the connection is still in step"
    );
}
