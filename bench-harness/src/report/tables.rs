//! The report's tables: the headline (each plain build's geometric-mean ratios to mimalloc,
//! Rust workloads and C programs side by side), the detail tables (throughput, latency and
//! memory per workload for the plain builds and baselines), the hardened twins' cost, and the
//! skipped or failed cells collapsed to one line per reason. All read a [`View`] of the results.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::c_programs::{self, CProgramsFile};
use crate::cell::Status;
use crate::registry::{self, REFERENCE};
use crate::results_io::{ResultsFile, Row};
use crate::summary::{geomean, ratio};

/// Lookup over the rows of a results file.
pub struct View<'a> {
    /// The results.
    pub r: &'a ResultsFile,
    /// The allocator ratios are taken against (mimalloc, or the first if it did not run).
    pub reference: String,
    /// The plain builds and baselines of the run, in its order (no hardened twins).
    pub plain: Vec<&'a str>,
}

impl<'a> View<'a> {
    /// A view of `r`.
    pub fn new(r: &'a ResultsFile) -> Self {
        let reference = if r.config.allocators.iter().any(|a| a == REFERENCE) {
            REFERENCE.to_string()
        } else {
            r.config.allocators.first().cloned().unwrap_or_default()
        };
        let plain = r
            .config
            .allocators
            .iter()
            .filter(|a| !registry::is_twin(a))
            .map(String::as_str)
            .collect();
        View {
            r,
            reference,
            plain,
        }
    }

    /// The row of (allocator, workload, threads), whatever its status.
    pub fn row(&self, a: &str, w: &str, t: usize) -> Option<&'a Row> {
        self.r
            .rows
            .iter()
            .find(|x| x.allocator == a && x.workload == w && x.threads == t)
    }

    /// The row if it was measured.
    pub fn ok(&self, a: &str, w: &str, t: usize) -> Option<&'a Row> {
        self.row(a, w, t).filter(|x| x.status == Status::Ok)
    }

    /// Throughput ratio of `a` to the reference.
    pub fn ratio(&self, a: &str, w: &str, t: usize) -> Option<f64> {
        ratio(
            self.ok(a, w, t)?.ops_per_sec,
            self.ok(&self.reference, w, t)?.ops_per_sec,
        )
    }

    /// Geometric mean of the ratios of `a` and the number of workloads behind it.
    pub fn geomean_ratio(&self, a: &str, t: usize) -> (Option<f64>, usize) {
        let v: Vec<f64> = self
            .workloads()
            .iter()
            .filter_map(|w| self.ratio(a, w, t))
            .collect();
        (geomean(&v), v.len())
    }

    /// Every allocator of the run.
    pub fn allocators(&self) -> &'a [String] {
        &self.r.config.allocators
    }
    /// The workloads, in run order.
    pub fn workloads(&self) -> &'a [String] {
        &self.r.config.workloads
    }
    /// The thread counts.
    pub fn threads(&self) -> &'a [usize] {
        &self.r.config.threads
    }

    /// (hardened twin, its plain build) for every twin whose plain build also ran.
    pub fn hardened_pairs(&self) -> Vec<(&'a str, &'a str)> {
        self.twin_pairs(registry::split_hardened)
    }

    /// (unsampled twin, plain build) for each `<name>-unsampled` of the run whose plain build ran.
    pub fn unsampled_pairs(&self) -> Vec<(&'a str, &'a str)> {
        self.twin_pairs(registry::split_unsampled)
    }

    /// (twin, plain build) for every allocator of the run that `split` names a twin of (giving
    /// its plain build's name) and whose plain build ran.
    fn twin_pairs(&self, split: fn(&str) -> (&str, bool)) -> Vec<(&'a str, &'a str)> {
        self.allocators()
            .iter()
            .filter_map(|t| {
                let (base, twin) = split(t);
                let plain = self.plain.iter().find(|p| **p == base)?;
                twin.then_some((t.as_str(), *plain))
            })
            .collect()
    }
}

/// "1 thread" or "n threads".
pub fn threads_label(t: usize) -> String {
    format!("{t} thread{}", if t == 1 { "" } else { "s" })
}

/// A ratio with two decimals, or three significant digits when small.
pub fn fmt_ratio(x: f64) -> String {
    if x >= 0.1 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// Bytes as MiB with one decimal.
pub fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / (1 << 20) as f64)
}

/// A non-ok cell's short mark.
fn mark(row: Option<&Row>) -> String {
    match row.map(|r| r.status) {
        Some(Status::Skipped) => "skipped".into(),
        Some(Status::Failed) => "failed".into(),
        _ => "-".into(),
    }
}

pub(super) fn table_header(out: &mut String, first: &str, cols: &[&str]) {
    let _ = writeln!(out, "| {first} | {} |", cols.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(cols.len()));
}

