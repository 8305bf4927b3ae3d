//! What group commit does for writes: POSTs per second and their p50/p99 at
//! 1, 16 and 64 concurrent writers, through one node and through the relay,
//! beside SQLite's own one-transaction-per-insert rate on the same disk.
//!
//! Everything runs in this process on temporary databases: a node server
//! (one thread per connection, as `bookrelay node`), then a relay over node
//! threads (as `bookrelay`). Each writer has its own keep-alive connection
//! and POSTs new sample bookings back to back. For every point the table also
//! shows how many writes each commit carried (from the store's writer
//! counters, the same figures as `writes` and `commits` in a node's
//! `/stats`). The SQLite line is a plain loop on one connection inserting
//! similar rows into the same schema, one autocommit `INSERT` each, in WAL
//! with `synchronous = NORMAL`: the rate a single writer gets with one
//! transaction per write and no HTTP at all.
//!
//! ```sh
//! cargo run --release --example write_throughput
//! cargo run --release --example write_throughput -- --writers 1,16,64 --duration 5
//! cargo run --release --example write_throughput -- --posts 50 --sqlite-rows 500
//! ```

use bookrelay::cli::RelayConfig;
use bookrelay::client::HttpClient;
use bookrelay::launch;
use bookrelay::node::{self, NodeConfig};
use bookrelay::rand::Rng;
use bookrelay::sample::sample_booking;
use bookrelay::store::{Store, WriteStats};
use bookrelay::temp_dir::TempDir;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

const HELP: &str = "\
write_throughput: concurrent POSTs through a node and the relay, beside SQLite's own insert rate

Usage:
  cargo run --release --example write_throughput -- [OPTIONS]

Options:
  --writers LIST     concurrent writers per point, comma-separated [default: 1,16,64]
  --posts N          POSTs per writer per point [default: 100]
  --duration SECS    post for this long per point instead of a fixed count
  --nodes N          node threads of the in-process relay [default: 3]
  --sqlite-rows N    rows of the plain SQLite insert loop [default: 2000]
  -h, --help         this text
";

struct Options {
    writers: Vec<usize>,
    posts: usize,
    duration: Option<Duration>,
    nodes: usize,
    sqlite_rows: usize,
}

fn parse_args(args: &[String]) -> Result<Option<Options>, String> {
    let mut options = Options {
        writers: vec![1, 16, 64],
        posts: 100,
        duration: None,
        nodes: 3,
        sqlite_rows: 2000,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if matches!(arg.as_str(), "-h" | "--help") {
            return Ok(None);
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (arg.as_str(), None),
        };
        let value = || -> Result<String, String> {
            inline
                .clone()
                .or_else(|| args.clone().next().cloned())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let number = |text: &str| -> Result<usize, String> {
            text.parse::<usize>()
                .map_err(|_| format!("{name} must be a whole number, got '{text}'"))
        };
        let text = match name {
            "--writers" | "--posts" | "--duration" | "--nodes" | "--sqlite-rows" => value()?,
            _ => return Err(format!("unknown option '{arg}'; see --help")),
        };
        if inline.is_none() {
            args.next();
        }
        match name {
            "--writers" => {
                options.writers = text
                    .split(',')
                    .map(|n| number(n.trim()))
                    .collect::<Result<_, _>>()?;
            }
            "--posts" => options.posts = number(&text)?,
            "--duration" => {
                let secs: f64 = text
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s <= 3600.0)
                    .ok_or_else(|| {
                        format!("--duration must be seconds from 0 to 3600, got '{text}'")
                    })?;
                options.duration = Some(Duration::from_secs_f64(secs));
            }
            "--nodes" => options.nodes = number(&text)?,
            _ => options.sqlite_rows = number(&text)?,
        }
    }
    if options.writers.is_empty() || options.writers.contains(&0) {
        return Err("--writers must list counts of at least 1".into());
    }
    if options.posts == 0 || options.nodes == 0 {
        return Err("--posts and --nodes must be at least 1".into());
    }
    Ok(Some(options))
}

