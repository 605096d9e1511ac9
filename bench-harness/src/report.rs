//! REPORT.md: the machine, the headline table (each allocator's throughput as a ratio to
//! mimalloc per workload, with geometric means per thread count), throughput, latency and memory
//! tables, skipped cells with reasons, a reading generated from the data, and a hand-written
//! section that survives regeneration (kept between [`HAND_START`] and [`HAND_END`]).
//! The charts are drawn by [`crate::charts`] into the same directory and embedded. When the
//! directory also holds `c_programs.json`, its section ([`crate::c_programs::report`]) follows
//! the memory tables.

use std::fmt::Write as _;
use std::path::Path;

use crate::c_programs::{self, CProgramsFile};
use crate::cell::Status;
use crate::charts::{self, Panel, Series};
use crate::registry::REFERENCE;
use crate::results_io::{ResultsFile, Row};
use crate::summary::{geomean, ratio};
use crate::workloads;

/// Marks the start of the hand-written section.
pub const HAND_START: &str = "<!-- hand-written:start -->";
/// Marks its end.
pub const HAND_END: &str = "<!-- hand-written:end -->";

const HAND_DEFAULT: &str =
    "_To be written by the lead after the reference run: why the winners win \
(fast-path design, remote-free handling, memory return policy), and what the numbers do not show._";

/// Lookup over the rows of a results file.
struct View<'a> {
    r: &'a ResultsFile,
    reference: String,
}

impl<'a> View<'a> {
    fn new(r: &'a ResultsFile) -> Self {
        let reference = if r.config.allocators.iter().any(|a| a == REFERENCE) {
            REFERENCE.to_string()
        } else {
            r.config.allocators.first().cloned().unwrap_or_default()
        };
        View { r, reference }
    }

    fn row(&self, a: &str, w: &str, t: usize) -> Option<&'a Row> {
        self.r
            .rows
            .iter()
            .find(|x| x.allocator == a && x.workload == w && x.threads == t)
    }

    fn ok(&self, a: &str, w: &str, t: usize) -> Option<&'a Row> {
        self.row(a, w, t).filter(|x| x.status == Status::Ok)
    }

    /// Throughput ratio of `a` to the reference.
    fn ratio(&self, a: &str, w: &str, t: usize) -> Option<f64> {
        ratio(
            self.ok(a, w, t)?.ops_per_sec,
            self.ok(&self.reference, w, t)?.ops_per_sec,
        )
    }

    /// Geometric mean of the ratios of `a` and the number of workloads behind it.
    fn geomean_ratio(&self, a: &str, t: usize) -> (Option<f64>, usize) {
        let v: Vec<f64> = self
            .r
            .config
            .workloads
            .iter()
            .filter_map(|w| self.ratio(a, w, t))
            .collect();
        (geomean(&v), v.len())
    }

    fn allocators(&self) -> &'a [String] {
        &self.r.config.allocators
    }
    fn workloads(&self) -> &'a [String] {
        &self.r.config.workloads
    }
    fn threads(&self) -> &'a [usize] {
        &self.r.config.threads
    }
}

/// A ratio with two decimals, or three significant digits when small.
fn fmt_ratio(x: f64) -> String {
    if x >= 0.1 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / (1 << 20) as f64)
}

/// A non-ok cell's short mark.
fn mark(row: Option<&Row>) -> String {
    match row.map(|r| r.status) {
        Some(Status::Skipped) => "skipped".into(),
        Some(Status::Failed) => "failed".into(),
        _ => "-".into(),
    }
}

fn table_header(out: &mut String, first: &str, cols: &[String]) {
    let _ = writeln!(out, "| {first} | {} |", cols.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(cols.len()));
}

/// A table with one row per workload and one column per allocator.
fn workload_table(v: &View<'_>, t: usize, out: &mut String, cell: impl Fn(&Row) -> String) {
    table_header(out, "workload", v.allocators());
    for w in v.workloads() {
        let cells: Vec<String> = v
            .allocators()
            .iter()
            .map(|a| match v.ok(a, w, t) {
                Some(r) => cell(r),
                None => mark(v.row(a, w, t)),
            })
            .collect();
        let _ = writeln!(out, "| {w} | {} |", cells.join(" | "));
    }
}

