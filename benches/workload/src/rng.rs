//! A small seeded generator: every module draws the same sequence.

/// xorshift64* — deterministic, fast, good enough for workload shapes.
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    #[inline]
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }

    /// Uniform in `0..n`.
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A mixed alignment: mostly 1..=16, sometimes up to 256.
    #[inline]
    pub fn align(&mut self) -> usize {
        let r = self.next();
        if r.is_multiple_of(8) {
            16 << ((r >> 8) % 5)
        } else {
            1 << ((r >> 8) % 5)
        }
    }

    /// A heavy-tailed size in `1..=max` (max a power of two >= 16): each
    /// doubling of the size is half as likely.
    #[inline]
    pub fn heavy_tailed(&mut self, max: usize) -> usize {
        let r = self.next();
        let classes = max.trailing_zeros() - 4; // 16, 32, .., max
        let k = ((r >> 32) as u32).trailing_zeros().min(classes);
        let hi = 16usize << k;
        1 + (r as usize % hi)
    }
}
