//! The seed's famous bug, measured: what a `Connection: close` request costs
//! through the relay. The seed's relay closed connections on a 200 ms timer,
//! so every request took ~150 ms; here a close is answered and the socket
//! shut at once.
//!
//! Each sample: connect, send `GET /health` with `Connection: close`, read
//! until the relay closes. Keep-alive round trips on one connection are
//! measured the same way for comparison. Without an address it starts its
//! own relay and node threads in-process.
//!
//! ```sh
//! cargo run --release --example close_latency                  # in-process
//! cargo run --release --example close_latency -- 127.0.0.1:8080 # a running relay
//! ```

use bookrelay::cli::RelayConfig;
use bookrelay::launch;
use bookrelay::temp_dir::TempDir;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const SAMPLES: usize = 2000;

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() - 1) * p / 100]
}

fn close_round_trip(addr: SocketAddr) -> std::io::Result<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: close-latency\r\nConnection: close\r\n\r\n")?;
    let mut answer = Vec::with_capacity(256);
    stream.read_to_end(&mut answer)?;
    let elapsed = started.elapsed();
    if !answer.starts_with(b"HTTP/1.1 200") {
        return Err(std::io::Error::other(format!(
            "unexpected answer {:?}",
            String::from_utf8_lossy(&answer)
        )));
    }
    Ok(elapsed)
}

fn keep_alive_round_trip(stream: &mut TcpStream) -> std::io::Result<Duration> {
    let started = Instant::now();
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: close-latency\r\n\r\n")?;
    let mut answer = [0u8; 512];
    let mut read = 0;
    loop {
        let n = stream.read(&mut answer[read..])?;
        if n == 0 {
            return Err(std::io::Error::other("closed"));
        }
        read += n;
        if answer[..read].ends_with(b"}") {
            return Ok(started.elapsed());
        }
    }
}

fn report(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{label:<28} median {:>8.3} ms   p99 {:>8.3} ms   ({} samples)",
        percentile(&samples, 50).as_secs_f64() * 1e3,
        percentile(&samples, 99).as_secs_f64() * 1e3,
        samples.len()
    );
}

fn measure(addr: SocketAddr) -> std::io::Result<()> {
    // Warm-up: pools, caches, threads.
    for _ in 0..200 {
        close_round_trip(addr)?;
    }
    let close: Vec<Duration> = (0..SAMPLES)
        .map(|_| close_round_trip(addr))
        .collect::<Result<_, _>>()?;
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let keep: Vec<Duration> = (0..SAMPLES)
        .map(|_| keep_alive_round_trip(&mut stream))
        .collect::<Result<_, _>>()?;
    report("Connection: close", close);
    report("keep-alive (one connection)", keep);
    Ok(())
}

fn main() -> ExitCode {
    let target = std::env::args().nth(1);
    let outcome = match target {
        Some(text) => match text.to_socket_addrs().ok().and_then(|mut a| a.next()) {
            Some(addr) => measure(addr),
            None => {
                eprintln!("close_latency: cannot resolve {text}");
                return ExitCode::from(2);
            }
        },
        None => {
            let dir = TempDir::new("close-latency");
            let config = RelayConfig {
                listen: "127.0.0.1:0".into(),
                db: dir.path().join("bookings.db"),
                seed: 0,
                ..RelayConfig::default()
            };
            match launch::start_relay(&config) {
                Ok(relay) => measure(relay.addr()),
                Err(error) => Err(std::io::Error::other(error.to_string())),
            }
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("close_latency: {error}");
            ExitCode::from(1)
        }
    }
}
