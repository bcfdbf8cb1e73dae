//! Block headers (the HMU word), pool geometry, and the two ways the heap
//! reaches its pool: a raw base pointer or a bounds-checked byte slice.
//!
//! Every access to pool memory goes through [`Mem::rd`] / [`MemMut::wr`],
//! which take a pool-relative `u32` offset and refuse anything outside the
//! accessor's window (I10). The heap code never holds an absolute pointer
//! into the pool, so moving the pool only changes the accessor's base.

use core::ptr::NonNull;

/// Bytes of the block header.
pub(crate) const HDR: u32 = 4;
/// Block sizes and payload addresses are multiples of this.
pub(crate) const GRAIN: u32 = 8;
/// The smallest block: header, two links, footer.
pub(crate) const MIN_BLOCK: u32 = 16;
/// The largest pool end offset: 4 GiB less 64 KiB, so that a block offset
/// plus any field offset never overflows a `u32`.
pub(crate) const MAX_END: u32 = 0xffff_0000;

/// Usage bits: a free block (in a free list or the size tree).
pub(crate) const FREE: u32 = 0;
/// Usage bits: a live block (or the end sentinel, size 0).
pub(crate) const USED: u32 = 1;
/// Usage bits: memory between two non-contiguous regions; not ours inside.
pub(crate) const GAP: u32 = 2;
/// Usage bits value 3 is reserved (room for an aligned-block marker).
const USE_MASK: u32 = 0b11;
/// The previous block is not free (used, gap, or there is none).
const PREV_USED: u32 = 0b100;
/// The size in bytes, a multiple of 8: the size in 8-byte units, bits 3..31.
const SIZE_MASK: u32 = !(GRAIN - 1);

const _: () = assert!(HDR + GRAIN == 12 && MIN_BLOCK == 2 * GRAIN);
const _: () = assert!(USE_MASK & PREV_USED == 0 && (USE_MASK | PREV_USED) & SIZE_MASK == 0);
const _: () = assert!(GAP <= USE_MASK && USED <= USE_MASK);
const _: () = assert!(MIN_BLOCK.is_multiple_of(GRAIN) && MAX_END.is_multiple_of(GRAIN));

/// One block header (WAMR's HMU): usage, previous-in-use, size.
///
/// ```text
///  31                              3   2   1 0
/// +---------------------------------+----+-----+
/// | size / 8                        | P  | use |
/// +---------------------------------+----+-----+
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hmu(pub(crate) u32);

impl Hmu {
    /// A header of `usage`, `size` bytes (a multiple of 8), previous used or not.
    #[inline(always)]
    pub(crate) const fn new(usage: u32, size: u32, prev_used: bool) -> Self {
        let p = if prev_used { PREV_USED } else { 0 };
        Self((size & SIZE_MASK) | p | (usage & USE_MASK))
    }

    /// The usage bits: [`FREE`], [`USED`], [`GAP`] or the reserved 3.
    #[inline(always)]
    pub(crate) const fn usage(self) -> u32 {
        self.0 & USE_MASK
    }

    /// The block size in bytes, header included.
    #[inline(always)]
    pub(crate) const fn size(self) -> u32 {
        self.0 & SIZE_MASK
    }

    /// Whether the previous block is not free.
    #[inline(always)]
    pub(crate) const fn prev_used(self) -> bool {
        self.0 & PREV_USED != 0
    }

    /// The same header with the previous-in-use bit set to `on`.
    #[inline(always)]
    pub(crate) const fn with_prev(self, on: bool) -> Self {
        if on {
            Self(self.0 | PREV_USED)
        } else {
            Self(self.0 & !PREV_USED)
        }
    }
}

