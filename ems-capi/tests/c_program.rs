//! Compiles `tests/c/smoke.c` against the staticlib and the header with the
//! machine's C compiler (`cc`), runs it, and checks it succeeded.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The staticlib cargo built for this test run: the newest
/// `liblinmem_ems_capi*.a` next to the test executable (in `deps/`) or one
/// level up (where `cargo build` puts it).
fn staticlib() -> Option<PathBuf> {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent()?;
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for dir in [deps, deps.parent()?] {
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("liblinmem_ems_capi") && name.ends_with(".a") {
                let t = entry.metadata().ok()?.modified().ok()?;
                if best.as_ref().is_none_or(|(bt, _)| t > *bt) {
                    best = Some((t, entry.path()));
                }
            }
        }
    }
    best.map(|(_, p)| p)
}

#[test]
#[cfg_attr(miri, ignore = "runs a C compiler")]
fn c_program_runs_against_the_staticlib() {
    let lib = staticlib().expect("the staticlib was not built");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ems_c_smoke");
    let status = Command::new("cc")
        .arg("-std=c99")
        .arg("-Wall")
        .arg("-Werror")
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join("tests/c/smoke.c"))
        .arg(&lib)
        .args([
            "-lpthread",
            "-ldl",
            "-lm",
            "-lrt",
            "-lutil",
            "-lgcc_s",
            "-lc",
        ])
        .arg("-o")
        .arg(&exe)
        .status()
        .expect("running cc");
    assert!(status.success(), "cc failed: {status}");
    let out = Command::new(&exe).output().expect("running the C program");
    assert!(
        out.status.success(),
        "C program failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ems c abi ok");
}
