//! The command line of `many_clients`: the workload, the lab's scenario (slow nodes, weights,
//! hot keys) and the scheduled actions (kill, revive, fail, heal), each checked with a sentence
//! that says what was wrong.

use bookrelay::balancer::NAMES;
use std::time::Duration;

pub const HELP: &str = "\
many_clients: many concurrent clients through the relay, then a report

Usage:
  cargo run --release --example many_clients -- [OPTIONS]

Workload:
  --clients N          concurrent clients, each on its own keep-alive connection [default: 16]
  --requests M         requests per client [default: 2000]
  --duration SECS      run for this long instead of a fixed number of requests
  --read-ratio R       share of requests that are reads (GET), 0 to 1 [default: 0.9]
  --write-ratio R      share that are writes (PATCH); the same as --read-ratio 1-R
  --hot-keys K         booking ids the clients read and write [default: 200]
  --zipf S             skew of key popularity: 0 uniform, 1 classic Zipf, 1.1 a few very hot ids [default: 0]
  --seed N             seed of the clients' random choices [default: 1]

Where:
  --target ADDR        drive a running relay (e.g. 127.0.0.1:8080) instead of starting one

The in-process relay (without --target):
  --balancer NAME      its balancer [default: round-robin]
  --nodes N            its node threads [default: 3]
  --node-delay MS,...  extra latency per node, in node order (e.g. 0,0,20: the third node slow)
  --weights W,...      node weights, in node order (e.g. 2,1,1)
  --cache-capacity N   bookings each node's cache holds [default: the relay's, 1000]
  --slow-start SECS    ramp a node that comes back over this window [default: 0, off]
  --ejection-time MS   how long a node answering 5xx in a row is left out [default: the relay's, 30000]

Lab actions (also against --target; NODE is a name or a 1-based index; default node 1):
  --kill-at SECS[:NODE]    stop a node thread at SECS into the run
  --revive-at SECS[:NODE]  start it again (default: the node last killed)
  --fail-at SECS[:NODE]    make a node answer 500 to every request
  --heal-at SECS[:NODE]    make it answer normally again (default: the node last failed)

Output:
  --compare            run once per balancer, each on a fresh in-process relay, and compare;
                       unless given, the scenario is one node 20 ms slow (--node-delay 0,0,20),
                       hot keys (--zipf 1.1 over 600 ids, caches of 200), --weights 2,1,1
                       and 4 s per balancer
  --balancers LIST     with --compare: only these balancers, comma-separated [default: all]
  --svg PATH           draw the results (one run, or the comparison) as an SVG chart
  --timeline PATH      draw requests per second per node over time, events marked, as SVG
  -h, --help           this text

The report lists, per node, requests and cache hits (from the X-Node and X-Cache headers),
latency percentiles and errors, the relay's events during the run (kill, down, up, revive,
ejections ...) and the retries the relay made that the clients never saw.
";

/// What a lab action does to a node, as the relay's simulator controls name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    Kill,
    Revive,
    Fail,
    Heal,
}

impl ActionKind {
    /// The last path segment of `POST /_relay/nodes/{name}/…`.
    pub fn verb(self) -> &'static str {
        match self {
            ActionKind::Kill => "kill",
            ActionKind::Revive => "revive",
            ActionKind::Fail => "fail",
            ActionKind::Heal => "heal",
        }
    }
}

/// Which node an action is for, as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeRef {
    /// `--kill-at 3` or `--revive-at 8`: node 1, or the node the matching action last touched.
    Default,
    /// `--kill-at 3:2`: the second node in the relay's status.
    Index(usize),
    /// `--kill-at 3:brave-owl`.
    Name(String),
}

/// One scheduled action.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    pub at: Duration,
    pub kind: ActionKind,
    pub node: NodeRef,
}

