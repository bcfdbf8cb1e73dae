//! The arena: bump allocation, growth, reset, checkpoints and the limit.

use core::alloc::Layout;
use core::cell::{Cell, RefCell};
use core::fmt;
use core::ptr::{self, NonNull};

use linmem_memory::{HeapError, HeapStats, MemorySource, RawHeap, Region, Violation, align_up};

use crate::chunk::{Chunk, HEADER};

/// An allocation failed: out of memory, over the limit, or a size overflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocError;

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bump arena allocation failed")
    }
}

impl core::error::Error for AllocError {}

/// A saved position of an [`Arena`], taken by [`Arena::checkpoint`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    chunk: *mut Chunk,
    ptr: usize,
    prior: usize,
}

/// Why [`Arena::rewind_to`] refused a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointError {
    /// The checkpoint was not taken from this arena.
    Foreign,
    /// The checkpoint lies after the current position (it was taken before
    /// an earlier rewind or reset that went further back).
    Ahead,
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Foreign => f.write_str("checkpoint does not belong to this arena"),
            Self::Ahead => f.write_str("checkpoint lies after the arena's current position"),
        }
    }
}

impl core::error::Error for CheckpointError {}

/// A bump arena over a memory source.
///
/// Allocating takes `&self` (the state lives in cells), so the typed API
/// hands out references that live as long as the borrow of the arena;
/// [`reset`](Arena::reset), [`rewind_to`](Arena::rewind_to) and the
/// [`RawHeap`] methods take `&mut self`, which proves no such reference is
/// left. Values placed in the arena are never dropped.
pub struct Arena<S> {
    /// The bump pointer (I2); dangling (address 1) before the first chunk.
    ptr: Cell<*mut u8>,
    /// Where allocation in `cur` must stop: the chunk end capped by the
    /// limit (I2, I5).
    end: Cell<usize>,
    /// Start of the most recent live allocation, or 0 (I3).
    last: Cell<usize>,
    /// High-water address of `cur` saved at the last backward move (I4).
    high: Cell<usize>,
    /// The chunk being bumped (I2), null before the first grow.
    cur: Cell<*mut Chunk>,
    /// The first and last chunks obtained (I1).
    first: Cell<*mut Chunk>,
    tail: Cell<*mut Chunk>,
    /// Bytes allocated in chunks before `cur` (I5).
    prior: Cell<usize>,
    limit: Cell<usize>,
    footprint: Cell<usize>,
    source: RefCell<S>,
}

// SAFETY: I1: the arena exclusively owns its chunks; nothing in it is tied
// to the thread that made it.
unsafe impl<S: Send> Send for Arena<S> {}

impl<S: MemorySource> Arena<S> {
    /// An empty arena; memory is taken from `source` on first use.
    pub const fn new(source: S) -> Self {
        Self {
            ptr: Cell::new(ptr::dangling_mut()),
            end: Cell::new(0),
            last: Cell::new(0),
            high: Cell::new(0),
            cur: Cell::new(ptr::null_mut()),
            first: Cell::new(ptr::null_mut()),
            tail: Cell::new(ptr::null_mut()),
            prior: Cell::new(0),
            limit: Cell::new(usize::MAX),
            footprint: Cell::new(0),
            source: RefCell::new(source),
        }
    }

    /// Bumps `layout` into the current chunk, if it fits.
    #[inline(always)]
    fn bump(&self, layout: Layout) -> Option<NonNull<u8>> {
        let p = self.ptr.get();
        let start = align_up(p.addr(), layout.align())?;
        let new = start.checked_add(layout.size())?;
        if new > self.end.get() {
            return None;
        }
        self.ptr.set(p.with_addr(new));
        self.last.set(start);
        // `start >= p.addr() >= 1`, so the pointer is not null.
        NonNull::new(p.with_addr(start))
    }

