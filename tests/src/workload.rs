//! The suite's workloads, and fault injection at scale over all of them.
//!
//! A workload is a fixed sequence of heap operations written against a
//! [`Driver`], which checks the shadow model and the heap after every
//! operation. The same workload runs twice over:
//!
//! - plainly, as a case of its own (every operation must succeed);
//! - under fault injection ([`every_grow_fails_in_turn`]): a first run counts
//!   the grow requests `N` the workload makes, then for every `k` in `0..N`
//!   it runs again with request `k` failing, and again with requests
//!   `k..k + 3` failing in a row. An operation refused then must leave every
//!   live block intact and the heap consistent, and the driver retries it:
//!   once the injected failures are used up it must succeed, and the rest of
//!   the workload runs on the same heap.

use std::alloc::Layout;

use linmem_memory::{PAGE_SIZE, RawHeap};

use crate::model::{Block, Model};
use crate::program::{Op, Outcome, Rng, check_heap, free_all, free_nth, generate, soak_op, step};
use crate::{Caps, Failure, Subject, TestMemory, scale};

/// A heap, its memory and the shadow model, driven one checked operation at
/// a time.
pub struct Driver<H, M> {
    /// The heap under test.
    pub heap: H,
    /// Its memory (a handle to the same knobs).
    pub mem: M,
    /// What the heap must be holding.
    pub model: Model,
    caps: Caps,
    /// Refused attempts an operation may see before it must succeed.
    retries: usize,
    /// Operations after which the model and the heap are still checked:
    /// all of them in a plain run; under faults none before the first
    /// fault (the counting run checked that part) and [`CHECKS_AFTER_FAULT`]
    /// after each (the end state is checked by [`finish`](Self::finish)).
    checks_left: usize,
    /// Whether a fault has been seen.
    faulted: bool,
    /// Operations refused (and retried).
    pub refused: usize,
}

/// Operations checked in full after a fault (see [`Driver`]).
pub const CHECKS_AFTER_FAULT: usize = 16;

/// A workload: operations on a [`Driver`].
pub type Workload<H, M> = fn(&mut Driver<H, M>) -> Result<(), Failure>;

impl<H: RawHeap, M: TestMemory> Driver<H, M> {
    /// A fresh heap of `s` over a memory it may grow by `pages` pages; every
    /// operation must succeed and is checked.
    pub fn new(s: &Subject<H, M>, pages: usize) -> Self {
        Self::with_budget(s, pages, crate::FOREIGN_PAGES_BUDGET)
    }

    /// As [`new`](Self::new), with room for `foreign` pages of foreign
    /// growth.
    pub fn with_budget(s: &Subject<H, M>, pages: usize, foreign: usize) -> Self {
        let (heap, mem) = s.heap_with(pages, foreign);
        let mut model = Model::new();
        // Under Miri, byte-by-byte checks of large blocks take long and find
        // nothing more: windows at the ends only.
        model.full_check_limit = scale(model.full_check_limit, 512);
        Self {
            heap,
            mem,
            model,
            caps: s.caps,
            retries: 0,
            checks_left: usize::MAX,
            faulted: false,
            refused: 0,
        }
    }

    /// As [`with_budget`](Self::with_budget), with the grow requests
    /// `from..to` failing: an operation may be refused up to `to - from`
    /// times before it must succeed. Checks start with the first fault.
    pub fn with_faults(
        s: &Subject<H, M>,
        (pages, foreign): (usize, usize),
        from: usize,
        to: usize,
    ) -> Self {
        let d = Self::with_budget(s, pages, foreign);
        d.mem.fail_grow_requests(from, to);
        Self {
            retries: to - from,
            checks_left: 0,
            ..d
        }
    }

    /// Runs `attempt` until it succeeds; each refusal must come from a
    /// failed grow and lose nothing.
    fn retrying<T>(
        &mut self,
        what: &str,
        mut attempt: impl FnMut(&mut H) -> Option<T>,
    ) -> Result<T, Failure> {
        for _ in 0..=self.retries {
            let failed_before = self.mem.failed_grows();
            if let Some(t) = attempt(&mut self.heap) {
                return Ok(t);
            }
            if self.mem.failed_grows() == failed_before {
                return Err(Failure::new(format!(
                    "{what} refused though memory could grow"
                )));
            }
            self.refused += 1;
            self.checks_left = self.checks_left.max(CHECKS_AFTER_FAULT);
            self.model
                .check_all()
                .and_then(|()| check_heap(&self.heap, &self.caps, &self.model))
                .map_err(|e| e.context(&format!("after a refused {what}")))?;
        }
        Err(Failure::new(if self.retries == 0 {
            format!("{what} refused: a grow failed at the memory's maximum")
        } else {
            format!("{what} still refused with memory free to grow again")
        }))
    }

