//! The relay's own endpoints under `/_relay/` (SPEC §5); never forwarded.
//!
//! Reading (`GET`): `/_relay/` is the live dashboard ([`crate::dashboard`]),
//! `status` is JSON for scripts and the dashboard, `metrics`
//! the same figures in Prometheus text format, `balancer` the strategy and
//! weights, `events?after=SEQ` the recent history ([`super::events`]). Changing (`POST`, `PUT`, `DELETE`): the simulator's controls in
//! [`super::control`], refused with 403 unless the caller presents
//! `Authorization: Bearer TOKEN` (any case of `Bearer`) with the relay's admin
//! token, or, when no token is set, calls from this machine (a loopback
//! peer) that no web page of another origin could have sent: `Host` must be
//! a loopback name or the listen address (DNS rebinding), an `Origin` must be
//! the relay's own, `Sec-Fetch-Site` must not be `cross-site` or `same-site`,
//! and a body must come as `Content-Type: application/json` (which a page of
//! another origin cannot send without a CORS preflight the relay never
//! grants). A call without `Origin` (curl, scripts) passes.

use super::backend::{Topology, LATENCY_BUCKETS, RESPONSE_CLASSES};
use super::control::{NodeInfo, Refusal};
use super::events::utc_timestamp;
use super::events::Event;
use super::queue::QueueStats;
use super::state::Relay;
use crate::balancer::MAX_WEIGHT;
use crate::http::server::ServerCounters;
use crate::http::{Request, Response};
use crate::json::{self, Value};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Answers a request whose path starts with `/_relay`.
pub fn handle(relay: &Relay, request: &Request, peer: SocketAddr) -> Response {
    let method = request.method.as_str();
    let path = request.path();
    let read = matches!(method, "GET" | "HEAD");
    if !read {
        if let Err(refusal) = authorize(relay, request, peer) {
            return refusal;
        }
    }
    let rest = path.strip_prefix("/_relay").unwrap_or("");
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match (method, segments.as_slice()) {
        ("GET" | "HEAD", []) if path.ends_with('/') => Response::new(200)
            .with_header("Content-Type", "text/html; charset=utf-8")
            .with_header("Cache-Control", "no-store")
            .with_body(crate::dashboard::page().as_bytes().to_vec()),
        // The dashboard's relative links need the trailing slash.
        ("GET" | "HEAD", []) => Response::new(301).with_header("Location", "/_relay/"),
        ("GET" | "HEAD", ["status"]) => Response::json(
            200,
            status_json(&relay.topology(), relay.queue().stats()),
        ),
        ("GET" | "HEAD", ["metrics"]) => {
            let mut text = metrics_text(&relay.topology());
            text.push_str(&connection_metrics(relay.counters()));
            text.push_str(&queue_metrics(relay.queue().stats()));
            Response::new(200)
                .with_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                .with_body(text.into_bytes())
        }
        ("GET" | "HEAD", ["balancer"]) => Response::json(200, balancer_json(&relay.topology())),
        ("GET" | "HEAD", ["events"]) => match after_param(request.query()) {
            Ok(after) => Response::json(200, events_json(&relay.events().after(after)))
                .with_header("Cache-Control", "no-store"),
            Err(sentence) => Response::error(400, &sentence),
        },
        ("PUT", ["balancer"]) => switch_balancer(relay, &request.body),
        ("POST", ["nodes"]) => add_node(relay, &request.body),
        ("DELETE", ["nodes", name]) => match relay.remove_node(name) {
            Ok(()) => Response::new(204),
            Err(refusal) => refused(refusal),
        },
        ("POST", ["nodes", name, "kill"]) => node_answer(relay.kill_node(name), "killed"),
        ("POST", ["nodes", name, "revive"]) => node_answer(relay.revive_node(name), "running"),
        ("POST", ["nodes", name, "fail"]) => {
            node_answer(relay.set_node_failing(name, true), "failing")
        }
        ("POST", ["nodes", name, "heal"]) => {
            node_answer(relay.set_node_failing(name, false), "running")
        }
        (_, ["status"] | ["metrics"] | ["events"]) => Response::method_not_allowed("GET, HEAD"),
        (_, ["balancer"]) => Response::method_not_allowed("GET, HEAD, PUT"),
        (_, ["nodes"]) => Response::method_not_allowed("POST"),
        (_, ["nodes", _]) => Response::method_not_allowed("DELETE"),
        (_, ["nodes", _, "kill" | "revive" | "fail" | "heal"]) => Response::method_not_allowed("POST"),
        _ => Response::error(
            404,
            &format!(
                "no relay endpoint '{}'; try /_relay/status, /_relay/metrics, /_relay/events or /_relay/balancer",
                path.chars().take(80).collect::<String>()
            ),
        ),
    }
}

