//! Where free blocks wait: 32 exact-size lists for blocks below 256 bytes,
//! and for the rest 96 balanced (AVL) trees ordered by size, one per quarter
//! power of two, with blocks of equal size chained behind their tree node.
//! Tree nodes link to their parent, so removal and rebalancing walk up from
//! the node instead of searching down from the root.
//!
//! Every link is a pool-relative `u32` offset of a block header, 0 meaning
//! none (offset 0 is never a block: blocks start at 4 mod 8). Every link read
//! from the pool is checked to be a plausible block offset before use, and
//! every walk is bounded, so damaged links end in [`Fault::Corrupt`], never
//! in a loop or an out-of-pool access. Under feature `hardened` every link
//! field is stored masked ([`Core::lrd`] / [`Core::lwr`], I12) and filed
//! blocks are poisoned past their link words (I13).
//!
//! ```text
//! small free block (16..=248 B)     large free block (>= 256 B)
//! +0  header (FREE)                 +0  header (FREE)
//! +4  next in list                  +4  left child   (tree node) / 0
//! +8  prev in list (0: head)        +8  right child  (tree node) / 0
//! ... unused                        +12 height >= 1  (tree node) / 0 (chained)
//! -4  footer: size                  +16 next block of the same size
//!                                   +20 prev of the same size (0: tree node)
//!                                   +24 parent (tree node; 0: the root)
//!                                   -4  footer: size
//! ```

use crate::block::{Fault, GRAIN, HDR, Hmu, MIN_BLOCK, Mem, MemMut, R};
use crate::heap::Core;

/// Blocks below this size live in the exact-size lists.
pub(crate) const SMALL_LIMIT: u32 = 256;
/// Number of exact-size lists, one per 8 bytes below [`SMALL_LIMIT`].
/// Lists 0 and 1 (sizes 0 and 8) stay empty: the minimum block is 16.
pub(crate) const NSMALL: usize = 32;
/// Number of size trees: four per power of two from [`SMALL_LIMIT`] up.
pub(crate) const NTREES: usize = 96;
/// The bitmap of non-empty trees.
pub(crate) type TreeMask = u128;
/// A bound on tree depth. An AVL tree of the at most 2^24 large blocks a
/// 4 GiB pool holds is at most 35 deep; anything deeper is damage.
pub(crate) const MAX_DEPTH: u32 = 48;

pub(crate) const S_NEXT: u32 = 4;
pub(crate) const S_PREV: u32 = 8;
pub(crate) const T_LEFT: u32 = 4;
pub(crate) const T_RIGHT: u32 = 8;
pub(crate) const T_HEIGHT: u32 = 12;
pub(crate) const T_NEXT: u32 = 16;
pub(crate) const T_PREV: u32 = 20;
pub(crate) const T_PARENT: u32 = 24;

const _: () = assert!(SMALL_LIMIT / GRAIN == NSMALL as u32);
const _: () = assert!(SMALL_LIMIT == 1 << 8 && NTREES == 4 * (32 - 8));
const _: () = assert!(NTREES <= TreeMask::BITS as usize);
const _: () = assert!(NSMALL <= u32::BITS as usize);
const _: () = assert!(S_PREV + HDR + HDR <= MIN_BLOCK);
const _: () = assert!(T_PARENT + HDR + HDR <= SMALL_LIMIT);
const _: () = assert!(MIN_BLOCK / GRAIN >= 2);
const _: () = assert!(crate::block::MAX_END.checked_add(SMALL_LIMIT).is_some());

/// Bytes of bookkeeping at the start of a small free block (header, two
/// links): its poisoned body starts after them (I13).
#[cfg(feature = "hardened")]
const S_BODY: u32 = S_PREV + HDR;
/// Bytes of bookkeeping at the start of a large free block.
#[cfg(feature = "hardened")]
const T_BODY: u32 = T_PARENT + HDR;
/// Bytes of a large free block's body that are poisoned (I13): a bounded
/// prefix, so freeing and reusing a large block stays cheap.
#[cfg(feature = "hardened")]
const LARGE_POISON: u32 = 64;
/// The word freed memory is filled with under `hardened` (I13).
#[cfg(feature = "hardened")]
pub(crate) const POISON: u32 = 0xA55A_C33C;

