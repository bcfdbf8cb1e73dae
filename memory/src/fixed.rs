//! A fixed region for heaps that never grow.

use core::ptr::NonNull;

use crate::{MemorySource, Region};

/// A region of memory given once, for heaps that never grow.
///
/// The first [`grow`](MemorySource::grow) that fits hands out the whole
/// region (zeroed on construction); every later grow fails.
#[derive(Debug)]
pub struct FixedRegion {
    region: Option<Region>,
}

// SAFETY: the region is exclusively owned by this value (the contract of
// `from_raw`); moving it to another thread moves that ownership.
unsafe impl Send for FixedRegion {}

impl FixedRegion {
    /// A source over a static buffer, zeroed here.
    pub fn new(buf: &'static mut [u8]) -> Self {
        buf.fill(0);
        let len = buf.len();
        Self {
            region: NonNull::new(buf.as_mut_ptr()).map(|start| Region { start, len }),
        }
    }

    /// A source over `len` bytes at `start`, zeroed here.
    ///
    /// # Safety
    ///
    /// `[start, start + len)` is valid for reads and writes, owned by the
    /// returned value alone, and outlives it.
    pub unsafe fn from_raw(start: NonNull<u8>, len: usize) -> Self {
        // SAFETY: the caller guarantees the range is valid for writes.
        unsafe { start.as_ptr().write_bytes(0, len) };
        Self {
            region: Some(Region { start, len }),
        }
    }

    /// An empty source: every grow fails.
    pub const fn empty() -> Self {
        Self { region: None }
    }
}

// SAFETY: M1: the one region is valid (the constructors' contracts), zeroed
// on construction, and handed out at most once.
unsafe impl MemorySource for FixedRegion {
    fn grow(&mut self, bytes: usize) -> Option<Region> {
        match self.region {
            Some(r) if r.len >= bytes => self.region.take(),
            _ => None,
        }
    }

    fn size_pages(&self) -> usize {
        0
    }
}
