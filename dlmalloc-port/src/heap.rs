//! The heap: allocation, freeing with coalescing, realloc, growth.

use core::alloc::Layout;
#[cfg(feature = "hardened")]
use core::cell::Cell;
use core::ptr::{self, NonNull};

use linmem_memory::{HeapError, HeapStats, MemorySource, RawHeap, Violation};

use crate::bins::{
    FAST, FAST_MAX, MIN_LARGE, NFAST, NSMALL, NTREE, TreeMap, is_small, left_bits, small_index,
    small_size, tree_index, tree_shift,
};
use crate::block::{
    ALIGN, ALIGN_MASK, BK, CHILD, CINUSE, FD, FENCE, MAX_REQUEST, MEM_OFFSET, MIN_CHUNK, OVERHEAD,
    PARENT, PINUSE, TOP_FOOT, W, fits_chunk, head, load_link, minus, null, pad_request, plus,
    prev_foot, set_head, set_prev_foot, set_tindex, size_of_head, store_link, tindex,
};

/// A dlmalloc-design heap over a [`MemorySource`].
///
/// See the crate docs for the algorithm, the layout and the invariants
/// I1..I11 that the fields below obey.
///
/// `repr(C)`: fields written together are kept adjacent (dv and its size,
/// the bin maps), so one wide store clears them.
#[repr(C)]
pub struct Heap<S: MemorySource> {
    /// I4: heads of the small bins (null-terminated, doubly linked).
    pub(crate) small: [*mut u8; NSMALL],
    /// I6: roots of the tree bins.
    pub(crate) tree: [*mut u8; NTREE],
    /// I5: bit `i` is set iff small bin `i` is non-empty.
    pub(crate) smallmap: u32,
    /// I5: bit `i` is set iff tree bin `i` is non-empty.
    pub(crate) treemap: TreeMap,
    /// I7: the designated victim: a free chunk in no bin.
    pub(crate) dv: *mut u8,
    /// I7: the size of the designated victim, 0 when there is none.
    pub(crate) dvsize: usize,
    /// I8: the size of the top chunk (may be 0).
    pub(crate) topsize: usize,
    /// I8: the top chunk, the free end of the top segment.
    pub(crate) top: *mut u8,
    /// I1: the first chunk of the top segment (null before the first grow).
    pub(crate) seg_base: *mut u8,
    /// I1: the end of the top segment.
    pub(crate) seg_end: *mut u8,
    /// I1: the payload of the newest older segment's record, or null.
    pub(crate) older: *mut u8,
    /// I10: above `max(fresh, top + 2W)` the top segment is still zero.
    pub(crate) fresh: usize,
    /// I9: bytes obtained from the source (never given back, so also the
    /// peak footprint).
    pub(crate) footprint: usize,
    /// I9: bytes of the footprint that are neither chunks nor top: alignment
    /// slack, the top reserve and segment records.
    pub(crate) overhead: usize,
    /// I11: set once a misuse is detected; never cleared.
    pub(crate) failed: bool,
    /// I14: set when a chunk is put on a fast list, cleared when they are
    /// all emptied.
    pub(crate) has_fast: bool,
    /// I14: heads of the fast lists (feature `fast-lists`; one unused entry
    /// otherwise).
    pub(crate) fast: [*mut u8; NFAST],
    /// The error a free reports after a tamper check failed the heap
    /// closed (I12, I13).
    #[cfg(feature = "hardened")]
    error: HeapError,
    /// I12: the secret that masks every free-list link (0 before the
    /// first grow).
    #[cfg(feature = "hardened")]
    pub(crate) secret: usize,
    /// I12: every chunk lies in `[lo, hi)` (the span of all segments).
    #[cfg(feature = "hardened")]
    pub(crate) lo: usize,
    /// I12: see `lo`.
    #[cfg(feature = "hardened")]
    pub(crate) hi: usize,
    /// Where a forged link or a written freed byte was seen (0: nowhere);
    /// the operation in progress fails the heap closed when it ends.
    #[cfg(feature = "hardened")]
    pub(crate) tamper: Cell<usize>,
    source: S,
}

// SAFETY: the heap owns all the memory its pointers reach (I1); moving it
// to another thread moves that ownership along with the source.
unsafe impl<S: Send + MemorySource> Send for Heap<S> {}

