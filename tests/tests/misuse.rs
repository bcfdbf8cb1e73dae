//! Misuse and bad input, per allocator: what each one detects, and what it
//! does when it does not.
//!
//! Every case runs twice on a fresh heap behind [`Locked`]: once through the
//! raw API ([`RawHeap::dealloc`] and friends, which report a detected misuse
//! as a [`HeapError`]) and once through the `GlobalAlloc` adapter, which must
//! never unwind (checked with `catch_unwind`). After the misuse the heap is
//! checked against what its crate documents:
//!
//! - [`Expect::Caught`]: the misuse is reported and the heap *fails closed*:
//!   every later allocation returns `None`, every free `FailedClosed`, and
//!   the live blocks are left untouched;
//! - [`Expect::Ignored`]: not detected, and the call changes nothing (the
//!   bump arena);
//! - [`Expect::Freed`]: not detected, the block is freed as if the layout
//!   were right, and the heap stays consistent (`verify()` passes).
//!
//! Alignments that are not powers of two cannot reach the raw API: `Layout`
//! refuses them. They are checked where a raw alignment is taken: ems's
//! `EmsPool::alloc_aligned`, `GuestHeap::memalign` and the C ABI's
//! `ems_alloc_aligned`. Sizes past `isize::MAX` cannot be a `Layout` either;
//! they are checked through the C ABI, which takes a raw size.
#![cfg(not(target_arch = "wasm32"))]

use std::alloc::{GlobalAlloc, Layout};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;

use linmem_memory::{HeapError, Locked, RawHeap, SimMemory};

/// An allocator under test.
trait Subject: RawHeap + Sized {
    /// A heap over `mem`.
    fn make(mem: SimMemory) -> Self;
    /// Whether the heap has failed closed.
    fn failed_closed(&self) -> bool;
    /// The invariant `verify()` reports on a failed-closed heap, if it
    /// reports the state at all.
    const CLOSED_INVARIANT: Option<u8>;
}

impl Subject for linmem_bump::Arena<SimMemory> {
    fn make(mem: SimMemory) -> Self {
        Self::new(mem)
    }
    fn failed_closed(&self) -> bool {
        false
    }
    const CLOSED_INVARIANT: Option<u8> = None;
}

impl Subject for linmem_dlmalloc::Heap<SimMemory> {
    fn make(mem: SimMemory) -> Self {
        Self::new(mem)
    }
    fn failed_closed(&self) -> bool {
        self.is_failed()
    }
    const CLOSED_INVARIANT: Option<u8> = Some(11);
}

impl Subject for linmem_emmalloc::Heap<SimMemory> {
    fn make(mem: SimMemory) -> Self {
        Self::new(mem)
    }
    fn failed_closed(&self) -> bool {
        self.is_failed_closed()
    }
    // The flag is I9; `verify()` checks the structure (I1..I8) only.
    const CLOSED_INVARIANT: Option<u8> = None;
}

impl Subject for linmem_ems::Heap<SimMemory> {
    fn make(mem: SimMemory) -> Self {
        Self::new(mem)
    }
    fn failed_closed(&self) -> bool {
        self.is_corrupted()
    }
    const CLOSED_INVARIANT: Option<u8> = Some(11);
}

/// The kind of a detected misuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    DoubleFree,
    Foreign,
    Layout,
    Corrupted,
}

impl Kind {
    fn of(e: HeapError) -> Option<Kind> {
        match e {
            HeapError::DoubleFree { .. } => Some(Kind::DoubleFree),
            HeapError::ForeignPointer { .. } => Some(Kind::Foreign),
            HeapError::LayoutMismatch { .. } => Some(Kind::Layout),
            HeapError::Corrupted { .. } => Some(Kind::Corrupted),
            _ => None,
        }
    }
}

/// What an allocator documents for a misuse.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Reported as one of these kinds; the heap fails closed.
    Caught(&'static [Kind]),
    /// Not detected; the call has no effect.
    Ignored,
    /// Not detected; the block is freed as if the call were right.
    Freed,
}

use Expect::{Caught, Freed, Ignored};

/// Which front door the misuse goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    Raw,
    Global,
}

const VIAS: [Via; 2] = [Via::Raw, Via::Global];

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

/// A live block and the tag its contents were written with.
#[derive(Clone, Copy, Debug)]
struct Block {
    p: NonNull<u8>,
    layout: Layout,
    tag: u8,
}

impl Block {
    fn byte(&self, i: usize) -> u8 {
        self.tag ^ (i as u8).wrapping_mul(31)
    }

    fn fill(&self) {
        for i in 0..self.layout.size() {
            // SAFETY: the block is live for `layout.size()` bytes.
            unsafe { self.p.as_ptr().add(i).write(self.byte(i)) };
        }
    }

    fn intact(&self) -> bool {
        // SAFETY: the block is live for `layout.size()` bytes.
        (0..self.layout.size()).all(|i| unsafe { self.p.as_ptr().add(i).read() } == self.byte(i))
    }
}

fn fresh<H: Subject>() -> Locked<H> {
    Locked::new(H::make(SimMemory::new(0, 64)))
}

fn alloc_block<H: Subject>(lk: &Locked<H>, l: Layout, tag: u8) -> Block {
    let p = lk.lock().alloc(l).expect("allocation of a small block");
    let b = Block { p, layout: l, tag };
    b.fill();
    b
}

/// Three neighbouring blocks of `l`.
fn three<H: Subject>(lk: &Locked<H>, l: Layout) -> [Block; 3] {
    [1, 2, 3].map(|t| alloc_block(lk, l, t))
}

fn free_ok<H: Subject>(lk: &Locked<H>, b: Block) {
    // SAFETY: `b` is a live block of this heap for `b.layout`.
    unsafe { lk.lock().dealloc(b.p, b.layout) }.expect("a correct free");
}