#[cfg(feature = "hardened")]
const _: () = assert!(S_BODY <= MIN_BLOCK - HDR && T_BODY + LARGE_POISON + HDR <= SMALL_LIMIT);
#[cfg(feature = "hardened")]
const _: () = assert!(S_BODY.is_multiple_of(HDR) && LARGE_POISON.is_multiple_of(HDR));

/// The poisoned words `[lo, hi)` of the free block `b` of `size` (I13): the
/// whole body between the links and the footer for a small block, a fixed
/// prefix after the links for a large one (which a large block keeps when
/// it shrinks in place, since it stays at least [`SMALL_LIMIT`] long).
#[cfg(feature = "hardened")]
#[inline(always)]
pub(crate) const fn poison_range(b: u32, size: u32) -> (u32, u32) {
    if size < SMALL_LIMIT {
        (b + S_BODY, b + size - HDR)
    } else {
        (b + T_BODY, b + T_BODY + LARGE_POISON)
    }
}

/// The mask of the link stored at pool offset `at` under `hardened` (I12):
/// safe-linking as in glibc, a function of the link's own location and the
/// heap's secret. Pool-relative, so moving the pool keeps every link valid.
#[cfg(feature = "hardened")]
#[inline(always)]
pub(crate) const fn link_key(secret: u32, at: u32) -> u32 {
    (at ^ secret).wrapping_mul(0x9E37_79B9)
}

