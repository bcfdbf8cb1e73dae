//! Threads: one heap of each allocator behind `linmem_memory::Locked`,
//! hammered through `GlobalAlloc` by several threads at once.
//!
//! Every thread allocates (plain and zeroed), reallocates and frees blocks
//! of random sizes and alignments; each block is filled with a pattern
//! unique to it and checked before every realloc and free, so an overlap
//! with another thread's block, or lost contents, shows. Some blocks are
//! handed to the next thread over a channel and freed there. At the end
//! the survivors are checked for overlap, freed, and the heap verified.
#![cfg(not(target_arch = "wasm32"))]

use std::alloc::{GlobalAlloc, Layout};
use std::ptr::NonNull;
use std::sync::Barrier;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread;

use linmem_memory::{Locked, RawHeap, SimMemory};
use linmem_tests::program::Rng;

/// Threads hammering the one heap.
const THREADS: usize = if cfg!(miri) { 4 } else { 6 };
/// Operations per thread.
const OPS: usize = if cfg!(miri) { 40 } else { 20_000 };
/// Blocks a thread keeps live at most.
const LIVE: usize = if cfg!(miri) { 8 } else { 64 };
/// The simulated memory's maximum, in 64 KiB pages (the bump arena never
/// reuses freed blocks, so it needs the most).
const MAX_PAGES: usize = if cfg!(miri) { 16 } else { 4096 };

/// A live block, with the id its pattern is derived from (unique across
/// threads: thread in the high bits, serial in the low ones).
#[derive(Debug)]
struct Block {
    p: NonNull<u8>,
    layout: Layout,
    id: u64,
}

// SAFETY: a block is owned by exactly one thread at a time (it moves over
// the channel), and the heap it came from is shared behind a lock.
unsafe impl Send for Block {}

impl Block {
    fn byte(id: u64, i: usize) -> u8 {
        let x = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (i as u64).wrapping_mul(0xff51_afd7);
        (x ^ (x >> 29)) as u8
    }

    fn fill(&self) {
        for i in 0..self.layout.size() {
            // SAFETY: the block is live for `layout.size()` bytes.
            unsafe { self.p.as_ptr().add(i).write(Self::byte(self.id, i)) };
        }
    }

    /// Checks the first `len` bytes hold the pattern of `id`.
    fn check(&self, id: u64, len: usize, what: &str) {
        for i in 0..len {
            // SAFETY: the block is live for at least `len` bytes.
            let got = unsafe { self.p.as_ptr().add(i).read() };
            assert_eq!(
                got,
                Self::byte(id, i),
                "{what}: block {id:#x} at {:#x} byte {i} overwritten",
                self.p.as_ptr().addr()
            );
        }
    }
}

fn random_layout(rng: &mut Rng) -> Layout {
    let size = match rng.below(100) {
        0..=69 => 1 + rng.below(128),
        70..=94 => 1 + rng.below(2048),
        _ => 1 + rng.below(if cfg!(miri) { 1024 } else { 20_000 }),
    };
    let align = match rng.below(100) {
        0..=79 => 1 << rng.below(4),
        80..=97 => 1 << (4 + rng.below(4)),
        _ => 4096,
    };
    Layout::from_size_align(size, align).unwrap()
}

