//! Where free blocks wait: 32 exact-size lists for blocks below 256 bytes,
//! and a balanced (AVL) tree ordered by size for the rest, with blocks of
//! equal size chained behind their tree node.
//!
//! Every link is a pool-relative `u32` offset of a block header, 0 meaning
//! none (offset 0 is never a block: blocks start at 4 mod 8). Every link read
//! from the pool is checked to be a plausible block offset before use, and
//! every walk is bounded, so damaged links end in [`Fault::Corrupt`], never
//! in a loop or an out-of-pool access.
//!
//! ```text
//! small free block (16..=248 B)     large free block (>= 256 B)
//! +0  header (FREE)                 +0  header (FREE)
//! +4  next in list                  +4  left child   (tree node) / 0
//! +8  prev in list (0: head)        +8  right child  (tree node) / 0
//! ... unused                        +12 height >= 1  (tree node) / 0 (chained)
//! -4  footer: size                  +16 next block of the same size
//!                                   +20 prev of the same size (0: tree node)
//!                                   -4  footer: size
//! ```

use crate::block::{Fault, GRAIN, HDR, Hmu, MIN_BLOCK, Mem, MemMut, R};
use crate::heap::Core;

/// Blocks below this size live in the exact-size lists.
pub(crate) const SMALL_LIMIT: u32 = 256;
/// Number of exact-size lists, one per 8 bytes below [`SMALL_LIMIT`].
/// Lists 0 and 1 (sizes 0 and 8) stay empty: the minimum block is 16.
pub(crate) const NSMALL: usize = 32;
/// A bound on tree depth. An AVL tree of the at most 2^24 large blocks a
/// 4 GiB pool holds is at most 35 deep; anything deeper is damage.
pub(crate) const MAX_DEPTH: u32 = 48;

const S_NEXT: u32 = 4;
const S_PREV: u32 = 8;
pub(crate) const T_LEFT: u32 = 4;
pub(crate) const T_RIGHT: u32 = 8;
pub(crate) const T_HEIGHT: u32 = 12;
pub(crate) const T_NEXT: u32 = 16;
pub(crate) const T_PREV: u32 = 20;

const _: () = assert!(SMALL_LIMIT / GRAIN == NSMALL as u32);
const _: () = assert!(NSMALL <= u32::BITS as usize);
const _: () = assert!(S_PREV + HDR + HDR <= MIN_BLOCK);
const _: () = assert!(T_PREV + HDR + HDR <= SMALL_LIMIT);
const _: () = assert!(MIN_BLOCK / GRAIN >= 2);
const _: () = assert!(crate::block::MAX_END.checked_add(SMALL_LIMIT).is_some());

/// The list index of a small block size.
#[inline(always)]
pub(crate) const fn small_index(size: u32) -> usize {
    (size / GRAIN) as usize
}

impl Core {
    /// Whether `off` could be a block header of this pool.
    #[inline(always)]
    pub(crate) fn link_ok(&self, off: u32) -> bool {
        off % GRAIN == HDR && off >= self.first && off < self.end
    }

    /// The size of the free block at `b`, checking it is one (I2, I5).
    #[inline(always)]
    pub(crate) fn free_size<M: Mem>(&self, m: &M, b: u32) -> R<u32> {
        if !self.link_ok(b) {
            return Err(Fault::Corrupt(b));
        }
        let h = Hmu(m.rd(b)?);
        let size = h.size();
        if h.usage() != crate::block::FREE || size < MIN_BLOCK || size > self.end - HDR - b {
            return Err(Fault::Corrupt(b));
        }
        Ok(size)
    }

    /// The link stored at `at`, checked to be 0 or a plausible block.
    #[inline(always)]
    pub(crate) fn link<M: Mem>(&self, m: &M, at: u32) -> R<u32> {
        let v = m.rd(at)?;
        if v != 0 && !self.link_ok(v) {
            return Err(Fault::Corrupt(at));
        }
        Ok(v)
    }

