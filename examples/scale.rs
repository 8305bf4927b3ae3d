//! How the relay scales: throughput against the number of nodes (1–4) and
//! against the number of client connections (1, 8, 32, 128, 512), with the
//! CPU each request costs the whole system (relay and nodes in this process).
//!
//! The load comes from `wrk` (`apt-get install -y wrk`) on a cached
//! `GET /bookings/{id}`; the relay and its node threads run in this process,
//! so `/proc/self/stat` gives their CPU time. Prints two tables and, with
//! `--svg PATH`, draws them.
//!
//! ```sh
//! cargo run --release --example scale -- --svg images/scale.svg
//! ```

use bookrelay::cli::RelayConfig;
use bookrelay::client::HttpClient;
use bookrelay::json;
use bookrelay::launch;
use bookrelay::relay::RelayServer;
use bookrelay::temp_dir::TempDir;
use std::fmt::Write as _;
use std::process::{Command, ExitCode};
use std::time::Duration;

const SECONDS: u32 = 5;

/// One measured configuration.
struct Point {
    nodes: usize,
    conns: usize,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_req: f64,
}

/// CPU time this process has used so far, in seconds (utime + stime).
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// `1.23ms`, `456.78us`, `2.01s` from wrk's output, in milliseconds.
fn wrk_duration_ms(text: &str) -> Option<f64> {
    let (number, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic())?);
    let value: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => value / 1000.0,
        "ms" => value,
        "s" => value * 1000.0,
        _ => return None,
    })
}

fn run_wrk(url: &str, conns: usize) -> Result<(f64, f64, f64, u64), String> {
    let threads = conns.clamp(1, 2).to_string();
    let output = Command::new("wrk")
        .args([
            "--latency",
            "-t",
            &threads,
            "-c",
            &conns.to_string(),
            "-d",
            &format!("{SECONDS}s"),
            url,
        ])
        .output()
        .map_err(|e| format!("cannot run wrk ({e}); install it with: apt-get install -y wrk"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut rps = None;
    let (mut p50, mut p99, mut requests) = (None, None, None);
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", value] => rps = value.parse().ok(),
            ["50%", value] => p50 = wrk_duration_ms(value),
            ["99%", value] => p99 = wrk_duration_ms(value),
            [count, "requests", "in", ..] => requests = count.parse().ok(),
            _ => {}
        }
        if line.contains("Non-2xx") || line.contains("Socket errors") {
            return Err(format!("wrk saw errors: {line}"));
        }
    }
    match (rps, p50, p99, requests) {
        (Some(rps), Some(p50), Some(p99), Some(requests)) => Ok((rps, p50, p99, requests)),
        _ => Err(format!("could not read wrk's output:\n{text}")),
    }
}

fn start(nodes: usize, dir: &TempDir) -> Result<(RelayServer, String), String> {
    let config = RelayConfig {
        listen: "127.0.0.1:0".into(),
        nodes,
        db: dir.path().join("bookings.db"),
        seed: 50,
        ..RelayConfig::default()
    };
    let relay = launch::start_relay(&config).map_err(|e| e.to_string())?;
    let mut client =
        HttpClient::connect(relay.addr(), Duration::from_secs(5)).map_err(|e| e.to_string())?;
    let page = client
        .request("GET", "/bookings?limit=1", &[], b"")
        .map_err(|e| e.to_string())?;
    let id = json::parse(&page.body)
        .ok()
        .and_then(|v| {
            v.get("items")?
                .as_array()?
                .first()?
                .get("booking_id")?
                .as_str()
                .map(str::to_string)
        })
        .ok_or("no booking to request")?;
    let url = format!("http://{}/bookings/{id}", relay.addr());
    Ok((relay, url))
}

fn measure(nodes: usize, conns: usize) -> Result<Point, String> {
    let dir = TempDir::new("scale");
    let (relay, url) = start(nodes, &dir)?;
    // Warm the caches and the pools.
    run_wrk(&url, conns.min(8))?;
    let cpu_before = process_cpu_seconds();
    let (rps, p50_ms, p99_ms, requests) = run_wrk(&url, conns)?;
    let cpu = process_cpu_seconds() - cpu_before;
    drop(relay);
    let point = Point {
        nodes,
        conns,
        rps,
        p50_ms,
        p99_ms,
        cpu_us_per_req: cpu * 1e6 / requests.max(1) as f64,
    };
    eprintln!(
        "{nodes} nodes, {conns:>3} connections: {:>8.0} req/s, p50 {:.3} ms, p99 {:.3} ms, {:.1} us CPU per request",
        point.rps, point.p50_ms, point.p99_ms, point.cpu_us_per_req
    );
    Ok(point)
}

