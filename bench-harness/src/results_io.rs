//! The files a run writes and `report` reads back: `results.csv` (one [`Row`] per allocator x
//! workload x threads cell, medians over repetitions with their spread) and `results.json` (the
//! same rows plus the machine, the run's settings and every repetition's raw result).
//!
//! `results.json` is kept small enough to review ([`write_results_json`]): one record per line,
//! and the RSS time series kept only in the first repetition of each cell that has one (the
//! one the charts draw), downsampled to at most [`MAX_SERIES_POINTS`] points. [`read_json`]
//! reads both this form and the older pretty-printed files with every series in full.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::cell::{CellResult, SeriesPoint, Status};
use crate::machine::Machine;

/// One aggregated cell: the median over its successful repetitions and the spread.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Row {
    /// Allocator name.
    pub allocator: String,
    /// Workload name.
    pub workload: String,
    /// Worker threads.
    pub threads: usize,
    /// Median operations per second.
    pub ops_per_sec: f64,
    /// Median p50 latency, ns.
    pub p50_ns: f64,
    /// Median p99 latency, ns.
    pub p99_ns: f64,
    /// Median p99.9 latency, ns.
    pub p999_ns: f64,
    /// Median peak RSS, bytes.
    pub peak_rss_bytes: u64,
    /// Median peak live requested bytes.
    pub peak_live_bytes: u64,
    /// Median fragmentation ((peak RSS - idle RSS) / peak live bytes).
    pub fragmentation: f64,
    /// Median RSS after everything was freed, bytes.
    pub rss_after_free_bytes: u64,
    /// Successful repetitions behind the medians.
    pub reps: usize,
    /// Slowest repetition's operations per second.
    pub ops_per_sec_min: f64,
    /// Fastest repetition's operations per second.
    pub ops_per_sec_max: f64,
    /// Smallest peak RSS of the repetitions.
    pub peak_rss_min_bytes: u64,
    /// Largest peak RSS of the repetitions.
    pub peak_rss_max_bytes: u64,
    /// Median RSS before the workload started.
    pub idle_rss_bytes: u64,
    /// `ok`, `skipped` or `failed`.
    pub status: Status,
    /// Why skipped or failed, or a note (such as a budget that ended the work).
    pub skip_reason: String,
}

/// The settings of a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RunConfig {
    /// Allocators run, in order.
    pub allocators: Vec<String>,
    /// Workloads run, in order.
    pub workloads: Vec<String>,
    /// Thread counts.
    pub threads: Vec<usize>,
    /// Repetitions per cell.
    pub reps: usize,
    /// Whether this was a `--quick` smoke run.
    pub quick: bool,
    /// Duration of each cell's workload, ms.
    pub duration_ms: u64,
    /// Size factor of the workloads' live sets.
    pub size_factor: f64,
    /// Seed.
    pub seed: u64,
    /// Wall time of the whole run, seconds.
    pub total_seconds: f64,
}

/// Everything `results.json` holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ResultsFile {
    /// The machine.
    pub machine: Machine,
    /// The run's settings.
    pub config: RunConfig,
    /// Aggregated rows (as in the CSV).
    pub rows: Vec<Row>,
    /// Every repetition's raw result.
    pub cells: Vec<CellResult>,
}

