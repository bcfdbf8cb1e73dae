//! The full heap walk: checks every invariant (I1..I9, I11) and gathers
//! the statistics and histograms of [`EmsStats`].

use linmem_memory::Violation;

use crate::bins::{
    MAX_DEPTH, NSMALL, NTREES, S_NEXT, S_PREV, SMALL_LIMIT, T_HEIGHT, T_LEFT, T_NEXT, T_PARENT,
    T_PREV, T_RIGHT, tree_min,
};
use crate::block::{FREE, GAP, GRAIN, HDR, Hmu, MIN_BLOCK, Mem, USED};
use crate::heap::Core;

/// Number of histogram buckets: bucket `i` counts blocks of
/// `2^i ..= 2^(i+1) - 1` bytes (header included).
pub const HIST_BUCKETS: usize = 32;

/// What a full walk of an ems heap found (WAMR's heap statistics, plus the
/// shape of the size tree).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmsStats {
    /// The pool end offset: the bytes the heap spans, bookkeeping, gaps and
    /// the end sentinel included.
    pub pool_len: usize,
    /// Bytes in blocks (`used + free`): what the heap can hand out.
    pub total: usize,
    /// Bytes in live blocks, headers included.
    pub used: usize,
    /// Bytes in free blocks.
    pub free: usize,
    /// The most `used` has ever been.
    pub high_water: usize,
    /// Bytes of foreign memory covered by gap blocks.
    pub gap: usize,
    /// Number of live blocks.
    pub used_blocks: usize,
    /// Number of free blocks.
    pub free_blocks: usize,
    /// Live blocks by size: bucket `i` counts sizes in `[2^i, 2^(i+1))`.
    pub used_hist: [u32; HIST_BUCKETS],
    /// Free blocks by size, bucketed as `used_hist`.
    pub free_hist: [u32; HIST_BUCKETS],
    /// Free blocks in the exact-size lists.
    pub small_free_blocks: usize,
    /// Nodes of the size tree (one per distinct large free size).
    pub tree_nodes: usize,
    /// Height of the size tree (0 when empty).
    pub tree_height: u32,
}

/// The histogram bucket of a block size (> 0).
#[inline]
pub(crate) fn bucket(size: u32) -> usize {
    (u32::BITS - 1 - size.leading_zeros()) as usize
}

struct Walk<'a, M> {
    core: &'a Core,
    m: &'a M,
    base: usize,
    budget: usize,
    blocks: usize,
    bytes: usize,
    nodes: usize,
}

