//! Reading the workload crate's manifest and writing the generated build
//! workspace: one package per (allocator, build kind), all compiling the same
//! `benches/workload/src/lib.rs`, so cargo keeps every module's artifacts
//! apart (switching features on one package would rebuild it every time).
//!
//! The allocator list comes from the manifest's `alloc-*` features: adding an
//! allocator is one dependency line, one feature line and its static in
//! `src/lib.rs`. An allocator whose path dependency does not exist yet is
//! left out of the generated workspace (its feature stays, empty), so the
//! others still build.

use std::path::{Path, PathBuf};

/// One allocator of the workload manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocatorEntry {
    /// Display name: the feature without `alloc-` (e.g. `talc`, `bump`).
    pub name: String,
    /// The cargo feature (`alloc-talc`).
    pub feature: String,
    /// The optional dependency the feature turns on.
    pub dep: String,
    /// The dependency's directory for path dependencies (linmem crates).
    pub path: Option<PathBuf>,
}

impl AllocatorEntry {
    /// Whether this is one of the project's own allocators.
    pub fn is_linmem(&self) -> bool {
        self.dep.starts_with("linmem-")
    }

    /// Whether its crate is present (always true for registry crates).
    pub fn present(&self) -> bool {
        self.path
            .as_ref()
            .is_none_or(|p| p.join("Cargo.toml").is_file())
    }
}

/// The parts of the workload manifest the generator needs.
#[derive(Debug, Default)]
pub struct WorkloadManifest {
    /// `[features]` entries: name and right-hand side, in file order.
    pub features: Vec<(String, String)>,
    /// `[dependencies]` entries: name and right-hand side, in file order.
    pub deps: Vec<(String, String)>,
    /// All `[profile.*]` sections, verbatim.
    pub profiles: String,
}

fn key_value(line: &str) -> Option<(String, String)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (k, v) = line.split_once('=')?;
    Some((k.trim().to_string(), v.trim().to_string()))
}

/// The quoted value of `key = "..."` inside an inline table.
fn inline_str(rhs: &str, key: &str) -> Option<String> {
    let at = rhs.find(&format!("{key} = \""))? + key.len() + 4;
    let end = rhs[at..].find('"')?;
    Some(rhs[at..at + end].to_string())
}

impl WorkloadManifest {
    /// Parses the (simple, one-entry-per-line) workload manifest.
    pub fn parse(text: &str) -> Self {
        let mut m = WorkloadManifest::default();
        let mut section = String::new();
        for line in text.lines() {
            let t = line.trim();
            if t.starts_with('[') {
                section = t.trim_matches(|c| c == '[' || c == ']').to_string();
            }
            if section.starts_with("profile.") {
                m.profiles.push_str(line);
                m.profiles.push('\n');
                continue;
            }
            if t.starts_with('[') {
                continue;
            }
            match (section.as_str(), key_value(line)) {
                ("features", Some(kv)) => m.features.push(kv),
                ("dependencies", Some(kv)) => m.deps.push(kv),
                _ => {}
            }
        }
        m
    }

    /// The allocators (`alloc-*` features but `alloc-none`), in file order;
    /// relative paths are resolved against `dir` (the workload crate).
    pub fn allocators(&self, dir: &Path) -> Vec<AllocatorEntry> {
        self.features
            .iter()
            .filter(|(f, _)| f.starts_with("alloc-") && f != "alloc-none")
            .filter_map(|(f, rhs)| {
                let dep = rhs.split("dep:").nth(1)?.split('"').next()?.to_string();
                let path = self
                    .deps
                    .iter()
                    .find(|(d, _)| *d == dep)
                    .and_then(|(_, r)| inline_str(r, "path"));
                Some(AllocatorEntry {
                    name: f["alloc-".len()..].to_string(),
                    feature: f.clone(),
                    dep,
                    path: path.map(|p| dir.join(p)),
                })
            })
            .collect()
    }

