//! Link settings of the `dts-operator` binary (nothing else is built here).
//!
//! Packed relative relocations (DT_RELR, `-z pack-relative-relocs`): the binary is a
//! position-independent executable, and with classic RELA its ~19,000 relative relocations are a
//! 450 KiB table the dynamic loader reads at every start — a cold `reset` paid for it in page
//! faults and resident pages (see hack/bench-reset.sh). DT_RELR encodes the same relocations in a
//! few KiB; ASLR is kept. Used only when the C linker driver accepts the option (GNU ld 2.38+,
//! lld 15+); the linker itself emits DT_RELR only against a glibc that supports it (2.36+), so a
//! binary never needs a newer glibc than the one it was linked with.

use std::io::Write;
use std::process::{Command, Stdio};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.contains("-linux-gnu") && linker_accepts("-Wl,-z,pack-relative-relocs") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether the C compiler driver (rustc's default linker on Linux) links a trivial program with
/// `flag`.
fn linker_accepts(flag: &str) -> bool {
    let out_dir = std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into());
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let output = std::path::Path::new(&out_dir).join("relr-probe");
    let child = Command::new(cc)
        .args(["-x", "c", "-", "-o"])
        .arg(&output)
        .arg(flag)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return false;
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"int main(void) { return 0; }\n");
    }
    child.wait().is_ok_and(|s| s.success())
}
