//! The chunk header written at the start of each run of memory.

use core::mem::{align_of, size_of};

/// The header at the start of every chunk (I1).
#[repr(C)]
pub(crate) struct Chunk {
    /// The next chunk obtained, or null.
    pub next: *mut Chunk,
    /// The address one past the chunk's last byte.
    pub end: usize,
    /// The highest address ever handed out in this chunk (I4), saved when
    /// the arena leaves the chunk.
    pub high: usize,
}

/// Bytes from the chunk start to its first data byte.
pub(crate) const HEADER: usize = size_of::<Chunk>();

const _: () = assert!(HEADER.is_multiple_of(align_of::<Chunk>()));
const _: () = assert!(align_of::<Chunk>() <= 16);

impl Chunk {
    /// The first data byte of the chunk at `c`.
    #[inline(always)]
    pub fn data(c: *mut Chunk) -> usize {
        c.addr() + HEADER
    }
}
