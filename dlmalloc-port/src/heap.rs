//! The heap: allocation, freeing with coalescing, realloc, growth.

use core::alloc::Layout;
use core::ptr::{self, NonNull};

use linmem_memory::{HeapError, HeapStats, MemorySource, RawHeap, Violation};

use crate::bins::{
    MIN_LARGE, NSMALL, NTREE, is_small, left_bits, small_index, small_size, tree_index, tree_shift,
};
use crate::block::{
    ALIGN, ALIGN_MASK, CINUSE, FENCE, MAX_REQUEST, MEM_OFFSET, MIN_CHUNK, OVERHEAD, PINUSE,
    TOP_FOOT, W, bk, child, fd, head, minus, null, pad_request, parent, plus, prev_foot, set_bk,
    set_child, set_fd, set_head, set_parent, set_prev_foot, set_tindex, size_of_head, tindex,
};

/// A dlmalloc-design heap over a [`MemorySource`].
///
/// See the crate docs for the algorithm, the layout and the invariants
/// I1..I11 that the fields below obey.
pub struct Heap<S: MemorySource> {
    /// I5: bit `i` is set iff small bin `i` is non-empty.
    pub(crate) smallmap: u32,
    /// I5: bit `i` is set iff tree bin `i` is non-empty.
    pub(crate) treemap: u32,
    /// I7: the size of the designated victim, 0 when there is none.
    pub(crate) dvsize: usize,
    /// I8: the size of the top chunk (may be 0).
    pub(crate) topsize: usize,
    /// I7: the designated victim: a free chunk in no bin.
    pub(crate) dv: *mut u8,
    /// I8: the top chunk, the free end of the top segment.
    pub(crate) top: *mut u8,
    /// I4: heads of the small bins (null-terminated, doubly linked).
    pub(crate) small: [*mut u8; NSMALL],
    /// I6: roots of the tree bins.
    pub(crate) tree: [*mut u8; NTREE],
    /// I1: the first chunk of the top segment (null before the first grow).
    pub(crate) seg_base: *mut u8,
    /// I1: the end of the top segment.
    pub(crate) seg_end: *mut u8,
    /// I1: the payload of the newest older segment's record, or null.
    pub(crate) older: *mut u8,
    /// I10: above `max(fresh, top + 2W)` the top segment is still zero.
    pub(crate) fresh: usize,
    /// I9: bytes obtained from the source.
    pub(crate) footprint: usize,
    /// I9: the most `footprint` has been.
    pub(crate) peak: usize,
    /// I9: bytes of the footprint that are neither chunks nor top: alignment
    /// slack, the top reserve and segment records.
    pub(crate) overhead: usize,
    /// I11: set once a misuse is detected; never cleared.
    pub(crate) failed: bool,
    /// The error the last refused call reports.
    error: HeapError,
    source: S,
}

// SAFETY: the heap owns all the memory its pointers reach (I1); moving it
// to another thread moves that ownership along with the source.
unsafe impl<S: Send + MemorySource> Send for Heap<S> {}

/// Richer statistics than [`HeapStats`], from [`Heap::detailed_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DetailedStats {
    /// The common summary.
    pub summary: HeapStats,
    /// Bytes in the top chunk (free, at the end of the newest segment).
    pub top: usize,
    /// Bytes in the designated victim.
    pub dv: usize,
    /// Number of segments (runs of memory that are not contiguous).
    pub segments: usize,
    /// Bytes held from the source that no chunk can use (alignment slack,
    /// the top reserve, segment records).
    pub overhead: usize,
}

impl<S: MemorySource> Heap<S> {
    /// An empty heap over `source`; nothing is taken before the first
    /// allocation.
    pub const fn new(source: S) -> Self {
        Self {
            smallmap: 0,
            treemap: 0,
            dvsize: 0,
            topsize: 0,
            dv: ptr::null_mut(),
            top: ptr::null_mut(),
            small: [ptr::null_mut(); NSMALL],
            tree: [ptr::null_mut(); NTREE],
            seg_base: ptr::null_mut(),
            seg_end: ptr::null_mut(),
            older: ptr::null_mut(),
            fresh: 0,
            footprint: 0,
            peak: 0,
            overhead: 0,
            failed: false,
            error: HeapError::FailedClosed,
            source,
        }
    }

    /// The memory source.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// Whether a misuse was detected and the heap refuses all work (I11).
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// Frees a block, panicking on a detected misuse.
    ///
    /// The non-global API for hosts: instead of a typed error, a detected
    /// misuse panics with the error's message (the heap has failed closed by
    /// then, so later calls fail too).
    ///
    /// # Safety
    ///
    /// As for [`RawHeap::dealloc`]; the misuses listed in the crate docs are
    /// caught, other ones are undefined behaviour.
    ///
    /// # Panics
    ///
    /// When the block is not a live block of this heap for `layout`, or the
    /// heap has failed closed.
    pub unsafe fn free(&mut self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded contract.
        if let Err(e) = unsafe { self.dealloc(ptr, layout) } {
            panic!("linmem-dlmalloc: {e}");
        }
    }