/// Runs `f` and asserts it did not unwind.
fn no_unwind<T>(what: &str, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => panic!("{what}: a panic escaped GlobalAlloc"),
    }
}

/// Frees `p` with `l` through `via`: the raw result, or `None` through
/// `GlobalAlloc` (which reports nothing, but must not unwind).
fn misuse_free<H: Subject>(
    lk: &Locked<H>,
    via: Via,
    p: NonNull<u8>,
    l: Layout,
) -> Option<Result<(), HeapError>> {
    match via {
        // SAFETY: deliberately not a live block for `l`: the misuse under
        // test, which the allocator documents how it handles.
        Via::Raw => Some(unsafe { lk.lock().dealloc(p, l) }),
        Via::Global => {
            // SAFETY: as above.
            no_unwind("dealloc", || unsafe {
                GlobalAlloc::dealloc(lk, p.as_ptr(), l)
            });
            None
        }
    }
}

/// The stats just before a misuse, when `expect` needs them. (Not taken
/// for a misuse that is caught: a walk of a heap whose memory was just
/// overwritten is not what those cases test.)
fn stats_before<H: Subject>(lk: &Locked<H>, expect: Expect) -> linmem_memory::HeapStats {
    match expect {
        Caught(_) => linmem_memory::HeapStats::default(),
        Ignored | Freed => lk.lock().stats(),
    }
}

/// Checks the heap after a misuse against `expect`.
///
/// `result` is the raw call's result (`None` through `GlobalAlloc`),
/// `before` the stats just before the misuse, `live` blocks that must be
/// untouched, and `target` the block the misuse named when it was live.
fn judge<H: Subject>(
    lk: &Locked<H>,
    via: Via,
    expect: Expect,
    result: Option<Result<(), HeapError>>,
    before: linmem_memory::HeapStats,
    live: &[Block],
) {
    let ctx = format!("{} via {via:?}", std::any::type_name::<H>());
    for b in live {
        assert!(b.intact(), "{ctx}: a live block was damaged");
    }
    match expect {
        Caught(kinds) => {
            if let Some(r) = result {
                let e = r.expect_err("the misuse is reported");
                let kind = Kind::of(e).expect("a misuse, not FailedClosed");
                assert!(kinds.contains(&kind), "{ctx}: reported as {e}");
            }
            assert_closed(lk, &ctx, live);
        }
        Ignored => {
            if let Some(r) = result {
                assert_eq!(r, Ok(()), "{ctx}");
            }
            assert_eq!(lk.lock().stats(), before, "{ctx}: the call had an effect");
            assert_works(lk, &ctx, live);
        }
        Freed => {
            if let Some(r) = result {
                assert_eq!(r, Ok(()), "{ctx}");
            }
            let after = lk.lock().stats();
            assert_eq!(after.live_blocks + 1, before.live_blocks, "{ctx}");
            assert_works(lk, &ctx, live);
        }
    }
}

/// The heap refuses all work and leaves the live blocks alone.
fn assert_closed<H: Subject>(lk: &Locked<H>, ctx: &str, live: &[Block]) {
    assert!(lk.lock().failed_closed(), "{ctx}: not failed closed");
    assert_eq!(lk.lock().alloc(layout(16, 8)), None, "{ctx}: alloc");
    assert_eq!(lk.lock().alloc_zeroed(layout(16, 8)), None, "{ctx}");
    // SAFETY: a valid layout; the result is checked to be null.
    let p = no_unwind("alloc", || unsafe {
        GlobalAlloc::alloc(lk, layout(64, 16))
    });
    assert!(
        p.is_null(),
        "{ctx}: GlobalAlloc::alloc served a closed heap"
    );
    if let Some(b) = live.first() {
        // SAFETY: `b` is live; the heap refuses without touching it.
        let r = unsafe { lk.lock().realloc(b.p, b.layout, 1000) };
        assert_eq!(r, None, "{ctx}: realloc");
        // SAFETY: as above.
        let r = unsafe { lk.lock().dealloc(b.p, b.layout) };
        assert_eq!(r, Err(HeapError::FailedClosed), "{ctx}: free");
    }
    for b in live {
        assert!(b.intact(), "{ctx}: a live block was damaged when closed");
    }
    if let Some(n) = H::CLOSED_INVARIANT {
        let v = lk
            .lock()
            .verify()
            .expect_err("verify reports the closed heap");
        assert_eq!(v.invariant, n, "{ctx}: {v}");
    }
}

/// The heap passes `verify()` and still serves: allocation, free, realloc.
fn assert_works<H: Subject>(lk: &Locked<H>, ctx: &str, live: &[Block]) {
    if let Err(v) = lk.lock().verify() {
        panic!("{ctx}: verify after the misuse: {v}");
    }
    assert!(!lk.lock().failed_closed(), "{ctx}");
    let b = alloc_block(lk, layout(200, 16), 0x5a);
    // SAFETY: `b` is live for its layout; 600 fits isize.
    let p = unsafe { lk.lock().realloc(b.p, b.layout, 600) }.expect("realloc");
    let b2 = Block {
        p,
        layout: layout(600, 16),
        tag: 0,
    };
    // SAFETY: the first 200 bytes were kept by realloc.
    let kept = (0..200).all(|i| unsafe { p.as_ptr().add(i).read() } == b.byte(i));
    assert!(kept, "{ctx}: realloc lost contents");
    free_ok(lk, b2);
    for b in live {
        assert!(b.intact(), "{ctx}: a live block was damaged");
    }
    if let Err(v) = lk.lock().verify() {
        panic!("{ctx}: verify after serving again: {v}");
    }
}

// ----- the cases -------------------------------------------------------

