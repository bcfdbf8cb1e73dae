//! The results of a run and their renderings: terminal tables, CSV, JSON.

use crate::plan::Workload;
use crate::stats::{Summary, geomean};

/// What one allocator did on one workload.
#[derive(Debug, Clone, Default)]
pub struct Cell {
    /// Wall time of each timed run, in nanoseconds.
    pub times_ns: Vec<f64>,
    /// Checksum of every run (timed and fuel runs).
    pub checksums: Vec<u64>,
    /// Wasmtime fuel of the instrumented run.
    pub fuel: Option<u64>,
    /// `memory.size` in pages after the run (the peak: memory never shrinks).
    pub pages: Option<u64>,
    /// Heap efficiency runs: live bytes over heap memory at the first
    /// out-of-memory, in parts per million (computed by the module).
    pub efficiency_ppm: Option<u64>,
    /// `memory.size` samples (ratchet).
    pub series: Vec<u32>,
    /// First error (trap, build or engine failure).
    pub error: Option<String>,
    /// False when the checksums disagree with each other or the reference.
    pub checksum_ok: bool,
}

/// One allocator of the run.
#[derive(Debug, Clone)]
pub struct AllocInfo {
    /// Display name (`talc`, `bump`, ...).
    pub name: String,
    /// One of ours.
    pub linmem: bool,
    /// Size module bytes (opt-level z, `wasm-opt -Oz`).
    pub size_bytes: Option<u64>,
    /// `__heap_base` of its workload module.
    pub heap_base: Option<u64>,
    /// `memory.size` of a fresh instance of its workload module.
    pub initial_pages: Option<u64>,
}

/// Where and how the run was made.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// UTC date and time.
    pub date: String,
    /// CPU, cores, OS.
    pub machine: String,
    /// Engine of the wall times.
    pub engine: String,
    /// Quick mode.
    pub quick: bool,
    /// Timed runs per allocator and workload.
    pub reps: usize,
    /// Size of the empty baseline size module.
    pub baseline_size: Option<u64>,
}

/// A whole run: `cells[w][a]` for workload `w`, allocator `a`.
#[derive(Debug, Clone)]
pub struct Results {
    /// Run description.
    pub meta: Meta,
    /// Allocators, in column order.
    pub allocators: Vec<AllocInfo>,
    /// Workloads, in row order.
    pub workloads: Vec<Workload>,
    /// Allocator operations of each workload (from the recorder).
    pub ops: Vec<Option<u64>>,
    /// Results, indexed by workload then allocator.
    pub cells: Vec<Vec<Cell>>,
}

/// Which cells agree: every run of a cell must give one checksum, and it
/// must equal the reference cell's (`reference`, e.g. the dlmalloc crate) or,
/// without a usable reference, the most common checksum. Cells with no
/// checksum are not ok.
pub fn agree(checksums: &[Vec<u64>], reference: Option<usize>) -> Vec<bool> {
    let single: Vec<Option<u64>> = checksums
        .iter()
        .map(|c| match c.first() {
            Some(&f) if c.iter().all(|&x| x == f) => Some(f),
            _ => None,
        })
        .collect();
    let expected = reference
        .and_then(|r| single.get(r).copied().flatten())
        .or_else(|| {
            let mut best: Option<(u64, usize)> = None;
            for v in single.iter().flatten() {
                let n = single.iter().filter(|s| **s == Some(*v)).count();
                if best.is_none_or(|(_, bn)| n > bn) {
                    best = Some((*v, n));
                }
            }
            best.map(|b| b.0)
        });
    single
        .iter()
        .map(|s| s.is_some() && *s == expected)
        .collect()
}

impl Results {
    /// Index of the ratio baseline (the `dlmalloc` crate), if present.
    pub fn baseline(&self) -> Option<usize> {
        self.allocators.iter().position(|a| a.name == "dlmalloc")
    }

