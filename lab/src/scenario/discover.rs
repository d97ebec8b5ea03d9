//! Finding scenario files: the scenarios directory and command-line names.

use std::path::{Path, PathBuf};

/// The scenarios directory: `$PENLAB_SCENARIOS`, else `scenarios/` in the current directory or
/// the nearest ancestor that has one.
pub fn scenarios_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("PENLAB_SCENARIOS") {
        return Some(PathBuf::from(d));
    }
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors()
        .map(|a| a.join("scenarios"))
        .find(|d| d.is_dir())
}

/// Every `*.toml` in the scenarios directory, sorted.
pub fn list_scenarios(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    out.sort();
    Ok(out)
}

/// Resolves command-line names: `all`, a path to a `.toml`, or a name in the scenarios dir.
pub fn resolve_names(names: &[String]) -> Result<Vec<PathBuf>, String> {
    let dir = scenarios_dir();
    let mut out = Vec::new();
    for n in names {
        if n == "all" {
            let d = dir
                .as_ref()
                .ok_or("no scenarios/ directory here or above; set PENLAB_SCENARIOS".to_string())?;
            out.extend(list_scenarios(d).map_err(|e| format!("reading {}: {e}", d.display()))?);
            continue;
        }
        let p = PathBuf::from(n);
        if n.ends_with(".toml") || p.is_file() {
            if !p.is_file() {
                return Err(format!("{n}: no such scenario file"));
            }
            out.push(p);
            continue;
        }
        let Some(d) = &dir else {
            return Err(format!(
                "{n}: no scenarios/ directory here or above; give a path or set PENLAB_SCENARIOS"
            ));
        };
        let f = d.join(format!("{n}.toml"));
        if !f.is_file() {
            let known: Vec<String> = list_scenarios(d)
                .unwrap_or_default()
                .iter()
                .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .collect();
            return Err(format!(
                "{n}: no scenario {} (known: {})",
                f.display(),
                known.join(", ")
            ));
        }
        out.push(f);
    }
    Ok(out)
}
