//! The heap: allocation, free with coalescing, realloc in place, growth.

use core::alloc::Layout;
use core::ptr::NonNull;

use linmem_memory::{HeapError, HeapStats, MemorySource, PAGE_SIZE, RawHeap, Violation};

use crate::bins::{BUCKETS, EXACT_LIMIT, bucket};
use crate::block::{
    CACHED, END_SENTINEL, GRAIN, MIN_REGION, OVERHEAD, PHASE, ROOT_HDR, USED, W, get_link, null,
    region_for, set_link, set_region, set_word, word,
};

/// `hardened`: the word freed memory is filled with (I11): `0xA5` bytes.
#[cfg(feature = "hardened")]
pub(crate) const POISON_WORD: usize = usize::MAX / 0xFF * 0xA5;

/// `hardened`: how many bytes past its links a free or cached region has
/// poisoned (a bounded cost per free and reuse).
#[cfg(feature = "hardened")]
const POISON_PREFIX: usize = 32;

/// Quick lists: one per region size below `EXACT_LIMIT` (index `size / GRAIN`).
pub(crate) const QUICK: usize = EXACT_LIMIT / GRAIN;

/// Bytes asked of the source beyond the region itself: a start sentinel, an
/// end sentinel, the alignment slack at both ends of a new root, and room
/// for one smallest region so that every grown region can hold a root.
const GROW_SLACK: usize = ROOT_HDR + MIN_REGION + W + 2 * GRAIN;

/// By default, the memory is assumed to be able to reach the whole wasm32
/// address space (65536 pages): see [`Heap::set_memory_limit`].
const DEFAULT_LIMIT_PAGES: usize = 65536;

/// Misuse codes kept in `Heap::failed` (I9).
const MISUSE_FOREIGN: u8 = 1;
const MISUSE_DOUBLE_FREE: u8 = 2;
const MISUSE_CORRUPTED: u8 = 3;
const MISUSE_LAYOUT: u8 = 4;

/// An emmalloc-design heap over the memory source `S`.
///
/// See the crate docs for the layout and the invariants I1..I9.
pub struct Heap<S: MemorySource> {
    /// Where memory comes from.
    pub(crate) source: S,
    /// I4: the first free region of each bucket, or null.
    pub(crate) heads: [*mut u8; BUCKETS],
    /// I5: bit `b` is set iff bucket `b` is non-empty (all clear once
    /// failed closed, I9).
    pub(crate) mask: u64,
    /// I10: the quick lists: freed small blocks of one exact region size
    /// each, singly linked through their first payload word, not merged.
    pub(crate) quick: [*mut u8; QUICK],
    /// I8: the start sentinel of the newest root (null before the first
    /// grow), where the chain of roots starts.
    pub(crate) last_root: *mut u8,
    /// I8: the end sentinel of the newest root (null before the first grow).
    pub(crate) end: *mut u8,
    /// I8: the address just past the newest root's memory.
    pub(crate) mem_end: usize,
    /// The lowest payload address of any root (0 before the first grow).
    pub(crate) lo: usize,
    /// `hi - MIN_REGION - lo + 1` (0 before the first grow and once failed
    /// closed, I9): a pointer `p` can only be a payload if `p - lo < lim`
    /// (wrapping), the whole of the cheap pointer check's range test.
    pub(crate) lim: usize,
    /// The highest end address of any root.
    pub(crate) hi: usize,
    /// I6: bytes held from the source (grown minus released).
    pub(crate) footprint: usize,
    /// The most `footprint` had been before its last decrease (by `trim`).
    pub(crate) peak: usize,
    /// The pages the source can reach at most, for `unclaimed_heap_memory`,
    /// minus `DEFAULT_LIMIT_PAGES` (wrapping; zero-initialised).
    pub(crate) limit_delta: usize,
    /// I9: 0, or the code of the first detected misuse; sticky. Non-zero
    /// also turns the quick lists off.
    pub(crate) failed: u8,
    /// `hardened`: the per-heap secret that masks the free-list links
    /// (I11), set at the first grow.
    #[cfg(feature = "hardened")]
    pub(crate) secret: usize,
}

// SAFETY: the heap's raw pointers all point into memory owned by its source
// (I1, M1); nothing is shared with other values, so moving the heap with its
// source to another thread moves that ownership.
unsafe impl<S: Send + MemorySource> Send for Heap<S> {}

/// What [`Heap::trim`] could and did give back to the memory source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trim {
    /// Bytes (whole pages) of the free tail of the heap that could be given
    /// back, beyond what the caller asked to keep.
    pub releasable: usize,
    /// Bytes the source actually took back (0 on wasm, which cannot shrink).
    pub released: usize,
}

impl<S: MemorySource> Heap<S> {
    /// An empty heap over `source`; memory is only taken on the first
    /// allocation.
    pub const fn new(source: S) -> Self {
        Self {
            source,
            heads: [null(); BUCKETS],
            mask: 0,
            quick: [null(); QUICK],
            last_root: null(),
            end: null(),
            mem_end: 0,
            lo: 0,
            lim: 0,
            hi: 0,
            footprint: 0,
            peak: 0,
            limit_delta: 0,
            failed: 0,
            #[cfg(feature = "hardened")]
            secret: 0,
        }
    }

    /// The pages the source can reach at most.
    pub(crate) fn limit_pages(&self) -> usize {
        self.limit_delta.wrapping_add(DEFAULT_LIMIT_PAGES)
    }

    /// The most bytes ever held from the source (I6): `peak` is only
    /// brought up to date when the footprint shrinks.
    pub(crate) fn peak_footprint(&self) -> usize {
        self.peak.max(self.footprint)
    }

    /// The memory source.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// Tells the heap how many pages its source can reach at most (the
    /// memory's declared maximum), for [`unclaimed_heap_memory`]. The default
    /// is the wasm32 address space, 65536 pages. It does not limit growth.
    ///
    /// [`unclaimed_heap_memory`]: Heap::unclaimed_heap_memory
    pub fn set_memory_limit(&mut self, pages: usize) {
        self.limit_delta = pages.wrapping_sub(DEFAULT_LIMIT_PAGES);
    }

    /// Whether a detected misuse has made the heap refuse all work (I9).
    pub fn is_failed_closed(&self) -> bool {
        self.failed != 0
    }

    // ----- free lists -----------------------------------------------------

    /// Reads link `i` of the listed region `r` (of a bucket list when
    /// `want == 0`, of a quick list when `want == USED | CACHED`). Under
    /// `hardened` it is unmasked (I11) and must lead to a region whose
    /// header's low bits are `want`, inside the heap; otherwise the heap
    /// fails closed and the link reads as null.
    ///
    /// # Safety
    ///
    /// `r` is a listed region (I4, I10).
    #[inline(always)]
    unsafe fn ld(&mut self, r: *mut u8, i: usize, want: usize) -> *mut u8 {
        // SAFETY: the caller's contract: `r` holds its links.
        let v = unsafe { get_link(r, i) };
        #[cfg(feature = "hardened")]
        let v = self.unmask(r, i, v, want);
        #[cfg(not(feature = "hardened"))]
        let _ = want;
        v
    }

    /// Reads link `i` of the listed region `r`, unmasked under `hardened`
    /// but not checked (for the heap walks, which check it themselves).
    ///
    /// # Safety
    ///
    /// `r` is a region inside the heap of at least MIN_REGION bytes.
    #[inline(always)]
    pub(crate) unsafe fn peek(&self, r: *mut u8, i: usize) -> *mut u8 {
        // SAFETY: the caller's contract.
        let v = unsafe { get_link(r, i) };
        #[cfg(feature = "hardened")]
        let v = v.map_addr(|a| a ^ self.key(r, i));
        v
    }

    /// Writes link `i` of the region `r` (masked under `hardened`, I11).
    ///
    /// # Safety
    ///
    /// `r` is a region of at least MIN_REGION bytes the heap owns.
    #[inline(always)]
    unsafe fn st(&mut self, r: *mut u8, i: usize, v: *mut u8) {
        #[cfg(feature = "hardened")]
        let v = v.map_addr(|a| a ^ self.key(r, i));
        // SAFETY: the caller's contract.
        unsafe { set_link(r, i, v) }
    }

    /// `hardened`: the mask of link `i` of `r` (I11): the secret and the
    /// link's own address (as glibc's safe-linking), so that a link copied
    /// elsewhere decodes to garbage too.
    #[cfg(feature = "hardened")]
    #[inline(always)]
    fn key(&self, r: *mut u8, i: usize) -> usize {
        ((r.addr() + W + i * W) >> 12) ^ self.secret
    }

    /// `hardened`: unmasks a link read from link `i` of `r` and checks it.
    #[cfg(feature = "hardened")]
    fn unmask(&mut self, r: *mut u8, i: usize, v: *mut u8, want: usize) -> *mut u8 {
        let v = v.map_addr(|a| a ^ self.key(r, i));
        let a = v.addr();
        let base = self.lo.wrapping_sub(W);
        if v.is_null()
            || (a % GRAIN == PHASE
                && a.wrapping_sub(base) < self.hi.wrapping_sub(base).saturating_sub(MIN_REGION)
                // SAFETY: `v` lies inside the heap's span (checked just
                // before): a size word or payload word, readable.
                && unsafe { word(v) } & (GRAIN - 1) == want)
        {
            return v;
        }
        self.fail_closed(MISUSE_CORRUPTED);
        null()
    }