/// What a failed [`Heap::check`] found (the kind of [`HeapError`]).
#[derive(Clone, Copy)]
enum Misuse {
    /// Not a block of this heap.
    Foreign,
    /// A block freed already (or memory never handed out).
    DoubleFree,
    /// A live block, but not of this layout.
    Layout,
    /// The heap had failed closed already.
    Failed,
}

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
            overhead: 0,
            failed: false,
            has_fast: false,
            fast: [ptr::null_mut(); NFAST],
            #[cfg(feature = "hardened")]
            error: HeapError::FailedClosed,
            #[cfg(feature = "hardened")]
            secret: 0,
            #[cfg(feature = "hardened")]
            lo: 0,
            #[cfg(feature = "hardened")]
            hi: 0,
            #[cfg(feature = "hardened")]
            tamper: Cell::new(0),
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

    // ----- links ------------------------------------------------------

    /// Reads the link at byte `off` of free chunk `p`. A hardened build
    /// unmasks it (I12) and checks that it is null or an aligned address
    /// inside the heap; a forged one reads as null and is recorded in
    /// `tamper`, so nothing is ever reached through it.
    ///
    /// # Safety
    ///
    /// `p` is a free chunk large enough for the link (I4, I6).
    #[inline(always)]
    unsafe fn link(&self, p: *mut u8, off: usize) -> *mut u8 {
        #[cfg(not(feature = "hardened"))]
        {
            // SAFETY: the caller's contract.
            unsafe { load_link(p, off) }
        }
        #[cfg(feature = "hardened")]
        {
            // SAFETY: the caller's contract.
            let v = unsafe { load_link(p, off, self.secret) };
            let a = v.addr();
            if a != 0 && (a & ALIGN_MASK != 0 || a < self.lo || a >= self.hi) {
                self.tamper.set(p.addr() + off);
                return null();
            }
            v
        }
    }

    /// Writes the link at byte `off` of free chunk `p` (masked in a hardened
    /// build, I12).
    ///
    /// # Safety
    ///
    /// As for [`Self::link`]; the heap owns the chunk.
    #[inline(always)]
    unsafe fn set_link(&self, p: *mut u8, off: usize, v: *mut u8) {
        // SAFETY: the caller's contract.
        #[cfg(not(feature = "hardened"))]
        unsafe {
            store_link(p, off, v)
        }
        // SAFETY: the caller's contract.
        #[cfg(feature = "hardened")]
        unsafe {
            store_link(p, off, v, self.secret)
        }
    }

    /// The forward link of free chunk `p`.
    ///
    /// # Safety
    ///
    /// `p` is a binned free chunk (I4, I6).
    #[inline(always)]
    pub(crate) unsafe fn fd(&self, p: *mut u8) -> *mut u8 {
        // SAFETY: the caller's contract.
        unsafe { self.link(p, FD) }
    }

    /// The backward link of free chunk `p`.
    ///
    /// # Safety
    ///
    /// As for [`Self::fd`].
    #[inline(always)]
    pub(crate) unsafe fn bk(&self, p: *mut u8) -> *mut u8 {
        // SAFETY: the caller's contract.
        unsafe { self.link(p, BK) }
    }

    /// The tree parent of free chunk `p`.
    ///
    /// # Safety
    ///
    /// `p` is a tree-binned free chunk (I6).
    #[inline(always)]
    pub(crate) unsafe fn parent(&self, p: *mut u8) -> *mut u8 {
        // SAFETY: the caller's contract.
        unsafe { self.link(p, PARENT) }
    }

    /// Child `k` (0 or 1) of tree chunk `p`.
    ///
    /// # Safety
    ///
    /// `p` is a tree-binned free chunk (I6) and `k < 2`.
    #[inline(always)]
    pub(crate) unsafe fn child(&self, p: *mut u8, k: usize) -> *mut u8 {
        // SAFETY: the caller's contract.
        unsafe { self.link(p, CHILD + k * W) }
    }

    /// Sets the forward link of free chunk `p`.
    ///
    /// # Safety
    ///
    /// `p` is a free chunk owned by the heap (I4).
    #[inline(always)]
    unsafe fn set_fd(&self, p: *mut u8, v: *mut u8) {
        // SAFETY: the caller's contract.
        unsafe { self.set_link(p, FD, v) }
    }

    /// Sets the backward link of free chunk `p`.
    ///
    /// # Safety
    ///
    /// As for [`Self::set_fd`].
    #[inline(always)]
    unsafe fn set_bk(&self, p: *mut u8, v: *mut u8) {
        // SAFETY: the caller's contract.
        unsafe { self.set_link(p, BK, v) }
    }

    /// Sets the tree parent of free chunk `p`.
    ///
    /// # Safety
    ///
    /// `p` is a free chunk large enough for the tree links (I6).
    #[inline(always)]
    unsafe fn set_parent(&self, p: *mut u8, v: *mut u8) {
        // SAFETY: the caller's contract.
        unsafe { self.set_link(p, PARENT, v) }
    }

    /// Sets child `k` (0 or 1) of tree chunk `p`.
    ///
    /// # Safety
    ///
    /// As for [`Self::set_parent`], and `k < 2`.
    #[inline(always)]
    unsafe fn set_child(&self, p: *mut u8, k: usize, v: *mut u8) {
        // SAFETY: the caller's contract.
        unsafe { self.set_link(p, CHILD + k * W, v) }
    }

    /// A chunk of at least `nb` bytes (a padded size, so at most
    /// `pad_request(MAX_REQUEST)`) aligned to `align` (a power of two), or
    /// null: [`Self::malloc`] for `align <= ALIGN`, [`Self::memalign`] above.
    ///
    /// With fast lists, an exact fit from its fast list comes first (I14):
    /// here, not in `malloc_chunk`'s small path (measured there: 4% more
    /// instructions on small churn, 0.3% fewer on random actions).
    ///
    /// `#[inline]`: a speed build inlines it into `alloc` and `realloc`, a
    /// size build keeps one body.
    #[inline]
    fn allocate(&mut self, nb: usize, align: usize) -> *mut u8 {
        if align > ALIGN {
            return self.memalign(align, nb);
        }
        if FAST && nb <= FAST_MAX {
            // SAFETY: I14: `nb <= FAST_MAX`, so the list index is below
            // NFAST; a listed chunk is a fast chunk, marked in use all
            // along, so taking the mark off hands it out.
            unsafe {
                let p = *self.fast.get_unchecked(nb / ALIGN);
                if !p.is_null() {
                    *self.fast.get_unchecked_mut(nb / ALIGN) = self.fd(p);
                    set_head(p, head(p) & !FENCE);
                    return p;
                }
            }
        }
        self.malloc(nb)
    }

    /// [`Self::malloc_chunk`], then (hardened) a heap that saw a forged link
    /// or a written freed byte meanwhile fails closed and returns null.
    #[inline(always)]
    fn malloc(&mut self, nb: usize) -> *mut u8 {
        let p = self.malloc_chunk(nb);
        #[cfg(feature = "hardened")]
        if self.tamper.get() != 0 {
            self.tampered();
            return null();
        }
        p
    }

    /// [`Self::free_chunk`], then (hardened) a heap that saw a forged link
    /// meanwhile fails closed.
    ///
    /// # Safety
    ///
    /// As for [`Self::free_chunk`].
    #[inline(always)]
    unsafe fn release(&mut self, p: *mut u8, size: usize) {
        // SAFETY: forwarded contract.
        unsafe { self.free_chunk(p, size) };
        #[cfg(feature = "hardened")]
        if self.tamper.get() != 0 {
            self.tampered();
        }
    }

    /// Poisons the window of the free chunk `p` of `size` bytes (I13): the
    /// first `POISON_CHECK` bytes after its head and links.
    ///
    /// # Safety
    ///
    /// `p` is a free chunk of `size` bytes (or one being freed) of the heap.
    #[cfg(feature = "hardened")]
    #[inline(always)]
    unsafe fn poison_window(p: *mut u8, size: usize) {
        let from = crate::block::poison_from(size);
        let to = size.min(from + crate::block::POISON_CHECK);
        if to > from {
            // SAFETY: the caller's contract: `[p + from, p + to)` lies in
            // the chunk, after its links.
            unsafe { plus(p, from).write_bytes(crate::block::POISON, to - from) };
        }
    }

    /// Checks, before `nb` bytes of the free chunk `p` of `size` bytes are
    /// handed out, that the part of its poisoned window handed out still
    /// holds the poison (I13); records the first written word in `tamper`
    /// otherwise.
    ///
    /// # Safety
    ///
    /// `p` is a free chunk of `size >= nb` bytes other than the top.
    #[cfg(feature = "hardened")]
    #[inline(always)]
    unsafe fn check_poison(&self, p: *mut u8, size: usize, nb: usize) {
        let from = crate::block::poison_from(size);
        let end = if size - nb < MIN_CHUNK { size } else { nb };
        let end = end.min(from + crate::block::POISON_CHECK);
        let word = u64::from_ne_bytes([crate::block::POISON; 8]);
        let mut off = from;
        while off < end {
            // SAFETY: the caller's contract: `[p, p + end)` is the chunk's;
            // `off` and `end` are multiples of 8 (chunk sizes, `nb` and
            // `poison_from` are), so the read is aligned and inside.
            if unsafe { p.byte_add(off).cast::<u64>().read() } != word {
                self.tamper.set(p.addr() + off);
                return;
            }
            off += 8;
        }
    }

    /// Fails the heap closed after a forged link or a write to freed memory
    /// (I12, I13).
    #[cfg(feature = "hardened")]
    #[cold]
    #[inline(never)]
    fn tampered(&mut self) {
        let addr = self.tamper.get();
        self.error = HeapError::Corrupted { addr };
        self.fail_closed();
    }

    // ----- bins -------------------------------------------------------

    /// Pushes the free chunk `p` of `size < MIN_LARGE` onto its small bin.
    ///
    /// # Safety
    ///
    /// `p` is an unbinned free chunk of `size` bytes (I4).
    #[inline]
    unsafe fn push_small(&mut self, p: *mut u8, size: usize) {
        let i = small_index(size);
        let h = self.small[i % NSMALL];
        // SAFETY: I4: `p` is free and owned by the heap; `h` is the bin's
        // head, a free chunk, or null.
        unsafe {
            self.set_fd(p, h);
            self.set_bk(p, null());
            if h.is_null() {
                self.smallmap |= 1 << i;
            } else {
                self.set_bk(h, p);
            }
        }
        self.small[i % NSMALL] = p;
    }

    /// Pops the head `p` of the non-empty small bin `i`.
    ///
    /// # Safety
    ///
    /// `i < NSMALL`, `p == self.small[i]` and it is non-null (I4, I5).
    #[inline(always)]
    unsafe fn pop_small(&mut self, i: usize, p: *mut u8) {
        // SAFETY: I4: `p` heads bin `i`, its `fd` is the next chunk or null.
        let f = unsafe { self.fd(p) };
        // SAFETY: the caller's contract: `i < NSMALL`.
        unsafe { *self.small.get_unchecked_mut(i) = f };
        if f.is_null() {
            self.smallmap &= !(1 << i);
        } else {
            // SAFETY: I4: `f` is a binned free chunk.
            unsafe { self.set_bk(f, null()) };
        }
    }

    /// Unlinks the small free chunk `p` of `size` bytes from its bin.
    ///
    /// # Safety
    ///
    /// `p` is in the small bin for `size` (I4).
    #[inline]
    unsafe fn unlink_small(&mut self, p: *mut u8, size: usize) {
        // SAFETY: I4: `p` is binned, so its links are valid chunks or null.
        unsafe {
            let f = self.fd(p);
            let b = self.bk(p);
            if b.is_null() {
                let i = small_index(size);
                self.small[i % NSMALL] = f;
                if f.is_null() {
                    self.smallmap &= !(1 << i);
                }
            } else {
                self.set_fd(b, f);
            }
            if !f.is_null() {
                self.set_bk(f, b);
            }
        }
    }

    /// Inserts the free chunk `x` of `size >= MIN_LARGE` into its tree bin.
    ///
    /// `#[inline]`, like [`Self::unlink_large`]: in a speed build the tree
    /// work is inlined where chunks are freed and found, which makes the
    /// random workloads about 6% faster and small churn about 5% slower
    /// (measured; the geomean over all 13 benchmark workloads drops from
    /// 1.00x to 0.98x the `dlmalloc` crate's). A size build keeps one body.
    ///
    /// # Safety
    ///
    /// `x` is an unbinned free chunk of `size` bytes (I6).
    #[inline]
    unsafe fn insert_large(&mut self, x: *mut u8, size: usize) {
        let i = tree_index(size);
        // SAFETY: I6: `x` is free and large enough for the tree links; every
        // chunk reached from the root is a tree-binned free chunk.
        unsafe {
            set_tindex(x, i);
            self.set_child(x, 0, null());
            self.set_child(x, 1, null());
            // `x`'s parent and ring neighbours: a new node is a ring of one.
            let (mut parent, mut f, mut b) = (null(), x, x);
            let mut t = self.tree[i % NTREE];
            if t.is_null() {
                self.treemap |= 1 << i;
                self.tree[i % NTREE] = x;
            } else {
                let mut k = size << tree_shift(i);
                loop {
                    if size_of_head(head(t)) != size {
                        let dir = k >> (usize::BITS - 1);
                        k <<= 1;
                        let c = self.child(t, dir);
                        if c.is_null() {
                            self.set_child(t, dir, x);
                            parent = t;
                            break;
                        }
                        t = c;
                    } else {
                        // Same size: join `t`'s ring; ring members are not
                        // tree nodes (null parent, not a root).
                        f = self.fd(t);
                        b = t;
                        self.set_fd(t, x);
                        self.set_bk(f, x);
                        break;
                    }
                }
            }
            self.set_parent(x, parent);
            self.set_fd(x, f);
            self.set_bk(x, b);
        }
    }

    /// Removes the tree-binned chunk `x` from its bin.
    ///
    /// # Safety
    ///
    /// `x` is in a tree bin (I6).
    #[inline]
    unsafe fn unlink_large(&mut self, x: *mut u8) {
        // SAFETY: I6: `x` and every chunk linked from it are tree-binned free
        // chunks whose links follow I6.
        unsafe {
            let xp = self.parent(x);
            let r;
            if self.bk(x) != x {
                // A ring: the next member replaces `x` (if `x` is the node).
                let f = self.fd(x);
                r = self.bk(x);
                self.set_bk(f, r);
                self.set_fd(r, f);
            } else {
                // Replace `x` by a leaf of its subtree (its right-most-first
                // descendant), detached from that leaf's parent.
                let mut side = 1;
                let mut c = self.child(x, 1);
                if c.is_null() {
                    side = 0;
                    c = self.child(x, 0);
                }
                if !c.is_null() {
                    let mut rp = x;
                    loop {
                        let mut k = 1;
                        let mut next = self.child(c, 1);
                        if next.is_null() {
                            k = 0;
                            next = self.child(c, 0);
                            if next.is_null() {
                                break;
                            }
                        }
                        rp = c;
                        side = k;
                        c = next;
                    }
                    self.set_child(rp, side, null());
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
            } else {
                let k = usize::from(self.child(xp, 0) != x);
                self.set_child(xp, k, r);
            }
            if !r.is_null() {
                self.set_parent(r, xp);
                let c0 = self.child(x, 0);
                let c1 = self.child(x, 1);
                self.set_child(r, 0, c0);
                self.set_child(r, 1, c1);
                if !c0.is_null() {
                    self.set_parent(c0, r);
                }
                if !c1.is_null() {
                    self.set_parent(c1, r);
                }
            }
        }
    }

    /// Bins the free chunk `p` of `size` bytes.
    ///
    /// # Safety
    ///
    /// `p` is an unbinned free chunk of `size` bytes, neither dv nor top.
    #[inline]
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
    #[inline]
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
    #[inline]
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
            #[cfg(feature = "hardened")]
            Self::poison_window(r, rsize);
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
    #[inline]
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

    /// A chunk of at least `nb` bytes (a padded size), or null: the common
    /// paths are a few compares, a bin pop and two stores.
    ///
    /// One copy for `allocate` and `memalign`: `#[inline]` rather than
    /// `always`, so a speed build inlines it where it pays and a size build
    /// keeps one body.
    #[inline]
    fn malloc_chunk(&mut self, nb: usize) -> *mut u8 {
        // SAFETY: I4..I8: the bins, dv and top hold free chunks of the
        // sizes they are found by; each is unlinked before it is used.
        unsafe {
            // Unchanged below until used (`tmalloc` changes dv only when it
            // returns a chunk).
            let dvsize = self.dvsize;
            if nb < MIN_LARGE {
                let idx = small_index(nb);
                let bits = self.smallmap >> idx;
                // An exact fit or the next size (too small a rest to keep);
                // a larger small chunk only when dv cannot serve.
                if bits & 3 != 0 || (bits != 0 && nb > dvsize) {
                    // SAFETY: I5: bit `i` of the `u32` map is set, so
                    // `i < NSMALL`.
                    let i = idx + bits.trailing_zeros() as usize;
                    let p = *self.small.get_unchecked(i);
                    self.pop_small(i, p);
                    if !cfg!(feature = "hardened") && !FAST && bits & 3 != 0 {
                        // The exact size or 8 bytes more: too little rest
                        // for a chunk, so used whole here, without the call
                        // to `take` (small churn about 4% faster). A
                        // hardened build goes through `take`, which checks
                        // the chunk's poison first (I13). So does a build
                        // with fast lists, whose exact fits come from the
                        // fast lists: there this path changed the executed
                        // instructions by under 0.3% (either way) on every
                        // benchmark workload and cost 44 B.
                        // SAFETY: I2, I4: `p` was a free chunk of
                        // `small_size(i)` bytes, now out of its bin.
                        Self::use_whole(p, small_size(i));
                        return p;
                    }
                    return self.take(p, small_size(i), nb);
                }
            }
            if FAST && self.has_fast && nb < MIN_LARGE && nb > dvsize && self.treemap != 0 {
                // I14: a small request would split a tree chunk: the fast
                // chunks merge back first, so small blocks reuse what the
                // fast lists hold instead of breaking up large free chunks
                // (which made a json trace replay peak 23% higher). Once at
                // most, as below.
                return self.consolidate_and_retry(nb);
            }
            if nb > dvsize && self.treemap != 0 {
                let p = self.tmalloc(nb);
                if !p.is_null() {
                    return p;
                }
            }
            if nb <= dvsize {
                // Take dv out; its remainder becomes dv again.
                let p = self.dv;
                self.dv = null();
                self.dvsize = 0;
                return self.take(p, dvsize, nb);
            }
            if FAST && self.has_fast && (nb >= MIN_LARGE || nb > self.topsize) {
                // I14: before the top is carved for a large request, or
                // grown, the fast chunks merge back into the bins and try
                // again, so they neither push the top up for large blocks
                // nor make the heap grow. `consolidate` clears `has_fast`,
                // so this recurses once at most.
                return self.consolidate_and_retry(nb);
            }
            if nb > self.topsize && !self.sys_alloc(nb) {
                return null();
            }
            self.take_top(nb)
        }
    }

    /// [`Self::consolidate`], then [`Self::malloc_chunk`] again (which then
    /// finds `has_fast` clear: this recurses once). Out of line, so the
    /// retry does not turn `malloc_chunk` into a loop around its fast
    /// paths.
    #[cold]
    #[inline(never)]
    fn consolidate_and_retry(&mut self, nb: usize) -> *mut u8 {
        self.consolidate();
        self.malloc_chunk(nb)
    }

    /// Empties the fast lists: every fast chunk is freed for real, merging
    /// with its free neighbours (I14).
    #[cold]
    #[inline(never)]
    fn consolidate(&mut self) {
        self.has_fast = false;
        // One flat loop (code size): list `i` is emptied, then `i` moves on.
        let mut i = 0;
        while i < NFAST {
            let p = self.fast[i];
            if p.is_null() {
                i += 1;
                continue;
            }
            // SAFETY: I14: `p` is a fast chunk of `i * ALIGN` bytes: an
            // in-use chunk but for its FENCE mark, which comes off before it
            // is freed; its link is read first.
            unsafe {
                self.fast[i] = self.fd(p);
                set_head(p, head(p) & !FENCE);
                self.free_chunk(p, i * ALIGN);
            }
        }
    }

    /// Carves `nb` bytes off the start of the top chunk.
    ///
    /// # Safety
    ///
    /// `nb <= self.topsize` (I8).
    #[inline]
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
        }
        p
    }

    /// The best-fitting tree chunk for a request (the smallest of size
    /// `>= nb`), split by [`Self::take`]; null when no tree chunk fits. A
    /// small request (every tree chunk fits it) searches as for
    /// `MIN_LARGE`, the smallest tree size, and so takes the smallest chunk
    /// of the lowest non-empty bin.
    ///
    /// `#[inline]`: its one caller is `malloc_chunk`; inlined there the
    /// random workloads run about 3% faster (measured), and a size build
    /// (which inlines a single caller anyway) is 8 bytes smaller.
    ///
    /// # Safety
    ///
    /// `nb > dvsize` and the tree bins obey I5, I6.
    #[inline]
    unsafe fn tmalloc(&mut self, nb: usize) -> *mut u8 {
        let mut v = null();
        let mut rsize = nb.wrapping_neg();
        // The search key: `nb`, or for a small request the smallest tree
        // size (whose trie path in bin 0 is all zero bits).
        let key = nb.max(MIN_LARGE);
        let idx = tree_index(key);
        // SAFETY: I6: every chunk reached from a root is a tree-binned free
        // chunk with valid links.
        unsafe {
            let mut t = self.tree[idx % NTREE];
            if !t.is_null() {
                // Walk down the path of the key's bits, remembering the best
                // fit and the last right subtree not taken (all larger).
                let mut bits = key << tree_shift(idx);
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
                    let rt = self.child(t, 1);
                    t = self.child(t, bits >> (usize::BITS - 1));
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
                let larger = left_bits(idx) & self.treemap;
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
                let c0 = self.child(t, 0);
                t = if c0.is_null() { self.child(t, 1) } else { c0 };
            }
            if v.is_null() {
                return null();
            }
            self.unlink_large(v);
            self.take(v, rsize + nb, nb)
        }
    }

    /// Hands out the first `nb` bytes of the unbinned free chunk `p` of
    /// `size >= nb` bytes (all of it when the rest could not be a chunk).
    /// Of a remainder and the old dv, the larger is kept as dv (it serves
    /// more of the requests that follow without a search) and the other is
    /// binned.
    ///
    /// `#[inline]`: a speed build inlines it into its three callers, a size
    /// build keeps one body.
    ///
    /// # Safety
    ///
    /// `p` is a free chunk of `size` bytes taken out of every bin and not
    /// dv (I4, I7).
    #[inline]
    unsafe fn take(&mut self, p: *mut u8, size: usize, nb: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe {
            #[cfg(feature = "hardened")]
            self.check_poison(p, size, nb);
            let r = Self::carve(p, size, nb);
            if !r.is_null() {
                let rsize = size - nb;
                if rsize > self.dvsize {
                    self.replace_dv(r, rsize);
                } else {
                    self.insert_chunk(r, rsize);
                }
            }
        }
        p
    }

    /// Allocates a chunk of `nb` bytes (a padded size, at most
    /// `pad_request(MAX_REQUEST)`) aligned to `align > ALIGN`: over-allocates
    /// by `align + MIN_CHUNK` once and frees the leading and trailing parts.
    #[inline(never)]
    fn memalign(&mut self, align: usize, nb: usize) -> *mut u8 {
        // The aligned chunk is carved from the end of the over-allocation:
        // what follows it is less than `align` (and a multiple of ALIGN), so
        // what precedes it, the lead, is at least `MIN_CHUNK`: a chunk of
        // its own, freed. (Carving from the start would leave a tail to
        // free half the time even for 16-byte alignment, and freeing it
        // merges it into the remainder just binned: an unlink and a
        // re-insert.) No overflow: `nb <= MAX_REQUEST + 2 * ALIGN`, well
        // below `isize::MAX`, and `align`, a power of two, is at most
        // `isize::MAX + 1`.
        let req = nb + align + (MIN_CHUNK - ALIGN);
        if req > MAX_REQUEST {
            return null();
        }
        let p = self.malloc(req);
        if p.is_null() {
            return p;
        }
        // SAFETY: `p` is a fresh in-use chunk of at least `req` bytes (I2);
        // the aligned chunk `q` and the parts split off lie inside it.
        unsafe {
            let psize = size_of_head(head(p));
            // The last chunk at most `nb` bytes before the end whose payload
            // is aligned: `lead >= req - nb - (align - ALIGN) = MIN_CHUNK`.
            let end = p.addr() + psize;
            let lead = ((end - nb + MEM_OFFSET) & !(align - 1)) - MEM_OFFSET - p.addr();
            let q = plus(p, lead);
            let qsize = psize - lead;
            set_head(q, qsize | PINUSE | CINUSE);
            // The head holds `psize` and the flags: keep `lead` bytes.
            set_head(p, head(p) - qsize);
            self.release(p, lead);
            self.trim(q, qsize, nb);
            q
        }
    }

    /// Grows the heap until the top holds `nb > topsize` bytes; false when it
    /// cannot. At most two grows: the first for what the top lacks, the
    /// second (only when the first region was not contiguous and too small)
    /// for the whole request.
    #[cold]
    #[inline(never)]
    fn sys_alloc(&mut self, nb: usize) -> bool {
        if self.failed {
            return false;
        }
        let Some(want) = nb.checked_add(TOP_FOOT + 2 * ALIGN) else {
            return false;
        };
        // `topsize < nb < want` (the caller's contract; 0 before the first
        // grow).
        let mut ask = want - self.topsize;
        loop {
            if !self.add_memory(ask) {
                return false;
            }
            if nb <= self.topsize {
                return true;
            }
            if ask == want {
                return false;
            }
            // The region was not contiguous (a new segment of `ask` bytes
            // may be too small): ask once more, for the whole request.
            ask = want;
        }
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
        let start = region.start.as_ptr();
        let end_addr = region.end_addr() & !ALIGN_MASK;
        // (Before the first grow `seg_end` is null, which no region starts
        // at.)
        if start.addr() != self.seg_end.addr() {
            // Not contiguous with the top segment (or the first region): a
            // new segment, set up as an empty top and its reserve, which the
            // region's rest then extends as it extends a contiguous one.
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
            let base = unsafe { start.byte_add(lead) };
            self.seg_base = base;
            self.top = base;
            self.topsize = 0;
            self.seg_end = start.with_addr(base.addr() + TOP_FOOT);
            self.fresh = base.addr() + MEM_OFFSET;
        }
        // The top segment and its top grow up to the region's end.
        let add = end_addr - self.seg_end.addr();
        self.overhead += region.len - add;
        self.topsize += add;
        // SAFETY: M1: the region continues the top segment; `add` bytes of
        // it are in the segment from now on. I8: the top head lies before
        // the reserve.
        unsafe {
            self.seg_end = start.byte_add(end_addr - start.addr());
            set_head(self.top, self.topsize | PINUSE);
        }
        #[cfg(feature = "hardened")]
        self.note_segment(self.seg_base.addr(), self.seg_end.addr());
        true
    }

    /// Widens the span `[lo, hi)` that every link must point into to cover
    /// the segment `[base, end)`, and draws the link secret on the first
    /// segment (I12).
    ///
    /// The secret mixes this heap's own address with its first segment's
    /// base through a multiply-xorshift hash. That differs between heaps and
    /// between programs of different layouts, but it is not random: wasm
    /// addresses are deterministic, so anyone who knows the module can
    /// compute it. It stops blind forgeries (a stale or injected plain
    /// pointer in a freed block), not an attacker who has read the binary.
    #[cfg(feature = "hardened")]
    fn note_segment(&mut self, base: usize, end: usize) {
        if self.secret == 0 {
            let mut x = base ^ ptr::from_ref(self).addr().rotate_left(13) ^ 0x9E37_79B9;
            x ^= x >> 15;
            x = x.wrapping_mul(0x2C1B_3C6D);
            x ^= x >> 12;
            x = x.wrapping_mul(0x297A_2D39);
            x ^= x >> 15;
            // An odd secret: a plain (aligned) pointer never unmasks to an
            // aligned one.
            self.secret = x | 1;
        }
        self.lo = if self.lo == 0 {
            base
        } else {
            self.lo.min(base)
        };
        self.hi = self.hi.max(end);
    }

    /// Ends the top segment before a new one starts: its top becomes a free
    /// chunk (when big enough) and a record (a fenced in-use chunk holding
    /// the segment's base, end and the next older record) closes it. The
    /// caller then sets up the new top segment (`top` and `topsize` are
    /// stale until it does).
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
            // A top too small to be a chunk joins the record (overhead).
            let keep = tsize >= MIN_CHUNK;
            let (rec, rsize) = if keep {
                (plus(t, tsize), TOP_FOOT)
            } else {
                (t, tsize + TOP_FOOT)
            };
            self.overhead += rsize - TOP_FOOT;
            set_head(rec, rsize | PINUSE | CINUSE | FENCE);
            if keep {
                // The old top becomes an in-use chunk and is freed: it is
                // binned (its predecessor is in use, I3; the record too).
                set_head(t, tsize | PINUSE | CINUSE);
                self.release(t, tsize);
            }
            let words = rec.byte_add(MEM_OFFSET).cast::<*mut u8>();
            words.write(self.seg_base);
            words.add(1).write(self.seg_end);
            words.add(2).write(self.older);
            self.older = words.cast::<u8>();
        }
    }

    // ----- freeing ----------------------------------------------------

    /// Frees chunk `p` of `size` bytes, coalescing with free neighbours.
    ///
    /// # Safety
    ///
    /// `p` is an in-use chunk of `size` bytes (or a part just split off one
    /// and marked in use), not a record (I2).
    ///
    /// `#[inline]` rather than `always`, as for [`Self::malloc_chunk`]: one
    /// body in a size build.
    #[inline]
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
                }
            }
            let nh = head(next);
            if nh & CINUSE == 0 {
                if next == self.top {
                    // I10: the top moves down over used bytes; the pristine
                    // part starts above the old top's head at the lowest.
                    let f = next.addr() + MEM_OFFSET;
                    if f > self.fresh {
                        self.fresh = f;
                    }
                    self.topsize += size;
                    self.top = p;
                    set_head(p, self.topsize | PINUSE);
                    if p == self.dv {
                        self.dv = null();
                        self.dvsize = 0;
                    }
                    return;
                }
                // A free successor merges in: dv (whose head holds `dvsize`,
                // I7), so the merged chunk becomes dv, or a binned one.
                let nsize = size_of_head(nh);
                size += nsize;
                if next == self.dv {
                    self.dv = p;
                } else {
                    self.unlink_chunk(next, nsize);
                }
            } else {
                set_head(next, nh & !PINUSE);
            }
            set_head(p, size | PINUSE);
            set_prev_foot(plus(p, size), size);
            #[cfg(feature = "hardened")]
            Self::poison_window(p, size);
            if p == self.dv {
                self.dvsize = size;
                return;
            }
            self.insert_chunk(p, size);
        }
    }

    /// Checks that `ptr` is a live block of this heap for `layout` (its
    /// chunk is `ptr - MEM_OFFSET`) and returns its chunk size; the error
    /// when the heap refused the call (a misuse, now failed closed (I11),
    /// or a heap failed closed already).
    ///
    /// The test is [`Self::probe`]; a failure is classified by
    /// [`Self::classify`] before the heap fails closed (which changes what
    /// `classify` reads). This part is inlined: a caller that drops the
    /// error (`GlobalAlloc`) lets the compiler drop the classification,
    /// which only reads.
    #[inline(always)]
    fn check(&mut self, ptr: NonNull<u8>, layout: Layout) -> Result<usize, HeapError> {
        #[cfg(feature = "bench-unchecked")]
        {
            let _ = layout;
            // SAFETY: measurement only (feature `bench-unchecked`): the
            // caller's contract is trusted, so `ptr` is a live block whose
            // chunk head precedes it (I2).
            return Ok(size_of_head(unsafe {
                head(minus(ptr.as_ptr(), MEM_OFFSET))
            }));
        }
        #[allow(unreachable_code)]
        let r = self.probe(ptr, layout);
        if r & 1 == 0 {
            return Ok(r);
        }
        let limit = r & !1;
        let kind = self.classify(ptr.as_ptr().wrapping_byte_sub(MEM_OFFSET), layout, limit);
        self.fail_closed();
        let addr = ptr.as_ptr().addr();
        Err(match kind {
            Misuse::Foreign => HeapError::ForeignPointer { addr },
            Misuse::DoubleFree => HeapError::DoubleFree { addr },
            Misuse::Layout => HeapError::LayoutMismatch { addr },
            Misuse::Failed => HeapError::FailedClosed,
        })
    }

    /// The chunk size (a multiple of 8) when `ptr` is a live block of this
    /// heap for `layout`, else 1 plus the bound of the segment its chunk
    /// address lies in (0 for none, an 8-aligned address otherwise), for
    /// [`Self::classify`]: bit 0 tells the two apart.
    ///
    /// The fast path is one range compare (below the top of the top
    /// segment), one alignment test, the chunk's bounds, and one combined
    /// test of the head bits, the successor's `PINUSE` and the size class.
    /// Older segments are searched by [`Self::find_limit`].
    #[inline]
    fn probe(&self, ptr: NonNull<u8>, layout: Layout) -> usize {
        let mem = ptr.as_ptr();
        let p = mem.wrapping_byte_sub(MEM_OFFSET);
        let a = p.addr();
        let base = self.seg_base.addr();
        let mut limit = self.top.addr();
        if a.wrapping_sub(base) >= limit.wrapping_sub(base) {
            limit = self.find_limit(a);
            if limit == 0 {
                return 1;
            }
        }
        if mem.addr() & ((layout.align() - 1) | ALIGN_MASK) == 0 {
            // SAFETY: I1: `p` is an aligned chunk address below `limit`, the
            // top or the record of its segment, so its head lies in it.
            let h = unsafe { head(p) };
            let size = size_of_head(h);
            if size <= limit - a {
                // SAFETY: I1: `p + size <= limit`, a chunk whose head lies in
                // the segment.
                let nh = unsafe { head(plus(p, size)) };
                if (h & (CINUSE | FENCE)) ^ CINUSE == 0
                    && nh & PINUSE != 0
                    && fits_chunk(size, layout.size())
                {
                    return size;
                }
            }
        }
        limit | 1
    }

    /// The end bound (the record chunk) of the older segment holding the
    /// chunk address `a`, or 0: none holds it, or the heap failed closed.
    #[cold]
    #[inline(never)]
    fn find_limit(&self, a: usize) -> usize {
        if self.failed {
            return 0;
        }
        let mut rec = self.older;
        while !rec.is_null() {
            // SAFETY: I1: `rec` is a record payload: base, end, next.
            let (base, next) = unsafe {
                let w = rec.cast::<*mut u8>();
                (w.read(), w.add(2).read())
            };
            let rec_chunk = rec.addr() - MEM_OFFSET;
            if a >= base.addr() && a < rec_chunk {
                return rec_chunk;
            }
            rec = next;
        }
        0
    }

    /// Classifies a failed [`Self::check`] of chunk address `p` (`limit`:
    /// the bound of its segment, 0 for none). Reads only.
    #[cold]
    #[inline(never)]
    fn classify(&self, p: *mut u8, layout: Layout, limit: usize) -> Misuse {
        let a = p.addr();
        let addr = a.wrapping_add(MEM_OFFSET);
        if self.failed {
            Misuse::Failed
        } else if a & ALIGN_MASK != 0 {
            Misuse::Foreign
        } else if limit == 0 {
            if !self.seg_base.is_null() && a >= self.top.addr() && a < self.seg_end.addr() {
                // Inside the top: freed already (merged into the top).
                Misuse::DoubleFree
            } else {
                Misuse::Foreign
            }
        } else if addr & (layout.align() - 1) != 0 {
            Misuse::Layout
        } else {
            // SAFETY: I1: as in `probe`: `p` is aligned and below `limit`.
            let h = unsafe { head(p) };
            let size = size_of_head(h);
            if cfg!(feature = "hardened") && h == usize::from_ne_bytes([0xDD; W]) {
                // The "head" is the poison byte (`block::POISON`, I13): the
                // block lies in freed memory.
                Misuse::DoubleFree
            } else if size > limit - a || (!FAST && h & FENCE != 0) {
                Misuse::Foreign
            } else if h & (CINUSE | FENCE) != CINUSE
                // SAFETY: I1: `p + size <= limit`, as in `probe`.
                || unsafe { head(plus(p, size)) } & PINUSE == 0
            {
                Misuse::DoubleFree
            } else {
                Misuse::Layout
            }
        }
    }

    /// Enters the failed-closed state (I11).
    ///
    /// Every allocation path then fails by itself: the bin maps, dv and top
    /// are emptied and the fast pointer range is made empty, so only the
    /// cold paths look at the flag.
    #[cold]
    #[inline(never)]
    fn fail_closed(&mut self) {
        if FAST {
            // The fast lists are emptied too (into the bins cleared below).
            self.consolidate();
        }
        self.failed = true;
        self.smallmap = 0;
        self.treemap = 0;
        self.dvsize = 0;
        self.topsize = 0;
        self.seg_base = self.top;
    }

    /// Tries to resize chunk `p` of `oldsize` bytes to `nb` bytes in place;
    /// returns whether it did.
    ///
    /// # Safety
    ///
    /// `p` is a live chunk of `oldsize` bytes (checked by `check`).
    #[inline]
    unsafe fn resize_in_place(&mut self, p: *mut u8, oldsize: usize, nb: usize) -> bool {
        // SAFETY: I1..I8: `p` is in use; its successor is a chunk of the
        // segment (in use, free, dv or top) and every split stays inside
        // the chunks involved.
        unsafe {
            let next = plus(p, oldsize);
            let mut size = oldsize;
            if oldsize < nb {
                // Absorb a free successor (binned, dv or the top, whose head
                // holds its size too, I8) whole; the rest is split off below
                // (and freed back into the top when it came from there).
                let nh = head(next);
                let nsize = size_of_head(nh);
                size += nsize;
                if nh & CINUSE != 0 || size < nb {
                    return false;
                }
                // The chunk after the successor.
                let n = plus(next, nsize);
                if next == self.top {
                    // An empty top stays at the old top's end (I8), its head
                    // given `PINUSE` below.
                    set_head(n, 0);
                    self.top = n;
                    self.topsize = 0;
                } else if next == self.dv {
                    self.dv = null();
                    self.dvsize = 0;
                } else {
                    self.unlink_chunk(next, nsize);
                }
                // The head holds `oldsize` and the flags: add to the size.
                set_head(p, head(p) + nsize);
                set_head(n, head(n) | PINUSE);
            }
            self.trim(p, size, nb);
        }
        true
    }

    /// Keeps the first `nb` bytes of the in-use chunk `p` of `size >= nb`
    /// bytes and frees the rest when it can be a chunk.
    ///
    /// # Safety
    ///
    /// `p` is an in-use chunk of `size` bytes (I2), `nb` a padded size.
    #[inline]
    unsafe fn trim(&mut self, p: *mut u8, size: usize, nb: usize) {
        let rsize = size - nb;
        if rsize < MIN_CHUNK {
            return;
        }
        // SAFETY: I1, I2: the rest `[p + nb, p + size)` lies in the chunk and
        // becomes a chunk of its own, in use until freed.
        unsafe {
            // The head holds `size` and the flags: take `rsize` off.
            set_head(p, head(p) - rsize);
            let r = plus(p, nb);
            set_head(r, rsize | PINUSE | CINUSE);
            self.release(r, rsize);
        }
    }
}

