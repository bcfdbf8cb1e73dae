//! Whole-heap walks: validation, `verify`, the region dump and the
//! emmalloc-style introspection figures.

use core::fmt;

use linmem_memory::{HeapStats, MemorySource, PAGE_SIZE, Violation};

use crate::bins::{BUCKETS, bucket};
use crate::block::{
    CACHED, END_SENTINEL, GRAIN, MIN_REGION, PHASE, ROOT_HDR, USED, W, get_link, word,
};
use crate::heap::Heap;

/// What a region seen by the heap walk is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// A root's start sentinel (it holds the root's links).
    RootStart,
    /// A used region (a live block).
    Used,
    /// A free region.
    Free,
    /// A freed block parked in a quick list (counted as free in the
    /// statistics, merged with its neighbours later).
    Cached,
    /// A root's end sentinel (a lone used size word of size zero).
    RootEnd,
}

/// Totals of a heap walk.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Totals {
    used_bytes: usize,
    used_blocks: usize,
    free_bytes: usize,
    free_blocks: usize,
    largest_free: usize,
    sentinel_bytes: usize,
    cached_bytes: usize,
    cached_blocks: usize,
}

impl Totals {
    /// The statistics these totals make for `heap`.
    fn stats<S: MemorySource>(&self, heap: &Heap<S>) -> HeapStats {
        HeapStats {
            footprint: heap.footprint,
            peak_footprint: heap.peak_footprint(),
            in_use: self.used_bytes,
            live_blocks: self.used_blocks,
            free: self.free_bytes + self.cached_bytes,
            free_blocks: self.free_blocks + self.cached_blocks,
            largest_free: self.largest_free,
        }
    }
}

impl<S: MemorySource> Heap<S> {
    /// Calls `f(addr, size, kind)` for every region of every root, in
    /// address order within a root and roots newest first, checking
    /// I1, I2, I3, I7 and I8 on the way; stops at the first violation.
    pub(crate) fn walk(
        &self,
        t: &mut Totals,
        mut f: impl FnMut(usize, usize, RegionKind),
    ) -> Result<(), Violation> {
        let mut root = self.last_root;
        let mut roots = 0usize;
        let max_roots = self.footprint / (ROOT_HDR + MIN_REGION) + 1;
        while !root.is_null() {
            roots += 1;
            let ra = root.addr();
            if roots > max_roots
                || ra % GRAIN != PHASE
                || ra >= self.hi
                || ra.wrapping_add(W) < self.lo.wrapping_sub(ROOT_HDR)
            {
                return Err(Violation::new(8, ra, "root link outside the heap"));
            }
            // SAFETY: I1, I8: `root` is a start sentinel inside the heap
            // (checked above), readable through its size words and links.
            let h = unsafe { word(root) };
            // SAFETY: as above: the previous-root link.
            let next = unsafe { get_link(root, 0) };
            // SAFETY: as above: the end-sentinel link.
            let end = unsafe { get_link(root, 1) };
            // SAFETY: as above; the sentinel is ROOT_HDR bytes long (I1).
            let fh = unsafe { word(root.add(ROOT_HDR - W)) };
            if h != ROOT_HDR | USED || fh != h {
                return Err(Violation::new(1, ra, "start sentinel damaged"));
            }
            let ea = end.addr();
            if ea < ra + ROOT_HDR + MIN_REGION || ea >= self.hi || ea % GRAIN != PHASE {
                return Err(Violation::new(1, ra, "end sentinel address out of range"));
            }
            // SAFETY: I1: the end sentinel lies inside the root (checked).
            if unsafe { word(end) } != END_SENTINEL {
                return Err(Violation::new(1, ea, "end sentinel damaged"));
            }
            if roots == 1 && (end != self.end || self.mem_end < ea + W) {
                return Err(Violation::new(
                    8,
                    ea,
                    "newest root's end does not match the heap",
                ));
            }
            f(ra, ROOT_HDR, RegionKind::RootStart);
            t.sentinel_bytes += ROOT_HDR + W;
            // SAFETY: I1: the first region follows the start sentinel.
            let mut r = unsafe { root.add(ROOT_HDR) };
            let mut prev_free = false;
            while r != end {
                let a = r.addr();
                // SAFETY: I1: `r` lies in `[root + ROOT_HDR, end)` (the loop
                // only advances by sizes checked to stay below `end`).
                let h = unsafe { word(r) };
                let size = h & !(GRAIN - 1);
                let cached = h & CACHED != 0;
                if h & (GRAIN - 1) & !(USED | CACHED) != 0
                    || (cached && h & USED == 0)
                    || size < MIN_REGION
                    || size > ea - a
                {
                    return Err(Violation::new(2, a, "bad region size word"));
                }
                // SAFETY: I2: the footer lies inside the region (checked).
                if unsafe { word(r.add(size - W)) } != h & !CACHED {
                    return Err(Violation::new(2, a, "header and footer disagree"));
                }
                if !(a + W).is_multiple_of(GRAIN) {
                    return Err(Violation::new(7, a, "payload not aligned"));
                }
                let free = h & USED == 0;
                if free {
                    if prev_free {
                        return Err(Violation::new(3, a, "two adjacent free regions"));
                    }
                    t.free_bytes += size;
                    t.free_blocks += 1;
                    t.largest_free = t.largest_free.max(size);
                    f(a, size, RegionKind::Free);
                } else if cached {
                    t.cached_bytes += size;
                    t.cached_blocks += 1;
                    f(a, size, RegionKind::Cached);
                } else {
                    t.used_bytes += size;
                    t.used_blocks += 1;
                    f(a, size, RegionKind::Used);
                }
                prev_free = free;
                // SAFETY: `size <= end - r` (checked above).
                r = unsafe { r.add(size) };
            }
            f(ea, 0, RegionKind::RootEnd);
            root = next;
        }
        if t.used_bytes + t.free_bytes + t.cached_bytes + t.sentinel_bytes > self.footprint {
            return Err(Violation::new(
                6,
                self.footprint,
                "regions exceed the footprint",
            ));
        }
        Ok(())
    }

