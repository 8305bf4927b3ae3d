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
//! With `--proxies` it compares the relay with HAProxy and nginx instead:
//! one nginx serves a sparse `--mib` MiB file with sendfile, and the same
//! nginx (a second server block), a HAProxy and the relay each proxy to it.
//! The file is downloaded through each proxy one at a time, in 3 interleaved
//! rounds whose order rotates so that drift hits all three alike, then
//! `--parallel` at once (MiB/s = K × size / wall time of all K), 3 rounds
//! again. It prints every MiB/s, the medians, the relay's ratio to HAProxy's
//! and nginx's, the relay's peak resident memory growth over its own
//! downloads, and the acceptance verdicts (≥ 0.9× HAProxy for both, growth
//! ≤ 16 MiB). It needs `nginx` and `haproxy` on PATH (`apt-get install -y
//! nginx-light haproxy`), and starts and stops its own of each, with their
//! configs and logs in a temporary directory.
//!
//! ```sh
//! cargo run --release --example stream_throughput                   # 300 MiB, then 4 at once
//! cargo run --release --example stream_throughput -- --mib 64 --parallel 8
//! cargo run --release --example stream_throughput -- --proxies      # vs HAProxy and nginx
//! ```

mod client;
mod proxies;

use bookrelay::cli::RelayConfig;
use bookrelay::launch;
use client::{measure, status_kib, BLOCK_BYTES};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::thread;

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

const USAGE: &str = "\
usage: stream_throughput [--mib N] [--parallel K] [--proxies]

  --mib N        size of each download in MiB [default: 300]
  --parallel K   how many downloads run at once in the second part [default: 4]
  --proxies      compare the relay with HAProxy and nginx as proxies in front of
                 an nginx file server (needs nginx and haproxy on PATH), instead
                 of the relay with a direct download from an in-process server
  -h, --help     print this and exit";

struct Options {
    mib: u64,
    parallel: usize,
    proxies: bool,
    help: bool,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        mib: 300,
        parallel: 4,
        proxies: false,
        help: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--mib" => options.mib = positive_number(&arg, args.next())?,
            "--parallel" => options.parallel = positive_number(&arg, args.next())? as usize,
            "--proxies" => options.proxies = true,
            "-h" | "--help" => options.help = true,
            other => return Err(format!("unknown option {other} (try --help)")),
        }
    }
    Ok(options)
}

fn positive_number(option: &str, value: Option<String>) -> Result<u64, String> {
    let value = value.ok_or(format!("{option} needs a value"))?;
    let number: u64 = value
        .parse()
        .map_err(|_| format!("{option} needs a whole number, got '{value}'"))?;
    if number == 0 {
        return Err(format!("{option} must be at least 1"));
    }
    Ok(number)
}

fn main() -> ExitCode {
    let options = match options() {
        Ok(options) => options,
        Err(why) => {
            eprintln!("stream_throughput: {why}");
            return ExitCode::from(2);
        }
    };
    if options.help {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if options.proxies {
        return proxies::run_proxy_comparison(options.mib, options.parallel);
    }
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
            match measure(addr, &format!("/bytes/{bytes}"), bytes, parallel) {
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