/// Reads the hand-written section of an existing report, if any.
fn existing_hand_section(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let start = text.find(HAND_START)? + HAND_START.len();
    let end = text[start..].find(HAND_END)? + start;
    Some(text[start..end].trim().to_string())
}

/// Renders the report's Markdown (charts are referenced by file name), with the C-program
/// section if there is one.
pub fn render(
    results: &ResultsFile,
    c_programs: Option<&CProgramsFile>,
    hand: &str,
    charts: &[(String, String)],
) -> String {
    let v = View::new(results);
    let m = &results.machine;
    let c = &results.config;
    let mut o = String::new();
    let _ = writeln!(o, "# Allocator comparison\n");
    let _ = writeln!(
        o,
        "Generated by `bench-harness` from `results.json` (regenerate with `bench-harness report --out DIR`). \
         Everything except the hand-written section is rewritten on regeneration.\n"
    );
    let _ = writeln!(o, "## Machine and run\n");
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(o, "| CPU | {} ({} logical cores) |", m.cpu, m.cores);
    let _ = writeln!(o, "| memory | {} GiB |", m.memory_bytes >> 30);
    let _ = writeln!(o, "| kernel | {} |", m.kernel);
    let _ = writeln!(o, "| compiler | {} |", m.rustc);
    let _ = writeln!(o, "| commit | {} |", m.git_commit);
    let _ = writeln!(o, "| started | {} |", m.started_utc);
    let _ = writeln!(
        o,
        "| run | {}{} repetition(s) per cell, {} ms of work per cell, live-set scale {}, seed {:#x}, threads {:?}, {:.0} s in total |",
        if c.quick { "`--quick` smoke run: " } else { "" },
        c.reps,
        c.duration_ms,
        c.size_factor,
        c.seed,
        c.threads,
        c.total_seconds
    );
    let _ = writeln!(o);
    if c.quick {
        let _ = writeln!(
            o,
            "> This is a `--quick` smoke run: cells are short and the numbers are noisy. Do not quote them.\n"
        );
    }

    // Headline.
    let _ = writeln!(
        o,
        "## Headline: relative to {}\n\nThe Rust workloads (the allocator as a `#[global_allocator]`): each cell is the allocator's \
         median operations per second divided by {}'s in the same workload and thread count (above 1: faster). The last row is \
         the geometric mean over the workloads the allocator ran (the count in brackets).{}\n",
        v.reference,
        v.reference,
        if c_programs.is_some() {
            " Then the C programs under `LD_PRELOAD` (the allocator behind `malloc`/`free`): time and memory, below 1 better."
        } else {
            ""
        }
    );
    for &t in v.threads() {
        let _ = writeln!(
            o,
            "### Rust workloads, {t} thread{}: throughput\n",
            if t == 1 { "" } else { "s" }
        );
        workload_table(&v, t, &mut o, |r| {
            v.ratio(&r.allocator, &r.workload, t)
                .map_or("-".into(), fmt_ratio)
        });
        let gm: Vec<String> = v
            .allocators()
            .iter()
            .map(|a| match v.geomean_ratio(a, t) {
                (Some(g), n) => format!("**{}** ({n})", fmt_ratio(g)),
                _ => "-".into(),
            })
            .collect();
        let _ = writeln!(o, "| **geometric mean** | {} |\n", gm.join(" | "));
    }
    for (title, file) in charts.iter().filter(|(_, f)| f.starts_with("ratio")) {
        let _ = writeln!(o, "![{title}]({file})\n");
    }
    // Beside the Rust workloads, what a C program gets (the table's own section follows later).
    if let Some(h) = c_programs.and_then(c_programs::report::render_headline) {
        o.push_str(&h);
    }
    hardened_cost(&v, &mut o);

    // Throughput.
    let _ = writeln!(
        o,
        "## Throughput\n\nMillions of allocator operations (alloc, free, realloc) per second: median [min-max over repetitions].\n"
    );
    for &t in v.threads() {
        let _ = writeln!(o, "### {t} thread{}\n", if t == 1 { "" } else { "s" });
        workload_table(&v, t, &mut o, |r| {
            format!(
                "{:.2} [{:.2}-{:.2}]",
                r.ops_per_sec / 1e6,
                r.ops_per_sec_min / 1e6,
                r.ops_per_sec_max / 1e6
            )
        });
        let _ = writeln!(o);
    }
    for (title, file) in charts
        .iter()
        .filter(|(_, f)| f.starts_with("throughput") || f.starts_with("scaling"))
    {
        let _ = writeln!(o, "![{title}]({file})\n");
    }

    // Latency.
    let resolution = results
        .cells
        .iter()
        .map(|c| c.timer_resolution_ns)
        .fold(0.0f64, f64::max);
    let _ = writeln!(
        o,
        "## Latency of single operations\n\np50 / p99 / p99.9 in nanoseconds, from one operation in {} timed with the cycle counter \
         (timer overhead subtracted). The counter's effective resolution on this machine was {:.1} ns: latencies below \
         that are not resolved, so equal small p50s mean \"at most one tick\", not equal speed.\n",
        crate::worker::SAMPLE_EVERY,
        resolution
    );
    for &t in v.threads() {
        let _ = writeln!(o, "### {t} thread{}\n", if t == 1 { "" } else { "s" });
        workload_table(&v, t, &mut o, |r| {
            format!("{:.0} / {:.0} / {:.0}", r.p50_ns, r.p99_ns, r.p999_ns)
        });
        let _ = writeln!(o);
    }
    for (title, file) in charts.iter().filter(|(_, f)| f.starts_with("latency")) {
        let _ = writeln!(o, "![{title}]({file})\n");
    }

    // Memory.
    let _ = writeln!(
        o,
        "## Memory\n\nPeak RSS is the process's `VmHWM` (MiB), which includes the harness's own idle footprint \
         (its median is given per table). Fragmentation = (peak RSS - idle RSS) / peak live requested bytes: 1.0 would be \
         a perfect allocator; small live sets make it large. RSS after free is `VmRSS` once every block was freed, minus \
         the idle RSS (MiB): memory the allocator kept.\n"
    );
    for &t in v.threads() {
        let idle: Vec<f64> = results
            .rows
            .iter()
            .filter(|r| r.threads == t && r.status == Status::Ok)
            .map(|r| r.idle_rss_bytes as f64)
            .collect();
        let idle = crate::summary::median(&idle) as u64;
        let _ = writeln!(
            o,
            "### {t} thread{}: peak RSS, MiB (idle RSS {} MiB)\n",
            if t == 1 { "" } else { "s" },
            mib(idle)
        );
        workload_table(&v, t, &mut o, |r| mib(r.peak_rss_bytes));
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "### {t} thread{}: fragmentation\n",
            if t == 1 { "" } else { "s" }
        );
        workload_table(&v, t, &mut o, |r| format!("{:.2}", r.fragmentation));
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "### {t} thread{}: RSS kept after free, MiB\n",
            if t == 1 { "" } else { "s" }
        );
        workload_table(&v, t, &mut o, |r| {
            mib(r.rss_after_free_bytes.saturating_sub(r.idle_rss_bytes))
        });
        let _ = writeln!(o);
    }
    for (title, file) in charts
        .iter()
        .filter(|(_, f)| f.starts_with("fragmentation"))
    {
        let _ = writeln!(o, "![{title}]({file})\n");
    }
    o.push_str(&crate::program_report::section(results, charts));

    if let Some(c) = c_programs {
        o.push_str(&c_programs::report::render_section(c));
    }

    // Skips and notes.
    let _ = writeln!(o, "## Skipped and failed cells, and notes\n");
    let notes: Vec<&Row> = results
        .rows
        .iter()
        .filter(|r| r.status != Status::Ok || !r.skip_reason.is_empty())
        .collect();
    if notes.is_empty() {
        let _ = writeln!(o, "None.\n");
    } else {
        let _ = writeln!(
            o,
            "| allocator | workload | threads | status | reason |\n|---|---|---:|---|---|"
        );
        for r in notes {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} |",
                r.allocator,
                r.workload,
                r.threads,
                r.status.as_str().to_uppercase(),
                r.skip_reason.replace('|', "/")
            );
        }
        let _ = writeln!(o);
    }

    let _ = writeln!(o, "## Reading the results (generated from the data)\n");
    o.push_str(&reading(&v));
    let _ = writeln!(
        o,
        "\n## Reading the results (hand-written)\n\n{HAND_START}\n{hand}\n{HAND_END}\n"
    );

    let _ = writeln!(
        o,
        "## Workloads\n\n| workload | pattern | stresses |\n|---|---|---|"
    );
    for w in workloads::WORKLOADS {
        let _ = writeln!(o, "| {} | {} | {} |", w.name, w.pattern, w.stresses);
    }
    let _ = writeln!(
        o,
        "\n## Method\n\nEach (allocator, workload, threads, repetition) cell runs in its own child process (the harness \
         re-executes itself), so RSS and allocator state do not leak between cells; cells are interleaved across \
         allocators (repetitions outermost), and the median of the repetitions is reported with its min-max spread. \
         Workloads call the allocator under test directly through `GlobalAlloc` (monomorphised, no `dyn`); the harness's \
         own bookkeeping uses the system allocator and is sized before timing starts. Each workload runs in rounds until \
         its time is up, with a fixed seed, so every allocator sees the same request sequence. An allocator that never \
         reuses memory runs only workloads with bounded total allocation, under a byte budget; an allocator that returns \
         null is reported as skipped (out of memory). A cell that times out is reported as failed and not repeated."
    );
    o
}

