//! The C allocation functions over any `GlobalAlloc`, written once.
//!
//! Each allocator crate's `c-exports` feature exports `malloc`, `free`,
//! `calloc`, `realloc`, `aligned_alloc` and `posix_memalign` from a wasm32
//! module through these functions, over the same heap as the module's Rust
//! allocations (see the crate docs, "C exports"). They are public so that
//! other front ends can reuse them.
//!
//! # Block layout
//!
//! C's `free` and `realloc` get no size and no alignment, while
//! `GlobalAlloc` needs both back, and the allocators check them. So each C
//! block carries a small header just below the pointer handed to C:
//!
//! ```text
//!  base (from GlobalAlloc, aligned to max(16, align))
//!  |
//!  v        offset = max(16, align) bytes               size bytes
//!  +-----------------------+--------------------+------------------------+
//!  | unused                | Header             | C data ...             |
//!  |                       | size, align, check |                        |
//!  +-----------------------+--------------------+------------------------+
//!                                                ^
//!                                                pointer given to C
//! ```
//!
//! The block is one `GlobalAlloc` allocation of
//! `Layout(offset + size, max(16, align))`; the header records `size` and
//! the block's alignment, from which `offset` and the layout follow, plus a
//! check word. Cost: 16 bytes per block on wasm32 (32 on 64-bit hosts) and
//! `align` bytes for alignments above 16 — on top of the allocator's own
//! overhead.
//!
//! # Invariants
//!
//! - **C1** For every pointer `p` these functions returned and that is not
//!   freed yet, the `Header` at `p - HEADER` holds the block's `size` and
//!   block alignment `align` (a power of two, `16 <= align <= MAX_ALIGN`),
//!   and `check == size ^ align ^ COOKIE`; the block starts at
//!   `p - max(MIN_OFFSET, align)` and was allocated from the same
//!   `GlobalAlloc` with `Layout(max(MIN_OFFSET, align) + size, align)`.
//!
//! A header that fails these checks (a pointer these functions never
//! returned, or a block freed already) makes `free` do nothing and `realloc`
//! return null, rather than hand the allocator a made-up layout. The check
//! word is cleared on `free`, so a second `free` of the same pointer is
//! usually caught this way too (the allocators with misuse checks catch the
//! rest).

use core::alloc::{GlobalAlloc, Layout};
use core::mem::size_of;
use core::ptr;

use crate::MAX_ALIGN;

/// The alignment of every block: C's `max_align_t` on wasm32 (16 bytes, as
/// clang's `long double` is 16 bytes there).
pub const MIN_ALIGN: usize = 16;

/// `posix_memalign`'s result for a bad alignment (Linux's `EINVAL`).
pub const EINVAL: i32 = 22;

/// `posix_memalign`'s result when memory runs out (Linux's `ENOMEM`).
pub const ENOMEM: i32 = 12;

/// What each C block records just below its data (invariant C1).
#[repr(C)]
struct Header {
    /// The size C asked for.
    size: usize,
    /// The block's alignment: `max(MIN_ALIGN, requested alignment)`.
    align: usize,
    /// `size ^ align ^ COOKIE`; zero once freed.
    check: usize,
}

/// Mixed into the check word, so that zeroed or freed memory fails C1.
const COOKIE: usize = 0x5A17_C0DE;

/// The header's size.
const HEADER: usize = size_of::<Header>();

/// The smallest offset of the data from the block start: the header,
/// rounded up to a power of two no smaller than [`MIN_ALIGN`].
const MIN_OFFSET: usize = if HEADER <= MIN_ALIGN {
    MIN_ALIGN
} else {
    HEADER.next_power_of_two()
};

const _: () = assert!(MIN_OFFSET >= HEADER);
const _: () = assert!(MIN_OFFSET.is_power_of_two() && MIN_OFFSET.is_multiple_of(MIN_ALIGN));
const _: () = assert!(MIN_ALIGN.is_multiple_of(align_of::<Header>()));
const _: () = assert!(MAX_ALIGN.is_power_of_two() && MAX_ALIGN >= MIN_OFFSET);

