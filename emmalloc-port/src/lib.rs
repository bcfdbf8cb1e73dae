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
//! The last bucket, which spans every large size, is always searched for
//! the best fit.
//!
//! Two placement rules keep the heap compact (with the best fit in the
//! last bucket they took the ratchet workload, growing buffers between
//! long-lived small objects, from 227 to 178 peak pages, below the dlmalloc
//! crate's 193):
//!
//! - The *free tail* (the free region just before the newest end
//!   sentinel) is a last resort, like dlmalloc's top chunk: the fast path
//!   and the first search pass skip it, so it stays free to merge with the
//!   next contiguous growth, and it is used from the front.
//! - A small block (a region below 256 bytes) split off any other free
//!   region takes the region's *high* end: what stays free keeps its place
//!   next to the block before it (which may want to grow in place), and
//!   small blocks pack towards the blocks after it instead of pinning the
//!   front of every hole.
//!
//! The remainder of a split is freed as its own region when it can be one.
//!
//! Freed blocks of a region size below 256 bytes are not merged at once:
//! they are *cached* in a quick list per size (a bit in the header marks
//! them, so a second free is still a detected double free) and handed out
//! again, exact fit, by the next allocation of that size before any bucket
//! is looked at. Before the heap would grow (then it searches again), and
//! before a trim, every cached block is freed for real (merged with its
//! neighbours), so caching never makes the heap grow. This is what makes
//! small-object churn faster than the `dlmalloc` crate.
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
//! With the `hardened` feature the free lists resist heap exploitation:
//! every link stored in freed memory (bucket lists and quick lists) is
//! masked with a per-heap secret and its own address (safe-linking, as in
//! glibc), and is checked on every read to lead to a region of the expected
//! kind inside the heap; freed memory is poisoned (the first 32 bytes past
//! the links of every cached block and listed free region) and checked
//! when it is reused or merged. A forged link or a use-after-free write there fails
//! the heap closed (the allocation that finds it returns `None`). Not
//! caught: writes further into a freed block, and forgeries by
//! someone who can read the secret (wasm has no entropy source: the
//! secret mixes the heap's and the first region's addresses).
//!
//! Introspection, as emmalloc offers it: [`Heap::validate`],
//! [`Heap::dump`], [`Heap::dynamic_heap_size`],
//! [`Heap::free_dynamic_memory`], [`Heap::unclaimed_heap_memory`] and
//! [`Heap::fragmentation_map`]; none of it is linked unless used.
//!
//! Feature `c-exports` (wasm32 only; does nothing elsewhere): makes `Global`
//! the module's global allocator and exports C's `malloc` family over it
//! (see `linmem_memory`'s "C exports").
//!
//! # Layout
//!
//! ```text
//! root:   [ start sentinel ][ region ][ region ] ... [ region ][ end ]
//!           size|1, prev root, end ptr, size|1                   1 (size 0, used)
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
//!   bytes whose payload holds the previous root and this root's end sentinel)
//!   followed by regions that tile it exactly up to its end sentinel, a
//!   single word `0|1`. Region starts are `8 - W` modulo 8.
//! - **I2** Every region's header word equals its footer word: the size (a
//!   multiple of 8, at least `MIN_REGION`) with the used flag in bit 0 and
//!   bits 1-2 clear — except that the header of a cached region (I10) also
//!   has bit 1 (`CACHED`) set.
//! - **I3** No two adjacent regions are both free (cached regions count as
//!   used here).
//! - **I4** Every free region is in exactly one list, the list of
//!   `bucket(size)`; lists are doubly linked (`head.prev` is null and
//!   `x.next.prev == x`) and hold only free regions.
//! - **I5** Bit `b` of the mask is set iff bucket `b`'s list is non-empty
//!   (the mask is all clear once the heap failed closed, I9).
//! - **I6** `footprint` (the bytes held from the source, grown minus
//!   released) covers every region and sentinel of every root, and the
//!   reported peak is never below it. (Block counts and byte totals are
//!   not kept in counters, which would cost code and time on every
//!   allocation: `stats()` walks the heap.)
//! - **I7** A used region's payload starts one word in, is 8-aligned, and
//!   belongs to the caller until freed.
//! - **I8** The roots form a chain from the newest (`last_root`) back to
//!   the first, whose link is null; the newest root's end sentinel is the heap's `end`, and its memory ends at
//!   `mem_end >= end + W`. Every payload lies in `[lo, hi)`.
//! - **I9** Once a misuse is detected the heap stays failed closed.
//! - **I10** Quick list `i` holds exactly the cached regions of `i * 8`
//!   bytes (all below 256), singly linked through their first payload word;
//!   every cached region is in its list.
//!
//! - **I11** (`hardened` only) Every free-list link in heap memory is
//!   stored as `ptr ^ secret ^ (link address >> 12)`; the poisoned bytes of
//!   cached and listed free regions hold the poison byte.
//!
//! - **I12** A region a neighbour's size word calls free is followed (its
//!   links unlinked) only after an O(1) plausibility check: whole grains,
//!   at least `MIN_REGION`, inside `[lo - W, hi)`, footer equal to header.
//!   A failed check fails the heap closed instead of merging, so a stray
//!   write into a size word (one byte past a block) cannot make a free
//!   write through user bytes.
//!
//! [`RawHeap::verify`](linmem_memory::RawHeap::verify) checks I1..I8 and
//! I10 (validation walk, lists, mask, footprint, quick lists); I9 is a flag;
//! I11 is checked as links are followed and regions reused.
#![no_std]

mod bins;
mod block;
mod heap;
mod verify;

pub use heap::{Heap, Trim};
pub use verify::RegionKind;

linmem_memory::global_allocator_type!(
    Heap<linmem_memory::WasmMemory<true>>,
    Heap::new(
        // SAFETY: `Global` is the module's global allocator, the only user of
        // the memory above `__heap_base` (the macro's contract).
        unsafe { linmem_memory::WasmMemory::with_heap_base() }
    )
);