    fn checked(&mut self) -> Result<(), Failure> {
        if !self.faulted && self.mem.failed_grows() > 0 {
            self.faulted = true;
            self.checks_left = self.checks_left.max(CHECKS_AFTER_FAULT);
        }
        if self.checks_left > 0 {
            self.checks_left -= 1;
            self.model.check_all()?;
            check_heap(&self.heap, &self.caps, &self.model)?;
        }
        Ok(())
    }

    /// Allocates a block for `layout` (zeroed: must read as zero).
    pub fn alloc(&mut self, layout: Layout, zeroed: bool) -> Result<Block, Failure> {
        let p = self
            .retrying("alloc", |h| {
                if zeroed {
                    h.alloc_zeroed(layout)
                } else {
                    h.alloc(layout)
                }
            })
            .map_err(|e| e.context(&format!("{} B align {}", layout.size(), layout.align())))?;
        self.model.insert(p, layout, zeroed)?;
        // SAFETY: `p` is live for `layout`.
        let usable = unsafe { self.heap.usable_size(p, layout) };
        if usable < layout.size() {
            return Err(Failure::new(format!(
                "usable size {usable} < {}",
                layout.size()
            )));
        }
        self.checked()?;
        self.model
            .get(p)
            .ok_or_else(|| Failure::new("block not in the model"))
    }

    /// Allocates `size` bytes aligned to `align`.
    pub fn alloc_sized(&mut self, size: usize, align: usize) -> Result<Block, Failure> {
        let l = Layout::from_size_align(size, align)
            .map_err(|_| Failure::new(format!("bad layout {size} / {align}")))?;
        self.alloc(l, false)
    }

    /// Resizes the live block `b` to `new_size`; the prefix must survive.
    pub fn realloc(&mut self, b: Block, new_size: usize) -> Result<Block, Failure> {
        let p = self
            // SAFETY: `b` is live with this layout (the model says so; a
            // refused realloc leaves it so).
            .retrying("realloc", |h| unsafe {
                h.realloc(b.ptr, b.layout, new_size)
            })
            .map_err(|e| e.context(&format!("{} -> {new_size} B", b.layout.size())))?;
        self.model
            .moved(b, p, new_size)
            .map_err(|e| e.context(&format!("realloc {} -> {new_size}", b.layout.size())))?;
        self.checked()?;
        self.model
            .get(p)
            .ok_or_else(|| Failure::new("realloc result not in the model"))
    }

    /// Frees the `pick`-th live block (modulo the live count), if any.
    pub fn free(&mut self, pick: usize) -> Result<(), Failure> {
        free_nth(&mut self.heap, &mut self.model, pick)?;
        self.checked()
    }

    /// Runs one program operation (a `FailNextGrow` is skipped: the fault
    /// schedule decides which grows fail).
    pub fn op(&mut self, op: Op) -> Result<(), Failure> {
        let layout = |size: usize, align_log: u8| {
            Layout::from_size_align(size, 1 << align_log)
                .map_err(|_| Failure::new(format!("bad layout {size} / 2^{align_log}")))
        };
        match op {
            Op::Alloc { size, align_log } => self.alloc(layout(size, align_log)?, false).map(drop),
            Op::AllocZeroed { size, align_log } => {
                self.alloc(layout(size, align_log)?, true).map(drop)
            }
            Op::Dealloc { pick } => self.free(pick),
            Op::Realloc { pick, new_size } => match self.model.nth(pick) {
                Some(b) => self.realloc(b, new_size).map(drop),
                None => Ok(()),
            },
            Op::FailNextGrow => Ok(()),
            Op::ForeignGrow { pages } => {
                self.mem.foreign_grow(pages);
                self.checked()
            }
        }
    }

