//! The heap profile of the `allocators` crate's sampling profiler ([`allocators::profile`]) in
//! the pprof format (a gzip-compressed `profile.proto`), and the means to read it back:
//! symbolised call sites ([`Symbolizer`], [`top_sites`]) and flame-graph stacks ([`collapsed`]).
//!
//! Writing a profile allocates normally (it runs outside the allocators' own paths), with
//! sampling suspended on the writing thread so that the profile does not profile itself.
//!
//! ```no_run
//! // In a program whose #[global_allocator] is one of the suite's allocators:
//! heap_profile::write_pprof("heap.pb.gz").unwrap();
//! ```

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod preload;
pub mod proto;
#[cfg(feature = "read")]
pub mod read;

#[cfg(feature = "read")]
pub use read::*;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::Path;

use prost::Message;

pub use proto::Profile;

/// The sample types of every profile written here, in this order.
pub const SAMPLE_TYPES: [(&str, &str); 4] = [
    ("alloc_objects", "count"),
    ("alloc_space", "bytes"),
    ("inuse_objects", "count"),
    ("inuse_space", "bytes"),
];

/// Index of `inuse_space` in [`SAMPLE_TYPES`].
pub const INUSE_SPACE: usize = 3;
/// Index of `alloc_space` in [`SAMPLE_TYPES`].
pub const ALLOC_SPACE: usize = 1;

/// Interns strings into a pprof string table.
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        Strings {
            table: vec![String::new()],
            index: HashMap::from([(String::new(), 0)]),
        }
    }

    fn id(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }
}

/// One executable mapping of the process, from `/proc/self/maps`.
#[derive(Clone, Debug)]
struct MapLine {
    start: u64,
    end: u64,
    offset: u64,
    path: String,
}

/// The executable file mappings of the calling process.
fn executable_mappings() -> Vec<MapLine> {
    let text = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let range = f.next()?;
            let perms = f.next()?;
            let offset = u64::from_str_radix(f.next()?, 16).ok()?;
            let _dev = f.next()?;
            let _inode = f.next()?;
            let path = f.collect::<Vec<_>>().join(" ");
            if !perms.contains('x') || !path.starts_with('/') {
                return None;
            }
            let (s, e) = range.split_once('-')?;
            Some(MapLine {
                start: u64::from_str_radix(s, 16).ok()?,
                end: u64::from_str_radix(e, 16).ok()?,
                offset,
                path,
            })
        })
        .collect()
}

/// The calling process's heap profile now: every sampled call stack with its four values, the
/// executable mappings, one location per distinct address (unsymbolised: addresses and
/// mappings only, to be symbolised later against the mapped files).
pub fn build_profile() -> Profile {
    let _quiet = allocators::profile::suspend();
    let mut stacks: Vec<(Vec<usize>, [f64; 4])> = Vec::new();
    allocators::profile::snapshot(|s| {
        stacks.push((
            s.frames.to_vec(),
            [
                s.alloc_objects,
                s.alloc_bytes,
                s.inuse_objects,
                s.inuse_bytes,
            ],
        ))
    });
    let maps = executable_mappings();
    let mut strings = Strings::new();
    let mut p = Profile {
        sample_type: SAMPLE_TYPES
            .iter()
            .map(|(t, u)| proto::ValueType {
                r#type: strings.id(t),
                unit: strings.id(u),
            })
            .collect(),
        period_type: Some(proto::ValueType {
            r#type: strings.id("space"),
            unit: strings.id("bytes"),
        }),
        period: allocators::profile::rate() as i64,
        default_sample_type: INUSE_SPACE as i64,
        time_nanos: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64),
        ..Default::default()
    };
    p.comment
        .push(strings.id("allocators sampled heap profile (values scaled up from samples)"));
    for (i, m) in maps.iter().enumerate() {
        p.mapping.push(proto::Mapping {
            id: i as u64 + 1,
            memory_start: m.start,
            memory_limit: m.end,
            file_offset: m.offset,
            filename: strings.id(&m.path),
            ..Default::default()
        });
    }
    let mut loc_ids: HashMap<u64, u64> = HashMap::new();
    for (frames, values) in &stacks {
        let mut ids = Vec::with_capacity(frames.len());
        for &ip in frames {
            // A return address: the call instruction is just before it.
            let addr = (ip as u64).saturating_sub(1);
            let next = p.location.len() as u64 + 1;
            let id = *loc_ids.entry(addr).or_insert_with(|| {
                let mapping_id = maps
                    .iter()
                    .position(|m| m.start <= addr && addr < m.end)
                    .map_or(0, |i| i as u64 + 1);
                p.location.push(proto::Location {
                    id: next,
                    mapping_id,
                    address: addr,
                    line: Vec::new(),
                });
                next
            });
            ids.push(id);
        }
        p.sample.push(proto::Sample {
            location_id: ids,
            value: values.iter().map(|v| v.round() as i64).collect(),
        });
    }
    p.string_table = strings.table;
    p
}

/// Encodes `p` as a gzip-compressed `profile.proto`.
pub fn encode(p: &Profile) -> Vec<u8> {
    let _quiet = allocators::profile::suspend();
    let raw = p.encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail.
    let _ = gz.write_all(&raw);
    gz.finish().unwrap_or_default()
}

/// Writes the calling process's heap profile ([`build_profile`]) to `path` in the pprof format.
pub fn write_pprof(path: impl AsRef<Path>) -> io::Result<()> {
    let _quiet = allocators::profile::suspend();
    let bytes = encode(&build_profile());
    std::fs::write(path, bytes)
}

/// Reads a profile written by [`write_pprof`] (or any pprof file, gzip-compressed or not).
pub fn read_pprof(path: impl AsRef<Path>) -> io::Result<Profile> {
    let data = std::fs::read(path)?;
    let raw = if data.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&data[..]).read_to_end(&mut out)?;
        out
    } else {
        data
    };
    Profile::decode(&raw[..]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