    /// Marks every cell's `checksum_ok` (heap efficiency: ok unless failed).
    pub fn check_checksums(&mut self) {
        let base = self.baseline();
        for (w, row) in self.cells.iter_mut().enumerate() {
            if self.workloads[w].is_heap_eff() {
                for c in row.iter_mut() {
                    c.checksum_ok = c.error.is_none() && c.efficiency_ppm.is_some();
                }
                continue;
            }
            let sums: Vec<Vec<u64>> = row.iter().map(|c| c.checksums.clone()).collect();
            for (c, ok) in row.iter_mut().zip(agree(&sums, base)) {
                c.checksum_ok = ok && c.error.is_none();
            }
        }
    }

    /// Wall-time summary in microseconds, for good cells.
    pub fn time_us(&self, w: usize, a: usize) -> Option<Summary> {
        let c = &self.cells[w][a];
        if !c.checksum_ok {
            return None;
        }
        let us: Vec<f64> = c.times_ns.iter().map(|t| t / 1000.0).collect();
        Summary::of(&us)
    }

    /// Throughput in allocator operations per microsecond (median run).
    pub fn throughput(&self, w: usize, a: usize) -> Option<f64> {
        let ops = self.ops[w]? as f64;
        let t = self.time_us(w, a)?.median;
        (ops > 0.0 && t > 0.0).then(|| ops / t)
    }

    /// Throughput over the dlmalloc crate's (its median time over ours).
    pub fn ratio(&self, w: usize, a: usize) -> Option<f64> {
        let b = self.baseline()?;
        let base = self.time_us(w, b)?.median;
        let t = self.time_us(w, a)?.median;
        (t > 0.0).then(|| base / t)
    }

    /// Pages the heap grew by (peak minus initial) over the dlmalloc crate's.
    pub fn memory_ratio(&self, w: usize, a: usize) -> Option<f64> {
        let heap = |a: usize| -> Option<f64> {
            let c = &self.cells[w][a];
            if !c.checksum_ok {
                return None;
            }
            Some(c.pages?.checked_sub(self.allocators[a].initial_pages?)? as f64)
        };
        let base = heap(self.baseline()?)?;
        (base > 0.0).then_some(heap(a)? / base)
    }

    /// Heap efficiency: live bytes over the heap's memory at the first OOM.
    pub fn efficiency(&self, w: usize, a: usize) -> Option<f64> {
        let c = &self.cells[w][a];
        let ppm = c.efficiency_ppm?;
        c.checksum_ok.then(|| ppm as f64 / 1e6)
    }

    /// Geometric mean of an allocator's ratios over the timed workloads
    /// (the empty one excluded).
    pub fn mean_ratio(&self, a: usize) -> Option<f64> {
        let r: Vec<f64> = (0..self.workloads.len())
            .filter(|&w| !self.workloads[w].is_heap_eff() && self.workloads[w].name != "empty")
            .map(|w| self.ratio(w, a))
            .collect::<Option<Vec<_>>>()?;
        geomean(&r)
    }

    /// The allocator `a` is a build option of (`dlmalloc-port-hardened` of
    /// `dlmalloc-port`): the linmem allocator with the longest name that
    /// prefixes `a`'s followed by `-`. Variants get their own table.
    pub fn variant_of(&self, a: usize) -> Option<usize> {
        let name = &self.allocators[a].name;
        (0..self.allocators.len())
            .filter(|&b| b != a && self.allocators[b].linmem && self.allocators[a].linmem)
            .filter(|&b| {
                name.strip_prefix(self.allocators[b].name.as_str())
                    .is_some_and(|rest| rest.starts_with('-'))
            })
            .max_by_key(|&b| self.allocators[b].name.len())
    }

    /// The same results without the variant columns: what the main tables
    /// and charts show.
    pub fn without_variants(&self) -> Results {
        let keep: Vec<usize> = (0..self.allocators.len())
            .filter(|&a| self.variant_of(a).is_none())
            .collect();
        Results {
            meta: self.meta.clone(),
            allocators: keep.iter().map(|&a| self.allocators[a].clone()).collect(),
            workloads: self.workloads.clone(),
            ops: self.ops.clone(),
            cells: self
                .cells
                .iter()
                .map(|row| keep.iter().map(|&a| row[a].clone()).collect())
                .collect(),
        }
    }

