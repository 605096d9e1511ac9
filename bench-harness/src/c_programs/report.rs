//! The "C programs under LD_PRELOAD" section of `REPORT.md`: the programs and their command
//! lines, wall-time and peak-RSS tables (median [min-max]), each followed by its ratios to
//! mimalloc (with geometric means; ratios to system malloc follow from the first table), and
//! the failed or skipped runs, one line per allocator and reason. Rendered from `c_programs.json` alone, so `bench-harness report` can redo it.

use std::fmt::Write as _;

use super::{CProgramsFile, CRow};
use crate::cell::Status;
use crate::registry::REFERENCE;
use crate::summary::{geomean, ratio};

/// The section's title.
pub const TITLE: &str = "C programs under LD_PRELOAD";

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

struct View<'a> {
    f: &'a CProgramsFile,
    allocators: Vec<&'a str>,
    programs: Vec<&'a str>,
}

impl<'a> View<'a> {
    fn new(f: &'a CProgramsFile) -> Self {
        View {
            f,
            allocators: f
                .config
                .allocators
                .iter()
                .map(|a| a.name.as_str())
                .collect(),
            programs: f.config.programs.iter().map(|p| p.name.as_str()).collect(),
        }
    }

    fn row(&self, p: &str, a: &str) -> Option<&'a CRow> {
        self.f
            .rows
            .iter()
            .find(|r| r.program == p && r.allocator == a)
    }

    fn ok(&self, p: &str, a: &str) -> Option<&'a CRow> {
        self.row(p, a).filter(|r| r.status == Status::Ok)
    }

    fn mark(&self, p: &str, a: &str) -> String {
        match self.row(p, a).map(|r| r.status) {
            Some(Status::Failed) => "failed".into(),
            Some(Status::Skipped) => "skipped".into(),
            _ => "-".into(),
        }
    }

    fn header(&self, o: &mut String) {
        let _ = writeln!(o, "| program | {} |", self.allocators.join(" | "));
        let _ = writeln!(o, "|---|{}", "---:|".repeat(self.allocators.len()));
    }

    /// A table of one value per (program, allocator).
    fn values(&self, o: &mut String, cell: impl Fn(&CRow) -> String) {
        self.header(o);
        for p in &self.programs {
            let cells: Vec<String> = self
                .allocators
                .iter()
                .map(|a| self.ok(p, a).map_or_else(|| self.mark(p, a), &cell))
                .collect();
            let _ = writeln!(o, "| {p} | {} |", cells.join(" | "));
        }
    }

    /// The ratio of `a`'s value to `reference`'s for program `p`, if both ran.
    fn ratio_of(
        &self,
        p: &str,
        a: &str,
        reference: &str,
        get: &impl Fn(&CRow) -> f64,
    ) -> Option<f64> {
        let base = get(self.ok(p, reference)?);
        ratio(get(self.ok(p, a)?), base)
    }

    /// Per allocator, the ratios to `reference`'s value over the programs both ran.
    fn all_ratios(&self, reference: &str, get: &impl Fn(&CRow) -> f64) -> Vec<Vec<f64>> {
        self.allocators
            .iter()
            .map(|a| {
                self.programs
                    .iter()
                    .filter_map(|p| self.ratio_of(p, a, reference, get))
                    .collect()
            })
            .collect()
    }

    /// A table of ratios to `reference`'s value, with a geometric-mean row.
    fn ratios(&self, o: &mut String, reference: &str, get: impl Fn(&CRow) -> f64) {
        self.header(o);
        for p in &self.programs {
            let cells: Vec<String> = self
                .allocators
                .iter()
                .map(|a| match self.ok(p, a) {
                    None => self.mark(p, a),
                    Some(_) => self
                        .ratio_of(p, a, reference, &get)
                        .map_or("-".into(), |x| format!("{x:.2}")),
                })
                .collect();
            let _ = writeln!(o, "| {p} | {} |", cells.join(" | "));
        }
        let _ = writeln!(
            o,
            "| **geometric mean** | {} |",
            geomean_cells(&self.all_ratios(reference, &get)).join(" | ")
        );
    }

    fn has(&self, a: &str) -> bool {
        self.allocators.contains(&a)
    }
}