/// A heap secret from what a `no_std` heap has at init: addresses (the
/// pool, the bookkeeping, the stack: randomised on hosts with ASLR, fixed
/// on wasm32) and the pool geometry, mixed with a compile-time constant.
#[cfg(feature = "hardened")]
pub(crate) fn make_secret(words: [usize; 4]) -> u32 {
    let mut x: u64 = 0x6A09_E667_F3BC_C908;
    for w in words {
        x = (x ^ w as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 29;
    }
    (x ^ (x >> 32)) as u32
}

/// The list index of a small block size.
#[inline(always)]
pub(crate) const fn small_index(size: u32) -> usize {
    (size / GRAIN) as usize
}

/// The size tree of a large block size (`>= SMALL_LIMIT`): trees cover
/// quarter powers of two, `[2^k + j * 2^(k-2), 2^k + (j + 1) * 2^(k-2))`
/// for `j` in `0..4`. Smaller sizes map to tree 0.
#[inline(always)]
pub(crate) const fn tree_index(size: u32) -> usize {
    let s = if size < SMALL_LIMIT {
        SMALL_LIMIT
    } else {
        size
    };
    let k = u32::BITS - 1 - s.leading_zeros();
    (((k - 8) << 2) | ((s >> (k - 2)) & 3)) as usize
}

/// The smallest block size of tree `t`.
#[inline(always)]
pub(crate) const fn tree_min(t: usize) -> u32 {
    let k = (t as u32 >> 2) + 8;
    (1 << k) | ((t as u32 & 3) << (k - 2))
}

impl Core {
    /// Whether `off` could be a block header of this pool.
    #[inline(always)]
    pub(crate) fn link_ok(&self, off: u32) -> bool {
        off.wrapping_sub(self.first) < self.end.wrapping_sub(self.first) && off % GRAIN == HDR
    }

    /// The size of the free block at `b`, checking it is one (I2, I5).
    #[inline(always)]
    pub(crate) fn free_size<M: Mem>(&self, m: &M, b: u32) -> R<u32> {
        if !self.link_ok(b) {
            return Err(Fault::Corrupt);
        }
        let h = Hmu(m.rd(b)?);
        let size = h.size();
        if h.usage() != crate::block::FREE || size < MIN_BLOCK || size > self.end - HDR - b {
            return Err(Fault::Corrupt);
        }
        Ok(size)
    }

    /// The link stored at `at`, checked to be 0 or a plausible block.
    #[inline(always)]
    pub(crate) fn link<M: Mem>(&self, m: &M, at: u32) -> R<u32> {
        let v = self.lrd(m, at)?;
        if v != 0 && !self.link_ok(v) {
            return Err(Fault::Corrupt);
        }
        Ok(v)
    }

    /// The raw link word at `at` (a link field of a free block), unmasked
    /// under `hardened` (I12); not yet checked to name a block.
    #[inline(always)]
    pub(crate) fn lrd<M: Mem>(&self, m: &M, at: u32) -> R<u32> {
        let v = m.rd(at)?;
        #[cfg(feature = "hardened")]
        let v = v ^ link_key(self.secret, at);
        Ok(v)
    }

    /// Stores the link `v` in the link field at `at`, masked under
    /// `hardened` (I12).
    #[inline(always)]
    pub(crate) fn lwr<M: MemMut>(&self, m: &mut M, at: u32, v: u32) -> R<()> {
        #[cfg(feature = "hardened")]
        let v = v ^ link_key(self.secret, at);
        m.wr(at, v)
    }

    /// Fills the poisoned words of the free block `b` of `size` (I13).
    #[cfg(feature = "hardened")]
    #[inline(always)]
    fn poison<M: MemMut>(&self, m: &mut M, b: u32, size: u32) -> R<()> {
        let (mut at, hi) = poison_range(b, size);
        while at < hi {
            m.wr(at, POISON)?;
            at += HDR;
        }
        Ok(())
    }

    /// Checks the poisoned words of the free block `b` of `size` (I13): a
    /// write into freed memory (use after free) is damage.
    #[cfg(feature = "hardened")]
    #[inline(always)]
    pub(crate) fn poison_ok<M: Mem>(&self, m: &M, b: u32, size: u32) -> R<()> {
        let (mut at, hi) = poison_range(b, size);
        let mut diff = 0;
        while at < hi {
            diff |= m.rd(at)? ^ POISON;
            at += HDR;
        }
        if diff != 0 {
            return Err(Fault::Corrupt);
        }
        Ok(())
    }

    // ---- exact-size lists (I6) ----

    /// Pushes the free block `b` of small `size` on its list.
    #[inline(always)]
    pub(crate) fn list_push<M: MemMut>(&mut self, m: &mut M, b: u32, size: u32) -> R<()> {
        let i = small_index(size);
        let head = self.small[i];
        #[cfg(feature = "hardened")]
        self.poison(m, b, size)?;
        self.lwr(m, b + S_NEXT, head)?;
        self.lwr(m, b + S_PREV, 0)?;
        if head != 0 {
            self.lwr(m, head + S_PREV, b)?;
        }
        self.small[i] = b;
        self.small_mask |= 1 << i;
        Ok(())
    }

    /// Unlinks the free block `b` of small `size`, checking both neighbours
    /// point back at it.
    #[inline(always)]
    pub(crate) fn list_remove<M: MemMut>(&mut self, m: &mut M, b: u32, size: u32) -> R<()> {
        let i = small_index(size);
        let next = self.link(m, b + S_NEXT)?;
        let prev = self.link(m, b + S_PREV)?;
        if next != 0 && self.lrd(m, next + S_PREV)? != b {
            return Err(Fault::Corrupt);
        }
        if prev == 0 {
            if self.small[i] != b {
                return Err(Fault::Corrupt);
            }
            self.small[i] = next;
            if next == 0 {
                self.small_mask &= !(1 << i);
            }
        } else {
            if self.lrd(m, prev + S_NEXT)? != b {
                return Err(Fault::Corrupt);
            }
            self.lwr(m, prev + S_NEXT, next)?;
        }
        if next != 0 {
            self.lwr(m, next + S_PREV, prev)?;
        }
        Ok(())
    }

    /// Takes the head of list `i` (non-empty by the mask).
    #[inline(always)]
    pub(crate) fn list_pop<M: MemMut>(&mut self, m: &mut M, i: usize) -> R<u32> {
        let b = self.small[i];
        let size = self.free_size(m, b)?;
        if small_index(size) != i || size >= SMALL_LIMIT {
            return Err(Fault::Corrupt);
        }
        #[cfg(feature = "hardened")]
        self.poison_ok(m, b, size)?;
        self.list_remove(m, b, size)?;
        Ok(b)
    }

    // ---- the size tree (I7) ----

    /// The size of tree node `n`, checking it is a large free block.
    #[inline(always)]
    pub(crate) fn node_size<M: Mem>(&self, m: &M, n: u32) -> R<u32> {
        let s = self.free_size(m, n)?;
        if s < SMALL_LIMIT {
            return Err(Fault::Corrupt);
        }
        Ok(s)
    }

    /// The stored height of tree node `n` (0 for no node), checked to be
    /// plausible (I7).
    #[inline(always)]
    fn height<M: Mem>(&self, m: &M, n: u32) -> R<u32> {
        if n == 0 {
            return Ok(0);
        }
        let h = m.rd(n + T_HEIGHT)?;
        if h == 0 || h > MAX_DEPTH {
            return Err(Fault::Corrupt);
        }
        Ok(h)
    }

    /// The root of tree `t` (0: empty or no such tree).
    #[inline(always)]
    pub(crate) fn root(&self, t: usize) -> u32 {
        self.roots.get(t).copied().unwrap_or(0)
    }

    /// Points the link that names tree node `old` (its parent's child link,
    /// or the root of tree `t` when `parent` is 0) at `new`, checking that
    /// it does name `old` (I7).
    #[inline(always)]
    fn replace_child<M: MemMut>(
        &mut self,
        m: &mut M,
        t: usize,
        parent: u32,
        old: u32,
        new: u32,
    ) -> R<()> {
        if parent == 0 {
            let root = self.roots.get_mut(t).ok_or(Fault::Corrupt)?;
            if *root != old {
                return Err(Fault::Corrupt);
            }
            *root = new;
            if new == 0 {
                self.set_tree_mask(self.tree_mask() & !(1 << t));
            }
            return Ok(());
        }
        let side = if self.lrd(m, parent + T_LEFT)? == old {
            T_LEFT
        } else if self.lrd(m, parent + T_RIGHT)? == old {
            T_RIGHT
        } else {
            return Err(Fault::Corrupt);
        };
        self.lwr(m, parent + side, new)
    }

    /// Sets the parent link of `n` (if any) to `p`.
    #[inline(always)]
    fn set_parent<M: MemMut>(&self, m: &mut M, n: u32, p: u32) -> R<()> {
        if n != 0 {
            self.lwr(m, n + T_PARENT, p)?;
        }
        Ok(())
    }

    /// Walks up tree `t` from `n` after a subtree below it changed height:
    /// recomputes each height, rotates where the AVL balance broke, and
    /// stops at the first node whose height stays the same (I7).
    fn retrace<M: MemMut>(&mut self, m: &mut M, t: usize, mut n: u32) -> R<()> {
        for _ in 0..=MAX_DEPTH {
            if n == 0 {
                return Ok(());
            }
            let old = self.height(m, n)?;
            let l = self.link(m, n + T_LEFT)?;
            let r = self.link(m, n + T_RIGHT)?;
            let p = self.link(m, n + T_PARENT)?;
            let hl = self.height(m, l)?;
            let hr = self.height(m, r)?;
            let h = if hl > hr + 1 {
                self.rotate(m, t, (n, p), (l, hl), hr, T_LEFT)?
            } else if hr > hl + 1 {
                self.rotate(m, t, (n, p), (r, hr), hl, T_RIGHT)?
            } else {
                let h = 1 + hl.max(hr);
                if h != old {
                    m.wr(n + T_HEIGHT, h)?;
                }
                h
            };
            if h == old {
                return Ok(());
            }
            n = p;
        }
        Err(Fault::Corrupt)
    }

    /// Restores the balance at `n` (child of `p` in tree `t`), whose child
    /// `c` (of height `hc`) on side `a` is two taller than the other child
    /// (of height `ho`), by a single or double rotation; links the new
    /// subtree root into `p` and returns the subtree's height.
    fn rotate<M: MemMut>(
        &mut self,
        m: &mut M,
        t: usize,
        (n, p): (u32, u32),
        (c, hc): (u32, u32),
        ho: u32,
        a: u32,
    ) -> R<u32> {
        let b = if a == T_LEFT { T_RIGHT } else { T_LEFT };
        let outer = self.link(m, c + a)?;
        let inner = self.link(m, c + b)?;
        let ho_c = self.height(m, outer)?;
        let hi_c = self.height(m, inner)?;
        if hc != 1 + ho_c.max(hi_c) {
            return Err(Fault::Corrupt);
        }
        if ho_c >= hi_c {
            // Single rotation: c rises, n takes c's inner subtree.
            self.replace_child(m, t, p, n, c)?;
            self.lwr(m, n + a, inner)?;
            self.set_parent(m, inner, n)?;
            self.lwr(m, c + b, n)?;
            self.lwr(m, n + T_PARENT, c)?;
            self.lwr(m, c + T_PARENT, p)?;
            let hn = 1 + hi_c.max(ho);
            let top = 1 + ho_c.max(hn);
            m.wr(n + T_HEIGHT, hn)?;
            m.wr(c + T_HEIGHT, top)?;
            return Ok(top);
        }
        // Double rotation: c's inner child g rises above both.
        let g = inner;
        let ga = self.link(m, g + a)?;
        let gb = self.link(m, g + b)?;
        let hga = self.height(m, ga)?;
        let hgb = self.height(m, gb)?;
        self.replace_child(m, t, p, n, g)?;
        self.lwr(m, c + b, ga)?;
        self.set_parent(m, ga, c)?;
        self.lwr(m, n + a, gb)?;
        self.set_parent(m, gb, n)?;
        self.lwr(m, g + a, c)?;
        self.lwr(m, g + b, n)?;
        self.lwr(m, c + T_PARENT, g)?;
        self.lwr(m, n + T_PARENT, g)?;
        self.lwr(m, g + T_PARENT, p)?;
        let hcn = 1 + ho_c.max(hga);
        let hn = 1 + hgb.max(ho);
        let top = 1 + hcn.max(hn);
        m.wr(c + T_HEIGHT, hcn)?;
        m.wr(n + T_HEIGHT, hn)?;
        m.wr(g + T_HEIGHT, top)?;
        Ok(top)
    }

    /// Inserts the large free block `b` of `size` into its tree: chained
    /// behind the node of its size if there is one, else as a new leaf,
    /// then rebalanced.
    pub(crate) fn tree_insert<M: MemMut>(&mut self, m: &mut M, b: u32, size: u32) -> R<()> {
        #[cfg(feature = "hardened")]
        self.poison(m, b, size)?;
        let t = tree_index(size);
        let mut parent = 0;
        let mut side = T_LEFT;
        let mut cur = self.root(t);
        for _ in 0..=MAX_DEPTH {
            if cur == 0 {
                self.lwr(m, b + T_LEFT, 0)?;
                self.lwr(m, b + T_RIGHT, 0)?;
                m.wr(b + T_HEIGHT, 1)?;
                self.lwr(m, b + T_NEXT, 0)?;
                self.lwr(m, b + T_PREV, 0)?;
                self.lwr(m, b + T_PARENT, parent)?;
                if parent == 0 {
                    *self.roots.get_mut(t).ok_or(Fault::Corrupt)? = b;
                    self.set_tree_mask(self.tree_mask() | 1 << t);
                    return Ok(());
                }
                self.lwr(m, parent + side, b)?;
                // A parent that already had a (leaf) child on the other side
                // keeps its height 2: nothing above changes (I7).
                let other = if side == T_LEFT { T_RIGHT } else { T_LEFT };
                if self.lrd(m, parent + other)? != 0 {
                    return Ok(());
                }
                return self.retrace(m, t, parent);
            }
            let ns = self.node_size(m, cur)?;
            if ns == size {
                let nx = self.link(m, cur + T_NEXT)?;
                m.wr(b + T_HEIGHT, 0)?;
                self.lwr(m, b + T_NEXT, nx)?;
                self.lwr(m, b + T_PREV, cur)?;
                if nx != 0 {
                    self.lwr(m, nx + T_PREV, b)?;
                }
                return self.lwr(m, cur + T_NEXT, b);
            }
            side = if size < ns { T_LEFT } else { T_RIGHT };
            parent = cur;
            cur = self.link(m, cur + side)?;
        }
        Err(Fault::Corrupt)
    }

    /// Removes the large free block `b` of `size` (a tree node or a chained
    /// block), checking its links agree.
    pub(crate) fn tree_remove<M: MemMut>(&mut self, m: &mut M, b: u32, size: u32) -> R<()> {
        let prev = self.link(m, b + T_PREV)?;
        let next = self.link(m, b + T_NEXT)?;
        if next != 0 && self.lrd(m, next + T_PREV)? != b {
            return Err(Fault::Corrupt);
        }
        if prev != 0 {
            if self.lrd(m, prev + T_NEXT)? != b {
                return Err(Fault::Corrupt);
            }
            self.lwr(m, prev + T_NEXT, next)?;
            if next != 0 {
                self.lwr(m, next + T_PREV, prev)?;
            }
            return Ok(());
        }
        let t = tree_index(size);
        let l = self.link(m, b + T_LEFT)?;
        let r = self.link(m, b + T_RIGHT)?;
        let p = self.link(m, b + T_PARENT)?;
        if next != 0 {
            // The next block of the same size takes b's place as the node.
            let h = m.rd(b + T_HEIGHT)?;
            self.replace_child(m, t, p, b, next)?;
            self.lwr(m, next + T_LEFT, l)?;
            self.lwr(m, next + T_RIGHT, r)?;
            m.wr(next + T_HEIGHT, h)?;
            self.lwr(m, next + T_PARENT, p)?;
            self.lwr(m, next + T_PREV, 0)?;
            self.set_parent(m, l, next)?;
            return self.set_parent(m, r, next);
        }
        if l == 0 || r == 0 {
            let c = l | r;
            self.replace_child(m, t, p, b, c)?;
            if c != 0 {
                self.lwr(m, c + T_PARENT, p)?;
            } else if p != 0 {
                // A leaf whose sibling is a leaf too: the parent keeps its
                // height 2 and its balance (I7).
                let sib = self.lrd(m, p + T_LEFT)? | self.lrd(m, p + T_RIGHT)?;
                if sib != 0 && self.height(m, sib)? == 1 {
                    return Ok(());
                }
            }
            return self.retrace(m, t, p);
        }
        // Two children: the smallest node of the right subtree, `s`, takes
        // `b`'s place.
        let mut s = r;
        for _ in 0..=MAX_DEPTH {
            let sl = self.link(m, s + T_LEFT)?;
            if sl == 0 {
                let h = self.height(m, b)?;
                let sp = self.link(m, s + T_PARENT)?;
                self.replace_child(m, t, p, b, s)?;
                self.lwr(m, s + T_PARENT, p)?;
                m.wr(s + T_HEIGHT, h)?;
                self.lwr(m, s + T_LEFT, l)?;
                self.lwr(m, l + T_PARENT, s)?;
                if sp == b {
                    return self.retrace(m, t, s);
                }
                let sr = self.link(m, s + T_RIGHT)?;
                self.replace_child(m, t, sp, s, sr)?;
                self.set_parent(m, sr, sp)?;
                self.lwr(m, s + T_RIGHT, r)?;
                self.lwr(m, r + T_PARENT, s)?;
                return self.retrace(m, t, sp);
            }
            s = sl;
        }
        Err(Fault::Corrupt)
    }

    /// Replaces tree node `old` (of `size`) by the block `b` of `new_size`
    /// (a merge grew it, maybe moving its start) without touching the tree
    /// shape, when that keeps the order (I7): `old` has no equal-size chain,
    /// `new_size` stays in the same tree and below the next larger node.
    /// `Ok(false)`: not possible, nothing changed.
    pub(crate) fn tree_regrow<M: MemMut>(
        &mut self,
        m: &mut M,
        (old, size): (u32, u32),
        b: u32,
        new_size: u32,
    ) -> R<bool> {
        if tree_index(new_size) != tree_index(size)
            || self.lrd(m, old + T_NEXT)? != 0
            || self.lrd(m, old + T_PREV)? != 0
        {
            return Ok(false);
        }
        let l = self.link(m, old + T_LEFT)?;
        let r = self.link(m, old + T_RIGHT)?;
        let p = self.link(m, old + T_PARENT)?;
        // The next larger node: the leftmost of the right subtree, else the
        // first ancestor reached from its left side.
        let succ = if r != 0 {
            let mut s = r;
            let mut steps = 0;
            loop {
                let sl = self.link(m, s + T_LEFT)?;
                if sl == 0 {
                    break s;
                }
                steps += 1;
                if steps > MAX_DEPTH {
                    return Err(Fault::Corrupt);
                }
                s = sl;
            }
        } else {
            let (mut c, mut a) = (old, p);
            let mut steps = 0;
            loop {
                if a == 0 || self.lrd(m, a + T_LEFT)? == c {
                    break a;
                }
                steps += 1;
                if steps > MAX_DEPTH {
                    return Err(Fault::Corrupt);
                }
                (c, a) = (a, self.link(m, a + T_PARENT)?);
            }
        };
        if succ != 0 && self.node_size(m, succ)? <= new_size {
            return Ok(false);
        }
        let t = tree_index(size);
        if b == old {
            // Still check that `old` is linked where it claims to be (I7).
            let linked = if p == 0 {
                self.root(t) == old
            } else {
                self.lrd(m, p + T_LEFT)? == old || self.lrd(m, p + T_RIGHT)? == old
            };
            if !linked {
                return Err(Fault::Corrupt);
            }
        } else {
            let h = self.height(m, old)?;
            self.replace_child(m, t, p, old, b)?;
            self.lwr(m, b + T_LEFT, l)?;
            self.lwr(m, b + T_RIGHT, r)?;
            m.wr(b + T_HEIGHT, h)?;
            self.lwr(m, b + T_NEXT, 0)?;
            self.lwr(m, b + T_PREV, 0)?;
            self.lwr(m, b + T_PARENT, p)?;
            self.set_parent(m, l, b)?;
            self.set_parent(m, r, b)?;
            #[cfg(feature = "hardened")]
            self.poison(m, b, new_size)?;
        }
        Ok(true)
    }

    /// The tree node of the smallest size `>= need`, or 0 (best fit), and
    /// the largest node size below `need` in the same tree (0 if none).
    /// Sizes below [`SMALL_LIMIT`] look straight at the smallest tree.
    #[inline]
    pub(crate) fn best_fit<M: Mem>(&self, m: &M, need: u32) -> R<(u32, u32)> {
        let t = tree_index(need);
        if need >= SMALL_LIMIT && self.tree_mask() & (1 << t) != 0 {
            let mut cur = self.root(t);
            let mut best = 0;
            let mut floor = 0;
            for _ in 0..=MAX_DEPTH {
                if cur == 0 {
                    if best != 0 {
                        return Ok((best, floor));
                    }
                    break;
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
            if cur != 0 {
                return Err(Fault::Corrupt);
            }
        }
        let above = if need >= SMALL_LIMIT {
            self.tree_mask() & !(TreeMask::MAX >> (TreeMask::BITS as usize - 1 - t))
        } else {
            self.tree_mask()
        };
        if above == 0 {
            return Ok((0, 0));
        }
        let mut cur = self.root(above.trailing_zeros() as usize);
        for _ in 0..=MAX_DEPTH {
            if !self.link_ok(cur) {
                return Err(Fault::Corrupt);
            }
            let l = self.link(m, cur + T_LEFT)?;
            if l == 0 {
                return Ok((cur, 0));
            }
            cur = l;
        }
        Err(Fault::Corrupt)
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
        Err(Fault::Corrupt)
    }

    /// Takes a block of tree node `n`'s size out of its tree: a chained one
    /// when there is one (no rebalancing), else `n` itself.
    pub(crate) fn take_large<M: MemMut>(&mut self, m: &mut M, n: u32, size: u32) -> R<u32> {
        let nx = self.link(m, n + T_NEXT)?;
        let b = if nx != 0 { nx } else { n };
        if self.node_size(m, b)? != size {
            return Err(Fault::Corrupt);
        }
        #[cfg(feature = "hardened")]
        self.poison_ok(m, b, size)?;
        self.tree_remove(m, b, size)?;
        Ok(b)
    }

    /// The size of the largest free block (0 when none).
    pub(crate) fn largest_free<M: Mem>(&self, m: &M) -> R<u32> {
        if self.tree_mask() == 0 {
            return Ok(match self.small_mask {
                0 => 0,
                mask => (u32::BITS - 1 - mask.leading_zeros()) * GRAIN,
            });
        }
        let t = (TreeMask::BITS - 1 - self.tree_mask().leading_zeros()) as usize;
        self.max_size(m, self.root(t))
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
        for child in [T_LEFT, T_RIGHT] {
            let k = c.lrd(m, n + child).unwrap();
            if k != 0 {
                assert_eq!(c.lrd(m, k + T_PARENT), Ok(n), "parent link wrong");
            }
        }
        let (hl, cl) = check(c, m, c.lrd(m, n + T_LEFT).unwrap(), lo, s);
        let (hr, cr) = check(c, m, c.lrd(m, n + T_RIGHT).unwrap(), s, hi);
        assert!(hl.abs_diff(hr) <= 1, "tree out of balance");
        let h = 1 + hl.max(hr);
        assert_eq!(m.rd(n + T_HEIGHT).unwrap(), h);
        let mut chain = 0;
        let mut cur = c.lrd(m, n + T_NEXT).unwrap();
        while cur != 0 {
            chain += 1;
            cur = c.lrd(m, cur + T_NEXT).unwrap();
        }
        (h, cl + cr + 1 + chain)
    }

    /// Checks every tree; returns (largest height, blocks incl. chains).
    fn check_all(c: &Core, m: &SliceMem<&mut [u8]>) -> (u32, usize) {
        let mut out = (0, 0);
        for t in 0..NTREES {
            let hi = if t + 1 < NTREES {
                tree_min(t + 1)
            } else {
                u32::MAX
            };
            let (h, n) = check(c, m, c.root(t), tree_min(t) - 1, hi);
            assert_eq!(c.tree_mask() >> t & 1 != 0, n != 0, "tree mask wrong");
            out = (out.0.max(h), out.1 + n);
        }
        out
    }

    #[test]
    fn tree_index_covers_quarter_powers_of_two() {
        assert_eq!(tree_index(256), 0);
        assert_eq!(tree_index(319), 0);
        assert_eq!(tree_index(320), 1);
        assert_eq!(tree_index(511), 3);
        assert_eq!(tree_index(512), 4);
        assert_eq!(tree_index(639), 4);
        assert_eq!(tree_index(640), 5);
        assert_eq!(tree_index(crate::block::MAX_END), NTREES - 1);
        for t in 0..NTREES {
            assert_eq!(tree_index(tree_min(t)), t);
            assert_eq!(tree_index(tree_min(t) - GRAIN), t.saturating_sub(1));
        }
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
        let (h, blocks) = check_all(&c, &m);
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
        assert_eq!(c.best_fit(&m, 300).map(|(_, f)| f), Ok(0));
        assert_eq!(c.node_size(&m, c.best_fit(&m, 300).unwrap().0), Ok(320));
        assert_eq!(c.node_size(&m, c.best_fit(&m, 1216).unwrap().0), Ok(1216));
        assert_eq!(c.best_fit(&m, 1216).map(|(_, f)| f), Ok(1152));
        assert_eq!(c.best_fit(&m, 1217), Ok((0, 0)));
        assert_eq!(c.largest_free(&m), Ok(1216));
        // No fit in its own tree: the smallest block of the next non-empty one.
        assert_eq!(c.node_size(&m, c.best_fit(&m, 1000).unwrap().0), Ok(1024));
        assert_eq!(c.best_fit(&m, 1000).map(|(_, f)| f), Ok(0));
        assert_eq!(c.node_size(&m, c.best_fit(&m, 100).unwrap().0), Ok(256));
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
            let (_, blocks) = check_all(&c, &m);
            assert_eq!(blocks, 95 - k);
        }
        assert_eq!(c.tree_mask(), 0);
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
            c.lwr(&mut m, b + f, 0).unwrap();
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
