//! The guest of scenario 5: a wasm32 module whose allocator is a linmem
//! crate with its `c-exports` feature (chosen by a cargo feature). That
//! crate is the module's `#[global_allocator]` and exports C's `malloc`
//! family, so the host places buffers in this module's memory by calling
//! the module's own `malloc`/`free` (WAMR's recommended set-up).
//!
//! Exports besides the C functions: `process(addr, len)` (same contract as
//! the scenario-2 guest: a `malloc`'d result block the host frees with the
//! exported `free`) and `heap_verify()` (the allocator's full check).
#![no_std]

extern crate alloc;

#[path = "../../process.rs"]
mod process;

#[cfg(feature = "bump")]
use linmem_bump as allocator;
#[cfg(feature = "dlmalloc")]
use linmem_dlmalloc as allocator;
#[cfg(feature = "emmalloc")]
use linmem_emmalloc as allocator;
#[cfg(feature = "ems")]
use linmem_ems as allocator;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

/// Reads the UTF-8 text at `addr` (`len` bytes) and returns a block from the
/// exported `malloc` holding a little-endian `u32` length, then
/// `"<words> words: <TEXT IN UPPER CASE>"`; 0 when the text is not UTF-8
/// or memory ran out. The Rust-side work (the `String`s) allocates from
/// the same heap through the global allocator.
///
/// # Safety
///
/// `addr..addr + len` is readable guest memory (the host allocated it with
/// the exported `malloc`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn process(addr: *const u8, len: usize) -> *mut u8 {
    // SAFETY: the caller's contract; C `malloc` has no preconditions and
    // returns null or a fresh 16-aligned block.
    unsafe { process::process_with(addr, len, |n| allocator::c_exports::malloc(n)) }
}

/// The allocator's full heap check: 0 when sound, else 1000 plus the number
/// of the broken invariant.
#[unsafe(no_mangle)]
pub extern "C" fn heap_verify() -> u32 {
    match allocator::GLOBAL.verify() {
        Ok(_) => 0,
        Err(v) => 1000 + u32::from(v.invariant),
    }
}
