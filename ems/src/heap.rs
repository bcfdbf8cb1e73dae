//! The heap: the position-independent core (`Core`: alloc, free, realloc
//! in place, extend, by pool offsets through an accessor) and the two
//! pointer-based front ends built on it: [`Heap`] (bookkeeping outside the
//! pool, over a [`MemorySource`]) and [`EmsPool`] (bookkeeping at the start
//! of the pool).

use core::alloc::Layout;
use core::ptr::NonNull;

use linmem_memory::{FixedRegion, HeapError, HeapStats, MemorySource, RawHeap, Violation};

use crate::EmsStats;
use crate::bins::{NSMALL, NTREES, SMALL_LIMIT, T_NEXT, TreeMask, small_index, tree_index};
use crate::block::{
    FREE, Fault, GAP, GRAIN, HDR, Hmu, MAX_END, MIN_BLOCK, Mem, MemMut, R, RawMem, USED,
};

/// Marks a [`Core`] that has been initialised.
const MAGIC: u32 = 0x454d_5321;

/// Why a pool could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolError {
    /// The pool start is not 8-byte aligned.
    Misaligned,
    /// The pool is too small to hold the bookkeeping and one block.
    TooSmall,
    /// The pool does not lie inside the memory given.
    OutOfBounds,
    /// The heap failed closed earlier.
    FailedClosed,
}

impl core::fmt::Display for PoolError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Misaligned => "pool start is not 8-byte aligned",
            Self::TooSmall => "pool too small",
            Self::OutOfBounds => "pool lies outside the memory",
            Self::FailedClosed => "heap failed closed after an earlier misuse",
        })
    }
}

impl core::error::Error for PoolError {}

/// The heap's bookkeeping: only `u32` pool offsets and counters, so it can
/// live anywhere (outside the pool, or at its start) and survives a move of
/// the pool unchanged.
///
/// The fields are governed by the invariants of the crate docs: `first`,
/// `end` by I1; `small`, `small_mask` by I6; `roots`, `tree_bits` by I7; the counters by
/// I8; `corrupted` by I11.
#[repr(C)]
#[derive(Clone, Debug)]
pub(crate) struct Core {
    pub(crate) magic: u32,
    /// Offset of the first block header (4 mod 8).
    pub(crate) first: u32,
    /// Pool end (8-aligned); the end sentinel header sits at `end - 4`.
    pub(crate) end: u32,
    /// Sticky: non-zero once any check failed.
    pub(crate) corrupted: u32,
    pub(crate) small_mask: u32,
    /// Roots of the size trees, and a bitmap of the non-empty ones.
    pub(crate) roots: [u32; NTREES],
    /// The tree bitmap as two words (a `u128` would raise the alignment).
    pub(crate) tree_bits: [u64; 2],
    /// The free block that ends at the sentinel, if any (0: none); it is in
    /// no list and not in the tree, and is used only when nothing else fits.
    pub(crate) top: u32,
    pub(crate) small: [u32; NSMALL],
    pub(crate) used_bytes: u32,
    pub(crate) used_blocks: u32,
    pub(crate) free_bytes: u32,
    pub(crate) free_blocks: u32,
    pub(crate) high_water: u32,
    pub(crate) gap_bytes: u32,
    /// The mask secret of the links (I12), chosen at init.
    #[cfg(feature = "hardened")]
    pub(crate) secret: u32,
}

/// Bytes reserved at the pool start when the bookkeeping lives there.
pub(crate) const STATE_BYTES: u32 = (size_of::<Core>() as u32).next_multiple_of(GRAIN);
const _: () = assert!(align_of::<Core>() <= GRAIN as usize);
const _: () = assert!(STATE_BYTES as usize >= size_of::<Core>());

/// The block size for a request of `size` bytes, `None` when too large.
#[inline(always)]
pub(crate) fn need_for(size: usize) -> Option<u32> {
    let n = size.checked_add((HDR + GRAIN - 1) as usize)? & !(GRAIN as usize - 1);
    let n = u32::try_from(n).ok()?.max(MIN_BLOCK);
    (n <= MAX_END).then_some(n)
}

impl Core {
    /// A core with no pool yet.
    pub(crate) const fn empty() -> Self {
        Self {
            magic: 0,
            first: 0,
            end: 0,
            corrupted: 0,
            small_mask: 0,
            roots: [0; NTREES],
            tree_bits: [0; 2],
            top: 0,
            small: [0; NSMALL],
            used_bytes: 0,
            used_blocks: 0,
            free_bytes: 0,
            free_blocks: 0,
            high_water: 0,
            gap_bytes: 0,
            #[cfg(feature = "hardened")]
            secret: 0,
        }
    }

    /// Whether the core has a pool.
    #[inline(always)]
    pub(crate) fn is_init(&self) -> bool {
        self.magic == MAGIC
    }

    /// Whether the pool geometry is plausible for a pool whose blocks lie in
    /// `[lo, len)` (I1); checked on entry when the bookkeeping lives in the
    /// pool, where a stray write could reach it.
    #[inline(always)]
    pub(crate) fn geometry_ok(&self, lo: u32, len: u32) -> bool {
        self.magic == MAGIC
            && self.first % GRAIN == HDR
            && self.first >= lo + HDR
            && self.end.is_multiple_of(GRAIN)
            && self.end <= len
            && self.end >= self.first + MIN_BLOCK + HDR
    }

    /// The bitmap of non-empty trees (I7).
    #[inline(always)]
    pub(crate) fn tree_mask(&self) -> TreeMask {
        (self.tree_bits[1] as TreeMask) << 64 | self.tree_bits[0] as TreeMask
    }

    /// Stores the bitmap of non-empty trees.
    #[inline(always)]
    pub(crate) fn set_tree_mask(&mut self, mask: TreeMask) {
        self.tree_bits = [mask as u64, (mask >> 64) as u64];
    }

    /// Whether the heap failed closed.
    #[inline(always)]
    pub(crate) fn is_corrupted(&self) -> bool {
        self.corrupted != 0
    }

    /// Sets the sticky flag on any failure (I11).
    #[inline(always)]
    fn seal<T>(&mut self, r: R<T>) -> R<T> {
        if r.is_err() {
            self.corrupted = 1;
        }
        r
    }

    #[inline(always)]
    fn open(&self) -> R<()> {
        if self.corrupted != 0 {
            return Err(Fault::Closed);
        }
        Ok(())
    }

