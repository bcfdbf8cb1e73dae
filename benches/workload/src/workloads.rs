//! Synthetic workloads: random actions, small-object churn, the ratchet,
//! heap efficiency, and the empty workload.

use crate::{fail, rng::Rng};
use std::alloc::{Layout, alloc, dealloc, realloc};

/// A live block with a tag byte written at both ends.
#[derive(Clone, Copy)]
struct Block {
    ptr: *mut u8,
    size: usize,
    align: usize,
    tag: u8,
}

impl Block {
    /// Allocates and tags a block; `None` when the allocator returns null.
    #[inline]
    fn try_new(size: usize, align: usize, tag: u8) -> Option<Block> {
        let layout = Layout::from_size_align(size, align).unwrap_or_else(|_| fail());
        // SAFETY: `layout` has a non-zero size (all sizes drawn are >= 1).
        let ptr = unsafe { alloc(layout) };
        if ptr.is_null() {
            return None;
        }
        if !(ptr as usize).is_multiple_of(align) {
            fail();
        }
        // SAFETY: `ptr` is a fresh block of `size >= 1` bytes.
        unsafe {
            ptr.write(tag);
            ptr.add(size - 1).write(tag);
        }
        Some(Block {
            ptr,
            size,
            align,
            tag,
        })
    }

    /// Allocates and tags a block; traps (in `out_of_memory`) when the
    /// allocator returns null.
    #[inline]
    fn new(size: usize, align: usize, tag: u8) -> Block {
        Block::try_new(size, align, tag).unwrap_or_else(|| crate::out_of_memory())
    }

    /// Checks both tags (a broken allocator that overlaps blocks fails here).
    #[inline]
    fn check(&self) -> u64 {
        // SAFETY: the block is live and `size >= 1`.
        let (a, b) = unsafe { (self.ptr.read(), self.ptr.add(self.size - 1).read()) };
        if a != self.tag || b != self.tag {
            fail();
        }
        a as u64 + self.size as u64
    }

    /// Resizes, checking the preserved tag and tagging the new end.
    #[inline]
    fn resize(&mut self, new_size: usize) {
        self.check();
        let layout = Layout::from_size_align(self.size, self.align).unwrap_or_else(|_| fail());
        // SAFETY: the block is live with this layout; `new_size >= 1`.
        let ptr = unsafe { realloc(self.ptr, layout, new_size) };
        if ptr.is_null() || !(ptr as usize).is_multiple_of(self.align) {
            fail();
        }
        // SAFETY: `ptr` holds `new_size >= 1` bytes, the first one preserved.
        unsafe {
            if ptr.read() != self.tag {
                fail();
            }
            ptr.add(new_size - 1).write(self.tag);
        }
        self.ptr = ptr;
        self.size = new_size;
    }

    /// Checks and frees the block.
    #[inline]
    fn free(self) -> u64 {
        let sum = self.check();
        // SAFETY: the block is live with exactly this layout.
        unsafe {
            dealloc(
                self.ptr,
                Layout::from_size_align_unchecked(self.size, self.align),
            )
        };
        sum
    }
}

#[inline]
fn mix(cs: u64, v: u64) -> u64 {
    (cs ^ v).wrapping_mul(0x0000_0100_0000_01B3)
}

/// Random actions: `n` actions on 200 slots (about 100 live blocks, never
/// fewer than 50), sizes uniform in 1..=10000, mixed alignments. An empty
/// slot is allocated; a full one is freed, or with `realloc` half the time
/// resized to a new uniform size.
fn random_actions(n: u32, with_realloc: bool) -> u64 {
    const SLOTS: usize = 200;
    const MIN_LIVE: usize = 50;
    let mut rng = Rng::new(0x5EED_0001);
    let mut slots: [Option<Block>; SLOTS] = [None; SLOTS];
    let mut live = 0usize;
    let mut cs = 0u64;
    for i in 0..n {
        let mut s = rng.below(SLOTS);
        if live < MIN_LIVE {
            while slots[s].is_some() {
                s = (s + 1) % SLOTS;
            }
        }
        match slots[s].as_mut() {
            None => {
                let b = Block::new(rng.range(1, 10_000), rng.align(), i as u8);
                cs = mix(cs, b.size as u64);
                slots[s] = Some(b);
                live += 1;
            }
            Some(b) if with_realloc && rng.next().is_multiple_of(2) => {
                b.resize(rng.range(1, 10_000));
                cs = mix(cs, b.size as u64);
            }
            Some(_) => {
                let b = slots[s].take().unwrap_or_else(|| fail());
                cs = mix(cs, b.free());
                live -= 1;
            }
        }
    }
    for b in slots.iter_mut().filter_map(Option::take) {
        cs = mix(cs, b.free());
    }
    cs
}

