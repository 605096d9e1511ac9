//! The short reading generated from the data, placed under the headline (whose table it does
//! not repeat): which allocator wins which workloads, where each of this suite's allocators trails the
//! reference most (with what that workload stresses, the likely why), the C programs they lose,
//! memory at a real program's scale, the hardened mode's cost and thread scaling. Only this
//! run's numbers: no history.

use std::fmt::Write as _;

use super::tables::{fmt_ratio, threads_label, View};
use crate::c_programs::{self, CProgramsFile};
use crate::cell::Status;
use crate::registry::{self, Family};
use crate::summary::{geomean, ratio};
use crate::workloads;

/// A workload or program trails the reference when its ratio is worse than this (0.8x the
/// throughput, 1.25x the time).
const TRAILS: f64 = 0.8;

/// Whether `a` is one of this suite's allocators.
fn ours(a: &str) -> bool {
    registry::find(a).is_some_and(|e| e.family == Family::Ours)
}

/// `a x.xx` for each (name, value), in the order given.
fn pairs(xs: &[(&str, f64)]) -> String {
    xs.iter()
        .map(|(a, g)| format!("{a} {}", fmt_ratio(*g)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The generated reading (Markdown bullets).
pub fn reading(v: &View<'_>, c: Option<&CProgramsFile>) -> String {
    let mut o = String::new();
    overall(c, &mut o);
    winners(v, &mut o);
    trails(v, c, &mut o);
    program_memory(v, &mut o);
    hardened(v, &mut o);
    scaling(v, &mut o);
    o
}

/// Who ran only part of the C programs (the headline's counts say how many).
fn overall(c: Option<&CProgramsFile>, o: &mut String) {
    let Some(g) = c.and_then(c_programs::report::geomeans) else {
        return;
    };
    let full = g.iter().map(|x| x.wall.1).max().unwrap_or(0);
    let partial: Vec<String> = g
        .iter()
        .filter(|x| x.wall.1 < full)
        .map(|x| format!("{} ({} of {full})", x.allocator, x.wall.1))
        .collect();
    if !partial.is_empty() {
        let _ = writeln!(
            o,
            "- **Ran only some C programs** (the others failed; reasons in the C section): {}.",
            partial.join(", ")
        );
    }
}

/// Per thread count: which allocator (plain builds and baselines) is fastest on which workloads.
fn winners(v: &View<'_>, o: &mut String) {
    for &t in v.threads() {
        let mut by: Vec<(&str, Vec<&str>)> = Vec::new();
        for w in v.workloads() {
            let best = v
                .plain
                .iter()
                .filter_map(|a| v.ok(a, w, t).map(|r| (*a, r.ops_per_sec)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((a, _)) = best {
                match by.iter_mut().find(|(x, _)| *x == a) {
                    Some((_, ws)) => ws.push(w),
                    None => by.push((a, vec![w])),
                }
            }
        }
        by.sort_by_key(|b| std::cmp::Reverse(b.1.len()));
        let text: Vec<String> = by
            .iter()
            .map(|(a, ws)| format!("{a} on {} ({})", ws.len(), ws.join(", ")))
            .collect();
        if !text.is_empty() {
            let _ = writeln!(
                o,
                "- **Fastest per workload, {}:** {}.",
                threads_label(t),
                text.join("; ")
            );
        }
    }
}

/// For each of ours: the workloads (with what they stress) and C programs where it trails the
/// reference most.
fn trails(v: &View<'_>, c: Option<&CProgramsFile>, o: &mut String) {
    let mut lines = Vec::new();
    for a in v.plain.iter().filter(|a| ours(a)) {
        // Geometric mean over the thread counts of each workload's ratio.
        let mut worst: Vec<(&str, f64)> = v
            .workloads()
            .iter()
            .filter_map(|w| {
                let xs: Vec<f64> = v
                    .threads()
                    .iter()
                    .filter_map(|&t| v.ratio(a, w, t))
                    .collect();
                Some((w.as_str(), geomean(&xs)?))
            })
            .filter(|(_, g)| *g < TRAILS)
            .collect();
        worst.sort_by(|x, y| x.1.total_cmp(&y.1));
        let rust: Vec<String> = worst
            .iter()
            .take(3)
            .map(|(w, g)| {
                let why = workloads::find(w).map_or("", |i| i.stresses);
                format!("{w} {} ({why})", fmt_ratio(*g))
            })
            .collect();
        let mut slow: Vec<(String, f64)> = c
            .map(|f| c_programs::report::program_ratios(f, a))
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, t, _)| *t > 1.0 / TRAILS)
            .map(|(p, t, _)| (p, t))
            .collect();
        slow.sort_by(|x, y| y.1.total_cmp(&x.1));
        let cprog: Vec<String> = slow
            .iter()
            .take(3)
            .map(|(p, t)| format!("{p} {}x the time", fmt_ratio(*t)))
            .collect();
        if rust.is_empty() && cprog.is_empty() {
            continue;
        }
        let mut parts = Vec::new();
        if !rust.is_empty() {
            parts.push(format!("Rust throughput {}", rust.join(", ")));
        }
        if !cprog.is_empty() {
            parts.push(format!("C programs {}", cprog.join(", ")));
        }
        lines.push(format!("  - {a}: {}.", parts.join("; ")));
    }
    if !lines.is_empty() {
        let _ = writeln!(
            o,
            "- **Where ours trail {}** (below {TRAILS}x its throughput, geometric mean over the thread counts, or above {}x its time; at most three each, worst first):",
            v.reference,
            1.0 / TRAILS
        );
        for l in lines {
            let _ = writeln!(o, "{l}");
        }
    }
}

/// At a real program's scale: peak RSS / peak live at the largest thread count, least first.
fn program_memory(v: &View<'_>, o: &mut String) {
    let Some(&t) = v.threads().last() else {
        return;
    };
    for w in v
        .workloads()
        .iter()
        .filter(|w| workloads::find(w).is_some_and(|i| i.program_scale))
    {
        let mut xs: Vec<(&str, f64)> = v
            .plain
            .iter()
            .filter_map(|a| {
                let r = v.ok(a, w, t)?;
                Some((
                    *a,
                    ratio(r.peak_rss_bytes as f64, r.peak_live_bytes as f64)?,
                ))
            })
            .collect();
        xs.sort_by(|a, b| a.1.total_cmp(&b.1));
        let kept: Vec<(&str, f64)> = v
            .plain
            .iter()
            .filter_map(|a| {
                let r = v.ok(a, w, t)?;
                let kept = r.rss_after_free_bytes.saturating_sub(r.idle_rss_bytes);
                Some((*a, ratio(kept as f64, r.peak_live_bytes as f64)?))
            })
            .filter(|(_, k)| *k > 0.25)
            .collect();
        if xs.is_empty() {
            continue;
        }
        let _ = write!(
            o,
            "- **Memory, {w}, {}** (peak RSS / peak live bytes, least first): {}.",
            threads_label(t),
            pairs(&xs)
        );
        if !kept.is_empty() {
            let _ = write!(
                o,
                " Still resident after every block was freed, as a share of the peak live bytes: {}.",
                pairs(&kept)
            );
        }
        let _ = writeln!(o);
    }
}

/// The hardened twins' throughput / their plain builds', one line.
fn hardened(v: &View<'_>, o: &mut String) {
    let text: Vec<String> = v
        .hardened_pairs()
        .iter()
        .filter_map(|(h, b)| {
            let per: Vec<String> = v
                .threads()
                .iter()
                .map(|&t| {
                    let xs: Vec<f64> = super::twins::hardened_ratios(v, h, b, t)
                        .iter()
                        .filter_map(|r| r.1)
                        .collect();
                    geomean(&xs).map_or("-".into(), fmt_ratio)
                })
                .collect();
            (per.iter().any(|p| p != "-")).then(|| format!("{h} {}", per.join(" / ")))
        })
        .collect();
    if !text.is_empty() {
        let ts: Vec<String> = v.threads().iter().map(|t| t.to_string()).collect();
        let _ = writeln!(
            o,
            "- **Hardened / plain throughput** (geometric mean, {} threads): {}.",
            ts.join(" / "),
            text.join(", ")
        );
    }
}

/// Throughput at the largest thread count / at the smallest, one line.
fn scaling(v: &View<'_>, o: &mut String) {
    let (Some(&t0), Some(&t1)) = (v.threads().first(), v.threads().last()) else {
        return;
    };
    if t1 <= t0 {
        return;
    }
    let mut xs: Vec<(&str, f64)> = v
        .plain
        .iter()
        .filter_map(|a| {
            let s: Vec<f64> = v
                .workloads()
                .iter()
                .filter_map(|w| {
                    let hi = v.ok(a, w, t1)?;
                    let lo = v.ok(a, w, t0)?;
                    (hi.status == Status::Ok).then(|| ratio(hi.ops_per_sec, lo.ops_per_sec))?
                })
                .collect();
            Some((*a, geomean(&s)?))
        })
        .collect();
    xs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let _ = writeln!(
        o,
        "- **Scaling from {t0} to {t1} threads** (throughput at {t1} / at {t0}, geometric mean; {:.1} would be linear): {}.",
        t1 as f64 / t0 as f64,
        pairs(&xs)
    );
}
