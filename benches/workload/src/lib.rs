//! The workload module of the linmem benchmarks, built for
//! `wasm32-unknown-unknown` once per allocator.
//!
//! Exactly one `alloc-*` cargo feature picks the `#[global_allocator]`; every
//! module built from this crate runs the same workload code, so the only
//! difference between two modules is the allocator.
//!
//! Exports (all workloads take a `scale` and return a checksum that does not
//! depend on addresses, so the host can check that every allocator computed
//! the same result):
//!
//! - `wl_<name>(scale: u32) -> u64` for each workload (see `workloads.rs`,
//!   `programs.rs`); `wl_heap_eff*` return the live bytes at the first
//!   out-of-memory instead of a checksum.
//! - `replay_buf`, `replay_begin`, `replay_chunk`, `replay_end`: trace replay,
//!   fed by the host in chunks (see `replay.rs`).
//! - `series_ptr`, `series_len`: `memory.size` samples taken by the ratchet.
//! - with feature `record`: `rec_ptr`, `rec_len`, `rec_count`, `rec_reset`
//!   (see `record.rs`).
//! - with feature `size` (a `no_std` build for the code-size figures):
//!   only `la_alloc`, `la_dealloc`, `la_realloc`.
#![cfg_attr(feature = "size", no_std)]
#![deny(unsafe_op_in_unsafe_fn, missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

// ---------------------------------------------------------------------------
// The allocator under test: one static per `alloc-*` feature.
// ---------------------------------------------------------------------------

#[cfg(feature = "alloc-bump")]
#[global_allocator]
static A: linmem_bump::Global = linmem_bump::Global::new();

#[cfg(any(
    feature = "alloc-dlmalloc-port",
    feature = "alloc-dlmalloc-port-hardened",
    feature = "alloc-dlmalloc-port-fast",
    feature = "alloc-dlmalloc-port-unchecked"
))]
#[global_allocator]
static A: linmem_dlmalloc::Global = linmem_dlmalloc::Global::new();

#[cfg(any(
    feature = "alloc-emmalloc-port",
    feature = "alloc-emmalloc-port-hardened"
))]
#[global_allocator]
static A: linmem_emmalloc::Global = linmem_emmalloc::Global::new();

#[cfg(any(
    feature = "alloc-ems",
    feature = "alloc-ems-unchecked",
    feature = "alloc-ems-hardened"
))]
#[global_allocator]
static A: linmem_ems::Global = linmem_ems::Global::new();

#[cfg(all(feature = "alloc-dlmalloc", not(feature = "record")))]
#[global_allocator]
static A: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

#[cfg(feature = "record")]
#[global_allocator]
static A: record::Recorder<dlmalloc::GlobalDlmalloc> = record::Recorder(dlmalloc::GlobalDlmalloc);

#[cfg(feature = "alloc-talc")]
#[global_allocator]
static A: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

#[cfg(feature = "alloc-lol_alloc")]
#[global_allocator]
// SAFETY: wasm32-unknown-unknown without the atomics feature is single-threaded.
static A: lol_alloc::AssumeSingleThreaded<lol_alloc::FreeListAllocator> =
    unsafe { lol_alloc::AssumeSingleThreaded::new(lol_alloc::FreeListAllocator::new()) };

#[cfg(feature = "alloc-rlsf")]
#[global_allocator]
static A: rlsf::GlobalTlsf = rlsf::GlobalTlsf::new();

/// The empty baseline of the code-size figures: an allocator with no code.
#[cfg(feature = "alloc-none")]
struct NoAlloc;

// SAFETY: `alloc` always reports failure (null), which GlobalAlloc allows.
#[cfg(feature = "alloc-none")]
unsafe impl core::alloc::GlobalAlloc for NoAlloc {
    unsafe fn alloc(&self, _: core::alloc::Layout) -> *mut u8 {
        core::ptr::null_mut()
    }
    unsafe fn dealloc(&self, _: *mut u8, _: core::alloc::Layout) {}
}

#[cfg(feature = "alloc-none")]
#[global_allocator]
static A: NoAlloc = NoAlloc;

// ---------------------------------------------------------------------------
// Size build: the three allocator entry points and nothing else.
// ---------------------------------------------------------------------------

#[cfg(feature = "size")]
mod size {
    use core::alloc::{GlobalAlloc, Layout};

    /// Allocates `size` bytes aligned to `align` (a power of two).
    ///
    /// # Safety
    /// `size`/`align` must form a valid non-zero-size layout.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn la_alloc(size: usize, align: usize) -> *mut u8 {
        // SAFETY: the caller passes a valid layout.
        unsafe { super::A.alloc(Layout::from_size_align_unchecked(size, align)) }
    }

    /// Frees a block from `la_alloc`/`la_realloc`.
    ///
    /// # Safety
    /// `ptr` must be live with this size and alignment.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn la_dealloc(ptr: *mut u8, size: usize, align: usize) {
        // SAFETY: the caller passes a live block and its layout.
        unsafe { super::A.dealloc(ptr, Layout::from_size_align_unchecked(size, align)) }
    }

    /// Resizes a block.
    ///
    /// # Safety
    /// `ptr` must be live with this size and alignment; `new` must be valid.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn la_realloc(
        ptr: *mut u8,
        size: usize,
        align: usize,
        new: usize,
    ) -> *mut u8 {
        // SAFETY: the caller passes a live block, its layout and a valid size.
        unsafe { super::A.realloc(ptr, Layout::from_size_align_unchecked(size, align), new) }
    }

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
        core::arch::wasm32::unreachable()
    }
}

/// A static the single-threaded module mutates: wasm32-unknown-unknown
/// without the atomics feature has one thread, so no access can race.
#[cfg(any(feature = "record", feature = "workloads"))]
struct Cell<T>(core::cell::UnsafeCell<T>);

// SAFETY: the module is single-threaded (no atomics, no threads).
#[cfg(any(feature = "record", feature = "workloads"))]
unsafe impl<T> Sync for Cell<T> {}

#[cfg(any(feature = "record", feature = "workloads"))]
impl<T> Cell<T> {
    const fn new(v: T) -> Self {
        Cell(core::cell::UnsafeCell::new(v))
    }

    /// The value, mutably.
    ///
    /// # Safety
    /// No other reference to the value may be live (callers take it at the
    /// start of an export and drop it before returning).
    #[allow(clippy::mut_from_ref)]
    unsafe fn get(&self) -> &mut T {
        // SAFETY: the caller guarantees exclusivity.
        unsafe { &mut *self.0.get() }
    }
}

#[cfg(feature = "record")]
pub mod record;

#[cfg(feature = "workloads")]
mod rng;

#[cfg(feature = "workloads")]
mod workloads;

#[cfg(feature = "workloads")]
mod programs;

#[cfg(feature = "workloads")]
mod replay;

/// Stops the module with a trap: a workload found corrupted memory, a
/// misaligned block, or an allocator misbehaving.
#[cfg(feature = "workloads")]
#[cold]
#[inline(never)]
fn fail() -> ! {
    core::arch::wasm32::unreachable()
}

/// Stops the module with a trap whose backtrace names this function: the
/// allocator returned null (the host reports "OOM", not a failure).
#[cfg(feature = "workloads")]
#[cold]
#[inline(never)]
fn out_of_memory() -> ! {
    core::arch::wasm32::unreachable()
}