    // ---- exact-size lists (I6) ----

    /// Pushes the free block `b` of small `size` on its list.
    pub(crate) fn list_push<M: MemMut>(&mut self, m: &mut M, b: u32, size: u32) -> R<()> {
        let i = small_index(size);
        let head = self.small[i];
        m.wr(b + S_NEXT, head)?;
        m.wr(b + S_PREV, 0)?;
        if head != 0 {
            m.wr(head + S_PREV, b)?;
        }
        self.small[i] = b;
        self.small_mask |= 1 << i;
        Ok(())
    }

    /// Unlinks the free block `b` of small `size`, checking both neighbours
    /// point back at it.
    pub(crate) fn list_remove<M: MemMut>(&mut self, m: &mut M, b: u32, size: u32) -> R<()> {
        let i = small_index(size);
        let next = self.link(m, b + S_NEXT)?;
        let prev = self.link(m, b + S_PREV)?;
        if next != 0 && m.rd(next + S_PREV)? != b {
            return Err(Fault::Corrupt(b));
        }
        if prev == 0 {
            if self.small[i] != b {
                return Err(Fault::Corrupt(b));
            }
            self.small[i] = next;
            if next == 0 {
                self.small_mask &= !(1 << i);
            }
        } else {
            if m.rd(prev + S_NEXT)? != b {
                return Err(Fault::Corrupt(b));
            }
            m.wr(prev + S_NEXT, next)?;
        }
        if next != 0 {
            m.wr(next + S_PREV, prev)?;
        }
        Ok(())
    }

    /// Takes the head of list `i` (non-empty by the mask).
    pub(crate) fn list_pop<M: MemMut>(&mut self, m: &mut M, i: usize) -> R<u32> {
        let b = self.small[i];
        let size = self.free_size(m, b)?;
        if small_index(size) != i || size >= SMALL_LIMIT {
            return Err(Fault::Corrupt(b));
        }
        self.list_remove(m, b, size)?;
        Ok(b)
    }

    // ---- the size tree (I7) ----

    /// The size of tree node `n`, checking it is a large free block.
    #[inline(always)]
    pub(crate) fn node_size<M: Mem>(&self, m: &M, n: u32) -> R<u32> {
        let s = self.free_size(m, n)?;
        if s < SMALL_LIMIT {
            return Err(Fault::Corrupt(n));
        }
        Ok(s)
    }

    #[inline(always)]
    fn height<M: Mem>(&self, m: &M, n: u32) -> R<u32> {
        if n == 0 {
            return Ok(0);
        }
        let h = m.rd(n + T_HEIGHT)?;
        if h == 0 || h > MAX_DEPTH {
            return Err(Fault::Corrupt(n));
        }
        Ok(h)
    }

    fn fix_height<M: MemMut>(&self, m: &mut M, n: u32) -> R<()> {
        let hl = self.height(m, self.link(m, n + T_LEFT)?)?;
        let hr = self.height(m, self.link(m, n + T_RIGHT)?)?;
        let h = 1 + hl.max(hr);
        if h > MAX_DEPTH {
            return Err(Fault::Corrupt(n));
        }
        m.wr(n + T_HEIGHT, h)
    }

    /// Rotates `n` with its child on side `a`; returns the new subtree root.
    fn rotate<M: MemMut>(&self, m: &mut M, n: u32, a: u32) -> R<u32> {
        let b = if a == T_LEFT { T_RIGHT } else { T_LEFT };
        let c = self.link(m, n + a)?;
        if c == 0 {
            return Err(Fault::Corrupt(n));
        }
        let inner = self.link(m, c + b)?;
        m.wr(n + a, inner)?;
        m.wr(c + b, n)?;
        self.fix_height(m, n)?;
        self.fix_height(m, c)?;
        Ok(c)
    }

