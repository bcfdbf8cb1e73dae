//! The full heap check: every segment chunk by chunk, every bin, the
//! counters. Returns the statistics it recomputed or the first violation.

use linmem_memory::{HeapStats, MemorySource, Violation};

use crate::bins::{
    FAST, FAST_MAX, NSMALL, NTREE, is_small, small_index, small_size, tree_index, tree_shift,
};
use crate::block::{
    ALIGN_MASK, CINUSE, FENCE, MEM_OFFSET, MIN_CHUNK, MIN_TREE_CHUNK, PINUSE, REC_SIZE, TOP_FOOT,
    W, head, prev_foot, size_of_head, tindex,
};
use crate::heap::Heap;

/// Sums gathered by the walk.
#[derive(Default)]
struct Walk {
    in_use: usize,
    live: usize,
    /// Free chunks other than dv, the top and fast chunks.
    binned: usize,
    /// Fast chunks (I14).
    fast: usize,
    free_bytes: usize,
    largest: usize,
    /// Bytes of records (overhead that lies in segments).
    records: usize,
    segments: usize,
    dv_seen: bool,
}

/// A segment: `[base, end)`; `stop` is where its chunks end (the top in the
/// top segment, the record in older ones).
#[derive(Clone, Copy)]
struct Seg {
    base: usize,
    end: usize,
}

fn v(n: u8, addr: usize, what: &'static str) -> Violation {
    Violation::new(n, addr, what)
}

/// Reads word `i` of the record payload `rec`.
///
/// # Safety
///
/// `rec` is a record payload (I1).
unsafe fn rec_word(rec: *mut u8, i: usize) -> *mut u8 {
    // SAFETY: I1: a record payload holds three pointer words.
    unsafe { rec.cast::<*mut u8>().add(i).read() }
}

/// Upper bound on segments walked, so a corrupted record chain cannot loop.
const MAX_SEGMENTS: usize = 1 << 20;

pub(crate) fn verify<S: MemorySource>(h: &Heap<S>) -> Result<HeapStats, Violation> {
    if h.failed {
        return Err(v(11, 0, "the heap failed closed after a misuse"));
    }
    let mut w = Walk::default();
    if h.seg_base.is_null() {
        let empty = h.top.is_null()
            && h.topsize == 0
            && h.dv.is_null()
            && h.dvsize == 0
            && h.older.is_null()
            && h.smallmap == 0
            && h.treemap == 0
            && h.fast.iter().all(|f| f.is_null());
        if !empty {
            return Err(v(
                8,
                0,
                "heap without a segment has a top, dv, bins or blocks",
            ));
        }
        if h.footprint != h.overhead {
            return Err(v(9, 0, "footprint of an empty heap is not all overhead"));
        }
        return Ok(stats(h, &w));
    }
    check_top(h)?;
    let top_seg = Seg {
        base: h.seg_base.addr(),
        end: h.seg_end.addr(),
    };
    // SAFETY: I1: the top segment's chunks start at `seg_base`.
    unsafe { walk_segment(h, h.seg_base, top_seg, None, &mut w)? };
    let mut rec = h.older;
    while !rec.is_null() {
        if w.segments >= MAX_SEGMENTS {
            return Err(v(1, rec.addr(), "record chain does not end"));
        }
        // SAFETY: I1: `rec` is a record payload.
        let (base, end, next) = unsafe { (rec_word(rec, 0), rec_word(rec, 1), rec_word(rec, 2)) };
        let seg = Seg {
            base: base.addr(),
            end: end.addr(),
        };
        if seg.base & ALIGN_MASK != 0 || seg.end <= seg.base {
            return Err(v(1, rec.addr(), "record holds a bad segment range"));
        }
        if overlaps(seg, top_seg) {
            return Err(v(1, seg.base, "older segment overlaps the top segment"));
        }
        // SAFETY: I1: the record says where the segment's chunks start.
        unsafe { walk_segment(h, base, seg, Some(rec), &mut w)? };
        rec = next;
    }
    check_disjoint(h)?;
    if h.dvsize != 0 && !w.dv_seen {
        return Err(v(7, h.dv.addr(), "dv is not a free chunk of any segment"));
    }
    if h.dvsize == 0 && !h.dv.is_null() {
        return Err(v(7, h.dv.addr(), "dv set with size 0"));
    }
    let in_bins = check_bins(h, &w)?;
    if in_bins != w.binned {
        return Err(v(4, 0, "binned chunks differ from the free chunks walked"));
    }
    check_fast(h, &w)?;
    #[cfg(feature = "hardened")]
    if h.tamper.get() != 0 {
        return Err(v(
            12,
            h.tamper.get(),
            "a free-list link does not unmask to a chunk of the heap",
        ));
    }
    if h.footprint != h.overhead + w.in_use + w.free_bytes {
        return Err(v(9, 0, "footprint != overhead + in_use + free"));
    }
    if h.overhead < w.records + TOP_FOOT {
        return Err(v(9, 0, "overhead smaller than records and reserve"));
    }
    check_pristine(h)?;
    let s = stats(h, &w);
    if summary(h) != s {
        return Err(v(9, 0, "stats() differs from the walk"));
    }
    Ok(s)
}

