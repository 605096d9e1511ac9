//! A fast stack walker for x86-64 Linux: DWARF call-frame information reduced to one cached
//! rule per return address, so that a repeated stack costs a hash lookup and two loads a frame.
//!
//! On a cache miss the object holding the address is found with `dl_iterate_phdr`, its FDE
//! through the `.eh_frame_hdr` search table and evaluated with `gimli` (no allocation: fixed
//! storage in a mapping of its own). Only the rules that ordinary compiled code uses are kept:
//! CFA = RSP or RBP + offset, return address at CFA-8, RBP unchanged or saved at CFA+offset.
//! Anything else (signal frames, DWARF expressions, code without unwind information) makes
//! [`walk`] answer `None` and the caller fall back to libgcc's unwinder. Every stack read is
//! checked against pages of the calling thread known to be readable, so a wrong rule ends the
//! walk instead of faulting. Measured (`examples/sample_cost.rs`, 2-core VM): about 5 ns a frame
//! once the rules are cached, against 100-160 ns with libgcc; about 300 ns to describe a new
//! address (warm pages).

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

use gimli::{
    BaseAddresses, CfaRule, EhFrame, EhFrameHdr, NativeEndian, Register, RegisterRule,
    UnwindContext, UnwindContextStorage, UnwindSection, UnwindTableRow, X86_64,
};

use crate::os;
use crate::sync::Lock;
use crate::thread_word::thread_block;

/// Slots of the rule cache: 8192 (16 bytes each, 128 KiB mapped, touched as used). A program's
/// distinct return addresses on sampled stacks are typically a few hundred to a few thousand.
const CACHE_SLOTS: usize = 8192;

/// Register rules an FDE row may hold before evaluation gives up (and the walk falls back):
/// 16. x86-64 code saves at most the return address and six callee-saved registers.
const MAX_RULES: usize = 16;
/// Rows of `DW_CFA_remember_state` nesting plus the current one: 4 (gimli's own default).
const MAX_STATE_DEPTH: usize = 4;

/// Pages of stack [`StackRange`] verifies beyond what it knows at once before giving up: 64
/// (256 KiB at 4 KiB pages; a frame larger than that ends the walk).
const MAX_VERIFY_PAGES: usize = 64;

/// Rule kind: unwind with the offsets in the rule.
const KIND_STEP: u64 = 1;
/// Rule kind: the return address is undefined; this is the outermost frame.
const KIND_END: u64 = 2;
/// Rule kind: not describable here; the walk falls back to libgcc.
const KIND_FALLBACK: u64 = 3;

/// A rule packed into one word: bits 0-1 kind, bit 2 CFA based on RBP (else RSP), bits 3-31
/// the CFA offset, bits 32-47 RBP's save offset from the CFA (0: unchanged), bits 48-63 a tag
/// of the address (checked on lookup, against a torn slot).
#[derive(Clone, Copy)]
struct Rule(u64);

impl Rule {
    fn new(kind: u64, cfa_rbp: bool, cfa_off: u32, rbp_off: i16, pc: usize) -> Rule {
        Rule(
            kind | (cfa_rbp as u64) << 2
                | ((cfa_off as u64) & 0x1fff_ffff) << 3
                | (rbp_off as u16 as u64) << 32
                | tag(pc) << 48,
        )
    }
    fn kind(self) -> u64 {
        self.0 & 3
    }
    fn cfa_rbp(self) -> bool {
        self.0 & 4 != 0
    }
    fn cfa_off(self) -> usize {
        ((self.0 >> 3) & 0x1fff_ffff) as usize
    }
    fn rbp_off(self) -> isize {
        (self.0 >> 32) as u16 as i16 as isize
    }
    fn tag(self) -> u64 {
        self.0 >> 48
    }
}

/// 16 bits of `pc`, stored in its rule.
fn tag(pc: usize) -> u64 {
    (pc as u64).wrapping_mul(0xff51_afd7_ed55_8ccd) >> 48
}

