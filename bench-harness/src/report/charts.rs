//! Which charts the report has, drawn with [`super::plot`]: throughput relative to the
//! reference and absolute, per thread count (plain builds and baselines: at most nine series,
//! the reference itself being the line at 1); the hardened twins' throughput relative to their
//! plain builds, on charts of their own; thread scaling; latency percentiles; RSS over time in
//! the workloads that sample it (fragmentation); and the program-scale workloads' charts ([`super::program`]).

use std::path::Path;

use super::plot::{grouped_bars, line_panels, Panel, Series};
use super::tables::{threads_label, View};
use super::twins::hardened_ratios;
use crate::cell::Status;
use crate::results_io::{ResultsFile, Row};
use crate::summary::geomean;

/// (title, file name) of each chart drawn.
pub type Made = Vec<(String, String)>;

/// Draws the charts into `out`; returns (title, file name) pairs.
pub fn draw(out: &Path, results: &ResultsFile) -> Result<Made, String> {
    let v = View::new(results);
    let mut made = Vec::new();
    throughput(out, &v, &mut made)?;
    hardened(out, &v, &mut made)?;
    scaling(out, &v, &mut made)?;
    latency(out, &v, &mut made)?;
    sampled(out, &v, &mut made)?;
    made.extend(super::program::draw_charts(out, results)?);
    Ok(made)
}

fn throughput(out: &Path, v: &View<'_>, made: &mut Made) -> Result<(), String> {
    let groups: Vec<String> = v.workloads().to_vec();
    for &t in v.threads() {
        let ratios: Vec<Series> = v
            .plain
            .iter()
            .filter(|a| **a != v.reference)
            .map(|a| {
                (
                    a.to_string(),
                    groups.iter().map(|w| v.ratio(a, w, t)).collect(),
                )
            })
            .collect();
        let file = format!("ratio_t{t}.svg");
        let title = format!(
            "Throughput relative to {} (the line at 1), {}",
            v.reference,
            threads_label(t)
        );
        grouped_bars(
            &out.join(&file),
            &title,
            "ratio (log scale)",
            &groups,
            &ratios,
            Some(1.0),
            true,
        )?;
        made.push((title, file));
        let tput: Vec<Series> = v
            .plain
            .iter()
            .map(|a| {
                (
                    a.to_string(),
                    groups
                        .iter()
                        .map(|w| v.ok(a, w, t).map(|r| r.ops_per_sec / 1e6))
                        .collect(),
                )
            })
            .collect();
        let file = format!("throughput_t{t}.svg");
        let title = format!("Throughput per workload, {}", threads_label(t));
        grouped_bars(
            &out.join(&file),
            &title,
            "million ops/s (log scale)",
            &groups,
            &tput,
            None,
            true,
        )?;
        made.push((title, file));
    }
    Ok(())
}

/// The hardened twins' throughput / their plain builds', per workload and thread count.
fn hardened(out: &Path, v: &View<'_>, made: &mut Made) -> Result<(), String> {
    let pairs = v.hardened_pairs();
    if pairs.is_empty() {
        return Ok(());
    }
    let groups: Vec<String> = v.workloads().to_vec();
    for &t in v.threads() {
        let series: Vec<Series> = pairs
            .iter()
            .map(|(h, b)| {
                let r = hardened_ratios(v, h, b, t);
                (h.to_string(), r.iter().map(|x| x.1).collect())
            })
            .collect();
        let file = format!("hardened_t{t}.svg");
        let title = format!(
            "Hardened twins: throughput / the plain build's, {}",
            threads_label(t)
        );
        grouped_bars(
            &out.join(&file),
            &title,
            "ratio (log scale)",
            &groups,
            &series,
            Some(1.0),
            true,
        )?;
        made.push((title, file));
    }
    Ok(())
}