fn stats<S: MemorySource>(h: &Heap<S>, w: &Walk) -> HeapStats {
    HeapStats {
        footprint: h.footprint,
        peak_footprint: h.footprint,
        in_use: w.in_use,
        live_blocks: w.live,
        free: w.free_bytes,
        free_blocks: w.binned + w.fast + usize::from(h.dvsize != 0) + usize::from(h.topsize != 0),
        largest_free: w.largest,
    }
}

fn overlaps(a: Seg, b: Seg) -> bool {
    a.base < b.end && b.base < a.end
}

/// I1: the older segments are pairwise disjoint (quadratic, bounded by the
/// segment count, which is small).
fn check_disjoint<S: MemorySource>(h: &Heap<S>) -> Result<(), Violation> {
    let mut a = h.older;
    while !a.is_null() {
        // SAFETY: I1: record payloads (the chain was walked already).
        let (sa, mut b) = unsafe {
            (
                Seg {
                    base: rec_word(a, 0).addr(),
                    end: rec_word(a, 1).addr(),
                },
                rec_word(a, 2),
            )
        };
        while !b.is_null() {
            // SAFETY: as above.
            let sb = unsafe {
                Seg {
                    base: rec_word(b, 0).addr(),
                    end: rec_word(b, 1).addr(),
                }
            };
            if overlaps(sa, sb) {
                return Err(v(1, sb.base, "two older segments overlap"));
            }
            // SAFETY: as above.
            b = unsafe { rec_word(b, 2) };
        }
        // SAFETY: as above.
        a = unsafe { rec_word(a, 2) };
    }
    Ok(())
}

/// I8: the top chunk.
fn check_top<S: MemorySource>(h: &Heap<S>) -> Result<(), Violation> {
    let t = h.top.addr();
    if t < h.seg_base.addr() || t & ALIGN_MASK != 0 || h.topsize & ALIGN_MASK != 0 {
        return Err(v(8, t, "top misplaced or misaligned"));
    }
    if t.checked_add(h.topsize)
        .and_then(|e| e.checked_add(TOP_FOOT))
        != Some(h.seg_end.addr())
    {
        return Err(v(8, t, "top + topsize + TOP_FOOT != segment end"));
    }
    // SAFETY: I8: the top's head lies in the segment (checked above).
    if unsafe { head(h.top) } != h.topsize | PINUSE {
        return Err(v(8, t, "top head is not topsize|PINUSE"));
    }
    Ok(())
}

