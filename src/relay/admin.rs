//! The relay's own endpoints under `/_relay/` (SPEC §5); never forwarded.
//!
//! `GET /_relay/status` is JSON for scripts and the dashboard;
//! `GET /_relay/metrics` is the same figures in Prometheus text format.

use super::backend::Topology;
use super::Relay;
use crate::http::{Request, Response};
use crate::json;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

/// Answers a request whose path starts with `/_relay`.
pub fn handle(relay: &Relay, request: &Request, _peer: SocketAddr) -> Response {
    let read = matches!(request.method.as_str(), "GET" | "HEAD");
    match request.path() {
        "/_relay/status" if read => Response::json(200, status_json(&relay.topology())),
        "/_relay/metrics" if read => Response::new(200)
            .with_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            .with_body(metrics_text(&relay.topology()).into_bytes()),
        "/_relay/status" | "/_relay/metrics" => {
            Response::error(405, "this path accepts only GET, HEAD")
                .with_header("Allow", "GET, HEAD")
        }
        path => Response::error(
            404,
            &format!(
                "no relay endpoint '{}'; try /_relay/status or /_relay/metrics",
                path.chars().take(80).collect::<String>()
            ),
        ),
    }
}

/// `{"balancer":NAME,"nodes":[{…}…]}` as SPEC §5 lists, plus
/// `connections_opened` (connections the relay ever opened to the node).
pub fn status_json(topology: &Topology) -> String {
    let mut out = String::with_capacity(256 + topology.backends.len() * 256);
    out.push_str("{\"balancer\":");
    json::write_str(&mut out, topology.balancer.name());
    out.push_str(",\"nodes\":[");
    for (i, (backend, weight)) in topology.backends.iter().zip(&topology.weights).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        json::write_str(&mut out, &backend.name());
        out.push_str(",\"addr\":");
        json::write_str(&mut out, &backend.addr.to_string());
        let kind = if backend.is_thread() {
            "thread"
        } else {
            "external"
        };
        let (hits, misses) = match backend.cache_figures() {
            Some((hits, misses)) => (hits.to_string(), misses.to_string()),
            None => ("null".to_string(), "null".to_string()),
        };
        let _ = write!(
            out,
            ",\"kind\":\"{kind}\",\"healthy\":{},\"weight\":{weight},\"in_flight\":{},\"requests\":{},\
             \"failures\":{},\"cache_hits\":{hits},\"cache_misses\":{misses},\"connections_opened\":{}}}",
            backend.state().healthy,
            backend.in_flight.load(Ordering::Relaxed),
            backend.requests.load(Ordering::Relaxed),
            backend.failures.load(Ordering::Relaxed),
            backend.pool.opened(),
        );
    }
    out.push_str("]}");
    out
}

/// The status figures in the Prometheus text exposition format.
pub fn metrics_text(topology: &Topology) -> String {
    struct Metric {
        name: &'static str,
        kind: &'static str,
        help: &'static str,
    }
    let metrics = [
        Metric {
            name: "bookrelay_node_requests_total",
            kind: "counter",
            help: "Client requests forwarded to the node.",
        },
        Metric {
            name: "bookrelay_node_failures_total",
            kind: "counter",
            help:
                "Forwarded requests that failed at the node (connect, reset, timeout, bad answer).",
        },
        Metric {
            name: "bookrelay_node_in_flight",
            kind: "gauge",
            help: "Requests being served by the node right now.",
        },
        Metric {
            name: "bookrelay_node_healthy",
            kind: "gauge",
            help: "1 if the node receives traffic, 0 if it is marked down.",
        },
        Metric {
            name: "bookrelay_node_weight",
            kind: "gauge",
            help: "The node's balancer weight.",
        },
        Metric {
            name: "bookrelay_node_connections_opened_total",
            kind: "counter",
            help: "Connections the relay opened to the node.",
        },
        Metric {
            name: "bookrelay_node_cache_hits_total",
            kind: "counter",
            help: "Cache hits reported by the node.",
        },
        Metric {
            name: "bookrelay_node_cache_misses_total",
            kind: "counter",
            help: "Cache misses reported by the node.",
        },
    ];
    let mut out = String::new();
    for metric in &metrics {
        let _ = writeln!(out, "# HELP {} {}", metric.name, metric.help);
        let _ = writeln!(out, "# TYPE {} {}", metric.name, metric.kind);
        for (backend, weight) in topology.backends.iter().zip(&topology.weights) {
            let cache = backend.cache_figures();
            let value = match metric.name {
                "bookrelay_node_requests_total" => Some(backend.requests.load(Ordering::Relaxed)),
                "bookrelay_node_failures_total" => Some(backend.failures.load(Ordering::Relaxed)),
                "bookrelay_node_in_flight" => Some(backend.in_flight.load(Ordering::Relaxed)),
                "bookrelay_node_healthy" => Some(u64::from(backend.state().healthy)),
                "bookrelay_node_weight" => Some(u64::from(*weight)),
                "bookrelay_node_connections_opened_total" => Some(backend.pool.opened()),
                "bookrelay_node_cache_hits_total" => cache.map(|(hits, _)| hits),
                _ => cache.map(|(_, misses)| misses),
            };
            if let Some(value) = value {
                let _ = writeln!(
                    out,
                    "{}{{node=\"{}\",addr=\"{}\"}} {value}",
                    metric.name,
                    escape_label(&backend.name()),
                    backend.addr
                );
            }
        }
    }
    out
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
        Topology::build(backends, vec![2, 1], "weighted", 1).expect("topology")
    }

    #[test]
    fn status_lists_every_node_with_the_spec_fields() {
        let status = json::parse(status_json(&topology()).as_bytes()).expect("valid JSON");
        assert_eq!(
            status.get("balancer").and_then(|v| v.as_str()),
            Some("weighted")
        );
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
            "in_flight",
            "requests",
            "failures",
            "cache_hits",
            "cache_misses",
        ] {
            assert!(nodes[0].get(field).is_some(), "{field}");
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
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').expect("series and value");
            assert!(series.starts_with("bookrelay_"), "{line}");
            assert!(value.parse::<u64>().is_ok(), "{line}");
        }
    }
}