    /// Frees every live block and checks the heap once more.
    pub fn finish(&mut self) -> Result<(), Failure> {
        self.model.check_all()?;
        check_heap(&self.heap, &self.caps, &self.model)?;
        free_all(&mut self.heap, &mut self.model)?;
        check_heap(&self.heap, &self.caps, &self.model)
    }
}

/// Runs `w` once on a fresh heap of `pages` pages: every operation must
/// succeed, and is checked.
pub fn plain<H: RawHeap, M: TestMemory>(
    s: &Subject<H, M>,
    pages: usize,
    w: Workload<H, M>,
) -> Result<(), Failure> {
    let mut d = Driver::new(s, pages);
    w(&mut d)?;
    d.finish()
}

/// Every power-of-two alignment from 1 to 64 KiB, at several sizes, while
/// the earlier blocks stay live.
pub fn alignment_sweep<H: RawHeap, M: TestMemory>(d: &mut Driver<H, M>) -> Result<(), Failure> {
    for shift in 0..=16 {
        let align = 1usize << shift;
        let sizes = [1, align, align + align / 2 + 1, 24];
        // Under Miri the small sizes only: the alignment is what is checked.
        for &size in &sizes[..scale(4, 1)] {
            d.alloc_sized(size, align)
                .map_err(|e| e.context(&format!("align {align} size {size}")))?;
        }
    }
    Ok(())
}

/// The largest power of two the size sweep reaches.
pub const SIZE_SWEEP_TOP: usize = scale(23, 11);

/// The heap pages the size sweep needs.
pub const SIZE_SWEEP_PAGES: usize = (2usize << SIZE_SWEEP_TOP) / PAGE_SIZE * 3 + 64;

/// Sizes from 1 byte to `2^SIZE_SWEEP_TOP`: every power of two and its
/// neighbours, every other block freed so that freed space is reused too.
pub fn size_sweep<H: RawHeap, M: TestMemory>(d: &mut Driver<H, M>) -> Result<(), Failure> {
    let mut sizes = vec![1, 2, 3, 5, 7, 9, 15, 17];
    for shift in 4..=SIZE_SWEEP_TOP {
        let p = 1usize << shift;
        sizes.extend([p - 1, p, p + 1]);
    }
    for (i, &size) in sizes.iter().enumerate() {
        d.alloc_sized(size, 8)
            .map_err(|e| e.context(&format!("size {size}")))?;
        if i % 2 == 1 {
            let half = d.model.len() / 2;
            d.free(half)?;
        }
    }
    Ok(())
}

/// Dirty blocks freed, then zeroed blocks of the same sizes (which reuse
/// that memory) must read as zero.
pub fn zeroed_reuse<H: RawHeap, M: TestMemory>(d: &mut Driver<H, M>) -> Result<(), Failure> {
    // Dirty (and check) every byte, not only the ends of large blocks.
    d.model.full_check_limit = scale(usize::MAX, d.model.full_check_limit);
    let sizes = [
        8usize,
        24,
        100,
        256,
        1000,
        4096,
        scale(20_000, 300),
        scale(70_000, 5000),
    ];
    for round in 0..scale(3, 1) {
        for zeroed in [false, true] {
            for (i, &size) in sizes.iter().enumerate() {
                let l = Layout::from_size_align(size, 1 << (i % 5))
                    .map_err(|_| Failure::new("bad layout"))?;
                d.alloc(l, zeroed)
                    .map_err(|e| e.context(&format!("round {round}")))?;
            }
            // Free newest first, so that the next round reuses the memory.
            while !d.model.is_empty() {
                let last = d.model.len() - 1;
                d.free(last)?;
            }
        }
    }
    Ok(())
}

/// One block resized through small and large sizes, growing and shrinking,
/// with neighbours allocated in between that sometimes block in-place
/// growth, at several alignments.
pub fn realloc_sweep<H: RawHeap, M: TestMemory>(d: &mut Driver<H, M>) -> Result<(), Failure> {
    let sizes = [
        1usize, 7, 8, 9, 64, 250, 256, 300, 4000, 5000, 70_000, 200_000, 100, 3,
    ];
    for &align in &[1usize, 4096, 8, 16, 64][..scale(5, 2)] {
        let mut b = d.alloc_sized(5, align)?;
        for (i, &new_size) in sizes.iter().enumerate() {
            if i % 3 == 0 {
                d.alloc_sized(40, 8)?;
            }
            b = d
                .realloc(b, new_size)
                .map_err(|e| e.context(&format!("align {align}")))?;
        }
    }
    Ok(())
}

