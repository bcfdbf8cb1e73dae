//! Turning the recorder's raw log into a replayable trace.
//!
//! Raw log entry (six little-endian u32): `op, ptr, size, align, new_ptr,
//! new_size`, op 0 = alloc, 1 = dealloc, 2 = realloc, 3 = alloc_zeroed.
//! Trace event (four little-endian u32): `op, id, size, align`, where ids
//! number blocks in allocation order and a realloc keeps its block's id
//! (its `size` is the new size). Failed calls (null results) are dropped:
//! they changed nothing.

use std::collections::HashMap;

/// Why a raw log is not a consistent allocation history.
#[derive(Debug, PartialEq, Eq)]
pub enum TraceError {
    /// The byte length is not a whole number of entries.
    Truncated,
    /// An op code other than 0..=3.
    BadOp(u32),
    /// A free or realloc of an address that is not live.
    UnknownPointer(u32),
    /// An allocation returned an address that is still live.
    DoubleAllocation(u32),
}

fn words(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Converts a raw log into trace bytes; returns them and the event count.
pub fn convert(raw: &[u8]) -> Result<(Vec<u8>, usize), TraceError> {
    if !raw.chunks_exact(24).remainder().is_empty() {
        return Err(TraceError::Truncated);
    }
    let w: Vec<u32> = words(raw).collect();
    let mut live: HashMap<u32, u32> = HashMap::new();
    let mut next_id = 0u32;
    let mut out = Vec::with_capacity(raw.len() / 24 * 16);
    let mut events = 0;
    let mut push = |out: &mut Vec<u8>, e: [u32; 4]| {
        for v in e {
            out.extend_from_slice(&v.to_le_bytes());
        }
        events += 1;
    };
    for e in w.chunks_exact(6) {
        let (op, ptr, size, align, new_ptr, new_size) = (e[0], e[1], e[2], e[3], e[4], e[5]);
        match op {
            0 | 3 => {
                if ptr == 0 {
                    continue;
                }
                if live.insert(ptr, next_id).is_some() {
                    return Err(TraceError::DoubleAllocation(ptr));
                }
                push(&mut out, [op, next_id, size, align]);
                next_id += 1;
            }
            1 => {
                let id = live.remove(&ptr).ok_or(TraceError::UnknownPointer(ptr))?;
                push(&mut out, [1, id, size, align]);
            }
            2 => {
                if new_ptr == 0 {
                    continue;
                }
                let id = live.remove(&ptr).ok_or(TraceError::UnknownPointer(ptr))?;
                if live.insert(new_ptr, id).is_some() {
                    return Err(TraceError::DoubleAllocation(new_ptr));
                }
                push(&mut out, [2, id, new_size, align]);
            }
            other => return Err(TraceError::BadOp(other)),
        }
    }
    Ok((out, events))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(entries: &[[u32; 6]]) -> Vec<u8> {
        entries
            .iter()
            .flatten()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    fn events(t: &[u8]) -> Vec<[u32; 4]> {
        words(t)
            .collect::<Vec<_>>()
            .chunks_exact(4)
            .map(|c| [c[0], c[1], c[2], c[3]])
            .collect()
    }

    #[test]
    fn ids_follow_allocation_order_and_survive_realloc() {
        let log = raw(&[
            [0, 100, 8, 4, 0, 0],
            [3, 200, 16, 8, 0, 0],
            [2, 100, 8, 4, 300, 32],
            [1, 300, 32, 4, 0, 0],
            [0, 100, 4, 4, 0, 0],
        ]);
        let (t, n) = convert(&log).unwrap();
        assert_eq!(n, 5);
        assert_eq!(
            events(&t),
            vec![
                [0, 0, 8, 4],
                [3, 1, 16, 8],
                [2, 0, 32, 4],
                [1, 0, 32, 4],
                [0, 2, 4, 4]
            ]
        );
    }

    #[test]
    fn failed_calls_are_dropped() {
        let log = raw(&[
            [0, 0, 8, 4, 0, 0],
            [0, 100, 8, 4, 0, 0],
            [2, 100, 8, 4, 0, 1 << 30],
        ]);
        let (_, n) = convert(&log).unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn inconsistent_logs_are_rejected() {
        assert_eq!(convert(&[0; 5]), Err(TraceError::Truncated));
        assert_eq!(
            convert(&raw(&[[1, 100, 8, 4, 0, 0]])),
            Err(TraceError::UnknownPointer(100))
        );
        assert_eq!(
            convert(&raw(&[[0, 100, 8, 4, 0, 0], [0, 100, 8, 4, 0, 0]])),
            Err(TraceError::DoubleAllocation(100))
        );
        assert_eq!(
            convert(&raw(&[[9, 0, 0, 0, 0, 0]])),
            Err(TraceError::BadOp(9))
        );
    }
}
