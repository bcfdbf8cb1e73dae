//! A dlmalloc-design allocator for WebAssembly linear memory.
//!
//! # Algorithm
//!
//! This is Doug Lea's dlmalloc 2.8 design, written afresh for linear
//! memory and generic over a [`MemorySource`](linmem_memory::MemorySource).
//!
//! - **Chunks** carry one size word with two in-use bits: `CINUSE` (this
//!   chunk) and `PINUSE` (the previous chunk). A free chunk also writes its
//!   size at its end (the boundary tag, in the next chunk's `prev_foot`), so
//!   freeing merges with both neighbours in O(1). An in-use chunk costs one
//!   word (4 bytes on wasm32); chunk sizes are multiples of 8.
//! - **Small bins**: 32 exact-size lists, 8 bytes apart, for chunks under
//!   256 bytes, with a `u32` map of the non-empty ones: a hit is a shift, a
//!   mask and an unlink.
//! - **Tree bins**: 64 bins for larger chunks (four per power of two, where
//!   dlmalloc has two: each trie holds half the chunks, so walks are a level
//!   shorter), each a bitwise trie keyed by size (children chosen by
//!   successive size bits, equal sizes in a ring), with a second map (a
//!   `u64`). A search of
//!   the trees takes the best fit: the smallest tree chunk at least as
//!   large as the request.
//! - **Designated victim** (dv): the remainder of the last split of a
//!   binned chunk. A small request that no exact (or next-size) small bin
//!   serves, and any large request it fits, is carved from dv first: no bin
//!   work at all, and consecutive allocations stay together (the rest of dv
//!   stays dv). Only when dv is too small is the best fit taken from the
//!   bins; of its remainder and the old dv the larger stays dv and the
//!   other is binned.
//! - **Top**: the free end of the newest segment. It is extended by
//!   `MemorySource::grow` (at least the shortfall; page sources round up to
//!   64 KiB pages and the rest stays in the top). A region contiguous with
//!   the top segment extends it (the segments merge). A region elsewhere
//!   (someone else grew memory in between) starts a new segment: the old top
//!   is binned and a fenced *record* chunk closes the old segment, so no
//!   chunk ever coalesces across a segment end. (A region that touches an
//!   older segment rather than the top one starts a segment of its own;
//!   with memory that only grows upward that needs the heap-base tail to be
//!   handed out late, so it is not worth the code.)
//! - **Aligned allocation** (alignment above 8, any power of two): one
//!   over-allocation of `size + align + MIN_CHUNK`, then the leading and
//!   trailing parts are freed. No loop, no ballooning.
//! - **realloc** resizes in place when shrinking (freeing the tail when it
//!   can be a chunk), when the next chunk is free or dv and big enough, or
//!   when the next chunk is the top; otherwise it allocates, copies, frees.
//! - **alloc_zeroed** skips the clearing when the block was carved from top
//!   space never handed out since the source zero-filled it (a watermark,
//!   raised only when a free moves the top down).
//! - **Fast lists** (feature `fast-lists`, off by default; no effect in a
//!   hardened build): the deferred coalescing of dlmalloc 2.7's fastbins.
//!   A freed chunk of up to 136 bytes (a request of up to 128) is not
//!   merged: it is marked (`CINUSE|FENCE`: in use for its neighbours,
//!   refused by the misuse check) and pushed on the singly linked list of
//!   its exact size, which the next request of that size pops. Small-object
//!   churn then reuses blocks without merging and re-splitting them. The
//!   lists are emptied (every chunk freed for real, merging with its free
//!   neighbours) before a tree chunk is split for a small request, before
//!   the top is carved for a large request and before it grows, so they
//!   neither break up large free chunks for small blocks, push the top up
//!   for large ones nor make the heap grow; and when the heap fails
//!   closed. About 300 bytes of code, which is why it is an option: the
//!   default build keeps the code-size target.
//! - **Statistics** ([`stats`](linmem_memory::RawHeap::stats),
//!   [`Heap::detailed_stats`]) are found by walking the segments, O(chunks),
//!   so the hot paths maintain no counters.
//! - **Misuse** is caught by O(1) checks on `dealloc` and `realloc`: a
//!   pointer outside every segment or misaligned, a pointer into the top or
//!   to a chunk not in use or whose successor's `PINUSE` says it is free
//!   (double free), a record, a chunk running past its segment, or a layout
//!   whose padded size does not give this chunk size or whose alignment the
//!   pointer lacks.
//!   The heap then *fails closed*: every later allocation returns `None`
//!   and every free returns
//!   [`HeapError::FailedClosed`](linmem_memory::HeapError::FailedClosed).
//!   [`Heap::free`] is the host API that panics with the error's message
//!   instead.
//!
//! ```
//! use core::alloc::Layout;
//! use linmem_dlmalloc::Heap;
//! use linmem_memory::{RawHeap, SimMemory};
//!
//! let mut heap = Heap::new(SimMemory::new(0, 16));
//! let layout = Layout::from_size_align(100, 8).unwrap();
//! let p = heap.alloc(layout).unwrap();
//! unsafe { heap.dealloc(p, layout).unwrap() };
//! heap.verify().unwrap();
//! ```
//!
//! As a wasm32 program's global allocator:
//!
//! ```ignore
//! #[global_allocator]
//! static A: linmem_dlmalloc::Global = linmem_dlmalloc::Global::new();
//! ```
//!
//! Feature `c-exports` (wasm32 only; does nothing elsewhere): makes `Global`
//! the module's global allocator and exports C's `malloc` family over it
//! (see `linmem_memory`'s "C exports").
//!
//! Feature `bench-unchecked`: measurement only: removes the misuse check of
//! free and realloc (the caller's pointer and layout are trusted) so the
//! benchmark can show its cost (variant `dlmalloc-port-unchecked`); never
//! enable it in a real build. The fail-closed tests do not hold under it.
//!
//! # Hardened build
//!
//! Feature `hardened` adds two defences against a program that misuses
//! freed memory, at a cost in speed (see the README's benchmark table):
//!
//! - **Safe-linking**: every free-list and tree link is stored XORed with a
//!   mask of its own address and a per-heap secret (as glibc does). A link
//!   that does not unmask to null or an 8-aligned address inside the heap
//!   is never followed: the operation treats it as null and the heap then
//!   fails closed with `HeapError::Corrupted`. The secret is odd, so a plain
//!   pointer written over a link (what a use-after-free write leaves) never
//!   unmasks to an aligned address. The secret is a hash of the heap's own
//!   address and its first segment's base: it differs between heaps and
//!   between differently laid-out programs, but it is *not* random (there is
//!   no entropy source in `no_std` wasm), so it stops blind forgeries, not
//!   an attacker who has read the module.
//! - **Poisoning**: every free chunk other than the top keeps a window of
//!   up to 256 bytes after its head and links filled with `0xDD`
//!   (re-filled when chunks merge or split); when such a chunk is handed out
//!   again, the part of its window handed out is checked first, so a write
//!   after free there is caught (and fails the heap closed) instead of
//!   surfacing in the next owner's data. The window keeps freeing and
//!   allocation O(1). Not checked: freed bytes past the window, the link
//!   words themselves (covered by safe-linking), the part of a free chunk a
//!   `realloc` grows into in place, and the top.
//!
//! # Layout
//!
//! ```text
//!  chunk p                                         next chunk
//!  v                                               v
//!  [prev_foot][size|C|P][ payload ............... ][prev_foot][size|..]
//!              ^ W       ^ 2W (8-aligned)          = payload tail while p is in use
//!
//!  free:  [..][size|P  ][fd][bk]([child0][child1][parent][index]) ... [size]
//!                                 (tree chunks only, >= 256 B)         ^ boundary tag
//!
//!  segment: [chunk][chunk] ... [top ........][reserve]   (newest segment)
//!           [chunk][chunk] ... [chunk][record|F|C]        (older segments)
//!                                      base, end, next-older record
//! ```
//!
//! # Invariants
//!
//! - **I1** The top segment is `[seg_base, seg_end)`; older segments are
//!   linked from `older` through their records. Every segment is tiled
//!   exactly by chunks at 8-aligned addresses from its base: the top segment
//!   up to the top chunk, which is followed by `TOP_FOOT` reserved bytes
//!   ending at `seg_end`; an older segment up to its record, a `FENCE|CINUSE`
//!   chunk that ends exactly at the segment's end and holds its base, end and
//!   the next older record. Segments are disjoint.
//! - **I2** Every chunk size is a multiple of 8 and at least `MIN_CHUNK`
//!   (records at least `REC_SIZE`); only records and fast chunks (I14)
//!   carry `FENCE`, always with `CINUSE`. A chunk's
//!   `PINUSE` bit says whether its predecessor is in use (set on the first
//!   chunk of a segment). A free chunk's size is repeated in its successor's
//!   `prev_foot` (its boundary tag).
//! - **I3** No two adjacent chunks are free (dv and the top count as free,
//!   fast chunks as in use).
//! - **I4** Every free chunk except dv and the top is in exactly one bin,
//!   the one for its size: small bin `size / 8` below 256 bytes (a
//!   null-terminated doubly linked list: the head's `bk` is null and
//!   `x.fd.bk == x`), tree bin `tree_index(size)` above. Bins hold only free
//!   chunks of the segments.
//! - **I5** Bit `i` of the small (tree) map is set iff small (tree) bin `i`
//!   is non-empty.
//! - **I6** Tree bin `i` is a bitwise trie: its chunks have
//!   `tree_index(size) == i` and store `i`; the root's parent is null and
//!   each child's parent is its node; a node reached from the root by the
//!   directions `b0, b1, ..` has those bits at the top of
//!   `size << tree_shift(i)`; equal sizes share one node, the others hang in
//!   its ring (circular, `x.fd.bk == x`) with a null parent.
//! - **I7** Either `dvsize == 0` and dv is null, or dv is a free chunk of
//!   exactly `dvsize` bytes in no bin.
//! - **I8** The top lies in the top segment, its head is `topsize|PINUSE`
//!   and `top + topsize + TOP_FOOT == seg_end`; it is in no bin. Before the
//!   first grow the heap has no segment, no top and no bins.
//! - **I9** `footprint == overhead + in_use + free`, where `in_use` is the
//!   bytes of in-use chunks (records and fast chunks excluded) and `free`
//!   the bytes of binned chunks, fast chunks, dv and the top; `overhead` covers at least the records
//!   and the top reserve. (The statistics are found by a walk, so no
//!   counter costs the hot paths anything. The heap never gives memory
//!   back, so its peak footprint is its footprint.)
//! - **I10** Every byte of the top segment at or above
//!   `max(fresh, top + 2W)` is zero (never handed out since the source
//!   zero-filled it). Carving from the top needs no update; when a free
//!   moves the top down, `fresh` rises to the old top's payload.
//! - **I11** Once a misuse is detected the heap is failed closed for good:
//!   allocation returns `None`, freeing returns `FailedClosed`.
//! - **I12** (hardened) Every link word of a binned chunk holds the link
//!   XORed with `((slot >> 12) << 3) ^ secret` (`slot`: the word's address),
//!   and every link unmasks to null or an 8-aligned address in `[lo, hi)`,
//!   the span of the segments.
//! - **I13** (hardened) Every free chunk other than the top holds `0xDD` in
//!   its window: the bytes after its head and links (from `MIN_CHUNK` for
//!   small chunks, `8W` for tree chunks), 256 of them or up to its end.
//!
//! - **I14** (feature `fast-lists`) A `CINUSE|FENCE` chunk that is not the
//!   record closing an older segment is a *fast chunk*: a freed chunk of
//!   `MIN_CHUNK..=FAST_MAX` bytes, on exactly one fast list, the one for
//!   its size (`size / 8`); the lists are null-terminated, linked through
//!   `fd`, and hold nothing else. `has_fast` is set while any list is
//!   non-empty. Its neighbours treat it as in use (its successor's
//!   `PINUSE` is set) and it is never dv, the top or binned.
//!
//! [`RawHeap::verify`](linmem_memory::RawHeap::verify) walks every segment
//! chunk by chunk and every bin, and checks I1..I10 (and I12, I13 in a
//! hardened build, I14 with fast lists); on a failed-closed heap it reports
//! I11.
#![no_std]

mod bins;
mod block;
mod heap;
mod verify;

pub use heap::{DetailedStats, Heap};

linmem_memory::global_allocator_type!(
    Heap<linmem_memory::WasmMemory<true>>,
    // SAFETY: `Global` is the module's global allocator, the only one that
    // may claim the memory above `__heap_base` (`with_heap_base`'s contract).
    Heap::new(unsafe { linmem_memory::WasmMemory::with_heap_base() })
);

#[cfg(test)]
mod tests;
