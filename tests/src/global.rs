//! Cases for a binary whose `#[global_allocator]` is the allocator under
//! test: everything goes through `std::alloc`, so the test harness, the
//! model and the workloads all run on it.

use std::alloc::Layout;
use std::collections::{BTreeMap, VecDeque};
use std::ptr::NonNull;

use linmem_memory::{HeapError, HeapStats, RawHeap, Violation};

use crate::model::Model;
use crate::program::{self, Op};
use crate::{Caps, Failure, Knobs};

/// The process's global allocator seen as a [`RawHeap`].
///
/// Its `verify`/`stats` are empty: the binary checks the global heap itself
/// through its `Global::verify()`.
#[derive(Debug, Default)]
pub struct StdGlobal;

impl RawHeap for StdGlobal {
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        // SAFETY: programs never ask for size 0.
        NonNull::new(unsafe { std::alloc::alloc(layout) })
    }

    fn alloc_zeroed(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        // SAFETY: programs never ask for size 0.
        NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })
    }

    unsafe fn dealloc(&mut self, ptr: NonNull<u8>, layout: Layout) -> Result<(), HeapError> {
        // SAFETY: the caller's contract.
        unsafe { std::alloc::dealloc(ptr.as_ptr(), layout) };
        Ok(())
    }

    unsafe fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        // SAFETY: the caller's contract.
        NonNull::new(unsafe { std::alloc::realloc(ptr.as_ptr(), layout, new_size) })
    }

    unsafe fn usable_size(&self, _ptr: NonNull<u8>, layout: Layout) -> usize {
        layout.size()
    }

    fn stats(&self) -> HeapStats {
        HeapStats::default()
    }

    fn verify(&self) -> Result<HeapStats, Violation> {
        Ok(HeapStats::default())
    }
}

/// No fault injection for the global heap: every allocation must succeed.
/// Foreign growth is real `memory.grow` inside wasm.
#[derive(Debug, Default)]
pub struct RealMemory;

impl Knobs for RealMemory {
    fn fail_next_grows(&self, _n: usize) {}

    fn foreign_grow(&self, pages: usize) -> bool {
        #[cfg(target_arch = "wasm32")]
        return core::arch::wasm32::memory_grow(0, pages) != usize::MAX;
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = pages;
            false
        }
    }

    fn failed_grows(&self) -> usize {
        0
    }
}

const GLOBAL_CAPS: Caps = Caps {
    reuses_freed: true,
    counts_live_blocks: false,
};

/// Every alignment up to 64 KiB and sizes up to 8 MiB through `std::alloc`.
pub fn raw_global_calls_honour_every_alignment_and_size() -> Result<(), Failure> {
    let mut heap = StdGlobal;
    let mut model = Model::new();
    for shift in 0..=16 {
        for size in [1usize, 1 << shift, (3 << shift) / 2 + 1] {
            let l =
                Layout::from_size_align(size, 1 << shift).map_err(|_| Failure::new("layout"))?;
            let p = heap
                .alloc(l)
                .ok_or_else(|| Failure::new("global alloc returned null"))?;
            model.insert(p, l, false)?;
        }
    }
    for shift in 10..=23 {
        let l = Layout::from_size_align(1 << shift, 8).map_err(|_| Failure::new("layout"))?;
        let p = heap
            .alloc_zeroed(l)
            .ok_or_else(|| Failure::new("global alloc returned null"))?;
        model.insert(p, l, true)?;
    }
    model.check_all()?;
    program::free_all(&mut heap, &mut model)
}

/// Seeded random programs (with real foreign growth in wasm).
pub fn raw_global_programs_match_the_model() -> Result<(), Failure> {
    for seed in 0..8u64 {
        let ops: Vec<Op> = program::generate(seed, 400)
            .into_iter()
            .filter(|op| !matches!(op, Op::FailNextGrow))
            .collect();
        program::run(&mut StdGlobal, &RealMemory, &GLOBAL_CAPS, &ops)
            .map_err(|e| e.context(&format!("seed {seed}")))?;
    }
    Ok(())
}

/// Vectors, strings, maps and queues built and dropped many times.
pub fn collections_churn_keeps_their_contents() -> Result<(), Failure> {
    let mut rng = program::Rng::new(42);
    let mut keep: VecDeque<(u64, String, Vec<u32>)> = VecDeque::new();
    for round in 0..2000u64 {
        let n = rng.below(200);
        let v: Vec<u32> = (0..n as u32).map(|i| i ^ round as u32).collect();
        let s = format!("{round}:{}", "x".repeat(rng.below(300)));
        keep.push_back((round, s, v));
        if keep.len() > 64 {
            let (r, s, v) = keep
                .pop_front()
                .ok_or_else(|| Failure::new("queue empty"))?;
            if !s.starts_with(&format!("{r}:"))
                || v.iter().enumerate().any(|(i, &x)| x != i as u32 ^ r as u32)
            {
                return Err(Failure::new(format!(
                    "collection contents of round {r} damaged"
                )));
            }
        }
    }
    let mut map = BTreeMap::new();
    for i in 0..20_000u32 {
        map.insert(
            i.wrapping_mul(2_654_435_761),
            vec![i as u8; (i % 64) as usize],
        );
    }
    for (k, v) in &map {
        let i = k.wrapping_mul(244_002_641);
        if v.len() != (i % 64) as usize || v.iter().any(|&b| b != i as u8) {
            return Err(Failure::new("map contents damaged"));
        }
    }
    Ok(())
}