/// The cache slot for `pc`.
fn slot(pc: usize) -> usize {
    ((pc as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 51) as usize % CACHE_SLOTS
}

/// One cache slot: the lookup address and its [`Rule`] (both 0 when empty). Aligned so that a
/// pair of slots shares a cache line.
#[repr(C, align(16))]
struct Slot {
    pc: AtomicU64,
    rule: AtomicU64,
}

/// The rule cache, mapped on first use (null until then).
static CACHE: AtomicPtr<Slot> = AtomicPtr::new(core::ptr::null_mut());

/// The cache, mapping it if needed; `None` if the mapping failed.
fn cache() -> Option<&'static [Slot]> {
    let mut p = CACHE.load(Ordering::Acquire);
    if p.is_null() {
        let fresh = os::map(CACHE_SLOTS * core::mem::size_of::<Slot>()).cast::<Slot>();
        if fresh.is_null() {
            return None;
        }
        p = match CACHE.compare_exchange(
            core::ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => fresh,
            Err(won) => {
                // SAFETY: `fresh` is our own mapping of that size, never published.
                unsafe { os::unmap(fresh.cast(), CACHE_SLOTS * core::mem::size_of::<Slot>()) };
                won
            }
        };
    }
    // SAFETY: `p` is a live mapping of CACHE_SLOTS zeroed slots, never unmapped; all-zero bytes
    // are valid atomics, and slots are only touched atomically.
    Some(unsafe { core::slice::from_raw_parts(p, CACHE_SLOTS) })
}

/// The cached rule for `pc`, if any: in either slot of its pair (two-way, one cache line).
#[inline]
fn cached(cache: &[Slot], pc: usize) -> Option<Rule> {
    let i = slot(pc) & !1;
    cache.get(i..i + 2)?.iter().find_map(|s| {
        if s.pc.load(Ordering::Acquire) != pc as u64 {
            return None;
        }
        let r = Rule(s.rule.load(Ordering::Acquire));
        (r.kind() != 0 && r.tag() == tag(pc)).then_some(r)
    })
}

/// Stores `rule` for `pc`: in a free slot of its pair, else over one of the two (picked by a
/// bit of the address's tag).
fn store(cache: &[Slot], pc: usize, rule: Rule) {
    let i = slot(pc) & !1;
    let Some(pair) = cache.get(i..i + 2) else {
        return;
    };
    let s = pair
        .iter()
        .find(|s| s.pc.load(Ordering::Relaxed) == 0)
        .unwrap_or(&pair[(tag(pc) & 1) as usize]);
    s.pc.store(0, Ordering::Relaxed);
    s.rule.store(rule.0, Ordering::Release);
    s.pc.store(pc as u64, Ordering::Release);
}

/// Fixed-size storage for gimli's evaluation context (no heap).
struct FixedStorage;

impl<T: gimli::ReaderOffset> UnwindContextStorage<T> for FixedStorage {
    type Rules = [(Register, RegisterRule<T>); MAX_RULES];
    type Stack = [UnwindTableRow<T, Self>; MAX_STATE_DEPTH];
}

/// gimli's context, a few KiB: kept in a mapping of its own rather than on the sampled thread's
/// stack, and used by one thread at a time.
type Context = UnwindContext<usize, FixedStorage>;

/// The address of the mapped [`Context`] (0 until the first miss), under the lock that
/// serialises misses.
static CONTEXT: Lock<usize> = Lock::new(0);

/// Whether [`atfork_prepare`] and [`atfork_release`] are registered.
static ATFORK: AtomicBool = AtomicBool::new(false);

/// Before `fork()`: takes [`CONTEXT`], so that the child never inherits it held by a thread
/// that does not exist there (its misses would all fall back to libgcc).
unsafe extern "C" fn atfork_prepare() {
    CONTEXT.force_lock();
}

