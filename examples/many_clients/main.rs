//! Many clients at once through the relay, and what happened to them: a lab for watching
//! load balancing work.
//!
//! Without `--target`, it starts its own relay and node threads in-process on a temporary
//! database, set up as the scenario asks (`--node-delay`, `--weights`, `--cache-capacity`,
//! `--slow-start`); with `--target ADDR` it drives a relay you started (`cargo run --release`).
//! Each client has a friendly name and its own keep-alive connection, and sends a mix of reads
//! (`GET /bookings/{id}` over a set of hot ids, optionally Zipf-skewed) and writes (`PATCH` of
//! those ids). Lab actions (`--kill-at`, `--revive-at`, `--fail-at`, `--heal-at`) act on a
//! node at a time into the run, through the relay's own simulator controls.
//!
//! At the end it prints, per node, the requests served and the cache hit rate (from
//! `X-Node`/`X-Cache`), latency percentiles, errors by status, the relay's events during the
//! run and the retries the clients never saw, then a few sentences on what to notice.
//!
//! ```sh
//! cargo run --release --example many_clients
//! cargo run --release --example many_clients -- --node-delay 0,0,20 --balancer least-connections
//! cargo run --release --example many_clients -- --duration 12 --kill-at 3 --revive-at 8 --timeline t.svg
//! cargo run --release --example many_clients -- --target 127.0.0.1:8080 --duration 20
//! cargo run --release --example many_clients -- --compare --svg images/compare.svg
//! ```
//!
//! `--compare` runs the same workload once per balancer, each on a fresh relay and database,
//! by default in a scenario where they differ (one slow node, hot keys, uneven weights), and
//! prints one table side by side.

mod compare_chart;
mod lab;
mod options;
mod report;
mod svg;
mod timeline;
mod workload;

use bookrelay::cli::RelayConfig;
use bookrelay::launch;
use bookrelay::relay::RelayServer;
use bookrelay::temp_dir::TempDir;
use lab::{Lab, RelayStatus};
use options::Options;
use report::{NodeInfo, RunResult};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

/// A relay and node threads on a temporary database, for one run.
fn start_own_relay(options: &Options, dir: &TempDir) -> Result<RelayServer, String> {
    let defaults = RelayConfig::default();
    let config = RelayConfig {
        listen: "127.0.0.1:0".into(),
        nodes: options.nodes,
        balancer: options.balancer.clone(),
        db: dir.path().join("bookings.db"),
        seed: options.hot_keys,
        node_delays: options.node_delays.clone(),
        weights: options.weights.clone(),
        cache_capacity: options.cache_capacity.unwrap_or(defaults.cache_capacity),
        slow_start: options.slow_start,
        ejection_time: options.ejection_time.unwrap_or(defaults.ejection_time),
        ..defaults
    };
    launch::start_relay(&config).map_err(|e| e.to_string())
}

/// One run against the relay at `addr`: hot ids, the lab beside the clients, then the
/// relay's view of what happened.
fn run(options: &Options, addr: SocketAddr) -> Result<RunResult, String> {
    let ids = Arc::new(workload::hot_ids(addr, options.hot_keys)?);
    let before = RelayStatus::fetch(addr)?;
    let started = Instant::now();
    let echo = options.target.is_some();
    let lab = Lab::start(addr, &before, options.actions.clone(), started, echo)?;
    let (tally, elapsed) = workload::run_clients(options, addr, ids, started)?;
    let events = lab.finish()?;
    let after = RelayStatus::fetch(addr)?;
    let nodes = after
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| NodeInfo {
            name: node.name.clone(),
            delay: options.delay_of(i),
        })
        .collect();
    Ok(RunResult::new(
        &after.balancer,
        tally,
        elapsed,
        nodes,
        after.retries_since(&before),
        events,
    ))
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
    run(&options, relay.addr())
}

fn resolve(target: &str) -> Result<SocketAddr, String> {
    target
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("cannot resolve --target {target}"))
}

fn write_file(path: &str, text: String) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {path}: {e}"))?;
    eprintln!("wrote {path}");
    Ok(())
}

fn main_with(options: &Options) -> Result<(), String> {
    if options.compare {
        let results = options
            .balancers
            .iter()
            .map(|balancer| run_own(options, balancer))
            .collect::<Result<Vec<_>, _>>()?;
        report::print_comparison(options, &results);
        if let Some(path) = &options.svg {
            write_file(path, compare_chart::chart_svg(options, &results))?;
        }
        if let Some(path) = &options.timeline {
            eprintln!("--timeline draws one run; {path} is not written with --compare");
        }
        return Ok(());
    }
    let result = match &options.target {
        Some(target) => {
            let addr = resolve(target)?;
            eprintln!("driving the relay at {addr}");
            run(options, addr)?
        }
        None => run_own(options, &options.balancer)?,
    };
    report::print_run(options, &result);
    if let Some(path) = &options.svg {
        write_file(
            path,
            compare_chart::chart_svg(options, std::slice::from_ref(&result)),
        )?;
    }
    if let Some(path) = &options.timeline {
        let title = format!(
            "many_clients timeline: {}, balancer {}",
            options.describe_workload(),
            result.balancer
        );
        write_file(path, timeline::timeline_svg(&title, &result))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match options::parse(&args) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{}", options::HELP);
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("many_clients: {error}\nRun with --help for usage.");
            return ExitCode::from(2);
        }
    };
    match main_with(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("many_clients: {error}");
            ExitCode::from(1)
        }
    }
}
