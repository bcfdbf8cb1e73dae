//! Chunk encoding: one size word with two in-use bits, boundary tags on free
//! chunks.
//!
//! ```text
//!  chunk p                                       next chunk p + size
//!  |                                             |
//!  v                                             v
//!  [prev_foot][size|F|C|P][ payload ........... ][prev_foot][size|..]
//!   0          W           2W (8-aligned)
//! ```
//!
//! `W` is the machine word (4 bytes on wasm32). A chunk's `prev_foot` word
//! belongs to the previous chunk: it is that chunk's boundary tag (its size)
//! while it is free and part of its payload while it is in use, so an in-use
//! chunk costs one word. `size` counts from `p` to the next chunk and is a
//! multiple of [`ALIGN`]; its low bits are [`PINUSE`] (the previous chunk is
//! in use), [`CINUSE`] (this chunk is in use) and [`FENCE`] (a segment
//! record, never a user chunk).
//!
//! A free chunk keeps its list links in its payload: `fd` and `bk` at `2W`
//! and `3W`; a tree-binned free chunk also `child[0]`, `child[1]`, `parent`
//! and its bin index at `4W..8W`.

use core::ptr;

/// The machine word: one size word or one link.
pub(crate) const W: usize = size_of::<usize>();

/// Chunk addresses, chunk sizes and payloads are multiples of this.
pub(crate) const ALIGN: usize = 8;

/// `ALIGN - 1`.
pub(crate) const ALIGN_MASK: usize = ALIGN - 1;

/// Head bit: the previous chunk is in use.
pub(crate) const PINUSE: usize = 1;

/// Head bit: this chunk is in use.
pub(crate) const CINUSE: usize = 2;

/// Head bit: this chunk is a segment record (always in use, never freed).
pub(crate) const FENCE: usize = 4;

/// All flag bits of a head word.
pub(crate) const FLAGS: usize = PINUSE | CINUSE | FENCE;

/// From the chunk address to its payload.
pub(crate) const MEM_OFFSET: usize = 2 * W;

/// Bytes of an in-use chunk that are not payload: its size word.
pub(crate) const OVERHEAD: usize = W;

/// The smallest chunk: `prev_foot`, head and the two list links.
pub(crate) const MIN_CHUNK: usize = (4 * W + ALIGN_MASK) & !ALIGN_MASK;

/// The smallest chunk that can hold the tree links.
pub(crate) const MIN_TREE_CHUNK: usize = 8 * W;

/// A segment record: `prev_foot`, head, then base, end and the next record.
pub(crate) const REC_SIZE: usize = (5 * W + ALIGN_MASK) & !ALIGN_MASK;

/// Bytes kept free at the end of the top segment so that a record fits
/// there when a new segment starts (and the top's head always fits).
pub(crate) const TOP_FOOT: usize = REC_SIZE;

const HEAD: usize = W;
/// Byte offset of a free chunk's forward link.
pub(crate) const FD: usize = 2 * W;
/// Byte offset of a free chunk's backward link.
pub(crate) const BK: usize = 3 * W;
/// Byte offset of a tree chunk's first child link (the second follows).
pub(crate) const CHILD: usize = 4 * W;
/// Byte offset of a tree chunk's parent link.
pub(crate) const PARENT: usize = 6 * W;
const INDEX: usize = 7 * W;

const _: () = assert!(W == 4 || W == 8);
const _: () = assert!(size_of::<*mut u8>() == W && align_of::<usize>() <= ALIGN);
const _: () = assert!(ALIGN.is_power_of_two() && ALIGN > FLAGS);
const _: () = assert!(MEM_OFFSET.is_multiple_of(ALIGN));
const _: () = assert!(MIN_CHUNK.is_multiple_of(ALIGN) && MIN_CHUNK >= 4 * W);
const _: () = assert!(REC_SIZE.is_multiple_of(ALIGN) && REC_SIZE >= 5 * W);
const _: () = assert!(TOP_FOOT >= MEM_OFFSET);
const _: () = assert!(MIN_CHUNK.is_power_of_two());
const _: () = assert!(MIN_TREE_CHUNK <= crate::bins::MIN_LARGE);

/// The word at byte offset `off` of chunk `p`.
///
/// # Safety
///
/// `p + off` is an aligned word inside a segment (I1).
#[inline(always)]
unsafe fn word_at(p: *mut u8, off: usize) -> *mut usize {
    // SAFETY: the caller's contract: the word lies in the same segment.
    unsafe { p.byte_add(off).cast::<usize>() }
}