/// I1, I2, I3, I7, I10 (second half): walks one segment from `first`.
///
/// # Safety
///
/// `first` is the first chunk of segment `seg` (I1); `rec` is its record
/// payload for an older segment, `None` for the top segment.
unsafe fn walk_segment<S: MemorySource>(
    h: &Heap<S>,
    first: *mut u8,
    seg: Seg,
    rec: Option<*mut u8>,
    w: &mut Walk,
) -> Result<(), Violation> {
    w.segments += 1;
    let is_top = rec.is_none();
    let stop = if is_top { h.top.addr() } else { seg.end };
    let mut p = first;
    let mut prev_inuse = true;
    loop {
        let a = p.addr();
        if is_top && a == stop {
            if !prev_inuse {
                return Err(v(3, a, "free chunk before the top"));
            }
            w.free_bytes += h.topsize;
            w.largest = w.largest.max(h.topsize);
            return Ok(());
        }
        if a & ALIGN_MASK != 0 || a.checked_add(MEM_OFFSET).is_none_or(|e| e > stop) {
            return Err(v(1, a, "chunk runs past its segment"));
        }
        // SAFETY: I1: `p` is a chunk start inside the segment (checked).
        let hd = unsafe { head(p) };
        let size = size_of_head(hd);
        if (hd & PINUSE != 0) != prev_inuse {
            return Err(v(2, a, "PINUSE disagrees with the previous chunk"));
        }
        if size & ALIGN_MASK != 0 || size > stop - a {
            return Err(v(2, a, "chunk size misaligned or past the segment"));
        }
        // With fast lists, only the chunk that closes an older segment is
        // its record (I14); without, every FENCE chunk must be one.
        let record = rec.is_some() && a.checked_add(size) == Some(seg.end);
        if hd & FENCE != 0 && (!FAST || record) {
            let Some(r) = rec else {
                return Err(v(2, a, "record inside the top segment"));
            };
            if hd & CINUSE == 0 || size < REC_SIZE || a + size != seg.end {
                return Err(v(1, a, "record does not close its segment"));
            }
            if r.addr() != a + MEM_OFFSET {
                return Err(v(1, a, "record chain does not point at the record"));
            }
            w.records += size;
            return Ok(());
        }
        if size < MIN_CHUNK {
            return Err(v(2, a, "chunk smaller than MIN_CHUNK"));
        }
        if a + size == stop && !is_top {
            return Err(v(1, a, "older segment does not end in a record"));
        }
        // SAFETY: I1: `p + size < stop` or is the top, a chunk of the segment.
        let next = unsafe { p.byte_add(size) };
        if hd & FENCE != 0 {
            // A fast chunk (I14): free, but in use for its neighbours.
            if hd & CINUSE == 0 || size > FAST_MAX {
                return Err(v(14, a, "FENCE on a chunk that is no fast chunk"));
            }
            w.fast += 1;
            w.free_bytes += size;
            w.largest = w.largest.max(size);
            prev_inuse = true;
        } else if hd & CINUSE != 0 {
            w.in_use += size;
            w.live += 1;
            prev_inuse = true;
        } else {
            if !prev_inuse {
                return Err(v(3, a, "two adjacent free chunks"));
            }
            // SAFETY: I1: the successor's `prev_foot` lies in the segment.
            if unsafe { prev_foot(next) } != size {
                return Err(v(2, a, "free chunk's boundary tag disagrees with its head"));
            }
            #[cfg(feature = "hardened")]
            // SAFETY: I1: the chunk `[a, a + size)` lies in the segment.
            unsafe {
                check_poisoned(p, size)?
            };
            if p == h.dv {
                if size != h.dvsize {
                    return Err(v(7, a, "dv size differs from dvsize"));
                }
                w.dv_seen = true;
            } else {
                // SAFETY: I4: a free chunk that is not dv is binned.
                unsafe { check_linked(h, p, size)? };
                w.binned += 1;
            }
            w.free_bytes += size;
            w.largest = w.largest.max(size);
            prev_inuse = false;
        }
        p = next;
    }
}