/// Random actions without realloc.
#[unsafe(no_mangle)]
pub extern "C" fn wl_random_actions(scale: u32) -> u64 {
    random_actions(scale, false)
}

/// Random actions with realloc.
#[unsafe(no_mangle)]
pub extern "C" fn wl_random_realloc(scale: u32) -> u64 {
    random_actions(scale, true)
}

/// Small-object churn on 1024 slots: a random slot is allocated if empty,
/// freed if full.
fn churn(n: u32, size: impl Fn(&mut Rng) -> usize) -> u64 {
    const SLOTS: usize = 1024;
    let mut rng = Rng::new(0x5EED_0002);
    let mut slots: [Option<Block>; SLOTS] = [None; SLOTS];
    let mut cs = 0u64;
    for i in 0..n {
        let s = rng.below(SLOTS);
        match slots[s].take() {
            None => {
                let sz = size(&mut rng);
                let b = Block::new(sz, sz.next_power_of_two().min(8), i as u8);
                cs = mix(cs, sz as u64);
                slots[s] = Some(b);
            }
            Some(b) => cs = mix(cs, b.free()),
        }
    }
    for b in slots.iter_mut().filter_map(Option::take) {
        cs = mix(cs, b.free());
    }
    cs
}

/// Churn of objects of 1..=128 bytes (uniform).
#[unsafe(no_mangle)]
pub extern "C" fn wl_churn_small(scale: u32) -> u64 {
    churn(scale, |r| r.range(1, 128))
}

/// Churn of objects of 1..=1024 bytes, heavy-tailed (small ones dominate).
#[unsafe(no_mangle)]
pub extern "C" fn wl_churn_kib(scale: u32) -> u64 {
    churn(scale, |r| r.heavy_tailed(1024))
}

/// Number of `memory.size` samples the ratchet keeps.
const SERIES_CAP: usize = 512;
static mut SERIES: [u32; SERIES_CAP] = [0; SERIES_CAP];
static mut SERIES_LEN: u32 = 0;

fn sample_memory() {
    // SAFETY: single-threaded module; the statics are only used here and in
    // the exports below, never by reference.
    unsafe {
        let len = SERIES_LEN as usize;
        if len < SERIES_CAP {
            (&raw mut SERIES)
                .cast::<u32>()
                .add(len)
                .write(core::arch::wasm32::memory_size(0) as u32);
            SERIES_LEN += 1;
        }
    }
}

/// Address of the `memory.size` samples (u32 each) taken by the ratchet.
#[unsafe(no_mangle)]
pub extern "C" fn series_ptr() -> *const u32 {
    (&raw const SERIES).cast()
}

/// Number of samples at `series_ptr`.
#[unsafe(no_mangle)]
pub extern "C" fn series_len() -> u32 {
    // SAFETY: single-threaded module, plain read.
    unsafe { SERIES_LEN }
}

/// The ratchet: four buffers grow by appends (so by realloc) while
/// long-lived small objects are allocated between the growth steps; a
/// buffer that reaches its target length is dropped and started again. A
/// buffer that cannot grow in place leaves a hole that small objects then
/// pin: the fragmentation case. Samples `memory.size` 256 times.
#[unsafe(no_mangle)]
pub extern "C" fn wl_ratchet(scale: u32) -> u64 {
    let mut rng = Rng::new(0x5EED_0003);
    let mut bufs: [Vec<u8>; 4] = Default::default();
    let mut targets = [0usize; 4];
    for t in targets.iter_mut() {
        *t = rng.range(64 << 10, 1 << 20);
    }
    let mut keep: Vec<Vec<u8>> = Vec::new();
    let chunk = [0xA5u8; 64];
    let every = (scale / 256).max(1);
    let mut cs = 0u64;
    for i in 0..scale {
        let b = (i % 4) as usize;
        bufs[b].extend_from_slice(&chunk[..rng.range(1, 64)]);
        if i % 2 == 0 {
            let len = rng.range(8, 64);
            keep.push(vec![i as u8; len]);
        }
        if bufs[b].len() >= targets[b] {
            cs = mix(cs, bufs[b].len() as u64 + bufs[b][bufs[b].len() / 2] as u64);
            bufs[b] = Vec::new();
            targets[b] = rng.range(64 << 10, 1 << 20);
        }
        if i % every == 0 {
            sample_memory();
        }
    }
    for (i, k) in keep.iter().enumerate() {
        if k[0] != i.wrapping_mul(2) as u8 || k[k.len() - 1] != k[0] {
            fail();
        }
        cs = mix(cs, k.len() as u64);
    }
    cs
}

