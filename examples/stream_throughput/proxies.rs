//! `--proxies`: the relay against HAProxy and nginx as proxies in front of one
//! nginx file server, in interleaved rounds, with the relay's memory growth.

use crate::client::{download, measure, status_kib};
use bookrelay::cli::RelayConfig;
use bookrelay::client::HttpClient;
use bookrelay::launch;
use bookrelay::temp_dir::TempDir;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Interleaved rounds per part (one at a time, then K at once).
const ROUNDS: usize = 3;
/// The big file, in the temporary directory nginx serves as its root.
const FILE_NAME: &str = "download.bin";
/// A small file that tells "this proxy answers" by a 200 through it.
const READY_FILE: &str = "ready.txt";
/// How long nginx, HAProxy and the relay get to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// The acceptance line's bounds.
const MIN_RATIO_TO_HAPROXY: f64 = 0.9;
const MAX_RSS_GROWTH_MIB: f64 = 16.0;
const INSTALL_HINT: &str = "apt-get install -y nginx-light haproxy";

pub fn run_proxy_comparison(mib: u64, parallel: usize) -> ExitCode {
    let missing = missing_tools();
    if !missing.is_empty() {
        eprintln!(
            "stream_throughput: --proxies needs nginx and haproxy on PATH, not found: {}; \
             install them with: {INSTALL_HINT}",
            missing.join(", ")
        );
        return ExitCode::from(2);
    }
    match compare_proxies(mib, parallel) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("stream_throughput: {why}");
            ExitCode::from(1)
        }
    }
}

/// Which of nginx and haproxy cannot be run (`-v` only prints the version).
fn missing_tools() -> Vec<&'static str> {
    ["nginx", "haproxy"]
        .into_iter()
        .filter(|tool| {
            Command::new(tool)
                .arg("-v")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_err()
        })
        .collect()
}

/// A proxy the file is downloaded through.
struct Proxy {
    name: &'static str,
    addr: SocketAddr,
    /// Only the relay runs in this process, so only its downloads say
    /// anything about memory here.
    in_process: bool,
}

fn compare_proxies(mib: u64, parallel: usize) -> Result<(), String> {
    // Declared first so that it is dropped last: nginx's stop reads its pid
    // file from here.
    let dir = TempDir::new("stream-throughput");
    let bytes = mib * 1024 * 1024;
    write_files(dir.path(), bytes)?;
    let [file_port, nginx_port, haproxy_port] = free_ports()?;
    let file_server = loopback(file_port);

    println!("starting nginx (file server on {file_server}, proxy on port {nginx_port})");
    // Stopped when dropped, on the way out and on every error path.
    let mut nginx = start_nginx(dir.path(), file_port, nginx_port)?;
    wait_until_ready("nginx file server", file_server, Some(&mut nginx))?;
    wait_until_ready("nginx proxy", loopback(nginx_port), Some(&mut nginx))?;
    println!("starting HAProxy on port {haproxy_port}");
    let mut haproxy = start_haproxy(dir.path(), file_port, haproxy_port)?;
    wait_until_ready("HAProxy", loopback(haproxy_port), Some(&mut haproxy))?;
    // After the file server answers: the relay checks an external backend
    // once when it starts, and with no health path it would stay down.
    let relay = start_relay_in_front_of(file_server)?;
    wait_until_ready("relay", relay.addr(), None)?;
    println!("relay on {}", relay.addr());

    let proxies = [
        Proxy {
            name: "HAProxy",
            addr: loopback(haproxy_port),
            in_process: false,
        },
        Proxy {
            name: "nginx",
            addr: loopback(nginx_port),
            in_process: false,
        },
        Proxy {
            name: "relay",
            addr: relay.addr(),
            in_process: true,
        },
    ];
    let target = format!("/{FILE_NAME}");
    println!(
        "\n{} MiB per download of {target}, {ROUNDS} interleaved rounds",
        mib
    );
    // Untimed, straight from the file server: the first read of the file
    // fills the page cache, a cost that would otherwise fall on whichever
    // proxy goes first.
    println!("warm-up: one download straight from the nginx file server");
    download(file_server, &target, bytes).map_err(|why| format!("warm-up download: {why}"))?;
    let single = run_rounds(&proxies, &target, bytes, 1)?;
    let at_once = run_rounds(&proxies, &target, bytes, parallel)?;
    print_summary(&proxies, &single, &at_once, parallel);
    Ok(())
}

