//! The wasmtime engine of the linmem benchmarks.
//!
//! `linmem-bench-runner PLAN [TIMEOUT_SECS]` executes a plan written by the harness
//! (`linmem-benches`) and prints one line per result on stdout, as soon as it
//! is known. The node runner (`benches/node/runner.mjs`) speaks the same
//! protocol.
//!
//! Plan lines:
//!
//! ```text
//! module <mid> <path.wasm>
//! run <jid> <mid> <export> <scale> <fuel 0|1> <limit_pages> <trace|-> <record 0|1|2> <dump|->
//! ```
//!
//! Every `run` gets a fresh instance and at most `TIMEOUT_SECS` (default
//! 60) of wall time; after a failure, later runs of the same module and
//! export fail at once ("skipped after an earlier failure") so a broken
//! allocator cannot stall the whole plan. `trace` (a trace file) makes it a
//! replay through `replay_*` exports; `record` 1 resets the recorder's count,
//! 2 also logs, and `dump` writes the log's bytes to a file.
//!
//! Output lines:
//!
//! ```text
//! module <mid> heap_base <bytes> pages <initial pages>
//! ok <jid> <checksum> <nanos> <fuel> <pages> <count>
//! series <jid> <v,v,...>
//! err <jid> <message>
//! ```
//!
//! Profiling: with `LINMEM_BENCH_PERFMAP` set, the runner writes
//! `/tmp/perf-<pid>.map`, so `perf record` / `perf report` over it name the
//! wasm functions (the allocator's and the workload's) in the compiled code.
//! The harness leaves the plans it ran in
//! `<target>/linmem-bench/work/logs/plan-*.txt`; a plan cut down to one
//! module and workload makes a focused profile, e.g.
//! `LINMEM_BENCH_PERFMAP=1 perf record target/release/linmem-bench-runner PLAN`.
#![deny(missing_docs, unsafe_code)]

use std::collections::HashMap;
use std::io::Write;
use std::time::Instant;
use wasmtime::{
    Config, Engine, Instance, Module, ResourceLimiter, Result, Store, bail, format_err,
};

/// One `run` line.
struct Job {
    id: String,
    module: String,
    export: String,
    scale: u32,
    fuel: bool,
    limit_pages: usize,
    trace: Option<String>,
    record: u32,
    dump: Option<String>,
}

/// The store's data: the memory cap.
struct Limits {
    max_bytes: usize,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool> {
        Ok(desired <= self.max_bytes)
    }
    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool> {
        Ok(true)
    }
}

/// A plain engine (timing) and a fuel-counting one, each with its compiled
/// modules.
struct Engines {
    plain: Engine,
    fuel: Engine,
    paths: HashMap<String, String>,
    compiled: HashMap<(String, bool), Module>,
}

