//! The C ABI of the ems heap, for runtimes written in C (as WAMR is).
//!
//! Built as a `staticlib`; `include/linmem_ems.h` declares these functions.
//! A heap is made over a caller's pool with [`ems_init_with_pool`]; its
//! bookkeeping lives outside the pool, in a handle allocated here, so guest
//! code that can write the pool can never reach the bookkeeping. Every link
//! inside the pool is a pool offset, so [`ems_migrate`] after the pool moved
//! is O(1). Every `ems_free` / `ems_realloc` checks its pointer; misuse makes
//! the heap fail closed ([`ems_is_corrupted`]).
//!
//! Every function accepts a null handle and then fails (null / an error
//! code) without touching anything.
//!
//! # The header
//!
//! `include/linmem_ems.h` is generated from this file by
//! [cbindgen](https://docs.rs/cbindgen) with `cbindgen.toml` (C names:
//! [`EmsHeap`] is `ems_heap_t`, [`EmsCStats`] is `ems_stats_t`; the `///`
//! comments become the header's comments, so they are written for C
//! readers). The file is checked in so C users can read it without
//! building, and the `header` test fails when it no longer matches the
//! source. After changing the C ABI, regenerate it with
//!
//! ```text
//! LINMEM_BLESS=1 cargo test -p linmem-ems-capi --test header
//! ```
//!
//! A C program includes it, links `liblinmem_ems_capi.a` and the Rust
//! standard library's native dependencies (on Linux: `-lpthread -ldl -lm
//! -lrt -lutil -lgcc_s -lc`); `tests/c/smoke.c` is an example, compiled and
//! run by the `c_program` test.

use core::alloc::Layout;
use core::ffi::{c_int, c_void};
use core::ptr::{self, NonNull};

use linmem_ems::Heap;
use linmem_memory::{FixedRegion, HeapError, RawHeap};

/// Success.
pub const EMS_OK: c_int = 0;
/// The block was already free.
pub const EMS_ERR_DOUBLE_FREE: c_int = -1;
/// The pointer is not a live block of this heap.
pub const EMS_ERR_FOREIGN: c_int = -2;
/// The heap's metadata was found damaged.
pub const EMS_ERR_CORRUPTED: c_int = -3;
/// The heap failed closed earlier and refuses every operation.
pub const EMS_ERR_FAILED_CLOSED: c_int = -4;
/// A null handle, a misaligned pointer or an unusable argument.
pub const EMS_ERR_INVALID: c_int = -5;

/// Opaque heap handle (`ems_heap_t` in C): made by `ems_init_with_pool`,
/// released by `ems_destroy`. It holds the heap's bookkeeping, outside the
/// pool. Calls on one handle must not run concurrently.
pub struct EmsHeap {
    heap: Heap<FixedRegion>,
}

/// Heap statistics (`ems_stats_t` in C), filled by `ems_stats` with a full
/// heap walk. Sizes count block headers. Histogram bucket `i` counts blocks
/// of `2^i .. 2^(i+1)-1` bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EmsCStats {
    /// Bytes the pool spans.
    pub pool_len: usize,
    /// Bytes in blocks: `used + free`.
    pub total: usize,
    /// Bytes in live blocks, headers included.
    pub used: usize,
    /// Bytes in free blocks.
    pub free: usize,
    /// High-water mark: the most bytes ever in use.
    pub high_water: usize,
    /// Foreign bytes covered by gap blocks.
    pub gap: usize,
    /// Live blocks.
    pub used_blocks: usize,
    /// Free blocks.
    pub free_blocks: usize,
    /// Live blocks by size: bucket `i` counts sizes in `[2^i, 2^(i+1))`.
    pub used_hist: [u32; 32],
    /// Free blocks by size, bucketed likewise.
    pub free_hist: [u32; 32],
    /// Nodes of the size tree.
    pub tree_nodes: usize,
    /// Height of the size tree.
    pub tree_height: u32,
}

const _: () = assert!(linmem_ems::HIST_BUCKETS == 32);

/// The layout every C-side block is treated with: C has no layout at free.
const C_LAYOUT: Layout = match Layout::from_size_align(1, 1) {
    Ok(l) => l,
    Err(_) => panic!("1-byte layout"),
};

fn code(e: HeapError) -> c_int {
    match e {
        HeapError::DoubleFree { .. } => EMS_ERR_DOUBLE_FREE,
        HeapError::ForeignPointer { .. } | HeapError::LayoutMismatch { .. } => EMS_ERR_FOREIGN,
        HeapError::Corrupted { .. } => EMS_ERR_CORRUPTED,
        HeapError::FailedClosed => EMS_ERR_FAILED_CLOSED,
        _ => EMS_ERR_CORRUPTED,
    }
}

