//! The clients: each a thread with its own keep-alive connection, sending reads and writes of
//! hot booking ids and tallying what came back: latency, which node answered (`X-Node`),
//! whether its cache hit (`X-Cache`), errors, and requests per node per slice of time for the
//! timeline.

use crate::options::Options;
use bookrelay::client::HttpClient;
use bookrelay::json::{self, Value};
use bookrelay::names::NameGenerator;
use bookrelay::rand::Rng;
use bookrelay::sample::sample_booking;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// The timeline's resolution: fine enough to see a node drop out within a health check
/// (the relay checks every second), coarse enough that each slice holds many requests.
pub const SLICE: Duration = Duration::from_millis(250);

/// How long a client waits for one answer: longer than the relay's own deadlines, so that a
/// timeout here means the relay itself stopped answering.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(35);

/// The tally's name for answers without an `X-Node` header (the relay's own 502/503/504).
pub const NO_NODE: &str = "(none)";

/// Picks key indexes with probability proportional to 1 / (rank + 1)^s.
pub struct KeyPicker {
    cumulative: Vec<f64>,
}

impl KeyPicker {
    pub fn new(keys: usize, skew: f64) -> KeyPicker {
        let mut total = 0.0;
        let cumulative = (0..keys)
            .map(|rank| {
                total += 1.0 / ((rank + 1) as f64).powf(skew);
                total
            })
            .collect();
        KeyPicker { cumulative }
    }

    pub fn pick(&self, rng: &mut Rng) -> usize {
        let total = *self.cumulative.last().expect("at least one key");
        let x = rng.next_f64() * total;
        self.cumulative
            .partition_point(|&c| c <= x)
            .min(self.cumulative.len() - 1)
    }
}

/// What the clients saw.
#[derive(Default)]
pub struct Tally {
    pub latencies_us: Vec<u32>,
    pub by_node: BTreeMap<String, NodeTally>,
    pub errors: BTreeMap<String, u64>,
    /// Per slice of [`SLICE`], the failed requests.
    pub errors_per_slice: Vec<u64>,
}

/// What the clients saw of one node.
#[derive(Default, Clone)]
pub struct NodeTally {
    pub requests: u64,
    pub hits: u64,
    pub misses: u64,
    /// Per slice of [`SLICE`], the answers this node gave.
    pub per_slice: Vec<u64>,
}

fn bump(slices: &mut Vec<u64>, slice: usize, by: u64) {
    if slices.len() <= slice {
        slices.resize(slice + 1, 0);
    }
    slices[slice] += by;
}

impl Tally {
    pub fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        for (node, t) in other.by_node {
            let mine = self.by_node.entry(node).or_default();
            mine.requests += t.requests;
            mine.hits += t.hits;
            mine.misses += t.misses;
            for (slice, n) in t.per_slice.into_iter().enumerate() {
                bump(&mut mine.per_slice, slice, n);
            }
        }
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        for (slice, n) in other.errors_per_slice.into_iter().enumerate() {
            bump(&mut self.errors_per_slice, slice, n);
        }
    }

    fn error(&mut self, kind: String, slice: usize, progress: &Progress) {
        *self.errors.entry(kind).or_default() += 1;
        bump(&mut self.errors_per_slice, slice, 1);
        progress.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Shared between the clients and the progress line.
pub struct Progress {
    pub done: AtomicU64,
    pub errors: AtomicU64,
    pub stop: AtomicBool,
}

/// One client's loop until its request count or the deadline.
fn run_client(
    name: String,
    addr: SocketAddr,
    ids: Arc<Vec<String>>,
    options: Options,
    seed: u64,
    progress: Arc<Progress>,
    (started, deadline): (Instant, Option<Instant>),
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
        let sent_at = Instant::now();
        let slice = (sent_at.duration_since(started).as_nanos() / SLICE.as_nanos()) as usize;
        let connection = match client.as_mut() {
            Some(connection) => connection,
            None => match HttpClient::connect(addr, ANSWER_TIMEOUT) {
                Ok(connection) => client.insert(connection),
                Err(error) => {
                    tally.error(format!("connect: {}", error.kind()), slice, &progress);
                    progress.done.fetch_add(1, Ordering::Relaxed);
                    // A relay that refuses connections would otherwise be hammered in a
                    // tight loop; a connect failure is rare enough to pace.
                    thread::sleep(Duration::from_millis(10));
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
        let elapsed = sent_at.elapsed();
        progress.done.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(answer) => {
                tally
                    .latencies_us
                    .push(elapsed.as_micros().min(u128::from(u32::MAX)) as u32);
                let node = answer.header("x-node").unwrap_or(NO_NODE).to_string();
                let entry = tally.by_node.entry(node).or_default();
                entry.requests += 1;
                bump(&mut entry.per_slice, slice, 1);
                match answer.header("x-cache") {
                    Some("HIT") => entry.hits += 1,
                    Some("MISS") => entry.misses += 1,
                    _ => {}
                }
                if answer.status >= 400 {
                    tally.error(format!("HTTP {}", answer.status), slice, &progress);
                }
            }
            Err(error) => {
                tally.error(format!("connection: {}", error.kind()), slice, &progress);
                client = None;
            }
        }
    }
    tally
}

/// The ids the clients will use: the first `count` bookings by id, creating sample bookings
/// if there are fewer.
pub fn hot_ids(addr: SocketAddr, count: usize) -> Result<Vec<String>, String> {
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

/// Runs the clients from `started` on; returns the merged tally and how long they ran.
pub fn run_clients(
    options: &Options,
    addr: SocketAddr,
    ids: Arc<Vec<String>>,
    started: Instant,
) -> Result<(Tally, Duration), String> {
    let progress = Arc::new(Progress {
        done: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let total = options
        .duration
        .map_or(options.clients * options.requests, |_| 0);
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
                .spawn(move || {
                    run_client(
                        name,
                        addr,
                        ids,
                        options,
                        seed,
                        progress,
                        (started, deadline),
                    )
                })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_puts_the_first_ranks_ahead_and_uniform_spreads_evenly() {
        let mut rng = Rng::new(7);
        let skewed = KeyPicker::new(100, 1.1);
        let mut counts = [0u32; 100];
        for _ in 0..20_000 {
            counts[skewed.pick(&mut rng)] += 1;
        }
        assert!(counts[0] > 4 * counts[9], "{:?}", &counts[..10]);
        let uniform = KeyPicker::new(4, 0.0);
        let mut counts = [0u32; 4];
        for _ in 0..20_000 {
            counts[uniform.pick(&mut rng)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (4_500..5_500).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn merged_tallies_add_slice_by_slice() {
        let mut a = Tally::default();
        let mut node = NodeTally::default();
        bump(&mut node.per_slice, 2, 3);
        a.by_node.insert("owl".into(), node.clone());
        let mut b = Tally::default();
        bump(&mut node.per_slice, 4, 1);
        b.by_node.insert("owl".into(), node);
        bump(&mut b.errors_per_slice, 1, 5);
        a.merge(b);
        assert_eq!(a.by_node["owl"].per_slice, [0, 0, 6, 0, 1]);
        assert_eq!(a.errors_per_slice, [0, 5]);
    }
}