    /// `hardened`: fills the first POISON_PREFIX bytes (at most) of the
    /// word-aligned span `[from, to)` with the poison.
    ///
    /// # Safety
    ///
    /// The span is a free (or cached) part of a region.
    #[cfg(feature = "hardened")]
    #[inline(always)]
    unsafe fn poison(from: *mut u8, to: *mut u8) {
        let n = (to.addr().saturating_sub(from.addr()) / W).min(POISON_PREFIX / W);
        for i in 0..n {
            // SAFETY: the caller's contract: word `i` lies in the span.
            unsafe { from.cast::<usize>().add(i).write(POISON_WORD) };
        }
    }

    /// `hardened`: checks that what [`poison`](Self::poison) wrote over
    /// `[from, to)` is intact (nothing wrote to freed memory); fails the
    /// heap closed if not.
    ///
    /// # Safety
    ///
    /// The span was poisoned and is still free (or cached).
    #[cfg(feature = "hardened")]
    unsafe fn check_poison(&mut self, from: *mut u8, to: *mut u8) {
        let n = (to.addr().saturating_sub(from.addr()) / W).min(POISON_PREFIX / W);
        for i in 0..n {
            // SAFETY: the caller's contract: word `i` lies in the span.
            if unsafe { from.cast::<usize>().add(i).read() } != POISON_WORD {
                self.fail_closed(MISUSE_CORRUPTED);
                return;
            }
        }
    }

    /// `hardened`: the poisoned prefix of a listed free region `r` of
    /// `size` bytes: past its links, at most POISON_PREFIX bytes.
    #[cfg(feature = "hardened")]
    #[inline(always)]
    fn poison_span(r: *mut u8, size: usize) -> (*mut u8, *mut u8) {
        let from = r.wrapping_add(3 * W);
        let to = r.wrapping_add((size - W).min(3 * W + POISON_PREFIX));
        (from, to)
    }

    /// Records the misuse `code` (the first one is kept) and fails the heap
    /// closed (I9): an empty mask (and `failed`, which turns the quick
    /// lists off) send every allocation to the slow path, which refuses;
    /// `lim == 0` fails every later check (the lists stay as they were, for
    /// `verify`).
    #[cold]
    #[inline(never)]
    fn fail_closed(&mut self, code: u8) {
        if self.failed == 0 {
            self.failed = code;
        }
        self.mask = 0;
        self.lim = 0;
    }

    /// Pushes the free region `r` of `size` bytes onto its bucket.
    ///
    /// # Safety
    ///
    /// `r` is a region of `size` bytes with free size words, in no list.
    #[inline(always)]
    unsafe fn link(&mut self, r: *mut u8, size: usize) {
        let b = bucket(size);
        // SAFETY: bins: `bucket` is below BUCKETS.
        let head = unsafe { *self.heads.get_unchecked(b) };
        // SAFETY: I4: `r` is a free region of at least MIN_REGION bytes
        // (the caller's contract), so it has room for its links.
        unsafe { self.st(r, 0, null()) };
        // SAFETY: as above.
        unsafe { self.st(r, 1, head) };
        if !head.is_null() {
            // SAFETY: I4: a bucket's head is a listed free region.
            unsafe { self.st(head, 0, r) };
        }
        #[cfg(feature = "hardened")]
        {
            let (from, to) = Self::poison_span(r, size);
            // SAFETY: the free region's own bytes past its links.
            unsafe { Self::poison(from, to) };
        }
        // SAFETY: bins: `bucket` is below BUCKETS.
        unsafe { *self.heads.get_unchecked_mut(b) = r };
        self.mask |= 1 << b;
    }

    /// Removes the free region `r` of `size` bytes from its bucket.
    ///
    /// # Safety
    ///
    /// `r` is a free region of `size` bytes in the list of `bucket(size)`.
    #[inline]
    unsafe fn unlink(&mut self, r: *mut u8, size: usize) {
        #[cfg(feature = "hardened")]
        {
            let (from, to) = Self::poison_span(r, size);
            // SAFETY: I11: a listed region's poisoned prefix.
            unsafe { self.check_poison(from, to) };
        }
        // SAFETY: I4: `r` is listed, so its links are valid regions or null.
        let prev = unsafe { self.ld(r, 0, 0) };
        // SAFETY: as above.
        let next = unsafe { self.ld(r, 1, 0) };
        if prev.is_null() {
            let b = bucket(size);
            // SAFETY: bins: `bucket` is below BUCKETS.
            unsafe { *self.heads.get_unchecked_mut(b) = next };
            if next.is_null() {
                self.mask &= !(1 << b);
            }
        } else {
            // SAFETY: I4: `prev` is a listed free region.
            unsafe { self.st(prev, 1, next) };
        }
        if !next.is_null() {
            // SAFETY: I4: `next` is a listed free region.
            unsafe { self.st(next, 0, prev) };
        }
    }

    // ----- allocation -----------------------------------------------------

    /// The first free region of at least `req` bytes in the candidate
    /// buckets (from `bucket(req)` up); null if none. Only the head of
    /// each is tried, skipping the free tail, unless `all` (an exhaustive
    /// search, best fit per bucket, the free tail included).
    ///
    /// Every region of a bucket above `bucket(req)` fits (except in the
    /// last bucket), so without `all` this is a mask lookup and one region.
    /// The last bucket, which spans every large size, is always walked for
    /// the best fit.
    #[inline(never)]
    fn find(&mut self, req: usize, all: bool) -> *mut u8 {
        let mut cand = self.mask & (u64::MAX << bucket(req));
        while cand != 0 {
            let i = cand.trailing_zeros() as usize;
            // SAFETY: `cand` is non-zero, so `i < 64 == BUCKETS`.
            let mut r = unsafe { *self.heads.get_unchecked(i) };
            let mut best = null();
            let mut best_size = usize::MAX;
            while !r.is_null() {
                // SAFETY: I4: `r` is a listed free region: its header is a
                // free size word.
                let size = unsafe { word(r) };
                // SAFETY: I1: `r + size` is the end of the region, inside
                // its root.
                let end = unsafe { r.add(size) };
                // The free tail is a last resort (the full walk), as
                // dlmalloc's top: it stays free to merge with growth.
                if size >= req && size < best_size && (all || end != self.end) {
                    best = r;
                    best_size = size;
                }
                // The last bucket spans every large size: best fit there.
                if !all && i != BUCKETS - 1 {
                    break;
                }
                // SAFETY: I4: a listed region's next link is valid or null.
                r = unsafe { self.ld(r, 1, 0) };
            }
            if !best.is_null() {
                return best;
            }
            cand &= cand - 1;
        }
        null()
    }

    /// When no candidate bucket's head fits: (near out of memory) walk
    /// every candidate bucket fully, then merge the quick lists and walk
    /// again, then grow (at most twice: first for what the free tail lacks,
    /// then for the whole request) and look again. Null when out of memory,
    /// or when the heap failed closed (I9).
    ///
    /// The full walk is exhaustive (every region of every bucket that may
    /// fit is tried) and a failed grow changes nothing, so the scan that
    /// precedes each grow is also the last full scan after a failed one.
    #[cold]
    #[inline(never)]
    fn search_slow(&mut self, req: usize) -> *mut u8 {
        if self.failed != 0 {
            return null();
        }
        let mut attempt = 0;
        loop {
            let r = self.find(req, true);
            if !r.is_null() || attempt == 3 {
                return r;
            }
            if attempt == 0 {
                // Before growing, the blocks parked in the quick lists merge
                // back (and the search is repeated).
                self.flush();
            } else if !self.grow(req, attempt == 1) {
                return r;
            }
            attempt += 1;
        }
    }

