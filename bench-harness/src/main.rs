//! `bench-harness`: the command line. `run` measures and writes the report (the Rust workloads,
//! then the C programs under `LD_PRELOAD`), `c-programs` runs only the C-program table, `list`
//! names the allocators, workloads and programs, `report` rewrites the report from saved
//! results, `compare` checks that two runs agree, `misuse` prints the heap-misuse table; the
//! hidden `cell` subcommand is what `run` re-executes for each cell, the hidden `meter` what
//! `c-programs` re-executes to start and measure each program, the hidden `misuse-case` what
//! `misuse` re-executes for each case.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use bench_harness::c_programs::{self, COptions, CProgramsFile};
use bench_harness::cell::{self, CellSpec};
use bench_harness::registry::{self, ALLOCATORS, HARDENED_SUFFIX};
use bench_harness::runner::{self, RunOptions, DEFAULT_SEED};
use bench_harness::workloads::WORKLOADS;
use bench_harness::{compare, report, results_io, selection};

#[derive(Parser)]
#[command(
    name = "bench-harness",
    version,
    about = "Measures the suite's allocators against the baselines and writes the comparative report"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// The options `run` and `c-programs` share.
#[derive(Args)]
struct Shared {
    /// Allocators, comma-separated (default: all; `c-programs` takes ours, system, mimalloc and
    /// jemalloc).
    #[arg(long)]
    allocators: Option<String>,
    /// C programs, comma-separated (default: all; see `list`).
    #[arg(long)]
    programs: Option<String>,
    /// Repetitions per cell and per C program (default 5; 1 with --quick).
    #[arg(long)]
    reps: Option<usize>,
    /// A smoke run: short cells, small live sets, tiny C-program inputs, one repetition.
    #[arg(long)]
    quick: bool,
    /// Output directory.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

impl Shared {
    /// The repetitions asked for, or the default for the kind of run.
    fn reps(&self) -> usize {
        self.reps.unwrap_or(if self.quick { 1 } else { 5 })
    }

