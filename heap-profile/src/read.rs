//! Reading a profile back: symbolisation against the mapped files, top allocation sites, and
//! flame graphs (feature `read`, on by default).

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::PathBuf;

use crate::proto::{self, Profile};

/// One symbolised frame: a function (inlined functions give several frames per address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The demangled function name, or `?` followed by the file and address when unknown.
    pub function: String,
    /// `file:line`, when the debug information has it.
    pub location: Option<String>,
}

/// An object file loaded for symbolisation, with its loadable segments.
struct Object {
    loader: addr2line::Loader,
    /// (file offset, file size, virtual address) of each loadable segment.
    segments: Vec<(u64, u64, u64)>,
}

/// Turns a profile's addresses into function names and source lines, reading the debug
/// information of the mapped files (DWARF through `addr2line`, or the symbol table).
pub struct Symbolizer {
    objects: HashMap<String, Option<Object>>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    /// A symboliser with nothing loaded yet (files are loaded on first use).
    pub fn new() -> Self {
        Symbolizer {
            objects: HashMap::new(),
        }
    }

    fn object(&mut self, path: &str) -> Option<&Object> {
        self.objects
            .entry(path.to_owned())
            .or_insert_with(|| {
                let data = std::fs::read(path).ok()?;
                let file = object::read::File::parse(&data[..]).ok()?;
                use object::read::{Object as _, ObjectSegment as _};
                let segments = file
                    .segments()
                    .map(|s| {
                        let (off, size) = s.file_range();
                        (off, size, s.address())
                    })
                    .collect();
                let loader = addr2line::Loader::new(PathBuf::from(path)).ok()?;
                Some(Object { loader, segments })
            })
            .as_ref()
    }

    /// The frames (innermost inlined function first) at location `loc` of `p`.
    pub fn frames(&mut self, p: &Profile, loc: &proto::Location) -> Vec<Frame> {
        let unknown = |file: Option<&str>| Frame {
            function: format!("?{}+{:#x}", file.unwrap_or(""), loc.address),
            location: None,
        };
        let Some(m) = p.mapping.iter().find(|m| m.id == loc.mapping_id) else {
            return vec![unknown(None)];
        };
        let path = p
            .string_table
            .get(m.filename as usize)
            .cloned()
            .unwrap_or_default();
        let file_off = loc.address - m.memory_start + m.file_offset;
        let Some(obj) = self.object(&path) else {
            return vec![unknown(Some(&path))];
        };
        let Some(svma) = obj
            .segments
            .iter()
            .find(|(off, size, _)| *off <= file_off && file_off < off + size)
            .map(|(off, _, vaddr)| file_off - off + vaddr)
        else {
            return vec![unknown(Some(&path))];
        };
        let mut out = Vec::new();
        if let Ok(mut it) = obj.loader.find_frames(svma) {
            while let Ok(Some(f)) = it.next() {
                let Some(func) = f.function.as_ref() else {
                    continue;
                };
                let name = func.demangle().map(|c| c.into_owned()).unwrap_or_default();
                let location = f
                    .location
                    .as_ref()
                    .and_then(|l| Some(format!("{}:{}", l.file?, l.line.unwrap_or(0))));
                out.push(Frame {
                    function: name,
                    location,
                });
            }
        }
        if out.is_empty() {
            if let Some(name) = obj.loader.find_symbol(svma) {
                out.push(Frame {
                    function: addr2line::demangle_auto(name.into(), None).into_owned(),
                    location: None,
                });
            }
        }
        if out.is_empty() {
            out.push(unknown(Some(&path)));
        }
        out
    }

    /// The whole symbolised stack of `sample` (innermost first).
    pub fn stack(&mut self, p: &Profile, sample: &proto::Sample) -> Vec<Frame> {
        let mut out = Vec::new();
        for id in &sample.location_id {
            if let Some(loc) = p.location.iter().find(|l| l.id == *id) {
                out.extend(self.frames(p, loc));
            }
        }
        out
    }
}

/// Whether a frame belongs to the allocator, the C interface or the language runtime's
/// allocation wrappers, rather than to the program that asked for memory.
pub fn is_allocator_frame(f: &Frame) -> bool {
    const PREFIXES: [&str; 19] = [
        "std::alloc::",
        "<std::alloc::",
        "allocators::",
        "<allocators::",
        "preload::",
        "<preload::",
        "heap_profile::",
        "malloc",
        "calloc",
        "realloc",
        "posix_memalign",
        "aligned_alloc",
        "__rust_",
        "alloc::",
        "<alloc::",
        "core::",
        "<core::",
        "_Unwind",
        "__rustc::",
    ];
    // Trait impls of the `alloc` crate (`<u8 as alloc::vec::...::SpecFromElem>::from_elem`).
    PREFIXES.iter().any(|p| f.function.starts_with(p))
        || f.function.contains("__rdl_")
        || (f.function.starts_with('<') && f.function.contains(" as alloc::"))
}