/// Frees the middle of three blocks twice (its neighbours stay live).
fn double_free<H: Subject>(expect: Expect) {
    for via in VIAS {
        let lk = fresh::<H>();
        let [a, b, c] = three(&lk, layout(48, 8));
        free_ok(&lk, b);
        let before = stats_before(&lk, expect);
        let r = misuse_free(&lk, via, b.p, b.layout);
        judge(&lk, via, expect, r, before, &[a, c]);
    }
}

/// Frees a block twice after it merged with a free block before it.
fn double_free_after_merge<H: Subject>(expect: Expect) {
    for via in VIAS {
        let lk = fresh::<H>();
        let [a, b, c] = three(&lk, layout(48, 8));
        free_ok(&lk, a);
        free_ok(&lk, b);
        let before = stats_before(&lk, expect);
        let r = misuse_free(&lk, via, b.p, b.layout);
        judge(&lk, via, expect, r, before, &[c]);
    }
}

/// Frees the last block twice (the first free gives it back to the free
/// tail / top / bump pointer).
fn double_free_of_last<H: Subject>(expect: Expect) {
    for via in VIAS {
        let lk = fresh::<H>();
        let a = alloc_block(&lk, layout(48, 8), 1);
        let b = alloc_block(&lk, layout(48, 8), 2);
        free_ok(&lk, b);
        let before = stats_before(&lk, expect);
        let r = misuse_free(&lk, via, b.p, b.layout);
        judge(&lk, via, expect, r, before, &[a]);
    }
}

/// Frees a block, lets the allocator hand the same memory out again, then
/// frees the stale pointer: no check can tell it from a free of the new
/// owner's block, which it frees.
fn double_free_after_reuse<H: Subject>() {
    for via in VIAS {
        let lk = fresh::<H>();
        let [a, b, c] = three(&lk, layout(48, 8));
        free_ok(&lk, b);
        let b2 = alloc_block(&lk, layout(48, 8), 9);
        assert_eq!(b2.p, b.p, "premise: the freed block is handed out again");
        let before = stats_before(&lk, Freed);
        let r = misuse_free(&lk, via, b.p, b.layout);
        judge(&lk, via, Freed, r, before, &[a, c]);
    }
}

/// Frees a pointer inside the heap's memory that was never handed out: 4
/// KiB past the last block, in free space.
fn never_allocated_inside<H: Subject>(expect: Expect) {
    for via in VIAS {
        let lk = fresh::<H>();
        let blocks = three(&lk, layout(48, 8));
        let p = NonNull::new(blocks[2].p.as_ptr().wrapping_add(4096)).unwrap();
        let before = stats_before(&lk, expect);
        let r = misuse_free(&lk, via, p, layout(48, 8));
        judge(&lk, via, expect, r, before, &blocks);
    }
}

/// Frees a pointer to memory that is not the heap's at all.
fn never_allocated_outside<H: Subject>(expect: Expect) {
    for via in VIAS {
        let lk = fresh::<H>();
        let blocks = three(&lk, layout(48, 8));
        let mut elsewhere = Box::new([0u64; 16]);
        let p = NonNull::new(elsewhere.as_mut_ptr().wrapping_add(8).cast::<u8>()).unwrap();
        let before = stats_before(&lk, expect);
        let r = misuse_free(&lk, via, p, layout(48, 8));
        judge(&lk, via, expect, r, before, &blocks);
        assert!(elsewhere.iter().all(|&w| w == 0), "foreign memory written");
    }
}

/// Frees a pointer 64 bytes into a live 256-byte block whose bytes are all
/// `fill` (0: the word before the pointer reads as a zero header; 0xA5: as
/// an implausible one).
fn interior_pointer<H: Subject>(fill: u8, expect: Expect) {
    for via in VIAS {
        let lk = fresh::<H>();
        let l = layout(256, 8);
        let [a, b, c] = three(&lk, l);
        // SAFETY: `b` is live for 256 bytes.
        unsafe { b.p.as_ptr().write_bytes(fill, 256) };
        let p = NonNull::new(b.p.as_ptr().wrapping_add(64)).unwrap();
        let before = stats_before(&lk, expect);
        let r = misuse_free(&lk, via, p, layout(48, 8));
        judge(&lk, via, expect, r, before, &[a, c]);
        // SAFETY: `b` is live for 256 bytes.
        let kept = (0..256).all(|i| unsafe { b.p.as_ptr().add(i).read() } == fill);
        assert!(kept, "the block pointed into was written");
    }
}

/// Frees a block with a layout of another size class.
fn wrong_size<H: Subject>(size: usize, freed_as: usize, expect: Expect) {
    for via in VIAS {
        let lk = fresh::<H>();
        let [a, b, c] = three(&lk, layout(size, 8));
        let before = stats_before(&lk, expect);
        let r = misuse_free(&lk, via, b.p, layout(freed_as, 8));
        judge(&lk, via, expect, r, before, &[a, c]);
    }
}

/// Frees an 8-aligned block that is not 64-aligned with alignment 64.
fn wrong_align_stricter<H: Subject>(expect: Expect) {
    for via in VIAS {
        let lk = fresh::<H>();
        let l = layout(40, 8);
        let blocks: Vec<Block> = (1..=6).map(|t| alloc_block(&lk, l, t)).collect();
        let i = (0..5)
            .find(|&i| !blocks[i].p.as_ptr().addr().is_multiple_of(64))
            .expect("one of five 40-byte blocks is not 64-aligned");
        let before = stats_before(&lk, expect);
        let r = misuse_free(&lk, via, blocks[i].p, layout(40, 64));
        let others: Vec<Block> = blocks
            .iter()
            .copied()
            .filter(|b| b.p != blocks[i].p)
            .collect();
        judge(&lk, via, expect, r, before, &others);
    }
}

