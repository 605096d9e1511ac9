//! The child side of a cell: the harness re-executes itself with the hidden `cell` subcommand,
//! which runs ONE (allocator, workload, threads, repetition) in a fresh process and prints a
//! [`CellResult`] as one JSON line on stdout. A fresh process per cell keeps RSS, caches and
//! allocator state from leaking between cells.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::proc_mem;
use crate::registry::{self, NON_REUSING_BUDGET};
use crate::summary::percentile;
use crate::timer::Calibration;
use crate::worker::{Recorder, Shared, SAMPLE_EVERY};
use crate::workloads::{self, Params};

/// What to run in a cell.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CellSpec {
    /// Allocator name (see [`registry::ALLOCATORS`]).
    pub allocator: String,
    /// Workload name (see [`workloads::WORKLOADS`]).
    pub workload: String,
    /// Worker threads.
    pub threads: usize,
    /// Repetition index (0-based).
    pub rep: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// How long the workload runs, in milliseconds.
    pub duration_ms: u64,
    /// Size factor of the workloads' live sets.
    pub size_factor: f64,
}

/// How a cell ended.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Measured.
    #[default]
    Ok,
    /// The allocator cannot serve the workload (decided before, or it ran out of memory).
    Skipped,
    /// The child crashed, timed out or printed nothing readable.
    Failed,
}

impl Status {
    /// The lower-case name written in the results.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Skipped => "skipped",
            Status::Failed => "failed",
        }
    }
}

/// One point of the RSS / live-bytes time series, written as `[t_ms, rss_bytes, live_bytes]`
/// (files from before that wrote an object with those keys; both are read).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SeriesPoint {
    /// Milliseconds since the workload started.
    pub t_ms: f64,
    /// Resident set size.
    pub rss_bytes: u64,
    /// Live requested bytes.
    pub live_bytes: u64,
}

impl Serialize for SeriesPoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Whole milliseconds (as `results.json` rounds them) are written without a fraction.
        if self.t_ms.fract() == 0.0 && self.t_ms.abs() < 1e15 {
            (self.t_ms as i64, self.rss_bytes, self.live_bytes).serialize(s)
        } else {
            (self.t_ms, self.rss_bytes, self.live_bytes).serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for SeriesPoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// The two spellings: the compact triple, and the object of older files.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Triple(f64, u64, u64),
            Object {
                t_ms: f64,
                rss_bytes: u64,
                live_bytes: u64,
            },
        }
        Ok(match Either::deserialize(d)? {
            Either::Triple(t_ms, rss_bytes, live_bytes)
            | Either::Object {
                t_ms,
                rss_bytes,
                live_bytes,
            } => SeriesPoint {
                t_ms,
                rss_bytes,
                live_bytes,
            },
        })
    }
}

/// The measurements of one cell run. Empty fields (a skipped cell's zeros, an empty reason or
/// series) are left out of the JSON and read back as their defaults.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct CellResult {
    /// Allocator name.
    pub allocator: String,
    /// Workload name.
    pub workload: String,
    /// Worker threads.
    pub threads: usize,
    /// Repetition index.
    pub rep: usize,
    /// How the cell ended.
    pub status: Status,
    /// Why it was skipped or failed (empty when ok).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Allocator operations (alloc, free, realloc) performed.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub ops: u64,
    /// Wall time of the workload, seconds.
    #[serde(skip_serializing_if = "is_zero_f64")]
    pub elapsed_s: f64,
    /// `ops / elapsed_s`.
    #[serde(skip_serializing_if = "is_zero_f64")]
    pub ops_per_sec: f64,
    /// Median latency of a sampled single operation, ns.
    #[serde(skip_serializing_if = "is_zero_f64")]
    pub p50_ns: f64,
    /// 99th percentile latency, ns.
    #[serde(skip_serializing_if = "is_zero_f64")]
    pub p99_ns: f64,
    /// 99.9th percentile latency, ns.
    #[serde(skip_serializing_if = "is_zero_f64")]
    pub p999_ns: f64,
    /// Latency samples behind the percentiles.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub latency_samples: u64,
    /// The timer's effective resolution, ns (latencies below it are not resolved).
    #[serde(skip_serializing_if = "is_zero_f64")]
    pub timer_resolution_ns: f64,
    /// RSS before the workload started (harness bookkeeping already resident).
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub idle_rss_bytes: u64,
    /// Peak RSS of the process (`VmHWM`).
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub peak_rss_bytes: u64,
    /// Peak live requested bytes, tracked by the workload.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub peak_live_bytes: u64,
    /// (peak RSS - idle RSS) / peak live bytes.
    #[serde(skip_serializing_if = "is_zero_f64")]
    pub fragmentation: f64,
    /// RSS after every block was freed (`VmRSS`).
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub rss_after_free_bytes: u64,
    /// Whether the never-reusing allocator's byte budget ended the work early.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub budget_hit: bool,
    /// RSS and live bytes over time (workloads that sample them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<SeriesPoint>,
}

fn is_zero_u64(x: &u64) -> bool {
    *x == 0
}

fn is_zero_f64(x: &f64) -> bool {
    *x == 0.0
}

