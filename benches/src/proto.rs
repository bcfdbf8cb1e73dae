//! The runner protocol (see `benches/runner/src/main.rs`): plan lines out,
//! result lines in. The wasmtime and node runners speak it alike.

/// A `run` plan line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// Job id (index into the harness's job table).
    pub id: usize,
    /// Module id.
    pub module: String,
    /// Export to call.
    pub export: String,
    /// Scale argument.
    pub scale: u32,
    /// Count fuel.
    pub fuel: bool,
    /// Memory cap in pages.
    pub limit_pages: usize,
    /// Trace file to replay.
    pub trace: Option<String>,
    /// 0: no recorder; 1: count; 2: count and log.
    pub record: u32,
    /// Where to write the recorder's log.
    pub dump: Option<String>,
}

impl Run {
    /// The plan line (paths must not contain spaces).
    pub fn line(&self) -> String {
        format!(
            "run {} {} {} {} {} {} {} {} {}\n",
            self.id,
            self.module,
            self.export,
            self.scale,
            u8::from(self.fuel),
            self.limit_pages,
            self.trace.as_deref().unwrap_or("-"),
            self.record,
            self.dump.as_deref().unwrap_or("-")
        )
    }
}

/// One result line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A module loaded: its `__heap_base` and initial pages.
    Module {
        /// Module id.
        id: String,
        /// `__heap_base`.
        heap_base: u64,
        /// Initial `memory.size`.
        pages: u64,
    },
    /// A module failed to load.
    ModuleError {
        /// Module id.
        id: String,
        /// Message.
        msg: String,
    },
    /// A run completed.
    Ok {
        /// Job id.
        id: usize,
        /// Returned value.
        checksum: u64,
        /// Wall time of the call.
        nanos: u64,
        /// Fuel used (0 when not counted).
        fuel: u64,
        /// `memory.size` after the run.
        pages: u64,
        /// Recorder's operation count (0 without recorder).
        count: u64,
    },
    /// `memory.size` samples of a run.
    Series {
        /// Job id.
        id: usize,
        /// Pages per sample.
        pages: Vec<u32>,
    },
    /// A run failed (trap, missing export, engine error).
    Err {
        /// Job id.
        id: usize,
        /// Message.
        msg: String,
    },
}

/// Parses one result line; `None` for anything else.
pub fn parse(line: &str) -> Option<Reply> {
    let mut f = line.trim_end().splitn(3, ' ');
    let tag = f.next()?;
    let id = f.next()?;
    let rest = f.next().unwrap_or("");
    let nums = || {
        rest.split(' ')
            .map(str::parse::<u64>)
            .collect::<Result<Vec<_>, _>>()
            .ok()
    };
    Some(match tag {
        "module" => {
            let w: Vec<&str> = rest.split(' ').collect();
            match w.as_slice() {
                ["heap_base", hb, "pages", p] => Reply::Module {
                    id: id.into(),
                    heap_base: hb.parse().ok()?,
                    pages: p.parse().ok()?,
                },
                _ => return None,
            }
        }
        "moderr" => Reply::ModuleError {
            id: id.into(),
            msg: rest.into(),
        },
        "ok" => match nums()?.as_slice() {
            &[checksum, nanos, fuel, pages, count] => Reply::Ok {
                id: id.parse().ok()?,
                checksum,
                nanos,
                fuel,
                pages,
                count,
            },
            _ => return None,
        },
        "series" => Reply::Series {
            id: id.parse().ok()?,
            pages: rest
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?,
        },
        "err" => Reply::Err {
            id: id.parse().ok()?,
            msg: rest.into(),
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_line_has_nine_fields_and_dashes_for_none() {
        let r = Run {
            id: 7,
            module: "a1".into(),
            export: "wl_json".into(),
            scale: 100,
            fuel: true,
            limit_pages: 512,
            trace: None,
            record: 0,
            dump: Some("/t/x.raw".into()),
        };
        assert_eq!(r.line(), "run 7 a1 wl_json 100 1 512 - 0 /t/x.raw\n");
    }

    #[test]
    fn parses_every_reply() {
        assert_eq!(
            parse("module a0 heap_base 1024 pages 17"),
            Some(Reply::Module {
                id: "a0".into(),
                heap_base: 1024,
                pages: 17
            })
        );
        assert_eq!(
            parse("ok 3 18446744073709551615 1200 55 20 9\n"),
            Some(Reply::Ok {
                id: 3,
                checksum: u64::MAX,
                nanos: 1200,
                fuel: 55,
                pages: 20,
                count: 9
            })
        );
        assert_eq!(
            parse("series 4 1,2,3"),
            Some(Reply::Series {
                id: 4,
                pages: vec![1, 2, 3]
            })
        );
        assert_eq!(
            parse("err 5 wasm trap: unreachable | at x"),
            Some(Reply::Err {
                id: 5,
                msg: "wasm trap: unreachable | at x".into()
            })
        );
        assert_eq!(
            parse("moderr a1 bad magic"),
            Some(Reply::ModuleError {
                id: "a1".into(),
                msg: "bad magic".into()
            })
        );
    }

    #[test]
    fn rejects_malformed_lines() {
        assert_eq!(parse("ok 3 1 2"), None);
        assert_eq!(parse("ok x 1 2 3 4 5"), None);
        assert_eq!(parse("hello"), None);
        assert_eq!(parse(""), None);
    }
}
