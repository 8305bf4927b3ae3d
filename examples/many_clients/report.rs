//! What a run measured, and the text that reports it: the per-node table, latency and errors,
//! the relay's events and retries, the comparison table, and under each a few sentences that
//! say what to notice, computed from the figures.

use crate::lab::SeenEvent;
use crate::options::Options;
use crate::workload::Tally;
use std::time::Duration;

/// One finished run and what it measured.
pub struct RunResult {
    pub balancer: String,
    pub tally: Tally,
    pub elapsed: Duration,
    /// The relay's nodes in its order, each with the extra latency the run gave it (in-process
    /// runs only).
    pub nodes: Vec<NodeInfo>,
    /// Attempts the relay retried on another node, per node that failed them.
    pub retries: Vec<(String, u64)>,
    pub events: Vec<SeenEvent>,
}

/// A node of the run, as the report names it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: String,
    pub delay: Duration,
}

impl NodeInfo {
    /// "brave-owl" or "brave-owl (+20 ms)".
    pub fn label(&self) -> String {
        if self.delay.is_zero() {
            self.name.clone()
        } else {
            format!("{} (+{} ms)", self.name, self.delay.as_millis())
        }
    }
}

impl RunResult {
    pub fn new(
        balancer: &str,
        mut tally: Tally,
        elapsed: Duration,
        nodes: Vec<NodeInfo>,
        retries: Vec<(String, u64)>,
        events: Vec<SeenEvent>,
    ) -> RunResult {
        tally.latencies_us.sort_unstable();
        RunResult {
            balancer: balancer.to_string(),
            tally,
            elapsed,
            nodes,
            retries,
            events,
        }
    }

    pub fn requests(&self) -> u64 {
        self.tally.by_node.values().map(|t| t.requests).sum()
    }