/// Whether a frame is an entry point of the allocation interface (C's or Rust's).
fn is_entry_frame(f: &Frame) -> bool {
    const ENTRIES: [&str; 13] = [
        "malloc",
        "calloc",
        "realloc",
        "reallocarray",
        "posix_memalign",
        "aligned_alloc",
        "memalign",
        "valloc",
        "pvalloc",
        "__rust_alloc",
        "__rust_alloc_zeroed",
        "__rust_realloc",
        "__rdl_alloc",
    ];
    // Rust's allocator shims are named `__rustc::__rust_alloc` and so on since 1.88.
    ENTRIES.contains(&f.function.trim_start_matches("__rustc::"))
}

/// The program's part of a stack: the frames outside the allocator, from the first one after
/// the outermost entry point of the allocation interface (`malloc`, `__rust_alloc`, ...) on,
/// language-runtime allocation wrappers (`alloc::`, `core::`) left out too.
pub fn program_frames(stack: &[Frame]) -> &[Frame] {
    let after_entry = stack.iter().rposition(is_entry_frame).map_or(0, |i| i + 1);
    let rest = stack.get(after_entry..).unwrap_or(&[]);
    let first = rest
        .iter()
        .position(|f| !is_allocator_frame(f))
        .unwrap_or(rest.len());
    &rest[first..]
}

/// One allocation site: the innermost frame of the program's own code, with totals.
#[derive(Clone, Debug, PartialEq)]
pub struct Site {
    /// Its function name.
    pub function: String,
    /// `file:line` of the call, when known.
    pub location: Option<String>,
    /// Bytes live now (estimated).
    pub inuse_bytes: i64,
    /// Objects live now (estimated).
    pub inuse_objects: i64,
    /// Bytes allocated since start (estimated).
    pub alloc_bytes: i64,
    /// Objects allocated since start (estimated).
    pub alloc_objects: i64,
}

/// The allocation sites of `p`, largest in-use bytes first.
pub fn top_sites(p: &Profile, sym: &mut Symbolizer) -> Vec<Site> {
    let mut by: HashMap<(String, Option<String>), Site> = HashMap::new();
    for s in &p.sample {
        let stack = sym.stack(p, s);
        let Some(f) = program_frames(&stack).first() else {
            continue;
        };
        let e = by
            .entry((f.function.clone(), f.location.clone()))
            .or_insert_with(|| Site {
                function: f.function.clone(),
                location: f.location.clone(),
                inuse_bytes: 0,
                inuse_objects: 0,
                alloc_bytes: 0,
                alloc_objects: 0,
            });
        let v = |i: usize| s.value.get(i).copied().unwrap_or(0);
        e.alloc_objects += v(0);
        e.alloc_bytes += v(1);
        e.inuse_objects += v(2);
        e.inuse_bytes += v(3);
    }
    let mut sites: Vec<Site> = by.into_values().collect();
    sites.sort_by(|a, b| {
        b.inuse_bytes
            .cmp(&a.inuse_bytes)
            .then(b.alloc_bytes.cmp(&a.alloc_bytes))
    });
    sites
}

/// The stacks of `p` in the collapsed format of flame-graph tools (`outer;...;inner value`),
/// with the value of sample type `value_index` (e.g. [`INUSE_SPACE`]); allocator frames left
/// out, zero values skipped.
pub fn collapsed(p: &Profile, sym: &mut Symbolizer, value_index: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for s in &p.sample {
        let v = s.value.get(value_index).copied().unwrap_or(0);
        if v <= 0 {
            continue;
        }
        let stack = sym.stack(p, s);
        let names: Vec<String> = program_frames(&stack)
            .iter()
            .rev()
            .map(|f| f.function.replace(';', ":"))
            .collect();
        if names.is_empty() {
            continue;
        }
        lines.push(format!("{} {v}", names.join(";")));
    }
    lines
}

/// Renders the collapsed stacks `lines` as a flame-graph SVG titled `title` into `out`.
pub fn flamegraph(lines: &[String], title: &str, out: impl Write) -> io::Result<()> {
    let mut opt = inferno::flamegraph::Options::default();
    opt.title = title.to_owned();
    opt.count_name = "bytes".to_owned();
    inferno::flamegraph::from_lines(&mut opt, lines.iter().map(|s| s.as_str()), out)
}