/// The admin rule of SPEC §1 (`--admin-token`); see the module docs.
fn authorize(relay: &Relay, request: &Request, peer: SocketAddr) -> Result<(), Response> {
    match &relay.settings().admin_token {
        Some(token) => match request.header("authorization").and_then(bearer_token) {
            Some(given) if same_secret(given.as_bytes(), token.as_bytes()) => Ok(()),
            _ => Err(Response::error(
                403,
                "this call changes the relay: send 'Authorization: Bearer <token>' with the relay's admin token (--admin-token-file, BOOKRELAY_ADMIN_TOKEN or --admin-token)",
            )),
        },
        None if peer.ip().to_canonical().is_loopback() => {
            let call = BrowserCall {
                host: request.header("host"),
                origin: request.header("origin"),
                fetch_site: request.header("sec-fetch-site"),
                content_type: request.header("content-type"),
                has_body: !request.body.is_empty(),
            };
            call.check(relay.listen_addr())
                .map_err(|sentence| Response::error(403, sentence))
        }
        None => Err(Response::error(
            403,
            "this call changes the relay and is accepted from this machine only; start the relay with --admin-token-file to allow it from elsewhere",
        )),
    }
}

/// The token of an `Authorization: Bearer TOKEN` value; the scheme is
/// matched case-insensitively (RFC 9110 §11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let value = value.trim();
    let split = value.find([' ', '\t'])?;
    let (scheme, token) = value.split_at(split);
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Compares without stopping at the first difference nor at a length
/// mismatch, so response time does not reveal how much of a guessed token
/// was right: the lengths go into the accumulator, and the loop runs over the
/// longer input.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = given.len() ^ expected.len();
    for i in 0..given.len().max(expected.len()) {
        let x = given.get(i).copied().unwrap_or(0);
        let y = expected.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

/// What a browser reveals about who sent a changing call. Without an admin
/// token, a loopback peer may also be a web page of any site open in the
/// user's browser; these rules refuse what such a page could send.
#[derive(Debug, Clone, Copy, Default)]
struct BrowserCall<'a> {
    host: Option<&'a str>,
    origin: Option<&'a str>,
    fetch_site: Option<&'a str>,
    content_type: Option<&'a str>,
    has_body: bool,
}

impl BrowserCall<'_> {
    /// `Ok` if no page of another origin could have sent this call; else
    /// the sentence of the 403. `listen` is the relay's bound address.
    fn check(&self, listen: SocketAddr) -> Result<(), &'static str> {
        // DNS rebinding: a page of evil.example whose name now resolves to
        // 127.0.0.1 is same-origin with itself, but its Host names evil.example.
        if let Some(host) = self.host {
            if !split_authority(host).is_some_and(|(name, _)| is_own_host(name, listen)) {
                return Err("this call changes the relay and is accepted only when addressed to it by a loopback name (localhost, 127.0.0.1, [::1]) or its listen address; use http://127.0.0.1:PORT, or start the relay with --admin-token-file");
            }
        }
        if let Some(site) = self.fetch_site {
            let site = site.trim();
            if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") {
                return Err("this call changes the relay and came from a web page of another site (Sec-Fetch-Site); use the dashboard at /_relay/ or curl, or start the relay with --admin-token-file");
            }
        }
        if let Some(origin) = self.origin {
            if !is_own_origin(origin, self.host, listen) {
                return Err("this call changes the relay and came from a web page of another origin (Origin); use the dashboard at /_relay/ or curl, or start the relay with --admin-token-file");
            }
        }
        if self.has_body && !self.content_type.is_some_and(is_json_type) {
            return Err(
                "this call changes the relay: send its body with 'Content-Type: application/json'",
            );
        }
        Ok(())
    }
}

/// `name` and `port` of `name[:port]` or `[v6][:port]`; `None` if malformed.
fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    let authority = authority.trim();
    let (name, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (name, rest) = authority.split_at(end + 1);
        match rest {
            "" => (name, None),
            _ => (name, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (authority, None),
        }
    };
    if name.is_empty() {
        return None;
    }
    match port {
        None => Some((name, None)),
        Some(port) => Some((name, Some(port.parse().ok()?))),
    }
}

/// A loopback name (`localhost`, `127.x.x.x`, `[::1]`) or the listen address.
fn is_own_host(name: &str, listen: SocketAddr) -> bool {
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let ip = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6),
        None => name.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
    };
    ip.is_some_and(|ip| {
        let ip = ip.to_canonical();
        ip.is_loopback() || (!listen.ip().is_unspecified() && ip == listen.ip().to_canonical())
    })
}

