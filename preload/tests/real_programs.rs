//! Real programs under every preload library, their output compared with a run on glibc's
//! malloc: Python with eight threads (every object through malloc), GNU sort of a 100 MB file,
//! sqlite3 and git doing real work.

mod common;

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{crate_dir, libraries, require_program, run_ok, Library};

/// The system's Python (not a version-manager shim, which would run a shell first).
fn python() -> PathBuf {
    let system = PathBuf::from("/usr/bin/python3");
    if system.is_file() {
        system
    } else {
        require_program("python3", "python3")
    }
}

#[test]
fn python_threads_allocating_through_malloc() {
    let script = crate_dir().join("tests/programs/alloc_heavy.py");
    let run = |lib: Option<&Library>| {
        let mut cmd = Command::new(python());
        cmd.arg(&script).env("PYTHONMALLOC", "malloc");
        run_ok(&mut cmd, lib)
    };
    let native = run(None);
    assert!(native.starts_with("threads 8 digest "), "{native}");
    for lib in libraries() {
        assert_eq!(run(Some(lib)), native, "{}", lib.name);
    }
}

/// Writes `bytes` of pseudo-random lines (8 to 120 letters and digits) to `path`.
fn write_lines(path: &Path, bytes: usize) {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut out = BufWriter::new(fs::File::create(path).unwrap());
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut written = 0;
    let mut line = Vec::with_capacity(128);
    while written < bytes {
        line.clear();
        let len = 8 + (next() % 113) as usize;
        line.extend((0..len).map(|_| CHARS[(next() % CHARS.len() as u64) as usize]));
        line.push(b'\n');
        out.write_all(&line).unwrap();
        written += line.len();
    }
    out.flush().unwrap();
}

#[test]
fn sort_of_a_100_mb_file() {
    let sort = require_program("sort", "coreutils");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.txt");
    write_lines(&input, 100_000_000);
    let sorted = |lib: Option<&Library>, name: &str| {
        let output = dir.path().join(name);
        let mut cmd = Command::new(&sort);
        cmd.env("LC_ALL", "C").arg("-o").arg(&output).arg(&input);
        run_ok(&mut cmd, lib);
        output
    };
    let reference = fs::read(sorted(None, "glibc.txt")).unwrap();
    assert_eq!(
        reference.len(),
        fs::metadata(&input).unwrap().len() as usize
    );
    for lib in libraries() {
        let output = sorted(Some(lib), &format!("{}.txt", lib.name));
        assert!(
            fs::read(&output).unwrap() == reference,
            "{}: sort output differs",
            lib.name
        );
        fs::remove_file(output).unwrap();
    }
}

#[test]
fn sqlite3_workload() {
    let sqlite3 = require_program("sqlite3", "sqlite3");
    let sql = fs::read(crate_dir().join("tests/programs/workload.sql")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = |lib: Option<&Library>, db: &str| {
        let mut cmd = Command::new(&sqlite3);
        cmd.arg(dir.path().join(db))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match lib {
            Some(l) => cmd.env("LD_PRELOAD", &l.path),
            None => cmd.env_remove("LD_PRELOAD"),
        };
        let mut child = cmd.spawn().expect("start sqlite3");
        child.stdin.take().unwrap().write_all(&sql).unwrap();
        let out = child.wait_with_output().unwrap();
        let which = lib.map_or("glibc", |l| l.name.as_str());
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "sqlite3 under {which}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let native = run(None, "glibc.db");
    assert!(
        native.trim_end().ends_with("ok"),
        "integrity_check: {native}"
    );
    for lib in libraries() {
        assert_eq!(
            run(Some(lib), &format!("{}.db", lib.name)),
            native,
            "{}",
            lib.name
        );
    }
}

/// A repository with two commits of 300 files, then gc, fsck and queries; returns what git printed.
fn git_session(git: &Path, root: &Path, lib: Option<&Library>) -> String {
    fs::create_dir_all(root).unwrap();
    let repo = root.join("repo");
    let git_cmd = |args: &[&str]| {
        let mut cmd = Command::new(git);
        cmd.args(args)
            .current_dir(if repo.exists() { &repo } else { root })
            .env("HOME", root)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "Preload Test")
            .env("GIT_AUTHOR_EMAIL", "preload@example.com")
            .env("GIT_COMMITTER_NAME", "Preload Test")
            .env("GIT_COMMITTER_EMAIL", "preload@example.com")
            .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z");
        run_ok(&mut cmd, lib)
    };
    let mut log = git_cmd(&["init", "-q", "-b", "main", "repo"]);
    for i in 0..300 {
        let body: String = (0..i % 50 + 5)
            .map(|k| format!("line {k} of file {i}\n"))
            .collect();
        fs::write(repo.join(format!("f{i:03}.txt")), body).unwrap();
    }
    log += &git_cmd(&["add", "-A"]);
    log += &git_cmd(&["commit", "-q", "-m", "first"]);
    for i in (0..300).step_by(3) {
        let path = repo.join(format!("f{i:03}.txt"));
        let mut body = fs::read_to_string(&path)
            .unwrap()
            .replace("line 3 ", "LINE three ");
        body.push_str("appended\n");
        fs::write(path, body).unwrap();
    }
    log += &git_cmd(&["commit", "-q", "-a", "-m", "second"]);
    log += &git_cmd(&["log", "--stat", "--format=%H %s"]);
    log += &git_cmd(&["diff", "--stat", "HEAD~1"]);
    log += &git_cmd(&["gc", "-q", "--aggressive"]);
    log += &git_cmd(&["fsck", "--full", "--no-progress"]);
    log += &git_cmd(&["grep", "-c", "LINE three"]);
    log += &git_cmd(&["rev-parse", "HEAD", "HEAD^{tree}"]);
    log
}

#[test]
fn git_repository_work() {
    let git = require_program("git", "git");
    let dir = tempfile::tempdir().unwrap();
    let native = git_session(&git, &dir.path().join("glibc"), None);
    assert!(native.contains(" second\n"), "{native}");
    for lib in libraries() {
        let out = git_session(&git, &dir.path().join(&lib.name), Some(lib));
        assert_eq!(out, native, "{}", lib.name);
    }
}
