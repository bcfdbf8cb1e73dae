//! The memory sources behave like `memory.grow`: page-granular, zero-filled,
//! failing at the maximum without side effects, and gapped by foreign growth.

use core::ptr::NonNull;

use linmem_memory::{FixedRegion, MemorySource, PAGE_SIZE, Region, SimConfig, SimMemory};

fn bytes(r: Region) -> &'static mut [u8] {
    // SAFETY: M1: the region is valid for its length while the source lives;
    // every test keeps its source alive past the slice's last use.
    unsafe { core::slice::from_raw_parts_mut(r.start.as_ptr(), r.len) }
}

#[test]
fn grow_is_page_granular_and_zero_filled() {
    let mut mem = SimMemory::new(1, 8);
    let r = mem.grow(100).unwrap();
    assert_eq!(r.len, PAGE_SIZE);
    assert_eq!(r.start.as_ptr() as usize, mem.base_addr() + PAGE_SIZE);
    assert!(bytes(r).iter().all(|&b| b == 0));
    let r2 = mem.grow(PAGE_SIZE + 1).unwrap();
    assert_eq!(
        (r2.len, r2.start.as_ptr() as usize),
        (2 * PAGE_SIZE, r.end_addr())
    );
    assert_eq!((mem.pages(), mem.grows(), mem.heap_pages()), (4, 2, 3));
}

#[test]
fn grow_fails_at_the_maximum_and_changes_nothing() {
    let mut mem = SimMemory::new(1, 3);
    assert!(mem.grow(3 * PAGE_SIZE).is_none());
    assert_eq!((mem.pages(), mem.failed_grows()), (1, 1));
    assert!(mem.grow(2 * PAGE_SIZE).is_some());
    assert!(mem.grow(1).is_none());
    assert_eq!(mem.peak_pages(), 3);
}

#[test]
fn fail_next_grows_fails_exactly_that_many() {
    let mut mem = SimMemory::new(0, 8);
    mem.fail_next_grows(2);
    assert!(mem.grow(1).is_none());
    assert!(mem.grow(1).is_none());
    assert!(mem.grow(1).is_some());
    assert_eq!((mem.failed_grows(), mem.grows()), (2, 1));
}

#[test]
fn foreign_growth_leaves_a_gap_before_the_next_region() {
    let mut mem = SimMemory::new(1, 8);
    let a = mem.grow(1).unwrap();
    assert!(mem.foreign_grow(2));
    let b = mem.grow(1).unwrap();
    assert_eq!(b.start.as_ptr() as usize, a.end_addr() + 2 * PAGE_SIZE);
    assert_eq!((mem.pages(), mem.heap_pages()), (5, 2));
    assert!(
        !mem.foreign_grow(4),
        "foreign growth is bounded by the maximum too"
    );
}

#[test]
fn the_heap_base_tail_is_handed_out_first() {
    let hb = PAGE_SIZE + 4000;
    let mut mem = SimMemory::with_config(SimConfig {
        initial_pages: 2,
        max_pages: 8,
        heap_base: Some(hb),
    });
    let r = mem.grow(1000).unwrap();
    assert_eq!(r.start.as_ptr() as usize, mem.base_addr() + hb);
    assert_eq!((r.len, mem.grows()), (PAGE_SIZE - 4000, 0));
    let next = mem.grow(1).unwrap();
    assert_eq!(next.start.as_ptr() as usize, r.end_addr());
}

#[test]
fn a_short_tail_is_extended_by_only_the_missing_pages() {
    let hb = PAGE_SIZE - 1000;
    let mut mem = SimMemory::with_config(SimConfig {
        initial_pages: 1,
        max_pages: 8,
        heap_base: Some(hb),
    });
    let r = mem.grow(PAGE_SIZE).unwrap();
    assert_eq!(r.start.as_ptr() as usize, mem.base_addr() + hb);
    assert_eq!((r.len, mem.pages()), (1000 + PAGE_SIZE, 2));
}

#[test]
fn a_tail_stranded_by_foreign_growth_is_not_handed_out_with_the_gap() {
    let hb = PAGE_SIZE - 1000;
    let mut mem = SimMemory::with_config(SimConfig {
        initial_pages: 1,
        max_pages: 8,
        heap_base: Some(hb),
    });
    assert!(mem.foreign_grow(1));
    let r = mem.grow(PAGE_SIZE).unwrap();
    assert_eq!(
        (r.start.as_ptr() as usize, r.len),
        (mem.base_addr() + 2 * PAGE_SIZE, PAGE_SIZE)
    );
}

#[test]
fn release_tail_shrinks_only_at_the_end_and_rezeroes() {
    let mut mem = SimMemory::new(1, 8);
    let r = mem.grow(3 * PAGE_SIZE).unwrap();
    bytes(r).fill(0xAB);
    let end = NonNull::new(r.start.as_ptr().wrapping_add(r.len)).unwrap();
    let not_end = NonNull::new(r.start.as_ptr().wrapping_add(PAGE_SIZE)).unwrap();
    // SAFETY: the pages are ours and are not touched after release.
    let refused = unsafe { mem.release_tail(not_end, PAGE_SIZE) };
    // SAFETY: as above.
    let released = unsafe { mem.release_tail(end, 2 * PAGE_SIZE + 5) };
    assert_eq!((refused, released), (0, 2 * PAGE_SIZE));
    assert_eq!(mem.pages(), 2);
    let again = mem.grow(1).unwrap();
    assert_eq!(
        again.start.as_ptr() as usize,
        r.start.as_ptr() as usize + PAGE_SIZE
    );
    assert!(
        bytes(again).iter().all(|&b| b == 0),
        "released pages come back zeroed"
    );
}

#[test]
fn a_fixed_region_is_handed_out_once_and_zeroed() {
    let mut buf = vec![0xCDu8; 4096];
    let start = NonNull::new(buf.as_mut_ptr()).unwrap();
    // SAFETY: `buf` outlives `src` and is not touched while `src` lives.
    let mut src = unsafe { FixedRegion::from_raw(start, buf.len()) };
    assert!(
        src.grow(8192).is_none(),
        "too small a region is not handed out"
    );
    let r = src.grow(100).unwrap();
    assert_eq!(r.len, 4096);
    assert!(bytes(r).iter().all(|&b| b == 0));
    assert!(src.grow(1).is_none());
    // `buf` lives to here, past every use of the region.
    buf[0] = 1;
}