    /// Lays out a pool over offsets `[start, end)`: one free block and the
    /// end sentinel. `None` when there is no room for one block.
    pub(crate) fn init<M: MemMut>(&mut self, m: &mut M, start: u32, end: u32) -> Option<()> {
        let first = start.checked_next_multiple_of(GRAIN)?.checked_add(HDR)?;
        let end = end.min(MAX_END) & !(GRAIN - 1);
        if end < first.checked_add(MIN_BLOCK + HDR)? {
            return None;
        }
        *self = Self::empty();
        self.magic = MAGIC;
        self.first = first;
        self.end = end;
        #[cfg(feature = "hardened")]
        {
            let probe = 0u8;
            self.secret = crate::bins::make_secret([
                m.seed(),
                core::ptr::from_ref(self).addr(),
                core::ptr::from_ref(&probe).addr(),
                (start as usize) << 16 ^ end as usize,
            ]);
        }
        let size = end - HDR - first;
        let r = (|| {
            m.wr(first, Hmu::new(FREE, size, true).0)?;
            m.wr(first + size - HDR, size)?;
            m.wr(end - HDR, Hmu::new(USED, 0, false).0)?;
            self.insert_free(m, first, size)
        })();
        r.ok()
    }

    /// Files the free block `b` of `size` where it belongs (I6, I7): as the
    /// top when it ends at the sentinel, else in a list or the tree.
    #[inline(always)]
    fn file<M: MemMut>(&mut self, m: &mut M, b: u32, size: u32) -> R<()> {
        if b + size == self.end - HDR {
            self.top = b;
            Ok(())
        } else if size < SMALL_LIMIT {
            self.list_push(m, b, size)
        } else {
            self.tree_insert(&mut m.re(), b, size)
        }
    }

    /// Files the free block `b` of `size` and counts it (I8).
    #[inline(always)]
    fn insert_free<M: MemMut>(&mut self, m: &mut M, b: u32, size: u32) -> R<()> {
        self.file(m, b, size)?;
        self.free_bytes = self.free_bytes.wrapping_add(size);
        self.free_blocks = self.free_blocks.wrapping_add(1);
        Ok(())
    }

    /// Unfiles the free block `b` of `size`.
    #[inline(always)]
    fn remove_free<M: MemMut>(&mut self, m: &mut M, b: u32, size: u32) -> R<()> {
        if b == self.top {
            self.top = 0;
        } else if size < SMALL_LIMIT {
            self.list_remove(m, b, size)?;
        } else {
            self.tree_remove(&mut m.re(), b, size)?;
        }
        self.uncount_free(size)
    }

    /// Takes the top block when it holds `need` bytes.
    #[inline(always)]
    fn take_top<M: MemMut>(&mut self, m: &mut M, need: u32) -> R<Option<(u32, u32)>> {
        let t = self.top;
        if t == 0 {
            return Ok(None);
        }
        let size = self.free_size(m, t)?;
        if t + size != self.end - HDR {
            return Err(Fault::Corrupt);
        }
        if size < need {
            return Ok(None);
        }
        self.top = 0;
        self.uncount_free(size)?;
        Ok(Some((t, size)))
    }

    #[inline(always)]
    fn uncount_free(&mut self, size: u32) -> R<()> {
        self.free_bytes = self.free_bytes.checked_sub(size).ok_or(Fault::Corrupt)?;
        self.free_blocks = self.free_blocks.checked_sub(1).ok_or(Fault::Corrupt)?;
        Ok(())
    }

    /// Takes a free block of at least `need` bytes out of the free
    /// structures: the smallest non-empty exact list that fits, else the
    /// best fit of the tree, else the top.
    #[inline(always)]
    fn find_free<M: MemMut>(&mut self, m: &mut M, need: u32) -> R<Option<(u32, u32)>> {
        if need < SMALL_LIMIT {
            let mask = self.small_mask & (u32::MAX << small_index(need));
            if mask != 0 {
                let i = mask.trailing_zeros() as usize;
                let b = self.list_pop(m, i)?;
                let size = i as u32 * GRAIN;
                self.uncount_free(size)?;
                return Ok(Some((b, size)));
            }
        }
        let (n, _) = self.best_fit(&m.re(), need)?;
        if n == 0 {
            return self.take_top(m, need);
        }
        let size = self.node_size(m, n)?;
        let b = self.take_large(&mut m.re(), n, size)?;
        self.uncount_free(size)?;
        Ok(Some((b, size)))
    }

    /// Writes the `size`-byte run at `b` as a live block of `need` bytes:
    /// a remainder of at least [`MIN_BLOCK`] is filed as a free block, a
    /// smaller one stays in the live block (and the next block learns its
    /// predecessor is in use). Returns the live block's size.
    #[inline(always)]
    fn split_used<M: MemMut>(
        &mut self,
        m: &mut M,
        b: u32,
        size: u32,
        need: u32,
        prev_used: bool,
    ) -> R<u32> {
        let rest = size - need;
        if rest >= MIN_BLOCK {
            m.wr(b, Hmu::new(USED, need, prev_used).0)?;
            let r = b + need;
            m.wr(r, Hmu::new(FREE, rest, true).0)?;
            m.wr(r + rest - HDR, rest)?;
            self.insert_free(m, r, rest)?;
            Ok(need)
        } else {
            m.wr(b, Hmu::new(USED, size, prev_used).0)?;
            let next = b + size;
            let nh = Hmu(m.rd(next)?);
            m.wr(next, nh.with_prev(true).0)?;
            Ok(size)
        }
    }

    /// Makes the detached free block `b` of `size` a live block of `need`
    /// bytes, filing a remainder of at least [`MIN_BLOCK`] as free.
    #[inline(always)]
    fn carve<M: MemMut>(&mut self, m: &mut M, b: u32, size: u32, need: u32) -> R<()> {
        let prev_used = Hmu(m.rd(b)?).prev_used();
        let taken = self.split_used(m, b, size, need, prev_used)?;
        self.used_bytes = self.used_bytes.wrapping_add(taken);
        self.used_blocks = self.used_blocks.wrapping_add(1);
        self.high_water = self.high_water.max(self.used_bytes);
        Ok(())
    }