/// After `fork()`, in parent and child: releases [`CONTEXT`].
unsafe extern "C" fn atfork_release() {
    // SAFETY: taken by `atfork_prepare` in this same fork, with its guard forgotten.
    unsafe { CONTEXT.force_unlock() };
}

/// `dlpi_adds` and `dlpi_subs` when the cache was last known to be current: a change means an
/// object was loaded or unloaded, and the cache is cleared.
static LOADS: AtomicU64 = AtomicU64::new(0);

/// What the `dl_iterate_phdr` callback is asked and answers.
struct Find<'a> {
    pc: usize,
    ctx: &'a mut Context,
    rule: Option<Rule>,
    loads: u64,
}

/// Works out the rule for `pc` (a return address minus one, or the walker's own address) from
/// the unwind information of the object holding it: `None` when another thread is doing the
/// same (the caller falls back rather than wait inside `malloc`).
#[cold]
#[inline(never)]
fn describe(pc: usize) -> Option<Rule> {
    crate::fork::register(
        &ATFORK,
        crate::fork::Slot::Unwind,
        atfork_prepare,
        atfork_release,
    );
    let mut guard = CONTEXT.try_lock()?;
    if *guard == 0 {
        let p = os::map(core::mem::size_of::<Context>()).cast::<Context>();
        if p.is_null() {
            return None;
        }
        // SAFETY: `p` is a fresh, writable, suitably aligned (page) mapping of a `Context`.
        unsafe { p.write(Context::new_in()) };
        *guard = p as usize;
    }
    // SAFETY: `*guard` is the mapped, initialised `Context`, reached only under this lock.
    let ctx = unsafe { &mut *(*guard as *mut Context) };
    let mut find = Find {
        pc,
        ctx,
        rule: None,
        loads: 0,
    };
    // SAFETY: `phdr_callback` matches the callback type and only touches `find`, which
    // outlives the call. dl_iterate_phdr holds the loader's lock meanwhile, so the objects it
    // describes stay mapped while the callback reads them.
    unsafe { libc::dl_iterate_phdr(Some(phdr_callback), (&raw mut find).cast()) };
    if find.loads != LOADS.load(Ordering::Relaxed) {
        if let Some(c) = cache() {
            for s in c {
                s.pc.store(0, Ordering::Relaxed);
            }
        }
        LOADS.store(find.loads, Ordering::Relaxed);
    }
    // An address in no object (JIT code, garbage): libgcc may still know it (`__register_frame`).
    Some(
        find.rule
            .unwrap_or(Rule::new(KIND_FALLBACK, false, 0, 0, pc)),
    )
}

/// `dl_iterate_phdr` callback: for the object holding `Find::pc`, sets `Find::rule`.
unsafe extern "C" fn phdr_callback(
    info: *mut libc::dl_phdr_info,
    size: libc::size_t,
    data: *mut c_void,
) -> c_int {
    // SAFETY: `data` is the `Find` that `describe` passed, used by nothing else meanwhile.
    let find = unsafe { &mut *data.cast::<Find<'_>>() };
    // SAFETY: the loader hands a valid `dl_phdr_info` of `size` bytes for this call.
    let info = unsafe { &*info };
    if size >= core::mem::size_of::<libc::dl_phdr_info>() {
        find.loads = info.dlpi_adds.wrapping_mul(0x1_0000_0001) ^ info.dlpi_subs;
    }
    let phdrs: &[libc::Elf64_Phdr] = if info.dlpi_phdr.is_null() {
        &[]
    } else {
        // SAFETY: the loader's program headers for this object: `dlpi_phnum` entries.
        unsafe { core::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) }
    };
    let base = info.dlpi_addr as usize;
    let segment = |addr: usize| {
        phdrs.iter().find_map(|p| {
            let start = base.wrapping_add(p.p_vaddr as usize);
            let end = start.wrapping_add(p.p_memsz as usize);
            (p.p_type == libc::PT_LOAD && start <= addr && addr < end).then_some((start, end))
        })
    };
    if segment(find.pc).is_none() {
        return 0;
    }
    let mut rule = Rule::new(KIND_FALLBACK, false, 0, 0, find.pc);
    let hdr = phdrs.iter().find(|p| p.p_type == libc::PT_GNU_EH_FRAME);
    if let Some(hdr) = hdr {
        let start = base.wrapping_add(hdr.p_vaddr as usize);
        let len = hdr.p_memsz as usize;
        if segment(start).is_some_and(|(_, end)| len <= end - start) {
            // SAFETY: `.eh_frame_hdr` lies inside a loaded segment of this object (checked),
            // mapped while the loader's lock is held.
            let bytes = unsafe { core::slice::from_raw_parts(start as *const u8, len) };
            if let Some(r) = evaluate(find.pc, bytes, start, &segment, find.ctx) {
                rule = r;
            }
        }
    }
    find.rule = Some(rule);
    1
}