/// One thread's share of the work; returns the blocks it still holds.
fn worker<H: RawHeap>(
    heap: &Locked<H>,
    t: usize,
    to_next: Sender<Block>,
    from_prev: Receiver<Block>,
    start: &Barrier,
) -> Vec<Block> {
    let mut rng = Rng::new(0x2545_f491_4f6c_dd1d ^ ((t as u64 + 1) << 32));
    let mut live: Vec<Block> = Vec::new();
    let mut serial = 0u64;
    let mut fresh_id = || {
        serial += 1;
        ((t as u64) << 40) | serial
    };
    start.wait();
    for _ in 0..OPS {
        // Blocks handed over by the previous thread: checked, then kept or
        // freed here.
        while let Ok(b) = from_prev.try_recv() {
            b.check(b.id, b.layout.size(), "received");
            if rng.below(2) == 0 {
                free(heap, b);
            } else {
                live.push(b);
            }
        }
        match rng.below(10) {
            0..=3 if live.len() < LIVE => {
                let layout = random_layout(&mut rng);
                let zeroed = rng.below(4) == 0;
                // SAFETY: a non-zero-size layout.
                let p = unsafe {
                    if zeroed {
                        heap.alloc_zeroed(layout)
                    } else {
                        heap.alloc(layout)
                    }
                };
                let p = NonNull::new(p).expect("allocation failed with memory to spare");
                assert_eq!(p.as_ptr().addr() % layout.align(), 0, "misaligned");
                if zeroed {
                    // SAFETY: the block is live for `layout.size()` bytes.
                    let zero = (0..layout.size()).all(|i| unsafe { p.as_ptr().add(i).read() } == 0);
                    assert!(zero, "alloc_zeroed returned dirty memory");
                }
                let b = Block {
                    p,
                    layout,
                    id: fresh_id(),
                };
                b.fill();
                live.push(b);
            }
            4..=5 if !live.is_empty() => {
                let b = live.swap_remove(rng.below(live.len()));
                free(heap, b);
            }
            6..=7 if !live.is_empty() => {
                let i = rng.below(live.len());
                let b = &live[i];
                b.check(b.id, b.layout.size(), "before realloc");
                let new_size = random_layout(&mut rng).size();
                // SAFETY: `b` is live for its layout; the size fits isize.
                let p = unsafe { heap.realloc(b.p.as_ptr(), b.layout, new_size) };
                let p = NonNull::new(p).expect("realloc failed with memory to spare");
                let moved = Block {
                    p,
                    layout: Layout::from_size_align(new_size, b.layout.align()).unwrap(),
                    id: b.id,
                };
                assert_eq!(p.as_ptr().addr() % b.layout.align(), 0, "misaligned");
                moved.check(b.id, b.layout.size().min(new_size), "after realloc");
                let refilled = Block {
                    id: fresh_id(),
                    ..moved
                };
                refilled.fill();
                live[i] = refilled;
            }
            8 if !live.is_empty() => {
                let b = live.swap_remove(rng.below(live.len()));
                to_next.send(b).expect("the next thread is alive");
            }
            _ => thread::yield_now(),
        }
    }
    // Hand-over ends: the next thread sees its channel close once this
    // sender is gone; take what the previous thread still sends.
    drop(to_next);
    for b in from_prev {
        b.check(b.id, b.layout.size(), "received late");
        live.push(b);
    }
    live
}

fn free<H: RawHeap>(heap: &Locked<H>, b: Block) {
    b.check(b.id, b.layout.size(), "before free");
    // SAFETY: `b` is a live block of this heap for its layout, freed once.
    unsafe { heap.dealloc(b.p.as_ptr(), b.layout) };
}

/// Runs the threads over one heap made by `make`; `counts_blocks`: the
/// allocator counts live blocks (all but the bump arena).
fn hammer<H: RawHeap + Send>(make: fn(SimMemory) -> H, counts_blocks: bool) {
    let heap = Locked::new(make(SimMemory::new(0, MAX_PAGES)));
    let start = Barrier::new(THREADS);
    // Channel `t` carries blocks from thread `t - 1` to thread `t`.
    let (mut senders, receivers): (Vec<Sender<Block>>, Vec<Receiver<Block>>) =
        (0..THREADS).map(|_| channel()).unzip();
    senders.rotate_left(1);
    let mut survivors: Vec<Block> = thread::scope(|s| {
        let workers: Vec<_> = senders
            .into_iter()
            .zip(receivers)
            .enumerate()
            .map(|(t, (to_next, from_prev))| {
                let (heap, start) = (&heap, &start);
                s.spawn(move || worker(heap, t, to_next, from_prev, start))
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a worker panicked"))
            .collect()
    });
    survivors.sort_by_key(|b| b.p.as_ptr().addr());
    for w in survivors.windows(2) {
        let end = w[0].p.as_ptr().addr() + w[0].layout.size();
        assert!(end <= w[1].p.as_ptr().addr(), "live blocks overlap");
    }
    for b in survivors {
        free(&heap, b);
    }
    let stats = heap
        .lock()
        .verify()
        .unwrap_or_else(|v| panic!("verify: {v}"));
    if counts_blocks {
        assert_eq!(stats.live_blocks, 0, "blocks lost: {stats:?}");
    }
}

#[test]
fn bump_arena_shared_by_threads_keeps_every_block_intact() {
    hammer(linmem_bump::Arena::new, false);
}

#[test]
fn dlmalloc_shared_by_threads_keeps_every_block_intact() {
    hammer(linmem_dlmalloc::Heap::new, true);
}

#[test]
fn emmalloc_shared_by_threads_keeps_every_block_intact() {
    hammer(linmem_emmalloc::Heap::new, true);
}

#[test]
fn ems_shared_by_threads_keeps_every_block_intact() {
    hammer(linmem_ems::Heap::new, true);
}