/// The block layout and data offset for `size` bytes aligned to `align` (a
/// power of two); `None` on overflow or when `align > MAX_ALIGN`.
#[inline(always)]
fn block_layout(size: usize, align: usize) -> Option<(Layout, usize)> {
    if align > MAX_ALIGN {
        return None;
    }
    let align = align.max(MIN_ALIGN);
    // Both are powers of two, so the offset is a multiple of `align`.
    let offset = align.max(MIN_OFFSET);
    let layout = Layout::from_size_align(offset.checked_add(size)?, align).ok()?;
    Some((layout, offset))
}

/// Allocates a C block of `size` bytes aligned to `align` (a power of two).
#[inline(always)]
fn alloc_block<A: GlobalAlloc>(a: &A, size: usize, align: usize, zeroed: bool) -> *mut u8 {
    let Some((layout, offset)) = block_layout(size, align) else {
        return ptr::null_mut();
    };
    let base = if zeroed {
        // SAFETY: `layout` is at least MIN_OFFSET > 0 bytes long.
        unsafe { a.alloc_zeroed(layout) }
    } else {
        // SAFETY: `layout` is at least MIN_OFFSET > 0 bytes long.
        unsafe { a.alloc(layout) }
    };
    if base.is_null() {
        return base;
    }
    // SAFETY: `offset < layout.size()`, so the data pointer is inside the
    // block (or one past its end when `size == 0`).
    let data = unsafe { base.add(offset) };
    // SAFETY: C1 is being established for this new block.
    unsafe { write_header(data, size, layout.align()) };
    data
}

/// Writes the C1 header of the block whose data starts at `data`.
///
/// # Safety
///
/// `data` is the data pointer of a live block of `size` bytes with block
/// alignment `align`, at least `MIN_OFFSET` bytes from the block start.
#[inline(always)]
unsafe fn write_header(data: *mut u8, size: usize, align: usize) {
    // SAFETY: the caller's contract: the HEADER bytes below `data` lie in
    // the block, and `data` is MIN_ALIGN-aligned, which suits `Header`.
    unsafe {
        data.sub(HEADER).cast::<Header>().write(Header {
            size,
            align,
            check: size ^ align ^ COOKIE,
        })
    };
}

/// The block start and layout of the C block at `data`, or `None` when its
/// header fails C1.
///
/// # Safety
///
/// `data` is non-null and either returned by these functions or a pointer
/// whose `HEADER` bytes below are readable.
#[inline(always)]
unsafe fn block_of(data: *mut u8) -> Option<(*mut u8, Layout)> {
    if !data.addr().is_multiple_of(MIN_ALIGN) || data.addr() < MIN_OFFSET {
        return None;
    }
    // SAFETY: C1 / the caller's contract: the header lies below `data`.
    let h = unsafe { data.sub(HEADER).cast::<Header>().read() };
    if h.check != h.size ^ h.align ^ COOKIE || !h.align.is_power_of_two() {
        return None;
    }
    let (layout, offset) = block_layout(h.size, h.align)?;
    if layout.align() != h.align {
        return None;
    }
    // SAFETY: C1: the block starts `offset` bytes below `data`.
    Some((unsafe { data.sub(offset) }, layout))
}

/// C `malloc`: `size` bytes aligned to [`MIN_ALIGN`], or null.
///
/// `malloc(0)` returns a unique pointer that must be freed (like glibc).
#[inline]
pub fn malloc<A: GlobalAlloc>(a: &A, size: usize) -> *mut u8 {
    alloc_block(a, size, MIN_ALIGN, false)
}

/// C `calloc`: `n * size` zeroed bytes, or null (also when `n * size`
/// overflows).
#[inline]
pub fn calloc<A: GlobalAlloc>(a: &A, n: usize, size: usize) -> *mut u8 {
    match n.checked_mul(size) {
        Some(bytes) => alloc_block(a, bytes, MIN_ALIGN, true),
        None => ptr::null_mut(),
    }
}

/// C `aligned_alloc`: `size` bytes aligned to `align`, or null.
///
/// Null when `align` is not a power of two (0 included) or exceeds
/// [`MAX_ALIGN`]; any `size` is accepted (C17). The result is at least
/// [`MIN_ALIGN`]-aligned.
#[inline]
pub fn aligned_alloc<A: GlobalAlloc>(a: &A, align: usize, size: usize) -> *mut u8 {
    if !align.is_power_of_two() {
        return ptr::null_mut();
    }
    alloc_block(a, size, align, false)
}

