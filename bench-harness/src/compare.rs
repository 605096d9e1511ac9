//! `bench-harness compare A B`: how well two runs of the same command agree. For every cell
//! measured in both (same allocator, workload and threads, status ok), it checks whether each
//! run's median throughput lies within the other run's min-max spread over its repetitions
//! (the criterion of a repeatable harness), and summarises how far the medians moved and how
//! much each allocator's geometric mean over the workloads moved.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::cell::Status;
use crate::results_io::Row;
use crate::summary::geomean;

/// One cell measured in both runs.
#[derive(Clone, Debug, PartialEq)]
pub struct CellPair {
    /// Allocator name.
    pub allocator: String,
    /// Workload name.
    pub workload: String,
    /// Worker threads.
    pub threads: usize,
    /// The first run's row.
    pub a: Row,
    /// The second run's row.
    pub b: Row,
}

impl CellPair {
    /// `b`'s median over `a`'s, minus one (e.g. +0.05 = the second run was 5% faster).
    pub fn change(&self) -> f64 {
        self.b.ops_per_sec / self.a.ops_per_sec - 1.0
    }

    /// Whether either run's median lies within the other's min-max spread.
    pub fn within_spread(&self) -> bool {
        let inside = |x: f64, r: &Row| r.ops_per_sec_min <= x && x <= r.ops_per_sec_max;
        inside(self.b.ops_per_sec, &self.a) || inside(self.a.ops_per_sec, &self.b)
    }
}

/// Pairs up the cells measured (status ok, positive throughput) in both runs, in `a`'s order.
pub fn pair(a: &[Row], b: &[Row]) -> Vec<CellPair> {
    let usable = |r: &Row| r.status == Status::Ok && r.ops_per_sec > 0.0;
    let by_key: BTreeMap<(&str, &str, usize), &Row> = b
        .iter()
        .filter(|r| usable(r))
        .map(|r| ((r.allocator.as_str(), r.workload.as_str(), r.threads), r))
        .collect();
    a.iter()
        .filter(|r| usable(r))
        .filter_map(|ra| {
            let rb = by_key.get(&(ra.allocator.as_str(), ra.workload.as_str(), ra.threads))?;
            Some(CellPair {
                allocator: ra.allocator.clone(),
                workload: ra.workload.clone(),
                threads: ra.threads,
                a: ra.clone(),
                b: (*rb).clone(),
            })
        })
        .collect()
}

/// The agreement of two runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Agreement {
    /// Cells measured in both runs.
    pub cells: usize,
    /// Cells where one run's median lies within the other's spread.
    pub within_spread: usize,
    /// Median of the per-cell changes (second / first - 1).
    pub median_change: f64,
    /// Share of cells whose median moved by less than 10%.
    pub within_10_percent: f64,
    /// Per (allocator, threads): geometric mean of throughput over the common workloads in
    /// the first and the second run.
    pub geomeans: Vec<(String, usize, f64, f64)>,
    /// The cells outside each other's spread, largest change first.
    pub outliers: Vec<CellPair>,
}

