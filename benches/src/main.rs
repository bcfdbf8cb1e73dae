//! `cargo run --release -p linmem-benches -- [--quick] [--engine node] [--out DIR]`
//!
//! Builds everything it needs (wasm target, wasm-opt, the workload modules,
//! the wasmtime runner), runs every workload on every allocator, checks the
//! checksums and writes the results folder. See the crate docs (lib.rs).

use linmem_benches::cli::{self, Engine, Opts};
use linmem_benches::manifest::{AllocatorEntry, WorkloadManifest};
use linmem_benches::plan::{self, Kind, LIMIT_PAGES, WORKLOADS, Workload};
use linmem_benches::proto::{self, Reply, Run};
use linmem_benches::report::{AllocInfo, Cell, Meta, Results};
use linmem_benches::{svg, trace, util};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

/// Where things are.
struct Dirs {
    /// The repository root.
    repo: PathBuf,
    /// Cargo's target directory (shared with the builds the harness starts).
    target: PathBuf,
    /// The results folder: outputs only (table, CSV, JSON, SVG), small
    /// enough to commit.
    out: PathBuf,
    /// Intermediate files: modules, traces, plans, build logs.
    work: PathBuf,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match cli::parse(&args) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("{msg}");
            return if msg.starts_with("linmem-benches") {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nerror: {e}");
            ExitCode::FAILURE
        }
    }
}

fn step(title: &str) {
    eprintln!("\n==> {title}");
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // The harness runs under `cargo run`: keep its build settings out of
    // the builds it starts.
    for v in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_MANIFEST_DIR",
    ] {
        c.env_remove(v);
    }
    c
}

fn run(opts: &Opts) -> Result<(), String> {
    let started = Instant::now();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no repository root")?
        .to_path_buf();
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => std::path::absolute(t).map_err(|e| e.to_string())?,
        None => repo.join("target"),
    };
    let (date, stamp) = util::now();
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| target.join("bench-results").join(&stamp));
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let work = target.join("linmem-bench/work");
    std::fs::create_dir_all(work.join("logs")).map_err(|e| format!("{}: {e}", work.display()))?;
    let dirs = Dirs {
        repo,
        target,
        out,
        work,
    };
    eprintln!(
        "linmem-benches: results will be written to {}",
        dirs.out.display()
    );

    step("tools");
    ensure_wasm_target()?;
    let wasm_opt = ensure_wasm_opt();
    if opts.engine == Engine::Node {
        let v = Command::new("node")
            .arg("--version")
            .output()
            .map_err(|e| format!("--engine node needs node: {e}"))?;
        eprintln!("node {}", String::from_utf8_lossy(&v.stdout).trim());
    }

    step("wasmtime runner (first build compiles wasmtime: several minutes)");
    let runner = build_runner(&dirs)?;

    step("workload modules");
    let (allocs, modules, rec, sizes, baseline) = build_modules(&dirs, opts, wasm_opt.as_deref())?;
    if allocs.is_empty() {
        return Err("no allocator module built".into());
    }
    let workloads: Vec<Workload> = WORKLOADS.to_vec();

    step("recording traces and counting allocator operations (dlmalloc crate + recorder)");
    let ops = record(&dirs, &runner, &rec, &workloads, opts.quick)?;

    let reps = opts.reps.unwrap_or(if opts.quick { 3 } else { 5 });
    let engine_name = match opts.engine {
        Engine::Wasmtime => "wasmtime 48 (cranelift)".to_string(),
        Engine::Node => format!(
            "node {} (V8, TurboFan only)",
            String::from_utf8_lossy(
                &Command::new("node")
                    .arg("--version")
                    .output()
                    .map(|o| o.stdout)
                    .unwrap_or_default()
            )
            .trim()
        ),
    };
    step(&format!(
        "running: {} allocators x {} workloads, {reps} timed runs each ({engine_name})",
        allocs.len(),
        workloads.len()
    ));
    let mut results = Results {
        meta: Meta {
            date,
            machine: util::machine(),
            engine: engine_name,
            quick: opts.quick,
            reps,
            baseline_size: baseline,
        },
        allocators: allocs
            .iter()
            .zip(&sizes)
            .map(|(a, s)| AllocInfo {
                name: a.name.clone(),
                linmem: a.is_linmem(),
                size_bytes: *s,
                heap_base: None,
                initial_pages: None,
            })
            .collect(),
        workloads: workloads.clone(),
        ops,
        cells: vec![vec![Cell::default(); allocs.len()]; workloads.len()],
    };
    measure(&dirs, opts, &runner, &modules, reps, &mut results)?;
    results.check_checksums();

    step("results");
    let shown = results.without_variants();
    let tables = shown.render_tables() + &results.render_variants();
    println!(
        "\n{}  {}  {}{}\n",
        results.meta.date,
        results.meta.machine,
        results.meta.engine,
        if opts.quick { "  (quick)" } else { "" }
    );
    println!("{tables}");
    write_outputs(&dirs.out, &results, &shown, &tables)?;
    for (w, wl) in workloads.iter().enumerate() {
        for (a, al) in results.allocators.iter().enumerate() {
            let c = &results.cells[w][a];
            if let Some(e) = &c.error {
                eprintln!("note: {} on {}: {e}", al.name, wl.name);
            } else if !c.checksum_ok {
                eprintln!(
                    "WARNING: {} on {}: checksum differs from the other allocators ({:?})",
                    al.name,
                    wl.name,
                    c.checksums.first()
                );
            }
        }
    }
    eprintln!(
        "\nintermediate files (modules, traces, plans, build logs): {}",
        dirs.work.display()
    );
    eprintln!(
        "results written to {}  (total {:.0} s)",
        dirs.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn ensure_wasm_target() -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(o)
            if String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == "wasm32-unknown-unknown") =>
        {
            eprintln!("wasm32-unknown-unknown: installed");
            Ok(())
        }
        Ok(_) => {
            eprintln!("installing the wasm32-unknown-unknown target (rustup target add)");
            let s = Command::new("rustup")
                .args(["target", "add", "wasm32-unknown-unknown"])
                .status()
                .map_err(|e| e.to_string())?;
            if s.success() {
                Ok(())
            } else {
                Err("rustup target add wasm32-unknown-unknown failed".into())
            }
        }
        Err(_) => {
            eprintln!("rustup not found: assuming the wasm32-unknown-unknown target is available");
            Ok(())
        }
    }
}