/// The rule for `pc` from the object's `.eh_frame_hdr` (`hdr`, at address `hdr_addr`); `None`
/// when the information is missing or malformed (and the walk falls back).
fn evaluate(
    pc: usize,
    hdr: &[u8],
    hdr_addr: usize,
    segment: &dyn Fn(usize) -> Option<(usize, usize)>,
    ctx: &mut Context,
) -> Option<Rule> {
    let bases = BaseAddresses::default().set_eh_frame_hdr(hdr_addr as u64);
    let parsed = EhFrameHdr::new(hdr, NativeEndian).parse(&bases, 8).ok()?;
    let eh_frame_addr = parsed.eh_frame_ptr().direct().ok()? as usize;
    // The section's length is not recorded anywhere loaded; its segment's end bounds it.
    let (_, end) = segment(eh_frame_addr)?;
    // SAFETY: from `.eh_frame`'s start to the end of the loaded segment holding it, mapped while
    // the loader's lock is held.
    let section =
        unsafe { core::slice::from_raw_parts(eh_frame_addr as *const u8, end - eh_frame_addr) };
    let eh_frame = EhFrame::new(section, NativeEndian);
    let bases = bases.set_eh_frame(eh_frame_addr as u64);
    let table = parsed.table()?;
    let fde = table
        .fde_for_address(&eh_frame, &bases, pc as u64, EhFrame::cie_from_offset)
        .ok()?;
    if fde.cie().is_signal_trampoline() {
        return None;
    }
    let row = fde
        .unwind_info_for_address(&eh_frame, &bases, ctx, pc as u64)
        .ok()?;
    match row.register(X86_64::RA) {
        RegisterRule::Undefined => return Some(Rule::new(KIND_END, false, 0, 0, pc)),
        RegisterRule::Offset(-8) => {}
        _ => return None,
    }
    let (cfa_rbp, cfa_off) = match *row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } if register == X86_64::RSP => {
            (false, offset)
        }
        CfaRule::RegisterAndOffset { register, offset } if register == X86_64::RBP => {
            (true, offset)
        }
        _ => return None,
    };
    // The return address sits at CFA-8, so the CFA is at least 8 above its base.
    let cfa_off = u32::try_from(cfa_off)
        .ok()
        .filter(|&o| (8..1 << 29).contains(&o))?;
    let rbp_off = match row.register(X86_64::RBP) {
        RegisterRule::Undefined | RegisterRule::SameValue => 0,
        RegisterRule::Offset(o) => i16::try_from(o).ok().filter(|&o| o < 0 && o % 8 == 0)?,
        _ => return None,
    };
    Some(Rule::new(KIND_STEP, cfa_rbp, cfa_off, rbp_off, pc))
}

/// Pages of the calling thread's stack known to be readable: `[lo, hi)` (empty at first).
#[repr(C)]
pub(crate) struct StackRange {
    lo: usize,
    hi: usize,
}