/// Thread scaling: one panel per workload.
fn scaling(out: &Path, v: &View<'_>, made: &mut Made) -> Result<(), String> {
    if v.threads().len() < 2 {
        return Ok(());
    }
    let panels: Vec<Panel> = v
        .workloads()
        .iter()
        .map(|w| Panel {
            title: w.clone(),
            lines: v
                .plain
                .iter()
                .map(|a| {
                    let pts = v
                        .threads()
                        .iter()
                        .filter_map(|&t| v.ok(a, w, t).map(|r| (t as f64, r.ops_per_sec / 1e6)))
                        .collect();
                    (a.to_string(), pts)
                })
                .collect(),
        })
        .collect();
    let file = "scaling.svg".to_string();
    let title = "Thread scaling (million ops/s by threads)".to_string();
    line_panels(&out.join(&file), &title, "threads", "Mops/s", &panels, 4)?;
    made.push((title, file));
    Ok(())
}

/// Per thread count, per allocator the geometric mean over workloads of p50 / p99 / p99.9.
fn latency(out: &Path, v: &View<'_>, made: &mut Made) -> Result<(), String> {
    let allocs: Vec<String> = v.plain.iter().map(|a| a.to_string()).collect();
    for &t in v.threads() {
        let pct = |get: fn(&Row) -> f64| -> Vec<Option<f64>> {
            allocs
                .iter()
                .map(|a| {
                    let xs: Vec<f64> = v
                        .workloads()
                        .iter()
                        .filter_map(|w| v.ok(a, w, t).map(get))
                        .collect();
                    geomean(&xs)
                })
                .collect()
        };
        let series: Vec<Series> = vec![
            ("p50".into(), pct(|r| r.p50_ns)),
            ("p99".into(), pct(|r| r.p99_ns)),
            ("p99.9".into(), pct(|r| r.p999_ns)),
        ];
        let file = format!("latency_t{t}.svg");
        let title = format!(
            "Latency percentiles (geometric mean over workloads), {}",
            threads_label(t)
        );
        grouped_bars(
            &out.join(&file),
            &title,
            "ns (log scale)",
            &allocs,
            &series,
            None,
            false,
        )?;
        made.push((title, file));
    }
    Ok(())
}

/// The first successful repetition of (allocator, workload, threads) with a time series.
fn series_of<'r>(v: &View<'r>, a: &str, w: &str, t: usize) -> Option<&'r crate::cell::CellResult> {
    v.r.cells.iter().find(|c| {
        c.allocator == a
            && c.workload == w
            && c.threads == t
            && c.status == Status::Ok
            && !c.series.is_empty()
    })
}

/// RSS over time in the workloads that sample it and are not at a program's scale (those have
/// their own charts): `<workload>_rss.svg`, first repetition of each allocator, with the
/// reference's live bytes as the floor every line should be compared with.
fn sampled(out: &Path, v: &View<'_>, made: &mut Made) -> Result<(), String> {
    for w in v.workloads().iter().filter(|w| {
        crate::workloads::find(w).is_some_and(|i| i.samples_over_time && !i.program_scale)
    }) {
        rss_over_time(out, v, w, made)?;
    }
    Ok(())
}

fn rss_over_time(out: &Path, v: &View<'_>, w: &str, made: &mut Made) -> Result<(), String> {
    const MIB: f64 = (1u64 << 20) as f64;
    let panels: Vec<Panel> = v
        .threads()
        .iter()
        .map(|&t| {
            let mut lines: Vec<(String, Vec<(f64, f64)>)> = v
                .plain
                .iter()
                .filter_map(|a| {
                    let c = series_of(v, a, w, t)?;
                    let pts = c
                        .series
                        .iter()
                        .map(|p| (p.t_ms, p.rss_bytes as f64 / MIB))
                        .collect();
                    Some((a.to_string(), pts))
                })
                .collect();
            if let Some(c) = series_of(v, &v.reference, w, t) {
                let pts = c
                    .series
                    .iter()
                    .map(|p| (p.t_ms, p.live_bytes as f64 / MIB))
                    .collect();
                lines.push((format!("live bytes ({} run)", v.reference), pts));
            }
            Panel {
                title: format!("{w}, {}: RSS MiB over ms", threads_label(t)),
                lines,
            }
        })
        .filter(|p| !p.lines.is_empty())
        .collect();
    if !panels.is_empty() {
        let file = format!("{w}_rss.svg");
        let title = format!("RSS (and live requested bytes, dashed) over time, {w} workload");
        line_panels(&out.join(&file), &title, "ms", "RSS MiB", &panels, 2)?;
        made.push((title, file));
    }
    Ok(())
}