fn table(title: &str, points: &[Point]) {
    println!("\n{title}");
    println!(
        "{:>5} {:>6} {:>10} {:>8} {:>8} {:>14}",
        "nodes", "conns", "req/s", "p50 ms", "p99 ms", "CPU us/req"
    );
    for p in points {
        println!(
            "{:>5} {:>6} {:>10.0} {:>8.3} {:>8.3} {:>14.1}",
            p.nodes, p.conns, p.rps, p.p50_ms, p.p99_ms, p.cpu_us_per_req
        );
    }
}

/// One panel: bars of req/s (left axis) with CPU µs/req as dots (right axis).
fn panel(
    svg: &mut String,
    x0: f64,
    title: &str,
    points: &[Point],
    label: impl Fn(&Point) -> String,
) {
    let (top, height, width) = (70.0, 260.0, 420.0);
    let max_rps = points.iter().map(|p| p.rps).fold(1.0, f64::max) * 1.1;
    let max_cpu = points.iter().map(|p| p.cpu_us_per_req).fold(1.0, f64::max) * 1.25;
    let _ = write!(
        svg,
        r#"<text x="{x0}" y="{}" font-weight="bold">{title}</text>"#,
        top - 20.0
    );
    for step in 0..=4 {
        let y = top + height - height * f64::from(step) / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{x0}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#e3e3e3"/><text x="{}" y="{:.1}" text-anchor="end" fill="#3d6ab3">{:.0}k</text><text x="{}" y="{:.1}" fill="#b3413d">{:.0}</text>"##,
            x0 + width,
            x0 - 6.0,
            y + 4.0,
            max_rps * f64::from(step) / 4.0 / 1000.0,
            x0 + width + 6.0,
            y + 4.0,
            max_cpu * f64::from(step) / 4.0
        );
    }
    let slot = width / points.len() as f64;
    for (i, p) in points.iter().enumerate() {
        let x = x0 + slot * i as f64 + slot * 0.2;
        let h = height * p.rps / max_rps;
        let _ = write!(
            svg,
            r##"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="#3d6ab3"><title>{:.0} req/s</title></rect>"##,
            top + height - h,
            slot * 0.6,
            p.rps
        );
        let cy = top + height - height * p.cpu_us_per_req / max_cpu;
        let _ = write!(
            svg,
            r##"<circle cx="{:.1}" cy="{cy:.1}" r="5" fill="#b3413d"><title>{:.1} us CPU per request</title></circle>"##,
            x + slot * 0.3,
            p.cpu_us_per_req
        );
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x + slot * 0.3,
            top + height + 18.0,
            label(p)
        );
    }
}

fn chart(by_nodes: &[Point], by_conns: &[Point]) -> String {
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="1000" height="400" viewBox="0 0 1000 400" font-family="Helvetica, Arial, sans-serif" font-size="12"><rect width="1000" height="400" fill="white"/>"#
    );
    let _ = write!(
        svg,
        r##"<text x="20" y="24" font-size="15" font-weight="bold">Relay throughput (bars, req/s) and CPU per request (dots, µs, relay + nodes)</text>"##
    );
    panel(
        &mut svg,
        60.0,
        "against nodes (32 connections)",
        by_nodes,
        |p| format!("{} node{}", p.nodes, if p.nodes == 1 { "" } else { "s" }),
    );
    panel(
        &mut svg,
        550.0,
        "against connections (3 nodes)",
        by_conns,
        |p| format!("{} conns", p.conns),
    );
    let _ = write!(
        svg,
        r##"<text x="20" y="385" fill="#555">wrk --latency, {SECONDS} s per point, cached GET /bookings/{{id}}; 2-core machine shared by wrk, relay and nodes.</text></svg>"##
    );
    svg.push('\n');
    svg
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let svg_path = match args.as_slice() {
        [] => None,
        [flag, path] if flag == "--svg" => Some(path.clone()),
        _ => {
            eprintln!("usage: scale [--svg PATH]");
            return ExitCode::from(2);
        }
    };
    let outcome = (|| -> Result<(), String> {
        let by_nodes = (1..=4)
            .map(|nodes| measure(nodes, 32))
            .collect::<Result<Vec<_>, _>>()?;
        let by_conns = [1, 8, 32, 128, 512]
            .into_iter()
            .map(|conns| measure(3, conns))
            .collect::<Result<Vec<_>, _>>()?;
        table("Against the number of nodes (32 connections):", &by_nodes);
        table("Against the number of connections (3 nodes):", &by_conns);
        if let Some(path) = svg_path {
            std::fs::write(&path, chart(&by_nodes, &by_conns))
                .map_err(|e| format!("cannot write {path}: {e}"))?;
            eprintln!("wrote {path}");
        }
        Ok(())
    })();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("scale: {error}");
            ExitCode::from(1)
        }
    }
}