    /// Allocates a block of `need` bytes (from [`need_for`]) whose payload
    /// address `base_addr + offset` is a multiple of `align`. `Ok(None)`:
    /// no free block fits.
    #[inline(always)]
    pub(crate) fn alloc<M: MemMut>(
        &mut self,
        m: &mut M,
        base_addr: usize,
        need: u32,
        align: usize,
    ) -> R<Option<u32>> {
        self.open()?;
        let r = if align <= GRAIN as usize {
            self.alloc_plain(m, need)
        } else {
            self.alloc_aligned(&mut m.re(), base_addr, need, align)
        };
        self.seal(r)
    }

    #[inline(always)]
    fn alloc_plain<M: MemMut>(&mut self, m: &mut M, need: u32) -> R<Option<u32>> {
        if need < SMALL_LIMIT && self.small_mask & (u32::MAX << small_index(need)) != 0 {
            let Some((b, size)) = self.find_free(m, need)? else {
                return Ok(None);
            };
            self.carve(m, b, size, need)?;
            return Ok(Some(b + HDR));
        }
        let (n, floor) = if self.tree_mask() >> tree_index(need) == 0 {
            (0, 0)
        } else {
            self.best_fit(&m.re(), need)?
        };
        if n == 0 {
            let Some((b, size)) = self.take_top(m, need)? else {
                return Ok(None);
            };
            self.carve(m, b, size, need)?;
            return Ok(Some(b + HDR));
        }
        let size = self.node_size(m, n)?;
        let rest = size - need;
        if rest >= SMALL_LIMIT
            && rest > floor
            && tree_index(rest) == tree_index(size)
            && self.link(m, n + T_NEXT)? == 0
        {
            return self.carve_tail(m, n, size, need).map(Some);
        }
        let b = self.take_large(&mut m.re(), n, size)?;
        self.uncount_free(size)?;
        self.carve(m, b, size, need)?;
        Ok(Some(b + HDR))
    }

    /// Allocates the last `need` bytes of tree node `n` (of `size`), which
    /// stays a tree node of the smaller size in place: the caller checked
    /// the rest is still above every smaller node size (I7) and `n` has no
    /// chained blocks, so the tree needs no change at all. (The top block,
    /// not in the tree, is split at its start instead, so live blocks stay
    /// low and growth extends the free top.)
    #[inline(always)]
    fn carve_tail<M: MemMut>(&mut self, m: &mut M, n: u32, size: u32, need: u32) -> R<u32> {
        let h = Hmu(m.rd(n)?);
        let rest = size - need;
        m.wr(n, Hmu::new(FREE, rest, h.prev_used()).0)?;
        m.wr(n + rest - HDR, rest)?;
        let a = n + rest;
        m.wr(a, Hmu::new(USED, need, false).0)?;
        let nx = n + size;
        let nh = Hmu(m.rd(nx)?);
        m.wr(nx, nh.with_prev(true).0)?;
        self.free_bytes = self.free_bytes.checked_sub(need).ok_or(Fault::Corrupt)?;
        self.used_bytes = self.used_bytes.wrapping_add(need);
        self.used_blocks = self.used_blocks.wrapping_add(1);
        self.high_water = self.high_water.max(self.used_bytes);
        Ok(a + HDR)
    }

    /// Over-allocates by `align + MIN_BLOCK`, then splits off a free leading
    /// part (at least [`MIN_BLOCK`] when not empty) so the payload is aligned.
    #[cold]
    #[inline(never)]
    fn alloc_aligned<M: MemMut>(
        &mut self,
        m: &mut M,
        base_addr: usize,
        need: u32,
        align: usize,
    ) -> R<Option<u32>> {
        let Ok(a) = u32::try_from(align) else {
            return Ok(None);
        };
        let Some(req) = need.checked_add(a).and_then(|v| v.checked_add(MIN_BLOCK)) else {
            return Ok(None);
        };
        let small = req < SMALL_LIMIT && self.small_mask & (u32::MAX << small_index(req)) != 0;
        let (n, floor) = if small || self.tree_mask() >> tree_index(req) == 0 {
            (0, 0)
        } else {
            self.best_fit(m, req)?
        };
        let found = if n != 0 {
            // As in `alloc_plain`: take the block from the end of the best
            // fit, at the highest aligned payload, when the node can shrink
            // in place (I7). `req <= size` puts that payload at least
            // `MIN_BLOCK` above the node start.
            let size = self.node_size(m, n)?;
            let last = base_addr.wrapping_add((n + size - need + HDR) as usize);
            let payload = last & !(align - 1);
            let rest = (payload.wrapping_sub(base_addr) as u32)
                .wrapping_sub(HDR)
                .wrapping_sub(n);
            if rest >= SMALL_LIMIT
                && rest < size
                && rest > floor
                && tree_index(rest) == tree_index(size)
                && self.link(m, n + T_NEXT)? == 0
            {
                return self.carve_tail(m, n, size, size - rest).map(Some);
            }
            let b = self.take_large(m, n, size)?;
            self.uncount_free(size)?;
            Some((b, size))
        } else if small {
            self.find_free(m, req)?
        } else {
            self.take_top(m, req)?
        };
        let Some((b, size)) = found else {
            return Ok(None);
        };
        let payload = base_addr.wrapping_add((b + HDR) as usize);
        let mut lead = (payload.wrapping_neg() & (align - 1)) as u32;
        if lead != 0 && lead < MIN_BLOCK {
            lead += a;
        }
        let (nb, nsize) = if lead == 0 {
            (b, size)
        } else {
            let prev_used = Hmu(m.rd(b)?).prev_used();
            m.wr(b, Hmu::new(FREE, lead, prev_used).0)?;
            m.wr(b + lead - HDR, lead)?;
            self.insert_free(m, b, lead)?;
            let nb = b + lead;
            m.wr(nb, Hmu::new(FREE, size - lead, false).0)?;
            (nb, size - lead)
        };
        self.carve(m, nb, nsize, need)?;
        Ok(Some(nb + HDR))
    }