    /// Allocates memory for `layout`; `None` when out of memory, over the
    /// limit, or when the size overflows.
    #[inline(always)]
    pub fn alloc_layout(&self, layout: Layout) -> Option<NonNull<u8>> {
        match self.bump(layout) {
            Some(p) => Some(p),
            None => self.alloc_slow(layout),
        }
    }

    /// Allocates zeroed memory for `layout`.
    pub fn alloc_zeroed_layout(&self, layout: Layout) -> Option<NonNull<u8>> {
        let p = self.alloc_layout(layout)?;
        let dirty_end = self.high.get().min(p.addr().get() + layout.size());
        if dirty_end > p.addr().get() {
            // SAFETY: I2: the block just allocated is valid for its size,
            // and `dirty_end` lies inside it.
            unsafe { p.as_ptr().write_bytes(0, dirty_end - p.addr().get()) };
        }
        Some(p)
    }

    /// Places `val` in the arena.
    #[inline]
    // Each call hands out a fresh, disjoint block, as bumpalo does.
    #[allow(clippy::mut_from_ref)]
    pub fn try_alloc<T>(&self, val: T) -> Result<&mut T, AllocError> {
        self.try_alloc_with(|| val)
    }

    /// Places the value `f` returns in the arena, building it in place.
    #[inline]
    // Each call hands out a fresh, disjoint block, as bumpalo does.
    #[allow(clippy::mut_from_ref)]
    pub fn try_alloc_with<T>(&self, f: impl FnOnce() -> T) -> Result<&mut T, AllocError> {
        let p = self
            .alloc_layout(Layout::new::<T>())
            .ok_or(AllocError)?
            .cast::<T>();
        // SAFETY: I2: `p` is a fresh block sized and aligned for `T`, handed
        // out once, so the unique reference cannot alias.
        unsafe {
            p.as_ptr().write(f());
            Ok(&mut *p.as_ptr())
        }
    }

    /// Copies `src` into the arena.
    // Each call hands out a fresh, disjoint block, as bumpalo does.
    #[allow(clippy::mut_from_ref)]
    pub fn try_alloc_slice_copy<T: Copy>(&self, src: &[T]) -> Result<&mut [T], AllocError> {
        let layout = Layout::for_value(src);
        let p = self.alloc_layout(layout).ok_or(AllocError)?.cast::<T>();
        // SAFETY: I2: `p` is a fresh block for `src.len()` values of `T`,
        // disjoint from `src` (which lives elsewhere or in an older block).
        unsafe {
            ptr::copy_nonoverlapping(src.as_ptr(), p.as_ptr(), src.len());
            Ok(core::slice::from_raw_parts_mut(p.as_ptr(), src.len()))
        }
    }

    /// Copies `s` into the arena.
    // Each call hands out a fresh, disjoint block, as bumpalo does.
    #[allow(clippy::mut_from_ref)]
    pub fn try_alloc_str(&self, s: &str) -> Result<&mut str, AllocError> {
        let bytes = self.try_alloc_slice_copy(s.as_bytes())?;
        // SAFETY: the bytes are a copy of a valid `str`.
        Ok(unsafe { core::str::from_utf8_unchecked_mut(bytes) })
    }

    /// Bytes handed out since the last reset (alignment padding included).
    pub fn allocated_bytes(&self) -> usize {
        let cur = self.cur.get();
        if cur.is_null() {
            0
        } else {
            self.prior.get() + (self.ptr.get().addr() - Chunk::data(cur))
        }
    }

    /// The allocation limit in bytes, if any.
    pub fn allocation_limit(&self) -> Option<usize> {
        Some(self.limit.get()).filter(|&l| l != usize::MAX)
    }

    /// Caps [`allocated_bytes`](Arena::allocated_bytes): allocations that
    /// would pass the limit fail. `None` removes the limit.
    pub fn set_allocation_limit(&mut self, limit: Option<usize>) {
        self.limit.set(limit.unwrap_or(usize::MAX));
        self.recap();
    }

