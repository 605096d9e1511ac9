//! The programs of the C-program table and how each is made ready: the two C benchmarks of
//! `preload/bench/` (compiled with `cc -O2 -pthread`), GNU `sort` of a generated file, `python3`
//! running an allocation-heavy script with `PYTHONMALLOC=malloc`, and `sqlite3` doing inserts,
//! updates and queries. The sources, script and SQL are compiled into the harness, so the binary
//! needs no checkout; a program missing on the machine is skipped with the reason.

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
        name: "malloc-churn",
        description: "C, 2 threads: each keeps 10,000 blocks of 16 B-1 KiB (some to 64 KiB) and replaces a random one per step",
        prepare: malloc_churn,
    },
    ProgramEntry {
        name: "producer-consumer",
        description: "C, 2 producer/consumer pairs: batches of 256 blocks made on one thread, checked and freed (half parked for later) on another",
        prepare: producer_consumer,
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

const MALLOC_CHURN_C: &str = include_str!("../../../preload/bench/malloc_churn.c");
const PRODUCER_CONSUMER_C: &str = include_str!("../../../preload/bench/producer_consumer.c");
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

fn c_benchmark(
    name: &str,
    source: &str,
    args: [String; 2],
    dir: &Path,
) -> Result<Prepared, NotReady> {
    let exe = compile_c(name, source, dir)?;
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    Ok(Prepared {
        name: name.into(),
        display: display(&exe, &args, &[], ""),
        exe,
        args,
        env: Vec::new(),
        stdin: None,
    })
}

fn malloc_churn(scale: Scale, dir: &Path) -> Result<Prepared, NotReady> {
    let steps = scale.pick(1_000_000, 50_000);
    c_benchmark(
        "malloc-churn",
        MALLOC_CHURN_C,
        ["2".into(), steps.to_string()],
        dir,
    )
}

fn producer_consumer(scale: Scale, dir: &Path) -> Result<Prepared, NotReady> {
    let batches = scale.pick(5_000, 200);
    c_benchmark(
        "producer-consumer",
        PRODUCER_CONSUMER_C,
        ["2".into(), batches.to_string()],
        dir,
    )
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
    let mb = scale.pick(50, 1);
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
    let rounds = scale.pick(3, 1);
    let args = vec![script.into_os_string(), rounds.to_string().into()];
    let env = vec![("PYTHONMALLOC".to_string(), "malloc".to_string())];
    Ok(Prepared {
        name: "python3".into(),
        display: display(&exe, &args, &env, ""),
        exe,
        args,
        env,
        stdin: None,
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
    let rows = scale.pick(30_000, 2_000);
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