    /// The cost of each build option (variant) against its allocator's
    /// default build, from fuel (deterministic) and code size; empty when
    /// the run has no variants.
    pub fn render_variants(&self) -> String {
        let pairs: Vec<(usize, usize)> = (0..self.allocators.len())
            .filter_map(|a| Some((a, self.variant_of(a)?)))
            .collect();
        if pairs.is_empty() {
            return String::new();
        }
        let timed: Vec<usize> = self
            .timed()
            .filter(|&w| self.workloads[w].name != "empty")
            .collect();
        let fuel_ratio = |w: usize, a: usize, b: usize| -> Option<f64> {
            let (ca, cb) = (&self.cells[w][a], &self.cells[w][b]);
            if !ca.checksum_ok || !cb.checksum_ok {
                return None;
            }
            let (fa, fb) = (ca.fuel? as f64, cb.fuel? as f64);
            (fb > 0.0).then(|| fa / fb)
        };
        let mut head = vec!["option (fuel × default)".to_string()];
        head.extend(timed.iter().map(|&w| self.workloads[w].name.to_string()));
        head.extend(["geomean".into(), "code size (B)".into()]);
        let mut rows = vec![head];
        for (a, b) in pairs {
            let mut row = vec![format!(
                "{} vs {}",
                self.allocators[a].name, self.allocators[b].name
            )];
            let ratios: Vec<Option<f64>> = timed.iter().map(|&w| fuel_ratio(w, a, b)).collect();
            row.extend(
                ratios
                    .iter()
                    .map(|r| r.map_or("-".into(), |r| format!("{r:.2}×"))),
            );
            let all: Option<Vec<f64>> = ratios.into_iter().collect();
            row.push(
                all.and_then(|v| geomean(&v))
                    .map_or("-".into(), |g| format!("{g:.2}×")),
            );
            row.push(
                match (self.allocators[a].size_bytes, self.allocators[b].size_bytes) {
                    (Some(x), Some(y)) => format!("{x} ({:+})", x as i64 - y as i64),
                    _ => "-".into(),
                },
            );
            rows.push(row);
        }
        format!(
            "\nBuild options: executed instructions (fuel) relative to the same allocator's default build, and code size (difference):\n{}",
            table(&rows)
        )
    }

    /// Code size of the allocator over the empty baseline.
    pub fn size_share(&self, a: usize) -> Option<i64> {
        Some(self.allocators[a].size_bytes? as i64 - self.meta.baseline_size? as i64)
    }

