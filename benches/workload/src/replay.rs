//! Trace replay: the host streams a recorded allocation trace through a
//! fixed buffer; every event is replayed on the module's allocator.
//!
//! An event is four little-endian u32: `op, id, size, align`, with op
//! 0 = alloc, 1 = dealloc, 2 = realloc (to `size`), 3 = alloc_zeroed.
//! Ids number the blocks in allocation order (the host assigns them).

use crate::fail;
use std::alloc::{Layout, alloc, alloc_zeroed, dealloc, realloc};

/// Events per chunk.
const CHUNK_EVENTS: usize = 4096;
static BUF: crate::Cell<[u32; CHUNK_EVENTS * 4]> = crate::Cell::new([0; CHUNK_EVENTS * 4]);

/// A live block of the replayed program (null ptr: not allocated).
#[derive(Clone, Copy)]
struct Slot {
    ptr: *mut u8,
    size: u32,
    align: u32,
}

/// The replay's state: live blocks by id, and the checksum.
struct State {
    slots: Vec<Slot>,
    sum: u64,
}

static STATE: crate::Cell<State> = crate::Cell::new(State {
    slots: Vec::new(),
    sum: 0,
});

/// The buffer the host writes events into (room for 4096 events).
#[unsafe(no_mangle)]
pub extern "C" fn replay_buf() -> *mut u32 {
    BUF.0.get().cast()
}

/// Starts a replay.
#[unsafe(no_mangle)]
pub extern "C" fn replay_begin() {
    // SAFETY: single-threaded module; no other reference is live.
    let st = unsafe { STATE.get() };
    st.slots.clear();
    st.sum = 0;
}

#[inline]
fn tag(id: u32) -> u8 {
    (id as u8) | 1
}

/// Replays the first `n` events of the buffer.
#[unsafe(no_mangle)]
pub extern "C" fn replay_chunk(n: u32) {
    // SAFETY: single-threaded module; no other reference is live (the host
    // writes the buffer only between calls).
    let (buf, st) = unsafe { (&*BUF.get(), STATE.get()) };
    let (slots, sum) = (&mut st.slots, &mut st.sum);
    for e in buf[..(n as usize).min(CHUNK_EVENTS) * 4].chunks_exact(4) {
        let (op, id, size, align) = (e[0], e[1], e[2], e[3]);
        match op {
            0 | 3 => {
                let layout = Layout::from_size_align(size.max(1) as usize, align as usize)
                    .unwrap_or_else(|_| fail());
                // SAFETY: non-zero size.
                let ptr = unsafe {
                    if op == 0 {
                        alloc(layout)
                    } else {
                        alloc_zeroed(layout)
                    }
                };
                if ptr.is_null() || !(ptr as usize).is_multiple_of(layout.align()) {
                    fail();
                }
                // SAFETY: `ptr` holds at least one byte.
                unsafe { ptr.write(tag(id)) };
                if slots.len() <= id as usize {
                    slots.resize(
                        id as usize + 1,
                        Slot {
                            ptr: core::ptr::null_mut(),
                            size: 0,
                            align: 1,
                        },
                    );
                }
                slots[id as usize] = Slot {
                    ptr,
                    size: size.max(1),
                    align,
                };
                *sum = sum.wrapping_add(size as u64);
            }
            1 => {
                let s = slots.get_mut(id as usize).unwrap_or_else(|| fail());
                if s.ptr.is_null() {
                    fail();
                }
                // SAFETY: the block is live (non-null slot) with this layout.
                unsafe {
                    if s.ptr.read() != tag(id) {
                        fail();
                    }
                    dealloc(
                        s.ptr,
                        Layout::from_size_align_unchecked(s.size as usize, s.align as usize),
                    );
                }
                s.ptr = core::ptr::null_mut();
                *sum = sum.wrapping_add(id as u64);
            }
            2 => {
                let s = slots.get_mut(id as usize).unwrap_or_else(|| fail());
                if s.ptr.is_null() {
                    fail();
                }
                let new = size.max(1);
                // SAFETY: the block is live with this layout; `new` is non-zero.
                let ptr = unsafe {
                    realloc(
                        s.ptr,
                        Layout::from_size_align_unchecked(s.size as usize, s.align as usize),
                        new as usize,
                    )
                };
                if ptr.is_null() || !(ptr as usize).is_multiple_of(s.align as usize) {
                    fail();
                }
                // SAFETY: `ptr` is non-null and holds at least one byte.
                if unsafe { ptr.read() } != tag(id) {
                    fail();
                }
                s.ptr = ptr;
                s.size = new;
                *sum = sum.wrapping_mul(3).wrapping_add(new as u64);
            }
            _ => fail(),
        }
    }
}

/// Ends a replay: frees what the trace left live, returns the checksum.
#[unsafe(no_mangle)]
pub extern "C" fn replay_end() -> u64 {
    // SAFETY: single-threaded module; no other reference is live.
    let st = unsafe { STATE.get() };
    let (slots, sum) = (&mut st.slots, st.sum);
    for s in slots.iter_mut().filter(|s| !s.ptr.is_null()) {
        // SAFETY: a non-null slot is a live block with this layout.
        unsafe {
            dealloc(
                s.ptr,
                Layout::from_size_align_unchecked(s.size as usize, s.align as usize),
            )
        };
        s.ptr = core::ptr::null_mut();
    }
    *slots = Vec::new();
    sum
}
