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

/// Why command-line scenario names do not resolve.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// `all` or a bare name, with no scenarios directory to look in.
    #[error("{name}: no scenarios/ directory here or above; give a path or set PENLAB_SCENARIOS")]
    NoScenariosDir { name: String },
    /// The scenarios directory cannot be listed.
    #[error("reading {}: {source}", dir.display())]
    Unreadable {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// A `.toml` path that is not a file.
    #[error("{name}: no such scenario file")]
    NoFile { name: String },
    /// A bare name with no `<name>.toml` in the scenarios directory.
    #[error("{name}: no scenario {} (known: {})", path.display(), known.join(", "))]
    Unknown {
        name: String,
        path: PathBuf,
        known: Vec<String>,
    },
}

/// Resolves command-line names: `all`, a path to a `.toml`, or a name in the scenarios dir.
pub fn resolve_names(names: &[String]) -> Result<Vec<PathBuf>, DiscoverError> {
    let dir = scenarios_dir();
    let mut out = Vec::new();
    for n in names {
        if n == "all" {
            let d = dir
                .as_ref()
                .ok_or_else(|| DiscoverError::NoScenariosDir { name: n.clone() })?;
            out.extend(
                list_scenarios(d).map_err(|source| DiscoverError::Unreadable {
                    dir: d.clone(),
                    source,
                })?,
            );
            continue;
        }
        let p = PathBuf::from(n);
        if n.ends_with(".toml") || p.is_file() {
            if !p.is_file() {
                return Err(DiscoverError::NoFile { name: n.clone() });
            }
            out.push(p);
            continue;
        }
        let Some(d) = &dir else {
            return Err(DiscoverError::NoScenariosDir { name: n.clone() });
        };
        let f = d.join(format!("{n}.toml"));
        if !f.is_file() {
            let known: Vec<String> = list_scenarios(d)
                .unwrap_or_default()
                .iter()
                .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .collect();
            return Err(DiscoverError::Unknown {
                name: n.clone(),
                path: f,
                known,
            });
        }
        out.push(f);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unresolvable_names_are_typed_errors_that_list_what_exists() {
        // `cargo test` runs in lab/; the repository's scenarios/ is found above it.
        let err = resolve_names(&["no-such-scenario".into()]).unwrap_err();
        let DiscoverError::Unknown { name, known, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(name, "no-such-scenario");
        assert!(known.iter().any(|k| k == "proxy-tcp"), "{known:?}");
        assert!(err.to_string().contains("(known: "), "{err}");
        let err = resolve_names(&["missing/x.toml".into()]).unwrap_err();
        assert!(matches!(err, DiscoverError::NoFile { .. }), "{err:?}");
        assert_eq!(err.to_string(), "missing/x.toml: no such scenario file");
        let all = resolve_names(&["all".into()]).unwrap();
        assert!(all.len() >= 2, "{all:?}");
    }
}