/// I4, I6: the free chunk `p` is linked into the right bin (local check:
/// its neighbours point back at it, or the bin does).
///
/// # Safety
///
/// `p` is a free chunk of `size` bytes inside a segment.
unsafe fn check_linked<S: MemorySource>(
    h: &Heap<S>,
    p: *mut u8,
    size: usize,
) -> Result<(), Violation> {
    let a = p.addr();
    // SAFETY: I4: free chunks hold their links; a linked neighbour is a
    // binned chunk whose links are readable.
    unsafe {
        let (f, b) = (h.fd(p), h.bk(p));
        if is_small(size) {
            let i = small_index(size);
            let back_ok = if b.is_null() {
                h.small[i] == p
            } else {
                h.fd(b) == p
            };
            if !back_ok || (!f.is_null() && h.bk(f) != p) {
                return Err(v(4, a, "small free chunk not linked in its bin"));
            }
        } else {
            if size < MIN_TREE_CHUNK || tindex(p) != tree_index(size) {
                return Err(v(6, a, "tree chunk's index is not its size's bin"));
            }
            if h.fd(b) != p || h.bk(f) != p {
                return Err(v(6, a, "tree chunk's ring links disagree"));
            }
            let xp = h.parent(p);
            let node_ok = if xp.is_null() {
                // A root, or a ring member of a node of the same size.
                h.tree[tindex(p)] == p || f != p
            } else {
                h.child(xp, 0) == p || h.child(xp, 1) == p
            };
            if !node_ok {
                return Err(v(6, a, "tree chunk not reachable from its parent or bin"));
            }
        }
    }
    Ok(())
}

/// Whether `p` is a chunk start of some segment below its end (cheap range
/// test used on bin entries before they are read).
fn in_segment<S: MemorySource>(h: &Heap<S>, p: *mut u8) -> bool {
    let a = p.addr();
    if a & ALIGN_MASK != 0 {
        return false;
    }
    if a >= h.seg_base.addr() && a < h.top.addr() {
        return true;
    }
    let mut rec = h.older;
    while !rec.is_null() {
        // SAFETY: I1: record payloads (the chain was walked already).
        let (base, next) = unsafe { (rec_word(rec, 0), rec_word(rec, 2)) };
        if a >= base.addr() && a < rec.addr() - MEM_OFFSET {
            return true;
        }
        rec = next;
    }
    false
}

/// A binned chunk: in a segment, free, not dv nor top, of `size` bytes.
fn check_binned<S: MemorySource>(h: &Heap<S>, p: *mut u8, inv: u8) -> Result<usize, Violation> {
    if !in_segment(h, p) || p == h.dv || p == h.top {
        return Err(v(
            inv,
            p.addr(),
            "bin entry is not a free chunk of a segment",
        ));
    }
    // SAFETY: I1: `p` is an aligned address below a segment's chunk end.
    let hd = unsafe { head(p) };
    if hd & (CINUSE | FENCE) != 0 {
        return Err(v(inv, p.addr(), "bin entry is in use"));
    }
    Ok(size_of_head(hd))
}

/// I4, I5, I6: every bin, its map bit, and its entries. Returns the number
/// of entries.
fn check_bins<S: MemorySource>(h: &Heap<S>, w: &Walk) -> Result<usize, Violation> {
    let bound = w.binned + 1;
    let mut total = 0;
    for i in 0..NSMALL {
        let mut x = h.small[i];
        if (h.smallmap >> i & 1 != 0) == x.is_null() {
            return Err(v(5, i, "small map bit disagrees with the bin"));
        }
        let mut prev = core::ptr::null_mut();
        while !x.is_null() {
            total += 1;
            if total > bound {
                return Err(v(4, x.addr(), "small bin list too long (a cycle?)"));
            }
            if check_binned(h, x, 4)? != small_size(i) {
                return Err(v(4, x.addr(), "chunk in the wrong small bin"));
            }
            // SAFETY: I4: `x` is a binned free chunk (checked).
            unsafe {
                if h.bk(x) != prev {
                    return Err(v(4, x.addr(), "small bin back link broken"));
                }
                prev = x;
                x = h.fd(x);
            }
        }
    }
    for i in 0..NTREE {
        let root = h.tree[i];
        if (h.treemap >> i & 1 != 0) == root.is_null() {
            return Err(v(5, i, "tree map bit disagrees with the bin"));
        }
        if !root.is_null() {
            check_binned(h, root, 6)?;
            // SAFETY: I6: the root is a binned free chunk (checked).
            if !unsafe { h.parent(root) }.is_null() {
                return Err(v(6, root.addr(), "tree root has a parent"));
            }
            total += check_tree(h, root, i, 0, 0, bound.saturating_sub(total))?;
            if total > bound {
                return Err(v(6, root.addr(), "tree bins hold too many chunks"));
            }
        }
    }
    Ok(total)
}

