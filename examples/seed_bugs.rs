//! The Python seed's two bugs, replayed next to their fixes on one machine.
//!
//! bookrelay grew out of a seed with two bugs. Its relay did not know where a
//! response ended: it read the node's answer until a 200 ms timer ran out,
//! then answered and closed, so every request took about 200 ms. And its
//! per-node LRU cache was built inside the request handler, a new cache per
//! request, so it never hit. This example shows both, side by side with
//! bookrelay, in front of the same in-process nodes, so the figures in the
//! README can be reproduced rather than believed.
//!
//! **Latency pair.** A small seed-like relay, written below: for each client
//! connection it reads the request, connects to a node, forwards the request,
//! then reads the answer until 200 ms have passed since the read began, with
//! no idea where the answer ends, answers the client and closes. Against it,
//! the real framed bookrelay relay, once with `Connection: close` (a new
//! connection per request, as for the seed) and once on one keep-alive
//! connection. Each row is `--requests` sequential `GET /bookings/{id}`.
//!
//! **Hit-rate pair.** The seed's mistake made again with the real types: per
//! read, a new [`bookrelay::cache::Cache`] is created, looked up, and filled
//! from the [`bookrelay::store::Store`]. Against it, `--requests` real reads
//! through the relay, counting the node's `X-Cache: HIT`. Both read the same
//! small set of hot ids, round and round.
//!
//! ```sh
//! cargo run --release --example seed_bugs
//! cargo run --release --example seed_bugs -- --requests 50
//! ```

use bookrelay::cache::{Cache, Lookup};
use bookrelay::cli::RelayConfig;
use bookrelay::client::HttpClient;
use bookrelay::launch;
use bookrelay::store::Store;
use bookrelay::temp_dir::TempDir;
use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const HELP: &str = "\
seed_bugs: the Python seed's two bugs, replayed next to bookrelay's fixes

Starts a bookrelay relay with 3 node threads in-process (consistent-hash, so
each booking id lives in one node's cache) and, in front of the same nodes, a
small seed-like relay that ends every read of a node's answer with a 200 ms
timer. Then prints two pairs:

  latency   GET /bookings/{id} through the seed-like relay and through
            bookrelay (Connection: close, and keep-alive), median and p99
  hit rate  a new LRU per request, as in the seed, against the node's one
            cache (X-Cache: HIT through the relay), over a few hot ids
            (a tenth of the requests, at most 10: each is read ~10 times)

Usage:
  cargo run --release --example seed_bugs -- [OPTIONS]

Options:
  --requests N   requests per row of each pair, 1 to 1000 [default: 100];
                 the seed-like row takes about N x 200 ms
  -h, --help     this text
";

const DEFAULT_REQUESTS: usize = 100;
/// The seed-like row costs ~200 ms a request: 1000 is already over 3 minutes.
const MAX_REQUESTS: usize = 1000;
/// How long the seed's relay read a node's answer before calling it complete.
const SEED_TIMER: Duration = Duration::from_millis(200);
const NODES: usize = 3;
const BALANCER: &str = "consistent-hash";
/// Most ids the hit-rate pair reads, round and round; fewer for a short run
/// ([`hot_ids`]), so that each id is read about ten times.
const HOT_IDS: usize = 10;
/// Ids the latency pair reads (others than the hot ones, so the hit-rate
/// pair starts on cold caches).
const LATENCY_IDS: usize = 10;
/// The capacity and TTL of the nodes' caches, and of the seed's per-request one.
const CACHE_CAPACITY: usize = 1024;
const CACHE_TTL: Duration = Duration::from_secs(60);
/// Longest wait for a connect or an answer before the run gives up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head the seed-like relay reads.
const MAX_HEAD_BYTES: usize = 64 * 1024;

struct Options {
    requests: usize,
}

fn parse_options(args: &[String]) -> Result<Option<Options>, String> {
    let mut options = Options {
        requests: DEFAULT_REQUESTS,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value.to_string())),
            _ => (arg.as_str(), None),
        };
        match name {
            "-h" | "--help" => return Ok(None),
            "--requests" => {
                let text = inline
                    .or_else(|| args.next().cloned())
                    .ok_or("--requests needs a value")?;
                options.requests = match text.parse::<usize>() {
                    Ok(n) if (1..=MAX_REQUESTS).contains(&n) => n,
                    _ => {
                        return Err(format!(
                            "--requests needs a whole number from 1 to {MAX_REQUESTS}, got '{text}'"
                        ))
                    }
                };
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(Some(options))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse_options(&args) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("seed_bugs: {error}\nRun with --help for usage.");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("seed_bugs: {error}");
            ExitCode::from(1)
        }
    }
}