/// The sparse big file (nginx sends it with sendfile from the page cache),
/// and the small one for the readiness check. nginx's workers may run as
/// another user (`nobody` under root), so everything is world-readable.
fn write_files(dir: &Path, bytes: u64) -> Result<(), String> {
    let failed = |what: &str, e: std::io::Error| format!("{what} in {}: {e}", dir.display());
    let big = dir.join(FILE_NAME);
    File::create(&big)
        .and_then(|file| file.set_len(bytes))
        .map_err(|e| failed("cannot create the download file", e))?;
    std::fs::write(dir.join(READY_FILE), "ok").map_err(|e| failed("cannot write", e))?;
    for (path, mode) in [
        (dir.to_path_buf(), 0o755),
        (big, 0o644),
        (dir.join(READY_FILE), 0o644),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| failed("cannot set permissions", e))?;
    }
    Ok(())
}

/// Three distinct free loopback ports: all bound at once (so they differ),
/// then let go for nginx and HAProxy to take.
fn free_ports() -> Result<[u16; 3], String> {
    let bind = || TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"));
    let listeners = [bind()?, bind()?, bind()?];
    let mut ports = [0; 3];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr().map_err(|e| e.to_string())?.port();
    }
    Ok(ports)
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A child process that is stopped and reaped when dropped, on every way
/// out of [`compare_proxies`].
struct Service {
    name: &'static str,
    child: Child,
    /// Asked first, when the process needs a graceful stop.
    stop: Option<Command>,
    /// Where it writes what went wrong, shown when it does not start.
    logs: Vec<PathBuf>,
}