/// A table with one row per workload and one column per allocator of `cols`.
fn workload_table(
    v: &View<'_>,
    cols: &[&str],
    t: usize,
    out: &mut String,
    cell: impl Fn(&Row) -> String,
) {
    table_header(out, "workload", cols);
    for w in v.workloads() {
        let cells: Vec<String> = cols
            .iter()
            .map(|a| match v.ok(a, w, t) {
                Some(r) => cell(r),
                None => mark(v.row(a, w, t)),
            })
            .collect();
        let _ = writeln!(out, "| {w} | {} |", cells.join(" | "));
    }
}

/// A geometric mean and how many values are behind it.
type Geomean = (Option<f64>, usize);

/// `g (n)`, or `-`.
fn gm_cell(g: Option<f64>, n: usize) -> String {
    g.map_or("-".into(), |g| format!("{} ({n})", fmt_ratio(g)))
}

/// The headline table: one row per plain build or baseline; columns: the Rust workloads'
/// throughput ratio to the reference per thread count, then the C programs' wall time and peak
/// RSS ratios (geometric means; the count behind each in brackets; the best of a column in
/// bold among the allocators that ran everything in it).
pub fn headline(v: &View<'_>, c: Option<&CProgramsFile>, o: &mut String) {
    let c_means = c.and_then(c_programs::report::geomeans);
    let mut cols: Vec<String> = v
        .threads()
        .iter()
        .map(|&t| format!("Rust throughput, {}", threads_label(t)))
        .collect();
    if c_means.is_some() {
        cols.push("C programs: wall time".into());
        cols.push("C programs: peak RSS".into());
    }
    // One column of (value, count) per allocator of `v.plain`, and whether higher is better.
    let mut data: Vec<(Vec<Geomean>, bool)> = v
        .threads()
        .iter()
        .map(|&t| {
            (
                v.plain.iter().map(|a| v.geomean_ratio(a, t)).collect(),
                true,
            )
        })
        .collect();
    if let Some(m) = &c_means {
        for pick in [0, 1] {
            let col = v
                .plain
                .iter()
                .map(|a| {
                    m.iter().find(|g| g.allocator == *a).map_or((None, 0), |g| {
                        if pick == 0 {
                            g.wall
                        } else {
                            g.rss
                        }
                    })
                })
                .collect();
            data.push((col, false));
        }
    }
    let best: Vec<Option<usize>> = data
        .iter()
        .map(|(col, higher)| {
            let full = col.iter().map(|(_, n)| *n).max().unwrap_or(0);
            col.iter()
                .enumerate()
                .filter_map(|(i, (g, n))| Some((i, (*g)?)).filter(|_| *n == full && full > 0))
                .max_by(|a, b| {
                    let ord = a.1.total_cmp(&b.1);
                    if *higher {
                        ord
                    } else {
                        ord.reverse()
                    }
                })
                .map(|(i, _)| i)
        })
        .collect();
    let col_refs: Vec<&str> = cols.iter().map(String::as_str).collect();
    table_header(o, "allocator", &col_refs);
    for (i, a) in v.plain.iter().enumerate() {
        let cells: Vec<String> = data
            .iter()
            .zip(&best)
            .map(|((col, _), b)| {
                let (g, n) = col[i];
                let text = gm_cell(g, n);
                if *b == Some(i) {
                    format!("**{text}**")
                } else {
                    text
                }
            })
            .collect();
        let _ = writeln!(o, "| {a} | {} |", cells.join(" | "));
    }
    let _ = writeln!(o);
}

/// Throughput per workload: the ratio to the reference, then millions of operations per second
/// with the spread, per thread count (plain builds and baselines).
pub fn throughput(v: &View<'_>, o: &mut String) {
    for &t in v.threads() {
        let _ = writeln!(
            o,
            "### Throughput relative to {}, {}\n",
            v.reference,
            threads_label(t)
        );
        workload_table(v, &v.plain, t, o, |r| {
            v.ratio(&r.allocator, &r.workload, t)
                .map_or("-".into(), fmt_ratio)
        });
        let _ = writeln!(o);
    }
    let _ = writeln!(
        o,
        "Millions of allocator operations (alloc, free, realloc) per second: median [min-max over repetitions].\n"
    );
    for &t in v.threads() {
        let _ = writeln!(o, "### Throughput, {}: Mops/s\n", threads_label(t));
        workload_table(v, &v.plain, t, o, |r| {
            format!(
                "{:.2} [{:.2}-{:.2}]",
                r.ops_per_sec / 1e6,
                r.ops_per_sec_min / 1e6,
                r.ops_per_sec_max / 1e6
            )
        });
        let _ = writeln!(o);
    }
}

