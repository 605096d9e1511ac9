//! Call-stack capture for a sampled allocation, into a fixed array, without allocating.
//!
//! Frame pointers are absent from optimised C and Rust code, so the stack is walked with DWARF
//! call-frame information: on x86-64 Linux by [`super::unwind`] (cached rules, about 5 ns a
//! frame); a walk meeting a frame it cannot describe is done again, as on other targets, by the
//! unwinder every Linux process already has (`_Unwind_Backtrace` from libgcc_s, which Rust's
//! standard library links; 100-120 ns a frame). Neither allocates on the paths used for ordinary
//! ELF objects; should libgcc ever call `malloc`, the calling thread is marked busy (see
//! `sample::Busy`) so that allocation is served normally and never sampled.

use core::ffi::{c_int, c_void};

/// Frames kept per stack (the innermost ones).
pub const MAX_FRAMES: usize = 64;

/// `_Unwind_Reason_Code`: keep going.
const URC_NO_REASON: c_int = 0;
/// `_Unwind_Reason_Code`: stop (used to end the walk when the array is full).
const URC_END_OF_STACK: c_int = 5;

type TraceFn = extern "C" fn(ctx: *mut c_void, arg: *mut c_void) -> c_int;

extern "C" {
    fn _Unwind_Backtrace(trace: TraceFn, arg: *mut c_void) -> c_int;
    fn _Unwind_GetIP(ctx: *mut c_void) -> usize;
}

/// The walk's state, handed to [`step`].
struct Walk<'a> {
    frames: &'a mut [usize; MAX_FRAMES],
    len: usize,
    skip: usize,
}

extern "C" fn step(ctx: *mut c_void, arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Walk` that `capture` passed to `_Unwind_Backtrace`, alive for the
    // whole walk and used by nothing else meanwhile.
    let w = unsafe { &mut *arg.cast::<Walk<'_>>() };
    // SAFETY: `ctx` is the unwinder's context for the current frame, valid during this call.
    let ip = unsafe { _Unwind_GetIP(ctx) };
    if ip == 0 {
        return URC_END_OF_STACK;
    }
    if w.skip > 0 {
        w.skip -= 1;
        return URC_NO_REASON;
    }
    match w.frames.get_mut(w.len) {
        Some(slot) => {
            *slot = ip;
            w.len += 1;
            URC_NO_REASON
        }
        None => URC_END_OF_STACK,
    }
}

/// Fills `frames` with the return addresses of the calling thread's stack, innermost first,
/// leaving out the innermost `skip` frames (the profiler's and allocator's own); returns how many
/// were written.
#[inline(never)]
pub fn capture(frames: &mut [usize; MAX_FRAMES], skip: usize) -> usize {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if let Some(n) = super::unwind::walk(frames, skip) {
        return n;
    }
    capture_libgcc(frames, skip)
}

/// As [`capture`], always with libgcc's `_Unwind_Backtrace` (the fallback, and the reference
/// the fast walker is tested and measured against). Inlined, so that the frames are those of
/// its caller's stack, as with [`capture`].
#[inline(always)]
pub fn capture_libgcc(frames: &mut [usize; MAX_FRAMES], skip: usize) -> usize {
    let mut w = Walk {
        frames,
        len: 0,
        skip,
    };
    // SAFETY: `step` matches the callback type the unwinder expects and only touches `w`, which
    // outlives the call.
    unsafe { _Unwind_Backtrace(step, (&raw mut w).cast()) };
    w.len
}
