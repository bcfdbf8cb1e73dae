//! The `process` work both guests export (scenarios 2 and 5), shared with
//! `#[path]`: only where the result block comes from differs.

use alloc::string::String;

/// Reads the UTF-8 text at `addr` (`len` bytes) and returns a block from
/// `malloc` holding a little-endian `u32` length, then
/// `"<words> words: <TEXT IN UPPER CASE>"`; null when the text is not UTF-8
/// or memory ran out. The `String`s allocate through the global allocator.
///
/// # Safety
///
/// `addr..addr + len` is readable guest memory, and `malloc(n)` returns
/// null or a fresh block of at least `n` bytes, aligned to at least 4.
pub(crate) unsafe fn process_with(
    addr: *const u8,
    len: usize,
    malloc: impl FnOnce(usize) -> *mut u8,
) -> *mut u8 {
    // SAFETY: the caller's contract: the text is readable.
    let bytes = unsafe { core::slice::from_raw_parts(addr, len) };
    let Ok(text) = core::str::from_utf8(bytes) else {
        return core::ptr::null_mut();
    };
    let words = text.split_whitespace().count();
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = core::fmt::write(&mut out, format_args!("{words} words: "));
    out.push_str(&text.to_uppercase());
    let n = out.len();
    let Some(total) = n.checked_add(4) else {
        return core::ptr::null_mut();
    };
    let block = malloc(total);
    if !block.is_null() {
        // SAFETY: the caller's contract: `block` is a fresh, 4-aligned block
        // of `4 + n` bytes, so the length word and the `n` bytes after it
        // are in bounds.
        unsafe {
            block.cast::<u32>().write((n as u32).to_le());
            core::ptr::copy_nonoverlapping(out.as_ptr(), block.add(4), n);
        }
    }
    block
}
