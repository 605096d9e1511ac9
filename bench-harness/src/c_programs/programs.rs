//! The programs of the C-program table and how each is made ready: nine C benchmarks of
//! `preload/bench/` modelled on the published shapes of the well-known allocator benchmarks
//! (compiled with `cc -O2 -pthread`, their thread count a parameter), and real programs from
//! Debian packages: `redis-server` driven by `redis-benchmark` (see [`super::redis`]), `lua5.4`
//! running a table- and string-heavy script, GNU `sort` of a generated file, `python3` running
//! an allocation-heavy script with `PYTHONMALLOC=malloc`, and `sqlite3` doing inserts, updates
//! and queries. At full scale each runs for seconds on a 2-core machine (so the allocator, not
//! process start, is measured); `--quick` shrinks every input to a fraction of a second. The
//! sources, scripts and SQL are compiled into the harness, so the binary needs no checkout; a
//! program missing on the machine is skipped with the reason.

use std::ffi::OsString;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cell::Status;

/// The size of the programs' work.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    /// Tiny inputs for a smoke run.
    pub quick: bool,
    /// Threads of the C benchmarks (their first argument).
    pub threads: usize,
}

impl Scale {
    fn pick<T>(self, full: T, quick: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

/// A program ready to run: the command, its environment and standard input.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The program's name in the table.
    pub name: String,
    /// The executable.
    pub exe: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// A file fed to standard input (otherwise /dev/null).
    pub stdin: Option<PathBuf>,
    /// The command line as shown in the report.
    pub display: String,
    /// The program measures itself (a driver such as [`super::redis`]'s, whose wall time and
    /// peak RSS are a server's, not the driver process's): the library goes to it in
    /// [`super::measure::PRELOAD_VAR`] instead of `LD_PRELOAD`, and it writes its measurement
    /// to the file named in [`super::measure::MEASURE_VAR`].
    pub measures_itself: bool,
}

/// Why a program cannot run: skipped (not installed) or failed (it would not build).
pub type NotReady = (Status, String);

/// One entry of the table.
#[derive(Clone, Copy, Debug)]
pub struct ProgramEntry {
    /// The name used on the command line and in the results.
    pub name: &'static str,
    /// What it does, one line.
    pub description: &'static str,
    /// Makes it ready in a work directory.
    pub prepare: fn(Scale, &Path) -> Result<Prepared, NotReady>,
}

/// Every program, in the table's order.
pub const PROGRAMS: &[ProgramEntry] = &[
    ProgramEntry {
        name: "larson",
        description: "C, larson's shape: each thread owns 4,000 slots and replaces a random block (8-1000 B) per step; after each round of 2,000 steps the slots go to a NEW thread and the old one exits, so most blocks die on another thread",
        prepare: larson,
    },
    ProgramEntry {
        name: "malloc-simple",
        description: "C, glibc bench-malloc-simple's shape, one thread: batches of 25-1,600 blocks of one size (16-256 B) allocated, touched and freed, over and over",
        prepare: malloc_simple,
    },
    ProgramEntry {
        name: "malloc-thread",
        description: "C, glibc bench-malloc-thread's shape: each thread replaces a random block of a 4,096-block working set per step (8-512 B, one in 16 up to 4 KiB)",
        prepare: malloc_thread,
    },
    ProgramEntry {
        name: "cache-thrash",
        description: "C, cache-thrash's shape: each thread allocates an 8 B object, writes it 1,000 times, frees it, over and over (false sharing if neighbouring bytes go to different threads)",
        prepare: cache_thrash,
    },
    ProgramEntry {
        name: "rptest",
        description: "C, rptest's shape: per thread a working set of 2,000 blocks of 16 B-16 KiB (small far more often), every 64 steps 16 live blocks handed to the next thread to free",
        prepare: rptest,
    },
    ProgramEntry {
        name: "xmalloc",
        description: "C, xmalloc-test's shape: half the threads allocate 64 B objects in batches of 128 and queue them, the other half read and free them",
        prepare: xmalloc,
    },
    ProgramEntry {
        name: "malloc-large",
        description: "C, malloc-large's shape: blocks of 5-25 MiB, 20 live across the threads, each memset in full after malloc, a random one replaced per step",
        prepare: malloc_large,
    },
    ProgramEntry {
        name: "malloc-churn",
        description: "C: each thread keeps 10,000 blocks of 16 B-1 KiB (some to 64 KiB) and replaces a random one per step",
        prepare: malloc_churn,
    },
    ProgramEntry {
        name: "producer-consumer",
        description: "C, producer/consumer pairs (threads / 2): batches of 256 blocks made on one thread, checked and freed (half parked for later) on another",
        prepare: producer_consumer,
    },
    ProgramEntry {
        name: "redis",
        description: "redis-server (preloaded; 127.0.0.1, no persistence) under redis-benchmark (not preloaded): pipelined SET, GET, LPUSH, LRANGE_100 with random keys, then 20,000 keys written and read back; time is the benchmark's, peak RSS the server's VmHWM",
        prepare: redis,
    },
    ProgramEntry {
        name: "lua",
        description: "lua5.4 running a table- and string-heavy script: nested record tables, inserts and removes, concatenation, gsub, sorting",
        prepare: lua,
    },
    ProgramEntry {
        name: "sort",
        description: "GNU sort (LC_ALL=C) of a generated file of random lines",
        prepare: sort,
    },
    ProgramEntry {
        name: "python3",
        description: "Python, 8 threads building and dropping dicts, lists, strings, JSON (PYTHONMALLOC=malloc: every object through malloc)",
        prepare: python,
    },
    ProgramEntry {
        name: "sqlite3",
        description: "sqlite3 in memory: bulk inserts with blobs, an index, updates, deletes, joins, grouping, vacuum",
        prepare: sqlite,
    },
];

/// The program named `name`.
pub fn find(name: &str) -> Option<&'static ProgramEntry> {
    PROGRAMS.iter().find(|p| p.name == name)
}