/// `**g** (n)` per allocator: the geometric mean of its ratios and how many there were.
fn geomean_cells(per: &[Vec<f64>]) -> Vec<String> {
    per.iter()
        .map(|v| match geomean(v) {
            Some(g) => format!("**{g:.2}** ({})", v.len()),
            None => "-".into(),
        })
        .collect()
}

/// The C benchmarks' thread count of a run (files from before it was recorded ran 2).
fn threads_of(f: &CProgramsFile) -> usize {
    if f.config.threads == 0 {
        super::DEFAULT_THREADS
    } else {
        f.config.threads
    }
}

/// One allocator's geometric means over the C programs, relative to mimalloc: (value, count).
#[derive(Clone, Debug, PartialEq)]
pub struct Geomeans {
    /// The allocator.
    pub allocator: String,
    /// Wall time / mimalloc's.
    pub wall: (Option<f64>, usize),
    /// Peak RSS / mimalloc's.
    pub rss: (Option<f64>, usize),
}

/// Per allocator, the geometric means of its wall time and peak RSS relative to mimalloc's
/// over the programs both ran (for the report's headline); `None` if mimalloc was not measured.
pub fn geomeans(f: &CProgramsFile) -> Option<Vec<Geomeans>> {
    let v = View::new(f);
    if !v.has(REFERENCE) {
        return None;
    }
    let wall = v.all_ratios(REFERENCE, &|r: &CRow| r.wall_ms);
    let rss = v.all_ratios(REFERENCE, &|r: &CRow| r.peak_rss_bytes as f64);
    Some(
        v.allocators
            .iter()
            .zip(wall.iter().zip(&rss))
            .map(|(a, (w, r))| Geomeans {
                allocator: a.to_string(),
                wall: (geomean(w), w.len()),
                rss: (geomean(r), r.len()),
            })
            .collect(),
    )
}

/// Allocator `a`'s wall time and peak RSS relative to mimalloc's, per program both ran:
/// (program, time ratio, RSS ratio).
pub fn program_ratios(f: &CProgramsFile, a: &str) -> Vec<(String, f64, f64)> {
    let v = View::new(f);
    v.programs
        .iter()
        .filter_map(|p| {
            let t = v.ratio_of(p, a, REFERENCE, &|r: &CRow| r.wall_ms)?;
            let m = v.ratio_of(p, a, REFERENCE, &|r: &CRow| r.peak_rss_bytes as f64)?;
            Some((p.to_string(), t, m))
        })
        .collect()
}

/// The C programs' threads of a run (for the report's headline note).
pub fn threads(f: &CProgramsFile) -> usize {
    threads_of(f)
}

/// The headline's C-program table (a `###` subsection): per allocator, the geometric means
/// over the programs of its wall time and of its peak RSS relative to mimalloc's; `None` if
/// mimalloc was not measured.
pub fn render_headline(f: &CProgramsFile) -> Option<String> {
    let v = View::new(f);
    if !v.has(REFERENCE) {
        return None;
    }
    let wall = |r: &CRow| r.wall_ms;
    let rss = |r: &CRow| r.peak_rss_bytes as f64;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "### C programs under LD_PRELOAD: time and memory relative to {REFERENCE}

\
         What a C program gets through `malloc`/`free`: each allocator's median wall time and median peak RSS divided by \
         {REFERENCE}'s for the same program, geometric mean over the {} programs of the C-program table (below 1: faster, \
         less memory; the count in brackets; C benchmarks at {} thread(s); per program in section \
         \"{TITLE}\").{}\n",
        v.programs.len(),
        threads_of(f),
        if f.config.quick {
            " A `--quick` smoke run: tiny inputs, do not quote."
        } else {
            ""
        }
    );
    let _ = writeln!(o, "| | {} |", v.allocators.join(" | "));
    let _ = writeln!(o, "|---|{}", "---:|".repeat(v.allocators.len()));
    for (what, per) in [
        ("wall time", v.all_ratios(REFERENCE, &wall)),
        ("peak RSS", v.all_ratios(REFERENCE, &rss)),
    ] {
        let _ = writeln!(o, "| **{what}** | {} |", geomean_cells(&per).join(" | "));
    }
    let _ = writeln!(o);
    Some(o)
}

