//! The host-side runtime API: an ems heap living inside a guest's linear
//! memory, managed purely by `u32` guest addresses.
//!
//! The guest memory is passed as a byte slice on every call, so this works
//! whichever engine owns the memory, and the slice may move or grow between
//! calls. The bookkeeping lives in the [`GuestHeap`] value on the host side;
//! only block headers, links and footers live in guest memory. All of it is
//! safe Rust: every access is bounds-checked against the slice, and since
//! guest code may write anything into its memory, every offset read from the
//! pool is range-checked before use. Damage makes the heap fail closed
//! ([`GuestHeap::is_corrupted`]) instead of panicking or touching memory
//! outside the pool.
//!
//! ```
//! use linmem_ems::guest::GuestHeap;
//!
//! let mut mem = vec![0u8; 64 * 1024]; // the guest's linear memory
//! let mut heap = GuestHeap::init(&mut mem, 1024, 32 * 1024).unwrap();
//! let a = heap.malloc(&mut mem, 100).unwrap(); // a guest address
//! mem[a as usize..a as usize + 5].copy_from_slice(b"hello");
//! let a = heap.realloc(&mut mem, a, 400).unwrap();
//! assert_eq!(&mem[a as usize..a as usize + 5], b"hello");
//! heap.free(&mut mem, a).unwrap();
//! assert!(heap.verify(&mem).is_ok());
//! ```

use linmem_memory::{HeapError, HeapStats, Violation};

use crate::EmsStats;
use crate::block::{GRAIN, MAX_END, SliceMem};
use crate::heap::{Core, PoolError, need_for, to_error};

/// An ems heap inside a guest's linear memory, addressed by guest offsets.
#[derive(Clone, Debug)]
pub struct GuestHeap {
    /// Guest address of pool offset 0 (8-aligned).
    pool_offset: u32,
    core: Core,
}

impl GuestHeap {
    /// Lays out a heap over guest memory `[pool_offset, pool_offset + pool_len)`.
    pub fn init(mem: &mut [u8], pool_offset: u32, pool_len: u32) -> Result<Self, PoolError> {
        if !pool_offset.is_multiple_of(GRAIN) {
            return Err(PoolError::Misaligned);
        }
        let end_abs = pool_offset as usize + pool_len as usize;
        if end_abs > mem.len() || pool_offset.checked_add(pool_len).is_none() {
            return Err(PoolError::OutOfBounds);
        }
        let end = pool_len.min(MAX_END) & !(GRAIN - 1);
        let mut core = Core::empty();
        let mut m = SliceMem::new(mem, pool_offset as usize, end);
        core.init(&mut m, 0, end).ok_or(PoolError::TooSmall)?;
        Ok(Self { pool_offset, core })
    }

    /// The guest address where the pool starts.
    pub fn pool_offset(&self) -> u32 {
        self.pool_offset
    }

    /// The pool length in bytes.
    pub fn pool_len(&self) -> u32 {
        self.core.end
    }

    /// Whether a check failed: the heap then refuses every operation.
    pub fn is_corrupted(&self) -> bool {
        self.core.is_corrupted()
    }

    /// Whether `mem` covers the whole pool (a shorter slice is refused
    /// without touching the heap).
    fn covers(&self, mem: &[u8]) -> bool {
        self.pool_offset as usize + self.core.end as usize <= mem.len()
    }