/// The workload, the scenario and where to send it.
#[derive(Debug, Clone)]
pub struct Options {
    pub clients: usize,
    pub requests: usize,
    pub duration: Option<Duration>,
    pub target: Option<String>,
    pub balancer: String,
    pub nodes: usize,
    pub read_ratio: f64,
    pub hot_keys: usize,
    pub zipf: f64,
    pub seed: u64,
    pub node_delays: Vec<Duration>,
    pub weights: Option<Vec<u32>>,
    pub cache_capacity: Option<usize>,
    pub slow_start: Duration,
    pub ejection_time: Option<Duration>,
    pub actions: Vec<Action>,
    pub compare: bool,
    /// The balancers `--compare` runs, in order.
    pub balancers: Vec<String>,
    pub svg: Option<String>,
    pub timeline: Option<String>,
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
            node_delays: Vec::new(),
            weights: None,
            cache_capacity: None,
            slow_start: Duration::ZERO,
            ejection_time: None,
            actions: Vec::new(),
            compare: false,
            balancers: NAMES.iter().map(|n| n.to_string()).collect(),
            svg: None,
            timeline: None,
        }
    }
}

impl Options {
    /// The extra latency of node `index` (0-based).
    pub fn delay_of(&self, index: usize) -> Duration {
        self.node_delays.get(index).copied().unwrap_or_default()
    }

    /// "16 clients, 90% reads over 200 hot ids (zipf 0)" and the scenario's other settings.
    pub fn describe_workload(&self) -> String {
        let mut text = format!(
            "{} clients, {:.0}% reads over {} hot ids (zipf {})",
            self.clients,
            self.read_ratio * 100.0,
            self.hot_keys,
            self.zipf
        );
        if self.target.is_none() {
            text.push_str(&format!(", {} nodes", self.nodes));
            if self.node_delays.iter().any(|d| !d.is_zero()) {
                let delays: Vec<String> = self
                    .node_delays
                    .iter()
                    .map(|d| d.as_millis().to_string())
                    .collect();
                text.push_str(&format!(", node delays {} ms", delays.join(",")));
            }
            if let Some(weights) = &self.weights {
                let weights: Vec<String> = weights.iter().map(u32::to_string).collect();
                text.push_str(&format!(", weights {}", weights.join(",")));
            }
            if let Some(capacity) = self.cache_capacity {
                text.push_str(&format!(", caches of {capacity}"));
            }
        }
        text
    }
}

/// Which options the user gave, so `--compare` fills in only the others.
#[derive(Default)]
struct Given {
    requests_or_duration: bool,
    node_delays: bool,
    weights: bool,
    zipf: bool,
    hot_keys: bool,
    cache_capacity: bool,
}

