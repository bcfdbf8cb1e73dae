//! The 64 free-list buckets.
//!
//! Region sizes below [`EXACT_LIMIT`] get one bucket per 8-byte size (exact
//! fit: the head of such a bucket always fits a request of that size). From
//! `EXACT_LIMIT` up, each power of two gets [`SUBS`] sub-buckets, found from
//! the leading-zero count; the last bucket holds every size from
//! `LAST_FROM` up.

use crate::block::{GRAIN, MIN_REGION};

/// Number of free-list buckets (one bit each in a `u64` mask).
pub(crate) const BUCKETS: usize = 64;

/// Sizes below this get exact 8-byte buckets.
pub(crate) const EXACT_LIMIT: usize = 256;

/// Sub-buckets per power of two above `EXACT_LIMIT`.
const SUBS: usize = 4;

const EXACT: usize = EXACT_LIMIT / GRAIN;
const LOG_EXACT: usize = EXACT_LIMIT.trailing_zeros() as usize;

const _: () = assert!(EXACT_LIMIT.is_power_of_two() && EXACT == 32 && SUBS == 4);
const _: () = assert!(MIN_REGION < EXACT_LIMIT);
const _: () = assert!(bucket(MIN_REGION) >= 1 && bucket(EXACT_LIMIT - GRAIN) == EXACT - 1);
const _: () = assert!(bucket(EXACT_LIMIT) == EXACT && bucket(usize::MAX) == BUCKETS - 1);
const _: () = assert!(bucket(LAST_FROM - GRAIN) == BUCKETS - 2 && bucket(LAST_FROM) == BUCKETS - 1);

/// The smallest size of the last bucket.
pub(crate) const LAST_FROM: usize = bucket_floor(BUCKETS - 1);

/// The bucket of a free region of `size` bytes (`size >= MIN_REGION`).
///
/// One shared copy (code size).
#[inline(never)]
pub(crate) const fn bucket(size: usize) -> usize {
    if size < EXACT_LIMIT {
        return size / GRAIN;
    }
    let log = (usize::BITS - 1 - size.leading_zeros()) as usize;
    let b = EXACT + (log - LOG_EXACT) * SUBS + ((size >> (log - 2)) & (SUBS - 1));
    if b < BUCKETS { b } else { BUCKETS - 1 }
}

/// The smallest size that falls into bucket `b`.
pub(crate) const fn bucket_floor(b: usize) -> usize {
    if b < EXACT {
        return b * GRAIN;
    }
    let log = (b - EXACT) / SUBS + LOG_EXACT;
    let sub = (b - EXACT) % SUBS;
    (1 << log) + sub * (1 << (log - 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_sizes_get_exact_buckets() {
        let mut s = MIN_REGION;
        while s < EXACT_LIMIT {
            assert_eq!(bucket(s), s / GRAIN);
            assert_eq!(bucket_floor(bucket(s)), s);
            s += GRAIN;
        }
    }

    #[test]
    fn buckets_are_monotonic_and_cover_their_floor() {
        let mut prev = 0;
        let limit = if cfg!(miri) { 1 << 13 } else { 1 << 22 };
        let mut s = MIN_REGION;
        while s < limit {
            let b = bucket(s);
            assert!(b >= prev && b < BUCKETS);
            assert!(bucket_floor(b) <= s);
            if b + 1 < BUCKETS {
                assert!(bucket_floor(b + 1) > s);
            }
            prev = b;
            s += GRAIN;
        }
    }

    #[test]
    fn four_sub_buckets_per_power_of_two() {
        assert_eq!(bucket(256), 32);
        assert_eq!(bucket(256 + 64), 33);
        assert_eq!(bucket(256 + 128), 34);
        assert_eq!(bucket(256 + 192), 35);
        assert_eq!(bucket(512), 36);
        assert_eq!(bucket_floor(BUCKETS - 1), LAST_FROM);
    }

    #[test]
    fn huge_sizes_land_in_the_last_bucket() {
        assert_eq!(bucket(LAST_FROM), BUCKETS - 1);
        assert_eq!(bucket(1 << 30), BUCKETS - 1);
        assert_eq!(bucket(usize::MAX & !7), BUCKETS - 1);
    }
}
