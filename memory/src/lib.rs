//! The ground every linmem allocator stands on.
//!
//! - [`MemorySource`]: a model of WebAssembly's `memory.grow`. Implemented by
//!   `WasmMemory` (wasm32 only: the real instruction), `SimMemory` (feature
//!   `sim`: a simulated linear memory with fault-injection knobs) and
//!   [`FixedRegion`] (a region that never grows).
//! - [`RawHeap`]: the `&mut self` operations every allocator offers. The
//!   conformance suite and the benchmark harness are generic over it.
//! - [`Locked`] and [`Unsync`]: the `GlobalAlloc` adapters, written once, and
//!   [`global_allocator_type!`], which gives every allocator crate its
//!   one-line `Global` type.
//! - [`cexports`]: C's `malloc` family over any `GlobalAlloc`, which each
//!   allocator crate's `c-exports` feature exports from a wasm32 module.
//!
//! # C exports
//!
//! A runtime often wants to place data in a guest's memory by calling the
//! guest's own exported `malloc`/`free` (WAMR's recommended set-up). Each
//! allocator crate (`linmem-bump`, `linmem-dlmalloc`, `linmem-emmalloc`,
//! `linmem-ems`) has an opt-in feature `c-exports` for that. On wasm32 it
//!
//! - makes the crate's `Global` the module's `#[global_allocator]`, as a
//!   `pub static GLOBAL: Global` of the crate (so its `stats()` and
//!   `verify()` are reachable), and
//! - exports `malloc`, `free`, `calloc`, `realloc`, `aligned_alloc` and
//!   `posix_memalign` with C semantics (in a module `c_exports` of the crate),
//!   over the same heap: Rust and C allocations share one heap.
//!
//! ```toml
//! [dependencies]
//! linmem-dlmalloc = { version = "0.1", features = ["c-exports"] }
//! ```
//!
//! ```ignore
//! // Name the crate once so that it is linked; declare no other global allocator.
//! use linmem_dlmalloc as _;
//! ```
//!
//! Semantics (see [`cexports`] for each function): every result is
//! 16-byte aligned (C's `max_align_t` on wasm32); `malloc(0)` returns a
//! unique pointer to free; `free(NULL)` does nothing; `calloc` returns zeroed
//! memory and null when `n * size` overflows; `realloc(NULL, n)` is
//! `malloc(n)`, `realloc(p, 0)` frees `p` and returns null (as glibc), a
//! failed `realloc` leaves the block intact; `aligned_alloc` returns null for
//! an alignment that is not a power of two or above 64 KiB;
//! `posix_memalign` returns `EINVAL` (22) for an alignment that is not a
//! power of two multiple of 4, `ENOMEM` (12) when memory runs out, else 0
//! (errno values as on Linux: wasm32-unknown-unknown has no libc of its own).
//! Each block carries a 16-byte header (plus the alignment, above 16) that
//! records its size and alignment for `free` and `realloc`; nothing
//! unwinds.
//!
//! A module that enables `c-exports` and also declares its own
//! `#[global_allocator]` fails to build (two global allocators), as does
//! one enabling `c-exports` on two allocator crates. The feature is meant
//! for `wasm32-unknown-unknown`; a target with a libc of its own (wasi,
//! emscripten) already defines these symbols. On other targets the
//! feature does nothing.
//!
//! # Invariants
//!
//! The unsafe code of this crate relies on these, each named by its
//! `// SAFETY:` comments:
//!
//! - **M1** A [`Region`] returned by [`MemorySource::grow`] is valid for
//!   reads and writes of `len` bytes, zero-filled, disjoint from every other
//!   region the same source returned, and stays valid until the source is
//!   dropped (or, for [`MemorySource::release_tail`], until handed back).
//! - **M2** `SimMemory` owns one allocation of `max_pages * PAGE_SIZE`
//!   bytes aligned to [`PAGE_SIZE`]; every pointer it hands out is derived
//!   from that allocation's base and lies below `pages * PAGE_SIZE`.
//! - **M3** A heap inside [`Unsync`] is only reached through `&self` methods
//!   that run to completion without calling back into the adapter, and
//!   `Unsync` is `Sync` only on wasm32 without the `atomics` feature, where
//!   there is exactly one thread.
//! - **C1** (module [`cexports`]) every live C block has a checked header
//!   recording its size and alignment just below the pointer given to C.
#![no_std]

#[cfg(feature = "sim")]
extern crate std;