    /// Restores the AVL balance at `n`; returns the new subtree root.
    fn rebalance<M: MemMut>(&self, m: &mut M, n: u32) -> R<u32> {
        let l = self.link(m, n + T_LEFT)?;
        let r = self.link(m, n + T_RIGHT)?;
        let hl = self.height(m, l)?;
        let hr = self.height(m, r)?;
        let heavy = if hl > hr + 1 {
            (l, T_LEFT, T_RIGHT)
        } else if hr > hl + 1 {
            (r, T_RIGHT, T_LEFT)
        } else {
            self.fix_height(m, n)?;
            return Ok(n);
        };
        let (c, outer, inner) = heavy;
        let co = self.height(m, self.link(m, c + outer)?)?;
        let ci = self.height(m, self.link(m, c + inner)?)?;
        if co < ci {
            let nc = self.rotate(m, c, inner)?;
            m.wr(n + outer, nc)?;
        }
        self.rotate(m, n, outer)
    }

    /// Inserts the large free block `b` of `size`.
    pub(crate) fn tree_insert<M: MemMut>(&mut self, m: &mut M, b: u32, size: u32) -> R<()> {
        self.root = self.ins(m, self.root, b, size, 0)?.0;
        Ok(())
    }

    /// After the child on `side` of `n` changed from `c` to `nc`: stores the
    /// link and, only when the child's height changed, rebalances `n`.
    /// Returns the new subtree root and whether its height changed, so the
    /// work above stops as soon as a height stays the same.
    #[inline(always)]
    fn update<M: MemMut>(
        &self,
        m: &mut M,
        n: u32,
        side: u32,
        (c, nc): (u32, u32),
        changed: bool,
    ) -> R<(u32, bool)> {
        if nc != c {
            m.wr(n + side, nc)?;
        }
        if !changed {
            return Ok((n, false));
        }
        let before = self.height(m, n)?;
        let nn = self.rebalance(m, n)?;
        Ok((nn, self.height(m, nn)? != before))
    }

    fn ins<M: MemMut>(&self, m: &mut M, n: u32, b: u32, size: u32, depth: u32) -> R<(u32, bool)> {
        if depth > MAX_DEPTH {
            return Err(Fault::Corrupt(n));
        }
        if n == 0 {
            for (field, v) in [
                (T_LEFT, 0),
                (T_RIGHT, 0),
                (T_HEIGHT, 1),
                (T_NEXT, 0),
                (T_PREV, 0),
            ] {
                m.wr(b + field, v)?;
            }
            return Ok((b, true));
        }
        let ns = self.node_size(m, n)?;
        if ns == size {
            let nx = self.link(m, n + T_NEXT)?;
            for (field, v) in [
                (T_LEFT, 0),
                (T_RIGHT, 0),
                (T_HEIGHT, 0),
                (T_NEXT, nx),
                (T_PREV, n),
            ] {
                m.wr(b + field, v)?;
            }
            if nx != 0 {
                m.wr(nx + T_PREV, b)?;
            }
            m.wr(n + T_NEXT, b)?;
            return Ok((n, false));
        }
        let side = if size < ns { T_LEFT } else { T_RIGHT };
        let c = self.link(m, n + side)?;
        let (nc, changed) = self.ins(m, c, b, size, depth + 1)?;
        self.update(m, n, side, (c, nc), changed)
    }

    /// Removes the large free block `b` of `size` (a tree node or a chained
    /// block), checking its links agree.
    pub(crate) fn tree_remove<M: MemMut>(&mut self, m: &mut M, b: u32, size: u32) -> R<()> {
        let prev = self.link(m, b + T_PREV)?;
        let next = self.link(m, b + T_NEXT)?;
        if next != 0 && m.rd(next + T_PREV)? != b {
            return Err(Fault::Corrupt(b));
        }
        if prev != 0 {
            if m.rd(prev + T_NEXT)? != b {
                return Err(Fault::Corrupt(b));
            }
            m.wr(prev + T_NEXT, next)?;
            if next != 0 {
                m.wr(next + T_PREV, prev)?;
            }
            return Ok(());
        }
        if next != 0 {
            for field in [T_LEFT, T_RIGHT, T_HEIGHT] {
                let v = m.rd(b + field)?;
                m.wr(next + field, v)?;
            }
            m.wr(next + T_PREV, 0)?;
            return self.replace_link(m, size, b, next);
        }
        self.root = self.del(m, self.root, size, b, 0)?.0;
        Ok(())
    }