/// The options of `args`; `Ok(None)` for `--help`.
pub fn parse(args: &[String]) -> Result<Option<Options>, String> {
    let mut options = Options::default();
    let mut given = Given::default();
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
        match name {
            "--clients" => options.clients = number(name, &value()?)?,
            "--requests" => {
                options.requests = number(name, &value()?)?;
                given.requests_or_duration = true;
            }
            "--duration" => {
                options.duration = Some(seconds(name, &value()?)?);
                given.requests_or_duration = true;
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
            "--nodes" => options.nodes = number(name, &value()?)?,
            "--read-ratio" => options.read_ratio = ratio(name, &value()?)?,
            "--write-ratio" => options.read_ratio = 1.0 - ratio(name, &value()?)?,
            "--hot-keys" => {
                options.hot_keys = number(name, &value()?)?;
                given.hot_keys = true;
            }
            "--zipf" => {
                options.zipf = number(name, &value()?)?;
                given.zipf = true;
            }
            "--seed" => options.seed = number(name, &value()?)?,
            "--node-delay" => {
                options.node_delays = list(name, &value()?)?
                    .into_iter()
                    .map(Duration::from_millis)
                    .collect();
                given.node_delays = true;
            }
            "--weights" => {
                options.weights = Some(list(name, &value()?)?);
                given.weights = true;
            }
            "--cache-capacity" => {
                options.cache_capacity = Some(number(name, &value()?)?);
                given.cache_capacity = true;
            }
            "--slow-start" => options.slow_start = seconds(name, &value()?)?,
            "--ejection-time" => {
                let ms: u64 = number(name, &value()?)?;
                if ms == 0 {
                    return Err("--ejection-time must be at least 1 millisecond".into());
                }
                options.ejection_time = Some(Duration::from_millis(ms));
            }
            "--kill-at" => options
                .actions
                .push(action(name, &value()?, ActionKind::Kill)?),
            "--revive-at" => options
                .actions
                .push(action(name, &value()?, ActionKind::Revive)?),
            "--fail-at" => options
                .actions
                .push(action(name, &value()?, ActionKind::Fail)?),
            "--heal-at" => options
                .actions
                .push(action(name, &value()?, ActionKind::Heal)?),
            "--balancers" => {
                let list = value()?;
                options.balancers = list.split(',').map(|n| n.trim().to_string()).collect();
                if let Some(bad) = options
                    .balancers
                    .iter()
                    .find(|n| !NAMES.contains(&n.as_str()))
                {
                    return Err(format!(
                        "--balancers: '{bad}' is not a balancer; they are {}",
                        NAMES.join(", ")
                    ));
                }
            }
            "--svg" => options.svg = Some(value()?),
            "--timeline" => options.timeline = Some(value()?),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if options.compare {
        apply_compare_scenario(&mut options, &given);
    }
    check(&options)?;
    options.actions.sort_by_key(|a| a.at);
    Ok(Some(options))
}

/// The default `--compare` scenario: a slow node and hot keys, where the strategies differ.
fn apply_compare_scenario(options: &mut Options, given: &Given) {
    if !given.node_delays {
        options.node_delays = (0..options.nodes)
            .map(|i| Duration::from_millis(if i + 1 == options.nodes { 20 } else { 0 }))
            .collect();
    }
    if !given.weights {
        options.weights = Some(
            (0..options.nodes)
                .map(|i| if i == 0 { 2 } else { 1 })
                .collect(),
        );
    }
    if !given.zipf {
        options.zipf = 1.1;
    }
    if !given.hot_keys {
        options.hot_keys = 600;
    }
    if !given.cache_capacity {
        options.cache_capacity = Some(200);
    }
    if !given.requests_or_duration {
        options.duration = Some(Duration::from_secs(4));
    }
}

fn check(options: &Options) -> Result<(), String> {
    if options.clients == 0 || options.hot_keys == 0 {
        return Err("--clients and --hot-keys must be at least 1".into());
    }
    if options.zipf < 0.0 || !options.zipf.is_finite() {
        return Err(format!("--zipf must be 0 or more, got {}", options.zipf));
    }
    if options.compare && options.target.is_some() {
        return Err("--compare starts its own relay per balancer; leave out --target".into());
    }
    if options.target.is_some() {
        let in_process_only = [
            ("--node-delay", !options.node_delays.is_empty()),
            ("--weights", options.weights.is_some()),
            ("--cache-capacity", options.cache_capacity.is_some()),
            ("--slow-start", !options.slow_start.is_zero()),
            ("--ejection-time", options.ejection_time.is_some()),
        ];
        if let Some((flag, _)) = in_process_only.iter().find(|(_, set)| *set) {
            return Err(format!(
                "{flag} sets up the in-process relay; with --target, start the relay with it instead"
            ));
        }
    } else if options.nodes == 0 {
        return Err("--nodes must be at least 1 for the in-process relay".into());
    }
    for (flag, len) in [
        ("--node-delay", options.node_delays.len()),
        ("--weights", options.weights.as_ref().map_or(0, Vec::len)),
    ] {
        if len > 0 && len != options.nodes {
            return Err(format!(
                "{flag} needs one value per node: {len} given for {} nodes",
                options.nodes
            ));
        }
    }
    if let Some(weights) = &options.weights {
        if weights.iter().all(|&w| w == 0) {
            return Err("--weights needs at least one weight above 0".into());
        }
    }
    if options.cache_capacity == Some(0) {
        return Err("--cache-capacity must be at least 1".into());
    }
    let run_length = options.duration;
    for action in &options.actions {
        if let Some(length) = run_length {
            if action.at >= length {
                return Err(format!(
                    "--{}-at {:.1} is not within the run's --duration {:.1}",
                    action.kind.verb(),
                    action.at.as_secs_f64(),
                    length.as_secs_f64()
                ));
            }
        }
        if let NodeRef::Index(i) = action.node {
            if options.target.is_none() && i > options.nodes {
                return Err(format!(
                    "--{}-at names node {i}, but the relay has {} nodes",
                    action.kind.verb(),
                    options.nodes
                ));
            }
        }
    }
    if !options.actions.is_empty() && options.compare {
        return Err("lab actions (--kill-at …) are for one run; leave out --compare".into());
    }
    Ok(())
}

fn number<T: std::str::FromStr>(name: &str, text: &str) -> Result<T, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{name} needs a number, got '{text}'"))
}

fn seconds(name: &str, text: &str) -> Result<Duration, String> {
    let value: f64 = number(name, text)?;
    Duration::try_from_secs_f64(value)
        .map_err(|_| format!("{name} needs seconds, 0 or more, got '{text}'"))
}

fn ratio(name: &str, text: &str) -> Result<f64, String> {
    let value: f64 = number(name, text)?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{name} must be from 0 to 1, got {text}"))
    }
}

