//! A real runtime embedding of ems: a [`wasmtime`] host that serves its
//! guests' `malloc`/`free` from an ems heap living *inside the guest's own
//! linear memory* (what WAMR calls the app heap), managed by `u32` guest
//! addresses through [`linmem_ems::guest::GuestHeap`].
//!
//! # How it fits together
//!
//! ```text
//!  guest linear memory (owned by wasmtime; may move when it grows)
//!  0                       __heap_base                          memory.size
//!  | data, stack (guest)   | ems pool: | hdr | block | hdr | ... | top   |
//!                          ^ pool_offset          grows with memory.grow ->
//!
//!  host: GuestState { GuestHeap (bookkeeping, offsets only), counters }
//! ```
//!
//! - [`GuestInstance`] instantiates a module whose allocator is the host:
//!   it imports `env.malloc(size)`, `env.aligned_alloc(align, size)`,
//!   `env.realloc(addr, size)` and `env.free(addr)` (the guest in
//!   `guests/imports` forwards its `#[global_allocator]` to them). The pool
//!   starts at `__heap_base` (8-aligned) and spans the rest of memory.
//! - Every import and every host-side call ([`GuestInstance::malloc`],
//!   [`GuestInstance::free`]) hands the heap the memory as a byte slice
//!   fetched afresh from wasmtime, so a moved base is harmless: the heap
//!   only holds offsets (no migrate step at all).
//! - When the heap is full the host grows the memory ([`Memory::grow`],
//!   at least [`GROW_STEP_PAGES`] pages), extends the pool
//!   ([`GuestHeap::extend`]) and retries once; growth is capped by a
//!   [`ResourceLimiter`] ([`GuestInstance::new`]'s `max_memory`). The
//!   counters in [`HostStats`] record growth events and base moves.
//! - Fail closed: guest code can write anything anywhere in its memory,
//!   including over block headers. ems checks every `free`/`realloc`; a
//!   failed check makes the heap refuse everything from then on. The host
//!   turns that into a trap of the current call with a message
//!   ([`GuestInstance::fault`]) and refuses later calls into that instance;
//!   other instances are unaffected. Nothing the guest writes can make the
//!   host panic or touch memory outside the guest's memory: every guest
//!   value is range-checked (`get`, `checked_*`), never `unwrap`ped.
//!
//! [`CExportsInstance`] is the opposite set-up (scenario 5): the module
//! brings its own allocator (a linmem crate's `c-exports` feature) and
//! exports C's `malloc` family, which the host calls.
//!
//! [`scenarios`] runs the five scenarios; `src/main.rs` prints them and
//! `tests/scenarios.rs` asserts them.
//!
//! A guest may also grow its memory itself (`memory.grow` in its own code).
//! The host notices that the size changed behind its back when it next
//! grows, and extends the pool with [`GuestHeap::extend_from`]: the guest's
//! pages become a gap block that the heap never reads or writes, and only
//! the host's new pages are pooled. Counted in [`HostStats::foreign_growth`].
//!
//! The host is safe Rust throughout (`forbid(unsafe_code)`).

#![forbid(unsafe_code)]

extern crate alloc;

pub mod scenarios;
pub mod workload;

use std::fmt::Display;

use linmem_ems::EmsStats;
use linmem_ems::guest::GuestHeap;
use wasmtime::{
    AsContextMut, Caller, Config, Engine, Error, Instance, Linker, Memory, Module, ResourceLimiter,
    Result, Store, TypedFunc, WasmParams, WasmResults, bail, format_err,
};

/// The guest of scenarios 1–4 (`guests/imports`), built by `build.rs`.
pub const GUEST_IMPORTS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest_imports.wasm"));

