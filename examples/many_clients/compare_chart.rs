//! `--svg`: the results as a chart, per balancer each node's share of requests (bars, in node
//! order, the same colour for the same position) with its cache hit rate (dots), then latency
//! percentiles.

use crate::options::Options;
use crate::report::RunResult;
use crate::svg::{nice_ceiling, open, xml};

/// Two panels: per balancer, each node's share of requests (bars) with its
/// cache hit rate (dots); then p50/p95/p99 latency per balancer.
pub fn chart_svg(options: &Options, results: &[RunResult]) -> String {
    use std::fmt::Write as _;
    let palette = [
        "#3d6ab3", "#2f8a44", "#c08a1e", "#6b4aa8", "#b3413d", "#2a8c8c",
    ];
    let (width, group_width) = (160 + 140 * results.len().max(1), 140.0);
    let height = 620;
    let mut svg = open(
        width as f64,
        f64::from(height),
        &format!("many_clients: {}", options.describe_workload()),
    );
    // Panel 1: share per node (0..100%) and hit rate.
    let (top, panel) = (60.0, 220.0);
    let _ = write!(
        svg,
        r#"<text x="20" y="{}" font-weight="bold">Share of requests per node (bars) and cache hit rate (dots)</text>"#,
        top - 10.0
    );
    // The bars' colours: node 1, 2, … in the relay's order (names differ per run).
    if let Some(first) = results.first() {
        for (i, node) in first.nodes.iter().enumerate() {
            let x = 420.0 + 130.0 * i as f64;
            let label = if node.delay.is_zero() {
                format!("node {}", i + 1)
            } else {
                format!("node {} (+{} ms)", i + 1, node.delay.as_millis())
            };
            let _ = write!(
                svg,
                r#"<rect x="{x}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{}" y="{:.1}">{}</text>"#,
                top - 20.0,
                palette[i % palette.len()],
                x + 16.0,
                top - 10.0,
                xml(&label)
            );
        }
    }
    for tick in [0, 25, 50, 75, 100] {
        let y = top + panel - panel * f64::from(tick) / 100.0;
        let _ = write!(
            svg,
            r##"<line x1="70" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#e3e3e3"/><text x="62" y="{:.1}" text-anchor="end">{tick}%</text>"##,
            width - 20,
            y + 4.0
        );
    }
    for (g, result) in results.iter().enumerate() {
        let x0 = 90.0 + group_width * g as f64;
        let shares = result.shares();
        let bar = (group_width - 30.0) / shares.len().max(1) as f64;
        for (i, (node, share, hit)) in shares.iter().enumerate() {
            let x = x0 + bar * i as f64;
            let h = panel * share;
            let _ = write!(
                svg,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{}: {:.1}% of requests</title></rect>"#,
                top + panel - h,
                bar - 4.0,
                palette[i % palette.len()],
                xml(&node.label()),
                share * 100.0
            );
            if let Some(hit) = hit {
                let _ = write!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="black"><title>{}: hit rate {:.1}%</title></circle>"#,
                    x + (bar - 4.0) / 2.0,
                    top + panel - panel * hit,
                    xml(&node.label()),
                    hit * 100.0
                );
            }
        }
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x0 + (group_width - 30.0) / 2.0,
            top + panel + 18.0,
            xml(&result.balancer)
        );
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#555">{:.0} req/s</text>"##,
            x0 + (group_width - 30.0) / 2.0,
            top + panel + 34.0,
            result.throughput()
        );
    }
    // Panel 2: latency percentiles.
    let (top, panel) = (360.0, 200.0);
    let worst = results
        .iter()
        .map(|r| r.percentile_ms(99.0))
        .fold(0.0_f64, f64::max)
        .max(0.001);
    let scale = nice_ceiling(worst);
    let _ = write!(
        svg,
        r#"<text x="20" y="{}" font-weight="bold">Latency percentiles (ms): p50, p95, p99</text>"#,
        top - 10.0
    );
    for step in 0..=4 {
        let value = scale * f64::from(step) / 4.0;
        let y = top + panel - panel * f64::from(step) / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="70" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#e3e3e3"/><text x="62" y="{:.1}" text-anchor="end">{value:.2}</text>"##,
            width - 20,
            y + 4.0
        );
    }
    let shades = ["#9bb5e0", "#4f7cc8", "#1f3f7a"];
    for (g, result) in results.iter().enumerate() {
        let x0 = 90.0 + group_width * g as f64;
        let bar = (group_width - 30.0) / 3.0;
        for (i, p) in [50.0, 95.0, 99.0].iter().enumerate() {
            let value = result.percentile_ms(*p);
            let h = panel * value / scale;
            let _ = write!(
                svg,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{} p{p}: {value:.3} ms</title></rect>"#,
                x0 + bar * i as f64,
                top + panel - h,
                bar - 4.0,
                shades[i],
                xml(&result.balancer)
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x0 + (group_width - 30.0) / 2.0,
            top + panel + 18.0,
            xml(&result.balancer)
        );
    }
    let legend_y = top + panel + 44.0;
    for (i, label) in ["p50", "p95", "p99"].iter().enumerate() {
        let x = 90.0 + 70.0 * i as f64;
        let _ = write!(
            svg,
            r#"<rect x="{x}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{}" y="{:.1}">{label}</text>"#,
            legend_y - 10.0,
            shades[i],
            x + 16.0,
            legend_y
        );
    }
    svg.push_str("</svg>\n");
    svg
}