/// Makes the program `name` ready in `work_dir`.
pub fn prepare(name: &str, scale: Scale, work_dir: &Path) -> Result<Prepared, NotReady> {
    match find(name) {
        Some(p) => (p.prepare)(scale, work_dir),
        None => Err((Status::Failed, format!("unknown program '{name}'"))),
    }
}

const LARSON_C: &str = include_str!("../../../preload/bench/larson.c");
const MALLOC_SIMPLE_C: &str = include_str!("../../../preload/bench/malloc_simple.c");
const MALLOC_THREAD_C: &str = include_str!("../../../preload/bench/malloc_thread.c");
const CACHE_THRASH_C: &str = include_str!("../../../preload/bench/cache_thrash.c");
const RPTEST_C: &str = include_str!("../../../preload/bench/rptest.c");
const XMALLOC_C: &str = include_str!("../../../preload/bench/xmalloc.c");
const MALLOC_LARGE_C: &str = include_str!("../../../preload/bench/malloc_large.c");
const MALLOC_CHURN_C: &str = include_str!("../../../preload/bench/malloc_churn.c");
const PRODUCER_CONSUMER_C: &str = include_str!("../../../preload/bench/producer_consumer.c");
const TABLES_STRINGS_LUA: &str = include_str!("../../../preload/bench/tables_strings.lua");
const ALLOC_HEAVY_PY: &str = include_str!("../../../preload/tests/programs/alloc_heavy.py");
const WORKLOAD_SQL: &str = include_str!("../../../preload/tests/programs/workload.sql");
/// The row count of `workload.sql`, replaced by the scale's.
const SQL_ROWS_MARK: &str = "x < 60000";

fn failed(msg: String) -> NotReady {
    (Status::Failed, msg)
}