fn run(options: &Options) -> Result<(), String> {
    let dir = TempDir::new("seed-bugs");
    let db = dir.path().join("bookings.db");
    let config = RelayConfig {
        listen: "127.0.0.1:0".into(),
        nodes: NODES,
        balancer: BALANCER.into(),
        db: db.clone(),
        seed: HOT_IDS + LATENCY_IDS,
        cache_capacity: CACHE_CAPACITY,
        cache_ttl: Some(CACHE_TTL),
        ..RelayConfig::default()
    };
    let relay = launch::start_relay(&config).map_err(|e| e.to_string())?;
    let nodes: Vec<SocketAddr> = relay
        .relay()
        .topology()
        .backends
        .iter()
        .map(|backend| backend.addr)
        .collect();
    if nodes.is_empty() {
        return Err("the relay started without nodes".into());
    }
    let seed_relay =
        start_seed_relay(nodes).map_err(|e| format!("cannot start the seed-like relay: {e}"))?;
    let store =
        Store::open(&db).map_err(|e| format!("cannot open database {}: {e}", db.display()))?;
    let ids: Vec<String> = store
        .list(None, HOT_IDS + LATENCY_IDS)
        .map_err(|e| format!("cannot list bookings: {e}"))?
        .into_iter()
        .map(|booking| booking.booking_id)
        .collect();
    if ids.len() < HOT_IDS + LATENCY_IDS {
        return Err(format!(
            "the database holds {} bookings, {} needed",
            ids.len(),
            HOT_IDS + LATENCY_IDS
        ));
    }
    let (hot, latency_ids) = ids.split_at(HOT_IDS);
    let hot = &hot[..hot_ids(options.requests)];
    eprintln!(
        "bookrelay relay at {} ({NODES} node threads, {BALANCER}), seed-like relay at {}",
        relay.addr(),
        seed_relay
    );
    eprintln!(
        "latency pair: {} requests through the seed-like relay, about {:.0} s...",
        options.requests,
        (options.requests + 1) as f64 * SEED_TIMER.as_secs_f64()
    );
    let latency = latency_pair(options.requests, seed_relay, relay.addr(), latency_ids)?;
    let hits = hit_rate_pair(options.requests, &store, relay.addr(), hot)?;
    println!();
    print_latency(options.requests, &latency);
    println!();
    print_hit_rate(options.requests, &hits);
    Ok(())
}

// ---------------------------------------------------------------------------
// The seed-like relay

/// Starts the seed-like relay on a free loopback port; it sends each client
/// connection to the next node in turn and serves one request per connection.
fn start_seed_relay(nodes: Vec<SocketAddr>) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    thread::spawn(move || {
        for (n, client) in listener.incoming().enumerate() {
            let Ok(client) = client else { continue };
            let node = nodes[n % nodes.len()];
            thread::spawn(move || {
                if let Err(error) = seed_exchange(client, node) {
                    eprintln!("seed-like relay: {error}");
                }
            });
        }
    });
    Ok(addr)
}

/// One exchange as the seed did it: forward the request, read the node's
/// answer until the timer runs out, answer, close.
fn seed_exchange(mut client: TcpStream, node: SocketAddr) -> io::Result<()> {
    client.set_nodelay(true)?;
    client.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    let head = read_request_head(&mut client)?;
    let mut upstream = TcpStream::connect_timeout(&node, ANSWER_TIMEOUT)?;
    upstream.set_nodelay(true)?;
    upstream.write_all(&without_connection_header(&head))?;
    let answer = read_until_timer(&mut upstream, SEED_TIMER)?;
    client.write_all(&answer)?;
    client.shutdown(Shutdown::Both)
}

/// The request head (a `GET` has no body), up to the blank line.
fn read_request_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD_BYTES {
            return Err(io::Error::other("request head too large"));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::other("client closed before its request ended"));
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Ok(head)
}

/// `Connection` is hop-by-hop, so the client's `Connection: close` is not
/// passed on: the node keeps its side open as HTTP/1.1 allows, and only the
/// timer ends the read, as it did in the seed.
fn without_connection_header(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive("\r\n") {
        let is_connection = line
            .split_once(':')
            .is_some_and(|(name, _)| name.trim().eq_ignore_ascii_case("connection"));
        if !is_connection {
            out.push_str(line);
        }
    }
    out.into_bytes()
}

