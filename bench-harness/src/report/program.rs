//! The report's section on the workloads at a real program's scale (those marked
//! [`WorkloadInfo::program_scale`](crate::workloads::WorkloadInfo), such as `server` and
//! `thread-pool`): a chart per workload of RSS and live bytes against time, one colour per
//! allocator (plain builds and baselines, not the hardened twins), and a table of
//! fragmentation = peak RSS / peak live bytes. [`super`] calls [`draw_charts`] and
//! [`section`]; everything else about these workloads' report lives here.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use super::plot::allocator_color;
use crate::cell::{CellResult, Status};
use crate::registry;
use crate::results_io::ResultsFile;
use crate::workloads;

/// Peak live bytes below which peak RSS / peak live bytes mostly measures the idle footprint.
pub const MEANINGFUL_LIVE_BYTES: u64 = 64 << 20;

/// File names of this section's charts start with this.
const FILE_PREFIX: &str = "program_";

/// At most this many allocators per chart (one colour each).
const MAX_LINES: usize = 9;

const MIB: f64 = (1u64 << 20) as f64;

/// One line of a panel: (colour index, allocator, the cell whose series it draws).
type Line<'r> = (usize, &'r str, &'r CellResult);

/// One panel: a thread count and its lines.
type PanelLines<'r> = (usize, Vec<Line<'r>>);

/// The run's program-scale workloads, in run order.
fn program_workloads(results: &ResultsFile) -> Vec<&str> {
    results
        .config
        .workloads
        .iter()
        .filter(|w| workloads::find(w).is_some_and(|i| i.program_scale))
        .map(String::as_str)
        .collect()
}

/// The allocators charted and tabled: plain builds and baselines (the hardened twins' memory is
/// summed up in the hardened section), in the run's order, at most [`MAX_LINES`].
fn charted_allocators(results: &ResultsFile) -> Vec<&str> {
    results
        .config
        .allocators
        .iter()
        .filter(|a| !registry::is_twin(a))
        .map(String::as_str)
        .take(MAX_LINES)
        .collect()
}

/// The first successful repetition of (allocator, workload, threads) with a time series.
fn series_cell<'r>(results: &'r ResultsFile, a: &str, w: &str, t: usize) -> Option<&'r CellResult> {
    results.cells.iter().find(|c| {
        c.allocator == a
            && c.workload == w
            && c.threads == t
            && c.status == Status::Ok
            && !c.series.is_empty()
    })
}

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("chart: {e:?}")
}

/// Draws one chart per program-scale workload into `out`; returns (title, file name) pairs.
pub fn draw_charts(out: &Path, results: &ResultsFile) -> Result<Vec<(String, String)>, String> {
    let mut made = Vec::new();
    for w in program_workloads(results) {
        let allocs = charted_allocators(results);
        // (threads, [(colour index, allocator, cell)]) for the thread counts with data.
        let panels: Vec<PanelLines<'_>> = results
            .config
            .threads
            .iter()
            .map(|&t| {
                let lines = allocs
                    .iter()
                    .enumerate()
                    .filter_map(|(i, a)| series_cell(results, a, w, t).map(|c| (i, *a, c)))
                    .collect::<Vec<_>>();
                (t, lines)
            })
            .filter(|(_, lines)| !lines.is_empty())
            .collect();
        if panels.is_empty() {
            continue;
        }
        let file = format!("{FILE_PREFIX}{w}.svg");
        let title = format!("{w}: RSS (solid) and live requested bytes (dashed) over time");
        draw_one(&out.join(&file), &title, &allocs, &panels)?;
        made.push((title, file));
    }
    Ok(made)
}

