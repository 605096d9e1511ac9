//! Shared support for the LD_PRELOAD tests: finds every `preload/libs/<name>/` crate, builds the
//! shared libraries once (with the same cargo and target directory as the test run; hardened
//! libraries when the tests are built with the `hardened` feature), and runs programs with and
//! without `LD_PRELOAD`.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// One preload library: `lib<name>_preload.so`.
#[derive(Debug)]
pub struct Library {
    /// The allocator's short name (`bump`, `slab`, ...).
    pub name: String,
    /// The built shared library.
    pub path: PathBuf,
}

/// The `preload` crate's directory.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The target directory this test binary was built into (`<target>/<profile>/deps/<test>`), so the
/// libraries land beside it whether or not `CARGO_TARGET_DIR` is set.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test binary");
    exe.ancestors()
        .nth(3)
        .expect("test binary inside <target>/<profile>/deps")
        .to_path_buf()
}

/// Every library, built in release mode on first call (a no-op build when they are fresh).
pub fn libraries() -> &'static [Library] {
    static LIBS: OnceLock<Vec<Library>> = OnceLock::new();
    LIBS.get_or_init(build_all)
}

fn build_all() -> Vec<Library> {
    let mut names: Vec<String> = std::fs::read_dir(crate_dir().join("libs"))
        .expect("preload/libs")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no crates in preload/libs");
    // Tests built with the `hardened` feature preload hardened libraries, kept in a target
    // directory of their own so they never replace the plain ones.
    let target = if cfg!(feature = "hardened") {
        target_dir().join("hardened-preload")
    } else {
        target_dir()
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--target-dir")
        .arg(&target)
        .arg("--manifest-path")
        .arg(crate_dir().join("../Cargo.toml"));
    for n in &names {
        cmd.arg("-p").arg(format!("{n}-preload"));
    }
    if cfg!(feature = "hardened") {
        cmd.arg("--features").arg("allocators/hardened");
    }
    let out = cmd.output().expect("run cargo build");
    assert!(
        out.status.success(),
        "building the preload libraries failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    names
        .into_iter()
        .map(|name| {
            let path = target.join("release").join(format!("lib{name}_preload.so"));
            assert!(path.is_file(), "{} was not built", path.display());
            Library { name, path }
        })
        .collect()
}

/// Runs `cmd` with `LD_PRELOAD` set to `lib` (or removed for `None`), and checks that the library
/// actually loaded (ld.so only warns when it cannot preload one).
pub fn run(cmd: &mut Command, lib: Option<&Library>) -> Output {
    match lib {
        Some(l) => cmd.env("LD_PRELOAD", &l.path),
        None => cmd.env_remove("LD_PRELOAD"),
    };
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("cannot be preloaded"),
        "{cmd:?}: the library did not load:\n{stderr}"
    );
    out
}

/// Like [`run`], and the program must exit with status 0; returns its standard output.
pub fn run_ok(cmd: &mut Command, lib: Option<&Library>) -> String {
    let out = run(cmd, lib);
    let which = lib.map_or("glibc malloc", |l| l.name.as_str());
    assert!(
        out.status.success(),
        "{cmd:?} under {which} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        tail(&String::from_utf8_lossy(&out.stdout)),
        tail(&String::from_utf8_lossy(&out.stderr)),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The last 40 lines of `s`, for failure messages.
fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Compiles `tests/c/<name>.c` with `cc` into `dir`, returning the executable.
pub fn compile_c(name: &str, dir: &Path) -> PathBuf {
    let src = crate_dir().join("tests/c").join(format!("{name}.c"));
    let exe = dir.join(name);
    let out = Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()))
        .args(["-O2", "-g", "-Wall", "-o"])
        .arg(&exe)
        .arg(&src)
        .args(["-lpthread", "-ldl"])
        .output()
        .expect("run cc (a C compiler is needed for these tests)");
    assert!(
        out.status.success(),
        "compiling {} failed:\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// The program `name` on `PATH` (or at an absolute path), or a panic saying how to install it.
pub fn require_program(name: &str, package: &str) -> PathBuf {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    candidates
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` not found: install it (Debian: apt-get install {package})")
        })
}