/// A seeded random program ([`generate`]), foreign growth included; its
/// own injected grow failures are left out (the fault schedule decides).
fn seeded_program<H: RawHeap, M: TestMemory>(
    d: &mut Driver<H, M>,
    seed: u64,
) -> Result<(), Failure> {
    let ops = generate(seed, scale(400, 16));
    for (i, &op) in ops.iter().enumerate() {
        d.op(op).map_err(|e| e.at(i, op))?;
    }
    Ok(())
}

/// A seeded random program.
pub fn random_program<H: RawHeap, M: TestMemory>(d: &mut Driver<H, M>) -> Result<(), Failure> {
    seeded_program(d, 0xFA11)
}

/// Another seeded random program.
pub fn random_program_2<H: RawHeap, M: TestMemory>(d: &mut Driver<H, M>) -> Result<(), Failure> {
    seeded_program(d, 0x5EED2)
}

/// Allocations of growing size with foreign growth after each, so that
/// nearly every grow leaves a gap.
pub fn foreign_gaps<H: RawHeap, M: TestMemory>(d: &mut Driver<H, M>) -> Result<(), Failure> {
    for i in 0..scale(40, 5) {
        d.alloc_sized(1000 + i * 3000, 8 << (i % 4))?;
        if !d.mem.foreign_grow(1 + i % 2) {
            return Err(Failure::new("foreign grow failed"));
        }
        if i % 3 == 2 {
            d.free(i)?;
        }
    }
    Ok(())
}

/// Churn over a bounded live set of up to 64 blocks.
pub fn churn<H: RawHeap, M: TestMemory>(d: &mut Driver<H, M>) -> Result<(), Failure> {
    let mut rng = Rng::new(0xB0B);
    for _ in 0..scale(1500, 40) {
        if d.model.len() >= 64 || (!d.model.is_empty() && rng.below(2) == 0) {
            d.free(rng.below(1 << 16))?;
        } else {
            let size = 1 + rng.below(scale(8192, 1024));
            d.alloc_sized(size, 1 << rng.below(4))?;
        }
    }
    Ok(())
}

/// The heap-page budget of most workloads (32 MiB).
pub const PAGES: usize = scale(512, 48);

/// Every workload of the suite: its name, its heap-page budget, and itself.
pub fn all<H: RawHeap, M: TestMemory>() -> Vec<(&'static str, usize, Workload<H, M>)> {
    vec![
        ("alignment sweep", PAGES, alignment_sweep),
        ("size sweep", SIZE_SWEEP_PAGES, size_sweep),
        ("zeroed reuse", PAGES, zeroed_reuse),
        ("realloc sweep", PAGES, realloc_sweep),
        ("random program 1", 4 * PAGES, random_program),
        ("random program 2", 4 * PAGES, random_program_2),
        ("foreign gaps", PAGES, foreign_gaps),
        ("churn", PAGES, churn),
    ]
}

/// What a fault-injection run exercised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultFigures {
    /// Workloads run.
    pub workloads: usize,
    /// Grow requests the workloads made without faults (the points at which
    /// a fault was injected).
    pub grow_points: usize,
    /// Runs with a fault schedule.
    pub runs: usize,
    /// Grow requests that failed by injection.
    pub injected: usize,
    /// Operations refused (returned null) and retried.
    pub refused: usize,
}

/// Widths of the failing windows: one request, then three in a row.
const WIDTHS: [usize; 2] = [1, 3];