impl CellResult {
    /// A result without measurements.
    pub fn not_run(spec: &CellSpec, status: Status, reason: impl Into<String>) -> Self {
        CellResult {
            allocator: spec.allocator.clone(),
            workload: spec.workload.clone(),
            threads: spec.threads,
            rep: spec.rep,
            status,
            reason: reason.into(),
            ..CellResult::default()
        }
    }
}

/// Latency samples each lane can hold for a run of `duration_ms`.
fn sample_capacity(duration_ms: u64) -> usize {
    // Up to ~40 M operations per second per thread, one in SAMPLE_EVERY timed.
    let expected = duration_ms as usize * 40_000 / SAMPLE_EVERY as usize;
    expected.clamp(1 << 12, 1 << 19)
}

/// Runs one cell in this process and returns its result.
pub fn run_cell(spec: &CellSpec) -> CellResult {
    let Some(alloc) = registry::find(&spec.allocator) else {
        return CellResult::not_run(spec, Status::Failed, "unknown allocator");
    };
    if registry::split_hardened(&spec.allocator).1 != cfg!(feature = "hardened") {
        return CellResult::not_run(
            spec,
            Status::Failed,
            "a `-hardened` cell needs the binary built with `--features hardened` (and only it)",
        );
    }
    let Some(work) = workloads::find(&spec.workload) else {
        return CellResult::not_run(spec, Status::Failed, "unknown workload");
    };
    if let Some(reason) = registry::skip_reason(alloc, work) {
        return CellResult::not_run(spec, Status::Skipped, reason);
    }
    let calibration = Calibration::measure(Duration::from_millis(20));
    let lanes = spec.threads.max(1) * work.lanes_per_thread;
    let recorders: Vec<Recorder> = (0..lanes)
        .map(|_| Recorder::new(sample_capacity(spec.duration_ms)))
        .collect();
    let params = Params {
        threads: spec.threads.max(1),
        seed: spec.seed,
        size_factor: spec.size_factor,
    };
    let budget = if alloc.reuses_freed {
        u64::MAX
    } else {
        NON_REUSING_BUDGET
    };
    let series: Mutex<Vec<SeriesPoint>> = Mutex::new(Vec::with_capacity(4096));
    let stop = AtomicBool::new(false);
    let idle_rss = proc_mem::rss_bytes();
    let start = Instant::now();
    let shared = Shared::new(start + Duration::from_millis(spec.duration_ms), budget);

    let outcome = std::thread::scope(|s| {
        if work.samples_over_time {
            s.spawn(|| {
                let mut points = series.lock().unwrap_or_else(|e| e.into_inner());
                while !stop.load(Ordering::Relaxed) && points.len() < points.capacity() {
                    points.push(SeriesPoint {
                        t_ms: start.elapsed().as_secs_f64() * 1e3,
                        rss_bytes: proc_mem::rss_bytes_fast(),
                        live_bytes: shared.live_bytes() as u64,
                    });
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
        }
        let out = (alloc.run)(&spec.workload, &shared, &params, recorders);
        stop.store(true, Ordering::Relaxed);
        out
    });
    let elapsed = start.elapsed().as_secs_f64();
    let recorders = match outcome {
        Ok(r) => r,
        Err(reason) => return CellResult::not_run(spec, Status::Skipped, reason),
    };
    let peak_rss = proc_mem::peak_rss_bytes();
    let rss_after = proc_mem::rss_bytes();

    let ops: u64 = recorders.iter().map(|r| r.ops).sum();
    let mut lat: Vec<f64> = recorders
        .iter()
        .flat_map(|r| r.taken().iter().map(|&t| calibration.to_ns(t)))
        .collect();
    lat.sort_by(f64::total_cmp);
    let peak_live = shared.peak_live_bytes() as u64;
    let mut series = series.into_inner().unwrap_or_else(|e| e.into_inner());
    if work.samples_over_time {
        series.push(SeriesPoint {
            t_ms: elapsed * 1e3,
            rss_bytes: rss_after,
            live_bytes: shared.live_bytes() as u64,
        });
    }
    CellResult {
        allocator: spec.allocator.clone(),
        workload: spec.workload.clone(),
        threads: spec.threads,
        rep: spec.rep,
        status: Status::Ok,
        reason: if shared.budget_hit() {
            format!(
                "stopped at its {} MiB allocation budget",
                NON_REUSING_BUDGET >> 20
            )
        } else {
            String::new()
        },
        ops,
        elapsed_s: elapsed,
        ops_per_sec: if elapsed > 0.0 {
            ops as f64 / elapsed
        } else {
            0.0
        },
        p50_ns: percentile(&lat, 0.5).unwrap_or(0.0),
        p99_ns: percentile(&lat, 0.99).unwrap_or(0.0),
        p999_ns: percentile(&lat, 0.999).unwrap_or(0.0),
        latency_samples: lat.len() as u64,
        timer_resolution_ns: calibration.resolution_ns(),
        idle_rss_bytes: idle_rss,
        peak_rss_bytes: peak_rss,
        peak_live_bytes: peak_live,
        fragmentation: if peak_live > 0 {
            peak_rss.saturating_sub(idle_rss) as f64 / peak_live as f64
        } else {
            0.0
        },
        rss_after_free_bytes: rss_after,
        budget_hit: shared.budget_hit(),
        series,
    }
}
