//! The recording allocator: forwards to an inner allocator and logs every
//! call, so the host can turn the log into a replayable trace and count
//! each workload's allocator operations.
//!
//! Log entry: six u32 `op, ptr, size, align, new_ptr, new_size` with op
//! 0 = alloc, 1 = dealloc, 2 = realloc, 3 = alloc_zeroed. The log itself
//! lives in memory taken from the inner allocator directly, so it is not
//! recorded.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::null_mut;

/// Recording wrapper around `A`.
pub struct Recorder<A>(pub A);

struct Log {
    ptr: *mut u32,
    len: usize,
    cap: usize,
    count: u64,
    on: bool,
}

static LOG: crate::Cell<Log> = crate::Cell::new(Log {
    ptr: null_mut(),
    len: 0,
    cap: 0,
    count: 0,
    on: false,
});

impl<A: GlobalAlloc> Recorder<A> {
    fn log(&self, e: [u32; 6]) {
        // SAFETY: single-threaded module; LOG is only touched here and in
        // the exports, never while another access is live.
        let log = unsafe { LOG.get() };
        log.count += 1;
        if !log.on {
            return;
        }
        if log.len + 6 > log.cap {
            let new_cap = (log.cap * 2).max(1 << 16);
            let old = Layout::array::<u32>(log.cap).unwrap_or(Layout::new::<u32>());
            let p = if log.ptr.is_null() {
                // SAFETY: non-zero size.
                unsafe {
                    self.0
                        .alloc(Layout::array::<u32>(new_cap).unwrap_or(Layout::new::<u32>()))
                }
            } else {
                // SAFETY: `log.ptr` was allocated by `self.0` with `old`.
                unsafe { self.0.realloc(log.ptr.cast(), old, new_cap * 4) }
            };
            if p.is_null() {
                log.on = false;
                return;
            }
            log.ptr = p.cast();
            log.cap = new_cap;
        }
        // SAFETY: `len + 6 <= cap` entries fit in the log buffer.
        unsafe { log.ptr.add(log.len).cast::<[u32; 6]>().write_unaligned(e) };
        log.len += 6;
    }
}

// SAFETY: every call is forwarded unchanged to `A`; logging does not touch
// the blocks.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Recorder<A> {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { self.0.alloc(l) };
        self.log([0, p as u32, l.size() as u32, l.align() as u32, 0, 0]);
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { self.0.alloc_zeroed(l) };
        self.log([3, p as u32, l.size() as u32, l.align() as u32, 0, 0]);
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        self.log([1, p as u32, l.size() as u32, l.align() as u32, 0, 0]);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.0.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let q = unsafe { self.0.realloc(p, l, new) };
        self.log([
            2,
            p as u32,
            l.size() as u32,
            l.align() as u32,
            q as u32,
            new as u32,
        ]);
        q
    }
}

/// Address of the log (u32 words).
#[unsafe(no_mangle)]
pub extern "C" fn rec_ptr() -> *const u32 {
    // SAFETY: single-threaded module; no other reference is live.
    unsafe { LOG.get().ptr }
}

/// Length of the log in u32 words.
#[unsafe(no_mangle)]
pub extern "C" fn rec_len() -> u32 {
    // SAFETY: single-threaded module; no other reference is live.
    unsafe { LOG.get().len as u32 }
}

/// Allocator calls counted since the last `rec_reset`.
#[unsafe(no_mangle)]
pub extern "C" fn rec_count() -> u64 {
    // SAFETY: single-threaded module; no other reference is live.
    unsafe { LOG.get().count }
}

/// Clears the log and the count; `log != 0` turns logging on.
#[unsafe(no_mangle)]
pub extern "C" fn rec_reset(log: u32) {
    // SAFETY: single-threaded module; no other access is live.
    let l = unsafe { LOG.get() };
    l.len = 0;
    l.count = 0;
    l.on = log != 0;
}
