//! Operation programs: random sequences of heap operations, run against the
//! shadow model with the heap's `verify()` after every step.
//!
//! The runner is an ordinary function: proptest drives it on the host, a
//! seeded generator drives it inside wasm and in fuzzing.

use std::alloc::Layout;

use linmem_memory::RawHeap;

use crate::model::Model;
use crate::{Caps, Failure, Knobs, scale};

/// One step of a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Allocate `size` bytes aligned to `1 << align_log`.
    Alloc {
        /// The size in bytes (at least 1).
        size: usize,
        /// log2 of the alignment (0..=16).
        align_log: u8,
    },
    /// As `Alloc`, zeroed; the block must read as zero.
    AllocZeroed {
        /// The size in bytes (at least 1).
        size: usize,
        /// log2 of the alignment (0..=16).
        align_log: u8,
    },
    /// Free the `pick`-th live block (modulo the live count).
    Dealloc {
        /// Which live block.
        pick: usize,
    },
    /// Resize the `pick`-th live block to `new_size`.
    Realloc {
        /// Which live block.
        pick: usize,
        /// The new size in bytes (at least 1).
        new_size: usize,
    },
    /// Make the heap's next grow fail.
    FailNextGrow,
    /// Another party grows memory by `pages` pages.
    ForeignGrow {
        /// Pages grown behind the heap's back.
        pages: usize,
    },
}

/// What a finished program saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Operations run.
    pub steps: usize,
    /// Allocations (and reallocs) refused because a grow failed.
    pub refused: usize,
    /// Blocks live at the end.
    pub live: usize,
}

fn layout(size: usize, align_log: u8) -> Result<Layout, Failure> {
    Layout::from_size_align(size, 1usize << align_log)
        .map_err(|_| Failure::new(format!("bad layout {size} / 2^{align_log}")))
}

/// Runs `ops` on `heap` over `mem`, checking the model after every step.
///
/// An allocation may fail only when a grow failed during it (injected, or
/// the memory's maximum); a failed realloc must leave the old block intact.
/// At the end every live block is freed, and the heap checked once more.
pub fn run<H: RawHeap, K: Knobs>(
    heap: &mut H,
    mem: &K,
    caps: &Caps,
    ops: &[Op],
) -> Result<Outcome, Failure> {
    run_with(heap, mem, caps, ops, Model::new().full_check_limit)
}

/// [`run`], with blocks larger than `full_check_limit` checked in a window
/// at each end only ([`Model::full_check_limit`]).
pub fn run_with<H: RawHeap, K: Knobs>(
    heap: &mut H,
    mem: &K,
    caps: &Caps,
    ops: &[Op],
    full_check_limit: usize,
) -> Result<Outcome, Failure> {
    let mut model = Model::new();
    model.full_check_limit = full_check_limit;
    let mut out = Outcome::default();
    for (i, &op) in ops.iter().enumerate() {
        step(heap, mem, &mut model, op, &mut out).map_err(|e| e.at(i, op))?;
        model.check_all().map_err(|e| e.at(i, op))?;
        check_heap(heap, caps, &model).map_err(|e| e.at(i, op))?;
        out.steps += 1;
    }
    out.live = model.len();
    free_all(heap, &mut model)?;
    check_heap(heap, caps, &model)?;
    Ok(out)
}

/// Runs one operation.
pub fn step<H: RawHeap, K: Knobs>(
    heap: &mut H,
    mem: &K,
    model: &mut Model,
    op: Op,
    out: &mut Outcome,
) -> Result<(), Failure> {
    let failed_before = mem.failed_grows();
    match op {
        Op::Alloc { size, align_log } | Op::AllocZeroed { size, align_log } => {
            let zeroed = matches!(op, Op::AllocZeroed { .. });
            let l = layout(size, align_log)?;
            let p = if zeroed {
                heap.alloc_zeroed(l)
            } else {
                heap.alloc(l)
            };
            match p {
                Some(p) => {
                    model.insert(p, l, zeroed)?;
                    // SAFETY: `p` is live for `l`.
                    let usable = unsafe { heap.usable_size(p, l) };
                    if usable < size {
                        return Err(Failure::new(format!("usable size {usable} < {size}")));
                    }
                }
                None if mem.failed_grows() > failed_before => out.refused += 1,
                None => return Err(Failure::new("allocation failed though memory could grow")),
            }
        }
        Op::Dealloc { pick } => free_nth(heap, model, pick)?,
        Op::Realloc { pick, new_size } => {
            if let Some(b) = model.nth(pick) {
                // SAFETY: `b` is live with this layout (the model says so).
                match unsafe { heap.realloc(b.ptr, b.layout, new_size) } {
                    Some(p) => model.moved(b, p, new_size)?,
                    None if mem.failed_grows() > failed_before => out.refused += 1,
                    None => return Err(Failure::new("realloc failed though memory could grow")),
                }
            }
        }
        Op::FailNextGrow => mem.fail_next_grows(1),
        Op::ForeignGrow { pages } => {
            mem.foreign_grow(pages);
        }
    }
    Ok(())
}

