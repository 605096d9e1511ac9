//! The sampled heap profiler under `LD_PRELOAD`: a C program with two call sites keeping 30 MiB
//! and 10 MiB live (and a third allocating and freeing 20 MiB) runs under every library with
//! `ALLOCATORS_PROFILE` set; the profile written on `SIGUSR2` and at exit is decoded and must
//! name the sites, with in-use bytes at 3 : 1 within 15%.

mod common;

use std::process::Command;

use common::{compile_c, libraries, run_ok};

/// The sites of function `name` (one per line of it that allocates), added up.
fn site(sites: &[heap_profile::Site], name: &str) -> heap_profile::Site {
    let mut found = sites.iter().filter(|s| s.function == name);
    let mut total = found
        .next()
        .unwrap_or_else(|| panic!("no site {name} in {sites:#?}"))
        .clone();
    for s in found {
        total.inuse_bytes += s.inuse_bytes;
        total.inuse_objects += s.inuse_objects;
        total.alloc_bytes += s.alloc_bytes;
        total.alloc_objects += s.alloc_objects;
    }
    total
}

#[test]
fn two_sites_show_at_three_to_one_under_every_library() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_c("two_sites", dir.path());
    for lib in libraries() {
        let path = dir.path().join(format!("{}.pb.gz", lib.name));
        let out = run_ok(
            Command::new(&exe)
                .env("ALLOCATORS_PROFILE", &path)
                // 8 KiB: about 5,000 samples of the 40 MiB live, so that the ratio's standard
                // error is about 3% (15% is five of them).
                .env("ALLOCATORS_PROFILE_RATE", "8192"),
            Some(lib),
        );
        assert!(
            out.contains("signal profile written"),
            "{}: {out}",
            lib.name
        );
        let p = heap_profile::read_pprof(&path).unwrap();
        assert_eq!(p.period, 8192, "{}", lib.name);
        let mut sym = heap_profile::Symbolizer::new();
        let sites = heap_profile::top_sites(&p, &mut sym);
        let thirty = site(&sites, "keep_thirty");
        let ten = site(&sites, "keep_ten");
        let churn = site(&sites, "churn_twenty");
        let ratio = thirty.inuse_bytes as f64 / ten.inuse_bytes as f64;
        eprintln!(
            "{}: keep_thirty {} B, keep_ten {} B in use (ratio {ratio:.3}); churn_twenty {} B \
             allocated, {} B in use",
            lib.name, thirty.inuse_bytes, ten.inuse_bytes, churn.alloc_bytes, churn.inuse_bytes
        );
        assert!(
            (ratio / 3.0 - 1.0).abs() <= 0.15,
            "{}: ratio {ratio}",
            lib.name
        );
        let mib = |b: i64| b as f64 / (1 << 20) as f64;
        // Hardened libraries pad C's requests for their canaries (Buddy's to the whole block,
        // twice the size here), and the profile records what the allocator was asked for.
        if !cfg!(feature = "hardened") {
            assert!(
                (mib(thirty.inuse_bytes) / 30.0 - 1.0).abs() < 0.2,
                "{}",
                lib.name
            );
            assert!(
                (mib(churn.alloc_bytes) / 20.0 - 1.0).abs() < 0.2,
                "{}",
                lib.name
            );
        }
        assert!(
            mib(churn.inuse_bytes) < 1.0,
            "{}: freed blocks still in use",
            lib.name
        );
        assert!(
            thirty
                .location
                .as_deref()
                .is_some_and(|l| l.contains("two_sites.c")),
            "{}: {thirty:?}",
            lib.name
        );
    }
}

#[test]
fn sampling_off_writes_an_empty_profile() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_c("two_sites", dir.path());
    let lib = &libraries()[0];
    let path = dir.path().join("off.pb.gz");
    run_ok(
        Command::new(&exe)
            .env("ALLOCATORS_PROFILE", &path)
            .env("ALLOCATORS_PROFILE_RATE", "0"),
        Some(lib),
    );
    let p = heap_profile::read_pprof(&path).unwrap();
    assert_eq!(p.period, 0);
    assert!(p.sample.is_empty(), "{} samples", p.sample.len());
}