/// The seed's bug: keep reading until `timer` has passed since the read
/// began (or the node closes), since nothing says where the answer ends.
fn read_until_timer(stream: &mut TcpStream, timer: Duration) -> io::Result<Vec<u8>> {
    let deadline = Instant::now() + timer;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(answer);
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(answer),
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(answer)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

// ---------------------------------------------------------------------------
// Latency pair

struct Latencies {
    seed: Vec<Duration>,
    close: Vec<Duration>,
    keep_alive: Vec<Duration>,
}

/// `GET path` on a new connection with `Connection: close`, read until the
/// server closes; the time from connect to close.
fn close_round_trip(addr: SocketAddr, path: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let fail = |e: io::Error| format!("GET {path} via {addr}: {e}");
    let mut stream = TcpStream::connect_timeout(&addr, ANSWER_TIMEOUT).map_err(fail)?;
    stream.set_nodelay(true).map_err(fail)?;
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(fail)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: seed-bugs\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(fail)?;
    let mut answer = Vec::with_capacity(2048);
    stream.read_to_end(&mut answer).map_err(fail)?;
    let elapsed = started.elapsed();
    if !answer.starts_with(b"HTTP/1.1 200") {
        let line = String::from_utf8_lossy(&answer);
        let line = line.lines().next().unwrap_or("nothing");
        return Err(format!("GET {path} via {addr} answered {line:?}"));
    }
    Ok(elapsed)
}

fn latency_pair(
    requests: usize,
    seed_relay: SocketAddr,
    relay: SocketAddr,
    ids: &[String],
) -> Result<Latencies, String> {
    let path = |i: usize| format!("/bookings/{}", ids[i % ids.len()]);
    // Warm-up: threads, the relay's node pools and the nodes' caches. One
    // request is enough for the seed-like relay, whose 200 ms dwarf the rest.
    close_round_trip(seed_relay, &path(0))?;
    for i in 0..ids.len() {
        close_round_trip(relay, &path(i))?;
    }
    let seed = (0..requests)
        .map(|i| close_round_trip(seed_relay, &path(i)))
        .collect::<Result<_, _>>()?;
    let close = (0..requests)
        .map(|i| close_round_trip(relay, &path(i)))
        .collect::<Result<_, _>>()?;
    let mut client = HttpClient::connect(relay, ANSWER_TIMEOUT)
        .map_err(|e| format!("cannot connect to {relay}: {e}"))?;
    let mut keep_alive = Vec::with_capacity(requests);
    for i in 0..requests {
        let path = path(i);
        let started = Instant::now();
        let answer = client
            .request("GET", &path, &[], b"")
            .map_err(|e| format!("GET {path} via {relay}: {e}"))?;
        keep_alive.push(started.elapsed());
        if answer.status != 200 {
            return Err(format!("GET {path} via {relay} answered {}", answer.status));
        }
    }
    Ok(Latencies {
        seed,
        close,
        keep_alive,
    })
}

fn percentile_ms(samples: &[Duration], p: usize) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[(sorted.len() - 1) * p / 100].as_secs_f64() * 1e3
}

fn print_latency(requests: usize, latencies: &Latencies) {
    println!(
        "1. Latency: {requests} sequential GET /bookings/{{id}} per row, same {NODES} nodes behind both relays"
    );
    println!();
    println!("{:<44} {:>10} {:>10}", "relay", "median ms", "p99 ms");
    let rows = [
        ("seed-like (200 ms read timer, then close)", &latencies.seed),
        ("bookrelay, Connection: close", &latencies.close),
        (
            "bookrelay, keep-alive (one connection)",
            &latencies.keep_alive,
        ),
    ];
    for (label, samples) in rows {
        println!(
            "{label:<44} {:>10.3} {:>10.3}",
            percentile_ms(samples, 50),
            percentile_ms(samples, 99)
        );
    }
    let seed = percentile_ms(&latencies.seed, 50);
    let close = percentile_ms(&latencies.close, 50);
    let timer = SEED_TIMER.as_secs_f64() * 1e3;
    println!(
        "-> the seed-like relay is {:.0}x slower at the median ({seed:.1} ms against {close:.3} ms, \
         both closing each connection): {:.0}% of its time is the {timer:.0} ms timer, not the nodes' work",
        seed / close.max(1e-6),
        (timer / seed * 100.0).min(100.0)
    );
}

// ---------------------------------------------------------------------------
// Hit-rate pair

