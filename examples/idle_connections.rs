//! What an idle keep-alive client connection costs the relay in memory.
//!
//! Starts a relay with one node thread in this process, opens N client
//! connections, sends one request on each (so each has a thread, a buffer
//! and a finished exchange behind it), keeps them open, and reads this
//! process's resident memory (`VmRSS` in `/proc/self/status`, Linux only)
//! before and after. Every connection is then used once more to show it is
//! still served.
//!
//! ```sh
//! cargo run --release --example idle_connections                 # 1,000 connections
//! cargo run --release --example idle_connections -- 2000
//! ```

use bookrelay::cli::RelayConfig;
use bookrelay::client::HttpClient;
use bookrelay::launch;
use bookrelay::temp_dir::TempDir;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn threads() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Threads:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One `GET /health` on a bare socket; true if it was answered 200.
fn health(stream: &mut TcpStream) -> bool {
    if stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: idle\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = [0u8; 512];
    let mut read = 0;
    // The answer is small; read until its JSON body closes.
    while read < answer.len() {
        match stream.read(&mut answer[read..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => read += n,
        }
        if answer[..read].ends_with(b"}") {
            return answer.starts_with(b"HTTP/1.1 200");
        }
    }
    false
}

fn main() -> ExitCode {
    let count: usize = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 1000,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: idle_connections [COUNT]   (a whole number, default 1000)");
            return ExitCode::from(2);
        }
    };
    let dir = TempDir::new("idle-connections");
    let config = RelayConfig {
        listen: "127.0.0.1:0".into(),
        nodes: 1,
        db: dir.path().join("bookings.db"),
        seed: 5,
        ..RelayConfig::default()
    };
    let relay = match launch::start_relay(&config) {
        Ok(relay) => relay,
        Err(error) => {
            eprintln!("idle_connections: {error}");
            return ExitCode::from(1);
        }
    };
    let timeout = Duration::from_secs(10);
    let mut warm = HttpClient::connect(relay.addr(), timeout).expect("connect");
    for _ in 0..100 {
        warm.request("GET", "/health", &[], b"")
            .expect("warm-up request");
    }
    let (before, threads_before) = (resident_kib(), threads());
    // Bare sockets on this side, so the figure is the relay's cost alone.
    let mut clients = Vec::with_capacity(count);
    for i in 0..count {
        let mut stream = match TcpStream::connect(relay.addr()) {
            Ok(stream) => stream,
            Err(error) => {
                eprintln!("idle_connections: connection {i} failed: {error} (raise `ulimit -n`?)");
                return ExitCode::from(1);
            }
        };
        let _ = stream.set_read_timeout(Some(timeout));
        assert!(health(&mut stream), "connection {i} was not served");
        clients.push(stream);
    }
    // Let every connection thread settle into its idle read.
    std::thread::sleep(Duration::from_millis(500));
    let (after, threads_after) = (resident_kib(), threads());
    let mut served = 0;
    for stream in &mut clients {
        served += usize::from(health(stream));
    }
    match (before, after) {
        (Some(before), Some(after)) => println!(
            "{count} idle keep-alive connections: RSS {before} KiB -> {after} KiB, {:.1} KiB per connection; \
             threads {} -> {}; {served} of {count} served again",
            after.saturating_sub(before) as f64 / count as f64,
            threads_before.unwrap_or(0),
            threads_after.unwrap_or(0),
        ),
        _ => println!("{count} connections held and {served} served again; RSS is only readable on Linux"),
    }
    if served == count {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