/// Frees a 64-aligned block with alignment 8 (which the pointer has).
fn wrong_align_looser<H: Subject>(expect: Expect) {
    for via in VIAS {
        let lk = fresh::<H>();
        let [a, b, c] = three(&lk, layout(40, 64));
        let before = stats_before(&lk, expect);
        let r = misuse_free(&lk, via, b.p, layout(40, 8));
        judge(&lk, via, expect, r, before, &[a, c]);
    }
}

/// Reallocates a block that was already freed (a use after free).
/// `caught`: the allocator refuses (`None`) and fails closed; otherwise it
/// serves a new block.
fn realloc_after_free<H: Subject>(caught: bool) {
    for via in VIAS {
        let lk = fresh::<H>();
        let [a, b, c] = three(&lk, layout(48, 8));
        free_ok(&lk, b);
        let p = match via {
            // SAFETY: deliberately a freed block: the misuse under test.
            Via::Raw => unsafe { lk.lock().realloc(b.p, b.layout, 96) },
            Via::Global => NonNull::new(no_unwind("realloc", || {
                // SAFETY: as above.
                unsafe { GlobalAlloc::realloc(&lk, b.p.as_ptr(), b.layout, 96) }
            })),
        };
        let ctx = format!("{} via {via:?}", std::any::type_name::<H>());
        if caught {
            assert_eq!(p, None, "{ctx}: realloc served a freed block");
            assert_closed(&lk, &ctx, &[a, c]);
        } else {
            let p = p.expect("realloc served");
            free_ok(
                &lk,
                Block {
                    p,
                    layout: layout(96, 8),
                    tag: 0,
                },
            );
            assert_works(&lk, &ctx, &[a, c]);
        }
    }
}

/// Writes one zero byte just past the usable end of the first of three
/// blocks, then frees `first` (that block, else its right neighbour).
/// `damaged`: whether the neighbour's contents take the byte (no metadata
/// in between).
fn write_past_end<H: Subject>(free_first: bool, damaged: bool, expect: Expect) {
    write_past_end_of::<H>(48, free_first, damaged, expect);
}

/// [`write_past_end`] with blocks of `size` bytes.
fn write_past_end_of<H: Subject>(size: usize, free_first: bool, damaged: bool, expect: Expect) {
    for via in VIAS {
        let lk = fresh::<H>();
        let [a, b, c] = three(&lk, layout(size, 8));
        // SAFETY: `a` is live.
        let usable = unsafe { lk.lock().usable_size(a.p, a.layout) };
        // The overflow under test: one byte past what `a` may use, inside
        // the heap's memory.
        // SAFETY: the byte lies in the heap's region (a neighbour's header,
        // footer or data), so the write is in bounds of the memory.
        unsafe { a.p.as_ptr().add(usable).write(0) };
        assert_eq!(b.intact(), !damaged, "where the stray byte landed");
        let (target, keep) = if free_first { (a, b) } else { (b, a) };
        let before = stats_before(&lk, expect);
        let r = misuse_free(&lk, via, target.p, target.layout);
        let mut live = vec![c];
        if !damaged {
            live.push(keep);
        }
        judge(&lk, via, expect, r, before, &live);
    }
}

/// Overwrites the byte just past the usable end of a block (the next
/// header or a footer, in the allocators that have them) and asks for
/// `verify()` and `stats()`: both must come back (on another thread, with a
/// deadline, so a walk that loops forever fails instead of hanging), and
/// `verify()` must report the damage when `damage_visible`.
#[cfg(not(miri))]
fn walks_terminate_after_overflow<H: Subject + Send + 'static>(damage_visible: bool) {
    use std::sync::mpsc;
    use std::time::Duration;
    let mut h = H::make(SimMemory::new(0, 4));
    let l = layout(48, 8);
    let [a, _b, _c] = [0; 3].map(|_| h.alloc(l).unwrap());
    // SAFETY: `a` is live.
    let usable = unsafe { h.usable_size(a, l) };
    // SAFETY: the byte lies in the heap's memory, just past `a` (the misuse).
    unsafe { a.as_ptr().add(usable).write(0) };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let v = h.verify().err();
        let _ = tx.send(("verify", Some(v)));
        let _ = h.stats();
        let _ = tx.send(("stats", None));
    });
    let ctx = std::any::type_name::<H>();
    for want in ["verify", "stats"] {
        let (what, v) = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("{ctx}: {want}() did not return within 10 s"));
        assert_eq!(what, want);
        if let Some(v) = v {
            assert_eq!(v.is_some(), damage_visible, "{ctx}: verify said {v:?}");
        }
    }
}