use core::alloc::Layout;
use core::fmt;
use core::ptr::NonNull;

pub mod cexports;
mod fixed;
mod global;
#[cfg(feature = "sim")]
mod sim;
#[cfg(any(feature = "sim", target_arch = "wasm32"))]
mod tail;
#[cfg(target_arch = "wasm32")]
mod wasm;

pub use fixed::FixedRegion;
pub use global::{DefaultRawMutex, Locked, Unsync};
#[doc(hidden)]
pub use lock_api as __lock_api;
#[cfg(feature = "sim")]
pub use sim::{SimConfig, SimMemory};
#[cfg(target_arch = "wasm32")]
pub use wasm::WasmMemory;

/// The size of one WebAssembly page: 64 KiB.
pub const PAGE_SIZE: usize = 65536;

/// The largest alignment every linmem allocator supports: one wasm page.
pub const MAX_ALIGN: usize = PAGE_SIZE;

/// A contiguous run of bytes handed out by a [`MemorySource`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// The first byte.
    pub start: NonNull<u8>,
    /// The length in bytes.
    pub len: usize,
}

impl Region {
    /// The address one past the last byte.
    #[inline]
    pub fn end_addr(&self) -> usize {
        self.start.as_ptr().addr() + self.len
    }
}

/// A source of linear memory that models `memory.grow`.
///
/// # Safety
///
/// Implementations must uphold invariant **M1**: every region returned by
/// [`grow`](MemorySource::grow) is valid for reads and writes of its full
/// length, zero-filled, disjoint from all other live regions of this source,
/// and stays valid while the source lives.
pub unsafe trait MemorySource {
    /// Asks for at least `bytes` more bytes of memory.
    ///
    /// Page-based sources grow by whole pages, so the region may be longer
    /// than asked. Its start need not follow the end of the previous region:
    /// other code may have grown memory in between (a gap), and allocators
    /// must cope. `None` is `memory.grow`'s -1: at the maximum or out of host
    /// memory. A failed grow changes nothing.
    fn grow(&mut self, bytes: usize) -> Option<Region>;

    /// The current size of the underlying memory in pages (`memory.size`).
    fn size_pages(&self) -> usize;

    /// Gives back the last `bytes` bytes of memory, which end at `end`.
    ///
    /// Only possible where the source can shrink and `end` is the current end
    /// of the memory; `bytes` is rounded down to whole pages. Returns the
    /// number of bytes released (0 when nothing was). WebAssembly memories
    /// cannot shrink, so the default releases nothing.
    ///
    /// # Safety
    ///
    /// The caller owns `[end - bytes, end)`, which came from this source, and
    /// never touches the released part again.
    unsafe fn release_tail(&mut self, end: NonNull<u8>, bytes: usize) -> usize {
        let _ = (end, bytes);
        0
    }
}

/// A whole-heap summary, as every allocator reports it.
///
/// What each field counts is described by each allocator; all are in bytes
/// except the block counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes obtained from the memory source and not given back.
    pub footprint: usize,
    /// The most `footprint` has ever been.
    pub peak_footprint: usize,
    /// Bytes in live blocks, their headers included.
    pub in_use: usize,
    /// Number of live blocks.
    pub live_blocks: usize,
    /// Bytes in free blocks (reusable without growing).
    pub free: usize,
    /// Number of free blocks.
    pub free_blocks: usize,
    /// The largest single free block in bytes.
    pub largest_free: usize,
}

/// A misuse of the heap caught by a check, or a heap that has failed closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeapError {
    /// The block was already free.
    DoubleFree {
        /// The pointer passed in.
        addr: usize,
    },
    /// The pointer is not the start of a block of this heap.
    ForeignPointer {
        /// The pointer passed in.
        addr: usize,
    },
    /// The layout does not match the block's recorded size or alignment.
    LayoutMismatch {
        /// The pointer passed in.
        addr: usize,
    },
    /// The heap's metadata was found damaged (e.g. an overwritten header).
    Corrupted {
        /// Where the damage was seen.
        addr: usize,
    },
    /// The heap failed closed earlier and refuses every operation.
    FailedClosed,
}

impl fmt::Display for HeapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::DoubleFree { addr } => write!(f, "double free of block {addr:#x}"),
            Self::ForeignPointer { addr } => {
                write!(f, "pointer {addr:#x} is not a live block of this heap")
            }
            Self::LayoutMismatch { addr } => {
                write!(
                    f,
                    "layout passed for block {addr:#x} does not match the block"
                )
            }
            Self::Corrupted { addr } => write!(f, "heap metadata corrupted near {addr:#x}"),
            Self::FailedClosed => f.write_str("heap failed closed after an earlier misuse"),
        }
    }
}

