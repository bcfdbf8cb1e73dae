//! The fixed cases of the conformance suite. Each takes the allocator under
//! test as a [`Subject`] and returns the first failure it finds.

use std::alloc::{GlobalAlloc, Layout};
use std::ptr::NonNull;

use linmem_memory::{Locked, PAGE_SIZE, RawHeap, Unsync};

use crate::model::Model;
use crate::program::{self, Op, Outcome, check_heap, free_all, free_nth, generate, step};
use crate::{Failure, Subject, TestMemory, scale};

use crate::workload::{self, PAGES};

fn layout(size: usize, align: usize) -> Result<Layout, Failure> {
    Layout::from_size_align(size, align).map_err(|_| Failure::new("bad layout"))
}

fn alloc_into<H: RawHeap>(heap: &mut H, model: &mut Model, l: Layout) -> Result<(), Failure> {
    let p = heap.alloc(l).ok_or_else(|| {
        Failure::new(format!(
            "alloc of {} B align {} failed",
            l.size(),
            l.align()
        ))
    })?;
    model.insert(p, l, false)
}

/// Every power-of-two alignment from 1 to 64 KiB, at several sizes, while
/// other blocks stay live.
pub fn every_alignment_1_to_64k_is_honoured<H: RawHeap, M: TestMemory>(
    s: &Subject<H, M>,
) -> Result<(), Failure> {
    workload::plain(s, PAGES, workload::alignment_sweep)
}

/// Sizes from 1 byte to 8 MiB: every power of two and its neighbours.
pub fn sizes_from_1_byte_to_8_mib_are_served<H: RawHeap, M: TestMemory>(
    s: &Subject<H, M>,
) -> Result<(), Failure> {
    workload::plain(s, workload::SIZE_SWEEP_PAGES, workload::size_sweep)
}

/// `alloc_zeroed` returns zeros, also where freed, dirtied memory is reused.
pub fn zeroed_blocks_are_zero_also_on_reused_memory<H: RawHeap, M: TestMemory>(
    s: &Subject<H, M>,
) -> Result<(), Failure> {
    workload::plain(s, PAGES, workload::zeroed_reuse)
}

/// realloc keeps the common prefix, growing and shrinking, in place or not.
pub fn realloc_keeps_the_prefix_growing_and_shrinking<H: RawHeap, M: TestMemory>(
    s: &Subject<H, M>,
) -> Result<(), Failure> {
    workload::plain(s, PAGES, workload::realloc_sweep)
}

/// A long random program without faults: no overlap, contents survive.
pub fn live_blocks_never_overlap_and_keep_their_contents<H: RawHeap, M: TestMemory>(
    s: &Subject<H, M>,
) -> Result<(), Failure> {
    let ops: Vec<Op> = generate(0x5EED, crate::lighter(3000, 60, 20))
        .into_iter()
        .filter(|op| !matches!(op, Op::FailNextGrow | Op::ForeignGrow { .. }))
        .collect();
    let (mut heap, mem) = s.heap(4 * PAGES);
    program::run(&mut heap, &mem, &s.caps, &ops).map(drop)
}

/// A size near `isize::MAX` returns null; the heap and live blocks are fine.
pub fn sizes_near_isize_max_return_null<H: RawHeap, M: TestMemory>(
    s: &Subject<H, M>,
) -> Result<(), Failure> {
    let (mut heap, _mem) = s.heap(PAGES);
    let mut model = Model::new();
    alloc_into(&mut heap, &mut model, layout(100, 8)?)?;
    let max = isize::MAX as usize;
    for align in [1usize, 8, 4096, PAGE_SIZE] {
        for size in [
            max - align + 1,
            max / 2 + 1,
            max - 2 * PAGE_SIZE,
            usize::MAX / 4,
        ] {
            let Ok(l) = Layout::from_size_align(size, align) else {
                continue;
            };
            if heap.alloc(l).is_some() || heap.alloc_zeroed(l).is_some() {
                return Err(Failure::new(format!(
                    "alloc of {size:#x} B align {align} succeeded"
                )));
            }
        }
    }
    let b = model.nth(0).ok_or_else(|| Failure::new("model empty"))?;
    for new_size in [max - 7, max / 2 + 1] {
        // SAFETY: `b` is live with this layout; `new_size` fits isize.
        if unsafe { heap.realloc(b.ptr, b.layout, new_size) }.is_some() {
            return Err(Failure::new(format!(
                "realloc to {new_size:#x} B succeeded"
            )));
        }
    }
    model.check_all()?;
    check_heap(&heap, &s.caps, &model)?;
    alloc_into(&mut heap, &mut model, layout(1000, 16)?)?;
    free_all(&mut heap, &mut model)?;
    check_heap(&heap, &s.caps, &model)
}

