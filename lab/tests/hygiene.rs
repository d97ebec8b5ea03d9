//! The lab's tests cannot lie: a privileged test asks `common::require_root` (which fails the
//! test when not root) and nothing else; no test returns early or skips a part of itself.

use std::path::{Path, PathBuf};

/// Every `.rs` file below `lab/<dir>`, with its text.
fn rs_files(dir: &str) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut todo = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                out.push((p, text));
            }
        }
    }
    assert!(
        out.len() >= 5,
        "found only {} files in lab/{dir}",
        out.len()
    );
    out
}

fn test_files() -> Vec<(PathBuf, String)> {
    rs_files("tests")
}

fn src_files() -> Vec<(PathBuf, String)> {
    rs_files("src")
}

/// The bodies of the `#[test]` functions of `text`: (name, body up to the next item).
fn tests_of(text: &str) -> Vec<(String, String)> {
    text.split("#[test]")
        .skip(1)
        .map(|chunk| {
            let name = chunk
                .split("fn ")
                .nth(1)
                .and_then(|r| r.split('(').next())
                .unwrap_or("?")
                .to_string();
            let end = chunk.find("\n}\n").map_or(chunk.len(), |i| i + 3);
            (name, chunk[..end].to_string())
        })
        .collect()
}

#[test]
fn only_the_common_module_asks_for_the_euid() {
    let probe = ["gete", "uid"].concat();
    let offenders: Vec<String> = test_files()
        .iter()
        .filter(|(p, t)| !p.ends_with("common/mod.rs") && t.contains(&probe))
        .map(|(p, _)| p.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "these test files check root themselves instead of calling common::require_root: {offenders:?}"
    );
}

#[test]
fn every_test_of_a_root_file_requires_root_first() {
    let mut missing = Vec::new();
    for (p, t) in test_files() {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with("_root.rs") {
            continue;
        }
        for (test, body) in tests_of(&t) {
            if !body.contains("require_root(\"") {
                missing.push(format!("{name}: {test}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "these root tests do not call require_root(why): {missing:?}"
    );
}

#[test]
fn no_test_skips_itself_or_a_part() {
    let skip = ["skip", "ped"].concat();
    let mut found = Vec::new();
    for (p, t) in test_files() {
        if p.ends_with("hygiene.rs") {
            continue;
        }
        for (i, line) in t.lines().enumerate() {
            let l = line.to_ascii_lowercase();
            if l.contains("eprintln!") && (l.contains(&skip) || l.contains("not usable")) {
                found.push(format!("{}:{}: {}", p.display(), i + 1, line.trim()));
            }
        }
        for (test, body) in tests_of(&t) {
            if body.contains("        return;\n    }") {
                found.push(format!("{}: {test} returns early", p.display()));
            }
        }
    }
    assert!(found.is_empty(), "tests that skip: {found:#?}");
}

#[test]
fn lab_types_say_what_they_are_not_which_layer_with_a_suffix() {
    let mut found = Vec::new();
    for (p, t) in src_files() {
        for line in t.lines() {
            let l = line.trim_start();
            for kw in ["pub struct ", "pub enum ", "struct ", "enum "] {
                if let Some(rest) = l.strip_prefix(kw) {
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    let tail_p = name.len() > 2
                        && name.ends_with('P')
                        && name[..name.len() - 1].ends_with(|c: char| c.is_ascii_lowercase());
                    if tail_p || name.ends_with("Toml") {
                        found.push(format!("{}: {name}", p.display()));
                    }
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "types named by a *P/*Toml suffix: {found:?}"
    );
}

#[test]
fn lab_sources_are_cut_along_their_seams() {
    // The scenario and bench modules were single files of ~3000 lines each.
    let big: Vec<String> = src_files()
        .iter()
        .filter(|(_, t)| t.lines().count() > 1600)
        .map(|(p, t)| format!("{}: {} lines", p.display(), t.lines().count()))
        .collect();
    assert!(big.is_empty(), "files to cut along their seams: {big:?}");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for f in [
        "scenario/syntax.rs",
        "scenario/refs.rs",
        "scenario/plan.rs",
        "scenario/validate.rs",
        "scenario/discover.rs",
        "bench/plan.rs",
        "bench/parse.rs",
        "bench/measure.rs",
        "bench/report.rs",
        "bench/chart.rs",
    ] {
        assert!(root.join(f).is_file(), "lab/src/{f} is missing");
    }
}
