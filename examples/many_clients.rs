//! Many clients at once through the relay, and what happened to them.
//!
//! Without `--target`, it starts its own relay and node threads in-process on
//! a temporary database; with `--target ADDR` it drives a relay you started
//! (`cargo run --release`). Each client has a friendly name and its own
//! keep-alive connection, and sends a mix of reads (`GET /bookings/{id}` over
//! a set of hot ids, optionally Zipf-skewed) and writes (`PATCH` of those ids).
//! At the end it prints, per node, the requests served and the cache hit rate
//! (from `X-Cache`), then latency percentiles, throughput and errors by status.
//!
//! ```sh
//! cargo run --release --example many_clients
//! cargo run --release --example many_clients -- --clients 32 --requests 1000 --balancer consistent-hash
//! cargo run --release --example many_clients -- --read-ratio 0.95 --hot-keys 1000 --duration 10 --balancer consistent-hash
//! cargo run --release --example many_clients -- --target 127.0.0.1:8080
//! cargo run --release --example many_clients -- --compare --svg images/compare.svg
//! ```
//!
//! `--compare` runs the same workload once per balancer, each on a fresh
//! relay and database, and prints one table side by side; `--svg` draws the
//! results (per-node share and hit rate per balancer, latency percentiles)
//! as a chart written by hand with std only.

use bookrelay::balancer::NAMES;
use bookrelay::cli::RelayConfig;
use bookrelay::client::HttpClient;
use bookrelay::json::{self, Value};
use bookrelay::launch;
use bookrelay::names::NameGenerator;
use bookrelay::rand::Rng;
use bookrelay::relay::RelayServer;
use bookrelay::sample::sample_booking;
use bookrelay::temp_dir::TempDir;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const HELP: &str = "\
many_clients: many concurrent clients through the relay, then a report

Usage:
  cargo run --release --example many_clients -- [OPTIONS]

Options:
  --clients N        concurrent clients, each on its own keep-alive connection [default: 16]
  --requests M       requests per client [default: 2000]
  --duration SECS    run for this long instead of a fixed number of requests
  --target ADDR      drive a running relay (e.g. 127.0.0.1:8080) instead of starting one
  --balancer NAME    balancer of the in-process relay [default: round-robin]
  --nodes N          node threads of the in-process relay [default: 3]
  --read-ratio R     share of requests that are reads, 0 to 1 [default: 0.9]
  --hot-keys K       booking ids the clients read and write [default: 200]
  --zipf S           skew of key popularity: 0 uniform, 1 classic Zipf [default: 0]
  --seed N           seed of the clients' random choices [default: 1]
  --compare          run once per balancer (six in-process relays) and compare
  --svg PATH         also draw the results as an SVG chart
  -h, --help         this text
";

/// The workload and where to send it.
#[derive(Debug, Clone)]
struct Options {
    clients: usize,
    requests: usize,
    duration: Option<Duration>,
    target: Option<String>,
    balancer: String,
    nodes: usize,
    read_ratio: f64,
    hot_keys: usize,
    zipf: f64,
    seed: u64,
    compare: bool,
    svg: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clients: 16,
            requests: 2000,
            duration: None,
            target: None,
            balancer: "round-robin".into(),
            nodes: 3,
            read_ratio: 0.9,
            hot_keys: 200,
            zipf: 0.0,
            seed: 1,
            compare: false,
            svg: None,
        }
    }
}

