//! The benchmark harness: runs multithreaded allocation workloads against the suite's allocators
//! and the baselines (glibc malloc, mimalloc, jemalloc, `buddy_system_allocator`, `talc`), one
//! cell (allocator x workload x threads x repetition) per child process, and writes the
//! comparative report (`results.csv`, `results.json`, `REPORT.md`, SVG charts); and runs real C
//! programs under each allocator through `LD_PRELOAD` (`c_programs.csv`, `c_programs.json`).
//!
//! Map of the crate:
//!
//! | module | what |
//! |---|---|
//! | [`registry`] | the ONE table of allocators under test (adding one is one line) |
//! | [`baselines`] | fixed-region baselines set up over a large reserved mapping |
//! | [`workloads`] | the fourteen workloads, generic over `A: GlobalAlloc` |
//! | [`worker`] | what a workload thread calls: timed, counted alloc/free/realloc |
//! | [`timer`] | the cycle counter used to time sampled operations |
//! | [`proc_mem`] | RSS readings from `/proc/self` |
//! | [`cell`] | the child side: run one cell, print its JSON |
//! | [`runner`] | the parent side: plan, interleave and run cells, aggregate repetitions |
//! | [`summary`] | median, spread, percentiles, geometric means, ratios |
//! | [`compare`] | agreement of two runs (the repeatability check) |
//! | [`results_io`] | `results.csv` / `results.json` writing and reading |
//! | [`machine`] | the machine description recorded with the results |
//! | [`micro`] | the loops behind the criterion micro-benchmarks |
//! | [`selection`] | parsing of `--allocators`, `--workloads`, `--threads` |
//! | [`report`] | `REPORT.md` and its SVG charts: tables, generated reading, charts |
//! | [`misuse`] | the heap-misuse table: each misuse case against each allocator, in a child process |
//! | [`c_programs`] | C programs (C benchmarks, redis, lua, sort, python3, sqlite3) under each allocator via `LD_PRELOAD` |

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod baselines;
pub mod c_programs;
pub mod cell;
pub mod compare;
pub mod machine;
pub mod micro;
pub mod misuse;
pub mod proc_mem;
pub mod registry;
pub mod report;
pub mod results_io;
pub mod runner;
pub mod selection;
pub mod summary;
pub mod timer;
pub mod worker;
pub mod workloads;
