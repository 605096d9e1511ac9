//! Contract point: blocks never overlap and stay intact until freed, checked against a reference
//! model over random sequences of alloc / alloc_zeroed / realloc / dealloc (proptest).

use core::alloc::GlobalAlloc;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use super::layout;
use crate::pattern::{fill, verify};

/// One step of a random sequence. Indices pick a live block modulo the number of live blocks.
#[derive(Clone, Debug)]
enum Op {
    Alloc {
        size: usize,
        align_shift: u32,
        zeroed: bool,
    },
    Realloc {
        index: usize,
        new_size: usize,
    },
    Dealloc {
        index: usize,
    },
}

/// A live block in the model.
struct Block {
    ptr: *mut u8,
    size: usize,
    align: usize,
    id: u64,
}

fn size_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![
        12 => 1usize..=128,
        6 => 129usize..=4096,
        2 => 4097usize..=262_144,
        1 => 262_145usize..=(5 << 20),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (size_strategy(), 0u32..=12, any::<bool>())
            .prop_map(|(size, align_shift, zeroed)| Op::Alloc { size, align_shift, zeroed }),
        2 => (any::<usize>(), size_strategy()).prop_map(|(index, new_size)| Op::Realloc { index, new_size }),
        3 => any::<usize>().prop_map(|index| Op::Dealloc { index }),
    ]
}

/// Runs the model with 48 random sequences of up to 300 operations.
pub fn check_no_overlap_model<A: GlobalAlloc + Sync>(a: &A) {
    check_no_overlap_model_with(a, 48, 300);
}

/// Runs the model with `cases` random sequences of up to `max_ops` operations each.
pub fn check_no_overlap_model_with<A: GlobalAlloc + Sync>(a: &A, cases: u32, max_ops: usize) {
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(
        &proptest::collection::vec(op_strategy(), 1..=max_ops),
        |ops| run_sequence(a, &ops),
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

fn fail(msg: String) -> Result<(), TestCaseError> {
    Err(TestCaseError::fail(msg))
}

/// Checks that `b` intersects no other live block.
fn check_disjoint(live: &[Block], b: &Block, what: &str) -> Result<(), TestCaseError> {
    let (s, e) = (b.ptr as usize, b.ptr as usize + b.size);
    for o in live {
        let (os, oe) = (o.ptr as usize, o.ptr as usize + o.size);
        if o.id != b.id && s < oe && os < e {
            return fail(format!(
                "contract violated: blocks never overlap: {what} gave {:#x}..{:#x} (size {}), which \
                 intersects live block {} at {:#x}..{:#x}",
                s, e, b.size, o.id, os, oe
            ));
        }
    }
    Ok(())
}

fn check_block(b: &Block, what: &str) -> Result<(), TestCaseError> {
    // SAFETY: b is live in the model, so its `size` bytes are ours.
    match unsafe { verify(b.ptr, 0..b.size, b.id) } {
        Ok(()) => Ok(()),
        Err(off) => fail(format!(
            "contract violated: blocks stay intact until freed: block {} (size {}, align {}) \
             changed at offset {off} ({what})",
            b.id, b.size, b.align
        )),
    }
}

fn run_sequence<A: GlobalAlloc + Sync>(a: &A, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut live: Vec<Block> = Vec::new();
    let mut next_id = 1u64;
    let result = (|| {
        for op in ops {
            match *op {
                Op::Alloc {
                    size,
                    align_shift,
                    zeroed,
                } => {
                    let align = 1usize << align_shift;
                    let l = layout(size, align);
                    // SAFETY: a valid layout.
                    let p = unsafe {
                        if zeroed {
                            a.alloc_zeroed(l)
                        } else {
                            a.alloc(l)
                        }
                    };
                    if p.is_null() {
                        return fail(format!(
                            "contract violated: alloc(size {size}, align {align}) returned null"
                        ));
                    }
                    if !(p as usize).is_multiple_of(align) {
                        return fail(format!(
                            "contract violated: blocks are aligned as asked: size {size} align {align} got {p:p}"
                        ));
                    }
                    if zeroed {
                        // SAFETY: a fresh block of `size` bytes.
                        let bytes = unsafe { core::slice::from_raw_parts(p, size) };
                        if let Some(off) = bytes.iter().position(|&x| x != 0) {
                            return fail(format!(
                                "contract violated: alloc_zeroed returns zeros: size {size}: byte {off}"
                            ));
                        }
                    }
                    let b = Block {
                        ptr: p,
                        size,
                        align,
                        id: next_id,
                    };
                    next_id += 1;
                    check_disjoint(&live, &b, "alloc")?;
                    // SAFETY: a fresh block of `size` bytes.
                    unsafe { fill(b.ptr, 0..b.size, b.id) };
                    live.push(b);
                }
                Op::Realloc { index, new_size } if !live.is_empty() => {
                    let i = index % live.len();
                    check_block(&live[i], "before realloc")?;
                    let b = &live[i];
                    // SAFETY: b is live with this layout; new_size is small.
                    let q = unsafe { a.realloc(b.ptr, layout(b.size, b.align), new_size) };
                    if q.is_null() {
                        return fail(format!(
                            "contract violated: realloc {} -> {new_size} returned null",
                            b.size
                        ));
                    }
                    let moved = Block {
                        ptr: q,
                        size: new_size,
                        align: b.align,
                        id: b.id,
                    };
                    let old_size = b.size;
                    if !(q as usize).is_multiple_of(moved.align) {
                        return fail(format!(
                            "contract violated: realloc keeps the alignment {}: got {q:p}",
                            moved.align
                        ));
                    }
                    let kept = old_size.min(new_size);
                    // SAFETY: the block now has new_size >= kept bytes.
                    if let Err(off) = unsafe { verify(q, 0..kept, moved.id) } {
                        // A new block inside the old one (a block handed out twice) loses bytes
                        // in the copy: that is the overlap, named as such. (A move that overlaps
                        // but copies with memmove keeps the bytes and passes.)
                        let (os, qs) = (b.ptr as usize, q as usize);
                        if qs != os && qs < os + old_size && os < qs + new_size {
                            return fail(format!(
                                "contract violated: blocks never overlap: realloc moved the block \
                                 at {os:#x} (size {old_size}) to {qs:#x} (size {new_size}), \
                                 inside it, and lost byte {off}"
                            ));
                        }
                        return fail(format!(
                            "contract violated: realloc keeps bytes 0..min(old, new): {old_size} -> \
                             {new_size} lost byte {off}"
                        ));
                    }
                    live.swap_remove(i);
                    check_disjoint(&live, &moved, "realloc")?;
                    // SAFETY: the new tail belongs to the block.
                    unsafe { fill(q, kept..new_size, moved.id) };
                    live.push(moved);
                }
                Op::Dealloc { index } if !live.is_empty() => {
                    let i = index % live.len();
                    check_block(&live[i], "before free")?;
                    let b = live.swap_remove(i);
                    // SAFETY: b is live with this layout.
                    unsafe { a.dealloc(b.ptr, layout(b.size, b.align)) };
                }
                _ => {}
            }
        }
        for b in &live {
            check_block(b, "at the end of the sequence")?;
        }
        Ok(())
    })();
    if result.is_ok() {
        for b in live.drain(..) {
            // SAFETY: b is live with this layout.
            unsafe { a.dealloc(b.ptr, layout(b.size, b.align)) };
        }
    }
    // On failure the blocks are leaked on purpose: a broken allocator's blocks may not be safe to
    // free.
    result
}