/// wasm-opt's command line (a path, or `npx --yes binaryen`'s), if any.
fn ensure_wasm_opt() -> Option<Vec<String>> {
    let works = |cmd: &[String]| {
        Command::new(&cmd[0])
            .args(&cmd[1..])
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let plain = vec!["wasm-opt".to_string()];
    if works(&plain) {
        eprintln!("wasm-opt: found");
        return Some(plain);
    }
    if Command::new("apt-get")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok()
    {
        eprintln!("installing binaryen (wasm-opt) with apt-get");
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-qq", "binaryen"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        if works(&plain) {
            return Some(plain);
        }
    }
    let npx: Vec<String> = ["npx", "--yes", "-p", "binaryen", "wasm-opt"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    eprintln!("trying wasm-opt from the npm package binaryen (npx)");
    if works(&npx) {
        return Some(npx);
    }
    eprintln!("WARNING: no wasm-opt: code sizes are reported without wasm-opt -Oz");
    None
}

fn build_runner(dirs: &Dirs) -> Result<Vec<String>, String> {
    let manifest = dirs.repo.join("benches/runner/Cargo.toml");
    let t = Instant::now();
    let status = cargo()
        .args(["build", "--release", "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &dirs.target)
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if !status.success() {
        return Err("building the wasmtime runner failed (see above)".into());
    }
    eprintln!("runner ready ({:.1} s)", t.elapsed().as_secs_f64());
    Ok(vec![
        dirs.target
            .join("release/linmem-bench-runner")
            .display()
            .to_string(),
    ])
}

/// Built modules: allocators kept, their speed modules, the recorder, their
/// size-module sizes and the baseline size.
type Built = (
    Vec<AllocatorEntry>,
    Vec<PathBuf>,
    PathBuf,
    Vec<Option<u64>>,
    Option<u64>,
);

fn build_modules(dirs: &Dirs, opts: &Opts, wasm_opt: Option<&[String]>) -> Result<Built, String> {
    let wl_dir = dirs.repo.join("benches/workload");
    let text = std::fs::read_to_string(wl_dir.join("Cargo.toml"))
        .map_err(|e| format!("workload manifest: {e}"))?;
    let manifest = WorkloadManifest::parse(&text);
    let mut allocs = manifest.allocators(&wl_dir);
    // Ours first, then the references.
    allocs.sort_by_key(|a| !a.is_linmem());
    if let Some(only) = &opts.only {
        allocs.retain(|a| a.name == "dlmalloc" || only.contains(&a.name));
    }
    for a in allocs.iter().filter(|a| !a.present()) {
        eprintln!(
            "skip {}: its crate ({}) does not exist yet",
            a.name,
            a.path.as_deref().unwrap_or(Path::new("?")).display()
        );
    }
    // The linmem deps left out of every generated package: absent crates,
    // those not selected, and present ones whose manifest cargo cannot load
    // (found by probing).
    let all_linmem: Vec<String> = manifest
        .allocators(&wl_dir)
        .iter()
        .filter(|a| a.is_linmem())
        .map(|a| a.dep.clone())
        .collect();
    let gen_dir = dirs.target.join("linmem-bench/gen");
    let lib = wl_dir.join("src/lib.rs");
    let write_gen =
        |dir: &Path, kept: &[&AllocatorEntry], missing: &[String]| -> Result<Vec<String>, String> {
            let mut members = vec!["rec".to_string(), "sz-none".to_string()];
            let write = |name: &str, default: &[&str]| -> Result<(), String> {
                std::fs::create_dir_all(dir.join(name)).map_err(|e| e.to_string())?;
                let text = manifest.package(name, &lib, default, missing, &wl_dir);
                write_if_changed(&dir.join(name).join("Cargo.toml"), &text)
            };
            write("rec", &["workloads", "record"])?;
            write("sz-none", &["size", "alloc-none"])?;
            for a in kept {
                write(&format!("wl-{}", a.name), &["workloads", &a.feature])?;
                write(&format!("sz-{}", a.name), &["size", &a.feature])?;
                members.push(format!("wl-{}", a.name));
                members.push(format!("sz-{}", a.name));
            }
            write_if_changed(&dir.join("Cargo.toml"), &manifest.workspace(&members))?;
            Ok(members)
        };
    let loads = |dir: &Path| {
        cargo()
            .args(["metadata", "--format-version", "1", "--manifest-path"])
            .arg(dir.join("Cargo.toml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let present: Vec<&AllocatorEntry> = allocs.iter().filter(|a| a.present()).collect();
    let mut kept = present.clone();
    let filtered = |kept: &[&AllocatorEntry]| -> Vec<String> {
        all_linmem
            .iter()
            .filter(|d| !kept.iter().any(|a| &a.dep == *d))
            .cloned()
            .collect()
    };
    write_gen(&gen_dir, &kept, &filtered(&kept))?;
    if !loads(&gen_dir) {
        eprintln!("the generated workspace does not load: probing each linmem crate");
        let probe = dirs.target.join("linmem-bench/probe");
        kept.retain(|a| {
            if !a.is_linmem() {
                return true;
            }
            let _ = std::fs::remove_dir_all(&probe);
            let one = [*a];
            let ok = write_gen(&probe, &one, &filtered(&one)).is_ok() && loads(&probe);
            if !ok {
                eprintln!("skip {}: cargo cannot load its manifest", a.name);
            }
            ok
        });
        write_gen(&gen_dir, &kept, &filtered(&kept))?;
    }

    let t = Instant::now();
    // Cargo unifies the features of a dependency over the packages of one
    // build, so two builds of one crate (its default and a variant such as
    // `-hardened`) must not share a cargo invocation: round `i` holds the
    // `i`-th allocator of each dependency.
    let mut rounds: Vec<Vec<&AllocatorEntry>> = Vec::new();
    for a in &kept {
        let i = kept
            .iter()
            .take_while(|b| b.name != a.name)
            .filter(|b| b.dep == a.dep)
            .count();
        if rounds.len() <= i {
            rounds.resize(i + 1, Vec::new());
        }
        rounds[i].push(*a);
    }
    let mut artifacts = HashMap::new();
    for (i, round) in rounds.iter().enumerate() {
        let first = (i == 0).then_some(());
        let speed: Vec<String> = first
            .map(|()| "rec".to_string())
            .into_iter()
            .chain(round.iter().map(|a| format!("wl-{}", a.name)))
            .collect();
        let size: Vec<String> = first
            .map(|()| "sz-none".to_string())
            .into_iter()
            .chain(round.iter().map(|a| format!("sz-{}", a.name)))
            .collect();
        eprintln!(
            "building {} speed modules (opt-level 3, LTO) and {} size modules (opt-level z){}",
            speed.len(),
            size.len(),
            if i > 0 {
                " of build-option variants"
            } else {
                ""
            }
        );
        artifacts.extend(cargo_build(
            dirs,
            &gen_dir,
            "release",
            &speed,
            &dirs.work.join(format!("logs/build-speed-{i}.log")),
        )?);
        artifacts.extend(cargo_build(
            dirs,
            &gen_dir,
            "size",
            &size,
            &dirs.work.join(format!("logs/build-size-{i}.log")),
        )?);
    }
    eprintln!("modules built ({:.1} s)", t.elapsed().as_secs_f64());

    let modules_dir = dirs.work.join("modules");
    std::fs::create_dir_all(&modules_dir).map_err(|e| e.to_string())?;
    let rec = artifacts
        .get("rec")
        .cloned()
        .ok_or("the recorder module (dlmalloc crate) did not build: see logs/build-speed-0.log")?;
    let size_of = |pkg: &str| -> Option<u64> {
        let wasm = artifacts.get(pkg)?;
        let dst = modules_dir.join(format!("{pkg}.wasm"));
        match wasm_opt {
            Some(cmd) => {
                let ok = Command::new(&cmd[0])
                    .args(&cmd[1..])
                    .args([
                        "-Oz",
                        "--strip-debug",
                        "--strip-producers",
                        "--enable-bulk-memory",
                        "--enable-sign-ext",
                    ])
                    .args([
                        "--enable-mutable-globals",
                        "--enable-nontrapping-float-to-int",
                        "--enable-multivalue",
                    ])
                    .args(["--enable-reference-types", "-o"])
                    .arg(&dst)
                    .arg(wasm)
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    eprintln!("WARNING: wasm-opt failed on {pkg}");
                    return None;
                }
            }
            None => {
                std::fs::copy(wasm, &dst).ok()?;
            }
        }
        std::fs::metadata(&dst).ok().map(|m| m.len())
    };
    let baseline = size_of("sz-none");
    let mut out_allocs = Vec::new();
    let mut modules = Vec::new();
    let mut sizes = Vec::new();
    for a in kept {
        match artifacts.get(&format!("wl-{}", a.name)) {
            Some(p) => {
                let dst = modules_dir.join(format!("wl-{}.wasm", a.name));
                std::fs::copy(p, &dst).map_err(|e| e.to_string())?;
                modules.push(dst);
                sizes.push(size_of(&format!("sz-{}", a.name)));
                out_allocs.push(a.clone());
            }
            None => eprintln!(
                "skip {}: its module failed to build (see {})",
                a.name,
                dirs.work.join("logs/build-speed-0.log").display()
            ),
        }
    }
    Ok((out_allocs, modules, rec, sizes, baseline))
}

fn write_if_changed(path: &Path, text: &str) -> Result<(), String> {
    if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Builds `packages` of the generated workspace with `--keep-going`; returns
/// the `.wasm` of each package that built. Cargo's progress goes to the
/// terminal, everything to `log`.
fn cargo_build(
    dirs: &Dirs,
    gen_dir: &Path,
    profile: &str,
    packages: &[String],
    log: &Path,
) -> Result<HashMap<String, PathBuf>, String> {
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--keep-going",
        "--message-format",
        "json-render-diagnostics",
        "--target",
        "wasm32-unknown-unknown",
    ])
    .args(["--profile", profile, "--manifest-path"])
    .arg(gen_dir.join("Cargo.toml"))
    .env("CARGO_TARGET_DIR", &dirs.target)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for p in packages {
        cmd.args(["-p", p]);
    }
    let mut child = cmd.spawn().map_err(|e| format!("cargo: {e}"))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let log_path = log.to_path_buf();
    let err_thread = std::thread::spawn(move || {
        let mut log = std::fs::File::create(&log_path).ok();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let t = line.trim_start();
            if t.starts_with("Compiling")
                || t.starts_with("error: could not compile")
                || t.starts_with("Finished")
            {
                eprintln!("  {t}");
            }
            if let Some(l) = log.as_mut() {
                let _ = writeln!(l, "{line}");
            }
        }
    });
    let mut found = HashMap::new();
    for line in BufReader::new(child.stdout.take().ok_or("no stdout")?)
        .lines()
        .map_while(Result::ok)
    {
        if !line.contains("\"reason\":\"compiler-artifact\"") {
            continue;
        }
        for p in packages {
            let file = format!("/{}.wasm\"", p.replace('-', "_"));
            if let Some(end) = line.find(&file) {
                let start = line[..end].rfind('"').map_or(0, |s| s + 1);
                found.insert(p.clone(), PathBuf::from(&line[start..end + file.len() - 1]));
            }
        }
    }
    let _ = child.wait();
    let _ = err_thread.join();
    Ok(found)
}

/// Runs a plan on a runner; calls `on` for every reply, showing progress.
fn run_plan(
    cmd: &[String],
    plan: &str,
    plan_file: &Path,
    total: usize,
    label: &str,
    mut on: impl FnMut(Reply),
) -> Result<(), String> {
    std::fs::write(plan_file, plan).map_err(|e| e.to_string())?;
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .arg(plan_file)
        .arg(TIMEOUT_SECS.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", cmd[0]))?;
    let t = Instant::now();
    let mut shown = Instant::now();
    let mut done = 0usize;
    for line in BufReader::new(child.stdout.take().ok_or("no stdout")?)
        .lines()
        .map_while(Result::ok)
    {
        let Some(reply) = proto::parse(&line) else {
            continue;
        };
        if matches!(reply, Reply::Ok { .. } | Reply::Err { .. }) {
            done += 1;
            if shown.elapsed().as_millis() >= 1000 || done == total {
                shown = Instant::now();
                eprint!(
                    "\r  {label}: {done}/{total} runs, {:.0} s   ",
                    t.elapsed().as_secs_f64()
                );
            }
        }
        on(reply);
    }
    eprintln!();
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!(
            "{} exited with {status} (plan: {})",
            cmd[0],
            plan_file.display()
        ));
    }
    Ok(())
}

/// Records the programs' traces and counts every workload's allocator
/// operations with the recorder module; writes `traces/<program>.trace`.
fn record(
    dirs: &Dirs,
    runner: &[String],
    rec: &Path,
    workloads: &[Workload],
    quick: bool,
) -> Result<Vec<Option<u64>>, String> {
    let tdir = dirs.work.join("traces");
    std::fs::create_dir_all(&tdir).map_err(|e| e.to_string())?;
    let mut plan = format!("module rec {}\n", rec.display());
    let mut n = 0;
    for (w, wl) in workloads.iter().enumerate() {
        if wl.kind != Kind::Timed {
            continue;
        }
        let program = wl.is_program();
        plan += &Run {
            id: w,
            module: "rec".into(),
            export: wl.export(),
            scale: wl.scale_for(quick),
            fuel: false,
            limit_pages: LIMIT_PAGES,
            trace: None,
            record: if program { 2 } else { 1 },
            dump: program.then(|| tdir.join(format!("{}.raw", wl.name)).display().to_string()),
        }
        .line();
        n += 1;
    }
    let mut ops = vec![None; workloads.len()];
    let mut errors = Vec::new();
    run_plan(
        runner,
        &plan,
        &dirs.work.join("logs/plan-record.txt"),
        n,
        "record",
        |r| match r {
            Reply::Ok { id, count, .. } => ops[id] = Some(count),
            Reply::Err { id, msg } => errors.push(format!("{}: {msg}", workloads[id].name)),
            Reply::ModuleError { msg, .. } => errors.push(msg),
            _ => {}
        },
    )?;
    if !errors.is_empty() {
        return Err(format!("recording failed: {}", errors.join("; ")));
    }
    for (w, wl) in workloads.iter().enumerate() {
        if let Kind::Replay(program) = wl.kind {
            let raw =
                std::fs::read(tdir.join(format!("{program}.raw"))).map_err(|e| e.to_string())?;
            let (t, events) =
                trace::convert(&raw).map_err(|e| format!("trace of {program}: {e:?}"))?;
            std::fs::write(tdir.join(format!("{program}.trace")), t).map_err(|e| e.to_string())?;
            let _ = std::fs::remove_file(tdir.join(format!("{program}.raw")));
            ops[w] = Some(events as u64);
            eprintln!("  trace {program}: {events} events");
        }
    }
    Ok(ops)
}

/// Wall-time limit of one run (a broken or pathological allocator gets a
/// "timeout" cell instead of stalling the run).
const TIMEOUT_SECS: u64 = 60;

/// What a job measures.
#[derive(Clone, Copy, PartialEq, Eq)]
enum JobKind {
    /// Untimed first pass (node only: lets V8 settle before timing).
    Warmup,
    Time,
    Fuel,
    HeapEff,
}

fn measure(
    dirs: &Dirs,
    opts: &Opts,
    runner: &[String],
    modules: &[PathBuf],
    reps: usize,
    r: &mut Results,
) -> Result<(), String> {
    let tdir = dirs.work.join("traces");
    let mut jobs: Vec<(usize, usize, JobKind)> = Vec::new();
    let header: String = modules
        .iter()
        .enumerate()
        .map(|(a, m)| format!("module a{a} {}\n", m.display()))
        .collect();
    let mut job = |w: usize, a: usize, k: JobKind| -> String {
        let wl = &r.workloads[w];
        let id = jobs.len();
        jobs.push((w, a, k));
        Run {
            id,
            module: format!("a{a}"),
            export: wl.export(),
            scale: wl.scale_for(opts.quick),
            fuel: k == JobKind::Fuel,
            limit_pages: match wl.kind {
                Kind::HeapEff(pages) => pages,
                _ => LIMIT_PAGES,
            },
            trace: match wl.kind {
                Kind::Replay(p) => Some(tdir.join(format!("{p}.trace")).display().to_string()),
                _ => None,
            },
            record: 0,
            dump: None,
        }
        .line()
    };
    let timed: Vec<usize> = (0..r.workloads.len())
        .filter(|&w| !r.workloads[w].is_heap_eff())
        .collect();
    let n = modules.len();
    let mut time_plan = String::new();
    let warmup = usize::from(opts.engine == Engine::Node);
    for rep in 0..warmup + reps {
        let kind = if rep < warmup {
            JobKind::Warmup
        } else {
            JobKind::Time
        };
        for &w in &timed {
            for a in plan::rotation(n, rep + w) {
                time_plan += &job(w, a, kind);
            }
        }
    }
    let mut other_plan = String::new();
    for &w in &timed {
        for a in 0..n {
            other_plan += &job(w, a, JobKind::Fuel);
        }
    }
    for w in (0..r.workloads.len()).filter(|&w| r.workloads[w].is_heap_eff()) {
        for a in 0..n {
            other_plan += &job(w, a, JobKind::HeapEff);
        }
    }
    let time_jobs = (warmup + reps) * timed.len() * n;
    let other_jobs = jobs.len() - time_jobs;
    let names: Vec<String> = r.allocators.iter().map(|a| a.name.clone()).collect();
    let apply = |reply: Reply, r: &mut Results| match reply {
        Reply::Module {
            id,
            heap_base,
            pages,
        } => {
            if let Some(a) = id.strip_prefix('a').and_then(|s| s.parse::<usize>().ok()) {
                r.allocators[a].heap_base = Some(heap_base);
                r.allocators[a].initial_pages = Some(pages);
            }
        }
        Reply::ModuleError { id, msg } => eprintln!("module {id} failed to load: {msg}"),
        Reply::Ok {
            id,
            checksum,
            nanos,
            fuel,
            pages,
            ..
        } => {
            let (w, a, k) = jobs[id];
            let c = &mut r.cells[w][a];
            match k {
                JobKind::Warmup => c.checksums.push(checksum),
                JobKind::Time => {
                    c.times_ns.push(nanos as f64);
                    c.checksums.push(checksum);
                    c.pages.get_or_insert(pages);
                }
                JobKind::Fuel => {
                    c.fuel = Some(fuel);
                    c.checksums.push(checksum);
                    c.pages = Some(pages);
                }
                JobKind::HeapEff => {
                    c.efficiency_ppm = Some(checksum);
                    c.pages = Some(pages);
                }
            }
        }
        Reply::Series { id, pages } => {
            let (w, a, k) = jobs[id];
            if k == JobKind::Fuel || r.cells[w][a].series.is_empty() {
                r.cells[w][a].series = pages;
            }
        }
        Reply::Err { id, msg } => {
            let (w, a, _) = jobs[id];
            let c = &mut r.cells[w][a];
            if c.error.is_none() {
                eprintln!("\n  {} on {}: {msg}", names[a], r.workloads[w].name);
                c.error = Some(msg);
            }
        }
    };
    let wasmtime_plan = match opts.engine {
        Engine::Wasmtime => format!("{header}{time_plan}{other_plan}"),
        Engine::Node => {
            let node = vec![
                "node".to_string(),
                dirs.repo
                    .join("benches/node/runner.mjs")
                    .display()
                    .to_string(),
            ];
            run_plan(
                &node,
                &format!("{header}{time_plan}"),
                &dirs.work.join("logs/plan-node.txt"),
                time_jobs,
                "node",
                |x| apply(x, r),
            )?;
            format!("{header}{other_plan}")
        }
    };
    let total = if opts.engine == Engine::Wasmtime {
        time_jobs + other_jobs
    } else {
        other_jobs
    };
    run_plan(
        runner,
        &wasmtime_plan,
        &dirs.work.join("logs/plan-wasmtime.txt"),
        total,
        "wasmtime",
        |x| apply(x, r),
    )
}

/// Writes the table, CSV and JSON of `all` (every build, variants too) and
/// the charts of `shown` (the default builds).
fn write_outputs(out: &Path, all: &Results, r: &Results, tables: &str) -> Result<(), String> {
    let w = |name: &str, text: &str| {
        std::fs::write(out.join(name), text).map_err(|e| format!("{name}: {e}"))
    };
    let header = format!("{}  {}  {}\n\n", r.meta.date, r.meta.machine, r.meta.engine);
    w("table.txt", &(header + tables))?;
    w("results.csv", &all.csv())?;
    w("allocators.csv", &all.csv_allocators())?;
    w("results.json", &all.json())?;
    let timed: Vec<usize> = (0..r.workloads.len())
        .filter(|&i| !r.workloads[i].is_heap_eff() && r.workloads[i].name != "empty")
        .collect();
    let groups: Vec<String> = timed
        .iter()
        .map(|&i| r.workloads[i].name.to_string())
        .collect();
    let series = |f: &dyn Fn(usize, usize) -> Option<f64>| -> Vec<(String, Vec<Option<f64>>)> {
        r.allocators
            .iter()
            .enumerate()
            .map(|(a, al)| (al.name.clone(), timed.iter().map(|&i| f(i, a)).collect()))
            .collect()
    };
    let subtitle = format!(
        "{}; {}; {}{}",
        r.meta.engine,
        r.meta.date,
        r.meta.machine,
        if r.meta.quick { "; quick mode" } else { "" }
    );
    let titles = |title| svg::Titles {
        title,
        subtitle: &subtitle,
    };
    w(
        "throughput-ratio.svg",
        &svg::grouped_bars(
            &titles("Throughput relative to the dlmalloc crate (higher is better)"),
            "throughput / the dlmalloc crate's throughput (medians)",
            &groups,
            &series(&|i, a| r.ratio(i, a)),
            Some(1.0),
            Some(4.0),
        ),
    )?;
    w(
        "peak-memory.svg",
        &svg::grouped_bars(
            &titles("Peak heap memory relative to the dlmalloc crate (lower is better)"),
            "heap pages (memory.size after the run minus the initial pages) / the dlmalloc crate's",
            &groups,
            &series(&|i, a| r.memory_ratio(i, a)),
            Some(1.0),
            Some(4.0),
        ),
    )?;
    if let Some(ratchet) = r.workloads.iter().position(|x| x.name == "ratchet") {
        let lines: Vec<(String, Vec<f64>)> = r
            .allocators
            .iter()
            .enumerate()
            .map(|(a, al)| {
                (
                    al.name.clone(),
                    r.cells[ratchet][a]
                        .series
                        .iter()
                        .map(|&p| p as f64)
                        .collect(),
                )
            })
            .collect();
        w(
            "ratchet-memory.svg",
            &svg::lines(
                &titles("Linear memory over time on the ratchet (lower is better)"),
                "progress through the workload",
                "memory.size (64 KiB pages)",
                &lines,
            ),
        )?;
    }
    Ok(())
}