    /// The fail-closed check of a payload offset passed in by a caller:
    /// inside the pool, 8-aligned, a sane live header, and neighbours that
    /// agree (I2, I3, I5). O(1): a handful of loads and compares.
    #[cfg(not(feature = "bench-unchecked"))]
    #[inline(always)]
    pub(crate) fn check_used<M: Mem>(&self, m: &M, p: u32) -> R<(u32, Hmu)> {
        if !p.is_multiple_of(GRAIN) || p < self.first + HDR || p >= self.end {
            return Err(Fault::Foreign);
        }
        let b = p - HDR;
        let h = Hmu(m.rd(b)?);
        match h.usage() {
            USED => {}
            FREE => return Err(Fault::DoubleFree),
            _ => return Err(Fault::Foreign),
        }
        let size = h.size();
        if size < MIN_BLOCK || size > self.end - HDR - b {
            return Err(Fault::Corrupt);
        }
        let next = b + size;
        let nh = Hmu(m.rd(next)?);
        if !nh.prev_used() {
            return Err(Fault::Corrupt);
        }
        if nh.usage() == FREE {
            let ns = nh.size();
            if ns < MIN_BLOCK || ns > self.end - HDR - next || m.rd(next + ns - HDR)? != ns {
                return Err(Fault::Corrupt);
            }
        }
        if !h.prev_used() {
            let ps = m.rd(b - HDR)?;
            if ps < MIN_BLOCK || ps % GRAIN != 0 || ps > b - self.first {
                return Err(Fault::Corrupt);
            }
            let ph = Hmu(m.rd(b - ps)?);
            if ph.usage() != FREE || ph.size() != ps {
                return Err(Fault::Corrupt);
            }
        }
        Ok((b, h))
    }

    /// Measurement only (feature `bench-unchecked`): the integrity check
    /// compiled out, so the benchmark can show its cost. The header is read
    /// through the bounds-checked accessor (I10) and trusted.
    #[cfg(feature = "bench-unchecked")]
    #[inline(always)]
    pub(crate) fn check_used<M: Mem>(&self, m: &M, p: u32) -> R<(u32, Hmu)> {
        let b = p.wrapping_sub(HDR);
        Ok((b, Hmu(m.rd(b)?)))
    }

    /// Frees the live block with payload offset `p`, coalescing with both
    /// neighbours (I4).
    #[inline(always)]
    pub(crate) fn free<M: MemMut>(&mut self, m: &mut M, p: u32) -> R<()> {
        self.open()?;
        let r = self.free_inner(m, p);
        self.seal(r)
    }

    #[inline(always)]
    fn free_inner<M: MemMut>(&mut self, m: &mut M, p: u32) -> R<()> {
        let (b, h) = self.check_used(m, p)?;
        let size = h.size();
        self.used_bytes = self.used_bytes.checked_sub(size).ok_or(Fault::Corrupt)?;
        self.used_blocks = self.used_blocks.checked_sub(1).ok_or(Fault::Corrupt)?;
        // Marked free even when it merges into the block before it: a stale
        // header inside a free block then still reads as a double free.
        m.wr(b, Hmu::new(FREE, size, h.prev_used()).0)?;
        self.release(m, b, size, h.prev_used())
    }

    /// Files `[b, b + size)`, just made free, merged with free neighbours,
    /// and writes its header and footer. The neighbours were checked by
    /// [`check_used`](Self::check_used) or are known by construction.
    #[inline(always)]
    fn release<M: MemMut>(&mut self, m: &mut M, b: u32, size: u32, prev_used: bool) -> R<()> {
        let mut start = b;
        let mut total = size;
        let mut pbit = prev_used;
        // A free neighbour in the size tree, left in place for now: the
        // merged block may simply take its place (`tree_regrow`).
        let mut kept = None;
        let next = b + size;
        let nh = Hmu(m.rd(next)?);
        if nh.usage() == FREE {
            // The block after the merged one already has its previous-free
            // bit clear (I3: `next` was free).
            let ns = nh.size();
            if ns >= SMALL_LIMIT && next != self.top {
                kept = Some((next, ns));
            } else {
                self.remove_free(m, next, ns)?;
            }
            total += ns;
        } else {
            m.wr(next, nh.with_prev(false).0)?;
        }
        if !prev_used {
            let ps = m.rd(b - HDR)?;
            let pb = b.checked_sub(ps).ok_or(Fault::Corrupt)?;
            let ph = Hmu(m.rd(pb)?);
            if ph.usage() != FREE || ph.size() != ps {
                return Err(Fault::Corrupt);
            }
            if ps >= SMALL_LIMIT && kept.is_none() {
                kept = Some((pb, ps));
            } else {
                self.remove_free(m, pb, ps)?;
            }
            start = pb;
            total += ps;
            pbit = ph.prev_used();
        }
        m.wr(start, Hmu::new(FREE, total, pbit).0)?;
        m.wr(start + total - HDR, total)?;
        if let Some((k, ks)) = kept {
            if start + total != self.end - HDR
                && self.tree_regrow(&mut m.re(), (k, ks), start, total)?
            {
                self.free_bytes = self.free_bytes.wrapping_add(total - ks);
                return Ok(());
            }
            self.remove_free(m, k, ks)?;
        }
        self.insert_free(m, start, total)
    }

    /// Resizes the live block at payload offset `p` to `need` bytes without
    /// moving it: shrinks in place, or grows into a free next block.
    /// `Ok(false)`: it cannot stay in place.
    pub(crate) fn resize_in_place<M: MemMut>(&mut self, m: &mut M, p: u32, need: u32) -> R<bool> {
        self.open()?;
        let r = self.resize_inner(m, p, need);
        self.seal(r)
    }

    fn resize_inner<M: MemMut>(&mut self, m: &mut M, p: u32, need: u32) -> R<bool> {
        let (b, h) = self.check_used(m, p)?;
        let size = h.size();
        let pbit = h.prev_used();
        if need <= size {
            let rest = size - need;
            if rest >= MIN_BLOCK {
                m.wr(b, Hmu::new(USED, need, pbit).0)?;
                let r = b + need;
                self.used_bytes = self.used_bytes.checked_sub(rest).ok_or(Fault::Corrupt)?;
                self.release(m, r, rest, true)?;
            }
            return Ok(true);
        }
        let next = b + size;
        let nh = Hmu(m.rd(next)?);
        if nh.usage() != FREE {
            return Ok(false);
        }
        let ns = nh.size();
        let total = size + ns;
        if total < need {
            return Ok(false);
        }
        self.remove_free(m, next, ns)?;
        let taken = self.split_used(m, b, total, need, pbit)?;
        self.used_bytes = self.used_bytes.wrapping_add(taken - size);
        self.high_water = self.high_water.max(self.used_bytes);
        Ok(true)
    }

    /// The payload bytes of the live block at `p`.
    pub(crate) fn usable<M: Mem>(&mut self, m: &M, p: u32) -> R<u32> {
        self.open()?;
        let r = self.check_used(m, p).map(|(_, h)| h.size() - HDR);
        self.seal(r)
    }

