//! A module with no global allocator of its own: the allocator crate's
//! `c-exports` feature supplies it and exports `malloc`, `free`, `calloc`,
//! `realloc`, `aligned_alloc` and `posix_memalign` over the same heap.
//! The Rust functions below allocate through that heap too, so the host's
//! test (run.mjs) can check that both kinds of allocation coexist.

use std::sync::Mutex;

#[cfg(feature = "bump")]
use linmem_bump as allocator;
#[cfg(feature = "dlmalloc")]
use linmem_dlmalloc as allocator;
#[cfg(feature = "emmalloc")]
use linmem_emmalloc as allocator;
#[cfg(feature = "ems")]
use linmem_ems as allocator;

/// Strings the Rust side keeps alive between calls.
static KEPT: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn item(i: usize) -> String {
    format!("item {i}: {}", "xyz".repeat(i % 50))
}

/// Builds `n` more strings (and a temporary vector) on the Rust side;
/// returns how many are kept.
#[unsafe(no_mangle)]
pub extern "C" fn rust_grow(n: u32) -> u32 {
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    let scratch: Vec<u64> = (0..n as u64 * 7).map(|x| x * x).collect();
    for _ in 0..n {
        let i = kept.len();
        kept.push(item(i));
    }
    if scratch
        .iter()
        .enumerate()
        .any(|(i, &x)| x != (i * i) as u64)
    {
        return 0;
    }
    kept.len() as u32
}

/// Checks every kept string and rebuilds every third one; returns how many are
/// kept, or `u32::MAX` if one was damaged.
#[unsafe(no_mangle)]
pub extern "C" fn rust_check() -> u32 {
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    if kept.iter().enumerate().any(|(i, s)| *s != item(i)) {
        return u32::MAX;
    }
    let n = kept.len();
    for i in (0..n).rev().filter(|i| i % 3 == 2) {
        kept[i].clear();
        kept[i].shrink_to_fit();
        kept[i] = item(i);
    }
    kept.len() as u32
}

/// Runs the allocator's full heap check: 0 when sound, else 1000 plus the
/// number of the broken invariant.
#[unsafe(no_mangle)]
pub extern "C" fn heap_verify() -> u32 {
    match allocator::GLOBAL.verify() {
        Ok(_) => 0,
        Err(v) => 1000 + u32::from(v.invariant),
    }
}

/// Bytes in live blocks, as the allocator counts them.
#[unsafe(no_mangle)]
pub extern "C" fn heap_in_use() -> u32 {
    allocator::GLOBAL.stats().in_use as u32
}
