//! The wasm threads build check (part of `cargo xtask test`).
//!
//! Builds `examples/atomics-check` (outside the workspace) for wasm32 with
//! the `atomics` target feature, which needs nightly and `-Z build-std`:
//!
//! - with each allocator's `Global` as `#[global_allocator]`: must build (the
//!   locked variant is chosen under `atomics`);
//! - with a `static` of `linmem_memory::Unsync`: must FAIL with E0277
//!   ("cannot be shared between threads safely"), since an unlocked heap
//!   must not be shared by threads; and, as a control, the same crate must
//!   build without `atomics`, so the failure is the refusal and nothing else.
//!
//! Each of these counts as one test in the tally.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::{APP_ALLOCATORS, Tally, WASM, output_of, run};

/// The flags of a threaded wasm build.
const ATOMICS_FLAGS: &str = "-C target-feature=+atomics,+bulk-memory,+mutable-globals";

/// What rustc says when a `static` is not `Sync`.
const NOT_SYNC: &str = "cannot be shared between threads safely";

/// Runs the check; false when any part failed.
pub(crate) fn check(root: &Path, tally: &mut Tally) -> bool {
    let started = Instant::now();
    if !ensure_rust_src(tally) {
        return false;
    }
    let krate = root.join("examples/atomics-check");
    let target = crate::target_dir(root).join("atomics-check");
    let mut ok = true;
    let present = APP_ALLOCATORS
        .iter()
        .filter(|(_, d)| root.join(d).join("Cargo.toml").exists());
    for (feature, _) in present {
        let built = run(
            &format!("atomics: {feature} Global builds for threaded wasm32"),
            &mut threaded_build(&krate, &target, feature),
            tally,
        );
        count(tally, built);
        ok &= built;
    }
    let refused = unsync_refused(&krate, &target, tally);
    count(tally, refused);
    ok &= refused;
    let control = run(
        "atomics: control: Unsync static builds for single-threaded wasm32",
        crate::cargo()
            .current_dir(&krate)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env("CARGO_TARGET_DIR", target.join("single"))
            .args(["build", "--release", "--target", WASM])
            .args(["--features", "unsync"]),
        tally,
    );
    count(tally, control);
    ok &= control;
    eprintln!(
        "xtask: atomics check took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    ok
}

fn count(tally: &mut Tally, passed: bool) {
    if passed {
        tally.passed += 1;
    } else {
        tally.failed += 1;
    }
}

/// Installs the nightly `rust-src` component (for build-std) when missing.
fn ensure_rust_src(tally: &mut Tally) -> bool {
    let installed = output_of(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .is_some_and(|o| o.lines().any(|l| l.trim() == "rust-src"));
    installed
        || run(
            "install rust-src for nightly",
            Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
            tally,
        )
}

/// Nightly `cargo` through rustup (`$CARGO` is xtask's own cargo), with no
/// inherited flags.
fn nightly_cargo() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo"])
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    cmd
}

/// The nightly build-std build of the check crate with `atomics` on.
fn threaded_build(krate: &Path, target: &Path, feature: &str) -> Command {
    let mut cmd = nightly_cargo();
    cmd.current_dir(krate)
        .env("CARGO_TARGET_DIR", target.join("threads"))
        .env("RUSTFLAGS", ATOMICS_FLAGS)
        .args(["build", "--release", "-Z", "build-std=core,alloc"])
        .args(["--target", WASM, "--features", feature]);
    cmd
}

/// Builds the `Unsync` static with `atomics` on: it must fail, with E0277.
fn unsync_refused(krate: &Path, target: &Path, tally: &mut Tally) -> bool {
    let what = "atomics: Unsync static refuses to build for threaded wasm32 (E0277)";
    eprintln!("xtask: == {what}");
    let out = threaded_build(krate, target, "unsync")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let verdict = match out {
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                Err("it built, but must not".to_string())
            } else if err.contains("E0277") && err.contains(NOT_SYNC) {
                Ok(())
            } else {
                eprint!("{err}");
                Err("it failed, but not with E0277 (not Sync)".to_string())
            }
        }
        Err(e) => Err(format!("could not start: {e}")),
    };
    match verdict {
        Ok(()) => {
            eprintln!("xtask: refused as expected: E0277, {NOT_SYNC}");
            true
        }
        Err(why) => {
            tally.failures.push(format!("{what}: {why}"));
            false
        }
    }
}
