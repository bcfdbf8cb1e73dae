//! The scenarios of the embedding, each returning what it saw for
//! `src/main.rs` to print and `tests/scenarios.rs` to assert:
//!
//! 1. [`workload`]: the guest (no allocator of its own) builds a
//!    `BTreeMap`/`String`/`Vec` workload through the host's ems heap; the
//!    checksum must equal the host's native run of the same code.
//! 2. [`pass_buffer`]: the host places a string in guest memory (WAMR's
//!    `wasm_runtime_module_malloc`), the guest processes it into a block it
//!    mallocs, the host reads the result and frees both.
//! 3. [`workload`] again, larger and on an engine whose memories move when
//!    they grow: the pool starts at what the module's initial memory
//!    leaves and is extended at every growth.
//! 4. [`scribble`]: the guest writes over a block header; the next `free`
//!    traps with the heap's report, the instance refuses further calls,
//!    a fresh instance works. [`misuse`]: a foreign pointer, a double free.
//! 5. [`c_exports`]: the guest brings a linmem allocator with its
//!    `c-exports` feature; the host calls the module's own `malloc`,
//!    `calloc`, `realloc`, `aligned_alloc`, `posix_memalign`, `free`.

use std::time::Instant;

use linmem_ems::EmsStats;
use wasmtime::{Engine, Module, Result, bail};

use crate::{CExportsInstance, GUEST_IMPORTS, GuestInstance, HostStats};

/// The memory cap of every instance (256 MiB).
pub const MAX_MEMORY: usize = 256 << 20;

/// What a workload run saw (scenarios 1 and 3).
#[derive(Clone, Debug)]
pub struct WorkloadReport {
    /// Workload steps.
    pub steps: u32,
    /// The guest's checksum.
    pub checksum: u64,
    /// The host's native run's checksum.
    pub expected: u64,
    /// The host's counters.
    pub stats: HostStats,
    /// The pool's length at the end.
    pub final_pool: u32,
    /// The memory's pages at the end.
    pub pages: u64,
    /// The heap after the run (full check passed).
    pub heap: EmsStats,
    /// Wall time of the guest call, in milliseconds.
    pub millis: f64,
}

/// Scenarios 1 and 3: runs the shared workload with `steps` steps in a
/// fresh guest on `engine`.
pub fn workload(engine: &Engine, steps: u32) -> Result<WorkloadReport> {
    let module = Module::new(engine, GUEST_IMPORTS)?;
    let mut guest = GuestInstance::new(engine, &module, MAX_MEMORY)?;
    let expected = crate::workload::run(steps);
    let t = Instant::now();
    let checksum: u64 = guest.call("workload", steps)?;
    let millis = t.elapsed().as_secs_f64() * 1e3;
    Ok(WorkloadReport {
        steps,
        checksum,
        expected,
        stats: guest.stats(),
        final_pool: guest.pool().1,
        pages: guest.pages(),
        heap: guest.heap_stats()?,
        millis,
    })
}

/// What passing a buffer saw (scenario 2).
#[derive(Clone, Debug)]
pub struct BufferReport {
    /// Where the host placed the input.
    pub input: u32,
    /// Where the guest put its result.
    pub output: u32,
    /// The guest's result.
    pub result: String,
    /// What the result must be.
    pub expected: String,
    /// The heap after both blocks were freed.
    pub heap: EmsStats,
}

/// The result the guests' `process` must produce for `text`.
pub fn processed(text: &str) -> String {
    format!(
        "{} words: {}",
        text.split_whitespace().count(),
        text.to_uppercase()
    )
}

