//! The parent side of a run: plans the cells (repetitions outermost, allocators innermost, so
//! the allocators of one workload run side by side in time and machine noise spreads evenly),
//! runs each in a child process with a timeout, shows progress, and aggregates the repetitions
//! into [`Row`]s (median and min-max spread).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::cell::{CellResult, CellSpec, Status};
use crate::machine::Machine;
use crate::registry;
use crate::results_io::{ResultsFile, Row, RunConfig};
use crate::summary::{median, spread};
use crate::workloads;

/// The default seed.
pub const DEFAULT_SEED: u64 = 0x5EED_A110C;

/// What to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Allocator names.
    pub allocators: Vec<String>,
    /// Workload names.
    pub workloads: Vec<String>,
    /// Thread counts.
    pub threads: Vec<usize>,
    /// Repetitions.
    pub reps: usize,
    /// Smoke-run scale.
    pub quick: bool,
    /// Seed.
    pub seed: u64,
    /// Show a progress bar.
    pub progress: bool,
    /// The binary to re-execute for each cell (normally this one).
    pub exe: PathBuf,
    /// A harness binary built with `--features hardened`, which runs the `<name>-hardened` cells
    /// (ours with their checks, mimalloc in its secure mode).
    pub hardened_exe: Option<PathBuf>,
}

impl RunOptions {
    /// Workload duration per cell, ms.
    pub fn duration_ms(&self) -> u64 {
        if self.quick {
            150
        } else {
            1000
        }
    }

    /// How long a cell may take before it is killed (slow allocators finishing a round).
    pub fn timeout(&self) -> Duration {
        Duration::from_millis((self.duration_ms() * 15).max(10_000))
    }

    /// Size factor of the live sets.
    pub fn size_factor(&self) -> f64 {
        if self.quick {
            0.25
        } else {
            1.0
        }
    }
}

/// The cells of a run, in the order they run.
pub fn plan(opts: &RunOptions) -> Vec<CellSpec> {
    let mut cells = Vec::new();
    for rep in 0..opts.reps.max(1) {
        for w in &opts.workloads {
            for &t in &opts.threads {
                for a in &opts.allocators {
                    cells.push(CellSpec {
                        allocator: a.clone(),
                        workload: w.clone(),
                        threads: t,
                        rep,
                        seed: opts.seed,
                        duration_ms: opts.duration_ms(),
                        size_factor: opts.size_factor(),
                    });
                }
            }
        }
    }
    cells
}

/// The skip reason known without running the cell, if any.
fn skip_before_running(spec: &CellSpec) -> Option<String> {
    let a = registry::find(&spec.allocator)?;
    let w = workloads::find(&spec.workload)?;
    registry::skip_reason(a, w)
}

/// Runs one cell in a child process (`exe cell --spec JSON`), killing it after `timeout`. An
/// `<name>-unsampled` cell's child runs with the heap profiler's sampling off
/// ([`registry::PROFILE_RATE_ENV`]`=0`); every other child inherits this process's environment.
pub fn run_child(exe: &PathBuf, spec: &CellSpec, timeout: Duration) -> CellResult {
    let spec_json = serde_json::to_string(spec).unwrap_or_default();
    let mut cmd = Command::new(exe);
    if registry::split_unsampled(&spec.allocator).1 {
        cmd.env(registry::PROFILE_RATE_ENV, "0");
    }
    let child = cmd
        .arg("cell")
        .arg("--spec")
        .arg(&spec_json)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return CellResult::not_run(spec, Status::Failed, format!("could not start: {e}"))
        }
    };
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => break None,
        }
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    let Some(status) = status else {
        return CellResult::not_run(
            spec,
            Status::Failed,
            format!(
                "timed out after {} s (the allocator could not finish the workload's last round in time)",
                timeout.as_secs()
            ),
        );
    };
    let parsed = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str::<CellResult>(l).ok());
    match parsed {
        Some(r) => r,
        None => {
            let tail: String = stderr
                .lines()
                .rev()
                .take(3)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join(" | ");
            CellResult::not_run(
                spec,
                Status::Failed,
                format!("child exited with {status}: {tail}"),
            )
        }
    }
}

