//! The shadow model: what the heap must be holding, checked byte by byte.

use std::alloc::Layout;
use std::collections::BTreeMap;
use std::ptr::NonNull;

use crate::Failure;

/// One live block as the model knows it.
#[derive(Clone, Copy, Debug)]
pub struct Block {
    /// The block.
    pub ptr: NonNull<u8>,
    /// The layout it was allocated with (its size may have changed by
    /// realloc since).
    pub layout: Layout,
    /// The seed of the byte pattern written into it.
    pub seed: u8,
}

/// The byte at offset `i` of a block filled with `seed`.
#[inline]
pub fn pattern(seed: u8, i: usize) -> u8 {
    seed ^ (i as u8).wrapping_mul(31) ^ ((i >> 8) as u8)
}

/// Live blocks by address, with the contents each must hold.
#[derive(Default, Debug)]
pub struct Model {
    live: BTreeMap<usize, Block>,
    next_seed: u8,
    /// Blocks larger than this are written and checked in two windows at
    /// their ends only, so that multi-megabyte blocks (or Miri) do not make
    /// every step slow.
    pub full_check_limit: usize,
}

impl Model {
    /// An empty model.
    pub fn new() -> Self {
        Self {
            live: BTreeMap::new(),
            next_seed: 1,
            full_check_limit: 64 * 1024,
        }
    }

    /// Number of live blocks.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no block is live.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The `i`-th live block in address order (wrapping), if any.
    pub fn nth(&self, i: usize) -> Option<Block> {
        if self.live.is_empty() {
            return None;
        }
        self.live.values().nth(i % self.live.len()).copied()
    }

    /// The live block at `ptr`, if any.
    pub fn get(&self, ptr: NonNull<u8>) -> Option<Block> {
        self.live.get(&(ptr.as_ptr() as usize)).copied()
    }

    /// Every live block.
    pub fn blocks(&self) -> impl Iterator<Item = &Block> {
        self.live.values()
    }

    /// Bytes in live blocks.
    pub fn live_bytes(&self) -> usize {
        self.live.values().map(|b| b.layout.size()).sum()
    }

    /// Records a new block: checks its alignment and that it overlaps no
    /// live block, then fills it with a fresh pattern (or checks it is zero
    /// first, for `zeroed`).
    pub fn insert(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        zeroed: bool,
    ) -> Result<(), Failure> {
        let addr = ptr.as_ptr() as usize;
        if !addr.is_multiple_of(layout.align()) {
            return Err(Failure::new(format!(
                "block {addr:#x} is not aligned to {}",
                layout.align()
            )));
        }
        self.check_no_overlap(addr, layout.size(), None)?;
        if zeroed {
            // Every byte normally; under Miri the ends only (slow to check).
            for r in windows(
                layout.size(),
                crate::scale(usize::MAX, self.full_check_limit),
            ) {
                for i in r {
                    // SAFETY: the heap returned `ptr` for `layout`.
                    let b = unsafe { byte(ptr, i).read() };
                    if b != 0 {
                        return Err(Failure::new(format!(
                            "zeroed block {addr:#x} (size {}) has byte {i} = {b:#x}",
                            layout.size()
                        )));
                    }
                }
            }
        }
        let seed = self.fresh_seed();
        fill(ptr, layout.size(), seed, self.full_check_limit);
        self.live.insert(addr, Block { ptr, layout, seed });
        Ok(())
    }

    /// Forgets a block being freed; returns it.
    pub fn remove(&mut self, ptr: NonNull<u8>) -> Option<Block> {
        self.live.remove(&(ptr.as_ptr() as usize))
    }