    /// Allocates `size` bytes aligned to `align`; null when out of memory.
    ///
    /// One copy serves `alloc` and `realloc`, every alignment and every
    /// path (code size). A small request first tries its quick list. Then
    /// the heads of the candidate buckets are tried in order (a mask
    /// lookup and one region: a head always fits unless it is
    /// `bucket(req)` itself above the exact sizes, or the last bucket);
    /// near out of memory the search gets harder ([`search_slow`]). An
    /// alignment above GRAIN over-allocates and splits off a free lead so
    /// the payload is aligned. (A heap that failed closed skips the quick
    /// lists and has an empty mask, so it reaches `search_slow`, which
    /// refuses.)
    ///
    /// [`search_slow`]: Self::search_slow
    #[inline(never)]
    fn malloc(&mut self, size: usize, align: usize) -> *mut u8 {
        let req = region_for(size);
        let small = align <= GRAIN;
        if small && req < EXACT_LIMIT && self.failed == 0 {
            // SAFETY: `req < EXACT_LIMIT`, so the index is below QUICK.
            let r = unsafe { *self.quick.get_unchecked(req / GRAIN) };
            if !r.is_null() {
                // SAFETY: I10: `r` is a cached region of exactly `req`
                // bytes; its first payload word links the list.
                let next = unsafe { self.ld(r, 0, USED | CACHED) };
                // SAFETY: `req < EXACT_LIMIT`, so the index is below QUICK.
                unsafe { *self.quick.get_unchecked_mut(req / GRAIN) = next };
                #[cfg(feature = "hardened")]
                {
                    // SAFETY: I11: the cached block's poisoned payload.
                    unsafe { self.check_poison(r.add(2 * W), r.add(req - W)) };
                    if self.failed != 0 {
                        return null();
                    }
                }
                // SAFETY: I10: the header is `r`'s own; the footer already
                // says `req | USED`.
                unsafe { set_word(r, req | USED) };
                // SAFETY: I7: the payload starts one word in.
                return unsafe { r.add(W) };
            }
        }
        let extra = if small { 0 } else { align + MIN_REGION };
        let Some(need) = req.checked_add(extra) else {
            return null();
        };
        let mut r = self.find(need, false);
        if r.is_null() {
            r = self.search_slow(need);
            if r.is_null() {
                return r;
            }
        }
        // With `align > GRAIN`, the payload is the first aligned address at
        // least MIN_REGION + W into the region: the lead before it is a
        // region of its own, and at most MIN_REGION + align - GRAIN bytes,
        // so `req` bytes remain. (One formula, no case for a region that
        // happens to be aligned: code size.) With `align <= GRAIN` the
        // payload is the region's own: no lead.
        let base = r.addr() + W;
        let lead = if small {
            0
        } else {
            ((base + MIN_REGION + align - 1) & !(align - 1)) - base
        };
        // SAFETY: I4: `r` is a listed free region of at least `need` bytes.
        let size = unsafe { word(r) };
        // SAFETY: I4: `r` is listed in the bucket of its size.
        unsafe { self.unlink(r, size) };
        #[cfg(feature = "hardened")]
        if self.failed != 0 {
            return null();
        }
        // SAFETY: `lead + req <= need <= size` (above), so `[r + lead, r +
        // size)` is an unlisted part of the region of at least `req` bytes.
        let p = unsafe { self.carve(r.add(lead), size - lead, req, small) };
        if lead != 0 {
            // SAFETY: `[r, r + lead)` is the rest of the region, at least
            // MIN_REGION bytes; its successor was just marked used.
            unsafe { self.release(r, lead) };
        }
        p
    }

    /// Marks `req` bytes of the unlisted region `r` (of `size` bytes) as
    /// used and frees the rest when it can be a region of its own. Returns
    /// the payload.
    ///
    /// The used part is the region's first `req` bytes, or, when `high`,
    /// the block is small (below `EXACT_LIMIT`) and the region is not the
    /// free tail, its last: then what stays free keeps its place (next to
    /// the block before it, which may want to grow in place), and small
    /// blocks pack towards the blocks after it. Larger blocks take the
    /// front, leaving room to grow in place. The free tail is always used
    /// from the front, so that it stays next to the end sentinel and merges
    /// with the next contiguous growth.
    ///
    /// # Safety
    ///
    /// `r` is an unlisted region of `size >= req` bytes inside a root, `req`
    /// a multiple of GRAIN and at least MIN_REGION.
    #[inline(never)]
    unsafe fn carve(&mut self, r: *mut u8, size: usize, req: usize, high: bool) -> *mut u8 {
        let (mut req, mut rest) = (req, size - req);
        if rest < MIN_REGION {
            // The whole region becomes the block.
            (req, rest) = (size, 0);
        }
        // SAFETY: I1: `r + size` is the end of the region, in its root.
        let (used, free) = if high && req < EXACT_LIMIT && unsafe { r.add(size) } != self.end {
            // SAFETY: I1: `rest < size`, inside the region.
            (unsafe { r.add(rest) }, r)
        } else {
            // SAFETY: I1: `req <= size`, inside the region (or just past it
            // when `rest == 0`: then `free` is not used).
            (r, unsafe { r.add(req) })
        };
        // SAFETY: I1, I2: `[used, used + req)` lies in the region.
        unsafe { set_region(used, req, USED) };
        if rest != 0 {
            // SAFETY: I1: `[free, free + rest)` is the other part of the
            // region, a region of its own (`rest >= MIN_REGION`); the used
            // part is marked first, so the rest merges only with a free
            // neighbour outside the region (I3).
            unsafe { self.release(free, rest) };
        }
        // SAFETY: I7: the payload starts one word into the region.
        unsafe { used.add(W) }
    }

    /// Whether the neighbour at `r` whose size word is `h` may be merged
    /// with: it says used (nothing to follow), or it says free and is
    /// plausible (I12): a whole number of grains of at least `MIN_REGION`,
    /// inside the heap's span, with a footer equal to its header. O(1):
    /// one more word read. An implausible one fails the heap closed.
    #[inline(never)]
    fn neighbour_ok(&mut self, r: *mut u8, h: usize) -> bool {
        if h & USED != 0 {
            return true;
        }
        // As in `check`: with `off < lim`, this is `MIN_REGION <= h` and
        // `r + h + W <= hi` (a region is followed by at least a sentinel).
        let off = r.addr().wrapping_add(W).wrapping_sub(self.lo);
        if off < self.lim
            && h.wrapping_sub(MIN_REGION) < self.lim - off
            && h & (GRAIN - 1) == 0
            // SAFETY: I12: `[r, r + h)` lies inside the heap's span (checked
            // just before), memory the heap owns; `r` derives from a region
            // pointer.
            && unsafe { word(r) == h && word(r.add(h - W)) == h }
        {
            return true;
        }
        self.fail_closed(MISUSE_CORRUPTED);
        false
    }

    /// Frees the unlisted region `r` of `size` bytes, merging it with free
    /// neighbours (I3) and listing the result.
    ///
    /// # Safety
    ///
    /// `r` is a region start inside a root with `size` bytes; the words just
    /// before it and just after it are size words (I1).
    #[inline]
    unsafe fn release(&mut self, mut r: *mut u8, mut size: usize) {
        // SAFETY: I1: the regions of a root tile it, so `r + size` is the
        // next region or the end sentinel, inside the same root.
        let next = unsafe { r.add(size) };
        // SAFETY: I1, I2: `next` starts with a size word.
        let nh = unsafe { word(next) };
        // SAFETY: I1: the word before a region is the previous region's
        // footer (or the start sentinel's), inside the same root.
        let pf = unsafe { word(r.sub(W)) };
        // Neighbours that say "free" are checked before their links are
        // followed: a stray write into a size word must not make the merge
        // unlink through user bytes (I12).
        if !(self.neighbour_ok(next, nh) && self.neighbour_ok(r.wrapping_sub(pf), pf)) {
            return;
        }
        if nh & USED == 0 {
            // SAFETY: I2, I4: a free region (checked plausible just above)
            // is listed in its size's bucket.
            unsafe { self.unlink(next, nh) };
            size += nh;
        }
        if pf & USED == 0 {
            // SAFETY: I2: a free footer holds its region's size, so the
            // previous region starts `pf` bytes back in the same root
            // (checked plausible above).
            r = unsafe { r.sub(pf) };
            // SAFETY: I2, I4: a free region is listed in its size's bucket.
            unsafe { self.unlink(r, pf) };
            size += pf;
        }
        // SAFETY: I1: `[r, r + size)` is the merged span, inside the root.
        unsafe { set_region(r, size, 0) };
        // SAFETY: the merged region is free, unlisted, >= MIN_REGION.
        unsafe { self.link(r, size) };
    }

    // ----- growth ---------------------------------------------------------

    /// The size of the free region just before the newest end sentinel, or 0.
    fn tail_free(&self) -> usize {
        if self.end.is_null() {
            return 0;
        }
        // SAFETY: I1: the word before the end sentinel is the last region's
        // footer.
        let f = unsafe { word(self.end.sub(W)) };
        if f & USED == 0 { f } else { 0 }
    }