impl<S: MemorySource> RawHeap for Heap<S> {
    #[inline]
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        if layout.size() > MAX_REQUEST {
            return None;
        }
        let p = self.allocate(pad_request(layout.size()), layout.align());
        if p.is_null() {
            return None;
        }
        // SAFETY: I1: the payload of a chunk lies inside it, so it is not
        // null.
        Some(unsafe { NonNull::new_unchecked(plus(p, MEM_OFFSET)) })
    }

    fn alloc_zeroed(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        let fresh = self.fresh;
        let top = self.top.addr();
        let base = self.seg_base;
        let mem = self.alloc(layout)?;
        let a = mem.as_ptr().addr();
        let p = a - MEM_OFFSET;
        // I10: a block carved from the old top at or above the watermark,
        // or the first block of a new segment, is untouched memory.
        let pristine =
            (p == top && a >= fresh) || (self.seg_base != base && p == self.seg_base.addr());
        if !pristine {
            // SAFETY: the block is live and at least `layout.size()` long.
            unsafe { mem.as_ptr().write_bytes(0, layout.size()) };
        }
        Some(mem)
    }

    #[inline]
    unsafe fn dealloc(&mut self, ptr: NonNull<u8>, layout: Layout) -> Result<(), HeapError> {
        let size = self.check(ptr, layout)?;
        // SAFETY: I1: `check` found the chunk inside a segment.
        let p = unsafe { minus(ptr.as_ptr(), MEM_OFFSET) };
        if FAST && size <= FAST_MAX {
            // SAFETY: I14: `p` is a live chunk (`check`); marked FENCE it
            // stays in use for its neighbours and `check` refuses it from
            // now on. `size <= FAST_MAX`, so the list index is below NFAST.
            unsafe {
                set_head(p, head(p) | FENCE);
                self.set_fd(p, *self.fast.get_unchecked(size / ALIGN));
                *self.fast.get_unchecked_mut(size / ALIGN) = p;
            }
            self.has_fast = true;
            return Ok(());
        }
        // SAFETY: `check` proved `p` a live chunk of `size` bytes (I2).
        unsafe { self.release(p, size) };
        #[cfg(feature = "hardened")]
        if self.failed {
            return Err(self.error);
        }
        Ok(())
    }

    unsafe fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        let Ok(oldsize) = self.check(ptr, layout) else {
            return None;
        };
        if new_size > MAX_REQUEST {
            return None;
        }
        // SAFETY: I1: `check` found the chunk inside a segment.
        let p = unsafe { minus(ptr.as_ptr(), MEM_OFFSET) };
        let nb = pad_request(new_size);
        // SAFETY: `check` proved `p` a live chunk of `oldsize` bytes.
        if unsafe { self.resize_in_place(p, oldsize, nb) } {
            return Some(ptr);
        }
        let new = self.allocate(nb, layout.align());
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
        unsafe { self.release(p, oldsize) };
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
