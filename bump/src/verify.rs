//! The whole-arena check: every invariant of the crate docs.

use linmem_memory::Violation;

use crate::arena::Parts;
use crate::chunk::{Chunk, HEADER};

/// Checks I1, I2, I3 and I5 over the chunk list and the arena's fields.
pub(crate) fn verify(a: Parts) -> Result<(), Violation> {
    if a.first.is_null() {
        return match a.cur.is_null() && a.tail.is_null() && a.footprint == 0 {
            true => Ok(()),
            false => Err(Violation::new(
                1,
                0,
                "no chunks but a current chunk or footprint",
            )),
        };
    }
    // I1: walk the list; it must reach the tail within the footprint's
    // bound on the number of chunks (no cycle), passing `cur`.
    let max_chunks = a.footprint / HEADER + 1;
    let (mut c, mut n, mut bytes, mut seen_cur) = (a.first, 0usize, 0usize, false);
    let mut last = c;
    while !c.is_null() {
        n += 1;
        if n > max_chunks {
            return Err(Violation::new(1, c.addr(), "chunk list does not end"));
        }
        if !c.addr().is_multiple_of(align_of::<Chunk>()) {
            return Err(Violation::new(1, c.addr(), "misaligned chunk header"));
        }
        // SAFETY: I1 (being checked link by link): `c` was reached from
        // `first` through headers the arena wrote.
        let (end, next) = unsafe { ((*c).end, (*c).next) };
        if end < Chunk::data(c) {
            return Err(Violation::new(1, c.addr(), "chunk ends before its data"));
        }
        bytes += end - c.addr();
        seen_cur |= c == a.cur;
        last = c;
        c = next;
    }
    if last != a.tail {
        return Err(Violation::new(
            1,
            last.addr(),
            "last chunk of the list is not the tail",
        ));
    }
    if bytes > a.footprint {
        return Err(Violation::new(
            1,
            a.first.addr(),
            "chunks hold more than the footprint",
        ));
    }
    // I2: the bump pointer lies in the current chunk; `end` is the capped end.
    if !seen_cur {
        return Err(Violation::new(
            2,
            a.cur.addr(),
            "current chunk is not in the list",
        ));
    }
    // SAFETY: I1: `cur` is in the list (checked just above).
    let cur_end = unsafe { (*a.cur).end };
    if a.ptr < Chunk::data(a.cur) || a.ptr > cur_end {
        return Err(Violation::new(
            2,
            a.ptr,
            "bump pointer outside the current chunk",
        ));
    }
    let budget = a.limit.saturating_sub(a.prior);
    if a.end != cur_end.min(Chunk::data(a.cur).saturating_add(budget)) {
        return Err(Violation::new(
            2,
            a.end,
            "allocation end is not the capped chunk end",
        ));
    }
    // I3: the most recent allocation lies below the bump pointer.
    if a.last != 0 && (a.last < Chunk::data(a.cur) || a.last > a.ptr) {
        return Err(Violation::new(
            3,
            a.last,
            "most recent block outside the used part",
        ));
    }
    // I5: bytes in chunks before `cur` cannot exceed what those chunks hold.
    if a.prior > a.footprint {
        return Err(Violation::new(
            5,
            a.prior,
            "more bytes allocated than obtained",
        ));
    }
    Ok(())
}