    /// The C table's options for `allocators` (ours, system, mimalloc, jemalloc if `None`),
    /// its C benchmarks at `threads` threads.
    fn c_options(
        &self,
        allocators: Option<&str>,
        threads: usize,
        exe: &Path,
    ) -> Result<COptions, String> {
        c_programs::options(
            allocators,
            self.programs.as_deref(),
            self.reps(),
            self.quick,
            threads,
            !self.no_progress,
            exe,
        )
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs the comparison and writes results.csv, results.json, REPORT.md and the charts, then
    /// the C programs under LD_PRELOAD (c_programs.csv, c_programs.json).
    Run {
        #[command(flatten)]
        shared: Shared,
        /// Workloads, comma-separated (default: all).
        #[arg(long)]
        workloads: Option<String>,
        /// Thread counts, comma-separated.
        #[arg(long, default_value = "1,2")]
        threads: String,
        /// Seed of the workloads' random choices.
        #[arg(long, default_value_t = DEFAULT_SEED)]
        seed: u64,
        /// A bench-harness binary built with `--features hardened`: each of our selected
        /// allocators also runs as `<name>-hardened` in it, side by side with the plain build
        /// (and mimalloc, if selected, as `mimalloc-hardened`: its secure mode).
        #[arg(long)]
        hardened_exe: Option<PathBuf>,
        /// Each of our selected allocators also runs as `<name>-unsampled`, the same binary
        /// with the heap profiler's sampling off (ALLOCATORS_PROFILE_RATE=0 in its cells), side
        /// by side with the plain cells (which sample at the rate of this environment, else the
        /// build's default); the report gets a "Cost of sampling" table.
        #[arg(long)]
        sampling_cost: bool,
        /// Skip the C programs under LD_PRELOAD.
        #[arg(long)]
        no_c_programs: bool,
        /// Threads of the C benchmarks of the C-program table.
        #[arg(long, default_value_t = c_programs::DEFAULT_THREADS)]
        c_threads: usize,
    },
    /// Runs only the C programs under each allocator via LD_PRELOAD and writes c_programs.csv,
    /// c_programs.json and REPORT.md's section "C programs under LD_PRELOAD".
    CPrograms {
        #[command(flatten)]
        shared: Shared,
        /// Threads of the C benchmarks (recorded in c_programs.json and the report).
        #[arg(long, default_value_t = c_programs::DEFAULT_THREADS)]
        threads: usize,
    },
    /// Lists the allocators, workloads and C programs.
    List,
    /// Rewrites REPORT.md and the charts from OUT/results.json (and OUT/c_programs.json).
    Report {
        /// Directory holding results.json and/or c_programs.json.
        #[arg(long, default_value = "results")]
        out: PathBuf,
        /// Also rewrite results.json in the compact form a run writes now (one record per
        /// line, time series downsampled), e.g. to shrink a file written by an older harness.
        #[arg(long)]
        compact: bool,
    },
    /// Runs one program and prints its wall time and peak RSS as JSON (used by `c-programs`).
    #[command(hide = true)]
    Meter {
        /// What to run, as JSON.
        #[arg(long)]
        spec: String,
    },
    /// Compares two runs' results (DIR/results.csv): how many cells' medians lie within the
    /// other run's spread, how far medians and geometric means moved, and the outliers.
    Compare {
        /// The first run's output directory.
        first: PathBuf,
        /// The second run's output directory.
        second: PathBuf,
    },
    /// Commits each heap-misuse case (overflows, double and invalid frees, write after free,
    /// zero-size and huge requests) against each allocator in a child process and prints the
    /// markdown table of what became of it. Build with `--features hardened` for the hardened
    /// allocators and mimalloc's secure mode.
    Misuse,
    /// Commits one misuse case in this process (used by `misuse`).
    #[command(hide = true)]
    MisuseCase {
        /// The allocator (see `bench_harness::misuse::ALLOCATORS`).
        #[arg(long)]
        allocator: String,
        /// The case (see `bench_harness::misuse::CASES`).
        #[arg(long)]
        case: String,
    },
    /// Runs one cell in this process and prints its result as JSON (used by `run`).
    #[command(hide = true)]
    Cell {
        /// The cell, as JSON.
        #[arg(long)]
        spec: String,
    },
    /// Measures redis-server under redis-benchmark (the `redis` C program; used by `c-programs`).
    #[command(hide = true)]
    RedisDriver {
        /// The redis-server executable.
        #[arg(long)]
        server: PathBuf,
        /// The redis-benchmark executable.
        #[arg(long)]
        benchmark: PathBuf,
        /// Requests per benchmark test.
        #[arg(long)]
        requests: u64,
        /// The whole drive's time budget, seconds.
        #[arg(long, default_value_t = 100)]
        timeout_secs: u64,
    },
}

/// Puts `<name>-hardened` right after each allocator in `names` that has a hardened twin (ours,
/// and mimalloc's secure mode).
fn with_hardened_twins(names: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(names.len() * 2);
    for name in names {
        let twin = format!("{name}{HARDENED_SUFFIX}");
        out.push(name);
        if registry::find(&twin).is_some() {
            out.push(twin);
        }
    }
    out
}

/// Puts `<name>-unsampled` right after each of our plain allocators in `names` (see
/// `run --sampling-cost`).
fn with_unsampled_twins(names: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(names.len() * 2);
    for name in names {
        let twin = format!("{name}{}", registry::UNSAMPLED_SUFFIX);
        out.push(name);
        if registry::find(&twin).is_some() {
            out.push(twin);
        }
    }
    out
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

fn this_exe() -> Result<PathBuf, String> {
    std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))
}

/// Builds the preload libraries and runs the C-program table.
fn run_c_programs(opts: &COptions) -> Result<CProgramsFile, String> {
    let allocators = c_programs::allocators(opts)?;
    Ok(c_programs::run(opts, &allocators))
}

fn c_summary(c: &CProgramsFile) -> String {
    let count = |s: cell::Status| c.rows.iter().filter(|r| r.status == s).count();
    format!(
        "{} C-program rows in {:.0} s: {} ok, {} skipped, {} failed",
        c.rows.len(),
        c.config.total_seconds,
        count(cell::Status::Ok),
        count(cell::Status::Skipped),
        count(cell::Status::Failed)
    )
}

fn write_all(out: &Path, results: &results_io::ResultsFile) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    results_io::write_csv(&out.join("results.csv"), &results.rows)?;
    results_io::write_results_json(&out.join("results.json"), results)?;
    report::write(out, results)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::List => {
            println!("allocators:");
            for a in ALLOCATORS {
                println!("  {:<24} {:?}: {}", a.name, a.family, a.description);
            }
            println!("workloads:");
            for w in WORKLOADS {
                println!("  {:<16} {} (stresses: {})", w.name, w.pattern, w.stresses);
            }
            println!("C programs (c-programs; allocators: ours, system, mimalloc, jemalloc):");
            for p in c_programs::programs::PROGRAMS {
                println!("  {:<18} {}", p.name, p.description);
            }
            ExitCode::SUCCESS
        }
        Cmd::Meter { spec } => {
            let spec: c_programs::measure::MeterSpec = match serde_json::from_str(&spec) {
                Ok(s) => s,
                Err(e) => return usage_error(&format!("bad meter spec: {e}")),
            };
            match c_programs::measure::meter(&spec) {
                Ok(r) => {
                    println!("{}", serde_json::to_string(&r).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Err(e) => failure(&e),
            }
        }
        Cmd::Cell { spec } => {
            let spec: CellSpec = match serde_json::from_str(&spec) {
                Ok(s) => s,
                Err(e) => return usage_error(&format!("bad cell spec: {e}")),
            };
            let r = cell::run_cell(&spec);
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Cmd::RedisDriver {
            server,
            benchmark,
            requests,
            timeout_secs,
        } => {
            let timeout = std::time::Duration::from_secs(timeout_secs);
            let args =
                match c_programs::redis::DriverArgs::from_env(server, benchmark, requests, timeout)
                {
                    Ok(a) => a,
                    Err(e) => return usage_error(&e),
                };
            match c_programs::redis::drive(&args) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => failure(&format!("redis: {e}")),
            }
        }
        Cmd::Compare { first, second } => {
            let read = |dir: &Path| results_io::read_csv(&dir.join("results.csv"));
            let (a, b) = match (read(&first), read(&second)) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(e), _) | (_, Err(e)) => return usage_error(&e),
            };
            let pairs = compare::pair(&a, &b);
            if pairs.is_empty() {
                return usage_error("the two runs have no measured cell in common");
            }
            print!("{}", compare::markdown(&compare::agreement(&pairs)));
            ExitCode::SUCCESS
        }
        Cmd::Report { out, compact } => match report::write_from_saved(&out, compact) {
            Ok(()) => {
                println!("wrote {}", out.join("REPORT.md").display());
                ExitCode::SUCCESS
            }
            Err(e) => failure(&e),
        },
        Cmd::Run {
            shared,
            workloads,
            threads,
            seed,
            hardened_exe,
            sampling_cost,
            no_c_programs,
            c_threads,
        } => run_cmd(
            &shared,
            workloads.as_deref(),
            &threads,
            seed,
            (hardened_exe, sampling_cost),
            (!no_c_programs).then_some(c_threads),
        ),
        Cmd::CPrograms { shared, threads } => c_programs_cmd(&shared, threads),
        Cmd::Misuse => match this_exe() {
            Ok(exe) => {
                print!("{}", bench_harness::misuse::table(&exe));
                ExitCode::SUCCESS
            }
            Err(e) => failure(&e),
        },
        Cmd::MisuseCase { allocator, case } => {
            match bench_harness::misuse::run_case(&allocator, &case) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => usage_error(&e),
            }
        }
    }
}