    /// Grows the pool to end at `new_end`, which the accessor `m` already
    /// covers. When `region` (the offset where new memory starts) lies
    /// beyond the current end, the bytes between are foreign: they become a
    /// gap block (I9). Growth too small to hold a block is ignored.
    pub(crate) fn extend<M: MemMut>(&mut self, m: &mut M, region: u32, new_end: u32) -> R<bool> {
        match self.extend_raw(m, region, new_end)? {
            Some(p) => self.free(m, p).map(|()| true),
            None => Ok(false),
        }
    }

    /// [`extend`](Self::extend) up to the last step: the new space is left
    /// as a live block whose payload offset is returned, for the caller to
    /// free (so a front end can use its one out-of-line copy of `free`).
    /// `Ok(None)`: the growth was too small to use.
    pub(crate) fn extend_raw<M: MemMut>(
        &mut self,
        m: &mut M,
        region: u32,
        new_end: u32,
    ) -> R<Option<u32>> {
        self.open()?;
        let r = self.extend_inner(m, region, new_end);
        self.seal(r)
    }

    fn extend_inner<M: MemMut>(&mut self, m: &mut M, region: u32, new_end: u32) -> R<Option<u32>> {
        let new_end = new_end.min(MAX_END) & !(GRAIN - 1);
        let s = self.end - HDR;
        let sh = Hmu(m.rd(s)?);
        if sh.usage() != USED || sh.size() != 0 {
            return Err(Fault::Corrupt);
        }
        let (nb, pbit) = if region <= self.end {
            (s, sh.prev_used())
        } else {
            let Some(nb) = region
                .checked_next_multiple_of(GRAIN)
                .and_then(|v| v.checked_add(HDR))
            else {
                return Ok(None);
            };
            (nb, true)
        };
        let Some(size) = new_end.checked_sub(HDR).and_then(|v| v.checked_sub(nb)) else {
            return Ok(None);
        };
        if size < MIN_BLOCK {
            return Ok(None);
        }
        if nb != s {
            let gap = nb - s;
            m.wr(s, Hmu::new(GAP, gap, sh.prev_used()).0)?;
            self.gap_bytes = self.gap_bytes.wrapping_add(gap);
        }
        m.wr(nb, Hmu::new(USED, size, pbit).0)?;
        m.wr(new_end - HDR, Hmu::new(USED, 0, true).0)?;
        let old_top = core::mem::replace(&mut self.top, 0);
        self.end = new_end;
        if old_top != 0 && nb != s {
            // The old top now ends at the gap, not the sentinel: refile it.
            let ts = self.free_size(m, old_top)?;
            self.file(m, old_top, ts)?;
        } else {
            self.top = old_top;
        }
        self.used_bytes = self.used_bytes.wrapping_add(size);
        self.used_blocks = self.used_blocks.wrapping_add(1);
        Ok(Some(nb + HDR))
    }

    /// The summary every allocator reports (footprint filled by the caller).
    pub(crate) fn heap_stats<M: Mem>(&self, m: &M) -> HeapStats {
        HeapStats {
            footprint: 0,
            peak_footprint: 0,
            in_use: self.used_bytes as usize,
            live_blocks: self.used_blocks as usize,
            free: self.free_bytes as usize,
            free_blocks: self.free_blocks as usize,
            largest_free: if self.is_corrupted() {
                0
            } else {
                let top = match self.top {
                    0 => 0,
                    t => self.free_size(m, t).unwrap_or(0),
                };
                self.largest_free(m).unwrap_or(0).max(top) as usize
            },
        }
    }
}

/// Maps a fault of a call about payload offset `p` to the public error,
/// with absolute addresses (damage is reported at the pool base).
pub(crate) fn to_error(f: Fault, base_addr: usize, p: u32) -> HeapError {
    let addr = base_addr.wrapping_add(p as usize);
    match f {
        Fault::Corrupt => HeapError::Corrupted { addr: base_addr },
        Fault::DoubleFree => HeapError::DoubleFree { addr },
        Fault::Foreign => HeapError::ForeignPointer { addr },
        Fault::Closed => HeapError::FailedClosed,
    }
}

/// The ems heap with its bookkeeping outside the pool (WAMR's
/// `gc_init_with_struct_and_pool`), over a [`MemorySource`].
///
/// Made lazily by [`new`](Heap::new) (the pool is the first region the
/// source grows, extended by later growth), or over a caller's buffer by
/// [`with_pool`](Heap::with_pool). The heap reaches its pool only through the
/// base pointer and `u32` offsets, so [`migrate`](Heap::migrate) after the
/// pool moved is O(1).
///
/// Growth that is not contiguous with the pool (another party grew memory in
/// between) is absorbed by a gap block covering the foreign bytes (I9), as
/// long as the new region lies above the pool and the whole span stays below
/// 4 GiB of offsets; otherwise the allocation returns `None`.
pub struct Heap<S: MemorySource> {
    source: S,
    /// I10: the pool base, 8-aligned; `[base, base + core.end)` is ours
    /// (except gap interiors) and valid.
    base: Option<NonNull<u8>>,
    core: Core,
    footprint: usize,
    peak_footprint: usize,
}

// SAFETY: the heap exclusively owns its pool (I10) and its source; moving it
// to another thread moves that ownership with it.
unsafe impl<S: Send + MemorySource> Send for Heap<S> {}

/// The payload layout check shared by the pointer front ends.
#[inline(always)]
fn request(layout: Layout) -> Option<(u32, usize)> {
    Some((need_for(layout.size())?, layout.align()))
}

impl<S: MemorySource> Heap<S> {
    /// A heap that takes its pool from `source` on first use.
    pub const fn new(source: S) -> Self {
        Self {
            source,
            base: None,
            core: Core::empty(),
            footprint: 0,
            peak_footprint: 0,
        }
    }

    /// The accessor over the whole pool.
    #[inline(always)]
    fn mem(&self, base: NonNull<u8>) -> RawMem {
        // SAFETY: I10: the pool `[base, base + end)` is valid and owned by
        // this heap, which holds no references into it.
        unsafe { RawMem::new(base, 0, self.core.end) }
    }

