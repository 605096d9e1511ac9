//! The twins' tables: each hardened build over its plain twin ("Cost of the hardened mode") and
//! each plain build over its unsampled twin ("Cost of sampling").

use std::fmt::Write as _;

use super::tables::{fmt_ratio, table_header, threads_label, View};
use crate::registry;
use crate::summary::{geomean, ratio};

/// Per (twin, plain) pair and thread count: the hardened / plain ratios of throughput and of
/// peak RSS per workload.
pub fn hardened_ratios(
    v: &View<'_>,
    h: &str,
    b: &str,
    t: usize,
) -> Vec<(String, Option<f64>, Option<f64>)> {
    v.workloads()
        .iter()
        .map(|w| match (v.ok(h, w, t), v.ok(b, w, t)) {
            (Some(hr), Some(br)) => (
                w.clone(),
                ratio(hr.ops_per_sec, br.ops_per_sec),
                ratio(hr.peak_rss_bytes as f64, br.peak_rss_bytes as f64),
            ),
            _ => (w.clone(), None, None),
        })
        .collect()
}

/// The cost of the `hardened` feature: each `<name>-hardened` column's throughput divided by its
/// plain twin's, per workload, with geometric means of throughput and of peak RSS (only when the
/// run had such columns); mimalloc's twin is its secure mode, the yardstick.
pub fn hardened_cost(v: &View<'_>, o: &mut String) {
    let pairs = v.hardened_pairs();
    if pairs.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "## Cost of the hardened mode\n\nThroughput of each allocator built with `--features hardened` \
(heap-misuse checks) divided by the plain build's, same workload, threads and run (below 1: slower); \
the last row is the geometric mean of peak RSS hardened / plain (above 1: more memory). \
mimalloc's column is its secure mode (`MI_SECURE=4`: encoded free lists, double-free checks, padding \
checked on free, guard pages around its metadata), built into the same hardened harness binary. \
Every twin's own numbers are in `results.csv`.\n"
    );
    let cols: Vec<String> = pairs
        .iter()
        .map(|(_, b)| {
            if *b == registry::HARDENED_BASELINE {
                format!("{b} secure / plain")
            } else {
                format!("{b} hardened / plain")
            }
        })
        .collect();
    let cols: Vec<&str> = cols.iter().map(String::as_str).collect();
    ratio_tables(v, o, "Hardened / plain", &cols, &pairs, fmt_ratio, true);
}

/// The "Cost of sampling" section (runs with `--sampling-cost`): each plain build's throughput
/// (heap profiler sampling) over its `-unsampled` twin's (sampling off), per workload, with the
/// geometric mean; nothing if the run has no unsampled twins.
pub fn sampling_cost(v: &View<'_>, o: &mut String) {
    let pairs = v.unsampled_pairs();
    if pairs.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "## Cost of sampling

Throughput of each of our allocators with the heap profiler sampling (at the rate of the harness's environment, `{}`, else the build's default) divided by the same binary's with sampling off (`{}=0` in the cell's process), same workload, threads and run, cells interleaved (below 1: sampling costs throughput). The twins' own numbers are in `results.csv` as `<name>{}`.\n",
        registry::PROFILE_RATE_ENV,
        registry::PROFILE_RATE_ENV,
        registry::UNSAMPLED_SUFFIX
    );
    let cols: Vec<String> = pairs
        .iter()
        .map(|(_, b)| format!("{b} sampled / unsampled"))
        .collect();
    let cols: Vec<&str> = cols.iter().map(String::as_str).collect();
    // Plain over its unsampled twin.
    let ratios: Vec<_> = pairs.iter().map(|&(u, b)| (b, u)).collect();
    ratio_tables(
        v,
        o,
        "Sampled / unsampled",
        &cols,
        &ratios,
        fmt_ratio_3,
        false,
    );
}

/// One table per thread count, titled `title`, of `num / den` throughput per workload for each
/// `(num, den)` pair of `ratios` (one column each, headed by `cols`), formatted by `fmt`, with a
/// row of geometric means, and of peak RSS too if `rss`.
fn ratio_tables(
    v: &View<'_>,
    o: &mut String,
    title: &str,
    cols: &[&str],
    ratios: &[(&str, &str)],
    fmt: fn(f64) -> String,
    rss: bool,
) {
    for &t in v.threads() {
        let _ = writeln!(o, "### {title}, {}\n", threads_label(t));
        table_header(o, "workload", cols);
        let per: Vec<_> = ratios
            .iter()
            .map(|&(num, den)| hardened_ratios(v, num, den, t))
            .collect();
        for (i, w) in v.workloads().iter().enumerate() {
            let cells: Vec<String> = per.iter().map(|p| p[i].1.map_or("-".into(), fmt)).collect();
            let _ = writeln!(o, "| {w} | {} |", cells.join(" | "));
        }
        let rows: &[(&str, usize)] = if rss {
            &[("throughput", 1), ("peak RSS", 2)]
        } else {
            &[("throughput", 1)]
        };
        for &(label, pick) in rows {
            let gm: Vec<String> = per
                .iter()
                .map(|p| {
                    let xs: Vec<f64> = p
                        .iter()
                        .filter_map(|r| if pick == 1 { r.1 } else { r.2 })
                        .collect();
                    match geomean(&xs) {
                        Some(g) => format!("**{}** ({})", fmt(g), xs.len()),
                        None => "-".into(),
                    }
                })
                .collect();
            let _ = writeln!(o, "| **geometric mean, {label}** | {} |", gm.join(" | "));
        }
        let _ = writeln!(o);
    }
}

/// A ratio near 1 with three decimals (a 1% cost must show).
fn fmt_ratio_3(x: f64) -> String {
    format!("{x:.3}")
}