/// The executable `name` on `PATH`, if any.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn require(name: &str, package: &str) -> Result<PathBuf, NotReady> {
    find_on_path(name).ok_or_else(|| {
        (
            Status::Skipped,
            format!("`{name}` not found on PATH (Debian: apt-get install {package})"),
        )
    })
}

/// Writes `source` to `dir/<name>.c` and compiles it with `cc -O2 -pthread` (or `$CC`).
pub fn compile_c(name: &str, source: &str, dir: &Path) -> Result<PathBuf, NotReady> {
    let src = dir.join(format!("{name}.c"));
    let exe = dir.join(name);
    fs::write(&src, source).map_err(|e| failed(format!("{}: {e}", src.display())))?;
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let out = Command::new(&cc)
        .args(["-O2", "-pthread", "-o"])
        .arg(&exe)
        .arg(&src)
        .output();
    match out {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err((
            Status::Skipped,
            format!(
                "no C compiler `{}` to build it (Debian: apt-get install gcc)",
                cc.to_string_lossy()
            ),
        )),
        Err(e) => Err(failed(format!("cannot run {}: {e}", cc.to_string_lossy()))),
        Ok(o) if !o.status.success() => Err(failed(format!(
            "compiling {} failed: {}",
            src.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        ))),
        Ok(_) => Ok(exe),
    }
}

fn display(exe: &Path, args: &[OsString], env: &[(String, String)], stdin: &str) -> String {
    let mut s: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    s.push(
        exe.file_name()
            .map_or_else(|| exe.display().to_string(), |f| f.to_string_lossy().into()),
    );
    s.extend(args.iter().map(|a| {
        let p = Path::new(a);
        // Files in the work directory by their name only.
        match (p.is_absolute(), p.file_name()) {
            (true, Some(f)) => f.to_string_lossy().into_owned(),
            _ => a.to_string_lossy().into_owned(),
        }
    }));
    if !stdin.is_empty() {
        s.push(format!("< {stdin}"));
    }
    s.join(" ")
}

/// Compiles a C benchmark and runs it as `<exe> <threads> <args...>`.
fn c_benchmark(
    name: &str,
    source: &str,
    scale: Scale,
    args: &[u64],
    dir: &Path,
) -> Result<Prepared, NotReady> {
    let exe = compile_c(name, source, dir)?;
    let args: Vec<OsString> = std::iter::once(scale.threads as u64)
        .chain(args.iter().copied())
        .map(|a| OsString::from(a.to_string()))
        .collect();
    Ok(Prepared {
        name: name.into(),
        display: display(&exe, &args, &[], ""),
        exe,
        args,
        env: Vec::new(),
        stdin: None,
        measures_itself: false,
    })
}

// The full scales below last 1-11 s with glibc at 2 threads on the reference 2-core machine,
// and 0.6-1.5 s with the fastest allocator of each (results/c_programs.csv); the C benchmarks'
// work grows with the thread count, except malloc-simple's, which is single-threaded, and
// malloc-large's, whose 20 live blocks are shared out. The quick ones last tens of ms.

fn larson(scale: Scale, dir: &Path) -> Result<Prepared, NotReady> {
    let rounds = scale.pick(9_000, 40);
    c_benchmark("larson", LARSON_C, scale, &[rounds, 2_000], dir)
}

fn malloc_simple(scale: Scale, dir: &Path) -> Result<Prepared, NotReady> {
    let reps = scale.pick(18_000, 60);
    c_benchmark("malloc-simple", MALLOC_SIMPLE_C, scale, &[reps], dir)
}

fn malloc_thread(scale: Scale, dir: &Path) -> Result<Prepared, NotReady> {
    let steps = scale.pick(75_000_000, 300_000);
    c_benchmark("malloc-thread", MALLOC_THREAD_C, scale, &[steps], dir)
}