    /// The summary plus the top, the designated victim and segment counts.
    pub fn detailed_stats(&self) -> DetailedStats {
        let mut segments = usize::from(!self.seg_base.is_null());
        let mut rec = self.older;
        while !rec.is_null() {
            segments += 1;
            // SAFETY: I1: `rec` is a record payload whose third word links
            // the next older record.
            rec = unsafe { rec.byte_add(2 * W).cast::<*mut u8>().read() };
        }
        DetailedStats {
            summary: self.stats(),
            top: self.topsize,
            dv: self.dvsize,
            segments,
            overhead: self.overhead,
        }
    }

    // ----- bins -------------------------------------------------------

    /// Pushes the free chunk `p` of `size < MIN_LARGE` onto its small bin.
    ///
    /// # Safety
    ///
    /// `p` is an unbinned free chunk of `size` bytes (I4).
    #[inline(always)]
    unsafe fn push_small(&mut self, p: *mut u8, size: usize) {
        let i = small_index(size);
        let h = self.small[i % NSMALL];
        // SAFETY: I4: `p` is free and owned by the heap; `h` is the bin's
        // head, a free chunk, or null.
        unsafe {
            set_fd(p, h);
            set_bk(p, null());
            if h.is_null() {
                self.smallmap |= 1 << i;
            } else {
                set_bk(h, p);
            }
        }
        self.small[i % NSMALL] = p;
    }

    /// Pops the head `p` of the non-empty small bin `i`.
    ///
    /// # Safety
    ///
    /// `p == self.small[i]` and it is non-null (I4, I5).
    #[inline(always)]
    unsafe fn pop_small(&mut self, i: usize, p: *mut u8) {
        // SAFETY: I4: `p` heads bin `i`, its `fd` is the next chunk or null.
        let f = unsafe { fd(p) };
        self.small[i % NSMALL] = f;
        if f.is_null() {
            self.smallmap &= !(1 << i);
        } else {
            // SAFETY: I4: `f` is a binned free chunk.
            unsafe { set_bk(f, null()) };
        }
    }

    /// Unlinks the small free chunk `p` of `size` bytes from its bin.
    ///
    /// # Safety
    ///
    /// `p` is in the small bin for `size` (I4).
    #[inline(always)]
    unsafe fn unlink_small(&mut self, p: *mut u8, size: usize) {
        // SAFETY: I4: `p` is binned, so its links are valid chunks or null.
        unsafe {
            let f = fd(p);
            let b = bk(p);
            if b.is_null() {
                let i = small_index(size);
                self.small[i % NSMALL] = f;
                if f.is_null() {
                    self.smallmap &= !(1 << i);
                }
            } else {
                set_fd(b, f);
            }
            if !f.is_null() {
                set_bk(f, b);
            }
        }
    }

    /// Inserts the free chunk `x` of `size >= MIN_LARGE` into its tree bin.
    ///
    /// # Safety
    ///
    /// `x` is an unbinned free chunk of `size` bytes (I6).
    #[inline(never)]
    unsafe fn insert_large(&mut self, x: *mut u8, size: usize) {
        let i = tree_index(size);
        // SAFETY: I6: `x` is free and large enough for the tree links; every
        // chunk reached from the root is a tree-binned free chunk.
        unsafe {
            set_tindex(x, i);
            set_child(x, 0, null());
            set_child(x, 1, null());
            let mut t = self.tree[i % NTREE];
            if t.is_null() {
                self.treemap |= 1 << i;
                self.tree[i % NTREE] = x;
                set_parent(x, null());
                set_fd(x, x);
                set_bk(x, x);
                return;
            }
            let mut k = size << tree_shift(i);
            loop {
                if size_of_head(head(t)) != size {
                    let dir = k >> (usize::BITS - 1);
                    k <<= 1;
                    let c = child(t, dir);
                    if c.is_null() {
                        set_child(t, dir, x);
                        set_parent(x, t);
                        set_fd(x, x);
                        set_bk(x, x);
                        return;
                    }
                    t = c;
                } else {
                    // Same size: join `t`'s ring; ring members are not tree
                    // nodes (null parent, not a root).
                    let f = fd(t);
                    set_fd(t, x);
                    set_bk(f, x);
                    set_fd(x, f);
                    set_bk(x, t);
                    set_parent(x, null());
                    return;
                }
            }
        }
    }

