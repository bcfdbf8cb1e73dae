//! Unit tests of the arena over a simulated linear memory.

use core::alloc::Layout;

use linmem_memory::{PAGE_SIZE, RawHeap, SimConfig, SimMemory};

use crate::{Arena, CheckpointError};

fn arena(max_pages: usize) -> (Arena<SimMemory>, SimMemory) {
    let mem = SimMemory::new(1, max_pages);
    (Arena::new(mem.clone()), mem)
}

/// The first `n` bytes of a live block.
fn bytes(p: core::ptr::NonNull<u8>, n: usize) -> &'static [u8] {
    // SAFETY: every caller passes a live block of at least `n` bytes whose
    // arena outlives the use of the slice.
    unsafe { core::slice::from_raw_parts(p.as_ptr(), n) }
}

fn l(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

#[test]
fn consecutive_allocations_are_adjacent_and_aligned() {
    let (mut a, _m) = arena(4);
    let p1 = a.alloc(l(3, 1)).unwrap();
    let p2 = a.alloc(l(5, 1)).unwrap();
    assert_eq!(p2.addr().get(), p1.addr().get() + 3);
    let p3 = a.alloc(l(8, 8)).unwrap();
    assert_eq!(p3.addr().get() % 8, 0);
    assert!(p3.addr().get() - (p2.addr().get() + 5) < 8);
    a.verify().unwrap();
}

#[test]
fn every_alignment_up_to_64k_wastes_less_than_the_alignment() {
    let (mut a, _m) = arena(64);
    let mut align = 1;
    while align <= PAGE_SIZE {
        let before = a.allocated_bytes();
        let p = a.alloc(l(1, align)).unwrap();
        assert_eq!(p.addr().get() % align, 0, "align {align}");
        let used = a.allocated_bytes() - before;
        assert!(used <= align, "align {align} used {used}");
        align *= 2;
    }
    a.verify().unwrap();
}

#[test]
fn freeing_the_most_recent_block_gives_its_space_back() {
    let (mut a, _m) = arena(4);
    let _keep = a.alloc(l(16, 8)).unwrap();
    let p = a.alloc(l(100, 4)).unwrap();
    let used = a.allocated_bytes();
    // SAFETY: `p` is live with this layout.
    unsafe { a.dealloc(p, l(100, 4)).unwrap() };
    assert_eq!(a.allocated_bytes(), used - 100);
    assert_eq!(a.alloc(l(100, 4)).unwrap(), p);
}

#[test]
fn freeing_an_older_block_keeps_its_space_until_reset() {
    let (mut a, _m) = arena(4);
    let p = a.alloc(l(64, 8)).unwrap();
    let _q = a.alloc(l(64, 8)).unwrap();
    let used = a.allocated_bytes();
    // SAFETY: `p` is live with this layout.
    unsafe { a.dealloc(p, l(64, 8)).unwrap() };
    assert_eq!(a.allocated_bytes(), used);
    a.verify().unwrap();
}

#[test]
fn realloc_of_the_most_recent_block_grows_and_shrinks_in_place() {
    let (mut a, _m) = arena(4);
    let p = a.alloc(l(10, 2)).unwrap();
    // SAFETY: `p` is valid for 10 bytes.
    unsafe { p.as_ptr().copy_from(b"0123456789".as_ptr(), 10) };
    // SAFETY: `p` is live with this layout.
    let q = unsafe { a.realloc(p, l(10, 2), 1000) }.unwrap();
    assert_eq!(p, q);
    assert_eq!(a.allocated_bytes(), 1000);
    // SAFETY: `q` is live with this layout.
    let r = unsafe { a.realloc(q, l(1000, 2), 4) }.unwrap();
    assert_eq!(p, r);
    assert_eq!(a.allocated_bytes(), 4);
    assert_eq!(bytes(r, 4), b"0123");
    a.verify().unwrap();
}

#[test]
fn realloc_of_the_last_block_past_the_chunk_end_extends_memory_in_place() {
    let (mut a, mem) = arena(64);
    let p = a.alloc(l(PAGE_SIZE / 2, 8)).unwrap();
    // SAFETY: `p` is live with this layout.
    let q = unsafe { a.realloc(p, l(PAGE_SIZE / 2, 8), 5 * PAGE_SIZE) }.unwrap();
    assert_eq!(p, q);
    assert!(mem.heap_pages() <= 6, "grew {} pages", mem.heap_pages());
    a.verify().unwrap();
}

#[test]
fn realloc_of_an_older_block_moves_it_and_keeps_the_prefix() {
    let (mut a, _m) = arena(4);
    let p = a.alloc(l(4, 1)).unwrap();
    // SAFETY: `p` is valid for 4 bytes.
    unsafe { p.as_ptr().copy_from(b"abcd".as_ptr(), 4) };
    let _q = a.alloc(l(4, 1)).unwrap();
    // SAFETY: `p` is live with this layout.
    let r = unsafe { a.realloc(p, l(4, 1), 64) }.unwrap();
    assert_ne!(p, r);
    assert_eq!(bytes(r, 4), b"abcd");
}

#[test]
fn reset_reuses_all_memory_without_growing() {
    let (mut a, mem) = arena(64);
    for _ in 0..100 {
        a.alloc(l(1000, 8)).unwrap();
    }
    let grows = mem.grows();
    let footprint = a.footprint();
    for _ in 0..5 {
        a.reset();
        assert_eq!(a.allocated_bytes(), 0);
        for _ in 0..100 {
            a.alloc(l(1000, 8)).unwrap();
        }
    }
    assert_eq!(mem.grows(), grows);
    assert_eq!(a.footprint(), footprint);
    a.verify().unwrap();
}

#[test]
fn zeroed_allocation_after_reset_is_zero() {
    let (mut a, _m) = arena(4);
    let p = a.alloc(l(256, 8)).unwrap();
    // SAFETY: `p` is valid for 256 bytes.
    unsafe { p.as_ptr().write_bytes(0xAB, 256) };
    a.reset();
    let z = a.alloc_zeroed(l(512, 8)).unwrap();
    assert!(bytes(z, 512).iter().all(|&b| b == 0));
}

#[test]
fn zeroed_allocation_after_popping_the_last_block_is_zero() {
    let (mut a, _m) = arena(4);
    let p = a.alloc(l(64, 8)).unwrap();
    // SAFETY: `p` is valid for 64 bytes.
    unsafe { p.as_ptr().write_bytes(0xCD, 64) };
    // SAFETY: `p` is live with this layout.
    unsafe { a.dealloc(p, l(64, 8)).unwrap() };
    let z = a.alloc_zeroed(l(64, 8)).unwrap();
    assert_eq!(z, p);
    assert!(bytes(z, 64).iter().all(|&b| b == 0));
}

#[test]
fn rewind_to_a_checkpoint_frees_later_blocks_only() {
    let (mut a, _m) = arena(64);
    let keep = a.try_alloc(7u64).unwrap() as *mut u64;
    let cp = a.checkpoint();
    let before = a.allocated_bytes();
    for _ in 0..200 {
        a.alloc(l(1000, 8)).unwrap();
    }
    a.rewind_to(cp).unwrap();
    assert_eq!(a.allocated_bytes(), before);
    // SAFETY: `keep` was allocated before the checkpoint and is still live.
    assert_eq!(unsafe { *keep }, 7);
    a.verify().unwrap();
    assert_eq!(a.try_alloc(1u8).map(|r| *r), Ok(1));
}

#[test]
fn rewind_refuses_a_checkpoint_from_another_arena_or_ahead_of_the_position() {
    let (mut a, _m) = arena(4);
    let (b, _n) = arena(4);
    b.try_alloc(1u32).unwrap();
    a.try_alloc(1u32).unwrap();
    assert_eq!(a.rewind_to(b.checkpoint()), Err(CheckpointError::Foreign));
    let ahead = a.checkpoint();
    a.reset();
    assert_eq!(a.rewind_to(ahead), Err(CheckpointError::Ahead));
}

#[test]
fn allocation_limit_refuses_allocations_past_it() {
    let (mut a, mem) = arena(64);
    a.set_allocation_limit(Some(1000));
    assert!(a.alloc(l(600, 1)).is_some());
    assert!(a.alloc(l(600, 1)).is_none());
    assert!(a.alloc(l(400, 1)).is_some());
    assert_eq!(a.allocated_bytes(), 1000);
    assert!(a.alloc(l(1, 1)).is_none());
    assert!(mem.heap_pages() <= 1);
    a.set_allocation_limit(None);
    assert!(a.alloc(l(10_000, 1)).is_some());
    a.verify().unwrap();
}

#[test]
fn failed_grow_returns_null_and_the_arena_keeps_working() {
    let (mut a, mem) = arena(64);
    let p = a.alloc(l(100, 8)).unwrap();
    // SAFETY: `p` is valid for 100 bytes.
    unsafe { p.as_ptr().write_bytes(0x5A, 100) };
    mem.fail_next_grows(1);
    assert!(a.alloc(l(2 * PAGE_SIZE, 8)).is_none());
    assert_eq!(mem.failed_grows(), 1);
    a.verify().unwrap();
    assert!(a.alloc(l(2 * PAGE_SIZE, 8)).is_some());
    assert!(bytes(p, 100).iter().all(|&b| b == 0x5A));
}

#[test]
fn sizes_that_overflow_return_null() {
    let (mut a, mem) = arena(4);
    assert!(a.alloc(l(isize::MAX as usize - 10, 1)).is_none());
    assert!(
        a.alloc(l(isize::MAX as usize - PAGE_SIZE, PAGE_SIZE))
            .is_none()
    );
    assert!(
        mem.heap_pages() <= 1,
        "an overflowing request must not grow memory"
    );
    a.verify().unwrap();
    assert!(a.alloc(l(8, 8)).is_some());
}

#[test]
fn foreign_growth_starts_a_new_chunk_and_reset_reuses_both() {
    let (mut a, mem) = arena(64);
    a.alloc(l(PAGE_SIZE - 100, 8)).unwrap();
    assert!(mem.foreign_grow(1));
    let far = a.alloc(l(PAGE_SIZE / 2, 8)).unwrap();
    assert!(far.addr().get() >= mem.base_addr() + 3 * PAGE_SIZE);
    a.verify().unwrap();
    let grows = mem.grows();
    a.reset();
    a.alloc(l(PAGE_SIZE - 100, 8)).unwrap();
    a.alloc(l(PAGE_SIZE / 2, 8)).unwrap();
    assert_eq!(mem.grows(), grows);
    a.verify().unwrap();
}

#[test]
fn the_initial_heap_base_tail_is_used_before_growing() {
    let mem = SimMemory::with_config(SimConfig {
        initial_pages: 2,
        max_pages: 8,
        heap_base: Some(PAGE_SIZE + 1000),
    });
    let mut a = Arena::new(mem.clone());
    let p = a.alloc(l(1000, 8)).unwrap();
    assert!(p.addr().get() >= mem.base_addr() + PAGE_SIZE + 1000);
    assert!(p.addr().get() < mem.base_addr() + 2 * PAGE_SIZE);
    assert_eq!(mem.grows(), 0);
}

#[test]
fn typed_api_builds_values_in_place() {
    let (a, _m) = arena(4);
    let s = a.try_alloc_str("hello").unwrap();
    s.make_ascii_uppercase();
    let v = a.try_alloc_slice_copy(&[1u16, 2, 3]).unwrap();
    v[0] = 9;
    let x = a.try_alloc_with(|| [7u64; 4]).unwrap();
    assert_eq!((&*s, &*v, *x), ("HELLO", &[9u16, 2, 3][..], [7u64; 4]));
}