fn parse_options(args: &[String]) -> Result<Option<Options>, String> {
    let mut options = Options::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value.to_string())),
            _ => (arg.as_str(), None),
        };
        if matches!(name, "-h" | "--help") {
            return Ok(None);
        }
        if name == "--compare" {
            options.compare = true;
            continue;
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next().cloned())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        fn number<T: std::str::FromStr>(name: &str, text: String) -> Result<T, String> {
            text.parse()
                .map_err(|_| format!("{name} needs a number, got '{text}'"))
        }
        match name {
            "--clients" => options.clients = number(name, value()?)?,
            "--requests" => options.requests = number(name, value()?)?,
            "--duration" => {
                options.duration = Some(Duration::from_secs_f64(number(name, value()?)?))
            }
            "--target" => options.target = Some(value()?),
            "--balancer" => {
                let balancer = value()?;
                if !NAMES.contains(&balancer.as_str()) {
                    return Err(format!(
                        "--balancer must be one of {}, got '{balancer}'",
                        NAMES.join(", ")
                    ));
                }
                options.balancer = balancer;
            }
            "--nodes" => options.nodes = number(name, value()?)?,
            "--read-ratio" => options.read_ratio = number(name, value()?)?,
            "--hot-keys" => options.hot_keys = number(name, value()?)?,
            "--zipf" => options.zipf = number(name, value()?)?,
            "--seed" => options.seed = number(name, value()?)?,
            "--svg" => options.svg = Some(value()?),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if options.clients == 0 || options.hot_keys == 0 {
        return Err("--clients and --hot-keys must be at least 1".into());
    }
    if !(0.0..=1.0).contains(&options.read_ratio) {
        return Err(format!(
            "--read-ratio must be from 0 to 1, got {}",
            options.read_ratio
        ));
    }
    if options.zipf < 0.0 || !options.zipf.is_finite() {
        return Err(format!("--zipf must be 0 or more, got {}", options.zipf));
    }
    if options.compare && options.target.is_some() {
        return Err("--compare starts its own relay per balancer; leave out --target".into());
    }
    if options.nodes == 0 && options.target.is_none() {
        return Err("--nodes must be at least 1 for the in-process relay".into());
    }
    Ok(Some(options))
}

/// Picks key indexes with probability proportional to 1 / (rank + 1)^s.
struct KeyPicker {
    cumulative: Vec<f64>,
}

impl KeyPicker {
    fn new(keys: usize, skew: f64) -> KeyPicker {
        let mut total = 0.0;
        let cumulative = (0..keys)
            .map(|rank| {
                total += 1.0 / ((rank + 1) as f64).powf(skew);
                total
            })
            .collect();
        KeyPicker { cumulative }
    }

    fn pick(&self, rng: &mut Rng) -> usize {
        let total = *self.cumulative.last().expect("at least one key");
        let x = rng.next_f64() * total;
        self.cumulative
            .partition_point(|&c| c <= x)
            .min(self.cumulative.len() - 1)
    }
}

/// What one client saw.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    by_node: BTreeMap<String, NodeTally>,
    errors: BTreeMap<String, u64>,
}

#[derive(Default, Clone, Copy)]
struct NodeTally {
    requests: u64,
    hits: u64,
    misses: u64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        for (node, t) in other.by_node {
            let mine = self.by_node.entry(node).or_default();
            mine.requests += t.requests;
            mine.hits += t.hits;
            mine.misses += t.misses;
        }
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
    }
}

/// Shared between the clients and the progress line.
struct Progress {
    done: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
}

const ANSWER_TIMEOUT: Duration = Duration::from_secs(35);

