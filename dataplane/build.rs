//! Compiles the XDP program (`bpf/steer.c`) with `clang -target bpf` into
//! `$OUT_DIR/steer.o`, which `io::xdp::program` embeds.
//!
//! Without clang the crate still builds: a warning says so, and `cfg(multipoint_no_xdp_prog)`
//! makes attaching an XDP program fail at run time with the cause and the fix. A clang
//! that is there but fails to compile the program fails the build (a broken program must
//! not turn into a build without one unnoticed).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCE: &str = "bpf/steer.c";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(multipoint_no_xdp_prog)");
    println!("cargo::rerun-if-changed={SOURCE}");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CLANG");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_else(|| ".".into()));
    let object = out_dir.join("steer.o");
    let clang = env::var_os("CLANG").unwrap_or_else(|| "clang".into());

    let found = Command::new(&clang)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        println!(
            "cargo::warning=multipoint-dataplane: no XDP program in this build: clang was not \
             found ({}); the xdp backend will refuse to start. Install clang \
             (apt-get install clang) and rebuild with CLANG=clang set (or touch \
             dataplane/{SOURCE})",
            Path::new(&clang).display()
        );
        println!("cargo::rustc-cfg=multipoint_no_xdp_prog");
        return;
    }

    let mut cmd = Command::new(&clang);
    cmd.args(["-target", "bpf", "-mcpu=v3", "-O2", "-g", "-Wall"]);
    // asm/types.h (included by linux/types.h) lives in the multiarch include directory,
    // which a `-target bpf` clang does not search.
    if let Some(dir) = multiarch_include() {
        cmd.arg("-idirafter").arg(dir);
    }
    cmd.arg("-c").arg(SOURCE).arg("-o").arg(&object);
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) => fail(&format!("running {cmd:?}: {e}")),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        fail(&format!(
            "{cmd:?} failed ({}):\n{stderr}\n(unset CLANG or point it at a clang that has \
             the bpf target)",
            out.status
        ));
    }
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        println!("cargo::warning=steer.c: {line}");
    }
}

/// The directory holding `asm/types.h` for the host: `/usr/include/<multiarch>`, from
/// `gcc -print-multiarch`, else the first of a fixed list that exists.
fn multiarch_include() -> Option<PathBuf> {
    let has_asm = |dir: &Path| dir.join("asm/types.h").is_file();
    for cc in ["gcc", "cc"] {
        if let Ok(out) = Command::new(cc).arg("-print-multiarch").output() {
            let triple = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let dir = Path::new("/usr/include").join(&triple);
            if out.status.success() && !triple.is_empty() && has_asm(&dir) {
                return Some(dir);
            }
        }
    }
    [
        "x86_64-linux-gnu",
        "aarch64-linux-gnu",
        "arm-linux-gnueabihf",
        "i386-linux-gnu",
        "powerpc64le-linux-gnu",
        "s390x-linux-gnu",
        "riscv64-linux-gnu",
    ]
    .iter()
    .map(|t| Path::new("/usr/include").join(t))
    .find(|d| has_asm(d))
}

fn fail(msg: &str) -> ! {
    eprintln!("multipoint-dataplane: compiling the XDP program: {msg}");
    std::process::exit(1);
}