/// The guest of scenario 5 (`guests/cexports`) per allocator, built by
/// `build.rs`: `(allocator, module bytes)`.
pub const GUEST_CEXPORTS: &[(&str, &[u8])] = &[
    (
        "linmem-bump",
        include_bytes!(concat!(env!("OUT_DIR"), "/guest_cexports_bump.wasm")),
    ),
    (
        "linmem-dlmalloc",
        include_bytes!(concat!(env!("OUT_DIR"), "/guest_cexports_dlmalloc.wasm")),
    ),
    (
        "linmem-emmalloc",
        include_bytes!(concat!(env!("OUT_DIR"), "/guest_cexports_emmalloc.wasm")),
    ),
    (
        "linmem-ems",
        include_bytes!(concat!(env!("OUT_DIR"), "/guest_cexports_ems.wasm")),
    ),
];

/// A wasm page.
pub const PAGE: u64 = 64 * 1024;

/// ems's block alignment: what `malloc` guarantees.
const GRAIN: u32 = 8;

/// The least the host grows memory by when the heap is full (1 MiB).
pub const GROW_STEP_PAGES: u64 = 16;

/// A pool smaller than this at instantiation is first grown by a page.
const MIN_POOL: usize = 4096;

/// Slack added to a request when sizing a growth: block header, end
/// sentinel, rounding.
const GROW_SLACK: u64 = 64;

/// An engine; with `moving_memory`, linear memories have no reserved room
/// to grow into, so every growth moves the memory to a new host address
/// (what ems's offsets are for). Otherwise wasmtime's default 4 GiB
/// reservation keeps the base fixed.
pub fn engine(moving_memory: bool) -> Result<Engine> {
    let mut config = Config::new();
    if moving_memory {
        config
            .memory_reservation(0)
            .memory_reservation_for_growth(0)
            .memory_may_move(true);
    }
    Engine::new(&config)
}

/// What the host did for one instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostStats {
    /// `malloc` requests served (guest imports and host-side calls).
    pub mallocs: u64,
    /// `aligned_alloc` requests served.
    pub aligned: u64,
    /// `realloc` requests served.
    pub reallocs: u64,
    /// `free` calls served.
    pub frees: u64,
    /// Requests answered with 0 (out of memory after growing).
    pub out_of_memory: u64,
    /// Times the host grew the memory and extended the pool.
    pub grow_events: u64,
    /// Pages added by those growths.
    pub pages_added: u64,
    /// Growths after which the memory's host address had changed.
    pub base_moves: u64,
    /// Host growths that found pages the guest had grown itself (skipped
    /// as a gap in the pool).
    pub foreign_growth: u64,
    /// The pool's length when the heap was set up.
    pub initial_pool: u32,
}

impl HostStats {
    /// Every allocation-function call served.
    pub fn ops(&self) -> u64 {
        self.mallocs + self.aligned + self.reallocs + self.frees
    }
}

/// The store data of a [`GuestInstance`]: the heap's bookkeeping (only
/// offsets: it stays valid when wasmtime moves the memory) and counters.
pub struct GuestState {
    heap: Option<GuestHeap>,
    memory: Option<Memory>,
    /// The memory size the pool was last fitted to (to notice growth by
    /// someone else).
    mem_len: usize,
    max_memory: usize,
    stats: HostStats,
    fault: Option<String>,
}

impl GuestState {
    /// Records the fault that kills this instance and returns it as the
    /// error that traps the current call.
    fn fail(&mut self, what: impl Display) -> Error {
        let msg = format!("guest heap corrupted: {what}; the heap failed closed");
        self.fault.get_or_insert(msg.clone());
        format_err!(msg)
    }

    /// The heap and the memory, or the error that traps a call made before
    /// the heap exists or after it failed.
    fn ready(&self) -> Result<Memory> {
        if let Some(f) = &self.fault {
            bail!("instance is dead: {f}");
        }
        match (&self.heap, self.memory) {
            (Some(_), Some(m)) => Ok(m),
            _ => bail!("the guest heap is not set up yet"),
        }
    }
}

impl ResourceLimiter for GuestState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> Result<bool> {
        Ok(desired <= self.max_memory)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> Result<bool> {
        Ok(desired <= 10_000)
    }
}