thread_block!(
    /// The calling thread's verified stack pages.
    stack_range,
    "allocators_profile_stack_range",
    crate::profile::unwind::StackRange
);

impl StackRange {
    /// Starts a walk at stack pointer `sp`: keeps what is known if `sp` is inside it or a few
    /// readable pages below (a deeper call on the same stack), else starts again from `sp`'s
    /// page (readable: the thread is using it).
    fn start(&mut self, sp: usize, page: usize) {
        if self.lo <= sp && sp < self.hi {
            return;
        }
        let sp_page = sp & !(page - 1);
        if sp < self.lo && self.lo - sp_page <= MAX_VERIFY_PAGES * page {
            let mut lo = self.lo;
            while lo > sp_page + page && os::surely_readable(lo - page, 8) {
                lo -= page;
            }
            if lo == sp_page + page {
                self.lo = sp_page;
                return;
            }
        }
        self.lo = sp_page;
        self.hi = sp_page + page;
    }

    /// The word at `addr` (8-aligned, at or above the walk's starting stack pointer), if it can
    /// be read without faulting; pages above the known ones are asked of the kernel, once.
    fn read(&mut self, addr: usize, page: usize) -> Option<usize> {
        if addr & 7 != 0 || addr < self.lo {
            return None;
        }
        let mut checked = 0;
        while addr >= self.hi {
            if checked == MAX_VERIFY_PAGES || !os::surely_readable(self.hi, 8) {
                return None;
            }
            self.hi += page;
            checked += 1;
        }
        // SAFETY: `addr` is aligned and inside pages found readable (by the kernel, or as the
        // page of the thread's own stack pointer), and the thread's stack stays mapped while
        // the thread runs.
        Some(unsafe { (addr as *const usize).read_volatile() })
    }
}

/// Fills `frames` with the return addresses of the calling thread's stack, innermost first
/// (the first being the return address into this function's caller, as with libgcc's
/// `_Unwind_Backtrace`), leaving out the innermost `skip`; returns how many were written.
/// `None` when some frame needs more than this walker understands (the caller then walks with
/// libgcc); a frame whose stack cannot be read ends the walk early instead.
#[inline(never)]
pub fn walk(frames: &mut [usize], skip: usize) -> Option<usize> {
    let (mut pc, mut sp, mut fp): (usize, usize, usize);
    // SAFETY: reads this function's own instruction pointer, stack pointer and frame register
    // at one point (no instruction between them moves the stack); touches no memory.
    unsafe {
        core::arch::asm!(
            "lea {pc}, [rip]",
            "mov {sp}, rsp",
            "mov {fp}, rbp",
            pc = out(reg) pc,
            sp = out(reg) sp,
            fp = out(reg) fp,
            options(nomem, nostack, preserves_flags),
        );
    }
    let cache = cache()?;
    let page = os::page_size();
    // SAFETY: the calling thread's own block, not otherwise borrowed during the walk: the walk
    // calls nothing that walks, and the profiler's busy mark keeps a signal handler's
    // allocations from being sampled (and walking) meanwhile.
    let range = unsafe { &mut *stack_range::get() };
    range.start(sp, page);
    let mut len = 0;
    // This function's own frame is walked through but not reported.
    let mut skip = skip.saturating_add(1);
    // `pc` is a return address from the second frame on: its call may be the last instruction
    // of a function, so the rule is that of `pc - 1` (as libgcc does). In the first frame
    // `pc - 1` is still inside the `lea` above, with the same rule as `pc`.
    loop {
        if skip > 0 {
            skip -= 1;
        } else {
            let Some(f) = frames.get_mut(len) else {
                return Some(len);
            };
            *f = pc;
            len += 1;
        }
        let at = pc - 1;
        let rule = match cached(cache, at) {
            Some(r) => r,
            None => {
                let r = describe(at)?;
                store(cache, at, r);
                r
            }
        };
        match rule.kind() {
            KIND_STEP => {}
            KIND_END => return Some(len),
            _ => return None,
        }
        let base = if rule.cfa_rbp() { fp } else { sp };
        let cfa = base.wrapping_add(rule.cfa_off());
        // Caller frames lie above: a CFA at or below the stack pointer is a bad rule.
        if cfa <= sp {
            return Some(len);
        }
        let Some(ra) = range.read(cfa - 8, page) else {
            return Some(len);
        };
        if rule.rbp_off() != 0 {
            let Some(v) = range.read(cfa.wrapping_add_signed(rule.rbp_off()), page) else {
                return Some(len);
            };
            fp = v;
        }
        if ra <= 1 {
            return Some(len);
        }
        pc = ra;
        sp = cfa;
    }
}