    /// The pointer for pool offset `off`.
    #[inline(always)]
    fn ptr(base: NonNull<u8>, off: u32) -> NonNull<u8> {
        // SAFETY: I10: `off` is a payload offset inside the pool, which lies
        // in one allocation with `base`.
        unsafe { base.add(off as usize) }
    }

    /// The pool offset of a caller's pointer, if it can be one.
    #[inline(always)]
    fn offset(base: NonNull<u8>, ptr: NonNull<u8>) -> u32 {
        let d = ptr.as_ptr().addr().wrapping_sub(base.as_ptr().addr());
        u32::try_from(d).unwrap_or(u32::MAX)
    }

    /// Whether a check failed: the heap then refuses every operation.
    pub fn is_corrupted(&self) -> bool {
        self.core.is_corrupted()
    }

    /// The pool base (`None` before the first allocation).
    pub fn pool_base(&self) -> Option<NonNull<u8>> {
        self.base
    }

    /// The pool length in bytes (0 before the first allocation).
    pub fn pool_len(&self) -> usize {
        self.core.end as usize
    }

    /// Tells the heap its pool now starts at `new_base`: O(1), nothing in
    /// the pool changes, since every link is an offset.
    ///
    /// # Safety
    ///
    /// The `pool_len()` bytes of the pool were copied (or mapped) unchanged
    /// to `new_base`, which is valid for reads and writes of them and owned
    /// by this heap from now on; no pointer into the old pool is used again.
    /// (`new_base` must be 8-aligned, else `Err(Misaligned)`. Blocks that
    /// were allocated with an alignment above 8 keep it only when `new_base`
    /// is congruent to the old base modulo that alignment, e.g. when both
    /// are page-aligned.)
    pub unsafe fn migrate(&mut self, new_base: NonNull<u8>) -> Result<(), PoolError> {
        if !new_base.as_ptr().addr().is_multiple_of(GRAIN as usize) {
            return Err(PoolError::Misaligned);
        }
        if self.base.is_some() {
            self.base = Some(new_base);
        }
        Ok(())
    }

    /// Grows the pool by `extra` bytes at its end (the memory after the pool
    /// grew); the new space merges with a free tail block.
    ///
    /// # Safety
    ///
    /// `[base + pool_len(), base + pool_len() + extra)` is valid for reads
    /// and writes and owned by this heap from now on.
    pub unsafe fn extend(&mut self, extra: usize) -> Result<(), HeapError> {
        let Some(base) = self.base else {
            return Ok(());
        };
        let end = self.core.end;
        let new_end = u32::try_from((end as usize).saturating_add(extra))
            .unwrap_or(MAX_END)
            .min(MAX_END);
        // SAFETY: I10 for the old pool, the caller's contract for the bytes
        // up to `new_end`.
        let mut m = unsafe { RawMem::new(base, 0, new_end) };
        let r = match self.core.extend_raw(&mut m, end, new_end) {
            Ok(Some(p)) => self.free_once(p),
            Ok(None) => Ok(()),
            Err(f) => Err(f),
        };
        r.map_err(|f| to_error(f, base.as_ptr().addr(), 0))
    }

    /// Total, free, high-water mark and block-size histograms, by a walk of
    /// the whole heap (also checks every invariant).
    pub fn ems_stats(&self) -> Result<EmsStats, Violation> {
        match self.base {
            None => Ok(EmsStats::default()),
            Some(base) => self.core.walk(&self.mem(base), base.as_ptr().addr()),
        }
    }

