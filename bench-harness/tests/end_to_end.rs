//! End-to-end tests of the binary: one tiny cell in a child process, a tiny `run` writing every
//! output file, and the error for an unknown name.

use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_bench-harness");

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
    let out = Command::new(EXE)
        .args([
            "run",
            "--quick",
            "--allocators",
            "bump,system",
            "--workloads",
            "phase,larson",
            "--threads",
            "1",
            "--no-progress",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "results.csv",
        "results.json",
        "REPORT.md",
        "ratio_t1.svg",
        "throughput_t1.svg",
        "latency_t1.svg",
    ] {
        assert!(dir.path().join(f).exists(), "{f} missing");
    }
    let rows = bench_harness::results_io::read_csv(&dir.path().join("results.csv")).unwrap();
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
}

#[test]
fn unknown_names_exit_with_code_2_and_list_valid_ones() {
    let out = Command::new(EXE)
        .args(["run", "--workloads", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown workload 'nope'") && err.contains("larson"),
        "{err}"
    );
    let out = Command::new(EXE)
        .args(["run", "--allocators", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mimalloc"));
}
