//! `cargo xtask fuzz [secs]`: each cargo-fuzz target in `fuzz/` (one per
//! allocator) for a bounded time, `secs` seconds each (default 30).
//!
//! Installs cargo-fuzz when missing and runs on nightly. Each target
//! decodes its input into an operation program and runs it against the
//! conformance suite's model; a failed check panics, which libFuzzer
//! reports as a crash (the input is saved under `fuzz/artifacts/<target>/`).
//! The corpus grows in `fuzz/corpus/<target>/` from run to run. Prints the
//! executions, the time and the rate per target, and counts each target as
//! one passed or failed test.
//!
//! For a longer run of one target: `cargo +nightly fuzz run ems -s none -a
//! -- -max_total_time=3600` (or with `-jobs=N` for N processes).

use std::path::Path;
use std::process::{Command, Stdio};

use crate::{Tally, cargo, output_of, run};

/// The fuzz targets (one per allocator), as named in `fuzz/Cargo.toml`.
const TARGETS: &[&str] = &["bump", "dlmalloc", "emmalloc", "ems"];

/// Seconds per target when not given.
const DEFAULT_SECS: u64 = 30;

/// libFuzzer's closing statistics of one run.
#[derive(Debug, Default)]
struct Stats {
    execs: u64,
    per_sec: u64,
    secs: Option<u64>,
    new_units: u64,
    peak_rss_mb: u64,
}

impl Stats {
    /// Reads the `stat::` lines of `-print_final_stats=1` and the `Done N
    /// runs in S second(s)` line.
    fn parse(out: &str) -> Self {
        let mut s = Stats::default();
        for line in out.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("stat::") {
                let mut kv = rest.splitn(2, ':');
                let (Some(k), Some(v)) = (kv.next(), kv.next()) else {
                    continue;
                };
                let v = v.trim().parse().unwrap_or(0);
                match k.trim() {
                    "number_of_executed_units" => s.execs = v,
                    "average_exec_per_sec" => s.per_sec = v,
                    "new_units_added" => s.new_units = v,
                    "peak_rss_mb" => s.peak_rss_mb = v,
                    _ => {}
                }
            } else if let Some(rest) = line.split("Done ").nth(1) {
                // "Done 12345 runs in 30 second(s)"
                let words: Vec<&str> = rest.split_whitespace().collect();
                if let [_, "runs", "in", secs, ..] = words[..] {
                    s.secs = secs.parse().ok();
                }
            }
        }
        s
    }
}

fn ensure_cargo_fuzz(tally: &mut Tally) -> bool {
    if output_of(cargo().args(["fuzz", "--version"])).is_some() {
        return true;
    }
    run(
        "install cargo-fuzz",
        cargo().args(["install", "cargo-fuzz", "--locked"]),
        tally,
    )
}

/// Runs every fuzz target for `args[0]` seconds (default 30).
pub fn fuzz(root: &Path, args: &[String], tally: &mut Tally) -> bool {
    let secs = match args.first().map(|a| a.parse::<u64>()) {
        None => DEFAULT_SECS,
        Some(Ok(s)) if s > 0 => s,
        Some(_) => {
            tally
                .failures
                .push("usage: cargo xtask fuzz [seconds per target]".into());
            return false;
        }
    };
    if !ensure_cargo_fuzz(tally) {
        return false;
    }
    // cargo-fuzz needs nightly (sanitizer coverage flags); `cargo +nightly`
    // needs the rustup proxy, so go through rustup. No sanitizer: the heaps
    // live inside one simulated memory, where the suite's model is the
    // checker; debug assertions on (overflow checks included).
    let fuzz_cmd = |sub: &str, target: Option<&str>| {
        let mut cmd = Command::new("rustup");
        cmd.current_dir(root)
            .args(["run", "nightly", "cargo", "fuzz", sub])
            .args(target)
            .args(["--sanitizer", "none", "--debug-assertions"]);
        cmd
    };
    if !run(
        "fuzz: build the targets",
        &mut fuzz_cmd("build", None),
        tally,
    ) {
        return false;
    }
    let mut ok = true;
    let mut rows = Vec::new();
    for target in TARGETS {
        let what = format!("fuzz {target} for {secs} s");
        eprintln!("xtask: == {what}");
        let mut cmd = fuzz_cmd("run", Some(target));
        cmd.arg("--").args([
            format!("-max_total_time={secs}"),
            "-print_final_stats=1".into(),
            "-rss_limit_mb=4096".into(),
        ]);
        let out = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).output();
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                tally.failures.push(format!("{what}: could not start: {e}"));
                tally.failed += 1;
                ok = false;
                continue;
            }
        };
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let stats = Stats::parse(&text);
        if out.status.success() {
            tally.passed += 1;
        } else {
            // The crash report: the panic message and where the input went.
            let lines: Vec<&str> = text.lines().collect();
            for line in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{line}");
            }
            tally.failures.push(format!(
                "{what}: crash (input saved under fuzz/artifacts/{target}/)"
            ));
            tally.failed += 1;
            ok = false;
        }
        rows.push((target, stats, out.status.success()));
    }
    println!("xtask: fuzz results ({secs} s per target, no sanitizer, debug assertions)");
    println!(
        "xtask: {:<10} {:>12} {:>8} {:>10} {:>9} {:>8}  result",
        "target", "executions", "secs", "execs/s", "new units", "peak MB"
    );
    for (target, s, passed) in rows {
        let secs = s.secs.map_or_else(|| "?".into(), |t| t.to_string());
        println!(
            "xtask: {:<10} {:>12} {:>8} {:>10} {:>9} {:>8}  {}",
            target,
            s.execs,
            secs,
            s.per_sec,
            s.new_units,
            s.peak_rss_mb,
            if passed { "ok" } else { "CRASH" }
        );
    }
    ok
}
