//! End-to-end tests of the binary: one tiny cell in a child process, a tiny `run` writing every
//! output file (with one C program under LD_PRELOAD), a tiny `c-programs` table and its report
//! regenerated, and the error for an unknown name.

use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_bench-harness");

/// Runs the harness with `args` followed by `dir` (the value of a trailing `--out`) and expects
/// it to succeed.
fn run_ok(args: &[&str], dir: &std::path::Path) {
    let out = Command::new(EXE).args(args).arg(dir).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_tiny_cell_runs_in_a_child_process() {
    let spec = r#"{"allocator":"system","workload":"larson","threads":1,"rep":0,"seed":1,"duration_ms":30,"size_factor":0.05}"#;
    let out = Command::new(EXE)
        .args(["cell", "--spec", spec])
        .output()
        .unwrap();
    assert!(out.status.success());
    let r: bench_harness::cell::CellResult =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(r.status, bench_harness::cell::Status::Ok, "{}", r.reason);
    assert!(r.ops > 0 && r.ops_per_sec > 0.0);
    assert!(r.peak_rss_bytes > 0 && r.peak_live_bytes > 0);
    assert!(r.p50_ns <= r.p99_ns && r.p99_ns <= r.p999_ns);
}

#[test]
fn a_tiny_run_writes_every_file() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(
        &[
            "run",
            "--quick",
            "--allocators",
            "bump,system",
            "--workloads",
            "phase,larson",
            "--threads",
            "1",
            "--programs",
            "malloc-churn",
            "--no-progress",
            "--out",
        ],
        dir.path(),
    );
    for f in [
        "results.csv",
        "results.json",
        "REPORT.md",
        "ratio_t1.svg",
        "throughput_t1.svg",
        "latency_t1.svg",
        "c_programs.csv",
        "c_programs.json",
    ] {
        assert!(dir.path().join(f).exists(), "{f} missing");
    }
    let rows: Vec<bench_harness::results_io::Row> =
        bench_harness::results_io::read_csv(&dir.path().join("results.csv")).unwrap();
    assert_eq!(rows.len(), 4);
    let bump_larson = rows
        .iter()
        .find(|r| r.allocator == "bump" && r.workload == "larson")
        .unwrap();
    assert_eq!(bump_larson.status, bench_harness::cell::Status::Skipped);
    assert!(rows
        .iter()
        .filter(|r| r.allocator == "system")
        .all(|r| r.ops_per_sec > 0.0));
    let report = std::fs::read_to_string(dir.path().join("REPORT.md")).unwrap();
    assert!(report.contains("SKIPPED"));
    assert!(
        report.contains("## C programs under LD_PRELOAD"),
        "{report}"
    );
    let c = read_c_rows(dir.path());
    let names: Vec<(&str, &str)> = c
        .iter()
        .map(|r| (r.program.as_str(), r.allocator.as_str()))
        .collect();
    assert_eq!(
        names,
        [("malloc-churn", "bump"), ("malloc-churn", "system")]
    );
}

fn read_c_rows(dir: &std::path::Path) -> Vec<bench_harness::c_programs::CRow> {
    bench_harness::c_programs::io::read_csv(&dir.join("c_programs.csv")).unwrap()
}

/// A program that is there must run under system malloc with a measured time and RSS; a
/// program or library missing on the machine must show as skipped with the reason, never
/// vanish or fail.
#[test]
fn a_tiny_c_program_table_and_its_report() {
    use bench_harness::cell::Status;
    let dir = tempfile::tempdir().unwrap();
    run_ok(
        &[
            "c-programs",
            "--quick",
            "--allocators",
            "system,mimalloc",
            "--programs",
            "producer-consumer,xmalloc,sort,sqlite3",
            "--threads",
            "3",
            "--no-progress",
            "--out",
        ],
        dir.path(),
    );
    let rows = read_c_rows(dir.path());
    assert_eq!(rows.len(), 8);
    for r in &rows {
        match r.status {
            Status::Ok => assert!(
                r.wall_ms > 0.0 && r.peak_rss_bytes > 0 && r.reps == 1,
                "{r:?}"
            ),
            Status::Skipped => assert!(r.reason.contains("apt-get install"), "{r:?}"),
            Status::Failed => panic!("{r:?}"),
        }
    }
    let system_pc = rows
        .iter()
        .find(|r| r.program == "producer-consumer" && r.allocator == "system")
        .unwrap();
    assert_eq!(system_pc.status, Status::Ok, "{system_pc:?}");
    // The thread count is recorded and reaches the C benchmarks' command lines.
    let saved =
        bench_harness::c_programs::io::read_json(&dir.path().join("c_programs.json")).unwrap();
    assert_eq!(saved.config.threads, 3);
    let xmalloc = saved.config.programs.iter().find(|p| p.name == "xmalloc");
    assert!(
        xmalloc.unwrap().command.starts_with("xmalloc 3 "),
        "{xmalloc:?}"
    );
    // `report` regenerates the section from c_programs.json alone.
    let report = dir.path().join("REPORT.md");
    std::fs::remove_file(&report).unwrap();
    run_ok(&["report", "--out"], dir.path());
    let text = std::fs::read_to_string(&report).unwrap();
    assert!(text.contains("## C programs under LD_PRELOAD"), "{text}");
    assert!(text.contains("| producer-consumer |"), "{text}");
    // The headline's C table: geometric means relative to mimalloc.
    assert!(
        text.contains("### C programs under LD_PRELOAD: time and memory relative to mimalloc"),
        "{text}"
    );
    assert!(text.contains("| **wall time** |"), "{text}");
}

#[test]
fn a_c_thread_count_out_of_range_is_a_usage_error() {
    expect_usage_error(&["c-programs", "--threads", "0"], &["thread count"]);
}

/// Runs the harness with `args`, expects the usage-error exit code 2 and every one of `needles`
/// in its stderr.
fn expect_usage_error(args: &[&str], needles: &[&str]) {
    let out = Command::new(EXE).args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in needles {
        assert!(err.contains(needle), "{args:?}: {needle:?} not in {err}");
    }
}

#[test]
fn unknown_c_program_or_allocator_exits_with_code_2_and_lists_valid_ones() {
    expect_usage_error(
        &["c-programs", "--programs", "sort,nope"],
        &["unknown program 'nope'", "sqlite3"],
    );
    expect_usage_error(
        &["c-programs", "--allocators", "nope"],
        &["jemalloc", "sizeclass"],
    );
}

#[test]
fn unknown_names_exit_with_code_2_and_list_valid_ones() {
    expect_usage_error(
        &["run", "--workloads", "nope"],
        &["unknown workload 'nope'", "larson"],
    );
    expect_usage_error(&["run", "--allocators", "nope"], &["mimalloc"]);
}