/// The link at byte offset `off` of chunk `p`.
///
/// # Safety
///
/// As for [`word_at`].
#[cfg(not(feature = "hardened"))]
#[inline(always)]
unsafe fn link_at(p: *mut u8, off: usize) -> *mut *mut u8 {
    // SAFETY: the caller's contract: the word lies in the same segment.
    unsafe { p.byte_add(off).cast::<*mut u8>() }
}

macro_rules! word_field {
    ($get:ident, $set:ident, $off:expr, $what:literal) => {
        #[doc = concat!("Reads ", $what, " of chunk `p`.")]
        ///
        /// # Safety
        ///
        /// `p` is a chunk of a segment whose word lies in that segment (I1).
        #[inline(always)]
        pub(crate) unsafe fn $get(p: *mut u8) -> usize {
            // SAFETY: the caller's contract (I1).
            unsafe { word_at(p, $off).read() }
        }

        #[doc = concat!("Writes ", $what, " of chunk `p`.")]
        ///
        /// # Safety
        ///
        /// As for the reader; the heap owns the word.
        #[inline(always)]
        pub(crate) unsafe fn $set(p: *mut u8, v: usize) {
            // SAFETY: the caller's contract (I1).
            unsafe { word_at(p, $off).write(v) }
        }
    };
}

word_field!(
    prev_foot,
    set_prev_foot,
    0,
    "the previous chunk's boundary tag"
);
word_field!(head, set_head, HEAD, "the head word");
word_field!(tindex, set_tindex, INDEX, "the tree bin index");
/// Reads the link stored at byte `off` of free chunk `p`, as stored.
///
/// # Safety
///
/// `p` is a free chunk large enough for the link (I4, I6).
#[cfg(not(feature = "hardened"))]
#[inline(always)]
pub(crate) unsafe fn load_link(p: *mut u8, off: usize) -> *mut u8 {
    // SAFETY: the caller's contract.
    unsafe { link_at(p, off).read() }
}

/// Writes the link at byte `off` of free chunk `p`, as given.
///
/// # Safety
///
/// As for [`load_link`]; the heap owns the chunk.
#[cfg(not(feature = "hardened"))]
#[inline(always)]
pub(crate) unsafe fn store_link(p: *mut u8, off: usize, v: *mut u8) {
    // SAFETY: the caller's contract.
    unsafe { link_at(p, off).write(v) }
}

/// The mask of the link word at address `slot` under the heap secret
/// (safe-linking, I12): the slot's page number moved up three bits, so the
/// low bits are the secret's, which are never all zero.
#[cfg(feature = "hardened")]
#[inline(always)]
pub(crate) const fn link_mask(slot: usize, secret: usize) -> usize {
    ((slot >> 12) << 3) ^ secret
}

/// Reads and unmasks the link at byte `off` of free chunk `p` (I12). The
/// result carries `p`'s provenance (the segment's) and is not validated.
///
/// # Safety
///
/// `p` is a free chunk large enough for the link (I4, I6).
#[cfg(feature = "hardened")]
#[inline(always)]
pub(crate) unsafe fn load_link(p: *mut u8, off: usize, secret: usize) -> *mut u8 {
    // SAFETY: the caller's contract.
    let w = unsafe { word_at(p, off) };
    // SAFETY: as above: the word lies in the chunk.
    let v = unsafe { w.read() };
    p.with_addr(v ^ link_mask(w.addr(), secret))
}

/// Masks and writes the link at byte `off` of free chunk `p` (I12).
///
/// # Safety
///
/// As for [`load_link`]; the heap owns the chunk.
#[cfg(feature = "hardened")]
#[inline(always)]
pub(crate) unsafe fn store_link(p: *mut u8, off: usize, v: *mut u8, secret: usize) {
    // SAFETY: the caller's contract.
    let w = unsafe { word_at(p, off) };
    // SAFETY: as above.
    unsafe { w.write(v.addr() ^ link_mask(w.addr(), secret)) }
}

/// The chunk `off` bytes after `p`.
///
/// # Safety
///
/// `p + off` lies in the same segment as `p` (I1).
#[inline(always)]
pub(crate) unsafe fn plus(p: *mut u8, off: usize) -> *mut u8 {
    // SAFETY: the caller's contract (I1).
    unsafe { p.byte_add(off) }
}

/// The chunk `off` bytes before `p`.
///
/// # Safety
///
/// `p - off` lies in the same segment as `p` (I1).
#[inline(always)]
pub(crate) unsafe fn minus(p: *mut u8, off: usize) -> *mut u8 {
    // SAFETY: the caller's contract (I1).
    unsafe { p.byte_sub(off) }
}

/// The size of the chunk whose head word is `h`.
#[inline(always)]
pub(crate) const fn size_of_head(h: usize) -> usize {
    h & !FLAGS
}

