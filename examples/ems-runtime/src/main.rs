//! Runs the five scenarios of the ems runtime embedding and prints what
//! happens in each (see the library docs); exits non-zero when a check
//! fails.
//!
//! ```sh
//! cargo run --release --manifest-path examples/ems-runtime/Cargo.toml
//! ```

#![forbid(unsafe_code)]

use std::process::ExitCode;

use linmem_ems_runtime::scenarios::{self, WorkloadReport};
use linmem_ems_runtime::{GUEST_CEXPORTS, engine};
use wasmtime::Result;

/// Steps of scenario 1's workload.
const SMALL_STEPS: u32 = 3_000;
/// Steps of scenario 3's workload (several MiB of live data).
const LARGE_STEPS: u32 = 60_000;
/// The text passed in scenarios 2 and 5.
const TEXT: &str = "the quick brown fox jumps over the lazy dog — ems lives in guest memory";

fn main() -> ExitCode {
    match run() {
        Ok(0) => {
            println!("\nall scenarios passed");
            ExitCode::SUCCESS
        }
        Ok(n) => {
            println!("\n{n} check(s) FAILED");
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("\nerror: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `what` with a verdict; counts failures.
fn check(failures: &mut u32, ok: bool, what: &str) {
    println!("  [{}] {what}", if ok { "ok" } else { "FAILED" });
    *failures += u32::from(!ok);
}

fn print_workload(r: &WorkloadReport) {
    let s = &r.stats;
    println!(
        "  {} steps in {:.1} ms: {} host calls (malloc {}, aligned_alloc {}, realloc {}, free {}), {:.2} M calls/s",
        r.steps,
        r.millis,
        s.ops(),
        s.mallocs,
        s.aligned,
        s.reallocs,
        s.frees,
        s.ops() as f64 / r.millis / 1e3,
    );
    println!(
        "  pool {} B -> {} B; {} growth event(s), {} page(s) added, base moved {} time(s); memory {} pages",
        s.initial_pool, r.final_pool, s.grow_events, s.pages_added, s.base_moves, r.pages
    );
    println!(
        "  heap after the run: high-water {} B, {} live block(s), {} free B in {} free block(s)",
        r.heap.high_water, r.heap.used_blocks, r.heap.free, r.heap.free_blocks
    );
    println!(
        "  checksum {:#018x} (host's native run {:#018x})",
        r.checksum, r.expected
    );
}

fn run() -> Result<u32> {
    let mut failures = 0;
    let fixed = engine(false)?;
    let moving = engine(true)?;

    println!("1. guest data structures over host malloc/free (ems inside guest memory)");
    let r = scenarios::workload(&fixed, SMALL_STEPS)?;
    print_workload(&r);
    check(&mut failures, r.checksum == r.expected, "checksum matches");
    check(
        &mut failures,
        r.heap.used_blocks == 0,
        "every block freed, heap check passed",
    );

    println!("\n2. host places a buffer in guest memory (wasm_runtime_module_malloc)");
    let r = scenarios::pass_buffer(&fixed, TEXT)?;
    println!(
        "  input at {:#x}, result at {:#x}: {:?}",
        r.input, r.output, r.result
    );
    check(&mut failures, r.result == r.expected, "result as expected");
    check(
        &mut failures,
        r.heap.used_blocks == 0,
        "both blocks freed, heap check passed",
    );

    println!("\n3. guest memory grows (and moves) during the run");
    let r = scenarios::workload(&moving, LARGE_STEPS)?;
    print_workload(&r);
    check(&mut failures, r.checksum == r.expected, "checksum matches");
    check(
        &mut failures,
        r.stats.grow_events > 0,
        "memory grew and the pool was extended",
    );
    check(
        &mut failures,
        r.stats.base_moves > 0,
        "the memory moved; offsets kept the heap valid",
    );
    check(
        &mut failures,
        r.heap.used_blocks == 0,
        "every block freed, heap check passed",
    );

    println!("\n4. the guest scribbles over a block header");
    let r = scenarios::scribble(&fixed)?;
    println!(
        "  guest block at {:#x}; its free trapped:\n    {}",
        r.block, r.free_error
    );
    println!("  next guest call: {}", r.later_call_error);
    println!("  next host malloc: {}", r.host_malloc_error);
    check(
        &mut failures,
        r.corrupted,
        "heap failed closed (is_corrupted)",
    );
    check(
        &mut failures,
        r.fresh_instance_ok,
        "a fresh instance runs correctly",
    );
    for (what, err, corrupted) in scenarios::misuse(&fixed)? {
        println!("  {what}: {err}");
        check(&mut failures, corrupted, "trapped, heap failed closed");
    }

    println!("\n5. the guest exports its own malloc family (linmem c-exports)");
    for (allocator, wasm) in GUEST_CEXPORTS {
        let r = scenarios::c_exports(&fixed, allocator, wasm, TEXT)?;
        println!(
            "  {allocator}: input at {:#x}, aligned_alloc(4096) {:#x}, posix_memalign -> ({}, {:#x}), {} pages",
            r.input, r.aligned, r.posix.0, r.posix.1, r.pages
        );
        let ok = r.result == r.expected
            && r.aligned.is_multiple_of(4096)
            && r.posix.0 == 0
            && r.posix.1.is_multiple_of(256)
            && r.calloc_zeroed
            && r.realloc_kept
            && r.huge_is_null
            && r.big_ok
            && r.verify == 0;
        check(
            &mut failures,
            ok,
            "buffer round trip, calloc/realloc/aligned/posix_memalign, heap check",
        );
    }
    Ok(failures)
}