impl core::error::Error for HeapError {}

/// A broken heap invariant found by [`RawHeap::verify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The number of the invariant (`I<n>` in the allocator's crate docs).
    pub invariant: u8,
    /// The address where it was found.
    pub addr: usize,
    /// What was wrong.
    pub detail: &'static str,
}

impl Violation {
    /// A violation of invariant `I<invariant>` at `addr`.
    pub const fn new(invariant: u8, addr: usize, detail: &'static str) -> Self {
        Self {
            invariant,
            addr,
            detail,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invariant I{} violated at {:#x}: {}",
            self.invariant, self.addr, self.detail
        )
    }
}

impl core::error::Error for Violation {}

/// The `&mut self` heap interface every linmem allocator implements.
///
/// None of these methods unwinds. On failure the allocation methods return
/// `None` and the heap stays consistent.
pub trait RawHeap {
    /// Allocates a block for `layout`; `None` when memory cannot be had or
    /// the size overflows.
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>>;

    /// Allocates a block whose contents are zero.
    fn alloc_zeroed(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        let ptr = self.alloc(layout)?;
        // SAFETY: M1 via the allocator: `alloc` returned a block valid for
        // `layout.size()` bytes of writes.
        unsafe { ptr.as_ptr().write_bytes(0, layout.size()) };
        Some(ptr)
    }

    /// Frees a block.
    ///
    /// On `Err` the misuse was detected and nothing was freed; allocators
    /// that fail closed refuse all later work.
    ///
    /// # Safety
    ///
    /// `ptr` was returned by this heap for `layout` and is not used again.
    /// (Allocators that detect misuse document which violations they catch;
    /// the rest are undefined behaviour.)
    unsafe fn dealloc(&mut self, ptr: NonNull<u8>, layout: Layout) -> Result<(), HeapError>;

    /// Resizes a block to `new_size` bytes (same alignment), keeping the
    /// common prefix. `None` leaves the old block untouched and live.
    ///
    /// # Safety
    ///
    /// As for [`dealloc`](RawHeap::dealloc); `new_size`, rounded up to
    /// `layout.align()`, must not overflow `isize`.
    unsafe fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Option<NonNull<u8>>;

    /// The number of bytes usable at `ptr` (at least `layout.size()`).
    ///
    /// # Safety
    ///
    /// `ptr` is a live block of this heap allocated with `layout`.
    unsafe fn usable_size(&self, ptr: NonNull<u8>, layout: Layout) -> usize;

    /// A summary of the heap, kept up to date by every operation.
    fn stats(&self) -> HeapStats;

    /// Walks the whole heap and checks every invariant of the allocator.
    fn verify(&self) -> Result<HeapStats, Violation>;
}

/// Default `realloc` by allocate, copy and free, for allocators with no
/// in-place path for a case.
///
/// # Safety
///
/// As for [`RawHeap::realloc`].
pub unsafe fn realloc_by_copy<H: RawHeap + ?Sized>(
    heap: &mut H,
    ptr: NonNull<u8>,
    layout: Layout,
    new_size: usize,
) -> Option<NonNull<u8>> {
    let new_layout = Layout::from_size_align(new_size, layout.align()).ok()?;
    let new = heap.alloc(new_layout)?;
    // SAFETY: M1 via the allocator: both blocks are live, distinct and at
    // least as long as the copied length.
    unsafe {
        core::ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), layout.size().min(new_size))
    };
    // SAFETY: the caller's contract: `ptr` is live for `layout`.
    match unsafe { heap.dealloc(ptr, layout) } {
        Ok(()) => Some(new),
        Err(_) => None,
    }
}

/// Rounds `value` up to a multiple of `align` (a power of two); `None` on
/// overflow.
#[inline(always)]
pub const fn align_up(value: usize, align: usize) -> Option<usize> {
    match value.checked_add(align - 1) {
        Some(v) => Some(v & !(align - 1)),
        None => None,
    }
}

/// Whether `bytes` bytes can be a Rust allocation (`<= isize::MAX`).
#[inline(always)]
pub const fn fits_isize(bytes: usize) -> bool {
    bytes <= isize::MAX as usize
}