    /// Points the link that names tree node `old` (of `size`) at `new`.
    fn replace_link<M: MemMut>(&mut self, m: &mut M, size: u32, old: u32, new: u32) -> R<()> {
        let mut slot = None;
        let mut cur = self.root;
        for _ in 0..=MAX_DEPTH {
            if cur == 0 {
                break;
            }
            if cur == old {
                match slot {
                    None => self.root = new,
                    Some(at) => m.wr(at, new)?,
                }
                return Ok(());
            }
            let cs = self.node_size(m, cur)?;
            if cs == size {
                break;
            }
            let side = if size < cs { T_LEFT } else { T_RIGHT };
            slot = Some(cur + side);
            cur = self.link(m, cur + side)?;
        }
        Err(Fault::Corrupt(old))
    }

    fn del<M: MemMut>(&self, m: &mut M, n: u32, size: u32, b: u32, depth: u32) -> R<(u32, bool)> {
        if depth > MAX_DEPTH || n == 0 {
            return Err(Fault::Corrupt(b));
        }
        let ns = self.node_size(m, n)?;
        if ns == size {
            if n != b {
                return Err(Fault::Corrupt(b));
            }
            let l = self.link(m, n + T_LEFT)?;
            let r = self.link(m, n + T_RIGHT)?;
            if l == 0 {
                return Ok((r, true));
            }
            if r == 0 {
                return Ok((l, true));
            }
            let (nr, min, changed) = self.del_min(m, r, depth + 1)?;
            let before = self.height(m, n)?;
            m.wr(min + T_LEFT, l)?;
            m.wr(min + T_RIGHT, nr)?;
            m.wr(min + T_HEIGHT, before)?;
            if !changed {
                return Ok((min, false));
            }
            let nn = self.rebalance(m, min)?;
            return Ok((nn, self.height(m, nn)? != before));
        }
        let side = if size < ns { T_LEFT } else { T_RIGHT };
        let c = self.link(m, n + side)?;
        let (nc, changed) = self.del(m, c, size, b, depth + 1)?;
        self.update(m, n, side, (c, nc), changed)
    }

    /// Unlinks the smallest node below `n`: (new subtree root, that node,
    /// whether the subtree height changed).
    fn del_min<M: MemMut>(&self, m: &mut M, n: u32, depth: u32) -> R<(u32, u32, bool)> {
        if depth > MAX_DEPTH || n == 0 {
            return Err(Fault::Corrupt(n));
        }
        let l = self.link(m, n + T_LEFT)?;
        if l == 0 {
            return Ok((self.link(m, n + T_RIGHT)?, n, true));
        }
        let (nl, min, changed) = self.del_min(m, l, depth + 1)?;
        let (nn, changed) = self.update(m, n, T_LEFT, (l, nl), changed)?;
        Ok((nn, min, changed))
    }

    /// The tree node of the smallest size `>= need`, or 0 (best fit), and
    /// the largest node size below `need` (0 if none): a search path passes
    /// both the ceiling and the floor of its key.
    #[inline]
    pub(crate) fn best_fit<M: Mem>(&self, m: &M, need: u32) -> R<(u32, u32)> {
        let mut cur = self.root;
        let mut best = 0;
        let mut floor = 0;
        for _ in 0..=MAX_DEPTH {
            if cur == 0 {
                return Ok((best, floor));
            }
            let cs = self.node_size(m, cur)?;
            if cs == need {
                let l = self.link(m, cur + T_LEFT)?;
                return Ok((cur, floor.max(self.max_size(m, l)?)));
            }
            if cs > need {
                best = cur;
                cur = self.link(m, cur + T_LEFT)?;
            } else {
                floor = cs;
                cur = self.link(m, cur + T_RIGHT)?;
            }
        }
        Err(Fault::Corrupt(self.root))
    }