    /// Removes the tree-binned chunk `x` from its bin.
    ///
    /// # Safety
    ///
    /// `x` is in a tree bin (I6).
    #[inline(never)]
    unsafe fn unlink_large(&mut self, x: *mut u8) {
        // SAFETY: I6: `x` and every chunk linked from it are tree-binned free
        // chunks whose links follow I6.
        unsafe {
            let xp = parent(x);
            let r;
            if bk(x) != x {
                // A ring: the next member replaces `x` (if `x` is the node).
                let f = fd(x);
                r = bk(x);
                set_bk(f, r);
                set_fd(r, f);
            } else {
                // Replace `x` by a leaf of its subtree (its right-most-first
                // descendant), detached from that leaf's parent.
                let mut rp = x;
                let mut side = 1;
                let mut c = child(x, 1);
                if c.is_null() {
                    side = 0;
                    c = child(x, 0);
                }
                if !c.is_null() {
                    loop {
                        let c1 = child(c, 1);
                        let next = if c1.is_null() { child(c, 0) } else { c1 };
                        if next.is_null() {
                            break;
                        }
                        rp = c;
                        side = usize::from(!c1.is_null());
                        c = next;
                    }
                    set_child(rp, side, null());
                }
                r = c;
            }
            if xp.is_null() {
                // The root of its bin, or a ring member that is no node (a
                // node's replacement was linked above).
                let i = tindex(x) % NTREE;
                if self.tree[i] != x {
                    return;
                }
                self.tree[i] = r;
                if r.is_null() {
                    self.treemap &= !(1 << i);
                    return;
                }
            } else if child(xp, 0) == x {
                set_child(xp, 0, r);
            } else {
                set_child(xp, 1, r);
            }
            if !r.is_null() {
                set_parent(r, xp);
                for k in 0..2 {
                    let c = child(x, k);
                    set_child(r, k, c);
                    if !c.is_null() {
                        set_parent(c, r);
                    }
                }
            }
        }
    }

    /// Bins the free chunk `p` of `size` bytes.
    ///
    /// # Safety
    ///
    /// `p` is an unbinned free chunk of `size` bytes, neither dv nor top.
    #[inline(always)]
    unsafe fn insert_chunk(&mut self, p: *mut u8, size: usize) {
        if is_small(size) {
            // SAFETY: forwarded contract.
            unsafe { self.push_small(p, size) }
        } else {
            // SAFETY: forwarded contract.
            unsafe { self.insert_large(p, size) }
        }
    }

    /// Unbins the free chunk `p` of `size` bytes.
    ///
    /// # Safety
    ///
    /// `p` is binned with `size` bytes.
    #[inline(always)]
    unsafe fn unlink_chunk(&mut self, p: *mut u8, size: usize) {
        if is_small(size) {
            // SAFETY: forwarded contract.
            unsafe { self.unlink_small(p, size) }
        } else {
            // SAFETY: forwarded contract.
            unsafe { self.unlink_large(p) }
        }
    }

    /// Makes the free chunk `p` of `size` bytes the designated victim,
    /// binning the previous one.
    ///
    /// # Safety
    ///
    /// `p` is an unbinned free chunk of `size` bytes (I7).
    #[inline(always)]
    unsafe fn replace_dv(&mut self, p: *mut u8, size: usize) {
        if self.dvsize != 0 {
            // SAFETY: I7: the old dv is a free chunk in no bin.
            unsafe { self.insert_chunk(self.dv, self.dvsize) };
        }
        self.dv = p;
        self.dvsize = size;
    }

    // ----- chunk marking ----------------------------------------------

    /// Uses the whole unbinned free chunk `p` of `size` bytes: marks it in
    /// use and tells its successor.
    ///
    /// # Safety
    ///
    /// `p` is a free chunk of `size` bytes taken out of every bin (I2).
    #[inline(always)]
    unsafe fn use_whole(p: *mut u8, size: usize) {
        // SAFETY: I2: `p` has `PINUSE` set (no adjacent free chunks, I3) and
        // its successor's head lies in the segment (I1).
        unsafe {
            set_head(p, size | PINUSE | CINUSE);
            let n = plus(p, size);
            set_head(n, head(n) | PINUSE);
        }
    }

    /// Uses the first `nb` bytes of the unbinned free chunk `p` of `size`
    /// bytes and makes the rest (at least `MIN_CHUNK`) a free chunk, which
    /// is returned.
    ///
    /// # Safety
    ///
    /// `p` is an unbinned free chunk of `size >= nb + MIN_CHUNK` bytes whose
    /// successor already has `PINUSE` clear (I2).
    #[inline(always)]
    unsafe fn split(p: *mut u8, size: usize, nb: usize) -> *mut u8 {
        let rsize = size - nb;
        // SAFETY: I1: `p + nb` and its footer at `p + size` lie inside the
        // old chunk and its successor's `prev_foot`.
        unsafe {
            set_head(p, nb | PINUSE | CINUSE);
            let r = plus(p, nb);
            set_head(r, rsize | PINUSE);
            set_prev_foot(plus(r, rsize), rsize);
            r
        }
    }

    /// Uses the first `nb` bytes of the unbinned free chunk `p` of `size`
    /// bytes: all of it when the rest could not be a chunk (returns null),
    /// else splits and returns the free remainder (for the caller to keep).
    ///
    /// # Safety
    ///
    /// As for [`Self::split`], but only `size >= nb` is needed.
    #[inline(always)]
    unsafe fn carve(p: *mut u8, size: usize, nb: usize) -> *mut u8 {
        if size - nb < MIN_CHUNK {
            // SAFETY: forwarded contract.
            unsafe { Self::use_whole(p, size) };
            null()
        } else {
            // SAFETY: forwarded contract, and the rest is a whole chunk.
            unsafe { Self::split(p, size, nb) }
        }
    }

