//! The guest's data-structure workload, shared word for word by the guest
//! module (which runs it over the host's ems heap) and the host (which runs
//! it natively to know the checksum the guest must return).
//!
//! It uses only `core` and `alloc`: a `BTreeMap<u32, String>` with inserts,
//! replacements and removals, a `Vec<u64>` that grows by doubling (realloc)
//! and is shrunk now and then, and boxed 64-byte-aligned records (the
//! aligned allocation path). The checksum covers every key, every string
//! byte, every logged value and the alignment of every record.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

/// A record that must be 64-byte aligned.
#[repr(align(64))]
struct Line([u32; 16]);

/// A seeded xorshift generator.
struct Rng(u64);

impl Rng {
    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: u32) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % u64::from(n)) as u32
    }
}

/// FNV-1a over bytes.
struct Fnv(u64);

impl Fnv {
    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 = (self.0 ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
}

/// Runs `n` steps and returns the checksum of everything built.
pub fn run(n: u32) -> u64 {
    let span = n.max(1).saturating_mul(2);
    let mut rng = Rng(0x2545_F491_4F6C_DD1D ^ u64::from(n));
    let mut map: BTreeMap<u32, String> = BTreeMap::new();
    let mut log: Vec<u64> = Vec::new();
    let mut lines: Vec<Box<Line>> = Vec::new();
    for i in 0..n {
        let key = rng.below(span);
        let mut s = String::new();
        for r in 0..1 + rng.below(12) {
            // Writing into a String cannot fail.
            let _ = write!(s, "{key:x}.{r};");
        }
        map.insert(key, s);
        if rng.below(4) == 0 {
            let from = rng.below(span);
            if let Some(k) = map.range(from..).next().map(|(k, _)| *k) {
                map.remove(&k);
            }
        }
        log.push((u64::from(key) << 32) | u64::from(i));
        if i % 7 == 0 {
            lines.push(Box::new(Line([i; 16])));
        }
        if i % 1000 == 999 {
            lines.retain(|l| l.0[0] % 2 == 0);
        }
        if i % 5000 == 4999 {
            log.truncate(log.len() / 2);
            log.shrink_to_fit();
        }
    }
    let mut h = Fnv(0xCBF2_9CE4_8422_2325);
    for (k, v) in &map {
        h.bytes(&k.to_le_bytes());
        h.bytes(v.as_bytes());
    }
    for x in &log {
        h.bytes(&x.to_le_bytes());
    }
    for l in &lines {
        let misaligned = (&raw const **l).addr() % 64 != 0;
        h.bytes(&l.0[0].to_le_bytes());
        h.bytes(&[u8::from(misaligned)]);
    }
    h.0
}