/// The section (starting with its `##` heading).
pub fn render_section(f: &CProgramsFile) -> String {
    let v = View::new(f);
    let c = &f.config;
    let mut o = String::new();
    let _ = writeln!(o, "## {TITLE}\n");
    let _ = writeln!(
        o,
        "Each program runs as its own process with the allocator preloaded (`LD_PRELOAD`): system is glibc's malloc \
         (nothing preloaded), mimalloc and jemalloc are Debian's packages (`libmimalloc2.0`, `libjemalloc2`), the others \
         are this suite's `lib<name>_preload.so`. Wall time is from start to exit; peak RSS is the child's `ru_maxrss` from \
         `wait4` (for redis, the server's `VmHWM`; its time is redis-benchmark's). The C benchmarks ran {} thread(s). \
         Median over {} repetition(s) [min-max], the repetitions interleaved round robin across allocators. Every \
         run's standard output must equal system malloc's byte for byte: a run that crashes, exits with an error, times out \
         or prints something else is **failed** and listed below with the reason. Measured {} at commit {} on {} ({} \
         logical cores), {:.0} s in all; `bench-harness c-programs --out DIR` measures it again (`bench-harness run` \
         does too, after the Rust workloads).\n",
        threads_of(f),
        c.reps,
        f.machine.started_utc,
        f.machine.git_commit,
        f.machine.cpu,
        f.machine.cores,
        c.total_seconds
    );
    if c.rss_floor_bytes > 0 {
        let _ = writeln!(
            o,
            "Peak RSS cannot be measured below {:.1} MiB (what `true` reports): Linux counts the resident set of the \
             process that starts a program into the program's peak, and the harness's small meter process starting each \
             program holds that much.\n",
            mib(c.rss_floor_bytes)
        );
    }
    if c.quick {
        let _ = writeln!(
            o,
            "> A `--quick` smoke run: tiny inputs, noisy numbers. Do not quote them.\n"
        );
    }
    let _ = writeln!(o, "| program | command | what |\n|---|---|---|");
    for p in &c.programs {
        let cmd = if p.command.is_empty() {
            "-".to_string()
        } else {
            format!("`{}`", p.command)
        };
        let _ = writeln!(o, "| {} | {cmd} | {} |", p.name, p.description);
    }
    let _ = writeln!(o);

    let wall = |r: &CRow| r.wall_ms;
    let rss = |r: &CRow| r.peak_rss_bytes as f64;
    let _ = writeln!(o, "### Wall time, ms: median [min-max]\n");
    v.values(&mut o, |r| {
        format!(
            "{:.0} [{:.0}-{:.0}]",
            r.wall_ms, r.wall_ms_min, r.wall_ms_max
        )
    });
    if v.has(REFERENCE) {
        let _ = writeln!(
            o,
            "\n### Wall time relative to {REFERENCE} (below 1: faster)\n"
        );
        v.ratios(&mut o, REFERENCE, wall);
    }
    let _ = writeln!(o, "\n### Peak RSS, MiB: median [min-max]\n");
    v.values(&mut o, |r| {
        format!(
            "{:.1} [{:.1}-{:.1}]",
            mib(r.peak_rss_bytes),
            mib(r.peak_rss_min_bytes),
            mib(r.peak_rss_max_bytes)
        )
    });
    if v.has(REFERENCE) {
        let _ = writeln!(
            o,
            "\n### Peak RSS relative to {REFERENCE} (below 1: less memory)\n"
        );
        v.ratios(&mut o, REFERENCE, rss);
    }

    let _ = writeln!(o, "\n### Failed and skipped runs, and notes\n");
    let notes: Vec<&CRow> = f
        .rows
        .iter()
        .filter(|r| r.status != Status::Ok || !r.reason.is_empty())
        .collect();
    if notes.is_empty() {
        let _ = writeln!(
            o,
            "None: every run exited normally with system malloc's output."
        );
    } else {
        // One line per (allocator, status, reason), naming its programs.
        type Key<'r> = (&'r str, Status, String);
        let mut groups: Vec<(Key<'_>, Vec<&str>)> = Vec::new();
        for r in notes {
            let key = (
                r.allocator.as_str(),
                r.status,
                r.reason.replace('|', "/").replace('\n', " "),
            );
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, ps)) => ps.push(r.program.as_str()),
                None => groups.push((key, vec![r.program.as_str()])),
            }
        }
        for ((a, status, reason), ps) in groups {
            let _ = writeln!(
                o,
                "- **{}** {a} on {}: {reason}",
                status.as_str().to_uppercase(),
                ps.join(", ")
            );
        }
    }
    let _ = writeln!(o);
    o
}