    // ----- allocation -------------------------------------------------

    /// A chunk of at least `nb` bytes (a padded size), or null, out of
    /// line: for `memalign` and `realloc` (one copy, code size).
    #[inline(never)]
    fn malloc_outlined(&mut self, nb: usize) -> *mut u8 {
        self.malloc_chunk(nb)
    }

    /// A chunk of at least `nb` bytes (a padded size), or null. Inlined
    /// into `alloc` only: the common paths are a few compares, a bin pop
    /// and two stores.
    #[inline(always)]
    fn malloc_chunk(&mut self, nb: usize) -> *mut u8 {
        // SAFETY: I4..I8: the bins, dv and top hold free chunks of the
        // sizes they are found by; each is unlinked before it is used.
        unsafe {
            if nb < MIN_LARGE {
                let idx = small_index(nb);
                let bits = self.smallmap >> idx;
                // An exact fit or the next size (too small a rest to keep);
                // a larger small chunk only when dv cannot serve.
                if bits & 3 != 0 || (bits != 0 && nb > self.dvsize) {
                    let i = idx + bits.trailing_zeros() as usize;
                    let p = self.small[i % NSMALL];
                    self.pop_small(i, p);
                    let size = small_size(i);
                    let r = Self::carve(p, size, nb);
                    if !r.is_null() {
                        self.replace_dv(r, size - nb);
                    }
                    return p;
                }
                if nb > self.dvsize && self.treemap != 0 {
                    return self.tmalloc_small(nb);
                }
            } else if nb > self.dvsize && self.treemap != 0 {
                let p = self.tmalloc_large(nb);
                if !p.is_null() {
                    return p;
                }
            }
            if nb <= self.dvsize {
                let p = self.dv;
                let r = Self::carve(p, self.dvsize, nb);
                self.dvsize = if r.is_null() { 0 } else { self.dvsize - nb };
                self.dv = r;
                return p;
            }
            if nb > self.topsize && !self.sys_alloc(nb) {
                return null();
            }
            self.take_top(nb)
        }
    }

    /// Carves `nb` bytes off the start of the top chunk.
    ///
    /// # Safety
    ///
    /// `nb <= self.topsize` (I8).
    #[inline(always)]
    unsafe fn take_top(&mut self, nb: usize) -> *mut u8 {
        let p = self.top;
        self.topsize -= nb;
        // SAFETY: I8: the new top head lies at most at the start of the top
        // reserve, inside the segment (TOP_FOOT >= 2W).
        unsafe {
            let r = plus(p, nb);
            self.top = r;
            set_head(r, self.topsize | PINUSE);
            set_head(p, nb | PINUSE | CINUSE);
            let f = r.addr() + MEM_OFFSET;
            if f > self.fresh {
                self.fresh = f;
            }
        }
        p
    }

    /// The best-fitting tree chunk for a small request, split with the
    /// remainder becoming dv.
    ///
    /// # Safety
    ///
    /// `self.treemap != 0` (I5).
    #[inline(never)]
    unsafe fn tmalloc_small(&mut self, nb: usize) -> *mut u8 {
        let i = self.treemap.trailing_zeros() as usize;
        // SAFETY: I5, I6: bin `i` is non-empty; every chunk of its trie is a
        // tree-binned free chunk with valid links. Following the left-most
        // child path visits the smallest candidates.
        unsafe {
            let mut t = self.tree[i % NTREE];
            let mut v = t;
            let mut rsize = size_of_head(head(t)) - nb;
            loop {
                let c0 = child(t, 0);
                t = if c0.is_null() { child(t, 1) } else { c0 };
                if t.is_null() {
                    break;
                }
                let trem = size_of_head(head(t)) - nb;
                if trem < rsize {
                    rsize = trem;
                    v = t;
                }
            }
            self.unlink_large(v);
            let r = Self::carve(v, rsize + nb, nb);
            if !r.is_null() {
                self.replace_dv(r, rsize);
            }
            v
        }
    }