/// The cost of the `hardened` feature: each `<name>-hardened` column's throughput divided by its
/// plain twin's, per workload, with the geometric mean (only when the run had such columns);
/// mimalloc's twin is its secure mode, the yardstick.
fn hardened_cost(v: &View<'_>, o: &mut String) {
    let pairs: Vec<(&str, &str)> = v
        .allocators()
        .iter()
        .filter_map(|h| {
            let (base, hardened) = crate::registry::split_hardened(h);
            (hardened && v.allocators().iter().any(|a| a == base)).then_some((base, h.as_str()))
        })
        .collect();
    if pairs.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "## Cost of the hardened mode\n\nThroughput of each allocator built with `--features hardened` \
(heap-misuse checks) divided by the plain build's, same workload, threads and run (below 1: slower). \
mimalloc's column is its secure mode (`MI_SECURE=4`: encoded free lists, double-free checks, padding \
checked on free, guard pages around its metadata), built into the same hardened harness binary.\n"
    );
    let cols: Vec<String> = pairs
        .iter()
        .map(|(b, _)| {
            if *b == crate::registry::HARDENED_BASELINE {
                format!("{b} secure / plain")
            } else {
                format!("{b} hardened / plain")
            }
        })
        .collect();
    for &t in v.threads() {
        let _ = writeln!(o, "### {t} thread{}\n", if t == 1 { "" } else { "s" });
        table_header(o, "workload", &cols);
        let mut per_pair: Vec<Vec<f64>> = vec![Vec::new(); pairs.len()];
        for w in v.workloads() {
            let cells: Vec<String> = pairs
                .iter()
                .enumerate()
                .map(|(i, (b, h))| match (v.ok(h, w, t), v.ok(b, w, t)) {
                    (Some(hr), Some(br)) => match ratio(hr.ops_per_sec, br.ops_per_sec) {
                        Some(x) => {
                            per_pair[i].push(x);
                            fmt_ratio(x)
                        }
                        None => "-".into(),
                    },
                    _ => "-".into(),
                })
                .collect();
            let _ = writeln!(o, "| {w} | {} |", cells.join(" | "));
        }
        let gm: Vec<String> = per_pair
            .iter()
            .map(|xs| match geomean(xs) {
                Some(g) => format!("**{}** ({})", fmt_ratio(g), xs.len()),
                None => "-".into(),
            })
            .collect();
        let _ = writeln!(o, "| **geometric mean** | {} |\n", gm.join(" | "));
    }
}