/// Sizes whose rounding to a block (header, alignment, pages) overflows:
/// every allocation returns `None`, realloc leaves the block alone, nothing
/// unwinds, and the heap keeps working.
fn overflowing_sizes<H: Subject>() {
    let lk = fresh::<H>();
    let keep = alloc_block(&lk, layout(100, 16), 7);
    let ctx = std::any::type_name::<H>();
    for align in [1, 8, 16, 4096, 65536] {
        let top = isize::MAX as usize - (align - 1);
        for k in [0, 1, 7, 8, 15, 16, 63, 64, 4095, 65536] {
            let size = top - k;
            let l = layout(size, align);
            assert_eq!(lk.lock().alloc(l), None, "{ctx}: alloc {size:#x}/{align}");
            assert_eq!(lk.lock().alloc_zeroed(l), None, "{ctx}");
            // SAFETY: a valid layout; the result is checked to be null.
            let p = no_unwind("alloc", || unsafe { GlobalAlloc::alloc(&lk, l) });
            assert!(p.is_null(), "{ctx}: GlobalAlloc::alloc {size:#x}");
            // SAFETY: as above.
            let p = no_unwind("alloc_zeroed", || unsafe {
                GlobalAlloc::alloc_zeroed(&lk, l)
            });
            assert!(p.is_null(), "{ctx}: GlobalAlloc::alloc_zeroed {size:#x}");
            if align == 16 {
                // SAFETY: `keep` is live; `size` rounded to 16 fits isize.
                let r = unsafe { lk.lock().realloc(keep.p, keep.layout, size) };
                assert_eq!(r, None, "{ctx}: realloc to {size:#x}");
                // SAFETY: as above.
                let r = no_unwind("realloc", || unsafe {
                    GlobalAlloc::realloc(&lk, keep.p.as_ptr(), keep.layout, size)
                });
                assert!(r.is_null(), "{ctx}: GlobalAlloc::realloc {size:#x}");
            }
        }
        // Past isize::MAX a Layout cannot even be made.
        for k in [0, 1, 8, 64] {
            assert!(Layout::from_size_align(usize::MAX - k, align).is_err());
            assert!(Layout::from_size_align(top + 1 + k, align).is_err());
        }
    }
    // Sizes around 4 GiB, where 32-bit offsets (ems) would wrap.
    for size in [
        u32::MAX as usize - 8,
        u32::MAX as usize,
        1 << 32,
        (1 << 32) + 8,
    ] {
        for align in [8, 64] {
            assert_eq!(
                lk.lock().alloc(layout(size, align)),
                None,
                "{ctx}: {size:#x}"
            );
        }
        // SAFETY: `keep` is live; `size` fits isize.
        let r = unsafe { lk.lock().realloc(keep.p, keep.layout, size) };
        assert_eq!(r, None, "{ctx}: realloc to {size:#x}");
    }
    assert!(keep.intact(), "{ctx}: a failed realloc damaged the block");
    assert_works(&lk, ctx, &[keep]);
}

// ----- the allocators ---------------------------------------------------

mod bump {
    //! The bump arena detects no misuse (its docs: "Misuse is not
    //! detected"). A free that is not of the most recent block with its
    //! exact size changes nothing, so every misuse is ignored.
    use super::*;
    type H = linmem_bump::Arena<SimMemory>;

    #[test]
    fn double_free_is_ignored() {
        double_free::<H>(Ignored);
    }
    #[test]
    fn double_free_after_merge_is_ignored() {
        double_free_after_merge::<H>(Ignored);
    }
    #[test]
    fn double_free_of_the_last_block_is_ignored() {
        double_free_of_last::<H>(Ignored);
    }
    #[test]
    fn never_allocated_pointer_inside_the_arena_is_ignored() {
        never_allocated_inside::<H>(Ignored);
    }
    #[test]
    fn never_allocated_pointer_outside_the_arena_is_ignored() {
        never_allocated_outside::<H>(Ignored);
    }
    #[test]
    fn interior_pointer_is_ignored() {
        interior_pointer::<H>(0, Ignored);
        interior_pointer::<H>(0xa5, Ignored);
    }
    #[test]
    fn free_with_a_larger_size_is_ignored() {
        wrong_size::<H>(48, 1024, Ignored);
    }
    #[test]
    fn free_with_a_smaller_size_is_ignored() {
        wrong_size::<H>(1024, 16, Ignored);
    }
    #[test]
    fn free_with_a_stricter_alignment_is_ignored() {
        wrong_align_stricter::<H>(Ignored);
    }
    #[test]
    fn free_with_a_looser_alignment_is_ignored() {
        wrong_align_looser::<H>(Ignored);
    }
    #[test]
    fn realloc_after_free_serves_a_copy() {
        realloc_after_free::<H>(false);
    }
    #[test]
    fn write_past_end_lands_in_the_next_block_and_frees_are_ignored() {
        write_past_end::<H>(true, true, Ignored);
        write_past_end::<H>(false, true, Ignored);
    }
    #[test]
    #[cfg(not(miri))]
    fn stats_and_verify_return_after_an_overflow() {
        walks_terminate_after_overflow::<H>(false);
    }
    #[test]
    fn overflowing_sizes_return_none() {
        overflowing_sizes::<H>();
    }

    /// The bytes past the bump pointer are trusted to be zero (I4), so a
    /// write past the end of the most recent block shows up, undetected, in
    /// the next `alloc_zeroed`.
    #[test]
    fn write_past_the_last_block_shows_in_the_next_alloc_zeroed() {
        let mut h = H::new(SimMemory::new(0, 4));
        let l = layout(48, 8);
        let a = h.alloc(l).unwrap();
        // SAFETY: the byte lies in the arena's chunk, past `a` (the misuse).
        unsafe { a.as_ptr().add(48).write(0xee) };
        let z = h.alloc_zeroed(l).unwrap();
        assert_eq!(z.as_ptr().addr(), a.as_ptr().addr() + 48);
        // SAFETY: `z` is live for 48 bytes.
        assert_eq!(unsafe { z.as_ptr().read() }, 0xee, "not zeroed");
        h.verify().unwrap();
    }
}

mod dlmalloc {
    //! linmem-dlmalloc checks every free and realloc in O(1) and fails
    //! closed on a misuse it sees (I11).
    use super::*;
    type H = linmem_dlmalloc::Heap<SimMemory>;