impl Service {
    /// Spawns `command` with its stdout and stderr in `dir/<name>.out`.
    fn start(
        name: &'static str,
        mut command: Command,
        stop: Option<Command>,
        dir: &Path,
        mut logs: Vec<PathBuf>,
    ) -> Result<Service, String> {
        let out_path = dir.join(format!("{name}.out"));
        let out = File::create(&out_path).map_err(|e| format!("{name}: {e}"))?;
        let err = out.try_clone().map_err(|e| format!("{name}: {e}"))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e} (install it: {INSTALL_HINT})"))?;
        logs.insert(0, out_path);
        Ok(Service {
            name,
            child,
            stop,
            logs,
        })
    }

    /// `Some(why)` if the process has already exited.
    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!("{} exited ({status})", self.name)),
            Ok(None) => None,
            Err(e) => Some(format!("{}: {e}", self.name)),
        }
    }

    /// The last lines of its logs, for an error message.
    fn log_tail(&self) -> String {
        let mut tail = String::new();
        for path in &self.logs {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            for line in &lines[lines.len().saturating_sub(5)..] {
                tail.push_str(&format!("\n  {}: {line}", path.display()));
            }
        }
        tail
    }

    /// Waits up to `limit` for the process to exit by itself.
    fn exits_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(stop) = &mut self.stop {
            let stopped = stop
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if stopped.is_ok() && self.exits_within(Duration::from_secs(5)) {
                return;
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One nginx master with two servers: the file server and a proxy to it.
fn start_nginx(dir: &Path, file_port: u16, proxy_port: u16) -> Result<Service, String> {
    let d = dir.display();
    let config = format!(
        "daemon off;
worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    # Inside the directory, so that it works as root or not.
    client_body_temp_path {d}/client_body_temp;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;
    upstream file_server {{
        server 127.0.0.1:{file_port};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{file_port};
        sendfile on;
        root {d};
    }}
    server {{
        listen 127.0.0.1:{proxy_port};
        location / {{
            proxy_pass http://file_server;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }}
    }}
}}
"
    );
    let config_path = dir.join("nginx.conf");
    std::fs::write(&config_path, config).map_err(|e| format!("nginx.conf: {e}"))?;
    // `-e`: the error log before the config is read, else nginx tries the
    // compiled-in one under /var/log.
    let nginx = || {
        let mut command = Command::new("nginx");
        command
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&config_path)
            .arg("-e")
            .arg(dir.join("error.log"));
        command
    };
    // A graceful stop: a killed master would leave its workers running.
    let mut stop = nginx();
    stop.args(["-s", "stop"]);
    Service::start(
        "nginx",
        nginx(),
        Some(stop),
        dir,
        vec![dir.join("error.log")],
    )
}

fn start_haproxy(dir: &Path, file_port: u16, port: u16) -> Result<Service, String> {
    let config = format!(
        "global
    nbthread 2
    maxconn 1000

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend proxy
    bind 127.0.0.1:{port}
    default_backend file_server

backend file_server
    server s1 127.0.0.1:{file_port}
"
    );
    let config_path = dir.join("haproxy.cfg");
    std::fs::write(&config_path, config).map_err(|e| format!("haproxy.cfg: {e}"))?;
    let mut command = Command::new("haproxy");
    command.arg("-f").arg(&config_path);
    // Multi-threaded, one process, in the foreground: a kill is a clean stop.
    Service::start("haproxy", command, None, dir, Vec::new())
}

/// The relay as the default mode starts it, with `--nodes 0 --backend
/// FILE_SERVER --health-path none`.
fn start_relay_in_front_of(
    file_server: SocketAddr,
) -> Result<bookrelay::relay::RelayServer, String> {
    let config = RelayConfig {
        listen: "127.0.0.1:0".into(),
        nodes: 0,
        backends: vec![file_server.to_string()],
        health_path: None,
        ..RelayConfig::default()
    };
    launch::start_relay(&config).map_err(|why| format!("relay: {why}"))
}

/// Retries `GET /ready.txt` until it answers 200, the process exits, or
/// [`START_TIMEOUT`] passes.
fn wait_until_ready(
    name: &str,
    addr: SocketAddr,
    mut service: Option<&mut Service>,
) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let last_error = match ready_check(addr) {
            Ok(()) => return Ok(()),
            Err(why) => why,
        };
        if let Some(service) = service.as_deref_mut() {
            if let Some(why) = service.exited() {
                return Err(format!(
                    "{why} before {name} answered{}",
                    service.log_tail()
                ));
            }
        }
        if Instant::now() >= deadline {
            let logs = service.map(|s| s.log_tail()).unwrap_or_default();
            return Err(format!(
                "{name} on {addr} did not answer within {} s ({last_error}){logs}",
                START_TIMEOUT.as_secs()
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn ready_check(addr: SocketAddr) -> Result<(), String> {
    let mut client =
        HttpClient::connect(addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    let answer = client
        .request("GET", &format!("/{READY_FILE}"), &[], b"")
        .map_err(|e| e.to_string())?;
    if answer.status == 200 {
        Ok(())
    } else {
        Err(format!("answered {}", answer.status))
    }
}

/// What [`run_rounds`] measured: MiB/s per proxy (in `proxies` order), and
/// the relay's largest peak-memory growth over one of its measurements.
struct Rounds {
    mib_per_s: Vec<Vec<f64>>,
    relay_growth_mib: f64,
}

/// [`ROUNDS`] rounds of `parallel` downloads at once through each proxy.
/// Round r starts with proxy r, so no proxy always goes first or last.
fn run_rounds(
    proxies: &[Proxy],
    target: &str,
    bytes: u64,
    parallel: usize,
) -> Result<Rounds, String> {
    let mut rounds = Rounds {
        mib_per_s: vec![Vec::new(); proxies.len()],
        relay_growth_mib: 0.0,
    };
    let label = if parallel == 1 {
        "1 download at a time".to_string()
    } else {
        format!("{parallel} downloads at once")
    };
    for round in 0..ROUNDS {
        println!("round {}/{ROUNDS}, {label}", round + 1);
        for k in 0..proxies.len() {
            let index = (round + k) % proxies.len();
            let proxy = &proxies[index];
            let (mib_per_s, growth) = measure_one(proxy, target, bytes, parallel)?;
            rounds.mib_per_s[index].push(mib_per_s);
            match growth {
                Some(growth) => {
                    rounds.relay_growth_mib = rounds.relay_growth_mib.max(growth);
                    println!(
                        "  {:<8} {mib_per_s:>7.0} MiB/s   peak RSS +{growth:.1} MiB",
                        proxy.name
                    );
                }
                None => println!("  {:<8} {mib_per_s:>7.0} MiB/s", proxy.name),
            }
        }
    }
    Ok(rounds)
}

/// One measurement through `proxy`; for the in-process relay also how much
/// this process's peak resident memory grew over it, in MiB.
fn measure_one(
    proxy: &Proxy,
    target: &str,
    bytes: u64,
    parallel: usize,
) -> Result<(f64, Option<f64>), String> {
    let rss_before = if proxy.in_process {
        reset_peak_rss();
        status_kib("VmRSS:")
    } else {
        None
    };
    let (mib_per_s, _) = measure(proxy.addr, target, bytes, parallel)
        .map_err(|why| format!("download through {}: {why}", proxy.name))?;
    let growth = rss_before.map(|before| {
        let peak = status_kib("VmHWM:").unwrap_or(before);
        peak.saturating_sub(before) as f64 / 1024.0
    });
    Ok((mib_per_s, growth))
}

/// `VmHWM` is the peak since the process started; writing 5 to
/// `clear_refs` (Linux 4.0 and later) sets it back to the current RSS, so
/// that the peak read after a relay download is that download's. If this
/// fails the figure can only come out too high, never too low.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    }
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "pass"
    } else {
        "FAIL"
    }
}

fn print_summary(proxies: &[Proxy], single: &Rounds, parallel: &Rounds, k: usize) {
    let medians =
        |rounds: &Rounds| -> Vec<f64> { rounds.mib_per_s.iter().map(|v| median(v)).collect() };
    let (single_medians, parallel_medians) = (medians(single), medians(parallel));
    let at_once = format!("{k} at once");
    println!("\nsummary: median MiB/s of {ROUNDS} rounds");
    println!("{:<24} {:>12} {:>12}", "", "1 download", at_once);
    for (i, proxy) in proxies.iter().enumerate() {
        println!(
            "{:<24} {:>12.0} {:>12.0}",
            proxy.name, single_medians[i], parallel_medians[i]
        );
    }
    let relay = proxies.iter().position(|p| p.in_process).unwrap_or(0);
    let mut haproxy_ratios = (0.0, 0.0);
    for (i, proxy) in proxies.iter().enumerate().filter(|(i, _)| *i != relay) {
        let ratios = (
            single_medians[relay] / single_medians[i],
            parallel_medians[relay] / parallel_medians[i],
        );
        if proxy.name == "HAProxy" {
            haproxy_ratios = ratios;
        }
        println!(
            "{:<24} {:>12.2} {:>12.2}",
            format!("relay / {}", proxy.name),
            ratios.0,
            ratios.1
        );
    }
    println!(
        "{:<24} {:>8.1} MiB {:>8.1} MiB",
        "relay peak RSS growth", single.relay_growth_mib, parallel.relay_growth_mib
    );
    let growth = single.relay_growth_mib.max(parallel.relay_growth_mib);
    println!("\nacceptance");
    let check = |what: String, figure: String, pass: bool| {
        println!("  {what:<40} {figure:>9}   {}", verdict(pass));
    };
    let bound = format!("relay >= {MIN_RATIO_TO_HAPROXY}x HAProxy");
    check(
        format!("1 download: {bound}"),
        format!("{:.2}", haproxy_ratios.0),
        haproxy_ratios.0 >= MIN_RATIO_TO_HAPROXY,
    );
    check(
        format!("{at_once}: {bound}"),
        format!("{:.2}", haproxy_ratios.1),
        haproxy_ratios.1 >= MIN_RATIO_TO_HAPROXY,
    );
    check(
        format!("relay peak RSS growth <= {MAX_RSS_GROWTH_MIB} MiB"),
        format!("{growth:.1} MiB"),
        growth <= MAX_RSS_GROWTH_MIB,
    );
}