/// Latency percentiles per workload (plain builds and baselines).
pub fn latency(v: &View<'_>, o: &mut String) {
    let resolution =
        v.r.cells
            .iter()
            .map(|c| c.timer_resolution_ns)
            .fold(0.0f64, f64::max);
    let _ = writeln!(
        o,
        "p50 / p99 / p99.9 in nanoseconds, from one operation in {} timed with the cycle counter \
         (timer overhead subtracted). The counter's effective resolution on this machine was {:.1} ns: latencies below \
         that are not resolved, so equal small p50s mean \"at most one tick\", not equal speed.\n",
        crate::worker::SAMPLE_EVERY,
        resolution
    );
    for &t in v.threads() {
        let _ = writeln!(o, "### Latency, {}\n", threads_label(t));
        workload_table(v, &v.plain, t, o, |r| {
            format!("{:.0} / {:.0} / {:.0}", r.p50_ns, r.p99_ns, r.p999_ns)
        });
        let _ = writeln!(o);
    }
}

/// Peak RSS, fragmentation and RSS kept after free per workload (plain builds and baselines).
pub fn memory(v: &View<'_>, o: &mut String) {
    let _ = writeln!(
        o,
        "Peak RSS is the process's `VmHWM` (MiB), which includes the harness's own idle footprint \
         (its median is given per table). Fragmentation = (peak RSS - idle RSS) / peak live requested bytes: 1.0 would be \
         a perfect allocator; small live sets make it large. RSS after free is `VmRSS` once every block was freed, minus \
         the idle RSS (MiB): memory the allocator kept.\n"
    );
    for &t in v.threads() {
        let idle: Vec<f64> =
            v.r.rows
                .iter()
                .filter(|r| r.threads == t && r.status == Status::Ok)
                .map(|r| r.idle_rss_bytes as f64)
                .collect();
        let idle = crate::summary::median(&idle) as u64;
        let tl = threads_label(t);
        let _ = writeln!(o, "### Peak RSS, {tl}: MiB (idle RSS {} MiB)\n", mib(idle));
        workload_table(v, &v.plain, t, o, |r| mib(r.peak_rss_bytes));
        let _ = writeln!(o, "\n### Fragmentation, {tl}\n");
        workload_table(v, &v.plain, t, o, |r| format!("{:.2}", r.fragmentation));
        let _ = writeln!(o, "\n### RSS kept after free, {tl}: MiB\n");
        workload_table(v, &v.plain, t, o, |r| {
            mib(r.rss_after_free_bytes.saturating_sub(r.idle_rss_bytes))
        });
        let _ = writeln!(o);
    }
}