    /// Bytes obtained from the memory source.
    pub fn footprint(&self) -> usize {
        self.footprint.get()
    }

    /// The limit-capped end for the current chunk (I2, I5).
    fn recap(&self) {
        let cur = self.cur.get();
        if cur.is_null() {
            return;
        }
        // SAFETY: I2: `cur` is a live chunk header.
        let chunk_end = unsafe { (*cur).end };
        let budget = self.limit.get().saturating_sub(self.prior.get());
        self.end
            .set(chunk_end.min(Chunk::data(cur).saturating_add(budget)));
    }

    /// Enters chunk `c` at `ptr`, with `prior` bytes allocated before it.
    fn enter(&self, c: *mut Chunk, ptr: *mut u8, prior: usize) {
        self.save_high();
        self.cur.set(c);
        self.ptr.set(ptr);
        self.prior.set(prior);
        self.last.set(0);
        // SAFETY: I1: `c` is a chunk of the list.
        self.high.set(unsafe { (*c).high }.max(ptr.addr()));
        self.recap();
    }

    /// Records the current chunk's high-water mark in its header (I4).
    fn save_high(&self) {
        let cur = self.cur.get();
        if !cur.is_null() {
            let high = self.high.get().max(self.ptr.get().addr());
            self.high.set(high);
            // SAFETY: I2: `cur` is a live chunk header.
            unsafe { (*cur).high = high };
        }
    }

    /// Moves to the next chunk of the list, if any.
    fn advance(&self) -> bool {
        let cur = self.cur.get();
        if cur.is_null() {
            return false;
        }
        // SAFETY: I2: `cur` is a live chunk header.
        let next = unsafe { (*cur).next };
        if next.is_null() {
            return false;
        }
        let prior = self.allocated_bytes();
        // SAFETY: I1: the data of a chunk starts HEADER bytes in.
        let data = unsafe { next.cast::<u8>().add(HEADER) };
        self.enter(next, data, prior);
        true
    }

    #[cold]
    #[inline(never)]
    fn alloc_slow(&self, layout: Layout) -> Option<NonNull<u8>> {
        if layout.size() > self.limit.get().saturating_sub(self.allocated_bytes()) {
            return None;
        }
        while self.advance() {
            if let Some(p) = self.bump(layout) {
                return Some(p);
            }
        }
        let fresh = layout.size().checked_add(layout.align() + HEADER + 16)?;
        let contig = self
            .shortfall(layout.align(), layout.size())
            .unwrap_or(fresh);
        self.grow(contig, fresh)?;
        loop {
            if let Some(p) = self.bump(layout) {
                return Some(p);
            }
            if !self.advance() {
                return None;
            }
        }
    }

    /// How far a block of `size` at `align` in the last chunk would reach
    /// past that chunk's end, when the arena is in its last chunk.
    fn shortfall(&self, align: usize, size: usize) -> Option<usize> {
        let cur = self.cur.get();
        if cur.is_null() || cur != self.tail.get() {
            return None;
        }
        let new = align_up(self.ptr.get().addr(), align)?.checked_add(size)?;
        // SAFETY: I2: `cur` is a live chunk header.
        Some(new.saturating_sub(unsafe { (*cur).end }).max(1))
    }

    /// Takes more memory: `contig` bytes suffice if they extend the last
    /// chunk, otherwise `fresh` bytes are needed for a new chunk. At most
    /// two grows.
    fn grow(&self, contig: usize, fresh: usize) -> Option<()> {
        let region = self.source.try_borrow_mut().ok()?.grow(contig)?;
        if self.add_region(region) >= fresh {
            return Some(());
        }
        let region = self.source.try_borrow_mut().ok()?.grow(fresh)?;
        self.add_region(region);
        Some(())
    }

