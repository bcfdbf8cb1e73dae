//! Region encoding: a size word at both ends, the used flag in its low bit.
//!
//! ```text
//! used region:  [ size|1 ][ payload ................... ][ size|1 ]
//! free region:  [ size|0 ][ prev ][ next ][ (unused) ... ][ size|0 ]
//!               ^ r        ^ r + W (payload, 8-aligned)      ^ r + size - W
//! ```
//!
//! `W` is the machine word (4 bytes on wasm32). Region starts sit at
//! `GRAIN - W` modulo `GRAIN`, so payloads are `GRAIN`-aligned; sizes are
//! multiples of `GRAIN` and count both size words.

use core::ptr;

/// The machine word: one size word or one free-list link.
pub(crate) const W: usize = size_of::<usize>();

/// The allocation granule: region sizes are multiples of it and payloads are
/// aligned to it.
pub(crate) const GRAIN: usize = 8;

/// The low bit of a size word: set in a used region (and in sentinels).
pub(crate) const USED: usize = 1;

/// Bytes of a region that are not payload: the two size words.
pub(crate) const OVERHEAD: usize = 2 * W;

/// The smallest region: two size words and the two free-list links.
pub(crate) const MIN_REGION: usize = 4 * W;

/// The start sentinel of a root: a used region holding the address of the
/// previous (older) root and of this root's end sentinel.
pub(crate) const ROOT_HDR: usize = 4 * W;

/// Bit 1 of a used region's *header* (never its footer): the region is a
/// freed block parked in a quick list, not yet merged with its neighbours.
pub(crate) const CACHED: usize = 2;

/// The size word of an end sentinel: a used region of size zero.
pub(crate) const END_SENTINEL: usize = USED;

/// Where region starts sit: `addr % GRAIN == PHASE`, so `addr + W` is
/// `GRAIN`-aligned.
pub(crate) const PHASE: usize = (GRAIN - W % GRAIN) % GRAIN;

const _: () = assert!(GRAIN.is_power_of_two() && GRAIN >= W && GRAIN > USED);
const _: () = assert!(CACHED != USED && CACHED < GRAIN);
const _: () = assert!(MIN_REGION.is_multiple_of(GRAIN) && ROOT_HDR.is_multiple_of(GRAIN));
const _: () = assert!(MIN_REGION >= OVERHEAD + 2 * size_of::<*mut u8>());
const _: () = assert!((PHASE + W).is_multiple_of(GRAIN));
const _: () = assert!(size_of::<*mut u8>() == W && align_of::<usize>() <= W);

/// Reads the size word at `p`.
///
/// # Safety
///
/// `p` is a word-aligned size word inside the heap (I1, I2).
#[inline(always)]
pub(crate) unsafe fn word(p: *mut u8) -> usize {
    // SAFETY: the caller's contract: `p` is a readable, aligned size word.
    unsafe { p.cast::<usize>().read() }
}

/// Writes the size word at `p`.
///
/// # Safety
///
/// `p` is a word-aligned word inside the heap that the caller owns.
#[inline(always)]
pub(crate) unsafe fn set_word(p: *mut u8, v: usize) {
    // SAFETY: the caller's contract: `p` is a writable, aligned word.
    unsafe { p.cast::<usize>().write(v) }
}

/// Writes both size words of the region `[r, r + size)`.
///
/// # Safety
///
/// `[r, r + size)` lies inside one root, `r` is a region start (`PHASE`) and
/// `size >= OVERHEAD`.
#[inline(always)]
pub(crate) unsafe fn set_region(r: *mut u8, size: usize, tag: usize) {
    // SAFETY: the caller's contract: the header lies inside the region.
    unsafe { set_word(r, size | tag) };
    // SAFETY: the caller's contract: the footer is the region's last word.
    unsafe { set_word(r.add(size - W), size | tag) };
}

/// The `i`-th pointer-sized word of the payload of `r`.
///
/// # Safety
///
/// `r` is a region of at least `MIN_REGION` bytes (or a start sentinel) and
/// `i` is 0 or 1.
#[inline(always)]
pub(crate) unsafe fn link_at(r: *mut u8, i: usize) -> *mut *mut u8 {
    // SAFETY: the caller's contract: the word lies inside the region.
    unsafe { r.add(W + i * W).cast::<*mut u8>() }
}

/// Reads link `i` (0 = prev, 1 = next) of the free region `r`.
///
/// # Safety
///
/// As for [`link_at`]; the word holds a pointer written by [`set_link`].
#[inline(always)]
pub(crate) unsafe fn get_link(r: *mut u8, i: usize) -> *mut u8 {
    // SAFETY: the caller's contract (I4: free regions hold their links).
    unsafe { link_at(r, i).read() }
}

/// Writes link `i` (0 = prev, 1 = next) of the free region `r`.
///
/// # Safety
///
/// As for [`link_at`]; the caller owns the region.
#[inline(always)]
pub(crate) unsafe fn set_link(r: *mut u8, i: usize, v: *mut u8) {
    // SAFETY: the caller's contract.
    unsafe { link_at(r, i).write(v) }
}

/// The region size for a payload of `size` bytes (`size <= isize::MAX`, so
/// this cannot overflow). One shared copy for `malloc` and `realloc` (code
/// size).
#[inline(never)]
pub(crate) const fn region_for(size: usize) -> usize {
    let r = (size + OVERHEAD + GRAIN - 1) & !(GRAIN - 1);
    if r < MIN_REGION { MIN_REGION } else { r }
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
    fn region_for_rounds_to_grain_and_minimum() {
        assert_eq!(region_for(0), MIN_REGION);
        assert_eq!(region_for(1), MIN_REGION);
        assert_eq!(region_for(MIN_REGION - OVERHEAD), MIN_REGION);
        assert_eq!(region_for(MIN_REGION - OVERHEAD + 1), MIN_REGION + GRAIN);
        assert_eq!(region_for(1000) % GRAIN, 0);
        assert!(region_for(1000) >= 1000 + OVERHEAD);
        assert!(region_for(isize::MAX as usize) > isize::MAX as usize);
    }

    #[test]
    fn size_words_and_links_round_trip() {
        let mut buf = [0u64; 8];
        let base = buf.as_mut_ptr().cast::<u8>();
        // SAFETY: a region of 64 bytes inside `buf`, word-aligned.
        let r = unsafe { base.add(PHASE) };
        // SAFETY: r..r+32 lies in `buf`.
        unsafe {
            set_region(r, MIN_REGION, USED);
            assert_eq!(word(r), MIN_REGION | USED);
            assert_eq!(word(r.add(MIN_REGION - W)), MIN_REGION | USED);
            set_link(r, 0, base);
            set_link(r, 1, null());
            assert_eq!(get_link(r, 0), base);
            assert!(get_link(r, 1).is_null());
            assert_eq!((r.add(W) as usize) % GRAIN, 0);
        }
    }
}