    /// The best-fitting tree chunk for a large request (the smallest of
    /// size `>= nb`), split with the remainder becoming dv; null when no
    /// tree chunk fits.
    ///
    /// # Safety
    ///
    /// `nb >= MIN_LARGE`, `nb > dvsize` and the tree bins obey I5, I6.
    #[inline(never)]
    unsafe fn tmalloc_large(&mut self, nb: usize) -> *mut u8 {
        let mut v = null();
        let mut rsize = nb.wrapping_neg();
        let idx = tree_index(nb);
        // SAFETY: I6: every chunk reached from a root is a tree-binned free
        // chunk with valid links.
        unsafe {
            let mut t = self.tree[idx % NTREE];
            if !t.is_null() {
                // Walk down the path of `nb`'s bits, remembering the best
                // fit and the last right subtree not taken (all larger).
                let mut bits = nb << tree_shift(idx);
                let mut rst = null();
                loop {
                    let trem = size_of_head(head(t)).wrapping_sub(nb);
                    if trem < rsize {
                        v = t;
                        rsize = trem;
                        if rsize == 0 {
                            t = null();
                            break;
                        }
                    }
                    let rt = child(t, 1);
                    t = child(t, bits >> (usize::BITS - 1));
                    if !rt.is_null() && rt != t {
                        rst = rt;
                    }
                    if t.is_null() {
                        t = rst;
                        break;
                    }
                    bits <<= 1;
                }
            }
            if t.is_null() && v.is_null() {
                let larger = left_bits(1 << idx) & self.treemap;
                if larger != 0 {
                    t = self.tree[larger.trailing_zeros() as usize % NTREE];
                }
            }
            // Smallest chunk of the remaining subtree.
            while !t.is_null() {
                let trem = size_of_head(head(t)).wrapping_sub(nb);
                if trem < rsize {
                    rsize = trem;
                    v = t;
                }
                let c0 = child(t, 0);
                t = if c0.is_null() { child(t, 1) } else { c0 };
            }
            if v.is_null() {
                return null();
            }
            self.unlink_large(v);
            let r = Self::carve(v, rsize + nb, nb);
            if !r.is_null() {
                self.replace_dv(r, rsize);
            }
            v
        }
    }

    /// Allocates `size` bytes aligned to `align > ALIGN`: over-allocates by
    /// `align + MIN_CHUNK` once and frees the leading and trailing parts.
    #[inline(never)]
    fn memalign(&mut self, align: usize, size: usize) -> *mut u8 {
        if size > MAX_REQUEST || align > MAX_REQUEST {
            return null();
        }
        // A lead shorter than MIN_CHUNK is pushed on by one `align`, which
        // must then make it a whole chunk.
        let align = align.max(MIN_CHUNK);
        let nb = pad_request(size);
        let Some(req) = nb.checked_add(align).and_then(|r| r.checked_add(MIN_CHUNK)) else {
            return null();
        };
        if req > MAX_REQUEST {
            return null();
        }
        let mut p = self.malloc_outlined(req);
        if p.is_null() {
            return p;
        }
        // SAFETY: `p` is a fresh in-use chunk of at least `req` bytes (I2);
        // the aligned chunk and the parts split off lie inside it.
        unsafe {
            let mut psize = size_of_head(head(p));
            let mem = p.addr() + MEM_OFFSET;
            let mis = mem & (align - 1);
            if mis != 0 {
                let mut lead = align - mis;
                if lead < MIN_CHUNK {
                    lead += align;
                }
                let q = plus(p, lead);
                let qsize = psize - lead;
                set_head(q, qsize | PINUSE | CINUSE);
                set_head(p, lead | (head(p) & PINUSE) | CINUSE);
                self.free_outlined(p, lead);
                p = q;
                psize = qsize;
            }
            if psize - nb >= MIN_CHUNK {
                let r = plus(p, nb);
                set_head(p, nb | (head(p) & PINUSE) | CINUSE);
                set_head(r, (psize - nb) | PINUSE | CINUSE);
                self.free_outlined(r, psize - nb);
            }
        }
        p
    }

    /// Grows the heap until the top holds `nb` bytes; false when it cannot.
    /// At most two grows: the first for what the top lacks, the second
    /// (only when the first region was not contiguous and too small) for
    /// the whole request.
    #[cold]
    #[inline(never)]
    fn sys_alloc(&mut self, nb: usize) -> bool {
        if self.failed {
            return false;
        }
        let Some(want) = nb.checked_add(TOP_FOOT + 2 * ALIGN) else {
            return false;
        };
        let short = if self.seg_base.is_null() {
            want
        } else {
            want - self.topsize.min(want)
        };
        if !self.add_memory(short) {
            return false;
        }
        if nb <= self.topsize {
            return true;
        }
        // The region was not contiguous: ask again for the whole request.
        short != want && self.add_memory(want) && nb <= self.topsize
    }

    /// Gets at least `bytes` more bytes from the source and adds them as
    /// top space. Returns whether memory was added.
    ///
    /// Page sources round up to whole 64 KiB pages (the growth granule), and
    /// the rest stays in the top; asking for no more than needed lets a
    /// fixed region smaller than a page serve too.
    #[cold]
    #[inline(never)]
    fn add_memory(&mut self, bytes: usize) -> bool {
        let Some(region) = self.source.grow(bytes) else {
            return false;
        };
        self.footprint += region.len;
        self.peak = self.peak.max(self.footprint);
        let start = region.start.as_ptr();
        let end_addr = region.end_addr() & !ALIGN_MASK;
        if !self.seg_base.is_null() && start.addr() == self.seg_end.addr() {
            // Contiguous: the top segment and its top grow.
            let add = end_addr - start.addr();
            self.overhead += region.len - add;
            self.topsize += add;
            // SAFETY: M1: the region continues the top segment; `add` bytes
            // of it are in the segment from now on. I8: the top head moves
            // nowhere, only its size changes.
            unsafe {
                self.seg_end = start.byte_add(add);
                set_head(self.top, self.topsize | PINUSE);
            }
            return true;
        }
        let lead = start.addr().wrapping_neg() & ALIGN_MASK;
        if end_addr < start.addr() + lead + TOP_FOOT + MIN_CHUNK {
            // Too small to hold a chunk: unusable, counted as overhead.
            self.overhead += region.len;
            return false;
        }
        if !self.seg_base.is_null() {
            // SAFETY: I1, I8: the top segment is set up.
            unsafe { self.retire_top_segment() };
        }
        // SAFETY: M1: the region is ours, zero-filled and at least
        // `lead + TOP_FOOT + MIN_CHUNK` bytes long.
        unsafe {
            let base = start.byte_add(lead);
            let len = end_addr - base.addr();
            self.seg_base = base;
            self.seg_end = base.byte_add(len);
            self.top = base;
            self.topsize = len - TOP_FOOT;
            set_head(base, self.topsize | PINUSE);
            self.overhead += region.len - len + TOP_FOOT;
            self.fresh = base.addr() + MEM_OFFSET;
        }
        true
    }