/// Runs workload `w` with every one of its grow requests failing in turn
/// (alone, and as the first of three in a row), adding to `fig`.
///
/// At most `points` requests, spread evenly, are made to fail (all of them
/// normally; fewer under Miri and in wasm).
pub fn every_grow_fails_in_turn<H: RawHeap, M: TestMemory>(
    s: &Subject<H, M>,
    pages: usize,
    w: Workload<H, M>,
    points: usize,
    fig: &mut FaultFigures,
) -> Result<(), Failure> {
    let mut d = Driver::new(s, pages);
    w(&mut d).map_err(|e| e.context("without faults"))?;
    d.finish()?;
    let n = d.mem.grow_requests();
    // The fault runs get a memory sized from the counting run's (twice its
    // peak and more): making a simulated memory costs as much as its size.
    let budget = (
        (2 * d.mem.peak_heap_pages() + 16).min(pages),
        (2 * d.mem.foreign_pages() + 4).min(crate::FOREIGN_PAGES_BUDGET),
    );
    if n == 0 {
        return Err(Failure::new("the workload never grew memory"));
    }
    for k in (0..n).step_by(n.div_ceil(points.max(1))) {
        for width in WIDTHS {
            let mut d = Driver::with_faults(s, budget, k, k + width);
            w(&mut d)
                .and_then(|()| d.finish())
                .map_err(|e| e.context(&format!("grow requests {k}..{} failing", k + width)))?;
            fig.runs += 1;
            fig.injected += d.mem.failed_grows();
            fig.refused += d.refused;
        }
    }
    fig.workloads += 1;
    fig.grow_points += n;
    Ok(())
}

/// [`every_grow_fails_in_turn`] over [`all`] workloads (every fourth in
/// a light Miri pass, [`miri_light`](crate::miri_light)).
pub fn fault_injection_at_scale<H: RawHeap, M: TestMemory>(
    s: &Subject<H, M>,
    points: usize,
) -> Result<FaultFigures, Failure> {
    let mut fig = FaultFigures::default();
    // A light Miri pass takes every fourth workload.
    for (name, pages, w) in all::<H, M>().into_iter().step_by(crate::lighter(1, 1, 4)) {
        every_grow_fails_in_turn(s, pages, w, points, &mut fig).map_err(|e| e.context(name))?;
    }
    Ok(fig)
}

/// What a soak did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SoakFigures {
    /// Operations run.
    pub ops: usize,
    /// Full heap checks (`verify()` and the stats against the model).
    pub verifies: usize,
    /// Checks of the contents of every live block.
    pub content_checks: usize,
    /// Operations refused by an injected grow failure.
    pub refused: usize,
    /// Heaps used (a bump arena, which does not reuse freed memory, gets a
    /// fresh one every [`SOAK_EPOCH`] operations).
    pub heaps: usize,
}

/// The live set a soak keeps near, in blocks.
pub const SOAK_LIVE: usize = 1000;

/// Operations per heap for an allocator that does not reuse freed memory.
pub const SOAK_EPOCH: usize = 100_000;

/// The heap-page budget of a soak heap (256 MiB).
pub const SOAK_PAGES: usize = scale(4096, 64);

/// `total` random operations ([`soak_op`]) on one heap (one per
/// [`SOAK_EPOCH`] for a bump arena), checked against the model: each
/// operation checks the block it touches (a new block's zeroing, a
/// realloc's prefix); every `every / 10` operations the heap is verified,
/// and every `every` operations the contents of every live block are
/// checked and memory grows by a page as a foreign party.
pub fn soak<H: RawHeap, M: TestMemory>(
    s: &Subject<H, M>,
    total: usize,
    every: usize,
) -> Result<SoakFigures, Failure> {
    let epoch = if s.caps.reuses_freed {
        total
    } else {
        SOAK_EPOCH.min(total)
    };
    let verify_every = (every / 10).max(1);
    let mut r = Rng::new(0x50AC);
    let mut fig = SoakFigures::default();
    while fig.ops < total {
        let n = epoch.min(total - fig.ops);
        let (mut heap, mem) = s.heap(SOAK_PAGES);
        let mut model = Model::new();
        let mut out = Outcome::default();
        for i in 1..=n {
            let op = soak_op(&mut r, model.len(), SOAK_LIVE);
            let at = fig.ops + i - 1;
            step(&mut heap, &mem, &mut model, op, &mut out).map_err(|e| e.at(at, op))?;
            if i % verify_every == 0 {
                check_heap(&heap, &s.caps, &model).map_err(|e| e.at(at, op))?;
                fig.verifies += 1;
            }
            if i % every == 0 {
                model.check_all().map_err(|e| e.at(at, op))?;
                fig.content_checks += 1;
                mem.foreign_grow(1);
            }
        }
        model.check_all()?;
        check_heap(&heap, &s.caps, &model)?;
        free_all(&mut heap, &mut model)?;
        check_heap(&heap, &s.caps, &model)?;
        fig.ops += n;
        fig.refused += out.refused;
        fig.heaps += 1;
    }
    Ok(fig)
}