    /// The largest size in the subtree at `n` (0 when empty).
    fn max_size<M: Mem>(&self, m: &M, mut n: u32) -> R<u32> {
        if n == 0 {
            return Ok(0);
        }
        for _ in 0..=MAX_DEPTH {
            let r = self.link(m, n + T_RIGHT)?;
            if r == 0 {
                return self.node_size(m, n);
            }
            n = r;
        }
        Err(Fault::Corrupt(n))
    }

    /// Takes a block of tree node `n`'s size out of the tree: a chained one
    /// when there is one (no rebalancing), else `n` itself.
    pub(crate) fn take_large<M: MemMut>(&mut self, m: &mut M, n: u32, size: u32) -> R<u32> {
        let nx = self.link(m, n + T_NEXT)?;
        let b = if nx != 0 { nx } else { n };
        self.tree_remove(m, b, size)?;
        Ok(b)
    }

    /// The size of the largest free block (0 when none).
    pub(crate) fn largest_free<M: Mem>(&self, m: &M) -> R<u32> {
        if self.root == 0 {
            return Ok(match self.small_mask {
                0 => 0,
                mask => (u32::BITS - 1 - mask.leading_zeros()) * GRAIN,
            });
        }
        self.max_size(m, self.root)
    }
}

#[cfg(test)]
mod tests {
    use std::vec;
    use std::vec::Vec;

    use super::*;
    use crate::block::{FREE, SliceMem};

    const STRIDE: u32 = 4096;

    /// A core over a scratch buffer whose "blocks" are free headers at
    /// `4 + i * STRIDE`, enough for the list and tree code.
    fn scratch(n: u32) -> (Core, Vec<u8>) {
        let mut c = Core::empty();
        c.first = HDR;
        c.end = n * STRIDE + 2 * GRAIN;
        let len = c.end as usize;
        (c, vec![0u8; len])
    }

    fn block(m: &mut SliceMem<&mut [u8]>, i: u32, size: u32) -> u32 {
        let b = HDR + i * STRIDE;
        m.wr(b, Hmu::new(FREE, size, true).0).unwrap();
        b
    }

    /// Checks order and AVL balance; returns (height, blocks incl. chains).
    fn check(c: &Core, m: &SliceMem<&mut [u8]>, n: u32, lo: u32, hi: u32) -> (u32, usize) {
        if n == 0 {
            return (0, 0);
        }
        let s = c.node_size(m, n).unwrap();
        assert!(lo < s && s < hi, "tree out of order");
        let (hl, cl) = check(c, m, m.rd(n + T_LEFT).unwrap(), lo, s);
        let (hr, cr) = check(c, m, m.rd(n + T_RIGHT).unwrap(), s, hi);
        assert!(hl.abs_diff(hr) <= 1, "tree out of balance");
        let h = 1 + hl.max(hr);
        assert_eq!(m.rd(n + T_HEIGHT).unwrap(), h);
        let mut chain = 0;
        let mut cur = m.rd(n + T_NEXT).unwrap();
        while cur != 0 {
            chain += 1;
            cur = m.rd(cur + T_NEXT).unwrap();
        }
        (h, cl + cr + 1 + chain)
    }

    #[test]
    fn tree_insert_keeps_order_balance_and_chains_equal_sizes() {
        let (mut c, mut buf) = scratch(64);
        let end = c.end;
        let mut m = SliceMem::new(&mut buf[..], 0, end);
        for i in 0..64 {
            let size = 256 + (i % 20) * 8;
            let b = block(&mut m, i, size);
            c.tree_insert(&mut m, b, size).unwrap();
        }
        let (h, blocks) = check(&c, &m, c.root, 0, u32::MAX);
        assert_eq!(blocks, 64);
        assert!(
            h <= 6,
            "20 distinct sizes must give a height of at most 6, got {h}"
        );
    }

