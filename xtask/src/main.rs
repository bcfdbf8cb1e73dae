//! `cargo xtask`: the project's commands, with all their set-up.
//!
//! - `cargo xtask test`: every test layer — the host suite and unit tests,
//!   the doc tests, and the conformance suite inside a wasm engine (node,
//!   through wasm-bindgen-test). Installs the wasm32 target and a
//!   version-matched wasm-bindgen-cli first when missing.
//! - `cargo xtask miri [mode]`: under Miri (installs the nightly miri
//!   component if missing), with strict provenance, in three modes (or the
//!   one named), all at the suite's light case count: `stacked-borrows`,
//!   the host suite and unit tests; `tree-borrows` and `i686` (a 32-bit
//!   `usize`, as on wasm32), the conformance suite. The modes (the light
//!   ones in two halves) run side by side, one per core; each prints its
//!   output, pass/fail count and time when it ends.
//! - `cargo xtask fuzz [secs]`: each cargo-fuzz target (one per allocator)
//!   for `secs` seconds (default 30); see `xtask/src/fuzz.rs`.
//! - `cargo xtask lint`: `cargo fmt --check`, clippy (host and wasm32) and the
//!   docs build, all with warnings denied.
//!
//! Each ends with a plain `N passed, N failed` line over all test binaries.

mod atomics;
mod cexports;
mod embed;
mod fuzz;

use std::env;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

const WASM: &str = "wasm32-unknown-unknown";

/// Crates whose code runs inside wasm and so must also lint for wasm32.
const WASM_CRATES: &[&str] = &[
    "linmem-memory",
    "linmem-bump",
    "linmem-dlmalloc",
    "linmem-emmalloc",
    "linmem-ems",
];

/// Crates that cannot run under Miri (they drive a wasm engine or a C
/// compiler) or are tooling.
const NOT_UNDER_MIRI: &[&str] = &[
    "xtask",
    "linmem-benches",
    "linmem-bench-workload",
    "linmem-ems-capi",
];

#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    failures: Vec<String>,
}

impl Tally {
    /// Adds the `test result:` lines of a cargo test run's output.
    fn add_output(&mut self, out: &str) {
        for line in out.lines() {
            let Some(rest) = line.trim().strip_prefix("test result: ") else {
                continue;
            };
            for part in rest.split([';', '.']) {
                let mut words = part.split_whitespace();
                match (
                    words.next().and_then(|n| n.parse::<u64>().ok()),
                    words.next(),
                ) {
                    (Some(n), Some("passed")) => self.passed += n,
                    (Some(n), Some("failed")) => self.failed += n,
                    _ => {}
                }
            }
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let root = workspace_root();
    let mut tally = Tally::default();
    let ok = match args.first().map(String::as_str) {
        Some("test") => test(&root, &mut tally),
        Some("miri") => miri(&root, &args[1..], &mut tally),
        Some("lint") => lint(&root, &mut tally),
        Some("fuzz") => fuzz::fuzz(&root, &args[1..], &mut tally),
        Some("atomics") => atomics::check(&root, &mut tally),
        _ => {
            eprintln!("usage: cargo xtask <test | miri [mode] | lint | fuzz [secs] | atomics>");
            return ExitCode::from(2);
        }
    };
    for f in &tally.failures {
        eprintln!("xtask: FAILED: {f}");
    }
    println!("xtask: {} passed, {} failed", tally.passed, tally.failed);
    if ok && tally.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn workspace_root() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    dir.parent().map(Path::to_path_buf).unwrap_or(dir)
}

/// The build directory: `$CARGO_TARGET_DIR`, else `target/` at the root.
fn target_dir(root: &Path) -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

fn cargo() -> Command {
    Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Runs `cmd`, streaming its output and tallying test results; records a
/// failure under `what` when it fails.
fn run(what: &str, cmd: &mut Command, tally: &mut Tally) -> bool {
    eprintln!("xtask: == {what}");
    let out = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).output();
    match out {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            print!("{text}");
            tally.add_output(&text);
            if !out.status.success() {
                tally.failures.push(what.to_string());
            }
            out.status.success()
        }
        Err(e) => {
            tally.failures.push(format!("{what}: could not start: {e}"));
            false
        }
    }
}

fn output_of(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ensure_wasm_target(toolchain: Option<&str>, tally: &mut Tally) -> bool {
    let mut list = Command::new("rustup");
    list.args(toolchain).args(["target", "list", "--installed"]);
    if output_of(&mut list).is_some_and(|o| o.lines().any(|l| l.trim() == WASM)) {
        return true;
    }
    let mut add = Command::new("rustup");
    add.args(toolchain).args(["target", "add", WASM]);
    run("install the wasm32 target", &mut add, tally)
}

/// The wasm-bindgen version the lock file pins, which the CLI must match.
fn wasm_bindgen_version(root: &Path) -> Option<String> {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).ok()?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\"" {
            return lines
                .next()?
                .strip_prefix("version = \"")?
                .strip_suffix('"')
                .map(String::from);
        }
    }
    None
}