/// A whole `REPORT.md` holding only this section (a directory without Rust-workload results).
pub fn render_standalone(f: &CProgramsFile) -> String {
    format!(
        "# Allocator comparison\n\nGenerated by `bench-harness` from `c_programs.json` (regenerate with \
         `bench-harness report --out DIR`). This directory holds only the C-program table; \
         `bench-harness run` adds the Rust workloads.\n\n## Headline\n\n{}{}",
        render_headline(f).unwrap_or_default(),
        render_section(f)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::c_programs::{AllocatorInfo, CConfig, ProgramInfo};

    fn row(p: &str, a: &str, ms: f64, rss_mib: u64) -> CRow {
        CRow {
            program: p.into(),
            allocator: a.into(),
            reps: 3,
            wall_ms: ms,
            wall_ms_min: ms - 1.0,
            wall_ms_max: ms + 1.0,
            peak_rss_bytes: rss_mib << 20,
            peak_rss_min_bytes: rss_mib << 20,
            peak_rss_max_bytes: rss_mib << 20,
            status: Status::Ok,
            reason: String::new(),
        }
    }

    fn file() -> CProgramsFile {
        let names = ["bump", "system", "mimalloc"];
        CProgramsFile {
            config: CConfig {
                programs: vec![ProgramInfo {
                    name: "sort".into(),
                    description: "sorts".into(),
                    command: "LC_ALL=C sort in.txt".into(),
                }],
                allocators: names
                    .iter()
                    .map(|n| AllocatorInfo {
                        name: n.to_string(),
                        library: String::new(),
                    })
                    .collect(),
                reps: 3,
                ..CConfig::default()
            },
            rows: vec![
                CRow {
                    status: Status::Failed,
                    reason: "killed by signal 9".into(),
                    ..row("sort", "bump", 0.0, 0)
                },
                row("sort", "system", 300.0, 20),
                row("sort", "mimalloc", 200.0, 40),
            ],
            ..CProgramsFile::default()
        }
    }

    #[test]
    fn tables_ratios_and_failures() {
        let md = render_section(&file());
        assert!(md.starts_with(&format!("## {TITLE}")));
        assert!(
            md.contains("| sort | failed | 300 [299-301] | 200 [199-201] |"),
            "{md}"
        );
        // Time relative to mimalloc.
        assert!(md.contains("| sort | failed | 1.50 | 1.00 |"), "{md}");
        assert!(!md.contains("relative to system"), "{md}");
        // RSS relative to mimalloc.
        assert!(md.contains("| sort | failed | 0.50 | 1.00 |"), "{md}");
        assert!(
            md.contains("- **FAILED** bump on sort: killed by signal 9"),
            "{md}"
        );
        assert!(md.contains("`LC_ALL=C sort in.txt`"));
    }

    #[test]
    fn headline_has_geomeans_against_mimalloc() {
        let md = render_headline(&file()).unwrap();
        assert!(md.contains("| | bump | system | mimalloc |"), "{md}");
        assert!(
            md.contains("| **wall time** | - | **1.50** (1) | **1.00** (1) |"),
            "{md}"
        );
        assert!(
            md.contains("| **peak RSS** | - | **0.50** (1) | **1.00** (1) |"),
            "{md}"
        );
        let g = geomeans(&file()).unwrap();
        assert_eq!(g[1].wall, (Some(1.5), 1));
        assert_eq!(g[0].wall, (None, 0));
        assert_eq!(
            program_ratios(&file(), "system"),
            [("sort".to_string(), 1.5, 0.5)]
        );
        let mut f = file();
        f.config.allocators.retain(|a| a.name != "mimalloc");
        assert!(render_headline(&f).is_none());
        assert!(geomeans(&f).is_none());
    }
}