/// C `posix_memalign`: stores a block of `size` bytes aligned to `align` in
/// `*memptr` and returns 0; returns [`EINVAL`] when `align` is not a power of
/// two multiple of `size_of::<usize>()` (or `memptr` is null), [`ENOMEM`]
/// when memory runs out or `align > MAX_ALIGN`. On error `*memptr` is left
/// untouched.
///
/// # Safety
///
/// `memptr` is null or valid for writing a pointer.
#[inline]
pub unsafe fn posix_memalign<A: GlobalAlloc>(
    a: &A,
    memptr: *mut *mut u8,
    align: usize,
    size: usize,
) -> i32 {
    if !align.is_power_of_two() || !align.is_multiple_of(size_of::<usize>()) || memptr.is_null() {
        return EINVAL;
    }
    let p = alloc_block(a, size, align, false);
    if p.is_null() {
        return ENOMEM;
    }
    // SAFETY: the caller's contract; `memptr` is not null.
    unsafe { memptr.write_unaligned(p) };
    0
}

/// C `free`: releases a block; `free(NULL)` does nothing.
///
/// A pointer whose header fails C1 is ignored (see the module docs).
///
/// # Safety
///
/// `p` is null or was returned by these functions over the same `a` and not
/// freed since (C's rule; some violations are caught, see the module docs).
#[inline]
pub unsafe fn free<A: GlobalAlloc>(a: &A, p: *mut u8) {
    if p.is_null() {
        return;
    }
    // SAFETY: the caller's contract.
    let Some((base, layout)) = (unsafe { block_of(p) }) else {
        return;
    };
    // SAFETY: C1: the check word lies in the block, which is still live.
    unsafe { (*p.sub(HEADER).cast::<Header>()).check = 0 };
    // SAFETY: C1: `base` was allocated from `a` with `layout`.
    unsafe { a.dealloc(base, layout) };
}