    fn mem<'a>(&self, mem: &'a mut [u8]) -> SliceMem<&'a mut [u8]> {
        SliceMem::new(mem, self.pool_offset as usize, self.core.end)
    }

    /// Allocates `size` bytes (8-aligned); the guest address, or `None`
    /// when out of pool memory, failed closed, or `mem` is too short.
    pub fn malloc(&mut self, mem: &mut [u8], size: u32) -> Option<u32> {
        self.memalign(mem, size, GRAIN)
    }

    /// Allocates `size` zeroed bytes.
    pub fn calloc(&mut self, mem: &mut [u8], size: u32) -> Option<u32> {
        let a = self.malloc(mem, size)?;
        mem.get_mut(a as usize..a as usize + size as usize)?.fill(0);
        Some(a)
    }

    /// Allocates `size` bytes at a guest address that is a multiple of
    /// `align` (a power of two).
    pub fn memalign(&mut self, mem: &mut [u8], size: u32, align: u32) -> Option<u32> {
        if !align.is_power_of_two() || !self.covers(mem) {
            return None;
        }
        let need = need_for(size as usize)?;
        let po = self.pool_offset;
        let mut m = self.mem(mem);
        let p = self
            .core
            .alloc(&mut m, po as usize, need, align as usize)
            .ok()??;
        Some(po + p)
    }

    fn off(&self, addr: u32) -> u32 {
        addr.checked_sub(self.pool_offset).unwrap_or(u32::MAX)
    }

    /// Frees the block at guest address `addr` (0 is a no-op). A double
    /// free, a foreign address or a damaged header is an error and makes the
    /// heap fail closed.
    pub fn free(&mut self, mem: &mut [u8], addr: u32) -> Result<(), HeapError> {
        if self.core.is_corrupted() {
            return Err(HeapError::FailedClosed);
        }
        if addr == 0 {
            return Ok(());
        }
        if !self.covers(mem) {
            return Err(HeapError::ForeignPointer {
                addr: addr as usize,
            });
        }
        let p = self.off(addr);
        let po = self.pool_offset as usize;
        let mut m = self.mem(mem);
        // Errors name the guest address itself, also when it lies below the
        // pool (where `p` is the out-of-range marker, not an offset).
        self.core
            .free(&mut m, p)
            .map_err(|f| match to_error(f, po, p) {
                HeapError::DoubleFree { .. } => HeapError::DoubleFree {
                    addr: addr as usize,
                },
                HeapError::ForeignPointer { .. } => HeapError::ForeignPointer {
                    addr: addr as usize,
                },
                e => e,
            })
    }

    /// Resizes the block at `addr` to `size` bytes, in place when it can;
    /// `addr == 0` allocates. `None` on failure (the old block stays live
    /// unless the heap failed closed).
    pub fn realloc(&mut self, mem: &mut [u8], addr: u32, size: u32) -> Option<u32> {
        if addr == 0 {
            return self.malloc(mem, size);
        }
        if !self.covers(mem) {
            return None;
        }
        let need = need_for(size as usize)?;
        let p = self.off(addr);
        let mut m = self.mem(mem);
        if self.core.resize_in_place(&mut m, p, need).ok()? {
            return Some(addr);
        }
        let old = self.core.usable(&m, p).ok()?;
        let new = self.malloc(mem, size)?;
        let n = old.min(size) as usize;
        let (src, dst) = (addr as usize, new as usize);
        if src.checked_add(n)? > mem.len() || dst.checked_add(n)? > mem.len() {
            return None;
        }
        mem.copy_within(src..src + n, dst);
        self.free(mem, addr).ok()?;
        Some(new)
    }

    /// The usable bytes of the block at `addr`.
    pub fn usable_size(&mut self, mem: &mut [u8], addr: u32) -> Option<u32> {
        if !self.covers(mem) {
            return None;
        }
        let p = self.off(addr);
        let m = self.mem(mem);
        self.core.usable(&m, p).ok()
    }

    /// Grows the pool to `new_len` bytes (the guest memory grew); the new
    /// space merges with a free tail block. Growth by less than 16 bytes is
    /// ignored.
    pub fn extend(&mut self, mem: &mut [u8], new_len: u32) -> Result<(), PoolError> {
        let from = self.pool_offset.saturating_add(self.core.end);
        self.extend_from(mem, from, new_len)
    }

    /// Grows the pool to `new_len` bytes of which only those from guest
    /// address `from` on are the heap's: the bytes between the old pool end
    /// and `from` (memory someone else grew, such as the guest itself)
    /// become one gap block that the heap never reads, writes, frees or
    /// merges (I9). With `from` at or below the pool end this is
    /// [`extend`](Self::extend). Growth too small for a block after the gap
    /// is ignored.
    pub fn extend_from(
        &mut self,
        mem: &mut [u8],
        from: u32,
        new_len: u32,
    ) -> Result<(), PoolError> {
        if self.core.is_corrupted() {
            return Err(PoolError::FailedClosed);
        }
        let new_end = new_len.min(MAX_END) & !(GRAIN - 1);
        if new_end <= self.core.end {
            return Ok(());
        }
        if self.pool_offset as usize + new_end as usize > mem.len()
            || self.pool_offset.checked_add(new_end).is_none()
        {
            return Err(PoolError::OutOfBounds);
        }
        // Pool-relative start of the new space; below the pool end it is
        // contiguous growth.
        let region = from.saturating_sub(self.pool_offset).max(self.core.end);
        let mut m = SliceMem::new(mem, self.pool_offset as usize, new_end);
        match self.core.extend(&mut m, region, new_end) {
            Ok(_) => Ok(()),
            Err(_) => Err(PoolError::FailedClosed),
        }
    }

    /// The running summary (footprint: the pool length).
    pub fn heap_stats(&self, mem: &[u8]) -> HeapStats {
        let m = SliceMem::new(mem, self.pool_offset as usize, self.core.end);
        let mut s = self.core.heap_stats(&m);
        s.footprint = self.core.end as usize;
        s.peak_footprint = s.footprint;
        s
    }

    /// Total, free, high-water mark and histograms, by a full walk that
    /// checks every invariant.
    pub fn stats(&self, mem: &[u8]) -> Result<EmsStats, Violation> {
        let m = SliceMem::new(mem, self.pool_offset as usize, self.core.end);
        self.core.walk(&m, self.pool_offset as usize)
    }

    /// Checks every invariant.
    pub fn verify(&self, mem: &[u8]) -> Result<HeapStats, Violation> {
        self.stats(mem)?;
        Ok(self.heap_stats(mem))
    }
}