    pub fn throughput(&self) -> f64 {
        self.requests() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn hits_and_misses(&self) -> (u64, u64) {
        self.tally
            .by_node
            .values()
            .fold((0, 0), |(h, m), t| (h + t.hits, m + t.misses))
    }

    pub fn hit_ratio(&self) -> Option<f64> {
        let (hits, misses) = self.hits_and_misses();
        (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64)
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        let sorted = &self.tally.latencies_us;
        if sorted.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
        f64::from(sorted[rank]) / 1000.0
    }

    pub fn errors(&self) -> u64 {
        self.tally.errors.values().sum()
    }

    pub fn total_retries(&self) -> u64 {
        self.retries.iter().map(|(_, n)| n).sum()
    }

    /// Every name that answered or that the relay lists, the relay's nodes first in its order.
    pub fn node_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        for name in self.tally.by_node.keys() {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }

    /// Each relay node's share of the requests, in node order.
    pub fn shares(&self) -> Vec<(NodeInfo, f64, Option<f64>)> {
        let total = self.requests().max(1) as f64;
        self.nodes
            .iter()
            .map(|node| {
                let t = self
                    .tally
                    .by_node
                    .get(&node.name)
                    .cloned()
                    .unwrap_or_default();
                let hit =
                    (t.hits + t.misses > 0).then(|| t.hits as f64 / (t.hits + t.misses) as f64);
                (node.clone(), t.requests as f64 / total, hit)
            })
            .collect()
    }

    /// The share of the node with the most extra latency, if one is slower than the others.
    fn slow_node_share(&self) -> Option<(NodeInfo, f64)> {
        let slowest = self.nodes.iter().max_by_key(|n| n.delay)?;
        let fastest = self.nodes.iter().map(|n| n.delay).min()?;
        if slowest.delay <= fastest {
            return None;
        }
        let share = self
            .shares()
            .into_iter()
            .find(|(n, _, _)| n.name == slowest.name)?
            .1;
        Some((slowest.clone(), share))
    }

    fn busiest_share(&self) -> f64 {
        self.shares().iter().map(|s| s.1).fold(0.0, f64::max)
    }

    /// Seconds each node was down in this run (from its down event to its up event or the
    /// end of the run).
    fn outages(&self) -> Vec<(String, f64, Option<f64>)> {
        let mut outages: Vec<(String, f64, Option<f64>)> = Vec::new();
        for event in &self.events {
            let Some(node) = &event.node else { continue };
            match event.kind.as_str() {
                "down" => outages.push((node.clone(), event.at, None)),
                "up" => {
                    if let Some(open) = outages
                        .iter_mut()
                        .rev()
                        .find(|(n, _, end)| n == node && end.is_none())
                    {
                        open.2 = Some(event.at);
                    }
                }
                _ => {}
            }
        }
        outages
    }
}

/// Events listed one per line in the report; the rest are counted by kind.
const MAX_EVENT_LINES: usize = 30;

fn hit_rate(hits: u64, misses: u64) -> String {
    if hits + misses == 0 {
        "-".into()
    } else {
        format!("{:.1}%", 100.0 * hits as f64 / (hits + misses) as f64)
    }
}

fn percent(ratio: Option<f64>) -> String {
    ratio.map_or("-".into(), |r| format!("{:.1}%", r * 100.0))
}

/// The report of one run.
pub fn print_run(options: &Options, result: &RunResult) {
    let tally = &result.tally;
    let requests = result.requests();
    println!();
    println!(
        "{}, balancer {}",
        options.describe_workload(),
        result.balancer
    );
    println!();
    println!(
        "{:<24} {:>6} {:>9} {:>7} {:>9} {:>9} {:>9} {:>8}",
        "node", "delay", "requests", "share", "hits", "misses", "hit rate", "retries"
    );
    for name in result.node_names() {
        let t = tally.by_node.get(&name).cloned().unwrap_or_default();
        let delay = result
            .nodes
            .iter()
            .find(|n| n.name == name)
            .map_or("-".into(), |n| format!("{} ms", n.delay.as_millis()));
        let retries = result
            .retries
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("-".into(), |(_, r)| r.to_string());
        println!(
            "{name:<24} {delay:>6} {:>9} {:>6.1}% {:>9} {:>9} {:>9} {retries:>8}",
            t.requests,
            100.0 * t.requests as f64 / requests.max(1) as f64,
            t.hits,
            t.misses,
            hit_rate(t.hits, t.misses)
        );
    }
    let (hits, misses) = result.hits_and_misses();
    println!(
        "{:<24} {:>6} {:>9} {:>7} {:>9} {:>9} {:>9} {:>8}",
        "all",
        "",
        requests,
        "100.0%",
        hits,
        misses,
        hit_rate(hits, misses),
        result.total_retries()
    );
    println!();
    println!(
        "throughput {:.0} req/s over {:.2} s; latency p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms",
        result.throughput(),
        result.elapsed.as_secs_f64(),
        result.percentile_ms(50.0),
        result.percentile_ms(95.0),
        result.percentile_ms(99.0)
    );
    if result.events.is_empty() {
        println!("events: none (the relay recorded no kill, down, up, ejection … during the run)");
    } else {
        println!("events during the run (seconds from its start, as /_relay/events has them):");
        for event in result.events.iter().take(MAX_EVENT_LINES) {
            println!("  {}", event.line());
        }
        if result.events.len() > MAX_EVENT_LINES {
            let mut by_kind = std::collections::BTreeMap::<&str, usize>::new();
            for event in &result.events[MAX_EVENT_LINES..] {
                *by_kind.entry(&event.kind).or_default() += 1;
            }
            let kinds: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
            println!(
                "  … and {} more ({}); GET /_relay/events lists them all",
                result.events.len() - MAX_EVENT_LINES,
                kinds.join(", ")
            );
        }
    }
    println!(
        "retries: {} (attempts that failed on a node before any answer and were sent to another; the clients never saw them)",
        result.total_retries()
    );
    let errors = result.errors();
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
    let notes = run_notes(options, result);
    if !notes.is_empty() {
        println!();
        println!("What to notice:");
        for note in notes {
            println!("- {note}");
        }
    }
}

/// Sentences about one run, from its figures.
fn run_notes(options: &Options, result: &RunResult) -> Vec<String> {
    let mut notes = Vec::new();
    for (node, down, up) in result.outages() {
        let end = up.unwrap_or(result.elapsed.as_secs_f64());
        let retried = result
            .retries
            .iter()
            .find(|(n, _)| *n == node)
            .map_or(0, |(_, r)| *r);
        notes.push(format!(
            "{node} was down from {down:.1} s to {}, {:.1} s; the relay retried {retried} of the requests it could not take on another node, so {}.",
            up.map_or("the end of the run".into(), |up| format!("{up:.1} s")),
            end - down,
            if result.errors() == 0 {
                "no client saw an error".to_string()
            } else {
                format!("clients saw {} errors", result.errors())
            }
        ));
    }
    let writes_cut = result
        .events
        .iter()
        .filter(|e| {
            e.kind == "error"
                && ["PATCH", "POST", "PUT", "DELETE"]
                    .iter()
                    .any(|m| e.detail.contains(&format!(" to {m} ")))
        })
        .count();
    if writes_cut > 0 {
        notes.push(format!(
            "{writes_cut} write(s) were in flight on a node when it failed mid-answer: the relay answered 502 instead of sending them again, because it cannot know whether the node applied them (a read in the same spot is retried on another node)."
        ));
    }
    let ejections = result.events.iter().filter(|e| e.kind == "eject").count();
    if ejections > 0 {
        let fives: u64 = result
            .tally
            .errors
            .iter()
            .filter(|(kind, _)| kind.starts_with("HTTP 5"))
            .map(|(_, n)| n)
            .sum();
        notes.push(format!(
            "{ejections} ejection(s): a node answering 5xx is taken out of rotation after a streak of them; the clients saw {fives} 5xx answers, the ones the node gave before it was ejected."
        ));
    }
    if let Some(ratio) = result.hit_ratio() {
        let nodes = result.nodes.len().max(1) as u64;
        let writes = (result.requests() as f64 * (1.0 - options.read_ratio)).round() as u64;
        let cold = nodes * options.hot_keys as u64;
        notes.push(format!(
            "hit rate {:.1}%: a miss is the first read of an id on a node (at most {nodes} nodes × {} ids = {cold}), a read after a write invalidated the cached copy on every node (about {writes} writes), or an id pushed out of a full cache{}.",
            ratio * 100.0,
            options.hot_keys,
            options
                .cache_capacity
                .map_or(String::new(), |c| format!(" (each node holds {c})")),
        ));
    }
    if let Some((slow, share)) = result.slow_node_share() {
        notes.push(format!(
            "the slow node {} served {:.1}% of the requests; an even split would be {:.1}%.",
            slow.label(),
            share * 100.0,
            100.0 / result.nodes.len().max(1) as f64
        ));
    }
    notes
}

/// The comparison table: one row per balancer.
pub fn print_comparison(options: &Options, results: &[RunResult]) {
    println!();
    println!(
        "{} x {}, each balancer on a fresh relay and database",
        options.describe_workload(),
        options
            .duration
            .map_or(format!("{} requests", options.requests), |d| format!(
                "{:.0} s",
                d.as_secs_f64()
            )),
    );
    println!();
    println!(
        "{:<24} {:>8} {:>8} {:>8} {:>8} {:>9} {:>6}  share per node",
        "balancer", "req/s", "p50 ms", "p95 ms", "p99 ms", "hit rate", "errors"
    );
    for result in results {
        let shares: Vec<String> = result
            .shares()
            .iter()
            .map(|(node, share, _)| format!("{} {:.0}%", node.label(), share * 100.0))
            .collect();
        println!(
            "{:<24} {:>8.0} {:>8.2} {:>8.2} {:>8.2} {:>9} {:>6}  {}",
            result.balancer,
            result.throughput(),
            result.percentile_ms(50.0),
            result.percentile_ms(95.0),
            result.percentile_ms(99.0),
            percent(result.hit_ratio()),
            result.errors(),
            shares.join(" · ")
        );
    }
    let notes = comparison_notes(options, results);
    if !notes.is_empty() {
        println!();
        println!("What to notice:");
        for note in notes {
            println!("- {note}");
        }
    }
}

/// Sentences about the comparison, from its figures; each only when its balancers ran.
pub fn comparison_notes(options: &Options, results: &[RunResult]) -> Vec<String> {
    let find = |name: &str| results.iter().find(|r| r.balancer == name);
    let mut notes = Vec::new();
    let slow: Vec<(String, NodeInfo, f64)> = results
        .iter()
        .filter_map(|r| r.slow_node_share().map(|(n, s)| (r.balancer.clone(), n, s)))
        .collect();
    if let Some((_, node, _)) = slow.first() {
        let list: Vec<String> = slow
            .iter()
            .map(|(b, _, s)| format!("{b} {:.0}%", s * 100.0))
            .collect();
        let mut text = format!(
            "The slow node ({} ms slower) got: {}.",
            node.delay.as_millis(),
            list.join(", ")
        );
        if let (Some(rr), Some(lc)) = (
            slow.iter().find(|s| s.0 == "round-robin"),
            slow.iter().find(|s| s.0 == "least-connections"),
        ) {
            if lc.2 < rr.2 {
                text.push_str(&format!(
                    " least-connections gives it {:.1}× less than round-robin: a slow node holds its requests longer, so it has more in flight and is picked less; round-robin and random cannot see that.",
                    rr.2 / lc.2.max(1e-9)
                ));
            }
        }
        notes.push(text);
    }
    if let Some(best) = results
        .iter()
        .filter(|r| r.hit_ratio().is_some())
        .max_by(|a, b| {
            a.hit_ratio()
                .unwrap_or(0.0)
                .total_cmp(&b.hit_ratio().unwrap_or(0.0))
        })
    {
        let mut text = format!(
            "{} has the highest hit rate, {}",
            best.balancer,
            percent(best.hit_ratio())
        );
        if let Some(rr) = find("round-robin").filter(|rr| rr.balancer != best.balancer) {
            text.push_str(&format!(" (round-robin {})", percent(rr.hit_ratio())));
        }
        if best.balancer.contains("consistent-hash") {
            text.push_str(&format!(
                ": hashing the id sends each id to one node, so the {} hot ids are spread over {} caches instead of each node caching all of them",
                options.hot_keys,
                best.nodes.len()
            ));
            if let Some(capacity) = options.cache_capacity {
                text.push_str(&format!(" (each holds {capacity})"));
            }
        }
        text.push('.');
        notes.push(text);
    }
    if let (Some(bounded), Some(plain)) = (find("bounded-consistent-hash"), find("consistent-hash"))
    {
        let average = 1.0 / bounded.nodes.len().max(1) as f64;
        let busiest = bounded.busiest_share();
        let why = if busiest > 1.25 * average + 0.01 {
            " The bound is on requests in flight, not on shares: with a slow node among them, the fast nodes finish theirs sooner and take more requests within it."
        } else {
            ""
        };
        notes.push(format!(
            "bounded-consistent-hash's busiest node took {:.0}% of the requests against consistent-hash's {:.0}% (the average is {:.0}%; the bound caps a node's requests in flight at 1.25 × the average), and its hit rate is {} against {}: only a hot node's overflow moves.{why}",
            busiest * 100.0,
            plain.busiest_share() * 100.0,
            average * 100.0,
            percent(bounded.hit_ratio()),
            percent(plain.hit_ratio())
        ));
    }
    if let Some(weighted) = find("weighted") {
        if let Some(weights) = &options.weights {
            let total: u32 = weights.iter().sum();
            let expected: Vec<String> = weights
                .iter()
                .map(|w| format!("{:.0}%", 100.0 * f64::from(*w) / f64::from(total.max(1))))
                .collect();
            let got: Vec<String> = weighted
                .shares()
                .iter()
                .map(|(_, s, _)| format!("{:.0}%", s * 100.0))
                .collect();
            let blind = if weighted.slow_node_share().is_some() {
                ", slow node or not"
            } else {
                ""
            };
            notes.push(format!(
                "weighted follows its weights {} ({} expected, {} measured){blind}.",
                weights
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                expected.join(" / "),
                got.join(" / ")
            ));
        }
    }
    if let (Some(ewma), Some(lc)) = (find("peak-ewma"), find("least-connections")) {
        let (e, l) = (ewma.percentile_ms(99.0), lc.percentile_ms(99.0));
        let why = if ewma.slow_node_share().is_none() {
            "no node is slower than the others here, so a node's latency tells the balancer nothing its requests in flight do not"
        } else if e <= l {
            "it weighs a node's recent latency, not just its requests in flight, so it tells a slow node from a busy one and sends the slow one only what it answers in time"
        } else {
            "here latency-awareness did not pay: the slow node's share was already small under least-connections"
        };
        notes.push(format!(
            "peak-ewma's p99 is {e:.2} ms against least-connections' {l:.2} ms: {why}."
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::NodeTally;

    /// A run where node i answered `requests[i]` requests, `hits` of them from its cache.
    fn result(balancer: &str, requests: [u64; 3], hits: u64, delays_ms: [u64; 3]) -> RunResult {
        let mut tally = Tally::default();
        let mut nodes = Vec::new();
        for (i, n) in requests.iter().enumerate() {
            let name = format!("node-{i}");
            tally.by_node.insert(
                name.clone(),
                NodeTally {
                    requests: *n,
                    hits: hits * n / 100,
                    misses: (100 - hits) * n / 100,
                    per_slice: Vec::new(),
                },
            );
            nodes.push(NodeInfo {
                name,
                delay: Duration::from_millis(delays_ms[i]),
            });
        }
        tally.latencies_us = vec![100; 10];
        RunResult::new(
            balancer,
            tally,
            Duration::from_secs(1),
            nodes,
            Vec::new(),
            Vec::new(),
        )
    }

    #[test]
    fn notes_name_the_slow_node_s_share_the_best_hit_rate_and_the_weights() {
        let slow = [0, 0, 20];
        let results = [
            result("round-robin", [100, 100, 100], 60, slow),
            result("least-connections", [190, 190, 20], 60, slow),
            result("consistent-hash", [150, 100, 50], 90, slow),
            result("weighted", [200, 100, 100], 60, slow),
        ];
        let options = Options {
            weights: Some(vec![2, 1, 1]),
            ..Options::default()
        };
        let notes = comparison_notes(&options, &results);
        assert!(notes[0].contains("round-robin 33%") && notes[0].contains("least-connections 5%"));
        assert!(notes[0].contains("6.7× less"), "{}", notes[0]);
        assert!(notes[1].starts_with("consistent-hash has the highest hit rate, 90.0%"));
        assert!(notes[2]
            .contains("50% / 25% / 25% expected, 50% / 25% / 25% measured), slow node or not"));
    }

    #[test]
    fn without_a_slow_node_the_notes_do_not_claim_one() {
        let even = [0, 0, 0];
        let results = [
            result("least-connections", [100, 100, 100], 60, even),
            result("peak-ewma", [100, 100, 100], 60, even),
        ];
        let notes = comparison_notes(&Options::default(), &results);
        assert!(
            !notes.iter().any(|n| n.contains("slow node (")),
            "{notes:?}"
        );
        assert!(
            notes.iter().any(|n| n.contains("no node is slower")),
            "{notes:?}"
        );
    }
}
