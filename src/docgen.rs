//! Man pages and shell completions for the clap-defined programs (`pen-lab`, `pen-sim`),
//! written by their hidden `gen-docs DIR` entry point for `scripts/build-deb.sh`. (`pen` and
//! `penctl` parse C Pen's command lines by hand; their pages and completions are written by
//! hand under `docs/man/` and `packaging/completions/`.)

use std::io;
use std::path::{Path, PathBuf};

/// Writes `NAME.1` (plus `NAME-SUB.1` per visible subcommand), the bash completion `NAME`
/// and the zsh completion `_NAME` into `dir`; returns the files written.
pub fn write(cmd: clap::Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    // `help` as a subcommand would get a page of its own per subcommand.
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let name = cmd.get_name().to_string();
    let before: Vec<PathBuf> = list(dir)?;
    clap_mangen::generate_to(cmd.clone(), dir)?;
    for (shell, file) in [
        (clap_complete::Shell::Bash, name.clone()),
        (clap_complete::Shell::Zsh, format!("_{name}")),
    ] {
        let mut out = std::fs::File::create(dir.join(&file))?;
        clap_complete::generate(shell, &mut cmd, name.clone(), &mut out);
    }
    let mut written: Vec<PathBuf> = list(dir)?
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    for f in [name.clone(), format!("_{name}")] {
        let p = dir.join(f);
        if !written.contains(&p) {
            written.push(p);
        }
    }
    written.sort();
    Ok(written)
}

fn list(dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect()
}

/// The `gen-docs DIR` entry point: writes, reports each file on stderr, exit status.
pub fn main(cmd: clap::Command, dir: Option<&std::ffi::OsStr>) -> std::process::ExitCode {
    let name = cmd.get_name().to_string();
    let Some(dir) = dir else {
        eprintln!("{name} gen-docs: expected an output directory: {name} gen-docs DIR");
        return std::process::ExitCode::from(2);
    };
    match write(cmd, Path::new(dir)) {
        Ok(files) => {
            for f in files {
                eprintln!("{name} gen-docs: wrote {}", f.display());
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "{name} gen-docs: cannot write into {}: {e}",
                Path::new(dir).display()
            );
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pages_and_completions_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = clap::Command::new("demo")
            .about("demo tool")
            .arg(
                clap::Arg::new("verbose")
                    .long("verbose")
                    .action(clap::ArgAction::SetTrue),
            )
            .subcommand(clap::Command::new("run").about("run it"));
        let files = super::write(cmd, dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["_demo", "demo", "demo-run.1", "demo.1"]);
        let page = std::fs::read_to_string(dir.path().join("demo.1")).unwrap();
        assert!(
            page.contains(".TH demo") && page.contains("verbose"),
            "{page}"
        );
        let bash = std::fs::read_to_string(dir.path().join("demo")).unwrap();
        assert!(bash.contains("complete") && bash.contains("--verbose"));
    }
}
