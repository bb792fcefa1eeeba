//! The report folder of a run: `history.jsonl`, `verdict.json`, `counterexample.jsonl` (when
//! the checker found one), `timeline.html` (self-contained SVG: operations per worker as bars
//! coloured by outcome, nemesis intervals shaded) and `latency.png` / `throughput.png` drawn
//! by the embedded `scripts/jepsen_report.py` (matplotlib; a warning if it is missing).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::history::{History, Outcome, Process};
use crate::Error;

/// The plotting script, kept in the repository and embedded so a report can be drawn
/// wherever the binary runs.
pub const PLOT_SCRIPT: &str = include_str!("../../../scripts/jepsen_report.py");
/// Width of the timeline's drawing area in pixels.
pub const TIMELINE_WIDTH_PX: f64 = 1400.0;
/// Height of one worker's row.
pub const TIMELINE_ROW_PX: f64 = 14.0;

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub fn write_json(path: &Path, value: &Value) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value).expect("json values serialize");
    std::fs::write(path, text + "\n").map_err(io(path))
}

/// A nemesis interval: (start ns, end ns, label).
pub fn nemesis_intervals(history: &History) -> Vec<(u64, u64, String)> {
    let end = history.ops().last().map_or(0, |o| o.time);
    let mut open: BTreeMap<String, u64> = BTreeMap::new();
    let mut out = Vec::new();
    for op in history
        .ops()
        .iter()
        .filter(|o| matches!(o.process, Process::Named(_)))
    {
        if let Some(fault) = op.f.strip_prefix("start-") {
            open.entry(fault.to_string()).or_insert(op.time);
        } else if let Some(fault) = op.f.strip_prefix("stop-") {
            if let Some(start) = open.remove(fault) {
                out.push((start, op.time, fault.to_string()));
            }
        }
    }
    out.extend(open.into_iter().map(|(f, start)| (start, end, f)));
    out.sort();
    out
}

/// The timeline: one row per worker (process modulo concurrency), bars from invoke to
/// completion (indeterminate ones to the end, faded), nemesis intervals shaded.
pub fn timeline_html(history: &History, concurrency: usize, title: &str) -> Result<String, Error> {
    let ops = history.pair()?;
    let end_ns = history.ops().last().map_or(1, |o| o.time.max(1));
    let x = |t: u64| 60.0 + (t as f64 / end_ns as f64) * TIMELINE_WIDTH_PX;
    let rows = concurrency.max(1);
    let height = 40.0 + rows as f64 * TIMELINE_ROW_PX + 30.0;
    let width = TIMELINE_WIDTH_PX + 80.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" font-size="10">"#
    );
    for (start, stop, label) in nemesis_intervals(history) {
        let (x0, x1) = (x(start), x(stop));
        let _ = write!(
            svg,
            r##"<rect x="{x0:.1}" y="20" width="{:.1}" height="{:.1}" fill="#f4c7c3" opacity="0.6"><title>{label} {:.2}s-{:.2}s</title></rect><text x="{x0:.1}" y="15" fill="#a33">{label}</text>"##,
            (x1 - x0).max(1.0),
            rows as f64 * TIMELINE_ROW_PX + 10.0,
            start as f64 / 1e9,
            stop as f64 / 1e9
        );
    }
    for op in ops.iter().filter(|o| matches!(o.process, Process::Client(_))) {
        let Process::Client(p) = op.process else { continue };
        let row = (p as usize) % rows;
        let y = 25.0 + row as f64 * TIMELINE_ROW_PX;
        let (color, opacity) = match op.outcome {
            Outcome::Ok => ("#3c9a4a", 0.9),
            Outcome::Fail => ("#d9534f", 0.9),
            Outcome::Info => ("#f0ad4e", 0.5),
        };
        let x0 = x(op.call);
        let x1 = x(op.ret.unwrap_or(end_ns));
        let key = op.key.as_deref().unwrap_or("");
        let tip = format!(
            "p{} {} {} {} -> {} {:?} [{:.3}s, {}]{}",
            p,
            op.f,
            key,
            op.input,
            op.output,
            op.outcome,
            op.call as f64 / 1e9,
            op.ret
                .map_or("?".to_string(), |r| format!("{:.3}s", r as f64 / 1e9)),
            op.error.as_deref().map(|e| format!(" {e}")).unwrap_or_default()
        );
        let _ = write!(
            svg,
            r#"<rect x="{x0:.2}" y="{y:.1}" width="{:.2}" height="{:.1}" fill="{color}" opacity="{opacity}"><title>{}</title></rect>"#,
            (x1 - x0).max(0.8),
            TIMELINE_ROW_PX - 3.0,
            escape(&tip)
        );
    }
    for row in 0..rows {
        let y = 25.0 + row as f64 * TIMELINE_ROW_PX + 9.0;
        let _ = write!(svg, r#"<text x="2" y="{y:.1}">worker {row}</text>"#);
    }
    let axis_y = 35.0 + rows as f64 * TIMELINE_ROW_PX;
    let seconds = end_ns / 1_000_000_000;
    let step = (seconds / 20).max(1);
    for s in (0..=seconds).step_by(step as usize) {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}">{s}s</text>"#,
            x(s * 1_000_000_000),
            axis_y + 10.0
        );
    }
    svg.push_str("</svg>");
    Ok(format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title></head><body>\
         <h3>{t}</h3><p>Bars: operations from invoke to completion per worker (green ok, red fail, \
         orange indeterminate, drawn to the end). Shaded: nemesis faults. Hover for details.</p>\
         <div style=\"overflow-x:auto\">{svg}</div></body></html>\n",
        t = escape(title)
    ))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Draws latency.png and throughput.png with the embedded script; a warning (returned) when
/// python3 or matplotlib is missing or the script fails.
pub fn plots(dir: &Path) -> Option<String> {
    let script = dir.join("jepsen_report.py");
    if let Err(e) = std::fs::write(&script, PLOT_SCRIPT) {
        return Some(format!("cannot write {}: {e}", script.display()));
    }
    let out = Command::new("python3").arg(&script).arg(dir).output();
    match out {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "plots not drawn: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("python3 failed")
        )),
        Err(e) => Some(format!("plots not drawn: python3: {e}")),
    }
}
