//! An emmalloc-design allocator for WebAssembly linear memory: tiny code,
//! O(1) allocation in the common case, and emmalloc's introspection API.
//!
//! # Algorithm
//!
//! Memory comes from a [`MemorySource`](linmem_memory::MemorySource) in
//! *roots*. Each root is a run of *regions* that tile it exactly between a
//! start sentinel and an end sentinel. Every region carries its size at both
//! ends, with the used flag in the low bit, so freeing merges with both
//! neighbours in O(1).
//!
//! Free regions sit in one of 64 doubly-linked bucket lists: exact 8-byte
//! steps for regions under 256 bytes (so small-object churn is exact fit),
//! then four sub-buckets per power of two, computed from the leading-zero
//! count; the last bucket holds everything from 56 KiB up. A `u64` mask
//! marks the non-empty buckets. An allocation masks off the buckets too
//! small, takes the first set bit (trailing-zero count) and pops the head
//! of that bucket: a mask lookup and one region (any region of a bucket
//! above the request's own fits, except in the last bucket). If the head
//! does not fit, the heads of the other candidate buckets are tried. Near
//! out of memory every candidate bucket is walked fully, then the heap
//! grows (asking only for what the free tail is missing) and looks again.
//! The remainder of a split is freed as its own region when it can be one.
//!
//! Growth that continues the newest root (the new memory starts where the
//! old ended) extends it: the old end sentinel becomes free space, merged
//! with the free tail. Growth after someone else grew memory starts a new
//! root. The first region (from `__heap_base` on wasm) may have any start
//! and length; roots are aligned inside whatever they get.
//!
//! Alignments above 8 over-allocate by `align + MIN_REGION` once and split
//! off a free lead, so any power of two up to 64 KiB needs at most one grow
//! of `size + align + overhead` and the lead is reusable.
//!
//! `realloc` works in place when it can: shrinking splits off the tail;
//! growing absorbs a free successor, or, for the last block of the newest
//! root when no free region could take it, grows the memory contiguously.
//! [`Heap::realloc_try`] is the in-place-or-fail variant.
//! [`Heap::trim`] gives the free tail back to a source that can shrink.
//!
//! Misuse (double free, a pointer outside the span of the roots or
//! misaligned, a size word that is implausible or disagrees with its
//! footer, a layout larger than the block) is caught by an O(1) check; the
//! heap then *fails closed*: every later allocation returns `None` and
//! every free returns
//! [`HeapError::FailedClosed`](linmem_memory::HeapError::FailedClosed).
//! (A pointer into a gap between two roots is caught only if its would-be
//! size words are implausible.)
//!
//! Introspection, as emmalloc offers it: [`Heap::validate`],
//! [`Heap::dump`], [`Heap::dynamic_heap_size`],
//! [`Heap::free_dynamic_memory`], [`Heap::unclaimed_heap_memory`] and
//! [`Heap::fragmentation_map`]; none of it is linked unless used.
//!
//! # Layout
//!
//! ```text
//! root:   [ start sentinel ][ region ][ region ] ... [ region ][ end ]
//!           size|1, next root, end ptr, size|1                   1 (size 0, used)
//!
//! used:   [ size|1 ][ payload .................. ][ size|1 ]
//! free:   [ size|0 ][ prev ][ next ][ ........... ][ size|0 ]
//!         ^ r        ^ r + W: 8-aligned             ^ r + size - W
//! ```
//!
//! `W` is the word size (4 on wasm32: 8 bytes of overhead per block); sizes
//! are multiples of 8 and include both size words; the smallest region is
//! four words.
//!
//! # Invariants
//!
//! - **I1** Every root is a start sentinel (a used region of `ROOT_HDR`
//!   bytes whose payload holds the next root and this root's end sentinel)
//!   followed by regions that tile it exactly up to its end sentinel, a
//!   single word `0|1`. Region starts are `8 - W` modulo 8.
//! - **I2** Every region's header word equals its footer word: the size (a
//!   multiple of 8, at least `MIN_REGION`) with the used flag in bit 0 and
//!   bits 1-2 clear.
//! - **I3** No two adjacent regions are both free.
//! - **I4** Every free region is in exactly one list, the list of
//!   `bucket(size)`; lists are doubly linked (`head.prev` is null and
//!   `x.next.prev == x`) and hold only free regions.
//! - **I5** Bit `b` of the mask is set iff bucket `b`'s list is non-empty.
//! - **I6** `footprint` (the bytes held from the source, grown minus
//!   released) covers every region and sentinel of every root, and the
//!   reported peak is never below it. (Block counts and byte totals are
//!   not kept in counters, which would cost code and time on every
//!   allocation: `stats()` walks the heap.)
//! - **I7** A used region's payload starts one word in, is 8-aligned, and
//!   belongs to the caller until freed.
//! - **I8** The roots form a chain from the first to the newest; the newest
//!   root's end sentinel is the heap's `end`, and its memory ends at
//!   `mem_end >= end + W`. Every payload lies in `[lo, hi)`.
//! - **I9** Once a misuse is detected the heap stays failed closed.
//!
//! [`RawHeap::verify`](linmem_memory::RawHeap::verify) checks I1..I8
//! (validation walk, lists, mask, footprint); I9 is a flag.
#![no_std]

mod bins;
mod block;
mod heap;
mod verify;

pub use heap::{Heap, Trim};
pub use verify::RegionKind;

linmem_memory::global_allocator_type!(
    Heap<linmem_memory::WasmMemory>,
    Heap::new(
        // SAFETY: `Global` is the module's global allocator, the only user of
        // the memory above `__heap_base` (the macro's contract).
        unsafe { linmem_memory::WasmMemory::with_heap_base() }
    )
);
