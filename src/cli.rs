//! Command line to configuration: argv in, [`Command`] out, or an [`Error`]
//! that names the option. No sockets, no files, no environment: `main` acts
//! on the result (`--admin-token-file` and [`ADMIN_TOKEN_ENV`] are read by
//! [`crate::launch::resolve_admin_token`]).
//!
//! Both `--option value` and `--option=value` are accepted. Every option has a
//! default, so `bookrelay` alone starts a working system.

use crate::balancer::{BoundedConsistentHash, MAX_WEIGHT, NAMES, STRATEGIES};
use crate::relay::control::MAX_NODES;
use std::fmt::{self, Write as _};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// Largest `--max-conns-per-node`: beyond this a cap no longer bounds anything a machine
/// running the relay could hold.
pub const MAX_CONNS_PER_NODE: u64 = 100_000;

/// The environment variable holding the admin token when neither
/// `--admin-token-file` nor `--admin-token` is given.
pub const ADMIN_TOKEN_ENV: &str = "BOOKRELAY_ADMIN_TOKEN";

/// What the user asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Boxed: the relay's options are many times the size of the others.
    Relay(Box<RelayConfig>),
    Node(NodeArgs),
    /// Print this text and exit 0.
    Help(&'static str),
    Version,
}

/// Options of the default command: a relay with spawned nodes and/or backends.
///
/// The relay's own part goes to it as a [`crate::relay::Settings`]
/// ([`crate::launch::relay_settings`]); a field of the same name means what
/// it says there. The rest (`listen`, the nodes, the database, the token
/// file) is launch's to act on.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayConfig {
    pub listen: String,
    pub nodes: usize,
    pub backends: Vec<String>,
    pub balancer: String,
    pub weights: Option<Vec<u32>>,
    /// `bounded-consistent-hash`: no node takes more than this × the average load (> 1).
    pub hash_balance_factor: f64,
    pub slow_start: Duration,
    pub db: PathBuf,
    pub seed: usize,
    pub cache_capacity: usize,
    pub cache_ttl: Option<Duration>,
    pub node_delays: Vec<Duration>,
    pub health_interval: Duration,
    pub health_path: Option<String>,
    pub ejection_time: Duration,
    pub max_conns_per_node: Option<usize>,
    pub queue_timeout: Duration,
    pub max_body_bytes: u64,
    pub read_timeout: Duration,
    pub access_log: bool,
    pub admin_token: Option<String>,
    /// `--admin-token-file`, not yet read: [`crate::launch::resolve_admin_token`]
    /// reads it into `admin_token` (and [`crate::launch::start_relay`] does if
    /// nobody did).
    pub admin_token_file: Option<PathBuf>,
    pub max_connections: Option<usize>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            listen: "127.0.0.1:8080".into(),
            nodes: 3,
            backends: Vec::new(),
            balancer: "round-robin".into(),
            weights: None,
            hash_balance_factor: BoundedConsistentHash::DEFAULT_FACTOR,
            slow_start: Duration::ZERO,
            db: PathBuf::from("bookings.db"),
            seed: 200,
            cache_capacity: 1024,
            cache_ttl: Some(Duration::from_secs(60)),
            node_delays: Vec::new(),
            health_interval: Duration::from_millis(1000),
            health_path: Some("/health".into()),
            ejection_time: crate::relay::outlier::BASE_EJECTION,
            max_conns_per_node: None,
            queue_timeout: crate::relay::queue::QUEUE_TIMEOUT,
            max_body_bytes: crate::http::MAX_BODY_BYTES as u64,
            read_timeout: Duration::from_secs(60),
            access_log: false,
            admin_token: None,
            admin_token_file: None,
            max_connections: None,
        }
    }
}

/// Options of `bookrelay node`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeArgs {
    pub listen: String,
    pub db: PathBuf,
    /// `None`: a generated friendly name.
    pub name: Option<String>,
    pub cache_capacity: usize,
    pub cache_ttl: Option<Duration>,
    pub delay: Duration,
    pub seed: usize,
}