    fn failure(&self, w: usize, a: usize) -> Option<&'static str> {
        let c = &self.cells[w][a];
        if let Some(e) = &c.error {
            return Some(
                if e.contains("out_of_memory") || e.contains("alloc_error") {
                    "OOM"
                } else if e.contains("timeout") {
                    "TIMEOUT"
                } else if e.contains("unreachable") {
                    "TRAP"
                } else {
                    "FAIL"
                },
            );
        }
        (!c.checksum_ok).then_some("BAD SUM")
    }

    fn timed(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.workloads.len()).filter(|&w| !self.workloads[w].is_heap_eff())
    }

    fn header(&self, first: &str) -> Vec<String> {
        std::iter::once(first.to_string())
            .chain(self.allocators.iter().map(|a| a.name.clone()))
            .collect()
    }

    /// The terminal report: throughput, fuel, memory, size and efficiency.
    pub fn render_tables(&self) -> String {
        let mut out = String::new();
        let mut rows = vec![self.header("ops/µs (× dlmalloc)")];
        for w in self.timed() {
            let mut row = vec![self.workloads[w].name.to_string()];
            for a in 0..self.allocators.len() {
                row.push(match (self.failure(w, a), self.workloads[w].name) {
                    (Some(f), _) => f.to_string(),
                    (None, "empty") => match self.time_us(w, a) {
                        Some(s) => format!("{:.1} µs", s.median),
                        None => "-".into(),
                    },
                    (None, _) => {
                        match (self.throughput(w, a), self.ratio(w, a), self.time_us(w, a)) {
                            (Some(t), Some(r), Some(s)) => {
                                format!("{t:.2} ±{:.0}% ({r:.2}×)", s.spread_pct())
                            }
                            (Some(t), None, Some(s)) => format!("{t:.2} ±{:.0}%", s.spread_pct()),
                            _ => "-".into(),
                        }
                    }
                });
            }
            rows.push(row);
        }
        let mut mean = vec!["geomean ratio (all ok)".to_string()];
        mean.extend((0..self.allocators.len()).map(|a| {
            self.mean_ratio(a)
                .map_or("-".into(), |r| format!("{r:.2}×"))
        }));
        rows.push(mean);
        out += &format!(
            "Throughput, median ±half-range of {} runs ({}):\n",
            self.meta.reps, self.meta.engine
        );
        out += &table(&rows);

        let mut rows = vec![self.header("fuel (M instr)")];
        for w in self.timed() {
            let mut row = vec![self.workloads[w].name.to_string()];
            for a in 0..self.allocators.len() {
                let c = &self.cells[w][a];
                row.push(match (self.failure(w, a), c.fuel) {
                    (Some(f), _) => f.to_string(),
                    (None, Some(f)) => format!("{:.2}", f as f64 / 1e6),
                    (None, None) => "-".into(),
                });
            }
            rows.push(row);
        }
        out += "\nWasmtime fuel (executed wasm instructions, millions; deterministic):\n";
        out += &table(&rows);

        let mut rows = vec![self.header("peak pages")];
        for w in self.timed() {
            let mut row = vec![self.workloads[w].name.to_string()];
            for a in 0..self.allocators.len() {
                row.push(match (self.failure(w, a), self.cells[w][a].pages) {
                    (Some(f), _) => f.to_string(),
                    (None, Some(p)) => p.to_string(),
                    (None, None) => "-".into(),
                });
            }
            rows.push(row);
        }
        out += "\nPeak memory.size (64 KiB pages, including the module's static data and 1 MiB stack):\n";
        out += &table(&rows);

        let mut rows = vec![self.header("")];
        let mut size = vec!["code size (B)".to_string()];
        let mut share = vec!["over baseline (B)".to_string()];
        for a in 0..self.allocators.len() {
            size.push(
                self.allocators[a]
                    .size_bytes
                    .map_or("-".into(), |s| s.to_string()),
            );
            share.push(self.size_share(a).map_or("-".into(), |s| s.to_string()));
        }
        rows.push(size);
        rows.push(share);
        for w in (0..self.workloads.len()).filter(|&w| self.workloads[w].is_heap_eff()) {
            let mut row = vec![format!("{} (live/used)", self.workloads[w].name)];
            for a in 0..self.allocators.len() {
                row.push(match (self.failure(w, a), self.efficiency(w, a)) {
                    (Some(f), _) => f.to_string(),
                    (None, Some(e)) => format!("{:.1}%", e * 100.0),
                    (None, None) => "-".into(),
                });
            }
            rows.push(row);
        }
        out += &format!(
            "\nCode size (module with alloc/dealloc/realloc only: LTO, opt-level z, wasm-opt -Oz; empty baseline {} B) and heap efficiency:\n",
            self.meta
                .baseline_size
                .map_or("-".into(), |b| b.to_string())
        );
        out += &table(&rows);
        out
    }

    /// One CSV row per allocator and workload.
    pub fn csv(&self) -> String {
        let mut out = csv_row(&[
            "allocator",
            "linmem",
            "workload",
            "ops",
            "runs",
            "median_us",
            "min_us",
            "max_us",
            "ops_per_us",
            "ratio_vs_dlmalloc",
            "fuel",
            "peak_pages",
            "heap_efficiency",
            "checksum",
            "checksum_ok",
            "error",
        ]);
        let f = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.4}"));
        for (w, wl) in self.workloads.iter().enumerate() {
            for (a, al) in self.allocators.iter().enumerate() {
                let c = &self.cells[w][a];
                let s = self.time_us(w, a);
                out += &csv_row(&[
                    &al.name,
                    &al.linmem.to_string(),
                    wl.name,
                    &self.ops[w].map_or(String::new(), |o| o.to_string()),
                    &c.times_ns.len().to_string(),
                    &f(s.map(|s| s.median)),
                    &f(s.map(|s| s.min)),
                    &f(s.map(|s| s.max)),
                    &f(self.throughput(w, a)),
                    &f(self.ratio(w, a)),
                    &c.fuel.map_or(String::new(), |v| v.to_string()),
                    &c.pages.map_or(String::new(), |v| v.to_string()),
                    &f(self.efficiency(w, a)),
                    &c.checksums.first().map_or(String::new(), |v| v.to_string()),
                    &c.checksum_ok.to_string(),
                    c.error.as_deref().unwrap_or(""),
                ]);
            }
        }
        out
    }

    /// Per-allocator CSV: code size and summary figures.
    pub fn csv_allocators(&self) -> String {
        let mut out = csv_row(&[
            "allocator",
            "linmem",
            "size_bytes",
            "size_over_baseline",
            "geomean_ratio_vs_dlmalloc",
        ]);
        for (a, al) in self.allocators.iter().enumerate() {
            out += &csv_row(&[
                &al.name,
                &al.linmem.to_string(),
                &al.size_bytes.map_or(String::new(), |v| v.to_string()),
                &self.size_share(a).map_or(String::new(), |v| v.to_string()),
                &self
                    .mean_ratio(a)
                    .map_or(String::new(), |v| format!("{v:.4}")),
            ]);
        }
        out
    }

    /// Everything as one JSON document.
    pub fn json(&self) -> String {
        let num = |v: Option<f64>| v.map_or(Json::Null, Json::Num);
        let int = |v: Option<u64>| v.map_or(Json::Null, |v| Json::Num(v as f64));
        let meta = Json::Obj(vec![
            ("date".into(), Json::Str(self.meta.date.clone())),
            ("machine".into(), Json::Str(self.meta.machine.clone())),
            ("engine".into(), Json::Str(self.meta.engine.clone())),
            ("quick".into(), Json::Bool(self.meta.quick)),
            ("reps".into(), Json::Num(self.meta.reps as f64)),
            ("baseline_size_bytes".into(), int(self.meta.baseline_size)),
        ]);
        let allocs = self
            .allocators
            .iter()
            .enumerate()
            .map(|(a, al)| {
                Json::Obj(vec![
                    ("name".into(), Json::Str(al.name.clone())),
                    ("linmem".into(), Json::Bool(al.linmem)),
                    ("size_bytes".into(), int(al.size_bytes)),
                    (
                        "size_over_baseline".into(),
                        self.size_share(a)
                            .map_or(Json::Null, |v| Json::Num(v as f64)),
                    ),
                    ("geomean_ratio_vs_dlmalloc".into(), num(self.mean_ratio(a))),
                ])
            })
            .collect();
        let mut results = Vec::new();
        for (w, wl) in self.workloads.iter().enumerate() {
            for (a, al) in self.allocators.iter().enumerate() {
                let c = &self.cells[w][a];
                let s = self.time_us(w, a);
                results.push(Json::Obj(vec![
                    ("allocator".into(), Json::Str(al.name.clone())),
                    ("workload".into(), Json::Str(wl.name.into())),
                    ("ops".into(), int(self.ops[w])),
                    (
                        "times_us".into(),
                        Json::Arr(c.times_ns.iter().map(|t| Json::Num(t / 1000.0)).collect()),
                    ),
                    ("median_us".into(), num(s.map(|s| s.median))),
                    ("ops_per_us".into(), num(self.throughput(w, a))),
                    ("ratio_vs_dlmalloc".into(), num(self.ratio(w, a))),
                    ("fuel".into(), int(c.fuel)),
                    ("peak_pages".into(), int(c.pages)),
                    ("heap_efficiency".into(), num(self.efficiency(w, a))),
                    (
                        "checksum".into(),
                        c.checksums
                            .first()
                            .map_or(Json::Null, |v| Json::Str(v.to_string())),
                    ),
                    ("checksum_ok".into(), Json::Bool(c.checksum_ok)),
                    (
                        "error".into(),
                        c.error.clone().map_or(Json::Null, Json::Str),
                    ),
                    (
                        "memory_series_pages".into(),
                        Json::Arr(c.series.iter().map(|&p| Json::Num(p as f64)).collect()),
                    ),
                ]));
            }
        }
        Json::Obj(vec![
            ("meta".into(), meta),
            ("allocators".into(), Json::Arr(allocs)),
            ("results".into(), Json::Arr(results)),
        ])
        .render()
    }
}

