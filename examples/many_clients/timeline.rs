//! `--timeline`: requests per second per node over the run, one line per node, the clients'
//! errors as red bars along the bottom, and the relay's events (kill, down, up, revive,
//! ejections, …) as labelled vertical lines: a node dropping out, the others taking its share,
//! and its return, in one picture.

use crate::report::RunResult;
use crate::svg::{nice_ceiling, open, xml};
use crate::workload::{NO_NODE, SLICE};
use std::fmt::Write as _;

/// Rows for event labels under the time axis.
const LABEL_ROWS: usize = 4;

const PALETTE: [&str; 6] = [
    "#3d6ab3", "#2f8a44", "#c08a1e", "#6b4aa8", "#2a8c8c", "#8a5a2f",
];

/// The events worth a line on the chart, and its colour.
fn event_colour(kind: &str) -> Option<&'static str> {
    match kind {
        "kill" | "down" | "fail" | "eject" => Some("#b3413d"),
        "revive" | "up" | "heal" | "readmit" => Some("#2f8a44"),
        "fail-open" | "fail-open-end" | "balancer" | "add" | "remove" => Some("#666666"),
        _ => None,
    }
}

pub fn timeline_svg(title: &str, result: &RunResult) -> String {
    let (width, height) = (960.0, 480.0);
    let (left, right, top, bottom) = (70.0, 200.0, 70.0, 100.0);
    let (plot_w, plot_h) = (width - left - right, height - top - bottom);
    let slices = result
        .tally
        .by_node
        .values()
        .map(|t| t.per_slice.len())
        .chain([result.tally.errors_per_slice.len()])
        .max()
        .unwrap_or(0)
        .max(1);
    let slice_s = SLICE.as_secs_f64();
    let span = (slices as f64 * slice_s).max(result.elapsed.as_secs_f64());
    let per_second = 1.0 / slice_s;
    let names = result.node_names();
    let totals: Vec<u64> = (0..slices)
        .map(|i| {
            let all: u64 = result
                .tally
                .by_node
                .values()
                .map(|t| t.per_slice.get(i).copied().unwrap_or(0))
                .sum();
            all
        })
        .collect();
    let peak = totals.iter().copied().max().unwrap_or(0) as f64 * per_second;
    // Four grid steps of a round size.
    let y_top = 4.0 * nice_ceiling((peak / 4.0).max(1.0));
    let x = |seconds: f64| left + plot_w * (seconds / span).clamp(0.0, 1.0);
    let y = |rate: f64| top + plot_h - plot_h * (rate / y_top).min(1.0);
    // The points of a line through each slice's middle, from a count per slice.
    let polyline = |count: &dyn Fn(usize) -> u64| {
        (0..slices)
            .map(|i| {
                format!(
                    "{:.1},{:.1}",
                    x((i as f64 + 0.5) * slice_s),
                    y(count(i) as f64 * per_second)
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };

    let mut svg = open(width, height, title);
    let _ = write!(
        svg,
        r##"<text x="20" y="46" fill="#555">requests per second answered by each node ({} ms slices); red bars: client errors; lines: relay events</text>"##,
        SLICE.as_millis()
    );
    // Axes and grid.
    for step in 0..=4 {
        let value = y_top * f64::from(step) / 4.0;
        let yy = y(value);
        let _ = write!(
            svg,
            r##"<line x1="{left}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="#e3e3e3"/><text x="{:.1}" y="{:.1}" text-anchor="end">{value:.0}</text>"##,
            left + plot_w,
            left - 8.0,
            yy + 4.0
        );
    }
    let tick = [1.0, 2.0, 5.0, 10.0, 30.0, 60.0]
        .into_iter()
        .find(|t| span / t <= 12.0)
        .unwrap_or(120.0);
    let mut t = 0.0;
    while t <= span + 1e-9 {
        let xx = x(t);
        let _ = write!(
            svg,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{:.1}" y2="{:.1}" stroke="#999"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{t:.0} s</text>"##,
            top + plot_h,
            top + plot_h + 5.0,
            top + plot_h + 20.0
        );
        t += tick;
    }
    // All answers together, thin and grey: a kill shows as a dip here only if the others
    // could not take the dead node's share.
    let _ = write!(
        svg,
        r##"<polyline fill="none" stroke="#888" stroke-width="1.5" stroke-dasharray="6 3" points="{}"/><line x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#888" stroke-width="1.5" stroke-dasharray="6 3"/><text x="{:.1}" y="{:.1}">all nodes</text>"##,
        polyline(&|i| totals[i]),
        left + plot_w + 16.0,
        left + plot_w + 30.0,
        top - 8.0,
        top - 8.0,
        left + plot_w + 36.0,
        top - 4.0
    );
    // One line per node that answered; the first drawn widest, so that nodes with the same
    // counts (round-robin) show as nested bands rather than one line hiding the others.
    let answered: Vec<&String> = names
        .iter()
        .filter(|name| result.tally.by_node.contains_key(*name) && *name != NO_NODE)
        .collect();
    for (n, name) in answered.iter().enumerate() {
        let node = &result.tally.by_node[*name];
        let colour = PALETTE[n % PALETTE.len()];
        let stroke = 2.0 + 2.0 * (answered.len() - 1 - n) as f64;
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="{stroke}" stroke-linejoin="round" points="{}"/>"#,
            polyline(&|i| node.per_slice.get(i).copied().unwrap_or(0))
        );
        let label = result
            .nodes
            .iter()
            .find(|info| &info.name == *name)
            .map_or(name.to_string(), |info| info.label());
        let ly = top + 16.0 + 20.0 * n as f64;
        let _ = write!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="14" height="4" fill="{colour}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            left + plot_w + 16.0,
            ly - 4.0,
            left + plot_w + 36.0,
            ly,
            xml(&label)
        );
    }
    // Errors, as bars from the bottom on the same scale.
    for (i, &errors) in result.tally.errors_per_slice.iter().enumerate() {
        if errors == 0 {
            continue;
        }
        // At least a few pixels: one error among thousands of answers must still show.
        let bar = (top + plot_h - y(errors as f64 * per_second)).max(6.0);
        let (x0, x1) = (x(i as f64 * slice_s), x((i + 1) as f64 * slice_s));
        let _ = write!(
            svg,
            r##"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{bar:.1}" fill="#d9534f" opacity="0.8"><title>{:.2} s: {errors} errors</title></rect>"##,
            top + plot_h - bar,
            (x1 - x0).max(2.0),
            i as f64 * slice_s
        );
    }
    // Events: a line each; each label goes on the first of LABEL_ROWS rows where it does not
    // run into the previous label, so that events a moment apart stay readable.
    let mut row_ends = [f64::NEG_INFINITY; LABEL_ROWS];
    for event in &result.events {
        let Some(colour) = event_colour(&event.kind) else {
            continue;
        };
        let xx = x(event.at.max(0.0));
        let label = match &event.node {
            Some(node) => format!("{:.1} s {} {node}", event.at, event.kind),
            None => format!("{:.1} s {}", event.at, event.kind),
        };
        let row = row_ends.iter().position(|&end| end < xx).unwrap_or(0);
        row_ends[row] = xx + 6.0 * label.chars().count() as f64 + 8.0;
        let _ = write!(
            svg,
            r#"<line x1="{xx:.1}" x2="{xx:.1}" y1="{top:.1}" y2="{:.1}" stroke="{colour}" stroke-dasharray="4 3"><title>{}: {}</title></line>"#,
            top + plot_h + 30.0 + 13.0 * row as f64,
            xml(&label),
            xml(&event.detail)
        );
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" fill="{colour}" font-size="11">{}</text>"#,
            xx + 3.0,
            top + plot_h + 36.0 + 13.0 * row as f64,
            xml(&label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::SeenEvent;
    use crate::report::NodeInfo;
    use crate::workload::{NodeTally, Tally};
    use std::time::Duration;

    #[test]
    fn a_line_per_node_and_a_marker_per_event() {
        let mut tally = Tally::default();
        for (name, slices) in [("owl", vec![4, 4, 0, 0, 4]), ("fox", vec![4, 4, 8, 8, 4])] {
            tally.by_node.insert(
                name.into(),
                NodeTally {
                    requests: slices.iter().sum(),
                    per_slice: slices,
                    ..NodeTally::default()
                },
            );
        }
        tally.errors_per_slice = vec![0, 0, 1];
        let event = |at: f64, kind: &str| SeenEvent {
            at,
            kind: kind.into(),
            node: Some("owl".into()),
            detail: "x < y".into(),
        };
        let nodes = ["owl", "fox"]
            .map(|name| NodeInfo {
                name: name.into(),
                delay: Duration::ZERO,
            })
            .to_vec();
        let result = RunResult::new(
            "round-robin",
            tally,
            Duration::from_millis(1250),
            nodes,
            Vec::new(),
            vec![event(0.5, "kill"), event(0.6, "down"), event(1.0, "retry")],
        );
        let svg = timeline_svg("a <test>", &result);
        assert_eq!(svg.matches("<polyline").count(), 3, "all nodes, owl, fox");
        assert!(svg.contains("kill owl") && svg.contains("down owl"));
        assert!(
            !svg.contains("retry owl"),
            "retries are not marked one by one"
        );
        assert!(svg.contains("a &lt;test&gt;") && svg.contains("x &lt; y"));
        assert!(svg.contains("1 errors"));
    }
}