    /// Takes a first region, or extends the pool with a new one.
    #[cold]
    #[inline(never)]
    fn grow(&mut self, need: u32, align: usize) -> bool {
        let slack = if align > GRAIN as usize { align } else { 0 };
        let Some(want) = (need as usize)
            .checked_add(slack)
            .and_then(|v| v.checked_add(4 * MIN_BLOCK as usize))
        else {
            return false;
        };
        let Some(region) = self.source.grow(want) else {
            return false;
        };
        self.footprint = self.footprint.saturating_add(region.len);
        self.peak_footprint = self.peak_footprint.max(self.footprint);
        let start = region.start;
        match self.base {
            None => {
                let pad = start.as_ptr().addr().wrapping_neg() % GRAIN as usize;
                if region.len <= pad {
                    return false;
                }
                // SAFETY: M1: `pad < region.len`, so still inside the region.
                let base = unsafe { start.add(pad) };
                let end = u32::try_from(region.len - pad).unwrap_or(MAX_END);
                let end = end.min(MAX_END);
                // SAFETY: M1 / I10: the region is valid, zeroed and ours.
                let mut m = unsafe { RawMem::new(base, 0, end) };
                if self.core.init(&mut m, 0, end).is_none() {
                    return false;
                }
                self.base = Some(base);
                true
            }
            Some(base) => {
                let Some(off) = start.as_ptr().addr().checked_sub(base.as_ptr().addr()) else {
                    return false;
                };
                let Some(region_end) = off.checked_add(region.len) else {
                    return false;
                };
                if off < self.core.end as usize || off >= MAX_END as usize {
                    return false;
                }
                let new_end = u32::try_from(region_end).unwrap_or(MAX_END).min(MAX_END);
                // SAFETY: M1 / I10: the old pool is ours; the new region is
                // valid and ours; bytes between are only touched if they
                // form a gap, whose interior is never accessed (I9).
                let mut m = unsafe { RawMem::new(base, 0, new_end) };
                match self.core.extend_raw(&mut m, off as u32, new_end) {
                    Ok(Some(p)) => self.free_once(p).is_ok(),
                    _ => false,
                }
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn alloc_slow(&mut self, need: u32, align: usize) -> Option<NonNull<u8>> {
        if self.core.is_corrupted() || !self.grow(need, align) {
            return None;
        }
        self.alloc_once(need, align)
    }

    /// One allocation attempt without growth: the out-of-line copy of the
    /// fast path, for the slow paths (so they do not inline it again).
    #[inline(never)]
    fn alloc_once(&mut self, need: u32, align: usize) -> Option<NonNull<u8>> {
        let base = self.base?;
        let mut m = self.mem(base);
        let p = self
            .core
            .alloc(&mut m, base.as_ptr().addr(), need, align)
            .ok()??;
        Some(Self::ptr(base, p))
    }

    /// Frees the block at payload offset `p`: the one copy of the free
    /// path, for `dealloc`, `realloc` and growth.
    #[inline(never)]
    fn free_once(&mut self, p: u32) -> R<()> {
        let Some(base) = self.base else {
            return Err(Fault::Foreign);
        };
        let mut m = self.mem(base);
        self.core.free(&mut m, p)
    }
}

impl Heap<FixedRegion> {
    /// A heap over the caller's pool `[ptr, ptr + len)`, its bookkeeping in
    /// the returned value (outside the pool). It never grows by itself; see
    /// [`extend`](Heap::extend).
    ///
    /// # Safety
    ///
    /// `[ptr, ptr + len)` is valid for reads and writes, used by nothing else
    /// while the heap lives, and outlives it (or is migrated away).
    pub unsafe fn with_pool(ptr: NonNull<u8>, len: usize) -> Result<Self, PoolError> {
        if !ptr.as_ptr().addr().is_multiple_of(GRAIN as usize) {
            return Err(PoolError::Misaligned);
        }
        let end = u32::try_from(len).unwrap_or(MAX_END).min(MAX_END);
        let mut heap = Self::new(FixedRegion::empty());
        // SAFETY: I10: the caller's contract.
        let mut m = unsafe { RawMem::new(ptr, 0, end) };
        heap.core.init(&mut m, 0, end).ok_or(PoolError::TooSmall)?;
        heap.base = Some(ptr);
        heap.footprint = end as usize;
        heap.peak_footprint = end as usize;
        Ok(heap)
    }
}

impl<S: MemorySource> RawHeap for Heap<S> {
    #[inline(always)]
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        let (need, align) = request(layout)?;
        match self.alloc_once(need, align) {
            Some(p) => Some(p),
            None => self.alloc_slow(need, align),
        }
    }

    #[inline(always)]
    unsafe fn dealloc(&mut self, ptr: NonNull<u8>, layout: Layout) -> Result<(), HeapError> {
        let Some(base) = self.base else {
            return Err(HeapError::ForeignPointer {
                addr: ptr.as_ptr().addr(),
            });
        };
        let addr = base.as_ptr().addr();
        let p = Self::offset(base, ptr);
        if cfg!(not(feature = "bench-unchecked"))
            && !self.core.is_corrupted()
            && ptr.as_ptr().addr() & (layout.align() - 1) != 0
        {
            self.core.corrupted = 1;
            return Err(HeapError::LayoutMismatch {
                addr: ptr.as_ptr().addr(),
            });
        }
        self.free_once(p).map_err(|f| to_error(f, addr, p))
    }

    #[inline]
    unsafe fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        let base = self.base?;
        let need = need_for(new_size)?;
        let p = Self::offset(base, ptr);
        let mut m = self.mem(base);
        if self.core.resize_in_place(&mut m, p, need).ok()? {
            return Some(ptr);
        }
        let old_usable = self.core.usable(&m, p).ok()?;
        let align = layout.align();
        let new = match self.alloc_once(need, align) {
            Some(new) => new,
            None => self.alloc_slow(need, align)?,
        };
        let n = (old_usable as usize).min(new_size);
        // SAFETY: I10: both blocks are live and distinct, each at least `n`
        // bytes of payload.
        unsafe { core::ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), n) };
        self.free_once(p).ok()?;
        Some(new)
    }

    #[inline]
    unsafe fn usable_size(&self, ptr: NonNull<u8>, layout: Layout) -> usize {
        let Some(base) = self.base else {
            return layout.size();
        };
        let p = Self::offset(base, ptr);
        match self.core.check_used(&self.mem(base), p) {
            Ok((_, h)) => (h.size() - HDR) as usize,
            Err(_) => layout.size(),
        }
    }

    fn stats(&self) -> HeapStats {
        let mut s = match self.base {
            Some(base) => self.core.heap_stats(&self.mem(base)),
            None => HeapStats::default(),
        };
        s.footprint = self.footprint;
        s.peak_footprint = self.peak_footprint;
        s
    }

    fn verify(&self) -> Result<HeapStats, Violation> {
        if self.base.is_some() {
            self.ems_stats()?;
        }
        Ok(self.stats())
    }
}

/// The ems heap with its bookkeeping at the start of the pool (WAMR's
/// `gc_init_with_pool`): the handle is the pool pointer and its length.
///
/// ```text
/// pool: | Core (bookkeeping) | pad | blocks ... | end sentinel |
///       0                    STATE_BYTES                      len
/// ```
///
/// Since the bookkeeping moves with the pool and holds only offsets,
/// [`migrate`](EmsPool::migrate) just takes the new pointer.
#[derive(Debug)]
pub struct EmsPool {
    /// I10: 8-aligned start of the pool; the `Core` lives here.
    base: NonNull<u8>,
    /// The pool length as the caller gave it (the trusted bound of every
    /// access, whatever the in-pool bookkeeping says).
    len: u32,
}

// SAFETY: the handle exclusively owns its pool (the contract of
// `init_in_pool`); moving it to another thread moves that ownership.
unsafe impl Send for EmsPool {}

impl EmsPool {
    /// Lays out a heap in `[ptr, ptr + len)`, its bookkeeping at the start.
    ///
    /// # Safety
    ///
    /// `[ptr, ptr + len)` is valid for reads and writes, used by nothing else
    /// while the handle (or a migrated one) lives, and outlives it.
    pub unsafe fn init_in_pool(ptr: NonNull<u8>, len: usize) -> Result<Self, PoolError> {
        if !ptr.as_ptr().addr().is_multiple_of(GRAIN as usize) {
            return Err(PoolError::Misaligned);
        }
        let len = u32::try_from(len).unwrap_or(MAX_END).min(MAX_END) & !(GRAIN - 1);
        if len < STATE_BYTES + 2 * MIN_BLOCK {
            return Err(PoolError::TooSmall);
        }
        // SAFETY: I10: the caller's contract; the state bytes are in bounds.
        unsafe { ptr.cast::<Core>().write(Core::empty()) };
        let mut pool = Self { base: ptr, len };
        let (core, mut m) = pool.parts();
        core.init(&mut m, STATE_BYTES, len)
            .ok_or(PoolError::TooSmall)?;
        Ok(pool)
    }

    /// The bookkeeping and an accessor over the blocks (which excludes the
    /// bookkeeping bytes, so the two never alias).
    #[inline(always)]
    fn parts(&mut self) -> (&mut Core, RawMem) {
        // SAFETY: I10: the pool starts with the `Core` (written by
        // `init_in_pool`, moved with the pool by `migrate`), 8-aligned, and
        // this `&mut self` is its only user.
        let core = unsafe { self.base.cast::<Core>().as_mut() };
        if !core.geometry_ok(STATE_BYTES, self.len) {
            core.corrupted = 1;
        }
        // SAFETY: I10: the blocks `[STATE_BYTES, len)` are valid and
        // disjoint from the `Core`.
        let m = unsafe { RawMem::new(self.base, STATE_BYTES, self.len) };
        (core, m)
    }