fn ensure_wasm_bindgen_cli(root: &Path, tally: &mut Tally) -> bool {
    let Some(want) = wasm_bindgen_version(root) else {
        tally
            .failures
            .push("no wasm-bindgen version in Cargo.lock".into());
        return false;
    };
    let have = output_of(Command::new("wasm-bindgen-test-runner").arg("--version"));
    if have.is_some_and(|v| v.split_whitespace().nth(1) == Some(want.as_str())) {
        return true;
    }
    run(
        &format!("install wasm-bindgen-cli {want}"),
        cargo().args(["install", "wasm-bindgen-cli", "--version", &want, "--force"]),
        tally,
    )
}

fn test(root: &Path, tally: &mut Tally) -> bool {
    let mut ok = run(
        "host: unit tests, conformance suite, doc tests",
        cargo().current_dir(root).args(["test", "--workspace"]),
        tally,
    );
    ok &= run(
        "host: hardened builds, unit tests",
        cargo().current_dir(root).args([
            "test",
            "-p",
            "linmem-dlmalloc",
            "-p",
            "linmem-emmalloc",
            "-p",
            "linmem-ems",
            "--features",
            "hardened",
            "--lib",
        ]),
        tally,
    );
    ok &= run(
        "host: dlmalloc-port with fast lists, unit tests, conformance and misuse suites",
        cargo().current_dir(root).args([
            "test",
            "-p",
            "linmem-dlmalloc",
            "-p",
            "linmem-tests",
            "--features",
            "linmem-dlmalloc/fast-lists",
            "--lib",
            "--test",
            "dlmalloc",
            "--test",
            "misuse",
        ]),
        tally,
    );
    if ensure_wasm_target(None, tally) && ensure_wasm_bindgen_cli(root, tally) {
        ok &= run(
            "wasm: conformance suite and global-allocator binaries in node",
            cargo()
                .current_dir(root)
                .args(["test", "-p", "linmem-tests", "--target", WASM]),
            tally,
        );
        ok &= wasm_app(root, tally);
        ok &= atomics::check(root, tally);
        ok &= cexports::c_exports(root, tally);
        ok &= embed::ems_runtime(root, tally);
    } else {
        ok = false;
    }
    ok
}

/// The allocators a user can pick in `examples/wasm-app`, with their crates.
const APP_ALLOCATORS: &[(&str, &str)] = &[
    ("bump", "bump"),
    ("dlmalloc", "dlmalloc-port"),
    ("emmalloc", "emmalloc-port"),
    ("ems", "ems"),
];

/// Builds the stand-alone wasm program (outside the workspace, one
/// `#[global_allocator]` line) with each allocator and runs it in node:
/// 300,000 blocks of mixed sizes, every byte checked.
fn wasm_app(root: &Path, tally: &mut Tally) -> bool {
    node_example(
        root,
        tally,
        "wasm app",
        "wasm-app",
        "linmem_wasm_app.wasm",
        &["300000", "1000"],
    )
}