/// Allocates `size` bytes aligned to `align` in the guest heap, growing the
/// memory once when full: the guest address, 0 when out of memory, an error
/// (trap) when the heap is corrupted.
fn serve_alloc(mut cx: impl AsContextMut<Data = GuestState>, size: u32, align: u32) -> Result<u32> {
    let memory = cx.as_context().data().ready()?;
    let mut grown = false;
    loop {
        let (bytes, state) = memory.data_and_store_mut(cx.as_context_mut());
        let Some(heap) = state.heap.as_mut() else {
            bail!("the guest heap is not set up yet");
        };
        if let Some(addr) = heap.memalign(bytes, size, align) {
            if align > GRAIN {
                state.stats.aligned += 1;
            } else {
                state.stats.mallocs += 1;
            }
            return Ok(addr);
        }
        if heap.is_corrupted() {
            return Err(state.fail(format_args!("malloc({size}) found damage")));
        }
        if grown
            || !grow_pool(
                cx.as_context_mut(),
                memory,
                u64::from(size) + u64::from(align),
            )?
        {
            cx.as_context_mut().data_mut().stats.out_of_memory += 1;
            return Ok(0);
        }
        grown = true;
    }
}

/// Resizes the block at `addr`, growing the memory once when full: the new
/// address, 0 when out of memory (the block stays live), an error (trap)
/// when the heap is corrupted (for instance `addr` is not a live block).
fn serve_realloc(
    mut cx: impl AsContextMut<Data = GuestState>,
    addr: u32,
    size: u32,
) -> Result<u32> {
    let memory = cx.as_context().data().ready()?;
    let mut grown = false;
    loop {
        let (bytes, state) = memory.data_and_store_mut(cx.as_context_mut());
        let Some(heap) = state.heap.as_mut() else {
            bail!("the guest heap is not set up yet");
        };
        if let Some(new) = heap.realloc(bytes, addr, size) {
            state.stats.reallocs += 1;
            return Ok(new);
        }
        if heap.is_corrupted() {
            return Err(state.fail(format_args!("realloc({addr:#x}, {size}) found damage")));
        }
        if grown || !grow_pool(cx.as_context_mut(), memory, u64::from(size))? {
            cx.as_context_mut().data_mut().stats.out_of_memory += 1;
            return Ok(0);
        }
        grown = true;
    }
}

/// Frees the block at `addr` (0 is a no-op); an error (trap) for anything
/// that is not a live block, after which the heap stays failed closed.
fn serve_free(mut cx: impl AsContextMut<Data = GuestState>, addr: u32) -> Result<()> {
    let memory = cx.as_context().data().ready()?;
    let (bytes, state) = memory.data_and_store_mut(cx.as_context_mut());
    let Some(heap) = state.heap.as_mut() else {
        bail!("the guest heap is not set up yet");
    };
    match heap.free(bytes, addr) {
        Ok(()) => {
            state.stats.frees += 1;
            Ok(())
        }
        Err(e) => Err(state.fail(format_args!("free({addr:#x}): {e}"))),
    }
}