/// Runs every planned cell and aggregates the results.
pub fn run(opts: &RunOptions) -> ResultsFile {
    let machine = Machine::detect();
    let cells = plan(opts);
    let started = Instant::now();
    let bar = if opts.progress {
        ProgressBar::new(cells.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} cells, {eta} left  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let timeout = opts.timeout();
    let mut results = Vec::with_capacity(cells.len());
    // Cells that timed out once are not repeated: their other repetitions would cost as much.
    let mut timed_out: Vec<(String, String, usize)> = Vec::new();
    for spec in &cells {
        bar.set_message(format!(
            "{} / {} / {}t / rep {}",
            spec.allocator,
            spec.workload,
            spec.threads,
            spec.rep + 1
        ));
        let key = (spec.allocator.clone(), spec.workload.clone(), spec.threads);
        let r = if let Some(reason) = skip_before_running(spec) {
            CellResult::not_run(spec, Status::Skipped, reason)
        } else if timed_out.contains(&key) {
            CellResult::not_run(
                spec,
                Status::Failed,
                format!(
                    "not repeated: an earlier repetition timed out after {} s",
                    timeout.as_secs()
                ),
            )
        } else {
            let exe = match (
                &opts.hardened_exe,
                registry::split_hardened(&spec.allocator).1,
            ) {
                (Some(hardened), true) => hardened,
                _ => &opts.exe,
            };
            let r = run_child(exe, spec, timeout);
            if r.reason.starts_with("timed out") {
                timed_out.push(key);
            }
            r
        };
        if r.status == Status::Failed {
            bar.println(format!(
                "FAILED {} / {} / {}t: {}",
                r.allocator, r.workload, r.threads, r.reason
            ));
        }
        results.push(r);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let rows = aggregate(&opts.allocators, &opts.workloads, &opts.threads, &results);
    ResultsFile {
        machine,
        config: RunConfig {
            allocators: opts.allocators.clone(),
            workloads: opts.workloads.clone(),
            threads: opts.threads.clone(),
            reps: opts.reps,
            quick: opts.quick,
            duration_ms: opts.duration_ms(),
            size_factor: opts.size_factor(),
            seed: opts.seed,
            total_seconds: started.elapsed().as_secs_f64(),
        },
        rows,
        cells: results,
    }
}

/// Folds repetitions into one row per (allocator, workload, threads), in report order.
pub fn aggregate(
    allocators: &[String],
    workloads: &[String],
    threads: &[usize],
    cells: &[CellResult],
) -> Vec<Row> {
    let mut rows = Vec::new();
    for w in workloads {
        for &t in threads {
            for a in allocators {
                let reps: Vec<&CellResult> = cells
                    .iter()
                    .filter(|c| &c.allocator == a && &c.workload == w && c.threads == t)
                    .collect();
                if reps.is_empty() {
                    continue;
                }
                rows.push(aggregate_one(a, w, t, &reps));
            }
        }
    }
    rows
}

fn aggregate_one(allocator: &str, workload: &str, threads: usize, reps: &[&CellResult]) -> Row {
    let ok: Vec<&&CellResult> = reps.iter().filter(|c| c.status == Status::Ok).collect();
    let mut row = Row {
        allocator: allocator.to_string(),
        workload: workload.to_string(),
        threads,
        reps: ok.len(),
        ..Row::default()
    };
    if ok.is_empty() {
        let worst = reps
            .iter()
            .find(|c| c.status == Status::Skipped)
            .or_else(|| reps.first());
        row.status = worst.map_or(Status::Failed, |c| c.status);
        row.skip_reason = worst.map(|c| c.reason.clone()).unwrap_or_default();
        return row;
    }
    let f = |get: &dyn Fn(&CellResult) -> f64| -> Vec<f64> { ok.iter().map(|c| get(c)).collect() };
    let tput = spread(&f(&|c| c.ops_per_sec));
    let rss = spread(&f(&|c| c.peak_rss_bytes as f64));
    row.status = Status::Ok;
    row.ops_per_sec = tput.map_or(0.0, |s| s.median);
    row.ops_per_sec_min = tput.map_or(0.0, |s| s.min);
    row.ops_per_sec_max = tput.map_or(0.0, |s| s.max);
    row.p50_ns = median(&f(&|c| c.p50_ns));
    row.p99_ns = median(&f(&|c| c.p99_ns));
    row.p999_ns = median(&f(&|c| c.p999_ns));
    row.peak_rss_bytes = rss.map_or(0.0, |s| s.median) as u64;
    row.peak_rss_min_bytes = rss.map_or(0.0, |s| s.min) as u64;
    row.peak_rss_max_bytes = rss.map_or(0.0, |s| s.max) as u64;
    row.peak_live_bytes = median(&f(&|c| c.peak_live_bytes as f64)) as u64;
    row.fragmentation = median(&f(&|c| c.fragmentation));
    row.rss_after_free_bytes = median(&f(&|c| c.rss_after_free_bytes as f64)) as u64;
    row.idle_rss_bytes = median(&f(&|c| c.idle_rss_bytes as f64)) as u64;
    let failed = reps.len() - ok.len();
    let mut notes = Vec::new();
    if failed > 0 {
        notes.push(format!(
            "{failed} of {} repetitions did not complete",
            reps.len()
        ));
    }
    if let Some(c) = ok.iter().find(|c| !c.reason.is_empty()) {
        notes.push(c.reason.clone());
    }
    row.skip_reason = notes.join("; ");
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(a: &str, rep: usize, status: Status, ops: f64) -> CellResult {
        CellResult {
            allocator: a.into(),
            workload: "larson".into(),
            threads: 1,
            rep,
            status,
            ops_per_sec: ops,
            reason: if status == Status::Ok {
                String::new()
            } else {
                "why".into()
            },
            ..CellResult::default()
        }
    }

    #[test]
    fn plan_interleaves_allocators_innermost() {
        let opts = RunOptions {
            allocators: vec!["a".into(), "b".into()],
            hardened_exe: None,
            workloads: vec!["w".into()],
            threads: vec![1, 2],
            reps: 2,
            quick: true,
            seed: 1,
            progress: false,
            exe: PathBuf::new(),
        };
        let p = plan(&opts);
        assert_eq!(p.len(), 8);
        let order: Vec<_> = p
            .iter()
            .map(|c| (c.rep, c.threads, c.allocator.as_str()))
            .collect();
        assert_eq!(
            order[0..4],
            [(0, 1, "a"), (0, 1, "b"), (0, 2, "a"), (0, 2, "b")]
        );
    }

    #[test]
    fn aggregates_median_spread_and_status() {
        let cells = vec![
            cell("a", 0, Status::Ok, 10.0),
            cell("a", 1, Status::Ok, 30.0),
            cell("a", 2, Status::Ok, 20.0),
            cell("b", 0, Status::Skipped, 0.0),
            cell("c", 0, Status::Failed, 0.0),
            cell("c", 1, Status::Ok, 5.0),
        ];
        let rows = aggregate(
            &["a".into(), "b".into(), "c".into()],
            &["larson".into()],
            &[1],
            &cells,
        );
        assert_eq!(rows.len(), 3);
        assert_eq!(
            (
                rows[0].ops_per_sec,
                rows[0].ops_per_sec_min,
                rows[0].ops_per_sec_max
            ),
            (20.0, 10.0, 30.0)
        );
        assert_eq!(rows[0].reps, 3);
        assert_eq!(rows[1].status, Status::Skipped);
        assert_eq!(rows[1].skip_reason, "why");
        assert_eq!(rows[2].status, Status::Ok);
        assert!(rows[2].skip_reason.contains("1 of 2"));
    }
}
