//! Allocates and frees a few hundred thousand blocks of mixed sizes through
//! the global allocator and checks every byte it wrote; `run` returns the
//! number of blocks checked, or 0 on the first damaged block.

#[cfg(feature = "bump")]
#[global_allocator]
static A: linmem_bump::Global = linmem_bump::Global::new();

#[cfg(feature = "dlmalloc")]
#[global_allocator]
static A: linmem_dlmalloc::Global = linmem_dlmalloc::Global::new();

#[cfg(feature = "emmalloc")]
#[global_allocator]
static A: linmem_emmalloc::Global = linmem_emmalloc::Global::new();

#[cfg(feature = "ems")]
#[global_allocator]
static A: linmem_ems::Global = linmem_ems::Global::new();

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn filled(len: usize, tag: u32) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).wrapping_add(tag) as u8)
        .collect()
}

fn intact(v: &[u8], tag: u32) -> bool {
    v.iter()
        .enumerate()
        .all(|(i, &b)| b == (i as u32).wrapping_mul(2_654_435_761).wrapping_add(tag) as u8)
}

/// Runs `blocks` allocations with up to `live` blocks alive at once.
#[unsafe(no_mangle)]
pub extern "C" fn run(blocks: u32, live: u32) -> u32 {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut pool: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut checked = 0u32;
    for tag in 0..blocks {
        let len = match rng.below(10) {
            0..=6 => 1 + rng.below(64),
            7..=8 => 1 + rng.below(1024),
            _ => 1 + rng.below(16 * 1024),
        };
        let mut v = filled(len, tag);
        if rng.below(8) == 0 {
            // Grow some blocks by realloc, keeping what was written.
            v.extend_from_slice(&filled(len, tag)[..len.min(32)]);
            v.truncate(len);
        }
        pool.push((tag, v));
        if pool.len() > live as usize {
            let (t, v) = pool.swap_remove(rng.below(pool.len()));
            if !intact(&v, t) {
                return 0;
            }
            checked += 1;
        }
    }
    for (t, v) in &pool {
        if !intact(v, *t) {
            return 0;
        }
        checked += 1;
    }
    checked
}

/// Pages of linear memory in use (`memory.size`).
#[unsafe(no_mangle)]
pub extern "C" fn pages() -> u32 {
    core::arch::wasm32::memory_size(0) as u32
}