fn cache_thrash(scale: Scale, dir: &Path) -> Result<Prepared, NotReady> {
    let objects = scale.pick(2_000_000, 10_000);
    c_benchmark(
        "cache-thrash",
        CACHE_THRASH_C,
        scale,
        &[objects, 1_000],
        dir,
    )
}

fn rptest(scale: Scale, dir: &Path) -> Result<Prepared, NotReady> {
    let steps = scale.pick(30_000_000, 150_000);
    c_benchmark("rptest", RPTEST_C, scale, &[steps], dir)
}

fn xmalloc(scale: Scale, dir: &Path) -> Result<Prepared, NotReady> {
    let batches = scale.pick(1_200_000, 3_000);
    c_benchmark("xmalloc", XMALLOC_C, scale, &[batches], dir)
}

fn malloc_large(scale: Scale, dir: &Path) -> Result<Prepared, NotReady> {
    let steps = scale.pick(600, 8);
    c_benchmark("malloc-large", MALLOC_LARGE_C, scale, &[steps], dir)
}

fn malloc_churn(scale: Scale, dir: &Path) -> Result<Prepared, NotReady> {
    let steps = scale.pick(60_000_000, 300_000);
    c_benchmark("malloc-churn", MALLOC_CHURN_C, scale, &[steps], dir)
}

fn producer_consumer(scale: Scale, dir: &Path) -> Result<Prepared, NotReady> {
    let batches = scale.pick(100_000, 500);
    // Its first argument counts producer/consumer pairs: threads / 2 of them (at least one).
    let pairs = Scale {
        threads: (scale.threads / 2).max(1),
        ..scale
    };
    c_benchmark(
        "producer-consumer",
        PRODUCER_CONSUMER_C,
        pairs,
        &[batches],
        dir,
    )
}

fn redis(scale: Scale, _dir: &Path) -> Result<Prepared, NotReady> {
    let server = require("redis-server", "redis-server")?;
    let benchmark = require("redis-benchmark", "redis-tools")?;
    let harness = std::env::current_exe()
        .map_err(|e| failed(format!("cannot find the harness binary: {e}")))?;
    let requests = scale.pick(150_000, 3_000);
    let args: Vec<OsString> = vec![
        "redis-driver".into(),
        "--server".into(),
        server.into_os_string(),
        "--benchmark".into(),
        benchmark.into_os_string(),
        "--requests".into(),
        requests.to_string().into(),
        "--timeout-secs".into(),
        scale.pick(100, 25).to_string().into(),
    ];
    Ok(Prepared {
        name: "redis".into(),
        display: format!(
            "redis-server, driven by redis-benchmark -q -t {} -P {} -r {} -d {} -c {} -n {requests}",
            super::redis::TESTS,
            super::redis::PIPELINE,
            super::redis::KEYSPACE,
            super::redis::VALUE_SIZE,
            super::redis::CLIENTS
        ),
        exe: harness,
        args,
        env: Vec::new(),
        stdin: None,
        measures_itself: true,
    })
}

fn lua(scale: Scale, dir: &Path) -> Result<Prepared, NotReady> {
    let exe = require("lua5.4", "lua5.4")?;
    let script = dir.join("tables_strings.lua");
    fs::write(&script, TABLES_STRINGS_LUA)
        .map_err(|e| failed(format!("{}: {e}", script.display())))?;
    let (rounds, records) = scale.pick((10, 20_000), (1, 2_000));
    let args = vec![
        script.into_os_string(),
        rounds.to_string().into(),
        records.to_string().into(),
    ];
    Ok(Prepared {
        name: "lua".into(),
        display: display(&exe, &args, &[], ""),
        exe,
        args,
        env: Vec::new(),
        stdin: None,
        measures_itself: false,
    })
}