impl<M: Mem> Walk<'_, M> {
    fn bad(&self, inv: u8, off: u32, what: &'static str) -> Violation {
        Violation::new(inv, self.base.wrapping_add(off as usize), what)
    }

    fn rd(&self, inv: u8, off: u32) -> Result<u32, Violation> {
        self.m
            .rd(off)
            .map_err(|_| self.bad(inv, off, "link or block outside the pool"))
    }

    /// The link at `at`, unmasked (I12).
    fn lk(&self, inv: u8, at: u32) -> Result<u32, Violation> {
        self.core
            .lrd(self.m, at)
            .map_err(|_| self.bad(inv, at, "link or block outside the pool"))
    }

    /// Checks the poison of the free block `b` of `size` (I13).
    #[cfg(feature = "hardened")]
    fn poison(&self, b: u32, size: u32) -> Result<(), Violation> {
        self.core
            .poison_ok(self.m, b, size)
            .map_err(|_| self.bad(13, b, "free memory was written (poison damaged)"))
    }

    /// Checks the subtree at `n` (sizes strictly inside `(lo, hi)`, parent
    /// `parent`); returns its height.
    fn tree(
        &mut self,
        n: u32,
        parent: u32,
        (lo, hi): (u32, u32),
        depth: u32,
    ) -> Result<u32, Violation> {
        if n == 0 {
            return Ok(0);
        }
        if depth > MAX_DEPTH {
            return Err(self.bad(7, n, "size tree too deep"));
        }
        if !self.core.link_ok(n) {
            return Err(self.bad(7, n, "tree link is not a block of the pool"));
        }
        let h = Hmu(self.rd(7, n)?);
        let size = h.size();
        if h.usage() != FREE || size < SMALL_LIMIT {
            return Err(self.bad(7, n, "tree node is not a large free block"));
        }
        if size <= lo || size >= hi {
            return Err(self.bad(7, n, "tree out of size order or duplicate node size"));
        }
        if self.lk(7, n + T_PREV)? != 0 {
            return Err(self.bad(7, n, "tree node has a chain predecessor"));
        }
        if self.lk(7, n + T_PARENT)? != parent {
            return Err(self.bad(7, n, "tree node's parent link is wrong"));
        }
        let l = self.lk(7, n + T_LEFT)?;
        let r = self.lk(7, n + T_RIGHT)?;
        let hl = self.tree(l, n, (lo, size), depth + 1)?;
        let hr = self.tree(r, n, (size, hi), depth + 1)?;
        if hl.abs_diff(hr) > 1 {
            return Err(self.bad(7, n, "tree node out of AVL balance"));
        }
        let height = 1 + hl.max(hr);
        if self.rd(7, n + T_HEIGHT)? != height {
            return Err(self.bad(7, n, "stored tree height is wrong"));
        }
        self.nodes += 1;
        #[cfg(feature = "hardened")]
        self.poison(n, size)?;
        self.count(n, size)?;
        let mut prev = n;
        let mut cur = self.lk(7, n + T_NEXT)?;
        while cur != 0 {
            if !self.core.link_ok(cur) {
                return Err(self.bad(7, cur, "chain link is not a block of the pool"));
            }
            let ch = Hmu(self.rd(7, cur)?);
            if ch.usage() != FREE || ch.size() != size {
                return Err(self.bad(7, cur, "chained block is not free or differs in size"));
            }
            if self.lk(7, cur + T_PREV)? != prev || self.rd(7, cur + T_HEIGHT)? != 0 {
                return Err(self.bad(7, cur, "chain back link or marker wrong"));
            }
            #[cfg(feature = "hardened")]
            self.poison(cur, size)?;
            self.count(cur, size)?;
            prev = cur;
            cur = self.lk(7, cur + T_NEXT)?;
        }
        Ok(height)
    }

    fn count(&mut self, b: u32, size: u32) -> Result<(), Violation> {
        self.blocks += 1;
        self.bytes += size as usize;
        if self.blocks > self.budget {
            return Err(self.bad(6, b, "more listed free blocks than free blocks"));
        }
        Ok(())
    }
}

