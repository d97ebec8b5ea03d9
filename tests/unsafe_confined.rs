//! Keeps the kernel layer honest: every `unsafe` of the library lives under `src/sys/`, and the
//! crate denies `clippy::undocumented_unsafe_blocks` (so each block there has its SAFETY
//! comment). A new `unsafe` elsewhere fails here with its file and line; move the system call
//! into `src/sys/` behind a small safe function instead.

use std::path::{Path, PathBuf};

/// Files outside `src/sys/` that may still hold `unsafe`, each with why. An entry whose file no
/// longer has any fails the test too, so the list only shrinks.
const ALLOWED: &[(&str, &str)] = &[];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Lines of `text` whose code (comments removed) uses the `unsafe` keyword: (line number, line).
fn unsafe_lines(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let code = line.split("//").next().unwrap_or("");
            let hit = code
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .any(|word| word == "unsafe");
            hit.then(|| (i + 1, line.trim().to_string()))
        })
        .collect()
}

#[test]
fn the_keyword_is_found_in_code_but_not_in_comments() {
    let text = "// unsafe in a comment\n/// unsafe docs\nlet x = unsafe { f() };\nfn unsafe_name() {}\nunsafe impl Send for X {}\n";
    let lines: Vec<usize> = unsafe_lines(text).into_iter().map(|(n, _)| n).collect();
    assert_eq!(lines, vec![3, 5]);
}

#[test]
fn unsafe_lives_only_in_src_sys() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    assert!(files.len() > 20, "found only {} source files", files.len());
    let mut outside = Vec::new();
    let mut inside = 0;
    let mut stale: Vec<&str> = ALLOWED.iter().map(|(f, _)| *f).collect();
    for f in &files {
        let rel = f
            .strip_prefix(root)
            .expect("under the crate")
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(f).expect("a readable source file");
        let hits = unsafe_lines(&text);
        if rel.starts_with("src/sys/") {
            inside += hits.len();
            continue;
        }
        if hits.is_empty() {
            continue;
        }
        if ALLOWED.iter().any(|(a, _)| *a == rel) {
            stale.retain(|a| *a != rel);
            continue;
        }
        for (n, line) in hits {
            outside.push(format!("{rel}:{n}: {line}"));
        }
    }
    assert!(
        outside.is_empty(),
        "unsafe outside src/sys/ (move the call into src/sys/ behind a safe function):\n{}",
        outside.join("\n")
    );
    assert!(
        stale.is_empty(),
        "these files no longer use unsafe: remove them from ALLOWED: {stale:?}"
    );
    assert!(inside > 0, "src/sys/ is where the unsafe code lives");
}

#[test]
fn the_crate_denies_undocumented_unsafe_blocks() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("src/lib.rs");
    assert!(
        lib.lines()
            .any(|l| l.trim() == "#![deny(clippy::undocumented_unsafe_blocks)]"),
        "src/lib.rs must deny clippy::undocumented_unsafe_blocks"
    );
}