/// The mechanical reading: winners and margins per workload, geometric means, scaling.
fn reading(v: &View<'_>) -> String {
    let mut o = String::new();
    for &t in v.threads() {
        let _ = writeln!(o, "**{t} thread{}.**", if t == 1 { "" } else { "s" });
        let mut gms: Vec<(f64, usize, &str)> = v
            .allocators()
            .iter()
            .filter_map(|a| match v.geomean_ratio(a, t) {
                (Some(g), n) => Some((g, n, a.as_str())),
                _ => None,
            })
            .collect();
        gms.sort_by(|a, b| b.0.total_cmp(&a.0));
        if !gms.is_empty() {
            let list: Vec<String> = gms
                .iter()
                .map(|(g, n, a)| format!("{a} {g:.2} ({n} workloads)"))
                .collect();
            let _ = writeln!(
                o,
                "Geometric mean of throughput relative to {}: {}.",
                v.reference,
                list.join(", ")
            );
        }
        for w in v.workloads() {
            let mut ok: Vec<&Row> = v
                .allocators()
                .iter()
                .filter_map(|a| v.ok(a, w, t))
                .collect();
            if ok.is_empty() {
                continue;
            }
            ok.sort_by(|a, b| b.ops_per_sec.total_cmp(&a.ops_per_sec));
            let first = ok[0];
            let stresses = workloads::find(w).map_or("", |i| i.stresses);
            let margin = ok
                .get(1)
                .and_then(|s| ratio(first.ops_per_sec, s.ops_per_sec).map(|r| (s, r)));
            let lean = ok
                .iter()
                .min_by_key(|r| r.peak_rss_bytes.saturating_sub(r.idle_rss_bytes))
                .copied();
            let _ = write!(o, "- {w} ({stresses}): fastest {}", first.allocator);
            if let Some((s, r)) = margin {
                let _ = write!(o, ", {r:.2}x the next ({})", s.allocator);
            }
            if let Some(l) = lean {
                let _ = write!(
                    o,
                    "; least memory {} ({} MiB above idle at peak)",
                    l.allocator,
                    mib(l.peak_rss_bytes.saturating_sub(l.idle_rss_bytes))
                );
            }
            let _ = writeln!(o, ".");
        }
        let _ = writeln!(o);
    }
    if let (Some(&t0), Some(&t1)) = (v.threads().first(), v.threads().last()) {
        if t1 > t0 {
            let _ = writeln!(
                o,
                "**Scaling from {t0} to {t1} threads** (geometric mean over workloads of throughput at {t1} / at {t0}; \
                 {:.1} would be linear):",
                t1 as f64 / t0 as f64
            );
            for a in v.allocators() {
                let s: Vec<f64> = v
                    .workloads()
                    .iter()
                    .filter_map(|w| ratio(v.ok(a, w, t1)?.ops_per_sec, v.ok(a, w, t0)?.ops_per_sec))
                    .collect();
                if let Some(g) = geomean(&s) {
                    let _ = writeln!(o, "- {a}: {g:.2} ({} workloads)", s.len());
                }
            }
        }
    }
    o
}

