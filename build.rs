//! Compiles the kernel fast paths, `bpf/*.bpf.c`, into BPF objects in `OUT_DIR` with clang
//! (`-target bpf -O2 -g`: optimised, with the BTF aya needs for the map definitions). The Rust
//! code embeds them with `include_bytes!` and loads them with aya.
//!
//! Needs clang and the libbpf headers (`bpf/bpf_helpers.h`); `scripts/install-deps.sh`
//! installs both. `CLANG=/path/to/clang` picks another compiler.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The programs, by file stem: `bpf/<stem>.bpf.c` → `$OUT_DIR/<stem>.bpf.o`.
const PROGRAMS: &[&str] = &["dsr_xdp", "udp_tc"];

const INSTALL: &str = "install it with `sudo apt-get install clang libbpf-dev` (Debian/Ubuntu) \
     or run `scripts/install-deps.sh` as root";

fn main() {
    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-env-changed=CLANG");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    match Command::new(&clang).arg("--version").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => fail(&format!(
            "`{clang} --version` failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => fail(&format!(
            "pen's kernel fast paths (bpf/*.bpf.c) are compiled with clang, and `{clang}` \
             cannot be run ({e}); {INSTALL}, or set CLANG to a clang that can"
        )),
    }
    // The asm/ headers <linux/types.h> includes live in the multiarch directory, which clang
    // does not search for the bpf target.
    let multiarch = multiarch_include();
    for stem in PROGRAMS {
        let src = Path::new("bpf").join(format!("{stem}.bpf.c"));
        let obj = out.join(format!("{stem}.bpf.o"));
        let mut cmd = Command::new(&clang);
        cmd.args(["-target", "bpf", "-O2", "-g", "-Wall"]);
        if let Some(dir) = &multiarch {
            cmd.arg("-idirafter").arg(dir);
        }
        cmd.arg("-c").arg(&src).arg("-o").arg(&obj);
        match cmd.output() {
            // Warnings (another clang version may have others) show, and do not stop the build.
            Ok(o) if o.status.success() => {
                for line in String::from_utf8_lossy(&o.stderr).lines() {
                    if line.contains("warning:") {
                        println!("cargo:warning={line}");
                    }
                }
            }
            Ok(o) => {
                let err = String::from_utf8_lossy(&o.stderr);
                let hint = if err.contains("bpf/bpf_helpers.h") || err.contains("linux/bpf.h") {
                    "\nthe BPF headers are missing: `sudo apt-get install libbpf-dev \
                     linux-libc-dev`, or run `scripts/install-deps.sh` as root"
                        .to_string()
                } else {
                    String::new()
                };
                fail(&format!(
                    "clang could not compile {}:\n{err}{hint}",
                    src.display()
                ))
            }
            Err(e) => fail(&format!("cannot run {clang} on {}: {e}", src.display())),
        }
    }
}

/// `/usr/include/<arch>-linux-gnu` for the target, when it exists.
fn multiarch_include() -> Option<PathBuf> {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").ok()?;
    let dir = PathBuf::from(format!("/usr/include/{arch}-linux-gnu"));
    dir.is_dir().then_some(dir)
}

/// Stops the build with `msg` (cargo shows a failed build script's standard error).
fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1);
}
