//! A port of WAMR's ems heap (`core/shared/mem-alloc/ems`) for WebAssembly
//! linear memory: a runtime's app heap that is pool-relative, relocatable
//! and fails closed.
//!
//! # Algorithm
//!
//! The heap manages one pool: a run of bytes addressed by `u32` offsets from
//! the pool base. Blocks tile the pool; each starts with a 4-byte header
//! (WAMR's HMU) holding usage bits, a previous-in-use bit and the size.
//! Free blocks also keep their size in their last word (a footer), so a
//! freed block merges with both neighbours in O(1).
//!
//! Free blocks below 256 bytes wait in 32 exact-size, doubly linked lists
//! (8-byte steps) with a bitmap of the non-empty ones: a small request takes
//! the head of the smallest non-empty list that fits. Larger free blocks sit
//! in size-ordered AVL trees, one per quarter power of two (96 trees, with a
//! bitmap of the non-empty ones), so each tree stays small. WAMR's tree is
//! unbalanced; ours stay balanced, so every operation is logarithmic even
//! when blocks are freed in increasing size order. Nodes keep a parent link,
//! so a node leaves its tree without a search from the root. Blocks of equal
//! size are chained behind their tree node, so they come and go without
//! rebalancing. Allocation is best fit: the best fit in the request's own
//! tree, else the smallest block of the next non-empty tree; the rest of a
//! split block goes back as a free block. When the best fit is a tree node
//! without equal-size companions and its rest stays in the same tree above
//! every smaller size there, the block is allocated from its end and the
//! node just shrinks in place, with no tree update at all (aligned requests
//! too: the block goes at the highest aligned payload). Likewise a freed
//! block merging with a tree node takes the node's place, resized in place,
//! when its new size keeps the tree order. The free
//! block at the end of the pool (the *top*, as in dlmalloc) stays out of the
//! lists and the tree: it serves only requests nothing else fits, is split
//! at its start, and absorbs growth.
//!
//! Every link, in the bookkeeping and in the pool, is an offset from the
//! pool base, never an address, so after the runtime moves linear memory
//! [`Heap::migrate`] / [`EmsPool::migrate`] is O(1): only the base changes
//! (WAMR walks and rewrites the whole heap).
//!
//! Aligned allocation (any power of two up to 64 KiB and beyond, as long as
//! it fits the pool) over-allocates and splits off a free leading block; the
//! result is an ordinary block, so `free` and `realloc` treat it like any
//! other. Realloc keeps an aligned block's position when it shrinks or grows
//! into a free next block, and otherwise moves it to a block with the same
//! alignment: realloc of aligned blocks is supported, not refused as in WAMR.
//!
//! Every `free`, `realloc` and `usable_size` first checks, in O(1), that the
//! pointer is inside the pool and 8-aligned, that its header is sane and in
//! use, and that the neighbours agree (the next block's previous-in-use bit
//! is set; a free neighbour's footer matches its header). Every link read
//! from the pool is checked to name a block of the pool, and every walk is
//! bounded. Any failed check sets a sticky corrupted flag: from then on every
//! operation fails ([`is_corrupted`](Heap::is_corrupted)).
//!
//! # Front ends
//!
//! - [`Heap`]: bookkeeping outside the pool (WAMR's
//!   `gc_init_with_struct_and_pool`), over a [`MemorySource`](linmem_memory::MemorySource)
//!   ([`Heap::new`], lazy, grows; this is [`RawHeap`](linmem_memory::RawHeap)
//!   and the global allocator) or over a caller's buffer ([`Heap::with_pool`]).
//! - [`EmsPool`]: bookkeeping at the start of the pool (WAMR's
//!   `gc_init_with_pool`).
//! - [`guest::GuestHeap`]: the host-side runtime API, a heap inside a guest's
//!   linear memory managed by guest addresses through a byte slice, in safe
//!   Rust.
//!
//! Growth: a pool can be extended at its end ([`Heap::extend`],
//! [`EmsPool::extend`], [`guest::GuestHeap::extend`]); the new space merges
//! with a free tail block. [`Heap`] over a memory source extends its pool
//! when the source grows contiguously; when another party grew memory in
//! between, the foreign bytes become one *gap block* (marked in use, never
//! touched inside) and the new region joins the same pool, so one pool and
//! one offset space serve all growth (I9); [`guest::GuestHeap::extend_from`]
//! does the same for a runtime whose guest grew its memory itself. Growth
//! below the pool base or beyond 4 GiB of offsets cannot be used: the
//! allocation returns `None`.
//!
//! Feature `bench-unchecked`: measurement only: removes the integrity checks
//! (of free, realloc and usable size) so the benchmark can show their cost;
//! never enable it in a real build. The rest of the heap is unchanged; the
//! fail-closed unit tests do not hold under it.
//!
//! Feature `hardened`: two defences against heap exploitation, at a cost
//! measured by the benchmark harness (variant `ems-hardened`):
//!
//! - *Safe-linking* (as glibc does): every free-list and tree link in the
//!   pool (list next/prev, tree left/right/parent, equal-size chain
//!   next/prev) is stored XORed with a key computed from the heap's secret
//!   and the link's own pool-relative offset (so [`Heap::migrate`] stays
//!   O(1)); every read unmasks it and checks that it names a block of the
//!   pool (range, 4 mod 8) before following it. A forged or damaged link
//!   almost surely unmasks to garbage and fails the heap closed (I12).
//! - *Poisoning*: a filed free block's body beyond its bookkeeping words is
//!   filled with a fixed pattern (all of it for blocks below 256 bytes, a
//!   64-byte prefix for larger ones), and the pattern is checked when the
//!   block is handed out again (the exact-list pop and the tree take), so a
//!   use-after-free write fails the heap closed instead of a dirty block
//!   being returned (I13). Allocation of zeroed memory still zeroes.
//!
//! `verify()` also checks both. The secret is mixed at init from the pool
//! base address, the bookkeeping's and a stack address, the pool geometry
//! and a compile-time constant: `no_std` has no entropy source, and on
//! wasm32 all of these are deterministic. So the mask stops blind forging
//! (an attacker who can only write, not read, the heap) and catches
//! accidental corruption; it does not stop an attacker who can read heap
//! memory or predict the layout (one masked link and its location give
//! the secret away). Not covered: the top block (the free block at the
//! pool end, which is never poisoned), writes into a large free block
//! beyond its poisoned prefix, and a write of the poison pattern itself.
//!
//! Feature `c-exports` (wasm32 only; does nothing elsewhere): makes `Global`
//! the module's global allocator and exports C's `malloc` family over it
//! (see `linmem_memory`'s "C exports").
//!
//! # Block layout
//!
//! ```text
//! header (HMU), 4 bytes:  | size/8 (bits 31..3) | P (bit 2) | use (bits 1..0) |
//!                          use: 0 free, 1 used, 2 gap, 3 reserved
//!                          P: the previous block is not free
//!
//! live block:   | hdr | payload (8-aligned) ..................... |
//! free block:   | hdr | links (list or tree) | ...... | size      |
//!                 +0    +4                             size-4
//!
//! pool: | [bookkeeping] | pad | blk @4 mod 8 | blk | ... | sentinel hdr |
//!       0                     first                     end-4          end
//! ```
//!
//! # Invariants
//!
//! - **I1** Pool geometry: `first % 8 == 4`, `end % 8 == 0`, at least one
//!   block fits; the word at `end - 4` is the end sentinel (used, size 0).
//!   Payload offsets are multiples of 8, and the pool base is 8-aligned.
//! - **I2** Blocks tile `[first, end - 4)`: walking by header sizes from
//!   `first` lands exactly on the sentinel; every size is a multiple of 8,
//!   at least 16; the usage bits are never 3.
//! - **I3** A header's previous-in-use bit is set exactly when the block
//!   before it is not free (the first block's bit is set).
//! - **I4** No two free blocks are adjacent (coalescing is complete).
//! - **I5** A free block's last word equals its size.
//! - **I6** The free block that ends at the sentinel, if any, is the *top*
//!   (`Core::top`) and in no other structure; every other free block below
//!   256 bytes is in the list of its exact size, doubly linked with
//!   consistent back links; a list's bitmap bit is set exactly when the list
//!   is non-empty; every free block is in exactly one free structure.
//! - **I7** Every other free block of 256 bytes or more is a node of the
//!   size tree of its size class or chained behind the node of its size; a
//!   tree's bitmap bit is set exactly when it is non-empty; each tree is ordered by size
//!   with distinct node sizes, every node's parent link names its parent (0
//!   at the root), every node's stored height is right and its
//!   subtrees differ in height by at most one (AVL), so its height is below
//!   `1.45 * log2(n) + 2`.
//! - **I8** The counters (bytes and blocks in use and free) agree with the
//!   blocks; the high-water mark is at least the bytes in use.
//! - **I9** A gap block covers memory between two regions that is not the
//!   heap's: it is never freed, merged, or read or written inside.
//! - **I10** Every access to pool memory goes through an accessor that
//!   refuses offsets outside its window; for the pointer front ends the
//!   window `[base + lo, base + limit)` is valid memory owned by the heap
//!   (the pool, gap interiors being linear memory of the same module), and
//!   for [`EmsPool`] it excludes the in-pool bookkeeping.
//! - **I11** Once any check fails, the corrupted flag stays set and no
//!   operation touches the pool again.
//! - **I12** (feature `hardened`) Every link field of a listed free block
//!   holds its link XORed with `link_key(secret, offset of the field)`,
//!   the secret chosen at init; an unmasked link is 0 or a block offset.
//! - **I13** (feature `hardened`) Every free block in a list or a tree
//!   holds the poison word throughout its poisoned range (the body after
//!   its link words up to its footer below 256 bytes, the 64 bytes after
//!   them from 256 bytes on).
//!
//! `verify()` checks I1–I9, I11 and (under `hardened`) I12–I13 by a full
//! walk; I10 is enforced by every access.
#![no_std]

#[cfg(test)]
extern crate std;

mod bins;
mod block;
pub mod guest;
mod heap;
mod verify;

pub use heap::{EmsPool, Heap, PoolError};
pub use verify::{EmsStats, HIST_BUCKETS};

#[cfg(target_arch = "wasm32")]
use linmem_memory::WasmMemory;

linmem_memory::global_allocator_type!(
    Heap<WasmMemory<true>>,
    // SAFETY: `Global` is meant to be the module's one global allocator, so
    // this is the only user of the memory above `__heap_base`.
    Heap::new(unsafe { WasmMemory::with_heap_base() })
);

#[cfg(test)]
mod tests;