/// I14: every fast list holds only fast chunks of its size, and together
/// exactly the fast chunks the walk found; `has_fast` is set when any does.
fn check_fast<S: MemorySource>(h: &Heap<S>, w: &Walk) -> Result<(), Violation> {
    let mut total = 0;
    for (i, &first) in h.fast.iter().enumerate() {
        let mut x = first;
        while !x.is_null() {
            total += 1;
            if total > w.fast {
                return Err(v(14, x.addr(), "fast lists hold more than the fast chunks"));
            }
            if !in_segment(h, x) {
                return Err(v(
                    14,
                    x.addr(),
                    "fast list entry is not a chunk of a segment",
                ));
            }
            // SAFETY: I1: `x` is an aligned address below a segment's chunk
            // end.
            let hd = unsafe { head(x) };
            if hd & (CINUSE | FENCE) != CINUSE | FENCE || size_of_head(hd) != small_size(i) {
                return Err(v(
                    14,
                    x.addr(),
                    "fast list entry is no fast chunk of its size",
                ));
            }
            // SAFETY: I14: a fast chunk holds its link.
            x = unsafe { h.fd(x) };
        }
    }
    if total != w.fast {
        return Err(v(14, 0, "fast chunks missing from the fast lists"));
    }
    if total != 0 && !h.has_fast {
        return Err(v(14, 0, "fast chunks listed but has_fast is clear"));
    }
    Ok(())
}

/// I6: the subtree at `t` (depth `depth`, reached by the direction bits
/// `path`, most recent lowest) of tree bin `i`; returns its chunk count.
fn check_tree<S: MemorySource>(
    h: &Heap<S>,
    t: *mut u8,
    i: usize,
    depth: u32,
    path: usize,
    budget: usize,
) -> Result<usize, Violation> {
    let a = t.addr();
    if depth >= usize::BITS {
        return Err(v(6, a, "tree deeper than the size bits"));
    }
    let size = check_binned(h, t, 6)?;
    if tree_index(size) != i {
        return Err(v(6, a, "tree chunk in the wrong bin"));
    }
    // SAFETY: I6: `t` is a binned free chunk (checked), holding tree links.
    unsafe {
        if tindex(t) != i {
            return Err(v(6, a, "tree chunk stores the wrong index"));
        }
        if depth > 0 {
            let key = (size << tree_shift(i)) >> (usize::BITS - depth);
            if key != path {
                return Err(v(6, a, "tree chunk off the path of its size bits"));
            }
        }
        // The ring of equal sizes.
        let mut count = 1;
        let mut x = h.fd(t);
        if h.bk(x) != t {
            return Err(v(6, a, "ring link broken"));
        }
        while x != t {
            if count > budget {
                return Err(v(6, x.addr(), "ring too long (a cycle?)"));
            }
            if check_binned(h, x, 6)? != size {
                return Err(v(6, x.addr(), "ring member of another size"));
            }
            if !h.parent(x).is_null() || tindex(x) != i {
                return Err(v(6, x.addr(), "ring member with a parent or wrong index"));
            }
            if h.bk(h.fd(x)) != x {
                return Err(v(6, x.addr(), "ring link broken"));
            }
            count += 1;
            x = h.fd(x);
        }
        for k in 0..2 {
            let c = h.child(t, k);
            if c.is_null() {
                continue;
            }
            if c == t || !in_segment(h, c) || h.parent(c) != t {
                return Err(v(6, c.addr(), "child's parent link is not its node"));
            }
            count += check_tree(
                h,
                c,
                i,
                depth + 1,
                (path << 1) | k,
                budget.saturating_sub(count),
            )?;
            if count > budget {
                return Err(v(6, a, "tree holds too many chunks (a cycle?)"));
            }
        }
        Ok(count)
    }
}

