//! How fast a large download streams through the relay, how soon its first
//! byte arrives, and what it costs the relay in memory.
//!
//! Starts, in this process, a plain HTTP server that sends `GET /bytes/N` as
//! N bytes with a `Content-Length` (from one 64 KiB block, so it holds no
//! body in memory either), and a relay in front of it (`--nodes 0
//! --backend`). Then downloads the same body directly and through the relay,
//! one at a time and K at once, and prints MiB/s, the time to the first body
//! byte, and how much this process's peak resident memory (`VmHWM` in
//! `/proc/self/status`, Linux only) grew during the relayed downloads. The
//! server and the client hold fixed buffers, so that growth is the relay's.
//!
//! ```sh
//! cargo run --release --example stream_throughput                   # 300 MiB, then 4 at once
//! cargo run --release --example stream_throughput -- --mib 64 --parallel 8
//! ```

use bookrelay::cli::RelayConfig;
use bookrelay::launch;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

/// What the server writes per call, and what the client reads per call.
const BLOCK_BYTES: usize = 64 * 1024;

const MIB: f64 = 1024.0 * 1024.0;

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Serves `GET /bytes/N` (N bytes, keep-alive) and `200 ok` for anything else.
fn start_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || serve(stream));
        }
    });
    addr
}

fn serve(mut stream: TcpStream) {
    let block = vec![b'x'; BLOCK_BYTES];
    let mut pending = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&pending[..end]).into_owned();
        pending.drain(..end + 4);
        let target = head.split(' ').nth(1).unwrap_or("/");
        let length: u64 = target
            .strip_prefix("/bytes/")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if length == 0 {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            continue;
        }
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n");
        if stream.write_all(head.as_bytes()).is_err() {
            return;
        }
        let mut left = length;
        while left > 0 {
            let n = left.min(BLOCK_BYTES as u64) as usize;
            if stream.write_all(&block[..n]).is_err() {
                return;
            }
            left -= n as u64;
        }
    }
}

/// One download; returns the time to its first body byte.
fn download(addr: SocketAddr, bytes: u64) -> Result<Duration, String> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    stream
        .write_all(format!("GET /bytes/{bytes} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut buffer = vec![0u8; BLOCK_BYTES];
    let mut head = Vec::new();
    let mut body = 0u64;
    let mut first_byte = None;
    loop {
        let n = stream.read(&mut buffer).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("closed after {body} of {bytes} body bytes"));
        }
        if first_byte.is_none() {
            head.extend_from_slice(&buffer[..n]);
            let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            if !head.starts_with(b"HTTP/1.1 200") {
                return Err(String::from_utf8_lossy(&head).into_owned());
            }
            body = (head.len() - end - 4) as u64;
            first_byte = Some(started.elapsed());
        } else {
            body += n as u64;
        }
        if body >= bytes {
            return Ok(first_byte.unwrap_or_default());
        }
    }
}

/// `parallel` downloads at once; MiB/s over all, and the slowest first byte.
fn measure(addr: SocketAddr, bytes: u64, parallel: usize) -> Result<(f64, Duration), String> {
    let started = Instant::now();
    let runs: Vec<_> = (0..parallel)
        .map(|_| thread::spawn(move || download(addr, bytes)))
        .collect();
    let mut first = Duration::ZERO;
    for run in runs {
        let first_byte = run
            .join()
            .map_err(|_| "a download panicked".to_string())??;
        first = first.max(first_byte);
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok((bytes as f64 * parallel as f64 / MIB / seconds, first))
}

struct Options {
    mib: u64,
    parallel: usize,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        mib: 300,
        parallel: 4,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args
            .get(i + 1)
            .ok_or(format!("{} needs a value", args[i]))?;
        let number: u64 = value
            .parse()
            .map_err(|_| format!("{} needs a whole number, got '{value}'", args[i]))?;
        match args[i].as_str() {
            "--mib" if number > 0 => options.mib = number,
            "--parallel" if number > 0 => options.parallel = number as usize,
            "--mib" | "--parallel" => return Err(format!("{} must be at least 1", args[i])),
            other => {
                return Err(format!(
                    "unknown option {other} (try --mib N, --parallel K)"
                ))
            }
        }
        i += 2;
    }
    Ok(options)
}

fn main() -> ExitCode {
    let options = match options() {
        Ok(options) => options,
        Err(why) => {
            eprintln!("stream_throughput: {why}");
            return ExitCode::from(2);
        }
    };
    let server = start_server();
    let config = RelayConfig {
        listen: "127.0.0.1:0".into(),
        nodes: 0,
        backends: vec![server.to_string()],
        health_path: Some("/health".into()),
        ..RelayConfig::default()
    };
    let relay = match launch::start_relay(&config) {
        Ok(relay) => relay,
        Err(why) => {
            eprintln!("stream_throughput: {why}");
            return ExitCode::from(1);
        }
    };
    let bytes = options.mib * 1024 * 1024;
    println!(
        "{} MiB per download; direct from the server, then through the relay",
        options.mib
    );
    println!(
        "{:<30} {:>10} {:>16}",
        "downloads", "MiB/s", "first byte ms"
    );
    let rss_before = status_kib("VmRSS:").unwrap_or(0);
    let mut relayed_peak = 0;
    for parallel in [1, options.parallel] {
        for (label, addr) in [("direct", server), ("through the relay", relay.addr())] {
            match measure(addr, bytes, parallel) {
                Ok((mib_per_s, first)) => println!(
                    "{:<30} {:>10.0} {:>16.2}",
                    format!("{parallel} at once, {label}"),
                    mib_per_s,
                    first.as_secs_f64() * 1000.0
                ),
                Err(why) => {
                    eprintln!("stream_throughput: {label}: {why}");
                    return ExitCode::from(1);
                }
            }
            relayed_peak = relayed_peak.max(status_kib("VmHWM:").unwrap_or(0));
        }
    }
    println!(
        "peak resident memory grew by {:.1} MiB over {:.1} MiB at start \
         (the relay holds a few buffers of at most 256 KiB per download, never a body)",
        relayed_peak.saturating_sub(rss_before) as f64 / 1024.0,
        rss_before as f64 / 1024.0
    );
    ExitCode::SUCCESS
}
