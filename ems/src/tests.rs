//! Behaviour tests of the three front ends over the shared core.

use core::alloc::Layout;
use core::ptr::NonNull;
use std::vec;
use std::vec::Vec;

use linmem_memory::{HeapError, MemorySource, PAGE_SIZE, RawHeap, SimMemory};

use crate::guest::GuestHeap;
use crate::{EmsPool, Heap, PoolError};

/// A deterministic xorshift generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An 8-aligned heap buffer of `len` bytes.
fn buffer(len: usize) -> Vec<u64> {
    vec![0u64; len / 8]
}

fn base_of(buf: &mut [u64]) -> NonNull<u8> {
    NonNull::new(buf.as_mut_ptr().cast::<u8>()).unwrap()
}

fn lay(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

fn sim_heap(pages: usize) -> (Heap<SimMemory>, SimMemory) {
    let sim = SimMemory::new(0, pages);
    (Heap::new(sim.clone()), sim)
}

/// Fills a block with a pattern derived from `tag`.
fn fill(p: NonNull<u8>, len: usize, tag: u8) {
    for i in 0..len {
        // SAFETY: test: `p` is a live block of at least `len` bytes.
        unsafe { p.as_ptr().add(i).write(tag.wrapping_add(i as u8)) };
    }
}

fn check_fill(p: NonNull<u8>, len: usize, tag: u8) {
    for i in 0..len {
        // SAFETY: test: `p` is a live block of at least `len` bytes.
        let v = unsafe { p.as_ptr().add(i).read() };
        assert_eq!(v, tag.wrapping_add(i as u8), "block content changed at {i}");
    }
}

const fn n(normal: usize, miri: usize) -> usize {
    if cfg!(miri) { miri } else { normal }
}

#[test]
fn alloc_free_round_trip_leaves_one_free_block() {
    let (mut h, _sim) = sim_heap(4);
    let ps: Vec<_> = (1..40).map(|i| h.alloc(lay(i * 13)).unwrap()).collect();
    h.verify().unwrap();
    for p in ps {
        // SAFETY: test: live block.
        unsafe { h.dealloc(p, lay(1)).unwrap() };
    }
    let st = h.ems_stats().unwrap();
    assert_eq!(st.used_blocks, 0);
    assert_eq!(st.free_blocks, 1);
    assert_eq!(st.free, st.total);
}

#[test]
fn small_requests_reuse_their_exact_size_list() {
    let (mut h, _sim) = sim_heap(2);
    let mut keep = Vec::new();
    for size in (8..240).step_by(8) {
        let a = h.alloc(lay(size)).unwrap();
        keep.push(h.alloc(lay(8)).unwrap());
        // SAFETY: test: live block.
        unsafe { h.dealloc(a, lay(size)).unwrap() };
        let b = h.alloc(lay(size)).unwrap();
        assert_eq!(a, b, "a freed small block is reused for the same size");
        keep.push(b);
    }
    let st = h.ems_stats().unwrap();
    assert_eq!(st.small_free_blocks, 0);
    h.verify().unwrap();
}

#[test]
fn free_coalesces_with_next_previous_and_both_neighbours() {
    let (mut h, _sim) = sim_heap(2);
    let ps: Vec<_> = (0..7).map(|_| h.alloc(lay(100)).unwrap()).collect();
    let free_blocks = |h: &Heap<SimMemory>| h.ems_stats().unwrap().free_blocks;
    let base = free_blocks(&h); // the tail
    let free = |h: &mut Heap<SimMemory>, i: usize| {
        // SAFETY: test: live blocks, each freed once.
        unsafe { h.dealloc(ps[i], lay(100)).unwrap() };
        free_blocks(h)
    };
    assert_eq!(free(&mut h, 1), base + 1);
    assert_eq!(free(&mut h, 2), base + 1, "merges with the previous block");
    assert_eq!(free(&mut h, 4), base + 2);
    assert_eq!(free(&mut h, 3), base + 1, "merges with both neighbours");
    assert_eq!(free(&mut h, 6), base + 1, "merges with the tail");
    assert_eq!(free(&mut h, 5), base, "joins [1..4] and the tail");
    assert_eq!(free(&mut h, 0), 1);
    h.verify().unwrap();
}

/// Frees separated large blocks in the given size order and checks the
/// tree height bound through verify().
fn tree_depth_for_order(sizes: &[usize]) {
    let (mut h, _sim) = sim_heap(n(256, 16));
    let mut blocks = Vec::new();
    for &s in sizes {
        blocks.push((h.alloc(lay(s)).unwrap(), s));
        h.alloc(lay(8)).unwrap(); // a live separator: no coalescing
    }
    for (p, s) in blocks {
        // SAFETY: test: live block.
        unsafe { h.dealloc(p, lay(s)).unwrap() };
    }
    let st = h.ems_stats().unwrap();
    let nodes = st.tree_nodes as f64;
    assert!(st.free_blocks >= sizes.len());
    assert!(st.tree_nodes >= sizes.len().min(400) / 2, "a sizeable tree");
    let bound = 1.45 * nodes.log2() + 2.0;
    assert!(
        (st.tree_height as f64) <= bound,
        "height {} > {bound} for {} nodes",
        st.tree_height,
        st.tree_nodes
    );
}

#[test]
fn tree_stays_balanced_when_freed_in_increasing_size_order() {
    let sizes: Vec<usize> = (0..n(2000, 60)).map(|i| 256 + i * 8).collect();
    tree_depth_for_order(&sizes);
}

#[test]
fn one_size_tree_stays_balanced_when_freed_in_increasing_size_order() {
    // All in the tree of [16 KiB, 20 KiB): the adversarial order for one tree.
    let sizes: Vec<usize> = (0..n(480, 20)).map(|i| 16 * 1024 + i * 8).collect();
    tree_depth_for_order(&sizes);
    let (mut h, _sim) = sim_heap(n(256, 16));
    let mut blocks = Vec::new();
    for &s in &sizes {
        blocks.push((h.alloc(lay(s)).unwrap(), s));
        h.alloc(lay(8)).unwrap();
    }
    for (p, s) in blocks {
        // SAFETY: test: live block.
        unsafe { h.dealloc(p, lay(s)).unwrap() };
    }
    let st = h.ems_stats().unwrap();
    assert!(st.tree_nodes >= sizes.len());
    // AVL: at most 1.45 * log2(n + 2) high, for n = 480: 12; unbalanced: 480.
    let bound = 1.45 * (st.tree_nodes as f64 + 2.0).log2();
    assert!(
        (st.tree_height as f64) <= bound,
        "height {}",
        st.tree_height
    );
}

#[test]
fn tree_stays_balanced_when_freed_in_decreasing_size_order() {
    let sizes: Vec<usize> = (0..n(2000, 60)).rev().map(|i| 256 + i * 8).collect();
    tree_depth_for_order(&sizes);
}

#[test]
fn tree_stays_balanced_for_random_sizes() {
    let mut r = Rng(0x1234_5678);
    let sizes: Vec<usize> = (0..n(2000, 60))
        .map(|_| 256 + r.below(n(4000, 600) as u64) as usize)
        .collect();
    tree_depth_for_order(&sizes);
}

#[test]
fn best_fit_takes_the_tightest_large_block() {
    let (mut h, _sim) = sim_heap(2);
    let a = h.alloc(lay(1000)).unwrap();
    h.alloc(lay(8)).unwrap();
    let b = h.alloc(lay(600)).unwrap();
    h.alloc(lay(8)).unwrap();
    let c = h.alloc(lay(800)).unwrap();
    h.alloc(lay(8)).unwrap();
    // SAFETY: test: live blocks.
    unsafe {
        h.dealloc(a, lay(1000)).unwrap();
        h.dealloc(b, lay(600)).unwrap();
        h.dealloc(c, lay(800)).unwrap();
    }
    assert_eq!(h.alloc(lay(700)).unwrap(), c);
    assert_eq!(h.alloc(lay(500)).unwrap(), b);
    h.verify().unwrap();
}

#[test]
fn migrate_after_copying_the_pool_keeps_contents_and_keeps_working() {
    let len = 64 * 1024;
    let mut old = buffer(len);
    let ob = base_of(&mut old);
    // SAFETY: test: the buffer outlives the heap and is used by nothing else.
    let mut h = unsafe { Heap::with_pool(ob, len) }.unwrap();
    let mut live = Vec::new();
    for i in 0..50usize {
        let size = 10 + i * 17;
        let p = h.alloc(lay(size)).unwrap();
        fill(p, size, i as u8);
        live.push((p.as_ptr().addr() - ob.as_ptr().addr(), size, i as u8));
    }
    for (k, &(off, size, _)) in live.iter().enumerate() {
        if k % 3 == 0 {
            // SAFETY: test: inside the old buffer.
            let p = unsafe { ob.add(off) };
            // SAFETY: test: live block.
            unsafe { h.dealloc(p, lay(size)).unwrap() };
        }
    }
    live = live
        .into_iter()
        .enumerate()
        .filter(|(k, _)| k % 3 != 0)
        .map(|(_, v)| v)
        .collect();
    let mut new = old.clone();
    old.fill(0xdead_beef_dead_beef);
    let nb = base_of(&mut new);
    // SAFETY: test: the pool bytes were copied to `new`, which outlives the heap.
    unsafe { h.migrate(nb).unwrap() };
    h.verify().unwrap();
    for &(off, size, tag) in &live {
        // SAFETY: test: inside the new buffer.
        check_fill(unsafe { nb.add(off) }, size, tag);
    }
    for i in 0..40usize {
        let p = h.alloc(lay(30 + i)).unwrap();
        assert!(p.as_ptr().addr() >= nb.as_ptr().addr());
        assert!(p.as_ptr().addr() < nb.as_ptr().addr() + len);
        fill(p, 30 + i, 7);
    }
    for &(off, size, tag) in &live {
        // SAFETY: test: live blocks of the new buffer.
        let p = unsafe { nb.add(off) };
        check_fill(p, size, tag);
        // SAFETY: test: live block.
        unsafe { h.dealloc(p, lay(size)).unwrap() };
    }
    h.verify().unwrap();
}

#[test]
fn in_pool_heap_migrates_with_its_bookkeeping() {
    let len = 32 * 1024;
    let mut old = buffer(len);
    let ob = base_of(&mut old);
    // SAFETY: test: the buffer outlives the pool and is used by nothing else.
    let mut pool = unsafe { EmsPool::init_in_pool(ob, len) }.unwrap();
    let a = pool.alloc(100).unwrap();
    fill(a, 100, 3);
    let off = a.as_ptr().addr() - ob.as_ptr().addr();
    let mut new = old.clone();
    old.fill(0);
    let nb = base_of(&mut new);
    // SAFETY: test: the pool was copied to `new`.
    unsafe { pool.migrate(nb).unwrap() };
    pool.verify().unwrap();
    // SAFETY: test: inside the new pool.
    let a = unsafe { nb.add(off) };
    check_fill(a, 100, 3);
    // SAFETY: test: live block.
    let a = unsafe { pool.realloc(a, 5000) }.unwrap();
    check_fill(a, 100, 3);
    // SAFETY: test: live block.
    unsafe { pool.free(a).unwrap() };
    let st = pool.ems_stats().unwrap();
    assert_eq!(st.used_blocks, 0);
    assert_eq!(st.free_blocks, 1);
}

#[test]
fn both_creation_modes_serve_the_same_requests() {
    let len = 16 * 1024;
    let mut b1 = buffer(len);
    let mut b2 = buffer(len);
    // SAFETY: test: buffers outlive the heaps.
    let mut outside = unsafe { Heap::with_pool(base_of(&mut b1), len) }.unwrap();
    // SAFETY: test: as above.
    let mut inside = unsafe { EmsPool::init_in_pool(base_of(&mut b2), len) }.unwrap();
    for size in [1, 8, 100, 255, 256, 1000, 4000] {
        let p = outside.alloc(lay(size)).unwrap();
        let q = inside.alloc(size).unwrap();
        fill(p, size, 1);
        fill(q, size, 2);
    }
    outside.verify().unwrap();
    inside.verify().unwrap();
    let so = outside.ems_stats().unwrap();
    let si = inside.ems_stats().unwrap();
    assert_eq!(so.used, si.used);
    assert!(si.total < so.total, "in-pool bookkeeping takes pool space");
    let mut b3 = buffer(2048);
    let p3 = base_of(&mut b3);
    // SAFETY: test: pool too small or misaligned, refused untouched.
    unsafe {
        assert_eq!(
            EmsPool::init_in_pool(p3, 64).unwrap_err(),
            PoolError::TooSmall
        );
        assert_eq!(
            Heap::with_pool(p3.add(4), 1024).err(),
            Some(PoolError::Misaligned)
        );
    }
}

#[test]
fn extend_merges_new_space_with_a_free_tail() {
    let len = 8 * 1024;
    let mut buf = buffer(4 * len);
    // SAFETY: test: the buffer outlives the heap.
    let mut h = unsafe { Heap::with_pool(base_of(&mut buf), len) }.unwrap();
    let a = h.alloc(lay(1000)).unwrap();
    let before = h.ems_stats().unwrap();
    // SAFETY: test: the next `len` bytes of the buffer are the heap's now.
    unsafe { h.extend(len).unwrap() };
    let after = h.ems_stats().unwrap();
    assert_eq!(
        after.free_blocks, before.free_blocks,
        "merged with the tail"
    );
    assert_eq!(after.free, before.free + len);
    assert!(h.alloc(lay(len + 1000)).is_some());
    // Fill up, then extend with no free tail: a new free block appears.
    while h.alloc(lay(64)).is_some() {}
    // SAFETY: test: as above.
    unsafe { h.extend(len).unwrap() };
    h.verify().unwrap();
    assert!(h.alloc(lay(len - 64)).is_some());
    // SAFETY: test: live block.
    unsafe { h.dealloc(a, lay(1000)).unwrap() };
    h.verify().unwrap();

    let mut buf2 = buffer(2 * len);
    // SAFETY: test: the buffer outlives the pool.
    let mut pool = unsafe { EmsPool::init_in_pool(base_of(&mut buf2), len) }.unwrap();
    assert!(pool.alloc(len).is_none());
    // SAFETY: test: the next `len` bytes are the pool's now.
    unsafe { pool.extend(len).unwrap() };
    assert!(pool.alloc(len).is_some());
    pool.verify().unwrap();
}

#[test]
fn aligned_allocations_up_to_64k_are_aligned_and_free_cleanly() {
    let (mut h, _sim) = sim_heap(n(64, 16));
    let mut live = Vec::new();
    let mut align = 8;
    while align <= PAGE_SIZE {
        for size in [1, 24, 300] {
            let l = Layout::from_size_align(size, align).unwrap();
            let p = h.alloc(l).unwrap();
            assert!(p.as_ptr().addr().is_multiple_of(align), "align {align}");
            fill(p, size, 9);
            live.push((p, l));
            h.verify().unwrap();
        }
        align *= 2;
    }
    for (p, l) in live {
        check_fill(p, l.size(), 9);
        // SAFETY: test: live block.
        unsafe { h.dealloc(p, l).unwrap() };
    }
    let st = h.ems_stats().unwrap();
    assert_eq!(st.used_blocks, 0);
}

#[test]
fn realloc_of_an_aligned_block_keeps_its_alignment() {
    let (mut h, _sim) = sim_heap(8);
    let l = Layout::from_size_align(100, 4096).unwrap();
    let p = h.alloc(l).unwrap();
    fill(p, 100, 4);
    let blocker = h.alloc(lay(8)).unwrap();
    // SAFETY: test: live block; must move since the next block is live.
    let q = unsafe { h.realloc(p, l, 20000) }.unwrap();
    assert!(q.as_ptr().addr().is_multiple_of(4096));
    check_fill(q, 100, 4);
    // SAFETY: test: live block, shrinking in place.
    let r = unsafe { h.realloc(q, Layout::from_size_align(20000, 4096).unwrap(), 50) }.unwrap();
    assert_eq!(q, r);
    // SAFETY: test: live block.
    unsafe { h.dealloc(blocker, lay(8)).unwrap() };
    h.verify().unwrap();
}

#[test]
fn realloc_grows_in_place_into_a_free_next_block_and_shrinks_in_place() {
    let (mut h, _sim) = sim_heap(2);
    let a = h.alloc(lay(100)).unwrap();
    let b = h.alloc(lay(500)).unwrap();
    let _c = h.alloc(lay(8)).unwrap();
    fill(a, 100, 5);
    // SAFETY: test: live blocks.
    unsafe {
        h.dealloc(b, lay(500)).unwrap();
        assert_eq!(h.realloc(a, lay(100), 400), Some(a));
        check_fill(a, 100, 5);
        h.verify().unwrap();
        assert_eq!(h.realloc(a, lay(400), 40), Some(a));
        check_fill(a, 40, 5);
        h.verify().unwrap();
        // The shrunk tail merged with the rest of b's space: all of it fits again.
        assert_eq!(h.realloc(a, lay(40), 590), Some(a));
    }
    h.verify().unwrap();
}

#[test]
fn double_free_fails_closed_and_stays_closed() {
    let (mut h, _sim) = sim_heap(2);
    let a = h.alloc(lay(64)).unwrap();
    let b = h.alloc(lay(64)).unwrap();
    // SAFETY: test: misuse is detected, never undefined here (pool memory).
    unsafe {
        h.dealloc(a, lay(64)).unwrap();
        assert!(matches!(
            h.dealloc(a, lay(64)),
            Err(HeapError::DoubleFree { .. })
        ));
        assert!(h.is_corrupted());
        assert_eq!(h.dealloc(b, lay(64)), Err(HeapError::FailedClosed));
        assert!(h.realloc(b, lay(64), 10).is_none());
    }
    assert!(h.alloc(lay(8)).is_none());
    assert!(h.verify().is_err());
}

#[test]
fn double_free_of_a_block_merged_into_its_free_neighbours_is_still_caught() {
    for (size, align) in [(64, 8), (600, 8), (100, 4096)] {
        let (mut h, _sim) = sim_heap(4);
        let a = h.alloc(lay(300)).unwrap();
        let layout = Layout::from_size_align(size, align).unwrap();
        let b = h.alloc(layout).unwrap();
        let c = h.alloc(lay(300)).unwrap();
        // SAFETY: test: misuse is detected, never undefined here (pool memory).
        unsafe {
            h.dealloc(a, lay(300)).unwrap();
            h.dealloc(c, lay(300)).unwrap();
            h.dealloc(b, layout).unwrap();
            h.verify().unwrap();
            assert!(matches!(
                h.dealloc(b, layout),
                Err(HeapError::DoubleFree { .. })
            ));
        }
        assert!(h.is_corrupted());
    }
}

#[test]
fn foreign_pointer_fails_closed() {
    let (mut h, _sim) = sim_heap(2);
    let a = h.alloc(lay(64)).unwrap();
    let mut other = [0u64; 4];
    // SAFETY: test: the pointer is detected as foreign.
    let r = unsafe { h.dealloc(NonNull::from(&mut other).cast(), lay(8)) };
    assert!(matches!(r, Err(HeapError::ForeignPointer { .. })));
    assert!(h.is_corrupted());
    // SAFETY: test: refused.
    let r = unsafe { h.dealloc(a, lay(64)) };
    assert_eq!(r, Err(HeapError::FailedClosed));
    assert!(h.alloc(lay(8)).is_none());
}

#[test]
fn misaligned_interior_pointer_fails_closed() {
    let (mut h, _sim) = sim_heap(2);
    let a = h.alloc(lay(64)).unwrap();
    // SAFETY: test: an interior pointer inside the block, detected.
    let r = unsafe { h.dealloc(a.add(4), Layout::from_size_align(1, 1).unwrap()) };
    assert!(matches!(r, Err(HeapError::ForeignPointer { .. })));
    assert!(h.is_corrupted());
}

#[test]
fn overwritten_header_is_caught_by_free_and_realloc() {
    for garbage in [0u32, 0xffff_ffff, 0x0000_1001, 0x7fff_fff9] {
        let (mut h, _sim) = sim_heap(2);
        let a = h.alloc(lay(64)).unwrap();
        let _b = h.alloc(lay(64)).unwrap();
        // SAFETY: test: scribble over the header as buggy guest code would.
        unsafe { a.as_ptr().sub(4).cast::<u32>().write_unaligned(garbage) };
        // SAFETY: test: the damage is detected.
        let r = unsafe { h.dealloc(a, lay(64)) };
        assert!(r.is_err(), "garbage {garbage:#x} not caught");
        assert!(h.is_corrupted());
        assert!(h.alloc(lay(8)).is_none());
    }
    let (mut h, _sim) = sim_heap(2);
    let a = h.alloc(lay(64)).unwrap();
    let b = h.alloc(lay(64)).unwrap();
    // SAFETY: test: the next block's prev-in-use bit is cleared by a "guest".
    unsafe {
        let hb = b.as_ptr().sub(4).cast::<u32>();
        hb.write_unaligned(hb.read_unaligned() & !4);
    }
    // SAFETY: test: detected.
    assert!(unsafe { h.realloc(a, lay(64), 2000) }.is_none());
    assert!(h.is_corrupted());
}

#[test]
fn sizes_near_isize_max_return_none_and_the_heap_stays_usable() {
    let (mut h, _sim) = sim_heap(2);
    assert!(h.alloc(lay(isize::MAX as usize - 7)).is_none());
    assert!(h.alloc(lay(u32::MAX as usize)).is_none());
    assert!(
        h.alloc(Layout::from_size_align(1 << 20, 1 << 20).unwrap())
            .is_none()
    );
    let a = h.alloc(lay(10)).unwrap();
    // SAFETY: test: live block, absurd new size.
    assert!(unsafe { h.realloc(a, lay(10), isize::MAX as usize - 100) }.is_none());
    h.verify().unwrap();
    assert!(!h.is_corrupted());
}

#[test]
fn failed_grow_returns_none_and_the_heap_stays_usable() {
    let (mut h, sim) = sim_heap(4);
    let a = h.alloc(lay(1000)).unwrap();
    sim.fail_next_grows(1);
    assert!(h.alloc(lay(100_000)).is_none());
    let b = h.alloc(lay(100_000)).unwrap();
    fill(b, 100_000, 1);
    assert!(h.alloc(lay(10 * PAGE_SIZE)).is_none(), "beyond the maximum");
    // SAFETY: test: live blocks.
    unsafe {
        h.dealloc(a, lay(1000)).unwrap();
        h.dealloc(b, lay(100_000)).unwrap();
    }
    h.verify().unwrap();
}

#[test]
fn contiguous_growth_extends_the_pool_and_foreign_growth_becomes_a_gap() {
    let (mut h, sim) = sim_heap(16);
    let a = h.alloc(lay(PAGE_SIZE / 2)).unwrap();
    let b = h.alloc(lay(PAGE_SIZE)).unwrap(); // contiguous growth
    assert_eq!(h.ems_stats().unwrap().gap, 0);
    assert!(sim.foreign_grow(2));
    let c = h.alloc(lay(2 * PAGE_SIZE)).unwrap(); // after a foreign gap
    let st = h.ems_stats().unwrap();
    assert!(st.gap >= 2 * PAGE_SIZE);
    assert!(sim.contains(c.as_ptr().addr(), 2 * PAGE_SIZE));
    fill(c, 2 * PAGE_SIZE, 3);
    // SAFETY: test: live blocks.
    unsafe {
        h.dealloc(b, lay(PAGE_SIZE)).unwrap();
        h.dealloc(a, lay(PAGE_SIZE / 2)).unwrap();
        h.dealloc(c, lay(2 * PAGE_SIZE)).unwrap();
    }
    let st = h.ems_stats().unwrap();
    assert_eq!(st.used_blocks, 0);
    assert_eq!(st.free_blocks, 2, "one free block on each side of the gap");
    let s = h.stats();
    assert_eq!(s.footprint, sim.heap_pages() * PAGE_SIZE);
}

#[test]
fn stats_and_histograms_count_blocks_by_power_of_two() {
    let (mut h, _sim) = sim_heap(4);
    let a = h.alloc(lay(12)).unwrap(); // 16-byte block: bucket 4
    let _b = h.alloc(lay(20)).unwrap(); // 24: bucket 4
    let c = h.alloc(lay(1000)).unwrap(); // 1008: bucket 9
    let _d = h.alloc(lay(8)).unwrap();
    // SAFETY: test: live block.
    unsafe { h.dealloc(c, lay(1000)).unwrap() };
    let st = h.ems_stats().unwrap();
    assert_eq!(st.used_hist[4], 3);
    assert_eq!(st.free_hist[9], 1);
    assert_eq!(st.used, 16 + 24 + 16);
    assert_eq!(st.high_water, 16 + 24 + 1008 + 16);
    assert_eq!(st.used + st.free, st.total);
    let hs = h.stats();
    assert_eq!(hs.in_use, st.used);
    assert_eq!(hs.live_blocks, 3);
    assert_eq!(hs.free, st.free);
    assert_eq!(hs.free_blocks, st.free_blocks);
    assert!(hs.largest_free >= 1008);
    assert_eq!(h.verify().unwrap(), hs);
    // SAFETY: test: live block.
    unsafe { h.dealloc(a, lay(12)).unwrap() };
}

#[test]
fn randomized_stress_keeps_invariants_and_contents() {
    let (mut h, _sim) = sim_heap(n(256, 32));
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut live: Vec<(NonNull<u8>, Layout, u8)> = Vec::new();
    for step in 0..n(20_000, 600) {
        let op = r.below(10);
        if op < 5 || live.is_empty() {
            let size = match r.below(4) {
                0 => 1 + r.below(24),
                1 => 1 + r.below(256),
                2 => 1 + r.below(4096),
                _ => 1 + r.below(n(40_000, 3000) as u64),
            } as usize;
            let align = if r.below(8) == 0 { 1 << r.below(13) } else { 8 };
            let l = Layout::from_size_align(size, align).unwrap();
            if let Some(p) = h.alloc(l) {
                assert!(p.as_ptr().addr().is_multiple_of(align));
                let tag = r.next() as u8;
                fill(p, size, tag);
                live.push((p, l, tag));
            }
        } else if op < 8 {
            let i = r.below(live.len() as u64) as usize;
            let (p, l, tag) = live.swap_remove(i);
            check_fill(p, l.size(), tag);
            // SAFETY: test: live block.
            unsafe { h.dealloc(p, l).unwrap() };
        } else {
            let i = r.below(live.len() as u64) as usize;
            let (p, l, tag) = live[i];
            let new_size = 1 + r.below(n(8000, 1000) as u64) as usize;
            // SAFETY: test: live block.
            if let Some(q) = unsafe { h.realloc(p, l, new_size) } {
                check_fill(q, l.size().min(new_size), tag);
                assert!(q.as_ptr().addr().is_multiple_of(l.align()));
                fill(q, new_size, tag);
                live[i] = (
                    q,
                    Layout::from_size_align(new_size, l.align()).unwrap(),
                    tag,
                );
            }
        }
        if step % n(250, 50) == 0 {
            h.verify().unwrap();
        }
    }
    for (p, l, tag) in live {
        check_fill(p, l.size(), tag);
        // SAFETY: test: live block.
        unsafe { h.dealloc(p, l).unwrap() };
    }
    let st = h.ems_stats().unwrap();
    assert_eq!(st.used_blocks, 0);
    assert!(!h.is_corrupted());
}

#[test]
fn fixed_region_source_heap_never_grows_past_its_region() {
    let mut buf = buffer(8192);
    // SAFETY: test: the buffer outlives the heap.
    let src = unsafe { linmem_memory::FixedRegion::from_raw(base_of(&mut buf), 8192) };
    let mut h = Heap::new(src);
    let a = h.alloc(lay(4000)).unwrap();
    assert!(h.alloc(lay(8000)).is_none());
    // SAFETY: test: live block.
    unsafe { h.dealloc(a, lay(4000)).unwrap() };
    h.verify().unwrap();
    let mut empty = linmem_memory::FixedRegion::empty();
    assert!(empty.grow(1).is_none());
}

// ---- the guest API ----

#[test]
fn guest_heap_allocates_by_guest_address_and_survives_a_moved_slice() {
    let mut mem = vec![0u8; 64 * 1024];
    let mut g = GuestHeap::init(&mut mem, 4096, 16 * 1024).unwrap();
    let a = g.malloc(&mut mem, 100).unwrap();
    assert!((4096..4096 + 16 * 1024).contains(&a) && a.is_multiple_of(8));
    mem[a as usize..a as usize + 3].copy_from_slice(b"abc");
    let b = g.memalign(&mut mem, 64, 256).unwrap();
    assert_eq!(b % 256, 0);
    // The host's buffer moves (e.g. the engine reallocated it): offsets stay valid.
    let mut moved = mem.clone();
    drop(mem);
    let a = g.realloc(&mut moved, a, 3000).unwrap();
    assert_eq!(&moved[a as usize..a as usize + 3], b"abc");
    g.free(&mut moved, b).unwrap();
    g.free(&mut moved, a).unwrap();
    g.free(&mut moved, 0).unwrap();
    let st = g.stats(&moved).unwrap();
    assert_eq!(st.used_blocks, 0);
    assert_eq!(st.free_blocks, 1);
    assert!(g.calloc(&mut moved, 10).is_some());
    assert_eq!(g.usable_size(&mut moved, 4096 + 8), Some(12));
}

#[test]
fn guest_heap_extends_when_guest_memory_grows() {
    let mut mem = vec![0u8; 8 * 1024];
    let mut g = GuestHeap::init(&mut mem, 1024, 7 * 1024).unwrap();
    assert!(g.malloc(&mut mem, 10_000).is_none());
    mem.resize(32 * 1024, 0);
    g.extend(&mut mem, 31 * 1024).unwrap();
    let a = g.malloc(&mut mem, 10_000).unwrap();
    g.verify(&mem).unwrap();
    g.free(&mut mem, a).unwrap();
    assert_eq!(g.stats(&mem).unwrap().free_blocks, 1);
    assert_eq!(
        g.extend(&mut mem, 64 * 1024).unwrap_err(),
        PoolError::OutOfBounds
    );
    assert_eq!(g.pool_len(), 31 * 1024);
}

#[test]
fn guest_heap_skips_pages_the_guest_grew_itself() {
    // The pool ends at 8 KiB; the guest grows its memory to 12 KiB and fills
    // its new bytes; then the host grows to 32 KiB and pools only its part.
    let mut mem = vec![0u8; 8 * 1024];
    let mut g = GuestHeap::init(&mut mem, 1024, 7 * 1024).unwrap();
    let small = g.malloc(&mut mem, 3000).unwrap();
    mem.resize(12 * 1024, 0xEE);
    mem.resize(32 * 1024, 0);
    g.extend_from(&mut mem, 12 * 1024, 31 * 1024).unwrap();
    assert_eq!(g.pool_len(), 31 * 1024);
    g.verify(&mem).unwrap();
    let mut live = vec![small];
    while let Some(a) = g.malloc(&mut mem, 1000) {
        let a_end = a + 1000;
        assert!(
            a_end <= 8 * 1024 || a >= 12 * 1024,
            "{a:#x} in the guest's pages"
        );
        mem[a as usize..a_end as usize].fill(0x11);
        live.push(a);
    }
    assert!(live.len() > 15, "the host's pages were not pooled");
    assert!(mem[8 * 1024..12 * 1024].iter().all(|&b| b == 0xEE));
    g.verify(&mem).unwrap();
    for a in live {
        g.free(&mut mem, a).unwrap();
    }
    g.verify(&mem).unwrap();
    assert!(mem[8 * 1024..12 * 1024].iter().all(|&b| b == 0xEE));
    // The gap is never merged: the free space on both sides stays apart.
    assert_eq!(g.stats(&mem).unwrap().free_blocks, 2);
    // A start at or below the pool end is plain contiguous growth.
    mem.resize(40 * 1024, 0);
    g.extend_from(&mut mem, 0, 39 * 1024).unwrap();
    assert_eq!(g.stats(&mem).unwrap().free_blocks, 2);
    g.verify(&mem).unwrap();
}

#[test]
fn guest_heap_errors_name_the_guest_address_also_below_the_pool() {
    let mut mem = vec![0u8; 64 * 1024];
    let mut g = GuestHeap::init(&mut mem, 4096, 16 * 1024).unwrap();
    let a = g.malloc(&mut mem, 100).unwrap();
    assert_eq!(
        g.free(&mut mem, 0x100),
        Err(HeapError::ForeignPointer { addr: 0x100 })
    );
    assert!(g.is_corrupted());
    assert_eq!(g.free(&mut mem, a), Err(HeapError::FailedClosed));
}

#[test]
fn guest_heap_init_checks_its_arguments() {
    let mut mem = vec![0u8; 4096];
    assert_eq!(
        GuestHeap::init(&mut mem, 4, 1024).unwrap_err(),
        PoolError::Misaligned
    );
    assert_eq!(
        GuestHeap::init(&mut mem, 2048, 4096).unwrap_err(),
        PoolError::OutOfBounds
    );
    assert_eq!(
        GuestHeap::init(&mut mem, 0, 16).unwrap_err(),
        PoolError::TooSmall
    );
}

#[test]
fn guest_heap_refuses_a_slice_shorter_than_the_pool_without_failing_closed() {
    let mut mem = vec![0u8; 8192];
    let mut g = GuestHeap::init(&mut mem, 0, 8192).unwrap();
    let a = g.malloc(&mut mem, 10).unwrap();
    let mut short = vec![0u8; 100];
    assert!(g.malloc(&mut short, 10).is_none());
    assert!(g.free(&mut short, a).is_err());
    assert!(!g.is_corrupted());
    g.free(&mut mem, a).unwrap();
}

#[test]
fn guest_double_free_and_scribbled_header_fail_closed() {
    let mut mem = vec![0u8; 16 * 1024];
    let mut g = GuestHeap::init(&mut mem, 0, 16 * 1024).unwrap();
    let a = g.malloc(&mut mem, 40).unwrap();
    g.free(&mut mem, a).unwrap();
    assert!(matches!(
        g.free(&mut mem, a),
        Err(HeapError::DoubleFree { .. })
    ));
    assert!(g.is_corrupted());
    assert!(g.malloc(&mut mem, 8).is_none());
    assert_eq!(g.free(&mut mem, a), Err(HeapError::FailedClosed));
    assert_eq!(g.extend(&mut mem, 100), Err(PoolError::FailedClosed));

    let mut g = GuestHeap::init(&mut mem, 0, 16 * 1024).unwrap();
    let a = g.malloc(&mut mem, 40).unwrap();
    let b = g.malloc(&mut mem, 40).unwrap();
    // The guest writes past the end of `a` into `b`'s header.
    mem[a as usize..a as usize + 48].fill(0x41);
    assert!(matches!(
        g.free(&mut mem, b),
        Err(HeapError::Corrupted { .. })
    ));
    assert!(g.is_corrupted());
    assert!(g.realloc(&mut mem, a, 10).is_none());
    assert!(g.stats(&mem).is_err());
}

#[test]
fn guest_heap_never_panics_on_random_garbage_in_the_pool() {
    let mut r = Rng(0xfeed_beef);
    for round in 0..n(300, 8) {
        let mut mem = vec![0u8; 8192];
        let mut g = GuestHeap::init(&mut mem, 512, 4096).unwrap();
        let mut live: Vec<u32> = Vec::new();
        for _ in 0..20 {
            if let Some(a) = g.malloc(&mut mem, 1 + r.below(300) as u32) {
                live.push(a);
            }
        }
        for _ in 0..(r.below(3) + 1) {
            live.pop().map(|a| g.free(&mut mem, a));
        }
        // Scribble: random words, or a random run of bytes, inside the pool.
        for _ in 0..(1 + round % 8) {
            let at = 512 + r.below(4096 - 4) as usize;
            let v = (r.next() as u32).to_le_bytes();
            mem[at..at + 4].copy_from_slice(&v);
        }
        for _ in 0..60 {
            let pick = |r: &mut Rng, live: &[u32]| {
                if live.is_empty() || r.below(4) == 0 {
                    r.next() as u32
                } else {
                    live[r.below(live.len() as u64) as usize]
                }
            };
            match r.below(5) {
                0 => {
                    let _ = g.malloc(&mut mem, r.below(5000) as u32);
                }
                1 => {
                    let a = pick(&mut r, &live);
                    let _ = g.free(&mut mem, a);
                }
                2 => {
                    let a = pick(&mut r, &live);
                    let _ = g.realloc(&mut mem, a, r.below(2000) as u32);
                }
                3 => {
                    let _ = g.memalign(&mut mem, r.below(500) as u32, 1 << r.below(12));
                }
                _ => {
                    let _ = g.stats(&mem);
                    let _ = g.heap_stats(&mem);
                    let _ = g.extend(&mut mem, 4096 + r.below(4096) as u32);
                }
            }
        }
        if g.is_corrupted() {
            assert!(g.malloc(&mut mem, 8).is_none());
        }
    }
}

#[test]
fn in_pool_heap_with_overwritten_bookkeeping_fails_closed() {
    let len = 8192;
    let mut buf = buffer(len);
    let base = base_of(&mut buf);
    // SAFETY: test: the buffer outlives the pool.
    let mut pool = unsafe { EmsPool::init_in_pool(base, len) }.unwrap();
    let a = pool.alloc(10).unwrap();
    assert!(!pool.is_corrupted());
    // A stray write over the pool end field of the bookkeeping.
    // SAFETY: test: inside the buffer, no reference to it is live.
    unsafe { base.add(8).cast::<u32>().write(0xffff_0000) };
    assert!(pool.is_corrupted());
    assert!(pool.alloc(10).is_none());
    // SAFETY: test: refused.
    assert!(unsafe { pool.free(a) }.is_err());
    assert!(pool.verify().is_err());
}

#[test]
fn in_pool_heap_never_misbehaves_on_random_garbage_in_the_pool() {
    let mut r = Rng(0x0dd_ba11);
    let len = 4096;
    for round in 0..n(200, 6) {
        let mut buf = buffer(len);
        let base = base_of(&mut buf);
        // SAFETY: test: the buffer outlives the pool.
        let mut pool = unsafe { EmsPool::init_in_pool(base, len) }.unwrap();
        let mut live = Vec::new();
        for _ in 0..12 {
            if let Some(p) = pool.alloc(1 + r.below(200) as usize) {
                live.push(p);
            }
        }
        for _ in 0..(1 + round % 6) {
            let state = crate::heap::STATE_BYTES as usize;
            let at = state + r.below((len - state - 4) as u64) as usize;
            // SAFETY: test: inside the pool's blocks, no reference live.
            unsafe { base.add(at).cast::<u32>().write_unaligned(r.next() as u32) };
        }
        for _ in 0..40 {
            let p = if live.is_empty() || r.below(3) == 0 {
                // SAFETY: test: an address inside the pool.
                unsafe { base.add(r.below(len as u64) as usize) }
            } else {
                live[r.below(live.len() as u64) as usize]
            };
            match r.below(4) {
                0 => {
                    let _ = pool.alloc(r.below(3000) as usize);
                }
                1 => {
                    // SAFETY: test: any pointer into the pool is checked.
                    let _ = unsafe { pool.free(p) };
                }
                2 => {
                    // SAFETY: test: as above.
                    let _ = unsafe { pool.realloc(p, r.below(600) as usize) };
                }
                _ => {
                    let _ = pool.ems_stats();
                    let _ = pool.stats();
                }
            }
        }
    }
}

/// Writes `v` at byte `at` of a (freed) block through a raw pointer, as a
/// use-after-free or an attacker forging a link would.
#[cfg(feature = "hardened")]
fn scribble(p: NonNull<u8>, at: usize, v: u32) {
    // SAFETY: test: `p + at` lies in the pool, which stays allocated (the
    // block is free, not the memory); the heap holds no reference into it.
    unsafe { p.as_ptr().add(at).cast::<u32>().write_unaligned(v) };
}

/// The pool offset of the header of the block at payload `p`.
#[cfg(feature = "hardened")]
fn header_offset(h: &Heap<SimMemory>, p: NonNull<u8>) -> u32 {
    (p.as_ptr().addr() - h.pool_base().unwrap().as_ptr().addr() - 4) as u32
}

#[cfg(feature = "hardened")]
fn assert_failed_closed(h: &mut Heap<SimMemory>) {
    assert!(h.is_corrupted());
    assert!(h.verify().is_err());
    assert!(h.alloc(lay(8)).is_none());
    assert!(h.alloc(lay(4000)).is_none());
}

/// The classic free-list attack: a fake free block built inside a live
/// block, and a freed block's next link forged to point at it (with the
/// back link the unlink check wants). Without `hardened` the heap hands the
/// fake block out, overlapping the live one; with it, the forged link does
/// not unmask to a block and the heap fails closed.
#[test]
fn forged_small_list_link_to_a_fake_block_is_caught_only_when_hardened() {
    let (mut h, _sim) = sim_heap(2);
    let a = h.alloc(lay(40)).unwrap();
    let _g1 = h.alloc(lay(16)).unwrap();
    let b = h.alloc(lay(40)).unwrap();
    let victim = h.alloc(lay(200)).unwrap();
    // SAFETY: test: live blocks.
    unsafe {
        h.dealloc(a, lay(40)).unwrap();
        h.dealloc(b, lay(40)).unwrap();
    }
    h.verify().unwrap();
    let b_off = (b.as_ptr().addr() - h.pool_base().unwrap().as_ptr().addr() - 4) as u32;
    // A fake free block of 48 bytes at the victim's payload + 4.
    let fake = (victim.as_ptr().addr() - h.pool_base().unwrap().as_ptr().addr() + 4) as u32;
    let put = |p: NonNull<u8>, at: usize, v: u32| {
        // SAFETY: test: `p + at` lies in the pool, which stays allocated;
        // the heap holds no reference into it.
        unsafe { p.as_ptr().add(at).cast::<u32>().write_unaligned(v) };
    };
    put(victim, 4, 48 | 0b100);
    put(victim, 8, 0);
    put(victim, 12, b_off);
    // The list is b -> a: point b's next link (its first payload word) at
    // the fake block.
    put(b, 0, fake);
    let first = h.alloc(lay(40));
    let second = h.alloc(lay(40));
    if cfg!(feature = "hardened") {
        assert_eq!(first, None, "the forged link must not be followed");
        assert_eq!(second, None);
        assert!(h.is_corrupted());
        assert!(h.verify().is_err());
        assert!(h.alloc(lay(8)).is_none());
    } else {
        assert_eq!(first, Some(b));
        assert_eq!(
            second.map(|p| p.as_ptr().addr()),
            Some(victim.as_ptr().addr() + 8),
            "without masking, the fake block inside a live one is handed out"
        );
    }
}

#[cfg(feature = "hardened")]
#[test]
fn hardened_forged_small_list_link_is_caught_and_fails_closed() {
    let (mut h, _sim) = sim_heap(2);
    let a = h.alloc(lay(40)).unwrap();
    let g1 = h.alloc(lay(40)).unwrap();
    let b = h.alloc(lay(40)).unwrap();
    let _g2 = h.alloc(lay(40)).unwrap();
    // SAFETY: test: live blocks.
    unsafe {
        h.dealloc(a, lay(40)).unwrap();
        h.dealloc(b, lay(40)).unwrap();
    }
    h.verify().unwrap();
    // The list is b -> a; point b's next link at the live block g1.
    let forged = header_offset(&h, g1);
    scribble(b, 0, forged);
    assert!(h.verify().is_err(), "verify must see the forged link");
    assert_eq!(h.alloc(lay(40)), None);
    assert_failed_closed(&mut h);
}

#[cfg(feature = "hardened")]
#[test]
fn hardened_forged_tree_link_is_caught_and_fails_closed() {
    let (mut h, _sim) = sim_heap(4);
    let mut big = Vec::new();
    let mut guards = Vec::new();
    for i in 0..6 {
        big.push(h.alloc(lay(600 + i * 8)).unwrap());
        guards.push(h.alloc(lay(16)).unwrap());
    }
    for (i, &p) in big.iter().enumerate() {
        // SAFETY: test: live block.
        unsafe { h.dealloc(p, lay(600 + i * 8)).unwrap() };
    }
    h.verify().unwrap();
    // Forge every tree link word (left, right, parent) of one free node and
    // its chain links to name a live guard block.
    let forged = header_offset(&h, guards[0]);
    for at in [0, 4, 12, 16, 20] {
        scribble(big[2], at, forged);
    }
    assert!(h.verify().is_err(), "verify must see the forged links");
    // Requests that walk the tree reach the forged node sooner or later.
    for i in 0..6 {
        if h.alloc(lay(600 + i * 8)).is_none() {
            break;
        }
    }
    assert_failed_closed(&mut h);
}

#[cfg(feature = "hardened")]
#[test]
fn hardened_use_after_free_write_into_a_small_block_is_caught_at_reuse() {
    let (mut h, _sim) = sim_heap(2);
    let a = h.alloc(lay(100)).unwrap();
    let _g = h.alloc(lay(16)).unwrap();
    // SAFETY: test: live block.
    unsafe { h.dealloc(a, lay(100)).unwrap() };
    h.verify().unwrap();
    // Past the two link words: the poisoned body.
    scribble(a, 40, 0x1234_5678);
    assert!(h.verify().is_err(), "verify must see the damaged poison");
    assert_eq!(
        h.alloc(lay(100)),
        None,
        "the dirty block must not be handed out"
    );
    assert_failed_closed(&mut h);
}

#[cfg(feature = "hardened")]
#[test]
fn hardened_use_after_free_write_into_a_large_block_prefix_is_caught_at_reuse() {
    let (mut h, _sim) = sim_heap(2);
    let a = h.alloc(lay(1000)).unwrap();
    let _g = h.alloc(lay(16)).unwrap();
    // SAFETY: test: live block.
    unsafe { h.dealloc(a, lay(1000)).unwrap() };
    h.verify().unwrap();
    scribble(a, 30, 0);
    assert_eq!(h.alloc(lay(1000)), None);
    assert_failed_closed(&mut h);
}

#[cfg(feature = "hardened")]
#[test]
fn hardened_reused_poisoned_blocks_come_back_zeroed_from_alloc_zeroed() {
    let (mut h, _sim) = sim_heap(2);
    for size in [24, 100, 248, 600, 3000] {
        let a = h.alloc(lay(size)).unwrap();
        fill(a, size, 7);
        let g = h.alloc(lay(16)).unwrap();
        // SAFETY: test: live block.
        unsafe { h.dealloc(a, lay(size)).unwrap() };
        let z = h.alloc_zeroed(lay(size)).unwrap();
        assert_eq!(z, a, "the freed block is reused");
        // SAFETY: test: `z` is a live block of `size` bytes.
        let bytes = unsafe { core::slice::from_raw_parts(z.as_ptr(), size) };
        assert!(bytes.iter().all(|&b| b == 0));
        h.verify().unwrap();
        // SAFETY: test: live blocks.
        unsafe {
            h.dealloc(z, lay(size)).unwrap();
            h.dealloc(g, lay(16)).unwrap();
        }
    }
    assert!(!h.is_corrupted());
}

#[cfg(feature = "hardened")]
#[test]
fn hardened_links_are_stored_masked() {
    let (mut h, _sim) = sim_heap(2);
    let a = h.alloc(lay(40)).unwrap();
    let _g = h.alloc(lay(40)).unwrap();
    // SAFETY: test: live block.
    unsafe { h.dealloc(a, lay(40)).unwrap() };
    // The only block of its list: both links are 0, yet stored masked.
    // SAFETY: test: the freed block's link words lie in the pool.
    let (next, prev) = unsafe {
        (
            a.as_ptr().cast::<u32>().read_unaligned(),
            a.as_ptr().add(4).cast::<u32>().read_unaligned(),
        )
    };
    assert!(next != 0 && prev != 0 && next != prev);
}

#[cfg(feature = "hardened")]
#[test]
fn hardened_guest_write_into_freed_memory_or_links_fails_the_guest_heap_closed() {
    for at in [0usize, 20] {
        let mut mem = vec![0u8; 16 * 1024];
        let mut g = GuestHeap::init(&mut mem, 1024, 15 * 1024).unwrap();
        let a = g.malloc(&mut mem, 60).unwrap() as usize;
        let _guard = g.malloc(&mut mem, 8).unwrap();
        g.free(&mut mem, a as u32).unwrap();
        g.verify(&mem).unwrap();
        // The guest writes into the block it freed: its next link (at 0)
        // or its poisoned body (at 20).
        mem[a + at..a + at + 4].copy_from_slice(&0x400u32.to_le_bytes());
        assert!(g.verify(&mem).is_err());
        assert_eq!(g.malloc(&mut mem, 60), None);
        assert!(g.is_corrupted());
        assert_eq!(g.malloc(&mut mem, 8), None);
    }
}
