//! Command-line options.

use std::path::PathBuf;

/// The engine that measures wall time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// wasmtime, embedded in `linmem-bench-runner` (the default).
    Wasmtime,
    /// node (V8), through `benches/node/runner.mjs`; fuel and heap
    /// efficiency still come from wasmtime.
    Node,
}

/// Parsed options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opts {
    /// Smaller workloads, fewer runs (about a minute once built).
    pub quick: bool,
    /// Wall-time engine.
    pub engine: Engine,
    /// Results folder (default: `<target>/bench-results/<UTC time>`).
    pub out: Option<PathBuf>,
    /// Timed runs per allocator and workload.
    pub reps: Option<usize>,
    /// Only these allocators (the dlmalloc crate is always kept: ratios).
    pub only: Option<Vec<String>>,
}

/// Usage text.
pub const USAGE: &str = "\
linmem-benches: side-by-side benchmarks of the linmem allocators and the references
usage: cargo run --release -p linmem-benches -- [options]
  --quick             smaller workloads and 3 runs (about a minute once built)
  --engine E          wasmtime (default) or node: the engine that measures wall time
  --out DIR           results folder (default: <target>/bench-results/<UTC time>)
  --reps N            timed runs per allocator and workload (default 5, quick 3)
  --only A,B          only these allocators (dlmalloc, the ratio baseline, is always kept)
  -h, --help          this text";

/// Parses the arguments after the program name; `Err` carries the message
/// (the usage for `--help`).
pub fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        quick: false,
        engine: Engine::Wasmtime,
        out: None,
        reps: None,
        only: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or(format!("{name} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--quick" => o.quick = true,
            "--engine" => {
                o.engine = match value("--engine")?.as_str() {
                    "wasmtime" => Engine::Wasmtime,
                    "node" => Engine::Node,
                    e => return Err(format!("unknown engine {e} (wasmtime or node)")),
                }
            }
            "--out" => o.out = Some(PathBuf::from(value("--out")?)),
            "--reps" => {
                let v = value("--reps")?;
                o.reps = Some(
                    v.parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or(format!("--reps needs a positive number, got {v}"))?,
                )
            }
            "--only" => o.only = Some(value("--only")?.split(',').map(str::to_string).collect()),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Opts, String> {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn defaults() {
        let o = p("").unwrap();
        assert_eq!(
            (o.quick, o.engine, o.out, o.reps, o.only),
            (false, Engine::Wasmtime, None, None, None)
        );
    }

    #[test]
    fn all_options() {
        let o = p("--quick --engine node --out /tmp/r --reps 5 --only talc,bump").unwrap();
        assert!(o.quick);
        assert_eq!(o.engine, Engine::Node);
        assert_eq!(o.out, Some(PathBuf::from("/tmp/r")));
        assert_eq!(o.reps, Some(5));
        assert_eq!(o.only, Some(vec!["talc".to_string(), "bump".to_string()]));
    }

    #[test]
    fn errors() {
        assert!(p("--engine v8").is_err());
        assert!(p("--reps 0").is_err());
        assert!(p("--out").is_err());
        assert!(p("--bogus").is_err());
        assert!(p("--help").unwrap_err().contains("usage"));
    }
}