/// Grows the memory by enough pages for `need` more bytes (at least
/// [`GROW_STEP_PAGES`]) and extends the pool over them, skipping pages the
/// guest grew itself. `Ok(false)` when the memory cannot grow (the limit);
/// an error when the heap refuses to extend (failed closed).
fn grow_pool(
    mut cx: impl AsContextMut<Data = GuestState>,
    memory: Memory,
    need: u64,
) -> Result<bool> {
    let before_len = memory.data_size(&cx);
    let before_base = memory.data_ptr(&cx).addr();
    if before_len != cx.as_context().data().mem_len {
        // The guest grew its memory itself: those pages hold its data and
        // become a gap in the pool (skipped, never touched).
        cx.as_context_mut().data_mut().stats.foreign_growth += 1;
    }
    let pages = (need + GROW_SLACK).div_ceil(PAGE).max(GROW_STEP_PAGES);
    if memory.grow(&mut cx, pages).is_err() {
        return Ok(false);
    }
    let after_base = memory.data_ptr(&cx).addr();
    let (bytes, state) = memory.data_and_store_mut(cx.as_context_mut());
    let Some(heap) = state.heap.as_mut() else {
        bail!("the guest heap is not set up yet");
    };
    // A 32-bit memory is at most 4 GiB and the pool starts above 0, so the
    // pool length fits a u32; saturate rather than trust it.
    let pool_len = bytes.len().saturating_sub(heap.pool_offset() as usize);
    let pool_len = u32::try_from(pool_len).unwrap_or(u32::MAX);
    // The host's pages start at the size it found: anything between the
    // pool's end and there was grown by the guest.
    let from = u32::try_from(before_len).unwrap_or(u32::MAX);
    if let Err(e) = heap.extend_from(bytes, from, pool_len) {
        return Err(state.fail(format_args!("extending the pool: {e}")));
    }
    state.mem_len = bytes.len();
    state.stats.grow_events += 1;
    state.stats.pages_added += pages;
    state.stats.base_moves += u64::from(after_base != before_base);
    Ok(true)
}

/// A guest whose allocator is the host: a wasmtime instance plus the ems
/// heap inside its memory.
pub struct GuestInstance {
    store: Store<GuestState>,
    instance: Instance,
    memory: Memory,
}