/// Writes rows (of [`Row`] or any other serialisable record) as CSV.
pub fn write_csv<T: Serialize>(path: &Path, rows: &[T]) -> Result<(), String> {
    let mut w = csv::Writer::from_path(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for r in rows {
        w.serialize(r)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    w.flush().map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads rows from CSV.
pub fn read_csv<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, String> {
    let mut r = csv::Reader::from_path(path).map_err(|e| format!("{}: {e}", path.display()))?;
    r.deserialize()
        .map(|row| row.map_err(|e| format!("{}: {e}", path.display())))
        .collect()
}

/// Writes `results.json` (or any other serialisable file) as pretty JSON.
pub fn write_json<T: Serialize>(path: &Path, results: &T) -> Result<(), String> {
    let text = serde_json::to_string_pretty(results).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The most points a time series keeps in `results.json`.
pub const MAX_SERIES_POINTS: usize = 200;

/// At most `max` points of `series`, in time order: the series cut into `max` equal runs of
/// points, keeping from each the point of highest RSS (so the peak survives), and always the
/// last point (RSS after the work). Times are rounded to whole milliseconds (points are
/// sampled 5 ms apart).
pub fn downsample(series: &[SeriesPoint], max: usize) -> Vec<SeriesPoint> {
    let round = |p: &SeriesPoint| SeriesPoint {
        t_ms: p.t_ms.round(),
        ..*p
    };
    if series.len() <= max || max < 2 {
        return series.iter().map(round).collect();
    }
    let (body, last) = series.split_at(series.len() - 1);
    let buckets = max - 1;
    let mut out: Vec<SeriesPoint> = (0..buckets)
        .filter_map(|i| {
            let run = &body[i * body.len() / buckets..(i + 1) * body.len() / buckets];
            run.iter().max_by_key(|p| p.rss_bytes).map(round)
        })
        .collect();
    out.push(round(&last[0]));
    out
}

/// The file as `results.json` stores it: each cell's series only in its first successful
/// repetition that has one, downsampled by [`downsample`]; the other repetitions' series
/// dropped (nothing reads them: the charts draw the first).
pub fn compacted(results: &ResultsFile) -> ResultsFile {
    let mut out = results.clone();
    let mut kept: Vec<(String, String, usize)> = Vec::new();
    for c in &mut out.cells {
        if c.series.is_empty() {
            continue;
        }
        let key = (c.allocator.clone(), c.workload.clone(), c.threads);
        if c.status == Status::Ok && !kept.contains(&key) {
            c.series = downsample(&c.series, MAX_SERIES_POINTS);
            kept.push(key);
        } else {
            c.series.clear();
        }
    }
    out
}

/// Writes `results.json` compacted ([`compacted`]), one row or cell per line: valid JSON that
/// a diff shows record by record.
pub fn write_results_json(path: &Path, results: &ResultsFile) -> Result<(), String> {
    let r = compacted(results);
    let lines = |v: Vec<Result<String, String>>| -> Result<String, String> {
        Ok(v.into_iter().collect::<Result<Vec<_>, _>>()?.join(",\n"))
    };
    let text = format!(
        "{{\n\"machine\": {},\n\"config\": {},\n\"rows\": [\n{}\n],\n\"cells\": [\n{}\n]\n}}\n",
        line(&r.machine)?,
        line(&r.config)?,
        lines(r.rows.iter().map(line).collect())?,
        lines(r.cells.iter().map(line).collect())?,
    );
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// One value as one line of compact JSON.
fn line<T: Serialize>(v: &T) -> Result<String, String> {
    serde_json::to_string(v).map_err(|e| e.to_string())
}

/// Reads `results.json` (or any other JSON file of a deserialisable type).
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_rows() -> Vec<Row> {
        vec![
            Row {
                allocator: "mimalloc".into(),
                workload: "larson".into(),
                threads: 2,
                ops_per_sec: 1.5e7,
                p50_ns: 21.25,
                peak_rss_bytes: 10 << 20,
                reps: 3,
                status: Status::Ok,
                ..Row::default()
            },
            Row {
                allocator: "bump".into(),
                workload: "larson".into(),
                threads: 1,
                status: Status::Skipped,
                skip_reason: "never reuses, \"unbounded\"".into(),
                ..Row::default()
            },
        ]
    }

    #[test]
    fn csv_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.csv");
        let rows = sample_rows();
        write_csv(&path, &rows).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(
            "allocator,workload,threads,ops_per_sec,p50_ns,p99_ns,p999_ns,peak_rss_bytes,peak_live_bytes,fragmentation,rss_after_free_bytes,reps,"
        ));
        assert_eq!(read_csv::<Row>(&path).unwrap(), rows);
    }

    #[test]
    fn json_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.json");
        let file = ResultsFile {
            rows: sample_rows(),
            ..ResultsFile::default()
        };
        write_json(&path, &file).unwrap();
        assert_eq!(read_json::<ResultsFile>(&path).unwrap(), file);
        // The compact form reads back the same (no series to drop here).
        write_results_json(&path, &file).unwrap();
        assert_eq!(read_json::<ResultsFile>(&path).unwrap(), file);
    }

    #[test]
    fn series_downsampled_in_the_first_repetition_only() {
        let series: Vec<SeriesPoint> = (0..1000u64)
            .map(|i| SeriesPoint {
                t_ms: i as f64 * 5.2345,
                rss_bytes: if i == 777 { 1 << 40 } else { i << 20 },
                live_bytes: i,
            })
            .collect();
        let cell = |rep| CellResult {
            allocator: "slab".into(),
            workload: "server".into(),
            threads: 1,
            rep,
            status: Status::Ok,
            series: series.clone(),
            ..CellResult::default()
        };
        let file = ResultsFile {
            cells: vec![cell(0), cell(1)],
            ..ResultsFile::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.json");
        write_results_json(&path, &file).unwrap();
        let back: ResultsFile = read_json(&path).unwrap();
        let s = &back.cells[0].series;
        assert_eq!(s.len(), MAX_SERIES_POINTS);
        assert!(s.iter().any(|p| p.rss_bytes == 1 << 40), "the peak is kept");
        assert_eq!(s.last().unwrap().live_bytes, 999);
        assert!(s.windows(2).all(|w| w[0].t_ms < w[1].t_ms));
        assert!(back.cells[1].series.is_empty());
        // Older files wrote each point as an object.
        let old = r#"{"allocator":"a","workload":"w","threads":1,"rep":0,"status":"ok","reason":"",
            "series":[{"t_ms":1.5,"rss_bytes":2,"live_bytes":3}]}"#;
        let c: CellResult = serde_json::from_str(old).unwrap();
        assert_eq!(c.series[0].rss_bytes, 2);
    }
}