    /// Walks every region of every root and returns the first broken
    /// structural invariant (I1, I2, I3, I7, I8) — emmalloc's
    /// `validate_memory_regions`.
    pub fn validate(&self) -> Result<(), Violation> {
        self.walk(&mut Totals::default(), |_, _, _| {})
    }

    /// The statistics from a walk of the heap (as far as it gets if the
    /// heap is damaged).
    pub(crate) fn summary(&self) -> HeapStats {
        let mut t = Totals::default();
        let _ = self.walk(&mut t, |_, _, _| {});
        t.stats(self)
    }

    /// Checks every invariant I1..I8 and I10: the region walk, the free
    /// lists, the mask and the quick lists against it, and the footprint.
    pub(crate) fn verify_all(&self) -> Result<HeapStats, Violation> {
        let mut t = Totals::default();
        self.walk(&mut t, |_, _, _| {})?;
        let mut listed = 0usize;
        for b in 0..BUCKETS {
            let head = self.heads[b];
            if self.failed == 0 && head.is_null() == (self.mask & (1 << b) != 0) {
                return Err(Violation::new(5, b, "mask bit disagrees with bucket"));
            }
            let mut prev = core::ptr::null_mut();
            let mut r = head;
            while !r.is_null() {
                listed += 1;
                let a = r.addr();
                if listed > t.free_blocks
                    || a % GRAIN != PHASE
                    || a < self.lo.wrapping_sub(W)
                    || a >= self.hi
                {
                    return Err(Violation::new(
                        4,
                        a,
                        "list holds more than the free regions",
                    ));
                }
                // SAFETY: I4: `r` lies inside the heap span (checked).
                let h = unsafe { word(r) };
                // SAFETY: as above: a listed region's prev link.
                let p = unsafe { self.peek(r, 0) };
                // SAFETY: as above: a listed region's next link.
                let n = unsafe { self.peek(r, 1) };
                if h & USED != 0 || h < MIN_REGION || a + h > self.hi {
                    return Err(Violation::new(4, a, "listed region is not free"));
                }
                // SAFETY: I2: the footer lies inside the heap (checked).
                if unsafe { word(r.add(h - W)) } != h {
                    return Err(Violation::new(2, a, "listed region's footer disagrees"));
                }
                if bucket(h) != b {
                    return Err(Violation::new(4, a, "free region in the wrong bucket"));
                }
                if p != prev {
                    return Err(Violation::new(4, a, "prev link inconsistent"));
                }
                prev = r;
                r = n;
            }
        }
        if listed != t.free_blocks {
            return Err(Violation::new(
                4,
                listed,
                "a free region is missing from the lists",
            ));
        }
        let mut cached = 0usize;
        for (i, &head) in self.quick.iter().enumerate() {
            let mut r = head;
            while !r.is_null() {
                cached += 1;
                let a = r.addr();
                if cached > t.cached_blocks
                    || a % GRAIN != PHASE
                    || a < self.lo.wrapping_sub(W)
                    || a >= self.hi
                {
                    return Err(Violation::new(
                        10,
                        a,
                        "quick list holds more than the cached regions",
                    ));
                }
                // SAFETY: I10: `r` lies inside the heap span (checked).
                if unsafe { word(r) } != (i * GRAIN) | USED | CACHED {
                    return Err(Violation::new(
                        10,
                        a,
                        "quick-listed region is not a cached region of the list's size",
                    ));
                }
                // SAFETY: as above: a cached region's link word.
                r = unsafe { self.peek(r, 0) };
            }
        }
        if cached != t.cached_blocks {
            return Err(Violation::new(
                10,
                cached,
                "a cached region is missing from the quick lists",
            ));
        }
        Ok(t.stats(self))
    }

