//! Link settings of the `dts-operator` binary (nothing else is built here).
//!
//! Packed relative relocations (DT_RELR, `-z pack-relative-relocs`): the binary is a
//! position-independent executable, and with classic RELA its ~19,000 relative relocations are a
//! 450 KiB table the dynamic loader reads at every start — a cold `reset` paid for it in page
//! faults and resident pages (see hack/bench-reset.sh). DT_RELR encodes the same relocations in a
//! few KiB; ASLR is kept. rustc's own lld (the default linker of x86_64-unknown-linux-gnu) and GNU
//! ld 2.38+ take the option.
//!
//! It is used only where it cannot make a binary that fails to start: a native, dynamically
//! linked glibc build whose glibc defines `GLIBC_ABI_DT_RELR` (2.36+: the loader understands
//! DT_RELR, and the binary then needs that glibc, as it needs the symbol versions it links) and
//! whose C compiler driver accepts the option. The static build of hack/image.sh is left as it
//! was.

use std::io::Write;
use std::process::{Command, Stdio};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CC");
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let native = env("TARGET") == env("HOST");
    let dynamic_glibc = env("CARGO_CFG_TARGET_OS") == "linux"
        && env("CARGO_CFG_TARGET_ENV") == "gnu"
        && !env("CARGO_CFG_TARGET_FEATURE")
            .split(',')
            .any(|f| f == "crt-static");
    if native
        && dynamic_glibc
        && glibc_has_dt_relr()
        && linker_accepts("-Wl,-z,pack-relative-relocs")
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

/// Whether the libc.so.6 the C compiler driver links against defines `GLIBC_ABI_DT_RELR`.
fn glibc_has_dt_relr() -> bool {
    let Ok(out) = Command::new(cc())
        .arg("-print-file-name=libc.so.6")
        .output()
    else {
        return false;
    };
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    std::fs::read(&path).is_ok_and(|bytes| {
        bytes
            .windows(b"GLIBC_ABI_DT_RELR".len())
            .any(|w| w == b"GLIBC_ABI_DT_RELR")
    })
}

/// Whether the C compiler driver (rustc's linker driver on Linux) links a trivial program with
/// `flag`.
fn linker_accepts(flag: &str) -> bool {
    let out_dir = std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into());
    let output = std::path::Path::new(&out_dir).join("relr-probe");
    let child = Command::new(cc())
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