/// Aligns rows into columns (first column left, the others right).
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, s)| {
                let pad = width[c] - s.chars().count();
                if c == 0 {
                    format!("{s}{}", " ".repeat(pad))
                } else {
                    format!("{}{s}", " ".repeat(pad))
                }
            })
            .collect();
        out += cells.join(" | ").trim_end();
        out.push('\n');
        if i == 0 {
            let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
            out += &rule.join("-|-");
            out.push('\n');
        }
    }
    out
}

/// One CSV line (RFC 4180 quoting where needed).
pub fn csv_row<S: AsRef<str>>(fields: &[S]) -> String {
    let f: Vec<String> = fields
        .iter()
        .map(|s| {
            let s = s.as_ref();
            if s.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        })
        .collect();
    f.join(",") + "\n"
}

/// A minimal JSON value.
#[derive(Debug, Clone)]
pub enum Json {
    /// null
    Null,
    /// true / false
    Bool(bool),
    /// A number (non-finite ones render as null).
    Num(f64),
    /// A string.
    Str(String),
    /// An array.
    Arr(Vec<Json>),
    /// An object, keys in order.
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// Compact JSON text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        self.write(&mut s);
        s
    }

    fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Num(n) if !n.is_finite() => out.push_str("null"),
            Json::Num(n) if n.fract() == 0.0 && n.abs() < 9e15 => {
                out.push_str(&format!("{}", *n as i64))
            }
            Json::Num(n) => out.push_str(&format!("{n}")),
            Json::Str(s) => {
                out.push('"');
                for ch in s.chars() {
                    match ch {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        '\r' => out.push_str("\\r"),
                        '\t' => out.push_str("\\t"),
                        c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
            Json::Arr(v) => {
                out.push('[');
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    x.write(out);
                }
                out.push(']');
            }
            Json::Obj(v) => {
                out.push('{');
                for (i, (k, x)) in v.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    Json::Str(k.clone()).write(out);
                    out.push(':');
                    x.write(out);
                }
                out.push('}');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::WORKLOADS;

    #[test]
    fn agree_uses_reference_checksum() {
        let ok = agree(&[vec![1, 1], vec![2, 2], vec![1]], Some(0));
        assert_eq!(ok, vec![true, false, true]);
    }

    #[test]
    fn agree_rejects_runs_that_disagree_among_themselves() {
        assert_eq!(agree(&[vec![1, 2], vec![1]], Some(1)), vec![false, true]);
    }

    #[test]
    fn agree_falls_back_to_majority_without_reference() {
        assert_eq!(
            agree(&[vec![7], vec![9], vec![7], vec![]], None),
            vec![true, false, true, false]
        );
        // A broken reference cell does not make everyone wrong.
        assert_eq!(
            agree(&[vec![], vec![3], vec![3]], Some(0)),
            vec![false, true, true]
        );
    }

    fn sample() -> Results {
        let allocators = ["dlmalloc", "talc"]
            .iter()
            .map(|n| AllocInfo {
                name: n.to_string(),
                linmem: false,
                size_bytes: Some(1000),
                heap_base: Some(0),
                initial_pages: Some(10),
            })
            .collect();
        let workloads = vec![WORKLOADS[1], WORKLOADS[14]];
        let cell = |t: f64, sum: u64| Cell {
            times_ns: vec![t, t * 1.1, t * 0.9],
            checksums: vec![sum; 3],
            pages: Some(10 + (t / 100.0) as u64),
            ..Cell::default()
        };
        let mut heap = Cell {
            pages: Some(2),
            efficiency_ppm: Some(500_000),
            ..Cell::default()
        };
        heap.checksums.clear();
        let mut r = Results {
            meta: Meta {
                reps: 3,
                baseline_size: Some(400),
                engine: "wasmtime".into(),
                ..Meta::default()
            },
            allocators,
            workloads,
            ops: vec![Some(1000), None],
            cells: vec![
                vec![cell(2000.0, 5), cell(1000.0, 5)],
                vec![heap.clone(), heap],
            ],
        };
        r.check_checksums();
        r
    }

    #[test]
    fn variants_leave_the_main_tables_and_get_their_own() {
        let mut r = sample();
        let linmem = |name: &str, size| AllocInfo {
            name: name.into(),
            linmem: true,
            size_bytes: Some(size),
            heap_base: Some(0),
            initial_pages: Some(10),
        };
        r.allocators.push(linmem("dlmalloc-port", 900));
        r.allocators.push(linmem("dlmalloc-port-hardened", 1000));
        let fuel = |f: u64| Cell {
            fuel: Some(f),
            checksums: vec![5; 3],
            checksum_ok: true,
            ..Cell::default()
        };
        r.cells[0].push(fuel(100));
        r.cells[0].push(fuel(125));
        r.cells[1].push(Cell::default());
        r.cells[1].push(Cell::default());
        // Not a variant of the (non-linmem) dlmalloc crate, though prefixed.
        assert_eq!(r.variant_of(2), None);
        assert_eq!(r.variant_of(3), Some(2));
        let shown = r.without_variants();
        let names: Vec<&str> = shown.allocators.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["dlmalloc", "talc", "dlmalloc-port"]);
        assert!(shown.cells.iter().all(|row| row.len() == 3));
        let v = r.render_variants();
        assert!(v.contains("dlmalloc-port-hardened vs dlmalloc-port"), "{v}");
        assert!(v.contains("1.25×"), "{v}");
        assert!(v.contains("1000 (+100)"), "{v}");
        assert_eq!(sample().render_variants(), "");
    }

    #[test]
    fn throughput_and_ratio_come_from_medians() {
        let r = sample();
        assert!((r.throughput(0, 0).unwrap() - 500.0).abs() < 1e-9);
        assert!((r.ratio(0, 1).unwrap() - 2.0).abs() < 1e-9);
        assert_eq!(r.size_share(1), Some(600));
        assert!((r.efficiency(1, 0).unwrap() - 0.5).abs() < 1e-9);
        assert!((r.memory_ratio(0, 1).unwrap() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn bad_checksum_cell_has_no_figures() {
        let mut r = sample();
        r.cells[0][1].checksums = vec![6; 3];
        r.check_checksums();
        assert!(r.throughput(0, 1).is_none());
        assert!(r.render_tables().contains("BAD SUM"));
    }

    #[test]
    fn failures_are_named_by_cause() {
        let mut r = sample();
        r.cells[0][1].error =
            Some("wasm backtrace: wl.wasm!_ZN2wl13out_of_memory17h: unreachable".into());
        assert!(r.render_tables().contains("OOM"));
        r.cells[0][1].error = Some("timeout after 60 s: interrupt".into());
        assert!(r.render_tables().contains("TIMEOUT"));
        r.cells[0][1].error = Some("wasm trap: wasm `unreachable` instruction executed".into());
        assert!(r.render_tables().contains("TRAP"));
    }

    #[test]
    fn tables_csv_and_json_contain_every_allocator() {
        let r = sample();
        let t = r.render_tables();
        assert!(t.contains("talc") && t.contains("dlmalloc") && t.contains("2.00×"));
        let csv = r.csv();
        assert_eq!(csv.lines().count(), 1 + 2 * 2);
        assert!(csv.starts_with("allocator,linmem,workload"));
        let j = r.json();
        assert!(j.starts_with("{\"meta\":") && j.contains("\"allocator\":\"talc\""));
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(&[
            vec!["a".into(), "bb".into()],
            vec!["ccc".into(), "d".into()],
        ]);
        assert_eq!(t, "a   | bb\n----|---\nccc |  d\n");
    }

    #[test]
    fn csv_quotes_special_fields() {
        assert_eq!(
            csv_row(&["a", "b,c", "say \"hi\""]),
            "a,\"b,c\",\"say \"\"hi\"\"\"\n"
        );
    }

    #[test]
    fn json_escapes_and_renders_numbers() {
        let j = Json::Obj(vec![
            ("s".into(), Json::Str("a\"b\\\n\u{1}".into())),
            (
                "n".into(),
                Json::Arr(vec![
                    Json::Num(3.0),
                    Json::Num(0.5),
                    Json::Num(f64::NAN),
                    Json::Null,
                    Json::Bool(true),
                ]),
            ),
        ]);
        assert_eq!(
            j.render(),
            r#"{"s":"a\"b\\\n\u0001","n":[3,0.5,null,null,true]}"#
        );
    }
}