/// For every step of a workload, the grows during that step fail: the
/// allocator returns null, keeps every live block intact, and serves the
/// rest of the workload once memory can grow again.
pub fn grow_failure_at_every_point_loses_nothing<H: RawHeap, M: TestMemory>(
    s: &Subject<H, M>,
) -> Result<(), Failure> {
    let ops: Vec<Op> = generate(0xFA11, crate::lighter(160, 14, 6))
        .into_iter()
        .filter(|op| !matches!(op, Op::FailNextGrow | Op::ForeignGrow { .. }))
        .collect();
    let mut injected = 0;
    for fail_at in 0..ops.len() {
        let (mut heap, mem) = s.heap(PAGES);
        let mut model = Model::new();
        let mut out = Outcome::default();
        for (i, &op) in ops.iter().enumerate() {
            if i == fail_at {
                mem.fail_next_grows(usize::MAX);
            }
            step(&mut heap, &mem, &mut model, op, &mut out)
                .and_then(|()| model.check_all())
                .and_then(|()| check_heap(&heap, &s.caps, &model))
                .map_err(|e| {
                    e.at(i, op)
                        .context(&format!("grows failing at step {fail_at}"))
                })?;
            if i == fail_at {
                mem.fail_next_grows(0);
            }
        }
        if out.refused > 1 {
            return Err(Failure::new(format!(
                "{} operations refused with grows failing at one step",
                out.refused
            )));
        }
        injected += out.refused;
        free_all(&mut heap, &mut model)?;
        check_heap(&heap, &s.caps, &model)?;
    }
    if injected == 0 {
        return Err(Failure::new(
            "the workload never grew memory: the case tests nothing",
        ));
    }
    Ok(())
}

/// Memory grown by someone else between operations leaves gaps the heap must
/// cope with.
pub fn foreign_growth_between_operations_is_tolerated<H: RawHeap, M: TestMemory>(
    s: &Subject<H, M>,
) -> Result<(), Failure> {
    let (mut heap, mem) = s.heap(PAGES);
    let mut model = Model::new();
    for i in 0..crate::lighter(40, 5, 2) {
        alloc_into(
            &mut heap,
            &mut model,
            layout(1000 + i * 3000, 8 << (i % 4))?,
        )?;
        if !mem.foreign_grow(1 + i % 2) {
            return Err(Failure::new("foreign grow failed"));
        }
        if i % 3 == 2 {
            free_nth(&mut heap, &mut model, i)?;
        }
        model.check_all()?;
        check_heap(&heap, &s.caps, &model)?;
    }
    free_all(&mut heap, &mut model)?;
    check_heap(&heap, &s.caps, &model)
}

/// With a bounded live set, a reusing allocator's memory stops growing.
pub fn bounded_live_set_does_not_grow_memory_without_bound<H: RawHeap, M: TestMemory>(
    s: &Subject<H, M>,
) -> Result<(), Failure> {
    if !s.caps.reuses_freed {
        return Ok(());
    }
    let (mut heap, mem) = s.heap(PAGES);
    let mut model = Model::new();
    let mut rng = program::Rng::new(0xB0B);
    let rounds = scale(40_000, 200);
    let mut after_warmup = 0;
    for i in 0..rounds {
        if model.len() >= 64 || (!model.is_empty() && rng.below(2) == 0) {
            free_nth(&mut heap, &mut model, rng.below(1 << 16))?;
        } else {
            let size = 1 + rng.below(scale(8192, 1024));
            alloc_into(&mut heap, &mut model, layout(size, 1 << rng.below(4))?)?;
        }
        if i == rounds / 4 {
            after_warmup = mem.heap_pages();
        }
    }
    model.check_all()?;
    check_heap(&heap, &s.caps, &model)?;
    let end = mem.heap_pages();
    // The live set is at most 64 x 8 KiB = 8 pages.
    if end > after_warmup + 2 || end > 32 {
        return Err(Failure::new(format!(
            "memory kept growing with a bounded live set: {after_warmup} pages after warm-up, \
             {end} at the end"
        )));
    }
    free_all(&mut heap, &mut model)
}

/// The `GlobalAlloc` contract through both adapters (locked and
/// unsynchronized): null on failure, zeroed memory, realloc prefixes, no
/// overlap.
pub fn global_alloc_contract_holds_through_the_adapters<H: RawHeap, M: TestMemory>(
    s: &Subject<H, M>,
) -> Result<(), Failure> {
    let (heap, mem) = s.heap(PAGES);
    let locked = Locked::<H>::new(heap);
    global_contract(&locked, &mem).map_err(|e| e.context("Locked"))?;
    check_heap(&*locked.lock(), &s.caps, &Model::new())?;
    let (heap, mem) = s.heap(PAGES);
    let unsync = Unsync::new(heap);
    global_contract(&unsync, &mem).map_err(|e| e.context("Unsync"))?;
    // SAFETY: no allocation through `unsync` happens while this is used.
    check_heap(unsafe { unsync.heap_mut() }, &s.caps, &Model::new())
}

