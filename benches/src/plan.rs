//! The workloads and the order runs are made in.

/// How a workload is run and what it yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A timed export `wl_<name>(scale) -> checksum`.
    Timed,
    /// Replay of the trace recorded from the named program workload.
    Replay(&'static str),
    /// Heap efficiency: run once under a memory cap (in 64 KiB pages);
    /// returns live bytes over heap memory at the first OOM, in ppm.
    HeapEff(usize),
}

/// One workload.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Name used in tables, files and `wl_<name>` exports.
    pub name: &'static str,
    /// How it is run.
    pub kind: Kind,
    /// Scale argument of a full run (a quick run uses half).
    pub scale: u32,
    /// One-line description for the README and `--help`.
    pub about: &'static str,
}

impl Workload {
    /// The export to call.
    pub fn export(&self) -> String {
        format!("wl_{}", self.name)
    }

    /// The scale for a full or quick run.
    pub fn scale_for(&self, quick: bool) -> u32 {
        if quick {
            (self.scale / 2).max(1)
        } else {
            self.scale
        }
    }

    /// Whether this is a heap-efficiency workload (not timed).
    pub fn is_heap_eff(&self) -> bool {
        matches!(self.kind, Kind::HeapEff(_))
    }

    /// Whether this workload is a recorded real program (traced for replay).
    pub fn is_program(&self) -> bool {
        WORKLOADS.iter().any(|w| w.kind == Kind::Replay(self.name))
    }
}

/// Memory cap of ordinary runs, in 64 KiB pages (256 MiB).
pub const LIMIT_PAGES: usize = 4096;

/// Every workload, in table order.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "empty",
        kind: Kind::Timed,
        scale: 1,
        about: "no work: the harness's own call overhead",
    },
    Workload {
        name: "random_actions",
        kind: Kind::Timed,
        scale: 500_000,
        about: "random alloc/free, sizes 1..=10000, mixed alignments, >= 50 live",
    },
    Workload {
        name: "random_realloc",
        kind: Kind::Timed,
        scale: 500_000,
        about: "random actions with realloc",
    },
    Workload {
        name: "churn_small",
        kind: Kind::Timed,
        scale: 1_000_000,
        about: "small-object churn, sizes 1..=128",
    },
    Workload {
        name: "churn_kib",
        kind: Kind::Timed,
        scale: 1_000_000,
        about: "churn, sizes 1..=1024 heavy-tailed",
    },
    Workload {
        name: "ratchet",
        kind: Kind::Timed,
        scale: 200_000,
        about: "growing buffers between long-lived small objects (fragmentation)",
    },
    Workload {
        name: "json",
        kind: Kind::Timed,
        scale: 500,
        about: "serde_json: serialize, parse, pretty-print, parse typed",
    },
    Workload {
        name: "maps",
        kind: Kind::Timed,
        scale: 25_000,
        about: "BTreeMap and HashMap of strings: fill, remove, update",
    },
    Workload {
        name: "trees",
        kind: Kind::Timed,
        scale: 2_000,
        about: "binary trees built, checked and dropped",
    },
    Workload {
        name: "strings",
        kind: Kind::Timed,
        scale: 10_000,
        about: "formatting, splitting, joining, case mapping",
    },
    Workload {
        name: "replay_json",
        kind: Kind::Replay("json"),
        scale: 500,
        about: "replay of json's allocation trace",
    },
    Workload {
        name: "replay_maps",
        kind: Kind::Replay("maps"),
        scale: 25_000,
        about: "replay of maps's trace",
    },
    Workload {
        name: "replay_trees",
        kind: Kind::Replay("trees"),
        scale: 2_000,
        about: "replay of trees's trace",
    },
    Workload {
        name: "replay_strings",
        kind: Kind::Replay("strings"),
        scale: 10_000,
        about: "replay of strings's trace",
    },
    Workload {
        name: "heap_eff",
        kind: Kind::HeapEff(512),
        scale: 1,
        about: "allocate (sizes 1..=10000) until the first OOM under 32 MiB",
    },
    Workload {
        name: "heap_eff_small",
        kind: Kind::HeapEff(128),
        scale: 1,
        about: "allocate (sizes 1..=128) until the first OOM under 8 MiB",
    },
];

/// The allocator order of repetition `rep`: rotated each time, so no
/// allocator always runs first (allocators are interleaved within each
/// workload, repetitions outermost, so slow drifts of the machine hit all
/// alike).
pub fn rotation(n: usize, rep: usize) -> Vec<usize> {
    (0..n).map(|i| (i + rep) % n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_is_a_permutation_that_moves_the_first() {
        assert_eq!(rotation(3, 0), vec![0, 1, 2]);
        assert_eq!(rotation(3, 1), vec![1, 2, 0]);
        assert_eq!(rotation(3, 4), vec![1, 2, 0]);
        assert!(rotation(0, 5).is_empty());
    }

    #[test]
    fn every_replay_names_a_timed_program() {
        for w in WORKLOADS {
            if let Kind::Replay(p) = w.kind {
                let prog = WORKLOADS
                    .iter()
                    .find(|x| x.name == p)
                    .expect("program exists");
                assert_eq!(prog.kind, Kind::Timed);
                assert!(prog.is_program());
                assert_eq!(
                    prog.scale, w.scale,
                    "a replay replays the program at its own scale"
                );
            }
        }
    }

    #[test]
    fn quick_scale_is_half_but_never_zero() {
        let w = WORKLOADS[1];
        assert_eq!(w.scale_for(true), w.scale / 2);
        assert_eq!(WORKLOADS[0].scale_for(true), 1);
    }
}