#[cfg(test)]
mod tests {
    use super::super::stack::{capture, capture_libgcc, MAX_FRAMES};
    use super::walk;
    use core::hint::black_box;

    /// Both walks from the same function; their first frames differ (two call sites), the rest
    /// must not.
    #[inline(never)]
    fn both() -> (usize, [usize; MAX_FRAMES], usize, [usize; MAX_FRAMES]) {
        let mut a = [0; MAX_FRAMES];
        let mut b = [0; MAX_FRAMES];
        // A miss while another test thread describes an address falls back (by design); the
        // rules found meanwhile are kept, so a retry gets further.
        let n = (0..1000)
            .find_map(|_| {
                let r = walk(&mut a, 0);
                if r.is_none() {
                    std::thread::yield_now();
                }
                r
            })
            .expect("fast walk fell back");
        let m = capture_libgcc(&mut b, 0);
        (n, a, m, b)
    }

    #[inline(never)]
    fn nested(depth: usize) -> (usize, [usize; MAX_FRAMES], usize, [usize; MAX_FRAMES]) {
        if depth == 0 {
            return black_box(both());
        }
        black_box(nested(black_box(depth - 1)))
    }

    fn assert_same(depth: usize) {
        let (n, a, m, b) = nested(depth);
        assert!(n > depth, "only {n} frames");
        assert_eq!(n, m, "fast {:x?}\nlibgcc {:x?}", &a[..n], &b[..m]);
        assert_eq!(a[1..n], b[1..m]);
    }

    #[test]
    fn same_frames_as_libgcc() {
        assert_same(3);
        assert_same(10);
    }

    #[test]
    fn same_frames_as_libgcc_in_a_thread() {
        std::thread::spawn(|| assert_same(5)).join().unwrap();
    }

    #[test]
    fn stops_when_the_array_is_full() {
        let (n, _, m, _) = nested(100);
        assert_eq!((n, m), (MAX_FRAMES, MAX_FRAMES));
        let mut small = [0; 3];
        assert_eq!(walk(&mut small, 0), Some(3));
        assert_eq!(walk(&mut small, 1000), Some(0));
    }

    #[test]
    fn unreadable_stack_ends_the_walk() {
        let page = crate::os::page_size();
        let p = crate::os::map(page) as usize;
        assert_ne!(p, 0);
        // SAFETY: our own mapping, no longer used.
        unsafe { crate::os::unmap(p as *mut u8, page) };
        let mut r = super::StackRange { lo: p, hi: p };
        assert_eq!(r.read(p, page), None);
        assert_eq!(r.read(p - 8, page), None);
        let mut r = super::StackRange {
            lo: p + page,
            hi: p + 2 * page,
        };
        assert_eq!(r.read(p, page), None);
        assert_eq!(r.read(p + page + 3, page), None);
    }

