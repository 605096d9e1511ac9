//! `bench-harness`: the command line. `run` measures and writes the report (the Rust workloads,
//! then the C programs under `LD_PRELOAD`), `c-programs` runs only the C-program table, `list`
//! names the allocators, workloads and programs, `report` rewrites the report from saved
//! results, `compare` checks that two runs agree; the hidden `cell` subcommand is what `run`
//! re-executes for each cell, the hidden `meter` what `c-programs` re-executes to start and
//! measure each program.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use bench_harness::c_programs::{self, COptions, CProgramsFile};
use bench_harness::cell::{self, CellSpec};
use bench_harness::registry::{Family, ALLOCATORS, HARDENED_SUFFIX};
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

#[derive(Subcommand)]
enum Cmd {
    /// Runs the comparison and writes results.csv, results.json, REPORT.md and the charts, then
    /// the C programs under LD_PRELOAD (c_programs.csv, c_programs.json).
    Run {
        /// Allocators, comma-separated (default: all).
        #[arg(long)]
        allocators: Option<String>,
        /// Workloads, comma-separated (default: all).
        #[arg(long)]
        workloads: Option<String>,
        /// Thread counts, comma-separated.
        #[arg(long, default_value = "1,2")]
        threads: String,
        /// Repetitions per cell (default 5; 1 with --quick).
        #[arg(long)]
        reps: Option<usize>,
        /// A smoke run: short cells, small live sets, one repetition.
        #[arg(long)]
        quick: bool,
        /// Output directory.
        #[arg(long, default_value = "results")]
        out: PathBuf,
        /// Seed of the workloads' random choices.
        #[arg(long, default_value_t = DEFAULT_SEED)]
        seed: u64,
        /// No progress bar.
        #[arg(long)]
        no_progress: bool,
        /// A bench-harness binary built with `--features hardened`: each of our selected
        /// allocators also runs as `<name>-hardened` in it, side by side with the plain build.
        #[arg(long)]
        hardened_exe: Option<PathBuf>,
        /// C programs, comma-separated (default: all; see `list`).
        #[arg(long)]
        programs: Option<String>,
        /// Skip the C programs under LD_PRELOAD.
        #[arg(long)]
        no_c_programs: bool,
    },
    /// Runs only the C programs under each allocator via LD_PRELOAD and writes c_programs.csv,
    /// c_programs.json and REPORT.md's section "C programs under LD_PRELOAD".
    CPrograms {
        /// Allocators, comma-separated (default: all: ours, system, mimalloc, jemalloc).
        #[arg(long)]
        allocators: Option<String>,
        /// Programs, comma-separated (default: all; see `list`).
        #[arg(long)]
        programs: Option<String>,
        /// Repetitions per program and allocator (default 5; 1 with --quick).
        #[arg(long)]
        reps: Option<usize>,
        /// A smoke run: tiny inputs, one repetition.
        #[arg(long)]
        quick: bool,
        /// Output directory.
        #[arg(long, default_value = "results")]
        out: PathBuf,
        /// No progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// Lists the allocators, workloads and C programs.
    List,
    /// Rewrites REPORT.md and the charts from OUT/results.json (and OUT/c_programs.json).
    Report {
        /// Directory holding results.json and/or c_programs.json.
        #[arg(long, default_value = "results")]
        out: PathBuf,
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
    /// Runs one cell in this process and prints its result as JSON (used by `run`).
    #[command(hide = true)]
    Cell {
        /// The cell, as JSON.
        #[arg(long)]
        spec: String,
    },
}

/// Puts `<name>-hardened` right after each of our allocators in `names`.
fn with_hardened_twins(names: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(names.len() * 2);
    for name in names {
        let ours = ALLOCATORS
            .iter()
            .any(|a| a.name == name && a.family == Family::Ours);
        let twin = format!("{name}{HARDENED_SUFFIX}");
        out.push(name);
        if ours {
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
    results_io::write_json(&out.join("results.json"), results)?;
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
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
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
        Cmd::Report { out } => match report::write_from_saved(&out) {
            Ok(()) => {
                println!("wrote {}", out.join("REPORT.md").display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Run {
            allocators,
            workloads,
            threads,
            reps,
            quick,
            out,
            seed,
            no_progress,
            hardened_exe,
            programs,
            no_c_programs,
        } => {
            let names: Vec<&str> = ALLOCATORS.iter().map(|a| a.name).collect();
            let mut allocators =
                match selection::parse_names(allocators.as_deref(), &names, "allocator") {
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
            let names: Vec<&str> = WORKLOADS.iter().map(|w| w.name).collect();
            let workloads = match selection::parse_names(workloads.as_deref(), &names, "workload") {
                Ok(v) => v,
                Err(e) => return usage_error(&e),
            };
            let threads = match selection::parse_threads(&threads) {
                Ok(v) => v,
                Err(e) => return usage_error(&e),
            };
            let reps = reps.unwrap_or(if quick { 1 } else { 5 });
            if reps == 0 {
                return usage_error("--reps must be at least 1");
            }
            let exe = match this_exe() {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            // The C table's settings and libraries first, so a problem shows before the long part.
            let c_setup = if no_c_programs {
                None
            } else {
                let chosen = c_programs::allocators_of_run(&allocators, &exe);
                let opts = match c_programs::options(
                    chosen.as_deref(),
                    programs.as_deref(),
                    reps,
                    quick,
                    !no_progress,
                    &exe,
                ) {
                    Ok(o) => o,
                    Err(e) => return usage_error(&e),
                };
                match c_programs::allocators(&opts) {
                    Ok(a) => Some((opts, a)),
                    Err(e) => {
                        eprintln!("error: {e}\n(or pass --no-c-programs)");
                        return ExitCode::FAILURE;
                    }
                }
            };
            let opts = RunOptions {
                allocators,
                workloads,
                threads,
                reps,
                quick,
                seed,
                progress: !no_progress,
                exe,
                hardened_exe,
            };
            let results = runner::run(&opts);
            let c = c_setup.map(|(opts, allocators)| c_programs::run(&opts, &allocators));
            if let Some(c) = &c {
                if let Err(e) = c_programs::io::write_all(&out, c) {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
            if let Err(e) = write_all(&out, &results) {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            let ok = results
                .cells
                .iter()
                .filter(|c| c.status == cell::Status::Ok)
                .count();
            let skipped = results
                .cells
                .iter()
                .filter(|c| c.status == cell::Status::Skipped)
                .count();
            let failed = results.cells.len() - ok - skipped;
            println!(
                "{} cells in {:.0} s: {ok} ok, {skipped} skipped, {failed} failed; wrote {}",
                results.cells.len(),
                results.config.total_seconds,
                out.join("REPORT.md").display()
            );
            if let Some(c) = &c {
                println!("{}", c_summary(c));
            }
            ExitCode::SUCCESS
        }
        Cmd::CPrograms {
            allocators,
            programs,
            reps,
            quick,
            out,
            no_progress,
        } => {
            let exe = match this_exe() {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let reps = reps.unwrap_or(if quick { 1 } else { 5 });
            let opts = match c_programs::options(
                allocators.as_deref(),
                programs.as_deref(),
                reps,
                quick,
                !no_progress,
                &exe,
            ) {
                Ok(o) => o,
                Err(e) => return usage_error(&e),
            };
            let c = match run_c_programs(&opts) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let written =
                c_programs::io::write_all(&out, &c).and_then(|()| report::write_from_saved(&out));
            if let Err(e) = written {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            println!(
                "{}; wrote {} and {}",
                c_summary(&c),
                out.join(c_programs::io::CSV_FILE).display(),
                out.join("REPORT.md").display()
            );
            ExitCode::SUCCESS
        }
    }
}