/// What went wrong inside the heap code; the public API maps it to
/// [`HeapError`](linmem_memory::HeapError) with an address. One byte, so
/// `R<()>` and `R<bool>` come back in a register, not through memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Fault {
    /// Damaged metadata (no offset is carried: every check shares one
    /// failure path, which keeps the checked code small).
    Corrupt,
    /// The payload offset names a block that is already free.
    #[cfg_attr(feature = "bench-unchecked", allow(dead_code))]
    DoubleFree,
    /// The payload offset is not a live block of this heap.
    Foreign,
    /// The heap failed closed earlier.
    Closed,
}

/// Results inside the heap code.
pub(crate) type R<T> = Result<T, Fault>;

const _: () = assert!(size_of::<R<()>>() == 1 && size_of::<R<bool>>() <= 4);

/// Read access to pool memory by pool-relative offsets.
pub(crate) trait Mem {
    /// The 32-bit word at `off`; `Err` when `[off, off + 4)` is outside the
    /// accessor's window.
    fn rd(&self, off: u32) -> R<u32>;

    /// An address-derived word for the heap secret (`hardened`).
    #[cfg(feature = "hardened")]
    fn seed(&self) -> usize;
}

/// Write access to pool memory by pool-relative offsets.
pub(crate) trait MemMut: Mem {
    /// A second accessor over the same window (see [`MemMut::re`]).
    type Re<'a>: MemMut
    where
        Self: 'a;

    /// Stores `v` at `off`; `Err` when outside the window.
    fn wr(&mut self, off: u32, v: u32) -> R<()>;

    /// A copy of this accessor, borrowing it, to hand to out-of-line code:
    /// the original's address then never escapes, so its fields stay in
    /// registers instead of being reloaded after every store.
    fn re(&mut self) -> Self::Re<'_>;
}

/// The window `[lo, limit)` as `(lo, count)`: a word at `off` lies inside
/// it exactly when `off - lo < count` (wrapping), one compare per access.
#[inline(always)]
fn window(lo: u32, limit: u32) -> (u32, u32) {
    (lo, limit.saturating_sub(lo).saturating_sub(HDR - 1))
}

/// Whether `[off, off + 4)` lies inside the window `(lo, count)`.
#[inline(always)]
fn in_window(off: u32, (lo, count): (u32, u32)) -> bool {
    off.wrapping_sub(lo) < count
}

/// The pool seen through a raw base pointer (the pointer-based heaps).
pub(crate) struct RawMem {
    base: NonNull<u8>,
    win: (u32, u32),
}

impl RawMem {
    /// An accessor for offsets in `[lo, limit)` from `base`.
    ///
    /// # Safety
    ///
    /// I10: `[base + lo, base + limit)` is valid for reads and writes (part
    /// of one linear memory) for as long as the accessor is used, and no
    /// reference to any of those bytes is live meanwhile.
    #[inline(always)]
    pub(crate) unsafe fn new(base: NonNull<u8>, lo: u32, limit: u32) -> Self {
        Self {
            base,
            win: window(lo, limit),
        }
    }
}

impl Mem for RawMem {
    #[cfg(feature = "hardened")]
    fn seed(&self) -> usize {
        self.base.as_ptr().addr()
    }

    #[inline(always)]
    fn rd(&self, off: u32) -> R<u32> {
        if !in_window(off, self.win) {
            return Err(Fault::Corrupt);
        }
        // SAFETY: I10: `[off, off + 4)` was just checked to lie inside the
        // window the constructor's caller vouched for.
        Ok(unsafe {
            self.base
                .as_ptr()
                .add(off as usize)
                .cast::<u32>()
                .read_unaligned()
        })
    }
}

impl MemMut for RawMem {
    type Re<'a> = RawMem;

    #[inline(always)]
    fn re(&mut self) -> RawMem {
        // The same window over the same memory (I10); the borrow of `self`
        // keeps the original unused while the copy lives.
        Self {
            base: self.base,
            win: self.win,
        }
    }

    #[inline(always)]
    fn wr(&mut self, off: u32, v: u32) -> R<()> {
        if !in_window(off, self.win) {
            return Err(Fault::Corrupt);
        }
        // SAFETY: I10: as in `rd`, the four bytes lie inside the window.
        unsafe {
            self.base
                .as_ptr()
                .add(off as usize)
                .cast::<u32>()
                .write_unaligned(v)
        };
        Ok(())
    }
}