    /// The bookkeeping, shared.
    #[inline(always)]
    fn core(&self) -> &Core {
        // SAFETY: I10: as in `parts`; shared access through `&self`.
        unsafe { self.base.cast::<Core>().as_ref() }
    }

    fn addr(&self) -> usize {
        self.base.as_ptr().addr()
    }

    /// The pool pointer (the handle's identity, as in WAMR).
    pub fn as_ptr(&self) -> NonNull<u8> {
        self.base
    }

    /// The pool length.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Never true: a pool holds at least one block.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Allocates `size` bytes, 8-aligned.
    #[inline]
    pub fn alloc(&mut self, size: usize) -> Option<NonNull<u8>> {
        self.alloc_aligned(size, GRAIN as usize)
    }

    /// Allocates `size` bytes aligned to `align` (a power of two).
    #[inline]
    pub fn alloc_aligned(&mut self, size: usize, align: usize) -> Option<NonNull<u8>> {
        if !align.is_power_of_two() {
            return None;
        }
        let need = need_for(size)?;
        let addr = self.addr();
        let base = self.base;
        let (core, mut m) = self.parts();
        let p = core.alloc(&mut m, addr, need, align).ok()??;
        // SAFETY: I10: a payload offset inside the pool.
        Some(unsafe { base.add(p as usize) })
    }

    /// Frees a block.
    ///
    /// # Safety
    ///
    /// None beyond `ptr` being any pointer: a pointer that is not a live
    /// block of this pool is detected (the heap then fails closed), so this
    /// is `unsafe` only because the caller must not use the block again.
    pub unsafe fn free(&mut self, ptr: NonNull<u8>) -> Result<(), HeapError> {
        let addr = self.addr();
        let p = u32::try_from(ptr.as_ptr().addr().wrapping_sub(addr)).unwrap_or(u32::MAX);
        let (core, mut m) = self.parts();
        core.free(&mut m, p).map_err(|f| to_error(f, addr, p))
    }

    /// Resizes a block to `new_size` bytes (8-aligned), in place when the
    /// next block is free or when shrinking; `None` leaves the old block live.
    ///
    /// # Safety
    ///
    /// `ptr` is not used again when a different pointer is returned.
    pub unsafe fn realloc(&mut self, ptr: NonNull<u8>, new_size: usize) -> Option<NonNull<u8>> {
        let need = need_for(new_size)?;
        let addr = self.addr();
        let p = u32::try_from(ptr.as_ptr().addr().wrapping_sub(addr)).unwrap_or(u32::MAX);
        let (core, mut m) = self.parts();
        if core.resize_in_place(&mut m, p, need).ok()? {
            return Some(ptr);
        }
        let old = core.usable(&m, p).ok()?;
        let new = self.alloc(new_size)?;
        // SAFETY: I10: both live, distinct blocks of at least this length.
        unsafe {
            core::ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), (old as usize).min(new_size))
        };
        let (core, mut m) = self.parts();
        core.free(&mut m, p).ok()?;
        Some(new)
    }

    /// The pool moved to `new_base` (its bytes copied unchanged): O(1).
    ///
    /// # Safety
    ///
    /// As for [`Heap::migrate`]; the bookkeeping moved with the pool.
    pub unsafe fn migrate(&mut self, new_base: NonNull<u8>) -> Result<(), PoolError> {
        if !new_base.as_ptr().addr().is_multiple_of(GRAIN as usize) {
            return Err(PoolError::Misaligned);
        }
        self.base = new_base;
        Ok(())
    }

    /// Grows the pool by `extra` bytes at its end.
    ///
    /// # Safety
    ///
    /// `[ptr + len, ptr + len + extra)` is valid for reads and writes and
    /// owned by this pool from now on.
    pub unsafe fn extend(&mut self, extra: usize) -> Result<(), HeapError> {
        let addr = self.addr();
        let new_len = u32::try_from((self.len as usize).saturating_add(extra))
            .unwrap_or(MAX_END)
            .min(MAX_END)
            & !(GRAIN - 1);
        let old_len = self.len;
        let base = self.base;
        let core = self.parts().0;
        if core.end != old_len {
            core.corrupted = 1;
            return Err(HeapError::Corrupted { addr });
        }
        // SAFETY: I10 and the caller's contract for the new bytes.
        let mut m = unsafe { RawMem::new(base, STATE_BYTES, new_len) };
        match core.extend(&mut m, old_len, new_len) {
            Ok(true) => {
                self.len = new_len;
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(f) => Err(to_error(f, addr, 0)),
        }
    }

    /// Whether a check failed (or the in-pool bookkeeping was overwritten):
    /// the pool then refuses every operation.
    pub fn is_corrupted(&self) -> bool {
        let core = self.core();
        core.is_corrupted() || !core.geometry_ok(STATE_BYTES, self.len)
    }

    /// The summary (footprint: the pool length).
    pub fn stats(&self) -> HeapStats {
        // SAFETY: I10: the blocks are valid and disjoint from the `Core`.
        let m = unsafe { RawMem::new(self.base, STATE_BYTES, self.len) };
        let mut s = if self.is_corrupted() {
            HeapStats::default()
        } else {
            self.core().heap_stats(&m)
        };
        s.footprint = self.len as usize;
        s.peak_footprint = self.len as usize;
        s
    }

    /// Total, free, high-water mark and histograms, by a full walk that
    /// also checks every invariant.
    pub fn ems_stats(&self) -> Result<EmsStats, Violation> {
        // SAFETY: I10: as in `stats`.
        let m = unsafe { RawMem::new(self.base, STATE_BYTES, self.len) };
        if !self.core().geometry_ok(STATE_BYTES, self.len) {
            return Err(Violation::new(
                1,
                self.addr(),
                "in-pool bookkeeping damaged",
            ));
        }
        self.core().walk(&m, self.addr())
    }

    /// Checks every invariant.
    pub fn verify(&self) -> Result<HeapStats, Violation> {
        self.ems_stats()?;
        Ok(self.stats())
    }
}
