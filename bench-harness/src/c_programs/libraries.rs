//! The allocators of the C-program table: system malloc (nothing preloaded), Debian's mimalloc
//! and jemalloc packages, and each `lib<name>_preload.so` of this suite. Ours are the crates in
//! `preload/libs/` of the checkout the harness was built from (plus any such library already
//! beside it); they live in `<target>/release`, next to a release harness, and are brought up to
//! date with `cargo build --release` before a run, so a run never measures a stale library.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::registry::ALLOCATORS;

/// Debian's mimalloc (package `libmimalloc2.0`).
pub const MIMALLOC_LIB: &str = "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2";
/// Debian's jemalloc (package `libjemalloc2`).
pub const JEMALLOC_LIB: &str = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";

/// One allocator of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct PreloadAllocator {
    /// The name in the results.
    pub name: String,
    /// The library put in `LD_PRELOAD` (`None`: system malloc).
    pub library: Option<PathBuf>,
    /// Why it cannot run (library not installed), if so.
    pub unavailable: Option<String>,
}

impl PreloadAllocator {
    /// glibc's malloc: nothing preloaded.
    pub fn system() -> Self {
        PreloadAllocator {
            name: super::SYSTEM.into(),
            library: None,
            unavailable: None,
        }
    }
}

/// The repository root the harness was built from.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Where the preload libraries are: `<target>/release`, for a harness in `<target>/<profile>/`.
pub fn lib_dir(exe: &Path) -> PathBuf {
    let exe_dir = exe.parent().unwrap_or(Path::new("."));
    match exe_dir.parent() {
        Some(target) => target.join("release"),
        None => exe_dir.to_path_buf(),
    }
}

fn lib_path(lib_dir: &Path, name: &str) -> PathBuf {
    lib_dir.join(format!("lib{name}_preload.so"))
}

/// Our allocators: the crates in `preload/libs/` and any `lib<name>_preload.so` in `lib_dir`, in
/// the registry's order (unknown names after, alphabetically).
pub fn our_names(lib_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo_root().join("preload/libs"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let built = std::fs::read_dir(lib_dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let f = e.file_name().to_string_lossy().into_owned();
            f.strip_prefix("lib")?
                .strip_suffix("_preload.so")
                .map(str::to_string)
        });
    for n in built {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names.sort_by_key(|n| {
        (
            ALLOCATORS
                .iter()
                .position(|a| a.name == n)
                .unwrap_or(usize::MAX),
            n.clone(),
        )
    });
    names
}

/// Every allocator name the table knows, in column order: ours, then the baselines.
pub fn valid_names(ours: &[String]) -> Vec<String> {
    let mut v = ours.to_vec();
    v.extend(["system", "mimalloc", "jemalloc"].map(String::from));
    v
}

/// The allocators `selected` (names from [`valid_names`]), with their libraries; a baseline
/// whose library is not installed is kept, marked unavailable with the reason.
pub fn resolve(selected: &[String], lib_dir: &Path) -> Vec<PreloadAllocator> {
    selected
        .iter()
        .map(|name| {
            let (library, missing) = match name.as_str() {
                "system" => return PreloadAllocator::system(),
                "mimalloc" => (PathBuf::from(MIMALLOC_LIB), "libmimalloc2.0"),
                "jemalloc" => (PathBuf::from(JEMALLOC_LIB), "libjemalloc2"),
                ours => (lib_path(lib_dir, ours), ""),
            };
            let unavailable = (!library.is_file()).then(|| {
                if missing.is_empty() {
                    format!("{} not built", library.display())
                } else {
                    format!(
                        "{} not installed (Debian: apt-get install {missing})",
                        library.display()
                    )
                }
            });
            PreloadAllocator {
                name: name.clone(),
                library: Some(library),
                unavailable,
            }
        })
        .collect()
}

/// The command that builds our libraries `names` into `lib_dir`'s target directory.
pub fn build_command(names: &[String], lib_dir: &Path) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(repo_root().join("Cargo.toml"))
        .arg("--target-dir")
        .arg(lib_dir.parent().unwrap_or(lib_dir));
    for n in names {
        cmd.arg("-p").arg(format!("{n}-preload"));
    }
    cmd
}

/// Brings our libraries `names` up to date (`cargo build --release`, a no-op when fresh). Without
/// a checkout or cargo, libraries already built are used as they are; a missing one is an error
/// that names the command to run.
pub fn ensure_built(names: &[String], lib_dir: &Path) -> Result<(), String> {
    if names.is_empty() {
        return Ok(());
    }
    let missing: Vec<String> = names
        .iter()
        .map(|n| lib_path(lib_dir, n))
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    let packages: Vec<String> = names.iter().map(|n| format!("-p {n}-preload")).collect();
    let advice = format!(
        "build them with `cargo build --release {}` (same target directory as the harness: {})",
        packages.join(" "),
        lib_dir.parent().unwrap_or(lib_dir).display()
    );
    let can_build = repo_root().join("Cargo.toml").is_file()
        && names
            .iter()
            .all(|n| repo_root().join("preload/libs").join(n).is_dir());
    if !can_build {
        return if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "preload libraries missing: {}; {advice}",
                missing.join(", ")
            ))
        };
    }
    eprintln!(
        "building the preload libraries (cargo build --release {})",
        packages.join(" ")
    );
    let out = build_command(names, lib_dir).output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let tail: Vec<&str> = err.lines().rev().take(8).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!(
                "building the preload libraries failed ({}): {}\n{advice}",
                o.status,
                tail.join("\n")
            ));
        }
        Err(e) if missing.is_empty() => {
            eprintln!("warning: cannot run cargo ({e}); using the preload libraries as built");
        }
        Err(e) => return Err(format!("cannot run cargo ({e}); {advice}")),
    }
    let still: Vec<String> = names
        .iter()
        .map(|n| lib_path(lib_dir, n))
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if still.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "preload libraries missing after the build: {}; {advice}",
            still.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ours_come_from_the_checkout_in_registry_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("libzzz_preload.so"), b"").unwrap();
        let names = our_names(dir.path());
        let pos = |n: &str| names.iter().position(|x| x == n).unwrap();
        assert!(pos("bump") < pos("sizeclass"), "{names:?}");
        assert_eq!(names.last().map(String::as_str), Some("zzz"));
    }

    #[test]
    fn missing_libraries_are_marked_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let a = resolve(&["system".into(), "nope".into()], dir.path());
        assert_eq!(a[0], PreloadAllocator::system());
        assert!(a[1].unavailable.as_deref().unwrap().contains("not built"));
    }

    #[test]
    fn lib_dir_is_the_release_dir_of_the_target() {
        assert_eq!(
            lib_dir(Path::new("/t/debug/bench-harness")),
            Path::new("/t/release")
        );
        assert_eq!(
            lib_dir(Path::new("/t/release/bench-harness")),
            Path::new("/t/release")
        );
    }
}