/// The heap behind a handle.
///
/// # Safety
///
/// `h` is null or a live handle from [`ems_init_with_pool`], not used
/// concurrently.
unsafe fn heap<'a>(h: *mut EmsHeap) -> Option<&'a mut Heap<FixedRegion>> {
    // SAFETY: the caller's contract: null or a live, exclusive handle.
    unsafe { h.as_mut() }.map(|h| &mut h.heap)
}

fn out(p: Option<NonNull<u8>>) -> *mut c_void {
    p.map_or(ptr::null_mut(), |p| p.as_ptr().cast())
}

/// Makes a heap over `[buf, buf + size)`; `buf` must be 8-aligned. Null
/// when `buf` is null or misaligned, or the pool is too small.
///
/// # Safety
///
/// `buf` is valid for reads and writes of `size` bytes, used by nothing else
/// while the heap lives (except through blocks it hands out), and outlives
/// the handle (or is migrated away first).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ems_init_with_pool(buf: *mut c_void, size: usize) -> *mut EmsHeap {
    let Some(base) = NonNull::new(buf.cast::<u8>()) else {
        return ptr::null_mut();
    };
    // SAFETY: the caller's contract for the pool.
    match unsafe { Heap::with_pool(base, size) } {
        Ok(heap) => Box::into_raw(Box::new(EmsHeap { heap })),
        Err(_) => ptr::null_mut(),
    }
}

/// Releases a handle (not the pool: it belongs to the caller). A null
/// handle is a no-op.
///
/// # Safety
///
/// `h` is null or a live handle, not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ems_destroy(h: *mut EmsHeap) {
    if !h.is_null() {
        // SAFETY: the caller's contract: made by `Box::into_raw` in
        // `ems_init_with_pool`, released once.
        drop(unsafe { Box::from_raw(h) });
    }
}

/// Allocates `size` bytes, 8-aligned; null when out of memory or failed
/// closed.
///
/// # Safety
///
/// `h` is null or a live handle, not used concurrently.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ems_alloc(h: *mut EmsHeap, size: usize) -> *mut c_void {
    // SAFETY: the caller's contract.
    let Some(heap) = (unsafe { heap(h) }) else {
        return ptr::null_mut();
    };
    out(Layout::from_size_align(size, 8)
        .ok()
        .and_then(|l| heap.alloc(l)))
}

/// Allocates `size` bytes aligned to `align` (a power of two, up to 64 KiB
/// and beyond as the pool allows); null for any other `align`, 0 included.
///
/// # Safety
///
/// As for `ems_alloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ems_alloc_aligned(
    h: *mut EmsHeap,
    size: usize,
    align: usize,
) -> *mut c_void {
    // SAFETY: the caller's contract.
    let Some(heap) = (unsafe { heap(h) }) else {
        return ptr::null_mut();
    };
    // Checked before raising small alignments to the heap's 8: 0, 3, 5, 6
    // and 7 are refused like every other non-power of two.
    if !align.is_power_of_two() {
        return ptr::null_mut();
    }
    out(Layout::from_size_align(size, align.max(8))
        .ok()
        .and_then(|l| heap.alloc(l)))
}

/// Frees a block: `EMS_OK`, or a negative `EMS_ERR_*` code (the heap then
/// fails closed). A null `ptr` is a no-op (`EMS_OK`, or
/// `EMS_ERR_FAILED_CLOSED` once the heap failed closed).
///
/// # Safety
///
/// As for `ems_alloc`; `ptr` may be any pointer (misuse is detected), but
/// the block is not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ems_free(h: *mut EmsHeap, ptr: *mut c_void) -> c_int {
    // SAFETY: the caller's contract.
    let Some(heap) = (unsafe { heap(h) }) else {
        return EMS_ERR_INVALID;
    };
    let Some(p) = NonNull::new(ptr.cast::<u8>()) else {
        return if heap.is_corrupted() {
            EMS_ERR_FAILED_CLOSED
        } else {
            EMS_OK
        };
    };
    // SAFETY: the pointer is checked by the heap before use (fail-closed).
    match unsafe { heap.dealloc(p, C_LAYOUT) } {
        Ok(()) => EMS_OK,
        Err(e) => code(e),
    }
}

/// Resizes a block (in place when it can), keeping its contents; a null
/// `ptr` allocates. Null on failure, the old block then still live (unless
/// the heap failed closed). Blocks move with 8-byte alignment.
///
/// # Safety
///
/// As for `ems_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ems_realloc(
    h: *mut EmsHeap,
    ptr: *mut c_void,
    size: usize,
) -> *mut c_void {
    let Some(p) = NonNull::new(ptr.cast::<u8>()) else {
        // SAFETY: the caller's contract.
        return unsafe { ems_alloc(h, size) };
    };
    // SAFETY: the caller's contract.
    let Some(heap) = (unsafe { heap(h) }) else {
        return ptr::null_mut();
    };
    if size > isize::MAX as usize / 2 {
        return ptr::null_mut();
    }
    let layout = Layout::from_size_align(1, 8).unwrap_or(C_LAYOUT);
    // SAFETY: the pointer is checked by the heap before use; `size` fits
    // `isize` once rounded.
    out(unsafe { heap.realloc(p, layout, size) })
}

