//! The files a run writes and `report` reads back: `results.csv` (one [`Row`] per allocator x
//! workload x threads cell, medians over repetitions with their spread) and `results.json` (the
//! same rows plus the machine, the run's settings and every repetition's raw result with the
//! time series).

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::cell::{CellResult, Status};
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
    }
}