/// The relay's own origin: `http://` and either exactly the `Host` the call
/// was sent to (already checked by [`is_own_host`]), or a loopback name or
/// the listen address with the relay's port (80 when absent).
fn is_own_origin(origin: &str, host: Option<&str>, listen: SocketAddr) -> bool {
    let Some(authority) = origin.trim().strip_prefix("http://") else {
        return false;
    };
    if host.is_some_and(|host| host.trim().eq_ignore_ascii_case(authority)) {
        return true;
    }
    split_authority(authority).is_some_and(|(name, port)| {
        is_own_host(name, listen) && port.unwrap_or(80) == listen.port()
    })
}

/// `application/json`, parameters allowed (`; charset=utf-8`).
fn is_json_type(value: &str) -> bool {
    value
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

fn refused(refusal: Refusal) -> Response {
    Response::error(refusal.status, &refusal.sentence)
}

fn node_answer(result: Result<NodeInfo, Refusal>, state: &str) -> Response {
    match result {
        Ok(info) => Response::json(200, node_json(&info, Some(state))),
        Err(refusal) => refused(refusal),
    }
}

fn node_json(info: &NodeInfo, state: Option<&str>) -> String {
    let object = json::Object::new()
        .str("name", &info.name)
        .str("addr", &info.addr);
    match state {
        Some(state) => object.str("state", state),
        None => object,
    }
    .finish()
}

/// A JSON object body, or the 400 to answer. An empty body is `{}`.
fn object_body(body: &[u8]) -> Result<Value, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Vec::new()));
    }
    match json::parse(body) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err(Response::error(400, "the body must be a JSON object")),
        Err(e) => Err(Response::error(
            400,
            &format!("the body is not valid JSON: {e}"),
        )),
    }
}

/// A JSON number that is a whole weight.
fn as_weight(value: &Value) -> Option<u32> {
    let n = value.as_f64()?;
    (n >= 0.0 && n.fract() == 0.0 && n <= f64::from(u32::MAX)).then_some(n as u32)
}

fn add_node(relay: &Relay, body: &[u8]) -> Response {
    let body = match object_body(body) {
        Ok(body) => body,
        Err(response) => return response,
    };
    let weight = match body.get("weight") {
        None => 1,
        Some(value) => match as_weight(value) {
            Some(weight) => weight,
            None => {
                return Response::error(
                    400,
                    &format!("weight must be a whole number from 0 to {MAX_WEIGHT}"),
                )
            }
        },
    };
    match relay.add_node(weight) {
        Ok(info) => Response::json(201, node_json(&info, None)),
        Err(refusal) => refused(refusal),
    }
}

fn switch_balancer(relay: &Relay, body: &[u8]) -> Response {
    let body = match object_body(body) {
        Ok(body) => body,
        Err(response) => return response,
    };
    let Some(name) = body.get("balancer").and_then(Value::as_str) else {
        return Response::error(
            400,
            &format!(
                "send {{\"balancer\":NAME}} with NAME one of {}",
                crate::balancer::NAMES.join(", ")
            ),
        );
    };
    let weights = match body.get("weights") {
        None | Some(Value::Null) => None,
        Some(value) => match value
            .as_array()
            .map(|items| items.iter().map(as_weight).collect::<Option<Vec<u32>>>())
        {
            Some(Some(weights)) => Some(weights),
            _ => {
                return Response::error(
                    400,
                    &format!("weights must be an array of whole numbers from 0 to {MAX_WEIGHT}"),
                )
            }
        },
    };
    match relay.switch_balancer(name, weights) {
        Ok(topology) => Response::json(200, balancer_json(&topology)),
        Err(refusal) => refused(refusal),
    }
}

/// The `after` of `?after=SEQ` (0 when absent): a whole number, or the
/// sentence of a 400.
fn after_param(query: Option<&str>) -> Result<u64, String> {
    let Some(value) = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("after="))
    else {
        return Ok(0);
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "after must be a whole number, the seq of the last event seen (0 for all), got '{}'",
            value.chars().take(40).collect::<String>()
        ));
    }
    value.parse().map_err(|_| {
        format!(
            "after is too large: {}",
            value.chars().take(40).collect::<String>()
        )
    })
}

/// `{"events":[{"seq":N,"time":RFC3339,"kind":K,"node":NAME|null,"detail":S}…]}`.
pub fn events_json(events: &[Event]) -> String {
    let events = events.iter().map(|event| {
        json::Object::new()
            .uint("seq", event.seq)
            .str("time", &utc_timestamp(event.time))
            .str("kind", event.kind.as_str())
            .opt_str("node", event.node.as_deref())
            .str("detail", &event.detail)
            .finish()
    });
    json::Object::new()
        .raw("events", &json::array(events))
        .finish()
}

/// `{"balancer":NAME,"weights":[…]}`.
pub fn balancer_json(topology: &Topology) -> String {
    let weights = topology.weights.iter().map(u32::to_string);
    json::Object::new()
        .str("balancer", topology.balancer.name())
        .raw("weights", &json::array(weights))
        .finish()
}

