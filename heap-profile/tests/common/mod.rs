//! The Rust-API heap-profile check shared by one test binary per allocator (each binary installs
//! its allocator as the `#[global_allocator]`): two call sites keep 30 MiB and 10 MiB live, a
//! third allocates and frees 20 MiB; the profile written through `heap_profile::write_pprof` is
//! decoded, its structure checked, and the sites found by name with in-use bytes at 3 : 1
//! (within 15%).

use std::hint::black_box;

const BLOCK: usize = 1024;

#[inline(never)]
pub fn keep_thirty() -> Vec<Vec<u8>> {
    (0..(30 << 20) / BLOCK)
        .map(|i| black_box(vec![i as u8; BLOCK]))
        .collect()
}

#[inline(never)]
pub fn keep_ten() -> Vec<Vec<u8>> {
    (0..(10 << 20) / BLOCK)
        .map(|i| black_box(vec![i as u8; BLOCK]))
        .collect()
}

#[inline(never)]
pub fn churn_twenty() {
    for i in 0..(20 << 20) / BLOCK {
        drop(black_box(vec![i as u8; BLOCK]));
    }
}

fn site(sites: &[heap_profile::Site], name: &str) -> (i64, i64) {
    let mine: Vec<_> = sites.iter().filter(|s| s.function.contains(name)).collect();
    assert!(!mine.is_empty(), "no site {name} in {sites:#?}");
    (
        mine.iter().map(|s| s.inuse_bytes).sum(),
        mine.iter().map(|s| s.alloc_bytes).sum(),
    )
}

/// Checks the pprof structure: sample types, string table, ids, references.
pub fn check_structure(p: &heap_profile::Profile) {
    let st = &p.string_table;
    assert_eq!(
        st.first().map(String::as_str),
        Some(""),
        "string 0 must be empty"
    );
    let name = |i: i64| st[i as usize].as_str();
    let types: Vec<(&str, &str)> = p
        .sample_type
        .iter()
        .map(|t| (name(t.r#type), name(t.unit)))
        .collect();
    assert_eq!(types, heap_profile::SAMPLE_TYPES.to_vec());
    assert_eq!(name(p.default_sample_type_name()), "inuse_space");
    let pt = p.period_type.as_ref().expect("period type");
    assert_eq!((name(pt.r#type), name(pt.unit)), ("space", "bytes"));
    assert!(!p.mapping.is_empty());
    for (i, m) in p.mapping.iter().enumerate() {
        assert_eq!(m.id, i as u64 + 1);
        assert!(m.memory_start < m.memory_limit);
        assert!(name(m.filename).starts_with('/'));
    }
    for (i, l) in p.location.iter().enumerate() {
        assert_eq!(l.id, i as u64 + 1);
        assert!(l.mapping_id as usize <= p.mapping.len());
    }
    assert!(!p.sample.is_empty());
    for s in &p.sample {
        assert_eq!(s.value.len(), 4);
        assert!(!s.location_id.is_empty());
        assert!(s
            .location_id
            .iter()
            .all(|&id| id >= 1 && id as usize <= p.location.len()));
        // In use never exceeds allocated (objects and bytes).
        assert!(
            s.value[2] <= s.value[0] && s.value[3] <= s.value[1],
            "{s:?}"
        );
    }
}

trait DefaultName {
    fn default_sample_type_name(&self) -> i64;
}

impl DefaultName for heap_profile::Profile {
    fn default_sample_type_name(&self) -> i64 {
        self.sample_type[self.default_sample_type as usize].r#type
    }
}

/// The whole check.
pub fn run(allocator: &str) {
    allocators::profile::set_rate(8 * 1024);
    let a = keep_thirty();
    churn_twenty();
    let b = keep_ten();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("heap.pb.gz");
    heap_profile::write_pprof(&path).unwrap();
    drop(black_box(a));
    drop(black_box(b));
    // After the frees, little is left in use (the test harness's own blocks).
    let mut after = Vec::new();
    allocators::profile::snapshot(|s| after.push(s.inuse_bytes));
    let live: f64 = after.iter().sum();
    assert!(
        live < (2 << 20) as f64,
        "{live} bytes still in use after freeing"
    );
    // Decoded here with prost's decoder, independently of how it was written.
    let p = heap_profile::read_pprof(&path).unwrap();
    check_structure(&p);
    assert_eq!(p.period, 8 * 1024);
    let mut sym = heap_profile::Symbolizer::new();
    let sites = heap_profile::top_sites(&p, &mut sym);
    let (thirty, _) = site(&sites, "keep_thirty");
    let (ten, _) = site(&sites, "keep_ten");
    let (churn_live, churn_total) = site(&sites, "churn_twenty");
    let ratio = thirty as f64 / ten as f64;
    eprintln!(
        "{allocator}: keep_thirty {thirty} B, keep_ten {ten} B in use (ratio {ratio:.3}); \
         churn_twenty {churn_total} B allocated, {churn_live} B in use"
    );
    assert!((ratio / 3.0 - 1.0).abs() <= 0.15, "ratio {ratio}");
    let mib = |b: i64| b as f64 / (1 << 20) as f64;
    assert!((mib(thirty) / 30.0 - 1.0).abs() < 0.2, "{thirty}");
    assert!((mib(churn_total) / 20.0 - 1.0).abs() < 0.2, "{churn_total}");
    assert!(
        mib(churn_live) < 1.0,
        "freed blocks still in use: {churn_live}"
    );
}