/// C `realloc`: resizes a block, keeping its contents up to the smaller
/// size, and returns the (possibly moved) block.
///
/// `realloc(NULL, n)` is `malloc(n)`. `realloc(p, 0)` frees `p` and returns
/// null (glibc's behaviour). On failure it returns null and `p` stays live
/// and unchanged. The block keeps its alignment.
///
/// # Safety
///
/// As for [`free`].
#[inline]
pub unsafe fn realloc<A: GlobalAlloc>(a: &A, p: *mut u8, size: usize) -> *mut u8 {
    if p.is_null() {
        return malloc(a, size);
    }
    if size == 0 {
        // SAFETY: the caller's contract.
        unsafe { free(a, p) };
        return ptr::null_mut();
    }
    // SAFETY: the caller's contract.
    let Some((base, layout)) = (unsafe { block_of(p) }) else {
        return ptr::null_mut();
    };
    let Some((new_layout, offset)) = block_layout(size, layout.align()) else {
        return ptr::null_mut();
    };
    // SAFETY: C1: `base` was allocated from `a` with `layout`; the new size
    // is non-zero and, with the same alignment, a valid `Layout` (so it fits
    // `isize` when rounded up).
    let new_base = unsafe { a.realloc(base, layout, new_layout.size()) };
    if new_base.is_null() {
        return new_base;
    }
    // SAFETY: the offset depends only on the alignment, which is unchanged,
    // and lies inside the new block.
    let data = unsafe { new_base.add(offset) };
    // SAFETY: C1 is re-established for the resized block.
    unsafe { write_header(data, size, layout.align()) };
    data
}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use super::*;
    use std::alloc::System;

    fn fill(p: *mut u8, len: usize, tag: u8) {
        for i in 0..len {
            // SAFETY: test: `p` is a live block of at least `len` bytes.
            unsafe { p.add(i).write(tag ^ i as u8) };
        }
    }

    fn intact(p: *mut u8, len: usize, tag: u8) -> bool {
        // SAFETY: test: `p` is a live block of at least `len` bytes.
        (0..len).all(|i| unsafe { p.add(i).read() } == tag ^ i as u8)
    }

    #[test]
    fn malloc_results_are_aligned_unique_and_freeable_even_for_zero() {
        let a = malloc(&System, 0);
        let b = malloc(&System, 0);
        assert!(!a.is_null() && !b.is_null() && a != b);
        for size in [1, 7, 16, 100, 4096] {
            let p = malloc(&System, size);
            assert_eq!(p.addr() % MIN_ALIGN, 0);
            fill(p, size, 3);
            assert!(intact(p, size, 3));
            // SAFETY: test: from malloc.
            unsafe { free(&System, p) };
        }
        // SAFETY: test: from malloc; NULL is a no-op.
        unsafe {
            free(&System, a);
            free(&System, b);
            free(&System, ptr::null_mut());
        }
    }

    #[test]
    fn calloc_zeroes_and_rejects_overflowing_products() {
        let p = calloc(&System, 100, 3);
        // SAFETY: test: 300 bytes.
        assert!((0..300).all(|i| unsafe { p.add(i).read() } == 0));
        // SAFETY: test: from calloc.
        unsafe { free(&System, p) };
        assert!(calloc(&System, usize::MAX / 2, 3).is_null());
        assert!(malloc(&System, usize::MAX - 8).is_null());
        assert!(malloc(&System, isize::MAX as usize).is_null());
    }

    #[test]
    fn aligned_alloc_honours_every_power_of_two_and_rejects_others() {
        let mut align = 1;
        while align <= MAX_ALIGN {
            let p = aligned_alloc(&System, align, 24);
            assert_eq!(p.addr() % align.max(MIN_ALIGN), 0, "align {align}");
            fill(p, 24, 9);
            // SAFETY: test: grows an aligned block; it stays aligned.
            let q = unsafe { realloc(&System, p, 5000) };
            assert_eq!(q.addr() % align.max(MIN_ALIGN), 0);
            assert!(intact(q, 24, 9));
            // SAFETY: test: from realloc.
            unsafe { free(&System, q) };
            align *= 2;
        }
        for bad in [0, 3, 24, MAX_ALIGN * 2] {
            assert!(aligned_alloc(&System, bad, 8).is_null(), "align {bad}");
        }
    }

    #[test]
    fn posix_memalign_reports_einval_enomem_and_success() {
        let mut p: *mut u8 = ptr::null_mut();
        let w = size_of::<usize>();
        // SAFETY: test: `p` is a writable pointer slot.
        unsafe {
            assert_eq!(posix_memalign(&System, &mut p, 0, 8), EINVAL);
            assert_eq!(posix_memalign(&System, &mut p, w / 2, 8), EINVAL);
            assert_eq!(posix_memalign(&System, &mut p, 3 * w, 8), EINVAL);
            assert_eq!(posix_memalign(&System, ptr::null_mut(), w, 8), EINVAL);
            assert_eq!(posix_memalign(&System, &mut p, w, usize::MAX), ENOMEM);
            assert!(p.is_null());
            assert_eq!(posix_memalign(&System, &mut p, 256, 10), 0);
            assert_eq!(p.addr() % 256, 0);
            free(&System, p);
        }
    }

    #[test]
    fn realloc_keeps_contents_handles_null_zero_and_failure() {
        // SAFETY: test: every pointer comes from these functions.
        unsafe {
            let p = realloc(&System, ptr::null_mut(), 40);
            assert!(!p.is_null());
            fill(p, 40, 1);
            let q = realloc(&System, p, 10_000);
            assert!(intact(q, 40, 1));
            let r = realloc(&System, q, 20);
            assert!(intact(r, 20, 1));
            assert!(realloc(&System, r, usize::MAX - 4).is_null());
            assert!(intact(r, 20, 1));
            assert!(realloc(&System, r, 0).is_null());
        }
    }

    #[test]
    fn free_and_realloc_ignore_pointers_whose_header_fails_the_check() {
        #[repr(align(64))]
        struct Buf([u8; 128]);
        let mut zeroed = Buf([0; 128]);
        let p = malloc(&System, 64);
        fill(p, 64, 0x55);
        // SAFETY: test: both pointers have readable bytes below them, and
        // neither carries a valid header, so nothing is freed or moved.
        unsafe {
            free(&System, p.add(32));
            free(&System, zeroed.0.as_mut_ptr().add(32));
            assert!(realloc(&System, zeroed.0.as_mut_ptr().add(64), 8).is_null());
        }
        assert!(zeroed.0.iter().all(|&b| b == 0));
        assert!(intact(p, 64, 0x55));
        // SAFETY: test: from malloc.
        unsafe { free(&System, p) };
    }
}