/// Draws the charts into `out`; returns (title, file name) pairs.
fn draw_charts(out: &Path, results: &ResultsFile) -> Result<Vec<(String, String)>, String> {
    let v = View::new(results);
    let mut made = Vec::new();
    let groups: Vec<String> = v.workloads().to_vec();
    for &t in v.threads() {
        let ratios: Vec<Series> = v
            .allocators()
            .iter()
            .map(|a| (a.clone(), groups.iter().map(|w| v.ratio(a, w, t)).collect()))
            .collect();
        let file = format!("ratio_t{t}.svg");
        let title = format!("Throughput relative to {}, {t} thread(s)", v.reference);
        charts::grouped_bars(
            &out.join(&file),
            &title,
            "ratio (log scale)",
            &groups,
            &ratios,
            Some(1.0),
        )?;
        made.push((title, file));
        let tput: Vec<Series> = v
            .allocators()
            .iter()
            .map(|a| {
                (
                    a.clone(),
                    groups
                        .iter()
                        .map(|w| v.ok(a, w, t).map(|r| r.ops_per_sec / 1e6))
                        .collect(),
                )
            })
            .collect();
        let file = format!("throughput_t{t}.svg");
        let title = format!("Throughput per workload, {t} thread(s)");
        charts::grouped_bars(
            &out.join(&file),
            &title,
            "million ops/s (log scale)",
            &groups,
            &tput,
            None,
        )?;
        made.push((title, file));
    }
    // Thread scaling: one panel per workload.
    if v.threads().len() > 1 {
        let panels: Vec<Panel> = groups
            .iter()
            .map(|w| Panel {
                title: w.clone(),
                lines: v
                    .allocators()
                    .iter()
                    .map(|a| {
                        let pts = v
                            .threads()
                            .iter()
                            .filter_map(|&t| v.ok(a, w, t).map(|r| (t as f64, r.ops_per_sec / 1e6)))
                            .collect();
                        (a.clone(), pts)
                    })
                    .collect(),
            })
            .collect();
        let file = "scaling.svg".to_string();
        let title = "Thread scaling (million ops/s by threads)".to_string();
        charts::line_panels(&out.join(&file), &title, "threads", "Mops/s", &panels, 4)?;
        made.push((title, file));
    }
    // Latency: for each thread count, per allocator the geometric mean over workloads of p50/p99/p99.9.
    let allocs: Vec<String> = v.allocators().to_vec();
    for &t in v.threads() {
        let pct = |get: fn(&Row) -> f64| -> Vec<Option<f64>> {
            allocs
                .iter()
                .map(|a| {
                    let xs: Vec<f64> = groups
                        .iter()
                        .filter_map(|w| v.ok(a, w, t).map(get))
                        .collect();
                    geomean(&xs)
                })
                .collect()
        };
        let series: Vec<Series> = vec![
            ("p50".into(), pct(|r| r.p50_ns)),
            ("p99".into(), pct(|r| r.p99_ns)),
            ("p99.9".into(), pct(|r| r.p999_ns)),
        ];
        let file = format!("latency_t{t}.svg");
        let title = format!("Latency percentiles (geometric mean over workloads), {t} thread(s)");
        charts::grouped_bars(
            &out.join(&file),
            &title,
            "ns (log scale)",
            &allocs,
            &series,
            None,
        )?;
        made.push((title, file));
    }
    // RSS over time in the fragmentation workload (first repetition of each allocator).
    let panels: Vec<Panel> = v
        .threads()
        .iter()
        .map(|&t| Panel {
            title: format!("fragmentation, {t} thread(s): RSS MiB over ms"),
            lines: allocs
                .iter()
                .map(|a| {
                    // Every allocator keeps its line (empty if it has no series), so colours
                    // match the other charts.
                    let pts = results
                        .cells
                        .iter()
                        .find(|c| {
                            &c.allocator == a
                                && c.workload == "fragmentation"
                                && c.threads == t
                                && c.status == Status::Ok
                                && !c.series.is_empty()
                        })
                        .map(|cell| {
                            cell.series
                                .iter()
                                .map(|p| (p.t_ms, p.rss_bytes as f64 / (1 << 20) as f64))
                                .collect()
                        })
                        .unwrap_or_default();
                    (a.clone(), pts)
                })
                .chain(live_line(results, &v.reference, t))
                .collect(),
        })
        .filter(|p| p.lines.iter().any(|(_, pts)| !pts.is_empty()))
        .collect();
    if !panels.is_empty() {
        let file = "fragmentation_rss.svg".to_string();
        let title = "RSS (and live requested bytes) over time, fragmentation workload".to_string();
        charts::line_panels(&out.join(&file), &title, "ms", "RSS MiB", &panels, 2)?;
        made.push((title, file));
    }
    made.extend(crate::program_report::draw_charts(out, results)?);
    Ok(made)
}

