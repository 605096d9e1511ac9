//! Contract point: out of memory returns null (here: `try_reserve` returns `Err`), never aborts,
//! and the allocator keeps working. Runs in a child process (this test binary re-executed with
//! `--exact <test>`) whose address space is limited with `RLIMIT_AS`.

use std::process::Command;
use std::time::{Duration, Instant};

/// Set in the child's environment to select the child role.
pub const OOM_CHILD_ENV: &str = "ALLOCATOR_SUITES_OOM_CHILD";
/// Address space the child may use beyond what it has mapped when the limit is set.
pub const HEADROOM: usize = 512 << 20;

/// The child's virtual size, from /proc/self/status (`VmSize`).
fn vm_size() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn child() {
    let limit = (vm_size() + HEADROOM) as libc::rlim_t;
    let rl = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: a valid rlimit for this process.
    assert_eq!(
        unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) },
        0,
        "setrlimit failed"
    );

    let huge = [
        1usize << 40,
        1 << 36,
        1 << 33,
        3 << 30,
        (1 << 31) + 12_345,
        HEADROOM + (64 << 20),
    ];
    for &n in &huge {
        let mut v: Vec<u8> = Vec::new();
        assert!(
            v.try_reserve(n).is_err(),
            "contract violated: out of memory returns null: try_reserve({n}) succeeded under RLIMIT_AS"
        );
        // The same from a non-empty vector (realloc path): it must keep its contents.
        let mut w: Vec<u8> = (0..=255).collect();
        assert!(
            w.try_reserve(n).is_err(),
            "try_reserve({n}) on a non-empty Vec succeeded under RLIMIT_AS"
        );
        assert!(
            w.iter().enumerate().all(|(i, &b)| b == i as u8),
            "contract violated: on a failed realloc the old block is untouched"
        );
    }
    // The allocator keeps working.
    let strings: Vec<String> = (0..50_000).map(|i| format!("after-oom-{i}")).collect();
    assert_eq!(strings.len(), 50_000);
    assert!(strings
        .iter()
        .enumerate()
        .all(|(i, s)| *s == format!("after-oom-{i}")));
    let mid = vec![5u8; 8 << 20];
    assert!(mid.iter().all(|&b| b == 5));
    println!(
        "oom child: {} huge reservations refused, then 50000 strings and 8 MiB served",
        huge.len() * 2
    );
}

/// In the parent: re-executes this test binary running only `test_name` as the child (which
/// lowers `RLIMIT_AS`, sees huge reservations fail, then allocates normally) and requires it to
/// pass. In the child (selected by [`OOM_CHILD_ENV`]): does that.
pub fn check_out_of_memory(test_name: &str) {
    if std::env::var_os(OOM_CHILD_ENV).is_some() {
        child();
        return;
    }
    let exe = std::env::current_exe().expect("current test binary");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            test_name,
            "--nocapture",
            "--test-threads=1",
            // Run the child role even while the test is marked #[ignore] (run via --ignored).
            "--include-ignored",
        ])
        .env(OOM_CHILD_ENV, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the child test process");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for child") {
            break s;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("out-of-memory child did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = child.wait_with_output().expect("child output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        status.success() && stdout.contains("1 passed"),
        "contract violated: out of memory returns null and the allocator keeps working: child \
         {status}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
}