/// A finite number as JSON with at most three decimals (`2`, `0.55`).
fn json_number(value: f64) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text.is_empty() || text == "-" {
        "0".into()
    } else {
        text.into()
    }
}

/// One node's figures, read once for one status document or one metrics page.
struct Figures {
    name: String,
    addr: String,
    spawned: bool,
    healthy: bool,
    weight: u32,
    effective_weight: f64,
    in_flight: u64,
    requests: u64,
    failures: u64,
    /// Cache hits and misses; `None` when not known.
    cache: Option<(u64, u64)>,
    connections_opened: u64,
    retries: u64,
    ejected: bool,
    ejections: u32,
    responses: [u64; 4],
    latency: ([u64; LATENCY_BUCKETS.len() + 1], f64, u64),
}

/// Every node's [`Figures`], in the topology's order.
fn figures(topology: &Topology) -> Vec<Figures> {
    let effective = topology.effective_weights(Instant::now());
    topology
        .backends
        .iter()
        .zip(&topology.weights)
        .zip(effective)
        .map(|((backend, &weight), effective_weight)| Figures {
            name: backend.name(),
            addr: backend.addr.to_string(),
            spawned: backend.is_spawned(),
            healthy: backend.state().healthy,
            weight,
            effective_weight,
            in_flight: backend.in_flight.load(Ordering::Relaxed),
            requests: backend.requests.load(Ordering::Relaxed),
            failures: backend.failures.load(Ordering::Relaxed),
            cache: backend.cache_figures(),
            connections_opened: backend.pool.opened(),
            retries: backend.retries.load(Ordering::Relaxed),
            ejected: backend.outlier.is_ejected(),
            ejections: backend.outlier.ejections(),
            responses: backend.responses(),
            latency: backend.latency.snapshot(),
        })
        .collect()
}

/// `{"balancer":NAME,"nodes":[{…}…]}` as SPEC §5 lists, plus
/// `effective_weight` (the weight scaled by the `--slow-start` ramp),
/// `connections_opened` (connections the relay ever opened to the node),
/// `retries` (requests that failed there and went to another node),
/// `ejected` (out of rotation for its 5xx answers, [`super::outlier`]; its
/// `healthy` still says what its checks say), `ejections` (times ejected)
/// and `responses` (the clients' answers by status class).
pub fn status_json(topology: &Topology, queue: QueueStats) -> String {
    let nodes = figures(topology).into_iter().map(|node| {
        let responses = RESPONSE_CLASSES
            .iter()
            .zip(node.responses)
            .fold(json::Object::new(), |object, (class, count)| {
                object.uint(class, count)
            })
            .finish();
        json::Object::new()
            .str("name", &node.name)
            .str("addr", &node.addr)
            .str("kind", if node.spawned { "thread" } else { "external" })
            .bool("healthy", node.healthy)
            .uint("weight", u64::from(node.weight))
            .raw("effective_weight", &json_number(node.effective_weight))
            .uint("in_flight", node.in_flight)
            .uint("requests", node.requests)
            .uint("failures", node.failures)
            .opt_uint("cache_hits", node.cache.map(|(hits, _)| hits))
            .opt_uint("cache_misses", node.cache.map(|(_, misses)| misses))
            .uint("connections_opened", node.connections_opened)
            .uint("retries", node.retries)
            .bool("ejected", node.ejected)
            .uint("ejections", u64::from(node.ejections))
            .raw("responses", &responses)
            .finish()
    });
    let queue = json::Object::new()
        .opt_uint("cap", queue.cap)
        .uint("waiting", queue.waiting as u64)
        .uint("waited", queue.waited)
        .uint("timeouts", queue.timeouts)
        .finish();
    json::Object::new()
        .str("balancer", topology.balancer.name())
        .raw("nodes", &json::array(nodes))
        .raw("queue", &queue)
        .finish()
}

/// The line of requests waiting for a slot (`--max-conns-per-node`), for Prometheus.
pub fn queue_metrics(queue: QueueStats) -> String {
    let mut out = String::new();
    for (name, kind, help, value) in [
        (
            "bookrelay_queue_waiting",
            "gauge",
            "Requests waiting in the relay for a node with a free slot (--max-conns-per-node).",
            queue.waiting as u64,
        ),
        (
            "bookrelay_queue_waited_total",
            "counter",
            "Requests that had to wait for a slot.",
            queue.waited,
        ),
        (
            "bookrelay_queue_timeouts_total",
            "counter",
            "Requests answered 503 after waiting the whole queue timeout.",
            queue.timeouts,
        ),
    ] {
        unlabelled(&mut out, name, kind, help, value);
    }
    out
}