impl GuestInstance {
    /// Instantiates `module` with the allocation imports and lays the heap
    /// over its memory from `__heap_base` up; the memory may grow to
    /// `max_memory` bytes.
    pub fn new(engine: &Engine, module: &Module, max_memory: usize) -> Result<Self> {
        let mut linker: Linker<GuestState> = Linker::new(engine);
        linker.func_wrap(
            "env",
            "malloc",
            |caller: Caller<'_, GuestState>, size: u32| serve_alloc(caller, size, GRAIN),
        )?;
        linker.func_wrap(
            "env",
            "aligned_alloc",
            |caller: Caller<'_, GuestState>, align: u32, size: u32| {
                if !align.is_power_of_two() {
                    return Ok(0);
                }
                serve_alloc(caller, size, align.max(GRAIN))
            },
        )?;
        linker.func_wrap(
            "env",
            "realloc",
            |caller: Caller<'_, GuestState>, addr: u32, size: u32| {
                serve_realloc(caller, addr, size)
            },
        )?;
        linker.func_wrap(
            "env",
            "free",
            |caller: Caller<'_, GuestState>, addr: u32| serve_free(caller, addr),
        )?;
        let state = GuestState {
            heap: None,
            memory: None,
            mem_len: 0,
            max_memory,
            stats: HostStats::default(),
            fault: None,
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| s);
        let instance = linker.instantiate(&mut store, module)?;
        let Some(memory) = instance.get_memory(&mut store, "memory") else {
            bail!("the guest exports no `memory`");
        };
        let Some(heap_base) = instance
            .get_global(&mut store, "__heap_base")
            .and_then(|g| g.get(&mut store).i32())
        else {
            bail!("the guest exports no i32 `__heap_base`");
        };
        let Some(pool_offset) = (heap_base as u32).checked_next_multiple_of(GRAIN) else {
            bail!("`__heap_base` {heap_base:#x} is out of range");
        };
        let room = memory
            .data_size(&store)
            .saturating_sub(pool_offset as usize);
        if room < MIN_POOL {
            memory.grow(&mut store, 1)?;
        }
        let bytes = memory.data_mut(&mut store);
        let pool_len =
            u32::try_from(bytes.len().saturating_sub(pool_offset as usize)).unwrap_or(u32::MAX);
        let heap = GuestHeap::init(bytes, pool_offset, pool_len).map_err(|e| {
            format_err!("setting up the heap at {pool_offset:#x} (+{pool_len}): {e}")
        })?;
        let mem_len = bytes.len();
        let state = store.data_mut();
        state.stats.initial_pool = heap.pool_len();
        state.heap = Some(heap);
        state.memory = Some(memory);
        state.mem_len = mem_len;
        Ok(Self {
            store,
            instance,
            memory,
        })
    }

    /// Calls the guest export `name`. A trap kills the instance: the
    /// heap's fault message (when the trap came from it) or the trap is
    /// returned now and by every later call.
    pub fn call<P: WasmParams, R: WasmResults>(&mut self, name: &str, params: P) -> Result<R> {
        if let Some(f) = &self.store.data().fault {
            bail!("instance is dead: {f}");
        }
        let f: TypedFunc<P, R> = self.instance.get_typed_func(&mut self.store, name)?;
        match f.call(&mut self.store, params) {
            Ok(r) => Ok(r),
            Err(e) => {
                let state = self.store.data_mut();
                let msg = match &state.fault {
                    Some(f) => f.clone(),
                    None => format!("the guest trapped in `{name}`: {e:#}"),
                };
                state.fault = Some(msg.clone());
                Err(format_err!(msg))
            }
        }
    }

    /// Host-side allocation in the guest heap (WAMR's
    /// `wasm_runtime_module_malloc`): a guest address, growing memory when
    /// needed; an error when out of memory or the heap failed.
    pub fn malloc(&mut self, size: u32) -> Result<u32> {
        match serve_alloc(&mut self.store, size, GRAIN)? {
            0 => bail!("out of guest memory for {size} bytes"),
            addr => Ok(addr),
        }
    }

    /// Host-side free of a block from [`malloc`](Self::malloc) or from the
    /// guest's `malloc` import.
    pub fn free(&mut self, addr: u32) -> Result<()> {
        serve_free(&mut self.store, addr)
    }

    /// Copies `data` into guest memory at `addr` (bounds-checked).
    pub fn write(&mut self, addr: u32, data: &[u8]) -> Result<()> {
        write_at(self.memory.data_mut(&mut self.store), addr, data)
    }

    /// Copies `len` bytes out of guest memory at `addr` (bounds-checked).
    pub fn read(&self, addr: u32, len: u32) -> Result<Vec<u8>> {
        read_at(self.memory.data(&self.store), addr, len).map(<[u8]>::to_vec)
    }

    /// Reads a result block laid out as a little-endian `u32` length and
    /// that many UTF-8 bytes (what the guests' `process` returns).
    pub fn read_result(&self, addr: u32) -> Result<String> {
        read_result_at(self.memory.data(&self.store), addr)
    }

    /// The host's counters.
    pub fn stats(&self) -> HostStats {
        self.store.data().stats
    }

    /// Why the instance is dead, if it is.
    pub fn fault(&self) -> Option<&str> {
        self.store.data().fault.as_deref()
    }

    /// Whether the heap failed closed.
    pub fn is_corrupted(&self) -> bool {
        self.store
            .data()
            .heap
            .as_ref()
            .is_some_and(GuestHeap::is_corrupted)
    }

    /// The pool: its guest address and length.
    pub fn pool(&self) -> (u32, u32) {
        self.store
            .data()
            .heap
            .as_ref()
            .map_or((0, 0), |h| (h.pool_offset(), h.pool_len()))
    }

    /// The guest memory's size in pages.
    pub fn pages(&self) -> u64 {
        self.memory.size(&self.store)
    }

    /// The heap's full check and statistics (total, free, high-water mark,
    /// block counts and histograms).
    pub fn heap_stats(&self) -> Result<EmsStats> {
        let Some(heap) = self.store.data().heap.as_ref() else {
            bail!("the guest heap is not set up yet");
        };
        heap.stats(self.memory.data(&self.store))
            .map_err(|v| format_err!("heap check failed: {v}"))
    }
}