/// Frees the `pick`-th live block of the model (modulo the live count), if
/// any is live.
pub fn free_nth<H: RawHeap>(heap: &mut H, model: &mut Model, pick: usize) -> Result<(), Failure> {
    if let Some(b) = model.nth(pick) {
        model.remove(b.ptr);
        // SAFETY: `b` is live with this layout (the model says so).
        unsafe { heap.dealloc(b.ptr, b.layout) }
            .map_err(|e| Failure::new(format!("dealloc of a live block refused: {e}")))?;
    }
    Ok(())
}

/// Frees every live block of the model.
pub fn free_all<H: RawHeap>(heap: &mut H, model: &mut Model) -> Result<(), Failure> {
    while !model.is_empty() {
        free_nth(heap, model, 0)?;
    }
    Ok(())
}

/// `verify()` plus what the stats must say about the model.
pub fn check_heap<H: RawHeap>(heap: &H, caps: &Caps, model: &Model) -> Result<(), Failure> {
    let stats = heap
        .verify()
        .map_err(|v| Failure::new(format!("verify: {v}")))?;
    if caps.counts_live_blocks && stats.live_blocks != model.len() {
        return Err(Failure::new(format!(
            "stats count {} live blocks, the model {}",
            stats.live_blocks,
            model.len()
        )));
    }
    if caps.counts_live_blocks && stats.in_use < model.live_bytes() {
        return Err(Failure::new(format!(
            "stats count {} bytes in use, the model holds {}",
            stats.in_use,
            model.live_bytes()
        )));
    }
    if stats != heap.stats() {
        return Err(Failure::new("verify() and stats() disagree"));
    }
    Ok(())
}

/// A small, fast, seedable generator (xorshift64*), for programs inside wasm
/// and for fuzzing with a fixed seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// A size: mostly small, sometimes medium, rarely large.
pub fn size_from(r: &mut Rng) -> usize {
    match r.below(100) {
        0..=59 => 1 + r.below(256),
        60..=89 => 1 + r.below(scale(4096, 1024)),
        90..=98 => 1 + r.below(scale(64 * 1024, 2048)),
        _ => 1 + r.below(scale(512 * 1024, 4096)),
    }
}

/// An alignment's log2: mostly natural, sometimes up to a page.
pub fn align_log_from(r: &mut Rng) -> u8 {
    match r.below(100) {
        0..=79 => r.below(4) as u8,
        80..=94 => 4 + r.below(5) as u8,
        _ => 9 + r.below(8) as u8,
    }
}

/// A random program of `len` operations from `seed`.
pub fn generate(seed: u64, len: usize) -> Vec<Op> {
    let mut r = Rng::new(seed);
    (0..len)
        .map(|_| match r.below(100) {
            0..=39 => Op::Alloc {
                size: size_from(&mut r),
                align_log: align_log_from(&mut r),
            },
            40..=47 => Op::AllocZeroed {
                size: size_from(&mut r),
                align_log: align_log_from(&mut r),
            },
            48..=77 => Op::Dealloc {
                pick: r.below(1 << 16),
            },
            78..=95 => Op::Realloc {
                pick: r.below(1 << 16),
                new_size: size_from(&mut r),
            },
            96..=97 => Op::FailNextGrow,
            _ => Op::ForeignGrow {
                pages: 1 + r.below(2),
            },
        })
        .collect()
}

/// Operations [`from_bytes`] decodes at most.
pub const MAX_DECODED_OPS: usize = 4096;

/// Decodes any byte string into a program (the fuzzers' input format).
///
/// Each operation takes a tag byte and up to three argument bytes (missing
/// bytes read as zero), so that every input is a valid program and small
/// mutations make small changes: the tag's low four bits pick the kind
/// (6/16 alloc, 2/16 zeroed alloc, 4/16 free, 2/16 realloc, 1/16 failing
/// grow, 1/16 foreign growth), sizes come in four classes up to 1 MiB, and
/// alignments are mostly small, up to 64 KiB.
pub fn from_bytes(data: &[u8]) -> Vec<Op> {
    let mut bytes = data.iter().copied();
    let mut ops = Vec::new();
    while let Some(tag) = bytes.next() {
        if ops.len() == MAX_DECODED_OPS {
            break;
        }
        let mut byte = || bytes.next().unwrap_or(0);
        let op = match tag & 15 {
            0..=7 => {
                let size = size_from_bytes(byte(), byte());
                let a = byte();
                let align_log = if a & 0x80 == 0 {
                    a & 3
                } else {
                    (a & 0x7F) % 17
                };
                if tag & 15 < 6 {
                    Op::Alloc { size, align_log }
                } else {
                    Op::AllocZeroed { size, align_log }
                }
            }
            8..=11 => Op::Dealloc {
                pick: usize::from(byte()),
            },
            12..=13 => Op::Realloc {
                pick: usize::from(byte()),
                new_size: size_from_bytes(byte(), byte()),
            },
            14 => Op::FailNextGrow,
            _ => Op::ForeignGrow {
                pages: 1 + usize::from(tag >> 7),
            },
        };
        ops.push(op);
    }
    ops
}