/// I13: the free chunk `p` of `size` bytes (not the top) holds the poison
/// byte in its window after its head and links.
///
/// # Safety
///
/// `[p, p + size)` lies in a segment.
#[cfg(feature = "hardened")]
unsafe fn check_poisoned(p: *mut u8, size: usize) -> Result<(), Violation> {
    let word = usize::from_ne_bytes([crate::block::POISON; W]);
    let mut off = crate::block::poison_from(size);
    let end = size.min(off + crate::block::POISON_CHECK);
    while off < end {
        // SAFETY: the caller's contract; `off` is word-aligned.
        if unsafe { p.byte_add(off).cast::<usize>().read() } != word {
            return Err(v(13, p.addr() + off, "freed memory written after free"));
        }
        off += W;
    }
    Ok(())
}

/// I10: the top segment above the watermark is still zero.
fn check_pristine<S: MemorySource>(h: &Heap<S>) -> Result<(), Violation> {
    let lo = h.fresh.max(h.top.addr() + MEM_OFFSET);
    let end = h.seg_end.addr();
    if h.fresh < h.seg_base.addr() + MEM_OFFSET || h.fresh > end {
        return Err(v(10, h.fresh, "watermark outside the top segment"));
    }
    if lo >= end {
        return Ok(());
    }
    // `lo` and `end` are 8-aligned (chunk addresses plus 2W, I1); read
    // words.
    let words = (end - lo) / W;
    // SAFETY: I1: `[lo, end)` lies inside the top segment and is aligned.
    let ws = unsafe {
        core::slice::from_raw_parts(h.top.byte_add(lo - h.top.addr()).cast::<usize>(), words)
    };
    match ws.iter().position(|&x| x != 0) {
        Some(i) => Err(v(10, lo + i * W, "non-zero word above the watermark")),
        None => Ok(()),
    }
}

/// The statistics by a plain walk of every segment (no checks): what
/// [`RawHeap::stats`](linmem_memory::RawHeap::stats) returns.
pub(crate) fn summary<S: MemorySource>(h: &Heap<S>) -> HeapStats {
    let mut s = HeapStats {
        footprint: h.footprint,
        peak_footprint: h.footprint,
        ..HeapStats::default()
    };
    if h.failed || h.seg_base.is_null() {
        return s;
    }
    let mut tally = |p: *mut u8, stop: usize| {
        let mut p = p;
        while p.addr() < stop {
            // SAFETY: I1: chunks tile the segment up to `stop` (the top or
            // the record).
            let hd = unsafe { head(p) };
            let size = size_of_head(hd);
            // A damaged head (a stray write past a block) must not make the
            // walk loop or leave the segment: stop counting there; `verify()`
            // names the damage.
            if size < MIN_CHUNK || size & ALIGN_MASK != 0 || size > stop - p.addr() {
                break;
            }
            if hd & (CINUSE | FENCE) == CINUSE {
                s.in_use += size;
                s.live_blocks += 1;
            } else {
                s.free += size;
                s.free_blocks += 1;
                s.largest_free = s.largest_free.max(size);
            }
            // SAFETY: I1: the next chunk (or `stop`) is in the segment.
            p = unsafe { p.byte_add(size) };
        }
    };
    tally(h.seg_base, h.top.addr());
    let mut rec = h.older;
    while !rec.is_null() {
        // SAFETY: I1: `rec` is a record payload.
        let (base, next) = unsafe { (rec_word(rec, 0), rec_word(rec, 2)) };
        tally(base, rec.addr() - MEM_OFFSET);
        rec = next;
    }
    if h.topsize != 0 {
        s.free += h.topsize;
        s.free_blocks += 1;
        s.largest_free = s.largest_free.max(h.topsize);
    }
    s
}