/// Scenario 2: passes `text` into a fresh guest through a host-allocated
/// buffer and reads the guest's result out.
pub fn pass_buffer(engine: &Engine, text: &str) -> Result<BufferReport> {
    let module = Module::new(engine, GUEST_IMPORTS)?;
    let mut guest = GuestInstance::new(engine, &module, MAX_MEMORY)?;
    let len = u32::try_from(text.len())?;
    let input = guest.malloc(len)?;
    guest.write(input, text.as_bytes())?;
    let output: u32 = guest.call("process", (input, len))?;
    if output == 0 {
        bail!("the guest's `process` failed");
    }
    let result = guest.read_result(output)?;
    guest.free(output)?;
    guest.free(input)?;
    Ok(BufferReport {
        input,
        output,
        result,
        expected: processed(text),
        heap: guest.heap_stats()?,
    })
}

/// What the scribble scenario saw (scenario 4).
#[derive(Clone, Debug)]
pub struct ScribbleReport {
    /// The block whose header the guest overwrote.
    pub block: u32,
    /// The error of the guest's `free` of it (the trap).
    pub free_error: String,
    /// Whether the heap failed closed.
    pub corrupted: bool,
    /// The error of a later guest call into the same instance.
    pub later_call_error: String,
    /// The error of a later host-side `malloc` in the same instance.
    pub host_malloc_error: String,
    /// A fresh instance's workload checksum matched.
    pub fresh_instance_ok: bool,
}

/// Scenario 4: the guest scribbles over a block header, then frees the
/// block.
pub fn scribble(engine: &Engine) -> Result<ScribbleReport> {
    let module = Module::new(engine, GUEST_IMPORTS)?;
    let mut guest = GuestInstance::new(engine, &module, MAX_MEMORY)?;
    let _: u64 = guest.call("workload", 300)?;
    let block: u32 = guest.call("scribble", ())?;
    let free_error = match guest.call::<u32, ()>("release", block) {
        Ok(()) => bail!("the free of a block with a damaged header was accepted"),
        Err(e) => format!("{e:#}"),
    };
    let corrupted = guest.is_corrupted();
    let later_call_error = match guest.call::<u32, u64>("workload", 10) {
        Ok(_) => bail!("a dead instance ran"),
        Err(e) => format!("{e:#}"),
    };
    let host_malloc_error = match guest.malloc(16) {
        Ok(_) => bail!("a failed heap allocated"),
        Err(e) => format!("{e:#}"),
    };
    let mut fresh = GuestInstance::new(engine, &module, MAX_MEMORY)?;
    let fresh_instance_ok = fresh.call::<u32, u64>("workload", 300)? == crate::workload::run(300);
    Ok(ScribbleReport {
        block,
        free_error,
        corrupted,
        later_call_error,
        host_malloc_error,
        fresh_instance_ok,
    })
}

/// Scenario 4, more misuse: the guest frees an address outside the pool,
/// and frees a block twice; each in a fresh instance. The errors, with
/// whether the heap failed closed.
pub fn misuse(engine: &Engine) -> Result<Vec<(&'static str, String, bool)>> {
    let module = Module::new(engine, GUEST_IMPORTS)?;
    let mut out = Vec::new();

    let mut guest = GuestInstance::new(engine, &module, MAX_MEMORY)?;
    let err = match guest.call::<u32, ()>("release", 0x100) {
        Ok(()) => bail!("a foreign free was accepted"),
        Err(e) => format!("{e:#}"),
    };
    out.push((
        "free of an address outside the pool",
        err,
        guest.is_corrupted(),
    ));

    let mut guest = GuestInstance::new(engine, &module, MAX_MEMORY)?;
    let block = guest.malloc(40)?;
    guest.call::<u32, ()>("release", block)?;
    let err = match guest.call::<u32, ()>("release", block) {
        Ok(()) => bail!("a double free was accepted"),
        Err(e) => format!("{e:#}"),
    };
    out.push(("double free", err, guest.is_corrupted()));
    Ok(out)
}