/// Builds `examples/<dir>` (its own workspace, one cargo feature per
/// allocator) for wasm32 with each allocator present, and runs its
/// `run.mjs` in node on the module `wasm` with `args`. Each allocator counts
/// as one test.
pub(crate) fn node_example(
    root: &Path,
    tally: &mut Tally,
    what: &str,
    dir: &str,
    wasm: &str,
    args: &[&str],
) -> bool {
    let example = root.join("examples").join(dir);
    let target = target_dir(root).join(dir);
    let wasm = target.join("wasm32-unknown-unknown/release").join(wasm);
    let mut ok = true;
    let present = APP_ALLOCATORS
        .iter()
        .filter(|(_, d)| root.join(d).join("Cargo.toml").exists());
    for (feature, _) in present {
        let built = run(
            &format!("{what} with {feature}: build"),
            cargo()
                .current_dir(&example)
                .env("CARGO_TARGET_DIR", &target)
                .args([
                    "build",
                    "--release",
                    "--target",
                    WASM,
                    "--no-default-features",
                    "--features",
                    feature,
                ]),
            tally,
        );
        let ran = built
            && run(
                &format!("{what} with {feature}: run in node"),
                Command::new("node")
                    .arg(example.join("run.mjs"))
                    .arg(&wasm)
                    .args(args),
                tally,
            );
        if ran {
            tally.passed += 1;
        } else {
            tally.failed += 1;
        }
        ok &= ran;
    }
    ok
}

fn miri(root: &Path, args: &[String], tally: &mut Tally) -> bool {
    let has_miri = output_of(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .is_some_and(|o| o.lines().any(|l| l.starts_with("miri")));
    if !has_miri
        && !run(
            "install miri",
            Command::new("rustup").args([
                "component",
                "add",
                "miri",
                "rust-src",
                "--toolchain",
                "nightly",
            ]),
            tally,
        )
    {
        return false;
    }
    let only = args.first().map(String::as_str);
    if only.is_some_and(|m| !MIRI_MODES.iter().any(|mode| mode.name == m)) {
        let names: Vec<&str> = MIRI_MODES.iter().map(|m| m.name).collect();
        tally
            .failures
            .push(format!("usage: cargo xtask miri [{}]", names.join(" | ")));
        return false;
    }
    // Jobs: the full mode whole, each light mode in halves of the suite
    // (Miri interprets on one core, so halves balance the workers).
    let mut jobs: Vec<(&MiriMode, &[&str])> = Vec::new();
    for mode in MIRI_MODES
        .iter()
        .filter(|m| only.is_none_or(|o| o == m.name))
    {
        if mode.light {
            let (a, b) = SUITE_BINARIES.split_at(SUITE_BINARIES.len() / 2);
            jobs.extend([(mode, a), (mode, b)]);
        } else {
            jobs.push((mode, &[]));
        }
    }
    // Run the jobs side by side, one worker per core, each worker in its
    // own target directory (cargo locks a target directory for a whole
    // `cargo test`). Each job's output is printed in one piece when it ends.
    let base = target_dir(root);
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, jobs.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for w in 0..workers {
            let (jobs, next, results, base) = (&jobs, &next, &results, &base);
            s.spawn(move || {
                let dir = if w == 0 {
                    base.clone()
                } else {
                    base.join(format!("xtask-miri-{w}"))
                };
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&(mode, bins)) = jobs.get(i) else {
                        break;
                    };
                    let r = miri_job(root, mode, bins, &dir);
                    results.lock().unwrap_or_else(|e| e.into_inner()).push(r);
                }
            });
        }
    });
    let mut ok = true;
    for (ran, mut t) in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
        ok &= ran;
        tally.passed += t.passed;
        tally.failed += t.failed;
        tally.failures.append(&mut t.failures);
    }
    ok
}