/// A size from two bytes: the top three bits pick the class (half up to
/// 256 B, a quarter up to 4 KiB, an eighth up to 64 KiB and up to 1 MiB).
fn size_from_bytes(hi: u8, lo: u8) -> usize {
    let v = usize::from(u16::from_be_bytes([hi, lo]));
    let low = v & 0x1FFF;
    match v >> 13 {
        0..=3 => 1 + (low & 0xFF),
        4..=5 => 1 + (low & 0xFFF),
        6 => 1 + low * 8,
        _ => 1 + low * 128,
    }
}

/// Blocks of programs decoded from bytes are checked whole up to this size,
/// larger ones in a window at each end (every live block is checked after
/// every step: this keeps a step's cost bounded for the fuzzers).
pub const BYTES_CHECK_LIMIT: usize = scale(512, 256);

/// The heap-page budget of a program decoded from bytes (4 MiB): a program
/// that asks for more sees its allocations refused, which it tolerates. (A
/// simulated memory costs its whole size to make: kept small for the
/// fuzzers' rate.)
pub const BYTES_PAGES: usize = scale(64, 48);

/// The pages a program decoded from bytes may grow by as a foreign party
/// (more such grows fail).
pub const BYTES_FOREIGN_PAGES: usize = 16;

/// Decodes `data` ([`from_bytes`]) and runs it on a fresh heap of `s`
/// against the model ([`run`]): what each fuzz target does per input.
pub fn run_bytes<H: RawHeap, M: crate::TestMemory>(
    s: &crate::Subject<H, M>,
    data: &[u8],
) -> Result<Outcome, Failure> {
    let ops = from_bytes(data);
    let (mut heap, mem) = s.heap_with(BYTES_PAGES, BYTES_FOREIGN_PAGES);
    run_with(&mut heap, &mem, &s.caps, &ops, BYTES_CHECK_LIMIT)
}

/// One operation of a soak: the mix of [`generate`], with the live set
/// kept near `target` blocks (frees grow likelier as it fills) and sizes
/// mostly small, so that a million operations stay within memory. (The
/// soak grows memory as a foreign party itself, at a bounded rate.)
pub fn soak_op(r: &mut Rng, live: usize, target: usize) -> Op {
    let size = |r: &mut Rng| match r.below(1000) {
        0..=699 => 1 + r.below(128),
        700..=949 => 1 + r.below(scale(2048, 256)),
        950..=998 => 1 + r.below(scale(16 * 1024, 1024)),
        _ => 1 + r.below(scale(256 * 1024, 4096)),
    };
    let free_share = 30 * live / target.max(1);
    let roll = r.below(100);
    if roll < free_share.min(60) {
        return Op::Dealloc {
            pick: r.below(1 << 16),
        };
    }
    match r.below(100) {
        0..=59 => Op::Alloc {
            size: size(r),
            align_log: align_log_from(r),
        },
        60..=69 => Op::AllocZeroed {
            size: size(r),
            align_log: align_log_from(r),
        },
        70..=97 => Op::Realloc {
            pick: r.below(1 << 16),
            new_size: size(r),
        },
        _ => Op::FailNextGrow,
    }
}

/// proptest strategies for programs (host only).
#[cfg(not(target_arch = "wasm32"))]
pub mod strategy {
    use proptest::prelude::*;

    use super::Op;

    fn size() -> impl Strategy<Value = usize> {
        prop_oneof![
            6 => 1usize..=256,
            3 => 1usize..=crate::scale(4096, 1024),
            1 => 1usize..=crate::scale(65536, 4096),
        ]
    }

    fn align_log() -> impl Strategy<Value = u8> {
        prop_oneof![8 => 0u8..=3, 2 => 4u8..=8, 1 => 9u8..=16]
    }

    /// One operation, weighted like [`generate`](super::generate).
    pub fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            40 => (size(), align_log()).prop_map(|(size, align_log)| Op::Alloc { size, align_log }),
            8 => (size(), align_log())
                .prop_map(|(size, align_log)| Op::AllocZeroed { size, align_log }),
            30 => any::<u16>().prop_map(|p| Op::Dealloc { pick: p as usize }),
            18 => (any::<u16>(), size())
                .prop_map(|(p, new_size)| Op::Realloc { pick: p as usize, new_size }),
            2 => Just(Op::FailNextGrow),
            2 => (1usize..=2).prop_map(|pages| Op::ForeignGrow { pages }),
        ]
    }

    /// A program of up to `max_len` operations.
    pub fn program(max_len: usize) -> impl Strategy<Value = Vec<Op>> {
        proptest::collection::vec(op(), 1..=max_len)
    }
}