    #[test]
    fn double_free_is_caught() {
        double_free::<H>(Caught(&[Kind::DoubleFree]));
    }
    #[test]
    fn double_free_after_merge_is_caught() {
        double_free_after_merge::<H>(Caught(&[Kind::DoubleFree]));
    }
    #[test]
    fn double_free_after_reuse_frees_the_new_owners_block() {
        double_free_after_reuse::<H>();
    }
    #[test]
    fn double_free_of_the_last_block_is_caught() {
        double_free_of_last::<H>(Caught(&[Kind::DoubleFree]));
    }
    #[test]
    fn never_allocated_pointer_in_the_top_is_caught_as_a_double_free() {
        never_allocated_inside::<H>(Caught(&[Kind::DoubleFree]));
    }
    #[test]
    fn never_allocated_pointer_outside_the_heap_is_caught() {
        never_allocated_outside::<H>(Caught(&[Kind::Foreign]));
    }
    #[test]
    fn interior_pointer_is_caught() {
        interior_pointer::<H>(0, Caught(&[Kind::DoubleFree]));
        interior_pointer::<H>(0xa5, Caught(&[Kind::Foreign]));
    }
    #[test]
    fn free_with_a_larger_size_is_caught() {
        wrong_size::<H>(48, 1024, Caught(&[Kind::Layout]));
    }
    #[test]
    fn free_with_a_smaller_size_is_caught() {
        wrong_size::<H>(1024, 16, Caught(&[Kind::Layout]));
    }
    #[test]
    fn free_with_an_alignment_the_pointer_lacks_is_caught() {
        wrong_align_stricter::<H>(Caught(&[Kind::Layout]));
    }
    #[test]
    fn free_with_a_looser_alignment_frees_the_block() {
        wrong_align_looser::<H>(Freed);
    }
    #[test]
    fn realloc_after_free_is_caught() {
        realloc_after_free::<H>(true);
    }
    #[test]
    fn write_past_end_is_caught_when_the_block_is_freed() {
        write_past_end::<H>(true, false, Caught(&[Kind::DoubleFree]));
    }
    #[test]
    fn write_past_end_is_caught_when_the_neighbour_is_freed() {
        write_past_end::<H>(false, false, Caught(&[Kind::DoubleFree]));
    }
    /// The byte zeroes the next chunk's head; `stats()` walks the chunks by
    /// their sizes and must stop at an implausible one (it once looped
    /// forever on a size of 0), and `verify()` must report it.
    #[test]
    #[cfg(not(miri))]
    fn stats_and_verify_return_after_an_overflow() {
        walks_terminate_after_overflow::<H>(true);
    }
    #[test]
    fn overflowing_sizes_return_none() {
        overflowing_sizes::<H>();
    }
    #[test]
    fn host_free_panics_with_a_clear_message() {
        host_free_message(
            // SAFETY: the double free under test is caught by `free`.
            |h: &mut H, p, l| unsafe { h.free(p, l) },
            "linmem-dlmalloc: double free",
        );
    }
}

mod emmalloc {
    //! linmem-emmalloc checks every free and realloc in O(1) (header,
    //! footer, span, alignment, a layout larger than the block) and fails
    //! closed (I9).
    use super::*;
    type H = linmem_emmalloc::Heap<SimMemory>;

    #[test]
    fn double_free_is_caught() {
        double_free::<H>(Caught(&[Kind::DoubleFree]));
    }
    #[test]
    fn double_free_after_merge_is_caught() {
        double_free_after_merge::<H>(Caught(&[Kind::DoubleFree]));
    }
    #[test]
    fn double_free_after_reuse_frees_the_new_owners_block() {
        double_free_after_reuse::<H>();
    }
    #[test]
    fn double_free_of_the_last_block_is_caught() {
        double_free_of_last::<H>(Caught(&[Kind::DoubleFree]));
    }
    #[test]
    fn never_allocated_pointer_in_free_space_is_caught_as_a_double_free() {
        never_allocated_inside::<H>(Caught(&[Kind::DoubleFree]));
    }
    #[test]
    fn never_allocated_pointer_outside_the_heap_is_caught() {
        never_allocated_outside::<H>(Caught(&[Kind::Foreign]));
    }
    #[test]
    fn interior_pointer_is_caught() {
        interior_pointer::<H>(0, Caught(&[Kind::DoubleFree]));
        interior_pointer::<H>(0xa5, Caught(&[Kind::Corrupted]));
    }
    #[test]
    fn free_with_a_larger_size_is_caught() {
        wrong_size::<H>(48, 1024, Caught(&[Kind::Layout]));
    }
    #[test]
    fn free_with_a_smaller_size_frees_the_block() {
        wrong_size::<H>(1024, 16, Freed);
    }
    #[test]
    fn free_with_an_alignment_the_pointer_lacks_is_caught() {
        wrong_align_stricter::<H>(Caught(&[Kind::Foreign]));
    }
    #[test]
    fn free_with_a_looser_alignment_frees_the_block() {
        wrong_align_looser::<H>(Freed);
    }
    #[test]
    fn realloc_after_free_is_caught() {
        realloc_after_free::<H>(true);
    }
    #[test]
    fn write_past_end_is_caught_when_the_block_is_freed() {
        write_past_end::<H>(true, false, Caught(&[Kind::Corrupted]));
    }
    /// The byte zeroes the block's footer, so its right neighbour's merge
    /// would read "the previous region is free, size 0" and unlink through
    /// user bytes; the merge checks a free-looking neighbour first (I12)
    /// and fails closed. (Blocks of 300 B: smaller ones are parked in the
    /// quick lists on free and merge later, see the next test.)
    #[test]
    fn write_past_end_is_caught_when_the_neighbour_is_freed() {
        write_past_end_of::<H>(300, false, false, Caught(&[Kind::Corrupted]));
    }