/// Runs one Miri mode (a light mode over the suite binaries `bins`) with
/// its build in `target_dir`, prints its whole output and its pass/fail
/// line, and returns whether it passed.
fn miri_job(root: &Path, mode: &MiriMode, bins: &[&str], target_dir: &Path) -> (bool, Tally) {
    // `cargo +nightly` needs the rustup proxy, while `$CARGO` is the
    // toolchain's own cargo: go through rustup.
    let mut cmd = Command::new("rustup");
    cmd.current_dir(root)
        .env("CARGO_TARGET_DIR", target_dir)
        .args(["run", "nightly", "cargo", "miri", "test"]);
    let mut flags = env::var("MIRIFLAGS").unwrap_or_else(|_| "-Zmiri-strict-provenance".into());
    // Every mode runs the suite at its lightest case count: Miri runs
    // code about a thousand times slower than native, and the suite's
    // full counts run natively and in node.
    cmd.env("LINMEM_MIRI_LIGHT", "1");
    flags.push_str(" -Zmiri-env-forward=LINMEM_MIRI_LIGHT");
    if mode.light {
        // The conformance suite only.
        cmd.args(["-p", "linmem-tests"]);
        for b in bins {
            cmd.args(["--test", b]);
        }
    } else {
        cmd.arg("--workspace");
        for c in NOT_UNDER_MIRI {
            cmd.args(["--exclude", c]);
        }
        // Doc tests under Miri add little and take long.
        cmd.args(["--lib", "--tests"]);
    }
    if let Some(target) = mode.target {
        cmd.args(["--target", target]);
    }
    for f in mode.flags {
        flags.push(' ');
        flags.push_str(f);
    }
    cmd.env("MIRIFLAGS", flags);
    let what = if mode.light {
        format!("miri {}: {} ({})", mode.name, mode.what, bins.join(", "))
    } else {
        format!("miri {}: {}", mode.name, mode.what)
    };
    eprintln!("xtask: == {what} (started)");
    let mut t = Tally::default();
    let start = std::time::Instant::now();
    let out = cmd.stdin(Stdio::null()).output();
    let ok = match out {
        Ok(out) => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            // One block per mode, so parallel modes do not interleave.
            let mut lock = std::io::stdout().lock();
            let _ = writeln!(lock, "xtask: == {what} (output)\n{stderr}{stdout}");
            t.add_output(&stdout);
            if !out.status.success() {
                t.failures.push(what.clone());
            }
            let _ = writeln!(
                lock,
                "xtask: {}: {} passed, {} failed in {:.0?}",
                what,
                t.passed,
                t.failed,
                start.elapsed()
            );
            out.status.success()
        }
        Err(e) => {
            t.failures.push(format!("{what}: could not start: {e}"));
            false
        }
    };
    (ok, t)
}

/// The conformance-suite binaries that the light Miri modes run.
const SUITE_BINARIES: &[&str] = &["bump", "dlmalloc", "emmalloc", "ems"];

/// One way `cargo xtask miri` runs the tests under Miri.
struct MiriMode {
    /// What `cargo xtask miri <name>` selects.
    name: &'static str,
    what: &'static str,
    /// Added to `MIRIFLAGS` (which defaults to strict provenance).
    flags: &'static [&'static str],
    target: Option<&'static str>,
    /// Only the conformance suite (every mode sets `LINMEM_MIRI_LIGHT`).
    light: bool,
}

const MIRI_MODES: &[MiriMode] = &[
    MiriMode {
        name: "stacked-borrows",
        what: "host suite and unit tests, Stacked Borrows",
        flags: &[],
        target: None,
        light: false,
    },
    MiriMode {
        name: "tree-borrows",
        what: "conformance suite, Tree Borrows, light",
        flags: &["-Zmiri-tree-borrows"],
        target: None,
        light: true,
    },
    MiriMode {
        name: "i686",
        what: "conformance suite on a 32-bit target (usize as on wasm32), light",
        flags: &[],
        target: Some("i686-unknown-linux-gnu"),
        light: true,
    },
];

fn lint(root: &Path, tally: &mut Tally) -> bool {
    let mut ok = run(
        "cargo fmt --check",
        cargo().current_dir(root).args(["fmt", "--all", "--check"]),
        tally,
    );
    ok &= run(
        "clippy (host, all targets)",
        cargo().current_dir(root).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
        tally,
    );
    if ensure_wasm_target(None, tally) {
        let members = output_of(cargo().current_dir(root).args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
        ]))
        .unwrap_or_default();
        let mut cmd = cargo();
        cmd.current_dir(root).args(["clippy", "--target", WASM]);
        // Allocator crates land one by one: lint those present.
        for c in WASM_CRATES
            .iter()
            .filter(|c| members.contains(&format!("\"name\":\"{c}\"")))
        {
            cmd.args(["-p", c]);
        }
        cmd.args(["-p", "linmem-tests", "--tests", "--", "-D", "warnings"]);
        ok &= run("clippy (wasm32)", &mut cmd, tally);
    }
    ok &= run(
        "docs",
        cargo()
            .current_dir(root)
            .env("RUSTDOCFLAGS", "-D warnings")
            .args(["doc", "--workspace", "--no-deps"]),
        tally,
    );
    ok
}