/// The chunk size for a request of `n` bytes (`n <= MAX_REQUEST`, so this
/// cannot overflow).
#[inline(always)]
pub(crate) const fn pad_request(n: usize) -> usize {
    let s = (n + OVERHEAD + ALIGN_MASK) & !ALIGN_MASK;
    if s < MIN_CHUNK { MIN_CHUNK } else { s }
}

/// Whether a chunk of `size` bytes (a multiple of `ALIGN`) is one the heap
/// hands out for a request of `n` bytes: `pad_request(n)` or up to
/// `MIN_CHUNK - ALIGN` more (a rest too small to split off). Equal to
/// `size - pad_request(n) < MIN_CHUNK` for any `n <= isize::MAX` (a
/// `Layout` size), in fewer operations: the multiples of `ALIGN` in
/// `[n' + OVERHEAD, n' + OVERHEAD + MIN_CHUNK)`, with `n'` raised to the
/// payload of a `MIN_CHUNK` chunk, are exactly those from `pad_request(n)`
/// on that are below `pad_request(n) + MIN_CHUNK`.
#[inline(always)]
pub(crate) const fn fits_chunk(size: usize, n: usize) -> bool {
    let n = if n < MIN_CHUNK - OVERHEAD {
        MIN_CHUNK - OVERHEAD
    } else {
        n
    };
    size.wrapping_sub(n + OVERHEAD) < MIN_CHUNK
}

/// The largest request served; anything above returns `None`. Leaves room
/// for the alignment padding and the segment overheads without overflow.
pub(crate) const MAX_REQUEST: usize = isize::MAX as usize - 4 * linmem_memory::MAX_ALIGN;

/// The byte freed memory is filled with in a hardened build (I13): `0xDD`,
/// the "dead memory" fill of other debug heaps.
#[cfg(feature = "hardened")]
pub(crate) const POISON: u8 = 0xDD;

/// How many poisoned bytes of a reused free chunk an allocation checks.
#[cfg(feature = "hardened")]
pub(crate) const POISON_CHECK: usize = 256;

/// Where the poisoned part of a free chunk of `size` bytes starts: after
/// its head and the links its bin stores (I13).
#[cfg(feature = "hardened")]
#[inline(always)]
pub(crate) const fn poison_from(size: usize) -> usize {
    if crate::bins::is_small(size) {
        MIN_CHUNK
    } else {
        MIN_TREE_CHUNK
    }
}

/// A null link.
#[inline(always)]
pub(crate) const fn null() -> *mut u8 {
    ptr::null_mut()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_request_rounds_up_to_align_with_one_word_overhead() {
        assert_eq!(pad_request(0), MIN_CHUNK);
        assert_eq!(pad_request(1), MIN_CHUNK);
        assert_eq!(pad_request(MIN_CHUNK - W), MIN_CHUNK);
        assert_eq!(pad_request(MIN_CHUNK - W + 1), MIN_CHUNK + ALIGN);
        assert_eq!(pad_request(100), (100 + W + 7) & !7);
        for n in 0..2000 {
            let s = pad_request(n);
            assert!(s.is_multiple_of(ALIGN) && s >= MIN_CHUNK);
            assert!(s - OVERHEAD >= n, "payload too small for {n}");
            assert!(s < pad_request(0) + n + ALIGN + OVERHEAD);
        }
    }

    #[test]
    fn pad_request_of_max_request_does_not_overflow() {
        let s = pad_request(MAX_REQUEST);
        assert!(s >= MAX_REQUEST && s.checked_add(2 * linmem_memory::MAX_ALIGN).is_some());
    }

    #[test]
    fn fits_chunk_accepts_exactly_the_sizes_handed_out_for_a_request() {
        let top = isize::MAX as usize;
        let step = if cfg!(miri) { 7 } else { 1 };
        let ns = (0..600)
            .chain(MAX_REQUEST - 600..=MAX_REQUEST)
            .chain(top - 600..=top);
        for n in ns.step_by(step) {
            let lo = n & !ALIGN_MASK;
            for size in (lo..lo + 700).step_by(ALIGN) {
                let expect = size.wrapping_sub(pad_request(n)) < MIN_CHUNK;
                assert_eq!(fits_chunk(size, n), expect, "size {size}, n {n}");
            }
        }
        assert!(!fits_chunk(usize::MAX & !ALIGN_MASK, 0));
        assert!(!fits_chunk(0, 0));
    }

    #[test]
    fn head_flags_and_size_are_separable() {
        let h = 1024 | PINUSE | CINUSE;
        assert_eq!(size_of_head(h), 1024);
        assert_eq!(size_of_head(h | FENCE), 1024);
    }
}