impl Core {
    /// Walks the whole heap; `base` is the address of offset 0 (for reports).
    pub(crate) fn walk<M: Mem>(&self, m: &M, base: usize) -> Result<EmsStats, Violation> {
        let mut w = Walk {
            core: self,
            m,
            base,
            budget: 0,
            blocks: 0,
            bytes: 0,
            nodes: 0,
        };
        if !self.is_init() {
            return Err(w.bad(1, 0, "heap not initialised"));
        }
        if self.is_corrupted() {
            return Err(w.bad(11, 0, "heap failed closed"));
        }
        if self.first % GRAIN != HDR
            || !self.end.is_multiple_of(GRAIN)
            || self.end < self.first + MIN_BLOCK + HDR
        {
            return Err(w.bad(1, self.first, "pool geometry"));
        }
        let mut st = EmsStats {
            pool_len: self.end as usize,
            ..EmsStats::default()
        };
        let sentinel = self.end - HDR;
        let mut b = self.first;
        let mut prev_usage = USED;
        let mut last = 0;
        loop {
            let h = Hmu(w.rd(2, b)?);
            if h.prev_used() != (prev_usage != FREE) {
                return Err(w.bad(3, b, "previous-in-use bit disagrees"));
            }
            if b == sentinel {
                if h.usage() != USED || h.size() != 0 {
                    return Err(w.bad(1, b, "end sentinel damaged"));
                }
                let want_top = if prev_usage == FREE { last } else { 0 };
                if self.top != want_top {
                    return Err(w.bad(6, self.top, "top is not the free block at the end"));
                }
                break;
            }
            last = b;
            let size = h.size();
            if size < MIN_BLOCK || size > sentinel - b {
                return Err(w.bad(2, b, "block size out of the pool"));
            }
            match h.usage() {
                FREE => {
                    if prev_usage == FREE {
                        return Err(w.bad(4, b, "two adjacent free blocks"));
                    }
                    if w.rd(5, b + size - HDR)? != size {
                        return Err(w.bad(5, b, "free block footer disagrees"));
                    }
                    st.free += size as usize;
                    st.free_blocks += 1;
                    st.free_hist[bucket(size)] += 1;
                }
                USED => {
                    st.used += size as usize;
                    st.used_blocks += 1;
                    st.used_hist[bucket(size)] += 1;
                }
                GAP => st.gap += size as usize,
                _ => return Err(w.bad(2, b, "reserved usage bits")),
            }
            prev_usage = h.usage();
            b += size;
        }
        st.total = st.used + st.free;
        w.budget = st.free_blocks;
        for i in 0..NSMALL {
            let head = self.small[i];
            if (head != 0) != (self.small_mask >> i & 1 != 0) {
                return Err(w.bad(6, head, "small-list mask bit disagrees"));
            }
            let mut prev = 0;
            let mut cur = head;
            while cur != 0 {
                if !self.link_ok(cur) {
                    return Err(w.bad(6, cur, "list link is not a block of the pool"));
                }
                let h = Hmu(w.rd(6, cur)?);
                if h.usage() != FREE || h.size() >= SMALL_LIMIT || h.size() / GRAIN != i as u32 {
                    return Err(w.bad(6, cur, "listed block is not free or in the wrong list"));
                }
                if w.lk(6, cur + S_PREV)? != prev {
                    return Err(w.bad(6, cur, "list back link wrong"));
                }
                #[cfg(feature = "hardened")]
                w.poison(cur, h.size())?;
                w.count(cur, h.size())?;
                prev = cur;
                cur = w.lk(6, cur + S_NEXT)?;
            }
        }
        st.small_free_blocks = w.blocks;
        if self.top != 0 {
            let size = Hmu(w.rd(6, self.top)?).size();
            w.count(self.top, size)?;
        }
        for t in 0..NTREES {
            let root = self.roots[t];
            if (root != 0) != (self.tree_mask() >> t & 1 != 0) {
                return Err(w.bad(7, root, "tree mask bit disagrees"));
            }
            let hi = if t + 1 < NTREES {
                tree_min(t + 1)
            } else {
                u32::MAX
            };
            let h = w.tree(root, 0, (tree_min(t) - 1, hi), 0)?;
            st.tree_height = st.tree_height.max(h);
        }
        if self.tree_mask() >> NTREES != 0 {
            return Err(w.bad(7, 0, "tree mask bit beyond the trees"));
        }
        st.tree_nodes = w.nodes;
        if w.blocks != st.free_blocks || w.bytes != st.free {
            return Err(w.bad(6, 0, "a free block is missing from the free structures"));
        }
        if self.used_bytes as usize != st.used
            || self.used_blocks as usize != st.used_blocks
            || self.free_bytes as usize != st.free
            || self.free_blocks as usize != st.free_blocks
            || self.high_water < self.used_bytes
        {
            return Err(w.bad(8, 0, "counters disagree with the walk"));
        }
        if self.gap_bytes as usize != st.gap {
            return Err(w.bad(9, 0, "gap bytes disagree with the walk"));
        }
        st.high_water = self.high_water as usize;
        Ok(st)
    }
}
