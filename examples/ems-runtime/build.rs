//! Builds the guest modules for wasm32 with a nested cargo (its own target
//! directory under `OUT_DIR`, so it never waits on the outer build's lock)
//! and leaves them in `OUT_DIR` for `include_bytes!`:
//!
//! - `guest_imports.wasm` from `guests/imports` (scenarios 1–4);
//! - `guest_cexports_<allocator>.wasm` from `guests/cexports`, once per
//!   allocator feature (scenario 5).
//!
//! A failed guest build fails the host build with cargo's messages above.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const WASM: &str = "wasm32-unknown-unknown";

/// The allocator features of `guests/cexports`.
const ALLOCATORS: &[&str] = &["bump", "dlmalloc", "emmalloc", "ems"];

/// The crates the guests are built from (a change rebuilds them).
const CRATES: &[&str] = &["memory", "bump", "dlmalloc-port", "emmalloc-port", "ems"];

fn main() {
    let here =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let repo = here.join("../..");
    let target = out.join("guests");

    for path in [
        "src/workload.rs",
        "guests/imports/Cargo.toml",
        "guests/imports/src",
        "guests/cexports/Cargo.toml",
        "guests/cexports/src",
        "guests/process.rs",
    ] {
        println!("cargo:rerun-if-changed={}", here.join(path).display());
    }
    for dir in CRATES {
        println!(
            "cargo:rerun-if-changed={}",
            repo.join(dir).join("Cargo.toml").display()
        );
        println!(
            "cargo:rerun-if-changed={}",
            repo.join(dir).join("src").display()
        );
    }

    build(&here.join("guests/imports"), &target, &[]);
    copy(
        &target,
        "linmem_ems_runtime_guest",
        &out.join("guest_imports.wasm"),
    );
    for feature in ALLOCATORS {
        build(
            &here.join("guests/cexports"),
            &target,
            &["--no-default-features", "--features", feature],
        );
        copy(
            &target,
            "linmem_ems_runtime_cguest",
            &out.join(format!("guest_cexports_{feature}.wasm")),
        );
    }
}

/// `cargo build --release --target wasm32-unknown-unknown` in `dir`, with
/// the outer build's settings removed from the environment (they describe
/// the host build, not this one).
fn build(dir: &Path, target: &Path, args: &[&str]) {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let outer = (key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_MAKEFLAGS")
            || matches!(
                key,
                "RUSTC"
                    | "RUSTDOC"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "RUSTFLAGS"
                    | "RUSTDOCFLAGS"
            );
        if outer {
            cmd.env_remove(key);
        }
    }
    let status = cmd
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .args(["build", "--release", "--target", WASM])
        .args(args)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "building the guest in {} failed ({s}); is the {WASM} target installed? (rustup target add {WASM})",
            dir.display()
        ),
        Err(e) => panic!(
            "could not run cargo for the guest in {}: {e}",
            dir.display()
        ),
    }
}

fn copy(target: &Path, name: &str, to: &Path) {
    let from = target
        .join(WASM)
        .join("release")
        .join(format!("{name}.wasm"));
    if let Err(e) = fs::copy(&from, to) {
        panic!("copying {} to {}: {e}", from.display(), to.display());
    }
}
