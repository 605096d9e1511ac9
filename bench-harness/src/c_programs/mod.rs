//! The C-program table: C benchmarks modelled on the well-known allocator benchmarks and real
//! programs from Debian packages, run under every allocator through
//! `LD_PRELOAD` — system malloc (no preload), Debian's mimalloc and jemalloc, and each
//! `lib<name>_preload.so` of this suite — with the wall time and peak RSS of each run, the
//! repetitions interleaved round robin across allocators, and every run's output checked
//! against system malloc's.
//!
//! | file | what |
//! |---|---|
//! | [`programs`] | the programs: what they run, their inputs, compiling the C benchmarks |
//! | [`redis`] | the redis driver: redis-server preloaded, redis-benchmark as its client |
//! | [`libraries`] | the allocators: finding (and building) the preload libraries |
//! | [`measure`] | one run of a program: `LD_PRELOAD`, wall time, `wait4`'s peak RSS, timeout |
//! | [`verdict`] | whether a run counts: exit status, library loaded, output equal to system's |
//! | [`io`] | `c_programs.csv` / `c_programs.json` |
//! | [`report`] | the "C programs under LD_PRELOAD" section of `REPORT.md` |

pub mod io;
pub mod libraries;
pub mod measure;
pub mod programs;
pub mod redis;
pub mod report;
pub mod verdict;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::cell::Status;
use crate::machine::Machine;
use crate::selection;
use crate::summary::spread;
use libraries::PreloadAllocator;
use programs::{Prepared, Scale};

/// The C benchmarks' thread count unless told otherwise.
pub const DEFAULT_THREADS: usize = 2;
/// The most threads the C benchmarks take (malloc-large shares out 20 live blocks).
pub const MAX_THREADS: usize = 20;

/// The allocator whose output every other run must reproduce.
pub const SYSTEM: &str = "system";

/// What `c-programs` (or the tail of `run`) should do.
#[derive(Clone, Debug)]
pub struct COptions {
    /// Allocator names, in report order (see [`libraries::valid_names`]).
    pub allocators: Vec<String>,
    /// Program names, in table order (see [`programs::PROGRAMS`]).
    pub programs: Vec<String>,
    /// Repetitions per (program, allocator).
    pub reps: usize,
    /// Tiny inputs (a smoke run).
    pub quick: bool,
    /// Threads of the C benchmarks (default [`DEFAULT_THREADS`]).
    pub threads: usize,
    /// Show a progress bar.
    pub progress: bool,
    /// Where compiled programs, inputs and outputs go (`<target>/release/c-programs/run-<pid>`,
    /// one per harness process so concurrent runs do not collide; removed at the end).
    pub work_dir: PathBuf,
    /// Where the preload libraries are.
    pub lib_dir: PathBuf,
    /// The harness binary, re-executed as the meter of each run.
    pub harness: PathBuf,
}

impl COptions {
    /// How long one run may take before it is killed.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(if self.quick { 30 } else { 120 })
    }
}

/// The table's settings from the command line's selections: `allocators` and `programs` are
/// comma-separated names (`None`: all); `threads` is the C benchmarks' thread count; `exe` is
/// the harness binary (the preload libraries and the work directory are under its target
/// directory). `Err` names the valid choices.
pub fn options(
    allocators: Option<&str>,
    programs: Option<&str>,
    reps: usize,
    quick: bool,
    threads: usize,
    progress: bool,
    exe: &Path,
) -> Result<COptions, String> {
    let lib_dir = libraries::lib_dir(exe);
    let valid = libraries::valid_names(&libraries::our_names(&lib_dir));
    let valid: Vec<&str> = valid.iter().map(String::as_str).collect();
    let allocators = selection::parse_names(allocators, &valid, "allocator")?;
    let names: Vec<&str> = programs::PROGRAMS.iter().map(|p| p.name).collect();
    let programs = selection::parse_names(programs, &names, "program")?;
    if reps == 0 {
        return Err("--reps must be at least 1".into());
    }
    if !(1..=MAX_THREADS).contains(&threads) {
        return Err(format!(
            "the C programs' thread count must be 1 to {MAX_THREADS}, not {threads}"
        ));
    }
    Ok(COptions {
        allocators,
        programs,
        reps,
        quick,
        threads,
        progress,
        work_dir: lib_dir
            .join("c-programs")
            .join(format!("run-{}", std::process::id())),
        lib_dir,
        harness: exe.to_path_buf(),
    })
}