/// What the C-exports scenario saw for one allocator (scenario 5).
#[derive(Clone, Debug)]
pub struct CExportsReport {
    /// The allocator crate.
    pub allocator: &'static str,
    /// Where the guest's `malloc` put the input.
    pub input: u32,
    /// The guest's result.
    pub result: String,
    /// What the result must be.
    pub expected: String,
    /// `aligned_alloc(4096, 100)`.
    pub aligned: u32,
    /// `posix_memalign(&p, 256, 1000)`'s return code and `p`.
    pub posix: (i32, u32),
    /// `calloc(100, 8)` over a reused dirty block was all zeros.
    pub calloc_zeroed: bool,
    /// `realloc` to 100,000 bytes kept the first 64.
    pub realloc_kept: bool,
    /// `malloc(0xFFFF_FFF0)` returned null.
    pub huge_is_null: bool,
    /// `malloc` of 8 MiB (the module grows its memory itself) succeeded.
    pub big_ok: bool,
    /// The allocator's full check (0: sound).
    pub verify: u32,
    /// The memory's pages at the end.
    pub pages: u64,
}

/// Scenario 5: drives the C allocation functions a module exports.
pub fn c_exports(
    engine: &Engine,
    allocator: &'static str,
    wasm: &[u8],
    text: &str,
) -> Result<CExportsReport> {
    let module = Module::new(engine, wasm)?;
    let mut g = CExportsInstance::new(engine, &module, MAX_MEMORY)?;
    let nonnull = |what: &str, p: u32| {
        if p == 0 {
            bail!("{allocator}: {what} returned null")
        } else {
            Ok(p)
        }
    };

    // The buffer round trip, as in scenario 2 but through the module's own
    // malloc/free.
    let len = u32::try_from(text.len())?;
    let input = nonnull("malloc", g.call("malloc", len)?)?;
    g.write(input, text.as_bytes())?;
    let output = nonnull("process", g.call("process", (input, len))?)?;
    let result = g.read_result(output)?;
    g.call::<u32, ()>("free", output)?;
    g.call::<u32, ()>("free", input)?;

    let aligned: u32 = nonnull("aligned_alloc", g.call("aligned_alloc", (4096u32, 100u32))?)?;

    let slot = nonnull("malloc", g.call("malloc", 4u32)?)?;
    let rc: i32 = g.call("posix_memalign", (slot, 256u32, 1000u32))?;
    let mut p = [0u8; 4];
    p.copy_from_slice(&g.read(slot, 4)?);
    let posix = (rc, u32::from_le_bytes(p));
    if rc == 0 {
        g.call::<u32, ()>("free", posix.1)?;
    }
    g.call::<u32, ()>("free", slot)?;

    let dirty = nonnull("malloc", g.call("malloc", 800u32)?)?;
    g.write(dirty, &[0xA5; 800])?;
    g.call::<u32, ()>("free", dirty)?;
    let zeroed = nonnull("calloc", g.call("calloc", (100u32, 8u32))?)?;
    let calloc_zeroed = g.read(zeroed, 800)?.iter().all(|&b| b == 0);
    g.call::<u32, ()>("free", zeroed)?;

    let pattern: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37)).collect();
    let r = nonnull("malloc", g.call("malloc", 64u32)?)?;
    g.write(r, &pattern)?;
    let r = nonnull("realloc", g.call("realloc", (r, 100_000u32))?)?;
    let realloc_kept = g.read(r, 64)? == pattern;
    g.call::<u32, ()>("free", r)?;

    let huge_is_null = g.call::<u32, u32>("malloc", 0xFFFF_FFF0)? == 0;
    let big: u32 = g.call("malloc", 8u32 << 20)?;
    let big_ok = big != 0;
    g.call::<u32, ()>("free", big)?;
    g.call::<u32, ()>("free", aligned)?;
    let verify: u32 = g.call("heap_verify", ())?;
    Ok(CExportsReport {
        allocator,
        input,
        result,
        expected: processed(text),
        aligned,
        posix,
        calloc_zeroed,
        realloc_kept,
        huge_is_null,
        big_ok,
        verify,
        pages: g.pages(),
    })
}