struct HitRates {
    seed_hits: usize,
    relay_hits: usize,
    /// Distinct (node, id) pairs the relay's reads met: each one's first
    /// read must miss, whatever the cache.
    first_reads: usize,
}

/// How many hot ids `requests` reads go round: a tenth, from 1 to [`HOT_IDS`].
fn hot_ids(requests: usize) -> usize {
    (requests / 10).clamp(1, HOT_IDS)
}

/// The seed's handler, with the real cache and store: a new cache per
/// request, so the lookup finds it empty.
fn seed_read(store: &Store, id: &str) -> Result<bool, String> {
    let cache = Cache::new(CACHE_CAPACITY, Some(CACHE_TTL));
    match cache.lookup(id, Instant::now()) {
        Lookup::Hit(_) => Ok(true),
        Lookup::Miss(ticket) => {
            let booking = store
                .get(id)
                .map_err(|e| format!("cannot read booking {id}: {e}"))?
                .ok_or_else(|| format!("booking {id} is missing"))?;
            cache.put(id, Arc::from(booking.to_json()), ticket, Instant::now());
            Ok(false)
        }
    }
}

fn hit_rate_pair(
    requests: usize,
    store: &Store,
    relay: SocketAddr,
    hot: &[String],
) -> Result<HitRates, String> {
    let mut seed_hits = 0;
    for i in 0..requests {
        if seed_read(store, &hot[i % hot.len()])? {
            seed_hits += 1;
        }
    }
    let mut client = HttpClient::connect(relay, ANSWER_TIMEOUT)
        .map_err(|e| format!("cannot connect to {relay}: {e}"))?;
    let mut relay_hits = 0;
    let mut seen = BTreeSet::new();
    for i in 0..requests {
        let id = &hot[i % hot.len()];
        let path = format!("/bookings/{id}");
        let answer = client
            .request("GET", &path, &[], b"")
            .map_err(|e| format!("GET {path} via {relay}: {e}"))?;
        if answer.status != 200 {
            return Err(format!("GET {path} via {relay} answered {}", answer.status));
        }
        match answer.header("X-Cache") {
            Some("HIT") => relay_hits += 1,
            Some("MISS") => {}
            other => return Err(format!("GET {path}: X-Cache was {other:?}")),
        }
        let node = answer.header("X-Node").unwrap_or("?").to_string();
        seen.insert((node, id.clone()));
    }
    Ok(HitRates {
        seed_hits,
        relay_hits,
        first_reads: seen.len(),
    })
}

fn print_hit_rate(requests: usize, rates: &HitRates) {
    println!(
        "2. Cache hit rate: {requests} reads of GET /bookings/{{id}} per row, over {} hot ids",
        hot_ids(requests)
    );
    println!();
    println!(
        "{:<44} {:>6} {:>7} {:>9}",
        "cache", "hits", "misses", "hit rate"
    );
    let rate = |hits: usize| hits as f64 / requests as f64 * 100.0;
    let rows = [
        ("seed-like (a new LRU per request)", rates.seed_hits),
        ("bookrelay (one LRU per node, X-Cache)", rates.relay_hits),
    ];
    for (label, hits) in rows {
        println!(
            "{label:<44} {hits:>6} {:>7} {:>8.1}%",
            requests - hits,
            rate(hits)
        );
    }
    let relay_misses = requests - rates.relay_hits;
    let first = rates.first_reads;
    let times = |n: usize| {
        if n == 1 {
            "once".to_string()
        } else {
            format!("{n} times")
        }
    };
    let why = if first == requests {
        "no id was read twice, so no cache could hit: run with more --requests".to_string()
    } else if relay_misses == first {
        format!(
            "it missed {}, each time on the first read of an id on its node",
            times(relay_misses)
        )
    } else if relay_misses > first {
        format!(
            "it missed {}, {} more than the first reads of an id on its node ({first})",
            times(relay_misses),
            relay_misses - first
        )
    } else {
        format!(
            "it missed {}, fewer than the first reads of an id on its node ({first}): its caches were warm",
            times(relay_misses)
        )
    };
    let seed = match rates.seed_hits {
        0 => format!("never hit (0 of {requests})"),
        hits => format!("hit {hits} of {requests} times"),
    };
    println!(
        "-> a new cache per request {seed}; bookrelay's per-node cache hit {:.1}%, {:.1} points more: {why}",
        rate(rates.relay_hits),
        rate(rates.relay_hits) - rate(rates.seed_hits)
    );
}