    /// Ends the top segment before a new one starts: its top becomes a free
    /// chunk (when big enough) and a record (a fenced in-use chunk holding
    /// the segment's base, end and the next older record) closes it.
    ///
    /// # Safety
    ///
    /// The heap has a top segment (I1, I8).
    #[cold]
    #[inline(never)]
    unsafe fn retire_top_segment(&mut self) {
        let t = self.top;
        let tsize = self.topsize;
        // SAFETY: I8: `[top, seg_end)` is the top and its reserve, so the
        // record (at least REC_SIZE = TOP_FOOT bytes) fits at its end.
        unsafe {
            let rec = if tsize >= MIN_CHUNK {
                let rec = plus(t, tsize);
                set_head(t, tsize | PINUSE);
                set_prev_foot(rec, tsize);
                set_head(rec, TOP_FOOT | CINUSE | FENCE);
                self.insert_chunk(t, tsize);
                rec
            } else {
                set_head(t, (tsize + TOP_FOOT) | PINUSE | CINUSE | FENCE);
                self.overhead += tsize;
                t
            };
            let words = rec.byte_add(MEM_OFFSET).cast::<*mut u8>();
            words.write(self.seg_base);
            words.add(1).write(self.seg_end);
            words.add(2).write(self.older);
            self.older = words.cast::<u8>();
        }
        self.top = null();
        self.topsize = 0;
    }

    // ----- freeing ----------------------------------------------------

    /// Frees chunk `p` of `size` bytes, coalescing with free neighbours.
    ///
    /// # Safety
    ///
    /// `p` is an in-use chunk of `size` bytes (or a part just split off one
    /// and marked in use), not a record (I2).
    ///
    /// Inlined into `dealloc` only; the other callers use
    /// [`Self::free_outlined`].
    #[inline(always)]
    unsafe fn free_chunk(&mut self, mut p: *mut u8, mut size: usize) {
        // SAFETY: I1..I3: the neighbours found through the boundary tag and
        // the size are chunks of the same segment; free ones are binned,
        // dv or top (I4, I7, I8).
        unsafe {
            let next = plus(p, size);
            if head(p) & PINUSE == 0 {
                let prevsize = prev_foot(p);
                p = minus(p, prevsize);
                size += prevsize;
                if p != self.dv {
                    self.unlink_chunk(p, prevsize);
                } else if head(next) & CINUSE != 0 {
                    self.dvsize = size;
                    set_head(next, head(next) & !PINUSE);
                    set_head(p, size | PINUSE);
                    set_prev_foot(next, size);
                    return;
                }
            }
            let nh = head(next);
            if nh & CINUSE == 0 {
                if next == self.top {
                    self.topsize += size;
                    self.top = p;
                    set_head(p, self.topsize | PINUSE);
                    if p == self.dv {
                        self.dv = null();
                        self.dvsize = 0;
                    }
                    return;
                }
                if next == self.dv {
                    self.dvsize += size;
                    self.dv = p;
                    set_head(p, self.dvsize | PINUSE);
                    set_prev_foot(plus(p, self.dvsize), self.dvsize);
                    return;
                }
                let nsize = size_of_head(nh);
                self.unlink_chunk(next, nsize);
                size += nsize;
                set_head(p, size | PINUSE);
                set_prev_foot(plus(p, size), size);
                if p == self.dv {
                    self.dvsize = size;
                    return;
                }
            } else {
                set_head(next, nh & !PINUSE);
                set_head(p, size | PINUSE);
                set_prev_foot(next, size);
            }
            self.insert_chunk(p, size);
        }
    }

    /// [`Self::free_chunk`] out of line (one copy, code size).
    ///
    /// # Safety
    ///
    /// As for [`Self::free_chunk`].
    #[inline(never)]
    unsafe fn free_outlined(&mut self, p: *mut u8, size: usize) {
        // SAFETY: forwarded contract.
        unsafe { self.free_chunk(p, size) }
    }