/// Prints `error: e` and fails (an error of the run itself, not of its arguments).
fn failure(e: &str) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::FAILURE
}

/// `run`: the Rust workloads in every selected cell, then (unless left out: `c_threads` is
/// `None`) the C table with its C benchmarks at `c_threads` threads.
fn run_cmd(
    shared: &Shared,
    workloads: Option<&str>,
    threads: &str,
    seed: u64,
    (hardened_exe, sampling_cost): (Option<PathBuf>, bool),
    c_threads: Option<usize>,
) -> ExitCode {
    let names: Vec<&str> = ALLOCATORS.iter().map(|a| a.name).collect();
    let mut allocators =
        match selection::parse_names(shared.allocators.as_deref(), &names, "allocator") {
            Ok(v) => v,
            Err(e) => return usage_error(&e),
        };
    if let Some(h) = &hardened_exe {
        if !h.is_file() {
            return usage_error(&format!(
                "--hardened-exe {}: no such file (build it with `cargo build --release -p bench-harness --features hardened --target-dir target/hardened`)",
                h.display()
            ));
        }
        allocators = with_hardened_twins(allocators);
    }
    if sampling_cost {
        allocators = with_unsampled_twins(allocators);
    }
    let names: Vec<&str> = WORKLOADS.iter().map(|w| w.name).collect();
    let workloads = match selection::parse_names(workloads, &names, "workload") {
        Ok(v) => v,
        Err(e) => return usage_error(&e),
    };
    let threads = match selection::parse_threads(threads) {
        Ok(v) => v,
        Err(e) => return usage_error(&e),
    };
    let reps = shared.reps();
    if reps == 0 {
        return usage_error("--reps must be at least 1");
    }
    let exe = match this_exe() {
        Ok(p) => p,
        Err(e) => return failure(&e),
    };
    // The C table's settings and libraries first, so a problem shows before the long part.
    let c_setup = if let Some(c_threads) = c_threads {
        let chosen = c_programs::allocators_of_run(&allocators, &exe);
        let opts = match shared.c_options(chosen.as_deref(), c_threads, &exe) {
            Ok(o) => o,
            Err(e) => return usage_error(&e),
        };
        match c_programs::allocators(&opts) {
            Ok(a) => Some((opts, a)),
            Err(e) => return failure(&format!("{e}\n(or pass --no-c-programs)")),
        }
    } else {
        None
    };
    let opts = RunOptions {
        allocators,
        workloads,
        threads,
        reps,
        quick: shared.quick,
        seed,
        progress: !shared.no_progress,
        exe,
        hardened_exe,
    };
    let results = runner::run(&opts);
    let c = c_setup.map(|(opts, allocators)| c_programs::run(&opts, &allocators));
    let out = &shared.out;
    if let Some(c) = &c {
        if let Err(e) = c_programs::io::write_all(out, c) {
            return failure(&e);
        }
    }
    if let Err(e) = write_all(out, &results) {
        return failure(&e);
    }
    let count = |s: cell::Status| results.cells.iter().filter(|c| c.status == s).count();
    println!(
        "{} cells in {:.0} s: {} ok, {} skipped, {} failed; wrote {}",
        results.cells.len(),
        results.config.total_seconds,
        count(cell::Status::Ok),
        count(cell::Status::Skipped),
        count(cell::Status::Failed),
        out.join("REPORT.md").display()
    );
    if let Some(c) = &c {
        println!("{}", c_summary(c));
    }
    ExitCode::SUCCESS
}

/// `c-programs`: only the C table (its C benchmarks at `threads` threads), then the report
/// regenerated from what is saved in `out`.
fn c_programs_cmd(shared: &Shared, threads: usize) -> ExitCode {
    let exe = match this_exe() {
        Ok(p) => p,
        Err(e) => return failure(&e),
    };
    let opts = match shared.c_options(shared.allocators.as_deref(), threads, &exe) {
        Ok(o) => o,
        Err(e) => return usage_error(&e),
    };
    let c = match run_c_programs(&opts) {
        Ok(c) => c,
        Err(e) => return failure(&e),
    };
    let out = &shared.out;
    let written =
        c_programs::io::write_all(out, &c).and_then(|()| report::write_from_saved(out, false));
    if let Err(e) = written {
        return failure(&e);
    }
    println!(
        "{}; wrote {} and {}",
        c_summary(&c),
        out.join(c_programs::io::CSV_FILE).display(),
        out.join("REPORT.md").display()
    );
    ExitCode::SUCCESS
}
