//! Size classes: 32 small bins of exact 8-byte spacing below 256 bytes, and
//! 64 tree bins for larger chunks, four per power of two.
//!
//! Small bin `i` holds chunks of exactly `8 * i` bytes. Tree bin `i` holds
//! chunks from [`tree_min_size`]`(i)` up to the next bin's minimum; the last
//! one holds everything from 14 MiB up. (dlmalloc has two bins per power of
//! two; four halve the chunks per trie, so every trie walk is about one
//! level shorter, for 17 bytes of code and a `u64` map.) Inside a tree bin
//! the chunks form a bitwise trie keyed by size: below the bits that select
//! the bin, each level branches on the next lower size bit ([`tree_shift`]
//! brings that bit to the top of the word).

/// Number of small bins.
pub(crate) const NSMALL: usize = 32;

/// Whether this build keeps fast lists (I14): feature `fast-lists`, except
/// in a hardened build, where every free chunk must be poisoned (I13) and a
/// list nothing checks would be the first target of a use after free.
pub(crate) const FAST: bool = cfg!(feature = "fast-lists") && !cfg!(feature = "hardened");

/// The largest chunk kept on a fast list: the chunk of a 128-byte request.
pub(crate) const FAST_MAX: usize = crate::block::pad_request(128);

/// Number of fast lists: list `i` holds chunks of `8 * i` bytes (the first
/// few, below `MIN_CHUNK`, stay empty); one unused entry in a build without
/// fast lists.
pub(crate) const NFAST: usize = if FAST {
    FAST_MAX / crate::block::ALIGN + 1
} else {
    1
};

/// Number of tree bins.
pub(crate) const NTREE: usize = 64;

/// log2 of the tree bins per power of two.
const SUB_BITS: u32 = 2;

/// The tree bin map: bit `i` for tree bin `i`.
pub(crate) type TreeMap = u64;

/// log2 of the small-bin spacing.
pub(crate) const SMALL_SHIFT: u32 = 3;

/// log2 of the smallest tree-binned size.
pub(crate) const TREE_SHIFT: u32 = 8;

/// The smallest chunk size kept in tree bins (256 bytes).
pub(crate) const MIN_LARGE: usize = 1 << TREE_SHIFT;

const BITS: u32 = usize::BITS;

const _: () = assert!(NSMALL << SMALL_SHIFT == MIN_LARGE);
const _: () = assert!(1usize << SMALL_SHIFT == crate::block::ALIGN);
const _: () = assert!(NSMALL <= u32::BITS as usize && NTREE <= TreeMap::BITS as usize);
const _: () = assert!(NTREE == (16 << SUB_BITS));
const _: () = assert!(FAST_MAX < MIN_LARGE);
const _: () = assert!(tree_index(MIN_LARGE) == 0 && tree_index(usize::MAX) == NTREE - 1);

/// Whether a chunk of `size` bytes lives in a small bin.
#[inline(always)]
pub(crate) const fn is_small(size: usize) -> bool {
    size < MIN_LARGE
}

/// The small bin of a chunk of `size` bytes (`size < MIN_LARGE`).
#[inline(always)]
pub(crate) const fn small_index(size: usize) -> usize {
    size >> SMALL_SHIFT
}

/// The chunk size held by small bin `i`.
#[inline(always)]
pub(crate) const fn small_size(i: usize) -> usize {
    i << SMALL_SHIFT
}

/// The tree bin of a chunk of `size >= MIN_LARGE` bytes. (`#[inline]`, not
/// `always`: a size build keeps one copy for its two callers.)
#[inline]
pub(crate) const fn tree_index(size: usize) -> usize {
    let x = size >> TREE_SHIFT;
    if x == 0 {
        0
    } else if x > 0xFFFF {
        NTREE - 1
    } else {
        // `k`: the power of two; then the `SUB_BITS` size bits below it.
        let k = (BITS - 1 - x.leading_zeros()) as usize;
        let sub = (size >> (k + (TREE_SHIFT - SUB_BITS) as usize)) & ((1 << SUB_BITS) - 1);
        (k << SUB_BITS) + sub
    }
}

/// How far to shift a size so that the first bit the trie of bin `i`
/// branches on becomes the top bit of the word.
#[inline(always)]
pub(crate) const fn tree_shift(i: usize) -> u32 {
    if i == NTREE - 1 {
        0
    } else {
        BITS - 1 - ((i as u32 >> SUB_BITS) + TREE_SHIFT - SUB_BITS - 1)
    }
}

/// The smallest chunk size of tree bin `i`.
#[cfg(test)]
pub(crate) const fn tree_min_size(i: usize) -> usize {
    let k = (i >> SUB_BITS) + TREE_SHIFT as usize;
    (1 << k) | ((i & ((1 << SUB_BITS) - 1)) << (k - SUB_BITS as usize))
}

/// The bits of the tree map strictly above bit `i` (`i < NTREE`).
#[inline(always)]
pub(crate) const fn left_bits(i: usize) -> TreeMap {
    !1 << i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bins_are_exact_eight_byte_classes() {
        for size in (0..MIN_LARGE).step_by(8) {
            assert!(is_small(size));
            assert_eq!(small_size(small_index(size)), size);
        }
        assert!(!is_small(MIN_LARGE));
        assert_eq!(small_index(MIN_LARGE - 8), NSMALL - 1);
    }

    #[test]
    fn tree_index_matches_the_bin_minimum_sizes() {
        for i in 0..NTREE {
            let lo = tree_min_size(i);
            assert_eq!(tree_index(lo), i, "bin {i} minimum");
            if i + 1 < NTREE {
                let hi = tree_min_size(i + 1);
                assert!(hi > lo);
                assert_eq!(tree_index(hi - 8), i, "bin {i} maximum");
            }
        }
        assert_eq!(tree_index(256), 0);
        assert_eq!(tree_index(319), 0);
        assert_eq!(tree_index(320), 1);
        assert_eq!(tree_index(448), 3);
        assert_eq!(tree_index(512), 4);
        assert_eq!(tree_index((14 << 20) - 8), NTREE - 2);
        assert_eq!(tree_index(14 << 20), NTREE - 1);
        assert_eq!(tree_index(1 << 30), NTREE - 1);
    }

    #[test]
    fn tree_index_is_monotonic_in_size() {
        let mut last = 0;
        let mut size = MIN_LARGE;
        while size < (64 << 20) {
            let i = tree_index(size);
            assert!(i >= last);
            last = i;
            size += size / 61 + 8;
        }
    }

    #[test]
    fn tree_shift_puts_the_first_free_size_bit_on_top() {
        for i in 0..NTREE - 1 {
            let lo = tree_min_size(i);
            // All sizes of bin i share the bits above and including the
            // bin-selecting bits; the first bit below them is the trie's top.
            let k = (i >> SUB_BITS) + TREE_SHIFT as usize;
            let first_free_bit = k - SUB_BITS as usize - 1;
            let probe = lo | (1 << first_free_bit);
            assert_eq!(tree_index(probe), i);
            assert_eq!((probe << tree_shift(i)) >> (BITS - 1), 1, "bin {i}");
            assert_eq!((lo << tree_shift(i)) >> (BITS - 1), 0, "bin {i}");
        }
    }

    #[test]
    fn left_bits_selects_strictly_higher_bins() {
        assert_eq!(left_bits(0), !1);
        assert_eq!(left_bits(4), !0x1F);
        assert_eq!(left_bits(31), !0 << 32);
        assert_eq!(left_bits(NTREE - 1), 0);
    }
}