    /// Calls `f(size)` for every listed free region and every cached one
    /// (at most as many as the arena can hold, so a damaged list cannot
    /// loop forever).
    fn for_each_free(&self, mut f: impl FnMut(usize)) {
        let mut budget = self.footprint / MIN_REGION;
        for (link, heads) in [(1, &self.heads[..]), (0, &self.quick[..])] {
            for &head in heads {
                let mut r = head;
                while !r.is_null() && budget != 0 {
                    budget -= 1;
                    // SAFETY: I4, I10: listed and cached regions start with
                    // size words.
                    f(unsafe { word(r) } & !(GRAIN - 1));
                    // SAFETY: I4, I10: the list's link word (next for the
                    // buckets, the first payload word for quick lists).
                    r = unsafe { self.peek(r, link) };
                }
            }
        }
    }

    /// Writes one line per region (address, size, used/free), with the
    /// roots' sentinels — emmalloc's `dump_memory_regions`. A broken
    /// invariant ends the dump with a line naming it.
    pub fn dump(&self, w: &mut impl fmt::Write) -> fmt::Result {
        let mut res = Ok(());
        let mut t = Totals::default();
        let walked = self.walk(&mut t, |addr, size, kind| {
            if res.is_ok() {
                res = match kind {
                    RegionKind::RootStart => {
                        writeln!(w, "root {addr:#x}: start sentinel, {size} bytes")
                    }
                    RegionKind::Used => writeln!(w, "  {addr:#x} {size} used"),
                    RegionKind::Free => writeln!(w, "  {addr:#x} {size} free"),
                    RegionKind::Cached => writeln!(w, "  {addr:#x} {size} cached"),
                    RegionKind::RootEnd => writeln!(w, "root end sentinel at {addr:#x}"),
                };
            }
        });
        res?;
        match walked {
            Ok(()) => writeln!(
                w,
                "{} used ({} bytes), {} free ({} bytes), footprint {} bytes",
                t.used_blocks, t.used_bytes, t.free_blocks, t.free_bytes, self.footprint
            ),
            Err(v) => writeln!(w, "{v}"),
        }
    }

    /// Bytes taken from the memory source and not given back (all roots,
    /// sentinels and alignment slack included) — emmalloc's
    /// `emmalloc_dynamic_heap_size`.
    pub fn dynamic_heap_size(&self) -> usize {
        self.footprint
    }

    /// Bytes in free regions, their size words included — emmalloc's
    /// `emmalloc_free_dynamic_memory`.
    pub fn free_dynamic_memory(&self) -> usize {
        let mut free = 0;
        self.for_each_free(|s| free += s);
        free
    }

    /// How many more bytes the memory could still grow by: the limit set by
    /// [`set_memory_limit`](Heap::set_memory_limit) (by default the wasm32
    /// address space, 65536 pages) minus the memory's current size —
    /// emmalloc's `emmalloc_unclaimed_heap_memory`. Memory grown by others
    /// counts as claimed.
    pub fn unclaimed_heap_memory(&self) -> usize {
        self.limit_pages()
            .saturating_sub(self.source.size_pages())
            .saturating_mul(PAGE_SIZE)
    }