unsafe extern "C" {
    /// Set by the linker: the first byte after the module's static data and
    /// stack, where the heap starts.
    static __heap_base: u8;
}

/// Heap efficiency: under the host's memory cap, allocate (three times in
/// four) or free a random live block (once in four) until the first
/// allocation failure. Returns, in parts per million, the live requested
/// bytes at that moment over the heap's memory (`memory.size` minus
/// `__heap_base` minus the block table, one big block of 4-byte entries).
///
/// Each block stores its own size at its start (size 1: a zero byte; else
/// two bytes, flagged) and a check byte at its end (from size 3), so the
/// table holds only addresses.
fn heap_eff(table_cap: usize, size: impl Fn(&mut Rng) -> usize) -> u64 {
    fn put(p: *mut u8, sz: usize) {
        // SAFETY: `p` holds `sz >= 1` bytes; the second byte is written only
        // when `sz >= 2`, the check byte only when `sz >= 3`.
        unsafe {
            if sz == 1 {
                p.write(0);
                return;
            }
            p.write((sz & 0x7F) as u8 | 0x80);
            p.add(1).write((sz >> 7) as u8);
            if sz >= 3 {
                p.add(sz - 1).write(sz as u8 ^ 0x5A);
            }
        }
    }
    fn get(p: *mut u8) -> usize {
        // SAFETY: the block is live and was written by `put`.
        unsafe {
            let b0 = p.read();
            if b0 == 0 {
                return 1;
            }
            if b0 & 0x80 == 0 {
                fail();
            }
            let sz = (b0 & 0x7F) as usize | (p.add(1).read() as usize) << 7;
            if sz < 2 || (sz >= 3 && p.add(sz - 1).read() != sz as u8 ^ 0x5A) {
                fail();
            }
            sz
        }
    }
    let mut rng = Rng::new(0x5EED_0004);
    let layout = Layout::array::<*mut u8>(table_cap).unwrap_or_else(|_| fail());
    // SAFETY: non-zero size.
    let table = unsafe { alloc(layout) }.cast::<*mut u8>();
    if table.is_null() {
        return 0;
    }
    let mut len = 0usize;
    let mut live = 0u64;
    let at_oom = loop {
        if len > 0 && rng.below(4) == 0 {
            let i = rng.below(len);
            len -= 1;
            // SAFETY: `i` and `len` are below the number of filled entries.
            let p = unsafe {
                let p = table.add(i).read();
                table.add(i).write(table.add(len).read());
                p
            };
            let sz = get(p);
            live -= sz as u64;
            // SAFETY: `p` is live, allocated with this layout.
            unsafe { dealloc(p, Layout::from_size_align_unchecked(sz, 8)) };
            continue;
        }
        if len == table_cap {
            fail();
        }
        let sz = size(&mut rng);
        // SAFETY: non-zero size, align 8.
        let p = unsafe { alloc(Layout::from_size_align_unchecked(sz, 8)) };
        if p.is_null() {
            break live;
        }
        if !(p as usize).is_multiple_of(8) {
            fail();
        }
        put(p, sz);
        // SAFETY: `len < table_cap`.
        unsafe { table.add(len).write(p) };
        len += 1;
        live += sz as u64;
    };
    let memory = core::arch::wasm32::memory_size(0) as u64 * 65536;
    let heap_base = (&raw const __heap_base) as usize as u64;
    let used = memory
        .saturating_sub(heap_base + layout.size() as u64)
        .max(1);
    for i in 0..len {
        // SAFETY: `i < len`, a filled entry: a live block.
        unsafe {
            let p = table.add(i).read();
            dealloc(p, Layout::from_size_align_unchecked(get(p), 8));
        }
    }
    // SAFETY: the table was allocated with `layout`.
    unsafe { dealloc(table.cast(), layout) };
    at_oom * 1_000_000 / used
}

/// Heap efficiency (ppm) with sizes uniform in 1..=10000, under 32 MiB.
#[unsafe(no_mangle)]
pub extern "C" fn wl_heap_eff(_scale: u32) -> u64 {
    heap_eff(1 << 14, |r| r.range(1, 10_000))
}

/// Heap efficiency (ppm) with small objects, sizes uniform in 1..=128,
/// under 8 MiB.
#[unsafe(no_mangle)]
pub extern "C" fn wl_heap_eff_small(_scale: u32) -> u64 {
    heap_eff(1 << 18, |r| r.range(1, 128))
}

/// The empty workload: the cost of the harness itself (instantiation not
/// included, call and timing included).
#[unsafe(no_mangle)]
pub extern "C" fn wl_empty(scale: u32) -> u64 {
    scale as u64
}