/// A guest that brings its own allocator and exports C's `malloc` family
/// (scenario 5); the host only calls those exports.
pub struct CExportsInstance {
    store: Store<Limit>,
    instance: Instance,
    memory: Memory,
}

/// The memory cap of a [`CExportsInstance`].
pub struct Limit(usize);

impl ResourceLimiter for Limit {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> Result<bool> {
        Ok(desired <= self.0)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> Result<bool> {
        Ok(desired <= 10_000)
    }
}

impl CExportsInstance {
    /// Instantiates `module` (no imports); its memory may grow to
    /// `max_memory` bytes.
    pub fn new(engine: &Engine, module: &Module, max_memory: usize) -> Result<Self> {
        let mut store = Store::new(engine, Limit(max_memory));
        store.limiter(|l| l);
        let instance = Linker::new(engine).instantiate(&mut store, module)?;
        let Some(memory) = instance.get_memory(&mut store, "memory") else {
            bail!("the guest exports no `memory`");
        };
        Ok(Self {
            store,
            instance,
            memory,
        })
    }

    /// Calls the guest export `name` (a trap is an error).
    pub fn call<P: WasmParams, R: WasmResults>(&mut self, name: &str, params: P) -> Result<R> {
        let f: TypedFunc<P, R> = self.instance.get_typed_func(&mut self.store, name)?;
        f.call(&mut self.store, params)
            .map_err(|e| format_err!("the guest trapped in `{name}`: {e:#}"))
    }

    /// Copies `data` into guest memory at `addr` (bounds-checked).
    pub fn write(&mut self, addr: u32, data: &[u8]) -> Result<()> {
        write_at(self.memory.data_mut(&mut self.store), addr, data)
    }

    /// Copies `len` bytes out of guest memory at `addr` (bounds-checked).
    pub fn read(&self, addr: u32, len: u32) -> Result<Vec<u8>> {
        read_at(self.memory.data(&self.store), addr, len).map(<[u8]>::to_vec)
    }

    /// Reads a result block laid out as a little-endian `u32` length and
    /// that many UTF-8 bytes (what the guest's `process` returns).
    pub fn read_result(&self, addr: u32) -> Result<String> {
        read_result_at(self.memory.data(&self.store), addr)
    }

    /// The guest memory's size in pages.
    pub fn pages(&self) -> u64 {
        self.memory.size(&self.store)
    }
}

/// Copies `data` into `mem` at `addr`, or an error when it does not fit.
fn write_at(mem: &mut [u8], addr: u32, data: &[u8]) -> Result<()> {
    let start = addr as usize;
    match start
        .checked_add(data.len())
        .and_then(|end| mem.get_mut(start..end))
    {
        Some(dst) => {
            dst.copy_from_slice(data);
            Ok(())
        }
        None => bail!("{} bytes at {addr:#x} are outside guest memory", data.len()),
    }
}

/// The `len` bytes of `mem` at `addr`, or an error when out of range.
fn read_at(mem: &[u8], addr: u32, len: u32) -> Result<&[u8]> {
    let start = addr as usize;
    match start
        .checked_add(len as usize)
        .and_then(|end| mem.get(start..end))
    {
        Some(src) => Ok(src),
        None => bail!("{len} bytes at {addr:#x} are outside guest memory"),
    }
}

/// Reads a result block at `addr`: a little-endian `u32` length, then that
/// many bytes of UTF-8. Everything in it is guest-controlled: checked.
fn read_result_at(mem: &[u8], addr: u32) -> Result<String> {
    let mut len = [0u8; 4];
    len.copy_from_slice(read_at(mem, addr, 4)?);
    let Some(at) = addr.checked_add(4) else {
        bail!("result block at {addr:#x} is outside guest memory");
    };
    let text = read_at(mem, at, u32::from_le_bytes(len))?;
    String::from_utf8(text.to_vec())
        .map_err(|e| format_err!("the guest's result is not UTF-8: {e}"))
}