    /// Grows the heap so that a region of `req` bytes can exist, counting
    /// the free tail when `use_tail` (it merges with contiguous growth).
    /// Returns whether memory was added.
    #[cold]
    #[inline(never)]
    fn grow(&mut self, req: usize, use_tail: bool) -> bool {
        let tail = if use_tail { self.tail_free() } else { 0 };
        // An absurd request saturates, and the source refuses it.
        let bytes = req.saturating_sub(tail).saturating_add(GROW_SLACK);
        let Some(region) = self.source.grow(bytes) else {
            return false;
        };
        #[cfg(feature = "hardened")]
        if self.secret == 0 {
            // No entropy source in `no_std` wasm: the heap's and the first
            // region's addresses, mixed (ASLR helps on hosts).
            let x = (core::ptr::from_ref(self).addr()
                ^ region.start.as_ptr().addr().rotate_left(16))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15u64 as usize);
            self.secret = (x ^ (x >> 15)) | 1;
        }
        self.footprint += region.len;
        let start = region.start.as_ptr();
        let end_addr = region.end_addr();
        // The new end sentinel: the last word at the region phase.
        let e_addr = (end_addr & !(GRAIN - 1)) - W;
        let mut from = self.end;
        if from.is_null() || start.addr() != self.mem_end {
            // Not contiguous (or the first grow): a new root. M1: the region
            // holds at least `bytes >= GROW_SLACK` bytes, room for the
            // aligned start sentinel, a region of MIN_REGION and the end
            // sentinel.
            let r0 = start.wrapping_add(PHASE.wrapping_sub(start.addr()) & (GRAIN - 1));
            // SAFETY: M1: `[r0, r0 + ROOT_HDR)` lies inside the new region.
            unsafe { set_region(r0, ROOT_HDR, USED) };
            // SAFETY: as above: the previous-root link (I8; null for the
            // first root).
            unsafe { set_link(r0, 0, self.last_root) };
            // SAFETY: M1: the region extends past the start sentinel.
            from = unsafe { r0.add(ROOT_HDR) };
            self.last_root = r0;
            let lo = from.addr() + W;
            if self.lo == 0 || lo < self.lo {
                self.lo = lo;
            }
        }
        // Contiguous growth frees from the old end sentinel on, merging with
        // the free tail; a new root frees everything after its sentinel.
        let size = e_addr - from.addr();
        // SAFETY: M1: `[from, e_addr + W)` lies in memory the heap owns (the
        // new region, plus the old end sentinel when contiguous).
        let e = unsafe { from.add(size) };
        // SAFETY: as above: `e` is the last word at the region phase.
        unsafe { set_word(e, END_SENTINEL) };
        // SAFETY: I8: `last_root` is the live start sentinel of this root.
        unsafe { set_link(self.last_root, 1, e) };
        self.end = e;
        self.mem_end = end_addr;
        self.hi = self.hi.max(end_addr);
        // M1: every root holds at least a sentinel and a smallest region
        // past its lowest payload, so `hi >= lo + MIN_REGION`.
        self.lim = self.hi - MIN_REGION - self.lo + 1;
        // SAFETY: I1 holds around `[from, e)`: a used footer (or the free
        // tail's) before it, the new end sentinel after it.
        unsafe { self.release(from, size) };
        true
    }

    // ----- misuse checks --------------------------------------------------

    /// The cheap O(1) check of a pointer handed back: its region, or null
    /// after recording the misuse in `failed` (failing closed, I9).
    ///
    /// Catches pointers outside `[lo, hi)` or misaligned, a header that says
    /// free (double free), a size word that is implausible or disagrees
    /// with its footer (corruption), and a layout larger than the block.
    #[inline(never)]
    fn check(&mut self, ptr: NonNull<u8>, layout: Layout) -> *mut u8 {
        // A heap that failed closed has `lim == 0` (I9): nothing passes.
        let addr = ptr.as_ptr().addr();
        let off = addr.wrapping_sub(self.lo);
        let code = 'misuse: {
            if addr & ((GRAIN - 1) | (layout.align() - 1)) != 0 || off >= self.lim {
                break 'misuse MISUSE_FOREIGN;
            }
            // SAFETY: I7: a pointer inside the heap's span at a payload phase
            // has its header one word before it (checked plausible below).
            let r = unsafe { ptr.as_ptr().sub(W) };
            // SAFETY: `r` lies inside the heap's address span (checked above).
            let h = unsafe { word(r) };
            if h & (GRAIN - 1) != USED {
                break 'misuse if h & (USED | CACHED) != USED {
                    MISUSE_DOUBLE_FREE
                } else {
                    MISUSE_CORRUPTED
                };
            }
            let size = h - USED;
            // `off < lim`, so this is `MIN_REGION <= size <= hi - addr`.
            if size.wrapping_sub(MIN_REGION) >= self.lim - off
                // SAFETY: I2: the region ends below `hi` (checked just
                // before), so its footer is readable.
                || unsafe { word(r.add(size - W)) } != h
            {
                break 'misuse MISUSE_CORRUPTED;
            }
            if layout.size() > size - OVERHEAD {
                break 'misuse MISUSE_LAYOUT;
            }
            return r;
        };
        self.fail_closed(code);
        null()
    }

    /// The error for a misuse [`check`](Self::check) just caught, given the
    /// failure code from before the call.
    fn misuse(&self, before: u8, ptr: NonNull<u8>) -> HeapError {
        let addr = ptr.as_ptr().addr();
        match if before != 0 { 0 } else { self.failed } {
            MISUSE_FOREIGN => HeapError::ForeignPointer { addr },
            MISUSE_DOUBLE_FREE => HeapError::DoubleFree { addr },
            MISUSE_CORRUPTED => HeapError::Corrupted { addr },
            MISUSE_LAYOUT => HeapError::LayoutMismatch { addr },
            _ => HeapError::FailedClosed,
        }
    }

    /// Frees the used region `r`.
    ///
    /// # Safety
    ///
    /// `r` is a used region (checked by [`check`](Self::check)).
    #[inline]
    unsafe fn free_region(&mut self, r: *mut u8) {
        // SAFETY: I2: `r` is a used region (the caller's contract).
        let size = unsafe { word(r) } - USED;
        if size < EXACT_LIMIT {
            // Park it in its quick list (I10), unmerged; the CACHED header
            // bit makes a second free of it a detected double free.
            // SAFETY: `size < EXACT_LIMIT`, so the index is below QUICK.
            let head = unsafe { *self.quick.get_unchecked(size / GRAIN) };
            // SAFETY: I10: the region is at least MIN_REGION bytes, so its
            // first payload word is its own.
            unsafe { self.st(r, 0, head) };
            // SAFETY: `size < EXACT_LIMIT`, so the index is below QUICK.
            unsafe { *self.quick.get_unchecked_mut(size / GRAIN) = r };
            // SAFETY: I11: the rest of the block's payload, before its footer.
            #[cfg(feature = "hardened")]
            unsafe {
                Self::poison(r.add(2 * W), r.add(size - W))
            };
            // SAFETY: I2: `r`'s header word.
            unsafe { set_word(r, size | USED | CACHED) };
            return;
        }
        // SAFETY: as above. Clearing the used bit first makes a later
        // double free of `r` visible even when it merges into a free
        // predecessor.
        unsafe { set_word(r, size) };
        // SAFETY: I1: `r` is a region of `size` bytes inside a root.
        unsafe { self.release(r, size) };
    }

    /// Frees every block parked in the quick lists for real, merging them
    /// with their free neighbours. The heap does this itself before it
    /// would grow (then it searches again), and before a trim;
    /// call it to see the merged layout (in [`dump`](Heap::dump) or
    /// [`fragmentation_map`](Heap::fragmentation_map)).
    #[cold]
    #[inline(never)]
    pub fn flush(&mut self) {
        // One flat loop (code size): list `i` is emptied, then `i` moves on.
        let mut i = 0;
        while i < QUICK {
            let r = self.quick[i];
            if r.is_null() {
                i += 1;
                continue;
            }
            // SAFETY: I10: `r` is a cached region; its first payload word
            // links the list.
            self.quick[i] = unsafe { self.ld(r, 0, USED | CACHED) };
            let size = i * GRAIN;
            #[cfg(feature = "hardened")]
            {
                // SAFETY: I11: the cached block's poisoned payload.
                unsafe { self.check_poison(r.add(2 * W), r.add(size - W)) };
                if self.failed != 0 {
                    return;
                }
            }
            // SAFETY: I10: `r` is a used region of `size` bytes, now out of
            // its list; its header becomes a free size word first.
            unsafe { set_word(r, size) };
            // SAFETY: I1: `r` is a region of `size` bytes inside a root.
            unsafe { self.release(r, size) };
        }
    }

    /// Frees a block, panicking with the misuse's description when the
    /// check catches one (a host-side convenience; the heap fails closed
    /// first).
    ///
    /// # Safety
    ///
    /// As for [`RawHeap::dealloc`].
    ///
    /// # Panics
    ///
    /// On a detected misuse (double free, foreign pointer, corrupted
    /// region, layout mismatch, or a heap that failed closed earlier).
    pub unsafe fn free(&mut self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's contract.
        if let Err(e) = unsafe { self.dealloc(ptr, layout) } {
            panic!("linmem-emmalloc: {e}");
        }
    }

    // ----- realloc --------------------------------------------------------

    /// Resizes the used region `r` in place to hold `new_size` bytes:
    /// shrink by splitting off the tail, grow into a free successor or, when
    /// `r` is last (alone or before the free tail), by growing the memory
    /// contiguously.
    ///
    /// # Safety
    ///
    /// `r` is a used region.
    unsafe fn resize(&mut self, r: *mut u8, new_size: usize) -> bool {
        let req = region_for(new_size);
        // SAFETY: I2: `r` is a used region (the caller's contract).
        let mut size = unsafe { word(r) } - USED;
        if req > size {
            // SAFETY: I1: the next region or the end sentinel follows `r`.
            let next = unsafe { r.add(size) };
            // SAFETY: I1, I2: `next` starts with a size word.
            let mut nh = unsafe { word(next) };
            let free = if nh & USED == 0 { nh } else { 0 };
            if size + free < req
                && next.wrapping_add(free) == self.end
                && self.find(req, true).is_null()
            {
                // Last in the newest root (perhaps before the free tail)
                // and no free region could take the block: grow only what
                // is missing; contiguous growth merges into the region
                // after `r` (which stays used, so `next` stays put).
                self.grow(req - size - free, false);
                // SAFETY: I1: `next` is still a region start or the end
                // sentinel.
                nh = unsafe { word(next) };
            }
            if nh & USED != 0 || size + nh < req {
                return false;
            }
            if !self.neighbour_ok(next, nh) {
                return false;
            }
            // SAFETY: I2, I4: `next` is a free region (checked plausible
            // just above), listed.
            unsafe { self.unlink(next, nh) };
            #[cfg(feature = "hardened")]
            if self.failed != 0 {
                return false;
            }
            size += nh;
        }
        // SAFETY: `[r, r + size)` is now one unlisted region of at least
        // `req` bytes (the used block plus the absorbed successor).
        unsafe { self.carve(r, size, req, false) };
        true
    }

    /// Resizes a block in place, or fails leaving it untouched (`None`).
    ///
    /// # Safety
    ///
    /// As for [`RawHeap::realloc`].
    pub unsafe fn realloc_try(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        let r = self.check(ptr, layout);
        // SAFETY: `check` found a used region.
        (!r.is_null() && unsafe { self.resize(r, new_size) }).then_some(ptr)
    }

    // ----- trim -----------------------------------------------------------

    /// Hands the free tail of the newest root back to the source, keeping at
    /// least `keep_bytes` of it free.
    ///
    /// Sources that cannot shrink (wasm) release nothing; the result still
    /// says how much could have been released.
    pub fn trim(&mut self, keep_bytes: usize) -> Trim {
        if self.failed != 0 {
            return Trim::default();
        }
        self.flush();
        let tail = self.tail_free();
        if tail == 0 {
            return Trim::default();
        }
        // SAFETY: I1: the free tail region ends at the end sentinel.
        let t = unsafe { self.end.sub(tail) };
        let keep = keep_bytes.max(MIN_REGION).saturating_add(W + GRAIN);
        let keep_end = t.addr().saturating_add(keep);
        let releasable = self.mem_end.saturating_sub(keep_end) & !(PAGE_SIZE - 1);
        if releasable == 0 {
            return Trim::default();
        }
        // SAFETY: I8: `mem_end` is the end of the newest root's memory,
        // `mem_end - end.addr()` bytes past the end sentinel.
        let mem_end = unsafe { self.end.add(self.mem_end - self.end.addr()) };
        // SAFETY: M1, I8: `[mem_end - releasable, mem_end)` lies inside the
        // free tail (past `keep_end`), which the heap owns and no longer
        // touches once released.
        let released = unsafe {
            self.source
                .release_tail(NonNull::new_unchecked(mem_end), releasable)
        };
        if released != 0 {
            let new_end = self.mem_end - released;
            let e_addr = (new_end & !(GRAIN - 1)) - W;
            let size = e_addr - t.addr();
            // SAFETY: I4: the free tail region is listed in its bucket.
            unsafe { self.unlink(t, tail) };
            // SAFETY: I1: `[t, e)` lies inside the old tail region; it is at
            // least MIN_REGION long since `e >= keep_end - W - GRAIN`.
            let e = unsafe { t.add(size) };
            // SAFETY: as above: the new end sentinel lies below `new_end`.
            unsafe { set_word(e, END_SENTINEL) };
            // SAFETY: I8: `last_root` is the live start sentinel of this root.
            unsafe { set_link(self.last_root, 1, e) };
            self.end = e;
            // SAFETY: I1: `[t, e)` sits between a used region and the new
            // end sentinel.
            unsafe { self.release(t, size) };
            self.peak = self.peak_footprint();
            self.footprint -= released;
            if self.hi == self.mem_end {
                self.hi = new_end;
                // The kept tail is at least MIN_REGION + W long.
                self.lim = self.hi - MIN_REGION - self.lo + 1;
            }
            self.mem_end = new_end;
        }
        Trim {
            releasable,
            released,
        }
    }
}