/// What one point measured.
struct Point {
    target: &'static str,
    writers: usize,
    posts: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    stats: WriteStats,
}

/// `writers` clients POSTing new bookings to `addr` at once.
fn measure(
    target: &'static str,
    addr: SocketAddr,
    store: &Store,
    writers: usize,
    options: &Options,
    run: usize,
) -> Result<Point, String> {
    let before = store.write_stats();
    let started = Instant::now();
    let deadline = options.duration.map(|d| started + d);
    let posts = options.posts;
    let results: Vec<Result<(Vec<Duration>, usize), String>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                scope.spawn(move || {
                    let mut client = HttpClient::connect(addr, Duration::from_secs(30))
                        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
                    let mut rng = Rng::new((run * 1000 + w) as u64 + 1);
                    let mut latencies = Vec::new();
                    let mut errors = 0;
                    for i in 0.. {
                        let done = match deadline {
                            Some(deadline) => Instant::now() >= deadline,
                            None => i >= posts,
                        };
                        if done {
                            break;
                        }
                        let mut booking = sample_booking(&mut rng);
                        booking.booking_id = format!("r{run}-w{w}-{i}");
                        let body = booking.to_json();
                        let sent = Instant::now();
                        let answer = client
                            .request(
                                "POST",
                                "/bookings",
                                &[("Content-Type", "application/json")],
                                body.as_bytes(),
                            )
                            .map_err(|e| format!("POST to {addr} failed: {e}"))?;
                        latencies.push(sent.elapsed());
                        if answer.status != 201 {
                            errors += 1;
                        }
                    }
                    Ok((latencies, errors))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a writer panicked".into())))
            .collect()
    });
    let elapsed = started.elapsed();
    let after = store.write_stats();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for result in results {
        let (mut l, e) = result?;
        latencies.append(&mut l);
        errors += e;
    }
    latencies.sort_unstable();
    Ok(Point {
        target,
        writers,
        posts: latencies.len(),
        errors,
        elapsed,
        latencies,
        stats: WriteStats {
            writes: after.writes - before.writes,
            commits: after.commits - before.commits,
            largest_batch: after.largest_batch,
        },
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// SQLite alone: one connection, one autocommit INSERT per row.
fn sqlite_loop(rows: usize) -> Result<(f64, Duration, Duration), String> {
    let dir = TempDir::new("write-throughput-sqlite");
    let path = dir.path().join("plain.db");
    // The store creates the same schema; then a plain connection inserts.
    drop(Store::open(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?);
    let conn = rusqlite::Connection::open(&path).map_err(|e| e.to_string())?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(|e| e.to_string())?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("SQLite would not use WAL here (got {mode})"));
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(|e| e.to_string())?;
    let mut insert = conn
        .prepare(
            "INSERT INTO bookings (booking_id, customer_id, customer_name, destination, \
             departure_city, flight_number, hotel_name, room_type, payment_method, email, phone, \
             booking_date, travel_date, return_date, total_price, payment_status, travel_agency, \
             special_requests, loyalty_program_number) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
        )
        .map_err(|e| e.to_string())?;
    let mut rng = Rng::new(99);
    let mut latencies = Vec::with_capacity(rows);
    let started = Instant::now();
    for i in 0..rows {
        let mut b = sample_booking(&mut rng);
        b.booking_id = format!("plain-{i}");
        let began = Instant::now();
        insert
            .execute(rusqlite::params![
                b.booking_id,
                b.customer_id,
                b.customer_name,
                b.destination,
                b.departure_city,
                b.flight_number,
                b.hotel_name,
                b.room_type,
                b.payment_method,
                b.email,
                b.phone,
                b.booking_date,
                b.travel_date,
                b.return_date,
                b.total_price,
                b.payment_status,
                b.travel_agency,
                b.special_requests,
                b.loyalty_program_number,
            ])
            .map_err(|e| format!("insert failed: {e}"))?;
        latencies.push(began.elapsed());
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok((
        rows as f64 / elapsed.as_secs_f64().max(1e-9),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
    ))
}

fn run(options: &Options) -> Result<(), String> {
    let total = options.writers.len() * 2;
    let mut points = Vec::new();
    let mut done = 0;
    let mut progress = |point: &Point| {
        done += 1;
        println!(
            "[{done}/{total}] {:<5} {:>3} writers: {} POSTs in {:.2} s, {} not 201",
            point.target,
            point.writers,
            point.posts,
            point.elapsed.as_secs_f64(),
            point.errors
        );
    };

    // One node, as `bookrelay node` runs it.
    let node_dir = TempDir::new("write-throughput-node");
    let node_db = node_dir.path().join("bookings.db");
    launch::prepare_database(&node_db, 0).map_err(|e| e.to_string())?;
    let node_store = Store::open(&node_db).map_err(|e| e.to_string())?;
    let listener = node::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let node = node::start_node(
        &NodeConfig {
            name: "writer-node".into(),
            db: node_db.clone(),
            cache_capacity: 1024,
            cache_ttl: None,
            delay: Duration::ZERO,
        },
        listener,
    )
    .map_err(|e| e.to_string())?;
    for (i, &writers) in options.writers.iter().enumerate() {
        let point = measure("node", node.addr(), &node_store, writers, options, i)?;
        progress(&point);
        points.push(point);
    }
    drop(node);

    // The relay over node threads, as `bookrelay` runs it.
    let relay_dir = TempDir::new("write-throughput-relay");
    let relay_db = relay_dir.path().join("bookings.db");
    let relay = launch::start_relay(&RelayConfig {
        listen: "127.0.0.1:0".into(),
        nodes: options.nodes,
        db: relay_db.clone(),
        seed: 0,
        ..RelayConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let relay_store = Store::open(&relay_db).map_err(|e| e.to_string())?;
    for (i, &writers) in options.writers.iter().enumerate() {
        let run = options.writers.len() + i;
        let point = measure("relay", relay.addr(), &relay_store, writers, options, run)?;
        progress(&point);
        points.push(point);
    }
    drop(relay);

    println!("[sqlite] {} plain inserts ...", options.sqlite_rows);
    let sqlite = if options.sqlite_rows > 0 {
        Some(sqlite_loop(options.sqlite_rows)?)
    } else {
        None
    };

    println!();
    println!(
        "{:<7} {:>7} {:>8} {:>10} {:>9} {:>9} {:>8} {:>13} {:>8}",
        "target",
        "writers",
        "POSTs",
        "POST/s",
        "p50 ms",
        "p99 ms",
        "commits",
        "writes/commit",
        "not 201"
    );
    for p in &points {
        let rate = p.posts as f64 / p.elapsed.as_secs_f64().max(1e-9);
        let per_commit = if p.stats.commits == 0 {
            "-".to_string()
        } else {
            format!("{:.1}", p.stats.writes as f64 / p.stats.commits as f64)
        };
        println!(
            "{:<7} {:>7} {:>8} {:>10.0} {:>9} {:>9} {:>8} {:>13} {:>8}",
            p.target,
            p.writers,
            p.posts,
            rate,
            ms(percentile(&p.latencies, 0.5)),
            ms(percentile(&p.latencies, 0.99)),
            p.stats.commits,
            per_commit,
            p.errors
        );
    }
    if let Some((rate, p50, p99)) = sqlite {
        println!(
            "{:<7} {:>7} {:>8} {:>10.0} {:>9} {:>9} {:>8} {:>13} {:>8}",
            "sqlite",
            1,
            options.sqlite_rows,
            rate,
            ms(p50),
            ms(p99),
            options.sqlite_rows,
            "1.0",
            0
        );
    }
    println!();
    println!(
        "sqlite: one connection, one autocommit INSERT per row (WAL, synchronous=NORMAL), no HTTP."
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse_args(&args) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("write_throughput: {message}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("write_throughput: {message}");
            ExitCode::FAILURE
        }
    }
}