/// One chart: a panel per thread count, stacked, with the legend in a strip to the right.
fn draw_one(
    path: &Path,
    title: &str,
    allocs: &[&str],
    panels: &[PanelLines<'_>],
) -> Result<(), String> {
    let (w, panel_h, legend_w) = (1000u32, 330u32, 190u32);
    let root = SVGBackend::new(path, (w, panel_h * panels.len() as u32 + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(err)?;
    let (plots, legend) = root.split_horizontally(w - legend_w);
    for ((t, lines), area) in panels
        .iter()
        .zip(plots.split_evenly((panels.len(), 1)).iter())
    {
        let (mut x1, mut y1) = (0.0f64, 0.0f64);
        for (_, _, c) in lines {
            for p in &c.series {
                x1 = x1.max(p.t_ms / 1e3);
                y1 = y1.max(p.rss_bytes.max(p.live_bytes) as f64 / MIB);
            }
        }
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("{t} thread{}", if *t == 1 { "" } else { "s" }),
                ("sans-serif", 15),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..x1.max(1e-3) * 1.02, 0f64..(y1 * 1.08).max(1.0))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("MiB")
            .x_labels(8)
            .y_labels(6)
            .draw()
            .map_err(err)?;
        for &(_, a, cell) in lines {
            let c = allocator_color(a);
            let rss = cell
                .series
                .iter()
                .map(|p| (p.t_ms / 1e3, p.rss_bytes as f64 / MIB));
            chart
                .draw_series(LineSeries::new(rss, c.stroke_width(2)))
                .map_err(err)?;
            let live: Vec<(f64, f64)> = cell
                .series
                .iter()
                .map(|p| (p.t_ms / 1e3, p.live_bytes as f64 / MIB))
                .collect();
            chart
                .draw_series(DashedLineSeries::new(live, 6, 4, c.stroke_width(1)))
                .map_err(err)?;
        }
    }
    // The legend, outside the data: one entry per allocator charted (colours as in the panels).
    let font = ("sans-serif", 13);
    let mut y = 50;
    for a in allocs {
        let c = allocator_color(a);
        legend
            .draw(&PathElement::new([(10, y), (40, y)], c.stroke_width(3)))
            .map_err(err)?;
        legend
            .draw(&Text::new(a.to_string(), (48, y - 7), font))
            .map_err(err)?;
        y += 22;
    }
    y += 12;
    for line in ["solid: RSS", "dashed: live bytes", "(first repetition)"] {
        legend
            .draw(&Text::new(line, (10, y - 7), font))
            .map_err(err)?;
        y += 18;
    }
    root.present().map_err(err)
}

/// The section's Markdown: explanation, fragmentation table, charts (from [`draw_charts`]).
pub fn section(results: &ResultsFile, charts: &[(String, String)]) -> String {
    let ws = program_workloads(results);
    let mut o = String::new();
    if ws.is_empty() {
        return o;
    }
    let allocs = charted_allocators(results);
    let _ = writeln!(
        o,
        "### Memory at a real program's scale\n\n{} run with hundreds of MiB live at full scale (in this run, live \
         sets scaled by {}), so idle RSS no longer hides what an allocator keeps. Each cell: fragmentation = peak RSS / peak live \
         requested bytes (1.00 would be perfect; idle RSS included), with peak RSS / peak live in MiB, medians over \
         repetitions. Values in italics have a peak live set under {} MiB, where the harness's idle footprint weighs in: \
         do not read them as fragmentation.\n",
        ws.iter().map(|w| format!("`{w}`")).collect::<Vec<_>>().join(" and "),
        results.config.size_factor.clamp(0.0, 1.0).powi(3),
        MEANINGFUL_LIVE_BYTES >> 20
    );
    let _ = writeln!(o, "| workload | threads | {} |", allocs.join(" | "));
    let _ = writeln!(o, "|---|---:|{}", "---:|".repeat(allocs.len()));
    for w in &ws {
        for &t in &results.config.threads {
            let cells: Vec<String> = allocs
                .iter()
                .map(|a| {
                    let row = results
                        .rows
                        .iter()
                        .find(|r| r.allocator == *a && r.workload == *w && r.threads == t);
                    match row {
                        Some(r) if r.status == Status::Ok && r.peak_live_bytes > 0 => {
                            let f = r.peak_rss_bytes as f64 / r.peak_live_bytes as f64;
                            let text = format!(
                                "{f:.2} ({:.0} / {:.0})",
                                r.peak_rss_bytes as f64 / MIB,
                                r.peak_live_bytes as f64 / MIB
                            );
                            if r.peak_live_bytes >= MEANINGFUL_LIVE_BYTES {
                                text
                            } else {
                                format!("_{text}_")
                            }
                        }
                        Some(r) if r.status != Status::Ok => r.status.as_str().into(),
                        _ => "-".into(),
                    }
                })
                .collect();
            let _ = writeln!(o, "| {w} | {t} | {} |", cells.join(" | "));
        }
    }
    let _ = writeln!(o);
    for (title, file) in charts.iter().filter(|(_, f)| f.starts_with(FILE_PREFIX)) {
        let _ = writeln!(o, "![{title}]({file})\n");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::SeriesPoint;
    use crate::results_io::{Row, RunConfig};

    fn results() -> ResultsFile {
        let series: Vec<SeriesPoint> = (0..50)
            .map(|i| SeriesPoint {
                t_ms: i as f64 * 5.0,
                rss_bytes: (100 + i) << 20,
                live_bytes: (90 + i) << 20,
            })
            .collect();
        let cell = |a: &str| CellResult {
            allocator: a.into(),
            workload: "server".into(),
            threads: 2,
            status: Status::Ok,
            series: series.clone(),
            ..CellResult::default()
        };
        let row = |a: &str, live: u64| Row {
            allocator: a.into(),
            workload: "server".into(),
            threads: 2,
            peak_rss_bytes: 150 << 20,
            peak_live_bytes: live,
            status: Status::Ok,
            ..Row::default()
        };
        ResultsFile {
            config: RunConfig {
                allocators: vec!["sizeclass".into(), "mimalloc".into()],
                workloads: vec!["larson".into(), "server".into()],
                threads: vec![2],
                ..RunConfig::default()
            },
            rows: vec![row("sizeclass", 100 << 20), row("mimalloc", 10 << 20)],
            cells: vec![cell("sizeclass"), cell("mimalloc")],
            ..ResultsFile::default()
        }
    }

    #[test]
    fn table_and_chart_for_program_scale_workloads_only() {
        let r = results();
        let dir = tempfile::tempdir().unwrap();
        let charts = draw_charts(dir.path(), &r).unwrap();
        assert_eq!(charts.len(), 1);
        let svg = std::fs::read_to_string(dir.path().join(&charts[0].1)).unwrap();
        assert!(svg.contains("sizeclass") && svg.contains("mimalloc"));
        let md = section(&r, &charts);
        assert!(
            md.contains("| server | 2 | 1.50 (150 / 100) | _15.00 (150 / 10)_ |"),
            "{md}"
        );
        assert!(!md.contains("| larson"));
        assert!(md.contains("program_server.svg"));
    }
}