    #[test]
    fn tree_best_fit_finds_the_smallest_size_at_least_the_request() {
        let (mut c, mut buf) = scratch(16);
        let end = c.end;
        let mut m = SliceMem::new(&mut buf[..], 0, end);
        for i in 0..16 {
            let size = 256 + i * 64;
            let b = block(&mut m, i, size);
            c.tree_insert(&mut m, b, size).unwrap();
        }
        assert_eq!(c.node_size(&m, c.best_fit(&m, 256).unwrap().0), Ok(256));
        assert_eq!(c.best_fit(&m, 300).map(|(_, f)| f), Ok(256));
        assert_eq!(c.node_size(&m, c.best_fit(&m, 300).unwrap().0), Ok(320));
        assert_eq!(c.node_size(&m, c.best_fit(&m, 1216).unwrap().0), Ok(1216));
        assert_eq!(c.best_fit(&m, 1216).map(|(_, f)| f), Ok(1152));
        assert_eq!(c.best_fit(&m, 1217), Ok((0, 1216)));
        assert_eq!(c.largest_free(&m), Ok(1216));
    }

    #[test]
    fn tree_remove_of_nodes_and_chained_blocks_keeps_the_tree_valid() {
        let (mut c, mut buf) = scratch(96);
        let end = c.end;
        let mut m = SliceMem::new(&mut buf[..], 0, end);
        let mut live = Vec::new();
        for i in 0..96 {
            let size = 256 + (i * 37 % 31) * 8;
            let b = block(&mut m, i, size);
            c.tree_insert(&mut m, b, size).unwrap();
            live.push((b, size));
        }
        // Remove in an order unrelated to insertion: every third, then the rest.
        let mut order: Vec<usize> = (0..96).step_by(3).collect();
        order.extend((0..96).filter(|i| i % 3 != 0).rev());
        for (k, &i) in order.iter().enumerate() {
            let (b, size) = live[i];
            c.tree_remove(&mut m, b, size).unwrap();
            let (_, blocks) = check(&c, &m, c.root, 0, u32::MAX);
            assert_eq!(blocks, 95 - k);
        }
        assert_eq!(c.root, 0);
    }

    #[test]
    fn tree_remove_of_a_block_not_in_the_tree_is_reported_as_corruption() {
        let (mut c, mut buf) = scratch(4);
        let end = c.end;
        let mut m = SliceMem::new(&mut buf[..], 0, end);
        let a = block(&mut m, 0, 512);
        let b = block(&mut m, 1, 1024);
        c.tree_insert(&mut m, a, 512).unwrap();
        for f in [T_LEFT, T_RIGHT, T_NEXT, T_PREV] {
            m.wr(b + f, 0).unwrap();
        }
        assert!(c.tree_remove(&mut m, b, 1024).is_err());
    }

    #[test]
    fn small_lists_are_exact_and_track_the_mask() {
        let (mut c, mut buf) = scratch(8);
        let end = c.end;
        let mut m = SliceMem::new(&mut buf[..], 0, end);
        let a = block(&mut m, 0, 16);
        let b = block(&mut m, 1, 16);
        let d = block(&mut m, 2, 248);
        c.list_push(&mut m, a, 16).unwrap();
        c.list_push(&mut m, b, 16).unwrap();
        c.list_push(&mut m, d, 248).unwrap();
        assert_eq!(c.small_mask, (1 << 2) | (1 << 31));
        c.list_remove(&mut m, a, 16).unwrap();
        assert_eq!(c.list_pop(&mut m, 2), Ok(b));
        assert_eq!(c.small_mask, 1 << 31);
        assert_eq!(c.list_pop(&mut m, 31), Ok(d));
        assert_eq!(c.small_mask, 0);
        assert_eq!(small_index(16), 2);
        assert_eq!(small_index(SMALL_LIMIT - GRAIN), NSMALL - 1);
    }
}