fn global_contract<G: GlobalAlloc, M: TestMemory>(global: &G, mem: &M) -> Result<(), Failure> {
    let mut model = Model::new();
    for (i, size) in [1usize, 16, 100, 3000, scale(70_000, 5000)]
        .into_iter()
        .enumerate()
    {
        let l = layout(size, 1 << (i * 3))?;
        // SAFETY: `l` has a non-zero size.
        let p = NonNull::new(unsafe { global.alloc_zeroed(l) })
            .ok_or_else(|| Failure::new("GlobalAlloc::alloc_zeroed returned null"))?;
        model.insert(p, l, true)?;
    }
    let b = model.nth(1).ok_or_else(|| Failure::new("model empty"))?;
    // SAFETY: `b` is live with this layout; the size fits isize.
    let p = NonNull::new(unsafe { global.realloc(b.ptr.as_ptr(), b.layout, 5000) })
        .ok_or_else(|| Failure::new("GlobalAlloc::realloc returned null"))?;
    model.moved(b, p, 5000)?;
    mem.fail_next_grows(usize::MAX);
    // SAFETY: the layout has a non-zero size.
    let huge = unsafe { global.alloc(layout(64 * PAGE_SIZE, 8)?) };
    mem.fail_next_grows(0);
    if !huge.is_null() {
        return Err(Failure::new(
            "GlobalAlloc::alloc did not return null with memory exhausted",
        ));
    }
    model.check_all()?;
    for b in model.blocks() {
        // SAFETY: every model block is live with its layout.
        unsafe { global.dealloc(b.ptr.as_ptr(), b.layout) };
    }
    Ok(())
}

/// Random programs (with injected grow failures and foreign growth) against
/// the model: proptest on the host, seeded programs inside wasm.
pub fn random_programs_match_the_model<H: RawHeap, M: TestMemory>(
    s: &Subject<H, M>,
) -> Result<(), Failure> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use proptest::test_runner::{Config, TestCaseError, TestRunner};
        let config = Config {
            cases: crate::proptest_cases(),
            failure_persistence: None,
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        runner
            .run(&program::strategy::program(scale(300, 25)), |ops| {
                let (mut heap, mem) = s.heap(PAGES);
                program::run(&mut heap, &mem, &s.caps, &ops)
                    .map(drop)
                    .map_err(|e| TestCaseError::fail(e.to_string()))
            })
            .map_err(|e| Failure::new(e.to_string()))
    }
    #[cfg(target_arch = "wasm32")]
    {
        for seed in 0..32u64 {
            let ops = generate(seed, 300);
            let (mut heap, mem) = s.heap(PAGES);
            program::run(&mut heap, &mem, &s.caps, &ops)
                .map_err(|e| e.context(&format!("seed {seed}")))?;
        }
        Ok(())
    }
}

/// Fault injection at scale: every workload of the suite ([`workload::all`])
/// re-run with each of its grow requests failing in turn, alone and three in
/// a row. The refused operation returns null, every live block stays intact,
/// `verify()` holds, and the operation succeeds once memory can grow again.
///
/// Prints the figures (visible with `--nocapture`).
pub fn grow_failure_at_every_grow_of_every_workload_loses_nothing<H: RawHeap, M: TestMemory>(
    s: &Subject<H, M>,
) -> Result<(), Failure> {
    let points = crate::sized(usize::MAX, 3, 1);
    let fig = workload::fault_injection_at_scale(s, points)?;
    if fig.refused == 0 {
        return Err(Failure::new(
            "no operation was ever refused: the case tests nothing",
        ));
    }
    println!(
        "fault injection: {} workloads, {} grow points, {} runs, {} grow failures injected, \
         {} operations refused and retried",
        fig.workloads, fig.grow_points, fig.runs, fig.injected, fig.refused
    );
    Ok(())
}

/// Programs decoded from bytes ([`program::from_bytes`], the fuzzers' input
/// format) run against the model: seeded random byte strings here, the
/// fuzzers' in `fuzz/`.
pub fn byte_programs_match_the_model<H: RawHeap, M: TestMemory>(
    s: &Subject<H, M>,
) -> Result<(), Failure> {
    let mut rng = program::Rng::new(0xF022);
    for input in 0..crate::lighter(64, 2, 1) {
        let len = rng.below(crate::sized(2048, 1024, 96));
        let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        program::run_bytes(s, &data).map_err(|e| e.context(&format!("input {input}")))?;
    }
    Ok(())
}

/// A million random operations on one heap with `verify()` every 1000
/// operations and the contents of every live block checked every 10,000
/// (fewer operations inside wasm and under Miri).
///
/// Prints the figures (visible with `--nocapture`).
pub fn soak_one_million_operations<H: RawHeap, M: TestMemory>(
    s: &Subject<H, M>,
) -> Result<(), Failure> {
    let total = crate::lighter(crate::sized(1_000_000, 20_000, 300), 300, 50);
    let every = crate::sized(10_000, 1000, 50);
    #[cfg(not(target_arch = "wasm32"))]
    let t = std::time::Instant::now();
    let fig = workload::soak(s, total, every)?;
    // No clock in wasm32-unknown-unknown.
    #[cfg(target_arch = "wasm32")]
    let took = "";
    #[cfg(not(target_arch = "wasm32"))]
    let took = format!(" in {:.1?}", t.elapsed());
    println!(
        "soak: {} operations on {} heap(s), {} verifies, {} full content checks, \
         {} refused by injected faults{took}",
        fig.ops, fig.heaps, fig.verifies, fig.content_checks, fig.refused
    );
    Ok(())
}