/// Measures the agreement of the paired cells.
pub fn agreement(pairs: &[CellPair]) -> Agreement {
    let mut changes: Vec<f64> = pairs.iter().map(CellPair::change).collect();
    changes.sort_by(f64::total_cmp);
    let median_change = crate::summary::median(&changes);
    let small = pairs.iter().filter(|p| p.change().abs() < 0.10).count();
    let mut groups: BTreeMap<(String, usize), (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for p in pairs {
        let g = groups.entry((p.allocator.clone(), p.threads)).or_default();
        g.0.push(p.a.ops_per_sec);
        g.1.push(p.b.ops_per_sec);
    }
    let geomeans = groups
        .into_iter()
        .filter_map(|((name, threads), (a, b))| Some((name, threads, geomean(&a)?, geomean(&b)?)))
        .collect();
    let mut outliers: Vec<CellPair> = pairs
        .iter()
        .filter(|p| !p.within_spread())
        .cloned()
        .collect();
    outliers.sort_by(|x, y| y.change().abs().total_cmp(&x.change().abs()));
    Agreement {
        cells: pairs.len(),
        within_spread: pairs.iter().filter(|p| p.within_spread()).count(),
        median_change,
        within_10_percent: if pairs.is_empty() {
            0.0
        } else {
            small as f64 / pairs.len() as f64
        },
        geomeans,
        outliers,
    }
}

/// The agreement as Markdown (what `compare` prints).
pub fn markdown(ag: &Agreement) -> String {
    let mut s = String::new();
    let pct = |x: f64| 100.0 * x;
    let _ = writeln!(
        s,
        "{} of {} cells ({:.0}%) have a median within the other run's min-max spread; \
         median change {:+.1}%; {:.0}% of cells moved by less than 10%.\n",
        ag.within_spread,
        ag.cells,
        if ag.cells > 0 {
            pct(ag.within_spread as f64 / ag.cells as f64)
        } else {
            0.0
        },
        pct(ag.median_change),
        pct(ag.within_10_percent),
    );
    let _ = writeln!(
        s,
        "| allocator | threads | geomean run A (Mops/s) | run B | change |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    for (name, threads, a, b) in &ag.geomeans {
        let _ = writeln!(
            s,
            "| {name} | {threads} | {:.2} | {:.2} | {:+.1}% |",
            a / 1e6,
            b / 1e6,
            pct(b / a - 1.0)
        );
    }
    if !ag.outliers.is_empty() {
        let _ = writeln!(s, "\nCells outside each other's spread:\n");
        let _ = writeln!(
            s,
            "| allocator | workload | threads | run A median [min, max] (Mops/s) | run B median [min, max] | change |"
        );
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|");
        for p in &ag.outliers {
            let cell = |r: &Row| {
                format!(
                    "{:.2} [{:.2}, {:.2}]",
                    r.ops_per_sec / 1e6,
                    r.ops_per_sec_min / 1e6,
                    r.ops_per_sec_max / 1e6
                )
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {:+.1}% |",
                p.allocator,
                p.workload,
                p.threads,
                cell(&p.a),
                cell(&p.b),
                pct(p.change())
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(alloc: &str, work: &str, threads: usize, med: f64, min: f64, max: f64) -> Row {
        Row {
            allocator: alloc.into(),
            workload: work.into(),
            threads,
            ops_per_sec: med,
            ops_per_sec_min: min,
            ops_per_sec_max: max,
            reps: 5,
            status: Status::Ok,
            ..Row::default()
        }
    }

    #[test]
    fn pairs_only_cells_measured_in_both() {
        let a = vec![
            row("slab", "larson", 1, 10.0, 9.0, 11.0),
            row("slab", "larson", 2, 10.0, 9.0, 11.0),
            Row {
                status: Status::Skipped,
                ..row("bump", "larson", 1, 0.0, 0.0, 0.0)
            },
        ];
        let b = vec![
            row("slab", "larson", 1, 10.5, 10.0, 12.0),
            row("bump", "larson", 1, 5.0, 5.0, 5.0),
        ];
        let p = pair(&a, &b);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].allocator.as_str(), p[0].threads), ("slab", 1));
    }

    #[test]
    fn spread_check_and_summary() {
        let a = vec![
            row("slab", "larson", 1, 10.0, 9.0, 11.0),
            // B's median is outside A's spread but A's is inside B's wide spread: agree.
            row("slab", "xmalloc", 1, 10.0, 9.9, 10.1),
            // Neither inside the other: an outlier, +50%.
            row("slab", "phase", 1, 10.0, 9.5, 10.5),
        ];
        let b = vec![
            row("slab", "larson", 1, 10.5, 10.0, 12.0),
            row("slab", "xmalloc", 1, 12.0, 8.0, 13.0),
            row("slab", "phase", 1, 15.0, 14.0, 16.0),
        ];
        let ag = agreement(&pair(&a, &b));
        assert_eq!(ag.cells, 3);
        assert_eq!(ag.within_spread, 2);
        assert_eq!(ag.outliers.len(), 1);
        assert_eq!(ag.outliers[0].workload, "phase");
        assert!((ag.median_change - 0.2).abs() < 1e-9);
        assert!((ag.within_10_percent - 1.0 / 3.0).abs() < 1e-9);
        let (_, _, ga, gb) = &ag.geomeans[0];
        assert!((ga - 10.0).abs() < 1e-9);
        assert!((gb - (10.5f64 * 12.0 * 15.0).cbrt()).abs() < 1e-9);
        let md = markdown(&ag);
        assert!(md.starts_with("2 of 3 cells (67%)"), "{md}");
        assert!(md.contains("| slab | phase | 1 |"), "{md}");
    }
}
