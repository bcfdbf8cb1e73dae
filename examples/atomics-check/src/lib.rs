//! Build-time check of the `GlobalAlloc` adapters under wasm threads.
//!
//! With one allocator feature, that allocator's `Global` is the global
//! allocator; built with `-C target-feature=+atomics` it is the locked
//! variant and must build. With `unsync`, a `static` of
//! `linmem_memory::Unsync` must fail to build under `atomics` (it is `Sync`
//! only on single-threaded wasm), and build without it.
#![no_std]

extern crate alloc;

use alloc::vec::Vec;

#[cfg(feature = "bump")]
#[global_allocator]
static A: linmem_bump::Global = linmem_bump::Global::new();

#[cfg(feature = "dlmalloc")]
#[global_allocator]
static A: linmem_dlmalloc::Global = linmem_dlmalloc::Global::new();

#[cfg(feature = "emmalloc")]
#[global_allocator]
static A: linmem_emmalloc::Global = linmem_emmalloc::Global::new();

#[cfg(feature = "ems")]
#[global_allocator]
static A: linmem_ems::Global = linmem_ems::Global::new();

/// An unlocked heap as a `static`: only single-threaded wasm may have one.
#[cfg(feature = "unsync")]
#[global_allocator]
static U: linmem_memory::Unsync<linmem_bump::Arena<linmem_memory::WasmMemory>> =
    linmem_memory::Unsync::new(linmem_bump::Arena::new(linmem_memory::WasmMemory::new()));

/// Allocates `n` bytes through the global allocator and hands them out, so
/// the allocator (and under `atomics`, its lock) is linked in.
#[unsafe(no_mangle)]
pub extern "C" fn make(n: usize) -> *mut u8 {
    let v: Vec<u8> = (0..n).map(|i| i as u8).collect();
    v.leak().as_mut_ptr()
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}