/// The pool seen through a byte slice (the guest API): every access is
/// bounds-checked twice, against the window and against the slice.
pub(crate) struct SliceMem<B> {
    mem: B,
    base: usize,
    win: (u32, u32),
}

impl<B: AsRef<[u8]>> SliceMem<B> {
    /// Offsets in `[0, limit)` map to `mem[base..]`.
    pub(crate) fn new(mem: B, base: usize, limit: u32) -> Self {
        Self {
            mem,
            base,
            win: window(0, limit),
        }
    }

    #[inline(always)]
    fn index(&self, off: u32) -> R<usize> {
        if !in_window(off, self.win) {
            return Err(Fault::Corrupt);
        }
        self.base.checked_add(off as usize).ok_or(Fault::Corrupt)
    }
}

impl<B: AsRef<[u8]>> Mem for SliceMem<B> {
    #[cfg(feature = "hardened")]
    fn seed(&self) -> usize {
        self.mem.as_ref().as_ptr().addr() ^ self.base
    }

    #[inline(always)]
    fn rd(&self, off: u32) -> R<u32> {
        let i = self.index(off)?;
        let bytes = self
            .mem
            .as_ref()
            .get(i..i + HDR as usize)
            .ok_or(Fault::Corrupt)?;
        let mut w = [0u8; 4];
        w.copy_from_slice(bytes);
        Ok(u32::from_le_bytes(w))
    }
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> MemMut for SliceMem<B> {
    type Re<'a>
        = SliceMem<&'a mut [u8]>
    where
        B: 'a;

    #[inline(always)]
    fn re(&mut self) -> SliceMem<&mut [u8]> {
        SliceMem {
            mem: self.mem.as_mut(),
            base: self.base,
            win: self.win,
        }
    }

    #[inline(always)]
    fn wr(&mut self, off: u32, v: u32) -> R<()> {
        let i = self.index(off)?;
        let bytes = self
            .mem
            .as_mut()
            .get_mut(i..i + HDR as usize)
            .ok_or(Fault::Corrupt)?;
        bytes.copy_from_slice(&v.to_le_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_encodes_usage_prev_bit_and_size() {
        let h = Hmu::new(USED, 248, true);
        assert_eq!(h.usage(), USED);
        assert_eq!(h.size(), 248);
        assert!(h.prev_used());
        let h = h.with_prev(false);
        assert!(!h.prev_used());
        assert_eq!(h.size(), 248);
        assert_eq!(h.usage(), USED);
        let g = Hmu::new(GAP, MAX_END, false);
        assert_eq!(g.usage(), GAP);
        assert_eq!(g.size(), MAX_END);
        assert_eq!(Hmu::new(FREE, 16, false).0, 16);
    }

    #[test]
    fn header_size_drops_low_bits() {
        assert_eq!(Hmu::new(FREE, 23, false).size(), 16);
        assert_eq!(Hmu(0xffff_ffff).size(), 0xffff_fff8);
        assert_eq!(Hmu(0xffff_ffff).usage(), 3);
    }

    #[test]
    fn slice_accessor_refuses_out_of_window_and_out_of_slice() {
        let mut buf = [0u8; 32];
        let mut m = SliceMem::new(&mut buf[..], 8, 64);
        assert!(m.wr(0, 7).is_ok());
        assert_eq!(m.rd(0), Ok(7));
        assert_eq!(m.rd(20), Ok(0));
        assert_eq!(m.rd(21), Err(Fault::Corrupt));
        assert_eq!(m.rd(64), Err(Fault::Corrupt));
        assert_eq!(m.rd(u32::MAX), Err(Fault::Corrupt));
        assert_eq!(m.wr(30, 1), Err(Fault::Corrupt));
    }
}