fn run_client(
    name: String,
    addr: SocketAddr,
    ids: Arc<Vec<String>>,
    options: Options,
    seed: u64,
    progress: Arc<Progress>,
    deadline: Option<Instant>,
) -> Tally {
    let mut rng = Rng::new(seed);
    let picker = KeyPicker::new(ids.len(), options.zipf);
    let mut tally = Tally::default();
    let mut client = None;
    let mut sent = 0usize;
    loop {
        let finished = match deadline {
            Some(deadline) => Instant::now() >= deadline,
            None => sent >= options.requests,
        };
        if finished || progress.stop.load(Ordering::Relaxed) {
            break;
        }
        sent += 1;
        let id = &ids[picker.pick(&mut rng)];
        let path = format!("/bookings/{id}");
        let read = rng.chance(options.read_ratio);
        let started = Instant::now();
        let connection = match client.as_mut() {
            Some(connection) => connection,
            None => match HttpClient::connect(addr, ANSWER_TIMEOUT) {
                Ok(connection) => client.insert(connection),
                Err(error) => {
                    *tally
                        .errors
                        .entry(format!("connect: {}", error.kind()))
                        .or_default() += 1;
                    progress.errors.fetch_add(1, Ordering::Relaxed);
                    progress.done.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            },
        };
        let result = if read {
            connection.request("GET", &path, &[], b"")
        } else {
            let body = format!(r#"{{"special_requests":"updated by {name} at request {sent}"}}"#);
            connection.request(
                "PATCH",
                &path,
                &[("Content-Type", "application/json")],
                body.as_bytes(),
            )
        };
        let elapsed = started.elapsed();
        progress.done.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(answer) => {
                tally
                    .latencies_us
                    .push(elapsed.as_micros().min(u128::from(u32::MAX)) as u32);
                let node = answer.header("x-node").unwrap_or("(none)").to_string();
                let entry = tally.by_node.entry(node).or_default();
                entry.requests += 1;
                match answer.header("x-cache") {
                    Some("HIT") => entry.hits += 1,
                    Some("MISS") => entry.misses += 1,
                    _ => {}
                }
                if answer.status >= 400 {
                    *tally
                        .errors
                        .entry(format!("HTTP {}", answer.status))
                        .or_default() += 1;
                    progress.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(error) => {
                *tally
                    .errors
                    .entry(format!("connection: {}", error.kind()))
                    .or_default() += 1;
                progress.errors.fetch_add(1, Ordering::Relaxed);
                client = None;
            }
        }
    }
    tally
}

/// The ids the clients will use: the first `count` bookings by id, creating
/// sample bookings if there are fewer.
fn hot_ids(addr: SocketAddr, count: usize) -> Result<Vec<String>, String> {
    let mut client = HttpClient::connect(addr, ANSWER_TIMEOUT)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let mut ids = Vec::with_capacity(count);
    let mut after = String::new();
    while ids.len() < count {
        let page_size = (count - ids.len()).min(1000);
        let path = format!("/bookings?limit={page_size}&after={after}");
        let answer = client
            .request("GET", &path, &[], b"")
            .map_err(|e| format!("GET {path}: {e}"))?;
        if answer.status != 200 {
            return Err(format!("GET {path} answered {}", answer.status));
        }
        let page = json::parse(&answer.body).map_err(|e| format!("GET {path}: {e}"))?;
        let items = page.get("items").and_then(Value::as_array).unwrap_or(&[]);
        ids.extend(
            items
                .iter()
                .filter_map(|b| b.get("booking_id")?.as_str().map(str::to_string)),
        );
        match page.get("next_after").and_then(Value::as_str) {
            Some(next) => after = next.to_string(),
            None => break,
        }
    }
    let mut rng = Rng::from_entropy();
    while ids.len() < count {
        let booking = sample_booking(&mut rng);
        let answer = client
            .request(
                "POST",
                "/bookings",
                &[("Content-Type", "application/json")],
                booking.to_json().as_bytes(),
            )
            .map_err(|e| format!("POST /bookings: {e}"))?;
        if answer.status != 201 {
            return Err(format!(
                "POST /bookings answered {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ));
        }
        ids.push(booking.booking_id);
    }
    Ok(ids)
}

/// A whole run; returns the merged tally and how long it took.
fn run(options: &Options, addr: SocketAddr) -> Result<(Tally, Duration), String> {
    let ids = Arc::new(hot_ids(addr, options.hot_keys)?);
    let progress = Arc::new(Progress {
        done: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let total = options
        .duration
        .map_or(options.clients * options.requests, |_| 0);
    let started = Instant::now();
    let deadline = options.duration.map(|d| started + d);
    let mut names = NameGenerator::new(Rng::new(options.seed));
    let clients: Vec<_> = (0..options.clients)
        .map(|i| {
            let (name, ids, options, progress) = (
                names.next_name(),
                Arc::clone(&ids),
                options.clone(),
                Arc::clone(&progress),
            );
            let seed = options.seed.wrapping_mul(1_000_003).wrapping_add(i as u64);
            thread::Builder::new()
                .name(name.clone())
                .spawn(move || run_client(name, addr, ids, options, seed, progress, deadline))
                .map_err(|e| format!("cannot start a client thread: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let reporter = {
        let progress = Arc::clone(&progress);
        thread::spawn(move || report_progress(&progress, total, started))
    };
    let mut tally = Tally::default();
    for client in clients {
        tally.merge(
            client
                .join()
                .map_err(|_| "a client thread panicked".to_string())?,
        );
    }
    let elapsed = started.elapsed();
    progress.stop.store(true, Ordering::SeqCst);
    reporter.thread().unpark();
    let _ = reporter.join();
    Ok((tally, elapsed))
}

/// A live line on a terminal (rewritten in place), plain lines otherwise.
fn report_progress(progress: &Progress, total: usize, started: Instant) {
    let terminal = std::io::stderr().is_terminal();
    let period = if terminal {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(2)
    };
    let mut last = (Instant::now(), 0u64);
    while !progress.stop.load(Ordering::SeqCst) {
        thread::park_timeout(period);
        let done = progress.done.load(Ordering::Relaxed);
        let now = Instant::now();
        let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-9);
        last = (now, done);
        let of = if total > 0 {
            format!("/{total}")
        } else {
            String::new()
        };
        let line = format!(
            "{:>6.1}s  {done}{of} requests  {rate:>8.0} req/s  errors {}",
            started.elapsed().as_secs_f64(),
            progress.errors.load(Ordering::Relaxed)
        );
        if terminal {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
        let _ = std::io::stderr().flush();
    }
    if terminal {
        eprintln!();
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    f64::from(sorted[rank]) / 1000.0
}

/// One finished run and what it measured.
struct RunResult {
    balancer: String,
    tally: Tally,
    elapsed: Duration,
}

impl RunResult {
    fn new(balancer: &str, mut tally: Tally, elapsed: Duration) -> RunResult {
        tally.latencies_us.sort_unstable();
        RunResult {
            balancer: balancer.to_string(),
            tally,
            elapsed,
        }
    }

    fn requests(&self) -> u64 {
        self.tally.by_node.values().map(|t| t.requests).sum()
    }

    fn throughput(&self) -> f64 {
        self.requests() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn hits_and_misses(&self) -> (u64, u64) {
        self.tally
            .by_node
            .values()
            .fold((0, 0), |(h, m), t| (h + t.hits, m + t.misses))
    }

    fn hit_ratio(&self) -> Option<f64> {
        let (hits, misses) = self.hits_and_misses();
        (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64)
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        percentile(&self.tally.latencies_us, p)
    }

    fn errors(&self) -> u64 {
        self.tally.errors.values().sum()
    }

    /// Each node's share of the requests, largest first.
    fn shares(&self) -> Vec<(String, f64, Option<f64>)> {
        let total = self.requests().max(1) as f64;
        let mut shares: Vec<_> = self
            .tally
            .by_node
            .iter()
            .map(|(name, t)| {
                let ratio =
                    (t.hits + t.misses > 0).then(|| t.hits as f64 / (t.hits + t.misses) as f64);
                (name.clone(), t.requests as f64 / total, ratio)
            })
            .collect();
        shares.sort_by(|a, b| b.1.total_cmp(&a.1));
        shares
    }
}

fn print_report(options: &Options, result: &RunResult) {
    let (tally, elapsed, balancer) = (&result.tally, result.elapsed, result.balancer.as_str());
    let requests = result.requests();
    let errors = result.errors();
    println!();
    println!(
        "{} clients, {:.0}% reads over {} hot ids (zipf {}), balancer {balancer}",
        options.clients,
        options.read_ratio * 100.0,
        options.hot_keys,
        options.zipf
    );
    println!();
    println!(
        "{:<24} {:>9} {:>7} {:>9} {:>9} {:>9}",
        "node", "requests", "share", "hits", "misses", "hit rate"
    );
    let (mut hits, mut misses) = (0, 0);
    for (node, t) in &tally.by_node {
        hits += t.hits;
        misses += t.misses;
        println!(
            "{node:<24} {:>9} {:>6.1}% {:>9} {:>9} {:>9}",
            t.requests,
            100.0 * t.requests as f64 / requests.max(1) as f64,
            t.hits,
            t.misses,
            hit_rate(t.hits, t.misses)
        );
    }
    println!(
        "{:<24} {:>9} {:>7} {:>9} {:>9} {:>9}",
        "all",
        requests,
        "100.0%",
        hits,
        misses,
        hit_rate(hits, misses)
    );
    println!();
    println!(
        "throughput {:.0} req/s over {:.2} s; latency p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms",
        requests as f64 / elapsed.as_secs_f64().max(1e-9),
        elapsed.as_secs_f64(),
        percentile(&tally.latencies_us, 50.0),
        percentile(&tally.latencies_us, 95.0),
        percentile(&tally.latencies_us, 99.0)
    );
    if errors == 0 {
        println!("errors: none");
    } else {
        let list: Vec<String> = tally
            .errors
            .iter()
            .map(|(kind, n)| format!("{kind}: {n}"))
            .collect();
        println!("errors: {errors} ({})", list.join(", "));
    }
}

fn hit_rate(hits: u64, misses: u64) -> String {
    if hits + misses == 0 {
        "-".into()
    } else {
        format!("{:.1}%", 100.0 * hits as f64 / (hits + misses) as f64)
    }
}

/// A relay and node threads on a temporary database, for one run.
fn start_own_relay(options: &Options, dir: &TempDir) -> Result<RelayServer, String> {
    let config = RelayConfig {
        listen: "127.0.0.1:0".into(),
        nodes: options.nodes,
        balancer: options.balancer.clone(),
        db: dir.path().join("bookings.db"),
        seed: options.hot_keys,
        ..RelayConfig::default()
    };
    launch::start_relay(&config).map_err(|e| e.to_string())
}

/// One run on a fresh in-process relay with `balancer`.
fn run_own(options: &Options, balancer: &str) -> Result<RunResult, String> {
    let dir = TempDir::new("many-clients");
    let options = Options {
        balancer: balancer.to_string(),
        ..options.clone()
    };
    let relay = start_own_relay(&options, &dir)?;
    eprintln!(
        "started a relay at {} ({balancer}) with {} node threads on {}",
        relay.addr(),
        options.nodes,
        dir.path().display()
    );
    let (tally, elapsed) = run(&options, relay.addr())?;
    Ok(RunResult::new(balancer, tally, elapsed))
}

/// The same workload once per balancer, then one table.
fn compare_all(options: &Options) -> Result<Vec<RunResult>, String> {
    let mut results = Vec::new();
    for balancer in NAMES {
        results.push(run_own(options, balancer)?);
    }
    println!();
    println!(
        "{} clients x {}, {:.0}% reads over {} hot ids (zipf {}), {} nodes, each balancer on a fresh relay",
        options.clients,
        options.duration.map_or(format!("{} requests", options.requests), |d| format!("{:.0} s", d.as_secs_f64())),
        options.read_ratio * 100.0,
        options.hot_keys,
        options.zipf,
        options.nodes
    );
    println!();
    println!(
        "{:<18} {:>9} {:>8} {:>8} {:>8} {:>9} {:>7}  share per node (largest first)",
        "balancer", "req/s", "p50 ms", "p95 ms", "p99 ms", "hit rate", "errors"
    );
    for result in &results {
        let shares: Vec<String> = result
            .shares()
            .iter()
            .map(|(_, share, _)| format!("{:.0}%", share * 100.0))
            .collect();
        println!(
            "{:<18} {:>9.0} {:>8.3} {:>8.3} {:>8.3} {:>9} {:>7}  {}",
            result.balancer,
            result.throughput(),
            result.percentile_ms(50.0),
            result.percentile_ms(95.0),
            result.percentile_ms(99.0),
            result
                .hit_ratio()
                .map_or("-".into(), |r| format!("{:.1}%", r * 100.0)),
            result.errors(),
            shares.join(" / ")
        );
    }
    Ok(results)
}

/// Escapes text for SVG.
fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Two panels: per balancer, each node's share of requests (bars) with its
/// cache hit rate (dots); then p50/p95/p99 latency per balancer.
fn chart_svg(options: &Options, results: &[RunResult]) -> String {
    use std::fmt::Write as _;
    let palette = [
        "#3d6ab3", "#2f8a44", "#c08a1e", "#6b4aa8", "#b3413d", "#2a8c8c",
    ];
    let (width, group_width) = (160 + 140 * results.len().max(1), 140.0);
    let height = 620;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = write!(
        svg,
        r#"<rect width="{width}" height="{height}" fill="white"/>"#
    );
    let _ = write!(
        svg,
        r#"<text x="20" y="28" font-size="16" font-weight="bold">many_clients: {} clients, {:.0}% reads over {} hot ids, {} nodes</text>"#,
        options.clients,
        options.read_ratio * 100.0,
        options.hot_keys,
        options.nodes
    );
    // Panel 1: share per node (0..100%) and hit rate.
    let (top, panel) = (60.0, 220.0);
    let _ = write!(
        svg,
        r#"<text x="20" y="{}" font-weight="bold">Share of requests per node (bars) and cache hit rate (dots)</text>"#,
        top - 10.0
    );
    for tick in [0, 25, 50, 75, 100] {
        let y = top + panel - panel * f64::from(tick) / 100.0;
        let _ = write!(
            svg,
            r##"<line x1="70" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#e3e3e3"/><text x="62" y="{:.1}" text-anchor="end">{tick}%</text>"##,
            width - 20,
            y + 4.0
        );
    }
    for (g, result) in results.iter().enumerate() {
        let x0 = 90.0 + group_width * g as f64;
        let shares = result.shares();
        let bar = (group_width - 30.0) / shares.len().max(1) as f64;
        for (i, (name, share, hit)) in shares.iter().enumerate() {
            let x = x0 + bar * i as f64;
            let h = panel * share;
            let _ = write!(
                svg,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{}: {:.1}% of requests</title></rect>"#,
                top + panel - h,
                bar - 4.0,
                palette[i % palette.len()],
                xml(name),
                share * 100.0
            );
            if let Some(hit) = hit {
                let _ = write!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="black"><title>{}: hit rate {:.1}%</title></circle>"#,
                    x + (bar - 4.0) / 2.0,
                    top + panel - panel * hit,
                    xml(name),
                    hit * 100.0
                );
            }
        }
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x0 + (group_width - 30.0) / 2.0,
            top + panel + 18.0,
            xml(&result.balancer)
        );
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#555">{:.0} req/s</text>"##,
            x0 + (group_width - 30.0) / 2.0,
            top + panel + 34.0,
            result.throughput()
        );
    }
    // Panel 2: latency percentiles.
    let (top, panel) = (360.0, 200.0);
    let worst = results
        .iter()
        .map(|r| r.percentile_ms(99.0))
        .fold(0.0_f64, f64::max)
        .max(0.001);
    let scale = nice_ceiling(worst);
    let _ = write!(
        svg,
        r#"<text x="20" y="{}" font-weight="bold">Latency percentiles (ms): p50, p95, p99</text>"#,
        top - 10.0
    );
    for step in 0..=4 {
        let value = scale * f64::from(step) / 4.0;
        let y = top + panel - panel * f64::from(step) / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="70" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#e3e3e3"/><text x="62" y="{:.1}" text-anchor="end">{value:.2}</text>"##,
            width - 20,
            y + 4.0
        );
    }
    let shades = ["#9bb5e0", "#4f7cc8", "#1f3f7a"];
    for (g, result) in results.iter().enumerate() {
        let x0 = 90.0 + group_width * g as f64;
        let bar = (group_width - 30.0) / 3.0;
        for (i, p) in [50.0, 95.0, 99.0].iter().enumerate() {
            let value = result.percentile_ms(*p);
            let h = panel * value / scale;
            let _ = write!(
                svg,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{} p{p}: {value:.3} ms</title></rect>"#,
                x0 + bar * i as f64,
                top + panel - h,
                bar - 4.0,
                shades[i],
                xml(&result.balancer)
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x0 + (group_width - 30.0) / 2.0,
            top + panel + 18.0,
            xml(&result.balancer)
        );
    }
    let legend_y = top + panel + 44.0;
    for (i, label) in ["p50", "p95", "p99"].iter().enumerate() {
        let x = 90.0 + 70.0 * i as f64;
        let _ = write!(
            svg,
            r#"<rect x="{x}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{}" y="{:.1}">{label}</text>"#,
            legend_y - 10.0,
            shades[i],
            x + 16.0,
            legend_y
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// 1, 2 or 5 times a power of ten, at or above `value`: a readable axis top.
fn nice_ceiling(value: f64) -> f64 {
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&top| top >= value)
        .unwrap_or(10.0 * magnitude)
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
            eprintln!("many_clients: {error}\nRun with --help for usage.");
            return ExitCode::from(2);
        }
    };
    let outcome = if options.compare {
        compare_all(&options)
    } else {
        match &options.target {
            Some(target) => target
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| format!("cannot resolve --target {target}"))
                .and_then(|addr| {
                    let balancer = current_balancer(addr).unwrap_or_else(|| "(unknown)".into());
                    eprintln!("driving the relay at {addr}");
                    run(&options, addr)
                        .map(|(tally, elapsed)| vec![RunResult::new(&balancer, tally, elapsed)])
                }),
            None => run_own(&options, &options.balancer).map(|result| vec![result]),
        }
        .map(|results| {
            print_report(&options, &results[0]);
            results
        })
    }
    .and_then(|results| match &options.svg {
        Some(path) => {
            std::fs::write(path, chart_svg(&options, &results))
                .map_err(|e| format!("cannot write {path}: {e}"))?;
            eprintln!("wrote {path}");
            Ok(())
        }
        None => Ok(()),
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("many_clients: {error}");
            ExitCode::from(1)
        }
    }
}

/// The balancer a running relay reports in `/_relay/status`.
fn current_balancer(addr: SocketAddr) -> Option<String> {
    let mut client = HttpClient::connect(addr, Duration::from_secs(5)).ok()?;
    let answer = client.request("GET", "/_relay/status", &[], b"").ok()?;
    let status = json::parse(&answer.body).ok()?;
    status.get("balancer")?.as_str().map(str::to_string)
}