/// The live requested bytes over time (MiB) in the reference allocator's fragmentation cell:
/// the floor every RSS line should be compared with.
fn live_line(
    results: &ResultsFile,
    reference: &str,
    t: usize,
) -> Option<(String, Vec<(f64, f64)>)> {
    let cell = results.cells.iter().find(|c| {
        c.allocator == reference
            && c.workload == "fragmentation"
            && c.threads == t
            && c.status == Status::Ok
            && !c.series.is_empty()
    })?;
    let pts = cell
        .series
        .iter()
        .map(|p| (p.t_ms, p.live_bytes as f64 / (1 << 20) as f64))
        .collect();
    Some((format!("live bytes ({reference} run)"), pts))
}

/// The C-program results saved in `out`, if any.
fn saved_c_programs(out: &Path) -> Result<Option<CProgramsFile>, String> {
    let path = out.join(c_programs::io::JSON_FILE);
    if path.is_file() {
        c_programs::io::read_json(&path).map(Some)
    } else {
        Ok(None)
    }
}

/// Writes REPORT.md and the charts into `out`, keeping an existing hand-written section and
/// including the C-program section when `out` holds `c_programs.json`.
pub fn write(out: &Path, results: &ResultsFile) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let path = out.join("REPORT.md");
    let hand = existing_hand_section(&path).unwrap_or_else(|| HAND_DEFAULT.to_string());
    let charts = draw_charts(out, results)?;
    let c = saved_c_programs(out)?;
    let text = render(results, c.as_ref(), &hand, &charts);
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Rewrites REPORT.md from the files saved in `out`: `results.json` (with the C-program section
/// if `c_programs.json` is there too), or `c_programs.json` alone.
pub fn write_from_saved(out: &Path) -> Result<(), String> {
    let results = out.join("results.json");
    if results.is_file() {
        return write(out, &crate::results_io::read_json(&results)?);
    }
    match saved_c_programs(out)? {
        Some(c) => {
            let path = out.join("REPORT.md");
            std::fs::write(&path, c_programs::report::render_standalone(&c))
                .map_err(|e| format!("{}: {e}", path.display()))
        }
        None => Err(format!(
            "{}: neither results.json nor {} (run `bench-harness run` or `bench-harness c-programs` first)",
            out.display(),
            c_programs::io::JSON_FILE
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results_io::RunConfig;

    fn row(a: &str, w: &str, t: usize, ops: f64) -> Row {
        Row {
            allocator: a.into(),
            workload: w.into(),
            threads: t,
            ops_per_sec: ops,
            reps: 1,
            peak_rss_bytes: 8 << 20,
            idle_rss_bytes: 4 << 20,
            status: Status::Ok,
            ..Row::default()
        }
    }

    fn results() -> ResultsFile {
        ResultsFile {
            config: RunConfig {
                allocators: vec!["bump".into(), "mimalloc".into(), "system".into()],
                workloads: vec!["larson".into(), "phase".into()],
                threads: vec![1],
                reps: 1,
                ..RunConfig::default()
            },
            rows: vec![
                row("mimalloc", "larson", 1, 100.0),
                row("system", "larson", 1, 50.0),
                Row {
                    status: Status::Skipped,
                    skip_reason: "never reuses".into(),
                    ..row("bump", "larson", 1, 0.0)
                },
                row("mimalloc", "phase", 1, 100.0),
                row("system", "phase", 1, 200.0),
                row("bump", "phase", 1, 400.0),
            ],
            ..ResultsFile::default()
        }
    }

    #[test]
    fn ratios_and_geomeans_against_mimalloc() {
        let r = results();
        let v = View::new(&r);
        assert_eq!(v.ratio("system", "larson", 1), Some(0.5));
        assert_eq!(v.ratio("bump", "larson", 1), None);
        let (g, n) = v.geomean_ratio("system", 1);
        assert!((g.unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(n, 2);
        assert_eq!(v.geomean_ratio("bump", 1), (Some(4.0), 1));
    }

    #[test]
    fn renders_tables_skips_and_keeps_hand_section() {
        let md = render(&results(), None, "my words", &[]);
        assert!(md.contains("| larson | skipped | 1.00 | 0.50 |"), "{md}");
        assert!(md.contains("| bump | larson | 1 | SKIPPED | never reuses |"));
        assert!(md.contains(&format!("{HAND_START}\nmy words\n{HAND_END}")));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("REPORT.md"), &md).unwrap();
        assert_eq!(
            existing_hand_section(&dir.path().join("REPORT.md")).as_deref(),
            Some("my words")
        );
        write(dir.path(), &results()).unwrap();
        let again = std::fs::read_to_string(dir.path().join("REPORT.md")).unwrap();
        assert!(again.contains("my words"));
        assert!(dir.path().join("ratio_t1.svg").exists());
    }
}