impl Default for NodeArgs {
    fn default() -> Self {
        NodeArgs {
            listen: "127.0.0.1:9001".into(),
            db: PathBuf::from("bookings.db"),
            name: None,
            cache_capacity: 1024,
            cache_ttl: Some(Duration::from_secs(60)),
            delay: Duration::ZERO,
            seed: 0,
        }
    }
}

/// A bad command line: one sentence naming the option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// `bookrelay --help`, with one line per strategy of [`STRATEGIES`].
pub fn relay_help() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let mut list = String::new();
        for strategy in STRATEGIES {
            let _ = writeln!(list, "{:29}{:<25}{}", "", strategy.name, strategy.help);
        }
        RELAY_HELP_TEMPLATE.replace("{balancers}\n", &list)
    })
}

/// The text of [`relay_help`], its `{balancers}` line standing for the strategies.
const RELAY_HELP_TEMPLATE: &str = "\
bookrelay: an HTTP/1.1 load balancer in front of booking nodes

Usage:
  bookrelay [OPTIONS]          relay + spawned node threads (the default setup)
  bookrelay node [OPTIONS]     one node as its own process (see 'bookrelay node --help')
  bookrelay --help | --version

Options:
  --listen ADDR            where clients connect [default: 127.0.0.1:8080]; ':0' picks a free port
  --nodes N                node threads to spawn [default: 3]
  --backend ADDR           an external HTTP server to balance over (repeatable)
  --balancer NAME          how the relay picks a node [default: round-robin]:
{balancers}
  --weights W,W,...        one weight (0-1000) per node/backend, in order [default: all 1]
  --hash-balance-factor F  bounded-consistent-hash: no node takes more than F times the
                           average load; F above 1 [default: 1.25]
  --slow-start SECS        a node that comes up (revived, added, healthy again) ramps from
                           10% to its full share over SECS seconds; 0 = off [default: 0]
  --db PATH                SQLite file the spawned nodes share [default: bookings.db]
  --seed N                 sample bookings to insert into an empty table [default: 200]
  --cache-capacity N       LRU entries per node [default: 1024]
  --cache-ttl SECS         age limit of a cache entry, 0 = none [default: 60]
  --node-delay MS,MS,...   extra service time per spawned node (simulate slow nodes)
  --health-interval MS     active health check period [default: 1000]
  --health-path PATH       what the check asks with GET; any 2xx or 3xx passes; 'none' = no
                           HTTP checks, only connect failures and resets count [default: /health]
  --ejection-time MS       how long a node whose answers were 5xx 5 times in a row gets no
                           traffic; each later ejection lasts longer [default: 30000]
  --max-conns-per-node N   at most N requests in flight at each node; more wait in line in
                           the relay, first come first served; 0 = no cap [default: 0]
  --queue-timeout MS       longest wait in that line, then 503 [default: 5000]
  --max-body BYTES         largest request body the relay forwards (larger: 413)
                           [default: 1048576]
  --read-timeout SECS      longest silence between two pieces of a backend's response body;
                           then the response is cut [default: 60]
  --access-log             one line per request on stderr
  --admin-token-file PATH  file holding the token that changing /_relay/* calls must send as
                           'Authorization: Bearer TOKEN' (surrounding whitespace trimmed);
                           without a token they are accepted from this machine only, and
                           not from web pages of other sites
  --admin-token TOKEN      the same token given inline (visible to other users in 'ps';
                           prefer the file or BOOKRELAY_ADMIN_TOKEN)
  --max-connections N      concurrent client connections; at the limit the oldest idle one is
                           closed to make room, and if none is idle the newcomer gets 503
                           [default: 4096, or what the open-files limit allows]
  -h, --help               this text
  -V, --version            the version

Environment:
  BOOKRELAY_ADMIN_TOKEN    the admin token, used when neither --admin-token-file nor
                           --admin-token is given
";

pub const NODE_HELP: &str = "\
bookrelay node: one booking node (HTTP API over SQLite with an LRU cache)

Usage:
  bookrelay node [OPTIONS]

Options:
  --listen ADDR            where to serve [default: 127.0.0.1:9001]; ':0' picks a free port
  --db PATH                SQLite file, shared with other nodes [default: bookings.db]
  --name NAME              the node's name in X-Node [default: a generated one]
  --cache-capacity N       LRU entries [default: 1024]
  --cache-ttl SECS         age limit of a cache entry, 0 = none [default: 60]
  --delay MS               extra service time per booking request [default: 0]
  --seed N                 sample bookings to insert into an empty table [default: 0]
  -h, --help               this text
";

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, Error> {
    if args.first().map(String::as_str) == Some("node") {
        return parse_node(&args[1..]);
    }
    let mut config = RelayConfig::default();
    let mut options = Options::new(args);
    while let Some(option) = options.next_option()? {
        match option.as_str() {
            "-h" | "--help" => return Ok(Command::Help(relay_help())),
            "-V" | "--version" => return Ok(Command::Version),
            "--listen" => config.listen = options.address(&option)?,
            "--nodes" => config.nodes = options.number_up_to(&option, MAX_NODES as u64)? as usize,
            "--backend" => config.backends.push(options.address(&option)?),
            "--balancer" => {
                let name = options.value(&option)?;
                if !NAMES.contains(&name.as_str()) {
                    return Err(Error(format!(
                        "--balancer must be one of {}, got '{name}'",
                        NAMES.join(", ")
                    )));
                }
                config.balancer = name;
            }
            "--weights" => {
                let weights = options.list(
                    &option,
                    |text| text.parse::<u32>().ok().filter(|w| *w <= MAX_WEIGHT),
                    &format!("whole numbers from 0 to {MAX_WEIGHT}"),
                )?;
                config.weights = Some(weights);
            }
            "--hash-balance-factor" => {
                let value = options.value(&option)?;
                match value.parse::<f64>() {
                    Ok(factor) if factor.is_finite() && factor > 1.0 => {
                        config.hash_balance_factor = factor;
                    }
                    _ => {
                        return Err(Error(format!(
                            "--hash-balance-factor needs a number above 1 like 1.25, got '{value}'"
                        )))
                    }
                }
            }
            "--slow-start" => config.slow_start = Duration::from_secs(options.number(&option)?),
            "--db" => config.db = PathBuf::from(options.value(&option)?),
            "--seed" => config.seed = options.number(&option)? as usize,
            "--cache-capacity" => config.cache_capacity = options.number(&option)? as usize,
            "--cache-ttl" => config.cache_ttl = ttl(options.number(&option)?),
            "--node-delay" => {
                config.node_delays = options
                    .list(&option, |t| t.parse::<u64>().ok(), "milliseconds")?
                    .into_iter()
                    .map(Duration::from_millis)
                    .collect();
            }
            "--health-interval" => {
                let ms = options.number(&option)?;
                if ms == 0 {
                    return Err(Error(
                        "--health-interval must be at least 1 millisecond".into(),
                    ));
                }
                config.health_interval = Duration::from_millis(ms);
            }
            "--ejection-time" => {
                let ms = options.number(&option)?;
                if ms == 0 {
                    return Err(Error(
                        "--ejection-time must be at least 1 millisecond".into(),
                    ));
                }
                config.ejection_time = Duration::from_millis(ms);
            }
            "--max-conns-per-node" => {
                let n = options.number_up_to(&option, MAX_CONNS_PER_NODE)?;
                config.max_conns_per_node = (n > 0).then_some(n as usize);
            }
            "--queue-timeout" => {
                let ms = options.number(&option)?;
                if ms == 0 {
                    return Err(Error(
                        "--queue-timeout must be at least 1 millisecond".into(),
                    ));
                }
                config.queue_timeout = Duration::from_millis(ms);
            }
            "--health-path" => {
                let path = options.value(&option)?;
                config.health_path = if path == "none" {
                    None
                } else if path.starts_with('/') && path.bytes().all(|b| (0x21..=0x7e).contains(&b))
                {
                    Some(path)
                } else {
                    return Err(Error(format!(
                        "--health-path must be a path like /health (or 'none'), got '{path}'"
                    )));
                };
            }
            "--max-body" => {
                let bytes = options.number(&option)?;
                if bytes == 0 {
                    return Err(Error("--max-body must be at least 1 byte".into()));
                }
                config.max_body_bytes = bytes;
            }
            "--read-timeout" => {
                let seconds = options.number(&option)?;
                if seconds == 0 {
                    return Err(Error("--read-timeout must be at least 1 second".into()));
                }
                config.read_timeout = Duration::from_secs(seconds);
            }
            "--access-log" => config.access_log = true,
            "--max-connections" => {
                let n = options.number(&option)?;
                if n == 0 {
                    return Err(Error("--max-connections must be at least 1".into()));
                }
                config.max_connections = Some(n as usize);
            }
            "--admin-token" => {
                let token = options.value(&option)?;
                if token.is_empty() {
                    return Err(Error("--admin-token must not be empty".into()));
                }
                config.admin_token = Some(token);
            }
            "--admin-token-file" => {
                let path = options.value(&option)?;
                if path.is_empty() {
                    return Err(Error("--admin-token-file needs a file name".into()));
                }
                config.admin_token_file = Some(PathBuf::from(path));
            }
            other => return Err(unknown(other, RELAY_OPTIONS)),
        }
    }
    if config.admin_token.is_some() && config.admin_token_file.is_some() {
        return Err(Error(
            "give the admin token once: --admin-token-file or --admin-token, not both".into(),
        ));
    }
    if config.nodes == 0 && config.backends.is_empty() {
        return Err(Error(
            "--nodes 0 needs at least one --backend: there would be nothing to balance".into(),
        ));
    }
    let total = config.nodes + config.backends.len();
    if total > MAX_NODES {
        return Err(Error(format!(
            "--nodes and --backend name {total} nodes together; the relay runs at most {MAX_NODES}"
        )));
    }
    if let Some(weights) = &config.weights {
        if weights.len() != total {
            return Err(Error(format!(
                "--weights has {} values but there are {total} nodes and backends",
                weights.len()
            )));
        }
    }
    if config.node_delays.len() > config.nodes {
        return Err(Error(format!(
            "--node-delay has {} values but only {} nodes are spawned",
            config.node_delays.len(),
            config.nodes
        )));
    }
    Ok(Command::Relay(Box::new(config)))
}

const RELAY_OPTIONS: &[&str] = &[
    "--listen",
    "--nodes",
    "--backend",
    "--balancer",
    "--weights",
    "--hash-balance-factor",
    "--slow-start",
    "--db",
    "--seed",
    "--cache-capacity",
    "--cache-ttl",
    "--node-delay",
    "--health-interval",
    "--health-path",
    "--ejection-time",
    "--max-conns-per-node",
    "--queue-timeout",
    "--max-body",
    "--read-timeout",
    "--access-log",
    "--admin-token",
    "--admin-token-file",
    "--max-connections",
    "--help",
    "--version",
];

const NODE_OPTIONS: &[&str] = &[
    "--listen",
    "--db",
    "--name",
    "--cache-capacity",
    "--cache-ttl",
    "--delay",
    "--seed",
    "--help",
];

fn parse_node(args: &[String]) -> Result<Command, Error> {
    let mut config = NodeArgs::default();
    let mut options = Options::new(args);
    while let Some(option) = options.next_option()? {
        match option.as_str() {
            "-h" | "--help" => return Ok(Command::Help(NODE_HELP)),
            "--listen" => config.listen = options.address(&option)?,
            "--db" => config.db = PathBuf::from(options.value(&option)?),
            "--name" => {
                let name = options.value(&option)?;
                let valid = !name.is_empty()
                    && name.len() <= 64
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
                if !valid {
                    return Err(Error(format!(
                        "--name must be 1 to 64 letters, digits, '-', '_' or '.', got '{name}'"
                    )));
                }
                config.name = Some(name);
            }
            "--cache-capacity" => config.cache_capacity = options.number(&option)? as usize,
            "--cache-ttl" => config.cache_ttl = ttl(options.number(&option)?),
            "--delay" => config.delay = Duration::from_millis(options.number(&option)?),
            "--seed" => config.seed = options.number(&option)? as usize,
            other => return Err(unknown(other, NODE_OPTIONS)),
        }
    }
    Ok(Command::Node(config))
}

fn ttl(seconds: u64) -> Option<Duration> {
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

fn unknown(option: &str, known: &[&str]) -> Error {
    if !option.starts_with('-') {
        return Error(format!("unexpected argument '{option}'"));
    }
    let suggestion = known
        .iter()
        .min_by_key(|k| edit_distance(option, k))
        .filter(|k| edit_distance(option, k) <= 3);
    match suggestion {
        Some(s) => Error(format!("unknown option {option} (did you mean {s}?)")),
        None => Error(format!("unknown option {option}")),
    }
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(previous + 1).min(row[j] + 1);
        }
    }
    row[b.len()]
}

/// A cursor over argv that understands `--opt value` and `--opt=value`.
struct Options<'a> {
    args: &'a [String],
    position: usize,
    /// The value given with `=`, waiting to be taken by the option's parser.
    inline_value: Option<String>,
}

impl<'a> Options<'a> {
    fn new(args: &'a [String]) -> Options<'a> {
        Options {
            args,
            position: 0,
            inline_value: None,
        }
    }

    fn next_option(&mut self) -> Result<Option<String>, Error> {
        if let Some(value) = self.inline_value.take() {
            return Err(Error(format!("unexpected value '{value}'")));
        }
        let Some(arg) = self.args.get(self.position) else {
            return Ok(None);
        };
        self.position += 1;
        match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => {
                self.inline_value = Some(value.to_string());
                Ok(Some(name.to_string()))
            }
            _ => Ok(Some(arg.clone())),
        }
    }

    fn value(&mut self, option: &str) -> Result<String, Error> {
        if let Some(value) = self.inline_value.take() {
            return Ok(value);
        }
        match self.args.get(self.position) {
            Some(value) if !value.starts_with("--") => {
                self.position += 1;
                Ok(value.clone())
            }
            _ => Err(Error(format!("{option} needs a value"))),
        }
    }

    fn number(&mut self, option: &str) -> Result<u64, Error> {
        let value = self.value(option)?;
        value
            .parse::<u64>()
            .map_err(|_| Error(format!("{option} needs a whole number, got '{value}'")))
    }

    fn number_up_to(&mut self, option: &str, max: u64) -> Result<u64, Error> {
        let value = self.value(option)?;
        match value.parse::<u64>() {
            Ok(n) if n <= max => Ok(n),
            _ => Err(Error(format!(
                "{option} needs a whole number from 0 to {max}, got '{value}'"
            ))),
        }
    }

    fn address(&mut self, option: &str) -> Result<String, Error> {
        let value = self.value(option)?;
        // Host names are resolved when binding or connecting; here only the shape.
        match value.rsplit_once(':') {
            Some((_, port)) if port.parse::<u16>().is_ok() => Ok(value),
            _ => Err(Error(format!(
                "{option} needs HOST:PORT like 127.0.0.1:8080, got '{value}'"
            ))),
        }
    }

    fn list<T>(
        &mut self,
        option: &str,
        item: impl Fn(&str) -> Option<T>,
        what: &str,
    ) -> Result<Vec<T>, Error> {
        let value = self.value(option)?;
        value
            .split(',')
            .map(|part| item(part.trim()))
            .collect::<Option<Vec<T>>>()
            .ok_or_else(|| {
                Error(format!(
                    "{option} needs a comma-separated list of {what}, got '{value}'"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    fn relay(line: &str) -> RelayConfig {
        match parse(&args(line)) {
            Ok(Command::Relay(config)) => *config,
            other => panic!("expected a relay config for '{line}', got {other:?}"),
        }
    }

    fn error(line: &str) -> String {
        match parse(&args(line)) {
            Err(e) => e.0,
            other => panic!("expected an error for '{line}', got {other:?}"),
        }
    }

    #[test]
    fn no_arguments_give_the_documented_defaults() {
        let config = relay("");
        assert_eq!(config, RelayConfig::default());
        assert_eq!(config.listen, "127.0.0.1:8080");
        assert_eq!(config.nodes, 3);
        assert_eq!(config.balancer, "round-robin");
        assert_eq!(config.seed, 200);
        assert_eq!(config.cache_ttl, Some(Duration::from_secs(60)));
        assert_eq!(config.health_path.as_deref(), Some("/health"));
        assert_eq!(config.max_body_bytes, 1_048_576);
        assert_eq!(config.read_timeout, Duration::from_secs(60));
    }

    #[test]
    fn every_relay_option_is_understood() {
        let config = relay(
            "--listen 127.0.0.1:0 --nodes 2 --backend 127.0.0.1:9001 --balancer=weighted \
             --weights 5,1,1 --db /tmp/x.db --seed 10 --cache-capacity 8 --cache-ttl 0 \
             --node-delay 0,20 --health-interval 250 --access-log --admin-token s3cret \
             --max-connections 100 --health-path / --max-body 8388608 --read-timeout 5 \
             --max-conns-per-node 32 --queue-timeout 250",
        );
        assert_eq!(config.max_conns_per_node, Some(32));
        assert_eq!(config.queue_timeout, Duration::from_millis(250));
        assert_eq!(relay("--max-conns-per-node 0").max_conns_per_node, None);
        assert_eq!(config.health_path.as_deref(), Some("/"));
        assert_eq!(config.max_body_bytes, 8_388_608);
        assert_eq!(config.read_timeout, Duration::from_secs(5));
        assert_eq!(relay("--health-path none").health_path, None);
        assert_eq!(config.listen, "127.0.0.1:0");
        assert_eq!(config.nodes, 2);
        assert_eq!(config.backends, ["127.0.0.1:9001"]);
        assert_eq!(config.balancer, "weighted");
        assert_eq!(config.weights, Some(vec![5, 1, 1]));
        assert_eq!(config.db, PathBuf::from("/tmp/x.db"));
        assert_eq!(config.seed, 10);
        assert_eq!(config.cache_capacity, 8);
        assert_eq!(config.cache_ttl, None);
        assert_eq!(
            config.node_delays,
            [Duration::ZERO, Duration::from_millis(20)]
        );
        assert_eq!(config.health_interval, Duration::from_millis(250));
        assert!(config.access_log);
        assert_eq!(config.admin_token.as_deref(), Some("s3cret"));
        assert_eq!(config.max_connections, Some(100));
    }

    #[test]
    fn bad_values_name_the_option() {
        assert_eq!(
            error("--nodes abc"),
            "--nodes needs a whole number from 0 to 64, got 'abc'"
        );
        assert!(error("--balancer bogus").starts_with("--balancer must be one of round-robin"));
        assert_eq!(error("--nodes"), "--nodes needs a value");
        assert!(error("--listen nowhere").starts_with("--listen needs HOST:PORT"));
        assert!(error("--weights 1,x,1").starts_with("--weights needs a comma-separated list"));
        assert!(error("--weights 1,2").contains("there are 3 nodes"));
        assert!(error("--nodes 0").contains("--backend"));
        assert!(error("--node-delay 1,2,3,4").contains("only 3 nodes"));
        assert_eq!(
            error("--lisen :1"),
            "unknown option --lisen (did you mean --listen?)"
        );
        assert_eq!(error("stray"), "unexpected argument 'stray'");
        assert!(error("--health-path health").starts_with("--health-path must be a path"));
        assert_eq!(error("--max-body 0"), "--max-body must be at least 1 byte");
        assert!(error("--read-timeout x").starts_with("--read-timeout needs"));
        assert_eq!(error("--access-log=yes"), "unexpected value 'yes'");
        assert!(error("--nodes 64 --backend 127.0.0.1:1").contains("at most 64"));
    }

    #[test]
    fn the_new_balancers_and_their_options_parse() {
        for name in ["bounded-consistent-hash", "peak-ewma"] {
            assert_eq!(relay(&format!("--balancer {name}")).balancer, name);
            assert!(relay_help().contains(name), "{name} in --help");
        }
        assert_eq!(relay("").hash_balance_factor, 1.25);
        assert_eq!(relay("").slow_start, Duration::ZERO);
        let config = relay("--hash-balance-factor 1.5 --slow-start=30");
        assert_eq!(config.hash_balance_factor, 1.5);
        assert_eq!(config.slow_start, Duration::from_secs(30));
        assert_eq!(relay("--hash-balance-factor=2").hash_balance_factor, 2.0);
        assert!(relay_help().contains("--hash-balance-factor F"));
        assert!(relay_help().contains("--slow-start SECS"));
    }

    #[test]
    fn bad_factors_and_windows_name_the_option() {
        for bad in ["1", "1.0", "0.9", "-2", "x", "NaN", "inf", ""] {
            assert_eq!(
                error(&format!("--hash-balance-factor={bad}")),
                format!("--hash-balance-factor needs a number above 1 like 1.25, got '{bad}'"),
                "{bad}"
            );
        }
        assert_eq!(
            error("--hash-balance-factor"),
            "--hash-balance-factor needs a value"
        );
        assert_eq!(
            error("--slow-start soon"),
            "--slow-start needs a whole number, got 'soon'"
        );
        assert_eq!(
            error("--slow-start -1"),
            "--slow-start needs a whole number, got '-1'"
        );
        assert_eq!(
            error("--slow-strat 5"),
            "unknown option --slow-strat (did you mean --slow-start?)"
        );
    }

    #[test]
    fn the_admin_token_file_is_named_not_read() {
        let config = relay("--admin-token-file /nonexistent/token");
        assert_eq!(
            config.admin_token_file,
            Some(PathBuf::from("/nonexistent/token"))
        );
        assert_eq!(config.admin_token, None);
        assert_eq!(
            error("--admin-token-file="),
            "--admin-token-file needs a file name"
        );
        assert!(error("--admin-token-file t --admin-token x").contains("not both"));
        assert!(relay_help().contains("--admin-token-file PATH"));
        assert!(relay_help().contains(ADMIN_TOKEN_ENV));
    }

    #[test]
    fn a_pure_load_balancer_needs_no_nodes() {
        let config = relay("--nodes 0 --backend 127.0.0.1:1 --backend localhost:2");
        assert_eq!(config.nodes, 0);
        assert_eq!(config.backends.len(), 2);
    }

    #[test]
    fn node_options_are_understood() {
        let parsed = parse(&args(
            "node --listen 127.0.0.1:0 --db /tmp/n.db --name alpha --cache-capacity 5 \
             --cache-ttl 9 --delay 20 --seed 50",
        ));
        let Ok(Command::Node(node)) = parsed else {
            panic!("expected a node config, got {parsed:?}");
        };
        assert_eq!(node.listen, "127.0.0.1:0");
        assert_eq!(node.name.as_deref(), Some("alpha"));
        assert_eq!(node.cache_capacity, 5);
        assert_eq!(node.cache_ttl, Some(Duration::from_secs(9)));
        assert_eq!(node.delay, Duration::from_millis(20));
        assert_eq!(node.seed, 50);
        assert_eq!(parse(&args("node")), Ok(Command::Node(NodeArgs::default())));
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(&args("--help")), Ok(Command::Help(relay_help())));
        assert_eq!(parse(&args("node -h")), Ok(Command::Help(NODE_HELP)));
        assert_eq!(parse(&args("--version")), Ok(Command::Version));
        assert!(
            matches!(parse(&args("node --balancer x")), Err(Error(e)) if e.contains("unknown option --balancer"))
        );
    }
}