/// Tells the heap its pool moved to `new_base` (the bytes copied unchanged):
/// O(1). `EMS_OK`, or `EMS_ERR_INVALID` for a null or misaligned base.
///
/// # Safety
///
/// As for `ems_alloc`; `new_base` holds the pool's bytes and meets the
/// contract of `ems_init_with_pool`; pointers into the old pool are dead.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ems_migrate(h: *mut EmsHeap, new_base: *mut c_void) -> c_int {
    // SAFETY: the caller's contract.
    let Some(heap) = (unsafe { heap(h) }) else {
        return EMS_ERR_INVALID;
    };
    let Some(base) = NonNull::new(new_base.cast::<u8>()) else {
        return EMS_ERR_INVALID;
    };
    // SAFETY: the caller's contract.
    match unsafe { heap.migrate(base) } {
        Ok(()) => EMS_OK,
        Err(_) => EMS_ERR_INVALID,
    }
}

/// Grows the pool by `extra` bytes at its end (for example when the pool
/// runs to the end of guest memory and the runtime grew that memory).
/// `EMS_OK` or a negative `EMS_ERR_*`.
///
/// # Safety
///
/// As for `ems_alloc`; the `extra` bytes after the pool are valid and
/// belong to the heap from now on.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ems_extend(h: *mut EmsHeap, extra: usize) -> c_int {
    // SAFETY: the caller's contract.
    let Some(heap) = (unsafe { heap(h) }) else {
        return EMS_ERR_INVALID;
    };
    // SAFETY: the caller's contract for the new bytes.
    match unsafe { heap.extend(extra) } {
        Ok(()) => EMS_OK,
        Err(e) => code(e),
    }
}

/// Fills `*out` by a full heap walk that also checks every invariant.
/// `EMS_OK`, or `EMS_ERR_CORRUPTED` (the heap is damaged or failed closed).
///
/// # Safety
///
/// As for `ems_alloc`; `out` is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ems_stats(h: *mut EmsHeap, out: *mut EmsCStats) -> c_int {
    // SAFETY: the caller's contract.
    let Some(heap) = (unsafe { heap(h) }) else {
        return EMS_ERR_INVALID;
    };
    if out.is_null() {
        return EMS_ERR_INVALID;
    }
    let Ok(s) = heap.ems_stats() else {
        return EMS_ERR_CORRUPTED;
    };
    let c = EmsCStats {
        pool_len: s.pool_len,
        total: s.total,
        used: s.used,
        free: s.free,
        high_water: s.high_water,
        gap: s.gap,
        used_blocks: s.used_blocks,
        free_blocks: s.free_blocks,
        used_hist: s.used_hist,
        free_hist: s.free_hist,
        tree_nodes: s.tree_nodes,
        tree_height: s.tree_height,
    };
    // SAFETY: the caller's contract: `out` is valid for a write.
    unsafe { out.write(c) };
    EMS_OK
}

/// 1 when the heap failed closed (or `h` is null), else 0.
///
/// # Safety
///
/// As for `ems_alloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ems_is_corrupted(h: *mut EmsHeap) -> c_int {
    // SAFETY: the caller's contract.
    match unsafe { heap(h) } {
        Some(heap) => c_int::from(heap.is_corrupted()),
        None => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_functions_round_trip_from_rust() {
        let mut pool = vec![0u64; 4096];
        let buf = pool.as_mut_ptr().cast::<c_void>();
        // SAFETY: test: the pool outlives the handle.
        unsafe {
            let h = ems_init_with_pool(buf, 4096 * 8);
            assert!(!h.is_null());
            let a = ems_alloc(h, 100);
            assert!(!a.is_null());
            let b = ems_realloc(h, a, 1000);
            assert!(!b.is_null());
            let mut st = EmsCStats::default();
            assert_eq!(ems_stats(h, &mut st), EMS_OK);
            assert_eq!(st.used_blocks, 1);
            assert_eq!(ems_free(h, b), EMS_OK);
            assert_eq!(ems_free(h, b), EMS_ERR_DOUBLE_FREE);
            assert_eq!(ems_is_corrupted(h), 1);
            assert!(ems_alloc(h, 8).is_null());
            ems_destroy(h);
            assert!(ems_alloc(ptr::null_mut(), 8).is_null());
            assert!(ems_init_with_pool(ptr::null_mut(), 100).is_null());
        }
    }
}