    #[test]
    fn a_deeper_walk_keeps_the_known_pages() {
        let page = crate::os::page_size();
        let buf = [0u8; 1];
        let here = (&raw const buf) as usize & !(page - 1);
        let mut r = super::StackRange {
            lo: here,
            hi: here + page,
        };
        // Below the known page, on this thread's stack (mapped: grown by the kernel as needed
        // for the main thread, whole for others; the test runs in a spawned thread).
        std::thread::spawn(move || {
            let b = [0u8; 1];
            let sp = (&raw const b) as usize;
            let mut r2 = super::StackRange {
                lo: sp & !(page - 1),
                hi: (sp & !(page - 1)) + page,
            };
            r2.start(sp - 2 * page, page);
            assert_eq!(r2.lo, (sp & !(page - 1)) - 2 * page);
            assert_eq!(r2.hi, (sp & !(page - 1)) + page);
        })
        .join()
        .unwrap();
        // Far away: starts again.
        r.start(here - 1000 * page, page);
        assert_eq!((r.lo, r.hi), (here - 1000 * page, here - 999 * page));
    }

    /// Frames seen by the signal handler below: fast (via `capture`) and libgcc.
    static SEEN: [core::sync::atomic::AtomicUsize; 2] = [
        core::sync::atomic::AtomicUsize::new(0),
        core::sync::atomic::AtomicUsize::new(0),
    ];

    extern "C" fn on_signal(_: libc::c_int) {
        let mut a = [0; MAX_FRAMES];
        let mut b = [0; MAX_FRAMES];
        let n = capture(&mut a, 0);
        let m = capture_libgcc(&mut b, 0);
        SEEN[0].store(n, core::sync::atomic::Ordering::Relaxed);
        SEEN[1].store(m, core::sync::atomic::Ordering::Relaxed);
    }

    #[test]
    fn walks_through_a_signal_frame() {
        // SAFETY: installs a handler for SIGUSR1 that only walks the stack and stores counts,
        // then raises it on this thread.
        unsafe {
            let mut sa: libc::sigaction = core::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            assert_eq!(
                libc::sigaction(libc::SIGUSR1, &sa, core::ptr::null_mut()),
                0
            );
            libc::raise(libc::SIGUSR1);
        }
        let n = SEEN[0].load(core::sync::atomic::Ordering::Relaxed);
        let m = SEEN[1].load(core::sync::atomic::Ordering::Relaxed);
        // Through the signal trampoline into this test (libgcc's walk has no `capture` frame).
        assert!(m > 3 && n == m + 1, "fast {n}, libgcc {m}");
    }

    /// Frames counted by `from_jit` (called from code without unwind information).
    static JIT_FRAMES: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

    extern "C" fn from_jit() {
        let mut a = [0; MAX_FRAMES];
        let n = capture(&mut a, 0);
        JIT_FRAMES.store(n, core::sync::atomic::Ordering::Relaxed);
    }

    #[test]
    fn code_without_unwind_info_ends_the_walk() {
        // sub rsp, 8; call rdi; add rsp, 8; ret
        let code = [
            0x48u8, 0x83, 0xec, 0x08, 0xff, 0xd7, 0x48, 0x83, 0xc4, 0x08, 0xc3,
        ];
        let page = crate::os::page_size();
        let p = crate::os::map(page);
        assert!(!p.is_null());
        // SAFETY: `p` is our own fresh mapping of a page; the code is copied in and the page
        // made executable before it is called as a C function taking one function pointer.
        unsafe {
            core::ptr::copy_nonoverlapping(code.as_ptr(), p, code.len());
            assert_eq!(
                libc::mprotect(p.cast(), page, libc::PROT_READ | libc::PROT_EXEC),
                0
            );
            let f: extern "C" fn(extern "C" fn()) = core::mem::transmute(p);
            f(from_jit);
            crate::os::unmap(p, page);
        }
        // The handler's frame and the one in the generated code, at least; never a crash.
        assert!(JIT_FRAMES.load(core::sync::atomic::Ordering::Relaxed) >= 2);
    }
}