/// Of the allocators chosen for the Rust workloads, those the C table has too (as a selection
/// for [`options`]; `None` if that is all of the table's).
pub fn allocators_of_run(chosen: &[String], exe: &Path) -> Option<String> {
    let valid = libraries::valid_names(&libraries::our_names(&libraries::lib_dir(exe)));
    let both: Vec<&str> = valid
        .iter()
        .filter(|v| chosen.contains(v))
        .map(String::as_str)
        .collect();
    if both.len() == valid.len() {
        None
    } else if both.is_empty() {
        // Nothing in common (say, only `talc`): system malloc alone, rather than everything.
        Some(SYSTEM.to_string())
    } else {
        Some(both.join(","))
    }
}

/// The selected allocators with their libraries, ours built first (see
/// [`libraries::ensure_built`]); `Err` says what failed and the command that builds them.
pub fn allocators(opts: &COptions) -> Result<Vec<PreloadAllocator>, String> {
    let ours = libraries::our_names(&opts.lib_dir);
    let wanted: Vec<String> = opts
        .allocators
        .iter()
        .filter(|a| ours.contains(a))
        .cloned()
        .collect();
    libraries::ensure_built(&wanted, &opts.lib_dir)?;
    Ok(libraries::resolve(&opts.allocators, &opts.lib_dir))
}

/// One run of one program under one allocator.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CRun {
    /// Program name.
    pub program: String,
    /// Allocator name.
    pub allocator: String,
    /// Repetition index.
    pub rep: usize,
    /// `ok`, `skipped` or `failed`.
    pub status: Status,
    /// Wall time from start to exit, ms.
    pub wall_ms: f64,
    /// Peak RSS of the program (`wait4`'s `ru_maxrss`), bytes.
    pub peak_rss_bytes: u64,
    /// Why skipped or failed.
    pub reason: String,
}

impl CRun {
    fn not_run(program: &str, allocator: &str, rep: usize, status: Status, reason: &str) -> Self {
        CRun {
            program: program.into(),
            allocator: allocator.into(),
            rep,
            status,
            reason: reason.into(),
            ..CRun::default()
        }
    }
}

/// One (program, allocator) line of `c_programs.csv`: medians over the successful repetitions
/// with their min-max spread.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CRow {
    /// Program name.
    pub program: String,
    /// Allocator name.
    pub allocator: String,
    /// Successful repetitions behind the medians.
    pub reps: usize,
    /// Median wall time, ms.
    pub wall_ms: f64,
    /// Fastest repetition, ms.
    pub wall_ms_min: f64,
    /// Slowest repetition, ms.
    pub wall_ms_max: f64,
    /// Median peak RSS, bytes.
    pub peak_rss_bytes: u64,
    /// Smallest peak RSS of the repetitions.
    pub peak_rss_min_bytes: u64,
    /// Largest peak RSS of the repetitions.
    pub peak_rss_max_bytes: u64,
    /// `ok` (every repetition ran and matched system's output), `skipped` or `failed` (any
    /// repetition failed; the medians are then over the others, if any).
    pub status: Status,
    /// Why skipped or failed.
    pub reason: String,
}

/// A program as it was run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ProgramInfo {
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// The command line (empty if it could not be prepared).
    pub command: String,
}

/// An allocator as it was run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct AllocatorInfo {
    /// Its name.
    pub name: String,
    /// The preloaded library (empty for system malloc).
    pub library: String,
}

/// The settings of a C-program run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CConfig {
    /// Programs, in table order.
    pub programs: Vec<ProgramInfo>,
    /// Allocators, in column order.
    pub allocators: Vec<AllocatorInfo>,
    /// Repetitions per (program, allocator).
    pub reps: usize,
    /// Whether the inputs were the `--quick` tiny ones.
    pub quick: bool,
    /// Threads of the C benchmarks (0 in files written before it was a parameter: 2 then).
    #[serde(default)]
    pub threads: usize,
    /// Wall time of the whole table, seconds.
    pub total_seconds: f64,
    /// The peak RSS the meter reports for `/bin/true`: no run can report less (the meter's own
    /// footprint when it starts the program; see [`measure`]). 0 if not measured.
    #[serde(default)]
    pub rss_floor_bytes: u64,
}

/// Everything `c_programs.json` holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CProgramsFile {
    /// The machine.
    pub machine: Machine,
    /// The settings.
    pub config: CConfig,
    /// Aggregated rows (as in the CSV).
    pub rows: Vec<CRow>,
    /// Every run.
    pub runs: Vec<CRun>,
}

/// A program ready to run, or why it cannot be.
type Ready = Result<Prepared, (Status, String)>;