impl<S: MemorySource> RawHeap for Heap<S> {
    #[inline]
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        NonNull::new(self.malloc(layout.size(), layout.align()))
    }

    #[inline]
    unsafe fn dealloc(&mut self, ptr: NonNull<u8>, layout: Layout) -> Result<(), HeapError> {
        let before = self.failed;
        let r = self.check(ptr, layout);
        if r.is_null() {
            return Err(self.misuse(before, ptr));
        }
        // SAFETY: `check` found a used region.
        unsafe { self.free_region(r) };
        if self.failed != 0 {
            // The merge found a damaged neighbour (I12).
            return Err(self.misuse(before, ptr));
        }
        Ok(())
    }

    unsafe fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        let r = self.check(ptr, layout);
        if r.is_null() {
            return None;
        }
        // SAFETY: `check` found a used region.
        if unsafe { self.resize(r, new_size) } {
            return Some(ptr);
        }
        let new = NonNull::new(self.malloc(new_size, layout.align()))?;
        // SAFETY: both blocks are live and distinct; the old one holds at
        // least `layout.size()` bytes and the new one `new_size`.
        unsafe {
            core::ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), layout.size().min(new_size))
        };
        // SAFETY: `check` found `r` a used region; its block is not used
        // again.
        unsafe { self.free_region(r) };
        Some(new)
    }

    unsafe fn usable_size(&self, ptr: NonNull<u8>, _layout: Layout) -> usize {
        // SAFETY: the caller's contract: `ptr` is a live block, so its
        // header is one word before it (I7, I2).
        unsafe { word(ptr.as_ptr().sub(W)) - USED - OVERHEAD }
    }

    /// Walks the heap: the block counts are not kept in counters, so that
    /// allocation and free stay small (the footprint is).
    fn stats(&self) -> HeapStats {
        self.summary()
    }

    fn verify(&self) -> Result<HeapStats, Violation> {
        self.verify_all()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::verify::RegionKind;
    use linmem_memory::{SimConfig, SimMemory};
    use std::vec::Vec;

    fn heap(max_pages: usize) -> (Heap<SimMemory>, SimMemory) {
        let mem = SimMemory::new(0, max_pages);
        (Heap::new(mem.clone()), mem)
    }

    fn lay(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    fn ok(h: &Heap<SimMemory>) -> HeapStats {
        match h.verify() {
            Ok(s) => s,
            Err(v) => panic!("{v}"),
        }
    }

    fn roots(h: &Heap<SimMemory>) -> usize {
        let mut n = 0;
        h.walk(&mut Default::default(), |_, _, k| {
            n += usize::from(k == RegionKind::RootStart)
        })
        .unwrap();
        n
    }

    fn fill(p: NonNull<u8>, len: usize, v: u8) {
        // SAFETY: test blocks are live for at least `len` bytes.
        unsafe { p.as_ptr().write_bytes(v, len) };
    }

    fn holds(p: NonNull<u8>, len: usize, v: u8) -> bool {
        // SAFETY: test blocks are live for at least `len` bytes.
        unsafe { core::slice::from_raw_parts(p.as_ptr(), len) }
            .iter()
            .all(|&b| b == v)
    }

    #[test]
    fn alloc_returns_aligned_writable_blocks_and_free_reuses_them() {
        let (mut h, _m) = heap(16);
        let a = h.alloc(lay(24, 8)).unwrap();
        assert_eq!(a.as_ptr() as usize % GRAIN, 0);
        fill(a, 24, 0xAB);
        let s = ok(&h);
        assert_eq!((s.live_blocks, s.in_use), (1, region_for(24)));
        // SAFETY: `a` is live with this layout.
        unsafe { h.dealloc(a, lay(24, 8)).unwrap() };
        let s = ok(&h);
        // Cached (counted free) next to the free tail.
        assert_eq!((s.live_blocks, s.in_use, s.free_blocks), (0, 0, 2));
        let b = h.alloc(lay(24, 8)).unwrap();
        assert_eq!(a, b);
        ok(&h);
        // SAFETY: `b` is live with this layout.
        unsafe { h.dealloc(b, lay(24, 8)).unwrap() };
        h.flush();
        let s = ok(&h);
        assert_eq!((s.live_blocks, s.in_use, s.free_blocks), (0, 0, 1));
    }

    #[test]
    fn small_frees_are_reused_exactly_from_their_bucket() {
        let (mut h, _m) = heap(16);
        let keep: Vec<_> = (0..8)
            .map(|i| h.alloc(lay(8 + 16 * i, 8)).unwrap())
            .collect();
        let x = h.alloc(lay(40, 8)).unwrap();
        let _guard = h.alloc(lay(8, 8)).unwrap();
        // SAFETY: `x` is live with this layout.
        unsafe { h.dealloc(x, lay(40, 8)).unwrap() };
        assert_eq!(h.alloc(lay(33, 8)).unwrap(), x);
        assert_eq!(keep.len(), 8);
        ok(&h);
    }

    #[test]
    fn free_coalesces_with_both_neighbours() {
        let (mut h, _m) = heap(16);
        // Above the quick-list sizes, so that frees merge at once.
        let l = lay(300, 8);
        let v: Vec<_> = (0..5).map(|_| h.alloc(l).unwrap()).collect();
        // SAFETY: every block is live with `l` and freed once.
        unsafe {
            h.dealloc(v[1], l).unwrap();
            h.dealloc(v[3], l).unwrap();
            assert_eq!(ok(&h).free_blocks, 3);
            h.dealloc(v[2], l).unwrap();
        }
        let s = ok(&h);
        assert_eq!(s.free_blocks, 2);
        // The merged region serves a request of three blocks at the same place.
        let big = h.alloc(lay(3 * region_for(300) - OVERHEAD, 8)).unwrap();
        assert_eq!(big, v[1]);
        ok(&h);
    }

    #[test]
    fn every_power_of_two_alignment_up_to_64k_works() {
        let (mut h, _m) = heap(64);
        let mut align = 1;
        while align <= 65536 {
            for size in [1, 100, 5000] {
                let l = lay(size, align);
                let p = h.alloc(l).unwrap();
                assert_eq!(p.as_ptr() as usize % align, 0, "align {align}");
                fill(p, size, 0x5A);
                ok(&h);
                // SAFETY: `p` is live with `l`.
                assert!(unsafe { h.usable_size(p, l) } >= size);
                // SAFETY: `p` is live with `l`.
                unsafe { h.dealloc(p, l).unwrap() };
            }
            align *= 2;
        }
        let s = ok(&h);
        assert_eq!(s.live_blocks, 0);
    }

    #[test]
    fn repeated_64k_aligned_alloc_free_does_not_balloon_the_heap() {
        let (mut h, m) = heap(1024);
        let rounds = if cfg!(miri) { 8 } else { 500 };
        for i in 0..rounds {
            let size = [1, 100, 65536, 70000][i % 4];
            let l = lay(size, 65536);
            let p = h.alloc(l).unwrap();
            assert_eq!(p.as_ptr() as usize % 65536, 0);
            // SAFETY: `p` is live with `l`.
            unsafe { h.dealloc(p, l).unwrap() };
        }
        ok(&h);
        // 70000 + 65536 + overhead fits in 4 pages; nothing may accumulate.
        assert!(m.pages() <= 4, "grew to {} pages", m.pages());
    }

    #[test]
    fn one_64k_aligned_alloc_grows_by_at_most_size_plus_align_plus_overhead() {
        for size in [1usize, 4096, 65536, 200_000] {
            let (mut h, m) = heap(64);
            let p = h.alloc(lay(size, 65536)).unwrap();
            assert_eq!(p.as_ptr() as usize % 65536, 0);
            let bound = size + 65536 + MIN_REGION + OVERHEAD + GROW_SLACK + GRAIN;
            assert!(
                m.pages() <= bound.div_ceil(PAGE_SIZE),
                "size {size}: {} pages",
                m.pages()
            );
            ok(&h);
        }
    }

    #[test]
    fn aligned_blocks_survive_neighbouring_frees() {
        let (mut h, _m) = heap(64);
        let mut v = Vec::new();
        for i in 0..40 {
            let l = lay(8 + i * 24, 1 << (4 + i % 9));
            let p = h.alloc(l).unwrap();
            fill(p, l.size(), i as u8);
            v.push((p, l, i as u8));
        }
        for (p, l, b) in v.iter().step_by(2) {
            assert!(holds(*p, l.size(), *b));
            // SAFETY: each block is live with its layout, freed once.
            unsafe { h.dealloc(*p, *l).unwrap() };
        }
        ok(&h);
        for (p, l, b) in v.iter().skip(1).step_by(2) {
            assert!(holds(*p, l.size(), *b));
        }
    }

    #[test]
    fn sizes_near_isize_max_return_none_and_the_heap_stays_usable() {
        let (mut h, _m) = heap(16);
        for size in [
            isize::MAX as usize - 7,
            isize::MAX as usize - 4096,
            usize::MAX / 4,
        ] {
            assert!(h.alloc(lay(size, 8)).is_none());
            assert!(h.alloc(lay(size - 2 * 65536, 65536)).is_none());
        }
        assert!(h.alloc(lay(64, 8)).is_some());
        assert!(!h.is_failed_closed());
        ok(&h);
    }

    #[test]
    fn failed_grow_returns_none_and_the_heap_stays_usable() {
        let (mut h, m) = heap(16);
        m.fail_next_grows(1);
        assert!(h.alloc(lay(64, 8)).is_none());
        ok(&h);
        let a = h.alloc(lay(64, 8)).unwrap();
        m.fail_next_grows(1);
        assert!(h.alloc(lay(200_000, 8)).is_none());
        m.fail_next_grows(1);
        assert!(h.alloc(lay(100, 4096)).is_some());
        assert!(h.alloc(lay(2 * PAGE_SIZE * 16, 8)).is_none());
        // SAFETY: `a` is live.
        unsafe { h.dealloc(a, lay(64, 8)).unwrap() };
        ok(&h);
    }

    #[test]
    fn near_out_of_memory_the_search_walks_past_a_bucket_head_that_does_not_fit() {
        let (mut h, m) = heap(1);
        let small = region_for(264 - OVERHEAD);
        let large = region_for(312 - OVERHEAD);
        assert_eq!(bucket(small), bucket(large));
        let la = lay(small - OVERHEAD, 8);
        let lb = lay(large - OVERHEAD, 8);
        let a = h.alloc(la).unwrap();
        let _g1 = h.alloc(lay(8, 8)).unwrap();
        let b = h.alloc(lb).unwrap();
        let _g2 = h.alloc(lay(8, 8)).unwrap();
        let tail = h.tail_free();
        let _rest = h.alloc(lay(tail - OVERHEAD, 8)).unwrap();
        // SAFETY: `a` and `b` are live with these layouts.
        unsafe {
            h.dealloc(b, lb).unwrap();
            h.dealloc(a, la).unwrap();
        }
        // The bucket's head is `a`, too small; `b` behind it fits. The
        // memory cannot grow (one page at most).
        let c = h.alloc(lay(large - OVERHEAD - GRAIN, 8)).unwrap();
        assert_eq!(c, b);
        assert_eq!(m.pages(), 1);
        assert_eq!(m.failed_grows(), 0, "found without trying to grow");
        ok(&h);
    }

    #[test]
    fn contiguous_growth_extends_the_root_and_merges_the_free_tail() {
        let (mut h, m) = heap(16);
        let a = h.alloc(lay(40_000, 8)).unwrap();
        let b = h.alloc(lay(40_000, 8)).unwrap();
        assert_eq!(m.grows(), 2);
        assert_eq!(roots(&h), 1);
        // The second block starts where the first ends: the tail was used.
        assert_eq!(
            b.as_ptr() as usize - a.as_ptr() as usize,
            region_for(40_000)
        );
        let s = ok(&h);
        assert_eq!(s.free_blocks, 1);
        // Only what the tail lacked was grown: two pages in all.
        assert_eq!(m.pages(), 2);
    }

    #[test]
    fn foreign_growth_starts_a_new_root() {
        let (mut h, m) = heap(16);
        let l = lay(40_000, 8);
        let a = h.alloc(l).unwrap();
        assert!(m.foreign_grow(1));
        let b = h.alloc(l).unwrap();
        assert_eq!(roots(&h), 2);
        ok(&h);
        // SAFETY: both blocks are live with `l`.
        unsafe {
            h.dealloc(a, l).unwrap();
            h.dealloc(b, l).unwrap();
        }
        let s = ok(&h);
        assert_eq!((s.live_blocks, s.free_blocks), (0, 2));
        // Growth after the new root continues it.
        let _c = h.alloc(lay(100_000, 8)).unwrap();
        assert_eq!(roots(&h), 2);
        ok(&h);
    }

    #[test]
    fn odd_sized_first_region_from_heap_base_is_aligned() {
        for base in [1001usize, 16, 65000, 65530] {
            let mem = SimMemory::with_config(SimConfig {
                initial_pages: 1,
                max_pages: 16,
                heap_base: Some(base),
            });
            let mut h = Heap::new(mem.clone());
            let p = h.alloc(lay(10, 8)).unwrap();
            assert!(p.as_ptr() as usize >= mem.base_addr() + base);
            assert_eq!(p.as_ptr() as usize % GRAIN, 0);
            let q = h.alloc(lay(300, 16)).unwrap();
            assert_eq!(q.as_ptr() as usize % 16, 0);
            ok(&h);
        }
    }

    #[test]
    fn double_free_is_detected_and_the_heap_fails_closed() {
        let (mut h, _m) = heap(16);
        let l = lay(32, 8);
        let a = h.alloc(l).unwrap();
        let b = h.alloc(l).unwrap();
        // SAFETY: `a` is live; the second free is the misuse under test.
        unsafe {
            h.dealloc(a, l).unwrap();
            let addr = a.as_ptr() as usize;
            assert_eq!(h.dealloc(a, l), Err(HeapError::DoubleFree { addr }));
        }
        assert!(h.is_failed_closed());
        assert!(h.alloc(l).is_none());
        // SAFETY: `b` is live, but the heap refuses all work now.
        unsafe {
            assert_eq!(h.dealloc(b, l), Err(HeapError::FailedClosed));
            assert!(h.realloc(b, l, 64).is_none());
        }
        ok(&h);
    }

    #[test]
    fn double_free_after_merging_into_a_free_predecessor_is_detected() {
        let (mut h, _m) = heap(16);
        let l = lay(48, 8);
        let a = h.alloc(l).unwrap();
        let b = h.alloc(l).unwrap();
        let _c = h.alloc(l).unwrap();
        // SAFETY: `a`, `b` are live; the last free is the misuse.
        unsafe {
            h.dealloc(a, l).unwrap();
            h.dealloc(b, l).unwrap();
            assert!(matches!(h.dealloc(b, l), Err(HeapError::DoubleFree { .. })));
        }
    }

    #[test]
    fn foreign_and_misaligned_pointers_are_detected() {
        let (mut h, _m) = heap(16);
        let l = lay(32, 8);
        let a = h.alloc(l).unwrap();
        let mut local = [0u64; 8];
        let foreign = NonNull::new(local.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: the misuse under test; the check reads nothing outside the heap.
        let e = unsafe { h.dealloc(foreign, l) };
        assert!(matches!(e, Err(HeapError::ForeignPointer { .. })));
        let (mut h, _m) = heap(16);
        let a2 = h.alloc(l).unwrap();
        // SAFETY: a misaligned pointer into a live block: the misuse under test.
        let e = unsafe { h.dealloc(a2.byte_add(4), l) };
        assert!(matches!(e, Err(HeapError::ForeignPointer { .. })));
        assert!(h.alloc(l).is_none());
        let _ = a;
    }

    #[test]
    fn a_header_that_disagrees_with_its_footer_is_corruption() {
        let (mut h, _m) = heap(16);
        let l = lay(32, 8);
        let a = h.alloc(l).unwrap();
        let _b = h.alloc(l).unwrap();
        // SAFETY: `a` is live; writing its own usable bytes plus the footer
        // word (the overflow under test) stays inside the heap.
        unsafe {
            let n = h.usable_size(a, l);
            a.as_ptr().write_bytes(0x77, n + W);
            assert!(matches!(h.dealloc(a, l), Err(HeapError::Corrupted { .. })));
        }
        assert!(h.is_failed_closed());
        assert_eq!(h.validate().unwrap_err().invariant, 2);
    }

    #[test]
    fn a_layout_larger_than_the_block_is_a_mismatch() {
        let (mut h, _m) = heap(16);
        let a = h.alloc(lay(32, 8)).unwrap();
        // SAFETY: the misuse under test: a larger layout than allocated.
        let e = unsafe { h.dealloc(a, lay(4096, 8)) };
        assert!(matches!(e, Err(HeapError::LayoutMismatch { .. })));
    }

    #[test]
    #[should_panic(expected = "double free")]
    fn free_panics_with_the_misuse_description() {
        let (mut h, _m) = heap(16);
        let l = lay(32, 8);
        let a = h.alloc(l).unwrap();
        // SAFETY: the second free is the misuse under test.
        unsafe {
            h.free(a, l);
            h.free(a, l);
        }
    }

    #[test]
    fn realloc_shrink_keeps_the_block_and_frees_the_tail() {
        let (mut h, _m) = heap(16);
        let l = lay(1000, 8);
        let a = h.alloc(l).unwrap();
        let _b = h.alloc(l).unwrap();
        fill(a, 1000, 3);
        let before = ok(&h).free_blocks;
        // SAFETY: `a` is live with `l`.
        let p = unsafe { h.realloc(a, l, 100) }.unwrap();
        assert_eq!(p, a);
        assert!(holds(p, 100, 3));
        let s = ok(&h);
        assert_eq!(s.free_blocks, before + 1);
        assert_eq!(s.in_use, region_for(100) + region_for(1000));
    }

    #[test]
    fn realloc_grows_into_a_following_free_region() {
        let (mut h, _m) = heap(16);
        let l = lay(300, 8);
        let a = h.alloc(l).unwrap();
        let b = h.alloc(l).unwrap();
        let _c = h.alloc(l).unwrap();
        fill(a, 300, 9);
        // SAFETY: `b` is live with `l`; then `a` is.
        unsafe {
            h.dealloc(b, l).unwrap();
            let p = h.realloc(a, l, 500).unwrap();
            assert_eq!(p, a);
            assert!(holds(p, 300, 9));
        }
        ok(&h);
    }

    #[test]
    fn realloc_of_the_last_block_grows_memory_in_place() {
        let (mut h, m) = heap(16);
        let _a = h.alloc(lay(100, 8)).unwrap();
        let tail = h.tail_free();
        let l = lay(tail - OVERHEAD, 8);
        let last = h.alloc(l).unwrap();
        assert_eq!(h.tail_free(), 0);
        fill(last, l.size(), 4);
        // SAFETY: `last` is live with `l`.
        let p = unsafe { h.realloc(last, l, 200_000) }.unwrap();
        assert_eq!(p, last);
        assert!(holds(p, l.size(), 4));
        assert!(m.pages() <= 5);
        assert_eq!(roots(&h), 1);
        ok(&h);
    }

    #[test]
    fn realloc_moves_when_there_is_no_room_and_keeps_the_contents() {
        let (mut h, _m) = heap(16);
        let l = lay(64, 16);
        let a = h.alloc(l).unwrap();
        let _b = h.alloc(l).unwrap();
        fill(a, 64, 0xC3);
        // SAFETY: `a` is live with `l`.
        let p = unsafe { h.realloc(a, l, 5000) }.unwrap();
        assert_ne!(p, a);
        assert_eq!(p.as_ptr() as usize % 16, 0);
        assert!(holds(p, 64, 0xC3));
        let s = ok(&h);
        assert_eq!(s.live_blocks, 2);
    }

    #[test]
    fn realloc_try_fails_without_touching_the_block() {
        let (mut h, _m) = heap(16);
        let l = lay(64, 8);
        let a = h.alloc(l).unwrap();
        let _b = h.alloc(l).unwrap();
        fill(a, 64, 0x11);
        let before = ok(&h);
        // SAFETY: `a` is live with `l`.
        unsafe {
            assert!(h.realloc_try(a, l, 5000).is_none());
            assert!(holds(a, 64, 0x11));
            assert_eq!(ok(&h), before);
            assert_eq!(h.realloc_try(a, l, 16), Some(a));
        }
        assert!(!h.is_failed_closed());
        ok(&h);
    }

    #[test]
    fn usable_size_covers_the_request_and_the_rounding() {
        let (mut h, _m) = heap(16);
        for size in [0, 1, 7, 8, 9, 100, 4095] {
            let l = lay(size, 8);
            let p = h.alloc(l).unwrap();
            // SAFETY: `p` is live with `l`.
            let n = unsafe { h.usable_size(p, l) };
            assert!(n >= size && n < size + MIN_REGION + GRAIN);
            fill(p, n, 1);
        }
        ok(&h);
    }

    #[test]
    fn trim_returns_the_free_tail_to_a_shrinkable_source() {
        let (mut h, m) = heap(16);
        let small = h.alloc(lay(100, 8)).unwrap();
        let big = lay(5 * PAGE_SIZE, 8);
        let p = h.alloc(big).unwrap();
        let pages = m.pages();
        // SAFETY: `p` is live with `big`.
        unsafe { h.dealloc(p, big).unwrap() };
        let t = h.trim(0);
        assert!(t.released > 0 && t.released == t.releasable);
        assert_eq!(m.pages(), pages - t.released / PAGE_SIZE);
        let s = ok(&h);
        assert_eq!(s.footprint, m.pages() * PAGE_SIZE);
        // Growth after a trim continues the root.
        let q = h.alloc(big).unwrap();
        assert_eq!(roots(&h), 1);
        ok(&h);
        // SAFETY: both are live.
        unsafe {
            h.dealloc(q, big).unwrap();
            h.dealloc(small, lay(100, 8)).unwrap();
        }
        ok(&h);
    }

    #[test]
    fn trim_keeps_the_requested_bytes_and_reports_nothing_when_the_tail_is_used() {
        let (mut h, m) = heap(16);
        let big = lay(6 * PAGE_SIZE, 8);
        let p = h.alloc(big).unwrap();
        // SAFETY: `p` is live with `big`.
        unsafe { h.dealloc(p, big).unwrap() };
        let t = h.trim(3 * PAGE_SIZE);
        assert!(t.released > 0);
        assert!(h.tail_free() >= 3 * PAGE_SIZE);
        assert!(m.pages() >= 3);
        ok(&h);
        let tail = h.tail_free();
        let _all = h.alloc(lay(tail - OVERHEAD, 8)).unwrap();
        assert_eq!(h.trim(0), Trim::default());
        ok(&h);
    }

    #[test]
    fn trim_on_a_source_that_cannot_shrink_reports_what_could_be_released() {
        let mut buf = std::vec![0u64; 3 * PAGE_SIZE / 8 + 5];
        let len = buf.len() * 8;
        let start = NonNull::new(buf.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: `buf` outlives the heap (declared before it, so dropped
        // after it) and is used only through it meanwhile.
        let src = unsafe { linmem_memory::FixedRegion::from_raw(start, len) };
        let mut h = Heap::new(src);
        let a = h.alloc(lay(100, 8)).unwrap();
        let t = h.trim(0);
        assert_eq!(t.released, 0);
        assert_eq!(t.releasable, 2 * PAGE_SIZE);
        assert_eq!(h.trim(PAGE_SIZE).releasable, PAGE_SIZE);
        // SAFETY: `a` is live.
        unsafe { h.dealloc(a, lay(100, 8)).unwrap() };
        assert!(h.verify().is_ok());
        // `h` was declared after `buf`, so it is dropped first.
    }

    #[test]
    fn a_heap_that_failed_closed_refuses_even_its_lowest_block() {
        let (mut h, _m) = heap(16);
        let l = lay(300, 8);
        let first = h.alloc(l).unwrap();
        assert_eq!(first.as_ptr() as usize, h.lo);
        let mut local = [0u64; 8];
        let foreign = NonNull::new(local.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: the misuse under test, then a valid free the failed heap
        // must refuse.
        unsafe {
            let e = h.dealloc(foreign, l);
            assert!(matches!(e, Err(HeapError::ForeignPointer { .. })));
            assert_eq!(h.dealloc(first, l), Err(HeapError::FailedClosed));
            assert!(h.realloc(first, l, 10).is_none());
            assert!(h.realloc_try(first, l, 10).is_none());
        }
        assert!(h.alloc(lay(8, 8)).is_none());
        let s = ok(&h);
        assert_eq!(s.live_blocks, 1);
    }

    #[test]
    fn a_freed_small_block_is_cached_and_served_to_the_next_request_of_its_size() {
        let (mut h, _m) = heap(16);
        let l = lay(40, 8);
        let a = h.alloc(l).unwrap();
        let _guard = h.alloc(l).unwrap();
        // SAFETY: `a` is live with `l`.
        unsafe { h.dealloc(a, l).unwrap() };
        let mut out = std::string::String::new();
        h.dump(&mut out).unwrap();
        assert_eq!(out.lines().filter(|x| x.ends_with(" cached")).count(), 1);
        // A different size does not take it; the same size does.
        let other = h.alloc(lay(100, 8)).unwrap();
        assert_ne!(other, a);
        assert_eq!(h.alloc(l).unwrap(), a);
        ok(&h);
    }

    #[test]
    fn a_double_free_of_a_cached_block_is_detected() {
        let (mut h, _m) = heap(16);
        let l = lay(40, 8);
        let a = h.alloc(l).unwrap();
        // SAFETY: `a` is live; the second free is the misuse under test.
        unsafe {
            h.dealloc(a, l).unwrap();
            let addr = a.as_ptr() as usize;
            assert_eq!(h.dealloc(a, l), Err(HeapError::DoubleFree { addr }));
        }
        assert!(h.is_failed_closed());
        assert!(h.alloc(l).is_none(), "the quick lists refuse too");
        ok(&h);
    }

    #[test]
    fn cached_blocks_merge_before_the_heap_would_grow() {
        let (mut h, m) = heap(1);
        let l = lay(100, 8);
        let mut v = Vec::new();
        while let Some(p) = h.alloc(l) {
            v.push(p);
        }
        assert!(v.len() > 100);
        for p in v.drain(..) {
            // SAFETY: each block is live with `l`, freed once.
            unsafe { h.dealloc(p, l).unwrap() };
        }
        // All cached; a large request merges them and fits without growing.
        let big = h.alloc(lay(30_000, 8));
        assert!(big.is_some());
        assert_eq!(m.pages(), 1);
        ok(&h);
    }

    #[cfg(feature = "hardened")]
    #[test]
    fn hardened_a_write_to_a_freed_small_block_is_caught_on_reuse() {
        let (mut h, _m) = heap(16);
        let l = lay(40, 8);
        let a = h.alloc(l).unwrap();
        let _guard = h.alloc(l).unwrap();
        // SAFETY: `a` is live with `l`; the write after the free is the
        // use-after-free under test (the block stays heap memory).
        unsafe {
            h.dealloc(a, l).unwrap();
            a.as_ptr().add(2 * W).write(0x42);
        }
        assert!(h.alloc(l).is_none(), "the poisoned block is not handed out");
        assert!(h.is_failed_closed());
        assert!(h.alloc(lay(8, 8)).is_none());
    }

    #[cfg(feature = "hardened")]
    #[test]
    fn hardened_a_write_to_a_freed_large_region_is_caught_on_reuse() {
        let (mut h, _m) = heap(16);
        let l = lay(1000, 8);
        let a = h.alloc(l).unwrap();
        let _guard = h.alloc(l).unwrap();
        // SAFETY: `a` is live with `l`; the write after the free lands in
        // the freed region's poisoned prefix (use-after-free under test).
        unsafe {
            h.dealloc(a, l).unwrap();
            a.as_ptr().add(3 * W).write(0x42);
        }
        assert!(h.alloc(l).is_none());
        assert!(h.is_failed_closed());
    }

    #[cfg(feature = "hardened")]
    #[test]
    fn hardened_a_forged_free_list_link_is_caught() {
        let (mut h, _m) = heap(16);
        let l = lay(1000, 8);
        let a = h.alloc(l).unwrap();
        let _g1 = h.alloc(l).unwrap();
        let b = h.alloc(l).unwrap();
        let _g2 = h.alloc(l).unwrap();
        // SAFETY: both are live with `l`; then `b`'s freed region gets a
        // forged next link: the plain address of `a`'s region, as an
        // attacker without the secret would write it.
        unsafe {
            h.dealloc(a, l).unwrap();
            h.dealloc(b, l).unwrap();
            let rb = b.as_ptr().sub(W);
            set_link(rb, 1, a.as_ptr().sub(W).wrapping_add(8 * GRAIN));
        }
        // Taking `b`'s region off its list follows the forged link.
        assert!(h.alloc(l).is_none());
        assert!(h.is_failed_closed());
    }

    #[cfg(feature = "hardened")]
    #[test]
    fn hardened_a_forged_quick_list_link_is_caught() {
        let (mut h, _m) = heap(16);
        let l = lay(40, 8);
        let a = h.alloc(l).unwrap();
        let b = h.alloc(l).unwrap();
        let _guard = h.alloc(l).unwrap();
        // SAFETY: both are live with `l`; then `b`'s link word (its first
        // payload word, still heap memory) is overwritten with a raw
        // pointer to another block: the forgery under test.
        unsafe {
            h.dealloc(b, l).unwrap();
            b.as_ptr().cast::<*mut u8>().write(a.as_ptr().sub(W));
        }
        assert!(h.alloc(l).is_none());
        assert!(h.is_failed_closed());
    }

    #[cfg(feature = "hardened")]
    #[test]
    fn hardened_links_are_stored_masked() {
        let (mut h, _m) = heap(16);
        let l = lay(40, 8);
        let a = h.alloc(l).unwrap();
        let b = h.alloc(l).unwrap();
        let _guard = h.alloc(l).unwrap();
        // SAFETY: both are live with `l`, freed once.
        unsafe {
            h.dealloc(a, l).unwrap();
            h.dealloc(b, l).unwrap();
            // `b` is the head, its link leads to `a`: stored masked.
            let raw = b.as_ptr().cast::<*mut u8>().read();
            assert_ne!(raw, a.as_ptr().sub(W));
            assert_eq!(h.peek(b.as_ptr().sub(W), 0), a.as_ptr().sub(W));
        }
        assert_eq!(h.alloc(l).unwrap(), b);
        assert_eq!(h.alloc(l).unwrap(), a);
        ok(&h);
    }

    #[test]
    fn randomized_mixed_operations_keep_every_invariant() {
        struct Live {
            p: NonNull<u8>,
            l: Layout,
            v: u8,
        }
        let mem = SimMemory::with_config(SimConfig {
            initial_pages: 1,
            max_pages: if cfg!(miri) { 48 } else { 512 },
            heap_base: Some(777),
        });
        let mut h = Heap::new(mem.clone());
        let ops = if cfg!(miri) { 400 } else { 30_000 };
        let every = if cfg!(miri) { 25 } else { 97 };
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut rng = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut live: Vec<Live> = Vec::new();
        for i in 0..ops {
            let r = rng();
            let size = match r % 10 {
                0..=5 => (r >> 8) as usize % 128 + 1,
                6..=8 => (r >> 8) as usize % 10_000 + 1,
                _ => (r >> 8) as usize % 150_000 + 1,
            };
            let align = if (r >> 40) % 8 == 0 {
                1 << ((r >> 44) % 17)
            } else {
                8
            };
            let action = (r >> 32) % 8;
            if action < 4 || live.is_empty() {
                let l = lay(size, align);
                if let Some(p) = h.alloc(l) {
                    assert_eq!(p.as_ptr() as usize % align, 0);
                    let v = (i % 251) as u8;
                    fill(p, size.min(256), v);
                    live.push(Live { p, l, v });
                }
            } else if action < 7 {
                let k = (r >> 50) as usize % live.len();
                let b = live.swap_remove(k);
                assert!(holds(b.p, b.l.size().min(256), b.v));
                // SAFETY: `b` is live with its layout, freed once.
                unsafe { h.dealloc(b.p, b.l).unwrap() };
            } else {
                let k = (r >> 50) as usize % live.len();
                let b = &mut live[k];
                // SAFETY: `b` is live with its layout.
                if let Some(p) = unsafe { h.realloc(b.p, b.l, size) } {
                    let keep = b.l.size().min(size).min(256);
                    assert!(holds(p, keep, b.v));
                    b.l = lay(size, b.l.align());
                    b.p = p;
                    fill(p, size.min(256), b.v);
                }
            }
            match r % 997 {
                0 => {
                    mem.foreign_grow(1);
                }
                1 => mem.fail_next_grows(1),
                2 => {
                    h.trim((r >> 20) as usize % 100_000);
                }
                _ => {}
            }
            if i % every == 0 {
                let s = ok(&h);
                assert_eq!(s.live_blocks, live.len());
            }
        }
        for b in live.drain(..) {
            assert!(holds(b.p, b.l.size().min(256), b.v));
            // SAFETY: `b` is live with its layout, freed once.
            unsafe { h.dealloc(b.p, b.l).unwrap() };
        }
        let s = ok(&h);
        assert_eq!((s.live_blocks, s.in_use), (0, 0));
        assert!(!h.is_failed_closed());
    }
}
