//! Heap-level tests over a simulated linear memory.

extern crate std;

use core::alloc::Layout;
use core::ptr::NonNull;
use std::vec::Vec;

use linmem_memory::{HeapError, MemorySource, PAGE_SIZE, RawHeap, SimMemory};

use crate::Heap;
use crate::block::{MIN_CHUNK, OVERHEAD, W};

fn new_heap(max_pages: usize) -> (Heap<SimMemory>, SimMemory) {
    let mem = SimMemory::new(0, max_pages);
    (Heap::new(mem.clone()), mem)
}

/// A request whose chunk is small-binned (below 256 bytes) but above
/// `FAST_MAX`, so a free of it merges and bins with or without fast lists.
const SMALL: usize = 150;
const _: () = assert!(crate::bins::FAST_MAX < SMALL && SMALL + OVERHEAD < crate::bins::MIN_LARGE);

fn lay(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

fn lay_al(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

fn check<S: MemorySource>(h: &Heap<S>) -> linmem_memory::HeapStats {
    match h.verify() {
        Ok(s) => s,
        Err(e) => panic!("verify failed: {e}"),
    }
}

/// The byte offsets a test writes and checks: all of them, or under Miri
/// (slow) the first and last 32.
fn offsets(len: usize) -> impl Iterator<Item = usize> {
    let cut = if cfg!(miri) { 32 } else { usize::MAX };
    (0..len.min(cut)).chain(len.saturating_sub(cut).max(cut.min(len))..len)
}

fn fill(p: NonNull<u8>, len: usize, seed: u8) {
    for i in offsets(len) {
        // SAFETY: the test owns `len` bytes at `p`.
        unsafe { p.as_ptr().add(i).write(seed.wrapping_add(i as u8)) };
    }
}

fn holds(p: NonNull<u8>, len: usize, seed: u8) -> bool {
    // SAFETY: the test owns `len` bytes at `p`.
    offsets(len).all(|i| unsafe { p.as_ptr().add(i).read() } == seed.wrapping_add(i as u8))
}

/// Whether the first `n` bytes of a block filled with `len` bytes of
/// pattern `seed` still hold it.
fn holds_prefix(p: NonNull<u8>, len: usize, n: usize, seed: u8) -> bool {
    // SAFETY: the test owns at least `n` bytes at `p`.
    offsets(len)
        .filter(|&i| i < n)
        .all(|i| unsafe { p.as_ptr().add(i).read() } == seed.wrapping_add(i as u8))
}

fn is_zero(p: NonNull<u8>, len: usize) -> bool {
    // SAFETY: the test owns `len` bytes at `p`.
    offsets(len).all(|i| unsafe { p.as_ptr().add(i).read() } == 0)
}

fn free<S: MemorySource>(h: &mut Heap<S>, p: NonNull<u8>, l: Layout) {
    // SAFETY: the tests pass blocks they allocated with `l`.
    unsafe { h.dealloc(p, l) }.unwrap();
}

#[test]
fn empty_heap_verifies_and_takes_nothing() {
    let (h, mem) = new_heap(4);
    let s = check(&h);
    assert_eq!(s.footprint, 0);
    assert_eq!(mem.grows(), 0);
}

#[test]
fn small_free_then_alloc_of_same_size_reuses_the_chunk() {
    let (mut h, _) = new_heap(4);
    let a = h.alloc(lay(SMALL)).unwrap();
    let _guard = h.alloc(lay(8)).unwrap();
    free(&mut h, a, lay(SMALL));
    assert_ne!(h.smallmap, 0, "freed small chunk is in a small bin");
    check(&h);
    let b = h.alloc(lay(SMALL)).unwrap();
    assert_eq!(a, b);
    assert_eq!(h.smallmap, 0);
    check(&h);
}

#[test]
fn small_bin_bits_track_bin_occupancy() {
    let (mut h, _) = new_heap(4);
    let sizes = [140usize, 150, 170, 200, 220, 240];
    let mut blocks = Vec::new();
    for &s in &sizes {
        blocks.push((h.alloc(lay(s)).unwrap(), s));
        h.alloc(lay(1)).unwrap();
    }
    for &(p, s) in &blocks {
        free(&mut h, p, lay(s));
        check(&h);
    }
    assert_eq!(h.smallmap.count_ones() as usize, sizes.len());
    for &(_, s) in &blocks {
        h.alloc(lay(s)).unwrap();
        check(&h);
    }
    assert_eq!(h.smallmap, 0);
}

#[test]
fn tree_bins_give_the_best_fit() {
    let (mut h, _) = new_heap(64);
    let sizes = [300usize, 1000, 700, 5000, 760, 2000, 300, 1500, 40000, 1100];
    let mut blocks = Vec::new();
    for &s in &sizes {
        blocks.push((h.alloc(lay(s)).unwrap(), s));
        h.alloc(lay(8)).unwrap();
    }
    for &(p, s) in &blocks {
        free(&mut h, p, lay(s));
        check(&h);
    }
    assert!(h.treemap != 0);
    // Each request takes the smallest free chunk that fits.
    for (req, want) in [
        (1050usize, 1100usize),
        (650, 700),
        (1200, 1500),
        (3000, 5000),
    ] {
        let p = h.alloc(lay(req)).unwrap();
        let (q, _) = blocks.iter().find(|b| b.1 == want).copied().unwrap();
        assert_eq!(p, q, "request {req} should take the {want}-byte block");
        check(&h);
    }
}

/// Chunks per tree test (fewer under Miri, which is slow).
const TREE_N: usize = if cfg!(miri) { 60 } else { 300 };

#[test]
fn tree_removal_keeps_the_trie_consistent() {
    let (mut h, _) = new_heap(256);
    let mut rng = Rng(7);
    let mut blocks = Vec::new();
    for _ in 0..TREE_N {
        let s = 256 + rng.below(3000);
        blocks.push((h.alloc(lay(s)).unwrap(), s));
        h.alloc(lay(8)).unwrap();
    }
    // Free in random order (many equal sizes: rings), then take them back.
    while !blocks.is_empty() {
        let i = rng.below(blocks.len());
        let (p, s) = blocks.swap_remove(i);
        free(&mut h, p, lay(s));
    }
    check(&h);
    for _ in 0..TREE_N {
        let s = 256 + rng.below(3000);
        h.alloc(lay(s)).unwrap();
        check(&h);
    }
}

#[test]
fn free_coalesces_with_each_neighbour() {
    let (mut h, _) = new_heap(4);
    let l = lay(SMALL);
    let [a, b, c, d, e] = core::array::from_fn(|_| h.alloc(l).unwrap());
    let _guard = h.alloc(lay(8)).unwrap();
    let base = check(&h).free_blocks;
    // Neither neighbour free.
    free(&mut h, b, l);
    assert_eq!(check(&h).free_blocks, base + 1);
    // Previous neighbour free (b): c merges backward.
    free(&mut h, c, l);
    assert_eq!(check(&h).free_blocks, base + 1);
    // Next neighbour free (b+c): a merges forward.
    free(&mut h, a, l);
    assert_eq!(check(&h).free_blocks, base + 1);
    // Both neighbours free: e alone, then d joins a..c and e.
    free(&mut h, e, l);
    assert_eq!(check(&h).free_blocks, base + 2);
    free(&mut h, d, l);
    let s = check(&h);
    assert_eq!(s.free_blocks, base + 1);
    let chunk = crate::block::pad_request(SMALL);
    assert!(s.largest_free >= 5 * chunk);
}

#[test]
fn freeing_next_to_the_top_merges_into_the_top() {
    let (mut h, _) = new_heap(4);
    let a = h.alloc(lay(1000)).unwrap();
    let before = h.topsize;
    free(&mut h, a, lay(1000));
    assert_eq!(h.topsize, before + crate::block::pad_request(1000));
    assert_eq!(check(&h).free_blocks, 1);
}

#[test]
fn split_remainder_becomes_the_designated_victim() {
    let (mut h, _) = new_heap(4);
    let big = h.alloc(lay(600)).unwrap();
    let _guard = h.alloc(lay(8)).unwrap();
    free(&mut h, big, lay(600));
    // A small request splits the freed chunk; the rest is dv.
    let a = h.alloc(lay(SMALL)).unwrap();
    assert_eq!(a, big);
    assert!(h.dvsize != 0);
    check(&h);
    // The next small request comes from dv, right after a.
    let b = h.alloc(lay(SMALL)).unwrap();
    let step = crate::block::pad_request(SMALL);
    assert_eq!(b.as_ptr() as usize, a.as_ptr() as usize + step);
    check(&h);
    // Freeing next to dv grows dv.
    let dv_before = h.dvsize;
    free(&mut h, b, lay(SMALL));
    assert_eq!(h.dvsize, dv_before + step);
    check(&h);
}

#[test]
fn top_grows_through_the_source() {
    let (mut h, mem) = new_heap(64);
    let a = h.alloc(lay(100)).unwrap();
    assert_eq!(mem.grows(), 1);
    let big = h.alloc(lay(3 * PAGE_SIZE)).unwrap();
    assert!(mem.grows() >= 2);
    assert_eq!(
        h.detailed_stats().segments,
        1,
        "contiguous growth extends the segment"
    );
    fill(big, 3 * PAGE_SIZE, 3);
    assert!(holds(big, 3 * PAGE_SIZE, 3));
    free(&mut h, a, lay(100));
    free(&mut h, big, lay(3 * PAGE_SIZE));
    let s = check(&h);
    assert_eq!(s.in_use, 0);
    assert!(mem.pages() <= 5);
}

#[test]
fn foreign_growth_starts_a_new_segment() {
    let (mut h, mem) = new_heap(64);
    let a = h.alloc(lay(100)).unwrap();
    fill(a, 100, 1);
    assert!(mem.foreign_grow(1));
    let b = h.alloc(lay(PAGE_SIZE)).unwrap();
    fill(b, PAGE_SIZE, 2);
    let d = h.detailed_stats();
    assert_eq!(d.segments, 2);
    check(&h);
    // The old top went to the bins and is used for smaller requests.
    let c = h.alloc(lay(5000)).unwrap();
    assert!((c.as_ptr() as usize) < (b.as_ptr() as usize));
    check(&h);
    // Blocks of the old segment free fine; coalescing stops at its record.
    free(&mut h, a, lay(100));
    free(&mut h, c, lay(5000));
    check(&h);
    assert!(holds(b, PAGE_SIZE, 2));
    free(&mut h, b, lay(PAGE_SIZE));
    let s = check(&h);
    assert_eq!(s.in_use, 0);
    assert_eq!(s.live_blocks, 0);
}

#[test]
fn growth_contiguous_with_the_new_segment_merges_into_it() {
    let (mut h, mem) = new_heap(64);
    h.alloc(lay(100)).unwrap();
    assert!(mem.foreign_grow(2));
    h.alloc(lay(PAGE_SIZE)).unwrap();
    assert_eq!(h.detailed_stats().segments, 2);
    h.alloc(lay(2 * PAGE_SIZE)).unwrap();
    assert_eq!(
        h.detailed_stats().segments,
        2,
        "no gap: the top segment grows"
    );
    check(&h);
    assert!(mem.foreign_grow(1));
    h.alloc(lay(2 * PAGE_SIZE)).unwrap();
    assert_eq!(h.detailed_stats().segments, 3);
    check(&h);
}

#[test]
fn every_alignment_up_to_a_page_is_honoured() {
    let (mut h, _) = new_heap(512);
    let mut blocks = Vec::new();
    let mut align = 1;
    while align <= PAGE_SIZE {
        let sizes: &[usize] = if cfg!(miri) {
            &[0, 1, 100, 70000]
        } else {
            &[0, 1, 7, 8, 100, 1000, 70000]
        };
        for &size in sizes {
            let l = lay_al(size, align);
            let p = h.alloc(l).unwrap();
            assert_eq!(p.as_ptr() as usize % align, 0, "align {align} size {size}");
            fill(p, size, align as u8);
            blocks.push((p, l));
        }
        check(&h);
        align *= 2;
    }
    for (p, l) in blocks {
        assert!(holds(p, l.size(), l.align() as u8));
        free(&mut h, p, l);
    }
    let s = check(&h);
    assert_eq!(s.in_use, 0);
}

#[test]
fn page_aligned_allocations_do_not_balloon() {
    let n = if cfg!(miri) { 10 } else { 100 };
    let (mut h, mem) = new_heap(4 * n + 8);
    let l = lay_al(1, PAGE_SIZE);
    let mut blocks = Vec::new();
    for _ in 0..n {
        let p = h.alloc(l).unwrap();
        assert_eq!(p.as_ptr() as usize % PAGE_SIZE, 0);
        blocks.push(p);
    }
    check(&h);
    // One page boundary per block is strictly needed.
    assert!(
        mem.pages() <= 2 * n + 2,
        "{} pages for {n} blocks",
        mem.pages()
    );
    for p in blocks {
        free(&mut h, p, l);
    }
    check(&h);
}

#[test]
fn failed_grow_returns_none_and_the_heap_keeps_working() {
    let (mut h, mem) = new_heap(64);
    let a = h.alloc(lay(100)).unwrap();
    mem.fail_next_grows(1);
    assert!(h.alloc(lay(4 * PAGE_SIZE)).is_none());
    assert!(h.alloc_zeroed(lay(4 * PAGE_SIZE)).is_none() || mem.failed_grows() == 1);
    check(&h);
    mem.fail_next_grows(usize::MAX);
    assert!(h.alloc(lay(4 * PAGE_SIZE)).is_none());
    assert!(h.alloc(lay_al(100, PAGE_SIZE)).is_none());
    check(&h);
    // Small requests still come from the top.
    let b = h.alloc(lay(100)).unwrap();
    mem.fail_next_grows(0);
    let c = h.alloc(lay(4 * PAGE_SIZE)).unwrap();
    for (p, s) in [(a, 100), (b, 100), (c, 4 * PAGE_SIZE)] {
        free(&mut h, p, lay(s));
    }
    check(&h);
}

#[test]
fn memory_exhaustion_returns_none() {
    let (mut h, _) = new_heap(4);
    let mut blocks = Vec::new();
    while let Some(p) = h.alloc(lay(10000)) {
        blocks.push(p);
        assert!(blocks.len() < 100);
    }
    check(&h);
    assert!(blocks.len() >= 20);
    for p in blocks {
        free(&mut h, p, lay(10000));
    }
    check(&h);
}

#[test]
fn sizes_near_isize_max_return_none() {
    let (mut h, _) = new_heap(4);
    for size in [
        isize::MAX as usize,
        isize::MAX as usize - 100,
        usize::MAX / 4,
    ] {
        if let Ok(l) = Layout::from_size_align(size, 8) {
            assert!(h.alloc(l).is_none());
        }
        if let Ok(l) = Layout::from_size_align(size & !(PAGE_SIZE - 1), PAGE_SIZE) {
            assert!(h.alloc(l).is_none());
        }
    }
    check(&h);
    let p = h.alloc(lay(10)).unwrap();
    // SAFETY: `p` is live for lay(10).
    assert!(unsafe { h.realloc(p, lay(10), isize::MAX as usize - 8) }.is_none());
    free(&mut h, p, lay(10));
    check(&h);
}

#[test]
fn realloc_shrinks_in_place_and_frees_the_tail() {
    let (mut h, _) = new_heap(4);
    let p = h.alloc(lay(1000)).unwrap();
    let _guard = h.alloc(lay(8)).unwrap();
    fill(p, 1000, 9);
    // SAFETY: `p` is live for lay(1000).
    let q = unsafe { h.realloc(p, lay(1000), 100) }.unwrap();
    assert_eq!(p, q);
    assert!(holds_prefix(q, 1000, 100, 9));
    let s = check(&h);
    assert!(s.free_blocks >= 2, "the tail is a free chunk");
    free(&mut h, q, lay(100));
    check(&h);
}

#[test]
fn realloc_grows_into_the_top_in_place() {
    let (mut h, _) = new_heap(8);
    let p = h.alloc(lay(100)).unwrap();
    fill(p, 100, 4);
    // SAFETY: `p` is live for lay(100).
    let q = unsafe { h.realloc(p, lay(100), 50000) }.unwrap();
    assert_eq!(p, q);
    assert!(holds(q, 100, 4));
    check(&h);
    free(&mut h, q, lay(50000));
    check(&h);
}

#[test]
fn realloc_grows_into_a_free_successor_in_place() {
    let (mut h, _) = new_heap(8);
    let p = h.alloc(lay(100)).unwrap();
    let n = h.alloc(lay(2000)).unwrap();
    let _guard = h.alloc(lay(8)).unwrap();
    free(&mut h, n, lay(2000));
    fill(p, 100, 5);
    // SAFETY: `p` is live for lay(100).
    let q = unsafe { h.realloc(p, lay(100), 1000) }.unwrap();
    assert_eq!(p, q);
    assert!(holds(q, 100, 5));
    check(&h);
    // SAFETY: `q` is live for lay(1000).
    let r = unsafe { h.realloc(q, lay(1000), 2100) }.unwrap();
    assert_eq!(q, r, "the rest of the successor still fits");
    assert!(holds(r, 100, 5));
    check(&h);
}

#[test]
fn realloc_grows_into_dv_in_place() {
    let (mut h, _) = new_heap(4);
    let big = h.alloc(lay(200)).unwrap();
    let _guard = h.alloc(lay(8)).unwrap();
    free(&mut h, big, lay(200));
    let a = h.alloc(lay(40)).unwrap();
    assert!(h.dvsize != 0);
    fill(a, 40, 6);
    // SAFETY: `a` is live for lay(40).
    let b = unsafe { h.realloc(a, lay(40), 120) }.unwrap();
    assert_eq!(a, b);
    assert!(holds(b, 40, 6));
    check(&h);
}

#[test]
fn realloc_that_cannot_stay_moves_and_keeps_data() {
    let (mut h, _) = new_heap(8);
    let p = h.alloc(lay(100)).unwrap();
    let _guard = h.alloc(lay(8)).unwrap();
    fill(p, 100, 8);
    // SAFETY: `p` is live for lay(100).
    let q = unsafe { h.realloc(p, lay(100), 5000) }.unwrap();
    assert_ne!(p, q);
    assert!(holds(q, 100, 8));
    check(&h);
    // An over-aligned block keeps its alignment when it moves.
    let l = lay_al(64, 4096);
    let a = h.alloc(l).unwrap();
    let _guard2 = h.alloc(lay(8)).unwrap();
    fill(a, 64, 1);
    // SAFETY: `a` is live for `l`.
    let b = unsafe { h.realloc(a, l, 9000) }.unwrap();
    assert_eq!(b.as_ptr() as usize % 4096, 0);
    assert!(holds(b, 64, 1));
    check(&h);
}

#[test]
fn alloc_zeroed_on_reused_memory_is_zero() {
    let (mut h, _) = new_heap(8);
    let mut blocks = Vec::new();
    for s in [16usize, 100, 300, 3000] {
        let p = h.alloc(lay(s)).unwrap();
        fill(p, s, 0xAB);
        blocks.push((p, s));
    }
    for &(p, s) in &blocks {
        free(&mut h, p, lay(s));
    }
    for &(_, s) in &blocks {
        let p = h.alloc_zeroed(lay(s)).unwrap();
        assert!(is_zero(p, s));
    }
    // Memory given back to the top and handed out again is cleared too.
    let p = h.alloc(lay(5000)).unwrap();
    fill(p, 5000, 0xCD);
    free(&mut h, p, lay(5000));
    let q = h.alloc_zeroed(lay(5000)).unwrap();
    assert!(is_zero(q, 5000));
    check(&h);
}

#[test]
fn alloc_zeroed_skips_clearing_fresh_top_memory() {
    let (mut h, _) = new_heap(8);
    let p = h.alloc_zeroed(lay(1000)).unwrap();
    assert!(is_zero(p, 1000));
    // Carving from the top leaves the watermark alone; the top above the
    // block is still pristine (verify checks I10).
    let before = h.fresh;
    let q = h.alloc_zeroed(lay(1000)).unwrap();
    assert!(before <= q.as_ptr() as usize && h.fresh == before);
    assert!(is_zero(q, 1000));
    check(&h);
    // Freeing into the top raises the watermark above the freed bytes.
    free(&mut h, q, lay(1000));
    assert!(h.fresh > q.as_ptr() as usize);
    check(&h);
}

#[test]
fn usable_size_covers_the_request() {
    let (mut h, _) = new_heap(4);
    for s in [0usize, 1, 12, 13, 100, 255, 256, 4000] {
        let p = h.alloc(lay(s)).unwrap();
        // SAFETY: `p` is live for lay(s).
        let u = unsafe { h.usable_size(p, lay(s)) };
        assert!(u >= s && u < s + MIN_CHUNK + OVERHEAD);
        fill(p, u, 1);
        check(&h);
    }
}

#[test]
fn double_free_is_detected_and_fails_closed() {
    let (mut h, _) = new_heap(4);
    let a = h.alloc(lay(100)).unwrap();
    let b = h.alloc(lay(100)).unwrap();
    free(&mut h, a, lay(100));
    // SAFETY: deliberate misuse, detected.
    let e = unsafe { h.dealloc(a, lay(100)) };
    assert_eq!(
        e,
        Err(HeapError::DoubleFree {
            addr: a.as_ptr() as usize
        })
    );
    assert!(h.is_failed());
    assert!(h.alloc(lay(8)).is_none());
    assert!(h.alloc(lay_al(8, 64)).is_none());
    // SAFETY: `b` is live, but the heap has failed closed and refuses.
    let e = unsafe { h.dealloc(b, lay(100)) };
    assert_eq!(e, Err(HeapError::FailedClosed));
    assert_eq!(h.verify().unwrap_err().invariant, 11);
}

#[test]
fn double_free_after_merging_into_the_top_is_detected() {
    let (mut h, _) = new_heap(4);
    let a = h.alloc(lay(100)).unwrap();
    free(&mut h, a, lay(100));
    // SAFETY: deliberate misuse, detected.
    let e = unsafe { h.dealloc(a, lay(100)) };
    assert!(matches!(e, Err(HeapError::DoubleFree { .. })));
    assert!(h.is_failed());
}

#[test]
fn double_free_after_merging_backward_is_detected() {
    let (mut h, _) = new_heap(4);
    let a = h.alloc(lay(100)).unwrap();
    let b = h.alloc(lay(100)).unwrap();
    let _c = h.alloc(lay(100)).unwrap();
    free(&mut h, a, lay(100));
    free(&mut h, b, lay(100));
    // SAFETY: deliberate misuse, detected.
    let e = unsafe { h.dealloc(b, lay(100)) };
    assert!(matches!(e, Err(HeapError::DoubleFree { .. })), "{e:?}");
    assert!(h.is_failed());
}

#[test]
fn foreign_and_misaligned_pointers_are_detected() {
    let (mut h, _) = new_heap(4);
    let a = h.alloc(lay(100)).unwrap();
    let mut local = [0u64; 4];
    let foreign = NonNull::new(local.as_mut_ptr().cast::<u8>()).unwrap();
    // SAFETY: deliberate misuse, detected.
    let e = unsafe { h.dealloc(foreign, lay(8)) };
    assert!(matches!(e, Err(HeapError::ForeignPointer { .. })));
    assert!(h.is_failed());

    let (mut h, _) = new_heap(4);
    let a2 = h.alloc(lay(100)).unwrap();
    // SAFETY: deliberate misuse (inside the block, misaligned), detected.
    let e = unsafe { h.dealloc(a2.add(3), lay(8)) };
    assert!(matches!(e, Err(HeapError::ForeignPointer { .. })));
    let _ = a;
}

#[test]
fn a_layout_that_does_not_match_the_block_is_detected() {
    for (alloc_size, free_size) in [(100usize, 1000usize), (1000, 100), (300, 8), (8, 300)] {
        let (mut h, _) = new_heap(4);
        let a = h.alloc(lay(alloc_size)).unwrap();
        let _guard = h.alloc(lay(8)).unwrap();
        // SAFETY: deliberate misuse, detected.
        let e = unsafe { h.dealloc(a, lay(free_size)) };
        assert_eq!(
            e,
            Err(HeapError::LayoutMismatch {
                addr: a.as_ptr() as usize
            })
        );
        assert!(h.is_failed());
        // SAFETY: detected misuse: the heap refuses.
        assert!(unsafe { h.realloc(a, lay(alloc_size), 10) }.is_none());
    }
    // A wrong alignment that the pointer does not satisfy.
    let (mut h, _) = new_heap(4);
    let a = h.alloc(lay(100)).unwrap();
    let l = lay_al(100, 2 * PAGE_SIZE);
    // SAFETY: deliberate misuse, detected.
    let e = unsafe { h.dealloc(a, l) };
    assert!(matches!(e, Err(HeapError::LayoutMismatch { .. })));
}

#[test]
fn realloc_of_a_foreign_pointer_fails_closed() {
    let (mut h, _) = new_heap(4);
    h.alloc(lay(100)).unwrap();
    let mut local = [0u64; 4];
    let foreign = NonNull::new(local.as_mut_ptr().cast::<u8>()).unwrap();
    // SAFETY: deliberate misuse, detected.
    assert!(unsafe { h.realloc(foreign, lay(8), 100) }.is_none());
    assert!(h.is_failed());
}

#[test]
#[should_panic(expected = "linmem-dlmalloc: double free of block")]
fn free_panics_with_the_error_message_on_misuse() {
    let (mut h, _) = new_heap(4);
    let a = h.alloc(lay(100)).unwrap();
    let _b = h.alloc(lay(100)).unwrap();
    // SAFETY: `a` is live for lay(100).
    unsafe { h.free(a, lay(100)) };
    // SAFETY: deliberate misuse: panics.
    unsafe { h.free(a, lay(100)) };
}

#[test]
fn a_fixed_region_smaller_than_a_page_serves() {
    let mut buf = std::vec![0u64; 512];
    // SAFETY: the buffer outlives the heap and is used by nothing else.
    let src = unsafe {
        linmem_memory::FixedRegion::from_raw(
            NonNull::new(buf.as_mut_ptr().cast::<u8>()).unwrap(),
            512 * 8,
        )
    };
    let mut h = Heap::new(src);
    let a = h.alloc(lay(1000)).unwrap();
    let b = h.alloc(lay(1000)).unwrap();
    assert!(h.alloc(lay(4000)).is_none());
    free(&mut h, a, lay(1000));
    free(&mut h, b, lay(1000));
    check(&h);
    let _ = h;
    drop(buf);
}

#[test]
fn stats_count_blocks_and_bytes() {
    let (mut h, _) = new_heap(4);
    let a = h.alloc(lay(SMALL)).unwrap();
    let b = h.alloc(lay(300)).unwrap();
    let s = check(&h);
    assert_eq!(s.live_blocks, 2);
    assert_eq!(
        s.in_use,
        crate::block::pad_request(SMALL) + crate::block::pad_request(300)
    );
    assert_eq!(s.footprint, PAGE_SIZE);
    assert!(s.free > 0 && s.largest_free == s.free);
    free(&mut h, a, lay(SMALL));
    free(&mut h, b, lay(300));
    let s = check(&h);
    assert_eq!(s.live_blocks, 0);
    assert_eq!(s.in_use, 0);
    assert_eq!(s.peak_footprint, PAGE_SIZE);
    let d = h.detailed_stats();
    assert_eq!(d.summary, s);
    assert_eq!(d.top, s.free);
    assert!(d.overhead >= W);
}

/// A small seeded xorshift generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn stress(seed: u64, ops: usize, max_size: usize, foreign: bool) {
    let (mut h, mem) = new_heap(2048);
    let mut rng = Rng(seed);
    let mut live: Vec<(NonNull<u8>, Layout, u8)> = Vec::new();
    for step in 0..ops {
        let r = rng.below(100);
        if r < 45 || live.is_empty() {
            let size = 1 + rng.below(max_size);
            let align = if rng.below(8) == 0 {
                1 << rng.below(13)
            } else {
                8
            };
            let l = lay_al(size, align);
            let zero = rng.below(4) == 0;
            let p = if zero { h.alloc_zeroed(l) } else { h.alloc(l) };
            let p = p.unwrap();
            assert_eq!(p.as_ptr() as usize % align, 0);
            if zero {
                assert!(is_zero(p, size));
            }
            let tag = rng.next() as u8;
            fill(p, size, tag);
            live.push((p, l, tag));
        } else if r < 80 {
            let (p, l, tag) = live.swap_remove(rng.below(live.len()));
            assert!(holds(p, l.size(), tag), "block corrupted at step {step}");
            free(&mut h, p, l);
        } else {
            let i = rng.below(live.len());
            let (p, l, tag) = live[i];
            let new_size = 1 + rng.below(max_size);
            // SAFETY: `p` is live for `l`.
            let q = unsafe { h.realloc(p, l, new_size) }.unwrap();
            assert!(
                holds_prefix(q, l.size(), new_size, tag),
                "realloc lost data at {step}"
            );
            let nl = lay_al(new_size, l.align());
            fill(q, new_size, tag);
            live[i] = (q, nl, tag);
        }
        if foreign && rng.below(500) == 0 {
            mem.foreign_grow(1);
        }
        if step % 64 == 0 || std::env::var_os("DL_VERIFY_ALL").is_some() {
            if let Err(e) = h.verify() {
                panic!("step {step} op {r}: {e}");
            }
        }
    }
    let s = check(&h);
    assert_eq!(s.live_blocks, live.len());
    for (p, l, tag) in live {
        assert!(holds(p, l.size(), tag));
        free(&mut h, p, l);
    }
    let s2 = check(&h);
    assert_eq!(s2.in_use, 0);
    assert!(s.footprint <= 2048 * PAGE_SIZE);
}

const STRESS_OPS: usize = if cfg!(miri) { 300 } else { 20_000 };

#[test]
fn random_actions_keep_every_invariant() {
    stress(0x9E37_79B9_7F4A_7C15, STRESS_OPS, 10_000, false);
}

#[test]
fn random_small_object_churn_keeps_every_invariant() {
    stress(12345, STRESS_OPS, 128, false);
}

#[test]
fn random_actions_with_foreign_growth_keep_every_invariant() {
    stress(777, STRESS_OPS, 20_000, true);
}

#[test]
fn verify_reports_a_damaged_boundary_tag_and_bitmap() {
    let (mut h, _) = new_heap(4);
    let a = h.alloc(lay(SMALL)).unwrap();
    let b = h.alloc(lay(SMALL)).unwrap();
    let _guard = h.alloc(lay(8)).unwrap();
    free(&mut h, a, lay(SMALL));
    check(&h);
    // The boundary tag of the free chunk `a` is `b`'s prev_foot word.
    // SAFETY: the word lies in the heap's simulated memory; the test
    // damages it on purpose and restores it.
    let tag = unsafe { b.as_ptr().byte_sub(2 * W).cast::<usize>() };
    // SAFETY: as above.
    let saved = unsafe { tag.read() };
    // SAFETY: as above.
    unsafe { tag.write(saved + 8) };
    assert_eq!(h.verify().unwrap_err().invariant, 2);
    // SAFETY: as above.
    unsafe { tag.write(saved) };
    check(&h);
    let map = h.smallmap;
    h.smallmap ^= 1 << 3;
    assert_eq!(h.verify().unwrap_err().invariant, 5);
    h.smallmap = map;
    check(&h);
}

/// A forged link written into a freed block (a plain pointer, as a
/// use-after-free would leave) is caught when the block is reused.
#[cfg(feature = "hardened")]
#[test]
fn hardened_forged_link_fails_closed() {
    let (mut h, _) = new_heap(4);
    let a = h.alloc(lay(40)).unwrap();
    let b = h.alloc(lay(40)).unwrap();
    let _guard = h.alloc(lay(40)).unwrap();
    free(&mut h, a, lay(40));
    check(&h);
    // Use after free: overwrite `a`'s forward link with a plain pointer.
    // SAFETY: deliberate misuse of freed memory the heap still owns.
    unsafe { a.as_ptr().cast::<*mut u8>().write(b.as_ptr()) };
    assert!(h.verify().is_err(), "verify sees the forged link");
    assert_eq!(
        h.alloc(lay(40)),
        None,
        "the bin with the forged link is not served"
    );
    assert!(h.is_failed());
    assert!(matches!(h.verify(), Err(v) if v.invariant == 11));
}

/// A write into a freed block is caught when the block is reused.
#[cfg(feature = "hardened")]
#[test]
fn hardened_write_after_free_fails_closed() {
    let (mut h, _) = new_heap(4);
    let a = h.alloc(lay(200)).unwrap();
    let guard = h.alloc(lay(40)).unwrap();
    free(&mut h, a, lay(200));
    check(&h);
    // SAFETY: deliberate misuse of freed memory the heap still owns.
    unsafe { a.as_ptr().add(150).write(7) };
    assert!(matches!(h.verify(), Err(v) if v.invariant == 13));
    assert_eq!(h.alloc(lay(200)), None);
    assert!(h.is_failed());
    // SAFETY: `guard` is live; the heap refuses every call now.
    let e = unsafe { h.dealloc(guard, lay(40)) };
    assert_eq!(e, Err(HeapError::FailedClosed));
}

/// Freed memory holds the poison and links are stored masked.
#[cfg(feature = "hardened")]
#[test]
fn hardened_free_chunks_are_poisoned_and_links_masked() {
    let (mut h, _) = new_heap(4);
    let a = h.alloc(lay(100)).unwrap();
    let _guard = h.alloc(lay(40)).unwrap();
    let b = h.alloc(lay(100)).unwrap();
    let _guard2 = h.alloc(lay(40)).unwrap();
    free(&mut h, a, lay(100));
    free(&mut h, b, lay(100));
    check(&h);
    // SAFETY: the heap owns the freed blocks; reading them is fine.
    let (fd_word, tail) = unsafe { (a.as_ptr().cast::<usize>().read(), a.as_ptr().add(60).read()) };
    assert_eq!(tail, crate::block::POISON);
    // `a` was binned second... or first: either way its stored link is not
    // the plain address of `b`'s chunk nor null.
    assert_ne!(fd_word, 0);
    assert_ne!(fd_word, b.as_ptr() as usize - crate::block::MEM_OFFSET);
}

/// Fast lists (I14): a freed small chunk is kept unmerged on its exact-size
/// list and handed out again by the next request of its size, newest first.
#[cfg(feature = "fast-lists")]
#[test]
fn fast_list_hands_a_freed_small_chunk_back_unmerged() {
    let (mut h, _) = new_heap(4);
    let l = lay(40);
    let a = h.alloc(l).unwrap();
    let b = h.alloc(l).unwrap();
    let _guard = h.alloc(l).unwrap();
    let before = check(&h);
    free(&mut h, a, l);
    free(&mut h, b, l);
    // Adjacent, yet not merged: two more free blocks, no bin touched.
    let s = check(&h);
    assert_eq!(s.free_blocks, before.free_blocks + 2);
    assert_eq!(s.live_blocks, before.live_blocks - 2);
    assert_eq!((h.smallmap, h.treemap), (0, 0));
    assert!(h.has_fast);
    assert_eq!(h.alloc(l), Some(b));
    assert_eq!(h.alloc(l), Some(a));
    check(&h);
}

#[cfg(feature = "fast-lists")]
#[test]
fn fast_chunk_freed_twice_or_reallocated_is_caught_and_fails_closed() {
    let (mut h, _) = new_heap(4);
    let l = lay(64);
    let a = h.alloc(l).unwrap();
    let _guard = h.alloc(l).unwrap();
    free(&mut h, a, l);
    // SAFETY: a deliberate double free, which the heap must catch.
    let e = unsafe { h.dealloc(a, l) };
    assert!(matches!(e, Err(HeapError::DoubleFree { .. })), "{e:?}");
    assert!(h.is_failed());
    assert_eq!(h.alloc(l), None);

    let (mut h, _) = new_heap(4);
    let a = h.alloc(l).unwrap();
    let _guard = h.alloc(l).unwrap();
    free(&mut h, a, l);
    // SAFETY: a deliberate realloc of a freed block, which the heap must
    // refuse.
    assert_eq!(unsafe { h.realloc(a, l, 200) }, None);
    assert!(h.is_failed());
}

/// The fast chunks merge back (with each other and the top) before a large
/// request is carved from the top.
#[cfg(feature = "fast-lists")]
#[test]
fn fast_chunks_merge_back_before_a_large_block_takes_the_top() {
    let (mut h, _) = new_heap(4);
    let l = lay(100);
    let blocks: Vec<_> = (0..3).map(|_| h.alloc(l).unwrap()).collect();
    for &p in &blocks {
        free(&mut h, p, l);
    }
    check(&h);
    let big = h.alloc(lay(1000)).unwrap();
    assert_eq!(big, blocks[0], "the merged fast chunks and top serve it");
    assert!(!h.has_fast && h.fast.iter().all(|f| f.is_null()));
    check(&h);
}

/// Memory held on the fast lists is used before the heap grows: a heap
/// that cannot grow still serves a block only the merged chunks can hold.
#[cfg(feature = "fast-lists")]
#[test]
fn fast_chunks_merge_back_before_the_heap_grows() {
    let (mut h, mem) = new_heap(1);
    let l = lay(120);
    let mut blocks = Vec::new();
    while let Some(p) = h.alloc(l) {
        blocks.push(p);
    }
    assert_eq!(mem.grows(), 1);
    for &p in &blocks {
        free(&mut h, p, l);
    }
    check(&h);
    let want = blocks.len() * crate::block::pad_request(120) / 2;
    assert!(h.alloc(lay(want)).is_some());
    assert_eq!(mem.grows(), 1);
    check(&h);
}

#[cfg(feature = "fast-lists")]
#[test]
fn verify_reports_a_broken_fast_list() {
    let (mut h, _) = new_heap(4);
    let l = lay(40);
    let a = h.alloc(l).unwrap();
    let _guard = h.alloc(l).unwrap();
    free(&mut h, a, l);
    check(&h);
    let i = crate::block::pad_request(40) / 8;
    h.fast[i] = core::ptr::null_mut();
    assert_eq!(h.verify().unwrap_err().invariant, 14);
    h.fast[i] = a.as_ptr().wrapping_byte_sub(2 * W);
    check(&h);
    h.has_fast = false;
    assert_eq!(h.verify().unwrap_err().invariant, 14);
}

/// A small request that no list, bin or dv serves takes the merged fast
/// chunks rather than splitting a large free chunk.
#[cfg(feature = "fast-lists")]
#[test]
fn fast_chunks_merge_back_before_a_small_request_splits_a_tree_chunk() {
    let (mut h, _) = new_heap(4);
    let small = lay(40);
    let fast: Vec<_> = (0..3).map(|_| h.alloc(small).unwrap()).collect();
    let _guard = h.alloc(lay(8)).unwrap();
    let big = h.alloc(lay(1000)).unwrap();
    let _guard2 = h.alloc(lay(8)).unwrap();
    free(&mut h, big, lay(1000));
    for &p in &fast {
        free(&mut h, p, small);
    }
    assert!(h.has_fast && h.treemap != 0);
    check(&h);
    let p = h.alloc(lay(100)).unwrap();
    assert_eq!(p, fast[0], "served from the merged fast chunks");
    assert!(h.treemap != 0, "the large free chunk is left whole");
    check(&h);
}