    /// The manifest of one generated package: `name`, compiling `lib`, with
    /// `default` features; dependencies named in `missing` are dropped and
    /// the features that turn them on become empty. Relative paths are
    /// resolved against `dir`.
    pub fn package(
        &self,
        name: &str,
        lib: &Path,
        default: &[&str],
        missing: &[String],
        dir: &Path,
    ) -> String {
        let mut s = format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\npath = \"{}\"\n\n[features]\n",
            lib.display()
        );
        let quoted: Vec<String> = default.iter().map(|f| format!("\"{f}\"")).collect();
        s += &format!("default = [{}]\n", quoted.join(", "));
        for (f, rhs) in self.features.iter().filter(|(f, _)| f != "default") {
            let uses_missing = missing
                .iter()
                .any(|d| rhs.contains(&format!("\"dep:{d}\"")));
            s += &format!("{f} = {}\n", if uses_missing { "[]" } else { rhs });
        }
        s += "\n[dependencies]\n";
        for (d, rhs) in self.deps.iter().filter(|(d, _)| !missing.contains(d)) {
            let rhs = match inline_str(rhs, "path") {
                Some(p) => rhs.replace(
                    &format!("path = \"{p}\""),
                    &format!("path = \"{}\"", dir.join(&p).display()),
                ),
                None => rhs.clone(),
            };
            s += &format!("{d} = {rhs}\n");
        }
        s
    }

    /// The generated workspace's root manifest.
    pub fn workspace(&self, members: &[String]) -> String {
        let quoted: Vec<String> = members.iter().map(|m| format!("\"{m}\"")).collect();
        format!(
            "[workspace]\nresolver = \"3\"\nmembers = [{}]\n\n{}",
            quoted.join(", "),
            self.profiles
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
[package]
name = "w"

[features]
default = ["workloads"]
workloads = ["dep:serde_json"]
alloc-none = []
alloc-bump = ["dep:linmem-bump"]
alloc-talc = ["dep:talc"]

[dependencies]
serde_json = { version = "1.0", optional = true }
linmem-bump = { path = "../../bump", optional = true }
talc = { version = "5.1.1", optional = true }

[profile.release]
lto = true
"#;

    #[test]
    fn allocators_come_from_alloc_features_with_resolved_paths() {
        let m = WorkloadManifest::parse(TEXT);
        let a = m.allocators(Path::new("/r/benches/workload"));
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].name, "bump");
        assert_eq!(a[0].dep, "linmem-bump");
        assert!(a[0].is_linmem());
        assert_eq!(
            a[0].path.as_deref(),
            Some(Path::new("/r/benches/workload/../../bump"))
        );
        assert_eq!(a[1].name, "talc");
        assert_eq!(a[1].path, None);
        assert!(a[1].present());
        assert!(!a[1].is_linmem());
    }

    #[test]
    fn package_drops_missing_deps_and_empties_their_features() {
        let m = WorkloadManifest::parse(TEXT);
        let p = m.package(
            "wl-talc",
            Path::new("/r/lib.rs"),
            &["workloads", "alloc-talc"],
            &["linmem-bump".into()],
            Path::new("/r/w"),
        );
        assert!(p.contains("name = \"wl-talc\""));
        assert!(p.contains("default = [\"workloads\", \"alloc-talc\"]"));
        assert!(p.contains("alloc-bump = []"));
        assert!(p.contains("alloc-talc = [\"dep:talc\"]"));
        assert!(!p.contains("linmem-bump ="));
        assert!(p.contains("talc = { version = \"5.1.1\", optional = true }"));
        assert_eq!(p.matches("default =").count(), 1);
    }

    #[test]
    fn package_makes_paths_absolute() {
        let m = WorkloadManifest::parse(TEXT);
        let p = m.package("x", Path::new("/r/lib.rs"), &[], &[], Path::new("/r/w"));
        assert!(p.contains("linmem-bump = { path = \"/r/w/../../bump\", optional = true }"));
    }

    #[test]
    fn workspace_lists_members_and_keeps_profiles() {
        let m = WorkloadManifest::parse(TEXT);
        let w = m.workspace(&["a".into(), "b".into()]);
        assert!(w.contains("members = [\"a\", \"b\"]"));
        assert!(w.contains("[profile.release]\nlto = true"));
    }
}