    /// Adds `region` to the chunk list: it extends the last chunk when
    /// contiguous, or becomes a new chunk. Returns the room the region
    /// added for a new chunk's data, or `usize::MAX` when it extended the
    /// last chunk (the caller asked for exactly what extension needs).
    fn add_region(&self, region: Region) -> usize {
        self.footprint.set(self.footprint.get() + region.len);
        let tail = self.tail.get();
        // SAFETY: I1: a non-null tail is a live chunk header.
        if !tail.is_null() && unsafe { (*tail).end } == region.start.addr().get() {
            // SAFETY: I1: the region continues the last chunk's memory.
            unsafe { (*tail).end = region.end_addr() };
            if tail == self.cur.get() {
                self.recap();
            }
            return usize::MAX;
        }
        let start = region.start.as_ptr();
        let pad = start.align_offset(align_of::<Chunk>());
        if pad.saturating_add(HEADER) >= region.len {
            return 0;
        }
        // SAFETY: M1 of the source: the region is ours and long enough for
        // the padding and a header (checked above), which makes it I1.
        let c = unsafe { start.add(pad) }.cast::<Chunk>();
        // SAFETY: as above; `c` is aligned for `Chunk`.
        unsafe {
            c.write(Chunk {
                next: ptr::null_mut(),
                end: region.end_addr(),
                high: Chunk::data(c),
            })
        };
        if tail.is_null() {
            self.first.set(c);
            self.tail.set(c);
            // SAFETY: I1: the data of a chunk starts HEADER bytes in.
            self.enter(c, unsafe { c.cast::<u8>().add(HEADER) }, 0);
        } else {
            // SAFETY: I1: the tail is a live chunk header.
            unsafe { (*tail).next = c };
            self.tail.set(c);
        }
        region.len - pad - HEADER
    }

    /// Frees every allocation; all memory obtained is reused from the start.
    pub fn reset(&mut self) {
        let first = self.first.get();
        if !first.is_null() {
            // SAFETY: I1: the data of a chunk starts HEADER bytes in.
            self.enter(first, unsafe { first.cast::<u8>().add(HEADER) }, 0);
        }
    }

    /// The current position, to return to with [`rewind_to`](Arena::rewind_to).
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            chunk: self.cur.get(),
            ptr: self.ptr.get().addr(),
            prior: self.prior.get(),
        }
    }

    /// Frees every allocation made since `cp` was taken.
    ///
    /// The contract: every block allocated after the checkpoint is gone, and
    /// raw pointers to such blocks dangle (references cannot exist: this
    /// takes `&mut self`). Blocks allocated before it are untouched. A
    /// checkpoint from another arena, or one that lies after the current
    /// position, is refused. Checking costs one walk of the chunk list.
    pub fn rewind_to(&mut self, cp: Checkpoint) -> Result<(), CheckpointError> {
        if cp.chunk.is_null() {
            self.reset();
            return Ok(());
        }
        let cur = self.cur.get();
        let mut c = self.first.get();
        let mut seen_cur = false;
        while !c.is_null() && c != cp.chunk {
            seen_cur |= c == cur;
            // SAFETY: I1: `c` is a chunk of the list.
            c = unsafe { (*c).next };
        }
        if c.is_null() {
            return Err(CheckpointError::Foreign);
        }
        // SAFETY: I1: `c` is a chunk of the list.
        let chunk_end = unsafe { (*c).end };
        if cp.ptr < Chunk::data(c) || cp.ptr > chunk_end {
            return Err(CheckpointError::Foreign);
        }
        if seen_cur || (c == cur && cp.ptr > self.ptr.get().addr()) {
            return Err(CheckpointError::Ahead);
        }
        // SAFETY: I1: `cp.ptr` lies inside chunk `c`'s memory.
        let ptr = unsafe { c.cast::<u8>().add(cp.ptr - c.addr()) };
        self.enter(c, ptr, cp.prior);
        Ok(())
    }

    /// The bytes free in `cur` and the chunks after it: (total, count,
    /// largest).
    fn free_space(&self) -> (usize, usize, usize) {
        let mut c = self.cur.get();
        let mut acc = (0, 0, 0);
        let mut from = self.ptr.get().addr();
        while !c.is_null() {
            // SAFETY: I1: `c` is a chunk of the list.
            let (end, next) = unsafe { ((*c).end, (*c).next) };
            let room = end.saturating_sub(from);
            if room > 0 {
                acc = (acc.0 + room, acc.1 + 1, acc.2.max(room));
            }
            c = next;
            from = if c.is_null() { 0 } else { Chunk::data(c) };
        }
        acc
    }

    pub(crate) fn parts(&self) -> Parts {
        Parts {
            ptr: self.ptr.get().addr(),
            end: self.end.get(),
            last: self.last.get(),
            cur: self.cur.get(),
            first: self.first.get(),
            tail: self.tail.get(),
            prior: self.prior.get(),
            limit: self.limit.get(),
            footprint: self.footprint.get(),
        }
    }
}

