//! What idle keep-alive client connections cost the relay: memory, and the
//! latency of the connections that are busy beside them.
//!
//! Starts a relay with one node thread in this process. First `--active`
//! connections send requests back to back for `--seconds` (latency
//! percentiles, alone). Then it opens N client connections, sends one
//! request on each (so each has a buffer and a finished exchange behind it),
//! keeps them open, and reads this process's resident memory (`VmRSS` in
//! `/proc/self/status`, Linux only) before and after; then runs the same
//! active load again beside them, and prints both p99s and their ratio.
//! Every idle connection is finally used once more to show it is still
//! served.
//!
//! ```sh
//! cargo run --release --example idle_connections                 # 1,000 connections
//! cargo run --release --example idle_connections -- 2000 --active 32 --seconds 5
//! # 10,000: the relay in its own process, so each side needs only its own descriptors
//! target/release/bookrelay --listen 127.0.0.1:8080 --nodes 1 --max-connections 10200 &
//! cargo run --release --example idle_connections -- 10000 --target 127.0.0.1:8080 --pid $!
//! ```

use bookrelay::cli::RelayConfig;
use bookrelay::client::HttpClient;
use bookrelay::launch;
use bookrelay::temp_dir::TempDir;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::net::TcpStream;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

const USAGE: &str =
    "usage: idle_connections [COUNT] [--active N] [--seconds S] [--target ADDR --pid PID]
  COUNT        idle connections to hold [default: 1000]
  --target A   a relay already running at A (e.g. 127.0.0.1:8080) instead of one in this process:
               each process then needs descriptors for its own side only (10,000 idle
               connections need 20,000 in one process)
  --pid PID    that relay's process id, to read its memory and threads from /proc
  --active N   busy connections beside them, each sending requests back to back [default: 32]
  --seconds S  how long the busy ones run, alone and then beside the idle ones [default: 5]";

/// `--active` connections sending `GET /health` back to back for `seconds`:
/// requests answered and the 50th and 99th percentile latency in ms.
fn active_load(addr: SocketAddr, active: usize, seconds: f64) -> Result<(usize, f64, f64), String> {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let workers: Vec<_> = (0..active)
        .map(|_| {
            thread::spawn(move || -> Result<Vec<u32>, String> {
                let mut client = HttpClient::connect(addr, Duration::from_secs(10))
                    .map_err(|e| format!("connect: {e}"))?;
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let started = Instant::now();
                    let answer = client
                        .request("GET", "/health", &[], b"")
                        .map_err(|e| format!("request: {e}"))?;
                    if answer.status != 200 {
                        return Err(format!("answered {}", answer.status));
                    }
                    latencies.push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut all = Vec::new();
    for worker in workers {
        all.extend(
            worker
                .join()
                .map_err(|_| "a load thread panicked".to_string())??,
        );
    }
    all.sort_unstable();
    let at = |p: f64| {
        all.get(((all.len().max(1) - 1) as f64 * p).round() as usize)
            .map_or(0.0, |us| f64::from(*us) / 1000.0)
    };
    Ok((all.len(), at(0.50), at(0.99)))
}

/// A figure of `/proc/PID/status` (`self` for this process).
fn status_field(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
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
    let (mut count, mut active, mut seconds) = (1000usize, 32usize, 5.0f64);
    let (mut target, mut pid): (Option<SocketAddr>, String) = (None, "self".into());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let parsed = match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--active" => args.next().and_then(|v| v.parse().ok()).map(|n| active = n),
            "--target" => args
                .next()
                .and_then(|v| v.parse().ok())
                .map(|a| target = Some(a)),
            "--pid" => args
                .next()
                .filter(|v| v.parse::<u32>().is_ok())
                .map(|p| pid = p),
            "--seconds" => args
                .next()
                .and_then(|v| v.parse().ok())
                .filter(|s: &f64| *s > 0.0 && s.is_finite())
                .map(|s| seconds = s),
            other => other.parse().ok().filter(|n| *n > 0).map(|n| count = n),
        };
        if parsed.is_none() {
            eprintln!("idle_connections: cannot use '{arg}' here\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    let dir = TempDir::new("idle-connections");
    let own_relay = match target {
        Some(_) => None,
        None => {
            let config = RelayConfig {
                listen: "127.0.0.1:0".into(),
                nodes: 1,
                db: dir.path().join("bookings.db"),
                seed: 5,
                // Room for every connection this run opens, whatever the descriptor
                // limit would suggest.
                max_connections: Some(count + active + 64),
                ..RelayConfig::default()
            };
            match launch::start_relay(&config) {
                Ok(relay) => Some(relay),
                Err(error) => {
                    eprintln!("idle_connections: {error}");
                    return ExitCode::from(1);
                }
            }
        }
    };
    let Some(addr) = own_relay.as_ref().map(|relay| relay.addr()).or(target) else {
        eprintln!("idle_connections: no relay to measure");
        return ExitCode::from(1);
    };
    let resident_kib = || status_field(&pid, "VmRSS:");
    let threads = || status_field(&pid, "Threads:");
    let timeout = Duration::from_secs(10);
    let mut warm = HttpClient::connect(addr, timeout).expect("connect");
    for _ in 0..100 {
        warm.request("GET", "/health", &[], b"")
            .expect("warm-up request");
    }
    let alone = match active_load(addr, active, seconds) {
        Ok(figures) => figures,
        Err(error) => {
            eprintln!("idle_connections: the active load failed: {error}");
            return ExitCode::from(1);
        }
    };
    let (before, threads_before) = (resident_kib(), threads());
    // Bare sockets on this side, so the figure is the relay's cost alone.
    let mut clients = Vec::with_capacity(count);
    for i in 0..count {
        let mut stream = match TcpStream::connect(addr) {
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
    let beside = match active_load(addr, active, seconds) {
        Ok(figures) => figures,
        Err(error) => {
            eprintln!(
                "idle_connections: the active load beside the idle connections failed: {error}"
            );
            return ExitCode::from(1);
        }
    };
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
    println!(
        "{active} busy connections for {seconds} s: alone {} requests, p50 {:.3} ms, p99 {:.3} ms; \
         beside {count} idle ones {} requests, p50 {:.3} ms, p99 {:.3} ms (p99 {:.2}x)",
        alone.0,
        alone.1,
        alone.2,
        beside.0,
        beside.1,
        beside.2,
        beside.2 / alone.2.max(1e-9)
    );
    if served == count {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