/// Writes at least `bytes` of pseudo-random lines (8 to 120 letters and digits, fixed seed).
pub fn write_random_lines(path: &Path, bytes: usize) -> std::io::Result<()> {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut out = BufWriter::new(fs::File::create(path)?);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut line = Vec::with_capacity(128);
    let mut written = 0;
    while written < bytes {
        line.clear();
        let len = 8 + (next() % 113) as usize;
        line.extend((0..len).map(|_| CHARS[(next() % CHARS.len() as u64) as usize]));
        line.push(b'\n');
        out.write_all(&line)?;
        written += line.len();
    }
    out.flush()
}

fn sort(scale: Scale, dir: &Path) -> Result<Prepared, NotReady> {
    let exe = require("sort", "coreutils")?;
    let mb = scale.pick(200, 1);
    let input = dir.join(format!("sort-input-{mb}MB.txt"));
    write_random_lines(&input, mb * 1_000_000)
        .map_err(|e| failed(format!("{}: {e}", input.display())))?;
    let args = vec![input.into_os_string()];
    let env = vec![("LC_ALL".to_string(), "C".to_string())];
    Ok(Prepared {
        name: "sort".into(),
        display: display(&exe, &args, &env, ""),
        exe,
        args,
        env,
        stdin: None,
        measures_itself: false,
    })
}

fn python(scale: Scale, dir: &Path) -> Result<Prepared, NotReady> {
    // The system's Python, not a version manager's shim (a shell script that would run first).
    let system = PathBuf::from("/usr/bin/python3");
    let exe = if system.is_file() {
        system
    } else {
        require("python3", "python3")?
    };
    let script = dir.join("alloc_heavy.py");
    fs::write(&script, ALLOC_HEAVY_PY).map_err(|e| failed(format!("{}: {e}", script.display())))?;
    let rounds = scale.pick(8, 1);
    let args = vec![script.into_os_string(), rounds.to_string().into()];
    let env = vec![("PYTHONMALLOC".to_string(), "malloc".to_string())];
    Ok(Prepared {
        name: "python3".into(),
        display: display(&exe, &args, &env, ""),
        exe,
        args,
        env,
        stdin: None,
        measures_itself: false,
    })
}

/// `workload.sql` with `rows` rows in its main table.
pub fn sqlite_script(rows: usize) -> Result<String, String> {
    if !WORKLOAD_SQL.contains(SQL_ROWS_MARK) {
        return Err(format!(
            "preload/tests/programs/workload.sql no longer contains `{SQL_ROWS_MARK}` (the row count the harness scales)"
        ));
    }
    Ok(WORKLOAD_SQL.replace(SQL_ROWS_MARK, &format!("x < {rows}")))
}

fn sqlite(scale: Scale, dir: &Path) -> Result<Prepared, NotReady> {
    let exe = require("sqlite3", "sqlite3")?;
    let rows = scale.pick(150_000, 2_000);
    let script = dir.join(format!("workload-{rows}.sql"));
    let text = sqlite_script(rows).map_err(failed)?;
    fs::write(&script, text).map_err(|e| failed(format!("{}: {e}", script.display())))?;
    let args = vec![OsString::from(":memory:")];
    Ok(Prepared {
        name: "sqlite3".into(),
        display: display(&exe, &args, &[], &format!("workload-{rows}.sql")),
        exe,
        args,
        env: Vec::new(),
        stdin: Some(script),
        measures_itself: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_is_scaled() {
        let s = sqlite_script(1234).unwrap();
        assert!(s.contains("x < 1234") && !s.contains("x < 60000"));
    }

    #[test]
    fn random_lines_are_fixed_by_the_seed() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        write_random_lines(&a, 10_000).unwrap();
        write_random_lines(&b, 10_000).unwrap();
        let text = fs::read(&a).unwrap();
        assert!(text.len() >= 10_000 && text.ends_with(b"\n"));
        assert_eq!(text, fs::read(&b).unwrap());
    }

    #[test]
    fn names_are_unique() {
        for (i, p) in PROGRAMS.iter().enumerate() {
            assert!(PROGRAMS[i + 1..].iter().all(|q| q.name != p.name));
        }
    }
}