/// The status figures in the Prometheus text exposition format.
pub fn metrics_text(topology: &Topology) -> String {
    struct Metric {
        name: &'static str,
        kind: &'static str,
        help: &'static str,
        /// The node's value; `None`: not known, no line.
        value: fn(&Figures) -> Option<u64>,
    }
    let metrics = [
        Metric {
            name: "bookrelay_node_requests_total",
            kind: "counter",
            help: "Client requests forwarded to the node.",
            value: |node| Some(node.requests),
        },
        Metric {
            name: "bookrelay_node_failures_total",
            kind: "counter",
            help:
                "Forwarded requests that failed at the node (connect, reset, timeout, bad answer).",
            value: |node| Some(node.failures),
        },
        Metric {
            name: "bookrelay_node_in_flight",
            kind: "gauge",
            help: "Requests being served by the node right now.",
            value: |node| Some(node.in_flight),
        },
        Metric {
            name: "bookrelay_node_healthy",
            kind: "gauge",
            help: "1 if the node receives traffic, 0 if it is marked down.",
            value: |node| Some(u64::from(node.healthy)),
        },
        Metric {
            name: "bookrelay_node_weight",
            kind: "gauge",
            help: "The node's balancer weight.",
            value: |node| Some(u64::from(node.weight)),
        },
        Metric {
            name: "bookrelay_node_retries_total",
            kind: "counter",
            help: "Requests that failed at the node and were sent to another node.",
            value: |node| Some(node.retries),
        },
        Metric {
            name: "bookrelay_node_connections_opened_total",
            kind: "counter",
            help: "Connections the relay opened to the node.",
            value: |node| Some(node.connections_opened),
        },
        Metric {
            name: "bookrelay_node_cache_hits_total",
            kind: "counter",
            help: "Cache hits reported by the node.",
            value: |node| node.cache.map(|(hits, _)| hits),
        },
        Metric {
            name: "bookrelay_node_cache_misses_total",
            kind: "counter",
            help: "Cache misses reported by the node.",
            value: |node| node.cache.map(|(_, misses)| misses),
        },
    ];
    let nodes = figures(topology);
    let mut out = String::new();
    for metric in &metrics {
        let _ = writeln!(out, "# HELP {} {}", metric.name, metric.help);
        let _ = writeln!(out, "# TYPE {} {}", metric.name, metric.kind);
        for node in &nodes {
            if let Some(value) = (metric.value)(node) {
                let _ = writeln!(
                    out,
                    "{}{{node=\"{}\",addr=\"{}\"}} {value}",
                    metric.name,
                    escape_label(&node.name),
                    node.addr
                );
            }
        }
    }
    let name = "bookrelay_node_responses_total";
    let _ = writeln!(
        out,
        "# HELP {name} Answers clients got for requests forwarded to the node, by status class (the relay's own 502 and 504 for the node included)."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for node in &nodes {
        let label = escape_label(&node.name);
        for (class, count) in RESPONSE_CLASSES.iter().zip(node.responses) {
            let _ = writeln!(
                out,
                "{name}{{node=\"{label}\",addr=\"{}\",class=\"{class}\"}} {count}",
                node.addr
            );
        }
    }
    let name = "bookrelay_node_request_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time from sending a request to the node to the end of its answer."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for node in &nodes {
        let labels = format!(
            "node=\"{}\",addr=\"{}\"",
            escape_label(&node.name),
            node.addr
        );
        let (buckets, sum, count) = node.latency;
        for (bound, cumulative) in LATENCY_BUCKETS.iter().zip(buckets) {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels},le=\"+Inf\"}} {}",
            buckets[LATENCY_BUCKETS.len()]
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
    out
}

/// The relay's own client-connection counters, in the same format.
pub fn connection_metrics(counters: &ServerCounters) -> String {
    let mut out = String::new();
    for (name, help, value) in [
        (
            "bookrelay_client_connections_accepted_total",
            "Client connections accepted.",
            &counters.accepted,
        ),
        (
            "bookrelay_client_connections_refused_total",
            "Client connections answered 503 because the connection limit was reached.",
            &counters.refused,
        ),
        (
            "bookrelay_client_connections_shed_total",
            "Waiting client connections (idle, or silent since connecting) closed to make room at the connection limit.",
            &counters.shed,
        ),
        (
            "bookrelay_connection_panics_total",
            "Client connections whose handler panicked; each ended only that connection.",
            &counters.panics,
        ),
    ] {
        unlabelled(&mut out, name, "counter", help, value.load(Ordering::Relaxed));
    }
    out
}

/// One metric without labels, with its help and type lines.
fn unlabelled(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

/// Label values escape backslash, double quote and newline.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::backend::{Backend, Kind};
    use crate::relay::health::HealthState;
    use crate::relay::queue::{Queue, QUEUE_TIMEOUT};
    use std::sync::Arc;

    fn topology() -> Topology {
        let backends = vec![
            Arc::new(Backend::new(
                "alpha".into(),
                "127.0.0.1:1".parse().expect("addr"),
                Kind::External,
                HealthState::healthy(),
            )),
            Arc::new(Backend::new(
                "be\"ta".into(),
                "127.0.0.1:2".parse().expect("addr"),
                Kind::External,
                HealthState::unhealthy(),
            )),
        ];
        backends[0].requests.store(7, Ordering::Relaxed);
        backends[0].retries.store(3, Ordering::Relaxed);
        for status in [200, 404, 404, 502] {
            backends[0].count_response(status);
        }
        backends[0]
            .latency
            .observe(std::time::Duration::from_millis(20));
        Topology::build(
            backends,
            vec![2, 1],
            "weighted",
            1,
            &crate::balancer::Options::default(),
        )
        .expect("topology")
    }

    #[test]
    fn status_shows_a_ramping_nodes_effective_weight() {
        let topology = topology();
        let long_ago = Instant::now() - std::time::Duration::from_secs(50);
        // Up 50 s ago with a 100 s ramp: 0.1 + 0.9 × 0.5 = 0.55 of weight 2.
        topology.backends[0].begin_slow_start(std::time::Duration::from_secs(100), long_ago);
        let status =
            json::parse(status_json(&topology, Queue::new(None, QUEUE_TIMEOUT).stats()).as_bytes())
                .expect("valid JSON");
        let nodes = status
            .get("nodes")
            .and_then(|v| v.as_array())
            .expect("nodes");
        let effective = nodes[0]
            .get("effective_weight")
            .and_then(|v| v.as_f64())
            .expect("effective_weight");
        assert!((effective - 1.1).abs() < 0.01, "{effective}");
        assert_eq!(nodes[0].get("weight").and_then(|v| v.as_f64()), Some(2.0));
        assert_eq!(
            nodes[1].get("effective_weight").and_then(|v| v.as_f64()),
            Some(1.0)
        );
        assert_eq!(json_number(0.55), "0.55");
        assert_eq!(json_number(2.0), "2");
        assert_eq!(json_number(0.0), "0");
    }

    #[test]
    fn status_lists_every_node_with_the_spec_fields() {
        let status = json::parse(
            status_json(&topology(), Queue::new(Some(8), QUEUE_TIMEOUT).stats()).as_bytes(),
        )
        .expect("valid JSON");
        assert_eq!(
            status.get("balancer").and_then(|v| v.as_str()),
            Some("weighted")
        );
        let queue = status.get("queue").expect("queue");
        for (field, want) in [
            ("cap", 8.0),
            ("waiting", 0.0),
            ("waited", 0.0),
            ("timeouts", 0.0),
        ] {
            assert_eq!(
                queue.get(field).and_then(|v| v.as_f64()),
                Some(want),
                "{field}"
            );
        }
        let nodes = status
            .get("nodes")
            .and_then(|v| v.as_array())
            .expect("nodes");
        assert_eq!(nodes.len(), 2);
        for field in [
            "name",
            "addr",
            "kind",
            "healthy",
            "weight",
            "effective_weight",
            "in_flight",
            "requests",
            "failures",
            "cache_hits",
            "cache_misses",
            "connections_opened",
            "retries",
            "responses",
        ] {
            assert!(nodes[0].get(field).is_some(), "{field}");
        }
        assert_eq!(nodes[0].get("retries").and_then(|v| v.as_f64()), Some(3.0));
        let responses = nodes[0].get("responses").expect("responses");
        for (class, count) in [("2xx", 1.0), ("3xx", 0.0), ("4xx", 2.0), ("5xx", 1.0)] {
            assert_eq!(
                responses.get(class).and_then(|v| v.as_f64()),
                Some(count),
                "{class}"
            );
        }
        assert_eq!(nodes[0].get("requests").and_then(|v| v.as_f64()), Some(7.0));
        assert_eq!(
            nodes[0].get("kind").and_then(|v| v.as_str()),
            Some("external")
        );
        assert_eq!(nodes[0].get("cache_hits"), Some(&json::Value::Null));
        assert_eq!(nodes[1].get("healthy"), Some(&json::Value::Bool(false)));
        assert_eq!(nodes[1].get("weight").and_then(|v| v.as_f64()), Some(1.0));
    }

    #[test]
    fn connection_counters_are_reported() {
        let counters = ServerCounters::default();
        counters.panics.store(2, Ordering::Relaxed);
        let text = connection_metrics(&counters);
        assert!(text.contains("# TYPE bookrelay_connection_panics_total counter\n"));
        assert!(text.contains("bookrelay_connection_panics_total 2\n"));
        assert!(text.contains("bookrelay_client_connections_refused_total 0\n"));
        assert!(text.contains("bookrelay_client_connections_shed_total 0\n"));
    }

    #[test]
    fn secrets_compare_equal_only_when_identical() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(same_secret(b"", b""));
        assert!(!same_secret(b"s3cret", b"s3creT"));
        assert!(!same_secret(b"s3cret", b"s3cre"));
        assert!(!same_secret(b"s3cre", b"s3cret"));
        assert!(!same_secret(b"", b"x"));
        // A prefix padded with what the loop reads past the end is no match.
        assert!(!same_secret(b"ab\0", b"ab"));
        assert!(!same_secret(b"ab", b"ab\0"));
    }

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case() {
        assert_eq!(bearer_token("Bearer s3cret"), Some("s3cret"));
        assert_eq!(bearer_token("bearer s3cret"), Some("s3cret"));
        assert_eq!(bearer_token("BEARER  s3cret "), Some("s3cret"));
        assert_eq!(bearer_token("Bearer\ts3cret"), Some("s3cret"));
        assert_eq!(bearer_token("Basic czNjcmV0"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearers3cret"), None);
    }

    const LISTEN: &str = "127.0.0.1:8080";

    fn check(call: BrowserCall<'_>) -> Result<(), &'static str> {
        call.check(LISTEN.parse().expect("addr"))
    }

    fn from(host: &'static str, origin: Option<&'static str>) -> BrowserCall<'static> {
        BrowserCall {
            host: Some(host),
            origin,
            ..BrowserCall::default()
        }
    }

    #[test]
    fn hosts_must_be_loopback_names_or_the_listen_address() {
        let listen: SocketAddr = "192.0.2.5:8080".parse().expect("addr");
        for own in [
            "localhost",
            "LocalHost",
            "127.0.0.1",
            "127.1.2.3",
            "[::1]",
            "192.0.2.5",
        ] {
            assert!(is_own_host(own, listen), "{own}");
        }
        for foreign in [
            "evil.example",
            "localhost.evil.example",
            "192.0.2.6",
            "0.0.0.0",
            "[::2]",
            "::1",
            "",
        ] {
            assert!(!is_own_host(foreign, listen), "{foreign}");
        }
        assert!(!is_own_host(
            "0.0.0.0",
            "0.0.0.0:8080".parse().expect("addr")
        ));
        assert_eq!(split_authority("[::1]:8080"), Some(("[::1]", Some(8080))));
        assert_eq!(split_authority("localhost"), Some(("localhost", None)));
        assert_eq!(split_authority("localhost:x"), None);
        assert_eq!(split_authority("[::1"), None);
        assert_eq!(split_authority(":80"), None);
        assert!(check(from("127.0.0.1:8080", None)).is_ok());
        assert!(check(from("localhost:8080", None)).is_ok());
        assert!(check(from("evil.example:8080", None)).is_err());
        assert!(
            check(BrowserCall::default()).is_ok(),
            "no Host: not a browser"
        );
    }

    #[test]
    fn origins_must_be_the_relays_own() {
        let ok = |host, origin| check(from(host, Some(origin))).is_ok();
        assert!(ok("127.0.0.1:8080", "http://127.0.0.1:8080"));
        assert!(ok("localhost:8080", "http://localhost:8080"));
        assert!(ok("[::1]:8080", "http://[::1]:8080"));
        // Same authority as Host: a port forwarded to the relay's port.
        assert!(ok("localhost:9000", "http://localhost:9000"));
        // A loopback name with the relay's own port.
        assert!(ok("127.0.0.1:8080", "http://localhost:8080"));
        assert!(!ok("127.0.0.1:8080", "http://evil.example"));
        assert!(
            !ok("127.0.0.1:8080", "http://localhost:3000"),
            "another local site"
        );
        assert!(!ok("127.0.0.1:8080", "https://127.0.0.1:8080"));
        assert!(!ok("127.0.0.1:8080", "null"));
        assert!(
            !ok("127.0.0.1:8080", "http://127.0.0.1"),
            "port 80 is not 8080"
        );
        assert!(
            !ok("evil.example:8080", "http://evil.example:8080"),
            "DNS rebinding"
        );
    }

    #[test]
    fn cross_site_fetches_and_non_json_bodies_are_refused() {
        let site = |value| BrowserCall {
            fetch_site: Some(value),
            ..from("127.0.0.1:8080", None)
        };
        assert!(check(site("cross-site")).is_err());
        assert!(check(site("same-site")).is_err());
        assert!(check(site("same-origin")).is_ok());
        assert!(check(site("none")).is_ok());
        let body = |content_type| BrowserCall {
            content_type,
            has_body: true,
            ..from("127.0.0.1:8080", None)
        };
        assert!(check(body(Some("application/json"))).is_ok());
        assert!(check(body(Some("Application/JSON; charset=utf-8"))).is_ok());
        assert!(check(body(Some("text/plain"))).is_err());
        assert!(check(body(Some("application/x-www-form-urlencoded"))).is_err());
        assert!(check(body(None)).is_err());
        let empty = BrowserCall {
            content_type: Some("text/plain"),
            ..from("127.0.0.1:8080", None)
        };
        assert!(check(empty).is_ok(), "no body: nothing to mistype");
    }

    #[test]
    fn weights_are_whole_numbers() {
        assert_eq!(as_weight(&Value::Number(5.0)), Some(5));
        assert_eq!(as_weight(&Value::Number(0.0)), Some(0));
        assert_eq!(as_weight(&Value::Number(1.5)), None);
        assert_eq!(as_weight(&Value::Number(-1.0)), None);
        assert_eq!(as_weight(&Value::String("5".into())), None);
    }

    #[test]
    fn metrics_are_prometheus_text_with_escaped_labels() {
        let text = metrics_text(&topology());
        assert!(text.contains("# TYPE bookrelay_node_requests_total counter\n"));
        assert!(
            text.contains("bookrelay_node_requests_total{node=\"alpha\",addr=\"127.0.0.1:1\"} 7\n")
        );
        assert!(text.contains("bookrelay_node_healthy{node=\"be\\\"ta\",addr=\"127.0.0.1:2\"} 0\n"));
        assert!(
            !text.contains("bookrelay_node_cache_hits_total{"),
            "unknown figures are left out"
        );
        assert!(
            text.contains("bookrelay_node_retries_total{node=\"alpha\",addr=\"127.0.0.1:1\"} 3\n")
        );
        assert!(text.contains("# TYPE bookrelay_node_responses_total counter\n"));
        assert!(text.contains(
            "bookrelay_node_responses_total{node=\"alpha\",addr=\"127.0.0.1:1\",class=\"4xx\"} 2\n"
        ));
        assert!(text.contains(
            "bookrelay_node_responses_total{node=\"be\\\"ta\",addr=\"127.0.0.1:2\",class=\"2xx\"} 0\n"
        ));
        assert!(text.contains("# TYPE bookrelay_node_request_duration_seconds histogram\n"));
        let series = "bookrelay_node_request_duration_seconds";
        let alpha = "node=\"alpha\",addr=\"127.0.0.1:1\"";
        assert!(text.contains(&format!("{series}_bucket{{{alpha},le=\"0.01\"}} 0\n")));
        assert!(text.contains(&format!("{series}_bucket{{{alpha},le=\"0.025\"}} 1\n")));
        assert!(text.contains(&format!("{series}_bucket{{{alpha},le=\"+Inf\"}} 1\n")));
        assert!(text.contains(&format!("{series}_sum{{{alpha}}} 0.02\n")));
        assert!(text.contains(&format!("{series}_count{{{alpha}}} 1\n")));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').expect("series and value");
            assert!(series.starts_with("bookrelay_"), "{line}");
            if series.contains("_sum{") {
                assert!(value.parse::<f64>().is_ok(), "{line}");
            } else {
                assert!(value.parse::<u64>().is_ok(), "{line}");
            }
        }
    }

    #[test]
    fn events_are_json_with_null_for_no_node() {
        use crate::relay::events::{EventKind, Events};
        let events = Events::new(10);
        events.push(EventKind::Down, Some("brave \"owl\""), "connection refused");
        events.push(EventKind::Balancer, None, "round-robin → random");
        let doc = json::parse(events_json(&events.after(0)).as_bytes()).expect("valid JSON");
        let list = doc
            .get("events")
            .and_then(|v| v.as_array())
            .expect("events");
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].get("seq").and_then(|v| v.as_f64()), Some(1.0));
        assert_eq!(list[0].get("kind").and_then(|v| v.as_str()), Some("down"));
        assert_eq!(
            list[0].get("node").and_then(|v| v.as_str()),
            Some("brave \"owl\"")
        );
        assert_eq!(list[1].get("node"), Some(&json::Value::Null));
        let time = list[1].get("time").and_then(|v| v.as_str()).expect("time");
        assert!(time.ends_with('Z') && time.len() == 24, "{time}");
        assert_eq!(
            list[1].get("detail").and_then(|v| v.as_str()),
            Some("round-robin → random")
        );
        assert_eq!(events_json(&[]), "{\"events\":[]}");
    }

    #[test]
    fn after_must_be_a_whole_number() {
        assert_eq!(after_param(None), Ok(0));
        assert_eq!(after_param(Some("")), Ok(0));
        assert_eq!(after_param(Some("after=12")), Ok(12));
        assert_eq!(after_param(Some("x=1&after=3")), Ok(3));
        for bad in [
            "after=",
            "after=-1",
            "after=abc",
            "after=1.5",
            "after=99999999999999999999999",
        ] {
            assert!(after_param(Some(bad)).is_err(), "{bad}");
        }
    }
}