/// A sorted list joined with ", ".
fn list<T: Ord + ToString>(xs: impl IntoIterator<Item = T>) -> String {
    xs.into_iter()
        .collect::<BTreeSet<T>>()
        .into_iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Skipped and failed cells, and notes, collapsed: one line per (status, reason, allocator
/// and its twin), the workload's and allocator's names in the reason replaced by "the
/// workload" and "the allocator", naming the workloads and thread counts it covers.
pub fn skipped(v: &View<'_>, o: &mut String) {
    let _ = writeln!(o, "## Skipped and failed cells, and notes\n");
    // (status, reason template, base allocator) -> (allocators, [(workload, threads)]).
    type Group<'r> = (BTreeSet<&'r str>, Vec<(&'r str, BTreeSet<usize>)>);
    let mut groups: Vec<((Status, String, &str), Group<'_>)> = Vec::new();
    for r in &v.r.rows {
        if r.status == Status::Ok && r.skip_reason.is_empty() {
            continue;
        }
        let base = registry::base_name(&r.allocator);
        let template = r
            .skip_reason
            .replace(&format!(" {} ", r.workload), " the workload ")
            .replace(&format!("{base} "), "the allocator ");
        let key = (r.status, template, base);
        let i = match groups.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                groups.push((key, Default::default()));
                groups.len() - 1
            }
        };
        let (allocs, works) = &mut groups[i].1;
        allocs.insert(r.allocator.as_str());
        match works.iter_mut().find(|(w, _)| *w == r.workload) {
            Some((_, ts)) => {
                ts.insert(r.threads);
            }
            None => works.push((r.workload.as_str(), BTreeSet::from([r.threads]))),
        }
    }
    if groups.is_empty() {
        let _ = writeln!(o, "None.\n");
        return;
    }
    for ((status, reason, _), (allocs, works)) in groups {
        // One thread list for all workloads if they share it, else one per workload.
        let same = works.windows(2).all(|p| p[0].1 == p[1].1);
        let places = if same {
            format!(
                "{} ({} thread(s))",
                works.iter().map(|(w, _)| *w).collect::<Vec<_>>().join(", "),
                list(works[0].1.iter().copied())
            )
        } else {
            works
                .iter()
                .map(|(w, ts)| format!("{w} ({} thread(s))", list(ts.iter().copied())))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let label = match status {
            Status::Ok => "NOTE".to_string(),
            s => s.as_str().to_uppercase(),
        };
        let _ = writeln!(
            o,
            "- **{label}** {} on {places}: {}.",
            list(allocs),
            reason.trim_end_matches('.')
        );
    }
    let _ = writeln!(o);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::results_io::RunConfig;

    fn row(a: &str, w: &str, t: usize, ops: f64) -> Row {
        Row {
            allocator: a.into(),
            workload: w.into(),
            threads: t,
            ops_per_sec: ops,
            reps: 1,
            peak_rss_bytes: 8 << 20,
            idle_rss_bytes: 4 << 20,
            status: Status::Ok,
            ..Row::default()
        }
    }

    /// Two workloads, bump skipped on one, a hardened twin of system's place-holder.
    pub(crate) fn results() -> ResultsFile {
        let skip = |a: &str, w: &str| Row {
            status: Status::Skipped,
            skip_reason: format!("bump never reuses freed memory and {w} allocates without bound"),
            ..row(a, w, 1, 0.0)
        };
        ResultsFile {
            config: RunConfig {
                allocators: vec![
                    "bump".into(),
                    "bump-hardened".into(),
                    "mimalloc".into(),
                    "system".into(),
                ],
                workloads: vec!["larson".into(), "phase".into(), "xmalloc".into()],
                threads: vec![1],
                reps: 1,
                ..RunConfig::default()
            },
            rows: vec![
                row("mimalloc", "larson", 1, 100.0),
                row("system", "larson", 1, 50.0),
                skip("bump", "larson"),
                skip("bump-hardened", "larson"),
                skip("bump", "xmalloc"),
                row("mimalloc", "phase", 1, 100.0),
                row("system", "phase", 1, 200.0),
                row("bump", "phase", 1, 400.0),
                row("bump-hardened", "phase", 1, 200.0),
                row("mimalloc", "xmalloc", 1, 100.0),
                row("system", "xmalloc", 1, 150.0),
            ],
            ..ResultsFile::default()
        }
    }

    #[test]
    fn sampling_cost_is_plain_over_unsampled_with_a_geomean() {
        let mut r = results();
        r.config.allocators.push("bump-unsampled".into());
        r.rows.push(row("bump-unsampled", "phase", 1, 500.0));
        let v = View::new(&r);
        assert_eq!(v.plain, ["bump", "mimalloc", "system"]);
        assert_eq!(v.unsampled_pairs(), [("bump-unsampled", "bump")]);
        let mut o = String::new();
        super::super::twins::sampling_cost(&v, &mut o);
        assert!(o.contains("| phase | 0.800 |"), "{o}");
        assert!(o.contains("| larson | - |"), "{o}");
        assert!(o.contains("**0.800** (1)"), "{o}");
        let mut none = String::new();
        super::super::twins::sampling_cost(&View::new(&results()), &mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn ratios_and_geomeans_against_mimalloc() {
        let r = results();
        let v = View::new(&r);
        assert_eq!(v.plain, ["bump", "mimalloc", "system"]);
        assert_eq!(v.ratio("system", "larson", 1), Some(0.5));
        assert_eq!(v.ratio("bump", "larson", 1), None);
        let (g, n) = v.geomean_ratio("system", 1);
        assert!((g.unwrap() - 1.5f64.cbrt()).abs() < 1e-12);
        assert_eq!(n, 3);
        assert_eq!(v.geomean_ratio("bump", 1), (Some(4.0), 1));
        assert_eq!(v.hardened_pairs(), [("bump-hardened", "bump")]);
    }

    #[test]
    fn headline_bolds_the_best_full_column() {
        let r = results();
        let mut o = String::new();
        headline(&View::new(&r), None, &mut o);
        assert!(
            o.contains("| allocator | Rust throughput, 1 thread |"),
            "{o}"
        );
        // bump ran one workload only: its 4.00 is not the bold one.
        assert!(o.contains("| bump | 4.00 (1) |"), "{o}");
        assert!(o.contains("| mimalloc | 1.00 (3) |"), "{o}");
        assert!(o.contains("| system | **1.14 (3)** |"), "{o}");
    }

    #[test]
    fn skipped_cells_collapse_to_one_line_per_reason() {
        let r = results();
        let mut o = String::new();
        skipped(&View::new(&r), &mut o);
        assert_eq!(o.matches("- **SKIPPED**").count(), 1, "{o}");
        assert!(
            o.contains("bump, bump-hardened on larson, xmalloc (1 thread(s)): the allocator never reuses freed memory and the workload allocates without bound."),
            "{o}"
        );
    }
}
