//! The download client both modes share: one `GET` read to its end through a
//! fixed buffer (so that the client's own memory stays flat), timed to its
//! first body byte, and this process's memory figures from `/proc/self/status`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

/// What the server writes per call, and what the client reads per call.
pub const BLOCK_BYTES: usize = 64 * 1024;

pub const MIB: f64 = 1024.0 * 1024.0;

pub fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One download of `target`, whose body must be `bytes` long; returns the
/// time to its first body byte.
pub fn download(addr: SocketAddr, target: &str, bytes: u64) -> Result<Duration, String> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    stream
        .write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
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
        // More than asked for means the framing was not what we think (a
        // chunked answer, say): an error, not a figure.
        if body > bytes {
            return Err(format!("got {body} body bytes, expected {bytes}"));
        }
        if body == bytes {
            return Ok(first_byte.unwrap_or_default());
        }
    }
}

/// `parallel` downloads at once; MiB/s over all, and the slowest first byte.
pub fn measure(
    addr: SocketAddr,
    target: &str,
    bytes: u64,
    parallel: usize,
) -> Result<(f64, Duration), String> {
    let started = Instant::now();
    let runs: Vec<_> = (0..parallel)
        .map(|_| {
            let target = target.to_string();
            thread::spawn(move || download(addr, &target, bytes))
        })
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