impl Engines {
    fn new() -> Result<Self> {
        let mut c = Config::new();
        c.cranelift_opt_level(wasmtime::OptLevel::Speed);
        c.epoch_interruption(true);
        if std::env::var_os("LINMEM_BENCH_PERFMAP").is_some() {
            c.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let plain = Engine::new(&c)?;
        c.consume_fuel(true);
        let fuel = Engine::new(&c)?;
        Ok(Engines {
            plain,
            fuel,
            paths: HashMap::new(),
            compiled: HashMap::new(),
        })
    }

    fn module(&mut self, mid: &str, fuel: bool) -> Result<Module> {
        let key = (mid.to_string(), fuel);
        if let Some(m) = self.compiled.get(&key) {
            return Ok(m.clone());
        }
        let path = self
            .paths
            .get(mid)
            .ok_or_else(|| format_err!("unknown module {mid}"))?;
        let engine = if fuel { &self.fuel } else { &self.plain };
        let m = Module::from_file(engine, path)?;
        self.compiled.insert(key, m.clone());
        Ok(m)
    }
}

/// Result of one run.
struct Outcome {
    checksum: u64,
    nanos: u128,
    fuel: u64,
    pages: u64,
    count: u64,
    series: Vec<u32>,
}

fn read_u32s(
    store: &mut Store<Limits>,
    inst: &Instance,
    ptr_export: &str,
    len_export: &str,
) -> Result<Vec<u8>> {
    let ptr = inst
        .get_typed_func::<(), u32>(&mut *store, ptr_export)?
        .call(&mut *store, ())? as usize;
    let len = inst
        .get_typed_func::<(), u32>(&mut *store, len_export)?
        .call(&mut *store, ())? as usize;
    let mem = inst
        .get_memory(&mut *store, "memory")
        .ok_or_else(|| format_err!("no memory export"))?;
    let data = mem.data(&*store);
    let bytes = data
        .get(ptr..ptr + len * 4)
        .ok_or_else(|| format_err!("{ptr_export} out of bounds"))?;
    Ok(bytes.to_vec())
}

/// Epoch ticks per second (a thread advances both engines' epochs).
const TICKS_PER_SEC: u64 = 10;

fn run(engines: &mut Engines, job: &Job, timeout_secs: u64) -> Result<Outcome> {
    let module = engines.module(&job.module, job.fuel)?;
    let engine = module.engine().clone();
    let mut store = Store::new(
        &engine,
        Limits {
            max_bytes: job.limit_pages * 65536,
        },
    );
    store.limiter(|l| l);
    store.set_epoch_deadline(timeout_secs * TICKS_PER_SEC);
    store.epoch_deadline_trap();
    const FUEL: u64 = u64::MAX / 2;
    if job.fuel {
        store.set_fuel(FUEL)?;
    }
    let inst = Instance::new(&mut store, &module, &[])?;
    if job.record > 0 {
        inst.get_typed_func::<u32, ()>(&mut store, "rec_reset")?
            .call(&mut store, job.record - 1)?;
    }
    let trace = match &job.trace {
        Some(p) => std::fs::read(p)?,
        None => Vec::new(),
    };
    let (checksum, nanos, fuel_used) = if job.trace.is_some() {
        let buf = inst
            .get_typed_func::<(), u32>(&mut store, "replay_buf")?
            .call(&mut store, ())? as usize;
        let begin = inst.get_typed_func::<(), ()>(&mut store, "replay_begin")?;
        let chunk = inst.get_typed_func::<u32, ()>(&mut store, "replay_chunk")?;
        let end = inst.get_typed_func::<(), u64>(&mut store, "replay_end")?;
        let mem = inst
            .get_memory(&mut store, "memory")
            .ok_or_else(|| format_err!("no memory export"))?;
        const EVENT: usize = 16;
        const CHUNK: usize = 4096 * EVENT;
        let fuel0 = if job.fuel { store.get_fuel()? } else { 0 };
        let t = Instant::now();
        begin.call(&mut store, ())?;
        for c in trace.chunks(CHUNK) {
            mem.write(&mut store, buf, c)?;
            chunk.call(&mut store, (c.len() / EVENT) as u32)?;
        }
        let cs = end.call(&mut store, ())?;
        let nanos = t.elapsed().as_nanos();
        let fuel = if job.fuel {
            fuel0 - store.get_fuel()?
        } else {
            0
        };
        (cs, nanos, fuel)
    } else {
        let f = inst.get_typed_func::<u32, u64>(&mut store, &job.export)?;
        let fuel0 = if job.fuel { store.get_fuel()? } else { 0 };
        let t = Instant::now();
        let cs = f.call(&mut store, job.scale)?;
        let nanos = t.elapsed().as_nanos();
        let fuel = if job.fuel {
            fuel0 - store.get_fuel()?
        } else {
            0
        };
        (cs, nanos, fuel)
    };
    let mem = inst
        .get_memory(&mut store, "memory")
        .ok_or_else(|| format_err!("no memory export"))?;
    let pages = mem.size(&store);
    let mut count = 0;
    if job.record > 0 {
        count = inst
            .get_typed_func::<(), u64>(&mut store, "rec_count")?
            .call(&mut store, ())?;
        if let Some(dump) = &job.dump {
            let bytes = read_u32s(&mut store, &inst, "rec_ptr", "rec_len")?;
            std::fs::write(dump, bytes)?;
        }
    }
    let mut series = Vec::new();
    if inst.get_export(&mut store, "series_len").is_some() {
        let bytes = read_u32s(&mut store, &inst, "series_ptr", "series_len")?;
        series = bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
    }
    Ok(Outcome {
        checksum,
        nanos,
        fuel: fuel_used,
        pages,
        count,
        series,
    })
}

fn module_info(engines: &mut Engines, mid: &str) -> Result<(u64, u64)> {
    let module = engines.module(mid, false)?;
    let mut store = Store::new(
        module.engine(),
        Limits {
            max_bytes: usize::MAX,
        },
    );
    store.set_epoch_deadline(u64::MAX / 2);
    let inst = Instance::new(&mut store, &module, &[])?;
    let heap_base = match inst.get_global(&mut store, "__heap_base") {
        Some(g) => g.get(&mut store).i32().unwrap_or(0) as u32 as u64,
        None => 0,
    };
    let mem = inst
        .get_memory(&mut store, "memory")
        .ok_or_else(|| format_err!("no memory export"))?;
    Ok((heap_base, mem.size(&store)))
}

fn parse_job(f: &[&str]) -> Result<Job> {
    if f.len() != 10 {
        bail!("run line needs 9 fields, got {}", f.len() - 1);
    }
    let opt = |s: &str| (s != "-").then(|| s.to_string());
    Ok(Job {
        id: f[1].to_string(),
        module: f[2].to_string(),
        export: f[3].to_string(),
        scale: f[4].parse()?,
        fuel: f[5] == "1",
        limit_pages: f[6].parse()?,
        trace: opt(f[7]),
        record: f[8].parse()?,
        dump: opt(f[9]),
    })
}

fn main() -> Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| format_err!("usage: linmem-bench-runner PLAN [TIMEOUT_SECS]"))?;
    let timeout_secs: u64 = std::env::args().nth(2).map_or(Ok(60), |t| t.parse())?;
    let plan = std::fs::read_to_string(&path)?;
    let mut engines = Engines::new()?;
    let (plain, fuel) = (engines.plain.clone(), engines.fuel.clone());
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(std::time::Duration::from_millis(1000 / TICKS_PER_SEC));
            plain.increment_epoch();
            fuel.increment_epoch();
        }
    });
    let mut failed: std::collections::HashSet<(String, String)> = std::collections::HashSet::new();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for line in plan.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(' ').collect();
        match f[0] {
            "module" if f.len() == 3 => {
                engines.paths.insert(f[1].to_string(), f[2].to_string());
                match module_info(&mut engines, f[1]) {
                    Ok((hb, pages)) => {
                        writeln!(out, "module {} heap_base {hb} pages {pages}", f[1])?
                    }
                    Err(e) => writeln!(out, "moderr {} {}", f[1], one_line(&e))?,
                }
            }
            "run" => {
                let job = parse_job(&f)?;
                let key = (job.module.clone(), job.export.clone());
                if failed.contains(&key) {
                    writeln!(out, "err {} skipped after an earlier failure", job.id)?;
                    out.flush()?;
                    continue;
                }
                match run(&mut engines, &job, timeout_secs) {
                    Ok(o) => {
                        writeln!(
                            out,
                            "ok {} {} {} {} {} {}",
                            job.id, o.checksum, o.nanos, o.fuel, o.pages, o.count
                        )?;
                        if !o.series.is_empty() {
                            let s: Vec<String> = o.series.iter().map(u32::to_string).collect();
                            writeln!(out, "series {} {}", job.id, s.join(","))?;
                        }
                    }
                    Err(e) => {
                        let msg = one_line(&e);
                        let msg = if msg.contains("interrupt") {
                            format!("timeout after {timeout_secs} s: {msg}")
                        } else {
                            msg
                        };
                        writeln!(out, "err {} {msg}", job.id)?;
                        failed.insert(key);
                    }
                }
            }
            _ => bail!("bad plan line: {line}"),
        }
        out.flush()?;
    }
    Ok(())
}

/// An error and its causes on one line.
fn one_line(e: &wasmtime::Error) -> String {
    format!("{e:#}").replace('\n', " | ")
}