    /// A small neighbour is only parked in its quick list by the free (no
    /// merge, nothing read through the damaged footer); the damage is
    /// caught when the quick lists merge (`flush`, or before growing), and
    /// the heap fails closed there instead of unlinking through user bytes.
    #[test]
    fn write_past_end_is_caught_when_a_parked_neighbour_merges() {
        let mut h = H::make(SimMemory::new(0, 4));
        let l = layout(48, 8);
        let [a, b, c] = [0; 3].map(|_| h.alloc(l).unwrap());
        // SAFETY: `a` and `c` are live blocks of 48 bytes.
        unsafe {
            a.as_ptr().write_bytes(0xA5, 48);
            c.as_ptr().write_bytes(0xC3, 48);
        }
        // SAFETY: `a` is live.
        let usable = unsafe { h.usable_size(a, l) };
        // SAFETY: the byte lies in the heap's memory, just past `a` (the misuse).
        unsafe { a.as_ptr().add(usable).write(0) };
        // SAFETY: `b` is live; its own header and footer are intact.
        assert_eq!(unsafe { h.dealloc(b, l) }, Ok(()));
        assert!(!h.is_failed_closed());
        h.flush();
        assert!(
            h.is_failed_closed(),
            "the damaged footer was merged through"
        );
        assert_eq!(h.alloc(l), None);
        // SAFETY: `a` and `c` stay live (the heap failed closed, nothing freed).
        unsafe {
            assert!((0..48).all(|i| *a.as_ptr().add(i) == 0xA5));
            assert!((0..48).all(|i| *c.as_ptr().add(i) == 0xC3));
        }
    }
    #[test]
    #[cfg(not(miri))]
    fn stats_and_verify_return_after_an_overflow() {
        walks_terminate_after_overflow::<H>(true);
    }
    #[test]
    fn overflowing_sizes_return_none() {
        overflowing_sizes::<H>();
    }
    #[test]
    fn host_free_panics_with_a_clear_message() {
        host_free_message(
            // SAFETY: the double free under test is caught by `free`.
            |h: &mut H, p, l| unsafe { h.free(p, l) },
            "linmem-emmalloc: double free",
        );
    }
}

mod ems {
    //! linmem-ems checks every free and realloc in O(1) (pool bounds,
    //! header, neighbours) and sets a sticky corrupted flag (I11). It keeps
    //! each block's size, so the layout's size is not needed (nor checked).
    use super::*;
    type H = linmem_ems::Heap<SimMemory>;

    #[test]
    fn double_free_is_caught() {
        double_free::<H>(Caught(&[Kind::DoubleFree]));
    }
    #[test]
    fn double_free_after_merge_is_caught() {
        // The merged block's header is rewritten, the stale one of the
        // freed block may not be: then its successor's previous-in-use bit
        // disagrees, which is reported as corruption.
        double_free_after_merge::<H>(Caught(&[Kind::DoubleFree, Kind::Corrupted]));
    }
    #[test]
    fn double_free_after_reuse_frees_the_new_owners_block() {
        double_free_after_reuse::<H>();
    }
    #[test]
    fn double_free_of_the_last_block_is_caught() {
        double_free_of_last::<H>(Caught(&[Kind::DoubleFree]));
    }
    #[test]
    fn never_allocated_pointer_in_free_space_is_caught_as_a_double_free() {
        never_allocated_inside::<H>(Caught(&[Kind::DoubleFree]));
    }
    #[test]
    fn never_allocated_pointer_outside_the_heap_is_caught() {
        never_allocated_outside::<H>(Caught(&[Kind::Foreign]));
    }
    #[test]
    fn interior_pointer_is_caught() {
        interior_pointer::<H>(0, Caught(&[Kind::DoubleFree]));
        interior_pointer::<H>(0xa5, Caught(&[Kind::Corrupted]));
    }
    #[test]
    fn free_with_a_larger_size_frees_the_block() {
        wrong_size::<H>(48, 1024, Freed);
    }
    #[test]
    fn free_with_a_smaller_size_frees_the_block() {
        wrong_size::<H>(1024, 16, Freed);
    }
    #[test]
    fn free_with_an_alignment_the_pointer_lacks_is_caught() {
        wrong_align_stricter::<H>(Caught(&[Kind::Layout]));
    }
    #[test]
    fn free_with_a_looser_alignment_frees_the_block() {
        wrong_align_looser::<H>(Freed);
    }
    #[test]
    fn realloc_after_free_is_caught() {
        realloc_after_free::<H>(true);
    }
    #[test]
    fn write_past_end_is_caught_when_the_block_is_freed() {
        write_past_end::<H>(true, false, Caught(&[Kind::Corrupted]));
    }
    #[test]
    fn write_past_end_is_caught_when_the_neighbour_is_freed() {
        write_past_end::<H>(false, false, Caught(&[Kind::DoubleFree]));
    }
    #[test]
    #[cfg(not(miri))]
    fn stats_and_verify_return_after_an_overflow() {
        walks_terminate_after_overflow::<H>(true);
    }
    #[test]
    fn overflowing_sizes_return_none() {
        overflowing_sizes::<H>();
    }

    #[test]
    fn pool_alloc_aligned_refuses_alignments_that_are_not_powers_of_two() {
        let mut buf = vec![0u64; 1024];
        let base = NonNull::new(buf.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: `buf` is 8-aligned, 8 KiB, used only by the pool, and
        // outlives it.
        let mut pool = unsafe { linmem_ems::EmsPool::init_in_pool(base, 8192) }.unwrap();
        for align in [0, 3, 5, 6, 7, 12, 24, 48, 96, 1000, usize::MAX] {
            assert_eq!(pool.alloc_aligned(16, align), None, "align {align}");
        }
        assert!(!pool.is_corrupted());
        let p = pool.alloc_aligned(16, 64).unwrap();
        assert_eq!(p.as_ptr().addr() % 64, 0);
        // SAFETY: `p` is a live block of the pool.
        unsafe { pool.free(p) }.unwrap();
        pool.verify().unwrap();
    }

    #[test]
    fn guest_memalign_refuses_alignments_that_are_not_powers_of_two() {
        let mut mem = vec![0u8; 8192];
        let mut g = linmem_ems::guest::GuestHeap::init(&mut mem, 64, 4096).unwrap();
        for align in [0, 3, 5, 6, 7, 12, 24, 48, 96, 1000, u32::MAX] {
            assert_eq!(g.memalign(&mut mem, 16, align), None, "align {align}");
        }
        assert!(!g.is_corrupted());
        let a = g.memalign(&mut mem, 16, 64).unwrap();
        assert_eq!(a % 64, 0);
        g.free(&mut mem, a).unwrap();
        g.verify(&mem).unwrap();
    }
}

mod ems_capi {
    //! The C ABI takes raw sizes and alignments, which `Layout` cannot
    //! carry: here they are checked.
    use core::ffi::c_void;
    use linmem_ems_capi as c;