    /// Records the result of a successful realloc of `old` to `new_size`:
    /// the common prefix must have survived, then the block is refilled.
    pub fn moved(&mut self, old: Block, new: NonNull<u8>, new_size: usize) -> Result<(), Failure> {
        let addr = new.as_ptr() as usize;
        if !addr.is_multiple_of(old.layout.align()) {
            return Err(Failure::new(format!(
                "realloc result {addr:#x} lost its alignment"
            )));
        }
        self.live.remove(&(old.ptr.as_ptr() as usize));
        self.check_no_overlap(addr, new_size, None)?;
        let keep = old.layout.size().min(new_size);
        check_pattern(
            new,
            old.layout.size(),
            keep,
            old.seed,
            self.full_check_limit,
        )
        .map_err(|e| e.context("realloc did not keep the old prefix"))?;
        let layout = Layout::from_size_align(new_size, old.layout.align())
            .map_err(|_| Failure::new("realloc size overflows a layout"))?;
        let seed = self.fresh_seed();
        fill(new, new_size, seed, self.full_check_limit);
        self.live.insert(
            addr,
            Block {
                ptr: new,
                layout,
                seed,
            },
        );
        Ok(())
    }

    /// Checks every live block still holds its pattern.
    pub fn check_all(&self) -> Result<(), Failure> {
        for b in self.live.values() {
            let len = b.layout.size();
            check_pattern(b.ptr, len, len, b.seed, self.full_check_limit)?;
        }
        Ok(())
    }

    fn check_no_overlap(
        &self,
        addr: usize,
        size: usize,
        skip: Option<usize>,
    ) -> Result<(), Failure> {
        let end = addr + size.max(1);
        let before = self.live.range(..=addr).next_back();
        let after = self.live.range(addr..).next();
        for (&a, b) in before.into_iter().chain(after) {
            if Some(a) == skip {
                continue;
            }
            let b_end = a + b.layout.size().max(1);
            if a < end && addr < b_end {
                return Err(Failure::new(format!(
                    "new block [{addr:#x}, {end:#x}) overlaps live block [{a:#x}, {b_end:#x})"
                )));
            }
        }
        Ok(())
    }

    fn fresh_seed(&mut self) -> u8 {
        self.next_seed = self.next_seed.wrapping_add(37) | 1;
        self.next_seed
    }
}

/// The byte ranges of a `len`-byte block that carry the pattern: all of it
/// up to `limit`, else a window at each end.
fn windows(len: usize, limit: usize) -> [std::ops::Range<usize>; 2] {
    let w = (limit / 2).max(1);
    if len <= limit {
        [0..len, 0..0]
    } else {
        [0..w, len - w..len]
    }
}

/// Byte `i` of the block at `ptr`. Raw reads and writes, not slices: a
/// reference retags every byte it covers, which makes Miri's borrow
/// tracking grow without bound over a long program.
fn byte(ptr: NonNull<u8>, i: usize) -> *mut u8 {
    ptr.as_ptr().wrapping_add(i)
}

/// Writes the pattern for `seed` into a `len`-byte block at `ptr`.
pub fn fill(ptr: NonNull<u8>, len: usize, seed: u8, limit: usize) {
    for r in windows(len, limit) {
        for i in r {
            // SAFETY: callers pass a live block of at least `len` bytes.
            unsafe { byte(ptr, i).write(pattern(seed, i)) };
        }
    }
}

/// Checks the pattern for `seed`, written into a `len`-byte block, in the
/// first `upto` bytes at `ptr`.
pub fn check_pattern(
    ptr: NonNull<u8>,
    len: usize,
    upto: usize,
    seed: u8,
    limit: usize,
) -> Result<(), Failure> {
    for r in windows(len, limit) {
        for i in r.start.min(upto)..r.end.min(upto) {
            // SAFETY: callers pass a live block of at least `upto` bytes.
            let b = unsafe { byte(ptr, i).read() };
            if b != pattern(seed, i) {
                return Err(Failure::new(format!(
                    "block {:#x} (size {len}) lost its contents at byte {i}",
                    ptr.as_ptr() as usize
                )));
            }
        }
    }
    Ok(())
}