/// Runs the table: prepares the programs, then repetitions outermost, programs, then
/// allocators innermost (system first in each round, so its output is the reference before
/// anyone else's is checked).
pub fn run(opts: &COptions, allocators: &[PreloadAllocator]) -> CProgramsFile {
    let machine = Machine::detect();
    let started = Instant::now();
    let scale = Scale {
        quick: opts.quick,
        threads: opts.threads,
    };
    let _ = std::fs::create_dir_all(&opts.work_dir);
    let prepared: Vec<(String, Ready)> = opts
        .programs
        .iter()
        .map(|p| (p.clone(), programs::prepare(p, scale, &opts.work_dir)))
        .collect();
    // System first in each round; columns keep the caller's order.
    let mut order: Vec<&PreloadAllocator> = allocators.iter().collect();
    order.sort_by_key(|a| a.name != SYSTEM);
    let system_measured = allocators.iter().any(|a| a.name == SYSTEM);
    let rss_floor_bytes = rss_floor(opts);

    let total = opts.reps * prepared.len() * allocators.len();
    let bar = if opts.progress {
        ProgressBar::new(total as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} C runs  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut references: Vec<Option<Vec<u8>>> = vec![None; prepared.len()];
    let mut runs = Vec::with_capacity(total);
    let mut given_up: Vec<(String, String)> = Vec::new();
    for rep in 0..opts.reps {
        for (pi, (name, ready)) in prepared.iter().enumerate() {
            let prog = match ready {
                Ok(p) => p,
                Err((status, reason)) => {
                    for a in allocators {
                        runs.push(CRun::not_run(name, &a.name, rep, *status, reason));
                        bar.inc(1);
                    }
                    continue;
                }
            };
            if references[pi].is_none() && !system_measured {
                // System was filtered out: run it once, unmeasured, for the reference output.
                let system = PreloadAllocator::system();
                let m = measure::run(&opts.harness, prog, &system, &opts.work_dir, opts.timeout());
                if let Ok(m) = m {
                    if verdict::judge(&m, None).0 == Status::Ok {
                        references[pi] = Some(m.stdout);
                    }
                }
            }
            for a in &order {
                bar.set_message(format!("{name} / {} / rep {}", a.name, rep + 1));
                let key = (name.clone(), a.name.clone());
                let r = if let Some(reason) = &a.unavailable {
                    CRun::not_run(name, &a.name, rep, Status::Skipped, reason)
                } else if given_up.contains(&key) {
                    CRun::not_run(
                        name,
                        &a.name,
                        rep,
                        Status::Failed,
                        "not repeated: an earlier repetition timed out or passed the memory limit",
                    )
                } else {
                    let r = measure_one(prog, a, rep, opts, &mut references[pi]);
                    if r.reason.starts_with(verdict::TIMED_OUT)
                        || r.reason.starts_with(verdict::OVER_MEMORY)
                    {
                        given_up.push(key);
                    }
                    r
                };
                if r.status == Status::Failed {
                    bar.println(format!("FAILED {name} / {}: {}", a.name, r.reason));
                }
                runs.push(r);
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    let _ = std::fs::remove_dir_all(&opts.work_dir);
    let names: Vec<String> = allocators.iter().map(|a| a.name.clone()).collect();
    let rows = aggregate(&opts.programs, &names, &runs);
    let config = CConfig {
        programs: prepared
            .iter()
            .map(|(name, ready)| ProgramInfo {
                name: name.clone(),
                description: programs::find(name).map_or("", |p| p.description).into(),
                command: ready.as_ref().map_or(String::new(), |p| p.display.clone()),
            })
            .collect(),
        allocators: allocators
            .iter()
            .map(|a| AllocatorInfo {
                name: a.name.clone(),
                library: a
                    .library
                    .as_ref()
                    .map_or(String::new(), |l| l.display().to_string()),
            })
            .collect(),
        reps: opts.reps,
        quick: opts.quick,
        threads: opts.threads,
        total_seconds: started.elapsed().as_secs_f64(),
        rss_floor_bytes,
    };
    CProgramsFile {
        machine,
        config,
        rows,
        runs,
    }
}

/// The peak RSS reported for a program that does nothing (`true`), 0 if it cannot be run.
fn rss_floor(opts: &COptions) -> u64 {
    let Some(exe) = programs::find_on_path("true") else {
        return 0;
    };
    let nothing = Prepared {
        name: "true".into(),
        exe,
        args: Vec::new(),
        env: Vec::new(),
        stdin: None,
        display: String::new(),
        measures_itself: false,
    };
    let system = PreloadAllocator::system();
    measure::run(
        &opts.harness,
        &nothing,
        &system,
        &opts.work_dir,
        opts.timeout(),
    )
    .map_or(0, |m| m.peak_rss_bytes)
}

/// One measured run, judged against the reference output (which the first good system run sets).
fn measure_one(
    prog: &Prepared,
    a: &PreloadAllocator,
    rep: usize,
    opts: &COptions,
    reference: &mut Option<Vec<u8>>,
) -> CRun {
    let m = match measure::run(&opts.harness, prog, a, &opts.work_dir, opts.timeout()) {
        Ok(m) => m,
        Err(e) => return CRun::not_run(&prog.name, &a.name, rep, Status::Failed, &e),
    };
    let (status, mut reason) = verdict::judge(&m, reference.as_deref());
    let sets_reference = status == Status::Ok && a.name == SYSTEM && reference.is_none();
    if sets_reference {
        reason.clear();
    }
    let out = CRun {
        program: prog.name.clone(),
        allocator: a.name.clone(),
        rep,
        status,
        wall_ms: m.wall_ms,
        peak_rss_bytes: m.peak_rss_bytes,
        reason,
    };
    if sets_reference {
        *reference = Some(m.stdout);
    }
    out
}

/// Folds the repetitions into one row per (program, allocator), programs outermost.
pub fn aggregate(programs: &[String], allocators: &[String], runs: &[CRun]) -> Vec<CRow> {
    let mut rows = Vec::new();
    for p in programs {
        for a in allocators {
            let reps: Vec<&CRun> = runs
                .iter()
                .filter(|r| &r.program == p && &r.allocator == a)
                .collect();
            if !reps.is_empty() {
                rows.push(aggregate_one(p, a, &reps));
            }
        }
    }
    rows
}

fn aggregate_one(program: &str, allocator: &str, reps: &[&CRun]) -> CRow {
    let ok: Vec<&&CRun> = reps.iter().filter(|r| r.status == Status::Ok).collect();
    let wall = spread(&ok.iter().map(|r| r.wall_ms).collect::<Vec<_>>());
    let rss = spread(
        &ok.iter()
            .map(|r| r.peak_rss_bytes as f64)
            .collect::<Vec<_>>(),
    );
    let bad: Vec<&&CRun> = reps.iter().filter(|r| r.status != Status::Ok).collect();
    let (status, reason) = match bad.first() {
        // Ok, with a note if a run had one (output not checked).
        None => (
            Status::Ok,
            reps.iter()
                .map(|r| r.reason.clone())
                .find(|r| !r.is_empty())
                .unwrap_or_default(),
        ),
        Some(first) if first.status == Status::Skipped => (Status::Skipped, first.reason.clone()),
        Some(first) if bad.len() == reps.len() => (Status::Failed, first.reason.clone()),
        Some(first) => (
            Status::Failed,
            format!(
                "{} of {} repetitions failed: {}",
                bad.len(),
                reps.len(),
                first.reason
            ),
        ),
    };
    CRow {
        program: program.into(),
        allocator: allocator.into(),
        reps: ok.len(),
        wall_ms: wall.map_or(0.0, |s| s.median),
        wall_ms_min: wall.map_or(0.0, |s| s.min),
        wall_ms_max: wall.map_or(0.0, |s| s.max),
        peak_rss_bytes: rss.map_or(0.0, |s| s.median) as u64,
        peak_rss_min_bytes: rss.map_or(0.0, |s| s.min) as u64,
        peak_rss_max_bytes: rss.map_or(0.0, |s| s.max) as u64,
        status,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(a: &str, rep: usize, status: Status, ms: f64) -> CRun {
        CRun {
            program: "sort".into(),
            allocator: a.into(),
            rep,
            status,
            wall_ms: ms,
            peak_rss_bytes: (ms as u64) << 20,
            reason: if status == Status::Ok {
                String::new()
            } else {
                "why".into()
            },
        }
    }

    #[test]
    fn aggregates_medians_and_keeps_failures_visible() {
        let runs = vec![
            run("system", 0, Status::Ok, 10.0),
            run("system", 1, Status::Ok, 30.0),
            run("system", 2, Status::Ok, 20.0),
            run("bump", 0, Status::Ok, 5.0),
            run("bump", 1, Status::Failed, 0.0),
            run("jemalloc", 0, Status::Skipped, 0.0),
        ];
        let rows = aggregate(
            &["sort".into()],
            &["bump".into(), "system".into(), "jemalloc".into()],
            &runs,
        );
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].status, Status::Failed);
        assert_eq!(rows[0].reason, "1 of 2 repetitions failed: why");
        assert_eq!((rows[0].reps, rows[0].wall_ms), (1, 5.0));
        let s = &rows[1];
        assert_eq!((s.status, s.reps), (Status::Ok, 3));
        assert_eq!(
            (s.wall_ms, s.wall_ms_min, s.wall_ms_max),
            (20.0, 10.0, 30.0)
        );
        assert_eq!(s.peak_rss_bytes, 20 << 20);
        assert_eq!(rows[2].status, Status::Skipped);
        assert_eq!(rows[2].reason, "why");
    }
}
