//! A bump arena for WebAssembly linear memory.
//!
//! Allocation moves a pointer forward through the current chunk: one align,
//! one compare and two stores on the fast path. Memory comes from a
//! [`MemorySource`](linmem_memory::MemorySource) (`memory.grow` on wasm) and
//! is never given back; it is reused after [`Arena::reset`] or
//! [`Arena::rewind_to`]. Freeing the most recent allocation gives its space
//! back, and the most recent allocation grows or shrinks in place.
//!
//! ```
//! use linmem_bump::Arena;
//! use linmem_memory::SimMemory;
//!
//! let mut arena = Arena::new(SimMemory::new(0, 16));
//! let x = arena.try_alloc(41u32).unwrap();
//! *x += 1;
//! assert_eq!(*x, 42);
//! let cp = arena.checkpoint();
//! arena.try_alloc_str("scratch").unwrap();
//! arena.rewind_to(cp).unwrap();
//! arena.reset();
//! assert_eq!(arena.allocated_bytes(), 0);
//! ```
//!
//! As the global allocator of a wasm32 program (short-lived programs that
//! allocate and exit are where a bump arena shines):
//!
//! ```ignore
//! #[global_allocator]
//! static A: linmem_bump::Global = linmem_bump::Global::new();
//! ```
//!
//! Feature `c-exports` (wasm32 only; does nothing elsewhere): makes `Global`
//! the module's global allocator and exports C's `malloc` family over it
//! (see `linmem_memory`'s "C exports").
//!
//! # Layout
//!
//! Memory is a list of chunks, one per contiguous run obtained from the
//! source (a foreign grow starts a new chunk; contiguous growth extends the
//! last one):
//!
//! ```text
//!  chunk                                                            end
//!  | header: next, end, high | allocations ... | ptr -> free ...    |
//!  +-------------------------+-----------------+--------------------+
//!                            data                    (end of chunk)
//! ```
//!
//! # Invariants
//!
//! - **I1** Every chunk header lies at the start of memory obtained from the
//!   source, aligned for its header type, and its `end` is the end of
//!   that memory; chunks are linked from `first` in the order obtained.
//! - **I2** `cur` is a chunk of the list, and `data(cur) <= ptr <= end <=
//!   cur.end`, where `end` is the chunk end capped by the allocation limit.
//! - **I3** `last` is zero or the start of the most recent live allocation,
//!   which ends at `ptr`.
//! - **I4** Bytes of a chunk at or above `max(high, ptr)` were never handed
//!   out since the source zero-filled them.
//! - **I5** `allocated_bytes() = prior + (ptr - data(cur))` never exceeds the
//!   limit.
#![no_std]

mod arena;
mod chunk;
mod verify;

pub use arena::{AllocError, Arena, Checkpoint, CheckpointError};

linmem_memory::global_allocator_type!(
    Arena<linmem_memory::WasmMemory<true>>,
    // SAFETY: `Global` is the module's global allocator, the only one that
    // may claim the memory above `__heap_base` (`with_heap_base`'s contract).
    Arena::new(unsafe { linmem_memory::WasmMemory::with_heap_base() })
);

#[cfg(test)]
mod tests;
