//! The guest of the ems runtime embedding (scenarios 1–4): a wasm32 module
//! with no allocator of its own.
//!
//! Its `#[global_allocator]` forwards every request to functions imported
//! from the host (module `env`), which serves them from an ems heap living
//! inside this module's linear memory:
//!
//! | import                               | serves                          |
//! |--------------------------------------|---------------------------------|
//! | `malloc(size) -> addr`               | alignment ≤ 8 (ems's grain)     |
//! | `aligned_alloc(align, size) -> addr` | alignment > 8 (a power of two)  |
//! | `realloc(addr, size) -> addr`        | resizing blocks of alignment ≤ 8|
//! | `free(addr)`                         | every block                     |
//!
//! A result of 0 means out of memory. Alignment: ems blocks are 8-byte
//! aligned, which covers every Rust type up to `u64`/`f64`; larger
//! alignments go to `aligned_alloc` (ems's `memalign`, any power of two).
//! The host's `realloc` keeps only the 8-byte alignment when it moves a
//! block, so over-aligned blocks are resized here by allocate, copy, free
//! (`GlobalAlloc`'s default `realloc`).
//!
//! Exports: `workload(n)` (the shared data-structure workload, returning
//! its checksum), `process(addr, len)` (a host-placed string in, a
//! malloc'd result out), `scribble()` and `release(addr)` (scenario 4: the
//! guest damages a block header), `grow_own_memory(pages)` (growth the
//! host did not do).
#![no_std]

extern crate alloc;

use core::alloc::{GlobalAlloc, Layout};

#[path = "../../process.rs"]
mod process;
#[path = "../../../src/workload.rs"]
mod workload;

/// ems's block alignment: what plain `malloc` guarantees.
const GRAIN: usize = 8;

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    /// `size` bytes, 8-byte aligned; null when out of memory.
    fn malloc(size: usize) -> *mut u8;
    /// `size` bytes aligned to `align` (a power of two); null when out of
    /// memory.
    fn aligned_alloc(align: usize, size: usize) -> *mut u8;
    /// Resizes a block from `malloc`, keeping its contents; null (the block
    /// stays live) when out of memory.
    fn realloc(p: *mut u8, size: usize) -> *mut u8;
    /// Frees a block from any of the above.
    fn free(p: *mut u8);
}

/// The global allocator: every request goes to the host.
struct HostHeap;

// SAFETY: the host's ems heap returns blocks that are disjoint, at least
// `size` bytes long and aligned as asked (8 for `malloc`/`realloc`,
// `align` for `aligned_alloc`), or null; the routing below sends every
// layout to a function that meets its alignment.
unsafe impl GlobalAlloc for HostHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= GRAIN {
            // SAFETY: a host import with no preconditions.
            unsafe { malloc(layout.size()) }
        } else {
            // SAFETY: as above; `Layout` guarantees a power-of-two align.
            unsafe { aligned_alloc(layout.align(), layout.size()) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from `alloc`/`realloc` (GlobalAlloc contract),
        // so from the host's heap.
        unsafe { free(ptr) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= GRAIN {
            // SAFETY: `ptr` is a live block of the host's heap (GlobalAlloc
            // contract) and 8-byte alignment is all `layout` needs.
            unsafe { realloc(ptr, new_size) }
        } else {
            // The host's realloc would keep only 8-byte alignment.
            let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
                return core::ptr::null_mut();
            };
            // SAFETY: a valid non-zero-size layout (GlobalAlloc contract).
            let new = unsafe { self.alloc(new_layout) };
            if !new.is_null() {
                // SAFETY: both blocks are live, disjoint and at least
                // `min(old, new)` bytes long; `ptr` is then freed once.
                unsafe {
                    core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
            }
            new
        }
    }
}

#[global_allocator]
static HEAP: HostHeap = HostHeap;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

/// Scenarios 1 and 3: runs the shared workload with `n` steps; its
/// checksum, which the host compares with its own run.
#[unsafe(no_mangle)]
pub extern "C" fn workload(n: u32) -> u64 {
    workload::run(n)
}

/// Scenario 2: reads the UTF-8 text the host placed at `addr` (`len`
/// bytes), and returns a block from `malloc` holding the result (a
/// little-endian `u32` length, then `"<words> words: <TEXT IN UPPER CASE>"`)
/// for the host to read and free; 0 when the text is not UTF-8 or memory
/// ran out.
///
/// # Safety
///
/// `addr..addr + len` is readable guest memory (the host allocated it).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn process(addr: *const u8, len: usize) -> *mut u8 {
    // SAFETY: the caller's contract; the `malloc` import has no
    // preconditions and returns null or a fresh 8-aligned block.
    unsafe { process::process_with(addr, len, |n| malloc(n)) }
}

/// Scenario 4: allocates a 48-byte block, then, like a buggy C program,
/// writes 8 bytes just before it, over its ems header. Returns the block
/// (still owned by the guest) for [`release`].
#[unsafe(no_mangle)]
pub extern "C" fn scribble() -> *mut u8 {
    // SAFETY: a host import with no preconditions.
    let p = unsafe { malloc(48) };
    if !p.is_null() {
        // SAFETY: deliberately wrong in heap terms (the point of the
        // scenario), but memory-safe for the module: the 8 bytes before a
        // heap block are inside the pool, which is inside linear memory.
        unsafe {
            p.sub(8)
                .cast::<u64>()
                .write_unaligned(0x5A5A_5A5A_5A5A_5A5A)
        };
    }
    p
}

/// Scenario 4: frees a block from [`scribble`] (the host finds the damage).
///
/// # Safety
///
/// `p` came from [`scribble`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn release(p: *mut u8) {
    // SAFETY: the caller's contract.
    unsafe { free(p) }
}

/// Grows the memory by `pages` itself, bypassing the host's heap (as a
/// guest with a second allocator of its own would); the old size in pages,
/// or -1. The host must not pool those pages.
#[unsafe(no_mangle)]
pub extern "C" fn grow_own_memory(pages: usize) -> isize {
    core::arch::wasm32::memory_grow(0, pages) as isize
}