    /// Free-region counts by size: entry `i` counts free regions of
    /// `2^i ..= 2^(i+1) - 1` bytes (sizes of 2^31 and more count in entry
    /// 31) — emmalloc's `emmalloc_compute_free_dynamic_memory_fragmentation_map`.
    pub fn fragmentation_map(&self) -> [u32; 32] {
        let mut map = [0u32; 32];
        self.for_each_free(|s| {
            let log = (usize::BITS - 1 - s.leading_zeros()).min(31) as usize;
            map[log] += 1;
        });
        map
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use core::alloc::Layout;
    use core::ptr::NonNull;
    use linmem_memory::{RawHeap, SimMemory};
    use std::string::String;
    use std::vec::Vec;

    fn lay(size: usize) -> Layout {
        Layout::from_size_align(size, 8).unwrap()
    }

    /// A heap with blocks of 100, 200, 300 bytes, the middle one freed.
    fn sample() -> (Heap<SimMemory>, SimMemory, Vec<NonNull<u8>>) {
        let mem = SimMemory::new(0, 16);
        let mut h = Heap::new(mem.clone());
        let v: Vec<_> = [100, 200, 300]
            .iter()
            .map(|&s| h.alloc(lay(s)).unwrap())
            .collect();
        // SAFETY: `v[1]` is live with this layout.
        unsafe { h.dealloc(v[1], lay(200)).unwrap() };
        // Merge it now rather than keep it in its quick list.
        h.flush();
        (h, mem, v)
    }

    #[test]
    fn dump_lists_roots_sentinels_and_every_region() {
        let (h, _m, v) = sample();
        let mut out = String::new();
        h.dump(&mut out).unwrap();
        assert!(out.contains("start sentinel"));
        assert!(out.contains("end sentinel"));
        assert_eq!(out.lines().filter(|l| l.ends_with(" used")).count(), 2);
        assert_eq!(out.lines().filter(|l| l.ends_with(" free")).count(), 2);
        let first = std::format!("{:#x}", v[0].as_ptr() as usize - W);
        assert!(out.contains(&first), "{out}");
        assert!(out.contains("2 used"));
    }

    #[test]
    fn heap_size_figures_match_the_walk() {
        let (mut h, m, _v) = sample();
        let s = h.verify().unwrap();
        assert_eq!(h.dynamic_heap_size(), PAGE_SIZE);
        assert_eq!(h.dynamic_heap_size(), s.footprint);
        assert_eq!(h.free_dynamic_memory(), s.free);
        assert_eq!(h.unclaimed_heap_memory(), (65536 - 1) * PAGE_SIZE);
        h.set_memory_limit(m.max_pages());
        assert_eq!(h.unclaimed_heap_memory(), 15 * PAGE_SIZE);
        assert_eq!(h.stats(), s);
    }

    #[test]
    fn fragmentation_map_counts_free_regions_by_power_of_two() {
        let (h, _m, _v) = sample();
        let map = h.fragmentation_map();
        assert_eq!(map.iter().sum::<u32>(), 2);
        // The freed 200-byte block is a region of 2^7..2^8 bytes.
        assert_eq!(map[7], 1);
        // The rest of the page is one region of 2^15..2^16 bytes.
        assert_eq!(map[15], 1);
    }

    #[test]
    fn validate_reports_a_damaged_size_word() {
        let (h, _m, v) = sample();
        assert_eq!(h.validate(), Ok(()));
        // SAFETY: overwrites the header of the live block `v[2]` (damage
        // under test); the heap is only walked afterwards.
        unsafe { v[2].as_ptr().sub(W).cast::<usize>().write(12345) };
        let e = h.validate().unwrap_err();
        assert_eq!((e.invariant, e.addr), (2, v[2].as_ptr() as usize - W));
    }

    #[test]
    fn verify_reports_a_mask_bit_without_a_list() {
        let (mut h, _m, _v) = sample();
        h.mask |= 1 << 3;
        assert_eq!(h.verify().unwrap_err().invariant, 5);
    }

    #[test]
    fn verify_reports_a_cached_region_missing_from_its_quick_list() {
        let mem = SimMemory::new(0, 16);
        let mut h = Heap::new(mem.clone());
        let a = h.alloc(lay(40)).unwrap();
        // SAFETY: `a` is live with this layout.
        unsafe { h.dealloc(a, lay(40)).unwrap() };
        assert!(h.verify().is_ok());
        h.quick = [core::ptr::null_mut(); crate::heap::QUICK];
        assert_eq!(h.verify().unwrap_err().invariant, 10);
    }

    #[test]
    fn verify_reports_a_free_region_missing_from_the_lists() {
        let (mut h, _m, v) = sample();
        let r = v[1].as_ptr().wrapping_sub(W);
        let b = bucket(crate::block::region_for(200));
        assert_eq!(h.heads[b], r);
        h.heads[b] = core::ptr::null_mut();
        h.mask &= !(1 << b);
        assert_eq!(h.verify().unwrap_err().invariant, 4);
    }

    #[test]
    fn verify_reports_a_footprint_smaller_than_the_regions() {
        let (mut h, _m, _v) = sample();
        h.footprint = 64;
        assert_eq!(h.verify().unwrap_err().invariant, 6);
    }
}