    /// Checks that `ptr` is a live block of this heap for `layout`; returns
    /// its chunk and size. On a misuse the heap fails closed (I11).
    ///
    /// The fast path is one range compare (the top segment), one alignment
    /// test, the chunk's bounds, and one combined test of the head bits, the
    /// successor's `PINUSE` and the size class.
    #[inline(always)]
    fn check(&mut self, ptr: NonNull<u8>, layout: Layout) -> Result<(*mut u8, usize), HeapError> {
        let mem = ptr.as_ptr();
        let p = mem.wrapping_byte_sub(MEM_OFFSET);
        let a = p.addr();
        let base = self.seg_base.addr();
        let mut limit = self.top.addr();
        if a.wrapping_sub(base) >= limit.wrapping_sub(base)
            || mem.addr() & ((layout.align() - 1) | ALIGN_MASK) != 0
        {
            limit = self.find_limit(p, layout);
            if limit == 0 {
                return Err(self.error);
            }
        }
        // SAFETY: I1: `p` is aligned and lies below `limit`, which is the
        // top or a record of the segment holding `p`, so its head word lies
        // in the segment.
        let h = unsafe { head(p) };
        let size = size_of_head(h);
        if size > limit - a {
            return Err(self.fail_closed(HeapError::ForeignPointer { addr: mem.addr() }));
        }
        // SAFETY: I1: `p + size <= limit`, and the chunk at `limit` (the top
        // or a record) has its head inside the segment.
        let nh = unsafe { head(plus(p, size)) };
        let nb = pad_request(layout.size());
        if (h & (CINUSE | FENCE)) ^ CINUSE != 0
            || nh & PINUSE == 0
            || size.wrapping_sub(nb) >= MIN_CHUNK
        {
            return Err(self.misuse(mem, h, nh));
        }
        Ok((p, size))
    }

    /// The end bound of the segment holding chunk `p` when the fast test
    /// failed: a misaligned pointer, the failed-closed state, a pointer in
    /// the top or in an older segment (bounded by its record), or none.
    /// Returns 0 after recording the error (and failing closed).
    #[cold]
    #[inline(never)]
    fn find_limit(&mut self, p: *mut u8, layout: Layout) -> usize {
        let addr = p.addr().wrapping_add(MEM_OFFSET);
        let a = p.addr();
        let e = if self.failed {
            HeapError::FailedClosed
        } else if a & ALIGN_MASK != 0 {
            HeapError::ForeignPointer { addr }
        } else if a >= self.seg_base.addr() && a < self.top.addr() {
            return self.check_align(addr, layout, self.top.addr());
        } else if !self.seg_base.is_null() && a >= self.top.addr() && a < self.seg_end.addr() {
            // Inside the top: freed already (merged into the top).
            HeapError::DoubleFree { addr }
        } else {
            let mut rec = self.older;
            while !rec.is_null() {
                // SAFETY: I1: `rec` is a record payload: base, end, next.
                let (base, next) = unsafe {
                    let w = rec.cast::<*mut u8>();
                    (w.read(), w.add(2).read())
                };
                let rec_chunk = rec.addr() - MEM_OFFSET;
                if a >= base.addr() && a < rec_chunk {
                    return self.check_align(addr, layout, rec_chunk);
                }
                rec = next;
            }
            HeapError::ForeignPointer { addr }
        };
        self.fail_closed(e);
        0
    }

    /// `limit` when the block at `addr` is aligned for `layout`, else fails
    /// closed and returns 0.
    #[cold]
    fn check_align(&mut self, addr: usize, layout: Layout, limit: usize) -> usize {
        if addr & (layout.align() - 1) == 0 {
            return limit;
        }
        self.fail_closed(HeapError::LayoutMismatch { addr });
        0
    }

    /// Classifies a failed check of the block at `mem` (head `h`, successor
    /// head `nh`) and fails closed.
    #[cold]
    #[inline(never)]
    fn misuse(&mut self, mem: *mut u8, h: usize, nh: usize) -> HeapError {
        let addr = mem.addr();
        let e = if h & FENCE != 0 {
            HeapError::ForeignPointer { addr }
        } else if h & CINUSE == 0 || nh & PINUSE == 0 {
            HeapError::DoubleFree { addr }
        } else {
            HeapError::LayoutMismatch { addr }
        };
        self.fail_closed(e)
    }

    /// Enters the failed-closed state (I11) and returns `e`.
    ///
    /// Every allocation path then fails by itself: the bin maps, dv and top
    /// are emptied and the fast pointer range is made empty, so only the
    /// cold paths look at the flag.
    #[cold]
    #[inline(never)]
    fn fail_closed(&mut self, e: HeapError) -> HeapError {
        self.error = e;
        self.failed = true;
        self.smallmap = 0;
        self.treemap = 0;
        self.dvsize = 0;
        self.topsize = 0;
        self.seg_base = self.top;
        e
    }