/// A snapshot of the arena's fields for `verify`.
pub(crate) struct Parts {
    pub ptr: usize,
    pub end: usize,
    pub last: usize,
    pub cur: *mut Chunk,
    pub first: *mut Chunk,
    pub tail: *mut Chunk,
    pub prior: usize,
    pub limit: usize,
    pub footprint: usize,
}

impl<S: MemorySource> RawHeap for Arena<S> {
    #[inline(always)]
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        self.alloc_layout(layout)
    }

    fn alloc_zeroed(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        self.alloc_zeroed_layout(layout)
    }

    /// Gives the space back when `ptr` is the most recent allocation;
    /// otherwise the space stays used until reset. Misuse is not detected.
    #[inline]
    unsafe fn dealloc(&mut self, ptr: NonNull<u8>, layout: Layout) -> Result<(), HeapError> {
        let addr = ptr.addr().get();
        if addr == self.last.get() && addr + layout.size() == self.ptr.get().addr() {
            self.save_high();
            self.ptr.set(ptr.as_ptr());
            self.last.set(0);
        }
        Ok(())
    }

    unsafe fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        let addr = ptr.addr().get();
        let is_last = addr == self.last.get() && addr + layout.size() == self.ptr.get().addr();
        if is_last {
            let new_end = addr.checked_add(new_size)?;
            let extra = new_size.saturating_sub(layout.size());
            if new_end > self.end.get() && extra > 0 {
                let fresh = new_size.checked_add(layout.align() + HEADER + 16)?;
                let budget = self.limit.get().saturating_sub(self.allocated_bytes());
                if let Some(short) = self.shortfall(1, extra).filter(|_| extra <= budget) {
                    let _ = self.grow(short, fresh);
                }
            }
            if new_end <= self.end.get() && self.last.get() == addr {
                if new_size < layout.size() {
                    self.save_high();
                }
                self.ptr.set(ptr.as_ptr().with_addr(new_end));
                return Some(ptr);
            }
        } else if new_size <= layout.size() {
            return Some(ptr);
        }
        let new = self.alloc_layout(Layout::from_size_align(new_size, layout.align()).ok()?)?;
        // SAFETY: I2: both blocks are live and distinct (the new one was
        // bumped past the old), each long enough for the copied prefix.
        unsafe {
            ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), layout.size().min(new_size))
        };
        Some(new)
    }

    unsafe fn usable_size(&self, _ptr: NonNull<u8>, layout: Layout) -> usize {
        layout.size()
    }

    fn stats(&self) -> HeapStats {
        let (free, free_blocks, largest_free) = self.free_space();
        HeapStats {
            footprint: self.footprint.get(),
            peak_footprint: self.footprint.get(),
            in_use: self.allocated_bytes(),
            live_blocks: 0,
            free,
            free_blocks,
            largest_free,
        }
    }

    fn verify(&self) -> Result<HeapStats, Violation> {
        crate::verify::verify(self.parts())?;
        Ok(self.stats())
    }
}
