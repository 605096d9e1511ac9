//! `heap-profile`: reads a heap profile written by the allocators' profiler (pprof format) and
//! prints the top allocation sites, symbolised, or renders a flame graph SVG.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(about = "Read a heap profile of the allocators' sampling profiler (pprof format)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which values to show.
#[derive(Clone, Copy, ValueEnum)]
enum Space {
    /// Bytes live when the profile was written.
    Inuse,
    /// Bytes allocated since the program started.
    Alloc,
}

#[derive(Subcommand)]
enum Command {
    /// Print the allocation sites holding (and having allocated) the most memory.
    Top {
        /// The profile file.
        profile: PathBuf,
        /// How many sites to print.
        #[arg(short, long, default_value_t = 20)]
        n: usize,
    },
    /// Render a flame graph SVG of the profile's call stacks.
    Flamegraph {
        /// The profile file.
        profile: PathBuf,
        /// The SVG file to write.
        #[arg(short, long)]
        output: PathBuf,
        /// In-use bytes or allocated bytes.
        #[arg(long, value_enum, default_value_t = Space::Inuse)]
        space: Space,
    },
}

fn mib(b: i64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Top { profile, n } => top(&profile, n),
        Command::Flamegraph {
            profile,
            output,
            space,
        } => flame(&profile, &output, space),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("heap-profile: {e}");
            ExitCode::FAILURE
        }
    }
}

fn top(path: &PathBuf, n: usize) -> std::io::Result<()> {
    let p = heap_profile::read_pprof(path)?;
    let mut sym = heap_profile::Symbolizer::new();
    let sites = heap_profile::top_sites(&p, &mut sym);
    let total_inuse: i64 = sites.iter().map(|s| s.inuse_bytes).sum();
    let total_alloc: i64 = sites.iter().map(|s| s.alloc_bytes).sum();
    println!(
        "sampling rate {} bytes; in use {}, allocated {} (estimated)",
        p.period,
        mib(total_inuse),
        mib(total_alloc)
    );
    println!(
        "{:>12} {:>6} {:>12} {:>6}  site",
        "in use", "%", "allocated", "%"
    );
    for s in sites.iter().take(n) {
        let pct = |v: i64, t: i64| {
            if t > 0 {
                100.0 * v as f64 / t as f64
            } else {
                0.0
            }
        };
        println!(
            "{:>12} {:>5.1}% {:>12} {:>5.1}%  {}{}",
            mib(s.inuse_bytes),
            pct(s.inuse_bytes, total_inuse),
            mib(s.alloc_bytes),
            pct(s.alloc_bytes, total_alloc),
            s.function,
            s.location
                .as_ref()
                .map(|l| format!(" ({l})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn flame(path: &PathBuf, output: &PathBuf, space: Space) -> std::io::Result<()> {
    let p = heap_profile::read_pprof(path)?;
    let mut sym = heap_profile::Symbolizer::new();
    let (index, what) = match space {
        Space::Inuse => (heap_profile::INUSE_SPACE, "in-use bytes"),
        Space::Alloc => (heap_profile::ALLOC_SPACE, "allocated bytes"),
    };
    let lines = heap_profile::collapsed(&p, &mut sym, index);
    let file = std::fs::File::create(output)?;
    let title = format!("heap profile: {what} ({})", path.display());
    heap_profile::flamegraph(&lines, &title, std::io::BufWriter::new(file))
}