    /// Tries to resize chunk `p` of `oldsize` bytes to `nb` bytes in place;
    /// returns the new chunk size, or 0 when it cannot.
    ///
    /// # Safety
    ///
    /// `p` is a live chunk of `oldsize` bytes (checked by `check`).
    #[inline(always)]
    unsafe fn resize_in_place(&mut self, p: *mut u8, oldsize: usize, nb: usize) -> usize {
        // SAFETY: I1..I8: `p` is in use; its successor is a chunk of the
        // segment (in use, free, dv or top) and every split stays inside
        // the chunks involved.
        unsafe {
            let pbit = head(p) & PINUSE;
            let next = plus(p, oldsize);
            let mut size = oldsize;
            if oldsize < nb {
                if next == self.top {
                    let total = oldsize + self.topsize;
                    if total < nb {
                        return 0;
                    }
                    set_head(p, nb | pbit | CINUSE);
                    let t = plus(p, nb);
                    self.top = t;
                    self.topsize = total - nb;
                    set_head(t, self.topsize | PINUSE);
                    let f = t.addr() + MEM_OFFSET;
                    if f > self.fresh {
                        self.fresh = f;
                    }
                    return nb;
                }
                // Absorb a free successor (binned or dv) whole; the rest is
                // split off below.
                let nh = head(next);
                let nsize = size_of_head(nh);
                if nh & CINUSE != 0 || oldsize + nsize < nb {
                    return 0;
                }
                if next == self.dv {
                    self.dv = null();
                    self.dvsize = 0;
                } else {
                    self.unlink_chunk(next, nsize);
                }
                size = oldsize + nsize;
                set_head(p, size | pbit | CINUSE);
                let n = plus(p, size);
                set_head(n, head(n) | PINUSE);
            }
            if size - nb < MIN_CHUNK {
                return size;
            }
            set_head(p, nb | pbit | CINUSE);
            let r = plus(p, nb);
            set_head(r, (size - nb) | PINUSE | CINUSE);
            self.free_outlined(r, size - nb);
            nb
        }
    }
}

impl<S: MemorySource> RawHeap for Heap<S> {
    #[inline]
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        let p = if layout.align() <= ALIGN {
            if layout.size() > MAX_REQUEST {
                return None;
            }
            self.malloc_chunk(pad_request(layout.size()))
        } else {
            self.memalign(layout.align(), layout.size())
        };
        if p.is_null() {
            return None;
        }
        // SAFETY: I1: the payload of a chunk lies inside it, so it is not
        // null.
        Some(unsafe { NonNull::new_unchecked(plus(p, MEM_OFFSET)) })
    }

    fn alloc_zeroed(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        let fresh = self.fresh;
        let base = self.seg_base;
        let mem = self.alloc(layout)?;
        let a = mem.as_ptr().addr();
        let in_top_segment = a >= self.seg_base.addr() && a < self.seg_end.addr();
        // I10: a block of the top segment at or above the watermark was
        // carved from never-used top space; a new top segment is all fresh.
        let pristine = in_top_segment && (a >= fresh || self.seg_base != base);
        if !pristine {
            // SAFETY: the block is live and at least `layout.size()` long.
            unsafe { mem.as_ptr().write_bytes(0, layout.size()) };
        }
        Some(mem)
    }

    #[inline]
    unsafe fn dealloc(&mut self, ptr: NonNull<u8>, layout: Layout) -> Result<(), HeapError> {
        let (p, size) = self.check(ptr, layout)?;
        // SAFETY: `check` proved `p` a live chunk of `size` bytes.
        unsafe { self.free_chunk(p, size) };
        Ok(())
    }

    unsafe fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        let (p, oldsize) = self.check(ptr, layout).ok()?;
        if new_size > MAX_REQUEST {
            return None;
        }
        // SAFETY: `check` proved `p` a live chunk of `oldsize` bytes.
        let got = unsafe { self.resize_in_place(p, oldsize, pad_request(new_size)) };
        if got != 0 {
            return Some(ptr);
        }
        let new = if layout.align() <= ALIGN {
            self.malloc_outlined(pad_request(new_size))
        } else {
            self.memalign(layout.align(), new_size)
        };
        if new.is_null() {
            return None;
        }
        // SAFETY: I1: the payload of a chunk lies inside it.
        let new = unsafe { NonNull::new_unchecked(plus(new, MEM_OFFSET)) };
        // SAFETY: both blocks are live and distinct; the old one holds
        // `layout.size()` bytes and the new one `new_size`.
        unsafe {
            ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), layout.size().min(new_size));
        }
        // SAFETY: `p` is still the live chunk `check` found.
        unsafe { self.free_outlined(p, oldsize) };
        Some(new)
    }

    unsafe fn usable_size(&self, ptr: NonNull<u8>, _layout: Layout) -> usize {
        // SAFETY: the caller's contract: `ptr` is a live block, so its
        // chunk's head precedes it (I2).
        let h = unsafe { head(ptr.as_ptr().byte_sub(MEM_OFFSET)) };
        size_of_head(h) - OVERHEAD
    }

    /// Walks the heap (O(chunks)): no counter costs the hot paths anything.
    fn stats(&self) -> HeapStats {
        crate::verify::summary(self)
    }

    fn verify(&self) -> Result<HeapStats, Violation> {
        crate::verify::verify(self)
    }
}