    /// Runs `f` on a fresh C-side heap over an 8 KiB pool.
    fn with_heap(f: impl FnOnce(*mut c::EmsHeap)) {
        let mut buf = vec![0u64; 1024];
        // SAFETY: `buf` is 8-aligned, 8 KiB, and outlives the handle.
        let h = unsafe { c::ems_init_with_pool(buf.as_mut_ptr().cast::<c_void>(), 8192) };
        assert!(!h.is_null());
        f(h);
        // SAFETY: `h` is live and not used again.
        unsafe { c::ems_destroy(h) };
    }

    /// Allocates, checks alignment, frees; the heap must not have failed.
    fn still_works(h: *mut c::EmsHeap) {
        // SAFETY: `h` is a live handle.
        let p = unsafe { c::ems_alloc_aligned(h, 24, 64) };
        assert!(!p.is_null());
        assert_eq!(p.addr() % 64, 0);
        // SAFETY: `p` is a live block of `h`.
        assert_eq!(unsafe { c::ems_free(h, p) }, c::EMS_OK);
        // SAFETY: `h` is a live handle.
        assert_eq!(unsafe { c::ems_is_corrupted(h) }, 0);
    }

    #[test]
    fn alloc_aligned_refuses_alignments_that_are_not_powers_of_two_above_8() {
        with_heap(|h| {
            for align in [9, 12, 24, 48, 96, 1000, 3 << 16, usize::MAX] {
                // SAFETY: `h` is a live handle.
                let p = unsafe { c::ems_alloc_aligned(h, 16, align) };
                assert!(p.is_null(), "align {align} accepted");
            }
            still_works(h);
        });
    }

    /// `ems_alloc_aligned` refuses every alignment that is not a power of
    /// two, including those below the heap's own 8 (it once raised them to
    /// 8 first and served 0, 3, 5, 6 and 7).
    #[test]
    fn alloc_aligned_refuses_small_alignments_that_are_not_powers_of_two() {
        with_heap(|h| {
            for align in [0, 3, 5, 6, 7] {
                // SAFETY: `h` is a live handle.
                let p = unsafe { c::ems_alloc_aligned(h, 16, align) };
                assert!(p.is_null(), "align {align} accepted");
            }
        });
    }

    #[test]
    fn sizes_that_overflow_return_null() {
        with_heap(|h| {
            // SAFETY: `h` is a live handle.
            let keep = unsafe { c::ems_alloc(h, 100) };
            assert!(!keep.is_null());
            for k in [0, 1, 3, 4, 7, 8, 16, 64, 4096, 65536] {
                for size in [
                    usize::MAX - k,
                    isize::MAX as usize - k,
                    u32::MAX as usize - k,
                ] {
                    // SAFETY: `h` is a live handle; raw sizes are the input
                    // under test.
                    unsafe {
                        assert!(c::ems_alloc(h, size).is_null(), "{size:#x}");
                        assert!(c::ems_alloc_aligned(h, size, 64).is_null());
                        assert!(c::ems_alloc_aligned(h, size, 65536).is_null());
                        assert!(c::ems_realloc(h, keep, size).is_null());
                        assert!(c::ems_realloc(h, core::ptr::null_mut(), size).is_null());
                    }
                }
            }
            // SAFETY: `keep` is still live.
            assert_eq!(unsafe { c::ems_free(h, keep) }, c::EMS_OK);
            still_works(h);
        });
    }

    #[test]
    fn double_free_returns_an_error_code_and_fails_closed() {
        with_heap(|h| {
            // SAFETY: `h` is a live handle; the second free is the misuse.
            unsafe {
                let p = c::ems_alloc(h, 40);
                let q = c::ems_alloc(h, 40);
                assert_eq!(c::ems_free(h, p), c::EMS_OK);
                assert_eq!(c::ems_free(h, p), c::EMS_ERR_DOUBLE_FREE);
                assert_ne!(c::ems_is_corrupted(h), 0);
                assert!(c::ems_alloc(h, 8).is_null());
                assert_eq!(c::ems_free(h, q), c::EMS_ERR_FAILED_CLOSED);
            }
        });
    }
}

#[test]
fn layout_refuses_alignments_that_are_not_powers_of_two() {
    for align in [0, 3, 5, 6, 7, 12, 24, 48, 96, 1000, 3 << 16, usize::MAX] {
        assert!(Layout::from_size_align(8, align).is_err(), "align {align}");
    }
}

/// The host-side `free` of a checking allocator panics with `message` on a
/// double free (after failing closed).
fn host_free_message<H: Subject>(free: fn(&mut H, NonNull<u8>, Layout), message: &str) {
    let mut h = H::make(SimMemory::new(0, 4));
    let l = layout(48, 8);
    let a = h.alloc(l).unwrap();
    let _b = h.alloc(l).unwrap();
    free(&mut h, a, l);
    let err = catch_unwind(AssertUnwindSafe(|| free(&mut h, a, l))).expect_err("a panic");
    let text = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(text.starts_with(message), "message: {text:?}");
    assert!(h.failed_closed());
}
