//! Links the C library (the cdylib) as distributions ship it: with the
//! SONAME `libqemu-ubpf.so.0`. Only the cdylib is affected; the rlib, the
//! staticlib and the binaries are built as before.
//!
//! What the library exports needs no version script of ours: rustc already
//! links a cdylib with its own (anonymous) version script, which exports the
//! `#[no_mangle]` functions of the crate graph and nothing else, and those
//! are the `ubpf_*` functions of `src/capi/`. A second script would not
//! narrow that list (rust-lld lets rustc's exact names win over a `local: *`)
//! and would break the link with GNU ld ("anonymous version tag cannot be
//! combined with other version tags"), which older toolchains use.
//! `tests/capi.rs` checks with `nm -D --defined-only` that only `ubpf_*`
//! symbols are exported.

use std::env;

/// The ABI version: the `0` of `libqemu-ubpf.so.0`. Bump it, with the
/// package name `libqemu-ubpf0` in `packaging/debian/`, on any change that
/// breaks a C program built against an earlier release.
const SOVERSION: &str = "0";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // ELF platforms; the others (Mach-O, PE) name libraries differently.
    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let elf = matches!(
        target_os.as_str(),
        "linux" | "android" | "freebsd" | "netbsd" | "openbsd" | "dragonfly" | "illumos" | "solaris"
    );
    if elf {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libqemu-ubpf.so.{SOVERSION}");
    }
}