fn list<T: std::str::FromStr>(name: &str, text: &str) -> Result<Vec<T>, String> {
    text.split(',')
        .map(|item| number(name, item))
        .collect::<Result<Vec<T>, String>>()
        .map_err(|_| format!("{name} needs comma-separated numbers, got '{text}'"))
}

/// `SECS` or `SECS:NODE`.
fn action(name: &str, text: &str, kind: ActionKind) -> Result<Action, String> {
    let (at, node) = match text.split_once(':') {
        Some((at, node)) if !node.trim().is_empty() => {
            let node = node.trim();
            let node = match node.parse::<usize>() {
                Ok(0) => return Err(format!("{name}: nodes count from 1, got '{text}'")),
                Ok(index) => NodeRef::Index(index),
                Err(_) => NodeRef::Name(node.to_string()),
            };
            (at, node)
        }
        Some(_) => return Err(format!("{name} needs SECS or SECS:NODE, got '{text}'")),
        None => (text, NodeRef::Default),
    };
    Ok(Action {
        at: seconds(name, at)?,
        kind,
        node,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    fn parsed(text: &str) -> Options {
        parse(&args(text)).expect("valid").expect("not help")
    }

    fn refused(text: &str) -> String {
        parse(&args(text)).expect_err("refused")
    }

    #[test]
    fn lab_actions_take_seconds_and_an_optional_node() {
        let options = parsed("--duration 12 --revive-at 8 --kill-at 3:2 --fail-at 1:brave-owl");
        let kinds: Vec<_> = options.actions.iter().map(|a| (a.at, a.kind)).collect();
        assert_eq!(
            kinds,
            [
                (Duration::from_secs(1), ActionKind::Fail),
                (Duration::from_secs(3), ActionKind::Kill),
                (Duration::from_secs(8), ActionKind::Revive)
            ]
        );
        assert_eq!(options.actions[0].node, NodeRef::Name("brave-owl".into()));
        assert_eq!(options.actions[1].node, NodeRef::Index(2));
        assert_eq!(options.actions[2].node, NodeRef::Default);
    }

    #[test]
    fn bad_values_are_refused_with_the_reason() {
        assert!(refused("--kill-at 3:0").contains("count from 1"));
        assert!(refused("--duration 5 --kill-at 6").contains("not within"));
        assert!(refused("--kill-at 3:4").contains("has 3 nodes"));
        assert!(refused("--node-delay 0,20").contains("one value per node"));
        assert!(refused("--weights 0,0,0").contains("above 0"));
        assert!(refused("--weights 1,x,1").contains("comma-separated"));
        assert!(refused("--write-ratio 1.5").contains("from 0 to 1"));
        assert!(refused("--target 127.0.0.1:1 --node-delay 0,0,5").contains("in-process"));
        assert!(refused("--compare --kill-at 1").contains("one run"));
        assert!(refused("--balancer fastest").contains("must be one of"));
        assert!(refused("--slow-start -1").contains("seconds"));
        assert!(refused("--compare --balancers p2c,fastest").contains("'fastest' is not"));
    }

    #[test]
    fn write_ratio_is_the_complement_of_read_ratio() {
        assert!((parsed("--write-ratio 0.25").read_ratio - 0.75).abs() < 1e-9);
    }

    #[test]
    fn compare_fills_in_a_scenario_where_strategies_differ_but_keeps_what_was_given() {
        let options = parsed("--compare");
        assert_eq!(options.delay_of(2), Duration::from_millis(20));
        assert_eq!(options.delay_of(0), Duration::ZERO);
        assert_eq!(options.weights, Some(vec![2, 1, 1]));
        assert_eq!(options.zipf, 1.1);
        assert_eq!(options.duration, Some(Duration::from_secs(4)));
        let options = parsed("--compare --zipf 0 --node-delay 0,0,0 --requests 10");
        assert_eq!(options.zipf, 0.0);
        assert_eq!(options.delay_of(2), Duration::ZERO);
        assert_eq!(options.duration, None);
    }
}
